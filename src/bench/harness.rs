//! `baton bench`: starts a venue of real processes (or targets any FIX 4.4 acceptor), measures
//! the echo baseline and then baton under the same open-loop load, drives switches and engine
//! kills during the run, and assembles the [`BenchReport`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::echo::{self, EchoServer};
use super::hostile::{self, Hostile, HostileTarget};
use super::load::{self, FixTarget, LoadError, Mix, Plan, Progress};
use super::peer::{self, PeerError, PeerProcess, PeerSpec};
use super::report::{self, BenchReport, DeliveryComparison, EventReport, Measurement, PeerReport};
use super::usage;
use super::venue::{Venue, VenueConfig, VenueError};
use crate::control::api::{ControlReply, ControlRequest};
use crate::control::client;

/// Why the bench could not run (as opposed to what it measured).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The load generator failed to set up.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The venue did not come up or answer as expected.
    #[error("{0}")]
    Venue(String),
    /// Starting or driving the bench's own venue failed.
    #[error(transparent)]
    Process(#[from] VenueError),
    /// The third-party peer could not be built or started.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The order mix has requests the peer does not answer.
    #[error(
        "the {0} peer answers new orders only, and the mix has cancels, replaces or crossing \
         orders: pass --mix new=1 (the same load then runs against baton, echo and the peer)"
    )]
    PeerMix(String),
}

/// An existing FIX acceptor to measure instead of a venue started by the bench.
#[derive(Clone, Debug)]
pub struct External {
    /// Its address.
    pub addr: SocketAddr,
    /// SenderCompID prefix; session n is this followed by n+1.
    pub sender_prefix: String,
    /// Its CompID.
    pub target_comp_id: String,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The `baton` binary to start the venue with (the bench's own, or a test's).
    pub program: PathBuf,
    /// Scratch directory for the venue.
    pub dir: PathBuf,
    /// Measure this acceptor instead of starting a venue.
    pub external: Option<External>,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Orders per second across sessions.
    pub rate_per_s: u64,
    /// Scheduled load time.
    pub duration: Duration,
    /// Order mix.
    pub mix: Mix,
    /// Switch (then roll back, alternately) this often; own venue only.
    pub switch_every: Option<Duration>,
    /// SIGKILL the authoritative engine at these offsets; own venue only.
    pub kill_at: Vec<Duration>,
    /// Draw a progress bar on stderr.
    pub progress_bar: bool,
    /// Run the whole load under a canary (every symbol owned by the standby, gates watching it
    /// against the other engine), to measure what a canary costs; own venue only.
    pub canary: bool,
    /// With `canary`: then run the same load on a fresh venue whose canary delivers verified
    /// (`[control] canary_delivery = "verified"`), and report its latency as a ratio to the
    /// immediate canary's.
    pub verified_canary: bool,
    /// Hostile traffic beside the measured sessions, and when it starts.
    pub hostile: Option<(Hostile, Duration)>,
    /// The `baton` binary the venue runs, when not `program` (to measure another build under
    /// the same harness); own venue only.
    pub venue_program: Option<PathBuf>,
    /// Measure a third-party acceptor too, after baton and the echo, with the same load.
    pub peer: Option<PeerSpec>,
    /// Send the run's orders (rate × duration) as fast as they are answered, each session
    /// keeping a window in flight, to measure orders per second rather than latency at a rate.
    pub throughput: bool,
    /// The transport of the venue's engine links (`--link`); own venue only.
    pub link: super::venue::LinkChoice,
    /// `[link] spin_us` for the venue (`--spin-us`); own venue only.
    pub spin_us: Option<u64>,
    /// `[gateway] spin_us` for the venue (`--gateway-spin-us`); own venue only.
    pub gateway_spin_us: Option<u64>,
    /// `[gateway] runtime_threads` for the venue (`--gateway-runtime-threads`); own venue only.
    pub gateway_runtime_threads: Option<usize>,
    /// `[gateway] standby_batch_us` for the venue (`--gateway-standby-batch-us`); own venue
    /// only.
    pub gateway_standby_batch_us: Option<u64>,
    /// Send the run's orders one at a time per session, the next when the answer arrives, to
    /// measure what a client measuring one request at a time sees (and compare with a peer the
    /// way such a client did).
    pub pingpong: bool,
    /// Orders per session answered but left out of the latency.
    pub warmup_orders: u64,
    /// SIGKILL the standby engine at these offsets and restart it empty, so it rejoins (by
    /// replaying the journal, or from the authoritative engine's snapshot) while the load runs;
    /// own venue only.
    pub rejoin_at: Vec<Duration>,
    /// SIGKILL the gateway at these offsets (its supervisor restarts it with the held sockets);
    /// own venue only.
    pub gateway_kill_at: Vec<Duration>,
    /// Planned gateway upgrades (`ctl upgrade-gateway` under a change naming the venue's build)
    /// at these offsets; own venue only.
    pub gateway_upgrade_at: Vec<Duration>,
}

/// How client threads are placed; printed with every report so numbers are read in context.
fn placement(config: &BenchConfig) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let client = if config.pingpong {
        "per session one writer thread (parks until the answer, then sends) and one reader thread \
         (blocking read)"
    } else if config.throughput {
        "per session one writer thread (parks until its reader has seen answers come back) and \
         one reader thread (blocking read)"
    } else {
        "one writer thread for every session (sleeps to the next send of one schedule merged over \
         all sessions) and one reader thread waiting on every socket with epoll"
    };
    format!("{cores} cores; no pinning; {client}; same threads for baton and echo")
}

/// The bench venue's engine: one instrument, room for a whole run of resting orders, and the
/// engine's default ClOrdID capacity unless the run sends more requests than half of it.
///
/// The ClOrdID table is sized by that capacity (16 bytes per id) and probed at a random slot per
/// request, so it sets how much memory every order touches: a fixed 16 million ids made it
/// 256 MiB, and on a virtual machine whose host takes back memory left idle, the first orders
/// after the echo's run waited on it (the probe was 27% of the engines' time in those 100 ms,
/// 3% after).
fn engine_section(config: &BenchConfig) -> String {
    let cl_ord_ids_max = cl_ord_ids_for(config.rate_per_s, config.duration);
    format!(
        "[engine]\norders_max = 4194304\ncl_ord_ids_max = {cl_ord_ids_max}\n\n\
         [[engine.instruments]]\nsymbol = \"AAPL\"\ntick_size = \"0.01\"\nlot_size = 1\n"
    )
}

/// The bench venue's ClOrdID capacity for a run of `rate_per_s` orders a second for `duration`:
/// the engine's default, or a power of two twice the run's requests (each order consumes one id;
/// the rest is room for hostile traffic and warm-up), within the engine's limit.
fn cl_ord_ids_for(rate_per_s: u64, duration: Duration) -> u64 {
    let requests =
        u64::try_from(u128::from(rate_per_s) * duration.as_millis() / 1_000).unwrap_or(u64::MAX);
    requests
        .saturating_mul(2)
        .max(u64::from(crate::constants::ENGINE_CL_ORD_IDS_MAX_DEFAULT))
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .min(u64::from(crate::constants::ENGINE_CL_ORD_IDS_MAX_LIMIT))
}

/// Runs the bench and reports what it measured.
pub fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    if config.external.is_some()
        && (config.switch_every.is_some()
            || !config.kill_at.is_empty()
            || !config.rejoin_at.is_empty()
            || !config.gateway_kill_at.is_empty()
            || !config.gateway_upgrade_at.is_empty()
            || config.canary
            || config.verified_canary
            || config.venue_program.is_some())
    {
        return Err(BenchError::Venue(
            "--switch-every, --kill-at, --rejoin-at, --gateway-kill-at, --gateway-upgrade-at, \
             --canary and --venue-program need the bench's own venue (no --target): the bench \
             can only switch and kill processes it started"
                .into(),
        ));
    }
    if config.pingpong && config.throughput {
        return Err(BenchError::Venue(
            "--pingpong keeps one order in flight, --throughput a window: pass one of them".into(),
        ));
    }
    // A peer is checked and built before anything runs: a run must not measure baton for
    // minutes and then fail on the peer.
    let peer_binary = match &config.peer {
        Some(spec) => {
            let mix = config.mix;
            if mix.cancel + mix.replace + mix.cross > 0 {
                return Err(BenchError::PeerMix("quickfix".into()));
            }
            Some(peer::locate(spec, &config.program)?)
        }
        None => None,
    };
    if config.verified_canary && !config.canary {
        return Err(BenchError::Venue(
            "--verified-canary compares with the default canary's run: pass --canary too".into(),
        ));
    }
    let mut venue = match &config.external {
        Some(_) => None,
        None => Some(Venue::start(&VenueConfig {
            program: config
                .venue_program
                .clone()
                .unwrap_or_else(|| config.program.clone()),
            dir: config.dir.clone(),
            // The hostile traffic's own session, after the measured ones.
            sessions: config.sessions
                + usize::from(config.hostile.is_some_and(|(kind, _)| kind.needs_session())),
            snapshot_formats: [crate::engine::SNAPSHOT_FORMAT_DEFAULT; 2],
            engine_section: engine_section(config),
            require_approval: false,
            // A planned gateway upgrade runs only under an approved change: the bench files it
            // as `ops` and approves it as `risk`, declared as sharing this account.
            control_extra: if config.gateway_upgrade_at.is_empty() {
                String::new()
            } else {
                super::venue::shared_account_operators()
            },
            link: config.link,
            spin_us: config.spin_us,
            gateway_spin_us: config.gateway_spin_us,
            gateway_runtime_threads: config.gateway_runtime_threads,
            gateway_standby_batch_us: config.gateway_standby_batch_us,
        })?),
    };
    let result = measure(config, venue.as_mut(), peer_binary.as_deref());
    if let Some(venue) = venue.as_mut() {
        venue.stop();
        // Stores and journals of a clean run are only bulk; a failed run keeps them to look at.
        if result.as_ref().is_ok_and(BenchReport::complete) {
            let _ = std::fs::remove_dir_all(&config.dir);
        }
    }
    result
}

fn measure(
    config: &BenchConfig,
    venue: Option<&mut Venue>,
    peer_binary: Option<&std::path::Path>,
) -> Result<BenchReport, BenchError> {
    let plan = Plan {
        sessions: config.sessions.max(1),
        rate_per_s: config.rate_per_s.max(1),
        duration: config.duration,
        mix: config.mix,
        drain: Duration::from_secs(10),
        unpaced: config.throughput,
        pingpong: config.pingpong,
        warmup_orders: config.warmup_orders,
    };
    let payload_bytes = load::order_size_bytes();

    // The baseline first, same plan and client machinery.
    let server = EchoServer::start()?;
    let progress = Arc::new(Progress::default());
    let bar = ProgressBar::new(config, "echo", &plan);
    let start = Instant::now() + Duration::from_millis(200);
    let echo_addr = server.addr;
    let baseline = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            load::run(
                &plan,
                start,
                &|n| echo::connect_echo(echo_addr, payload_bytes, n),
                &progress,
            )
        });
        bar.follow(&progress, &handle);
        handle.join().map_err(|_| LoadError::Panicked)?
    })?;
    bar.finish();

    let target = match (&config.external, &venue) {
        (Some(external), _) => FixTarget {
            addr: external.addr,
            sender_prefix: external.sender_prefix.clone(),
            target_comp_id: external.target_comp_id.clone(),
            symbol: "AAPL".into(),
        },
        (None, Some(venue)) => FixTarget {
            addr: venue.fix_addr,
            sender_prefix: "TRADER".into(),
            target_comp_id: "BATON".into(),
            symbol: "AAPL".into(),
        },
        (None, None) => return Err(BenchError::Venue("no venue".into())),
    };
    let hostile_target = HostileTarget {
        fix: target.addr,
        sender: format!("{}{}", target.sender_prefix, plan.sessions + 1),
        target_comp_id: target.target_comp_id.clone(),
        control: venue.as_ref().map(|venue| venue.control),
    };
    let prepared = match config.hostile {
        Some((kind, _)) => hostile::prepare(kind, &hostile_target)?,
        None => hostile::Prepared::default(),
    };
    if config.canary
        && let Some(venue) = venue.as_ref()
    {
        start_canary(venue)?;
    }
    let progress = Arc::new(Progress::default());
    let bar = ProgressBar::new(config, "baton", &plan);
    // Sessions log on before the schedule starts; give 50 sessions time to do so.
    let start = Instant::now() + Duration::from_millis(200 + 20 * plan.sessions as u64);
    let mut events = Vec::new();
    // Per-process CPU and sleeps over the measured run: the venue's processes and this one
    // (the load's client threads).
    let mut processes = venue
        .as_ref()
        .map_or_else(Vec::new, |venue| venue.processes());
    if !processes.is_empty() {
        processes.push(("bench client".to_owned(), std::process::id()));
    }
    let usage_before = usage::Snapshot::take(&processes);
    let baton = std::thread::scope(|scope| {
        let handle =
            scope.spawn(|| load::run(&plan, start, &|n| load::connect_fix(&target, n), &progress));
        let hostile = config.hostile.map(|(kind, at)| {
            let (target, bar) = (&hostile_target, &bar);
            scope.spawn(move || {
                let when = start + at;
                std::thread::sleep(when.saturating_duration_since(Instant::now()));
                let at_ms = Instant::now().saturating_duration_since(start).as_millis() as u64;
                let outcome = hostile::run(kind, target, prepared);
                bar.println(&format!(
                    "hostile {} at {at_ms} ms: {}",
                    kind.name(),
                    outcome.detail
                ));
                EventReport::new(
                    format!("hostile {}", kind.name()),
                    outcome.detail,
                    at_ms,
                    at_ms + outcome.lasted.as_millis() as u64,
                )
            })
        });
        if let Some(venue) = venue {
            events = drive_events(config, venue, start, &bar, &progress);
        }
        bar.follow(&progress, &handle);
        if let Some(event) = hostile.and_then(|h| h.join().ok()) {
            events.push(event);
        }
        handle.join().map_err(|_| LoadError::Panicked)?
    })?;
    bar.finish();

    let steady_p99_us = report::score_events(&mut events, &baton.samples, &baton.incidents);
    let usage_after = usage::Snapshot::take(&processes);
    let baton_m = Measurement::of(&baton);
    let process_usage = usage_after.since(&usage_before, baton_m.answered);
    let baseline_m = Measurement::of(&baseline);
    let peer = match peer_binary {
        Some(binary) => Some(measure_peer(config, &plan, binary, &baton_m)?),
        None => None,
    };
    let verified_canary = if config.verified_canary {
        Some(measure_verified_canary(config, &plan, &baton_m)?)
    } else {
        None
    };
    Ok(BenchReport {
        target: match &config.external {
            Some(external) => external.addr.to_string(),
            None if config.canary => "own venue: gateway + engines blue and green (child \
                                      processes); canary: every symbol on green, gates watching"
                .into(),
            None => "own venue: gateway + engines blue and green (child processes)".into(),
        },
        sessions: plan.sessions,
        rate_per_s: plan.rate_per_s,
        duration_s: plan.duration.as_secs_f64(),
        throughput: plan.unpaced,
        pingpong: plan.pingpong,
        warmup_orders: plan.warmup_orders,
        mix: format!(
            "new={},cancel={},replace={},cross={}",
            plan.mix.new, plan.mix.cancel, plan.mix.replace, plan.mix.cross
        ),
        payload_bytes,
        placement: placement(config),
        ratios: baton_m.latency.ratio_to(&baseline_m.latency),
        baton: baton_m,
        baseline: baseline_m,
        steady_p99_us,
        events,
        series: report::series(&baton.samples),
        baseline_series: report::series(&baseline.samples),
        peer,
        verified_canary,
        link: match config.external {
            Some(_) => String::new(),
            None => config.link.name().to_owned(),
        },
        processes: process_usage,
    })
}

/// Gives every symbol to green under a canary, gates watching.
fn start_canary(venue: &Venue) -> Result<(), BenchError> {
    let canary = ControlRequest::Canary {
        operator: Some("bench".into()),
        change: None,
        percent: Some(100),
        symbols: Vec::new(),
    };
    match client::request(venue.control, &canary, Duration::from_secs(30)) {
        Ok(ControlReply::Switched(_)) => Ok(()),
        Ok(other) => Err(BenchError::Venue(format!("canary refused: {other:?}"))),
        Err(error) => Err(BenchError::Venue(format!("canary: {error}"))),
    }
}

/// Runs the same plan on a fresh venue whose canary delivers verified, after the immediate
/// canary's run so the two never share the machine; `immediate` is that run's measurement.
fn measure_verified_canary(
    config: &BenchConfig,
    plan: &Plan,
    immediate: &Measurement,
) -> Result<DeliveryComparison, BenchError> {
    let mut venue = Venue::start(&VenueConfig {
        program: config
            .venue_program
            .clone()
            .unwrap_or_else(|| config.program.clone()),
        dir: config.dir.join("verified"),
        sessions: plan.sessions,
        snapshot_formats: [crate::engine::SNAPSHOT_FORMAT_DEFAULT; 2],
        engine_section: engine_section(config),
        require_approval: false,
        control_extra: "canary_delivery = \"verified\"".into(),
        link: config.link,
        spin_us: config.spin_us,
        gateway_spin_us: config.gateway_spin_us,
        gateway_runtime_threads: config.gateway_runtime_threads,
        gateway_standby_batch_us: config.gateway_standby_batch_us,
    })?;
    let result = (|| {
        start_canary(&venue)?;
        let target = FixTarget {
            addr: venue.fix_addr,
            sender_prefix: "TRADER".into(),
            target_comp_id: "BATON".into(),
            symbol: "AAPL".into(),
        };
        let progress = Arc::new(Progress::default());
        let bar = ProgressBar::new(config, "verified", plan);
        let start = Instant::now() + Duration::from_millis(200 + 20 * plan.sessions as u64);
        let result = std::thread::scope(|scope| {
            let handle = scope
                .spawn(|| load::run(plan, start, &|n| load::connect_fix(&target, n), &progress));
            bar.follow(&progress, &handle);
            handle.join().map_err(|_| LoadError::Panicked)?
        })?;
        bar.finish();
        Ok::<_, BenchError>(result)
    })();
    venue.stop();
    let result = result?;
    let measurement = Measurement::of(&result);
    Ok(DeliveryComparison {
        detail: "the same load on a fresh venue, canary delivery verified: each answer waits \
                 for both engines' and goes out once they match"
            .into(),
        ratios: measurement.latency.ratio_to(&immediate.latency),
        measurement,
    })
}

/// Runs the same plan against the QuickFIX peer (its sessions named like the venue's), after
/// baton and the echo so neither shares the machine with it.
fn measure_peer(
    config: &BenchConfig,
    plan: &Plan,
    binary: &std::path::Path,
    baton: &Measurement,
) -> Result<PeerReport, BenchError> {
    let process = PeerProcess::start(binary, plan.sessions, &config.dir.join("quickfix"))?;
    let target = FixTarget {
        addr: process.addr,
        sender_prefix: "TRADER".into(),
        target_comp_id: "BATON".into(),
        symbol: "AAPL".into(),
    };
    let progress = Arc::new(Progress::default());
    let bar = ProgressBar::new(config, "qfix", plan);
    let start = Instant::now() + Duration::from_millis(200 + 20 * plan.sessions as u64);
    let result = std::thread::scope(|scope| {
        let handle =
            scope.spawn(|| load::run(plan, start, &|n| load::connect_fix(&target, n), &progress));
        bar.follow(&progress, &handle);
        handle.join().map_err(|_| LoadError::Panicked)?
    })?;
    bar.finish();
    drop(process);
    let measurement = Measurement::of(&result);
    Ok(PeerReport {
        name: "quickfix".into(),
        detail: format!(
            "QuickFIX C++ {} acceptor (SocketAcceptor, one thread for all sessions), FileStore, \
             {}, answering each NewOrderSingle with ExecutionReport New in its own process",
            quickfix_version(),
            if peer::dictionary().is_some() {
                "validating with the venue's FIX44.xml"
            } else {
                "no data dictionary"
            }
        ),
        mix: format!("new={},cancel=0,replace=0,cross=0", plan.mix.new),
        ratios: baton.latency.ratio_to(&measurement.latency),
        measurement,
        series: report::series(&result.samples),
    })
}

/// The installed QuickFIX package's version (its pkg-config file lags behind the library, so
/// the package manager is asked), or "" when it cannot tell.
fn quickfix_version() -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "libquickfix-dev"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// An event the bench triggers while the load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Planned {
    /// SIGKILL the authoritative engine (failover), restart it as standby.
    Kill,
    /// A planned switch or, every other time, a rollback.
    Switch,
    /// SIGKILL the standby, restart it empty so it rejoins (journal replay or snapshot).
    Rejoin,
    /// SIGKILL the gateway; its supervisor restarts it with the held sockets.
    GatewayKill,
    /// A planned gateway upgrade under a change.
    GatewayUpgrade,
}

/// Carries out the planned events while the load runs; returns what happened.
fn drive_events(
    config: &BenchConfig,
    venue: &mut Venue,
    start: Instant,
    bar: &ProgressBar,
    progress: &Progress,
) -> Vec<EventReport> {
    let mut planned: Vec<(Duration, Planned)> = Vec::new();
    for (times, kind) in [
        (&config.kill_at, Planned::Kill),
        (&config.rejoin_at, Planned::Rejoin),
        (&config.gateway_kill_at, Planned::GatewayKill),
        (&config.gateway_upgrade_at, Planned::GatewayUpgrade),
    ] {
        planned.extend(times.iter().map(|&at| (at, kind)));
    }
    if let Some(every) = config.switch_every.filter(|d| !d.is_zero()) {
        let mut at = every;
        while at < config.duration {
            planned.push((at, Planned::Switch));
            at += every;
        }
    }
    planned.sort();
    let mut events = Vec::new();
    let mut switches = 0;
    let mut change: Option<String> = None;
    for (at, kind) in planned {
        if at >= config.duration {
            continue;
        }
        let when = start + at;
        let now = Instant::now();
        if when > now {
            // Keep the bar moving while waiting for the event.
            while Instant::now() < when {
                bar.update(progress);
                std::thread::sleep(Duration::from_millis(50).min(when - Instant::now()));
            }
        }
        let began = Instant::now();
        let at_ms = began.saturating_duration_since(start).as_millis() as u64;
        let (kind, detail) = match kind {
            Planned::Kill => {
                let detail = match venue.kill_authoritative() {
                    Ok(name) => format!("SIGKILL {name}; restarted, back as standby"),
                    Err(error) => format!("kill failed: {error}"),
                };
                ("kill", detail)
            }
            Planned::Switch => {
                let (request, kind) = if switches % 2 == 0 {
                    (ControlRequest::switch("bench"), "switch")
                } else {
                    (ControlRequest::rollback("bench"), "rollback")
                };
                switches += 1;
                let detail = match client::request(venue.control, &request, Duration::from_secs(30))
                {
                    Ok(ControlReply::Switched(s)) => format!(
                        "{} -> {} at input {}, pause {} µs",
                        s.from, s.to, s.barrier_seq, s.pause_us
                    ),
                    Ok(ControlReply::Refused { reason }) => format!("refused: {reason}"),
                    Ok(other) => format!("unexpected reply: {other:?}"),
                    Err(error) => format!("failed: {error}"),
                };
                (kind, detail)
            }
            Planned::Rejoin => {
                let detail = match venue.rejoin_standby() {
                    Ok(name) => format!(
                        "SIGKILL {name} (standby); restarted empty, rejoined (from the journal \
                         or a snapshot, as the gateway chose) and caught up in {} ms",
                        began.elapsed().as_millis()
                    ),
                    Err(error) => format!("rejoin failed: {error}"),
                };
                ("rejoin", detail)
            }
            Planned::GatewayKill => ("gw-kill", gateway_kill(venue, config.sessions)),
            Planned::GatewayUpgrade => {
                let detail = match gateway_change(config, venue, &mut change)
                    .and_then(|change| Ok(venue.upgrade_gateway(&change)?))
                {
                    Ok(upgrade) => format!(
                        "planned upgrade under {}: {} sessions handed over, pause {} µs",
                        upgrade.change, upgrade.sessions, upgrade.pause_us
                    ),
                    Err(error) => format!("upgrade failed: {error}"),
                };
                ("gw-upgrade", detail)
            }
        };
        let until_ms = Instant::now().saturating_duration_since(start).as_millis() as u64;
        bar.println(&format!("{kind} at {at_ms} ms: {detail}"));
        // A switch is an instant; an event the bench waits out (a restart, a rejoin, a
        // hand-over) lasts until the venue serves as before.
        let until_ms = if kind == "switch" || kind == "rollback" {
            at_ms
        } else {
            until_ms
        };
        events.push(EventReport::new(kind.into(), detail, at_ms, until_ms));
    }
    events
}

/// SIGKILLs the gateway and waits until its successor serves: control answering and every
/// session logged on again (on the connections the supervisor held). Returns what happened.
fn gateway_kill(venue: &Venue, sessions: usize) -> String {
    let began = Instant::now();
    let pid = match venue.kill_gateway() {
        Ok(pid) => pid,
        Err(error) => return format!("kill failed: {error}"),
    };
    let deadline = began + Duration::from_secs(crate::constants::BENCH_GATEWAY_BACK_WAIT_S);
    loop {
        // The dead gateway's control endpoint may answer for an instant after the signal:
        // only a status from another process counts.
        let back = venue
            .status()
            .ok()
            .filter(|_| venue.gateway_pid().is_some_and(|now| now != pid));
        if let Some(status) = back {
            let logged_on = status.sessions.iter().filter(|s| s.logged_on).count();
            if logged_on >= sessions {
                return format!(
                    "SIGKILL gateway {pid}; its successor served {logged_on} sessions on the held \
                     connections {} ms later",
                    began.elapsed().as_millis()
                );
            }
        }
        if Instant::now() > deadline {
            return format!(
                "SIGKILL gateway {pid}; not serving every session after {} s",
                crate::constants::BENCH_GATEWAY_BACK_WAIT_S
            );
        }
        std::thread::sleep(Duration::from_millis(
            crate::constants::BENCH_STATUS_POLL_MS,
        ));
    }
}

/// The change a planned gateway upgrade runs under, filed (as `ops`) and approved (as `risk`)
/// on first use: it names the venue's own build (hash checked by `baton launch`), window from
/// now to [`crate::constants::BENCH_CHANGE_WINDOW_MS`] later.
fn gateway_change(
    config: &BenchConfig,
    venue: &Venue,
    change: &mut Option<String>,
) -> Result<String, BenchError> {
    if let Some(id) = change {
        return Ok(id.clone());
    }
    let program = config.venue_program.as_ref().unwrap_or(&config.program);
    let program = std::fs::canonicalize(program)
        .map_err(|e| BenchError::Venue(format!("locating the build: {e}")))?;
    let sha256 = crate::control::artifact::sha256_file(&program)
        .map_err(|e| BenchError::Venue(format!("hashing the build: {e}")))?;
    let now = crate::fix::time::Timestamp::now();
    let filing = ControlRequest::ChangeFile {
        operator: Some("ops".into()),
        artifact_path: program.display().to_string(),
        artifact_sha256: sha256,
        reason: "bench: planned gateway upgrade under load".into(),
        window_start: crate::control::change::rfc3339(now),
        window_end: crate::control::change::rfc3339(
            now.plus_millis(crate::constants::BENCH_CHANGE_WINDOW_MS),
        ),
        expected_divergence: Default::default(),
    };
    let id = match venue.request(&filing, Duration::from_secs(30))? {
        ControlReply::Change(summary) => summary.id,
        other => return Err(BenchError::Venue(format!("filing the change: {other:?}"))),
    };
    let approval = ControlRequest::ChangeApprove {
        operator: Some("risk".into()),
        change: id.clone(),
    };
    match venue.request(&approval, Duration::from_secs(30))? {
        ControlReply::Change(_) => {
            *change = Some(id.clone());
            Ok(id)
        }
        other => Err(BenchError::Venue(format!(
            "approving the change: {other:?}"
        ))),
    }
}

/// A progress bar on stderr, or nothing.
struct ProgressBar(Option<indicatif::ProgressBar>);

impl ProgressBar {
    fn new(config: &BenchConfig, name: &str, plan: &Plan) -> ProgressBar {
        if !config.progress_bar {
            return ProgressBar(None);
        }
        let total = plan.rate_per_s * plan.duration.as_millis() as u64 / 1_000;
        let bar = indicatif::ProgressBar::new(total.max(1));
        if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
            "{name:<6} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} answered {{msg}}"
        )) {
            bar.set_style(style);
        }
        ProgressBar(Some(bar))
    }

    fn update(&self, progress: &Progress) {
        if let Some(bar) = &self.0 {
            bar.set_position(progress.answered.load(std::sync::atomic::Ordering::Relaxed));
            bar.set_message(format!(
                "(sent {})",
                progress.sent.load(std::sync::atomic::Ordering::Relaxed)
            ));
        }
    }

    fn follow<T>(&self, progress: &Progress, handle: &std::thread::ScopedJoinHandle<'_, T>) {
        while !handle.is_finished() {
            self.update(progress);
            std::thread::sleep(Duration::from_millis(100));
        }
        self.update(progress);
    }

    fn println(&self, line: &str) {
        match &self.0 {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venue_has_the_default_ids_unless_the_run_needs_more() {
        let default = u64::from(crate::constants::ENGINE_CL_ORD_IDS_MAX_DEFAULT);
        // 50 sessions at 20 000 orders/s for 10 s: 200 000 requests.
        assert_eq!(cl_ord_ids_for(20_000, Duration::from_secs(10)), default);
        // 3 million requests: twice that, to the next power of two.
        assert_eq!(cl_ord_ids_for(100_000, Duration::from_secs(30)), 8 << 20);
        assert_eq!(
            cl_ord_ids_for(u64::MAX, Duration::from_secs(3600)),
            u64::from(crate::constants::ENGINE_CL_ORD_IDS_MAX_LIMIT)
        );
    }
}
