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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use memmap2::{MmapOptions, MmapRaw};

use crate::constants::{
    MAPPED_AHEAD_BYTES, MAPPED_PREFAULT_CHUNK_BYTES, MAPPED_REFRESH_MS, MAPPED_RESERVE_BYTES_MAX,
};

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
    /// The mapping: at least `len` bytes, possibly more reserved for growth. Shared with the
    /// prefault thread only so the address range stays mapped while it works on it; that
    /// thread never reads or writes a byte through it.
    map: Arc<Mapping>,
    /// Length of the file, in bytes: every mapped byte below it is backed by the file, and only
    /// those are ever handed out as slices.
    len: usize,
    /// Where the file is, for error messages.
    path: PathBuf,
    /// Bytes kept present ahead of the write position; 0 when the file is not an append log.
    ahead_bytes: usize,
    /// The end of the last window asked of the prefault thread; a new one is asked when the
    /// writer comes within half a window of it, so the thread is woken once per half window.
    asked_to: usize,
}

/// One mapping, with what the prefault thread is asked to do on it.
#[derive(Debug)]
struct Mapping {
    /// The mapped address range. Raw, so the owner alone makes slices of it (of the file's
    /// length), and the prefault thread holds no reference into the bytes.
    raw: MmapRaw,
    /// Start of the window the owner wants present, in bytes from the start of the file.
    wanted_from: AtomicUsize,
    /// End of that window; never past the file's length when it was asked.
    wanted_to: AtomicUsize,
    /// Everything below it has been made present (by the prefault thread), as far as it knows;
    /// for tests and for the owner to tell the thread is keeping up.
    populated_to: AtomicUsize,
    /// True while the prefault thread may take hold of the mapping; cleared (under the
    /// registry's lock) when its file is dropped. The mapping holds a reference to the open file
    /// and with it the file's lock, so the owner waits until the thread has let go before the
    /// file counts as closed: a reopen right after a drop must not find it locked.
    registered: AtomicBool,
    /// Set when the kernel refused to populate (older than Linux 5.14, or a file system that
    /// cannot): the writer then takes its own faults, as it did before.
    refused: AtomicBool,
    /// The last offset the writer reported (see [`MappedFile::wrote_to`]).
    written_to: AtomicUsize,
    /// `written_to` as the prefault thread last saw it, and the refresh passes since it last
    /// moved (only that thread writes these): a window is made present anew only while its
    /// writer moved within [`IDLE_REFRESHES_MAX`] passes. Each pass dirties the pages the kernel
    /// wrote back since the last, so refreshing an idle log's window would write it to disk
    /// again and again for a writer that may not come back.
    seen_written_to: AtomicUsize,
    idle_refreshes: AtomicUsize,
}

/// Refresh passes (one per [`MAPPED_REFRESH_MS`]) a log's window is still made present after
/// its writer last moved: the 30 s in which the kernel writes dirty pages back, after which a
/// quiet session's first writes take their own faults (a few µs, once per page) rather than the
/// disk taking its window again every 30 s.
#[cfg(not(test))]
const IDLE_REFRESHES_MAX: usize = 30;
/// Shorter in tests, so a test sees an idle log left alone within seconds.
#[cfg(test)]
const IDLE_REFRESHES_MAX: usize = 3;

impl MappedFile {
    /// Opens or creates the file at `path`, locks it, extends it with zeros to at least `len_min`
    /// bytes and maps all of it. A file that is already larger keeps its length, so reopening
    /// never loses data. A second open of a file that is still open is refused with
    /// [`MapError::Locked`].
    pub fn open(path: &Path, len_min: u64) -> Result<MappedFile, MapError> {
        MappedFile::open_with(path, len_min, 0, 0)
    }

    /// Like [`MappedFile::open`], for a file appended to on a latency-sensitive path: address
    /// space is reserved for growth up to `len_max` bytes (at most
    /// [`MAPPED_RESERVE_BYTES_MAX`]), so growing within it never remaps, and the pages ahead of
    /// the position given to [`MappedFile::wrote_to`] are made present by a background thread.
    pub fn open_appendable(
        path: &Path,
        len_min: u64,
        len_max: u64,
    ) -> Result<MappedFile, MapError> {
        MappedFile::open_with(path, len_min, len_max, MAPPED_AHEAD_BYTES)
    }

    fn open_with(
        path: &Path,
        len_min: u64,
        len_max: u64,
        ahead_bytes: usize,
    ) -> Result<MappedFile, MapError> {
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
        let len = to_usize(path, len)?;
        let map = map_reserved(&file, path, len, len_max, ahead_bytes > 0)?;
        Ok(MappedFile {
            file,
            map,
            len,
            path: path.to_path_buf(),
            ahead_bytes,
            asked_to: 0,
        })
    }

    /// Where the file is, for the caller's own error messages and logs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file to `to` (replacing whatever is there), keeping the mapping, the lock and
    /// the pages already present: a file prepared ahead of need takes its final name when it is
    /// needed.
    pub fn rename(&mut self, to: &Path) -> Result<(), MapError> {
        std::fs::rename(&self.path, to).map_err(|source| io_error(&self.path, "rename", source))?;
        self.path = to.to_path_buf();
        Ok(())
    }

    /// Length of the file and of the mapping, in bytes; offsets below it are valid.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length file, which maps as an empty slice.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Extends the file with zeros to `len` bytes, allocated on the device, and maps the new
    /// length, keeping every byte already written. A `len` at or below the current length
    /// changes nothing: shrinking a mapped file is what would make the mapping unsound, so it is
    /// not offered. On a full disk the file and the mapping stay as they were and the error says
    /// so ([`MapError::is_no_space`]); growing again later may succeed. Within the address space
    /// reserved at open this maps nothing: the reserved range already covers the new bytes.
    pub fn grow(&mut self, len: u64) -> Result<(), MapError> {
        if len <= self.len as u64 {
            return Ok(());
        }
        let len_new = to_usize(&self.path, len)?;
        reserve(&self.file, &self.path, self.len as u64, len)?;
        if len_new > self.map.raw.len() {
            // Past the reservation: a new mapping. The old one stays valid until replaced (the
            // file only got longer), and is unmapped once the prefault thread lets go of it.
            self.map = map_reserved(&self.file, &self.path, len_new, 0, self.ahead_bytes > 0)?;
            self.asked_to = 0;
        }
        self.len = len_new;
        Ok(())
    }

    /// Tells an append log that bytes up to `offset` are written, so the pages of the next
    /// window ([`MAPPED_AHEAD_BYTES`]) are made present before the writer reaches them. Costs a
    /// comparison per call; once per half window it wakes the background thread (no syscall if
    /// it is awake, one `futex` wake if it sleeps). Does nothing for a file opened with
    /// [`MappedFile::open`].
    pub fn wrote_to(&mut self, offset: usize) {
        if self.ahead_bytes == 0 {
            return;
        }
        self.map.written_to.store(offset, Ordering::Relaxed);
        // The writer went back (a session store cut to its start on a new session day or a
        // sequence reset): the window ahead of it starts over from there. Should the thread
        // still be finishing a chunk of the old window, its mark is set right by the next
        // refresh, within `MAPPED_REFRESH_MS`.
        if offset < self.map.wanted_from.load(Ordering::Relaxed) {
            self.asked_to = 0;
            self.map.populated_to.store(offset, Ordering::Relaxed);
        }
        if offset.saturating_add(self.ahead_bytes / 2) < self.asked_to {
            return;
        }
        let to = offset.saturating_add(self.ahead_bytes).min(self.len);
        if to <= self.asked_to || self.map.refused.load(Ordering::Relaxed) {
            return;
        }
        self.asked_to = to;
        self.map.wanted_from.store(offset, Ordering::Relaxed);
        self.map.wanted_to.store(to, Ordering::Release);
        prefault_thread().unpark();
    }

    /// Offset below which the background thread has made the pages asked for present; 0 for a
    /// file that is not an append log. Lets a test (or a metric) see whether it keeps ahead.
    pub fn populated_to(&self) -> usize {
        self.map.populated_to.load(Ordering::Acquire)
    }

    /// The mapped bytes, to read records in place without copying.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is at least `len` bytes, all backed by the file (it only ever
        // grows, see the module doc); `&self` keeps `as_mut_slice` from aliasing this slice, and
        // no other code makes references into the mapping (the prefault thread holds the
        // address only and changes no byte).
        unsafe { std::slice::from_raw_parts(self.map.raw.as_ptr(), self.len) }
    }

    /// The mapped bytes, to write records in place: a write here is in the page cache as soon as
    /// it returns, so it survives the process being killed.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only slice of the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.map.raw.as_mut_ptr(), self.len) }
    }

    /// Writes every dirty page to the device and waits (`msync(MS_SYNC)`), so what was written
    /// survives a power loss, not only a process kill.
    pub fn flush(&self) -> Result<(), MapError> {
        self.flush_range(0, self.len)
    }

    /// Like [`MappedFile::flush`] for the pages covering `len` bytes from `offset` only, so a
    /// caller that knows what it wrote pays for those pages and not the whole file. A range past
    /// the end of the file is an error, also where address space is reserved beyond it.
    pub fn flush_range(&self, offset: usize, len: usize) -> Result<(), MapError> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io_error(
                &self.path,
                "msync",
                io::Error::from_raw_os_error(libc::ENOMEM),
            ));
        }
        if len == 0 {
            return Ok(());
        }
        self.map
            .raw
            .flush_range(offset, len)
            .map_err(|source| io_error(&self.path, "msync", source))
    }

    /// Starts writing dirty pages to the device without waiting (`msync(MS_ASYNC)`), to shorten
    /// the window of a later synchronous flush without blocking now.
    pub fn flush_async(&self) -> Result<(), MapError> {
        if self.len == 0 {
            return Ok(());
        }
        self.map
            .raw
            .flush_async_range(0, self.len)
            .map_err(|source| io_error(&self.path, "msync", source))
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // The lock goes with the last reference to the mapping; see `Mapping::registered`.
        unregister(&self.map);
    }
}

/// The mappings of every open append log, for the prefault thread. Weak, so a dropped file's
/// entry dies with it; dead entries are swept when a new mapping registers.
static APPEND_LOGS: Mutex<Vec<Weak<Mapping>>> = Mutex::new(Vec::new());

/// The one background thread that makes append logs' next pages present, started on first use.
/// One for the process: it runs a few populate calls per half window written, so one keeps up
/// with every session.
fn prefault_thread() -> &'static std::thread::Thread {
    static THREAD: OnceLock<std::thread::Thread> = OnceLock::new();
    THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("baton-prefault".to_string())
            .spawn(prefault_loop)
            .expect("spawning the prefault thread")
            .thread()
            .clone()
    })
}

/// The prefault thread: sleeps until a writer asks for a window, then populates every window
/// asked for, in chunks, so a file dropped meanwhile is let go within one chunk.
fn prefault_loop() {
    // Below the order path's threads: on a busy core the writers run first, and a window not
    // made present in time costs the writer its own faults, as without this thread.
    // SAFETY: setpriority(2) on this thread's own id changes its nice value and nothing else.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
    let mut live: Vec<Weak<Mapping>> = Vec::new();
    let refresh_every = std::time::Duration::from_millis(MAPPED_REFRESH_MS);
    let mut refreshed = std::time::Instant::now();
    loop {
        std::thread::park_timeout(refresh_every);
        // Pages written back since they were made present are write-protected again: every
        // so often each window is made present anew, from where it was asked.
        let refresh = refreshed.elapsed() >= refresh_every;
        if refresh {
            refreshed = std::time::Instant::now();
        }
        live.extend(
            APPEND_LOGS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .cloned(),
        );
        for weak in live.drain(..) {
            if refresh
                && let Some(mapping) = take_hold(&weak)
                && mapping.moved_lately()
            {
                let from = mapping.wanted_from.load(Ordering::Relaxed);
                mapping.populated_to.store(from, Ordering::Relaxed);
            }
            // One chunk per hold, so a file being dropped waits for one chunk at most.
            while let Some(mapping) = take_hold(&weak) {
                if !populate_chunk(&mapping) {
                    break;
                }
            }
        }
        #[cfg(test)]
        if refresh {
            REFRESHES.fetch_add(1, Ordering::Release);
        }
    }
}

impl Mapping {
    /// At a refresh pass: whether the writer moved within the last [`IDLE_REFRESHES_MAX`]
    /// passes (see `idle_refreshes`).
    fn moved_lately(&self) -> bool {
        let written_to = self.written_to.load(Ordering::Relaxed);
        if self.seen_written_to.swap(written_to, Ordering::Relaxed) != written_to {
            self.idle_refreshes.store(0, Ordering::Relaxed);
            return true;
        }
        let idle = self
            .idle_refreshes
            .load(Ordering::Relaxed)
            .saturating_add(1);
        self.idle_refreshes.store(idle, Ordering::Relaxed);
        idle <= IDLE_REFRESHES_MAX
    }
}

/// Passes of the prefault thread that made every window present anew, for tests.
#[cfg(test)]
static REFRESHES: AtomicUsize = AtomicUsize::new(0);

/// Registers a new append log's mapping with the prefault thread.
fn register(mapping: &Arc<Mapping>) {
    let mut logs = APPEND_LOGS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    logs.retain(|weak| weak.strong_count() > 0);
    mapping.registered.store(true, Ordering::Relaxed);
    logs.push(Arc::downgrade(mapping));
}

/// Takes `mapping` away from the prefault thread and waits until it has let go (at most the one
/// populate call it may be in), so that dropping the owner's reference unmaps it.
fn unregister(mapping: &Arc<Mapping>) {
    // Only the owner clears the flag, so a file never registered or already let go skips the
    // lock.
    if !mapping.registered.load(Ordering::Relaxed) {
        return;
    }
    {
        let mut logs = APPEND_LOGS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !mapping.registered.swap(false, Ordering::Relaxed) {
            return;
        }
        logs.retain(|weak| weak.strong_count() > 0 && weak.as_ptr() != Arc::as_ptr(mapping));
    }
    while Arc::strong_count(mapping) > 1 {
        std::thread::yield_now();
    }
}

/// A strong reference to a mapping the prefault thread may still work on, taken under the
/// registry's lock and only while the mapping is still registered, so that once [`unregister`]
/// has removed it no new reference can appear: even a reference taken only to find the mapping
/// gone could be the last one, unmapping it (and releasing the file's lock) after the owner's
/// drop returned.
fn take_hold(weak: &Weak<Mapping>) -> Option<Arc<Mapping>> {
    let logs = APPEND_LOGS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !logs.iter().any(|registered| registered.ptr_eq(weak)) {
        return None;
    }
    weak.upgrade()
}

/// Makes the next chunk of `mapping`'s asked window present and records how far; false when
/// nothing is left to do (or the kernel refused).
fn populate_chunk(mapping: &Mapping) -> bool {
    let page = page_bytes();
    loop {
        let to = mapping.wanted_to.load(Ordering::Acquire);
        let from = mapping
            .wanted_from
            .load(Ordering::Relaxed)
            .max(mapping.populated_to.load(Ordering::Relaxed));
        if from >= to || mapping.refused.load(Ordering::Relaxed) {
            return false;
        }
        // `end > from` whatever the alignment of either, so every chunk makes progress.
        let start = from - from % page;
        let end = to.min(start + MAPPED_PREFAULT_CHUNK_BYTES);
        // SAFETY: `start..end` lies within the mapping, which `mapping` keeps alive for the call,
        // and below the file's length when the window was asked (files never shrink), so every
        // page is backed. MADV_POPULATE_WRITE faults the pages in as a write would, without
        // changing any byte: a writer copying into the same pages at the same time sees its
        // own bytes and nothing else.
        let code = unsafe {
            libc::madvise(
                mapping.raw.as_mut_ptr().add(start).cast(),
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if code != 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::debug!(%error, "cannot populate a mapped file's next pages; its writer takes its own page faults");
            mapping.refused.store(true, Ordering::Relaxed);
            return false;
        }
        mapping.populated_to.fetch_max(end, Ordering::Release);
        return true;
    }
}

/// The size of a page, which `madvise` ranges start at.
fn page_bytes() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf(3) reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page).unwrap_or(4096).max(1)
    })
}

/// A file length as a mapping length, which must fit the address space.
fn to_usize(path: &Path, len: u64) -> Result<usize, MapError> {
    usize::try_from(len).map_err(|_| {
        io_error(
            path,
            "mmap",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "file larger than the address space",
            ),
        )
    })
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

/// Maps `file`, whose length is `len`, read-write and shared, so writes reach the page cache and
/// the file. The range reserves address space for growth up to `len_max` (capped at
/// [`MAPPED_RESERVE_BYTES_MAX`]) when that is more; if the reservation is refused (an address
/// space limit), just `len` is mapped and growth remaps, as it must anyway past the reservation.
/// An `appendable` mapping is registered with the prefault thread.
fn map_reserved(
    file: &File,
    path: &Path,
    len: usize,
    len_max: u64,
    appendable: bool,
) -> Result<Arc<Mapping>, MapError> {
    let reserved = usize::try_from(len_max.min(MAPPED_RESERVE_BYTES_MAX)).unwrap_or(len);
    let raw = if reserved > len {
        match map_raw(file, reserved) {
            Ok(raw) => raw,
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, reserved, "cannot reserve address space for a file's growth; growing it will remap");
                map_raw(file, len).map_err(|source| io_error(path, "mmap", source))?
            }
        }
    } else {
        map_raw(file, len).map_err(|source| io_error(path, "mmap", source))?
    };
    let mapping = Arc::new(Mapping {
        raw,
        wanted_from: AtomicUsize::new(0),
        wanted_to: AtomicUsize::new(0),
        populated_to: AtomicUsize::new(0),
        registered: AtomicBool::new(false),
        refused: AtomicBool::new(false),
        written_to: AtomicUsize::new(0),
        // Never seen: a new log counts as moved at the first pass.
        seen_written_to: AtomicUsize::new(usize::MAX),
        idle_refreshes: AtomicUsize::new(0),
    });
    if appendable {
        register(&mapping);
    }
    Ok(mapping)
}

/// Maps `len` bytes of `file` from its start, read-write and shared. `len` may pass the file's
/// end: those pages are reserved address space that no slice covers until the file has grown
/// over them.
fn map_raw(file: &File, len: usize) -> io::Result<MmapRaw> {
    // memmap2 marks mapping `unsafe` only for the typed maps; a raw map hands out no reference.
    // What makes our slices of it sound: `file` is owned by one `MappedFile`, is exclusively
    // locked (so no other `MappedFile`, in this process or another baton process, maps it), and
    // is never shrunk below the length slices cover. The remaining assumption, stated in the
    // module doc, is that no process outside baton writes to or truncates the file.
    MmapOptions::new().len(len).map_raw(file)
}

/// Names the file and the step in an I/O failure, which `io::Error` alone does not carry.
fn io_error(path: &Path, operation: &'static str, source: io::Error) -> MapError {
    MapError::Io {
        path: path.display().to_string(),
        operation,
        source,
    }
}

/// Asks the kernel to back the whole pages of `items` with transparent huge pages; call it
/// before they are first touched. Whether the advice was taken (false where transparent huge
/// pages are off).
///
/// A table probed at a random slot per order (the engine's ClOrdID table, 16 MiB by default)
/// touches a page it has not touched lately on nearly every lookup. On a virtual machine whose
/// thread sleeps between orders, such an access measured 10–17 µs at 4 KiB pages (a TLB miss
/// whose walk of both the guest's and the host's page tables starts cold) against 0.5–0.7 µs at
/// 2 MiB pages, which one TLB entry and a shorter walk cover. The kernel here gives huge pages
/// only to memory that asks (`transparent_hugepage/enabled` = `madvise`).
///
/// Only for memory made present at start: the first touch of fresh memory cost 0.7–5.4 ms per
/// 2 MiB on the same machine, which a huge page takes in one fault where small pages spread it
/// over 512; on the order path that is one stall a counterparty sees.
pub fn advise_huge_pages<T>(items: &mut [T]) -> bool {
    advise_whole_pages(items, libc::MADV_HUGEPAGE)
}

/// Faults in the whole pages of `items` as a write would, without changing a byte: memory a
/// caller is about to write (the spare capacity of a vector filled in order) becomes present
/// at a moment of its choosing instead of one page fault at a time on its hot path. Whether the
/// kernel did it (it refuses before Linux 5.14).
pub fn make_present<T>(items: &mut [T]) -> bool {
    advise_whole_pages(items, libc::MADV_POPULATE_WRITE)
}

/// `madvise(advice)` over the whole pages inside `items`; whether the kernel took it. Only for
/// advice that changes how pages are backed, never their bytes: `MADV_HUGEPAGE` and
/// `MADV_POPULATE_WRITE`.
fn advise_whole_pages<T>(items: &mut [T], advice: libc::c_int) -> bool {
    let page = page_bytes();
    let start = items.as_mut_ptr() as usize;
    let end = start + size_of_val(items);
    let from = start.next_multiple_of(page);
    let to = end - end % page;
    if to <= from {
        return false;
    }
    // SAFETY: `from..to` lies within `items`, which the caller holds exclusively for the call,
    // and is page-aligned as madvise(2) requires. Both pieces of advice the callers give change
    // only how the kernel backs those pages (huge pages; present and dirty), never a byte.
    let code = unsafe { libc::madvise(from as *mut libc::c_void, to - from, advice) };
    code == 0
}

/// Bytes of transparent huge pages in the mapping of this process that holds `address`, from
/// `/proc/self/smaps`; `None` when no mapping holds it. For tests that check a table asked for
/// huge pages got them.
#[cfg(test)]
pub(crate) fn huge_page_bytes_at(address: usize) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((from, to)) = range.split_once('-')
            && let (Ok(from), Ok(to)) = (
                usize::from_str_radix(from, 16),
                usize::from_str_radix(to, 16),
            )
        {
            inside = (from..to).contains(&address);
            continue;
        }
        if inside && let Some(kib) = line.strip_prefix("AnonHugePages:") {
            let kib = kib.trim().trim_end_matches("kB").trim();
            return kib.parse::<u64>().ok().map(|kib| kib * 1024);
        }
    }
    None
}

/// Whether this kernel gives transparent huge pages to memory that asks for them.
#[cfg(test)]
pub(crate) fn huge_pages_on_request() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|mode| !mode.contains("[never]"))
}

/// Minor page faults the calling thread has taken so far, for tests that check a path takes none
/// (the count is per thread, so other tests running at the same time do not disturb it).
#[cfg(test)]
pub(crate) fn thread_minor_faults() -> i64 {
    // SAFETY: getrusage(2) writes only the zero-initialised struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointer is valid for the call.
    let code = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(code, 0, "getrusage(RUSAGE_THREAD)");
    usage.ru_minflt
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

    /// Writes one byte into each page of `range`, returning the page faults this thread took.
    fn touch_pages(file: &mut MappedFile, range: std::ops::Range<usize>) -> i64 {
        let page = page_bytes();
        let before = thread_minor_faults();
        let bytes = file.as_mut_slice();
        for at in range.step_by(page) {
            // Volatile, so the compiler keeps every store that the test counts faults of.
            // SAFETY: `at` is within the slice.
            unsafe { std::ptr::write_volatile(bytes.as_mut_ptr().add(at), 1) };
        }
        thread_minor_faults() - before
    }

    #[test]
    fn the_window_ahead_of_the_writer_is_present_before_it_gets_there() {
        let dir = tempfile::tempdir().unwrap();
        let len = 4 * MAPPED_AHEAD_BYTES;
        let mut file =
            MappedFile::open_appendable(&dir.path().join("log"), len as u64, len as u64).unwrap();
        thread_minor_faults();
        file.wrote_to(0);
        wait_populated(&file, MAPPED_AHEAD_BYTES);
        let pages = (MAPPED_AHEAD_BYTES / page_bytes()) as i64;
        // Fresh pages past the window fault on first touch: the count measures what it should.
        let beyond = touch_pages(&mut file, 2 * MAPPED_AHEAD_BYTES..3 * MAPPED_AHEAD_BYTES);
        assert!(beyond > pages / 2, "{beyond} faults on {pages} fresh pages");
        // Within the window the writer takes (almost) none; a few may be pages the kernel wrote
        // back meanwhile and protected again.
        let within = touch_pages(&mut file, 0..MAPPED_AHEAD_BYTES);
        assert!(
            within < pages / 2,
            "{within} faults on {pages} populated pages"
        );
    }

    /// Waits (generously: the machine may be busy) until `file`'s window is present to `to`.
    fn wait_populated(file: &MappedFile, to: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while file.populated_to() < to {
            assert!(
                std::time::Instant::now() < deadline,
                "the prefault thread never populated {} to {to} (got to {})",
                file.path().display(),
                file.populated_to()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// An append log of two windows in `dir` whose writer is at its start, with the first
    /// window made present.
    fn log_with_its_first_window_present(dir: &Path) -> MappedFile {
        let len = 2 * MAPPED_AHEAD_BYTES;
        let mut file =
            MappedFile::open_appendable(&dir.join("log"), len as u64, len as u64).unwrap();
        file.wrote_to(0);
        wait_populated(&file, MAPPED_AHEAD_BYTES);
        file
    }

    #[test]
    fn a_window_written_back_before_the_writer_gets_there_is_made_present_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = log_with_its_first_window_present(dir.path());
        // What the kernel does to pages dirty for 30 s: write them back and write-protect them.
        file.flush().unwrap();
        // Two passes: the one under way when the file was flushed may have been past it.
        wait_refreshes(2);
        let pages = (MAPPED_AHEAD_BYTES / page_bytes()) as i64;
        let within = touch_pages(&mut file, 0..MAPPED_AHEAD_BYTES);
        assert!(
            within < pages / 2,
            "{within} faults on {pages} pages made present again"
        );
    }

    /// Waits until the prefault thread has made `passes` more refresh passes.
    fn wait_refreshes(passes: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let from = REFRESHES.load(Ordering::Acquire);
        while REFRESHES.load(Ordering::Acquire) < from + passes {
            assert!(std::time::Instant::now() < deadline, "no refresh pass");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn an_idle_logs_window_is_left_to_the_kernel_and_taken_up_again_when_its_writer_moves() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = log_with_its_first_window_present(dir.path());
        // The writer stays put past the idle passes: the window is no longer made present
        // again, so pages the kernel wrote back stay clean (and are not written again).
        wait_refreshes(IDLE_REFRESHES_MAX + 2);
        file.flush().unwrap();
        wait_refreshes(2);
        let pages = (MAPPED_AHEAD_BYTES / page_bytes()) as i64;
        let half = MAPPED_AHEAD_BYTES / 2;
        let idle = touch_pages(&mut file, 0..half);
        assert!(
            idle >= pages / 4,
            "{idle} faults on {} pages of an idle log's window: it was refreshed",
            pages / 2
        );
        // It moves: the rest of its window is made present again at the next passes.
        file.wrote_to(half);
        file.flush().unwrap();
        wait_refreshes(2);
        let moved = touch_pages(&mut file, half..MAPPED_AHEAD_BYTES);
        assert!(
            moved < pages / 4,
            "{moved} faults on {} pages of a moving log's window",
            pages / 2
        );
    }

    #[test]
    fn unaligned_windows_are_served_and_the_thread_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * MAPPED_AHEAD_BYTES + 100;
        let mut first =
            MappedFile::open_appendable(&dir.path().join("first"), len as u64, len as u64).unwrap();
        let mut second =
            MappedFile::open_appendable(&dir.path().join("second"), len as u64, len as u64)
                .unwrap();
        first.wrote_to(100);
        wait_populated(&first, 100 + MAPPED_AHEAD_BYTES);
        // A window ending mid-page, then one ending at the file's unaligned end.
        first.wrote_to(MAPPED_AHEAD_BYTES + 4000);
        first.wrote_to(2 * MAPPED_AHEAD_BYTES + 200);
        wait_populated(&first, len);
        second.wrote_to(0);
        wait_populated(&second, MAPPED_AHEAD_BYTES);
    }

    #[test]
    fn a_window_is_asked_for_once_per_half_window_and_never_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let len = MAPPED_AHEAD_BYTES + MAPPED_AHEAD_BYTES / 4;
        let mut file =
            MappedFile::open_appendable(&dir.path().join("log"), len as u64, len as u64).unwrap();
        file.wrote_to(100);
        assert_eq!(file.asked_to, 100 + MAPPED_AHEAD_BYTES);
        file.wrote_to(MAPPED_AHEAD_BYTES / 2);
        assert_eq!(
            file.asked_to,
            100 + MAPPED_AHEAD_BYTES,
            "still more than half a window ahead"
        );
        file.wrote_to(MAPPED_AHEAD_BYTES / 2 + 100);
        assert_eq!(file.asked_to, len, "clamped to the end of the file");
        file.grow(2 * len as u64).unwrap();
        file.wrote_to(MAPPED_AHEAD_BYTES / 2 + 200);
        assert_eq!(
            file.asked_to,
            MAPPED_AHEAD_BYTES / 2 + 200 + MAPPED_AHEAD_BYTES
        );
        // A writer that goes back (a store cut to its start) is asked for again from there.
        file.wrote_to(0);
        assert_eq!(file.asked_to, MAPPED_AHEAD_BYTES);
        assert_eq!(file.map.wanted_from.load(Ordering::Relaxed), 0);
        // A file opened for random access asks for nothing.
        let mut plain = MappedFile::open(&dir.path().join("plain"), len as u64).unwrap();
        plain.wrote_to(0);
        assert_eq!(plain.asked_to, 0);
    }

    #[test]
    fn an_append_log_grows_within_its_reservation_without_moving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = MappedFile::open_appendable(&path, 4096, 1 << 20).unwrap();
        file.as_mut_slice()[4095] = 7;
        let address = file.as_slice().as_ptr();
        file.grow(1 << 19).unwrap();
        assert_eq!(file.as_slice().as_ptr(), address, "grown in place");
        assert_eq!(file.len(), 1 << 19);
        assert_eq!(file.as_slice()[4095], 7);
        file.as_mut_slice()[(1 << 19) - 1] = 8;
        // Past the reservation it remaps, keeping every byte.
        file.grow(3 << 20).unwrap();
        assert_eq!(file.len(), 3 << 20);
        assert_eq!(file.as_slice()[4095], 7);
        assert_eq!(file.as_slice()[(1 << 19) - 1], 8);
        // The reservation past the end of the file is never flushed or handed out.
        assert!(file.flush_range(3 << 20, 1).is_err());
        file.flush().unwrap();
        drop(file);
        // Dropping it releases the lock even while the prefault thread may hold the mapping.
        let file = MappedFile::open_appendable(&path, 4096, 1 << 20).unwrap();
        assert_eq!(file.len(), 3 << 20);
        assert_eq!(file.as_slice()[(1 << 19) - 1], 8);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
    }
}
