//! The sequencer, the router and the outbox, in one task.
//!
//! Every business request from a session is given the next input sequence number and a
//! timestamp that never goes backwards, and is appended to the input journal before any engine
//! sees it (invariant 2). Every attached engine receives every input: the authoritative one's
//! outputs are delivered, a standby's are compared with them (shadow comparison) and never
//! sent. Each output is keyed by (input seq, index) and written into its session exactly once
//! (invariant 4): the outbox cursor records the last input whose outputs are all delivered.
//!
//! Authority moves in two ways. A planned switch holds new requests (they wait in the queue, they
//! are not rejected), waits until both engines have answered every input up to the barrier, and
//! moves authority there: outputs for inputs at or below the barrier came from the old engine,
//! later ones come from the new (invariant 5). A failover happens when the authoritative engine
//! dies or falls silent: the standby takes authority at the outbox cursor, and outputs it had
//! already produced for undelivered inputs are delivered from what it sent as a shadow.
//!
//! An engine that attaches empty is brought to the authoritative engine's state by a snapshot
//! and a replay of the journal after it; one that kept its state (a gateway restart) continues
//! from its last input. With no engine attached, sessions stay up and new requests are answered
//! with BusinessMessageReject (application not available).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::acceptor::{Inbound, Sessions};
use super::cursor::{CursorError, OutboxCursor};
use super::input_journal::{InputJournal, JournalRead};
use super::journal::{Journal, JournalConfig, JournalError};
use super::status::{
    CanaryStatus, CoreStatus, DivergenceSample, EngineRole, EngineStatus, GateBreach, GateStatus,
    SessionStatus, ShadowStatus, SwitchReport, SwitchScope,
};
use super::translate;
use crate::constants;
use crate::engine::{ExecType, Input, Output, Report, Request, Symbol};
use crate::fix::store::SessionStore;
use crate::fix::tags::BusinessRejectReason;
use crate::link::{self, Frame, LinkAddr, Outputs};
use crate::time::Timestamp;

/// Text of the BusinessMessageReject (380=4) for a message refused because the gateway's disk
/// is full: the cause, for the counterparty's support desk, without naming any path.
const DISK_FULL_TEXT: &str = "gateway disk full: new business refused until space returns";

/// Why the core cannot run at all (start-up failures; runtime link failures are handled).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The journal could not be opened or read: nothing can be sequenced safely.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The outbox cursor could not be opened.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// A journal record could not be decoded back into an input.
    #[error("journal record {seq}: {reason}")]
    Record {
        /// The record's input seq.
        seq: u64,
        /// What was wrong.
        reason: String,
    },
}

/// Where the core keeps its state and finds its engines.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The engines' link addresses; the first to attach takes authority.
    pub engines: Vec<LinkAddr>,
    /// The input journal's directory (the outbox cursor lives beside it).
    pub journal_dir: PathBuf,
    /// Journal segment size and durability.
    pub journal: JournalConfig,
    /// Silence from the authoritative engine, with inputs unanswered, after which it is declared
    /// dead and the standby takes over.
    pub failover_timeout: Duration,
    /// The venue's symbols (from `[engine] instruments`): a canary given as a share picks from
    /// these.
    pub symbols: Vec<Symbol>,
    /// Limits that roll a canary back.
    pub gates: GateConfig,
    /// The engine link's shared secret (`[link] secret_file`), proven at every handshake.
    pub link_secret: Option<link::LinkSecret>,
}

/// Limits on what a canary engine may do worse than the engine it is compared with, over the
/// same inputs. From `[control.gates]`; defaults in [`constants`].
#[derive(Clone, Debug, PartialEq)]
pub struct GateConfig {
    /// Share of compared canary inputs whose answers may differ from the baseline engine's.
    pub error_rate_max: f64,
    /// How much the canary's reject share may exceed the baseline's on the same inputs.
    pub reject_rate_increase_max: f64,
    /// Canary inputs compared before the reject-rate gate judges (a share of a handful of
    /// orders is noise).
    pub reject_min_samples: u64,
    /// How many times the baseline's p99 answer latency the canary's may be.
    pub latency_p99_ratio_max: f64,
    /// Microseconds the canary's p99 may exceed the baseline's whatever the ratio: below this,
    /// a difference is scheduling noise on the host, not a slower build.
    pub latency_slack_us: u64,
    /// Canary inputs answered by both before the latency gate judges.
    pub latency_min_samples: u64,
    /// How far behind a standby may be for a switch onto it to start (the pause the switch
    /// causes is bounded by this lag).
    pub switch_lag_max_inputs: u64,
}

impl Default for GateConfig {
    fn default() -> GateConfig {
        GateConfig {
            error_rate_max: constants::GATE_ERROR_RATE_MAX_DEFAULT,
            reject_rate_increase_max: constants::GATE_REJECT_RATE_INCREASE_MAX_DEFAULT,
            reject_min_samples: constants::GATE_MIN_SAMPLES_DEFAULT,
            latency_p99_ratio_max: constants::GATE_LATENCY_P99_RATIO_MAX_DEFAULT,
            latency_slack_us: constants::GATE_LATENCY_SLACK_US_DEFAULT,
            latency_min_samples: constants::GATE_MIN_SAMPLES_DEFAULT,
            switch_lag_max_inputs: constants::SWITCH_LAG_MAX_INPUTS,
        }
    }
}

impl GateConfig {
    /// The canary p99 the latency gate tolerates against a baseline p99: one formula for the
    /// gate and for status, so what an operator watches is what trips.
    pub fn latency_limit_us(&self, baseline_p99_us: u64) -> f64 {
        (baseline_p99_us as f64 * self.latency_p99_ratio_max)
            .max(baseline_p99_us.saturating_add(self.latency_slack_us) as f64)
    }
}

/// What the core tells the control plane happened on its own (not as the answer to a command),
/// so it reaches the audit log.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreEvent {
    /// The authoritative (or canary) engine died or fell silent; authority moved.
    Failover(SwitchReport),
    /// A canary gate tripped; the control plane audits it and asks for the rollback.
    GateBreached(GateBreach),
    /// A planned switch completed after the control plane stopped waiting for it.
    Completed(SwitchReport),
    /// Anything else worth a record that belongs to no change: a divergence or its clearing, a
    /// halt, withheld outputs, an engine attaching.
    Record(CoreRecord),
}

/// Something worth a record in the audit log that belongs to no change. The control plane
/// turns each into its own audit event; the core does not know the audit log's types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreRecord {
    /// An engine answered differently from the engine whose answers were delivered: its book on
    /// these symbols is not what the counterparties were told.
    Diverged {
        /// The engine.
        engine: String,
        /// The symbols newly diverged.
        symbols: Vec<String>,
    },
    /// The engine was restored from a snapshot: its divergence is gone (all symbols when empty).
    DivergenceCleared {
        /// The engine.
        engine: String,
        /// The symbols; empty for all.
        symbols: Vec<String>,
    },
    /// Symbols halted: their owner's book differs from what the counterparties were told.
    Halted {
        /// The symbols.
        symbols: Vec<String>,
    },
    /// Outputs of an input on a halted symbol, not delivered, kept for reconciliation.
    OutputsWithheld {
        /// The input.
        input_seq: u64,
        /// Its symbol.
        symbol: String,
        /// The outputs as text.
        outputs: String,
    },
    /// An engine attached: which build and which bytes it runs.
    EngineAttached {
        /// Its name.
        name: String,
        /// Its build version.
        build_version: String,
        /// SHA-256 of its executable, as it reported it.
        executable_sha256: String,
    },
}

/// What the control plane may ask of the core, after policy and the audit log allowed it: the
/// part of an operator's request the core acts on, without the operator or the change (those
/// are the control plane's business).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreRequest {
    /// The core's part of status.
    Status,
    /// Move authority for every symbol to the standby at a barrier (completes a canary).
    Switch,
    /// End a canary, or return authority to the engine that had it before the last switch.
    Rollback,
    /// Move authority for a share of the symbols, or for the named ones, to the standby.
    Canary {
        /// Share of the configured symbols, 1 to 100.
        percent: Option<u8>,
        /// Or exactly these symbols.
        symbols: Vec<String>,
    },
    /// Whether `engine` may be restarted from another build.
    Stage {
        /// The engine's name.
        engine: String,
    },
    /// Trade again on halted symbols: the operator's word that they were reconciled.
    Resume {
        /// The symbols.
        symbols: Vec<String>,
    },
}

/// The core's answer to a [`CoreRequest`].
#[derive(Clone, Debug, PartialEq)]
pub enum CoreReply {
    /// The core's part of status.
    Status(Box<CoreStatus>),
    /// A switch, canary or rollback completed at its barrier.
    Switched(SwitchReport),
    /// The engine may be restarted from the artifact.
    Staged {
        /// The engine.
        engine: String,
        /// The artifact's SHA-256 it will run.
        artifact_sha256: String,
    },
    /// Halted symbols trade again.
    Resumed {
        /// The symbols resumed.
        symbols: Vec<String>,
    },
    /// Not done; the text says why, in words an operator can act on.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A request for the core. The core answers every command it takes exactly once, through
/// [`Core::poll_reply`] under the [`CommandId`] it was handed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreCommand {
    /// What to do.
    pub request: CoreRequest,
    /// The SHA-256 of the executable the engine taking authority must run: the artifact of the
    /// approved change the command carries out. `None`: no change names one.
    pub expect_sha256: Option<String>,
    /// A rollback that may only end a canary (the gateway's own, after a gate breach): with no
    /// canary running it is refused rather than moving all authority back.
    pub canary_only: bool,
}

/// Names a command so its answer, which may come much later (a switch answers at its
/// barrier), finds whoever asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u64);

/// What the core asks the driver to do on engine slot `slot`'s link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkTransmit {
    /// The configured engine it is for.
    pub slot: usize,
    /// What to do.
    pub command: LinkCommand,
}

/// One action on an engine link. The driver carries them out in order; a write that fails or
/// times out is reported back with [`Core::handle_lost`].
#[derive(Clone, Debug, PartialEq)]
pub enum LinkCommand {
    /// Try to connect; the outcome comes back as [`Core::handle_attached`] or
    /// [`Core::handle_connect_failed`].
    Connect,
    /// Send these inputs, in order.
    Inputs(Vec<Input>),
    /// Ask for a snapshot (of the authoritative engine, for a joining standby).
    RequestSnapshot,
    /// Restore the engine from these snapshot bytes.
    Restore(Vec<u8>),
    /// Nothing else was sent for a while: say the gateway is alive and how far the journal is.
    Heartbeat {
        /// The journal's last seq.
        last_input_seq: u64,
    },
    /// End the link with a Close naming why (the gateway is stopping).
    Close {
        /// Why.
        reason: String,
    },
    /// The core gave up on this connection (silent, out of step, refused): drop it without a
    /// word and ignore anything still arriving on it.
    Drop,
}

/// A connected engine.
struct Connection {
    /// The engine's name from its Hello.
    name: String,
    /// Its build from its Hello.
    build_version: String,
    /// SHA-256 of its executable from its Hello: checked against a change's artifact before it
    /// is given authority.
    executable_sha256: String,
    /// Highest input seq sent on this connection.
    sent_through: u64,
    /// Highest input seq answered on this connection.
    answered_through: u64,
    /// While a snapshot is being fetched for it and restored, it gets no inputs.
    restoring: bool,
    /// Reads the journal while the engine is behind it.
    catch_up: Option<Box<dyn JournalRead + Send>>,
    /// When the engine last sent anything.
    last_heard: Timestamp,
    /// When the core last asked the driver to send it anything: a link idle for the heartbeat
    /// interval gets a heartbeat.
    last_sent: Timestamp,
}

impl Connection {
    /// Inputs sent and not yet answered. Saturating: after a failover resend the counters are
    /// rewound while answers to the earlier sends are still arriving.
    fn in_flight(&self) -> u64 {
        self.sent_through.saturating_sub(self.answered_through)
    }
}

/// One configured engine address and its connection, if any.
struct EngineSlot {
    /// Where it listens.
    addr: LinkAddr,
    /// The live connection.
    connection: Option<Connection>,
    /// Earliest time to try connecting again.
    retry_at: Timestamp,
    /// A connection attempt was asked of the driver and has not come back.
    connecting: bool,
    /// Inputs whose outputs were delivered while this slot owned them.
    delivered_inputs: u64,
}

/// What a pending switch will move when its barrier is reached.
#[derive(Clone, Debug, PartialEq)]
enum SwitchKind {
    /// Every symbol to `to`.
    All,
    /// These symbols to `to`, the rest stay.
    CanaryStart(Vec<Symbol>),
    /// The canary's symbols back to the authoritative engine.
    CanaryEnd,
}

/// A canary: one engine owns some symbols, the authoritative engine the rest.
struct Canary {
    /// The engine that owns `symbols`.
    slot: usize,
    /// Sorted, so membership is a binary search per input.
    symbols: Vec<Symbol>,
    /// First input sequenced under the canary.
    since_seq: u64,
    /// What the gates have seen.
    gates: GateStatus,
    /// Answer latency of the canary engine on its inputs, µs.
    canary_latency: hdrhistogram::Histogram<u64>,
    /// Answer latency of the authoritative engine on the same inputs, µs.
    baseline_latency: hdrhistogram::Histogram<u64>,
    /// When the breach was last handed to the control plane: it is handed again every second
    /// until the canary ends, so a lost event or a refused rollback is retried.
    breach_emitted: Option<Timestamp>,
}

impl Canary {
    fn covers(&self, symbol: &Symbol) -> bool {
        self.symbols.binary_search(symbol).is_ok()
    }

    fn symbol_names(&self) -> Vec<String> {
        names(&self.symbols)
    }
}

/// Symbols as the text operators and the audit log read.
fn names<'a>(symbols: impl IntoIterator<Item = &'a Symbol>) -> Vec<String> {
    symbols.into_iter().map(|s| s.as_str().to_owned()).collect()
}

/// An engine's executable hash for a message, or what its absence means.
fn reported(sha256: &str) -> &str {
    if sha256.is_empty() {
        "(not reported)"
    } else {
        sha256
    }
}

/// The symbol an input is about: authority is decided per symbol.
fn input_symbol(request: &Request) -> &Symbol {
    match request {
        Request::New(order) => &order.symbol,
        Request::Cancel(cancel) => &cancel.symbol,
        Request::Replace(replace) => &replace.symbol,
    }
}

/// Reports that tell a counterparty no: a rejected order, a refused cancel or replace.
fn rejects(outputs: &[Output]) -> u64 {
    outputs
        .iter()
        .filter(|output| match &output.report {
            Report::Execution(report) => report.exec_type == ExecType::Rejected,
            Report::CancelReject(_) => true,
        })
        .count() as u64
}

/// The `count` symbols a canary of `percent` takes: ranked by the SHA-256 of their names, so the
/// choice is the same on every host and build and does not depend on configuration order.
pub fn canary_symbols(symbols: &[Symbol], percent: u8) -> Vec<Symbol> {
    use sha2::Digest as _;
    let mut ranked: Vec<([u8; 32], Symbol)> = symbols
        .iter()
        .map(|symbol| (sha2::Sha256::digest(symbol.as_bytes()).into(), *symbol))
        .collect();
    ranked.sort();
    ranked.dedup_by(|a, b| a.1 == b.1);
    let count = (ranked.len() * usize::from(percent.min(100)))
        .div_ceil(100)
        .max(1);
    let mut chosen: Vec<Symbol> = ranked.into_iter().take(count).map(|(_, s)| s).collect();
    chosen.sort();
    chosen
}

/// A planned switch waiting for its barrier.
struct PendingSwitch {
    /// Slot that will take authority.
    to: usize,
    /// Last input sequenced under the old authority.
    barrier: u64,
    /// When inputs started being held.
    started: Timestamp,
    /// What moves at the barrier.
    kind: SwitchKind,
    /// Asked for as a rollback: returning authority uses up the rollback target, so a second
    /// rollback cannot move it forward again without the approval a switch needs.
    rollback: bool,
    /// Who to answer.
    reply: Option<CommandId>,
}

/// Outputs of one input from both engines, until compared (and, for the standby's, until
/// delivered or no longer needed for a failover).
#[derive(Default)]
struct ShadowEntry {
    /// The authoritative engine's outputs.
    authoritative: Option<Vec<Output>>,
    /// The standby's outputs.
    standby: Option<Vec<Output>>,
    /// The slot the standby outputs came from, to hold a divergence against.
    standby_slot: Option<usize>,
    /// Whether the comparison was counted (or can no longer be made).
    compared: bool,
}

/// The sequencer, router and outbox, as a state machine without I/O (invariant 10): inputs come
/// in through `handle_*` with the time, what to send to engines comes out of
/// [`Core::poll_link`], events for the audit log out of [`Core::poll_event`], answers to
/// commands out of [`Core::poll_reply`], and [`Core::next_timeout`] says when to call
/// [`Core::handle_timeout`]. Outputs go into the sessions, which are state machines too. The
/// driver (`gateway::driver`) owns sockets, tasks and the one timer. Build with [`Core::open`].
pub struct Core<S: SessionStore, J: InputJournal = Journal> {
    /// Where answers go.
    sessions: Arc<Sessions<S>>,
    /// Paths and settings.
    config: CoreConfig,
    /// The source of truth for inputs.
    journal: J,
    /// Last input whose outputs are all delivered.
    cursor: OutboxCursor,
    /// Time of the last sequenced input: stamps never go backwards, even if the wall clock does.
    last_time: Timestamp,
    /// Configured engines.
    engines: Vec<EngineSlot>,
    /// Slot whose outputs are delivered.
    authority: Option<usize>,
    /// Slot that had authority before the last switch (the rollback target), with the SHA-256
    /// of the executable it ran then: a rollback returns to that build, not to whatever was
    /// started in the slot since.
    previous_authority: Option<(usize, String)>,
    /// A planned switch waiting for its barrier.
    pending_switch: Option<PendingSwitch>,
    /// Set when authority moved; cleared by the first input sequenced after, to measure the
    /// pause.
    switch_started: Option<(Timestamp, SwitchReport)>,
    /// The last completed switch.
    last_switch: Option<SwitchReport>,
    /// Switches and failovers since start.
    switches: u64,
    /// Outputs per input seq, for shadow comparison and failover.
    shadow: BTreeMap<u64, ShadowEntry>,
    /// The authoritative engine's outputs that arrived ahead of an earlier input's (after a
    /// failover the earlier ones are asked again); delivered strictly in input order.
    undelivered: BTreeMap<u64, Vec<Output>>,
    /// Shadow counters.
    shadow_status: ShadowStatus,
    /// (seq, stamp, symbol) of recent inputs, for lag in time and to know which book a
    /// divergence is about.
    recent: VecDeque<(u64, Timestamp, Symbol)>,
    /// The time of the call being handled: every decision reads it here, never from a clock.
    now: Timestamp,
    /// When housekeeping (silence, reconnects, heartbeats, gates) runs next.
    next_housekeeping: Timestamp,
    /// What the driver is to send on engine links, in order.
    transmits: VecDeque<LinkTransmit>,
    /// Events for the control plane, in order; bounded by [`constants::CONTROL_EVENTS_MAX`].
    events: VecDeque<CoreEvent>,
    /// Answers to commands, in order.
    replies: VecDeque<(CommandId, CoreReply)>,
    /// When the log last said that no engine is reachable (or when the core started): an
    /// operator whose engines are all unreachable sees it every
    /// [`constants::ENGINE_ABSENT_WARN_MS`], not once per reconnect attempt.
    engine_absent_warned: Timestamp,
    /// Set while the input journal cannot get disk space: until then new business is refused
    /// without touching the disk; at this instant the allocation is tried again.
    disk_full_retry_at: Option<Timestamp>,
    /// Set while a session store is short of space: when the stores are next asked to grow.
    stores_retry_at: Option<Timestamp>,
    /// Reused to encode journal payloads.
    payload: Vec<u8>,
    /// The running canary, if any.
    canary: Option<Canary>,
    /// Inputs sequenced for the canary engine's symbols and not yet delivered and compared: their
    /// outputs are delivered from the canary engine. Every other input belongs to `authority`.
    canary_owned: BTreeSet<u64>,
    /// Symbols whose owner's book differs from what the counterparties were told (a canary or
    /// standby that answered differently took or returned them): requests for them are refused,
    /// never sequenced, and outputs still arriving for them are withheld, until an operator
    /// resumes them. Carried across restarts through the audit log.
    halted: BTreeSet<Symbol>,
    /// By engine name: symbols on which that engine answered differently from the engine whose
    /// answers were delivered, so its book there is not what the counterparties were told and
    /// it must not be given authority for them. Engines keep their books across gateway
    /// restarts, so this is carried across restarts too (through the audit log); it is cleared
    /// when the engine is restored from a snapshot, or by an operator's resume.
    diverged: BTreeMap<String, BTreeSet<Symbol>>,
}

/// What a restarted gateway must remember from before: halted symbols and engines whose books
/// diverged. The control plane rebuilds it from the audit log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// Halted symbols.
    pub halted: Vec<String>,
    /// Engine name and the symbols it diverged on.
    pub diverged: Vec<(String, Vec<String>)>,
}

impl<S: SessionStore + Send + 'static> Core<S, Journal> {
    /// Opens the memory-mapped journal and the cursor in the configured directory; `now` is
    /// the driver's clock at start.
    pub fn open(
        sessions: Arc<Sessions<S>>,
        config: CoreConfig,
        now: Timestamp,
    ) -> Result<Core<S>, CoreError> {
        let journal = Journal::open(&config.journal_dir, config.journal)?;
        let cursor = OutboxCursor::open(&config.journal_dir.join("outbox.cursor"))?;
        Ok(Core::with_journal(sessions, config, journal, cursor, now))
    }
}

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    /// A core over `journal` and `cursor` as they are (after a crash, as they were left).
    pub fn with_journal(
        sessions: Arc<Sessions<S>>,
        config: CoreConfig,
        journal: J,
        cursor: OutboxCursor,
        now: Timestamp,
    ) -> Core<S, J> {
        // Stamps never go backwards, also across a restart on a clock that is behind.
        let last_time = journal.last_time();
        tracing::info!(
            journal_last_seq = journal.last_seq(),
            delivered_through = cursor.get(),
            "sequencer ready"
        );
        let engines = config
            .engines
            .iter()
            .map(|addr| EngineSlot {
                addr: addr.clone(),
                connection: None,
                retry_at: now,
                connecting: false,
                delivered_inputs: 0,
            })
            .collect();
        Core {
            now,
            next_housekeeping: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            replies: VecDeque::new(),
            engine_absent_warned: now,
            disk_full_retry_at: None,
            stores_retry_at: None,
            sessions,
            config,
            journal,
            cursor,
            last_time,
            engines,
            authority: None,
            previous_authority: None,
            pending_switch: None,
            switch_started: None,
            last_switch: None,
            switches: 0,
            shadow: BTreeMap::new(),
            undelivered: BTreeMap::new(),
            shadow_status: ShadowStatus::default(),
            recent: VecDeque::with_capacity(constants::RECENT_INPUTS_MAX),
            payload: Vec::with_capacity(256),
            canary: None,
            canary_owned: BTreeSet::new(),
            halted: BTreeSet::new(),
            diverged: BTreeMap::new(),
        }
    }

    /// Starts from what the gateway knew before a restart (see [`Carried`]).
    pub fn with_carried(mut self, carried: &Carried) -> Core<S, J> {
        let symbol = |name: &String| Symbol::try_from_bytes(name.as_bytes());
        self.halted = carried.halted.iter().filter_map(symbol).collect();
        self.diverged = carried
            .diverged
            .iter()
            .map(|(engine, symbols)| (engine.clone(), symbols.iter().filter_map(symbol).collect()))
            .filter(|(_, symbols): &(String, BTreeSet<Symbol>)| !symbols.is_empty())
            .collect();
        if !self.halted.is_empty() || !self.diverged.is_empty() {
            tracing::warn!(halted = ?carried.halted, diverged = ?carried.diverged, "carried over from before the restart");
        }
        self
    }

    /// Queues `event` for the control plane; false if the queue is full (the driver has not
    /// taken the earlier ones), in which case it is not audited and says so.
    fn emit(&mut self, event: CoreEvent) -> bool {
        if self.events.len() >= constants::CONTROL_EVENTS_MAX {
            tracing::error!(
                ?event,
                "control plane not taking events; this one is not audited"
            );
            return false;
        }
        self.events.push_back(event);
        true
    }

    /// Queues `command` for engine slot `slot`'s link.
    fn transmit(&mut self, slot: usize, command: LinkCommand) {
        if let Some(connection) = self.engines[slot].connection.as_mut() {
            connection.last_sent = self.now;
        }
        self.transmits.push_back(LinkTransmit { slot, command });
    }

    /// Queues the answer to command `id`.
    fn reply(&mut self, id: CommandId, reply: CoreReply) {
        self.replies.push_back((id, reply));
    }

    /// The engine whose outputs for input `seq` are delivered: the canary engine for the inputs
    /// sequenced for its symbols, the authoritative engine for all others.
    fn owner_of(&self, seq: u64) -> Option<usize> {
        match &self.canary {
            Some(canary) if self.canary_owned.contains(&seq) => Some(canary.slot),
            _ => self.authority,
        }
    }

    // ----- the driver's interface ------------------------------------------------------------

    /// Whether the core takes new requests now: not while a switch holds them at its barrier,
    /// nor while an owning engine's in-flight window is full. Held requests wait in the
    /// driver's queue; they are not refused.
    pub fn accepting(&self) -> bool {
        self.pending_switch.is_none() && self.room_for_inputs()
    }

    /// Whether an engine is behind the journal and has room in its window: the driver calls
    /// [`Core::handle_catch_up`] again without waiting for anything else.
    pub fn lagging(&self) -> bool {
        self.any_catching_up()
    }

    /// Sends the next journal batch to every engine behind the journal. The driver calls it
    /// once per wake-up, before waiting.
    pub fn handle_catch_up(&mut self, now: Timestamp) {
        self.now = now;
        self.catch_up();
    }

    /// Stamps, journals and fans out a batch of requests from the sessions (drained from
    /// `batch`).
    pub fn handle_requests(&mut self, now: Timestamp, batch: &mut Vec<Inbound>) {
        self.now = now;
        self.sequence(batch);
        self.try_complete_switch();
    }

    /// A frame arrived from the engine in `slot` (on its current connection; the driver drops
    /// frames of a connection it was told to drop).
    pub fn handle_frame(&mut self, now: Timestamp, slot: usize, frame: Frame) {
        self.now = now;
        self.on_frame(slot, frame);
        self.try_complete_switch();
    }

    /// The connection attempt to `slot` succeeded with `hello`. Returns false if the core
    /// refuses the engine (it claims inputs the journal does not hold): the driver drops the
    /// link.
    pub fn handle_attached(&mut self, now: Timestamp, slot: usize, hello: &link::Hello) -> bool {
        self.now = now;
        self.engines[slot].connecting = false;
        let attached = self.attach(slot, hello);
        self.try_complete_switch();
        attached
    }

    /// The connection attempt to `slot` failed; another is made after the reconnect delay.
    pub fn handle_connect_failed(&mut self, now: Timestamp, slot: usize, error: &str) {
        self.now = now;
        self.engines[slot].connecting = false;
        tracing::debug!(engine = %self.engines[slot].addr, %error, "engine not reachable");
        self.warn_if_no_engine(slot, error);
    }

    /// The link to `slot` failed (a read or write error, a write that timed out).
    pub fn handle_lost(&mut self, now: Timestamp, slot: usize, error: &str) {
        self.now = now;
        if let Some(connection) = self.engines[slot].connection.as_ref() {
            tracing::warn!(engine = %connection.name, %error, "engine link lost");
        }
        self.lose(slot);
        self.try_complete_switch();
    }

    /// An operator's command, already allowed and audited by the control plane; answered
    /// through [`Core::poll_reply`] under `id`.
    pub fn handle_command(&mut self, now: Timestamp, id: CommandId, command: CoreCommand) {
        self.now = now;
        self.on_control(id, command);
        self.try_complete_switch();
    }

    /// Runs what is due at `now`: silence detection, reconnects, heartbeats, the gates.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = now;
        if now >= self.next_housekeeping {
            self.next_housekeeping =
                now.plus(Duration::from_millis(constants::LINK_POLL_INTERVAL_MS));
            self.housekeeping();
        }
        self.try_complete_switch();
    }

    /// The gateway is stopping: the journal is flushed and every engine link gets a Close.
    pub fn handle_shutdown(&mut self, now: Timestamp) {
        self.now = now;
        if let Err(error) = self.journal.flush() {
            tracing::error!(%error, "journal flush at shutdown");
        }
        for slot in 0..self.engines.len() {
            if self.engines[slot].connection.is_some() {
                self.transmit(
                    slot,
                    LinkCommand::Close {
                        reason: "gateway shutting down".into(),
                    },
                );
            }
        }
    }

    /// When [`Core::handle_timeout`] is next due.
    pub fn next_timeout(&self) -> Timestamp {
        self.next_housekeeping
    }

    /// The next thing to do on an engine link.
    pub fn poll_link(&mut self) -> Option<LinkTransmit> {
        self.transmits.pop_front()
    }

    /// The next event for the control plane's audit log.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// The next answer to a command.
    pub fn poll_reply(&mut self) -> Option<(CommandId, CoreReply)> {
        self.replies.pop_front()
    }

    /// How many engines are configured (slots `0..engine_count()`).
    pub fn engine_count(&self) -> usize {
        self.engines.len()
    }

    /// The address of engine slot `slot`, for the driver to connect to.
    pub fn engine_addr(&self, slot: usize) -> &LinkAddr {
        &self.engines[slot].addr
    }

    /// The engine link's shared secret, for the driver's handshakes.
    pub fn link_secret(&self) -> Option<&link::LinkSecret> {
        self.config.link_secret.as_ref()
    }

    // ----- housekeeping ------------------------------------------------------------------------

    /// Whether some session store is short of the room it keeps ahead of need (its disk is
    /// full). While one is, every store is asked to grow again once per
    /// [`constants::DISK_FULL_RETRY_MS`], so business resumes by itself when space returns, even
    /// if the short session is idle.
    fn stores_short_of_space(&mut self) -> bool {
        if crate::mmap::files_short_of_space() > 0 {
            let now = self.now;
            match self.stores_retry_at {
                // Just found short: the store itself tried a moment ago.
                None => {
                    crate::gateway::disk::set_full(crate::mmap::free_bytes(
                        &self.config.journal_dir,
                    ));
                }
                Some(at) if at <= now => {
                    for id in 0..self.sessions.len() {
                        let _ = self
                            .sessions
                            .with(id as crate::engine::SessionId, |session| {
                                session.store_mut().keep_headroom()
                            });
                    }
                }
                Some(_) => {}
            }
            if crate::mmap::files_short_of_space() > 0 {
                if self.stores_retry_at.is_none_or(|at| at <= now) {
                    self.stores_retry_at =
                        Some(now.plus(Duration::from_millis(constants::DISK_FULL_RETRY_MS)));
                }
                return true;
            }
        }
        if self.stores_retry_at.take().is_some() && self.disk_full_retry_at.is_none() {
            crate::gateway::disk::set_space_returned();
            tracing::info!(
                "disk space returned: session stores have room again and new business is accepted"
            );
        }
        false
    }

    /// The journal could not get disk space for the next input: refuse new business (sessions
    /// stay up; nothing journaled is touched) and try the allocation again after
    /// [`constants::DISK_FULL_RETRY_MS`]. The ERROR names the file and the free space once per
    /// episode, so a full disk is one clear line, not one per order. Returns the error's text.
    fn disk_full(&mut self, error: &JournalError) -> String {
        let path = error.path().unwrap_or_default();
        let free_bytes = crate::mmap::free_bytes(&self.config.journal_dir);
        if self.disk_full_retry_at.is_none() {
            tracing::error!(
                path,
                free_bytes = free_bytes.map_or_else(|| "unknown".to_string(), |b| b.to_string()),
                %error,
                "disk full: the input journal cannot grow; new business is refused (380=4) until space returns"
            );
        }
        crate::gateway::disk::set_full(free_bytes);
        self.disk_full_retry_at = Some(
            self.now
                .plus(Duration::from_millis(constants::DISK_FULL_RETRY_MS)),
        );
        error.to_string()
    }

    /// Says in the log, at most once per [`constants::ENGINE_ABSENT_WARN_MS`], that no engine
    /// is attached, naming the engine whose connection attempt just failed and why: until one
    /// attaches, every business message is refused, which an operator must not have to guess.
    fn warn_if_no_engine(&mut self, slot: usize, error: &str) {
        let period = Duration::from_millis(constants::ENGINE_ABSENT_WARN_MS);
        if self.authority.is_some() || self.now.since(self.engine_absent_warned) < period {
            return;
        }
        self.engine_absent_warned = self.now;
        let engines: Vec<String> = self.engines.iter().map(|e| e.addr.to_string()).collect();
        tracing::warn!(
            engines = %engines.join(","),
            engine = %self.engines[slot].addr,
            %error,
            "no engine reachable: business messages are refused (380=4) until one attaches"
        );
    }

    /// Whether the authoritative engine can take more inputs now. A standby never holds the
    /// venue back: when its window is full it falls behind and catches up from the journal.
    fn room_for_inputs(&self) -> bool {
        let room = |index: Option<usize>| {
            index
                .and_then(|index| self.engines[index].connection.as_ref())
                .is_none_or(|c| c.in_flight() < constants::LINK_INPUTS_IN_FLIGHT_MAX as u64)
        };
        // During a canary both engines own inputs, and both windows gate delivery.
        room(self.authority) && room(self.canary.as_ref().map(|c| c.slot))
    }

    fn any_catching_up(&self) -> bool {
        let last = self.journal.last_seq();
        self.engines
            .iter()
            .filter_map(|slot| slot.connection.as_ref())
            .any(|c| {
                !c.restoring
                    && c.sent_through < last
                    && c.in_flight() < constants::LINK_INPUTS_IN_FLIGHT_MAX as u64
            })
    }

    // ----- sequencing ------------------------------------------------------------------------

    /// Refuses a request before it is sequenced with a BusinessMessageReject (380=4) saying why.
    fn refuse(&self, request: &Inbound, text: &str) {
        self.sessions.business_reject(
            request.session,
            &request.message,
            BusinessRejectReason::ApplicationNotAvailable,
            text,
        );
    }

    /// Stamps, journals and fans out a batch of requests; one journal flush and one link write
    /// per engine per batch.
    fn sequence(&mut self, batch: &mut Vec<Inbound>) {
        if self.authority.is_none() {
            for request in batch.drain(..) {
                self.refuse(&request, "application not available");
            }
            return;
        }
        let stores_short = self.stores_short_of_space();
        let first_seq = self.journal.last_seq() + 1;
        let mut inputs = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            // A session store short of room keeps what it has for the answers owed to inputs
            // already journaled; a journal that could not grow is tried again only after the
            // back-off, not on every message.
            if stores_short
                || self
                    .disk_full_retry_at
                    .is_some_and(|retry_at| self.now < retry_at)
            {
                self.refuse(&request, DISK_FULL_TEXT);
                continue;
            }
            if !self.halted.is_empty() {
                let symbol = input_symbol(&request.request);
                if self.halted.contains(symbol) {
                    // Not sequenced: the book it would reach is not the one counterparties know.
                    let text = format!(
                        "{} is halted for reconciliation after a release; try again later",
                        symbol.as_str()
                    );
                    self.sessions.business_reject(
                        request.session,
                        &request.message,
                        BusinessRejectReason::Other,
                        &text,
                    );
                    continue;
                }
            }
            let seq = self.journal.last_seq() + 1;
            let time = self.now.max(self.last_time);
            let input = Input {
                seq,
                time,
                session: request.session,
                request: request.request,
            };
            self.payload.clear();
            let encoded = bincode::serde::encode_into_std_write(
                &input,
                &mut self.payload,
                bincode::config::standard(),
            );
            let appended = encoded.map_err(|error| error.to_string()).and_then(|_| {
                match self.journal.append(seq, time, &self.payload) {
                    Ok(()) => Ok(()),
                    Err(error) if error.is_no_space() => Err(self.disk_full(&error)),
                    Err(error) => Err(error.to_string()),
                }
            });
            match appended {
                Ok(()) => {
                    if self.disk_full_retry_at.take().is_some() {
                        crate::gateway::disk::set_space_returned();
                        tracing::info!(
                            "disk space returned: the input journal grows again and new business is accepted"
                        );
                    }
                }
                Err(error) => {
                    // Not journaled means not sequenced: the request is refused, never half-done.
                    let text = if self.disk_full_retry_at.is_some() {
                        DISK_FULL_TEXT
                    } else {
                        tracing::error!(%error, seq, "journal append failed");
                        "application not available"
                    };
                    self.sessions.business_reject(
                        request.session,
                        &request.message,
                        BusinessRejectReason::ApplicationNotAvailable,
                        text,
                    );
                    continue;
                }
            }
            self.last_time = time;
            // Journaled: the session may now persist that it received this message.
            if let Ok(fix_seq) = request.message.uint(crate::fix::tags::MSG_SEQ_NUM) {
                self.sessions.confirm(request.session, fix_seq);
            }
            if self.recent.len() == constants::RECENT_INPUTS_MAX {
                self.recent.pop_front();
            }
            let symbol = *input_symbol(&input.request);
            self.recent.push_back((seq, time, symbol));
            if let Some(canary) = &self.canary
                && canary.covers(&symbol)
            {
                self.canary_owned.insert(seq);
            }
            inputs.push(input);
        }
        if let Err(error) = self.journal.flush() {
            tracing::error!(%error, "journal flush failed");
        }
        let Some(last) = inputs.last().map(|input| input.seq) else {
            return;
        };
        if let Some((started, mut report)) = self.switch_started.take() {
            report.pause_us = self.now.since(started).as_micros() as u64;
            tracing::info!(from = %report.from, to = %report.to, pause_us = report.pause_us, "first input after the switch");
            self.last_switch = Some(report);
        }
        for index in 0..self.engines.len() {
            let live = self.engines[index].connection.as_ref().is_some_and(|c| {
                !c.restoring
                    && c.catch_up.is_none()
                    && c.sent_through + 1 == first_seq
                    && c.in_flight() < constants::LINK_INPUTS_IN_FLIGHT_MAX as u64
            });
            if live {
                self.send_to(index, inputs.clone(), last);
            }
        }
    }

    /// Queues `inputs` (ending at `last`) for engine `index`; a failed write comes back as
    /// [`Core::handle_lost`].
    fn send_to(&mut self, index: usize, inputs: Vec<Input>, last: u64) {
        let Some(connection) = self.engines[index].connection.as_mut() else {
            return;
        };
        connection.sent_through = last;
        self.transmit(index, LinkCommand::Inputs(inputs));
    }

    /// Sends the next journal entries to every engine behind the journal (after an attach, a
    /// restore or a reconnect), one batch each, within its in-flight window.
    fn catch_up(&mut self) {
        let last = self.journal.last_seq();
        for index in 0..self.engines.len() {
            let Some(connection) = self.engines[index].connection.as_mut() else {
                continue;
            };
            if connection.restoring || connection.sent_through >= last {
                connection.catch_up = None;
                continue;
            }
            let window = constants::LINK_INPUTS_IN_FLIGHT_MAX as u64
                - connection
                    .in_flight()
                    .min(constants::LINK_INPUTS_IN_FLIGHT_MAX as u64);
            if window == 0 {
                continue;
            }
            let from = connection.sent_through + 1;
            if connection.catch_up.is_none() {
                match self.journal.read_from(from) {
                    Ok(reader) => connection.catch_up = Some(Box::new(reader)),
                    Err(error) => {
                        tracing::error!(engine = %connection.name, %error, from, "cannot read the journal to catch up");
                        self.lose(index);
                        continue;
                    }
                }
            }
            let mut inputs = Vec::new();
            let count = window
                .min(constants::SEQUENCER_BATCH_MAX as u64)
                .min(last - connection.sent_through);
            let mut failure = None;
            if let Some(reader) = connection.catch_up.as_mut() {
                for _ in 0..count {
                    match read_input(reader.as_mut()) {
                        Ok(Some(input)) => inputs.push(input),
                        Ok(None) => break,
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
            }
            if let Some(error) = failure {
                tracing::error!(engine = %connection.name, %error, "journal replay failed");
                self.lose(index);
                continue;
            }
            if let Some(first) = inputs.first()
                && first.seq != from
            {
                tracing::error!(engine = %connection.name, expected = from, got = first.seq, "journal replay out of step");
                self.lose(index);
                continue;
            }
            if let Some(last_sent) = inputs.last().map(|input| input.seq) {
                if last_sent >= last {
                    connection.catch_up = None;
                }
                self.send_to(index, inputs, last_sent);
            }
        }
    }

    // ----- engine frames -----------------------------------------------------------------------

    fn on_frame(&mut self, index: usize, frame: Frame) {
        let Some(connection) = self
            .engines
            .get_mut(index)
            .and_then(|slot| slot.connection.as_mut())
        else {
            return;
        };
        connection.last_heard = self.now;
        match frame {
            Frame::Outputs(outputs) | Frame::Replayed(outputs) => {
                connection.answered_through = connection.answered_through.max(outputs.input_seq);
                self.on_outputs(index, outputs);
            }
            Frame::AlreadyApplied(applied) => {
                connection.answered_through = connection.answered_through.max(applied.input_seq);
                if Some(index) == self.authority && applied.input_seq > self.cursor.get() {
                    tracing::error!(
                        input_seq = applied.input_seq,
                        "engine no longer holds the outputs of an undelivered input"
                    );
                    self.cursor.set(applied.input_seq);
                    self.drain_undelivered();
                }
            }
            Frame::Snapshot(snapshot) => {
                // Asked from the authoritative engine for a joining standby.
                let target = self
                    .engines
                    .iter()
                    .position(|slot| slot.connection.as_ref().is_some_and(|c| c.restoring));
                if let Some(target) = target
                    && let Some(standby) = self.engines[target].connection.as_ref()
                {
                    tracing::info!(engine = %standby.name, at = snapshot.at_input_seq, bytes = snapshot.bytes.len(), "restoring standby from snapshot");
                    self.transmit(target, LinkCommand::Restore(snapshot.bytes));
                }
            }
            Frame::Restored(restored) => {
                tracing::info!(engine = %connection.name, at = restored.at_input_seq, digest = %restored.digest, "standby restored; catching up from the journal");
                connection.restoring = false;
                // A copy of the authoritative book: whatever it diverged on before is gone.
                let name = connection.name.clone();
                if self.diverged.remove(&name).is_some() {
                    self.emit(CoreEvent::Record(CoreRecord::DivergenceCleared {
                        engine: name,
                        symbols: Vec::new(),
                    }));
                }
                let Some(connection) = self.engines[index].connection.as_mut() else {
                    return;
                };
                connection.sent_through = restored.at_input_seq;
                connection.answered_through = restored.at_input_seq;
                connection.catch_up = None;
            }
            Frame::Refused(refused) => {
                tracing::error!(engine = %connection.name, reason = %refused.reason, "engine refused a request");
                if connection.restoring {
                    self.lose(index);
                }
            }
            Frame::Heartbeat(_) | Frame::Digest(_) => {}
            other => tracing::debug!(kind = %other.kind(), "engine frame ignored"),
        }
    }

    fn on_outputs(&mut self, index: usize, outputs: Outputs) {
        let seq = outputs.input_seq;
        let owner = self.owner_of(seq);
        let is_authority = Some(index) == owner;
        let has_standby = self.engines.iter().enumerate().any(|(i, slot)| {
            Some(i) != owner && slot.connection.as_ref().is_some_and(|c| !c.restoring)
        });
        if let Some(canary) = self.canary.as_mut()
            && self.canary_owned.contains(&seq)
        {
            // Each engine's answer latency on the canary's inputs, the same inputs for both.
            let age_us = input_age(&self.recent, seq, self.now);
            let latency = if index == canary.slot {
                &mut canary.canary_latency
            } else {
                &mut canary.baseline_latency
            };
            latency.saturating_record(age_us);
        }
        if is_authority {
            if has_standby {
                self.record_shadow(seq, outputs.outputs.clone(), None);
            }
            if seq > self.cursor.get() {
                self.undelivered.insert(seq, outputs.outputs);
                self.drain_undelivered();
            }
        } else if seq > self.cursor.get() || self.shadow.contains_key(&seq) {
            self.record_shadow(seq, outputs.outputs, Some(index));
        }
        self.trim_shadow();
        if self.canary.is_some() {
            self.check_gates(false);
        }
    }

    /// Stores one side's outputs for `seq` (the owner's when `standby` is `None`, else those of
    /// standby slot `standby`) and compares once both are there. A standby that answers
    /// differently is marked as diverged on the input's symbol.
    fn record_shadow(&mut self, seq: u64, outputs: Vec<Output>, standby: Option<usize>) {
        if self.shadow.len() >= constants::SHADOW_PENDING_MAX && !self.shadow.contains_key(&seq) {
            return;
        }
        let mut diverged = None;
        let entry = self.shadow.entry(seq).or_default();
        match standby {
            None => entry.authoritative = Some(outputs),
            Some(slot) => {
                entry.standby = Some(outputs);
                entry.standby_slot = Some(slot);
            }
        }
        if !entry.compared
            && let (Some(a), Some(b)) = (&entry.authoritative, &entry.standby)
        {
            entry.compared = true;
            if a != b
                && let Some(slot) = entry.standby_slot
                && let Some(connection) = self.engines[slot].connection.as_ref()
            {
                // Unknown symbol (too old to remember): hold it against every symbol it trades.
                let symbols = match recent_input(&self.recent, seq) {
                    Some((_, symbol)) => vec![symbol],
                    None => self.config.symbols.clone(),
                };
                let set = self.diverged.entry(connection.name.clone()).or_default();
                let new: Vec<Symbol> = symbols.into_iter().filter(|s| set.insert(*s)).collect();
                if !new.is_empty() {
                    diverged = Some(CoreEvent::Record(CoreRecord::Diverged {
                        engine: connection.name.clone(),
                        symbols: names(&new),
                    }));
                }
            }
            if let Some(canary) = self.canary.as_mut()
                && self.canary_owned.contains(&seq)
            {
                // `a` is the canary engine's (it owns the input), `b` the baseline's.
                canary.gates.compared += 1;
                canary.gates.errors += u64::from(a != b);
                canary.gates.canary_rejects += rejects(a);
                canary.gates.baseline_rejects += rejects(b);
            }
            if a == b {
                self.shadow_status.matches += 1;
            } else {
                self.shadow_status.divergences += 1;
                tracing::warn!(input_seq = seq, "shadow divergence");
                if self.shadow_status.samples.len() < constants::SHADOW_SAMPLES_MAX {
                    self.shadow_status.samples.push(DivergenceSample {
                        input_seq: seq,
                        authoritative: format!("{a:?}"),
                        standby: format!("{b:?}"),
                    });
                }
            }
        }
        if let Some(event) = diverged {
            self.emit(event);
        }
    }

    /// Delivers the authoritative outputs that are next in input order.
    fn drain_undelivered(&mut self) {
        while let Some(entry) = self.undelivered.first_entry() {
            let seq = *entry.key();
            if seq <= self.cursor.get() {
                entry.remove();
            } else if seq == self.cursor.get() + 1 {
                let outputs = entry.remove();
                self.deliver(seq, &outputs);
            } else {
                break;
            }
        }
    }

    /// Drops shadow entries no longer needed: compared and delivered; or the oldest when the
    /// standby lags too far for comparison.
    fn trim_shadow(&mut self) {
        let delivered = self.cursor.get();
        while let Some(entry) = self.shadow.first_entry() {
            let done = *entry.key() <= delivered && entry.get().compared;
            let stale = self.shadow.len() >= constants::SHADOW_PENDING_MAX;
            if done || stale {
                self.shadow.pop_first();
            } else {
                break;
            }
        }
        // A canary input is kept until it is delivered and compared (or no longer comparable).
        let oldest_shadow = self
            .shadow
            .first_key_value()
            .map_or(u64::MAX, |(seq, _)| *seq);
        let keep_from = (delivered + 1).min(oldest_shadow);
        while self
            .canary_owned
            .first()
            .is_some_and(|seq| *seq < keep_from)
        {
            self.canary_owned.pop_first();
        }
    }

    /// Hands each output of `input_seq` to its session, once.
    fn deliver(&mut self, input_seq: u64, outputs: &[Output]) {
        if input_seq <= self.cursor.get() {
            return;
        }
        if !self.halted.is_empty()
            && let Some(symbol) = output_symbol(&self.recent, input_seq, outputs)
            && self.halted.contains(&symbol)
        {
            // Sequenced before the halt; its answers come from a book that is not what the
            // counterparties were told. Kept in the audit log for the reconciliation instead.
            let mut text = format!("{outputs:?}");
            let mut cut = text.len().min(constants::WITHHELD_OUTPUTS_TEXT_BYTES_MAX);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            tracing::error!(
                input_seq,
                symbol = symbol.as_str(),
                "outputs withheld: the symbol is halted"
            );
            self.emit(CoreEvent::Record(CoreRecord::OutputsWithheld {
                input_seq,
                symbol: symbol.as_str().to_owned(),
                outputs: text,
            }));
            self.cursor.set(input_seq);
            return;
        }
        let now = self.now;
        if let Some(owner) = self.owner_of(input_seq) {
            self.engines[owner].delivered_inputs += 1;
        }
        for output in outputs {
            let delivered = self.sessions.with(output.session, |session| {
                session.send_app(now, translate::output_msg_type(output), |e| {
                    translate::write_output(e, output)
                })
            });
            match delivered {
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::error!(%error, input_seq, "cannot store an output in its session")
                }
                None => tracing::error!(
                    session = output.session,
                    input_seq,
                    "output for an unknown session"
                ),
            }
        }
        self.cursor.set(input_seq);
    }

    // ----- attach, loss, failover ----------------------------------------------------------------

    fn housekeeping(&mut self) {
        let now = self.now;
        // Declare a silent authoritative engine dead.
        if let Some(authority) = self.authority
            && let Some(connection) = self.engines[authority].connection.as_ref()
            && now.since(connection.last_heard) > self.config.failover_timeout
        {
            tracing::warn!(engine = %connection.name, silent_ms = now.since(connection.last_heard).as_millis() as u64, "authoritative engine silent; failing over");
            self.lose(authority);
        }
        if let Some(slot) = self.canary.as_ref().map(|c| c.slot)
            && let Some(connection) = self.engines[slot].connection.as_ref()
            && now.since(connection.last_heard) > self.config.failover_timeout
        {
            tracing::warn!(engine = %connection.name, "canary engine silent; its symbols return");
            self.lose(slot);
        }
        self.check_gates(true);
        for index in 0..self.engines.len() {
            let slot = &mut self.engines[index];
            if slot.connection.is_none() && !slot.connecting && slot.retry_at <= now {
                slot.retry_at = now.plus(Duration::from_millis(constants::ENGINE_RECONNECT_MS));
                slot.connecting = true;
                self.transmit(index, LinkCommand::Connect);
            }
        }
        let heartbeat = Duration::from_millis(constants::LINK_HEARTBEAT_INTERVAL_MS_DEFAULT);
        let last_input_seq = self.journal.last_seq();
        for index in 0..self.engines.len() {
            if self.engines[index]
                .connection
                .as_ref()
                .is_some_and(|connection| now.since(connection.last_sent) >= heartbeat)
            {
                self.transmit(index, LinkCommand::Heartbeat { last_input_seq });
            }
        }
    }

    /// Takes the engine that answered on slot `index` with `hello`; false if it is refused.
    fn attach(&mut self, index: usize, hello: &link::Hello) -> bool {
        let journal_last = self.journal.last_seq();
        if hello.last_input_seq > journal_last {
            tracing::error!(engine = %hello.engine_name, engine_last = hello.last_input_seq, journal_last, "engine is ahead of the journal; refusing it");
            return false;
        }
        // A connection the driver still had for this slot is replaced, never doubled.
        self.lose(index);
        self.emit(CoreEvent::Record(CoreRecord::EngineAttached {
            name: hello.engine_name.clone(),
            build_version: hello.build_version.clone(),
            executable_sha256: hello.executable_sha256.clone(),
        }));
        let mut connection = Connection {
            name: hello.engine_name.clone(),
            build_version: hello.build_version.clone(),
            executable_sha256: hello.executable_sha256.clone(),
            sent_through: hello.last_input_seq,
            answered_through: hello.last_input_seq,
            restoring: false,
            catch_up: None,
            last_heard: self.now,
            last_sent: self.now,
        };
        match self.authority {
            None => {
                // First engine: it takes authority. Resend from the first input not known
                // delivered, so its replay window (or a fresh engine's re-execution) yields every
                // output the gateway may not have delivered.
                let from = hello.last_input_seq.min(self.cursor.get());
                connection.sent_through = from;
                connection.answered_through = from;
                tracing::info!(engine = %hello.engine_name, build = %hello.build_version, from = from + 1, journal_last, "engine attached with authority");
                self.engines[index].connection = Some(connection);
                self.authority = Some(index);
                // An engine whose book diverged before a restart halts those symbols.
                self.halt_diverged();
            }
            Some(authority) if hello.last_input_seq == 0 && journal_last > 0 => {
                // An empty standby: restore it from the authoritative engine's snapshot.
                connection.restoring = true;
                tracing::info!(engine = %hello.engine_name, build = %hello.build_version, "standby attached empty; requesting a snapshot");
                self.engines[index].connection = Some(connection);
                if self.engines[authority].connection.is_some() {
                    self.transmit(authority, LinkCommand::RequestSnapshot);
                }
            }
            Some(_) => {
                tracing::info!(engine = %hello.engine_name, build = %hello.build_version, from = hello.last_input_seq + 1, journal_last, "standby attached");
                self.engines[index].connection = Some(connection);
            }
        }
        true
    }

    /// The connection of slot `index` is gone. If it owned inputs (authority, or the canary's
    /// symbols), the surviving engine takes them over: outputs it already produced for
    /// undelivered inputs are delivered in input order, and what it has not produced it is asked
    /// for again. Outputs the lost engine sent for inputs it owned and that wait behind an
    /// earlier one stay: they came from the engine that owned those inputs (invariant 4).
    fn lose(&mut self, index: usize) {
        let Some(lost) = self.engines[index].connection.take() else {
            return;
        };
        // Whoever noticed first, the driver drops the link and ignores what still arrives on it.
        self.transmits.push_back(LinkTransmit {
            slot: index,
            command: LinkCommand::Drop,
        });
        self.engines[index].retry_at = self
            .now
            .plus(Duration::from_millis(constants::ENGINE_RECONNECT_MS));
        if self.pending_switch.as_ref().is_some_and(|p| p.to == index)
            && let Some(mut pending) = self.pending_switch.take()
            && let Some(reply) = pending.reply.take()
        {
            self.reply(
                reply,
                CoreReply::Refused {
                    reason: format!("standby {} was lost during the switch", lost.name),
                },
            );
        }
        // Comparisons waiting for the lost engine's answers can no longer be made; counted as
        // made, they are trimmed once delivered instead of pinning the shadow map (and the gates
        // of later canaries) for good.
        let canary_slot = self.canary.as_ref().map(|c| c.slot);
        for (seq, entry) in self.shadow.iter_mut() {
            let owner = match canary_slot {
                Some(slot) if self.canary_owned.contains(seq) => Some(slot),
                _ => self.authority,
            };
            let waits_for_lost = if owner == Some(index) {
                entry.authoritative.is_none()
            } else {
                entry.standby.is_none()
            };
            if waits_for_lost {
                entry.compared = true;
            }
        }
        let canary_lost = canary_slot == Some(index);
        if Some(index) != self.authority && !canary_lost {
            tracing::warn!(engine = %lost.name, "standby lost");
            return;
        }
        let canary_symbols = self
            .canary
            .take()
            .map(|c| c.symbol_names())
            .unwrap_or_default();
        let alive = |slot: usize| {
            self.engines[slot]
                .connection
                .as_ref()
                .is_some_and(|c| !c.restoring)
        };
        let next = if canary_lost {
            self.authority
        } else if let Some(slot) = canary_slot.filter(|slot| alive(*slot)) {
            // The canary engine already owns some symbols and shadows the rest.
            self.authority = None;
            Some(slot)
        } else {
            self.authority = None;
            self.engines
                .iter()
                .enumerate()
                .filter(|(i, _)| alive(*i))
                .max_by_key(|(_, slot)| slot.connection.as_ref().map(|c| c.answered_through))
                .map(|(i, _)| i)
        };
        if let Some(mut pending) = self.pending_switch.take()
            && let Some(reply) = pending.reply.take()
        {
            self.reply(
                reply,
                CoreReply::Refused {
                    reason: format!("engine {} was lost; failed over instead", lost.name),
                },
            );
        }
        let Some(next) = next else {
            tracing::error!(engine = %lost.name, "authoritative engine lost and no standby can take over");
            return;
        };
        let previous_owner = |core: &Core<S, J>, seq: u64| {
            if core.canary_owned.contains(&seq) == canary_lost {
                index
            } else {
                next
            }
        };
        // Which undelivered inputs the lost engine owned, decided before ownership changes.
        let delivered = self.cursor.get();
        let lost_owned: Vec<u64> = self
            .shadow
            .range(delivered + 1..)
            .map(|(seq, _)| *seq)
            .filter(|seq| previous_owner(self, *seq) == index)
            .collect();
        self.canary_owned.clear();
        if !canary_lost {
            self.previous_authority = Some((index, lost.executable_sha256.clone()));
        }
        self.authority = Some(next);
        self.halt_diverged();
        self.switches += 1;
        let name = self.engines[next]
            .connection
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        tracing::warn!(from = %lost.name, to = %name, delivered_through = delivered, canary = canary_lost, "failover: the surviving engine takes the lost engine's inputs");
        // The pause a failover cost: how long the oldest input still waiting for an answer had
        // waited when the survivor took over (the lost engine's silence, up to the failover
        // timeout); none waiting, no order was held.
        let pause_us = if self.journal.last_seq() > delivered {
            self.input_age_us(delivered + 1, self.now)
        } else {
            0
        };
        let report = SwitchReport {
            from: lost.name,
            to: name,
            barrier_seq: delivered,
            pause_us,
            planned: false,
            rollback: false,
            scope: if canary_lost {
                SwitchScope::CanaryEnded {
                    symbols: canary_symbols,
                }
            } else {
                SwitchScope::All
            },
        };
        self.emit(CoreEvent::Failover(report.clone()));
        self.last_switch = Some(report.clone());
        self.switch_started = Some((self.now, report));
        // Deliver what the survivor already produced, as a shadow, for the lost engine's
        // undelivered inputs, in input order.
        for seq in lost_owned {
            if !self.undelivered.contains_key(&seq)
                && let Some(outputs) = self.shadow.get(&seq).and_then(|e| e.standby.clone())
            {
                self.undelivered.insert(seq, outputs);
            }
        }
        self.drain_undelivered();
        // Whatever it answered beyond that is asked again: the engine answers a resent input
        // from its replay window, and answers arriving meanwhile wait in `undelivered`.
        let delivered = self.cursor.get();
        if let Some(connection) = self.engines[next].connection.as_mut()
            && connection.answered_through > delivered
        {
            connection.sent_through = delivered;
            connection.answered_through = delivered;
            connection.catch_up = None;
        }
    }

    // ----- control ---------------------------------------------------------------------------------

    fn on_control(&mut self, id: CommandId, command: CoreCommand) {
        let kind = match &command.request {
            CoreRequest::Status => {
                let status = CoreReply::Status(Box::new(self.status()));
                self.reply(id, status);
                return;
            }
            CoreRequest::Resume { symbols } => {
                let reply = self.resume(symbols);
                self.reply(id, reply);
                return;
            }
            CoreRequest::Stage { engine } => {
                let reply = self.check_stage(engine, command.expect_sha256.as_deref());
                self.reply(id, reply);
                return;
            }
            CoreRequest::Switch => Ok((false, SwitchKind::All)),
            CoreRequest::Rollback => Ok((true, SwitchKind::All)),
            CoreRequest::Canary { percent, symbols } => self
                .choose_canary(*percent, symbols)
                .map(|symbols| (false, SwitchKind::CanaryStart(symbols))),
        };
        let started = kind.and_then(|(rollback, kind)| self.start_switch(rollback, kind, &command));
        match started {
            Ok(()) => {
                if let Some(pending) = self.pending_switch.as_mut() {
                    pending.reply = Some(id);
                }
            }
            Err(reason) => self.reply(id, CoreReply::Refused { reason }),
        }
    }

    /// The canary's symbols: those named (each must be configured), or a share of the configured
    /// ones chosen by [`canary_symbols`].
    fn choose_canary(&self, percent: Option<u8>, named: &[String]) -> Result<Vec<Symbol>, String> {
        let configured = names(&self.config.symbols).join(", ");
        if !named.is_empty() {
            let mut chosen = Vec::with_capacity(named.len());
            for name in named {
                match self
                    .config
                    .symbols
                    .iter()
                    .find(|s| s.as_str() == name.as_str())
                {
                    Some(symbol) => chosen.push(*symbol),
                    None => {
                        return Err(format!(
                            "{name} is not a configured symbol (configured: {configured})"
                        ));
                    }
                }
            }
            chosen.sort();
            chosen.dedup();
            return Ok(chosen);
        }
        match percent {
            Some(percent @ 1..=100) if !self.config.symbols.is_empty() => {
                Ok(canary_symbols(&self.config.symbols, percent))
            }
            Some(percent @ 1..=100) => Err(format!(
                "a canary of {percent}% needs the venue's symbols ([engine] instruments); none are configured"
            )),
            Some(percent) => Err(format!(
                "a canary share must be 1 to 100 percent, not {percent}"
            )),
            None => Err("a canary needs a share (--percent) or symbols (--symbols)".into()),
        }
    }

    fn start_switch(
        &mut self,
        rollback: bool,
        kind: SwitchKind,
        command: &CoreCommand,
    ) -> Result<(), String> {
        if self.pending_switch.is_some() {
            return Err("a switch is already in progress".into());
        }
        let Some(authority) = self.authority else {
            return Err("no engine has authority".into());
        };
        let canary_slot = self.canary.as_ref().map(|c| c.slot);
        if command.canary_only && canary_slot.is_none() {
            return Err("no canary is running: nothing for this rollback to end".into());
        }
        let (target, kind) = match (rollback, kind, canary_slot) {
            // Undoing a canary returns its symbols; authority never moved.
            (true, _, Some(slot)) => (slot, SwitchKind::CanaryEnd),
            (true, kind, None) => match self.previous_authority {
                Some((previous, _)) if previous != authority => (previous, kind),
                _ => return Err(
                    "nothing to roll back to: authority has not moved since it was last rolled back or since the gateway started; moving it again is a switch, which needs its approval"
                        .into(),
                ),
            },
            (false, SwitchKind::CanaryStart(_), Some(_)) => {
                return Err(
                    "a canary is already running: complete it with switch or end it with rollback"
                        .into(),
                );
            }
            // A switch during a canary completes it: everything moves to the canary engine.
            (false, kind, Some(slot)) => (slot, kind),
            (false, kind, None) => match (0..self.engines.len())
                .find(|&i| i != authority && self.engines[i].connection.is_some())
            {
                Some(target) => (target, kind),
                None => return Err("no standby attached".into()),
            },
        };
        let Some(standby) = self.engines[target].connection.as_ref() else {
            return Err("the rollback target is not attached".into());
        };
        if standby.restoring {
            return Err(format!("standby {} is still restoring", standby.name));
        }
        if let Some(expected) = command.expect_sha256.as_deref()
            && kind != SwitchKind::CanaryEnd
            && standby.executable_sha256 != expected
        {
            return Err(format!(
                "engine {} runs an executable with SHA-256 {}, not the change's artifact {expected}",
                standby.name,
                reported(&standby.executable_sha256)
            ));
        }
        // A rollback returns authority to the build that had it, not to whatever was started
        // in that slot since.
        if rollback
            && kind == SwitchKind::All
            && command.expect_sha256.is_none()
            && let Some((_, had)) = &self.previous_authority
            && *had != standby.executable_sha256
        {
            return Err(format!(
                "engine {} now runs an executable with SHA-256 {}, not the {had} that had authority; move authority to it under a change instead",
                standby.name,
                reported(&standby.executable_sha256)
            ));
        }
        self.refuse_diverged(target, &kind)?;
        let lag = self
            .journal
            .last_seq()
            .saturating_sub(standby.answered_through);
        // Ending a canary is backing out: it waits for the canary engine however far behind.
        if lag > self.config.gates.switch_lag_max_inputs && kind != SwitchKind::CanaryEnd {
            return Err(format!("standby {} is {lag} inputs behind", standby.name));
        }
        self.pending_switch = Some(PendingSwitch {
            to: target,
            barrier: self.journal.last_seq(),
            started: self.now,
            kind,
            rollback,
            reply: None,
        });
        Ok(())
    }

    /// Refuses to give engine `target` authority for symbols on which its book is not what the
    /// counterparties were told (it answered differently from the engine whose answers were
    /// delivered), and refuses to complete a canary whose gate tripped. Backing out (a canary's
    /// end) is never refused; its diverged symbols are halted instead.
    fn refuse_diverged(&self, target: usize, kind: &SwitchKind) -> Result<(), String> {
        let Some(connection) = self.engines[target].connection.as_ref() else {
            return Ok(());
        };
        let empty = BTreeSet::new();
        let engine_diverged = self.diverged.get(&connection.name).unwrap_or(&empty);
        let diverged: Vec<String> = match kind {
            SwitchKind::CanaryEnd => return Ok(()),
            SwitchKind::All => names(engine_diverged),
            SwitchKind::CanaryStart(symbols) => {
                names(symbols.iter().filter(|s| engine_diverged.contains(s)))
            }
        };
        if !diverged.is_empty() {
            return Err(format!(
                "engine {} answered differently from what the counterparties were told on {}: its book there is not theirs; restart it empty (it restores from the authoritative engine's snapshot), or reconcile its book and run baton ctl resume --symbols",
                connection.name,
                diverged.join(", ")
            ));
        }
        if let Some(canary) = &self.canary
            && canary.slot == target
            && let Some(breach) = &canary.gates.breach
        {
            return Err(format!(
                "the canary on {} breached its {} gate; it is being rolled back",
                connection.name, breach.gate
            ));
        }
        Ok(())
    }

    /// Moves authority once both engines have answered every input up to the barrier and every
    /// output up to it is delivered.
    fn try_complete_switch(&mut self) {
        let Some(pending) = self.pending_switch.as_ref() else {
            return;
        };
        let Some(authority) = self.authority else {
            return;
        };
        let answered = |index: usize| {
            self.engines[index]
                .connection
                .as_ref()
                .map(|c| c.answered_through)
        };
        let ready = answered(authority).is_some_and(|a| a >= pending.barrier)
            && answered(pending.to).is_some_and(|a| a >= pending.barrier)
            && self.cursor.get() >= pending.barrier;
        if !ready {
            return;
        }
        // Every answer up to the barrier is in: judge the canary on all of them, and re-check
        // what may have diverged while the barrier waited, before anything moves.
        self.check_gates(true);
        let Some(mut pending) = self.pending_switch.take() else {
            return;
        };
        if let Err(reason) = self.refuse_diverged(pending.to, &pending.kind) {
            tracing::warn!(%reason, "switch refused at its barrier");
            if let Some(reply) = pending.reply.take() {
                self.reply(reply, CoreReply::Refused { reason });
            }
            return;
        }
        let name = |index: usize| {
            self.engines[index]
                .connection
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        let (from, to, scope) = match &pending.kind {
            SwitchKind::All => (authority, pending.to, SwitchScope::All),
            SwitchKind::CanaryStart(symbols) => (
                authority,
                pending.to,
                SwitchScope::CanaryStarted {
                    symbols: names(symbols),
                },
            ),
            SwitchKind::CanaryEnd => (
                pending.to,
                authority,
                SwitchScope::CanaryEnded {
                    symbols: self
                        .canary
                        .as_ref()
                        .map(|c| c.symbol_names())
                        .unwrap_or_default(),
                },
            ),
        };
        let report = SwitchReport {
            from: name(from),
            to: name(to),
            barrier_seq: pending.barrier,
            pause_us: self.now.since(pending.started).as_micros() as u64,
            planned: true,
            scope,
            rollback: pending.rollback,
        };
        tracing::info!(from = %report.from, to = %report.to, barrier = report.barrier_seq, pause_us = report.pause_us, scope = ?report.scope, "switched authority");
        match pending.kind {
            // A rollback returns authority once: it leaves no target for another rollback.
            SwitchKind::All if pending.rollback => {
                self.previous_authority = None;
                self.authority = Some(pending.to);
                self.end_canary();
            }
            SwitchKind::All => {
                self.previous_authority = Some((authority, self.executable_of(authority)));
                self.authority = Some(pending.to);
                self.end_canary();
            }
            SwitchKind::CanaryStart(symbols) => {
                self.canary = Some(Canary {
                    slot: pending.to,
                    symbols,
                    since_seq: pending.barrier + 1,
                    gates: GateStatus::default(),
                    canary_latency: latency_histogram(),
                    baseline_latency: latency_histogram(),
                    breach_emitted: None,
                });
            }
            SwitchKind::CanaryEnd => self.end_canary(),
        }
        self.switches += 1;
        self.last_switch = Some(report.clone());
        match pending.reply.take() {
            // If the control plane stopped waiting (its reply timed out), the driver turns the
            // answer into a `CoreEvent::Completed`, so the audit log does not end on a refusal
            // for a switch that ran.
            Some(reply) => self.reply(reply, CoreReply::Switched(report)),
            None => {
                self.emit(CoreEvent::Completed(report));
            }
        }
    }

    /// The SHA-256 the engine in `slot` reported, empty if none or not attached.
    fn executable_of(&self, slot: usize) -> String {
        self.engines[slot]
            .connection
            .as_ref()
            .map(|c| c.executable_sha256.clone())
            .unwrap_or_default()
    }

    /// Ends the canary (if any): its symbols belong to the authoritative engine again. Where that
    /// engine's book is not what the counterparties were told (the canary's answers differed
    /// from its own), the symbols are halted until an operator reconciles and resumes them.
    fn end_canary(&mut self) {
        self.canary = None;
        self.canary_owned.clear();
        self.halt_diverged();
    }

    /// Halts every symbol whose owner now has a book that differs from what the counterparties
    /// were told: new requests for it are refused until an operator resumes it.
    fn halt_diverged(&mut self) {
        let Some(authority) = self.authority else {
            return;
        };
        let empty = BTreeSet::new();
        let diverged_of = |slot: usize| {
            self.engines[slot]
                .connection
                .as_ref()
                .and_then(|c| self.diverged.get(&c.name))
                .unwrap_or(&empty)
        };
        let covered = |symbol: &Symbol| self.canary.as_ref().is_some_and(|c| c.covers(symbol));
        let mut halted: Vec<Symbol> = diverged_of(authority)
            .iter()
            .filter(|symbol| !covered(symbol))
            .copied()
            .collect();
        if let Some(canary) = &self.canary {
            let owner = diverged_of(canary.slot);
            halted.extend(canary.symbols.iter().filter(|s| owner.contains(s)));
        }
        let new: Vec<Symbol> = halted
            .into_iter()
            .filter(|symbol| self.halted.insert(*symbol))
            .collect();
        if !new.is_empty() {
            tracing::error!(symbols = ?names(&new), "halted: the owner's book differs from what counterparties were told");
            self.emit(CoreEvent::Record(CoreRecord::Halted {
                symbols: names(&new),
            }));
        }
    }

    /// Whether engine `name` may be restarted from another build: never while it owns inputs
    /// (authority, or a canary's symbols), nor while a switch is on its way to it.
    fn check_stage(&self, name: &str, artifact_sha256: Option<&str>) -> CoreReply {
        let owning = |slot: Option<usize>| {
            slot.and_then(|slot| self.engines[slot].connection.as_ref())
                .is_some_and(|c| c.name == name)
        };
        let refuse = |why: &str| CoreReply::Refused {
            reason: format!("engine {name} {why}; stage the standby"),
        };
        if owning(self.authority) {
            return refuse("has authority");
        }
        if owning(self.canary.as_ref().map(|c| c.slot)) {
            return refuse("owns a canary's symbols");
        }
        if owning(self.pending_switch.as_ref().map(|p| p.to)) {
            return refuse("is taking authority at a pending switch");
        }
        let attached = self
            .engines
            .iter()
            .filter_map(|slot| slot.connection.as_ref())
            .any(|c| c.name == name);
        if !attached {
            return CoreReply::Refused {
                reason: format!(
                    "no engine named {name} is attached (engines: {})",
                    self.engines
                        .iter()
                        .filter_map(|slot| slot.connection.as_ref())
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
        }
        CoreReply::Staged {
            engine: name.to_owned(),
            artifact_sha256: artifact_sha256.unwrap_or_default().to_owned(),
        }
    }

    /// An operator's word that `symbols` were reconciled: they trade again, and the authoritative
    /// engine's book for them is taken as what the counterparties have been told.
    /// An operator's word that `symbols` were reconciled: halted ones trade again, and every
    /// engine's book for them is taken as what the counterparties have been told.
    fn resume(&mut self, symbols: &[String]) -> CoreReply {
        let mut resumed = Vec::new();
        for name in symbols {
            let known = |s: &Symbol| s.as_str() == name.as_str();
            let symbol = self.halted.iter().copied().find(known).or_else(|| {
                self.diverged
                    .values()
                    .flat_map(|set| set.iter().copied())
                    .find(known)
            });
            match symbol {
                Some(symbol) => resumed.push(symbol),
                None => {
                    return CoreReply::Refused {
                        reason: format!(
                            "{name} is neither halted nor diverged on any engine (halted: {})",
                            names(&self.halted).join(", ")
                        ),
                    };
                }
            }
        }
        for symbol in &resumed {
            self.halted.remove(symbol);
            for set in self.diverged.values_mut() {
                set.remove(symbol);
            }
            tracing::warn!(symbol = symbol.as_str(), "symbol resumed by an operator");
        }
        self.diverged.retain(|_, set| !set.is_empty());
        CoreReply::Resumed {
            symbols: names(&resumed),
        }
    }

    /// Judges the canary against its gates; the first breach is reported once, and the control
    /// plane, having audited it, asks for the rollback.
    fn check_gates(&mut self, with_latency: bool) {
        let Some(canary) = self.canary.as_mut() else {
            return;
        };
        if canary.gates.breach.is_none() {
            let gates = &self.config.gates;
            let g = &mut canary.gates;
            if with_latency {
                g.canary_p99_us = canary.canary_latency.value_at_quantile(0.99);
                g.baseline_p99_us = canary.baseline_latency.value_at_quantile(0.99);
            }
            let compared = g.compared.max(1) as f64;
            let error_rate = g.errors as f64 / compared;
            let reject_increase = (g.canary_rejects as f64 - g.baseline_rejects as f64) / compared;
            let latency_limit = gates.latency_limit_us(g.baseline_p99_us);
            let latency_samples = canary
                .canary_latency
                .len()
                .min(canary.baseline_latency.len());
            let breach = if g.errors > 0 && error_rate > gates.error_rate_max {
                Some(("error-rate", error_rate, gates.error_rate_max))
            } else if g.compared >= gates.reject_min_samples
                && reject_increase > gates.reject_rate_increase_max
            {
                Some((
                    "reject-rate",
                    reject_increase,
                    gates.reject_rate_increase_max,
                ))
            } else if with_latency
                && latency_samples >= gates.latency_min_samples
                && g.canary_p99_us as f64 > latency_limit
            {
                Some(("latency", g.canary_p99_us as f64, latency_limit))
            } else {
                None
            };
            if let Some((gate, observed, limit)) = breach {
                tracing::warn!(
                    gate,
                    observed,
                    limit,
                    compared = g.compared,
                    "canary gate breached; rolling back"
                );
                g.breach = Some(GateBreach {
                    gate: gate.to_owned(),
                    observed,
                    limit,
                    compared: g.compared,
                    since_seq: canary.since_seq,
                });
            }
        }
        // The breach goes to the control plane, and again every second until the canary has
        // ended: a dropped event or a refused rollback is retried, never forgotten.
        let due = canary.breach_emitted.is_none_or(|at| {
            self.now.since(at) >= Duration::from_millis(constants::GATE_BREACH_REPEAT_MS)
        });
        let Some(breach) = canary.gates.breach.clone().filter(|_| due) else {
            return;
        };
        if self.emit(CoreEvent::GateBreached(breach))
            && let Some(canary) = self.canary.as_mut()
        {
            canary.breach_emitted = Some(self.now);
        }
    }

    fn status(&self) -> CoreStatus {
        let journal_last = self.journal.last_seq();
        let now = self.now;
        let engines = self
            .engines
            .iter()
            .enumerate()
            .map(|(index, slot)| match slot.connection.as_ref() {
                Some(c) => EngineStatus {
                    name: c.name.clone(),
                    addr: slot.addr.to_string(),
                    build_version: c.build_version.clone(),
                    role: if Some(index) == self.authority {
                        EngineRole::Authoritative
                    } else if self.canary.as_ref().is_some_and(|c| c.slot == index) {
                        EngineRole::Canary
                    } else {
                        EngineRole::Standby
                    },
                    answered_through: c.answered_through,
                    lag_inputs: journal_last.saturating_sub(c.answered_through),
                    lag_us: self.input_age_us(c.answered_through + 1, now),
                    silent_ms: now.since(c.last_heard).as_millis() as u64,
                    executable_sha256: c.executable_sha256.clone(),
                    delivered_inputs: slot.delivered_inputs,
                    sent_through: c.sent_through,
                },
                None => EngineStatus {
                    name: String::new(),
                    addr: slot.addr.to_string(),
                    build_version: String::new(),
                    role: EngineRole::Down,
                    answered_through: 0,
                    lag_inputs: 0,
                    lag_us: 0,
                    silent_ms: 0,
                    executable_sha256: String::new(),
                    delivered_inputs: slot.delivered_inputs,
                    sent_through: 0,
                },
            })
            .collect();
        let sessions = self
            .sessions
            .status()
            .into_iter()
            .map(|s| SessionStatus {
                target_comp_id: s.target_comp_id,
                logged_on: s.logged_on,
                seq_num_next_out: s.seq_num_next_out,
                seq_num_next_in: s.seq_num_next_in,
            })
            .collect();
        CoreStatus {
            sessions,
            engines,
            journal_last_seq: journal_last,
            delivered_through: self.cursor.get(),
            last_switch: self.last_switch.clone(),
            switch_waiting_at: self.pending_switch.as_ref().map(|pending| pending.barrier),
            switches: self.switches,
            shadow: self.shadow_status.clone(),
            canary: self.canary.as_ref().map(|canary| CanaryStatus {
                engine: self.engines[canary.slot]
                    .connection
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                baseline: self
                    .authority
                    .and_then(|a| self.engines[a].connection.as_ref())
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                symbols: canary.symbol_names(),
                since_seq: canary.since_seq,
                gates: {
                    let baseline_p99_us = canary.baseline_latency.value_at_quantile(0.99);
                    GateStatus {
                        canary_p99_us: canary.canary_latency.value_at_quantile(0.99),
                        baseline_p99_us,
                        // Saturating float-to-int cast: the limit is a finite µs count.
                        latency_allowance_p99_us: self
                            .config
                            .gates
                            .latency_limit_us(baseline_p99_us)
                            as u64,
                        ..canary.gates.clone()
                    }
                },
            }),
            halted: names(&self.halted),
        }
    }

    /// Microseconds since input `seq` was stamped, 0 if it is not yet sequenced or too old to
    /// remember.
    fn input_age_us(&self, seq: u64, now: Timestamp) -> u64 {
        input_age(&self.recent, seq, now)
    }
}

/// Microseconds since input `seq` was stamped, from the recent (seq, stamp) pairs; 0 if it is not
/// among them.
fn input_age(recent: &VecDeque<(u64, Timestamp, Symbol)>, seq: u64, now: Timestamp) -> u64 {
    recent_input(recent, seq).map_or(0, |(time, _)| now.0.saturating_sub(time.0) / 1_000)
}

/// The symbol input `seq` is about: remembered, or read from its execution reports.
fn output_symbol(
    recent: &VecDeque<(u64, Timestamp, Symbol)>,
    seq: u64,
    outputs: &[Output],
) -> Option<Symbol> {
    recent_input(recent, seq)
        .map(|(_, symbol)| symbol)
        .or_else(|| {
            outputs.iter().find_map(|output| match &output.report {
                Report::Execution(report) => Some(report.symbol),
                Report::CancelReject(_) => None,
            })
        })
}

/// The stamp and symbol of input `seq`, if it is recent enough to be remembered.
fn recent_input(
    recent: &VecDeque<(u64, Timestamp, Symbol)>,
    seq: u64,
) -> Option<(Timestamp, Symbol)> {
    let &(first, _, _) = recent.front()?;
    let &(_, time, symbol) = recent.get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
    Some((time, symbol))
}

/// A histogram of answer latencies in µs, up to a minute, 2 significant digits: enough to tell a
/// slower build from a faster one, small enough to create per canary.
fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    match hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2) {
        Ok(histogram) => histogram,
        // The bounds are constants that hdrhistogram accepts; failing here is a bug.
        Err(error) => panic!("latency histogram bounds: {error}"),
    }
}

/// The next journal entry as an input.
fn read_input(reader: &mut dyn JournalRead) -> Result<Option<Input>, CoreError> {
    let Some(entry) = reader.next_entry()? else {
        return Ok(None);
    };
    let (input, _): (Input, usize) =
        bincode::serde::decode_from_slice(&entry.payload, bincode::config::standard()).map_err(
            |error| CoreError::Record {
                seq: entry.seq,
                reason: error.to_string(),
            },
        )?;
    if input.seq != entry.seq {
        return Err(CoreError::Record {
            seq: entry.seq,
            reason: format!("payload says input {}", input.seq),
        });
    }
    Ok(Some(input))
}

/// Feeds every input in the journal at `dir` to `engine`, which must be fresh: the state every
/// engine of the venue must be in (invariant 2). Returns how many inputs were applied. Used by
/// `baton journal replay` and the demo's final check.
pub fn replay_journal(
    dir: &std::path::Path,
    engine: &mut impl crate::engine::Engine,
) -> Result<u64, CoreError> {
    let mut reader = Journal::read_from(dir, 1)?;
    let mut outputs: Vec<Output> = Vec::new();
    let mut count = 0;
    while let Some(input) = read_input(&mut reader)? {
        if input.seq != engine.last_input_seq() + 1 {
            return Err(CoreError::Record {
                seq: input.seq,
                reason: format!(
                    "follows input {}: the journal does not start at 1 or has a gap",
                    engine.last_input_seq()
                ),
            });
        }
        outputs.clear();
        engine.apply(&input, &mut outputs);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod gate_limit_tests {
    use super::GateConfig;

    #[test]
    fn the_latency_allowance_is_the_larger_of_the_ratio_and_the_slack() {
        let gates = GateConfig {
            latency_p99_ratio_max: 3.0,
            latency_slack_us: 2_000,
            ..GateConfig::default()
        };
        // A fast baseline: scheduling noise (the slack) dominates.
        assert_eq!(gates.latency_limit_us(100), 2_100.0);
        // A slow baseline: the ratio dominates.
        assert_eq!(gates.latency_limit_us(5_000), 15_000.0);
        // Nothing measured yet: only the slack.
        assert_eq!(gates.latency_limit_us(0), 2_000.0);
    }
}
