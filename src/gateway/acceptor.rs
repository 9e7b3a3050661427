//! Connection I/O: the thin tokio driver around [`Session`].
//!
//! Each connection is its own task, so a slow or silent counterparty never blocks another. A new
//! connection must present a Logon within the logon timeout; its CompIDs pick the session, which
//! the connection holds exclusively until it closes (a second connection for the same session is
//! refused with a Logout). The driver reads, feeds the session with the wall-clock time, writes
//! what the session returns, and sleeps until the session's next deadline: all protocol decisions
//! are the session's.
//!
//! Sessions live in [`Sessions`] for the gateway's whole life, connected or not, each behind its
//! own mutex. That is what lets the outbox hand an execution report to a session whatever its
//! connection is doing: if it is logged on the report is written at once, otherwise it is stored
//! under the next sequence number and reaches the counterparty by resend when it is back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::translate;
use crate::config::VenueConfig;
use crate::constants;
use crate::engine::{Request, SessionId};
use crate::fix::codec::{Decoder, Frame, Garbled, Message};
use crate::fix::session::{self, Event, Session, State};
use crate::fix::store::SessionStore;
use crate::fix::tags::{self, BusinessRejectReason, msg_type};
use crate::fix::time::Timestamp;

/// A business request on its way to the sequencer.
#[derive(Debug)]
pub struct Inbound {
    /// Which session sent it; outputs are routed back by this id.
    pub session: SessionId,
    /// The engine request.
    pub request: Request,
    /// The FIX message, kept so it can still be answered with a BusinessMessageReject if no
    /// engine can take it.
    pub message: Message,
}

/// One configured session and what its connection task needs to share with the outbox.
pub struct SessionSlot<S: SessionStore> {
    /// The session state machine; the lock is held only for short, non-blocking steps.
    session: Mutex<Session<S>>,
    /// Whether a connection holds the session; a second connection is refused.
    connected: AtomicBool,
    /// Wakes the connection task when the outbox gave the session something to send.
    wake: Notify,
}

/// Every configured session, by id (position in the config) and by CompID pair.
pub struct Sessions<S: SessionStore> {
    /// Index = [`SessionId`].
    slots: Vec<SessionSlot<S>>,
    /// (our CompID, their CompID) → id.
    by_key: HashMap<(Vec<u8>, Vec<u8>), SessionId>,
    /// The venue's rules on business messages (`[venue]`), checked before sequencing.
    venue: VenueConfig,
}

/// What status shows of one session.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SessionStatus {
    /// The counterparty's CompID.
    pub target_comp_id: String,
    /// Whether a connection is logged on.
    pub logged_on: bool,
    /// Next MsgSeqNum the gateway will send.
    pub seq_num_next_out: u64,
    /// Next MsgSeqNum expected from the counterparty.
    pub seq_num_next_in: u64,
}

impl<S: SessionStore> Sessions<S> {
    /// Takes ownership of the configured sessions; their order defines their [`SessionId`]s.
    pub fn new(sessions: Vec<Session<S>>) -> Arc<Sessions<S>> {
        Sessions::with_venue(sessions, VenueConfig::default())
    }

    /// [`Sessions::new`], with the venue's rules on business messages.
    pub fn with_venue(sessions: Vec<Session<S>>, venue: VenueConfig) -> Arc<Sessions<S>> {
        let mut by_key = HashMap::new();
        let slots = sessions
            .into_iter()
            .enumerate()
            .map(|(index, session)| {
                by_key.insert(
                    (
                        session.config().sender_comp_id.as_bytes().to_vec(),
                        session.config().target_comp_id.as_bytes().to_vec(),
                    ),
                    index as SessionId,
                );
                SessionSlot {
                    session: Mutex::new(session),
                    connected: AtomicBool::new(false),
                    wake: Notify::new(),
                }
            })
            .collect();
        Arc::new(Sessions {
            slots,
            by_key,
            venue,
        })
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no session is configured.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn lock(&self, id: SessionId) -> Option<MutexGuard<'_, Session<S>>> {
        let slot = self.slots.get(id as usize)?;
        Some(
            slot.session
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Runs `f` on session `id` and wakes its connection to write whatever `f` queued.
    pub fn with<R>(&self, id: SessionId, f: impl FnOnce(&mut Session<S>) -> R) -> Option<R> {
        let result = f(&mut *self.lock(id)?);
        self.slots[id as usize].wake.notify_one();
        Some(result)
    }

    /// Confirms that business message `seq` of session `id` is journaled (see
    /// [`Session::confirm_in`]); no wake-up, nothing is sent.
    pub fn confirm(&self, id: SessionId, seq: u64) {
        if let Some(mut session) = self.lock(id) {
            session.confirm_in(seq);
        }
    }

    /// Answers `message` on session `id` with a BusinessMessageReject (which also settles it:
    /// an answered message is never asked for again).
    pub fn business_reject(
        &self,
        id: SessionId,
        message: &Message,
        reason: BusinessRejectReason,
        text: &str,
    ) {
        self.with(id, |session| {
            if let Ok(seq) = message.uint(tags::MSG_SEQ_NUM) {
                session.confirm_in(seq);
            }
            let sent = session.send_app(Timestamp::now(), msg_type::BUSINESS_MESSAGE_REJECT, |e| {
                translate::write_business_reject(e, message, reason, text)
            });
            if let Err(error) = sent {
                tracing::error!(%error, "cannot store BusinessMessageReject");
            }
        });
    }

    /// A status line per session.
    pub fn status(&self) -> Vec<SessionStatus> {
        (0..self.slots.len() as SessionId)
            .filter_map(|id| {
                let session = self.lock(id)?;
                Some(SessionStatus {
                    target_comp_id: session.config().target_comp_id.clone(),
                    logged_on: matches!(session.state(), State::Active | State::LogoutSent),
                    seq_num_next_out: session.store().seq_num_next_out(),
                    seq_num_next_in: session.seq_num_next_in(),
                })
            })
            .collect()
    }
}

/// Accepts connections and runs sessions until shut down.
pub struct Acceptor<S: SessionStore + Send + 'static> {
    /// The bound listening socket.
    listener: TcpListener,
    /// Every configured session.
    sessions: Arc<Sessions<S>>,
    /// Where business requests go; `None` until an engine pipeline exists, in which case they
    /// are answered with BusinessMessageReject (application not available).
    business: Option<mpsc::Sender<Inbound>>,
    /// Bounds connections at once, logged on or not.
    connections: Arc<Semaphore>,
    /// Turns true when the gateway is shutting down.
    shutdown: watch::Receiver<bool>,
}

/// Controls a running [`Acceptor`] from outside its task.
#[derive(Clone)]
pub struct AcceptorHandle {
    /// Sends the shutdown signal.
    shutdown: watch::Sender<bool>,
    /// Where the acceptor listens (useful when bound to port 0).
    local_addr: SocketAddr,
}

impl AcceptorHandle {
    /// Asks every session to log out and the acceptor to stop.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl<S: SessionStore + Send + 'static> Acceptor<S> {
    /// Binds `listen` for `sessions`; business requests go to `business` when given.
    pub async fn bind(
        listen: SocketAddr,
        sessions: Arc<Sessions<S>>,
        business: Option<mpsc::Sender<Inbound>>,
        connections_max: usize,
    ) -> std::io::Result<(Acceptor<S>, AcceptorHandle)> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        Ok((
            Acceptor {
                listener,
                sessions,
                business,
                connections: Arc::new(Semaphore::new(connections_max)),
                shutdown: shutdown_rx,
            },
            AcceptorHandle {
                shutdown: shutdown_tx,
                local_addr,
            },
        ))
    }

    /// Accepts until shutdown, then waits (bounded) for every session to log out.
    pub async fn run(mut self) -> std::io::Result<()> {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            // Out of descriptors and the like: back off instead of spinning.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit reached; closing");
                        drop(stream);
                        continue;
                    };
                    let connection = Connection {
                        sessions: self.sessions.clone(),
                        business: self.business.clone(),
                        shutdown: self.shutdown.clone(),
                        peer,
                    };
                    tasks.spawn(async move {
                        connection.serve(stream).await;
                        drop(permit);
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = self.shutdown.changed() => break,
            }
        }
        tracing::info!(
            connections = tasks.len(),
            "shutting down: logging sessions out"
        );
        let grace = Duration::from_millis(constants::LOGOUT_TIMEOUT_DEFAULT_MS + 1_000);
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        Ok(())
    }
}

/// One accepted connection.
struct Connection<S: SessionStore> {
    /// Every configured session.
    sessions: Arc<Sessions<S>>,
    /// Where business requests go.
    business: Option<mpsc::Sender<Inbound>>,
    /// Shutdown signal.
    shutdown: watch::Receiver<bool>,
    /// The counterparty's address, for logs.
    peer: SocketAddr,
}

/// Releases a session's connection claim however the connection ends.
struct Claim<'a, S: SessionStore> {
    /// The claimed slot.
    slot: &'a SessionSlot<S>,
}

impl<S: SessionStore> Drop for Claim<'_, S> {
    fn drop(&mut self) {
        let mut session = self
            .slot
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        session.on_disconnect();
        if let Err(error) = session.store_mut().flush() {
            tracing::error!(%error, "flushing session store on disconnect");
        }
        drop(session);
        self.slot.connected.store(false, Ordering::Release);
    }
}

impl<S: SessionStore + Send + 'static> Connection<S> {
    async fn serve(mut self, mut stream: TcpStream) {
        let peer = self.peer;
        let _ = stream.set_nodelay(true);
        // Unauthenticated: a larger declared body than a Logon needs closes the connection
        // before the body is read.
        let decoder = Decoder::new(constants::LOGON_BODY_LENGTH_MAX);
        let mut buf: Vec<u8> = Vec::with_capacity(constants::READ_CHUNK);
        let mut chunk = vec![0u8; constants::READ_CHUNK];
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(constants::LOGON_TIMEOUT_DEFAULT_MS);

        // Read up to the first whole frame: it must be a Logon naming a configured session.
        let first = loop {
            match decoder.frame(&buf) {
                Frame::Complete(len) => break len,
                Frame::Garbled {
                    reason: Garbled::BodyTooLong,
                    ..
                } => {
                    tracing::warn!(%peer, limit = constants::LOGON_BODY_LENGTH_MAX, "message before Logon larger than a Logon; closing");
                    return;
                }
                Frame::Garbled { skip, reason } => {
                    tracing::warn!(%peer, ?reason, "garbled bytes before Logon ignored");
                    buf.drain(..skip.min(buf.len()));
                    continue;
                }
                Frame::Incomplete => {}
            }
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    tracing::warn!(%peer, "no Logon before the deadline; closing");
                    return;
                }
            }
        };
        let Ok(message) = Message::parse(&buf[..first]) else {
            tracing::warn!(%peer, "first frame is garbled; closing");
            return;
        };
        let Some((begin_string, their_comp_id, our_comp_id)) = session::identify(&message) else {
            tracing::warn!(%peer, "first message has no CompIDs; closing");
            return;
        };
        let begin_string = String::from_utf8_lossy(begin_string).into_owned();
        let key = (our_comp_id.to_vec(), their_comp_id.to_vec());
        let sessions = self.sessions.clone();
        let Some(&id) = sessions.by_key.get(&key) else {
            tracing::warn!(%peer, sender = %String::from_utf8_lossy(&key.1), target = %String::from_utf8_lossy(&key.0), "Logon for an unknown CompID pair refused");
            refuse(&mut stream, &begin_string, &message, "unknown CompID pair").await;
            return;
        };
        let slot = &sessions.slots[id as usize];
        if slot
            .connected
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            tracing::warn!(%peer, session = %String::from_utf8_lossy(&key.1), "second connection for a connected session refused");
            refuse(
                &mut stream,
                &begin_string,
                &message,
                "session already connected",
            )
            .await;
            return;
        }
        let _claim = Claim { slot };
        {
            let mut session = sessions.lock(id).expect("id comes from by_key");
            let now = Timestamp::now();
            session.on_connect(now);
            session.handle_bytes(now, &buf);
            tracing::info!(%peer, session = %session.config().target_comp_id, "connection holds session");
        }
        self.drive(id, slot, stream, chunk).await;
    }

    /// Runs one connection until the session says to close it or the peer goes away.
    async fn drive(
        &mut self,
        id: SessionId,
        slot: &SessionSlot<S>,
        mut stream: TcpStream,
        mut chunk: Vec<u8>,
    ) {
        let mut out: Vec<u8> = Vec::with_capacity(constants::READ_CHUNK);
        let mut requests: Vec<Inbound> = Vec::new();
        let mut logging_out = false;
        loop {
            let (closing, next_timeout) = {
                let mut session = slot
                    .session
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut closing = false;
                while let Some(event) = session.poll_event() {
                    match event {
                        Event::LoggedOn { reset } => {
                            tracing::info!(session = %session.config().target_comp_id, reset, "session logged on");
                        }
                        Event::Application(message) => {
                            match translate::request_from_fix(&message, &self.sessions.venue) {
                                Ok(request) => requests.push(Inbound {
                                    session: id,
                                    request,
                                    message,
                                }),
                                Err(unusable) => {
                                    if let Ok(seq) = message.uint(tags::MSG_SEQ_NUM) {
                                        session.confirm_in(seq);
                                    }
                                    let sent = session.send_app(
                                        Timestamp::now(),
                                        msg_type::BUSINESS_MESSAGE_REJECT,
                                        |e| {
                                            translate::write_business_reject(
                                                e,
                                                &message,
                                                unusable.reason,
                                                &unusable.text,
                                            )
                                        },
                                    );
                                    if let Err(error) = sent {
                                        tracing::error!(%error, "cannot store BusinessMessageReject");
                                    }
                                }
                            }
                        }
                        Event::Disconnect(reason) => {
                            tracing::info!(session = %session.config().target_comp_id, ?reason, "session closing connection");
                            closing = true;
                        }
                    }
                }
                session.poll_transmit(&mut out);
                if let Err(error) = session.store_mut().flush() {
                    tracing::error!(session = %session.config().target_comp_id, %error, "session store flush failed");
                }
                (closing, session.next_timeout())
            };
            // Requests first: their sequence numbers are taken, so they must reach the sequencer
            // even if the write below fails.
            for inbound in requests.drain(..) {
                self.forward(inbound).await;
            }
            if !out.is_empty() {
                // A counterparty that stops reading is disconnected rather than allowed to hold
                // the task (and the session's unsent bytes) forever; what it missed is stored and
                // resent after it logs on again.
                let write = tokio::time::timeout(
                    Duration::from_millis(constants::CONNECTION_WRITE_TIMEOUT_MS),
                    stream.write_all(&out),
                );
                if !matches!(write.await, Ok(Ok(()))) {
                    tracing::warn!(session = id, "write failed or timed out; disconnecting");
                    return;
                }
                out.clear();
            }
            if closing {
                let _ = stream.shutdown().await;
                return;
            }
            let sleep_for = next_timeout
                .map(|at| Duration::from_nanos(at.0.saturating_sub(Timestamp::now().0)))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                read = stream.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut session = slot.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        session.handle_bytes(Timestamp::now(), &chunk[..n]);
                    }
                },
                _ = tokio::time::sleep(sleep_for) => {
                    let mut session = slot.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    session.handle_timeout(Timestamp::now());
                }
                _ = slot.wake.notified() => {}
                changed = self.shutdown.changed(), if !logging_out => {
                    logging_out = true;
                    if changed.is_ok() {
                        let mut session = slot.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        session.logout(Timestamp::now(), "gateway shutting down");
                    }
                }
            }
        }
    }

    /// Hands a request to the sequencer, or answers it with "application not available" when
    /// there is none. Waiting for room in the queue stops this connection's reads: TCP
    /// backpressure instead of unbounded memory.
    async fn forward(&self, inbound: Inbound) {
        let undelivered = match &self.business {
            Some(business) => business.send(inbound).await.err().map(|error| error.0),
            None => Some(inbound),
        };
        if let Some(inbound) = undelivered {
            self.sessions.business_reject(
                inbound.session,
                &inbound.message,
                BusinessRejectReason::ApplicationNotAvailable,
                "application not available",
            );
        }
    }
}

async fn refuse(stream: &mut TcpStream, begin_string: &str, message: &Message, text: &str) {
    let bytes = session::refusal_logout(begin_string, message, Timestamp::now(), text);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
