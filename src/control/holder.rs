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

use crate::handover::{self, HandoverError, Label, ToGateway, ToHolder};

/// One connection held.
struct HeldConnection {
    /// The duplicate descriptor.
    fd: OwnedFd,
    /// The session it logged on as; `None` until then.
    label: Option<Label>,
}

/// Everything held for the gateway.
#[derive(Default)]
struct Held {
    /// The FIX listening socket, once the gateway handed it over.
    listener: Option<OwnedFd>,
    /// Accepted connections by the gateway's id.
    connections: BTreeMap<u64, HeldConnection>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.listener.is_none() && self.connections.is_empty()
    }

    /// Applies one message of the gateway's.
    fn apply(&mut self, message: ToHolder, fd: Option<OwnedFd>, channel: &OwnedFd) {
        match (message, fd) {
            (ToHolder::Listener, Some(fd)) => self.listener = Some(fd),
            (ToHolder::Connection { id }, Some(fd)) => {
                self.connections
                    .insert(id, HeldConnection { fd, label: None });
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
    }

    /// Sends a duplicate of everything held (the holder keeps its own), then the end mark.
    fn give_back(&self, channel: &OwnedFd) -> Result<(), HandoverError> {
        if let Some(listener) = &self.listener {
            handover::send(
                channel.as_fd(),
                &ToGateway::Listener,
                Some(listener.as_fd()),
            )?;
        }
        for (id, held) in &self.connections {
            let message = ToGateway::Connection {
                id: *id,
                label: held.label.clone(),
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

/// Hands the holder each new gateway's channel.
#[derive(Clone)]
pub struct HolderHandle {
    /// Holder ends of new channels.
    channels: mpsc::UnboundedSender<OwnedFd>,
}

impl HolderHandle {
    /// Makes the channel for a gateway about to start and returns the end it inherits.
    pub fn channel_for_gateway(&self) -> std::io::Result<OwnedFd> {
        let (ours, theirs) = handover::seqpacket_pair()?;
        self.channels
            .send(ours)
            .map_err(|_| std::io::Error::other("the socket holder has stopped"))?;
        Ok(theirs)
    }
}

/// Starts the holder as a task; it runs until every handle is dropped, and closes what it holds
/// then. `hold_max`: how long to keep the sockets once the gateway died.
pub fn start(hold_max: Duration) -> HolderHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(rx, hold_max));
    HolderHandle { channels: tx }
}

async fn run(mut channels: mpsc::UnboundedReceiver<OwnedFd>, hold_max: Duration) {
    let mut held = Held::default();
    let mut gateway: Option<AsyncFd<OwnedFd>> = None;
    // Set while no gateway is connected and something is held.
    let mut release_at: Option<tokio::time::Instant> = None;
    loop {
        let readable = async {
            match &gateway {
                Some(fd) => fd.readable().await.map(|mut guard| guard.clear_ready()),
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
            channel = channels.recv() => match channel.map(handover::watch) {
                Some(Ok(channel)) => {
                    gateway = Some(channel);
                    release_at = None;
                }
                Some(Err(error)) => tracing::error!(%error, "cannot watch the gateway's hand-over channel"),
                None => break,
            },
            _ = readable => {}
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
        // Whatever is waiting on the channel, without blocking.
        while let Some(channel) = &gateway {
            match handover::recv::<ToHolder>(channel.get_ref().as_fd(), false) {
                Ok((message, fd)) => held.apply(message, fd, channel.get_ref()),
                Err(HandoverError::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    break;
                }
                Err(error) => {
                    if !matches!(error, HandoverError::Closed) {
                        tracing::warn!(%error, "hand-over channel failed");
                    }
                    gateway = None;
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
