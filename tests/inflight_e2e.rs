//! A gateway killed with work in flight, with real processes. The authoritative engine is frozen
//! (SIGSTOP) so that orders are journaled and sent to it but not answered; the gateway is
//! SIGKILLed, the engine resumes (SIGCONT) and applies what was already in its socket, and a new
//! gateway starts over the same store and journal: the engine applied those inputs but their
//! outputs were never delivered, so the new gateway has to resend from its outbox cursor, not
//! from the engine's last input. Every order must be answered exactly once.
//!
//! A switch or a failover with orders in flight is the core's logic, tested on virtual time
//! and in the seeded simulation (see docs/testing.md).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use baton::control::api::Status;
use support::control::status;
use support::counterparty::Counterparty;
use support::{
    EngineProcess, WAIT, logged_on, new_order, send_probe, start_gateway_for, wait_for_engine,
    wait_for_socket,
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
