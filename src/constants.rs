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

// ---------------------------------------------------------------------------------------------
// Session store (`fix::store::MmapStore`)
// ---------------------------------------------------------------------------------------------

/// Size a new session's message log starts at. 1 MiB holds about 4,000 messages of 250 bytes, so
/// a quiet session never remaps; the file is sparse, so a gateway with a thousand sessions
/// reserves address space, not disk.
pub const STORE_MESSAGES_BYTES_INITIAL: u64 = 1 << 20;

/// Default ceiling of a session's message log for one session day, over which an append is
/// refused with `StoreError::Full`. A busy drop-copy session sends about ten million messages of
/// ~250 bytes a day (~2.5 GiB with record headers); 4 GiB leaves headroom for that and still
/// stops a runaway send loop long before it fills the disk.
pub const STORE_MESSAGES_BYTES_MAX: u64 = 4 << 30;

/// Factor the message log grows by when an append does not fit. Doubling keeps the number of
/// remaps per day logarithmic (12 from 1 MiB to 4 GiB) while wasting at most half the file.
pub const STORE_MESSAGES_GROWTH_FACTOR: u64 = 2;

const _: () = assert!(STORE_MESSAGES_BYTES_INITIAL <= STORE_MESSAGES_BYTES_MAX);
const _: () = assert!(STORE_MESSAGES_GROWTH_FACTOR >= 2);
// ----- Gateway ----------------------------------------------------------------------------------

/// Connections accepted at once by default. Each holds two small buffers; the bound keeps a
/// connection flood from exhausting memory or file descriptors before Logon is even checked.
pub const CONNECTIONS_MAX: usize = 1_024;

/// Bytes read from a socket per read call: enough for a burst of typical messages in one
/// syscall.
pub const READ_CHUNK: usize = 16 * 1024;

// ----- Input journal (`gateway::journal`) -------------------------------------------------------

/// Default size of one journal segment. 64 MiB holds about 250,000 inbound messages of ~250
/// bytes, so a roll-over (a file create and a new mapping, the one slow step on the append path)
/// comes once per quarter of a million appends; a segment is still small enough to copy off or
/// delete as one unit once a snapshot covers it. The file is sparse until written.
pub const JOURNAL_SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Smallest segment a config may ask for: one page. A mapping is page-granular, so a smaller file
/// saves nothing, and a page still holds a header and a record of a few kilobytes.
pub const JOURNAL_SEGMENT_BYTES_MIN: u64 = 4 << 10;

/// Largest segment a config may ask for. A segment is mapped whole by the writer and, after a
/// crash, read to its end once to tell a torn tail from damage; past 1 GiB roll-overs are already
/// negligible, so larger segments would only cost address space and recovery time.
pub const JOURNAL_SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// Buffer of a journal reader: 256 KiB is about a thousand records per read syscall on replay,
/// while a reader tailing a live journal re-reads at most this much per poll.
pub const JOURNAL_READ_BUFFER_BYTES: usize = 256 << 10;

const _: () = assert!(JOURNAL_SEGMENT_BYTES_MIN <= JOURNAL_SEGMENT_BYTES_DEFAULT);
const _: () = assert!(JOURNAL_SEGMENT_BYTES_DEFAULT <= JOURNAL_SEGMENT_BYTES_MAX);
// The default segment holds a thousand of the largest messages a counterparty may send, so no
// inbound message is ever refused as too large for a segment.
const _: () = assert!(JOURNAL_SEGMENT_BYTES_DEFAULT >= 1_000 * BODY_LENGTH_MAX as u64);
