//! Verified canary delivery and intentional changes with real processes.
//!
//! In verified mode (`[control] canary_delivery = "verified"`) a canary engine's answer reaches
//! the counterparty only once the baseline engine's answer for the same input matches it. Here,
//! with a real faulty canary build: a change that declares the divergence it expects is not
//! rolled back for that divergence, and still is for a worse reject rate. That a faulty build
//! never shows a counterparty a wrong answer is the core's logic, tested on virtual time and in
//! every odd seed of the simulation (see docs/testing.md).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use baton::bench::initiator::Initiator;
use baton::control::api::{EngineRole, Status};
use support::control::{STATUS_WAIT, ctl, ok, order, refused, shared_account_operators, status};
use support::venue::{start_blue_then_green, write_venue_config};
use support::{EngineProcess, Gateway, text};

/// Blue (authoritative) and green (standby, rejecting every new order on `green_fault`) behind a
/// gateway with `control` as its `[control]` section; waits until green is caught up.
fn venue(
    dir: &Path,
    green_fault: Option<&str>,
    control: &str,
) -> (EngineProcess, EngineProcess, Gateway, SocketAddr, Initiator) {
    let config = write_venue_config(dir, "", control, 1);
    let (blue, green, gateway, client) = start_blue_then_green(dir, &config, green_fault, "error");
    let addr = gateway.control;
    status_until(addr, "the standby caught up", |s| {
        s.engines
            .iter()
            .any(|e| e.role == EngineRole::Standby && e.lag_inputs == 0)
    });
    (blue, green, gateway, addr, client)
}

/// Waits until status satisfies `condition`; returns that status.
fn status_until(control: SocketAddr, what: &str, condition: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + STATUS_WAIT;
    loop {
        let s = status(control);
        if condition(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_declared_divergence_does_not_trip_the_equality_gate_but_a_worse_reject_rate_does() {
    let dir = tempfile::tempdir().unwrap();
    let control_section = format!(
        "{}\n[control.gates]\nmin_samples = 5\n",
        shared_account_operators()
    );
    let (_blue, _green, _gateway, control, mut client) =
        venue(dir.path(), Some("MSFT"), &control_section);
    let build = env!("CARGO_BIN_EXE_baton");

    // An unknown message type is refused before anything is filed, naming what is accepted.
    let bad = refused(ctl(
        control,
        "alice",
        &[
            "change",
            "file",
            "--artifact",
            build,
            "--reason",
            "new rule",
            "--expect-divergence-msg-types",
            "Z",
        ],
    ));
    assert!(
        bad.contains("unknown message type \"Z\"") && bad.contains("D (NewOrderSingle)"),
        "{bad}"
    );
    let filed = ok(ctl(
        control,
        "alice",
        &[
            "change",
            "file",
            "--artifact",
            build,
            "--reason",
            "new MSFT rule",
            "--expect-divergence-symbols",
            "MSFT",
        ],
    ));
    assert!(filed.contains("CHG-1"), "{filed}");
    ok(ctl(control, "bob", &["change", "approve", "CHG-1"]));
    ok(ctl(
        control,
        "alice",
        &["canary", "--symbols", "MSFT", "--change", "CHG-1"],
    ));

    // Green's different answer is the declared new behaviour: delivered, not an error.
    order(&mut client, "M-1", "MSFT", b'1', "10");
    assert_eq!(text(&support::report(&mut client), 150), "8");
    let s = status_until(control, "M-1 compared", |s| {
        s.canary.as_ref().is_some_and(|c| c.gates.compared >= 1)
    });
    let canary = s.canary.expect("the canary still runs");
    assert_eq!(
        (canary.gates.errors, canary.gates.expected_divergences),
        (0, 1)
    );
    assert!(canary.gates.breach.is_none(), "{:?}", canary.gates.breach);
    assert_eq!(canary.expected_divergence.symbols, ["MSFT".to_owned()]);

    // Rejecting every order is still judged: the reject-rate gate trips once it has its samples.
    for i in 2..=5 {
        order(&mut client, &format!("M-{i}"), "MSFT", b'1', "10");
        support::report(&mut client);
    }
    status_until(control, "the rollback", |s| s.canary.is_none());
    let report_text = ok(ctl(control, "carol", &["change", "report", "CHG-1"]));
    for expected in [
        "divergence on symbols MSFT",
        "gate reject-rate breached",
        "1 rollbacks",
    ] {
        assert!(report_text.contains(expected), "{expected}: {report_text}");
    }
    assert!(
        !report_text.contains("gate error-rate"),
        "the declared divergence tripped the equality gate: {report_text}"
    );
}
