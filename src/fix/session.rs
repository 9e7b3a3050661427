//! The FIX 4.4 acceptor session as a pure state machine: bytes and time in, bytes, events and
//! a next deadline out.
//!
//! The driver (the gateway's connection task, or a test on virtual time) feeds what it read with
//! [`Session::handle_bytes`], calls [`Session::handle_timeout`] when [`Session::next_timeout`]
//! passes, writes what [`Session::poll_transmit`] gives, and acts on [`Session::poll_event`]:
//! business messages to forward, and when to close the connection. The session never touches a
//! socket or reads a clock, so every behavior of the FIX session-level test cases is tested
//! here byte for byte without one.
//!
//! One `Session` lives for the gateway's lifetime per configured CompID pair; connections come
//! and go ([`Session::on_connect`], [`Session::on_disconnect`]), and business messages sent while
//! the counterparty is away are stored and reach it by resend when it returns.

use std::collections::BTreeMap;

use super::codec::{Decoder, Encoder, FieldProblem, Frame, Message};
use super::dictionary::Dictionary;
use super::schedule::Schedule;
use super::store::{SessionStore, StoreError};
use super::tags::{self, SessionRejectReason, msg_type};
use super::time::Timestamp;
use crate::constants;

/// How one session behaves; built from the `[[session]]` sections of the config.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// BeginString the counterparty must use (`FIX.4.4`).
    pub begin_string: String,
    /// The gateway's CompID: SenderCompID on what it sends, TargetCompID on what it receives.
    pub sender_comp_id: String,
    /// The counterparty's CompID.
    pub target_comp_id: String,
    /// Smallest HeartBtInt (seconds) a Logon may ask for; below it the Logon is refused.
    pub heart_bt_int_min_s: u64,
    /// Largest HeartBtInt (seconds) a Logon may ask for.
    pub heart_bt_int_max_s: u64,
    /// Whether SendingTime must be within `max_latency_ms` of the gateway's time.
    pub check_latency: bool,
    /// Largest accepted |SendingTime − now|; beyond it Reject (reason 10) then Logout.
    pub max_latency_ms: u64,
    /// How long a new connection may take to send its Logon.
    pub logon_timeout_ms: u64,
    /// How long the gateway waits for the answer to a Logout it sent.
    pub logout_timeout_ms: u64,
    /// Extra silence allowed beyond HeartBtInt, in percent, before a TestRequest is sent and,
    /// after the same again, before the peer is declared dead.
    pub heartbeat_margin_pct: u64,
    /// Trading hours; outside them Logons are refused and sessions are logged out.
    pub schedule: Schedule,
}

impl SessionConfig {
    /// A config with the defaults documented in README for the given CompIDs.
    pub fn new(sender_comp_id: &str, target_comp_id: &str) -> SessionConfig {
        SessionConfig {
            begin_string: "FIX.4.4".to_string(),
            sender_comp_id: sender_comp_id.to_string(),
            target_comp_id: target_comp_id.to_string(),
            heart_bt_int_min_s: constants::HEART_BT_INT_MIN_S,
            heart_bt_int_max_s: constants::HEART_BT_INT_MAX_S,
            check_latency: true,
            max_latency_ms: constants::MAX_LATENCY_DEFAULT_MS,
            logon_timeout_ms: constants::LOGON_TIMEOUT_DEFAULT_MS,
            logout_timeout_ms: constants::LOGOUT_TIMEOUT_DEFAULT_MS,
            heartbeat_margin_pct: constants::HEARTBEAT_MARGIN_PCT,
            schedule: Schedule::non_stop(),
        }
    }
}

/// Where the session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No connection.
    Disconnected,
    /// Connected, waiting for the counterparty's Logon.
    AwaitingLogon,
    /// Logged on: business messages flow.
    Active,
    /// The gateway sent a Logout and waits (bounded) for the answer.
    LogoutSent,
}

/// Why the session asks the driver to close the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Logout handshake completed (either side started it).
    LoggedOut,
    /// No answer to our Logout within the timeout.
    LogoutTimeout,
    /// No Logon within the deadline after connecting.
    LogonTimeout,
    /// The first message was not a Logon.
    FirstMessageNotLogon,
    /// The Logon was refused; the text is what the Logout said.
    LogonRefused(String),
    /// No traffic and no answer to a TestRequest.
    PeerSilent,
    /// A session-level violation the specification answers with Logout and disconnect.
    ProtocolViolation(String),
    /// The store could not persist; sending on would break resend.
    StoreFailed(String),
}

/// What the session tells its driver, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Logon accepted; `reset` when sequence numbers restarted at 1.
    LoggedOn {
        /// Whether this Logon reset both sequence numbers.
        reset: bool,
    },
    /// A valid business message, in sequence, delivered exactly once.
    Application(Message),
    /// Close the connection after writing what `poll_transmit` still holds.
    Disconnect(DisconnectReason),
}

/// Declares [`Timer`] and its firing order from one list, so the table's size, the order
/// `handle_timeout` checks them in and the enum cannot disagree: a new timer is a new line here,
/// and it has a slot and is fired without another edit.
macro_rules! timers {
    ($($(#[doc = $doc:expr])* $name:ident,)+) => {
        /// The session's timers, one slot each in a table; `next_timeout` is the earliest.
        /// Declared in the order they fire when several are due at once: the deadlines that end
        /// the connection first, then those that send.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        enum Timer {
            $($(#[doc = $doc])* $name,)+
        }

        impl Timer {
            /// Every timer, in firing order; a timer's slot in the table is its position here.
            const ALL: [Timer; [$(Timer::$name),+].len()] = [$(Timer::$name),+];
        }
    };
}

timers! {
    /// A connection must log on before this.
    LogonDeadline,
    /// Disconnect if our Logout is not answered by then.
    LogoutDeadline,
    /// Disconnect if still nothing received after the TestRequest.
    PeerDead,
    /// End of the session day: log the counterparty out.
    SessionEnd,
    /// Send a TestRequest if nothing was received by then.
    TestRequest,
    /// Send a Heartbeat if nothing was sent by then.
    Heartbeat,
}

/// Slots in the timer table: one per [`Timer`], by construction.
const TIMER_COUNT: usize = Timer::ALL.len();

// A timer's discriminant is its slot: the declaration order is the table's order.
const _: () = {
    let mut slot = 0;
    while slot < TIMER_COUNT {
        assert!(Timer::ALL[slot] as usize == slot);
        slot += 1;
    }
};

/// Counters an operator reads in status; they never affect behavior.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Frames received, valid or not.
    pub frames_in: u64,
    /// Messages sent (including resends and gap fills).
    pub messages_out: u64,
    /// Garbled frames ignored.
    pub garbled: u64,
    /// Session-level Rejects sent.
    pub rejects_sent: u64,
    /// ResendRequests sent because of an inbound gap.
    pub resend_requests_sent: u64,
    /// ResendRequests from the counterparty served.
    pub resends_served: u64,
    /// Logons accepted.
    pub logons: u64,
}

/// A logged-on session's state that is not in its store, handed from one gateway process to
/// the next at a planned upgrade ([`Session::carry`], [`Session::resume_carried`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionCarry {
    /// The HeartBtInt agreed at Logon, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Each timer's deadline (ns since the epoch), in the session's timer order.
    pub timers: Vec<Option<u64>>,
    /// TestReqID of an outstanding TestRequest.
    pub test_request_id: u64,
    /// Bytes read from the counterparty that are not yet a whole frame, in hex (the hand-over
    /// message is JSON).
    pub unread_hex: String,
    /// The last outbound MsgSeqNum the previous gateway wrote to the socket (a first sending,
    /// not a resend). Everything its store holds after it was stored but never written (an
    /// output that reached the session after the hand-over, a write cut short), so the
    /// successor writes those first, as they were stored, before anything new: without this
    /// the counterparty would see them as a gap. `None` from a build that did not record it:
    /// the successor then continues from its store as before.
    #[serde(default)]
    pub seq_num_out_written: Option<u64>,
}

impl SessionCarry {
    /// The unframed bytes; `None` if the hex is not hex.
    fn unread(&self) -> Option<Vec<u8>> {
        let hex = self.unread_hex.as_bytes();
        if !hex.len().is_multiple_of(2) {
            return None;
        }
        hex.chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
            })
            .collect()
    }
}

/// A message received ahead of a gap, waiting for the gap to be filled.
#[derive(Clone, Debug)]
struct Queued {
    /// When it arrived: SendingTime accuracy is judged against this, not the time it is processed.
    received_at: Timestamp,
    /// The message.
    message: Message,
    /// Already acted on when it arrived (a Logon announcing the gap, a ResendRequest served at
    /// once): processing it in sequence only takes its number.
    served: bool,
}

/// The part of a counterparty's ResendRequest still to serve.
#[derive(Clone, Copy, Debug)]
struct Replay {
    /// Next MsgSeqNum to resend (or gap-fill).
    next: u64,
    /// Last MsgSeqNum of the range.
    end: u64,
}

/// One FIX acceptor session. See the module documentation for the driver contract.
pub struct Session<S: SessionStore> {
    /// How this session behaves.
    config: SessionConfig,
    /// Sequence numbers and sent messages; the only state that outlives the process.
    store: S,
    /// Validates every inbound message; loaded once per process, shared by every session.
    dictionary: &'static Dictionary,
    /// Frames the byte stream, bounding message size.
    decoder: Decoder,
    /// Bytes read but not yet framed; never longer than one frame plus one read.
    recv: Vec<u8>,
    /// Builds outbound messages without allocating.
    encoder: Encoder,
    /// Bytes for the driver to write, in order.
    transmit: Vec<u8>,
    /// Events for the driver, in order.
    events: std::collections::VecDeque<Event>,
    /// Where the session is in its life.
    state: State,
    /// Deadlines, indexed by [`Timer`].
    timers: [Option<Timestamp>; TIMER_COUNT],
    /// Agreed HeartBtInt in milliseconds; 0 before Logon.
    heartbeat_interval_ms: u64,
    /// Messages received beyond a gap, by MsgSeqNum; bounded by `INBOUND_QUEUE_MAX` messages
    /// and `INBOUND_QUEUE_BYTES_MAX` bytes.
    queue: BTreeMap<u64, Queued>,
    /// What `queue` holds, as counted by [`queued_bytes`]; always the sum over its entries.
    queue_bytes: usize,
    /// The counterparty's ResendRequest being served, a step at a time (see
    /// [`Session::continue_resend`]).
    replay: Option<Replay>,
    /// While a resend is served, messages the session sends are stored but held back, so the
    /// counterparty sees its MsgSeqNums in order: the first one held. They follow the resend,
    /// as they were stored.
    held_from: Option<u64>,
    /// While a ResendRequest of ours is outstanding: the highest MsgSeqNum seen beyond the gap,
    /// so we do not ask again for the same gap.
    resend_target: Option<u64>,
    /// TestReqID of our outstanding TestRequest.
    test_request_id: u64,
    /// MsgSeqNum expected next from the counterparty. The store holds this number, except while
    /// business messages wait in `unconfirmed`: then it holds the first of them, so a crash
    /// before the sequencer journaled a message makes the gateway ask for it again after the
    /// restart instead of losing it.
    seq_num_next_in: u64,
    /// MsgSeqNums of business messages handed to the driver and not yet confirmed (journaled or
    /// answered), oldest first.
    unconfirmed: std::collections::VecDeque<u64>,
    /// Counters for status.
    stats: SessionStats,
    /// Reused to parse each frame without allocating.
    scratch: Message,
    /// The highest MsgSeqNum of a message sent for the first time (not a resend or gap fill)
    /// that is in `transmit` or was given to the driver: what a hand-over records as written.
    seq_num_out_queued: u64,
    /// The same, of what [`Session::poll_transmit`] gave the driver: once the driver wrote it
    /// all, every MsgSeqNum up to this one is on the wire.
    seq_num_out_polled: u64,
    /// Set by [`Session::carry`]: the session belongs to the next gateway process now, and
    /// anything stored after it is written by that process, not by this one.
    handed_over: bool,
    /// Messages handed back with [`Session::recycle`]: each business message handed out in an
    /// [`Event::Application`] is copied into one of these, so the steady state allocates no
    /// message per order (invariant 11). At most [`constants::SESSION_SPARE_MESSAGES_MAX`].
    spare: Vec<Message>,
}

/// What the per-message checks decided.
enum Verdict {
    /// Processed (or deliberately ignored); move on to the next frame.
    Done,
    /// Stop processing input: the connection is being closed.
    Stop,
}

impl<S: SessionStore> Session<S> {
    /// A session over `store`, validating with `dictionary`; starts disconnected.
    pub fn new(config: SessionConfig, store: S, dictionary: &'static Dictionary) -> Session<S> {
        let encoder = Encoder::new(&config.begin_string);
        let seq_num_next_in = store.seq_num_next_in();
        Session {
            config,
            store,
            dictionary,
            decoder: Decoder::new(constants::BODY_LENGTH_MAX),
            recv: Vec::with_capacity(constants::RECV_BUFFER_INITIAL),
            encoder,
            transmit: Vec::with_capacity(constants::RECV_BUFFER_INITIAL),
            events: std::collections::VecDeque::new(),
            state: State::Disconnected,
            timers: [None; TIMER_COUNT],
            heartbeat_interval_ms: 0,
            queue: BTreeMap::new(),
            queue_bytes: 0,
            replay: None,
            held_from: None,
            resend_target: None,
            test_request_id: 0,
            seq_num_next_in,
            unconfirmed: std::collections::VecDeque::new(),
            seq_num_out_queued: 0,
            seq_num_out_polled: 0,
            handed_over: false,
            stats: SessionStats::default(),
            scratch: Message::default(),
            spare: Vec::with_capacity(constants::SESSION_SPARE_MESSAGES_MAX),
        }
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters for status.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// MsgSeqNum expected next from the counterparty.
    pub fn seq_num_next_in(&self) -> u64 {
        self.seq_num_next_in
    }

    /// Confirms that the business message `seq` (from an [`Event::Application`]) is safe: the
    /// sequencer journaled it, or it was answered. Until then the store keeps its number as the
    /// one to expect after a restart, so a crash cannot lose an accepted message.
    pub fn confirm_in(&mut self, seq: u64) {
        if let Some(position) = self.unconfirmed.iter().position(|&s| s == seq) {
            self.unconfirmed.remove(position);
            self.persist_next_in();
        }
    }

    /// A restarted gateway found business message `seq` from this counterparty in its input
    /// journal: it was accepted, so it must not be taken again. The store may still expect it
    /// when the gateway died between journaling the message and confirming it here; asking for
    /// it again would bring its PossDup copy, which would then be traded twice.
    pub fn recover_journaled_in(&mut self, seq: u64) {
        let next = seq.saturating_add(1);
        if next > self.seq_num_next_in {
            self.set_next_in(next);
        }
    }

    /// The store, for status (sequence numbers) and tests.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutable, so the driver can flush it once per batch.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// A transport connected; the counterparty must log on before the deadline.
    pub fn on_connect(&mut self, now: Timestamp) {
        self.recv.clear();
        self.transmit.clear();
        self.seq_num_out_queued = self.seq_num_out_polled;
        self.handed_over = false;
        self.clear_queue();
        self.resend_target = None;
        self.end_resend();
        self.timers = [None; TIMER_COUNT];
        self.state = State::AwaitingLogon;
        // Until the counterparty is known, a Logon-sized message is all it may send.
        self.decoder
            .set_body_length_max(constants::LOGON_BODY_LENGTH_MAX);
        self.set_timer(
            Timer::LogonDeadline,
            now.plus_millis(self.config.logon_timeout_ms),
        );
    }

    /// The agreed HeartBtInt in milliseconds (0 before Logon): a socket holder keeps it with a
    /// logged-on connection, because a restarted gateway that takes the connection back has no
    /// Logon to learn it from.
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.heartbeat_interval_ms
    }

    /// A connection that was logged on under a gateway process that died is taken back by the
    /// next one: the session continues as logged on, from the numbers in its store, with the
    /// HeartBtInt agreed then. No Logon is exchanged; a TestRequest goes out at once so the
    /// counterparty's answer (or the gap its MsgSeqNum shows) tells both sides within a round
    /// trip what the dead process had read or written but not finished. Returns false, and
    /// leaves the session disconnected, outside session time or on a new session day: the
    /// connection is then closed.
    pub fn resume(&mut self, now: Timestamp, heartbeat_interval_ms: u64) -> bool {
        self.on_connect(now);
        let Some(window) = self.config.schedule.window(now) else {
            self.on_disconnect();
            return false;
        };
        if self.store.session_period() != window.start.as_secs() {
            // A new session day began while no gateway ran: both sides start again at 1, which
            // takes a Logon.
            self.on_disconnect();
            return false;
        }
        self.timers = [None; TIMER_COUNT];
        self.heartbeat_interval_ms = heartbeat_interval_ms;
        self.state = State::Active;
        // What the previous process wrote is not known here: whatever it stored and did not
        // write shows as a gap, which the counterparty asks for.
        self.seq_num_out_polled = self.store.seq_num_next_out().saturating_sub(1);
        self.seq_num_out_queued = self.seq_num_out_polled;
        self.decoder.set_body_length_max(constants::BODY_LENGTH_MAX);
        if window.end != Timestamp(u64::MAX) {
            self.set_timer(Timer::SessionEnd, window.end);
        }
        self.arm_heartbeat(now);
        self.set_timer(Timer::TestRequest, now);
        tracing::info!(session = %self.config.target_comp_id, seq_num_next_in = self.seq_num_next_in, seq_num_next_out = self.store.seq_num_next_out(), "connection taken back from the socket holder: still logged on");
        true
    }

    /// Whether nothing is in the middle of a FIX exchange: no gap being asked for, no resend
    /// being served, no message beyond a gap queued, every business message confirmed, nothing
    /// left to write. A planned upgrade hands a session over only in this state, so the new
    /// gateway continues it from its store and a [`SessionCarry`] with nothing to repair.
    pub fn settled(&self) -> bool {
        self.state == State::Active
            && self.queue.is_empty()
            && self.replay.is_none()
            && self.held_from.is_none()
            && self.resend_target.is_none()
            && self.unconfirmed.is_empty()
            && self.transmit.is_empty()
    }

    /// What of this session is not in its store, for the gateway that continues it after a
    /// planned upgrade: the agreed HeartBtInt, the timer deadlines, the bytes read but not yet
    /// a whole frame, and the last MsgSeqNum written. Records that the session is handed over:
    /// what is stored after this (an output that arrives late) is written by the successor.
    ///
    /// The driver must write everything [`Session::poll_transmit`] returned; if that write
    /// fails, it lowers [`SessionCarry::seq_num_out_written`] to what it knows was written
    /// ([`Session::seq_num_out_polled`] before its last poll), so the successor writes the rest.
    pub fn carry(&mut self) -> SessionCarry {
        self.handed_over = true;
        SessionCarry {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            timers: self.timers.iter().map(|t| t.map(|t| t.0)).collect(),
            test_request_id: self.test_request_id,
            unread_hex: self.recv.iter().map(|b| format!("{b:02x}")).collect(),
            seq_num_out_written: Some(self.seq_num_out_polled),
        }
    }

    /// The last MsgSeqNum sent for the first time that [`Session::poll_transmit`] gave the
    /// driver (0 before anything was): once the driver wrote what it was given, the
    /// counterparty has every number up to this one, or will get it by resend.
    pub fn seq_num_out_polled(&self) -> u64 {
        self.seq_num_out_polled
    }

    /// Continues a session handed over by a planned upgrade (see [`Session::carry`]): logged on,
    /// with the deadlines and unframed bytes the previous gateway had, so the counterparty sees
    /// no TestRequest, no gap and no resend. Returns false, leaving the session disconnected,
    /// where [`Session::resume`] would, or when the carried state is not one this build reads
    /// (the connection is then closed, and the counterparty recovers by reconnecting).
    pub fn resume_carried(&mut self, now: Timestamp, carry: &SessionCarry) -> bool {
        let unread = carry.unread();
        if carry.timers.len() != TIMER_COUNT || unread.is_none() {
            tracing::warn!(session = %self.config.target_comp_id, "carried session state not readable; closing");
            return false;
        }
        if !self.resume(now, carry.heartbeat_interval_ms) {
            return false;
        }
        for (slot, at) in carry.timers.iter().enumerate() {
            self.timers[slot] = at.map(Timestamp);
        }
        self.test_request_id = carry.test_request_id;
        self.recv = unread.unwrap_or_default();
        if let Some(written) = carry.seq_num_out_written {
            self.continue_after_written(written);
        }
        true
    }

    /// The previous gateway wrote every outbound MsgSeqNum up to `written`: whatever the store
    /// holds after it was stored but never written, and goes out first, as stored (the
    /// original message, not a PossDup copy: the counterparty never saw it), in order and
    /// before anything new. It takes the path of messages held behind a resend, so it is
    /// written a step at a time as the connection drains.
    fn continue_after_written(&mut self, written: u64) {
        let next = self.store.seq_num_next_out();
        self.seq_num_out_polled = written;
        self.seq_num_out_queued = written;
        if written.saturating_add(1) < next {
            tracing::info!(
                session = %self.config.target_comp_id,
                written,
                seq_num_next_out = next,
                "messages stored after the hand-over and never written: writing them first"
            );
            self.held_from = Some(written + 1);
        } else if written >= next {
            // The store holds less than was written (it was reset or lost its tail): nothing
            // to write; the counterparty's next gap, if any, is asked for as after a crash.
            tracing::warn!(
                session = %self.config.target_comp_id,
                written,
                seq_num_next_out = next,
                "the store is behind what the previous gateway wrote"
            );
            self.seq_num_out_polled = next.saturating_sub(1);
            self.seq_num_out_queued = self.seq_num_out_polled;
        }
    }

    /// The transport closed (by either side). Unsent bytes are dropped: whatever was stored
    /// reaches the counterparty by resend after it logs on again.
    pub fn on_disconnect(&mut self) {
        if self.state != State::Disconnected {
            tracing::info!(session = %self.config.target_comp_id, "disconnected");
        }
        self.state = State::Disconnected;
        self.timers = [None; TIMER_COUNT];
        self.recv.clear();
        self.transmit.clear();
        self.seq_num_out_queued = self.seq_num_out_polled;
        self.clear_queue();
        self.resend_target = None;
        self.end_resend();
    }

    /// The earliest deadline at which [`Session::handle_timeout`] must be called.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        self.timers.iter().flatten().min().copied()
    }

    /// Appends the bytes to write to `out` and forgets them.
    ///
    /// A ResendRequest is not answered in one go: its first step is here after the
    /// [`Session::handle_bytes`] that read it, and while [`Session::resend_pending`] holds, the
    /// driver calls [`Session::continue_resend`] for the next step once it has written
    /// everything this returned. That is the connection's write backpressure: a counterparty
    /// that asks for a million messages gets them as fast as it reads them, and the session
    /// never holds more than [`constants::RESEND_STEP_BYTES`] of them.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.transmit);
        self.transmit.clear();
        self.seq_num_out_polled = self.seq_num_out_queued;
    }

    /// Whether a resend is still being served (or the messages held behind it are still to be
    /// written): the driver should call [`Session::continue_resend`] once its writes drained,
    /// instead of waiting for input or a timer.
    pub fn resend_pending(&self) -> bool {
        self.replay.is_some() || self.held_from.is_some()
    }

    /// Produces the next step of the resend being served into the transmit buffer: up to
    /// [`constants::RESEND_STEP_BYTES`] (one message past it at most) and
    /// [`constants::RESEND_STEP_MESSAGES_MAX`] stored messages examined, so one call is short
    /// whatever the range. Once the range is served, the messages held back meanwhile follow
    /// as they were stored, then sending is live again. Does nothing when nothing is pending.
    pub fn continue_resend(&mut self, now: Timestamp) {
        let mut examined = 0;
        let mut resent = Message::default();
        while self.transmit.len() < constants::RESEND_STEP_BYTES
            && examined < constants::RESEND_STEP_MESSAGES_MAX
        {
            if let Some(Replay { next, end }) = self.replay {
                if next > end {
                    self.replay = None;
                    continue;
                }
                examined += 1;
                if self.stored_business(next, &mut resent) {
                    self.resend_one(now, &resent);
                    self.replay = Some(Replay {
                        next: next + 1,
                        end,
                    });
                    continue;
                }
                // A run of session-level (or no longer stored) messages becomes one gap fill.
                let mut fill_to = next + 1;
                while fill_to <= end
                    && examined < constants::RESEND_STEP_MESSAGES_MAX
                    && !self.stored_business(fill_to, &mut resent)
                {
                    fill_to += 1;
                    examined += 1;
                }
                self.send_gap_fill(now, next, fill_to);
                self.replay = Some(Replay { next: fill_to, end });
            } else if let Some(held) = self.held_from {
                if held >= self.store.seq_num_next_out() {
                    self.held_from = None;
                    break;
                }
                examined += 1;
                self.held_from = Some(held + 1);
                let Some(bytes) = self.store.sent(held) else {
                    continue;
                };
                // After our Logout only session-level messages go out (see `send_app`).
                if self.state != State::Active
                    && !(resent.parse_into(bytes).is_ok() && msg_type::is_admin(resent.msg_type()))
                {
                    continue;
                }
                self.transmit.extend_from_slice(bytes);
                self.seq_num_out_queued = held;
                self.stats.messages_out += 1;
                self.arm_heartbeat(now);
            } else {
                break;
            }
        }
    }

    /// Whether bytes wait in [`Session::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Hands back a message taken from an [`Event::Application`] once the driver is done with
    /// it, so the next business message is copied into its buffers instead of new ones. Optional:
    /// a message not handed back is simply freed; so is one beyond
    /// [`constants::SESSION_SPARE_MESSAGES_MAX`] kept, or larger than
    /// [`constants::SESSION_SPARE_MESSAGE_BYTES_MAX`].
    pub fn recycle(&mut self, message: Message) {
        if self.spare.len() < constants::SESSION_SPARE_MESSAGES_MAX
            && message.heap_bytes() <= constants::SESSION_SPARE_MESSAGE_BYTES_MAX
        {
            self.spare.push(message);
        }
    }

    /// Bytes read from the connection.
    pub fn handle_bytes(&mut self, now: Timestamp, bytes: &[u8]) {
        if matches!(self.state, State::Disconnected) {
            return;
        }
        self.recv.extend_from_slice(bytes);
        let mut consumed = 0;
        while !matches!(self.state, State::Disconnected) {
            match self.decoder.frame(&self.recv[consumed..]) {
                Frame::Incomplete => break,
                Frame::Garbled { skip, reason } => {
                    self.stats.garbled += 1;
                    tracing::warn!(session = %self.config.target_comp_id, ?reason, bytes = skip, "garbled input ignored");
                    consumed += skip;
                }
                Frame::Complete(len) => {
                    self.stats.frames_in += 1;
                    let mut message = std::mem::take(&mut self.scratch);
                    let parsed = message.parse_into(&self.recv[consumed..consumed + len]);
                    consumed += len;
                    let verdict = match parsed {
                        Ok(()) => self.handle_message(now, &message, now),
                        Err(reason) => {
                            self.stats.garbled += 1;
                            tracing::warn!(session = %self.config.target_comp_id, ?reason, "garbled message ignored");
                            Verdict::Done
                        }
                    };
                    self.scratch = message;
                    if matches!(verdict, Verdict::Stop) {
                        break;
                    }
                }
            }
        }
        self.recv.drain(..consumed.min(self.recv.len()));
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for timer in Timer::ALL {
            let due = self.timers[timer as usize].is_some_and(|at| at <= now);
            if !due || self.state == State::Disconnected {
                continue;
            }
            self.timers[timer as usize] = None;
            match timer {
                Timer::LogonDeadline => {
                    tracing::warn!(session = %self.config.target_comp_id, "no Logon before the deadline");
                    self.disconnect(DisconnectReason::LogonTimeout);
                }
                Timer::LogoutDeadline => self.disconnect(DisconnectReason::LogoutTimeout),
                Timer::PeerDead => {
                    tracing::warn!(session = %self.config.target_comp_id, "no answer to TestRequest");
                    self.disconnect(DisconnectReason::PeerSilent);
                }
                Timer::SessionEnd => self.logout(now, "end of session day"),
                Timer::TestRequest => {
                    self.test_request_id += 1;
                    let id = self.test_request_id;
                    self.send_admin(now, msg_type::TEST_REQUEST, |e| {
                        e.uint(tags::TEST_REQ_ID, id);
                    });
                    let wait = self.silence_allowance_ms();
                    self.set_timer(Timer::PeerDead, now.plus_millis(wait));
                }
                Timer::Heartbeat => {
                    self.send_admin(now, msg_type::HEARTBEAT, |_| {});
                }
            }
        }
    }

    /// Starts a Logout initiated by the gateway (operator action, end of day, shutdown); the
    /// connection closes on the answer or after the logout timeout.
    pub fn logout(&mut self, now: Timestamp, text: &str) {
        if !matches!(self.state, State::Active) {
            if self.state == State::AwaitingLogon {
                self.disconnect(DisconnectReason::LoggedOut);
            }
            return;
        }
        self.send_logout(now, text);
        self.state = State::LogoutSent;
        self.set_timer(
            Timer::LogoutDeadline,
            now.plus_millis(self.config.logout_timeout_ms),
        );
    }

    /// Sends a business message (or stores it for resend when the counterparty is not logged
    /// on) and returns its MsgSeqNum. `body` writes the fields after the standard header.
    pub fn send_app(
        &mut self,
        now: Timestamp,
        msg_type: &[u8],
        body: impl FnOnce(&mut Encoder),
    ) -> Result<u64, StoreError> {
        let seq = self.store.seq_num_next_out();
        self.encode_header(now, msg_type, seq);
        body(&mut self.encoder);
        let bytes = self.encoder.finish();
        self.store.append_sent(seq, bytes)?;
        if self.handed_over {
            stored_after_hand_over(&self.config.target_comp_id, seq, msg_type);
        }
        // After our Logout only the Logout exchange goes out; the message waits for resend.
        if self.state == State::Active {
            if self.replay.is_some() || self.held_from.is_some() {
                // Follows the resend, in MsgSeqNum order.
                self.held_from.get_or_insert(seq);
                return Ok(seq);
            }
            self.transmit.extend_from_slice(bytes);
            self.seq_num_out_queued = seq;
            self.stats.messages_out += 1;
            self.arm_heartbeat(now);
        }
        Ok(seq)
    }

    // ----- inbound -------------------------------------------------------------------------

    fn handle_message(
        &mut self,
        now: Timestamp,
        message: &Message,
        received_at: Timestamp,
    ) -> Verdict {
        if message.get(tags::BEGIN_STRING) != Some(self.config.begin_string.as_bytes()) {
            // Wrong BeginString: Logout and disconnect (before and after Logon alike).
            let text = "incorrect BeginString";
            return self.refuse(now, text, DisconnectReason::ProtocolViolation(text.into()));
        }
        if self.state == State::AwaitingLogon {
            return self.handle_logon(now, message);
        }
        self.heard_from_peer(now);

        // Wrong CompIDs: Reject (reason 9), Logout, disconnect. An absent one is not a wrong one:
        // the dictionary's header check answers it with "required tag missing" (reason 1).
        let comp_id_tag = match (
            message.get(tags::SENDER_COMP_ID),
            message.get(tags::TARGET_COMP_ID),
        ) {
            (Some(sender), _) if sender != self.config.target_comp_id.as_bytes() => {
                Some(tags::SENDER_COMP_ID)
            }
            (_, Some(target)) if target != self.config.sender_comp_id.as_bytes() => {
                Some(tags::TARGET_COMP_ID)
            }
            _ => None,
        };

        let seq = match message.uint(tags::MSG_SEQ_NUM) {
            Ok(seq) if seq <= constants::SEQ_NUM_MAX => seq,
            _ => {
                let text = "MsgSeqNum missing or invalid";
                return self.refuse(now, text, DisconnectReason::ProtocolViolation(text.into()));
            }
        };
        if let Some(tag) = comp_id_tag {
            self.send_reject(
                now,
                message,
                seq,
                SessionRejectReason::CompIdProblem,
                tag,
                "CompID problem",
            );
            // Only an in-sequence message takes its number: one beyond a gap must not make the
            // gap disappear.
            if seq == self.seq_num_next_in {
                self.consume_in(seq);
            }
            let text = "CompID problem";
            return self.refuse(now, text, DisconnectReason::ProtocolViolation(text.into()));
        }

        let msg_type = message.msg_type();
        if msg_type == msg_type::LOGON && self.state == State::Active && reset_requested(message) {
            // A Logon with ResetSeqNumFlag=Y while logged on restarts both sides at 1; its
            // MsgSeqNum (1) is below the expected one by design, so it bypasses the check.
            return self.handle_reset_logon(now, message, seq);
        }
        let gap_fill = message
            .bool_opt(tags::GAP_FILL_FLAG)
            .ok()
            .flatten()
            .unwrap_or(false);
        if msg_type == msg_type::SEQUENCE_RESET && !gap_fill {
            // Reset mode ignores MsgSeqNum.
            return self.handle_sequence_reset(now, message, seq);
        }

        let expected = self.seq_num_next_in;
        if seq > expected {
            return self.handle_seq_too_high(now, message, seq, expected, received_at);
        }
        if seq < expected {
            return self.handle_seq_too_low(now, message, seq, expected);
        }
        match self.process_in_sequence(now, message, seq, received_at, false) {
            Verdict::Stop => Verdict::Stop,
            Verdict::Done => self.drain_queue(now),
        }
    }

    fn handle_logon(&mut self, now: Timestamp, message: &Message) -> Verdict {
        if message.msg_type() != msg_type::LOGON {
            tracing::warn!(session = %self.config.target_comp_id, "first message is not a Logon; disconnecting");
            self.disconnect(DisconnectReason::FirstMessageNotLogon);
            return Verdict::Stop;
        }
        if message.get(tags::SENDER_COMP_ID) != Some(self.config.target_comp_id.as_bytes())
            || message.get(tags::TARGET_COMP_ID) != Some(self.config.sender_comp_id.as_bytes())
        {
            // Closed without a message, as the acceptor does for a pair no session has: the
            // peer is not authenticated, and a Logout would take one of our numbers.
            tracing::warn!(session = %self.config.target_comp_id, "Logon with other CompIDs than the session's: closed without an answer");
            self.disconnect(DisconnectReason::LogonRefused("unknown CompID pair".into()));
            return Verdict::Stop;
        }
        if let Err(problem) = self.dictionary.validate(message) {
            let text = format!("invalid Logon: {}", describe(problem));
            return self.refuse_logon(now, &text);
        }
        let Some(window) = self.config.schedule.window(now) else {
            return self.refuse_logon(now, "outside of session time");
        };
        if let Some(text) = self.sending_time_problem(message, now) {
            return self.refuse_logon(now, &text);
        }
        match message.uint(tags::ENCRYPT_METHOD) {
            Ok(0) => {}
            _ => return self.refuse_logon(now, "EncryptMethod must be 0 (none)"),
        }
        let heart_bt_int = match self.heart_bt_int(message) {
            Ok(value) => value,
            Err(text) => return self.refuse_logon(now, &text),
        };
        let seq = match message.uint(tags::MSG_SEQ_NUM) {
            Ok(seq) if seq <= constants::SEQ_NUM_MAX => seq,
            _ => return self.refuse_logon(now, "MsgSeqNum missing or invalid"),
        };
        let reset_requested = reset_requested(message);

        // A new session day starts from 1 on both sides.
        let period = window.start.as_secs();
        if self.store.session_period() != period {
            tracing::info!(session = %self.config.target_comp_id, period, "new session day: sequence numbers reset");
            if let Err(error) = self.store.reset(period) {
                return self.store_failed(now, error);
            }
            self.seq_num_next_in = 1;
            self.unconfirmed.clear();
        }
        if reset_requested {
            if seq != 1 {
                return self.refuse_logon(now, "ResetSeqNumFlag=Y requires MsgSeqNum=1");
            }
            if let Err(error) = self.store.reset(period) {
                return self.store_failed(now, error);
            }
            self.seq_num_next_in = 1;
            self.unconfirmed.clear();
        }
        let expected = self.seq_num_next_in;
        if seq < expected {
            let text = format!("MsgSeqNum too low, expecting {expected} but received {seq}");
            return self.refuse_logon(now, &text);
        }

        self.heartbeat_interval_ms = heart_bt_int * 1000;
        self.state = State::Active;
        self.decoder.set_body_length_max(constants::BODY_LENGTH_MAX);
        self.timers[Timer::LogonDeadline as usize] = None;
        self.stats.logons += 1;
        self.send_admin(now, msg_type::LOGON, |e| {
            e.uint(tags::ENCRYPT_METHOD, 0)
                .uint(tags::HEART_BT_INT, heart_bt_int);
            if reset_requested {
                e.bool(tags::RESET_SEQ_NUM_FLAG, true);
            }
        });
        tracing::info!(session = %self.config.target_comp_id, heart_bt_int, seq, expected, "logged on");
        self.events.push_back(Event::LoggedOn {
            reset: reset_requested,
        });
        if window.end != Timestamp(u64::MAX) {
            self.set_timer(Timer::SessionEnd, window.end);
        }
        self.heard_from_peer(now);
        if seq > expected {
            // Accept, then ask for what we missed. The Logon's own number is consumed once the
            // gap before it is filled.
            self.enqueue(
                seq,
                Queued {
                    received_at: now,
                    message: message.clone(),
                    served: true,
                },
            );
            self.send_resend_request(now, expected, seq);
        } else {
            self.consume_in(seq);
        }
        Verdict::Done
    }

    /// The HeartBtInt a Logon asks for, if it is in the configured range; else the Text of the
    /// Logout that refuses it.
    fn heart_bt_int(&self, message: &Message) -> Result<u64, String> {
        let range = self.config.heart_bt_int_min_s..=self.config.heart_bt_int_max_s;
        match message.uint(tags::HEART_BT_INT) {
            Ok(value) if range.contains(&value) => Ok(value),
            _ => Err(format!(
                "HeartBtInt must be between {} and {} seconds",
                range.start(),
                range.end()
            )),
        }
    }

    /// A Logon with ResetSeqNumFlag=Y on a logged-on session: both sides restart at 1 without
    /// a new connection. It is answered with a Logon carrying 141=Y and MsgSeqNum 1; whatever
    /// of the old numbering was not delivered is not resent, as for a reset at connect.
    fn handle_reset_logon(&mut self, now: Timestamp, message: &Message, seq: u64) -> Verdict {
        if let Err(problem) = self.dictionary.validate(message) {
            let text = format!("invalid Logon: {}", describe(problem));
            return self.refuse_logon(now, &text);
        }
        if seq != 1 {
            return self.refuse_logon(now, "ResetSeqNumFlag=Y requires MsgSeqNum=1");
        }
        if let Some(text) = self.sending_time_problem(message, now) {
            return self.refuse_logon(now, &text);
        }
        let heart_bt_int = match self.heart_bt_int(message) {
            Ok(value) => value,
            Err(text) => return self.refuse_logon(now, &text),
        };
        let period = self.store.session_period();
        if let Err(error) = self.store.reset(period) {
            return self.store_failed(now, error);
        }
        tracing::info!(session = %self.config.target_comp_id, "ResetSeqNumFlag=Y while logged on: sequence numbers reset");
        self.seq_num_next_in = 1;
        self.unconfirmed.clear();
        self.clear_queue();
        self.resend_target = None;
        // A resend of the old numbering in progress, and what it held back, end with it.
        self.end_resend();
        self.heartbeat_interval_ms = heart_bt_int * 1000;
        self.stats.logons += 1;
        self.send_admin(now, msg_type::LOGON, |e| {
            e.uint(tags::ENCRYPT_METHOD, 0)
                .uint(tags::HEART_BT_INT, heart_bt_int)
                .bool(tags::RESET_SEQ_NUM_FLAG, true);
        });
        self.events.push_back(Event::LoggedOn { reset: true });
        self.consume_in(seq);
        Verdict::Done
    }

    fn handle_seq_too_high(
        &mut self,
        now: Timestamp,
        message: &Message,
        seq: u64,
        expected: u64,
        received_at: Timestamp,
    ) -> Verdict {
        let msg_type = message.msg_type();
        if msg_type == msg_type::LOGOUT {
            // The counterparty is leaving (or answering ours); the gap is requested after its
            // next Logon.
            if self.state == State::Active {
                self.send_logout(now, "logout acknowledged");
            }
            self.disconnect(DisconnectReason::LoggedOut);
            return Verdict::Stop;
        }
        let served = msg_type == msg_type::RESEND_REQUEST;
        if served {
            // Serve their request before asking for ours, so neither side waits on the other;
            // in sequence it only takes its number.
            self.serve_resend_request(now, message, seq);
        }
        if self.queue.len() >= constants::INBOUND_QUEUE_MAX {
            let text = "too many messages queued behind a sequence gap";
            return self.refuse(now, text, DisconnectReason::ProtocolViolation(text.into()));
        }
        if self.queue_bytes + queued_bytes(message) > constants::INBOUND_QUEUE_BYTES_MAX {
            let text = "too many bytes queued behind a sequence gap";
            return self.refuse(now, text, DisconnectReason::ProtocolViolation(text.into()));
        }
        self.enqueue(
            seq,
            Queued {
                received_at,
                message: message.clone(),
                served,
            },
        );
        match self.resend_target {
            Some(target) if target >= expected => {
                self.resend_target = Some(target.max(seq));
            }
            _ => self.send_resend_request(now, expected, seq),
        }
        Verdict::Done
    }

    fn handle_seq_too_low(
        &mut self,
        now: Timestamp,
        message: &Message,
        seq: u64,
        expected: u64,
    ) -> Verdict {
        let poss_dup = message
            .bool_opt(tags::POSS_DUP_FLAG)
            .ok()
            .flatten()
            .unwrap_or(false);
        if !poss_dup {
            let text = format!("MsgSeqNum too low, expecting {expected} but received {seq}");
            tracing::warn!(session = %self.config.target_comp_id, %text);
            return self.refuse(
                now,
                &text,
                DisconnectReason::ProtocolViolation(text.clone()),
            );
        }
        if let Some(verdict) = self.poss_dup_problem(now, message, seq, false) {
            return verdict;
        }
        // A duplicate we already processed: ignore.
        Verdict::Done
    }

    /// Checks OrigSendingTime on a PossDupFlag=Y message; `Some` when a Reject or Logout was
    /// sent. `consume` says whether the rejected message takes its sequence number.
    fn poss_dup_problem(
        &mut self,
        now: Timestamp,
        message: &Message,
        seq: u64,
        consume: bool,
    ) -> Option<Verdict> {
        if message.msg_type() == msg_type::SEQUENCE_RESET {
            return None;
        }
        let orig = message.timestamp_opt(tags::ORIG_SENDING_TIME);
        let sending = message.timestamp_opt(tags::SENDING_TIME);
        match (orig, sending) {
            (Ok(None), _) => {
                self.send_reject(
                    now,
                    message,
                    seq,
                    SessionRejectReason::RequiredTagMissing,
                    tags::ORIG_SENDING_TIME,
                    "PossDupFlag=Y without OrigSendingTime",
                );
                if consume {
                    self.consume_in(seq);
                }
                Some(Verdict::Done)
            }
            (Ok(Some(orig)), Ok(Some(sending))) if orig > sending => {
                self.send_reject(
                    now,
                    message,
                    seq,
                    SessionRejectReason::SendingTimeAccuracyProblem,
                    tags::ORIG_SENDING_TIME,
                    "OrigSendingTime later than SendingTime",
                );
                if consume {
                    self.consume_in(seq);
                }
                let text = "SendingTime accuracy problem";
                Some(self.refuse(now, text, DisconnectReason::ProtocolViolation(text.into())))
            }
            _ => None,
        }
    }

    /// Processes the message that carries the expected number. Never drains the queue itself
    /// (the callers loop), so a long queue cannot deepen the stack.
    fn process_in_sequence(
        &mut self,
        now: Timestamp,
        message: &Message,
        seq: u64,
        received_at: Timestamp,
        served: bool,
    ) -> Verdict {
        if served {
            self.consume_in(seq);
            return Verdict::Done;
        }
        let msg_type = message.msg_type();
        if let Err(problem) = self.validate(message) {
            let text = describe(problem);
            self.send_reject(now, message, seq, problem.reason, problem.tag, &text);
            self.consume_in(seq);
            return Verdict::Done;
        }
        if message
            .bool_opt(tags::POSS_DUP_FLAG)
            .ok()
            .flatten()
            .unwrap_or(false)
            && let Some(verdict) = self.poss_dup_problem(now, message, seq, true)
        {
            return verdict;
        }
        if let Some(text) = self.sending_time_problem(message, received_at) {
            self.send_reject(
                now,
                message,
                seq,
                SessionRejectReason::SendingTimeAccuracyProblem,
                tags::SENDING_TIME,
                &text,
            );
            self.consume_in(seq);
            return self.refuse(
                now,
                "SendingTime accuracy problem",
                DisconnectReason::ProtocolViolation(text),
            );
        }

        match msg_type {
            msg_type::HEARTBEAT | msg_type::REJECT => {}
            msg_type::TEST_REQUEST => {
                let id = message.get(tags::TEST_REQ_ID).unwrap_or_default().to_vec();
                self.send_admin(now, msg_type::HEARTBEAT, |e| {
                    e.bytes(tags::TEST_REQ_ID, &id);
                });
            }
            msg_type::RESEND_REQUEST => self.serve_resend_request(now, message, seq),
            msg_type::SEQUENCE_RESET => {
                // Gap fill: move the expected number forward, never back.
                match message.uint(tags::NEW_SEQ_NO) {
                    Ok(new_seq) if new_seq > constants::SEQ_NUM_MAX => {
                        self.reject_beyond_max(now, message, seq);
                    }
                    Ok(new_seq) if new_seq > seq => {
                        self.set_next_in(new_seq);
                        return Verdict::Done;
                    }
                    _ => {
                        self.reject_lowering(now, message, seq);
                    }
                }
            }
            msg_type::LOGOUT => {
                self.consume_in(seq);
                if self.state == State::Active {
                    self.send_logout(now, "logout acknowledged");
                }
                self.disconnect(DisconnectReason::LoggedOut);
                return Verdict::Stop;
            }
            msg_type::LOGON => {
                // (A Logon queued behind the gap it announced arrives here as `served`.)
                self.consume_in(seq);
                let text = "Logon received while already logged on";
                return self.refuse(now, text, DisconnectReason::ProtocolViolation(text.into()));
            }
            _ => {
                // Also after our own Logout: the counterparty will not resend a message whose
                // number was taken, so it must reach the application (or be answered).
                self.unconfirmed.push_back(seq);
                let mut copy = self.spare.pop().unwrap_or_default();
                copy.copy_from(message);
                self.events.push_back(Event::Application(copy));
            }
        }
        self.consume_in(seq);
        Verdict::Done
    }

    /// The session-level check of an in-sequence message. A FIX 4.4 message type the venue
    /// does not take (News, Email...) passes with only its header checked: it is a valid message
    /// at the session level, takes its number and reaches the application, which answers it
    /// with a BusinessMessageReject (380=3). A MsgType that is not FIX 4.4 at all stays a
    /// session Reject (373=11).
    fn validate(&self, message: &Message) -> Result<(), FieldProblem> {
        match self.dictionary.validate(message) {
            Err(problem)
                if problem.reason == SessionRejectReason::InvalidMsgType
                    && msg_type::is_fix44(message.msg_type()) =>
            {
                // The dictionary reports the codec's own findings before an unknown MsgType, so
                // the frame's fields are sound; the standard header is all that applies.
                let missing = [
                    tags::SENDER_COMP_ID,
                    tags::TARGET_COMP_ID,
                    tags::SENDING_TIME,
                ]
                .into_iter()
                .find(|&tag| message.get(tag).is_none());
                match missing {
                    Some(tag) => Err(FieldProblem {
                        reason: SessionRejectReason::RequiredTagMissing,
                        tag,
                    }),
                    None => Ok(()),
                }
            }
            other => other,
        }
    }

    /// A SequenceReset may only move the expected number forward (373=5 on NewSeqNo).
    fn reject_lowering(&mut self, now: Timestamp, message: &Message, seq: u64) {
        self.send_reject(
            now,
            message,
            seq,
            SessionRejectReason::ValueIsIncorrect,
            tags::NEW_SEQ_NO,
            "attempt to lower sequence number",
        );
    }

    /// A SequenceReset whose NewSeqNo no session could count on from (373=5 on NewSeqNo); see
    /// [`constants::SEQ_NUM_MAX`].
    fn reject_beyond_max(&mut self, now: Timestamp, message: &Message, seq: u64) {
        let text = format!(
            "NewSeqNo above the largest sequence number accepted ({})",
            constants::SEQ_NUM_MAX
        );
        self.send_reject(
            now,
            message,
            seq,
            SessionRejectReason::ValueIsIncorrect,
            tags::NEW_SEQ_NO,
            &text,
        );
    }

    fn handle_sequence_reset(&mut self, now: Timestamp, message: &Message, seq: u64) -> Verdict {
        match message.uint(tags::NEW_SEQ_NO) {
            Ok(new_seq) if new_seq > constants::SEQ_NUM_MAX => {
                self.reject_beyond_max(now, message, seq);
                Verdict::Done
            }
            Ok(new_seq) => {
                let expected = self.seq_num_next_in;
                if new_seq > expected {
                    tracing::info!(session = %self.config.target_comp_id, from = expected, to = new_seq, "SequenceReset-Reset");
                    self.set_next_in(new_seq);
                    self.drain_queue(now)
                } else if new_seq == expected {
                    tracing::warn!(session = %self.config.target_comp_id, new_seq, "SequenceReset to the expected number");
                    Verdict::Done
                } else {
                    self.reject_lowering(now, message, seq);
                    Verdict::Done
                }
            }
            Err(error) => {
                let problem = error.reject();
                let text = describe(problem);
                self.send_reject(now, message, seq, problem.reason, problem.tag, &text);
                Verdict::Done
            }
        }
    }

    /// Processes queued messages that are now in sequence; drops those a gap fill skipped.
    fn drain_queue(&mut self, now: Timestamp) -> Verdict {
        loop {
            let expected = self.seq_num_next_in;
            while let Some(entry) = self.queue.first_entry() {
                if *entry.key() < expected {
                    let skipped = entry.remove();
                    self.queue_bytes -= queued_bytes(&skipped.message);
                } else {
                    break;
                }
            }
            let Some(entry) = self.queue.first_entry() else {
                break;
            };
            if *entry.key() != expected {
                break;
            }
            let queued = entry.remove();
            self.queue_bytes -= queued_bytes(&queued.message);
            if let Verdict::Stop = self.process_in_sequence(
                now,
                &queued.message,
                expected,
                queued.received_at,
                queued.served,
            ) {
                return Verdict::Stop;
            }
        }
        if let Some(target) = self.resend_target
            && self.seq_num_next_in > target
            && self.queue.is_empty()
        {
            tracing::info!(session = %self.config.target_comp_id, "sequence gap filled");
            self.resend_target = None;
        }
        Verdict::Done
    }

    /// Queues a message beyond the gap, keeping `queue_bytes` the sum of what is queued. The
    /// caller checked both bounds; a number already queued is replaced, not counted twice.
    fn enqueue(&mut self, seq: u64, queued: Queued) {
        self.queue_bytes += queued_bytes(&queued.message);
        if let Some(replaced) = self.queue.insert(seq, queued) {
            self.queue_bytes -= queued_bytes(&replaced.message);
        }
    }

    fn clear_queue(&mut self) {
        self.queue.clear();
        self.queue_bytes = 0;
    }

    fn consume_in(&mut self, seq: u64) {
        let next = seq.saturating_add(1);
        if next > self.seq_num_next_in {
            self.set_next_in(next);
        }
    }

    fn set_next_in(&mut self, seq: u64) {
        self.seq_num_next_in = seq;
        self.persist_next_in();
    }

    /// Writes the inbound number the store may hold: the expected one, or the first business
    /// message not yet confirmed.
    fn persist_next_in(&mut self) {
        let target = self
            .unconfirmed
            .front()
            .map_or(self.seq_num_next_in, |&first| {
                first.min(self.seq_num_next_in)
            });
        if self.store.seq_num_next_in() == target {
            return;
        }
        if let Err(error) = self.store.set_seq_num_next_in(target) {
            tracing::error!(session = %self.config.target_comp_id, %error, "cannot persist inbound sequence number");
            self.disconnect(DisconnectReason::StoreFailed(error.to_string()));
        }
    }

    fn heard_from_peer(&mut self, now: Timestamp) {
        self.timers[Timer::PeerDead as usize] = None;
        if self.heartbeat_interval_ms > 0 {
            let wait = self.silence_allowance_ms();
            self.set_timer(Timer::TestRequest, now.plus_millis(wait));
        }
    }

    fn silence_allowance_ms(&self) -> u64 {
        self.heartbeat_interval_ms
            + self.heartbeat_interval_ms * self.config.heartbeat_margin_pct / 100
    }

    fn sending_time_problem(&self, message: &Message, now: Timestamp) -> Option<String> {
        if !self.config.check_latency {
            return None;
        }
        let sending = message.timestamp_opt(tags::SENDING_TIME).ok().flatten()?;
        let off = sending.abs_diff_millis(now);
        (off > self.config.max_latency_ms).then(|| {
            format!(
                "SendingTime accuracy problem: {off} ms from gateway time (limit {} ms)",
                self.config.max_latency_ms
            )
        })
    }

    // ----- resend -----------------------------------------------------------------------------

    fn serve_resend_request(&mut self, now: Timestamp, message: &Message, seq: u64) {
        let begin = message.uint(tags::BEGIN_SEQ_NO);
        let end = message.uint(tags::END_SEQ_NO);
        let (begin, end) = match (begin, end) {
            (Ok(begin), Ok(end)) if begin >= 1 && (end == 0 || end >= begin) => (begin, end),
            (Err(error), _) | (_, Err(error)) => {
                let problem = error.reject();
                self.send_reject(
                    now,
                    message,
                    seq,
                    problem.reason,
                    problem.tag,
                    &describe(problem),
                );
                return;
            }
            _ => {
                self.send_reject(
                    now,
                    message,
                    seq,
                    SessionRejectReason::ValueIsIncorrect,
                    tags::END_SEQ_NO,
                    "EndSeqNo lower than BeginSeqNo",
                );
                return;
            }
        };
        let next_out = self.store.seq_num_next_out();
        let last = next_out - 1;
        let end = if end == 0 || end > last { last } else { end };
        self.stats.resends_served += 1;
        if begin > end {
            tracing::info!(session = %self.config.target_comp_id, begin, end, "ResendRequest for nothing sent");
            return;
        }
        // A request while another is served: serve the union of what remains and what is asked
        // now, so repeating a request costs nothing more than asking once (and logs nothing more).
        let replay = match self.replay {
            Some(current) => {
                tracing::debug!(session = %self.config.target_comp_id, begin, end, "ResendRequest merged with the one being served");
                Replay {
                    next: current.next.min(begin),
                    end: current.end.max(end),
                }
            }
            None => {
                tracing::info!(session = %self.config.target_comp_id, begin, end, "serving ResendRequest");
                Replay { next: begin, end }
            }
        };
        self.replay = Some(replay);
        if let Some(held) = self.held_from
            && held <= replay.end
        {
            // Held messages inside the range are resent with it.
            self.held_from = Some(replay.end + 1);
        }
        // The first step at once, unless a previous one is still unwritten: many requests in
        // one read must not each add a step.
        if self.transmit.len() < constants::RESEND_STEP_BYTES {
            self.continue_resend(now);
        }
    }

    /// Whether the message stored under `seq` is a business message; if so it is parsed into
    /// `into`.
    fn stored_business(&self, seq: u64, into: &mut Message) -> bool {
        match self.store.sent(seq) {
            Some(bytes) => into.parse_into(bytes).is_ok() && !msg_type::is_admin(into.msg_type()),
            None => false,
        }
    }

    /// Stops serving a resend and releases what was held behind it to a later resend.
    fn end_resend(&mut self) {
        self.replay = None;
        self.held_from = None;
    }

    /// Re-sends a stored business message with PossDupFlag=Y, OrigSendingTime = its original
    /// SendingTime, a new SendingTime, and its original MsgSeqNum.
    fn resend_one(&mut self, now: Timestamp, original: &Message) {
        let orig_sending_time = original.get(tags::SENDING_TIME).unwrap_or_default();
        self.encoder.start(original.msg_type());
        for (tag, value) in original.fields() {
            match tag {
                tags::BEGIN_STRING | tags::BODY_LENGTH | tags::MSG_TYPE | tags::CHECK_SUM => {}
                tags::POSS_DUP_FLAG | tags::ORIG_SENDING_TIME => {}
                tags::SENDING_TIME => {
                    self.encoder
                        .timestamp(tags::SENDING_TIME, now)
                        .bool(tags::POSS_DUP_FLAG, true)
                        .bytes(tags::ORIG_SENDING_TIME, orig_sending_time);
                }
                _ => {
                    self.encoder.bytes(tag, value);
                }
            }
        }
        let bytes = self.encoder.finish();
        self.transmit.extend_from_slice(bytes);
        self.stats.messages_out += 1;
        self.arm_heartbeat(now);
    }

    fn send_gap_fill(&mut self, now: Timestamp, seq: u64, new_seq: u64) {
        self.encode_header(now, msg_type::SEQUENCE_RESET, seq);
        self.encoder
            .bool(tags::POSS_DUP_FLAG, true)
            .timestamp(tags::ORIG_SENDING_TIME, now)
            .bool(tags::GAP_FILL_FLAG, true)
            .uint(tags::NEW_SEQ_NO, new_seq);
        let bytes = self.encoder.finish();
        self.transmit.extend_from_slice(bytes);
        self.stats.messages_out += 1;
        self.arm_heartbeat(now);
    }

    fn send_resend_request(&mut self, now: Timestamp, begin: u64, seen: u64) {
        tracing::info!(session = %self.config.target_comp_id, begin, seen, "sequence gap: sending ResendRequest");
        self.resend_target = Some(seen);
        self.stats.resend_requests_sent += 1;
        self.send_admin(now, msg_type::RESEND_REQUEST, |e| {
            e.uint(tags::BEGIN_SEQ_NO, begin).uint(tags::END_SEQ_NO, 0);
        });
    }

    // ----- outbound ---------------------------------------------------------------------------

    fn encode_header(&mut self, now: Timestamp, msg_type: &[u8], seq: u64) {
        self.encoder
            .start(msg_type)
            .str(tags::SENDER_COMP_ID, &self.config.sender_comp_id)
            .str(tags::TARGET_COMP_ID, &self.config.target_comp_id)
            .uint(tags::MSG_SEQ_NUM, seq)
            .timestamp(tags::SENDING_TIME, now);
    }

    /// Sends a session-level message; it is stored like any other so a resend can gap-fill it.
    fn send_admin(&mut self, now: Timestamp, msg_type: &[u8], body: impl FnOnce(&mut Encoder)) {
        let seq = self.store.seq_num_next_out();
        self.encode_header(now, msg_type, seq);
        body(&mut self.encoder);
        let bytes = self.encoder.finish();
        if let Err(error) = self.store.append_sent(seq, bytes) {
            tracing::error!(session = %self.config.target_comp_id, %error, "cannot store outbound message");
            self.disconnect(DisconnectReason::StoreFailed(error.to_string()));
            return;
        }
        if self.handed_over {
            stored_after_hand_over(&self.config.target_comp_id, seq, msg_type);
        }
        if self.replay.is_some() || self.held_from.is_some() {
            if msg_type == msg_type::LOGOUT {
                // The session is ending: the Logout goes out now, and what the resend did not
                // reach yet is resent after the next Logon, like anything else unsent.
                self.replay = None;
                self.held_from = None;
            } else {
                // Follows the resend, in MsgSeqNum order.
                self.held_from.get_or_insert(seq);
                return;
            }
        }
        self.transmit.extend_from_slice(bytes);
        self.seq_num_out_queued = seq;
        self.stats.messages_out += 1;
        self.arm_heartbeat(now);
    }

    fn arm_heartbeat(&mut self, now: Timestamp) {
        if self.heartbeat_interval_ms > 0 && matches!(self.state, State::Active | State::LogoutSent)
        {
            self.set_timer(
                Timer::Heartbeat,
                now.plus_millis(self.heartbeat_interval_ms),
            );
        }
    }

    fn send_reject(
        &mut self,
        now: Timestamp,
        message: &Message,
        seq: u64,
        reason: SessionRejectReason,
        tag: u32,
        text: &str,
    ) {
        tracing::warn!(session = %self.config.target_comp_id, seq, ?reason, tag, text, "rejecting message");
        self.stats.rejects_sent += 1;
        let ref_msg_type = message.msg_type().to_vec();
        self.send_admin(now, msg_type::REJECT, |e| {
            e.uint(tags::REF_SEQ_NUM, seq);
            if tag != 0 {
                e.uint(tags::REF_TAG_ID, u64::from(tag));
            }
            if !ref_msg_type.is_empty() {
                e.bytes(tags::REF_MSG_TYPE, &ref_msg_type);
            }
            e.uint(tags::SESSION_REJECT_REASON, u64::from(reason.code()))
                .str(tags::TEXT, text);
        });
    }

    fn send_logout(&mut self, now: Timestamp, text: &str) {
        self.send_admin(now, msg_type::LOGOUT, |e| {
            e.str(tags::TEXT, text);
        });
    }

    /// Logout with `text`, then disconnect.
    fn refuse(&mut self, now: Timestamp, text: &str, reason: DisconnectReason) -> Verdict {
        if self.state != State::Disconnected {
            self.send_logout(now, text);
            self.disconnect(reason);
        }
        Verdict::Stop
    }

    fn refuse_logon(&mut self, now: Timestamp, text: &str) -> Verdict {
        tracing::warn!(session = %self.config.target_comp_id, text, "Logon refused");
        self.refuse(now, text, DisconnectReason::LogonRefused(text.to_string()))
    }

    fn store_failed(&mut self, now: Timestamp, error: StoreError) -> Verdict {
        tracing::error!(session = %self.config.target_comp_id, %error, "session store failed");
        let _ = now;
        self.disconnect(DisconnectReason::StoreFailed(error.to_string()));
        Verdict::Stop
    }

    fn disconnect(&mut self, reason: DisconnectReason) {
        if self.state == State::Disconnected {
            return;
        }
        self.state = State::Disconnected;
        self.timers = [None; TIMER_COUNT];
        self.clear_queue();
        self.resend_target = None;
        self.end_resend();
        self.events.push_back(Event::Disconnect(reason));
    }

    fn set_timer(&mut self, timer: Timer, at: Timestamp) {
        self.timers[timer as usize] = Some(at);
    }
}

/// Whether a Logon asks for ResetSeqNumFlag=Y.
/// A message of session `target` was stored after [`Session::carry`]: this process will not
/// write it, the successor will (see [`SessionCarry::seq_num_out_written`]). Said, because it
/// means something reached the session after the barrier meant everything had settled.
fn stored_after_hand_over(target: &str, seq: u64, msg_type: &[u8]) {
    tracing::warn!(
        session = %target,
        seq,
        msg_type = %String::from_utf8_lossy(msg_type),
        "message stored after the session was handed over; the successor writes it"
    );
}

fn reset_requested(message: &Message) -> bool {
    message
        .bool_opt(tags::RESET_SEQ_NUM_FLAG)
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// What a queued message costs the session: its frame and its field index, both held until the
/// gap closes.
fn queued_bytes(message: &Message) -> usize {
    message.as_bytes().len() + message.fields().count() * std::mem::size_of::<(u32, u32, u32)>()
}

/// The Text of a Reject for a field problem.
fn describe(problem: FieldProblem) -> String {
    let what = match problem.reason {
        SessionRejectReason::InvalidTagNumber => "invalid tag number",
        SessionRejectReason::RequiredTagMissing => "required tag missing",
        SessionRejectReason::TagNotDefinedForMessageType => "tag not defined for this message type",
        SessionRejectReason::UndefinedTag => "undefined tag",
        SessionRejectReason::TagSpecifiedWithoutValue => "tag specified without a value",
        SessionRejectReason::ValueIsIncorrect => "value is incorrect (out of range) for this tag",
        SessionRejectReason::IncorrectDataFormat => "incorrect data format for value",
        SessionRejectReason::CompIdProblem => "CompID problem",
        SessionRejectReason::SendingTimeAccuracyProblem => "SendingTime accuracy problem",
        SessionRejectReason::InvalidMsgType => "invalid MsgType",
        SessionRejectReason::TagAppearsMoreThanOnce => "tag appears more than once",
        SessionRejectReason::TagSpecifiedOutOfRequiredOrder => {
            "tag specified out of required order"
        }
        SessionRejectReason::RepeatingGroupFieldsOutOfOrder => {
            "repeating group fields out of order"
        }
        SessionRejectReason::IncorrectNumInGroupCount => "incorrect NumInGroup count",
        SessionRejectReason::Other => "other",
    };
    if problem.tag == 0 {
        what.to_string()
    } else {
        format!("{what}: tag {}", problem.tag)
    }
}

/// Reads the CompIDs and BeginString of a connection's first frame, so the acceptor can find
/// the session it belongs to before any session state is touched.
pub fn identify(frame: &Message) -> Option<(&[u8], &[u8], &[u8])> {
    Some((
        frame.get(tags::BEGIN_STRING)?,
        frame.get(tags::SENDER_COMP_ID)?,
        frame.get(tags::TARGET_COMP_ID)?,
    ))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
