//! The control plane of a gateway process: what [`crate::gateway::assembly::run`] calls through
//! [`ControlHooks`], so the gateway's assembly needs nothing from `control`.
//!
//! It binds the control endpoint and the metrics endpoint before the gateway takes traffic,
//! writes the ready file, opens the audit log and the control plane, starts the planned-upgrade
//! machinery when a supervisor holds the sockets, reports to systemd, and opens connections
//! taken back from the holder once an engine is attached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::api::GatewayUpgrade;
use super::endpoint::{ControlCommand, ControlEndpoint, ControlError};
use super::metrics::{MetricsEndpoint, MetricsError};
use super::plane::{Plane, PlaneConfig, PlaneError};
use super::upgrade::Upgrader;
use crate::config::{Config, ConfigError};
use crate::constants;
use crate::gateway::assembly::{Assembled, ControlHooks, HookError, Started};
use crate::sd_notify::Notifier;
use crate::time::Timestamp;

/// Why the control plane of a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayControlError {
    /// The configuration's sessions do not load (for the metrics' session windows).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The control endpoint's address is refused or taken.
    #[error("[gateway] control {addr}")]
    Endpoint {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: ControlError,
    },
    /// The metrics endpoint's address is refused or taken.
    #[error("[gateway] metrics {addr}")]
    Metrics {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: MetricsError,
    },
    /// The ready file could not be written.
    #[error("{} {}", super::ready::READY_FILE_ENV, path.display())]
    Ready {
        /// Where it was to go.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The audit log or the change book could not be opened.
    #[error("starting the control plane")]
    Plane(#[source] PlaneError),
}

/// The control plane of one gateway process, between [`ControlHooks`] calls.
pub struct GatewayControl {
    /// The gateway's configuration.
    config: Config,
    /// Audit log, policy and build, for the plane.
    plane: PlaneConfig,
    /// Bound by [`ControlHooks::bind`].
    endpoint: Option<ControlEndpoint>,
    /// Bound by [`ControlHooks::bind`] when `[gateway] metrics` is set.
    metrics: Option<MetricsEndpoint>,
}

impl GatewayControl {
    /// The control plane `config` asks for; nothing is bound or opened yet.
    pub fn new(config: &Config) -> GatewayControl {
        let plane = PlaneConfig {
            audit_path: config.control.audit_path(&config.gateway.journal_dir),
            policy: config.control.policy(),
            build: format!("baton {}", env!("CARGO_PKG_VERSION")),
            stage_dir: super::stage::stage_dir(&config.gateway.journal_dir),
        };
        GatewayControl {
            config: config.clone(),
            plane,
            endpoint: None,
            metrics: None,
        }
    }

    async fn bind_endpoints(&mut self) -> Result<(), GatewayControlError> {
        let addr = self.config.gateway.control;
        let endpoint = super::endpoint::bind(addr)
            .await
            .map_err(|source| GatewayControlError::Endpoint { addr, source })?;
        tracing::info!(control = %endpoint.local_addr(), "control endpoint ready");
        self.endpoint = Some(endpoint);
        if let Some(addr) = self.config.gateway.metrics {
            let windows = self
                .config
                .session_configs("config")?
                .into_iter()
                .map(|session| (session.target_comp_id, session.schedule))
                .collect();
            let metrics = super::metrics::bind(addr)
                .await
                .map_err(|source| GatewayControlError::Metrics { addr, source })?
                .with_session_windows(windows)
                .with_audit_log(
                    self.plane.audit_path.clone(),
                    Duration::from_millis(constants::METRICS_AUDIT_VERIFY_INTERVAL_MS),
                );
            tracing::info!(metrics = %metrics.local_addr(), "metrics endpoint ready");
            self.metrics = Some(metrics);
        }
        Ok(())
    }

    fn write_ready_file(&self, listen: SocketAddr) -> Result<(), GatewayControlError> {
        let (Some(path), Some(endpoint)) = (
            std::env::var_os(super::ready::READY_FILE_ENV),
            self.endpoint.as_ref(),
        ) else {
            return Ok(());
        };
        let ready = super::ready::Ready {
            listen,
            control: endpoint.local_addr(),
            metrics: self.metrics.as_ref().map(|m| m.local_addr()),
        };
        super::ready::write(path.as_ref(), &ready).map_err(|source| GatewayControlError::Ready {
            path: path.into(),
            source,
        })
    }

    fn start_plane(self, gateway: Assembled) -> Result<Started, GatewayControlError> {
        let Assembled {
            sessions,
            business,
            acceptor,
            holder,
            core,
            events,
            shutdown,
            upgraded,
            adopted_sessions,
            tls_closed_at_upgrade,
            reads_wait_for_engine,
        } = gateway;
        let engines_configured = core.is_some();
        // endpoint -> control plane (policy, audit) -> sequencer; sequencer events -> plane.
        let (commands_tx, commands_rx) =
            mpsc::channel::<ControlCommand>(constants::CONTROL_COMMANDS_QUEUE_MAX);
        let mut plane =
            Plane::open(&self.plane, core.clone()).map_err(GatewayControlError::Plane)?;
        // A planned upgrade needs the supervisor: it starts the new build and holds every
        // socket while the two processes change places.
        if let Some(holder) = holder.filter(|h| h.is_supervised()) {
            let (upgrade_tx, upgrade_rx) = mpsc::channel(1);
            plane.set_upgrader(upgrade_tx);
            let upgrader = Upgrader::new(holder, acceptor, sessions, business, core);
            tokio::spawn(upgrader.run(upgrade_rx));
        }
        // `baton up` could not run the build the last planned upgrade recorded: said in status.
        if let Some(reason) =
            std::env::var_os(crate::control::supervisor::GATEWAY_BUILD_FALLBACK_ENV)
                .map(|reason| reason.to_string_lossy().into_owned())
                .filter(|reason| !reason.is_empty())
        {
            tracing::error!(%reason, "running the configured binary, not the upgraded build");
            plane.set_build_fallback(reason);
        }
        // Taken over at a planned upgrade: the pause is measured once the sessions read again.
        let upgraded = upgraded.map(|(barrier_unix_ns, change)| {
            let (measured_tx, measured_rx) = oneshot::channel();
            plane.set_upgraded(measured_rx);
            (barrier_unix_ns, change, measured_tx)
        });
        let measure = move || {
            if let Some((barrier_unix_ns, change, measured_tx)) = upgraded {
                let now = Timestamp::now();
                let _ = measured_tx.send(GatewayUpgrade {
                    change,
                    artifact_sha256: String::new(),
                    barrier_unix_ns,
                    pause_us: now.since(Timestamp(barrier_unix_ns)).as_micros() as u64,
                    sessions: adopted_sessions as u64,
                    tls_closed: tls_closed_at_upgrade,
                });
            }
        };
        // systemd (Type=notify): READY=1 once an engine is attached, WATCHDOG=1, STOPPING=1.
        let notifier = Notifier::from_env().unwrap_or_else(|error| {
            tracing::warn!(%error, "not notifying systemd");
            Notifier::default()
        });
        tokio::spawn(crate::sd_notify::gateway_lifecycle(
            notifier.clone(),
            commands_tx.clone(),
            engines_configured,
            shutdown.clone(),
        ));
        // Scrapes ask for status down the same channel as `baton ctl status`.
        if let Some(metrics) = self.metrics {
            tokio::spawn(metrics.run(commands_tx.clone(), shutdown.clone()));
        }
        if let Some(endpoint) = self.endpoint {
            tokio::spawn(endpoint.run(commands_tx.clone(), shutdown.clone()));
        }
        let carried = plane.carried().clone();
        tokio::spawn(plane.run(commands_rx, events, shutdown));
        // Connections taken back from the holder are read once an engine is attached.
        let resume = if reads_wait_for_engine {
            let (open_tx, open_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                let wait = Duration::from_millis(constants::RESUME_ENGINE_WAIT_MS);
                let _ = tokio::time::timeout(wait, crate::sd_notify::engine_attached(commands_tx))
                    .await;
                let _ = open_tx.send(true);
                measure();
            });
            Some(open_rx)
        } else {
            measure();
            None
        };
        Ok(Started {
            carried,
            resume,
            stop: Box::pin(async move {
                crate::gateway::assembly::wait_for_stop_signal().await;
                notifier.stopping();
            }),
        })
    }
}

impl ControlHooks for GatewayControl {
    async fn bind(&mut self) -> Result<(), HookError> {
        Ok(self.bind_endpoints().await?)
    }

    fn announce(&mut self, listen: SocketAddr) -> Result<(), HookError> {
        Ok(self.write_ready_file(listen)?)
    }

    fn start(self, gateway: Assembled) -> Result<Started, HookError> {
        Ok(self.start_plane(gateway)?)
    }
}
