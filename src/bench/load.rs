//! An open-loop load generator: sessions send on a fixed schedule whatever the answers do, and
//! each order's latency is measured from the time the schedule meant to send it, so time spent
//! queued behind a slow answer is counted instead of hidden (coordinated omission).
//!
//! Each session has a writer thread and a reader thread on one socket. The blocking
//! [`super::initiator::Initiator`] cannot drive a schedule: its receive timeout is a socket
//! option that Linux rounds up to whole scheduler ticks (a 100 µs timeout blocks ~8 ms on a
//! HZ=250 kernel), so a thread waiting for answers would miss its send times. The writer sleeps
//! until each intended send time; the reader blocks in `read` and stamps each answer on arrival.
//!
//! The same machinery drives the echo baseline ([`super::echo`]) through the [`Wire`] and
//! [`Tap`] traits, so both measurements share threads, schedule and bookkeeping.

use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::constants;
use crate::fix::codec::{Decoder, Encoder, Frame, Message};
use crate::fix::tags::{self, msg_type};
use crate::fix::time::Timestamp;

/// Why a load run could not be carried out (as opposed to what it measured).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A socket failed while setting up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The acceptor refused or did not answer the Logon.
    #[error("logon of {0} failed: {1}")]
    Logon(String, String),
    /// The order mix text is not `kind=weight,...`.
    #[error("bad order mix {0:?}: expected e.g. new=70,cancel=10,replace=10,cross=10")]
    Mix(String),
    /// A session thread panicked (a harness bug).
    #[error("a session thread panicked")]
    Panicked,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Io { what, source }
}

/// What each scheduled order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A limit order priced away from the other side, so it rests.
    New,
    /// A cancel of one of the session's own resting orders.
    Cancel,
    /// A cancel/replace of one of the session's own resting orders (new price and quantity).
    Replace,
    /// An immediate-or-cancel order priced through the other side, so it trades.
    Cross,
}

/// Relative weights of the order kinds, so a run can be shaped like a venue's real flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mix {
    /// Weight of resting new orders.
    pub new: u32,
    /// Weight of cancels.
    pub cancel: u32,
    /// Weight of replaces.
    pub replace: u32,
    /// Weight of crossing orders.
    pub cross: u32,
}

impl Default for Mix {
    /// Mostly resting orders, the rest split evenly: roughly an order-entry session's shape.
    fn default() -> Self {
        Mix {
            new: 70,
            cancel: 10,
            replace: 10,
            cross: 10,
        }
    }
}

impl FromStr for Mix {
    type Err = LoadError;

    fn from_str(text: &str) -> Result<Mix, LoadError> {
        let bad = || LoadError::Mix(text.to_string());
        let mut mix = Mix {
            new: 0,
            cancel: 0,
            replace: 0,
            cross: 0,
        };
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            let value: u32 = value.trim().parse().map_err(|_| bad())?;
            match key.trim() {
                "new" => mix.new = value,
                "cancel" => mix.cancel = value,
                "replace" => mix.replace = value,
                "cross" => mix.cross = value,
                _ => return Err(bad()),
            }
        }
        if mix.total() == 0 {
            return Err(bad());
        }
        Ok(mix)
    }
}

impl Mix {
    fn total(&self) -> u32 {
        self.new + self.cancel + self.replace + self.cross
    }

    /// The kind for a uniform draw `r`.
    fn pick(&self, r: u64) -> Kind {
        let mut r = (r % u64::from(self.total())) as u32;
        for (weight, kind) in [
            (self.new, Kind::New),
            (self.cancel, Kind::Cancel),
            (self.replace, Kind::Replace),
        ] {
            if r < weight {
                return kind;
            }
            r -= weight;
        }
        Kind::Cross
    }
}

/// A small deterministic generator (xorshift64*): runs are repeatable and no dependency is
/// needed for picking order kinds and prices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (zero is remapped, xorshift cannot leave it).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next draw.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The schedule: how much load, for how long.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Concurrent sessions, each with its own connection.
    pub sessions: usize,
    /// Orders per second across all sessions.
    pub rate_per_s: u64,
    /// How long orders are scheduled for.
    pub duration: Duration,
    /// The order kinds.
    pub mix: Mix,
    /// How long to wait for the last answers after the schedule ends before calling an order
    /// missing.
    pub drain: Duration,
    /// Throughput mode: the orders of the schedule (`rate_per_s` × `duration`) are sent as fast
    /// as the venue answers them, each session keeping [`constants::BENCH_THROUGHPUT_WINDOW`]
    /// in flight, instead of at their scheduled times; latency is then from the actual send.
    pub unpaced: bool,
}

impl Plan {
    /// Time between two sends of one session; sessions are staggered evenly inside it.
    fn interval_ns(&self) -> u64 {
        (self.sessions as u64 * 1_000_000_000) / self.rate_per_s.max(1)
    }

    /// Orders each session sends.
    fn orders_per_session(&self) -> u64 {
        let duration_ns = self.duration.as_nanos() as u64;
        duration_ns.div_ceil(self.interval_ns().max(1))
    }

    /// When order `k` of session `n` is meant to be sent, in ns after the start.
    fn intended_ns(&self, n: usize, k: u64) -> u64 {
        let interval = self.interval_ns();
        n as u64 * interval / self.sessions.max(1) as u64 + k * interval
    }
}

/// Something read from a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An answer to order `k`; `terminal` answers (New, Replaced, Rejected, CancelReject) must
    /// come once per order, so a second one is a duplicate.
    Answer {
        /// The order's index in its session.
        k: u64,
        /// Whether a second such answer would be a duplicate.
        terminal: bool,
    },
    /// An answer seen twice (same ExecID).
    Duplicate,
    /// An order or cancel refused (ExecType Rejected, OrderCancelReject, a session or business
    /// reject): still an answer, but many of them mean the load is not what the mix says.
    Refused,
    /// An inbound sequence number skipped.
    Gap,
    /// The acceptor logged us out.
    Logout,
}

/// The sending half of a session's connection.
pub trait Wire: Send {
    /// Sends order `k` of the given kind.
    fn send(&mut self, k: u64, kind: Kind) -> std::io::Result<()>;
}

/// The receiving half of a session's connection.
pub trait Tap: Send {
    /// Blocks until something arrives or a short timeout passes, appending what was read.
    /// `Err` means the connection is gone.
    fn read(&mut self, events: &mut Vec<Event>) -> std::io::Result<()>;
}

/// What one measurement produced.
#[derive(Clone, Debug)]
pub struct LoadResult {
    /// Latency of every answered order, µs from intended send time to first answer.
    pub histogram: Histogram<u64>,
    /// (intended send time in µs after the start, latency in µs), ordered by time: for the
    /// time series and for the worst latency around switch and kill events.
    pub samples: Vec<(u64, u64)>,
    /// Orders sent.
    pub orders: u64,
    /// Orders answered at least once.
    pub answered: u64,
    /// Orders never answered.
    pub missing: u64,
    /// Answers that came twice.
    pub duplicates: u64,
    /// Orders and cancels the acceptor refused.
    pub refused: u64,
    /// Inbound sequence gaps.
    pub gaps: u64,
    /// Sessions that lost their connection or were logged out.
    pub disconnects: u64,
    /// From the first intended send to the last answer.
    pub elapsed: Duration,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Orders sent so far.
    pub sent: AtomicU64,
    /// Orders answered so far.
    pub answered: AtomicU64,
}

/// A session's connection, split so writing and reading never wait for each other.
pub type Connection = (Box<dyn Wire>, Box<dyn Tap>);

/// Runs `plan`: opens every session with `connect` (index 0..sessions), then sends on the
/// schedule from `start` (which must leave time to connect) and gathers what came back.
pub fn run(
    plan: &Plan,
    start: Instant,
    connect: &dyn Fn(usize) -> Result<Connection, LoadError>,
    progress: &Arc<Progress>,
) -> Result<LoadResult, LoadError> {
    let mut connections = Vec::with_capacity(plan.sessions);
    for n in 0..plan.sessions {
        connections.push(connect(n)?);
    }
    let orders_max = plan.orders_per_session();
    let mut handles = Vec::new();
    for (n, (wire, tap)) in connections.into_iter().enumerate() {
        let plan = plan.clone();
        let progress = progress.clone();
        let sent = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let clock = Arc::new(SendClock::new(&plan, orders_max));
        let writer = {
            let (plan, sent, done, progress, clock) = (
                plan.clone(),
                sent.clone(),
                done.clone(),
                progress.clone(),
                clock.clone(),
            );
            std::thread::spawn(move || {
                write_loop(n, &plan, start, wire, &sent, &done, &progress, &clock)
            })
        };
        let reader = std::thread::spawn(move || {
            read_loop(n, &plan, start, tap, &sent, &done, &progress, &clock)
        });
        handles.push((writer, reader));
    }
    let mut result = LoadResult {
        histogram: Histogram::new_with_bounds(1, constants::BENCH_LATENCY_MAX_US, 3)
            .expect("valid histogram bounds"),
        samples: Vec::new(),
        orders: 0,
        answered: 0,
        missing: 0,
        duplicates: 0,
        refused: 0,
        gaps: 0,
        disconnects: 0,
        elapsed: Duration::ZERO,
    };
    let mut end = start;
    for (writer, reader) in handles {
        let write_failed = writer.join().map_err(|_| LoadError::Panicked)?;
        let session = reader.join().map_err(|_| LoadError::Panicked)?;
        result
            .histogram
            .add(&session.histogram)
            .expect("same bounds");
        result.samples.extend_from_slice(&session.samples);
        result.orders += session.orders;
        result.answered += session.answered;
        result.missing += session.orders.saturating_sub(session.answered);
        result.duplicates += session.duplicates;
        result.refused += session.refused;
        result.gaps += session.gaps;
        result.disconnects += u64::from(session.disconnected || write_failed);
        end = end.max(session.last_answer);
    }
    result.samples.sort_unstable();
    result.elapsed = end.saturating_duration_since(start);
    Ok(result)
}

/// When each order of one session was meant to be sent, and how many were answered: what the
/// writer and the reader of a session share.
struct SendClock {
    /// Throughput mode: per order, ns after the start it was actually sent (the schedule's time
    /// otherwise, computed, so this is empty).
    sent_ns: Vec<AtomicU64>,
    /// Orders answered, for the throughput window.
    answered: AtomicU64,
}

impl SendClock {
    fn new(plan: &Plan, orders_max: u64) -> SendClock {
        let len = if plan.unpaced { orders_max as usize } else { 0 };
        SendClock {
            sent_ns: (0..len).map(|_| AtomicU64::new(0)).collect(),
            answered: AtomicU64::new(0),
        }
    }

    /// When order `k` of session `n` counts as sent, ns after the start.
    fn intended_ns(&self, plan: &Plan, n: usize, k: u64) -> u64 {
        match self.sent_ns.get(k as usize) {
            Some(at) => at.load(Ordering::Acquire),
            None => plan.intended_ns(n, k),
        }
    }
}

/// Sends on the schedule (or, unpaced, as fast as the window allows); returns whether the
/// connection failed.
#[allow(clippy::too_many_arguments)]
fn write_loop(
    n: usize,
    plan: &Plan,
    start: Instant,
    mut wire: Box<dyn Wire>,
    sent: &AtomicU64,
    done: &AtomicBool,
    progress: &Progress,
    clock: &SendClock,
) -> bool {
    // Sleeps end up to the thread's timer slack (50 µs by default) late, and that lateness
    // would be counted as latency of whatever is measured; 1 ns makes the schedule precise.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let mut rng = Rng::new(n as u64 + 1);
    let mut failed = false;
    if plan.unpaced {
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
    }
    for k in 0..plan.orders_per_session() {
        if plan.unpaced {
            while k >= clock.answered.load(Ordering::Acquire) + constants::BENCH_THROUGHPUT_WINDOW
                && !done.load(Ordering::Acquire)
            {
                std::thread::sleep(Duration::from_micros(constants::BENCH_THROUGHPUT_WAIT_US));
            }
            if let Some(at) = clock.sent_ns.get(k as usize) {
                let ns = Instant::now().saturating_duration_since(start).as_nanos() as u64;
                at.store(ns, Ordering::Release);
            }
        } else {
            let intended = start + Duration::from_nanos(plan.intended_ns(n, k));
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
        }
        if wire.send(k, plan.mix.pick(rng.next_u64())).is_err() {
            failed = true;
            break;
        }
        sent.store(k + 1, Ordering::Release);
        progress.sent.fetch_add(1, Ordering::Relaxed);
    }
    done.store(true, Ordering::Release);
    failed
}

/// What one session's reader saw.
struct SessionTally {
    histogram: Histogram<u64>,
    samples: Vec<(u64, u64)>,
    orders: u64,
    answered: u64,
    duplicates: u64,
    refused: u64,
    gaps: u64,
    disconnected: bool,
    last_answer: Instant,
}

#[allow(clippy::too_many_arguments)]
fn read_loop(
    n: usize,
    plan: &Plan,
    start: Instant,
    mut tap: Box<dyn Tap>,
    sent: &AtomicU64,
    done: &AtomicBool,
    progress: &Progress,
    clock: &SendClock,
) -> SessionTally {
    let orders_max = plan.orders_per_session();
    let mut tally = SessionTally {
        histogram: Histogram::new_with_bounds(1, constants::BENCH_LATENCY_MAX_US, 3)
            .expect("valid histogram bounds"),
        samples: Vec::with_capacity(orders_max as usize),
        orders: 0,
        answered: 0,
        duplicates: 0,
        refused: 0,
        gaps: 0,
        disconnected: false,
        last_answer: start,
    };
    // Per order: 0 unanswered, 1 answered, 2 answered terminally.
    let mut seen = vec![0u8; orders_max as usize];
    let mut events = Vec::new();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if done.load(Ordering::Acquire) {
            let total = sent.load(Ordering::Acquire);
            if tally.answered >= total {
                break;
            }
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + plan.drain);
            if Instant::now() > deadline {
                break;
            }
        }
        events.clear();
        let result = tap.read(&mut events);
        let now = Instant::now();
        for event in &events {
            match *event {
                Event::Answer { k, terminal } => {
                    let Some(state) = seen.get_mut(k as usize) else {
                        continue;
                    };
                    if *state == 0 {
                        let intended_us = clock.intended_ns(plan, n, k) / 1_000;
                        let latency_us = (now.saturating_duration_since(start).as_nanos() as u64
                            / 1_000)
                            .saturating_sub(intended_us)
                            .max(1);
                        let _ = tally.histogram.record(latency_us);
                        tally.samples.push((intended_us, latency_us));
                        tally.answered += 1;
                        clock.answered.store(tally.answered, Ordering::Release);
                        tally.last_answer = now;
                        progress.answered.fetch_add(1, Ordering::Relaxed);
                        *state = 1;
                    }
                    if terminal {
                        if *state == 2 {
                            tally.duplicates += 1;
                        }
                        *state = 2;
                    }
                }
                Event::Duplicate => tally.duplicates += 1,
                Event::Refused => tally.refused += 1,
                Event::Gap => tally.gaps += 1,
                Event::Logout => tally.disconnected = true,
            }
        }
        if result.is_err() || tally.disconnected {
            tally.disconnected = true;
            break;
        }
    }
    tally.orders = sent.load(Ordering::Acquire);
    tally
}

/// How to reach a FIX acceptor.
#[derive(Clone, Debug)]
pub struct FixTarget {
    /// The acceptor's address.
    pub addr: SocketAddr,
    /// SenderCompID of session `n` is this prefix followed by n+1 (TRADER1, TRADER2...).
    pub sender_prefix: String,
    /// The acceptor's CompID.
    pub target_comp_id: String,
    /// The instrument traded.
    pub symbol: String,
}

/// Opens session `n` against `target`: connect, Logon with sequence reset, then split.
pub fn connect_fix(target: &FixTarget, n: usize) -> Result<Connection, LoadError> {
    let sender = format!("{}{}", target.sender_prefix, n + 1);
    let stream = TcpStream::connect_timeout(&target.addr, Duration::from_secs(5))
        .map_err(io(format!("connecting {sender} to {}", target.addr)))?;
    stream
        .set_nodelay(true)
        .map_err(io("setting TCP_NODELAY"))?;
    let read_half = stream.try_clone().map_err(io("cloning the socket"))?;
    let mut wire = FixWire {
        stream,
        encoder: Encoder::new("FIX.4.4"),
        sender: sender.clone(),
        target: target.target_comp_id.clone(),
        symbol: target.symbol.clone(),
        prefix: format!("{}-", n + 1),
        seq_num_next: 1,
        resting: VecDeque::new(),
        rng: Rng::new(0xBA70 + n as u64),
    };
    wire.logon()
        .map_err(io(format!("sending the Logon of {sender}")))?;
    let mut tap = FixTap {
        stream: read_half,
        decoder: Decoder::new(constants::BODY_LENGTH_MAX),
        recv: Vec::with_capacity(constants::READ_CHUNK),
        chunk: vec![0; constants::READ_CHUNK],
        prefix: format!("{}-", n + 1).into_bytes(),
        seq_num_next_in: 1,
        exec_ids: HashSet::new(),
    };
    tap.await_logon(&sender)?;
    tap.stream
        .set_read_timeout(Some(Duration::from_millis(constants::BENCH_READ_POLL_MS)))
        .map_err(io("setting the read timeout"))?;
    Ok((Box::new(wire), Box::new(tap)))
}

/// Builds and writes orders for one session.
struct FixWire {
    stream: TcpStream,
    encoder: Encoder,
    sender: String,
    target: String,
    symbol: String,
    /// ClOrdIDs are `<session>-<k>`, so answers map back to the order without a lookup table.
    prefix: String,
    seq_num_next: u64,
    /// Own orders sent as resting and not yet cancelled or replaced, oldest first, with side.
    resting: VecDeque<(u64, u8)>,
    rng: Rng,
}

impl FixWire {
    fn header(&mut self, msg_type: &[u8]) {
        let seq = self.seq_num_next;
        self.seq_num_next += 1;
        self.encoder
            .start(msg_type)
            .str(tags::SENDER_COMP_ID, &self.sender)
            .str(tags::TARGET_COMP_ID, &self.target)
            .uint(tags::MSG_SEQ_NUM, seq)
            .timestamp(tags::SENDING_TIME, Timestamp::now());
    }

    fn logon(&mut self) -> std::io::Result<()> {
        self.header(msg_type::LOGON);
        self.encoder
            .uint(tags::ENCRYPT_METHOD, 0)
            .uint(tags::HEART_BT_INT, 30)
            .bool(tags::RESET_SEQ_NUM_FLAG, true);
        self.stream.write_all(self.encoder.finish())
    }

    /// A resting price: buys below 99.10, sells above 100.90, so they never meet each other.
    fn resting_price(&mut self, side: u8) -> String {
        let tick = self.rng.next_u64() % 10;
        if side == b'1' {
            format!("99.0{tick}")
        } else {
            format!("101.0{tick}")
        }
    }
}

impl Wire for FixWire {
    fn send(&mut self, k: u64, kind: Kind) -> std::io::Result<()> {
        let id = format!("{}{k}", self.prefix);
        // Cancels and replaces need a resting order; before there is one they become new orders.
        let kind = match kind {
            Kind::Cancel | Kind::Replace if self.resting.len() < 2 => Kind::New,
            other => other,
        };
        let side = if self.rng.next_u64().is_multiple_of(2) {
            b'1'
        } else {
            b'2'
        };
        match kind {
            Kind::New => {
                let price = self.resting_price(side);
                self.header(msg_type::NEW_ORDER_SINGLE);
                self.encoder
                    .str(tags::CL_ORD_ID, &id)
                    .str(55, &self.symbol)
                    .char(54, side)
                    .timestamp(60, Timestamp::now())
                    .uint(38, 10)
                    .char(40, b'2')
                    .str(44, &price);
                self.resting.push_back((k, side));
            }
            Kind::Cross => {
                let price = if side == b'1' { "102.00" } else { "98.00" };
                self.header(msg_type::NEW_ORDER_SINGLE);
                self.encoder
                    .str(tags::CL_ORD_ID, &id)
                    .str(55, &self.symbol)
                    .char(54, side)
                    .timestamp(60, Timestamp::now())
                    .uint(38, 10)
                    .char(40, b'2')
                    .str(44, price)
                    .char(59, b'3');
            }
            Kind::Cancel => {
                let (orig, orig_side) = self.resting.pop_front().unwrap_or((0, side));
                self.header(msg_type::ORDER_CANCEL_REQUEST);
                self.encoder
                    .str(41, &format!("{}{orig}", self.prefix))
                    .str(tags::CL_ORD_ID, &id)
                    .str(55, &self.symbol)
                    .char(54, orig_side)
                    .timestamp(60, Timestamp::now());
            }
            Kind::Replace => {
                let (orig, orig_side) = self.resting.pop_front().unwrap_or((0, side));
                let price = self.resting_price(orig_side);
                self.header(msg_type::ORDER_CANCEL_REPLACE_REQUEST);
                self.encoder
                    .str(41, &format!("{}{orig}", self.prefix))
                    .str(tags::CL_ORD_ID, &id)
                    .str(55, &self.symbol)
                    .char(54, orig_side)
                    .timestamp(60, Timestamp::now())
                    .uint(38, 20)
                    .char(40, b'2')
                    .str(44, &price);
                self.resting.push_back((k, orig_side));
            }
        }
        self.stream.write_all(self.encoder.finish())
    }
}

/// Reads and classifies the acceptor's messages for one session.
struct FixTap {
    stream: TcpStream,
    decoder: Decoder,
    recv: Vec<u8>,
    chunk: Vec<u8>,
    prefix: Vec<u8>,
    seq_num_next_in: u64,
    /// ExecIDs seen: each output has one identity, so seeing one twice is a duplicate delivery.
    exec_ids: HashSet<Vec<u8>>,
}

impl FixTap {
    fn await_logon(&mut self, sender: &str) -> Result<(), LoadError> {
        let failed = |why: &str| LoadError::Logon(sender.to_string(), why.to_string());
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io("setting the read timeout"))?;
        loop {
            match self.next_message() {
                Ok(Some(message)) => {
                    self.track(&message);
                    match message.msg_type() {
                        msg_type::LOGON => return Ok(()),
                        msg_type::LOGOUT => {
                            let text = message.get(58).unwrap_or_default();
                            return Err(failed(&String::from_utf8_lossy(text)));
                        }
                        _ => {}
                    }
                }
                Ok(None) => {
                    let n = self
                        .stream
                        .read(&mut self.chunk)
                        .map_err(|e| failed(&e.to_string()))?;
                    if n == 0 {
                        return Err(failed("connection closed"));
                    }
                    self.recv.extend_from_slice(&self.chunk[..n]);
                }
                Err(()) => return Err(failed("garbled answer")),
            }
        }
    }

    /// The next whole message already buffered; `Err` on bytes that are not FIX.
    fn next_message(&mut self) -> Result<Option<Message>, ()> {
        match self.decoder.frame(&self.recv) {
            Frame::Complete(len) => {
                let message = Message::parse(&self.recv[..len]).map_err(|_| ())?;
                self.recv.drain(..len);
                Ok(Some(message))
            }
            Frame::Incomplete => Ok(None),
            Frame::Garbled { .. } => Err(()),
        }
    }

    /// Keeps the inbound sequence; true when a number was skipped.
    fn track(&mut self, message: &Message) -> bool {
        let seq = message.uint(tags::MSG_SEQ_NUM).unwrap_or(0);
        if message.msg_type() == msg_type::SEQUENCE_RESET {
            if let Ok(new_seq) = message.uint(tags::NEW_SEQ_NO) {
                self.seq_num_next_in = self.seq_num_next_in.max(new_seq);
            }
            false
        } else if seq == self.seq_num_next_in {
            self.seq_num_next_in += 1;
            false
        } else if seq > self.seq_num_next_in {
            self.seq_num_next_in = seq + 1;
            true
        } else {
            false
        }
    }

    /// The order index in a ClOrdID of ours.
    fn order_index(&self, cl_ord_id: &[u8]) -> Option<u64> {
        let rest = cl_ord_id.strip_prefix(self.prefix.as_slice())?;
        crate::fix::codec::parse_uint(rest)
    }

    fn classify(&mut self, message: &Message, events: &mut Vec<Event>) {
        if self.track(message) {
            events.push(Event::Gap);
        }
        let terminal = match message.msg_type() {
            msg_type::EXECUTION_REPORT => {
                let exec_id = message.get(17).unwrap_or_default();
                if !self.exec_ids.insert(exec_id.to_vec()) {
                    events.push(Event::Duplicate);
                    return;
                }
                if message.get(150) == Some(b"8") {
                    events.push(Event::Refused);
                }
                matches!(message.get(150), Some(b"0" | b"5" | b"8"))
            }
            msg_type::ORDER_CANCEL_REJECT => {
                events.push(Event::Refused);
                true
            }
            msg_type::BUSINESS_MESSAGE_REJECT | msg_type::REJECT => {
                events.push(Event::Refused);
                return;
            }
            msg_type::LOGOUT => {
                events.push(Event::Logout);
                return;
            }
            _ => return,
        };
        if let Some(k) = message
            .get(tags::CL_ORD_ID)
            .and_then(|id| self.order_index(id))
        {
            events.push(Event::Answer { k, terminal });
        }
    }
}

impl Tap for FixTap {
    fn read(&mut self, events: &mut Vec<Event>) -> std::io::Result<()> {
        match self.stream.read(&mut self.chunk) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => self.recv.extend_from_slice(&self.chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        loop {
            match self.next_message() {
                Ok(Some(message)) => self.classify(&message, events),
                Ok(None) => return Ok(()),
                Err(()) => return Err(std::io::ErrorKind::InvalidData.into()),
            }
        }
    }
}

/// Bytes of a typical NewOrderSingle from this generator: the echo baseline sends payloads of
/// this size so both measurements move the same number of bytes per request.
pub fn order_size_bytes() -> usize {
    let mut encoder = Encoder::new("FIX.4.4");
    encoder
        .start(msg_type::NEW_ORDER_SINGLE)
        .str(tags::SENDER_COMP_ID, "TRADER1")
        .str(tags::TARGET_COMP_ID, "BATON")
        .uint(tags::MSG_SEQ_NUM, 12_345)
        .timestamp(tags::SENDING_TIME, Timestamp::now())
        .str(tags::CL_ORD_ID, "1-12345")
        .str(55, "AAPL")
        .char(54, b'1')
        .timestamp(60, Timestamp::now())
        .uint(38, 10)
        .char(40, b'2')
        .str(44, "99.05");
    encoder.finish().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_picks_by_weight() {
        let mix: Mix = "new=2,cancel=1,replace=0,cross=1".parse().expect("mix");
        let kinds: Vec<Kind> = (0..4).map(|r| mix.pick(r)).collect();
        assert_eq!(kinds, [Kind::New, Kind::New, Kind::Cancel, Kind::Cross]);
        assert!("new=1,sell=2".parse::<Mix>().is_err());
        assert!("new=0".parse::<Mix>().is_err());
        assert!("new".parse::<Mix>().is_err());
    }

    #[test]
    fn schedule_spreads_sessions_evenly() {
        let plan = Plan {
            sessions: 4,
            rate_per_s: 1_000,
            duration: Duration::from_secs(1),
            mix: Mix::default(),
            drain: Duration::ZERO,
            unpaced: false,
        };
        // 1 000/s over 4 sessions: each sends every 4 ms, offset by 1 ms from the previous.
        assert_eq!(plan.orders_per_session(), 250);
        assert_eq!(plan.intended_ns(0, 1), 4_000_000);
        assert_eq!(plan.intended_ns(3, 0), 3_000_000);
        let plan = &plan;
        let mut all: Vec<u64> = (0..4)
            .flat_map(|n| (0..250).map(move |k| plan.intended_ns(n, k)))
            .collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[1] - w[0] == 1_000_000));
    }
}
