//! The shared-memory link: the same byte stream as on a socket, carried by two single-producer
//! single-consumer rings in one memory-mapped file that gateway and engine both map, for an
//! engine on the gateway's host (`shm:///path/to.sock`, or `[link] transport = "shm"`).
//!
//! A socket hop costs a system call on each side and a copy through the kernel per write, and
//! usually a wake-up of a sleeping reader; a ring costs a memory copy, and a sleeping reader only
//! when it really sleeps.
//!
//! # How a link is set up
//!
//! The engine listens on a Unix socket as for `unix://`. For each connection it creates an
//! anonymous memory file (`memfd`), lays out two rings in it and sends the file's descriptor
//! over the socket with [`crate::constants::LINK_SHM_PREFACE`] (`SCM_RIGHTS`); the gateway maps
//! the same file. From then on every link frame, the handshake included, goes through the rings,
//! byte for byte what the socket would carry, through the same codec. The socket stays open for
//! two things only:
//!
//! - **liveness**: a process that dies closes its end, so the survivor sees end of stream
//!   exactly as on a plain socket link (after it has read what the dead peer put in the ring);
//! - **wake-ups**: a reader that finds its ring empty spins for a configured while, then raises
//!   its ring's `reader_waiting` flag, checks the ring once more and sleeps reading the socket.
//!   A writer that publishes bytes clears that flag, and only when it was raised sends one byte
//!   on the socket. Both sides order their flag and position accesses with sequentially
//!   consistent fences (a Dekker handshake), so either the writer sees the flag or the reader
//!   sees the bytes: a wake-up is never lost, and a busy link costs no system call at all.
//!
//! A writer that finds its ring full polls every [`crate::constants::LINK_SHM_FULL_POLL_US`]:
//! a ring holds more than the gateway's whole in-flight window, so full means the reader is far
//! behind, and no wake-up path back is needed.
//!
//! # Guarantees
//!
//! - A reader sees only bytes the writer has finished copying: the writer publishes by moving
//!   its position with release ordering after the copy, the reader loads it with acquire.
//! - A write of at most a ring's size is published at once, whole, or not at all (the writer
//!   waits for room): a batch of frames never appears in part. Larger writes (snapshots) are
//!   published in pieces, which the frame decoder puts together as it does socket reads.
//! - Positions from the peer are checked on every access: a peer that corrupts them is a
//!   [`RingError`] that ends the link, never an out-of-bounds access.
//!
//! Every `unsafe` block of the shared-memory link is in this module; each says why it is sound.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::constants::{LINK_SHM_FULL_POLL_US, LINK_SHM_PREFACE, LINK_SHM_RING_BYTES};

/// Identifies a baton link region, so a gateway never reads rings out of some other file.
const MAGIC: u64 = u64::from_le_bytes(*b"BATONSHM");

/// Layout version of the region; a gateway refuses a region of another layout by name.
const LAYOUT_VERSION: u64 = 1;

/// Bytes of one cache line: each position and flag sits on its own, so the producer's and the
/// consumer's stores never bounce one line between cores.
const LINE: usize = 64;

/// Where the rings' data starts: one page for the header and the control lines.
const DATA_OFFSET: usize = 4096;

/// Offsets in the header page. The control block of ring `r` (0 = engine to gateway, 1 = gateway
/// to engine) starts at `CONTROL_OFFSET + r * CONTROL_BYTES`: tail (the producer's position),
/// head (the consumer's), `reader_waiting`, each on its own line.
const HEADER_MAGIC: usize = 0;
/// The layout version, after the magic.
const HEADER_VERSION: usize = 8;
/// Each ring's capacity in bytes, after the version.
const HEADER_RING_BYTES: usize = 16;
/// The first ring's control block.
const CONTROL_OFFSET: usize = 4 * LINE;
/// One ring's control block: three lines.
const CONTROL_BYTES: usize = 3 * LINE;

const _: () = assert!(CONTROL_OFFSET + 2 * CONTROL_BYTES <= DATA_OFFSET);

/// Which ring: the engine writes [`Direction::ToGateway`], the gateway [`Direction::ToEngine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Outputs and answers, engine to gateway.
    ToGateway = 0,
    /// Inputs and requests, gateway to engine.
    ToEngine = 1,
}

/// Why a shared-memory region or ring cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// Creating, sizing or mapping the memory file failed.
    #[error("shared-memory link: {0}")]
    Io(#[from] io::Error),
    /// The region handed over is not one this build lays out.
    #[error(
        "shared-memory link: the region is not a baton link region of layout {LAYOUT_VERSION}: {0}"
    )]
    Layout(String),
    /// The peer's position contradicts ours: it wrote past what we freed, or consumed what was
    /// never written. The link cannot be trusted any more.
    #[error(
        "shared-memory link: ring positions are inconsistent (tail {tail}, head {head}, capacity {capacity})"
    )]
    Corrupt {
        /// The producer's position.
        tail: u64,
        /// The consumer's position.
        head: u64,
        /// The ring's size.
        capacity: usize,
    },
}

impl From<RingError> for io::Error {
    /// The transports speak `io::Error`; a corrupt ring is invalid data from the peer.
    fn from(error: RingError) -> io::Error {
        match error {
            RingError::Io(error) => error,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// The mapped region both processes share.
#[derive(Debug)]
struct Region {
    /// The mapping; raw because the peer writes into it concurrently (no `&mut [u8]` may exist).
    map: MmapRaw,
    /// Each ring's size in bytes, a power of two.
    ring_bytes: usize,
}

impl Region {
    /// Creates a memory file for two rings of `ring_bytes`, maps it and writes the header; the
    /// file goes to the peer, the region stays here.
    fn create(ring_bytes: usize) -> Result<(OwnedFd, Region), RingError> {
        if !ring_bytes.is_power_of_two() || ring_bytes < LINE {
            return Err(RingError::Layout(format!(
                "ring size {ring_bytes} is not a power of two of at least {LINE}"
            )));
        }
        let name = c"baton-link";
        // SAFETY: memfd_create(2) reads a NUL-terminated name and returns a new descriptor that
        // nothing else owns, or -1.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw == -1 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `raw` was just created and is owned here alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = File::from(fd.try_clone()?);
        file.set_len((DATA_OFFSET + 2 * ring_bytes) as u64)?;
        let region = Region::map(&file, ring_bytes)?;
        // A fresh memory file is zeroed: positions and flags start at 0. The header goes last.
        region
            .word(HEADER_RING_BYTES)
            .store(ring_bytes as u64, Ordering::Relaxed);
        region
            .word(HEADER_VERSION)
            .store(LAYOUT_VERSION, Ordering::Relaxed);
        region.word(HEADER_MAGIC).store(MAGIC, Ordering::Release);
        Ok((fd, region))
    }

    /// Maps a region created by the peer, checking its header against the file's size.
    fn open(fd: OwnedFd) -> Result<Region, RingError> {
        let file = File::from(fd);
        let len = file.metadata()?.len();
        if len < DATA_OFFSET as u64 {
            return Err(RingError::Layout(format!(
                "{len} bytes, too short for a header"
            )));
        }
        // Map the header alone first, to learn the ring size.
        let header = Region::map_len(&file, DATA_OFFSET)?;
        let probe = Region {
            map: header,
            ring_bytes: 0,
        };
        let magic = probe.word(HEADER_MAGIC).load(Ordering::Acquire);
        let version = probe.word(HEADER_VERSION).load(Ordering::Relaxed);
        let ring_bytes = probe.word(HEADER_RING_BYTES).load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(RingError::Layout("wrong magic".into()));
        }
        if version != LAYOUT_VERSION {
            return Err(RingError::Layout(format!("layout version {version}")));
        }
        let ring_bytes = usize::try_from(ring_bytes)
            .ok()
            .filter(|bytes| bytes.is_power_of_two() && *bytes >= LINE && *bytes <= 1 << 40)
            .ok_or_else(|| RingError::Layout(format!("ring size {ring_bytes}")))?;
        if len < (DATA_OFFSET + 2 * ring_bytes) as u64 {
            return Err(RingError::Layout(format!(
                "{len} bytes, too short for two rings of {ring_bytes}"
            )));
        }
        Region::map(&file, ring_bytes)
    }

    /// Maps the header and both rings, pages populated up front so the first frames through a
    /// new link take no page faults.
    fn map(file: &File, ring_bytes: usize) -> Result<Region, RingError> {
        let map = MmapOptions::new()
            .len(DATA_OFFSET + 2 * ring_bytes)
            .populate()
            .map_raw(file)?;
        Ok(Region { map, ring_bytes })
    }

    /// Maps the first `len` bytes of `file`.
    fn map_len(file: &File, len: usize) -> Result<MmapRaw, RingError> {
        Ok(MmapOptions::new().len(len).map_raw(file)?)
    }

    /// The 8-byte word at `offset` of the header page, as an atomic.
    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= DATA_OFFSET.min(self.map.len()));
        // SAFETY: the offset is 8-byte aligned inside the mapping (asserted; the mapping is
        // page-aligned), and the header page is only ever accessed through atomics, by both
        // processes, so no non-atomic access aliases it. The reference lives no longer than
        // `self`, which owns the mapping.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// The 4-byte flag at `offset` of the header page, as an atomic.
    fn flag(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= DATA_OFFSET.min(self.map.len()));
        // SAFETY: as for `word`: aligned, inside the mapping, accessed only atomically.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU32) }
    }

    /// The producer's position of `ring`: bytes ever written.
    fn tail(&self, ring: Direction) -> &AtomicU64 {
        self.word(CONTROL_OFFSET + ring as usize * CONTROL_BYTES)
    }

    /// The consumer's position of `ring`: bytes ever read.
    fn head(&self, ring: Direction) -> &AtomicU64 {
        self.word(CONTROL_OFFSET + ring as usize * CONTROL_BYTES + LINE)
    }

    /// 1 while the consumer of `ring` may be asleep on the socket.
    fn reader_waiting(&self, ring: Direction) -> &AtomicU32 {
        self.flag(CONTROL_OFFSET + ring as usize * CONTROL_BYTES + 2 * LINE)
    }

    /// The first data byte of `ring`.
    fn data(&self, ring: Direction) -> *mut u8 {
        // SAFETY (of the pointer arithmetic): the mapping is DATA_OFFSET + 2 * ring_bytes long
        // (checked at map time), so both rings' data lies inside it.
        unsafe {
            self.map
                .as_mut_ptr()
                .add(DATA_OFFSET + ring as usize * self.ring_bytes)
        }
    }
}

/// The writing end of one ring. Exactly one exists per ring across both processes (the engine
/// holds the [`Direction::ToGateway`] producer, the gateway the other), which is what makes the
/// unsynchronised copy into the free part of the ring sound.
#[derive(Debug)]
pub struct Producer {
    /// The shared region.
    region: Arc<Region>,
    /// Which ring.
    ring: Direction,
    /// Our own position, mirrored here: only we move it.
    tail: u64,
}

/// The reading end of one ring; one per ring across both processes, like [`Producer`].
#[derive(Debug)]
pub struct Consumer {
    /// The shared region.
    region: Arc<Region>,
    /// Which ring.
    ring: Direction,
    /// Our own position, mirrored here: only we move it.
    head: u64,
}

// SAFETY: a Producer or Consumer is the only handle on its end of its ring; the region is
// shared memory accessed through atomics (control) and through copies into ranges the protocol
// gives one side at a time (data), from whichever thread holds the handle.
unsafe impl Send for Producer {}
// SAFETY: as for Producer.
unsafe impl Send for Consumer {}
// SAFETY: the region is only read through atomics or copied from ranges handed over by the
// ring protocol; `&Region` offers nothing else.
unsafe impl Sync for Region {}
// SAFETY: MmapRaw is a pointer and a length owned by the region; moving it between threads is
// moving the ownership of the mapping.
unsafe impl Send for Region {}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Bytes published (0: the ring is full for this write).
    pub bytes: usize,
    /// The reader had raised its flag: it may be asleep, and the writer must wake it.
    pub wake: bool,
}

impl Producer {
    /// The ring's size in bytes.
    pub fn capacity(&self) -> usize {
        self.region.ring_bytes
    }

    /// Publishes `buf`, whole if it is at most the ring's size (or nothing while there is not
    /// room for all of it), else as much as there is room for. Never blocks.
    pub fn try_write(&mut self, buf: &[u8]) -> Result<Written, RingError> {
        let capacity = self.region.ring_bytes;
        let head = self.region.head(self.ring).load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > capacity as u64 {
            return Err(RingError::Corrupt {
                tail: self.tail,
                head,
                capacity,
            });
        }
        let free = capacity - used as usize;
        let n = if buf.len() <= capacity {
            if free < buf.len() { 0 } else { buf.len() }
        } else {
            free
        };
        if n == 0 {
            return Ok(Written {
                bytes: 0,
                wake: false,
            });
        }
        let start = (self.tail as usize) & (capacity - 1);
        let first = n.min(capacity - start);
        let data = self.region.data(self.ring);
        // SAFETY: [start, start + first) and [0, n - first) lie inside this ring's data and are
        // free: the consumer has read everything before `head`, and we own [tail, head +
        // capacity) until we publish it below; `buf` is our own memory of at least n bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), data.add(start), first);
            std::ptr::copy_nonoverlapping(buf.as_ptr().add(first), data, n - first);
        }
        self.tail = self.tail.wrapping_add(n as u64);
        self.region
            .tail(self.ring)
            .store(self.tail, Ordering::Release);
        // Dekker with `Consumer::prepare_sleep`: our tail store before its flag load, or its
        // flag store before our load below.
        fence(Ordering::SeqCst);
        let waiting = self.region.reader_waiting(self.ring);
        let wake = waiting.load(Ordering::Relaxed) == 1 && waiting.swap(0, Ordering::AcqRel) == 1;
        Ok(Written { bytes: n, wake })
    }
}

impl Consumer {
    /// Bytes published and not read yet.
    pub fn available(&self) -> Result<usize, RingError> {
        let capacity = self.region.ring_bytes;
        let tail = self.region.tail(self.ring).load(Ordering::Acquire);
        let available = tail.wrapping_sub(self.head);
        if available > capacity as u64 {
            return Err(RingError::Corrupt {
                tail,
                head: self.head,
                capacity,
            });
        }
        Ok(available as usize)
    }

    /// Copies up to `buf.len()` published bytes into `buf` and frees them; 0 when empty.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        let n = self.available()?.min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let capacity = self.region.ring_bytes;
        let start = (self.head as usize) & (capacity - 1);
        let first = n.min(capacity - start);
        let data = self.region.data(self.ring);
        // SAFETY: [head, head + n) was published by the producer (its tail, loaded with acquire
        // in `available`, is at least head + n), so those bytes are written and the producer
        // does not touch them until we move head past them; `buf` has room for n bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.add(start), buf.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, buf.as_mut_ptr().add(first), n - first);
        }
        self.head = self.head.wrapping_add(n as u64);
        self.region
            .head(self.ring)
            .store(self.head, Ordering::Release);
        Ok(n)
    }

    /// Announces that we are about to sleep: raises the flag and checks the ring once more.
    /// `Ok(true)`: still empty, sleep (the writer will wake us); `Ok(false)`: bytes arrived,
    /// read them (the flag is lowered again).
    pub fn prepare_sleep(&mut self) -> Result<bool, RingError> {
        let waiting = self.region.reader_waiting(self.ring);
        waiting.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.available()? == 0 {
            return Ok(true);
        }
        waiting.store(0, Ordering::Relaxed);
        Ok(false)
    }

    /// Lowers the flag after a sleep (the writer may have lowered it already).
    pub fn woke(&mut self) {
        self.region
            .reader_waiting(self.ring)
            .store(0, Ordering::Relaxed);
    }

    /// Spins up to `spin` for bytes to arrive; whether they did.
    pub fn spin_for(&self, spin: Duration) -> Result<bool, RingError> {
        if spin.is_zero() {
            return Ok(false);
        }
        let until = Instant::now() + spin;
        loop {
            for _ in 0..64 {
                if self.available()? > 0 {
                    return Ok(true);
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= until {
                return Ok(false);
            }
        }
    }
}

/// Both ends of both rings of a new region in this process, for tests and measurements of the
/// rings alone: `(engine's producer, gateway's consumer)` of the engine-to-gateway ring.
pub fn ring_pair(ring_bytes: usize) -> Result<(Producer, Consumer), RingError> {
    let (_fd, region) = Region::create(ring_bytes)?;
    let region = Arc::new(region);
    Ok((
        Producer {
            region: region.clone(),
            ring: Direction::ToGateway,
            tail: 0,
        },
        Consumer {
            region,
            ring: Direction::ToGateway,
            head: 0,
        },
    ))
}

/// The ends one side holds: it writes one ring and reads the other.
fn ends(region: Region, writes: Direction) -> (Producer, Consumer) {
    let reads = match writes {
        Direction::ToGateway => Direction::ToEngine,
        Direction::ToEngine => Direction::ToGateway,
    };
    let region = Arc::new(region);
    // A new link starts at position 0 in both rings; a region is never reused across links.
    (
        Producer {
            region: region.clone(),
            ring: writes,
            tail: region.tail(writes).load(Ordering::Acquire),
        },
        Consumer {
            region: region.clone(),
            ring: reads,
            head: region.head(reads).load(Ordering::Acquire),
        },
    )
}

/// Sends one byte on `socket` without blocking and without SIGPIPE: a wake-up. A full socket
/// buffer already holds wake-ups the peer has not read, so dropping this one loses nothing.
fn send_wake(socket: &impl AsRawFd) -> io::Result<()> {
    let byte = 1u8;
    // SAFETY: send(2) reads one byte from a live local; the descriptor is borrowed for the call.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            (&byte as *const u8).cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent >= 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
        _ => Err(error),
    }
}

/// Reads whatever wake-ups are waiting on `socket` without blocking: `Ok(true)` when the peer
/// has closed it.
fn drain_wakes(socket: &impl AsRawFd) -> io::Result<bool> {
    let mut scratch = [0u8; 64];
    loop {
        // SAFETY: recv(2) writes at most scratch.len() bytes into our local buffer.
        let received = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                scratch.as_mut_ptr().cast(),
                scratch.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match received {
            0 => return Ok(true),
            n if n > 0 => continue,
            _ => {
                let error = io::Error::last_os_error();
                return match error.kind() {
                    io::ErrorKind::WouldBlock => Ok(false),
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::ConnectionReset => Ok(true),
                    _ => Err(error),
                };
            }
        }
    }
}

/// The engine's end of a shared-memory link: blocking reads and writes with the timeouts a
/// socket would have, over the rings, with the socket for wake-ups and liveness.
#[derive(Debug)]
pub(crate) struct ShmConn {
    /// The Unix connection the region came over.
    socket: UnixStream,
    /// Outputs and answers to the gateway.
    tx: Producer,
    /// Inputs and requests from the gateway.
    rx: Consumer,
    /// How long a read waits for bytes; `None` waits for ever.
    read_timeout: Option<Duration>,
    /// How long a write waits for room; `None` waits for ever.
    write_timeout: Option<Duration>,
    /// Reads and writes return `WouldBlock` instead of waiting.
    nonblocking: bool,
    /// The gateway closed its end: once the ring is drained, reads return end of stream.
    peer_gone: bool,
    /// How long a read spins on an empty ring before it sleeps.
    spin: Duration,
}

impl ShmConn {
    /// Offers a new region to the gateway on a just-accepted connection.
    pub(crate) fn offer(socket: UnixStream) -> io::Result<ShmConn> {
        let (fd, region) = Region::create(LINK_SHM_RING_BYTES)?;
        crate::handover::send_bytes(socket.as_fd(), LINK_SHM_PREFACE, Some(fd.as_fd()))
            .map_err(|error| io::Error::other(error.to_string()))?;
        // The region is mapped here and in the gateway; the descriptor itself is not needed.
        drop(fd);
        let (tx, rx) = ends(region, Direction::ToGateway);
        Ok(ShmConn {
            socket,
            tx,
            rx,
            read_timeout: None,
            write_timeout: None,
            nonblocking: false,
            peer_gone: false,
            spin: Duration::from_micros(crate::constants::LINK_SHM_SPIN_US_DEFAULT),
        })
    }

    /// See [`super::transport::Conn::set_nonblocking`].
    pub(crate) fn set_nonblocking(&mut self, nonblocking: bool) {
        self.nonblocking = nonblocking;
    }

    /// See [`super::transport::Conn::configure`].
    pub(crate) fn configure(
        &mut self,
        read_timeout: Duration,
        write_timeout: Duration,
        spin: Duration,
    ) -> io::Result<()> {
        self.read_timeout = Some(read_timeout);
        self.write_timeout = Some(write_timeout);
        self.spin = spin;
        self.socket.set_read_timeout(Some(read_timeout))
    }

    /// Closes the socket both ways: the gateway sees end of stream after draining the ring.
    pub(crate) fn shutdown(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Sleeps on the socket until a wake-up, end of stream or the read timeout: `false` on
    /// timeout.
    fn sleep(&mut self) -> io::Result<bool> {
        let mut scratch = [0u8; 64];
        let slept = match (&self.socket).read(&mut scratch) {
            Ok(0) => {
                self.peer_gone = true;
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {
                self.peer_gone = true;
                Ok(true)
            }
            Err(error) => Err(error),
        };
        self.rx.woke();
        slept
    }
}

impl Read for ShmConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.rx.try_read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if self.peer_gone {
                return Ok(0);
            }
            if self.nonblocking {
                if drain_wakes(&self.socket)? {
                    self.peer_gone = true;
                    continue;
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.rx.spin_for(self.spin)? || !self.rx.prepare_sleep()? {
                continue;
            }
            if !self.sleep()? {
                // Bytes may have come with no wake-up needed after all (the flag was lowered).
                if self.rx.available()? > 0 {
                    continue;
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }
}

impl Write for ShmConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let started = Instant::now();
        loop {
            let written = self.tx.try_write(buf)?;
            if written.wake {
                send_wake(&self.socket)?;
            }
            if written.bytes > 0 || buf.is_empty() {
                return Ok(written.bytes);
            }
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            // Full: the gateway is a whole ring behind. A gateway that died never drains it.
            if drain_wakes(&self.socket)? {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if self
                .write_timeout
                .is_some_and(|timeout| started.elapsed() >= timeout)
            {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::sleep(Duration::from_micros(LINK_SHM_FULL_POLL_US));
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Maps the region the engine offers on a just-connected socket: waits for the preface with the
/// descriptor, and refuses anything else with a reason naming the setting.
pub(crate) async fn accept_offer(
    socket: &tokio::net::UnixStream,
) -> Result<(Producer, Consumer), io::Error> {
    let (bytes, mut fds) = loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || {
            crate::handover::recv_bytes(socket.as_fd(), false).map_err(|error| match error {
                crate::handover::HandoverError::Io(error) => error,
                crate::handover::HandoverError::Closed => {
                    io::Error::from(io::ErrorKind::UnexpectedEof)
                }
                other => io::Error::other(other.to_string()),
            })
        }) {
            Ok(received) => break received,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    };
    if bytes != LINK_SHM_PREFACE || fds.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the engine did not offer a shared-memory link: set [link] transport = \"shm\" (or \
             listen on shm://) on the engine too, or use unix:// on both sides",
        ));
    }
    let region = Region::open(fds.remove(0))?;
    Ok(ends(region, Direction::ToEngine))
}

/// The gateway's reading half: frames from the engine, sleeping on the socket's read half.
pub(crate) struct ShmReadHalf {
    /// The engine-to-gateway ring.
    rx: Consumer,
    /// The socket's read half: wake-ups and end of stream.
    socket: tokio::net::unix::OwnedReadHalf,
    /// How long a read spins on an empty ring before it sleeps.
    spin: Duration,
    /// The engine closed its end: once the ring is drained, reads return end of stream.
    peer_gone: bool,
}

/// The gateway's writing half: inputs and requests to the engine.
pub(crate) struct ShmWriteHalf {
    /// The gateway-to-engine ring.
    tx: Producer,
    /// The socket's write half: wake-ups, and shut down to end the link.
    socket: tokio::net::unix::OwnedWriteHalf,
    /// While the ring is full: when to look again.
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Splits a gateway-side connection whose region is mapped into its halves.
pub(crate) fn gateway_halves(
    socket: tokio::net::UnixStream,
    (tx, rx): (Producer, Consumer),
    spin: Duration,
) -> (ShmReadHalf, ShmWriteHalf) {
    let (read, write) = socket.into_split();
    (
        ShmReadHalf {
            rx,
            socket: read,
            spin,
            peer_gone: false,
        },
        ShmWriteHalf {
            tx,
            socket: write,
            backoff: None,
        },
    )
}

impl AsyncRead for ShmReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let n = this.rx.try_read(buf.initialize_unfilled())?;
            if n > 0 || buf.remaining() == 0 {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.peer_gone {
                return Poll::Ready(Ok(()));
            }
            if this.rx.spin_for(this.spin)? || !this.rx.prepare_sleep()? {
                continue;
            }
            let mut scratch = [0u8; 64];
            let mut wakes = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.socket).poll_read(cx, &mut wakes) {
                // Asleep with the flag raised: the engine's next write sends a byte.
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    if wakes.filled().is_empty() {
                        this.peer_gone = true;
                    }
                    this.rx.woke();
                }
                Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => {
                    this.peer_gone = true;
                    this.rx.woke();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for ShmWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if let Some(backoff) = this.backoff.as_mut() {
                if backoff.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.backoff = None;
            }
            let written = this.tx.try_write(buf)?;
            if written.wake {
                send_wake(this.socket.as_ref())?;
            }
            if written.bytes > 0 || buf.is_empty() {
                return Poll::Ready(Ok(written.bytes));
            }
            // Full: the engine is a whole ring behind. The caller's write timeout bounds this,
            // and a dead engine is seen by the reading half.
            this.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_micros(
                LINK_SHM_FULL_POLL_US,
            ))));
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bytes_wrap_around_the_end_of_the_ring() {
        let (mut tx, mut rx) = ring_pair(64).unwrap();
        let mut out = [0u8; 64];
        // Move both positions to 50, so the next write straddles the end.
        assert_eq!(tx.try_write(&[7; 50]).unwrap().bytes, 50);
        assert_eq!(rx.try_read(&mut out).unwrap(), 50);
        let message: Vec<u8> = (0..40).collect();
        assert_eq!(tx.try_write(&message).unwrap().bytes, 40);
        assert_eq!(rx.try_read(&mut out).unwrap(), 40);
        assert_eq!(&out[..40], &message[..]);
    }

    #[test]
    fn a_write_that_does_not_fit_is_not_published_in_part() {
        let (mut tx, mut rx) = ring_pair(64).unwrap();
        assert_eq!(tx.try_write(&[1; 40]).unwrap().bytes, 40);
        // 24 bytes free: a 30-byte write waits whole.
        assert_eq!(tx.try_write(&[2; 30]).unwrap().bytes, 0);
        assert_eq!(rx.available().unwrap(), 40);
        // Exactly full is fine, and a full ring takes nothing more.
        assert_eq!(tx.try_write(&[3; 24]).unwrap().bytes, 24);
        assert_eq!(tx.try_write(&[4; 1]).unwrap().bytes, 0);
        let mut out = [0u8; 64];
        assert_eq!(rx.try_read(&mut out).unwrap(), 64);
        assert_eq!(&out[..40], &[1; 40]);
        assert_eq!(&out[40..], &[3; 24]);
        // A write larger than the ring goes in pieces of what is free.
        assert_eq!(tx.try_write(&[5; 100]).unwrap().bytes, 64);
        assert_eq!(rx.try_read(&mut out[..10]).unwrap(), 10);
        assert_eq!(tx.try_write(&[5; 36]).unwrap().bytes, 0);
        assert_eq!(tx.try_write(&[5; 10]).unwrap().bytes, 10);
    }

    #[test]
    fn a_writer_wakes_the_reader_only_when_it_may_sleep() {
        let (mut tx, mut rx) = ring_pair(64).unwrap();
        assert!(!tx.try_write(&[1]).unwrap().wake);
        let mut out = [0u8; 8];
        rx.try_read(&mut out).unwrap();
        assert!(rx.prepare_sleep().unwrap());
        let written = tx.try_write(&[2]).unwrap();
        assert!(written.wake);
        // One wake-up per sleep: the flag was lowered by the writer.
        assert!(!tx.try_write(&[3]).unwrap().wake);
        // A reader that finds bytes when it announces its sleep does not sleep.
        assert!(!rx.prepare_sleep().unwrap());
        assert!(!tx.try_write(&[4]).unwrap().wake);
    }

    #[test]
    fn corrupt_positions_are_an_error_not_an_access() {
        let (mut tx, mut rx) = ring_pair(64).unwrap();
        // The peer claims to have written a ring and a half.
        tx.region
            .tail(Direction::ToGateway)
            .store(96, Ordering::Release);
        let mut out = [0u8; 8];
        assert!(matches!(
            rx.try_read(&mut out),
            Err(RingError::Corrupt { tail: 96, .. })
        ));
        // The peer claims to have read what was never written.
        tx.region
            .head(Direction::ToGateway)
            .store(1_000, Ordering::Release);
        tx.tail = 0;
        assert!(matches!(tx.try_write(&[1]), Err(RingError::Corrupt { .. })));
    }

    #[test]
    fn a_region_from_elsewhere_is_refused() {
        let (fd, region) = Region::create(64).unwrap();
        region.word(HEADER_MAGIC).store(0, Ordering::Release);
        let error = Region::open(fd.try_clone().unwrap()).unwrap_err();
        assert!(error.to_string().contains("magic"), "{error}");
        region.word(HEADER_MAGIC).store(MAGIC, Ordering::Release);
        region
            .word(HEADER_RING_BYTES)
            .store(1 << 20, Ordering::Release);
        let error = Region::open(fd).unwrap_err();
        assert!(error.to_string().contains("too short"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// A writer thread sends frames of random sizes (each a length and its bytes, some
        /// larger than the ring) while the reader reads with random buffer sizes: the reader
        /// gets exactly the bytes sent, in order, and at every moment what it has is a prefix
        /// of the stream ending on a write boundary for every write that fits the ring.
        #[test]
        fn random_frames_arrive_whole_and_in_order(
            sizes in proptest::collection::vec(0usize..300, 1..200),
            reads in proptest::collection::vec(1usize..200, 1..50),
        ) {
            let ring = 256;
            let (mut tx, mut rx) = ring_pair(ring).unwrap();
            let frames: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| (0..size).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            let expected: Vec<u8> = frames.concat();
            let boundaries: std::collections::BTreeSet<usize> = frames
                .iter()
                .scan(0, |end, frame| { *end += frame.len(); Some((*end, frame.len())) })
                .filter(|&(_, len)| len <= ring)
                .map(|(end, _)| end)
                .collect();
            let writer = std::thread::spawn(move || {
                for frame in &frames {
                    let mut sent = 0;
                    while sent < frame.len() {
                        sent += tx.try_write(&frame[sent..]).unwrap().bytes;
                        std::hint::spin_loop();
                    }
                }
            });
            let mut got = Vec::new();
            let mut buf = [0u8; 200];
            let mut turn = 0;
            while got.len() < expected.len() {
                let want = reads[turn % reads.len()];
                turn += 1;
                let available = rx.available().unwrap();
                if available > 0 {
                    let end = got.len() + available;
                    // Published bytes end on a write boundary unless a write larger than the
                    // ring is in progress.
                    let in_big_write = !boundaries.contains(&end) && end < expected.len();
                    if in_big_write {
                        let mut start = 0;
                        let inside_big = sizes.iter().any(|&size| {
                            let range = start + 1..=start + size;
                            start += size;
                            size > ring && range.contains(&end)
                        });
                        prop_assert!(inside_big, "torn publish at {end}");
                    }
                }
                let n = rx.try_read(&mut buf[..want]).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            writer.join().unwrap();
            prop_assert_eq!(got, expected);
        }
    }
}
