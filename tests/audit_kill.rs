//! The audit log survives a real `SIGKILL`: a child process appends records and reports each seq
//! once `append` returned (so the gateway would have acted on it); the parent verifies the live
//! file read-only while the child writes, kills the child mid-stream, reopens the log and finds
//! every reported record, exactly, with the chain intact. Several rounds, so recovery of a log
//! that was itself recovered (torn tail cut, then appended to) is covered.

mod support;

use std::path::Path;

use baton::control::audit::{self, AuditLog};
use baton::fix::time::Timestamp;
use serde::{Deserialize, Serialize};
use support::child::{Reporter, Round, writer_dir};

/// Tells the child test binary which directory holds the log; without it the writer does nothing.
const AUDIT_DIR_VAR: &str = "BATON_AUDIT_KILL_DIR";
/// The `#[ignore]`d test the child runs.
const WRITER_TEST: &str = "writer_appends_until_killed";
/// A last stop for the child, never reached in a round: it blocks on its stdout whenever the
/// parent is not reading, so it runs at most a pipe's worth of reports ahead of the kill, and a
/// parent that is gone fails its next report. No time limit: a child still writing when a
/// loaded machine lets the parent kill it late is what the round needs, not a failure.
const WRITER_RECORDS_MAX: u64 = 100_000;
/// Reports the parent reads before it kills the child: enough that the child is in full flow.
const REPORTS_BEFORE_KILL: usize = 40;
/// Kill, reopen, check, resume.
const ROUNDS: usize = 4;

/// An event whose content and size follow from its seq, so a mix-up or stale record shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Event {
    Switch {
        from: String,
        to: String,
        barrier_seq: u64,
    },
}

fn event(seq: u64) -> Event {
    Event::Switch {
        from: "blue".into(),
        to: format!("green-{seq}-{}", "x".repeat((seq as usize * 37) % 500)),
        barrier_seq: seq * 1_000,
    }
}

fn time(seq: u64) -> Timestamp {
    Timestamp(1_700_000_000_000_000_000 + seq * 1_000)
}

fn log_path(dir: &Path) -> std::path::PathBuf {
    audit::default_path(dir)
}

#[test]
#[ignore = "the child side of kill_mid_append_loses_nothing_reported; does nothing on its own"]
fn writer_appends_until_killed() {
    let Some(dir) = writer_dir(AUDIT_DIR_VAR) else {
        return;
    };
    let (mut log, _) = AuditLog::<Event>::open(&log_path(&dir)).unwrap();
    let mut reporter = Reporter::new();
    let first = log.head().0 + 1;
    for seq in first..first + WRITER_RECORDS_MAX {
        let record = log.append(time(seq), "operator", event(seq)).unwrap();
        assert_eq!(record.seq, seq);
        reporter.appended(seq);
    }
}

#[test]
fn kill_mid_append_loses_nothing_reported() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let path = log_path(dir);
    let mut last_before = 0;
    for round in 0..ROUNDS {
        let reported_last = Round {
            writer_test: WRITER_TEST,
            dir_var: AUDIT_DIR_VAR,
            dir,
            reports_before_kill: REPORTS_BEFORE_KILL,
            round,
            last_before,
        }
        .run(|reported| {
            // A read-only check of the file being written sees at least what was reported, and
            // no damage: a line being written shows as a torn tail, nothing worse.
            let report = audit::verify(&path).unwrap();
            assert_eq!(report.first_bad, None, "round {round}");
            assert!(
                report.records >= reported,
                "round {round}: verify saw {} records, {reported} reported",
                report.records
            );
        });

        let report = audit::verify(&path).unwrap();
        assert_eq!(report.first_bad, None, "round {round}: {report:?}");
        let (log, records) = AuditLog::<Event>::open(&path).unwrap();
        let (head_seq, head_hash) = log.head();
        assert!(
            head_seq >= reported_last,
            "round {round}: head {head_seq} but {reported_last} was reported"
        );
        assert_eq!(records.len() as u64, head_seq, "round {round}");
        for (index, record) in records.iter().enumerate() {
            let seq = index as u64 + 1;
            assert_eq!(record.seq, seq, "round {round}");
            assert_eq!(record.event, event(seq), "round {round}: record {seq}");
            assert_eq!(record.time, time(seq), "round {round}: record {seq}");
        }
        // After open cut any torn tail, the file verifies clean to the same head.
        let clean = audit::verify(&path).unwrap();
        assert_eq!(
            (
                clean.records,
                clean.head_hash.as_str(),
                clean.torn_tail_bytes
            ),
            (head_seq, head_hash, 0),
            "round {round}"
        );
        // A record appended but killed before its report is kept; the next child follows it.
        last_before = head_seq;
        // Releases the lock so the next round's child can open the log.
        drop(log);
    }
}
