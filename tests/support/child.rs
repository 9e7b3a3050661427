//! Kills a writer with a real `SIGKILL` in the middle of its appends, for the storage kill tests.
//!
//! The test binary re-runs itself as the child, with only an `#[ignore]`d writer test selected
//! and an environment variable naming the directory to write. The writer appends in a loop and
//! reports each sequence number on stdout once its append returned; the parent reads a number of
//! reports, kills the child (no destructor, flush or unmap runs) and then checks that everything
//! reported survived.

use std::io::{BufRead, BufReader, StdoutLock, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    /// parent reads is never ahead of the data.
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
    /// before it died, and returns the last sequence number reported.
    pub fn run(&self, while_running: impl FnOnce(u64)) -> u64 {
        let round = self.round;
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(&exe)
            .args([self.writer_test, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(self.dir_var, self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut reports = Reports {
            round,
            last: self.last_before,
            count: 0,
        };
        for line in lines.by_ref() {
            reports.take(&line.unwrap());
            if reports.count == self.reports_before_kill {
                break;
            }
        }
        if reports.count == self.reports_before_kill {
            while_running(reports.last);
        }
        child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush, no unmap runs.
        let status = child.wait().unwrap();
        // Lines the child wrote before it died report appends that completed too.
        for line in lines {
            reports.take(&line.unwrap());
        }
        assert!(
            reports.count >= self.reports_before_kill,
            "round {round}: the writer stopped after {} reports ({status})",
            reports.count
        );
        assert_eq!(status.signal(), Some(9), "round {round}: {status}");
        reports.last
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
