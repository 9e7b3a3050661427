//! Files mapped into memory, behind a safe interface.
//!
//! The session store and the input journal persist by writing into mapped pages: an append is a
//! memory copy, and the kernel's page cache keeps the bytes even if the process is killed the
//! next instant. Mapping a file is `unsafe` in Rust because the bytes behind a `&[u8]` could
//! change or vanish if anything else writes or truncates the file. This module is the only place
//! in the crate that calls memmap2's `unsafe` APIs; it makes them sound by owning the file for
//! as long as it is mapped:
//!
//! - the file is opened by this module alone and never handed out, and is only ever grown while
//!   mapped, never shrunk below the mapping, so every mapped byte stays backed by the file;
//! - an exclusive advisory lock (`flock` on Unix) is taken before mapping, so a second
//!   [`MappedFile`] on the same file, in this process or another gateway, is refused with
//!   [`MapError::Locked`] instead of aliasing the mapping;
//! - the one assumption left is that no process outside baton writes to or truncates the file
//!   (advisory locks do not stop it). Truncation would raise `SIGBUS` on the next access and end
//!   the process, so the failure is a crash, never silently wrong bytes. Operators keep store
//!   directories for one gateway's exclusive use.
//!
//! Space is reserved before it is mapped: every byte a file is extended by is allocated on the
//! device first (`posix_fallocate`), so a full disk is an error at open or grow
//! ([`MapError::is_no_space`]) that the caller can handle (refuse new work, retry later), never a
//! `SIGBUS` on the first write to a page the file system cannot back. A grow that fails gives the
//! file back its old length, so nothing beyond the mapping is left half-allocated.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

/// Why mapping, growing or flushing a file failed. The path is in every variant because the
/// operator's next step (free disk, fix permissions, stop the other gateway) depends on which
/// file it is.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The operating system refused an operation on the file.
    #[error("{path}: {operation}: {source}")]
    Io {
        /// The file the operation was on.
        path: String,
        /// Which step failed (open, lock, set_len, mmap, msync), since the same `io::Error` kind
        /// means different things for each.
        operation: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Another handle holds the file's lock: most likely a second gateway pointed at the same
    /// store directory, which must never write into the same file.
    #[error("{path}: locked by another open handle (is a second gateway using this directory?)")]
    Locked {
        /// The file whose lock is taken.
        path: String,
    },
}

impl MapError {
    /// The file the error is about, for callers that wrap it in their own error type.
    pub fn path(&self) -> &str {
        match self {
            MapError::Io { path, .. } | MapError::Locked { path } => path,
        }
    }

    /// Whether the file could not get the space it needed (disk or quota full): a condition
    /// that passes when space is freed, unlike every other failure here.
    pub fn is_no_space(&self) -> bool {
        matches!(self, MapError::Io { source, .. } if is_no_space(source))
    }
}

/// Files in this process that could not get the space they keep ahead of need (session stores
/// short of headroom): while non-zero the gateway refuses new business.
static FILES_SHORT_OF_SPACE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// How many files are short of the space they keep ahead of need right now.
pub fn files_short_of_space() -> usize {
    FILES_SHORT_OF_SPACE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a file in or out of [`files_short_of_space`]; each file calls it only when its own
/// state changes, so the count stays exact.
pub fn count_short_of_space(short: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    if short {
        FILES_SHORT_OF_SPACE.fetch_add(1, Relaxed);
    } else {
        FILES_SHORT_OF_SPACE.fetch_sub(1, Relaxed);
    }
}

/// Whether `error` says the device or quota is full.
pub fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

/// Bytes an unprivileged writer can still allocate on the file system holding `path`, for the
/// log line an operator reads when it is full; `None` if the file system cannot be asked.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) reads the NUL-terminated path and writes only the zero-initialised
    // struct it is given, which lives for the whole call.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    Some((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

/// A file mapped read-write in full, exclusively locked, that can grow.
///
/// General on purpose: it knows nothing of records or sessions, so the session store and the
/// input journal share one audited piece of `unsafe`.
#[derive(Debug)]
pub struct MappedFile {
    /// Kept open for as long as the mapping lives: it holds the advisory lock, and growing the
    /// file needs it. Never exposed, so nothing else can write through it.
    file: File,
    /// The mapping of the whole file, `len` bytes; replaced by a larger one on every grow.
    map: MmapMut,
    /// Where the file is, for error messages.
    path: PathBuf,
}

impl MappedFile {
    /// Opens or creates the file at `path`, locks it, extends it with zeros to at least `len_min`
    /// bytes and maps all of it. A file that is already larger keeps its length, so reopening
    /// never loses data. A second open of a file that is still open is refused with
    /// [`MapError::Locked`].
    pub fn open(path: &Path, len_min: u64) -> Result<MappedFile, MapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| io_error(path, "open", source))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(MapError::Locked {
                    path: path.display().to_string(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(path, "lock", source)),
        }
        let len_now = file
            .metadata()
            .map_err(|source| io_error(path, "stat", source))?
            .len();
        let len = len_now.max(len_min);
        if len != len_now {
            reserve(&file, path, len_now, len)?;
        }
        let map = map_whole(&file, path, len)?;
        Ok(MappedFile {
            file,
            map,
            path: path.to_path_buf(),
        })
    }

    /// Where the file is, for the caller's own error messages and logs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the file and of the mapping, in bytes; offsets below it are valid.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for a zero-length file, which maps as an empty slice.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Extends the file with zeros to `len` bytes, allocated on the device, and maps the new
    /// length, keeping every byte already written. A `len` at or below the current length
    /// changes nothing: shrinking a mapped file is what would make the mapping unsound, so it is
    /// not offered. On a full disk the file and the mapping stay as they were and the error says
    /// so ([`MapError::is_no_space`]); growing again later may succeed.
    pub fn grow(&mut self, len: u64) -> Result<(), MapError> {
        if len <= self.map.len() as u64 {
            return Ok(());
        }
        reserve(&self.file, &self.path, self.map.len() as u64, len)?;
        // The old mapping stays valid until replaced: the file only got longer.
        self.map = map_whole(&self.file, &self.path, len)?;
        Ok(())
    }

    /// The mapped bytes, to read records in place without copying.
    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }

    /// The mapped bytes, to write records in place: a write here is in the page cache as soon as
    /// it returns, so it survives the process being killed.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Writes every dirty page to the device and waits (`msync(MS_SYNC)`), so what was written
    /// survives a power loss, not only a process kill.
    pub fn flush(&self) -> Result<(), MapError> {
        self.map
            .flush()
            .map_err(|source| io_error(&self.path, "msync", source))
    }

    /// Like [`MappedFile::flush`] for the pages covering `len` bytes from `offset` only, so a
    /// caller that knows what it wrote pays for those pages and not the whole file.
    pub fn flush_range(&self, offset: usize, len: usize) -> Result<(), MapError> {
        self.map
            .flush_range(offset, len)
            .map_err(|source| io_error(&self.path, "msync", source))
    }

    /// Starts writing dirty pages to the device without waiting (`msync(MS_ASYNC)`), to shorten
    /// the window of a later synchronous flush without blocking now.
    pub fn flush_async(&self) -> Result<(), MapError> {
        self.map
            .flush_async()
            .map_err(|source| io_error(&self.path, "msync", source))
    }
}

/// Allocates bytes `from..to` of `file` on the device, extending it to `to`, so that every page
/// of a later mapping is backed and a write to it cannot fault for want of space. On failure the
/// file gets its old length `from` back: the mapping never covered more, so the cut is sound.
fn reserve(file: &File, path: &Path, from: u64, to: u64) -> Result<(), MapError> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(to - from),
    ) else {
        return Err(io_error(
            path,
            "fallocate",
            io::Error::new(io::ErrorKind::InvalidInput, "file larger than off_t"),
        ));
    };
    // SAFETY: posix_fallocate(3) takes a descriptor this `File` owns and two integers; it
    // touches no memory of ours.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, len) };
    if code == 0 {
        return Ok(());
    }
    let source = io::Error::from_raw_os_error(code);
    // Blocks allocated before the failure may have moved the end; give the old end back.
    if let Err(error) = file.set_len(from) {
        tracing::warn!(path = %path.display(), %error, "cannot give a file its length back after a failed allocation");
    }
    Err(io_error(path, "fallocate", source))
}

/// Maps all `len` bytes of `file` read-write and shared, so writes reach the page cache and the
/// file.
fn map_whole(file: &File, path: &Path, len: u64) -> Result<MmapMut, MapError> {
    let len = usize::try_from(len).map_err(|_| {
        io_error(
            path,
            "mmap",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "file larger than the address space",
            ),
        )
    })?;
    // SAFETY: memmap2 marks mapping unsafe because the mapped bytes could be changed or truncated
    // behind Rust's references by another handle. Here `file` is owned by one `MappedFile`, is
    // exclusively locked (so no other `MappedFile`, in this process or another baton process,
    // maps it), is at least `len` bytes long (reserved just before), and is never shrunk below
    // what is mapped. The remaining assumption, stated in the module doc, is that no
    // process outside baton writes to or truncates the file.
    let map = unsafe { MmapOptions::new().len(len).map_mut(file) };
    map.map_err(|source| io_error(path, "mmap", source))
}

/// Names the file and the step in an I/O failure, which `io::Error` alone does not carry.
fn io_error(path: &Path, operation: &'static str, source: io::Error) -> MapError {
    MapError::Io {
        path: path.display().to_string(),
        operation,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_extends_to_the_minimum_and_keeps_a_longer_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        {
            let mut file = MappedFile::open(&path, 100).unwrap();
            assert_eq!(file.len(), 100);
            assert!(file.as_slice().iter().all(|&b| b == 0));
            file.as_mut_slice()[..5].copy_from_slice(b"hello");
            file.grow(300).unwrap();
            assert_eq!(file.len(), 300);
            file.flush().unwrap();
        }
        let file = MappedFile::open(&path, 10).unwrap();
        assert_eq!(file.len(), 300);
        assert_eq!(&file.as_slice()[..5], b"hello");
    }

    #[test]
    fn grow_keeps_bytes_and_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = MappedFile::open(&dir.path().join("file"), 4096).unwrap();
        file.as_mut_slice()[4095] = 7;
        file.grow(1 << 20).unwrap();
        assert_eq!(file.as_slice()[4095], 7);
        assert_eq!(file.as_slice()[(1 << 20) - 1], 0);
        file.grow(10).unwrap();
        assert_eq!(file.len(), 1 << 20);
        file.flush_range(4000, 200).unwrap();
        file.flush_async().unwrap();
        assert!(matches!(
            file.flush_range(1 << 20, 1),
            Err(MapError::Io {
                operation: "msync",
                ..
            })
        ));
    }

    #[test]
    fn second_open_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let first = MappedFile::open(&path, 64).unwrap();
        let second = MappedFile::open(&path, 64);
        assert!(matches!(second, Err(MapError::Locked { .. })), "{second:?}");
        drop(first);
        MappedFile::open(&path, 64).unwrap();
    }
}
