//! An open-loop load generator: sessions send on a fixed schedule whatever the answers do, and
//! each order's latency is measured from the time the schedule meant to send it, so time spent
//! queued behind a slow answer is counted instead of hidden (coordinated omission).
//!
//! Sending and reading are separate threads. The blocking [`super::initiator::Initiator`]
//! cannot drive a schedule: its receive timeout is a socket option that Linux rounds up to whole
//! scheduler ticks (a 100 µs timeout blocks ~8 ms on a HZ=250 kernel), so a thread waiting for
//! answers would miss its send times. In an open-loop run one writer thread sends every
//! session's orders from one merged schedule, sleeping until the next is due, and one reader
//! thread waits on every session's socket (epoll) and stamps each answer on arrival: the client
//! then costs two threads' wake-ups however many sessions it drives, not two per session, which
//! on a small machine was CPU taken from the venue being measured. Ping-pong and throughput
//! runs, whose sends follow each session's own answers, give each session a writer and a reader
//! that blocks in `read`.
//!
//! The same machinery drives the echo baseline ([`super::echo`]) through the [`Wire`] and
//! [`Tap`] traits, so both measurements share threads, schedule and bookkeeping.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::poll::{self, Poller};
use crate::constants;
use crate::fix::codec::{Decoder, Encoder, Frame, Message, push_uint};
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
    /// Ping-pong mode: each session keeps exactly one order in flight and sends the next when
    /// the answer arrives, the way a client measuring one request at a time does; latency is
    /// from each actual send. The orders are still `rate_per_s` × `duration`.
    pub pingpong: bool,
    /// Orders per session answered but left out of the latency (histogram and samples): the
    /// warm-up a client measuring one request at a time discards.
    pub warmup_orders: u64,
}

impl Plan {
    /// Orders a session may have unanswered before its writer waits, when sends are unpaced.
    fn window(&self) -> u64 {
        if self.pingpong {
            1
        } else {
            constants::BENCH_THROUGHPUT_WINDOW
        }
    }

    /// Whether sends follow answers instead of the schedule.
    fn follows_answers(&self) -> bool {
        self.unpaced || self.pingpong
    }

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
    /// A message marked PossDup arrived: the acceptor resent it, after our ResendRequest.
    Resent,
    /// The acceptor asked us to resend (a gap in what it received from us) and we did.
    ResendServed,
    /// Bytes that were not a whole frame were skipped (a frame cut by a dying process).
    Garbled,
}

/// Something that happened to a session at a moment of the run, kept with its time so the
/// report can count them per event (a gateway kill, an upgrade) instead of only per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Incident {
    /// The session's connection was lost or it was logged out.
    Disconnect,
    /// An inbound sequence number skipped (we asked for a resend).
    Gap,
    /// A message resent to us (PossDup).
    Resent,
    /// A ResendRequest of the acceptor's that we answered.
    ResendServed,
    /// Bytes skipped that were not a whole frame.
    Garbled,
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

    /// The socket this tap reads, so one reader thread can wait on every session's socket at
    /// once (open-loop runs); it stays open as long as the tap. `None`, the default, means the
    /// tap can only be read by blocking in [`Tap::read`]: the run then gives each session a
    /// reader thread of its own.
    fn socket(&self) -> Option<RawFd> {
        None
    }

    /// Reads what has arrived without waiting, once [`Tap::socket`] was reported readable,
    /// appending what was read: everything the socket holds, so one wake-up serves a burst of
    /// answers. `Err` means the connection is gone (after appending what came before the end).
    /// A tap that has a socket must override this; the default blocks in [`Tap::read`].
    fn read_ready(&mut self, events: &mut Vec<Event>) -> std::io::Result<()> {
        self.read(events)
    }
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
    /// (µs after the start, what happened), ordered by time.
    pub incidents: Vec<(u64, Incident)>,
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
///
/// Open-loop runs whose every session has a socket to wait on (every real connection) are
/// driven by two threads whatever the session count: one writer sending every session's orders
/// from one merged schedule, and one reader waiting on all their sockets. A thread pair per
/// session would cost the client a wake-up per order on each side, CPU taken from the venue it
/// measures. Ping-pong and throughput runs, whose sends follow each session's answers, keep a
/// writer and a reader per session.
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
    let merged =
        !plan.follows_answers() && connections.iter().all(|(_, tap)| tap.socket().is_some());
    let sessions = if merged {
        run_merged(plan, start, connections, progress)?
    } else {
        run_per_session(plan, start, connections, progress)?
    };
    Ok(gather(start, sessions))
}

/// What one session came to: whether its writer's connection failed, and what its reader saw.
type SessionOutcome = (bool, SessionTally);

/// A writer and a reader thread per session: the sends of ping-pong and throughput runs follow
/// that session's own answers, and a tap without a socket can only be read by blocking.
fn run_per_session(
    plan: &Plan,
    start: Instant,
    connections: Vec<Connection>,
    progress: &Arc<Progress>,
) -> Result<Vec<SessionOutcome>, LoadError> {
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
    let mut sessions = Vec::with_capacity(handles.len());
    for (writer, reader) in handles {
        let write_failed = writer.join().map_err(|_| LoadError::Panicked)?;
        let tally = reader.join().map_err(|_| LoadError::Panicked)?;
        sessions.push((write_failed, tally));
    }
    Ok(sessions)
}

/// One writer thread for every session's orders ([`write_merged`]) and one reader for every
/// session's answers ([`MergedReader`], on the calling thread).
fn run_merged(
    plan: &Plan,
    start: Instant,
    connections: Vec<Connection>,
    progress: &Arc<Progress>,
) -> Result<Vec<SessionOutcome>, LoadError> {
    let (wires, taps): (Vec<_>, Vec<_>) = connections.into_iter().unzip();
    let shared = Shared::new(plan.sessions);
    let mut reader = MergedReader::new(plan, start, taps, &shared, progress)
        .map_err(io("watching the sessions' sockets"))?;
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_merged(plan, start, wires, &shared, progress));
        let read = reader.run();
        if read.is_err() {
            // Nothing sent from now on would be counted.
            shared.stop.store(true, Ordering::Release);
        }
        let write_failed = writer.join().map_err(|_| LoadError::Panicked)?;
        let tallies = read.map_err(io("waiting for answers"))?;
        Ok(write_failed.into_iter().zip(tallies).collect())
    })
}

/// Adds the sessions' outcomes up into the run's result.
fn gather(start: Instant, sessions: Vec<SessionOutcome>) -> LoadResult {
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
        incidents: Vec::new(),
    };
    let mut end = start;
    for (write_failed, session) in sessions {
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
        result.incidents.extend_from_slice(&session.incidents);
        if write_failed && !session.disconnected {
            result
                .incidents
                .push((session.last_answer_us, Incident::Disconnect));
        }
        end = end.max(session.last_answer);
    }
    result.samples.sort_unstable();
    result.incidents.sort_unstable();
    result.elapsed = end.saturating_duration_since(start);
    result
}
/// When each order of one session was meant to be sent, and how many were answered: what the
/// writer and the reader of a session share.
struct SendClock {
    /// Throughput mode: per order, ns after the start it was actually sent (the schedule's time
    /// otherwise, computed, so this is empty).
    sent_ns: Vec<AtomicU64>,
    /// Orders answered, for the throughput window.
    answered: AtomicU64,
    /// The writer thread, for the reader to wake in ping-pong mode as soon as an answer arrives
    /// (a sleep-and-poll wait would add its period to every round trip's gap), and in throughput
    /// mode once its window has room again.
    writer: std::sync::OnceLock<std::thread::Thread>,
    /// Throughput mode: the count of answers the writer sleeps until, `u64::MAX` while it is
    /// not waiting. The reader wakes it once `answered` reaches this, so a full window costs
    /// the client one wake-up per [`constants::BENCH_THROUGHPUT_REFILL`] answers instead of a
    /// polling sleep every few µs (which was most of the client's CPU per order).
    wake_at: AtomicU64,
    /// Set when the reader has stopped (disconnect, drain over): no answer will wake the writer
    /// any more, so it stops waiting for room.
    reader_done: AtomicBool,
}

impl SendClock {
    fn new(plan: &Plan, orders_max: u64) -> SendClock {
        let len = if plan.follows_answers() {
            orders_max as usize
        } else {
            0
        };
        SendClock {
            sent_ns: (0..len).map(|_| AtomicU64::new(0)).collect(),
            answered: AtomicU64::new(0),
            writer: std::sync::OnceLock::new(),
            wake_at: AtomicU64::new(u64::MAX),
            reader_done: AtomicBool::new(false),
        }
    }

    /// Throughput mode: blocks the writer until order `k` fits in the window. Once the window is
    /// full it waits for `refill` orders of room, so it sleeps and wakes once per refill rather
    /// than once per answer. Returns false if the reader stopped, so no room will come.
    fn wait_for_room(&self, k: u64, window: u64, refill: u64) -> bool {
        if k < self.answered.load(Ordering::Acquire) + window {
            return true;
        }
        // k >= answered + window >= window, so this does not underflow; refill <= window keeps
        // it at most k: only answers to orders already sent are waited for.
        let wake_at = k - window + refill.clamp(1, window);
        // Announce, then look: the reader stores `answered` and then reads `wake_at`, so with
        // sequentially consistent order on both sides one of the two sees the other, and an
        // answer arriving between the look and the park leaves the unpark token set.
        self.wake_at.store(wake_at, Ordering::SeqCst);
        let room = loop {
            if self.answered.load(Ordering::SeqCst) >= wake_at {
                break true;
            }
            if self.reader_done.load(Ordering::SeqCst) {
                break false;
            }
            std::thread::park_timeout(Duration::from_millis(constants::BENCH_THROUGHPUT_WAIT_MS));
        };
        self.wake_at.store(u64::MAX, Ordering::SeqCst);
        room
    }

    /// The reader's side of [`Self::wait_for_room`]: called after `answered` rose to `answered`.
    fn answered_up_to(&self, answered: u64) {
        if answered >= self.wake_at.load(Ordering::SeqCst)
            && let Some(writer) = self.writer.get()
        {
            writer.unpark();
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
    precise_sleeps();
    let mut rng = Rng::new(n as u64 + 1);
    let mut failed = false;
    let _ = clock.writer.set(std::thread::current());
    if plan.follows_answers() {
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
    }
    let window = plan.window();
    for k in 0..plan.orders_per_session() {
        if plan.pingpong {
            // Woken by the reader at the answer; an answer that never comes costs one drain
            // period, then the next order goes (the lost one is counted missing).
            let deadline = Instant::now() + plan.drain;
            while k >= clock.answered.load(Ordering::Acquire) + window {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::park_timeout(deadline - now);
            }
        } else if plan.unpaced
            && !clock.wait_for_room(k, window, constants::BENCH_THROUGHPUT_REFILL)
        {
            // The reader is gone (its connection failed): nothing more can be answered.
            break;
        }
        if plan.follows_answers() {
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
    /// `last_answer` in µs after the start.
    last_answer_us: u64,
    incidents: Vec<(u64, Incident)>,
}

/// One session's answers as they are counted, by a reader thread of its own or by the reader of
/// every session alike: both go through [`Book::absorb`], so the counts mean the same.
struct Book {
    /// The session's index.
    n: usize,
    tally: SessionTally,
    /// Per order: 0 unanswered, 1 answered, 2 answered terminally.
    seen: Vec<u8>,
}

impl Book {
    fn new(n: usize, plan: &Plan, start: Instant) -> Book {
        let orders_max = plan.orders_per_session();
        Book {
            n,
            tally: SessionTally {
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
                last_answer_us: 0,
                incidents: Vec::new(),
            },
            seen: vec![0u8; orders_max as usize],
        }
    }

    /// Counts what one read brought, read at `now`. `clock` is the session's own writer's, in
    /// the runs whose sends follow answers (its send times, its window to wake); without it an
    /// order's latency is from the schedule's time.
    fn absorb(
        &mut self,
        events: &[Event],
        now: Instant,
        plan: &Plan,
        start: Instant,
        progress: &Progress,
        clock: Option<&SendClock>,
    ) {
        let tally = &mut self.tally;
        let now_us = now.saturating_duration_since(start).as_micros() as u64;
        for event in events {
            match *event {
                Event::Answer { k, terminal } => {
                    let Some(state) = self.seen.get_mut(k as usize) else {
                        continue;
                    };
                    if *state == 0 {
                        let intended_ns = match clock {
                            Some(clock) => clock.intended_ns(plan, self.n, k),
                            None => plan.intended_ns(self.n, k),
                        };
                        let intended_us = intended_ns / 1_000;
                        let latency_us = (now.saturating_duration_since(start).as_nanos() as u64
                            / 1_000)
                            .saturating_sub(intended_us)
                            .max(1);
                        if k >= plan.warmup_orders {
                            let _ = tally.histogram.record(latency_us);
                            tally.samples.push((intended_us, latency_us));
                        }
                        tally.answered += 1;
                        if let Some(clock) = clock {
                            clock.answered.store(tally.answered, Ordering::SeqCst);
                            if plan.pingpong
                                && let Some(writer) = clock.writer.get()
                            {
                                writer.unpark();
                            } else if plan.unpaced {
                                clock.answered_up_to(tally.answered);
                            }
                        }
                        tally.last_answer = now;
                        tally.last_answer_us = now_us;
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
                Event::Gap => {
                    tally.gaps += 1;
                    tally.incidents.push((now_us, Incident::Gap));
                }
                Event::Logout => tally.disconnected = true,
                Event::Resent => tally.incidents.push((now_us, Incident::Resent)),
                Event::ResendServed => tally.incidents.push((now_us, Incident::ResendServed)),
                Event::Garbled => tally.incidents.push((now_us, Incident::Garbled)),
            }
        }
    }

    /// Whether the session is over after a read that returned `read` at `now`: a failed read or
    /// a Logout ends it, counted once as a disconnect.
    fn lost(&mut self, read: &std::io::Result<()>, now: Instant, start: Instant) -> bool {
        if read.is_err() || self.tally.disconnected {
            let now_us = now.saturating_duration_since(start).as_micros() as u64;
            self.tally.disconnected = true;
            self.tally.incidents.push((now_us, Incident::Disconnect));
            return true;
        }
        false
    }
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
    let mut book = Book::new(n, plan, start);
    let mut events = Vec::new();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if done.load(Ordering::Acquire) {
            let total = sent.load(Ordering::Acquire);
            if book.tally.answered >= total {
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
        book.absorb(&events, now, plan, start, progress, Some(clock));
        if book.lost(&result, now, start) {
            break;
        }
    }
    clock.reader_done.store(true, Ordering::SeqCst);
    if let Some(writer) = clock.writer.get() {
        writer.unpark();
    }
    let mut tally = book.tally;
    tally.orders = sent.load(Ordering::Acquire);
    tally
}

/// Sleeps end up to the thread's timer slack (50 µs by default) late, and that lateness would
/// be counted as latency of whatever is measured; 1 ns makes a sending thread's schedule
/// precise.
fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// Every session's open-loop schedule merged into one sequence in intended-send-time order, so
/// one writer thread can send all sessions' orders: it sleeps until the earliest, then takes
/// every order already due. One entry per session (its next order) in a heap: taking an order
/// costs O(log sessions), and memory does not grow with the run's length.
struct Schedule {
    plan: Plan,
    orders_per_session: u64,
    /// (intended ns after the start, session, order index) of each session's next order; equal
    /// times go to the lower session first.
    next: BinaryHeap<Reverse<(u64, usize, u64)>>,
}

impl Schedule {
    fn new(plan: &Plan) -> Schedule {
        let orders_per_session = plan.orders_per_session();
        let next = if orders_per_session == 0 {
            BinaryHeap::new()
        } else {
            (0..plan.sessions)
                .map(|n| Reverse((plan.intended_ns(n, 0), n, 0)))
                .collect()
        };
        Schedule {
            plan: plan.clone(),
            orders_per_session,
            next,
        }
    }

    /// When the earliest order not yet taken is due, ns after the start; `None` once all were.
    fn next_due_ns(&self) -> Option<u64> {
        self.next.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The earliest order due at `now_ns` (intended at or before it), as (session, order
    /// index), taken off the schedule; `None` when none is due yet.
    fn pop_due(&mut self, now_ns: u64) -> Option<(usize, u64)> {
        let mut top = self.next.peek_mut()?;
        let Reverse((at, n, k)) = *top;
        if at > now_ns {
            return None;
        }
        if k + 1 < self.orders_per_session {
            *top = Reverse((self.plan.intended_ns(n, k + 1), n, k + 1));
        } else {
            std::collections::binary_heap::PeekMut::pop(top);
        }
        Some((n, k))
    }

    /// Takes session `n`'s remaining orders off (its connection failed).
    fn stop(&mut self, n: usize) {
        self.next.retain(|Reverse((_, session, _))| *session != n);
    }
}

/// What the merged writer tells the merged reader about each session.
struct Shared {
    /// Per session: orders sent so far.
    sent: Vec<AtomicU64>,
    /// Per session: the writer is through with it (every order sent, or its connection
    /// failed), so the reader drains its last answers and stops.
    done: Vec<AtomicBool>,
    /// Set when the reader failed: the writer stops, since nothing it sends would be counted.
    stop: AtomicBool,
}

impl Shared {
    fn new(sessions: usize) -> Shared {
        Shared {
            sent: (0..sessions).map(|_| AtomicU64::new(0)).collect(),
            done: (0..sessions).map(|_| AtomicBool::new(false)).collect(),
            stop: AtomicBool::new(false),
        }
    }
}

/// Sends every session's orders at their intended times from one thread: sleeps until the
/// earliest order is due, then sends every order already due (in intended-time order, none
/// before its time) before sleeping again, so a late wake-up costs one sleep, not one per
/// order. Lateness is not hidden: latency is measured from the intended time. Sends block as
/// before, so an acceptor that stops reading until a socket's buffer is full holds up every
/// session's next orders, not only its own, and all of them count the wait as latency; a
/// venue's sessions share one gateway, so that is the picture a stall gives anyway. Returns, per
/// session, whether its connection failed.
fn write_merged(
    plan: &Plan,
    start: Instant,
    mut wires: Vec<Box<dyn Wire>>,
    shared: &Shared,
    progress: &Progress,
) -> Vec<bool> {
    precise_sleeps();
    let mut rngs: Vec<Rng> = (0..wires.len()).map(|n| Rng::new(n as u64 + 1)).collect();
    let mut failed = vec![false; wires.len()];
    let orders_per_session = plan.orders_per_session();
    let mut schedule = Schedule::new(plan);
    while let Some(due_ns) = schedule.next_due_ns() {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let due = start + Duration::from_nanos(due_ns);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
            continue;
        }
        let now_ns = now.saturating_duration_since(start).as_nanos() as u64;
        while let Some((n, k)) = schedule.pop_due(now_ns) {
            let kind = plan.mix.pick(rngs[n].next_u64());
            if wires[n].send(k, kind).is_err() {
                failed[n] = true;
                schedule.stop(n);
                shared.done[n].store(true, Ordering::Release);
                continue;
            }
            shared.sent[n].store(k + 1, Ordering::Release);
            progress.sent.fetch_add(1, Ordering::Relaxed);
            if k + 1 >= orders_per_session {
                shared.done[n].store(true, Ordering::Release);
            }
        }
    }
    for done in &shared.done {
        done.store(true, Ordering::Release);
    }
    failed
}

/// The reader of every session of an open-loop run: one thread waiting on all their sockets,
/// reading each that has bytes without waiting, and counting what it read into that session's
/// [`Book`] as a session's own reader would.
struct MergedReader<'a> {
    plan: &'a Plan,
    start: Instant,
    shared: &'a Shared,
    progress: &'a Progress,
    poller: Poller,
    /// Per session: its tap while it is read; `None` once the session is over (its socket is
    /// then no longer watched).
    taps: Vec<Option<Box<dyn Tap>>>,
    books: Vec<Book>,
    /// Per session: when waiting for its last answers stops, set when the reader first sees the
    /// writer done with it.
    drain_deadlines: Vec<Option<Instant>>,
    /// Sessions still read.
    open: usize,
    /// When every session is next looked at for whether it is over (a session whose socket
    /// stays quiet is otherwise never looked at).
    sweep_at: Instant,
    /// What one read brought, reused.
    events: Vec<Event>,
    /// The sessions one wait found ready, reused.
    ready: Vec<u64>,
}

impl<'a> MergedReader<'a> {
    /// Watches every tap's socket; every tap must have one ([`Tap::socket`]).
    fn new(
        plan: &'a Plan,
        start: Instant,
        taps: Vec<Box<dyn Tap>>,
        shared: &'a Shared,
        progress: &'a Progress,
    ) -> std::io::Result<MergedReader<'a>> {
        let poller = Poller::new(constants::BENCH_POLL_EVENTS_MAX)?;
        for (n, tap) in taps.iter().enumerate() {
            let socket = tap.socket().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "a session without a socket to wait on",
                )
            })?;
            poller.add(socket, n as u64)?;
        }
        Ok(MergedReader {
            plan,
            start,
            shared,
            progress,
            poller,
            books: (0..taps.len()).map(|n| Book::new(n, plan, start)).collect(),
            drain_deadlines: vec![None; taps.len()],
            open: taps.len(),
            taps: taps.into_iter().map(Some).collect(),
            sweep_at: Instant::now(),
            events: Vec::new(),
            ready: Vec::new(),
        })
    }

    /// Reads until every session is over; then what each saw, in session order.
    fn run(&mut self) -> std::io::Result<Vec<SessionTally>> {
        while self.open > 0 {
            self.step(Duration::from_millis(constants::BENCH_READ_POLL_MS))?;
        }
        Ok(self.tallies())
    }

    /// Each session's tally (its orders: those sent when it ended).
    fn tallies(&mut self) -> Vec<SessionTally> {
        std::mem::take(&mut self.books)
            .into_iter()
            .map(|book| book.tally)
            .collect()
    }

    /// One wait of at most `timeout` and what it brought: reads every ready session, ends the
    /// sessions that are over.
    fn step(&mut self, timeout: Duration) -> std::io::Result<()> {
        let mut ready = std::mem::take(&mut self.ready);
        let waited = self.poller.wait(timeout, &mut ready);
        let read = (|| {
            waited?;
            for &token in &ready {
                self.read_session(token as usize)?;
            }
            let now = Instant::now();
            if ready.is_empty() || now >= self.sweep_at {
                self.sweep_at = now + Duration::from_millis(constants::BENCH_READ_POLL_MS);
                for n in 0..self.taps.len() {
                    self.end_if_over(n, now)?;
                }
            }
            Ok(())
        })();
        self.ready = ready;
        read
    }

    /// Reads what session `n`'s socket holds and counts it.
    fn read_session(&mut self, n: usize) -> std::io::Result<()> {
        let Some(Some(tap)) = self.taps.get_mut(n) else {
            // Reported in the same wait that ended the session: nothing to read.
            return Ok(());
        };
        self.events.clear();
        let read = tap.read_ready(&mut self.events);
        let now = Instant::now();
        let book = &mut self.books[n];
        book.absorb(
            &self.events,
            now,
            self.plan,
            self.start,
            self.progress,
            None,
        );
        if book.lost(&read, now, self.start) {
            return self.end(n);
        }
        self.end_if_over(n, now)
    }

    /// Ends session `n` if the writer is done with it and it has every answer, or waited the
    /// drain period for them.
    fn end_if_over(&mut self, n: usize, now: Instant) -> std::io::Result<()> {
        if self.taps[n].is_none() || !self.shared.done[n].load(Ordering::Acquire) {
            return Ok(());
        }
        let sent = self.shared.sent[n].load(Ordering::Acquire);
        let deadline = *self.drain_deadlines[n].get_or_insert(now + self.plan.drain);
        if self.books[n].tally.answered >= sent || now > deadline {
            return self.end(n);
        }
        Ok(())
    }

    /// Stops reading session `n`: its socket is no longer watched, its tap is dropped, and its
    /// orders are those sent by now (as a session's own reader counts them).
    fn end(&mut self, n: usize) -> std::io::Result<()> {
        if let Some(tap) = self.taps[n].take() {
            if let Some(socket) = tap.socket() {
                self.poller.remove(socket)?;
            }
            self.open -= 1;
        }
        self.books[n].tally.orders = self.shared.sent[n].load(Ordering::Acquire);
        Ok(())
    }
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
    let outbound = Arc::new(Mutex::new(Outbound {
        stream,
        encoder: Encoder::new("FIX.4.4"),
        sender: sender.clone(),
        target: target.target_comp_id.clone(),
        seq_num_next: 1,
        history: (0..constants::BENCH_RESEND_HISTORY)
            .map(|_| (0, Vec::new()))
            .collect(),
    }));
    let mut wire = FixWire {
        outbound: outbound.clone(),
        symbol: target.symbol.clone(),
        prefix: format!("{}-", n + 1),
        resting: VecDeque::new(),
        rng: Rng::new(0xBA70 + n as u64),
    };
    wire.logon()
        .map_err(io(format!("sending the Logon of {sender}")))?;
    let mut tap = FixTap {
        stream: read_half,
        outbound,
        decoder: Decoder::new(constants::BODY_LENGTH_MAX),
        recv: Vec::with_capacity(constants::READ_CHUNK),
        consumed: 0,
        chunk: vec![0; constants::READ_CHUNK],
        message: Message::default(),
        prefix: format!("{}-", n + 1).into_bytes(),
        seq_num_next_in: 1,
        exec_ids: HashSet::default(),
    };
    tap.await_logon(&sender)?;
    tap.stream
        .set_read_timeout(Some(Duration::from_millis(constants::BENCH_READ_POLL_MS)))
        .map_err(io("setting the read timeout"))?;
    Ok((Box::new(wire), Box::new(tap)))
}

/// The sending side of one session, shared by its writer (orders) and its reader (answers to
/// the acceptor's ResendRequest and TestRequest, and our own ResendRequest): both draw from one
/// sequence of MsgSeqNums, so both send through this, one at a time.
struct Outbound {
    stream: TcpStream,
    encoder: Encoder,
    sender: String,
    target: String,
    seq_num_next: u64,
    /// The last [`constants::BENCH_RESEND_HISTORY`] orders sent, as (MsgSeqNum, bytes) at index
    /// MsgSeqNum % length (buffers reused), to serve the acceptor's ResendRequest after a
    /// gateway lost what it had read; anything else asked for is gap filled.
    history: Vec<(u64, Vec<u8>)>,
}

impl Outbound {
    /// Starts a message with the next MsgSeqNum; returns that number.
    fn header(&mut self, msg_type: &[u8]) -> u64 {
        let seq = self.seq_num_next;
        self.seq_num_next += 1;
        self.header_with(msg_type, seq);
        seq
    }

    fn header_with(&mut self, msg_type: &[u8], seq: u64) {
        self.encoder
            .start(msg_type)
            .str(tags::SENDER_COMP_ID, &self.sender)
            .str(tags::TARGET_COMP_ID, &self.target)
            .uint(tags::MSG_SEQ_NUM, seq);
    }

    /// Finishes and writes a session message (not kept: a resend gap fills it).
    fn write(&mut self) -> std::io::Result<()> {
        let bytes = self.encoder.finish();
        self.stream.write_all(bytes)
    }

    /// Finishes, keeps for a resend, and writes order `seq`.
    fn write_order(&mut self, seq: u64) -> std::io::Result<()> {
        let bytes = self.encoder.finish();
        let slot = &mut self.history[(seq % constants::BENCH_RESEND_HISTORY as u64) as usize];
        slot.0 = seq;
        slot.1.clear();
        slot.1.extend_from_slice(bytes);
        self.stream.write_all(bytes)
    }

    /// Answers a ResendRequest for `begin..=end` (0: through the last sent) as FIX asks: each
    /// order still kept again, marked PossDup with its original SendingTime; the rest (session
    /// messages, orders too old) gap filled.
    fn serve_resend(&mut self, begin: u64, end: u64) -> std::io::Result<()> {
        let last = self.seq_num_next.saturating_sub(1);
        let end = if end == 0 { last } else { end.min(last) };
        let mut gap_from: Option<u64> = None;
        for seq in begin.max(1)..=end {
            let index = (seq % constants::BENCH_RESEND_HISTORY as u64) as usize;
            let stored = if self.history[index].0 == seq {
                Message::parse(&self.history[index].1).ok()
            } else {
                None
            };
            let Some(stored) = stored else {
                gap_from.get_or_insert(seq);
                continue;
            };
            self.encode_resent(&stored, seq);
            let resent = self.encoder.finish().to_vec();
            if let Some(from) = gap_from.take() {
                self.gap_fill(from, seq)?;
            }
            self.stream.write_all(&resent)?;
        }
        if let Some(from) = gap_from {
            self.gap_fill(from, end + 1)?;
        }
        Ok(())
    }

    /// Encodes `stored` (order `seq`) again as a resend.
    fn encode_resent(&mut self, stored: &Message, seq: u64) {
        let msg_type = stored.msg_type().to_vec();
        self.header_with(&msg_type, seq);
        self.encoder
            .bool(tags::POSS_DUP_FLAG, true)
            .timestamp(tags::SENDING_TIME, Timestamp::now());
        if let Some(original) = stored.get(tags::SENDING_TIME) {
            self.encoder.bytes(tags::ORIG_SENDING_TIME, original);
        }
        for (tag, value) in stored.fields() {
            if !tags::TRANSMISSION.contains(&tag) {
                self.encoder.bytes(tag, value);
            }
        }
    }

    /// SequenceReset-GapFill at `from` up to `to`.
    fn gap_fill(&mut self, from: u64, to: u64) -> std::io::Result<()> {
        self.header_with(msg_type::SEQUENCE_RESET, from);
        self.encoder
            .bool(tags::POSS_DUP_FLAG, true)
            .timestamp(tags::SENDING_TIME, Timestamp::now())
            .bool(tags::GAP_FILL_FLAG, true)
            .uint(tags::NEW_SEQ_NO, to);
        self.write()
    }
}

/// Builds and writes orders for one session.
struct FixWire {
    outbound: Arc<Mutex<Outbound>>,
    symbol: String,
    /// ClOrdIDs are `<session>-<k>`, so answers map back to the order without a lookup table.
    prefix: String,
    /// Own orders sent as resting and not yet cancelled or replaced, oldest first, with side.
    resting: VecDeque<(u64, u8)>,
    rng: Rng,
}

/// The outbound side, even if a thread panicked holding it (the bench then reports the panic).
fn lock(outbound: &Mutex<Outbound>) -> std::sync::MutexGuard<'_, Outbound> {
    outbound
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FixWire {
    fn logon(&mut self) -> std::io::Result<()> {
        let mut out = lock(&self.outbound);
        out.header(msg_type::LOGON);
        out.encoder
            .timestamp(tags::SENDING_TIME, Timestamp::now())
            .uint(tags::ENCRYPT_METHOD, 0)
            .uint(tags::HEART_BT_INT, 30)
            .bool(tags::RESET_SEQ_NUM_FLAG, true);
        out.write()
    }

    /// A resting price: buys below 99.10, sells above 100.90, so they never meet each other.
    fn resting_price(&mut self, side: u8) -> Price {
        let tick = b'0' + (self.rng.next_u64() % 10) as u8;
        if side == b'1' {
            Price::new(b"99.0", Some(tick))
        } else {
            Price::new(b"101.0", Some(tick))
        }
    }
}

/// A limit price as FIX text, built without a heap allocation (an order per few µs is sent).
#[derive(Clone, Copy, Debug)]
struct Price {
    /// The text, `len` bytes of it.
    text: [u8; 8],
    len: usize,
}

impl Price {
    /// `stem` followed by the digit `last`, if any.
    fn new(stem: &[u8], last: Option<u8>) -> Price {
        let mut text = [0u8; 8];
        text[..stem.len()].copy_from_slice(stem);
        let mut len = stem.len();
        if let Some(digit) = last {
            text[len] = digit;
            len += 1;
        }
        Price { text, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

impl Wire for FixWire {
    fn send(&mut self, k: u64, kind: Kind) -> std::io::Result<()> {
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
        // Everything drawn from the generator is drawn before the lock: the order stream is the
        // same whatever the reader does.
        let (msg, orig, price) = match kind {
            Kind::New => {
                self.resting.push_back((k, side));
                (msg_type::NEW_ORDER_SINGLE, None, self.resting_price(side))
            }
            Kind::Cross => {
                let price: &[u8] = if side == b'1' { b"102.00" } else { b"98.00" };
                (msg_type::NEW_ORDER_SINGLE, None, Price::new(price, None))
            }
            Kind::Cancel => {
                let orig = self.resting.pop_front().unwrap_or((0, side));
                (
                    msg_type::ORDER_CANCEL_REQUEST,
                    Some(orig),
                    Price::new(b"", None),
                )
            }
            Kind::Replace => {
                let orig = self.resting.pop_front().unwrap_or((0, side));
                let price = self.resting_price(orig.1);
                self.resting.push_back((k, orig.1));
                (msg_type::ORDER_CANCEL_REPLACE_REQUEST, Some(orig), price)
            }
        };
        let side = orig.map_or(side, |(_, orig_side)| orig_side);
        let prefix = self.prefix.as_bytes();
        let cl_ord_id = |index: u64| {
            move |out: &mut Vec<u8>| {
                out.extend_from_slice(prefix);
                push_uint(out, index);
            }
        };
        let price = price.as_bytes();
        let mut out = lock(&self.outbound);
        let seq = out.header(msg);
        out.encoder.timestamp(tags::SENDING_TIME, Timestamp::now());
        if let Some((orig, _)) = orig {
            out.encoder.with(41, cl_ord_id(orig));
        }
        out.encoder
            .with(tags::CL_ORD_ID, cl_ord_id(k))
            .str(55, &self.symbol)
            .char(54, side)
            .timestamp(60, Timestamp::now());
        match kind {
            Kind::New => {
                out.encoder.uint(38, 10).char(40, b'2').bytes(44, price);
            }
            Kind::Cross => {
                out.encoder
                    .uint(38, 10)
                    .char(40, b'2')
                    .bytes(44, price)
                    .char(59, b'3');
            }
            Kind::Cancel => {}
            Kind::Replace => {
                out.encoder.uint(38, 20).char(40, b'2').bytes(44, price);
            }
        }
        out.write_order(seq)
    }
}

/// Reads and classifies the acceptor's messages for one session, and answers what FIX asks a
/// counterparty to answer (ResendRequest, TestRequest) so a session survives a gateway that
/// lost what it had read.
struct FixTap {
    stream: TcpStream,
    outbound: Arc<Mutex<Outbound>>,
    decoder: Decoder,
    /// Bytes read and not yet consumed from `consumed` on.
    recv: Vec<u8>,
    /// How much of `recv` was handled: the buffer is compacted once per read, not once per
    /// message (a read holds many answers, and moving the rest after each was quadratic).
    consumed: usize,
    chunk: Vec<u8>,
    /// The message last parsed, reused so an answer costs no allocation.
    message: Message,
    prefix: Vec<u8>,
    seq_num_next_in: u64,
    /// ExecIDs seen: each output has one identity, so seeing one twice is a duplicate delivery.
    exec_ids: HashSet<ExecIdKey, FnvBuild>,
}

/// An ExecID as a set key: short ones (every ExecID baton writes, `<input seq>-<index>`) are held
/// inline, so remembering an answer allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ExecIdKey {
    /// Up to [`EXEC_ID_INLINE_BYTES`] bytes, zero padded, with the length.
    Inline(u8, [u8; EXEC_ID_INLINE_BYTES]),
    /// Anything longer (another acceptor's ExecIDs).
    Heap(Box<[u8]>),
}

/// ExecIDs up to this long are kept inline: two u64s in decimal (up to 20 digits each) and a
/// dash fit.
const EXEC_ID_INLINE_BYTES: usize = 41;

impl ExecIdKey {
    fn new(exec_id: &[u8]) -> ExecIdKey {
        if exec_id.len() <= EXEC_ID_INLINE_BYTES {
            let mut bytes = [0u8; EXEC_ID_INLINE_BYTES];
            bytes[..exec_id.len()].copy_from_slice(exec_id);
            ExecIdKey::Inline(exec_id.len() as u8, bytes)
        } else {
            ExecIdKey::Heap(exec_id.into())
        }
    }
}

/// FNV-1a: the ExecID set is the bench reader's own bookkeeping, hashed once per answer, where
/// the default SipHash (built against hostile keys, which an acceptor under test is not) was a
/// visible share of the client's CPU.
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
}

type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

/// What the next bytes of a session's buffer are.
enum Next {
    /// A whole message, parsed into the tap's `message`.
    Message,
    /// Not a whole frame yet.
    Incomplete,
    /// Bytes that are not a message were dropped.
    Garbled,
}

impl FixTap {
    fn await_logon(&mut self, sender: &str) -> Result<(), LoadError> {
        let failed = |why: &str| LoadError::Logon(sender.to_string(), why.to_string());
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io("setting the read timeout"))?;
        loop {
            match self.next_message() {
                Next::Message => {
                    let message = std::mem::take(&mut self.message);
                    self.track(&message);
                    self.message = message;
                    let message = &self.message;
                    match message.msg_type() {
                        msg_type::LOGON => return Ok(()),
                        msg_type::LOGOUT => {
                            let text = message.get(58).unwrap_or_default();
                            return Err(failed(&String::from_utf8_lossy(text)));
                        }
                        _ => {}
                    }
                }
                Next::Incomplete => {
                    let n = self
                        .stream
                        .read(&mut self.chunk)
                        .map_err(|e| failed(&e.to_string()))?;
                    if n == 0 {
                        return Err(failed("connection closed"));
                    }
                    self.compact();
                    self.recv.extend_from_slice(&self.chunk[..n]);
                }
                Next::Garbled => return Err(failed("garbled answer")),
            }
        }
    }

    /// The next whole message already buffered; bytes that are not one are dropped (a frame
    /// cut short by a gateway killed while writing it: FIX says to ignore it and let the gap
    /// that follows be resent).
    fn next_message(&mut self) -> Next {
        let rest = &self.recv[self.consumed..];
        match self.decoder.frame(rest) {
            Frame::Complete(len) => {
                let parsed = self.message.parse_into(&rest[..len]);
                self.consumed += len;
                match parsed {
                    Ok(()) => Next::Message,
                    Err(_) => Next::Garbled,
                }
            }
            Frame::Incomplete => Next::Incomplete,
            Frame::Garbled { skip, .. } => {
                self.consumed += skip.min(rest.len());
                Next::Garbled
            }
        }
    }

    /// Drops the bytes already handled, before more are appended.
    fn compact(&mut self) {
        self.recv.drain(..self.consumed);
        self.consumed = 0;
    }

    /// Keeps the inbound sequence; on a skipped number returns the range missed.
    fn track(&mut self, message: &Message) -> Option<(u64, u64)> {
        let seq = message.uint(tags::MSG_SEQ_NUM).unwrap_or(0);
        let gap_fill = message.bool_opt(tags::GAP_FILL_FLAG).ok().flatten() == Some(true);
        if message.msg_type() == msg_type::SEQUENCE_RESET && !gap_fill {
            if let Ok(new_seq) = message.uint(tags::NEW_SEQ_NO) {
                self.seq_num_next_in = self.seq_num_next_in.max(new_seq);
            }
            None
        } else if seq == self.seq_num_next_in {
            self.seq_num_next_in = if gap_fill {
                message
                    .uint(tags::NEW_SEQ_NO)
                    .unwrap_or(seq + 1)
                    .max(seq + 1)
            } else {
                seq + 1
            };
            None
        } else if seq > self.seq_num_next_in {
            let missed = (self.seq_num_next_in, seq - 1);
            self.seq_num_next_in = seq + 1;
            Some(missed)
        } else {
            None
        }
    }

    /// The order index in a ClOrdID of ours.
    fn order_index(&self, cl_ord_id: &[u8]) -> Option<u64> {
        let rest = cl_ord_id.strip_prefix(self.prefix.as_slice())?;
        crate::fix::codec::parse_uint(rest)
    }

    /// Asks for `begin..=end`, missed in what the acceptor sent.
    fn ask_resend(&self, begin: u64, end: u64) -> std::io::Result<()> {
        let mut out = lock(&self.outbound);
        out.header(msg_type::RESEND_REQUEST);
        out.encoder
            .timestamp(tags::SENDING_TIME, Timestamp::now())
            .uint(tags::BEGIN_SEQ_NO, begin)
            .uint(tags::END_SEQ_NO, end);
        out.write()
    }

    fn classify(&mut self, message: &Message, events: &mut Vec<Event>) -> std::io::Result<()> {
        if let Some((begin, end)) = self.track(message) {
            events.push(Event::Gap);
            self.ask_resend(begin, end)?;
        }
        let poss_dup = message.bool_opt(tags::POSS_DUP_FLAG).ok().flatten() == Some(true);
        if poss_dup {
            events.push(Event::Resent);
        }
        let terminal = match message.msg_type() {
            msg_type::EXECUTION_REPORT => {
                let exec_id = message.get(17).unwrap_or_default();
                if !self.exec_ids.insert(ExecIdKey::new(exec_id)) {
                    // A resend of what already came is what a resend is; anything else twice
                    // is a duplicate delivery.
                    if !poss_dup {
                        events.push(Event::Duplicate);
                    }
                    return Ok(());
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
                return Ok(());
            }
            msg_type::LOGOUT => {
                events.push(Event::Logout);
                return Ok(());
            }
            msg_type::RESEND_REQUEST => {
                let begin = message.uint(tags::BEGIN_SEQ_NO).unwrap_or(1);
                let end = message.uint(tags::END_SEQ_NO).unwrap_or(0);
                lock(&self.outbound).serve_resend(begin, end)?;
                events.push(Event::ResendServed);
                return Ok(());
            }
            msg_type::TEST_REQUEST => {
                let id = message.get(tags::TEST_REQ_ID).unwrap_or_default().to_vec();
                let mut out = lock(&self.outbound);
                out.header(msg_type::HEARTBEAT);
                out.encoder
                    .timestamp(tags::SENDING_TIME, Timestamp::now())
                    .bytes(tags::TEST_REQ_ID, &id);
                out.write()?;
                return Ok(());
            }
            _ => return Ok(()),
        };
        if let Some(k) = message
            .get(tags::CL_ORD_ID)
            .and_then(|id| self.order_index(id))
        {
            events.push(Event::Answer { k, terminal });
        }
        Ok(())
    }
}

impl Tap for FixTap {
    fn read(&mut self, events: &mut Vec<Event>) -> std::io::Result<()> {
        match self.stream.read(&mut self.chunk) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.compact();
                self.recv.extend_from_slice(&self.chunk[..n]);
            }
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
        self.classify_buffered(events)
    }

    fn socket(&self) -> Option<RawFd> {
        Some(self.stream.as_raw_fd())
    }

    fn read_ready(&mut self, events: &mut Vec<Event>) -> std::io::Result<()> {
        self.compact();
        let read = poll::read_available(self.stream.as_raw_fd(), &mut self.chunk, &mut self.recv);
        self.classify_buffered(events)?;
        read
    }
}

impl FixTap {
    /// Classifies every whole message buffered, leaving a partial one for the next read.
    fn classify_buffered(&mut self, events: &mut Vec<Event>) -> std::io::Result<()> {
        loop {
            match self.next_message() {
                Next::Message => {
                    // Taken out for the call (no allocation: the buffers move), put back after.
                    let message = std::mem::take(&mut self.message);
                    let classified = self.classify(&message, events);
                    self.message = message;
                    classified?;
                }
                Next::Incomplete => return Ok(()),
                Next::Garbled => events.push(Event::Garbled),
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
            pingpong: false,
            warmup_orders: 0,
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

    /// A connection that answers each order on the reader's next read and records, at each
    /// send, how many orders were unanswered.
    fn counting_connection(in_flight_max: &Arc<AtomicU64>) -> Result<Connection, LoadError> {
        let pending = Arc::new(Mutex::new(VecDeque::new()));
        struct CountingWire(Arc<Mutex<VecDeque<u64>>>, Arc<AtomicU64>);
        impl Wire for CountingWire {
            fn send(&mut self, k: u64, _: Kind) -> std::io::Result<()> {
                let mut pending = self.0.lock().expect("pending");
                pending.push_back(k);
                self.1.fetch_max(pending.len() as u64, Ordering::Relaxed);
                Ok(())
            }
        }
        struct AnsweringTap(Arc<Mutex<VecDeque<u64>>>);
        impl Tap for AnsweringTap {
            fn read(&mut self, events: &mut Vec<Event>) -> std::io::Result<()> {
                // Answers lag a little, so a writer that does not wait gets ahead.
                std::thread::sleep(Duration::from_micros(200));
                if let Some(k) = self.0.lock().expect("pending").pop_front() {
                    events.push(Event::Answer { k, terminal: true });
                }
                Ok(())
            }
        }
        Ok((
            Box::new(CountingWire(pending.clone(), in_flight_max.clone())),
            Box::new(AnsweringTap(pending)),
        ))
    }

    fn run_counting(pingpong: bool, unpaced: bool) -> (LoadResult, u64) {
        let plan = Plan {
            sessions: 1,
            rate_per_s: 200,
            duration: Duration::from_secs(1),
            mix: Mix::default(),
            drain: Duration::from_secs(30),
            unpaced,
            pingpong,
            warmup_orders: 20,
        };
        let in_flight_max = Arc::new(AtomicU64::new(0));
        let result = run(
            &plan,
            Instant::now(),
            &|_| counting_connection(&in_flight_max),
            &Arc::new(Progress::default()),
        )
        .expect("run");
        (result, in_flight_max.load(Ordering::Relaxed))
    }

    #[test]
    fn pingpong_keeps_exactly_one_order_in_flight_and_leaves_the_warmup_out() {
        let (result, in_flight_max) = run_counting(true, false);
        assert_eq!(in_flight_max, 1);
        assert_eq!(
            (result.orders, result.answered, result.missing),
            (200, 200, 0)
        );
        assert_eq!(result.histogram.len(), 180, "20 warm-up orders left out");
        assert_eq!(result.samples.len(), 180);
        // The same load unpaced keeps a window in flight: the count above can tell them apart.
        let (_, in_flight_max) = run_counting(false, true);
        assert!(in_flight_max > 1, "{in_flight_max}");
    }

    /// Reads one FIX message from `stream` (a test's end of a socket).
    fn read_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Message {
        let decoder = Decoder::new(constants::BODY_LENGTH_MAX);
        let mut chunk = [0u8; 4096];
        loop {
            if let Frame::Complete(len) = decoder.frame(buffer) {
                let message = Message::parse(&buffer[..len]).expect("a message");
                buffer.drain(..len);
                return message;
            }
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed");
            buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Both ends of a loopback TCP connection (the client's, the acceptor's), each reading with a
    /// timeout so a test that waits for bytes that never come fails instead of hanging.
    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (acceptor, _) = listener.accept().expect("accept");
        for end in [&stream, &acceptor] {
            end.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
        }
        (stream, acceptor)
    }

    #[test]
    fn a_resend_request_is_answered_with_the_orders_again_and_the_rest_gap_filled() {
        let (stream, mut acceptor) = connected_pair();
        let outbound = Arc::new(Mutex::new(Outbound {
            stream,
            encoder: Encoder::new("FIX.4.4"),
            sender: "TRADER1".into(),
            target: "BATON".into(),
            seq_num_next: 1,
            history: (0..constants::BENCH_RESEND_HISTORY)
                .map(|_| (0, Vec::new()))
                .collect(),
        }));
        let mut wire = FixWire {
            outbound: outbound.clone(),
            symbol: "AAPL".into(),
            prefix: "1-".into(),
            resting: VecDeque::new(),
            rng: Rng::new(1),
        };
        wire.logon().expect("logon");
        wire.send(0, Kind::New).expect("order 0");
        wire.send(1, Kind::Cross).expect("order 1");
        let mut buffer = Vec::new();
        let sent: Vec<Message> = (0..3)
            .map(|_| read_message(&mut acceptor, &mut buffer))
            .collect();
        lock(&outbound).serve_resend(1, 0).expect("resend");
        // The Logon (a session message) is gap filled up to the first order.
        let fill = read_message(&mut acceptor, &mut buffer);
        assert_eq!(fill.msg_type(), msg_type::SEQUENCE_RESET);
        assert_eq!(fill.uint(tags::MSG_SEQ_NUM).ok(), Some(1));
        assert_eq!(fill.get(tags::GAP_FILL_FLAG), Some(&b"Y"[..]));
        assert_eq!(fill.uint(tags::NEW_SEQ_NO).ok(), Some(2));
        for original in &sent[1..] {
            let resent = read_message(&mut acceptor, &mut buffer);
            assert_eq!(resent.msg_type(), msg_type::NEW_ORDER_SINGLE);
            assert_eq!(resent.get(tags::POSS_DUP_FLAG), Some(&b"Y"[..]));
            assert_eq!(
                resent.get(tags::ORIG_SENDING_TIME),
                original.get(tags::SENDING_TIME)
            );
            for tag in [tags::MSG_SEQ_NUM, tags::CL_ORD_ID, 44, 54, 38] {
                assert_eq!(resent.get(tag), original.get(tag), "tag {tag}");
            }
        }
        // Nothing was numbered anew: the next message is 4.
        assert_eq!(lock(&outbound).seq_num_next, 4);
    }

    #[test]
    fn a_full_window_waits_for_a_refill_and_a_stopped_reader_ends_the_wait() {
        let plan = Plan {
            sessions: 1,
            rate_per_s: 100,
            duration: Duration::from_secs(1),
            mix: Mix::default(),
            drain: Duration::ZERO,
            unpaced: true,
            pingpong: false,
            warmup_orders: 0,
        };
        let clock = Arc::new(SendClock::new(&plan, 100));
        // Room in the window: no wait.
        assert!(clock.wait_for_room(3, 4, 2));
        // Order 4 with 4 in flight: the writer sleeps until 2 are answered, not 1.
        let writer = {
            let clock = clock.clone();
            std::thread::spawn(move || {
                let _ = clock.writer.set(std::thread::current());
                let room = clock.wait_for_room(4, 4, 2);
                (room, clock.answered.load(Ordering::SeqCst))
            })
        };
        while clock.wake_at.load(Ordering::SeqCst) == u64::MAX {
            std::thread::yield_now();
        }
        assert_eq!(clock.wake_at.load(Ordering::SeqCst), 2);
        for answered in 1..=2 {
            clock.answered.store(answered, Ordering::SeqCst);
            clock.answered_up_to(answered);
        }
        assert_eq!(writer.join().expect("writer"), (true, 2));
        assert_eq!(clock.wake_at.load(Ordering::SeqCst), u64::MAX);
        // Nothing more will be answered once the reader stopped: the writer stops waiting.
        clock.reader_done.store(true, Ordering::SeqCst);
        assert!(!clock.wait_for_room(10, 4, 2));
    }

    #[test]
    fn answers_read_together_or_split_are_each_classified_and_repeats_counted() {
        answers_split_across_reads(false);
    }

    /// The same through the merged reader's path: wait for the socket, read what it holds.
    #[test]
    fn answers_read_without_waiting_are_classified_alike_and_a_close_ends_the_tap() {
        answers_split_across_reads(true);
    }

    /// Five answers (two repeated) written as three and a half, then the rest, read by a
    /// [`FixTap`] blocking in `read` or, `ready`, waiting in a [`Poller`] and reading with
    /// `read_ready`; then the acceptor closes.
    fn answers_split_across_reads(ready: bool) {
        let (stream, mut acceptor) = connected_pair();
        let long_exec_id = "x".repeat(EXEC_ID_INLINE_BYTES + 1);
        let mut encoder = Encoder::new("FIX.4.4");
        let mut wire_bytes = Vec::new();
        let mut ends = Vec::new();
        let answers: [(u64, &str, &str); 5] = [
            (1, "7-0", "1-0"),
            (2, "8-0", "1-1"),
            (3, "7-0", "1-0"),
            (4, &long_exec_id, "1-2"),
            (5, &long_exec_id, "1-2"),
        ];
        for (seq, exec_id, cl_ord_id) in answers {
            encoder
                .start(msg_type::EXECUTION_REPORT)
                .str(tags::SENDER_COMP_ID, "BATON")
                .str(tags::TARGET_COMP_ID, "TRADER1")
                .uint(tags::MSG_SEQ_NUM, seq)
                .str(tags::CL_ORD_ID, cl_ord_id)
                .str(17, exec_id)
                .char(150, b'0');
            wire_bytes.extend_from_slice(encoder.finish());
            ends.push(wire_bytes.len());
        }
        let outbound = Arc::new(Mutex::new(Outbound {
            stream: stream.try_clone().expect("clone"),
            encoder: Encoder::new("FIX.4.4"),
            sender: "TRADER1".into(),
            target: "BATON".into(),
            seq_num_next: 1,
            history: Vec::new(),
        }));
        let mut tap = FixTap {
            stream,
            outbound,
            decoder: Decoder::new(constants::BODY_LENGTH_MAX),
            recv: Vec::new(),
            consumed: 0,
            chunk: vec![0; constants::READ_CHUNK],
            message: Message::default(),
            prefix: b"1-".to_vec(),
            seq_num_next_in: 1,
            exec_ids: HashSet::default(),
        };
        let mut poller = Poller::new(1).expect("epoll");
        poller.add(tap.socket().expect("a socket"), 0).expect("add");
        let mut tokens = Vec::new();
        // Bounded waits, so a reader that never sees the bytes fails instead of hanging.
        let mut read = |tap: &mut FixTap, events: &mut Vec<Event>| {
            if ready {
                poller
                    .wait(Duration::from_secs(30), &mut tokens)
                    .expect("wait");
                tap.read_ready(events)
            } else {
                tap.read(events)
            }
        };
        // Three and a half answers in one read, the rest in the next.
        let split = ends[2] + 20;
        let mut events = Vec::new();
        acceptor.write_all(&wire_bytes[..split]).expect("write");
        for _ in 0..100 {
            if events.len() >= 3 {
                break;
            }
            read(&mut tap, &mut events).expect("read");
        }
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(tap.consumed < tap.recv.len(), "half an answer kept");
        acceptor.write_all(&wire_bytes[split..]).expect("write");
        for _ in 0..100 {
            if events.len() >= 5 {
                break;
            }
            read(&mut tap, &mut events).expect("read");
        }
        assert_eq!(
            events,
            [
                Event::Answer {
                    k: 0,
                    terminal: true
                },
                Event::Answer {
                    k: 1,
                    terminal: true
                },
                Event::Duplicate,
                Event::Answer {
                    k: 2,
                    terminal: true
                },
                Event::Duplicate,
            ]
        );
        drop(acceptor);
        let mut closed = Ok(());
        for _ in 0..100 {
            closed = read(&mut tap, &mut events);
            if closed.is_err() {
                break;
            }
        }
        let closed = closed.expect_err("the close ends the tap");
        assert_eq!(closed.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(events.len(), 5, "nothing more: {events:?}");
    }

    fn paced_plan(sessions: usize, rate_per_s: u64, duration: Duration) -> Plan {
        Plan {
            sessions,
            rate_per_s,
            duration,
            mix: Mix::default(),
            drain: Duration::from_secs(30),
            unpaced: false,
            pingpong: false,
            warmup_orders: 0,
        }
    }

    #[test]
    fn the_merged_schedule_hands_out_every_order_once_in_time_order_never_early() {
        // 3 sessions at 3 000/s for 10 ms: each sends every 1 ms, 333 µs after the previous.
        let plan = paced_plan(3, 3_000, Duration::from_millis(10));
        let mut schedule = Schedule::new(&plan);
        assert_eq!(schedule.next_due_ns(), Some(0));
        // Virtual time, in uneven steps: each step takes every order due by then.
        let mut taken = Vec::new();
        let mut now_ns = 0;
        while let Some(due_ns) = schedule.next_due_ns() {
            let mut batch = Vec::new();
            while let Some((n, k)) = schedule.pop_due(now_ns) {
                let intended = plan.intended_ns(n, k);
                assert!(intended <= now_ns, "order {n}/{k} handed out early");
                batch.push((intended, n, k));
            }
            if due_ns <= now_ns {
                assert!(!batch.is_empty(), "a due order was left for later");
            }
            taken.extend(batch);
            now_ns += 700_000;
        }
        assert_eq!(taken.len(), 30);
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "in intended order");
        let mut each: Vec<(usize, u64)> = taken.iter().map(|&(_, n, k)| (n, k)).collect();
        each.sort_unstable();
        each.dedup();
        assert_eq!(each.len(), 30, "every order once");
        assert_eq!(schedule.pop_due(u64::MAX), None);
    }

    #[test]
    fn the_merged_schedule_batches_due_orders_and_drops_a_stopped_session() {
        let plan = paced_plan(3, 3_000, Duration::from_millis(10));
        let mut schedule = Schedule::new(&plan);
        // At 1 ms: session 0's first and second, sessions 1 and 2's first, in time order.
        let batch: Vec<(usize, u64)> = std::iter::from_fn(|| schedule.pop_due(1_000_000)).collect();
        assert_eq!(batch, [(0, 0), (1, 0), (2, 0), (0, 1)]);
        assert_eq!(schedule.next_due_ns(), Some(plan.intended_ns(1, 1)));
        schedule.stop(1);
        let rest: Vec<(usize, u64)> = std::iter::from_fn(|| schedule.pop_due(u64::MAX)).collect();
        assert_eq!(
            rest.len(),
            9 + 8,
            "session 1's orders after the stop are not sent"
        );
        assert!(rest.iter().all(|&(n, _)| n != 1));
        // Nothing to send at all: the schedule is empty from the start.
        let none = Schedule::new(&paced_plan(2, 1_000, Duration::ZERO));
        assert_eq!(none.next_due_ns(), None);
    }

    /// A wire recording when it sent what, failing from order `fail_from` on.
    struct RecordingWire {
        n: usize,
        fail_from: u64,
        sends: Arc<Mutex<Vec<(usize, u64, Instant)>>>,
    }

    impl Wire for RecordingWire {
        fn send(&mut self, k: u64, _: Kind) -> std::io::Result<()> {
            if k >= self.fail_from {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            lock_sends(&self.sends).push((self.n, k, Instant::now()));
            Ok(())
        }
    }

    fn lock_sends(
        sends: &Mutex<Vec<(usize, u64, Instant)>>,
    ) -> std::sync::MutexGuard<'_, Vec<(usize, u64, Instant)>> {
        sends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn the_merged_writer_sends_each_order_once_in_order_never_early_and_stops_a_failed_session() {
        // 4 sessions at 4 000/s for 20 ms: 20 orders each, session 2's connection failing at 5.
        let plan = paced_plan(4, 4_000, Duration::from_millis(20));
        let sends = Arc::new(Mutex::new(Vec::new()));
        let wires: Vec<Box<dyn Wire>> = (0..4)
            .map(|n| {
                Box::new(RecordingWire {
                    n,
                    fail_from: if n == 2 { 5 } else { u64::MAX },
                    sends: sends.clone(),
                }) as Box<dyn Wire>
            })
            .collect();
        let shared = Shared::new(4);
        let progress = Progress::default();
        let start = Instant::now() + Duration::from_millis(5);
        let failed = write_merged(&plan, start, wires, &shared, &progress);
        assert_eq!(failed, [false, false, true, false]);
        let sends = lock_sends(&sends).clone();
        assert_eq!(sends.len(), 3 * 20 + 5);
        for &(n, k, at) in &sends {
            assert!(
                at >= start + Duration::from_nanos(plan.intended_ns(n, k)),
                "order {n}/{k} sent before its time"
            );
        }
        let intended: Vec<u64> = sends
            .iter()
            .map(|&(n, k, _)| plan.intended_ns(n, k))
            .collect();
        assert!(
            intended.windows(2).all(|w| w[0] <= w[1]),
            "in intended order"
        );
        let sent: Vec<u64> = shared
            .sent
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .collect();
        assert_eq!(sent, [20, 20, 5, 20]);
        assert!(shared.done.iter().all(|d| d.load(Ordering::SeqCst)));
        assert_eq!(progress.sent.load(Ordering::SeqCst), 65);
    }

    /// `sessions` echo-protocol connections to a listener the test plays: the client's
    /// connections and the test's ends of them, in session order.
    fn echo_sessions(sessions: usize, payload_bytes: usize) -> (Vec<Connection>, Vec<TcpStream>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut connections = Vec::new();
        let mut ends = Vec::new();
        for n in 0..sessions {
            connections
                .push(super::super::echo::connect_echo(addr, payload_bytes, n).expect("connect"));
            ends.push(listener.accept().expect("accept").0);
        }
        (connections, ends)
    }

    /// The echo of order `k`, `payload_bytes` long.
    fn echo_of(k: u64, payload_bytes: usize) -> Vec<u8> {
        let mut bytes = vec![b'x'; payload_bytes];
        bytes[..8].copy_from_slice(&k.to_le_bytes());
        bytes
    }

    #[test]
    fn the_merged_reader_counts_answers_on_every_socket_split_or_not_and_a_close_as_a_disconnect() {
        const PAYLOAD: usize = 32;
        let plan = paced_plan(3, 300, Duration::from_millis(20));
        let (connections, mut ends) = echo_sessions(3, PAYLOAD);
        let taps: Vec<Box<dyn Tap>> = connections.into_iter().map(|(_, tap)| tap).collect();
        let shared = Shared::new(3);
        let progress = Progress::default();
        let start = Instant::now();
        let mut reader = MergedReader::new(&plan, start, taps, &shared, &progress).expect("reader");
        // Bounded waits: a socket never reported fails the test instead of hanging it.
        let wait = Duration::from_secs(30);
        // Session 1: half an answer, then (below) the rest and another: nothing counted yet.
        ends[1].write_all(&echo_of(0, PAYLOAD)[..5]).expect("write");
        reader.step(wait).expect("step");
        assert_eq!(reader.books[1].tally.answered, 0);
        // Session 0: two answers in one write; the writer is done with it after two orders.
        for n in [0, 1] {
            shared.sent[n].store(2, Ordering::SeqCst);
            shared.done[n].store(true, Ordering::SeqCst);
        }
        let mut both = echo_of(0, PAYLOAD);
        both.extend(echo_of(1, PAYLOAD));
        ends[0].write_all(&both).expect("write");
        let mut rest = echo_of(0, PAYLOAD)[5..].to_vec();
        rest.extend(echo_of(1, PAYLOAD));
        ends[1].write_all(&rest).expect("write");
        // Session 2: one order sent, then its acceptor closes before answering.
        shared.sent[2].store(1, Ordering::SeqCst);
        drop(ends.remove(2));
        for _ in 0..100 {
            if reader.open == 0 {
                break;
            }
            reader.step(wait).expect("step");
        }
        assert_eq!(reader.open, 0, "every session over");
        let tallies = reader.tallies();
        for (n, tally) in tallies.iter().enumerate().take(2) {
            assert_eq!((tally.orders, tally.answered), (2, 2), "session {n}");
            assert!(!tally.disconnected, "session {n}");
            assert_eq!(tally.histogram.len(), 2, "session {n}");
        }
        assert_eq!((tallies[2].orders, tallies[2].answered), (1, 0));
        assert!(tallies[2].disconnected);
        assert_eq!(tallies[2].incidents.len(), 1);
        assert_eq!(tallies[2].incidents[0].1, Incident::Disconnect);
        assert_eq!(progress.answered.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn an_open_loop_run_over_real_sockets_answers_every_order_once() {
        let server = super::super::echo::EchoServer::start().expect("echo");
        let plan = Plan {
            drain: Duration::from_secs(30),
            ..paced_plan(4, 2_000, Duration::from_millis(200))
        };
        let progress = Arc::new(Progress::default());
        let result = run(
            &plan,
            Instant::now() + Duration::from_millis(50),
            &|n| super::super::echo::connect_echo(server.addr, 64, n),
            &progress,
        )
        .expect("run");
        assert_eq!(result.orders, 400);
        assert_eq!(
            (
                result.answered,
                result.missing,
                result.duplicates,
                result.disconnects
            ),
            (400, 0, 0, 0)
        );
        assert_eq!(result.histogram.len(), 400);
        assert_eq!(result.samples.len(), 400);
        assert!(result.incidents.is_empty(), "{:?}", result.incidents);
    }
}
