//! A seeded, deterministic simulation of the gateway core, its sessions, their counterparties
//! and two engines, on one thread and virtual time.
//!
//! From a seed, [`run`] drives counterparties that speak FIX to the gateway's sessions through
//! in-memory connections (bytes delivered whole, in pieces or late; connections that drop;
//! clients that log out, log on again with sequence recovery, and ask for resends), orders
//! that cross, so one input answers several sessions, engines answering late or in bursts,
//! links that break, engines that hang or restart empty, operator switches, canaries and
//! rollbacks at any moment (also during a barrier or a failover), and gateway crashes: a new
//! gateway starts from the journal (its last write perhaps torn), the cursor (its last write
//! perhaps lost) and the session stores the old one left, and takes its connections back from
//! the socket holder or finds them all closed. With [`SimConfig::planned_upgrades`], some of
//! those restarts are planned upgrades instead: the gateway stops reading at a barrier, hands
//! each settled session over with its carried state, and may still store answers its engines
//! give after that (a late delivery), which its successor must write before anything new: a
//! counterparty sees no gap across a planned upgrade. Engines are real [`MatchingEngine`]s behind an
//! in-memory link; sessions are real session state machines with in-memory stores, which
//! survive a gateway crash as their memory-mapped files do; requests they had handed over and
//! the sequencer had not taken die with the process.
//!
//! Odd seeds run canaries in verified delivery (`[control] canary_delivery = "verified"`) with a
//! faulty canary engine: its answers to the inputs held for verification are wrong (its book is
//! right), the gate breach it causes is rolled back as the control plane would, and no wrong
//! answer may ever reach a session.
//!
//! After every step it checks that no output was delivered twice (every ExecID once per
//! session), that each session got its outputs in input order, none that the journal does not
//! explain, that every session's outbound numbers are gap-free, that each counterparty saw its
//! numbers in order (anything lower marked PossDup), every ExecID once and every order
//! acknowledged at most once, and that a switch moved authority only to an engine that had
//! answered through its barrier; at the end it heals every fault, reconnects every client, lets
//! everything settle and checks that each session holds exactly the execution reports a fresh
//! replay of the journal produces for it, that its counterparty received them all, each saying
//! what the replay's report says, and every order it sent was acknowledged exactly once, and
//! every engine's digest equals that replay's.
//! A failure names the seed and the last steps; the same seed replays the same run exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::acceptor::{self, Inbound, Sessions};
use super::core::{
    CanaryDelivery, CommandId, Core, CoreCommand, CoreConfig, CoreEvent, CoreRecord, CoreRequest,
    Delivery, GateConfig, LinkCommand, LinkTransmit, PlantedBug,
};
use super::input_journal::InputJournal;
use super::memory_journal::{CrashFate, MemoryJournal};
use super::outbox_mark::MemoryCursor;
use crate::constants;
use crate::engine::{
    Engine, EngineConfig, Input, InstrumentConfig, MatchingEngine, Output, Price, Report, Symbol,
};
use crate::fix::codec::Message;
use crate::fix::dictionary::Dictionary;
use crate::fix::session::{Session, SessionConfig, State};
use crate::fix::store::{MemoryStore, SessionStore};
use crate::link::{self, AlreadyApplied, Frame, Outputs, Restored, Snapshot};
use crate::time::Timestamp;
use connections::{Wire, client_comp_id, gateway_sessions};
use counterparty::Counterparty;

mod connections;
mod counterparty;
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
    /// Whether a gateway crash may fall between an input's journal write and its session's
    /// record of the message (see [`constants::SIM_CRASH_BEFORE_CONFIRM`]).
    pub crash_before_confirm: bool,
    /// How canaries deliver; `None`: by the seed, odd seeds verified (see [`delivery_of`]).
    pub canary_delivery: Option<CanaryDelivery>,
    /// Whether half of the gateway restarts are planned upgrades (see the module
    /// documentation); off by default, so the seeds run as they always have.
    pub planned_upgrades: bool,
    /// Whether both engines' Hellos name one executable, so an engine that restarts empty
    /// under an authoritative engine the core built from the journal is rebuilt by replaying
    /// the journal rather than from a snapshot; off by default (the Hellos name none), so the
    /// seeds run as they always have.
    pub one_build: bool,
    /// `[gateway] standby_batch_us`: zero by default, so the seeds run as they always have;
    /// set, a standby's inputs are kept and written in batches (see `core::standby`).
    pub standby_batch: Duration,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            steps: constants::SIM_STEPS_DEFAULT,
            sessions: constants::SIM_SESSIONS_DEFAULT,
            planted: None,
            crash_before_confirm: constants::SIM_CRASH_BEFORE_CONFIRM,
            canary_delivery: None,
            planned_upgrades: false,
            one_build: false,
            standby_batch: Duration::ZERO,
        }
    }
}

/// The canary delivery seed `seed` runs with under `config`: odd seeds run verified canaries
/// whose engine answers the inputs held for verification wrongly, so every run of many seeds
/// covers both modes.
pub fn delivery_of(seed: u64, config: &SimConfig) -> CanaryDelivery {
    config.canary_delivery.unwrap_or(if seed % 2 == 1 {
        CanaryDelivery::Verified
    } else {
        CanaryDelivery::Immediate
    })
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
    /// Orders the counterparties sent.
    pub orders: u64,
    /// Counterparty connections dropped or logged out.
    pub disconnects: u64,
    /// ResendRequests the counterparties sent on their own (not for a gap).
    pub resend_requests: u64,
    /// Gateway crashes that tore the journal's last write.
    pub torn_writes: u64,
    /// Gateway crashes that fell after deliveries were written into their sessions and before
    /// the core was told (their cursor write never asked for).
    pub unacknowledged_deliveries: u64,
    /// Gateway crashes that took deliveries still queued in the core with them.
    pub queued_deliveries: u64,
    /// Wrong answers the faulty verified canary gave (each held back, or the run fails).
    pub wrong_answers: u64,
    /// State transfers journaled (canaries ended with their state moved back), as of the last
    /// check at rest.
    pub transfers: u64,
    /// Planned upgrades carried out (not called off for want of a settled barrier).
    pub upgrades: u64,
    /// Messages the old gateway stored in sessions it had already handed over.
    pub stored_after_hand_over: u64,
    /// Engines that attached empty behind a non-empty journal and were rebuilt by replaying
    /// it from input 1.
    pub rejoins_replayed: u64,
    /// Engines that attached empty behind a non-empty journal and were restored from a
    /// snapshot.
    pub rejoins_restored: u64,
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
    /// Attached empty behind a non-empty journal, and neither restored nor fed input 1 since:
    /// how it is brought up to date is still to be seen (and counted).
    rejoining: bool,
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
            rejoining: false,
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

/// Each engine, by slot, that is linked and not hung (its last input seq in `alive`) tells the
/// core it is alive, as an idle engine's heartbeat does; shared by every harness that plays the
/// engines' side of the link.
pub(crate) fn engines_alive<S, J>(
    core: &mut Core<S, J>,
    now: Timestamp,
    alive: impl IntoIterator<Item = Option<u64>>,
) where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    let alive = alive.into_iter().enumerate();
    for (slot, last_input_seq) in alive.filter_map(|(slot, seq)| Some((slot, seq?))) {
        core.handle_frame(
            now,
            slot,
            Frame::Heartbeat(link::Heartbeat { last_input_seq }),
        );
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
    /// The clients, one per session, talking FIX to the gateway's sessions through `wires`.
    counterparties: Vec<Counterparty>,
    /// Per session, the connection between its counterparty and the gateway.
    wires: Vec<Wire>,
    /// Requests the gateway's sessions handed over and the sequencer has not taken (the
    /// acceptor's queue to the sequencer); lost in a gateway crash.
    pending: Vec<Inbound>,
    next_command: u64,
    /// Per session: messages already checked, and the ExecIDs seen in them.
    checked: Vec<u64>,
    exec_ids: Vec<BTreeSet<(u64, u32)>>,
    trace: VecDeque<String>,
    /// An invariant broken inside a step, reported by the next check.
    broken: Option<String>,
    /// How canaries deliver in this run.
    delivery: CanaryDelivery,
    /// A gate breach asked for a rollback, which the next pump gives, as the control plane does.
    rollback_due: bool,
    /// Inputs whose outputs the core withheld: their symbol was halted because the engine that
    /// took it over had answered differently from what was delivered (in verified runs, after
    /// the faulty canary's wrong answer). Never delivered, by design.
    withheld: BTreeSet<u64>,
    /// Between a planned upgrade's hand-over and its successor's start: the old gateway's
    /// connections let go of their sockets, so its sessions write nothing to the wires.
    handed_over: bool,
    step: usize,
    report: SimReport,
    /// Deliveries written into their sessions and not yet handed back to the core: handed back
    /// at the driver's next wake-up, or lost with the process in a gateway crash.
    unacknowledged: Vec<Delivery>,
    /// Set once every fault is healed: the driver then applies and hands back every delivery
    /// at once, so the run settles.
    healed: bool,
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
    sim.report.inputs = sim.journal.last_seq();
    sim.report.fingerprint = sim.fingerprint();
    Ok(sim.report.clone())
}

impl Sim {
    fn new(seed: u64, config: SimConfig) -> Sim {
        let sessions = gateway_sessions(vec![MemoryStore::new(); config.sessions]);
        let now = Timestamp::from_secs(constants::SIM_EPOCH_SECS);
        let journal = MemoryJournal::new();
        let cursor = MemoryCursor::new();
        let delivery = delivery_of(seed, &config);
        let core = Sim::core(&sessions, &journal, &cursor, now, &config, delivery);
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
            counterparties: (0..count)
                .map(|i| Counterparty::new(client_comp_id(i)))
                .collect(),
            wires: (0..count).map(|_| Wire::default()).collect(),
            pending: Vec::new(),
            next_command: 0,
            checked: vec![0; count],
            exec_ids: vec![BTreeSet::new(); count],
            trace: VecDeque::new(),
            broken: None,
            delivery,
            rollback_due: false,
            withheld: BTreeSet::new(),
            handed_over: false,
            step: 0,
            report: SimReport::default(),
            unacknowledged: Vec::new(),
            healed: false,
        };
        sim.tick();
        for session in 0..count {
            sim.connect(session);
        }
        sim
    }

    fn core(
        sessions: &Arc<Sessions<MemoryStore>>,
        journal: &MemoryJournal,
        cursor: &MemoryCursor,
        now: Timestamp,
        sim: &SimConfig,
        canary_delivery: CanaryDelivery,
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
            link_spin: std::time::Duration::ZERO,
            canary_delivery,
            standby_batch: sim.standby_batch,
        };
        let mut core = Core::with_journal(
            sessions.clone(),
            config,
            journal.clone(),
            Box::new(cursor.clone()),
            now,
        );
        if let Some(bug) = sim.planted {
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
            0..=29 => self.order(),
            30..=54 => {
                let slot = self.rng.below(2) as usize;
                let count = 1 + self.rng.below(8) as usize;
                self.answer(slot, count);
            }
            55..=64 => self.network(),
            65..=71 => {
                let ms = 1 + self.rng.below(constants::SIM_FAILOVER_TIMEOUT_MS * 3 / 2);
                self.log(format!("time passes {ms}ms"));
                self.advance(ms);
            }
            72..=74 => {
                let slot = self.rng.below(2) as usize;
                if self.engines[slot].linked {
                    self.log(format!("{} link breaks", self.engines[slot].name));
                    self.report.engine_faults += 1;
                    self.unlink(slot);
                    self.core.handle_lost(self.now, slot, "link reset");
                    self.pump();
                }
            }
            75..=76 => {
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
            77..=78 => {
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
            79..=83 => {
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
            84..=85 if self.config.planned_upgrades && self.rng.chance(50) => {
                self.upgrade_gateway()
            }
            84..=85 => self.crash_gateway(),
            86..=87 => self.counterparty_leaves(),
            88 => self.counterparty_asks_resend(),
            89..=93 => self.sequence_pending(),
            _ => self.pump(),
        }
    }

    /// A counterparty sends a limit order (or, disconnected, connects again); prices straddle
    /// so orders cross and fill. Most orders reach the sequencer at once; the rest wait for the
    /// network and the sequencer steps.
    fn order(&mut self) {
        let session = self.rng.below(self.config.sessions as u64) as usize;
        if !self.counterparties[session].connected {
            self.connect(session);
            return;
        }
        if !self.counterparties[session].logged_on {
            self.carry_all(session);
            return;
        }
        let name = SYMBOLS[self.rng.below(2) as usize];
        let buy = self.rng.chance(50);
        let price = 99 + self.rng.below(3);
        let qty = 1 + self.rng.below(5);
        let id = self.counterparties[session].order(self.now, name, buy, price, qty);
        self.report.orders += 1;
        self.log(format!(
            "{id} {name} {} {qty}@{price}",
            if buy { "buy" } else { "sell" }
        ));
        self.flush_client(session);
        if self.rng.chance(70) {
            self.carry_all(session);
            self.sequence_pending();
        }
    }

    fn command(&mut self, request: CoreRequest) -> CommandId {
        self.command_as(request, false)
    }

    /// A command; `canary_only` for the gateway's own rollback after a gate breach.
    fn command_as(&mut self, request: CoreRequest, canary_only: bool) -> CommandId {
        self.next_command += 1;
        let id = CommandId(self.next_command);
        self.core.handle_command(
            self.now,
            id,
            CoreCommand {
                request,
                expect_sha256: None,
                canary_only,
                expected_divergence: Default::default(),
            },
        );
        self.pump();
        id
    }

    /// The gateway process dies and a new one starts from what it left: the journal (perhaps
    /// without its last record, torn by the kill), the cursor (perhaps without its last write)
    /// and every session store; requests read from sessions and not yet sequenced are lost.
    /// Engines keep running and reconnect. With a socket holder every logged-on connection
    /// survives and the new gateway takes it back still logged on; without one every
    /// connection closes and the counterparties log on again.
    fn crash_gateway(&mut self) {
        let lose_cursor_write = self.rng.chance(50);
        let holder = self.rng.chance(50);
        let fate = if self.rng.chance(50) {
            self.crash_while_journaling()
        } else {
            None
        };
        self.log(format!(
            "gateway crashes{}{}; restarts {}",
            match fate {
                Some(CrashFate::LoseLast) => " tearing its last journal write",
                Some(CrashFate::KeepAll) =>
                    " after a journal write, before the session confirmed it",
                None => "",
            },
            if lose_cursor_write {
                " before its last cursor write landed"
            } else {
                ""
            },
            if holder {
                "taking its held connections back"
            } else {
                "with every connection closed"
            }
        ));
        self.report.crashes += 1;
        if !self.unacknowledged.is_empty() {
            self.log(format!(
                "  after inputs {:?} reached their sessions, before the core was told",
                self.unacknowledged
                    .iter()
                    .map(|d| d.input_seq)
                    .collect::<Vec<_>>()
            ));
            self.report.unacknowledged_deliveries += 1;
            self.unacknowledged.clear();
        }
        let mut queued = Vec::new();
        while let Some(delivery) = self.core.poll_delivery() {
            queued.push(delivery.input_seq);
        }
        if !queued.is_empty() {
            self.log(format!(
                "  with the deliveries of inputs {queued:?} still queued"
            ));
            self.report.queued_deliveries += 1;
        }
        self.journal = self.journal.crash(fate.unwrap_or(CrashFate::KeepAll));
        self.cursor = self.cursor.crash(lose_cursor_write);
        self.pending.clear();
        for slot in 0..self.engines.len() {
            self.unlink(slot);
        }
        // What outlives the process of each session: its store, and (held by the holder) its
        // connection and the HeartBtInt agreed on it.
        let mut stores = Vec::new();
        let mut held = Vec::new();
        for session in 0..self.config.sessions {
            let (store, heartbeat_ms, active) = self
                .sessions
                .with(session as u32, |s| {
                    (
                        s.store().clone(),
                        s.heartbeat_interval_ms(),
                        s.state() == crate::fix::session::State::Active,
                    )
                })
                .unwrap_or_default();
            stores.push(store);
            held.push((holder && active).then_some(heartbeat_ms));
        }
        self.sessions = gateway_sessions(stores);
        self.core = Sim::core(
            &self.sessions,
            &self.journal,
            &self.cursor,
            self.now,
            &self.config,
            self.delivery,
        );
        for (session, held) in held.into_iter().enumerate() {
            let now = self.now;
            let resumed = held.is_some_and(|heartbeat_ms| {
                self.counterparties[session].still_logged_on()
                    && self
                        .sessions
                        .with(session as u32, |s| s.resume(now, heartbeat_ms))
                        .unwrap_or(false)
            });
            if !resumed {
                self.close(session);
            }
        }
        self.tick();
    }

    /// A planned upgrade of the gateway process, as the upgrader runs one: at the barrier
    /// nothing more is read and what the connections read reaches the sequencer; each
    /// connection writes what its session holds. Unless every logged-on session is then
    /// settled (the real upgrader waits for that, and calls the upgrade off if it does not
    /// come), the gateway serves on. Otherwise each logged-on session is handed over with its
    /// carried state, and the old process runs on for a few engine answers before it exits:
    /// what those deliver is stored in sessions already handed over, never written by it (the
    /// late delivery behind issue 11's gaps). The successor starts from everything the old
    /// process left (nothing is torn in a planned exit), continues each carried session, and
    /// writes first what was stored and not written. Checked at once: no counterparty whose
    /// session was carried sees a gap in the gateway's numbers, one that had everything the
    /// old process stored has everything the successor stored too, and each carried session
    /// expects the counterparty's next number where the old one did (a gap an earlier crash
    /// left in what the gateway read may still show after the upgrade: that one is the
    /// crash's, closed by resend as after any crash).
    fn upgrade_gateway(&mut self) {
        self.sequence_pending();
        self.serve_all();
        // What the old process wrote so far is read, so a gap it caused (a crash before) is
        // counted before the upgrade, not after.
        for session in 0..self.config.sessions {
            self.client_reads_all(session);
        }
        let carried: Vec<bool> = (0..self.config.sessions)
            .map(|session| {
                self.counterparties[session].connected
                    && self
                        .sessions
                        .with(session as u32, |s| s.state() == State::Active)
                        .unwrap_or(false)
            })
            .collect();
        let settled = self.pending.is_empty()
            && (0..self.config.sessions).all(|session| {
                !carried[session]
                    || self
                        .sessions
                        .with(session as u32, |s| s.settled())
                        .unwrap_or(false)
            });
        if !settled {
            self.log("gateway upgrade called off: what was in flight did not settle".into());
            return;
        }
        let gaps_before: Vec<u64> = self.counterparties.iter().map(|c| c.gaps).collect();
        let next_out = |sim: &Sim, session: usize| {
            sim.sessions
                .with(session as u32, |s| s.store().seq_num_next_out())
                .unwrap_or(0)
        };
        let in_step: Vec<bool> = (0..self.config.sessions)
            .map(|session| {
                let counterparty = &self.counterparties[session];
                carried[session]
                    && !counterparty.awaiting_resend()
                    && counterparty.next_in() == next_out(self, session)
            })
            .collect();
        let mut carries = Vec::new();
        let mut handed_over_at = Vec::new();
        let mut next_in = Vec::new();
        for (session, &carry) in carried.iter().enumerate() {
            carries.push(if carry {
                self.sessions.with(session as u32, |s| s.carry())
            } else {
                None
            });
            handed_over_at.push(next_out(self, session));
            next_in.push(
                self.sessions
                    .with(session as u32, |s| s.seq_num_next_in())
                    .unwrap_or(0),
            );
        }
        self.handed_over = true;
        let late = self.rng.below(4);
        self.log(format!(
            "gateway upgrade: {} sessions handed over; the old process takes {late} more engine answers",
            carries.iter().flatten().count()
        ));
        for _ in 0..late {
            let slot = self.rng.below(2) as usize;
            let count = 1 + self.rng.below(8) as usize;
            self.answer(slot, count);
        }
        self.handed_over = false;
        for (session, at) in handed_over_at.iter().enumerate() {
            self.report.stored_after_hand_over += next_out(self, session).saturating_sub(*at);
        }
        self.report.upgrades += 1;
        // The successor: the old process exited on its own, so nothing of what it wrote is lost.
        self.journal = self.journal.crash(CrashFate::KeepAll);
        self.cursor = self.cursor.crash(false);
        for slot in 0..self.engines.len() {
            self.unlink(slot);
        }
        let stores = (0..self.config.sessions)
            .map(|session| {
                self.sessions
                    .with(session as u32, |s| s.store().clone())
                    .unwrap_or_default()
            })
            .collect();
        self.sessions = gateway_sessions(stores);
        self.core = Sim::core(
            &self.sessions,
            &self.journal,
            &self.cursor,
            self.now,
            &self.config,
            self.delivery,
        );
        for (session, carry) in carries.into_iter().enumerate() {
            let now = self.now;
            let resumed = carry.is_some_and(|carry| {
                self.sessions
                    .with(session as u32, |s| s.resume_carried(now, &carry))
                    .unwrap_or(false)
            });
            if !resumed && self.counterparties[session].connected {
                self.close(session);
            }
            let expected = self
                .sessions
                .with(session as u32, |s| s.seq_num_next_in())
                .unwrap_or(0);
            if resumed && expected != next_in[session] && self.broken.is_none() {
                self.broken = Some(format!(
                    "{} handed over expecting MsgSeqNum {} and continued expecting {expected}",
                    client_comp_id(session),
                    next_in[session]
                ));
            }
        }
        self.tick();
        for session in (0..self.config.sessions).filter(|&s| carried[s]) {
            self.client_reads_all(session);
            let gaps = self.counterparties[session].gaps - gaps_before[session];
            if gaps > 0 && self.broken.is_none() {
                self.broken = Some(format!(
                    "{} saw {gaps} gap(s) in the gateway's numbers across a planned upgrade",
                    client_comp_id(session)
                ));
            }
            let (has, stored) = (
                self.counterparties[session].next_in(),
                next_out(self, session),
            );
            if in_step[session] && has != stored && self.broken.is_none() {
                self.broken = Some(format!(
                    "{} has the gateway's numbers up to {} after a planned upgrade, which stored up to {}",
                    client_comp_id(session),
                    has.saturating_sub(1),
                    stored.saturating_sub(1)
                ));
            }
        }
    }

    /// Before a crash: the sequencer takes the first waiting request, and the process dies
    /// inside that write. Either the record is torn (cut at reopen: as if never written) or it
    /// landed and the kill came before the session's store recorded it as received; in both
    /// cases the store still expects the message, as `Session::confirm_in` promises. Returns
    /// the journal's fate, `None` when nothing was written.
    fn crash_while_journaling(&mut self) -> Option<CrashFate> {
        if self.pending.is_empty() || !self.core.accepting() {
            return None;
        }
        let request = self.pending.remove(0);
        let session = request.session;
        let fix_seq = request.message.uint(crate::fix::tags::MSG_SEQ_NUM).ok()?;
        let before = self.journal.last_seq();
        self.core.handle_requests(self.now, &mut vec![request]);
        if self.journal.last_seq() != before + 1 {
            return None;
        }
        self.sessions.with(session, |s| {
            let expected = s.store().seq_num_next_in().min(fix_seq);
            let _ = s.store_mut().set_seq_num_next_in(expected);
        });
        if self.rng.chance(50) && self.config.crash_before_confirm {
            Some(CrashFate::KeepAll)
        } else {
            self.report.torn_writes += 1;
            Some(CrashFate::LoseLast)
        }
    }

    fn unlink(&mut self, slot: usize) {
        self.engines[slot].linked = false;
        self.engines[slot].inbox.clear();
    }

    // ----- the driver's part ------------------------------------------------------------------

    /// Fires the core's timer now; engines that are not hung say they are alive first.
    fn tick(&mut self) {
        let alive = (self.engines.iter())
            .map(|e| (e.linked && !e.silent).then(|| e.engine.last_input_seq()));
        engines_alive(&mut self.core, self.now, alive);
        self.core.handle_timeout(self.now);
        let now = self.now;
        for session in 0..self.config.sessions {
            self.sessions.with(session as u32, |s| {
                if s.next_timeout().is_some_and(|at| at <= now) {
                    s.handle_timeout(now);
                }
            });
        }
        self.pump();
    }

    /// The earliest timer of the core and the gateway's sessions.
    fn next_timeout(&self) -> Timestamp {
        (0..self.config.sessions)
            .filter_map(|session| {
                self.sessions
                    .with(session as u32, |s| s.next_timeout())
                    .flatten()
            })
            .fold(self.core.next_timeout(), Timestamp::min)
    }

    /// Time passes: timers fire on the way, and the network, fast next to them, carries
    /// everything in flight.
    fn advance(&mut self, ms: u64) {
        let until = self.now.plus_millis(ms);
        for _ in 0..constants::SIM_PUMP_STEPS_MAX {
            let next = self.next_timeout();
            if next > until {
                break;
            }
            self.now = next.max(self.now);
            self.tick();
            self.carry_everything();
        }
        self.now = until;
        self.tick();
        self.carry_everything();
    }

    /// Carries out what the core asked, as the driver does.
    fn pump(&mut self) {
        // What the last wake-up wrote and did not hand back is handed back first, in order.
        for delivery in std::mem::take(&mut self.unacknowledged) {
            self.core.handle_delivered(self.now, delivery);
        }
        let (queue, unacknowledged) = if self.healed {
            (false, false)
        } else {
            let draw = self.rng.below(100);
            let queue = draw < constants::SIM_DELIVERIES_QUEUED_PERCENT;
            let unacknowledged = !queue
                && draw
                    < constants::SIM_DELIVERIES_QUEUED_PERCENT
                        + constants::SIM_DELIVERIES_UNACKNOWLEDGED_PERCENT;
            (queue, unacknowledged)
        };
        for _ in 0..constants::SIM_PUMP_STEPS_MAX {
            self.core.handle_catch_up(self.now);
            // As the driver does: each delivery into its sessions, then back to the core.
            while !queue && let Some(delivery) = self.core.poll_delivery() {
                delivery.apply(self.now, &self.sessions);
                if unacknowledged {
                    self.unacknowledged.push(delivery);
                } else {
                    self.core.handle_delivered(self.now, delivery);
                }
            }
            while let Some(event) = self.core.poll_event() {
                match event {
                    CoreEvent::GateBreached(_) => self.rollback_due = true,
                    CoreEvent::Record(CoreRecord::OutputsWithheld { input_seq, .. }) => {
                        self.withheld.insert(input_seq);
                    }
                    _ => {}
                }
            }
            if std::mem::take(&mut self.rollback_due) {
                // As the control plane does: audit (not modelled) and roll the canary back.
                self.log("gate breached: the gateway rolls the canary back".into());
                self.command_as(CoreRequest::Rollback, true);
            }
            while let Some((_, reply)) = self.core.poll_reply() {
                self.on_reply(reply);
            }
            let Some(LinkTransmit { slot, command }) = self.core.poll_link() else {
                self.serve_all();
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
                        executable_sha256: if self.config.one_build {
                            constants::SIM_EXECUTABLE_SHA256.into()
                        } else {
                            String::new()
                        },
                        auth_nonce: Vec::new(),
                    };
                    if engine.silent {
                        self.core
                            .handle_connect_failed(self.now, slot, "handshake timed out");
                    } else {
                        let attached = self.core.handle_attached(self.now, slot, &hello);
                        self.engines[slot].linked = attached;
                        self.engines[slot].rejoining =
                            attached && hello.last_input_seq == 0 && self.journal.last_seq() > 0;
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
                    if std::mem::take(&mut engine.rejoining) {
                        self.report.rejoins_restored += 1;
                    }
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
        if input.seq == 1 && std::mem::take(&mut engine.rejoining) {
            self.report.rejoins_replayed += 1;
        }
        let frame = if input.seq == last + 1 {
            let mut outputs = Vec::new();
            engine.engine.apply(input, &mut outputs);
            engine.answered.insert(input.seq, outputs.clone());
            if self.delivery == CanaryDelivery::Verified
                && self.core.verified_canary_of(input.seq) == Some(slot)
                && wrong(&mut outputs)
            {
                // A faulty build: its answers to the inputs it owns as a verified canary are
                // wrong (its book is right, so only delivering them could do harm).
                self.report.wrong_answers += 1;
                let line = format!(
                    "{} answers input {} wrongly",
                    self.engines[slot].name, input.seq
                );
                self.log(line);
            }
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

/// Makes `outputs` wrong the way the simulation's faulty canary does: every execution report
/// names [`constants::SIM_WRONG_ORDER_ID`]. False if there was nothing to make wrong.
fn wrong(outputs: &mut [Output]) -> bool {
    let mut changed = false;
    for output in outputs {
        if let Report::Execution(report) = &mut output.report {
            report.order_id = constants::SIM_WRONG_ORDER_ID;
            changed = true;
        }
    }
    changed
}
