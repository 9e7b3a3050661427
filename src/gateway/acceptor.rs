//! Connection I/O: the thin tokio driver around [`Session`].
//!
//! Each connection is its own task, so a slow or silent counterparty never blocks another. A new
//! connection must present a Logon within the logon timeout; its CompIDs pick the session, which
//! the connection holds exclusively until it closes (a second connection for the same session is
//! refused with a Logout). The driver reads, feeds the session with the wall-clock time, writes
//! what the session returns, and sleeps until the session's next deadline: all protocol decisions
//! are the session's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::constants;
use crate::fix::codec::{Decoder, Frame, Message};
use crate::fix::session::{self, Event, Session};
use crate::fix::store::SessionStore;
use crate::fix::tags::{self, BusinessRejectReason, msg_type};
use crate::fix::time::Timestamp;

/// A configured session waiting for, or held by, a connection.
struct Slot<S: SessionStore> {
    /// `None` while a connection holds the session.
    session: Mutex<Option<Session<S>>>,
}

/// Sessions by (our CompID, their CompID).
type Slots<S> = HashMap<(Vec<u8>, Vec<u8>), Arc<Slot<S>>>;

/// Accepts connections and runs sessions until shut down.
pub struct Acceptor<S: SessionStore + Send + 'static> {
    /// The bound listening socket.
    listener: TcpListener,
    /// Every configured session.
    slots: Arc<Slots<S>>,
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
    /// Binds `listen` and takes ownership of the sessions.
    pub async fn bind(
        listen: SocketAddr,
        sessions: Vec<Session<S>>,
        connections_max: usize,
    ) -> std::io::Result<(Acceptor<S>, AcceptorHandle)> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let slots = sessions
            .into_iter()
            .map(|session| {
                let key = (
                    session.config().sender_comp_id.as_bytes().to_vec(),
                    session.config().target_comp_id.as_bytes().to_vec(),
                );
                let slot = Arc::new(Slot {
                    session: Mutex::new(Some(session)),
                });
                (key, slot)
            })
            .collect();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        Ok((
            Acceptor {
                listener,
                slots: Arc::new(slots),
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
                    let slots = self.slots.clone();
                    let shutdown = self.shutdown.clone();
                    tasks.spawn(async move {
                        serve(stream, peer, slots, shutdown).await;
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

/// Puts a session back into its slot when the connection ends, however it ends.
struct Held<S: SessionStore> {
    /// Where the session goes back to.
    slot: Arc<Slot<S>>,
    /// The session while the connection holds it.
    session: Option<Session<S>>,
}

impl<S: SessionStore> Drop for Held<S> {
    fn drop(&mut self) {
        if let Some(mut session) = self.session.take() {
            session.on_disconnect();
            if let Err(error) = session.store_mut().flush() {
                tracing::error!(%error, "flushing session store on disconnect");
            }
            let mut guard = self
                .slot
                .session
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *guard = Some(session);
        }
    }
}

async fn serve<S: SessionStore + Send + 'static>(
    mut stream: TcpStream,
    peer: SocketAddr,
    slots: Arc<Slots<S>>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let decoder = Decoder::new(constants::BODY_LENGTH_MAX);
    let mut buf: Vec<u8> = Vec::with_capacity(constants::READ_CHUNK);
    let mut chunk = vec![0u8; constants::READ_CHUNK];
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(constants::LOGON_TIMEOUT_DEFAULT_MS);

    // Read up to the first whole frame: it must be a Logon naming a configured session.
    let first = loop {
        match decoder.frame(&buf) {
            Frame::Complete(len) => break len,
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
    let Some(slot) = slots.get(&key).cloned() else {
        tracing::warn!(%peer, sender = %String::from_utf8_lossy(&key.1), target = %String::from_utf8_lossy(&key.0), "Logon for an unknown CompID pair refused");
        refuse(&mut stream, &begin_string, &message, "unknown CompID pair").await;
        return;
    };
    let taken = slot
        .session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    let Some(session) = taken else {
        tracing::warn!(%peer, session = %String::from_utf8_lossy(&key.1), "second connection for a connected session refused");
        refuse(
            &mut stream,
            &begin_string,
            &message,
            "session already connected",
        )
        .await;
        return;
    };
    let mut held = Held {
        slot,
        session: Some(session),
    };
    let Some(session) = held.session.as_mut() else {
        return;
    };
    tracing::info!(%peer, session = %session.config().target_comp_id, "connection holds session");
    drive(session, stream, buf, chunk, shutdown).await;
}

async fn refuse(stream: &mut TcpStream, begin_string: &str, message: &Message, text: &str) {
    let bytes = session::refusal_logout(begin_string, message, Timestamp::now(), text);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Runs one logged-on (or logging-on) connection until the session says to close it or the
/// peer goes away.
async fn drive<S: SessionStore>(
    session: &mut Session<S>,
    mut stream: TcpStream,
    pending: Vec<u8>,
    mut chunk: Vec<u8>,
    mut shutdown: watch::Receiver<bool>,
) {
    let now = Timestamp::now();
    session.on_connect(now);
    session.handle_bytes(now, &pending);
    let mut out: Vec<u8> = Vec::with_capacity(constants::READ_CHUNK);
    let mut logging_out = false;
    loop {
        let mut closing = false;
        while let Some(event) = session.poll_event() {
            match event {
                Event::LoggedOn { reset } => {
                    tracing::info!(session = %session.config().target_comp_id, reset, "session logged on");
                }
                Event::Application(message) => reject_unavailable(session, &message),
                Event::Disconnect(reason) => {
                    tracing::info!(session = %session.config().target_comp_id, ?reason, "session closing connection");
                    closing = true;
                }
            }
        }
        session.poll_transmit(&mut out);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if let Err(error) = session.store_mut().flush() {
            tracing::error!(session = %session.config().target_comp_id, %error, "session store flush failed");
        }
        if closing {
            let _ = stream.shutdown().await;
            return;
        }
        let sleep_for = session
            .next_timeout()
            .map(|at| Duration::from_nanos(at.0.saturating_sub(Timestamp::now().0)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => session.handle_bytes(Timestamp::now(), &chunk[..n]),
            },
            _ = tokio::time::sleep(sleep_for) => session.handle_timeout(Timestamp::now()),
            changed = shutdown.changed(), if !logging_out => {
                logging_out = true;
                if changed.is_ok() {
                    session.logout(Timestamp::now(), "gateway shutting down");
                }
            }
        }
    }
}

/// Answers a business message no engine can take: BusinessMessageReject with reason 4
/// (application not available), so nothing is ever dropped silently.
pub fn reject_unavailable<S: SessionStore>(session: &mut Session<S>, message: &Message) {
    let seq = message.uint(tags::MSG_SEQ_NUM).unwrap_or(0);
    let ref_msg_type = message.msg_type();
    let ref_id = message.get(tags::CL_ORD_ID);
    let sent = session.send_app(Timestamp::now(), msg_type::BUSINESS_MESSAGE_REJECT, |e| {
        e.uint(tags::REF_SEQ_NUM, seq)
            .bytes(tags::REF_MSG_TYPE, ref_msg_type);
        if let Some(id) = ref_id {
            e.bytes(tags::BUSINESS_REJECT_REF_ID, id);
        }
        e.uint(
            tags::BUSINESS_REJECT_REASON,
            u64::from(BusinessRejectReason::ApplicationNotAvailable.code()),
        )
        .str(tags::TEXT, "application not available");
    });
    if let Err(error) = sent {
        tracing::error!(%error, "cannot store BusinessMessageReject");
    }
}
