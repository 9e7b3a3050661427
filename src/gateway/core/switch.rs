//! Operator commands: a switch, canary or rollback waits at a barrier (the last input sequenced
//! under the old authority) until both engines answered every input up to it and its outputs
//! are delivered, then moves authority (invariant 5); stage checks and resumes.

use super::*;

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    pub(super) fn on_control(&mut self, id: CommandId, command: CoreCommand) {
        let kind = match &command.request {
            CoreRequest::Status => {
                let status = CoreReply::Status(Box::new(self.status()));
                self.reply(id, status);
                return;
            }
            CoreRequest::Resume { symbols } => {
                let reply = self.resume(symbols);
                self.reply(id, reply);
                return;
            }
            CoreRequest::Stage { engine } => {
                let reply = self.check_stage(engine, command.expect_sha256.as_deref());
                self.reply(id, reply);
                return;
            }
            CoreRequest::Switch => Ok((false, SwitchKind::All)),
            CoreRequest::Rollback => Ok((true, SwitchKind::All)),
            CoreRequest::Canary { percent, symbols } => self
                .check_expected(&command.expected_divergence)
                .and_then(|()| self.choose_canary(*percent, symbols))
                .map(|symbols| (false, SwitchKind::CanaryStart(symbols))),
        };
        let started = kind.and_then(|(rollback, kind)| self.start_switch(rollback, kind, &command));
        match started {
            Ok(()) => {
                if let Some(pending) = self.pending_switch.as_mut() {
                    pending.reply = Some(id);
                }
            }
            Err(reason) => self.reply(id, CoreReply::Refused { reason }),
        }
    }

    /// The canary's symbols: those named (each must be configured), or a share of the configured
    /// ones chosen by [`canary_symbols`].
    pub(super) fn choose_canary(
        &self,
        percent: Option<u8>,
        named: &[String],
    ) -> Result<Vec<Symbol>, String> {
        let configured = names(&self.config.symbols).join(", ");
        if !named.is_empty() {
            let mut chosen = Vec::with_capacity(named.len());
            for name in named {
                match self
                    .config
                    .symbols
                    .iter()
                    .find(|s| s.as_str() == name.as_str())
                {
                    Some(symbol) => chosen.push(*symbol),
                    None => {
                        return Err(format!(
                            "{name} is not a configured symbol (configured: {configured})"
                        ));
                    }
                }
            }
            chosen.sort();
            chosen.dedup();
            return Ok(chosen);
        }
        match percent {
            Some(percent @ 1..=100) if !self.config.symbols.is_empty() => {
                Ok(canary_symbols(&self.config.symbols, percent))
            }
            Some(percent @ 1..=100) => Err(format!(
                "a canary of {percent}% needs the venue's symbols ([engine] instruments); none are configured"
            )),
            Some(percent) => Err(format!(
                "a canary share must be 1 to 100 percent, not {percent}"
            )),
            None => Err("a canary needs a share (--percent) or symbols (--symbols)".into()),
        }
    }

    /// Refuses a declared divergence on a symbol the venue does not trade (a typo would
    /// otherwise silently leave the real symbol's differences counted as errors); message types
    /// were checked when the change was filed, and are checked again here.
    pub(super) fn check_expected(&self, expected: &ExpectedDivergence) -> Result<(), String> {
        for name in &expected.symbols {
            if !self.config.symbols.iter().any(|s| s.as_str() == name) {
                return Err(format!(
                    "the change declares divergence on {name}, which is not a configured symbol (configured: {})",
                    names(&self.config.symbols).join(", ")
                ));
            }
        }
        ExpectedDivergence::parse(&[], &expected.msg_types).map(|_| ())
    }

    pub(super) fn start_switch(
        &mut self,
        rollback: bool,
        kind: SwitchKind,
        command: &CoreCommand,
    ) -> Result<(), String> {
        if self.pending_switch.is_some() {
            return Err("a switch is already in progress".into());
        }
        let Some(authority) = self.authority else {
            return Err("no engine has authority".into());
        };
        let canary_slot = self.canary.as_ref().map(|c| c.slot);
        if command.canary_only && canary_slot.is_none() {
            return Err("no canary is running: nothing for this rollback to end".into());
        }
        let (target, kind) = match (rollback, kind, canary_slot) {
            // Undoing a canary returns its symbols; authority never moved.
            (true, _, Some(slot)) => (slot, SwitchKind::CanaryEnd),
            (true, kind, None) => match self.previous_authority {
                Some((previous, _)) if previous != authority => (previous, kind),
                _ => return Err(
                    "nothing to roll back to: authority has not moved since it was last rolled back or since the gateway started; moving it again is a switch, which needs its approval"
                        .into(),
                ),
            },
            (false, SwitchKind::CanaryStart(_), Some(_)) => {
                return Err(
                    "a canary is already running: complete it with switch or end it with rollback"
                        .into(),
                );
            }
            // A switch during a canary completes it: everything moves to the canary engine.
            (false, kind, Some(slot)) => (slot, kind),
            (false, kind, None) => match (0..self.engines.len())
                .find(|&i| i != authority && self.engines[i].connection.is_some())
            {
                Some(target) => (target, kind),
                None => return Err("no standby attached".into()),
            },
        };
        let Some(standby) = self.engines[target].connection.as_ref() else {
            return Err("the rollback target is not attached".into());
        };
        if standby.restoring {
            return Err(format!("standby {} is still restoring", standby.name));
        }
        if let Some(expected) = command.expect_sha256.as_deref()
            && kind != SwitchKind::CanaryEnd
            && standby.executable_sha256 != expected
        {
            return Err(format!(
                "engine {} runs an executable with SHA-256 {}, not the change's artifact {expected}",
                standby.name,
                reported(&standby.executable_sha256)
            ));
        }
        // A rollback returns authority to the build that had it, not to whatever was started
        // in that slot since.
        if rollback
            && kind == SwitchKind::All
            && command.expect_sha256.is_none()
            && let Some((_, had)) = &self.previous_authority
            && *had != standby.executable_sha256
        {
            return Err(format!(
                "engine {} now runs an executable with SHA-256 {}, not the {had} that had authority; move authority to it under a change instead",
                standby.name,
                reported(&standby.executable_sha256)
            ));
        }
        self.refuse_diverged(target, &kind)?;
        let lag = self
            .journal
            .last_seq()
            .saturating_sub(standby.answered_through);
        // Ending a canary is backing out: it waits for the canary engine however far behind.
        if lag > self.config.gates.switch_lag_max_inputs && kind != SwitchKind::CanaryEnd {
            return Err(format!("standby {} is {lag} inputs behind", standby.name));
        }
        self.pending_switch = Some(PendingSwitch {
            to: target,
            barrier: self.journal.last_seq(),
            started: self.now,
            kind,
            rollback,
            reply: None,
            expected: command.expected_divergence.clone(),
            transfer: TransferStep::Undecided,
        });
        // The barrier waits for the standby's answers through it: what was kept goes out now.
        self.flush_all_deferred();
        Ok(())
    }

    /// Refuses to give engine `target` authority for symbols on which its book is not what the
    /// counterparties were told (it answered differently from the engine whose answers were
    /// delivered), and refuses to complete a canary whose gate tripped. Backing out (a canary's
    /// end) is never refused; its diverged symbols are halted instead.
    pub(super) fn refuse_diverged(&self, target: usize, kind: &SwitchKind) -> Result<(), String> {
        let Some(connection) = self.engines[target].connection.as_ref() else {
            return Ok(());
        };
        let empty = BTreeSet::new();
        let engine_diverged = self.diverged.get(&connection.name).unwrap_or(&empty);
        let diverged: Vec<String> = match kind {
            SwitchKind::CanaryEnd => return Ok(()),
            SwitchKind::All => names(engine_diverged),
            SwitchKind::CanaryStart(symbols) => {
                names(symbols.iter().filter(|s| engine_diverged.contains(s)))
            }
        };
        if !diverged.is_empty() {
            return Err(format!(
                "engine {} answered differently from what the counterparties were told on {}: its book there is not theirs; restart it empty (it restores from the authoritative engine's snapshot), or reconcile its book and run baton ctl resume --symbols",
                connection.name,
                diverged.join(", ")
            ));
        }
        if let Some(canary) = &self.canary
            && canary.slot == target
            && let Some(breach) = &canary.gates.breach
        {
            return Err(format!(
                "the canary on {} breached its {} gate; it is being rolled back",
                connection.name, breach.gate
            ));
        }
        Ok(())
    }

    /// Moves authority once both engines have answered every input up to the barrier and every
    /// output up to it is delivered.
    pub(super) fn try_complete_switch(&mut self) {
        let Some(pending) = self.pending_switch.as_ref() else {
            return;
        };
        let Some(authority) = self.authority else {
            return;
        };
        let answered = |index: usize| {
            self.engines[index]
                .connection
                .as_ref()
                .map(|c| c.answered_through)
        };
        let ready = answered(authority).is_some_and(|a| a >= pending.barrier)
            && (answered(pending.to).is_some_and(|a| a >= pending.barrier)
                || self.planted == Some(PlantedBug::SwitchBeforeStandbyAnswered))
            && self.queued_through >= pending.barrier;
        if !ready {
            return;
        }
        // Every answer up to the barrier is in: judge the canary on all of them, and re-check
        // what may have diverged while the barrier waited, before anything moves.
        self.check_gates(true);
        if !self.advance_transfer() {
            return;
        }
        let Some(mut pending) = self.pending_switch.take() else {
            return;
        };
        if let Err(reason) = self.refuse_diverged(pending.to, &pending.kind) {
            tracing::warn!(%reason, "switch refused at its barrier");
            if let Some(reply) = pending.reply.take() {
                self.reply(reply, CoreReply::Refused { reason });
            }
            return;
        }
        let name = |index: usize| {
            self.engines[index]
                .connection
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        let (from, to, scope) = match &pending.kind {
            SwitchKind::All => (authority, pending.to, SwitchScope::All),
            SwitchKind::CanaryStart(symbols) => (
                authority,
                pending.to,
                SwitchScope::CanaryStarted {
                    symbols: names(symbols),
                },
            ),
            SwitchKind::CanaryEnd => {
                let symbols = self
                    .canary
                    .as_ref()
                    .map(|c| c.symbol_names())
                    .unwrap_or_default();
                let transfer = match &pending.transfer {
                    TransferStep::Sequenced(report) => Some(Box::new(report.clone())),
                    TransferStep::Refused(reason) => Some(Box::new(TransferReport {
                        symbols: symbols.clone(),
                        refused: Some(reason.clone()),
                        ..TransferReport::default()
                    })),
                    TransferStep::Undecided | TransferStep::Requested(_) => None,
                };
                (
                    pending.to,
                    authority,
                    SwitchScope::CanaryEnded { symbols, transfer },
                )
            }
        };
        let report = SwitchReport {
            from: name(from),
            to: name(to),
            barrier_seq: pending.barrier,
            pause_us: self.now.since(pending.started).as_micros() as u64,
            planned: true,
            scope,
            rollback: pending.rollback,
        };
        tracing::info!(from = %report.from, to = %report.to, barrier = report.barrier_seq, pause_us = report.pause_us, scope = ?report.scope, "switched authority");
        match pending.kind {
            // A rollback returns authority once: it leaves no target for another rollback.
            SwitchKind::All if pending.rollback => {
                self.previous_authority = None;
                self.authority = Some(pending.to);
                self.end_canary();
            }
            SwitchKind::All => {
                self.previous_authority = Some((authority, self.executable_of(authority)));
                self.authority = Some(pending.to);
                self.end_canary();
            }
            SwitchKind::CanaryStart(symbols) => {
                self.canary = Some(Canary::new(
                    pending.to,
                    symbols,
                    pending.barrier,
                    self.config.canary_delivery,
                    std::mem::take(&mut pending.expected),
                ));
            }
            SwitchKind::CanaryEnd => {
                if matches!(pending.transfer, TransferStep::Sequenced(_)) {
                    self.clear_transferred();
                }
                self.end_canary();
            }
        }
        self.switches += 1;
        self.last_switch = Some(report.clone());
        match pending.reply.take() {
            // If the control plane stopped waiting (its reply timed out), the driver turns the
            // answer into a `CoreEvent::Completed`, so the audit log does not end on a refusal
            // for a switch that ran.
            Some(reply) => self.reply(reply, CoreReply::Switched(report)),
            None => {
                self.emit(CoreEvent::Completed(report));
            }
        }
    }

    /// The SHA-256 the engine in `slot` reported, empty if none or not attached.
    pub(super) fn executable_of(&self, slot: usize) -> String {
        self.engines[slot]
            .connection
            .as_ref()
            .map(|c| c.executable_sha256.clone())
            .unwrap_or_default()
    }

    /// Ends the canary (if any): its symbols belong to the authoritative engine again. Where that
    /// engine's book is not what the counterparties were told (the canary's answers differed
    /// from its own), the symbols are halted until an operator reconciles and resumes them.
    pub(super) fn end_canary(&mut self) {
        self.canary = None;
        self.canary_owned.clear();
        self.halt_diverged();
    }

    /// Halts every symbol whose owner now has a book that differs from what the counterparties
    /// were told: new requests for it are refused until an operator resumes it.
    pub(super) fn halt_diverged(&mut self) {
        let Some(authority) = self.authority else {
            return;
        };
        let empty = BTreeSet::new();
        let diverged_of = |slot: usize| {
            self.engines[slot]
                .connection
                .as_ref()
                .and_then(|c| self.diverged.get(&c.name))
                .unwrap_or(&empty)
        };
        let covered = |symbol: &Symbol| self.canary.as_ref().is_some_and(|c| c.covers(symbol));
        let mut halted: Vec<Symbol> = diverged_of(authority)
            .iter()
            .filter(|symbol| !covered(symbol))
            .copied()
            .collect();
        if let Some(canary) = &self.canary {
            let owner = diverged_of(canary.slot);
            halted.extend(canary.symbols.iter().filter(|s| owner.contains(s)));
        }
        let new: Vec<Symbol> = halted
            .into_iter()
            .filter(|symbol| self.halted.insert(*symbol))
            .collect();
        if !new.is_empty() {
            tracing::error!(symbols = ?names(&new), "halted: the owner's book differs from what counterparties were told");
            self.emit(CoreEvent::Record(CoreRecord::Halted {
                symbols: names(&new),
            }));
        }
    }

    /// Whether engine `name` may be restarted from another build: never while it owns inputs
    /// (authority, or a canary's symbols), nor while a switch is on its way to it.
    pub(super) fn check_stage(&self, name: &str, artifact_sha256: Option<&str>) -> CoreReply {
        let owning = |slot: Option<usize>| {
            slot.and_then(|slot| self.engines[slot].connection.as_ref())
                .is_some_and(|c| c.name == name)
        };
        let refuse = |why: &str| CoreReply::Refused {
            reason: format!("engine {name} {why}; stage the standby"),
        };
        if owning(self.authority) {
            return refuse("has authority");
        }
        if owning(self.canary.as_ref().map(|c| c.slot)) {
            return refuse("owns a canary's symbols");
        }
        if owning(self.pending_switch.as_ref().map(|p| p.to)) {
            return refuse("is taking authority at a pending switch");
        }
        let attached = self
            .engines
            .iter()
            .filter_map(|slot| slot.connection.as_ref())
            .any(|c| c.name == name);
        if !attached {
            return CoreReply::Refused {
                reason: format!(
                    "no engine named {name} is attached (engines: {})",
                    self.engines
                        .iter()
                        .filter_map(|slot| slot.connection.as_ref())
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
        }
        CoreReply::Staged {
            engine: name.to_owned(),
            artifact_sha256: artifact_sha256.unwrap_or_default().to_owned(),
        }
    }

    /// An operator's word that `symbols` were reconciled: they trade again, and the authoritative
    /// engine's book for them is taken as what the counterparties have been told.
    /// An operator's word that `symbols` were reconciled: halted ones trade again, and every
    /// engine's book for them is taken as what the counterparties have been told.
    pub(super) fn resume(&mut self, symbols: &[String]) -> CoreReply {
        let mut resumed = Vec::new();
        for name in symbols {
            let known = |s: &Symbol| s.as_str() == name.as_str();
            let symbol = self.halted.iter().copied().find(known).or_else(|| {
                self.diverged
                    .values()
                    .flat_map(|set| set.iter().copied())
                    .find(known)
            });
            match symbol {
                Some(symbol) => resumed.push(symbol),
                None => {
                    return CoreReply::Refused {
                        reason: format!(
                            "{name} is neither halted nor diverged on any engine (halted: {})",
                            names(&self.halted).join(", ")
                        ),
                    };
                }
            }
        }
        for symbol in &resumed {
            self.halted.remove(symbol);
            for set in self.diverged.values_mut() {
                set.remove(symbol);
            }
            tracing::warn!(symbol = symbol.as_str(), "symbol resumed by an operator");
        }
        self.diverged.retain(|_, set| !set.is_empty());
        CoreReply::Resumed {
            symbols: names(&resumed),
        }
    }
}

/// The `count` symbols a canary of `percent` takes: ranked by the SHA-256 of their names, so the
/// choice is the same on every host and build and does not depend on configuration order.
pub fn canary_symbols(symbols: &[Symbol], percent: u8) -> Vec<Symbol> {
    use sha2::Digest as _;
    let mut ranked: Vec<([u8; 32], Symbol)> = symbols
        .iter()
        .map(|symbol| (sha2::Sha256::digest(symbol.as_bytes()).into(), *symbol))
        .collect();
    ranked.sort();
    ranked.dedup_by(|a, b| a.1 == b.1);
    let count = (ranked.len() * usize::from(percent.min(100)))
        .div_ceil(100)
        .max(1);
    let mut chosen: Vec<Symbol> = ranked.into_iter().take(count).map(|(_, s)| s).collect();
    chosen.sort();
    chosen
}

/// An engine's executable hash for a message, or what its absence means.
pub(super) fn reported(sha256: &str) -> &str {
    if sha256.is_empty() {
        "(not reported)"
    } else {
        sha256
    }
}
