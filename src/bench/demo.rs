//! A whole venue under load while its engine is upgraded and crashes: the driver behind
//! `baton demo` and the soak test.
//!
//! It starts two engines (blue writing snapshot format 1, the "old build"; green format 2, the "new
//! build") and a gateway as real processes in a scratch directory, connects simulated
//! counterparties that trade continuously, and meanwhile runs a release the way an operator would:
//! a change naming the build is filed and approved by a second operator, a canary moves a quarter
//! of the symbols to the standby and back, authority switches back and forth under that change, and
//! the gateway process itself is upgraded in place (its sockets and sessions handed to a new
//! process under the same change), the gateway process is SIGKILLed (its supervisor holds the
//! sockets and restarts it), and the authoritative engine is SIGKILLed (and restarted, so
//! it rejoins as the standby). The counterparties behave as FIX asks of a session: a gap is asked
//! for by ResendRequest, a ResendRequest is answered (orders again marked PossDup, the rest gap
//! filled), a copy of a message already processed is dropped and a garbled frame is skipped; a
//! gateway kill may cost gaps that way, which are counted, never a disconnect. At the end
//! it checks what the counterparties saw — no Logout, no disconnect, no sequence gap except
//! around a gateway kill and every gap closed, no sequence
//! number repeated without PossDup, exactly one acknowledgement per order, no ExecID twice — and
//! reconciles it: per symbol the quantity bought in fills equals the quantity sold, and every
//! order's last report says what a single engine's replay of the journal says (CumQty and
//! OrdStatus). Last, both engines' books equal that replay, and the audit log's chain verifies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::initiator::{Initiator, InitiatorConfig, InitiatorError};
use super::venue::{Venue, VenueConfig, VenueError, io};
use crate::control::api::{ControlReply, ControlRequest, SwitchReport, SwitchScope};
use crate::control::change::{ChangeSummary, rfc3339, scope_text};
use crate::engine::{
    Digest, Engine, EngineConfig, ExecutionReport, FrozenState, Input, MatchingEngine, Output, Qty,
    Report, SnapshotError,
};
use crate::fix::codec::{Encoder, Message};
use crate::fix::time::Timestamp;
use crate::link::{self, Frame, LinkAddr};

/// Why the demo could not run (as opposed to finding a problem, which the report shows).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The venue did not come up or answer as expected.
    #[error("{0}")]
    Venue(String),
    /// Starting or driving the venue's processes failed.
    #[error(transparent)]
    Process(#[from] VenueError),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The `baton` binary to start the venue with.
    pub program: PathBuf,
    /// Scratch directory for config, stores, journal and sockets.
    pub dir: PathBuf,
    /// Simulated counterparties.
    pub sessions: usize,
    /// Orders each counterparty sends per second.
    pub orders_per_session_per_s: u64,
    /// Canaries before the switches: each moves a quarter of the symbols to the standby, trades,
    /// and is rolled back.
    pub canaries: usize,
    /// Planned switches, alternating blue → green → blue...
    pub switches: usize,
    /// SIGKILLs of the authoritative engine, after the switches.
    pub kills: usize,
    /// Planned upgrades of the gateway process itself, after the switches: the sockets and
    /// sessions move to a new gateway process started from the change's artifact.
    pub gateway_upgrades: usize,
    /// SIGKILLs of the gateway process, after the upgrades: its supervisor restarts it and the
    /// new process takes the held sockets back.
    pub gateway_kills: usize,
    /// Quiet trading before the first event and between events.
    pub event_gap: Duration,
}

impl DemoConfig {
    /// The `baton demo` defaults: small enough for a laptop, long enough to see it work.
    pub fn demo(program: PathBuf, dir: PathBuf) -> DemoConfig {
        DemoConfig {
            program,
            dir,
            sessions: 8,
            orders_per_session_per_s: 50,
            canaries: 1,
            switches: 2,
            kills: 1,
            gateway_upgrades: 1,
            gateway_kills: 1,
            event_gap: Duration::from_millis(700),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DemoReport {
    /// Counterparties connected.
    pub sessions: usize,
    /// Counterparties that never saw a Logout or a disconnect.
    pub sessions_kept: usize,
    /// Orders sent.
    pub orders: u64,
    /// Orders acknowledged exactly once (New or Rejected).
    pub acknowledged: u64,
    /// Orders with no acknowledgement at the end.
    pub lost: u64,
    /// Acknowledgements or ExecIDs received more than once.
    pub duplicated: u64,
    /// Fill reports received by the counterparties (ExecutionReports with ExecType Trade): each
    /// trade sends one to the buyer and one to the seller, so this is twice the trades.
    pub fills: u64,
    /// Sequence gaps outside the gateway kills: inbound gaps the counterparties saw and
    /// ResendRequests they got from the gateway, less those counted for a kill.
    pub gaps: u64,
    /// Gaps the counterparties asked for by ResendRequest and never saw closed.
    pub gaps_open: u64,
    /// Each ResendRequest, either way, up to [`crate::constants::DEMO_GAP_SAMPLES_MAX`]: who
    /// asked for which MsgSeqNums, and the event it came after, so a gap can be traced to its
    /// cause.
    pub gap_samples: Vec<String>,
    /// Inbound sequence numbers counterparties saw twice without PossDupFlag.
    pub repeated: u64,
    /// Quantity bought and sold in fills, per symbol, over every counterparty: each trade has a
    /// buyer and a seller, so the two must be equal.
    pub filled_per_symbol: BTreeMap<String, (u64, u64)>,
    /// Orders whose last report was compared with a replay of the journal (every order the
    /// journal has).
    pub final_states_compared: u64,
    /// Orders whose last report (CumQty, OrdStatus) differs from a replay of the journal.
    pub final_state_mismatches: u64,
    /// A few of those, for the reader: ClOrdID, what the counterparty saw, what the replay says.
    pub final_state_samples: Vec<String>,
    /// Every switch and failover, with its pause.
    pub switches: Vec<SwitchReport>,
    /// Every planned upgrade of the gateway process, with what the counterparties saw of it.
    pub gateway_upgrades: Vec<GatewayEvent>,
    /// Every SIGKILL of the gateway process, with what the counterparties saw of it.
    pub gateway_kills: Vec<GatewayKill>,
    /// Inputs whose standby outputs matched the authoritative engine's, byte for byte.
    pub shadow_matches: u64,
    /// Inputs whose standby outputs differed.
    pub shadow_divergences: u64,
    /// Engine digests at the end, and the digest of a fresh engine fed the whole journal.
    pub digests: Vec<(String, String)>,
    /// The journal replay's digest.
    pub replay_digest: String,
    /// Whether every engine's digest equals the replay's.
    pub books_match_replay: bool,
    /// The change every action ran under: who filed it, who approved it, what it deployed.
    pub change: Option<ChangeSummary>,
    /// Records in the audit log at the end.
    pub audit_records: u64,
    /// Its head hash.
    pub audit_head: String,
    /// Whether the whole audit chain verifies.
    pub audit_verified: bool,
}

/// A planned gateway upgrade and what the counterparties saw between just before it was asked
/// for and one event gap after the new gateway served.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GatewayEvent {
    /// The pause the new gateway measured, µs.
    pub pause_us: u64,
    /// Sessions handed over.
    pub sessions: u64,
    /// Counterparties that lost their session (Logout, disconnect, garbled input).
    pub disconnects: u64,
    /// Messages the counterparties received marked PossDup (resent).
    pub resent: u64,
    /// Sequence gaps the counterparties saw, or ResendRequests they got from the gateway.
    pub gaps: u64,
}

/// A SIGKILL of the gateway process and what the counterparties saw from just before it until
/// every session answered an order sent after it, plus one event gap.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GatewayKill {
    /// Counterparties that lost their session (Logout, disconnect): must be none, the
    /// supervisor holds their sockets.
    pub disconnects: u64,
    /// ResendRequests the counterparties sent (gaps in what the gateway sent them).
    pub resend_requests_by_counterparties: u64,
    /// ResendRequests the gateway sent that the counterparties answered (gaps in what they sent).
    pub resend_requests_by_gateway: u64,
    /// Gaps the counterparties asked for that the gateway's resend closed.
    pub gaps_closed: u64,
    /// Garbled frames the counterparties skipped (a message the dead process wrote in part).
    pub garbled: u64,
    /// Messages the counterparties received marked PossDup (resent).
    pub resent: u64,
    /// Sessions that answered an order sent after the kill.
    pub sessions_answered: u64,
    /// From the SIGKILL to the last of those answers, µs.
    pub recovery_us: u64,
}

impl DemoReport {
    /// Whether the run shows what baton promises.
    pub fn ok(&self) -> bool {
        self.sessions_kept == self.sessions
            && self.lost == 0
            && self
                .gateway_upgrades
                .iter()
                .all(|g| g.disconnects == 0 && g.resent == 0 && g.gaps == 0)
            && self
                .gateway_kills
                .iter()
                .all(|k| k.disconnects == 0 && k.sessions_answered == self.sessions as u64)
            && self.gaps_open == 0
            && self.duplicated == 0
            && self.gaps == 0
            && self.repeated == 0
            && self
                .filled_per_symbol
                .values()
                .all(|(bought, sold)| bought == sold)
            && self.final_state_mismatches == 0
            && self.shadow_divergences == 0
            && self.books_match_replay
            && self.audit_verified
    }

    /// A summary a person reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "sessions kept   {}/{} (no Logout, no disconnect)\n",
            self.sessions_kept, self.sessions
        ));
        out.push_str(&format!("orders          {}\n", self.orders));
        out.push_str(&format!("acknowledged    {}\n", self.acknowledged));
        out.push_str(&format!(
            "fill reports    {} received by counterparties (one per side: {} trades)\n",
            self.fills,
            self.fills / 2
        ));
        out.push_str(&format!("lost            {}\n", self.lost));
        out.push_str(&format!("duplicated      {}\n", self.duplicated));
        out.push_str(&format!(
            "sequence gaps   {} outside gateway kills, {} left open\n",
            self.gaps, self.gaps_open
        ));
        for sample in &self.gap_samples {
            out.push_str(&format!("  {sample}\n"));
        }
        out.push_str(&format!("repeated seqs   {}\n", self.repeated));
        for (symbol, (bought, sold)) in &self.filled_per_symbol {
            out.push_str(&format!(
                "filled {symbol:<8} bought {bought}, sold {sold}{}\n",
                if bought == sold { "" } else { "  UNBALANCED" }
            ));
        }
        out.push_str(&format!(
            "final states    {} compared with the replay, {} differ\n",
            self.final_states_compared, self.final_state_mismatches
        ));
        for sample in &self.final_state_samples {
            out.push_str(&format!("  {sample}\n"));
        }
        if let Some(change) = &self.change {
            out.push_str(&format!(
                "change          {} by {}, approved by {}, artifact sha256 {}\n",
                change.id,
                change.filed_by,
                change.approved_by.join(", "),
                change.artifact_sha256.get(..16).unwrap_or_default()
            ));
        }
        for switch in &self.switches {
            let kind = match (&switch.scope, switch.planned) {
                (SwitchScope::CanaryStarted { .. }, _) => "canary",
                (SwitchScope::CanaryEnded { .. }, true) => "canary back",
                (_, true) => "switch",
                (_, false) => "failover",
            };
            out.push_str(&format!(
                "{kind:<15} {} -> {} at input {} ({}), pause {} µs\n",
                engine_label(&switch.from),
                engine_label(&switch.to),
                switch.barrier_seq,
                scope_text(&switch.scope),
                switch.pause_us
            ));
        }
        for upgrade in &self.gateway_upgrades {
            out.push_str(&format!(
                "gateway upgrade {} sessions handed over to a new process, pause {} µs; counterparties saw {} disconnects, {} resent messages, {} gaps\n",
                upgrade.sessions, upgrade.pause_us, upgrade.disconnects, upgrade.resent, upgrade.gaps
            ));
        }
        for kill in &self.gateway_kills {
            out.push_str(&format!(
                "gateway kill    {}/{} sessions answering again {} µs after SIGKILL; counterparties saw {} disconnects, asked {} resends, served {} of the gateway's, {} gaps closed, {} garbled frames skipped, {} resent messages; orders lost {}, duplicated {} (whole run)\n",
                kill.sessions_answered,
                self.sessions,
                kill.recovery_us,
                kill.disconnects,
                kill.resend_requests_by_counterparties,
                kill.resend_requests_by_gateway,
                kill.gaps_closed,
                kill.garbled,
                kill.resent,
                self.lost,
                self.duplicated
            ));
        }
        out.push_str(&format!(
            "shadow          {} inputs matched, {} diverged\n",
            self.shadow_matches, self.shadow_divergences
        ));
        for (name, digest) in &self.digests {
            out.push_str(&format!("digest {name:<8} {digest}\n"));
        }
        out.push_str(&format!("digest replay   {}\n", self.replay_digest));
        out.push_str(&format!(
            "audit log       {} records, head {}, chain {}\n",
            self.audit_records,
            self.audit_head.get(..16).unwrap_or_default(),
            if self.audit_verified {
                "verified"
            } else {
                "DOES NOT VERIFY"
            }
        ));
        out.push_str(&format!(
            "books           {}\n",
            if self.books_match_replay {
                "equal to a replay of the journal"
            } else {
                "DIFFER from the journal replay"
            }
        ));
        out.push_str(if self.ok() {
            "result          OK\n"
        } else {
            "result          FAILED\n"
        });
        out
    }
}

/// What one simulated counterparty saw.
#[derive(Default)]
struct Tally {
    /// Orders sent, by ClOrdID.
    sent: Vec<String>,
    /// Acknowledgements per ClOrdID.
    acks: HashMap<String, u32>,
    /// ExecIDs received.
    exec_ids: HashSet<String>,
    /// ExecIDs received twice.
    duplicate_exec_ids: u64,
    /// Fills received.
    fills: u64,
    /// Logouts received or disconnects.
    dropped: bool,
    /// Gaps.
    gaps: u64,
    /// Sequence numbers received again without PossDupFlag.
    repeated: u64,
    /// Quantity bought and sold in this counterparty's fills, per symbol.
    filled: BTreeMap<String, (u64, u64)>,
    /// The last report of each ClOrdID: the order's final state as the counterparty knows it.
    final_states: HashMap<String, FinalState>,
    /// The MsgSeqNum of the report each of those came from.
    final_seqs: HashMap<String, u64>,
    /// TestReqID of the last Heartbeat that answered one.
    last_test_req_id: Option<String>,
    /// Messages received marked PossDup (resent by the gateway).
    resent: u64,
    /// What arrived, by MsgSeqNum: gaps asked for, copies dropped.
    inbound: Inbound,
    /// The order each MsgSeqNum we sent carried (ClOrdID, Side, when it was sent), to answer a
    /// ResendRequest; numbers not here were session messages, gap filled.
    orders_by_seq: HashMap<u64, (String, u8, Timestamp)>,
    /// The symbol this counterparty trades.
    symbol: &'static str,
    /// When the session logged on: OrigSendingTime of gap fills, before any message they replace.
    logged_on_at: Timestamp,
    /// The order sent first after a gateway kill, the kill's number and when it was: its
    /// acknowledgement is this session answering again.
    probe: Option<(String, u64, Instant)>,
    /// The last gateway kill a probe was sent for.
    probed_kill: u64,
    /// Kill number and time from it to the probe's acknowledgement, not yet told.
    answered: Option<(u64, Duration)>,
    /// The counterparty's CompID, to name it in gap samples.
    name: String,
    /// ResendRequests sent or received, described, not yet told (see
    /// [`DemoReport::gap_samples`]).
    gap_samples: Vec<String>,
}

/// A counterparty's inbound sequence as FIX asks it to keep one: a number beyond the next
/// expected is a gap, asked for by ResendRequest; a number already processed is a copy, dropped
/// (a resend marks it PossDup); a gap is closed when every number in it was processed or gap
/// filled.
#[derive(Default)]
struct Inbound {
    /// MsgSeqNums processed or gap filled.
    processed: BTreeSet<u64>,
    /// One past the highest number seen.
    expected: u64,
    /// Gaps asked for and not yet closed, as `[from, to)`.
    open: Vec<(u64, u64)>,
    /// Gaps closed.
    closed: u64,
}

/// What a counterparty does with a message that arrived.
#[derive(Debug, PartialEq, Eq)]
enum Arrival {
    /// New: process it.
    Process,
    /// New, after a gap: ask for `[from, seq)` by ResendRequest, then process it.
    Gap { from: u64 },
    /// A copy of one processed, or a gap fill: nothing to process.
    Skip,
}

impl Inbound {
    /// After a Logon that set the next expected number to `next_in`.
    fn new(next_in: u64) -> Inbound {
        Inbound {
            processed: (1..next_in).collect(),
            expected: next_in,
            ..Inbound::default()
        }
    }

    /// Takes in `message` (MsgSeqNum 34, PossDupFlag 43, a SequenceReset's NewSeqNo 36).
    fn arrive(&mut self, message: &Message) -> Arrival {
        let seq = message.uint(34).unwrap_or(0);
        let poss_dup = message.get(43) == Some(b"Y");
        let gap = (seq > self.expected && !poss_dup).then_some(self.expected);
        if let Some(from) = gap {
            self.open.push((from, seq));
        }
        let arrival = if message.msg_type() == b"4" {
            let new_seq = message.uint(36).unwrap_or(seq);
            self.processed.extend(seq..new_seq.max(seq + 1));
            self.expected = self.expected.max(new_seq);
            match gap {
                Some(from) => Arrival::Gap { from },
                None => Arrival::Skip,
            }
        } else if !self.processed.insert(seq) {
            Arrival::Skip
        } else {
            self.expected = self.expected.max(seq + 1);
            match gap {
                Some(from) => Arrival::Gap { from },
                None => Arrival::Process,
            }
        };
        let processed = &self.processed;
        let before = self.open.len();
        self.open
            .retain(|(from, to)| !(*from..*to).all(|s| processed.contains(&s)));
        self.closed += (before - self.open.len()) as u64;
        arrival
    }
}

/// What every counterparty saw so far, updated as they trade, so each event can be given what
/// happened around it.
#[derive(Default)]
struct Seen {
    /// Counterparties that lost their session.
    disconnects: AtomicU64,
    /// Messages received marked PossDup.
    resent: AtomicU64,
    /// Gaps seen and ResendRequests received.
    gaps: AtomicU64,
    /// ResendRequests the counterparties sent.
    asked: AtomicU64,
    /// ResendRequests of the gateway's the counterparties answered.
    served: AtomicU64,
    /// Gaps closed by the gateway's resends.
    closed: AtomicU64,
    /// Garbled frames skipped.
    garbled: AtomicU64,
    /// The latest gateway kill: its number (from 1) and when it was.
    kill: Mutex<Option<(u64, Instant)>>,
    /// Sessions that answered an order sent after the latest kill.
    answered: AtomicU64,
    /// The longest time from the latest kill to such an answer, µs.
    recovery_us: AtomicU64,
    /// The event under way or done last, named as its progress line names it.
    last_event: Mutex<String>,
    /// Gap samples told so far, each with the event it came after.
    gap_samples: Mutex<Vec<String>>,
}

/// [`Seen`]'s counters at one moment, to subtract.
#[derive(Clone, Copy, Default)]
struct Counts {
    disconnects: u64,
    resent: u64,
    asked: u64,
    served: u64,
    closed: u64,
    garbled: u64,
}

impl Seen {
    /// (disconnects, resent, gaps) now.
    fn now(&self) -> (u64, u64, u64) {
        (
            self.disconnects.load(Ordering::Acquire),
            self.resent.load(Ordering::Acquire),
            self.gaps.load(Ordering::Acquire),
        )
    }

    /// Every counter now.
    fn counts(&self) -> Counts {
        let (disconnects, resent, _) = self.now();
        Counts {
            disconnects,
            resent,
            asked: self.asked.load(Ordering::Acquire),
            served: self.served.load(Ordering::Acquire),
            closed: self.closed.load(Ordering::Acquire),
            garbled: self.garbled.load(Ordering::Acquire),
        }
    }

    /// Names the event that starts now, for the gap samples told from now on.
    fn event(&self, name: String) {
        *self
            .last_event
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = name;
    }

    /// Keeps `samples`, each with the event it came after, up to the bound.
    fn sample_gaps(&self, samples: &mut Vec<String>) {
        if samples.is_empty() {
            return;
        }
        let event = self
            .last_event
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut kept = self
            .gap_samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for sample in samples.drain(..) {
            if kept.len() < crate::constants::DEMO_GAP_SAMPLES_MAX {
                let after = if event.is_empty() {
                    "the start"
                } else {
                    &event
                };
                kept.push(format!("{sample}, after {after}"));
            }
        }
    }

    /// The latest gateway kill, if any.
    fn latest_kill(&self) -> Option<(u64, Instant)> {
        *self
            .kill
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What one counterparty has told [`Seen`] so far.
#[derive(Default)]
struct Told {
    /// Whether it told of losing its session.
    dropped: bool,
    /// Resent messages told.
    resent: u64,
    /// Gaps told.
    gaps: u64,
    /// ResendRequests sent, told.
    asked: u64,
    /// ResendRequests answered, told.
    served: u64,
    /// Gaps closed, told.
    closed: u64,
    /// Garbled frames, told.
    garbled: u64,
}

/// Adds to `counter` what `now` has beyond what was `told`, and remembers it.
fn tell_more(counter: &AtomicU64, told: &mut u64, now: u64) {
    counter.fetch_add(now.saturating_sub(*told), Ordering::AcqRel);
    *told = (*told).max(now);
}

impl Told {
    /// Tells `seen` what the counterparty saw since the last time.
    fn tell(&mut self, client: &Initiator, tally: &mut Tally, seen: &Seen) {
        if tally.dropped && !self.dropped {
            self.dropped = true;
            seen.disconnects.fetch_add(1, Ordering::AcqRel);
        }
        let gaps = client.gaps() + tally.gaps;
        seen.gaps
            .fetch_add(gaps.saturating_sub(self.gaps), Ordering::AcqRel);
        self.gaps = self.gaps.max(gaps);
        seen.resent
            .fetch_add(tally.resent.saturating_sub(self.resent), Ordering::AcqRel);
        self.resent = self.resent.max(tally.resent);
        tell_more(&seen.asked, &mut self.asked, client.gaps());
        tell_more(&seen.served, &mut self.served, tally.gaps);
        tell_more(&seen.closed, &mut self.closed, tally.inbound.closed);
        tell_more(&seen.garbled, &mut self.garbled, client.garbled());
        seen.sample_gaps(&mut tally.gap_samples);
        if let Some((kill, took)) = tally.answered.take()
            && seen.latest_kill().is_some_and(|(latest, _)| latest == kill)
        {
            seen.answered.fetch_add(1, Ordering::AcqRel);
            seen.recovery_us
                .fetch_max(took.as_micros() as u64, Ordering::AcqRel);
        }
    }
}

/// An order's state as its last ExecutionReport tells it: CumQty as written on the wire, and
/// OrdStatus.
type FinalState = (String, char);

/// The final state an ExecutionReport gives its order, formatted as the gateway writes it.
fn final_state(report: &ExecutionReport) -> FinalState {
    let mut cum_qty = Vec::new();
    report.cum_qty.write_decimal(&mut cum_qty);
    (
        String::from_utf8_lossy(&cum_qty).into_owned(),
        char::from(report.ord_status.fix_value()),
    )
}

/// The reference engine fed the journal, remembering the last report about each ClOrdID: what
/// every counterparty must have seen last.
struct Recording {
    /// The engine replaying.
    engine: MatchingEngine,
    /// ClOrdID → its last report's state.
    final_states: HashMap<String, FinalState>,
}

impl Engine for Recording {
    fn apply(&mut self, input: &Input, outputs: &mut Vec<Output>) {
        let from = outputs.len();
        self.engine.apply(input, outputs);
        for output in &outputs[from..] {
            if let Report::Execution(report) = &output.report {
                self.final_states.insert(
                    String::from_utf8_lossy(report.cl_ord_id.as_bytes()).into_owned(),
                    final_state(report),
                );
            }
        }
    }

    fn last_input_seq(&self) -> u64 {
        self.engine.last_input_seq()
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        self.engine.snapshot(out)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.engine.restore(snapshot)
    }

    fn digest(&self) -> Digest {
        self.engine.digest()
    }

    fn freeze(&self) -> Option<Box<dyn FrozenState>> {
        self.engine.freeze()
    }

    fn build_version(&self) -> &str {
        self.engine.build_version()
    }
}

/// The demo's two engines, in the order the venue starts them: name, the snapshot format it
/// writes, and which build that makes it in the upgrade story the report tells.
const DEMO_BUILDS: [(&str, u16, &str); 2] = [("blue", 1, "old build"), ("green", 2, "new build")];

/// `blue (old build, snapshot format 1)`: switch lines name the build, so the report shows
/// authority moving from the old build to the new one and back. Any other name (an engine
/// reported by its link address) is printed as it is.
fn engine_label(name: &str) -> String {
    match DEMO_BUILDS.iter().find(|(n, _, _)| *n == name) {
        Some((name, format, build)) => format!("{name} ({build}, snapshot format {format})"),
        None => name.to_owned(),
    }
}

/// Runs the demo and reports what happened.
pub fn run(config: &DemoConfig, progress: &dyn Fn(&str)) -> Result<DemoReport, DemoError> {
    let mut venue = Venue::start(&VenueConfig {
        control_extra: String::new(),
        program: config.program.clone(),
        dir: config.dir.clone(),
        sessions: config.sessions,
        // Blue writes the older snapshot format, green the newer: two builds.
        snapshot_formats: DEMO_BUILDS.map(|(_, format, _)| format),
        engine_section: String::new(),
        // The demo goes through the release process: a change, a second operator's approval.
        require_approval: true,
        link: Default::default(),
        spin_us: None,
        gateway_spin_us: None,
        gateway_runtime_threads: None,
        gateway_standby_batch_us: None,
    })?;
    let authoritative = venue.authoritative()?;
    progress(&format!(
        "venue up: gateway {}, engine {} authoritative (the first to attach), the other standby",
        venue.fix_addr,
        engine_label(&authoritative)
    ));
    let result = file_change(config, &venue, progress)
        .and_then(|change| trade_through_events(config, &mut venue, &change, progress));

    // Stop the gateway (SIGTERM: sessions are logged out), then read the engines' digests.
    venue.stop_gateway();
    let report = result.and_then(|(mut report, seen)| {
        let replay = replay_journal(&config.dir.join("journal"))?;
        report.replay_digest = replay.engine.digest().to_string();
        let mut ids: Vec<&String> = seen.keys().collect();
        ids.sort();
        for id in ids {
            // An order the journal never got is counted as lost, not here.
            let Some(replayed) = replay.final_states.get(id) else {
                continue;
            };
            report.final_states_compared += 1;
            let saw = seen.get(id).and_then(|state| state.as_ref());
            if saw != Some(replayed) {
                report.final_state_mismatches += 1;
                if report.final_state_samples.len() < FINAL_STATE_SAMPLES_MAX {
                    report.final_state_samples.push(format!(
                        "{id}: saw {saw:?}, replay {replayed:?} (CumQty, OrdStatus)"
                    ));
                }
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting a runtime"))?;
        for (name, addr) in venue.engine_addrs() {
            let addr: LinkAddr = addr.parse().map_err(|e| DemoError::Venue(format!("{e}")))?;
            report
                .digests
                .push((name, runtime.block_on(engine_digest(&addr))?));
        }
        report.books_match_replay = !report.digests.is_empty()
            && report
                .digests
                .iter()
                .all(|(_, d)| *d == report.replay_digest);
        let audit = crate::control::audit::verify(&crate::control::audit::default_path(
            &config.dir.join("journal"),
        ))
        .map_err(|e| DemoError::Venue(format!("audit log: {e}")))?;
        report.audit_records = audit.records;
        report.audit_head = audit.head_hash;
        report.audit_verified = audit.first_bad.is_none();
        Ok(report)
    });
    venue.stop();
    report
}

/// Files the change that deploys the running build (as `ops`) and approves it (as `risk`), the
/// two-person rule the venue's default policy asks for. Returns its id.
fn file_change(
    config: &DemoConfig,
    venue: &Venue,
    progress: &dyn Fn(&str),
) -> Result<String, DemoError> {
    let program = std::fs::canonicalize(&config.program).map_err(io("locating the build"))?;
    let sha256 = crate::control::artifact::sha256_file(&program)
        .map_err(|e| DemoError::Venue(format!("hashing the build: {e}")))?;
    let now = Timestamp::now();
    let filing = ControlRequest::ChangeFile {
        operator: Some("ops".into()),
        artifact_path: program.display().to_string(),
        artifact_sha256: sha256,
        reason: "demo: deploy the new matching build".into(),
        window_start: rfc3339(now),
        window_end: rfc3339(now.plus_millis(3_600_000)),
        expected_divergence: Default::default(),
    };
    let change = match venue.request(&filing, Duration::from_secs(30))? {
        ControlReply::Change(change) => change.id,
        other => return Err(DemoError::Venue(format!("filing the change: {other:?}"))),
    };
    let approval = ControlRequest::ChangeApprove {
        operator: Some("risk".into()),
        change: change.clone(),
    };
    match venue.request(&approval, Duration::from_secs(30))? {
        ControlReply::Change(_) => {}
        other => return Err(DemoError::Venue(format!("approving the change: {other:?}"))),
    }
    progress(&format!("{change} filed by ops, approved by risk"));
    Ok(change)
}

/// Differing final states quoted in the report; the count says how many there were.
const FINAL_STATE_SAMPLES_MAX: usize = 5;

/// How long the end of the run waits for every counterparty to have its answers, and for the
/// gateway to have delivered every output: generous, the machine may be loaded.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// What each counterparty saw last about each order it sent (`None`: nothing).
type SeenStates = HashMap<String, Option<FinalState>>;

/// What the events and the flow amount to: the report so far, and the counterparties' final
/// states for the reconciliation with the journal.
fn trade_through_events(
    config: &DemoConfig,
    venue: &mut Venue,
    change: &str,
    progress: &dyn Fn(&str),
) -> Result<(DemoReport, SeenStates), DemoError> {
    let fix_addr = venue.fix_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let orders = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let traders: Vec<_> = (1..=config.sessions)
        .map(|n| {
            let (stop, orders) = (stop.clone(), orders.clone());
            let (finished, settled) = (finished.clone(), settled.clone());
            let seen = seen.clone();
            let rate = config.orders_per_session_per_s.max(1);
            std::thread::spawn(move || {
                let ends = Ends {
                    stop: &stop,
                    finished: &finished,
                    settled: &settled,
                    seen: &seen,
                };
                trader(n, fix_addr, rate, &ends, &orders)
            })
        })
        .collect();

    let mut report = DemoReport {
        sessions: config.sessions,
        ..DemoReport::default()
    };
    std::thread::sleep(config.event_gap);
    let with_change = Some(change.to_owned());
    for i in 0..config.canaries {
        let canary = ControlRequest::Canary {
            operator: Some("ops".into()),
            change: with_change.clone(),
            percent: Some(25),
            symbols: Vec::new(),
        };
        for (step, request) in [canary, ControlRequest::rollback("ops")]
            .into_iter()
            .enumerate()
        {
            seen.event(format!(
                "canary {} {}",
                i + 1,
                if step == 0 { "start" } else { "rollback" }
            ));
            match venue.request(&request, Duration::from_secs(30))? {
                ControlReply::Switched(switch) => {
                    progress(&format!(
                        "canary {} {}: {} -> {} at input {} ({}), pause {} µs",
                        i + 1,
                        if step == 0 { "start" } else { "rollback" },
                        engine_label(&switch.from),
                        engine_label(&switch.to),
                        switch.barrier_seq,
                        scope_text(&switch.scope),
                        switch.pause_us
                    ));
                    report.switches.push(switch);
                }
                other => progress(&format!("canary {} refused: {other:?}", i + 1)),
            }
            std::thread::sleep(config.event_gap);
        }
    }
    for i in 0..config.switches {
        let request = if i % 2 == 0 {
            ControlRequest::Switch {
                operator: Some("ops".into()),
                change: with_change.clone(),
            }
        } else {
            ControlRequest::rollback("ops")
        };
        seen.event(format!("switch {}", i + 1));
        match venue.request(&request, Duration::from_secs(30)) {
            Ok(ControlReply::Switched(switch)) => {
                progress(&format!(
                    "switch {}: {} -> {} at input {}, pause {} µs ({} orders so far)",
                    i + 1,
                    engine_label(&switch.from),
                    engine_label(&switch.to),
                    switch.barrier_seq,
                    switch.pause_us,
                    orders.load(Ordering::Relaxed)
                ));
                report.switches.push(switch);
            }
            Ok(other) => progress(&format!("switch {} refused: {other:?}", i + 1)),
            Err(error) => return Err(DemoError::Venue(format!("switch: {error}"))),
        }
        std::thread::sleep(config.event_gap);
    }
    for i in 0..config.gateway_upgrades {
        progress(&format!(
            "gateway upgrade {}: hand every session to a new gateway process from the change's build ({} orders so far)",
            i + 1,
            orders.load(Ordering::Relaxed)
        ));
        seen.event(format!("gateway upgrade {}", i + 1));
        let before = seen.now();
        let counts_before = seen.counts();
        let upgrade = venue.upgrade_gateway(change)?;
        std::thread::sleep(config.event_gap);
        let after = seen.now();
        let counts_after = seen.counts();
        let event = GatewayEvent {
            pause_us: upgrade.pause_us,
            sessions: upgrade.sessions,
            disconnects: after.0 - before.0,
            resent: after.1 - before.1,
            gaps: after.2 - before.2,
        };
        progress(&format!(
            "gateway upgrade {}: {} sessions on the new process, pause {} µs; counterparties saw {} disconnects, {} resent messages, {} gaps (they asked {} resends, served {} of the gateway's, skipped {} garbled frames)",
            i + 1,
            event.sessions,
            event.pause_us,
            event.disconnects,
            event.resent,
            event.gaps,
            counts_after.asked - counts_before.asked,
            counts_after.served - counts_before.served,
            counts_after.garbled - counts_before.garbled
        ));
        report.gateway_upgrades.push(event);
    }
    for i in 0..config.gateway_kills {
        let kill = gateway_kill(config, venue, &seen, i as u64 + 1, progress)?;
        report.gateway_kills.push(kill);
    }
    for i in 0..config.kills {
        seen.event(format!("engine kill {}", i + 1));
        progress(&format!(
            "kill {}: SIGKILL the authoritative engine ({} orders so far)",
            i + 1,
            orders.load(Ordering::Relaxed)
        ));
        // Restarted, and back as a caught-up standby before the next event.
        let name = venue.kill_authoritative()?;
        if let Some(switch) = venue.status()?.last_switch.filter(|s| !s.planned) {
            progress(&format!(
                "failover: {} -> {}, {name} back as standby",
                engine_label(&switch.from),
                engine_label(&switch.to)
            ));
            report.switches.push(switch);
        }
        std::thread::sleep(config.event_gap);
    }
    seen.event("the last event".into());
    stop.store(true, Ordering::Relaxed);
    // Reconciling needs every answer: the counterparties wait, still connected, until all have
    // stopped sending and the gateway has delivered every output (a passive fill may come from
    // another counterparty's last order).
    let deadline = Instant::now() + SETTLE_WAIT;
    while finished.load(Ordering::Acquire) < config.sessions && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    while Instant::now() < deadline {
        let status = venue.status()?;
        if status.delivered_through == status.journal_last_seq {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    settled.store(true, Ordering::Release);
    let close = ControlRequest::ChangeClose {
        operator: Some("ops".into()),
        change: change.to_owned(),
    };
    if let ControlReply::Change(summary) = venue.request(&close, Duration::from_secs(30))? {
        report.change = Some(summary);
    }
    let mut tallies = Vec::new();
    let shadow = venue.status()?.shadow;
    report.shadow_matches = shadow.matches;
    report.shadow_divergences = shadow.divergences;
    for trader in traders {
        tallies.push(
            trader
                .join()
                .map_err(|_| DemoError::Venue("a trader thread panicked".into()))?,
        );
    }
    for tally in &mut tallies {
        seen.sample_gaps(&mut tally.gap_samples);
    }
    report.gap_samples = std::mem::take(
        &mut *seen
            .gap_samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    let mut seen = SeenStates::new();
    for mut tally in tallies {
        report.orders += tally.sent.len() as u64;
        for id in &tally.sent {
            match tally.acks.get(id).copied().unwrap_or(0) {
                0 => report.lost += 1,
                1 => report.acknowledged += 1,
                _ => report.duplicated += 1,
            }
            seen.insert(id.clone(), tally.final_states.remove(id));
        }
        report.duplicated += tally.duplicate_exec_ids;
        report.fills += tally.fills;
        report.gaps += tally.gaps;
        report.gaps_open += tally.inbound.open.len() as u64;
        report.repeated += tally.repeated;
        for (symbol, (bought, sold)) in tally.filled {
            let total = report.filled_per_symbol.entry(symbol).or_default();
            total.0 += bought;
            total.1 += sold;
        }
        if !tally.dropped {
            report.sessions_kept += 1;
        }
    }
    // Gaps are expected around a gateway kill (counted there); anywhere else they are a fault.
    let around_kills: u64 = report
        .gateway_kills
        .iter()
        .map(|k| k.resend_requests_by_counterparties + k.resend_requests_by_gateway)
        .sum();
    report.gaps = report.gaps.saturating_sub(around_kills);
    Ok((report, seen))
}

/// How long a gateway kill may take until every session answers again.
const GATEWAY_KILL_ANSWER_WAIT: Duration =
    Duration::from_millis(crate::constants::DEMO_GATEWAY_KILL_ANSWER_WAIT_MS);

/// SIGKILLs the gateway process (kill number `number`), waits until every counterparty has an
/// answer to an order sent after it, then one event gap, and says what they saw meanwhile.
fn gateway_kill(
    config: &DemoConfig,
    venue: &Venue,
    seen: &Seen,
    number: u64,
    progress: &dyn Fn(&str),
) -> Result<GatewayKill, DemoError> {
    progress(&format!(
        "gateway kill {number}: SIGKILL the gateway process; its supervisor holds the sockets and restarts it"
    ));
    seen.event(format!("gateway kill {number}"));
    let before = seen.counts();
    seen.answered.store(0, Ordering::Release);
    seen.recovery_us.store(0, Ordering::Release);
    let killed_at = Instant::now();
    venue.kill_gateway()?;
    *seen.kill.lock().unwrap_or_else(|p| p.into_inner()) = Some((number, killed_at));
    let deadline = killed_at + GATEWAY_KILL_ANSWER_WAIT;
    while seen.answered.load(Ordering::Acquire) < config.sessions as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sessions_answered = seen.answered.load(Ordering::Acquire);
    let recovery_us = seen.recovery_us.load(Ordering::Acquire);
    // The restarted gateway binds the control endpoint anew; later events need it.
    venue.await_control(GATEWAY_KILL_ANSWER_WAIT)?;
    std::thread::sleep(config.event_gap);
    let after = seen.counts();
    let kill = GatewayKill {
        disconnects: after.disconnects - before.disconnects,
        resend_requests_by_counterparties: after.asked - before.asked,
        resend_requests_by_gateway: after.served - before.served,
        gaps_closed: after.closed - before.closed,
        garbled: after.garbled - before.garbled,
        resent: after.resent - before.resent,
        sessions_answered,
        recovery_us,
    };
    progress(&format!(
        "gateway kill {number}: {}/{} sessions answering again {} µs after SIGKILL; counterparties saw {} disconnects, asked {} resends, served {}, {} gaps closed, {} garbled frames skipped",
        kill.sessions_answered,
        config.sessions,
        kill.recovery_us,
        kill.disconnects,
        kill.resend_requests_by_counterparties,
        kill.resend_requests_by_gateway,
        kill.gaps_closed,
        kill.garbled
    ));
    Ok(kill)
}

/// How the end of a run reaches each counterparty.
struct Ends<'a> {
    /// Set when the counterparties are to stop sending.
    stop: &'a AtomicBool,
    /// Counterparties that stopped sending and have every acknowledgement (or gave up).
    finished: &'a AtomicUsize,
    /// Set once every counterparty finished and every output was delivered.
    settled: &'a AtomicBool,
    /// What the counterparties saw so far.
    seen: &'a Seen,
}

/// The symbols the demo's counterparties trade: the default instruments.
const TRADED_SYMBOLS: [&str; 4] = ["AAPL", "MSFT", "ESZ6", "EURUSD"];

/// One counterparty: sends crossing orders at `rate` per second until told to stop, waits for
/// every acknowledgement, then for the run to settle (see [`settle`]), and logs out.
fn trader(n: usize, addr: SocketAddr, rate: u64, ends: &Ends<'_>, orders: &AtomicU64) -> Tally {
    let mut tally = Tally::default();
    let client = trade(n, addr, rate, ends, orders, &mut tally);
    // Stopped sending with every acknowledgement in (or given up): the run may settle.
    ends.finished.fetch_add(1, Ordering::Release);
    if let Some(mut client) = client {
        settle(&mut client, &mut tally, ends.settled);
        tally.gaps += client.gaps();
        tally.repeated += client.repeated();
        if !tally.dropped {
            let _ = client.logout(Duration::from_secs(5));
        }
    }
    tally
}

/// Logs on and sends crossing orders at `rate` per second until `stop`, then waits for every
/// acknowledgement. `None` when the session could not start.
fn trade(
    n: usize,
    addr: SocketAddr,
    rate: u64,
    ends: &Ends<'_>,
    orders: &AtomicU64,
    tally: &mut Tally,
) -> Option<Initiator> {
    let stop = ends.stop;
    let mut told = Told::default();
    let mut client =
        match Initiator::connect(addr, InitiatorConfig::new(&format!("TRADER{n}"), "BATON")) {
            Ok(client) => client,
            Err(_) => {
                tally.dropped = true;
                return None;
            }
        };
    tally.logged_on_at = Timestamp::now();
    if !matches!(client.logon(true, Duration::from_secs(10)), Ok(m) if m.msg_type() == b"A") {
        tally.dropped = true;
        return None;
    }
    // A frame a killed gateway wrote in part is skipped, as FIX asks; the gap it leaves is
    // asked for.
    client.set_skip_garbled(true);
    tally.inbound = Inbound::new(client.seq_num_next_in());
    let interval = Duration::from_micros(1_000_000 / rate);
    // Counterparties spread over the default instruments (prices and quantity valid for all), so
    // a canary of some symbols carries real flow.
    let symbol = TRADED_SYMBOLS[n % TRADED_SYMBOLS.len()];
    tally.symbol = symbol;
    tally.name = format!("TRADER{n}");
    let mut next = Instant::now();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            let id = format!("T{n}-{i}");
            // Alternate sides around one price so orders cross and fill.
            let side = if (i + n as u64).is_multiple_of(2) {
                b'1'
            } else {
                b'2'
            };
            // The first order after a gateway kill: its answer is this session answering again.
            let kill = ends
                .seen
                .latest_kill()
                .filter(|(kill, _)| *kill > tally.probed_kill);
            let sent_at = Timestamp::now();
            let Ok(seq) = client.send(b"D", |e| order_fields(e, &id, symbol, side)) else {
                tally.dropped = true;
                told.tell(&client, tally, ends.seen);
                break;
            };
            tally.orders_by_seq.insert(seq, (id.clone(), side, sent_at));
            if let Some((kill, at)) = kill {
                tally.probed_kill = kill;
                tally.probe = Some((id.clone(), kill, at));
            }
            tally.sent.push(id);
            orders.fetch_add(1, Ordering::Relaxed);
            i += 1;
            next += interval;
        }
        let alive = drain(&mut client, tally, Duration::from_millis(1));
        told.tell(&client, tally, ends.seen);
        if !alive {
            break;
        }
    }
    // Wait for the last answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tally.acks.len() < tally.sent.len() && Instant::now() < deadline && !tally.dropped {
        if !drain(&mut client, tally, Duration::from_millis(50)) {
            break;
        }
    }
    Some(client)
}

/// A NewOrderSingle's fields: a limit order for 1000 at a price that crosses the other side's.
fn order_fields(e: &mut Encoder, id: &str, symbol: &str, side: u8) {
    let price = if side == b'1' { "100.25" } else { "100" };
    e.str(11, id)
        .str(55, symbol)
        .char(54, side)
        .str(60, "20261123-12:00:00")
        .uint(38, 1000)
        .char(40, b'2')
        .str(44, price);
}

/// Answers the gateway's ResendRequest as FIX asks: each order in the range again, marked
/// PossDup with its original sending time, and every run of session messages as one
/// SequenceReset-GapFill. False when the connection is gone.
fn serve_resend(client: &mut Initiator, tally: &Tally, request: &Message) -> bool {
    let last = client.seq_num_next_out().saturating_sub(1);
    let begin = request.uint(7).unwrap_or(1).max(1);
    let end = match request.uint(16).unwrap_or(0) {
        0 => last,
        end => end.min(last),
    };
    let mut seq = begin;
    while seq <= end {
        let sent = match tally.orders_by_seq.get(&seq) {
            Some((id, side, sent_at)) => {
                let next = seq + 1;
                let sent = client.send_with_seq(b"D", seq, |e| {
                    e.char(43, b'Y').timestamp(122, *sent_at);
                    order_fields(e, id, tally.symbol, *side);
                });
                seq = next;
                sent
            }
            None => {
                let mut next = seq + 1;
                while next <= end && !tally.orders_by_seq.contains_key(&next) {
                    next += 1;
                }
                let sent = client.send_with_seq(b"4", seq, |e| {
                    e.char(43, b'Y')
                        .timestamp(122, tally.logged_on_at)
                        .char(123, b'Y')
                        .uint(36, next);
                });
                seq = next;
                sent
            }
        };
        if sent.is_err() {
            return false;
        }
    }
    true
}

/// TestReqID of the TestRequest that closes a counterparty's reading.
const SETTLED_TEST_REQ_ID: &str = "SETTLED";

/// Reads until the run says every output is delivered, then up to the answer to a TestRequest
/// sent after that: a session sends in order, so every report delivered before it has been read
/// once its Heartbeat is.
fn settle(client: &mut Initiator, tally: &mut Tally, settled: &AtomicBool) {
    let deadline = Instant::now() + SETTLE_WAIT;
    while !settled.load(Ordering::Acquire) && Instant::now() < deadline && !tally.dropped {
        if !drain(client, tally, Duration::from_millis(50)) {
            return;
        }
    }
    if tally.dropped {
        return;
    }
    if client
        .send(b"1", |e| {
            e.str(112, SETTLED_TEST_REQ_ID);
        })
        .is_err()
    {
        tally.dropped = true;
        return;
    }
    while tally.last_test_req_id.as_deref() != Some(SETTLED_TEST_REQ_ID)
        && Instant::now() < deadline
    {
        if !drain(client, tally, Duration::from_millis(50)) {
            return;
        }
    }
}

/// Reads what arrived; false when the connection is gone.
fn drain(client: &mut Initiator, tally: &mut Tally, wait: Duration) -> bool {
    let mut wait = wait;
    loop {
        match client.recv(wait) {
            Ok(Some(message)) => {
                wait = Duration::ZERO;
                if message.get(43) == Some(b"Y") {
                    tally.resent += 1;
                }
                match tally.inbound.arrive(&message) {
                    Arrival::Skip => continue,
                    Arrival::Gap { from } => {
                        let seq = message.uint(34).unwrap_or(0);
                        let sample = format!(
                            "{} asked for {from}..{} ({} arrived as {seq})",
                            tally.name,
                            seq.saturating_sub(1),
                            String::from_utf8_lossy(message.msg_type()),
                        );
                        tally.gap_samples.push(sample);
                        let asked = client.send(b"2", |e| {
                            e.uint(7, from).uint(16, 0);
                        });
                        if asked.is_err() {
                            tally.dropped = true;
                            return false;
                        }
                    }
                    Arrival::Process => {}
                }
                match message.msg_type() {
                    b"8" => {
                        let exec_id = String::from_utf8_lossy(message.get(17).unwrap_or_default())
                            .into_owned();
                        if !tally.exec_ids.insert(exec_id) {
                            tally.duplicate_exec_ids += 1;
                        }
                        let id = String::from_utf8_lossy(message.get(11).unwrap_or_default())
                            .into_owned();
                        let state = (
                            String::from_utf8_lossy(message.get(14).unwrap_or_default())
                                .into_owned(),
                            message
                                .get(39)
                                .and_then(|s| s.first().copied())
                                .map_or('?', char::from),
                        );
                        match message.get(150) {
                            Some(b"0") | Some(b"8") => {
                                *tally.acks.entry(id.clone()).or_default() += 1;
                                if let Some((probe, kill, at)) = tally.probe.take() {
                                    if probe == id {
                                        tally.answered = Some((kill, at.elapsed()));
                                    } else {
                                        tally.probe = Some((probe, kill, at));
                                    }
                                }
                            }
                            Some(b"F") => {
                                tally.fills += 1;
                                let qty = message
                                    .get(32)
                                    .and_then(Qty::parse_decimal)
                                    .map_or(0, |q| q.0);
                                let symbol =
                                    String::from_utf8_lossy(message.get(55).unwrap_or_default())
                                        .into_owned();
                                let filled = tally.filled.entry(symbol).or_default();
                                match message.get(54) {
                                    Some(b"1") => filled.0 += qty,
                                    _ => filled.1 += qty,
                                }
                            }
                            _ => {}
                        }
                        // A resent report may come after a later one: the order's state is
                        // the report with the highest MsgSeqNum, not the last to arrive.
                        let seq = message.uint(34).unwrap_or(0);
                        let newest = tally.final_seqs.get(&id).is_none_or(|last| *last < seq);
                        if newest {
                            tally.final_seqs.insert(id.clone(), seq);
                            tally.final_states.insert(id, state);
                        }
                    }
                    b"5" => {
                        tally.dropped = true;
                        return false;
                    }
                    // The gateway asks for a resend only when it saw a gap in what we sent.
                    b"2" => {
                        tally.gaps += 1;
                        let sample = format!(
                            "the gateway asked {} for {}..{}",
                            tally.name,
                            message.uint(7).unwrap_or(0),
                            message.uint(16).unwrap_or(0)
                        );
                        tally.gap_samples.push(sample);
                        if message.get(43) != Some(b"Y") && !serve_resend(client, tally, &message) {
                            tally.dropped = true;
                            return false;
                        }
                    }
                    b"0" => {
                        tally.last_test_req_id = message
                            .get(112)
                            .map(|id| String::from_utf8_lossy(id).into_owned());
                    }
                    _ => {}
                }
            }
            Ok(None) => return true,
            // Garbled input is skipped by the initiator (`set_skip_garbled`), so this is a
            // connection that could not be read at all.
            Err(InitiatorError::Closed)
            | Err(InitiatorError::Io(_))
            | Err(InitiatorError::Garbled) => {
                tally.dropped = true;
                return false;
            }
            Err(InitiatorError::Timeout(_)) => return true,
        }
    }
}

/// A fresh engine fed the whole journal: the state every engine must be in, and the last
/// report about every order.
fn replay_journal(dir: &Path) -> Result<Recording, DemoError> {
    let engine = MatchingEngine::new(&EngineConfig::default())
        .map_err(|e| DemoError::Venue(e.to_string()))?;
    let mut replay = Recording {
        engine,
        final_states: HashMap::new(),
    };
    crate::gateway::core::replay_journal(dir, &mut replay)
        .map_err(|e| DemoError::Venue(e.to_string()))?;
    Ok(replay)
}

async fn engine_digest(addr: &LinkAddr) -> Result<String, DemoError> {
    let (mut link, _) = link::connect(addr)
        .await
        .map_err(|e| DemoError::Venue(format!("{addr}: {e}")))?;
    link.request_digest()
        .await
        .map_err(|e| DemoError::Venue(e.to_string()))?;
    loop {
        match link.recv().await {
            Ok(Frame::Digest(report)) => return Ok(report.digest.to_string()),
            Ok(_) => {}
            Err(error) => return Err(DemoError::Venue(format!("{addr}: {error}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message from the gateway: MsgSeqNum `seq`, PossDup when `poss_dup`, and for a
    /// SequenceReset its NewSeqNo.
    fn inbound(msg_type: &[u8], seq: u64, poss_dup: bool, new_seq: Option<u64>) -> Message {
        let mut encoder = Encoder::new("FIX.4.4");
        encoder.start(msg_type).uint(34, seq);
        if poss_dup {
            encoder.char(43, b'Y');
        }
        if let Some(new_seq) = new_seq {
            encoder.char(123, b'Y').uint(36, new_seq);
        }
        Message::parse(encoder.finish()).expect("a well-formed message")
    }

    #[test]
    fn a_gap_is_asked_for_once_and_closed_by_the_resend_and_copies_are_dropped() {
        let mut seen = Inbound::new(2);
        assert_eq!(
            seen.arrive(&inbound(b"8", 2, false, None)),
            Arrival::Process
        );
        // 3 and 4 lost with the killed gateway: 5 shows the gap.
        assert_eq!(
            seen.arrive(&inbound(b"8", 5, false, None)),
            Arrival::Gap { from: 3 }
        );
        assert_eq!(
            seen.arrive(&inbound(b"8", 6, false, None)),
            Arrival::Process
        );
        assert_eq!((seen.open.len(), seen.closed), (1, 0));
        // The resend: 3 again, 4 gap filled, 5 again (already processed: dropped).
        assert_eq!(seen.arrive(&inbound(b"8", 3, true, None)), Arrival::Process);
        assert_eq!((seen.open.len(), seen.closed), (1, 0));
        assert_eq!(seen.arrive(&inbound(b"4", 4, true, Some(5))), Arrival::Skip);
        assert_eq!((seen.open.len(), seen.closed), (0, 1));
        assert_eq!(seen.arrive(&inbound(b"8", 5, true, None)), Arrival::Skip);
        assert_eq!(
            seen.arrive(&inbound(b"8", 7, false, None)),
            Arrival::Process
        );
        assert_eq!((seen.open.len(), seen.closed, seen.expected), (0, 1, 8));
    }

    /// Frames the gateway side of a test connection reads within `timeout`, as (MsgType,
    /// MsgSeqNum, PossDupFlag, ClOrdID or BeginSeqNo or NewSeqNo).
    fn read_frames(
        stream: &mut std::net::TcpStream,
        want: usize,
        timeout: Duration,
    ) -> Vec<(String, u64, bool, String)> {
        use std::io::Read;
        let decoder = crate::fix::codec::Decoder::new(crate::constants::BODY_LENGTH_MAX);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut frames = Vec::new();
        let deadline = Instant::now() + timeout;
        while frames.len() < want && Instant::now() < deadline {
            while let crate::fix::codec::Frame::Complete(len) = decoder.frame(&buf) {
                let message = Message::parse(&buf[..len]).expect("a well-formed frame");
                let text = |tag| String::from_utf8_lossy(message.get(tag).unwrap_or_default());
                let detail = [11, 7, 36]
                    .into_iter()
                    .map(text)
                    .find(|v| !v.is_empty())
                    .unwrap_or_default()
                    .into_owned();
                frames.push((
                    text(35).into_owned(),
                    message.uint(34).unwrap_or(0),
                    message.get(43) == Some(b"Y"),
                    detail,
                ));
                buf.drain(..len);
            }
            if frames.len() >= want {
                break;
            }
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            if let Ok(n) = stream.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        frames
    }

    #[test]
    fn a_counterparty_answers_the_gateways_resend_request_and_asks_for_its_own_gap() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client =
            Initiator::connect(addr, InitiatorConfig::new("TRADER1", "BATON")).unwrap();
        let (mut gateway, _) = listener.accept().unwrap();
        let mut tally = Tally {
            symbol: "AAPL",
            inbound: Inbound::new(1),
            ..Tally::default()
        };
        // We send an order, a Heartbeat (a session message) and another order.
        for (id, side) in [("T1-0", b'1'), ("", 0), ("T1-1", b'2')] {
            if id.is_empty() {
                client.send(b"0", |_| {}).unwrap();
                continue;
            }
            let seq = client
                .send(b"D", |e| order_fields(e, id, "AAPL", side))
                .unwrap();
            tally
                .orders_by_seq
                .insert(seq, (id.to_owned(), side, Timestamp::now()));
        }
        assert_eq!(
            read_frames(&mut gateway, 3, Duration::from_secs(30)).len(),
            3
        );
        // The gateway sends 1, loses 2, and asks for everything from our 1 in its 3.
        let mut encoder = Encoder::new("FIX.4.4");
        for (msg_type, seq) in [(&b"0"[..], 1), (&b"2"[..], 3)] {
            encoder.start(msg_type).uint(34, seq);
            if msg_type == b"2" {
                encoder.uint(7, 1).uint(16, 0);
            }
            gateway.write_all(encoder.finish()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while tally.gaps == 0 && Instant::now() < deadline {
            assert!(drain(&mut client, &mut tally, Duration::from_millis(100)));
        }
        // Our own ResendRequest (4) went out first; it is in the range too, gap filled.
        let frames = read_frames(&mut gateway, 5, Duration::from_secs(30));
        let expected = [
            ("2", 4, false, "2"),
            ("D", 1, true, "T1-0"),
            ("4", 2, true, "3"),
            ("D", 3, true, "T1-1"),
            ("4", 4, true, "5"),
        ]
        .map(|(t, seq, pd, d)| (t.to_owned(), seq, pd, d.to_owned()));
        assert_eq!(frames, expected);
        assert_eq!(
            (tally.gaps, client.gaps(), tally.inbound.open.len()),
            (1, 1, 1)
        );
        // Its resend of 2 closes our gap.
        encoder.start(b"0").uint(34, 2).char(43, b'Y');
        gateway.write_all(encoder.finish()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while tally.inbound.closed == 0 && Instant::now() < deadline {
            assert!(drain(&mut client, &mut tally, Duration::from_millis(100)));
        }
        assert_eq!((tally.inbound.closed, tally.inbound.open.len()), (1, 0));
        assert!(!tally.dropped);
    }

    #[test]
    fn a_report_resent_after_a_later_one_does_not_become_the_orders_state() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = Initiator::connect(
            listener.local_addr().unwrap(),
            InitiatorConfig::new("T", "B"),
        )
        .unwrap();
        let (mut gateway, _) = listener.accept().unwrap();
        let mut tally = Tally {
            inbound: Inbound::new(1),
            ..Tally::default()
        };
        // The fill (2) arrives first, its New (1) is resent after it.
        let mut encoder = Encoder::new("FIX.4.4");
        for (seq, poss_dup, exec_type, status, cum_qty) in
            [(2, false, b'F', b'2', "1000"), (1, true, b'0', b'0', "0")]
        {
            encoder.start(b"8").uint(34, seq);
            if poss_dup {
                encoder.char(43, b'Y');
            }
            encoder
                .str(11, "T1-0")
                .str(17, &format!("E{seq}"))
                .char(150, exec_type)
                .char(39, status)
                .str(14, cum_qty)
                .str(55, "AAPL")
                .char(54, b'1')
                .str(32, cum_qty);
            gateway.write_all(encoder.finish()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while tally.inbound.closed == 0 && Instant::now() < deadline {
            assert!(drain(&mut client, &mut tally, Duration::from_millis(100)));
        }
        assert_eq!(tally.acks.get("T1-0"), Some(&1));
        assert_eq!(
            tally.final_states.get("T1-0"),
            Some(&("1000".to_owned(), '2'))
        );
    }

    #[test]
    fn a_gap_never_resent_stays_open() {
        let mut seen = Inbound::new(1);
        assert_eq!(
            seen.arrive(&inbound(b"0", 3, false, None)),
            Arrival::Gap { from: 1 }
        );
        assert_eq!(
            seen.arrive(&inbound(b"0", 4, false, None)),
            Arrival::Process
        );
        assert_eq!(seen.arrive(&inbound(b"8", 1, true, None)), Arrival::Process);
        assert_eq!((seen.open.len(), seen.closed), (1, 0));
    }

    #[test]
    fn a_gateway_kill_may_cost_resends_but_not_a_disconnect_or_a_silent_session() {
        let clean = DemoReport {
            sessions: 2,
            sessions_kept: 2,
            books_match_replay: true,
            audit_verified: true,
            gateway_kills: vec![GatewayKill {
                resend_requests_by_counterparties: 3,
                resend_requests_by_gateway: 1,
                gaps_closed: 3,
                sessions_answered: 2,
                ..GatewayKill::default()
            }],
            ..DemoReport::default()
        };
        assert!(clean.ok(), "{}", clean.render());
        assert!(
            clean
                .render()
                .contains("gateway kill    2/2 sessions answering again"),
            "{}",
            clean.render()
        );
        let mut disconnected = clean.clone();
        disconnected.gateway_kills[0].disconnects = 1;
        assert!(!disconnected.ok());
        let mut silent = clean.clone();
        silent.gateway_kills[0].sessions_answered = 1;
        assert!(!silent.ok());
        let mut open = clean.clone();
        open.gaps_open = 1;
        assert!(!open.ok());
        let mut lost = clean;
        lost.lost = 1;
        assert!(!lost.ok());
    }

    #[test]
    fn the_report_names_each_build_and_counts_in_microseconds() {
        let switch = SwitchReport {
            from: "blue".into(),
            to: "green".into(),
            barrier_seq: 7,
            pause_us: 12,
            planned: true,
            scope: SwitchScope::All,
            rollback: false,
        };
        let report = DemoReport {
            fills: 6,
            switches: vec![switch],
            ..DemoReport::default()
        };
        let text = report.render();
        assert!(
            text.contains(
                "blue (old build, snapshot format 1) -> green (new build, snapshot format 2)"
            ),
            "{text}"
        );
        assert!(text.contains("pause 12 µs"), "{text}");
        assert!(!text.contains(" us"), "{text}");
        assert!(
            text.contains("fill reports    6 received by counterparties (one per side: 3 trades)"),
            "{text}"
        );
    }
}
