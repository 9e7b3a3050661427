//! Runs baton's processes (engines, gateway) as children and keeps them running.
//!
//! A child that exits while the supervisor is not shutting down is restarted after a short,
//! growing back-off (so a child that cannot start does not spin the machine). Ctrl-C or SIGTERM
//! forwards SIGTERM to every child, waits for them to finish their clean shutdown (the gateway
//! logs its sessions out), and kills what is still running after the grace period. A child that
//! exits with [`constants::EXIT_FATAL_STARTUP`] cannot start at all (an address in use, a store
//! another gateway holds): restarting it would loop forever, so the others are stopped the
//! same way and supervision ends with the child's name. Only an engine that had run before (a
//! staged build that does not fit) is left stopped alone, so the sessions stay up.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::constants;

/// Set for a gateway that `baton up` starts from the configured binary although a planned
/// upgrade recorded another build (its artifact is gone or its bytes changed): why, in words,
/// so the gateway can say it in status instead of the fallback going unnoticed.
pub const GATEWAY_BUILD_FALLBACK_ENV: &str = "BATON_GATEWAY_BUILD_FALLBACK";

/// One process to run.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    /// Name in logs ("engine-blue", "gateway").
    pub name: String,
    /// The program; usually the running `baton` binary itself.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables set for it on top of the supervisor's own (e.g. the log format,
    /// which a staged older build would refuse as a flag but ignores as a variable).
    pub env: Vec<(OsString, OsString)>,
    /// For an engine: where the control plane records the build it is to run (see
    /// [`super::stage`]). When a build is staged, the child runs as `baton launch --sha256 H
    /// ARTIFACT -- ARGS`, and a newly staged build restarts it.
    pub stage: Option<StageSource>,
    /// For the gateway: hold a duplicate of its listening socket and connections for it (see
    /// [`super::holder`]), and for this long after it died.
    pub hold_sockets: Option<Duration>,
    /// For the gateway: the stage directory where the build a planned upgrade moved it to is
    /// recorded ([`super::stage::write_gateway_build`]), so that a restarted `baton up` runs
    /// that build rather than the configured binary.
    pub gateway_build_dir: Option<PathBuf>,
}

/// Where to look for the build staged for one engine.
#[derive(Clone, Debug)]
pub struct StageSource {
    /// The stage directory ([`super::stage::stage_dir`] of the journal directory).
    pub dir: PathBuf,
    /// The engine's name.
    pub engine: String,
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
    /// A child exited with [`constants::EXIT_FATAL_STARTUP`]: it could not start for a reason
    /// a restart does not fix (it logged the reason), so the venue was stopped.
    #[error("{name} could not start (its error is above); the venue is stopped")]
    FatalStartup {
        /// The child's name.
        name: String,
    },
}

/// Where the supervisor asks the gateway for an engine's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlAddr {
    /// The configured control address.
    Fixed(std::net::SocketAddr),
    /// The ready file of a gateway whose control endpoint is on port 0: the port is known only
    /// once the gateway bound it, so the file is read at each question (a restarted gateway
    /// may have another port).
    ReadyFile(std::path::PathBuf),
}

impl ControlAddr {
    /// The address to ask now; `None` while the gateway has not said where it listens.
    fn resolve(&self) -> Option<std::net::SocketAddr> {
        match self {
            ControlAddr::Fixed(addr) => Some(*addr),
            ControlAddr::ReadyFile(path) => super::ready::read(path).ok().map(|r| r.control),
        }
    }
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
    /// Whether it was ever started again after its first start: a fatal start-up error of an
    /// engine that ran before leaves only that engine down, not the venue.
    restarted: bool,
    /// The SHA-256 of the staged build the current process was started from, if any.
    running_stage: Option<String>,
    /// When the process was asked to stop because a new build is staged; it restarts from the
    /// artifact when it has exited, and is killed if it does not stop within the grace period.
    restaging: Option<tokio::time::Instant>,
    /// When to start the process again after it exited (its back-off).
    restart_at: Option<tokio::time::Instant>,
    /// The gateway being asked for this engine's role before a restart for a staged build.
    stage_check: Option<tokio::task::JoinHandle<Option<super::api::EngineRole>>>,
    /// When it was last asked.
    stage_checked: Option<tokio::time::Instant>,
    /// How long one such question may take ([`constants::SUPERVISOR_STATUS_TIMEOUT_MS`]); a
    /// field rather than the constant so a test can hold a question open for as long as it
    /// looks at it, whatever the machine's load.
    status_timeout: Duration,
    /// For the gateway: the build a planned upgrade moved it to, which every later start runs.
    build: Option<super::stage::Staged>,
    /// For the gateway: the successor a planned upgrade started while this one still serves,
    /// and its build; it becomes the child when the running gateway exits after handing over.
    successor: Option<(Child, super::stage::Staged)>,
}

/// Restarts a running engine from a newly staged build, but only while the gateway says it is a
/// standby: the sequencer refused to stage an engine with authority, and authority may have
/// moved since (a failover); an engine that owns inputs picks the staged build up at its next
/// start instead. Without a gateway to ask, nothing is restarted. The gateway is asked from a
/// task of its own, at most once per [`constants::SUPERVISOR_STAGE_CHECK_MS`], so a slow or
/// hung gateway never holds up the supervision of the other children.
async fn restage_if_staged(supervised: &mut Supervised, control: Option<&ControlAddr>) {
    let Some(child) = supervised.child.as_mut() else {
        return;
    };
    if let Some(since) = supervised.restaging {
        if since.elapsed() > Duration::from_millis(constants::SUPERVISOR_GRACE_MS) {
            tracing::warn!(child = %supervised.spec.name, "did not stop for the staged build in time; killing");
            let _ = child.start_kill();
        }
        return;
    }
    // A role asked for earlier has come back (the task is finished, so this does not wait).
    if supervised
        .stage_check
        .as_ref()
        .is_some_and(|task| task.is_finished())
        && let Some(task) = supervised.stage_check.take()
    {
        let role = task.await.ok().flatten();
        if role == Some(super::api::EngineRole::Standby) {
            tracing::warn!(child = %supervised.spec.name, "a new build is staged; restarting the standby from it");
            terminate(child);
            supervised.restaging = Some(tokio::time::Instant::now());
        } else {
            tracing::debug!(child = %supervised.spec.name, ?role, "a new build is staged; it runs from the next start (not a standby now)");
        }
        return;
    }
    let (Some(source), Some(control)) = (supervised.spec.stage.as_ref(), control) else {
        return;
    };
    let check_due = supervised.stage_checked.is_none_or(|at| {
        at.elapsed() >= Duration::from_millis(constants::SUPERVISOR_STAGE_CHECK_MS)
    });
    if supervised.stage_check.is_some() || !check_due {
        return;
    }
    let wanted = staged(&supervised.spec).map(|s| s.artifact_sha256);
    if wanted.is_none() || wanted == supervised.running_stage {
        return;
    }
    // Resolved only when a question is due; a gateway that has not said where it listens yet
    // cannot be asked, so nothing is restarted.
    let Some(control) = control.resolve() else {
        return;
    };
    let engine = source.engine.clone();
    let status_timeout = supervised.status_timeout;
    supervised.stage_checked = Some(tokio::time::Instant::now());
    supervised.stage_check = Some(tokio::task::spawn_blocking(move || {
        let status =
            super::client::request(control, &super::api::ControlRequest::Status, status_timeout);
        match status {
            Ok(super::api::ControlReply::Status(status)) => status
                .engines
                .into_iter()
                .find(|e| e.name == engine)
                .map(|e| e.role),
            _ => None,
        }
    }));
}

/// The build staged for `spec`, if any; a stage file that cannot be read is logged and ignored,
/// so the engine keeps running the build it has.
fn staged(spec: &ChildSpec) -> Option<super::stage::Staged> {
    let source = spec.stage.as_ref()?;
    match super::stage::read(&source.dir, &source.engine) {
        Ok(staged) => staged,
        Err(error) => {
            tracing::error!(child = %spec.name, %error, "ignoring the stage file");
            None
        }
    }
}

/// Starts `spec`, from its staged build when there is one; returns the process and the staged
/// hash it runs.
fn spawn(
    spec: &ChildSpec,
    holder: Option<&super::holder::HolderHandle>,
    build: Option<&super::stage::Staged>,
    successor: bool,
) -> Result<(Child, Option<String>), SupervisorError> {
    let mut command = Command::new(&spec.program);
    let staged = match build {
        // A successor's start is checked by `baton launch`, and a failure calls the upgrade
        // off; a later start must not loop on a build that no longer checks out.
        Some(build) if !successor => {
            match check_build(build) {
                Ok(()) => Some(build.clone()),
                Err(reason) => {
                    tracing::error!(child = %spec.name, artifact = %build.artifact_path, change = %build.change, %reason, "the build the last upgrade moved to cannot run; starting the configured binary");
                    command.env(GATEWAY_BUILD_FALLBACK_ENV, format!("the build of {} ({}) cannot run: {reason}; running the configured binary", build.change, build.artifact_path));
                    None
                }
            }
        }
        Some(build) => Some(build.clone()),
        None => staged(spec),
    };
    // The gateway's end of a fresh hand-over channel: inherited across exec, its number in the
    // environment. Without one the gateway runs unprotected rather than not at all.
    let channel = match (spec.hold_sockets, holder) {
        (Some(_), Some(holder)) => match if successor {
            holder.channel_for_successor()
        } else {
            holder.channel_for_gateway()
        } {
            Ok(channel) => Some(channel),
            Err(error) => {
                tracing::error!(child = %spec.name, %error, "no socket holder for this start");
                None
            }
        },
        _ => None,
    };
    if let Some(channel) = &channel {
        use std::os::fd::AsRawFd;
        let raw = channel.as_raw_fd();
        command.env(crate::handover::HOLDER_FD_ENV, raw.to_string());
        // SAFETY: the closure runs in the forked child before exec and only calls fcntl(2),
        // which is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || crate::handover::clear_cloexec(raw));
        }
    }
    if let Some(staged) = &staged {
        // `baton launch` hashes and executes one descriptor: nothing swapped in after the
        // check runs, and a mismatch exits without running anything (and is retried).
        command
            .arg("launch")
            .arg("--sha256")
            .arg(&staged.artifact_sha256)
            .arg(&staged.artifact_path)
            .arg("--");
    }
    // Its own process group, so Ctrl-C at the terminal reaches the supervisor alone, which then
    // stops the children in order (gateway first, while the engines still answer); and SIGTERM
    // when the supervisor dies, so no child outlives it to clash with the next `baton up`. (The
    // kernel ties that signal to the forking thread: a runtime worker, which lives as long as
    // the supervisor does.)
    command.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SupervisorError::Spawn {
            name: spec.name.clone(),
            source,
        })?;
    match &staged {
        Some(staged) => {
            tracing::info!(child = %spec.name, pid = child.id(), artifact = %staged.artifact_path, sha256 = %staged.artifact_sha256, change = %staged.change, "started from the staged build")
        }
        None => tracing::info!(child = %spec.name, pid = child.id(), "started"),
    }
    Ok((child, staged.map(|s| s.artifact_sha256)))
}

/// Whether `build`'s artifact is still there with the bytes its record names; why not,
/// otherwise.
fn check_build(build: &super::stage::Staged) -> Result<(), String> {
    let found = super::artifact::sha256_file(std::path::Path::new(&build.artifact_path))
        .map_err(|error| error.to_string())?;
    if found == build.artifact_sha256 {
        Ok(())
    } else {
        Err(format!(
            "its SHA-256 is {found}, the record names {}",
            build.artifact_sha256
        ))
    }
}

/// The build a planned upgrade last moved `spec`'s gateway to, recorded in its stage
/// directory; `None` (logged) when none is recorded or the record cannot be read.
fn recorded_build(spec: &ChildSpec) -> Option<super::stage::Staged> {
    let dir = spec.gateway_build_dir.as_ref()?;
    match super::stage::read_gateway_build(dir) {
        Ok(Some(build)) => {
            tracing::info!(child = %spec.name, artifact = %build.artifact_path, sha256 = %build.artifact_sha256, change = %build.change, "a planned upgrade moved the gateway to this build; it runs from it");
            Some(build)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::error!(child = %spec.name, %error, "cannot read the gateway's build record; starting the configured binary");
            None
        }
    }
}

/// Records that `spec`'s gateway runs `build` from now on, for the next `baton up`.
fn record_build(spec: &ChildSpec, build: &super::stage::Staged) {
    let Some(dir) = spec.gateway_build_dir.as_ref() else {
        return;
    };
    if let Err(error) = super::stage::write_gateway_build(dir, build) {
        tracing::error!(child = %spec.name, %error, change = %build.change, "cannot record the gateway's new build: a restarted baton up would run the configured binary");
    }
}

/// Starts the gateway's successor for a planned upgrade (through `baton launch`, which checks
/// the artifact's hash), or stops it when the running gateway called the upgrade off. A start
/// that fails here closes the successor's channel at once, which the holder reports to the
/// running gateway as a failed start.
fn start_or_stop_successor(
    gateway: &mut Supervised,
    holder: Option<&super::holder::HolderHandle>,
    request: super::holder::SuccessorRequest,
) {
    match request {
        super::holder::SuccessorRequest::Start(successor) => {
            let build = super::stage::Staged {
                engine: "gateway".into(),
                artifact_path: successor.artifact_path,
                artifact_sha256: successor.artifact_sha256,
                change: successor.change,
            };
            match spawn(&gateway.spec, holder, Some(&build), true) {
                Ok((child, _)) => {
                    tracing::info!(child = %gateway.spec.name, pid = child.id(), change = %build.change, "started the upgraded gateway beside the running one");
                    gateway.successor = Some((child, build));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot start the upgraded gateway; the running one serves on")
                }
            }
        }
        super::holder::SuccessorRequest::Abandon => {
            if let Some((mut child, _)) = gateway.successor.take() {
                tracing::warn!(child = %gateway.spec.name, "upgrade called off; stopping the new build");
                let _ = child.start_kill();
            }
        }
    }
}

/// Forgets a successor that exited before taking over (its start failed: a hash mismatch, a
/// build that does not run); the running gateway heard of it from the holder.
fn watch_successor(supervised: &mut Supervised) {
    let exited = supervised
        .successor
        .as_mut()
        .is_some_and(|(child, _)| !matches!(child.try_wait(), Ok(None)));
    if exited && supervised.child.is_some() {
        tracing::warn!(child = %supervised.spec.name, "the upgraded gateway exited before taking over; the running one serves on");
        supervised.successor = None;
    }
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

/// Runs `specs` (started in order, `start_gap` apart) until Ctrl-C or SIGTERM, or until one of
/// them cannot start ([`SupervisorError::FatalStartup`]).
pub async fn supervise(
    specs: Vec<ChildSpec>,
    start_gap: Duration,
    control: Option<ControlAddr>,
) -> Result<(), SupervisorError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?;
    let mut terminate_signal = signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?;
    let (holder, mut successor_requests) = match specs.iter().find_map(|spec| spec.hold_sockets) {
        Some(hold_max) => {
            let (holder, requests) = super::holder::start(hold_max);
            (Some(holder), Some(requests))
        }
        None => (None, None),
    };
    let mut children = Vec::with_capacity(specs.len());
    for spec in specs {
        let build = recorded_build(&spec);
        let (child, running_stage) = spawn(&spec, holder.as_ref(), build.as_ref(), false)?;
        children.push(Supervised {
            spec,
            child: Some(child),
            failures: 0,
            started: tokio::time::Instant::now(),
            restarted: false,
            running_stage,
            restaging: None,
            restart_at: None,
            stage_check: None,
            stage_checked: None,
            status_timeout: Duration::from_millis(constants::SUPERVISOR_STATUS_TIMEOUT_MS),
            build,
            successor: None,
        });
        tokio::time::sleep(start_gap).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(constants::SUPERVISOR_POLL_MS));
    // A child that cannot start: stop everything and say which.
    let mut fatal = None;
    while fatal.is_none() {
        let successor_request = async {
            match successor_requests.as_mut() {
                Some(requests) => requests.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate_signal.recv() => break,
            _ = tick.tick() => {}
            Some(request) = successor_request => {
                if let Some(gateway) = children.iter_mut().find(|c| c.spec.hold_sockets.is_some()) {
                    start_or_stop_successor(gateway, holder.as_ref(), request);
                }
            }
        }
        let now = tokio::time::Instant::now();
        for supervised in &mut children {
            watch_successor(supervised);
            restage_if_staged(supervised, control.as_ref()).await;
            let exited = match supervised.child.as_mut() {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => Some((status.to_string(), status.code())),
                    Ok(None) => None,
                    Err(error) => Some((error.to_string(), None)),
                },
                None => None,
            };
            if let Some((_, Some(code))) = &exited
                && *code == i32::from(constants::EXIT_FATAL_STARTUP)
            {
                supervised.child = None;
                if supervised.spec.stage.is_none() || !supervised.restarted {
                    // The gateway, or a first start: the venue cannot come up as configured.
                    fatal = Some(supervised.spec.name.clone());
                    break;
                }
                // An engine that ran before and now cannot start (a staged build that does not
                // fit this config): the sessions and the other engine stay up without it.
                tracing::error!(child = %supervised.spec.name, "cannot start (its error is above); left stopped while the rest of the venue runs");
                supervised.restart_at = None;
                continue;
            }
            // The gateway handed over to its successor and exited: the successor is the gateway
            // now, from its build; nothing is restarted.
            if exited.is_some() && supervised.successor.is_some() {
                if let Some((child, build)) = supervised.successor.take() {
                    tracing::info!(child = %supervised.spec.name, pid = child.id(), artifact = %build.artifact_path, change = %build.change, "the upgraded gateway took over");
                    record_build(&supervised.spec, &build);
                    supervised.child = Some(child);
                    supervised.running_stage = Some(build.artifact_sha256.clone());
                    supervised.build = Some(build);
                    supervised.started = tokio::time::Instant::now();
                    supervised.failures = 0;
                }
                continue;
            }
            if let Some((status, _)) = exited {
                supervised.child = None;
                let ran_for = supervised.started.elapsed();
                if ran_for > Duration::from_secs(10) {
                    supervised.failures = 0;
                }
                let backoff = if supervised.restaging.take().is_some() {
                    // Stopped on purpose for a staged build: no back-off.
                    Duration::ZERO
                } else {
                    supervised.failures += 1;
                    Duration::from_millis(
                        (constants::SUPERVISOR_BACKOFF_MS << supervised.failures.min(6))
                            .min(constants::SUPERVISOR_BACKOFF_MAX_MS),
                    )
                };
                tracing::warn!(child = %supervised.spec.name, %status, ?backoff, "exited; restarting");
                // The other children are watched meanwhile: the restart waits for its time.
                supervised.restart_at = Some(now + backoff);
            }
            if supervised.child.is_none() && supervised.restart_at.is_some_and(|at| at <= now) {
                match spawn(
                    &supervised.spec,
                    holder.as_ref(),
                    supervised.build.as_ref(),
                    false,
                ) {
                    Ok((child, running_stage)) => {
                        supervised.restarted = true;
                        supervised.child = Some(child);
                        supervised.running_stage = running_stage;
                        supervised.started = tokio::time::Instant::now();
                        supervised.restart_at = None;
                    }
                    Err(error) => {
                        // One child that cannot start must not take the rest of the venue down.
                        tracing::error!(child = %supervised.spec.name, %error, "cannot start; trying again");
                        supervised.restart_at =
                            Some(now + Duration::from_millis(constants::SUPERVISOR_BACKOFF_MAX_MS));
                    }
                }
            }
        }
    }
    match &fatal {
        Some(name) => {
            tracing::debug!(child = %name, "a child cannot start; shutting down the others")
        }
        None => tracing::info!("shutting down children"),
    }
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
    match fatal {
        Some(name) => Err(SupervisorError::FatalStartup { name }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::stage::{self, Staged};

    #[tokio::test]
    async fn a_gateway_that_never_answers_does_not_hold_the_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let stage_dir = dir.path().join("stage");
        stage::write(
            &stage_dir,
            &Staged {
                engine: "green".into(),
                artifact_path: "/bin/true".into(),
                artifact_sha256: "ab".repeat(32),
                change: "CHG-1".into(),
            },
        )
        .unwrap();
        // Accepts into its backlog, never answers.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let child = Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut supervised = Supervised {
            spec: ChildSpec {
                name: "engine-green".into(),
                program: "sleep".into(),
                args: Vec::new(),
                env: Vec::new(),
                stage: Some(StageSource {
                    dir: stage_dir,
                    engine: "green".into(),
                }),
                hold_sockets: None,
                gateway_build_dir: None,
            },
            child: Some(child),
            failures: 0,
            started: tokio::time::Instant::now(),
            restarted: false,
            running_stage: None,
            restaging: None,
            restart_at: None,
            stage_check: None,
            stage_checked: None,
            build: None,
            successor: None,
            // Longer than the test: the question cannot time out (and so finish) while the
            // test checks it is still in flight, however slowly a loaded machine runs it. It
            // ends when `hung` is dropped at the end of the test and resets the connection.
            status_timeout: Duration::from_secs(3_600),
        };
        let control = ControlAddr::Fixed(hung.local_addr().unwrap());
        // The question is handed to a task and the call returns with it unanswered: a call that
        // waited for the answer would come back with the question settled (answered or timed
        // out), not still in flight. Later calls neither wait for it nor ask again.
        restage_if_staged(&mut supervised, Some(&control)).await;
        let asked_at = supervised.stage_checked.expect("the gateway was asked");
        for _ in 0..3 {
            assert!(
                supervised
                    .stage_check
                    .as_ref()
                    .is_some_and(|task| !task.is_finished()),
                "the call returned only once the question was settled"
            );
            assert_eq!(supervised.stage_checked, Some(asked_at), "asked again");
            restage_if_staged(&mut supervised, Some(&control)).await;
        }
        // No restart without an answer.
        assert!(supervised.restaging.is_none());
    }
}
