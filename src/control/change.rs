//! Change records, approvals and the policy that ties engine authority to them.
//!
//! A change is what a regulator asks about after an upgrade: who wanted which build, why, when it
//! was allowed to happen, who agreed, and what happened when it ran. Here it is not a row in a
//! database but a fold over the audit log: every filing, approval, action, gate breach and
//! failover is a [`ControlEvent`] in the hash-chained log, and [`ChangeBook`] is what those
//! events add up to. The book can therefore always be rebuilt from the log alone (the gateway
//! does so at start, `baton audit report` does so offline), and a report cannot say anything the
//! log does not.
//!
//! Everything here is pure: time comes in as an argument, nothing is read from a clock, a file
//! or a socket. The control plane ([`super::plane`]) does the I/O: it asks the book whether an
//! action is allowed, writes the event to the audit log, and only then lets the action run.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::api::{GateBreach, ShadowStatus, SwitchReport, SwitchScope};
use crate::fix::time::Timestamp;
use crate::gateway::core::ExpectedDivergence;

/// A change's number. Shown as `CHG-n`; operators may type either form.
pub type ChangeId = u64;

/// Whether two recorded actors are the same person for the two-person rule: the same name,
/// whatever its case and whatever account (`alice (uid 1000)`) it came from, since the account
/// is recorded as evidence but one person can have several.
pub fn same_person(a: &str, b: &str) -> bool {
    person(a).eq_ignore_ascii_case(person(b))
}

/// The name part of an actor: without the ` (uid N)` the control plane appends.
fn person(actor: &str) -> &str {
    split_actor(actor).0
}

/// The OS account a recorded actor's command came from, when the kernel said (` (uid N)`).
pub fn actor_uid(actor: &str) -> Option<u32> {
    split_actor(actor).1
}

/// An actor as its name and the uid the control plane appended, if any.
fn split_actor(actor: &str) -> (&str, Option<u32>) {
    match actor.rsplit_once(" (uid ") {
        Some((name, uid))
            if uid.ends_with(')') && uid[..uid.len() - 1].bytes().all(|b| b.is_ascii_digit()) =>
        {
            (name, uid[..uid.len() - 1].parse().ok())
        }
        _ => (actor, None),
    }
}

/// Formats a change id the way operators see it.
pub fn change_name(id: ChangeId) -> String {
    format!("CHG-{id}")
}

/// Reads `CHG-7`, `chg-7` or `7`.
pub fn parse_change(text: &str) -> Result<ChangeId, PolicyError> {
    let trimmed = text.trim();
    let digits = trimmed
        .strip_prefix("CHG-")
        .or_else(|| trimmed.strip_prefix("chg-"))
        .unwrap_or(trimmed);
    digits
        .parse::<ChangeId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| PolicyError::BadChangeId(text.to_owned()))
}

/// What may move authority between engines. Each kind can be made to need an approved change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Every symbol to the standby.
    Switch,
    /// Some symbols to the standby.
    Canary {
        /// The requested share, if given as a share.
        percent: Option<u8>,
        /// The requested symbols, if given by name.
        symbols: Vec<String>,
    },
    /// Back out: end the canary or undo the last switch.
    Rollback,
    /// The gateway's own rollback after a gate breach.
    AutoRollback,
    /// Restart an engine from the change's artifact.
    Stage {
        /// Which engine.
        engine: String,
    },
    /// Halted symbols trade again after reconciliation.
    Resume {
        /// Which.
        symbols: Vec<String>,
    },
    /// Replace the gateway process by the change's artifact (sockets and sessions handed over).
    UpgradeGateway,
}

impl Action {
    /// The policy name of the action (`switch`, `canary`, `rollback`).
    pub fn policy_name(&self) -> &'static str {
        match self {
            Action::Switch => "switch",
            Action::Canary { .. } => "canary",
            Action::Rollback | Action::AutoRollback => "rollback",
            Action::Resume { .. } => "resume",
            Action::Stage { .. } => "stage",
            Action::UpgradeGateway => "upgrade-gateway",
        }
    }
}

/// Everything the control plane writes to the audit log. The actor (operator name, or
/// `gateway` for what the gateway does by itself) is part of the audit record, not of the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum ControlEvent {
    /// The control plane started with this log; records after it are from this run.
    GatewayStarted {
        /// The gateway's own build.
        build: String,
    },
    /// A change was filed.
    ChangeFiled {
        /// Its number, one more than the last.
        change: ChangeId,
        /// Absolute path of the artifact.
        artifact_path: String,
        /// SHA-256 of the artifact's bytes, checked by the gateway when filed.
        artifact_sha256: String,
        /// Why.
        reason: String,
        /// Start of the window, ns since the epoch.
        window_start: Timestamp,
        /// End of the window.
        window_end: Timestamp,
        /// Divergence the new build is expected to show (absent from records of changes that
        /// declare none, so older records hash as they did).
        #[serde(default, skip_serializing_if = "ExpectedDivergence::is_empty")]
        expected_divergence: ExpectedDivergence,
    },
    /// A second operator approved it.
    ChangeApproved {
        /// Which change.
        change: ChangeId,
    },
    /// Closed; nothing may name it any more.
    ChangeClosed {
        /// Which change.
        change: ChangeId,
    },
    /// An action was allowed and is about to run. Written before the action is handed to the
    /// sequencer: a crash in between leaves a request without an outcome, never the reverse.
    ActionRequested {
        /// The change it belongs to.
        change: Option<ChangeId>,
        /// What.
        action: Action,
    },
    /// It ran.
    ActionCompleted {
        /// The change it belongs to.
        change: Option<ChangeId>,
        /// What.
        action: Action,
        /// The barrier, who had authority before and after, and the pause.
        report: SwitchReport,
        /// Shadow comparison counters when it completed: the evidence it was safe.
        shadow: ShadowStatus,
    },
    /// It was refused, by policy before it was requested or by the sequencer after.
    ActionRefused {
        /// The change it named.
        change: Option<ChangeId>,
        /// What.
        action: Action,
        /// Why.
        reason: String,
    },
    /// A canary gate tripped; an automatic rollback follows.
    GateBreached {
        /// The change the canary belongs to.
        change: Option<ChangeId>,
        /// What tripped.
        breach: GateBreach,
    },
    /// The authoritative engine died or fell silent and the standby took over.
    Failover {
        /// The change in progress at the time, if any.
        change: Option<ChangeId>,
        /// From, to, and where.
        report: SwitchReport,
    },
    /// A planned switch completed after the control plane had stopped waiting for it (its
    /// request is earlier in the log, with a refusal for the timeout).
    CompletedLate {
        /// The change in progress, if any.
        change: Option<ChangeId>,
        /// What moved.
        report: SwitchReport,
    },
    /// An engine was set to run the change's artifact from its next start.
    Staged {
        /// The change.
        change: Option<ChangeId>,
        /// The engine.
        engine: String,
        /// The artifact's SHA-256.
        artifact_sha256: String,
    },
    /// Halted symbols were resumed by an operator.
    Resumed {
        /// The change in progress, if any.
        change: Option<ChangeId>,
        /// Which.
        symbols: Vec<String>,
    },
    /// An engine answered differently from the engine whose answers were delivered: its book
    /// on these symbols is not what the counterparties were told.
    Diverged {
        /// The engine.
        engine: String,
        /// The symbols newly diverged.
        symbols: Vec<String>,
    },
    /// The engine was restored from a snapshot: its divergence is gone (all symbols when empty).
    DivergenceCleared {
        /// The engine.
        engine: String,
        /// The symbols; empty for all.
        symbols: Vec<String>,
    },
    /// Symbols halted: their owner's book differs from what the counterparties were told.
    Halted {
        /// The symbols.
        symbols: Vec<String>,
    },
    /// The window of a change with a running canary closed; the gateway rolls the canary back.
    WindowClosed {
        /// The change.
        change: ChangeId,
    },
    /// Outputs of an input on a halted symbol, not delivered, kept for reconciliation.
    OutputsWithheld {
        /// The input.
        input_seq: u64,
        /// Its symbol.
        symbol: String,
        /// The outputs as text.
        outputs: String,
    },
    /// The gateway found part of a record at the end of the audit log (a crashed append, or an
    /// edit) and cut it; the bytes are in `kept`.
    AuditTailCut {
        /// How many bytes were cut.
        bytes: u64,
        /// The file beside the log that holds them.
        kept: String,
        /// Their SHA-256.
        sha256: String,
        /// The last record left before them.
        after_seq: u64,
    },
    /// An operator acknowledged records that failed verification (`baton audit acknowledge`):
    /// they left the log for `kept`, and the chain goes on from the last good record.
    TamperAcknowledged {
        /// Why the operator says it is safe to go on.
        reason: String,
        /// What verification found at the first bad line.
        first_bad: String,
        /// How many bytes were moved.
        bytes: u64,
        /// The file beside the log that holds them.
        kept: String,
        /// Their SHA-256.
        sha256: String,
        /// The last good record.
        after_seq: u64,
    },
    /// The gateway stopped at its barrier and hands its sockets and sessions to the change's
    /// build (written before the hand-over begins).
    GatewayHandingOver {
        /// The change.
        change: Option<ChangeId>,
        /// The build taking over.
        artifact_sha256: String,
        /// When input stopped being read (ns since the epoch).
        barrier_unix_ns: u64,
    },
    /// The gateway started by a planned upgrade serves the handed-over sessions.
    GatewayUpgraded {
        /// The change.
        change: Option<ChangeId>,
        /// What it measured.
        upgrade: super::api::GatewayUpgrade,
    },
    /// An engine attached: which build and which bytes it runs.
    EngineAttached {
        /// Its name.
        name: String,
        /// Its build version.
        build_version: String,
        /// SHA-256 of its executable, as it reported it.
        executable_sha256: String,
    },
}

impl From<crate::gateway::core::CoreRecord> for ControlEvent {
    fn from(record: crate::gateway::core::CoreRecord) -> ControlEvent {
        use crate::gateway::core::CoreRecord;
        match record {
            CoreRecord::Diverged { engine, symbols } => ControlEvent::Diverged { engine, symbols },
            CoreRecord::DivergenceCleared { engine, symbols } => {
                ControlEvent::DivergenceCleared { engine, symbols }
            }
            CoreRecord::Halted { symbols } => ControlEvent::Halted { symbols },
            CoreRecord::OutputsWithheld {
                input_seq,
                symbol,
                outputs,
            } => ControlEvent::OutputsWithheld {
                input_seq,
                symbol,
                outputs,
            },
            CoreRecord::EngineAttached {
                name,
                build_version,
                executable_sha256,
            } => ControlEvent::EngineAttached {
                name,
                build_version,
                executable_sha256,
            },
        }
    }
}

impl ControlEvent {
    /// The change this event belongs to, if any.
    pub fn change(&self) -> Option<ChangeId> {
        match self {
            ControlEvent::ChangeFiled { change, .. }
            | ControlEvent::ChangeApproved { change }
            | ControlEvent::ChangeClosed { change }
            | ControlEvent::WindowClosed { change } => Some(*change),
            ControlEvent::ActionRequested { change, .. }
            | ControlEvent::ActionCompleted { change, .. }
            | ControlEvent::ActionRefused { change, .. }
            | ControlEvent::GateBreached { change, .. }
            | ControlEvent::Failover { change, .. }
            | ControlEvent::CompletedLate { change, .. }
            | ControlEvent::Resumed { change, .. }
            | ControlEvent::Staged { change, .. }
            | ControlEvent::GatewayHandingOver { change, .. }
            | ControlEvent::GatewayUpgraded { change, .. } => *change,
            ControlEvent::GatewayStarted { .. }
            | ControlEvent::AuditTailCut { .. }
            | ControlEvent::TamperAcknowledged { .. }
            | ControlEvent::EngineAttached { .. }
            | ControlEvent::Diverged { .. }
            | ControlEvent::DivergenceCleared { .. }
            | ControlEvent::Halted { .. }
            | ControlEvent::OutputsWithheld { .. } => None,
        }
    }
}

/// Where a change is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeState {
    /// Filed, waiting for approval.
    Filed,
    /// Approved; actions may name it within its window.
    Approved,
    /// Closed; no action may name it.
    Closed,
}

impl fmt::Display for ChangeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeState::Filed => "filed",
            ChangeState::Approved => "approved",
            ChangeState::Closed => "closed",
        })
    }
}

/// One change as the book knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSummary {
    /// `CHG-n`.
    pub id: String,
    /// Where it is.
    pub state: ChangeState,
    /// Who filed it.
    pub filed_by: String,
    /// When (ns since the epoch).
    pub filed_at: Timestamp,
    /// The artifact's absolute path.
    pub artifact_path: String,
    /// Its SHA-256.
    pub artifact_sha256: String,
    /// Why.
    pub reason: String,
    /// Window start.
    pub window_start: Timestamp,
    /// Window end.
    pub window_end: Timestamp,
    /// Who approved it, in order.
    pub approved_by: Vec<String>,
    /// Actions completed under it.
    pub actions_completed: u64,
    /// Divergence the new build is expected to show: the canary gates judge those answers on
    /// reject rate and latency, not equality.
    #[serde(default, skip_serializing_if = "ExpectedDivergence::is_empty")]
    pub expected_divergence: ExpectedDivergence,
}

/// What the policy requires; from `[control]` in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Actions (`switch`, `canary`) that run only under an approved change in its window.
    pub approval_required: Vec<String>,
    /// Approvals, by operators other than the filer, a change needs.
    pub approvals_min: usize,
    /// OS account name → the people who act from it (`[control.operators]`). A listed account
    /// may act only under those names; two people approve each other's changes from one account
    /// only where both are listed for it. Unlisted accounts act under any name, but an approval
    /// from the filer's own account is refused: names are typed, accounts are not.
    pub operators: BTreeMap<String, Vec<String>>,
}

impl Policy {
    /// Refuses `operator` acting from `account` when the account is declared to be other people.
    pub fn check_account(&self, account: Option<&str>, operator: &str) -> Result<(), PolicyError> {
        let Some((account, people)) =
            account.and_then(|account| Some((account, self.operators.get(account)?)))
        else {
            return Ok(());
        };
        if people.iter().any(|name| same_person(name, operator)) {
            return Ok(());
        }
        Err(PolicyError::NotAccountsOperator {
            account: account.to_owned(),
            operator: person(operator).to_owned(),
            people: people.join(", "),
        })
    }

    /// Whether `a` and `b` are declared as two people sharing `account`.
    fn shared_by(&self, account: &str, a: &str, b: &str) -> bool {
        self.operators.get(account).is_some_and(|people| {
            people.iter().any(|name| same_person(name, a))
                && people.iter().any(|name| same_person(name, b))
        })
    }
}

impl Default for Policy {
    /// What a regulated venue expects when nothing is said: nothing moves authority to a new
    /// build without a second person's approval.
    fn default() -> Policy {
        Policy {
            approval_required: vec!["stage".into(), "switch".into(), "canary".into()],
            approvals_min: 1,
            operators: BTreeMap::new(),
        }
    }
}

/// Why the policy says no, in words an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a change number.
    #[error("{0:?} is not a change id (expected CHG-n or n)")]
    BadChangeId(String),
    /// No such change.
    #[error("no change {0}")]
    UnknownChange(String),
    /// The request named no operator.
    #[error("the request names no operator (pass --operator NAME)")]
    NoOperator,
    /// A field of a filing is unusable.
    #[error("cannot file the change: {0}")]
    BadFiling(String),
    /// The filer tried to approve their own change.
    #[error("{operator} filed {change} and cannot approve it: a second operator must")]
    SelfApproval {
        /// Who tried.
        operator: String,
        /// Which change.
        change: String,
    },
    /// The approval comes from the OS account the change was filed from.
    #[error(
        "{operator} approves {change} from the OS account that filed it ({account}): a second person approves from their own account, or [control.operators] declares the people who share it"
    )]
    SameAccount {
        /// Who tried.
        operator: String,
        /// Which change.
        change: String,
        /// The shared account, by name where it has one.
        account: String,
    },
    /// The OS account is declared to be other people.
    #[error("OS account {account} acts as {people} ([control.operators]), not as {operator}")]
    NotAccountsOperator {
        /// The account the command came from.
        account: String,
        /// The name the command gave.
        operator: String,
        /// The names declared for the account.
        people: String,
    },
    /// The same operator approved twice.
    #[error("{operator} already approved {change}")]
    AlreadyApproved {
        /// Who.
        operator: String,
        /// Which change.
        change: String,
    },
    /// The change is closed.
    #[error("{0} is closed")]
    Closed(String),
    /// A canary of the change is still running.
    #[error("a canary of {0} is running: complete it (switch) or end it (rollback) first")]
    CanaryRunning(String),
    /// The action needs an approved change and none was named.
    #[error(
        "policy requires an approved change for {action}: file one (baton ctl change file), have a second operator approve it, and pass --change"
    )]
    ChangeRequired {
        /// The action's policy name.
        action: String,
    },
    /// The named change is not approved (enough).
    #[error("{change} is not approved ({approvals} of {needed} approvals)")]
    NotApproved {
        /// Which change.
        change: String,
        /// Approvals so far.
        approvals: usize,
        /// Approvals needed.
        needed: usize,
    },
    /// Now is outside the change's window.
    #[error("{change} may run from {start} to {end}; it is {now}")]
    OutsideWindow {
        /// Which change.
        change: String,
        /// Window start (RFC 3339).
        start: String,
        /// Window end.
        end: String,
        /// Now.
        now: String,
    },
}

/// One change inside the book.
#[derive(Clone, Debug)]
struct Change {
    /// What [`ChangeSummary`] shows.
    summary: ChangeSummary,
}

/// The changes, as the audit log's events add up. Rebuilt from the log at start; kept in step by
/// [`ChangeBook::apply`] on every event appended after.
#[derive(Clone, Debug, Default)]
pub struct ChangeBook {
    /// By id; ordered so lists and reports come out oldest first, the same every time.
    changes: BTreeMap<ChangeId, Change>,
    /// The change of the last action that completed, for attributing a failover or gate breach.
    active: Option<ChangeId>,
    /// The change whose canary is running, if one is: it cannot be closed under it.
    canary: Option<ChangeId>,
}

impl ChangeBook {
    /// The book the given events add up to, in log order.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = (&'a str, Timestamp, &'a ControlEvent)>,
    ) -> ChangeBook {
        let mut book = ChangeBook::default();
        for (actor, time, event) in events {
            book.apply(actor, time, event);
        }
        book
    }

    /// Folds one event in. Events come from the log, which only holds what the policy allowed,
    /// so nothing is checked again here; an event about an unknown change is skipped.
    pub fn apply(&mut self, actor: &str, time: Timestamp, event: &ControlEvent) {
        match event {
            ControlEvent::ChangeFiled {
                change,
                artifact_path,
                artifact_sha256,
                reason,
                window_start,
                window_end,
                expected_divergence,
            } => {
                self.changes.insert(
                    *change,
                    Change {
                        summary: ChangeSummary {
                            id: change_name(*change),
                            state: ChangeState::Filed,
                            filed_by: actor.to_owned(),
                            filed_at: time,
                            artifact_path: artifact_path.clone(),
                            artifact_sha256: artifact_sha256.clone(),
                            reason: reason.clone(),
                            window_start: *window_start,
                            window_end: *window_end,
                            approved_by: Vec::new(),
                            actions_completed: 0,
                            expected_divergence: expected_divergence.clone(),
                        },
                    },
                );
            }
            ControlEvent::ChangeApproved { change } => {
                if let Some(entry) = self.changes.get_mut(change) {
                    entry.summary.approved_by.push(actor.to_owned());
                    if entry.summary.state == ChangeState::Filed {
                        entry.summary.state = ChangeState::Approved;
                    }
                }
            }
            ControlEvent::ChangeClosed { change } => {
                if let Some(entry) = self.changes.get_mut(change) {
                    entry.summary.state = ChangeState::Closed;
                }
                if self.active == Some(*change) {
                    self.active = None;
                }
            }
            ControlEvent::ActionCompleted { change, report, .. } => {
                if let Some(id) = change
                    && let Some(entry) = self.changes.get_mut(id)
                {
                    entry.summary.actions_completed += 1;
                    self.active = Some(*id);
                }
                self.track_canary(*change, &report.scope);
            }
            ControlEvent::Failover { change, report }
            | ControlEvent::CompletedLate { change, report } => {
                self.track_canary(*change, &report.scope);
            }
            // A gateway starts without a canary: whatever ran before the restart ended with it.
            ControlEvent::GatewayStarted { .. } => self.canary = None,
            _ => {}
        }
    }

    /// Follows whether a canary is running, and under which change, from what moved.
    fn track_canary(&mut self, change: Option<ChangeId>, scope: &SwitchScope) {
        match scope {
            SwitchScope::CanaryStarted { .. } => self.canary = change,
            SwitchScope::CanaryEnded { .. } | SwitchScope::All => self.canary = None,
        }
    }

    /// The number the next filing gets.
    pub fn next_id(&self) -> ChangeId {
        self.changes.keys().next_back().map_or(1, |last| last + 1)
    }

    /// The change whose canary is running, with the end of its window: a canary ends with the
    /// window it was approved for.
    pub fn canary_window_end(&self) -> Option<(ChangeId, Timestamp)> {
        let id = self.canary?;
        Some((id, self.summary(id)?.window_end))
    }

    /// The change the last completed action belonged to, while it is open: a failover or a gate
    /// breach is recorded against it.
    pub fn active(&self) -> Option<ChangeId> {
        self.active.filter(|id| {
            self.changes
                .get(id)
                .is_some_and(|c| c.summary.state != ChangeState::Closed)
        })
    }

    /// One change.
    pub fn summary(&self, id: ChangeId) -> Option<&ChangeSummary> {
        self.changes.get(&id).map(|c| &c.summary)
    }

    /// Every change, oldest first.
    pub fn summaries(&self) -> Vec<ChangeSummary> {
        self.changes.values().map(|c| c.summary.clone()).collect()
    }

    /// Changes not closed.
    pub fn open(&self) -> Vec<ChangeSummary> {
        self.changes
            .values()
            .filter(|c| c.summary.state != ChangeState::Closed)
            .map(|c| c.summary.clone())
            .collect()
    }

    /// Checks a filing and returns the event to log. The artifact's hash has been checked by the
    /// caller (it needs the file system).
    pub fn check_file(
        &self,
        operator: Option<&str>,
        artifact_path: &str,
        artifact_sha256: &str,
        reason: &str,
        window: (Timestamp, Timestamp),
        now: Timestamp,
    ) -> Result<ControlEvent, PolicyError> {
        operator.ok_or(PolicyError::NoOperator)?;
        if reason.trim().is_empty() {
            return Err(PolicyError::BadFiling("the reason is empty".into()));
        }
        let (start, end) = window;
        if end <= start {
            return Err(PolicyError::BadFiling(format!(
                "the window ends ({}) at or before it starts ({})",
                rfc3339(end),
                rfc3339(start)
            )));
        }
        if end <= now {
            return Err(PolicyError::BadFiling(format!(
                "the window ended at {}; it is {}",
                rfc3339(end),
                rfc3339(now)
            )));
        }
        Ok(ControlEvent::ChangeFiled {
            change: self.next_id(),
            artifact_path: artifact_path.to_owned(),
            artifact_sha256: artifact_sha256.to_owned(),
            reason: reason.trim().to_owned(),
            window_start: start,
            window_end: end,
            expected_divergence: ExpectedDivergence::default(),
        })
    }

    /// Checks an approval: by someone other than the filer, once per person, of an open change.
    pub fn check_approve(
        &self,
        operator: Option<&str>,
        change: &str,
    ) -> Result<ControlEvent, PolicyError> {
        let operator = operator.ok_or(PolicyError::NoOperator)?;
        let id = parse_change(change)?;
        let summary = self.open_change(id)?;
        if same_person(&summary.filed_by, operator) {
            return Err(PolicyError::SelfApproval {
                operator: operator.to_owned(),
                change: summary.id.clone(),
            });
        }
        if summary
            .approved_by
            .iter()
            .any(|by| same_person(by, operator))
        {
            return Err(PolicyError::AlreadyApproved {
                operator: operator.to_owned(),
                change: summary.id.clone(),
            });
        }
        Ok(ControlEvent::ChangeApproved { change: id })
    }

    /// Checks that an approval does not come from the account the change was filed from, unless
    /// the policy declares both people for that account. Both accounts come from the recorded
    /// actors (` (uid N)`); where the kernel did not say, there is nothing to compare.
    /// `account_name` names a uid (the password database, in the plane).
    pub fn check_approval_account(
        &self,
        policy: &Policy,
        operator: &str,
        change: &str,
        account_name: impl Fn(u32) -> Option<String>,
    ) -> Result<(), PolicyError> {
        let id = parse_change(change)?;
        let summary = self.open_change(id)?;
        let (Some(filer_uid), Some(approver_uid)) =
            (actor_uid(&summary.filed_by), actor_uid(operator))
        else {
            return Ok(());
        };
        if filer_uid != approver_uid {
            return Ok(());
        }
        let account = account_name(approver_uid);
        if account
            .as_deref()
            .is_some_and(|account| policy.shared_by(account, &summary.filed_by, operator))
        {
            return Ok(());
        }
        Err(PolicyError::SameAccount {
            operator: person(operator).to_owned(),
            change: summary.id.clone(),
            account: match account {
                Some(name) => format!("{name}, uid {approver_uid}"),
                None => format!("uid {approver_uid}"),
            },
        })
    }

    /// Checks a closing.
    pub fn check_close(
        &self,
        operator: Option<&str>,
        change: &str,
    ) -> Result<ControlEvent, PolicyError> {
        operator.ok_or(PolicyError::NoOperator)?;
        let id = parse_change(change)?;
        self.open_change(id)?;
        if self.canary == Some(id) {
            return Err(PolicyError::CanaryRunning(change_name(id)));
        }
        Ok(ControlEvent::ChangeClosed { change: id })
    }

    /// Whether `action` may run now under `change`. Returns the change it runs under (if any)
    /// and, where the change names one, the artifact hash the target engine must be running.
    pub fn authorize(
        &self,
        policy: &Policy,
        action: &Action,
        operator: Option<&str>,
        change: Option<&str>,
        now: Timestamp,
    ) -> Result<(Option<ChangeId>, Option<String>), PolicyError> {
        if *action != Action::AutoRollback {
            operator.ok_or(PolicyError::NoOperator)?;
        }
        let needs_approval = policy
            .approval_required
            .iter()
            .any(|name| name == action.policy_name());
        let Some(change) = change else {
            if needs_approval || matches!(action, Action::Stage { .. } | Action::UpgradeGateway) {
                return Err(PolicyError::ChangeRequired {
                    action: action.policy_name().to_owned(),
                });
            }
            return Ok((None, None));
        };
        let id = parse_change(change)?;
        let summary = self.open_change(id)?;
        // Backing out of a change is always allowed while it is open, whatever its window says.
        if matches!(
            action,
            Action::Rollback | Action::AutoRollback | Action::Resume { .. }
        ) {
            return Ok((Some(id), None));
        }
        let approvals = summary
            .approved_by
            .iter()
            .filter(|by| !same_person(by, &summary.filed_by))
            .count();
        if approvals < policy.approvals_min {
            return Err(PolicyError::NotApproved {
                change: summary.id.clone(),
                approvals,
                needed: policy.approvals_min,
            });
        }
        if now < summary.window_start || now > summary.window_end {
            return Err(PolicyError::OutsideWindow {
                change: summary.id.clone(),
                start: rfc3339(summary.window_start),
                end: rfc3339(summary.window_end),
                now: rfc3339(now),
            });
        }
        Ok((Some(id), Some(summary.artifact_sha256.clone())))
    }

    fn open_change(&self, id: ChangeId) -> Result<&ChangeSummary, PolicyError> {
        let summary = self
            .summary(id)
            .ok_or_else(|| PolicyError::UnknownChange(change_name(id)))?;
        if summary.state == ChangeState::Closed {
            return Err(PolicyError::Closed(summary.id.clone()));
        }
        Ok(summary)
    }
}

/// A change's record for compliance: the change itself, then every audited event that names it,
/// in log order, with the audit chain's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    /// The change as it stands.
    pub change: ChangeSummary,
    /// Its events: seq, time, actor and what.
    pub events: Vec<ReportEvent>,
    /// Completed switches and canaries with their pauses.
    pub actions: Vec<SwitchReport>,
    /// Rollbacks (asked for or automatic) that completed.
    pub rollbacks: u64,
    /// Gate breaches.
    pub gate_breaches: Vec<GateBreach>,
    /// Failovers while the change was in progress.
    pub failovers: u64,
    /// Planned gateway upgrades under the change, with their pauses.
    #[serde(default)]
    pub gateway_upgrades: Vec<super::api::GatewayUpgrade>,
    /// Shadow evidence at the last completed action: matches and divergences.
    pub shadow_matches: u64,
    /// See `shadow_matches`.
    pub shadow_divergences: u64,
    /// Head of the audit chain the report was drawn from (seq, hash): anchors the report.
    pub audit_head_seq: u64,
    /// See `audit_head_seq`.
    pub audit_head_hash: String,
}

/// One event in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportEvent {
    /// Audit record seq.
    pub seq: u64,
    /// When.
    pub time: Timestamp,
    /// Who.
    pub actor: String,
    /// What.
    pub event: ControlEvent,
}

/// Builds the report of `change` from audit records `(seq, time, actor, event)` in log order and
/// the chain's head. Pure: the same log gives the same report, online or offline.
pub fn report<'a>(
    records: impl IntoIterator<Item = (u64, Timestamp, &'a str, &'a ControlEvent)>,
    change: ChangeId,
    head: (u64, &str),
) -> Result<ChangeReport, PolicyError> {
    let mut book = ChangeBook::default();
    let mut events = Vec::new();
    let mut actions = Vec::new();
    let mut rollbacks = 0;
    let mut gate_breaches = Vec::new();
    let mut failovers = 0;
    let mut gateway_upgrades = Vec::new();
    let mut shadow = ShadowStatus::default();
    for (seq, time, actor, event) in records {
        book.apply(actor, time, event);
        if event.change() != Some(change) {
            continue;
        }
        match event {
            ControlEvent::ActionCompleted {
                action,
                report,
                shadow: evidence,
                ..
            } => {
                if matches!(action, Action::Rollback | Action::AutoRollback) {
                    rollbacks += 1;
                }
                actions.push(report.clone());
                shadow = evidence.clone();
            }
            ControlEvent::GateBreached { breach, .. } => gate_breaches.push(breach.clone()),
            ControlEvent::Failover { .. } => failovers += 1,
            ControlEvent::GatewayUpgraded { upgrade, .. } => gateway_upgrades.push(upgrade.clone()),
            _ => {}
        }
        events.push(ReportEvent {
            seq,
            time,
            actor: actor.to_owned(),
            event: event.clone(),
        });
    }
    let summary = book
        .summary(change)
        .cloned()
        .ok_or_else(|| PolicyError::UnknownChange(change_name(change)))?;
    Ok(ChangeReport {
        change: summary,
        events,
        actions,
        rollbacks,
        gate_breaches,
        failovers,
        gateway_upgrades,
        shadow_matches: shadow.matches,
        shadow_divergences: shadow.divergences,
        audit_head_seq: head.0,
        audit_head_hash: head.1.to_owned(),
    })
}

impl ChangeReport {
    /// The report as text a compliance officer reads.
    pub fn render(&self) -> String {
        let c = &self.change;
        let mut out = String::new();
        let _ = writeln!(out, "change      {} ({})", c.id, c.state);
        let _ = writeln!(out, "filed       {} by {}", rfc3339(c.filed_at), c.filed_by);
        let _ = writeln!(out, "reason      {}", c.reason);
        let _ = writeln!(out, "artifact    {}", c.artifact_path);
        let _ = writeln!(out, "sha256      {}", c.artifact_sha256);
        let _ = writeln!(
            out,
            "window      {} to {}",
            rfc3339(c.window_start),
            rfc3339(c.window_end)
        );
        let approvals = if c.approved_by.is_empty() {
            "none".to_owned()
        } else {
            c.approved_by.join(", ")
        };
        let _ = writeln!(out, "approved by {approvals}");
        if !c.expected_divergence.is_empty() {
            let _ = writeln!(
                out,
                "expected    divergence on {}: judged on reject rate and latency, not equality",
                c.expected_divergence.describe()
            );
        }
        let _ = writeln!(
            out,
            "shadow      {} matched, {} diverged (at the last action)",
            self.shadow_matches, self.shadow_divergences
        );
        let _ = writeln!(
            out,
            "actions     {} completed, {} rollbacks, {} gate breaches, {} failovers",
            self.actions.len(),
            self.rollbacks,
            self.gate_breaches.len(),
            self.failovers
        );
        for action in &self.actions {
            let _ = writeln!(
                out,
                "  {} -> {} at input {} ({}), pause {} µs{}",
                action.from,
                action.to,
                action.barrier_seq,
                scope_text(&action.scope),
                action.pause_us,
                if action.rollback { ", rolled back" } else { "" }
            );
        }
        for upgrade in &self.gateway_upgrades {
            let _ = writeln!(
                out,
                "  gateway upgraded to {}: {} sessions handed over, pause {} µs{}",
                upgrade.artifact_sha256,
                upgrade.sessions,
                upgrade.pause_us,
                match upgrade.tls_closed {
                    0 => String::new(),
                    n => format!(", {n} TLS connections closed (not handed over)"),
                }
            );
        }
        for breach in &self.gate_breaches {
            let _ = writeln!(
                out,
                "  gate {} breached: {:.4} over {:.4} after {} inputs",
                breach.gate, breach.observed, breach.limit, breach.compared
            );
        }
        out.push_str("events\n");
        for event in &self.events {
            let what = serde_json::to_string(&event.event).unwrap_or_default();
            let _ = writeln!(
                out,
                "  #{:<5} {} {:<10} {}",
                event.seq,
                rfc3339(event.time),
                event.actor,
                what
            );
        }
        let _ = writeln!(
            out,
            "audit head  #{} {}",
            self.audit_head_seq, self.audit_head_hash
        );
        out
    }
}

/// A switch's scope in words.
pub fn scope_text(scope: &super::api::SwitchScope) -> String {
    match scope {
        super::api::SwitchScope::All => "all symbols".to_owned(),
        super::api::SwitchScope::CanaryStarted { symbols } => {
            format!("canary {}", symbols.join(","))
        }
        super::api::SwitchScope::CanaryEnded { symbols, transfer } => {
            let moved = match transfer.as_deref() {
                Some(super::api::TransferReport {
                    refused: Some(reason),
                    ..
                }) => format!("; state not moved back ({reason})"),
                Some(transfer) => format!(
                    "; state moved back for {}: {} resting orders, transfer pause {} us (input {})",
                    transfer.symbols.join(","),
                    transfer.orders_moved,
                    transfer.pause_us,
                    transfer.transfer_seq
                ),
                None => String::new(),
            };
            format!("canary ended {}{moved}", symbols.join(","))
        }
    }
}

/// A time as RFC 3339 UTC with seconds, or the raw nanoseconds if it cannot be formatted.
pub fn rfc3339(time: Timestamp) -> String {
    let nanos = i128::from(time.0);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{}ns", time.0))
}

/// Reads an RFC 3339 time (`2026-12-07T08:00:00Z`), the form operators type windows in.
pub fn parse_rfc3339(text: &str) -> Result<Timestamp, PolicyError> {
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|error| {
                PolicyError::BadFiling(format!("{text:?} is not an RFC 3339 time: {error}"))
            })?;
    u64::try_from(parsed.unix_timestamp_nanos())
        .map(Timestamp)
        .map_err(|_| PolicyError::BadFiling(format!("{text:?} is before 1970")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000_000;
    const NOW: Timestamp = Timestamp(1_800_000_000_000_000_000);
    const SHA: &str = "ab";

    fn filed(book: &mut ChangeBook, by: &str) -> ChangeId {
        let event = book
            .check_file(
                Some(by),
                "/opt/baton-2",
                SHA,
                "upgrade matching",
                (Timestamp(NOW.0 - HOUR), Timestamp(NOW.0 + HOUR)),
                NOW,
            )
            .expect("valid filing");
        let id = event.change().expect("names a change");
        book.apply(by, NOW, &event);
        id
    }

    #[test]
    fn change_ids_read_both_forms_and_refuse_others() {
        assert_eq!(parse_change("CHG-7"), Ok(7));
        assert_eq!(parse_change("chg-7"), Ok(7));
        assert_eq!(parse_change(" 12 "), Ok(12));
        for bad in ["", "CHG-", "CHG-0", "x", "-1", "CHG-1x"] {
            assert!(parse_change(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_switch_needs_an_approved_change_by_a_second_operator_within_its_window() {
        let policy = Policy::default();
        let mut book = ChangeBook::default();
        assert_eq!(
            book.authorize(&policy, &Action::Switch, Some("alice"), None, NOW),
            Err(PolicyError::ChangeRequired {
                action: "switch".into()
            })
        );
        let id = filed(&mut book, "alice");
        let name = change_name(id);
        assert!(matches!(
            book.authorize(&policy, &Action::Switch, Some("alice"), Some(&name), NOW),
            Err(PolicyError::NotApproved { approvals: 0, .. })
        ));
        assert!(matches!(
            book.check_approve(Some("alice"), &name),
            Err(PolicyError::SelfApproval { .. })
        ));
        let approval = book.check_approve(Some("bob"), &name).expect("bob may");
        book.apply("bob", NOW, &approval);
        assert!(matches!(
            book.check_approve(Some("bob"), &name),
            Err(PolicyError::AlreadyApproved { .. })
        ));
        assert_eq!(
            book.authorize(&policy, &Action::Switch, Some("alice"), Some(&name), NOW),
            Ok((Some(id), Some(SHA.to_owned())))
        );
        let late = Timestamp(NOW.0 + 2 * HOUR);
        assert!(matches!(
            book.authorize(&policy, &Action::Switch, Some("alice"), Some(&name), late),
            Err(PolicyError::OutsideWindow { .. })
        ));
        // Backing out stays possible outside the window, and needs no change at all.
        assert_eq!(
            book.authorize(&policy, &Action::Rollback, Some("carol"), Some(&name), late),
            Ok((Some(id), None))
        );
        assert_eq!(
            book.authorize(&policy, &Action::Rollback, Some("carol"), None, late),
            Ok((None, None))
        );
        let close = book.check_close(Some("alice"), &name).expect("open");
        book.apply("alice", NOW, &close);
        assert_eq!(
            book.authorize(&policy, &Action::Switch, Some("alice"), Some(&name), NOW),
            Err(PolicyError::Closed(name.clone()))
        );
        assert!(book.check_approve(Some("dave"), &name).is_err());
    }

    #[test]
    fn an_approval_from_the_filers_account_needs_both_people_declared_for_it() {
        let mut policy = Policy::default();
        let mut book = ChangeBook::default();
        let id = filed(&mut book, "alice (uid 1000)");
        let name = change_name(id);
        let names = |uid: u32| (uid == 1000).then(|| "trader".to_owned());
        assert!(matches!(
            book.check_approval_account(&policy, "bob (uid 1000)", &name, names),
            Err(PolicyError::SameAccount { .. })
        ));
        assert_eq!(
            book.check_approval_account(&policy, "bob (uid 1001)", &name, names),
            Ok(())
        );
        assert_eq!(
            book.check_approval_account(&policy, "bob", &name, names),
            Ok(()),
            "no account known, nothing to compare"
        );
        policy
            .operators
            .insert("trader".into(), vec!["alice".into()]);
        assert!(matches!(
            book.check_approval_account(&policy, "bob (uid 1000)", &name, names),
            Err(PolicyError::SameAccount { .. })
        ));
        policy
            .operators
            .insert("trader".into(), vec!["alice".into(), "Bob".into()]);
        assert_eq!(
            book.check_approval_account(&policy, "bob (uid 1000)", &name, names),
            Ok(())
        );
    }

    #[test]
    fn a_declared_account_acts_only_as_its_people() {
        let mut policy = Policy::default();
        assert_eq!(policy.check_account(Some("root"), "mallory"), Ok(()));
        policy.operators.insert("ops".into(), vec!["alice".into()]);
        assert_eq!(policy.check_account(Some("ops"), "Alice (uid 7)"), Ok(()));
        assert_eq!(policy.check_account(None, "bob"), Ok(()));
        assert_eq!(
            policy
                .check_account(Some("ops"), "bob (uid 7)")
                .map_err(|e| e.to_string()),
            Err("OS account ops acts as alice ([control.operators]), not as bob".to_owned())
        );
    }

    #[test]
    fn operators_are_one_person_whatever_the_case_and_a_running_canary_keeps_its_change_open() {
        let policy = Policy::default();
        let mut book = ChangeBook::default();
        let id = filed(&mut book, "alice");
        let name = change_name(id);
        assert!(matches!(
            book.check_approve(Some("ALICE"), &name),
            Err(PolicyError::SelfApproval { .. })
        ));
        assert!(matches!(
            book.check_approve(Some("alice (uid 0)"), &name),
            Err(PolicyError::SelfApproval { .. })
        ));
        assert!(same_person("bob (uid 1000)", "Bob (uid 0)"));
        assert!(!same_person("bob (uid x)", "bob"));
        let approval = book.check_approve(Some("Bob"), &name).expect("bob may");
        book.apply("Bob", NOW, &approval);
        assert!(matches!(
            book.check_approve(Some("bob"), &name),
            Err(PolicyError::AlreadyApproved { .. })
        ));
        let started = |scope: SwitchScope| ControlEvent::ActionCompleted {
            change: Some(id),
            action: Action::Canary {
                percent: Some(5),
                symbols: Vec::new(),
            },
            report: SwitchReport {
                from: "blue".into(),
                to: "green".into(),
                barrier_seq: 1,
                pause_us: 1,
                planned: true,
                rollback: false,
                scope,
            },
            shadow: ShadowStatus::default(),
        };
        book.apply(
            "alice",
            NOW,
            &started(SwitchScope::CanaryStarted {
                symbols: vec!["MSFT".into()],
            }),
        );
        assert_eq!(
            book.check_close(Some("alice"), &name),
            Err(PolicyError::CanaryRunning(name.clone()))
        );
        book.apply(
            "gateway",
            NOW,
            &ControlEvent::Failover {
                change: Some(id),
                report: SwitchReport {
                    from: "green".into(),
                    to: "blue".into(),
                    barrier_seq: 2,
                    pause_us: 0,
                    planned: false,
                    rollback: false,
                    scope: SwitchScope::CanaryEnded {
                        symbols: vec!["MSFT".into()],
                        transfer: None,
                    },
                },
            },
        );
        assert!(book.check_close(Some("alice"), &name).is_ok());
        assert!(
            book.authorize(&policy, &Action::Switch, Some("alice"), Some(&name), NOW)
                .is_ok()
        );
        // A canary that was running when the gateway stopped ended with it.
        book.apply(
            "alice",
            NOW,
            &started(SwitchScope::CanaryStarted {
                symbols: vec!["MSFT".into()],
            }),
        );
        assert!(book.check_close(Some("alice"), &name).is_err());
        book.apply(
            "gateway",
            NOW,
            &ControlEvent::GatewayStarted {
                build: "baton".into(),
            },
        );
        assert!(book.check_close(Some("alice"), &name).is_ok());
    }

    #[test]
    fn without_a_policy_actions_run_bare_but_still_need_an_operator() {
        let policy = Policy {
            approval_required: Vec::new(),
            approvals_min: 1,
            ..Policy::default()
        };
        let book = ChangeBook::default();
        assert_eq!(
            book.authorize(&policy, &Action::Switch, Some("alice"), None, NOW),
            Ok((None, None))
        );
        assert_eq!(
            book.authorize(&policy, &Action::Switch, None, None, NOW),
            Err(PolicyError::NoOperator)
        );
        assert_eq!(
            book.authorize(&policy, &Action::AutoRollback, None, None, NOW),
            Ok((None, None))
        );
    }

    #[test]
    fn filings_with_bad_windows_or_no_reason_are_refused() {
        let book = ChangeBook::default();
        let window = (Timestamp(NOW.0 - HOUR), Timestamp(NOW.0 + HOUR));
        assert!(
            book.check_file(Some("a"), "/x", SHA, "  ", window, NOW)
                .is_err()
        );
        assert!(book.check_file(None, "/x", SHA, "r", window, NOW).is_err());
        let backwards = (window.1, window.0);
        assert!(
            book.check_file(Some("a"), "/x", SHA, "r", backwards, NOW)
                .is_err()
        );
        let past = (Timestamp(NOW.0 - 2 * HOUR), Timestamp(NOW.0 - HOUR));
        assert!(
            book.check_file(Some("a"), "/x", SHA, "r", past, NOW)
                .is_err()
        );
    }

    #[test]
    fn the_book_and_the_report_are_a_fold_over_the_log() {
        let mut book = ChangeBook::default();
        let mut log: Vec<(String, Timestamp, ControlEvent)> = Vec::new();
        let mut push = |book: &mut ChangeBook, actor: &str, event: ControlEvent| {
            book.apply(actor, NOW, &event);
            log.push((actor.to_owned(), NOW, event));
        };
        let filing = book
            .check_file(
                Some("alice"),
                "/opt/b",
                SHA,
                "r",
                (NOW, Timestamp(NOW.0 + HOUR)),
                NOW,
            )
            .expect("valid");
        push(&mut book, "alice", filing);
        push(&mut book, "bob", ControlEvent::ChangeApproved { change: 1 });
        let report_of = |from: &str, to: &str| SwitchReport {
            from: from.into(),
            to: to.into(),
            barrier_seq: 10,
            pause_us: 5,
            planned: true,
            rollback: false,
            scope: Default::default(),
        };
        push(
            &mut book,
            "alice",
            ControlEvent::ActionCompleted {
                change: Some(1),
                action: Action::Switch,
                report: report_of("blue", "green"),
                shadow: ShadowStatus {
                    matches: 40,
                    divergences: 0,
                    samples: Vec::new(),
                },
            },
        );
        push(
            &mut book,
            "gateway",
            ControlEvent::ActionCompleted {
                change: Some(1),
                action: Action::AutoRollback,
                report: report_of("green", "blue"),
                shadow: ShadowStatus::default(),
            },
        );
        assert_eq!(book.active(), Some(1));
        let rebuilt = ChangeBook::from_events(log.iter().map(|(a, t, e)| (a.as_str(), *t, e)));
        assert_eq!(rebuilt.summaries(), book.summaries());
        let records = log
            .iter()
            .enumerate()
            .map(|(i, (a, t, e))| (i as u64 + 1, *t, a.as_str(), e));
        let report = report(records, 1, (4, "ff")).expect("known change");
        assert_eq!(report.change.approved_by, vec!["bob".to_owned()]);
        assert_eq!(report.actions.len(), 2);
        assert_eq!(report.rollbacks, 1);
        assert_eq!(report.events.len(), 4);
        let text = report.render();
        assert!(text.contains("CHG-1 (approved)"), "{text}");
        assert!(text.contains("blue -> green at input 10"), "{text}");
        assert!(text.contains("audit head  #4 ff"), "{text}");
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        let t = parse_rfc3339("2026-12-07T08:00:00Z").expect("valid");
        assert_eq!(rfc3339(t), "2026-12-07T08:00:00Z");
        assert!(parse_rfc3339("tomorrow").is_err());
    }
}
