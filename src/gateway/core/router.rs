//! The router's side that no operator asks for: engines attaching, silent or lost, and
//! failover to the surviving engine, which delivers what it already produced for undelivered
//! inputs and is asked again for the rest.

use super::*;

/// How an engine that attaches empty while another holds authority is brought to its state
/// (see `Core::rejoin_path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rejoin {
    /// Fed the journal from input 1, as any engine behind the journal is caught up.
    Replay,
    /// Restored from the authoritative engine's snapshot, then caught up from the journal;
    /// the text says why a replay would not do.
    Snapshot(&'static str),
}

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    pub(super) fn housekeeping(&mut self) {
        let now = self.now;
        // Only with the planted bug: what was sent and delivered is journaled only now.
        for (seq, time, payload) in std::mem::take(&mut self.unjournaled) {
            if let Err(error) = self.journal.append(seq, time, &payload) {
                tracing::error!(%error, seq, "late journal append failed");
            }
        }
        // Declare a silent authoritative engine dead.
        if let Some(authority) = self.authority
            && let Some(connection) = self.engines[authority].connection.as_ref()
            && now.since(connection.last_heard) > self.config.failover_timeout
        {
            tracing::warn!(engine = %connection.name, silent_ms = now.since(connection.last_heard).as_millis() as u64, "authoritative engine silent; failing over");
            self.lose(authority);
        }
        if let Some(slot) = self.canary.as_ref().map(|c| c.slot)
            && let Some(connection) = self.engines[slot].connection.as_ref()
            && now.since(connection.last_heard) > self.config.failover_timeout
        {
            tracing::warn!(engine = %connection.name, "canary engine silent; its symbols return");
            self.lose(slot);
        }
        self.check_gates(true);
        // Until an engine holds authority, engines are tried in their configured order, one
        // attempt in flight at a time, so the first listed that answers takes authority (the
        // order operators give: authoritative first), not whichever Hello happens to land first.
        let in_order = self.authority.is_none();
        let mut earlier_in_flight = false;
        for index in 0..self.engines.len() {
            let slot = &mut self.engines[index];
            let may_try = !(in_order && earlier_in_flight);
            earlier_in_flight |= slot.connecting;
            if may_try && slot.connection.is_none() && !slot.connecting && slot.retry_at <= now {
                slot.retry_at = now.plus(Duration::from_millis(constants::ENGINE_RECONNECT_MS));
                slot.connecting = true;
                earlier_in_flight = true;
                self.transmit(index, LinkCommand::Connect);
            }
        }
        let heartbeat = Duration::from_millis(constants::LINK_HEARTBEAT_INTERVAL_MS_DEFAULT);
        let last_input_seq = self.journal.last_seq();
        for index in 0..self.engines.len() {
            if self.engines[index]
                .connection
                .as_ref()
                .is_some_and(|connection| now.since(connection.last_sent) >= heartbeat)
            {
                self.transmit(index, LinkCommand::Heartbeat { last_input_seq });
            }
        }
    }

    /// Says in the log, at most once per [`constants::ENGINE_ABSENT_WARN_MS`], that no engine
    /// is attached, naming the engine whose connection attempt just failed and why: until one
    /// attaches, every business message is refused, which an operator must not have to guess.
    pub(super) fn warn_if_no_engine(&mut self, slot: usize, error: &str) {
        let period = Duration::from_millis(constants::ENGINE_ABSENT_WARN_MS);
        if self.authority.is_some() || self.now.since(self.engine_absent_warned) < period {
            return;
        }
        self.engine_absent_warned = self.now;
        let engines: Vec<String> = self.engines.iter().map(|e| e.addr.to_string()).collect();
        tracing::warn!(
            engines = %engines.join(","),
            engine = %self.engines[slot].addr,
            %error,
            "no engine reachable: business messages are refused (380=4) until one attaches"
        );
    }

    /// Takes the engine that answered on slot `index` with `hello`; false if it is refused.
    pub(super) fn attach(&mut self, index: usize, hello: &link::Hello) -> bool {
        let journal_last = self.journal.last_seq();
        if hello.last_input_seq > journal_last {
            tracing::error!(engine = %hello.engine_name, engine_last = hello.last_input_seq, journal_last, "engine is ahead of the journal; refusing it");
            return false;
        }
        // The core asks for a connection only to a slot that has none, one attempt at a time.
        debug_assert!(self.engines[index].connection.is_none());
        self.emit(CoreEvent::Record(CoreRecord::EngineAttached {
            name: hello.engine_name.clone(),
            build_version: hello.build_version.clone(),
            executable_sha256: hello.executable_sha256.clone(),
        }));
        let mut connection = Connection {
            name: hello.engine_name.clone(),
            build_version: hello.build_version.clone(),
            executable_sha256: hello.executable_sha256.clone(),
            protocol_version: hello.protocol_version,
            sent_through: hello.last_input_seq,
            answered_through: hello.last_input_seq,
            restoring: false,
            journal_replica: hello.last_input_seq == 0,
            catch_up: None,
            last_heard: self.now,
            last_sent: self.now,
            deferred: standby::Deferred::new(),
        };
        match self.authority {
            None => {
                // First engine: it takes authority. Resend from the first input not known
                // delivered, so its replay window (or a fresh engine's re-execution) yields every
                // output the gateway may not have delivered.
                let from = hello.last_input_seq.min(self.queued_through);
                connection.sent_through = from;
                connection.answered_through = from;
                tracing::info!(engine = %hello.engine_name, build = %hello.build_version, from = from + 1, journal_last, "engine attached with authority");
                self.engines[index].connection = Some(connection);
                self.authority = Some(index);
                // An engine whose book diverged before a restart halts those symbols.
                self.halt_diverged();
                self.request_snapshot_for_restoring();
                return true;
            }
            Some(authority) if hello.last_input_seq == 0 && journal_last > 0 => {
                match self.rejoin_path(authority, hello) {
                    Rejoin::Replay => {
                        // The journal rebuilds it: no work at all for the authoritative engine,
                        // and the catch-up feeds it in bounded batches beside the live inputs.
                        tracing::info!(engine = %hello.engine_name, build = %hello.build_version, journal_last, "standby attached empty; replaying the journal from input 1");
                        self.forget_divergence(&hello.engine_name);
                        self.engines[index].connection = Some(connection);
                    }
                    Rejoin::Snapshot(why) => {
                        // Restore it from the authoritative engine's snapshot.
                        connection.restoring = true;
                        connection.journal_replica = false;
                        tracing::info!(engine = %hello.engine_name, build = %hello.build_version, why, "standby attached empty; requesting a snapshot");
                        self.engines[index].connection = Some(connection);
                        if self.engines[authority].connection.is_some() {
                            self.transmit(authority, LinkCommand::RequestSnapshot);
                        }
                    }
                }
            }
            Some(_) => {
                tracing::info!(engine = %hello.engine_name, build = %hello.build_version, from = hello.last_input_seq + 1, journal_last, "standby attached");
                self.engines[index].connection = Some(connection);
            }
        }
        true
    }

    /// How an empty standby joining under `authority` reaches its state: by replaying the
    /// journal from input 1 when that is sure to give the authoritative engine's state and is
    /// short enough, else from the authoritative engine's snapshot (with why).
    ///
    /// A replay costs the authoritative engine nothing and the gateway one bounded catch-up
    /// batch per wake-up; a snapshot costs the authoritative engine a frozen copy of its state
    /// and the writing of a frame of the state's size on its link, and the gateway forwarding
    /// that frame to the newcomer. A replay's length grows with the day's inputs, a snapshot's
    /// with the resting state: past [`constants::REJOIN_REPLAY_INPUTS_MAX`] inputs the snapshot
    /// catches up sooner.
    pub(super) fn rejoin_path(&self, authority: usize, hello: &link::Hello) -> Rejoin {
        let Some(owner) = self.engines[authority].connection.as_ref() else {
            return Rejoin::Snapshot("no authoritative engine attached");
        };
        if self.journal.first_seq() != 1 {
            return Rejoin::Snapshot("the journal does not reach back to input 1");
        }
        if self.journal.last_seq() > constants::REJOIN_REPLAY_INPUTS_MAX {
            return Rejoin::Snapshot("the journal is longer than a replay is worth");
        }
        if !owner.journal_replica {
            return Rejoin::Snapshot(
                "the authoritative engine's state is not known to be the journal's replay",
            );
        }
        // Determinism is per build: another build may read the same inputs differently, and
        // only the snapshot gives it the book the counterparties were told.
        if hello.executable_sha256.is_empty() || hello.executable_sha256 != owner.executable_sha256
        {
            return Rejoin::Snapshot("the newcomer runs another executable");
        }
        Rejoin::Replay
    }

    /// Engine `name` starts over from a copy of the authoritative book (a snapshot, or the
    /// journal's replay by the same build): whatever it diverged on before is gone.
    pub(super) fn forget_divergence(&mut self, name: &str) {
        if self.diverged.remove(name).is_some() {
            self.emit(CoreEvent::Record(CoreRecord::DivergenceCleared {
                engine: name.to_owned(),
                symbols: Vec::new(),
            }));
        }
    }

    /// The connection of slot `index` is gone. If it owned inputs (authority, or the canary's
    /// symbols), the surviving engine takes them over: outputs it already produced for
    /// undelivered inputs are delivered in input order, and what it has not produced it is asked
    /// for again. Outputs the lost engine sent for inputs it owned and that wait behind an
    /// earlier one stay: they came from the engine that owned those inputs (invariant 4).
    pub(super) fn lose(&mut self, index: usize) {
        let Some(lost) = self.engines[index].connection.take() else {
            return;
        };
        // A survivor's kept inputs go out before anything a failover sends it.
        self.flush_all_deferred();
        // Whoever noticed first, the driver drops the link and ignores what still arrives on it.
        self.transmits.push_back(LinkTransmit {
            slot: index,
            command: LinkCommand::Drop,
        });
        self.engines[index].retry_at = self
            .now
            .plus(Duration::from_millis(constants::ENGINE_RECONNECT_MS));
        if self.pending_switch.as_ref().is_some_and(|p| p.to == index)
            && let Some(mut pending) = self.pending_switch.take()
            && let Some(reply) = pending.reply.take()
        {
            self.reply(
                reply,
                CoreReply::Refused {
                    reason: format!("standby {} was lost during the switch", lost.name),
                },
            );
        }
        // Comparisons waiting for the lost engine's answers can no longer be made; counted as
        // made, they are trimmed once delivered instead of pinning the shadow map (and the gates
        // of later canaries) for good.
        let canary_slot = self.canary.as_ref().map(|c| c.slot);
        for (seq, entry) in self.shadow.iter_mut() {
            let owner = match canary_slot {
                Some(slot) if self.canary_owned.contains(seq) => Some(slot),
                _ => self.authority,
            };
            let waits_for_lost = if owner == Some(index) {
                entry.authoritative.is_none()
            } else {
                entry.standby.is_none()
            };
            if waits_for_lost {
                entry.compared = true;
            }
        }
        let canary_lost = canary_slot == Some(index);
        if Some(index) != self.authority && !canary_lost {
            tracing::warn!(engine = %lost.name, "standby lost");
            return;
        }
        let canary_symbols = self
            .canary
            .take()
            .map(|c| c.symbol_names())
            .unwrap_or_default();
        let alive = |slot: usize| {
            self.engines[slot]
                .connection
                .as_ref()
                .is_some_and(|c| !c.restoring)
        };
        let next = if canary_lost {
            self.authority
        } else if let Some(slot) = canary_slot.filter(|slot| alive(*slot)) {
            // The canary engine already owns some symbols and shadows the rest.
            self.authority = None;
            Some(slot)
        } else {
            self.authority = None;
            self.engines
                .iter()
                .enumerate()
                .filter(|(i, _)| alive(*i))
                .max_by_key(|(_, slot)| slot.connection.as_ref().map(|c| c.answered_through))
                .map(|(i, _)| i)
        };
        if let Some(mut pending) = self.pending_switch.take()
            && let Some(reply) = pending.reply.take()
        {
            self.reply(
                reply,
                CoreReply::Refused {
                    reason: format!("engine {} was lost; failed over instead", lost.name),
                },
            );
        }
        let Some(next) = next else {
            tracing::error!(engine = %lost.name, "authoritative engine lost and no standby can take over");
            return;
        };
        let previous_owner = |core: &Core<S, J>, seq: u64| {
            if core.canary_owned.contains(&seq) == canary_lost {
                index
            } else {
                next
            }
        };
        // Which undelivered inputs the lost engine owned, decided before ownership changes.
        let delivered = self.queued_through;
        let lost_owned: Vec<u64> = self
            .shadow
            .seqs_from(delivered + 1)
            .filter(|seq| previous_owner(self, *seq) == index)
            .collect();
        self.canary_owned.clear();
        if !canary_lost {
            self.previous_authority = Some((index, lost.executable_sha256.clone()));
        }
        self.authority = Some(next);
        self.halt_diverged();
        self.request_snapshot_for_restoring();
        self.switches += 1;
        let name = self.engines[next]
            .connection
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        tracing::warn!(from = %lost.name, to = %name, delivered_through = delivered, canary = canary_lost, "failover: the surviving engine takes the lost engine's inputs");
        // The pause a failover cost: how long the oldest input still waiting for an answer had
        // waited when the survivor took over (the lost engine's silence, up to the failover
        // timeout); none waiting, no order was held.
        let pause_us = if self.journal.last_seq() > delivered {
            self.input_age_us(delivered + 1, self.now)
        } else {
            0
        };
        let report = SwitchReport {
            from: lost.name,
            to: name,
            barrier_seq: delivered,
            pause_us,
            planned: false,
            rollback: false,
            scope: if canary_lost {
                // A canary engine that died gives nothing back: its symbols are halted where
                // the survivor's book differs, as they always were.
                SwitchScope::CanaryEnded {
                    symbols: canary_symbols,
                    transfer: None,
                }
            } else {
                SwitchScope::All
            },
        };
        self.emit(CoreEvent::Failover(report.clone()));
        self.last_switch = Some(report.clone());
        self.switch_started = Some((self.now, report));
        // Deliver what the survivor already produced, as a shadow, for the lost engine's
        // undelivered inputs, in input order.
        for seq in lost_owned {
            if !self.undelivered.contains_key(&seq)
                && let Some(outputs) = self.shadow.get(&seq).and_then(|e| e.standby.clone())
            {
                self.undelivered.insert(seq, outputs);
            }
        }
        self.drain_undelivered();
        // Whatever it answered beyond that is asked again: the engine answers a resent input
        // from its replay window, and answers arriving meanwhile wait in `undelivered`.
        let mut delivered = self.queued_through;
        if self.planted == Some(PlantedBug::RedeliverAfterFailover) && delivered > 0 {
            delivered -= 1;
            self.queued_through = delivered;
        }
        if let Some(connection) = self.engines[next].connection.as_mut()
            && connection.answered_through > delivered
        {
            connection.sent_through = delivered;
            connection.answered_through = delivered;
            connection.catch_up = None;
        }
    }

    /// A standby waiting for a snapshot asked it of an authoritative engine that is gone: the
    /// new one is asked, or the standby would wait, and get no inputs, for good.
    fn request_snapshot_for_restoring(&mut self) {
        let restoring = self
            .engines
            .iter()
            .any(|slot| slot.connection.as_ref().is_some_and(|c| c.restoring));
        if let Some(authority) = self.authority
            && restoring
            && self.engines[authority].connection.is_some()
        {
            self.transmit(authority, LinkCommand::RequestSnapshot);
        }
    }
}
