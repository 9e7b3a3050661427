//! Invariant 11: no heap allocation per order on the steady-state path.
//!
//! A counting global allocator counts the allocations (and reallocations) made by the thread
//! that measures, and only while it measures, so other tests of this binary running on other
//! threads do not disturb the count. Each test warms its path up first (buffers reach their
//! working size, tables their steady shape), then drives orders through it and asserts how many
//! allocations they cost.
//!
//! The paths, in the order an order crosses them:
//! - the FIX side: framing, validating and indexing a NewOrderSingle in its session, the
//!   engine request made from it, and the ExecutionReport encoded, stored and queued back;
//! - the link: the input encoded by the gateway and decoded by the engine, the outputs encoded by
//!   the engine and decoded by the gateway, and the shared-memory ring that can carry them;
//! - the engine: matching;
//! - all of them through the gateway core (sequencer with its memory-mapped journal, outbox,
//!   sessions with memory-mapped stores), with the engine behind an in-memory link;
//! - a whole gateway: a counterparty's TCP connection read by the acceptor's connection task,
//!   the `Inbound` channel, the driver with its engine links (reader tasks, frames channel,
//!   timers) around the core, and the execution reports written back to the socket, with
//!   orders a window at a time. Not counted: the engines' processes (threads here); allowed:
//!   what a driver that falls behind its link readers allocates (see that test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use baton::engine::{
    ClOrdId, Engine, EngineConfig, Input, InstrumentConfig, MatchingEngine, NewOrder, OrdType,
    Output, Parties, Price, Qty, Request, Side, Symbol, TimeInForce,
};
use baton::fix::codec::Encoder;
use baton::fix::dictionary::Dictionary;
use baton::fix::session::{Event, Session, SessionConfig};
use baton::fix::store::MmapStore;
use baton::fix::time::Timestamp;

/// Counts allocations of the threads that asked for it.
struct Counting;

thread_local! {
    /// Whether this thread is measuring.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    /// Allocations this thread made while measuring.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the allocator may be called while thread-locals are being torn down.
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter only reads and
// writes this thread's own cells, which never allocate (const-initialized).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations `work` makes on this thread.
fn allocations<R>(work: impl FnOnce() -> R) -> (u64, R) {
    ALLOCATIONS.with(|count| count.set(0));
    MEASURING.with(|measuring| measuring.set(true));
    let result = work();
    MEASURING.with(|measuring| measuring.set(false));
    (ALLOCATIONS.with(Cell::get), result)
}

/// Orders before measuring: every buffer reaches its working size.
const WARM_UP: u64 = 2_000;
/// Orders measured.
const ORDERS: u64 = 5_000;

/// Monday 2026-11-23 12:00:00 UTC.
const NOW: Timestamp = Timestamp::from_secs(1_795_435_200);

const SYMBOL: &str = "ACME";

/// `prefix` then `n` in decimal, without allocating.
fn numbered(buf: &mut [u8; 24], prefix: u8, n: u64) -> &[u8] {
    let mut at = buf.len();
    let mut rest = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    at -= 1;
    buf[at] = prefix;
    &buf[at..]
}

/// Order `n` of the counterparty: buys and sells alternate at one price and size, so each
/// sell fills the buy before it and the book stays empty however long the run.
fn write_order(encoder: &mut Encoder, msg_seq_num: u64, n: u64) {
    let mut id = [0u8; 24];
    encoder
        .start(b"D")
        .str(49, "CLIENT")
        .str(56, "BATON")
        .uint(34, msg_seq_num)
        .timestamp(52, NOW)
        .bytes(11, numbered(&mut id, b'c', n))
        .str(55, SYMBOL)
        .char(54, if n.is_multiple_of(2) { b'1' } else { b'2' })
        .str(60, "20261123-12:00:00")
        .uint(38, 100)
        .char(40, b'2')
        .str(44, "10.5");
}

fn logon(encoder: &mut Encoder) -> &[u8] {
    encoder
        .start(b"A")
        .str(49, "CLIENT")
        .str(56, "BATON")
        .uint(34, 1)
        .timestamp(52, NOW)
        .uint(98, 0)
        .uint(108, 30);
    encoder.finish()
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        instruments: vec![InstrumentConfig {
            symbol: SYMBOL.into(),
            tick_size: Price(Price::SCALE / 100),
            lot_size: 1,
        }],
        orders_max: 1_024,
        levels_max: 1_024,
        cl_ord_ids_max: (2 * (WARM_UP + ORDERS) + 1_024) as u32,
    }
}

fn logged_on_session(dir: &std::path::Path) -> Session<MmapStore> {
    let store = MmapStore::open(dir, Default::default()).expect("session store");
    let mut session = Session::new(
        SessionConfig::new("BATON", "CLIENT"),
        store,
        Dictionary::venue(),
    );
    session.on_connect(NOW);
    let mut client = Encoder::new("FIX.4.4");
    session.handle_bytes(NOW, logon(&mut client));
    let mut sink = Vec::new();
    session.poll_transmit(&mut sink);
    while session.poll_event().is_some() {}
    session
}

/// The FIX side of one order: the NewOrderSingle framed, validated and handed out by the
/// session, translated into an engine request, then an ExecutionReport for it encoded, stored
/// and queued for the socket.
#[test]
fn the_fix_side_allocates_nothing_per_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = logged_on_session(dir.path());
    let venue = baton::config::VenueConfig::default();
    let mut client = Encoder::new("FIX.4.4");
    let mut wire = Vec::with_capacity(1 << 16);
    let mut engine = MatchingEngine::new(&engine_config()).unwrap();
    let mut outputs: Vec<Output> = Vec::with_capacity(64);
    let mut step = |n: u64, session: &mut Session<MmapStore>, count: bool| {
        write_order(&mut client, n + 2, n);
        let bytes = client.finish();
        let (fix_in, request) = allocations(|| {
            session.handle_bytes(NOW, bytes);
            let Some(Event::Application(message)) = session.poll_event() else {
                panic!("the order did not come out of the session");
            };
            session.confirm_in(n + 2);
            let request =
                baton::gateway::translate::request_from_fix(&message, &venue).expect("usable");
            session.recycle(message);
            request
        });
        outputs.clear();
        let input = Input {
            seq: n + 1,
            time: NOW,
            session: 0,
            request,
        };
        engine.apply(&input, &mut outputs);
        let (fix_out, ()) = allocations(|| {
            for output in &outputs {
                let msg_type = baton::gateway::translate::output_msg_type(output);
                session
                    .send_app(NOW, msg_type, |e| {
                        baton::gateway::translate::write_output(e, output)
                    })
                    .expect("stored");
            }
            wire.clear();
            session.poll_transmit(&mut wire);
        });
        if count { fix_in + fix_out } else { 0 }
    };
    for n in 0..WARM_UP {
        step(n, &mut session, false);
    }
    let mut total = 0;
    for n in WARM_UP..WARM_UP + ORDERS {
        total += step(n, &mut session, true);
    }
    report("fix side", total);
    assert!(
        total <= GROWTH_ALLOWANCE,
        "{total} allocations on the FIX side over {ORDERS} orders"
    );
}

fn report(path: &str, total: u64) {
    eprintln!(
        "{path}: {total} allocations over {ORDERS} orders ({:.3} per order)",
        total as f64 / ORDERS as f64
    );
}

fn new_order(seq: u64) -> Input {
    let mut id = [0u8; 24];
    Input {
        seq,
        time: NOW,
        session: 0,
        request: Request::New(NewOrder {
            cl_ord_id: ClOrdId::try_from_bytes(numbered(&mut id, b'c', seq)).unwrap(),
            symbol: Symbol::try_from_bytes(SYMBOL.as_bytes()).unwrap(),
            side: if seq.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            ord_type: OrdType::Limit,
            price: Some(Price(10 * Price::SCALE)),
            qty: Qty(100),
            time_in_force: TimeInForce::Day,
            parties: Parties::NONE,
        }),
    }
}

/// Matching: a new order resting, and the next one filling it (two fills, three reports).
#[test]
fn matching_allocates_nothing_per_order() {
    let mut engine = MatchingEngine::new(&engine_config()).unwrap();
    let mut outputs: Vec<Output> = Vec::with_capacity(64);
    for seq in 1..=WARM_UP {
        outputs.clear();
        engine.apply(&new_order(seq), &mut outputs);
    }
    let mut total = 0;
    for seq in WARM_UP + 1..=WARM_UP + ORDERS {
        let input = new_order(seq);
        outputs.clear();
        total += allocations(|| engine.apply(&input, &mut outputs)).0;
    }
    report("matching", total);
    assert_eq!(total, 0, "allocations in matching over {ORDERS} orders");
}

/// The engine link both ways: an input encoded by the gateway's writer and decoded by the
/// engine's reader, its outputs encoded by the engine and decoded by the gateway into a vector
/// from the pool the gateway core gives them back to.
#[test]
fn the_link_allocates_nothing_per_order() {
    use baton::link::{
        Frame, FrameDecoder, FrameKind, encode_input, encode_outputs_payload, write_message,
    };
    let mut engine = MatchingEngine::new(&engine_config()).unwrap();
    let mut outputs: Vec<Output> = Vec::with_capacity(64);
    let mut to_engine = Vec::with_capacity(1 << 12);
    let mut to_gateway = Vec::with_capacity(1 << 12);
    let mut payload = Vec::with_capacity(1 << 12);
    let mut engine_side = FrameDecoder::new();
    let mut gateway_side = FrameDecoder::new();
    let pool = baton::link::OutputsPool::new();
    gateway_side.use_outputs_pool(pool.clone());
    let mut step = |seq: u64| -> u64 {
        let input = new_order(seq);
        let (there, decoded) = allocations(|| {
            to_engine.clear();
            encode_input(&input, &mut to_engine).unwrap();
            engine_side.push(&to_engine);
            engine_side.next_frame().unwrap()
        });
        let Some(Frame::Input(decoded)) = decoded else {
            panic!("the engine did not read an input");
        };
        outputs.clear();
        engine.apply(&decoded, &mut outputs);
        let (back, frame) = allocations(|| {
            payload.clear();
            to_gateway.clear();
            encode_outputs_payload(seq, &outputs, &mut payload).unwrap();
            write_message(FrameKind::Outputs, &payload, &mut to_gateway).unwrap();
            gateway_side.push(&to_gateway);
            gateway_side.next_frame().unwrap()
        });
        let Some(Frame::Outputs(decoded)) = frame else {
            panic!("the gateway did not read outputs");
        };
        assert_eq!(decoded.outputs, outputs);
        // As the core does once the input is delivered and compared.
        let (done, ()) = allocations(|| pool.give(decoded.outputs));
        there + back + done
    };
    for seq in 1..=WARM_UP {
        step(seq);
    }
    let total: u64 = (WARM_UP + 1..=WARM_UP + ORDERS).map(&mut step).sum();
    report("link", total);
    assert!(
        total <= GROWTH_ALLOWANCE,
        "{total} allocations on the link over {ORDERS} orders"
    );
}

/// The shared-memory transport under the link: each encoded input and each encoded answer is
/// copied through a ring of a mapped region and read back into the decoder's own buffer, as the
/// gateway's and engine's shared-memory halves do, without allocating.
#[test]
fn the_shared_memory_ring_allocates_nothing_per_order() {
    use baton::link::shm::ring_pair;
    use baton::link::{Frame, FrameDecoder, encode_input};
    let (mut producer, mut consumer) = ring_pair(1 << 16).unwrap();
    let mut encoded = Vec::with_capacity(1 << 12);
    let mut decoder = FrameDecoder::new();
    let mut step = |seq: u64| -> u64 {
        let input = new_order(seq);
        let (count, frame) = allocations(|| {
            encoded.clear();
            encode_input(&input, &mut encoded).unwrap();
            assert_eq!(producer.try_write(&encoded).unwrap().bytes, encoded.len());
            let space = decoder.read_space();
            let n = consumer.try_read(space).unwrap();
            decoder.advance(n);
            decoder.next_frame().unwrap()
        });
        assert!(matches!(frame, Some(Frame::Input(decoded)) if decoded == input));
        count
    };
    for seq in 1..=WARM_UP {
        step(seq);
    }
    let total: u64 = (WARM_UP + 1..=WARM_UP + ORDERS).map(&mut step).sum();
    report("shared-memory ring", total);
    assert!(
        total <= GROWTH_ALLOWANCE,
        "{total} allocations through the ring over {ORDERS} orders"
    );
}

/// An engine behind an in-memory link: what it was sent, decoded as the engine's reader does;
/// what it answers, encoded as its writer does and decoded as the gateway's reader does.
struct LinkedEngine {
    engine: MatchingEngine,
    outputs: Vec<Output>,
    to_engine: Vec<u8>,
    engine_side: baton::link::FrameDecoder,
    payload: Vec<u8>,
    to_gateway: Vec<u8>,
    gateway_side: baton::link::FrameDecoder,
}

impl LinkedEngine {
    fn new(pool: &baton::link::OutputsPool) -> LinkedEngine {
        let mut gateway_side = baton::link::FrameDecoder::new();
        gateway_side.use_outputs_pool(pool.clone());
        LinkedEngine {
            engine: MatchingEngine::new(&engine_config()).unwrap(),
            outputs: Vec::with_capacity(64),
            to_engine: Vec::with_capacity(1 << 12),
            engine_side: baton::link::FrameDecoder::new(),
            payload: Vec::with_capacity(1 << 12),
            to_gateway: Vec::with_capacity(1 << 12),
            gateway_side,
        }
    }

    fn hello(&self, name: &str) -> baton::link::Hello {
        baton::link::Hello {
            protocol_version: baton::link::LINK_PROTOCOL_VERSION,
            engine_name: name.into(),
            build_version: self.engine.build_version().into(),
            last_input_seq: self.engine.last_input_seq(),
            snapshot_formats: Vec::new(),
            executable_sha256: String::new(),
            auth_nonce: Vec::new(),
        }
    }

    /// Sends `inputs` and hands every answer to `answer`.
    fn exchange(&mut self, inputs: &[Input], mut answer: impl FnMut(baton::link::Frame)) {
        use baton::link::{Frame, FrameKind, encode_input, encode_outputs_payload, write_message};
        self.to_engine.clear();
        for input in inputs {
            encode_input(input, &mut self.to_engine).unwrap();
        }
        self.engine_side.push(&self.to_engine);
        self.to_gateway.clear();
        while let Some(frame) = self.engine_side.next_frame().unwrap() {
            let Frame::Input(input) = frame else {
                panic!("the engine was sent something other than an input");
            };
            self.outputs.clear();
            self.engine.apply(&input, &mut self.outputs);
            self.payload.clear();
            encode_outputs_payload(input.seq, &self.outputs, &mut self.payload).unwrap();
            write_message(FrameKind::Outputs, &self.payload, &mut self.to_gateway).unwrap();
        }
        self.gateway_side.push(&self.to_gateway);
        while let Some(frame) = self.gateway_side.next_frame().unwrap() {
            answer(frame);
        }
    }
}

/// Allocations per order through the gateway core, from the counterparty's bytes to the
/// execution reports' bytes: session, sequencer (journal append on a memory-mapped journal),
/// fan-out to an authoritative and a standby engine over the link codec, the shadow comparison,
/// the outbox delivering into the session's memory-mapped store, and the bytes queued for the
/// socket. Not counted: the engines' own work (matching and the link's engine side are counted
/// above) and the counterparty's encoding.
///
/// Nothing is allocated per order: the batches of inputs for the links are handed back by the
/// driver and reused, and each engine's outputs are decoded into a vector the core gave back
/// to the links' pool once it had delivered and compared them.
///
/// The bound fails on any allocation added per order (it counts `ORDERS` more).
#[test]
fn the_gateway_core_allocates_nothing_per_order() {
    use baton::gateway::core::{Core, CoreConfig, LinkCommand, LinkTransmit};
    use baton::gateway::{Inbound, Sessions};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let sessions: Arc<Sessions<MmapStore>> = Sessions::new(vec![logged_on_session(&store_dir)]);
    let addr = |name: &str| {
        format!("unix://{}/{name}.sock", dir.path().display())
            .parse::<baton::link::LinkAddr>()
            .unwrap()
    };
    let config = CoreConfig {
        engines: vec![addr("blue"), addr("green")],
        journal_dir: dir.path().join("journal"),
        journal: Default::default(),
        failover_timeout: std::time::Duration::from_secs(3_600),
        symbols: vec![Symbol::try_from_bytes(SYMBOL.as_bytes()).unwrap()],
        gates: Default::default(),
        link_secret: None,
        link_spin: std::time::Duration::ZERO,
        canary_delivery: Default::default(),
        standby_batch: std::time::Duration::from_micros(baton::constants::STANDBY_BATCH_US_DEFAULT),
    };
    let mut now = NOW;
    let mut core = Core::open(sessions.clone(), config, now).unwrap();
    // As the driver does: every link decodes into the core's pool.
    let pool = core.outputs_pool();
    let mut engines = [LinkedEngine::new(&pool), LinkedEngine::new(&pool)];
    let names = ["blue", "green"];
    // Connect both engines: blue first, so it is authoritative.
    // The core connects to one engine per housekeeping round; a few rounds attach both.
    for _ in 0..64 {
        core.handle_catch_up(now);
        let Some(LinkTransmit { slot, command }) = core.poll_link() else {
            now = now.plus_millis(baton::constants::LINK_POLL_INTERVAL_MS);
            core.handle_timeout(now);
            continue;
        };
        match command {
            LinkCommand::Connect => {
                let hello = engines[slot].hello(names[slot]);
                assert!(core.handle_attached(now, slot, &hello));
            }
            LinkCommand::RequestSnapshot => {
                let engine = &engines[slot].engine;
                let mut bytes = Vec::new();
                engine.snapshot(&mut bytes);
                let snapshot = baton::link::Snapshot {
                    at_input_seq: engine.last_input_seq(),
                    format_version: baton::engine::SNAPSHOT_FORMAT_DEFAULT,
                    digest: engine.digest(),
                    bytes,
                };
                core.handle_frame(now, slot, baton::link::Frame::Snapshot(snapshot));
            }
            LinkCommand::Restore(bytes) => {
                let engine = &mut engines[slot].engine;
                engine.restore(&bytes).unwrap();
                let restored = baton::link::Restored {
                    at_input_seq: engine.last_input_seq(),
                    digest: engine.digest(),
                };
                core.handle_frame(now, slot, baton::link::Frame::Restored(restored));
            }
            _ => {}
        }
    }

    let venue = baton::config::VenueConfig::default();
    let mut client = Encoder::new("FIX.4.4");
    let mut batch: Vec<Inbound> = Vec::with_capacity(baton::constants::SEQUENCER_BATCH_MAX);
    let mut wire = Vec::with_capacity(1 << 16);
    let mut frames = Vec::with_capacity(16);
    let mut step = |n: u64, now: baton::fix::time::Timestamp| -> u64 {
        write_order(&mut client, n + 2, n);
        let bytes = client.finish();
        let (count, ()) = allocations(|| {
            // The acceptor's part: the session hands out the order, translated for the engine.
            sessions.with(0, |session| {
                session.handle_bytes(now, bytes);
                while let Some(event) = session.poll_event() {
                    let Event::Application(message) = event else {
                        continue;
                    };
                    let request = baton::gateway::translate::request_from_fix(&message, &venue)
                        .expect("usable");
                    batch.push(Inbound {
                        session: 0,
                        request,
                        message,
                        sequence_epoch: 0,
                    });
                }
            });
            // The driver's part: the core sequences, the engines answer, the outbox delivers.
            core.handle_requests(now, &mut batch);
            if now >= core.next_timeout() {
                core.handle_timeout(now);
            }
            while let Some(LinkTransmit { slot, command }) = core.poll_link() {
                if let LinkCommand::Inputs(inputs) = command {
                    engines[slot].exchange(&inputs, |frame| frames.push((slot, frame)));
                    // As the driver does once the batch is written.
                    core.recycle_inputs(inputs);
                }
                for (slot, frame) in frames.drain(..) {
                    core.handle_frame(now, slot, frame);
                }
                // The outbox's deliveries into their sessions, each handed back.
                while let Some(delivery) = core.poll_delivery() {
                    delivery.apply(now, &sessions);
                    core.handle_delivered(now, delivery);
                }
            }
            while core.poll_event().is_some() {}
            sessions.with(0, |session| {
                wire.clear();
                session.poll_transmit(&mut wire);
            });
        });
        assert!(!wire.is_empty(), "order {n} was not answered");
        count
    };
    for n in 0..WARM_UP {
        now = now.plus_millis(1);
        step(n, now);
    }
    let mut total = 0;
    for n in WARM_UP..WARM_UP + ORDERS {
        now = now.plus_millis(1);
        total += step(n, now);
    }
    report("gateway core", total);
    let applied = WARM_UP + ORDERS;
    assert_eq!(
        [
            engines[0].engine.last_input_seq(),
            engines[1].engine.last_input_seq()
        ],
        [applied, applied],
        "both engines applied every order"
    );
    assert!(
        total <= GROWTH_ALLOWANCE,
        "{total} allocations through the gateway core over {ORDERS} orders"
    );
}

/// Append-only structures that live for the trading day (the session store's index of sent
/// messages) double when full: a few reallocations over a run, never one per order. An
/// allocation added per order counts `ORDERS` (5,000), far above this.
const GROWTH_ALLOWANCE: u64 = 8;

/// What the gateway test's measuring task found, read once the gateway stopped.
#[derive(Debug, Default)]
struct GatewayOutcome {
    /// Allocations of the gateway's thread over the measured orders.
    allocations: u64,
    /// Each engine's last input answered, and the journal's last input, after them.
    answered_through: Vec<u64>,
    journal_last_seq: u64,
}

/// The control plane of the gateway test: it says where the gateway listens, and once the
/// gateway is serving, a task on the gateway's own thread (the only thread it has) turns the
/// count on when the counterparty says the warm-up is over and off when it says the measured
/// orders were answered.
struct MeasuringPlane {
    listening: std::sync::mpsc::Sender<std::net::SocketAddr>,
    ready: std::sync::mpsc::Sender<()>,
    begin: tokio::sync::oneshot::Receiver<()>,
    end: tokio::sync::oneshot::Receiver<()>,
    stop: tokio::sync::oneshot::Receiver<()>,
    /// Stops the gateway once the outcome is recorded (the standby answers after the
    /// counterparty was, up to `[gateway] standby_batch_us` later).
    stopping: tokio::sync::oneshot::Sender<()>,
    measuring: std::sync::Arc<std::sync::atomic::AtomicBool>,
    outcome: std::sync::Arc<std::sync::Mutex<GatewayOutcome>>,
}

/// The core's status, asked as the control plane does.
async fn core_status(
    core: &tokio::sync::mpsc::Sender<baton::gateway::driver::CoreCall>,
) -> baton::gateway::status::CoreStatus {
    use baton::gateway::core::{CoreCommand, CoreReply, CoreRequest};
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = CoreCommand {
        request: CoreRequest::Status,
        expect_sha256: None,
        canary_only: false,
        expected_divergence: Default::default(),
    };
    core.send(baton::gateway::driver::CoreCall { command, reply })
        .await
        .expect("the core takes commands");
    match answer.await.expect("the core answers") {
        CoreReply::Status(status) => *status,
        other => panic!("status answered with {other:?}"),
    }
}

impl baton::gateway::ControlHooks for MeasuringPlane {
    async fn bind(&mut self) -> Result<(), baton::gateway::assembly::HookError> {
        Ok(())
    }

    fn announce(
        &mut self,
        listen: std::net::SocketAddr,
    ) -> Result<(), baton::gateway::assembly::HookError> {
        self.listening.send(listen)?;
        Ok(())
    }

    fn start(
        self,
        gateway: baton::gateway::assembly::Assembled,
    ) -> Result<baton::gateway::assembly::Started, baton::gateway::assembly::HookError> {
        use std::sync::atomic::Ordering;
        let MeasuringPlane {
            ready,
            begin,
            end,
            stop,
            stopping,
            measuring,
            outcome,
            ..
        } = self;
        let mut events = gateway.events;
        let core = gateway.core.expect("engines are configured");
        tokio::spawn(async move {
            // The core's events (engines attached, caught up) are taken as the audit log would.
            let drain = async {
                while events.recv().await.is_some() {}
                std::future::pending::<()>().await
            };
            let measure = async {
                // Both engines attached and caught up before the counterparty starts (orders
                // with no engine are refused) and before counting (attaching the standby, its
                // snapshot and restore, is not the steady state).
                let caught_up = async || loop {
                    let status = core_status(&core).await;
                    if status.engines.iter().all(|engine| {
                        engine.role != baton::gateway::status::EngineRole::Down
                            && engine.answered_through == status.journal_last_seq
                    }) {
                        break status;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                };
                caught_up().await;
                ready.send(()).expect("the counterparty waits");
                begin.await.expect("the counterparty warmed up");
                caught_up().await;
                ALLOCATIONS.with(|count| count.set(0));
                MEASURING.with(|measuring| measuring.set(true));
                measuring.store(true, Ordering::Release);
                end.await.expect("the counterparty was answered");
                MEASURING.with(|measuring| measuring.set(false));
                let allocations = ALLOCATIONS.with(Cell::get);
                // The standby answers after the counterparty was: wait for it.
                let status = caught_up().await;
                *outcome.lock().unwrap() = GatewayOutcome {
                    allocations,
                    answered_through: status
                        .engines
                        .iter()
                        .map(|engine| engine.answered_through)
                        .collect(),
                    journal_last_seq: status.journal_last_seq,
                };
                let _ = stopping.send(());
            };
            tokio::select! {
                () = drain => {}
                () = measure => {}
            }
            // Keeps the core's command channel open until the gateway stops.
            std::future::pending::<()>().await
        });
        Ok(baton::gateway::assembly::Started {
            carried: Default::default(),
            resume: None,
            // Bounded, so a measurement that never ends fails the test instead of hanging it.
            stop: Box::pin(async move {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(120), stop).await;
            }),
        })
    }
}

/// The counterparty of the gateway test, on its own thread: a FIX session over TCP that sends
/// orders a window at a time and reads their execution reports.
struct Counterparty {
    stream: std::net::TcpStream,
    encoder: Encoder,
    decoder: baton::fix::codec::Decoder,
    received: Vec<u8>,
    /// ExecutionReports read so far.
    reports: u64,
}

/// Orders the counterparty sends before it waits for their answers: several messages per read
/// and per batch on the gateway's side, as under load.
const WINDOW: u64 = 10;

/// What the whole-gateway test allows: half an allocation per order, far above what a lagging
/// driver's queues cost and far below one allocation per order.
const GATEWAY_LAG_ALLOWANCE: u64 = ORDERS / 2;

impl Counterparty {
    fn logon(addr: std::net::SocketAddr) -> Counterparty {
        use std::io::Write;
        let stream = std::net::TcpStream::connect(addr).expect("the gateway accepts");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut counterparty = Counterparty {
            stream,
            encoder: Encoder::new("FIX.4.4"),
            decoder: baton::fix::codec::Decoder::new(baton::constants::BODY_LENGTH_MAX),
            received: Vec::new(),
            reports: 0,
        };
        counterparty
            .encoder
            .start(b"A")
            .str(49, "CLIENT1")
            .str(56, "BATON")
            .uint(34, 1)
            .timestamp(52, baton::time::Timestamp::now())
            .uint(98, 0)
            .uint(108, 30);
        let logon = counterparty.encoder.finish().to_vec();
        counterparty.stream.write_all(&logon).unwrap();
        let reply = counterparty.next_message();
        assert_eq!(reply.msg_type(), b"A", "the gateway answers the Logon");
        counterparty
    }

    /// The next message from the gateway; a read that times out fails the test.
    fn next_message(&mut self) -> baton::fix::codec::Message {
        use std::io::Read;
        loop {
            if let baton::fix::codec::Frame::Complete(len) = self.decoder.frame(&self.received) {
                let message = baton::fix::codec::Message::parse(&self.received[..len])
                    .expect("the gateway sends well-formed messages");
                self.received.drain(..len);
                return message;
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("the gateway answers in time");
            assert!(n > 0, "the gateway closed the connection");
            self.received.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends orders `from..to` (MsgSeqNum `n + 2`), then reads until each is answered: a buy
    /// rests (one report), the sell after it fills it (three: its acknowledgement and both
    /// fills).
    fn orders(&mut self, from: u64, to: u64) {
        use std::io::Write;
        let mut wire = Vec::new();
        let mut expected = self.reports;
        for n in from..to {
            let mut id = [0u8; 24];
            self.encoder
                .start(b"D")
                .str(49, "CLIENT1")
                .str(56, "BATON")
                .uint(34, n + 2)
                .timestamp(52, baton::time::Timestamp::now())
                .bytes(11, numbered(&mut id, b'c', n))
                .str(55, "AAPL")
                .char(54, if n.is_multiple_of(2) { b'1' } else { b'2' })
                .str(60, "20261123-12:00:00")
                .uint(38, 100)
                .char(40, b'2')
                .str(44, "10.5");
            wire.extend_from_slice(self.encoder.finish());
            expected += if n.is_multiple_of(2) { 1 } else { 3 };
        }
        self.stream.write_all(&wire).unwrap();
        while self.reports < expected {
            let message = self.next_message();
            match message.msg_type() {
                b"8" => self.reports += 1,
                // Heartbeats and the like are not answers.
                b"0" | b"1" => {}
                other => panic!(
                    "unexpected {} from the gateway: {message:?}",
                    String::from_utf8_lossy(other)
                ),
            }
        }
    }
}

/// Allocations per order through a whole gateway in this process: the acceptor's connection
/// task reading a real TCP connection and feeding its session, the `Inbound` channel, the
/// driver (engine links with their reader tasks, the frames channel, timers) around the core,
/// and the execution reports written back to the socket. The gateway runs on a current-thread
/// runtime on this thread, so every task of it is counted; its two engines are served on
/// threads of their own over Unix sockets and the counterparty is another thread, so neither is.
///
/// Run alone it counts 0-2. Its bound is looser than the other tests' because of what a driver
/// that falls behind its link readers allocates (other tests of this binary, or other test
/// binaries, on the same cores): frames queue up between the readers and the driver, the frames
/// channel allocates a block per 32 frames beyond the three it keeps, and the readers decode
/// into new output vectors once the pool's are all queued, a few hundred at worst as measured.
/// It still fails on any allocation added per order (that counts `ORDERS` more).
#[test]
fn the_gateway_allocates_nothing_per_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let mut config = baton::config::Config::load(None).expect("the embedded config");
    config.gateway.listen = "127.0.0.1:0".parse().unwrap();
    config.gateway.store_dir = dir.path().join("store");
    config.gateway.journal_dir = dir.path().join("journal");
    // One thread: the connections, the driver and the link readers all run on this one.
    config.gateway.runtime_threads = 1;
    let mut engines = Vec::new();
    config.gateway.engines.clear();
    for name in ["blue", "green"] {
        let addr: baton::link::LinkAddr = format!("unix://{}/{name}.sock", dir.path().display())
            .parse()
            .unwrap();
        let listener = baton::link::LinkListener::bind(&addr).unwrap();
        let engine = MatchingEngine::new(&config.engine).unwrap();
        let serve = baton::link::ServeConfig {
            engine_name: name.into(),
            ..Default::default()
        };
        let shutdown = baton::link::Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            baton::link::serve_on(engine, listener, &serve, &stop).expect("the engine serves")
        });
        engines.push((shutdown, thread));
        config.gateway.engines.push(addr.to_string());
    }

    let (listening_tx, listening) = std::sync::mpsc::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (begin_tx, begin) = tokio::sync::oneshot::channel();
    let (end_tx, end) = tokio::sync::oneshot::channel();
    let (stop_tx, stop) = tokio::sync::oneshot::channel();
    let measuring = Arc::new(AtomicBool::new(false));
    let outcome = Arc::new(std::sync::Mutex::new(GatewayOutcome::default()));
    let plane = MeasuringPlane {
        listening: listening_tx,
        ready: ready_tx,
        begin,
        end,
        stop,
        stopping: stop_tx,
        measuring: measuring.clone(),
        outcome: outcome.clone(),
    };
    let counterparty = std::thread::spawn(move || {
        let addr = listening
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the gateway listens");
        ready
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the engines attach");
        let mut client = Counterparty::logon(addr);
        for from in (0..WARM_UP).step_by(WINDOW as usize) {
            client.orders(from, from + WINDOW);
        }
        begin_tx.send(()).unwrap();
        while !measuring.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for from in (WARM_UP..WARM_UP + ORDERS).step_by(WINDOW as usize) {
            client.orders(from, from + WINDOW);
        }
        end_tx.send(()).unwrap();
        drop(client);
    });
    let served = baton::gateway::run(&config, plane);
    counterparty.join().expect("the counterparty ran");
    served.expect("the gateway ran");
    for (shutdown, thread) in engines {
        shutdown.trigger();
        thread.join().unwrap();
    }
    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    report("gateway", outcome.allocations);
    assert!(
        outcome.journal_last_seq == WARM_UP + ORDERS
            && outcome
                .answered_through
                .iter()
                .all(|&through| through == outcome.journal_last_seq),
        "both engines answered every order: {outcome:?}"
    );
    assert!(
        outcome.allocations <= GATEWAY_LAG_ALLOWANCE,
        "{} allocations through the gateway over {ORDERS} orders",
        outcome.allocations
    );
}
