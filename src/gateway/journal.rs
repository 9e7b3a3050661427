//! The input journal: every inbound business message, stamped with its global input sequence
//! number and the sequencer's time, is appended here before any engine sees it.
//!
//! The journal is the source of truth (design invariant 2): an engine's state is a snapshot at
//! input seq N plus a replay of N+1.. from here. So an append must survive a kill of the gateway
//! at any instruction, a reader must never see a record that was not completely appended, and
//! damage must be reported, never skipped: a replay that silently jumped over an input would give
//! a standby a different book than the primary's.
//!
//! The journal is a generic append-only log of byte records keyed by input seq; what a payload
//! means is the sequencer's business.
//!
//! # On-disk format (version 1, little-endian)
//!
//! A journal is a directory of *segment* files, each named by the input seq of its first record
//! as 20 zero-padded digits (`00000000000000000001.journal`), so a sorted listing is the
//! journal's order. A segment is created `segment_bytes` long (sparse until written) and opens
//! with the 16-byte file header of `crate::record`: magic `BATONJNL`, format version `1`, 4 zero
//! bytes. Records follow back to back from byte 16, each 8-byte aligned:
//!
//! `len: u32, crc32: u32, seq: u64, time: u64, payload, zero padding to 8`
//!
//! `len` counts the 24 header bytes and the payload (never 0); `time` is the sequencer's stamp in
//! nanoseconds since the Unix epoch; the CRC-32 covers `len`, `seq`, `time` and the payload. A
//! zero `len`, or no room left for one, ends a segment's data. Across the whole journal, seqs rise
//! by exactly one (segment boundaries included) and times never fall. The directory also holds
//! `journal.lock`, which the one writer holds locked (`flock`) while it is open.
//!
//! # Crash safety
//!
//! An append writes the record and then its length, so a kill at any instruction leaves either
//! the whole record or a clean end. Only the last segment is ever written, so only it can end in
//! a torn record (after a power loss in [`Durability::Os`] mode, or a truncated file). Opening
//! scans the last segment: an invalid record with nothing valid after it is a torn tail and is
//! cut (with a warning); an invalid record *followed by a valid one* is damage and refused with
//! [`JournalError::Corrupt`]. A last segment left without any record (a crash between creating it
//! and its first append) is removed. Earlier segments are not rescanned on open, since that would
//! read the whole journal; a reader reports damage in them as `Corrupt`.
//!
//! # Readers
//!
//! [`Journal::read_from`] reads segment files with plain file I/O, without the lock or a mapping,
//! so it works offline and on a journal another process is appending to: at the end of written
//! data it returns `None`, and a later call returns what was appended since.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::constants::{
    JOURNAL_READ_BUFFER_BYTES, JOURNAL_SEGMENT_BYTES_DEFAULT, JOURNAL_SEGMENT_BYTES_MAX,
    JOURNAL_SEGMENT_BYTES_MIN,
};
use crate::fix::store::Durability;
use crate::fix::time::Timestamp;
use crate::mmap::{MapError, MappedFile};
use crate::record::{self, ALIGN_BYTES, FILE_HEADER_BYTES, FileHeader, HEADER_BYTES};

/// Tells a journal segment from any other file someone put in the directory.
const MAGIC: [u8; 8] = *b"BATONJNL";
/// Bumped on any change of layout, so an old build refuses a newer journal instead of
/// misreading it.
const FORMAT_VERSION: u32 = 1;
/// Names the file kind in error messages.
const KIND: &str = "input journal";
/// Extension of segment files; other files in the directory are not the journal's business.
const SEGMENT_EXTENSION: &str = "journal";
/// Digits of a segment's name: every `u64` fits, and equal widths make name order seq order.
const SEGMENT_NAME_DIGITS: usize = 20;
/// The next segment's file, made ready before it is needed (see [`Journal::prepare_spare`]).
/// Not a segment by its extension, so readers and recovery never see it; a writer that opens
/// the journal makes it anew.
const SPARE_FILE_NAME: &str = "next.spare";
/// The writer's lock. A separate file, so a second writer is refused even while the journal has
/// no segment yet.
const LOCK_FILE_NAME: &str = "journal.lock";
/// Where a segment's first record goes.
const FIRST_RECORD: usize = FILE_HEADER_BYTES;

const _: () = assert!(JOURNAL_SEGMENT_BYTES_MIN.is_multiple_of(ALIGN_BYTES as u64));
const _: () = assert!(JOURNAL_SEGMENT_BYTES_MIN as usize > FIRST_RECORD + HEADER_BYTES);
const _: () = assert!(JOURNAL_SEGMENT_BYTES_MAX < u32::MAX as u64);

/// Why a journal operation failed. Disk errors and damage are expected sometimes and name the
/// file; out-of-order appends are the caller's mistake and say what was expected, so the
/// sequencer can stop before an input reaches an engine unjournaled.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The operating system refused an operation.
    #[error("{KIND} {path}: {operation}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: String,
        /// Which step failed (open, read_dir, mmap, msync, ...), since the same `io::Error` kind
        /// means different things for each.
        operation: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A segment holds something that is not a valid journal: a bad header, a damaged record
    /// followed by valid data, a gap or a step back in seq or time. Never skipped, because the
    /// records after it could not be trusted to follow the ones before.
    #[error("{KIND} {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: String,
        /// Where in it the problem starts, for an operator with a hex dump.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// An append's seq is not the next one: the journal never holds a gap or a repeat.
    #[error("append of input seq {seq} but the journal expects {expected}")]
    OutOfOrder {
        /// The seq the caller tried to append.
        seq: u64,
        /// The seq the journal would have accepted (for an empty journal, any seq from 1 on).
        expected: u64,
    },
    /// An append's time is before the last record's: engines take time from the input, so it
    /// must never run backwards.
    #[error("append of input seq {seq} at {} ns, before the last record's {} ns", .time.0, .last.0)]
    TimeWentBack {
        /// The seq the caller tried to append.
        seq: u64,
        /// Its time.
        time: Timestamp,
        /// The last record's time.
        last: Timestamp,
    },
    /// Another writer holds the journal's lock: most likely a second gateway pointed at the same
    /// directory, whose appends would interleave with this one's.
    #[error("{KIND} {path} is locked by another writer (is a second gateway using it?)")]
    Locked {
        /// The lock file.
        path: String,
    },
    /// A payload too large for even an empty segment: records never span segments.
    #[error(
        "a payload of {payload_bytes} bytes does not fit a journal segment ({max_bytes} at most)"
    )]
    TooLarge {
        /// The payload's size.
        payload_bytes: usize,
        /// The largest payload the configured segment size holds.
        max_bytes: usize,
    },
    /// A read from a seq the journal no longer (or never) held: replaying from a later seq would
    /// skip inputs, so the caller needs an older journal or a newer snapshot.
    #[error("{KIND} {path} starts at input seq {first_seq}; seq {from_seq} is not in it")]
    NotHeld {
        /// The journal's directory.
        path: String,
        /// The seq the caller asked to read from.
        from_seq: u64,
        /// The first seq the journal holds.
        first_seq: u64,
    },
    /// The last record has seq `u64::MAX`, so no seq is left for another.
    #[error("input seq {last_seq} is the last representable; the journal cannot grow")]
    SeqExhausted {
        /// The journal's last seq.
        last_seq: u64,
    },
}

impl JournalError {
    /// Whether the journal could not get disk space: the sequencer refuses new business and
    /// tries again later instead of treating it as damage.
    pub fn is_no_space(&self) -> bool {
        matches!(self, JournalError::Io { source, .. } if crate::mmap::is_no_space(source))
    }

    /// The file or directory the error is about, when it names one.
    pub fn path(&self) -> Option<&str> {
        match self {
            JournalError::Io { path, .. }
            | JournalError::Corrupt { path, .. }
            | JournalError::Locked { path }
            | JournalError::NotHeld { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl From<MapError> for JournalError {
    fn from(error: MapError) -> JournalError {
        match error {
            MapError::Locked { path } => JournalError::Locked { path },
            MapError::Io {
                path,
                operation,
                source,
            } => JournalError::Io {
                path,
                operation,
                source,
            },
        }
    }
}

/// How a journal is laid out and made durable. Defaults come from [`crate::constants`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Size of each segment file. Larger means fewer roll-overs (the one slow append); smaller
    /// means finer units to archive or delete. Clamped to
    /// [`JOURNAL_SEGMENT_BYTES_MIN`]..=[`JOURNAL_SEGMENT_BYTES_MAX`] and rounded down to 8.
    pub segment_bytes: u64,
    /// What survives a power loss, and what that costs per append: see [`Durability`]. Every
    /// mode survives a kill of the process.
    pub durability: Durability,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: JOURNAL_SEGMENT_BYTES_DEFAULT,
            durability: Durability::Os,
        }
    }
}

impl JournalConfig {
    /// The config brought within what the format handles, with a warning when that changed it.
    fn normalized(self) -> JournalConfig {
        let segment_bytes = self
            .segment_bytes
            .clamp(JOURNAL_SEGMENT_BYTES_MIN, JOURNAL_SEGMENT_BYTES_MAX)
            / ALIGN_BYTES as u64
            * ALIGN_BYTES as u64;
        let normalized = JournalConfig {
            segment_bytes,
            ..self
        };
        if normalized != self {
            tracing::warn!(
                requested = ?self,
                used = ?normalized,
                "input journal segment size adjusted to what the format handles"
            );
        }
        normalized
    }
}

/// One record read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// The global input sequence number the sequencer gave it.
    pub seq: u64,
    /// The sequencer's stamp, which engines use as the input's time.
    pub time: Timestamp,
    /// The bytes appended, exactly.
    pub payload: Vec<u8>,
}

/// The writer of a journal directory: the one place inputs are appended, in seq order.
///
/// Appends are memory copies into a mapped segment (no syscall and no allocation per record in
/// [`Durability::Os`] mode); only a roll-over to a new segment touches the file system. Opening
/// takes the directory's lock, so there is one writer at a time.
#[derive(Debug)]
pub struct Journal {
    /// The journal's directory, where new segments are created.
    dir: PathBuf,
    /// What `append` and `flush` force to the device.
    durability: Durability,
    /// Size of a new segment; a multiple of 8 within the constants' bounds.
    segment_bytes: u64,
    /// The locked `journal.lock`, held for the writer's lifetime and otherwise unused.
    _lock: File,
    /// The last segment, which appends go to; `None` while the journal holds no record.
    segment: Option<WriteSegment>,
    /// The next segment's file, space allocated and mapped, its first pages being made present
    /// by the prefault thread: a roll-over renames it instead of creating a file on the order
    /// path, and the first appends to it find their pages present. `None` until prepared, or
    /// when preparing failed (a full disk): the roll-over then creates the file itself.
    spare: Option<MappedFile>,
    /// Whether the spare is still to be prepared for the current segment, once it is half full:
    /// set by a roll-over, cleared by the attempt, so a failed one is not retried per append.
    spare_due: bool,
    /// Seq of the first record held; 0 when empty.
    first_seq: u64,
    /// Seq of the last record; 0 when empty.
    last_seq: u64,
    /// Time of the last record (zero when empty); appends may not go below it.
    last_time: Timestamp,
    /// Byte range of the current segment written since its last `msync`, so `Batch` flushes
    /// only that. Empty when start >= end.
    dirty_start: usize,
    /// End of the range started at `dirty_start`.
    dirty_end: usize,
    /// What this writer has forced to the device, counted where it is done.
    device_writes: DeviceWrites,
}

/// What a journal writer has forced to the device since it was opened.
///
/// A [`Durability`] mode differs from another only in these calls, and only a power loss shows
/// what they bought: counting them where they are made lets a status view show what a mode
/// costs, and lets a test check that each mode makes exactly the calls it promises (in `Os`
/// mode, none). Counting is two additions beside a system call, and nothing in `Os` mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceWrites {
    /// `msync` calls on a range of a segment: records, a cut torn tail, a new segment's header.
    pub range_syncs: u64,
    /// Bytes those calls were asked to write back (before rounding to pages), so a range that
    /// misses part of a record, or one far wider than what was written, shows.
    pub range_bytes: u64,
    /// `fsync` calls on the journal's directory, after a segment was created or removed.
    pub dir_syncs: u64,
}

impl DeviceWrites {
    /// Writes back `len` bytes of `file` from `offset` and waits, then counts it.
    fn sync_range(
        &mut self,
        file: &MappedFile,
        offset: usize,
        len: usize,
    ) -> Result<(), JournalError> {
        file.flush_range(offset, len)?;
        self.range_syncs += 1;
        self.range_bytes += len as u64;
        Ok(())
    }

    /// Makes the directory's entries (a segment created or removed) durable, then counts it.
    fn sync_dir(&mut self, dir: &Path) -> Result<(), JournalError> {
        sync_dir(dir)?;
        self.dir_syncs += 1;
        Ok(())
    }
}

/// The segment the writer appends to.
#[derive(Debug)]
struct WriteSegment {
    /// The mapped segment file.
    file: MappedFile,
    /// Offset where the next record goes: its length field reads zero, or it is the end of the
    /// file, which is what ends the data for a reader and on the next open.
    tail: usize,
}

impl WriteSegment {
    /// Whether a record of `payload_len` bytes fits after the tail.
    fn fits(&self, payload_len: usize) -> bool {
        record::end(self.tail, payload_len).is_some_and(|end| end <= self.file.len())
    }
}

impl Journal {
    /// Opens the journal in `dir` (creating the directory if needed) as its one writer, and
    /// recovers from a crash: the last segment is scanned, a torn tail is cut (with a warning)
    /// and appends continue after the last whole record. Damage that is not a torn tail is
    /// refused with [`JournalError::Corrupt`], and a second writer with
    /// [`JournalError::Locked`].
    pub fn open(dir: &Path, config: JournalConfig) -> Result<Journal, JournalError> {
        let config = config.normalized();
        fs::create_dir_all(dir).map_err(|source| io_error(dir, "create_dir", source))?;
        let lock = lock_dir(dir)?;
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            durability: config.durability,
            segment_bytes: config.segment_bytes,
            _lock: lock,
            segment: None,
            spare: None,
            spare_due: false,
            first_seq: 0,
            last_seq: 0,
            last_time: Timestamp::ZERO,
            dirty_start: 0,
            dirty_end: 0,
            device_writes: DeviceWrites::default(),
        };
        journal.recover(list_segments(dir)?)?;
        // Before the first order: a new journal's first segment is this file.
        journal.prepare_spare();
        Ok(journal)
    }

    /// Makes the next segment's file ready: created (any earlier one, left by a crash or an
    /// earlier writer, is replaced: it never holds a record), its space allocated and mapped, and
    /// its first window asked of the prefault thread. Creating the file, allocating its space and
    /// the first appends' page faults took the first orders after a start 34–150 ms at 50
    /// sessions (the journal's page faults alone were a quarter of the gateway's time then).
    /// Called at open and once the current segment is half full, so a roll-over only renames.
    /// A failure is logged, not returned: the roll-over creates the file as before.
    fn prepare_spare(&mut self) {
        if self.spare.is_some() {
            return;
        }
        let path = self.dir.join(SPARE_FILE_NAME);
        let _ = fs::remove_file(&path);
        match MappedFile::open_appendable(&path, self.segment_bytes, self.segment_bytes) {
            Ok(mut file) => {
                file.wrote_to(FIRST_RECORD);
                self.spare = Some(file);
            }
            Err(error) => {
                let _ = fs::remove_file(&path);
                tracing::debug!(%error, "the journal's next segment is not prepared; a roll-over creates it");
            }
        }
    }

    /// Finds the last record, cutting a torn tail, and removes a last segment left without
    /// records by a crash during a roll-over.
    fn recover(&mut self, mut segments: Vec<SegmentName>) -> Result<(), JournalError> {
        let mut removed_empty = false;
        while let Some(last) = segments.last() {
            let mut file =
                MappedFile::open_appendable(&last.path, self.segment_bytes, self.segment_bytes)?;
            let scan = scan_segment(file.as_slice(), &last.path, last.first_seq)?;
            if let Some(reason) = &scan.torn {
                tracing::warn!(
                    path = %last.path.display(),
                    offset = scan.tail,
                    last_seq = scan.last.map_or(0, |(seq, _)| seq),
                    reason,
                    "cutting a torn tail off the input journal's last segment; the records \
                     before it are kept"
                );
                if let Some(len) = file.as_mut_slice().get_mut(scan.tail..scan.tail + 4) {
                    len.fill(0);
                    if self.durability != Durability::Os {
                        self.device_writes.sync_range(&file, scan.tail, 4)?;
                    }
                }
            }
            if let Some((seq, time)) = scan.last {
                file.wrote_to(scan.tail);
                self.segment = Some(WriteSegment {
                    file,
                    tail: scan.tail,
                });
                self.last_seq = seq;
                self.last_time = time;
                break;
            }
            // A roll-over creates the segment just before the append that fills it, so one
            // empty segment at the end is a crash between the two. A second would not be.
            if removed_empty {
                return Err(corrupt(
                    &last.path,
                    FIRST_RECORD as u64,
                    "segment holds no record but is followed by another segment".to_string(),
                ));
            }
            drop(file);
            tracing::warn!(
                path = %last.path.display(),
                "removing the input journal's last segment: it holds no record (a crash \
                 between creating it and its first append)"
            );
            fs::remove_file(&last.path).map_err(|source| io_error(&last.path, "remove", source))?;
            if self.durability != Durability::Os {
                self.device_writes.sync_dir(&self.dir)?;
            }
            removed_empty = true;
            segments.pop();
        }
        self.first_seq = segments.first().map_or(0, |first| first.first_seq);
        Ok(())
    }

    /// Appends one input. `seq` must be `last_seq() + 1` ([`JournalError::OutOfOrder`]
    /// otherwise) and `time` at or after the last record's ([`JournalError::TimeWentBack`]), so
    /// the journal never holds a gap, a repeat or time running backwards. The first record of an
    /// empty journal may have any seq from 1 on, since a journal can start after a snapshot.
    ///
    /// On return the record is in the page cache and survives a kill of the process; what
    /// survives a power loss depends on [`Durability`].
    pub fn append(
        &mut self,
        seq: u64,
        time: Timestamp,
        payload: &[u8],
    ) -> Result<(), JournalError> {
        if self.last_seq == 0 {
            if seq == 0 {
                return Err(JournalError::OutOfOrder { seq, expected: 1 });
            }
        } else {
            let expected = self
                .last_seq
                .checked_add(1)
                .ok_or(JournalError::SeqExhausted {
                    last_seq: self.last_seq,
                })?;
            if seq != expected {
                return Err(JournalError::OutOfOrder { seq, expected });
            }
        }
        if time < self.last_time {
            return Err(JournalError::TimeWentBack {
                seq,
                time,
                last: self.last_time,
            });
        }
        if record::encoded_len(payload.len()).is_none() {
            return Err(self.too_large(payload.len()));
        }
        if !self
            .segment
            .as_ref()
            .is_some_and(|segment| segment.fits(payload.len()))
        {
            self.roll(seq, payload.len())?;
        }
        let segment = self
            .segment
            .as_mut()
            .expect("a roll-over leaves a segment to append to");
        let start = segment.tail;
        let end = record::write(segment.file.as_mut_slice(), start, seq, time.0, payload);
        segment.tail = end;
        segment.file.wrote_to(end);
        let half_full = end >= segment.file.len() / 2;
        let dirty_end = (end + 4).min(segment.file.len());
        if self.first_seq == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
        self.last_time = time;
        self.mark_dirty(start, dirty_end);
        if self.durability == Durability::Message {
            self.sync()?;
        }
        if half_full && self.spare_due {
            self.spare_due = false;
            self.prepare_spare();
        }
        Ok(())
    }

    /// Seq of the last record, 0 when the journal is empty: the next append must carry one more.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Seq of the first record still held (0 when empty): a replay can start no earlier.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Time of the last record (zero when empty): a restarted sequencer stamps no earlier.
    pub fn last_time(&self) -> Timestamp {
        self.last_time
    }

    /// The directory this writer appends to, where its readers read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What this writer has forced to the device since it was opened: what its [`Durability`]
    /// mode has cost so far.
    pub fn device_writes(&self) -> DeviceWrites {
        self.device_writes
    }

    /// Makes what was appended durable as the [`Durability`] mode asks: `Os` does nothing,
    /// `Batch` writes back what was appended since the last flush and waits for it (the
    /// sequencer calls this once per batch), `Message` has nothing left to do.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        match self.durability {
            Durability::Os => Ok(()),
            Durability::Batch | Durability::Message => self.sync(),
        }
    }

    /// A reader of the journal in `dir` from input seq `from_seq` on (inclusive; 0 reads from the
    /// first record held).
    ///
    /// It uses plain file reads, neither the writer's lock nor a mapping, so it works on a
    /// journal another process is appending to as well as offline; it checks every record's
    /// checksum and that seqs rise by one and times never fall. A `from_seq` before the first
    /// record held is [`JournalError::NotHeld`] (a replay must not skip inputs); one past the last
    /// record reads nothing until the journal gets there. A missing directory is
    /// [`JournalError::Io`]; an empty one is an empty journal.
    pub fn read_from(dir: &Path, from_seq: u64) -> Result<JournalReader, JournalError> {
        let mut reader = JournalReader {
            dir: dir.to_path_buf(),
            from_seq,
            expected_seq: 0,
            last_time: Timestamp::ZERO,
            segment: None,
            damage_checked_at: None,
            read_any: false,
            scratch: Vec::new(),
        };
        reader.position()?;
        Ok(reader)
    }

    /// Starts the segment whose first record is `seq`, with room for a payload of `payload_len`.
    fn roll(&mut self, seq: u64, payload_len: usize) -> Result<(), JournalError> {
        if record::end(FIRST_RECORD, payload_len).is_none_or(|end| end as u64 > self.segment_bytes)
        {
            return Err(self.too_large(payload_len));
        }
        // Outside `Os` mode the records of the segment being left reach the device before any
        // record of the next one can.
        if self.durability != Durability::Os {
            self.sync()?;
        }
        let path = segment_path(&self.dir, seq);
        let existed = path.exists();
        self.spare_due = true;
        // Renamed, the spare is the segment: same file, same mapping, its first pages present.
        let prepared = self.spare.take().filter(|_| !existed).and_then(|mut spare| {
            match spare.rename(&path) {
                Ok(()) => Some(spare),
                Err(error) => {
                    tracing::debug!(%error, "the journal's prepared segment could not be renamed; creating one");
                    None
                }
            }
        });
        let opened = prepared.map_or_else(
            || MappedFile::open_appendable(&path, self.segment_bytes, self.segment_bytes),
            Ok,
        );
        let mut file = match opened {
            Ok(file) => file,
            Err(error) => {
                // A segment this call created but could not give space to (a full disk) is
                // removed, so the next try starts clean; the append is refused, nothing lost.
                if !existed {
                    let _ = std::fs::remove_file(&path);
                }
                return Err(error.into());
            }
        };
        // The file exists already only if an earlier roll-over to it failed after creating it
        // (it then holds at most a header, or only zeros); no record is ever past the last
        // segment, so one holding anything else is someone else's.
        let bytes = file.as_slice();
        let untouched = bytes
            .get(..FIRST_RECORD + 4)
            .is_some_and(|head| head.iter().all(|&b| b == 0));
        let unused = untouched
            || record::read_file_header(bytes, &MAGIC, FORMAT_VERSION, KIND).is_ok()
                && record::read_u32(bytes, FIRST_RECORD) == Some(0);
        if !unused {
            return Err(corrupt(
                &path,
                0,
                "the next segment's file already exists and holds data".to_string(),
            ));
        }
        file.as_mut_slice()[..FILE_HEADER_BYTES]
            .copy_from_slice(&record::file_header(&MAGIC, FORMAT_VERSION));
        if self.durability != Durability::Os {
            self.device_writes.sync_range(&file, 0, FILE_HEADER_BYTES)?;
            self.device_writes.sync_dir(&self.dir)?;
        }
        file.wrote_to(FIRST_RECORD);
        tracing::debug!(path = %path.display(), seq, "input journal rolled over to a new segment");
        self.segment = Some(WriteSegment {
            file,
            tail: FIRST_RECORD,
        });
        (self.dirty_start, self.dirty_end) = (0, 0);
        Ok(())
    }

    /// The error for a payload no segment can hold.
    fn too_large(&self, payload_bytes: usize) -> JournalError {
        JournalError::TooLarge {
            payload_bytes,
            max_bytes: self.segment_bytes as usize - FIRST_RECORD - HEADER_BYTES,
        }
    }

    /// Widens the range of the current segment that the next sync must write back.
    fn mark_dirty(&mut self, start: usize, end: usize) {
        if self.dirty_start >= self.dirty_end {
            (self.dirty_start, self.dirty_end) = (start, end);
        } else {
            self.dirty_start = self.dirty_start.min(start);
            self.dirty_end = self.dirty_end.max(end);
        }
    }

    /// Writes back the part of the current segment changed since the last sync and waits.
    fn sync(&mut self) -> Result<(), JournalError> {
        if let Some(segment) = &self.segment
            && self.dirty_start < self.dirty_end
        {
            self.device_writes.sync_range(
                &segment.file,
                self.dirty_start,
                self.dirty_end - self.dirty_start,
            )?;
        }
        (self.dirty_start, self.dirty_end) = (0, 0);
        Ok(())
    }
}

/// A segment file found in the journal's directory.
#[derive(Clone, Debug)]
struct SegmentName {
    /// The seq its name gives, which its first record must carry.
    first_seq: u64,
    /// Where it is.
    path: PathBuf,
}

/// What a scan of the writer's last segment found.
struct Scan {
    /// Where the next record goes.
    tail: usize,
    /// Seq and time of the last valid record, if any.
    last: Option<(u64, Timestamp)>,
    /// Why the record at `tail` is invalid, when the segment ends in a torn record rather than a
    /// clean end.
    torn: Option<String>,
}

/// Scans a mapped segment to its end of data, checking every record and that they follow each
/// other. An invalid record followed by a valid one is damage, an error; one with nothing valid
/// after it is a torn tail, reported in [`Scan::torn`].
fn scan_segment(bytes: &[u8], path: &Path, first_seq: u64) -> Result<Scan, JournalError> {
    let header = record::read_file_header(bytes, &MAGIC, FORMAT_VERSION, KIND)
        .map_err(|reason| corrupt(path, 0, reason))?;
    if header == FileHeader::Blank {
        if let Some(found) = valid_record_after(bytes, FIRST_RECORD, first_seq) {
            return Err(corrupt(
                path,
                0,
                format!("blank segment header, but a valid record follows at byte {found}"),
            ));
        }
        return Ok(Scan {
            tail: FIRST_RECORD,
            last: None,
            torn: None,
        });
    }
    let mut at = FIRST_RECORD;
    let mut last: Option<(u64, Timestamp)> = None;
    loop {
        let expected = match last {
            None => first_seq,
            Some((seq, _)) => seq.saturating_add(1),
        };
        match record::read(bytes, at) {
            Ok(None) => {
                return Ok(Scan {
                    tail: at,
                    last,
                    torn: None,
                });
            }
            Ok(Some(found)) => {
                let time = Timestamp(found.stamp);
                check_follows(found.seq, time, expected, last.map(|(_, time)| time))
                    .map_err(|reason| corrupt(path, at as u64, reason))?;
                last = Some((found.seq, time));
                at = found.end;
            }
            Err(reason) => {
                // Records written after the invalid one would carry higher seqs.
                let seq_min = expected.saturating_add(1);
                if let Some(found) = valid_record_after(bytes, at + ALIGN_BYTES, seq_min) {
                    return Err(corrupt(
                        path,
                        at as u64,
                        format!(
                            "{reason}, but a valid record follows at byte {found}: damage, not a \
                             torn tail"
                        ),
                    ));
                }
                return Ok(Scan {
                    tail: at,
                    last,
                    torn: Some(reason),
                });
            }
        }
    }
}

/// Checks that a record with `seq` and `time` may follow: its seq is `expected` and its time is
/// not before the previous record's.
fn check_follows(
    seq: u64,
    time: Timestamp,
    expected: u64,
    previous_time: Option<Timestamp>,
) -> Result<(), String> {
    if seq != expected {
        return Err(format!("record has seq {seq} where {expected} belongs"));
    }
    if let Some(previous) = previous_time
        && time < previous
    {
        return Err(format!(
            "record seq {seq} has time {} ns, before the previous record's {} ns",
            time.0, previous.0
        ));
    }
    Ok(())
}

/// The offset of the first valid record at or after `from` (rounded up to the alignment) whose
/// seq is at least `seq_min`, if any: what tells damage (valid data follows) from a torn tail
/// (nothing does). Only candidates with a plausible seq have their checksum computed, so a scan
/// over zeros or garbage is a pass over memory.
fn valid_record_after(bytes: &[u8], from: usize, seq_min: u64) -> Option<usize> {
    // No segment holds more records than this many headers, so a later seq is implausible.
    let seq_max = seq_min.saturating_add((bytes.len() / HEADER_BYTES) as u64);
    let mut at = from.checked_next_multiple_of(ALIGN_BYTES)?;
    while at.checked_add(HEADER_BYTES)? <= bytes.len() {
        let plausible =
            record::read_u64(bytes, at + 8).is_some_and(|seq| (seq_min..=seq_max).contains(&seq));
        if plausible && matches!(record::read(bytes, at), Ok(Some(_))) {
            return Some(at);
        }
        at += ALIGN_BYTES;
    }
    None
}

/// Reads a journal from a seq on, with plain file I/O; see [`Journal::read_from`].
///
/// At the end of written data [`JournalReader::next`] returns `None`; called again later it
/// returns what was appended since, so one reader can replay a journal and then follow it.
#[derive(Debug)]
pub struct JournalReader {
    /// The journal's directory, listed again whenever the reader reaches the end of a segment.
    dir: PathBuf,
    /// Records before this seq are read (to check them and find the next) but not returned;
    /// 0 returns everything.
    from_seq: u64,
    /// The seq the next record read must carry: the segment's name for its first record.
    expected_seq: u64,
    /// Time of the last record read (zero before the first); the next may not be before it.
    last_time: Timestamp,
    /// The segment being read; `None` until the journal has one.
    segment: Option<ReadSegment>,
    /// Offset in the current segment of an invalid record already found to have nothing valid
    /// after it, so a reader waiting at a torn tail does not rescan the segment at every call.
    damage_checked_at: Option<u64>,
    /// Whether any record was read; until then the starting segment may still be replaced.
    read_any: bool,
    /// Holds the payloads of records read but not returned, so skipping allocates once.
    scratch: Vec<u8>,
}

/// A segment being read.
#[derive(Debug)]
struct ReadSegment {
    /// Its name and the seq of its first record.
    name: SegmentName,
    /// The open file, buffered so a replay costs a read syscall per buffer, not per record.
    file: BufReader<File>,
    /// Offset of the next record to read.
    offset: u64,
    /// The file position may be past `offset` (after a partial read at the end of data), so the
    /// next read seeks first, which also drops buffered bytes that may since have changed.
    reposition: bool,
    /// Whether the header was found valid; until then the segment is still being created.
    header_valid: bool,
    /// The file's length when last looked at, which bounds what a record's length may claim.
    /// Looked at again after every end of data, not per record.
    file_len: u64,
}

/// What reading at a segment's current offset found.
enum Step {
    /// A whole, valid record; its payload is in the buffer passed in.
    Record {
        /// Its seq.
        seq: u64,
        /// Its time.
        time: Timestamp,
        /// Where it starts in the segment, for error messages.
        offset: u64,
    },
    /// A clean end of data: a zero length, the end of the file, or a header not yet written.
    End,
    /// A record that is not valid (yet): torn, damaged, or being written right now.
    Invalid {
        /// Why it is not valid.
        reason: String,
    },
}

impl ReadSegment {
    /// Opens a segment for reading from its first record.
    fn open(name: SegmentName) -> Result<ReadSegment, JournalError> {
        let file = File::open(&name.path).map_err(|source| io_error(&name.path, "open", source))?;
        Ok(ReadSegment {
            name,
            file: BufReader::with_capacity(JOURNAL_READ_BUFFER_BYTES, file),
            offset: 0,
            reposition: true,
            header_valid: false,
            file_len: 0,
        })
    }

    /// Reads the record at the current offset, its payload into `payload`, and moves past it if
    /// it is valid. Anything short of a whole, valid record leaves the offset where it was, so
    /// the next call reads it again.
    fn step(&mut self, payload: &mut Vec<u8>) -> Result<Step, JournalError> {
        let path = &self.name.path;
        let io = |operation| move |source| io_error(path, operation, source);
        if self.reposition {
            self.file
                .seek(SeekFrom::Start(self.offset))
                .map_err(io("seek"))?;
            self.file_len = self.file.get_ref().metadata().map_err(io("stat"))?.len();
            self.reposition = false;
        }
        if !self.header_valid {
            let mut header = [0u8; FILE_HEADER_BYTES];
            let filled = read_up_to(&mut self.file, &mut header).map_err(io("read"))?;
            self.reposition = true;
            match record::read_file_header(&header[..filled], &MAGIC, FORMAT_VERSION, KIND) {
                Ok(FileHeader::Blank) => return Ok(Step::End),
                Ok(FileHeader::Valid) => {}
                Err(reason) => return Err(corrupt(path, 0, reason)),
            }
            self.header_valid = true;
            self.offset = FIRST_RECORD as u64;
            self.reposition = false;
        }
        let mut header = [0u8; HEADER_BYTES];
        let filled = read_up_to(&mut self.file, &mut header).map_err(io("read"))?;
        // Until the record proves whole, the next call starts over at `offset`.
        self.reposition = true;
        if filled < 4 || record::read_u32(&header, 0) == Some(0) {
            return Ok(Step::End);
        }
        if filled < HEADER_BYTES {
            return Ok(Step::Invalid {
                reason: "record header runs past the end of the file".to_string(),
            });
        }
        let header = record::Header::decode(&header);
        let payload_len = match header.payload_len() {
            Ok(len) => len,
            Err(reason) => return Ok(Step::Invalid { reason }),
        };
        // Bounds the allocation below by the file, whatever a damaged length says.
        let end = match record::end(self.offset as usize, payload_len) {
            Some(end) if end as u64 <= self.file_len => end as u64,
            _ => {
                return Ok(Step::Invalid {
                    reason: format!(
                        "record of {} bytes runs past the end of the file",
                        header.len
                    ),
                });
            }
        };
        payload.clear();
        payload.resize(payload_len, 0);
        let filled = read_up_to(&mut self.file, payload).map_err(io("read"))?;
        if filled < payload_len {
            return Ok(Step::Invalid {
                reason: "record runs past the end of the file".to_string(),
            });
        }
        if let Err(reason) = header.check(payload) {
            return Ok(Step::Invalid { reason });
        }
        let padding = end - self.offset - u64::from(header.len);
        self.file
            .seek_relative(padding as i64)
            .map_err(io("seek"))?;
        let offset = self.offset;
        self.offset = end;
        self.reposition = false;
        Ok(Step::Record {
            seq: header.seq,
            time: Timestamp(header.stamp),
            offset,
        })
    }

    /// Like [`ReadSegment::step`], but leaves the offset at a valid record too, so the next step
    /// reads it again.
    fn peek(&mut self, payload: &mut Vec<u8>) -> Result<Step, JournalError> {
        let step = self.step(payload)?;
        if let Step::Record { offset, .. } = step {
            self.offset = offset;
            self.reposition = true;
        }
        Ok(step)
    }

    /// Whether the file was removed since it was opened (the open handle still reads what it
    /// held). On Unix the link count tells even when a new file of the same name was created
    /// since; elsewhere only a missing name does.
    fn removed(&self) -> Result<bool, JournalError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let metadata = self
                .file
                .get_ref()
                .metadata()
                .map_err(|source| io_error(&self.name.path, "stat", source))?;
            Ok(metadata.nlink() == 0)
        }
        #[cfg(not(unix))]
        {
            Ok(!self.name.path.exists())
        }
    }

    /// Whether a valid record with seq at least `seq_min` lies after the invalid one at the
    /// current offset: damage rather than a torn tail. Reads the rest of the segment, which only
    /// happens once per invalid record.
    fn valid_data_after(&mut self, seq_min: u64) -> Result<Option<u64>, JournalError> {
        let path = &self.name.path;
        let io = |operation| move |source| io_error(path, operation, source);
        self.reposition = true;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(self.offset))
            .map_err(io("seek"))?;
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).map_err(io("read"))?;
        // `offset` is aligned, so aligned offsets in `rest` are aligned in the file.
        Ok(valid_record_after(&rest, ALIGN_BYTES, seq_min).map(|found| self.offset + found as u64))
    }
}

impl JournalReader {
    /// The next record, `Ok(None)` at the end of written data (a later call may return more), or
    /// an error for damage: a bad record or header, a gap or a step back in seq or time. A torn
    /// record at the end of the last segment is the end of data, as it is for the writer, which
    /// cuts it when it reopens; an invalid record with a valid one after it is damage.
    #[allow(
        clippy::should_implement_trait,
        reason = "not an Iterator: an error must not read as an item, and the end of data on a \
                  live journal is not final, as an iterator's `None` conventionally is"
    )]
    pub fn next(&mut self) -> Result<Option<JournalEntry>, JournalError> {
        loop {
            if self.segment.is_none() && !self.position()? {
                return Ok(None);
            }
            let segment = self
                .segment
                .as_mut()
                .expect("position() leaves a segment when it returns true");
            let retry = match segment.step(&mut self.scratch)? {
                Step::Record { seq, time, offset } => {
                    if let Err(reason) =
                        check_follows(seq, time, self.expected_seq, Some(self.last_time))
                    {
                        // Stays at the record, so asking again gives the same error rather than
                        // what follows it.
                        segment.offset = offset;
                        segment.reposition = true;
                        return Err(corrupt(&segment.name.path, offset, reason));
                    }
                    self.expected_seq = seq.saturating_add(1);
                    self.last_time = time;
                    self.read_any = true;
                    self.damage_checked_at = None;
                    if seq < self.from_seq {
                        continue;
                    }
                    return Ok(Some(JournalEntry {
                        seq,
                        time,
                        payload: std::mem::take(&mut self.scratch),
                    }));
                }
                Step::End => self.advance(None)?,
                Step::Invalid { reason } => self.advance(Some(reason))?,
            };
            if !retry {
                return Ok(None);
            }
        }
    }

    /// Picks the segment to start from. `Ok(false)` while the journal has no segment.
    fn position(&mut self) -> Result<bool, JournalError> {
        let segments = list_segments(&self.dir)?;
        let Some(first) = segments.first() else {
            return Ok(false);
        };
        let start = if self.from_seq == 0 {
            first
        } else {
            // The last segment starting at or before `from_seq` holds it, if anything does.
            let after = segments.partition_point(|segment| segment.first_seq <= self.from_seq);
            match after.checked_sub(1) {
                Some(index) => &segments[index],
                None => {
                    return Err(JournalError::NotHeld {
                        path: self.dir.display().to_string(),
                        from_seq: self.from_seq,
                        first_seq: first.first_seq,
                    });
                }
            }
        };
        self.expected_seq = start.first_seq;
        self.last_time = Timestamp::ZERO;
        self.damage_checked_at = None;
        self.segment = Some(ReadSegment::open(start.clone())?);
        Ok(true)
    }

    /// At the end of the current segment's data, or at an invalid record (`invalid` says why):
    /// moves on to the next segment once its first record is there, and says whether to read
    /// again now. `Ok(false)` is the end of data for now.
    fn advance(&mut self, mut invalid: Option<String>) -> Result<bool, JournalError> {
        let segment = self
            .segment
            .as_mut()
            .expect("advance() is only called with a current segment");
        if !self.read_any && segment.removed()? {
            // The writer's recovery removes a last segment without records (a roll-over's
            // leftover) and may later create one of the same name: pick again from the listing.
            self.segment = None;
            return Ok(true);
        }
        // The listing comes first: the writer creates the next segment only after its last write
        // to this one, so if the listing shows it, reading this one again sees all it will hold.
        let current_seq = segment.name.first_seq;
        let next = list_segments(&self.dir)?
            .into_iter()
            .find(|candidate| candidate.first_seq > current_seq);
        if next.is_some() {
            match segment.peek(&mut self.scratch)? {
                // Appended since the first attempt: read it now.
                Step::Record { .. } => return Ok(true),
                Step::End => invalid = None,
                Step::Invalid { reason } => invalid = Some(reason),
            }
        }
        // The next segment counts once its first record is there: until then it may be a
        // roll-over in progress, or the leftover of one that the writer's recovery removes, after
        // which the writer goes on appending to this segment.
        let next_ready = match next {
            None => None,
            Some(next) => {
                let mut candidate = ReadSegment::open(next)?;
                match candidate.peek(&mut self.scratch)? {
                    Step::End | Step::Invalid { .. } => None,
                    Step::Record { seq, .. } => {
                        if candidate.name.first_seq != self.expected_seq || seq != self.expected_seq
                        {
                            return Err(corrupt(
                                &candidate.name.path,
                                FIRST_RECORD as u64,
                                format!(
                                    "segment named for seq {} starts with seq {seq}, but the \
                                     previous one ends before seq {}",
                                    candidate.name.first_seq, self.expected_seq
                                ),
                            ));
                        }
                        Some(candidate)
                    }
                }
            }
        };
        let segment = self
            .segment
            .as_mut()
            .expect("advance() is only called with a current segment");
        match (invalid, next_ready) {
            (None, Some(next)) => {
                self.segment = Some(next);
                self.damage_checked_at = None;
                Ok(true)
            }
            (None, None) => Ok(false),
            (Some(reason), Some(_)) => Err(corrupt(
                &segment.name.path,
                segment.offset,
                format!("{reason}, in a segment that is not the last"),
            )),
            (Some(_), None) if self.damage_checked_at == Some(segment.offset) => Ok(false),
            (Some(reason), None) => {
                // On a live journal the record may have been caught mid-write (a read copies
                // bytes in no guaranteed order); a second look is cheap and usually settles it.
                if let Step::Record { .. } = segment.peek(&mut self.scratch)? {
                    return Ok(true);
                }
                // Records after the invalid one would carry higher seqs.
                match segment.valid_data_after(self.expected_seq.saturating_add(1))? {
                    None => {
                        self.damage_checked_at = Some(segment.offset);
                        Ok(false)
                    }
                    Some(found) => match segment.peek(&mut self.scratch)? {
                        // Valid now: it was being written while it was first read.
                        Step::Record { .. } => Ok(true),
                        Step::End | Step::Invalid { .. } => Err(corrupt(
                            &segment.name.path,
                            segment.offset,
                            format!(
                                "{reason}, but a valid record follows at byte {found}: damage, \
                                 not a torn tail"
                            ),
                        )),
                    },
                }
            }
        }
    }
}

/// Reads into `buf` until it is full or the file ends, and says how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Opens and locks the directory's lock file; [`JournalError::Locked`] if another writer has it.
fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| io_error(&path, "open", source))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: path.display().to_string(),
        }),
        Err(TryLockError::Error(source)) => Err(io_error(&path, "lock", source)),
    }
}

/// The segment files in `dir`, in seq order. A `.journal` file whose name is not a seq is an
/// error rather than ignored: it can only be a damaged or misplaced segment.
fn list_segments(dir: &Path) -> Result<Vec<SegmentName>, JournalError> {
    let entries = fs::read_dir(dir).map_err(|source| io_error(dir, "read_dir", source))?;
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| io_error(dir, "read_dir", source))?
            .path();
        if path.extension() != Some(OsStr::new(SEGMENT_EXTENSION)) {
            continue;
        }
        let first_seq = segment_seq(&path).ok_or_else(|| {
            corrupt(
                &path,
                0,
                format!(
                    "a segment's name must be its first input seq (at least 1) in \
                     {SEGMENT_NAME_DIGITS} digits"
                ),
            )
        })?;
        segments.push(SegmentName { first_seq, path });
    }
    segments.sort_unstable_by_key(|segment| segment.first_seq);
    Ok(segments)
}

/// The seq a segment file's name gives, if it is one.
fn segment_seq(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().filter(|&seq| seq >= 1)
}

/// Where the segment whose first record is `seq` lives.
fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!(
        "{seq:0width$}.{SEGMENT_EXTENSION}",
        width = SEGMENT_NAME_DIGITS
    ))
}

/// Where the journal in `dir` keeps the blob with SHA-256 `sha256` (a state transfer's snapshot,
/// too large for a record): a file named by its content beside the segments, so that a record
/// can name it by hash and a reader can check it is the one named.
pub fn blob_path(dir: &Path, sha256: &[u8; 32]) -> PathBuf {
    let hex: String = sha256.iter().map(|byte| format!("{byte:02x}")).collect();
    dir.join(format!("{hex}.{BLOB_EXTENSION}"))
}

/// Extension of a blob file; not the segments' one, so segment listing skips it.
const BLOB_EXTENSION: &str = "blob";

/// Stores `bytes` as the blob `sha256` in `dir`, durably before it returns: written to a
/// temporary name, synced, renamed, and the directory synced, so a crash leaves either no blob
/// or the whole one, and a record naming it is appended only after.
pub fn store_blob(dir: &Path, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), JournalError> {
    let path = blob_path(dir, sha256);
    if path.exists() {
        return Ok(());
    }
    let temporary = path.with_extension("blob.tmp");
    let mut file =
        File::create(&temporary).map_err(|source| io_error(&temporary, "create", source))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&temporary, "write", source))?;
    fs::rename(&temporary, &path).map_err(|source| io_error(&path, "rename", source))?;
    sync_dir(dir)
}

/// Reads the blob `sha256` from `dir`, refusing one whose content does not hash to its name.
pub fn load_blob(dir: &Path, sha256: &[u8; 32]) -> Result<Vec<u8>, JournalError> {
    use sha2::Digest as _;
    let path = blob_path(dir, sha256);
    let bytes = fs::read(&path).map_err(|source| io_error(&path, "read", source))?;
    if sha2::Sha256::digest(&bytes).as_slice() != sha256 {
        return Err(corrupt(
            &path,
            0,
            "content does not hash to the file's name".into(),
        ));
    }
    Ok(bytes)
}

/// Makes a created or removed directory entry survive a power loss.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| io_error(dir, "fsync", source))
}

/// Names the file and the step in an I/O failure.
fn io_error(path: &Path, operation: &'static str, source: io::Error) -> JournalError {
    JournalError::Io {
        path: path.display().to_string(),
        operation,
        source,
    }
}

/// A [`JournalError::Corrupt`] at `offset` of `path`.
fn corrupt(path: &Path, offset: u64, reason: String) -> JournalError {
    JournalError::Corrupt {
        path: path.display().to_string(),
        offset,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small segments, so a few hundred records span several.
    const SMALL: u64 = JOURNAL_SEGMENT_BYTES_MIN;
    const DURABILITIES: [Durability; 3] = [Durability::Os, Durability::Batch, Durability::Message];

    /// The payload appended under `seq`: its bytes and length follow from `seq`, so any mix-up
    /// shows. Lengths run from 0 to 299.
    fn payload(seq: u64) -> Vec<u8> {
        let len = (seq as usize * 37) % 300;
        (0..len)
            .map(|i| (seq as usize).wrapping_mul(7).wrapping_add(i) as u8)
            .collect()
    }

    /// The time appended with `seq`: rising, with repeats, as a real clock read gives.
    fn time(seq: u64) -> Timestamp {
        Timestamp(1_700_000_000_000_000_000 + seq / 2 * 1_000)
    }

    fn entry(seq: u64) -> JournalEntry {
        JournalEntry {
            seq,
            time: time(seq),
            payload: payload(seq),
        }
    }

    fn config(segment_bytes: u64, durability: Durability) -> JournalConfig {
        JournalConfig {
            segment_bytes,
            durability,
        }
    }

    fn open(dir: &Path, segment_bytes: u64) -> Journal {
        Journal::open(dir, config(segment_bytes, Durability::Os)).unwrap()
    }

    /// Waits (generously: the machine may be busy) until the current segment's pages are
    /// present to `to`.
    fn wait_populated(journal: &Journal, to: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let populated = journal
                .segment
                .as_ref()
                .map_or(0, |s| s.file.populated_to());
            if populated >= to {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the segment's pages ahead of the writer never became present ({populated} of {to})"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The inode of `path`, to tell a renamed file from a new one.
    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    /// Every segment, the first included, is the file prepared ahead of it: renamed at the
    /// roll-over, with the pages of its first window already present, so neither creating the
    /// file nor its first page faults fall on the append that starts it. The next one is
    /// prepared once the current segment is half full, and reads never see it.
    #[test]
    fn each_segment_is_the_file_prepared_before_it_was_needed() {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes = 4 * crate::constants::MAPPED_AHEAD_BYTES as u64;
        let spare = dir.path().join(SPARE_FILE_NAME);
        let mut journal = open(dir.path(), segment_bytes);
        let prepared = inode(&spare);
        let window = FIRST_RECORD + crate::constants::MAPPED_AHEAD_BYTES / 2;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while journal.spare.as_ref().unwrap().populated_to() < window {
            assert!(
                std::time::Instant::now() < deadline,
                "the prepared segment never became present"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        append_all(&mut journal, 1..=1);
        let first = segment_path(dir.path(), 1);
        assert_eq!(
            inode(&first),
            prepared,
            "the first segment is the prepared file"
        );
        assert!(
            !spare.exists(),
            "the next one waits until this one is half full"
        );
        assert!(
            journal.segment.as_ref().unwrap().file.populated_to() >= window,
            "its first pages were present before the append"
        );

        let mut seq = 1;
        while !spare.exists() {
            seq += 1;
            append_all(&mut journal, seq..=seq);
        }
        let half = journal.segment.as_ref().unwrap().tail;
        assert!(
            half >= segment_bytes as usize / 2,
            "prepared at half full, not before ({half})"
        );
        let prepared = inode(&spare);
        while journal.segment.as_ref().unwrap().file.path() == first {
            seq += 1;
            append_all(&mut journal, seq..=seq);
        }
        assert_eq!(
            inode(&segment_path(dir.path(), seq)),
            prepared,
            "a roll-over renames it"
        );
        let read: Vec<u64> = read_all(dir.path(), 1)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            read,
            (1..=seq).collect::<Vec<_>>(),
            "reads see every record and no spare"
        );
    }

    #[test]
    fn the_pages_ahead_of_the_last_record_are_made_present() {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes = 4 * crate::constants::MAPPED_AHEAD_BYTES as u64;
        let mut journal = open(dir.path(), segment_bytes);
        append_all(&mut journal, 1..=10);
        let tail = journal.segment.as_ref().unwrap().tail;
        // At least half a window ahead: a new one is asked for when the writer is half way.
        wait_populated(&journal, tail + crate::constants::MAPPED_AHEAD_BYTES / 2);
        // After a restart too: the window starts at the recovered tail.
        drop(journal);
        let journal = open(dir.path(), segment_bytes);
        assert_eq!(journal.segment.as_ref().unwrap().tail, tail);
        wait_populated(&journal, tail + crate::constants::MAPPED_AHEAD_BYTES / 2);
    }

    fn append_all(journal: &mut Journal, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            journal.append(seq, time(seq), &payload(seq)).unwrap();
        }
    }

    /// Everything a reader from `from_seq` returns until the end of data.
    fn read_all(dir: &Path, from_seq: u64) -> Result<Vec<JournalEntry>, JournalError> {
        let mut reader = Journal::read_from(dir, from_seq)?;
        let mut entries = Vec::new();
        while let Some(entry) = reader.next()? {
            entries.push(entry);
        }
        Ok(entries)
    }

    fn entries(seqs: std::ops::RangeInclusive<u64>) -> Vec<JournalEntry> {
        seqs.map(entry).collect()
    }

    /// The segment files, in order.
    fn segments(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|segment| segment.path)
            .collect()
    }

    /// Seq and byte offset of every record in a segment file.
    fn records(path: &Path) -> Vec<(u64, usize)> {
        let bytes = fs::read(path).unwrap();
        let mut at = FIRST_RECORD;
        let mut found = Vec::new();
        while let Some(record) = record::read(&bytes, at).unwrap() {
            found.push((record.seq, at));
            at = record.end;
        }
        found
    }

    /// Reads a file, lets `change` edit it, writes it back: what a crash or a bad disk could
    /// have left.
    fn edit_file(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = fs::read(path).unwrap();
        change(&mut bytes);
        fs::write(path, bytes).unwrap();
    }

    /// A source that hands out its bytes at most three at a time, with an interruption before
    /// every read that gets data, and then either ends or fails with `fail_with`.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        interrupt_next: bool,
        fail_with: Option<io::ErrorKind>,
    }

    impl Trickle {
        fn new(bytes: Vec<u8>, fail_with: Option<io::ErrorKind>) -> Trickle {
            Trickle {
                bytes,
                at: 0,
                interrupt_next: true,
                fail_with,
            }
        }
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.interrupt_next {
                self.interrupt_next = false;
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.interrupt_next = true;
            if self.at == self.bytes.len() {
                return match self.fail_with {
                    Some(kind) => Err(kind.into()),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(3).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn read_up_to_fills_across_short_and_interrupted_reads_and_returns_other_errors() {
        // More than the buffer: exactly the buffer, and nothing past it is taken.
        let mut source = Trickle::new((1..=20).collect(), None);
        let mut buf = [0u8; 10];
        assert_eq!(read_up_to(&mut source, &mut buf).unwrap(), 10);
        assert_eq!(buf.to_vec(), (1..=10).collect::<Vec<u8>>());
        assert_eq!(source.at, 10);
        // Less than the buffer: what there is, then the end of the file.
        let mut source = Trickle::new(vec![7; 5], None);
        let mut buf = [0u8; 10];
        assert_eq!(read_up_to(&mut source, &mut buf).unwrap(), 5);
        assert_eq!(buf, [7, 7, 7, 7, 7, 0, 0, 0, 0, 0]);
        // Any error but an interruption is the caller's to report.
        let mut source = Trickle::new(vec![7; 5], Some(io::ErrorKind::PermissionDenied));
        let error = read_up_to(&mut source, &mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_reader_waiting_at_a_torn_tail_reads_on_once_the_writer_cut_it_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        append_all(&mut open(dir, SMALL), 1..=40);
        let last = segments(dir).pop().unwrap();
        let (seq, at) = *records(&last).last().unwrap();
        assert_eq!(seq, 40);
        edit_file(&last, |bytes| bytes[at + HEADER_BYTES + 3] ^= 0x40);
        let mut reader = Journal::read_from(dir, 1).unwrap();
        for want in 1..=39 {
            assert_eq!(reader.next().unwrap(), Some(entry(want)));
        }
        // The torn record is the end of data, as often as it is asked.
        assert_eq!(reader.next().unwrap(), None);
        assert_eq!(reader.next().unwrap(), None);
        {
            let mut journal = open(dir, SMALL);
            assert_eq!(journal.last_seq(), 39);
            journal.append(40, time(40), b"forty again").unwrap();
            append_all(&mut journal, 41..=45);
        }
        let mut want = entries(40..=45);
        want[0].payload = b"forty again".to_vec();
        let mut read = Vec::new();
        while let Some(entry) = reader.next().unwrap() {
            read.push(entry);
        }
        assert_eq!(read, want);
    }

    #[test]
    fn a_record_in_the_middle_of_a_segment_says_where_the_next_one_starts() {
        // Payloads of every length modulo the alignment, so each padding is exercised, read in
        // one pass and from each seq on.
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, JOURNAL_SEGMENT_BYTES_DEFAULT);
        for seq in 1..=(2 * ALIGN_BYTES as u64) {
            journal
                .append(seq, time(seq), &vec![seq as u8; seq as usize])
                .unwrap();
        }
        drop(journal);
        for from in [0, 1, 2, 7, 9, 16] {
            let read: Vec<(u64, usize)> = read_all(dir, from)
                .unwrap()
                .into_iter()
                .map(|entry| (entry.seq, entry.payload.len()))
                .collect();
            let first = from.max(1);
            let want: Vec<(u64, usize)> = (first..=2 * ALIGN_BYTES as u64)
                .map(|seq| (seq, seq as usize))
                .collect();
            assert_eq!(read, want, "from {from}");
        }
    }

    #[test]
    fn appends_read_back_across_reopen() {
        for durability in DURABILITIES {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            let config = config(JOURNAL_SEGMENT_BYTES_DEFAULT, durability);
            {
                let mut journal = Journal::open(dir, config).unwrap();
                assert_eq!((journal.first_seq(), journal.last_seq()), (0, 0));
                append_all(&mut journal, 1..=50);
                journal.flush().unwrap();
            }
            {
                let mut journal = Journal::open(dir, config).unwrap();
                assert_eq!((journal.first_seq(), journal.last_seq()), (1, 50));
                append_all(&mut journal, 51..=60);
                journal.flush().unwrap();
            }
            assert_eq!(read_all(dir, 1).unwrap(), entries(1..=60), "{durability:?}");
            assert_eq!(read_all(dir, 0).unwrap(), entries(1..=60));
            let journal = Journal::open(dir, config).unwrap();
            assert_eq!((journal.first_seq(), journal.last_seq()), (1, 60));
        }
    }

    #[test]
    fn rolls_over_small_segments_and_reads_from_the_middle_of_one() {
        for durability in DURABILITIES {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            let mut journal = Journal::open(dir, config(SMALL, durability)).unwrap();
            append_all(&mut journal, 1..=200);
            journal.flush().unwrap();
            let files = segments(dir);
            assert!(files.len() >= 5, "{} segments", files.len());
            for file in &files {
                let first = records(file)[0].0;
                assert_eq!(segment_seq(file), Some(first), "{}", file.display());
                assert_eq!(fs::metadata(file).unwrap().len(), SMALL);
            }
            // The third record of the third segment, and every segment's first and last.
            let third = records(&files[2]);
            let mut starts = vec![third[2].0];
            for file in &files {
                let held = records(file);
                starts.extend([held[0].0, held[held.len() - 1].0]);
            }
            for from in starts {
                assert_eq!(
                    read_all(dir, from).unwrap(),
                    entries(from..=200),
                    "from {from}"
                );
            }
            drop(journal);
            let mut journal = open(dir, SMALL);
            assert_eq!((journal.first_seq(), journal.last_seq()), (1, 200));
            append_all(&mut journal, 201..=210);
            assert_eq!(read_all(dir, 150).unwrap(), entries(150..=210));
        }
    }

    #[test]
    fn torn_tail_is_cut_on_open_and_appending_continues() {
        /// Damages the record at the given offset of the last segment's bytes.
        type Tear = fn(&mut Vec<u8>, usize);
        let tears: [(&str, Tear); 4] = [
            ("file ends mid-record", |bytes, at| bytes.truncate(at + 30)),
            ("file ends mid-header", |bytes, at| bytes.truncate(at + 6)),
            ("byte flipped in the payload", |bytes, at| {
                bytes[at + HEADER_BYTES + 3] ^= 0x40
            }),
            ("length runs past the file", |bytes, at| {
                bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes())
            }),
        ];
        for segment_bytes in [JOURNAL_SEGMENT_BYTES_DEFAULT, SMALL] {
            for (name, tear) in tears {
                let dir = tempfile::tempdir().unwrap();
                let dir = dir.path();
                append_all(&mut open(dir, segment_bytes), 1..=40);
                let last = segments(dir).pop().unwrap();
                let (seq, at) = *records(&last).last().unwrap();
                assert_eq!(seq, 40);
                edit_file(&last, |bytes| tear(bytes, at));
                // A reader takes the torn tail as the end of data, not as damage.
                assert_eq!(read_all(dir, 1).unwrap(), entries(1..=39), "{name}");
                {
                    let mut journal = open(dir, segment_bytes);
                    assert_eq!(journal.last_seq(), 39, "{name}");
                    journal.append(40, time(40), b"forty again").unwrap();
                    append_all(&mut journal, 41..=45);
                }
                let mut want = entries(1..=45);
                want[39].payload = b"forty again".to_vec();
                assert_eq!(read_all(dir, 1).unwrap(), want, "{name}");
                assert_eq!(open(dir, segment_bytes).last_seq(), 45);
            }
        }
    }

    #[test]
    fn damaged_record_followed_by_valid_ones_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        append_all(&mut open(dir, JOURNAL_SEGMENT_BYTES_DEFAULT), 1..=20);
        let segment = segments(dir).pop().unwrap();
        let at = records(&segment)[9].1;
        edit_file(&segment, |bytes| bytes[at + 9] ^= 1);
        let error = Journal::open(dir, JournalConfig::default()).unwrap_err();
        assert!(
            matches!(&error, JournalError::Corrupt { offset, .. } if *offset == at as u64),
            "{error}"
        );
        // A reader returns what comes before the damage, then reports it.
        let mut reader = Journal::read_from(dir, 1).unwrap();
        for seq in 1..=9 {
            assert_eq!(reader.next().unwrap(), Some(entry(seq)));
        }
        let error = reader.next().unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
        // A damaged length hides where the next record is; the scan still finds it.
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        append_all(&mut open(dir, JOURNAL_SEGMENT_BYTES_DEFAULT), 1..=20);
        let segment = segments(dir).pop().unwrap();
        let at = records(&segment)[9].1;
        edit_file(&segment, |bytes| {
            bytes[at..at + 4].copy_from_slice(&7u32.to_le_bytes())
        });
        assert!(matches!(
            Journal::open(dir, JournalConfig::default()),
            Err(JournalError::Corrupt { .. })
        ));
        assert!(matches!(
            read_all(dir, 1),
            Err(JournalError::Corrupt { .. })
        ));
    }

    #[test]
    fn damage_in_an_earlier_segment_is_reported_by_a_reader() {
        /// Damages the record at the given offset of a segment's bytes.
        type Tear = fn(&mut Vec<u8>, usize);
        let tears: [(&str, Tear); 2] = [
            ("byte flipped", |bytes, at| bytes[at + HEADER_BYTES] ^= 1),
            ("length zeroed", |bytes, at| bytes[at..at + 4].fill(0)),
        ];
        for (name, tear) in tears {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            append_all(&mut open(dir, SMALL), 1..=100);
            let first = &segments(dir)[0];
            let (seq, at) = *records(first).last().unwrap();
            edit_file(first, |bytes| tear(bytes, at));
            // The writer only scans the last segment, so it opens; a reader finds the damage.
            assert_eq!(open(dir, SMALL).last_seq(), 100);
            let mut reader = Journal::read_from(dir, 1).unwrap();
            for want in 1..seq {
                assert_eq!(reader.next().unwrap().map(|entry| entry.seq), Some(want));
            }
            let error = reader.next().unwrap_err();
            assert!(
                matches!(error, JournalError::Corrupt { .. }),
                "{name}: {error}"
            );
            // Reading from after the damage works.
            assert_eq!(read_all(dir, seq + 1).unwrap(), entries(seq + 1..=100));
        }
    }

    #[test]
    fn missing_segment_is_a_gap_a_reader_reports() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        append_all(&mut open(dir, SMALL), 1..=100);
        let files = segments(dir);
        fs::remove_file(&files[1]).unwrap();
        let error = read_all(dir, 1).unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn out_of_order_seq_and_backward_time_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, SMALL);
        let t = Timestamp::from_secs(1_000);
        assert!(matches!(
            journal.append(0, t, b"zero"),
            Err(JournalError::OutOfOrder {
                seq: 0,
                expected: 1
            })
        ));
        // A journal can start after a snapshot.
        journal.append(5, t, b"five").unwrap();
        assert_eq!((journal.first_seq(), journal.last_seq()), (5, 5));
        for seq in [4, 5, 7] {
            assert!(matches!(
                journal.append(seq, t, b"x"),
                Err(JournalError::OutOfOrder { expected: 6, .. })
            ));
        }
        let before = Timestamp(t.0 - 1);
        assert!(matches!(
            journal.append(6, before, b"six"),
            Err(JournalError::TimeWentBack { seq: 6, time, last }) if time == before && last == t
        ));
        // The same time again is fine: two messages can arrive in one clock tick.
        journal.append(6, t, b"six").unwrap();
        drop(journal);
        let mut journal = open(dir, SMALL);
        assert_eq!((journal.first_seq(), journal.last_seq()), (5, 6));
        assert!(matches!(
            journal.append(7, before, b"seven"),
            Err(JournalError::TimeWentBack { .. })
        ));
        let read: Vec<_> = read_all(dir, 0)
            .unwrap()
            .into_iter()
            .map(|entry| (entry.seq, entry.payload))
            .collect();
        assert_eq!(read, [(5, b"five".to_vec()), (6, b"six".to_vec())]);
    }

    #[test]
    fn last_representable_seq_ends_the_journal_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open(dir.path(), SMALL);
        journal.append(u64::MAX, Timestamp::ZERO, b"last").unwrap();
        assert!(matches!(
            journal.append(u64::MAX, Timestamp::ZERO, b"again"),
            Err(JournalError::SeqExhausted { .. })
        ));
        drop(journal);
        assert_eq!(open(dir.path(), SMALL).last_seq(), u64::MAX);
        assert_eq!(read_all(dir.path(), u64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        for appended in [false, true] {
            let mut first = open(dir, SMALL);
            if appended {
                append_all(&mut first, 1..=3);
            }
            let second = Journal::open(dir, JournalConfig::default());
            assert!(
                matches!(second, Err(JournalError::Locked { .. })),
                "{second:?}"
            );
            // Readers take no lock.
            assert_eq!(
                read_all(dir, 0).unwrap().len(),
                if appended { 3 } else { 0 }
            );
            drop(first);
        }
        assert_eq!(open(dir, SMALL).last_seq(), 3);
    }

    #[test]
    fn reader_on_an_empty_or_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let error = Journal::read_from(&missing, 1).unwrap_err();
        assert!(
            matches!(&error, JournalError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{error}"
        );
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        fs::write(empty.join("notes.txt"), b"not a segment").unwrap();
        let mut reader = Journal::read_from(&empty, 1).unwrap();
        assert_eq!(reader.next().unwrap(), None);
        // The same reader sees what a writer appends later.
        let mut journal = open(&empty, SMALL);
        assert_eq!(reader.next().unwrap(), None);
        append_all(&mut journal, 1..=2);
        assert_eq!(reader.next().unwrap(), Some(entry(1)));
        assert_eq!(reader.next().unwrap(), Some(entry(2)));
        assert_eq!(reader.next().unwrap(), None);
    }

    #[test]
    fn read_from_before_the_first_or_after_the_last_seq() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, SMALL);
        append_all(&mut journal, 10..=60);
        for from in [1, 9] {
            let error = Journal::read_from(dir, from).unwrap_err();
            assert!(
                matches!(error, JournalError::NotHeld { from_seq, first_seq: 10, .. } if from_seq == from),
                "{error}"
            );
        }
        assert_eq!(read_all(dir, 0).unwrap(), entries(10..=60));
        assert_eq!(read_all(dir, 10).unwrap(), entries(10..=60));
        let mut next = Journal::read_from(dir, 61).unwrap();
        let mut later = Journal::read_from(dir, 70).unwrap();
        assert_eq!(next.next().unwrap(), None);
        assert_eq!(later.next().unwrap(), None);
        append_all(&mut journal, 61..=80);
        assert_eq!(next.next().unwrap(), Some(entry(61)));
        for seq in 70..=80 {
            assert_eq!(later.next().unwrap(), Some(entry(seq)));
        }
        assert_eq!(later.next().unwrap(), None);
    }

    #[test]
    fn reader_follows_a_live_journal_across_roll_overs() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut reader = Journal::read_from(dir, 0).unwrap();
        let mut journal = open(dir, SMALL);
        let mut read = 0;
        for seq in 1..=300 {
            journal.append(seq, time(seq), &payload(seq)).unwrap();
            if seq % 7 == 0 {
                while let Some(entry) = reader.next().unwrap() {
                    read += 1;
                    assert_eq!(entry, super::tests::entry(read));
                }
                assert_eq!(read, seq);
            }
        }
        assert!(segments(dir).len() > 5);
    }

    #[test]
    fn payload_larger_than_a_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, SMALL);
        let max = SMALL as usize - FIRST_RECORD - HEADER_BYTES;
        let error = journal
            .append(1, Timestamp::ZERO, &vec![1; max + 1])
            .unwrap_err();
        assert!(
            matches!(error, JournalError::TooLarge { payload_bytes, max_bytes } if payload_bytes == max + 1 && max_bytes == max),
            "{error}"
        );
        assert!(segments(dir).is_empty());
        journal.append(1, Timestamp::ZERO, &vec![1; max]).unwrap();
        journal.append(2, Timestamp::ZERO, b"").unwrap();
        assert_eq!(segments(dir).len(), 2);
        drop(journal);
        let read = read_all(dir, 1).unwrap();
        assert_eq!(read[0].payload.len(), max);
        assert_eq!(read[1].payload, b"");
    }

    #[test]
    fn segment_size_is_brought_within_bounds() {
        let tiny = config(10, Durability::Os).normalized();
        assert_eq!(tiny.segment_bytes, JOURNAL_SEGMENT_BYTES_MIN);
        let huge = config(u64::MAX, Durability::Os).normalized();
        assert_eq!(huge.segment_bytes, JOURNAL_SEGMENT_BYTES_MAX);
        assert_eq!(
            config(5_001, Durability::Os).normalized().segment_bytes,
            5_000
        );
    }

    #[test]
    fn segment_left_empty_by_a_crash_in_a_roll_over_is_removed() {
        let header = record::file_header(&MAGIC, FORMAT_VERSION).to_vec();
        for leftover in [Vec::new(), vec![0; 100], header] {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            append_all(&mut open(dir, SMALL), 1..=100);
            let next = segment_path(dir, 101);
            fs::write(&next, &leftover).unwrap();
            // Readers wait at it rather than calling it damage.
            assert_eq!(read_all(dir, 1).unwrap(), entries(1..=100));
            let mut journal = open(dir, SMALL);
            assert!(!next.exists());
            assert_eq!(journal.last_seq(), 100);
            append_all(&mut journal, 101..=200);
            assert_eq!(read_all(dir, 1).unwrap(), entries(1..=200));
        }
        // A journal whose only segment is such a leftover is empty, and may start anywhere.
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fs::write(segment_path(dir, 500), b"").unwrap();
        let mut journal = open(dir, SMALL);
        assert_eq!((journal.first_seq(), journal.last_seq()), (0, 0));
        append_all(&mut journal, 700..=701);
        assert_eq!(read_all(dir, 0).unwrap(), entries(700..=701));
    }

    #[test]
    fn roll_over_reuses_an_unused_segment_file_and_refuses_one_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, SMALL);
        append_all(&mut journal, 1..=3);
        // As if a roll-over to 4 created its file and then failed before the append.
        fs::write(
            segment_path(dir, 4),
            record::file_header(&MAGIC, FORMAT_VERSION),
        )
        .unwrap();
        journal.append(4, time(4), &vec![4; 4000]).unwrap();
        journal.append(5, time(5), &vec![5; 4000]).unwrap();
        let mut foreign = vec![0; 64];
        foreign[..FILE_HEADER_BYTES].copy_from_slice(&record::file_header(&MAGIC, FORMAT_VERSION));
        record::write(&mut foreign, FIRST_RECORD, 6, 0, b"not ours");
        fs::write(segment_path(dir, 6), foreign).unwrap();
        let error = journal.append(6, time(6), &vec![6; 4000]).unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
        assert_eq!(journal.last_seq(), 5);
    }

    #[test]
    fn reader_waiting_at_a_leftover_segment_picks_up_its_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fs::write(segment_path(dir, 500), b"").unwrap();
        let mut reader = Journal::read_from(dir, 0).unwrap();
        assert_eq!(reader.next().unwrap(), None);
        let mut journal = open(dir, SMALL);
        append_all(&mut journal, 700..=701);
        assert_eq!(reader.next().unwrap(), Some(entry(700)));
    }

    #[test]
    fn files_that_are_not_a_journal_are_refused() {
        /// Replaces the segment's records with valid ones of these seqs and times.
        fn rewrite(bytes: &mut [u8], records: &[(u64, u64)]) {
            bytes.fill(0);
            bytes[..FILE_HEADER_BYTES]
                .copy_from_slice(&record::file_header(&MAGIC, FORMAT_VERSION));
            let mut at = FIRST_RECORD;
            for &(seq, time) in records {
                at = record::write(bytes, at, seq, time, &payload(seq));
            }
        }
        /// Turns a valid segment's bytes into something that is not a journal.
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 5] = [
            ("magic", |bytes| bytes[..8].copy_from_slice(b"NOTBATON")),
            ("version", |bytes| bytes[8] = 9),
            ("first seq is not the name", |bytes| {
                rewrite(bytes, &[(3, 0)])
            }),
            ("seq skips", |bytes| rewrite(bytes, &[(1, 0), (3, 0)])),
            ("time goes back", |bytes| rewrite(bytes, &[(1, 10), (2, 9)])),
        ];
        for (name, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            append_all(&mut open(dir, SMALL), 1..=5);
            edit_file(&segments(dir)[0], damage);
            let error = Journal::open(dir, config(SMALL, Durability::Os)).unwrap_err();
            assert!(
                matches!(error, JournalError::Corrupt { .. }),
                "{name}: {error}"
            );
            let mut reader = Journal::read_from(dir, 1).unwrap();
            let error = loop {
                match reader.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{name}: read to the end without an error"),
                    Err(error) => break error,
                }
            };
            assert!(
                matches!(error, JournalError::Corrupt { .. }),
                "{name}: {error}"
            );
            // Asking again does not move past the damage.
            let again = reader.next().unwrap_err();
            assert_eq!(again.to_string(), error.to_string(), "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("latest.journal"), b"").unwrap();
        assert!(matches!(
            Journal::open(dir.path(), JournalConfig::default()),
            Err(JournalError::Corrupt { .. })
        ));
    }

    /// One step of the property test.
    #[derive(Clone, Debug)]
    enum Op {
        /// Append a payload of this many bytes, with time moved on by the second number.
        Append(usize, u64),
        Flush,
        /// Close the journal and open it again.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        let size = prop_oneof![
            2 => Just(0usize),
            6 => 1usize..200,
            2 => 200usize..2_000,
            1 => 3_000usize..6_000,
        ];
        prop_oneof![
            12 => (size, 0u64..3).prop_map(|(size, step)| Op::Append(size, step)),
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever sizes and reopens come, every append that returned `Ok` reads back byte for
        /// byte and in order, from the start or from any seq, and only those.
        #[test]
        fn everything_appended_reads_back(
            durability in durability(),
            segment_bytes in prop_oneof![Just(SMALL), Just(3 * SMALL)],
            first_seq in 1u64..1_000,
            ops in proptest::collection::vec(op(), 1..120),
            from_pick in any::<prop::sample::Index>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            let config = config(segment_bytes, durability);
            let max = segment_bytes as usize - FIRST_RECORD - HEADER_BYTES;
            let mut journal = Journal::open(dir, config).unwrap();
            let mut model: Vec<JournalEntry> = Vec::new();
            let mut now = Timestamp(1_000);
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Append(size, step) => {
                        let seq = model.last().map_or(first_seq, |last| last.seq + 1);
                        now = Timestamp(now.0 + step);
                        let payload: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
                        match journal.append(seq, now, &payload) {
                            Ok(()) => {
                                prop_assert!(size <= max);
                                model.push(JournalEntry { seq, time: now, payload });
                            }
                            Err(JournalError::TooLarge { .. }) => prop_assert!(size > max),
                            Err(error) => return Err(TestCaseError::fail(error.to_string())),
                        }
                    }
                    Op::Flush => journal.flush().unwrap(),
                    Op::Reopen => {
                        drop(journal);
                        journal = Journal::open(dir, config).unwrap();
                    }
                }
                prop_assert_eq!(journal.last_seq(), model.last().map_or(0, |last| last.seq));
                prop_assert_eq!(journal.first_seq(), model.first().map_or(0, |first| first.seq));
            }
            prop_assert_eq!(&read_all(dir, 0).unwrap(), &model);
            if !model.is_empty() {
                let from = from_pick.index(model.len());
                prop_assert_eq!(&read_all(dir, model[from].seq).unwrap(), &model[from..]);
            }
            drop(journal);
            let journal = Journal::open(dir, config).unwrap();
            prop_assert_eq!(journal.last_seq(), model.last().map_or(0, |last| last.seq));
            prop_assert_eq!(&read_all(dir, 0).unwrap(), &model);
        }
    }

    #[test]
    fn the_cut_of_a_torn_tail_is_written_into_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        append_all(&mut open(dir, SMALL), 1..=5);
        let last = segments(dir).pop().unwrap();
        let (_, at) = *records(&last).last().unwrap();
        edit_file(&last, |bytes| bytes[at + HEADER_BYTES + 3] ^= 0x40);
        let before = fs::read(&last).unwrap();
        let journal = open(dir, SMALL);
        assert_eq!(journal.last_seq(), 4);
        // The torn record's length is zeroed, so the file itself (a copy, a follower's replica)
        // ends its data at the last good record, not only this process's view of it; nothing
        // else is touched.
        let bytes = fs::read(&last).unwrap();
        assert_eq!(bytes[at..at + 4], [0; 4]);
        assert_eq!(bytes[..at], before[..at]);
        assert_eq!(bytes[at + 4..], before[at + 4..]);
        drop(journal);
        assert_eq!(records(&last).len(), 4);
    }

    #[test]
    fn roll_over_reuses_a_segment_file_left_without_a_header() {
        // Zero header and zero first length: no record, whatever lies further on.
        let mut zero_head = vec![0; 64];
        zero_head[40] = 0x5a;
        for leftover in [Vec::new(), vec![0; 64], zero_head] {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            let mut journal = open(dir, SMALL);
            append_all(&mut journal, 1..=3);
            // As if a roll-over to 4 created its file and failed before writing the header.
            fs::write(segment_path(dir, 4), &leftover).unwrap();
            journal.append(4, time(4), &vec![4; 4000]).unwrap();
            journal.append(5, time(5), &vec![5; 4000]).unwrap();
            assert_eq!(journal.last_seq(), 5, "{} bytes", leftover.len());
            drop(journal);
            assert_eq!(read_all(dir, 4).unwrap().len(), 2);
        }
    }

    #[test]
    fn roll_over_refuses_a_headerless_segment_file_holding_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, SMALL);
        append_all(&mut journal, 1..=3);
        let mut foreign = vec![0; 64];
        record::write(&mut foreign, FIRST_RECORD, 4, 0, b"not ours");
        fs::write(segment_path(dir, 4), foreign).unwrap();
        let error = journal.append(4, time(4), &vec![4; 4000]).unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
        assert_eq!(journal.last_seq(), 3);
    }

    /// Where the next record of the journal's current segment goes.
    fn tail(journal: &Journal) -> usize {
        journal.segment.as_ref().unwrap().tail
    }

    /// Appends from `seq` on while the current segment has room, and returns the first seq that
    /// did not fit: the one whose append rolls over.
    fn fill_segment(journal: &mut Journal, mut seq: u64) -> u64 {
        while journal.segment.as_ref().unwrap().fits(payload(seq).len()) {
            journal.append(seq, time(seq), &payload(seq)).unwrap();
            seq += 1;
        }
        seq
    }

    /// Leaves a journal in `dir` whose last record is torn, then one whose last segment is
    /// empty, reopening it in `durability` mode after each: what each recovery forced to the
    /// device.
    fn recoveries(dir: &Path, durability: Durability) -> (DeviceWrites, DeviceWrites) {
        append_all(
            &mut Journal::open(dir, config(SMALL, durability)).unwrap(),
            1..=5,
        );
        let last = segments(dir).pop().unwrap();
        let (_, at) = *records(&last).last().unwrap();
        edit_file(&last, |bytes| bytes[at + HEADER_BYTES + 3] ^= 0x40);
        let journal = Journal::open(dir, config(SMALL, durability)).unwrap();
        assert_eq!(journal.last_seq(), 4);
        let cut = journal.device_writes();
        drop(journal);
        let next = segment_path(dir, 5);
        fs::write(&next, b"").unwrap();
        let removed = Journal::open(dir, config(SMALL, durability)).unwrap();
        assert!(!next.exists());
        (cut, removed.device_writes())
    }

    #[test]
    fn os_mode_forces_nothing_to_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, SMALL);
        append_all(&mut journal, 1..=1);
        let next = fill_segment(&mut journal, 2);
        append_all(&mut journal, next..=next + 3);
        journal.flush().unwrap();
        assert_eq!(segments(dir).len(), 2);
        assert_eq!(journal.device_writes(), DeviceWrites::default());
        drop(journal);
        let dir = tempfile::tempdir().unwrap();
        let (cut, removed) = recoveries(dir.path(), Durability::Os);
        assert_eq!(cut, DeviceWrites::default());
        assert_eq!(removed, DeviceWrites::default());
    }

    #[test]
    fn batch_mode_forces_what_was_appended_at_each_flush_and_roll_over() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = Journal::open(dir, config(SMALL, Durability::Batch)).unwrap();
        assert_eq!(journal.device_writes(), DeviceWrites::default());
        // The first append creates a segment: its header and the directory entry are forced,
        // the record is not.
        let header = DeviceWrites {
            range_syncs: 1,
            range_bytes: FILE_HEADER_BYTES as u64,
            dir_syncs: 1,
        };
        append_all(&mut journal, 1..=3);
        assert_eq!(journal.device_writes(), header);
        // A flush writes back the three records and the zero length after them, which ends the
        // data on the next open.
        journal.flush().unwrap();
        let flushed = DeviceWrites {
            range_syncs: 2,
            range_bytes: header.range_bytes + (tail(&journal) + 4 - FIRST_RECORD) as u64,
            ..header
        };
        assert_eq!(journal.device_writes(), flushed);
        journal.flush().unwrap();
        assert_eq!(journal.device_writes(), flushed, "nothing appended since");
        // A roll-over forces what the segment being left holds before the next one starts.
        let from = tail(&journal);
        let next = fill_segment(&mut journal, 4);
        assert_eq!(
            journal.device_writes(),
            flushed,
            "appends alone force nothing"
        );
        let left = (tail(&journal) + 4).min(SMALL as usize) - from;
        journal.append(next, time(next), &payload(next)).unwrap();
        assert_eq!(
            journal.device_writes(),
            DeviceWrites {
                range_syncs: flushed.range_syncs + 2,
                range_bytes: flushed.range_bytes + left as u64 + FILE_HEADER_BYTES as u64,
                dir_syncs: flushed.dir_syncs + 1,
            }
        );
        drop(journal);
        // Recovery forces the four zero bytes that cut a torn tail, and the directory after
        // removing an empty last segment.
        let dir = tempfile::tempdir().unwrap();
        let (cut, removed) = recoveries(dir.path(), Durability::Batch);
        let cut_only = DeviceWrites {
            range_syncs: 1,
            range_bytes: 4,
            dir_syncs: 0,
        };
        assert_eq!(cut, cut_only);
        let removed_only = DeviceWrites {
            range_syncs: 0,
            range_bytes: 0,
            dir_syncs: 1,
        };
        assert_eq!(removed, removed_only);
    }

    #[test]
    fn message_mode_forces_each_record_as_it_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = Journal::open(dir, config(SMALL, Durability::Message)).unwrap();
        journal.append(1, time(1), &payload(1)).unwrap();
        let first = DeviceWrites {
            range_syncs: 2,
            range_bytes: (FILE_HEADER_BYTES + tail(&journal) + 4 - FIRST_RECORD) as u64,
            dir_syncs: 1,
        };
        assert_eq!(journal.device_writes(), first);
        let mut expected = first;
        for seq in 2..=20 {
            let from = tail(&journal);
            journal.append(seq, time(seq), &payload(seq)).unwrap();
            expected.range_syncs += 1;
            expected.range_bytes += (tail(&journal) + 4 - from) as u64;
            assert_eq!(journal.device_writes(), expected, "seq {seq}");
        }
        journal.flush().unwrap();
        assert_eq!(journal.device_writes(), expected, "nothing left to flush");
    }

    #[test]
    fn damage_spanning_many_records_before_valid_ones_is_still_damage() {
        // Records of 24 bytes (no payload), so a small segment holds 170 of them, and the bytes
        // before each record are the previous record's time, never a plausible seq.
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, SMALL);
        for seq in 1..=100 {
            journal.append(seq, time(seq), b"").unwrap();
        }
        drop(journal);
        let segment = segments(dir).pop().unwrap();
        let held = records(&segment);
        // Records 10..=39 wiped: the first valid record after the damage carries seq 40, 29
        // above the lowest seq that could follow record 9.
        let (from, to) = (held[9].1, held[39].1);
        edit_file(&segment, |bytes| bytes[from..to].fill(0xa5));
        let damaged = fs::read(&segment).unwrap();
        let error = Journal::open(dir, config(SMALL, Durability::Os)).unwrap_err();
        assert!(
            matches!(&error, JournalError::Corrupt { offset, .. } if *offset == from as u64),
            "{error}"
        );
        let error = read_all(dir, 1).unwrap_err();
        assert!(
            matches!(&error, JournalError::Corrupt { offset, .. } if *offset == from as u64),
            "{error}"
        );
        assert_eq!(fs::read(&segment).unwrap(), damaged, "nothing was cut");
    }

    #[test]
    fn a_torn_record_holding_a_plausible_seq_is_still_a_torn_tail() {
        // The last record's payload holds, 8-aligned, the number the next record would carry:
        // a plausible seq inside the torn record is not a valid record after it.
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut journal = open(dir, SMALL);
        append_all(&mut journal, 1..=4);
        let mut last = vec![0x11; 64];
        last[16..24].copy_from_slice(&6u64.to_le_bytes());
        journal.append(5, time(5), &last).unwrap();
        drop(journal);
        let segment = segments(dir).pop().unwrap();
        let (seq, at) = *records(&segment).last().unwrap();
        assert_eq!(seq, 5);
        edit_file(&segment, |bytes| bytes[at + HEADER_BYTES + 60] ^= 0x40);
        assert_eq!(read_all(dir, 1).unwrap(), entries(1..=4));
        let journal = open(dir, SMALL);
        assert_eq!(journal.last_seq(), 4);
    }

    #[test]
    fn only_a_name_of_exactly_twenty_digits_names_a_segment() {
        let name = |stem: &str| PathBuf::from(format!("{stem}.{SEGMENT_EXTENSION}"));
        assert_eq!(segment_seq(&name("00000000000000000123")), Some(123));
        // Digits, but not twenty of them: a name order would not sort by seq.
        assert_eq!(segment_seq(&name("123")), None);
        assert_eq!(segment_seq(&name("000000000000000000123")), None);
        // Twenty characters, not all digits.
        assert_eq!(segment_seq(&name("0000000000000000012x")), None);
        assert_eq!(segment_seq(&name("+0000000000000000123")), None);
        // No record carries seq 0.
        assert_eq!(segment_seq(&name("00000000000000000000")), None);
        // A directory holding a short-named segment is refused, not read out of order.
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        append_all(&mut open(dir, SMALL), 1..=3);
        fs::write(dir.join(name("123")), b"").unwrap();
        let error = Journal::open(dir, config(SMALL, Durability::Os)).unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
    }
}
