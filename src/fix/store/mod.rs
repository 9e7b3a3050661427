//! Where a session keeps its sequence numbers and every message it sent.
//!
//! A FIX session must answer a ResendRequest with what it sent before, possibly before a crash,
//! and must continue with the right sequence numbers after one. The session state machine talks
//! to storage only through [`SessionStore`], so tests run it on [`MemoryStore`] and the gateway on
//! [`MmapStore`], which keeps each session in two memory-mapped files: recording a sent message is
//! a memory copy, and how often that copy is forced to the device is the session's
//! [`Durability`].

use std::collections::BTreeMap;

mod mmap;
pub use mmap::{Durability, MmapStore, MmapStoreLimits};

/// Why a store operation failed. Disk errors are expected sometimes (full disk, permissions); a
/// session that cannot persist must stop sending rather than lose what it sent.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused an operation.
    #[error("session store {path}: {source}")]
    Io {
        /// The file the operation was on, so the operator knows which session is affected.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but is not a store this version can read (bad magic, unknown version).
    #[error("session store {path}: {reason}")]
    Corrupt {
        /// The file that could not be read.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A message was appended out of order; the store only ever grows by the next sequence number.
    #[error("append of MsgSeqNum {seq} but the next outbound sequence number is {expected}")]
    OutOfOrder {
        /// The sequence number the caller tried to append.
        seq: u64,
        /// The only sequence number the store would have accepted.
        expected: u64,
    },
    /// The store reached a configured bound (messages per session day or bytes).
    #[error("session store is full: {0}")]
    Full(String),
    /// Another open store holds the session's files: two gateways (or two sessions configured
    /// with the same CompIDs) would otherwise interleave writes into one message log.
    #[error("session store {path} is already open elsewhere (is a second gateway using it?)")]
    Locked {
        /// The file whose lock is held, so the operator can find the other process.
        path: String,
    },
}

/// Sequence numbers and sent messages of one session, persisted by the implementation.
///
/// Invariants every implementation keeps: sequence numbers start at 1; `append_sent(seq, ..)`
/// is accepted only for `seq == seq_num_next_out()` and moves it to `seq + 1`; `sent(seq)` returns
/// exactly the bytes appended under `seq` until the next `reset`.
pub trait SessionStore {
    /// MsgSeqNum the next message this side sends will carry.
    fn seq_num_next_out(&self) -> u64;
    /// MsgSeqNum expected on the next message from the counterparty.
    fn seq_num_next_in(&self) -> u64;
    /// Records that inbound messages up to `seq - 1` were processed.
    fn set_seq_num_next_in(&mut self, seq: u64) -> Result<(), StoreError>;
    /// Moves the outbound sequence number without storing messages, as a SequenceReset does; the
    /// skipped numbers are answered with a gap fill on resend. Moving it backwards drops the
    /// stored messages at or above `seq`, because those numbers will be sent again with new
    /// content; the messages below `seq` stay, since they are still what was sent under them.
    fn set_seq_num_next_out(&mut self, seq: u64) -> Result<(), StoreError>;
    /// Stores the wire bytes of a message sent with MsgSeqNum `seq` and moves the outbound
    /// sequence number past it.
    fn append_sent(&mut self, seq: u64, message: &[u8]) -> Result<(), StoreError>;
    /// The wire bytes sent with MsgSeqNum `seq`, if still stored.
    fn sent(&self, seq: u64) -> Option<&[u8]>;
    /// Start (Unix seconds) of the schedule window these sequence numbers belong to; 0 when none
    /// was recorded. A new window means a new session day and a reset.
    fn session_period(&self) -> u64;
    /// Starts a new session day: both sequence numbers back to 1, sent messages dropped.
    fn reset(&mut self, session_period: u64) -> Result<(), StoreError>;
    /// A number that changes at every [`SessionStore::reset`] (a new session day, or a Logon
    /// with ResetSeqNumFlag) and never otherwise. The input journal records it beside each
    /// message's MsgSeqNum, so a restarted gateway uses a journaled MsgSeqNum only if it
    /// belongs to the sequence numbers the store holds now, never to those before a reset.
    fn sequence_epoch(&self) -> u64;
    /// Applies the durability policy to what was written since the last call. The driver calls it
    /// once per batch of work, so a policy of "msync per batch" costs one syscall per batch.
    fn flush(&mut self) -> Result<(), StoreError>;
    /// Makes sure room for more messages is already on the disk, growing ahead of need, so that
    /// the answers to inputs already journaled can always be stored (and so sent) even when the
    /// disk fills: the gateway stops taking new business while this fails, and calls it again
    /// after a back-off to find out when space has returned. Stores without a disk have nothing
    /// to do.
    fn keep_headroom(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store that lives only in memory, for tests on virtual time and for sessions that opt out of
/// persistence.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    /// See [`SessionStore::seq_num_next_out`].
    seq_num_next_out: u64,
    /// See [`SessionStore::seq_num_next_in`].
    seq_num_next_in: u64,
    /// See [`SessionStore::session_period`].
    session_period: u64,
    /// See [`SessionStore::sequence_epoch`]: how many resets this store has seen.
    sequence_epoch: u64,
    /// Sent messages by MsgSeqNum, all below `seq_num_next_out`; numbers skipped with
    /// `set_seq_num_next_out` have no entry. A map rather than a vector indexed by number, so a
    /// large skip costs nothing.
    messages: BTreeMap<u64, Vec<u8>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            seq_num_next_out: 1,
            seq_num_next_in: 1,
            session_period: 0,
            sequence_epoch: 0,
            messages: BTreeMap::new(),
        }
    }
}

impl MemoryStore {
    /// An empty store at sequence numbers 1/1.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl SessionStore for MemoryStore {
    fn seq_num_next_out(&self) -> u64 {
        self.seq_num_next_out
    }

    fn seq_num_next_in(&self) -> u64 {
        self.seq_num_next_in
    }

    fn set_seq_num_next_in(&mut self, seq: u64) -> Result<(), StoreError> {
        self.seq_num_next_in = seq;
        Ok(())
    }

    fn set_seq_num_next_out(&mut self, seq: u64) -> Result<(), StoreError> {
        // Drops the messages at or above `seq`; nothing is there when moving forward.
        self.messages.split_off(&seq);
        self.seq_num_next_out = seq;
        Ok(())
    }

    fn append_sent(&mut self, seq: u64, message: &[u8]) -> Result<(), StoreError> {
        if seq != self.seq_num_next_out {
            return Err(StoreError::OutOfOrder {
                seq,
                expected: self.seq_num_next_out,
            });
        }
        let Some(seq_num_next_out) = seq.checked_add(1) else {
            return Err(StoreError::Full(format!(
                "MsgSeqNum {seq} is the last representable"
            )));
        };
        self.messages.insert(seq, message.to_vec());
        self.seq_num_next_out = seq_num_next_out;
        Ok(())
    }

    fn sent(&self, seq: u64) -> Option<&[u8]> {
        self.messages.get(&seq).map(Vec::as_slice)
    }

    fn session_period(&self) -> u64 {
        self.session_period
    }

    fn reset(&mut self, session_period: u64) -> Result<(), StoreError> {
        *self = MemoryStore {
            session_period,
            sequence_epoch: self.sequence_epoch + 1,
            ..MemoryStore::default()
        };
        Ok(())
    }

    fn sequence_epoch(&self) -> u64 {
        self.sequence_epoch
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_keeps_messages_by_sequence_number() {
        let mut store = MemoryStore::new();
        store.append_sent(1, b"one").unwrap();
        store.append_sent(2, b"two").unwrap();
        assert!(matches!(
            store.append_sent(5, b"five"),
            Err(StoreError::OutOfOrder {
                seq: 5,
                expected: 3
            })
        ));
        store.set_seq_num_next_out(5).unwrap();
        store.append_sent(5, b"five").unwrap();
        assert_eq!(store.sent(1), Some(&b"one"[..]));
        assert_eq!(store.sent(3), None);
        assert_eq!(store.sent(5), Some(&b"five"[..]));
        assert_eq!(store.seq_num_next_out(), 6);
        store.set_seq_num_next_out(2).unwrap();
        assert_eq!(store.sent(1), Some(&b"one"[..]));
        assert_eq!(store.sent(2), None);
        assert_eq!(store.sent(5), None);
        store.append_sent(2, b"two again").unwrap();
        assert_eq!(store.sent(2), Some(&b"two again"[..]));
        store.reset(42).unwrap();
        assert_eq!((store.seq_num_next_out(), store.seq_num_next_in()), (1, 1));
        assert_eq!(store.session_period(), 42);
        assert_eq!(store.sent(1), None);
    }
}
