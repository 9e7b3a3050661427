//! The checksummed record layout shared by the session store's message log and the input journal.
//!
//! Both are append-only logs in memory-mapped files that must survive a kill at any instruction,
//! so both need the same three things: a file header that tells their files from anything else,
//! records whose checksum exposes a torn or damaged write, and an append order that never lets a
//! half-written record look complete. Keeping them here means one audited implementation.
//!
//! # Layout (little-endian)
//!
//! A file opens with [`FILE_HEADER_BYTES`]: an 8-byte magic naming the kind of file, a `u32`
//! format version and 4 reserved zero bytes. All zeros means the file's creation never finished.
//!
//! Records start 8-byte aligned: `len: u32, crc32: u32, seq: u64, stamp: u64, payload, zero
//! padding to 8`. `len` counts the [`HEADER_BYTES`] and the payload (so it is never 0, even for
//! an empty payload); a zero `len` is the end of the log. The checksum covers `len`, `seq`,
//! `stamp` and the payload. `stamp` belongs to the file kind: the store's epoch, the journal's
//! timestamp.

use std::sync::atomic::{Ordering, fence};

/// Magic, format version, 4 reserved bytes.
pub(crate) const FILE_HEADER_BYTES: usize = 16;
/// `len`, `crc32`, `seq`, `stamp`.
pub(crate) const HEADER_BYTES: usize = 24;
/// Records start 8-aligned, so the `u64` fields are aligned and an offset divided by 8 still
/// names a record (the store's index keeps offsets in these units).
pub(crate) const ALIGN_BYTES: usize = 8;

const _: () = assert!(FILE_HEADER_BYTES.is_multiple_of(ALIGN_BYTES));
const _: () = assert!(HEADER_BYTES.is_multiple_of(ALIGN_BYTES));

/// What a file's first bytes say about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileHeader {
    /// All zero (or too short to hold a header): the file is new, or its creation never finished.
    Blank,
    /// The expected magic and format version.
    Valid,
}

/// Reads a file header. `Err` says why the file is not one of `kind` (used in the message, e.g.
/// "session store") in `version`, which this build can read.
pub(crate) fn read_file_header(
    bytes: &[u8],
    magic: &[u8; 8],
    version: u32,
    kind: &str,
) -> Result<FileHeader, String> {
    let Some(header) = bytes.get(..FILE_HEADER_BYTES) else {
        return Ok(FileHeader::Blank);
    };
    if header.iter().all(|&byte| byte == 0) {
        return Ok(FileHeader::Blank);
    }
    if &header[..8] != magic {
        return Err(format!(
            "not a baton {kind} file (expected magic {:?})",
            String::from_utf8_lossy(magic)
        ));
    }
    match read_u32(header, 8) {
        Some(found) if found == version => Ok(FileHeader::Valid),
        found => Err(format!(
            "format version {found:?}, this build reads version {version}"
        )),
    }
}

/// The header of a file of kind `magic` in format `version`.
pub(crate) fn file_header(magic: &[u8; 8], version: u32) -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0u8; FILE_HEADER_BYTES];
    header[..8].copy_from_slice(magic);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    header
}

/// The `len` field of a record holding `payload_len` bytes, or `None` if it does not fit a `u32`.
pub(crate) fn encoded_len(payload_len: usize) -> Option<u32> {
    HEADER_BYTES
        .checked_add(payload_len)
        .and_then(|len| u32::try_from(len).ok())
}

/// Offset just past a record of `payload_len` bytes starting at `start`, padding included.
pub(crate) fn end(start: usize, payload_len: usize) -> Option<usize> {
    start
        .checked_add(HEADER_BYTES)?
        .checked_add(payload_len)?
        .checked_next_multiple_of(ALIGN_BYTES)
}

/// The checksum a record carries: over its length field, sequence number, stamp and payload, so
/// a record is never taken for one of another length, number or stamp.
pub(crate) fn crc(len: u32, seq: u64, stamp: u64, payload: &[u8]) -> u32 {
    // One buffer for the three fields: crc32fast's fast path wants long inputs, and three tiny
    // updates cost a fifth of an append.
    let mut fields = [0u8; 20];
    fields[..4].copy_from_slice(&len.to_le_bytes());
    fields[4..12].copy_from_slice(&seq.to_le_bytes());
    fields[12..].copy_from_slice(&stamp.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&fields);
    hasher.update(payload);
    hasher.finalize()
}

/// Writes a record at `start` and returns the offset just past it, where the next one goes.
///
/// The length field goes last, after a release fence, and the length field after the record is
/// zeroed first: until the final store the log still ends at `start`, so a process killed at any
/// instruction in here loses this record and nothing else.
///
/// The caller checks that the record fits (`end(start, payload.len())` within `bytes`, and
/// `encoded_len` is `Some`); a record that does not is a bug in the caller.
pub(crate) fn write(bytes: &mut [u8], start: usize, seq: u64, stamp: u64, payload: &[u8]) -> usize {
    let len = encoded_len(payload.len()).expect("caller checked the record length fits a u32");
    let end = end(start, payload.len()).expect("caller checked the record fits the file");
    assert!(
        start.is_multiple_of(ALIGN_BYTES) && end <= bytes.len(),
        "record at {start}..{end} outside a file of {} bytes, or unaligned",
        bytes.len()
    );
    if let Some(next_len) = bytes.get_mut(end..end + 4) {
        next_len.fill(0);
    }
    let body = start + HEADER_BYTES;
    bytes[start + 4..start + 8].copy_from_slice(&crc(len, seq, stamp, payload).to_le_bytes());
    bytes[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    bytes[start + 16..start + 24].copy_from_slice(&stamp.to_le_bytes());
    bytes[body..body + payload.len()].copy_from_slice(payload);
    bytes[body + payload.len()..end].fill(0);
    // The fence keeps the compiler (and a weakly ordered CPU) from moving the stores above after
    // the length's.
    fence(Ordering::Release);
    bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
    end
}

/// A record's fixed fields, decoded but not yet checked against its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Header and payload bytes, without padding; 0 marks the end of the log.
    pub(crate) len: u32,
    /// What [`crc`] gave when the record was written.
    pub(crate) crc: u32,
    /// The record's sequence number.
    pub(crate) seq: u64,
    /// The file kind's second number (the store's epoch, the journal's timestamp).
    pub(crate) stamp: u64,
}

impl Header {
    /// Decodes the fixed fields, for readers that fetch a record in two steps (header, then
    /// payload) from a file rather than a mapping.
    pub(crate) fn decode(bytes: &[u8; HEADER_BYTES]) -> Header {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut field = [0u8; 8];
            field.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(field)
        };
        Header {
            len: u32_at(0),
            crc: u32_at(4),
            seq: u64_at(8),
            stamp: u64_at(16),
        }
    }

    /// How many payload bytes follow the header; `Err` if `len` is too short to be a record.
    pub(crate) fn payload_len(&self) -> Result<usize, String> {
        (self.len as usize)
            .checked_sub(HEADER_BYTES)
            .ok_or_else(|| format!("record length {} is shorter than a record header", self.len))
    }

    /// Checks the record's checksum against `payload`.
    pub(crate) fn check(&self, payload: &[u8]) -> Result<(), String> {
        if crc(self.len, self.seq, self.stamp, payload) == self.crc {
            Ok(())
        } else {
            Err(format!("record checksum mismatch (seq {})", self.seq))
        }
    }
}

/// A whole record, read and checked in place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// The record's sequence number.
    pub(crate) seq: u64,
    /// The file kind's second number.
    pub(crate) stamp: u64,
    /// The payload, borrowed from the file's bytes.
    pub(crate) payload: &'a [u8],
    /// Offset just past the record (padding included), where the next one starts.
    pub(crate) end: usize,
}

/// The record at byte `at`: `Ok(None)` at a clean end of the log (a zero length field or no room
/// for one), `Err` with the reason if it is torn or damaged.
pub(crate) fn read(bytes: &[u8], at: usize) -> Result<Option<Record<'_>>, String> {
    let Some(len) = read_u32(bytes, at) else {
        return Ok(None);
    };
    if len == 0 {
        return Ok(None);
    }
    let header_bytes = at
        .checked_add(HEADER_BYTES)
        .and_then(|header_end| bytes.get(at..header_end))
        .and_then(|header| <&[u8; HEADER_BYTES]>::try_from(header).ok())
        .ok_or_else(|| "record header runs past the end of the file".to_string())?;
    let header = Header::decode(header_bytes);
    let payload_len = header.payload_len()?;
    let end = end(at, payload_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format!("record of {len} bytes runs past the end of the file"))?;
    let payload_start = at + HEADER_BYTES;
    let payload = &bytes[payload_start..payload_start + payload_len];
    header.check(payload)?;
    Ok(Some(Record {
        seq: header.seq,
        stamp: header.stamp,
        payload,
        end,
    }))
}

/// The little-endian `u32` at `at`, or `None` past the end.
pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let bytes = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// The little-endian `u64` at `at`, or `None` past the end.
pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let bytes = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: [u8; 8] = *b"TESTFILE";

    #[test]
    fn written_record_reads_back_and_ends_the_log_after_it() {
        let mut bytes = vec![0xAAu8; 128];
        let end = write(&mut bytes, 8, 7, 99, b"hello");
        assert_eq!(end, 8 + 32);
        let record = read(&bytes, 8).unwrap().unwrap();
        assert_eq!(
            record,
            Record {
                seq: 7,
                stamp: 99,
                payload: b"hello",
                end
            }
        );
        assert_eq!(read(&bytes, end), Ok(None), "the next length was zeroed");
        assert_eq!(&bytes[8 + 29..end], &[0, 0, 0], "padding is zero");
    }

    #[test]
    fn empty_payload_still_has_a_nonzero_length() {
        let mut bytes = vec![0u8; 24];
        let end = write(&mut bytes, 0, 1, 2, b"");
        assert_eq!(end, 24);
        assert_eq!(read_u32(&bytes, 0), Some(24));
        assert_eq!(read(&bytes, 0).unwrap().unwrap().payload, b"");
        assert_eq!(
            read(&bytes, 24),
            Ok(None),
            "no room for a length is the end"
        );
    }

    #[test]
    fn any_changed_byte_or_cut_is_an_error() {
        let mut bytes = vec![0u8; 64];
        write(&mut bytes, 0, 3, 4, b"payload");
        for at in 4..31 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(read(&damaged, 0).is_err(), "byte {at}");
        }
        assert!(read(&bytes[..30], 0).is_err());
        assert!(read(&bytes[..20], 0).is_err());
        let mut short = bytes.clone();
        short[..4].copy_from_slice(&5u32.to_le_bytes());
        assert!(read(&short, 0).is_err());
    }

    #[test]
    fn file_header_is_checked() {
        let header = file_header(&MAGIC, 3);
        assert_eq!(
            read_file_header(&header, &MAGIC, 3, "test"),
            Ok(FileHeader::Valid)
        );
        assert_eq!(
            read_file_header(&[0; 16], &MAGIC, 3, "test"),
            Ok(FileHeader::Blank)
        );
        assert_eq!(
            read_file_header(&[1; 5], &MAGIC, 3, "test"),
            Ok(FileHeader::Blank)
        );
        assert!(read_file_header(&header, &MAGIC, 4, "test").is_err());
        assert!(read_file_header(&header, b"OTHERMAG", 3, "test").is_err());
    }
}
