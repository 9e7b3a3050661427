//! The baseline: a bare TCP echo server answering each request with the same bytes, measured by
//! the same client threads, schedule and bookkeeping as baton ([`super::load`]). Its latency is
//! what the kernel, the loopback and the thread wake-ups cost on this machine; baton's numbers
//! are reported as ratios to it, so a run on a slow VM and one on a fast server compare.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::load::{Connection, Event, Kind, LoadError, Tap, Wire};
use super::poll;
use crate::constants;

/// A running echo server; it lives as long as the process (its threads end when clients close).
pub struct EchoServer {
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl EchoServer {
    /// Starts the server on a free loopback port: one thread per connection, TCP_NODELAY, like
    /// the gateway's sockets.
    pub fn start() -> Result<EchoServer, LoadError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| LoadError::Io { what, source }
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding the echo server"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the echo address"))?;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                std::thread::spawn(move || echo(stream));
            }
        });
        Ok(EchoServer { addr })
    }
}

fn echo(mut stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buf = vec![0; constants::READ_CHUNK];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Opens client session `n` to the echo server; every request is `payload_bytes` long.
pub fn connect_echo(
    addr: SocketAddr,
    payload_bytes: usize,
    _n: usize,
) -> Result<Connection, LoadError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| LoadError::Io { what, source }
    };
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(io("connecting to the echo server"))?;
    stream
        .set_nodelay(true)
        .map_err(io("setting TCP_NODELAY"))?;
    let read_half = stream.try_clone().map_err(io("cloning the socket"))?;
    read_half
        .set_read_timeout(Some(Duration::from_millis(constants::BENCH_READ_POLL_MS)))
        .map_err(io("setting the read timeout"))?;
    let payload_bytes = payload_bytes.max(8);
    Ok((
        Box::new(EchoWire {
            stream,
            payload: vec![b'x'; payload_bytes],
        }),
        Box::new(EchoTap {
            stream: read_half,
            payload_bytes,
            recv: Vec::new(),
            chunk: vec![0; constants::READ_CHUNK],
        }),
    ))
}

/// Writes fixed-size requests whose first 8 bytes are the order index.
struct EchoWire {
    stream: TcpStream,
    payload: Vec<u8>,
}

impl Wire for EchoWire {
    fn send(&mut self, k: u64, _kind: Kind) -> std::io::Result<()> {
        self.payload[..8].copy_from_slice(&k.to_le_bytes());
        self.stream.write_all(&self.payload)
    }
}

/// Reads the echoes back, one per `payload_bytes`.
struct EchoTap {
    stream: TcpStream,
    payload_bytes: usize,
    recv: Vec<u8>,
    chunk: Vec<u8>,
}

impl Tap for EchoTap {
    fn read(&mut self, events: &mut Vec<Event>) -> std::io::Result<()> {
        match self.stream.read(&mut self.chunk) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => self.recv.extend_from_slice(&self.chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        self.take_answers(events);
        Ok(())
    }

    fn socket(&self) -> Option<RawFd> {
        Some(self.stream.as_raw_fd())
    }

    fn read_ready(&mut self, events: &mut Vec<Event>) -> std::io::Result<()> {
        let read = poll::read_available(self.stream.as_raw_fd(), &mut self.chunk, &mut self.recv);
        self.take_answers(events);
        read
    }
}

impl EchoTap {
    /// An answer for every whole echo buffered, leaving a partial one for the next read.
    fn take_answers(&mut self, events: &mut Vec<Event>) {
        let whole = self.recv.len() / self.payload_bytes * self.payload_bytes;
        for request in self.recv[..whole].chunks_exact(self.payload_bytes) {
            let mut k = [0u8; 8];
            k.copy_from_slice(&request[..8]);
            events.push(Event::Answer {
                k: u64::from_le_bytes(k),
                terminal: true,
            });
        }
        self.recv.drain(..whole);
    }
}
