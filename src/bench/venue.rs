//! A venue of real processes for `baton demo` and `baton bench`: two engines (blue, green) and a
//! gateway started from the `baton` binary in a scratch directory, with what both need to drive
//! it — status, waiting for a caught-up standby, SIGKILL and restart of the authoritative engine,
//! and a clean stop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::constants;
use crate::control::api::{ControlReply, ControlRequest, EngineRole, GatewayUpgrade, Status};
use crate::control::client;

/// Why the venue could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum VenueError {
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

/// Wraps an I/O error with what was being done, for `map_err`.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VenueError {
    let what = what.into();
    move |source| VenueError::Io { what, source }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct VenueConfig {
    /// The `baton` binary.
    pub program: PathBuf,
    /// Scratch directory (emptied first) for config, stores, journal and sockets.
    pub dir: PathBuf,
    /// Counterparty sessions: TargetCompIDs `TRADER1..=TRADERn`.
    pub sessions: usize,
    /// Snapshot format each engine writes (blue, green): different values make them two builds.
    pub snapshot_formats: [u16; 2],
    /// TOML for the `[engine]` section (with its instruments), or empty for the defaults.
    pub engine_section: String,
    /// Keep the default policy (switches and canaries need an approved change); otherwise the
    /// venue lets them run bare, as the bench's repeated switches need.
    pub require_approval: bool,
    /// More `[control]` keys (e.g. `canary_delivery = "verified"`), or empty.
    pub control_extra: String,
    /// How the engine links carry frames (`baton bench --link`).
    pub link: LinkChoice,
    /// `[link] spin_us` for gateway and engines, or the default (`baton bench --spin-us`).
    pub spin_us: Option<u64>,
    /// `[gateway] spin_us`, or the default (`baton bench --gateway-spin-us`).
    pub gateway_spin_us: Option<u64>,
    /// `[gateway] runtime_threads`, or the default (`baton bench --gateway-runtime-threads`).
    pub gateway_runtime_threads: Option<usize>,
    /// `[gateway] standby_batch_us`, or the default (`baton bench --gateway-standby-batch-us`).
    pub gateway_standby_batch_us: Option<u64>,
}

/// The transport of the venue's engine links, for comparing them under the same load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkChoice {
    /// `unix://` sockets (what `baton up` uses by default).
    #[default]
    Unix,
    /// `unix://` addresses with `[link] transport = "shm"`: shared-memory rings.
    Shm,
    /// `tcp://` on loopback.
    Tcp,
}

impl LinkChoice {
    /// The name `--link` takes.
    pub fn name(self) -> &'static str {
        match self {
            LinkChoice::Unix => "unix",
            LinkChoice::Shm => "shm",
            LinkChoice::Tcp => "tcp",
        }
    }
}

impl std::str::FromStr for LinkChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<LinkChoice, String> {
        match text {
            "unix" => Ok(LinkChoice::Unix),
            "shm" => Ok(LinkChoice::Shm),
            "tcp" => Ok(LinkChoice::Tcp),
            other => Err(format!("--link {other:?}: expected shm, unix or tcp")),
        }
    }
}

/// One engine process.
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
    fn start(&mut self, program: &Path, config: &Path) -> Result<(), VenueError> {
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

/// A running venue. Dropping it does not stop it: call [`Venue::stop`].
pub struct Venue {
    /// The `baton` binary, to restart engines.
    program: PathBuf,
    /// The config every process was started with.
    config_path: PathBuf,
    /// Where counterparties connect.
    pub fix_addr: SocketAddr,
    /// Where `baton ctl` requests go.
    pub control: SocketAddr,
    /// The gateway process.
    gateway: Child,
    /// Blue and green.
    engines: Vec<EngineChild>,
}

/// `[control.operators]` naming the account this process runs as shared by the demo's `ops` and
/// `risk`; empty if the account has no name (the approval is then refused, and says why).
pub(crate) fn shared_account_operators() -> String {
    match crate::control::peer::current_account_name() {
        Some(account) => format!("[control.operators]\n{account:?} = [\"ops\", \"risk\"]"),
        None => String::new(),
    }
}

impl Venue {
    /// Starts both engines and the gateway and waits until both engines are attached.
    pub fn start(config: &VenueConfig) -> Result<Venue, VenueError> {
        let dir = &config.dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io("emptying the venue directory"))?;
        }
        std::fs::create_dir_all(dir).map_err(io("creating the venue directory"))?;
        let port = free_port()?;
        let control = SocketAddr::from(([127, 0, 0, 1], port));
        let unix = |name: &str| format!("unix://{}", dir.join(format!("{name}.sock")).display());
        let mut tcp_ports = Vec::new();
        if config.link == LinkChoice::Tcp {
            for _ in 0..2 {
                tcp_ports.push(free_port()?);
            }
        }
        let sock = |name: &str| match config.link {
            LinkChoice::Tcp => {
                let index = usize::from(name != "blue");
                format!("tcp://127.0.0.1:{}", tcp_ports[index])
            }
            LinkChoice::Unix | LinkChoice::Shm => unix(name),
        };
        // Written only when asked for, so a venue program of an earlier build reads the config.
        let mut gateway_extra = config
            .gateway_spin_us
            .map(|spin_us| format!("spin_us = {spin_us}\n"))
            .unwrap_or_default();
        if let Some(threads) = config.gateway_runtime_threads {
            gateway_extra.push_str(&format!("runtime_threads = {threads}\n"));
        }
        if let Some(batch_us) = config.gateway_standby_batch_us {
            gateway_extra.push_str(&format!("standby_batch_us = {batch_us}\n"));
        }
        let mut text = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"{}\"\njournal_dir = \"{}\"\n\
             engines = [\"{}\", \"{}\"]\ncontrol = \"{}\"\nfailover_timeout_ms = 1000\n{}\n\
             [control]\n{}\n{}\n\n\
             [defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n",
            dir.join("store").display(),
            dir.join("journal").display(),
            sock("blue"),
            sock("green"),
            control,
            gateway_extra,
            if config.require_approval {
                // The demo's operators file and approve from this one account: declared, as a
                // venue must declare a shared account for the two-person rule to accept it.
                shared_account_operators()
            } else {
                "approval_required = []".to_owned()
            },
            config.control_extra,
        );
        for n in 1..=config.sessions.max(1) {
            text.push_str(&format!("\n[[session]]\nTargetCompID = \"TRADER{n}\"\n"));
        }
        if !config.engine_section.is_empty() {
            text.push('\n');
            text.push_str(&config.engine_section);
        }
        text.push_str("\n[link]\n");
        if config.link == LinkChoice::Shm {
            text.push_str("transport = \"shm\"\n");
        }
        if let Some(spin_us) = config.spin_us {
            text.push_str(&format!("spin_us = {spin_us}\n"));
        }
        let config_path = dir.join("baton.toml");
        std::fs::write(&config_path, text).map_err(io("writing the venue config"))?;
        let mut engines = Vec::new();
        for (name, snapshot_format) in ["blue", "green"].into_iter().zip(config.snapshot_formats) {
            let mut engine = EngineChild {
                name: name.into(),
                snapshot_format,
                addr: sock(name),
                child: None,
            };
            engine.start(&config.program, &config_path)?;
            // Over TCP the gateway attaches whenever the engine listens (it retries).
            if config.link != LinkChoice::Tcp {
                wait_for_path(&dir.join(format!("{name}.sock")))?;
            }
            engines.push(engine);
        }
        // Under its own supervisor (the engines are started above, by the venue), which holds
        // its sockets and can replace it by a new process at a planned upgrade.
        let mut gateway = Command::new(&config.program)
            .args(["up", "--gateway-only", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io("starting the gateway"))?;
        let stdout = gateway
            .stdout
            .take()
            .ok_or_else(|| VenueError::Venue("no gateway stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(io("reading the gateway address"))?;
        let fix_addr: SocketAddr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                VenueError::Venue(format!("gateway did not print its address: {line:?}"))
            })?;
        let mut venue = Venue {
            program: config.program.clone(),
            config_path,
            fix_addr,
            control,
            gateway,
            engines,
        };
        // Trade only once an engine has authority and the other is a caught-up standby, so no
        // order meets "application not available" and a switch can be asked for at once.
        if let Err(error) = venue.await_standby(None) {
            venue.stop();
            return Err(error);
        }
        Ok(venue)
    }

    /// The venue's processes by name (`gateway`, then each engine), for per-process usage; a
    /// process not running now is left out.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes = Vec::new();
        if let Some(pid) = gateway_child(self.gateway.id()) {
            processes.push(("gateway".to_owned(), pid));
        }
        for engine in &self.engines {
            if let Some(child) = &engine.child {
                processes.push((engine.name.clone(), child.id()));
            }
        }
        processes
    }

    /// The gateway's status.
    pub fn status(&self) -> Result<Status, VenueError> {
        match self.request(&ControlRequest::Status, Duration::from_secs(10))? {
            ControlReply::Status(status) => Ok(status),
            other => Err(VenueError::Venue(format!("status: {other:?}"))),
        }
    }

    /// Any control request.
    pub fn request(
        &self,
        request: &ControlRequest,
        timeout: Duration,
    ) -> Result<ControlReply, VenueError> {
        client::request(self.control, request, timeout)
            .map_err(|error| VenueError::Venue(format!("{request:?}: {error}")))
    }

    /// Replaces the gateway process at a planned upgrade under `change` (sessions and sockets
    /// handed over) and returns what the new gateway measured.
    pub fn upgrade_gateway(&self, change: &str) -> Result<GatewayUpgrade, VenueError> {
        let request = ControlRequest::UpgradeGateway {
            operator: Some("ops".into()),
            change: change.to_owned(),
        };
        let barrier = match self.request(&request, Duration::from_secs(60))? {
            ControlReply::GatewayHandingOver {
                barrier_unix_ns, ..
            } => barrier_unix_ns,
            other => return Err(VenueError::Venue(format!("gateway upgrade: {other:?}"))),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(status) = self.status()
                && let Some(upgrade) = status
                    .gateway_upgrade
                    .filter(|u| u.barrier_unix_ns == barrier)
            {
                return Ok(*upgrade);
            }
            if Instant::now() > deadline {
                return Err(VenueError::Venue(
                    "the upgraded gateway did not serve in time".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(constants::BENCH_STATUS_POLL_MS));
        }
    }

    /// SIGKILLs the gateway process `baton up --gateway-only` runs now, leaving the supervisor
    /// to restart it: the supervisor holds every counterparty's socket, so the restarted gateway
    /// takes them back and no counterparty is disconnected (docs/socket-holder.md). Returns the
    /// killed pid once the signal is sent; it does not wait for the new gateway.
    pub fn kill_gateway(&self) -> Result<u32, VenueError> {
        let pid = gateway_child(self.gateway.id())
            .ok_or_else(|| VenueError::Venue("no gateway process under the supervisor".into()))?;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is a child of the
        // supervisor this venue started, read from /proc just now.
        let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        if sent != 0 {
            return Err(VenueError::Venue(format!(
                "SIGKILL gateway {pid}: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(pid)
    }

    /// The pid of the gateway process the supervisor runs now, if one runs: a restarted or
    /// upgraded gateway is another process.
    pub fn gateway_pid(&self) -> Option<u32> {
        gateway_child(self.gateway.id())
    }

    /// Waits until the control endpoint answers again (a restarted gateway binds it anew).
    pub fn await_control(&self, timeout: Duration) -> Result<Status, VenueError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.status() {
                Ok(status) => return Ok(status),
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(constants::BENCH_STATUS_POLL_MS))
                }
            }
        }
    }

    /// The name of the authoritative engine.
    pub fn authoritative(&self) -> Result<String, VenueError> {
        self.status()?
            .engines
            .into_iter()
            .find(|e| e.role == EngineRole::Authoritative)
            .map(|e| e.name)
            .ok_or_else(|| VenueError::Venue("no authoritative engine".into()))
    }

    /// Waits until `name` (or any engine) is a caught-up standby while another has authority.
    pub fn await_standby(&self, name: Option<&str>) -> Result<(), VenueError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = self.status() {
                let authority = status
                    .engines
                    .iter()
                    .any(|e| e.role == EngineRole::Authoritative);
                let standby = status.engines.iter().any(|e| {
                    name.is_none_or(|n| e.name == n)
                        && e.role == EngineRole::Standby
                        && e.lag_inputs < 1_000
                });
                if authority && standby {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(VenueError::Venue("no caught-up standby engine".into()));
            }
            std::thread::sleep(Duration::from_millis(constants::BENCH_STATUS_POLL_MS));
        }
    }

    /// SIGKILLs the authoritative engine, restarts it and waits until it is back as a caught-up
    /// standby; returns its name.
    pub fn kill_authoritative(&mut self) -> Result<String, VenueError> {
        let name = self.authoritative()?;
        let engine = self
            .engines
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| VenueError::Venue(format!("unknown engine {name}")))?;
        engine.kill();
        std::thread::sleep(Duration::from_millis(300));
        engine.start(&self.program, &self.config_path)?;
        self.await_standby(Some(&name))?;
        Ok(name)
    }

    /// SIGKILLs the standby engine, waits until the gateway has seen it go, restarts it empty
    /// and waits until it has rejoined (the authoritative engine's snapshot, then the journal)
    /// as a caught-up standby; returns its name. The authoritative engine serves throughout:
    /// what the rejoin costs it is what a counterparty would feel.
    pub fn rejoin_standby(&mut self) -> Result<String, VenueError> {
        let name = self
            .status()?
            .engines
            .into_iter()
            .find(|e| e.role == EngineRole::Standby)
            .map(|e| e.name)
            .ok_or_else(|| VenueError::Venue("no standby engine".into()))?;
        let engine = self
            .engines
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| VenueError::Venue(format!("unknown engine {name}")))?;
        engine.kill();
        // Restarted only once the gateway has marked it down: a standby found caught up
        // before that would be the dead one.
        let deadline = Instant::now() + Duration::from_secs(constants::BENCH_ENGINE_DOWN_WAIT_S);
        loop {
            // A slot whose engine is down has no name in status.
            let down = self
                .status()
                .is_ok_and(|status| !status.engines.iter().any(|e| e.name == name));
            if down {
                break;
            }
            if Instant::now() > deadline {
                return Err(VenueError::Venue(format!(
                    "the gateway never saw {name} go"
                )));
            }
            std::thread::sleep(Duration::from_millis(constants::BENCH_STATUS_POLL_MS));
        }
        let engine = self
            .engines
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| VenueError::Venue(format!("unknown engine {name}")))?;
        engine.start(&self.program, &self.config_path)?;
        self.await_standby(Some(&name))?;
        Ok(name)
    }

    /// The link addresses of the engines still running, by name.
    pub fn engine_addrs(&self) -> Vec<(String, String)> {
        self.engines
            .iter()
            .filter(|e| e.child.is_some())
            .map(|e| (e.name.clone(), e.addr.clone()))
            .collect()
    }

    /// Stops the gateway with SIGTERM (sessions are logged out) but leaves the engines running.
    pub fn stop_gateway(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not yet reaped, so
        // the pid is still ours.
        unsafe {
            libc::kill(self.gateway.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.gateway.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.gateway.kill();
        let _ = self.gateway.wait();
    }

    /// Stops everything.
    pub fn stop(&mut self) {
        self.stop_gateway();
        for engine in &mut self.engines {
            engine.kill();
        }
    }
}

/// The pid of the gateway process the supervisor `up` runs (a child of it whose command line
/// has the `gateway` subcommand), read from /proc; `None` when there is none at the moment.
fn gateway_child(up: u32) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(up) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|arg| arg == b"gateway") {
            return Some(pid);
        }
    }
    None
}

/// A loopback port nobody listens on now, for a process about to bind it.
fn free_port() -> Result<u16, VenueError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("finding a free port"))?
        .port())
}

fn wait_for_path(path: &Path) -> Result<(), VenueError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(VenueError::Venue(format!(
                "{} never appeared",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
