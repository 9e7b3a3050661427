//! Connection I/O: the thin tokio driver around [`Session`].
//!
//! Each connection is its own task, so a slow or silent counterparty never blocks another. A new
//! connection must present a Logon within the logon timeout; its CompIDs pick the session, which
//! the connection holds exclusively until it closes (a second connection for the same session is
//! closed without a message). The driver reads, feeds the session with the wall-clock time, writes
//! what the session returns, and sleeps until the session's next deadline: all protocol decisions
//! are the session's.
//! On a TLS listener the handshake comes first, under the same Logon deadline and pre-logon
//! budget (see [`super::tls`]); the driver then reads and writes the TLS stream as it would TCP.
//!
//! Sessions live in [`Sessions`] for the gateway's whole life, connected or not, each behind its
//! own mutex. That is what lets the outbox hand an execution report to a session whatever its
//! connection is doing: if it is logged on the report is written at once, otherwise it is stored
//! under the next sequence number and reaches the counterparty by resend when it is back.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::tls::{self, FixStream, FixTls, Peer};
use super::tls_record::TlsCarry;
use super::translate;
use crate::config::VenueConfig;
use crate::constants;
use crate::engine::{Request, SessionId};
use crate::fix::codec::{Decoder, Frame, Garbled, Message};
use crate::fix::escape::Escaped;
use crate::fix::session::{self, Event, Session, State};
use crate::fix::store::SessionStore;
use crate::fix::tags::{self, BusinessRejectReason, msg_type};
use crate::fix::time::Timestamp;
use crate::handover::{HeldConnection, HolderLink, Label};

/// Test-only fault injection: with this variable naming a file that does not exist yet, the
/// gateway creates the file, writes the first half of the next bytes that carry an
/// ExecutionReport to a counterparty, and aborts, so a test can prove that a crash in the middle
/// of a write is recovered on the same connection. The file makes it happen once across the
/// restarts that inherit the variable. Unset (always, outside tests) it changes nothing: the
/// variable is read once, and its check is one branch on the write path.
pub const TEST_ABORT_MID_WRITE_ENV: &str = "BATON_TEST_ABORT_MID_WRITE";

/// The file [`TEST_ABORT_MID_WRITE_ENV`] names, while it does not exist.
fn abort_mid_write_armed() -> Option<&'static std::path::Path> {
    static ARMED: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var_os(TEST_ABORT_MID_WRITE_ENV).map(Into::into))
        .as_deref()
        .filter(|marker| !marker.exists())
}

/// The test-only crash of [`TEST_ABORT_MID_WRITE_ENV`], when armed and `out` carries an
/// ExecutionReport: half of it written, then the process aborts.
async fn abort_mid_write_if_armed(stream: &mut FixStream, out: &[u8]) {
    let Some(marker) = abort_mid_write_armed() else {
        return;
    };
    if !out.windows(6).any(|w| w == b"\x0135=8\x01") || std::fs::write(marker, b"").is_err() {
        return;
    }
    let _ = stream.write_all(&out[..out.len() / 2]).await;
    let _ = stream.flush().await;
    tracing::error!("{TEST_ABORT_MID_WRITE_ENV}: aborting in the middle of a write, as asked");
    std::process::abort();
}

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
    /// The session store's [`SessionStore::sequence_epoch`] when the message was read, taken
    /// while the connection holds the session anyway, so the sequencer journals it with the
    /// message's MsgSeqNum without locking the session again.
    pub sequence_epoch: u64,
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

    /// [`Sessions::confirm`], handing `message` (the journaled one) back to its session for
    /// reuse in the same step (see [`Session::recycle`]), so the steady state allocates no
    /// message per order.
    pub fn confirm_and_recycle(&self, id: SessionId, seq: u64, message: Message) {
        if let Some(mut session) = self.lock(id) {
            session.confirm_in(seq);
            session.recycle(message);
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
        self.business_reject_at(Timestamp::now(), id, message, reason, text);
    }

    /// [`Sessions::business_reject`] at `now`, for the sans-IO core, which is given the time
    /// rather than reading a clock.
    pub fn business_reject_at(
        &self,
        now: Timestamp,
        id: SessionId,
        message: &Message,
        reason: BusinessRejectReason,
        text: &str,
    ) {
        self.with(id, |session| {
            if let Ok(seq) = message.uint(tags::MSG_SEQ_NUM) {
                session.confirm_in(seq);
            }
            let sent = session.send_app(now, msg_type::BUSINESS_MESSAGE_REJECT, |e| {
                translate::write_business_reject(e, message, reason, text)
            });
            if let Err(error) = sent {
                tracing::error!(%error, "cannot store BusinessMessageReject");
            }
        });
    }

    /// The venue's rules on business messages, for whoever turns them into requests.
    pub(crate) fn venue(&self) -> &VenueConfig {
        &self.venue
    }

    /// Whether every connected session is [`Session::settled`]: nothing in the middle of a FIX
    /// exchange, so a planned upgrade can hand them over with nothing to repair.
    pub fn all_settled(&self) -> bool {
        self.slots.iter().all(|slot| {
            !slot.connected.load(Ordering::Acquire)
                || slot
                    .session
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .settled()
        })
    }

    /// How many sessions a connection holds now.
    pub fn connected(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.connected.load(Ordering::Acquire))
            .count()
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

/// Where a planned upgrade's barrier has the connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading, writing and accepting.
    Serving,
    /// At the barrier: nothing is read or accepted (counterparties' bytes wait in the kernel),
    /// while outputs of what was read are still written.
    Paused,
    /// Each connection writes what it holds, gives its session's unstored state to the socket
    /// holder and lets go of its socket, which the holder keeps for the successor.
    HandOver,
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
    /// Bounds connections at once, logged on or not, and those not logged on yet.
    budget: Arc<ConnectionBudget>,
    /// Turns true when the gateway is shutting down.
    shutdown: watch::Receiver<bool>,
    /// `Some`: every connection speaks TLS (see [`super::tls`]).
    tls: Option<Arc<FixTls>>,
    /// `Some`: a socket holder keeps a duplicate of every connection (see [`crate::handover`]).
    holder: Option<Arc<HolderLink>>,
    /// Logged-on connections taken back from the holder, resumed when [`Acceptor::run`] starts.
    adopted: Vec<(u64, Label, OwnedFd)>,
    /// Their sessions' state handed over by a planned upgrade, by connection id.
    carries: BTreeMap<u64, session::SessionCarry>,
    /// TLS connections' state handed over by a planned upgrade, by connection id: those
    /// connections go on with [`tls::ContinuedTls`].
    tls_carries: BTreeMap<u64, TlsCarry>,
    /// Set by a planned upgrade's barrier. The sender itself, so that every holder of it keeps
    /// it alive (a closed watch would wake its receivers forever).
    phase: Arc<watch::Sender<Phase>>,
    /// Turns true once business messages can be sequenced (an engine attached): taken-back
    /// connections are read from then on (or after [`constants::RESUME_ENGINE_WAIT_MS`]), so
    /// what counterparties sent while no gateway ran is not refused only because the engine
    /// link of the new process is seconds younger than its sessions.
    resume_gate: Option<watch::Receiver<bool>>,
}

/// Controls a running [`Acceptor`] from outside its task.
#[derive(Clone)]
pub struct AcceptorHandle {
    /// Sends the shutdown signal.
    shutdown: watch::Sender<bool>,
    /// Where the acceptor listens (useful when bound to port 0).
    local_addr: SocketAddr,
    /// Moves every connection through a planned upgrade's barrier.
    phase: Arc<watch::Sender<Phase>>,
}

impl AcceptorHandle {
    /// Moves every connection (and the accept loop) to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

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
        Acceptor::with_listener(listener, sessions, business, connections_max)
    }

    /// [`Acceptor::bind`] on a listening socket that is already bound: the one a previous
    /// gateway process listened on, taken back from the socket holder, so there is no moment
    /// when the address is free for another process to take.
    pub fn from_listener(
        listener: std::net::TcpListener,
        sessions: Arc<Sessions<S>>,
        business: Option<mpsc::Sender<Inbound>>,
        connections_max: usize,
    ) -> std::io::Result<(Acceptor<S>, AcceptorHandle)> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        Acceptor::with_listener(listener, sessions, business, connections_max)
    }

    fn with_listener(
        listener: TcpListener,
        sessions: Arc<Sessions<S>>,
        business: Option<mpsc::Sender<Inbound>>,
        connections_max: usize,
    ) -> std::io::Result<(Acceptor<S>, AcceptorHandle)> {
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let phase = Arc::new(watch::Sender::new(Phase::Serving));
        Ok((
            Acceptor {
                listener,
                sessions,
                business,
                budget: Arc::new(ConnectionBudget::new(
                    connections_max,
                    constants::PRELOGON_CONNECTIONS_MAX,
                    constants::PRELOGON_CONNECTIONS_PER_ADDRESS_MAX,
                )),
                shutdown: shutdown_rx,
                tls: None,
                holder: None,
                adopted: Vec::new(),
                carries: BTreeMap::new(),
                tls_carries: BTreeMap::new(),
                phase: phase.clone(),
                resume_gate: None,
            },
            AcceptorHandle {
                shutdown: shutdown_tx,
                local_addr,
                phase,
            },
        ))
    }

    /// Sets the budget of connections that have not logged on yet, in all and per source
    /// address (defaults: [`constants::PRELOGON_CONNECTIONS_MAX`],
    /// [`constants::PRELOGON_CONNECTIONS_PER_ADDRESS_MAX`]).
    pub fn set_prelogon_limits(&mut self, total: usize, per_address: usize) {
        self.budget = Arc::new(ConnectionBudget::new(
            self.budget.total_max,
            total,
            per_address,
        ));
    }

    /// Makes every connection speak TLS; `None` keeps plain TCP.
    pub fn set_tls(&mut self, tls: Option<Arc<FixTls>>) {
        self.tls = tls;
    }

    /// Lets `holder` keep a duplicate of the listening socket and of every connection, and
    /// takes over `connections` (taken back from it after a previous gateway process died):
    /// logged-on ones are resumed as logged on when [`Acceptor::run`] starts; the others had
    /// not logged on and are closed, in the holder too. A TLS connection comes back only from a
    /// planned upgrade, with its keys ([`Acceptor::set_tls_carries`]).
    pub fn set_holder(
        &mut self,
        holder: Arc<HolderLink>,
        connections: Vec<(u64, Option<Label>, OwnedFd)>,
    ) {
        holder.hold_listener(self.listener.as_fd());
        for (id, label, fd) in connections {
            match label {
                Some(label) => self.adopted.push((id, label, fd)),
                None => {
                    tracing::info!(
                        connection = id,
                        "held connection had not logged on; closing"
                    );
                    drop(holder.adopt(id, None));
                }
            }
        }
        self.holder = Some(holder);
    }

    /// Sessions' state handed over by a planned upgrade, by connection id: those connections
    /// continue from it instead of as after a crash.
    pub fn set_carries(&mut self, carries: BTreeMap<u64, session::SessionCarry>) {
        self.carries = carries;
    }

    /// TLS connections' state handed over by a planned upgrade, by connection id: they go on
    /// encrypted as before (the holder closes TLS connections that come without it).
    pub fn set_tls_carries(&mut self, carries: BTreeMap<u64, TlsCarry>) {
        self.tls_carries = carries;
    }

    /// Sets the gate taken-back connections wait for (see the field); without one they resume
    /// at once.
    pub fn set_resume_gate(&mut self, gate: watch::Receiver<bool>) {
        self.resume_gate = Some(gate);
    }

    /// Whether connections were taken back from the holder and wait to resume.
    pub fn has_adopted(&self) -> bool {
        !self.adopted.is_empty()
    }

    /// Accepts until shutdown, then waits (bounded) for every session to log out.
    ///
    /// Every session taken back from the holder is continued (logged on, from its store and
    /// its carried state) here, before any of their connections is read: once one is read,
    /// its orders may fill another session's, and a session not continued yet would store that
    /// report without writing it, a gap for its counterparty. Only then do their connections
    /// wait for an engine and start reading.
    pub async fn run(mut self) -> std::io::Result<()> {
        let mut tasks = JoinSet::new();
        for (id, label, fd) in std::mem::take(&mut self.adopted) {
            let Some(holder) = self.holder.clone() else {
                break;
            };
            let held = holder.adopt(id, Some(label.clone()));
            let tcp = std::net::TcpStream::from(fd);
            let stream = match tcp
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(tcp))
            {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(connection = id, %error, "held connection unusable; closing");
                    continue;
                }
            };
            let Ok(peer) = stream.peer_addr() else {
                tracing::info!(
                    connection = id,
                    "held connection closed by the counterparty meanwhile"
                );
                continue;
            };
            let Some(admission) = ConnectionBudget::admit(&self.budget, peer.ip()) else {
                continue;
            };
            let connection = Connection {
                sessions: self.sessions.clone(),
                business: self.business.clone(),
                shutdown: self.shutdown.clone(),
                phase: self.phase.clone(),
                peer,
                tls: None,
                held: Some(held),
            };
            let carry = self.carries.remove(&id);
            let Some(session) = connection.take_back(&label, carry.as_ref()) else {
                continue;
            };
            let tls_carry = self.tls_carries.remove(&id);
            let gate = self.resume_gate.clone();
            tasks.spawn(async move {
                if let Some(mut gate) = gate {
                    let wait = Duration::from_millis(constants::RESUME_ENGINE_WAIT_MS);
                    if tokio::time::timeout(wait, gate.wait_for(|open| *open))
                        .await
                        .is_err()
                    {
                        tracing::warn!(
                            connection = id,
                            "no engine attached in time; resuming the session without one"
                        );
                    }
                }
                connection
                    .resume(stream, admission, &label, session, tls_carry)
                    .await;
            });
        }
        let mut phase = self.phase.subscribe();
        loop {
            let serving = *phase.borrow_and_update() == Phase::Serving;
            tokio::select! {
                // At a barrier new connections wait in the listen backlog, for whichever
                // gateway serves next.
                _ = phase.changed() => {}
                accepted = self.listener.accept(), if serving => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            // Out of descriptors and the like: back off instead of spinning.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(admission) = ConnectionBudget::admit(&self.budget, peer.ip()) else {
                        tracing::warn!(%peer, "connection limit reached by logged-on sessions; closing");
                        drop(stream);
                        continue;
                    };
                    let tls = self.tls.is_some();
                    let held = self.holder.as_ref().map(|holder| holder.hold(stream.as_fd(), tls));
                    let connection = Connection {
                        sessions: self.sessions.clone(),
                        business: self.business.clone(),
                        shutdown: self.shutdown.clone(),
                        phase: self.phase.clone(),
                        peer,
                        tls: self.tls.clone(),
                        held,
                    };
                    tasks.spawn(async move {
                        connection.serve(stream, admission).await;
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

/// How many connections the acceptor holds, and which have not logged on yet.
///
/// A connection that has not presented a Logon for a configured session is the cheapest thing
/// an unknown peer can make the gateway hold, so those get their own, smaller budget, in all
/// and per source address. When a budget is full the oldest such connection is closed to make
/// room for the new one: idle sockets can delay a counterparty's Logon by a reconnect at
/// most, never refuse it until they time out.
struct ConnectionBudget {
    /// Connections at once, logged on or not.
    total_max: usize,
    /// Connections at once not logged on.
    prelogon_max: usize,
    /// Connections at once not logged on, per source address.
    per_address_max: usize,
    /// Who holds what.
    state: Mutex<BudgetState>,
}

/// See [`ConnectionBudget`].
#[derive(Default)]
struct BudgetState {
    /// Connections counted in the total budget.
    total: usize,
    /// Admission number of the next connection; orders connections by age.
    next_id: u64,
    /// Connections not logged on, oldest first: source address and how to close it.
    prelogon: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    /// Connections not logged on, per source address.
    per_address: HashMap<IpAddr, usize>,
}

impl BudgetState {
    /// Closes the oldest connection not logged on (from `from`, when given); false if none.
    fn evict_oldest(&mut self, from: Option<IpAddr>) -> bool {
        let oldest = self
            .prelogon
            .iter()
            .find(|(_, (address, _))| from.is_none_or(|from| *address == from))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| self.release(id)) {
            Some(close) => {
                let _ = close.send(());
                true
            }
            None => false,
        }
    }

    /// Forgets pre-logon connection `id` and its share of the budgets, returning what closes
    /// it; `None` if it was not pre-logon (logged on, or already evicted).
    fn release(&mut self, id: u64) -> Option<oneshot::Sender<()>> {
        let (address, close) = self.prelogon.remove(&id)?;
        if let Some(count) = self.per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&address);
            }
        }
        self.total -= 1;
        Some(close)
    }
}

impl ConnectionBudget {
    fn new(total_max: usize, prelogon_max: usize, per_address_max: usize) -> ConnectionBudget {
        // A budget of zero would refuse every counterparty; one is the least that works.
        let total_max = total_max.max(1);
        let prelogon_max = prelogon_max.clamp(1, total_max);
        ConnectionBudget {
            total_max,
            prelogon_max,
            per_address_max: per_address_max.clamp(1, prelogon_max),
            state: Mutex::new(BudgetState::default()),
        }
    }

    /// Admits a new connection from `address`, closing older pre-logon connections as the
    /// budgets require; `None` only when every connection is logged on and the total is full.
    fn admit(budget: &Arc<ConnectionBudget>, address: IpAddr) -> Option<Admission> {
        let mut state = budget
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut evicted = 0;
        if state.per_address.get(&address).copied().unwrap_or(0) >= budget.per_address_max {
            evicted += usize::from(state.evict_oldest(Some(address)));
        }
        if state.prelogon.len() >= budget.prelogon_max {
            evicted += usize::from(state.evict_oldest(None));
        }
        if state.total >= budget.total_max {
            if !state.evict_oldest(None) {
                return None;
            }
            evicted += 1;
        }
        if evicted > 0 {
            tracing::debug!(%address, evicted, "pre-logon budget full: oldest closed");
        }
        let id = state.next_id;
        state.next_id += 1;
        let (evict_tx, evict_rx) = oneshot::channel();
        state.prelogon.insert(id, (address, evict_tx));
        *state.per_address.entry(address).or_default() += 1;
        state.total += 1;
        Some(Admission {
            budget: budget.clone(),
            id,
            logged_on: false,
            evicted: evict_rx,
        })
    }
}

/// A connection's place in the [`ConnectionBudget`]; given back when dropped.
struct Admission {
    /// The budget it counts in.
    budget: Arc<ConnectionBudget>,
    /// Its admission number.
    id: u64,
    /// Whether it holds a session (counted in the total only).
    logged_on: bool,
    /// Fires when the connection is closed to make room.
    evicted: oneshot::Receiver<()>,
}

impl Admission {
    /// The connection holds a session: it leaves the pre-logon budget and can no longer be
    /// evicted.
    fn logged_on(&mut self) {
        let mut state = self
            .budget
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.release(self.id).is_some() {
            state.total += 1;
            self.logged_on = true;
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self
            .budget
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.logged_on {
            state.total -= 1;
        } else {
            // Pre-logon: released here unless an eviction already did.
            state.release(self.id);
        }
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
    /// A planned upgrade's barrier (see [`Acceptor`]'s field).
    phase: Arc<watch::Sender<Phase>>,
    /// The counterparty's address, for logs.
    peer: SocketAddr,
    /// The TLS side, when the listener speaks TLS.
    tls: Option<Arc<FixTls>>,
    /// The socket holder's duplicate; released when the connection ends.
    held: Option<HeldConnection>,
}

/// Releases a session's connection claim however the connection ends.
struct Claim<'a, S: SessionStore> {
    /// The claimed slot.
    slot: &'a SessionSlot<S>,
}

impl<'a, S: SessionStore> Claim<'a, S> {
    /// Claims `slot` for one connection, or `None` while another connection holds it: a
    /// session is driven by one connection at a time, whether it logs on or is taken back.
    fn take(slot: &'a SessionSlot<S>) -> Option<Self> {
        if !Claim::reserve(slot) {
            return None;
        }
        Some(Claim { slot })
    }

    /// Marks `slot` claimed without a guard yet, for a connection taken back, whose session is
    /// continued before its task runs ([`Connection::take_back`]); false while another
    /// connection holds it. The task then takes the guard with [`Claim::reserved`].
    fn reserve(slot: &SessionSlot<S>) -> bool {
        slot.connected
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The guard of a claim [`Claim::reserve`] made; releases it however the connection ends.
    fn reserved(slot: &'a SessionSlot<S>) -> Self {
        debug_assert!(slot.connected.load(Ordering::Acquire));
        Claim { slot }
    }
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
    /// Claims the session a connection taken back from the holder was logged on to, and
    /// continues it: from the state a planned upgrade carried, or as after a crash. Returns the
    /// session, claimed for this connection, or `None` (logged) when the connection is to be
    /// closed: its session is no longer configured or is connected already, or the session
    /// cannot continue (outside session time, a carry this build cannot read). Synchronous, so
    /// [`Acceptor::run`] continues every such session before any connection is read.
    fn take_back(&self, label: &Label, carry: Option<&session::SessionCarry>) -> Option<SessionId> {
        let peer = self.peer;
        let key = (
            label.sender_comp_id.as_bytes().to_vec(),
            label.target_comp_id.as_bytes().to_vec(),
        );
        let Some(&id) = self.sessions.by_key.get(&key) else {
            tracing::warn!(%peer, sender = %Escaped(&key.0), target = %Escaped(&key.1), "held connection's session is not configured any more; closing");
            return None;
        };
        let span =
            tracing::info_span!("session", sender = %Escaped(&key.0), target = %Escaped(&key.1));
        let _entered = span.enter();
        let slot = &self.sessions.slots[id as usize];
        if !Claim::reserve(slot) {
            tracing::warn!(%peer, "held connection's session is connected already; closing");
            return None;
        }
        let resumed = {
            let mut session = self.sessions.lock(id).expect("id comes from by_key");
            match carry {
                Some(carry) => session.resume_carried(Timestamp::now(), carry),
                None => session.resume(Timestamp::now(), label.heartbeat_interval_ms),
            }
        };
        if !resumed {
            tracing::info!(%peer, "held connection outside session time; closing");
            drop(Claim::reserved(slot));
            return None;
        }
        Some(id)
    }

    /// Runs a connection taken back from the holder whose session [`Connection::take_back`]
    /// continued and claimed.
    async fn resume(
        mut self,
        tcp: TcpStream,
        mut admission: Admission,
        label: &Label,
        id: SessionId,
        tls_carry: Option<TlsCarry>,
    ) {
        let _ = tcp.set_nodelay(true);
        let sessions = self.sessions.clone();
        let span = tracing::info_span!(
            "session",
            sender = %Escaped(label.sender_comp_id.as_bytes()),
            target = %Escaped(label.target_comp_id.as_bytes())
        );
        async {
            let slot = &sessions.slots[id as usize];
            let _claim = Claim::reserved(slot);
            admission.logged_on();
            let stream = match &tls_carry {
                None => FixStream::Plain(tcp),
                Some(tls_carry) => match FixStream::continued(tcp, tls_carry) {
                    Ok(stream) => stream,
                    Err(error) => {
                        // Dropped: the held duplicate is released with the claim below.
                        let peer = self.peer;
                        tracing::warn!(%peer, %error, "handed-over TLS connection cannot be continued; closing");
                        return;
                    }
                },
            };
            drop(tls_carry);
            let chunk = vec![0u8; constants::READ_CHUNK];
            self.drive(id, slot, stream, chunk).await;
        }
        .instrument(span)
        .await;
    }

    async fn serve(mut self, tcp: TcpStream, mut admission: Admission) {
        let peer = self.peer;
        let _ = tcp.set_nodelay(true);
        // Unauthenticated: a larger declared body than a Logon needs closes the connection
        // before the body is read.
        let decoder = Decoder::new(constants::LOGON_BODY_LENGTH_MAX);
        let mut buf: Vec<u8> = Vec::with_capacity(constants::READ_CHUNK);
        let mut chunk = vec![0u8; constants::READ_CHUNK];
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(constants::LOGON_TIMEOUT_DEFAULT_MS);
        // The TLS handshake is part of getting to a Logon: same deadline, same budget (eviction).
        let (mut stream, identity) = match self.tls.clone() {
            None => (FixStream::Plain(tcp), Peer::Unverified),
            Some(fix_tls) => {
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout_at(deadline, fix_tls.accept(tcp)) => handshake,
                    _ = &mut admission.evicted => {
                        tracing::debug!(%peer, "TLS handshake not done; closed to make room for a new connection");
                        return;
                    }
                };
                match handshake {
                    Ok(Ok(accepted)) => accepted,
                    Ok(Err(error)) => {
                        tls::log_handshake_failure(peer, &error);
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "TLS handshake not done before the Logon deadline; closing");
                        return;
                    }
                }
            }
        };

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
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => read,
                _ = &mut admission.evicted => {
                    tracing::debug!(%peer, "not logged on; closed to make room for a new connection");
                    return;
                }
            };
            match read {
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
        let Some((_, their_comp_id, our_comp_id)) = session::identify(&message) else {
            tracing::warn!(%peer, "first message has no CompIDs; closing");
            return;
        };
        let key = (our_comp_id.to_vec(), their_comp_id.to_vec());
        // A client certificate that does not cover the CompID is refused like an unknown CompID.
        if !identity.may_log_on_as(&key.1) {
            tls::log_not_mapped(peer, &identity, &key.1);
            return;
        }
        let sessions = self.sessions.clone();
        // A connection that names no session, or one that is already connected, is closed
        // without a message (FIX session test cases 1S b and c): the peer is not authenticated,
        // so it learns nothing, not even a CompID, and no session's numbering is touched.
        let Some(&id) = sessions.by_key.get(&key) else {
            tracing::warn!(%peer, sender = %Escaped(&key.1), target = %Escaped(&key.0), "Logon for an unknown CompID pair: closed without an answer");
            return;
        };
        // From here on the connection speaks for one session: every line it logs names the
        // session's CompIDs (ours as sender, theirs as target), in text and in JSON alike.
        let span =
            tracing::info_span!("session", sender = %Escaped(&key.0), target = %Escaped(&key.1));
        async {
            let slot = &sessions.slots[id as usize];
            let Some(_claim) = Claim::take(slot) else {
                tracing::warn!(%peer, session = %Escaped(&key.1), "Logon for a session that is already connected: closed without an answer");
                return;
            };
            // Holds a session now: out of the pre-logon budget, never evicted.
            admission.logged_on();
            {
                let mut session = sessions.lock(id).expect("id comes from by_key");
                let now = Timestamp::now();
                session.on_connect(now);
                session.handle_bytes(now, &buf);
                tracing::info!(%peer, session = %session.config().target_comp_id, "connection holds session");
            }
            self.drive(id, slot, stream, chunk).await;
        }
        .instrument(span)
        .await;
    }

    /// Runs one connection until the session says to close it or the peer goes away.
    async fn drive(
        &mut self,
        id: SessionId,
        slot: &SessionSlot<S>,
        mut stream: FixStream,
        mut chunk: Vec<u8>,
    ) {
        let mut out: Vec<u8> = Vec::with_capacity(constants::READ_CHUNK);
        let mut requests: Vec<Inbound> = Vec::new();
        let mut logging_out = false;
        let mut phase = self.phase.subscribe();
        loop {
            let current = *phase.borrow_and_update();
            if current == Phase::HandOver {
                self.hand_over(slot, stream, &mut out).await;
                return;
            }
            let reading = current == Phase::Serving;
            let (closing, next_timeout, resending) = {
                let mut session = slot
                    .session
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let held = &self.held;
                let closing = take_events(
                    &mut session,
                    id,
                    &self.sessions.venue,
                    Timestamp::now(),
                    &mut requests,
                    |session| {
                        if let Some(held) = held {
                            held.label(Label {
                                sender_comp_id: session.config().sender_comp_id.clone(),
                                target_comp_id: session.config().target_comp_id.clone(),
                                heartbeat_interval_ms: session.heartbeat_interval_ms(),
                            });
                        }
                    },
                );
                // `out` was written out in full (or this is the first pass): the connection's
                // writes drained, so a resend being served may take its next step.
                if session.resend_pending() && !session.has_transmit() {
                    session.continue_resend(Timestamp::now());
                }
                session.poll_transmit(&mut out);
                if let Err(error) = session.store_mut().flush() {
                    tracing::error!(session = %session.config().target_comp_id, %error, "session store flush failed");
                }
                (closing, session.next_timeout(), session.resend_pending())
            };
            // Requests first: their sequence numbers are taken, so they must reach the sequencer
            // even if the write below fails.
            for inbound in requests.drain(..) {
                self.forward(inbound).await;
            }
            if !out.is_empty() {
                abort_mid_write_if_armed(&mut stream, &out).await;
                // A counterparty that stops reading is disconnected rather than allowed to hold
                // the task (and the session's unsent bytes) forever; what it missed is stored and
                // resent after it logs on again.
                // Flushed too: TLS may hold written bytes back until asked (plain TCP does not).
                let write = tokio::time::timeout(
                    Duration::from_millis(constants::CONNECTION_WRITE_TIMEOUT_MS),
                    async {
                        stream.write_all(&out).await?;
                        stream.flush().await
                    },
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
            if resending {
                // Between resend steps, let every other task run before this one continues.
                tokio::task::yield_now().await;
            }
            tokio::select! {
                biased;
                _ = phase.changed() => {}
                read = stream.read(&mut chunk), if reading => match read {
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
                // Input, timers and the outbox first; otherwise the resend's next step.
                _ = std::future::ready(()), if resending => {}
            }
        }
    }

    /// Planned upgrade: writes what the session holds, gives its unstored state to the socket
    /// holder, and lets go of the socket without closing the connection (the holder keeps it for
    /// the successor). Nothing is read any more: input waits in the kernel for the successor.
    async fn hand_over(&mut self, slot: &SessionSlot<S>, mut stream: FixStream, out: &mut Vec<u8>) {
        // Everything polled before this was written by the connection's loop.
        let (mut carry, written_before) = {
            let mut session = slot
                .session
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let written_before = session.seq_num_out_polled();
            session.poll_transmit(out);
            if let Err(error) = session.store_mut().flush() {
                tracing::error!(session = %session.config().target_comp_id, %error, "session store flush failed");
            }
            let carry = session.carry();
            tracing::debug!(
                written = ?carry.seq_num_out_written,
                seq_num_next_out = session.store().seq_num_next_out(),
                "session handed over"
            );
            (carry, written_before)
        };
        if !out.is_empty() {
            // Flushed too: TLS must have nothing left to write when its keys are handed over.
            let write = tokio::time::timeout(
                Duration::from_millis(constants::UPGRADE_HANDOVER_MAX_MS),
                async {
                    stream.write_all(out).await?;
                    stream.flush().await
                },
            );
            if !matches!(write.await, Ok(Ok(()))) {
                // Perhaps partly written: the successor writes those messages again, whole,
                // behind what may be a cut frame the counterparty skips as garbled.
                tracing::warn!(peer = %self.peer, "write at hand-over failed or timed out");
                carry.seq_num_out_written = Some(written_before);
            }
            out.clear();
        }
        let tls = match stream.hand_off().await {
            Ok(tls) => tls,
            Err(reason) => {
                tracing::warn!(peer = %self.peer, %reason, "TLS connection not handed over: closed, its counterparty reconnects");
                if let Some(held) = self.held.take() {
                    held.not_carried();
                }
                return;
            }
        };
        match self.held.take() {
            Some(held) => {
                if let Err(error) = held.hand_over(carry, tls) {
                    tracing::error!(%error, peer = %self.peer, "session state not handed over; the successor continues it as after a crash");
                }
            }
            None => {
                tracing::warn!(peer = %self.peer, "connection not held: it ends with this process")
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

/// Acts on what `session` (id `id`) told its connection: business messages become requests
/// for the sequencer (or, unusable, are answered with a BusinessMessageReject at once), a Logon
/// is passed to `logged_on`. Returns whether the session asked for the connection to close.
/// Shared by the connection task and the simulation, so both drive sessions the same way.
pub(crate) fn take_events<S: SessionStore>(
    session: &mut Session<S>,
    id: SessionId,
    venue: &VenueConfig,
    now: Timestamp,
    requests: &mut Vec<Inbound>,
    mut logged_on: impl FnMut(&Session<S>),
) -> bool {
    let mut closing = false;
    while let Some(event) = session.poll_event() {
        match event {
            Event::LoggedOn { reset } => {
                tracing::info!(session = %session.config().target_comp_id, reset, "session logged on");
                logged_on(session);
            }
            Event::Application(message) => match translate::request_from_fix(&message, venue) {
                Ok(request) => requests.push(Inbound {
                    session: id,
                    request,
                    message,
                    sequence_epoch: session.store().sequence_epoch(),
                }),
                Err(unusable) => {
                    if let Ok(seq) = message.uint(tags::MSG_SEQ_NUM) {
                        session.confirm_in(seq);
                    }
                    let sent = session.send_app(now, msg_type::BUSINESS_MESSAGE_REJECT, |e| {
                        translate::write_business_reject(
                            e,
                            &message,
                            unusable.reason,
                            &unusable.text,
                        )
                    });
                    if let Err(error) = sent {
                        tracing::error!(%error, "cannot store BusinessMessageReject");
                    }
                }
            },
            Event::Disconnect(reason) => {
                tracing::info!(session = %session.config().target_comp_id, ?reason, "session closing connection");
                closing = true;
            }
        }
    }
    closing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn closed(admission: &mut Admission) -> bool {
        admission.evicted.try_recv().is_ok()
    }

    #[test]
    fn a_full_prelogon_budget_closes_its_oldest_connection() {
        let budget = Arc::new(ConnectionBudget::new(100, 4, 4));
        let mut first: Vec<Admission> = (1..=4)
            .map(|n| ConnectionBudget::admit(&budget, ip(n)).expect("room"))
            .collect();
        assert!(first.iter_mut().all(|a| !closed(a)));
        let _fifth = ConnectionBudget::admit(&budget, ip(5)).expect("room made");
        assert!(closed(&mut first[0]), "the oldest made room");
        assert!(first[1..].iter_mut().all(|a| !closed(a)));
        let state = budget.state.lock().unwrap();
        assert_eq!((state.total, state.prelogon.len()), (4, 4));
    }

    #[test]
    fn one_address_cannot_take_the_whole_prelogon_budget() {
        let budget = Arc::new(ConnectionBudget::new(100, 10, 2));
        let mut other = ConnectionBudget::admit(&budget, ip(9)).unwrap();
        let mut flood: Vec<Admission> = (0..5)
            .map(|_| ConnectionBudget::admit(&budget, ip(1)).unwrap())
            .collect();
        assert!(!closed(&mut other), "another address keeps its connection");
        let open = flood.iter_mut().map(closed).filter(|c| !c).count();
        assert_eq!(open, 2);
        assert_eq!(budget.state.lock().unwrap().per_address[&ip(1)], 2);
    }

    #[test]
    fn logged_on_connections_are_never_closed_to_make_room() {
        let budget = Arc::new(ConnectionBudget::new(3, 3, 3));
        let mut sessions: Vec<Admission> = (1..=2)
            .map(|n| {
                let mut a = ConnectionBudget::admit(&budget, ip(n)).unwrap();
                a.logged_on();
                a
            })
            .collect();
        let mut idle = ConnectionBudget::admit(&budget, ip(7)).unwrap();
        // Total full: the idle pre-logon connection makes room, the sessions stay.
        let mut newcomer = ConnectionBudget::admit(&budget, ip(8)).unwrap();
        assert!(closed(&mut idle));
        assert!(sessions.iter_mut().all(|a| !closed(a)));
        newcomer.logged_on();
        // Everyone logged on and the total full: nobody to evict, the new one is refused.
        assert!(ConnectionBudget::admit(&budget, ip(9)).is_none());
        drop(sessions.pop());
        assert!(ConnectionBudget::admit(&budget, ip(9)).is_some());
    }

    #[test]
    fn every_connection_gives_its_place_back() {
        let budget = Arc::new(ConnectionBudget::new(10, 4, 2));
        let admissions: Vec<Admission> = (0..20)
            .map(|n| {
                let mut a = ConnectionBudget::admit(&budget, ip(n % 3)).unwrap();
                if n % 7 == 0 {
                    a.logged_on();
                }
                a
            })
            .collect();
        drop(admissions);
        let state = budget.state.lock().unwrap();
        assert_eq!(state.total, 0);
        assert!(state.prelogon.is_empty() && state.per_address.is_empty());
    }
}
