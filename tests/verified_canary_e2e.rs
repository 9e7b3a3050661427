//! Verified canary delivery and intentional changes with real processes.
//!
//! In verified mode (`[control] canary_delivery = "verified"`) a canary engine's answer reaches
//! the counterparty only once the baseline engine's answer for the same input matches it: a
//! faulty build never shows a counterparty a wrong answer, is rolled back at its first
//! mismatch, and its symbol keeps trading without a halt. A change that declares the divergence
//! it expects is not rolled back for that divergence, and still is for a worse reject rate.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use baton::bench::initiator::Initiator;
use baton::control::api::{ControlReply, ControlRequest, EngineRole, Status, SwitchScope};
use baton::engine::{Digest, Engine, Input, MatchingEngine, Output, SnapshotError};
use baton::fix::codec::{Encoder, Message};
use support::control::{
    STATUS_WAIT, ask, audit_events, ctl, ok, order, refused, shared_account_operators, status,
};
use support::venue::{start_blue_then_green, write_venue_config};
use support::{EngineProcess, Gateway, WAIT, text};

/// Orders sent back to back while the faulty canary runs: enough that many are in flight when
/// the first mismatch trips the gate, so the hold, the rollback's barrier and the queue behind
/// it are all exercised.
const ORDERS_UNDER_LOAD: usize = 300;

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

fn canary(symbols: &[&str]) -> ControlRequest {
    ControlRequest::Canary {
        operator: Some("alice".into()),
        change: None,
        percent: None,
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
    }
}

/// Every execution report the client receives until each of `ids` has had its first answer
/// (New or Rejected) and no report arrives for a while: ExecID → the message. Fails on an
/// ExecID received twice or an order acknowledged twice.
fn collect_reports(client: &mut Initiator, ids: &[String]) -> BTreeMap<String, Message> {
    let mut reports = BTreeMap::new();
    let mut acknowledged: HashMap<String, u32> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let all_answered = ids.iter().all(|id| acknowledged.contains_key(id));
        let wait = if all_answered {
            // Fills owed to earlier orders may still be on their way.
            Duration::from_millis(500)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let message = match client.recv(wait) {
            Ok(Some(message)) => message,
            Ok(None) if all_answered => return reports,
            other => panic!("the session ended or went quiet: {other:?}"),
        };
        if message.msg_type() != b"8" {
            continue;
        }
        let exec_type = text(&message, 150);
        if exec_type == "0" || exec_type == "8" {
            *acknowledged.entry(text(&message, 11)).or_default() += 1;
        }
        let exec_id = text(&message, 17);
        assert!(
            reports.insert(exec_id.clone(), message).is_none(),
            "ExecID {exec_id} delivered twice"
        );
    }
}

/// A matching engine that keeps every output it produces: the baseline's answers, rebuilt from
/// the journal.
struct Recording {
    engine: MatchingEngine,
    outputs: BTreeMap<(u64, u32), Output>,
}

impl Engine for Recording {
    fn apply(&mut self, input: &Input, outputs: &mut Vec<Output>) {
        let first = outputs.len();
        self.engine.apply(input, outputs);
        for output in &outputs[first..] {
            self.outputs
                .insert((output.input_seq, output.index), output.clone());
        }
    }
    fn last_input_seq(&self) -> u64 {
        self.engine.last_input_seq()
    }
    fn snapshot(&self, out: &mut Vec<u8>) {
        self.engine.snapshot(out)
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.engine.restore(snapshot)
    }
    fn digest(&self) -> Digest {
        self.engine.digest()
    }
    fn build_version(&self) -> &str {
        self.engine.build_version()
    }
}

/// What a correct engine answers for every journaled input, by (input seq, index): the journal
/// replayed through a fresh engine with the venue's instruments.
fn baseline_answers(dir: &Path) -> BTreeMap<(u64, u32), Output> {
    let config = baton::config::Config::load(Some(&dir.join("baton.toml"))).expect("config");
    let mut recording = Recording {
        engine: MatchingEngine::new(&config.engine).expect("engine"),
        outputs: BTreeMap::new(),
    };
    baton::gateway::core::replay_journal(&dir.join("journal"), &mut recording).expect("replay");
    recording.outputs
}

/// Fields of an execution report that say what happened to the order.
const COMPARED_TAGS: [u32; 10] = [11, 14, 31, 32, 37, 39, 54, 55, 150, 151];

/// Checks each delivered report against the baseline's answer for its ExecID, field by field.
fn assert_every_report_is_the_baselines(
    delivered: &BTreeMap<String, Message>,
    baseline: &BTreeMap<(u64, u32), Output>,
) {
    for (exec_id, message) in delivered {
        let key = baton::gateway::translate::exec_id_key(exec_id.as_bytes())
            .unwrap_or_else(|| panic!("ExecID {exec_id} is not (input seq, index)"));
        let want = baseline
            .get(&key)
            .unwrap_or_else(|| panic!("ExecID {exec_id}: the baseline produced no such output"));
        let mut encoder = Encoder::new("FIX.4.4");
        encoder.start(baton::gateway::translate::output_msg_type(want));
        baton::gateway::translate::write_output(&mut encoder, want);
        let want = Message::parse(encoder.finish()).expect("the baseline's report parses");
        for tag in COMPARED_TAGS {
            assert_eq!(
                text(message, tag),
                text(&want, tag),
                "ExecID {exec_id}: tag {tag} differs from the baseline's answer"
            );
        }
    }
}

#[test]
fn a_faulty_verified_canary_never_delivers_a_divergent_answer_and_its_symbol_keeps_trading() {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, _green, gateway, control, mut client) = venue(
        dir.path(),
        Some("MSFT"),
        "approval_required = []\ncanary_delivery = \"verified\"",
    );
    let ControlReply::Switched(started) = ask(control, &canary(&["MSFT"])) else {
        panic!("canary refused");
    };
    assert_eq!(
        started.scope,
        SwitchScope::CanaryStarted {
            symbols: vec!["MSFT".into()]
        }
    );
    assert_eq!(
        status(control).canary.map(|c| c.delivery),
        Some("verified".to_owned())
    );

    // Orders back to back on both symbols, buying and selling across each other so that some
    // fill: the first MSFT one is answered wrongly by green.
    let mut ids = Vec::new();
    for i in 0..ORDERS_UNDER_LOAD {
        let symbol = if i % 2 == 0 { "MSFT" } else { "AAPL" };
        let side = if i % 4 < 2 { b'1' } else { b'2' };
        let price = ["10", "11", "12"][i % 3];
        let id = format!("L-{i}");
        order(&mut client, &id, symbol, side, price);
        ids.push(id);
    }
    let mut delivered = collect_reports(&mut client, &ids);

    // Rolled back at the first mismatch, by the verification gate, and nothing halted.
    let rolled_back = status_until(control, "the rollback", |s| s.canary.is_none());
    let last = rolled_back.last_switch.clone().expect("the rollback");
    assert_eq!((last.from.as_str(), last.to.as_str()), ("green", "blue"));
    // No state moves back: the baseline's books are the ones counterparties were told about.
    match &last.scope {
        SwitchScope::CanaryEnded { symbols, transfer } => {
            assert_eq!(symbols, &vec!["MSFT".to_owned()]);
            let refused = transfer.as_ref().and_then(|t| t.refused.clone());
            assert!(
                refused.as_deref().is_some_and(|r| r.contains("verified")),
                "{transfer:?}"
            );
        }
        other => panic!("the rollback's scope is {other:?}"),
    }
    assert!(rolled_back.halted.is_empty(), "{:?}", rolled_back.halted);
    let events = audit_events(dir.path());
    assert!(events.contains(&"gate-breached".to_owned()), "{events:?}");
    assert!(
        events.contains(&"action-completed:auto-rollback".to_owned()),
        "{events:?}"
    );
    assert!(!events.contains(&"halted".to_owned()), "{events:?}");
    let log = std::fs::read_to_string(dir.path().join("journal").join("audit.log")).unwrap();
    assert!(log.contains("\"gate\":\"verification\""), "{log}");

    // MSFT keeps trading, answered by blue.
    let after: Vec<String> = (0..5).map(|i| format!("AFTER-{i}")).collect();
    for id in &after {
        order(&mut client, id, "MSFT", b'1', "5");
    }
    let later = collect_reports(&mut client, &after);
    for message in later.values() {
        assert_eq!(text(message, 150), "0", "{message:?}");
    }
    delivered.extend(later);
    assert_eq!(client.gaps(), 0);

    // Every report any counterparty got is the baseline's answer for its ExecID.
    drop(gateway);
    let baseline = baseline_answers(dir.path());
    assert_every_report_is_the_baselines(&delivered, &baseline);
    // And every order was acknowledged: the journal's first answers all reached the session.
    let acknowledgements = delivered
        .values()
        .filter(|m| matches!(text(m, 150).as_str(), "0" | "8"))
        .count();
    assert_eq!(acknowledgements, ORDERS_UNDER_LOAD + after.len());
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
