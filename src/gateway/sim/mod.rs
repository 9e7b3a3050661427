//! A seeded, deterministic simulation of the gateway core, its sessions and two engines, on one
//! thread and virtual time.
//!
//! From a seed, [`run`] drives counterparty orders (which cross, so one input answers several
//! sessions), engines answering late or in bursts, links that break, engines that hang or
//! restart empty, operator switches, canaries and rollbacks at any moment (also during a
//! barrier or a failover), and gateway crashes, after which a new core starts from the journal
//! and cursor the old one left (the cursor may have lost its last write: a kill after the
//! outputs reached their sessions and before the cursor recorded it). Engines are real
//! [`MatchingEngine`]s behind an in-memory link; sessions are real session state machines with
//! in-memory stores, which survive a gateway crash as their memory-mapped files do.
//!
//! After every step it checks that no output was delivered twice (every ExecID once per
//! session), that each session got its outputs in input order, none that the journal does not
//! explain, and that a switch moved authority only to an engine that had answered through its
//! barrier; at the end it heals every fault, lets everything settle and checks that each
//! session holds exactly the execution reports a fresh replay of the journal produces for it,
//! and every engine's digest equals that replay's. A failure names the
//! seed and the last steps; the same seed replays the same run exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::acceptor::{Inbound, Sessions};
use super::core::{
    CommandId, Core, CoreCommand, CoreConfig, CoreRequest, GateConfig, LinkCommand, LinkTransmit,
    PlantedBug,
};
use super::input_journal::InputJournal;
use super::memory_journal::{CrashFate, MemoryJournal};
use super::outbox_mark::MemoryCursor;
use crate::constants;
use crate::engine::{
    ClOrdId, Engine, EngineConfig, Input, InstrumentConfig, MatchingEngine, NewOrder, OrdType,
    Output, Price, Qty, Report, Request, Side, Symbol, TimeInForce,
};
use crate::fix::codec::{Encoder, Message};
use crate::fix::dictionary::Dictionary;
use crate::fix::session::{Session, SessionConfig};
use crate::fix::store::{MemoryStore, SessionStore};
use crate::link::{self, AlreadyApplied, Frame, Outputs, Restored, Snapshot};
use crate::time::Timestamp;

mod invariants;
#[cfg(test)]
mod tests;

/// The venue's symbols in the simulation: two, so a canary can own one.
const SYMBOLS: [&str; 2] = ["AAA", "BBB"];

/// What one seed runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Steps before the faults are healed and the run settles.
    pub steps: usize,
    /// Counterparty sessions.
    pub sessions: usize,
    /// A bug to plant in the core, to prove the invariants catch it.
    pub planted: Option<PlantedBug>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            steps: constants::SIM_STEPS_DEFAULT,
            sessions: constants::SIM_SESSIONS_DEFAULT,
            planted: None,
        }
    }
}

/// What a passing seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Inputs journaled.
    pub inputs: u64,
    /// Execution reports delivered.
    pub delivered: u64,
    /// Gateway crashes and restarts.
    pub crashes: u64,
    /// Engine restarts (empty) and link losses.
    pub engine_faults: u64,
    /// Operator commands given.
    pub commands: u64,
    /// State transfers journaled (canaries ended with their state moved back), as of the last
    /// check at rest.
    pub transfers: u64,
    /// SHA-256 of every message every session stored, in order: equal for two runs of one seed
    /// when the run is deterministic down to the bytes.
    pub fingerprint: [u8; 32],
}

/// A broken invariant: the seed that breaks it and what happened last.
#[derive(Clone, Debug)]
pub struct SimFailure {
    /// Replays the run exactly.
    pub seed: u64,
    /// The step it was found after.
    pub step: usize,
    /// Which invariant, and how.
    pub invariant: String,
    /// The last steps, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} broke an invariant after step {}: {}",
            self.seed, self.step, self.invariant
        )?;
        writeln!(f, "last steps:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay with: baton sim --seed {}", self.seed)
    }
}

/// SplitMix64: small, fast and the same on every platform, which is all a seed needs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An engine process behind an in-memory link.
struct SimEngine {
    name: &'static str,
    engine: MatchingEngine,
    /// Whether the core holds a link to it.
    linked: bool,
    /// Hung: answers nothing, not even heartbeats.
    silent: bool,
    /// Inputs and requests sent on the link, not yet handled.
    inbox: VecDeque<LinkCommand>,
    /// Its replay window: what it answered per input since it started or was restored.
    answered: BTreeMap<u64, Vec<Output>>,
}

impl SimEngine {
    fn new(name: &'static str) -> SimEngine {
        SimEngine {
            name,
            engine: fresh_engine(),
            linked: false,
            silent: false,
            inbox: VecDeque::new(),
            answered: BTreeMap::new(),
        }
    }
}

fn engine_config() -> EngineConfig {
    let instrument = |name: &str| InstrumentConfig {
        symbol: name.into(),
        tick_size: Price(1),
        lot_size: 1,
    };
    EngineConfig {
        instruments: SYMBOLS.iter().map(|s| instrument(s)).collect(),
        orders_max: constants::SIM_ORDERS_MAX,
        levels_max: constants::SIM_ORDERS_MAX,
        cl_ord_ids_max: constants::SIM_ORDERS_MAX,
    }
}

fn fresh_engine() -> MatchingEngine {
    match MatchingEngine::new(&engine_config()) {
        Ok(engine) => engine,
        // The configuration is a constant the engine accepts; failing here is a bug.
        Err(error) => panic!("simulation engine config: {error}"),
    }
}

fn symbol(name: &str) -> Symbol {
    match Symbol::try_from_bytes(name.as_bytes()) {
        Some(symbol) => symbol,
        None => panic!("simulation symbol {name}"),
    }
}

/// The whole simulated venue.
struct Sim {
    seed: u64,
    rng: Rng,
    config: SimConfig,
    now: Timestamp,
    sessions: Arc<Sessions<MemoryStore>>,
    journal: MemoryJournal,
    cursor: MemoryCursor,
    core: Core<MemoryStore, MemoryJournal>,
    engines: Vec<SimEngine>,
    /// Next MsgSeqNum per counterparty, and orders sent.
    fix_seq: Vec<u64>,
    next_command: u64,
    /// Per session: messages already checked, and the ExecIDs seen in them.
    checked: Vec<u64>,
    exec_ids: Vec<BTreeSet<(u64, u32)>>,
    trace: VecDeque<String>,
    /// An invariant broken inside a step, reported by the next check.
    broken: Option<String>,
    step: usize,
    report: SimReport,
}

/// Runs seed `seed`; `Err` names the invariant that broke.
pub fn run(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut sim = Sim::new(seed, config.clone());
    for step in 0..config.steps {
        sim.step = step;
        sim.random_step();
        sim.check()?;
    }
    sim.heal_and_settle()?;
    sim.check()?;
    sim.check_quiescent()?;
    sim.report.fingerprint = sim.fingerprint();
    Ok(sim.report.clone())
}

impl Sim {
    fn new(seed: u64, config: SimConfig) -> Sim {
        let sessions = Sessions::new(
            (0..config.sessions)
                .map(|i| {
                    Session::new(
                        SessionConfig::new("BATON", &format!("CLIENT{}", i + 1)),
                        MemoryStore::new(),
                        Dictionary::venue(),
                    )
                })
                .collect(),
        );
        let now = Timestamp::from_secs(constants::SIM_EPOCH_SECS);
        let journal = MemoryJournal::new();
        let cursor = MemoryCursor::new();
        let core = Sim::core(&sessions, &journal, &cursor, now, config.planted);
        let count = config.sessions;
        let mut sim = Sim {
            seed,
            rng: Rng(seed),
            config,
            now,
            sessions,
            journal,
            cursor,
            core,
            engines: vec![SimEngine::new("blue"), SimEngine::new("green")],
            fix_seq: vec![0; count],
            next_command: 0,
            checked: vec![0; count],
            exec_ids: vec![BTreeSet::new(); count],
            trace: VecDeque::new(),
            broken: None,
            step: 0,
            report: SimReport::default(),
        };
        sim.tick();
        sim
    }

    fn core(
        sessions: &Arc<Sessions<MemoryStore>>,
        journal: &MemoryJournal,
        cursor: &MemoryCursor,
        now: Timestamp,
        planted: Option<PlantedBug>,
    ) -> Core<MemoryStore, MemoryJournal> {
        let addr = |name: &str| match format!("unix:///sim/{name}.sock").parse::<link::LinkAddr>() {
            Ok(addr) => addr,
            Err(error) => panic!("simulation address: {error}"),
        };
        let config = CoreConfig {
            engines: vec![addr("blue"), addr("green")],
            journal_dir: std::path::PathBuf::from("/sim"),
            journal: Default::default(),
            failover_timeout: Duration::from_millis(constants::SIM_FAILOVER_TIMEOUT_MS),
            symbols: SYMBOLS.iter().map(|s| symbol(s)).collect(),
            gates: GateConfig::default(),
            link_secret: None,
        };
        let mut core = Core::with_journal(
            sessions.clone(),
            config,
            journal.clone(),
            Box::new(cursor.clone()),
            now,
        );
        if let Some(bug) = planted {
            core.plant(bug);
        }
        core
    }

    fn log(&mut self, line: String) {
        if self.trace.len() == constants::SIM_TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("#{} t+{}ms {line}", self.step, self.elapsed_ms()));
    }

    fn elapsed_ms(&self) -> u64 {
        self.now
            .since(Timestamp::from_secs(constants::SIM_EPOCH_SECS))
            .as_millis() as u64
    }

    fn fail(&self, invariant: String) -> SimFailure {
        SimFailure {
            seed: self.seed,
            step: self.step,
            invariant,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    // ----- steps ------------------------------------------------------------------------------

    fn random_step(&mut self) {
        match self.rng.below(100) {
            0..=34 => self.order(),
            35..=64 => {
                let slot = self.rng.below(2) as usize;
                let count = 1 + self.rng.below(8) as usize;
                self.answer(slot, count);
            }
            65..=74 => {
                let ms = 1 + self.rng.below(constants::SIM_FAILOVER_TIMEOUT_MS * 3 / 2);
                self.log(format!("time passes {ms}ms"));
                self.advance(ms);
            }
            75..=78 => {
                let slot = self.rng.below(2) as usize;
                if self.engines[slot].linked {
                    self.log(format!("{} link breaks", self.engines[slot].name));
                    self.report.engine_faults += 1;
                    self.unlink(slot);
                    self.core.handle_lost(self.now, slot, "link reset");
                    self.pump();
                }
            }
            79..=81 => {
                let slot = self.rng.below(2) as usize;
                let engine = &mut self.engines[slot];
                engine.silent = !engine.silent;
                let line = format!(
                    "{} {}",
                    engine.name,
                    if engine.silent { "hangs" } else { "recovers" }
                );
                self.log(line);
            }
            82..=83 => {
                let slot = self.rng.below(2) as usize;
                self.log(format!("{} restarts empty", self.engines[slot].name));
                self.report.engine_faults += 1;
                let was_linked = self.engines[slot].linked;
                self.unlink(slot);
                self.engines[slot].engine = fresh_engine();
                self.engines[slot].answered.clear();
                self.engines[slot].silent = false;
                if was_linked {
                    self.core.handle_lost(self.now, slot, "engine restarted");
                    self.pump();
                }
            }
            84..=89 => {
                let request = match self.rng.below(5) {
                    0 => CoreRequest::Switch,
                    1 => CoreRequest::Rollback,
                    2 => CoreRequest::Canary {
                        percent: None,
                        symbols: vec![SYMBOLS[self.rng.below(2) as usize].into()],
                    },
                    3 => CoreRequest::Stage {
                        engine: self.engines[self.rng.below(2) as usize].name.into(),
                    },
                    _ => CoreRequest::Resume {
                        symbols: vec![SYMBOLS[self.rng.below(2) as usize].into()],
                    },
                };
                self.log(format!("operator: {request:?}"));
                self.report.commands += 1;
                self.command(request);
            }
            90..=91 => self.crash_gateway(),
            _ => self.pump(),
        }
    }

    /// A counterparty sends a limit order; prices straddle so orders cross and fill.
    fn order(&mut self) {
        let session = self.rng.below(self.config.sessions as u64) as usize;
        let name = SYMBOLS[self.rng.below(2) as usize];
        let side = if self.rng.chance(50) {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = Price(99 + self.rng.below(3) as i64);
        let qty = 1 + self.rng.below(5);
        self.fix_seq[session] += 1;
        let fix_seq = self.fix_seq[session];
        let id = format!("S{session}-{fix_seq}");
        let mut encoder = Encoder::new("FIX.4.4");
        encoder
            .start(b"D")
            .uint(crate::fix::tags::MSG_SEQ_NUM, fix_seq)
            .str(crate::fix::tags::CL_ORD_ID, &id);
        let Ok(message) = Message::parse(encoder.finish()) else {
            panic!("the simulation's own order does not parse");
        };
        let Some(cl_ord_id) = ClOrdId::try_from_bytes(id.as_bytes()) else {
            panic!("simulation ClOrdID {id}");
        };
        let request = Request::New(NewOrder {
            cl_ord_id,
            symbol: symbol(name),
            side,
            ord_type: OrdType::Limit,
            price: Some(price),
            qty: Qty(qty),
            time_in_force: TimeInForce::Day,
            parties: crate::engine::Parties::NONE,
        });
        let before = self.journal.last_seq();
        if self.core.accepting() {
            let mut batch = vec![Inbound {
                session: session as u32,
                request,
                message,
            }];
            self.core.handle_requests(self.now, &mut batch);
        }
        let after = self.journal.last_seq();
        self.report.inputs += after - before;
        self.log(format!(
            "CLIENT{} {id} {name} {side:?} {qty}@{} -> {}",
            session + 1,
            price.0,
            if after > before {
                format!("input {after}")
            } else {
                "held or refused".into()
            }
        ));
        self.pump();
    }

    fn command(&mut self, request: CoreRequest) -> CommandId {
        self.next_command += 1;
        let id = CommandId(self.next_command);
        self.core.handle_command(
            self.now,
            id,
            CoreCommand {
                request,
                expect_sha256: None,
                canary_only: false,
            },
        );
        self.pump();
        id
    }

    /// The gateway process dies and a new one starts from what it left: the journal whole, the
    /// cursor perhaps without its last write; engines keep running and reconnect.
    fn crash_gateway(&mut self) {
        let lose_cursor_write = self.rng.chance(50);
        self.log(format!(
            "gateway crashes{}; restarts",
            if lose_cursor_write {
                " before its last cursor write landed"
            } else {
                ""
            }
        ));
        self.report.crashes += 1;
        self.journal = self.journal.crash(CrashFate::KeepAll);
        self.cursor = self.cursor.crash(lose_cursor_write);
        for slot in 0..self.engines.len() {
            self.unlink(slot);
        }
        self.core = Sim::core(
            &self.sessions,
            &self.journal,
            &self.cursor,
            self.now,
            self.config.planted,
        );
        self.tick();
    }

    fn unlink(&mut self, slot: usize) {
        self.engines[slot].linked = false;
        self.engines[slot].inbox.clear();
    }

    // ----- the driver's part ------------------------------------------------------------------

    /// Fires the core's timer now; engines that are not hung say they are alive first.
    fn tick(&mut self) {
        for slot in 0..self.engines.len() {
            let engine = &self.engines[slot];
            if engine.linked && !engine.silent {
                let last_input_seq = engine.engine.last_input_seq();
                self.core.handle_frame(
                    self.now,
                    slot,
                    Frame::Heartbeat(link::Heartbeat { last_input_seq }),
                );
            }
        }
        self.core.handle_timeout(self.now);
        self.pump();
    }

    fn advance(&mut self, ms: u64) {
        let until = self.now.plus_millis(ms);
        while self.core.next_timeout() <= until {
            self.now = self.core.next_timeout().max(self.now);
            self.tick();
        }
        self.now = until;
        self.tick();
    }

    /// Carries out what the core asked, as the driver does.
    fn pump(&mut self) {
        for _ in 0..constants::SIM_PUMP_STEPS_MAX {
            self.core.handle_catch_up(self.now);
            while self.core.poll_event().is_some() {}
            while let Some((_, reply)) = self.core.poll_reply() {
                self.on_reply(reply);
            }
            let Some(LinkTransmit { slot, command }) = self.core.poll_link() else {
                return;
            };
            match command {
                LinkCommand::Connect => {
                    let engine = &self.engines[slot];
                    let hello = link::Hello {
                        protocol_version: link::LINK_PROTOCOL_VERSION,
                        engine_name: engine.name.into(),
                        build_version: engine.engine.build_version().into(),
                        last_input_seq: engine.engine.last_input_seq(),
                        snapshot_formats: Vec::new(),
                        executable_sha256: String::new(),
                        auth_nonce: Vec::new(),
                    };
                    if engine.silent {
                        self.core
                            .handle_connect_failed(self.now, slot, "handshake timed out");
                    } else {
                        let attached = self.core.handle_attached(self.now, slot, &hello);
                        self.engines[slot].linked = attached;
                        let line =
                            format!("{} attaches at {}", hello.engine_name, hello.last_input_seq);
                        self.log(line);
                    }
                }
                LinkCommand::Drop | LinkCommand::Close { .. } => self.unlink(slot),
                LinkCommand::Heartbeat { .. } => {}
                other if self.engines[slot].linked => self.engines[slot].inbox.push_back(other),
                _ => {}
            }
        }
        panic!(
            "seed {}: the core kept asking for more after {} steps",
            self.seed,
            constants::SIM_PUMP_STEPS_MAX
        );
    }

    /// A switch answered: the engine taking authority must have answered every input up to the
    /// barrier (invariant 5: outputs up to it came from the old engine, after it from the new).
    fn on_reply(&mut self, reply: crate::gateway::core::CoreReply) {
        let crate::gateway::core::CoreReply::Switched(report) = reply else {
            return;
        };
        self.log(format!(
            "switched {} -> {} at {} ({:?})",
            report.from, report.to, report.barrier_seq, report.scope
        ));
        if let Some(engine) = self.engines.iter().find(|e| e.name == report.to)
            && engine.engine.last_input_seq() < report.barrier_seq
            && self.broken.is_none()
        {
            self.broken = Some(format!(
                "authority moved to {} at barrier {} before it answered through it (it is at {})",
                report.to,
                report.barrier_seq,
                engine.engine.last_input_seq()
            ));
        }
    }

    /// Engine `slot` handles up to `count` things it was sent, in order.
    fn answer(&mut self, slot: usize, count: usize) {
        for _ in 0..count {
            if !self.engines[slot].linked || self.engines[slot].silent {
                return;
            }
            let Some(command) = self.engines[slot].inbox.pop_front() else {
                return;
            };
            match command {
                LinkCommand::Inputs(inputs) => {
                    for input in inputs {
                        if !self.engines[slot].linked {
                            return;
                        }
                        self.apply(slot, &input);
                    }
                }
                LinkCommand::RequestSnapshot => {
                    let engine = &self.engines[slot].engine;
                    let mut bytes = Vec::new();
                    engine.snapshot(&mut bytes);
                    let snapshot = Snapshot {
                        at_input_seq: engine.last_input_seq(),
                        format_version: crate::engine::SNAPSHOT_FORMAT_DEFAULT,
                        digest: engine.digest(),
                        bytes,
                    };
                    self.core
                        .handle_frame(self.now, slot, Frame::Snapshot(snapshot));
                }
                LinkCommand::Restore(bytes) => {
                    let engine = &mut self.engines[slot];
                    if engine.engine.restore(&bytes).is_err() {
                        panic!(
                            "seed {}: a snapshot of the simulation does not restore",
                            self.seed
                        );
                    }
                    engine.answered.clear();
                    let restored = Restored {
                        at_input_seq: engine.engine.last_input_seq(),
                        digest: engine.engine.digest(),
                    };
                    let line = format!("{} restored at {}", engine.name, restored.at_input_seq);
                    self.log(line);
                    self.core
                        .handle_frame(self.now, slot, Frame::Restored(restored));
                }
                _ => {}
            }
            self.pump();
        }
    }

    /// The engine applies (or answers again) one input, as the link's engine side does.
    fn apply(&mut self, slot: usize, input: &Input) {
        let engine = &mut self.engines[slot];
        let last = engine.engine.last_input_seq();
        let frame = if input.seq == last + 1 {
            let mut outputs = Vec::new();
            engine.engine.apply(input, &mut outputs);
            engine.answered.insert(input.seq, outputs.clone());
            Frame::Outputs(Outputs {
                input_seq: input.seq,
                outputs,
            })
        } else if input.seq <= last {
            match engine.answered.get(&input.seq) {
                Some(outputs) => Frame::Replayed(Outputs {
                    input_seq: input.seq,
                    outputs: outputs.clone(),
                }),
                None => Frame::AlreadyApplied(AlreadyApplied {
                    input_seq: input.seq,
                    last_input_seq: last,
                }),
            }
        } else {
            // A gap: the engine closes the link, untouched.
            let line = format!(
                "{} refuses input {} after {last}: gap",
                engine.name, input.seq
            );
            self.log(line);
            self.unlink(slot);
            self.core.handle_lost(self.now, slot, "gap");
            return;
        };
        self.core.handle_frame(self.now, slot, frame);
    }
}
