//! What status shows of the core, and the recent inputs' stamps and symbols it is computed
//! from.

use super::*;

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    /// Whether engine `slot` owns inputs whose answers are delivered (the authoritative engine,
    /// a canary): the driver keeps such an engine in the normal scheduling class and a standby
    /// out of the order path's way (see `gateway::placement`).
    pub fn owns_inputs(&self, slot: usize) -> bool {
        Some(slot) == self.authority || self.canary.as_ref().is_some_and(|c| c.slot == slot)
    }

    pub(super) fn status(&self) -> CoreStatus {
        let journal_last = self.journal.last_seq();
        let now = self.now;
        let engines = self
            .engines
            .iter()
            .enumerate()
            .map(|(index, slot)| match slot.connection.as_ref() {
                Some(c) => EngineStatus {
                    name: c.name.clone(),
                    addr: slot.addr.to_string(),
                    build_version: c.build_version.clone(),
                    role: if Some(index) == self.authority {
                        EngineRole::Authoritative
                    } else if self.canary.as_ref().is_some_and(|c| c.slot == index) {
                        EngineRole::Canary
                    } else {
                        EngineRole::Standby
                    },
                    answered_through: c.answered_through,
                    lag_inputs: journal_last.saturating_sub(c.answered_through),
                    lag_us: self.input_age_us(c.answered_through + 1, now),
                    silent_ms: now.since(c.last_heard).as_millis() as u64,
                    executable_sha256: c.executable_sha256.clone(),
                    delivered_inputs: slot.delivered_inputs,
                    sent_through: c.sent_through - c.deferred.len() as u64,
                    kept_inputs: c.deferred.len() as u64,
                },
                None => EngineStatus {
                    name: String::new(),
                    addr: slot.addr.to_string(),
                    build_version: String::new(),
                    role: EngineRole::Down,
                    answered_through: 0,
                    lag_inputs: 0,
                    lag_us: 0,
                    silent_ms: 0,
                    executable_sha256: String::new(),
                    delivered_inputs: slot.delivered_inputs,
                    sent_through: 0,
                    kept_inputs: 0,
                },
            })
            .collect();
        let sessions = self
            .sessions
            .status()
            .into_iter()
            .map(|s| SessionStatus {
                target_comp_id: s.target_comp_id,
                logged_on: s.logged_on,
                seq_num_next_out: s.seq_num_next_out,
                seq_num_next_in: s.seq_num_next_in,
            })
            .collect();
        CoreStatus {
            sessions,
            engines,
            journal_last_seq: journal_last,
            delivered_through: self.cursor.get(),
            last_switch: self.last_switch.clone(),
            switch_waiting_at: self.pending_switch.as_ref().map(|pending| pending.barrier),
            switches: self.switches,
            shadow: self.shadow_status.clone(),
            canary: self.canary.as_ref().map(|canary| CanaryStatus {
                engine: self.engines[canary.slot]
                    .connection
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                baseline: self
                    .authority
                    .and_then(|a| self.engines[a].connection.as_ref())
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                symbols: canary.symbol_names(),
                since_seq: canary.since_seq,
                gates: {
                    let baseline_p99_us = canary.baseline_latency.value_at_quantile(0.99);
                    GateStatus {
                        canary_p99_us: canary.canary_latency.value_at_quantile(0.99),
                        baseline_p99_us,
                        // Saturating float-to-int cast: the limit is a finite µs count.
                        latency_allowance_p99_us: self
                            .config
                            .gates
                            .latency_limit_us(baseline_p99_us)
                            as u64,
                        ..canary.gates.clone()
                    }
                },
                delivery: canary.delivery.as_str().to_owned(),
                expected_divergence: canary.expected.clone(),
            }),
            halted: names(&self.halted),
        }
    }

    /// Microseconds since input `seq` was stamped, 0 if it is not yet sequenced or too old to
    /// remember.
    pub(super) fn input_age_us(&self, seq: u64, now: Timestamp) -> u64 {
        input_age(&self.recent, seq, now)
    }
}

/// Symbols as the text operators and the audit log read.
pub(super) fn names<'a>(symbols: impl IntoIterator<Item = &'a Symbol>) -> Vec<String> {
    symbols.into_iter().map(|s| s.as_str().to_owned()).collect()
}

/// Microseconds since input `seq` was stamped, from the recent (seq, stamp) pairs; 0 if it is not
/// among them.
pub(super) fn input_age(
    recent: &VecDeque<(u64, Timestamp, Symbol)>,
    seq: u64,
    now: Timestamp,
) -> u64 {
    recent_input(recent, seq).map_or(0, |(time, _)| now.0.saturating_sub(time.0) / 1_000)
}

/// The stamp and symbol of input `seq`, if it is recent enough to be remembered.
pub(super) fn recent_input(
    recent: &VecDeque<(u64, Timestamp, Symbol)>,
    seq: u64,
) -> Option<(Timestamp, Symbol)> {
    let &(first, _, _) = recent.front()?;
    let &(_, time, symbol) = recent.get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
    Some((time, symbol))
}
