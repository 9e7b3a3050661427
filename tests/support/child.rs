//! Kills a writer with a real `SIGKILL` in the middle of its appends, for the storage kill tests.
//!
//! The test binary re-runs itself as the child, with only an `#[ignore]`d writer test selected
//! and an environment variable naming the directory to write. The writer appends in a loop and
//! reports each sequence number on stdout once its append returned; the parent reads a number of
//! reports, kills the child (no destructor, flush or unmap runs) and then checks that everything
//! reported survived.

use std::io::{BufRead, BufReader, Read, StdoutLock, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The writer's side: the directory the parent named in `dir_var`, or `None` when the ignored
/// test was started some other way (then it must do nothing, so a plain `cargo test --
/// --ignored` does not start an endless writer).
pub fn writer_dir(dir_var: &str) -> Option<PathBuf> {
    std::env::var_os(dir_var).map(PathBuf::from)
}

/// The writer's side: tells the parent which appends completed.
pub struct Reporter {
    /// Written straight to the pipe, not through the test harness's capture.
    out: StdoutLock<'static>,
}

impl Reporter {
    /// A reporter on this process's stdout.
    pub fn new() -> Reporter {
        Reporter {
            out: std::io::stdout().lock(),
        }
    }

    /// Reports that the append of `seq` returned: one line, flushed at once, so a line the
    /// parent reads is never ahead of the data. Blocks while the parent is not reading; panics
    /// (stopping the writer) once the parent is gone and the pipe is closed.
    pub fn appended(&mut self, seq: u64) {
        writeln!(self.out, "appended {seq}").unwrap();
        self.out.flush().unwrap();
    }
}

/// One round of the parent's side, see [`Round::run`].
pub struct Round<'a> {
    /// The `#[ignore]`d test the child runs.
    pub writer_test: &'a str,
    /// The environment variable that hands the child its directory.
    pub dir_var: &'a str,
    /// The directory the child writes.
    pub dir: &'a Path,
    /// Reports read before the kill: enough that the child is in full flow, few enough to be
    /// fast.
    pub reports_before_kill: usize,
    /// The number of this round, for failure messages.
    pub round: usize,
    /// The last sequence number the previous rounds left; the child's reports must start right
    /// after it and rise by one.
    pub last_before: u64,
}

impl Round<'_> {
    /// Starts the child, reads `reports_before_kill` reports, calls `while_running` with the
    /// last one (the child is still appending), SIGKILLs the child, reads the reports it wrote
    /// before it died, and returns the last sequence number reported. Every read is bounded by
    /// `REPORT_WAIT`: a child that stops reporting fails the round with the end of its stderr
    /// instead of hanging the test.
    pub fn run(&self, while_running: impl FnOnce(u64)) -> u64 {
        let round = self.round;
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(&exe)
            .args([self.writer_test, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(self.dir_var, self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Killed on every way out, a failed assertion too: an endless writer must not outlive
        // the test.
        let mut child = super::Killed(child);
        let child = &mut child.0;
        let stderr = StderrTail::collect(child);
        let lines = read_lines_on_a_thread(child);
        let mut reports = Reports {
            round,
            last: self.last_before,
            count: 0,
        };
        while reports.count < self.reports_before_kill {
            match lines.recv_timeout(REPORT_WAIT) {
                Ok(line) => reports.take(&line),
                // Stdout closed: the child died; the assertion below says so.
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "round {round}: no report within {REPORT_WAIT:?} after {} reports; \
                         the writer's stderr ends with:\n{}",
                        reports.count,
                        stderr.tail()
                    );
                }
            }
        }
        if reports.count == self.reports_before_kill {
            while_running(reports.last);
        }
        child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush, no unmap runs.
        let status = child.wait().unwrap();
        // Lines the child wrote before it died report appends that completed too; its stdout
        // is closed now, so the reader ends once they are read.
        loop {
            match lines.recv_timeout(REPORT_WAIT) {
                Ok(line) => reports.take(&line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "round {round}: the writer's stdout still open {REPORT_WAIT:?} after its kill"
                ),
            }
        }
        assert!(
            reports.count >= self.reports_before_kill,
            "round {round}: the writer stopped after {} reports ({status}); its stderr ends \
             with:\n{}",
            reports.count,
            stderr.tail()
        );
        assert_eq!(status.signal(), Some(9), "round {round}: {status}");
        reports.last
    }
}

/// Bound on each wait for the writer: its next report, or the end of its output after the
/// kill. Generous, since the machine may be busy building and testing; it only stands between
/// a hang and a failure.
const REPORT_WAIT: Duration = Duration::from_secs(60);

/// Lines read ahead of the caller: a few, so the pipe, not this buffer, holds the writer back.
const LINES_BUFFERED: usize = 16;

/// How much of the end of the writer's stderr a failure shows.
const STDERR_TAIL_BYTES: usize = 4_096;

/// The child's stdout lines, read on a thread of its own and handed over a channel, so the
/// caller can wait for each with a bound. The channel disconnects when stdout closes. It holds
/// only `LINES_BUFFERED` lines: while the caller is not reading, the thread stops reading, the
/// pipe fills and the writer blocks, so it never runs far ahead of the kill.
fn read_lines_on_a_thread(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("the writer's stdout is piped");
    let (lines_tx, lines) = std::sync::mpsc::sync_channel(LINES_BUFFERED);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("the writer's stdout is UTF-8");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The child's stderr, collected on a thread as it comes (so the child never blocks on a full
/// pipe), for failure messages.
struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    fn collect(child: &mut Child) -> StderrTail {
        let mut pipe = child.stderr.take().expect("the writer's stderr is piped");
        let collected = Arc::new(Mutex::new(Vec::new()));
        let sink = collected.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        StderrTail(collected)
    }

    /// The last `STDERR_TAIL_BYTES` of what the child wrote to stderr so far.
    fn tail(&self) -> String {
        let bytes = self.0.lock().unwrap();
        let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
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
    /// Takes one line of the child's output. The test harness's own lines are not reports, and
    /// it prints the first report on the end of its "test ... " line.
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
