//! The input journal as the sequencer sees it: append in seq order, flush once per batch, read
//! from a seq on.
//!
//! Production uses the memory-mapped [`Journal`]; the seeded simulation uses
//! [`MemoryJournal`](super::memory_journal::MemoryJournal), which can lose or tear its last
//! write when the simulated gateway crashes. The core is written against this trait alone, so
//! both run the very same sequencing and catch-up code.

use super::journal::{Journal, JournalEntry, JournalError, JournalReader};
use crate::time::Timestamp;

/// Where inputs are made durable before any engine sees them (invariant 2).
pub trait InputJournal {
    /// Reads entries from some seq on, seeing entries appended after it was made.
    type Reader: JournalRead;

    /// Seq of the last record, 0 when empty: the next append must carry one more.
    fn last_seq(&self) -> u64;

    /// Seq of the first record it holds, 0 when empty: a replay can start no earlier, and only
    /// a journal whose first record is input 1 can rebuild an engine from nothing.
    fn first_seq(&self) -> u64;

    /// Time of the last record (zero when empty): stamps never go below it, also across a
    /// restart on a clock that is behind.
    fn last_time(&self) -> Timestamp;

    /// Appends the record for input `seq`, which must be `last_seq() + 1` (any seq from 1 on
    /// when empty), at a `time` no earlier than the last record's.
    fn append(&mut self, seq: u64, time: Timestamp, payload: &[u8]) -> Result<(), JournalError>;

    /// Makes the appends so far as durable as the journal's mode promises.
    fn flush(&mut self) -> Result<(), JournalError>;

    /// A reader from input seq `from_seq` on (inclusive).
    fn read_from(&self, from_seq: u64) -> Result<Self::Reader, JournalError>;

    /// Keeps `bytes` under their SHA-256 `sha256` beside the records, durably, before a record
    /// naming them is appended: a state transfer's snapshot can be larger than a record may be.
    fn store_blob(&mut self, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), JournalError>;

    /// The bytes stored under `sha256`.
    fn load_blob(&self, sha256: &[u8; 32]) -> Result<Vec<u8>, JournalError>;
}

/// A cursor over journal entries. Not an iterator: the end of data on a live journal is not
/// final, and an error must not read as an item.
pub trait JournalRead {
    /// The next entry, `Ok(None)` at the end of what is written now.
    fn next_entry(&mut self) -> Result<Option<JournalEntry>, JournalError>;
}

impl InputJournal for Journal {
    type Reader = JournalReader;

    fn last_seq(&self) -> u64 {
        Journal::last_seq(self)
    }

    fn first_seq(&self) -> u64 {
        Journal::first_seq(self)
    }

    fn last_time(&self) -> Timestamp {
        Journal::last_time(self)
    }

    fn append(&mut self, seq: u64, time: Timestamp, payload: &[u8]) -> Result<(), JournalError> {
        Journal::append(self, seq, time, payload)
    }

    fn flush(&mut self) -> Result<(), JournalError> {
        Journal::flush(self)
    }

    fn read_from(&self, from_seq: u64) -> Result<JournalReader, JournalError> {
        Journal::read_from(self.dir(), from_seq)
    }

    fn store_blob(&mut self, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), JournalError> {
        super::journal::store_blob(self.dir(), sha256, bytes)
    }

    fn load_blob(&self, sha256: &[u8; 32]) -> Result<Vec<u8>, JournalError> {
        super::journal::load_blob(self.dir(), sha256)
    }
}

impl JournalRead for JournalReader {
    fn next_entry(&mut self) -> Result<Option<JournalEntry>, JournalError> {
        self.next()
    }
}
