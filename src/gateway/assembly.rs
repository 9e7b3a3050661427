//! [`run`]: one gateway process assembled from its configuration, so `main.rs` only parses
//! arguments and a test can start a gateway without spawning the binary.
//!
//! The assembly is the data plane: the sockets taken back from the holder, the sessions over
//! their stores, the core and its driver, the acceptor, and stopping them in order. The
//! control plane (admin endpoint, metrics, audit log, planned upgrades, systemd's readiness)
//! is `control`'s, which depends on the gateway and never the reverse: the caller passes it in
//! as a [`ControlHooks`], which `run` calls at three points — before the gateway says its
//! address, once it has, and when everything it needs to drive the gateway exists.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::acceptor::{Acceptor, AcceptorHandle, Inbound, Sessions};
use super::core::{Carried, Core, CoreConfig, CoreError, CoreEvent};
use super::driver::CoreCall;
use super::journal::JournalConfig;
use super::tls::{FixTls, TlsError};
use crate::config::{Config, ConfigError};
use crate::constants;
use crate::engine::Symbol;
use crate::fix::dictionary::Dictionary;
use crate::fix::session::Session;
use crate::fix::store::{MmapStore, StoreError};
use crate::handover::HolderLink;
use crate::link::{LinkAddr, LinkAddrError};
use crate::time::Timestamp;

/// What a control-plane hook failed with: the control plane's own typed error, boxed, so the
/// gateway names no control type.
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The control plane, as the gateway's assembly calls it. Implemented by `control`; a test
/// may pass one that does nothing.
pub trait ControlHooks: Send + 'static {
    /// Binds the control plane's own listeners. Called after the FIX listener is bound and
    /// before the gateway prints its address, so an address that is refused or taken stops
    /// the gateway before it takes traffic.
    fn bind(&mut self) -> impl Future<Output = Result<(), HookError>> + Send;

    /// The gateway listens on `listen` and said so: where a supervisor or a test learns the
    /// addresses (the ready file). A failure here is still a start-up failure.
    fn announce(&mut self, listen: SocketAddr) -> Result<(), HookError>;

    /// Starts the control plane over the assembled gateway (called inside the runtime, so it
    /// may spawn its tasks); from here on the gateway is serving.
    fn start(self, gateway: Assembled) -> Result<Started, HookError>;
}

/// What the control plane gets to drive the gateway with.
pub struct Assembled {
    /// Every configured session.
    pub sessions: Arc<Sessions<MmapStore>>,
    /// Where sessions send business requests to the sequencer; `None` without engines.
    pub business: Option<mpsc::Sender<Inbound>>,
    /// The acceptor, to stop or hand over.
    pub acceptor: AcceptorHandle,
    /// The socket holder, when one holds the sockets.
    pub holder: Option<Arc<HolderLink>>,
    /// Where the core takes operator commands; `None` without engines.
    pub core: Option<mpsc::Sender<CoreCall>>,
    /// The core's events for the audit log.
    pub events: mpsc::Receiver<CoreEvent>,
    /// Turns true when the gateway is stopping.
    pub shutdown: watch::Receiver<bool>,
    /// After a planned upgrade: when the previous gateway stopped reading (ns since the epoch)
    /// and the change, for the control plane to measure the pause.
    pub upgraded: Option<(u64, String)>,
    /// Logged-on connections taken back from the holder.
    pub adopted_sessions: usize,
    /// TLS connections the previous gateway could not hand over at a planned upgrade and closed.
    pub tls_closed_at_upgrade: u64,
    /// Whether the connections taken back wait for an engine before they are read: then
    /// [`Started::resume`] must open them.
    pub reads_wait_for_engine: bool,
}

/// What the control plane hands back when it started.
pub struct Started {
    /// Halted symbols and diverged engines from before a restart, for the core.
    pub carried: Carried,
    /// Turns true when connections taken back may be read (see
    /// [`Assembled::reads_wait_for_engine`]).
    pub resume: Option<watch::Receiver<bool>>,
    /// Completes when the gateway is to stop (for a process: SIGTERM or Ctrl-C, see
    /// [`wait_for_stop_signal`]); the acceptor then stops and the core shuts down. The control
    /// plane's, so a test running a gateway in its own process stops it without a signal.
    pub stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Why the gateway could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration does not describe a gateway.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A session store could not be opened.
    #[error("opening session store {}", dir.display())]
    Store {
        /// The store's directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// An engine address does not parse.
    #[error("[gateway] engines")]
    EngineAddr(#[source] LinkAddrError),
    /// An engine link would leave the host unauthenticated.
    #[error(
        "engine link {0} leaves this host: set [link] secret_file (the same secret as the engine's) so the link authenticates its peer"
    )]
    UnauthenticatedRemote(String),
    /// The link secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::link::auth::SecretError),
    /// The journal or the outbox cursor could not be opened.
    #[error("opening the sequencer")]
    Core(#[source] CoreError),
    /// The async runtime did not start.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The FIX listener could not be bound.
    #[error("listening on {addr}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key does not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The control plane could not bind or announce.
    #[error(transparent)]
    ControlStartup(HookError),
    /// The control plane could not start once the gateway was serving.
    #[error(transparent)]
    Control(HookError),
    /// The acceptor failed while serving.
    #[error("acceptor failed")]
    Acceptor(#[source] std::io::Error),
}

impl RunError {
    /// Whether the gateway failed before it started serving: restarting it will not help (the
    /// supervisor stops instead).
    pub fn before_serving(&self) -> bool {
        !matches!(self, RunError::Control(_) | RunError::Acceptor(_))
    }
}

/// Runs a gateway from `config` with `control` as its control plane, until the control plane's
/// [`Started::stop`] completes or a fatal error. Under `baton up` the sockets of a previous gateway process
/// are taken back first: its listening socket (no rebind) and its logged-on connections.
pub fn run<C: ControlHooks>(config: &Config, mut control: C) -> Result<(), RunError> {
    // First of all: a successor started for a planned upgrade waits here until the running
    // gateway handed over and exited, so the stores and addresses below are free.
    let (holder, mut taken) =
        crate::handover::take_back_held_sockets(config.gateway.tls_cert.is_some());
    let sessions = open_sessions(config)?;
    let core = match config.gateway.engines.is_empty() {
        false => Some(
            Core::open(sessions.clone(), core_config(config)?, Timestamp::now())
                .map_err(RunError::Core)?,
        ),
        true => {
            tracing::warn!(
                "no engines configured ([gateway] engines or --engine): sessions run, and every business message is refused (380=4)"
            );
            None
        }
    };
    let runtime = gateway_runtime(config.gateway.runtime_threads).map_err(RunError::Runtime)?;
    runtime.block_on(async move {
        let listen = config.gateway.listen;
        let (business_tx, business_rx) = mpsc::channel(constants::SEQUENCER_QUEUE_MAX);
        let business = core.as_ref().map(|_| business_tx);
        let held_listener = taken
            .listener
            .take()
            .map(std::net::TcpListener::from)
            .filter(|l| {
                l.local_addr()
                    .is_ok_and(|at| at == listen || (listen.port() == 0 && at.ip() == listen.ip()))
            });
        let connections_max = config.gateway.connections_max;
        let (mut acceptor, handle) = match held_listener {
            Some(listener) => Acceptor::from_listener(
                listener,
                sessions.clone(),
                business.clone(),
                connections_max,
            ),
            None => {
                Acceptor::bind(listen, sessions.clone(), business.clone(), connections_max).await
            }
        }
        .map_err(|source| RunError::Listen {
            addr: listen,
            source,
        })?;
        let adopted_sessions = taken.connections.iter().filter(|c| c.1.is_some()).count();
        acceptor.set_carries(std::mem::take(&mut taken.carries));
        acceptor.set_tls_carries(std::mem::take(&mut taken.tls));
        let tls_closed_at_upgrade = taken.tls_closed;
        if let Some(holder) = &holder {
            acceptor.set_holder(holder.clone(), std::mem::take(&mut taken.connections));
        }
        acceptor.set_prelogon_limits(
            config.gateway.prelogon_connections_max,
            config.gateway.prelogon_connections_per_address_max,
        );
        // Loaded before the address line: a certificate that does not load is a start-up error.
        acceptor.set_tls(FixTls::from_config(&config.gateway)?);
        control.bind().await.map_err(RunError::ControlStartup)?;
        // Written, not println!-ed: a closed stdout must not panic the gateway.
        let _ = writeln!(
            std::io::stdout(),
            "baton gateway listening on {}",
            handle.local_addr()
        );
        control
            .announce(handle.local_addr())
            .map_err(RunError::ControlStartup)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (core_control_tx, core_control_rx) = mpsc::channel(constants::CORE_COMMANDS_QUEUE_MAX);
        let (events_tx, events_rx) = mpsc::channel(constants::CONTROL_EVENTS_MAX);
        let started = control
            .start(Assembled {
                sessions,
                business,
                acceptor: handle.clone(),
                holder,
                core: core.as_ref().map(|_| core_control_tx),
                events: events_rx,
                shutdown: shutdown_rx.clone(),
                upgraded: taken.upgraded.take(),
                adopted_sessions,
                tls_closed_at_upgrade,
                reads_wait_for_engine: acceptor.has_adopted() && core.is_some(),
            })
            .map_err(RunError::Control)?;
        if let Some(resume) = started.resume {
            acceptor.set_resume_gate(resume);
        }
        let core_task = core.map(|core| {
            tokio::spawn(super::driver::run(
                core.with_carried(&started.carried),
                events_tx,
                business_rx,
                core_control_rx,
                shutdown_rx,
                Duration::from_micros(config.gateway.spin_us),
                config.gateway.standby_sched_batch,
            ))
        });
        let stop = started.stop;
        tokio::spawn(async move {
            stop.await;
            tracing::info!("shutting down");
            handle.shutdown();
        });
        let result = acceptor.run().await.map_err(RunError::Acceptor);
        let _ = shutdown_tx.send(true);
        if let Some(task) = core_task {
            let _ = task.await;
        }
        result
    })
}

/// The gateway's async runtime with `threads` threads (`[gateway] runtime_threads`).
///
/// 0: a multi-thread runtime with a worker per core (the default). 1: a current-thread runtime:
/// the connection tasks, the core's driver and the engine-link readers all run on the thread
/// that polls the sockets, so when a connection hands a request to the driver, or the driver
/// wakes a connection to write an answer, the woken task is queued on this thread instead of a
/// sibling worker being woken from its sleep; with one order in flight each such hand-off is a
/// cross-thread wake-up on the order's path. Engine-link liveness then waits on session work
/// for at most one bounded step (a connection's work per wake-up is bounded, and tokio's
/// cooperative budget yields a task that keeps finding work), but any stall of the one thread
/// stops everything. More: a multi-thread runtime with that many workers.
pub fn gateway_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        0 => tokio::runtime::Builder::new_multi_thread(),
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    builder.enable_all().build()
}

/// Every configured session over its memory-mapped store.
fn open_sessions(config: &Config) -> Result<Arc<Sessions<MmapStore>>, RunError> {
    let dictionary = Dictionary::venue();
    let mut sessions = Vec::new();
    for session_config in config.session_configs("config")? {
        let dir = config.gateway.store_dir.join(format!(
            "{}-{}",
            session_config.sender_comp_id, session_config.target_comp_id
        ));
        let store = MmapStore::open(&dir, config.gateway.durability)
            .map_err(|source| RunError::Store { dir, source })?;
        sessions.push(Session::new(session_config, store, dictionary));
    }
    Ok(Sessions::with_venue(sessions, config.venue.clone()))
}

/// The core's configuration; an engine link that leaves the host must authenticate.
fn core_config(config: &Config) -> Result<CoreConfig, RunError> {
    let engines = config
        .gateway
        .engines
        .iter()
        .map(|engine| {
            engine
                .parse::<LinkAddr>()
                .map(|addr| addr.with_transport(config.link.transport))
                .map_err(RunError::EngineAddr)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if config.link.secret_file.is_none()
        && let Some(remote) = engines.iter().find(|engine| !engine.stays_on_host())
    {
        return Err(RunError::UnauthenticatedRemote(remote.to_string()));
    }
    Ok(CoreConfig {
        engines,
        failover_timeout: Duration::from_millis(config.gateway.failover_timeout_ms),
        journal_dir: config.gateway.journal_dir.clone(),
        journal: JournalConfig {
            durability: config.gateway.durability,
            segment_bytes: config.gateway.journal_segment_bytes,
        },
        symbols: config
            .engine
            .instruments
            .iter()
            .filter_map(|i| Symbol::try_from_bytes(i.symbol.as_bytes()))
            .collect(),
        gates: config.control.gates.core(),
        canary_delivery: config.control.canary_delivery,
        link_secret: config.link.secret()?,
        link_spin: config.link.spin(),
        standby_batch: Duration::from_micros(config.gateway.standby_batch_us),
    })
}

/// Returns on SIGTERM or Ctrl-C: how a gateway or an engine process is asked to stop.
pub async fn wait_for_stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;

    /// What the test's control plane saw, in order.
    enum Seen {
        Bind,
        Announce(SocketAddr),
        Start {
            acceptor: AcceptorHandle,
            core: bool,
            business: bool,
        },
    }

    /// A control plane that reports each call and stops the gateway when told.
    struct Recorder {
        seen: std_mpsc::Sender<Seen>,
        stop: Option<tokio::sync::oneshot::Receiver<()>>,
    }

    impl ControlHooks for Recorder {
        async fn bind(&mut self) -> Result<(), HookError> {
            let _ = self.seen.send(Seen::Bind);
            Ok(())
        }

        fn announce(&mut self, listen: SocketAddr) -> Result<(), HookError> {
            let _ = self.seen.send(Seen::Announce(listen));
            Ok(())
        }

        fn start(mut self, gateway: Assembled) -> Result<Started, HookError> {
            let _ = self.seen.send(Seen::Start {
                acceptor: gateway.acceptor.clone(),
                core: gateway.core.is_some(),
                business: gateway.business.is_some(),
            });
            let stop = self.stop.take().expect("started once");
            Ok(Started {
                carried: Carried::default(),
                resume: None,
                stop: Box::pin(async move {
                    let _ = stop.await;
                }),
            })
        }
    }

    #[test]
    fn one_runtime_thread_is_a_current_thread_runtime_and_the_default_has_workers() {
        use tokio::runtime::RuntimeFlavor;
        let flavor = |threads| {
            gateway_runtime(threads)
                .expect("a runtime")
                .handle()
                .runtime_flavor()
        };
        assert_eq!(
            flavor(constants::GATEWAY_RUNTIME_THREADS_DEFAULT),
            RuntimeFlavor::MultiThread
        );
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::MultiThread);
    }

    #[test]
    fn a_gateway_runs_in_this_process_with_a_control_plane_of_the_callers_and_stops_when_it_says() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = Config::load(None).expect("the embedded config");
        config.gateway.listen = "127.0.0.1:0".parse().expect("an address");
        config.gateway.store_dir = dir.path().join("store");
        config.gateway.journal_dir = dir.path().join("journal");
        config.gateway.engines.clear();
        let (seen_tx, seen) = std_mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let recorder = Recorder {
            seen: seen_tx,
            stop: Some(stop_rx),
        };
        let (done_tx, done) = std_mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(run(&config, recorder).map_err(|e| e.to_string()));
        });
        let wait = Duration::from_secs(60);
        let next = || {
            seen.recv_timeout(wait)
                .expect("the control plane is called")
        };
        assert!(matches!(next(), Seen::Bind));
        let Seen::Announce(listen) = next() else {
            panic!("announced second");
        };
        let Seen::Start {
            acceptor,
            core,
            business,
        } = next()
        else {
            panic!("started third");
        };
        assert_eq!(acceptor.local_addr(), listen);
        assert!(!core && !business, "no engines configured, no core");
        std::net::TcpStream::connect(listen).expect("the gateway accepts connections");
        stop_tx.send(()).expect("the gateway waits for its stop");
        let result = done.recv_timeout(wait).expect("the gateway stopped");
        assert_eq!(result, Ok(()));
    }
}
