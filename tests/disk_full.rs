//! A full disk under the store and the journal: the gateway refuses new business with
//! BusinessMessageReject (380=4) naming the cause, keeps the session logged on, says so in an
//! ERROR and a metric, and accepts business again by itself once space returns. Nothing it
//! acknowledged is lost.
//!
//! Needs root (it mounts a 20 MB tmpfs); skipped with a message otherwise.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton::bench::initiator::{Initiator, InitiatorConfig};
use support::control::free_control_addr;
use support::{EngineProcess, WAIT, new_order, text, wait_for_engine};

/// Generous bound for a loaded machine: the test asserts outcomes, never speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// A tmpfs mounted for the test, unmounted when it ends, passed or not.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` at `dir`, or says why it cannot.
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount refused: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy, so a process that still holds a file there cannot keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A child killed when the test ends, its stderr collected as it comes.
struct Logged {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Logged {
    fn spawn(command: &mut Command) -> Logged {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn baton");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Logged { child, stderr }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills the file system holding `path` with one file, to the last byte it takes.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    for chunk in [1 << 20, 4096, 512] {
        let bytes = vec![0xAAu8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
}

/// `name`'s value from the metrics endpoint at `addr`, if present.
fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    })
}

/// Sends an order and returns its answer: an ExecutionReport or a BusinessMessageReject.
fn order(client: &mut Initiator, cl_ord_id: &str) -> baton::fix::codec::Message {
    new_order(client, cl_ord_id, b'1', 10, "10");
    client
        .recv_until(WAIT, "answer to an order", |m| {
            m.msg_type() == b"8" || m.msg_type() == b"j"
        })
        .expect("an answer")
}

#[test]
fn a_full_disk_refuses_new_business_with_380_4_keeps_sessions_and_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _mount = match Mount::tmpfs(&disk, "20m") {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_refuses_new_business: {why} (needs root and tmpfs)");
            return;
        }
    };
    let listen = free_control_addr();
    let metrics = free_control_addr();
    // Small journal segments, so the journal asks for space again soon after the disk fills.
    let config = format!(
        "[gateway]\nlisten = \"{listen}\"\ncontrol = \"127.0.0.1:0\"\nmetrics = \"{metrics}\"\nstore_dir = \"{}\"\njournal_dir = \"{}\"\njournal_segment_bytes = 16384\n\n\
         [control]\napproval_required = []\n\n[defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n",
        disk.join("store").display(),
        disk.join("journal").display(),
    );
    let config_path = dir.path().join("baton.toml");
    std::fs::write(&config_path, config).unwrap();
    let engine = EngineProcess::start(&config_path, dir.path(), "blue");
    support::wait_for_socket(&dir.path().join("blue.sock"));
    let gateway = Logged::spawn(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["gateway", "--config"])
            .arg(&config_path)
            .args(["--engine", &engine.addr])
            .env("RUST_LOG", "warn"),
    );
    let deadline = Instant::now() + PATIENCE;
    let mut client = loop {
        if let Ok(mut client) = Initiator::connect(listen, InitiatorConfig::new("CLIENT1", "BATON"))
            && client.logon(false, WAIT).is_ok()
        {
            break client;
        }
        assert!(Instant::now() < deadline, "no logon");
        std::thread::sleep(Duration::from_millis(100));
    };
    wait_for_engine(&mut client);
    let first = order(&mut client, "BEFORE-FULL");
    assert_eq!(text(&first, 150), "0", "accepted while there is space");

    fill(&disk.join("filler"));
    // Orders are accepted until the journal needs its next segment, then refused.
    let mut accepted = 0;
    let refusal = loop {
        let answer = order(&mut client, &format!("FULL-{accepted}"));
        if answer.msg_type() == b"j" {
            break answer;
        }
        assert_eq!(text(&answer, 150), "0");
        accepted += 1;
        assert!(accepted < 5_000, "the journal never ran out of space");
    };
    assert_eq!(text(&refusal, 380), "4");
    assert!(
        text(&refusal, 58).contains("disk full"),
        "Text names the cause: {:?}",
        text(&refusal, 58)
    );
    // The session is up and answered at once while the disk stays full.
    let again = order(&mut client, "STILL-FULL");
    assert_eq!(again.msg_type(), b"j");
    assert_eq!(text(&again, 380), "4");
    assert_eq!(metric(metrics, "baton_disk_full"), Some(1));
    let log = gateway.stderr.lock().unwrap().clone();
    let error = log
        .lines()
        .find(|line| line.contains("ERROR") && line.contains("disk full"))
        .unwrap_or_else(|| panic!("no ERROR naming the full disk:\n{log}"));
    assert!(
        error.contains("journal") && error.contains("free_bytes="),
        "the ERROR names the file and the free space: {error}"
    );

    std::fs::remove_file(disk.join("filler")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    for attempt in 0.. {
        let answer = order(&mut client, &format!("AFTER-{attempt}"));
        if answer.msg_type() == b"8" {
            assert_eq!(text(&answer, 150), "0");
            break;
        }
        assert!(Instant::now() < deadline, "business never resumed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(metrics, "baton_disk_full"), Some(0));
    // What was acknowledged before the disk filled is still there: it can be canceled.
    client
        .send(b"F", |e| {
            e.str(41, "BEFORE-FULL")
                .str(11, "CANCEL-1")
                .str(55, "AAPL")
                .char(54, b'1')
                .str(60, "20261123-12:00:00");
        })
        .unwrap();
    let canceled = support::report(&mut client);
    assert_eq!(
        text(&canceled, 150),
        "4",
        "the order from before is still on the book"
    );
    drop(gateway);
}
