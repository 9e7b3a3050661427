//! A standby's inputs in batches (`[gateway] standby_batch_us`).
//!
//! Every input goes to every engine, but only the owner's answers are on an order's path: the
//! standby's are compared in the shadow, and only a switch or a failover waits for them. Written
//! one batch per sequencer turn, a standby under moderate load is woken for nearly every order,
//! and each wake-up costs it and the gateway a write, a read and two context switches, CPU the
//! order path then lacks on a small host. So while nothing waits on a standby and the venue is
//! busy, its inputs are kept here and written when [`constants::STANDBY_BATCH_INPUTS_MAX`] have
//! gathered or the oldest has waited the configured time, whichever comes first.
//!
//! The engine sees the same input stream either way, only later. Anything the core sends on a
//! link goes out behind the inputs kept for it ([`Core::transmit`] writes them first): a catch-up
//! from the journal, a heartbeat naming the journal's last input, a snapshot request, a Close.
//! What waits on a standby has them written at once: a switch becoming pending (its barrier
//! needs the standby's answers) and any engine lost (the standby may be about to take
//! authority). Nothing is kept while a canary runs: in verified delivery its answers are held
//! for the other engine's.

use super::*;

/// Inputs sequenced for a standby and not yet written to it, oldest first.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    /// Contiguous, ending at the connection's `sent_through`.
    inputs: Vec<Input>,
    /// When the oldest of `inputs` was sequenced; `None` when there are none.
    since: Option<Timestamp>,
}

impl Deferred {
    /// How many inputs are kept.
    pub(super) fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Room for the largest batch, so gathering never allocates (invariant 11) and the vector,
    /// once written, is one the core keeps for reuse.
    pub(super) fn new() -> Deferred {
        Deferred {
            inputs: Vec::with_capacity(constants::SEQUENCER_BATCH_MAX),
            since: None,
        }
    }
}

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    /// Whether a batch of `count` live inputs for engine `index` is kept: batching is on, the
    /// engine owns no inputs, no switch or canary waits on its answers, the venue is busy (more
    /// than one input in the batch, the owner still working on earlier ones, or inputs already
    /// kept) and the batch is smaller than a kept one would be. An idle venue's standby is
    /// written at once: one order at a time gains nothing from a batch, and in alternating runs
    /// one order at a time answered 3-19% later at p50 with its standby's inputs kept.
    pub(super) fn defers(&self, index: usize, count: usize) -> bool {
        let Some(authority) = self.authority else {
            return false;
        };
        if self.config.standby_batch.is_zero()
            || authority == index
            || self.canary.is_some()
            || self.pending_switch.is_some()
        {
            return false;
        }
        let connection = |slot: usize| self.engines[slot].connection.as_ref();
        let kept = connection(index).is_some_and(|standby| !standby.deferred.inputs.is_empty());
        // A batch as large as a kept one would be is written as it is, without a copy to keep.
        let small = kept || count < constants::STANDBY_BATCH_INPUTS_MAX;
        let busy =
            count > 1 || kept || connection(authority).is_some_and(|owner| owner.in_flight() > 0);
        small && busy
    }

    /// Keeps `inputs` (ending at input `last`) for engine `index`, and writes what was kept once
    /// a batch is full. What was kept goes out first if `inputs` would not fit beside it, so a
    /// kept vector never outgrows the largest batch.
    pub(super) fn defer(&mut self, index: usize, inputs: &[Input], last: u64) {
        let kept = self.engines[index]
            .connection
            .as_ref()
            .map_or(0, |connection| connection.deferred.inputs.len());
        if kept + inputs.len() > constants::SEQUENCER_BATCH_MAX {
            self.flush_deferred(index);
        }
        let now = self.now;
        let Some(connection) = self.engines[index].connection.as_mut() else {
            return;
        };
        connection.sent_through = last;
        let deferred = &mut connection.deferred;
        deferred.inputs.extend_from_slice(inputs);
        deferred.since.get_or_insert(now);
        if deferred.inputs.len() >= constants::STANDBY_BATCH_INPUTS_MAX {
            self.flush_deferred(index);
        }
    }

    /// Writes what was kept for engine `index`, if anything. Every [`Core::transmit`] calls it
    /// first, so nothing sent on a link overtakes the inputs kept for it.
    pub(super) fn flush_deferred(&mut self, index: usize) {
        let kept = self.engines[index]
            .connection
            .as_ref()
            .is_some_and(|connection| !connection.deferred.inputs.is_empty());
        if !kept {
            return;
        }
        let mut batch = self.spare_batch();
        let connection = self.engines[index]
            .connection
            .as_mut()
            .expect("checked above; taking a spare batch changes no engine");
        std::mem::swap(&mut batch, &mut connection.deferred.inputs);
        connection.deferred.since = None;
        // Nothing is kept any more, so the flush `transmit` starts with finds nothing to write.
        self.transmit(index, LinkCommand::Inputs(batch));
    }

    /// Writes every engine's kept inputs whose oldest has waited the configured time.
    pub(super) fn flush_due_deferred(&mut self) {
        for index in 0..self.engines.len() {
            let due = self.engines[index]
                .connection
                .as_ref()
                .and_then(|connection| connection.deferred.since)
                .is_some_and(|since| self.now >= since.plus(self.config.standby_batch));
            if due {
                self.flush_deferred(index);
            }
        }
    }

    /// Writes every engine's kept inputs now: something is about to read the standbys' state.
    pub(super) fn flush_all_deferred(&mut self) {
        for index in 0..self.engines.len() {
            self.flush_deferred(index);
        }
    }

    /// When the oldest kept input is due to be written, if any is kept.
    pub(super) fn deferred_due_at(&self) -> Option<Timestamp> {
        self.engines
            .iter()
            .filter_map(|slot| slot.connection.as_ref()?.deferred.since)
            .min()
            .map(|since| since.plus(self.config.standby_batch))
    }
}
