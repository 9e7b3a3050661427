//! `[link] secret_file` with real processes over TCP: a gateway and an engine holding the same
//! secret trade; an engine holding another refuses the gateway, and both say why in their logs.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Gateway, logged_on, wait_for_engine};

/// A config naming `secret_file` in `[link]`, with one session.
fn config(dir: &Path, name: &str, secret_file: &Path) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\n\
             [link]\nsecret_file = {:?}\n\n\
             [defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n\n\
             [[session]]\nTargetCompID = \"CLIENT1\"\n",
            secret_file.display().to_string()
        ),
    )
    .expect("config");
    path
}

/// `baton engine` on a loopback TCP port of its choosing with `config`; returns it with the
/// link address it logged once listening (no port is picked here, released and hoped free) and
/// the rest of its log lines, sent to the returned channel.
fn engine(config: &Path) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["engine", "--config"])
        .arg(config)
        .args(["--listen", "tcp://127.0.0.1:0", "--name", "blue"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn engine");
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let listening = expect_line(&lines, "engine link listening");
    let addr = listening
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {listening:?}"))
        .to_owned();
    (child, addr, lines)
}

/// Waits for a line containing `needle`, within a generous bound.
fn expect_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line containing {needle:?}"),
        }
    }
}

#[test]
fn gateway_and_engine_with_the_same_secret_trade_and_another_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("link.secret");
    std::fs::write(&secret, "a shared secret of enough length\n").unwrap();
    let other = dir.path().join("other.secret");
    std::fs::write(&other, "some other secret, also long enough").unwrap();
    let gateway_config = config(dir.path(), "baton.toml", &secret);

    // Same secret: the gateway attaches and orders are answered.
    let (mut blue, addr, _lines) = engine(&gateway_config);
    let gateway = Gateway::start_with(
        &gateway_config,
        &dir.path().join("store"),
        &[
            "--engine".as_ref(),
            addr.as_ref(),
            "--journal-dir".as_ref(),
            dir.path().join("journal").as_os_str(),
        ],
    );
    let mut client = logged_on(&gateway, 1);
    wait_for_engine(&mut client);
    drop(client);
    drop(gateway);
    let _ = blue.kill();
    let _ = blue.wait();

    // Another secret on the engine: it refuses the gateway and says why.
    let engine_config = config(dir.path(), "engine.toml", &other);
    let (mut blue, addr, lines) = engine(&engine_config);
    let _gateway = Gateway::start_with(
        &gateway_config,
        &dir.path().join("store2"),
        &[
            "--engine".as_ref(),
            addr.as_ref(),
            "--journal-dir".as_ref(),
            dir.path().join("journal2").as_os_str(),
        ],
    );
    let refusal = expect_line(&lines, "gateway handshake failed");
    assert!(refusal.contains("different link secret"), "{refusal}");
    let _ = blue.kill();
    let _ = blue.wait();
}

/// Runs `baton` with `args` until it exits (bounded); returns its status and stderr.
fn run_to_exit(args: &[&str], dir: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("baton {args:?} kept running with a link that leaves the host and no secret");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status, stderr)
}

#[test]
fn a_link_reachable_from_other_hosts_without_a_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // An engine listening on every interface.
    let (status, stderr) = run_to_exit(
        &["engine", "--listen", "tcp://0.0.0.0:0", "--name", "blue"],
        dir.path(),
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("reachable from other hosts") && stderr.contains("[link] secret_file"),
        "{stderr}"
    );
    // A gateway whose engine is on another host.
    let (status, stderr) = run_to_exit(
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--store-dir",
            "store",
            "--journal-dir",
            "journal",
            "--engine",
            "tcp://192.0.2.10:9900",
        ],
        dir.path(),
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("leaves this host") && stderr.contains("[link] secret_file"),
        "{stderr}"
    );
}
