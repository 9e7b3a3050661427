//! The TOML configuration: gateway settings and one section per FIX session.
//!
//! Session keys use the names QuickFIX users already know (`BeginString`, `SenderCompID`,
//! `TargetCompID`, `StartTime`, `EndTime`, ...), so an operator can carry a session definition
//! over. Unknown keys are an error naming the key: a misspelled `MaxLatency` must not silently
//! fall back to a default on a trading venue.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::constants;
use crate::fix::schedule::{Schedule, TimeOfDay};
use crate::fix::session::SessionConfig;
use crate::fix::store::Durability;

pub mod quickfix;

/// The default configuration, compiled in so `baton gateway` runs with no file at all.
pub const DEFAULT_CONFIG: &str = include_str!("../deploy/baton.toml");

/// Why a configuration cannot be used; the message names the file, key or session at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or a value of the wrong type.
    #[error("config {origin}: {message}")]
    Parse {
        /// The file, or "embedded default".
        origin: String,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("config {origin}: {message}")]
    Invalid {
        /// The file, or "embedded default".
        origin: String,
        /// What is wrong and where.
        message: String,
    },
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide gateway settings.
    pub gateway: GatewayConfig,
    /// Values every `[[session]]` inherits unless it sets its own (QuickFIX's `[DEFAULT]`).
    #[serde(default)]
    pub defaults: SessionSettings,
    /// One entry per counterparty session.
    #[serde(default, rename = "session")]
    pub sessions: Vec<SessionSettings>,
    /// The matching engine's instruments and capacities (read by `baton engine`).
    #[serde(default)]
    pub engine: crate::engine::EngineConfig,
    /// Change policy, audit log and canary gates.
    #[serde(default)]
    pub control: ControlConfig,
    /// The engine link's shared secret.
    #[serde(default)]
    pub link: LinkConfig,
    /// Venue rules the gateway applies to business messages before sequencing them.
    #[serde(default)]
    pub venue: VenueConfig,
    /// How the commands that read this file (gateway, engine, up) write their log lines.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[log]`: one format for every process of a venue, so its log shipper parses them all alike.
/// `--log-format` on the command line wins over it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (the default) or `json`.
    #[serde(default)]
    pub format: crate::logging::LogFormat,
}

/// `[link]`: settings both the gateway and its engines read, since they must agree.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// A file holding the link secret (at least 16 bytes; surrounding whitespace ignored). With
    /// it, engine and gateway each prove they hold it at every handshake and refuse a peer that
    /// does not; without it, whoever can connect to an engine's link can feed it.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// How frames travel to an engine on this host: `"socket"` (the default: over the address's
    /// socket) or `"shm"` (each `unix://` address carries its frames in shared memory, the
    /// socket kept for wake-ups and liveness). Engine and gateway must agree.
    #[serde(default)]
    pub transport: crate::link::LinkTransport,
    /// Microseconds a shared-memory link reader (gateway and engine) spins on an empty ring
    /// before it sleeps; default [`constants::LINK_SHM_SPIN_US_DEFAULT`]. Longer spins answer
    /// sooner and cost a core while they spin.
    #[serde(default)]
    pub spin_us: Option<u64>,
}

impl LinkConfig {
    /// How long a shared-memory reader spins before it sleeps.
    pub fn spin(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.spin_us
                .unwrap_or(constants::LINK_SHM_SPIN_US_DEFAULT)
                .min(constants::LINK_SHM_SPIN_US_MAX),
        )
    }

    /// The secret, read now, if a file is configured.
    pub fn secret(
        &self,
    ) -> Result<Option<crate::link::LinkSecret>, crate::link::auth::SecretError> {
        self.secret_file
            .as_deref()
            .map(crate::link::LinkSecret::load)
            .transpose()
    }
}

/// `[venue]`: business rules the gateway checks on every order before it is sequenced, so
/// every engine sees only orders the venue accepts.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VenueConfig {
    /// PartyRole (452) values every NewOrderSingle, OrderCancelRequest and
    /// OrderCancelReplaceRequest must carry in its Parties group, e.g. `[3, 12]` for the client
    /// ID and the executing trader MiFID II asks for; empty: Parties are optional.
    #[serde(default)]
    pub parties_required_roles: Vec<u32>,
}

/// `[control]`: what needs approval, where the audit trail lives, and when a canary is rolled
/// back.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// The hash-chained audit log; default `audit.log` in `[gateway] journal_dir`.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Actions (`stage`, `switch`, `canary`) that run only under an approved change within its
    /// window.
    /// Rollback never needs approval.
    #[serde(default = "default_approval_required")]
    pub approval_required: Vec<String>,
    /// Approvals by operators other than the filer a change needs.
    #[serde(default = "default_approvals_min")]
    pub approvals_min: usize,
    /// Canary gates.
    #[serde(default)]
    pub gates: GatesConfig,
    /// How a canary engine's answers reach counterparties: `"immediate"` (as they arrive,
    /// judged after) or `"verified"` (only once the baseline engine's answer matches; on a
    /// mismatch the baseline's is delivered and the canary rolled back).
    #[serde(default)]
    pub canary_delivery: crate::gateway::core::CanaryDelivery,
    /// `[control.operators]`: OS account name → the person (`alice = "alice"`) or people
    /// (`ops = ["alice", "bob"]`) who act from it. Names are typed; accounts are what the kernel
    /// says, so this is what lets the two-person rule trust them.
    #[serde(default)]
    pub operators: std::collections::BTreeMap<String, AccountOperators>,
}

/// The people one OS account is declared to be: one name, or several sharing the account.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum AccountOperators {
    /// The account is this one person.
    One(String),
    /// The account is shared by these people, each still a separate approver.
    Many(Vec<String>),
}

impl AccountOperators {
    /// The names, trimmed.
    fn names(&self) -> Vec<String> {
        match self {
            AccountOperators::One(name) => vec![name.trim().to_owned()],
            AccountOperators::Many(names) => names.iter().map(|n| n.trim().to_owned()).collect(),
        }
    }
}

impl Default for ControlConfig {
    fn default() -> ControlConfig {
        ControlConfig {
            audit_log: None,
            approval_required: default_approval_required(),
            approvals_min: default_approvals_min(),
            gates: GatesConfig::default(),
            canary_delivery: Default::default(),
            operators: std::collections::BTreeMap::new(),
        }
    }
}

impl ControlConfig {
    /// The policy the control plane enforces.
    pub fn policy(&self) -> crate::control::change::Policy {
        crate::control::change::Policy {
            approval_required: self.approval_required.clone(),
            approvals_min: self.approvals_min,
            operators: self
                .operators
                .iter()
                .map(|(account, people)| (account.clone(), people.names()))
                .collect(),
        }
    }

    /// Where the audit log is, given the journal directory it defaults into.
    pub fn audit_path(&self, journal_dir: &Path) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| crate::control::audit::default_path(journal_dir))
    }
}

fn default_approval_required() -> Vec<String> {
    crate::control::change::Policy::default().approval_required
}

fn default_approvals_min() -> usize {
    crate::control::change::Policy::default().approvals_min
}

/// `[control.gates]`: limits on a canary engine, measured against the baseline engine on the
/// same inputs; see README.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatesConfig {
    /// Share of compared canary inputs whose answers may differ.
    #[serde(default = "default_error_rate_max")]
    pub error_rate_max: f64,
    /// Extra reject share allowed over the baseline.
    #[serde(default = "default_reject_rate_increase_max")]
    pub reject_rate_increase_max: f64,
    /// p99 answer latency allowed, as a multiple of the baseline's.
    #[serde(default = "default_latency_p99_ratio_max")]
    pub latency_p99_ratio_max: f64,
    /// µs above the baseline's p99 that never count as a breach.
    #[serde(default = "default_latency_slack_us")]
    pub latency_slack_us: u64,
    /// Compared inputs before the reject and latency gates judge.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Inputs a standby may be behind when a switch onto it is asked for; further behind, the
    /// switch is refused rather than pausing the venue while it catches up.
    #[serde(default = "default_switch_lag_max_inputs")]
    pub switch_lag_max_inputs: u64,
}

impl Default for GatesConfig {
    fn default() -> GatesConfig {
        GatesConfig {
            error_rate_max: default_error_rate_max(),
            reject_rate_increase_max: default_reject_rate_increase_max(),
            latency_p99_ratio_max: default_latency_p99_ratio_max(),
            latency_slack_us: default_latency_slack_us(),
            min_samples: default_min_samples(),
            switch_lag_max_inputs: default_switch_lag_max_inputs(),
        }
    }
}

impl GatesConfig {
    /// The gates as the sequencer applies them.
    pub fn core(&self) -> crate::gateway::core::GateConfig {
        crate::gateway::core::GateConfig {
            error_rate_max: self.error_rate_max,
            reject_rate_increase_max: self.reject_rate_increase_max,
            reject_min_samples: self.min_samples,
            latency_p99_ratio_max: self.latency_p99_ratio_max,
            latency_slack_us: self.latency_slack_us,
            latency_min_samples: self.min_samples,
            switch_lag_max_inputs: self.switch_lag_max_inputs,
        }
    }
}

fn default_error_rate_max() -> f64 {
    constants::GATE_ERROR_RATE_MAX_DEFAULT
}

fn default_reject_rate_increase_max() -> f64 {
    constants::GATE_REJECT_RATE_INCREASE_MAX_DEFAULT
}

fn default_latency_p99_ratio_max() -> f64 {
    constants::GATE_LATENCY_P99_RATIO_MAX_DEFAULT
}

fn default_latency_slack_us() -> u64 {
    constants::GATE_LATENCY_SLACK_US_DEFAULT
}

fn default_min_samples() -> u64 {
    constants::GATE_MIN_SAMPLES_DEFAULT
}

fn default_switch_lag_max_inputs() -> u64 {
    constants::SWITCH_LAG_MAX_INPUTS
}

/// `[gateway]`: where to listen and where to keep state.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address counterparties connect to.
    pub listen: SocketAddr,
    /// Directory of the session stores (one subdirectory per session); relative paths are
    /// relative to the working directory.
    pub store_dir: PathBuf,
    /// When stored messages reach the disk; see README.
    #[serde(default)]
    pub durability: Durability,
    /// Connections accepted at once, logged on or not; more are closed on accept.
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
    /// Connections at once that have not logged on; when full, the oldest is closed.
    #[serde(default = "default_prelogon_connections_max")]
    pub prelogon_connections_max: usize,
    /// Connections at once that have not logged on, from one source address; when full, the
    /// oldest from that address is closed.
    #[serde(default = "default_prelogon_connections_per_address_max")]
    pub prelogon_connections_per_address_max: usize,
    /// Engine link addresses (`unix:///path` or `tcp://host:port`): the first to attach takes
    /// authority, the others are standbys. Empty: the gateway runs sessions only and answers
    /// business messages with "application not available".
    #[serde(default)]
    pub engines: Vec<String>,
    /// Milliseconds of silence from the authoritative engine before the standby takes over.
    #[serde(default = "default_failover_timeout_ms")]
    pub failover_timeout_ms: u64,
    /// Directory of the input journal; relative paths are relative to the working directory.
    #[serde(default = "default_journal_dir")]
    pub journal_dir: PathBuf,
    /// Size of each input journal segment file, allocated on disk when the journal rolls over
    /// to it; clamped to the journal's limits. Smaller segments need less free space per roll.
    #[serde(default = "default_journal_segment_bytes")]
    pub journal_segment_bytes: u64,
    /// Address of the control endpoint `baton ctl` talks to. It must be a loopback address: the
    /// endpoint switches authority between engines, so it takes commands from this host only.
    #[serde(default = "default_control")]
    pub control: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`), or `None` for no endpoint:
    /// scraping is opt-in, so a gateway nobody monitors this way opens no extra port. Loopback
    /// only, like `control`: the metrics name sessions and engines, and a scraper on another host
    /// reaches it through an agent or a proxy on this one that the operator chose.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// PEM certificate chain the FIX listener presents; with `tls_key`, every FIX connection
    /// speaks TLS (plain TCP clients are refused at the handshake). Read at start: a file that
    /// does not load stops the gateway.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates of the authority that issues counterparties' client certificates; with
    /// it a counterparty must present one, and may log on only as the CompIDs
    /// `[gateway.tls_clients]` maps its certificate to.
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// `[gateway.tls_clients]`: a client certificate's name (subject CN or a DNS subject
    /// alternative name) → the counterparty CompIDs (their SenderCompID, our TargetCompID) a
    /// connection presenting it may log on as.
    #[serde(default)]
    pub tls_clients: std::collections::BTreeMap<String, Vec<String>>,
    /// Under `baton up`: how long the supervisor keeps counterparties' connections after the
    /// gateway died, waiting for the restarted one to take them back; past it they are closed.
    /// 0 turns the socket holder off (a gateway death then disconnects everyone, as before).
    #[serde(default = "default_hold_sockets_max_ms")]
    pub hold_sockets_max_ms: u64,
    /// Threads of the gateway's async runtime (see
    /// [`crate::gateway::assembly::gateway_runtime`]). 0 (the default): a worker per core. 1:
    /// every task on one thread, so an order crosses no thread inside the gateway, at the cost
    /// of every stall of that thread stopping all sessions and links. More: that many workers.
    #[serde(default = "default_runtime_threads")]
    pub runtime_threads: usize,
    /// Microseconds the gateway keeps polling its sockets without sleeping after each order or
    /// engine answer, so the next one is picked up without a wake-up; it burns a core for that
    /// long. Only with `runtime_threads = 1`: on a multi-thread runtime the spinning worker is
    /// not the one the next event wakes, so it adds CPU and saves no wake-up (measured). 0 (the
    /// default): the gateway sleeps as soon as it has nothing to do.
    #[serde(default)]
    pub spin_us: u64,
    /// Puts every engine on this host that owns no inputs (a standby) in the `SCHED_BATCH`
    /// scheduling class, and an engine that takes authority back in the normal one, so a
    /// standby's wake-up never preempts the order path (see `gateway::placement`). On by
    /// default; off leaves the engines' classes as they were started.
    #[serde(default = "default_standby_sched_batch")]
    pub standby_sched_batch: bool,
    /// Microseconds inputs for a standby that nothing waits on may be kept, while the venue is
    /// busy, before they are written to it, at most [`constants::STANDBY_BATCH_INPUTS_MAX`] of
    /// them: under load a standby is then woken once per batch instead of once per order, which
    /// saves it and the gateway CPU the order path needs. A switch, a failover or a canary
    /// writes what was kept at once, so nothing waits on it. 0: every input is written to every
    /// engine at once.
    #[serde(default = "default_standby_batch_us")]
    pub standby_batch_us: u64,
}

fn default_standby_batch_us() -> u64 {
    constants::STANDBY_BATCH_US_DEFAULT
}

/// Refuses `[section] spin_us` over [`constants::LINK_SHM_SPIN_US_MAX`]: a longer spin buys no
/// latency, only a busy core.
fn check_spin(section: &str, spin_us: u64, origin: &str) -> Result<(), ConfigError> {
    if spin_us > constants::LINK_SHM_SPIN_US_MAX {
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            message: format!(
                "[{section}] spin_us = {spin_us} is over the limit of {} µs: a longer spin buys no latency, only a busy core",
                constants::LINK_SHM_SPIN_US_MAX
            ),
        });
    }
    Ok(())
}

fn default_standby_sched_batch() -> bool {
    true
}

fn default_runtime_threads() -> usize {
    constants::GATEWAY_RUNTIME_THREADS_DEFAULT
}

fn default_hold_sockets_max_ms() -> u64 {
    constants::HOLD_SOCKETS_MAX_MS_DEFAULT
}

fn default_failover_timeout_ms() -> u64 {
    constants::FAILOVER_TIMEOUT_DEFAULT_MS
}

fn default_journal_segment_bytes() -> u64 {
    constants::JOURNAL_SEGMENT_BYTES_DEFAULT
}

fn default_journal_dir() -> PathBuf {
    PathBuf::from("var/journal")
}

fn default_connections_max() -> usize {
    constants::CONNECTIONS_MAX
}

fn default_prelogon_connections_max() -> usize {
    constants::PRELOGON_CONNECTIONS_MAX
}

fn default_prelogon_connections_per_address_max() -> usize {
    constants::PRELOGON_CONNECTIONS_PER_ADDRESS_MAX
}

fn default_control() -> SocketAddr {
    constants::CONTROL_ADDR_DEFAULT
}

/// One session's settings (or the defaults), with QuickFIX key names. Every key is optional
/// here; [`Config::session_configs`] fills gaps from `[defaults]` and then built-in defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Protocol version; only `FIX.4.4` is supported.
    #[serde(rename = "BeginString")]
    pub begin_string: Option<String>,
    /// The gateway's CompID on this session.
    #[serde(rename = "SenderCompID")]
    pub sender_comp_id: Option<String>,
    /// The counterparty's CompID.
    #[serde(rename = "TargetCompID")]
    pub target_comp_id: Option<String>,
    /// Smallest HeartBtInt (s) a counterparty may ask for in its Logon.
    #[serde(rename = "HeartBtIntMin")]
    pub heart_bt_int_min: Option<u64>,
    /// Largest HeartBtInt (s) a counterparty may ask for in its Logon.
    #[serde(rename = "HeartBtIntMax")]
    pub heart_bt_int_max: Option<u64>,
    /// Whether SendingTime is checked against the gateway's clock.
    #[serde(rename = "CheckLatency")]
    pub check_latency: Option<bool>,
    /// SendingTime tolerance in seconds.
    #[serde(rename = "MaxLatency")]
    pub max_latency: Option<u64>,
    /// Seconds a new connection has to log on.
    #[serde(rename = "LogonTimeout")]
    pub logon_timeout: Option<u64>,
    /// Seconds the gateway waits for the answer to its Logout.
    #[serde(rename = "LogoutTimeout")]
    pub logout_timeout: Option<u64>,
    /// Start of the daily session window, `HH:MM:SS` UTC.
    #[serde(rename = "StartTime")]
    pub start_time: Option<String>,
    /// End of the daily session window, `HH:MM:SS` UTC.
    #[serde(rename = "EndTime")]
    pub end_time: Option<String>,
    /// Days a window may start on, e.g. `Mon,Tue,Wed,Thu,Fri`.
    #[serde(rename = "Weekdays")]
    pub weekdays: Option<String>,
    /// Always open; sequence numbers never reset by schedule.
    #[serde(rename = "NonStopSession")]
    pub non_stop_session: Option<bool>,
}

impl Config {
    /// Reads a config file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Config::parse(&text, &path.display().to_string())
            }
            None => Config::parse(DEFAULT_CONFIG, "embedded default"),
        }
    }

    /// Parses and checks a config; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            origin: origin.to_string(),
            message: error.to_string(),
        })?;
        config.session_configs(origin)?;
        config.check_control(origin)?;
        config.check_venue(origin)?;
        config.check_tls(origin)?;
        config.check_link(origin)?;
        config.check_runtime(origin)?;
        Ok(config)
    }

    /// Refuses a runtime of more than [`constants::GATEWAY_RUNTIME_THREADS_MAX`] threads, a
    /// gateway spin over [`constants::LINK_SHM_SPIN_US_MAX`] (it would only burn a core) and a
    /// standby batch over [`constants::STANDBY_BATCH_US_MAX`].
    fn check_runtime(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let threads = self.gateway.runtime_threads;
        if threads > constants::GATEWAY_RUNTIME_THREADS_MAX {
            return Err(invalid(format!(
                "[gateway] runtime_threads = {threads} is over the limit of {} (0: a worker per core)",
                constants::GATEWAY_RUNTIME_THREADS_MAX
            )));
        }
        let batch_us = self.gateway.standby_batch_us;
        if batch_us > constants::STANDBY_BATCH_US_MAX {
            return Err(invalid(format!(
                "[gateway] standby_batch_us = {batch_us} is over the limit of {} µs: a standby kept further behind only makes a failover start later",
                constants::STANDBY_BATCH_US_MAX
            )));
        }
        check_spin("gateway", self.gateway.spin_us, origin)
    }

    /// Refuses a link spin over the limit (see [`check_spin`]).
    fn check_link(&self, origin: &str) -> Result<(), ConfigError> {
        check_spin("link", self.link.spin_us.unwrap_or(0), origin)
    }

    /// Refuses TLS settings that cannot mean what the operator wanted: a certificate without its
    /// key, client certificates without TLS, a client authority that maps nobody (every Logon
    /// would be refused), or a mapping to a CompID no session has (a typo locks a counterparty
    /// out).
    fn check_tls(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let gateway = &self.gateway;
        match (&gateway.tls_cert, &gateway.tls_key) {
            (Some(_), None) => {
                return Err(invalid("[gateway] tls_cert is set without tls_key".into()));
            }
            (None, Some(_)) => {
                return Err(invalid("[gateway] tls_key is set without tls_cert".into()));
            }
            (None, None) if gateway.tls_client_ca.is_some() => {
                return Err(invalid(
                    "[gateway] tls_client_ca needs tls_cert and tls_key: client certificates are asked for in a TLS handshake".into(),
                ));
            }
            _ => {}
        }
        if gateway.tls_client_ca.is_none() {
            if !gateway.tls_clients.is_empty() {
                return Err(invalid(
                    "[gateway.tls_clients] is set without [gateway] tls_client_ca: no client certificate is asked for, so nothing can be mapped".into(),
                ));
            }
            return Ok(());
        }
        if gateway.tls_clients.values().all(Vec::is_empty) {
            return Err(invalid(
                "[gateway] tls_client_ca is set but [gateway.tls_clients] maps no certificate name to a CompID: every Logon would be refused".into(),
            ));
        }
        let sessions = self.session_configs(origin)?;
        for (name, comp_ids) in &gateway.tls_clients {
            for comp_id in comp_ids {
                if !sessions.iter().any(|s| &s.target_comp_id == comp_id) {
                    return Err(invalid(format!(
                        "[gateway.tls_clients] {name:?}: {comp_id:?} is not the TargetCompID of any [[session]]"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Refuses a required role the dictionary does not list (a typo would make every order
    /// fail) and more roles than an order may carry parties.
    fn check_venue(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let roles = &self.venue.parties_required_roles;
        if roles.len() > constants::PARTIES_MAX {
            return Err(invalid(format!(
                "[venue] parties_required_roles lists {} roles, more than the {} parties an order may carry",
                roles.len(),
                constants::PARTIES_MAX
            )));
        }
        let dictionary = crate::fix::dictionary::Dictionary::venue();
        for (i, role) in roles.iter().enumerate() {
            let listed = dictionary
                .field(crate::gateway::translate::tag::PARTY_ROLE)
                .is_some_and(|field| field.accepts_value(role.to_string().as_bytes()));
            if !listed {
                return Err(invalid(format!(
                    "[venue] parties_required_roles: {role} is not a PartyRole (452) the venue takes"
                )));
            }
            if roles[..i].contains(role) {
                return Err(invalid(format!(
                    "[venue] parties_required_roles: {role} is listed twice"
                )));
            }
        }
        Ok(())
    }

    /// Refuses a policy naming an action that does not exist (a typo must not silently drop an
    /// approval requirement) and gates that could never or always trip.
    fn check_control(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        for action in &self.control.approval_required {
            if !matches!(action.as_str(), "stage" | "switch" | "canary") {
                return Err(invalid(format!(
                    "[control] approval_required: {action:?} is not an action that can require approval (stage, switch, canary)"
                )));
            }
        }
        for (account, people) in &self.control.operators {
            let names = people.names();
            if names.is_empty() || names.iter().any(String::is_empty) {
                return Err(invalid(format!(
                    "[control.operators] {account}: name at least one operator, none blank"
                )));
            }
        }
        if self.control.approvals_min == 0 {
            return Err(invalid(
                "[control] approvals_min must be at least 1 (an approval by nobody is none)".into(),
            ));
        }
        let gates = &self.control.gates;
        for (name, value) in [
            ("error_rate_max", gates.error_rate_max),
            ("reject_rate_increase_max", gates.reject_rate_increase_max),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(format!(
                    "[control.gates] {name} = {value} is not a share between 0 and 1"
                )));
            }
        }
        if gates.latency_p99_ratio_max.is_nan() || gates.latency_p99_ratio_max < 1.0 {
            return Err(invalid(format!(
                "[control.gates] latency_p99_ratio_max = {} must be at least 1",
                gates.latency_p99_ratio_max
            )));
        }
        Ok(())
    }

    /// The sessions with every default applied, checked for consistency.
    pub fn session_configs(&self, origin: &str) -> Result<Vec<SessionConfig>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let mut out: Vec<SessionConfig> = Vec::with_capacity(self.sessions.len());
        for (index, session) in self.sessions.iter().enumerate() {
            let name = format!("session #{}", index + 1);
            let pick = |get: fn(&SessionSettings) -> Option<String>| {
                get(session).or_else(|| get(&self.defaults))
            };
            let target = pick(|s| s.target_comp_id.clone())
                .ok_or_else(|| invalid(format!("{name}: TargetCompID is required")))?;
            let sender = pick(|s| s.sender_comp_id.clone())
                .ok_or_else(|| invalid(format!("{name} ({target}): SenderCompID is required")))?;
            let name = format!("session {sender}->{target}");
            let mut config = SessionConfig::new(&sender, &target);
            if let Some(begin) = pick(|s| s.begin_string.clone())
                && begin != "FIX.4.4"
            {
                return Err(invalid(format!(
                    "{name}: BeginString {begin:?} is not supported (only FIX.4.4)"
                )));
            }
            for comp_id in [&sender, &target] {
                if comp_id.is_empty() || !comp_id.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid(format!(
                        "{name}: CompID {comp_id:?} must be printable ASCII without spaces"
                    )));
                }
            }
            let number =
                |get: fn(&SessionSettings) -> Option<u64>| get(session).or(get(&self.defaults));
            let flag =
                |get: fn(&SessionSettings) -> Option<bool>| get(session).or(get(&self.defaults));
            if let Some(v) = number(|s| s.heart_bt_int_min) {
                config.heart_bt_int_min_s = v;
            }
            if let Some(v) = number(|s| s.heart_bt_int_max) {
                config.heart_bt_int_max_s = v;
            }
            if config.heart_bt_int_min_s == 0
                || config.heart_bt_int_min_s > config.heart_bt_int_max_s
            {
                return Err(invalid(format!(
                    "{name}: HeartBtIntMin must be at least 1 and not above HeartBtIntMax"
                )));
            }
            if let Some(v) = flag(|s| s.check_latency) {
                config.check_latency = v;
            }
            if let Some(v) = number(|s| s.max_latency) {
                config.max_latency_ms = v * 1000;
            }
            if let Some(v) = number(|s| s.logon_timeout) {
                config.logon_timeout_ms = v * 1000;
            }
            if let Some(v) = number(|s| s.logout_timeout) {
                config.logout_timeout_ms = v * 1000;
            }
            let non_stop = flag(|s| s.non_stop_session);
            let start = pick(|s| s.start_time.clone());
            let end = pick(|s| s.end_time.clone());
            let weekdays = pick(|s| s.weekdays.clone());
            config.schedule = match (non_stop, start, end) {
                (Some(true), _, _) | (None, None, None) => Schedule::non_stop(),
                (_, Some(start), Some(end)) => {
                    let time = |key: &str, value: &str| {
                        TimeOfDay::parse(value).ok_or_else(|| {
                            invalid(format!("{name}: {key} {value:?} is not HH:MM:SS"))
                        })
                    };
                    let weekdays = match weekdays {
                        None => 0x7f,
                        Some(text) => Schedule::parse_weekdays(&text).ok_or_else(|| {
                            invalid(format!(
                                "{name}: Weekdays {text:?} is not a list like Mon,Tue,Wed"
                            ))
                        })?,
                    };
                    Schedule {
                        start: time("StartTime", &start)?,
                        end: time("EndTime", &end)?,
                        weekdays,
                        non_stop: false,
                    }
                }
                _ => {
                    return Err(invalid(format!(
                        "{name}: set both StartTime and EndTime, or NonStopSession = true"
                    )));
                }
            };
            if out.iter().any(|c| {
                c.sender_comp_id == config.sender_comp_id
                    && c.target_comp_id == config.target_comp_id
            }) {
                return Err(invalid(format!("{name} is defined twice")));
            }
            out.push(config);
        }
        Ok(out)
    }
}

/// A socket address given on the command line that is not `IP:PORT`. The gateway binds and
/// connects to literal addresses only, so that what it listens on never depends on a resolver;
/// the message says so, because `localhost:9878` looks valid to a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected IP:PORT, host names are not accepted: {0}")]
pub struct SocketAddrError(pub String);

/// Parses `IP:PORT` (`[v6]:PORT` for IPv6), with an error that names what was wrong.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, SocketAddrError> {
    text.parse().map_err(|_| SocketAddrError(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_is_refused_with_a_hint() {
        assert_eq!(
            parse_socket_addr("localhost:9878").unwrap_err().to_string(),
            "expected IP:PORT, host names are not accepted: localhost:9878"
        );
        assert_eq!(
            parse_socket_addr("127.0.0.1:9878"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9878)))
        );
    }

    #[test]
    fn the_link_transport_and_spin_are_read_and_bounded() {
        let base = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n";
        let config = Config::parse(base, "test").unwrap();
        assert_eq!(config.link.transport, crate::link::LinkTransport::Socket);
        assert_eq!(
            config.link.spin(),
            std::time::Duration::from_micros(constants::LINK_SHM_SPIN_US_DEFAULT)
        );
        let config = Config::parse(
            &format!("{base}[link]\ntransport = \"shm\"\nspin_us = 50\n"),
            "test",
        )
        .unwrap();
        assert_eq!(config.link.transport, crate::link::LinkTransport::Shm);
        assert_eq!(config.link.spin(), std::time::Duration::from_micros(50));
        let unix: crate::link::LinkAddr = "unix:///run/e.sock".parse().unwrap();
        assert_eq!(
            unix.with_transport(config.link.transport).to_string(),
            "shm:///run/e.sock"
        );
        let tcp: crate::link::LinkAddr = "tcp://127.0.0.1:9900".parse().unwrap();
        assert_eq!(
            tcp.with_transport(config.link.transport).to_string(),
            "tcp://127.0.0.1:9900"
        );
        let error = Config::parse(&format!("{base}[link]\nspin_us = 10001\n"), "test")
            .unwrap_err()
            .to_string();
        assert!(error.contains("spin_us"), "{error}");
        let error = Config::parse(&format!("{base}[link]\ntransport = \"udp\"\n"), "test")
            .unwrap_err()
            .to_string();
        assert!(error.contains("transport"), "{error}");
    }

    #[test]
    fn the_gateway_runtime_and_its_spin_are_read_and_bounded() {
        let base = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n";
        let config = Config::parse(base, "test").unwrap();
        assert_eq!(
            config.gateway.runtime_threads, 0,
            "a worker per core unless told"
        );
        let config = Config::parse(&format!("{base}runtime_threads = 1\n"), "test").unwrap();
        assert_eq!(config.gateway.runtime_threads, 1);
        let too_many = constants::GATEWAY_RUNTIME_THREADS_MAX + 1;
        let error = Config::parse(&format!("{base}runtime_threads = {too_many}\n"), "test")
            .unwrap_err()
            .to_string();
        assert!(error.contains("runtime_threads"), "{error}");
        assert_eq!(config.gateway.spin_us, 0, "the gateway sleeps unless told");
        let config = Config::parse(&format!("{base}spin_us = 200\n"), "test").unwrap();
        assert_eq!(config.gateway.spin_us, 200);
        let error = Config::parse(&format!("{base}spin_us = 10001\n"), "test")
            .unwrap_err()
            .to_string();
        assert!(error.contains("[gateway] spin_us"), "{error}");
    }

    #[test]
    fn the_standby_batch_is_a_millisecond_unless_told_and_bounded() {
        let base = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n";
        let config = Config::parse(base, "test").unwrap();
        assert_eq!(config.gateway.standby_batch_us, 1_000);
        let config = Config::parse(&format!("{base}standby_batch_us = 0\n"), "test").unwrap();
        assert_eq!(config.gateway.standby_batch_us, 0, "off: written at once");
        let over = constants::STANDBY_BATCH_US_MAX + 1;
        let error = Config::parse(&format!("{base}standby_batch_us = {over}\n"), "test")
            .unwrap_err()
            .to_string();
        assert!(error.contains("[gateway] standby_batch_us"), "{error}");
    }

    #[test]
    fn venue_party_roles_are_checked_against_the_dictionary() {
        let base = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n";
        let config = Config::parse(
            &format!("{base}[venue]\nparties_required_roles = [3, 12]\n"),
            "test",
        )
        .unwrap();
        assert_eq!(config.venue.parties_required_roles, [3, 12]);
        let error = Config::parse(
            &format!("{base}[venue]\nparties_required_roles = [3, 4000]\n"),
            "test",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("4000 is not a PartyRole"), "{error}");
        let error = Config::parse(
            &format!("{base}[venue]\nparties_required_roles = [3, 3]\n"),
            "test",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("listed twice"), "{error}");
    }

    #[test]
    fn tls_settings_must_be_whole_and_map_configured_comp_ids() {
        let base = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n";
        let session = "[[session]]\nSenderCompID = \"V\"\nTargetCompID = \"CLIENT1\"\n";
        let both = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        let ca = "tls_client_ca = \"ca.pem\"\n";
        let config = Config::parse(
            &format!(
                "{base}{both}{ca}[gateway.tls_clients]\n\"one.example\" = [\"CLIENT1\"]\n{session}"
            ),
            "t",
        )
        .expect("whole TLS settings load");
        assert_eq!(config.gateway.tls_clients["one.example"], ["CLIENT1"]);
        for (text, needle) in [
            (format!("{base}tls_cert = \"c.pem\"\n"), "without tls_key"),
            (format!("{base}tls_key = \"k.pem\"\n"), "without tls_cert"),
            (format!("{base}{ca}"), "needs tls_cert and tls_key"),
            (format!("{base}{both}{ca}{session}"), "maps no certificate"),
            (
                format!("{base}{both}[gateway.tls_clients]\nx = [\"CLIENT1\"]\n{session}"),
                "without [gateway] tls_client_ca",
            ),
            (
                format!("{base}{both}{ca}[gateway.tls_clients]\nx = [\"CLIENT9\"]\n{session}"),
                "\"CLIENT9\" is not the TargetCompID",
            ),
        ] {
            let error = Config::parse(&text, "t").unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn embedded_default_config_is_valid() {
        let config = Config::load(None).unwrap();
        assert!(!config.session_configs("embedded").unwrap().is_empty());
    }

    #[test]
    fn metrics_address_is_optional_and_read_when_set() {
        let base = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n";
        let without = Config::parse(base, "t").expect("config without metrics");
        assert_eq!(without.gateway.metrics, None);
        let with = Config::parse(&format!("{base}metrics = \"127.0.0.1:9880\"\n"), "t")
            .expect("config with metrics");
        assert_eq!(
            with.gateway.metrics,
            Some("127.0.0.1:9880".parse().expect("address"))
        );
        let error = Config::parse(&format!("{base}metrics = \"localhost\"\n"), "t")
            .expect_err("not a socket address")
            .to_string();
        assert!(error.contains("metrics"), "{error}");
    }

    #[test]
    fn canary_delivery_defaults_to_immediate_and_refuses_an_unknown_mode() {
        use crate::gateway::core::CanaryDelivery;
        let base = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n";
        let default = Config::parse(base, "t").expect("config without [control]");
        assert_eq!(default.control.canary_delivery, CanaryDelivery::Immediate);
        let verified = Config::parse(
            &format!("{base}[control]\ncanary_delivery = \"verified\"\n"),
            "t",
        )
        .expect("verified");
        assert_eq!(verified.control.canary_delivery, CanaryDelivery::Verified);
        let error = Config::parse(
            &format!("{base}[control]\ncanary_delivery = \"eventually\"\n"),
            "t",
        )
        .expect_err("unknown mode")
        .to_string();
        assert!(
            error.contains("eventually") && error.contains("verified"),
            "{error}"
        );
        // The shipped config spells the default out.
        let shipped = Config::load(None).expect("embedded config");
        assert_eq!(shipped.control.canary_delivery, CanaryDelivery::Immediate);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let text = DEFAULT_CONFIG.replace("[defaults]", "[defaults]\nMaxLatancy = 5");
        let error = Config::parse(&text, "test.toml").unwrap_err().to_string();
        assert!(error.contains("MaxLatancy"), "{error}");
        assert!(error.contains("test.toml"), "{error}");
    }

    #[test]
    fn sessions_inherit_defaults_and_override_them() {
        let text = r#"
            [gateway]
            listen = "127.0.0.1:0"
            store_dir = "store"
            [defaults]
            SenderCompID = "VENUE"
            MaxLatency = 30
            StartTime = "08:00:00"
            EndTime = "17:00:00"
            Weekdays = "Mon,Tue,Wed,Thu,Fri"
            [[session]]
            TargetCompID = "A"
            [[session]]
            TargetCompID = "B"
            MaxLatency = 5
            NonStopSession = true
        "#;
        let sessions = Config::parse(text, "t")
            .unwrap()
            .session_configs("t")
            .unwrap();
        assert_eq!(sessions[0].sender_comp_id, "VENUE");
        assert_eq!(sessions[0].max_latency_ms, 30_000);
        assert!(!sessions[0].schedule.non_stop);
        assert_eq!(sessions[0].schedule.weekdays, 0b001_1111);
        assert_eq!(sessions[1].max_latency_ms, 5_000);
        assert!(sessions[1].schedule.non_stop);
    }

    #[test]
    fn bad_values_are_errors_naming_the_session() {
        let base = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n[[session]]\nSenderCompID = \"V\"\nTargetCompID = \"A\"\n";
        for (extra, needle) in [
            (
                "StartTime = \"25:00:00\"\nEndTime = \"17:00:00\"\n",
                "StartTime",
            ),
            ("StartTime = \"08:00:00\"\n", "EndTime"),
            ("BeginString = \"FIX.4.2\"\n", "BeginString"),
            ("HeartBtIntMin = 0\n", "HeartBtIntMin"),
        ] {
            let error = Config::parse(&format!("{base}{extra}"), "t")
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle) && error.contains("V->A"), "{error}");
        }
        let twice = format!("{base}[[session]]\nSenderCompID = \"V\"\nTargetCompID = \"A\"\n");
        assert!(
            Config::parse(&twice, "t")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
