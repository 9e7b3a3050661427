//! Where log lines go: to stderr, without ever stopping or killing the process that logs them.
//!
//! A venue's stderr is often a pipe (`baton up 2>&1 | head`, a journald or container log
//! driver). A pipe whose reader went away makes every write fail; a reader that stopped
//! reading makes writes block. Either must cost log lines only, never trading: a panic on a
//! failed write ends the gateway, and a write blocked while a runtime worker holds the stderr
//! lock freezes every session.
//!
//! So logging threads never touch the file descriptor. [`LogWriter`] copies each formatted line
//! into a queue bounded in bytes ([`constants::LOG_QUEUE_BYTES_MAX`]) and returns at once; one
//! thread of its own writes the queue out. A line that does not fit (the writer is blocked) or
//! that the writer cannot write (the pipe is closed) is dropped and counted in
//! [`lines_dropped`], which the metrics endpoint exposes as `baton_log_lines_dropped_total`;
//! once writes work again, the log says how many lines it lost before the next one.
//! SIGPIPE stays ignored (Rust's start-up default), so a closed pipe is an error return, not a
//! signal.
//!
//! Lines are text for a person or JSON for a log shipper ([`LogFormat`]); either goes through
//! the same queue. Colour codes are written only to a terminal, and never when `NO_COLOR` is set
//! ([`ansi_wanted`]): escape codes in a file or a shipper's pipe are noise in every search.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::constants;

/// How log lines are written. Chosen by `--log-format`, else [`LOG_FORMAT_ENV`], else the
/// config's `[log] format`, else text; `baton up` hands its choice to its children in
/// [`LOG_FORMAT_ENV`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event, spans as `session{sender=.. target=..}:` prefixes.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`, `spans`), so
    /// a log shipper indexes fields such as a session's CompIDs without parsing text.
    Json,
}

impl LogFormat {
    /// The name the flag, the environment and the config key use.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// Parses a name as [`LogFormat::name`] writes it.
    pub fn from_name(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// The environment variable that carries a log format to a child process. An environment
/// variable rather than a flag because a supervisor may start a staged older build, which
/// would refuse a flag it does not know; a variable it does not know it ignores.
pub const LOG_FORMAT_ENV: &str = "BATON_LOG_FORMAT";

/// Whether to write colour codes: only to a terminal, and not when `no_color` (the value of
/// `NO_COLOR`) is set and non-empty, the convention tools honour for people who turn colour off.
pub fn ansi_wanted(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The writer [`LogWriter::stderr`] installed: one per process, found by the metrics endpoint
/// without a handle being passed through every layer in between.
static INSTALLED: OnceLock<Arc<Shared>> = OnceLock::new();

/// Log lines this process could not write to stderr (queue full behind a blocked reader, or the
/// write failed) since it started: a non-zero value means its log is incomplete. Zero while no
/// stderr writer is installed.
pub fn lines_dropped() -> u64 {
    INSTALLED
        .get()
        .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
}

/// Lines waiting for the writer thread, and what it has done with them.
#[derive(Default)]
struct Queue {
    /// Lines accepted and not yet taken by the writer thread.
    lines: VecDeque<Vec<u8>>,
    /// Sum of `lines`' lengths; never above [`constants::LOG_QUEUE_BYTES_MAX`].
    bytes: usize,
    /// Lines ever accepted.
    accepted: u64,
    /// Lines the writer thread has finished with (written or dropped); `finished <= accepted`.
    finished: u64,
}

/// What the loggers and the writer thread share.
#[derive(Default)]
struct Shared {
    /// The queue; held only to push or pop, never across a write.
    queue: Mutex<Queue>,
    /// Signalled when a line is queued.
    queued: Condvar,
    /// Signalled when the writer thread finishes a line.
    finished: Condvar,
    /// Lines dropped: refused by a full queue or failed to write.
    dropped: AtomicU64,
    /// The writer's own notice of dropped lines is a JSON object, like the lines around it,
    /// so a log shipper expecting JSON never meets a line it cannot parse.
    json: AtomicBool,
}

impl Shared {
    /// The queue, even if a thread panicked while holding it: its fields stay consistent
    /// because every update completes before the lock is released.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `line`, or counts it as dropped when the queue is full.
    fn push(&self, line: &[u8]) {
        let mut queue = self.lock();
        if queue.bytes + line.len() > constants::LOG_QUEUE_BYTES_MAX {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.bytes += line.len();
        queue.accepted += 1;
        queue.lines.push_back(line.to_vec());
        drop(queue);
        self.queued.notify_one();
    }
}

/// The `tracing` writer: hands each line to the writer thread without waiting. Cloning shares
/// the same queue and thread.
#[derive(Clone)]
pub struct LogWriter {
    /// The queue and its writer thread.
    shared: Arc<Shared>,
}

impl LogWriter {
    /// A writer whose lines go to stderr from a thread of its own; the first one made is the
    /// one [`lines_dropped`] reports on.
    pub fn stderr() -> std::io::Result<LogWriter> {
        let writer = LogWriter::spawn(std::io::stderr())?;
        let _ = INSTALLED.set(writer.shared.clone());
        Ok(writer)
    }

    /// Writes the writer's own notices in `format`, as the subscriber writes its lines.
    pub fn set_format(&self, format: LogFormat) {
        self.shared
            .json
            .store(format == LogFormat::Json, Ordering::Relaxed);
    }

    /// Lines this writer dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// A writer whose lines go to `out` from a thread of its own (stderr in the binary; a test
    /// passes a sink it controls).
    pub fn spawn<W: Write + Send + 'static>(mut out: W) -> std::io::Result<LogWriter> {
        let shared = Arc::new(Shared::default());
        let drain = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                // Drops already told in the log: once writes work again, the log itself says
                // how many lines it is missing, before the next one.
                let mut reported = 0;
                loop {
                    let line = {
                        let mut queue = drain.lock();
                        loop {
                            if let Some(line) = queue.lines.pop_front() {
                                queue.bytes -= line.len();
                                break line;
                            }
                            queue = drain
                                .queued
                                .wait(queue)
                                .unwrap_or_else(|poisoned| poisoned.into_inner());
                        }
                    };
                    let dropped = drain.dropped.load(Ordering::Relaxed);
                    if dropped > reported {
                        let notice =
                            dropped_notice(dropped - reported, drain.json.load(Ordering::Relaxed));
                        if out.write_all(notice.as_bytes()).is_ok() {
                            reported = dropped;
                        }
                    }
                    if out.write_all(&line).and_then(|()| out.flush()).is_err() {
                        drain.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    drain.lock().finished += 1;
                    drain.finished.notify_all();
                }
            })?;
        Ok(LogWriter { shared })
    }

    /// Queues one line (e.g. a command's final error) like a log event.
    pub fn line(&self, line: &[u8]) {
        self.shared.push(line);
    }

    /// Waits until every line queued so far is written or dropped, for at most
    /// [`constants::LOG_FLUSH_TIMEOUT_MS`]: called before the process exits, so its last lines
    /// (why it stopped) reach the log, yet a reader that stopped reading cannot hold the exit.
    /// Returns whether everything was flushed.
    pub fn flush(&self) -> bool {
        let deadline = Instant::now() + Duration::from_millis(constants::LOG_FLUSH_TIMEOUT_MS);
        let mut queue = self.shared.lock();
        let target = queue.accepted;
        while queue.finished < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            queue = self
                .shared
                .finished
                .wait_timeout(queue, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        true
    }
}

/// The line that tells the log it is missing `dropped` lines: text, or a JSON object with the
/// fields the subscriber's JSON lines have (`timestamp`, `level`, `target`, `fields`).
fn dropped_notice(dropped: u64, json: bool) -> String {
    const WHY: &str = "log lines dropped (stderr closed, or its reader too slow)";
    if !json {
        return format!("baton: {dropped} {WHY}\n");
    }
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let notice = serde_json::json!({
        "timestamp": timestamp,
        "level": "WARN",
        "target": module_path!(),
        "fields": { "message": WHY, "dropped": dropped },
    });
    format!("{notice}\n")
}

/// One event's writer: `tracing_subscriber::fmt` formats a whole line and writes it at once.
pub struct LineWriter<'a> {
    /// Where the line goes.
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color_set() {
        assert!(ansi_wanted(true, None));
        assert!(ansi_wanted(true, Some(OsStr::new(""))));
        assert!(!ansi_wanted(true, Some(OsStr::new("1"))));
        assert!(!ansi_wanted(false, None));
    }

    #[test]
    fn a_format_name_reads_back_as_written() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(LogFormat::from_name(format.name()), Some(format));
        }
        assert_eq!(LogFormat::from_name("JSON"), None);
    }

    /// A sink that fails every write, like a pipe whose reader is gone.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose writes block until released, like a pipe nobody reads.
    struct Blocked(Arc<(Mutex<bool>, Condvar)>);

    impl Write for Blocked {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, changed) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_sink_drops_and_counts_lines_without_failing_the_logger() {
        let writer = LogWriter::spawn(Closed).unwrap();
        for _ in 0..10 {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
            line.write_all(b"a line\n").unwrap();
        }
        assert!(writer.flush());
        assert_eq!(writer.dropped(), 10);
    }

    /// A sink that fails every write until opened, then keeps what it is given.
    struct Recovers {
        open: Arc<std::sync::atomic::AtomicBool>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Recovers {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.open.load(Ordering::Relaxed) {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_says_how_many_lines_it_lost_once_writes_work_again() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = LogWriter::spawn(Recovers {
            open: open.clone(),
            written: written.clone(),
        })
        .unwrap();
        for n in 0..3 {
            writer.line(format!("lost {n}\n").as_bytes());
            assert!(writer.flush());
        }
        open.store(true, Ordering::Relaxed);
        writer.line(b"kept\n");
        assert!(writer.flush());
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "baton: 3 log lines dropped (stderr closed, or its reader too slow)\nkept\n"
        );
    }

    #[test]
    fn in_json_the_notice_of_lost_lines_is_a_json_line_too() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = LogWriter::spawn(Recovers {
            open: open.clone(),
            written: written.clone(),
        })
        .unwrap();
        writer.set_format(LogFormat::Json);
        for _ in 0..2 {
            writer.line(b"{}\n");
            assert!(writer.flush());
        }
        open.store(true, Ordering::Relaxed);
        writer.line(b"{}\n");
        assert!(writer.flush());
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let notice: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(notice["level"], "WARN");
        assert_eq!(notice["fields"]["dropped"], 2);
        assert!(notice["timestamp"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(lines[1], "{}");
    }

    #[test]
    fn a_blocked_sink_never_blocks_the_logger() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let writer = LogWriter::spawn(Blocked(gate.clone())).unwrap();
        let line = vec![b'x'; 1024];
        // Far more than the queue holds: each call returns, the overflow is counted.
        let lines = 4 * constants::LOG_QUEUE_BYTES_MAX / line.len();
        for _ in 0..lines {
            writer.line(&line);
        }
        assert!(writer.dropped() >= (lines as u64) / 2);
        let (open, changed) = &*gate;
        *open.lock().unwrap() = true;
        changed.notify_all();
        assert!(writer.flush());
    }
}
