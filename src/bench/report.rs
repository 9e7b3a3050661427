//! What `baton bench` reports: baton's latency percentiles next to the same-run echo baseline's,
//! as ratios, so the numbers mean the same on a laptop, a VM or a tuned server.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::load::{Incident, LoadResult};
use crate::constants;

/// Percentiles of one measurement, µs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p99_9_us: u64,
    /// 99.99th percentile.
    pub p99_99_us: u64,
    /// Worst.
    pub max_us: u64,
}

impl Latency {
    /// Percentiles of `histogram` (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: histogram.value_at_quantile(0.5),
            p90_us: histogram.value_at_quantile(0.9),
            p99_us: histogram.value_at_quantile(0.99),
            p99_9_us: histogram.value_at_quantile(0.999),
            p99_99_us: histogram.value_at_quantile(0.9999),
            max_us: histogram.max(),
        }
    }

    /// Each percentile of `self` divided by the same one of `base` (0 when the base is 0).
    pub fn ratio_to(&self, base: &Latency) -> Ratios {
        let r = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                (a as f64 / b as f64 * 100.0).round() / 100.0
            }
        };
        Ratios {
            p50: r(self.p50_us, base.p50_us),
            p90: r(self.p90_us, base.p90_us),
            p99: r(self.p99_us, base.p99_us),
            p99_9: r(self.p99_9_us, base.p99_9_us),
            p99_99: r(self.p99_99_us, base.p99_99_us),
            max: r(self.max_us, base.max_us),
        }
    }
}

/// baton ÷ baseline, per percentile: the numbers the targets are stated in.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Ratios {
    /// p50 ratio.
    pub p50: f64,
    /// p90 ratio.
    pub p90: f64,
    /// p99 ratio.
    pub p99: f64,
    /// p99.9 ratio.
    pub p99_9: f64,
    /// p99.99 ratio.
    pub p99_99: f64,
    /// max ratio.
    pub max: f64,
}

/// Counts and latency of one measurement.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Measurement {
    /// Percentiles, µs from intended send time to first answer.
    pub latency: Latency,
    /// Answers per second over the run.
    pub throughput_per_s: f64,
    /// Orders sent.
    pub orders: u64,
    /// Orders answered.
    pub answered: u64,
    /// Orders never answered.
    pub missing: u64,
    /// Answers received twice.
    pub duplicates: u64,
    /// Requests answered with a refusal: an ExecutionReport with ExecType Rejected, an
    /// OrderCancelReject, a session Reject or a BusinessMessageReject. They are answers too
    /// (counted in `answered` and in the latency). Some are expected: a cancel or replace of an
    /// order that a crossing order has already filled is refused; many mean the load is not the
    /// mix asked for.
    pub refused: u64,
    /// Inbound sequence gaps.
    pub gaps: u64,
    /// Sessions disconnected or logged out.
    pub disconnects: u64,
}

impl Measurement {
    /// Summarizes a load result.
    pub fn of(result: &LoadResult) -> Measurement {
        let secs = result.elapsed.as_secs_f64();
        Measurement {
            latency: Latency::of(&result.histogram),
            throughput_per_s: if secs > 0.0 {
                (result.answered as f64 / secs).round()
            } else {
                0.0
            },
            orders: result.orders,
            answered: result.answered,
            missing: result.missing,
            duplicates: result.duplicates,
            refused: result.refused,
            gaps: result.gaps,
            disconnects: result.disconnects,
        }
    }
}

/// One point of the latency time series.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket, ms after the run started (by intended send time).
    pub at_ms: u64,
    /// Orders in the bucket.
    pub orders: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Worst, µs.
    pub max_us: u64,
}

/// The time series of `samples` (sorted by time) in [`constants::BENCH_SERIES_BUCKET_MS`]
/// buckets.
pub fn series(samples: &[(u64, u64)]) -> Vec<SeriesPoint> {
    let bucket_us = constants::BENCH_SERIES_BUCKET_MS * 1_000;
    let mut points = Vec::new();
    let mut rest = samples;
    while let Some(&(first, _)) = rest.first() {
        let bucket = first / bucket_us;
        let len = rest.partition_point(|&(at, _)| at / bucket_us == bucket);
        let mut latencies: Vec<u64> = rest[..len].iter().map(|&(_, l)| l).collect();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        points.push(SeriesPoint {
            at_ms: bucket * constants::BENCH_SERIES_BUCKET_MS,
            orders: len as u64,
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: at(1.0),
        });
        rest = &rest[len..];
    }
    points
}

/// A switch, rollback or kill during the run and what it cost.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EventReport {
    /// "switch", "rollback" or "kill".
    pub kind: String,
    /// What happened, in words (engines, barrier, pause).
    pub detail: String,
    /// When it started, ms after the run started.
    pub at_ms: u64,
    /// When it ended, ms after the run started, for an event that lasts (hostile traffic);
    /// equal to `at_ms` for one that does not.
    #[serde(default)]
    pub until_ms: u64,
    /// Worst latency of orders meant to be sent from just before the event to
    /// [`constants::BENCH_EVENT_WINDOW_MS`] after it, µs; an order in the windows of several
    /// events counts for one of them only (see `split_by_event`).
    pub worst_us: u64,
    /// `worst_us` ÷ the run's steady p99 (orders outside every event window).
    pub worst_to_steady_p99: f64,
    /// Orders in the event's window: the ones `worst_us` is the worst of.
    #[serde(default)]
    pub window_orders: u64,
    /// The worst latency the window would show if the event cost nothing, µs: the steady
    /// orders' quantile at 1 − 1/`window_orders` (nearest rank), the latency a steady order
    /// exceeds with probability 1/`window_orders`. The max of thousands of orders is several
    /// times their p99 with no event at all, so `worst_to_steady_p99` alone cannot tell an
    /// event's cost from the machine's tail; this can.
    #[serde(default)]
    pub expected_worst_us: u64,
    /// There were fewer steady orders than `window_orders`, so `expected_worst_us` is only their
    /// max (an underestimate of what the window's worst would be).
    #[serde(default)]
    pub expected_worst_capped: bool,
    /// `worst_us` ÷ `expected_worst_us` (0 when that is 0): near 1 means the event cost no more
    /// than the steady tail does.
    #[serde(default)]
    pub worst_to_expected_worst: f64,
    /// What the counterparties saw in the event's window (counted like `worst_us`, each once).
    #[serde(default)]
    pub seen: IncidentCounts,
}

impl EventReport {
    /// An event as it happened, before the run's latencies score it (see [`score_events`]).
    pub fn new(kind: String, detail: String, at_ms: u64, until_ms: u64) -> Self {
        Self {
            kind,
            detail,
            at_ms,
            until_ms,
            worst_us: 0,
            worst_to_steady_p99: 0.0,
            window_orders: 0,
            expected_worst_us: 0,
            expected_worst_capped: false,
            worst_to_expected_worst: 0.0,
            seen: IncidentCounts::default(),
        }
    }
}

/// What the bench's sessions saw around an event: a gateway kill may cost resends, never a
/// disconnect; a planned upgrade or a switch should cost neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IncidentCounts {
    /// Sessions that lost their connection or were logged out.
    pub disconnects: u64,
    /// Gaps in what the acceptor sent, each asked for by a ResendRequest.
    pub gaps: u64,
    /// Messages the acceptor resent (PossDup).
    pub resent: u64,
    /// ResendRequests of the acceptor's the sessions answered (orders it had lost).
    pub resends_served: u64,
    /// Bytes skipped that were not a whole frame (cut by a dying process).
    pub garbled: u64,
}

impl IncidentCounts {
    fn add(&mut self, incident: Incident) {
        match incident {
            Incident::Disconnect => self.disconnects += 1,
            Incident::Gap => self.gaps += 1,
            Incident::Resent => self.resent += 1,
            Incident::ResendServed => self.resends_served += 1,
            Incident::Garbled => self.garbled += 1,
        }
    }
}

/// The window around an event lasting from `at_ms` to `until_ms`, µs since the start: from just
/// before it to [`constants::BENCH_EVENT_WINDOW_MS`] after its end.
fn window_us(at_ms: u64, until_ms: u64) -> (u64, u64) {
    let from = at_ms.saturating_sub(constants::BENCH_SERIES_BUCKET_MS) * 1_000;
    let to = (until_ms.max(at_ms) + constants::BENCH_EVENT_WINDOW_MS) * 1_000;
    (from, to)
}

/// Splits `samples` by event window (`(at_ms, until_ms)` per event): each event's worst latency
/// and order count, and the latencies of the steady orders, those outside every window. Each
/// order counts for one event only, since events closer together than a window would otherwise
/// all report the same spike: an order inside several windows belongs to the latest event that
/// had begun when it was meant to be sent (the most recent suspect), or, in the margin before
/// any of them began, to the first one. One rule decides both sides, so an order is either in
/// exactly one window or steady.
fn split_by_event(samples: &[(u64, u64)], events: &[(u64, u64)]) -> (Vec<EventWindow>, Vec<u64>) {
    let windows = windows_us(events);
    let mut stats = vec![EventWindow::default(); events.len()];
    let mut steady = Vec::with_capacity(samples.len());
    for &(at, latency) in samples {
        match owner(&windows, at) {
            Some(i) => {
                stats[i].worst_us = stats[i].worst_us.max(latency);
                stats[i].orders += 1;
            }
            None => steady.push(latency),
        }
    }
    (stats, steady)
}

/// What one event's window held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct EventWindow {
    /// The worst latency in it, µs.
    worst_us: u64,
    /// How many orders it held.
    orders: u64,
}

/// The worst latency `window_orders` orders would show if drawn from the steady distribution:
/// its quantile at 1 − 1/`window_orders` by nearest rank over `sorted_steady` (ascending), and
/// whether it had to be capped at the max because the steady sample is smaller than the window.
/// 0 (uncapped) for an empty window; 0 (capped) with no steady orders.
fn expected_worst(sorted_steady: &[u64], window_orders: u64) -> (u64, bool) {
    let n = sorted_steady.len() as u64;
    if window_orders == 0 {
        return (0, false);
    }
    if n < window_orders {
        return (sorted_steady.last().copied().unwrap_or(0), true);
    }
    // Nearest rank: the smallest rank r with r / n ≥ 1 − 1/w, i.e. r = ⌈n (w − 1) / w⌉, at
    // least 1. In u128: n (w − 1) does not fit u64 for huge samples.
    let (n128, w) = (u128::from(n), u128::from(window_orders));
    let rank = (n128 * (w - 1)).div_ceil(w).max(1) as usize;
    (sorted_steady[rank - 1], false)
}

/// `a` ÷ `b` to two decimals; 0 when `b` is 0.
fn ratio_2dp(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        (a as f64 / b as f64 * 100.0).round() / 100.0
    }
}

/// Scores `events` against the run's `samples` (`(intended send µs, latency µs)`) and the
/// sessions' `incidents`: each event's worst, its window's order count, the worst the steady
/// orders (those outside every window) would show over that many orders, the ratios, and what
/// the sessions saw. Returns the steady p99, µs.
pub fn score_events(
    events: &mut [EventReport],
    samples: &[(u64, u64)],
    incidents: &[(u64, Incident)],
) -> u64 {
    let windows: Vec<(u64, u64)> = events.iter().map(|e| (e.at_ms, e.until_ms)).collect();
    let (stats, mut steady) = split_by_event(samples, &windows);
    // Sorted once: the p99 and every event's expected worst are read from it.
    steady.sort_unstable();
    let steady_p99_us = if steady.is_empty() {
        0
    } else {
        steady[((steady.len() - 1) as f64 * 0.99).round() as usize]
    };
    let seen = incidents_per_event(incidents, &windows);
    for ((event, window), seen) in events.iter_mut().zip(stats).zip(seen) {
        event.worst_us = window.worst_us;
        event.window_orders = window.orders;
        event.seen = seen;
        event.worst_to_steady_p99 = ratio_2dp(event.worst_us, steady_p99_us);
        let (expected, capped) = expected_worst(&steady, window.orders);
        event.expected_worst_us = expected;
        event.expected_worst_capped = capped;
        event.worst_to_expected_worst = ratio_2dp(event.worst_us, expected);
    }
    steady_p99_us
}

/// The windows of `events` as (start, from, to), µs.
fn windows_us(events: &[(u64, u64)]) -> Vec<(u64, u64, u64)> {
    events
        .iter()
        .map(|&(at_ms, until_ms)| {
            let (from, to) = window_us(at_ms, until_ms);
            (at_ms * 1_000, from, to)
        })
        .collect()
}

/// Which event a moment `at` (µs) belongs to: the latest event begun by `at` whose window holds
/// it; failing that, the first event whose window holds it (`at` is in the margin before it).
fn owner(windows: &[(u64, u64, u64)], at: u64) -> Option<usize> {
    let mut begun: Option<(usize, u64)> = None;
    let mut upcoming: Option<(usize, u64)> = None;
    for (i, &(start, from, to)) in windows.iter().enumerate() {
        if at < from || at > to {
            continue;
        }
        if start <= at {
            if begun.is_none_or(|(_, s)| start > s) {
                begun = Some((i, start));
            }
        } else if upcoming.is_none_or(|(_, s)| start < s) {
            upcoming = Some((i, start));
        }
    }
    begun.or(upcoming).map(|(i, _)| i)
}

/// What the sessions saw in the window of each event (`(at_ms, until_ms)`), each incident
/// counted for one event the way [`split_by_event`] counts an order.
fn incidents_per_event(
    incidents: &[(u64, Incident)],
    events: &[(u64, u64)],
) -> Vec<IncidentCounts> {
    let windows = windows_us(events);
    let mut counts = vec![IncidentCounts::default(); events.len()];
    for &(at, incident) in incidents {
        if let Some(i) = owner(&windows, at) {
            counts[i].add(incident);
        }
    }
    counts
}

/// `1 session`, `2 sessions`.
pub fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// A third-party acceptor measured in the same run (`--peer`), with baton's ratios to it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PeerReport {
    /// Which peer: "quickfix".
    pub name: String,
    /// How it ran (library, store, dictionary, threads), so its numbers are read for what they
    /// are.
    pub detail: String,
    /// Its load: the same sessions, rate and duration as baton's; new orders only, the one
    /// request it answers.
    pub mix: String,
    /// What it measured.
    pub measurement: Measurement,
    /// baton ÷ peer, per percentile.
    pub ratios: Ratios,
    /// Its latency per time bucket.
    pub series: Vec<SeriesPoint>,
}

/// The load run again under a verified canary (`--verified-canary`), against the run under the
/// default (immediate) canary: what waiting for the baseline's matching answer costs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DeliveryComparison {
    /// How it ran.
    pub detail: String,
    /// What it measured.
    pub measurement: Measurement,
    /// verified ÷ immediate (the main run's baton), per percentile.
    pub ratios: Ratios,
}

/// Everything one `baton bench` run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchReport {
    /// What was measured: the venue started by the bench, or the target address.
    pub target: String,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Scheduled orders per second across sessions.
    pub rate_per_s: u64,
    /// Scheduled seconds of load.
    pub duration_s: f64,
    /// Throughput mode (`--throughput`): the `rate_per_s` × `duration_s` orders were sent as fast
    /// as they were answered, so `throughput_per_s` is what the acceptor sustains and latency is
    /// from each order's actual send, with a window of orders queued ahead of it.
    pub throughput: bool,
    /// Ping-pong mode (`--pingpong`): each session kept exactly one order in flight, sending the
    /// next when the answer came, and latency is from each actual send: what a client measuring
    /// one request at a time sees.
    #[serde(default)]
    pub pingpong: bool,
    /// Orders per session answered but left out of the latency, as warm-up (`--warmup`).
    #[serde(default)]
    pub warmup_orders: u64,
    /// Order mix weights, as given.
    pub mix: String,
    /// Request size of the baseline, bytes (a NewOrderSingle's size).
    pub payload_bytes: usize,
    /// Where the threads run, so the numbers can be read against the machine.
    pub placement: String,
    /// baton (or the target acceptor).
    pub baton: Measurement,
    /// The echo baseline, same run, same client machinery.
    pub baseline: Measurement,
    /// baton ÷ baseline.
    pub ratios: Ratios,
    /// baton's p99 over orders outside every event window, µs.
    pub steady_p99_us: u64,
    /// Switches and kills, with their blip.
    pub events: Vec<EventReport>,
    /// baton's latency per time bucket.
    pub series: Vec<SeriesPoint>,
    /// The baseline's latency per time bucket.
    pub baseline_series: Vec<SeriesPoint>,
    /// The third-party peer, when `--peer` asked for one.
    pub peer: Option<PeerReport>,
    /// The same load under a verified canary, when `--verified-canary` asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_canary: Option<DeliveryComparison>,
    /// The engine links' transport of the bench's own venue (`--link`); empty with `--target`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link: String,
    /// CPU and context switches per order of each process over baton's run (own venue only):
    /// the wake-up arithmetic behind the latency.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<super::usage::ProcessUsage>,
}

impl BenchReport {
    /// Whether nothing was lost, duplicated or disconnected and the baseline ran.
    pub fn complete(&self) -> bool {
        self.baton.orders > 0
            && self.baton.missing == 0
            && self.baton.duplicates == 0
            && self.baton.disconnects == 0
            && self.baseline.answered > 0
            && self.peer.as_ref().is_none_or(|peer| {
                let m = &peer.measurement;
                m.orders > 0 && m.missing == 0 && m.duplicates == 0 && m.disconnects == 0
            })
            && self.verified_canary.as_ref().is_none_or(|verified| {
                let m = &verified.measurement;
                m.orders > 0 && m.missing == 0 && m.duplicates == 0 && m.disconnects == 0
            })
    }

    /// A summary a person reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "target        {}\nload          {}, {} orders/s for {:.1} s, mix {}",
            self.target,
            plural(self.sessions as u64, "session"),
            self.rate_per_s,
            self.duration_s,
            self.mix
        );
        if self.throughput {
            let _ = writeln!(
                out,
                "throughput    unpaced: the {} orders sent as fast as answered, {} in flight per \
                 session; latency from each actual send",
                (self.rate_per_s as f64 * self.duration_s).round(),
                constants::BENCH_THROUGHPUT_WINDOW
            );
        }
        if self.pingpong {
            let _ = writeln!(
                out,
                "ping-pong     one order in flight per session, the next sent when its answer \
                 arrives; latency from each actual send; the first {} orders of each session \
                 are warm-up, left out of the latency",
                self.warmup_orders
            );
        }
        let _ = writeln!(out, "placement     {}", self.placement);
        if !self.link.is_empty() {
            let _ = writeln!(out, "engine link   {}", self.link);
        }
        let _ = writeln!(
            out,
            "\n{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
            "µs", "p50", "p90", "p99", "p99.9", "p99.99", "max", "answers/s"
        );
        let mut rows = vec![("baton", &self.baton), ("echo", &self.baseline)];
        if let Some(peer) = &self.peer {
            rows.push((peer.name.as_str(), &peer.measurement));
        }
        if let Some(verified) = &self.verified_canary {
            rows.push(("verified", &verified.measurement));
        }
        for (name, m) in rows {
            let l = &m.latency;
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
                name,
                l.p50_us,
                l.p90_us,
                l.p99_us,
                l.p99_9_us,
                l.p99_99_us,
                l.max_us,
                m.throughput_per_s
            );
        }
        let mut ratios = vec![("÷ echo".to_string(), &self.ratios)];
        if let Some(peer) = &self.peer {
            ratios.push((format!("÷ {}", peer.name), &peer.ratios));
        }
        if let Some(verified) = &self.verified_canary {
            // The other way round: what verified delivery costs over the immediate canary.
            ratios.push(("verif÷bat".to_string(), &verified.ratios));
        }
        for (name, r) in ratios {
            let _ = writeln!(
                out,
                "{:<10} {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x",
                name, r.p50, r.p90, r.p99, r.p99_9, r.p99_99, r.max
            );
        }
        if self.throughput && self.baseline.throughput_per_s > 0.0 {
            let _ = writeln!(
                out,
                "orders/s      baton {:.0} = {:.3}x echo ({:.0})",
                self.baton.throughput_per_s,
                self.baton.throughput_per_s / self.baseline.throughput_per_s,
                self.baseline.throughput_per_s
            );
        }
        if !self.processes.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<14} {:>8} {:>12} {:>14} {:>14}",
                "per process", "cpu s", "cpu µs/order", "sleeps/order", "preempt/order"
            );
            for p in &self.processes {
                let _ = writeln!(
                    out,
                    "{:<14} {:>8.3} {:>12.1} {:>14.2} {:>14.2}",
                    p.name,
                    p.cpu_s,
                    p.cpu_us_per_order,
                    p.sleeps_per_order,
                    p.preemptions_per_order
                );
            }
        }
        let b = &self.baton;
        let _ = writeln!(
            out,
            "\norders {}  answered {}  refused {}  missing {}  duplicates {}  gaps {}  disconnects {}",
            b.orders, b.answered, b.refused, b.missing, b.duplicates, b.gaps, b.disconnects
        );
        let _ = writeln!(
            out,
            "              refused: answers that refuse a request (rejected order, cancel reject, \
             session or business reject), among the answered; a cancel or replace of an order \
             already filled is refused legitimately"
        );
        if let Some(peer) = &self.peer {
            let m = &peer.measurement;
            let _ = writeln!(
                out,
                "{} orders {}  answered {}  refused {}  missing {}  duplicates {}  gaps {}  \
                 disconnects {}\n              {}; mix {}",
                peer.name,
                m.orders,
                m.answered,
                m.refused,
                m.missing,
                m.duplicates,
                m.gaps,
                m.disconnects,
                peer.detail,
                peer.mix
            );
        }
        if let Some(verified) = &self.verified_canary {
            let m = &verified.measurement;
            let _ = writeln!(
                out,
                "verified orders {}  answered {}  refused {}  missing {}  duplicates {}  gaps {}  \
                 disconnects {}\n              {}; verif÷bat is its latency ÷ baton's (the \
                 default, immediate canary) in this run",
                m.orders,
                m.answered,
                m.refused,
                m.missing,
                m.duplicates,
                m.gaps,
                m.disconnects,
                verified.detail
            );
        }
        if !self.events.is_empty() {
            let _ = writeln!(out, "steady p99    {} µs", self.steady_p99_us);
            let _ = writeln!(
                out,
                "              worst per event: orders from just before it to {} ms after it, \
                 each order counted for one event only (the latest begun); also as a ratio to \
                 the worst the same number of steady orders shows (near 1: no cost beyond the \
                 tail)",
                constants::BENCH_EVENT_WINDOW_MS
            );
        }
        for event in &self.events {
            let _ = writeln!(
                out,
                "{:<9} at {:>6} ms: worst {} µs ({:.2}x steady p99, {:.2}x the worst of {} \
                 steady orders{}) — {}",
                event.kind,
                event.at_ms,
                event.worst_us,
                event.worst_to_steady_p99,
                event.worst_to_expected_worst,
                event.window_orders,
                if event.expected_worst_capped {
                    ", capped: fewer steady orders than that"
                } else {
                    ""
                },
                event.detail
            );
            let seen = &event.seen;
            if *seen != IncidentCounts::default() {
                let _ = writeln!(
                    out,
                    "{:<9}   sessions saw {} disconnects, {} gaps, {} resent, {} resends served, \
                     {} garbled",
                    "", seen.disconnects, seen.gaps, seen.resent, seen.resends_served, seen.garbled
                );
            }
        }
        let _ = writeln!(
            out,
            "result        {}",
            if self.complete() {
                "complete: nothing lost, duplicated or disconnected"
            } else {
                "INCOMPLETE: see the counts above"
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_buckets_by_intended_time() {
        let samples = [(0, 10), (50_000, 30), (99_999, 20), (250_000, 7)];
        let points = series(&samples);
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].at_ms, points[0].orders), (0, 3));
        assert_eq!((points[0].p50_us, points[0].max_us), (20, 30));
        assert_eq!((points[1].at_ms, points[1].max_us), (200, 7));
    }

    /// Each event's worst, as the report scores it.
    fn worst_per_event(samples: &[(u64, u64)], events: &[(u64, u64)]) -> Vec<u64> {
        let (stats, _) = split_by_event(samples, events);
        stats.into_iter().map(|window| window.worst_us).collect()
    }

    /// The worst of an event at `at_ms` alone.
    fn worst_around(samples: &[(u64, u64)], at_ms: u64) -> u64 {
        worst_per_event(samples, &[(at_ms, at_ms)])[0]
    }

    #[test]
    fn every_order_is_in_exactly_one_window_or_steady() {
        // Before, at the edges of and between two windows (0.9-2.5 s and 2.9-4.5 s).
        let samples = [
            (0, 1),
            (899_999, 2),
            (900_000, 3),
            (2_500_000, 4),
            (2_500_001, 5),
            (2_900_000, 6),
            (4_600_000, 7),
        ];
        let (stats, steady) = split_by_event(&samples, &[(1_000, 1_000), (3_000, 3_000)]);
        assert_eq!(stats.iter().map(|w| w.orders).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(steady, [1, 2, 5, 7]);
    }

    #[test]
    fn worst_around_looks_just_before_and_after_an_event() {
        let samples = [(0, 500), (950_000, 40), (2_000_000, 90), (3_000_000, 900)];
        assert_eq!(worst_around(&samples, 1_000), 90);
    }

    #[test]
    fn a_spike_in_overlapping_windows_is_reported_once() {
        // Events at 1.0 s and 2.0 s: their windows (0.9-2.5 s, 1.9-3.5 s) overlap. The spike at
        // 2.2 s is after both began, so it is the second event's; the one at 1.95 s is in both
        // windows but only the first had begun.
        let samples = [(1_100_000, 50), (1_950_000, 700), (2_200_000, 900)];
        assert_eq!(
            worst_per_event(&samples, &[(1_000, 1_000), (2_000, 2_000)]),
            [700, 900]
        );
        // Alone, each event would have claimed the 900 µs spike.
        assert_eq!(worst_around(&samples, 1_000), 900);
        // An event lasting 1.0-1.5 s (hostile traffic) and a kill at 1.2 s inside it: orders
        // after the kill are the kill's.
        assert_eq!(
            worst_per_event(&samples, &[(1_000, 1_500), (1_200, 1_200)]),
            [50, 900]
        );
    }

    #[test]
    fn expected_worst_is_the_steady_quantile_at_one_minus_one_over_the_window() {
        let steady: Vec<u64> = (1..=100).collect();
        // 10 orders: the 0.9 quantile; 100: the 0.99; 1: the smallest (rank at least 1).
        assert_eq!(expected_worst(&steady, 10), (90, false));
        assert_eq!(expected_worst(&steady, 100), (99, false));
        assert_eq!(expected_worst(&steady, 3), (67, false));
        assert_eq!(expected_worst(&steady, 1), (1, false));
        // Fewer steady orders than the window: their max, flagged.
        assert_eq!(expected_worst(&steady, 101), (100, true));
        assert_eq!(expected_worst(&[], 5), (0, true));
        // An empty window expects nothing.
        assert_eq!(expected_worst(&steady, 0), (0, false));
    }

    fn event_at(at_ms: u64) -> EventReport {
        EventReport::new("switch".into(), String::new(), at_ms, at_ms)
    }

    #[test]
    fn an_event_is_scored_against_the_worst_of_as_many_steady_orders() {
        // 200 steady orders in the first 2 s, 1..=200 µs; an event at 5 s with 20 orders in its
        // window, one of them 400 µs.
        let mut samples: Vec<(u64, u64)> = (0..200).map(|i| (i * 10_000, i + 1)).collect();
        samples.extend((0..20).map(|i| (5_000_000 + i * 10_000, if i == 7 { 400 } else { 100 })));
        let mut events = [event_at(5_000), event_at(9_000)];
        let incidents = [(5_100_000, Incident::Gap)];
        let steady_p99 = score_events(&mut events, &samples, &incidents);
        assert_eq!(steady_p99, 198);
        let event = &events[0];
        assert_eq!((event.worst_us, event.window_orders), (400, 20));
        assert_eq!(event.worst_to_steady_p99, 2.02);
        // The 0.95 quantile of 1..=200 by nearest rank is 190.
        assert_eq!(
            (event.expected_worst_us, event.expected_worst_capped),
            (190, false)
        );
        assert_eq!(event.worst_to_expected_worst, 2.11);
        assert_eq!(event.seen.gaps, 1);
        // An event whose window held no orders: nothing to compare.
        let empty = &events[1];
        assert_eq!((empty.worst_us, empty.window_orders), (0, 0));
        assert_eq!(
            (empty.expected_worst_us, empty.worst_to_expected_worst),
            (0, 0.0)
        );
        let text = BenchReport {
            events: events.to_vec(),
            ..BenchReport::default()
        }
        .render();
        assert!(
            text.contains("2.02x steady p99, 2.11x the worst of 20 steady orders)"),
            "{text}"
        );
    }

    #[test]
    fn per_process_usage_and_the_link_are_rendered() {
        let report = BenchReport {
            link: "shm".into(),
            processes: vec![super::super::usage::ProcessUsage {
                name: "gateway".into(),
                cpu_s: 1.5,
                cpu_us_per_order: 12.3,
                sleeps_per_order: 2.25,
                preemptions_per_order: 0.5,
            }],
            ..BenchReport::default()
        };
        let text = report.render();
        assert!(text.contains("engine link   shm"), "{text}");
        assert!(text.contains("sleeps/order"), "{text}");
        let row = text.lines().find(|l| l.starts_with("gateway")).unwrap();
        assert!(
            row.contains("1.500") && row.contains("12.3") && row.contains("2.25"),
            "{row}"
        );
    }

    #[test]
    fn incidents_are_counted_for_the_event_whose_window_holds_them() {
        let incidents = [
            (500_000, Incident::Gap),
            (1_100_000, Incident::ResendServed),
            (1_200_000, Incident::Resent),
            (2_100_000, Incident::Disconnect),
            (9_000_000, Incident::Garbled),
        ];
        let counts = incidents_per_event(&incidents, &[(1_000, 1_000), (2_000, 2_000)]);
        assert_eq!(
            counts[0],
            IncidentCounts {
                resends_served: 1,
                resent: 1,
                ..IncidentCounts::default()
            }
        );
        assert_eq!(
            counts[1],
            IncidentCounts {
                disconnects: 1,
                ..IncidentCounts::default()
            }
        );
    }

    #[test]
    fn counts_are_pluralised() {
        assert_eq!(plural(1, "session"), "1 session");
        assert_eq!(plural(0, "session"), "0 sessions");
        assert_eq!(plural(50, "session"), "50 sessions");
        let report = BenchReport {
            sessions: 1,
            ..BenchReport::default()
        };
        assert!(report.render().contains("load          1 session, "));
    }

    #[test]
    fn a_peer_is_reported_beside_the_echo_and_must_be_complete() {
        let answered = Measurement {
            orders: 10,
            answered: 10,
            latency: Latency {
                p50_us: 40,
                ..Latency::default()
            },
            ..Measurement::default()
        };
        let mut report = BenchReport {
            baton: answered.clone(),
            baseline: answered.clone(),
            ..BenchReport::default()
        };
        assert!(report.complete());
        assert!(!report.render().contains("÷ quickfix"));
        report.peer = Some(PeerReport {
            name: "quickfix".into(),
            measurement: Measurement {
                missing: 1,
                ..answered.clone()
            },
            ratios: Ratios {
                p50: 1.25,
                ..Ratios::default()
            },
            ..PeerReport::default()
        });
        assert!(
            !report.complete(),
            "a peer that lost orders makes the run incomplete"
        );
        let text = report.render();
        assert!(text.contains("÷ echo"), "{text}");
        assert!(text.contains("÷ quickfix     1.25x"), "{text}");
        assert!(text.contains("quickfix orders 10"), "{text}");
    }

    #[test]
    fn a_verified_canary_run_is_reported_as_a_ratio_to_the_default_canary_and_must_be_complete() {
        let answered = Measurement {
            orders: 10,
            answered: 10,
            ..Measurement::default()
        };
        let mut report = BenchReport {
            baton: answered.clone(),
            baseline: answered.clone(),
            ..BenchReport::default()
        };
        assert!(!report.render().contains("verif÷bat"));
        report.verified_canary = Some(DeliveryComparison {
            measurement: answered.clone(),
            ratios: Ratios {
                p50: 1.5,
                ..Ratios::default()
            },
            ..DeliveryComparison::default()
        });
        assert!(report.complete());
        let text = report.render();
        assert!(text.contains("verif÷bat      1.50x"), "{text}");
        assert!(text.contains("verified orders 10"), "{text}");
        if let Some(verified) = report.verified_canary.as_mut() {
            verified.measurement.duplicates = 1;
        }
        assert!(
            !report.complete(),
            "a verified run that duplicated makes the run incomplete"
        );
    }

    #[test]
    fn ratios_skip_an_empty_baseline() {
        let a = Latency {
            p50_us: 30,
            ..Latency::default()
        };
        let b = Latency {
            p50_us: 20,
            ..Latency::default()
        };
        assert_eq!(a.ratio_to(&b).p50, 1.5);
        assert_eq!(a.ratio_to(&b).p99, 0.0);
    }
}
