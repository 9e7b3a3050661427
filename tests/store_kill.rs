//! The session store survives a real `SIGKILL`: a child process appends to a store in
//! `Durability::Os` mode and reports each sequence number once `append_sent` returned; the parent
//! kills it mid-stream, reopens the store and finds every reported message, byte for byte, and
//! nothing garbled. Repeated over several rounds, each resuming where the last kill left the store.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton::fix::store::{Durability, MmapStore, SessionStore};

/// Tells the child test binary which store directory to write; without it the writer does nothing,
/// so a plain `cargo test -- --ignored` does not start an endless writer.
const STORE_DIR_VAR: &str = "BATON_STORE_KILL_DIR";
/// The `#[ignore]`d test the child runs.
const WRITER_TEST: &str = "writer_appends_until_killed";
/// The child stops by itself after this many messages, so a parent that failed before killing it
/// never leaves it running.
const WRITER_MESSAGES_MAX: u64 = 200_000;
/// ... or after this long, whichever comes first.
const WRITER_DURATION_MAX: Duration = Duration::from_secs(5);
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
    let Some(dir) = std::env::var_os(STORE_DIR_VAR) else {
        return;
    };
    let mut store = MmapStore::open(Path::new(&dir), Durability::Os).unwrap();
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let first = store.seq_num_next_out();
    for seq in first..first + WRITER_MESSAGES_MAX {
        if started.elapsed() > WRITER_DURATION_MAX {
            break;
        }
        store.append_sent(seq, &payload(seq)).unwrap();
        if seq.is_multiple_of(SEQ_NUM_IN_EVERY) {
            store
                .set_seq_num_next_in(seq / SEQ_NUM_IN_EVERY + 1)
                .unwrap();
        }
        // Written straight to the pipe (not the test harness's capture), one line per message.
        writeln!(out, "appended {seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_mid_stream_loses_nothing_reported() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut reported_last = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([WRITER_TEST, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(STORE_DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut reports = Reports {
            round,
            last: reported_last,
            count: 0,
        };
        for line in lines.by_ref() {
            reports.take(&line.unwrap());
            if reports.count == REPORTS_BEFORE_KILL {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush, no unmap runs.
        let status = child.wait().unwrap();
        // Lines the child wrote before it died report appends that completed too.
        for line in lines {
            reports.take(&line.unwrap());
        }
        assert!(
            reports.count >= REPORTS_BEFORE_KILL,
            "round {round}: the writer stopped after {} reports ({status})",
            reports.count
        );
        assert_eq!(status.signal(), Some(9), "round {round}: {status}");
        reported_last = reports.last;

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

/// What the child reported in one round.
struct Reports {
    /// For failure messages.
    round: usize,
    /// The last sequence number reported as appended.
    last: u64,
    /// How many reports this round.
    count: usize,
}

impl Reports {
    /// Takes one line of the child's output. The test harness's own lines are not reports, and it
    /// prints the first report on the end of its "test ... " line.
    fn take(&mut self, line: &str) {
        let Some((_, seq)) = line.split_once("appended ") else {
            return;
        };
        let seq: u64 = seq.trim().parse().unwrap();
        assert_eq!(
            seq,
            self.last + 1,
            "round {}: reports out of order",
            self.round
        );
        self.last = seq;
        self.count += 1;
    }
}
