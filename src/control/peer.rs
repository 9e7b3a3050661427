//! Which operating-system account sent a control command.
//!
//! Operators name themselves (`--operator`), which is what the audit log records and what the
//! two-person rule compares. A name can be typed by anyone who can reach the endpoint, so the log
//! also records the account of the process that connected: the control endpoint takes loopback
//! connections only, so the client's socket is on this host, and Linux lists every TCP socket
//! with its owner's uid: asked for one socket over netlink (`sock_diag`), or, where that is not
//! available, in `/proc/net/tcp` and `/proc/net/tcp6`. The socket whose local address is the
//! peer's and whose remote address is ours is the client's.

use std::net::{IpAddr, SocketAddr};

/// The uid owning the TCP socket at `peer` connected to `local`, if the kernel lists it. An
/// IPv4 peer can be spelled as an IPv4-mapped IPv6 address; both tables are searched with both
/// spellings.
///
/// The kernel is asked for that one socket first (netlink `sock_diag`, microseconds); the tables
/// are read only when it does not answer with an owner. Reading them walks every TCP socket of
/// the host: tens of ms of CPU on a host with a thousand, per control connection.
pub fn tcp_peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    sock_diag_uid(peer, local).or_else(|| table_uid(peer, local))
}

/// The uid from `/proc/net/tcp{,6}`, read whole.
fn table_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            find_uid(&text, peer, local)
        })
}

/// The uid in a `/proc/net/tcp{,6}` table `text` of the established socket from `peer` to
/// `local`. Only an established socket with an inode has an owner: a client that already closed
/// leaves a time-wait row whose uid reads 0, which must not make its command root's.
fn find_uid(text: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    const ESTABLISHED: &str = "01";
    let (peer, local) = (canonical(peer), canonical(local));
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (from, to, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
        let (uid, inode) = (fields.get(7)?, fields.get(9)?);
        let matches = canonical(parse_address(from)?) == peer
            && canonical(parse_address(to)?) == local
            && *state == ESTABLISHED
            && *inode != "0";
        matches.then(|| uid.parse().ok()).flatten()
    })
}

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h): the netlink message type of a socket query and of
/// its answer.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_NOCOOKIE`: match the socket by its addresses, not by a cookie.
const INET_DIAG_NOCOOKIE: u32 = u32::MAX;
/// `TCP_ESTABLISHED` in `inet_diag_msg.idiag_state`.
const TCP_ESTABLISHED: u8 = 1;
/// Bytes of an `nlmsghdr`.
const NLMSG_HEADER_BYTES: usize = 16;
/// Offsets in an `inet_diag_msg` (after the netlink header): state, uid, inode.
const DIAG_STATE: usize = 1;
const DIAG_UID: usize = 64;
const DIAG_INODE: usize = 68;
/// Bytes of an `inet_diag_msg`.
const DIAG_MSG_BYTES: usize = 72;

/// The uid owning the established TCP socket from `peer` to `local`, asked of the kernel for
/// that one socket (`inet_diag_req_v2` with its exact addresses over `NETLINK_SOCK_DIAG`).
/// `None` when the kernel cannot be asked, does not know the socket, or it has no owner (closed:
/// a time-wait socket has no inode and reads uid 0, which must not make a command root's).
fn sock_diag_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (peer, local) = (canonical(peer), canonical(local));
    let family = match (peer.ip(), local.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET as u8,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6 as u8,
        _ => return None,
    };
    let address = |ip: IpAddr| -> [u8; 16] {
        let mut bytes = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes = v6.octets(),
        }
        bytes
    };
    // nlmsghdr, then inet_diag_req_v2 whose sockid names the client's socket: source the
    // peer, destination us. Multi-byte header fields are in host order, ports and addresses in
    // network order, as the kernel's structs have them.
    let mut request = Vec::with_capacity(72);
    request.extend_from_slice(&72u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    request.extend_from_slice(&peer.port().to_be_bytes());
    request.extend_from_slice(&local.port().to_be_bytes());
    request.extend_from_slice(&address(peer.ip()));
    request.extend_from_slice(&address(local.ip()));
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    request.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    let answer = netlink_ask(&request)?;
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if kind != SOCK_DIAG_BY_FAMILY {
        // NLMSG_ERROR: no such socket (ENOENT) or no sock_diag for this family.
        return None;
    }
    let message = answer.get(NLMSG_HEADER_BYTES..NLMSG_HEADER_BYTES + DIAG_MSG_BYTES)?;
    let word = |at: usize| {
        Some(u32::from_ne_bytes(
            message.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let (state, uid, inode) = (message[DIAG_STATE], word(DIAG_UID)?, word(DIAG_INODE)?);
    (state == TCP_ESTABLISHED && inode != 0).then_some(uid)
}

/// Sends `request` to the kernel's sock_diag and returns its first answer, or `None` if the
/// socket cannot be opened or the kernel does not answer within a second.
fn netlink_ask(request: &[u8]) -> Option<Vec<u8>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) has no memory preconditions; a non-negative result is a new descriptor
    // that the OwnedFd below owns and closes.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a descriptor just returned by socket(2), owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval {
        tv_sec: crate::constants::PEER_SOCK_DIAG_TIMEOUT_S,
        tv_usec: 0,
    };
    // SAFETY: the option value points at a live timeval of the size passed; the kernel sends
    // to pid 0 (itself) through a zeroed sockaddr_nl with only its family set.
    let sent = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent != request.len() as isize {
        return None;
    }
    let mut answer = vec![0u8; 8192];
    // SAFETY: the kernel writes at most `answer.len()` bytes into `answer`, which is live.
    let received = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            0,
        )
    };
    let received = usize::try_from(received).ok()?;
    answer.truncate(received);
    Some(answer)
}

/// The login name of account `uid` from the password database (getpwuid_r), or `None` if it has
/// none. Names, not uids, are what `[control.operators]` is written in, and what an operator
/// without `USER` or `LOGNAME` (root in a container) is called by default.
pub fn account_name(uid: u32) -> Option<String> {
    let mut buffer: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: `passwd` is plain data that getpwuid_r fills; every pointer it stores points
        // into `buffer`, which outlives their use below; `result` is null or `&passwd`.
        let mut passwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let status = unsafe {
            libc::getpwuid_r(
                uid,
                &mut passwd,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if status == libc::ERANGE && buffer.len() < crate::constants::ACCOUNT_ENTRY_BYTES_MAX {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        if status != 0 || result.is_null() || passwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: a successful getpwuid_r leaves `pw_name` pointing at a NUL-terminated string
        // inside `buffer`.
        let name = unsafe { std::ffi::CStr::from_ptr(passwd.pw_name) };
        return name
            .to_str()
            .ok()
            .filter(|name| !name.is_empty())
            .map(str::to_owned);
    }
}

/// The login name of the account this process runs as.
pub fn current_account_name() -> Option<String> {
    // SAFETY: getuid(2) has no preconditions and cannot fail.
    account_name(unsafe { libc::getuid() })
}

/// An IPv4 address however it is spelled (an IPv4-mapped IPv6 address is the same socket).
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the address as the kernel prints
/// it, each 32-bit word in the host's byte order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if address.len() != 8 && address.len() != 32 {
        return None;
    }
    let mut bytes = Vec::with_capacity(16);
    for word in address.as_bytes().chunks(8) {
        let word = std::str::from_utf8(word).ok()?;
        bytes.extend_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_spelling_of_addresses_is_read() {
        let v4 = format!("{:08X}:1F90", u32::from_ne_bytes([127, 0, 0, 1]));
        assert_eq!(parse_address(&v4), Some("127.0.0.1:8080".parse().unwrap()));
        let loopback6: String = [0u32, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]
            .iter()
            .map(|w| format!("{w:08X}"))
            .collect();
        assert_eq!(
            parse_address(&format!("{loopback6}:0050")),
            Some("[::1]:80".parse().unwrap())
        );
        for bad in ["", "zz:1", "0100007F", "0100007F:zz", "01000:10"] {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_established_sockets_with_an_owner_count() {
        let row = |state: &str, inode: &str| {
            format!(
                "hdr\n   0: 0100007F:C350 0100007F:1F90 {state} 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0\n"
            )
        };
        let (peer, local) = (
            "127.0.0.1:50000".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        );
        assert_eq!(find_uid(&row("01", "4242"), peer, local), Some(1000));
        assert_eq!(find_uid(&row("06", "0"), peer, local), None, "time-wait");
        assert_eq!(find_uid(&row("05", "4242"), peer, local), None, "closing");
        assert_eq!(find_uid(&row("01", "0"), peer, local), None, "orphaned");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:50000".parse().unwrap();
        assert_eq!(find_uid(&row("01", "4242"), mapped, local), Some(1000));
    }

    #[test]
    fn accounts_are_named_from_the_password_database() {
        assert_eq!(account_name(0).as_deref(), Some("root"));
        assert!(current_account_name().is_some());
        assert_eq!(account_name(u32::MAX - 7), None);
    }

    #[test]
    fn a_closed_client_is_not_attributed_to_anyone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(tcp_peer_uid(peer, local), None);
    }

    #[test]
    fn the_kernel_names_the_owner_of_one_socket_without_reading_the_tables() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        // SAFETY: getuid(2) has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        assert_eq!(sock_diag_uid(peer, local), Some(uid));
        // The lookup is by exact addresses: the accepted end (from us to the peer) is found too.
        assert_eq!(sock_diag_uid(local, peer), Some(uid));
        let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(sock_diag_uid(elsewhere, local), None);
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(sock_diag_uid(peer, local), None, "closed");
    }

    #[test]
    fn a_real_loopback_client_is_found_with_our_own_uid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // SAFETY: getuid(2) has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        assert_eq!(tcp_peer_uid(peer, local), Some(uid));
        let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(tcp_peer_uid(elsewhere, local), None);
    }
}
