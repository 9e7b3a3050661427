//! Shadow comparison and canary gates: the standby's answers are compared with the owner's on
//! the very same inputs, never sent; an engine that answered differently is marked diverged on
//! the input's symbol, and a canary whose answers are worse than its baseline's is rolled back.

use super::*;

/// Outputs per input seq until compared (and delivered): [`ShadowEntry`]s in seq order, in one
/// ring that keeps its room once it had it. Entries come in nearly always at the back (engines
/// answer in input order) and leave at the front, so a tree map would allocate and free a node
/// every few inputs while a few hundred are pending (invariant 11); the ring allocates only when
/// more are pending than ever before.
#[derive(Default)]
pub(super) struct ShadowMap {
    /// Sorted by seq, each seq once.
    entries: VecDeque<(u64, ShadowEntry)>,
}

impl ShadowMap {
    /// Pending entries.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where `seq` is, or would go to keep the order.
    fn position(&self, seq: u64) -> Result<usize, usize> {
        // The common case first: past the last entry.
        match self.entries.back() {
            Some((last, _)) if *last < seq => Err(self.entries.len()),
            None => Err(0),
            _ => self.entries.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }

    /// Whether `seq` has an entry.
    pub(super) fn contains_key(&self, seq: &u64) -> bool {
        self.position(*seq).is_ok()
    }

    /// The entry of `seq`.
    pub(super) fn get(&self, seq: &u64) -> Option<&ShadowEntry> {
        let at = self.position(*seq).ok()?;
        self.entries.get(at).map(|(_, entry)| entry)
    }

    /// The entry of `seq`, made empty if there was none.
    pub(super) fn entry_or_default(&mut self, seq: u64) -> &mut ShadowEntry {
        let at = match self.position(seq) {
            Ok(at) => at,
            Err(at) => {
                self.entries.insert(at, (seq, ShadowEntry::default()));
                at
            }
        };
        &mut self.entries[at].1
    }

    /// The oldest entry.
    pub(super) fn first(&self) -> Option<(u64, &ShadowEntry)> {
        self.entries.front().map(|(seq, entry)| (*seq, entry))
    }

    /// Takes the oldest entry out.
    pub(super) fn pop_first(&mut self) -> Option<(u64, ShadowEntry)> {
        self.entries.pop_front()
    }

    /// Every entry, oldest first.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut ShadowEntry)> {
        self.entries.iter_mut().map(|(seq, entry)| (&*seq, entry))
    }

    /// The seqs from `from` on, oldest first.
    pub(super) fn seqs_from(&self, from: u64) -> impl Iterator<Item = u64> + '_ {
        let start = self.position(from).unwrap_or_else(|at| at);
        self.entries.range(start..).map(|(seq, _)| *seq)
    }
}

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    /// Stores one side's outputs for `seq` (the owner's when `standby` is `None`, else those of
    /// standby slot `standby`) and compares once both are there. A standby that answers
    /// differently is marked as diverged on the input's symbol.
    pub(super) fn record_shadow(&mut self, seq: u64, outputs: Vec<Output>, standby: Option<usize>) {
        // A verified canary input is always kept: its delivery waits on the comparison. Those
        // are bounded by the two engines' in-flight windows, which hold new inputs back.
        let verified = self.held_for_verification(seq);
        if self.shadow.len() >= constants::SHADOW_PENDING_MAX
            && !self.shadow.contains_key(&seq)
            && !verified
        {
            return;
        }
        let canary_input = self.canary.is_some() && self.canary_owned.contains(&seq);
        let expected = canary_input
            && self
                .canary
                .as_ref()
                .is_some_and(|c| c.expected_seqs.contains(&seq));
        let canary_slot = self.canary.as_ref().map(|c| c.slot);
        let mut diverged = None;
        let entry = self.shadow.entry_or_default(seq);
        match standby {
            None => entry.authoritative = Some(outputs),
            Some(slot) => {
                entry.standby = Some(outputs);
                entry.standby_slot = Some(slot);
            }
        }
        if !entry.compared
            && let (Some(a), Some(b)) = (&entry.authoritative, &entry.standby)
        {
            entry.compared = true;
            // The engine whose book is no longer what the counterparties were told: the one
            // whose answer is not delivered. That is the standby, except on a verified canary
            // input, where the baseline's answer goes out and the canary's is held back.
            let not_delivered = if verified {
                canary_slot
            } else {
                entry.standby_slot
            };
            if a != b
                && let Some(slot) = not_delivered
                && let Some(connection) = self.engines[slot].connection.as_ref()
            {
                // Unknown symbol (too old to remember): hold it against every symbol it trades.
                let symbols = match recent_input(&self.recent, seq) {
                    Some((_, symbol)) => vec![symbol],
                    None => self.config.symbols.clone(),
                };
                let set = self.diverged.entry(connection.name.clone()).or_default();
                let new: Vec<Symbol> = symbols.into_iter().filter(|s| set.insert(*s)).collect();
                if !new.is_empty() {
                    diverged = Some(CoreEvent::Record(CoreRecord::Diverged {
                        engine: connection.name.clone(),
                        symbols: names(&new),
                    }));
                }
            }
            if let Some(canary) = self.canary.as_mut()
                && self.canary_owned.contains(&seq)
            {
                // `a` is the canary engine's (it owns the input), `b` the baseline's.
                canary.gates.compared += 1;
                // A difference the change declared is the new behaviour, not an error; the
                // reject-rate and latency gates still judge those inputs.
                if expected {
                    canary.gates.expected_divergences += u64::from(a != b);
                } else {
                    canary.gates.errors += u64::from(a != b);
                }
                canary.gates.canary_rejects += rejects(a);
                canary.gates.baseline_rejects += rejects(b);
            }
            if a == b {
                self.shadow_status.matches += 1;
            } else {
                self.shadow_status.divergences += 1;
                tracing::warn!(input_seq = seq, "shadow divergence");
                if self.shadow_status.samples.len() < constants::SHADOW_SAMPLES_MAX {
                    self.shadow_status.samples.push(DivergenceSample {
                        input_seq: seq,
                        authoritative: format!("{a:?}"),
                        standby: format!("{b:?}"),
                    });
                }
            }
        }
        if let Some(event) = diverged {
            self.emit(event);
        }
    }

    /// Drops shadow entries no longer needed: compared and delivered; or the oldest when the
    /// standby lags too far for comparison.
    pub(super) fn trim_shadow(&mut self) {
        let delivered = self.queued_through;
        while let Some((seq, compared)) = self.shadow.first().map(|(seq, e)| (seq, e.compared)) {
            let done = seq <= delivered && compared;
            // An input waiting for verification is never dropped: nothing else delivers it.
            let stale = self.shadow.len() >= constants::SHADOW_PENDING_MAX
                && !(seq > delivered && self.held_for_verification(seq));
            if done || stale {
                if let Some((_, entry)) = self.shadow.pop_first() {
                    for outputs in [entry.authoritative, entry.standby].into_iter().flatten() {
                        self.outputs_pool.give(outputs);
                    }
                }
            } else {
                break;
            }
        }
        // A canary input is kept until it is delivered and compared (or no longer comparable).
        let oldest_shadow = self.shadow.first().map_or(u64::MAX, |(seq, _)| seq);
        let keep_from = (delivered + 1).min(oldest_shadow);
        while self
            .canary_owned
            .first()
            .is_some_and(|seq| *seq < keep_from)
        {
            self.canary_owned.pop_first();
        }
        if let Some(canary) = self.canary.as_mut() {
            while canary
                .expected_seqs
                .first()
                .is_some_and(|seq| *seq < keep_from)
            {
                canary.expected_seqs.pop_first();
            }
        }
    }

    /// Judges the canary against its gates; the first breach is reported once, and the control
    /// plane, having audited it, asks for the rollback.
    pub(super) fn check_gates(&mut self, with_latency: bool) {
        let Some(canary) = self.canary.as_mut() else {
            return;
        };
        if canary.gates.breach.is_none() {
            let gates = &self.config.gates;
            let g = &mut canary.gates;
            if with_latency {
                g.canary_p99_us = canary.canary_latency.value_at_quantile(0.99);
                g.baseline_p99_us = canary.baseline_latency.value_at_quantile(0.99);
            }
            let compared = g.compared.max(1) as f64;
            let error_rate = g.errors as f64 / compared;
            let reject_increase = (g.canary_rejects as f64 - g.baseline_rejects as f64) / compared;
            let latency_limit = gates.latency_limit_us(g.baseline_p99_us);
            let latency_samples = canary
                .canary_latency
                .len()
                .min(canary.baseline_latency.len());
            let verified = canary.delivery == CanaryDelivery::Verified;
            let breach = if verified && g.errors > 0 {
                // A verified canary is rolled back at its first undeclared mismatch: its answer
                // was held back, and the next one may be wrong too.
                Some(("verification", g.errors as f64, 0.0))
            } else if g.errors > 0 && error_rate > gates.error_rate_max {
                Some(("error-rate", error_rate, gates.error_rate_max))
            } else if g.compared >= gates.reject_min_samples
                && reject_increase > gates.reject_rate_increase_max
            {
                Some((
                    "reject-rate",
                    reject_increase,
                    gates.reject_rate_increase_max,
                ))
            } else if with_latency
                && latency_samples >= gates.latency_min_samples
                && g.canary_p99_us as f64 > latency_limit
            {
                Some(("latency", g.canary_p99_us as f64, latency_limit))
            } else {
                None
            };
            if let Some((gate, observed, limit)) = breach {
                tracing::warn!(
                    gate,
                    observed,
                    limit,
                    compared = g.compared,
                    "canary gate breached; rolling back"
                );
                g.breach = Some(GateBreach {
                    gate: gate.to_owned(),
                    observed,
                    limit,
                    compared: g.compared,
                    since_seq: canary.since_seq,
                });
            }
        }
        // The breach goes to the control plane, and again every second until the canary has
        // ended: a dropped event or a refused rollback is retried, never forgotten.
        let due = canary.breach_emitted.is_none_or(|at| {
            self.now.since(at) >= Duration::from_millis(constants::GATE_BREACH_REPEAT_MS)
        });
        let Some(breach) = canary.gates.breach.clone().filter(|_| due) else {
            return;
        };
        if self.emit(CoreEvent::GateBreached(breach))
            && let Some(canary) = self.canary.as_mut()
        {
            canary.breach_emitted = Some(self.now);
        }
    }
}

/// Reports that tell a counterparty no: a rejected order, a refused cancel or replace.
pub(super) fn rejects(outputs: &[Output]) -> u64 {
    outputs
        .iter()
        .filter(|output| match &output.report {
            Report::Execution(report) => report.exec_type == ExecType::Rejected,
            Report::CancelReject(_) => true,
        })
        .count() as u64
}

/// A histogram of answer latencies in µs, up to a minute, 2 significant digits: enough to tell a
/// slower build from a faster one, small enough to create per canary.
pub(super) fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    match hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2) {
        Ok(histogram) => histogram,
        // The bounds are constants that hdrhistogram accepts; failing here is a bug.
        Err(error) => panic!("latency histogram bounds: {error}"),
    }
}
