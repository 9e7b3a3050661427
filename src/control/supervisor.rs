//! Runs baton's processes (engines, gateway) as children and keeps them running.
//!
//! A child that exits while the supervisor is not shutting down is restarted after a short,
//! growing back-off (so a child that cannot start does not spin the machine). Ctrl-C or SIGTERM
//! forwards SIGTERM to every child, waits for them to finish their clean shutdown (the gateway
//! logs its sessions out), and kills what is still running after the grace period.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::constants;

/// One process to run.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    /// Name in logs ("engine-blue", "gateway").
    pub name: String,
    /// The program; usually the running `baton` binary itself.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// Why supervision stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A child could not be started at all (missing binary, permissions).
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// The child's name.
        name: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// A running child and its restart bookkeeping.
struct Supervised {
    /// What to run.
    spec: ChildSpec,
    /// The process, while it runs.
    child: Option<Child>,
    /// Consecutive quick failures, for the back-off.
    failures: u32,
    /// When the current process started.
    started: tokio::time::Instant,
}

fn spawn(spec: &ChildSpec) -> Result<Child, SupervisorError> {
    let child = Command::new(&spec.program)
        .args(&spec.args)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SupervisorError::Spawn {
            name: spec.name.clone(),
            source,
        })?;
    tracing::info!(child = %spec.name, pid = child.id(), "started");
    Ok(child)
}

/// Sends SIGTERM: std and tokio only offer SIGKILL, which would skip the clean shutdown.
fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) has no memory-safety preconditions; a stale pid at worst signals
        // nothing (the child was reaped) because tokio has not yet reaped this one.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// Runs `specs` (started in order, `start_gap` apart) until Ctrl-C or SIGTERM.
pub async fn supervise(specs: Vec<ChildSpec>, start_gap: Duration) -> Result<(), SupervisorError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?;
    let mut terminate_signal = signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?;
    let mut children = Vec::with_capacity(specs.len());
    for spec in specs {
        let child = spawn(&spec)?;
        children.push(Supervised {
            spec,
            child: Some(child),
            failures: 0,
            started: tokio::time::Instant::now(),
        });
        tokio::time::sleep(start_gap).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(constants::SUPERVISOR_POLL_MS));
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate_signal.recv() => break,
            _ = tick.tick() => {}
        }
        for supervised in &mut children {
            let exited = match supervised.child.as_mut() {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => Some(status.to_string()),
                    Ok(None) => None,
                    Err(error) => Some(error.to_string()),
                },
                None => None,
            };
            if let Some(status) = exited {
                supervised.child = None;
                let ran_for = supervised.started.elapsed();
                if ran_for > Duration::from_secs(10) {
                    supervised.failures = 0;
                }
                supervised.failures += 1;
                let backoff = Duration::from_millis(
                    (constants::SUPERVISOR_BACKOFF_MS << supervised.failures.min(6))
                        .min(constants::SUPERVISOR_BACKOFF_MAX_MS),
                );
                tracing::warn!(child = %supervised.spec.name, %status, ?backoff, "exited; restarting");
                tokio::time::sleep(backoff).await;
                supervised.child = Some(spawn(&supervised.spec)?);
                supervised.started = tokio::time::Instant::now();
            }
        }
    }
    tracing::info!("shutting down children");
    // Gateway first (it is last in start order) so sessions are logged out while engines still
    // answer; then the engines.
    for supervised in children.iter_mut().rev() {
        if let Some(mut child) = supervised.child.take() {
            terminate(&child);
            let grace = Duration::from_millis(constants::SUPERVISOR_GRACE_MS);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(_) => tracing::info!(child = %supervised.spec.name, "stopped"),
                Err(_) => {
                    tracing::warn!(child = %supervised.spec.name, "did not stop in time; killing");
                    let _ = child.kill().await;
                }
            }
        }
    }
    Ok(())
}
