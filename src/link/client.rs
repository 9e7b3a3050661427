//! The gateway side of the link: a thin tokio driver around the codec. It connects, does the
//! handshake, sends inputs and requests, and returns whatever the engine sends; what to do with
//! outputs, when to send heartbeats and when to declare an engine dead are the gateway's policy,
//! for which it exposes the times of the last traffic each way.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::auth::{self, LinkSecret};
use super::error::LinkError;
use super::protocol::{
    Close, Frame, FrameDecoder, Heartbeat, Hello, LINK_PROTOCOL_VERSION,
    LINK_PROTOCOL_VERSIONS_GATEWAY, Welcome, encode_at, encode_input_at, encode_restore_at,
};
use super::transport::{AsyncReadHalf, AsyncWriteHalf, LinkAddr, connect_async};
use crate::constants::{LINK_FRAME_BYTES_MAX, LINK_HANDSHAKE_TIMEOUT_MS};
use crate::engine::Input;

/// Write buffer capacity kept between sends; a larger one (after a restore) is released.
const WRITE_BUFFER_KEPT_BYTES: usize = 4 * LINK_FRAME_BYTES_MAX;

/// A connected, handshaken link to one engine. Split it with [`EngineLink::into_split`] to read
/// and write from different tasks: the engine answers as it reads, so a caller that writes many
/// inputs without reading can fill both socket buffers and stall both sides. From one task,
/// keep the inputs sent but not yet answered well below a socket buffer's worth.
#[derive(Debug)]
pub struct EngineLink {
    /// The engine's process id, when the kernel reports it (a Unix socket's peer): the gateway
    /// sets a standby's scheduling class by it (see `gateway::placement`).
    peer_pid: Option<u32>,
    /// Frames from the engine.
    reader: LinkReader,
    /// Frames to the engine.
    writer: LinkWriter,
}

/// The receiving half of an [`EngineLink`].
pub struct LinkReader {
    /// The socket's read half.
    stream: AsyncReadHalf,
    /// Bytes received and not yet returned as frames.
    decoder: FrameDecoder,
    /// When bytes last arrived, for the caller's dead-engine timeout.
    last_received: Instant,
}

/// The sending half of an [`EngineLink`].
pub struct LinkWriter {
    /// The socket's write half.
    stream: AsyncWriteHalf,
    /// Frames encoded for the next write; empty between calls.
    buf: Vec<u8>,
    /// When bytes were last written, for the caller's heartbeat schedule.
    last_sent: Instant,
    /// The protocol version the engine speaks (one of `LINK_PROTOCOL_VERSIONS_GATEWAY`), which
    /// every frame is encoded at: an engine of the build before parties gets inputs without them.
    version: u16,
}

impl std::fmt::Debug for LinkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkReader")
            .field("decoder", &self.decoder)
            .field("last_received", &self.last_received)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LinkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkWriter")
            .field("last_sent", &self.last_sent)
            .finish_non_exhaustive()
    }
}

/// Connects to the engine at `addr` and completes the handshake within
/// [`LINK_HANDSHAKE_TIMEOUT_MS`]; returns the link and the engine's Hello (its name, build,
/// last applied input and snapshot formats). An engine serves one gateway at a time: while
/// another is connected, this waits in the engine's backlog and times out.
pub async fn connect(addr: &LinkAddr) -> Result<(EngineLink, Hello), LinkError> {
    connect_with_timeout(addr, Duration::from_millis(LINK_HANDSHAKE_TIMEOUT_MS)).await
}

/// [`connect`] with a caller-chosen handshake timeout (connect included), for tests and for
/// gateways that probe many engines.
pub async fn connect_with_timeout(
    addr: &LinkAddr,
    timeout: Duration,
) -> Result<(EngineLink, Hello), LinkError> {
    connect_authenticated(addr, timeout, None).await
}

/// [`connect_with_timeout`] proving `secret` to the engine and requiring its proof in turn
/// ([`super::auth`]); with `None`, an engine that requires a secret is refused with a reason.
pub async fn connect_authenticated(
    addr: &LinkAddr,
    timeout: Duration,
    secret: Option<&LinkSecret>,
) -> Result<(EngineLink, Hello), LinkError> {
    let spin = Duration::from_micros(crate::constants::LINK_SHM_SPIN_US_DEFAULT);
    connect_spinning(addr, timeout, secret, spin).await
}

/// [`connect_authenticated`] whose reader, on a shared-memory link, spins `spin` on an empty
/// ring before it sleeps (`[link] spin_us`): a shorter wait for each answer, for a core.
pub async fn connect_spinning(
    addr: &LinkAddr,
    timeout: Duration,
    secret: Option<&LinkSecret>,
    spin: Duration,
) -> Result<(EngineLink, Hello), LinkError> {
    match tokio::time::timeout(timeout, handshake(addr, secret, spin)).await {
        Ok(result) => result,
        Err(_) => Err(LinkError::HandshakeTimeout(timeout)),
    }
}

/// Connects, reads Hello, answers Welcome or Close.
async fn handshake(
    addr: &LinkAddr,
    secret: Option<&LinkSecret>,
    spin: Duration,
) -> Result<(EngineLink, Hello), LinkError> {
    let (read, write, peer_pid) = connect_async(addr, spin).await?;
    let now = Instant::now();
    let mut link = EngineLink {
        peer_pid,
        reader: LinkReader {
            stream: read,
            decoder: FrameDecoder::new(),
            last_received: now,
        },
        writer: LinkWriter {
            stream: write,
            buf: Vec::new(),
            last_sent: now,
            version: LINK_PROTOCOL_VERSION,
        },
    };
    let refusal = match link.reader.recv().await {
        Ok(Frame::Hello(hello))
            if LINK_PROTOCOL_VERSIONS_GATEWAY.contains(&hello.protocol_version) =>
        {
            // From the Welcome on, speak the engine's version (the handshake kinds are frozen,
            // so everything before read the same at any version).
            link.reader.decoder.speak(hello.protocol_version);
            link.writer.version = hello.protocol_version;
            if hello.protocol_version != LINK_PROTOCOL_VERSION {
                tracing::warn!(
                    %addr,
                    engine = %hello.engine_name,
                    build = %hello.build_version,
                    protocol_version = hello.protocol_version,
                    "engine speaks a link protocol from before parties: its inputs go without them and its reports carry none"
                );
            }
            match authenticate(&mut link, &hello, secret).await {
                Ok(()) => {}
                Err(LinkError::Unauthenticated(reason)) => {
                    let refusal = LinkError::Unauthenticated(reason);
                    let _ = link.writer.close(&refusal.to_string()).await;
                    return Err(refusal);
                }
                Err(error) => return Err(error),
            }
            tracing::info!(
                %addr,
                engine = %hello.engine_name,
                build = %hello.build_version,
                executable_sha256 = %hello.executable_sha256,
                last_input_seq = hello.last_input_seq,
                "engine link up"
            );
            return Ok((link, hello));
        }
        Ok(Frame::Hello(hello)) => LinkError::IncompatibleVersion {
            peer: hello.protocol_version,
        },
        Ok(other) => LinkError::Unexpected {
            got: other.kind().name(),
            context: "instead of Hello",
        },
        Err(error) => return Err(error),
    };
    // Tell the engine why, in the frozen Close layout it can read whatever its version.
    let _ = link.writer.close(&refusal.to_string()).await;
    Err(refusal)
}

/// Answers the engine's Hello with Welcome, proving the secret when there is one and then
/// waiting for the engine's proof; refuses an engine whose requirement does not match ours.
async fn authenticate(
    link: &mut EngineLink,
    hello: &Hello,
    secret: Option<&LinkSecret>,
) -> Result<(), LinkError> {
    let Some(secret) = secret else {
        if !hello.auth_nonce.is_empty() {
            return Err(LinkError::Unauthenticated(format!(
                "engine {} requires the link secret and this gateway has none: set [link] secret_file to the engine's secret file",
                hello.engine_name
            )));
        }
        return link
            .writer
            .send(&Frame::Welcome(Welcome {
                protocol_version: hello.protocol_version,
                auth_nonce: Vec::new(),
                auth_proof: Vec::new(),
            }))
            .await;
    };
    if !auth::nonce_ok(&hello.auth_nonce) {
        return Err(LinkError::Unauthenticated(format!(
            "engine {} does not authenticate the link: set [link] secret_file on the engine to the same secret as the gateway's",
            hello.engine_name
        )));
    }
    let gateway_nonce = auth::nonce()?;
    let proof = secret.gateway_proof(&hello.auth_nonce, &gateway_nonce);
    link.writer
        .send(&Frame::Welcome(Welcome {
            protocol_version: hello.protocol_version,
            auth_nonce: gateway_nonce.clone(),
            auth_proof: proof,
        }))
        .await?;
    let expected = secret.engine_proof(&hello.auth_nonce, &gateway_nonce);
    match link.reader.recv().await? {
        Frame::AuthProof(answer) if auth::proofs_equal(&answer.proof, &expected) => Ok(()),
        Frame::AuthProof(_) => Err(LinkError::Unauthenticated(format!(
            "engine {} proved a different link secret",
            hello.engine_name
        ))),
        Frame::Close(close) => Err(LinkError::Closed {
            reason: close.reason,
        }),
        other => Err(LinkError::Unexpected {
            got: other.kind().name(),
            context: "instead of AuthProof",
        }),
    }
}

impl EngineLink {
    /// The engine's process id, when it is on this host behind a Unix socket.
    pub fn peer_pid(&self) -> Option<u32> {
        self.peer_pid
    }

    /// Sends one input; see [`LinkWriter::send_input`].
    pub async fn send_input(&mut self, input: &Input) -> Result<(), LinkError> {
        self.writer.send_input(input).await
    }

    /// Sends inputs in one write; see [`LinkWriter::send_inputs`].
    pub async fn send_inputs(&mut self, inputs: &[Input]) -> Result<(), LinkError> {
        self.writer.send_inputs(inputs).await
    }

    /// The next frame from the engine; see [`LinkReader::recv`].
    pub async fn recv(&mut self) -> Result<Frame, LinkError> {
        self.reader.recv().await
    }

    /// Asks for a snapshot; see [`LinkWriter::request_snapshot`].
    pub async fn request_snapshot(&mut self) -> Result<(), LinkError> {
        self.writer.request_snapshot().await
    }

    /// Sends a snapshot to restore; see [`LinkWriter::restore`].
    pub async fn restore(&mut self, snapshot: &[u8]) -> Result<(), LinkError> {
        self.writer.restore(snapshot).await
    }

    /// Asks for the state digest; see [`LinkWriter::request_digest`].
    pub async fn request_digest(&mut self) -> Result<(), LinkError> {
        self.writer.request_digest().await
    }

    /// Sends a heartbeat; see [`LinkWriter::heartbeat`].
    pub async fn heartbeat(&mut self, last_input_seq: u64) -> Result<(), LinkError> {
        self.writer.heartbeat(last_input_seq).await
    }

    /// Ends the link with a reason the engine logs; see [`LinkWriter::close`].
    pub async fn close(mut self, reason: &str) -> Result<(), LinkError> {
        self.writer.close(reason).await
    }

    /// The two halves, for a reader task and a writer task.
    pub fn into_split(self) -> (LinkReader, LinkWriter) {
        (self.reader, self.writer)
    }
}

impl LinkReader {
    /// Decodes the engine's outputs into vectors from `pool`, which the gateway core refills
    /// (see [`crate::link::OutputsPool`]).
    pub fn use_outputs_pool(&mut self, pool: crate::link::OutputsPool) {
        self.decoder.use_outputs_pool(pool);
    }

    /// The next frame from the engine.
    ///
    /// A Close from the engine comes back as [`LinkError::Closed`] with its reason, and a
    /// connection that ends without one as [`LinkError::Disconnected`], so the caller handles
    /// every way a link ends in one place. Any error means the link is finished.
    ///
    /// Cancel-safe: received bytes stay in the decoder, so `recv` can sit in a `select!` with
    /// the caller's heartbeat timer.
    pub async fn recv(&mut self) -> Result<Frame, LinkError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`LinkReader::recv`] as a poll, for a caller that waits on several links and other
    /// work in one task (the gateway's driver): `Pending` registers `cx`'s waker with the
    /// socket. Received bytes stay in the decoder between polls, so dropping the caller's
    /// future loses nothing.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Frame, LinkError>> {
        loop {
            match self.decoder.next_frame()? {
                Some(Frame::Close(Close { reason })) => {
                    return Poll::Ready(Err(LinkError::Closed { reason }));
                }
                Some(frame) => return Poll::Ready(Ok(frame)),
                None => {}
            }
            let space = self.decoder.read_space();
            debug_assert!(!space.is_empty(), "a zero-length read would look like EOF");
            let mut buf = ReadBuf::new(space);
            std::task::ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(Err(LinkError::Disconnected));
            }
            self.decoder.advance(n);
            self.last_received = Instant::now();
        }
    }

    /// When bytes last arrived from the engine. Engines send a heartbeat after
    /// [`crate::constants::LINK_HEARTBEAT_INTERVAL_MS_DEFAULT`] of silence, so a long gap here
    /// means a dead or stuck engine; how long is the gateway's failover policy.
    pub fn last_received(&self) -> Instant {
        self.last_received
    }
}

impl LinkWriter {
    /// Sends any frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        let version = self.version;
        self.buffer(|buf| encode_at(version, frame, buf))?;
        self.write_buffered().await
    }

    /// Sends one input. The engine answers each input with exactly one Outputs, Replayed or
    /// AlreadyApplied frame, in order.
    pub async fn send_input(&mut self, input: &Input) -> Result<(), LinkError> {
        let version = self.version;
        self.buffer(|buf| encode_input_at(version, input, buf))?;
        self.write_buffered().await
    }

    /// Sends many inputs with one write: one syscall instead of one per input, and the engine
    /// answers a batch read in one read with one write of its own.
    pub async fn send_inputs(&mut self, inputs: &[Input]) -> Result<(), LinkError> {
        let version = self.version;
        self.buffer(|buf| {
            inputs
                .iter()
                .try_for_each(|input| encode_input_at(version, input, buf))
        })?;
        self.write_buffered().await
    }

    /// Sends a heartbeat carrying the last input sent. The engine drops a gateway silent for
    /// [`crate::constants::LINK_PEER_TIMEOUT_MS_DEFAULT`], so call this when
    /// [`LinkWriter::last_sent`] is older than the heartbeat interval.
    pub async fn heartbeat(&mut self, last_input_seq: u64) -> Result<(), LinkError> {
        self.send(&Frame::Heartbeat(Heartbeat { last_input_seq }))
            .await
    }

    /// Asks for a Snapshot (or Refused), answered after every input sent before it.
    pub async fn request_snapshot(&mut self) -> Result<(), LinkError> {
        self.send(&Frame::SnapshotRequest).await
    }

    /// Asks for a DigestReport, answered after every input sent before it.
    pub async fn request_digest(&mut self) -> Result<(), LinkError> {
        self.send(&Frame::DigestRequest).await
    }

    /// Sends snapshot bytes for the engine to restore (answered Restored or Refused); inputs
    /// then continue from the snapshot's seq + 1.
    pub async fn restore(&mut self, snapshot: &[u8]) -> Result<(), LinkError> {
        let version = self.version;
        self.buffer(|buf| encode_restore_at(version, snapshot, buf))?;
        self.write_buffered().await
    }

    /// Sends Close with `reason` and shuts the connection down.
    pub async fn close(&mut self, reason: &str) -> Result<(), LinkError> {
        let close = Close {
            reason: reason.to_owned(),
        };
        self.send(&Frame::Close(close)).await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    /// When bytes were last written to the engine, for the heartbeat schedule.
    pub fn last_sent(&self) -> Instant {
        self.last_sent
    }

    /// Encodes into the write buffer; on error nothing of this call stays buffered.
    fn buffer(
        &mut self,
        encode_into: impl FnOnce(&mut Vec<u8>) -> Result<(), LinkError>,
    ) -> Result<(), LinkError> {
        let result = encode_into(&mut self.buf);
        if result.is_err() {
            self.buf.clear();
        }
        result
    }

    /// Writes the buffer out. Not cancel-safe: a write cut short leaves a partial frame on the
    /// wire, so a cancelled send means the link must be dropped.
    async fn write_buffered(&mut self) -> Result<(), LinkError> {
        let result = self.stream.write_all(&self.buf).await;
        self.buf.clear();
        self.buf.shrink_to(WRITE_BUFFER_KEPT_BYTES);
        result?;
        self.stream.flush().await?;
        self.last_sent = Instant::now();
        Ok(())
    }
}
