//! The control plane task: between the control endpoint and the sequencer, it decides whether a
//! command may run, writes it to the audit log, and only then lets it run (invariant 7).
//!
//! Every command from `baton ctl` passes through here. Change commands (file, approve, close,
//! report, list) are handled here entirely. Commands that move authority (switch, canary,
//! rollback) are checked against the policy and the change book, written to the audit log as
//! requested (durably: the log is fsynced), and only then handed to the sequencer with the
//! artifact hash the target engine must run; their outcome is audited when the sequencer answers.
//! What the sequencer does on its own (a failover, a gate breach) reaches the log through
//! [`CoreEvent`]s; a gate breach is followed by an automatic rollback that goes through the same
//! path as an operator's.
//!
//! If the log cannot be written, nothing that would need a record runs: the command is refused
//! and says why. A stopped control plane is better for a regulated venue than an unrecorded one;
//! trading itself never waits for the log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::api::{AuditHead, ControlReply, ControlRequest, ShadowStatus, Status};
use super::artifact;
use super::audit::{AuditError, AuditLog, AuditRecord};
use super::audit_writer::AuditWriter;
use super::change::{
    self, Action, ChangeBook, ChangeId, ControlEvent, Policy, PolicyError, parse_change,
    parse_rfc3339,
};
use super::endpoint::ControlCommand;
use super::stage::Staged;
use crate::constants;
use crate::fix::time::Timestamp;
use crate::gateway::core::{
    Carried, CoreCommand, CoreEvent, CoreReply, CoreRequest, ExpectedDivergence,
};
use crate::gateway::driver::CoreCall;

/// The actor recorded for what the gateway does by itself (failover, gate breach, auto
/// rollback, attachments).
pub const GATEWAY_ACTOR: &str = "gateway";

/// Why the control plane cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The audit log cannot be opened, or it does not verify: the gateway refuses to run with a
    /// trail it cannot extend honestly.
    #[error("audit log {path}: {source}")]
    Audit {
        /// The log's path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: AuditError,
    },
}

/// What the control plane needs to know.
#[derive(Clone, Debug)]
pub struct PlaneConfig {
    /// The audit log file.
    pub audit_path: PathBuf,
    /// Which actions need an approved change.
    pub policy: Policy,
    /// This gateway's build, recorded at start.
    pub build: String,
    /// Where staged builds are recorded for the supervisor ([`super::stage::stage_dir`]).
    pub stage_dir: PathBuf,
}

/// A command that went to the sequencer, and what to do with its answer.
struct Pending {
    /// The action, for the outcome record.
    action: Action,
    /// The change it runs under.
    change: Option<ChangeId>,
    /// Who asked.
    actor: String,
    /// The sequencer's answer, then the shadow counters just after it.
    outcome: ControlReply,
    /// Shadow evidence at completion.
    shadow: ShadowStatus,
    /// The operator waiting, if any (an automatic rollback has none).
    reply: Option<oneshot::Sender<ControlReply>>,
    /// For a stage: the record to write once the sequencer agreed.
    stage: Option<Staged>,
}

/// The control plane: the audit log, the change book rebuilt from it, and the policy.
pub struct Plane {
    /// The hash-chained log, on its writer thread; every action is appended and synced there,
    /// and awaited here, before it runs.
    audit: AuditWriter<ControlEvent>,
    /// Every record of the log as (seq, time, actor, event), for reports: control events come a
    /// few per hour, so the whole history fits in memory for the life of the gateway.
    records: Vec<(u64, Timestamp, String, ControlEvent)>,
    /// What the log adds up to.
    book: ChangeBook,
    /// Halted symbols and diverged engines, as the log adds them up: what a restarted sequencer
    /// must start from.
    carried: Carried,
    /// What needs approval.
    policy: Policy,
    /// Where staged builds are recorded.
    stage_dir: PathBuf,
    /// Where authority-moving commands go; `None` for a gateway without engines.
    core: Option<mpsc::Sender<CoreCall>>,
    /// Answers of the sequencer come back here, so the plane never waits for a switch.
    outcomes_tx: mpsc::Sender<Pending>,
    /// See `outcomes_tx`.
    outcomes_rx: mpsc::Receiver<Pending>,
    /// An automatic rollback is with the sequencer; repeated breaches wait for its outcome.
    auto_rollback_in_flight: bool,
    /// The canary (by its first input) whose breach is in the log already.
    breach_recorded: Option<u64>,
    /// The change whose window's close is in the log already.
    window_closed_recorded: Option<ChangeId>,
    /// Where a planned gateway upgrade goes; `None` without a supervisor to start the build.
    upgrader: Option<mpsc::Sender<super::upgrade::UpgradeCall>>,
    /// Upgrades whose barrier was reached, to be recorded before they hand over.
    handovers_tx: mpsc::Sender<HandOver>,
    /// See `handovers_tx`.
    handovers_rx: mpsc::Receiver<HandOver>,
    /// This gateway took over from another at a planned upgrade: what it measured, once it
    /// serves.
    upgraded: Option<oneshot::Receiver<super::api::GatewayUpgrade>>,
    /// SHA-256 of this gateway's executable, for status; hashed once, when first asked.
    executable_sha256: Arc<std::sync::OnceLock<String>>,
    /// Whether that hashing was started.
    executable_hashing: Arc<AtomicBool>,
    /// Why `baton up` runs the configured binary instead of the build the last planned upgrade
    /// recorded, when it does (see [`super::supervisor::GATEWAY_BUILD_FALLBACK_ENV`]).
    build_fallback: Option<String>,
    /// Test hook: make every append fail, as a full or failing disk would.
    #[cfg(test)]
    fail_appends: bool,
}

/// A planned gateway upgrade that reached its barrier, or did not.
struct HandOver {
    /// The change.
    change: Option<ChangeId>,
    /// Who asked.
    actor: String,
    /// The build taking over.
    artifact_sha256: String,
    /// The barrier, or why not.
    outcome: Result<super::upgrade::Prepared, String>,
    /// The operator waiting.
    reply: oneshot::Sender<ControlReply>,
}

impl Plane {
    /// Opens (or creates) the audit log, checks its chain, rebuilds the change book from it and
    /// records the start.
    pub fn open(
        config: &PlaneConfig,
        core: Option<mpsc::Sender<CoreCall>>,
    ) -> Result<Plane, PlaneError> {
        let audit_error = |source| PlaneError::Audit {
            path: config.audit_path.clone(),
            source,
        };
        let (mut audit, existing) = AuditLog::open(&config.audit_path).map_err(audit_error)?;
        let cut = audit.take_cut();
        let records: Vec<(u64, Timestamp, String, ControlEvent)> = existing
            .into_iter()
            .map(|r| (r.seq, r.time, r.actor, r.event))
            .collect();
        let book = ChangeBook::from_events(records.iter().map(|(_, t, a, e)| (a.as_str(), *t, e)));
        let mut carried = CarriedFold::default();
        for (_, _, _, event) in &records {
            carried.apply(event);
        }
        // The start (and a cut tail) is recorded before the plane serves anything, on the
        // calling thread: nothing else runs yet that the write could hold up.
        let mut started = vec![
            audit
                .append(
                    Timestamp::now(),
                    GATEWAY_ACTOR,
                    ControlEvent::GatewayStarted {
                        build: config.build.clone(),
                    },
                )
                .map_err(audit_error)?,
        ];
        if let Some(cut) = cut {
            started.push(
                audit
                    .append(
                        Timestamp::now(),
                        GATEWAY_ACTOR,
                        ControlEvent::AuditTailCut {
                            bytes: cut.bytes,
                            kept: cut.kept.display().to_string(),
                            sha256: cut.sha256,
                            after_seq: cut.after_seq,
                        },
                    )
                    .map_err(audit_error)?,
            );
        }
        let audit = AuditWriter::start(audit).map_err(audit_error)?;
        let (outcomes_tx, outcomes_rx) = mpsc::channel(constants::CONTROL_EVENTS_MAX);
        let (handovers_tx, handovers_rx) = mpsc::channel(1);
        let mut plane = Plane {
            upgrader: None,
            handovers_tx,
            handovers_rx,
            upgraded: None,
            audit,
            records,
            book,
            carried: carried.done(),
            policy: config.policy.clone(),
            stage_dir: config.stage_dir.clone(),
            core,
            outcomes_tx,
            outcomes_rx,
            auto_rollback_in_flight: false,
            breach_recorded: None,
            window_closed_recorded: None,
            executable_sha256: Arc::new(std::sync::OnceLock::new()),
            executable_hashing: Arc::new(AtomicBool::new(false)),
            build_fallback: None,
            #[cfg(test)]
            fail_appends: false,
        };
        for record in started {
            plane.fold(record);
        }
        tracing::info!(path = %config.audit_path.display(), head_seq = plane.audit.head().0, changes = plane.book.summaries().len(), "audit log open");
        Ok(plane)
    }

    /// `baton up` started this gateway from the configured binary although a planned upgrade
    /// recorded another build: `reason` is shown in status.
    pub fn set_build_fallback(&mut self, reason: String) {
        self.build_fallback = Some(reason);
    }

    /// Test hook: every later audit write waits at a gate the test opens.
    #[cfg(test)]
    fn hold_audit_writes(self) -> (Plane, super::audit_writer::Hold) {
        let log = self.audit.stop().expect("the writer hands its log back");
        let (writer, hold) = AuditWriter::start_held(log).expect("held writer");
        (
            Plane {
                audit: writer,
                ..self
            },
            hold,
        )
    }

    /// Lets `baton ctl upgrade-gateway` run, through `upgrader`.
    pub fn set_upgrader(&mut self, upgrader: mpsc::Sender<super::upgrade::UpgradeCall>) {
        self.upgrader = Some(upgrader);
    }

    /// This gateway took over at a planned upgrade: `measured` brings the pause once it serves,
    /// for the audit log, status and the change report.
    pub fn set_upgraded(&mut self, measured: oneshot::Receiver<super::api::GatewayUpgrade>) {
        self.upgraded = Some(measured);
    }

    /// Serves commands from the endpoint and events from the sequencer until shutdown.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<ControlCommand>,
        mut events: mpsc::Receiver<CoreEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(constants::CONTROL_WINDOW_CHECK_MS));
        loop {
            tokio::select! {
                _ = tick.tick() => self.on_tick(Timestamp::now()).await,
                Some(command) = commands.recv() => self.on_command(command).await,
                Some(event) = events.recv() => self.on_event(event).await,
                Some(pending) = self.outcomes_rx.recv() => self.on_outcome(pending).await,
                Some(handover) = self.handovers_rx.recv() => self.on_handover(handover).await,
                measured = upgraded(&mut self.upgraded) => self.on_upgraded(measured).await,
                () = stopped(&mut shutdown) => return,
                else => return,
            }
        }
    }

    /// A canary may run only within the window its change was approved for: once the window
    /// has closed, the gateway records that and rolls the canary back, like a gate breach.
    async fn on_tick(&mut self, now: Timestamp) {
        let Some((change, window_end)) = self.book.canary_window_end() else {
            return;
        };
        if now <= window_end || self.auto_rollback_in_flight {
            return;
        }
        if self.window_closed_recorded != Some(change) {
            if let Err(error) = self
                .record(GATEWAY_ACTOR, ControlEvent::WindowClosed { change })
                .await
            {
                tracing::error!(%error, "audit log not written; the canary outlives its window until it is");
                return;
            }
            self.window_closed_recorded = Some(change);
        }
        self.act(
            Action::AutoRollback,
            None,
            Some(change::change_name(change)),
            ControlRequest::rollback(GATEWAY_ACTOR),
            None,
        )
        .await;
    }

    /// Appends `event` by `actor` and folds it into the book. Nothing that needs a record runs
    /// unless this returned `Ok`.
    async fn record(&mut self, actor: &str, event: ControlEvent) -> Result<(), AuditError> {
        #[cfg(test)]
        if self.fail_appends {
            return Err(AuditError::Io {
                path: self.audit.path().to_owned(),
                source: std::io::Error::other("injected write failure"),
            });
        }
        let now = Timestamp::now();
        let record = self.audit.append(now, actor, event).await?;
        self.fold(record);
        Ok(())
    }

    /// Adds a durable record to what the plane knows: the book, the carried state, the history.
    fn fold(&mut self, record: AuditRecord<ControlEvent>) {
        self.book.apply(&record.actor, record.time, &record.event);
        let mut fold = CarriedFold::from(&self.carried);
        fold.apply(&record.event);
        self.carried = fold.done();
        self.records
            .push((record.seq, record.time, record.actor, record.event));
    }

    async fn on_command(&mut self, command: ControlCommand) {
        let ControlCommand {
            request,
            reply,
            peer_uid,
            ..
        } = command;
        // "alice " and "alice" are one person; a blank name is none. The account the command
        // came from goes with the name into the log: `alice (uid 1000)`.
        let operator = request
            .operator()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| match peer_uid {
                Some(uid) => format!("{name} (uid {uid})"),
                None => name.to_owned(),
            });
        // An account declared to be certain people acts under their names only.
        let account = peer_uid.and_then(super::peer::account_name);
        let read_only = matches!(
            request,
            ControlRequest::Status
                | ControlRequest::ChangeReport { .. }
                | ControlRequest::ChangeList
        );
        if let Some(name) = operator.as_deref().filter(|_| !read_only)
            && let Err(error) = self.policy.check_account(account.as_deref(), name)
        {
            tracing::warn!(%error, "control command refused: operator not declared for the account");
            let _ = reply.send(refused(error.to_string()));
            return;
        }
        // What moves authority or trading is checked, audited, then handed to the sequencer as
        // asked (the sequencer reads neither the operator nor the change: those stay here).
        let moves = match &request {
            ControlRequest::Switch { change, .. } => Some((Action::Switch, change.clone())),
            // A rollback named under no change undoes the open change whose action moved
            // authority last, so it belongs in that change's record.
            ControlRequest::Rollback { change, .. } => Some((
                Action::Rollback,
                change
                    .clone()
                    .or_else(|| self.book.active().map(change::change_name)),
            )),
            ControlRequest::Canary {
                change,
                percent,
                symbols,
                ..
            } => Some((
                Action::Canary {
                    percent: *percent,
                    symbols: symbols.clone(),
                },
                change.clone(),
            )),
            ControlRequest::Stage { change, engine, .. } => Some((
                Action::Stage {
                    engine: engine.clone(),
                },
                Some(change.clone()),
            )),
            ControlRequest::Resume { symbols, .. } => Some((
                Action::Resume {
                    symbols: symbols.clone(),
                },
                None,
            )),
            _ => None,
        };
        if let Some((action, change)) = moves {
            self.act(action, operator, change, request, Some(reply))
                .await;
            return;
        }
        let now = Timestamp::now();
        let answer = match request {
            ControlRequest::Status => {
                self.forward_status(reply);
                return;
            }
            ControlRequest::ChangeFile {
                artifact_path,
                artifact_sha256,
                reason,
                window_start,
                window_end,
                expected_divergence,
                ..
            } => {
                self.file(
                    operator.as_deref(),
                    (&artifact_path, &artifact_sha256),
                    &reason,
                    (&window_start, &window_end),
                    &expected_divergence,
                    now,
                )
                .await
            }
            ControlRequest::ChangeApprove { change, .. } => {
                let checked = self
                    .book
                    .check_approve(operator.as_deref(), &change)
                    .and_then(|event| match operator.as_deref() {
                        Some(approver) => self
                            .book
                            .check_approval_account(
                                &self.policy,
                                approver,
                                &change,
                                super::peer::account_name,
                            )
                            .map(|()| event),
                        None => Ok(event),
                    });
                self.record_change(operator.as_deref(), checked).await
            }
            ControlRequest::ChangeClose { change, .. } => {
                let checked = self.book.check_close(operator.as_deref(), &change);
                self.record_change(operator.as_deref(), checked).await
            }
            ControlRequest::ChangeReport { change } => self.report(&change),
            ControlRequest::ChangeList => ControlReply::Changes {
                changes: self.book.summaries(),
            },
            ControlRequest::Switch { .. }
            | ControlRequest::Rollback { .. }
            | ControlRequest::Canary { .. }
            | ControlRequest::Stage { .. }
            | ControlRequest::Resume { .. } => {
                refused("internal: an action reached the change commands".into())
            }
            ControlRequest::UpgradeGateway { change, .. } => {
                self.upgrade_gateway(operator, change, reply).await;
                return;
            }
        };
        let _ = reply.send(answer);
    }

    /// Files a change once the artifact (path, SHA-256) on disk hashes to what the operator
    /// said.
    async fn file(
        &mut self,
        operator: Option<&str>,
        (path, sha256): (&str, &str),
        reason: &str,
        window: (&str, &str),
        divergence: &ExpectedDivergence,
        now: Timestamp,
    ) -> ControlReply {
        // Checked again here, not only by the CLI: the control socket takes any JSON.
        let divergence = match ExpectedDivergence::parse(&divergence.symbols, &divergence.msg_types)
        {
            Ok(divergence) => divergence,
            Err(error) => return refused(format!("expected divergence: {error}")),
        };
        let expected = match artifact::parse_sha256(sha256) {
            Ok(expected) => expected,
            Err(error) => return refused(error.to_string()),
        };
        let window = match (parse_rfc3339(window.0), parse_rfc3339(window.1)) {
            (Ok(start), Ok(end)) => (start, end),
            (Err(error), _) | (_, Err(error)) => return refused(error.to_string()),
        };
        let path_buf = PathBuf::from(path);
        if !path_buf.is_absolute() {
            return refused(format!(
                "the artifact path {path} is not absolute; name the file the gateway host will run"
            ));
        }
        // Hashing a large build takes a while; do it off the runtime's threads.
        let hashed = tokio::task::spawn_blocking(move || artifact::sha256_file(&path_buf)).await;
        let found = match hashed {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => return refused(format!("cannot hash the artifact: {error}")),
            Err(error) => return refused(format!("hashing the artifact failed: {error}")),
        };
        if found != expected {
            return refused(format!(
                "the artifact {path} hashes to {found}, not {expected}: it is not the build you named"
            ));
        }
        let mut checked = self
            .book
            .check_file(operator, path, &expected, reason, window, now);
        if let Ok(ControlEvent::ChangeFiled {
            expected_divergence,
            ..
        }) = &mut checked
        {
            *expected_divergence = divergence;
        }
        self.record_change(operator, checked).await
    }

    /// Writes a checked change event and answers with the change as it now is.
    async fn record_change(
        &mut self,
        operator: Option<&str>,
        checked: Result<ControlEvent, PolicyError>,
    ) -> ControlReply {
        let event = match checked {
            Ok(event) => event,
            Err(error) => return refused(error.to_string()),
        };
        let Some(id) = event.change() else {
            return refused("internal: a change event without a change".into());
        };
        let actor = operator.unwrap_or(GATEWAY_ACTOR);
        if let Err(error) = self.record(actor, event).await {
            return refused(format!(
                "audit log not written ({error}); nothing was changed"
            ));
        }
        match self.book.summary(id) {
            Some(summary) => ControlReply::Change(summary.clone()),
            None => refused(format!(
                "internal: {} not in the book",
                change::change_name(id)
            )),
        }
    }

    fn report(&self, change: &str) -> ControlReply {
        let id = match parse_change(change) {
            Ok(id) => id,
            Err(error) => return refused(error.to_string()),
        };
        let records = self
            .records
            .iter()
            .map(|(seq, time, actor, event)| (*seq, *time, actor.as_str(), event));
        match change::report(records, id, self.audit.head()) {
            Ok(report) => ControlReply::Report(report),
            Err(error) => refused(error.to_string()),
        }
    }

    /// Checks, audits, then forwards an action that moves authority.
    async fn act(
        &mut self,
        action: Action,
        operator: Option<String>,
        change: Option<String>,
        request: ControlRequest,
        reply: Option<oneshot::Sender<ControlReply>>,
    ) {
        let actor = operator.clone().unwrap_or_else(|| GATEWAY_ACTOR.to_owned());
        let now = Timestamp::now();
        let authorized = self.book.authorize(
            &self.policy,
            &action,
            operator.as_deref(),
            change.as_deref(),
            now,
        );
        let (change_id, expect_sha256) = match authorized {
            Ok(granted) => granted,
            Err(error) => {
                let named = change.as_deref().and_then(|c| parse_change(c).ok());
                let refusal = self.refuse(&actor, named, action, error.to_string()).await;
                answer(reply, refusal);
                return;
            }
        };
        let requested = ControlEvent::ActionRequested {
            change: change_id,
            action: action.clone(),
        };
        if let Err(error) = self.record(&actor, requested).await {
            tracing::error!(%error, ?action, "audit log not written; action not taken");
            answer(
                reply,
                refused(format!(
                    "audit log not written ({error}); the action was not taken"
                )),
            );
            return;
        }
        let Some(core) = self.core.clone() else {
            let reason = "this gateway runs no engines".to_owned();
            let refusal = self.refuse(&actor, change_id, action, reason).await;
            answer(reply, refusal);
            return;
        };
        let stage = match (&action, change_id.and_then(|id| self.book.summary(id))) {
            (Action::Stage { engine }, Some(summary)) => Some(Staged {
                engine: engine.clone(),
                artifact_path: summary.artifact_path.clone(),
                artifact_sha256: summary.artifact_sha256.clone(),
                change: summary.id.clone(),
            }),
            _ => None,
        };
        // A canary carries the divergence its change declares, for the gates to set aside.
        let expected = match (&action, change_id.and_then(|id| self.book.summary(id))) {
            (Action::Canary { .. }, Some(summary)) => summary.expected_divergence.clone(),
            _ => ExpectedDivergence::default(),
        };
        let outcomes = self.outcomes_tx.clone();
        let canary_only = action == Action::AutoRollback;
        if canary_only {
            self.auto_rollback_in_flight = true;
        }
        tokio::spawn(async move {
            let outcome = ask(&core, request, expect_sha256, canary_only, expected).await;
            // The shadow counters right after the switch: the evidence it was safe.
            let shadow = match &outcome {
                ControlReply::Switched(_) => {
                    match ask(
                        &core,
                        ControlRequest::Status,
                        None,
                        false,
                        Default::default(),
                    )
                    .await
                    {
                        ControlReply::Status(status) => status.shadow,
                        _ => ShadowStatus::default(),
                    }
                }
                _ => ShadowStatus::default(),
            };
            let _ = outcomes
                .send(Pending {
                    action,
                    change: change_id,
                    actor,
                    outcome,
                    shadow,
                    reply,
                    stage,
                })
                .await;
        });
    }

    /// Records a refused `action` when it can, and refuses it either way: an unrecordable
    /// refusal still refuses.
    async fn refuse(
        &mut self,
        actor: &str,
        change: Option<ChangeId>,
        action: Action,
        reason: String,
    ) -> ControlReply {
        let refusal = ControlEvent::ActionRefused {
            change,
            action,
            reason: reason.clone(),
        };
        if let Err(error) = self.record(actor, refusal).await {
            tracing::error!(%error, "audit log not written for a refused action");
        }
        refused(reason)
    }

    /// Checks and audits a planned gateway upgrade, then hands it to the upgrader; its barrier
    /// comes back through [`Plane::on_handover`].
    async fn upgrade_gateway(
        &mut self,
        operator: Option<String>,
        change: String,
        reply: oneshot::Sender<ControlReply>,
    ) {
        let action = Action::UpgradeGateway;
        let actor = operator.clone().unwrap_or_else(|| GATEWAY_ACTOR.to_owned());
        let authorized = self.book.authorize(
            &self.policy,
            &action,
            operator.as_deref(),
            Some(&change),
            Timestamp::now(),
        );
        let change_id = match authorized {
            Ok((Some(id), _)) => id,
            Ok((None, _)) => {
                let _ = reply.send(refused("an upgrade of the gateway needs a change".into()));
                return;
            }
            Err(error) => {
                let named = parse_change(&change).ok();
                let _ = reply.send(
                    self.refuse(&actor, named, Action::UpgradeGateway, error.to_string())
                        .await,
                );
                return;
            }
        };
        let Some(summary) = self.book.summary(change_id).cloned() else {
            let _ = reply.send(refused(format!("internal: {change} not in the book")));
            return;
        };
        let Some(upgrader) = self.upgrader.clone() else {
            let reason = "no supervisor holds this gateway's sockets: run it under baton up (plain TCP) to upgrade it without a disconnect".to_owned();
            let _ = reply.send(
                self.refuse(&actor, Some(change_id), Action::UpgradeGateway, reason)
                    .await,
            );
            return;
        };
        let requested = ControlEvent::ActionRequested {
            change: Some(change_id),
            action: action.clone(),
        };
        if let Err(error) = self.record(&actor, requested).await {
            let _ = reply.send(refused(format!(
                "audit log not written ({error}); the action was not taken"
            )));
            return;
        }
        let successor = crate::handover::Successor {
            artifact_path: summary.artifact_path.clone(),
            artifact_sha256: summary.artifact_sha256.clone(),
            change: summary.id.clone(),
        };
        let handovers = self.handovers_tx.clone();
        tokio::spawn(async move {
            let (outcome_tx, outcome_rx) = oneshot::channel();
            let call = super::upgrade::UpgradeCall {
                successor,
                reply: outcome_tx,
            };
            let outcome = match upgrader.send(call).await {
                Ok(()) => outcome_rx
                    .await
                    .unwrap_or_else(|_| Err("the upgrader stopped".into())),
                Err(_) => Err("the upgrader is not running".into()),
            };
            let _ = handovers
                .send(HandOver {
                    change: Some(change_id),
                    actor,
                    artifact_sha256: summary.artifact_sha256,
                    outcome,
                    reply,
                })
                .await;
        });
    }

    /// The barrier is written to the audit log before anything is handed over (invariant 7);
    /// a refusal is recorded as one.
    async fn on_handover(&mut self, handover: HandOver) {
        let HandOver {
            change,
            actor,
            artifact_sha256,
            outcome,
            reply,
        } = handover;
        let prepared = match outcome {
            Ok(prepared) => prepared,
            Err(reason) => {
                let refusal = self
                    .refuse(&actor, change, Action::UpgradeGateway, reason)
                    .await;
                let _ = reply.send(refusal);
                return;
            }
        };
        let event = ControlEvent::GatewayHandingOver {
            change,
            artifact_sha256: artifact_sha256.clone(),
            barrier_unix_ns: prepared.barrier_unix_ns,
        };
        if let Err(error) = self.record(&actor, event).await {
            let _ = prepared.go.send(false);
            let _ = reply.send(refused(format!(
                "audit log not written ({error}); the gateway serves on"
            )));
            return;
        }
        let _ = prepared.go.send(true);
        let _ = reply.send(ControlReply::GatewayHandingOver {
            change: change.map(change::change_name).unwrap_or_default(),
            artifact_sha256,
            barrier_unix_ns: prepared.barrier_unix_ns,
        });
    }

    /// The pause this gateway measured after taking over, into the log.
    async fn on_upgraded(&mut self, measured: Option<super::api::GatewayUpgrade>) {
        self.upgraded = None;
        let Some(mut upgrade) = measured else {
            return;
        };
        let change = parse_change(&upgrade.change).ok();
        if let Some(summary) = change.and_then(|id| self.book.summary(id)) {
            upgrade.artifact_sha256 = summary.artifact_sha256.clone();
        }
        tracing::info!(change = %upgrade.change, pause_us = upgrade.pause_us, sessions = upgrade.sessions, "took over from the previous gateway at a planned upgrade");
        if let Err(error) = self
            .record(
                GATEWAY_ACTOR,
                ControlEvent::GatewayUpgraded { change, upgrade },
            )
            .await
        {
            tracing::error!(%error, "audit log not written for the gateway upgrade");
        }
    }

    /// The last planned gateway upgrade in the log.
    fn last_gateway_upgrade(&self) -> Option<super::api::GatewayUpgrade> {
        self.records
            .iter()
            .rev()
            .find_map(|(_, _, _, event)| match event {
                ControlEvent::GatewayUpgraded { upgrade, .. } => Some(upgrade.clone()),
                _ => None,
            })
    }

    /// Records what the sequencer answered and passes it on.
    async fn on_outcome(&mut self, pending: Pending) {
        let Pending {
            action,
            change,
            actor,
            mut outcome,
            shadow,
            reply,
            stage,
        } = pending;
        // The sequencer agreed to a stage: record it where the supervisor looks.
        if let (ControlReply::Staged { .. }, Some(staged)) = (&outcome, &stage)
            && let Err(error) = super::stage::write(&self.stage_dir, staged)
        {
            outcome = refused(format!("the stage record could not be written: {error}"));
        }
        if action == Action::AutoRollback {
            self.auto_rollback_in_flight = false;
        }
        let event = match &outcome {
            ControlReply::Staged {
                engine,
                artifact_sha256,
            } => ControlEvent::Staged {
                change,
                engine: engine.clone(),
                artifact_sha256: artifact_sha256.clone(),
            },
            ControlReply::Resumed { symbols } => ControlEvent::Resumed {
                change,
                symbols: symbols.clone(),
            },
            ControlReply::Switched(report) => ControlEvent::ActionCompleted {
                change,
                action,
                report: report.clone(),
                shadow,
            },
            ControlReply::Refused { reason } => ControlEvent::ActionRefused {
                change,
                action,
                reason: reason.clone(),
            },
            other => ControlEvent::ActionRefused {
                change,
                action,
                reason: format!("unexpected answer from the sequencer: {other:?}"),
            },
        };
        if let Err(error) = self.record(&actor, event).await {
            tracing::error!(%error, "audit log not written for an action's outcome");
        }
        answer(reply, outcome);
    }

    /// Audits what the sequencer did by itself; a gate breach is followed by the rollback.
    async fn on_event(&mut self, event: CoreEvent) {
        let change = self.book.active();
        let event = match event {
            CoreEvent::Failover(report) => ControlEvent::Failover { change, report },
            CoreEvent::Completed(report) => ControlEvent::CompletedLate { change, report },
            CoreEvent::Record(record) => ControlEvent::from(record),
            CoreEvent::GateBreached(breach) => {
                // The sequencer repeats a breach until its canary ends: one rollback at a time,
                // and the breach itself recorded once per canary.
                if self.auto_rollback_in_flight {
                    return;
                }
                if self.breach_recorded != Some(breach.since_seq) {
                    let since_seq = breach.since_seq;
                    if let Err(error) = self
                        .record(GATEWAY_ACTOR, ControlEvent::GateBreached { change, breach })
                        .await
                    {
                        tracing::error!(%error, "audit log not written; the canary is not rolled back until it is");
                        return;
                    }
                    self.breach_recorded = Some(since_seq);
                }
                let change = change.map(change::change_name);
                self.act(
                    Action::AutoRollback,
                    None,
                    change,
                    ControlRequest::rollback(GATEWAY_ACTOR),
                    None,
                )
                .await;
                return;
            }
        };
        if let Err(error) = self.record(GATEWAY_ACTOR, event).await {
            tracing::error!(%error, "audit log not written for a gateway event");
        }
    }

    /// Status from the sequencer, with the open changes and the audit head added.
    fn forward_status(&self, reply: oneshot::Sender<ControlReply>) {
        let open_changes = self.book.open();
        let gateway_upgrade = self.last_gateway_upgrade();
        let (seq, hash) = self.audit.head();
        let head = AuditHead {
            seq,
            hash: hash.to_owned(),
        };
        let core = self.core.clone();
        let executable_sha256 = own_sha256(&self.executable_sha256, &self.executable_hashing);
        let fallback = self.build_fallback.clone();
        tokio::spawn(async move {
            let reply_to = reply;
            let mut status = match core {
                Some(core) => match ask(
                    &core,
                    ControlRequest::Status,
                    None,
                    false,
                    Default::default(),
                )
                .await
                {
                    ControlReply::Status(status) => status,
                    other => {
                        let _ = reply_to.send(other);
                        return;
                    }
                },
                None => Status::default(),
            };
            status.open_changes = open_changes;
            status.gateway_upgrade = gateway_upgrade.map(Box::new);
            status.audit_head = Some(head);
            status.gateway_build = Some(super::api::GatewayBuild {
                executable_sha256,
                fallback,
            });
            let _ = reply_to.send(ControlReply::Status(status));
        });
    }

    /// Halted symbols and diverged engines from before this start, for the sequencer.
    pub fn carried(&self) -> &Carried {
        &self.carried
    }
}

/// The measurement of a planned upgrade this gateway took over at, once; pending forever when
/// there is none (or it came).
async fn upgraded(
    measured: &mut Option<oneshot::Receiver<super::api::GatewayUpgrade>>,
) -> Option<super::api::GatewayUpgrade> {
    match measured {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

/// Adds up halts, divergences and resumes from the log, in order.
#[derive(Default)]
struct CarriedFold {
    /// Halted symbols.
    halted: BTreeSet<String>,
    /// Engine name to the symbols it diverged on.
    diverged: BTreeMap<String, BTreeSet<String>>,
}

impl CarriedFold {
    fn from(carried: &Carried) -> CarriedFold {
        CarriedFold {
            halted: carried.halted.iter().cloned().collect(),
            diverged: carried
                .diverged
                .iter()
                .map(|(engine, symbols)| (engine.clone(), symbols.iter().cloned().collect()))
                .collect(),
        }
    }

    fn apply(&mut self, event: &ControlEvent) {
        match event {
            ControlEvent::Halted { symbols } => self.halted.extend(symbols.iter().cloned()),
            ControlEvent::Diverged { engine, symbols } => self
                .diverged
                .entry(engine.clone())
                .or_default()
                .extend(symbols.iter().cloned()),
            ControlEvent::DivergenceCleared { engine, symbols } if symbols.is_empty() => {
                self.diverged.remove(engine);
            }
            ControlEvent::DivergenceCleared { engine, symbols } => {
                if let Some(set) = self.diverged.get_mut(engine) {
                    for symbol in symbols {
                        set.remove(symbol);
                    }
                }
            }
            ControlEvent::Resumed { symbols, .. } => {
                for symbol in symbols {
                    self.halted.remove(symbol);
                    for set in self.diverged.values_mut() {
                        set.remove(symbol);
                    }
                }
            }
            _ => {}
        }
        self.diverged.retain(|_, set| !set.is_empty());
    }

    fn done(self) -> Carried {
        Carried {
            halted: self.halted.into_iter().collect(),
            diverged: self
                .diverged
                .into_iter()
                .map(|(engine, symbols)| (engine, symbols.into_iter().collect()))
                .collect(),
        }
    }
}

/// Sends `request` to the sequencer and waits for its answer, bounded like the endpoint's wait.
pub(crate) async fn ask(
    core: &mpsc::Sender<CoreCall>,
    request: ControlRequest,
    expect_sha256: Option<String>,
    canary_only: bool,
    expected_divergence: ExpectedDivergence,
) -> ControlReply {
    let Some(request) = core_request(request) else {
        return refused(
            "the sequencer does not handle this request; the control plane does".into(),
        );
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let command = CoreCommand {
        request,
        expect_sha256,
        canary_only,
        expected_divergence,
    };
    let call = CoreCall {
        command,
        reply: reply_tx,
    };
    if core.send(call).await.is_err() {
        return refused("the gateway's sequencer is not running".into());
    }
    let wait = Duration::from_millis(constants::CONTROL_REPLY_TIMEOUT_MS);
    match tokio::time::timeout(wait, reply_rx).await {
        Ok(Ok(reply)) => control_reply(reply),
        Ok(Err(_)) => refused("the sequencer stopped before answering".into()),
        Err(_) => refused("the sequencer did not answer in time; run status to see".into()),
    }
}

/// The part of an operator's request the sequencer acts on; `None` for the requests the control
/// plane answers itself (changes, reports).
/// This process's executable SHA-256 as far as it is known: the first question starts hashing
/// it on a blocking thread and is answered without it (empty), later ones read it from `cell`.
/// Status never waits for a large binary to be hashed, and nothing is hashed at start, when a
/// planned upgrade's successor should spend its time taking over.
fn own_sha256(cell: &Arc<std::sync::OnceLock<String>>, started: &Arc<AtomicBool>) -> String {
    if let Some(known) = cell.get() {
        return known.clone();
    }
    if !started.swap(true, Ordering::AcqRel) {
        let cell = cell.clone();
        tokio::task::spawn_blocking(move || match artifact::self_sha256() {
            Ok(sha256) => {
                let _ = cell.set(sha256);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot hash this gateway's executable for status")
            }
        });
    }
    String::new()
}

fn core_request(request: ControlRequest) -> Option<CoreRequest> {
    Some(match request {
        ControlRequest::Status => CoreRequest::Status,
        ControlRequest::Switch { .. } => CoreRequest::Switch,
        ControlRequest::Rollback { .. } => CoreRequest::Rollback,
        ControlRequest::Canary {
            percent, symbols, ..
        } => CoreRequest::Canary { percent, symbols },
        ControlRequest::Stage { engine, .. } => CoreRequest::Stage { engine },
        ControlRequest::Resume { symbols, .. } => CoreRequest::Resume { symbols },
        ControlRequest::UpgradeGateway { .. }
        | ControlRequest::ChangeFile { .. }
        | ControlRequest::ChangeApprove { .. }
        | ControlRequest::ChangeClose { .. }
        | ControlRequest::ChangeReport { .. }
        | ControlRequest::ChangeList => return None,
    })
}

/// The sequencer's answer as the endpoint writes it.
fn control_reply(reply: CoreReply) -> ControlReply {
    match reply {
        CoreReply::Status(status) => ControlReply::Status(Status::from(*status)),
        CoreReply::Switched(report) => ControlReply::Switched(report),
        CoreReply::Staged {
            engine,
            artifact_sha256,
        } => ControlReply::Staged {
            engine,
            artifact_sha256,
        },
        CoreReply::Resumed { symbols } => ControlReply::Resumed { symbols },
        CoreReply::Refused { reason } => ControlReply::Refused { reason },
    }
}

/// Resolves once the gateway is shutting down; releases the watch borrow before returning so the
/// task stays `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn answer(reply: Option<oneshot::Sender<ControlReply>>, outcome: ControlReply) {
    if let Some(reply) = reply {
        let _ = reply.send(outcome);
    }
}

fn refused(reason: String) -> ControlReply {
    ControlReply::Refused { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::{SwitchReport, SwitchScope};
    use std::path::Path;

    /// A plane over a fresh log in `dir`, with a fake sequencer that records every command it gets
    /// together with the audit log's last line at that moment, and switches.
    struct Harness {
        plane: Plane,
        seen: mpsc::Receiver<(CoreRequest, Option<String>, String)>,
        log: PathBuf,
    }

    fn harness(dir: &Path, policy: Policy) -> Harness {
        let log = dir.join("audit.log");
        let (core_tx, mut core_rx) = mpsc::channel::<CoreCall>(8);
        let (seen_tx, seen) = mpsc::channel(8);
        let log_for_core = log.clone();
        tokio::spawn(async move {
            while let Some(CoreCall { command, reply }) = core_rx.recv().await {
                let last_line = std::fs::read_to_string(&log_for_core)
                    .unwrap_or_default()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_owned();
                let scope = match &command.request {
                    CoreRequest::Canary { .. } => SwitchScope::CanaryStarted {
                        symbols: vec!["MSFT".into()],
                    },
                    _ => SwitchScope::All,
                };
                let answer = match &command.request {
                    CoreRequest::Status => CoreReply::Status(Box::default()),
                    _ => CoreReply::Switched(SwitchReport {
                        from: "blue".into(),
                        to: "green".into(),
                        barrier_seq: 7,
                        pause_us: 3,
                        planned: true,
                        rollback: false,
                        scope,
                    }),
                };
                if !matches!(command.request, CoreRequest::Status) {
                    let _ = seen_tx
                        .send((
                            command.request.clone(),
                            command.expect_sha256.clone(),
                            last_line,
                        ))
                        .await;
                }
                let _ = reply.send(answer);
            }
        });
        let config = PlaneConfig {
            audit_path: log.clone(),
            policy,
            build: "test".into(),
            stage_dir: dir.join("stage"),
        };
        let plane = Plane::open(&config, Some(core_tx)).expect("open plane");
        Harness { plane, seen, log }
    }

    /// Runs an action through the plane to its answer, handling the outcome like `run` does.
    async fn action(plane: &mut Plane, request: ControlRequest) -> ControlReply {
        let (reply, mut answer) = oneshot::channel();
        plane
            .on_command(ControlCommand {
                request,
                reply,
                expect_sha256: None,
                canary_only: false,
                peer_uid: None,
            })
            .await;
        loop {
            if let Ok(answer) = answer.try_recv() {
                return answer;
            }
            let pending = plane.outcomes_rx.recv().await.expect("outcome");
            plane.on_outcome(pending).await;
        }
    }

    /// `by` approves `change`, which must succeed.
    async fn approve(plane: &mut Plane, by: &str, change: &str) {
        let approval = ControlRequest::ChangeApprove {
            operator: Some(by.into()),
            change: change.into(),
        };
        let reply = action(plane, approval).await;
        assert!(matches!(reply, ControlReply::Change(_)), "{reply:?}");
    }

    fn events(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .expect("log")
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("json line");
                value["event"]["event"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    fn file_request(artifact: &Path, sha256: &str, by: &str) -> ControlRequest {
        ControlRequest::ChangeFile {
            operator: Some(by.into()),
            artifact_path: artifact.display().to_string(),
            artifact_sha256: sha256.into(),
            reason: "new matching build".into(),
            window_start: "2020-01-01T00:00:00Z".into(),
            window_end: "2099-01-01T00:00:00Z".into(),
            expected_divergence: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_switch_without_an_approved_change_is_refused_audited_and_never_reaches_the_sequencer()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = harness(dir.path(), Policy::default());
        let reply = action(&mut h.plane, ControlRequest::switch("alice")).await;
        assert!(
            matches!(&reply, ControlReply::Refused { reason } if reason.contains("approved change")),
            "{reply:?}"
        );
        assert!(
            h.seen.try_recv().is_err(),
            "the sequencer got a refused switch"
        );
        assert_eq!(events(&h.log), ["gateway-started", "action-refused"]);
    }

    #[tokio::test]
    async fn an_approved_change_switches_after_the_request_is_durably_logged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifact = dir.path().join("engine-v2");
        std::fs::write(&artifact, b"engine build 2").expect("artifact");
        let sha = artifact::sha256_file(&artifact).expect("hash");
        let mut h = harness(dir.path(), Policy::default());

        let wrong = "0".repeat(64);
        let reply = action(&mut h.plane, file_request(&artifact, &wrong, "alice")).await;
        assert!(
            matches!(&reply, ControlReply::Refused { reason } if reason.contains("not the build you named")),
            "{reply:?}"
        );
        let reply = action(&mut h.plane, file_request(&artifact, &sha, "alice")).await;
        let ControlReply::Change(filed) = reply else {
            panic!("filed: {reply:?}");
        };
        assert_eq!(filed.id, "CHG-1");
        let self_approval = ControlRequest::ChangeApprove {
            operator: Some("alice".into()),
            change: "CHG-1".into(),
        };
        assert!(matches!(
            action(&mut h.plane, self_approval).await,
            ControlReply::Refused { .. }
        ));
        approve(&mut h.plane, "bob", "CHG-1").await;

        let switch = ControlRequest::Switch {
            operator: Some("alice".into()),
            change: Some("CHG-1".into()),
        };
        let reply = action(&mut h.plane, switch).await;
        assert!(matches!(reply, ControlReply::Switched(_)), "{reply:?}");
        let (request, expect_sha256, last_line) = h.seen.recv().await.expect("forwarded");
        assert!(matches!(request, CoreRequest::Switch));
        // The engine taking authority must run the approved artifact.
        assert_eq!(expect_sha256.as_deref(), Some(sha.as_str()));
        // Invariant 7: when the sequencer got the switch, its request was already on disk.
        assert!(
            last_line.contains("\"action-requested\"") && last_line.contains("\"alice\""),
            "{last_line}"
        );
        assert_eq!(
            events(&h.log),
            [
                "gateway-started",
                "change-filed",
                "change-approved",
                "action-requested",
                "action-completed"
            ]
        );

        // The book survives a restart: it is rebuilt from the log alone.
        drop(h);
        let mut h = harness(dir.path(), Policy::default());
        let ControlReply::Report(report) = action(
            &mut h.plane,
            ControlRequest::ChangeReport { change: "1".into() },
        )
        .await
        else {
            panic!("report");
        };
        assert_eq!(report.change.approved_by, vec!["bob".to_owned()]);
        assert_eq!(report.actions.len(), 1);
        assert_eq!(report.change.artifact_sha256, sha);
    }

    #[tokio::test]
    async fn a_switch_waits_on_the_writer_thread_until_its_request_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = Policy {
            approval_required: Vec::new(),
            approvals_min: 1,
            ..Policy::default()
        };
        let Harness {
            plane,
            mut seen,
            log,
        } = harness(dir.path(), policy);
        let (mut plane, hold) = plane.hold_audit_writes();
        let switching = tokio::spawn(async move {
            let reply = action(&mut plane, ControlRequest::switch("alice")).await;
            (plane, reply)
        });
        // The request reaches the writer thread and is held there, unwritten.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while hold.arrived.try_recv().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the request never reached the writer"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // However long it is held, the switch does not reach the sequencer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            seen.try_recv().is_err(),
            "the switch ran before its request was written"
        );
        assert!(!switching.is_finished());
        assert_eq!(events(&log), ["gateway-started"]);
        // Released, the request is written and only then does the switch run.
        drop(hold);
        let (_plane, reply) = switching.await.expect("plane task");
        assert!(matches!(reply, ControlReply::Switched(_)), "{reply:?}");
        let (request, _, last_line) = seen.recv().await.expect("forwarded");
        assert!(matches!(request, CoreRequest::Switch));
        assert!(
            last_line.contains("\"action-requested\"") && last_line.contains("\"alice\""),
            "{last_line}"
        );
        assert_eq!(
            events(&log),
            ["gateway-started", "action-requested", "action-completed"]
        );
    }

    #[tokio::test]
    async fn when_the_audit_log_cannot_be_written_no_action_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = Policy {
            approval_required: Vec::new(),
            approvals_min: 1,
            ..Policy::default()
        };
        let mut h = harness(dir.path(), policy);
        h.plane.fail_appends = true;
        for request in [
            ControlRequest::switch("alice"),
            ControlRequest::rollback("alice"),
        ] {
            let reply = action(&mut h.plane, request).await;
            assert!(
                matches!(&reply, ControlReply::Refused { reason } if reason.contains("audit log not written")),
                "{reply:?}"
            );
        }
        assert!(
            h.seen.try_recv().is_err(),
            "an unaudited action reached the sequencer"
        );
        h.plane.fail_appends = false;
        let reply = action(&mut h.plane, ControlRequest::switch("alice")).await;
        assert!(matches!(reply, ControlReply::Switched(_)), "{reply:?}");
        assert!(h.seen.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_gate_breach_is_audited_then_rolled_back_by_the_gateway() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = harness(dir.path(), Policy::default());
        let breach = crate::control::api::GateBreach {
            gate: "error-rate".into(),
            observed: 0.5,
            limit: 0.001,
            compared: 2,
            since_seq: 5,
        };
        // The sequencer repeats a breach until the canary ends; one rollback at a time.
        h.plane
            .on_event(CoreEvent::GateBreached(breach.clone()))
            .await;
        h.plane.on_event(CoreEvent::GateBreached(breach)).await;
        let pending = h.plane.outcomes_rx.recv().await.expect("rollback outcome");
        h.plane.on_outcome(pending).await;
        let (request, _, last_line) = h.seen.recv().await.expect("rollback forwarded");
        assert!(matches!(request, CoreRequest::Rollback));
        assert!(last_line.contains("auto-rollback"), "{last_line}");
        assert!(
            h.seen.try_recv().is_err(),
            "a repeated breach rolled back twice"
        );
        assert_eq!(
            events(&h.log),
            [
                "gateway-started",
                "gate-breached",
                "action-requested",
                "action-completed"
            ]
        );
    }

    #[tokio::test]
    async fn a_canary_is_rolled_back_when_its_change_window_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifact = dir.path().join("engine-v2");
        std::fs::write(&artifact, b"engine build 2").expect("artifact");
        let sha = artifact::sha256_file(&artifact).expect("hash");
        let mut h = harness(dir.path(), Policy::default());
        let now = Timestamp::now();
        let mut filing = file_request(&artifact, &sha, "alice");
        if let ControlRequest::ChangeFile { window_end, .. } = &mut filing {
            *window_end = change::rfc3339(now.plus_millis(3_600_000));
        }
        assert!(matches!(
            action(&mut h.plane, filing).await,
            ControlReply::Change(_)
        ));
        approve(&mut h.plane, "bob", "CHG-1").await;
        let canary = ControlRequest::Canary {
            operator: Some("alice".into()),
            change: Some("CHG-1".into()),
            percent: Some(5),
            symbols: Vec::new(),
        };
        assert!(matches!(
            action(&mut h.plane, canary).await,
            ControlReply::Switched(_)
        ));
        let _ = h.seen.recv().await.expect("canary forwarded");
        // Within the window nothing happens.
        h.plane.on_tick(now.plus_millis(60_000)).await;
        assert!(h.seen.try_recv().is_err());
        // Past it, the close is recorded and the canary rolled back by the gateway.
        h.plane.on_tick(now.plus_millis(2 * 3_600_000)).await;
        let pending = h.plane.outcomes_rx.recv().await.expect("rollback outcome");
        h.plane.on_outcome(pending).await;
        let (request, _, last_line) = h.seen.recv().await.expect("rollback forwarded");
        assert!(matches!(request, CoreRequest::Rollback));
        assert!(last_line.contains("auto-rollback"), "{last_line}");
        let log = events(&h.log);
        let closed = log
            .iter()
            .position(|e| e == "window-closed")
            .expect("audited");
        assert_eq!(log[closed + 1], "action-requested");
    }
}
