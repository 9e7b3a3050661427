//! Telling systemd how the gateway is doing, so a `Type=notify` unit means something: `READY=1`
//! once counterparties can trade (listening, and an engine attached when engines are
//! configured), `WATCHDOG=1` while the control plane and the sequencer still answer, and
//! `STOPPING=1` when a shutdown begins. As a unit's main process (not under `baton up`, whose
//! supervisor holds the sockets instead) the gateway also stores its listening socket and every
//! connection in systemd's file descriptor store (`FDSTORE=1`, see [`crate::handover`]), so a
//! restart of the unit after a crash takes them back.
//!
//! The protocol is one datagram per state change to the Unix socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading `@`); without the variable every call
//! does nothing, so the same binary runs under systemd, under `baton up`, or by hand. This is
//! the whole of what the gateway needs from libsystemd, written out rather than linked.
//!
//! Under `baton up` the gateway is a child of the unit's main process: the unit sets
//! `NotifyAccess=all` and the gateway answers for the venue, including the watchdog that systemd
//! arms for the main process (`WATCHDOG_PID` is then the gateway's parent).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::control::api::EngineRole;
use crate::control::endpoint::ControlCommand;

/// Why a notification could not be sent. Never fatal: a service manager that cannot be told is
/// no reason to stop trading, so callers log it.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is set but empty or not a usable address.
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an @abstract name")]
    BadAddress(String),
    /// The datagram could not be sent.
    #[error("notifying systemd at {target}: {source}")]
    Send {
        /// The address from `$NOTIFY_SOCKET`.
        target: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// Where notifications go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// An abstract socket name, without the leading `@` (a NUL on the wire).
    Abstract(Vec<u8>),
}

/// A handle for sending notifications; cheap to clone, does nothing when not under systemd.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` describes; a notifier that does nothing when it is unset.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier::default()),
            Some(value) => Notifier::for_address(&value.to_string_lossy()),
        }
    }

    /// The notifier for one `$NOTIFY_SOCKET` value: `/abs/path` or `@abstract`.
    pub fn for_address(address: &str) -> Result<Notifier, NotifyError> {
        let target = if let Some(name) = address.strip_prefix('@') {
            if name.is_empty() {
                return Err(NotifyError::BadAddress(address.into()));
            }
            Target::Abstract(name.as_bytes().to_vec())
        } else if address.starts_with('/') {
            Target::Path(PathBuf::from(address))
        } else {
            return Err(NotifyError::BadAddress(address.into()));
        };
        Ok(Notifier {
            target: Some(target),
        })
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments) as one datagram.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let describe = || match target {
            Target::Path(path) => path.display().to_string(),
            Target::Abstract(name) => format!("@{}", String::from_utf8_lossy(name)),
        };
        let send = || -> std::io::Result<()> {
            let socket = UnixDatagram::unbound()?;
            match target {
                Target::Path(path) => socket.send_to(state.as_bytes(), path)?,
                Target::Abstract(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    socket.send_to_addr(state.as_bytes(), &address)?
                }
            };
            Ok(())
        };
        send().map_err(|source| NotifyError::Send {
            target: describe(),
            source,
        })
    }

    /// Sends `state` with `fd` attached (`SCM_RIGHTS`), as `FDSTORE=1` needs: systemd keeps a
    /// duplicate of the descriptor for the unit's next start. Without `fd`, as [`Notifier::notify`].
    pub fn notify_with_fd(
        &self,
        state: &str,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let Some(fd) = fd else {
            return self.notify(state);
        };
        let send = || -> std::io::Result<()> {
            use std::os::fd::AsFd;
            let socket = UnixDatagram::unbound()?;
            match target {
                Target::Path(path) => socket.connect(path)?,
                Target::Abstract(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    socket.connect_addr(&address)?
                }
            };
            crate::handover::send_bytes(socket.as_fd(), state.as_bytes(), Some(fd)).map_err(
                |error| match error {
                    crate::handover::HandoverError::Io(error) => error,
                    other => std::io::Error::other(other.to_string()),
                },
            )
        };
        send().map_err(|source| NotifyError::Send {
            target: match target {
                Target::Path(path) => path.display().to_string(),
                Target::Abstract(name) => format!("@{}", String::from_utf8_lossy(name)),
            },
            source,
        })
    }

    /// `STOPPING=1`, logged rather than returned: called on the way out.
    pub fn stopping(&self) {
        if let Err(error) = self.notify("STOPPING=1\nSTATUS=shutting down") {
            tracing::warn!(%error, "systemd not told the gateway is stopping");
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as systemd asks, when the watchdog
/// is meant for this process (`$WATCHDOG_PID` unset, ours, or our parent's under `baton up`).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        let pid: u32 = pid.parse().ok()?;
        let parent = std::os::unix::process::parent_id();
        if pid != std::process::id() && pid != parent {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(crate::constants::WATCHDOG_INTERVAL_MIN))
}

/// Returns once the control plane reports an authoritative engine: when a restarted gateway may
/// read the connections it took back from the socket holder (see
/// [`crate::gateway::Acceptor::set_resume_gate`]).
pub async fn engine_attached(commands: mpsc::Sender<ControlCommand>) {
    loop {
        let attached = crate::control::metrics::fetch_status(
            &commands,
            crate::constants::NOTIFY_STATUS_TIMEOUT,
        )
        .await
        .is_ok_and(|status| {
            status
                .engines
                .iter()
                .any(|engine| engine.role == EngineRole::Authoritative)
        });
        if attached || commands.is_closed() {
            return;
        }
        tokio::time::sleep(crate::constants::NOTIFY_READY_POLL).await;
    }
}

/// The gateway's side of the conversation, run as a task once it listens: `READY=1` when it can
/// serve (with `engines_configured`, once an engine is authoritative), then `WATCHDOG=1` each
/// interval for as long as the control plane answers a status request in time, until `shutdown`.
/// A control plane or sequencer that stops answering stops the pings, and systemd restarts the
/// gateway; the socket holder keeps the counterparties' connections meanwhile.
pub async fn gateway_lifecycle(
    notifier: Notifier,
    commands: mpsc::Sender<ControlCommand>,
    engines_configured: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    if !notifier.is_enabled() {
        return;
    }
    let status_timeout = crate::constants::NOTIFY_STATUS_TIMEOUT;
    if engines_configured {
        loop {
            let attached = crate::control::metrics::fetch_status(&commands, status_timeout)
                .await
                .is_ok_and(|status| {
                    status
                        .engines
                        .iter()
                        .any(|engine| engine.role == EngineRole::Authoritative)
                });
            if attached {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(crate::constants::NOTIFY_READY_POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
    let state = match engines_configured {
        true => "READY=1\nSTATUS=listening, engine attached",
        false => "READY=1\nSTATUS=listening, no engine configured",
    };
    match notifier.notify(state) {
        Ok(()) => tracing::info!("told systemd the gateway is ready"),
        Err(error) => tracing::warn!(%error, "systemd not told the gateway is ready"),
    }
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        match crate::control::metrics::fetch_status(&commands, interval).await {
            Ok(_) => {
                if let Err(error) = notifier.notify("WATCHDOG=1") {
                    tracing::warn!(%error, "watchdog ping not sent");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "control plane did not answer; watchdog ping withheld")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(Notifier::for_address("/run/systemd/notify").is_ok());
        assert!(Notifier::for_address("@baton").is_ok());
        for bad in ["", "@", "relative/path"] {
            assert!(
                matches!(Notifier::for_address(bad), Err(NotifyError::BadAddress(_))),
                "{bad:?}"
            );
        }
        assert!(Notifier::default().notify("READY=1").is_ok());
    }

    #[test]
    fn a_datagram_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::for_address(&path.display().to_string()).expect("notifier");
        notifier.notify("READY=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("baton-notify-test-{}", std::process::id());
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let socket = UnixDatagram::bind_addr(&address).expect("bind abstract");
        let notifier = Notifier::for_address(&format!("@{name}")).expect("notifier");
        notifier.notify("STOPPING=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn sending_to_nobody_is_an_error_naming_the_socket() {
        let notifier = Notifier::for_address("/nonexistent/notify").expect("notifier");
        let error = notifier
            .notify("READY=1")
            .expect_err("no socket")
            .to_string();
        assert!(error.contains("/nonexistent/notify"), "{error}");
    }
}
