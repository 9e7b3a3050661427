//! The session store survives a real `SIGKILL`: a child process appends to a store in
//! `Durability::Os` mode and reports each sequence number once `append_sent` returned; the parent
//! kills it mid-stream, reopens the store and finds every reported message, byte for byte, and
//! nothing garbled. Repeated over several rounds, each resuming where the last kill left the store.

mod support;

use baton::fix::store::{Durability, MmapStore, SessionStore};
use support::child::{Reporter, Round, writer_dir};

/// Tells the child test binary which store directory to write; without it the writer does nothing,
/// so a plain `cargo test -- --ignored` does not start an endless writer.
const STORE_DIR_VAR: &str = "BATON_STORE_KILL_DIR";
/// The `#[ignore]`d test the child runs.
const WRITER_TEST: &str = "writer_appends_until_killed";
/// A last stop for the child, never reached in a round: it blocks on its stdout whenever the
/// parent is not reading, so it runs at most a pipe's worth of reports ahead of the kill, and a
/// parent that is gone fails its next report. No time limit: a child still writing when a
/// loaded machine lets the parent kill it late is what the round needs, not a failure.
const WRITER_MESSAGES_MAX: u64 = 200_000;
/// How many reports the parent reads before it kills the child: enough that the child is in full
/// flow (and has grown its log past the first remap), few enough to stay fast.
const REPORTS_BEFORE_KILL: usize = 300;
/// Kill, reopen, check, resume: more than once, so recovery of a recovered store is covered.
const ROUNDS: usize = 3;
/// The writer moves the inbound sequence number every this many messages, so kills also land
/// in slot writes.
const SEQ_NUM_IN_EVERY: u64 = 16;

/// The message stored under `seq`: its bytes and length follow from `seq`, so any mix-up, torn
/// copy or stale record shows.
fn payload(seq: u64) -> Vec<u8> {
    let len = 40 + (seq as usize * 37) % 400;
    let mut bytes = format!("8=FIX.4.4|9={len}|35=8|34={seq}|").into_bytes();
    bytes.extend((0..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    bytes
}

#[test]
#[ignore = "the child side of kill_mid_stream_loses_nothing_reported; does nothing on its own"]
fn writer_appends_until_killed() {
    let Some(dir) = writer_dir(STORE_DIR_VAR) else {
        return;
    };
    let mut store = MmapStore::open(&dir, Durability::Os).unwrap();
    let mut reporter = Reporter::new();
    let first = store.seq_num_next_out();
    for seq in first..first + WRITER_MESSAGES_MAX {
        store.append_sent(seq, &payload(seq)).unwrap();
        if seq.is_multiple_of(SEQ_NUM_IN_EVERY) {
            store
                .set_seq_num_next_in(seq / SEQ_NUM_IN_EVERY + 1)
                .unwrap();
        }
        reporter.appended(seq);
    }
}

#[test]
fn kill_mid_stream_loses_nothing_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut reported_last = 0;
    for round in 0..ROUNDS {
        reported_last = Round {
            writer_test: WRITER_TEST,
            dir_var: STORE_DIR_VAR,
            dir: dir.path(),
            reports_before_kill: REPORTS_BEFORE_KILL,
            round,
            last_before: reported_last,
        }
        .run(|_| {});

        let store = MmapStore::open(dir.path(), Durability::Os).unwrap();
        let next_out = store.seq_num_next_out();
        assert!(
            next_out > reported_last,
            "round {round}: seq_num_next_out {next_out} but {reported_last} was reported"
        );
        // The writer never skips, so every number below next_out must be there, exactly.
        for seq in 1..next_out {
            let want = payload(seq);
            assert_eq!(
                store.sent(seq),
                Some(&want[..]),
                "round {round}: seq {seq} (next_out {next_out}, last reported {reported_last})"
            );
        }
        assert_eq!(store.sent(next_out), None);
        let next_in = store.seq_num_next_in();
        assert!(
            next_in > reported_last / SEQ_NUM_IN_EVERY,
            "round {round}: {next_in}"
        );
        assert!(
            (next_in - 1) * SEQ_NUM_IN_EVERY < next_out,
            "round {round}: seq_num_next_in {next_in} is ahead of the appends"
        );
        // The next child resumes at next_out: a message appended but killed before its report
        // is kept, and the next report follows it.
        reported_last = next_out - 1;
        // Drops the lock so the next round's child can open the store.
        drop(store);
    }
}
