//! The sequencer, the journal-first rule and the outbox, in one task.
//!
//! Every business request from a session is given the next input sequence number and a
//! timestamp that never goes backwards, and is appended to the input journal before the engine
//! sees it (invariant 2). The engine's answer to each input comes back as outputs keyed by
//! (input seq, index); each is written into its session exactly once (invariant 4): the outbox
//! cursor records the last input whose outputs are all delivered, and outputs at or below it
//! are dropped when the journal is replayed after a restart or an engine reconnect.
//!
//! When the engine is unreachable the sessions stay up and new requests are answered with
//! BusinessMessageReject (application not available); inputs that were journaled but not
//! answered are sent again when the engine is back, and its answers delivered then.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::acceptor::{Inbound, Sessions};
use super::cursor::{CursorError, OutboxCursor};
use super::journal::{Journal, JournalConfig, JournalError};
use super::translate;
use crate::constants;
use crate::engine::{Input, Output};
use crate::fix::store::SessionStore;
use crate::fix::tags::BusinessRejectReason;
use crate::fix::time::Timestamp;
use crate::link::{self, Frame, LinkAddr, LinkError, LinkWriter};

/// Why the core cannot run at all (start-up failures; runtime link failures are handled).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The journal could not be opened or written: nothing can be sequenced safely.
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

/// Where the core keeps its state and finds its engine.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The engine's link address.
    pub engine: LinkAddr,
    /// The input journal's directory (the outbox cursor lives beside it).
    pub journal_dir: PathBuf,
    /// Journal segment size and durability.
    pub journal: JournalConfig,
}

/// The engine connection as the core uses it.
struct EngineConnection {
    /// Inputs go out here.
    writer: LinkWriter,
    /// Frames from the reader task.
    frames: mpsc::Receiver<Result<Frame, LinkError>>,
    /// The engine's name, for logs.
    name: String,
    /// Highest input seq sent on this connection.
    sent_through: u64,
    /// Highest input seq answered on this connection.
    answered_through: u64,
}

/// The sequencer/outbox task. Build with [`Core::open`], run with [`Core::run`].
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
    /// The engine, while connected.
    engine: Option<EngineConnection>,
    /// Reused to encode journal payloads.
    payload: Vec<u8>,
}

impl<S: SessionStore + Send + 'static> Core<S> {
    /// Opens the journal and the cursor.
    pub fn open(sessions: Arc<Sessions<S>>, config: CoreConfig) -> Result<Core<S>, CoreError> {
        let journal = Journal::open(&config.journal_dir, config.journal)?;
        let cursor = OutboxCursor::open(&config.journal_dir.join("outbox.cursor"))?;
        tracing::info!(
            journal_last_seq = journal.last_seq(),
            delivered_through = cursor.get(),
            "sequencer ready"
        );
        Ok(Core {
            sessions,
            config,
            journal,
            cursor,
            last_time: Timestamp::ZERO,
            engine: None,
            payload: Vec::with_capacity(256),
        })
    }

    /// Runs until shutdown.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut reconnect =
            tokio::time::interval(Duration::from_millis(constants::ENGINE_RECONNECT_MS));
        let mut heartbeat = tokio::time::interval(Duration::from_millis(
            constants::LINK_HEARTBEAT_INTERVAL_MS_DEFAULT,
        ));
        let mut batch: Vec<Inbound> = Vec::with_capacity(constants::SEQUENCER_BATCH_MAX);
        loop {
            let room = self.engine.as_ref().is_none_or(|e| {
                (e.sent_through - e.answered_through) < constants::LINK_INPUTS_IN_FLIGHT_MAX as u64
            });
            tokio::select! {
                received = inbound.recv_many(&mut batch, constants::SEQUENCER_BATCH_MAX), if room => {
                    if received == 0 {
                        return;
                    }
                    self.sequence(&mut batch).await;
                }
                frame = recv_frame(&mut self.engine) => self.on_frame(frame),
                _ = reconnect.tick(), if self.engine.is_none() => self.connect().await,
                _ = heartbeat.tick(), if self.engine.is_some() => self.heartbeat().await,
                _ = shutdown.changed() => {
                    if let Err(error) = self.journal.flush() {
                        tracing::error!(%error, "journal flush at shutdown");
                    }
                    return;
                }
            }
        }
    }

    /// Stamps, journals and sends a batch of requests; one journal flush and one link write per
    /// batch.
    async fn sequence(&mut self, batch: &mut Vec<Inbound>) {
        if self.engine.is_none() {
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
            inputs.push(input);
        }
        if let Err(error) = self.journal.flush() {
            tracing::error!(%error, "journal flush failed");
        }
        self.send(&inputs).await;
    }

    async fn send(&mut self, inputs: &[Input]) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let Some(last) = inputs.last() else {
            return;
        };
        match engine.writer.send_inputs(inputs).await {
            Ok(()) => engine.sent_through = last.seq,
            Err(error) => {
                // The inputs are journaled; they are sent again when the engine is back.
                tracing::warn!(engine = %engine.name, %error, "engine link lost while sending");
                self.engine = None;
            }
        }
    }

    fn on_frame(&mut self, frame: Option<Result<Frame, LinkError>>) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        match frame {
            Some(Ok(Frame::Outputs(outputs))) | Some(Ok(Frame::Replayed(outputs))) => {
                engine.answered_through = engine.answered_through.max(outputs.input_seq);
                self.deliver(outputs.input_seq, &outputs.outputs);
            }
            Some(Ok(Frame::AlreadyApplied(applied))) => {
                engine.answered_through = engine.answered_through.max(applied.input_seq);
                if applied.input_seq > self.cursor.get() {
                    tracing::error!(
                        input_seq = applied.input_seq,
                        "engine no longer holds the outputs of an undelivered input"
                    );
                    self.cursor.set(applied.input_seq);
                }
            }
            Some(Ok(Frame::Heartbeat(_))) => {}
            Some(Ok(other)) => tracing::debug!(kind = %other.kind(), "engine frame ignored"),
            Some(Err(error)) => {
                tracing::warn!(engine = %engine.name, %error, "engine link lost");
                self.engine = None;
            }
            None => {
                tracing::warn!(engine = %engine.name, "engine link reader ended");
                self.engine = None;
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

    async fn heartbeat(&mut self) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let silent = engine.writer.last_sent().elapsed();
        if silent >= Duration::from_millis(constants::LINK_HEARTBEAT_INTERVAL_MS_DEFAULT)
            && let Err(error) = engine.writer.heartbeat(self.journal.last_seq()).await
        {
            tracing::warn!(engine = %engine.name, %error, "engine link lost");
            self.engine = None;
        }
    }

    /// Connects to the engine and sends it every journaled input it has not answered yet.
    async fn connect(&mut self) {
        let (link, hello) = match link::connect(&self.config.engine).await {
            Ok(connected) => connected,
            Err(error) => {
                tracing::debug!(engine = %self.config.engine, %error, "engine not reachable");
                return;
            }
        };
        let journal_last = self.journal.last_seq();
        if hello.last_input_seq > journal_last {
            tracing::error!(
                engine = %hello.engine_name,
                engine_last = hello.last_input_seq,
                journal_last,
                "engine is ahead of the journal; refusing it"
            );
            return;
        }
        let (mut reader, writer) = link.into_split();
        let (frames_tx, frames_rx) = mpsc::channel(constants::LINK_INPUTS_IN_FLIGHT_MAX + 64);
        tokio::spawn(async move {
            loop {
                let frame = reader.recv().await;
                let failed = frame.is_err();
                if frames_tx.send(frame).await.is_err() || failed {
                    return;
                }
            }
        });
        // Resend from the first input not known delivered, so the engine's replay window (or a
        // fresh engine's re-execution) yields the outputs the gateway may not have delivered.
        let from = hello.last_input_seq.min(self.cursor.get()) + 1;
        tracing::info!(engine = %hello.engine_name, build = %hello.build_version, from, journal_last, "engine attached; replaying journal");
        self.engine = Some(EngineConnection {
            writer,
            frames: frames_rx,
            name: hello.engine_name,
            sent_through: from - 1,
            answered_through: from - 1,
        });
        if let Err(error) = self.replay(from, journal_last).await {
            tracing::error!(%error, "journal replay to the engine failed");
            self.engine = None;
        }
    }

    /// Sends journal entries `from..=to` to the engine, in batches, delivering answers as they
    /// come so neither side's buffers fill.
    async fn replay(&mut self, from: u64, to: u64) -> Result<(), CoreError> {
        if from > to {
            return Ok(());
        }
        let mut reader = Journal::read_from(&self.config.journal_dir, from)?;
        let mut batch = Vec::with_capacity(constants::SEQUENCER_BATCH_MAX);
        let mut next = from;
        while next <= to {
            batch.clear();
            while batch.len() < constants::SEQUENCER_BATCH_MAX && next <= to {
                let Some(entry) = reader.next()? else {
                    return Err(CoreError::Record {
                        seq: next,
                        reason: "missing from the journal".to_string(),
                    });
                };
                let (input, _): (Input, usize) =
                    bincode::serde::decode_from_slice(&entry.payload, bincode::config::standard())
                        .map_err(|error| CoreError::Record {
                            seq: entry.seq,
                            reason: error.to_string(),
                        })?;
                if input.seq != entry.seq {
                    return Err(CoreError::Record {
                        seq: entry.seq,
                        reason: format!("payload says input {}", input.seq),
                    });
                }
                self.last_time = self.last_time.max(input.time);
                batch.push(input);
                next = entry.seq + 1;
            }
            // Keep the in-flight window bounded: drain answers before sending more.
            while let Some(engine) = self.engine.as_mut()
                && engine.sent_through - engine.answered_through
                    >= (constants::LINK_INPUTS_IN_FLIGHT_MAX - batch.len()) as u64
            {
                let frame = engine.frames.recv().await;
                self.on_frame(frame);
            }
            self.send(&batch).await;
            if self.engine.is_none() {
                return Ok(());
            }
        }
        Ok(())
    }
}

async fn recv_frame(engine: &mut Option<EngineConnection>) -> Option<Result<Frame, LinkError>> {
    match engine {
        Some(engine) => engine.frames.recv().await,
        None => std::future::pending().await,
    }
}
