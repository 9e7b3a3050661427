//! A whole venue under load while its engine is upgraded and crashes: the driver behind
//! `baton demo` and the soak test.
//!
//! It starts two engines (blue on the current snapshot format, green as the "new build") and a
//! gateway as real processes in a scratch directory, connects simulated counterparties that trade
//! continuously, and meanwhile runs a release the way an operator would: a change naming the
//! build is filed and approved by a second operator, a canary moves a quarter of the symbols to
//! the standby and back, authority switches back and forth under that change, and the
//! authoritative engine is SIGKILLed (and restarted, so it rejoins as the standby). At the end it
//! checks what the counterparties saw — no Logout, no disconnect, no sequence gap, exactly one
//! acknowledgement per order, no ExecID twice — that both engines' books equal a single engine's
//! replay of the journal, and that the audit log's chain verifies.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::initiator::{Initiator, InitiatorConfig, InitiatorError};
use super::venue::{Venue, VenueConfig, VenueError, io};
use crate::control::api::{ControlReply, ControlRequest, SwitchReport, SwitchScope};
use crate::control::change::{ChangeSummary, rfc3339, scope_text};
use crate::engine::{Engine, EngineConfig, MatchingEngine};
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
    /// Fills received.
    pub fills: u64,
    /// Inbound sequence gaps seen by counterparties.
    pub gaps: u64,
    /// Every switch and failover, with its pause.
    pub switches: Vec<SwitchReport>,
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

impl DemoReport {
    /// Whether the run shows what baton promises.
    pub fn ok(&self) -> bool {
        self.sessions_kept == self.sessions
            && self.lost == 0
            && self.duplicated == 0
            && self.gaps == 0
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
        out.push_str(&format!("fills           {}\n", self.fills));
        out.push_str(&format!("lost            {}\n", self.lost));
        out.push_str(&format!("duplicated      {}\n", self.duplicated));
        out.push_str(&format!("sequence gaps   {}\n", self.gaps));
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
                "{kind:<15} {} -> {} at input {} ({}), pause {} us\n",
                switch.from,
                switch.to,
                switch.barrier_seq,
                scope_text(&switch.scope),
                switch.pause_us
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
}

/// Runs the demo and reports what happened.
pub fn run(config: &DemoConfig, progress: &dyn Fn(&str)) -> Result<DemoReport, DemoError> {
    let mut venue = Venue::start(&VenueConfig {
        program: config.program.clone(),
        dir: config.dir.clone(),
        sessions: config.sessions,
        // Blue writes the older snapshot format, green the newer: two builds.
        snapshot_formats: [1, 2],
        engine_section: String::new(),
        // The demo goes through the release process: a change, a second operator's approval.
        require_approval: true,
    })?;
    let authoritative = venue.authoritative()?;
    progress(&format!(
        "venue up: gateway {}, engine {authoritative} authoritative (the first to attach), the other standby",
        venue.fix_addr
    ));
    let result = file_change(config, &venue, progress)
        .and_then(|change| trade_through_events(config, &mut venue, &change, progress));

    // Stop the gateway (SIGTERM: sessions are logged out), then read the engines' digests.
    venue.stop_gateway();
    let report = result.and_then(|mut report| {
        report.replay_digest = replay_journal(&config.dir.join("journal"))?;
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

fn trade_through_events(
    config: &DemoConfig,
    venue: &mut Venue,
    change: &str,
    progress: &dyn Fn(&str),
) -> Result<DemoReport, DemoError> {
    let fix_addr = venue.fix_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let orders = Arc::new(AtomicU64::new(0));
    let traders: Vec<_> = (1..=config.sessions)
        .map(|n| {
            let stop = stop.clone();
            let orders = orders.clone();
            let rate = config.orders_per_session_per_s.max(1);
            std::thread::spawn(move || trader(n, fix_addr, rate, &stop, &orders))
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
            match venue.request(&request, Duration::from_secs(30))? {
                ControlReply::Switched(switch) => {
                    progress(&format!(
                        "canary {} {}: {} -> {} at input {} ({}), pause {} us",
                        i + 1,
                        if step == 0 { "start" } else { "rollback" },
                        switch.from,
                        switch.to,
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
        match venue.request(&request, Duration::from_secs(30)) {
            Ok(ControlReply::Switched(switch)) => {
                progress(&format!(
                    "switch {}: {} -> {} at input {}, pause {} us ({} orders so far)",
                    i + 1,
                    switch.from,
                    switch.to,
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
    for i in 0..config.kills {
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
                switch.from, switch.to
            ));
            report.switches.push(switch);
        }
        std::thread::sleep(config.event_gap);
    }
    stop.store(true, Ordering::Relaxed);
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
    for tally in tallies {
        report.orders += tally.sent.len() as u64;
        for id in &tally.sent {
            match tally.acks.get(id).copied().unwrap_or(0) {
                0 => report.lost += 1,
                1 => report.acknowledged += 1,
                _ => report.duplicated += 1,
            }
        }
        report.duplicated += tally.duplicate_exec_ids;
        report.fills += tally.fills;
        report.gaps += tally.gaps;
        if !tally.dropped {
            report.sessions_kept += 1;
        }
    }
    Ok(report)
}

/// The symbols the demo's counterparties trade: the default instruments.
const TRADED_SYMBOLS: [&str; 4] = ["AAPL", "MSFT", "ESZ6", "EURUSD"];

/// One counterparty: sends crossing orders at `rate` per second until told to stop, then waits
/// for every acknowledgement and logs out.
fn trader(n: usize, addr: SocketAddr, rate: u64, stop: &AtomicBool, orders: &AtomicU64) -> Tally {
    let mut tally = Tally::default();
    let mut client =
        match Initiator::connect(addr, InitiatorConfig::new(&format!("TRADER{n}"), "BATON")) {
            Ok(client) => client,
            Err(_) => {
                tally.dropped = true;
                return tally;
            }
        };
    if !matches!(client.logon(true, Duration::from_secs(10)), Ok(m) if m.msg_type() == b"A") {
        tally.dropped = true;
        return tally;
    }
    let interval = Duration::from_micros(1_000_000 / rate);
    // Counterparties spread over the default instruments (prices and quantity valid for all), so
    // a canary of some symbols carries real flow.
    let symbol = TRADED_SYMBOLS[n % TRADED_SYMBOLS.len()];
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
            let price = if side == b'1' { "100.25" } else { "100" };
            let sent = client.send(b"D", |e| {
                e.str(11, &id)
                    .str(55, symbol)
                    .char(54, side)
                    .str(60, "20261123-12:00:00")
                    .uint(38, 1000)
                    .char(40, b'2')
                    .str(44, price);
            });
            if sent.is_err() {
                tally.dropped = true;
                break;
            }
            tally.sent.push(id);
            orders.fetch_add(1, Ordering::Relaxed);
            i += 1;
            next += interval;
        }
        if !drain(&mut client, &mut tally, Duration::from_millis(1)) {
            break;
        }
    }
    // Wait for the last answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tally.acks.len() < tally.sent.len() && Instant::now() < deadline && !tally.dropped {
        if !drain(&mut client, &mut tally, Duration::from_millis(50)) {
            break;
        }
    }
    drain(&mut client, &mut tally, Duration::from_millis(200));
    tally.gaps += client.gaps();
    if !tally.dropped {
        let _ = client.logout(Duration::from_secs(5));
    }
    tally
}

/// Reads what arrived; false when the connection is gone.
fn drain(client: &mut Initiator, tally: &mut Tally, wait: Duration) -> bool {
    let mut wait = wait;
    loop {
        match client.recv(wait) {
            Ok(Some(message)) => {
                wait = Duration::ZERO;
                match message.msg_type() {
                    b"8" => {
                        let exec_id = String::from_utf8_lossy(message.get(17).unwrap_or_default())
                            .into_owned();
                        if !tally.exec_ids.insert(exec_id) {
                            tally.duplicate_exec_ids += 1;
                        }
                        match message.get(150) {
                            Some(b"0") | Some(b"8") => {
                                let id =
                                    String::from_utf8_lossy(message.get(11).unwrap_or_default())
                                        .into_owned();
                                *tally.acks.entry(id).or_default() += 1;
                            }
                            Some(b"F") => tally.fills += 1,
                            _ => {}
                        }
                    }
                    b"5" => {
                        tally.dropped = true;
                        return false;
                    }
                    // The gateway asks for a resend only when it saw a gap in what we sent.
                    b"2" => tally.gaps += 1,
                    _ => {}
                }
            }
            Ok(None) => return true,
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

/// A fresh engine fed the whole journal: the state every engine must be in.
fn replay_journal(dir: &Path) -> Result<String, DemoError> {
    let mut engine = MatchingEngine::new(&EngineConfig::default())
        .map_err(|e| DemoError::Venue(e.to_string()))?;
    crate::gateway::core::replay_journal(dir, &mut engine)
        .map_err(|e| DemoError::Venue(e.to_string()))?;
    Ok(engine.digest().to_string())
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
