//! What `baton ctl` asks the gateway and what it answers: the types shared by the control
//! endpoint, the sequencer that carries out the commands, and the CLI that shows the answers.
//!
//! Requests and replies are JSON, one object per line, so an operator can also drive the
//! endpoint with standard tools.

use serde::{Deserialize, Serialize};

/// A command to the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Everything an operator looks at: sessions, engines, last switch, shadow comparison.
    Status,
    /// Move authority to the standby at a barrier; the old engine becomes the standby.
    Switch,
    /// Return authority to the engine that had it before the last switch (a switch back).
    Rollback,
}

/// The gateway's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ControlReply {
    /// The state of the gateway.
    Status(Status),
    /// A switch or rollback completed.
    Switched(SwitchReport),
    /// The command could not be carried out; the text says why (no standby, standby lagging...).
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
    /// Switches and failovers since start.
    pub switches: u64,
    /// Shadow comparison of the standby against the authoritative engine.
    pub shadow: ShadowStatus,
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
