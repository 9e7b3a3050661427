//! Tests of the core on virtual time, and the `tidy` check that keeps it sans-IO.

/// Every file of the core, by name, as compiled: a file added to the core without being listed
/// here is caught by the count in the test below.
const CORE_FILES: [(&str, &str); 10] = [
    ("mod.rs", include_str!("mod.rs")),
    ("api.rs", include_str!("api.rs")),
    ("sequencer.rs", include_str!("sequencer.rs")),
    ("outbox.rs", include_str!("outbox.rs")),
    ("shadow.rs", include_str!("shadow.rs")),
    ("router.rs", include_str!("router.rs")),
    ("switch.rs", include_str!("switch.rs")),
    ("status.rs", include_str!("status.rs")),
    ("transfer.rs", include_str!("transfer.rs")),
    ("standby.rs", include_str!("standby.rs")),
];

/// What the core must never do (invariant 10), as it would be spelled: read a clock, spawn,
/// sleep or await. Assembled so this file does not trip its own check.
fn forbidden() -> Vec<String> {
    [
        ["Instant", "::now"],
        ["Timestamp", "::now"],
        ["SystemTime", ""],
        ["tokio", "::"],
        ["spawn", "("],
        [".aw", "ait"],
        ["async", " fn"],
        ["thread::", "sleep"],
        ["crate::", "control"],
    ]
    .iter()
    .map(|[a, b]| format!("{a}{b}"))
    .collect()
}

#[test]
fn tidy_the_core_reads_no_clock_spawns_nothing_awaits_nothing_and_stays_small() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway/core");
    let on_disk = std::fs::read_dir(&dir)
        .expect("the core's directory")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "rs"))
        })
        .count();
    // This file is the one not checked.
    assert_eq!(
        on_disk,
        CORE_FILES.len() + 1,
        "list every core file in CORE_FILES"
    );
    for (name, text) in CORE_FILES {
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in forbidden() {
                assert!(
                    !code.contains(&word),
                    "{name}:{}: `{word}` in the sans-IO core: take `now` from the caller, or ask the driver through a poll_* output",
                    number + 1
                );
            }
        }
        let lines = text.lines().count();
        assert!(
            lines <= crate::constants::CORE_FILE_LINES_MAX,
            "{name} has {lines} lines; split it by responsibility"
        );
    }
}

// ----- the core on virtual time -------------------------------------------------------------

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::{
    CanaryDelivery, CommandId, Core, CoreCommand, CoreConfig, CoreEvent, CoreRecord, CoreReply,
    CoreRequest, ExpectedDivergence, GateConfig, LinkCommand, LinkTransmit,
};
use crate::engine::{
    ClOrdId, Engine, EngineConfig, Input, InstrumentConfig, MatchingEngine, NewOrder, OrdType,
    Output, Price, Qty, Request, Side, Symbol, TimeInForce,
};
use crate::fix::codec::{Encoder, Message};
use crate::fix::dictionary::Dictionary;
use crate::fix::session::{Session, SessionConfig};
use crate::fix::store::{MemoryStore, SessionStore};
use crate::gateway::acceptor::{Inbound, Sessions};
use crate::gateway::input_journal::InputJournal as _;
use crate::gateway::memory_journal::CrashFate;
use crate::gateway::memory_journal::MemoryJournal;
use crate::gateway::outbox_mark::MemoryCursor;
use crate::gateway::status::{EngineRole, SwitchReport, SwitchScope};
use crate::link::{self, Frame, Outputs};
use crate::time::Timestamp;

const AAA: &str = "AAA";
const BBB: &str = "BBB";
/// Silence after which the authoritative engine is failed over in these tests.
const FAILOVER_MS: u64 = 1_000;
/// Steps a test may take to settle before it is a livelock, not a slow machine.
const SETTLE_STEPS_MAX: usize = 10_000;

fn symbol(name: &str) -> Symbol {
    Symbol::try_from_bytes(name.as_bytes()).expect("a symbol")
}

fn engine_config() -> EngineConfig {
    let instrument = |name: &str| InstrumentConfig {
        symbol: name.into(),
        tick_size: Price::parse_decimal(b"0.01").expect("a tick"),
        lot_size: 1,
    };
    EngineConfig {
        instruments: vec![instrument(AAA), instrument(BBB)],
        orders_max: 1_024,
        levels_max: 64,
        cl_ord_ids_max: 1_024,
    }
}

/// An engine behind an in-memory link: it answers the inputs it was sent when the test says.
struct FakeEngine {
    name: &'static str,
    /// The link protocol version its Hello names.
    protocol_version: u16,
    engine: Box<dyn Engine + Send>,
    /// Whether the core holds a link to it.
    linked: bool,
    /// Whether a connection attempt reaches it.
    reachable: bool,
    /// Hung: it sends nothing, not even heartbeats.
    silent: bool,
    /// Snapshot requests and restores sent on the link, not yet served.
    requests: VecDeque<LinkCommand>,
    /// Inputs sent on the link, not yet answered.
    inbox: VecDeque<Input>,
    /// What it answered per input, for a resent input.
    answered: BTreeMap<u64, Vec<Output>>,
    /// The SHA-256 of the executable its Hello names (empty: it does not say).
    executable_sha256: &'static str,
}

/// The core with two engines ("blue" in slot 0, "green" in slot 1), one session per test
/// counterparty, all on virtual time.
struct Harness {
    core: Core<MemoryStore, MemoryJournal>,
    sessions: Arc<Sessions<MemoryStore>>,
    engines: Vec<FakeEngine>,
    now: Timestamp,
    fix_seq: u64,
    next_command: u64,
    replies: Vec<(CommandId, CoreReply)>,
    events: Vec<CoreEvent>,
    /// What the core journals and where its cursor is, kept to restart it from.
    journal: MemoryJournal,
    cursor: MemoryCursor,
    config: CoreConfig,
    /// What the driver does with the core's deliveries (see [`Deliveries`]).
    deliveries: Deliveries,
    _dir: tempfile::TempDir,
}

/// What the harness, as the driver, does with each delivery the core queues.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Deliveries {
    /// Writes it into its sessions and hands it back, as the driver does.
    Acknowledged,
    /// Writes it into its sessions and never hands it back: a kill between the two.
    Unacknowledged,
    /// Leaves it in the core's queue: a kill before the driver got to it.
    Queued,
}

impl Harness {
    fn new(green: Box<dyn Engine + Send>) -> Harness {
        Harness::build(green, link::LINK_PROTOCOL_VERSION, "", |_| {})
    }

    /// Two copies of the same engine whose Hellos name the same executable, `executable_sha256`.
    fn of_build(executable_sha256: &'static str) -> Harness {
        let green = MatchingEngine::new(&engine_config()).expect("an engine");
        Harness::build(
            Box::new(green),
            link::LINK_PROTOCOL_VERSION,
            executable_sha256,
            |_| {},
        )
    }

    /// As [`Harness::new`], with the core's configuration adjusted by `adjust` first.
    fn with_config(green: Box<dyn Engine + Send>, adjust: impl FnOnce(&mut CoreConfig)) -> Harness {
        Harness::build(green, link::LINK_PROTOCOL_VERSION, "", adjust)
    }

    /// Blue speaking link protocol `blue_protocol`, green the current one.
    fn speaking(green: Box<dyn Engine + Send>, blue_protocol: u16) -> Harness {
        Harness::build(green, blue_protocol, "", |_| {})
    }

    fn build(
        green: Box<dyn Engine + Send>,
        blue_protocol: u16,
        executable_sha256: &'static str,
        adjust: impl FnOnce(&mut CoreConfig),
    ) -> Harness {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sessions = Sessions::new(vec![Session::new(
            SessionConfig::new("BATON", "CLIENT1"),
            MemoryStore::new(),
            Dictionary::venue(),
        )]);
        let addr = |name: &str| {
            format!("unix:///{name}.sock")
                .parse::<crate::link::LinkAddr>()
                .expect("an address")
        };
        let config = CoreConfig {
            engines: vec![addr("blue"), addr("green")],
            journal_dir: dir.path().to_path_buf(),
            journal: Default::default(),
            failover_timeout: Duration::from_millis(FAILOVER_MS),
            symbols: vec![symbol(AAA), symbol(BBB)],
            gates: GateConfig::default(),
            link_secret: None,
            link_spin: std::time::Duration::ZERO,
            canary_delivery: Default::default(),
            standby_batch: Duration::ZERO,
        };
        let mut config = config;
        adjust(&mut config);
        let journal = MemoryJournal::new();
        let cursor = MemoryCursor::new();
        let now = Timestamp::from_secs(1_800_000_000);
        let core = Core::with_journal(
            sessions.clone(),
            config.clone(),
            journal.clone(),
            Box::new(cursor.clone()),
            now,
        );
        let fake = |name, engine, protocol_version| FakeEngine {
            name,
            protocol_version,
            engine,
            linked: false,
            reachable: true,
            silent: false,
            requests: VecDeque::new(),
            inbox: VecDeque::new(),
            answered: BTreeMap::new(),
            executable_sha256,
        };
        let blue: Box<dyn Engine + Send> =
            Box::new(MatchingEngine::new(&engine_config()).expect("an engine"));
        let mut harness = Harness {
            core,
            sessions,
            engines: vec![
                fake("blue", blue, blue_protocol),
                fake("green", green, link::LINK_PROTOCOL_VERSION),
            ],
            now,
            fix_seq: 0,
            next_command: 0,
            replies: Vec::new(),
            events: Vec::new(),
            journal,
            cursor,
            config,
            deliveries: Deliveries::Acknowledged,
            _dir: dir,
        };
        // Blue is reachable first, so it takes authority; green joins as the standby.
        harness.engines[1].reachable = false;
        harness.tick();
        harness.engines[1].reachable = true;
        harness.advance(crate::constants::ENGINE_RECONNECT_MS);
        assert!(
            harness.engines.iter().all(|e| e.linked),
            "both engines attach"
        );
        harness
    }

    /// The gateway dies and a new core starts from the journal, the sessions' stores and the
    /// cursor (without its last write when `lose_cursor_write`); the engines keep running and
    /// reconnect.
    fn restart(&mut self, lose_cursor_write: bool) {
        self.deliveries = Deliveries::Acknowledged;
        self.journal = self.journal.crash(CrashFate::KeepAll);
        self.cursor = self.cursor.crash(lose_cursor_write);
        for engine in &mut self.engines {
            engine.linked = false;
            engine.inbox.clear();
        }
        self.core = Core::with_journal(
            self.sessions.clone(),
            self.config.clone(),
            self.journal.clone(),
            Box::new(self.cursor.clone()),
            self.now,
        );
        self.tick();
        self.advance(crate::constants::ENGINE_RECONNECT_MS);
    }

    /// Two copies of the same engine.
    fn blue_green() -> Harness {
        Harness::new(Box::new(
            MatchingEngine::new(&engine_config()).expect("an engine"),
        ))
    }

    /// Runs the core's timer at the current time and carries out what it asks; every engine
    /// that is not hung says it is alive, as engines do when idle.
    fn tick(&mut self) {
        let alive = (self.engines.iter())
            .map(|e| (e.linked && !e.silent).then(|| e.engine.last_input_seq()));
        crate::gateway::sim::engines_alive(&mut self.core, self.now, alive);
        self.core.handle_timeout(self.now);
        self.pump();
    }

    /// Moves virtual time on by `ms`, firing every timer on the way.
    fn advance(&mut self, ms: u64) {
        let until = self.now.plus_millis(ms);
        while self.core.next_timeout() <= until {
            self.now = self.core.next_timeout().max(self.now);
            self.tick();
        }
        self.now = until;
        self.tick();
    }

    /// Carries out everything the core asked, the way the driver would.
    fn pump(&mut self) {
        for _ in 0..SETTLE_STEPS_MAX {
            self.core.handle_catch_up(self.now);
            if self.deliveries != Deliveries::Queued {
                while let Some(delivery) = self.core.poll_delivery() {
                    delivery.apply(self.now, &self.sessions);
                    if self.deliveries == Deliveries::Acknowledged {
                        self.core.handle_delivered(self.now, delivery);
                    }
                }
            }
            while let Some(event) = self.core.poll_event() {
                self.events.push(event);
            }
            while let Some(reply) = self.core.poll_reply() {
                self.replies.push(reply);
            }
            let Some(LinkTransmit { slot, command }) = self.core.poll_link() else {
                return;
            };
            let engine = &mut self.engines[slot];
            match command {
                LinkCommand::Connect if engine.reachable => {
                    let hello = link::Hello {
                        protocol_version: engine.protocol_version,
                        engine_name: engine.name.into(),
                        build_version: engine.engine.build_version().into(),
                        last_input_seq: engine.engine.last_input_seq(),
                        snapshot_formats: vec![],
                        executable_sha256: engine.executable_sha256.into(),
                        auth_nonce: Vec::new(),
                    };
                    engine.linked = self.core.handle_attached(self.now, slot, &hello);
                }
                LinkCommand::Connect => {
                    self.core
                        .handle_connect_failed(self.now, slot, "connection refused")
                }
                LinkCommand::Inputs(inputs) if engine.linked => engine.inbox.extend(inputs),
                request @ (LinkCommand::RequestSnapshot | LinkCommand::Restore(_))
                    if engine.linked =>
                {
                    engine.requests.push_back(request)
                }
                LinkCommand::Drop => {
                    engine.linked = false;
                    engine.inbox.clear();
                    engine.requests.clear();
                }
                _ => {}
            }
        }
        panic!("the core kept asking for more after {SETTLE_STEPS_MAX} steps");
    }

    /// Engine `slot` answers up to `count` of the inputs it was sent, in order.
    fn answer(&mut self, slot: usize, count: usize) {
        for _ in 0..count {
            let Some(input) = self.engines[slot].inbox.pop_front() else {
                break;
            };
            let engine = &mut self.engines[slot];
            let frame = if input.seq == engine.engine.last_input_seq() + 1 {
                let mut outputs = Vec::new();
                engine.engine.apply(&input, &mut outputs);
                engine.answered.insert(input.seq, outputs.clone());
                Frame::Outputs(Outputs {
                    input_seq: input.seq,
                    outputs,
                })
            } else {
                let outputs = engine.answered.get(&input.seq).cloned().expect("retained");
                Frame::Replayed(Outputs {
                    input_seq: input.seq,
                    outputs,
                })
            };
            self.core.handle_frame(self.now, slot, frame);
            self.pump();
        }
    }

    /// Engine `slot` serves the snapshot requests and restores it was sent.
    fn serve_requests(&mut self, slot: usize) {
        while let Some(request) = self.engines[slot].requests.pop_front() {
            let engine = &mut self.engines[slot];
            let frame = match request {
                LinkCommand::RequestSnapshot => {
                    let mut bytes = Vec::new();
                    engine.engine.snapshot(&mut bytes);
                    Frame::Snapshot(link::Snapshot {
                        at_input_seq: engine.engine.last_input_seq(),
                        format_version: crate::engine::SNAPSHOT_FORMAT_DEFAULT,
                        digest: engine.engine.digest(),
                        bytes,
                    })
                }
                LinkCommand::Restore(bytes) => {
                    engine.engine.restore(&bytes).expect("a snapshot restores");
                    engine.answered.clear();
                    Frame::Restored(link::Restored {
                        at_input_seq: engine.engine.last_input_seq(),
                        digest: engine.engine.digest(),
                    })
                }
                _ => continue,
            };
            self.core.handle_frame(self.now, slot, frame);
            self.pump();
        }
    }

    /// Every linked engine answers everything, until nothing is left to answer.
    fn settle(&mut self) {
        for _ in 0..SETTLE_STEPS_MAX {
            self.pump();
            let busy: Vec<usize> = (0..self.engines.len())
                .filter(|&slot| {
                    let engine = &self.engines[slot];
                    engine.linked && (!engine.inbox.is_empty() || !engine.requests.is_empty())
                })
                .collect();
            if busy.is_empty() {
                return;
            }
            for slot in busy {
                self.serve_requests(slot);
                self.answer(slot, usize::MAX);
            }
        }
        panic!("the engines never settled");
    }

    /// CLIENT1 sends a buy limit order on `symbol`; it is sequenced if the core accepts.
    fn order(&mut self, symbol_name: &str) {
        self.fix_seq += 1;
        let id = format!("O{}", self.fix_seq);
        let mut encoder = Encoder::new("FIX.4.4");
        encoder
            .start(b"D")
            .uint(crate::fix::tags::MSG_SEQ_NUM, self.fix_seq)
            .str(11, &id)
            .str(55, symbol_name);
        let message = Message::parse(encoder.finish()).expect("a message");
        let request = Request::New(NewOrder {
            cl_ord_id: ClOrdId::try_from_bytes(id.as_bytes()).expect("an id"),
            symbol: symbol(symbol_name),
            side: Side::Buy,
            ord_type: OrdType::Limit,
            price: Some(Price::parse_decimal(b"10.00").expect("a price")),
            qty: Qty(100),
            time_in_force: TimeInForce::Day,
            parties: crate::engine::Parties::NONE,
        });
        let mut batch = vec![Inbound {
            session: 0,
            request,
            message,
            sequence_epoch: self
                .sessions
                .with(0, |s| s.store().sequence_epoch())
                .expect("the session"),
        }];
        self.core.handle_requests(self.now, &mut batch);
        self.pump();
    }

    fn command(&mut self, request: CoreRequest) -> CommandId {
        self.command_with(request, false, ExpectedDivergence::default())
    }

    /// A command as the control plane gives it: a gateway's own rollback (`canary_only`), or a
    /// canary under a change that declares `expected` divergence.
    fn command_with(
        &mut self,
        request: CoreRequest,
        canary_only: bool,
        expected: ExpectedDivergence,
    ) -> CommandId {
        self.next_command += 1;
        let id = CommandId(self.next_command);
        let command = CoreCommand {
            request,
            expect_sha256: None,
            canary_only,
            expected_divergence: expected,
        };
        self.core.handle_command(self.now, id, command);
        self.pump();
        id
    }

    fn reply(&self, id: CommandId) -> Option<&CoreReply> {
        self.replies
            .iter()
            .find(|(answered, _)| *answered == id)
            .map(|(_, reply)| reply)
    }

    fn status(&mut self) -> crate::gateway::status::CoreStatus {
        let id = self.command(CoreRequest::Status);
        match self.reply(id) {
            Some(CoreReply::Status(status)) => (**status).clone(),
            other => panic!("status answered {other:?}"),
        }
    }

    /// Inputs whose outputs were delivered from each engine: (blue, green).
    fn delivered_from(&mut self) -> (u64, u64) {
        let status = self.status();
        (
            status.engines[0].delivered_inputs,
            status.engines[1].delivered_inputs,
        )
    }

    /// Messages CLIENT1's session holds for the counterparty: every delivered output once.
    fn messages_out(&self) -> u64 {
        self.sessions.status()[0].seq_num_next_out - 1
    }
}

#[test]
fn a_switch_holds_new_requests_until_both_engines_answered_through_its_barrier() {
    let mut h = Harness::blue_green();
    for _ in 0..3 {
        h.order(AAA);
    }
    h.settle();
    assert_eq!(h.delivered_from(), (3, 0));
    h.order(AAA);
    // Blue answered the fourth input, green has not: the barrier is 4 and waits for green.
    h.answer(0, 1);
    let switch = h.command(CoreRequest::Switch);
    assert_eq!(h.status().switch_waiting_at, Some(4));
    assert!(!h.core.accepting(), "requests wait while the barrier does");
    assert_eq!(h.reply(switch), None);
    h.answer(1, 1);
    match h.reply(switch) {
        Some(CoreReply::Switched(report)) => {
            assert_eq!(
                (report.from.as_str(), report.to.as_str()),
                ("blue", "green")
            );
            assert_eq!(report.barrier_seq, 4);
        }
        other => panic!("the switch answered {other:?}"),
    }
    assert!(h.core.accepting());
    h.order(AAA);
    h.order(BBB);
    h.settle();
    // Outputs up to the barrier came from blue, after it from green; each once.
    assert_eq!(h.delivered_from(), (4, 2));
    assert_eq!(h.messages_out(), 6);
    let status = h.status();
    assert_eq!(status.engines[1].role, EngineRole::Authoritative);
    assert_eq!(status.engines[0].role, EngineRole::Standby);
}

#[test]
fn a_lost_authoritative_engine_fails_over_and_the_standby_delivers_what_was_not_delivered() {
    let mut h = Harness::blue_green();
    for _ in 0..4 {
        h.order(AAA);
    }
    // Green (standby) answered everything, blue only the first two.
    h.answer(1, 4);
    h.answer(0, 2);
    assert_eq!(h.messages_out(), 2);
    h.core.handle_lost(h.now, 0, "connection reset");
    h.pump();
    h.settle();
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, CoreEvent::Failover(r) if r.from == "blue" && r.to == "green" && r.barrier_seq == 2)),
        "a failover at the last delivered input: {:?}",
        h.events
    );
    // The two undelivered inputs came from green's shadow answers; nothing twice.
    assert_eq!(h.delivered_from(), (2, 2));
    assert_eq!(h.messages_out(), 4);
    h.order(BBB);
    h.settle();
    assert_eq!(h.messages_out(), 5);
}

#[test]
fn a_silent_authoritative_engine_is_failed_over_after_the_timeout_on_virtual_time() {
    let mut h = Harness::blue_green();
    h.order(AAA);
    h.answer(1, 1);
    h.engines[0].silent = true;
    // Blue says nothing; just before the timeout it still has authority.
    h.advance(FAILOVER_MS - crate::constants::LINK_POLL_INTERVAL_MS);
    assert_eq!(h.status().engines[0].role, EngineRole::Authoritative);
    h.advance(2 * crate::constants::LINK_POLL_INTERVAL_MS);
    assert!(!h.engines[0].linked, "the driver was told to drop blue");
    assert_eq!(h.status().engines[1].role, EngineRole::Authoritative);
    assert_eq!(
        h.messages_out(),
        1,
        "green delivered the unanswered input once"
    );
}

#[test]
fn an_answer_that_arrives_twice_is_delivered_once() {
    let mut h = Harness::blue_green();
    h.order(AAA);
    h.order(AAA);
    h.settle();
    let again = h.engines[0].answered[&1].clone();
    h.core.handle_frame(
        h.now,
        0,
        Frame::Replayed(Outputs {
            input_seq: 1,
            outputs: again,
        }),
    );
    h.pump();
    assert_eq!(h.messages_out(), 2);
    assert_eq!(h.delivered_from(), (2, 0));
}

#[test]
fn a_canary_owns_its_symbols_and_the_authoritative_engine_keeps_the_rest() {
    let mut h = Harness::blue_green();
    let canary = h.command(CoreRequest::Canary {
        percent: None,
        symbols: vec![AAA.into()],
    });
    h.settle();
    assert!(
        matches!(h.reply(canary), Some(CoreReply::Switched(_))),
        "{:?}",
        h.replies
    );
    h.order(AAA);
    h.order(BBB);
    h.order(AAA);
    h.settle();
    assert_eq!(h.delivered_from(), (1, 2));
    assert_eq!(h.messages_out(), 3);
    let status = h.status();
    assert_eq!(status.engines[1].role, EngineRole::Canary);
    let gates = status.canary.expect("a canary").gates;
    assert_eq!((gates.compared, gates.errors), (2, 0));
}

#[test]
fn a_canary_that_answers_differently_trips_its_error_gate() {
    let green = crate::engine::fault::RejectSymbol::new(
        MatchingEngine::new(&engine_config()).expect("an engine"),
        symbol(AAA),
    );
    let mut h = Harness::new(Box::new(green));
    h.command(CoreRequest::Canary {
        percent: None,
        symbols: vec![AAA.into()],
    });
    h.settle();
    h.order(AAA);
    h.settle();
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, CoreEvent::GateBreached(b) if b.gate == "error-rate")),
        "{:?}",
        h.events
    );
}

#[test]
fn outputs_stored_before_a_crash_that_lost_the_cursor_write_are_not_delivered_again() {
    let mut h = Harness::blue_green();
    h.order(AAA);
    h.order(AAA);
    h.settle();
    assert_eq!(h.messages_out(), 2);
    // Killed after input 2's report reached the session, before the cursor said so.
    h.restart(true);
    h.settle();
    assert_eq!(h.messages_out(), 2, "input 2's report was delivered again");
    h.order(BBB);
    h.settle();
    assert_eq!(h.messages_out(), 3);
}

#[test]
fn the_cursor_moves_only_when_the_driver_hands_a_delivery_back() {
    let mut h = Harness::blue_green();
    h.deliveries = Deliveries::Queued;
    h.order(AAA);
    h.settle();
    assert_eq!(
        h.messages_out(),
        0,
        "nothing reaches a session before the driver applies it"
    );
    let delivery = h.core.poll_delivery().expect("input 1's outputs queued");
    assert_eq!(delivery.input_seq, 1);
    assert_eq!(delivery.outputs.len(), 1);
    assert!(h.core.poll_delivery().is_none(), "queued once");
    assert_eq!(h.status().delivered_through, 0);
    delivery.apply(h.now, &h.sessions);
    assert_eq!(h.messages_out(), 1);
    assert_eq!(
        h.status().delivered_through,
        0,
        "stored is not acknowledged"
    );
    h.core.handle_delivered(h.now, delivery);
    assert_eq!(h.status().delivered_through, 1);
}

#[test]
fn a_kill_between_a_delivery_and_its_acknowledgement_delivers_nothing_twice() {
    let mut h = Harness::blue_green();
    h.order(AAA);
    h.settle();
    h.deliveries = Deliveries::Unacknowledged;
    h.order(AAA);
    h.order(BBB);
    h.settle();
    assert_eq!(h.messages_out(), 3);
    assert_eq!(h.status().delivered_through, 1);
    h.restart(false);
    h.settle();
    assert_eq!(h.messages_out(), 3, "inputs 2 and 3 were delivered again");
    assert_eq!(h.status().delivered_through, 3);
    h.order(BBB);
    h.settle();
    assert_eq!(h.messages_out(), 4);
}

#[test]
fn deliveries_still_queued_at_a_kill_are_delivered_after_the_restart() {
    let mut h = Harness::blue_green();
    h.deliveries = Deliveries::Queued;
    h.order(AAA);
    h.order(BBB);
    h.settle();
    assert_eq!(h.messages_out(), 0);
    h.restart(false);
    h.settle();
    assert_eq!(
        h.messages_out(),
        2,
        "the engines' answers reach the sessions after all"
    );
    assert_eq!(h.status().delivered_through, 2);
}

#[test]
fn a_standby_whose_snapshot_source_died_is_restored_from_the_engine_that_took_authority() {
    let mut h = Harness::blue_green();
    h.order(AAA);
    h.order(BBB);
    h.settle();
    // Green restarts empty and asks for blue's snapshot; blue's link breaks before it answers.
    h.engines[1].engine = Box::new(MatchingEngine::new(&engine_config()).expect("an engine"));
    h.engines[1].answered.clear();
    h.core.handle_lost(h.now, 1, "engine restarted");
    h.pump();
    h.advance(crate::constants::ENGINE_RECONNECT_MS);
    assert!(h.engines[1].linked && !h.engines[0].requests.is_empty());
    h.engines[0].requests.clear();
    h.core.handle_lost(h.now, 0, "connection reset");
    h.pump();
    // Blue comes back with its book and takes authority again; green must not wait for good.
    h.advance(crate::constants::ENGINE_RECONNECT_MS);
    h.settle();
    h.order(AAA);
    h.settle();
    assert_eq!(
        h.engines[1].engine.last_input_seq(),
        3,
        "green restored and caught up"
    );
    assert_eq!(h.engines[1].engine.digest(), h.engines[0].engine.digest());
}

/// Green is killed and comes back empty: the core sees the link go and green attach again.
fn restart_green_empty(h: &mut Harness) {
    h.engines[1].engine = Box::new(MatchingEngine::new(&engine_config()).expect("an engine"));
    h.engines[1].answered.clear();
    h.core.handle_lost(h.now, 1, "engine restarted");
    h.pump();
    h.advance(crate::constants::ENGINE_RECONNECT_MS);
    assert!(h.engines[1].linked, "green attached again");
}

#[test]
fn an_empty_standby_of_the_authoritys_build_is_rebuilt_from_the_journal_without_a_snapshot() {
    let mut h = Harness::of_build("build-a");
    for _ in 0..3 {
        h.order(AAA);
        h.order(BBB);
    }
    h.settle();
    restart_green_empty(&mut h);
    assert!(
        h.engines[0].requests.is_empty(),
        "the authoritative engine is asked for nothing"
    );
    assert_eq!(
        h.engines[1].inbox.front().map(|input| input.seq),
        Some(1),
        "green is fed the journal from its first input"
    );
    h.settle();
    assert!(h.engines[0].requests.is_empty() && h.engines[1].requests.is_empty());
    assert_eq!(h.engines[1].engine.last_input_seq(), 6);
    assert_eq!(h.engines[1].engine.digest(), h.engines[0].engine.digest());
    // It is a standby like any other: live inputs reach it, and it can take authority.
    h.order(AAA);
    h.settle();
    assert_eq!(h.engines[1].engine.last_input_seq(), 7);
    assert_eq!(h.engines[1].engine.digest(), h.engines[0].engine.digest());
    let id = h.command(CoreRequest::Switch);
    h.settle();
    assert!(
        matches!(h.reply(id), Some(CoreReply::Switched(_))),
        "{:?}",
        h.reply(id)
    );
    // Rebuilt from the journal, green is one too: blue, restarted empty, replays as well.
    h.engines[0].engine = Box::new(MatchingEngine::new(&engine_config()).expect("an engine"));
    h.engines[0].answered.clear();
    h.core.handle_lost(h.now, 0, "engine restarted");
    h.pump();
    h.advance(crate::constants::ENGINE_RECONNECT_MS);
    assert!(h.engines[0].linked && h.engines[1].requests.is_empty());
    h.settle();
    assert_eq!(h.engines[0].engine.digest(), h.engines[1].engine.digest());
}

#[test]
fn a_catch_up_keeps_a_bounded_window_in_flight_and_writes_whole_batches() {
    let window = crate::constants::CATCH_UP_INPUTS_IN_FLIGHT_MAX;
    let batch_min = crate::constants::CATCH_UP_BATCH_MIN;
    let mut h = Harness::of_build("build-a");
    for i in 0..600 {
        h.order(if i % 2 == 0 { AAA } else { BBB });
    }
    h.settle();
    restart_green_empty(&mut h);
    assert_eq!(
        h.engines[1].inbox.len(),
        window,
        "the replay fills the catch-up window and no more, so the link's socket never fills"
    );
    // Room for fewer than a batch is not worth a write: answers free it until a batch fits.
    h.answer(1, batch_min - 1);
    assert_eq!(h.engines[1].inbox.len(), window - (batch_min - 1));
    h.answer(1, 1);
    assert_eq!(h.engines[1].inbox.len(), window);
    h.settle();
    assert_eq!(h.engines[1].engine.last_input_seq(), 600);
    assert_eq!(h.engines[1].engine.digest(), h.engines[0].engine.digest());
}

#[test]
fn an_empty_standby_of_another_build_is_restored_from_the_authoritys_snapshot() {
    let mut h = Harness::of_build("build-a");
    h.order(AAA);
    h.order(BBB);
    h.settle();
    h.engines[1].executable_sha256 = "build-b";
    restart_green_empty(&mut h);
    assert!(
        matches!(
            h.engines[0].requests.front(),
            Some(LinkCommand::RequestSnapshot)
        ),
        "another build may read the journal differently: the snapshot is the book"
    );
    assert!(h.engines[1].inbox.is_empty(), "no inputs while it waits");
    h.settle();
    assert_eq!(h.engines[1].engine.last_input_seq(), 2);
    assert_eq!(h.engines[1].engine.digest(), h.engines[0].engine.digest());
}

#[test]
fn an_empty_standby_of_an_engine_that_does_not_name_its_executable_is_restored_from_a_snapshot() {
    let mut h = Harness::blue_green();
    h.order(AAA);
    h.settle();
    restart_green_empty(&mut h);
    assert!(matches!(
        h.engines[0].requests.front(),
        Some(LinkCommand::RequestSnapshot)
    ));
}

#[test]
fn an_authority_whose_state_predates_the_gateway_gives_a_newcomer_its_snapshot() {
    let mut h = Harness::of_build("build-a");
    h.order(AAA);
    h.order(BBB);
    h.settle();
    // A new gateway: blue reattaches with the book it kept, which this core did not build.
    h.restart(false);
    h.settle();
    restart_green_empty(&mut h);
    assert!(matches!(
        h.engines[0].requests.front(),
        Some(LinkCommand::RequestSnapshot)
    ));
    h.settle();
    assert_eq!(h.engines[1].engine.digest(), h.engines[0].engine.digest());
    // Restored from a snapshot, green is not known to be the journal's replay either.
    let id = h.command(CoreRequest::Switch);
    h.settle();
    assert!(matches!(h.reply(id), Some(CoreReply::Switched(_))));
    h.engines[0].engine = Box::new(MatchingEngine::new(&engine_config()).expect("an engine"));
    h.engines[0].answered.clear();
    h.core.handle_lost(h.now, 0, "engine restarted");
    h.pump();
    h.advance(crate::constants::ENGINE_RECONNECT_MS);
    assert!(matches!(
        h.engines[1].requests.front(),
        Some(LinkCommand::RequestSnapshot)
    ));
}

#[test]
fn until_an_engine_holds_authority_engines_are_tried_in_their_configured_order() {
    let mut harness = Harness::blue_green();
    // A new gateway with both engines up: only blue, listed first, is asked to connect while
    // its attempt is in flight, so green cannot take authority by answering sooner.
    harness.core = Core::with_journal(
        harness.sessions.clone(),
        harness.config.clone(),
        harness.journal.clone(),
        Box::new(harness.cursor.clone()),
        harness.now,
    );
    harness.core.handle_timeout(harness.now);
    let mut connects = Vec::new();
    while let Some(LinkTransmit { slot, command }) = harness.core.poll_link() {
        if matches!(command, LinkCommand::Connect) {
            connects.push(slot);
        }
    }
    assert_eq!(connects, [0], "only the first engine is tried");
    // Blue cannot be reached: green is tried next, and takes authority.
    harness
        .core
        .handle_connect_failed(harness.now, 0, "refused");
    harness.now = harness.core.next_timeout().max(harness.now);
    harness.core.handle_timeout(harness.now);
    let mut connects = Vec::new();
    while let Some(LinkTransmit { slot, command }) = harness.core.poll_link() {
        if matches!(command, LinkCommand::Connect) {
            connects.push(slot);
        }
    }
    assert_eq!(connects, [1], "the next engine once the first failed");
}

/// Green rejecting every AAA order, running a canary of AAA that answered one order (blue booked
/// it, green rejected it and holds nothing), with everything answered.
fn faulty_aaa_canary(blue_protocol: u16) -> Harness {
    let green = crate::engine::fault::RejectSymbol::new(
        MatchingEngine::new(&engine_config()).expect("an engine"),
        symbol(AAA),
    );
    let mut h = Harness::speaking(Box::new(green), blue_protocol);
    h.command(CoreRequest::Canary {
        percent: None,
        symbols: vec![AAA.into()],
    });
    h.settle();
    h.order(AAA);
    h.order(BBB);
    h.settle();
    assert_ne!(h.engines[0].engine.digest(), h.engines[1].engine.digest());
    h
}

/// The transfer report of the canary's end answered to command `id`.
fn transfer_in(h: &Harness, id: CommandId) -> crate::gateway::status::TransferReport {
    match h.reply(id) {
        Some(CoreReply::Switched(SwitchReport {
            scope:
                SwitchScope::CanaryEnded {
                    transfer: Some(transfer),
                    ..
                },
            ..
        })) => (**transfer).clone(),
        other => panic!("no canary end with a transfer: {other:?}"),
    }
}

/// The digest of a fresh engine fed the whole journal, transfers filled in from their blobs.
fn replayed_digest(h: &Harness) -> crate::engine::Digest {
    let mut engine = MatchingEngine::new(&engine_config()).expect("an engine");
    let mut outputs = Vec::new();
    for entry in h.journal.entries() {
        let input = Input::decode_journaled(&entry.payload).expect("a journaled input");
        let input = super::sequencer::with_blob(input, |sha256| h.journal.load_blob(sha256))
            .expect("the transfer's blob");
        engine.apply(&input, &mut outputs);
    }
    engine.digest()
}

#[test]
fn a_canarys_rollback_moves_its_state_to_every_engine_and_halts_nothing() {
    let mut h = faulty_aaa_canary(link::LINK_PROTOCOL_VERSION);
    let journaled = h.journal.entries().len();
    let rollback = h.command(CoreRequest::Rollback);
    // New requests wait while the canary engine's state is fetched and sequenced.
    assert!(!h.core.accepting());
    h.settle();
    let transfer = transfer_in(&h, rollback);
    assert_eq!(transfer.refused, None, "{transfer:?}");
    assert_eq!(transfer.symbols, [AAA.to_owned()]);
    // Green rejected the one AAA order, so no AAA order rests in its book.
    assert_eq!(transfer.orders_moved, 0);
    assert_eq!(transfer.transfer_seq, journaled as u64 + 1);
    assert_eq!(h.journal.entries().len(), journaled + 1);
    let status = h.status();
    assert!(status.canary.is_none());
    assert!(status.halted.is_empty(), "{:?}", status.halted);
    // Both engines hold green's AAA book, blue's BBB one: the same state, the journal's.
    let digest = h.engines[0].engine.digest();
    assert_eq!(h.engines[1].engine.digest(), digest);
    assert_eq!(replayed_digest(&h), digest);
    // AAA trades on, answered by blue.
    let before = h.messages_out();
    assert!(h.core.accepting());
    h.order(AAA);
    h.settle();
    assert_eq!(h.messages_out(), before + 1);
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, CoreEvent::Record(CoreRecord::Halted { .. })))
    );
}

#[test]
fn an_engine_of_the_build_before_transfers_makes_the_rollback_halt_and_say_why() {
    let mut h = faulty_aaa_canary(link::LINK_PROTOCOL_VERSION_BEFORE_TRANSFER);
    let journaled = h.journal.entries().len();
    let rollback = h.command(CoreRequest::Rollback);
    h.settle();
    let transfer = transfer_in(&h, rollback);
    let reason = transfer.refused.expect("refused");
    assert!(reason.contains("blue speaks link protocol 2"), "{reason}");
    assert_eq!(
        h.journal.entries().len(),
        journaled,
        "no transfer journaled"
    );
    assert_eq!(h.status().halted, [AAA.to_owned()]);
}

#[test]
fn a_canary_engine_that_never_sends_its_snapshot_is_given_up_on_and_the_rollback_halts() {
    let mut h = faulty_aaa_canary(link::LINK_PROTOCOL_VERSION);
    let rollback = h.command(CoreRequest::Rollback);
    // Green answers inputs but never serves the snapshot request.
    h.answer(0, usize::MAX);
    h.answer(1, usize::MAX);
    assert!(h.reply(rollback).is_none());
    h.advance(crate::constants::TRANSFER_SNAPSHOT_TIMEOUT_MS + FAILOVER_MS);
    let transfer = transfer_in(&h, rollback);
    assert!(
        transfer
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("no snapshot")),
        "{transfer:?}"
    );
    assert_eq!(h.status().halted, [AAA.to_owned()]);
}

#[test]
fn a_message_journaled_before_a_crash_is_not_asked_for_again_after_the_restart() {
    let mut h = Harness::blue_green();
    // The harness hands orders to the core without the session having confirmed them: as if
    // the gateway died after journaling each and before its session store recorded it.
    h.order(AAA);
    h.order(BBB);
    h.settle();
    assert_eq!(h.sessions.status()[0].seq_num_next_in, 1);
    h.restart(false);
    let expected = h
        .sessions
        .with(0, |s| (s.seq_num_next_in(), s.store().seq_num_next_in()));
    assert_eq!(
        expected,
        Some((3, 3)),
        "the restarted session still expects messages the journal holds: their PossDup copies would trade twice"
    );
}

#[test]
fn a_journaled_message_from_before_a_sequence_reset_does_not_move_the_new_sequence() {
    let mut h = Harness::blue_green();
    h.order(AAA);
    h.order(AAA);
    h.settle();
    // The session day ends (or the counterparty logs on with ResetSeqNumFlag): numbers restart.
    h.sessions
        .with(0, |s| s.store_mut().reset(1).expect("a reset"))
        .expect("the session");
    h.restart(false);
    let expected = h.sessions.with(0, |s| s.store().seq_num_next_in());
    assert_eq!(
        expected,
        Some(1),
        "a MsgSeqNum journaled before the reset was applied to the numbers after it"
    );
}

// ----- verified canary delivery and declared divergence --------------------------------------

/// Blue authoritative, green a build that rejects every new AAA order blue accepts.
fn faulty_green(adjust: impl FnOnce(&mut CoreConfig)) -> Harness {
    let green = crate::engine::fault::RejectSymbol::new(
        MatchingEngine::new(&engine_config()).expect("an engine"),
        symbol(AAA),
    );
    Harness::with_config(Box::new(green), adjust)
}

fn verified(config: &mut CoreConfig) {
    config.canary_delivery = CanaryDelivery::Verified;
}

/// The ExecType (150) of every execution report CLIENT1 holds, in order.
fn exec_types(h: &Harness) -> Vec<u8> {
    let next = h.sessions.status()[0].seq_num_next_out;
    h.sessions
        .with(0, |session| {
            (1..next)
                .filter_map(|seq| {
                    let bytes = session.store().sent(seq)?;
                    let message = Message::parse(bytes).ok()?;
                    (message.msg_type() == b"8").then(|| message.get(150).map(|v| v[0]))?
                })
                .collect()
        })
        .unwrap_or_default()
}

fn start_canary(h: &mut Harness, symbols: &[&str], expected: ExpectedDivergence) {
    let canary = h.command_with(
        CoreRequest::Canary {
            percent: None,
            symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
        },
        false,
        expected,
    );
    h.settle();
    assert!(
        matches!(h.reply(canary), Some(CoreReply::Switched(_))),
        "{:?}",
        h.replies
    );
}

#[test]
fn a_verified_canary_answer_waits_for_the_baselines_matching_answer() {
    let mut h = Harness::with_config(
        Box::new(MatchingEngine::new(&engine_config()).expect("an engine")),
        verified,
    );
    start_canary(&mut h, &[AAA], ExpectedDivergence::default());
    h.order(AAA);
    // The canary answered; the baseline has not: nothing reaches the counterparty yet.
    h.answer(1, 1);
    assert_eq!(h.messages_out(), 0, "delivered before the baseline agreed");
    h.answer(0, 1);
    assert_eq!(h.messages_out(), 1);
    // An answer arriving again changes nothing.
    let again = h.engines[1].answered[&1].clone();
    h.core.handle_frame(
        h.now,
        1,
        Frame::Replayed(Outputs {
            input_seq: 1,
            outputs: again,
        }),
    );
    h.pump();
    h.order(BBB);
    h.order(AAA);
    h.settle();
    assert_eq!(h.messages_out(), 3);
    assert_eq!(
        h.delivered_from(),
        (1, 2),
        "the canary's inputs count as its own"
    );
    let canary = h.status().canary.expect("a canary");
    assert_eq!(canary.delivery, "verified");
    assert_eq!((canary.gates.compared, canary.gates.errors), (2, 0));
    assert!(canary.gates.breach.is_none());
}

#[test]
fn a_verified_canary_that_answers_differently_delivers_the_baselines_answer_and_rolls_back_without_a_halt()
 {
    let mut h = faulty_green(verified);
    start_canary(&mut h, &[AAA], ExpectedDivergence::default());
    h.order(AAA);
    h.answer(1, 1);
    assert_eq!(h.messages_out(), 0);
    h.answer(0, 1);
    // Blue's acknowledgement went out, never green's reject.
    assert_eq!(exec_types(&h), vec![b'0']);
    let breach = h.events.iter().find_map(|e| match e {
        CoreEvent::GateBreached(breach) => Some(breach.clone()),
        _ => None,
    });
    assert_eq!(breach.map(|b| b.gate), Some("verification".to_owned()));
    // The engine whose answer was held back is the one marked diverged.
    assert!(
        h.events.iter().any(|e| matches!(e,
            CoreEvent::Record(CoreRecord::Diverged { engine, symbols })
                if engine == "green" && symbols == &vec![AAA.to_owned()])),
        "{:?}",
        h.events
    );
    // The control plane's rollback: the canary ends, nothing halts.
    let rollback = h.command_with(CoreRequest::Rollback, true, ExpectedDivergence::default());
    h.settle();
    assert!(
        matches!(h.reply(rollback), Some(CoreReply::Switched(_))),
        "{:?}",
        h.replies
    );
    let status = h.status();
    assert!(status.canary.is_none());
    assert!(status.halted.is_empty(), "halted {:?}", status.halted);
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, CoreEvent::Record(CoreRecord::Halted { .. })))
    );
    // Nor does the canary engine's state move back: blue's books are what was delivered.
    let transfers = h
        .journal
        .entries()
        .iter()
        .filter(|entry| {
            Input::decode_journaled(&entry.payload)
                .is_ok_and(|input| matches!(input.request, Request::Transfer(_)))
        })
        .count();
    assert_eq!(
        transfers, 0,
        "a verified canary's wrong state was moved back"
    );
    // AAA keeps trading, from blue.
    h.order(AAA);
    h.settle();
    assert_eq!(exec_types(&h), vec![b'0', b'0']);
    // Green's book is not what the counterparties were told: a switch onto it is refused.
    let switch = h.command(CoreRequest::Switch);
    assert!(
        matches!(h.reply(switch), Some(CoreReply::Refused { reason }) if reason.contains("AAA")),
        "{:?}",
        h.reply(switch)
    );
}

#[test]
fn in_immediate_mode_the_faulty_canarys_answer_is_delivered_and_the_baseline_is_marked() {
    // The contrast with verified mode: the same fault reaches the counterparty.
    let mut h = faulty_green(|_| {});
    start_canary(&mut h, &[AAA], ExpectedDivergence::default());
    h.order(AAA);
    h.answer(1, 1);
    assert_eq!(exec_types(&h), vec![b'8']);
    h.answer(0, 1);
    assert!(h.events.iter().any(|e| matches!(e,
        CoreEvent::Record(CoreRecord::Diverged { engine, .. }) if engine == "blue")));
}

#[test]
fn when_a_verified_canary_is_lost_the_baselines_answers_are_delivered() {
    let mut h = faulty_green(verified);
    start_canary(&mut h, &[AAA], ExpectedDivergence::default());
    h.order(AAA);
    h.order(AAA);
    h.answer(1, 2);
    h.answer(0, 1);
    assert_eq!(exec_types(&h), vec![b'0']);
    h.core.handle_lost(h.now, 1, "connection reset");
    h.pump();
    h.answer(0, 1);
    h.settle();
    assert_eq!(exec_types(&h), vec![b'0', b'0']);
}

#[test]
fn when_the_baseline_of_a_verified_canary_is_lost_the_canary_takes_over_and_nothing_is_stuck() {
    let mut h = Harness::with_config(
        Box::new(MatchingEngine::new(&engine_config()).expect("an engine")),
        verified,
    );
    start_canary(&mut h, &[AAA], ExpectedDivergence::default());
    h.order(AAA);
    h.order(BBB);
    h.answer(1, 2);
    assert_eq!(h.messages_out(), 0);
    h.core.handle_lost(h.now, 0, "connection reset");
    h.pump();
    h.settle();
    assert_eq!(h.messages_out(), 2, "every input answered once");
    h.order(AAA);
    h.settle();
    assert_eq!(h.messages_out(), 3);
}

#[test]
fn a_declared_divergence_is_not_an_error_but_the_reject_gate_still_judges_it() {
    let mut h = faulty_green(|config| {
        config.gates.reject_min_samples = 3;
    });
    let expected = ExpectedDivergence::parse(&[AAA.into()], &[]).expect("valid");
    start_canary(&mut h, &[AAA], expected);
    h.order(AAA);
    h.settle();
    let canary = h.status().canary.expect("a canary");
    assert_eq!(
        (canary.gates.errors, canary.gates.expected_divergences),
        (0, 1)
    );
    assert!(canary.gates.breach.is_none(), "{:?}", canary.gates.breach);
    assert_eq!(canary.expected_divergence.symbols, vec![AAA.to_owned()]);
    h.order(AAA);
    h.order(AAA);
    h.settle();
    let breach = h.status().canary.and_then(|c| c.gates.breach);
    assert_eq!(breach.map(|b| b.gate), Some("reject-rate".to_owned()));
}

#[test]
fn a_divergence_declared_by_message_type_covers_only_that_type() {
    let mut h = faulty_green(|_| {});
    // Cancels may differ; the new orders this build rejects are still errors.
    let expected = ExpectedDivergence::parse(&[], &["OrderCancelRequest".into()]).expect("valid");
    assert_eq!(expected.msg_types, vec!["F".to_owned()]);
    start_canary(&mut h, &[AAA], expected);
    h.order(AAA);
    h.settle();
    let breach = h.status().canary.and_then(|c| c.gates.breach);
    assert_eq!(breach.map(|b| b.gate), Some("error-rate".to_owned()));
}

#[test]
fn a_canary_declaring_divergence_on_an_unknown_symbol_is_refused() {
    let mut h = Harness::blue_green();
    let canary = h.command_with(
        CoreRequest::Canary {
            percent: None,
            symbols: vec![AAA.into()],
        },
        false,
        ExpectedDivergence {
            symbols: vec!["ZZZ".into()],
            msg_types: Vec::new(),
        },
    );
    assert!(
        matches!(h.reply(canary), Some(CoreReply::Refused { reason }) if reason.contains("ZZZ")),
        "{:?}",
        h.reply(canary)
    );
}

#[test]
fn status_shows_each_engines_lag_in_inputs_and_in_time() {
    let mut h = Harness::blue_green();
    let first = h.status().journal_last_seq;
    h.order(AAA); // stamped at t
    h.now = h.now.plus_millis(1);
    h.order(BBB); // t + 1 ms
    h.now = h.now.plus_millis(2);
    h.order(AAA); // t + 3 ms
    h.answer(0, 1);
    h.now = h.now.plus_millis(4); // t + 7 ms
    let status = h.status();
    assert_eq!(status.journal_last_seq, first + 3);
    let (blue, green) = (&status.engines[0], &status.engines[1]);
    assert_eq!(
        (blue.role, green.role),
        (EngineRole::Authoritative, EngineRole::Standby)
    );
    // Blue answered the first: it is two inputs behind, and the oldest it owes is 6 ms old.
    assert_eq!(
        (blue.answered_through, blue.lag_inputs, blue.lag_us),
        (first + 1, 2, 6_000)
    );
    assert_eq!(
        (green.answered_through, green.lag_inputs, green.lag_us),
        (first, 3, 7_000)
    );
    h.settle();
    let status = h.status();
    for engine in &status.engines {
        assert_eq!((engine.lag_inputs, engine.lag_us), (0, 0), "{engine:?}");
    }
}

#[test]
fn status_shows_the_canarys_latency_against_the_baseline_and_the_allowance_from_it() {
    let mut h = Harness::blue_green();
    start_canary(&mut h, &[AAA], ExpectedDivergence::default());
    h.order(AAA);
    h.now = h.now.plus_millis(3);
    h.answer(1, 1); // the canary, 3 ms after the stamp
    h.now = h.now.plus_millis(5);
    h.answer(0, 1); // the baseline, 8 ms after it
    let canary = h.status().canary.expect("a canary");
    let gates = &canary.gates;
    // A histogram's buckets are within 1% of the value recorded.
    assert!((3_000..3_030).contains(&gates.canary_p99_us), "{gates:?}");
    assert!((8_000..8_080).contains(&gates.baseline_p99_us), "{gates:?}");
    let allowance = h.config.gates.latency_limit_us(gates.baseline_p99_us) as u64;
    assert!(allowance > gates.baseline_p99_us, "{gates:?}");
    assert_eq!(gates.latency_allowance_p99_us, allowance);
    assert_eq!(
        (canary.engine.as_str(), canary.baseline.as_str()),
        ("green", "blue")
    );
    assert_eq!(canary.symbols, [AAA]);
    assert_eq!(canary.delivery, "immediate");
}

#[test]
fn the_driver_reads_the_configured_engines_and_the_link_secret_from_the_core() {
    let h = Harness::blue_green();
    assert_eq!(h.core.engine_count(), 2);
    assert_eq!(h.core.engine_addr(0), &h.config.engines[0]);
    assert_eq!(h.core.engine_addr(1), &h.config.engines[1]);
    assert!(h.core.link_secret().is_none());
}

#[test]
fn recycled_input_batches_are_kept_up_to_the_bound_and_only_when_small_enough() {
    let mut h = Harness::blue_green();
    h.core.spare_inputs.clear();
    // Too large a batch is freed, not kept.
    h.core.recycle_inputs(Vec::with_capacity(
        crate::constants::SEQUENCER_BATCH_MAX + 1,
    ));
    assert!(h.core.spare_inputs.is_empty());
    for kept in 1..=crate::constants::SEQUENCER_SPARE_BATCHES_MAX {
        h.core
            .recycle_inputs(Vec::with_capacity(crate::constants::SEQUENCER_BATCH_MAX));
        assert_eq!(h.core.spare_inputs.len(), kept);
    }
    h.core.recycle_inputs(Vec::with_capacity(8));
    assert_eq!(
        h.core.spare_inputs.len(),
        crate::constants::SEQUENCER_SPARE_BATCHES_MAX
    );
    // The next batches are built in kept ones.
    h.order(AAA);
    assert!(h.core.spare_inputs.len() < crate::constants::SEQUENCER_SPARE_BATCHES_MAX);
}

#[test]
fn the_recent_inputs_ring_fills_without_page_faults() {
    let mut recent = super::sequencer::recent_inputs_touched();
    assert!(recent.is_empty());
    assert!(recent.capacity() >= crate::constants::RECENT_INPUTS_MAX);
    let symbol = Symbol::try_from_bytes(b"EUR/USD").unwrap();
    crate::mmap::thread_minor_faults();
    let before = crate::mmap::thread_minor_faults();
    for seq in 0..crate::constants::RECENT_INPUTS_MAX as u64 {
        recent.push_back((seq, Timestamp(seq), symbol));
    }
    let faults = crate::mmap::thread_minor_faults() - before;
    // Untouched, its ~2.5 MB would fault about 600 times on the way.
    assert!(faults < 60, "{faults} page faults filling the ring");
}

// ----- a standby's inputs in batches (`standby_batch_us`) -----------------------------------

/// Blue and green with a standby batch of `STANDBY_BATCH_MS`.
fn batching() -> Harness {
    let green = MatchingEngine::new(&engine_config()).expect("an engine");
    Harness::with_config(Box::new(green), |config| {
        config.standby_batch = Duration::from_millis(STANDBY_BATCH_MS);
    })
}

/// The standby batch the tests below run with.
const STANDBY_BATCH_MS: u64 = 1;

/// The input seqs engine `slot` was written and has not answered, in the order written.
fn inbox(h: &Harness, slot: usize) -> Vec<u64> {
    h.engines[slot]
        .inbox
        .iter()
        .map(|input| input.seq)
        .collect()
}

#[test]
fn a_busy_venues_standby_gets_its_inputs_in_one_write_once_the_oldest_has_waited_its_batch_time() {
    let mut h = batching();
    let written_before = h.status().engines[1].answered_through;
    for _ in 0..3 {
        h.order(AAA);
    }
    // Blue owns them and has each at once. Green had the first at once too (blue was idle);
    // the next two came while blue was busy and are kept, and the core's timer is set for when
    // the oldest of them is due.
    assert_eq!(inbox(&h, 0), vec![1, 2, 3]);
    assert_eq!(inbox(&h, 1), vec![1]);
    let green = &h.status().engines[1];
    assert_eq!(
        (green.sent_through, green.kept_inputs, green.lag_inputs),
        (1, 2, 3),
        "status tells what is on the link from what is kept"
    );
    assert_eq!(
        h.core.next_timeout(),
        h.now.plus_millis(STANDBY_BATCH_MS),
        "the timer fires when the kept inputs are due"
    );
    h.answer(0, 3);
    assert_eq!(h.messages_out(), 3, "the owner's answers are not held back");
    h.advance(STANDBY_BATCH_MS);
    assert_eq!(inbox(&h, 1), vec![1, 2, 3], "one write, in order, when due");
    let green = &h.status().engines[1];
    assert_eq!((green.sent_through, green.kept_inputs), (3, 0));
    assert_eq!(
        h.core.next_timeout(),
        h.core.next_housekeeping,
        "nothing kept"
    );
    h.settle();
    let status = h.status();
    assert_eq!(written_before, 0);
    assert_eq!(status.engines[1].answered_through, 3);
    assert_eq!(
        (status.shadow.matches, status.shadow.divergences),
        (3, 0),
        "every comparison made, none differing"
    );
}

#[test]
fn an_idle_venues_standby_is_written_each_input_at_once() {
    // One order at a time, each answered before the next: no batch would gain anything.
    let mut h = batching();
    for seq in 1..=3 {
        h.order(AAA);
        assert_eq!((inbox(&h, 0), inbox(&h, 1)), (vec![seq], vec![seq]));
        h.settle();
    }
    assert_eq!(
        h.core.next_timeout(),
        h.core.next_housekeeping,
        "nothing kept"
    );
}

#[test]
fn a_full_standby_batch_is_written_without_waiting() {
    let mut h = batching();
    // The first goes to green at once (blue idle); the next full batch is kept, then written.
    for _ in 0..=crate::constants::STANDBY_BATCH_INPUTS_MAX {
        h.order(AAA);
    }
    let full = crate::constants::STANDBY_BATCH_INPUTS_MAX as u64 + 1;
    assert_eq!(inbox(&h, 1), (1..=full).collect::<Vec<_>>());
    h.order(AAA);
    assert_eq!(
        inbox(&h, 1).len() as u64,
        full,
        "the next starts a new batch"
    );
}

#[test]
fn a_failover_writes_the_survivors_kept_inputs_before_anything_else() {
    let mut h = batching();
    for _ in 0..4 {
        h.order(AAA);
    }
    h.answer(0, 2);
    assert_eq!(inbox(&h, 1), vec![1], "green's later three are kept");
    h.core.handle_lost(h.now, 0, "connection reset");
    h.pump();
    // No time passed: green got what was kept because it is taking over, once and in order.
    assert_eq!(inbox(&h, 1), vec![1, 2, 3, 4]);
    h.settle();
    h.order(AAA);
    h.settle();
    assert_eq!(h.messages_out(), 5, "every order answered once");
    assert_eq!(h.delivered_from(), (2, 3));
}

#[test]
fn a_switch_writes_the_kept_inputs_so_its_barrier_waits_on_nothing_else() {
    let mut h = batching();
    for _ in 0..3 {
        h.order(AAA);
    }
    h.answer(0, 3);
    let switch = h.command(CoreRequest::Switch);
    assert_eq!(
        inbox(&h, 1),
        vec![1, 2, 3],
        "written when the switch became pending"
    );
    h.answer(1, 3);
    assert!(
        matches!(h.reply(switch), Some(CoreReply::Switched(report)) if report.barrier_seq == 3),
        "switched at the barrier with no time passing: {:?}",
        h.reply(switch)
    );
    // Blue is the standby now, and its inputs are kept in turn once green is busy.
    h.order(AAA);
    h.order(AAA);
    assert_eq!(inbox(&h, 1), vec![4, 5]);
    assert_eq!(inbox(&h, 0), vec![4]);
    h.advance(STANDBY_BATCH_MS);
    assert_eq!(inbox(&h, 0), vec![4, 5]);
}

#[test]
fn without_a_standby_batch_every_engine_is_written_each_input_at_once() {
    let mut h = Harness::blue_green();
    h.order(AAA);
    assert_eq!((inbox(&h, 0), inbox(&h, 1)), (vec![1], vec![1]));
}

#[test]
fn a_standby_whose_window_filled_gets_what_was_kept_before_newer_inputs_from_the_journal() {
    let mut h = batching();
    let window = crate::constants::LINK_INPUTS_IN_FLIGHT_MAX as u64;
    // Green answers a few early, so its window fills with inputs still kept for it.
    for _ in 0..10 {
        h.order(AAA);
    }
    h.answer(0, usize::MAX);
    h.advance(STANDBY_BATCH_MS);
    h.answer(1, 3);
    let mut sent = 10;
    while h.core.engines[1]
        .connection
        .as_ref()
        .is_some_and(|c| c.in_flight() < window)
    {
        // Two at a time, so blue is busy and green's inputs are kept.
        h.order(AAA);
        h.order(AAA);
        h.answer(0, 2);
        sent += 2;
    }
    // Past the window: green gets nothing live, and some of its inputs are still kept.
    for _ in 0..50 {
        h.order(AAA);
        h.order(AAA);
        h.answer(0, 2);
    }
    let kept = h.core.engines[1]
        .connection
        .as_ref()
        .map_or(0, |c| c.deferred.len());
    assert!(kept > 0, "inputs kept when the window filled");
    // Green drains its backlog; what it is written next must follow what it answered.
    let mut answered = 3;
    while !h.engines[1].inbox.is_empty() {
        let next = inbox(&h, 1);
        assert_eq!(
            next,
            (answered + 1..=answered + next.len() as u64).collect::<Vec<_>>(),
            "green is written its inputs in order, none skipped"
        );
        answered += next.len() as u64;
        h.answer(1, usize::MAX);
    }
    h.advance(STANDBY_BATCH_MS);
    h.settle();
    assert_eq!(
        h.status().engines[1].answered_through,
        sent + 100,
        "green caught up"
    );
}
