//! [`MmapStore`]: one session's sequence numbers and sent messages in two memory-mapped files.
//!
//! Recording a sent message is a memory copy into the page cache, so it survives the process
//! being killed at any instruction without a syscall per message; [`Durability`] chooses how often
//! the pages are also forced to the device, for surviving a power loss.
//!
//! # On-disk format (version 1, little-endian)
//!
//! The session's directory holds two files. Both open with a 16-byte header: an 8-byte magic
//! (`BATONSEQ` or `BATONMSG`), a `u32` format version and 4 reserved zero bytes. An all-zero header
//! means the file was being created when the process stopped.
//!
//! `seqnums` (192 bytes): the header, then two 64-byte slots at offsets 64 and 128, each
//! `generation, day_epoch, epoch, cut_offset, session_period, seq_num_next_in, seq_num_next_out`
//! (`u64` each), a CRC-32 of those 56 bytes and 4 zero bytes. Each update writes the whole state
//! into the slot at `generation % 2`, the one not holding the current state, so a write torn by a
//! crash fails its checksum and the other slot, one update older, is used.
//!
//! `messages` (grows geometrically): the header, then 8-byte aligned records
//! `len: u32, crc32: u32, seq: u64, epoch: u64, message bytes, zero padding to 8`, where `len`
//! counts the 24 header bytes and the message bytes (so it is never 0, even for an empty message).
//! The checksum covers `len`, `seq`, `epoch` and the message bytes. A zero `len` ends the log.
//! The input journal uses the same header and record layout (`crate::record`).
//!
//! # Epochs and cuts
//!
//! Records are only ever appended, except at a *cut*: a reset (new session day), a move of the
//! outbound sequence number below stored messages, or a torn tail found on open. A cut is one slot
//! write, which makes it atomic: it bumps `epoch` and records the byte offset it cut at. On open a
//! record is valid if its checksum matches, its `seq` and `epoch` rise over the previous record's,
//! and its epoch is the current one (at or after `cut_offset`) or one from the current session
//! day (before it; `day_epoch` is the epoch of the last reset). Whatever lies at or after the cut
//! from before it carries an older epoch and can never be mistaken for a current record, even if
//! a crash stops the process between the cut and the next append. The first invalid record ends
//! the log; the store cuts there.
//!
//! Appends keep the length field at the tail zero (an append zeroes the next one before it writes
//! its own length, last), so a process killed in the middle of an append leaves a clean end.
//!
//! The outbound sequence number in the slot is refreshed only by slot writes, not by appends; on
//! open it is `max(slot value, last record's seq + 1)`.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{Ordering, fence};

use serde::Deserialize;

use super::{SessionStore, StoreError};
use crate::constants::{
    STORE_MESSAGES_BYTES_INITIAL, STORE_MESSAGES_BYTES_MAX, STORE_MESSAGES_GROWTH_FACTOR,
    STORE_MESSAGES_HEADROOM_BYTES,
};
use crate::mmap::{MapError, MappedFile};
use crate::record::{
    self, ALIGN_BYTES as RECORD_ALIGN_BYTES, FILE_HEADER_BYTES, FileHeader as Header,
    HEADER_BYTES as RECORD_HEADER_BYTES, read_u32, read_u64,
};

/// The sequence-number file inside a session's directory.
const SEQNUMS_FILE_NAME: &str = "seqnums";
/// The message log inside a session's directory.
const MESSAGES_FILE_NAME: &str = "messages";
/// Tells a sequence-number file from any other file someone put in the directory.
const SEQNUMS_MAGIC: [u8; 8] = *b"BATONSEQ";
/// Tells a message log from any other file someone put in the directory.
const MESSAGES_MAGIC: [u8; 8] = *b"BATONMSG";
/// Bumped on any change of layout, so an old build refuses a newer store instead of misreading it.
const FORMAT_VERSION: u32 = 1;
/// One slot: seven `u64` fields, a CRC-32 and 4 zero bytes.
const SLOT_BYTES: usize = 64;
/// The part of a slot its checksum covers.
const SLOT_FIELDS_BYTES: usize = 56;
/// Where the two slots are; slot `generation % 2` holds a given generation.
const SLOT_OFFSETS: [usize; 2] = [64, 128];
/// Header, padding to 64, two slots.
const SEQNUMS_FILE_BYTES: usize = 192;
/// Where the first record goes.
const MESSAGES_FIRST_RECORD: usize = FILE_HEADER_BYTES;
/// The index holds offsets as `u32` in 8-byte units, which addresses 32 GiB.
const MESSAGES_BYTES_FORMAT_MAX: u64 = (u32::MAX as u64 + 1) * RECORD_ALIGN_BYTES as u64;
/// The smallest message log: a header and the length field that ends an empty log.
const MESSAGES_BYTES_MIN: u64 = (MESSAGES_FIRST_RECORD + 4) as u64;

const _: () = assert!(SLOT_OFFSETS[0] >= FILE_HEADER_BYTES);
const _: () = assert!(SLOT_OFFSETS[1] >= SLOT_OFFSETS[0] + SLOT_BYTES);
const _: () = assert!(SEQNUMS_FILE_BYTES >= SLOT_OFFSETS[1] + SLOT_BYTES);
const _: () = assert!(SLOT_FIELDS_BYTES + 8 == SLOT_BYTES);
const _: () = assert!(MESSAGES_FIRST_RECORD.is_multiple_of(RECORD_ALIGN_BYTES));
const _: () = assert!(STORE_MESSAGES_BYTES_MAX <= MESSAGES_BYTES_FORMAT_MAX);
const _: () = assert!(STORE_MESSAGES_BYTES_INITIAL >= MESSAGES_BYTES_MIN);

/// How hard an [`MmapStore`] works to get what it wrote onto the device. Every mode survives a
/// kill of the process (the bytes are in the kernel's page cache); they differ in what survives a
/// power loss or kernel crash, and in what that costs per message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Appends and sequence-number updates are memory writes only; the kernel writes the pages
    /// back on its own schedule. The default, because a gateway process dying is the common
    /// failure and this mode costs no syscall per message. After a power loss or kernel crash the
    /// store still opens consistent (checksums cut what was torn), but possibly at an older state.
    #[default]
    Os,
    /// [`SessionStore::flush`] writes back what changed since the previous call and waits for it.
    /// The driver calls it once per batch of socket reads, so a power loss loses at most the
    /// current batch, at the cost of one `msync` per batch. Resets and backward moves of the
    /// outbound number are written back at once: they are rare, and a half-written one must not
    /// meet the appends that follow it on the device.
    Batch,
    /// Every append and every sequence-number update is written back before it returns, for
    /// venues that require it; one `msync` per message.
    Message,
}

/// Bounds of one session's message log. Defaults come from [`crate::constants`]; the config can
/// override them per gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MmapStoreLimits {
    /// Size a new message log starts at, so a quiet session never remaps. Clamped to
    /// `messages_bytes_max`.
    pub messages_bytes_initial: u64,
    /// Size over which an append is refused with [`StoreError::Full`], so a runaway session stops
    /// itself instead of filling the disk. Clamped to the format's ceiling of 32 GiB.
    pub messages_bytes_max: u64,
}

impl Default for MmapStoreLimits {
    fn default() -> Self {
        MmapStoreLimits {
            messages_bytes_initial: STORE_MESSAGES_BYTES_INITIAL,
            messages_bytes_max: STORE_MESSAGES_BYTES_MAX,
        }
    }
}

impl MmapStoreLimits {
    /// The limits brought within what the format can hold, with a warning when that changed them.
    fn normalized(self) -> MmapStoreLimits {
        let max = self
            .messages_bytes_max
            .clamp(MESSAGES_BYTES_MIN, MESSAGES_BYTES_FORMAT_MAX);
        let initial = self.messages_bytes_initial.clamp(MESSAGES_BYTES_MIN, max);
        let normalized = MmapStoreLimits {
            messages_bytes_initial: initial,
            messages_bytes_max: max,
        };
        if normalized != self {
            tracing::warn!(
                requested = ?self,
                used = ?normalized,
                "session store limits adjusted to what the message log format can hold"
            );
        }
        normalized
    }
}

/// A [`SessionStore`] in two memory-mapped files, `seqnums` and `messages`, in the session's own
/// directory (the format is described at the top of its source file). Opening takes an exclusive
/// lock, so one session's files are written by one store at a time.
pub struct MmapStore {
    /// What `append_sent`, the sequence-number setters and `flush` force to the device.
    durability: Durability,
    /// Appends that would take the message log past this many bytes are refused.
    messages_bytes_max: u64,
    /// The `seqnums` file with its two slots.
    seqnums: MappedFile,
    /// The `messages` append log.
    messages: MappedFile,
    /// The current state, as the last slot write left it, except `seq_num_next_out`, which here
    /// also counts appends made since: the records on disk carry that part.
    slot: Slot,
    /// Byte offset in `messages` where the next record goes; its length field is zero (or it is
    /// the end of the file), which is what ends the log on the next open.
    tail: usize,
    /// Where each stored message is, for O(1) `sent`.
    index: Index,
    /// Byte range of `messages` written since the last `msync`, so `Batch` flushes only that.
    /// Empty when start >= end.
    dirty_start: usize,
    /// End of the range started at `dirty_start`.
    dirty_end: usize,
    /// A slot was written and not yet `msync`ed (only in `Batch` mode, where `flush` does it).
    slot_dirty: bool,
    /// The message log has less than [`STORE_MESSAGES_HEADROOM_BYTES`] free and could not grow
    /// (disk full): counted in [`crate::mmap::files_short_of_space`] while true, so the gateway
    /// refuses new business until [`SessionStore::keep_headroom`] succeeds again.
    short_of_space: bool,
}

impl Drop for MmapStore {
    fn drop(&mut self) {
        if self.short_of_space {
            crate::mmap::count_short_of_space(false);
        }
    }
}

impl fmt::Debug for MmapStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so a store with millions of messages does not print its whole index.
        f.debug_struct("MmapStore")
            .field("messages", &self.messages.path())
            .field("durability", &self.durability)
            .field("slot", &self.slot)
            .field("tail", &self.tail)
            .field("stored", &self.index.offsets.len())
            .finish_non_exhaustive()
    }
}

impl MmapStore {
    /// Opens the store in `dir`, the session's own directory (created if missing), with the
    /// default limits. A new store starts at sequence numbers 1/1; an existing one resumes where
    /// it was, cutting a torn tail. Another open store on the same directory makes this fail with
    /// [`StoreError::Locked`].
    pub fn open(dir: &Path, durability: Durability) -> Result<MmapStore, StoreError> {
        MmapStore::open_with_limits(dir, durability, MmapStoreLimits::default())
    }

    /// [`MmapStore::open`] with explicit limits, for a gateway whose config overrides them and for
    /// tests that need to reach them quickly.
    pub fn open_with_limits(
        dir: &Path,
        durability: Durability,
        limits: MmapStoreLimits,
    ) -> Result<MmapStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let limits = limits.normalized();
        let seqnums = MappedFile::open(&dir.join(SEQNUMS_FILE_NAME), SEQNUMS_FILE_BYTES as u64)?;
        // An append log on the order path: growth within the limit never remaps, and the pages
        // ahead of the tail are made present off this thread.
        let messages = MappedFile::open_appendable(
            &dir.join(MESSAGES_FILE_NAME),
            limits.messages_bytes_initial,
            limits.messages_bytes_max,
        )?;
        if messages.len() as u64 > MESSAGES_BYTES_FORMAT_MAX {
            return Err(corrupt(
                &messages,
                format!(
                    "{} bytes, over the format's {MESSAGES_BYTES_FORMAT_MAX}",
                    messages.len()
                ),
            ));
        }
        let mut store = MmapStore {
            durability,
            messages_bytes_max: limits.messages_bytes_max,
            seqnums,
            messages,
            slot: Slot::INITIAL,
            tail: MESSAGES_FIRST_RECORD,
            index: Index::default(),
            dirty_start: 0,
            dirty_end: 0,
            slot_dirty: false,
            short_of_space: false,
        };
        let seqnums_header = read_header(store.seqnums.as_slice(), &SEQNUMS_MAGIC)
            .map_err(|reason| corrupt(&store.seqnums, reason))?;
        match seqnums_header {
            Header::Blank => store.initialize(dir)?,
            Header::Valid => {
                let messages_header = read_header(store.messages.as_slice(), &MESSAGES_MAGIC)
                    .map_err(|reason| corrupt(&store.messages, reason))?;
                if messages_header == Header::Blank {
                    return Err(corrupt(
                        &store.messages,
                        "missing or blank while the sequence numbers exist".to_string(),
                    ));
                }
                store.slot = newest_slot(store.seqnums.as_slice()).ok_or_else(|| {
                    corrupt(
                        &store.seqnums,
                        "both sequence-number slots fail their checksum".to_string(),
                    )
                })?;
            }
        }
        store.recover()?;
        store.messages.wrote_to(store.tail);
        Ok(store)
    }

    /// Writes a new, empty store. The message log is made first and the sequence-number header
    /// last, so a crash during creation leaves a blank `seqnums` header and the next open simply
    /// starts again.
    fn initialize(&mut self, dir: &Path) -> Result<(), StoreError> {
        match read_header(self.messages.as_slice(), &MESSAGES_MAGIC) {
            Err(reason) => return Err(corrupt(&self.messages, reason)),
            Ok(Header::Valid)
                if read_u32(self.messages.as_slice(), MESSAGES_FIRST_RECORD) != Some(0) =>
            {
                return Err(corrupt(
                    &self.messages,
                    "holds records but the sequence-number file is blank; refusing to start a \
                     new session over them"
                        .to_string(),
                ));
            }
            Ok(_) => {}
        }
        let messages = self.messages.as_mut_slice();
        messages[..FILE_HEADER_BYTES].copy_from_slice(&header_bytes(&MESSAGES_MAGIC));
        messages[MESSAGES_FIRST_RECORD..MESSAGES_FIRST_RECORD + 4].fill(0);
        self.messages.flush_range(0, MESSAGES_FIRST_RECORD + 4)?;

        let seqnums = self.seqnums.as_mut_slice();
        seqnums[..SEQNUMS_FILE_BYTES].fill(0);
        let slot = Slot::INITIAL;
        let at = slot.offset();
        seqnums[at..at + SLOT_BYTES].copy_from_slice(&slot.encode());
        self.seqnums.flush()?;
        self.seqnums.as_mut_slice()[..FILE_HEADER_BYTES]
            .copy_from_slice(&header_bytes(&SEQNUMS_MAGIC));
        self.seqnums.flush()?;
        // The new files' directory entries must survive a power loss too.
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        self.slot = slot;
        Ok(())
    }

    /// Rebuilds the index from the message log, cutting at the first invalid record, and derives
    /// the outbound sequence number.
    fn recover(&mut self) -> Result<(), StoreError> {
        let bytes = self.messages.as_slice();
        let mut previous: Option<(u64, u64)> = None;
        let mut at = MESSAGES_FIRST_RECORD;
        let invalid = loop {
            let record = match record::read(bytes, at) {
                Ok(Some(record)) => record,
                Ok(None) => break None,
                Err(reason) => break Some(reason),
            };
            // A store record's stamp is the epoch it was appended in.
            let epoch = record.stamp;
            let epoch_ok = if (at as u64) < self.slot.cut_offset {
                (self.slot.day_epoch..=self.slot.epoch).contains(&epoch)
            } else {
                epoch == self.slot.epoch
            };
            if !epoch_ok {
                break Some(format!(
                    "record epoch {} is not current (epoch {}, session day from epoch {}, cut at \
                     byte {})",
                    epoch, self.slot.epoch, self.slot.day_epoch, self.slot.cut_offset
                ));
            }
            if let Some((seq, previous_epoch)) = previous
                && (record.seq <= seq || epoch < previous_epoch)
            {
                break Some(format!(
                    "record (seq {}, epoch {epoch}) does not follow (seq {seq}, epoch \
                     {previous_epoch})",
                    record.seq
                ));
            }
            previous = Some((record.seq, epoch));
            self.index.push(record.seq, at);
            at = record.end;
        };
        self.tail = at;
        if let Some(last_seq) = self.index.last_seq() {
            self.slot.seq_num_next_out = self.slot.seq_num_next_out.max(last_seq.saturating_add(1));
        }
        if let Some(reason) = invalid {
            tracing::warn!(
                path = %self.messages.path().display(),
                offset = at,
                stored = self.index.offsets.len(),
                reason,
                "cutting the session's message log at an invalid record (a torn write or a \
                 leftover from before a reset); the records before it are kept"
            );
            let next = self.slot;
            self.cut(at, self.index.offsets.len(), next, false)?;
        }
        Ok(())
    }

    /// Drops every record from byte `offset` (index position `position`) on, atomically: one slot
    /// write bumps the epoch and moves the cut, which invalidates whatever lies at or after
    /// `offset`. The rest of `next` (sequence numbers, session period) is written with it; a
    /// `new_day` also makes the new epoch the first of a session day, which invalidates every
    /// earlier record.
    fn cut(
        &mut self,
        offset: usize,
        position: usize,
        next: Slot,
        new_day: bool,
    ) -> Result<(), StoreError> {
        // Outside `Os` mode the records kept must reach the device before the slot that keeps
        // them does.
        if self.durability != Durability::Os {
            self.sync_messages()?;
        }
        let epoch =
            self.slot.epoch.checked_add(1).ok_or_else(|| {
                corrupt(&self.seqnums, "the epoch counter is exhausted".to_string())
            })?;
        self.write_slot(Slot {
            epoch,
            day_epoch: if new_day { epoch } else { next.day_epoch },
            cut_offset: offset as u64,
            ..next
        })?;
        self.index.truncate(position);
        self.tail = offset;
        // Not needed for correctness (what lies here has an older epoch now) but keeps the next
        // open's scan clean, and appends rely on a zero length at the tail.
        if let Some(len) = self.messages.as_mut_slice().get_mut(offset..offset + 4) {
            len.fill(0);
            self.mark_dirty(offset, offset + 4);
        }
        self.persist_slot(true)
    }

    /// Writes `next` as the new current state into the slot not holding the current one. A crash
    /// during the write leaves that slot failing its checksum, so the current one still counts.
    fn write_slot(&mut self, next: Slot) -> Result<(), StoreError> {
        let generation = self.slot.generation.checked_add(1).ok_or_else(|| {
            corrupt(
                &self.seqnums,
                "the slot generation is exhausted".to_string(),
            )
        })?;
        let slot = Slot { generation, ..next };
        let at = slot.offset();
        // A slot write commits what came before it (records it counts) and is committed before
        // what follows (a cut's zeroed length, the next epoch's records); the fences keep the
        // compiler and the CPU from moving stores across it, so a kill sees them in this order.
        fence(Ordering::Release);
        self.seqnums.as_mut_slice()[at..at + SLOT_BYTES].copy_from_slice(&slot.encode());
        fence(Ordering::Release);
        self.slot = slot;
        Ok(())
    }

    /// Applies the durability mode to a slot just written. `structural` changes (cuts) are synced
    /// at once in `Batch` mode too: they are rare, and appends that follow must never reach the
    /// device before the cut they depend on.
    fn persist_slot(&mut self, structural: bool) -> Result<(), StoreError> {
        match self.durability {
            Durability::Os => Ok(()),
            Durability::Batch if !structural => {
                self.slot_dirty = true;
                Ok(())
            }
            Durability::Batch | Durability::Message => {
                self.seqnums.flush()?;
                self.slot_dirty = false;
                if structural {
                    self.sync_messages()?;
                }
                Ok(())
            }
        }
    }

    /// Widens the range of `messages` that the next sync must write back.
    fn mark_dirty(&mut self, start: usize, end: usize) {
        if self.dirty_start >= self.dirty_end {
            (self.dirty_start, self.dirty_end) = (start, end);
        } else {
            self.dirty_start = self.dirty_start.min(start);
            self.dirty_end = self.dirty_end.max(end);
        }
    }

    /// Writes back the part of `messages` changed since the last sync and waits for it.
    fn sync_messages(&mut self) -> Result<(), StoreError> {
        if self.dirty_start < self.dirty_end {
            let end = self.dirty_end.min(self.messages.len());
            if self.dirty_start < end {
                self.messages
                    .flush_range(self.dirty_start, end - self.dirty_start)?;
            }
            (self.dirty_start, self.dirty_end) = (0, 0);
        }
        Ok(())
    }

    /// Enters or leaves the short-of-space state, counted process-wide, with one ERROR naming
    /// the file and the free space on entering and one INFO on leaving.
    fn set_short_of_space(
        &mut self,
        short: bool,
        error: Option<&MapError>,
    ) -> Result<(), StoreError> {
        if short == self.short_of_space {
            return Ok(());
        }
        self.short_of_space = short;
        crate::mmap::count_short_of_space(short);
        let path = self.messages.path();
        if short {
            let free_bytes = crate::mmap::free_bytes(path)
                .map_or_else(|| "unknown".to_string(), |bytes| bytes.to_string());
            tracing::error!(
                path = %path.display(),
                free_bytes,
                error = %error.map(ToString::to_string).unwrap_or_default(),
                "disk full: a session's message log cannot grow ahead of need; new business is refused until space returns"
            );
        } else {
            tracing::info!(path = %path.display(), "a session's message log has room again");
        }
        Ok(())
    }

    /// Grows the message log so `end` bytes fit, geometrically, up to the configured maximum.
    fn reserve(&mut self, end: usize) -> Result<(), StoreError> {
        let len = self.messages.len() as u64;
        let end = end as u64;
        if end <= len {
            return Ok(());
        }
        let grown = len
            .saturating_mul(STORE_MESSAGES_GROWTH_FACTOR)
            .max(end)
            .min(self.messages_bytes_max);
        tracing::debug!(
            path = %self.messages.path().display(),
            from = len,
            to = grown,
            "growing the session's message log"
        );
        self.messages.grow(grown)?;
        Ok(())
    }
}

impl SessionStore for MmapStore {
    fn seq_num_next_out(&self) -> u64 {
        self.slot.seq_num_next_out
    }

    fn seq_num_next_in(&self) -> u64 {
        self.slot.seq_num_next_in
    }

    fn set_seq_num_next_in(&mut self, seq: u64) -> Result<(), StoreError> {
        if seq == self.slot.seq_num_next_in {
            return Ok(());
        }
        self.write_slot(Slot {
            seq_num_next_in: seq,
            ..self.slot
        })?;
        self.persist_slot(false)
    }

    fn set_seq_num_next_out(&mut self, seq: u64) -> Result<(), StoreError> {
        if seq == self.slot.seq_num_next_out {
            return Ok(());
        }
        let next = Slot {
            seq_num_next_out: seq,
            ..self.slot
        };
        let position = self.index.first_at_or_above(seq);
        match self.index.offset(position) {
            // Stored messages at or above `seq` are dropped, atomically with the new number.
            Some(offset) => self.cut(offset, position, next, false),
            None => {
                self.write_slot(next)?;
                self.persist_slot(false)
            }
        }
    }

    fn append_sent(&mut self, seq: u64, message: &[u8]) -> Result<(), StoreError> {
        if seq != self.slot.seq_num_next_out {
            return Err(StoreError::OutOfOrder {
                seq,
                expected: self.slot.seq_num_next_out,
            });
        }
        let Some(seq_num_next_out) = seq.checked_add(1) else {
            return Err(StoreError::Full(format!(
                "MsgSeqNum {seq} is the last representable"
            )));
        };
        let too_large = || {
            StoreError::Full(format!(
                "a message of {} bytes does not fit a message log of at most {} bytes",
                message.len(),
                self.messages_bytes_max
            ))
        };
        record::encoded_len(message.len()).ok_or_else(too_large)?;
        let start = self.tail;
        let end = record::end(start, message.len()).ok_or_else(too_large)?;
        if end as u64 > self.messages_bytes_max {
            return Err(StoreError::Full(format!(
                "{} bytes of messages stored, the next ({} bytes) would pass the limit of {} bytes",
                start,
                message.len(),
                self.messages_bytes_max
            )));
        }
        self.reserve(end)?;

        // Writes the length last, so a kill in the middle of an append loses this message only.
        record::write(
            self.messages.as_mut_slice(),
            start,
            seq,
            self.slot.epoch,
            message,
        );

        self.index.push(seq, start);
        self.tail = end;
        self.slot.seq_num_next_out = seq_num_next_out;
        let dirty_end = (end + 4).min(self.messages.len());
        self.mark_dirty(start, dirty_end);
        if self.durability == Durability::Message {
            self.sync_messages()?;
        }
        // Stored whatever happens next. Growing ahead of need here means a full disk is found
        // while there is still room for the answers already owed; once short, the retries come
        // from the gateway's back-off instead of one failed allocation per message.
        if !self.short_of_space {
            let _ = self.keep_headroom();
        }
        // After any growth, so the window ahead is not cut at the old end.
        self.messages.wrote_to(end);
        Ok(())
    }

    /// The headroom covers the answers owed when new business stops and the refusals sent
    /// while the disk stays full (about 2,600 BusinessMessageRejects to one session). A session
    /// that is refused more than that before space returns finds its log full: the message is
    /// then not stored, so not sent (the append error is logged), which is the one case left in
    /// which a full disk costs a message.
    fn keep_headroom(&mut self) -> Result<(), StoreError> {
        let len = self.messages.len() as u64;
        let free = len.saturating_sub(self.tail as u64);
        if free >= STORE_MESSAGES_HEADROOM_BYTES || len >= self.messages_bytes_max {
            // Enough room, or the configured ceiling (a runaway session, refused by `Full`).
            return self.set_short_of_space(false, None);
        }
        let grown = len
            .saturating_mul(STORE_MESSAGES_GROWTH_FACTOR)
            .max(self.tail as u64 + STORE_MESSAGES_HEADROOM_BYTES)
            .min(self.messages_bytes_max);
        match self.messages.grow(grown) {
            Ok(()) => self.set_short_of_space(false, None),
            Err(error) if error.is_no_space() => {
                self.set_short_of_space(true, Some(&error))?;
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    fn sent(&self, seq: u64) -> Option<&[u8]> {
        let start = self.index.offset(self.index.position(seq)?)?;
        let bytes = self.messages.as_slice();
        let len = usize::try_from(read_u32(bytes, start)?).ok()?;
        bytes.get(start.checked_add(RECORD_HEADER_BYTES)?..start.checked_add(len)?)
    }

    fn session_period(&self) -> u64 {
        self.slot.session_period
    }

    fn reset(&mut self, session_period: u64) -> Result<(), StoreError> {
        let next = Slot {
            session_period,
            seq_num_next_in: 1,
            seq_num_next_out: 1,
            ..self.slot
        };
        self.cut(MESSAGES_FIRST_RECORD, 0, next, true)
    }

    fn sequence_epoch(&self) -> u64 {
        // Every reset cuts with `new_day`, which makes the new epoch the day's first.
        self.slot.day_epoch
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.durability == Durability::Os {
            return Ok(());
        }
        self.sync_messages()?;
        if self.slot_dirty {
            self.seqnums.flush()?;
            self.slot_dirty = false;
        }
        Ok(())
    }
}

impl From<MapError> for StoreError {
    fn from(error: MapError) -> StoreError {
        match error {
            MapError::Locked { path } => StoreError::Locked { path },
            MapError::Io {
                path,
                operation,
                source,
            } => StoreError::Io {
                path: format!("{path} ({operation})"),
                source,
            },
        }
    }
}

/// The state one slot holds. Every field is whole-store state, written together so that one slot
/// write is one atomic change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// Counts slot writes; of the two slots, the valid one with the higher generation is current,
    /// and generation `g` always lives in slot `g % 2`. Never 0 in a written slot.
    generation: u64,
    /// The epoch of the last reset: records of lower epochs are from an earlier session day.
    day_epoch: u64,
    /// Bumped at every cut; records appended now carry it, and from `cut_offset` on only records
    /// carrying it are valid.
    epoch: u64,
    /// Byte offset of the last cut in the message log: records before it are the ones the cut
    /// kept (epochs `day_epoch..=epoch`).
    cut_offset: u64,
    /// See [`SessionStore::session_period`].
    session_period: u64,
    /// See [`SessionStore::seq_num_next_in`].
    seq_num_next_in: u64,
    /// See [`SessionStore::seq_num_next_out`]; on disk, as of the last slot write.
    seq_num_next_out: u64,
}

impl Slot {
    /// A new store's state: epoch 1, sequence numbers 1/1, no session period.
    const INITIAL: Slot = Slot {
        generation: 1,
        day_epoch: 1,
        epoch: 1,
        cut_offset: MESSAGES_FIRST_RECORD as u64,
        session_period: 0,
        seq_num_next_in: 1,
        seq_num_next_out: 1,
    };

    /// Byte offset of the slot this generation is written to.
    fn offset(&self) -> usize {
        SLOT_OFFSETS[(self.generation % 2) as usize]
    }

    /// The slot's bytes, checksum included.
    fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut bytes = [0u8; SLOT_BYTES];
        let fields = [
            self.generation,
            self.day_epoch,
            self.epoch,
            self.cut_offset,
            self.session_period,
            self.seq_num_next_in,
            self.seq_num_next_out,
        ];
        for (chunk, field) in bytes.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes[..SLOT_FIELDS_BYTES]);
        bytes[SLOT_FIELDS_BYTES..SLOT_FIELDS_BYTES + 4].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// The slot at `position` (0 or 1) of the `seqnums` bytes, if it is valid: checksum, its
    /// generation belongs there, and its epochs and cut are consistent.
    fn decode(seqnums: &[u8], position: usize) -> Option<Slot> {
        let at = *SLOT_OFFSETS.get(position)?;
        let bytes = seqnums.get(at..at + SLOT_BYTES)?;
        if read_u32(bytes, SLOT_FIELDS_BYTES)? != crc32fast::hash(&bytes[..SLOT_FIELDS_BYTES]) {
            return None;
        }
        let field = |i: usize| read_u64(bytes, i * 8);
        let slot = Slot {
            generation: field(0)?,
            day_epoch: field(1)?,
            epoch: field(2)?,
            cut_offset: field(3)?,
            session_period: field(4)?,
            seq_num_next_in: field(5)?,
            seq_num_next_out: field(6)?,
        };
        let consistent = slot.generation != 0
            && (slot.generation % 2) as usize == position
            && slot.day_epoch <= slot.epoch
            && slot.cut_offset >= MESSAGES_FIRST_RECORD as u64;
        consistent.then_some(slot)
    }
}

/// The current state: the valid slot with the higher generation, if any slot is valid.
fn newest_slot(seqnums: &[u8]) -> Option<Slot> {
    match (Slot::decode(seqnums, 0), Slot::decode(seqnums, 1)) {
        (Some(a), Some(b)) => Some(if a.generation > b.generation { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Where each stored message is in the log, so `sent(seq)` is a lookup, not a scan.
#[derive(Debug, Default)]
struct Index {
    /// Record offsets in 8-byte units, in sequence-number order. `u32` units take half the
    /// memory of `u64` bytes and still address the format's 32 GiB.
    offsets: Vec<u32>,
    /// Stretches of consecutive sequence numbers, in order, each non-empty; a new one starts after
    /// each skip. A session without skips has one, so a lookup is O(1); with k skips, O(log k).
    runs: Vec<Run>,
}

/// Consecutive sequence numbers stored back to back in the index.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Sequence number of the run's first message.
    first_seq: u64,
    /// Where that message is in `Index::offsets`.
    first_index: usize,
}

impl Index {
    /// Sequence number of the last stored message.
    fn last_seq(&self) -> Option<u64> {
        let run = self.runs.last()?;
        let back = (self.offsets.len() - 1 - run.first_index) as u64;
        Some(run.first_seq + back)
    }

    /// Records that the message `seq`, higher than every stored one, starts at byte `offset`.
    fn push(&mut self, seq: u64, offset: usize) {
        let last = self.last_seq();
        assert!(last.is_none_or(|last| last < seq), "index out of order");
        assert!(
            offset.is_multiple_of(RECORD_ALIGN_BYTES),
            "record offset unaligned"
        );
        let unit = u32::try_from(offset / RECORD_ALIGN_BYTES)
            .expect("message log offsets fit the index: the file is capped at 32 GiB");
        if last.and_then(|last| last.checked_add(1)) != Some(seq) {
            self.runs.push(Run {
                first_seq: seq,
                first_index: self.offsets.len(),
            });
        }
        self.offsets.push(unit);
    }

    /// End (exclusive) in `offsets` of run `k`.
    fn run_end(&self, k: usize) -> usize {
        self.runs
            .get(k + 1)
            .map_or(self.offsets.len(), |next| next.first_index)
    }

    /// Position in `offsets` of the message `seq`, if stored.
    fn position(&self, seq: u64) -> Option<usize> {
        let k = self.runs.partition_point(|run| run.first_seq <= seq);
        let k = k.checked_sub(1)?;
        let run = self.runs[k];
        let position = run
            .first_index
            .checked_add(usize::try_from(seq - run.first_seq).ok()?)?;
        (position < self.run_end(k)).then_some(position)
    }

    /// Position in `offsets` of the first message at or above `seq` (`offsets.len()` if none).
    fn first_at_or_above(&self, seq: u64) -> usize {
        let k = self.runs.partition_point(|run| run.first_seq <= seq);
        let Some(k) = k.checked_sub(1) else {
            return 0;
        };
        let run = self.runs[k];
        let end = self.run_end(k);
        usize::try_from(seq - run.first_seq)
            .ok()
            .and_then(|back| run.first_index.checked_add(back))
            .map_or(end, |position| position.min(end))
    }

    /// Byte offset of the record at `position`.
    fn offset(&self, position: usize) -> Option<usize> {
        self.offsets
            .get(position)
            .map(|&unit| unit as usize * RECORD_ALIGN_BYTES)
    }

    /// Forgets the messages from `position` on.
    fn truncate(&mut self, position: usize) {
        self.offsets.truncate(position);
        let runs = self.runs.partition_point(|run| run.first_index < position);
        self.runs.truncate(runs);
    }
}

/// Reads a store file's header; `Err` says why it is not a store file this build can read.
fn read_header(bytes: &[u8], magic: &[u8; 8]) -> Result<Header, String> {
    record::read_file_header(bytes, magic, FORMAT_VERSION, "session store")
}

/// A header for a store file of kind `magic` in this build's format.
fn header_bytes(magic: &[u8; 8]) -> [u8; FILE_HEADER_BYTES] {
    record::file_header(magic, FORMAT_VERSION)
}

/// A [`StoreError::Corrupt`] naming `file`.
fn corrupt(file: &MappedFile, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: file.path().display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::store::MemoryStore;
    use proptest::prelude::*;

    /// A message whose bytes and length follow from its sequence number, so any mix-up shows.
    fn payload(seq: u64) -> Vec<u8> {
        let len = 20 + (seq as usize * 37) % 230;
        let mut bytes = format!("8=FIX.4.4|34={seq}|").into_bytes();
        bytes.extend((0..len).map(|i| (seq as usize + i) as u8));
        bytes
    }

    fn open(dir: &Path, durability: Durability) -> MmapStore {
        MmapStore::open(dir, durability).unwrap()
    }

    #[test]
    fn the_message_log_grows_in_place_with_its_next_pages_present() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MmapStoreLimits {
            messages_bytes_initial: 1 << 20,
            messages_bytes_max: 8 << 20,
        };
        let mut store = MmapStore::open_with_limits(dir.path(), Durability::Os, limits).unwrap();
        let address = store.messages.as_slice().as_ptr();
        let len = store.messages.len();
        let mut seq = 1;
        while store.messages.len() == len {
            store.append_sent(seq, &payload(seq)).unwrap();
            seq += 1;
        }
        assert!(store.messages.len() > len, "grown ahead of need");
        assert_eq!(
            store.messages.as_slice().as_ptr(),
            address,
            "without a remap"
        );
        // The window after the tail is made present off this thread.
        let want = store.tail + crate::constants::MAPPED_AHEAD_BYTES / 2;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while store.messages.populated_to() < want {
            assert!(
                std::time::Instant::now() < deadline,
                "pages ahead of the tail never became present"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for check in 1..seq {
            assert_eq!(store.sent(check), Some(&payload(check)[..]));
        }
    }

    const DURABILITIES: [Durability; 3] = [Durability::Os, Durability::Batch, Durability::Message];

    /// Reads a store file, lets `change` edit it, writes it back: what a crash or a bad disk
    /// could have left.
    fn edit_file(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = std::fs::read(path).unwrap();
        change(&mut bytes);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn the_sequence_epoch_changes_at_each_reset_only_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let first = {
            let mut store = open(dir, Durability::Os);
            let first = store.sequence_epoch();
            store.append_sent(1, &payload(1)).unwrap();
            store.set_seq_num_next_in(9).unwrap();
            // Moving the outbound number back cuts the log, yet numbers did not restart.
            store.set_seq_num_next_out(1).unwrap();
            assert_eq!(store.sequence_epoch(), first);
            first
        };
        let mut store = open(dir, Durability::Os);
        assert_eq!(store.sequence_epoch(), first);
        store.reset(5).unwrap();
        let second = store.sequence_epoch();
        assert_ne!(second, first);
        drop(store);
        let mut store = open(dir, Durability::Os);
        assert_eq!(store.sequence_epoch(), second);
        store.reset(5).unwrap();
        assert_ne!(
            store.sequence_epoch(),
            second,
            "a reset within the same day"
        );
    }

    #[test]
    fn state_and_messages_survive_reopen() {
        for durability in DURABILITIES {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            {
                let mut store = open(dir, durability);
                for seq in 1..=3 {
                    store.append_sent(seq, &payload(seq)).unwrap();
                }
                store.set_seq_num_next_in(5).unwrap();
                store.set_seq_num_next_out(6).unwrap();
                store.append_sent(6, &payload(6)).unwrap();
                store.flush().unwrap();
            }
            {
                let mut store = open(dir, durability);
                assert_eq!(store.seq_num_next_out(), 7);
                assert_eq!(store.seq_num_next_in(), 5);
                for seq in [1, 2, 3, 6] {
                    assert_eq!(store.sent(seq), Some(&payload(seq)[..]), "seq {seq}");
                }
                for seq in [0, 4, 5, 7, u64::MAX] {
                    assert_eq!(store.sent(seq), None, "seq {seq}");
                }
                store.set_seq_num_next_out(3).unwrap();
                assert_eq!(store.seq_num_next_out(), 3);
                assert_eq!(store.sent(2), Some(&payload(2)[..]));
                assert_eq!(store.sent(3), None);
                assert_eq!(store.sent(6), None);
                store.append_sent(3, b"three again").unwrap();
            }
            {
                let mut store = open(dir, durability);
                assert_eq!(store.seq_num_next_out(), 4);
                assert_eq!(store.sent(3), Some(&b"three again"[..]));
                assert_eq!(store.sent(6), None);
                store.reset(77).unwrap();
                assert_eq!(store.sent(1), None);
            }
            {
                let mut store = open(dir, durability);
                assert_eq!(store.session_period(), 77);
                assert_eq!((store.seq_num_next_out(), store.seq_num_next_in()), (1, 1));
                assert_eq!(store.sent(1), None);
                store.append_sent(1, b"new day").unwrap();
            }
            let store = open(dir, durability);
            assert_eq!(store.sent(1), Some(&b"new day"[..]));
            assert_eq!(store.sent(2), None);
        }
    }

    /// Appends 1..=count and returns the byte offset of each record, by sequence number.
    fn fill(dir: &Path, count: u64) -> Vec<usize> {
        let mut store = open(dir, Durability::Os);
        let mut offsets = vec![0];
        for seq in 1..=count {
            offsets.push(store.tail);
            store.append_sent(seq, &payload(seq)).unwrap();
        }
        offsets
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_survive() {
        /// Damages the record at the given offset of the message log's bytes.
        type Tear = fn(&mut Vec<u8>, usize);
        let tears: [Tear; 2] = [
            // A byte of the last message's body changed.
            |bytes, at| bytes[at + RECORD_HEADER_BYTES + 3] ^= 0x40,
            // The file ends in the middle of the last record.
            |bytes, at| bytes.truncate(at + 30),
        ];
        for tear in tears {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            let offsets = fill(dir, 5);
            edit_file(&dir.join(MESSAGES_FILE_NAME), |bytes| {
                tear(bytes, offsets[5])
            });
            {
                let mut store = open(dir, Durability::Os);
                for seq in 1..=4 {
                    assert_eq!(store.sent(seq), Some(&payload(seq)[..]));
                }
                assert_eq!(store.sent(5), None);
                assert_eq!(store.seq_num_next_out(), 5);
                store.append_sent(5, b"five again").unwrap();
            }
            let store = open(dir, Durability::Os);
            assert_eq!(store.sent(5), Some(&b"five again"[..]));
            assert_eq!(store.seq_num_next_out(), 6);
        }
    }

    #[test]
    fn records_after_a_corrupt_one_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let offsets = fill(dir, 6);
        edit_file(&dir.join(MESSAGES_FILE_NAME), |bytes| {
            bytes[offsets[3] + RECORD_HEADER_BYTES] ^= 1;
        });
        {
            let mut store = open(dir, Durability::Os);
            assert_eq!(store.seq_num_next_out(), 3);
            assert_eq!(store.sent(4), None);
            // Same length as the old record 3, so old record 4 lines up right after it.
            let again = payload(3);
            store.append_sent(3, &again).unwrap();
        }
        let store = open(dir, Durability::Os);
        assert_eq!(store.seq_num_next_out(), 4);
        assert_eq!(store.sent(3), Some(&payload(3)[..]));
        assert_eq!(
            store.sent(4),
            None,
            "a record from before the cut came back"
        );
    }

    #[test]
    fn corrupt_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let (newest, older) = {
            let mut store = open(dir, Durability::Os);
            store.set_seq_num_next_in(7).unwrap();
            store.set_seq_num_next_in(8).unwrap();
            let newest = store.slot.offset();
            (newest, SLOT_OFFSETS[1] + SLOT_OFFSETS[0] - newest)
        };
        let seqnums = dir.join(SEQNUMS_FILE_NAME);
        edit_file(&seqnums, |bytes| bytes[newest + 40] ^= 0xff);
        {
            let store = open(dir, Durability::Os);
            assert_eq!(store.seq_num_next_in(), 7);
        }
        edit_file(&seqnums, |bytes| bytes[older + 8] ^= 0xff);
        assert!(matches!(
            MmapStore::open(dir, Durability::Os),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn crash_inside_a_reset_never_shows_the_old_day() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fill(dir, 10);
        let messages = dir.join(MESSAGES_FILE_NAME);
        let before = std::fs::read(&messages).unwrap();
        open(dir, Durability::Os).reset(5).unwrap();
        // As if the process died right after the reset's slot write, before it zeroed the first
        // record's length: the old day's records are all still in place.
        std::fs::write(&messages, &before).unwrap();
        {
            let mut store = open(dir, Durability::Os);
            assert_eq!(store.session_period(), 5);
            assert_eq!(store.seq_num_next_out(), 1);
            for seq in 1..=10 {
                assert_eq!(store.sent(seq), None);
            }
            for seq in 1..=3 {
                store.append_sent(seq, &payload(seq + 100)).unwrap();
            }
        }
        let store = open(dir, Durability::Os);
        assert_eq!(store.seq_num_next_out(), 4);
        for seq in 1..=3 {
            assert_eq!(store.sent(seq), Some(&payload(seq + 100)[..]));
        }
        for seq in 4..=10 {
            assert_eq!(store.sent(seq), None);
        }
    }

    #[test]
    fn crash_inside_a_backward_move_never_resurrects_dropped_messages() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fill(dir, 10);
        let messages = dir.join(MESSAGES_FILE_NAME);
        let before = std::fs::read(&messages).unwrap();
        open(dir, Durability::Os).set_seq_num_next_out(5).unwrap();
        std::fs::write(&messages, &before).unwrap();
        {
            let mut store = open(dir, Durability::Os);
            assert_eq!(store.seq_num_next_out(), 5);
            assert_eq!(store.sent(4), Some(&payload(4)[..]));
            assert_eq!(store.sent(5), None);
            store.append_sent(5, &payload(5)).unwrap();
        }
        let store = open(dir, Durability::Os);
        assert_eq!(store.seq_num_next_out(), 6);
        assert_eq!(store.sent(6), None);
    }

    #[test]
    fn second_open_of_a_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), Durability::Os);
        let second = MmapStore::open(dir.path(), Durability::Os);
        assert!(
            matches!(second, Err(StoreError::Locked { .. })),
            "{second:?}"
        );
        drop(first);
        open(dir.path(), Durability::Os);
    }

    #[test]
    fn full_store_refuses_appends_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MmapStoreLimits {
            messages_bytes_initial: 64,
            messages_bytes_max: 4096,
        };
        let mut store = MmapStore::open_with_limits(dir.path(), Durability::Os, limits).unwrap();
        let message = [b'x'; 200];
        let mut seq = 1;
        let error = loop {
            match store.append_sent(seq, &message) {
                Ok(()) => seq += 1,
                Err(error) => break error,
            }
        };
        assert!(matches!(error, StoreError::Full(_)), "{error:?}");
        assert_eq!(seq - 1, ((4096 - 16) / 224) as u64);
        assert_eq!(store.seq_num_next_out(), seq);
        assert!(matches!(
            store.append_sent(seq, &[b'y'; 5000]),
            Err(StoreError::Full(_))
        ));
        // A small message still fits in what is left.
        store.append_sent(seq, b"small").unwrap();
        drop(store);
        let store = MmapStore::open_with_limits(dir.path(), Durability::Os, limits).unwrap();
        assert_eq!(store.seq_num_next_out(), seq + 1);
        assert_eq!(store.sent(1), Some(&message[..]));
        assert_eq!(store.sent(seq), Some(&b"small"[..]));
    }

    #[test]
    fn extreme_sequence_numbers_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), Durability::Os);
        store.set_seq_num_next_out(u64::MAX).unwrap();
        assert!(matches!(
            store.append_sent(u64::MAX, b"last"),
            Err(StoreError::Full(_))
        ));
        store.set_seq_num_next_out(0).unwrap();
        store.append_sent(0, b"zero").unwrap();
        assert_eq!(store.sent(0), Some(&b"zero"[..]));
        assert_eq!(store.sent(u64::MAX), None);
    }

    #[test]
    fn files_that_are_not_a_store_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fill(dir, 2);
        let seqnums = dir.join(SEQNUMS_FILE_NAME);
        let good = std::fs::read(&seqnums).unwrap();
        edit_file(&seqnums, |bytes| bytes[..8].copy_from_slice(b"NOTBATON"));
        assert!(matches!(
            MmapStore::open(dir, Durability::Os),
            Err(StoreError::Corrupt { .. })
        ));
        edit_file(&seqnums, |bytes| bytes[8] = 9);
        assert!(matches!(
            MmapStore::open(dir, Durability::Os),
            Err(StoreError::Corrupt { .. })
        ));
        // Sequence numbers lost while messages remain: refuse rather than start over them.
        std::fs::remove_file(&seqnums).unwrap();
        assert!(matches!(
            MmapStore::open(dir, Durability::Os),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::write(&seqnums, good).unwrap();
        assert_eq!(open(dir, Durability::Os).sent(2), Some(&payload(2)[..]));
    }

    #[test]
    fn interrupted_creation_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(dir.join(SEQNUMS_FILE_NAME), [0u8; 50]).unwrap();
        std::fs::write(dir.join(MESSAGES_FILE_NAME), b"BATONMSG\x01\0\0\0\0\0\0\0").unwrap();
        let mut store = open(dir, Durability::Os);
        store.append_sent(1, b"one").unwrap();
        drop(store);
        assert_eq!(open(dir, Durability::Os).sent(1), Some(&b"one"[..]));
    }

    #[test]
    fn index_finds_messages_across_skips() {
        let mut index = Index::default();
        for (i, seq) in [1, 2, 3, 10, 11, 20].into_iter().enumerate() {
            index.push(seq, 16 + i * 8);
        }
        assert_eq!(index.runs.len(), 3);
        assert_eq!(index.position(0), None);
        assert_eq!(index.position(3), Some(2));
        assert_eq!(index.position(4), None);
        assert_eq!(index.position(11), Some(4));
        assert_eq!(index.position(20), Some(5));
        assert_eq!(index.position(21), None);
        assert_eq!(index.first_at_or_above(0), 0);
        assert_eq!(index.first_at_or_above(5), 3);
        assert_eq!(index.first_at_or_above(11), 4);
        assert_eq!(index.first_at_or_above(u64::MAX), 6);
        index.truncate(4);
        assert_eq!(index.last_seq(), Some(10));
        assert_eq!(index.runs.len(), 2);
        index.truncate(3);
        assert_eq!(index.last_seq(), Some(3));
        assert_eq!(index.runs.len(), 1);
    }

    /// One step of the model test.
    #[derive(Clone, Debug)]
    enum Op {
        Append(Vec<u8>),
        /// Append with a sequence number this far above the expected one.
        AppendOutOfOrder(u64),
        SetIn(u64),
        /// Skip this many outbound numbers (0 = set to the current value).
        SetOutForward(u64),
        /// Move the outbound number back this far (not below 1).
        SetOutBackward(u64),
        Reset(u64),
        Flush,
        /// Close the store and open it again.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Append),
            1 => (1u64..3).prop_map(Op::AppendOutOfOrder),
            2 => (0u64..1000).prop_map(Op::SetIn),
            1 => (0u64..4).prop_map(Op::SetOutForward),
            2 => (1u64..8).prop_map(Op::SetOutBackward),
            1 => (0u64..1000).prop_map(Op::Reset),
            1 => Just(Op::Flush),
            2 => Just(Op::Reopen),
        ]
    }

    fn durability() -> impl Strategy<Value = Durability> {
        prop_oneof![
            Just(Durability::Os),
            Just(Durability::Batch),
            Just(Durability::Message)
        ]
    }

    fn same_state(store: &MmapStore, model: &MemoryStore) -> Result<(), TestCaseError> {
        prop_assert_eq!(store.seq_num_next_out(), model.seq_num_next_out());
        prop_assert_eq!(store.seq_num_next_in(), model.seq_num_next_in());
        prop_assert_eq!(store.session_period(), model.session_period());
        for seq in 0..model.seq_num_next_out() + 2 {
            prop_assert_eq!(store.sent(seq), model.sent(seq), "seq {}", seq);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The memory-mapped store behaves exactly like the in-memory model, across reopens and
        /// with a log small enough to grow many times.
        #[test]
        fn behaves_like_memory_store(
            durability in durability(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let limits = MmapStoreLimits { messages_bytes_initial: 64, messages_bytes_max: 1 << 20 };
            let reopen = || MmapStore::open_with_limits(dir.path(), durability, limits).unwrap();
            let mut store = reopen();
            let mut model = MemoryStore::new();
            for op in ops {
                let outcome = |result: Result<(), StoreError>| result.map_err(|e| e.to_string());
                let (got, want) = match op {
                    Op::Append(message) => {
                        let seq = model.seq_num_next_out();
                        (store.append_sent(seq, &message), model.append_sent(seq, &message))
                    }
                    Op::AppendOutOfOrder(ahead) => {
                        let seq = model.seq_num_next_out() + ahead;
                        (store.append_sent(seq, b"x"), model.append_sent(seq, b"x"))
                    }
                    Op::SetIn(seq) => (store.set_seq_num_next_in(seq), model.set_seq_num_next_in(seq)),
                    Op::SetOutForward(skip) => {
                        let seq = model.seq_num_next_out() + skip;
                        (store.set_seq_num_next_out(seq), model.set_seq_num_next_out(seq))
                    }
                    Op::SetOutBackward(back) => {
                        let seq = model.seq_num_next_out().saturating_sub(back).max(1);
                        (store.set_seq_num_next_out(seq), model.set_seq_num_next_out(seq))
                    }
                    Op::Reset(period) => (store.reset(period), model.reset(period)),
                    Op::Flush => (store.flush(), model.flush()),
                    Op::Reopen => {
                        drop(store);
                        store = reopen();
                        (Ok(()), Ok(()))
                    }
                };
                prop_assert_eq!(outcome(got), outcome(want));
                same_state(&store, &model)?;
            }
            drop(store);
            same_state(&reopen(), &model)?;
        }
    }
}
