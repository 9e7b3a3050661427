//! Rollback with real processes under the default approval policy: a rollback returns authority
//! to the engine that had it before the last switch, once; moving it again is a switch and needs
//! its approval. A rollback named under no change belongs to the open change it undoes.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use baton::bench::initiator::Initiator;
use baton::control::api::{EngineRole, Status};
use support::control::{ctl, ok, order, refused, shared_account_operators, status};
use support::venue::{start_blue_then_green, write_venue_config};
use support::{EngineProcess, Gateway, WAIT, report, text};

/// Blue (authoritative) and green (standby, caught up) behind a gateway with the default
/// approval policy and `control` as extra `[control]` config; returns the control address.
fn venue(
    dir: &Path,
    control: &str,
) -> (EngineProcess, EngineProcess, Gateway, SocketAddr, Initiator) {
    let config = write_venue_config(dir, "", control, 1);
    let (blue, green, gateway, client) = start_blue_then_green(dir, &config, None, "warn");
    let addr = gateway.control;
    wait_until(addr, "green attached and caught up", |s| {
        s.engines
            .iter()
            .any(|e| e.role == EngineRole::Standby && e.lag_inputs == 0)
    });
    (blue, green, gateway, addr, client)
}

/// Polls the status until `check` holds, within a generous bound.
fn wait_until(addr: SocketAddr, what: &str, check: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let s = status(addr);
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn authority(status: &Status) -> String {
    status
        .engines
        .iter()
        .find(|e| e.role == EngineRole::Authoritative)
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

/// The audit log's records as JSON values, in order.
fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("journal").join("audit.log"))
        .expect("audit log")
        .lines()
        .map(|line| serde_json::from_str(line).expect("audit line"))
        .collect()
}

/// Files CHG-1 for the running build as alice and has bob approve it.
fn approved_change(control: SocketAddr) {
    let build = env!("CARGO_BIN_EXE_baton");
    ok(ctl(
        control,
        "alice",
        &[
            "change",
            "file",
            "--artifact",
            build,
            "--reason",
            "matching fix",
        ],
    ));
    ok(ctl(control, "bob", &["change", "approve", "CHG-1"]));
}

#[test]
fn a_rollback_returns_authority_once_and_moving_it_again_needs_an_approved_switch() {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, _green, _gateway, control, _client) =
        venue(dir.path(), &shared_account_operators());
    approved_change(control);
    let switched = ok(ctl(control, "alice", &["switch", "--change", "CHG-1"]));
    assert!(switched.starts_with("switched blue → green"), "{switched}");

    // The brake, without naming the change: back to blue, and it says so.
    let rolled_back = ok(ctl(control, "ops", &["rollback"]));
    assert!(
        rolled_back.starts_with("rolled back green → blue"),
        "{rolled_back}"
    );
    let after = status(control);
    assert_eq!(authority(&after), "blue");
    assert!(
        after.last_switch.as_ref().is_some_and(|s| s.rollback),
        "{after:?}"
    );
    let shown = ok(ctl(control, "ops", &["status"]));
    assert!(shown.contains("rolled back green → blue"), "{shown}");

    // A second rollback would move authority forward again without an approval: refused.
    let again = refused(ctl(control, "ops", &["rollback"]));
    assert!(again.contains("nothing to roll back"), "{again}");
    let without_change = refused(ctl(control, "ops", &["switch"]));
    assert!(without_change.contains("change"), "{without_change}");
    assert_eq!(authority(&status(control)), "blue");

    // Once the change is closed, still nothing rolls authority forward.
    ok(ctl(control, "alice", &["change", "close", "CHG-1"]));
    let closed = refused(ctl(control, "ops", &["rollback"]));
    assert!(closed.contains("nothing to roll back"), "{closed}");
    assert_eq!(authority(&status(control)), "blue");
}

#[test]
fn a_rollback_without_a_change_is_in_the_open_changes_report() {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, _green, _gateway, control, _client) =
        venue(dir.path(), &shared_account_operators());
    approved_change(control);
    ok(ctl(control, "alice", &["switch", "--change", "CHG-1"]));
    ok(ctl(control, "ops", &["rollback"]));
    // A second switch under the same change, and a second rollback without naming it.
    ok(ctl(control, "alice", &["switch", "--change", "CHG-1"]));
    ok(ctl(control, "ops", &["rollback"]));
    let report = ok(ctl(control, "carol", &["change", "report", "CHG-1"]));
    assert!(
        report.contains("actions     4 completed, 2 rollbacks"),
        "{report}"
    );
    let rollbacks: Vec<serde_json::Value> = audit_records(dir.path())
        .into_iter()
        .filter(|r| {
            r["event"]["event"] == "action-completed" && r["event"]["action"]["kind"] == "rollback"
        })
        .collect();
    assert_eq!(rollbacks.len(), 2, "{rollbacks:?}");
    for record in rollbacks {
        assert_eq!(record["event"]["change"], 1, "{record}");
    }
}

#[test]
fn a_failover_record_names_the_pause_the_waiting_order_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (blue, _green, _gateway, control, mut client) =
        venue(dir.path(), &shared_account_operators());
    // Freeze blue, the authority: its link stays open, it just stops answering.
    let pid = blue.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child process.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    order(&mut client, "P-1", "AAPL", b'1', "10");
    // Green takes over after the failover timeout and answers P-1, which waited all along.
    let ack = report(&mut client);
    assert_eq!(
        (text(&ack, 150), text(&ack, 11)),
        ("0".into(), "P-1".into())
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    wait_until(control, "green has authority", |s| {
        s.engines
            .iter()
            .any(|e| e.name == "green" && e.role == EngineRole::Authoritative)
    });
    let deadline = Instant::now() + WAIT * 3;
    let failover = loop {
        let found = audit_records(dir.path())
            .into_iter()
            .find(|r| r["event"]["event"] == "failover");
        if let Some(record) = found {
            break record;
        }
        assert!(Instant::now() < deadline, "no failover in the audit log");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pause_us = failover["event"]["report"]["pause_us"]
        .as_u64()
        .expect("a failover record has a pause");
    assert!(pause_us > 0, "P-1 waited for the failover: {failover}");
}
