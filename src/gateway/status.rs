//! What the gateway core reports about itself: engines and their roles, sessions, the last
//! switch, shadow comparison and the canary's gates.
//!
//! These types belong to the gateway, which produces them; the control plane re-exports them in
//! its API (`control::api`) and adds what only it knows (open changes, the audit head), so the
//! dependency points one way, from `control` to `gateway`.

use serde::{Deserialize, Serialize};

/// The core's part of status: everything but the control plane's changes and audit head.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoreStatus {
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
    /// The barrier a requested switch waits at, while it waits.
    pub switch_waiting_at: Option<u64>,
    /// Switches and failovers since start.
    pub switches: u64,
    /// Shadow comparison of the standby against the authoritative engine.
    pub shadow: ShadowStatus,
    /// The running canary, if any.
    pub canary: Option<CanaryStatus>,
    /// Symbols halted because their owner's book differs from what the counterparties were told.
    pub halted: Vec<String>,
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
    /// How its answers are delivered: `immediate` or `verified` (empty from a gateway that
    /// does not report it).
    #[serde(default)]
    pub delivery: String,
    /// The divergence its change declared expected.
    #[serde(default)]
    pub expected_divergence: crate::gateway::core::ExpectedDivergence,
}

/// What the canary gates have measured: the canary engine's answers for its symbols against the
/// baseline engine's answers for the very same inputs (both engines see every input).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateStatus {
    /// Canary-owned inputs both engines answered.
    pub compared: u64,
    /// Of those, answers that differed: a deterministic engine that differs is an error.
    pub errors: u64,
    /// Of those, answers that differed where the change declared the divergence expected: not
    /// errors, shown so the new behaviour's reach is visible.
    #[serde(default)]
    pub expected_divergences: u64,
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
    /// Which gate: `error-rate`, `reject-rate`, `latency`, or `verification` (a verified
    /// canary's answer did not match the baseline's).
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
    /// Inputs after `sent_through` kept for this standby's next batch (`[gateway]
    /// standby_batch_us`): sequenced and counted in `lag_inputs`, not yet on its link.
    #[serde(default)]
    pub kept_inputs: u64,
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
        /// How the canary engine's state for them went back, or why it did not (then its
        /// diverged symbols were halted). Boxed: status replies carry the last switch, and
        /// most switches have none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer: Option<Box<TransferReport>>,
    },
}

/// A canary's end that moved the canary engine's per-symbol state to every engine, or why it
/// could not: shown in status and the change record, since a rollback that moved books is what
/// the counterparties' view rests on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReport {
    /// The symbols whose books moved.
    pub symbols: Vec<String>,
    /// Resting orders in those books that moved.
    pub orders_moved: u64,
    /// The input seq of the transfer in the journal; 0 when none was sequenced.
    pub transfer_seq: u64,
    /// Microseconds from asking the canary engine for its state to sequencing the transfer:
    /// what the transfer adds to the rollback's pause.
    pub pause_us: u64,
    /// Why no transfer was made, when none was (then the symbols whose book differs are
    /// halted, as a rollback did before transfers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
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
