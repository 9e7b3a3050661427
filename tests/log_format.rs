//! What the real binary writes to stderr for a log shipper and for a person: `--log-format json`
//! gives only JSON objects, each session's lines name its CompIDs, `baton up` hands the format
//! to its children, `[log] format` is read and the flag wins over it, and colour codes reach a
//! terminal only when `NO_COLOR` is not set.

mod support;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{
    EngineProcess, Killed, READY_FILE_ENV, exit_within, gateway_command_ready, log_on, ready_file,
    sigterm, wait_ready, write_config, write_up_config,
};

/// Generous bound for a loaded machine: the test asserts outcomes, never speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// SIGTERM, then everything the child wrote to its piped stderr once it has exited.
fn stop_and_read_stderr(mut child: Killed) -> String {
    let mut stderr = child.0.stderr.take().expect("stderr piped");
    // Read while it stops, so a full pipe cannot hold its exit.
    let (text_tx, text) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let read = stderr.read_to_string(&mut text).map(|_| text);
        let _ = text_tx.send(read);
    });
    sigterm(&child.0);
    exit_within(&mut child.0, PATIENCE).expect("did not stop on SIGTERM");
    // Bounded too: a grandchild left running would hold the pipe open.
    text.recv_timeout(PATIENCE)
        .expect("stderr still open long after the child exited")
        .expect("stderr is UTF-8")
}

/// Every line of `text` as a JSON object with a level, a target and fields; panics naming the
/// first line that is not.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    assert!(!text.trim().is_empty(), "no log lines at all");
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"));
            assert!(
                value["level"].is_string()
                    && value["target"].is_string()
                    && value["fields"].is_object(),
                "no level, target or fields: {line}"
            );
            value
        })
        .collect()
}

/// Whether `line` was logged inside the span of the session BATON (sender) / CLIENT1 (target).
fn names_the_session(line: &serde_json::Value) -> bool {
    line["spans"].as_array().is_some_and(|spans| {
        spans.iter().any(|span| {
            span["name"] == "session" && span["sender"] == "BATON" && span["target"] == "CLIENT1"
        })
    })
}

#[test]
fn a_gateway_logging_json_writes_only_json_objects_and_its_session_lines_name_the_comp_ids() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let engine = EngineProcess::start(&config, dir.path(), "blue");
    let (mut command, ready_path) = gateway_command_ready(&config, dir.path());
    let gateway = command
        .args(["--log-format", "json"])
        .args(["--engine", &engine.addr])
        .env("RUST_LOG", "info")
        .env_remove("BATON_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton gateway");
    let mut gateway = Killed(gateway);
    let client = log_on(wait_ready(&ready_path, &mut gateway.0).listen);
    drop(client);

    let lines = json_lines(&stop_and_read_stderr(gateway));
    let session_line = lines
        .iter()
        .find(|line| line["fields"]["message"] == "session logged on")
        .expect("a line saying the session logged on");
    assert!(
        names_the_session(session_line),
        "the session's span with its CompIDs: {session_line}"
    );
}

#[test]
fn baton_up_hands_its_log_format_to_the_engine_and_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_up_config(dir.path(), "127.0.0.1:0");
    let ready_path = ready_file(dir.path());
    let up = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["up", "--log-format", "json", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .env(READY_FILE_ENV, &ready_path)
        .env_remove("BATON_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton up");
    let mut up = Killed(up);
    drop(log_on(wait_ready(&ready_path, &mut up.0).listen));

    let lines = json_lines(&stop_and_read_stderr(up));
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "engine link listening"),
        "the engine child logs in JSON"
    );
    assert!(
        lines.iter().any(names_the_session),
        "the gateway child logs its session in JSON"
    );
}

/// `baton engine` with a config whose `[log] format` is json and a link address it refuses:
/// it stops at once, so its whole stderr is what the chosen format made of its error.
fn engine_error_output(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[log]\nformat = \"json\"\n")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("engine")
        .args(extra)
        .arg("--config")
        .arg(&config)
        .args(["--listen", "nowhere://at-all"])
        .env_remove("BATON_LOG_FORMAT")
        .output()
        .expect("run baton engine");
    assert!(!output.status.success());
    String::from_utf8(output.stderr).expect("stderr is UTF-8")
}

#[test]
fn the_config_key_chooses_json_and_the_flag_wins_over_it() {
    let lines = json_lines(&engine_error_output(&[]));
    assert!(
        lines.iter().any(|line| line["level"] == "ERROR"),
        "the error is a JSON event: {lines:?}"
    );
    let text = engine_error_output(&["--log-format", "text"]);
    assert!(
        text.contains("error: ") && text.lines().all(|line| !line.starts_with('{')),
        "{text}"
    );
}

/// A pseudo-terminal: the master end to read, the slave end to give a child as its stderr.
fn pty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty(3) writes two descriptors into the integers passed; the name, termios
    // and window size pointers are null, which it accepts.
    let result = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(result, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by nothing else.
    unsafe {
        (
            std::fs::File::from(OwnedFd::from_raw_fd(master)),
            OwnedFd::from_raw_fd(slave),
        )
    }
}

/// What `baton engine` writes to a terminal up to its "listening" line, with `no_color` as
/// `NO_COLOR` (unset if `None`).
fn engine_on_a_terminal(no_color: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, slave) = pty();
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
    command
        .args(["engine", "--name", "blue", "--listen"])
        .arg(format!("unix://{}", dir.path().join("blue.sock").display()))
        .env("RUST_LOG", "info")
        .env_remove("BATON_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave));
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let engine = Killed(command.spawn().expect("spawn baton engine"));
    drop(command);
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        // Ends with an error once the child and the test have both closed the slave end.
        while let Ok(n) = master.read(&mut chunk) {
            if n == 0 || sender.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut text = String::new();
    while !text.contains("engine link listening") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = received
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no listening line on the terminal: {text:?}"));
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(engine);
    text
}

#[test]
fn colour_reaches_a_terminal_unless_no_color_is_set() {
    assert!(
        engine_on_a_terminal(None).contains("\x1b["),
        "a terminal gets colour by default"
    );
    let plain = engine_on_a_terminal(Some("1"));
    assert!(!plain.contains("\x1b["), "NO_COLOR=1: {plain:?}");
}

#[test]
fn a_text_log_into_a_pipe_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["engine", "--name", "blue", "--listen"])
        .arg(format!("unix://{}", dir.path().join("blue.sock").display()))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("BATON_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton engine");
    let engine = Killed(engine);
    // Listening, so its SIGTERM handler is in place and the line is logged.
    support::wait_for_socket(&dir.path().join("blue.sock"));
    let text = stop_and_read_stderr(engine);
    assert!(text.contains("engine link listening"), "{text}");
    assert!(!text.contains("\x1b["), "{text:?}");
}
