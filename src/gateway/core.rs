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

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::acceptor::{Inbound, Sessions};
use super::cursor::{CursorError, OutboxCursor};
use super::journal::{Journal, JournalConfig, JournalError, JournalReader};
use super::translate;
use crate::constants;
use crate::control::api::{
    ControlReply, ControlRequest, DivergenceSample, EngineRole, EngineStatus, SessionStatus,
    ShadowStatus, Status, SwitchReport,
};
use crate::control::endpoint::ControlCommand;
use crate::engine::{Input, Output};
use crate::fix::store::SessionStore;
use crate::fix::tags::BusinessRejectReason;
use crate::fix::time::Timestamp;
use crate::link::{self, Frame, LinkAddr, LinkError, LinkWriter, Outputs};

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
}

/// A connected engine.
struct Connection {
    /// Inputs and requests go out here.
    writer: LinkWriter,
    /// Distinguishes this connection's frames from an earlier one's still in the channel.
    generation: u64,
    /// The engine's name from its Hello.
    name: String,
    /// Its build from its Hello.
    build_version: String,
    /// Highest input seq sent on this connection.
    sent_through: u64,
    /// Highest input seq answered on this connection.
    answered_through: u64,
    /// While a snapshot is being fetched for it and restored, it gets no inputs.
    restoring: bool,
    /// Reads the journal while the engine is behind it.
    catch_up: Option<JournalReader>,
    /// When the engine last sent anything.
    last_heard: Instant,
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
    retry_at: Instant,
    /// A connection attempt is running in its own task.
    connecting: bool,
}

/// A planned switch waiting for its barrier.
struct PendingSwitch {
    /// Slot that will take authority.
    to: usize,
    /// Last input sequenced under the old authority.
    barrier: u64,
    /// When inputs started being held.
    started: Instant,
    /// Who to answer.
    reply: Option<oneshot::Sender<ControlReply>>,
}

/// Outputs of one input from both engines, until compared (and, for the standby's, until
/// delivered or no longer needed for a failover).
#[derive(Default)]
struct ShadowEntry {
    /// The authoritative engine's outputs.
    authoritative: Option<Vec<Output>>,
    /// The standby's outputs.
    standby: Option<Vec<Output>>,
    /// Whether the comparison was counted.
    compared: bool,
}

/// A frame from some engine connection.
type TaggedFrame = (usize, u64, Result<Frame, LinkError>);

/// The outcome of a connection attempt to slot `usize`, made in its own task so an unreachable
/// engine never delays sequencing.
type Attempt = (usize, Result<(link::EngineLink, link::Hello), LinkError>);

/// The sequencer/router/outbox task. Build with [`Core::open`], run with [`Core::run`].
pub struct Core<S: SessionStore> {
    /// Where answers go.
    sessions: Arc<Sessions<S>>,
    /// Paths and settings.
    config: CoreConfig,
    /// The source of truth for inputs.
    journal: Journal,
    /// Last input whose outputs are all delivered.
    cursor: OutboxCursor,
    /// Time of the last sequenced input: stamps never go backwards, even if the wall clock does.
    last_time: Timestamp,
    /// Configured engines.
    engines: Vec<EngineSlot>,
    /// Slot whose outputs are delivered.
    authority: Option<usize>,
    /// Slot that had authority before the last switch (the rollback target).
    previous_authority: Option<usize>,
    /// A planned switch waiting for its barrier.
    pending_switch: Option<PendingSwitch>,
    /// Set when authority moved; cleared by the first input sequenced after, to measure the
    /// pause.
    switch_started: Option<(Instant, SwitchReport)>,
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
    /// (seq, stamp) of recent inputs, for lag in time.
    recent: VecDeque<(u64, Timestamp)>,
    /// Frames from every connection's reader task.
    frames_tx: mpsc::Sender<TaggedFrame>,
    /// See `frames_tx`.
    frames_rx: mpsc::Receiver<TaggedFrame>,
    /// Connection generations.
    generation: u64,
    /// Results of connection attempts.
    attempts_tx: mpsc::Sender<Attempt>,
    /// See `attempts_tx`.
    attempts_rx: mpsc::Receiver<Attempt>,
    /// Reused to encode journal payloads.
    payload: Vec<u8>,
}

impl<S: SessionStore + Send + 'static> Core<S> {
    /// Opens the journal and the cursor.
    pub fn open(sessions: Arc<Sessions<S>>, config: CoreConfig) -> Result<Core<S>, CoreError> {
        let journal = Journal::open(&config.journal_dir, config.journal)?;
        // Stamps never go backwards, also across a restart on a clock that is behind.
        let last_time = match journal.last_seq() {
            0 => Timestamp::ZERO,
            last => Journal::read_from(&config.journal_dir, last)?
                .next()?
                .map(|entry| entry.time)
                .unwrap_or(Timestamp::ZERO),
        };
        let cursor = OutboxCursor::open(&config.journal_dir.join("outbox.cursor"))?;
        tracing::info!(
            journal_last_seq = journal.last_seq(),
            delivered_through = cursor.get(),
            "sequencer ready"
        );
        let now = Instant::now();
        let engines = config
            .engines
            .iter()
            .map(|addr| EngineSlot {
                addr: addr.clone(),
                connection: None,
                retry_at: now,
                connecting: false,
            })
            .collect();
        // Room for every engine's full in-flight window of answers, so a reader task never blocks
        // while the core is blocked writing to another engine.
        let (frames_tx, frames_rx) =
            mpsc::channel(config.engines.len().max(1) * constants::LINK_INPUTS_IN_FLIGHT_MAX + 256);
        let (attempts_tx, attempts_rx) = mpsc::channel(config.engines.len().max(1));
        Ok(Core {
            attempts_tx,
            attempts_rx,
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
            frames_tx,
            frames_rx,
            generation: 0,
            payload: Vec::with_capacity(256),
        })
    }

    /// Runs until shutdown.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut control: mpsc::Receiver<ControlCommand>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(constants::LINK_POLL_INTERVAL_MS));
        let mut batch: Vec<Inbound> = Vec::with_capacity(constants::SEQUENCER_BATCH_MAX);
        loop {
            self.catch_up().await;
            let accepting = self.pending_switch.is_none() && self.room_for_inputs();
            let lagging = self.any_catching_up();
            tokio::select! {
                received = inbound.recv_many(&mut batch, constants::SEQUENCER_BATCH_MAX), if accepting => {
                    if received == 0 {
                        return;
                    }
                    self.sequence(&mut batch).await;
                }
                Some((slot, generation, frame)) = self.frames_rx.recv() => {
                    self.on_frame(slot, generation, frame).await;
                }
                Some(command) = control.recv() => self.on_control(command),
                Some((slot, attempt)) = self.attempts_rx.recv() => {
                    self.engines[slot].connecting = false;
                    match attempt {
                        Ok((link, hello)) => self.attach(slot, link, hello).await,
                        Err(error) => tracing::debug!(engine = %self.engines[slot].addr, %error, "engine not reachable"),
                    }
                }
                _ = tick.tick() => self.housekeeping().await,
                _ = tokio::task::yield_now(), if lagging => {}
                _ = shutdown.changed() => {
                    // Requests already taken from sessions (their MsgSeqNums consumed) are
                    // sequenced, not dropped; their answers reach the sessions by resend after a
                    // restart if the engines answer too late.
                    inbound.close();
                    while let Ok(request) = inbound.try_recv() {
                        batch.push(request);
                    }
                    if !batch.is_empty() {
                        self.sequence(&mut batch).await;
                    }
                    if let Err(error) = self.journal.flush() {
                        tracing::error!(%error, "journal flush at shutdown");
                    }
                    return;
                }
            }
            self.try_complete_switch();
        }
    }

    /// Whether the authoritative engine can take more inputs now. A standby never holds the
    /// venue back: when its window is full it falls behind and catches up from the journal.
    fn room_for_inputs(&self) -> bool {
        self.authority
            .and_then(|index| self.engines[index].connection.as_ref())
            .is_none_or(|c| c.in_flight() < constants::LINK_INPUTS_IN_FLIGHT_MAX as u64)
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

    /// Stamps, journals and fans out a batch of requests; one journal flush and one link write
    /// per engine per batch.
    async fn sequence(&mut self, batch: &mut Vec<Inbound>) {
        if self.authority.is_none() {
            for request in batch.drain(..) {
                self.sessions.business_reject(
                    request.session,
                    &request.message,
                    BusinessRejectReason::ApplicationNotAvailable,
                    "application not available",
                );
            }
            return;
        }
        let first_seq = self.journal.last_seq() + 1;
        let mut inputs = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            let seq = self.journal.last_seq() + 1;
            let time = Timestamp::now().max(self.last_time);
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
                self.journal
                    .append(seq, time, &self.payload)
                    .map_err(|error| error.to_string())
            });
            if let Err(error) = appended {
                // Not journaled means not sequenced: the request is refused, never half-done.
                tracing::error!(%error, seq, "journal append failed");
                self.sessions.business_reject(
                    request.session,
                    &request.message,
                    BusinessRejectReason::ApplicationNotAvailable,
                    "application not available",
                );
                continue;
            }
            self.last_time = time;
            // Journaled: the session may now persist that it received this message.
            if let Ok(fix_seq) = request.message.uint(crate::fix::tags::MSG_SEQ_NUM) {
                self.sessions.confirm(request.session, fix_seq);
            }
            if self.recent.len() == constants::RECENT_INPUTS_MAX {
                self.recent.pop_front();
            }
            self.recent.push_back((seq, time));
            inputs.push(input);
        }
        if let Err(error) = self.journal.flush() {
            tracing::error!(%error, "journal flush failed");
        }
        let Some(last) = inputs.last().map(|input| input.seq) else {
            return;
        };
        if let Some((started, mut report)) = self.switch_started.take() {
            report.pause_us = started.elapsed().as_micros() as u64;
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
                self.send_to(index, &inputs, last).await;
            }
        }
    }

    async fn send_to(&mut self, index: usize, inputs: &[Input], last: u64) {
        let Some(connection) = self.engines[index].connection.as_mut() else {
            return;
        };
        let timeout = Duration::from_millis(constants::ENGINE_WRITE_TIMEOUT_MS);
        let sent = match tokio::time::timeout(timeout, connection.writer.send_inputs(inputs)).await
        {
            Ok(sent) => sent,
            Err(_) => Err(LinkError::PeerSilent(timeout)),
        };
        match sent {
            Ok(()) => connection.sent_through = last,
            Err(error) => {
                let name = connection.name.clone();
                tracing::warn!(engine = %name, %error, "engine link lost while sending");
                self.lose(index);
            }
        }
    }

    /// Sends the next journal entries to every engine behind the journal (after an attach, a
    /// restore or a reconnect), one batch each, within its in-flight window.
    async fn catch_up(&mut self) {
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
                match Journal::read_from(&self.config.journal_dir, from) {
                    Ok(reader) => connection.catch_up = Some(reader),
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
                    match read_input(reader) {
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
                self.send_to(index, &inputs, last_sent).await;
            }
        }
    }

    // ----- engine frames -----------------------------------------------------------------------

    async fn on_frame(&mut self, index: usize, generation: u64, frame: Result<Frame, LinkError>) {
        let Some(connection) = self
            .engines
            .get_mut(index)
            .and_then(|slot| slot.connection.as_mut())
        else {
            return;
        };
        if connection.generation != generation {
            return;
        }
        connection.last_heard = Instant::now();
        match frame {
            Ok(Frame::Outputs(outputs)) | Ok(Frame::Replayed(outputs)) => {
                connection.answered_through = connection.answered_through.max(outputs.input_seq);
                self.on_outputs(index, outputs);
            }
            Ok(Frame::AlreadyApplied(applied)) => {
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
            Ok(Frame::Snapshot(snapshot)) => {
                // Asked from the authoritative engine for a joining standby.
                let target = self
                    .engines
                    .iter()
                    .position(|slot| slot.connection.as_ref().is_some_and(|c| c.restoring));
                if let Some(target) = target
                    && let Some(standby) = self.engines[target].connection.as_mut()
                {
                    tracing::info!(engine = %standby.name, at = snapshot.at_input_seq, bytes = snapshot.bytes.len(), "restoring standby from snapshot");
                    if let Err(error) = standby.writer.restore(&snapshot.bytes).await {
                        tracing::warn!(engine = %standby.name, %error, "restore failed");
                        self.lose(target);
                    }
                }
            }
            Ok(Frame::Restored(restored)) => {
                tracing::info!(engine = %connection.name, at = restored.at_input_seq, digest = %restored.digest, "standby restored; catching up from the journal");
                connection.restoring = false;
                connection.sent_through = restored.at_input_seq;
                connection.answered_through = restored.at_input_seq;
                connection.catch_up = None;
            }
            Ok(Frame::Refused(refused)) => {
                tracing::error!(engine = %connection.name, reason = %refused.reason, "engine refused a request");
                if connection.restoring {
                    self.lose(index);
                }
            }
            Ok(Frame::Heartbeat(_)) | Ok(Frame::Digest(_)) => {}
            Ok(other) => tracing::debug!(kind = %other.kind(), "engine frame ignored"),
            Err(error) => {
                tracing::warn!(engine = %connection.name, %error, "engine link lost");
                self.lose(index);
            }
        }
    }

    fn on_outputs(&mut self, index: usize, outputs: Outputs) {
        let seq = outputs.input_seq;
        let is_authority = Some(index) == self.authority;
        let has_standby = self.engines.iter().enumerate().any(|(i, slot)| {
            Some(i) != self.authority && slot.connection.as_ref().is_some_and(|c| !c.restoring)
        });
        if is_authority {
            if has_standby {
                self.record_shadow(seq, outputs.outputs.clone(), true);
            }
            if seq > self.cursor.get() {
                self.undelivered.insert(seq, outputs.outputs);
                self.drain_undelivered();
            }
        } else if seq > self.cursor.get() || self.shadow.contains_key(&seq) {
            self.record_shadow(seq, outputs.outputs, false);
        }
        self.trim_shadow();
    }

    /// Stores one side's outputs for `seq` and compares once both are there.
    fn record_shadow(&mut self, seq: u64, outputs: Vec<Output>, authoritative: bool) {
        if self.shadow.len() >= constants::SHADOW_PENDING_MAX && !self.shadow.contains_key(&seq) {
            return;
        }
        let entry = self.shadow.entry(seq).or_default();
        if authoritative {
            entry.authoritative = Some(outputs);
        } else {
            entry.standby = Some(outputs);
        }
        if !entry.compared
            && let (Some(a), Some(b)) = (&entry.authoritative, &entry.standby)
        {
            entry.compared = true;
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
            let stale = self.shadow.len() > constants::SHADOW_PENDING_MAX;
            if done || stale {
                self.shadow.pop_first();
            } else {
                break;
            }
        }
    }

    /// Hands each output of `input_seq` to its session, once.
    fn deliver(&mut self, input_seq: u64, outputs: &[Output]) {
        if input_seq <= self.cursor.get() {
            return;
        }
        let now = Timestamp::now();
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

    async fn housekeeping(&mut self) {
        let now = Instant::now();
        // Declare a silent authoritative engine dead.
        if let Some(authority) = self.authority
            && let Some(connection) = self.engines[authority].connection.as_ref()
            && connection.last_heard.elapsed() > self.config.failover_timeout
        {
            tracing::warn!(engine = %connection.name, silent_ms = connection.last_heard.elapsed().as_millis() as u64, "authoritative engine silent; failing over");
            self.lose(authority);
        }
        for index in 0..self.engines.len() {
            let slot = &mut self.engines[index];
            if slot.connection.is_none() && !slot.connecting && slot.retry_at <= now {
                slot.retry_at = now + Duration::from_millis(constants::ENGINE_RECONNECT_MS);
                slot.connecting = true;
                let addr = slot.addr.clone();
                let attempts = self.attempts_tx.clone();
                tokio::spawn(async move {
                    let timeout = Duration::from_millis(constants::ENGINE_CONNECT_TIMEOUT_MS);
                    let attempt = link::connect_with_timeout(&addr, timeout).await;
                    let _ = attempts.send((index, attempt)).await;
                });
            }
        }
        for index in 0..self.engines.len() {
            if let Some(connection) = self.engines[index].connection.as_mut()
                && connection.writer.last_sent().elapsed()
                    >= Duration::from_millis(constants::LINK_HEARTBEAT_INTERVAL_MS_DEFAULT)
                && let Err(error) = connection.writer.heartbeat(self.journal.last_seq()).await
            {
                let name = connection.name.clone();
                tracing::warn!(engine = %name, %error, "engine link lost");
                self.lose(index);
            }
        }
    }

    async fn attach(&mut self, index: usize, link: link::EngineLink, hello: link::Hello) {
        let journal_last = self.journal.last_seq();
        if hello.last_input_seq > journal_last {
            tracing::error!(engine = %hello.engine_name, engine_last = hello.last_input_seq, journal_last, "engine is ahead of the journal; refusing it");
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let (mut reader, writer) = link.into_split();
        let frames = self.frames_tx.clone();
        tokio::spawn(async move {
            loop {
                let frame = reader.recv().await;
                let failed = frame.is_err();
                if frames.send((index, generation, frame)).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut connection = Connection {
            writer,
            generation,
            name: hello.engine_name.clone(),
            build_version: hello.build_version.clone(),
            sent_through: hello.last_input_seq,
            answered_through: hello.last_input_seq,
            restoring: false,
            catch_up: None,
            last_heard: Instant::now(),
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
            }
            Some(authority) if hello.last_input_seq == 0 && journal_last > 0 => {
                // An empty standby: restore it from the authoritative engine's snapshot.
                connection.restoring = true;
                tracing::info!(engine = %hello.engine_name, build = %hello.build_version, "standby attached empty; requesting a snapshot");
                self.engines[index].connection = Some(connection);
                let requested = match self.engines[authority].connection.as_mut() {
                    Some(authoritative) => authoritative.writer.request_snapshot().await,
                    None => Ok(()),
                };
                if let Err(error) = requested {
                    tracing::warn!(%error, "snapshot request failed");
                    self.lose(authority);
                }
            }
            Some(_) => {
                tracing::info!(engine = %hello.engine_name, build = %hello.build_version, from = hello.last_input_seq + 1, journal_last, "standby attached");
                self.engines[index].connection = Some(connection);
            }
        }
    }

    /// The connection of slot `index` is gone; if it had authority, fail over.
    fn lose(&mut self, index: usize) {
        let Some(lost) = self.engines[index].connection.take() else {
            return;
        };
        self.engines[index].retry_at =
            Instant::now() + Duration::from_millis(constants::ENGINE_RECONNECT_MS);
        if self.pending_switch.as_ref().is_some_and(|p| p.to == index)
            && let Some(mut pending) = self.pending_switch.take()
            && let Some(reply) = pending.reply.take()
        {
            let _ = reply.send(ControlReply::Refused {
                reason: format!("standby {} was lost during the switch", lost.name),
            });
        }
        if Some(index) != self.authority {
            tracing::warn!(engine = %lost.name, "standby lost");
            return;
        }
        self.authority = None;
        let standby = self
            .engines
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.connection.as_ref().is_some_and(|c| !c.restoring))
            .max_by_key(|(_, slot)| slot.connection.as_ref().map(|c| c.answered_through))
            .map(|(i, _)| i);
        let Some(next) = standby else {
            tracing::error!(engine = %lost.name, "authoritative engine lost and no standby can take over");
            return;
        };
        if let Some(mut pending) = self.pending_switch.take()
            && let Some(reply) = pending.reply.take()
        {
            let _ = reply.send(ControlReply::Refused {
                reason: format!(
                    "authoritative engine {} was lost; failed over instead",
                    lost.name
                ),
            });
        }
        self.authority = Some(next);
        self.previous_authority = Some(index);
        self.switches += 1;
        let delivered = self.cursor.get();
        let name = self.engines[next]
            .connection
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        tracing::warn!(from = %lost.name, to = %name, delivered_through = delivered, "failover: standby takes authority");
        let report = SwitchReport {
            from: lost.name,
            to: name,
            barrier_seq: delivered,
            pause_us: 0,
            planned: false,
        };
        self.last_switch = Some(report.clone());
        self.switch_started = Some((Instant::now(), report));
        // Deliver what the new authority already produced as a shadow for undelivered inputs,
        // in input order.
        self.undelivered.clear();
        for (seq, entry) in self.shadow.range(delivered + 1..) {
            if let Some(outputs) = &entry.standby {
                self.undelivered.insert(*seq, outputs.clone());
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

    fn on_control(&mut self, command: ControlCommand) {
        match command.request {
            ControlRequest::Status => {
                let _ = command.reply.send(ControlReply::Status(self.status()));
            }
            ControlRequest::Switch | ControlRequest::Rollback => {
                let rollback = command.request == ControlRequest::Rollback;
                match self.start_switch(rollback) {
                    Ok(()) => {
                        if let Some(pending) = self.pending_switch.as_mut() {
                            pending.reply = Some(command.reply);
                        }
                    }
                    Err(reason) => {
                        let _ = command.reply.send(ControlReply::Refused { reason });
                    }
                }
            }
        }
    }

    fn start_switch(&mut self, rollback: bool) -> Result<(), String> {
        if self.pending_switch.is_some() {
            return Err("a switch is already in progress".into());
        }
        let Some(authority) = self.authority else {
            return Err("no engine has authority".into());
        };
        let target = if rollback {
            match self.previous_authority {
                Some(previous) if previous != authority => previous,
                _ => return Err("nothing to roll back to: no earlier authority".into()),
            }
        } else {
            match (0..self.engines.len())
                .find(|&i| i != authority && self.engines[i].connection.is_some())
            {
                Some(target) => target,
                None => return Err("no standby attached".into()),
            }
        };
        let Some(standby) = self.engines[target].connection.as_ref() else {
            return Err("the rollback target is not attached".into());
        };
        if standby.restoring {
            return Err(format!("standby {} is still restoring", standby.name));
        }
        let lag = self
            .journal
            .last_seq()
            .saturating_sub(standby.answered_through);
        if lag > constants::SWITCH_LAG_MAX_INPUTS {
            return Err(format!("standby {} is {lag} inputs behind", standby.name));
        }
        self.pending_switch = Some(PendingSwitch {
            to: target,
            barrier: self.journal.last_seq(),
            started: Instant::now(),
            reply: None,
        });
        Ok(())
    }

    /// Moves authority once both engines have answered every input up to the barrier.
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
        let Some(mut pending) = self.pending_switch.take() else {
            return;
        };
        let name = |index: usize| {
            self.engines[index]
                .connection
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        let report = SwitchReport {
            from: name(authority),
            to: name(pending.to),
            barrier_seq: pending.barrier,
            pause_us: pending.started.elapsed().as_micros() as u64,
            planned: true,
        };
        tracing::info!(from = %report.from, to = %report.to, barrier = report.barrier_seq, pause_us = report.pause_us, "switched authority");
        self.previous_authority = Some(authority);
        self.authority = Some(pending.to);
        self.switches += 1;
        self.last_switch = Some(report.clone());
        if let Some(reply) = pending.reply.take() {
            let _ = reply.send(ControlReply::Switched(report));
        }
    }

    fn status(&self) -> Status {
        let journal_last = self.journal.last_seq();
        let now = Timestamp::now();
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
                    } else {
                        EngineRole::Standby
                    },
                    answered_through: c.answered_through,
                    lag_inputs: journal_last.saturating_sub(c.answered_through),
                    lag_us: self.input_age_us(c.answered_through + 1, now),
                    silent_ms: c.last_heard.elapsed().as_millis() as u64,
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
        Status {
            sessions,
            engines,
            journal_last_seq: journal_last,
            delivered_through: self.cursor.get(),
            last_switch: self.last_switch.clone(),
            switches: self.switches,
            shadow: self.shadow_status.clone(),
        }
    }

    /// Microseconds since input `seq` was stamped, 0 if it is not yet sequenced or too old to
    /// remember.
    fn input_age_us(&self, seq: u64, now: Timestamp) -> u64 {
        let Some(&(first, _)) = self.recent.front() else {
            return 0;
        };
        match seq
            .checked_sub(first)
            .and_then(|i| self.recent.get(i as usize))
        {
            Some(&(_, time)) => now.0.saturating_sub(time.0) / 1_000,
            None => 0,
        }
    }
}

/// The next journal entry as an input.
fn read_input(reader: &mut JournalReader) -> Result<Option<Input>, CoreError> {
    let Some(entry) = reader.next()? else {
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
