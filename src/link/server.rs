//! The engine side of the link: one blocking thread that owns the engine, serves one gateway
//! connection at a time and keeps the engine's state across reconnects.
//!
//! How resent inputs are answered is described in the [`crate::link`] docs.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::auth::{self, LinkSecret};
use super::error::LinkError;
use super::protocol::{
    AlreadyApplied, AuthProof, Close, DigestReport, Frame, FrameDecoder, FrameKind, Heartbeat,
    Hello, LINK_PROTOCOL_VERSION, Refused, RefusedRequest, Restored, Snapshot, encode,
    encode_outputs_payload, write_message,
};
use super::replay::ReplayLog;
use super::transport::{Conn, LinkAddr, LinkListener};
use crate::constants::{
    LINK_FRAME_BYTES_MAX, LINK_HANDSHAKE_TIMEOUT_MS, LINK_HEARTBEAT_INTERVAL_MS_DEFAULT,
    LINK_PEER_TIMEOUT_MS_DEFAULT, LINK_PENDING_HANDSHAKES_MAX, LINK_POLL_INTERVAL_MS,
    LINK_REPLAY_BYTES_MAX, LINK_REPLAY_INPUTS_MAX,
};
use crate::engine::{Digest, Engine, FrozenState, Input, Output, SNAPSHOT_FORMAT_VERSIONS};
use crate::fix::time::Timestamp;

/// How an engine process presents itself and paces its link.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The operator's name for this engine, sent in Hello and shown in gateway logs.
    pub engine_name: String,
    /// Snapshot format versions the engine reads, oldest first, the last being the one it
    /// writes. The [`crate::engine::Engine`] trait does not expose them, so the process that
    /// knows its engine says so here; the default is the reference engine's. Empty means
    /// unknown: Snapshot frames then carry format version 0.
    pub snapshot_formats: Vec<u16>,
    /// Silence after which the engine sends a Heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence from the gateway after which the engine drops it and accepts the next.
    pub peer_timeout: Duration,
    /// How long the engine waits for Welcome after its Hello.
    pub handshake_timeout: Duration,
    /// SHA-256 of the executable serving the engine, sent in Hello so the gateway can tie the
    /// engine to an approved artifact. The process computes it
    /// ([`crate::control::artifact::self_sha256`]), as the serve loop cannot know which binary
    /// it is part of; empty (the default) means unknown.
    pub executable_sha256: String,
    /// The link secret a gateway must prove before it may send anything, and that this engine
    /// proves in turn ([`super::auth`]); `None` accepts any gateway that can connect.
    pub link_secret: Option<LinkSecret>,
    /// How long a read on a shared-memory link spins on an empty ring before it sleeps on the
    /// socket (`[link] spin_us`): less wake-up latency per input, for CPU.
    pub spin: Duration,
}

impl Default for ServeConfig {
    /// The reference matching engine, with the timings from [`crate::constants`].
    fn default() -> Self {
        ServeConfig {
            engine_name: "engine".to_owned(),
            snapshot_formats: SNAPSHOT_FORMAT_VERSIONS.to_vec(),
            heartbeat_interval: Duration::from_millis(LINK_HEARTBEAT_INTERVAL_MS_DEFAULT),
            peer_timeout: Duration::from_millis(LINK_PEER_TIMEOUT_MS_DEFAULT),
            handshake_timeout: Duration::from_millis(LINK_HANDSHAKE_TIMEOUT_MS),
            executable_sha256: String::new(),
            link_secret: None,
            spin: Duration::from_micros(crate::constants::LINK_SHM_SPIN_US_DEFAULT),
        }
    }
}

/// Asks a running [`serve`] to stop: it closes the current link with a reason, stops accepting
/// and returns the engine. Cloneable so a signal handler thread can hold one.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Set once, never cleared; checked at least every [`LINK_POLL_INTERVAL_MS`].
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Requests the stop; returns immediately.
    pub fn trigger(&self) {
        self.requested.store(true, Ordering::Release);
    }

    /// Whether the stop was requested.
    pub fn is_triggered(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}

/// Binds `listen` and serves the engine there until `shutdown`; see [`serve_on`].
pub fn serve<E: Engine>(
    engine: E,
    listen: &LinkAddr,
    config: &ServeConfig,
    shutdown: &Shutdown,
) -> Result<E, LinkError> {
    let listener = LinkListener::bind(listen)?;
    serve_on(engine, listener, config, shutdown)
}

/// Serves the engine on an already bound listener, one gateway connection at a time, until
/// `shutdown`; returns the engine so the caller can snapshot it on the way out.
///
/// Between connections, every new connection is greeted at once and waits for its Welcome
/// beside the others (at most [`LINK_PENDING_HANDSHAKES_MAX`], the oldest closed beyond that):
/// silent connections cost their own handshake timeout, never the gateway's reattach. The first
/// to complete its handshake is served and the rest are closed.
///
/// A connection that fails or closes is logged and the next one accepted; the engine's state,
/// its last input seq and its replay window survive. Connections that arrive while one is
/// served wait in the listen backlog (a second gateway must not feed the same engine; who is
/// active is decided by the coordination service, not here). Only a failing listener ends the
/// loop with an error.
pub fn serve_on<E: Engine>(
    engine: E,
    listener: LinkListener,
    config: &ServeConfig,
    shutdown: &Shutdown,
) -> Result<E, LinkError> {
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        engine = %config.engine_name,
        build = engine.build_version(),
        last_input_seq = engine.last_input_seq(),
        "engine link listening"
    );
    let mut server = Server {
        engine,
        config,
        replay: ReplayLog::new(LINK_REPLAY_INPUTS_MAX, LINK_REPLAY_BYTES_MAX),
        last_time: None,
        outputs: Vec::new(),
        payload: Vec::new(),
        snapshot_in_flight: None,
    };
    let poll = Duration::from_millis(LINK_POLL_INTERVAL_MS);
    // Connections greeted with Hello and waiting for their Welcome, oldest first. They are
    // polled together, so a connection that never speaks delays nobody: the gateway's own
    // connection is served as soon as its Welcome arrives, whatever waits beside it.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    while !shutdown.is_triggered() {
        loop {
            match listener.accept() {
                Ok(Some((conn, peer))) => {
                    if pending.len() >= LINK_PENDING_HANDSHAKES_MAX
                        && let Some(oldest) = pending.pop_front()
                    {
                        tracing::warn!(peer = %oldest.peer, "too many link connections waiting for a handshake; closing the oldest");
                        oldest.close("too many connections waiting for their handshake");
                    }
                    match server.greet(conn, peer.clone()) {
                        Ok(greeted) => pending.push_back(greeted),
                        Err(error) => {
                            tracing::warn!(%peer, %error, "gateway connection failed before its handshake")
                        }
                    }
                }
                Ok(None) => break,
                Err(error) if is_transient_accept_error(&error) => {
                    tracing::warn!(%error, "accepting a gateway connection failed; retrying");
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
        let mut welcomed = None;
        let mut index = 0;
        while index < pending.len() {
            match pending[index].poll(config) {
                Ok(false) => index += 1,
                Ok(true) => {
                    welcomed = pending.remove(index);
                    break;
                }
                Err(error) => {
                    if let Some(mut failed) = pending.remove(index) {
                        tracing::warn!(peer = %failed.peer, %error, "gateway handshake failed");
                        send_close(&mut failed.conn, &error);
                        failed.conn.shutdown();
                    }
                }
            }
        }
        let Some(welcomed) = welcomed else {
            std::thread::sleep(poll);
            continue;
        };
        // One gateway feeds the engine at a time; the others waiting lost the race.
        for other in pending.drain(..) {
            other.close("another gateway completed its handshake first");
        }
        let Pending {
            mut conn,
            peer,
            mut decoder,
            proof,
            ..
        } = welcomed;
        tracing::info!(%peer, "gateway connected");
        if let Some(proof) = proof {
            let mut wbuf = Vec::new();
            let sent = encode(&Frame::AuthProof(AuthProof { proof }), &mut wbuf).and_then(|()| {
                conn.set_nonblocking(false)?;
                conn.write_all(&wbuf).map_err(LinkError::from)
            });
            if let Err(error) = sent {
                tracing::warn!(%peer, %error, "gateway link failed sending the engine's proof");
                conn.shutdown();
                continue;
            }
        }
        let served = conn
            .set_nonblocking(false)
            .map_err(LinkError::from)
            .and_then(|()| server.converse(&mut conn, &mut decoder, shutdown));
        // A snapshot still being written was asked for by this connection; nobody else wants
        // it, and its thread finishes on its own.
        server.snapshot_in_flight = None;
        conn.shutdown();
        match served {
            Ok(()) => tracing::info!(%peer, "gateway link closed"),
            Err(error) => tracing::warn!(%peer, %error, "gateway link failed"),
        }
    }
    for waiting in pending.drain(..) {
        waiting.close("engine is shutting down");
    }
    tracing::info!(addr = %local, "engine link stopped");
    Ok(server.engine)
}

/// A connection greeted with Hello, waiting for the gateway's Welcome.
struct Pending {
    /// The connection, non-blocking while it waits.
    conn: Conn,
    /// Who, for logs.
    peer: String,
    /// What arrived so far.
    decoder: FrameDecoder,
    /// When the handshake timeout expires.
    deadline: Instant,
    /// The nonce sent in Hello when the link is authenticated.
    nonce: Vec<u8>,
    /// The engine's proof to send once the gateway's Welcome proved the secret.
    proof: Option<Vec<u8>>,
}

impl Pending {
    /// Reads what arrived without blocking: `true` once a compatible Welcome is in, `false`
    /// while still waiting; an error ends the connection (wrong version, Close, anything but a
    /// Welcome, a disconnect, the handshake timeout).
    fn poll(&mut self, config: &ServeConfig) -> Result<bool, LinkError> {
        let timeout = config.handshake_timeout;
        loop {
            match self.decoder.next_frame()? {
                Some(Frame::Welcome(welcome))
                    if welcome.protocol_version == LINK_PROTOCOL_VERSION =>
                {
                    if let Some(secret) = &config.link_secret {
                        let expected = secret.gateway_proof(&self.nonce, &welcome.auth_nonce);
                        if !auth::nonce_ok(&welcome.auth_nonce)
                            || !auth::proofs_equal(&welcome.auth_proof, &expected)
                        {
                            return Err(LinkError::Unauthenticated(
                                if welcome.auth_proof.is_empty() {
                                    "the gateway does not prove the link secret this engine requires: set [link] secret_file on the gateway to the engine's secret file".to_owned()
                                } else {
                                    "the gateway proved a different link secret".to_owned()
                                },
                            ));
                        }
                        self.proof = Some(secret.engine_proof(&self.nonce, &welcome.auth_nonce));
                    }
                    return Ok(true);
                }
                Some(Frame::Welcome(welcome)) => {
                    return Err(LinkError::IncompatibleVersion {
                        peer: welcome.protocol_version,
                    });
                }
                Some(Frame::Close(close)) => {
                    return Err(LinkError::Closed {
                        reason: close.reason,
                    });
                }
                Some(other) => {
                    return Err(LinkError::Unexpected {
                        got: other.kind().name(),
                        context: "before Welcome",
                    });
                }
                None => {}
            }
            match read_some(&mut self.conn, &mut self.decoder)? {
                Some(0) => return Err(LinkError::Disconnected),
                Some(_) => {}
                None => break,
            }
        }
        if Instant::now() >= self.deadline {
            return Err(LinkError::HandshakeTimeout(timeout));
        }
        Ok(false)
    }

    /// Ends a connection that will not be served, telling the peer why.
    fn close(mut self, reason: &str) {
        send_close_reason(&mut self.conn, reason);
        self.conn.shutdown();
    }
}

/// Accept errors that concern one connection or a passing resource shortage, not the listener.
fn is_transient_accept_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
    ) || matches!(error.raw_os_error(), Some(code) if code == EMFILE || code == ENFILE)
}

/// Too many open files in this process; clears when a connection closes.
const EMFILE: i32 = 24;
/// Too many open files on the system.
const ENFILE: i32 = 23;

/// Write buffer capacity kept between batches; a larger one (after a snapshot) is released.
const WRITE_BUFFER_KEPT_BYTES: usize = 4 * LINK_FRAME_BYTES_MAX;

/// The engine and what the link keeps about it across connections.
struct Server<'a, E> {
    /// The engine; only this thread touches it.
    engine: E,
    /// Names and timings.
    config: &'a ServeConfig,
    /// Outputs of recent inputs, for resent inputs.
    replay: ReplayLog,
    /// Time of the last input applied through the link, to refuse one that goes back in time
    /// before the engine asserts on it; `None` after a restore (the snapshot's time is not
    /// visible through the `Engine` trait, and the engine still checks it).
    last_time: Option<Timestamp>,
    /// Reused output buffer.
    outputs: Vec<Output>,
    /// Reused encoding buffer for one Outputs payload.
    payload: Vec<u8>,
    /// The snapshot being written on its own thread, if one was asked for and is not sent yet.
    snapshot_in_flight: Option<SnapshotInFlight>,
}

/// A snapshot written from a frozen copy of the engine on its own thread, so the inputs that
/// arrive meanwhile are applied and answered instead of waiting behind it.
struct SnapshotInFlight {
    /// Delivers the encoded Snapshot (or Refused) frame once written.
    frame: mpsc::Receiver<Vec<u8>>,
    /// The input the snapshot stands at, for logs.
    at_input_seq: u64,
}

/// What the connection loop does after a frame.
enum Next {
    /// Keep serving.
    Continue,
    /// The gateway closed the link.
    Stop,
}

impl<E: Engine> Server<'_, E> {
    /// Configures a new connection for the engine loop and sends it Hello; it then waits,
    /// non-blocking, for its Welcome beside the other pending connections.
    fn greet(&mut self, mut conn: Conn, peer: String) -> Result<Pending, LinkError> {
        let config = self.config;
        let poll = Duration::from_millis(LINK_POLL_INTERVAL_MS).min(config.heartbeat_interval);
        conn.configure(poll, config.peer_timeout, config.spin)?;
        let mut wbuf = Vec::new();
        let nonce = match &config.link_secret {
            Some(_) => auth::nonce()?,
            None => Vec::new(),
        };
        let hello = Hello {
            protocol_version: LINK_PROTOCOL_VERSION,
            engine_name: self.config.engine_name.clone(),
            build_version: self.engine.build_version().to_owned(),
            last_input_seq: self.engine.last_input_seq(),
            snapshot_formats: self.config.snapshot_formats.clone(),
            executable_sha256: self.config.executable_sha256.clone(),
            auth_nonce: nonce.clone(),
        };
        encode(&Frame::Hello(hello), &mut wbuf)?;
        conn.write_all(&wbuf)?;
        conn.set_nonblocking(true)?;
        Ok(Pending {
            conn,
            peer,
            decoder: FrameDecoder::new(),
            deadline: Instant::now() + config.handshake_timeout,
            nonce,
            proof: None,
        })
    }

    /// The conversation after the gateway's Welcome, until Close, disconnect, silence, a
    /// protocol error or shutdown; on a protocol error, tells the gateway why before returning
    /// it.
    fn converse(
        &mut self,
        conn: &mut Conn,
        decoder: &mut FrameDecoder,
        shutdown: &Shutdown,
    ) -> Result<(), LinkError> {
        let mut wbuf = Vec::new();
        let mut last_sent = Instant::now();
        let mut last_received = Instant::now();
        loop {
            // A snapshot written meanwhile goes out between two batches: its frames are one
            // message, and the outputs before and after it are whole messages too.
            self.poll_snapshot(&mut wbuf);
            let batch = self.handle_buffered(decoder, &mut wbuf);
            if !wbuf.is_empty() {
                if let Err(error) = conn.write_all(&wbuf) {
                    if batch.is_ok() {
                        self.apply_what_was_sent(conn, decoder);
                    }
                    return Err(error.into());
                }
                wbuf.clear();
                wbuf.shrink_to(WRITE_BUFFER_KEPT_BYTES);
                last_sent = Instant::now();
                // Answered: what the next inputs will write is made present now, not while
                // they wait.
                self.engine.prepare();
            }
            match batch {
                Ok(Next::Continue) => {}
                Ok(Next::Stop) => return Ok(()),
                Err(error) => {
                    send_close(conn, &error);
                    return Err(error);
                }
            }

            // Read before judging the peer: after a stall of this process (a pause, SIGSTOP) the
            // gateway's frames are waiting in the socket, and it is not silent, nor is a
            // heartbeat due before they are handled.
            let received = match read_some(conn, decoder)? {
                Some(0) => return Err(LinkError::Disconnected),
                Some(_) => {
                    last_received = Instant::now();
                    true
                }
                None => false,
            };

            let now = Instant::now();
            if shutdown.is_triggered() {
                send_close_reason(conn, "engine is shutting down");
                return Ok(());
            }
            let silent = now.duration_since(last_received);
            if silent >= self.config.peer_timeout {
                let error = LinkError::PeerSilent(silent);
                send_close(conn, &error);
                return Err(error);
            }
            // What was just read is handled (and answered) first.
            if !received && now.duration_since(last_sent) >= self.config.heartbeat_interval {
                let heartbeat = Heartbeat {
                    last_input_seq: self.engine.last_input_seq(),
                };
                encode(&Frame::Heartbeat(heartbeat), &mut wbuf)?;
                if let Err(error) = conn.write_all(&wbuf) {
                    self.apply_what_was_sent(conn, decoder);
                    return Err(error.into());
                }
                wbuf.clear();
                last_sent = now;
            }
        }
    }

    /// The gateway is gone (a write to it failed), but what it wrote before it went is still in
    /// the socket: applies those inputs before the link ends, so the engine holds every input
    /// its gateway managed to send, wherever this process happened to stall (stopped between a
    /// read that found nothing and a heartbeat, or after a read that took only part of what
    /// was sent). Their answers have nowhere to go; the next gateway resends the inputs from its
    /// outbox cursor and is answered from the replay window. Reads until the end of the stream,
    /// a read error, a read that times out, or a frame that ends the link.
    fn apply_what_was_sent(&mut self, conn: &mut Conn, decoder: &mut FrameDecoder) {
        let mut unanswerable = Vec::new();
        loop {
            match self.handle_buffered(decoder, &mut unanswerable) {
                Ok(Next::Continue) => unanswerable.clear(),
                Ok(Next::Stop) | Err(_) => return,
            }
            match read_some(conn, decoder) {
                Ok(Some(n)) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Handles every complete frame in the decoder, appending answers to `wbuf`, so that all
    /// answers to one read go out in one write.
    fn handle_buffered(
        &mut self,
        decoder: &mut FrameDecoder,
        wbuf: &mut Vec<u8>,
    ) -> Result<Next, LinkError> {
        while let Some(frame) = decoder.next_frame()? {
            if let Next::Stop = self.handle(frame, wbuf)? {
                return Ok(Next::Stop);
            }
        }
        Ok(Next::Continue)
    }

    /// Handles one frame from the gateway.
    fn handle(&mut self, frame: Frame, wbuf: &mut Vec<u8>) -> Result<Next, LinkError> {
        match frame {
            Frame::Input(input) => self.input(&input, wbuf)?,
            Frame::Heartbeat(_) => {}
            // Requests are answered in the order they arrive: one behind a snapshot in flight
            // waits for it.
            Frame::SnapshotRequest => {
                self.finish_snapshot(wbuf);
                self.snapshot(wbuf)?;
            }
            Frame::Restore(restore) => {
                self.finish_snapshot(wbuf);
                self.restore(&restore.bytes, wbuf)?;
            }
            Frame::DigestRequest => {
                self.finish_snapshot(wbuf);
                let report = DigestReport {
                    at_input_seq: self.engine.last_input_seq(),
                    digest: self.engine.digest(),
                };
                encode(&Frame::Digest(report), wbuf)?;
            }
            Frame::Close(close) => {
                tracing::info!(reason = %close.reason, "gateway closed the link");
                return Ok(Next::Stop);
            }
            other => {
                return Err(LinkError::Unexpected {
                    got: other.kind().name(),
                    context: "from a gateway",
                });
            }
        }
        Ok(Next::Continue)
    }

    /// Applies an input, or answers a resent one from the replay log (see the module docs).
    fn input(&mut self, input: &Input, wbuf: &mut Vec<u8>) -> Result<(), LinkError> {
        let last = self.engine.last_input_seq();
        if input.seq <= last {
            self.payload.clear();
            if self.replay.get(input.seq, &mut self.payload) {
                tracing::debug!(seq = input.seq, "resent input answered from the replay log");
                write_message(FrameKind::Replayed, &self.payload, wbuf)?;
            } else {
                tracing::warn!(
                    seq = input.seq,
                    last_input_seq = last,
                    "resent input's outputs are no longer retained"
                );
                let already = AlreadyApplied {
                    input_seq: input.seq,
                    last_input_seq: last,
                };
                encode(&Frame::AlreadyApplied(already), wbuf)?;
            }
            return Ok(());
        }
        if Some(input.seq) != last.checked_add(1) {
            return Err(LinkError::InputGap {
                got: input.seq,
                expected: last.saturating_add(1),
            });
        }
        if let Some(last_time) = self.last_time
            && input.time < last_time
        {
            return Err(LinkError::TimeBackwards {
                seq: input.seq,
                time: input.time.0,
                last_time: last_time.0,
            });
        }
        self.outputs.clear();
        self.engine.apply(input, &mut self.outputs);
        self.last_time = Some(input.time);
        self.payload.clear();
        encode_outputs_payload(input.seq, &self.outputs, &mut self.payload)?;
        write_message(FrameKind::Outputs, &self.payload, wbuf)?;
        self.replay.push(input.seq, &self.payload);
        Ok(())
    }

    /// Answers a SnapshotRequest. An engine that can freeze its state has the snapshot written
    /// from the frozen copy on another thread, and goes on applying inputs: the Snapshot frame
    /// names the input it stands at and follows the outputs of whatever inputs were applied
    /// meanwhile ([`Server::poll_snapshot`]). Otherwise it is written here, between inputs.
    fn snapshot(&mut self, wbuf: &mut Vec<u8>) -> Result<(), LinkError> {
        let format = self.config.snapshot_formats.last().copied().unwrap_or(0);
        let Some(frozen) = self.engine.freeze() else {
            let mut bytes = Vec::new();
            self.engine.snapshot(&mut bytes);
            let at_input_seq = self.engine.last_input_seq();
            return snapshot_frame(at_input_seq, format, self.engine.digest(), bytes, wbuf);
        };
        let at_input_seq = frozen.last_input_seq();
        let (deliver, frame) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("snapshot".to_owned())
            .spawn(move || {
                let mut out = Vec::new();
                write_frozen(frozen.as_ref(), format, &mut out);
                // The connection that asked may be gone; then nobody wants it.
                let _ = deliver.send(out);
            });
        match spawned {
            Ok(_) => {
                tracing::debug!(
                    at_input_seq,
                    "snapshot frozen; writing it beside the order loop"
                );
                self.snapshot_in_flight = Some(SnapshotInFlight {
                    frame,
                    at_input_seq,
                });
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "no thread for the snapshot; writing it between inputs");
                // The failed spawn dropped the copy with its closure; no input was applied
                // since, so a second copy is the same state.
                let mut bytes = Vec::new();
                let frozen = self
                    .engine
                    .freeze()
                    .expect("the engine froze its state just now");
                let digest = frozen.snapshot_and_digest(&mut bytes);
                snapshot_frame(at_input_seq, format, digest, bytes, wbuf)
            }
        }
    }

    /// Appends the snapshot in flight to `wbuf` if its thread has written it.
    fn poll_snapshot(&mut self, wbuf: &mut Vec<u8>) {
        let Some(in_flight) = &self.snapshot_in_flight else {
            return;
        };
        match in_flight.frame.try_recv() {
            Ok(frame) => {
                wbuf.extend_from_slice(&frame);
                self.snapshot_in_flight = None;
            }
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => snapshot_thread_died(in_flight.at_input_seq),
        }
    }

    /// Waits for the snapshot in flight, if any, and appends it to `wbuf`, so that an answer to
    /// a later request does not overtake it.
    fn finish_snapshot(&mut self, wbuf: &mut Vec<u8>) {
        let Some(in_flight) = self.snapshot_in_flight.take() else {
            return;
        };
        match in_flight.frame.recv() {
            Ok(frame) => wbuf.extend_from_slice(&frame),
            Err(mpsc::RecvError) => snapshot_thread_died(in_flight.at_input_seq),
        }
    }

    /// Answers a Restore. On success the replay log is cleared: the outputs in it were produced
    /// by a history this engine no longer has.
    fn restore(&mut self, bytes: &[u8], wbuf: &mut Vec<u8>) -> Result<(), LinkError> {
        match self.engine.restore(bytes) {
            Ok(()) => {
                self.replay.clear();
                self.last_time = None;
                let restored = Restored {
                    at_input_seq: self.engine.last_input_seq(),
                    digest: self.engine.digest(),
                };
                tracing::info!(
                    at_input_seq = restored.at_input_seq,
                    digest = %restored.digest,
                    "engine restored from snapshot"
                );
                encode(&Frame::Restored(restored), wbuf)
            }
            Err(error) => {
                tracing::warn!(%error, "restore refused; engine unchanged");
                let refused = Refused {
                    request: RefusedRequest::Restore,
                    reason: error.to_string(),
                };
                encode(&Frame::Refused(refused), wbuf)
            }
        }
    }
}

/// Writes the Snapshot frame of a frozen state into `out`; runs on the snapshot's own thread.
fn write_frozen(frozen: &dyn FrozenState, format: u16, out: &mut Vec<u8>) {
    let mut bytes = Vec::new();
    let digest = frozen.snapshot_and_digest(&mut bytes);
    if let Err(error) = snapshot_frame(frozen.last_input_seq(), format, digest, bytes, out) {
        // Encoding into memory fails only on a limit, which `snapshot_frame` answers itself.
        panic!("encoding a snapshot frame into memory failed: {error}");
    }
}

/// Appends the Snapshot frame, or a Refused one when the snapshot exceeds the message limit.
fn snapshot_frame(
    at_input_seq: u64,
    format_version: u16,
    digest: Digest,
    bytes: Vec<u8>,
    wbuf: &mut Vec<u8>,
) -> Result<(), LinkError> {
    let len = bytes.len();
    let snapshot = Snapshot {
        at_input_seq,
        format_version,
        digest,
        bytes,
    };
    match encode(&Frame::Snapshot(snapshot), wbuf) {
        Ok(()) => {
            tracing::info!(at_input_seq, len, "snapshot sent");
            Ok(())
        }
        Err(error @ LinkError::MessageTooLong { .. }) => {
            tracing::error!(at_input_seq, len, %error, "snapshot refused");
            let refused = Refused {
                request: RefusedRequest::Snapshot,
                reason: error.to_string(),
            };
            encode(&Frame::Refused(refused), wbuf)
        }
        Err(error) => Err(error),
    }
}

/// The snapshot thread ended without delivering: it panicked, which is a bug in writing the
/// snapshot. The engine stops, as it would have had the same bug struck on the order loop, and
/// its standby takes over.
fn snapshot_thread_died(at_input_seq: u64) -> ! {
    panic!("the thread writing the snapshot at input {at_input_seq} died without it");
}

/// One read into the decoder: `Some(n)` bytes (0 at end of stream), `None` when the read timed
/// out so the caller can run its timers.
fn read_some(conn: &mut Conn, decoder: &mut FrameDecoder) -> Result<Option<usize>, LinkError> {
    let space = decoder.read_space();
    debug_assert!(!space.is_empty(), "a zero-length read would look like EOF");
    match conn.read(space) {
        Ok(n) => {
            decoder.advance(n);
            Ok(Some(n))
        }
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// Tells the gateway why the link ends; best effort, the link is going down anyway.
fn send_close(conn: &mut Conn, error: &LinkError) {
    if let LinkError::Closed { .. } | LinkError::Disconnected | LinkError::Io(_) = error {
        // The gateway closed first or the socket is gone: nobody to tell.
        return;
    }
    send_close_reason(conn, &error.to_string());
}

/// Sends a Close with `reason`, ignoring failures.
fn send_close_reason(conn: &mut Conn, reason: &str) {
    let mut buf = Vec::new();
    let close = Close {
        reason: reason.to_owned(),
    };
    if encode(&Frame::Close(close), &mut buf).is_ok() {
        let _ = conn.write_all(&buf);
    }
}
