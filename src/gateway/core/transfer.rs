//! A canary's end that moves the canary engine's state back: at the barrier the canary engine is
//! asked for its snapshot, which is sequenced as a state transfer input (journaled, the snapshot
//! beside the journal named by its hash) that every engine applies, so the engine taking the
//! canary's symbols back continues from the books the counterparties were told about instead of
//! halting them (see `engine::StateTransfer`). Where that cannot be done (an engine of an older
//! build, a canary engine that diverged outside its symbols, no snapshot in time) the end says
//! why and halts the diverged symbols as before; a canary engine that died gives nothing back.

use super::*;

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    /// At a canary's end whose barrier is reached, moves the canary engine's state for its
    /// symbols to every engine: asks the canary engine for its snapshot at the barrier, and once
    /// it is in, sequences the transfer as the next input (see [`Core::on_transfer_snapshot`]).
    /// Where that cannot be done, says why, and the end halts the diverged symbols as before.
    /// True once the switch may complete (its barrier then includes the transfer).
    pub(super) fn advance_transfer(&mut self) -> bool {
        let Some(pending) = self.pending_switch.as_ref() else {
            return true;
        };
        if pending.kind != SwitchKind::CanaryEnd {
            return true;
        }
        match pending.transfer {
            TransferStep::Undecided => {}
            TransferStep::Requested(asked) => {
                let waited = self.now.since(asked);
                if waited < Duration::from_millis(constants::TRANSFER_SNAPSHOT_TIMEOUT_MS) {
                    return false;
                }
                self.on_transfer_refused(format!(
                    "no snapshot within {} ms",
                    constants::TRANSFER_SNAPSHOT_TIMEOUT_MS
                ));
                return true;
            }
            TransferStep::Sequenced(_) | TransferStep::Refused(_) => return true,
        }
        let refusal = self.transfer_refusal();
        let canary_slot = self.canary.as_ref().map(|c| c.slot);
        let now = self.now;
        let Some(pending) = self.pending_switch.as_mut() else {
            return true;
        };
        match (refusal, canary_slot) {
            (None, Some(slot)) => {
                pending.transfer = TransferStep::Requested(now);
                tracing::info!(
                    barrier = pending.barrier,
                    "canary ending: asking the canary engine for its state"
                );
                self.transmit(slot, LinkCommand::RequestSnapshot);
                false
            }
            (refusal, _) => {
                let reason = refusal.unwrap_or_else(|| "no canary is running".into());
                tracing::warn!(%reason, "canary ending without moving its state back");
                pending.transfer = TransferStep::Refused(reason);
                true
            }
        }
    }

    /// Why the canary engine's state cannot be moved back now, if it cannot.
    pub(super) fn transfer_refusal(&self) -> Option<String> {
        let canary = self.canary.as_ref()?;
        let Some(owner) = self.engines[canary.slot].connection.as_ref() else {
            return Some("the canary engine is not attached".into());
        };
        if canary.delivery == CanaryDelivery::Verified && canary.expected_seqs.is_empty() {
            // Every answer delivered was the baseline's (or equal to it): the books the
            // counterparties were told about are the baseline's own, and the canary engine's,
            // which answered differently, must not replace them.
            return Some(
                "verified delivery: counterparties saw only answers equal to the baseline's, whose books stay"
                    .into(),
            );
        }
        if canary.owned_inputs == 0 {
            return Some(
                "the canary engine answered no input for its symbols: it has nothing to give back"
                    .into(),
            );
        }
        if let Some(old) = self
            .engines
            .iter()
            .filter_map(|slot| slot.connection.as_ref())
            .find(|c| c.protocol_version < link::LINK_PROTOCOL_VERSION)
        {
            return Some(format!(
                "engine {} speaks link protocol {} (an older build), which cannot take another engine's state",
                old.name, old.protocol_version
            ));
        }
        let outside: Vec<Symbol> = self
            .diverged
            .get(&owner.name)
            .map(|set| set.iter().filter(|s| !canary.covers(s)).copied().collect())
            .unwrap_or_default();
        if !outside.is_empty() {
            return Some(format!(
                "the canary engine answered differently on symbols it did not own ({}): its state is not what the counterparties were told there",
                names(&outside).join(", ")
            ));
        }
        None
    }

    /// Whether a snapshot (or a refusal) from engine `slot` answers a transfer's request.
    pub(super) fn transfer_asked_of(&self, slot: usize) -> bool {
        self.pending_switch.as_ref().is_some_and(|p| {
            matches!(p.transfer, TransferStep::Requested(_))
                && self.canary.as_ref().is_some_and(|c| c.slot == slot)
        })
    }

    /// The canary engine could not give its state: the canary ends as before transfers.
    pub(super) fn on_transfer_refused(&mut self, reason: String) {
        tracing::warn!(%reason, "the canary engine did not give its state; its diverged symbols will be halted");
        if let Some(pending) = self.pending_switch.as_mut() {
            pending.transfer = TransferStep::Refused(format!(
                "the canary engine did not give its state: {reason}"
            ));
        }
    }

    /// The canary engine's snapshot at the barrier arrived: cut from it what moves (the
    /// canary's books and the day section, see `engine::transfer_section`) and sequence that as
    /// the next input, journaled (as a blob beside the journal, the record naming it by hash)
    /// before any engine sees it, and sent to every engine; the switch then completes once every
    /// engine answered it.
    pub(super) fn on_transfer_snapshot(&mut self, at_input_seq: u64, snapshot: Vec<u8>) {
        use sha2::Digest as _;
        let Some(pending) = self.pending_switch.as_ref() else {
            return;
        };
        let TransferStep::Requested(asked) = pending.transfer else {
            return;
        };
        let barrier = pending.barrier;
        let symbols = self
            .canary
            .as_ref()
            .map(|c| c.symbols.clone())
            .unwrap_or_default();
        let sequenced = if at_input_seq != barrier {
            Err(format!(
                "its snapshot stands at input {at_input_seq}, not at the barrier {barrier}"
            ))
        } else if !self.unjournaled.is_empty() || self.journal.last_seq() != barrier {
            Err("inputs were sequenced past the barrier".into())
        } else {
            // Read and checked once, here; what is journaled and sent is only what moves.
            crate::engine::transfer_section(&snapshot, &symbols)
                .map_err(|error| format!("its snapshot does not read: {error}"))
                .and_then(|section| {
                    let sha256: [u8; 32] = sha2::Sha256::digest(&section.bytes).into();
                    self.sequence_transfer(&symbols, sha256, section.bytes)
                        .map(|seq| (seq, section.orders_moved))
                })
        };
        let pause_us = self.now.since(asked).as_micros() as u64;
        let Some(pending) = self.pending_switch.as_mut() else {
            return;
        };
        match sequenced {
            Ok((seq, orders_moved)) => {
                tracing::info!(seq, orders_moved, pause_us, symbols = ?names(&symbols), "state transfer sequenced");
                pending.barrier = seq;
                pending.transfer = TransferStep::Sequenced(TransferReport {
                    symbols: names(&symbols),
                    orders_moved,
                    transfer_seq: seq,
                    pause_us,
                    refused: None,
                });
            }
            Err(reason) => {
                tracing::warn!(%reason, "state transfer not sequenced; the canary's diverged symbols will be halted");
                pending.transfer = TransferStep::Refused(reason);
            }
        }
    }

    /// Journals the transfer of `snapshot` (a transfer section) for `symbols` as the next input and sends it to
    /// every engine that is caught up (the rest read it from the journal). Returns its seq.
    pub(super) fn sequence_transfer(
        &mut self,
        symbols: &[Symbol],
        sha256: [u8; 32],
        snapshot: Vec<u8>,
    ) -> Result<u64, String> {
        let seq = self.journal.last_seq() + 1;
        let time = self.now.max(self.last_time);
        let mut input = Input {
            seq,
            time,
            // The gateway's own input: it answers no session, and its outputs (none) go nowhere.
            session: 0,
            request: Request::Transfer(StateTransfer {
                symbols: symbols.to_vec(),
                snapshot_sha256: sha256,
                snapshot: Vec::new(),
            }),
        };
        self.journal
            .store_blob(&sha256, &snapshot)
            .map_err(|error| {
                format!("its snapshot could not be stored beside the journal: {error}")
            })?;
        self.payload.clear();
        // The gateway's own input: no session's MsgSeqNum goes with it.
        input
            .encode_journaled(None, &mut self.payload)
            .map_err(|error| error.to_string())?;
        self.journal
            .append(seq, time, &self.payload)
            .and_then(|()| self.journal.flush())
            .map_err(|error| format!("the transfer could not be journaled: {error}"))?;
        self.last_time = time;
        if let Some(first) = symbols.first() {
            if self.recent.len() == constants::RECENT_INPUTS_MAX {
                self.recent.pop_front();
            }
            self.recent.push_back((seq, time, *first));
        }
        if let Request::Transfer(transfer) = &mut input.request {
            transfer.snapshot = snapshot;
        }
        for index in 0..self.engines.len() {
            let live = self.engines[index]
                .connection
                .as_ref()
                .is_some_and(|c| !c.restoring && c.catch_up.is_none() && c.sent_through + 1 == seq);
            if live {
                self.send_to(index, vec![input.clone()], seq);
            }
        }
        Ok(seq)
    }

    /// Every engine took the canary engine's books for the canary's symbols with the transfer:
    /// none of them differs there from what the counterparties were told any more.
    pub(super) fn clear_transferred(&mut self) {
        let Some(canary) = self.canary.as_ref() else {
            return;
        };
        let symbols = canary.symbols.clone();
        let mut cleared = Vec::new();
        for (engine, set) in self.diverged.iter_mut() {
            let gone: Vec<Symbol> = symbols.iter().filter(|s| set.remove(s)).copied().collect();
            if !gone.is_empty() {
                cleared.push((engine.clone(), names(&gone)));
            }
        }
        self.diverged.retain(|_, set| !set.is_empty());
        for (engine, symbols) in cleared {
            self.emit(CoreEvent::Record(CoreRecord::DivergenceCleared {
                engine,
                symbols,
            }));
        }
    }
}
