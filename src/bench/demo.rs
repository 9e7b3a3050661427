//! A whole venue under load while its engine is upgraded and crashes: the driver behind
//! `baton demo` and the soak test.
//!
//! It starts two engines (blue on the current snapshot format, green as the "new build") and a
//! gateway as real processes in a scratch directory, connects simulated counterparties that trade
//! continuously, and meanwhile switches authority back and forth with `baton ctl`-style commands
//! and SIGKILLs the authoritative engine (restarting it, so it rejoins as the standby). At the end
//! it checks what the counterparties saw — no Logout, no disconnect, no sequence gap, exactly one
//! acknowledgement per order, no ExecID twice — and that both engines' books equal a single
//! engine's replay of the journal.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::initiator::{Initiator, InitiatorConfig, InitiatorError};
use crate::control::api::{ControlReply, ControlRequest, EngineRole, Status, SwitchReport};
use crate::control::client;
use crate::engine::{Engine, EngineConfig, Input, MatchingEngine, Output};
use crate::gateway::journal::Journal;
use crate::link::{self, Frame, LinkAddr};

/// Why the demo could not run (as opposed to finding a problem, which the report shows).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A process or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The venue did not come up or answer as expected.
    #[error("{0}")]
    Venue(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
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
        for switch in &self.switches {
            out.push_str(&format!(
                "{:<15} {} -> {} at input {}, pause {} us\n",
                if switch.planned { "switch" } else { "failover" },
                switch.from,
                switch.to,
                switch.barrier_seq,
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

/// One engine process the demo runs.
struct EngineChild {
    /// "blue" or "green".
    name: String,
    /// Snapshot format its build writes.
    snapshot_format: u16,
    /// Its link address.
    addr: String,
    /// The process, while it runs.
    child: Option<Child>,
}

impl EngineChild {
    fn start(&mut self, program: &Path, config: &Path) -> Result<(), DemoError> {
        let child = Command::new(program)
            .args(["engine", "--config"])
            .arg(config)
            .args(["--name", &self.name, "--listen", &self.addr])
            .args(["--snapshot-format", &self.snapshot_format.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(io(format!("starting engine {}", self.name)))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

fn free_port() -> Result<u16, DemoError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

/// Runs the demo and reports what happened.
pub fn run(config: &DemoConfig, progress: &dyn Fn(&str)) -> Result<DemoReport, DemoError> {
    std::fs::create_dir_all(&config.dir).map_err(io("creating the demo directory"))?;
    let control: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let sock = |name: &str| {
        format!(
            "unix://{}",
            config.dir.join(format!("{name}.sock")).display()
        )
    };
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"{}\"\njournal_dir = \"{}\"\nengines = [\"{}\", \"{}\"]\ncontrol = \"{}\"\nfailover_timeout_ms = 1000\n\n[defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n",
        config.dir.join("store").display(),
        config.dir.join("journal").display(),
        sock("blue"),
        sock("green"),
        control,
    );
    for n in 1..=config.sessions {
        text.push_str(&format!("\n[[session]]\nTargetCompID = \"TRADER{n}\"\n"));
    }
    let config_path = config.dir.join("baton.toml");
    std::fs::write(&config_path, text).map_err(io("writing the demo config"))?;

    let mut engines = vec![
        EngineChild {
            name: "blue".into(),
            snapshot_format: 1,
            addr: sock("blue"),
            child: None,
        },
        EngineChild {
            name: "green".into(),
            snapshot_format: 2,
            addr: sock("green"),
            child: None,
        },
    ];
    engines[0].start(&config.program, &config_path)?;
    wait_for_path(&config.dir.join("blue.sock"))?;
    engines[1].start(&config.program, &config_path)?;
    wait_for_path(&config.dir.join("green.sock"))?;
    let mut gateway = Command::new(&config.program)
        .args(["gateway", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io("starting the gateway"))?;
    let mut line = String::new();
    let stdout = gateway
        .stdout
        .take()
        .ok_or_else(|| DemoError::Venue("no gateway stdout".into()))?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(io("reading the gateway address"))?;
    let fix_addr: SocketAddr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| DemoError::Venue(format!("gateway did not print its address: {line:?}")))?;
    // Trade only once both engines are attached, so no order meets "application not available".
    let deadline = Instant::now() + Duration::from_secs(10);
    let authoritative = loop {
        let attached = client::request(control, &ControlRequest::Status, Duration::from_secs(5))
            .ok()
            .and_then(|reply| match reply {
                ControlReply::Status(status) => Some(status),
                _ => None,
            })
            .filter(|status| status.engines.iter().all(|e| e.role != EngineRole::Down))
            .and_then(|status| {
                status
                    .engines
                    .into_iter()
                    .find(|e| e.role == EngineRole::Authoritative)
            });
        if let Some(engine) = attached {
            break engine.name;
        }
        if Instant::now() > deadline {
            return Err(DemoError::Venue("the engines did not attach".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    progress(&format!(
        "venue up: gateway {fix_addr}, engine {authoritative} authoritative (the first to attach), the other standby"
    ));

    let result = trade_through_events(
        config,
        control,
        fix_addr,
        &config_path,
        &mut engines,
        progress,
    );

    // Stop the gateway (SIGTERM: sessions are logged out), then read the engines' digests.
    terminate(&mut gateway);
    let mut report = result?;
    let replay_digest = replay_journal(&config.dir.join("journal"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting a runtime"))?;
    for engine in &engines {
        if engine.child.is_none() {
            continue;
        }
        let addr: LinkAddr = engine
            .addr
            .parse()
            .map_err(|e| DemoError::Venue(format!("{e}")))?;
        let digest = runtime.block_on(engine_digest(&addr))?;
        report.digests.push((engine.name.clone(), digest));
    }
    for engine in &mut engines {
        engine.kill();
    }
    report.books_match_replay =
        !report.digests.is_empty() && report.digests.iter().all(|(_, d)| *d == replay_digest);
    report.replay_digest = replay_digest;
    Ok(report)
}

fn trade_through_events(
    config: &DemoConfig,
    control: SocketAddr,
    fix_addr: SocketAddr,
    config_path: &Path,
    engines: &mut [EngineChild],
    progress: &dyn Fn(&str),
) -> Result<DemoReport, DemoError> {
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
    for i in 0..config.switches {
        let request = if i % 2 == 0 {
            ControlRequest::Switch
        } else {
            ControlRequest::Rollback
        };
        match client::request(control, &request, Duration::from_secs(30)) {
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
        let now = status(control)?;
        let Some(authoritative) = now
            .engines
            .iter()
            .find(|e| e.role == EngineRole::Authoritative)
        else {
            return Err(DemoError::Venue("no authoritative engine to kill".into()));
        };
        let name = authoritative.name.clone();
        let Some(engine) = engines.iter_mut().find(|e| e.name == name) else {
            return Err(DemoError::Venue(format!("unknown engine {name}")));
        };
        engine.kill();
        progress(&format!(
            "kill {}: SIGKILL engine {name} ({} orders so far)",
            i + 1,
            orders.load(Ordering::Relaxed)
        ));
        std::thread::sleep(Duration::from_millis(300));
        engine.start(&config.program, config_path)?;
        // Wait until it rejoins as a caught-up standby before the next event.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = status(control)?;
            let rejoined = now
                .engines
                .iter()
                .any(|e| e.name == name && e.role == EngineRole::Standby && e.lag_inputs < 1_000);
            if rejoined {
                if let Some(switch) = now.last_switch.filter(|s| !s.planned) {
                    progress(&format!(
                        "failover: {} -> {}, {name} back as standby",
                        switch.from, switch.to
                    ));
                    report.switches.push(switch);
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(DemoError::Venue(format!(
                    "engine {name} did not rejoin as standby"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(config.event_gap);
    }
    stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    let shadow = status(control)?.shadow;
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

fn status(control: SocketAddr) -> Result<Status, DemoError> {
    match client::request(control, &ControlRequest::Status, Duration::from_secs(10)) {
        Ok(ControlReply::Status(status)) => Ok(status),
        Ok(other) => Err(DemoError::Venue(format!("status: {other:?}"))),
        Err(error) => Err(DemoError::Venue(format!("status: {error}"))),
    }
}

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
            let price = if side == b'1' { "100.01" } else { "100" };
            let sent = client.send(b"D", |e| {
                e.str(11, &id)
                    .str(55, "AAPL")
                    .char(54, side)
                    .str(60, "20261123-12:00:00")
                    .uint(38, 10)
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

fn wait_for_path(path: &Path) -> Result<(), DemoError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(DemoError::Venue(format!(
                "{} never appeared",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn terminate(child: &mut Child) {
    // SAFETY: kill(2) has no memory-safety preconditions; the child is not yet reaped, so the pid
    // is still ours.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A fresh engine fed the whole journal: the state every engine must be in.
fn replay_journal(dir: &Path) -> Result<String, DemoError> {
    let mut engine = MatchingEngine::new(&EngineConfig::default())
        .map_err(|e| DemoError::Venue(e.to_string()))?;
    let mut reader = Journal::read_from(dir, 1).map_err(|e| DemoError::Venue(e.to_string()))?;
    let mut outputs: Vec<Output> = Vec::new();
    while let Some(entry) = reader.next().map_err(|e| DemoError::Venue(e.to_string()))? {
        let (input, _): (Input, usize) =
            bincode::serde::decode_from_slice(&entry.payload, bincode::config::standard())
                .map_err(|e| DemoError::Venue(e.to_string()))?;
        outputs.clear();
        engine.apply(&input, &mut outputs);
    }
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
