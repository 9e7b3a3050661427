//! `baton config import-quickfix` on QuickFIX acceptor settings laid out like the examples
//! QuickFIX ships: the real binary writes the TOML, baton's own loader reads it back, and the
//! sessions it yields are the ones the QuickFIX file defines for FIX 4.4 acceptors; every key
//! that was not carried over is named on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use baton::config::Config;
use baton::fix::schedule::TimeOfDay;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quickfix")
        .join(name)
}

/// Runs the import into a temp file; returns the loaded config and stderr.
fn import(name: &str) -> (Config, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("baton.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["config", "import-quickfix"])
        .arg(fixture(name))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run baton");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "import of {name} failed:\n{stderr}"
    );
    let config = Config::load(Some(&out)).expect("the produced TOML loads");
    (config, stderr)
}

/// What a session should be after import: (sender, target, max latency ms, window or non-stop).
type Expected<'a> = (&'a str, &'a str, u64, Option<(&'a str, &'a str, u8)>);

fn assert_sessions(config: &Config, expected: &[Expected]) {
    let sessions = config.session_configs("imported").expect("sessions");
    let got: Vec<String> = sessions
        .iter()
        .map(|s| format!("{}->{}", s.sender_comp_id, s.target_comp_id))
        .collect();
    assert_eq!(sessions.len(), expected.len(), "{got:?}");
    for (session, (sender, target, latency_ms, window)) in sessions.iter().zip(expected) {
        assert_eq!(
            (
                session.sender_comp_id.as_str(),
                session.target_comp_id.as_str()
            ),
            (*sender, *target)
        );
        assert_eq!(session.begin_string, "FIX.4.4");
        assert_eq!(session.max_latency_ms, *latency_ms, "{sender}->{target}");
        match window {
            None => assert!(session.schedule.non_stop, "{sender}->{target} non-stop"),
            Some((start, end, weekdays)) => {
                assert!(!session.schedule.non_stop, "{sender}->{target} scheduled");
                assert_eq!(
                    session.schedule.start,
                    TimeOfDay::parse(start).expect("time")
                );
                assert_eq!(session.schedule.end, TimeOfDay::parse(end).expect("time"));
                assert_eq!(session.schedule.weekdays, *weekdays, "{sender}->{target}");
            }
        }
    }
}

fn assert_noted(stderr: &str, key: &str, because: &str) {
    assert!(
        stderr
            .lines()
            .any(|line| line.contains(key) && line.contains(because)),
        "no note on {key} ({because}) in:\n{stderr}"
    );
}

const EVERY_DAY: u8 = 0x7f;
const WEEKDAYS: u8 = 0b001_1111;

#[test]
fn executor_keeps_the_fix44_session_and_says_why_the_others_went() {
    let (config, stderr) = import("executor.cfg");
    assert_sessions(
        &config,
        &[(
            "EXECUTOR",
            "CLIENT1",
            120_000,
            Some(("00:00:00", "00:00:00", EVERY_DAY)),
        )],
    );
    assert_eq!(config.gateway.listen, "0.0.0.0:5001".parse().expect("addr"));
    assert_eq!(config.gateway.store_dir, Path::new("store"));
    for version in ["FIX.4.0", "FIX.4.1", "FIX.4.2", "FIX.4.3", "FIXT.1.1"] {
        assert_noted(&stderr, "[SESSION]", version);
    }
    assert_noted(&stderr, "DataDictionary", "venue dictionary");
    assert_noted(&stderr, "ResetOnLogon", "sequence numbers");
    assert_noted(&stderr, "FileLogPath", "stderr");
    assert_noted(&stderr, "FileStorePath", "not read");
    assert_noted(&stderr, "SocketReuseAddress", "not configurable");
}

#[test]
fn ordermatch_keeps_both_fix44_counterparties() {
    let (config, stderr) = import("ordermatch.cfg");
    let window = Some(("00:00:00", "00:00:00", EVERY_DAY));
    assert_sessions(
        &config,
        &[
            ("ORDERMATCH", "CLIENT1", 120_000, window),
            ("ORDERMATCH", "CLIENT2", 120_000, window),
        ],
    );
    assert_eq!(config.gateway.listen, "0.0.0.0:5002".parse().expect("addr"));
    assert_noted(&stderr, "HeartBtInt", "HeartBtIntMin");
    assert_noted(&stderr, "UseDataDictionary", "venue dictionary");
    assert_noted(&stderr, "ValidateUserDefinedFields", "validates");
    assert_noted(&stderr, "ORDERMATCH->CLIENT1", "FIX.4.2");
}

#[test]
fn venue_windows_latencies_and_what_could_not_come_along() {
    let (config, stderr) = import("venue.cfg");
    assert_sessions(
        &config,
        &[
            (
                "VENUE",
                "MEMBER_A",
                5_000,
                Some(("06:30:00", "21:00:00", WEEKDAYS)),
            ),
            ("VENUE", "MEMBER_B", 120_000, None),
            (
                "VENUE",
                "MEMBER_C",
                120_000,
                Some(("08:00:00", "17:00:00", WEEKDAYS)),
            ),
        ],
    );
    assert_eq!(
        config.gateway.listen,
        "10.1.2.3:9878".parse().expect("addr")
    );
    assert_eq!(config.gateway.store_dir, Path::new("/var/lib/fix/store"));
    assert_noted(&stderr, "DROPCOPY", "initiator");
    assert_noted(&stderr, "SocketAcceptPort", "one listener");
    assert_noted(&stderr, "TimeZone", "UTC");
    assert_noted(&stderr, "FastPathThrottle", "not a key baton knows");
    assert_noted(&stderr, "PersistMessages", "always stores");
    assert_noted(&stderr, "ValidateFieldsOutOfOrder", "validates");
    assert_noted(&stderr, "TimeStampPrecision", "millisecond");
}

#[test]
fn to_stdout_without_out_and_a_clear_error_for_a_file_that_is_not_quickfix() {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["config", "import-quickfix"])
        .arg(fixture("venue.cfg"))
        .output()
        .expect("run baton");
    assert!(output.status.success());
    let toml = String::from_utf8(output.stdout).expect("utf-8");
    Config::parse(&toml, "stdout").expect("stdout is the config");

    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.cfg");
    std::fs::write(&bad, "[DEFAULT]\nConnectionType acceptor\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["config", "import-quickfix"])
        .arg(&bad)
        .output()
        .expect("run baton");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
