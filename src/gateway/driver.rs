//! The core's driver: the only async code around the sans-IO [`Core`].
//!
//! It owns what the core must not touch: the engine links (read and written from the driver's
//! own task, so an engine's answer wakes the task that hands it to the core, with no hop
//! between tasks on the way), connection attempts (each in its own task, so an unreachable engine never delays
//! sequencing), the queues from the sessions and the control plane, and the one timer. It reads
//! the wall clock for every call it makes into the core (the core never does), hands it what
//! arrived, then carries out what the core asks: link writes (input writes bounded by
//! [`constants::ENGINE_WRITE_TIMEOUT_MS`], a failure reported back as a lost link), events for
//! the audit log, answers to commands, and deliveries: it writes each into its sessions and
//! hands it back so the core moves the outbox cursor. Every decision is the core's.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::acceptor::Inbound;
use super::core::{CommandId, Core, CoreCommand, CoreEvent, CoreReply, LinkCommand, LinkTransmit};
use super::input_journal::InputJournal;
use crate::constants;
use crate::engine::Input;
use crate::fix::store::SessionStore;
use crate::link::{self, Frame, LinkError, LinkReader, LinkWriter};
use crate::time::Timestamp;

/// A command for the core with the channel its answer goes back on. The core answers every
/// command it takes exactly once; a dropped `reply` reads as a refusal.
#[derive(Debug)]
pub struct CoreCall {
    /// What to do.
    pub command: CoreCommand,
    /// Where the answer goes; the control plane waits on the other end (or gave up, in which
    /// case a switch that completed is reported as an event instead).
    pub reply: oneshot::Sender<CoreReply>,
}

/// A frame from the engine connection of a slot.
type SlotFrame = (usize, Result<Frame, LinkError>);

/// The outcome of a connection attempt to a slot.
type Attempt = (usize, Result<(link::EngineLink, link::Hello), LinkError>);

/// A live engine connection as the driver holds it.
struct DriverLink {
    /// Inputs and requests go out here (its reader is in [`Readers`], so a write can wait while
    /// every link is still read).
    writer: LinkWriter,
    /// The engine's process id, when it is on this host behind a Unix socket.
    pid: Option<u32>,
    /// The scheduling class last asked for it: `Some(true)` batch (a standby), `Some(false)`
    /// normal, `None` not yet.
    batch: Option<bool>,
}

/// Runs `core` until shutdown: requests from the sessions on `inbound`, commands from the control
/// plane on `control`, events for the audit log out on `events`.
///
/// `spin` (`[gateway] spin_us`) keeps the runtime polling its sockets without sleeping for that
/// long after each request or engine frame: the driver yields in a loop, so its thread checks
/// for I/O with a zero timeout instead of parking, and an engine's answer or the next order is
/// picked up without a wake-up. Measured with `[gateway] runtime_threads = 1`, where the driver
/// shares that thread with the connections and links. Zero (the default): never spins.
///
/// `standby_batch` (`[gateway] standby_sched_batch`) keeps every engine on this host that owns
/// no inputs in `SCHED_BATCH`, so its wake-ups never preempt the order path (see
/// [`super::placement`]).
pub async fn run<S, J>(
    mut core: Core<S, J>,
    events: mpsc::Sender<CoreEvent>,
    mut inbound: mpsc::Receiver<Inbound>,
    mut control: mpsc::Receiver<CoreCall>,
    mut shutdown: watch::Receiver<bool>,
    spin: Duration,
    standby_batch: bool,
) where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    let engines = core.engine_count();
    let (attempts_tx, mut attempts_rx) = mpsc::channel::<Attempt>(engines.max(1));
    let mut driver = Driver {
        links: (0..engines).map(|_| None).collect(),
        readers: Readers::new(engines),
        attempts_tx,
        replies: BTreeMap::new(),
        next_command: 0,
        events,
        written: None,
        outputs_pool: core.outputs_pool(),
        standby_batch,
    };
    let mut batch: Vec<Inbound> = Vec::with_capacity(constants::SEQUENCER_BATCH_MAX);
    // Until when the driver spins (see `spin`); the epoch when it is not spinning.
    let mut spin_until = Timestamp(0);
    loop {
        // One clock read per turn: the catch-up, the spin and the timer all take this one (a
        // timer computed from it fires at most the carrying out's few µs late).
        let now = Timestamp::now();
        core.handle_catch_up(now);
        driver.carry_out(&mut core).await;
        driver.place_engines(&core);
        let accepting = core.accepting();
        let lagging = core.lagging();
        let spinning = now < spin_until;
        let sleep_for = core.next_timeout().since(now);
        tokio::select! {
            received = inbound.recv_many(&mut batch, constants::SEQUENCER_BATCH_MAX), if accepting => {
                if received == 0 {
                    // Every session sender is gone: the gateway is stopping.
                    core.handle_shutdown(Timestamp::now());
                    driver.carry_out(&mut core).await;
                    return;
                }
                let now = Timestamp::now();
                core.handle_requests(now, &mut batch);
                spin_until = now.plus(spin);
            }
            (slot, frame) = std::future::poll_fn(|cx| driver.readers.poll_frame(cx)) => {
                let now = Timestamp::now();
                spin_until = now.plus(spin);
                match frame {
                    Ok(frame) => core.handle_frame(now, slot, frame),
                    Err(error) => {
                        driver.forget(slot);
                        core.handle_lost(now, slot, &error.to_string());
                    }
                }
            }
            Some(call) = control.recv() => {
                let id = driver.remember(call.reply);
                core.handle_command(Timestamp::now(), id, call.command);
            }
            Some((slot, attempt)) = attempts_rx.recv() => match attempt {
                Ok((link, hello)) => {
                    if core.handle_attached(Timestamp::now(), slot, &hello) {
                        driver.adopt(slot, link);
                    }
                }
                Err(error) => core.handle_connect_failed(Timestamp::now(), slot, &error.to_string()),
            },
            _ = tokio::time::sleep(sleep_for) => core.handle_timeout(Timestamp::now()),
            _ = tokio::task::yield_now(), if lagging || spinning => {}
            _ = shutdown.changed() => {
                // Requests already taken from sessions (their MsgSeqNums consumed) are
                // sequenced, not dropped; their answers reach the sessions by resend after a
                // restart if the engines answer too late.
                inbound.close();
                while let Ok(request) = inbound.try_recv() {
                    batch.push(request);
                }
                if !batch.is_empty() {
                    core.handle_requests(Timestamp::now(), &mut batch);
                }
                core.handle_shutdown(Timestamp::now());
                driver.carry_out(&mut core).await;
                return;
            }
        }
    }
}

/// What the driver keeps beside the core.
struct Driver {
    /// By slot: the live connection's writer and what the driver knows of its engine.
    links: Vec<Option<DriverLink>>,
    /// By slot: the live connection's reader, and the frames read while a write waited.
    readers: Readers,
    /// Where connection attempts report.
    attempts_tx: mpsc::Sender<Attempt>,
    /// Commands the core has not answered yet.
    replies: BTreeMap<CommandId, oneshot::Sender<CoreReply>>,
    /// The next command's id.
    next_command: u64,
    /// To the control plane.
    events: mpsc::Sender<CoreEvent>,
    /// The inputs of the last batch written, to be handed back to the core for reuse.
    written: Option<Vec<Input>>,
    /// The core's pool of output vectors, which every link reader decodes into.
    outputs_pool: link::OutputsPool,
    /// Whether standbys on this host are put in `SCHED_BATCH` (see [`super::placement`]).
    standby_batch: bool,
}

impl Driver {
    /// Drops the link of `slot`, if any, with the frames read from it and not yet handed to
    /// the core: the core learns of the loss and is told nothing more of that connection.
    fn forget(&mut self, slot: usize) {
        if let Some(link) = self.links.get_mut(slot) {
            *link = None;
        }
        self.readers.forget(slot);
    }

    /// Takes `link` as the connection of `slot`.
    fn adopt(&mut self, slot: usize, link: link::EngineLink) {
        self.forget(slot);
        let pid = link.peer_pid();
        let (mut reader, writer) = link.into_split();
        reader.use_outputs_pool(self.outputs_pool.clone());
        self.readers.by_slot[slot] = Some(reader);
        self.links[slot] = Some(DriverLink {
            writer,
            pid,
            batch: None,
        });
    }

    /// Puts each engine on this host in the scheduling class its role calls for, when the role
    /// changed: a standby in `SCHED_BATCH`, an engine that owns inputs in `SCHED_OTHER`. Asked
    /// once per role: a refusal is logged, not retried on every order.
    fn place_engines<S, J>(&mut self, core: &Core<S, J>)
    where
        S: SessionStore + Send + 'static,
        J: InputJournal,
        J::Reader: Send + 'static,
    {
        if !self.standby_batch {
            return;
        }
        for (slot, link) in self.links.iter_mut().enumerate() {
            let Some(link) = link.as_mut() else {
                continue;
            };
            let Some(pid) = link.pid else {
                continue;
            };
            let batch = !core.owns_inputs(slot);
            if link.batch == Some(batch) {
                continue;
            }
            link.batch = Some(batch);
            match super::placement::set_batch(pid, batch) {
                Ok(threads) => tracing::info!(
                    pid,
                    class = if batch { "batch" } else { "normal" },
                    threads,
                    "engine scheduling class set for its role"
                ),
                Err(error) => tracing::warn!(
                    pid,
                    batch,
                    %error,
                    "cannot set the engine's scheduling class; it runs as started"
                ),
            }
        }
    }

    /// Files `reply` under a new command id.
    fn remember(&mut self, reply: oneshot::Sender<CoreReply>) -> CommandId {
        self.next_command += 1;
        let id = CommandId(self.next_command);
        self.replies.insert(id, reply);
        id
    }

    /// Carries out everything the core asked, in order, until it asks nothing more (a failed
    /// write is reported back, and the core may ask for more in return).
    async fn carry_out<S, J>(&mut self, core: &mut Core<S, J>)
    where
        S: SessionStore + Send + 'static,
        J: InputJournal,
        J::Reader: Send + 'static,
    {
        loop {
            // The outbox first: each delivery is written into its sessions, then handed back
            // so the cursor moves past it (a kill in between delivers it again, deduplicated).
            while let Some(delivery) = core.poll_delivery() {
                let now = Timestamp::now();
                delivery.apply(now, core.sessions());
                core.handle_delivered(now, delivery);
            }
            while let Some(event) = core.poll_event() {
                if let Err(error) = self.events.try_send(event) {
                    tracing::error!(%error, "control plane not taking events; this one is not audited");
                }
            }
            while let Some((id, reply)) = core.poll_reply() {
                let Some(waiting) = self.replies.remove(&id) else {
                    continue;
                };
                if let Err(CoreReply::Switched(report)) = waiting.send(reply) {
                    // The control plane stopped waiting (its reply timed out): tell it what
                    // happened, so the audit log does not end on a refusal for a switch that ran.
                    if let Err(error) = self.events.try_send(CoreEvent::Completed(report)) {
                        tracing::error!(%error, "control plane not taking events; a late switch is not audited");
                    }
                }
            }
            let Some(transmit) = core.poll_link() else {
                return;
            };
            // Read before the write is awaited: the core is not shared across the await.
            let target = match transmit.command {
                LinkCommand::Connect => Some((
                    core.engine_addr(transmit.slot).clone(),
                    core.link_secret().cloned(),
                    core.link_spin(),
                )),
                _ => None,
            };
            let transmitted = self.transmit(transmit, target).await;
            if let Some(inputs) = self.written.take() {
                core.recycle_inputs(inputs);
            }
            if let Err(error) = transmitted {
                let (slot, error) = error;
                self.forget(slot);
                core.handle_lost(Timestamp::now(), slot, &error);
            }
        }
    }

    /// Does one thing the core asked on a link; the slot and the reason if the link failed.
    /// `target` is where to connect, for [`LinkCommand::Connect`].
    async fn transmit(
        &mut self,
        LinkTransmit { slot, command }: LinkTransmit,
        target: Option<(link::LinkAddr, Option<link::LinkSecret>, Duration)>,
    ) -> Result<(), (usize, String)> {
        if let Some((addr, secret, spin)) = target {
            let attempts = self.attempts_tx.clone();
            tokio::spawn(async move {
                let timeout = Duration::from_millis(constants::ENGINE_CONNECT_TIMEOUT_MS);
                let attempt = link::connect_spinning(&addr, timeout, secret.as_ref(), spin).await;
                let _ = attempts.send((slot, attempt)).await;
            });
            return Ok(());
        }
        if let LinkCommand::Drop = command {
            self.forget(slot);
            return Ok(());
        }
        let Some(link) = self.links.get_mut(slot).and_then(Option::as_mut) else {
            // Lost since the core asked: the core has been or will be told.
            return Ok(());
        };
        let timeout = Duration::from_millis(constants::ENGINE_WRITE_TIMEOUT_MS);
        let writer = &mut link.writer;
        // Every write waits with every link still read: an engine blocked writing its answers
        // to a gateway that is not reading them would stop reading its inputs, and the write
        // would wait on it forever.
        let readers = &mut self.readers;
        let written = match command {
            // Only input writes are bounded: an engine that stops reading them would stall the
            // venue. Requests and heartbeats are small and answered by the link itself.
            LinkCommand::Inputs(inputs) => {
                let write = tokio::time::timeout(timeout, writer.send_inputs(&inputs));
                let written = match readers.reading_while(write).await {
                    Ok(written) => written,
                    Err(_) => Err(LinkError::PeerSilent(timeout)),
                };
                self.written = Some(inputs);
                written
            }
            LinkCommand::RequestSnapshot => readers.reading_while(writer.request_snapshot()).await,
            LinkCommand::Restore(bytes) => readers.reading_while(writer.restore(&bytes)).await,
            LinkCommand::Heartbeat { last_input_seq } => {
                readers
                    .reading_while(writer.heartbeat(last_input_seq))
                    .await
            }
            LinkCommand::Close { reason } => {
                // A stopping gateway must not wait on a stuck engine: bounded, and a failure
                // only logged.
                let close = tokio::time::timeout(timeout, writer.close(&reason));
                match readers.reading_while(close).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::debug!(%error, "engine link close failed"),
                    Err(_) => tracing::debug!("engine link close timed out"),
                }
                return Ok(());
            }
            LinkCommand::Connect | LinkCommand::Drop => return Ok(()),
        };
        written.map_err(|error| (slot, error.to_string()))
    }
}

/// The read halves of the engine links, polled from the driver's own task.
///
/// An engine's answer wakes the driver itself: no reader task decodes it and hands it over a
/// channel, which cost a task switch (and, on the multi-thread runtime, often a wake-up of the
/// other worker) per answer.
struct Readers {
    /// By slot: the live connection's reader.
    by_slot: Vec<Option<LinkReader>>,
    /// Frames read while a write waited (see [`Readers::reading_while`]), in arrival order;
    /// handed to the core before anything read later.
    arrived: VecDeque<SlotFrame>,
    /// The slot polled first next time, so a busy engine cannot starve the other.
    next: usize,
}

impl Readers {
    /// Room for `engines` links.
    fn new(engines: usize) -> Readers {
        Readers {
            by_slot: (0..engines).map(|_| None).collect(),
            arrived: VecDeque::with_capacity(constants::LINK_FRAMES_ARRIVED_CAPACITY),
            next: 0,
        }
    }

    /// Drops the reader of `slot` and the frames read from it not yet handed out.
    fn forget(&mut self, slot: usize) {
        if let Some(reader) = self.by_slot.get_mut(slot) {
            *reader = None;
        }
        self.arrived.retain(|(from, _)| *from != slot);
    }

    /// The next frame of any link: those read while a write waited first, then each link in
    /// turn.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<SlotFrame> {
        if let Some(frame) = self.arrived.pop_front() {
            return Poll::Ready(frame);
        }
        let slots = self.by_slot.len();
        for turn in 0..slots {
            let slot = (self.next + turn) % slots;
            if let Poll::Ready(frame) = self.poll_slot(slot, cx) {
                self.next = (slot + 1) % slots;
                return Poll::Ready((slot, frame));
            }
        }
        Poll::Pending
    }

    /// The next frame of `slot`'s link; `Pending` when it has none yet or no link. A link's
    /// error is its last frame: its reader is dropped with it.
    fn poll_slot(&mut self, slot: usize, cx: &mut Context<'_>) -> Poll<Result<Frame, LinkError>> {
        let Some(reader) = self.by_slot[slot].as_mut() else {
            return Poll::Pending;
        };
        let frame = std::task::ready!(reader.poll_recv(cx));
        if frame.is_err() {
            self.by_slot[slot] = None;
        }
        Poll::Ready(frame)
    }

    /// Runs `write` to its end while keeping every link read: what arrives meanwhile waits in
    /// `arrived` for the driver's loop. Without it, two engines could each wait for the
    /// gateway to read its answers while the gateway waits to write to one of them.
    async fn reading_while<W: Future>(&mut self, write: W) -> W::Output {
        let mut write = pin!(write);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(written) = write.as_mut().poll(cx) {
                return Poll::Ready(written);
            }
            for slot in 0..self.by_slot.len() {
                while let Poll::Ready(frame) = self.poll_slot(slot, cx) {
                    self.arrived.push_back((slot, frame));
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        ClOrdId, EngineConfig, MatchingEngine, NewOrder, OrdType, Parties, Price, Qty, Request,
        Side, Symbol, TimeInForce,
    };

    /// Inputs written in one go: encoded, several times what a Unix socket buffers each way, so
    /// the engine must answer some of them before it can read the rest.
    const INPUTS: u64 = 20_000;

    /// A bound on the whole test, so a deadlock fails it instead of hanging it.
    const WAIT: Duration = Duration::from_secs(120);

    /// A resting buy order: one answer (an ExecutionReport New) per input.
    fn buy(seq: u64) -> Input {
        Input {
            seq,
            time: Timestamp::from_millis(1_700_000_000_000 + seq),
            session: 1,
            request: Request::New(NewOrder {
                cl_ord_id: ClOrdId::try_from_bytes(format!("o{seq}").as_bytes()).unwrap(),
                symbol: Symbol::try_from_bytes(b"AAPL").unwrap(),
                side: Side::Buy,
                ord_type: OrdType::Limit,
                price: Some(Price(100 * Price::SCALE)),
                qty: Qty(1),
                time_in_force: TimeInForce::Day,
                parties: Parties::NONE,
            }),
        }
    }

    /// A write larger than both socket buffers completes while its engine answers: the answers
    /// are read meanwhile and handed out afterwards, one frame per input, in order. Written with
    /// a plain await, the engine blocks on its answers and stops reading until its write
    /// times out and it drops the link.
    #[tokio::test]
    async fn a_write_waits_while_every_link_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let addr: link::LinkAddr = format!("unix://{}/engine.sock", dir.path().display())
            .parse()
            .unwrap();
        let listener = link::LinkListener::bind(&addr).unwrap();
        let shutdown = link::Shutdown::new();
        let stop = shutdown.clone();
        let engine = MatchingEngine::new(&EngineConfig::default()).unwrap();
        let serving = std::thread::spawn(move || {
            link::serve_on(engine, listener, &link::ServeConfig::default(), &stop).unwrap()
        });
        let (engine_link, _) = link::connect(&addr).await.unwrap();
        let (reader, mut writer) = engine_link.into_split();
        let mut readers = Readers::new(1);
        readers.by_slot[0] = Some(reader);

        let inputs: Vec<Input> = (1..=INPUTS).map(buy).collect();
        let written =
            tokio::time::timeout(WAIT, readers.reading_while(writer.send_inputs(&inputs)))
                .await
                .expect("the write ends while the engine's answers are read");
        written.unwrap();
        assert!(
            !readers.arrived.is_empty(),
            "the engine answered while the write waited (else this test proves nothing)"
        );

        let mut answered = 0;
        while answered < INPUTS {
            let (slot, frame) =
                tokio::time::timeout(WAIT, std::future::poll_fn(|cx| readers.poll_frame(cx)))
                    .await
                    .expect("every input is answered");
            assert_eq!(slot, 0);
            match frame.unwrap() {
                Frame::Outputs(outputs) => {
                    answered += 1;
                    assert_eq!(outputs.input_seq, answered, "answers come in input order");
                }
                Frame::Heartbeat(_) => {}
                other => panic!("expected outputs, got {other:?}"),
            }
        }
        shutdown.trigger();
        drop((readers, writer));
        serving.join().unwrap();
    }
}
