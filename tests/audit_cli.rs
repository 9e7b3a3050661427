//! The real `baton audit` binary on audit logs written through the library: what an operator
//! sees on stdout and stderr, and the exit status a script checks.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use baton::control::audit::{self, AuditLog};
use baton::control::change::ControlEvent;
use baton::fix::time::Timestamp;
use support::gateway_command;

/// Writes a log of `count` records and returns its head hash.
fn write_log(path: &Path, count: u64) -> String {
    let (mut log, _) = AuditLog::<serde_json::Value>::open(path).expect("open");
    for seq in 1..=count {
        log.append(
            Timestamp(1_795_437_296_000_000_000 + seq),
            "alice",
            serde_json::json!({"Switch": {"from": "blue", "to": format!("green-{seq}")}}),
        )
        .expect("append");
    }
    log.head().1.to_string()
}

fn baton(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .arg("--file")
        .arg(file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run baton")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn verify_prints_the_head_of_a_good_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    let head = write_log(&path, 3);
    let output = baton(&["audit", "verify"], &path);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("records 3\n"), "{stdout}");
    assert!(stdout.contains("head_seq 3\n"), "{stdout}");
    assert!(stdout.contains(&format!("head_hash {head}\n")), "{stdout}");

    let output = baton(&["audit", "verify", "--json"], &path);
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["head_hash"], head.as_str());
    assert_eq!(report["first_bad"], serde_json::Value::Null);
}

#[test]
fn verify_fails_naming_the_tampered_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    write_log(&path, 3);
    let tampered = std::fs::read_to_string(&path)
        .expect("read")
        .replacen("green-2", "green-9", 1);
    std::fs::write(&path, tampered).expect("write");
    let output = baton(&["audit", "verify"], &path);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    assert!(stderr.contains("line 2 (seq 2)"), "{stderr}");
    assert!(text(&output.stdout).contains("records 1\n"));
}

#[test]
fn show_prints_what_verified_then_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    write_log(&path, 3);
    let good = baton(&["audit", "show"], &path);
    assert!(good.status.success(), "{}", text(&good.stderr));
    let stdout = text(&good.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[1].contains("2026-11-23T12:34:56.000000002Z  alice  {\"Switch\":{\"from\":\"blue\",\"to\":\"green-2\"}}"),
        "{stdout}"
    );

    // --json prints the stored lines byte for byte.
    let json = baton(&["audit", "show", "--json"], &path);
    assert!(json.status.success());
    assert_eq!(json.stdout, std::fs::read(&path).expect("read"));

    let mut file_lines: Vec<String> = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .map(str::to_string)
        .collect();
    file_lines.remove(1);
    std::fs::write(&path, file_lines.join("\n") + "\n").expect("write");
    let broken = baton(&["audit", "show"], &path);
    assert!(!broken.status.success());
    assert_eq!(text(&broken.stdout).lines().count(), 1);
    assert!(text(&broken.stderr).contains("line 2 (seq 3)"));
}

#[test]
fn the_default_file_is_in_the_configured_journal_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal_dir = dir.path().join("journal");
    let head = write_log(&audit::default_path(&journal_dir), 2);
    let config = dir.path().join("baton.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"store\"\njournal_dir = {:?}\n\n[defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n",
            journal_dir.display().to_string()
        ),
    )
    .expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .expect("run baton");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains(&head));
}

#[test]
fn a_torn_tail_verifies_with_a_note() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    write_log(&path, 2);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(b"{\"seq\":3,\"ti");
    std::fs::write(&path, &bytes).expect("write");
    let output = baton(&["audit", "verify"], &path);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("torn_tail_bytes 12\n"));
    assert!(text(&output.stderr).contains("interrupted by a crash"));
    // Read-only: the torn bytes are still there.
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
}

/// Writes a log of `count` control-plane records (what a gateway writes) and returns every
/// record's hash, by seq - 1.
fn write_control_log(path: &Path, count: u64) -> Vec<String> {
    let (mut log, _) = AuditLog::<ControlEvent>::open(path).expect("open");
    (1..=count)
        .map(|seq| {
            log.append(
                Timestamp(1_795_437_296_000_000_000 + seq),
                "gateway",
                ControlEvent::GatewayStarted {
                    build: format!("baton {seq}"),
                },
            )
            .expect("append")
            .hash
        })
        .collect()
}

#[test]
fn a_whole_last_record_missing_only_its_newline_is_completed_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    write_control_log(&path, 3);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
    let output = baton(&["audit", "verify"], &path);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("records 3\n") && stdout.contains("torn_tail_bytes 0\n"),
        "{stdout}"
    );
    assert!(stdout.contains("newline_missing true\n"), "{stdout}");
    let (mut log, records) = AuditLog::<ControlEvent>::open(&path).expect("open");
    assert_eq!(records.len(), 3);
    assert_eq!(log.take_cut(), None, "nothing was cut");
    drop(log);
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "the newline is back"
    );
}

#[test]
fn an_edited_last_record_without_its_newline_is_tampering_until_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    write_control_log(&path, 3);
    let edited = std::fs::read_to_string(&path)
        .expect("read")
        .replacen("baton 3", "baton 9", 1);
    let edited = edited.trim_end_matches('\n');
    std::fs::write(&path, edited).expect("write");
    let output = baton(&["audit", "verify"], &path);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    assert!(stderr.contains("line 3 (seq 3)"), "{stderr}");
    assert!(stderr.contains("not a torn write"), "{stderr}");
    assert!(text(&output.stdout).contains("records 2\n"));
    match AuditLog::<ControlEvent>::open(&path) {
        Err(audit::AuditError::Corrupt { line: 3, .. }) => {}
        Err(other) => panic!("expected the edited line refused, got {other}"),
        Ok(_) => panic!("a gateway must not start on an edited log"),
    }

    let bad_line = edited.rsplit('\n').next().expect("last line").to_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "audit",
            "acknowledge",
            "--operator",
            "ops",
            "--reason",
            "edit found in review",
        ])
        .arg("--file")
        .arg(&path)
        .output()
        .expect("run baton");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let kept = dir.path().join("audit.log.tampered-after-2");
    assert_eq!(std::fs::read_to_string(&kept).expect("kept"), bad_line);
    let output = baton(&["audit", "verify"], &path);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("records 3\n"));
    let (records, _) = audit::read(&path).expect("read");
    let last: serde_json::Value = serde_json::from_str(&records[2].event_json).expect("event json");
    assert_eq!(records[2].actor, "ops");
    assert_eq!(last["event"], "tamper-acknowledged");
    assert_eq!(last["reason"], "edit found in review");
    assert_eq!(last["kept"], kept.display().to_string());
    assert_eq!(last["bytes"], bad_line.len() as u64);
    // A log with nothing bad in it has nothing to acknowledge.
    let again = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "audit",
            "acknowledge",
            "--operator",
            "ops",
            "--reason",
            "again",
        ])
        .arg("--file")
        .arg(&path)
        .output()
        .expect("run baton");
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("no tampering to acknowledge"));
}

#[test]
fn expect_head_catches_records_cut_off_the_end_and_a_rewritten_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    let hashes = write_control_log(&path, 3);
    let head = format!("3:{}", hashes[2]);
    let output = baton(&["audit", "verify", "--expect-head", &head], &path);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // A later head still contains the anchored record.
    let output = baton(
        &[
            "audit",
            "verify",
            "--expect-head",
            &format!("2:{}", hashes[1]),
        ],
        &path,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let wrong = format!("2:{}", hashes[0]);
    let output = baton(&["audit", "verify", "--expect-head", &wrong], &path);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("rewritten"),
        "{}",
        text(&output.stderr)
    );

    // The whole last record removed, newline and all: the chain alone cannot tell.
    let content = std::fs::read_to_string(&path).expect("read");
    let kept: Vec<&str> = content.lines().take(2).collect();
    std::fs::write(&path, format!("{}\n", kept.join("\n"))).expect("write");
    assert!(baton(&["audit", "verify"], &path).status.success());
    let output = baton(&["audit", "verify", "--expect-head", &head], &path);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("records were cut off"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_gateway_records_the_torn_tail_it_cuts_and_refuses_an_edited_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal");
    let path = audit::default_path(&journal);
    write_control_log(&path, 2);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(b"{\"seq\":3,\"ti");
    std::fs::write(&path, &bytes).expect("write");
    let config = dir.path().join("baton.toml");
    std::fs::write(
        &config,
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\n[defaults]\nSenderCompID = \"BATON\"\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n",
    )
    .expect("config");
    let start = || {
        // The journal is `dir/journal`, where the torn log was written.
        gateway_command(&config, dir.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn gateway")
    };
    let mut gateway = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let cut = loop {
        let (records, _) = audit::read(&path).expect("read");
        let found = records
            .iter()
            .find(|r| r.event_json.contains("\"audit-tail-cut\""))
            .map(|r| r.event_json.clone());
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "the cut was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = gateway.kill();
    let _ = gateway.wait();
    let cut: serde_json::Value = serde_json::from_str(&cut).expect("event json");
    assert_eq!(
        (cut["bytes"].as_u64(), cut["after_seq"].as_u64()),
        (Some(12), Some(2))
    );

    // Now an edit of the last record that also removes its newline: the gateway does not start.
    let edited = std::fs::read_to_string(&path)
        .expect("read")
        .replacen("baton 2", "baton 7", 1);
    std::fs::write(&path, edited.trim_end_matches('\n')).expect("write");
    let mut gateway = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = gateway.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = gateway.kill();
            panic!("the gateway started on an edited audit log");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut gateway.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains("acknowledge"), "{stderr}");
}
