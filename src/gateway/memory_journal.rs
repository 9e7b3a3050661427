//! An input journal in memory, for the seeded simulation: the same contract as the
//! memory-mapped journal, plus a simulated crash that may lose or tear the last write.
//!
//! A torn record is cut when the memory-mapped journal reopens, so for whoever reads the journal
//! after a crash a torn last write and a lost one look the same: the record is gone. What
//! matters is that nothing before it is touched, and that the sequencer only told a session it
//! received the message after the append returned; [`MemoryJournal::crash`] models exactly that.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::input_journal::{InputJournal, JournalRead};
use super::journal::{JournalEntry, JournalError};
use crate::time::Timestamp;

/// What a simulated crash does to the last write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashFate {
    /// Everything appended survives (a kill after the page cache took the write).
    KeepAll,
    /// The last record is gone (a kill in the middle of the copy; its torn bytes are cut).
    LoseLast,
}

/// Entries shared between the journal and its readers, so a reader sees later appends like a
/// reader of the memory-mapped files does.
type Entries = Arc<Mutex<Vec<JournalEntry>>>;

/// A journal held in memory. Clones share the entries: the simulator keeps one to "reopen"
/// after a crash, as a restarted gateway reopens its directory.
#[derive(Clone, Debug, Default)]
pub struct MemoryJournal {
    /// Every record, in seq order, gap-free.
    entries: Entries,
    /// Blobs by SHA-256; stored before the record naming them, so a crash never loses one a
    /// surviving record names.
    blobs: Arc<Mutex<std::collections::BTreeMap<[u8; 32], Vec<u8>>>>,
}

fn lock(entries: &Entries) -> MutexGuard<'_, Vec<JournalEntry>> {
    // The simulation runs on one thread; a poisoned lock means a test already panicked, and
    // the entries it left are still a valid journal.
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> MemoryJournal {
        MemoryJournal::default()
    }

    /// The simulated gateway died: `fate` decides whether its last write survives. Returns the
    /// journal a restarted gateway opens.
    pub fn crash(&self, fate: CrashFate) -> MemoryJournal {
        let mut entries = lock(&self.entries).clone();
        if fate == CrashFate::LoseLast {
            entries.pop();
        }
        MemoryJournal {
            entries: Arc::new(Mutex::new(entries)),
            blobs: self.blobs.clone(),
        }
    }

    /// Every entry, for the simulator's replay check.
    pub fn entries(&self) -> Vec<JournalEntry> {
        lock(&self.entries).clone()
    }
}

impl InputJournal for MemoryJournal {
    type Reader = MemoryReader;

    fn last_seq(&self) -> u64 {
        lock(&self.entries).last().map_or(0, |entry| entry.seq)
    }

    fn first_seq(&self) -> u64 {
        lock(&self.entries).first().map_or(0, |entry| entry.seq)
    }

    fn last_time(&self) -> Timestamp {
        lock(&self.entries)
            .last()
            .map_or(Timestamp::ZERO, |entry| entry.time)
    }

    fn append(&mut self, seq: u64, time: Timestamp, payload: &[u8]) -> Result<(), JournalError> {
        let mut entries = lock(&self.entries);
        if let Some(last) = entries.last() {
            let expected = last
                .seq
                .checked_add(1)
                .ok_or(JournalError::SeqExhausted { last_seq: last.seq })?;
            if seq != expected {
                return Err(JournalError::OutOfOrder { seq, expected });
            }
            if time < last.time {
                return Err(JournalError::TimeWentBack {
                    seq,
                    time,
                    last: last.time,
                });
            }
        } else if seq == 0 {
            return Err(JournalError::OutOfOrder { seq, expected: 1 });
        }
        entries.push(JournalEntry {
            seq,
            time,
            payload: payload.to_vec(),
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), JournalError> {
        Ok(())
    }

    fn read_from(&self, from_seq: u64) -> Result<MemoryReader, JournalError> {
        let first_seq = lock(&self.entries).first().map_or(0, |entry| entry.seq);
        if first_seq > 1 && from_seq < first_seq {
            return Err(JournalError::NotHeld {
                path: "(memory)".into(),
                from_seq,
                first_seq,
            });
        }
        Ok(MemoryReader {
            entries: Arc::clone(&self.entries),
            next_seq: from_seq.max(1),
        })
    }

    fn store_blob(&mut self, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), JournalError> {
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*sha256, bytes.to_vec());
        Ok(())
    }

    fn load_blob(&self, sha256: &[u8; 32]) -> Result<Vec<u8>, JournalError> {
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sha256)
            .cloned()
            .ok_or_else(|| JournalError::Corrupt {
                path: "(memory)".into(),
                offset: 0,
                reason: "a record names a blob that was never stored".into(),
            })
    }
}

/// Reads a [`MemoryJournal`] from a seq on.
#[derive(Debug)]
pub struct MemoryReader {
    /// The journal's entries.
    entries: Entries,
    /// Seq of the next entry to return.
    next_seq: u64,
}

impl JournalRead for MemoryReader {
    fn next_entry(&mut self) -> Result<Option<JournalEntry>, JournalError> {
        let entries = lock(&self.entries);
        let Some(first) = entries.first().map(|entry| entry.seq) else {
            return Ok(None);
        };
        let Some(index) = self.next_seq.checked_sub(first) else {
            return Ok(None);
        };
        let entry = usize::try_from(index)
            .ok()
            .and_then(|index| entries.get(index))
            .cloned();
        if entry.is_some() {
            self.next_seq += 1;
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_later_appends_and_a_crash_loses_only_the_last_write() {
        let mut journal = MemoryJournal::new();
        let mut reader = journal.read_from(1).unwrap();
        assert_eq!(reader.next_entry().unwrap(), None);
        journal.append(1, Timestamp(10), b"a").unwrap();
        journal.append(2, Timestamp(10), b"b").unwrap();
        assert_eq!(reader.next_entry().unwrap().map(|e| e.seq), Some(1));
        journal.append(3, Timestamp(11), b"c").unwrap();
        assert_eq!(reader.next_entry().unwrap().map(|e| e.seq), Some(2));
        assert_eq!(reader.next_entry().unwrap().map(|e| e.seq), Some(3));
        assert_eq!(reader.next_entry().unwrap(), None);
        assert!(matches!(
            journal.append(5, Timestamp(12), b"gap"),
            Err(JournalError::OutOfOrder { expected: 4, .. })
        ));
        assert!(matches!(
            journal.append(4, Timestamp(9), b"back"),
            Err(JournalError::TimeWentBack { .. })
        ));
        let kept = journal.crash(CrashFate::KeepAll);
        assert_eq!(kept.last_seq(), 3);
        let torn = journal.crash(CrashFate::LoseLast);
        assert_eq!(torn.last_seq(), 2);
        assert_eq!(torn.last_time(), Timestamp(10));
        // The crashed copy is independent of the journal it came from.
        assert_eq!(journal.last_seq(), 3);
    }
}
