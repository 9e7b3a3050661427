//! The pause of a canary's rollback that moves the canary engine's state back (a state transfer),
//! next to a plain switch's pause in the same run, for venues of 1, 10 and 100 symbols with
//! 10,000 resting orders each, with a canary of every symbol and (on the larger venues) of one
//! symbol, which shows whether the pause follows the canary's orders or the venue's.
//!
//! The gateway core runs in this process with two in-process matching engines behind a link
//! that answers at once, so what is timed is the work on the pause's path, not a network: for
//! the switch, both engines answering the one input in flight at the barrier; for the rollback,
//! that plus the canary engine's snapshot (written from a frozen copy, as the link server does),
//! the gateway cutting the transfer section from it, its hash and blob, the transfer's journal
//! record, and both engines applying it (merging the books and loading the result). Each iteration starts a
//! canary of every symbol, sequences one order on it, and times, from the command to its answer,
//! either a switch back and forth or the rollback; books are filled before timing, through the
//! journal, so every engine starts from the same state the core knows it has.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use baton::engine::{
    ClOrdId, Engine, EngineConfig, Input, InstrumentConfig, MatchingEngine, NewOrder, OrdType,
    Output, Parties, Price, Qty, Request, Side, Symbol, TimeInForce,
};
use baton::fix::codec::{Encoder, Message};
use baton::fix::dictionary::Dictionary;
use baton::fix::session::{Session, SessionConfig};
use baton::fix::store::MemoryStore;
use baton::fix::time::Timestamp;
use baton::gateway::Inbound;
use baton::gateway::Sessions;
use baton::gateway::core::{
    CommandId, Core, CoreCommand, CoreConfig, CoreReply, CoreRequest, GateConfig, LinkCommand,
};
use baton::gateway::input_journal::InputJournal;
use baton::gateway::memory_journal::MemoryJournal;
use baton::gateway::outbox_mark::{CursorStore, MemoryCursor};
use baton::gateway::status::SwitchScope;
use baton::link::{self, Frame, Outputs};
use criterion::{Criterion, criterion_group, criterion_main};

/// Resting orders per symbol.
const ORDERS_PER_SYMBOL: u64 = 10_000;
/// Price levels they rest on (the rest share a level), within any book depth limit.
const LEVELS: u64 = 100;

/// The core, its engines and what the link still has to carry to it.
struct Venue {
    core: Core<MemoryStore, MemoryJournal>,
    engines: [MatchingEngine; 2],
    /// Frames from the engines not yet handed to the core.
    frames: VecDeque<(usize, Frame)>,
    symbols: Vec<Symbol>,
    fix_seq: u64,
    next_command: u64,
    _dir: tempfile::TempDir,
}

fn symbol_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("S{i:03}")).collect()
}

fn engine(symbols: &[String]) -> MatchingEngine {
    let total = symbols.len() as u32 * ORDERS_PER_SYMBOL as u32;
    MatchingEngine::new(&EngineConfig {
        instruments: symbols
            .iter()
            .map(|name| InstrumentConfig {
                symbol: name.as_str().into(),
                tick_size: Price::parse_decimal(b"0.01").expect("a tick"),
                lot_size: 1,
            })
            .collect(),
        orders_max: total + 1_000,
        levels_max: LEVELS as u32 + 10,
        cl_ord_ids_max: total + 10_000,
    })
    .expect("an engine")
}

fn new_order(symbol: Symbol, id: &str, side: Side, price: i64) -> Request {
    Request::New(NewOrder {
        cl_ord_id: ClOrdId::try_from_bytes(id.as_bytes()).expect("an id"),
        symbol,
        side,
        ord_type: OrdType::Limit,
        price: Some(Price(price)),
        qty: Qty(1),
        time_in_force: TimeInForce::Day,
        parties: Parties::NONE,
    })
}

impl Venue {
    /// `symbols` symbols, each with [`ORDERS_PER_SYMBOL`] resting sells in both engines and in
    /// the journal; blue (slot 0) has authority, green is the standby, both caught up.
    fn new(symbol_count: usize) -> Venue {
        let dir = tempfile::tempdir().expect("a temp dir");
        let names = symbol_names(symbol_count);
        let symbols: Vec<Symbol> = names
            .iter()
            .map(|n| Symbol::try_from_bytes(n.as_bytes()).expect("a symbol"))
            .collect();
        let mut engines = [engine(&names), engine(&names)];
        let mut journal = MemoryJournal::new();
        let mut outputs: Vec<Output> = Vec::new();
        let mut payload = Vec::new();
        let mut seq = 0;
        for (s, symbol) in symbols.iter().enumerate() {
            for i in 0..ORDERS_PER_SYMBOL {
                seq += 1;
                let input = Input {
                    seq,
                    time: Timestamp(seq),
                    session: 0,
                    request: new_order(
                        *symbol,
                        &format!("P{s}-{i}"),
                        Side::Sell,
                        1_000_000_000 + (i % LEVELS) as i64 * 1_000_000,
                    ),
                };
                payload.clear();
                bincode::serde::encode_into_std_write(
                    &input,
                    &mut payload,
                    bincode::config::standard(),
                )
                .expect("an input encodes");
                journal
                    .append(seq, input.time, &payload)
                    .expect("a journal append");
                for engine in &mut engines {
                    outputs.clear();
                    engine.apply(&input, &mut outputs);
                }
            }
        }
        let mut cursor = MemoryCursor::new();
        cursor.set(seq);
        let sessions = Sessions::new(vec![Session::new(
            SessionConfig::new("BATON", "CLIENT1"),
            MemoryStore::new(),
            Dictionary::venue(),
        )]);
        let addr = |name: &str| {
            format!("unix:///{name}.sock")
                .parse::<link::LinkAddr>()
                .expect("an address")
        };
        let config = CoreConfig {
            engines: vec![addr("blue"), addr("green")],
            journal_dir: dir.path().to_path_buf(),
            journal: Default::default(),
            failover_timeout: Duration::from_secs(3_600),
            symbols: symbols.clone(),
            gates: GateConfig::default(),
            link_secret: None,
            link_spin: std::time::Duration::ZERO,
            canary_delivery: Default::default(),
            standby_batch: std::time::Duration::ZERO,
        };
        let core = Core::with_journal(
            sessions,
            config,
            journal,
            Box::new(cursor),
            Timestamp::now(),
        );
        let mut venue = Venue {
            core,
            engines,
            frames: VecDeque::new(),
            symbols,
            fix_seq: 0,
            next_command: 0,
            _dir: dir,
        };
        // Blue first, so it takes authority; then green as the standby.
        venue.core.handle_timeout(Timestamp::now());
        venue.pump_only(0);
        std::thread::sleep(Duration::from_millis(
            baton::constants::ENGINE_RECONNECT_MS + baton::constants::LINK_POLL_INTERVAL_MS,
        ));
        venue.core.handle_timeout(Timestamp::now());
        venue.pump();
        venue
    }

    /// Carries out what the core asks, connecting only slot `only` (or every slot).
    fn pump_only(&mut self, only: usize) {
        self.run(Some(only));
    }

    fn pump(&mut self) {
        self.run(None);
    }

    fn run(&mut self, only: Option<usize>) {
        loop {
            let mut idle = true;
            while let Some(transmit) = self.core.poll_link() {
                idle = false;
                let slot = transmit.slot;
                let engine = &mut self.engines[slot];
                match transmit.command {
                    LinkCommand::Connect if only.is_none_or(|o| o == slot) => {
                        let hello = link::Hello {
                            protocol_version: link::LINK_PROTOCOL_VERSION,
                            engine_name: ["blue", "green"][slot].into(),
                            build_version: engine.build_version().into(),
                            last_input_seq: engine.last_input_seq(),
                            snapshot_formats: vec![],
                            executable_sha256: String::new(),
                            auth_nonce: Vec::new(),
                        };
                        self.core.handle_attached(Timestamp::now(), slot, &hello);
                    }
                    LinkCommand::Connect => {
                        self.core
                            .handle_connect_failed(Timestamp::now(), slot, "not yet");
                    }
                    LinkCommand::Inputs(inputs) => {
                        for input in inputs {
                            let mut outputs = Vec::new();
                            engine.apply(&input, &mut outputs);
                            self.frames.push_back((
                                slot,
                                Frame::Outputs(Outputs {
                                    input_seq: input.seq,
                                    outputs,
                                }),
                            ));
                        }
                    }
                    LinkCommand::RequestSnapshot => {
                        // As the link server does: the snapshot and its digest from one frozen
                        // copy of the state.
                        let frozen = engine.freeze().expect("a matching engine freezes");
                        let mut bytes = Vec::new();
                        let digest = frozen.snapshot_and_digest(&mut bytes);
                        self.frames.push_back((
                            slot,
                            Frame::Snapshot(link::Snapshot {
                                at_input_seq: frozen.last_input_seq(),
                                format_version: baton::engine::SNAPSHOT_FORMAT_DEFAULT,
                                digest,
                                bytes,
                            }),
                        ));
                    }
                    _ => {}
                }
            }
            while self.core.poll_event().is_some() {}
            if let Some((slot, frame)) = self.frames.pop_front() {
                idle = false;
                self.core.handle_frame(Timestamp::now(), slot, frame);
            }
            self.core.handle_catch_up(Timestamp::now());
            if idle && self.frames.is_empty() {
                return;
            }
        }
    }

    /// Sends `request` and returns its answer once the core gave it.
    fn command(&mut self, request: CoreRequest) -> CoreReply {
        self.next_command += 1;
        let id = CommandId(self.next_command);
        let command = CoreCommand {
            request,
            expect_sha256: None,
            canary_only: false,
            expected_divergence: Default::default(),
        };
        self.core.handle_command(Timestamp::now(), id, command);
        loop {
            self.pump();
            while let Some((answered, reply)) = self.core.poll_reply() {
                if answered == id {
                    return reply;
                }
            }
            self.core.handle_timeout(Timestamp::now());
        }
    }

    /// A buy on the first symbol, sequenced and sent but not yet answered.
    fn order_in_flight(&mut self) {
        self.fix_seq += 1;
        let id = format!("B{}", self.fix_seq);
        let symbol = self.symbols[0];
        let mut encoder = Encoder::new("FIX.4.4");
        encoder
            .start(b"D")
            .uint(34, self.fix_seq)
            .str(11, &id)
            .str(55, symbol.as_str());
        let message = Message::parse(encoder.finish()).expect("a message");
        let mut batch = vec![Inbound {
            session: 0,
            request: new_order(symbol, &id, Side::Buy, 1),
            message,
            sequence_epoch: 0,
        }];
        self.core.handle_requests(Timestamp::now(), &mut batch);
    }

    /// A canary of the first `count` symbols, with an order in flight on the first.
    fn canary(&mut self, count: usize) {
        let names = self.symbols[..count]
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        let reply = self.command(CoreRequest::Canary {
            percent: None,
            symbols: names,
        });
        assert!(matches!(reply, CoreReply::Switched(_)), "{reply:?}");
        self.order_in_flight();
        self.pump();
    }
}

/// Times a rollback with transfer and a plain switch on the same venue, alternately.
fn pauses(c: &mut Criterion) {
    let mut group = c.benchmark_group("rollback_pause");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(5));
    for symbols in [1, 10, 100] {
        let mut venue = Venue::new(symbols);
        group.bench_function(format!("switch/{symbols}x{ORDERS_PER_SYMBOL}"), |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    // A switch to green and one back, each with an input in flight at its barrier.
                    for _ in 0..2 {
                        venue.order_in_flight();
                        let started = Instant::now();
                        let reply = venue.command(CoreRequest::Switch);
                        total += started.elapsed() / 2;
                        assert!(matches!(reply, CoreReply::Switched(_)), "{reply:?}");
                    }
                }
                total
            });
        });
        // The canary of every symbol, then (on a venue of more than one) of its first only.
        let canaries = if symbols == 1 {
            vec![("rollback_with_transfer", symbols)]
        } else {
            vec![
                ("rollback_with_transfer", symbols),
                ("rollback_one_symbol", 1),
            ]
        };
        for (name, canary_symbols) in canaries {
            group.bench_function(format!("{name}/{symbols}x{ORDERS_PER_SYMBOL}"), |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    venue.canary(canary_symbols);
                    venue.order_in_flight();
                    let started = Instant::now();
                    let reply = venue.command(CoreRequest::Rollback);
                    total += started.elapsed();
                    let moved = matches!(&reply, CoreReply::Switched(report)
                        if matches!(&report.scope, SwitchScope::CanaryEnded { transfer: Some(t), .. }
                            if t.refused.is_none()));
                    assert!(moved, "{reply:?}");
                }
                total
            });
        });
        }
    }
    group.finish();
}

criterion_group!(benches, pauses);
criterion_main!(benches);
