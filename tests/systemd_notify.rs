//! The real `baton gateway` under a stand-in for systemd: a Unix datagram socket bound as
//! `NOTIFY_SOCKET`, read as systemd would. READY=1 comes only once an engine is attached,
//! WATCHDOG=1 follows at half of `WATCHDOG_USEC`, and SIGTERM brings STOPPING=1.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton::control::api::EngineRole;
use support::control::status;
use support::{EngineProcess, gateway_command_ready, wait_for_socket, wait_ready, write_config};

/// Generous: the gateway, engine and the machine's other work all share two cores.
const NOTIFY_WAIT: Duration = Duration::from_secs(60);

/// A gateway process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next datagram, or a failure naming what was awaited.
fn next(socket: &UnixDatagram, awaited: &str) -> String {
    socket
        .set_read_timeout(Some(NOTIFY_WAIT))
        .expect("read timeout");
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|error| panic!("no notification while waiting for {awaited}: {error}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads datagrams until one carries `assignment` as a line; returns those skipped before it.
fn until(socket: &UnixDatagram, assignment: &str) -> Vec<String> {
    let deadline = Instant::now() + NOTIFY_WAIT;
    let mut skipped = Vec::new();
    loop {
        let message = next(socket, assignment);
        if message.lines().any(|line| line == assignment) {
            return skipped;
        }
        skipped.push(message);
        assert!(Instant::now() < deadline, "no {assignment}: {skipped:?}");
    }
}

#[test]
fn ready_after_an_engine_attaches_then_watchdog_then_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), 1, "");
    let notify_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).expect("bind NOTIFY_SOCKET");
    let engine_addr = format!("unix://{}", dir.path().join("blue.sock").display());
    let (mut command, ready_path) = gateway_command_ready(&config, dir.path());
    let mut child = command
        .args(["--engine", &engine_addr])
        .env("NOTIFY_SOCKET", &notify_path)
        // 1 s: pings every 0.5 s, the shortest the gateway sends.
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn baton gateway");
    let control = wait_ready(&ready_path, &mut child).control;
    let gateway = Running(child);

    // Listening, but its engine is not there: the status says so, and systemd has heard nothing.
    let engines = status(control).engines;
    assert!(
        engines.iter().all(|e| e.role == EngineRole::Down),
        "{engines:?}"
    );
    // (Only its listening socket is stored with systemd, for a restart: see socket_hold_e2e.)
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    loop {
        match socket.recv(&mut buf) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Ok(n) if &buf[..n] == b"FDSTORE=1\nFDNAME=listener" => {}
            other => panic!(
                "notified before an engine attached: {:?}",
                other.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
            ),
        }
    }
    socket.set_nonblocking(false).expect("blocking");

    let _engine = EngineProcess::start(&config, dir.path(), "blue");
    wait_for_socket(&dir.path().join("blue.sock"));
    let ready = next(&socket, "READY=1");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let engines = status(control).engines;
    assert!(
        engines.iter().any(|e| e.role == EngineRole::Authoritative),
        "{engines:?}"
    );

    let watchdog = next(&socket, "WATCHDOG=1");
    assert_eq!(watchdog, "WATCHDOG=1");

    // SAFETY: kill(2) takes two integers and touches no memory of this process.
    let pid = i32::try_from(gateway.0.id()).expect("pid");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
    let skipped = until(&socket, "STOPPING=1");
    assert!(
        skipped.iter().all(|m| m == "WATCHDOG=1"),
        "only watchdog pings before STOPPING=1: {skipped:?}"
    );
}

#[test]
fn under_baton_up_the_gateway_child_speaks_for_the_unit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let config = dir.path().join("baton.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"{}\"\njournal_dir = \"{}\"\nengines = [\"unix://{}\"]\n\n[defaults]\nSenderCompID = \"BATON\"\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n",
            path("store"),
            path("journal"),
            path("engine.sock"),
        ),
    )
    .expect("write config");
    let notify_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).expect("bind NOTIFY_SOCKET");
    // systemd arms the watchdog for the unit's main process, `baton up`: WATCHDOG_PID is its pid,
    // which the shell knows before it execs into baton.
    let up = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" up --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_baton"))
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn baton up");
    let up = Running(up);

    let ready = next(&socket, "READY=1");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // From the gateway, a child of the process WATCHDOG_PID names.
    until(&socket, "WATCHDOG=1");

    // SAFETY: kill(2) takes two integers and touches no memory of this process.
    let pid = i32::try_from(up.0.id()).expect("pid");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
    until(&socket, "STOPPING=1");
    // The supervisor stops its children and exits by itself.
    let mut up = up;
    let deadline = Instant::now() + NOTIFY_WAIT;
    while up.0.try_wait().expect("try_wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "baton up did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
