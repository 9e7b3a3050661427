//! The outbox: frames from engines, and delivery. The owner's outputs of each input are queued
//! for their sessions once, in input order (invariant 4), as a [`Delivery`] the driver applies
//! and hands back; the outbox cursor, moved only then, is the last input whose outputs are all
//! in their sessions' stores.

use super::*;

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    pub(super) fn on_frame(&mut self, index: usize, frame: Frame) {
        let for_transfer = self.transfer_asked_of(index);
        let from_authority = Some(index) == self.authority;
        let Some(connection) = self
            .engines
            .get_mut(index)
            .and_then(|slot| slot.connection.as_mut())
        else {
            return;
        };
        connection.last_heard = self.now;
        match frame {
            Frame::Outputs(outputs) | Frame::Replayed(outputs) => {
                connection.answered_through = connection.answered_through.max(outputs.input_seq);
                self.on_outputs(index, outputs);
            }
            Frame::AlreadyApplied(applied) => {
                connection.answered_through = connection.answered_through.max(applied.input_seq);
                if Some(index) == self.authority && applied.input_seq > self.queued_through {
                    tracing::error!(
                        input_seq = applied.input_seq,
                        "engine no longer holds the outputs of an undelivered input"
                    );
                    self.queue_delivery(applied.input_seq, Vec::new());
                    self.drain_undelivered();
                }
            }
            Frame::Snapshot(snapshot) if for_transfer => {
                self.on_transfer_snapshot(snapshot.at_input_seq, snapshot.bytes);
            }
            Frame::Refused(refused) if for_transfer => {
                self.on_transfer_refused(refused.reason);
            }
            // Only the authoritative engine is asked for a standby's snapshot: one from another
            // engine answers a transfer that was given up on, and restores nobody.
            Frame::Snapshot(snapshot) if !from_authority => {
                tracing::warn!(engine = %connection.name, at = snapshot.at_input_seq, "snapshot not asked for any more; dropped");
            }
            Frame::Snapshot(snapshot) => {
                // Asked from the authoritative engine for a joining standby.
                let target = self
                    .engines
                    .iter()
                    .position(|slot| slot.connection.as_ref().is_some_and(|c| c.restoring));
                if let Some(target) = target
                    && let Some(standby) = self.engines[target].connection.as_ref()
                {
                    tracing::info!(engine = %standby.name, at = snapshot.at_input_seq, bytes = snapshot.bytes.len(), "restoring standby from snapshot");
                    self.transmit(target, LinkCommand::Restore(snapshot.bytes));
                }
            }
            Frame::Restored(restored) => {
                tracing::info!(engine = %connection.name, at = restored.at_input_seq, digest = %restored.digest, "standby restored; catching up from the journal");
                connection.restoring = false;
                // A copy of the authoritative book: whatever it diverged on before is gone.
                let name = connection.name.clone();
                self.forget_divergence(&name);
                let Some(connection) = self.engines[index].connection.as_mut() else {
                    return;
                };
                connection.sent_through = restored.at_input_seq;
                connection.answered_through = restored.at_input_seq;
                connection.catch_up = None;
            }
            Frame::Refused(refused) => {
                tracing::error!(engine = %connection.name, reason = %refused.reason, "engine refused a request");
                if connection.restoring {
                    self.lose(index);
                }
            }
            Frame::Heartbeat(_) | Frame::Digest(_) => {}
            other => tracing::debug!(kind = %other.kind(), "engine frame ignored"),
        }
    }

    pub(super) fn on_outputs(&mut self, index: usize, outputs: Outputs) {
        let seq = outputs.input_seq;
        let owner = self.owner_of(seq);
        let is_authority = Some(index) == owner;
        let has_standby = self.engines.iter().enumerate().any(|(i, slot)| {
            Some(i) != owner && slot.connection.as_ref().is_some_and(|c| !c.restoring)
        });
        if let Some(canary) = self.canary.as_mut()
            && self.canary_owned.contains(&seq)
        {
            // Each engine's answer latency on the canary's inputs, the same inputs for both.
            let age_us = input_age(&self.recent, seq, self.now);
            let latency = if index == canary.slot {
                &mut canary.canary_latency
            } else {
                &mut canary.baseline_latency
            };
            latency.saturating_record(age_us);
        }
        if self.held_for_verification(seq) {
            // Neither answer goes out on arrival: the comparison decides which one does.
            let canary_slot = self.canary.as_ref().map(|c| c.slot);
            if Some(index) == canary_slot {
                self.record_shadow(seq, outputs.outputs, None);
            } else if Some(index) == self.authority {
                self.record_shadow(seq, outputs.outputs, Some(index));
            }
            self.release_verified(seq);
        } else if is_authority {
            if seq == self.queued_through + 1 && self.undelivered.is_empty() {
                // The steady case: next in input order, queued at once. Alone, the engine's
                // vector itself is the delivery; with a standby it is kept for the comparison
                // and the delivery copies it into a vector a delivery before handed back, so
                // nothing is allocated per input (invariant 11).
                if has_standby {
                    self.deliver(seq, &outputs.outputs);
                    self.record_shadow(seq, outputs.outputs, None);
                } else {
                    self.deliver_owned(seq, outputs.outputs);
                }
            } else {
                if has_standby {
                    self.record_shadow(seq, outputs.outputs.clone(), None);
                }
                if seq > self.queued_through {
                    self.undelivered.insert(seq, outputs.outputs);
                    self.drain_undelivered();
                }
            }
        } else if seq > self.queued_through || self.shadow.contains_key(&seq) {
            self.record_shadow(seq, outputs.outputs, Some(index));
        }
        self.trim_shadow();
        if self.canary.is_some() {
            self.check_gates(false);
        }
    }

    /// Once both engines answered a verified canary input, the baseline's answer is queued for
    /// delivery: when they match it is the canary's answer too, and when they differ it is the
    /// one that keeps the baseline's book what the counterparties were told (the mismatch has
    /// already been counted, and trips the verification gate).
    pub(super) fn release_verified(&mut self, seq: u64) {
        let Some(entry) = self.shadow.get(&seq) else {
            return;
        };
        if !entry.compared || seq <= self.queued_through {
            return;
        }
        if let Some(baseline) = entry.standby.clone() {
            self.undelivered.insert(seq, baseline);
            self.drain_undelivered();
        }
    }

    /// Delivers the authoritative outputs that are next in input order.
    pub(super) fn drain_undelivered(&mut self) {
        while let Some(entry) = self.undelivered.first_entry() {
            let seq = *entry.key();
            if seq <= self.queued_through {
                let outputs = entry.remove();
                self.outputs_pool.give(outputs);
            } else if seq == self.queued_through + 1 {
                let outputs = entry.remove();
                self.deliver_owned(seq, outputs);
            } else {
                break;
            }
        }
    }

    /// Queues the outputs of `input_seq` for delivery, once: the caller keeps `outputs`.
    pub(super) fn deliver(&mut self, input_seq: u64, outputs: &[Output]) {
        if input_seq <= self.queued_through {
            return;
        }
        let mut copy = self
            .spare_outputs
            .pop()
            .unwrap_or_else(|| self.outputs_pool.take());
        copy.extend_from_slice(outputs);
        self.deliver_owned(input_seq, copy);
    }

    /// Queues the outputs of `input_seq` for delivery, once, in `outputs` itself: the steady
    /// path moves the engine's vector into the delivery instead of copying it.
    pub(super) fn deliver_owned(&mut self, input_seq: u64, mut outputs: Vec<Output>) {
        if input_seq <= self.queued_through {
            self.outputs_pool.give(outputs);
            return;
        }
        if !self.halted.is_empty()
            && let Some(symbol) = output_symbol(&self.recent, input_seq, &outputs)
            && self.halted.contains(&symbol)
        {
            // Sequenced before the halt; its answers come from a book that is not what the
            // counterparties were told. Kept in the audit log for the reconciliation instead.
            let mut text = format!("{outputs:?}");
            let mut cut = text.len().min(constants::WITHHELD_OUTPUTS_TEXT_BYTES_MAX);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            tracing::error!(
                input_seq,
                symbol = symbol.as_str(),
                "outputs withheld: the symbol is halted"
            );
            self.emit(CoreEvent::Record(CoreRecord::OutputsWithheld {
                input_seq,
                symbol: symbol.as_str().to_owned(),
                outputs: text,
            }));
            outputs.clear();
            self.queue_delivery(input_seq, outputs);
            return;
        }
        if let Some(owner) = self.owner_of(input_seq) {
            self.engines[owner].delivered_inputs += 1;
        }
        if !self.stored_marks.is_empty() {
            outputs.retain(|output| !self.stored_before_restart(output));
        }
        self.queue_delivery(input_seq, outputs);
    }

    /// Puts `outputs` in the delivery queue as input `input_seq`'s, the next in input order.
    pub(super) fn queue_delivery(&mut self, input_seq: u64, outputs: Vec<Output>) {
        self.queued_through = input_seq;
        self.deliveries.push_back(Delivery { input_seq, outputs });
    }
}

impl Delivery {
    /// Hands each output to its session, which stores it under its next MsgSeqNum and sends it
    /// when logged on: the driver's half of the outbox. The session locks once per output, as
    /// the session's own reader does; an output for an unknown session, or one its store
    /// cannot take, is logged and skipped, as a retry could not make it fit.
    pub fn apply<S: SessionStore + Send + 'static>(&self, now: Timestamp, sessions: &Sessions<S>) {
        for output in &self.outputs {
            let delivered = sessions.with(output.session, |session| {
                session.send_app(now, translate::output_msg_type(output), |e| {
                    translate::write_output(e, output)
                })
            });
            match delivered {
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::error!(
                    %error,
                    input_seq = self.input_seq,
                    "cannot store an output in its session"
                ),
                None => tracing::error!(
                    session = output.session,
                    input_seq = self.input_seq,
                    "output for an unknown session"
                ),
            }
        }
    }
}

/// The symbol input `seq` is about: remembered, or read from its execution reports.
pub(super) fn output_symbol(
    recent: &VecDeque<(u64, Timestamp, Symbol)>,
    seq: u64,
    outputs: &[Output],
) -> Option<Symbol> {
    recent_input(recent, seq)
        .map(|(_, symbol)| symbol)
        .or_else(|| {
            outputs.iter().find_map(|output| match &output.report {
                Report::Execution(report) => Some(report.symbol),
                Report::CancelReject(_) => None,
            })
        })
}

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    /// Whether `output` reached its session before a restart although the cursor does not say
    /// so: the previous gateway died after storing it and before its cursor write landed. Each
    /// session receives outputs in (input seq, index) order, so everything up to the newest
    /// ExecID its store holds is there; the store is written with the delivery itself, so this
    /// mark cannot lag the way the cursor can.
    fn stored_before_restart(&mut self, output: &Output) -> bool {
        if self.stored_marks.is_empty() {
            return false;
        }
        let key = (output.input_seq, output.index);
        let stored = self
            .stored_marks
            .get(&output.session)
            .is_some_and(|mark| key <= *mark);
        if stored {
            tracing::info!(
                session = output.session,
                input_seq = output.input_seq,
                index = output.index,
                "output already in its session before the restart; not delivered again"
            );
        }
        // Past every mark, nothing more can be ambiguous.
        if self
            .stored_marks
            .values()
            .all(|mark| mark.0 < output.input_seq)
        {
            self.stored_marks.clear();
        }
        stored
    }
}

/// For each session, the (input seq, index) of the newest execution report its store holds, if
/// it is past `delivered_through`: outputs up to it were stored by a gateway that died before
/// its cursor recorded them. Only the newest few messages of each store are read
/// ([`constants::OUTBOX_RECOVERY_SCAN_MAX`]): a gateway dies inside one input's delivery.
pub(super) fn stored_marks<S: SessionStore + Send + 'static>(
    sessions: &Sessions<S>,
    delivered_through: u64,
) -> BTreeMap<crate::engine::SessionId, (u64, u32)> {
    let mut marks = BTreeMap::new();
    for id in 0..sessions.len() as crate::engine::SessionId {
        let mark = sessions.with(id, |session| {
            let store = session.store();
            let newest = store.seq_num_next_out().saturating_sub(1);
            let oldest = newest
                .saturating_sub(constants::OUTBOX_RECOVERY_SCAN_MAX)
                .max(1);
            (oldest..=newest).rev().find_map(|seq| {
                let message = crate::fix::codec::Message::parse(store.sent(seq)?).ok()?;
                if message.msg_type() != crate::fix::tags::msg_type::EXECUTION_REPORT {
                    return None;
                }
                translate::exec_id_key(message.get(translate::tag::EXEC_ID)?)
            })
        });
        if let Some(Some(mark)) = mark
            && mark.0 > delivered_through
        {
            tracing::warn!(
                session = id,
                input_seq = mark.0,
                index = mark.1,
                delivered_through,
                "outputs stored after the last cursor write: they are not delivered again"
            );
            marks.insert(id, mark);
        }
    }
    marks
}
