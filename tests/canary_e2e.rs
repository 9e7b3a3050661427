//! Canary releases with real processes: authority for some symbols moves to the standby engine,
//! the gates compare its answers with the authoritative engine's on the same inputs, a faulty
//! build is rolled back automatically (also mid-stream, under load from several sessions), a
//! killed canary engine gives its symbols back, and every step is in the audit log before it
//! takes effect.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton::bench::initiator::Initiator;
use baton::control::api::{ControlReply, ControlRequest, EngineRole, Status, SwitchScope};
use support::control::{
    STATUS_WAIT, ask, audit_event_until, audit_events, ctl, ok, order, refused,
    shared_account_operators, status,
};
use support::venue::{start_blue_then_green, write_venue_config};
use support::{
    EngineProcess, Gateway, WAIT, logged_on, report, send_probe, start_gateway_for_engines, text,
    wait_for_engine,
};

/// Blue (authoritative) and green (standby, optionally faulty on one symbol) behind a gateway
/// whose control endpoint is at the returned address, with a logged-on CLIENT1; `control` is
/// extra `[control]` config. Green starts only once blue has authority, so the roles are certain.
fn venue(
    dir: &Path,
    green_fault: Option<&str>,
    control: &str,
) -> (EngineProcess, EngineProcess, Gateway, SocketAddr, Initiator) {
    let config = write_venue_config(dir, "", control, 2);
    let (blue, green, gateway, client) = start_blue_then_green(dir, &config, green_fault, "error");
    let addr = gateway.control;
    wait_for_standby(addr);
    (blue, green, gateway, addr, client)
}

/// Waits until both engines are attached and the standby is caught up, so a switch can start.
fn wait_for_standby(addr: SocketAddr) {
    let deadline = Instant::now() + STATUS_WAIT;
    loop {
        let s = status(addr);
        let standby_ready = s
            .engines
            .iter()
            .any(|e| e.role == EngineRole::Standby && e.lag_inputs == 0);
        if standby_ready {
            return;
        }
        assert!(Instant::now() < deadline, "standby never caught up: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last input written to engine `name`'s link (it may be frozen and not have read it).
fn sent_through(s: &Status, name: &str) -> u64 {
    s.engines
        .iter()
        .find(|e| e.name == name)
        .map_or(0, |e| e.sent_through)
}

/// The last input engine `name` answered.
fn answered_through(s: &Status, name: &str) -> u64 {
    s.engines
        .iter()
        .find(|e| e.name == name)
        .map_or(0, |e| e.answered_through)
}

/// Sends a PROBE order from `client` and checks that its answer is the next ExecutionReport:
/// the outbox delivers in input order, so a report still owed for an earlier input (one that
/// must never be sent) would come first.
fn nothing_owed_before_a_probe(client: &mut Initiator, what: &str) {
    send_probe(client, "PROBE-AFTER").expect("send probe");
    let next = client
        .recv_until(WAIT, "the probe's answer", |m| m.msg_type() == b"8")
        .unwrap_or_else(|error| panic!("{what}: the session failed: {error}"));
    assert_eq!(text(&next, 11), "PROBE-AFTER", "{what}: {next:?}");
}

fn delivered(s: &Status, name: &str) -> u64 {
    s.engines
        .iter()
        .find(|e| e.name == name)
        .map_or(0, |e| e.delivered_inputs)
}

/// The ExecType of the single report each of `ids` gets, checking none gets two.
fn answers(client: &mut Initiator, ids: &[String]) -> HashMap<String, String> {
    let mut got: HashMap<String, String> = HashMap::new();
    while got.len() < ids.len() {
        let message = report(client);
        let id = text(&message, 11);
        let previous = got.insert(id.clone(), text(&message, 150));
        assert!(previous.is_none(), "{id} answered twice");
    }
    got
}

fn canary(symbols: &[&str]) -> ControlRequest {
    ControlRequest::Canary {
        operator: Some("alice".into()),
        change: None,
        percent: None,
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
    }
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

/// Sends an order and waits until the sequencer journaled it (its engine may be frozen).
fn order_journaled(
    control: SocketAddr,
    client: &mut Initiator,
    cl_ord_id: &str,
    symbol: &str,
    price: &str,
) {
    let before = status(control).journal_last_seq;
    order(client, cl_ord_id, symbol, b'1', price);
    status_until(control, "the order journaled", |s| {
        s.journal_last_seq > before
    });
}

/// Waits until the switch asked for waits at its barrier.
fn switch_waiting(control: SocketAddr) {
    status_until(control, "the switch waiting at its barrier", |s| {
        s.switch_waiting_at.is_some()
    });
}

/// Waits until no canary runs (rolled back, completed or its engine lost); returns that status.
fn canary_ended(control: SocketAddr) -> Status {
    let deadline = Instant::now() + STATUS_WAIT;
    loop {
        let s = status(control);
        if s.canary.is_none() {
            return s;
        }
        assert!(Instant::now() < deadline, "the canary never ended: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A venue whose green rejects every MSFT order, with a canary of MSFT on green running.
fn faulty_msft_canary(
    dir: &Path,
) -> (EngineProcess, EngineProcess, Gateway, SocketAddr, Initiator) {
    let venue = venue(dir, Some("MSFT"), "approval_required = []");
    assert!(matches!(
        ask(venue.3, &canary(&["MSFT"])),
        ControlReply::Switched(_)
    ));
    venue
}

#[test]
fn a_canary_moves_only_its_symbols_then_a_switch_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, _green, _gateway, control, mut client) =
        venue(dir.path(), None, "approval_required = []");

    let reply = ask(control, &canary(&["AAPL"]));
    let ControlReply::Switched(started) = reply else {
        panic!("canary refused: {reply:?}");
    };
    assert_eq!(
        (started.from.as_str(), started.to.as_str()),
        ("blue", "green")
    );
    assert_eq!(
        started.scope,
        SwitchScope::CanaryStarted {
            symbols: vec!["AAPL".into()]
        }
    );
    let before = status(control);
    assert_eq!(
        before.canary.as_ref().map(|c| c.symbols.clone()),
        Some(vec!["AAPL".to_owned()])
    );
    let roles: Vec<EngineRole> = before.engines.iter().map(|e| e.role).collect();
    assert_eq!(roles, [EngineRole::Authoritative, EngineRole::Canary]);

    let mut ids = Vec::new();
    for i in 0..10 {
        for symbol in ["AAPL", "MSFT"] {
            let id = format!("{symbol}-{i}");
            order(&mut client, &id, symbol, b'1', "10");
            ids.push(id);
        }
    }
    let got = answers(&mut client, &ids);
    assert!(got.values().all(|exec_type| exec_type == "0"), "{got:?}");

    // Green delivered the AAPL answers, blue the MSFT ones; the gates compared every AAPL input.
    let after = status(control);
    assert_eq!(delivered(&after, "green") - delivered(&before, "green"), 10);
    assert_eq!(delivered(&after, "blue") - delivered(&before, "blue"), 10);
    let gates = after.canary.expect("canary still running").gates;
    assert!(gates.compared >= 10 && gates.errors == 0, "{gates:?}");
    assert!(gates.breach.is_none());
    // Status carries the p99 the latency gate tolerates, at least the default slack above the
    // baseline's, so `baton ctl watch` can show how close the gate is.
    assert!(
        gates.latency_allowance_p99_us
            >= gates.baseline_p99_us + baton::constants::GATE_LATENCY_SLACK_US_DEFAULT,
        "{gates:?}"
    );

    // A switch completes the canary: every symbol to green.
    let ControlReply::Switched(done) = ask(control, &ControlRequest::switch("alice")) else {
        panic!("switch refused");
    };
    assert_eq!((done.from.as_str(), done.to.as_str()), ("blue", "green"));
    let s = status(control);
    assert!(s.canary.is_none());
    order(&mut client, "MSFT-after", "MSFT", b'1', "10");
    assert_eq!(text(&report(&mut client), 150), "0");
    let s2 = status(control);
    assert_eq!(delivered(&s2, "green") - delivered(&s, "green"), 1);
    assert_eq!(client.gaps(), 0);

    let events = audit_events(dir.path());
    assert!(
        events.ends_with(&[
            "action-requested:canary".into(),
            "action-completed:canary".into(),
            "action-requested:switch".into(),
            "action-completed:switch".into(),
        ]),
        "{events:?}"
    );
}

/// The state digest of the engine serving the link at `addr`, asked over a link of its own (the
/// gateway is stopped first, so the engine is idle), bounded so a silent engine fails the test.
fn engine_digest(addr: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: baton::link::LinkAddr = addr.parse().unwrap();
    runtime.block_on(async {
        let digest = async {
            let (mut link, hello) = baton::link::connect(&addr).await.unwrap();
            link.request_digest().await.unwrap();
            loop {
                if let baton::link::Frame::Digest(report) = link.recv().await.unwrap() {
                    assert_eq!(report.at_input_seq, hello.last_input_seq);
                    return report.digest.to_string();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), digest)
            .await
            .expect("the engine's digest within 60 s")
    })
}

/// The digest `baton journal replay` computes from the journal in `dir`.
fn replayed_digest(dir: &Path) -> String {
    let output = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["journal", "replay", "--config"])
            .arg(dir.join("baton.toml"))
            .arg("--journal-dir")
            .arg(dir.join("journal")),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("digest "))
        .unwrap_or_else(|| panic!("no digest in {stdout}"))
        .to_owned()
}

/// `buyer` buys `qty` AAPL at `price` and sees the order filled in full: the sells it crosses
/// are live.
fn buy_fills_in_full(buyer: &mut Initiator, id: &str, qty: u64, price: &str) {
    buyer
        .send(b"D", |e| {
            e.str(11, id)
                .str(55, "AAPL")
                .char(54, b'1')
                .str(60, "20261123-12:00:00")
                .uint(38, qty)
                .char(40, b'2')
                .str(44, price);
        })
        .expect("send order");
    let filled = buyer
        .recv_until(WAIT, "the buy filled in full", |m| {
            m.msg_type() == b"8" && text(m, 150) == "F" && text(m, 39) == "2"
        })
        .expect("the buy fills");
    assert_eq!(text(&filled, 14), qty.to_string());
}

/// Once every input is delivered and green answered them all, stops the gateway and checks that
/// each engine at `engines` holds exactly the state a replay of the journal gives.
fn settle_and_compare_with_replay(
    control: SocketAddr,
    gateway: &mut support::Gateway,
    dir: &Path,
    engines: &[&str],
) {
    status_until(control, "every input delivered", |s| {
        s.delivered_through == s.journal_last_seq
            && answered_through(s, "green") == s.journal_last_seq
    });
    gateway.kill();
    let replayed = replayed_digest(dir);
    for addr in engines {
        assert_eq!(engine_digest(addr), replayed, "engine at {addr}");
    }
}

/// The transfer a canary's end made, from its switch report.
fn transfer_of(status: &Status) -> baton::control::api::TransferReport {
    match status.last_switch.as_ref().map(|s| &s.scope) {
        Some(SwitchScope::CanaryEnded {
            transfer: Some(transfer),
            ..
        }) => (**transfer).clone(),
        other => panic!("no transfer in the last switch: {other:?}"),
    }
}

/// RFC 3339 UTC, whole seconds, `seconds` from now.
fn rfc3339_in(seconds: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    at.replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn a_canary_whose_window_closes_is_rolled_back_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let operators = shared_account_operators();
    let (blue, green, mut gateway, control, mut client) = venue(dir.path(), None, &operators);
    let build = env!("CARGO_BIN_EXE_baton");
    let window_end = rfc3339_in(12);
    ok(ctl(
        control,
        "alice",
        &[
            "change",
            "file",
            "--artifact",
            build,
            "--reason",
            "a short window",
            "--window-end",
            &window_end,
        ],
    ));
    ok(ctl(control, "bob", &["change", "approve", "CHG-1"]));
    ok(ctl(
        control,
        "alice",
        &["canary", "--symbols", "AAPL", "--change", "CHG-1"],
    ));
    // Sells green books as the owner of AAPL, while the window is open.
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = format!("W-{i}");
        order(&mut client, &id, "AAPL", b'2', "40");
        ids.push(id);
    }
    let got = answers(&mut client, &ids);
    assert!(got.values().all(|exec_type| exec_type == "0"), "{got:?}");
    // The window closes: the gateway rolls the canary back, moving green's AAPL state to blue.
    let s = canary_ended(control);
    let transfer = transfer_of(&s);
    assert_eq!(transfer.refused, None, "{transfer:?}");
    assert_eq!(transfer.orders_moved, 3);
    assert!(s.halted.is_empty());
    assert!(audit_events(dir.path()).contains(&"window-closed".to_owned()));
    // The change report shows the transfer.
    let report_text = ok(ctl(control, "carol", &["change", "report", "CHG-1"]));
    assert!(
        report_text.contains("state moved back for AAPL: 3 resting orders"),
        "{report_text}"
    );
    // The three sells are live under blue.
    let mut buyer = logged_on(&gateway, 2);
    buy_fills_in_full(&mut buyer, "B-W", 30, "40");
    settle_and_compare_with_replay(
        control,
        &mut gateway,
        dir.path(),
        &[&blue.addr, &green.addr],
    );
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child process.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

fn authority(status: &Status) -> String {
    status
        .engines
        .iter()
        .find(|e| e.role == EngineRole::Authoritative)
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

#[test]
fn a_breach_while_a_switch_waits_at_its_barrier_keeps_the_faulty_build_from_authority() {
    let dir = tempfile::tempdir().unwrap();
    let (blue, green, _gateway, control, mut client) = faulty_msft_canary(dir.path());
    let (blue_pid, green_pid) = (blue.child.id(), green.child.id());
    // Green holds M-1's (diverging) answer; blue holds A-1's, so the switch's barrier waits.
    signal(green_pid, libc::SIGSTOP);
    order_journaled(control, &mut client, "M-1", "MSFT", "10");
    // Blue, the baseline, has answered M-1 before it freezes: only green's answer is missing.
    status_until(control, "blue answering M-1", |s| {
        s.engines
            .iter()
            .any(|e| e.name == "blue" && e.answered_through >= s.journal_last_seq)
    });
    signal(blue_pid, libc::SIGSTOP);
    order_journaled(control, &mut client, "A-1", "AAPL", "10");
    let switch = std::thread::spawn(move || ask(control, &ControlRequest::switch("alice")));
    switch_waiting(control);
    signal(green_pid, libc::SIGCONT);
    // Green's diverging answer arrives while the barrier still waits for blue's.
    status_until(control, "the canary's gate breached", |s| {
        s.canary.as_ref().is_none_or(|c| c.gates.breach.is_some())
    });
    signal(blue_pid, libc::SIGCONT);
    let reply = switch.join().expect("switch thread");
    assert!(
        matches!(&reply, ControlReply::Refused { reason } if reason.contains("breached")),
        "{reply:?}"
    );
    canary_ended(control);
    assert_eq!(authority(&status(control)), "blue");
    assert!(audit_events(dir.path()).contains(&"gate-breached".to_owned()));
}

#[test]
fn a_divergence_that_arrives_with_the_barrier_is_judged_before_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, green, _gateway, control, mut client) = faulty_msft_canary(dir.path());
    signal(green.child.id(), libc::SIGSTOP);
    order_journaled(control, &mut client, "M-1", "MSFT", "10");
    let switch = std::thread::spawn(move || ask(control, &ControlRequest::switch("alice")));
    switch_waiting(control);
    signal(green.child.id(), libc::SIGCONT);
    let reply = switch.join().expect("switch thread");
    assert!(matches!(reply, ControlReply::Refused { .. }), "{reply:?}");
    canary_ended(control);
    assert_eq!(authority(&status(control)), "blue");
    assert!(audit_events(dir.path()).contains(&"gate-breached".to_owned()));
}

#[test]
fn a_killed_faulty_canary_engine_leaves_its_symbols_halted() {
    let dir = tempfile::tempdir().unwrap();
    // Gates that judge nothing before a thousand samples: no rollback moves green's state back
    // before it dies, so what a dead canary engine leaves is tested alone.
    let (_blue, mut green, gateway, control, mut client) = venue(
        dir.path(),
        Some("MSFT"),
        "approval_required = []\n[control.gates]\nerror_rate_max = 1.0\n\
         reject_rate_increase_max = 1.0\nmin_samples = 1000\n",
    );
    assert!(matches!(
        ask(control, &canary(&["MSFT"])),
        ControlReply::Switched(_)
    ));
    // Green rejects M-1 and dies: it gives nothing back, so blue's MSFT book (with M-1 resting)
    // must not trade.
    signal(green.child.id(), libc::SIGSTOP);
    let before = status(control).journal_last_seq;
    order(&mut client, "M-1", "MSFT", b'1', "10");
    // M-1 waits in the frozen green's socket.
    status_until(control, "M-1 journaled and written to green", |s| {
        s.journal_last_seq > before && sent_through(s, "green") == s.journal_last_seq
    });
    signal(green.child.id(), libc::SIGCONT);
    assert_eq!(text(&report(&mut client), 150), "8");
    status_until(control, "M-1's divergence seen", |s| {
        s.shadow.divergences == 1
    });
    green.kill();
    let s = canary_ended(control);
    assert_eq!(s.halted, ["MSFT".to_owned()]);
    let failover = s.last_switch.expect("the failover");
    assert!(!failover.planned);
    assert!(
        matches!(
            failover.scope,
            SwitchScope::CanaryEnded { transfer: None, .. }
        ),
        "{failover:?}"
    );
    let mut seller = logged_on(&gateway, 2);
    order(&mut seller, "S-1", "MSFT", b'2', "10");
    let refused = seller
        .recv_until(WAIT, "business reject", |m| m.msg_type() == b"j")
        .expect("business reject");
    assert!(text(&refused, 58).contains("halted"), "{refused:?}");
    // CLIENT1 gets nothing more for M-1: no fill of an order it was told is rejected.
    nothing_owed_before_a_probe(
        &mut client,
        "CLIENT1 got a report for an order it was told is rejected",
    );
}

#[test]
fn a_killed_canary_engine_gives_its_symbols_back_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, mut green, _gateway, control, mut client) =
        venue(dir.path(), None, "approval_required = []");
    assert!(matches!(
        ask(control, &canary(&["AAPL"])),
        ControlReply::Switched(_)
    ));
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = format!("A-{i}");
        order(&mut client, &id, "AAPL", b'2', "20");
        ids.push(id);
        if i == 9 {
            green.kill();
        }
    }
    // Every order is answered exactly once, by green before the kill and blue after.
    let got = answers(&mut client, &ids);
    assert!(got.values().all(|exec_type| exec_type == "0"), "{got:?}");
    let s = status(control);
    assert!(s.canary.is_none());
    let failover = s.last_switch.expect("failover");
    assert!(!failover.planned);
    assert!(matches!(failover.scope, SwitchScope::CanaryEnded { .. }));
    assert_eq!(client.gaps(), 0);
    assert!(audit_events(dir.path()).contains(&"failover".to_owned()));
}

#[test]
fn by_default_a_canary_needs_an_approved_change_and_the_cli_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, _green, _gateway, control, _client) = venue(dir.path(), None, "");
    let output = ctl(control, "alice", &["canary", "--percent", "5"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("approved change"), "{stderr}");
    assert!(status(control).canary.is_none());
    assert!(audit_events(dir.path()).contains(&"action-refused:canary".to_owned()));
}

#[test]
fn the_release_lifecycle_runs_from_the_cli_under_a_second_operators_approval() {
    let dir = tempfile::tempdir().unwrap();
    let operators = shared_account_operators();
    let (_blue, _green, _gateway, control, mut client) = venue(dir.path(), None, &operators);
    // The engines run the baton binary itself: that is the artifact of the first change.
    let build = env!("CARGO_BIN_EXE_baton");
    let filed = ok(ctl(
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
    assert!(
        filed.contains("CHG-1") && filed.contains("filed"),
        "{filed}"
    );
    let not_yet = refused(ctl(
        control,
        "alice",
        &["canary", "--percent", "50", "--change", "CHG-1"],
    ));
    assert!(not_yet.contains("not approved"), "{not_yet}");
    let own = refused(ctl(control, "alice", &["change", "approve", "CHG-1"]));
    assert!(own.contains("cannot approve"), "{own}");
    let approved = ok(ctl(control, "bob", &["change", "approve", "CHG-1"]));
    assert!(approved.contains("approved"), "{approved}");

    let canary = ok(ctl(
        control,
        "alice",
        &["canary", "--percent", "50", "--change", "CHG-1"],
    ));
    assert!(
        canary.contains("blue → green") && canary.contains("canary"),
        "{canary}"
    );
    order(&mut client, "L-1", "AAPL", b'1', "10");
    assert_eq!(text(&report(&mut client), 150), "0");
    let switched = ok(ctl(control, "alice", &["switch", "--change", "CHG-1"]));
    assert!(switched.contains("blue → green"), "{switched}");
    ok(ctl(control, "alice", &["change", "close", "CHG-1"]));
    let closed = refused(ctl(control, "alice", &["rollback", "--change", "CHG-1"]));
    assert!(closed.contains("closed"), "{closed}");

    // The report is drawn from the audit log: who, what, approvals, the actions and the head.
    let report_text = ok(ctl(control, "carol", &["change", "report", "CHG-1"]));
    for expected in [
        "CHG-1 (closed)",
        "approved by bob",
        "matching fix",
        "2 completed",
        "blue -> green",
        "audit head",
    ] {
        assert!(report_text.contains(expected), "{expected}: {report_text}");
    }

    // A change naming another build cannot give authority to an engine that runs this one.
    let other = dir.path().join("other-build");
    std::fs::write(&other, b"not the engine").unwrap();
    ok(ctl(
        control,
        "alice",
        &[
            "change",
            "file",
            "--artifact",
            other.to_str().unwrap(),
            "--reason",
            "other",
        ],
    ));
    ok(ctl(control, "bob", &["change", "approve", "CHG-2"]));
    let wrong = refused(ctl(control, "alice", &["switch", "--change", "CHG-2"]));
    assert!(wrong.contains("not the change's artifact"), "{wrong}");

    // The whole trail verifies offline, and the report drawn from it alone is the gateway's.
    let log = dir.path().join("journal").join("audit.log");
    let verify = Command::new(build)
        .args(["audit", "verify", "--file"])
        .arg(&log)
        .output()
        .expect("baton audit verify");
    assert!(verify.status.success(), "{verify:?}");
    let online = ok(ctl(
        control,
        "carol",
        &["change", "report", "CHG-1", "--json"],
    ));
    let offline = Command::new(build)
        .args(["audit", "report", "CHG-1", "--json", "--file"])
        .arg(&log)
        .output()
        .expect("baton audit report");
    let parse = |text: &str| -> serde_json::Value {
        let mut value: serde_json::Value = serde_json::from_str(text).expect("report JSON");
        // The head moves on as the gateway records; everything else must agree.
        value["audit_head_seq"] = serde_json::Value::Null;
        value["audit_head_hash"] = serde_json::Value::Null;
        value
    };
    assert_eq!(parse(&ok(offline)), parse(&online));

    // Each record names the operator and the account the command came from.
    // SAFETY: getuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let filed_by = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|record| record["event"]["event"] == "change-filed")
        .map(|record| record["actor"].as_str().unwrap_or_default().to_owned());
    assert_eq!(filed_by, Some(format!("alice (uid {uid})")));
}

#[test]
fn a_rollback_returns_only_to_the_build_that_had_authority() {
    let dir = tempfile::tempdir().unwrap();
    let (mut blue, _green, _gateway, control, _client) =
        venue(dir.path(), None, "approval_required = []");
    assert!(matches!(
        ask(control, &ControlRequest::switch("alice")),
        ControlReply::Switched(_)
    ));
    // Blue is replaced by another build in its slot: a copy of the binary with bytes appended
    // (an ELF ignores them), so it runs the same code but hashes differently.
    let other = support::other_build(dir.path(), "another");
    blue.kill();
    let child = Command::new(&other)
        .args(["engine", "--config"])
        .arg(dir.path().join("baton.toml"))
        .args(["--listen", &blue.addr, "--name", "blue"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the other build");
    let _other_blue = EngineProcess {
        child,
        addr: blue.addr.clone(),
    };
    wait_for_standby(control);
    let reply = ask(control, &ControlRequest::rollback("alice"));
    assert!(
        matches!(&reply, ControlReply::Refused { reason } if reason.contains("not the")),
        "{reply:?}"
    );
    assert_eq!(authority(&status(control)), "green");
}

#[test]
fn an_input_in_flight_on_a_newly_halted_symbol_is_withheld_not_answered_from_the_wrong_book() {
    let dir = tempfile::tempdir().unwrap();
    let (blue, mut green, gateway, control, mut client) = faulty_msft_canary(dir.path());
    let mut seller = logged_on(&gateway, 2);
    // Green's reject of M-1 is delivered while blue (which accepts it) is paused.
    signal(blue.child.id(), libc::SIGSTOP);
    order(&mut client, "M-1", "MSFT", b'1', "10");
    assert_eq!(
        text(&report(&mut client), 150),
        "8",
        "green's reject delivered"
    );
    // S-1 is sequenced while green is paused; blue, resumed, fills it against M-1.
    signal(green.child.id(), libc::SIGSTOP);
    let before = status(control).journal_last_seq;
    order(&mut seller, "S-1", "MSFT", b'2', "10");
    let s_1 = status_until(control, "S-1 journaled and written to both engines", |s| {
        s.journal_last_seq > before
            && sent_through(s, "blue") == s.journal_last_seq
            && sent_through(s, "green") == s.journal_last_seq
    })
    .journal_last_seq;
    signal(blue.child.id(), libc::SIGCONT);
    status_until(control, "blue answered S-1", |s| {
        answered_through(s, "blue") >= s_1
    });
    green.kill();
    assert_eq!(canary_ended(control).halted, ["MSFT".to_owned()]);
    // Blue's answers for S-1 come from a book with M-1 in it: withheld, not sent.
    nothing_owed_before_a_probe(
        &mut client,
        "CLIENT1 got a report for an order it was told is rejected",
    );
    audit_event_until(dir.path(), "outputs-withheld");
}

/// A venue where blue (authoritative) accepted M-1 and green, the standby (faulty on MSFT),
/// rejected it: green's MSFT book is not what CLIENT1 was told, so a switch to it is refused,
/// naming both remedies.
fn diverged_standby(dir: &Path) -> (EngineProcess, EngineProcess, Gateway, SocketAddr, Initiator) {
    let venue = venue(dir, Some("MSFT"), "approval_required = []");
    let (blue, green, gateway, control, mut client) = venue;
    order(&mut client, "M-1", "MSFT", b'1', "10");
    assert_eq!(text(&report(&mut client), 150), "0");
    wait_for_standby(control);
    // Green's reject of M-1 has been compared with blue's fill: one divergence, on record.
    let deadline = Instant::now() + STATUS_WAIT;
    while status(control).shadow.divergences != 1 {
        assert!(
            Instant::now() < deadline,
            "the divergence was never noticed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused_switch = ask(control, &ControlRequest::switch("alice"));
    assert!(
        matches!(&refused_switch, ControlReply::Refused { reason }
            if reason.contains("answered differently") && reason.contains("resume")),
        "{refused_switch:?}"
    );
    (blue, green, gateway, control, client)
}

#[test]
fn halts_and_divergence_survive_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (blue, green, mut gateway, _control, client) = diverged_standby(dir.path());
    // The gateway dies; the engines keep their books; the new gateway remembers from the log.
    gateway.kill();
    drop(client);
    let gateway = start_gateway_for_engines(dir.path(), &[&blue.addr, &green.addr]);
    // The new gateway's control endpoint is on a port of its own.
    let control = gateway.control;
    let mut seller = logged_on(&gateway, 2);
    wait_for_engine(&mut seller);
    wait_for_standby(control);
    let s = status(control);
    if authority(&s) == "green" {
        // Green attached first and has authority: its MSFT book is wrong, so MSFT is halted.
        assert_eq!(s.halted, ["MSFT".to_owned()]);
    } else {
        let again = ask(control, &ControlRequest::switch("alice"));
        assert!(
            matches!(&again, ControlReply::Refused { reason } if reason.contains("answered differently")),
            "{again:?}"
        );
    }
}

#[test]
fn a_standby_divergence_can_be_reconciled_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, _green, _gateway, control, _client) = diverged_standby(dir.path());
    let resumed = ask(
        control,
        &ControlRequest::Resume {
            operator: Some("carol".into()),
            symbols: vec!["MSFT".into()],
        },
    );
    assert!(
        matches!(resumed, ControlReply::Resumed { .. }),
        "{resumed:?}"
    );
    assert!(matches!(
        ask(control, &ControlRequest::switch("alice")),
        ControlReply::Switched(_)
    ));
}

/// Sessions streaming in `faulty_canary_under_load...`: CLIENT2..=CLIENT7.
const STREAMING_SESSIONS: std::ops::RangeInclusive<usize> = 2..=7;

/// Orders a streaming session may have sent and not yet seen acknowledged: enough to keep the
/// gateway busy, few enough that every session keeps its share of a loaded machine.
const STREAM_WINDOW: usize = 8;

/// What the streaming sessions send: not yet MSFT (so the canary can start and an order can
/// rest in its book before the faulty engine's first reject), MSFT too, or nothing more.
const PHASE_WITHOUT_MSFT: u8 = 0;
const PHASE_WITH_MSFT: u8 = 1;
const PHASE_STOP: u8 = 2;

/// Sends a market order: it trades against what rests and never rests itself.
fn market_order(client: &mut Initiator, cl_ord_id: &str, symbol: &str, side: u8) {
    client
        .send(b"D", |e| {
            e.str(11, cl_ord_id)
                .str(55, symbol)
                .char(54, side)
                .str(60, "20261123-12:00:00")
                .uint(38, 10)
                .char(40, b'1');
        })
        .expect("send market order");
}

/// One streaming session's record once it stopped.
struct Streamed {
    /// Its view of the session: gap-free sequence numbers, unique ExecIDs, reports per ClOrdID.
    counterparty: support::counterparty::Counterparty,
    /// Every ClOrdID it sent, in order.
    sent: Vec<String>,
    /// Acknowledgements per ClOrdID: ExecutionReports New or Rejected, BusinessMessageRejects.
    acks: HashMap<String, u32>,
    /// The texts of the BusinessMessageRejects it got.
    business_rejects: Vec<String>,
}

/// Streams orders from CLIENTn until `phase` says stop, at most `STREAM_WINDOW` unacknowledged:
/// on AAPL limit buys (resting) and market sells (crossing them), so AAPL's book never holds
/// an offer but the one the test rests; on MSFT (once `phase` allows) and ESZ6 limit orders on
/// both sides of one price range, which rest and cross. Then waits for every acknowledgement.
fn stream(
    mut counterparty: support::counterparty::Counterparty,
    n: usize,
    phase: &std::sync::atomic::AtomicU8,
    acked_total: &std::sync::atomic::AtomicU64,
) -> Streamed {
    use std::sync::atomic::Ordering;
    let mut sent = Vec::new();
    let mut acks: HashMap<String, u32> = HashMap::new();
    let mut business_rejects = Vec::new();
    let mut acked = 0usize;
    let mut stop_deadline = None;
    for i in 0usize.. {
        let now_phase = phase.load(Ordering::SeqCst);
        if now_phase == PHASE_STOP {
            if acked == sent.len() {
                break;
            }
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + STATUS_WAIT);
            assert!(
                Instant::now() < deadline,
                "CLIENT{n}: {} of {} orders acknowledged",
                acked,
                sent.len()
            );
        } else if sent.len() - acked < STREAM_WINDOW {
            let price = format!("{}", 10 + (i * 7 + n) % 20);
            let (symbol, side, market) = match i % 5 {
                0 => ("AAPL", b'1', false),
                1 => ("AAPL", b'2', true),
                2 if now_phase == PHASE_WITH_MSFT => ("MSFT", b'1', false),
                3 if now_phase == PHASE_WITH_MSFT => ("MSFT", b'2', false),
                k => ("ESZ6", if k % 2 == 0 { b'1' } else { b'2' }, false),
            };
            // The symbol is in the ClOrdID, so the checks can tell which book answered.
            let id = format!("C{n}-{i}-{symbol}");
            if market {
                market_order(&mut counterparty.client, &id, symbol, side);
            } else {
                order(&mut counterparty.client, &id, symbol, side, &price);
            }
            sent.push(id);
        }
        let window_full = sent.len() - acked >= STREAM_WINDOW || now_phase == PHASE_STOP;
        let wait = Duration::from_millis(if window_full { 100 } else { 1 });
        let message = match counterparty.client.recv(wait) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(error) => panic!("CLIENT{n}'s session failed mid-stream: {error}"),
        };
        let acknowledged = match message.msg_type() {
            b"8" if matches!(text(&message, 150).as_str(), "0" | "8") => Some(text(&message, 11)),
            b"j" => {
                business_rejects.push(text(&message, 58));
                Some(text(&message, 379))
            }
            _ => None,
        };
        if let Some(id) = acknowledged {
            *acks.entry(id).or_default() += 1;
            acked += 1;
            acked_total.fetch_add(1, Ordering::SeqCst);
        }
        counterparty.process(message);
    }
    Streamed {
        counterparty,
        sent,
        acks,
        business_rejects,
    }
}

/// Waits until the streaming sessions together have `total` acknowledgements.
fn acked_at_least(acked_total: &std::sync::atomic::AtomicU64, total: u64, what: &str) {
    let deadline = Instant::now() + STATUS_WAIT;
    while acked_total.load(std::sync::atomic::Ordering::SeqCst) < total {
        assert!(
            Instant::now() < deadline,
            "{what}: never {total} acknowledged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn under_load_a_faulty_canary_rolls_back_with_its_state_and_every_order_is_acknowledged_once() {
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    // The latency gate is widened so that only the faulty engine's answers trip a gate: a
    // loaded machine slowing the canary must not roll it back before the test rests S-REST.
    let config = write_venue_config(
        dir.path(),
        "",
        "approval_required = []\n[control.gates]\nlatency_p99_ratio_max = 1000000.0\n\
         latency_slack_us = 600000000\n",
        *STREAMING_SESSIONS.end(),
    );
    let (blue, green, mut gateway, mut client) =
        start_blue_then_green(dir.path(), &config, Some("MSFT"), "error");
    let control = gateway.control;
    wait_for_standby(control);

    let phase = std::sync::Arc::new(AtomicU8::new(PHASE_WITHOUT_MSFT));
    let acked_total = std::sync::Arc::new(AtomicU64::new(0));
    let streams: Vec<_> = STREAMING_SESSIONS
        .map(|n| {
            let counterparty = support::counterparty::Counterparty::new(logged_on(&gateway, n));
            let (phase, acked_total) = (phase.clone(), acked_total.clone());
            std::thread::spawn(move || stream(counterparty, n, &phase, &acked_total))
        })
        .collect();
    acked_at_least(&acked_total, 200, "streaming before the canary");

    // The canary starts mid-stream, on AAPL and on MSFT (which green rejects).
    let started = ok(ctl(control, "alice", &["canary", "--symbols", "AAPL,MSFT"]));
    assert!(started.contains("canary"), "{started}");
    // An offer far above every bid rests in green's AAPL book while the canary runs.
    order(&mut client, "S-REST", "AAPL", b'2', "500");
    let rest = client
        .recv_until(WAIT, "S-REST's acknowledgement", |m| {
            m.msg_type() == b"8" && text(m, 11) == "S-REST"
        })
        .expect("S-REST acknowledged");
    assert_eq!(text(&rest, 150), "0", "{rest:?}");
    assert!(status(control).canary.is_some(), "the canary ended early");

    // MSFT joins the stream: green's rejects trip a gate and the canary rolls back mid-stream.
    phase.store(PHASE_WITH_MSFT, Ordering::SeqCst);
    let rolled_back = canary_ended(control);
    let acked_at_rollback = acked_total.load(Ordering::SeqCst);
    let last = rolled_back.last_switch.clone().expect("the rollback");
    assert!(last.rollback, "{last:?}");
    assert_eq!((last.from.as_str(), last.to.as_str()), ("green", "blue"));
    let transfer = transfer_of(&rolled_back);
    assert_eq!(transfer.refused, None, "{transfer:?}");
    assert_eq!(transfer.symbols, ["AAPL".to_owned(), "MSFT".to_owned()]);
    assert!(transfer.orders_moved >= 1, "S-REST rests: {transfer:?}");
    assert!(rolled_back.halted.is_empty(), "{:?}", rolled_back.halted);
    assert!(
        audit_events(dir.path()).contains(&"gate-breached".to_owned()),
        "the rollback came from a gate"
    );

    // The stream goes on, on blue, then stops; each session waits for its last answers.
    acked_at_least(
        &acked_total,
        acked_at_rollback + 300,
        "streaming after the rollback",
    );
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let streamed: Vec<Streamed> = streams
        .into_iter()
        .map(|s| s.join().expect("a streaming session failed"))
        .collect();

    let mut msft_rejected = 0;
    let mut msft_accepted = 0;
    for (n, s) in STREAMING_SESSIONS.zip(&streamed) {
        for id in &s.sent {
            assert_eq!(
                s.acks.get(id).copied().unwrap_or(0),
                1,
                "CLIENT{n}'s {id}: reports {:?}",
                s.counterparty.exec_types(id)
            );
        }
        assert_eq!(
            s.acks.len(),
            s.sent.len(),
            "CLIENT{n}: acks for unsent orders"
        );
        assert!(
            s.business_rejects.is_empty(),
            "CLIENT{n}: {:?}",
            s.business_rejects
        );
        assert!(s.counterparty.gap_free(), "CLIENT{n} saw a sequence gap");
        assert_eq!(s.counterparty.client.gaps(), 0, "CLIENT{n}");
        for (id, types) in &s.counterparty.reports {
            match (id.ends_with("-MSFT"), types.first().map(String::as_str)) {
                // Green's reject, delivered while it held MSFT: nothing more for that order.
                (true, Some("8")) => {
                    msft_rejected += 1;
                    assert_eq!(types.len(), 1, "{id}: {types:?}");
                }
                (true, Some("0")) => msft_accepted += 1,
                (_, Some("0")) => {}
                _ => panic!("CLIENT{n}'s {id}: {types:?}"),
            }
        }
    }
    assert!(
        msft_rejected > 0,
        "the faulty canary answered no MSFT order"
    );
    assert!(
        msft_accepted > 0,
        "no MSFT order was accepted after the rollback"
    );

    // S-REST, rested in the canary's book at the barrier, is live under blue: a bid crosses it.
    order(&mut client, "B-REST", "AAPL", b'1', "500");
    let mut filled = Vec::new();
    while filled.len() < 2 {
        let fill = client
            .recv_until(WAIT, "the fills of S-REST and B-REST", |m| {
                m.msg_type() == b"8" && text(m, 150) == "F"
            })
            .expect("S-REST and B-REST fill");
        filled.push(text(&fill, 11));
    }
    filled.sort();
    assert_eq!(filled, ["B-REST", "S-REST"]);
    assert_eq!(client.gaps(), 0);
    assert!(status(control).halted.is_empty());
    assert!(!audit_events(dir.path()).contains(&"halted".to_owned()));

    // Blue, which took green's state at the barrier, ends where a replay of the journal does.
    status_until(control, "every input delivered", |s| {
        s.delivered_through == s.journal_last_seq
            && answered_through(s, "blue") == s.journal_last_seq
    });
    gateway.kill();
    assert_eq!(engine_digest(&blue.addr), replayed_digest(dir.path()));
    drop(green);
}
