//! Handing sockets between processes: the gateway gives a duplicate of its listening socket and
//! of every accepted connection to a holder (the supervisor behind `baton up`), so the kernel
//! keeps each TCP connection established while the gateway process dies and a new one starts;
//! the new gateway takes them back from the holder.
//!
//! The channel is a `SOCK_SEQPACKET` Unix socket pair made by the supervisor before it starts the
//! gateway, one end inherited by the gateway (its number in [`HOLDER_FD_ENV`]). Seqpacket keeps
//! each message whole with the descriptor attached to it (`SCM_RIGHTS`), and the holder sees
//! the gateway's death as end of stream on its end without asking anybody. Each message is one
//! JSON object ([`ToHolder`], [`ToGateway`]) carrying at most one descriptor.
//!
//! Every `unsafe` call of the hand-over is in this module; each says why it is sound.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use zeroize::Zeroize;

use crate::constants;
use crate::fix::session::SessionCarry;
use crate::gateway::tls_record::TlsCarry;

/// The variable naming the gateway's end of the holder channel (a descriptor number).
pub const HOLDER_FD_ENV: &str = "BATON_HOLDER_FD";

/// What a logged-on connection's holder keeps with it: enough for a new gateway to continue the
/// session without a Logon (sequence numbers are in the session's store).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Label {
    /// Our CompID on the session.
    pub sender_comp_id: String,
    /// The counterparty's CompID.
    pub target_comp_id: String,
    /// The HeartBtInt agreed at Logon, in milliseconds.
    pub heartbeat_interval_ms: u64,
}

/// Gateway → holder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ToHolder {
    /// The descriptor attached is the FIX listening socket.
    Listener,
    /// The descriptor attached is an accepted connection, known by `id` from now on.
    Connection {
        /// Chosen by the gateway, unique among what the holder holds.
        id: u64,
        /// It speaks TLS: no gateway but the one holding its keys can go on with it, so the
        /// holder closes it when that gateway dies instead of handing it to the next one.
        #[serde(default)]
        tls: bool,
    },
    /// Connection `id` logged on as this session.
    Label {
        /// The connection.
        id: u64,
        /// Its session.
        label: Label,
    },
    /// The gateway closes connection `id`: the holder closes its duplicate, so the counterparty
    /// really is disconnected.
    Release {
        /// The connection.
        id: u64,
    },
    /// A starting gateway asks for everything held; the holder answers with one [`ToGateway`]
    /// per socket and [`ToGateway::End`], and keeps holding them. From a successor started for
    /// a planned upgrade, the answer waits until the running gateway has handed over and exited.
    TakeBack,
    /// Planned upgrade: start this build as the successor (the supervisor runs it through
    /// `baton launch`, which checks the hash); the holder answers [`ToGateway::SuccessorReady`]
    /// once it asks for the sockets, or [`ToGateway::SuccessorFailed`].
    StartSuccessor(Successor),
    /// The successor is not wanted after all (the barrier could not be reached): stop it; the
    /// running gateway serves on.
    AbandonSuccessor,
    /// The running gateway stopped at its barrier and hands over; the [`ToHolder::Carry`]
    /// messages follow, and its exit (end of stream) completes the hand-over.
    HandingOver {
        /// When the gateway stopped reading its counterparties (ns since the epoch): the
        /// successor measures the pause from it.
        barrier_unix_ns: u64,
        /// The change the upgrade runs under.
        change: String,
        /// The handing-over process: the holder gives the successor the sockets only once it is
        /// gone, since its channel may close before its stores, journal and addresses do.
        #[serde(default)]
        pid: u32,
    },
    /// Connection `id`'s session state that is not in its store, for the successor.
    Carry {
        /// The connection.
        id: u64,
        /// The state.
        carry: SessionCarry,
        /// A TLS connection's keys, sequence numbers and undelivered bytes: only ever on this
        /// channel, never logged.
        #[serde(default)]
        tls: Option<Box<TlsCarry>>,
    },
    /// Planned upgrade: TLS connection `id` could not be handed over and was closed (cleanly,
    /// where its TLS state allowed); its counterparty reconnects. Counted in the upgrade's report.
    NotCarried {
        /// The connection.
        id: u64,
    },
}

/// The build a planned upgrade starts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Successor {
    /// Absolute path of the artifact.
    pub artifact_path: String,
    /// Its SHA-256, checked by `baton launch` on the descriptor it executes.
    pub artifact_sha256: String,
    /// The approved change.
    pub change: String,
}

/// Holder → gateway, answering [`ToHolder::TakeBack`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ToGateway {
    /// The listening socket is attached.
    Listener,
    /// An accepted connection is attached.
    Connection {
        /// The id the previous gateway gave it.
        id: u64,
        /// Its session, when it had logged on.
        label: Option<Label>,
        /// What a gateway that handed over at a planned upgrade left of its session.
        #[serde(default)]
        carry: Option<SessionCarry>,
        /// A TLS connection's state, handed over at a planned upgrade (see [`ToHolder::Carry`]).
        /// A TLS connection without it is never sent: the holder closes it.
        #[serde(default)]
        tls: Option<Box<TlsCarry>>,
    },
    /// These sockets come from a planned upgrade, not a crash (sent before the connections).
    Upgraded {
        /// When the previous gateway stopped reading (ns since the epoch).
        barrier_unix_ns: u64,
        /// The change.
        change: String,
        /// TLS connections that could not be handed over and were closed.
        #[serde(default)]
        tls_closed: u64,
    },
    /// To the running gateway: its successor started and asked for the sockets.
    SuccessorReady,
    /// To the running gateway: its successor did not start, or exited before taking over.
    SuccessorFailed {
        /// What happened.
        reason: String,
    },
    /// Nothing more.
    End,
}

/// Why a hand-over message could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The socket failed.
    #[error("socket hand-over: {0}")]
    Io(#[from] io::Error),
    /// The other side closed the channel.
    #[error("socket hand-over: the other side closed the channel")]
    Closed,
    /// A message that is not one of ours, or one without the descriptor it announces.
    #[error("socket hand-over: malformed message: {0}")]
    Malformed(String),
    /// [`HOLDER_FD_ENV`] is set but names no descriptor.
    #[error("{HOLDER_FD_ENV}={0:?} is not a descriptor number")]
    BadEnv(String),
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, both close-on-exec.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair(2) writes two descriptors into the array it is given, which has room
    // for two; on success both are new and owned by nobody else.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by socketpair and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Lets `fd` survive `exec` (for the end a child inherits). Only async-signal-safe calls, so it
/// may run between fork and exec.
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) with F_GETFD/F_SETFD reads and writes descriptor flags only; an invalid
    // descriptor is reported as EBADF.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags == -1 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends one message with `fd` attached (duplicated into the receiver by the kernel).
/// `MSG_NOSIGNAL`: a holder that died is an error here, not a SIGPIPE that kills the gateway.
pub fn send<T: serde::Serialize>(
    socket: BorrowedFd<'_>,
    message: &T,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), HandoverError> {
    let mut bytes =
        serde_json::to_vec(message).map_err(|e| HandoverError::Malformed(e.to_string()))?;
    let sent = send_bytes(socket, &bytes, fd);
    // A carry holds TLS keys: none left in freed memory.
    bytes.zeroize();
    sent
}

/// Sends `bytes` as one message with `fd` attached (also what an `sd_notify` datagram with
/// `FDSTORE=1` is), on a connected socket.
pub fn send_bytes(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), HandoverError> {
    if bytes.len() > constants::HANDOVER_MESSAGE_BYTES_MAX {
        // Only a label can grow, with configured CompIDs far longer than any venue uses.
        return Err(HandoverError::Malformed(format!(
            "message of {} bytes, over {}",
            bytes.len(),
            constants::HANDOVER_MESSAGE_BYTES_MAX
        )));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // Room for one descriptor, aligned as cmsghdr requires.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        assert!(space <= std::mem::size_of_val(&control));
        header.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        header.msg_controllen = space as _;
        // SAFETY: msg_control points at `control`, which is at least `space` bytes, 8-byte
        // aligned, and lives until sendmsg returns; CMSG_FIRSTHDR is therefore non-null and the
        // data written (one RawFd) fits in CMSG_LEN(size_of RawFd) <= space.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd.as_raw_fd());
        }
    }
    loop {
        // SAFETY: `header` points at `iov` (over `bytes`) and `control`, all alive for the call.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &header, libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error.into());
        }
    }
}

/// Receives one message and the descriptor attached to it, if any (close-on-exec). With
/// `wait` false, an empty socket is [`io::ErrorKind::WouldBlock`].
pub fn recv<T: serde::de::DeserializeOwned>(
    socket: BorrowedFd<'_>,
    wait: bool,
) -> Result<(T, Option<OwnedFd>), HandoverError> {
    let (mut bytes, mut fds) = recv_bytes(socket, wait)?;
    if fds.len() > 1 {
        return Err(HandoverError::Malformed("more than one descriptor".into()));
    }
    let message = serde_json::from_slice(&bytes);
    // A carry holds TLS keys: none left in freed memory.
    bytes.zeroize();
    let message = message.map_err(|e| HandoverError::Malformed(e.to_string()))?;
    Ok((message, fds.pop()))
}

/// Receives one message's bytes and every descriptor attached (close-on-exec); for the holder
/// channel and for a test standing in for systemd's notification socket.
pub fn recv_bytes(
    socket: BorrowedFd<'_>,
    wait: bool,
) -> Result<(Vec<u8>, Vec<OwnedFd>), HandoverError> {
    let mut bytes = vec![0u8; constants::HANDOVER_MESSAGE_BYTES_MAX];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    header.msg_controllen = std::mem::size_of_val(&control) as _;
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if !wait {
        flags |= libc::MSG_DONTWAIT;
    }
    let received = loop {
        // SAFETY: `header` points at `bytes` and `control`, both alive and of the lengths given.
        let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, flags) };
        if received >= 0 {
            break received as usize;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error.into());
        }
    };
    // Every descriptor that arrived is owned from here on, so none leaks whatever follows.
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen with well-formed cmsghdrs;
    // CMSG_FIRSTHDR/NXTHDR walk exactly that range, and SCM_RIGHTS data is an array of
    // descriptors the kernel installed in this process for us.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for index in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(index));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    if received == 0 && fds.is_empty() {
        return Err(HandoverError::Closed);
    }
    if header.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(HandoverError::Malformed(
            "message or descriptors truncated".into(),
        ));
    }
    bytes.truncate(received);
    Ok((bytes, fds))
}

/// Registers a channel end with tokio's reactor, for the holder's read readiness.
pub fn watch(channel: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is an open descriptor it alone closes, and its as_raw_fd never changes;
    // the AsyncFd owns it for its whole life, as register requires.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(channel, tokio::io::Interest::READABLE)
    }
    .map_err(io::Error::from)
}

/// The gateway's end of the holder channel, from [`HOLDER_FD_ENV`]; `None` when not set (no
/// holder: run by hand, or under systemd alone). The variable is removed so nothing the gateway
/// starts inherits it.
pub fn holder_fd_from_env() -> Result<Option<OwnedFd>, HandoverError> {
    let Some(value) = std::env::var_os(HOLDER_FD_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    let fd: RawFd = value
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| HandoverError::BadEnv(value.clone()))?;
    // SAFETY: fcntl(F_GETFD) only asks whether the number is an open descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(HandoverError::BadEnv(value));
    }
    // Close-on-exec again: the gateway's own children must not hold the channel open.
    // SAFETY: as above, flags only, on a descriptor just checked to be open.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: the supervisor passed this descriptor to this process alone, and nothing else in
    // the process knows its number; it is owned from here on.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The gateway's side of the holder channel. Shared by every connection task; each message is a
/// short blocking send on a local socket the holder drains at once.
pub struct HolderLink {
    /// `None` once the holder is gone: the gateway serves on, unprotected.
    channel: Mutex<Option<Channel>>,
    /// Next connection id; above every id the holder already knows.
    next_id: AtomicU64,
}

/// What a starting gateway got back from the holder.
#[derive(Debug, Default)]
pub struct TakenBack {
    /// The listening socket the previous gateway used.
    pub listener: Option<OwnedFd>,
    /// Its connections: id, session label (if logged on), descriptor.
    pub connections: Vec<(u64, Option<Label>, OwnedFd)>,
    /// After a planned upgrade: each handed-over connection's session state, by id.
    pub carries: std::collections::BTreeMap<u64, SessionCarry>,
    /// After a planned upgrade: when the previous gateway stopped reading (ns since the epoch)
    /// and the change.
    pub upgraded: Option<(u64, String)>,
    /// After a planned upgrade: each handed-over TLS connection's state, by id.
    pub tls: std::collections::BTreeMap<u64, TlsCarry>,
    /// After a planned upgrade: TLS connections that could not be handed over and were closed.
    pub tls_closed: u64,
}

/// Who holds the sockets.
enum Channel {
    /// The supervisor behind `baton up`, over the inherited seqpacket end.
    Supervisor(OwnedFd),
    /// systemd's file descriptor store (`FDSTORE=1` on the notification socket), when the
    /// gateway is a unit's main process.
    Systemd(crate::sd_notify::Notifier),
}

/// The name a socket is stored under in systemd's store: `listener`, `c<id>` before Logon,
/// `s<id>-<HeartBtInt ms>-<our CompID>-<their CompID>` after, CompIDs in hex so any CompID
/// makes a valid name (printable, no `:`).
fn fd_name(id: u64, label: Option<&Label>) -> String {
    let hex = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    match label {
        None => format!("c{id}"),
        Some(label) => format!(
            "s{id}-{}-{}-{}",
            label.heartbeat_interval_ms,
            hex(&label.sender_comp_id),
            hex(&label.target_comp_id)
        ),
    }
}

/// The connection a stored name describes; `None` for a name that is not one of ours.
fn parse_fd_name(name: &str) -> Option<(u64, Option<Label>)> {
    if let Some(id) = name.strip_prefix('c') {
        return Some((id.parse().ok()?, None));
    }
    let mut parts = name.strip_prefix('s')?.split('-');
    let id = parts.next()?.parse().ok()?;
    let heartbeat_interval_ms = parts.next()?.parse().ok()?;
    let unhex = |hex: &str| -> Option<String> {
        if !hex.len().is_multiple_of(2) {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        String::from_utf8(bytes).ok()
    };
    let sender_comp_id = unhex(parts.next()?)?;
    let target_comp_id = unhex(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        id,
        Some(Label {
            sender_comp_id,
            target_comp_id,
            heartbeat_interval_ms,
        }),
    ))
}

/// What systemd passed back from its store (`LISTEN_PID`, `LISTEN_FDS` from descriptor 3,
/// `LISTEN_FDNAMES`), meant for this process. Descriptors under names that are not ours are
/// closed.
pub fn taken_from_systemd() -> TakenBack {
    const LISTEN_FDS_START: RawFd = 3;
    let mut taken = TakenBack::default();
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    let count: Option<RawFd> = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok());
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let (true, Some(count)) = (ours, count) else {
        return taken;
    };
    let names: Vec<&str> = names.split(':').collect();
    for index in 0..count.clamp(0, constants::CONNECTIONS_MAX as RawFd + 1) {
        let raw = LISTEN_FDS_START + index;
        // SAFETY: fcntl(F_GETFD) only asks whether the number is an open descriptor.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } == -1 {
            continue;
        }
        // Close-on-exec, so the gateway's own children do not inherit them.
        // SAFETY: flags only, on a descriptor just checked to be open.
        unsafe {
            libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        // SAFETY: systemd passed descriptors 3.. to this process for it to own (sd_listen_fds);
        // they were open at exec, so no file this process opened since has their numbers, and
        // nothing else here knows them.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        match names.get(index as usize).copied() {
            Some("listener") => taken.listener = Some(fd),
            Some(name) => match parse_fd_name(name) {
                Some((id, label)) => taken.connections.push((id, label, fd)),
                None => {
                    tracing::warn!(
                        name,
                        "descriptor from systemd under a name not ours; closing"
                    )
                }
            },
            None => tracing::warn!(index, "descriptor from systemd without a name; closing"),
        }
    }
    taken
}

/// The socket holder's link and what it held for a previous gateway process; none without a
/// holder, or with TLS under systemd (a TLS connection cannot outlive the process that holds its
/// keys, and systemd's store cannot tell a planned hand-over from a crash). Under `baton up` TLS
/// connections are held too: the supervisor's holder closes them when their gateway dies, and
/// hands them over with their keys at a planned upgrade. A holder that cannot be reached costs
/// the protection, not the start. Under the supervisor a
/// successor started for a planned upgrade blocks here until the running gateway handed over.
pub fn take_back_held_sockets(tls: bool) -> (Option<Arc<HolderLink>>, TakenBack) {
    let channel = match holder_fd_from_env() {
        Ok(Some(channel)) => channel,
        // A unit's main process under systemd: its file descriptor store is the holder.
        Ok(None) => {
            let taken = taken_from_systemd();
            let notifier = crate::sd_notify::Notifier::from_env().unwrap_or_default();
            if !notifier.is_enabled() || tls {
                return (None, TakenBack::default());
            }
            if taken.listener.is_some() || !taken.connections.is_empty() {
                tracing::warn!(
                    connections = taken.connections.len(),
                    "taking back the sockets systemd stored for a previous gateway process"
                );
            }
            return (Some(HolderLink::systemd(notifier, &taken)), taken);
        }
        Err(error) => {
            tracing::warn!(%error, "no socket holder");
            return (None, TakenBack::default());
        }
    };
    let holder = HolderLink::new(channel);
    match holder.take_back() {
        Ok(taken) => {
            if taken.listener.is_some() || !taken.connections.is_empty() {
                tracing::warn!(
                    connections = taken.connections.len(),
                    "taking back the sockets a previous gateway process left with the holder"
                );
            }
            (Some(holder), taken)
        }
        Err(error) => {
            tracing::warn!(%error, "socket holder did not answer; serving without it");
            (None, TakenBack::default())
        }
    }
}

impl HolderLink {
    /// A link over the gateway's end of the supervisor's channel.
    pub fn new(channel: OwnedFd) -> Arc<HolderLink> {
        Arc::new(HolderLink {
            channel: Mutex::new(Some(Channel::Supervisor(channel))),
            next_id: AtomicU64::new(1),
        })
    }

    /// A link to systemd's file descriptor store; `taken` is what systemd gave back at start
    /// ([`taken_from_systemd`]), so new ids do not collide with those still stored.
    pub fn systemd(notifier: crate::sd_notify::Notifier, taken: &TakenBack) -> Arc<HolderLink> {
        let next = taken.connections.iter().map(|c| c.0 + 1).max().unwrap_or(1);
        Arc::new(HolderLink {
            channel: Mutex::new(Some(Channel::Systemd(notifier))),
            next_id: AtomicU64::new(next),
        })
    }

    /// Asks the holder for everything it holds (from a previous gateway). Blocks until the
    /// holder answered: it answers from memory, at once.
    pub fn take_back(&self) -> Result<TakenBack, HandoverError> {
        let guard = self.lock();
        let Some(Channel::Supervisor(channel)) = guard.as_ref() else {
            return Err(HandoverError::Closed);
        };
        send(channel.as_fd(), &ToHolder::TakeBack, None)?;
        let mut taken = TakenBack::default();
        loop {
            match recv::<ToGateway>(channel.as_fd(), true)? {
                (ToGateway::End, _) => break,
                (ToGateway::Listener, Some(fd)) => taken.listener = Some(fd),
                (
                    ToGateway::Connection {
                        id,
                        label,
                        carry,
                        tls,
                    },
                    Some(fd),
                ) => {
                    self.next_id.fetch_max(id + 1, Ordering::Relaxed);
                    if let Some(carry) = carry {
                        taken.carries.insert(id, carry);
                    }
                    if let Some(tls) = tls {
                        taken.tls.insert(id, *tls);
                    }
                    taken.connections.push((id, label, fd));
                }
                (
                    ToGateway::Upgraded {
                        barrier_unix_ns,
                        change,
                        tls_closed,
                    },
                    _,
                ) => {
                    taken.upgraded = Some((barrier_unix_ns, change));
                    taken.tls_closed = tls_closed;
                }
                // Meant for a gateway that is running, not one taking over.
                (ToGateway::SuccessorReady | ToGateway::SuccessorFailed { .. }, _) => {}
                (message, None) => {
                    return Err(HandoverError::Malformed(format!(
                        "{message:?} without its descriptor"
                    )));
                }
            }
        }
        Ok(taken)
    }

    /// Whether a supervisor holds the sockets: a planned upgrade needs one to start the
    /// successor and keep every socket while the two processes change places.
    pub fn is_supervised(&self) -> bool {
        matches!(self.lock().as_ref(), Some(Channel::Supervisor(_)))
    }

    /// Asks the supervisor to start `successor`; its answer comes through
    /// [`HolderLink::poll_answer`].
    pub fn start_successor(&self, successor: Successor) -> Result<(), HandoverError> {
        self.send_checked(&ToHolder::StartSuccessor(successor))
    }

    /// The successor is not wanted: the supervisor stops it.
    pub fn abandon_successor(&self) {
        self.send(&ToHolder::AbandonSuccessor, None);
    }

    /// Tells the holder this gateway hands over at `barrier_unix_ns`; its exit completes it.
    pub fn handing_over(&self, barrier_unix_ns: u64, change: &str) -> Result<(), HandoverError> {
        self.send_checked(&ToHolder::HandingOver {
            barrier_unix_ns,
            change: change.to_owned(),
            pid: std::process::id(),
        })
    }

    /// The holder's answer about a successor, if one arrived; never waits.
    pub fn poll_answer(&self) -> Result<Option<ToGateway>, HandoverError> {
        let guard = self.lock();
        let Some(Channel::Supervisor(channel)) = guard.as_ref() else {
            return Err(HandoverError::Closed);
        };
        match recv::<ToGateway>(channel.as_fd(), false) {
            Ok((message, _)) => Ok(Some(message)),
            Err(HandoverError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sends to the supervisor and says whether it arrived (a hand-over must not go on without
    /// the holder).
    fn send_checked(&self, message: &ToHolder) -> Result<(), HandoverError> {
        let guard = self.lock();
        let Some(Channel::Supervisor(channel)) = guard.as_ref() else {
            return Err(HandoverError::Closed);
        };
        send(channel.as_fd(), message, None)
    }

    /// Gives the holder a duplicate of the listening socket.
    pub fn hold_listener(&self, listener: BorrowedFd<'_>) {
        self.send(&ToHolder::Listener, Some(listener));
    }

    /// Gives the holder a duplicate of an accepted connection; the returned guard releases it
    /// from the holder when the gateway is done with the connection.
    /// `tls`: the connection speaks TLS (see [`ToHolder::Connection`]).
    pub fn hold(self: &Arc<Self>, connection: BorrowedFd<'_>, tls: bool) -> HeldConnection {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(&ToHolder::Connection { id, tls }, Some(connection));
        HeldConnection {
            link: self.clone(),
            id,
            label: Mutex::new(None),
            handed_over: false,
            fd: matches!(self.lock().as_ref(), Some(Channel::Systemd(_)))
                .then(|| connection.try_clone_to_owned().ok())
                .flatten(),
        }
    }

    /// Marks connection `id`, taken back from a previous gateway, as this gateway's: released
    /// from the holder when the returned guard is dropped.
    pub fn adopt(self: &Arc<Self>, id: u64, label: Option<Label>) -> HeldConnection {
        HeldConnection {
            link: self.clone(),
            id,
            label: Mutex::new(label),
            handed_over: false,
            fd: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Channel>> {
        self.channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, message: &ToHolder, fd: Option<BorrowedFd<'_>>) {
        let mut guard = self.lock();
        let sent = match guard.as_ref() {
            None => return,
            Some(Channel::Supervisor(channel)) => send(channel.as_fd(), message, fd),
            Some(Channel::Systemd(notifier)) => {
                let state = match message {
                    ToHolder::Listener => "FDSTORE=1\nFDNAME=listener".to_string(),
                    ToHolder::Connection { id, .. } => {
                        format!("FDSTORE=1\nFDNAME={}", fd_name(*id, None))
                    }
                    // systemd renames nothing: the old name goes, the descriptor comes again
                    // under the new one.
                    ToHolder::Label { id, label } => {
                        let removed = format!("FDSTOREREMOVE=1\nFDNAME={}", fd_name(*id, None));
                        if let Err(error) = notifier.notify(&removed) {
                            tracing::warn!(%error, "systemd not told to drop a connection's old name");
                        }
                        format!("FDSTORE=1\nFDNAME={}", fd_name(*id, Some(label)))
                    }
                    // Releases are by name (see `Drop`); the rest is for a supervisor only.
                    ToHolder::Release { .. }
                    | ToHolder::TakeBack
                    | ToHolder::StartSuccessor(_)
                    | ToHolder::AbandonSuccessor
                    | ToHolder::HandingOver { .. }
                    | ToHolder::Carry { .. }
                    | ToHolder::NotCarried { .. } => return,
                };
                notifier
                    .notify_with_fd(&state, fd)
                    .map_err(|error| HandoverError::Io(io::Error::other(error.to_string())))
            }
        };
        if let Err(error) = sent {
            // The holder's death costs the protection only: say so once and serve on.
            tracing::error!(%error, "socket holder gone: connections no longer outlive this gateway process");
            *guard = None;
        }
    }
}

/// A connection the holder holds for this gateway; dropping it tells the holder to close its
/// duplicate, so a connection the gateway closes is closed for the counterparty too.
pub struct HeldConnection {
    /// The channel.
    link: Arc<HolderLink>,
    /// The connection's id.
    id: u64,
    /// The session it logged on as, once it did: its name in systemd's store.
    label: Mutex<Option<Label>>,
    /// A duplicate for systemd's store, which takes the descriptor again with each new name.
    fd: Option<OwnedFd>,
    /// Handed to a successor at a planned upgrade: the holder keeps it when this is dropped.
    handed_over: bool,
}

impl HeldConnection {
    /// Records the session the connection logged on as.
    pub fn label(&self, label: Label) {
        *self.label.lock().unwrap_or_else(|p| p.into_inner()) = Some(label.clone());
        let fd = self.fd.as_ref().map(|fd| fd.as_fd());
        self.link.send(&ToHolder::Label { id: self.id, label }, fd);
    }
}

impl HeldConnection {
    /// Planned upgrade: gives the holder the session's unstored state for the successor, and
    /// leaves the connection with the holder when this process lets go of it.
    /// `tls`: a TLS connection's state, for the successor's record layer.
    pub fn hand_over(
        mut self,
        carry: SessionCarry,
        tls: Option<TlsCarry>,
    ) -> Result<(), HandoverError> {
        self.handed_over = true;
        self.link.send_checked(&ToHolder::Carry {
            id: self.id,
            carry,
            tls: tls.map(Box::new),
        })
    }

    /// Planned upgrade: this TLS connection could not be handed over and was closed; the holder
    /// closes its duplicate and counts it for the upgrade's report.
    pub fn not_carried(mut self) {
        self.handed_over = true;
        self.link.send(&ToHolder::NotCarried { id: self.id }, None);
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        let guard = self.link.lock();
        if let Some(Channel::Systemd(notifier)) = guard.as_ref() {
            // systemd removes by name: whichever name the connection is stored under.
            let label = self.label.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let name = fd_name(self.id, label.as_ref());
            if let Err(error) = notifier.notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}")) {
                tracing::warn!(%error, "systemd not told to drop a closed connection");
            }
            return;
        }
        drop(guard);
        self.link.send(&ToHolder::Release { id: self.id }, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_connection_crosses_with_its_message_and_stays_the_same_connection() {
        let (gateway, holder) = seqpacket_pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        send(
            gateway.as_fd(),
            &ToHolder::Connection { id: 7, tls: false },
            Some(accepted.as_fd()),
        )
        .unwrap();
        drop(accepted);
        let (message, fd) = recv::<ToHolder>(holder.as_fd(), true).unwrap();
        assert_eq!(message, ToHolder::Connection { id: 7, tls: false });
        let mut held = std::net::TcpStream::from(fd.expect("descriptor attached"));
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        held.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn stored_names_carry_the_session_whatever_its_comp_ids() {
        let label = Label {
            sender_comp_id: "BATON:1".into(),
            target_comp_id: "CLIENT-\u{e9}".into(),
            heartbeat_interval_ms: 30_000,
        };
        let name = fd_name(7, Some(&label));
        assert!(
            name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
            "{name}"
        );
        assert_eq!(parse_fd_name(&name), Some((7, Some(label))));
        assert_eq!(parse_fd_name(&fd_name(9, None)), Some((9, None)));
        for foreign in [
            "listener2",
            "s1-x-00-00",
            "s1-1-0-00",
            "other",
            "s1-1-00-00-00",
        ] {
            assert_eq!(parse_fd_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn the_other_side_closing_is_closed_and_an_empty_socket_would_block() {
        let (gateway, holder) = seqpacket_pair().unwrap();
        let empty = recv::<ToHolder>(holder.as_fd(), false);
        assert!(
            matches!(&empty, Err(HandoverError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock),
            "{empty:?}"
        );
        send(gateway.as_fd(), &ToHolder::TakeBack, None).unwrap();
        drop(gateway);
        let (message, fd) = recv::<ToHolder>(holder.as_fd(), true).unwrap();
        assert_eq!((message, fd.is_none()), (ToHolder::TakeBack, true));
        assert!(matches!(
            recv::<ToHolder>(holder.as_fd(), true),
            Err(HandoverError::Closed)
        ));
        // And a send to a closed peer is an error, not SIGPIPE.
        let (a, b) = seqpacket_pair().unwrap();
        drop(b);
        assert!(send(a.as_fd(), &ToHolder::TakeBack, None).is_err());
    }
}
