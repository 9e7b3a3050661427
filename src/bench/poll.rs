//! One thread waiting on many sockets (epoll), and reading a socket without waiting: what lets
//! the open-loop bench client serve every session's answers from a single reader thread instead
//! of a thread blocked in `read` per session, whose wake-ups were CPU taken from the venue
//! under test on a small machine.
//!
//! Every `unsafe` call of the bench's socket multiplexing is in this module, each with why it
//! is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::constants;

/// An epoll set of sockets, each registered with a token (the session's index) that its
/// readiness is reported with. Level-triggered: a socket not read to the end is reported again
/// at the next wait, so a reader may bound its work per socket per wake-up.
pub struct Poller {
    /// The epoll instance; closed on drop.
    epoll: OwnedFd,
    /// Room for the readiness reports of one wait, reused so a wake-up allocates nothing.
    ready: Vec<libc::epoll_event>,
}

impl Poller {
    /// An empty set; one wait reports at most `events_max` ready sockets (the rest at the next).
    pub fn new(events_max: usize) -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointer; a non-negative result is a new descriptor
        // that nothing else owns, so OwnedFd may close it.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above: `fd` is open and owned by no one else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller {
            epoll,
            ready: vec![libc::epoll_event { events: 0, u64: 0 }; events_max.max(1)],
        })
    }

    /// Watches `socket` for bytes to read (a hang-up or an error is always reported too),
    /// reported as `token`. The caller keeps `socket` open until it calls [`Poller::remove`]:
    /// epoll watches the open file, not the number, so a duplicate of it left open elsewhere
    /// would keep reporting a socket its reader has dropped.
    pub fn add(&self, socket: RawFd, token: u64) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, socket, libc::EPOLLIN as u32, token)
    }

    /// Stops watching `socket`, before it is closed (see [`Poller::add`]).
    pub fn remove(&self, socket: RawFd) -> io::Result<()> {
        // The event is ignored by EPOLL_CTL_DEL but must be non-null on kernels before 2.6.9.
        self.control(libc::EPOLL_CTL_DEL, socket, 0, 0)
    }

    /// One `epoll_ctl` call: `op` on `socket` with `events` reported under `token`.
    fn control(&self, op: libc::c_int, socket: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is a valid epoll_event for the duration of the call; epoll_ctl
        // checks both descriptors and fails on a bad one.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, socket, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks until at least one socket is ready or `timeout` passes, then replaces `tokens`
    /// with the tokens of the ready sockets (empty after a timeout or a signal).
    pub fn wait(&mut self, timeout: Duration, tokens: &mut Vec<u64>) -> io::Result<()> {
        tokens.clear();
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let capacity = self.ready.len().min(i32::MAX as usize) as i32;
        // SAFETY: `ready` has room for `capacity` events and is not touched elsewhere during
        // the call; the kernel writes at most that many.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.ready.as_mut_ptr(),
                capacity,
                timeout_ms,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(error);
        }
        tokens.extend(self.ready[..n as usize].iter().map(|event| event.u64));
        Ok(())
    }
}

/// Reads what `socket` holds now into `buf` without waiting, even if the socket blocks (its
/// writing half, shared with another thread, must keep blocking: `O_NONBLOCK` is a property of
/// the open file, which a `try_clone` shares). `Ok(None)`: nothing there; `Ok(Some(0))`: the
/// peer closed.
pub fn recv_nowait(socket: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is a valid, exclusively borrowed buffer of `buf.len()` bytes for the
        // duration of the call; recv writes at most that many.
        let n = unsafe {
            libc::recv(
                socket,
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(error),
        }
    }
}

/// Reads everything `socket` holds now, chunk by chunk through `buf`, appending each to `into`;
/// stops at the first read shorter than `buf` (the socket was emptied: one read per wake-up in
/// the usual case, no extra read to hear "would block") or after
/// [`constants::BENCH_SOCKET_READS_MAX`] reads, so one busy session cannot starve the others
/// (level-triggered epoll reports the rest at once). `Err(UnexpectedEof)` once the peer closed,
/// after appending whatever came before the close.
pub fn read_available(socket: RawFd, buf: &mut [u8], into: &mut Vec<u8>) -> io::Result<()> {
    for _ in 0..constants::BENCH_SOCKET_READS_MAX {
        match recv_nowait(socket, buf)? {
            None => return Ok(()),
            Some(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Some(n) => {
                into.extend_from_slice(&buf[..n]);
                if n < buf.len() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn ready_sockets_are_reported_by_token_and_read_without_waiting() {
        let (mut a_peer, a) = UnixStream::pair().expect("pair");
        let (_b_peer, b) = UnixStream::pair().expect("pair");
        let mut poller = Poller::new(8).expect("epoll");
        poller.add(a.as_raw_fd(), 7).expect("add a");
        poller.add(b.as_raw_fd(), 9).expect("add b");
        let mut tokens = Vec::new();
        poller
            .wait(Duration::ZERO, &mut tokens)
            .expect("wait nothing");
        assert!(tokens.is_empty());
        a_peer.write_all(b"hello").expect("write");
        // Bounded: a socket never reported fails the test instead of hanging it.
        poller
            .wait(Duration::from_secs(30), &mut tokens)
            .expect("wait");
        assert_eq!(tokens, [7]);
        let mut buf = [0u8; 3];
        let mut got = Vec::new();
        read_available(a.as_raw_fd(), &mut buf, &mut got).expect("read");
        assert_eq!(got, b"hello", "a full read is followed by another");
        assert_eq!(recv_nowait(b.as_raw_fd(), &mut buf).expect("b"), None);
        // Closed: the hang-up is reported and reads as the end.
        drop(a_peer);
        poller
            .wait(Duration::from_secs(30), &mut tokens)
            .expect("wait");
        assert_eq!(tokens, [7]);
        let end = read_available(a.as_raw_fd(), &mut buf, &mut got).expect_err("closed");
        assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof);
        poller.remove(a.as_raw_fd()).expect("remove");
        poller
            .wait(Duration::ZERO, &mut tokens)
            .expect("wait removed");
        assert!(tokens.is_empty());
    }
}
