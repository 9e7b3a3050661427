//! The gateway core: the sequencer, the router, the outbox and the shadow comparison, as one
//! sans-IO state machine.
//!
//! Every business request from a session is given the next input sequence number and a
//! timestamp that never goes backwards, and is appended to the input journal before any engine
//! sees it (invariant 2). Every attached engine receives every input: the authoritative one's
//! outputs are delivered, a standby's are compared with them (shadow comparison) and never
//! sent. Each output is keyed by (input seq, index) and handed to its session exactly once
//! (invariant 4): the core queues each input's outputs once as a [`Delivery`], the driver writes
//! it into the sessions and hands it back, and only then does the outbox cursor, the last input
//! whose outputs are all in their sessions, move past it. A gateway killed in between delivers
//! the input again after its restart, and what the sessions' stores already hold is skipped.
//!
//! Authority moves in two ways. A planned switch holds new requests (they wait in the queue, they
//! are not rejected), waits until both engines have answered every input up to the barrier, and
//! moves authority there: outputs for inputs at or below the barrier came from the old engine,
//! later ones come from the new (invariant 5). A failover happens when the authoritative engine
//! dies or falls silent: the standby takes authority at the outbox cursor, and outputs it had
//! already produced for undelivered inputs are delivered from what it sent as a shadow.
//!
//! An engine that attaches empty is brought to the authoritative engine's state by replaying
//! the journal from input 1 when that is sure to give the same state (the journal reaches back
//! to input 1, the authoritative engine's state is known to be that replay, and both run one
//! executable), which costs the authoritative engine nothing; otherwise by its snapshot and a
//! replay of the journal after it. One that kept its state (a gateway restart) continues from
//! its last input. Either way the journal is fed to an engine behind it in bounded batches
//! beside the live inputs. With no engine attached, sessions stay up and new requests are answered
//! with BusinessMessageReject (application not available).
//!
//! # Shape
//!
//! [`Core`] never reads a clock, spawns a task, sleeps or awaits (invariant 10): the driver
//! (`gateway::driver`) hands it what happened with the time, `handle_*`, and carries out what it
//! asks, `poll_*`; [`Core::next_timeout`] is the one timer. A `tidy` test keeps it so. The parts,
//! in the order an input flows through them:
//!
//! - `api`: what goes in and out (commands, replies, events, link commands, config).
//! - `sequencer`: stamps, journals and fans out requests; catches engines up from the journal.
//! - `outbox`: engine frames; each input's outputs delivered once, in input order.
//! - `shadow`: the standby's answers compared with the owner's; the canary's gates.
//! - `router`: engines attaching, lost or silent, and failover to the survivor.
//! - `switch`: operator commands; switches, canaries and rollbacks at their barrier.
//! - `transfer`: a canary's end moving the canary engine's per-symbol state to every engine.
//! - `status`: what an operator sees.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::acceptor::{Inbound, Sessions};
use super::cursor::{CursorError, OutboxCursor};
use super::input_journal::{InputJournal, JournalRead};
use super::journal::{Journal, JournalConfig, JournalError};
use super::outbox_mark::CursorStore;
use super::status::{
    CanaryStatus, CoreStatus, DivergenceSample, EngineRole, EngineStatus, GateBreach, GateStatus,
    SessionStatus, ShadowStatus, SwitchReport, SwitchScope, TransferReport,
};
use super::translate;
use crate::constants;
use crate::engine::{
    ExecType, Input, JournalOrigin, Output, Report, Request, StateTransfer, Symbol,
};
use crate::fix::store::SessionStore;
use crate::fix::tags::BusinessRejectReason;
use crate::link::{self, Frame, LinkAddr, Outputs};
use crate::time::Timestamp;

mod api;
mod outbox;
mod router;
mod sequencer;
mod shadow;
mod standby;
mod status;
mod switch;

#[cfg(test)]
mod tests;
mod transfer;

pub use api::{
    CanaryDelivery, CommandId, CoreCommand, CoreConfig, CoreError, CoreEvent, CoreRecord,
    CoreReply, CoreRequest, Delivery, ExpectedDivergence, GateConfig, LinkCommand, LinkTransmit,
    PlantedBug, REQUEST_MSG_TYPES, request_msg_type,
};
use sequencer::recent_inputs_touched;
pub use sequencer::{replay_journal, with_blob};
pub use switch::canary_symbols;

use shadow::{ShadowMap, latency_histogram};
use status::{input_age, names, recent_input};

/// A connected engine.
struct Connection {
    /// The engine's name from its Hello.
    name: String,
    /// Its build from its Hello.
    build_version: String,
    /// SHA-256 of its executable from its Hello: checked against a change's artifact before it
    /// is given authority.
    executable_sha256: String,
    /// The link protocol version it speaks: below [`link::LINK_PROTOCOL_VERSION`]'s transfer
    /// support it cannot take a state transfer, and a canary's rollback halts instead.
    protocol_version: u16,
    /// Highest input seq sent on this connection, counting those kept for its next batch.
    sent_through: u64,
    /// Highest input seq answered on this connection.
    answered_through: u64,
    /// While a snapshot is being fetched for it and restored, it gets no inputs.
    restoring: bool,
    /// Its state is what applying the journal from input 1 with its own executable gives: it
    /// attached empty and this core fed it from the journal's first input; it was never
    /// restored from another engine's snapshot. An empty newcomer running the same executable
    /// as an authoritative engine that is one reaches the same state by replaying the journal
    /// (invariants 2 and 3), so it needs no snapshot from it. State kept from before this core
    /// started, or restored from a snapshot, is not known to be one.
    journal_replica: bool,
    /// Reads the journal while the engine is behind it.
    catch_up: Option<Box<dyn JournalRead + Send>>,
    /// When the engine last sent anything.
    last_heard: Timestamp,
    /// When the core last asked the driver to send it anything: a link idle for the heartbeat
    /// interval gets a heartbeat.
    last_sent: Timestamp,
    /// Inputs kept for it while it is a standby (see [`standby`]).
    deferred: standby::Deferred,
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
    /// Inputs sequenced for its symbols: with none, the canary engine told the counterparties
    /// nothing, and ending it moves no state.
    owned_inputs: u64,
    /// What the gates have seen.
    gates: GateStatus,
    /// Answer latency of the canary engine on its inputs, µs.
    canary_latency: hdrhistogram::Histogram<u64>,
    /// Answer latency of the authoritative engine on the same inputs, µs.
    baseline_latency: hdrhistogram::Histogram<u64>,
    /// When the breach was last handed to the control plane: it is handed again every second
    /// until the canary ends, so a lost event or a refused rollback is retried.
    breach_emitted: Option<Timestamp>,
    /// How its answers are delivered, fixed when it starts so a canary never changes mode.
    delivery: CanaryDelivery,
    /// The divergence its change declares expected (symbols and request MsgTypes).
    expected: ExpectedDivergence,
    /// The canary-owned inputs `expected` covers, until they are delivered and compared: their
    /// differences are not errors, and in verified mode they are delivered as they arrive.
    expected_seqs: BTreeSet<u64>,
}

impl Canary {
    /// A canary of `symbols` on engine `slot` starting after input `barrier`.
    fn new(
        slot: usize,
        symbols: Vec<Symbol>,
        barrier: u64,
        delivery: CanaryDelivery,
        expected: ExpectedDivergence,
    ) -> Canary {
        Canary {
            slot,
            symbols,
            since_seq: barrier + 1,
            owned_inputs: 0,
            gates: GateStatus::default(),
            canary_latency: latency_histogram(),
            baseline_latency: latency_histogram(),
            breach_emitted: None,
            delivery,
            expected,
            expected_seqs: BTreeSet::new(),
        }
    }

    /// Whether `request` on `symbol` is one whose divergence the change declared.
    fn expects_divergence(&self, symbol: &Symbol, request: &Request) -> bool {
        self.expected
            .symbols
            .iter()
            .any(|name| name.as_str() == symbol.as_str())
            || self
                .expected
                .msg_types
                .iter()
                .any(|t| t.as_str() == request_msg_type(request))
    }

    fn covers(&self, symbol: &Symbol) -> bool {
        self.symbols.binary_search(symbol).is_ok()
    }

    fn symbol_names(&self) -> Vec<String> {
        names(&self.symbols)
    }
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
    /// For a canary: the divergence its change declares expected.
    expected: ExpectedDivergence,
    /// Where a canary's end stands in moving the canary engine's state back.
    transfer: TransferStep,
}

/// The steps of a state transfer at a canary's end (see the `transfer` module).
#[derive(Clone, Debug, Default, PartialEq)]
enum TransferStep {
    /// Not decided yet (or not a canary's end).
    #[default]
    Undecided,
    /// The canary engine was asked for its snapshot at the barrier, at this time.
    Requested(Timestamp),
    /// The transfer was sequenced as input `barrier + 1`; the switch completes once every
    /// engine answered it.
    Sequenced(TransferReport),
    /// No transfer: the canary's diverged symbols are halted as before, for this reason.
    Refused(String),
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
/// [`Core::poll_link`], what to hand to the sessions out of [`Core::poll_delivery`] (handed back
/// through [`Core::handle_delivered`]), events for the audit log out of [`Core::poll_event`],
/// answers to commands out of [`Core::poll_reply`], and [`Core::next_timeout`] says when to call
/// [`Core::handle_timeout`]. The
/// driver (`gateway::driver`) owns sockets, tasks and the one timer. Build with [`Core::open`].
pub struct Core<S: SessionStore, J: InputJournal = Journal> {
    /// Where answers go.
    sessions: Arc<Sessions<S>>,
    /// Paths and settings.
    config: CoreConfig,
    /// The source of truth for inputs.
    journal: J,
    /// Last input whose outputs are all in their sessions, as the driver reported through
    /// [`Core::handle_delivered`]: durable, so a restarted gateway delivers from after it.
    cursor: Box<dyn CursorStore>,
    /// Last input whose outputs were queued for delivery: every decision about what to deliver
    /// next reads this, never the cursor, so an input is queued once although its delivery is
    /// acknowledged later. At or above `cursor`; equal when the driver is idle.
    queued_through: u64,
    /// Outputs waiting for the driver to hand them to their sessions, in input order.
    deliveries: VecDeque<Delivery>,
    /// Emptied output vectors of acknowledged deliveries, reused to copy the next delivery's
    /// outputs when the engine's vector is kept for the shadow comparison (invariant 11); bounded
    /// by [`constants::OUTBOX_SPARE_OUTPUTS_MAX`]. Kept here, not in the shared pool, so the
    /// copy takes no lock.
    spare_outputs: Vec<Vec<Output>>,
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
    shadow: ShadowMap,
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
    /// Batches of inputs the driver handed back after writing them (see
    /// [`Core::recycle_inputs`]), reused for the next batches; at most
    /// [`constants::SEQUENCER_SPARE_BATCHES_MAX`].
    spare_inputs: Vec<Vec<Input>>,
    /// Output vectors the core is done with go back here, for the link decoders to fill again
    /// (see [`link::OutputsPool`]).
    outputs_pool: link::OutputsPool,
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
    /// Per session, the newest (input seq, index) its store held at start beyond the cursor
    /// (see `outbox::stored_marks`): outputs up to it are not delivered again. Empty once
    /// delivery has passed them all.
    stored_marks: BTreeMap<crate::engine::SessionId, (u64, u32)>,
    /// Inputs sequenced, sent and not yet journaled: only ever filled by the planted
    /// [`PlantedBug::DeliverBeforeJournal`].
    unjournaled: Vec<(u64, Timestamp, Vec<u8>)>,
    /// A known bug switched on to prove the simulation finds it; `None` everywhere else.
    planted: Option<PlantedBug>,
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
        Ok(Core::with_journal(
            sessions,
            config,
            journal,
            Box::new(cursor),
            now,
        ))
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
        cursor: Box<dyn CursorStore>,
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
        sequencer::recover_inbound_sequence(&sessions, &journal);
        let stored_marks = outbox::stored_marks(&sessions, cursor.get());
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
            queued_through: cursor.get(),
            cursor,
            deliveries: VecDeque::with_capacity(constants::OUTBOX_SPARE_OUTPUTS_MAX),
            spare_outputs: Vec::with_capacity(constants::OUTBOX_SPARE_OUTPUTS_MAX),
            last_time,
            engines,
            authority: None,
            previous_authority: None,
            pending_switch: None,
            switch_started: None,
            last_switch: None,
            switches: 0,
            shadow: ShadowMap::default(),
            undelivered: BTreeMap::new(),
            shadow_status: ShadowStatus::default(),
            recent: recent_inputs_touched(),
            payload: Vec::with_capacity(256),
            spare_inputs: Vec::with_capacity(constants::SEQUENCER_SPARE_BATCHES_MAX),
            outputs_pool: link::OutputsPool::new(),
            canary: None,
            canary_owned: BTreeSet::new(),
            halted: BTreeSet::new(),
            stored_marks,
            unjournaled: Vec::new(),
            planted: None,
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
    /// Whatever asks, inputs kept for the slot go first (see [`standby`]): its link carries
    /// inputs in order.
    fn transmit(&mut self, slot: usize, command: LinkCommand) {
        self.flush_deferred(slot);
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

    /// Whether input `seq` is a canary input whose delivery waits for the baseline's matching
    /// answer: a verified canary owns it and its change did not declare its divergence.
    fn held_for_verification(&self, seq: u64) -> bool {
        self.canary.as_ref().is_some_and(|canary| {
            canary.delivery == CanaryDelivery::Verified
                && self.planted != Some(PlantedBug::DeliverUnverified)
                && self.canary_owned.contains(&seq)
                && !canary.expected_seqs.contains(&seq)
        })
    }

    /// The engine a verified canary's inputs are held to: `Some(slot)` while input `seq` waits
    /// for verification. For the simulation, which plays a canary engine that answers its own
    /// inputs wrongly.
    #[doc(hidden)]
    pub fn verified_canary_of(&self, seq: u64) -> Option<usize> {
        // Not `held_for_verification`: a planted bug that skips the hold must not also stop
        // the simulated canary from answering wrongly.
        self.canary
            .as_ref()
            .filter(|canary| {
                canary.delivery == CanaryDelivery::Verified
                    && self.canary_owned.contains(&seq)
                    && !canary.expected_seqs.contains(&seq)
            })
            .map(|canary| canary.slot)
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
        self.flush_due_deferred();
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
        self.flush_due_deferred();
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
        (self.deferred_due_at()).map_or(self.next_housekeeping, |due| {
            due.min(self.next_housekeeping)
        })
    }

    /// The next thing to do on an engine link.
    pub fn poll_link(&mut self) -> Option<LinkTransmit> {
        self.transmits.pop_front()
    }

    /// Hands back the inputs of a [`LinkCommand::Inputs`] once written, so the next batch is
    /// built in the same vector instead of a new one (invariant 11). Optional: a batch not handed
    /// back is freed; so is one beyond [`constants::SEQUENCER_SPARE_BATCHES_MAX`] kept.
    pub fn recycle_inputs(&mut self, mut inputs: Vec<Input>) {
        if self.spare_inputs.len() < constants::SEQUENCER_SPARE_BATCHES_MAX
            && inputs.capacity() <= constants::SEQUENCER_BATCH_MAX
        {
            inputs.clear();
            self.spare_inputs.push(inputs);
        }
    }

    /// The pool the core gives output vectors back to: the driver has each engine link decode
    /// into it, so answers are decoded into vectors the core no longer needs (invariant 11).
    pub fn outputs_pool(&self) -> link::OutputsPool {
        self.outputs_pool.clone()
    }

    /// The next outputs to hand to their sessions, in input order: the driver writes them with
    /// [`Delivery::apply`] and hands the delivery back through [`Core::handle_delivered`].
    pub fn poll_delivery(&mut self) -> Option<Delivery> {
        self.deliveries.pop_front()
    }

    /// `delivery` (from [`Core::poll_delivery`]) is in its sessions' stores: the outbox cursor
    /// moves past its input, durably, so a restart does not deliver it again. Deliveries are
    /// handed back in the order they were polled. A gateway that dies between the store
    /// writes and this call delivers the input again after the restart, and the outputs its
    /// sessions already hold are skipped by their (input seq, index) (see `stored_marks`).
    pub fn handle_delivered(&mut self, now: Timestamp, delivery: Delivery) {
        self.now = now;
        let Delivery {
            input_seq,
            mut outputs,
        } = delivery;
        if input_seq > self.cursor.get() {
            self.cursor.set(input_seq);
        }
        if self.spare_outputs.len() < constants::OUTBOX_SPARE_OUTPUTS_MAX
            && outputs.capacity() <= constants::LINK_OUTPUTS_SPARE_CAPACITY_MAX
        {
            outputs.clear();
            self.spare_outputs.push(outputs);
        } else {
            self.outputs_pool.give(outputs);
        }
    }

    /// The sessions outputs are delivered to, for the driver's [`Delivery::apply`].
    pub fn sessions(&self) -> &Arc<Sessions<S>> {
        &self.sessions
    }

    /// The next event for the control plane's audit log.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// The next answer to a command.
    pub fn poll_reply(&mut self) -> Option<(CommandId, CoreReply)> {
        self.replies.pop_front()
    }

    /// Switches on a known bug, for the simulation's proof that its invariants catch it. Never
    /// called outside that self-test.
    #[doc(hidden)]
    pub fn plant(&mut self, bug: PlantedBug) {
        self.planted = Some(bug);
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

    /// How long a shared-memory link's reader spins before it sleeps (`[link] spin_us`).
    pub fn link_spin(&self) -> std::time::Duration {
        self.config.link_spin
    }
}
