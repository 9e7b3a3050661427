//! Tests of the core on virtual time, and the `tidy` check that keeps it sans-IO.

/// Every file of the core, by name, as compiled: a file added to the core without being listed
/// here is caught by the count in the test below.
const CORE_FILES: [(&str, &str); 8] = [
    ("mod.rs", include_str!("mod.rs")),
    ("api.rs", include_str!("api.rs")),
    ("sequencer.rs", include_str!("sequencer.rs")),
    ("outbox.rs", include_str!("outbox.rs")),
    ("shadow.rs", include_str!("shadow.rs")),
    ("router.rs", include_str!("router.rs")),
    ("switch.rs", include_str!("switch.rs")),
    ("status.rs", include_str!("status.rs")),
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
    CommandId, Core, CoreCommand, CoreConfig, CoreEvent, CoreReply, CoreRequest, GateConfig,
    LinkCommand, LinkTransmit,
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
use crate::gateway::memory_journal::CrashFate;
use crate::gateway::memory_journal::MemoryJournal;
use crate::gateway::outbox_mark::MemoryCursor;
use crate::gateway::status::EngineRole;
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
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(green: Box<dyn Engine + Send>) -> Harness {
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
        };
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
        let fake = |name, engine| FakeEngine {
            name,
            engine,
            linked: false,
            reachable: true,
            silent: false,
            requests: VecDeque::new(),
            inbox: VecDeque::new(),
            answered: BTreeMap::new(),
        };
        let blue: Box<dyn Engine + Send> =
            Box::new(MatchingEngine::new(&engine_config()).expect("an engine"));
        let mut harness = Harness {
            core,
            sessions,
            engines: vec![fake("blue", blue), fake("green", green)],
            now,
            fix_seq: 0,
            next_command: 0,
            replies: Vec::new(),
            events: Vec::new(),
            journal,
            cursor,
            config,
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
        let alive = self
            .engines
            .iter()
            .enumerate()
            .filter(|(_, e)| e.linked && !e.silent)
            .map(|(slot, e)| (slot, e.engine.last_input_seq()));
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
                        protocol_version: link::LINK_PROTOCOL_VERSION,
                        engine_name: engine.name.into(),
                        build_version: engine.engine.build_version().into(),
                        last_input_seq: engine.engine.last_input_seq(),
                        snapshot_formats: vec![],
                        executable_sha256: String::new(),
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
        }];
        self.core.handle_requests(self.now, &mut batch);
        self.pump();
    }

    fn command(&mut self, request: CoreRequest) -> CommandId {
        self.next_command += 1;
        let id = CommandId(self.next_command);
        let command = CoreCommand {
            request,
            expect_sha256: None,
            canary_only: false,
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
