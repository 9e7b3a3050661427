//! What `baton ctl` asks the gateway and what it answers: the types shared by the control
//! endpoint, the sequencer that carries out the commands, and the CLI that shows the answers.
//!
//! Requests and replies are JSON, one object per line, so an operator can also drive the
//! endpoint with standard tools.

use serde::{Deserialize, Serialize};

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
}

/// The head of the audit chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Seq of the last record.
    pub seq: u64,
    /// Its hash (hex): every earlier record is fixed by it.
    pub hash: String,
}

/// A canary in progress: which engine owns which symbols, and what its gates see.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryStatus {
    /// The engine that owns the canary symbols.
    pub engine: String,
    /// The engine that owns every other symbol.
    pub baseline: String,
    /// The symbols the canary engine is authoritative for.
    pub symbols: Vec<String>,
    /// First input sequenced under the canary.
    pub since_seq: u64,
    /// Gate evidence so far.
    pub gates: GateStatus,
}

/// What the canary gates have measured: the canary engine's answers for its symbols against the
/// baseline engine's answers for the very same inputs (both engines see every input).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateStatus {
    /// Canary-owned inputs both engines answered.
    pub compared: u64,
    /// Of those, answers that differed: a deterministic engine that differs is an error.
    pub errors: u64,
    /// Reject reports (rejected orders, cancel rejects) the canary engine sent for them.
    pub canary_rejects: u64,
    /// Reject reports the baseline engine produced for the same inputs.
    pub baseline_rejects: u64,
    /// p99 answer latency of the canary engine on its inputs, µs.
    pub canary_p99_us: u64,
    /// p99 answer latency of the baseline engine on the same inputs, µs.
    pub baseline_p99_us: u64,
    /// The canary p99 the latency gate tolerates against that baseline, µs: shown next to the
    /// canary's p99 so an operator sees how close the gate is. 0 from a gateway that does not
    /// report it.
    #[serde(default)]
    pub latency_allowance_p99_us: u64,
    /// The first gate breached, if any (the canary is then rolled back).
    pub breach: Option<GateBreach>,
}

/// A gate that tripped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateBreach {
    /// Which gate: `error-rate`, `reject-rate` or `latency`.
    pub gate: String,
    /// What was measured.
    pub observed: f64,
    /// The limit it crossed.
    pub limit: f64,
    /// Canary-owned inputs compared when it tripped.
    pub compared: u64,
    /// The first input of the canary it tripped in: tells one canary's breach from another's.
    #[serde(default)]
    pub since_seq: u64,
}

/// One session in status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// The counterparty's CompID.
    pub target_comp_id: String,
    /// Whether a connection is logged on.
    pub logged_on: bool,
    /// Next MsgSeqNum the gateway will send.
    pub seq_num_next_out: u64,
    /// Next MsgSeqNum expected from the counterparty.
    pub seq_num_next_in: u64,
}

/// An engine's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineRole {
    /// Its outputs are delivered.
    Authoritative,
    /// Receives every input; its outputs are compared, never sent.
    Standby,
    /// Authoritative for the canary's symbols only; the authoritative engine keeps the rest.
    Canary,
    /// Not connected.
    Down,
}

/// One engine in status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// The engine's name ("blue", "green").
    pub name: String,
    /// Its link address.
    pub addr: String,
    /// Its build version from the link handshake; empty while down.
    pub build_version: String,
    /// What it does now.
    pub role: EngineRole,
    /// Last input it answered.
    pub answered_through: u64,
    /// Inputs it is behind the journal.
    pub lag_inputs: u64,
    /// How far behind in time: the age, in microseconds, of the oldest input it has not answered
    /// (0 when caught up).
    pub lag_us: u64,
    /// Milliseconds since it last sent anything (health).
    pub silent_ms: u64,
    /// SHA-256 of the executable it runs, from its link handshake (empty if it did not say):
    /// what a change's artifact is checked against.
    #[serde(default)]
    pub executable_sha256: String,
    /// Inputs whose outputs were delivered from this engine since the gateway started: shows
    /// where authority really sat, per symbol, during a canary.
    #[serde(default)]
    pub delivered_inputs: u64,
    /// Last input written to its link: inputs past `answered_through` and up to here are in
    /// flight, in the engine's socket or being applied.
    #[serde(default)]
    pub sent_through: u64,
}

/// A completed switch of authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchReport {
    /// Engine that had authority.
    pub from: String,
    /// Engine that has it now.
    pub to: String,
    /// Barrier: outputs for inputs up to here came from `from`, after it from `to`.
    pub barrier_seq: u64,
    /// Microseconds from the barrier to the first input processed under the new authority
    /// (inputs arriving meanwhile are held, not rejected).
    pub pause_us: u64,
    /// Planned (`baton ctl switch`/`rollback`) or failover after the authoritative engine died.
    pub planned: bool,
    /// What moved: every symbol (`all`), a canary's symbols, or a canary ended.
    #[serde(default)]
    pub scope: SwitchScope,
    /// Asked for as a rollback (by an operator or a gate breach), so status and the change
    /// record show authority going back, not an ordinary switch.
    #[serde(default)]
    pub rollback: bool,
}

/// What a switch moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SwitchScope {
    /// Authority for every symbol.
    #[default]
    All,
    /// Authority for these symbols moved to the canary engine.
    CanaryStarted {
        /// The canary's symbols.
        symbols: Vec<String>,
    },
    /// The canary's symbols returned to the engine that kept the rest.
    CanaryEnded {
        /// The symbols that returned.
        symbols: Vec<String>,
    },
}

/// Shadow comparison counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowStatus {
    /// Inputs whose outputs matched byte for byte.
    pub matches: u64,
    /// Inputs whose outputs differed.
    pub divergences: u64,
    /// The first divergences, for the operator to look at.
    pub samples: Vec<DivergenceSample>,
}

/// One divergence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivergenceSample {
    /// The input whose outputs differed.
    pub input_seq: u64,
    /// The authoritative engine's outputs, as debug text.
    pub authoritative: String,
    /// The standby's outputs, as debug text.
    pub standby: String,
}
