//! What `baton ctl` asks the gateway and what it answers: the types shared by the control
//! endpoint, the sequencer that carries out the commands, and the CLI that shows the answers.
//!
//! Requests and replies are JSON, one object per line, so an operator can also drive the
//! endpoint with standard tools.

use serde::{Deserialize, Serialize};

pub use crate::gateway::status::{
    CanaryStatus, CoreStatus, DivergenceSample, EngineRole, EngineStatus, GateBreach, GateStatus,
    SessionStatus, ShadowStatus, SwitchReport, SwitchScope, TransferReport,
};

/// A command to the gateway. Every command that can move authority names the operator who asks
/// and, where policy wants one, the approved change it belongs to; both go into the audit log
/// before the command takes effect (invariant 7). Fields default, so the bare
/// `{"command":"switch"}` of earlier clients still parses (and is refused where policy wants a
/// change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Everything an operator looks at: sessions, engines, last switch, shadow comparison,
    /// canary, open changes and the audit head.
    Status,
    /// Move authority for every symbol to the standby at a barrier; the old engine becomes the
    /// standby. Ends a canary by completing it.
    Switch {
        /// Who asks.
        #[serde(default)]
        operator: Option<String>,
        /// The approved change this switch carries out (`CHG-n` or `n`).
        #[serde(default)]
        change: Option<String>,
    },
    /// Undo: end a running canary (its symbols return to the engine that kept the rest), or
    /// return authority to the engine that had it before the last switch. Never needs an
    /// approval: backing out is what an operator must always be able to do, and it is audited
    /// like everything else.
    Rollback {
        /// Who asks.
        #[serde(default)]
        operator: Option<String>,
        /// The change being rolled back, if any.
        #[serde(default)]
        change: Option<String>,
    },
    /// Move authority for a deterministic subset of symbols to the standby at a barrier, with
    /// gates that roll it back automatically on a breach.
    Canary {
        /// Who asks.
        #[serde(default)]
        operator: Option<String>,
        /// The approved change this canary belongs to.
        #[serde(default)]
        change: Option<String>,
        /// Share of the configured symbols to move, 1 to 100 (at least one symbol moves).
        #[serde(default)]
        percent: Option<u8>,
        /// Or exactly these symbols.
        #[serde(default)]
        symbols: Vec<String>,
    },
    /// Start an engine (never the authoritative one) from the artifact of an approved change:
    /// the supervisor behind `baton up` restarts it through `baton launch`.
    Stage {
        /// Who asks.
        #[serde(default)]
        operator: Option<String>,
        /// The change whose artifact to run (`CHG-n`).
        change: String,
        /// The engine to restart from it ("green").
        engine: String,
    },
    /// Replace the running gateway process by the artifact of an approved change, handing over
    /// every socket and session at a barrier: counterparties see neither a disconnect nor a
    /// resend (only under `baton up`, whose supervisor starts the new build and holds the
    /// sockets while the two processes change places).
    UpgradeGateway {
        /// Who asks.
        #[serde(default)]
        operator: Option<String>,
        /// The change whose artifact to run (`CHG-n`).
        change: String,
    },
    /// Trade again on symbols halted because their owner's book differed from what the
    /// counterparties were told: the operator's word that they were reconciled.
    Resume {
        /// Who asks.
        #[serde(default)]
        operator: Option<String>,
        /// The halted symbols to resume.
        symbols: Vec<String>,
    },
    /// File a change: an artifact (path and SHA-256), a reason and a window.
    ChangeFile {
        /// Who files it.
        #[serde(default)]
        operator: Option<String>,
        /// The engine build the change deploys.
        artifact_path: String,
        /// Its SHA-256 as the operator computed it; the gateway hashes the file again and
        /// refuses a mismatch.
        artifact_sha256: String,
        /// Why, for the change record.
        reason: String,
        /// Window start, RFC 3339 UTC.
        window_start: String,
        /// Window end, RFC 3339 UTC.
        window_end: String,
        /// Symbols and request MsgTypes on which the build is expected to answer differently.
        #[serde(default)]
        expected_divergence: crate::gateway::core::ExpectedDivergence,
    },
    /// Approve a change filed by someone else.
    ChangeApprove {
        /// Who approves.
        #[serde(default)]
        operator: Option<String>,
        /// `CHG-n` or `n`.
        change: String,
    },
    /// Close a change: no further action may name it.
    ChangeClose {
        /// Who closes it.
        #[serde(default)]
        operator: Option<String>,
        /// `CHG-n` or `n`.
        change: String,
    },
    /// One change's record, with its evidence, for compliance.
    ChangeReport {
        /// `CHG-n` or `n`.
        change: String,
    },
    /// Every change, one line each.
    ChangeList,
}

impl ControlRequest {
    /// The operator named in the request, if it names one.
    pub fn operator(&self) -> Option<&str> {
        match self {
            ControlRequest::Switch { operator, .. }
            | ControlRequest::Rollback { operator, .. }
            | ControlRequest::Canary { operator, .. }
            | ControlRequest::Resume { operator, .. }
            | ControlRequest::Stage { operator, .. }
            | ControlRequest::UpgradeGateway { operator, .. }
            | ControlRequest::ChangeFile { operator, .. }
            | ControlRequest::ChangeApprove { operator, .. }
            | ControlRequest::ChangeClose { operator, .. } => operator.as_deref(),
            ControlRequest::Status
            | ControlRequest::ChangeReport { .. }
            | ControlRequest::ChangeList => None,
        }
    }

    /// A switch by `operator` under no change, as the bench and the demo ask for one (their
    /// venues need no approval).
    pub fn switch(operator: &str) -> ControlRequest {
        ControlRequest::Switch {
            operator: Some(operator.to_owned()),
            change: None,
        }
    }

    /// A rollback by `operator` under no change.
    pub fn rollback(operator: &str) -> ControlRequest {
        ControlRequest::Rollback {
            operator: Some(operator.to_owned()),
            change: None,
        }
    }
}

/// The gateway's answer.
// Status outweighs the other answers; boxing it would change every match on it for nothing:
// one reply is built per operator request, never on the trading path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ControlReply {
    /// The state of the gateway.
    Status(Status),
    /// A switch, canary or rollback completed.
    Switched(SwitchReport),
    /// The engine will be restarted from the change's artifact.
    Staged {
        /// The engine.
        engine: String,
        /// The artifact's SHA-256 it will run.
        artifact_sha256: String,
    },
    /// The new gateway build started and the running gateway stopped at its barrier: it hands
    /// over and exits; the new one reports the pause in its status once it serves.
    GatewayHandingOver {
        /// The change.
        change: String,
        /// The build taking over.
        artifact_sha256: String,
        /// When the counterparties' input stopped being read (ns since the epoch).
        barrier_unix_ns: u64,
    },
    /// Halted symbols trade again.
    Resumed {
        /// The symbols resumed.
        symbols: Vec<String>,
    },
    /// A change was filed, approved or closed; its record as it is now.
    Change(crate::control::change::ChangeSummary),
    /// Every change.
    Changes {
        /// Oldest first.
        changes: Vec<crate::control::change::ChangeSummary>,
    },
    /// A change's full record.
    Report(crate::control::change::ChangeReport),
    /// The command could not be carried out; the text says why (no standby, standby lagging,
    /// no approved change...).
    Refused {
        /// Why, in words an operator can act on.
        reason: String,
    },
}

/// What status shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// One entry per configured session.
    pub sessions: Vec<SessionStatus>,
    /// One entry per configured engine.
    pub engines: Vec<EngineStatus>,
    /// Last input seq written to the journal.
    pub journal_last_seq: u64,
    /// Last input whose outputs were all delivered.
    pub delivered_through: u64,
    /// The most recent switch (planned or failover), if any.
    pub last_switch: Option<SwitchReport>,
    /// The barrier a requested switch (or canary start or end) waits at, while it waits: until
    /// both engines answered every input up to it and every output up to it is delivered.
    #[serde(default)]
    pub switch_waiting_at: Option<u64>,
    /// Switches and failovers since start.
    pub switches: u64,
    /// Shadow comparison of the standby against the authoritative engine.
    pub shadow: ShadowStatus,
    /// The running canary, if any.
    #[serde(default)]
    pub canary: Option<CanaryStatus>,
    /// Changes not yet closed (filled in by the control plane).
    #[serde(default)]
    pub open_changes: Vec<crate::control::change::ChangeSummary>,
    /// Last audit record and its hash, to anchor elsewhere (filled in by the control plane).
    #[serde(default)]
    pub audit_head: Option<AuditHead>,
    /// Symbols halted because their owner's book differs from what the counterparties were
    /// told; requests for them are refused until an operator resumes them.
    #[serde(default)]
    pub halted: Vec<String>,
    /// The last planned upgrade of the gateway process, as the gateway it started recorded it
    /// (filled in by the control plane).
    #[serde(default)]
    pub gateway_upgrade: Option<Box<GatewayUpgrade>>,
    /// Which build the gateway process runs (filled in by the control plane).
    #[serde(default)]
    pub gateway_build: Option<GatewayBuild>,
}

/// The build the running gateway process runs: after a restart of `baton up`, whether it is the
/// one the last planned upgrade moved to, or the configured binary and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayBuild {
    /// SHA-256 of the running gateway's executable; empty until it is known (the first status
    /// question starts hashing it, so a later one has it) or if it could not be read.
    pub executable_sha256: String,
    /// Set when `baton up` started the configured binary although a planned upgrade recorded
    /// another build (its artifact gone or changed): why.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// A planned gateway upgrade as the gateway that took over measured it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayUpgrade {
    /// The change (`CHG-n`).
    pub change: String,
    /// The build now running.
    pub artifact_sha256: String,
    /// When the previous gateway stopped reading its counterparties (ns since the epoch):
    /// identifies the upgrade.
    pub barrier_unix_ns: u64,
    /// From that barrier until this gateway read its counterparties again, in microseconds:
    /// the time their input waited in the kernel.
    pub pause_us: u64,
    /// Sessions handed over.
    pub sessions: u64,
    /// TLS connections that could not be handed over (their TLS state did not allow it) and
    /// were closed cleanly; their counterparties reconnect. Left out when none, so records
    /// written before the field existed read and hash the same.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tls_closed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The head of the audit chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Seq of the last record.
    pub seq: u64,
    /// Its hash (hex): every earlier record is fixed by it.
    pub hash: String,
}

impl From<CoreStatus> for Status {
    /// The gateway core's part of status; the control plane adds the open changes and the audit
    /// head, which only it knows.
    fn from(core: CoreStatus) -> Status {
        Status {
            sessions: core.sessions,
            engines: core.engines,
            journal_last_seq: core.journal_last_seq,
            delivered_through: core.delivered_through,
            last_switch: core.last_switch,
            switch_waiting_at: core.switch_waiting_at,
            switches: core.switches,
            shadow: core.shadow,
            canary: core.canary,
            open_changes: Vec::new(),
            audit_head: None,
            halted: core.halted,
            gateway_upgrade: None,
            gateway_build: None,
        }
    }
}
