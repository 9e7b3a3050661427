//! Why a link failed. Every way a peer's bytes can be wrong has its own variant, so the side that
//! closes the link can log (and send in its Close frame) a reason an operator can act on.

use std::time::Duration;

use super::protocol::LINK_PROTOCOL_VERSION;
use super::transport::LinkAddrError;

/// A link error. Variants up to `Inconsistent` come from the codec and mean the byte stream can
/// no longer be trusted: the link must be closed. The others describe the conversation.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed (reset, broken pipe, refused, timed out writing).
    #[error("link I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// A frame declared a length above the limit; refused before its body was buffered.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLong {
        /// The whole frame's length as declared (prefix included).
        len: u64,
        /// The limit, [`crate::constants::LINK_FRAME_BYTES_MAX`].
        max: usize,
    },
    /// A frame's length prefix leaves no room for the version and kind.
    #[error("frame length {len} is shorter than its version and kind")]
    FrameTooShort {
        /// The declared length of the rest of the frame.
        len: u32,
    },
    /// A frame of a kind whose layout depends on the version, from a peer of another version.
    #[error(
        "frame kind {kind} has protocol version {version}; this build speaks {LINK_PROTOCOL_VERSION}"
    )]
    UnsupportedVersion {
        /// The version in the frame header.
        version: u16,
        /// The kind byte, for the log.
        kind: u8,
    },
    /// A kind byte this build does not know.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// The payload is not a valid encoding of its kind.
    #[error("{kind} frame does not decode: {source}")]
    Malformed {
        /// The frame kind's name.
        kind: &'static str,
        /// What bincode found wrong.
        #[source]
        source: bincode::error::DecodeError,
    },
    /// Bytes follow a payload that has no room for them: corruption or a framing bug.
    #[error("{kind} frame has {extra} unexpected bytes after its payload")]
    TrailingBytes {
        /// The frame kind's name.
        kind: &'static str,
        /// How many.
        extra: usize,
    },
    /// The payload decodes but contradicts itself (for example an output keyed to another input).
    #[error("{kind} frame is inconsistent: {what}")]
    Inconsistent {
        /// The frame kind's name.
        kind: &'static str,
        /// Which rule it breaks.
        what: &'static str,
    },
    /// A chunked message declared a length above the limit; refused before any chunk is kept.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLong {
        /// The declared length.
        len: u64,
        /// The limit, [`crate::constants::LINK_MESSAGE_BYTES_MAX`].
        max: usize,
    },
    /// Chunks out of order: without a header, interrupted by another frame, or overrunning.
    #[error("chunked message is malformed: {0}")]
    Chunking(&'static str),
    /// Our own value could not be encoded. Never expected for the link's types; kept typed so a
    /// serializer change cannot turn into a panic on the gateway.
    #[error("frame does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// A well-formed frame that this side never accepts at this point of the conversation.
    #[error("unexpected {got} frame {context}")]
    Unexpected {
        /// The frame kind received.
        got: &'static str,
        /// Where in the conversation, for the log.
        context: &'static str,
    },
    /// The peer's Hello or Welcome names a protocol version this build does not speak.
    #[error("peer speaks link protocol version {peer}; this build speaks {LINK_PROTOCOL_VERSION}")]
    IncompatibleVersion {
        /// The peer's version.
        peer: u16,
    },
    /// An input that skips ahead of the engine: inputs in between were never sent.
    #[error("input seq {got} skips ahead: the engine expects {expected}")]
    InputGap {
        /// The input's seq.
        got: u64,
        /// `last_input_seq + 1`.
        expected: u64,
    },
    /// An input stamped earlier than the previous one; applying it would break determinism.
    #[error("input seq {seq} goes back in time ({time} ns < {last_time} ns)")]
    TimeBackwards {
        /// The input's seq.
        seq: u64,
        /// The input's time in nanoseconds since the epoch.
        time: u64,
        /// The previous input's time.
        last_time: u64,
    },
    /// The peer sent Close; its reason is quoted.
    #[error("peer closed the link: {reason}")]
    Closed {
        /// The peer's reason.
        reason: String,
    },
    /// The connection ended without a Close frame (peer crashed or the network cut it).
    #[error("peer disconnected without closing the link")]
    Disconnected,
    /// Nothing arrived for longer than the peer timeout.
    #[error("no frame from the peer for {0:?}")]
    PeerSilent(Duration),
    /// The peer did not complete the handshake in time.
    #[error("no handshake from the peer within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer does not prove the link secret, or proves a different one.
    #[error("link authentication failed: {0}")]
    Unauthenticated(String),
    /// The link secret file could not be used.
    #[error(transparent)]
    Secret(#[from] super::auth::SecretError),
    /// The link address does not parse or resolve.
    #[error(transparent)]
    Addr(#[from] LinkAddrError),
}
