//! The link's frames and their codec, without I/O: bytes in, [`Frame`]s out and back, so the
//! blocking engine loop, the tokio gateway client and the fuzz-style tests share one codec.
//!
//! # Framing
//!
//! ```text
//! [u32 LE: length of the rest][u16 LE: protocol version][u8: kind][payload]
//! ```
//!
//! The payload is the frame's struct encoded with bincode 2's standard configuration (varint
//! integers). A whole frame is at most [`LINK_FRAME_BYTES_MAX`] bytes; the decoder refuses a
//! larger declared length as soon as the 4-byte prefix is in, before buffering any of the body.
//!
//! A message whose payload does not fit one frame (a snapshot, a restore, the reports of an
//! order that sweeps a deep book) is sent as a `ChunkedBegin` frame (`[u8 kind][u64 LE total
//! length]`) followed by `Chunk` frames of raw payload bytes, back to back, with no other frame
//! in between. The decoder reassembles them (up to [`LINK_MESSAGE_BYTES_MAX`]) and returns one
//! ordinary [`Frame`]; callers never see chunks.
//!
//! # Versioning
//!
//! Every frame carries [`LINK_PROTOCOL_VERSION`]. A frame of another version is refused with
//! [`LinkError::UnsupportedVersion`], except the three handshake kinds Hello, Welcome and Close:
//! their kind numbers and payload layouts are frozen (a later version may only append fields,
//! which older readers ignore and newer readers leave empty when absent), so peers of different versions can always tell each other which
//! version they speak and why they hang up. The handshake then decides: the engine's Hello names
//! its version, and the gateway answers Welcome with the version both will speak, or Close.
//! An engine speaks only [`LINK_PROTOCOL_VERSION`]; a gateway also speaks the version before
//! parties, whose Input and Outputs lack them, and the version before state transfers, whose
//! frames are the current ones but which is never sent a transfer
//! ([`LINK_PROTOCOL_VERSIONS_GATEWAY`]), so an engine of an earlier build can be rolled back to.
//!
//! # Conversation
//!
//! | frame | direction | answer |
//! |---|---|---|
//! | [`Hello`] | engine → gateway, first frame | [`Welcome`] or [`Close`] |
//! | [`AuthProof`] | engine → gateway, right after a Welcome that proved the link secret | — (the gateway closes on a wrong one) |
//! | [`Frame::Input`] | gateway → engine | exactly one of `Outputs`, `Replayed`, `AlreadyApplied` |
//! | [`Frame::Outputs`] | engine → gateway | — |
//! | [`Frame::Replayed`] | engine → gateway | — |
//! | [`AlreadyApplied`] | engine → gateway | — |
//! | [`Heartbeat`] | both, when idle | — |
//! | `SnapshotRequest` | gateway → engine | [`Snapshot`] or [`Refused`] |
//! | [`Restore`] | gateway → engine | [`Restored`] or [`Refused`] |
//! | `DigestRequest` | gateway → engine | [`DigestReport`] |
//! | [`Close`] | both | the connection ends |
//!
//! The engine answers requests in the order it receives them, so the gateway can match answers
//! to requests by position. A Snapshot stands at the last input applied before its request, which
//! it names; the engine may write it beside its order loop, so the outputs of inputs sent after
//! the request can arrive before it.

use std::fmt;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::{Deserialize, Serialize};

use super::error::LinkError;
use crate::constants::{LINK_FRAME_BYTES_MAX, LINK_MESSAGE_BYTES_MAX};
use crate::engine::{Digest, Input, Output};

/// The protocol version this build speaks. Bump it when any non-handshake frame's layout or
/// meaning changes; the handshake frames stay readable across versions (see the module docs).
///
/// Version 2: every request (Input) and every ExecutionReport (Outputs) ends with its parties.
/// Version 3: an Input may carry a state transfer (`Request::Transfer`); every layout is the
/// same as version 2's, and a gateway sends no transfer to an engine that speaks 2 or less.
pub const LINK_PROTOCOL_VERSION: u16 = 3;

/// The version before an Input could carry a state transfer: its frames are exactly version
/// 3's, but an engine speaking it cannot decode a transfer, so a canary's rollback to it halts
/// the canary's symbols instead of moving their state.
pub const LINK_PROTOCOL_VERSION_BEFORE_TRANSFER: u16 = 2;

/// The version before requests and reports carried parties, the only one whose frames differ
/// from [`LINK_PROTOCOL_VERSION`]'s: Input and Outputs lack the parties, every other layout is
/// the same.
pub const LINK_PROTOCOL_VERSION_BEFORE_PARTIES: u16 = 1;

/// Versions a gateway of this build speaks to an engine, chosen per link from the engine's
/// Hello: its own, and the one before parties, so that an engine of the build before (the
/// target of a rollback) can still be attached. To such an engine inputs go without their
/// parties, and its reports come back without them; an engine of this build speaks only
/// [`LINK_PROTOCOL_VERSION`].
pub const LINK_PROTOCOL_VERSIONS_GATEWAY: [u16; 3] = [
    LINK_PROTOCOL_VERSION_BEFORE_PARTIES,
    LINK_PROTOCOL_VERSION_BEFORE_TRANSFER,
    LINK_PROTOCOL_VERSION,
];

/// Bytes of the length prefix.
const LENGTH_PREFIX_BYTES: usize = 4;

/// Bytes before a frame's payload: length prefix, version and kind.
pub const FRAME_HEADER_BYTES: usize = LENGTH_PREFIX_BYTES + 2 + 1;

/// Largest payload of one frame; larger messages are chunked.
const FRAME_PAYLOAD_BYTES_MAX: usize = LINK_FRAME_BYTES_MAX - FRAME_HEADER_BYTES;

/// Payload of a `ChunkedBegin` frame: the message kind and its total length.
const CHUNKED_BEGIN_PAYLOAD_BYTES: usize = 1 + 8;

/// bincode's standard configuration, with the message limit as an extra guard against a length
/// inside a payload that claims more than a message can hold.
const CONFIG: Configuration<LittleEndian, Varint, Limit<LINK_MESSAGE_BYTES_MAX>> =
    bincode::config::standard().with_limit::<LINK_MESSAGE_BYTES_MAX>();

/// The kind byte of a frame. Numbers are part of the protocol: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// [`Hello`]; frozen across versions.
    Hello = 1,
    /// [`Welcome`]; frozen across versions.
    Welcome = 2,
    /// [`Close`]; frozen across versions.
    Close = 3,
    /// [`Heartbeat`].
    Heartbeat = 4,
    /// [`Frame::Input`].
    Input = 5,
    /// [`Frame::Outputs`].
    Outputs = 6,
    /// [`Frame::Replayed`].
    Replayed = 7,
    /// [`AlreadyApplied`].
    AlreadyApplied = 8,
    /// [`Frame::SnapshotRequest`].
    SnapshotRequest = 9,
    /// [`Snapshot`].
    Snapshot = 10,
    /// [`Restore`].
    Restore = 11,
    /// [`Restored`].
    Restored = 12,
    /// [`Refused`].
    Refused = 13,
    /// [`Frame::DigestRequest`].
    DigestRequest = 14,
    /// [`DigestReport`].
    Digest = 15,
    /// [`AuthProof`].
    AuthProof = 16,
    /// Wire only: announces a chunked message (its kind and total length).
    ChunkedBegin = 0xF0,
    /// Wire only: the next piece of a chunked message's payload.
    Chunk = 0xF1,
}

impl FrameKind {
    /// Every kind, for lookups by byte.
    const ALL: [FrameKind; 18] = [
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Close,
        FrameKind::Heartbeat,
        FrameKind::Input,
        FrameKind::Outputs,
        FrameKind::Replayed,
        FrameKind::AlreadyApplied,
        FrameKind::SnapshotRequest,
        FrameKind::Snapshot,
        FrameKind::Restore,
        FrameKind::Restored,
        FrameKind::Refused,
        FrameKind::DigestRequest,
        FrameKind::Digest,
        FrameKind::AuthProof,
        FrameKind::ChunkedBegin,
        FrameKind::Chunk,
    ];

    /// The kind a byte names, if any.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        FrameKind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }

    /// Handshake kinds keep their layout across protocol versions, so a peer of another version
    /// can still be told, in a frame it understands, why the link is refused.
    pub fn is_frozen(self) -> bool {
        matches!(
            self,
            FrameKind::Hello | FrameKind::Welcome | FrameKind::Close
        )
    }

    /// Chunking kinds carry pieces of another message and never surface as a [`Frame`].
    fn is_wire_only(self) -> bool {
        matches!(self, FrameKind::ChunkedBegin | FrameKind::Chunk)
    }

    /// A short name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Hello => "Hello",
            FrameKind::Welcome => "Welcome",
            FrameKind::Close => "Close",
            FrameKind::Heartbeat => "Heartbeat",
            FrameKind::Input => "Input",
            FrameKind::Outputs => "Outputs",
            FrameKind::Replayed => "Replayed",
            FrameKind::AlreadyApplied => "AlreadyApplied",
            FrameKind::SnapshotRequest => "SnapshotRequest",
            FrameKind::Snapshot => "Snapshot",
            FrameKind::Restore => "Restore",
            FrameKind::Restored => "Restored",
            FrameKind::Refused => "Refused",
            FrameKind::DigestRequest => "DigestRequest",
            FrameKind::Digest => "Digest",
            FrameKind::AuthProof => "AuthProof",
            FrameKind::ChunkedBegin => "ChunkedBegin",
            FrameKind::Chunk => "Chunk",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// First frame of every connection, engine → gateway: who the engine is and where it stands, so
/// the gateway knows which journal entries to send next and whether it can restore the engine.
///
/// Frozen: fields are only ever appended, after the last one. A reader ignores fields it does
/// not know, and fills fields appended since version 1 with their empty value when an older
/// engine's Hello ends before them (see `decode_hello`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The link protocol version the engine speaks.
    pub protocol_version: u16,
    /// The operator's name for this engine ("blue", "green"), for logs and change records.
    pub engine_name: String,
    /// The engine build ([`crate::engine::Engine::build_version`]), recorded in change records.
    pub build_version: String,
    /// Seq of the last input the engine applied; it kept its state across gateway reconnects,
    /// so the gateway resumes from here rather than from the start of the journal.
    pub last_input_seq: u64,
    /// Snapshot format versions the engine reads, oldest first, the last being the one it
    /// writes; lets the gateway check before a restore that a snapshot will load.
    pub snapshot_formats: Vec<u16>,
    /// SHA-256 (64 lowercase hex) of the executable the engine runs
    /// ([`crate::control::artifact::self_sha256`]), so the gateway can show which bytes run
    /// and give authority only to an engine running an approved change's artifact. Empty when
    /// the engine did not say: it could not read its own binary, or it predates this field.
    /// Appended after version 1's layout.
    pub executable_sha256: String,
    /// The engine's handshake nonce when it requires the link secret ([`super::auth`]); empty
    /// when it does not. Appended after `executable_sha256`.
    #[serde(with = "bytes_field")]
    pub auth_nonce: Vec<u8>,
}

/// [`Hello`] as version 1 laid it out: the prefix every later Hello starts with.
#[derive(Deserialize)]
struct HelloV1 {
    /// See [`Hello::protocol_version`].
    protocol_version: u16,
    /// See [`Hello::engine_name`].
    engine_name: String,
    /// See [`Hello::build_version`].
    build_version: String,
    /// See [`Hello::last_input_seq`].
    last_input_seq: u64,
    /// See [`Hello::snapshot_formats`].
    snapshot_formats: Vec<u16>,
}

/// The gateway's acceptance of a Hello; the engine processes nothing before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version both sides speak from now on.
    pub protocol_version: u16,
    /// The gateway's handshake nonce when it holds the link secret; empty otherwise. Appended
    /// after version 1's layout.
    #[serde(with = "bytes_field")]
    pub auth_nonce: Vec<u8>,
    /// The gateway's proof of the secret over both nonces ([`super::auth`]); empty without one.
    #[serde(with = "bytes_field")]
    pub auth_proof: Vec<u8>,
}

/// [`Welcome`] as version 1 laid it out.
#[derive(Deserialize)]
struct WelcomeV1 {
    /// See [`Welcome::protocol_version`].
    protocol_version: u16,
}

/// Engine → gateway, right after a Welcome that proved the link secret: the engine's proof in
/// turn, so the gateway takes answers only from an engine that holds the secret too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthProof {
    /// The engine's proof over both nonces.
    #[serde(with = "bytes_field")]
    pub proof: Vec<u8>,
}

/// Ends the link on purpose, with a reason the other side logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    /// Why, in words an operator can act on.
    pub reason: String,
}

/// Sent by either side after a heartbeat interval of silence, so a dead peer is detected by
/// silence rather than by a TCP timeout measured in minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The engine: the last input it applied. The gateway: the last input it sent. Lets each
    /// side see how far the other is behind without waiting for traffic.
    pub last_input_seq: u64,
}

/// Everything one input produced, in order. The engine sends exactly one answer per input,
/// even when the list is empty, so the gateway knows each input has been applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    /// The input these outputs answer.
    pub input_seq: u64,
    /// The outputs, `outputs[i]` keyed `(input_seq, i)`; the decoder refuses any other keys.
    pub outputs: Vec<Output>,
}

/// The input was applied before and its outputs are no longer retained (they fell out of the
/// replay window, or the engine was restored since): the gateway must take them from another
/// engine or from a replay of the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlreadyApplied {
    /// The input that was resent.
    pub input_seq: u64,
    /// The engine's last applied input, so the gateway can skip ahead.
    pub last_input_seq: u64,
}

/// The engine's complete state, for a standby to restore.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seq of the last input the state includes; the restored engine continues at the next.
    pub at_input_seq: u64,
    /// Format version the bytes are written in, so the gateway can pick a standby that reads it.
    pub format_version: u16,
    /// Digest of the state, so the restored engine's [`Restored`] answer can be checked.
    pub digest: Digest,
    /// The snapshot as [`crate::engine::Engine::snapshot`] wrote it.
    #[serde(with = "bytes_field")]
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Snapshot {
    /// Leaves the bytes out: they can be gigabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("at_input_seq", &self.at_input_seq)
            .field("format_version", &self.format_version)
            .field("digest", &self.digest)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Replaces the engine's whole state; inputs then continue from the snapshot's seq + 1.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// A snapshot as some engine wrote it.
    #[serde(with = "bytes_field")]
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Restore {
    /// Leaves the bytes out: they can be gigabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restore")
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Borrowing form of [`Restore`], so the gateway sends a snapshot without copying it; encodes
/// to the same bytes.
#[derive(Serialize)]
struct RestoreRef<'a> {
    /// See [`Restore::bytes`].
    #[serde(with = "bytes_field")]
    bytes: &'a [u8],
}

/// Borrowing form of [`Outputs`], so the engine encodes its output buffer in place; encodes to
/// the same bytes.
#[derive(Serialize)]
struct OutputsRef<'a> {
    /// See [`Outputs::input_seq`].
    input_seq: u64,
    /// See [`Outputs::outputs`].
    outputs: &'a [Output],
}

/// The answer to a successful [`Restore`]: where the engine now stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The restored state's last input seq.
    pub at_input_seq: u64,
    /// The restored state's digest; equal to the snapshot's when the restore is faithful.
    pub digest: Digest,
}

/// Which request an engine refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusedRequest {
    /// A SnapshotRequest (the snapshot would exceed the message limit).
    Snapshot,
    /// A Restore (the snapshot is corrupt, of an unknown format, or does not fit the engine's
    /// configuration); the engine's state is unchanged.
    Restore,
}

/// A request the engine could not carry out. The link stays up: the engine's state is intact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// What was refused.
    pub request: RefusedRequest,
    /// Why, for the operator.
    pub reason: String,
}

/// The engine's state digest at a point in the input sequence, for shadow comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestReport {
    /// Seq of the last input the digest includes.
    pub at_input_seq: u64,
    /// SHA-256 of the canonical state.
    pub digest: Digest,
}

/// One message on the link. See the module docs for who sends which and what answers it.
// An Input carries its request's parties inline and outweighs every other frame; boxing it would
// allocate once per input on the engine's hot path, which a frame's size on the stack does not.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Engine → gateway, first frame.
    Hello(Hello),
    /// Gateway → engine, the answer to Hello.
    Welcome(Welcome),
    /// Either way, last frame.
    Close(Close),
    /// Either way, after silence.
    Heartbeat(Heartbeat),
    /// Gateway → engine: one sequenced input.
    Input(Input),
    /// Engine → gateway: the outputs of an input it just applied.
    Outputs(Outputs),
    /// Engine → gateway: the outputs of an input it had applied before, byte for byte as first
    /// sent, answering a resent input. The gateway delivers each `(input_seq, index)` once, so
    /// receiving both is harmless.
    Replayed(Outputs),
    /// Engine → gateway: a resent input whose outputs are gone.
    AlreadyApplied(AlreadyApplied),
    /// Gateway → engine: asks for a [`Snapshot`].
    SnapshotRequest,
    /// Engine → gateway.
    Snapshot(Snapshot),
    /// Gateway → engine.
    Restore(Restore),
    /// Engine → gateway.
    Restored(Restored),
    /// Engine → gateway.
    Refused(Refused),
    /// Gateway → engine: asks for a [`DigestReport`].
    DigestRequest,
    /// Engine → gateway.
    Digest(DigestReport),
    /// Engine → gateway, after an authenticated Welcome.
    AuthProof(AuthProof),
}

impl Frame {
    /// The kind byte this frame is sent with.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::Welcome(_) => FrameKind::Welcome,
            Frame::Close(_) => FrameKind::Close,
            Frame::Heartbeat(_) => FrameKind::Heartbeat,
            Frame::Input(_) => FrameKind::Input,
            Frame::Outputs(_) => FrameKind::Outputs,
            Frame::Replayed(_) => FrameKind::Replayed,
            Frame::AlreadyApplied(_) => FrameKind::AlreadyApplied,
            Frame::SnapshotRequest => FrameKind::SnapshotRequest,
            Frame::Snapshot(_) => FrameKind::Snapshot,
            Frame::Restore(_) => FrameKind::Restore,
            Frame::Restored(_) => FrameKind::Restored,
            Frame::Refused(_) => FrameKind::Refused,
            Frame::DigestRequest => FrameKind::DigestRequest,
            Frame::Digest(_) => FrameKind::Digest,
            Frame::AuthProof(_) => FrameKind::AuthProof,
        }
    }
}

/// Serde glue that writes a byte vector as one length-prefixed blob instead of a sequence of
/// single-byte elements: snapshots are large, and bincode then copies them in one go.
mod bytes_field {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes the bytes as a serde byte string.
    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(
        bytes: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes.as_ref())
    }

    /// Reads a serde byte string. bincode hands it over borrowed from the payload, so the length
    /// it declares is checked against the bytes actually present before anything is allocated.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends `frame` to `out`, chunked if its payload exceeds one frame. On error `out` is left as
/// it was.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), LinkError> {
    encode_at(LINK_PROTOCOL_VERSION, frame, out)
}

/// [`encode`] at protocol `version`, one of [`LINK_PROTOCOL_VERSIONS_GATEWAY`], for a gateway
/// talking to an engine of that version. Outputs are never sent at an older version: only an
/// engine sends them, and an engine of this build speaks only its own.
pub fn encode_at(version: u16, frame: &Frame, out: &mut Vec<u8>) -> Result<(), LinkError> {
    let kind = frame.kind();
    match frame {
        Frame::Hello(hello) => encode_payload_at(version, kind, hello, out),
        Frame::Welcome(welcome) => encode_payload_at(version, kind, welcome, out),
        Frame::Close(close) => encode_payload_at(version, kind, close, out),
        Frame::Heartbeat(heartbeat) => encode_payload_at(version, kind, heartbeat, out),
        Frame::Input(input) => encode_input_at(version, input, out),
        Frame::Outputs(outputs) | Frame::Replayed(outputs) => {
            if version != LINK_PROTOCOL_VERSION {
                return Err(LinkError::UnsupportedVersion {
                    version,
                    kind: kind as u8,
                });
            }
            encode_payload_at(version, kind, outputs, out)
        }
        Frame::AlreadyApplied(already) => encode_payload_at(version, kind, already, out),
        Frame::SnapshotRequest | Frame::DigestRequest => write_message_at(version, kind, &[], out),
        Frame::Snapshot(snapshot) => encode_payload_at(version, kind, snapshot, out),
        Frame::Restore(restore) => encode_payload_at(version, kind, restore, out),
        Frame::Restored(restored) => encode_payload_at(version, kind, restored, out),
        Frame::Refused(refused) => encode_payload_at(version, kind, refused, out),
        Frame::Digest(report) => encode_payload_at(version, kind, report, out),
        Frame::AuthProof(proof) => encode_payload_at(version, kind, proof, out),
    }
}

/// Appends an Input frame without building a [`Frame`], so the gateway sends journal entries
/// without cloning them.
pub fn encode_input(input: &Input, out: &mut Vec<u8>) -> Result<(), LinkError> {
    encode_input_at(LINK_PROTOCOL_VERSION, input, out)
}

/// [`encode_input`] at protocol `version`: at the version before parties, the input without
/// them (that engine's build cannot keep them).
pub fn encode_input_at(version: u16, input: &Input, out: &mut Vec<u8>) -> Result<(), LinkError> {
    if version == LINK_PROTOCOL_VERSION_BEFORE_PARTIES {
        encode_payload_at(version, FrameKind::Input, &v1::InputRef::new(input), out)
    } else {
        encode_payload_at(version, FrameKind::Input, input, out)
    }
}

/// Appends a Restore frame from borrowed snapshot bytes, which can be large.
pub fn encode_restore(snapshot: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
    encode_restore_at(LINK_PROTOCOL_VERSION, snapshot, out)
}

/// [`encode_restore`] at protocol `version` (the layout is the same at every version).
pub fn encode_restore_at(
    version: u16,
    snapshot: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), LinkError> {
    encode_payload_at(
        version,
        FrameKind::Restore,
        &RestoreRef { bytes: snapshot },
        out,
    )
}

/// Appends the payload of an Outputs frame (no header) for outputs in a borrowed buffer. The
/// engine keeps these bytes to answer a resent input with exactly what it sent the first time.
pub fn encode_outputs_payload(
    input_seq: u64,
    outputs: &[Output],
    out: &mut Vec<u8>,
) -> Result<(), LinkError> {
    let start = out.len();
    if let Err(error) =
        bincode::serde::encode_into_std_write(OutputsRef { input_seq, outputs }, out, CONFIG)
    {
        out.truncate(start);
        return Err(error.into());
    }
    Ok(())
}

/// Encodes `value` as the payload of a `kind` frame at protocol `version` appended to `out`; in
/// place when it fits one frame (the common case: no copy), otherwise moved into chunks.
fn encode_payload_at<T: Serialize>(
    version: u16,
    kind: FrameKind,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), LinkError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    if let Err(error) = bincode::serde::encode_into_std_write(value, out, CONFIG) {
        out.truncate(start);
        return Err(error.into());
    }
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    if payload_len <= FRAME_PAYLOAD_BYTES_MAX {
        write_header(
            version,
            kind,
            payload_len,
            &mut out[start..start + FRAME_HEADER_BYTES],
        );
        return Ok(());
    }
    let payload = out.split_off(start + FRAME_HEADER_BYTES);
    out.truncate(start);
    write_message_at(version, kind, &payload, out)
}

/// Appends a message of `kind` with an already encoded payload: one frame, or a chunked message.
pub fn write_message(kind: FrameKind, payload: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
    write_message_at(LINK_PROTOCOL_VERSION, kind, payload, out)
}

/// [`write_message`] with the frame headers at protocol `version`.
fn write_message_at(
    version: u16,
    kind: FrameKind,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), LinkError> {
    debug_assert!(!kind.is_wire_only());
    if payload.len() <= FRAME_PAYLOAD_BYTES_MAX {
        write_frame(version, kind, payload, out);
        return Ok(());
    }
    if payload.len() > LINK_MESSAGE_BYTES_MAX {
        return Err(LinkError::MessageTooLong {
            len: payload.len() as u64,
            max: LINK_MESSAGE_BYTES_MAX,
        });
    }
    let mut begin = [0u8; CHUNKED_BEGIN_PAYLOAD_BYTES];
    begin[0] = kind as u8;
    begin[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out.reserve(payload.len() + FRAME_HEADER_BYTES * (2 + payload.len() / FRAME_PAYLOAD_BYTES_MAX));
    write_frame(version, FrameKind::ChunkedBegin, &begin, out);
    for chunk in payload.chunks(FRAME_PAYLOAD_BYTES_MAX) {
        write_frame(version, FrameKind::Chunk, chunk, out);
    }
    Ok(())
}

/// Appends one frame; the caller has checked that the payload fits.
fn write_frame(version: u16, kind: FrameKind, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    write_header(version, kind, payload.len(), &mut out[start..]);
    out.extend_from_slice(payload);
}

/// Fills a frame header at protocol `version` for a payload of `payload_len` bytes.
fn write_header(version: u16, kind: FrameKind, payload_len: usize, header: &mut [u8]) {
    assert!(
        payload_len <= FRAME_PAYLOAD_BYTES_MAX,
        "frame payload over the limit"
    );
    // Fits a u32: FRAME_PAYLOAD_BYTES_MAX < LINK_FRAME_BYTES_MAX <= u32::MAX (constants.rs).
    let rest = (payload_len + FRAME_HEADER_BYTES - LENGTH_PREFIX_BYTES) as u32;
    header[..4].copy_from_slice(&rest.to_le_bytes());
    header[4..6].copy_from_slice(&version.to_le_bytes());
    header[6] = kind as u8;
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Turns a byte stream into frames. It owns a fixed buffer of one maximal frame, so a peer can
/// never make a link hold more than that outside a chunked message, and a chunked message no
/// more than its declared length (itself bounded by [`LINK_MESSAGE_BYTES_MAX`]).
///
/// Use: read into [`FrameDecoder::read_space`], report the count with [`FrameDecoder::advance`]
/// (or copy with [`FrameDecoder::push`]), then call [`FrameDecoder::next_frame`] until it
/// returns `None`. After an error the stream is out of step: close the link.
pub struct FrameDecoder {
    /// Received bytes; `buf[start..end]` is not yet decoded. Its length is
    /// [`LINK_FRAME_BYTES_MAX`], and decoded bytes are discarded before each read, so an
    /// incomplete frame always has room to complete.
    buf: Box<[u8]>,
    /// First byte not yet decoded.
    start: usize,
    /// One past the last received byte.
    end: usize,
    /// The chunked message being reassembled, between its ChunkedBegin and its last Chunk.
    chunked: Option<Chunked>,
    /// The protocol version the peer speaks; frames of another version are refused (handshake
    /// kinds aside). [`LINK_PROTOCOL_VERSION`] unless a gateway chose another at the handshake.
    version: u16,
    /// Where Outputs frames are decoded into, when the gateway shares one with its core.
    outputs_pool: Option<OutputsPool>,
}

/// A chunked message in reassembly.
struct Chunked {
    /// The message's kind (never a wire-only kind).
    kind: FrameKind,
    /// Its total payload length, as declared; at most [`LINK_MESSAGE_BYTES_MAX`].
    len: usize,
    /// The payload so far; never longer than `len`.
    payload: Vec<u8>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buffered())
            .field(
                "chunked",
                &self
                    .chunked
                    .as_ref()
                    .map(|c| (c.kind, c.payload.len(), c.len)),
            )
            .finish()
    }
}

/// Vectors of outputs handed back by the gateway core once it no longer needs an input's
/// outputs, for the link decoders to decode the next answers into: the decoders run on the link
/// reader tasks and the core on the driver's, so the pool is shared and locked (one short,
/// uncontended lock per frame). Only capacity is reused, never content: what a decoder returns
/// is exactly what the frame holds, whoever used the vector before.
#[derive(Clone, Debug, Default)]
pub struct OutputsPool(std::sync::Arc<std::sync::Mutex<Vec<Vec<Output>>>>);

impl OutputsPool {
    /// An empty pool.
    pub fn new() -> OutputsPool {
        OutputsPool::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Output>>> {
        // A panic elsewhere while holding the lock leaves only spare vectors behind.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An empty vector, kept from before when there is one.
    pub fn take(&self) -> Vec<Output> {
        self.lock().pop().unwrap_or_default()
    }

    /// Keeps `outputs` (emptied) for a later [`OutputsPool::take`]; frees it when the pool holds
    /// [`crate::constants::LINK_OUTPUTS_SPARE_MAX`] already or it is larger than
    /// [`crate::constants::LINK_OUTPUTS_SPARE_CAPACITY_MAX`].
    pub fn give(&self, mut outputs: Vec<Output>) {
        if outputs.capacity() == 0
            || outputs.capacity() > crate::constants::LINK_OUTPUTS_SPARE_CAPACITY_MAX
        {
            return;
        }
        outputs.clear();
        let mut spare = self.lock();
        if spare.len() < crate::constants::LINK_OUTPUTS_SPARE_MAX {
            spare.push(outputs);
        }
    }
}

impl FrameDecoder {
    /// A decoder with an empty buffer of one maximal frame.
    pub fn new() -> FrameDecoder {
        FrameDecoder {
            buf: vec![0; LINK_FRAME_BYTES_MAX].into_boxed_slice(),
            start: 0,
            end: 0,
            chunked: None,
            version: LINK_PROTOCOL_VERSION,
            outputs_pool: None,
        }
    }

    /// Decodes Outputs and Replayed frames into vectors taken from `pool` (the gateway core
    /// gives them back when done), instead of new ones.
    pub fn use_outputs_pool(&mut self, pool: OutputsPool) {
        self.outputs_pool = Some(pool);
    }

    /// Decodes the frames of protocol `version` from now on: a gateway calls this when the
    /// engine's Hello names a version of [`LINK_PROTOCOL_VERSIONS_GATEWAY`] other than its own.
    pub fn speak(&mut self, version: u16) {
        self.version = version;
    }

    /// Bytes received but not yet returned as frames, chunk reassembly included; what the
    /// limits bound.
    pub fn buffered(&self) -> usize {
        self.end - self.start + self.chunked.as_ref().map_or(0, |c| c.payload.len())
    }

    /// Free space to read into. Never empty once [`FrameDecoder::next_frame`] has returned
    /// `Ok(None)`: an incomplete frame is always shorter than the buffer.
    pub fn read_space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`FrameDecoder::read_space`].
    pub fn advance(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "advance past the read space"
        );
        self.end += n;
    }

    /// Copies as many of `bytes` as fit and returns how many; decode frames before pushing the
    /// rest.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let space = self.read_space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.advance(n);
        n
    }

    /// The next complete frame, `None` if more bytes are needed. A declared length over the
    /// limit is an error as soon as the length prefix is in.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            let available = &self.buf[self.start..self.end];
            let Some(prefix) = available.first_chunk::<LENGTH_PREFIX_BYTES>() else {
                return Ok(None);
            };
            let rest = u32::from_le_bytes(*prefix);
            let frame_len = LENGTH_PREFIX_BYTES as u64 + u64::from(rest);
            if frame_len > LINK_FRAME_BYTES_MAX as u64 {
                return Err(LinkError::FrameTooLong {
                    len: frame_len,
                    max: LINK_FRAME_BYTES_MAX,
                });
            }
            if (rest as usize) < FRAME_HEADER_BYTES - LENGTH_PREFIX_BYTES {
                return Err(LinkError::FrameTooShort { len: rest });
            }
            // At most LINK_FRAME_BYTES_MAX, checked above.
            let frame_len = frame_len as usize;
            if available.len() < frame_len {
                return Ok(None);
            }
            let version = u16::from_le_bytes([available[4], available[5]]);
            let kind_byte = available[6];
            let payload_range = self.start + FRAME_HEADER_BYTES..self.start + frame_len;
            self.start += frame_len;
            let kind = check_kind(self.version, version, kind_byte)?;
            let payload = &self.buf[payload_range];
            let pool = self.outputs_pool.as_ref();
            if let Some(frame) = accept(&mut self.chunked, self.version, kind, payload, pool)? {
                return Ok(Some(frame));
            }
        }
    }
}

/// The kind of a frame header, if a decoder expecting `expected` may decode it at `version`.
fn check_kind(expected: u16, version: u16, kind_byte: u8) -> Result<FrameKind, LinkError> {
    let kind = FrameKind::from_byte(kind_byte);
    if version != expected && !kind.is_some_and(FrameKind::is_frozen) {
        // At another version the kind numbers may mean something else: refuse on the version.
        return Err(LinkError::UnsupportedVersion {
            version,
            kind: kind_byte,
        });
    }
    kind.ok_or(LinkError::UnknownKind { kind: kind_byte })
}

/// Takes one decoded frame header and payload, reassembling chunked messages; `None` while a
/// chunked message is incomplete.
fn accept(
    chunked: &mut Option<Chunked>,
    version: u16,
    kind: FrameKind,
    payload: &[u8],
    pool: Option<&OutputsPool>,
) -> Result<Option<Frame>, LinkError> {
    match kind {
        FrameKind::ChunkedBegin => {
            if chunked.is_some() {
                return Err(LinkError::Chunking(
                    "a chunked message began inside another",
                ));
            }
            let Some(begin) = payload.first_chunk::<CHUNKED_BEGIN_PAYLOAD_BYTES>() else {
                return Err(LinkError::Chunking("ChunkedBegin payload is too short"));
            };
            if payload.len() != CHUNKED_BEGIN_PAYLOAD_BYTES {
                return Err(LinkError::TrailingBytes {
                    kind: kind.name(),
                    extra: payload.len() - CHUNKED_BEGIN_PAYLOAD_BYTES,
                });
            }
            let inner =
                FrameKind::from_byte(begin[0]).ok_or(LinkError::UnknownKind { kind: begin[0] })?;
            if inner.is_wire_only() {
                return Err(LinkError::Chunking("a chunked message of chunks"));
            }
            let mut len_bytes = [0u8; 8];
            len_bytes.copy_from_slice(&begin[1..]);
            let len = u64::from_le_bytes(len_bytes);
            if len > LINK_MESSAGE_BYTES_MAX as u64 {
                return Err(LinkError::MessageTooLong {
                    len,
                    max: LINK_MESSAGE_BYTES_MAX,
                });
            }
            if len <= FRAME_PAYLOAD_BYTES_MAX as u64 {
                return Err(LinkError::Chunking("a chunked message that fits one frame"));
            }
            *chunked = Some(Chunked {
                kind: inner,
                // At most LINK_MESSAGE_BYTES_MAX, checked above.
                len: len as usize,
                payload: Vec::new(),
            });
            Ok(None)
        }
        FrameKind::Chunk => {
            let Some(message) = chunked.as_mut() else {
                return Err(LinkError::Chunking("a chunk without ChunkedBegin"));
            };
            if payload.is_empty() {
                return Err(LinkError::Chunking("an empty chunk"));
            }
            if payload.len() > message.len - message.payload.len() {
                return Err(LinkError::Chunking("chunks overrun the declared length"));
            }
            message.payload.extend_from_slice(payload);
            match chunked.take_if(|message| message.payload.len() == message.len) {
                Some(message) => {
                    decode_payload(version, message.kind, &message.payload, pool).map(Some)
                }
                None => Ok(None),
            }
        }
        _ => {
            if chunked.is_some() {
                return Err(LinkError::Chunking("a frame interrupted a chunked message"));
            }
            decode_payload(version, kind, payload, pool).map(Some)
        }
    }
}

/// Decodes a complete payload of `kind` (never a wire-only kind) at protocol `version`.
fn decode_payload(
    version: u16,
    kind: FrameKind,
    payload: &[u8],
    pool: Option<&OutputsPool>,
) -> Result<Frame, LinkError> {
    if version == LINK_PROTOCOL_VERSION_BEFORE_PARTIES {
        match kind {
            FrameKind::Outputs => return decode_outputs_v1(kind, payload).map(Frame::Outputs),
            FrameKind::Replayed => return decode_outputs_v1(kind, payload).map(Frame::Replayed),
            // A gateway never receives inputs; refuse rather than misread one.
            FrameKind::Input => {
                return Err(LinkError::UnsupportedVersion {
                    version,
                    kind: kind as u8,
                });
            }
            _ => {}
        }
    }
    Ok(match kind {
        FrameKind::Hello => Frame::Hello(decode_hello(payload)?),
        FrameKind::Welcome => Frame::Welcome(decode_welcome(payload)?),
        FrameKind::Close => Frame::Close(decode_frozen(kind, payload)?),
        FrameKind::Heartbeat => Frame::Heartbeat(decode_exact(kind, payload)?),
        FrameKind::Input => Frame::Input(decode_exact(kind, payload)?),
        FrameKind::Outputs => Frame::Outputs(decode_outputs(kind, payload, pool)?),
        FrameKind::Replayed => Frame::Replayed(decode_outputs(kind, payload, pool)?),
        FrameKind::AlreadyApplied => Frame::AlreadyApplied(decode_exact(kind, payload)?),
        FrameKind::SnapshotRequest => {
            decode_empty(kind, payload)?;
            Frame::SnapshotRequest
        }
        FrameKind::Snapshot => Frame::Snapshot(decode_exact(kind, payload)?),
        FrameKind::Restore => Frame::Restore(decode_exact(kind, payload)?),
        FrameKind::Restored => Frame::Restored(decode_exact(kind, payload)?),
        FrameKind::Refused => Frame::Refused(decode_exact(kind, payload)?),
        FrameKind::DigestRequest => {
            decode_empty(kind, payload)?;
            Frame::DigestRequest
        }
        FrameKind::Digest => Frame::Digest(decode_exact(kind, payload)?),
        FrameKind::AuthProof => Frame::AuthProof(decode_exact(kind, payload)?),
        FrameKind::ChunkedBegin | FrameKind::Chunk => {
            // `accept` never passes these; refuse rather than trust that from here.
            return Err(LinkError::Chunking("a chunking frame as a message"));
        }
    })
}

/// Decodes a payload that must be exactly one `T`.
fn decode_exact<T: serde::de::DeserializeOwned>(
    kind: FrameKind,
    payload: &[u8],
) -> Result<T, LinkError> {
    let (value, read) = decode_prefix(kind, payload)?;
    if read != payload.len() {
        return Err(LinkError::TrailingBytes {
            kind: kind.name(),
            extra: payload.len() - read,
        });
    }
    Ok(value)
}

/// Decodes a handshake payload, ignoring fields a later protocol version appended.
fn decode_frozen<T: serde::de::DeserializeOwned>(
    kind: FrameKind,
    payload: &[u8],
) -> Result<T, LinkError> {
    decode_prefix(kind, payload).map(|(value, _)| value)
}

/// Decodes a Hello of any version: version 1's fields, then each appended field if the payload
/// goes on that far (an older engine's Hello ends before it), ignoring any fields appended
/// later still. So an engine that predates a field still gets a typed answer at the handshake
/// (a Welcome, or a Close naming the version) rather than a decode error.
fn decode_hello(payload: &[u8]) -> Result<Hello, LinkError> {
    let kind = FrameKind::Hello;
    let (v1, read): (HelloV1, usize) = decode_prefix(kind, payload)?;
    let rest = &payload[read..];
    let (executable_sha256, read) = match rest.is_empty() {
        true => (String::new(), 0),
        false => decode_prefix(kind, rest)?,
    };
    let rest = &rest[read..];
    let auth_nonce = match rest.is_empty() {
        true => Vec::new(),
        false => decode_prefix::<BytesField>(kind, rest)?.0.0,
    };
    Ok(Hello {
        protocol_version: v1.protocol_version,
        engine_name: v1.engine_name,
        build_version: v1.build_version,
        last_input_seq: v1.last_input_seq,
        snapshot_formats: v1.snapshot_formats,
        executable_sha256,
        auth_nonce,
    })
}

/// One appended byte-string field, decoded alone.
#[derive(Deserialize)]
struct BytesField(#[serde(with = "bytes_field")] Vec<u8>);

/// Decodes a Welcome of any version, as [`decode_hello`] does a Hello: a version 1 Welcome has
/// no authentication fields.
fn decode_welcome(payload: &[u8]) -> Result<Welcome, LinkError> {
    let kind = FrameKind::Welcome;
    let (v1, read): (WelcomeV1, usize) = decode_prefix(kind, payload)?;
    let rest = &payload[read..];
    let (auth_nonce, auth_proof) = match rest.is_empty() {
        true => (Vec::new(), Vec::new()),
        false => {
            let (nonce, read): (BytesField, usize) = decode_prefix(kind, rest)?;
            let (proof, _): (BytesField, usize) = decode_prefix(kind, &rest[read..])?;
            (nonce.0, proof.0)
        }
    };
    Ok(Welcome {
        protocol_version: v1.protocol_version,
        auth_nonce,
        auth_proof,
    })
}

/// Decodes one `T` from the start of the payload and says how many bytes it took.
fn decode_prefix<T: serde::de::DeserializeOwned>(
    kind: FrameKind,
    payload: &[u8],
) -> Result<(T, usize), LinkError> {
    bincode::serde::decode_from_slice(payload, CONFIG).map_err(|source| LinkError::Malformed {
        kind: kind.name(),
        source,
    })
}

/// Checks that a request frame carries no payload.
fn decode_empty(kind: FrameKind, payload: &[u8]) -> Result<(), LinkError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(LinkError::TrailingBytes {
            kind: kind.name(),
            extra: payload.len(),
        })
    }
}

/// Decodes an Outputs payload and checks its keys: the gateway's outbox relies on
/// `(input_seq, index)` naming each output exactly once.
fn decode_outputs(
    kind: FrameKind,
    payload: &[u8],
    pool: Option<&OutputsPool>,
) -> Result<Outputs, LinkError> {
    let Some(pool) = pool else {
        return check_output_keys(kind, decode_exact(kind, payload)?);
    };
    // The same bytes `Outputs` decodes from (its seq, the vector's length, each output), read
    // one output at a time into a vector from the pool.
    let (input_seq, read): (u64, usize) = decode_prefix(kind, payload)?;
    let mut rest = &payload[read..];
    let (len, read): (u64, usize) = decode_prefix(kind, rest)?;
    rest = &rest[read..];
    // Every output takes at least a byte: a length beyond the bytes left is a lie, refused
    // before anything is reserved for it.
    if len > rest.len() as u64 {
        return Err(LinkError::Inconsistent {
            kind: kind.name(),
            what: "more outputs announced than the frame holds",
        });
    }
    let mut outputs = pool.take();
    for _ in 0..len {
        let (output, read): (Output, usize) = match decode_prefix(kind, rest) {
            Ok(decoded) => decoded,
            Err(error) => {
                pool.give(outputs);
                return Err(error);
            }
        };
        outputs.push(output);
        rest = &rest[read..];
    }
    if !rest.is_empty() {
        pool.give(outputs);
        return Err(LinkError::TrailingBytes {
            kind: kind.name(),
            extra: rest.len(),
        });
    }
    check_output_keys(kind, Outputs { input_seq, outputs })
}

/// [`decode_outputs`] for an engine of the version before parties: its reports carry none.
fn decode_outputs_v1(kind: FrameKind, payload: &[u8]) -> Result<Outputs, LinkError> {
    let outputs: v1::Outputs = decode_exact(kind, payload)?;
    check_output_keys(kind, outputs.into())
}

/// Refuses outputs whose keys are not `(input_seq, 0)`, `(input_seq, 1)`, ...
fn check_output_keys(kind: FrameKind, outputs: Outputs) -> Result<Outputs, LinkError> {
    for (index, output) in outputs.outputs.iter().enumerate() {
        if output.input_seq != outputs.input_seq {
            return Err(LinkError::Inconsistent {
                kind: kind.name(),
                what: "an output answers another input",
            });
        }
        if u32::try_from(index) != Ok(output.index) {
            return Err(LinkError::Inconsistent {
                kind: kind.name(),
                what: "output indices are not 0, 1, 2, ...",
            });
        }
    }
    Ok(outputs)
}

mod v1;

#[cfg(test)]
mod tests;
