//! The `baton` command line. Argument parsing and wiring only; behavior lives in the library.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use baton::config::Config;
use baton::constants;
use baton::control;
use baton::control::api::{ControlReply, ControlRequest};
use baton::control::supervisor::{ChildSpec, ControlAddr, SupervisorError, supervise};
use baton::engine::{Engine, MatchingEngine};
use baton::link::{self, LinkAddr, ServeConfig, Shutdown};
use baton::logging::{LOG_FORMAT_ENV, LogFormat};

/// FIX session gateway that keeps counterparties connected while the engine behind it changes.
#[derive(Parser)]
#[command(name = "baton", version, about)]
struct Cli {
    /// Log lines as `text` or `json` (one object per line); wins over BATON_LOG_FORMAT and the
    /// config's `[log] format`.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole venue: the engine and the gateway as supervised child processes.
    Up {
        /// Config file; without it the embedded default (deploy/baton.toml) is used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Supervise the gateway alone (its engines run elsewhere: other hosts, other units):
        /// it is still restarted, its sockets held, and it can be upgraded in place.
        #[arg(long)]
        gateway_only: bool,
    },
    /// Show it: start a venue (blue and green engines, gateway), trade from simulated
    /// counterparties, upgrade blue to green live, replace the gateway process by a new one,
    /// SIGKILL the gateway process (restarted with the held sockets), crash the authoritative
    /// engine, and print what the counterparties saw.
    Demo {
        /// Simulated counterparties.
        #[arg(long, default_value_t = 8)]
        sessions: usize,
        /// Scratch directory for the demo venue (emptied first).
        #[arg(long, default_value = "var/demo")]
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure latency under open-loop load, as ratios to a same-run TCP echo baseline: against
    /// a venue the bench starts (two engines and a gateway) or any FIX 4.4 acceptor.
    ///
    /// Each event (switch, rollback, kill, rejoin, gateway kill or upgrade, hostile traffic) is
    /// reported by the worst latency of the orders in its window, as a ratio to the steady p99
    /// (orders outside every window) and to the worst the steady orders show over as many
    /// orders as the window held (their quantile at 1 − 1/orders): the max of thousands of
    /// orders is several times their p99 with no event at all, so only the second ratio tells
    /// an event's cost (above 1) from the machine's tail (near 1).
    Bench {
        /// Concurrent FIX sessions.
        #[arg(long, default_value_t = 1)]
        sessions: usize,
        /// Orders per second across all sessions.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Order mix weights.
        #[arg(long, default_value = "new=70,cancel=10,replace=10,cross=10")]
        mix: String,
        /// Switch authority (then roll back, alternately) every S seconds; own venue only.
        #[arg(long)]
        switch_every: Option<f64>,
        /// SIGKILL the authoritative engine at S seconds (repeatable); own venue only.
        #[arg(long = "kill-at")]
        kill_at: Vec<f64>,
        /// Run the load under a canary (every symbol on the standby, gates watching), to see
        /// what a canary costs; own venue only.
        #[arg(long)]
        canary: bool,
        /// With --canary: then run the same load on a fresh venue whose canary delivers verified
        /// (`[control] canary_delivery = "verified"`) and report its latency as a ratio to the
        /// default canary's.
        #[arg(long, requires = "canary")]
        verified_canary: bool,
        /// Hostile traffic beside the measured sessions: resend-storm, wide-logons,
        /// prelogon-flood or ctl-flood (the last needs the bench's own venue).
        #[arg(long)]
        hostile: Option<baton::bench::hostile::Hostile>,
        /// When the hostile traffic starts, seconds into the load (default: half way).
        #[arg(long)]
        hostile_at: Option<f64>,
        /// Run the bench's venue with this `baton` binary instead of this one (to measure
        /// another build under the same harness).
        #[arg(long)]
        venue_program: Option<PathBuf>,
        /// Measure this FIX acceptor instead of starting a venue.
        #[arg(long, value_parser = baton::config::parse_socket_addr)]
        target: Option<std::net::SocketAddr>,
        /// SenderCompID prefix with --target (sessions are PREFIX1..N).
        #[arg(long, default_value = "TRADER")]
        sender: String,
        /// The acceptor's CompID with --target.
        #[arg(long, default_value = "BATON")]
        target_comp_id: String,
        /// Also measure a third-party acceptor with the same load, after baton and the echo:
        /// `quickfix` (built by benches/peers/quickfix/build.sh when missing) or
        /// `quickfix=PATH` (a built peer). It answers new orders only: use with --mix new=1.
        #[arg(long)]
        peer: Option<baton::bench::peer::PeerSpec>,
        /// Measure throughput: send the run's orders (--rate × --duration) as fast as they are
        /// answered, each session keeping a window in flight, and report orders per second of
        /// baton and of the echo baseline; latency is then from each order's actual send.
        #[arg(long)]
        throughput: bool,
        /// How the venue's gateway and engines talk: `unix` (Unix sockets, the default), `shm`
        /// (shared-memory rings, `[link] transport = "shm"`) or `tcp` (loopback TCP).
        #[arg(long, default_value = "unix")]
        link: baton::bench::venue::LinkChoice,
        /// `[link] spin_us` for the venue: microseconds a link reader spins before it sleeps.
        #[arg(long)]
        spin_us: Option<u64>,
        /// `[gateway] spin_us` for the venue: microseconds the gateway keeps polling its sockets
        /// after each order or engine answer before it sleeps.
        #[arg(long)]
        gateway_spin_us: Option<u64>,
        /// `[gateway] runtime_threads` for the venue: 1 runs the gateway on one thread.
        #[arg(long)]
        gateway_runtime_threads: Option<usize>,
        /// `[gateway] standby_batch_us` for the venue: how long inputs for the standby may be
        /// kept before they are written to it (0: written at once).
        #[arg(long)]
        gateway_standby_batch_us: Option<u64>,
        /// Ping-pong: each session keeps exactly one order in flight and sends the next when the
        /// answer arrives (the orders are still --rate × --duration); latency is from each
        /// actual send. With --peer quickfix --sessions 1 --mix new=1: baton ÷ QuickFIX the way
        /// a client sending one order at a time measures it.
        #[arg(long, conflicts_with = "throughput")]
        pingpong: bool,
        /// Orders per session answered but left out of the latency (warm-up).
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// SIGKILL the standby engine at S seconds and restart it empty, so it rejoins under load
        /// (by replaying the journal, or from the authoritative engine's snapshot, as the
        /// gateway chooses) (repeatable); own venue only.
        #[arg(long = "rejoin-at")]
        rejoin_at: Vec<f64>,
        /// SIGKILL the gateway at S seconds; its supervisor restarts it on the held connections
        /// (repeatable); own venue only.
        #[arg(long = "gateway-kill-at")]
        gateway_kill_at: Vec<f64>,
        /// A planned gateway upgrade (`ctl upgrade-gateway` under a change naming this build) at
        /// S seconds (repeatable); own venue only.
        #[arg(long = "gateway-upgrade-at")]
        gateway_upgrade_at: Vec<f64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Write report.json and the SVG plots here; the venue's scratch files go in DIR/venue.
        #[arg(long, default_value = "var/bench")]
        out: PathBuf,
    },
    /// Run the FIX gateway: acceptor, session layer, sequencer, journal and outbox.
    Gateway(GatewayArgs),
    /// Run a matching engine serving the engine link.
    Engine {
        /// Config file (its `[engine]` section); without it the embedded default is used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Link address to serve; defaults to `[gateway] engine`.
        #[arg(long)]
        listen: Option<String>,
        /// The engine's name in logs and change records ("blue", "green").
        #[arg(long, default_value = "blue")]
        name: String,
        /// Snapshot format version to write (it reads every version it knows). Write the format
        /// the build you may roll back to reads; defaults to the newest.
        #[arg(long, value_name = "N", default_value_t = baton::engine::SNAPSHOT_FORMAT_DEFAULT)]
        snapshot_format: u16,
        /// A deliberately broken build, for canary rehearsals and gate tests: every new order on
        /// SYMBOL the engine accepts is answered with a reject.
        #[arg(long, value_name = "SYMBOL")]
        fault_reject_symbol: Option<String>,
    },
    /// Work with the input journal.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Check a config file and print the sessions it defines.
    CheckConfig {
        /// Config file; without it the embedded default is checked.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Convert configurations from other engines.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Verify or print the hash-chained audit log of control actions (read-only).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run the seeded simulation of the gateway core, sessions and engines: many seeds, or one
    /// to replay a failure exactly. Prints seeds per second; exits non-zero on the first broken
    /// invariant, naming its seed.
    Sim {
        /// How many seeds to run, from --first.
        #[arg(long, default_value_t = 1_000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Replay exactly this one seed (overrides --seeds and --first).
        #[arg(long)]
        seed: Option<u64>,
        /// Random steps per seed.
        #[arg(long, default_value_t = baton::constants::SIM_STEPS_DEFAULT)]
        steps: usize,
    },
    /// Start a build only if its bytes hash to the SHA-256 a change names: the file is hashed
    /// and executed through one open descriptor, so nothing swapped in after the check runs.
    /// Replaces this process (ELF executables only); on a mismatch prints both hashes and
    /// exits non-zero without running anything.
    Launch {
        /// The SHA-256 the change names (64 hex digits).
        #[arg(long, value_name = "HEX")]
        sha256: String,
        /// The build to run; it is also the program's argv[0].
        path: PathBuf,
        /// Arguments for the build, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Work with build artifacts, as named in change records.
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
    },
    /// Ask a running gateway for its status; switch, canary or roll back engine authority;
    /// file, approve and report changes.
    Ctl {
        /// Config file whose `[gateway] control` address is used; without it the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The gateway's control address; overrides the config.
        #[arg(long, value_parser = baton::config::parse_socket_addr)]
        addr: Option<std::net::SocketAddr>,
        /// Who asks, as the audit log records it; defaults to $USER, $LOGNAME, then the account's login name.
        #[arg(long, global = true)]
        operator: Option<String>,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Write the baton TOML equivalent to a QuickFIX acceptor settings file; every key that
    /// could not be carried over is listed on stderr with the reason.
    ImportQuickfix {
        /// The QuickFIX settings file (`[DEFAULT]` and `[SESSION]` sections).
        file: PathBuf,
        /// Where to write the TOML; without it, stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Rebuild an engine from the journal alone and print its state digest.
    Replay {
        /// Config file (its `[engine]` section sets instruments and capacities).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Journal directory; defaults to `[gateway] journal_dir`.
        #[arg(long)]
        journal_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole chain; print the record count, the head (anchor it elsewhere) and any
    /// torn tail. Fails naming the first bad line.
    Verify {
        #[command(flatten)]
        log: AuditLogArgs,
        /// The head kept elsewhere (`SEQ:HASH`, as a previous verify printed it): fails unless
        /// record SEQ is still in the log with that hash, so records cut off the end or a
        /// rewritten chain are caught.
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<String>,
    },
    /// Move the records a verification refuses (the first bad line and everything after it)
    /// beside the log, and record who did it and why as the next record, so a gateway can start
    /// again on a trail that says what left it. The gateway must be stopped.
    Acknowledge {
        #[command(flatten)]
        log: AuditLogArgs,
        /// Who acknowledges, as the record names them.
        #[arg(long)]
        operator: String,
        /// Why it is safe to go on (what was found, who was told).
        #[arg(long)]
        reason: String,
    },
    /// Print one line per verified record (seq, UTC time, actor, event; with --json the lines as
    /// stored); fails after the last good record if the chain breaks.
    Show {
        #[command(flatten)]
        log: AuditLogArgs,
    },
    /// A change's record for compliance, drawn from the audit log alone (the gateway need not
    /// run); fails if the chain does not verify.
    Report {
        /// CHG-n.
        change: String,
        #[command(flatten)]
        log: AuditLogArgs,
    },
}

/// Which audit log an `audit` command reads, and how it prints.
#[derive(Args)]
struct AuditLogArgs {
    /// Audit log file; defaults to `audit.log` in `[gateway] journal_dir`.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Config file whose `[gateway] journal_dir` locates the log.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ArtifactCommand {
    /// Print `<sha256>  <absolute path>` of a build, the two things a change names.
    Hash {
        /// The build.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Print sessions, engines, the last switch and the shadow comparison.
    Status {
        /// Print the full status as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the same status, redrawn every second: sessions, engines and their lag,
    /// the canary's gate evidence, halts and the last switch. q, Esc or Ctrl-C quits; an
    /// unreachable gateway is shown and retried, not an exit.
    Watch,
    /// Move authority for every symbol to the standby engine at a barrier; prints the pause.
    /// Completes a running canary.
    Switch {
        /// The approved change this carries out (CHG-n).
        #[arg(long)]
        change: Option<String>,
    },
    /// End a running canary, or return authority to the engine that had it before the last
    /// switch. Never needs an approval.
    Rollback {
        /// The change being rolled back (CHG-n).
        #[arg(long)]
        change: Option<String>,
    },
    /// Move authority for some symbols to the standby; gates roll it back automatically.
    Canary {
        /// The approved change this carries out (CHG-n).
        #[arg(long)]
        change: Option<String>,
        /// Share of the venue's symbols, 1 to 100 (at least one symbol).
        #[arg(long, conflicts_with = "symbols")]
        percent: Option<u8>,
        /// Exactly these symbols, comma-separated.
        #[arg(long, value_delimiter = ',')]
        symbols: Vec<String>,
    },
    /// Restart a standby engine from the artifact of an approved change (under `baton up`, the
    /// supervisor does it through `baton launch`).
    Stage {
        /// The change whose artifact to run (CHG-n).
        #[arg(long)]
        change: String,
        /// The engine to restart ("green"); never the authoritative one.
        #[arg(long)]
        engine: String,
    },
    /// Replace the running gateway process by the artifact of an approved change (under `baton
    /// up`): sockets and sessions are handed over at a barrier, so counterparties see neither a
    /// disconnect nor a resend; prints the pause. A rollback is an upgrade to the previous
    /// build's change.
    UpgradeGateway {
        /// The approved change whose artifact to run (CHG-n).
        #[arg(long)]
        change: String,
    },
    /// Trade again on symbols halted after a release diverged, once they are reconciled.
    Resume {
        /// The halted symbols, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        symbols: Vec<String>,
    },
    /// File, approve, close, list and report changes.
    Change {
        #[command(subcommand)]
        command: ChangeCommand,
    },
}

#[derive(Subcommand)]
enum ChangeCommand {
    /// File a change naming an artifact (the engine build to deploy), a reason and a window.
    File {
        /// The artifact; hashed here and again by the gateway.
        #[arg(long)]
        artifact: PathBuf,
        /// The SHA-256 you expect; refused if the file hashes differently. Default: its hash now.
        #[arg(long)]
        sha256: Option<String>,
        /// Why, for the change record.
        #[arg(long)]
        reason: String,
        /// Window start, RFC 3339 UTC (default: now).
        #[arg(long)]
        window_start: Option<String>,
        /// Window end, RFC 3339 UTC (default: start plus --window-hours).
        #[arg(long)]
        window_end: Option<String>,
        /// Window length when --window-end is not given.
        #[arg(long, default_value_t = 4)]
        window_hours: u64,
        /// Symbols on which the new build is expected to answer differently (comma-separated):
        /// the canary gates judge them on reject rate and latency, not equality.
        #[arg(long, value_delimiter = ',')]
        expect_divergence_symbols: Vec<String>,
        /// Request types on which the new build is expected to answer differently, as MsgType
        /// or name (D or NewOrderSingle, F or OrderCancelRequest, G or OrderCancelReplaceRequest).
        #[arg(long, value_delimiter = ',')]
        expect_divergence_msg_types: Vec<String>,
    },
    /// Approve a change someone else filed.
    Approve {
        /// CHG-n.
        change: String,
    },
    /// Close a change: no further action may name it.
    Close {
        /// CHG-n.
        change: String,
    },
    /// Every change, one line each.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A change's full record with its evidence, for compliance.
    Report {
        /// CHG-n.
        change: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `baton gateway`: a config file and the keys the command line may override.
#[derive(Args)]
struct GatewayArgs {
    /// Config file; without it the embedded default (deploy/baton.toml) is used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `[gateway] listen` (use port 0 to pick a free port; the bound address is
    /// printed on stdout).
    #[arg(long, value_parser = baton::config::parse_socket_addr)]
    listen: Option<std::net::SocketAddr>,
    /// Overrides `[gateway] store_dir`.
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// Overrides `[gateway] engines` (`unix:///path` or `tcp://host:port`); repeat for a
    /// standby.
    #[arg(long = "engine")]
    engines: Vec<String>,
    /// Overrides `[gateway] journal_dir`.
    #[arg(long)]
    journal_dir: Option<PathBuf>,
    /// Overrides `[gateway] control` (loopback only; port 0 picks a free one).
    #[arg(long, value_parser = baton::config::parse_socket_addr)]
    control: Option<std::net::SocketAddr>,
    /// Serves Prometheus metrics on `GET /metrics` at ADDR, overriding `[gateway] metrics`
    /// (loopback only).
    #[arg(long, value_name = "ADDR", value_parser = baton::config::parse_socket_addr)]
    metrics: Option<std::net::SocketAddr>,
}

impl GatewayArgs {
    /// The config file (or the embedded default) with the command line's overrides.
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        let gateway = &mut config.gateway;
        gateway.listen = self.listen.unwrap_or(gateway.listen);
        if let Some(store_dir) = self.store_dir {
            gateway.store_dir = store_dir;
        }
        if !self.engines.is_empty() {
            gateway.engines = self.engines;
        }
        if let Some(journal_dir) = self.journal_dir {
            gateway.journal_dir = journal_dir;
        }
        gateway.control = self.control.unwrap_or(gateway.control);
        gateway.metrics = self.metrics.or(gateway.metrics);
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A format that cannot be read is the command's error, reported once logging is up.
    let (format, format_error) = match log_format(&cli) {
        Ok(format) => (format, None),
        Err(error) => (LogFormat::Text, Some(error)),
    };
    // Log lines leave through a queue and a thread of their own, so a closed or stalled stderr
    // pipe costs lines (counted), never the process; stderr directly only if that thread
    // cannot start.
    let log = baton::logging::LogWriter::stderr().ok();
    let writer = match &log {
        Some(log) => {
            log.set_format(format);
            BoxMakeWriter::new(log.clone())
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // The simulation's cores fail over and crash on purpose, thousands of times a second: their
    // log lines are noise unless asked for with RUST_LOG.
    let default_filter = if matches!(cli.command, Command::Sim { .. }) {
        "off"
    } else {
        "info"
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(writer)
        // Its own report of a failed write is an eprintln!, which panics on a closed pipe.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => subscriber
            // Colour only for a person at a terminal who has not turned it off, not escape
            // codes in a log file or pipe.
            .with_ansi(baton::logging::ansi_wanted(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .init(),
        LogFormat::Json => subscriber.json().with_ansi(false).init(),
    }
    let result = match format_error {
        Some(error) => Err(error),
        None => run(cli, format),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match (format, &log) {
                // JSON in, JSON out: the last line is an event like the others.
                (LogFormat::Json, _) => tracing::error!("{}", one_line(&error)),
                (LogFormat::Text, Some(log)) => {
                    log.line(format!("error: {}\n", one_line(&error)).as_bytes())
                }
                (LogFormat::Text, None) => {
                    let line = format!("error: {}\n", one_line(&error));
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
            }
            ExitCode::from(exit_code(&error))
        }
    };
    if let Some(log) = &log {
        log.flush();
    }
    code
}

/// The log format: `--log-format`, else [`LOG_FORMAT_ENV`] (how `baton up` tells its
/// children), else `[log] format` of the config a gateway, engine or venue runs with, else
/// text. A config that does not load counts as text here: the command itself reports why.
fn log_format(cli: &Cli) -> anyhow::Result<LogFormat> {
    if let Some(format) = cli.log_format {
        return Ok(format);
    }
    if let Some(value) = std::env::var_os(LOG_FORMAT_ENV).filter(|value| !value.is_empty()) {
        return value
            .to_str()
            .and_then(LogFormat::from_name)
            .with_context(|| {
                format!(
                    "{LOG_FORMAT_ENV}={} is not a log format (text or json)",
                    value.to_string_lossy()
                )
            });
    }
    let config = match &cli.command {
        Command::Up { config, .. }
        | Command::Gateway(GatewayArgs { config, .. })
        | Command::Engine { config, .. } => config,
        _ => return Ok(LogFormat::Text),
    };
    Ok(Config::load(config.as_deref())
        .map(|config| config.log.format)
        .unwrap_or_default())
}

/// Set once a long-running command (gateway, engine) has bound its sockets and opened its
/// files: an error before that is a start-up error that restarting will not fix.
static STARTED: AtomicBool = AtomicBool::new(false);

/// The exit status for `error`: [`constants::EXIT_FATAL_STARTUP`] when a gateway or engine
/// failed before it started serving (the supervisor then stops instead of restarting it), or
/// when `baton up` stopped because a child did; 1 otherwise.
fn exit_code(error: &anyhow::Error) -> u8 {
    let child_fatal = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<SupervisorError>(),
            Some(SupervisorError::FatalStartup { .. })
        )
    });
    if child_fatal
        || FATAL_IF_NOT_STARTED.load(Ordering::Relaxed) && !STARTED.load(Ordering::Relaxed)
    {
        constants::EXIT_FATAL_STARTUP
    } else {
        1
    }
}

/// Set by the commands whose start-up errors are fatal (gateway, engine); other commands exit 1.
static FATAL_IF_NOT_STARTED: AtomicBool = AtomicBool::new(false);

/// `error` and its causes as one line, for a person: each cause joined with ": ", except one
/// whose text the line already holds (a message that quotes its source), and no backtrace
/// whatever RUST_BACKTRACE says: a user error is one line.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    // Whatever the causes hold, the line stays one line.
    line.replace(['\n', '\r'], " ")
}

fn run(cli: Cli, log_format: LogFormat) -> anyhow::Result<()> {
    match cli.command {
        Command::Up {
            config,
            gateway_only,
        } => up(config, log_format, gateway_only),
        Command::Demo {
            sessions,
            dir,
            json,
        } => {
            let program = std::env::current_exe().context("locating the baton binary")?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("emptying {}", dir.display()))?;
            }
            let mut demo = baton::bench::demo::DemoConfig::demo(program, dir);
            demo.sessions = sessions;
            let report = baton::bench::demo::run(&demo, &|line| eprintln!("{line}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if !report.ok() {
                bail!("the demo saw a problem");
            }
            Ok(())
        }
        Command::Bench {
            sessions,
            rate,
            duration,
            mix,
            switch_every,
            kill_at,
            canary,
            verified_canary,
            hostile,
            hostile_at,
            venue_program,
            target,
            sender,
            target_comp_id,
            peer,
            throughput,
            link,
            spin_us,
            gateway_spin_us,
            gateway_runtime_threads,
            gateway_standby_batch_us,
            pingpong,
            warmup,
            rejoin_at,
            gateway_kill_at,
            gateway_upgrade_at,
            json,
            out,
        } => {
            let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
            let config = baton::bench::harness::BenchConfig {
                program: std::env::current_exe().context("locating the baton binary")?,
                dir: out.join("venue"),
                external: target.map(|addr| baton::bench::harness::External {
                    addr,
                    sender_prefix: sender,
                    target_comp_id,
                }),
                sessions,
                rate_per_s: rate,
                duration: secs(duration),
                mix: mix.parse()?,
                switch_every: switch_every.map(secs),
                kill_at: kill_at.into_iter().map(secs).collect(),
                progress_bar: !json,
                canary,
                verified_canary,
                hostile: hostile.map(|kind| (kind, secs(hostile_at.unwrap_or(duration / 2.0)))),
                venue_program,
                peer,
                throughput,
                link,
                spin_us,
                gateway_spin_us,
                gateway_runtime_threads,
                gateway_standby_batch_us,
                pingpong,
                warmup_orders: warmup,
                rejoin_at: rejoin_at.into_iter().map(secs).collect(),
                gateway_kill_at: gateway_kill_at.into_iter().map(secs).collect(),
                gateway_upgrade_at: gateway_upgrade_at.into_iter().map(secs).collect(),
            };
            let report = baton::bench::harness::run(&config)?;
            baton::bench::plot::write_all(&report, &out)
                .with_context(|| format!("writing plots to {}", out.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
                eprintln!("report and plots in {}", out.display());
            }
            if !report.complete() {
                bail!("orders were lost, duplicated or disconnected");
            }
            Ok(())
        }
        Command::Gateway(args) => {
            FATAL_IF_NOT_STARTED.store(true, Ordering::Relaxed);
            let config = args.into_config()?;
            let control = control::gateway_plane::GatewayControl::new(&config);
            let served = baton::gateway::run(&config, control);
            STARTED.store(
                served.as_ref().is_err_and(|e| !e.before_serving()),
                Ordering::Relaxed,
            );
            Ok(served?)
        }
        Command::Engine {
            config,
            listen,
            name,
            snapshot_format,
            fault_reject_symbol,
        } => engine(config, listen, name, snapshot_format, fault_reject_symbol),
        Command::Journal {
            command:
                JournalCommand::Replay {
                    config,
                    journal_dir,
                },
        } => journal_replay(config, journal_dir),
        Command::CheckConfig { config } => {
            let loaded = Config::load(config.as_deref())?;
            for session in loaded.session_configs("config")? {
                println!(
                    "{} -> {} ({})",
                    session.sender_comp_id,
                    session.target_comp_id,
                    if session.schedule.non_stop {
                        "non-stop"
                    } else {
                        "scheduled"
                    }
                );
            }
            MatchingEngine::new(&loaded.engine).context("[engine]")?;
            Ok(())
        }
        Command::Sim {
            seeds,
            first,
            seed,
            steps,
        } => sim(
            seed.map_or(first..first.saturating_add(seeds), |s| s..s + 1),
            steps,
        ),
        Command::Launch { sha256, path, args } => launch(&sha256, path, &args),
        Command::Artifact {
            command: ArtifactCommand::Hash { path },
        } => artifact_hash(&path),
        Command::Ctl {
            config,
            addr,
            operator,
            command,
        } => ctl(config, addr, operator, command),
        Command::Audit { command } => audit(command),
        Command::Config {
            command: ConfigCommand::ImportQuickfix { file, out },
        } => import_quickfix(&file, out.as_deref()),
    }
}

fn import_quickfix(file: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let result = baton::config::quickfix::import(&text, &file.display().to_string());
    let notes = match &result {
        Ok(import) => &import.notes[..],
        Err(_) => &[],
    };
    for note in notes {
        eprintln!("quickfix import: {note}");
    }
    let import = result.with_context(|| format!("importing {}", file.display()))?;
    match out {
        Some(path) => std::fs::write(path, &import.toml)
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{}", import.toml),
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn engine(
    config_path: Option<PathBuf>,
    listen: Option<String>,
    name: String,
    snapshot_format: u16,
    fault_reject_symbol: Option<String>,
) -> anyhow::Result<()> {
    FATAL_IF_NOT_STARTED.store(true, Ordering::Relaxed);
    let config = Config::load(config_path.as_deref())?;
    let listen = match listen.or(config.gateway.engines.first().cloned()) {
        Some(listen) => listen,
        None => bail!("no link address: pass --listen or set [gateway] engines"),
    };
    let listen: LinkAddr = listen.parse().context("engine link address")?;
    let listen = listen.with_transport(config.link.transport);
    let mut engine = MatchingEngine::with_snapshot_format(&config.engine, snapshot_format)
        .context("building the engine from [engine] and --snapshot-format")?;
    engine.touch_memory();
    let shutdown = Shutdown::new();
    let on_signal = shutdown.clone();
    std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(baton::gateway::assembly::wait_for_stop_signal());
        }
        on_signal.trigger();
    });
    // Which bytes this engine runs, for the gateway to check against the approved artifact.
    let executable_sha256 = control::artifact::self_sha256().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot hash this engine's executable; its Hello will not name it");
        String::new()
    });
    let link_secret = config.link.secret()?;
    if link_secret.is_none() && !listen.stays_on_host() {
        bail!(
            "engine link {listen} is reachable from other hosts: set [link] secret_file (the same secret as the gateway's) so the link authenticates its peer"
        );
    }
    if link_secret.is_none() && matches!(listen, LinkAddr::Tcp { .. }) {
        tracing::warn!(%listen, "engine link on TCP without [link] secret_file: any process on this host that can connect can feed this engine");
    }
    let serve_config = ServeConfig {
        engine_name: name,
        snapshot_formats: engine.snapshot_formats(),
        executable_sha256,
        link_secret,
        spin: config.link.spin(),
        ..ServeConfig::default()
    };
    match fault_reject_symbol {
        None => serve_engine(engine, &listen, &serve_config, &shutdown),
        Some(symbol) => {
            let symbol = baton::engine::Symbol::try_from_bytes(symbol.as_bytes())
                .with_context(|| format!("--fault-reject-symbol {symbol:?} is not a symbol"))?;
            tracing::warn!(
                symbol = symbol.as_str(),
                "running a deliberately faulty engine"
            );
            let engine = baton::engine::fault::RejectSymbol::new(engine, symbol);
            serve_engine(engine, &listen, &serve_config, &shutdown)
        }
    }
}

fn serve_engine<E: Engine>(
    engine: E,
    listen: &LinkAddr,
    serve_config: &ServeConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    tracing::info!(
        %listen,
        build = engine.build_version(),
        executable_sha256 = %serve_config.executable_sha256,
        "engine serving"
    );
    let listener = link::LinkListener::bind(listen)
        .with_context(|| format!("binding the engine link {listen}"))?;
    STARTED.store(true, Ordering::Relaxed);
    let engine = link::serve_on(engine, listener, serve_config, shutdown)
        .context("serving the engine link")?;
    tracing::info!(last_input_seq = engine.last_input_seq(), digest = %engine.digest(), "engine stopped");
    Ok(())
}

fn journal_replay(
    config_path: Option<PathBuf>,
    journal_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    let dir = journal_dir.unwrap_or(config.gateway.journal_dir.clone());
    let mut engine = MatchingEngine::new(&config.engine).context("[engine]")?;
    let count = baton::gateway::core::replay_journal(&dir, &mut engine)
        .with_context(|| format!("replaying journal {}", dir.display()))?;
    println!("inputs {count}");
    println!("last_input_seq {}", engine.last_input_seq());
    println!("digest {}", engine.digest());
    Ok(())
}

fn audit(command: AuditCommand) -> anyhow::Result<()> {
    let (AuditCommand::Verify { log, .. }
    | AuditCommand::Show { log }
    | AuditCommand::Acknowledge { log, .. }
    | AuditCommand::Report { log, .. }) = &command;
    let json = log.json;
    let path = match &log.file {
        Some(file) => file.clone(),
        None => {
            control::audit::default_path(&Config::load(log.config.as_deref())?.gateway.journal_dir)
        }
    };
    if let AuditCommand::Acknowledge {
        operator, reason, ..
    } = &command
    {
        return audit_acknowledge(&path, operator, reason);
    }
    let (records, report) = control::audit::read(&path)?;
    if let AuditCommand::Report { change, .. } = &command {
        if let Some(bad) = &report.first_bad {
            bail!(
                "audit log {} does not verify after {} good records ({bad}): no report from a broken chain",
                path.display(),
                report.records
            );
        }
        return audit_report(&records, &report, change, json);
    }
    match (&command, json) {
        (AuditCommand::Verify { .. }, true) => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        ),
        (AuditCommand::Verify { .. }, false) => print!("{}", report.render()),
        (AuditCommand::Show { .. }, true) => records.iter().for_each(|r| println!("{}", r.line())),
        (AuditCommand::Show { .. }, false) => {
            records.iter().for_each(|r| println!("{}", r.render()))
        }
        (AuditCommand::Report { .. } | AuditCommand::Acknowledge { .. }, _) => {}
    }
    if report.torn_tail_bytes > 0 {
        eprintln!(
            "WARNING: {} bytes after the last complete record are part of a record: an append interrupted by a crash, or an edit; the gateway cuts them when it opens the log, keeps them beside it and records the cut",
            report.torn_tail_bytes
        );
    }
    if report.newline_missing {
        eprintln!(
            "WARNING: the last record is whole and verifies but lacks its newline; the gateway completes it when it opens the log"
        );
    }
    if let AuditCommand::Verify {
        expect_head: Some(expected),
        ..
    } = &command
    {
        check_head(&records, &report, expected)?;
    }
    if let Some(bad) = report.first_bad {
        bail!(
            "audit log {} does not verify after {} good records: {bad}",
            path.display(),
            report.records
        );
    }
    Ok(())
}

/// Fails unless record SEQ of `expected` (`SEQ:HASH`) verified with that hash.
fn check_head(
    records: &[control::audit::RawAuditRecord],
    report: &control::audit::VerifyReport,
    expected: &str,
) -> anyhow::Result<()> {
    let Some((seq, hash)) = expected
        .split_once(':')
        .and_then(|(seq, hash)| Some((seq.trim().parse::<u64>().ok()?, hash.trim())))
    else {
        bail!("--expect-head {expected:?} is not SEQ:HASH (as `baton audit verify` prints them)");
    };
    match records.iter().find(|record| record.seq == seq) {
        Some(record) if record.hash.eq_ignore_ascii_case(hash) => Ok(()),
        Some(record) => bail!(
            "record {seq} has hash {}, not the expected head {hash}: the chain was rewritten",
            record.hash
        ),
        None => bail!(
            "the log's verified records end at seq {} ({}), before the expected head {seq}: records were cut off",
            report.head_seq,
            report.head_hash
        ),
    }
}

/// `baton audit acknowledge`: the refused bytes move aside, and the next record says so.
fn audit_acknowledge(path: &std::path::Path, operator: &str, reason: &str) -> anyhow::Result<()> {
    use baton::control::change::ControlEvent;
    let operator = operator.trim();
    if operator.is_empty() || reason.trim().is_empty() {
        bail!("an acknowledgement names its operator and a reason");
    }
    let control::audit::Acknowledged {
        mut log,
        moved,
        first_bad: bad,
        ..
    } = control::audit::acknowledge::<ControlEvent>(path)?;
    let event = ControlEvent::TamperAcknowledged {
        reason: reason.trim().to_owned(),
        first_bad: bad.to_string(),
        bytes: moved.bytes,
        kept: moved.kept.display().to_string(),
        sha256: moved.sha256.clone(),
        after_seq: moved.after_seq,
    };
    let record = log
        .append(baton::fix::time::Timestamp::now(), operator, event)
        .with_context(|| {
            format!(
                "the bad bytes are in {}, but the acknowledgement was not recorded",
                moved.kept.display()
            )
        })?;
    println!(
        "moved {} bytes after record {} ({bad}) to {} (sha256 {}); recorded as seq {} by {operator}",
        moved.bytes,
        moved.after_seq,
        moved.kept.display(),
        moved.sha256,
        record.seq
    );
    Ok(())
}

/// Names `baton up` gives its engines, in `[gateway] engines` order.
const ENGINE_NAMES: [&str; 2] = ["blue", "green"];

fn up(
    config_path: Option<PathBuf>,
    log_format: LogFormat,
    gateway_only: bool,
) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    // The children log as this process does, whichever of flag, variable or key chose it.
    let env: Vec<(OsString, OsString)> = vec![(LOG_FORMAT_ENV.into(), log_format.name().into())];
    let program = std::env::current_exe().context("locating the baton binary")?;
    let mut config_args: Vec<OsString> = Vec::new();
    if let Some(path) = &config_path {
        config_args.push("--config".into());
        config_args.push(path.into());
    }
    if config.gateway.engines.is_empty() {
        bail!("[gateway] engines must name at least one engine for `baton up`");
    }
    let mut children = Vec::new();
    let engines = if gateway_only {
        &[][..]
    } else {
        &config.gateway.engines[..]
    };
    for (index, addr) in engines.iter().enumerate() {
        if let Ok(LinkAddr::Unix(path) | LinkAddr::Shm(path)) = addr.parse::<LinkAddr>()
            && let Some(parent) = path.parent()
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let name = ENGINE_NAMES
            .get(index)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("engine{index}"));
        let mut args: Vec<OsString> = vec![
            "engine".into(),
            "--name".into(),
            name.clone().into(),
            "--listen".into(),
            addr.into(),
        ];
        args.extend(config_args.iter().cloned());
        children.push(ChildSpec {
            name: format!("engine-{name}"),
            program: program.clone(),
            args,
            env: env.clone(),
            stage: Some(control::supervisor::StageSource {
                dir: control::stage::stage_dir(&config.gateway.journal_dir),
                engine: name.clone(),
            }),
            hold_sockets: None,
            gateway_build_dir: None,
        });
    }
    // The supervisor asks the gateway before it restarts a standby for a staged build. A control
    // endpoint on port 0 has its port only once the gateway bound it, and the gateway says which
    // in its ready file: the one the caller named, or one beside the journal.
    let mut gateway_env = env;
    let control = if config.gateway.control.port() != 0 {
        ControlAddr::Fixed(config.gateway.control)
    } else {
        let path = std::env::var_os(control::ready::READY_FILE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| config.gateway.journal_dir.join("gateway.ready"));
        // A file left by an earlier run names a port nobody may listen on now, or another
        // process does.
        let _ = std::fs::remove_file(&path);
        gateway_env.push((
            control::ready::READY_FILE_ENV.into(),
            path.clone().into_os_string(),
        ));
        ControlAddr::ReadyFile(path)
    };
    let mut gateway_args: Vec<OsString> = vec!["gateway".into()];
    gateway_args.extend(config_args);
    // TLS connections are held too: a planned upgrade hands them over with their keys, and
    // the holder closes them when their gateway dies (their keys die with it).
    let hold_sockets = (config.gateway.hold_sockets_max_ms > 0)
        .then(|| Duration::from_millis(config.gateway.hold_sockets_max_ms));
    children.push(ChildSpec {
        name: "gateway".into(),
        program,
        args: gateway_args,
        env: gateway_env,
        stage: None,
        hold_sockets,
        gateway_build_dir: Some(control::stage::stage_dir(&config.gateway.journal_dir)),
    });
    runtime()?.block_on(supervise(
        children,
        Duration::from_millis(200),
        Some(control),
    ))?;
    Ok(())
}

fn ctl(
    config_path: Option<PathBuf>,
    addr: Option<std::net::SocketAddr>,
    operator: Option<String>,
    command: CtlCommand,
) -> anyhow::Result<()> {
    // A control endpoint on port 0 says where it listens in its ready file (the one `baton up`
    // names, or the one beside the journal); read again after a gateway upgrade.
    let ready_path = match addr {
        Some(_) => None,
        None => {
            let config = Config::load(config_path.as_deref())?;
            (config.gateway.control.port() == 0).then(|| {
                std::env::var_os(control::ready::READY_FILE_ENV)
                    .map(PathBuf::from)
                    .unwrap_or_else(|| config.gateway.journal_dir.join("gateway.ready"))
            })
        }
    };
    let addr = match (addr, &ready_path) {
        (Some(addr), _) => addr,
        (None, Some(path)) => control::ready::read(path)
            .map(|ready| ready.control)
            .with_context(|| format!("the gateway's ready file {}", path.display()))?,
        (None, None) => Config::load(config_path.as_deref())?.gateway.control,
    };
    let resolve = move || match &ready_path {
        Some(path) => control::ready::read(path).ok().map(|ready| ready.control),
        None => Some(addr),
    };
    let operator = operator.or_else(|| {
        ["USER", "LOGNAME"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
            // Root in a container has neither: the account's own login name, not a refusal.
            .or_else(control::peer::current_account_name)
    });
    let request = match &command {
        CtlCommand::Watch => return Ok(control::watch::run(addr)?),
        CtlCommand::Status { .. } => ControlRequest::Status,
        CtlCommand::Switch { change } => ControlRequest::Switch {
            operator,
            change: change.clone(),
        },
        CtlCommand::Rollback { change } => ControlRequest::Rollback {
            operator,
            change: change.clone(),
        },
        CtlCommand::Canary {
            change,
            percent,
            symbols,
        } => ControlRequest::Canary {
            operator,
            change: change.clone(),
            percent: *percent,
            symbols: symbols.clone(),
        },
        CtlCommand::Stage { change, engine } => ControlRequest::Stage {
            operator,
            change: change.clone(),
            engine: engine.clone(),
        },
        CtlCommand::Resume { symbols } => ControlRequest::Resume {
            operator,
            symbols: symbols.clone(),
        },
        CtlCommand::UpgradeGateway { change } => ControlRequest::UpgradeGateway {
            operator,
            change: change.clone(),
        },
        CtlCommand::Change { command } => change_request(operator, command)?,
    };
    let timeout = Duration::from_millis(baton::constants::CONTROL_CLIENT_TIMEOUT_MS);
    let reply = control::client::request(addr, &request, timeout)?;
    let json = match &command {
        CtlCommand::Status { json }
        | CtlCommand::Change {
            command: ChangeCommand::List { json } | ChangeCommand::Report { json, .. },
        } => *json,
        _ => false,
    };
    match reply {
        ControlReply::Refused { reason } => bail!("refused: {reason}"),
        ControlReply::Status(status) if json => println!(
            "{}",
            serde_json::to_string_pretty(&status).context("encoding the status")?
        ),
        ControlReply::Status(status) => print!("{}", control::client::render_status(&status)),
        ControlReply::Switched(report) => print!("{}", control::client::render_switch(&report)),
        ControlReply::Resumed { symbols } => println!("resumed {}", symbols.join(",")),
        ControlReply::GatewayHandingOver {
            change,
            artifact_sha256,
            barrier_unix_ns,
        } => {
            println!(
                "{change}: the gateway stopped at its barrier and hands over to the build with SHA-256 {artifact_sha256}"
            );
            let upgrade = wait_for_upgraded_gateway(&resolve, barrier_unix_ns)?;
            match upgrade.tls_closed {
                0 => println!(
                    "{change}: the upgraded gateway serves {} sessions; pause {} µs (no disconnect, no resend)",
                    upgrade.sessions, upgrade.pause_us
                ),
                // Said plainly: those counterparties reconnect and recover by resend.
                closed => println!(
                    "{change}: the upgraded gateway serves {} sessions; pause {} µs; {closed} TLS connections could not be handed over and were closed (they reconnect)",
                    upgrade.sessions, upgrade.pause_us
                ),
            }
        }
        ControlReply::Staged {
            engine,
            artifact_sha256,
        } => println!(
            "staged {engine}: it restarts from the build with SHA-256 {artifact_sha256} (under baton up; otherwise start it with baton launch)"
        ),
        ControlReply::Change(change) => {
            print!(
                "{}",
                control::client::render_changes(std::slice::from_ref(&change))
            )
        }
        ControlReply::Changes { changes } if json => println!(
            "{}",
            serde_json::to_string_pretty(&changes).context("encoding the changes")?
        ),
        ControlReply::Changes { changes } => {
            print!("{}", control::client::render_changes(&changes))
        }
        ControlReply::Report(report) if json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        ),
        ControlReply::Report(report) => print!("{}", report.render()),
    }
    Ok(())
}

/// Polls the gateway's status (wherever its ready file says it listens now) until the gateway
/// that took over at the barrier reports the upgrade.
fn wait_for_upgraded_gateway(
    resolve: &dyn Fn() -> Option<std::net::SocketAddr>,
    barrier_unix_ns: u64,
) -> anyhow::Result<control::api::GatewayUpgrade> {
    let deadline = std::time::Instant::now()
        + Duration::from_millis(baton::constants::CONTROL_CLIENT_TIMEOUT_MS);
    let ask = Duration::from_millis(baton::constants::CONTROL_WATCH_REQUEST_TIMEOUT_MS);
    loop {
        if let Some(addr) = resolve()
            && let Ok(ControlReply::Status(status)) =
                control::client::request(addr, &ControlRequest::Status, ask)
            && let Some(upgrade) = status
                .gateway_upgrade
                .filter(|u| u.barrier_unix_ns == barrier_unix_ns)
        {
            return Ok(*upgrade);
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "the upgraded gateway did not report serving in time: run `baton ctl status` (the previous one has exited)"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `baton audit report`: the change report from verified records alone.
fn audit_report(
    records: &[control::audit::RawAuditRecord],
    verified: &control::audit::VerifyReport,
    change: &str,
    json: bool,
) -> anyhow::Result<()> {
    use baton::control::change::{ControlEvent, parse_change, report};
    let events = records
        .iter()
        .map(|r| {
            serde_json::from_str::<ControlEvent>(&r.event_json)
                .with_context(|| format!("audit record {}: not an event this build knows", r.seq))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let drawn = report(
        records
            .iter()
            .zip(&events)
            .map(|(r, event)| (r.seq, r.time, r.actor.as_str(), event)),
        parse_change(change)?,
        (verified.head_seq, &verified.head_hash),
    )?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&drawn).context("encoding the report")?
        );
    } else {
        print!("{}", drawn.render());
    }
    Ok(())
}

/// `baton launch`: returns only if the build was not executed.
fn launch(sha256: &str, path: PathBuf, args: &[OsString]) -> anyhow::Result<()> {
    let artifact = control::artifact::Artifact {
        path,
        sha256: control::artifact::parse_sha256(sha256).context("--sha256")?,
    };
    let error = control::artifact::exec_verified(&artifact, args);
    bail!("refusing to launch: {error}")
}

/// `baton artifact hash`.
fn artifact_hash(path: &std::path::Path) -> anyhow::Result<()> {
    let artifact = control::artifact::Artifact::inspect(path)?;
    println!("{}  {}", artifact.sha256, artifact.path.display());
    Ok(())
}

/// The request for a `baton ctl change` command; a filing hashes the artifact here first, so a
/// wrong path is caught before the gateway is asked.
fn change_request(
    operator: Option<String>,
    command: &ChangeCommand,
) -> anyhow::Result<ControlRequest> {
    use baton::control::change::{parse_rfc3339, rfc3339};
    Ok(match command {
        ChangeCommand::File {
            artifact,
            sha256,
            reason,
            window_start,
            window_end,
            window_hours,
            expect_divergence_symbols,
            expect_divergence_msg_types,
        } => {
            let expected_divergence = baton::gateway::core::ExpectedDivergence::parse(
                expect_divergence_symbols,
                expect_divergence_msg_types,
            )
            .map_err(|error| anyhow::anyhow!("--expect-divergence: {error}"))?;
            let path = std::fs::canonicalize(artifact)
                .with_context(|| format!("artifact {}", artifact.display()))?;
            let sha256 = match sha256 {
                Some(sha256) => sha256.clone(),
                None => control::artifact::sha256_file(&path)
                    .with_context(|| format!("hashing {}", path.display()))?,
            };
            let start = match window_start {
                Some(text) => parse_rfc3339(text)?,
                None => baton::fix::time::Timestamp::now(),
            };
            let end = match window_end {
                Some(text) => parse_rfc3339(text)?,
                None => start.plus_millis(window_hours.saturating_mul(3_600_000)),
            };
            ControlRequest::ChangeFile {
                operator,
                artifact_path: path.display().to_string(),
                artifact_sha256: sha256,
                reason: reason.clone(),
                window_start: rfc3339(start),
                window_end: rfc3339(end),
                expected_divergence,
            }
        }
        ChangeCommand::Approve { change } => ControlRequest::ChangeApprove {
            operator,
            change: change.clone(),
        },
        ChangeCommand::Close { change } => ControlRequest::ChangeClose {
            operator,
            change: change.clone(),
        },
        ChangeCommand::List { .. } => ControlRequest::ChangeList,
        ChangeCommand::Report { change, .. } => ControlRequest::ChangeReport {
            change: change.clone(),
        },
    })
}

fn sim(seeds: std::ops::Range<u64>, steps: usize) -> anyhow::Result<()> {
    let config = baton::gateway::sim::SimConfig {
        steps,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut ran = 0u64;
    let (mut verified, mut wrong_answers) = (0u64, 0u64);
    for seed in seeds {
        if baton::gateway::sim::delivery_of(seed, &config)
            == baton::gateway::core::CanaryDelivery::Verified
        {
            verified += 1;
        }
        match baton::gateway::sim::run(seed, &config) {
            Ok(report) => wrong_answers += report.wrong_answers,
            Err(failure) => {
                // The trace is for a person reading it line by line; the error is the one-line
                // summary every command ends with.
                let _ = writeln!(std::io::stdout(), "{failure}");
                bail!(
                    "seed {seed} broke an invariant after {ran} seeds passed: {}",
                    failure.invariant
                );
            }
        }
        ran += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{ran} seeds passed in {seconds:.1}s ({:.0} seeds/s, {steps} steps each); {verified} with verified canaries, whose faulty engine answered wrongly {wrong_answers} times, none delivered",
        ran as f64 / seconds.max(f64::EPSILON)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_for_an_address_says_why_it_is_refused() {
        for args in [
            &["baton", "gateway", "--listen", "localhost:9878"][..],
            &["baton", "ctl", "--addr", "localhost:9878", "status"][..],
        ] {
            let error = match Cli::try_parse_from(args) {
                Ok(_) => panic!("{args:?} parsed"),
                Err(error) => error.to_string(),
            };
            assert!(
                error.contains("expected IP:PORT, host names are not accepted: localhost:9878"),
                "{error}"
            );
        }
    }

    #[test]
    fn an_error_is_one_line_with_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        // A message that already quotes its source, wrapped in a context that does not.
        let quoted = anyhow::Error::new(io).context("bind: Address already in use");
        let error = quoted.context("listening on 127.0.0.1:9878");
        assert_eq!(
            one_line(&error),
            "listening on 127.0.0.1:9878: bind: Address already in use"
        );
        let multiline = anyhow::anyhow!("first\nsecond");
        assert_eq!(one_line(&multiline), "first second");
    }
}
