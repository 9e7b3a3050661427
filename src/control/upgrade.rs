//! A planned upgrade of the gateway process (`baton ctl upgrade-gateway`), on the running
//! gateway's side.
//!
//! The control plane decides (policy, approval, window, audit) and hands the change's build to
//! the [`Upgrader`], which:
//! 1. asks the supervisor behind `baton up`, through the socket holder, to start the build as
//!    the successor (through `baton launch`, which checks its hash); the successor asks the
//!    holder for the sockets and waits: this gateway serves on meanwhile;
//! 2. once the successor asked, stops at a barrier: nothing is read or accepted any more (what
//!    counterparties send waits in the kernel), and waits until everything in flight settled:
//!    every request journaled and its outputs delivered, no FIX resend or gap under way in any
//!    session;
//! 3. reports the barrier to the control plane, which writes it to the audit log, and only then
//!    hands over: each connection writes what it holds, gives its session's unstored state
//!    (deadlines, bytes read but not yet a whole frame) to the holder and lets go of its socket;
//! 4. exits. Its end of the holder channel closing is the holder's signal to give everything to
//!    the successor, which opens the stores this process no longer holds and carries on.
//!
//! Anything that fails before step 3 (the build does not start, the barrier does not settle in
//! [`constants::UPGRADE_DRAIN_MAX_MS`]) stops the successor and leaves this gateway serving as
//! before: it only ever stopped reading for that long.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::api::{ControlReply, ControlRequest};
use crate::constants;
use crate::fix::store::SessionStore;
use crate::gateway::acceptor::{AcceptorHandle, Inbound, Phase, Sessions};
use crate::gateway::driver::CoreCall;
use crate::handover::{HolderLink, Successor, ToGateway};
use crate::time::Timestamp;

/// The control plane's request to hand over to `successor`.
#[derive(Debug)]
pub struct UpgradeCall {
    /// The build to start, from the approved change.
    pub successor: Successor,
    /// The barrier reached, or why the upgrade did not happen (the gateway serves on).
    pub reply: oneshot::Sender<Result<Prepared, String>>,
}

/// The gateway stopped at its barrier with its successor started; nothing is handed over until
/// `go` says the barrier is in the audit log.
#[derive(Debug)]
pub struct Prepared {
    /// When input stopped being read (ns since the epoch).
    pub barrier_unix_ns: u64,
    /// `true`: hand over and exit. `false` (or dropped): serve on; the successor is stopped.
    pub go: oneshot::Sender<bool>,
}

/// Carries out planned upgrades for the control plane (see the module documentation).
pub struct Upgrader<S: SessionStore> {
    /// The supervisor's holder channel.
    holder: Arc<HolderLink>,
    /// Moves connections through the barrier.
    acceptor: AcceptorHandle,
    /// Every session, to see that they settled and that their connections let go.
    sessions: Arc<Sessions<S>>,
    /// The queue to the sequencer, to see it empty.
    business: Option<mpsc::Sender<Inbound>>,
    /// The sequencer, to see every journaled input's outputs delivered.
    core: Option<mpsc::Sender<CoreCall>>,
}

impl<S: SessionStore + Send + 'static> Upgrader<S> {
    /// An upgrader over the running gateway's parts.
    pub fn new(
        holder: Arc<HolderLink>,
        acceptor: AcceptorHandle,
        sessions: Arc<Sessions<S>>,
        business: Option<mpsc::Sender<Inbound>>,
        core: Option<mpsc::Sender<CoreCall>>,
    ) -> Upgrader<S> {
        Upgrader {
            holder,
            acceptor,
            sessions,
            business,
            core,
        }
    }

    /// Serves upgrade calls one at a time; returns only when the control plane is gone. A call
    /// that goes ahead ends the process.
    pub async fn run(self, mut calls: mpsc::Receiver<UpgradeCall>) {
        while let Some(call) = calls.recv().await {
            let change = call.successor.change.clone();
            let barrier = match self.prepare(call.successor).await {
                Ok(barrier) => barrier,
                Err(reason) => {
                    tracing::warn!(%change, %reason, "gateway upgrade called off; serving on");
                    let _ = call.reply.send(Err(reason));
                    continue;
                }
            };
            let (go_tx, go_rx) = oneshot::channel();
            let prepared = Prepared {
                barrier_unix_ns: barrier,
                go: go_tx,
            };
            let go = call.reply.send(Ok(prepared)).is_ok() && go_rx.await.unwrap_or(false);
            if !go {
                tracing::warn!(%change, "gateway upgrade not recorded; serving on");
                self.call_off();
                continue;
            }
            self.hand_over(barrier, &change).await;
        }
    }

    /// Steps 1 and 2: the successor started, and this gateway stopped at a settled barrier.
    async fn prepare(&self, successor: Successor) -> Result<u64, String> {
        if !self.holder.is_supervised() {
            return Err(
                "no supervisor holds this gateway's sockets (run it under baton up)".into(),
            );
        }
        self.holder
            .start_successor(successor)
            .map_err(|error| format!("cannot ask the supervisor to start the build: {error}"))?;
        let poll = Duration::from_millis(constants::UPGRADE_DRAIN_POLL_MS);
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(constants::UPGRADE_SUCCESSOR_WAIT_MS);
        loop {
            match self.holder.poll_answer() {
                Ok(Some(ToGateway::SuccessorReady)) => break,
                Ok(Some(ToGateway::SuccessorFailed { reason })) => return Err(reason),
                Ok(Some(other)) => tracing::debug!(?other, "holder message ignored"),
                Ok(None) => {}
                Err(error) => return Err(format!("the socket holder is gone: {error}")),
            }
            if tokio::time::Instant::now() >= deadline {
                self.holder.abandon_successor();
                return Err(format!(
                    "the new build did not ask for the sockets within {} ms",
                    constants::UPGRADE_SUCCESSOR_WAIT_MS
                ));
            }
            tokio::time::sleep(poll).await;
        }
        let barrier = Timestamp::now();
        self.acceptor.set_phase(Phase::Paused);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(constants::UPGRADE_DRAIN_MAX_MS);
        loop {
            if self.settled().await {
                tracing::info!(
                    drained_us = Timestamp::now().since(barrier).as_micros() as u64,
                    "gateway at its upgrade barrier: everything in flight settled"
                );
                return Ok(barrier.0);
            }
            if tokio::time::Instant::now() >= deadline {
                self.call_off();
                return Err(format!(
                    "what was in flight did not settle within {} ms (a resend or an engine answer outstanding)",
                    constants::UPGRADE_DRAIN_MAX_MS
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Whether nothing is in flight: every session settled (each business message it read is
    /// journaled or answered), the sequencer's queue empty, every journaled input's outputs
    /// delivered, and nothing journaled while this was checked. The order matters: a request a
    /// connection had read just before the pause may be journaled between two of these checks,
    /// and its answers would then reach a session's store after the session was handed over,
    /// unwritten: the successor's first message would show the counterparty a gap. Reading the
    /// journal's end before and after the sessions are checked catches that.
    async fn settled(&self) -> bool {
        let Some(before) = self.journal_position().await else {
            return false;
        };
        if !self.sessions.all_settled() {
            return false;
        }
        let queue_empty = self
            .business
            .as_ref()
            .is_none_or(|queue| queue.capacity() == queue.max_capacity());
        if !queue_empty {
            return false;
        }
        match self.journal_position().await {
            Some(after) => after == before && after.1 >= after.0,
            None => false,
        }
    }

    /// The journal's last input seq and how far outputs are delivered, from the core's status;
    /// `(0, 0)` without a core, `None` if it did not answer.
    async fn journal_position(&self) -> Option<(u64, u64)> {
        let Some(core) = &self.core else {
            return Some((0, 0));
        };
        match super::plane::ask(
            core,
            ControlRequest::Status,
            None,
            false,
            Default::default(),
        )
        .await
        {
            ControlReply::Status(status) => {
                Some((status.journal_last_seq, status.delivered_through))
            }
            _ => None,
        }
    }

    /// Serves on: reading again, the successor stopped.
    fn call_off(&self) {
        self.acceptor.set_phase(Phase::Serving);
        self.holder.abandon_successor();
    }

    /// Steps 3 and 4: every connection hands over, then the process exits.
    async fn hand_over(&self, barrier: u64, change: &str) {
        if let Err(error) = self.holder.handing_over(barrier, change) {
            tracing::error!(%error, "the holder did not hear of the hand-over; sessions continue as after a crash");
        }
        let sessions = self.sessions.connected();
        self.acceptor.set_phase(Phase::HandOver);
        let poll = Duration::from_millis(constants::UPGRADE_DRAIN_POLL_MS);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(constants::UPGRADE_HANDOVER_MAX_MS);
        while self.sessions.connected() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(poll).await;
        }
        tracing::info!(
            sessions,
            left = self.sessions.connected(),
            "handed over to the upgraded gateway; exiting"
        );
        // The operator's answer is on its way out of the control endpoint.
        tokio::time::sleep(Duration::from_millis(constants::UPGRADE_EXIT_GRACE_MS)).await;
        // No clean shutdown: it would log the sessions out. Stores were flushed by each
        // connection as it let go; the holder sees this exit and gives the successor the sockets.
        std::process::exit(0);
    }
}
