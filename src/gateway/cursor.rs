//! The outbox cursor: the input sequence number through which every engine output has been
//! handed to its session.
//!
//! After a restart the journal is replayed into the engine and the outputs it produces again are
//! compared against this cursor: outputs of inputs at or below it were delivered before and are
//! dropped, the rest are delivered. That is what keeps delivery exactly-once across a gateway
//! crash (invariant 4). The value sits in two checksummed slots written alternately, so a torn
//! write leaves the previous value readable.

use std::path::Path;

use crate::mmap::{MapError, MappedFile};

/// Bytes per slot: generation, value, checksum (and padding to 8).
const SLOT_LEN: usize = 24;

/// Why the cursor cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// Mapping or flushing the file failed.
    #[error("outbox cursor: {0}")]
    Map(#[from] MapError),
    /// Both slots fail their checksum: the file is not a cursor (or both writes were torn, which
    /// alternating slots rule out).
    #[error("outbox cursor {0}: both slots are corrupt")]
    Corrupt(String),
}

/// The persisted cursor.
pub struct OutboxCursor {
    /// Two slots, [`SLOT_LEN`] bytes each.
    file: MappedFile,
    /// Generation of the slot holding the current value; the next write goes to the other one.
    generation: u64,
    /// Current value.
    value: u64,
}

fn slot_checksum(generation: u64, value: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(&value.to_le_bytes());
    hasher.finalize()
}

fn read_slot(bytes: &[u8]) -> Option<(u64, u64)> {
    let generation = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
    let value = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    (crc == slot_checksum(generation, value) && generation > 0).then_some((generation, value))
}

impl OutboxCursor {
    /// Opens (creating at 0) the cursor file at `path`.
    pub fn open(path: &Path) -> Result<OutboxCursor, CursorError> {
        let file = MappedFile::open(path, (2 * SLOT_LEN) as u64)?;
        let bytes = file.as_slice();
        let slots = [
            read_slot(&bytes[..SLOT_LEN]),
            read_slot(&bytes[SLOT_LEN..2 * SLOT_LEN]),
        ];
        let fresh = bytes[..2 * SLOT_LEN].iter().all(|&b| b == 0);
        let (generation, value) = match slots {
            [Some(a), Some(b)] => a.max(b),
            [Some(a), None] | [None, Some(a)] => a,
            [None, None] if fresh => (0, 0),
            [None, None] => return Err(CursorError::Corrupt(path.display().to_string())),
        };
        Ok(OutboxCursor {
            file,
            generation,
            value,
        })
    }

    /// The last input seq whose outputs were all delivered.
    pub fn get(&self) -> u64 {
        self.value
    }

    /// Records that every output of inputs up to `value` was delivered. A memory write; reaches
    /// the disk with the page cache (survives a process kill) or on [`OutboxCursor::flush`].
    pub fn set(&mut self, value: u64) {
        let generation = self.generation + 1;
        let slot = (generation % 2) as usize * SLOT_LEN;
        let bytes = &mut self.file.as_mut_slice()[slot..slot + SLOT_LEN];
        bytes[0..8].copy_from_slice(&generation.to_le_bytes());
        bytes[8..16].copy_from_slice(&value.to_le_bytes());
        bytes[16..20].copy_from_slice(&slot_checksum(generation, value).to_le_bytes());
        self.generation = generation;
        self.value = value;
    }

    /// Forces the cursor to the disk.
    pub fn flush(&self) -> Result<(), CursorError> {
        Ok(self.file.flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_survives_reopen_and_a_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        {
            let mut cursor = OutboxCursor::open(&path).unwrap();
            assert_eq!(cursor.get(), 0);
            cursor.set(41);
            cursor.set(42);
        }
        assert_eq!(OutboxCursor::open(&path).unwrap().get(), 42);
        // Tear the newest slot (generation 2 lives in slot 0): the previous value comes back.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(OutboxCursor::open(&path).unwrap().get(), 41);
        // Both torn: refused, never guessed.
        bytes[SLOT_LEN + 9] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            OutboxCursor::open(&path),
            Err(CursorError::Corrupt(_))
        ));
    }

    #[test]
    fn cursor_refuses_garbage_in_the_second_slot_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        // Slot 0 never written (all zeros), slot 1 not a valid slot: neither fresh nor readable.
        let mut bytes = vec![0u8; 2 * SLOT_LEN];
        bytes[2 * SLOT_LEN - 1] = 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            OutboxCursor::open(&path),
            Err(CursorError::Corrupt(_))
        ));
    }

    #[test]
    fn cursor_never_trusts_a_slot_of_generation_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        // Generation 0 means "never written", even with a checksum that matches: a fresh file
        // with such a slot is not a cursor at 7.
        let mut bytes = vec![0u8; 2 * SLOT_LEN];
        bytes[8..16].copy_from_slice(&7u64.to_le_bytes());
        bytes[16..20].copy_from_slice(&slot_checksum(0, 7).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            OutboxCursor::open(&path),
            Err(CursorError::Corrupt(_))
        ));
    }
}
