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

/// Bytes a session holds behind an inbound sequence gap, counting each queued message's frame
/// and its field index. The count limit alone let 3,000 queued 64 KiB messages take 161 MB for
/// one session; 4 MiB holds a full count of typical orders (10,000 × ~250 B) plus slack, so an
/// honest peer meets the count limit first, while the largest messages stop at about 60. Over
/// it the counterparty is logged out, as over the count.
pub const INBOUND_QUEUE_BYTES_MAX: usize = 4 << 20;

/// Largest sequence number the session accepts, as MsgSeqNum or as a SequenceReset's NewSeqNo.
/// The codec reads at most 19 digits; one digit less leaves 9 × 10^18 numbers to count on after
/// a reset to the maximum (285,000 years at a million messages a second), so a session at the
/// limit can always be followed, and no `+ 1` on a sequence number can overflow. A
/// SequenceReset above it would strand the session (its next MsgSeqNum would not parse) and is
/// refused with a Reject (373=5).
pub const SEQ_NUM_MAX: u64 = 999_999_999_999_999_999;

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

/// Bytes of a resend a session produces per step, i.e. what it has in flight towards one
/// connection while serving a ResendRequest: the driver asks for the next step only once its
/// writes of the previous one drained. 64 KiB is a few hundred typical messages, enough to keep
/// a loopback or LAN link busy between steps, and keeps each step (parse, re-encode) well under
/// a millisecond, so the session's lock is never held long enough to delay the outbox or the
/// engine links. A step may end one stored message past it.
pub const RESEND_STEP_BYTES: usize = 64 * 1024;

/// Stored messages a resend step examines at most, whatever it writes: a range of heartbeats
/// and other session messages is gap-filled without writing anything per message, so the byte
/// bound alone would not bound the step's CPU. 1,024 parses are about as long as a full step.
pub const RESEND_STEP_MESSAGES_MAX: usize = 1_024;

const _: () = assert!(RECV_BUFFER_INITIAL <= BODY_LENGTH_MAX);

/// Business messages a session keeps for reuse once the gateway is done with them (see
/// `Session::recycle`): as many as one read of [`READ_CHUNK`] bytes can hand out at once (no
/// business message with its standard header and trailer is shorter than
/// [`FIX_BUSINESS_MESSAGE_BYTES_MIN`]), so a counterparty that keeps a full read of orders on
/// their way to the sequencer has each copied into a kept message instead of a new one, while a
/// session's kept memory stays bounded (and only reaches this many if it ever had that many in
/// flight).
pub const SESSION_SPARE_MESSAGES_MAX: usize = READ_CHUNK / FIX_BUSINESS_MESSAGE_BYTES_MIN;

/// A lower bound on the length of a FIX business message: BeginString, BodyLength, MsgType,
/// both CompIDs, MsgSeqNum, SendingTime and CheckSum alone take more.
pub const FIX_BUSINESS_MESSAGE_BYTES_MIN: usize = 64;

/// A message handed back for reuse whose buffers outgrew this is freed instead of kept: one
/// large message must not leave a session holding `SESSION_SPARE_MESSAGES_MAX` times its size.
/// Well above an order's few hundred bytes and its index.
pub const SESSION_SPARE_MESSAGE_BYTES_MAX: usize = 4 * 1024;

const _: () = assert!(SESSION_SPARE_MESSAGE_BYTES_MAX <= BODY_LENGTH_MAX);
const _: () = assert!(
    INBOUND_QUEUE_BYTES_MAX >= INBOUND_QUEUE_MAX * 256,
    "a full count of typical messages must fit the byte bound, so honest peers meet the count first"
);
const _: () = assert!(
    INBOUND_QUEUE_BYTES_MAX >= 16 * BODY_LENGTH_MAX,
    "a few of the largest messages must still queue behind a gap"
);
const _: () = assert!(
    SEQ_NUM_MAX < 1_000_000_000_000_000_000,
    "one digit fewer than the 19 the codec reads, so the numbers after the maximum still parse"
);
const _: () = assert!(
    RESEND_STEP_BYTES >= BODY_LENGTH_MAX,
    "a step must have room for the largest stored message"
);
const _: () = assert!(RESEND_STEP_MESSAGES_MAX >= 1);
const _: () = assert!(HEART_BT_INT_MIN_S >= 1 && HEART_BT_INT_MIN_S <= HEART_BT_INT_MAX_S);

/// Bytes of one peer-supplied value written to the log (escaped; see `fix::escape`). A CompID
/// or ClOrdID is far shorter; a peer sending 60 KB in one is shown by its first bytes and its
/// length, so it cannot flood the log.
pub const LOG_PEER_VALUE_BYTES_MAX: usize = 64;

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

/// Free bytes a session's message log keeps allocated ahead of need: when less is left, it grows
/// before it must, and if the disk is full the gateway stops taking new business while this
/// much still fits. That leaves room for the answers owed to inputs already journaled (about
/// 1,700 ExecutionReports of ~300 bytes) and the BusinessMessageRejects of the refusals.
pub const STORE_MESSAGES_HEADROOM_BYTES: u64 = 512 << 10;

const _: () = assert!(
    STORE_MESSAGES_HEADROOM_BYTES < STORE_MESSAGES_BYTES_INITIAL,
    "a new store starts with its headroom and room to use"
);

// ---------------------------------------------------------------------------------------------
// Mapped append logs (`mmap::MappedFile::open_appendable`: session message logs, journal segments)
// ---------------------------------------------------------------------------------------------

/// Address space an append log's mapping reserves for its growth, so growing within it is a
/// `posix_fallocate` and never a remap. Reserving costs no memory and no disk, only address
/// space: 1 GiB for each of the [`CONNECTIONS_MAX`] sessions a gateway holds at once is 1 TiB of
/// the 128 TiB a 64-bit Linux process has. A log that grows past it remaps, as before.
pub const MAPPED_RESERVE_BYTES_MAX: u64 = 1 << 30;

/// Bytes ahead of an append log's write position whose pages a background thread makes present,
/// so the writer never takes the first-touch page fault itself. A window is asked for when the
/// writer is half way through the previous one, i.e. every 256 KiB written (~1,000 records of
/// 250 bytes), so the thread is woken about once per 1,000 appends to a log; 50 sessions'
/// windows are 25 MiB of page cache, which a new store's 1 MiB file holds anyway.
pub const MAPPED_AHEAD_BYTES: usize = 512 << 10;

/// Bytes the prefault thread populates per call: it lets go of a mapping between calls, so a
/// dropped file is released within one call's work (64 pages, tens of microseconds).
pub const MAPPED_PREFAULT_CHUNK_BYTES: usize = 256 << 10;

/// How often the prefault thread makes every window present again. The kernel writes dirty
/// pages back after 30 s (`vm.dirty_expire_centisecs`) and write-protects them, so a window
/// made present long before its writer gets there (a quiet session) would fault again, once per
/// page; redone every second, at most ~1/30 of such pages are caught clean. A pass over pages
/// already present is a page-table walk: tens of microseconds per window. A window whose writer
/// has not moved for 30 passes is left alone, since each pass dirties again what the kernel
/// wrote back (an idle gateway with three sessions wrote ~35 KB/s to disk that way).
pub const MAPPED_REFRESH_MS: u64 = 1_000;

const _: () = assert!(MAPPED_PREFAULT_CHUNK_BYTES <= MAPPED_AHEAD_BYTES);
const _: () = assert!(MAPPED_AHEAD_BYTES as u64 <= STORE_MESSAGES_BYTES_INITIAL);

const _: () = assert!(STORE_MESSAGES_BYTES_INITIAL <= STORE_MESSAGES_BYTES_MAX);
const _: () = assert!(STORE_MESSAGES_GROWTH_FACTOR >= 2);
// ----- Gateway ----------------------------------------------------------------------------------

/// Connections accepted at once by default. Each holds two small buffers; the bound keeps a
/// connection flood from exhausting memory or file descriptors before Logon is even checked.
pub const CONNECTIONS_MAX: usize = 1_024;

/// Connections at once that have not logged on yet, by default. A counterparty sends its Logon
/// within a round trip of connecting, so a healthy venue has a handful; 512 lets that many
/// counterparties reconnect at the same instant (after a network blip, each Logon read a little
/// later on a loaded gateway) while an unknown peer's idle sockets can hold only half of the
/// connection budget. When it is full the oldest such connection is closed to make room, so
/// idle sockets cannot lock a counterparty out.
pub const PRELOGON_CONNECTIONS_MAX: usize = 512;

/// Connections at once not yet logged on from one source address, by default: one address must
/// not take the whole pre-logon budget, yet a broker may run a hundred sessions from one host
/// (or behind one NAT address) and reconnect them all at once. The oldest from that address is
/// closed to make room, so its newest connection, the one about to send a Logon, survives a
/// flood of up to this many connections arriving before its Logon is read.
pub const PRELOGON_CONNECTIONS_PER_ADDRESS_MAX: usize = 128;

const _: () = assert!(PRELOGON_CONNECTIONS_PER_ADDRESS_MAX <= PRELOGON_CONNECTIONS_MAX);
const _: () = assert!(
    PRELOGON_CONNECTIONS_MAX < CONNECTIONS_MAX,
    "pre-logon connections get a smaller budget than all connections"
);

/// Bytes read from a socket per read call: enough for a burst of typical messages in one
/// syscall.
pub const READ_CHUNK: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Engine: order books, matching and snapshots (`crate::engine`).
// ---------------------------------------------------------------------------------------------

/// Longest ClOrdID in bytes. FIX does not bound tag 11; 32 covers UUIDs without dashes and the
/// schemes of the OMSs we have seen, and keeps an order record within two cache lines.
pub const ENGINE_CL_ORD_ID_LEN_MAX: usize = 32;

/// Longest Symbol in bytes: long enough for exchange tickers, FX pairs and option roots, short
/// enough to live inline in every order and report.
pub const ENGINE_SYMBOL_LEN_MAX: usize = 16;

/// Instruments one engine may carry. Each book preallocates two level vectors of `levels_max`
/// entries, so this bounds the engine's fixed memory; partitioning across engines scales past it.
pub const ENGINE_INSTRUMENTS_MAX: usize = 1024;

/// Open orders across all books when the configuration does not say: far above what a demo or
/// a test venue rests, and about 120 MB of order records reserved up front (each record holds
/// its parties inline, [`PARTIES_MAX`] of them, which is most of its ~450 bytes). Reserved is
/// address space: the pages of slots no order has used yet are never touched.
pub const ENGINE_ORDERS_MAX_DEFAULT: u32 = 1 << 18;

/// Upper bound for `orders_max`. Order records are addressed by `u32` slab indices with one value
/// reserved as "none", and level totals (a sum of open quantities) must fit a `u64`.
pub const ENGINE_ORDERS_MAX_LIMIT: u32 = 1 << 24;

/// Price levels per side of one book when the configuration does not say: a deep equity book
/// shows a few hundred levels; beyond that, far-away orders are rejected rather than the vector
/// growing.
pub const ENGINE_LEVELS_MAX_DEFAULT: u32 = 1024;

/// Upper bound for `levels_max`. Levels are a sorted vector whose insert shifts the far side of
/// the book; 64 Ki levels keep that shift within a few microseconds.
pub const ENGINE_LEVELS_MAX_LIMIT: u32 = 1 << 16;

/// ClOrdIDs remembered per engine for the session day when the configuration does not say. Every
/// request consumes one (duplicates are refused for the whole day), so this is the day's request
/// budget across all sessions: a million requests, for about 80 MB reserved up front (ids, their
/// hash table and the day's order list).
pub const ENGINE_CL_ORD_IDS_MAX_DEFAULT: u32 = 1 << 20;

/// Upper bound for `cl_ord_ids_max`: 64 Mi entries keep the day's id tables within about 5 GB.
pub const ENGINE_CL_ORD_IDS_MAX_LIMIT: u32 = 1 << 26;

/// Largest quantity of one order. Far above any real order, and small enough that the quantity
/// times any `i64` price fits an `i128` notional and all open quantity fits a `u64` (checked
/// below), so no arithmetic on quantities can overflow.
pub const ENGINE_ORDER_QTY_MAX: u64 = 1_000_000_000_000;

const _: () = assert!(
    (ENGINE_ORDERS_MAX_LIMIT as u128) * (ENGINE_ORDER_QTY_MAX as u128) <= u64::MAX as u128,
    "the open quantity of a full book must fit a u64 level total"
);
const _: () = assert!(ENGINE_ORDERS_MAX_DEFAULT <= ENGINE_ORDERS_MAX_LIMIT);
const _: () = assert!(ENGINE_LEVELS_MAX_DEFAULT <= ENGINE_LEVELS_MAX_LIMIT);
const _: () = assert!(ENGINE_CL_ORD_IDS_MAX_DEFAULT <= ENGINE_CL_ORD_IDS_MAX_LIMIT);
const _: () = assert!(
    ENGINE_CL_ORD_IDS_MAX_DEFAULT >= ENGINE_ORDERS_MAX_DEFAULT,
    "every order consumes a ClOrdID, so fewer ids than orders would leave order slots unusable"
);
const _: () = assert!(
    ENGINE_CL_ORD_ID_LEN_MAX <= u8::MAX as usize,
    "inline identifiers store their length in a u8"
);
const _: () = assert!(
    ENGINE_SYMBOL_LEN_MAX <= u8::MAX as usize,
    "inline identifiers store their length in a u8"
);

// ----- Supervisor (`baton up`) --------------------------------------------------------------------

/// How often the supervisor checks its children: a crashed engine is noticed within this, which
/// is far below the link heartbeat timeout that also detects it.
pub const SUPERVISOR_POLL_MS: u64 = 100;

/// First restart back-off; doubles per quick failure so a child that cannot start does not spin.
pub const SUPERVISOR_BACKOFF_MS: u64 = 100;

/// Longest restart back-off.
pub const SUPERVISOR_BACKOFF_MAX_MS: u64 = 5_000;

/// How long the socket holder keeps counterparties' connections after the gateway died, when
/// `[gateway] hold_sockets_max_ms` is not set. A restart takes the supervisor's longest back-off
/// plus the gateway's start (stores, journal, engine link: seconds); 30 s covers that with room,
/// and is one common HeartBtInt, so a counterparty left on a venue that does not come back has
/// had at most one unanswered heartbeat before its socket is closed.
pub const HOLD_SOCKETS_MAX_MS_DEFAULT: u64 = 30_000;

/// How long a restarted gateway waits for an engine before it reads the connections it took
/// back from the socket holder: an engine reattaches within a link handshake (well under a
/// second here), and what counterparties sent meanwhile would otherwise be refused as
/// "application not available". Bounded well below a 30 s HeartBtInt, so a venue whose engine
/// does not come back still answers its sessions' heartbeats in time.
pub const RESUME_ENGINE_WAIT_MS: u64 = 10_000;

/// Largest message on the socket hand-over channel. A label is two CompIDs and a number in
/// JSON; the largest message is a planned upgrade's carry of a session, whose unframed input
/// (less than one frame of [`BODY_LENGTH_MAX`] plus its header and trailer) travels as hex:
/// twice that, plus room for the rest. Well under a Unix socket's default send buffer
/// (about 208 KiB), so it is one datagram.
pub const HANDOVER_MESSAGE_BYTES_MAX: usize = 2 * (BODY_LENGTH_MAX + 1024) + 4 * 1024;

/// How long a planned gateway upgrade waits for the new build to start and ask for the
/// sockets: a cold start of a release build on a loaded host, with room. Past it the new
/// process is stopped and the running gateway serves on, untouched.
pub const UPGRADE_SUCCESSOR_WAIT_MS: u64 = 20_000;

/// How long a planned gateway upgrade may hold its counterparties' input at the barrier while
/// what is in flight settles (inputs journaled, outputs delivered, no resend under way). The
/// pause a counterparty sees is bounded by this; past it the upgrade is called off and the
/// gateway reads again, untouched.
pub const UPGRADE_DRAIN_MAX_MS: u64 = 5_000;

/// How often the barrier looks whether everything in flight settled.
pub const UPGRADE_DRAIN_POLL_MS: u64 = 2;

/// How long the gateway that hands over waits for its connections to write what they hold and
/// give their state to the holder; a counterparty that does not read for this long is handed
/// over with its bytes still in the kernel's send buffer, which is where they would be anyway.
pub const UPGRADE_HANDOVER_MAX_MS: u64 = 5_000;

/// How long the gateway that handed over lingers before it exits, so the operator's answer
/// leaves its control endpoint; the counterparties' pause grows by this much.
pub const UPGRADE_EXIT_GRACE_MS: u64 = 10;

const _: () = assert!(HANDOVER_MESSAGE_BYTES_MAX < 200 * 1024);
// The operator's `upgrade-gateway` is answered before the endpoint gives up on it.
const _: () = assert!(UPGRADE_SUCCESSOR_WAIT_MS + UPGRADE_DRAIN_MAX_MS < CONTROL_REPLY_TIMEOUT_MS);
const _: () = assert!(UPGRADE_DRAIN_POLL_MS < UPGRADE_DRAIN_MAX_MS);

/// How long children get to stop cleanly on shutdown: the gateway's Logout round trip plus
/// margin.
pub const SUPERVISOR_GRACE_MS: u64 = LOGOUT_TIMEOUT_DEFAULT_MS + 3_000;

/// How long the supervisor waits for the gateway's status before restarting a standby for a
/// staged build; without an answer it does not restart it.
pub const SUPERVISOR_STATUS_TIMEOUT_MS: u64 = 2_000;

/// How often the supervisor asks the gateway whether an engine with a newly staged build is a
/// standby it may restart: once a second is prompt for an operator and nothing for the gateway.
pub const SUPERVISOR_STAGE_CHECK_MS: u64 = 1_000;

/// Exit status of a gateway or engine that failed before it started serving (a config error,
/// an address in use, a store locked by another gateway): sysexits' EX_CONFIG. Restarting
/// cannot fix these, so the supervisor stops the venue with the reason instead of retrying.
pub const EXIT_FATAL_STARTUP: u8 = 78;

// ----- Logging (`crate::logging`) -----------------------------------------------------------------

/// Log bytes queued for stderr while its reader is slow, before lines are dropped: a mass logout
/// of every session (`CONNECTIONS_MAX` lines of a few hundred bytes) fits, and a reader that
/// stopped reading costs at most this much memory.
pub const LOG_QUEUE_BYTES_MAX: usize = 1 << 20;

/// How long a stopping process waits for its last log lines to be written: plenty for a live
/// reader, and short enough that a reader that stopped reading cannot hold up the exit (well
/// inside the supervisor's grace period).
pub const LOG_FLUSH_TIMEOUT_MS: u64 = 1_000;

const _: () = assert!(
    LOG_QUEUE_BYTES_MAX >= CONNECTIONS_MAX * 512,
    "a log line per connection must fit the queue"
);
const _: () = assert!(
    LOG_FLUSH_TIMEOUT_MS < SUPERVISOR_GRACE_MS,
    "a child's exit must not outwait the supervisor's grace"
);

// ---------------------------------------------------------------------------------------------
// Engine link: the gateway↔engine wire protocol (`crate::link`).
// ---------------------------------------------------------------------------------------------

/// Largest wire frame in bytes, header included. Every frame, whatever its kind, fits this, so a
/// link's read buffer is one fixed allocation and a declared length above it is refused before a
/// byte of the body is buffered. 64 KiB holds hundreds of inputs or a sweep's worth of reports
/// per frame and is what one socket read typically returns; larger messages (snapshots, a market
/// order that sweeps thousands of orders) are split into chunks of this size.
pub const LINK_FRAME_BYTES_MAX: usize = 64 * 1024;

/// Largest message in bytes once its chunks are put back together. A snapshot of an engine at
/// the default capacities (see the `ENGINE_*_DEFAULT` constants) is under 100 MB; 1 GiB leaves
/// room for configured capacities ten times larger, and a peer cannot make a link reserve more.
/// Engines whose state outgrows it are partitioned across engine pairs.
pub const LINK_MESSAGE_BYTES_MAX: usize = 1 << 30;

/// How long either side of a link may stay silent before it sends a Heartbeat. A dead engine is
/// noticed by silence, so this bounds failover detection; 100 ms is a few packets a second on an
/// idle link and invisible next to order traffic.
pub const LINK_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 100;

/// How long an engine waits without a byte from its gateway before it drops the connection and
/// accepts the next one: ten missed heartbeats. Dropping a live gateway costs only a reconnect
/// (the engine keeps its state and replays retained outputs), while holding a dead one keeps
/// every other gateway out, so this errs on the short side.
pub const LINK_PEER_TIMEOUT_MS_DEFAULT: u64 = 10 * LINK_HEARTBEAT_INTERVAL_MS_DEFAULT;

/// How long either side waits for the other's Hello or Welcome after connecting. Generous
/// because it includes process start and a cold cache, short enough that a wrong address (some
/// other service that never speaks) is reported within seconds.
pub const LINK_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// Connections an engine greets and waits on for a Welcome at once, between gateway
/// connections. One gateway connects at a time; 16 lets it in beside a few stray or hostile
/// connections that never speak (each costs a socket and one frame buffer, 1 MiB in all), and
/// beyond it the oldest waiting connection is closed, so no number of silent connections keeps a
/// gateway's reattach waiting longer than it takes the gateway to answer Hello.
pub const LINK_PENDING_HANDSHAKES_MAX: usize = 16;

/// Permissions of an engine's Unix link socket: read and write for the engine's own account
/// only. Connecting needs write permission, and a connected peer can feed the engine inputs.
pub const LINK_SOCKET_MODE: u32 = 0o600;

/// Bytes of each side's handshake nonce when the link is authenticated: 256 bits, so a nonce
/// never repeats and a recorded proof never matches a new handshake.
pub const LINK_AUTH_NONCE_BYTES: usize = 32;

/// Shortest link secret accepted from its file: 16 bytes (128 bits if random) is beyond guessing;
/// a shorter file is a mistake (an empty file, a placeholder) the operator must hear about.
pub const LINK_SECRET_BYTES_MIN: usize = 16;

/// How often a blocked engine-side loop wakes to check for shutdown and for due heartbeats when
/// nothing arrives. 20 ms makes shutdown feel immediate to an operator at negligible cost.
pub const LINK_POLL_INTERVAL_MS: u64 = 20;

/// Inputs whose encoded outputs an engine retains, so that a gateway that lost a connection can
/// resend the inputs it has no outputs for and get those outputs back (DESIGN.md invariant 4:
/// nothing lost). Must cover every input a gateway can have in flight when the link breaks.
pub const LINK_REPLAY_INPUTS_MAX: usize = 1 << 16;

/// Bytes of encoded outputs an engine retains for replay. At a typical 100 to 300 bytes per
/// input this holds the whole [`LINK_REPLAY_INPUTS_MAX`] window; it only evicts earlier when
/// inputs sweep deep books, and keeps the retention within a fixed memory budget.
pub const LINK_REPLAY_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Inputs a gateway may send on one link before it has received their Outputs. The engine's
/// replay window covers it, so whatever was in flight when a link broke can be recovered from
/// the same engine after reconnecting; it also bounds what the gateway buffers per engine.
pub const LINK_INPUTS_IN_FLIGHT_MAX: usize = 1 << 14;

/// Inputs from the journal a gateway may have unanswered on a link while it catches that
/// engine up (after an attach, a restore, a reconnect, or rebuilding an empty engine from the
/// journal). The driver awaits each link write on its order loop, so a catch-up that ran
/// ahead of the engine would fill the socket and hold every live order behind that write; at
/// a few hundred bytes per encoded input this many stay within a Unix socket's default send
/// buffer (~200 KiB), and are still deep enough that the engine never waits for the next.
pub const CATCH_UP_INPUTS_IN_FLIGHT_MAX: usize = 384;

/// Fewest journal inputs a catch-up sends in one link write while earlier ones are still
/// unanswered: it waits for that much room instead of following each answer with a write of
/// one input, so a replay costs the gateway one write per this many inputs, not per input.
pub const CATCH_UP_BATCH_MIN: usize = 128;

const _: () = assert!(
    CATCH_UP_BATCH_MIN <= SEQUENCER_BATCH_MAX
        && CATCH_UP_BATCH_MIN < CATCH_UP_INPUTS_IN_FLIGHT_MAX
        && CATCH_UP_INPUTS_IN_FLIGHT_MAX <= LINK_INPUTS_IN_FLIGHT_MAX,
    "a catch-up keeps inputs in flight while it waits for room for a batch, within the link's window"
);

const _: () = assert!(
    LINK_INPUTS_IN_FLIGHT_MAX <= LINK_REPLAY_INPUTS_MAX,
    "the replay window must cover every input that can be in flight"
);
const _: () = assert!(
    LINK_FRAME_BYTES_MAX <= u32::MAX as usize,
    "a frame's length prefix is a u32"
);
const _: () = assert!(
    LINK_FRAME_BYTES_MAX >= 4 * 1024,
    "a frame must hold a Hello and an Outputs of a few reports without chunking"
);
const _: () = assert!(
    LINK_MESSAGE_BYTES_MAX >= LINK_FRAME_BYTES_MAX,
    "a message is one or more frames"
);
const _: () = assert!(
    LINK_PEER_TIMEOUT_MS_DEFAULT >= 3 * LINK_HEARTBEAT_INTERVAL_MS_DEFAULT,
    "a peer must miss several heartbeats before it is declared silent"
);
const _: () = assert!(
    LINK_POLL_INTERVAL_MS <= LINK_HEARTBEAT_INTERVAL_MS_DEFAULT,
    "the idle loop must wake often enough to send heartbeats on time"
);
// ----- Shared-memory link (`link::shm`) ---------------------------------------------------------

/// Bytes in each direction's ring of a shared-memory link. The gateway never has more than
/// [`LINK_INPUTS_IN_FLIGHT_MAX`] inputs unanswered; at a typical 300-500 bytes per encoded input
/// 8 MiB holds that whole window, so a writer finds the ring full only when its reader is far
/// behind (or a snapshot is in transit, which is written in pieces). Two rings per engine link
/// cost 16 MiB of shared memory, touched only as far as traffic reaches. A power of two, so a
/// position maps to an offset with a mask.
pub const LINK_SHM_RING_BYTES: usize = 8 << 20;

/// Threads of the gateway's async runtime when `[gateway] runtime_threads` is not set: 0, a
/// multi-thread runtime with a worker per core. One thread (`runtime_threads = 1`) takes the
/// cross-thread wake-ups off an order's path (about half the gateway's sleeps and a quarter of
/// its CPU per order in ping-pong on a loaded 2-core host, p50 7% lower) but, measured over 15
/// alternating runs, doubled p99.9 and raised p99 by 1.7×: every stall of that one thread (a
/// preemption, a journal segment allocated) stops every session and link at once, where a
/// sibling worker would steal the ready tasks. Until those stalls are gone it is opt-in.
pub const GATEWAY_RUNTIME_THREADS_DEFAULT: usize = 0;

/// Most `[gateway] runtime_threads` a config may ask for: more workers than any host's cores
/// only add wake-ups.
pub const GATEWAY_RUNTIME_THREADS_MAX: usize = 256;

/// How long a link reader that finds its ring empty spins before it sleeps on the socket, by
/// default. On a 2-core host three busy processes (gateway and two engines) already compete for
/// the cores, so the default spins only briefly: long enough to catch an answer already being
/// written, short enough that a spinner never holds a core the engine it waits for needs.
/// `[link] spin_us` overrides it.
pub const LINK_SHM_SPIN_US_DEFAULT: u64 = 5;

/// Longest `[link] spin_us` a config may ask for: spinning longer than a heartbeat-scale
/// interval buys no latency, it only burns a core.
pub const LINK_SHM_SPIN_US_MAX: u64 = 10_000;

/// How often a writer that found its ring full checks it again. Full means the reader is a whole
/// ring behind (milliseconds of work at any rate the engine reaches), so polling at this period
/// costs no throughput and needs no wake-up path back from the reader.
pub const LINK_SHM_FULL_POLL_US: u64 = 200;

/// The preface an engine sends, with the shared-memory file attached, on a new Unix connection
/// of a shared-memory link; a gateway expecting shared memory refuses anything else, so a
/// transport mismatch between the two configs is an error naming `[link] transport`.
pub const LINK_SHM_PREFACE: &[u8] = b"baton-shm-1";

const _: () = assert!(
    LINK_SHM_RING_BYTES.is_power_of_two(),
    "ring positions are mapped to offsets with a mask"
);
const _: () = assert!(
    LINK_SHM_RING_BYTES >= 4 * LINK_FRAME_BYTES_MAX,
    "a ring must hold several whole frames so a batch is published at once"
);
const _: () = assert!(
    LINK_SHM_SPIN_US_DEFAULT <= LINK_SHM_SPIN_US_MAX,
    "the default spin must be a valid setting"
);

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

/// How long a canary's end waits for the canary engine's snapshot before it gives up moving
/// the state back and halts the diverged symbols instead. New orders wait meanwhile, so this
/// bounds the rollback's pause; 10 s is ample for a million resting orders (the snapshot is
/// written beside the order loop in well under that) and short of a session's heartbeat.
pub const TRANSFER_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;

// ----- Sequencer ----------------------------------------------------------------------------------

/// Requests sequenced per batch: one journal flush and one link write per batch. Large enough to
/// amortize both under load, small enough that a batch is microseconds of work.
pub const SEQUENCER_BATCH_MAX: usize = 256;

/// Most inputs kept for a standby before they are written to it whatever their age (see
/// `gateway::core` standby batching, `[gateway] standby_batch_us`): a batch the engine applies in
/// one wake-up, small enough that a switch's barrier waits for no more than that.
pub const STANDBY_BATCH_INPUTS_MAX: usize = 64;

/// `[gateway] standby_batch_us`: how long the oldest input kept for a standby may wait before it
/// is written. A millisecond turns a standby's wake-up per order into one per millisecond at
/// 1 000-64 000 orders/s, and bounds how far behind its answers may be when nothing waits on them.
pub const STANDBY_BATCH_US_DEFAULT: u64 = 1_000;

/// Longest `[gateway] standby_batch_us` accepted, one housekeeping interval
/// ([`LINK_POLL_INTERVAL_MS`]): a standby kept further behind saves no more wake-ups worth having
/// and makes a failover start further back.
pub const STANDBY_BATCH_US_MAX: u64 = LINK_POLL_INTERVAL_MS * 1_000;

/// Longest journal (in inputs) an empty standby is rebuilt from by replaying it from input 1
/// instead of from the authoritative engine's snapshot. A replay costs the authoritative engine
/// nothing, but its catch-up time grows with the day's inputs (a snapshot's with the resting
/// state, and it lands on the authoritative engine's link and the gateway's order loop). The
/// replay ran at 75 000-100 000 inputs/s on the reference 2-core machine under a 2 000/s load
/// with the other cores' work beside it, so this many catch up within about 5-7 s, the longest
/// a venue should run without a standby able to take over promptly.
pub const REJOIN_REPLAY_INPUTS_MAX: u64 = 500_000;

/// Batches of inputs the core keeps for reuse once the driver wrote them to the engines (see
/// `Core::recycle_inputs`): one per engine for the batch being written and one for the next, so
/// sequencing allocates no batch per order (invariant 11).
pub const SEQUENCER_SPARE_BATCHES_MAX: usize = 4;

/// Vectors of engine outputs the gateway keeps for its link decoders to fill again once the core
/// is done with them (see `link::OutputsPool`), so decoding an engine's answer allocates nothing
/// in the steady state (invariant 11). Enough for the inputs both engines have in flight at a
/// few hundred orders per wake-up; beyond it a vector is freed.
pub const LINK_OUTPUTS_SPARE_MAX: usize = 256;

/// Lines the `baton gateway` command's arm in `main.rs` may take (checked by a tidy test): it
/// reads the configuration and calls `gateway::run`; anything more is assembly that belongs in
/// the library, where tests can reach it without spawning the binary.
pub const MAIN_GATEWAY_ARM_LINES_MAX: usize = 10;

/// Operator commands waiting for the core: commands come one per operator request and the core
/// answers each within a wake-up, so a few suffice; a full queue makes the control plane wait.
pub const CORE_COMMANDS_QUEUE_MAX: usize = 16;

/// Requests waiting for the control plane (from `baton ctl`, metrics scrapes, systemd's
/// watchdog): each is answered quickly, and a full queue only makes a requester wait.
pub const CONTROL_COMMANDS_QUEUE_MAX: usize = 16;

/// Emptied output vectors the core keeps from acknowledged deliveries, to copy the next
/// delivery's outputs into without allocating (invariant 11); also the delivery queue's starting
/// room. The driver hands each delivery back before its next wake-up, so a handful is in use at
/// once; beyond this a vector goes back to the shared pool.
pub const OUTBOX_SPARE_OUTPUTS_MAX: usize = 64;

/// A vector of outputs handed back with room for more than this many is freed instead of kept:
/// a sweep's hundred reports must not leave every kept vector that large. An order's answers are
/// one to a few reports.
pub const LINK_OUTPUTS_SPARE_CAPACITY_MAX: usize = 8;

/// How many of the journal's newest inputs a restarting gateway reads to learn which business
/// messages it had journaled but not yet recorded as received in their session stores. Only the
/// batch in progress at a crash can be in that state (a batch confirms each message right after
/// journaling it); a store whose writes reached the disk later than the journal's, after a
/// power loss, can be a few batches behind. 256 batches covers that with room to spare and reads
/// in milliseconds.
pub const INBOUND_RECOVERY_INPUTS_MAX: u64 = 256 * SEQUENCER_BATCH_MAX as u64;

/// Requests waiting for the sequencer across all sessions; when full, connections stop reading
/// (TCP backpressure) rather than buffering without bound.
pub const SEQUENCER_QUEUE_MAX: usize = 16 * 1024;

/// How often the gateway retries an unreachable engine.
pub const ENGINE_RECONNECT_MS: u64 = 200;

// ----- Standby, switch and failover -------------------------------------------------------------

/// Inputs whose stamps are remembered to report an engine's lag in time: one in-flight window is
/// enough, older lag is reported as 0 µs with the lag in inputs still exact.
pub const RECENT_INPUTS_MAX: usize = 1 << 16;

/// Inputs whose outputs wait for the other engine's to be compared. A standby further behind
/// than this is not compared for those inputs (it is still caught up and checked after).
pub const SHADOW_PENDING_MAX: usize = 1 << 16;

/// Divergences kept as samples for the operator.
pub const SHADOW_SAMPLES_MAX: usize = 10;

/// A planned switch is refused while the standby is further behind than this: the pause is
/// bounded by how far the new engine lags, and this keeps it to milliseconds. The default of
/// `[control.gates] switch_lag_max_inputs`.
pub const SWITCH_LAG_MAX_INPUTS: u64 = 10_000;

/// How long one attempt to reach an engine may take before the gateway moves on.
pub const ENGINE_CONNECT_TIMEOUT_MS: u64 = 500;

/// Longest a file of the gateway core may grow (checked by its `tidy` test): past this, a file
/// holds more than one responsibility and its state machine can no longer be read in one sitting.
pub const CORE_FILE_LINES_MAX: usize = 800;

/// Newest messages of each session store a restarted gateway reads for the newest ExecID, to
/// find outputs stored after its cursor's last write. Only that one execution report is
/// looked for, so this need only cover what the session's connection stored around it
/// (heartbeats, rejects of unusable messages): a few; the bound keeps a start with many idle
/// sessions fast.
pub const OUTBOX_RECOVERY_SCAN_MAX: u64 = 256;

/// Frames the core's driver has room for, from the start, that arrive while it waits on a write
/// to an engine: it keeps reading every link then (an engine blocked on its answers would stop
/// reading), and a write that waits at all is rare, so a few hundred cover it without growing.
pub const LINK_FRAMES_ARRIVED_CAPACITY: usize = 256;

/// How often a gateway with no engine attached says so in its log: often enough that an
/// operator reading the log finds it at once, rarely enough (one line per 25 reconnect attempts)
/// that it does not drown everything else.
pub const ENGINE_ABSENT_WARN_MS: u64 = 5_000;

/// How long the sequencer refuses new business without touching the disk after the input
/// journal could not get space, before it tries the allocation again: a second is soon enough
/// after an operator frees space, and keeps a full disk from costing an allocation attempt per
/// message.
pub const DISK_FULL_RETRY_MS: u64 = 1_000;

const _: () = assert!(
    ENGINE_ABSENT_WARN_MS >= 10 * ENGINE_RECONNECT_MS,
    "one warning per many attempts, not one per attempt"
);

/// Default silence of the authoritative engine (with inputs unanswered or not) before failover:
/// several link heartbeats, so one late heartbeat never triggers it.
pub const FAILOVER_TIMEOUT_DEFAULT_MS: u64 = 1_000;

/// The FIX listen address of `deploy/baton.toml`, and of a configuration imported from a QuickFIX
/// file that names no SocketAcceptPort: 9878 is the port the FIX examples around QuickFIX use
/// most, loopback so that an unreviewed import exposes nothing.
pub const FIX_LISTEN_DEFAULT: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9878),
);

// ----- Control endpoint (`control::endpoint`, `baton ctl`) -------------------------------------

/// Where the gateway listens for `baton ctl` by default: loopback only, because the endpoint
/// switches authority between engines and must take commands from the local host alone; the port
/// is the one after the default FIX listen port, so the pair is easy to remember and firewall.
pub const CONTROL_ADDR_DEFAULT: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9879),
);

/// Longest request line the endpoint buffers. A request is a few dozen bytes of JSON; 64 KiB
/// leaves room for requests that grow arguments while bounding what one connection can make the
/// gateway hold. A longer line is answered with a refusal and skipped, not buffered.
pub const CONTROL_REQUEST_LINE_BYTES_MAX: usize = 64 * 1024;

/// Longest reply line `baton ctl` accepts. A status with a thousand sessions and a full set of
/// divergence samples is a few hundred kilobytes; 16 MiB is far beyond that and still stops a
/// client from growing without bound if something other than the gateway answers.
pub const CONTROL_REPLY_LINE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// How long the endpoint waits for the sequencer's answer before refusing. Generous because a
/// switch waits for its barrier, which waits for the standby to catch up (milliseconds normally,
/// since a switch to a standby that lags far behind is refused up front); a gateway that cannot
/// answer in this long is stuck, and the operator must be told rather than left waiting.
pub const CONTROL_REPLY_TIMEOUT_MS: u64 = 30_000;

/// How long `baton ctl` waits for a reply. Longer than [`CONTROL_REPLY_TIMEOUT_MS`] so that a slow
/// switch ends in the endpoint's refusal, which says the outcome is unknown, rather than in a
/// client-side timeout that says less.
pub const CONTROL_CLIENT_TIMEOUT_MS: u64 = CONTROL_REPLY_TIMEOUT_MS + 5_000;

/// Control connections open at once. Operators and their scripts need a handful; the bound keeps a
/// looping script from holding descriptors the FIX sessions need.
pub const CONTROL_CONNECTIONS_MAX: usize = 16;

/// How long a control connection may sit without sending a request (or reading its reply) before
/// the endpoint closes it, so abandoned connections give their slot back. A watcher polling
/// status more often than once a minute keeps its connection.
pub const CONTROL_IDLE_TIMEOUT_MS: u64 = 60_000;

/// How long a new control or metrics connection may take to send its first request (a request
/// line, an HTTP request head). `baton ctl`, `curl` and Prometheus write theirs as soon as they
/// connect, so this only ever closes connections that say nothing: 2 s is far beyond a loaded
/// host's scheduling delay and still short enough that idle connections cannot hold the
/// endpoint (the emergency rollback goes through it) for long, even without eviction.
pub const LOCAL_FIRST_REQUEST_TIMEOUT_MS: u64 = 2_000;

/// Pause after a failed accept on a local endpoint (out of descriptors and the like), so the
/// accept loop does not spin while the condition lasts; short, because an operator is waiting.
pub const LOCAL_ACCEPT_BACKOFF_MS: u64 = 50;

/// Largest buffer getpwuid_r gets for one account's entry. An entry is a name, a home and a shell:
/// a few hundred bytes; the lookup starts at 1 KiB and doubles while the C library says it is
/// short, and a database whose entry needs more than 64 KiB is broken, not an account to name.
pub const ACCOUNT_ENTRY_BYTES_MAX: usize = 64 * 1024;

/// Characters of each divergence sample `baton ctl status` shows in its table; the full text is in
/// `--json`. Enough to see which fields differ without one sample filling the screen.
pub const CONTROL_SAMPLE_TEXT_CHARS_MAX: usize = 160;

/// Divergence samples `baton ctl status` shows in its table; `--json` prints every sample the
/// gateway kept. The first few say whether the standby diverges at all and where; the rest are
/// for closer study.
pub const CONTROL_SAMPLES_SHOWN: usize = 3;

/// How often `baton ctl watch` asks for status, ms. Once a second is as fast as a person reads a
/// changing number, and one status request a second is nothing to the sequencer.
pub const CONTROL_WATCH_REFRESH_MS: u64 = 1_000;

/// How long `baton ctl watch` waits for one status reply, ms, before it shows the gateway as
/// unreachable. Much shorter than [`CONTROL_CLIENT_TIMEOUT_MS`]: a status is answered at once
/// (it moves nothing), and a watch retries anyway, so the operator should learn of a hung
/// gateway within seconds rather than after the one-shot client's patience.
pub const CONTROL_WATCH_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// How long `baton ctl watch` waits for a key before it looks for a new status, ms: `q` is
/// answered within a tenth of a second, without spinning a core.
pub const CONTROL_WATCH_KEY_POLL_MS: u64 = 100;

const _: () = assert!(
    CONTROL_WATCH_REQUEST_TIMEOUT_MS < CONTROL_CLIENT_TIMEOUT_MS,
    "a watch retries, so it gives up on one reply sooner than a one-shot ctl command"
);
const _: () = assert!(
    CONTROL_WATCH_KEY_POLL_MS < CONTROL_WATCH_REFRESH_MS,
    "keys must be read between refreshes, or quitting waits for the next status"
);

const _: () = assert!(
    CONTROL_CLIENT_TIMEOUT_MS > CONTROL_REPLY_TIMEOUT_MS,
    "the client must outwait the endpoint so the endpoint's refusal reaches the operator"
);
const _: () = assert!(
    CONTROL_REPLY_LINE_BYTES_MAX >= CONTROL_REQUEST_LINE_BYTES_MAX,
    "replies (status) are larger than requests"
);

// ----- Metrics endpoint (`control::metrics`) ----------------------------------------------------

/// Longest HTTP request head (request line and headers) the metrics endpoint reads. A Prometheus
/// scrape sends a few hundred bytes (request line, Host, User-Agent, Accept, its scrape timeout);
/// 8 KiB is the head limit common HTTP servers default to, leaves room for proxies' extra headers,
/// and bounds what one connection can make the gateway hold. A longer head gets 431 and a close.
pub const METRICS_REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// How long a metrics connection may take to send its whole request head, and to take its
/// response. A scraper sends its request at once; a connection that idles this long is
/// abandoned or hostile and gives its slot back.
pub const METRICS_IO_TIMEOUT_MS: u64 = 5_000;

/// How long a scrape waits for the gateway's status before answering 503. Below Prometheus's
/// default scrape timeout (10 s), so the scraper sees a 503 that says why rather than its own
/// timeout; a sequencer that cannot answer a status in this long is stuck, which is itself what
/// the operator needs to see.
pub const METRICS_STATUS_TIMEOUT_MS: u64 = 5_000;

/// Metrics connections open at once. One or two scrapers poll every few seconds; the bound keeps
/// a misbehaving client from holding descriptors the FIX sessions need.
pub const METRICS_CONNECTIONS_MAX: usize = 8;

const _: () = assert!(
    LOCAL_FIRST_REQUEST_TIMEOUT_MS < CONTROL_IDLE_TIMEOUT_MS
        && LOCAL_FIRST_REQUEST_TIMEOUT_MS <= METRICS_IO_TIMEOUT_MS,
    "a connection that has sent nothing is dropped before any other idle connection"
);
/// How often a scrape re-verifies the audit log on disk for `baton_audit_chain_ok`; scrapes in
/// between report the last result. A verification reads and hashes the whole log, which grows
/// for the venue's life; once a minute keeps that off every 5 s scrape, and the alert on a broken
/// chain is about a trail someone edited, which minutes of delay do not make worse.
pub const METRICS_AUDIT_VERIFY_INTERVAL_MS: u64 = 60_000;

const _: () = assert!(
    METRICS_STATUS_TIMEOUT_MS < 10_000,
    "a scrape must get its 503 before Prometheus's default 10 s scrape timeout"
);

// ----- Canary gates and the control plane (`gateway::core`, `control::plane`) ------------------

/// Share of a canary's compared inputs whose answers may differ from the baseline engine's before
/// the canary is rolled back: 0.1 %, the design's default. Engines are deterministic, so any
/// difference is a defect of one build; the share only keeps one bad answer among thousands from
/// ending a long canary, while a difference in the first few hundred inputs ends it at once.
pub const GATE_ERROR_RATE_MAX_DEFAULT: f64 = 0.001;

/// How much more often the canary may reject than the baseline engine on the same inputs, as a
/// share of compared inputs: 1 %. Rejects that differ are also errors; this gate names the cause.
pub const GATE_REJECT_RATE_INCREASE_MAX_DEFAULT: f64 = 0.01;

/// Canary inputs compared before the reject and latency gates judge: a share or a p99 of fewer
/// inputs than this says more about chance than about the build.
pub const GATE_MIN_SAMPLES_DEFAULT: u64 = 200;

/// The canary engine's p99 answer latency may be this many times the baseline's on the same
/// inputs.
pub const GATE_LATENCY_P99_RATIO_MAX_DEFAULT: f64 = 3.0;

/// ... and always this many µs above it: on a small host, one descheduling of a process moves a
/// p99 by a millisecond without the build being slower.
pub const GATE_LATENCY_SLACK_US_DEFAULT: u64 = 2_000;

/// Bytes of withheld outputs kept (as text) in their audit record: enough to reconcile the
/// usual one to a few reports by hand, bounded well below the audit log's line limit.
pub const WITHHELD_OUTPUTS_TEXT_BYTES_MAX: usize = 8 * 1024;

/// How often a canary's gate breach is handed to the control plane again while the canary has
/// not ended: often enough that a rollback refused for a passing reason (a switch in progress)
/// is retried promptly, rarely enough not to flood the audit log.
pub const GATE_BREACH_REPEAT_MS: u64 = 1_000;

/// How often the control plane checks whether a running canary's change window has closed: a
/// second late is nothing against windows of hours.
pub const CONTROL_WINDOW_CHECK_MS: u64 = 1_000;

/// Events (failovers, gate breaches, engine attachments) the core may hand the control plane
/// before it must wait for them to be audited: they come a few per minute at most.
pub const CONTROL_EVENTS_MAX: usize = 256;

const _: () = assert!(
    GATE_ERROR_RATE_MAX_DEFAULT < GATE_REJECT_RATE_INCREASE_MAX_DEFAULT,
    "a wrong answer is worse than an extra reject"
);

/// Longest the sequencer waits to hand inputs to an engine's socket. An engine that stops
/// reading for this long is treated as lost (a standby falls back to catching up; the
/// authoritative engine fails over) instead of stalling the venue.
pub const ENGINE_WRITE_TIMEOUT_MS: u64 = 1_000;

/// Longest a write to a counterparty may block before the connection is dropped: far beyond any
/// healthy peer's socket buffer drain, short enough that a stuck peer does not pin memory.
pub const CONNECTION_WRITE_TIMEOUT_MS: u64 = 5_000;

// ----- Bench

/// Largest latency the bench histograms hold, µs: a minute, far beyond any failover timeout, so
/// even an order answered after a stalled switch is recorded instead of clipped.
pub const BENCH_LATENCY_MAX_US: u64 = 60_000_000;

/// How long a bench reader blocks before checking whether its session is done. Only bounds how
/// late a finished run notices it is finished; answers wake the reader at once.
pub const BENCH_READ_POLL_MS: u64 = 100;

/// Open-loop bench runs: sockets one wait of the client's single reader thread reports at most.
/// More than the sessions a bench usually runs, so one wake-up serves every session that has
/// answers; the rest (level-triggered) are reported at the next wait, a few µs later.
pub const BENCH_POLL_EVENTS_MAX: usize = 64;

/// Open-loop bench runs: reads of one session's socket per wake-up of the reader, at most. A read
/// shorter than [`READ_CHUNK`] already ends the socket's turn (it was emptied); the bound only
/// keeps one flooded session from holding up every other session's answers.
pub const BENCH_SOCKET_READS_MAX: usize = 8;

/// `baton bench --throughput`: orders a session may have sent and not yet seen answered. Deep
/// enough that no process on the path ever waits for the next order (the gateway batches up to
/// `SEQUENCER_BATCH_MAX` per wake-up), shallow enough that the venue's queues stay bounded and
/// the latency reported is the queueing of a saturated venue, not of an ever-growing backlog.
pub const BENCH_THROUGHPUT_WINDOW: u64 = 1_024;

/// `--throughput`: room, in orders, a writer whose window is full waits for before its reader
/// wakes it. Waking it for every answer (or letting it poll) costs the client a sleep and a
/// wake-up per order, which on a shared machine is CPU taken from the venue being measured; an
/// eighth of the window keeps seven eighths of it in flight while the writer sleeps.
pub const BENCH_THROUGHPUT_REFILL: u64 = BENCH_THROUGHPUT_WINDOW / 8;

/// How long a `--throughput` writer whose window is full sleeps at most before looking again,
/// ms: only a backstop (its reader wakes it when the room is there), so a lost wake-up costs
/// one period instead of the run.
pub const BENCH_THROUGHPUT_WAIT_MS: u64 = 20;

const _: () =
    assert!(BENCH_THROUGHPUT_REFILL >= 1 && BENCH_THROUGHPUT_REFILL <= BENCH_THROUGHPUT_WINDOW);

/// Orders each bench session keeps to resend when the acceptor asks (a gateway killed after
/// reading orders it had not journaled): far more than a session sends while a gateway
/// restarts at the bench's rates; anything older is gap filled, and then counted missing.
pub const BENCH_RESEND_HISTORY: usize = 8_192;

/// How long the bench waits for the gateway to mark a killed engine down, s: its link closes at
/// once, so this only bounds a loaded machine.
pub const BENCH_ENGINE_DOWN_WAIT_S: u64 = 30;

/// How long the bench waits for a SIGKILLed gateway's successor to serve again (control
/// answering, every session logged on), s: a restart takes well under a second; this bounds a
/// loaded machine.
pub const BENCH_GATEWAY_BACK_WAIT_S: u64 = 60;

/// How long the control endpoint waits for the kernel to name a control client's account over
/// netlink, s: it answers in microseconds; past this the TCP tables are read instead.
pub const PEER_SOCK_DIAG_TIMEOUT_S: libc::time_t = 1;

/// How often the bench asks the venue's status while it waits for an event to finish (an engine
/// back, a gateway serving again), ms. Each ask is a control connection, and the gateway reads
/// the kernel's TCP table to name its owner: asked every 10-20 ms, the bench measured its own
/// polling as much as the event.
pub const BENCH_STATUS_POLL_MS: u64 = 100;

/// Window of the change the bench files for its planned gateway upgrades, ms from filing: the
/// longest run the bench is meant for.
pub const BENCH_CHANGE_WINDOW_MS: u64 = 3_600_000;

/// Width of one point of the bench time series, ms: fine enough to show a switch's blip, coarse
/// enough that each point holds hundreds of orders at the default rate.
pub const BENCH_SERIES_BUCKET_MS: u64 = 100;

/// Window after a switch or kill in which the bench looks for its worst latency, ms: covers the
/// failover timeout of the bench venue (1 s) plus the queue it leaves behind.
pub const BENCH_EVENT_WINDOW_MS: u64 = 1_500;

/// How long the bench waits for its QuickFIX peer to report it listens, s: it binds at start,
/// well under a second alone, but the bench shares two cores with whatever else runs; a minute
/// only bounds a peer that hangs.
pub const BENCH_PEER_READY_S: u64 = 60;

/// Times the bench starts its QuickFIX peer before giving up: the peer binds a port the bench
/// picked and released, which another process can take in between; three losses in a row mean
/// something else is wrong.
pub const BENCH_PEER_START_ATTEMPTS: usize = 3;

/// Messages the `--hostile resend-storm` session has in its store before the storm: the number
/// the storm was first seen with.
pub const BENCH_HOSTILE_STORED: usize = 50_000;

/// ResendRequests for the whole store the storm writes at once: the number it was first seen
/// with.
pub const BENCH_HOSTILE_RESEND_REQUESTS: usize = 30;

/// Logons from unknown CompIDs `--hostile wide-logons` sends, four connections at a time: about
/// the 613 that were first seen to cut the engine links.
pub const BENCH_HOSTILE_WIDE_LOGONS: usize = 612;

/// Distinct tags in each of those Logons: the most that fit under [`BODY_LENGTH_MAX`].
pub const BENCH_HOSTILE_WIDE_TAGS: u32 = 7_000;

/// Idle connections `--hostile prelogon-flood` opens: more than the default connection limit.
pub const BENCH_HOSTILE_IDLE_CONNECTIONS: usize = 1_100;

/// Idle connections `--hostile ctl-flood` opens to the control endpoint: twice the 16 that
/// were first seen to lock it.
pub const BENCH_HOSTILE_IDLE_CONTROL_CONNECTIONS: usize = 32;

const _: () = assert!(BENCH_HOSTILE_IDLE_CONNECTIONS > CONNECTIONS_MAX);
const _: () = assert!(BENCH_HOSTILE_WIDE_TAGS as usize * 8 < BODY_LENGTH_MAX);

// ----- Audit log (`control::audit`) -------------------------------------------------------------

/// Longest audit record line in bytes, newline included. A control action (a switch, an
/// approval, a gate breach with its evidence summary) is a few hundred bytes; 64 KiB leaves room
/// for verbose evidence while bounding what a reader buffers per line, so a damaged file without
/// newlines cannot make `open` or `baton audit verify` read gigabytes into one line. An append
/// over it is refused; a line over it on read is corruption, since no append writes one.
pub const AUDIT_LINE_BYTES_MAX: usize = 64 * 1024;

/// Longest actor name in an audit record: operator logins and component names are far shorter,
/// and a bound keeps every record's envelope small next to its event.
pub const AUDIT_ACTOR_LEN_MAX: usize = 64;

/// Appends waiting for the audit writer thread (`control::audit_writer`). The control plane is
/// its only client and awaits each append before it asks for the next, so one is ever queued;
/// a few leave room without letting a stuck disk collect unbounded work.
pub const AUDIT_WRITES_QUEUE_MAX: usize = 4;

const _: () = assert!(
    AUDIT_LINE_BYTES_MAX >= 4 * 1024 + AUDIT_ACTOR_LEN_MAX,
    "a record's envelope (seq, time, actor, two hashes, ~240 bytes) must leave kilobytes for the event"
);

// ----- systemd notifications (`sd_notify`) ---------------------------------------------------

/// How often the gateway asks whether an engine has attached before it tells systemd READY=1:
/// an engine attaches within a link handshake, so a tenth of a second adds nothing noticeable
/// to a start and costs one status request per poll.
pub const NOTIFY_READY_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a readiness status request may take before the poll counts it as "not yet": the
/// same bound a metrics scrape gets, since both ask the same control plane.
pub const NOTIFY_STATUS_TIMEOUT: std::time::Duration =
    std::time::Duration::from_millis(METRICS_STATUS_TIMEOUT_MS);

/// The shortest interval between watchdog pings, whatever WatchdogSec says: each ping costs a
/// status request, and a watchdog tighter than this would restart a gateway that is merely busy.
pub const WATCHDOG_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_millis(500);

const _: () = assert!(NOTIFY_READY_POLL.as_millis() < WATCHDOG_INTERVAL_MIN.as_millis());

// ---------------------------------------------------------------------------------------------
// FIX codec and dictionary: what one message may hold (`fix::codec`, `fix::dictionary`).
// ---------------------------------------------------------------------------------------------

/// Largest BodyLength accepted before Logon. The Logon the venue takes is about 100 bytes of
/// body (CompIDs, MsgSeqNum, SendingTime, HeartBtInt, ResetSeqNumFlag); 4 KiB is forty times
/// that, yet an unauthenticated connection can make the gateway buffer and parse only 1/16 of
/// what a logged-on one can.
pub const LOGON_BODY_LENGTH_MAX: usize = 4 * 1024;

/// Most fields indexed in one message; a message with more is rejected (373=99). The venue's
/// largest message, an order with a full Parties group ([`PARTIES_MAX`] parties of five fields),
/// is under 100 fields; ten times that leaves room for verbose peers while bounding the index
/// (and so every walk over a message) far below the ~16,000 fields 64 KiB could hold.
pub const FIELDS_PER_MESSAGE_MAX: usize = 1_024;

/// Most fields a dictionary may define. Validation keeps a seen-set of one bit per dictionary
/// field on the stack (128 bytes at this size) so that checking repeats is linear and allocates
/// nothing; FIX 4.4 defines about 900 fields, so even a full dictionary fits.
pub const DICTIONARY_FIELDS_MAX: usize = 1_024;

/// Distinct tags outside the dictionary tracked for the repeated-tag check (a bounded
/// fallback). A message with any such tag is rejected (373=0) anyway; tracking a few keeps a
/// repeated unknown tag reported as 373=13 in ordinary cases, and the bound keeps the check
/// linear when a peer sends thousands of them.
pub const UNKNOWN_TAGS_TRACKED_MAX: usize = 16;

/// Deepest nesting of repeating groups (a group inside a group's instance ...). FIX 4.4's
/// deepest (Parties → PtysSubGrp) is two; four leaves room and bounds the validator's fixed
/// stack of open groups.
pub const GROUP_DEPTH_MAX: usize = 4;

/// Most members one repeating group may define, so the members seen in an instance fit one
/// 64-bit mask: checking order, repeats and required members per instance is then a shift and
/// a mask.
pub const GROUP_MEMBERS_MAX: usize = 64;

/// Parties one order, cancel or replace may carry (NoPartyIDs); more is refused whole with a
/// BusinessMessageReject, never cut to fit. MiFID II asks for client ID, investment decision
/// maker, executing trader and the executing/entering firm: five roles, plus room for a few
/// more, while keeping the fixed-size party list the engine stores inline in every order record
/// (and every ExecutionReport) to about 320 bytes, so the records stay `Copy` and heap-free.
pub const PARTIES_MAX: usize = 8;

/// Longest PartyID (448) in bytes. An LEI is 20 characters, a MiFID II short code at most 10
/// digits (a 32-bit integer), a MIC 4; 32 covers them and firms' own codes, and matches the
/// ClOrdID bound so a party fits beside the order's other identifiers.
pub const PARTY_ID_LEN_MAX: usize = 32;

const _: () = assert!(LOGON_BODY_LENGTH_MAX < BODY_LENGTH_MAX);
const _: () = assert!(PARTIES_MAX <= u8::MAX as usize);
const _: () = assert!(
    PARTIES_MAX * (PARTY_ID_LEN_MAX + 8) <= 512,
    "an order record's inline parties (ID, source, role, qualifier each) stay within 512 bytes"
);
const _: () = assert!(FIELDS_PER_MESSAGE_MAX >= 20 * PARTIES_MAX);
const _: () = assert!(DICTIONARY_FIELDS_MAX.is_multiple_of(64));
const _: () = assert!(GROUP_MEMBERS_MAX <= 64);
const _: () = assert!(HOLD_SOCKETS_MAX_MS_DEFAULT > SUPERVISOR_BACKOFF_MAX_MS);

// ----- The seeded simulation (`gateway::sim`) -------------------------------------------------

/// Random steps per seed before faults heal: enough for several crashes, failovers and
/// switches to overlap in one run, few enough that a seed runs in a few milliseconds.
pub const SIM_STEPS_DEFAULT: usize = 300;

/// Counterparty sessions per seed: three, so one input's fills answer more than one session.
pub const SIM_SESSIONS_DEFAULT: usize = 3;

/// Orders, levels and ClOrdIDs per simulated engine: a seed sends at most one order per step,
/// so this never refuses for capacity.
pub const SIM_ORDERS_MAX: u32 = 4_096;

const _: () = assert!(SIM_STEPS_DEFAULT as u64 <= SIM_ORDERS_MAX as u64);

/// Virtual time a run starts at (2027-01-15): any fixed instant works; a realistic one keeps
/// SendingTimes readable in a trace.
pub const SIM_EPOCH_SECS: u64 = 1_800_000_000;

/// The executable both simulated engines name in their Hellos when a run has them be one
/// build (`SimConfig::one_build`): any fixed non-empty text; only its equality matters.
pub const SIM_EXECUTABLE_SHA256: &str =
    "5151515151515151515151515151515151515151515151515151515151515151";

/// HeartBtInt (seconds) the simulation's counterparties log on with: long against the
/// simulated failovers, so heartbeats and TestRequests interleave with them without dominating.
pub const SIM_HEART_BT_INT_S: u64 = 30;
const _: () =
    assert!(SIM_HEART_BT_INT_S >= HEART_BT_INT_MIN_S && SIM_HEART_BT_INT_S <= HEART_BT_INT_MAX_S);

/// Whether the simulation kills the gateway between an input's journal write and its
/// session's record of having received the message: a restarted gateway must recover each
/// session's inbound MsgSeqNum from the journal, or the counterparty's PossDup resend of such an
/// order is taken as a new one. A switch so a run can leave the crash out to tell it from others.
pub const SIM_CRASH_BEFORE_CONFIRM: bool = true;

/// Percent of the simulated driver's wake-ups that leave the core's deliveries queued (the
/// driver had not got to them), so a gateway crash can take queued deliveries with it.
pub const SIM_DELIVERIES_QUEUED_PERCENT: u64 = 5;

/// Percent of the simulated driver's wake-ups that write their deliveries into the sessions and
/// hand them back only at the next wake-up, so a gateway crash can fall between a delivery's
/// store writes and the cursor write it asks for.
pub const SIM_DELIVERIES_UNACKNOWLEDGED_PERCENT: u64 = 10;
const _: () = assert!(SIM_DELIVERIES_QUEUED_PERCENT + SIM_DELIVERIES_UNACKNOWLEDGED_PERCENT <= 100);

/// The simulated gateway's failover timeout: long against a step, so silence and answers
/// interleave, short enough that a few time steps reach it.
pub const SIM_FAILOVER_TIMEOUT_MS: u64 = 1_000;

/// Steps a failure prints: enough to see the crash or switch that led to it.
pub const SIM_TRACE_LINES: usize = 40;

/// Link actions one step may ask for before it is a livelock rather than a busy step.
pub const SIM_PUMP_STEPS_MAX: usize = 100_000;

/// Reconnect periods the healed run may take to settle.
pub const SIM_SETTLE_ROUNDS_MAX: usize = 200;

/// Seeds `cargo test` runs: about half a minute on a loaded debug build (some 40 seeds a
/// second); `baton sim --seeds N` runs as many as asked.
pub const SIM_TEST_SEEDS: u64 = 1_000;

/// OrderID (37) the simulation's faulty canary engine writes into the answers it gets wrong, so
/// a wrong answer that reaches a session is recognised there. Order ids are input seqs, and a
/// run journals at most [`SIM_ORDERS_MAX`] inputs, so no real order gets this id; it is short
/// enough for a FIX integer field to read back.
pub const SIM_WRONG_ORDER_ID: u64 = 999_999_999;
const _: () = assert!(SIM_WRONG_ORDER_ID > SIM_ORDERS_MAX as u64);

/// Seeds `cargo test` runs with planned gateway upgrades among the faults: fewer than
/// [`SIM_TEST_SEEDS`], since those seeds already cover every other fault; enough that upgrades
/// with answers stored after the hand-over come up many times.
pub const SIM_UPGRADE_SEEDS: u64 = 300;
const _: () = assert!(SIM_UPGRADE_SEEDS <= SIM_TEST_SEEDS);

/// Seeds within which each planted bug must be caught.
pub const SIM_PLANTED_SEEDS_MAX: u64 = 50;

/// How long `baton demo` waits, after SIGKILLing the gateway process, for every counterparty to
/// have an answer to an order sent after the kill (and for the control endpoint to answer): the
/// supervisor's back-off and a start on a loaded machine; longer than the held sockets' default
/// bound, so a gateway that never takes them back shows as disconnects, not as a short wait.
pub const DEMO_GATEWAY_KILL_ANSWER_WAIT_MS: u64 = 60_000;
const _: () = assert!(DEMO_GATEWAY_KILL_ANSWER_WAIT_MS > HOLD_SOCKETS_MAX_MS_DEFAULT);

/// ResendRequests `baton demo` describes in its report (who asked for what, after which event):
/// enough to trace a few gaps to their cause; a run with more shows the first ones.
pub const DEMO_GAP_SAMPLES_MAX: usize = 20;
/// Largest plaintext one TLS record carries (RFC 8446 §5.1, RFC 5246 §6.2.1): the continued
/// record layer cuts what it writes into records of at most this, and refuses a peer's larger one.
pub const TLS_PLAINTEXT_MAX: usize = 1 << 14;

/// A TLS record's header: content type, legacy version, length.
pub const TLS_RECORD_HEADER_LEN: usize = 5;

/// Largest TLS 1.3 ciphertext a peer may send (RFC 8446 §5.2: plaintext + 256 for the inner type,
/// padding and tag).
pub const TLS13_CIPHERTEXT_MAX: usize = TLS_PLAINTEXT_MAX + 256;

/// Largest TLS 1.2 ciphertext a peer may send (RFC 5246 §6.2.3: plaintext + 2048).
pub const TLS12_CIPHERTEXT_MAX: usize = TLS_PLAINTEXT_MAX + 2048;

/// The continued record layer's receive buffer: one whole record of the larger kind, so a record
/// is always decrypted in place without growing anything.
pub const TLS_RECORD_MAX: usize = TLS_RECORD_HEADER_LEN + TLS12_CIPHERTEXT_MAX;
const _: () = assert!(TLS12_CIPHERTEXT_MAX >= TLS13_CIPHERTEXT_MAX);

/// Records one AES-GCM key may protect in the continued record layer before the connection is
/// closed cleanly (the counterparty reconnects with fresh keys): the confidentiality limit rustls
/// applies to AES-GCM (RFC 8446 §5.5 puts it at 2^24.5 records), taken conservatively. The
/// continued layer cannot rekey on its own (it has the keys, not the traffic secrets).
pub const TLS_AES_GCM_RECORDS_MAX: u64 = 1 << 24;

/// Version of the TLS state a connection carries across a planned gateway upgrade
/// ([`crate::gateway::tls_record::TlsCarry`]): a successor that reads another version closes the
/// connection instead of continuing it with keys it might misread.
pub const TLS_CARRY_VERSION: u32 = 1;
