//! Crashes, switches and failovers with work in flight, with real processes. The authoritative
//! engine is frozen (SIGSTOP) so that orders are journaled and sent to it but not answered, and
//! then:
//!
//! - the gateway is SIGKILLed, the engine resumes (SIGCONT) and applies what was already in its
//!   socket, and a new gateway starts over the same store and journal: the engine applied those
//!   inputs but their outputs were never delivered, so the new gateway has to resend from its
//!   outbox cursor, not from the engine's last input;
//! - a planned switch to the standby is asked for: it must wait until the old engine answered
//!   and delivered everything up to the barrier, and answer the rest from the new one;
//! - the frozen engine is SIGKILLed: the standby takes over at the last delivered input.
//!
//! Every order must be answered exactly once, and the barrier in the switch report, the
//! ExecIDs (input seq, index) and each engine's delivered-input count in status together say
//! which engine delivered each input.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use baton::control::api::{ControlReply, ControlRequest, EngineRole, Status, SwitchReport};
use support::control::{ask, status};
use support::counterparty::Counterparty;
use support::{
    EngineProcess, Gateway, WAIT, logged_on, new_order, send_probe, start_gateway_for,
    start_gateway_for_engines, wait_for_engine, wait_for_socket,
};

/// Bound on everything that waits on the restarted gateway: it replays, reattaches and resends
/// on a loaded machine; the test asserts what arrives, never how fast.
const RECOVERY_WAIT: Duration = Duration::from_secs(60);

/// Two counterparties, a control endpoint on a port the gateway picks, and a failover timeout far beyond the
/// test, so the frozen engine is never declared dead: the orders must be journaled and sent to
/// it, not refused as "application not available".
fn write_config(dir: &Path) {
    let text = "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\
         failover_timeout_ms = 600000\n\n[control]\napproval_required = []\n\n\
         [defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n\n\
         [[session]]\nTargetCompID = \"CLIENT1\"\n\n[[session]]\nTargetCompID = \"CLIENT2\"\n";
    std::fs::write(dir.join("baton.toml"), text).expect("config");
}

/// Polls the gateway's status until `done` holds.
fn status_until(control: SocketAddr, what: &str, done: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + RECOVERY_WAIT;
    loop {
        let s = status(control);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(engine: &EngineProcess, signal: libc::c_int) {
    // SAFETY: kill(2) on our own, not yet reaped, child process.
    let result = unsafe { libc::kill(engine.child.id() as libc::pid_t, signal) };
    assert_eq!(result, 0, "kill({signal})");
}

/// The last input the engine applied, from its link handshake. The engine serves one gateway
/// at a time, so this answers only once it has finished with the dead gateway's connection
/// (and applied whatever was left in that socket).
fn engine_last_input(addr: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr: baton::link::LinkAddr = addr.parse().expect("link address");
    runtime.block_on(async {
        let (link, hello) = baton::link::connect_with_timeout(&addr, RECOVERY_WAIT)
            .await
            .expect("engine handshake");
        drop(link);
        hello.last_input_seq
    })
}

/// Sends an order for a symbol no engine lists: its reject is sequenced after everything sent
/// before it, and the outbox delivers in input order, so once it is processed every earlier
/// answer has been too.
fn marker(counterparty: &mut Counterparty, cl_ord_id: &str) {
    send_probe(&mut counterparty.client, cl_ord_id).expect("send marker");
    counterparty.until(RECOVERY_WAIT, "marker answered", |c| {
        !c.exec_types(cl_ord_id).is_empty()
    });
}

#[test]
fn orders_in_flight_when_the_gateway_dies_are_answered_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let blue = EngineProcess::start(&dir.path().join("baton.toml"), dir.path(), "blue");
    wait_for_socket(&dir.path().join("blue.sock"));
    let mut gateway = start_gateway_for(dir.path(), &blue.addr);
    let control = gateway.control;
    let mut buyer = logged_on(&gateway, 1);
    wait_for_engine(&mut buyer);
    let mut buyer = Counterparty::new(buyer);
    let mut seller = Counterparty::new(logged_on(&gateway, 2));

    // Five sells rest and are acknowledged while everything runs.
    for i in 0..5 {
        new_order(&mut seller.client, &format!("S-{i}"), b'2', 10, "40");
    }
    seller.until(WAIT, "resting sells acknowledged", |c| {
        (0..5).all(|i| c.exec_types(&format!("S-{i}")) == ["0"])
    });
    let before = status(control);
    assert_eq!(before.delivered_through, before.journal_last_seq);

    // Frozen engine: fifteen more orders are journaled and written to its socket, unanswered.
    signal(&blue, libc::SIGSTOP);
    for i in 5..10 {
        new_order(&mut seller.client, &format!("S-{i}"), b'2', 10, "40");
    }
    for i in 0..10 {
        new_order(&mut buyer.client, &format!("B-{i}"), b'1', 10, "40");
    }
    // Journaled is not yet sent: wait until the gateway wrote all fifteen to blue's socket, so
    // they outlive the gateway there.
    let in_flight = status_until(control, "orders journaled and sent to blue", |s| {
        s.journal_last_seq == before.journal_last_seq + 15
            && engine(s, "blue").sent_through == s.journal_last_seq
    });
    assert_eq!(
        in_flight.delivered_through, before.delivered_through,
        "nothing answered while the engine is frozen"
    );

    // The gateway dies with all fifteen undelivered; the engine then applies them into a
    // connection nobody reads.
    gateway.kill();
    signal(&blue, libc::SIGCONT);
    let engine_last = engine_last_input(&blue.addr);
    assert!(
        engine_last > before.delivered_through,
        "the engine applied inputs whose outputs were never delivered \
         (engine at {engine_last}, delivered through {})",
        before.delivered_through
    );

    // Same store, same journal, same engine with its state.
    let gateway = start_gateway_for(dir.path(), &blue.addr);
    // The new gateway's control endpoint is on a port of its own.
    let control = gateway.control;
    // The seller's inbound number lags two messages it processed (the last two acks): they are
    // resent, PossDup, and dropped.
    buyer.reconnect(gateway.client(1), 0, RECOVERY_WAIT);
    seller.reconnect(gateway.client(2), 2, RECOVERY_WAIT);
    let all_filled = |c: &Counterparty, prefix: &str| {
        (0..10).all(|i| c.exec_types(&format!("{prefix}-{i}")).len() >= 2)
    };
    buyer.until(RECOVERY_WAIT, "every buy answered", |c| all_filled(c, "B"));
    seller.until(RECOVERY_WAIT, "every sell answered", |c| all_filled(c, "S"));
    marker(&mut buyer, "MARK-B");
    marker(&mut seller, "MARK-S");

    // Exactly once: one acknowledgement and one full fill per order, nothing else; equal
    // prices and sizes make every order fill completely whatever the interleaving.
    for (counterparty, prefix, marker) in [(&buyer, "B", "MARK-B"), (&seller, "S", "MARK-S")] {
        for i in 0..10 {
            let id = format!("{prefix}-{i}");
            assert_eq!(counterparty.exec_types(&id), ["0", "F"], "{id}");
        }
        assert_eq!(counterparty.reports.len(), 11, "{:?}", counterparty.reports);
        assert_eq!(counterparty.exec_types(marker), ["8"]);
    }
    assert_eq!((buyer.poss_dup_dropped, seller.poss_dup_dropped), (0, 2));
    let after = status(control);
    assert_eq!(after.delivered_through, after.journal_last_seq);
}

/// An engine's entry in status.
fn engine<'a>(s: &'a Status, name: &str) -> &'a baton::control::api::EngineStatus {
    s.engines
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no engine {name} in {s:?}"))
}

/// Blue with authority and green, caught up, as its standby behind one gateway, with a buyer
/// (CLIENT1) and a seller (CLIENT2) whose ten sells S-0..S-9 (10 at 40) rest acknowledged.
/// Green starts only once blue has authority, so the roles are certain.
fn blue_green_with_resting_sells(
    dir: &Path,
) -> (
    EngineProcess,
    EngineProcess,
    Gateway,
    Counterparty,
    Counterparty,
) {
    write_config(dir);
    let config = dir.join("baton.toml");
    let blue = EngineProcess::start(&config, dir, "blue");
    wait_for_socket(&dir.join("blue.sock"));
    let green_addr = format!("unix://{}", dir.join("green.sock").display());
    let gateway = start_gateway_for_engines(dir, &[&blue.addr, &green_addr]);
    let mut buyer = logged_on(&gateway, 1);
    wait_for_engine(&mut buyer);
    let buyer = Counterparty::new(buyer);
    let mut seller = Counterparty::new(logged_on(&gateway, 2));
    let green = EngineProcess::start(&config, dir, "green");
    for i in 0..10 {
        new_order(&mut seller.client, &format!("S-{i}"), b'2', 10, "40");
    }
    seller.until(WAIT, "resting sells acknowledged", |c| {
        (0..10).all(|i| c.exec_types(&format!("S-{i}")) == ["0"])
    });
    status_until(gateway.control, "green caught up as the standby", |s| {
        s.engines
            .iter()
            .any(|e| e.name == "green" && e.role == EngineRole::Standby && e.lag_inputs == 0)
    });
    (blue, green, gateway, buyer, seller)
}

/// Freezes blue and sends B-0..B-4 (each fills one resting sell): journaled, answered by the
/// standby green, unanswered by blue. Returns the last input delivered before them.
fn buys_in_flight(control: SocketAddr, blue: &EngineProcess, buyer: &mut Counterparty) -> u64 {
    let before = status(control);
    assert_eq!(before.delivered_through, before.journal_last_seq);
    signal(blue, libc::SIGSTOP);
    for i in 0..5 {
        new_order(&mut buyer.client, &format!("B-{i}"), b'1', 10, "40");
    }
    let in_flight = status_until(control, "buys journaled and shadowed by green", |s| {
        s.journal_last_seq == before.journal_last_seq + 5
            && engine(s, "green").answered_through == s.journal_last_seq
    });
    assert_eq!(
        in_flight.delivered_through, before.delivered_through,
        "nothing delivered while blue is frozen"
    );
    before.delivered_through
}

/// Reads until every B-0..B-`buys` and S-0..S-9 has its acknowledgement and fill, then checks
/// that each got exactly those two and nothing more came before the markers.
fn every_order_answered_once(buyer: &mut Counterparty, seller: &mut Counterparty, buys: usize) {
    buyer.until(RECOVERY_WAIT, "every buy answered", |c| {
        (0..buys).all(|i| c.exec_types(&format!("B-{i}")).len() >= 2)
    });
    seller.until(RECOVERY_WAIT, "every filled sell answered", |c| {
        (0..buys).all(|i| c.exec_types(&format!("S-{i}")).len() >= 2)
    });
    marker(buyer, "MARK-B");
    marker(seller, "MARK-S");
    for i in 0..buys {
        assert_eq!(buyer.exec_types(&format!("B-{i}")), ["0", "F"], "B-{i}");
        assert_eq!(seller.exec_types(&format!("S-{i}")), ["0", "F"], "S-{i}");
    }
    assert_eq!(buyer.reports.len(), buys + 1, "{:?}", buyer.reports);
    assert_eq!(seller.reports.len(), 11, "{:?}", seller.reports);
}

/// Waits until the sequencer holds the switch `switch` asked for, waiting for its barrier: a
/// rollback asked meanwhile is refused because a switch is in progress. (With nothing switched
/// yet, a rollback has nothing to go back to and is refused without effect.)
fn wait_until_switch_pending(control: SocketAddr, switch: &std::thread::JoinHandle<ControlReply>) {
    let deadline = Instant::now() + RECOVERY_WAIT;
    loop {
        assert!(
            !switch.is_finished(),
            "the switch finished while blue still owed its answers up to the barrier"
        );
        let probe = ControlRequest::Rollback {
            operator: Some("alice".into()),
            change: None,
        };
        match ask(control, &probe) {
            ControlReply::Refused { reason } if reason.contains("already in progress") => return,
            ControlReply::Refused { reason } if reason.contains("nothing to roll back") => {}
            other => {
                panic!("rollback probe while the switch should wait for blue: {other:?}")
            }
        }
        assert!(
            Instant::now() < deadline,
            "the switch never reached the sequencer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks which side of `barrier` each buy was sequenced on, from the input seq in its ExecIDs.
fn assert_buys_around(buyer: &Counterparty, barrier: u64, before: std::ops::Range<usize>) {
    for (id, seqs) in &buyer.input_seqs {
        let Some(n) = id.strip_prefix("B-").and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        let at_or_below = seqs.iter().all(|seq| *seq <= barrier);
        let above = seqs.iter().all(|seq| *seq > barrier);
        if before.contains(&n) {
            assert!(
                at_or_below,
                "{id} answered for inputs {seqs:?}, barrier {barrier}"
            );
        } else {
            assert!(
                above,
                "{id} answered for inputs {seqs:?}, barrier {barrier}"
            );
        }
    }
}

#[test]
fn a_switch_with_orders_in_flight_answers_up_to_the_barrier_from_the_old_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (blue, _green, gateway, mut buyer, mut seller) = blue_green_with_resting_sells(dir.path());
    let control = gateway.control;
    let delivered_before = buys_in_flight(control, &blue, &mut buyer);

    // Green has answered everything; blue owes five answers. The switch must wait for them.
    let switch = std::thread::spawn(move || ask(control, &ControlRequest::switch("alice")));
    wait_until_switch_pending(control, &switch);
    // Sent while the switch waits: held, and sequenced after the barrier.
    for i in 5..10 {
        new_order(&mut buyer.client, &format!("B-{i}"), b'1', 10, "40");
    }
    signal(&blue, libc::SIGCONT);
    let report: SwitchReport = match switch.join().expect("switch thread") {
        ControlReply::Switched(report) => report,
        other => panic!("switch: {other:?}"),
    };
    assert_eq!(
        (report.from.as_str(), report.to.as_str(), report.planned),
        ("blue", "green", true)
    );
    assert_eq!(
        report.barrier_seq,
        delivered_before + 5,
        "the barrier is the last input sequenced before the switch"
    );

    every_order_answered_once(&mut buyer, &mut seller, 10);
    assert_buys_around(&buyer, report.barrier_seq, 0..5);
    // Delivery is in input order and each engine counts what it delivered: blue every input
    // up to the barrier, green every one after it.
    let after = status(control);
    assert_eq!(after.delivered_through, after.journal_last_seq);
    assert_eq!(engine(&after, "blue").delivered_inputs, report.barrier_seq);
    assert_eq!(
        engine(&after, "green").delivered_inputs,
        after.journal_last_seq - report.barrier_seq
    );
}

#[test]
fn a_failover_with_orders_in_flight_answers_them_from_the_standby_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut blue, _green, gateway, mut buyer, mut seller) =
        blue_green_with_resting_sells(dir.path());
    let control = gateway.control;
    let delivered_before = buys_in_flight(control, &blue, &mut buyer);

    // Blue dies owing five answers that green already produced as a shadow.
    blue.kill();
    let failed_over = status_until(control, "green took authority", |s| {
        engine(s, "green").role == EngineRole::Authoritative
    });
    let report = failed_over.last_switch.expect("failover report");
    assert_eq!(
        (report.from.as_str(), report.to.as_str(), report.planned),
        ("blue", "green", false)
    );
    assert_eq!(
        report.barrier_seq, delivered_before,
        "authority moves at the last input delivered"
    );
    for i in 5..10 {
        new_order(&mut buyer.client, &format!("B-{i}"), b'1', 10, "40");
    }

    every_order_answered_once(&mut buyer, &mut seller, 10);
    assert_buys_around(&buyer, report.barrier_seq, 0..0);
    let after = status(control);
    assert_eq!(after.delivered_through, after.journal_last_seq);
    assert_eq!(engine(&after, "green").role, EngineRole::Authoritative);
    assert_eq!(
        after.journal_last_seq - report.barrier_seq,
        engine(&after, "green").delivered_inputs,
        "green delivered every input after the last one blue delivered"
    );
}
