//! The engine link: how the gateway feeds sequenced inputs to engine processes and gets their
//! outputs, snapshots and digests back, over TCP, a Unix socket or shared memory.
//!
//! Engines run as their own processes and never see FIX or a counterparty's socket
//! (DESIGN.md invariant 1); this link is all they see. It holds no business logic: the engine
//! side drives any [`crate::engine::Engine`], and the gateway side hands frames to the
//! sequencer and outbox.
//!
//! # Layout
//!
//! - [`protocol`]: the frames, their framing, versioning and chunking, and the sans-IO codec
//!   ([`encode`], [`FrameDecoder`]) shared by both sides.
//! - [`transport`]: link addresses (`tcp://host:port`, `unix:///path`, `shm:///path`) and
//!   sockets.
//! - [`shm`]: the shared-memory transport, two rings in a mapped file beside a Unix socket.
//! - [`serve`] / [`serve_on`]: the engine side, a blocking loop that owns the engine.
//! - [`connect`] / [`EngineLink`]: the gateway side, a thin tokio wrapper.
//!
//! # Guarantees
//!
//! - Every frame is bounded ([`crate::constants::LINK_FRAME_BYTES_MAX`], larger messages
//!   chunked up to [`crate::constants::LINK_MESSAGE_BYTES_MAX`]); an over-long length is refused
//!   before its body is buffered.
//! - A peer's bytes never panic either side: every malformed frame is a [`LinkError`], the side
//!   that detects it sends Close with the reason and drops the connection.
//! - Each input gets exactly one answer, in order, and is applied at most once, also across
//!   reconnects; a resent input is answered with the outputs it produced the first time.
//!
//! # Resent inputs
//!
//! When a connection breaks, inputs may have been applied whose Outputs never reached the
//! gateway. The engine's Hello on the next connection says where it stands, and the gateway
//! simply resends every input it has no answer for. The engine never applies an input twice:
//!
//! - seq = last + 1: applied; answered with [`Frame::Outputs`].
//! - seq ≤ last, outputs retained: answered with [`Frame::Replayed`], the payload it sent the
//!   first time, byte for byte. The gateway's outbox delivers each `(input_seq, index)` once,
//!   so a Replayed copy of an Outputs it did receive is dropped there.
//! - seq ≤ last, outputs no longer retained (evicted, or from before a restore):
//!   [`Frame::AlreadyApplied`]; the gateway must take those outputs from another engine or a
//!   journal replay.
//! - seq > last + 1: a gap; the link is closed with the reason, the engine is untouched, and the
//!   gateway can reconnect and resend from the Hello's seq.
//!
//! The retention window ([`crate::constants::LINK_REPLAY_INPUTS_MAX`] inputs,
//! [`crate::constants::LINK_REPLAY_BYTES_MAX`] bytes)
//! covers the gateway's in-flight limit ([`crate::constants::LINK_INPUTS_IN_FLIGHT_MAX`]), so a
//! broken link loses nothing the gateway cannot get back from the same engine. Only the seq of a
//! resent input is checked, not its content: the journal is the source of truth and the gateway
//! resends from it.

pub mod auth;
mod client;
mod error;
pub mod protocol;
mod replay;
mod server;
pub mod shm;
pub mod transport;

pub use auth::LinkSecret;
pub use client::{
    EngineLink, LinkReader, LinkWriter, connect, connect_authenticated, connect_spinning,
    connect_with_timeout,
};
pub use error::LinkError;
pub use protocol::{
    AlreadyApplied, AuthProof, Close, DigestReport, Frame, FrameDecoder, FrameKind, Heartbeat,
    Hello, LINK_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION_BEFORE_PARTIES,
    LINK_PROTOCOL_VERSION_BEFORE_TRANSFER, LINK_PROTOCOL_VERSIONS_GATEWAY, Outputs, OutputsPool,
    Refused, RefusedRequest, Restore, Restored, Snapshot, Welcome, encode, encode_at, encode_input,
    encode_input_at, encode_outputs_payload, encode_restore, encode_restore_at, write_message,
};
pub use server::{ServeConfig, Shutdown, serve, serve_on};
pub use transport::{LinkAddr, LinkAddrError, LinkListener, LinkTransport};
