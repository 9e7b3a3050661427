//! Every limit in one place, each with the reason for its number.

// ----- FIX session layer ------------------------------------------------------------------------

/// Largest BodyLength accepted from a counterparty. The venue's largest message (an
/// ExecutionReport with Text) is under 1 KiB; 64 KiB leaves room for verbose peers while
/// bounding what one connection can make the gateway buffer.
pub const BODY_LENGTH_MAX: usize = 64 * 1024;

/// Initial capacity of a session's receive and transmit buffers: a few typical messages, so the
/// steady state never grows them.
pub const RECV_BUFFER_INITIAL: usize = 8 * 1024;

/// Messages a session holds behind an inbound sequence gap. A counterparty that runs further
/// ahead than this is not recovering; it is logged out rather than allowed to grow memory.
pub const INBOUND_QUEUE_MAX: usize = 10_000;

/// Smallest HeartBtInt (seconds) accepted by default: one second is the finest interval FIX
/// expresses, and anything finer is a misconfiguration.
pub const HEART_BT_INT_MIN_S: u64 = 1;

/// Largest HeartBtInt (seconds) accepted by default: beyond five minutes a dead peer holds
/// resources too long.
pub const HEART_BT_INT_MAX_S: u64 = 300;

/// Default SendingTime tolerance (QuickFIX's MaxLatency default of 120 s).
pub const MAX_LATENCY_DEFAULT_MS: u64 = 120_000;

/// How long a new connection may take to send Logon before it is dropped (QuickFIX's
/// LogonTimeout default).
pub const LOGON_TIMEOUT_DEFAULT_MS: u64 = 10_000;

/// How long the gateway waits for the answer to its Logout (QuickFIX's LogoutTimeout default).
pub const LOGOUT_TIMEOUT_DEFAULT_MS: u64 = 2_000;

/// Silence beyond HeartBtInt tolerated before a TestRequest, in percent: the "reasonable
/// transmission time" the FIX specification leaves to the venue. 20% is the common choice.
pub const HEARTBEAT_MARGIN_PCT: u64 = 20;

const _: () = assert!(RECV_BUFFER_INITIAL <= BODY_LENGTH_MAX);
const _: () = assert!(HEART_BT_INT_MIN_S >= 1 && HEART_BT_INT_MIN_S <= HEART_BT_INT_MAX_S);
