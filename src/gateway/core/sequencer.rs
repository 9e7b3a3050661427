//! The sequencer: every business request gets the next input seq and a stamp that never goes
//! backwards, and is journaled before any engine sees it (invariant 2); then it is fanned out
//! to every engine that is caught up, and engines behind the journal are fed from it.

use super::*;

impl Connection {
    /// How many journal inputs a catch-up sends it now, the journal ending at `last`: none
    /// while it restores, is up to date, or has too little room for a worthwhile batch with
    /// earlier ones unanswered (see [`constants::CATCH_UP_BATCH_MIN`]).
    fn catch_up_count(&self, last: u64) -> u64 {
        if self.restoring || self.sent_through >= last {
            return 0;
        }
        let behind = last - self.sent_through;
        let in_flight = self.in_flight();
        let window = (constants::CATCH_UP_INPUTS_IN_FLIGHT_MAX as u64).saturating_sub(in_flight);
        let count = window
            .min(constants::SEQUENCER_BATCH_MAX as u64)
            .min(behind);
        if in_flight > 0 && count < behind.min(constants::CATCH_UP_BATCH_MIN as u64) {
            return 0;
        }
        count
    }
}

impl<S, J> Core<S, J>
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
    J::Reader: Send + 'static,
{
    /// Whether some session store is short of the room it keeps ahead of need (its disk is
    /// full). While one is, every store is asked to grow again once per
    /// [`constants::DISK_FULL_RETRY_MS`], so business resumes by itself when space returns, even
    /// if the short session is idle.
    pub(super) fn stores_short_of_space(&mut self) -> bool {
        if crate::mmap::files_short_of_space() > 0 {
            let now = self.now;
            match self.stores_retry_at {
                // Just found short: the store itself tried a moment ago.
                None => {
                    crate::gateway::disk::set_full(crate::mmap::free_bytes(
                        &self.config.journal_dir,
                    ));
                }
                Some(at) if at <= now => {
                    for id in 0..self.sessions.len() {
                        let _ = self
                            .sessions
                            .with(id as crate::engine::SessionId, |session| {
                                session.store_mut().keep_headroom()
                            });
                    }
                }
                Some(_) => {}
            }
            if crate::mmap::files_short_of_space() > 0 {
                if self.stores_retry_at.is_none_or(|at| at <= now) {
                    self.stores_retry_at =
                        Some(now.plus(Duration::from_millis(constants::DISK_FULL_RETRY_MS)));
                }
                return true;
            }
        }
        if self.stores_retry_at.take().is_some() && self.disk_full_retry_at.is_none() {
            crate::gateway::disk::set_space_returned();
            tracing::info!(
                "disk space returned: session stores have room again and new business is accepted"
            );
        }
        false
    }

    /// The journal could not get disk space for the next input: refuse new business (sessions
    /// stay up; nothing journaled is touched) and try the allocation again after
    /// [`constants::DISK_FULL_RETRY_MS`]. The ERROR names the file and the free space once per
    /// episode, so a full disk is one clear line, not one per order. Returns the error's text.
    pub(super) fn disk_full(&mut self, error: &JournalError) -> String {
        let path = error.path().unwrap_or_default();
        let free_bytes = crate::mmap::free_bytes(&self.config.journal_dir);
        if self.disk_full_retry_at.is_none() {
            tracing::error!(
                path,
                free_bytes = free_bytes.map_or_else(|| "unknown".to_string(), |b| b.to_string()),
                %error,
                "disk full: the input journal cannot grow; new business is refused (380=4) until space returns"
            );
        }
        crate::gateway::disk::set_full(free_bytes);
        self.disk_full_retry_at = Some(
            self.now
                .plus(Duration::from_millis(constants::DISK_FULL_RETRY_MS)),
        );
        error.to_string()
    }

    /// Whether the authoritative engine can take more inputs now. A standby never holds the
    /// venue back: when its window is full it falls behind and catches up from the journal.
    pub(super) fn room_for_inputs(&self) -> bool {
        let room = |index: Option<usize>| {
            index
                .and_then(|index| self.engines[index].connection.as_ref())
                .is_none_or(|c| c.in_flight() < constants::LINK_INPUTS_IN_FLIGHT_MAX as u64)
        };
        // During a canary both engines own inputs, and both windows gate delivery.
        room(self.authority) && room(self.canary.as_ref().map(|c| c.slot))
    }

    pub(super) fn any_catching_up(&self) -> bool {
        let last = self.journal.last_seq();
        self.engines
            .iter()
            .filter_map(|slot| slot.connection.as_ref())
            .any(|c| c.catch_up_count(last) > 0)
    }

    /// Refuses a request before it is sequenced with a BusinessMessageReject (380=4) saying why.
    pub(super) fn refuse(&self, request: &Inbound, text: &str) {
        self.sessions.business_reject_at(
            self.now,
            request.session,
            &request.message,
            BusinessRejectReason::ApplicationNotAvailable,
            text,
        );
    }

    /// Stamps, journals and fans out a batch of requests; one journal flush and one link write
    /// per engine per batch.
    pub(super) fn sequence(&mut self, batch: &mut Vec<Inbound>) {
        if self.authority.is_none() {
            for request in batch.drain(..) {
                self.refuse(&request, "application not available");
            }
            return;
        }
        let stores_short = self.stores_short_of_space();
        let first_seq = self.journal.last_seq() + 1 + self.unjournaled.len() as u64;
        let mut inputs = self.spare_batch();
        inputs.clear();
        inputs.reserve(batch.len());
        for request in batch.drain(..) {
            // A session store short of room keeps what it has for the answers owed to inputs
            // already journaled; a journal that could not grow is tried again only after the
            // back-off, not on every message.
            if stores_short
                || self
                    .disk_full_retry_at
                    .is_some_and(|retry_at| self.now < retry_at)
            {
                self.refuse(&request, DISK_FULL_TEXT);
                continue;
            }
            if !self.halted.is_empty()
                && let Some(symbol) = input_symbol(&request.request)
                && self.halted.contains(symbol)
            {
                // Not sequenced: the book it would reach is not the one counterparties know.
                let text = format!(
                    "{} is halted for reconciliation after a release; try again later",
                    symbol.as_str()
                );
                self.sessions.business_reject_at(
                    self.now,
                    request.session,
                    &request.message,
                    BusinessRejectReason::Other,
                    &text,
                );
                continue;
            }
            let seq = self.journal.last_seq() + 1 + self.unjournaled.len() as u64;
            let time = self.now.max(self.last_time);
            let input = Input {
                seq,
                time,
                session: request.session,
                request: request.request,
            };
            self.payload.clear();
            let fix_seq = request.message.uint(crate::fix::tags::MSG_SEQ_NUM).ok();
            let origin = fix_seq.map(|msg_seq_num| JournalOrigin {
                msg_seq_num,
                sequence_epoch: request.sequence_epoch,
            });
            let encoded = input.encode_journaled(origin, &mut self.payload);
            let deferred = self.planted == Some(PlantedBug::DeliverBeforeJournal);
            if deferred {
                self.unjournaled.push((seq, time, self.payload.clone()));
            }
            let appended = encoded.map_err(|error| error.to_string()).and_then(|_| {
                if deferred {
                    return Ok(());
                }
                match self.journal.append(seq, time, &self.payload) {
                    Ok(()) => Ok(()),
                    Err(error) if error.is_no_space() => Err(self.disk_full(&error)),
                    Err(error) => Err(error.to_string()),
                }
            });
            match appended {
                Ok(()) => {
                    if self.disk_full_retry_at.take().is_some() {
                        crate::gateway::disk::set_space_returned();
                        tracing::info!(
                            "disk space returned: the input journal grows again and new business is accepted"
                        );
                    }
                }
                Err(error) => {
                    // Not journaled means not sequenced: the request is refused, never half-done.
                    let text = if self.disk_full_retry_at.is_some() {
                        DISK_FULL_TEXT
                    } else {
                        tracing::error!(%error, seq, "journal append failed");
                        "application not available"
                    };
                    self.sessions.business_reject_at(
                        self.now,
                        request.session,
                        &request.message,
                        BusinessRejectReason::ApplicationNotAvailable,
                        text,
                    );
                    continue;
                }
            }
            self.last_time = time;
            // Journaled: the session may now persist that it received this message.
            if let Some(fix_seq) = fix_seq {
                self.sessions
                    .confirm_and_recycle(request.session, fix_seq, request.message);
            }
            // A session's request always names one symbol (a transfer is the core's own input).
            if let Some(symbol) = input_symbol(&input.request).copied() {
                if self.recent.len() == constants::RECENT_INPUTS_MAX {
                    self.recent.pop_front();
                }
                self.recent.push_back((seq, time, symbol));
                if let Some(canary) = self.canary.as_mut()
                    && canary.covers(&symbol)
                {
                    canary.owned_inputs += 1;
                    self.canary_owned.insert(seq);
                    if canary.expects_divergence(&symbol, &input.request) {
                        canary.expected_seqs.insert(seq);
                    }
                }
            }
            inputs.push(input);
        }
        if let Err(error) = self.journal.flush() {
            tracing::error!(%error, "journal flush failed");
        }
        let Some(last) = inputs.last().map(|input| input.seq) else {
            self.recycle_inputs(inputs);
            return;
        };
        if let Some((started, mut report)) = self.switch_started.take() {
            report.pause_us = self.now.since(started).as_micros() as u64;
            tracing::info!(from = %report.from, to = %report.to, pause_us = report.pause_us, "first input after the switch");
            self.last_switch = Some(report);
        }
        let live = |core: &Self, index: usize| {
            core.engines[index].connection.as_ref().is_some_and(|c| {
                !c.restoring
                    && c.catch_up.is_none()
                    && c.sent_through + 1 == first_seq
                    && c.in_flight() < constants::LINK_INPUTS_IN_FLIGHT_MAX as u64
            })
        };
        // A standby nothing waits on keeps its copy for a later batch (see `standby`); of the
        // engines written to now, each but the last gets a copy and the last the batch itself.
        for index in 0..self.engines.len() {
            if live(self, index) && self.defers(index, inputs.len()) {
                self.defer(index, &inputs, last);
            }
        }
        // A kept batch moved its engine's `sent_through` on: it is no longer live for this one.
        let Some(last_written) = (0..self.engines.len()).rev().find(|&i| live(self, i)) else {
            self.recycle_inputs(inputs);
            return;
        };
        for index in 0..last_written {
            if live(self, index) {
                let mut copy = self.spare_batch();
                copy.clone_from(&inputs);
                self.send_to(index, copy, last);
            }
        }
        self.send_to(last_written, inputs, last);
    }

    /// A batch vector to build the next inputs in: a recycled one, or a new one already at the
    /// largest batch's size, so that filling it never regrows it and
    /// [`Core::recycle_inputs`] keeps it. One that started small and grew with the batches
    /// would, by doubling, end up larger than a batch can be and be freed instead of kept,
    /// and a new one allocated in its place, again and again under load (invariant 11).
    pub(super) fn spare_batch(&mut self) -> Vec<Input> {
        self.spare_inputs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(constants::SEQUENCER_BATCH_MAX))
    }

    /// Queues `inputs` (ending at `last`) for engine `index`; a failed write comes back as
    /// [`Core::handle_lost`].
    pub(super) fn send_to(&mut self, index: usize, inputs: Vec<Input>, last: u64) {
        let Some(connection) = self.engines[index].connection.as_mut() else {
            return;
        };
        connection.sent_through = last;
        self.transmit(index, LinkCommand::Inputs(inputs));
    }

    /// Sends the next journal entries to every engine behind the journal (after an attach, a
    /// restore or a reconnect), one batch each, within its in-flight window.
    pub(super) fn catch_up(&mut self) {
        let last = self.journal.last_seq();
        for index in 0..self.engines.len() {
            let Some(connection) = self.engines[index].connection.as_mut() else {
                continue;
            };
            if connection.restoring || connection.sent_through >= last {
                connection.catch_up = None;
                continue;
            }
            let count = connection.catch_up_count(last);
            if count == 0 {
                continue;
            }
            let mut inputs = self.spare_batch();
            let connection = self.engines[index]
                .connection
                .as_mut()
                .expect("checked above; taking a spare batch changes no engine");
            let from = connection.sent_through + 1;
            if connection.catch_up.is_none() {
                match self.journal.read_from(from) {
                    Ok(reader) => connection.catch_up = Some(Box::new(reader)),
                    Err(error) => {
                        tracing::error!(engine = %connection.name, %error, from, "cannot read the journal to catch up");
                        self.lose(index);
                        continue;
                    }
                }
            }
            let mut failure = None;
            if let Some(reader) = connection.catch_up.as_mut() {
                for _ in 0..count {
                    let journal = &self.journal;
                    match read_input(reader.as_mut()).and_then(|read| {
                        read.map(|input| with_blob(input, |sha256| journal.load_blob(sha256)))
                            .transpose()
                    }) {
                        Ok(Some(input)) => inputs.push(input),
                        Ok(None) => break,
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
            }
            if let Some(error) = failure {
                tracing::error!(engine = %connection.name, %error, "journal replay failed");
                self.lose(index);
                continue;
            }
            if let Some(first) = inputs.first()
                && first.seq != from
            {
                tracing::error!(engine = %connection.name, expected = from, got = first.seq, "journal replay out of step");
                self.lose(index);
                continue;
            }
            if let Some(last_sent) = inputs.last().map(|input| input.seq) {
                if last_sent >= last {
                    connection.catch_up = None;
                }
                self.send_to(index, inputs, last_sent);
            }
        }
    }
}

/// Text of the BusinessMessageReject (380=4) for a message refused because the gateway's disk
/// is full: the cause, for the counterparty's support desk, without naming any path.
const DISK_FULL_TEXT: &str = "gateway disk full: new business refused until space returns";

/// The symbol an input is about: authority is decided per symbol. A state transfer is about
/// several (its first stands for them in the recent-inputs ring); it is the gateway's own input
/// and always belongs to the authoritative engine.
pub(super) fn input_symbol(request: &Request) -> Option<&Symbol> {
    match request {
        Request::New(order) => Some(&order.symbol),
        Request::Cancel(cancel) => Some(&cancel.symbol),
        Request::Replace(replace) => Some(&replace.symbol),
        Request::Transfer(transfer) => transfer.symbols.first(),
    }
}

/// Fills in a journaled state transfer's snapshot from the blob its record names (the record
/// holds only the hash); any other input is returned as it is. Every reader of the journal that
/// feeds an engine calls it: catch-up, `baton journal replay`, the simulation's replay check.
pub fn with_blob(
    mut input: Input,
    load: impl FnOnce(&[u8; 32]) -> Result<Vec<u8>, JournalError>,
) -> Result<Input, CoreError> {
    if let Request::Transfer(transfer) = &mut input.request
        && transfer.snapshot.is_empty()
    {
        transfer.snapshot = load(&transfer.snapshot_sha256).map_err(|error| CoreError::Record {
            seq: input.seq,
            reason: format!("the state transfer's snapshot: {error}"),
        })?;
    }
    Ok(input)
}

/// Moves each session's expected inbound MsgSeqNum past the newest of its messages the journal
/// holds, when the session store still expects that message: the gateway died after journaling
/// it and before recording its receipt. Without this the restarted session would ask for the
/// message again and its PossDup copy would be sequenced a second time. A journaled number from
/// before the store's last reset (another sequence epoch) is not this session's any more and is
/// left alone. Reads only the journal's newest [`constants::INBOUND_RECOVERY_INPUTS_MAX`] inputs.
pub(super) fn recover_inbound_sequence<S, J>(sessions: &Sessions<S>, journal: &J)
where
    S: SessionStore + Send + 'static,
    J: InputJournal,
{
    let last = journal.last_seq();
    if last == 0 {
        return;
    }
    let from = last.saturating_sub(constants::INBOUND_RECOVERY_INPUTS_MAX) + 1;
    let mut reader = match journal.read_from(from) {
        Ok(reader) => reader,
        Err(error) => {
            tracing::warn!(%error, from, "cannot read the journal's newest inputs to recover inbound sequence numbers");
            return;
        }
    };
    let mut newest: BTreeMap<crate::engine::SessionId, JournalOrigin> = BTreeMap::new();
    loop {
        match reader.next_entry() {
            Ok(Some(entry)) => {
                if let Ok((input, Some(origin))) =
                    Input::decode_journaled_with_origin(&entry.payload)
                {
                    newest.insert(input.session, origin);
                }
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "journal read failed while recovering inbound sequence numbers");
                break;
            }
        }
    }
    for (id, origin) in newest {
        sessions.with(id, |session| {
            let expected = session.seq_num_next_in();
            if session.store().sequence_epoch() == origin.sequence_epoch
                && expected <= origin.msg_seq_num
            {
                tracing::info!(
                    session = %session.config().target_comp_id,
                    expected,
                    journaled = origin.msg_seq_num,
                    "inbound sequence recovered from the journal: the message was journaled before the restart and is not taken again"
                );
                session.recover_journaled_in(origin.msg_seq_num);
            }
        });
    }
}

/// The next journal entry as an input.
pub(super) fn read_input(reader: &mut dyn JournalRead) -> Result<Option<Input>, CoreError> {
    let Some(entry) = reader.next_entry()? else {
        return Ok(None);
    };
    let input = Input::decode_journaled(&entry.payload).map_err(|error| CoreError::Record {
        seq: entry.seq,
        reason: error.to_string(),
    })?;
    if input.seq != entry.seq {
        return Err(CoreError::Record {
            seq: entry.seq,
            reason: format!("payload says input {}", input.seq),
        });
    }
    Ok(Some(input))
}

/// Feeds every input in the journal at `dir` to `engine`, which must be fresh: the state every
/// engine of the venue must be in (invariant 2). Returns how many inputs were applied. Used by
/// `baton journal replay` and the demo's final check.
pub fn replay_journal(
    dir: &std::path::Path,
    engine: &mut impl crate::engine::Engine,
) -> Result<u64, CoreError> {
    let mut reader = Journal::read_from(dir, 1)?;
    let mut outputs: Vec<Output> = Vec::new();
    let mut count = 0;
    while let Some(input) = read_input(&mut reader)? {
        let input = with_blob(input, |sha256| {
            super::super::journal::load_blob(dir, sha256)
        })?;
        if input.seq != engine.last_input_seq() + 1 {
            return Err(CoreError::Record {
                seq: input.seq,
                reason: format!(
                    "follows input {}: the journal does not start at 1 or has a gap",
                    engine.last_input_seq()
                ),
            });
        }
        outputs.clear();
        engine.apply(&input, &mut outputs);
        count += 1;
    }
    Ok(count)
}

/// The ring of recent inputs' stamps, its whole capacity written once: filling it the first time
/// would otherwise take a page fault every ~100 inputs on the order path until it holds
/// [`constants::RECENT_INPUTS_MAX`] (tens of seconds of load after every start).
pub(super) fn recent_inputs_touched() -> VecDeque<(u64, Timestamp, Symbol)> {
    let mut recent = VecDeque::with_capacity(constants::RECENT_INPUTS_MAX);
    if let Some(symbol) = Symbol::try_from_bytes(b"-") {
        recent.resize(constants::RECENT_INPUTS_MAX, (0, Timestamp(0), symbol));
        recent.clear();
    }
    recent
}
