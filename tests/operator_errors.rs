//! What a new operator meets: a start-up error `baton up` cannot fix by restarting ends it with
//! one line and a distinct exit status; a clean stop closes the engine link cleanly; a gateway
//! with no engine says so in its log, again and again.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::logged::Logged;
use support::{
    WAIT, gateway_command, logged_on, start_gateway_for, wait_for_engine, write_config,
    write_up_config,
};

/// Generous bound for a loaded machine: the test asserts outcomes, never speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// The exit status of a gateway or engine that cannot start (sysexits' EX_CONFIG).
const FATAL_STARTUP: i32 = baton::constants::EXIT_FATAL_STARTUP as i32;

/// A `Logged` child with backtraces on, so a panic in it shows where in the failure.
fn spawn(command: &mut Command) -> Logged {
    Logged::spawn(command.env("RUST_BACKTRACE", "1"))
}

impl Logged {
    /// Waits for the exit, within the bound, and returns its code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running; stderr so far:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until stderr holds `text` at least `times` times.
    fn wait_for(&self, text: &str, times: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.stderr().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "{text:?} not logged {times} times; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The whole of a stopped child's stderr, once every process that held the pipe let go of it.
fn final_stderr(logged: &Logged) -> String {
    let deadline = Instant::now() + PATIENCE;
    while Arc::strong_count(&logged.stderr) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    logged.stderr()
}

#[test]
fn baton_up_stops_with_one_line_and_a_distinct_status_when_the_fix_address_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_up_config(dir.path(), taken.local_addr().unwrap());
    let mut up = spawn(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["up", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn"),
    );
    assert_eq!(up.exit_code(), Some(FATAL_STARTUP));
    let stderr = final_stderr(&up);
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("Address already in use"))
        .collect();
    assert_eq!(reasons.len(), 1, "the reason once:\n{stderr}");
    assert!(
        reasons[0].starts_with("error: ")
            && reasons[0].contains(&taken.local_addr().unwrap().to_string()),
        "one line naming the address:\n{stderr}"
    );
    for noise in ["restarting", "Caused by", "backtrace", "panicked"] {
        assert!(!stderr.contains(noise), "{noise:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains("gateway could not start"),
        "baton up says why it stopped:\n{stderr}"
    );
}

#[test]
fn a_store_held_by_another_gateway_is_a_one_line_fatal_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let store = dir.path().join("store");
    let _first = support::Gateway::start(&config, &store);
    let mut second = spawn(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["gateway", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--store-dir")
            .arg(&store)
            .arg("--journal-dir")
            .arg(dir.path().join("journal2")),
    );
    assert_eq!(second.exit_code(), Some(FATAL_STARTUP));
    let stderr = final_stderr(&second);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(
        lines[0].starts_with("error: opening session store"),
        "{stderr}"
    );
}

#[test]
fn a_clean_gateway_stop_closes_the_engine_link_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let engine = spawn(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["engine", "--config"])
            .arg(&config)
            .arg("--listen")
            .arg(format!("unix://{}", dir.path().join("blue.sock").display()))
            .env("RUST_LOG", "info"),
    );
    support::wait_for_socket(&dir.path().join("blue.sock"));
    let engine_addr = format!("unix://{}", dir.path().join("blue.sock").display());
    let mut gateway = start_gateway_for(dir.path(), &engine_addr);
    let mut client = logged_on(&gateway, 1);
    wait_for_engine(&mut client);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(gateway.child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + WAIT;
    while gateway.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the gateway did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    engine.wait_for("gateway closed the link", 1);
    let stderr = engine.stderr();
    assert!(
        !stderr.contains("WARN") && !stderr.contains("without closing"),
        "the engine saw an unclean close:\n{stderr}"
    );
}

#[test]
fn a_gateway_without_a_reachable_engine_says_so_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let gateway = spawn(
        gateway_command(&config, dir.path())
            .arg("--engine")
            .arg(format!(
                "unix://{}",
                dir.path().join("nobody.sock").display()
            ))
            .env("RUST_LOG", "warn"),
    );
    gateway.wait_for("no engine reachable", 2);
    let stderr = gateway.stderr();
    let warning = stderr
        .lines()
        .find(|line| line.contains("no engine reachable"))
        .unwrap();
    assert!(
        warning.contains("WARN") && warning.contains("nobody.sock"),
        "{warning}"
    );
}
