//! The gateway's control endpoint: where `baton ctl` (or an operator with `nc`) asks for status,
//! a switch or a rollback.
//!
//! The endpoint only carries requests; it decides nothing. Each request becomes a
//! [`ControlCommand`] for the sequencer task, which owns the engines and the router and is the
//! only place a switch can happen at a barrier; the endpoint waits for its answer and writes it
//! back. The wire format is one JSON object per line in each direction ([`ControlRequest`] in,
//! [`ControlReply`] out), several requests per connection.
//!
//! Only the local host may send commands: [`bind`] refuses a non-loopback address, and every
//! accepted peer is checked again, so a misconfigured socket option or address family can never
//! expose the switch to the network. Whatever a peer sends is answered or dropped, never trusted:
//! lines are bounded, malformed JSON gets a [`ControlReply::Refused`] naming the problem, and a
//! sequencer that does not answer in time yields a refusal instead of a hung client.
//!
//! The endpoint is also the emergency brake (`baton ctl rollback`), so no local process can hold
//! it shut: a connection that sends nothing is closed within
//! [`constants::LOCAL_FIRST_REQUEST_TIMEOUT_MS`], and when every slot is taken the oldest idle
//! connection makes room for the newcomer ([`Slots`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::api::{ControlReply, ControlRequest};
use crate::constants;

/// A request on its way to the sequencer, with the channel its answer comes back on. The
/// sequencer answers every command it takes, exactly once; dropping `reply` unanswered is read by
/// the endpoint as a refusal, so a sequencer that shuts down mid-command cannot hang a client.
#[derive(Debug)]
pub struct ControlCommand {
    /// What the operator asked for.
    pub request: ControlRequest,
    /// Where the sequencer sends its answer; the endpoint is waiting on the other end (or has
    /// given up after its reply timeout, in which case the send fails harmlessly).
    pub reply: oneshot::Sender<ControlReply>,
    /// The SHA-256 of the executable the engine taking authority must run: the artifact of the
    /// approved change the command carries out. `None`: no change names one.
    pub expect_sha256: Option<String>,
    /// A rollback that may only end a canary (the gateway's own, after a gate breach): with no
    /// canary running it is refused rather than moving all authority back.
    pub canary_only: bool,
    /// The operating-system account of the process that sent the command, when the kernel
    /// says: recorded with the operator's name, which anyone can type.
    pub peer_uid: Option<u32>,
}

/// Why the control endpoint could not start, or why `baton ctl` got no answer. The messages name
/// the address, because an operator with several gateways on one host needs to know which.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The configured address is reachable from other hosts.
    #[error(
        "control endpoint address {addr} is not a loopback address: control commands are accepted from the local host only (use 127.0.0.1 or ::1)"
    )]
    NotLoopback {
        /// The address that was refused.
        addr: SocketAddr,
    },
    /// The listening socket could not be set up (port in use, permission).
    #[error("cannot listen for control commands on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The gateway could not be reached (not running, or a different port).
    #[error(
        "cannot connect to the gateway's control endpoint at {addr} (is the gateway running with this `[gateway] control` address?): {source}"
    )]
    Connect {
        /// The control address tried.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while a request or its reply was in transit.
    #[error("control connection to {addr} failed: {source}")]
    Io {
        /// The control address.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// No complete reply arrived in time. For a switch the outcome is then unknown.
    #[error(
        "no reply from the control endpoint at {addr} within {timeout_ms} ms (run `baton ctl status` to see whether the command took effect)"
    )]
    Timeout {
        /// The control address.
        addr: SocketAddr,
        /// The bound that was exceeded.
        timeout_ms: u64,
    },
    /// The peer closed the connection before a whole reply line arrived.
    #[error("the control endpoint at {addr} closed the connection without replying")]
    Closed {
        /// The control address.
        addr: SocketAddr,
    },
    /// The reply line exceeded the client's bound; whatever answers is not a baton gateway.
    #[error("reply from {addr} exceeds {max_bytes} bytes without a line end")]
    ReplyTooLong {
        /// The control address.
        addr: SocketAddr,
        /// The bound ([`constants::CONTROL_REPLY_LINE_BYTES_MAX`]).
        max_bytes: usize,
    },
    /// The reply is not a [`ControlReply`]: a different program on that port, or a gateway of an
    /// incompatible version.
    #[error("reply from {addr} is not a control reply: {source}")]
    MalformedReply {
        /// The control address.
        addr: SocketAddr,
        /// The JSON parser's message, naming line and column.
        #[source]
        source: serde_json::Error,
    },
}

/// A bound control endpoint that has not started serving yet: binding first lets the caller
/// report a busy port or a refused address before the gateway takes any traffic.
#[derive(Debug)]
pub struct ControlEndpoint {
    /// The listening socket, bound to a loopback address.
    listener: TcpListener,
    /// Where it is bound (the real port when asked for port 0).
    local_addr: SocketAddr,
    /// How long a request waits for the sequencer before it is refused.
    reply_timeout: Duration,
    /// How long a connection may idle between requests, or take to read a reply.
    idle_timeout: Duration,
    /// How long a new connection may take to send its first request.
    first_request_timeout: Duration,
}

/// Binds the control endpoint to `addr`, which must be a loopback address: the endpoint can move
/// authority between engines, so it must not be reachable from another host however the
/// configuration is written.
pub async fn bind(addr: SocketAddr) -> Result<ControlEndpoint, ControlError> {
    let (listener, local_addr) = bind_loopback(addr).await.map_err(|error| match error {
        None => ControlError::NotLoopback { addr },
        Some(source) => ControlError::Bind { addr, source },
    })?;
    Ok(ControlEndpoint {
        listener,
        local_addr,
        reply_timeout: Duration::from_millis(constants::CONTROL_REPLY_TIMEOUT_MS),
        idle_timeout: Duration::from_millis(constants::CONTROL_IDLE_TIMEOUT_MS),
        first_request_timeout: Duration::from_millis(constants::LOCAL_FIRST_REQUEST_TIMEOUT_MS),
    })
}

/// A listener on `addr` and the address it got, refusing any address but a loopback one: what
/// every operator-facing endpoint (control, metrics) needs. `Err(None)` means not loopback,
/// `Err(Some(_))` what the operating system said.
pub(crate) async fn bind_loopback(
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), Option<std::io::Error>> {
    if !is_loopback(addr.ip()) {
        return Err(None);
    }
    let listener = TcpListener::bind(addr).await.map_err(Some)?;
    let local_addr = listener.local_addr().map_err(Some)?;
    Ok((listener, local_addr))
}

/// The next connection to an operator-facing endpoint (`what`: control, metrics), with the slot
/// that bounds how many are open; `None` when it was dropped instead: an accept error (out of
/// descriptors and the like, after a short back-off instead of spinning), a peer that is not
/// local however the socket was set up, or every slot held by a connection in the middle of a
/// request.
pub(crate) async fn accept_local(
    listener: &TcpListener,
    slots: &Arc<Slots>,
    what: &str,
) -> Option<(TcpStream, SocketAddr, Slot)> {
    let (stream, peer) = match listener.accept().await {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, what, "accept failed");
            tokio::time::sleep(Duration::from_millis(constants::LOCAL_ACCEPT_BACKOFF_MS)).await;
            return None;
        }
    };
    if !is_loopback(peer.ip()) {
        tracing::warn!(%peer, what, "connection from a non-loopback address dropped");
        return None;
    }
    let Some(slot) = slots.admit(what) else {
        tracing::warn!(%peer, what, "every connection is in the middle of a request; closing");
        return None;
    };
    Some((stream, peer, slot))
}

/// The open connections of one operator-facing endpoint. The endpoint is the venue's emergency
/// brake (`baton ctl rollback`), so a full table must never keep a command out: when every slot
/// is taken, the oldest connection that is not in the middle of a request is told to close and
/// the newcomer takes its place. Only a table full of requests being answered refuses, and those
/// end within the reply bound. Idle connections are also closed by the endpoints' own timeouts;
/// eviction is what makes room at once.
#[derive(Debug)]
pub(crate) struct Slots {
    /// Connections open at once before the oldest idle one is evicted.
    max: usize,
    /// Open connections by admission order (oldest first).
    open: std::sync::Mutex<SlotTable>,
}

/// [`Slots`]' mutable part.
#[derive(Debug, Default)]
struct SlotTable {
    /// The id the next admitted connection gets; ids only rise, so the smallest is the oldest.
    id_next: u64,
    /// Each open connection: whether it is in the middle of a request (never evicted then), and
    /// how to tell it to close.
    entries: std::collections::BTreeMap<u64, SlotEntry>,
}

/// One open connection in [`SlotTable`].
#[derive(Debug)]
struct SlotEntry {
    /// True from a complete request until its answer is written: evicting then would lose a
    /// command the gateway may already be carrying out.
    busy: bool,
    /// Notified when the connection is evicted; a stored permit means a connection that is not
    /// waiting yet still sees it.
    evict: Arc<tokio::sync::Notify>,
}

impl Slots {
    /// A table of `max` connections.
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        assert!(max > 0, "an endpoint needs at least one connection slot");
        Arc::new(Slots {
            max,
            open: std::sync::Mutex::new(SlotTable::default()),
        })
    }

    /// A slot for a new connection, evicting the oldest idle one when the table is full; `None`
    /// only when every connection is in the middle of a request.
    pub(crate) fn admit(self: &Arc<Self>, what: &str) -> Option<Slot> {
        let mut table = self.lock();
        if table.entries.len() >= self.max {
            let oldest_idle = table
                .entries
                .iter()
                .find(|(_, entry)| !entry.busy)
                .map(|(&id, _)| id)?;
            if let Some(evicted) = table.entries.remove(&oldest_idle) {
                evicted.evict.notify_one();
                tracing::info!(
                    what,
                    max = self.max,
                    "connection limit reached; closing the oldest idle connection"
                );
            }
        }
        let id = table.id_next;
        table.id_next += 1;
        let evict = Arc::new(tokio::sync::Notify::new());
        table.entries.insert(
            id,
            SlotEntry {
                busy: false,
                evict: evict.clone(),
            },
        );
        Some(Slot {
            id,
            slots: self.clone(),
            evict,
        })
    }

    /// Connections holding a slot now, for tests.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().entries.len()
    }

    /// The table; a panic while it was held cannot leave it inconsistent (every change is one
    /// map operation), so a poisoned lock is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A connection's place in [`Slots`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Its key in the table.
    id: u64,
    /// The table it belongs to.
    slots: Arc<Slots>,
    /// Notified when the table evicts this connection.
    evict: Arc<tokio::sync::Notify>,
}

impl Slot {
    /// Marks the connection as in the middle of a request (`true`, not evictable) or waiting for
    /// one (`false`). An evicted connection is no longer in the table and stays out.
    pub(crate) fn set_busy(&self, busy: bool) {
        if let Some(entry) = self.slots.lock().entries.get_mut(&self.id) {
            entry.busy = busy;
        }
    }

    /// Resolves once the table has evicted this connection to make room for a newer one.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().entries.remove(&self.id);
    }
}

/// Loopback in either address family, including an IPv4 loopback written as an IPv4-mapped IPv6
/// address (`::ffff:127.0.0.1`), which `Ipv6Addr::is_loopback` alone would reject. Shared with
/// the metrics endpoint, so both local-only listeners agree on what "local" means.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

impl ControlEndpoint {
    /// The bound address, so a gateway started on port 0 (as tests do) can say where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the bound on waiting for the sequencer's answer
    /// ([`constants::CONTROL_REPLY_TIMEOUT_MS`] by default), so tests can exercise the refusal
    /// without waiting half a minute.
    pub fn with_reply_timeout(mut self, reply_timeout: Duration) -> ControlEndpoint {
        self.reply_timeout = reply_timeout;
        self
    }

    /// Serves control connections until `shutdown` turns true (or its sender is dropped, which
    /// can only mean the gateway is going away). Each connection is its own task, so an operator
    /// waiting on a switch does not block another asking for status; commands reach the sequencer
    /// through `commands`, whose bound applies backpressure rather than queueing without limit.
    /// Connections still open at shutdown are closed; a command already handed to the sequencer
    /// is still carried out, only its reply is lost.
    pub async fn run(
        self,
        commands: mpsc::Sender<ControlCommand>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tracing::info!(addr = %self.local_addr, "control endpoint listening");
        let slots = Slots::new(constants::CONTROL_CONNECTIONS_MAX);
        let mut tasks = JoinSet::new();
        // Connections watch their own copy: the accept loop's is borrowed by its select.
        let connection_shutdown = shutdown.clone();
        loop {
            tokio::select! {
                accepted = accept_local(&self.listener, &slots, "control") => {
                    let Some((stream, peer, slot)) = accepted else {
                        continue;
                    };
                    let peer_uid = super::peer::tcp_peer_uid(peer, self.local_addr);
                    let connection = Connection {
                        peer,
                        peer_uid,
                        commands: commands.clone(),
                        shutdown: connection_shutdown.clone(),
                        reply_timeout: self.reply_timeout,
                        idle_timeout: self.idle_timeout,
                        first_request_timeout: self.first_request_timeout,
                        slot,
                    };
                    tasks.spawn(connection.serve(stream));
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = stopped(&mut shutdown) => break,
            }
        }
        tracing::info!(connections = tasks.len(), "control endpoint shutting down");
        tasks.shutdown().await;
    }
}

/// One control connection.
struct Connection {
    /// Who connected, for logs.
    peer: SocketAddr,
    /// The account that owns the peer's socket, if the kernel lists it.
    peer_uid: Option<u32>,
    /// Where commands go.
    commands: mpsc::Sender<ControlCommand>,
    /// Turns true when the gateway is shutting down.
    shutdown: watch::Receiver<bool>,
    /// Bound on waiting for the sequencer's answer.
    reply_timeout: Duration,
    /// Bound on waiting for the next request and on writing a reply.
    idle_timeout: Duration,
    /// Bound on waiting for the first request: a connection that says nothing is dropped well
    /// before a connection between requests would be.
    first_request_timeout: Duration,
    /// Its place among the open connections; evicted when idle and a newer connection needs it.
    slot: Slot,
}

/// How reading one request line ended.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A line (without its terminator) is in the buffer; a last line without a newline before
    /// the peer closed counts too, so `printf '{"command":"status"}' | nc` works.
    Line,
    /// The line exceeded the bound; it was skipped to its end so the next request can be read.
    TooLong,
    /// The peer closed the connection between lines.
    Closed,
}

impl Connection {
    /// Reads requests and writes replies until the peer closes, idles too long, breaks the
    /// connection or the gateway shuts down.
    async fn serve(mut self, mut stream: TcpStream) {
        let peer = self.peer;
        tracing::debug!(%peer, "control connection");
        let (read_half, mut write_half) = stream.split();
        let mut reader = BufReader::new(read_half);
        let mut line = Vec::new();
        let mut wait = self.first_request_timeout;
        loop {
            self.slot.set_busy(false);
            let read = tokio::select! {
                read = tokio::time::timeout(
                    wait,
                    read_line_bounded(&mut reader, &mut line, constants::CONTROL_REQUEST_LINE_BYTES_MAX),
                ) => read,
                () = stopped(&mut self.shutdown) => return,
                () = self.slot.evicted() => {
                    tracing::debug!(%peer, "idle control connection evicted for a newer one");
                    return;
                }
            };
            // From here to the written reply the connection is not evicted: it holds a request.
            self.slot.set_busy(true);
            wait = self.idle_timeout;
            let reply = match read {
                Err(_) => {
                    tracing::debug!(%peer, "control connection idle; closing");
                    return;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "control connection read failed");
                    return;
                }
                Ok(Ok(LineRead::Closed)) => return,
                Ok(Ok(LineRead::TooLong)) => {
                    tracing::warn!(%peer, "control request line too long; refused");
                    refused(format!(
                        "request line longer than {} bytes",
                        constants::CONTROL_REQUEST_LINE_BYTES_MAX
                    ))
                }
                Ok(Ok(LineRead::Line)) => {
                    let text = line.trim_ascii();
                    if text.is_empty() {
                        // A blank line from a hand-typed session is not a request.
                        continue;
                    }
                    match serde_json::from_slice::<ControlRequest>(text) {
                        Ok(request) => self.execute(request).await,
                        Err(error) => {
                            tracing::warn!(%peer, %error, "malformed control request; refused");
                            refused(format!(
                                "malformed request ({error}); expected one JSON object per line such as {{\"command\":\"status\"}}, {{\"command\":\"switch\"}} or {{\"command\":\"rollback\"}}"
                            ))
                        }
                    }
                }
            };
            let mut bytes = encode_reply(&reply);
            bytes.push(b'\n');
            match tokio::time::timeout(self.idle_timeout, write_half.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "control reply could not be written");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "control client does not read its reply; closing");
                    return;
                }
            }
        }
    }

    /// Hands `request` to the sequencer and waits for its answer. Every way of not getting one
    /// becomes a refusal the operator can act on; the reply timeout covers queueing behind other
    /// commands too, so a wedged sequencer cannot hold the client forever.
    async fn execute(&self, request: ControlRequest) -> ControlReply {
        let peer = self.peer;
        tracing::info!(%peer, ?request, "control command");
        let (reply_tx, reply_rx) = oneshot::channel();
        let command = ControlCommand {
            request: request.clone(),
            reply: reply_tx,
            expect_sha256: None,
            canary_only: false,
            peer_uid: self.peer_uid,
        };
        let exchange = async {
            if self.commands.send(command).await.is_err() {
                return refused("the gateway's sequencer is not running".to_owned());
            }
            match reply_rx.await {
                Ok(reply) => reply,
                Err(_) => refused(
                    "the gateway's sequencer stopped before answering; run status to see whether the command took effect"
                        .to_owned(),
                ),
            }
        };
        let reply = match tokio::time::timeout(self.reply_timeout, exchange).await {
            Ok(reply) => reply,
            Err(_) => {
                tracing::warn!(%peer, ?request, timeout_ms = self.reply_timeout.as_millis(), "control command not answered in time");
                refused(format!(
                    "no answer from the gateway's sequencer within {} ms; the command may still take effect, run status to see",
                    self.reply_timeout.as_millis()
                ))
            }
        };
        match &reply {
            ControlReply::Refused { reason } => {
                tracing::info!(%peer, ?request, %reason, "control command refused");
            }
            ControlReply::Switched(report) => {
                tracing::info!(%peer, ?request, from = %report.from, to = %report.to, barrier_seq = report.barrier_seq, pause_us = report.pause_us, "control command switched authority");
            }
            ControlReply::GatewayHandingOver {
                change,
                barrier_unix_ns,
                ..
            } => {
                tracing::info!(%peer, %change, barrier_unix_ns, "control command: the gateway hands over to its upgrade");
            }
            ControlReply::Status(_)
            | ControlReply::Resumed { .. }
            | ControlReply::Staged { .. }
            | ControlReply::Change(_)
            | ControlReply::Changes { .. }
            | ControlReply::Report(_) => {}
        }
        reply
    }
}

/// Resolves once the gateway is shutting down: `shutdown` turned true, or its sender is gone,
/// which only happens when the gateway is going away. The borrow of the value is released before
/// returning, so the future stays `Send` and can sit in a spawned task's `select!`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A refusal with `reason`.
fn refused(reason: String) -> ControlReply {
    ControlReply::Refused { reason }
}

/// The reply as one line of JSON (without the newline). serde_json cannot fail on these types
/// (string keys, no non-finite floats); should that ever change, the client still gets a refusal
/// instead of silence, and the log says why.
fn encode_reply(reply: &ControlReply) -> Vec<u8> {
    match serde_json::to_vec(reply) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, "control reply could not be encoded");
            br#"{"result":"refused","reason":"the gateway could not encode its reply; see its log"}"#
                .to_vec()
        }
    }
}

/// Reads one `\n`-terminated line into `line` (cleared first, terminator dropped), holding at most
/// `max_bytes` of it: a longer line is consumed to its end without being kept, so one oversized
/// request costs a refusal, not memory, and the connection stays usable.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max_bytes: usize,
) -> std::io::Result<LineRead> {
    line.clear();
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(if too_long {
                LineRead::TooLong
            } else if line.is_empty() {
                LineRead::Closed
            } else {
                LineRead::Line
            });
        }
        let (chunk, ended) = match buffer.iter().position(|&byte| byte == b'\n') {
            Some(end) => (&buffer[..end], true),
            None => (buffer, false),
        };
        if !too_long {
            if line.len() + chunk.len() > max_bytes {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = chunk.len() + usize::from(ended);
        reader.consume(consumed);
        if ended {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_every_spelling_is_accepted_and_nothing_else() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().expect("test address");
            assert!(is_loopback(ip), "{ip} is loopback");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "10.0.0.1",
            "192.168.1.5",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            let ip: IpAddr = ip.parse().expect("test address");
            assert!(!is_loopback(ip), "{ip} is not loopback");
        }
    }

    async fn lines(input: &[u8], max_bytes: usize) -> Vec<(LineRead, Vec<u8>)> {
        // A tiny buffer makes lines span several fill_buf calls.
        let mut reader = BufReader::with_capacity(3, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            let read = read_line_bounded(&mut reader, &mut line, max_bytes)
                .await
                .expect("in-memory read");
            if read == LineRead::Closed {
                return out;
            }
            out.push((read, line.clone()));
        }
    }

    #[tokio::test]
    async fn lines_are_split_bounded_and_resynchronized() {
        let got = lines(b"abc\n0123456789\nxy\n\nlast", 5).await;
        assert_eq!(
            got,
            vec![
                (LineRead::Line, b"abc".to_vec()),
                (LineRead::TooLong, Vec::new()),
                (LineRead::Line, b"xy".to_vec()),
                (LineRead::Line, Vec::new()),
                (LineRead::Line, b"last".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_bound_is_kept_and_an_unterminated_long_tail_is_too_long() {
        let got = lines(b"12345\n123456", 5).await;
        assert_eq!(
            got,
            vec![
                (LineRead::Line, b"12345".to_vec()),
                (LineRead::TooLong, Vec::new()),
            ]
        );
    }

    #[test]
    fn a_full_table_evicts_its_oldest_idle_connection_and_never_a_busy_one() {
        let slots = Slots::new(2);
        let first = slots.admit("test").expect("room");
        let second = slots.admit("test").expect("room");
        first.set_busy(true);
        let third = slots.admit("test").expect("the idle one makes room");
        assert_eq!(slots.open(), 2);
        // The evicted connection's notification is waiting for it.
        let evicted = std::pin::pin!(second.evicted());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(evicted.poll(&mut context).is_ready());
        third.set_busy(true);
        assert!(slots.admit("test").is_none(), "every connection is busy");
        drop(first);
        assert!(
            slots.admit("test").is_some(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn encoded_replies_are_single_lines() {
        let reply = refused("line one\nline two".to_owned());
        let bytes = encode_reply(&reply);
        assert!(!bytes.contains(&b'\n'));
        let back: ControlReply = serde_json::from_slice(&bytes).expect("round trip");
        assert_eq!(back, reply);
    }
}
