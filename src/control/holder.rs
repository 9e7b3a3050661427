//! The socket holder behind `baton up`: keeps a duplicate of the gateway's listening socket and
//! of every connection it accepted, so a gateway that dies (SIGKILL, panic, OOM) ends no
//! counterparty's TCP connection, and gives them to the gateway started after it.
//!
//! It does no FIX and reads nothing from the connections: it only keeps descriptors, with the
//! label the gateway gave each (see [`crate::handover`]). Each gateway the supervisor starts
//! gets a fresh channel; end of stream on it is the gateway's death. From then on the holder
//! waits at most the configured bound for the next gateway to ask for the sockets; past it, it
//! closes every one of them, so counterparties are never left on a venue that is not coming
//! back. It closes rather than writing a Logout: a Logout needs the session's next MsgSeqNum
//! and a store the holder would have to share with a dead process, and a closed connection is
//! what a counterparty already handles (it reconnects and recovers by resend).
//!
//! The holder runs inside the supervisor: if it dies, the gateway's sends fail, the gateway
//! logs it once and serves on without the protection.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::constants;
use crate::fix::session::SessionCarry;
use crate::gateway::tls_record::TlsCarry;
use crate::handover::{self, HandoverError, Label, Successor, ToGateway, ToHolder};

/// One connection held.
struct HeldConnection {
    /// The duplicate descriptor.
    fd: OwnedFd,
    /// The session it logged on as; `None` until then.
    label: Option<Label>,
    /// Its session's unstored state, from a gateway handing over at a planned upgrade; given
    /// to the successor once, then forgotten (a later restart is a crash, not a hand-over).
    carry: Option<SessionCarry>,
    /// It speaks TLS: without `tls_carry` no other gateway can go on with it.
    tls: bool,
    /// Its TLS state from a hand-over, given once like `carry`.
    tls_carry: Option<Box<TlsCarry>>,
}

/// Everything held for the gateway.
#[derive(Default)]
struct Held {
    /// The FIX listening socket, once the gateway handed it over.
    listener: Option<OwnedFd>,
    /// Accepted connections by the gateway's id.
    connections: BTreeMap<u64, HeldConnection>,
    /// The running gateway announced its hand-over: barrier time and change.
    handing_over: Option<(u64, String)>,
    /// The process handing over, to wait for before the successor opens what it held.
    handing_over_pid: Option<u32>,
    /// TLS connections the handing-over gateway could not hand over, for the upgrade's report.
    tls_closed: u64,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.listener.is_none() && self.connections.is_empty()
    }

    /// Applies one message of the gateway's; returns what the supervisor must do about a
    /// successor, if anything.
    fn apply(
        &mut self,
        message: ToHolder,
        fd: Option<OwnedFd>,
        channel: &OwnedFd,
    ) -> Option<SuccessorRequest> {
        match (message, fd) {
            (ToHolder::Listener, Some(fd)) => self.listener = Some(fd),
            (ToHolder::Connection { id, tls }, Some(fd)) => {
                self.connections.insert(
                    id,
                    HeldConnection {
                        fd,
                        label: None,
                        carry: None,
                        tls,
                        tls_carry: None,
                    },
                );
            }
            (ToHolder::StartSuccessor(successor), None) => {
                return Some(SuccessorRequest::Start(successor));
            }
            (ToHolder::AbandonSuccessor, None) => return Some(SuccessorRequest::Abandon),
            (
                ToHolder::HandingOver {
                    barrier_unix_ns,
                    change,
                    pid,
                },
                None,
            ) => {
                self.handing_over = Some((barrier_unix_ns, change));
                self.handing_over_pid = (pid != 0).then_some(pid);
            }
            (ToHolder::Carry { id, carry, tls }, None) => {
                if let Some(held) = self.connections.get_mut(&id) {
                    held.carry = Some(carry);
                    held.tls_carry = tls;
                }
            }
            (ToHolder::NotCarried { id }, None) => {
                if self.connections.remove(&id).is_some() {
                    self.tls_closed += 1;
                }
            }
            (ToHolder::Label { id, label }, None) => {
                if let Some(held) = self.connections.get_mut(&id) {
                    held.label = Some(label);
                }
            }
            (ToHolder::Release { id }, None) => {
                self.connections.remove(&id);
            }
            (ToHolder::TakeBack, None) => {
                if let Err(error) = self.give_back(channel) {
                    tracing::warn!(%error, "could not hand the held sockets back");
                }
            }
            (message, fd) => {
                tracing::warn!(
                    ?message,
                    descriptor = fd.is_some(),
                    "hand-over message ignored"
                )
            }
        }
        None
    }

    /// Sends a duplicate of everything held (the holder keeps its own), then the end mark. What
    /// a hand-over left (barrier, carries) goes once: a later restart is a crash.
    fn give_back(&mut self, channel: &OwnedFd) -> Result<(), HandoverError> {
        let closed = self.close_tls_without_keys();
        if let Some((barrier_unix_ns, change)) = self.handing_over.take() {
            let upgraded = ToGateway::Upgraded {
                barrier_unix_ns,
                change,
                tls_closed: std::mem::take(&mut self.tls_closed) + closed,
            };
            handover::send(channel.as_fd(), &upgraded, None)?;
        }
        if let Some(listener) = &self.listener {
            handover::send(
                channel.as_fd(),
                &ToGateway::Listener,
                Some(listener.as_fd()),
            )?;
        }
        for (id, held) in &mut self.connections {
            let message = ToGateway::Connection {
                id: *id,
                label: held.label.clone(),
                carry: held.carry.take(),
                tls: held.tls_carry.take(),
            };
            handover::send(channel.as_fd(), &message, Some(held.fd.as_fd()))?;
        }
        handover::send(channel.as_fd(), &ToGateway::End, None)?;
        tracing::info!(
            connections = self.connections.len(),
            listener = self.listener.is_some(),
            "held sockets handed to the new gateway"
        );
        Ok(())
    }
}

impl Held {
    /// Closes every TLS connection whose keys were not handed over: they died with the gateway
    /// that held them, so no gateway can go on with the connection, and reading it as plain TCP
    /// would be wrong. Its counterparty sees the connection end at once and reconnects (and
    /// recovers by FIX resend). Returns how many of them had logged on: one that had not is
    /// closed at an upgrade whether it speaks TLS or not, so it is no TLS loss to report.
    fn close_tls_without_keys(&mut self) -> u64 {
        let mut closed = 0;
        let mut logged_on = 0;
        self.connections.retain(|_, held| {
            let keep = !held.tls || held.tls_carry.is_some();
            if !keep {
                closed += 1;
                logged_on += u64::from(held.label.is_some());
            }
            keep
        });
        if closed > 0 {
            tracing::warn!(
                connections = closed,
                logged_on,
                "closing TLS connections whose keys died with the gateway process; their counterparties reconnect"
            );
        }
        logged_on
    }
}

/// What the running gateway asks the supervisor about a planned upgrade's successor.
#[derive(Debug)]
pub enum SuccessorRequest {
    /// Start this build as the gateway's successor, with [`HolderHandle::channel_for_successor`].
    Start(Successor),
    /// Stop the successor: the running gateway serves on.
    Abandon,
}

/// Hands the holder each new gateway's channel.
#[derive(Clone)]
pub struct HolderHandle {
    /// Holder ends of new channels, and whether each is a successor's.
    channels: mpsc::UnboundedSender<(OwnedFd, bool)>,
}

impl HolderHandle {
    /// Makes the channel for a gateway about to start and returns the end it inherits.
    pub fn channel_for_gateway(&self) -> std::io::Result<OwnedFd> {
        self.channel(false)
    }

    /// The channel for a successor started for a planned upgrade while the running gateway
    /// still serves: its request for the sockets is answered once the running one handed over.
    pub fn channel_for_successor(&self) -> std::io::Result<OwnedFd> {
        self.channel(true)
    }

    fn channel(&self, successor: bool) -> std::io::Result<OwnedFd> {
        let (ours, theirs) = handover::seqpacket_pair()?;
        self.channels
            .send((ours, successor))
            .map_err(|_| std::io::Error::other("the socket holder has stopped"))?;
        Ok(theirs)
    }
}

/// Starts the holder as a task; it runs until every handle is dropped, and closes what it holds
/// then. `hold_max`: how long to keep the sockets once the gateway died. The receiver carries
/// the running gateway's requests about a successor to the supervisor.
pub fn start(hold_max: Duration) -> (HolderHandle, mpsc::UnboundedReceiver<SuccessorRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (requests_tx, requests_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(rx, requests_tx, hold_max));
    (HolderHandle { channels: tx }, requests_rx)
}

/// A successor's channel and whether it asked for the sockets yet.
struct Pending {
    /// Its channel.
    channel: AsyncFd<OwnedFd>,
    /// It sent [`ToHolder::TakeBack`]: it started, and waits for the hand-over.
    asked: bool,
}

/// Tells the running gateway about its successor; a gateway that cannot hear it is gone, which
/// the channel's end of stream reports.
fn tell(gateway: &Option<AsyncFd<OwnedFd>>, message: &ToGateway) {
    if let Some(gateway) = gateway
        && let Err(error) = handover::send(gateway.get_ref().as_fd(), message, None)
    {
        tracing::warn!(%error, "could not tell the gateway about its successor");
    }
}

/// Waits (bounded by [`constants::UPGRADE_HANDOVER_MAX_MS`]) until process `pid` has exited
/// entirely: gone, or a zombie with no thread left. Only then has the kernel closed its files and
/// sockets; its hand-over channel closes with the first of them, and a zombie group leader can
/// still have threads that hold the store locks and addresses the successor is about to open.
async fn exited(pid: u32) {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(constants::UPGRADE_HANDOVER_MAX_MS);
    while tokio::time::Instant::now() < deadline {
        if !running(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tracing::warn!(
        pid,
        "the gateway that handed over has not exited; its successor starts anyway"
    );
}

/// Whether any thread of process `pid` is still alive (see [`exited`]).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // pid (comm) state ...: comm may hold spaces and parentheses, so after the last ')'.
    let zombie = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |dir| dir.count());
    !zombie || threads > 1
}

async fn run(
    mut channels: mpsc::UnboundedReceiver<(OwnedFd, bool)>,
    requests: mpsc::UnboundedSender<SuccessorRequest>,
    hold_max: Duration,
) {
    let mut held = Held::default();
    let mut gateway: Option<AsyncFd<OwnedFd>> = None;
    // A planned upgrade's successor, from its start until it takes the sockets.
    let mut successor: Option<Pending> = None;
    // Set while no gateway is connected and something is held.
    let mut release_at: Option<tokio::time::Instant> = None;
    loop {
        let readable = async {
            match &gateway {
                Some(fd) => fd.readable().await.map(|mut guard| guard.clear_ready()),
                None => std::future::pending().await,
            }
        };
        let successor_readable = async {
            match &successor {
                Some(pending) => pending
                    .channel
                    .readable()
                    .await
                    .map(|mut guard| guard.clear_ready()),
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match release_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            channel = channels.recv() => match channel.map(|(fd, is_successor)| (handover::watch(fd), is_successor)) {
                Some((Ok(channel), false)) => {
                    gateway = Some(channel);
                    release_at = None;
                }
                Some((Ok(channel), true)) => successor = Some(Pending { channel, asked: false }),
                Some((Err(error), _)) => tracing::error!(%error, "cannot watch the gateway's hand-over channel"),
                None => break,
            },
            _ = readable => {}
            _ = successor_readable => {}
            _ = deadline => {
                tracing::warn!(
                    connections = held.connections.len(),
                    bound_ms = hold_max.as_millis() as u64,
                    "the gateway did not come back in time: releasing its sockets"
                );
                held = Held::default();
                release_at = None;
            }
        }
        // The successor's messages: before it takes over, only its request for the sockets.
        while let Some(pending) = &mut successor {
            match handover::recv::<ToHolder>(pending.channel.get_ref().as_fd(), false) {
                Ok((ToHolder::TakeBack, None)) => {
                    pending.asked = true;
                    tell(&gateway, &ToGateway::SuccessorReady);
                }
                Ok((message, _)) => {
                    tracing::warn!(
                        ?message,
                        "message from a successor that has not taken over; ignored"
                    )
                }
                Err(HandoverError::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "the new gateway build exited before taking over");
                    successor = None;
                    tell(
                        &gateway,
                        &ToGateway::SuccessorFailed {
                            reason: format!("the new build exited before taking over ({error})"),
                        },
                    );
                }
            }
        }
        // With no gateway running, a successor that asked takes everything: after the running
        // one handed over and exited, or died while it did (then it is a crash restart).
        if gateway.is_none()
            && successor.as_ref().is_some_and(|pending| pending.asked)
            && let Some(pending) = successor.take()
        {
            if let Some(pid) = held.handing_over_pid.take() {
                exited(pid).await;
            }
            if let Err(error) = held.give_back(pending.channel.get_ref()) {
                tracing::warn!(%error, "could not hand the held sockets to the new build");
            }
            gateway = Some(pending.channel);
            release_at = None;
        }
        // Whatever is waiting on the channel, without blocking.
        while let Some(channel) = &gateway {
            match handover::recv::<ToHolder>(channel.get_ref().as_fd(), false) {
                Ok((message, fd)) => {
                    // A second upgrade while one is under way is refused at once.
                    let request = held.apply(message, fd, channel.get_ref());
                    match request {
                        Some(SuccessorRequest::Start(_)) if successor.is_some() => tell(
                            &gateway,
                            &ToGateway::SuccessorFailed {
                                reason: "an upgrade is already under way".into(),
                            },
                        ),
                        Some(SuccessorRequest::Abandon) => {
                            successor = None;
                            let _ = requests.send(SuccessorRequest::Abandon);
                        }
                        Some(request) => {
                            let unheard = requests.send(request).is_err();
                            if unheard {
                                tell(
                                    &gateway,
                                    &ToGateway::SuccessorFailed {
                                        reason: "no supervisor to start the new build".into(),
                                    },
                                );
                            }
                        }
                        None => {}
                    }
                }
                Err(HandoverError::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    break;
                }
                Err(error) => {
                    if !matches!(error, HandoverError::Closed) {
                        tracing::warn!(%error, "hand-over channel failed");
                    }
                    gateway = None;
                    if let Some(pending) = successor.as_ref().filter(|p| p.asked) {
                        // Handed over (or died handing over): the successor takes everything.
                        if held.handing_over.is_some() {
                            tracing::info!(
                                connections = held.connections.len(),
                                "gateway handed over; its successor takes the sockets"
                            );
                        }
                        if let Some(pid) = held.handing_over_pid.take() {
                            exited(pid).await;
                        }
                        if let Err(error) = held.give_back(pending.channel.get_ref()) {
                            tracing::warn!(%error, "could not hand the held sockets to the new build");
                        }
                        gateway = successor.take().map(|pending| pending.channel);
                        continue;
                    }
                    if held.handing_over.is_none() {
                        held.close_tls_without_keys();
                    }
                    if !held.is_empty() {
                        tracing::warn!(
                            connections = held.connections.len(),
                            "gateway gone: holding its sockets for the next one"
                        );
                        release_at = Some(tokio::time::Instant::now() + hold_max);
                    }
                }
            }
        }
    }
    tracing::debug!(
        connections = held.connections.len(),
        "socket holder stopped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::{recv, send};

    /// Receives one message on a blocking thread, so the holder task runs meanwhile.
    async fn next(channel: &OwnedFd) -> (ToGateway, Option<OwnedFd>) {
        let fd = channel.try_clone().unwrap();
        tokio::task::spawn_blocking(move || recv::<ToGateway>(fd.as_fd(), true).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_successor_gets_the_sockets_and_carries_only_once_the_gateway_handed_over_and_left() {
        let (holder, mut requests) = start(Duration::from_secs(60));
        let gateway = holder.channel_for_gateway().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        send(gateway.as_fd(), &ToHolder::Listener, Some(listener.as_fd())).unwrap();
        send(
            gateway.as_fd(),
            &ToHolder::Connection { id: 4, tls: false },
            Some(accepted.as_fd()),
        )
        .unwrap();
        let successor = Successor {
            artifact_path: "/opt/baton-next/baton".into(),
            artifact_sha256: "ab".repeat(32),
            change: "CHG-2".into(),
        };
        send(
            gateway.as_fd(),
            &ToHolder::StartSuccessor(successor.clone()),
            None,
        )
        .unwrap();
        // The supervisor is asked to start it.
        match requests.recv().await {
            Some(SuccessorRequest::Start(asked)) => assert_eq!(asked, successor),
            other => panic!("{other:?}"),
        }
        // The successor asks for the sockets: the running gateway hears it is ready; the
        // successor gets nothing yet.
        let next_gateway = holder.channel_for_successor().unwrap();
        send(next_gateway.as_fd(), &ToHolder::TakeBack, None).unwrap();
        assert_eq!(next(&gateway).await.0, ToGateway::SuccessorReady);
        let early = recv::<ToGateway>(next_gateway.as_fd(), false);
        assert!(
            matches!(&early, Err(HandoverError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{early:?}"
        );
        let carry = SessionCarry {
            heartbeat_interval_ms: 30_000,
            timers: vec![None, None, None, None, Some(7), Some(9)],
            test_request_id: 0,
            unread_hex: "383d".into(),
            seq_num_out_written: Some(11),
        };
        let handing_over = ToHolder::HandingOver {
            barrier_unix_ns: 42,
            change: "CHG-2".into(),
            pid: 0,
        };
        send(gateway.as_fd(), &handing_over, None).unwrap();
        send(
            gateway.as_fd(),
            &ToHolder::Carry {
                id: 4,
                carry: carry.clone(),
                tls: None,
            },
            None,
        )
        .unwrap();
        // Its exit completes the hand-over.
        drop(gateway);
        let upgraded = ToGateway::Upgraded {
            barrier_unix_ns: 42,
            change: "CHG-2".into(),
            tls_closed: 0,
        };
        assert_eq!(next(&next_gateway).await.0, upgraded);
        let (message, fd) = next(&next_gateway).await;
        assert_eq!((message, fd.is_some()), (ToGateway::Listener, true));
        let (message, fd) = next(&next_gateway).await;
        let connection = ToGateway::Connection {
            id: 4,
            label: None,
            carry: Some(carry),
            tls: None,
        };
        assert_eq!((message, fd.is_some()), (connection, true));
        assert_eq!(next(&next_gateway).await.0, ToGateway::End);
        // The carry went once: the same gateway asking again (a restart) gets none.
        send(next_gateway.as_fd(), &ToHolder::TakeBack, None).unwrap();
        assert_eq!(next(&next_gateway).await.0, ToGateway::Listener);
        let (message, _) = next(&next_gateway).await;
        assert!(
            matches!(message, ToGateway::Connection { carry: None, .. }),
            "{message:?}"
        );
    }

    #[tokio::test]
    async fn a_tls_connection_is_closed_when_its_gateway_dies_and_never_handed_back() {
        let (holder, _requests) = start(Duration::from_secs(60));
        let gateway = holder.channel_for_gateway().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut clients = Vec::new();
        for (id, tls) in [(1, true), (2, false)] {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            send(
                gateway.as_fd(),
                &ToHolder::Connection { id, tls },
                Some(accepted.as_fd()),
            )
            .unwrap();
            clients.push(client);
        }
        // The gateway dies (no hand-over): the TLS connection's keys are gone with it.
        drop(gateway);
        let mut tls_client = clients.remove(0);
        let closed = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            tls_client
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut byte = [0u8; 1];
            match tls_client.read(&mut byte) {
                Ok(n) => n == 0,
                // Still open when the bound passed.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    false
                }
                // Reset: closed too.
                Err(_) => true,
            }
        })
        .await
        .unwrap();
        assert!(closed, "the TLS connection is closed at once");
        let next_gateway = holder.channel_for_gateway().unwrap();
        send(next_gateway.as_fd(), &ToHolder::TakeBack, None).unwrap();
        let (message, fd) = next(&next_gateway).await;
        assert!(
            matches!(
                message,
                ToGateway::Connection {
                    id: 2,
                    tls: None,
                    ..
                }
            ) && fd.is_some(),
            "only the plain connection comes back: {message:?}"
        );
        assert_eq!(next(&next_gateway).await.0, ToGateway::End);
    }

    #[tokio::test]
    async fn a_successor_that_exits_before_taking_over_is_reported_to_the_running_gateway() {
        let (holder, _requests) = start(Duration::from_secs(60));
        let gateway = holder.channel_for_gateway().unwrap();
        let next_gateway = holder.channel_for_successor().unwrap();
        drop(next_gateway);
        let (message, _) = next(&gateway).await;
        assert!(
            matches!(&message, ToGateway::SuccessorFailed { reason } if reason.contains("exited before taking over")),
            "{message:?}"
        );
    }
}
