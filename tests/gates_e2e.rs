//! The canary gates other than the error rate (reject-rate increase, latency p99 and the
//! minimum sample they wait for) and the refusal to switch onto a standby that lags, each
//! driven to its limit with real engine processes: a build that rejects one symbol, an engine
//! paused with SIGSTOP.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use baton::bench::initiator::Initiator;
use baton::control::api::{ControlReply, ControlRequest, EngineRole, GateBreach, Status};
use support::control::{ask, order, status};
use support::venue::{start_blue_then_green, write_venue_config};
use support::{EngineProcess, Gateway, report, text};

/// Blue (authoritative) and green (standby, optionally rejecting every order on one symbol)
/// behind a gateway with the given `[gateway]` extras and `[control]` config; CLIENT1 logged on.
/// Green starts only once blue has authority, so the roles are certain.
fn venue(
    dir: &Path,
    green_fault: Option<&str>,
    gateway_extra: &str,
    control: &str,
) -> (EngineProcess, EngineProcess, Gateway, SocketAddr, Initiator) {
    let config = write_venue_config(
        dir,
        &format!("{gateway_extra}\n"),
        &format!("approval_required = []\n{control}"),
        2,
    );
    let (blue, green, gateway, client) = start_blue_then_green(dir, &config, green_fault, "error");
    let addr = gateway.control;
    wait_until(addr, "the standby caught up", |s| {
        s.engines
            .iter()
            .any(|e| e.role == EngineRole::Standby && e.lag_inputs == 0)
    });
    (blue, green, gateway, addr, client)
}

/// Polls the status until `done` holds, failing after a generous bound; returns that status.
fn wait_until(control: SocketAddr, what: &str, done: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(control);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_canary(control: SocketAddr, symbol: &str) {
    let reply = ask(
        control,
        &ControlRequest::Canary {
            operator: Some("alice".into()),
            change: None,
            percent: None,
            symbols: vec![symbol.to_owned()],
        },
    );
    assert!(matches!(reply, ControlReply::Switched(_)), "{reply:?}");
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child process.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

fn lag_of(s: &Status, name: &str) -> u64 {
    s.engines
        .iter()
        .find(|e| e.name == name)
        .map_or(0, |e| e.lag_inputs)
}

/// The breaches the gateway recorded in the audit log, in order.
fn audited_breaches(dir: &Path) -> Vec<GateBreach> {
    std::fs::read_to_string(dir.join("journal").join("audit.log"))
        .expect("audit log")
        .lines()
        .filter_map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("audit line");
            (record["event"]["event"] == "gate-breached")
                .then(|| serde_json::from_value(record["event"]["breach"].clone()))
        })
        .collect::<Result<_, _>>()
        .expect("breach records")
}

/// Waits until the canary has ended and returns the one breach that ended it.
fn the_breach(dir: &Path, control: SocketAddr) -> GateBreach {
    wait_until(control, "the canary's rollback", |s| s.canary.is_none());
    let breaches = audited_breaches(dir);
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    breaches.into_iter().next().expect("one breach")
}

#[test]
fn a_canary_that_rejects_more_is_rolled_back_but_only_after_min_samples() {
    let dir = tempfile::tempdir().unwrap();
    // The error-rate gate is opened fully, so only the reject-rate gate can roll back green,
    // which rejects every MSFT order blue accepts.
    let gates = "[control.gates]\nerror_rate_max = 1.0\nreject_rate_increase_max = 0.5\n\
                 min_samples = 5\n";
    let (_blue, _green, _gateway, control, mut client) = venue(dir.path(), Some("MSFT"), "", gates);
    start_canary(control, "MSFT");

    // Four compared inputs, every one a reject blue did not make: a 100% increase, not judged.
    for i in 0..4 {
        order(&mut client, &format!("M-{i}"), "MSFT", b'1', "10");
        assert_eq!(text(&report(&mut client), 150), "8");
    }
    let s = wait_until(control, "four comparisons", |s| {
        s.canary.as_ref().is_some_and(|c| c.gates.compared == 4)
    });
    let gates = s.canary.expect("canary running").gates;
    assert_eq!((gates.canary_rejects, gates.baseline_rejects), (4, 0));
    assert_eq!(gates.breach, None, "judged before min_samples: {gates:?}");

    // The fifth reaches min_samples: the reject-rate gate trips and the canary is rolled back.
    order(&mut client, "M-4", "MSFT", b'1', "10");
    assert_eq!(text(&report(&mut client), 150), "8");
    let breach = the_breach(dir.path(), control);
    assert_eq!(
        (
            breach.gate.as_str(),
            breach.observed,
            breach.limit,
            breach.compared
        ),
        ("reject-rate", 1.0, 0.5, 5)
    );
}

#[test]
fn a_canary_slower_than_its_baseline_breaches_the_latency_gate() {
    let dir = tempfile::tempdir().unwrap();
    // The canary may be no slower than the baseline at p99 plus 1 ms; the silence allowed before
    // a canary engine is given up is far above the pause below.
    let gates = "[control.gates]\nlatency_p99_ratio_max = 1.0\nlatency_slack_us = 1000\n\
                 min_samples = 3\n";
    let (_blue, green, _gateway, control, mut client) =
        venue(dir.path(), None, "failover_timeout_ms = 60000", gates);
    start_canary(control, "AAPL");

    // Green, the canary, is paused while three AAPL orders are sequenced and answered by blue;
    // it stays paused well beyond that, so each of its answers is older than blue's by more
    // than the slack.
    signal(green.child.id(), libc::SIGSTOP);
    for i in 0..3 {
        order(&mut client, &format!("A-{i}"), "AAPL", b'1', "10");
    }
    wait_until(control, "blue answered, green not", |s| {
        lag_of(s, "blue") == 0 && lag_of(s, "green") >= 3
    });
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_millis(200) {
        // Not a wait for an event: the pause itself is the canary's extra latency.
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(green.child.id(), libc::SIGCONT);
    for _ in 0..3 {
        assert_eq!(text(&report(&mut client), 150), "0");
    }
    let breach = the_breach(dir.path(), control);
    assert_eq!(breach.gate, "latency", "{breach:?}");
    assert!(breach.observed >= 200_000.0, "{breach:?}");
    assert!(breach.observed > breach.limit, "{breach:?}");
}

#[test]
fn a_switch_onto_a_standby_that_lags_too_far_is_refused_until_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    // A switch may wait for at most 5 inputs; the link drops an engine silent for a second, so
    // the pause below stays short and few inputs make the lag.
    let gates = "[control.gates]\nswitch_lag_max_inputs = 5\n";
    let (_blue, green, _gateway, control, mut client) = venue(dir.path(), None, "", gates);
    // Green, the standby, is paused while more inputs than that are sequenced and answered by
    // blue: orders for a symbol the venue does not list, each answered with one reject.
    signal(green.child.id(), libc::SIGSTOP);
    for i in 0..8 {
        order(&mut client, &format!("L-{i}"), "UNLISTED", b'1', "10");
        assert_eq!(text(&report(&mut client), 150), "8");
    }
    let lagging = wait_until(control, "green lagging", |s| lag_of(s, "green") >= 8);
    let reply = ask(control, &ControlRequest::switch("alice"));
    signal(green.child.id(), libc::SIGCONT);
    let ControlReply::Refused { reason } = &reply else {
        panic!("switch onto a lagging standby accepted: {reply:?}");
    };
    let said: u64 = reason
        .strip_prefix("standby green is ")
        .and_then(|rest| rest.strip_suffix(" inputs behind"))
        .and_then(|lag| lag.parse().ok())
        .unwrap_or_else(|| panic!("no lag in the reason: {reason}"));
    assert!(said >= lag_of(&lagging, "green"), "{reason}: {lagging:?}");
    assert_eq!(status(control).last_switch, None);

    // Resumed, green catches up and the same switch goes through.
    wait_until(control, "green caught up", |s| {
        s.engines
            .iter()
            .any(|e| e.name == "green" && e.role == EngineRole::Standby && e.lag_inputs == 0)
    });
    let reply = ask(control, &ControlRequest::switch("alice"));
    assert!(matches!(reply, ControlReply::Switched(_)), "{reply:?}");
}
