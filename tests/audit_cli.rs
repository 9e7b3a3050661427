//! The real `baton audit` binary on audit logs written through the library: what an operator
//! sees on stdout and stderr, and the exit status a script checks.

use std::path::Path;
use std::process::{Command, Output};

use baton::control::audit::{self, AuditLog};
use baton::fix::time::Timestamp;

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
