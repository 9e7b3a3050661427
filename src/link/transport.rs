//! Where links run: TCP between hosts, Unix domain sockets or shared memory ([`super::shm`]) on
//! one host. Addresses are strings an operator writes in a config or on the command line; the
//! engine side binds with blocking std sockets (the engine is single-threaded), the gateway side
//! connects with tokio.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown as SocketShutdown, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::LinkError;
use super::shm::{self, ShmConn};

/// Where an engine listens and a gateway connects: `tcp://host:port` (IPv6 as `[::1]:9900`) or
/// `unix:///path/to.sock`. One string form so configs, the CLI and logs all agree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LinkAddr {
    /// A TCP endpoint; works across hosts.
    Tcp {
        /// Host name or IP address, resolved at bind or connect time so DNS changes are seen.
        host: String,
        /// TCP port; 0 when binding lets the system pick (see [`LinkListener::local_addr`]).
        port: u16,
    },
    /// A Unix domain socket; the fastest socket transport when both ends share a host.
    Unix(PathBuf),
    /// Shared-memory rings set up over a Unix domain socket at this path, which stays open for
    /// wake-ups and liveness ([`super::shm`]); the fastest transport on one host.
    Shm(PathBuf),
}

/// Why a link address string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkAddrError {
    /// Neither `tcp://`, `unix://` nor `shm://`.
    #[error("link address {0:?} must start with tcp://, unix:// or shm://")]
    UnknownScheme(String),
    /// `tcp://` without `:port`.
    #[error("link address {0:?} has no port (tcp://host:port)")]
    MissingPort(String),
    /// The port is not a number from 0 to 65535.
    #[error("link address {0:?} has an invalid port")]
    BadPort(String),
    /// `tcp://:port`.
    #[error("link address {0:?} has no host")]
    EmptyHost(String),
    /// `unix://` or `shm://` without a path.
    #[error("link address {0:?} has no socket path")]
    EmptyPath(String),
    /// The host name resolves to no address.
    #[error("link address {0} resolves to no socket address")]
    Unresolved(String),
}

impl LinkAddr {
    /// Whether only processes on this host can reach the address: a Unix socket, or TCP on a
    /// loopback address. A link reachable from other hosts must prove the shared secret
    /// (`[link] secret_file`), so gateway and engine refuse to run one without it.
    pub fn stays_on_host(&self) -> bool {
        match self {
            LinkAddr::Unix(_) | LinkAddr::Shm(_) => true,
            LinkAddr::Tcp { host, .. } => {
                host.eq_ignore_ascii_case("localhost")
                    || host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

impl LinkAddr {
    /// This address with `transport` applied: under [`LinkTransport::Shm`] a `unix://` address
    /// becomes `shm://` with the same socket path; anything else is returned as it is (TCP
    /// leaves the host, where memory cannot be shared; an explicit `shm://` stays).
    pub fn with_transport(self, transport: LinkTransport) -> LinkAddr {
        match (self, transport) {
            (LinkAddr::Unix(path), LinkTransport::Shm) => LinkAddr::Shm(path),
            (addr, _) => addr,
        }
    }
}

/// `[link] transport`: how a link to an engine on this host carries its frames. Gateway and
/// engine must agree, since the engine offers shared memory on each new connection and a
/// gateway expecting it refuses a plain socket (and the other way round).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkTransport {
    /// Frames over the socket named by the address (the default).
    #[default]
    Socket,
    /// `unix://` addresses carry their frames in shared memory ([`super::shm`]).
    Shm,
}

impl FromStr for LinkAddr {
    type Err = LinkAddrError;

    fn from_str(text: &str) -> Result<LinkAddr, LinkAddrError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(LinkAddrError::EmptyPath(text.to_owned()));
            }
            return Ok(LinkAddr::Unix(PathBuf::from(path)));
        }
        if let Some(path) = text.strip_prefix("shm://") {
            if path.is_empty() {
                return Err(LinkAddrError::EmptyPath(text.to_owned()));
            }
            return Ok(LinkAddr::Shm(PathBuf::from(path)));
        }
        let Some(rest) = text.strip_prefix("tcp://") else {
            return Err(LinkAddrError::UnknownScheme(text.to_owned()));
        };
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(LinkAddrError::MissingPort(text.to_owned()));
        };
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6,
            None if host.contains(':') => return Err(LinkAddrError::BadPort(text.to_owned())),
            None => host,
        };
        if host.is_empty() {
            return Err(LinkAddrError::EmptyHost(text.to_owned()));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| LinkAddrError::BadPort(text.to_owned()))?;
        Ok(LinkAddr::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for LinkAddr {
    /// The same form [`LinkAddr::from_str`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkAddr::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            LinkAddr::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            LinkAddr::Unix(path) => write!(f, "unix://{}", path.display()),
            LinkAddr::Shm(path) => write!(f, "shm://{}", path.display()),
        }
    }
}

impl Serialize for LinkAddr {
    /// As the address string, so a TOML config writes `link = "tcp://10.0.0.5:9900"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LinkAddr {
    /// From the address string, with the parse error naming what is wrong.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<LinkAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The engine's listening socket, bound before serving so a caller can bind port 0 and learn the
/// port, or fail fast on a taken address before loading a large engine state.
#[derive(Debug)]
pub struct LinkListener {
    /// The socket, in non-blocking mode so the accept loop can notice shutdown.
    inner: ListenerInner,
}

/// The two kinds of listening socket.
#[derive(Debug)]
enum ListenerInner {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix listener and the socket file it created.
    Unix {
        /// Every accepted connection is offered shared-memory rings (`shm://`).
        shm: bool,
        /// The listener.
        listener: UnixListener,
        /// The socket file, removed when the listener is dropped.
        path: PathBuf,
        /// Device and inode of the file we created, so drop never removes a socket that another
        /// process bound at the same path since.
        file_id: (u64, u64),
    },
}

impl LinkListener {
    /// Binds `addr`. A Unix socket file left behind by a crashed engine is replaced; one that a
    /// live process still accepts on is not (the bind fails with `AddrInUse`).
    pub fn bind(addr: &LinkAddr) -> Result<LinkListener, LinkError> {
        let inner = match addr {
            LinkAddr::Tcp { host, port } => {
                ListenerInner::Tcp(TcpListener::bind((host.as_str(), *port))?)
            }
            LinkAddr::Unix(path) | LinkAddr::Shm(path) => {
                let listener = bind_unix(path)?;
                // Whoever can connect can feed the engine inputs: the engine's own account only.
                std::fs::set_permissions(
                    path,
                    std::fs::Permissions::from_mode(crate::constants::LINK_SOCKET_MODE),
                )?;
                let meta = std::fs::metadata(path)?;
                ListenerInner::Unix {
                    shm: matches!(addr, LinkAddr::Shm(_)),
                    listener,
                    path: path.clone(),
                    file_id: (meta.dev(), meta.ino()),
                }
            }
        };
        match &inner {
            ListenerInner::Tcp(listener) => listener.set_nonblocking(true)?,
            ListenerInner::Unix { listener, .. } => listener.set_nonblocking(true)?,
        }
        Ok(LinkListener { inner })
    }

    /// The address actually bound: for `tcp://host:0`, the port the system picked.
    pub fn local_addr(&self) -> Result<LinkAddr, LinkError> {
        Ok(match &self.inner {
            ListenerInner::Tcp(listener) => {
                let local = listener.local_addr()?;
                LinkAddr::Tcp {
                    host: local.ip().to_string(),
                    port: local.port(),
                }
            }
            ListenerInner::Unix {
                path, shm: false, ..
            } => LinkAddr::Unix(path.clone()),
            ListenerInner::Unix {
                path, shm: true, ..
            } => LinkAddr::Shm(path.clone()),
        })
    }

    /// A pending connection, if any (never blocks), in blocking mode, with its peer for logs.
    pub(crate) fn accept(&self) -> io::Result<Option<(Conn, String)>> {
        let accepted = match &self.inner {
            ListenerInner::Tcp(listener) => listener
                .accept()
                .map(|(stream, peer)| (Conn::Tcp(stream), format!("tcp://{peer}"))),
            ListenerInner::Unix {
                listener,
                path,
                shm,
                ..
            } => listener.accept().map(|(stream, _)| {
                let scheme = if *shm { "shm" } else { "unix" };
                (Conn::Unix(stream), format!("{scheme}://{}", path.display()))
            }),
        };
        match accepted {
            Ok((conn, peer)) => {
                let conn = match (conn, &self.inner) {
                    (Conn::Unix(stream), ListenerInner::Unix { shm: true, .. }) => {
                        // Blocking for the offer; the region's rings carry everything after.
                        stream.set_nonblocking(false)?;
                        Conn::Shm(Box::new(ShmConn::offer(stream)?))
                    }
                    (conn, _) => conn,
                };
                let mut conn = conn;
                // Some platforms let the accepted socket inherit the listener's non-blocking mode.
                conn.set_nonblocking(false)?;
                Ok(Some((conn, peer)))
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(error) => Err(error),
        }
    }
}

impl Drop for LinkListener {
    /// Removes our socket file, so the path is free for the next engine and no stale file
    /// suggests an engine is listening.
    fn drop(&mut self) {
        if let ListenerInner::Unix { path, file_id, .. } = &self.inner
            && let Ok(meta) = std::fs::symlink_metadata(path)
            && (meta.dev(), meta.ino()) == *file_id
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a Unix socket, replacing a stale socket file nobody accepts on.
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a live listener", path.display()),
                ));
            }
            if !std::fs::symlink_metadata(path)?.file_type().is_socket() {
                // Never delete something that is not a socket: a typo must not eat a file.
                return Err(error);
            }
            tracing::warn!(path = %path.display(), "replacing stale link socket file");
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

/// One accepted connection on the engine side, blocking.
#[derive(Debug)]
pub(crate) enum Conn {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
    /// Over shared-memory rings, with the Unix socket they were set up on.
    Shm(Box<ShmConn>),
}

impl Conn {
    /// Sets blocking or non-blocking mode.
    pub(crate) fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        match self {
            Conn::Tcp(stream) => stream.set_nonblocking(nonblocking),
            Conn::Unix(stream) => stream.set_nonblocking(nonblocking),
            Conn::Shm(conn) => {
                conn.set_nonblocking(nonblocking);
                Ok(())
            }
        }
    }

    /// Prepares the socket for the engine loop: reads wake every `read_timeout` so timers run,
    /// a write to a gateway that stopped reading fails after `write_timeout` instead of hanging
    /// the engine, and small frames go out at once (no Nagle delay on outputs). A shared-memory
    /// reader spins `spin` on an empty ring before it sleeps.
    pub(crate) fn configure(
        &mut self,
        read_timeout: Duration,
        write_timeout: Duration,
        spin: Duration,
    ) -> io::Result<()> {
        match self {
            Conn::Tcp(stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(read_timeout))?;
                stream.set_write_timeout(Some(write_timeout))
            }
            Conn::Unix(stream) => {
                stream.set_read_timeout(Some(read_timeout))?;
                stream.set_write_timeout(Some(write_timeout))
            }
            Conn::Shm(conn) => conn.configure(read_timeout, write_timeout, spin),
        }
    }

    /// Closes both directions, so the peer sees the end even if a clone of the socket lingers.
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(stream) => stream.shutdown(SocketShutdown::Both),
            Conn::Unix(stream) => stream.shutdown(SocketShutdown::Both),
            Conn::Shm(conn) => {
                conn.shutdown();
                Ok(())
            }
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(stream) => stream.read(buf),
            Conn::Unix(stream) => stream.read(buf),
            Conn::Shm(conn) => conn.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(stream) => stream.write(buf),
            Conn::Unix(stream) => stream.write(buf),
            Conn::Shm(conn) => conn.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(stream) => stream.flush(),
            Conn::Unix(stream) => stream.flush(),
            Conn::Shm(conn) => conn.flush(),
        }
    }
}

/// The read half of a gateway-side connection.
pub(crate) type AsyncReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The write half of a gateway-side connection.
pub(crate) type AsyncWriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Connects to an engine from tokio and splits the stream, so a reader task and a writer task
/// can each own a half. A shared-memory reader spins `spin` on an empty ring before it sleeps.
/// Over a Unix socket (and shared memory, set up on one) the engine's process id comes too, as
/// the kernel reports the socket's peer; over TCP it is not known.
pub(crate) async fn connect_async(
    addr: &LinkAddr,
    spin: Duration,
) -> Result<(AsyncReadHalf, AsyncWriteHalf, Option<u32>), LinkError> {
    let peer_pid = |stream: &tokio::net::UnixStream| {
        stream
            .peer_cred()
            .ok()
            .and_then(|cred| cred.pid())
            .and_then(|pid| u32::try_from(pid).ok())
    };
    match addr {
        LinkAddr::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            // Inputs are small and latency-critical: no Nagle delay.
            stream.set_nodelay(true)?;
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write), None))
        }
        LinkAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            let pid = peer_pid(&stream);
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write), pid))
        }
        LinkAddr::Shm(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            let pid = peer_pid(&stream);
            let ends = shm::accept_offer(&stream).await?;
            let (read, write) = shm::gateway_halves(stream, ends, spin);
            Ok((Box::new(read), Box::new(write), pid))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unix_sockets_and_loopback_tcp_stay_on_the_host() {
        for text in [
            "unix:///run/baton/blue.sock",
            "tcp://127.0.0.1:9900",
            "tcp://127.1.2.3:9900",
            "tcp://[::1]:9900",
            "tcp://localhost:9900",
        ] {
            assert!(text.parse::<LinkAddr>().unwrap().stays_on_host(), "{text}");
        }
        for text in [
            "tcp://0.0.0.0:9900",
            "tcp://[::]:9900",
            "tcp://10.0.0.7:9900",
            "tcp://engine-blue.internal:9900",
        ] {
            assert!(!text.parse::<LinkAddr>().unwrap().stays_on_host(), "{text}");
        }
    }

    #[test]
    fn addresses_round_trip_through_text() {
        for text in [
            "tcp://127.0.0.1:9900",
            "tcp://engine-blue.internal:1",
            "tcp://[::1]:9900",
            "unix:///run/baton/blue.sock",
            "unix://relative.sock",
            "shm:///run/baton/blue.sock",
        ] {
            let addr: LinkAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "tcp://[::1]:0".parse::<LinkAddr>().unwrap(),
            LinkAddr::Tcp {
                host: "::1".into(),
                port: 0
            }
        );
    }

    #[test]
    fn bad_addresses_name_the_problem() {
        type Expected = fn(String) -> LinkAddrError;
        let cases: &[(&str, Expected)] = &[
            ("127.0.0.1:9900", LinkAddrError::UnknownScheme),
            ("udp://127.0.0.1:9900", LinkAddrError::UnknownScheme),
            ("tcp://127.0.0.1", LinkAddrError::MissingPort),
            ("tcp://127.0.0.1:", LinkAddrError::BadPort),
            ("tcp://127.0.0.1:65536", LinkAddrError::BadPort),
            ("tcp://127.0.0.1:99/x", LinkAddrError::BadPort),
            ("tcp://::1:9900", LinkAddrError::BadPort),
            ("tcp://:9900", LinkAddrError::EmptyHost),
            ("tcp://[]:9900", LinkAddrError::EmptyHost),
            ("unix://", LinkAddrError::EmptyPath),
            ("shm://", LinkAddrError::EmptyPath),
        ];
        for (text, error) in cases {
            assert_eq!(
                text.parse::<LinkAddr>(),
                Err(error(text.to_string())),
                "{text}"
            );
        }
    }

    #[test]
    fn addresses_read_from_config_strings() {
        #[derive(Deserialize, Serialize)]
        struct Config {
            link: LinkAddr,
        }
        let config: Config = toml::from_str(r#"link = "tcp://10.0.0.5:9900""#).unwrap();
        assert_eq!(config.link.to_string(), "tcp://10.0.0.5:9900");
        let error = toml::from_str::<Config>(r#"link = "tcp://10.0.0.5""#)
            .err()
            .unwrap();
        assert!(error.to_string().contains("has no port"), "{error}");
    }

    #[test]
    fn stale_unix_socket_is_replaced_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        // A socket file nobody accepts on, as a crashed engine leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let addr = LinkAddr::Unix(path.clone());
        let listener = LinkListener::bind(&addr).unwrap();
        // A live listener is not replaced.
        assert!(LinkListener::bind(&addr).is_err());
        drop(listener);
        assert!(!path.exists());
        // A regular file at the path is never deleted.
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(LinkListener::bind(&addr).is_err());
        assert!(path.exists());
    }
}
