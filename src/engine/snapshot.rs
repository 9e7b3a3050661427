//! Versioned snapshots of the matching engine and the state digest derived from them.
//!
//! Layout: the magic `BTNSNAP\0`, the format version as a little-endian `u16`, then the payload of
//! that version, encoded with bincode 2's standard configuration. Every payload is canonical: books
//! in symbol order, each side best price first and oldest order first within a price, every list
//! of ClOrdIDs or ended orders sorted, so two engines in the same state write the same bytes.
//!
//! # The formats
//!
//! * **v1** ([`v1`]) is one flat model of the state: the books with their resting orders, then one
//!   table of every ClOrdID of the day pointing at an OrderID, then the ended orders. Reading one
//!   book's orders means cross-referencing the whole ClOrdID table.
//! * **v2** ([`v2`]) holds exactly the same information laid out per symbol and per order: each
//!   book is one section with its resting orders, and each order carries every ClOrdID that
//!   addresses it (the latest one and those a replace superseded). What no book owns is in the
//!   day section: ended orders (they are not in a book, and the engine does not keep their
//!   symbol) and the ClOrdIDs of rejected requests, which must stay refused as duplicates all day.
//!   So a reader can rebuild one symbol's book, and answer cancels and replaces of its orders,
//!   from that book's section plus the day section alone, with no table shared by every book to
//!   cross-reference; and the cross-references v1 has to check ("a resting order's ClOrdID is
//!   registered to it") cannot be wrong in v2 by construction. v2 also records the digest of the state it holds. A reader
//!   recomputes it after decoding and converting, so a snapshot that was damaged yet still
//!   decodes to a plausible state (a flipped price or quantity), or a conversion mistake between
//!   formats, is refused before the engine is touched. The time of the last input, which a
//!   restored engine needs so that time never goes backwards, is already in v1 and stays.
//! * **v3** ([`v3`]) is v2 with each resting order's parties (the MiFID II Parties group it
//!   echoes on its reports) beside the order in its book's section, and a recorded digest that
//!   covers them. Ended orders keep no parties: nothing is reported about them any more.
//!
//! # What reads what (DESIGN.md invariant 6)
//!
//! This build reads every version in [`SNAPSHOT_FORMAT_VERSIONS`] whichever one it is configured
//! to write (`MatchingEngine::with_snapshot_format`), each into one in-memory form, [`State`]:
//! the v1 model plus the resting orders' parties. v1 and v2 are two layouts of the same
//! information, so v1 → v2 → v1 (and v2 → v1 → v2) is lossless; v3 adds the parties, so a
//! state round-trips through v3 exactly, and through v1 or v2 exactly when no resting order has
//! parties.
//!
//! A binary built before v2 existed reads only v1, and one built before v3 reads v1 and v2: each
//! refuses a newer snapshot with `UnknownVersion`, unchanged, and never misreads one. That is why
//! the written format is selectable: during an upgrade the new build runs with
//! `--snapshot-format N` (the newest format the old build reads) until the change is closed, so
//! that a rollback to the old binary can restore any snapshot the new one took. Written as v1 or
//! v2, a state loses its parties: the rolled-back engine keeps every order, price, quantity and
//! ClOrdID, and reports its orders without their Parties group, which is all the older build
//! could do anyway. [`write`] logs a warning naming how many orders lost their parties, and the
//! digest of the restored state differs from the writer's (see below), so a shadow comparison
//! shows it too. Once nothing older than this build can be asked to restore, it writes v3.
//!
//! # The digest
//!
//! The digest is the SHA-256 of the state's v1 snapshot, followed by a parties section (a marker
//! and the (OrderID, parties) list in OrderID order) only when some resting order has parties,
//! whatever format the engine writes. Equal states have equal digests however they were reached
//! (applied, restored from any format), and a state without parties has exactly the digest that
//! builds from before v2 and v3 computed (they hashed the v1 snapshot they wrote), so shadow
//! comparison and restore checks also work against an engine running an older binary as long
//! as no order carries parties. A state with parties has no older equivalent: an older build
//! (or a v1/v2 snapshot) cannot hold them, and its digest differs, as it should. If a future
//! format adds other state that v1 cannot express, it adds its own section the same way.
//!
//! # Adding a format
//!
//! Each format version has its payload types in a module of its own, frozen once released: they
//! use primitive fields and FIX wire values rather than the engine's Rust enums, so reordering an
//! enum cannot change a format. A new version adds a module, conversions to and from [`State`]
//! (or a new [`State`] if it adds information), an arm in [`read`] and [`write`], a
//! [`SnapshotFormat`] variant and an entry in [`SNAPSHOT_FORMAT_VERSIONS`].
//!
//! A snapshot is external input: it may be truncated, corrupt or from a build with another
//! configuration. [`read`] and `MatchingEngine::check_state` turn every such case into a
//! [`SnapshotError`] and never panic; only a state that passed every check is loaded.

use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use super::Digest;
use super::book::{NIL, Order, Slab, avg_px};
use super::matching::{Instrument, MatchingEngine, OrderRecord, OrderState};
use super::registry::{Entry, NO_ORDER};
use super::types::{
    ClOrdId, OrdStatus, OrdType, Parties, Party, Price, Qty, Side, Symbol, TimeInForce,
};
use crate::constants::ENGINE_ORDER_QTY_MAX;
use crate::fix::time::Timestamp;

/// Identifies a baton engine snapshot, so that a wrong file is refused before decoding.
const MAGIC: [u8; 8] = *b"BTNSNAP\0";

/// Magic plus the version.
pub(super) const HEADER_LEN: usize = MAGIC.len() + 2;

/// Format versions this build reads, oldest first. Whichever one an engine is configured to
/// write, it reads all of them.
pub const SNAPSHOT_FORMAT_VERSIONS: &[u16] = &[1, 2, 3];

/// The format an engine writes unless configured otherwise: the newest, since it is the only
/// one that keeps the orders' parties; older ones are chosen on purpose, for a rollback.
pub const SNAPSHOT_FORMAT_DEFAULT: u16 = 3;

const _: () = assert!(
    SNAPSHOT_FORMAT_VERSIONS[SNAPSHOT_FORMAT_VERSIONS.len() - 1] == SNAPSHOT_FORMAT_DEFAULT,
    "the default written format is the newest one read"
);

/// `ClOrdIdV1::order_id` of a ClOrdID whose request created or touched no order (OrderIDs are
/// input seqs, which start at 1).
pub(super) const NO_ORDER_ID: u64 = 0;

/// The in-memory form every format converts to and from: the v1 model, which expresses all of
/// the state except parties, plus the parties of the resting orders that have any (see the
/// module docs). Dereferences to the v1 model, which is what most checks read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// Everything but parties.
    pub base: v1::StateV1,
    /// The parties of every resting order that has any, sorted by OrderID (unique), each list
    /// non-empty. Ended orders are not listed: nothing is reported about them any more.
    pub parties: Vec<RestingParties>,
}

/// One resting order's parties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct RestingParties {
    /// The order.
    pub order_id: u64,
    /// Its parties, at least one.
    pub parties: Parties,
}

impl State {
    /// A state without parties: what formats 1 and 2 hold.
    fn without_parties(base: v1::StateV1) -> State {
        State {
            base,
            parties: Vec::new(),
        }
    }

    /// The parties of resting order `order_id`; none if it has none.
    pub(crate) fn parties_of(&self, order_id: u64) -> Parties {
        self.parties
            .binary_search_by_key(&order_id, |entry| entry.order_id)
            .map_or(Parties::NONE, |at| self.parties[at].parties)
    }
}

impl std::ops::Deref for State {
    type Target = v1::StateV1;

    fn deref(&self) -> &v1::StateV1 {
        &self.base
    }
}

impl std::ops::DerefMut for State {
    fn deref_mut(&mut self) -> &mut v1::StateV1 {
        &mut self.base
    }
}

/// A format this build can write; the `u16` on the wire and the command line maps to it, so
/// every place that depends on the format is an exhaustive `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotFormat {
    /// Format version 1, for rollbacks to builds that read nothing newer.
    V1,
    /// Format version 2, per-symbol sections and a recorded digest.
    V2,
    /// Format version 3, v2 with each resting order's parties.
    V3,
}

impl SnapshotFormat {
    /// The format with this version number, if this build knows it.
    pub fn from_version(version: u16) -> Option<SnapshotFormat> {
        match version {
            1 => Some(SnapshotFormat::V1),
            2 => Some(SnapshotFormat::V2),
            3 => Some(SnapshotFormat::V3),
            _ => None,
        }
    }

    /// The version number in the header.
    pub fn version(self) -> u16 {
        match self {
            SnapshotFormat::V1 => 1,
            SnapshotFormat::V2 => 2,
            SnapshotFormat::V3 => 3,
        }
    }

    /// The engine's build version when it writes this format. The link handshake and change
    /// records carry it, so an engine written to be rolled back to shows up as a different build
    /// from one that is not, although both run the same binary. The suffix is semver build
    /// metadata, which version comparisons ignore.
    pub fn build_version(self) -> &'static str {
        match self {
            SnapshotFormat::V1 => {
                concat!(
                    "baton-matching-engine/",
                    env!("CARGO_PKG_VERSION"),
                    "+snap1"
                )
            }
            SnapshotFormat::V2 => {
                concat!(
                    "baton-matching-engine/",
                    env!("CARGO_PKG_VERSION"),
                    "+snap2"
                )
            }
            SnapshotFormat::V3 => {
                concat!(
                    "baton-matching-engine/",
                    env!("CARGO_PKG_VERSION"),
                    "+snap3"
                )
            }
        }
    }
}

/// Why a snapshot was refused. The engine that was asked to restore it is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot magic: not a snapshot at all.
    #[error("not a baton engine snapshot (bad magic)")]
    BadMagic,
    /// A snapshot from a build that writes a format this build does not know.
    #[error(
        "snapshot format version {version} is not supported (this build reads {SNAPSHOT_FORMAT_VERSIONS:?})"
    )]
    UnknownVersion {
        /// The version in the header.
        version: u16,
    },
    /// The bytes end before the snapshot does (a partial copy or a torn write).
    #[error("snapshot is truncated")]
    Truncated,
    /// The payload is not a valid encoding of its version's state.
    #[error("snapshot payload does not decode: {0}")]
    Malformed(#[source] bincode::error::DecodeError),
    /// Bytes follow the payload; a snapshot is exactly one state, so this is corruption.
    #[error("snapshot has {extra} unexpected bytes after its payload")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The payload decodes but describes a state the engine can never be in.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// The decoded state is not the one the writer recorded: the snapshot was damaged in a way
    /// that still decodes, or the writer and this reader disagree about the format.
    #[error("snapshot holds a state with digest {decoded}, but its writer recorded {recorded}")]
    DigestMismatch {
        /// The digest the writer put into the snapshot.
        recorded: Digest,
        /// The digest of what this build decoded.
        decoded: Digest,
    },
    /// The snapshot has orders for an instrument this engine is not configured for.
    #[error(
        "snapshot has orders for symbol {symbol}, which this engine is not configured to trade"
    )]
    UnknownSymbol {
        /// The instrument.
        symbol: Symbol,
    },
    /// The snapshot holds more than this engine's configured capacities.
    #[error("snapshot needs {needed} {what} but this engine is configured for {max}")]
    CapacityExceeded {
        /// Which capacity.
        what: &'static str,
        /// What the snapshot holds.
        needed: u64,
        /// What the configuration allows.
        max: u64,
    },
}

/// Format version 1. Frozen: change nothing here once released; add `v2` instead.
pub(crate) mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::engine::types::{ClOrdId, Symbol};

    /// The whole engine state.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct StateV1 {
        /// Seq of the last applied input; replay resumes after it.
        pub last_input_seq: u64,
        /// Time of the last applied input in ns since the epoch; later inputs may not be earlier.
        pub last_time_ns: u64,
        /// Books with at least one resting order, sorted by symbol (unique).
        pub books: Vec<BookV1>,
        /// Every ClOrdID used today, sorted by (session, ClOrdID) (unique).
        pub cl_ord_ids: Vec<ClOrdIdV1>,
        /// Every order that ended today, sorted by OrderID (unique).
        pub orders_ended: Vec<OrderEndedV1>,
    }

    /// One instrument's resting orders.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BookV1 {
        /// The instrument.
        pub symbol: Symbol,
        /// Buy orders, best (highest) price first, oldest first within a price.
        pub bids: Vec<OrderV1>,
        /// Sell orders, best (lowest) price first, oldest first within a price.
        pub asks: Vec<OrderV1>,
    }

    /// One resting order; its side is the list it is in.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderV1 {
        /// OrderID, 1..=last_input_seq, unique among resting and ended orders.
        pub order_id: u64,
        /// Owning session.
        pub session: u32,
        /// Latest ClOrdID; registered to this order in `cl_ord_ids`.
        pub cl_ord_id: ClOrdId,
        /// OrdType as its FIX character; resting orders are limit orders.
        pub ord_type: u8,
        /// TimeInForce as its FIX character; resting orders are Day orders.
        pub time_in_force: u8,
        /// Resting price in units of 10^-8.
        pub price: i64,
        /// Total quantity, 1..=ENGINE_ORDER_QTY_MAX.
        pub order_qty: u64,
        /// Filled so far, below `order_qty`.
        pub cum_qty: u64,
        /// Sum of fill quantity × fill price (units of 10^-8), from which AvgPx derives.
        pub notional: i128,
    }

    /// One used ClOrdID.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ClOrdIdV1 {
        /// The session that used it.
        pub session: u32,
        /// The id.
        pub cl_ord_id: ClOrdId,
        /// The order the request created or acted on; 0 for a rejected request.
        pub order_id: u64,
    }

    /// One order that is done.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderEndedV1 {
        /// Its OrderID.
        pub order_id: u64,
        /// OrdStatus as its FIX character: Filled or Canceled.
        pub ord_status: u8,
    }
}

/// Format version 2: the v1 information laid out per symbol and per order, plus the state's
/// digest. Frozen: change nothing here once released; add `v3` instead.
pub(crate) mod v2 {
    use serde::{Deserialize, Serialize};

    use crate::engine::types::{ClOrdId, Symbol};

    /// The whole engine state.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct StateV2 {
        /// Seq of the last applied input; replay resumes after it.
        pub last_input_seq: u64,
        /// Time of the last applied input in ns since the epoch; later inputs may not be earlier.
        pub last_time_ns: u64,
        /// One section per book with at least one resting order, sorted by symbol (unique).
        pub books: Vec<BookV2>,
        /// The day section: every order that ended today, sorted by OrderID (unique).
        pub orders_ended: Vec<OrderEndedV2>,
        /// The day section: ClOrdIDs of requests that created or touched no order (rejected
        /// ones), sorted by (session, ClOrdID) (unique); they stay refused as duplicates.
        pub cl_ord_ids_unattached: Vec<ClOrdIdUnattachedV2>,
        /// SHA-256 of this state's v1 snapshot, which is the engine's digest of it; the reader
        /// refuses the snapshot unless what it decoded hashes to this.
        pub digest: [u8; 32],
    }

    /// One book: everything needed to rebuild it and to address its orders.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BookV2 {
        /// The instrument.
        pub symbol: Symbol,
        /// Buy orders, best (highest) price first, oldest first within a price.
        pub bids: Vec<OrderV2>,
        /// Sell orders, best (lowest) price first, oldest first within a price.
        pub asks: Vec<OrderV2>,
    }

    /// One resting order with every ClOrdID that names it; its side is the list it is in.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderV2 {
        /// OrderID, 1..=last_input_seq, unique among resting and ended orders.
        pub order_id: u64,
        /// Owning session; every ClOrdID below is this session's.
        pub session: u32,
        /// Latest ClOrdID, the only one a cancel or replace may name.
        pub cl_ord_id: ClOrdId,
        /// The order's other ClOrdIDs (of its NewOrderSingle and of replaces superseded since),
        /// sorted, unique, without `cl_ord_id`. Kept so they stay refused as duplicates and a
        /// cancel naming one is told it is not the latest.
        pub cl_ord_ids_earlier: Vec<ClOrdId>,
        /// OrdType as its FIX character; resting orders are limit orders.
        pub ord_type: u8,
        /// TimeInForce as its FIX character; resting orders are Day orders.
        pub time_in_force: u8,
        /// Resting price in units of 10^-8.
        pub price: i64,
        /// Total quantity, 1..=ENGINE_ORDER_QTY_MAX.
        pub order_qty: u64,
        /// Filled so far, below `order_qty`.
        pub cum_qty: u64,
        /// Sum of fill quantity × fill price (units of 10^-8), from which AvgPx derives.
        pub notional: i128,
    }

    /// One order that is done, with every ClOrdID that names it.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderEndedV2 {
        /// Its OrderID.
        pub order_id: u64,
        /// The session that owned it; every ClOrdID below is this session's.
        pub session: u32,
        /// OrdStatus as its FIX character: Filled or Canceled.
        pub ord_status: u8,
        /// Every ClOrdID that named the order, sorted and unique, at least one; a cancel naming
        /// one is answered TooLateToCancel with `ord_status`.
        pub cl_ord_ids: Vec<ClOrdId>,
    }

    /// The ClOrdID of a request that created or touched no order.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ClOrdIdUnattachedV2 {
        /// The session that used it.
        pub session: u32,
        /// The id.
        pub cl_ord_id: ClOrdId,
    }
}

/// Format version 3: v2 with each resting order's parties beside it, and the digest of the
/// whole state, parties included. Frozen: change nothing here once released; add `v4` instead.
pub(crate) mod v3 {
    use serde::{Deserialize, Serialize};

    use super::v2::{ClOrdIdUnattachedV2, OrderEndedV2, OrderV2};
    use crate::engine::types::{PartyId, Symbol};

    /// The whole engine state.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct StateV3 {
        /// Seq of the last applied input; replay resumes after it.
        pub last_input_seq: u64,
        /// Time of the last applied input in ns since the epoch; later inputs may not be earlier.
        pub last_time_ns: u64,
        /// One section per book with at least one resting order, sorted by symbol (unique).
        pub books: Vec<BookV3>,
        /// The day section, as in v2: every order that ended today, sorted by OrderID (unique).
        pub orders_ended: Vec<OrderEndedV2>,
        /// The day section, as in v2: ClOrdIDs of requests that created or touched no order.
        pub cl_ord_ids_unattached: Vec<ClOrdIdUnattachedV2>,
        /// The engine's digest of this state, parties included; the reader refuses the snapshot
        /// unless what it decoded hashes to this.
        pub digest: [u8; 32],
    }

    /// One book, as in v2 with parties on each order.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BookV3 {
        /// The instrument.
        pub symbol: Symbol,
        /// Buy orders, best (highest) price first, oldest first within a price.
        pub bids: Vec<OrderV3>,
        /// Sell orders, best (lowest) price first, oldest first within a price.
        pub asks: Vec<OrderV3>,
    }

    /// One resting order: its v2 record and its parties.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderV3 {
        /// Everything v2 records about the order.
        pub order: OrderV2,
        /// Its parties in the order the counterparty sent them; empty when it has none, at most
        /// `PARTIES_MAX`.
        pub parties: Vec<PartyV3>,
    }

    /// One party of an order, in FIX wire values.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PartyV3 {
        /// PartyID (448).
        pub id: PartyId,
        /// PartyIDSource (447) as its FIX character.
        pub source: u8,
        /// PartyRole (452).
        pub role: u16,
        /// PartyRoleQualifier (2376), if the party had one.
        pub role_qualifier: Option<u16>,
    }
}

/// bincode settings of every format version: varint integers, no size limit beyond the input
/// itself (decoding borrows from the slice, and serde caps what a claimed length preallocates).
pub(super) fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Appends the snapshot of `state` in `format` to `out`.
///
/// Formats 1 and 2 cannot hold parties: written from a state with parties they drop them (an
/// engine that restores such a snapshot echoes no parties on its orders' reports, and its
/// digest differs from the writer's), and a warning says so. They are written only for a
/// rollback to a build that reads nothing newer, which would not keep parties anyway.
pub(crate) fn write(format: SnapshotFormat, state: &State, out: &mut Vec<u8>) {
    if !state.parties.is_empty() && format != SnapshotFormat::V3 {
        tracing::warn!(
            format = format.version(),
            orders = state.parties.len(),
            "snapshot format {} cannot hold parties: the parties of {} resting orders are not in this snapshot, and an engine restored from it reports those orders without them",
            format.version(),
            state.parties.len()
        );
    }
    match format {
        SnapshotFormat::V1 => encode(format, &state.base, out),
        SnapshotFormat::V2 => {
            let base = State::without_parties(state.base.clone());
            encode(format, &v2_from_state(&base, digest(&base)), out)
        }
        SnapshotFormat::V3 => encode(format, &v3_from_state(state, digest(state)), out),
    }
}

/// Appends the header of `format` and the encoded `payload` to `out`.
fn encode<T: Serialize>(format: SnapshotFormat, payload: &T, out: &mut impl Write) {
    out.write_all(&MAGIC)
        .and_then(|()| out.write_all(&format.version().to_le_bytes()))
        .expect("writing into a Vec or a hasher cannot fail");
    bincode::serde::encode_into_std_write(payload, out, bincode_config())
        .expect("encoding plain data into a Vec or a hasher cannot fail");
}

/// Marks the parties section of the digested bytes. The v1 snapshot before it ends where its
/// encoding says, so nothing else can be read as this section.
const DIGEST_PARTIES_SECTION: &[u8] = b"PARTIES\0";

/// The digest of `state`: SHA-256 of its v1 snapshot, followed, only when some resting order has
/// parties, by [`DIGEST_PARTIES_SECTION`] and the list of (OrderID, parties) in OrderID order.
/// So a state without parties has exactly the digest builds before parties computed, and a
/// change of any party of any resting order changes it. Computed without materializing the
/// bytes, whatever format the engine writes (see the module docs for why).
pub(crate) fn digest(state: &State) -> Digest {
    let mut hasher = HashWriter(Sha256::new());
    encode(SnapshotFormat::V1, &state.base, &mut hasher);
    if !state.parties.is_empty() {
        hasher.0.update(DIGEST_PARTIES_SECTION);
        bincode::serde::encode_into_std_write(&state.parties, &mut hasher, bincode_config())
            .expect("encoding plain data into a hasher cannot fail");
    }
    Digest(hasher.0.finalize().into())
}

/// Feeds bincode's output straight into the hash.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes a snapshot of any supported version into the in-memory form. Checks the encoding,
/// and for v2 the layout and the recorded digest; whether the state makes sense is
/// `MatchingEngine::check_state`'s job.
pub(crate) fn read(bytes: &[u8]) -> Result<State, SnapshotError> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(SnapshotError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated);
    }
    let version = u16::from_le_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
    let payload = &bytes[HEADER_LEN..];
    match SnapshotFormat::from_version(version) {
        Some(SnapshotFormat::V1) => decode::<v1::StateV1>(payload).map(State::without_parties),
        Some(SnapshotFormat::V2) => {
            let stored = decode::<v2::StateV2>(payload)?;
            let recorded = Digest(stored.digest);
            let state = state_from_v2(stored)?;
            check_digest(&state, recorded)?;
            Ok(state)
        }
        Some(SnapshotFormat::V3) => {
            let stored = decode::<v3::StateV3>(payload)?;
            let recorded = Digest(stored.digest);
            let state = state_from_v3(stored)?;
            check_digest(&state, recorded)?;
            Ok(state)
        }
        None => Err(SnapshotError::UnknownVersion { version }),
    }
}

/// Refuses a decoded state whose digest is not the one its writer recorded.
fn check_digest(state: &State, recorded: Digest) -> Result<(), SnapshotError> {
    let decoded = digest(state);
    if decoded != recorded {
        return Err(SnapshotError::DigestMismatch { recorded, decoded });
    }
    Ok(())
}

/// Lays `state` out as v3: the v2 layout with each resting order's parties beside it.
pub(crate) fn v3_from_state(state: &State, digest: Digest) -> v3::StateV3 {
    let layout = v2_from_state(state, digest);
    let order = |order: v2::OrderV2| v3::OrderV3 {
        parties: parties_to_wire(&state.parties_of(order.order_id)),
        order,
    };
    v3::StateV3 {
        last_input_seq: layout.last_input_seq,
        last_time_ns: layout.last_time_ns,
        books: layout
            .books
            .into_iter()
            .map(|book| v3::BookV3 {
                symbol: book.symbol,
                bids: book.bids.into_iter().map(order).collect(),
                asks: book.asks.into_iter().map(order).collect(),
            })
            .collect(),
        orders_ended: layout.orders_ended,
        cl_ord_ids_unattached: layout.cl_ord_ids_unattached,
        digest: layout.digest,
    }
}

/// One order's parties as v3 (and a transfer section) writes them.
pub(super) fn parties_to_wire(parties: &Parties) -> Vec<v3::PartyV3> {
    parties
        .as_slice()
        .iter()
        .map(|party| v3::PartyV3 {
            id: party.id,
            source: party.source,
            role: party.role,
            role_qualifier: party.role_qualifier,
        })
        .collect()
}

/// One order's parties read back from [`parties_to_wire`]'s form, refusing what no engine
/// holds (a source that is not a printable character, more than `PARTIES_MAX`).
pub(super) fn parties_from_wire(wire: Vec<v3::PartyV3>) -> Result<Parties, SnapshotError> {
    let mut list = Parties::NONE;
    for party in wire {
        let party = Party::try_from_wire(party.id, party.source, party.role, party.role_qualifier)
            .ok_or(SnapshotError::Inconsistent(
                "a party's PartyIDSource is not a printable character",
            ))?;
        list.push(party).map_err(|_| {
            SnapshotError::Inconsistent("a resting order has more parties than allowed")
        })?;
    }
    Ok(list)
}

/// Converts a decoded v3 payload into the in-memory form: the v2 conversion for everything but
/// parties, and each order's parties checked (a valid source character, at most
/// `PARTIES_MAX`). Whether each party list belongs to a resting order is by construction.
pub(crate) fn state_from_v3(stored: v3::StateV3) -> Result<State, SnapshotError> {
    let mut parties = Vec::new();
    let mut split = |orders: Vec<v3::OrderV3>| -> Result<Vec<v2::OrderV2>, SnapshotError> {
        let mut layout = Vec::with_capacity(orders.len());
        for order in orders {
            if !order.parties.is_empty() {
                parties.push(RestingParties {
                    order_id: order.order.order_id,
                    parties: parties_from_wire(order.parties)?,
                });
            }
            layout.push(order.order);
        }
        Ok(layout)
    };
    let mut books = Vec::with_capacity(stored.books.len());
    for book in stored.books {
        books.push(v2::BookV2 {
            symbol: book.symbol,
            bids: split(book.bids)?,
            asks: split(book.asks)?,
        });
    }
    let mut state = state_from_v2(v2::StateV2 {
        last_input_seq: stored.last_input_seq,
        last_time_ns: stored.last_time_ns,
        books,
        orders_ended: stored.orders_ended,
        cl_ord_ids_unattached: stored.cl_ord_ids_unattached,
        digest: stored.digest,
    })?;
    parties.sort_unstable_by_key(|entry| entry.order_id);
    // An OrderID resting twice would list its parties twice; `check_state` refuses it too.
    if parties
        .windows(2)
        .any(|pair| pair[0].order_id == pair[1].order_id)
    {
        return Err(SnapshotError::Inconsistent("an OrderID rests twice"));
    }
    state.parties = parties;
    Ok(state)
}

/// Lays `state` out as v2. `state` is the engine's own, so every order is named by ClOrdIDs of
/// its owner only (`MatchingEngine::check_state` refuses snapshots where it is not, and `apply`
/// only registers a session's ClOrdIDs to that session's orders).
pub(crate) fn v2_from_state(state: &State, digest: Digest) -> v2::StateV2 {
    // The ClOrdIDs that name an order, grouped by OrderID and sorted within an order.
    let mut named: Vec<(u64, ClOrdId, u32)> = state
        .cl_ord_ids
        .iter()
        .filter(|entry| entry.order_id != NO_ORDER_ID)
        .map(|entry| (entry.order_id, entry.cl_ord_id, entry.session))
        .collect();
    named.sort_unstable_by_key(|&(order_id, cl_ord_id, _)| (order_id, cl_ord_id));
    let names_of = |order_id: u64, session: u32| {
        let from = named.partition_point(|name| name.0 < order_id);
        let to = named.partition_point(|name| name.0 <= order_id);
        let names = &named[from..to];
        assert!(
            names.iter().all(|name| name.2 == session),
            "order {order_id} is named by another session's ClOrdID"
        );
        names.iter().map(|name| name.1)
    };
    let order = |order: &v1::OrderV1| v2::OrderV2 {
        order_id: order.order_id,
        session: order.session,
        cl_ord_id: order.cl_ord_id,
        cl_ord_ids_earlier: names_of(order.order_id, order.session)
            .filter(|&cl_ord_id| cl_ord_id != order.cl_ord_id)
            .collect(),
        ord_type: order.ord_type,
        time_in_force: order.time_in_force,
        price: order.price,
        order_qty: order.order_qty,
        cum_qty: order.cum_qty,
        notional: order.notional,
    };
    let books = state
        .books
        .iter()
        .map(|book| v2::BookV2 {
            symbol: book.symbol,
            bids: book.bids.iter().map(order).collect(),
            asks: book.asks.iter().map(order).collect(),
        })
        .collect();
    let orders_ended = state
        .orders_ended
        .iter()
        .map(|ended| {
            let from = named.partition_point(|name| name.0 < ended.order_id);
            let session = named
                .get(from)
                .filter(|name| name.0 == ended.order_id)
                .expect("every order is named by a ClOrdID")
                .2;
            v2::OrderEndedV2 {
                order_id: ended.order_id,
                session,
                ord_status: ended.ord_status,
                cl_ord_ids: names_of(ended.order_id, session).collect(),
            }
        })
        .collect();
    let cl_ord_ids_unattached = state
        .cl_ord_ids
        .iter()
        .filter(|entry| entry.order_id == NO_ORDER_ID)
        .map(|entry| v2::ClOrdIdUnattachedV2 {
            session: entry.session,
            cl_ord_id: entry.cl_ord_id,
        })
        .collect();
    v2::StateV2 {
        last_input_seq: state.last_input_seq,
        last_time_ns: state.last_time_ns,
        books,
        orders_ended,
        cl_ord_ids_unattached,
        digest: digest.0,
    }
}

/// Converts a decoded v2 payload into the in-memory form, refusing what a v2 writer never
/// produces but the v1 model could not tell apart (lists out of order, a ClOrdID listed twice
/// for one order, an ended order nobody named), so each state has exactly one v2 encoding. The
/// rest is checked on the result by `MatchingEngine::check_state`.
pub(crate) fn state_from_v2(stored: v2::StateV2) -> Result<State, SnapshotError> {
    let mut cl_ord_ids: Vec<v1::ClOrdIdV1> = Vec::with_capacity(
        stored.cl_ord_ids_unattached.len()
            + stored
                .orders_ended
                .iter()
                .map(|ended| ended.cl_ord_ids.len())
                .sum::<usize>(),
    );
    let mut books = Vec::with_capacity(stored.books.len());
    for book in stored.books {
        let mut sides = [Vec::new(), Vec::new()];
        for (side, orders) in sides.iter_mut().zip([book.bids, book.asks]) {
            side.reserve_exact(orders.len());
            for order in orders {
                if !order.cl_ord_ids_earlier.is_sorted_by(|a, b| a < b) {
                    return Err(SnapshotError::Inconsistent(
                        "a resting order's earlier ClOrdIDs are not sorted and unique",
                    ));
                }
                if order.cl_ord_ids_earlier.contains(&order.cl_ord_id) {
                    return Err(SnapshotError::Inconsistent(
                        "a resting order's latest ClOrdID is also listed as an earlier one",
                    ));
                }
                for cl_ord_id in std::iter::once(order.cl_ord_id).chain(order.cl_ord_ids_earlier) {
                    cl_ord_ids.push(v1::ClOrdIdV1 {
                        session: order.session,
                        cl_ord_id,
                        order_id: order.order_id,
                    });
                }
                side.push(v1::OrderV1 {
                    order_id: order.order_id,
                    session: order.session,
                    cl_ord_id: order.cl_ord_id,
                    ord_type: order.ord_type,
                    time_in_force: order.time_in_force,
                    price: order.price,
                    order_qty: order.order_qty,
                    cum_qty: order.cum_qty,
                    notional: order.notional,
                });
            }
        }
        let [bids, asks] = sides;
        books.push(v1::BookV1 {
            symbol: book.symbol,
            bids,
            asks,
        });
    }
    let mut orders_ended = Vec::with_capacity(stored.orders_ended.len());
    for ended in stored.orders_ended {
        if ended.cl_ord_ids.is_empty() {
            return Err(SnapshotError::Inconsistent(
                "an ended order is not named by any ClOrdID",
            ));
        }
        if !ended.cl_ord_ids.is_sorted_by(|a, b| a < b) {
            return Err(SnapshotError::Inconsistent(
                "an ended order's ClOrdIDs are not sorted and unique",
            ));
        }
        cl_ord_ids.extend(ended.cl_ord_ids.into_iter().map(|cl_ord_id| v1::ClOrdIdV1 {
            session: ended.session,
            cl_ord_id,
            order_id: ended.order_id,
        }));
        orders_ended.push(v1::OrderEndedV1 {
            order_id: ended.order_id,
            ord_status: ended.ord_status,
        });
    }
    if !stored
        .cl_ord_ids_unattached
        .is_sorted_by(|a, b| (a.session, a.cl_ord_id) < (b.session, b.cl_ord_id))
    {
        return Err(SnapshotError::Inconsistent(
            "unattached ClOrdIDs are not sorted and unique",
        ));
    }
    cl_ord_ids.extend(
        stored
            .cl_ord_ids_unattached
            .into_iter()
            .map(|entry| v1::ClOrdIdV1 {
                session: entry.session,
                cl_ord_id: entry.cl_ord_id,
                order_id: NO_ORDER_ID,
            }),
    );
    // A ClOrdID listed in two places stays as two equal keys, which `check_state` refuses.
    cl_ord_ids.sort_unstable_by_key(|entry| (entry.session, entry.cl_ord_id));
    Ok(State::without_parties(v1::StateV1 {
        last_input_seq: stored.last_input_seq,
        last_time_ns: stored.last_time_ns,
        books,
        cl_ord_ids,
        orders_ended,
    }))
}

/// Decodes exactly one `T` from `payload`.
pub(super) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, SnapshotError> {
    match bincode::serde::decode_from_slice::<T, _>(payload, bincode_config()) {
        Ok((state, used)) if used == payload.len() => Ok(state),
        Ok((_, used)) => Err(SnapshotError::TrailingBytes {
            extra: payload.len() - used,
        }),
        Err(bincode::error::DecodeError::UnexpectedEnd { .. }) => Err(SnapshotError::Truncated),
        Err(error) => Err(SnapshotError::Malformed(error)),
    }
}

/// Shorthand for the many consistency checks.
fn inconsistent(what: &'static str) -> Result<(), SnapshotError> {
    Err(SnapshotError::Inconsistent(what))
}

impl MatchingEngine {
    /// The canonical form of the current state (see the module documentation for the order).
    pub(crate) fn canonical_state(&self) -> State {
        canonical_state(&StateParts {
            instruments: &self.instruments,
            slab: &self.slab,
            cl_ord_ids: self.cl_ord_ids.entries(),
            orders: &self.orders,
            last_input_seq: self.last_input_seq,
            last_time: self.last_time,
        })
    }

    /// A copy of what the snapshot and the digest read, taken between two inputs. Only the
    /// arrays are copied (the ClOrdID probe table, sized for the day's capacity, is left out: a
    /// snapshot lists the entries, not the table), which costs a fraction of building the
    /// canonical state, hashing and encoding it; those then run on the copy.
    pub(crate) fn frozen(&self) -> FrozenMatchingState {
        FrozenMatchingState {
            instruments: self.instruments.clone(),
            slab: self.slab.clone(),
            cl_ord_ids: self.cl_ord_ids.entries().to_vec(),
            orders: self.orders.clone(),
            last_input_seq: self.last_input_seq,
            last_time: self.last_time,
            format: self.snapshot_format,
        }
    }
}

/// The parts of a matching engine's state a snapshot reads, borrowed from the engine itself or
/// from a frozen copy of it, so both produce the canonical state the same way.
struct StateParts<'a> {
    /// Instruments and their books.
    instruments: &'a [Instrument],
    /// The resting orders the books link.
    slab: &'a Slab,
    /// The ClOrdID registry's entries, in arrival order.
    cl_ord_ids: &'a [Entry],
    /// Every order of the day.
    orders: &'a [OrderRecord],
    /// Seq of the last applied input.
    last_input_seq: u64,
    /// Time of the last applied input.
    last_time: Timestamp,
}

/// A matching engine's state as it was between two inputs, owned, so another thread can write
/// its snapshot and digest while the engine goes on applying inputs; see
/// [`crate::engine::FrozenState`].
pub(crate) struct FrozenMatchingState {
    /// Instruments and their books.
    instruments: Vec<Instrument>,
    /// The resting orders the books link.
    slab: Slab,
    /// The ClOrdID registry's entries, in arrival order.
    cl_ord_ids: Vec<Entry>,
    /// Every order of the day.
    orders: Vec<OrderRecord>,
    /// Seq of the last applied input.
    last_input_seq: u64,
    /// Time of the last applied input.
    last_time: Timestamp,
    /// The format the engine writes.
    format: SnapshotFormat,
}

impl FrozenMatchingState {
    /// The canonical form of the frozen state.
    fn canonical_state(&self) -> State {
        canonical_state(&StateParts {
            instruments: &self.instruments,
            slab: &self.slab,
            cl_ord_ids: &self.cl_ord_ids,
            orders: &self.orders,
            last_input_seq: self.last_input_seq,
            last_time: self.last_time,
        })
    }
}

impl super::FrozenState for FrozenMatchingState {
    fn last_input_seq(&self) -> u64 {
        self.last_input_seq
    }

    fn snapshot_and_digest(&self, out: &mut Vec<u8>) -> Digest {
        let state = self.canonical_state();
        write(self.format, &state, out);
        digest(&state)
    }
}

/// The canonical form of the state in `parts` (see the module documentation for the order).
fn canonical_state(parts: &StateParts<'_>) -> State {
    let resting = |order: &Order| v1::OrderV1 {
        order_id: order.order_id,
        session: order.session,
        cl_ord_id: order.cl_ord_id,
        ord_type: order.ord_type.fix_value(),
        time_in_force: order.time_in_force.fix_value(),
        price: order.price.expect("resting orders have a price").0,
        order_qty: order.order_qty.0,
        cum_qty: order.cum_qty.0,
        notional: order.notional,
    };
    let mut books = Vec::new();
    let mut parties = Vec::new();
    for instrument in parts.instruments {
        for side in [&instrument.book.bids, &instrument.book.asks] {
            parties.extend(side.iter(parts.slab).filter_map(|order| {
                (!order.parties.is_empty()).then_some(RestingParties {
                    order_id: order.order_id,
                    parties: order.parties,
                })
            }));
        }
        let bids: Vec<_> = instrument.book.bids.iter(parts.slab).map(resting).collect();
        let asks: Vec<_> = instrument.book.asks.iter(parts.slab).map(resting).collect();
        if !bids.is_empty() || !asks.is_empty() {
            books.push(v1::BookV1 {
                symbol: instrument.spec.symbol,
                bids,
                asks,
            });
        }
    }
    let mut cl_ord_ids: Vec<_> = parts
        .cl_ord_ids
        .iter()
        .map(|entry| v1::ClOrdIdV1 {
            session: entry.session,
            cl_ord_id: entry.cl_ord_id,
            order_id: match entry.order {
                NO_ORDER => NO_ORDER_ID,
                index => parts.orders[index as usize].order_id,
            },
        })
        .collect();
    // Keys are unique, so an unstable sort is still a total, deterministic order.
    cl_ord_ids.sort_unstable_by_key(|entry| (entry.session, entry.cl_ord_id));
    let orders_ended: Vec<_> = parts
        .orders
        .iter()
        .filter_map(|record| match record.state {
            OrderState::Ended(status) => Some(v1::OrderEndedV1 {
                order_id: record.order_id,
                ord_status: status.fix_value(),
            }),
            OrderState::Live(_) => None,
        })
        .collect();
    // `orders` is in OrderID order, so this is already sorted.
    debug_assert!(orders_ended.is_sorted_by_key(|ended| ended.order_id));
    // OrderIDs are unique, so an unstable sort is deterministic.
    parties.sort_unstable_by_key(|entry| entry.order_id);
    State {
        base: v1::StateV1 {
            last_input_seq: parts.last_input_seq,
            last_time_ns: parts.last_time.0,
            books,
            cl_ord_ids,
            orders_ended,
        },
        parties,
    }
}

impl MatchingEngine {
    /// Refuses any state this engine could not have reached or cannot hold, so that loading
    /// cannot trip an internal assertion and the loaded engine behaves like the one that wrote
    /// the snapshot. Tick and lot sizes are deliberately not re-checked: a new configuration may
    /// change them, and orders accepted under the old one stay valid.
    pub(crate) fn check_state(&self, state: &State) -> Result<(), SnapshotError> {
        let mut live_ids: Vec<u64> = Vec::new();
        let mut previous_symbol: Option<Symbol> = None;
        for book in &state.books {
            if previous_symbol.is_some_and(|previous| previous >= book.symbol) {
                return inconsistent("books are not sorted by symbol");
            }
            previous_symbol = Some(book.symbol);
            if self.instrument_index(book.symbol).is_none() {
                return Err(SnapshotError::UnknownSymbol {
                    symbol: book.symbol,
                });
            }
            if book.bids.is_empty() && book.asks.is_empty() {
                return inconsistent("a book without orders is listed");
            }
            for (side, orders) in [(Side::Buy, &book.bids), (Side::Sell, &book.asks)] {
                let mut levels: u64 = 0;
                let mut previous_price: Option<i64> = None;
                for order in orders {
                    check_resting(order, state.last_input_seq)?;
                    match previous_price {
                        Some(previous) if previous == order.price => {}
                        Some(previous)
                            if (side == Side::Buy && order.price > previous)
                                || (side == Side::Sell && order.price < previous) =>
                        {
                            return inconsistent("a book side is not in price priority order");
                        }
                        _ => levels += 1,
                    }
                    previous_price = Some(order.price);
                    live_ids.push(order.order_id);
                }
                if levels > u64::from(self.levels_max) {
                    return Err(SnapshotError::CapacityExceeded {
                        what: "price levels on one side of a book",
                        needed: levels,
                        max: u64::from(self.levels_max),
                    });
                }
            }
            if let (Some(bid), Some(ask)) = (book.bids.first(), book.asks.first())
                && bid.price >= ask.price
            {
                return inconsistent("a book is crossed");
            }
        }
        for (what, needed, max) in [
            ("open orders", live_ids.len(), self.slab.capacity()),
            (
                "ClOrdIDs",
                state.cl_ord_ids.len(),
                self.cl_ord_ids.capacity(),
            ),
            (
                "orders of the session day",
                live_ids.len() + state.orders_ended.len(),
                self.cl_ord_ids.capacity(),
            ),
        ] {
            if needed > max as usize {
                return Err(SnapshotError::CapacityExceeded {
                    what,
                    needed: needed as u64,
                    max: u64::from(max),
                });
            }
        }
        if state.cl_ord_ids.windows(2).any(|pair| {
            (pair[0].session, pair[0].cl_ord_id) >= (pair[1].session, pair[1].cl_ord_id)
        }) {
            return inconsistent("ClOrdIDs are not sorted and unique");
        }
        if state
            .orders_ended
            .windows(2)
            .any(|pair| pair[0].order_id >= pair[1].order_id)
        {
            return inconsistent("ended orders are not sorted and unique");
        }
        for ended in &state.orders_ended {
            if ended.order_id == 0 || ended.order_id > state.last_input_seq {
                return inconsistent("an ended order's OrderID is zero or after the last input");
            }
            if !matches!(
                OrdStatus::from_fix(ended.ord_status),
                Some(OrdStatus::Filled | OrdStatus::Canceled)
            ) {
                return inconsistent("an ended order's status is neither filled nor canceled");
            }
        }
        live_ids.sort_unstable();
        if live_ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return inconsistent("an OrderID rests twice");
        }
        let is_ended = |order_id: u64| {
            state
                .orders_ended
                .binary_search_by_key(&order_id, |ended| ended.order_id)
                .is_ok()
        };
        if live_ids.iter().any(|&order_id| is_ended(order_id)) {
            return inconsistent("an order is both resting and ended");
        }
        if !state
            .parties
            .windows(2)
            .all(|pair| pair[0].order_id < pair[1].order_id)
        {
            return inconsistent("parties are not sorted by OrderID and unique");
        }
        if state.parties.iter().any(|entry| {
            entry.parties.is_empty() || live_ids.binary_search(&entry.order_id).is_err()
        }) {
            return inconsistent("parties are listed for an order that does not rest");
        }
        for order in state
            .books
            .iter()
            .flat_map(|book| book.bids.iter().chain(&book.asks))
        {
            let registered = state
                .cl_ord_ids
                .binary_search_by(|entry| {
                    (entry.session, entry.cl_ord_id).cmp(&(order.session, order.cl_ord_id))
                })
                .map(|at| state.cl_ord_ids[at].order_id);
            if registered != Ok(order.order_id) {
                return inconsistent("a resting order's ClOrdID is not registered to it");
            }
        }
        // (OrderID, session) of every ClOrdID that names an order.
        let mut named: Vec<(u64, u32)> = Vec::with_capacity(state.cl_ord_ids.len());
        for entry in &state.cl_ord_ids {
            if entry.order_id == NO_ORDER_ID {
                continue;
            }
            if live_ids.binary_search(&entry.order_id).is_err() && !is_ended(entry.order_id) {
                return inconsistent("a ClOrdID names an order that does not exist");
            }
            named.push((entry.order_id, entry.session));
        }
        named.sort_unstable();
        // A session can only name its own orders (ClOrdIDs are looked up per session), and the
        // v2 layout files each ClOrdID under its order's owner, so anything else is refused.
        // A resting order's latest ClOrdID is its owner's (checked above), so this also ties
        // the other ClOrdIDs of a resting order to its owner.
        if named
            .windows(2)
            .any(|pair| pair[0].0 == pair[1].0 && pair[0].1 != pair[1].1)
        {
            return inconsistent("an order is named by ClOrdIDs of two sessions");
        }
        named.dedup_by_key(|name| name.0);
        // Every order was created under a ClOrdID, so the day's orders never outnumber its
        // ClOrdIDs and the order list cannot outgrow its reserved capacity.
        if named.len() != live_ids.len() + state.orders_ended.len() {
            return inconsistent("an order is not named by any ClOrdID");
        }
        if state.last_input_seq == 0 && !(state.cl_ord_ids.is_empty() && state.books.is_empty()) {
            return inconsistent("orders exist before the first input");
        }
        Ok(())
    }

    /// Replaces the state by `state`, which [`MatchingEngine::check_state`] accepted.
    pub(crate) fn load_state(&mut self, state: State) {
        self.slab.clear();
        for instrument in &mut self.instruments {
            instrument.book.bids.levels.clear();
            instrument.book.asks.levels.clear();
        }
        self.cl_ord_ids.clear();
        self.orders.clear();

        // The day's orders in OrderID order, as `apply` would have appended them. Live ones get
        // their slab slot below.
        let mut order_ids: Vec<u64> = state
            .books
            .iter()
            .flat_map(|book| book.bids.iter().chain(&book.asks))
            .map(|order| order.order_id)
            .chain(state.orders_ended.iter().map(|ended| ended.order_id))
            .collect();
        order_ids.sort_unstable();
        for &order_id in &order_ids {
            let state = match state
                .orders_ended
                .binary_search_by_key(&order_id, |ended| ended.order_id)
            {
                Ok(at) => OrderState::Ended(
                    OrdStatus::from_fix(state.orders_ended[at].ord_status)
                        .expect("checked: filled or canceled"),
                ),
                Err(_) => OrderState::Live(NIL),
            };
            self.orders.push(OrderRecord { order_id, state });
        }
        let order_index = |order_id: u64| -> u32 {
            order_ids
                .binary_search(&order_id)
                .expect("checked: every referenced order exists") as u32
        };

        for book in &state.books {
            let instrument = self
                .instrument_index(book.symbol)
                .expect("checked: symbol is configured");
            for (side, orders) in [(Side::Buy, &book.bids), (Side::Sell, &book.asks)] {
                // Worst price first, so that each new level lands at the end of the sorted level
                // vector instead of shifting it; within a price, oldest first.
                let runs: Vec<&[v1::OrderV1]> =
                    orders.chunk_by(|a, b| a.price == b.price).collect();
                for run in runs.into_iter().rev() {
                    for resting in run {
                        let order = Order {
                            order_id: resting.order_id,
                            order_index: order_index(resting.order_id),
                            session: resting.session,
                            cl_ord_id: resting.cl_ord_id,
                            instrument: instrument as u32,
                            side,
                            ord_type: OrdType::from_fix(resting.ord_type).expect("checked: limit"),
                            time_in_force: TimeInForce::from_fix(resting.time_in_force)
                                .expect("checked: day"),
                            price: Some(Price(resting.price)),
                            order_qty: Qty(resting.order_qty),
                            cum_qty: Qty(resting.cum_qty),
                            notional: resting.notional,
                            prev: NIL,
                            next: NIL,
                            parties: state.parties_of(resting.order_id),
                        };
                        let slot = self.slab.insert(order);
                        self.instruments[instrument]
                            .book
                            .side_mut(side)
                            .push_back(&mut self.slab, slot);
                        self.orders[order.order_index as usize].state = OrderState::Live(slot);
                    }
                }
            }
        }
        for entry in &state.cl_ord_ids {
            let order = match entry.order_id {
                NO_ORDER_ID => NO_ORDER,
                order_id => order_index(order_id),
            };
            self.cl_ord_ids
                .insert(entry.session, entry.cl_ord_id, order);
        }
        self.last_input_seq = state.last_input_seq;
        self.last_time = Timestamp(state.last_time_ns);
    }
}

/// Checks one resting order on its own.
fn check_resting(order: &v1::OrderV1, last_input_seq: u64) -> Result<(), SnapshotError> {
    if order.order_id == 0 || order.order_id > last_input_seq {
        return inconsistent("a resting order's OrderID is zero or after the last input");
    }
    if OrdType::from_fix(order.ord_type) != Some(OrdType::Limit)
        || TimeInForce::from_fix(order.time_in_force) != Some(TimeInForce::Day)
    {
        return inconsistent("a resting order is not a Day limit order");
    }
    if order.order_qty == 0
        || order.order_qty > ENGINE_ORDER_QTY_MAX
        || order.cum_qty >= order.order_qty
    {
        return inconsistent("a resting order's quantities are impossible");
    }
    if avg_px(order.notional, Qty(order.cum_qty)).is_none() {
        return inconsistent("a resting order's fill notional is impossible");
    }
    Ok(())
}
