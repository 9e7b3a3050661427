//! What goes in and out of the core: its configuration, the commands the control plane gives
//! it and its answers, the events it reports for the audit log, and what it asks the driver to
//! do on engine links. Plain data, so the driver, the control plane and the simulator speak to
//! the core without knowing its insides.

use super::*;

/// Why the core cannot run at all (start-up failures; runtime link failures are handled).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The journal could not be opened or read: nothing can be sequenced safely.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The outbox cursor could not be opened.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// A journal record could not be decoded back into an input.
    #[error("journal record {seq}: {reason}")]
    Record {
        /// The record's input seq.
        seq: u64,
        /// What was wrong.
        reason: String,
    },
}

/// Where the core keeps its state and finds its engines.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The engines' link addresses; the first to attach takes authority.
    pub engines: Vec<LinkAddr>,
    /// The input journal's directory (the outbox cursor lives beside it).
    pub journal_dir: PathBuf,
    /// Journal segment size and durability.
    pub journal: JournalConfig,
    /// Silence from the authoritative engine, with inputs unanswered, after which it is declared
    /// dead and the standby takes over.
    pub failover_timeout: Duration,
    /// The venue's symbols (from `[engine] instruments`): a canary given as a share picks from
    /// these.
    pub symbols: Vec<Symbol>,
    /// Limits that roll a canary back.
    pub gates: GateConfig,
    /// The engine link's shared secret (`[link] secret_file`), proven at every handshake.
    pub link_secret: Option<link::LinkSecret>,
    /// How long a shared-memory link's reader spins on an empty ring before it sleeps
    /// (`[link] spin_us`).
    pub link_spin: std::time::Duration,
    /// How a canary engine's answers are delivered (`[control] canary_delivery`).
    pub canary_delivery: CanaryDelivery,
    /// How long inputs for a standby nothing waits on may be kept before they are written
    /// (`[gateway] standby_batch_us`); zero writes every batch to every engine at once.
    pub standby_batch: Duration,
}

/// How a canary engine's answers reach the counterparties (`[control] canary_delivery`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CanaryDelivery {
    /// The canary engine's answer is delivered as soon as it arrives, and the baseline's answer
    /// judges it afterwards: no added latency, but a wrong answer reaches its counterparty
    /// before the gate that catches it trips.
    #[default]
    Immediate,
    /// The canary engine's answer is delivered only once the baseline engine's answer for the
    /// same input matches it; on a mismatch the baseline's answer is delivered and the canary is
    /// rolled back, so no counterparty ever sees a divergent answer and the baseline's book stays
    /// what they were told. Costs the wait for the slower of the two engines on each input.
    Verified,
}

impl CanaryDelivery {
    /// The name the config and status use.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryDelivery::Immediate => "immediate",
            CanaryDelivery::Verified => "verified",
        }
    }
}

/// Divergence a change declares it expects from the new build (a new order type, a rule change):
/// on the canary's inputs for these symbols or of these request types, a different answer is
/// not an error; the reject-rate and latency gates still judge them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ExpectedDivergence {
    /// Symbols whose answers may differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<String>,
    /// FIX MsgTypes of the requests whose answers may differ: `D`, `F` or `G` (see
    /// [`REQUEST_MSG_TYPES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msg_types: Vec<String>,
}

/// The requests an engine answers, by FIX MsgType and name: what a change may declare
/// divergence on.
pub const REQUEST_MSG_TYPES: [(&str, &str); 3] = [
    ("D", "NewOrderSingle"),
    ("F", "OrderCancelRequest"),
    ("G", "OrderCancelReplaceRequest"),
];

impl ExpectedDivergence {
    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty() && self.msg_types.is_empty()
    }

    /// Checks and normalises what an operator typed: each message type given by MsgType (`D`)
    /// or name (`NewOrderSingle`, any case) becomes its MsgType; each symbol must be a valid
    /// symbol. Both lists come back sorted without duplicates. The error names the bad entry and
    /// what is accepted.
    pub fn parse(symbols: &[String], msg_types: &[String]) -> Result<ExpectedDivergence, String> {
        let mut parsed = ExpectedDivergence::default();
        for name in symbols.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if Symbol::try_from_bytes(name.as_bytes()).is_none() {
                return Err(format!("{name:?} is not a valid symbol"));
            }
            parsed.symbols.push(name.to_owned());
        }
        for text in msg_types.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let found = REQUEST_MSG_TYPES
                .iter()
                .find(|(code, name)| *code == text || name.eq_ignore_ascii_case(text));
            match found {
                Some((code, _)) => parsed.msg_types.push((*code).to_owned()),
                None => {
                    let known: Vec<String> = REQUEST_MSG_TYPES
                        .iter()
                        .map(|(code, name)| format!("{code} ({name})"))
                        .collect();
                    return Err(format!(
                        "unknown message type {text:?}: divergence can be declared on {}",
                        known.join(", ")
                    ));
                }
            }
        }
        parsed.symbols.sort();
        parsed.symbols.dedup();
        parsed.msg_types.sort();
        parsed.msg_types.dedup();
        Ok(parsed)
    }

    /// The declaration in words, for reports and status: `symbols AAPL; messages G`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.symbols.is_empty() {
            parts.push(format!("symbols {}", self.symbols.join(",")));
        }
        if !self.msg_types.is_empty() {
            parts.push(format!("messages {}", self.msg_types.join(",")));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// The FIX MsgType of the request an input carries; empty for a state transfer, the core's own
/// input, which no counterparty sent and no declared divergence can name.
pub fn request_msg_type(request: &Request) -> &'static str {
    match request {
        Request::New(_) => "D",
        Request::Cancel(_) => "F",
        Request::Replace(_) => "G",
        Request::Transfer(_) => "",
    }
}

/// Limits on what a canary engine may do worse than the engine it is compared with, over the
/// same inputs. From `[control.gates]`; defaults in [`constants`].
#[derive(Clone, Debug, PartialEq)]
pub struct GateConfig {
    /// Share of compared canary inputs whose answers may differ from the baseline engine's.
    pub error_rate_max: f64,
    /// How much the canary's reject share may exceed the baseline's on the same inputs.
    pub reject_rate_increase_max: f64,
    /// Canary inputs compared before the reject-rate gate judges (a share of a handful of
    /// orders is noise).
    pub reject_min_samples: u64,
    /// How many times the baseline's p99 answer latency the canary's may be.
    pub latency_p99_ratio_max: f64,
    /// Microseconds the canary's p99 may exceed the baseline's whatever the ratio: below this,
    /// a difference is scheduling noise on the host, not a slower build.
    pub latency_slack_us: u64,
    /// Canary inputs answered by both before the latency gate judges.
    pub latency_min_samples: u64,
    /// How far behind a standby may be for a switch onto it to start (the pause the switch
    /// causes is bounded by this lag).
    pub switch_lag_max_inputs: u64,
}

impl Default for GateConfig {
    fn default() -> GateConfig {
        GateConfig {
            error_rate_max: constants::GATE_ERROR_RATE_MAX_DEFAULT,
            reject_rate_increase_max: constants::GATE_REJECT_RATE_INCREASE_MAX_DEFAULT,
            reject_min_samples: constants::GATE_MIN_SAMPLES_DEFAULT,
            latency_p99_ratio_max: constants::GATE_LATENCY_P99_RATIO_MAX_DEFAULT,
            latency_slack_us: constants::GATE_LATENCY_SLACK_US_DEFAULT,
            latency_min_samples: constants::GATE_MIN_SAMPLES_DEFAULT,
            switch_lag_max_inputs: constants::SWITCH_LAG_MAX_INPUTS,
        }
    }
}

impl GateConfig {
    /// The canary p99 the latency gate tolerates against a baseline p99: one formula for the
    /// gate and for status, so what an operator watches is what trips.
    pub fn latency_limit_us(&self, baseline_p99_us: u64) -> f64 {
        (baseline_p99_us as f64 * self.latency_p99_ratio_max)
            .max(baseline_p99_us.saturating_add(self.latency_slack_us) as f64)
    }
}

/// What the core tells the control plane happened on its own (not as the answer to a command),
/// so it reaches the audit log.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreEvent {
    /// The authoritative (or canary) engine died or fell silent; authority moved.
    Failover(SwitchReport),
    /// A canary gate tripped; the control plane audits it and asks for the rollback.
    GateBreached(GateBreach),
    /// A planned switch completed after the control plane stopped waiting for it.
    Completed(SwitchReport),
    /// Anything else worth a record that belongs to no change: a divergence or its clearing, a
    /// halt, withheld outputs, an engine attaching.
    Record(CoreRecord),
}

/// Something worth a record in the audit log that belongs to no change. The control plane
/// turns each into its own audit event; the core does not know the audit log's types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreRecord {
    /// An engine answered differently from the engine whose answers were delivered: its book on
    /// these symbols is not what the counterparties were told.
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
    /// Outputs of an input on a halted symbol, not delivered, kept for reconciliation.
    OutputsWithheld {
        /// The input.
        input_seq: u64,
        /// Its symbol.
        symbol: String,
        /// The outputs as text.
        outputs: String,
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

/// What the control plane may ask of the core, after policy and the audit log allowed it: the
/// part of an operator's request the core acts on, without the operator or the change (those
/// are the control plane's business).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreRequest {
    /// The core's part of status.
    Status,
    /// Move authority for every symbol to the standby at a barrier (completes a canary).
    Switch,
    /// End a canary, or return authority to the engine that had it before the last switch.
    Rollback,
    /// Move authority for a share of the symbols, or for the named ones, to the standby.
    Canary {
        /// Share of the configured symbols, 1 to 100.
        percent: Option<u8>,
        /// Or exactly these symbols.
        symbols: Vec<String>,
    },
    /// Whether `engine` may be restarted from another build.
    Stage {
        /// The engine's name.
        engine: String,
    },
    /// Trade again on halted symbols: the operator's word that they were reconciled.
    Resume {
        /// The symbols.
        symbols: Vec<String>,
    },
}

/// The core's answer to a [`CoreRequest`].
#[derive(Clone, Debug, PartialEq)]
pub enum CoreReply {
    /// The core's part of status.
    Status(Box<CoreStatus>),
    /// A switch, canary or rollback completed at its barrier.
    Switched(SwitchReport),
    /// The engine may be restarted from the artifact.
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
    /// Not done; the text says why, in words an operator can act on.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A request for the core. The core answers every command it takes exactly once, through
/// [`Core::poll_reply`] under the [`CommandId`] it was handed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreCommand {
    /// What to do.
    pub request: CoreRequest,
    /// The SHA-256 of the executable the engine taking authority must run: the artifact of the
    /// approved change the command carries out. `None`: no change names one.
    pub expect_sha256: Option<String>,
    /// A rollback that may only end a canary (the gateway's own, after a gate breach): with no
    /// canary running it is refused rather than moving all authority back.
    pub canary_only: bool,
    /// For a canary: the divergence the change it runs under declares it expects, so the gates
    /// do not count it as an error. Empty: every difference is one.
    pub expected_divergence: ExpectedDivergence,
}

/// Names a command so its answer, which may come much later (a switch answers at its
/// barrier), finds whoever asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u64);

/// The outputs of one input, for the driver to hand to their sessions (the outbox's output).
///
/// Each output names its session and carries its (input seq, index); the session gives it the
/// next outbound MsgSeqNum as it stores it, so FIX numbering stays the session's alone. The
/// core queues each input's delivery once, in input order; the outbox cursor moves only when
/// the driver hands the delivery back with [`Core::handle_delivered`], after the store writes.
#[derive(Debug, PartialEq)]
pub struct Delivery {
    /// The input these outputs answer: the cursor moves to it once they are stored.
    pub input_seq: u64,
    /// Its owner's outputs, in index order, without the ones a session already held before a
    /// restart. Empty when nothing goes out but the cursor still moves: the outputs were
    /// withheld (a halted symbol), or the engine no longer holds them.
    pub outputs: Vec<Output>,
}

/// What the core asks the driver to do on engine slot `slot`'s link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkTransmit {
    /// The configured engine it is for.
    pub slot: usize,
    /// What to do.
    pub command: LinkCommand,
}

/// One action on an engine link. The driver carries them out in order; a write that fails or
/// times out is reported back with [`Core::handle_lost`].
#[derive(Clone, Debug, PartialEq)]
pub enum LinkCommand {
    /// Try to connect; the outcome comes back as [`Core::handle_attached`] or
    /// [`Core::handle_connect_failed`].
    Connect,
    /// Send these inputs, in order.
    Inputs(Vec<Input>),
    /// Ask for a snapshot (of the authoritative engine, for a joining standby).
    RequestSnapshot,
    /// Restore the engine from these snapshot bytes.
    Restore(Vec<u8>),
    /// Nothing else was sent for a while: say the gateway is alive and how far the journal is.
    Heartbeat {
        /// The journal's last seq.
        last_input_seq: u64,
    },
    /// End the link with a Close naming why (the gateway is stopping).
    Close {
        /// Why.
        reason: String,
    },
    /// The core gave up on this connection (silent, out of step, refused): drop it without a
    /// word and ignore anything still arriving on it.
    Drop,
}

#[cfg(test)]
mod gate_limit_tests {
    use super::GateConfig;

    #[test]
    fn the_latency_allowance_is_the_larger_of_the_ratio_and_the_slack() {
        let gates = GateConfig {
            latency_p99_ratio_max: 3.0,
            latency_slack_us: 2_000,
            ..GateConfig::default()
        };
        // A fast baseline: scheduling noise (the slack) dominates.
        assert_eq!(gates.latency_limit_us(100), 2_100.0);
        // A slow baseline: the ratio dominates.
        assert_eq!(gates.latency_limit_us(5_000), 15_000.0);
        // Nothing measured yet: only the slack.
        assert_eq!(gates.latency_limit_us(0), 2_000.0);
    }
}

/// Bugs the seeded simulation must catch, each behind [`Core::plant`]: proof that its
/// invariants bite, not only that the core passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Inputs are sent to engines, and their outputs delivered, before they are journaled (the
    /// append waits for the next housekeeping).
    DeliverBeforeJournal,
    /// A switch completes as soon as the old engine answered through the barrier, without
    /// waiting for the new one.
    SwitchBeforeStandbyAnswered,
    /// After a failover the survivor is asked again from one input before the cursor, whose
    /// outputs were already delivered.
    RedeliverAfterFailover,
    /// A verified canary's answers are delivered as they arrive, as in immediate mode, without
    /// waiting for the baseline's.
    DeliverUnverified,
}

#[cfg(test)]
mod expected_divergence_tests {
    use super::ExpectedDivergence;

    #[test]
    fn message_types_are_taken_by_msg_type_or_name_and_anything_else_is_refused() {
        let parsed = ExpectedDivergence::parse(
            &[" AAPL ".into(), "AAPL".into(), "MSFT".into()],
            &["G".into(), "newordersingle".into(), "".into()],
        )
        .expect("valid");
        assert_eq!(parsed.symbols, vec!["AAPL", "MSFT"]);
        assert_eq!(parsed.msg_types, vec!["D", "G"]);
        assert_eq!(parsed.describe(), "symbols AAPL,MSFT; messages D,G");
        let error = ExpectedDivergence::parse(&[], &["X".into()]).expect_err("unknown");
        assert!(
            error.contains("unknown message type \"X\"") && error.contains("D (NewOrderSingle)"),
            "{error}"
        );
        let error = ExpectedDivergence::parse(&["WAY-TOO-LONG-A-SYMBOL-NAME-FOR-FIX".into()], &[])
            .expect_err("bad symbol");
        assert!(error.contains("not a valid symbol"), "{error}");
        assert!(
            ExpectedDivergence::parse(&[], &[])
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn a_declaration_is_empty_only_without_symbols_and_message_types_and_says_so() {
        let none = ExpectedDivergence::default();
        assert!(none.is_empty());
        assert_eq!(none.describe(), "none");
        let symbols = ExpectedDivergence {
            symbols: vec!["AAA".into()],
            msg_types: vec![],
        };
        assert!(!symbols.is_empty());
        assert_eq!(symbols.describe(), "symbols AAA");
        let types = ExpectedDivergence {
            symbols: vec![],
            msg_types: vec!["F".into(), "G".into()],
        };
        assert!(!types.is_empty());
        assert_eq!(types.describe(), "messages F,G");
    }

    #[test]
    fn canary_delivery_modes_are_named_as_the_config_spells_them() {
        use super::CanaryDelivery;
        assert_eq!(CanaryDelivery::Immediate.as_str(), "immediate");
        assert_eq!(CanaryDelivery::Verified.as_str(), "verified");
    }
}
