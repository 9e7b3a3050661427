//! Taking another engine's state for some symbols: the [`Request::Transfer`](super::Request)
//! input a canary's rollback sequences (see [`StateTransfer`]).
//!
//! What travels is a transfer section, not the donor's whole snapshot: the gateway cuts it from
//! the canary engine's snapshot once ([`transfer_section`]), checking that snapshot's format and
//! recorded digest there, and keeps the named books (resting orders with every ClOrdID that
//! addresses them and their parties) and the day section (ended orders and the ClOrdIDs of
//! rejected requests, which no format attributes to a symbol). The other symbols' books, which
//! every receiver already holds, stay out, so journaling, hashing and decoding the transfer
//! follow the canary's symbols' orders rather than the venue's. Journals written before
//! sections existed name a whole snapshot; a receiver still takes those.
//!
//! The receiving engine builds one state from two: its own books for every symbol not named,
//! with their resting orders, parties and ClOrdIDs; and from the donor the named books and the
//! day section. The result passes the same checks as a restored snapshot before it replaces
//! anything, so a transfer that does not fit (the donor disagrees about another symbol's
//! orders) leaves the engine as it was.
//!
//! Applying a transfer is deterministic: every engine that applies it at the same seq from the
//! same state ends in the same state, which is how `baton journal replay` reproduces it.

use serde::{Deserialize, Serialize};

use super::matching::MatchingEngine;
use super::snapshot::{self, RestingParties, SnapshotError, State, v1, v3};
use super::{StateTransfer, Symbol};
use crate::fix::time::Timestamp;

/// Identifies a transfer section, so a receiver tells it from a whole snapshot (which starts
/// with the snapshot magic) before decoding.
const SECTION_MAGIC: [u8; 8] = *b"BTNXFER\0";

/// The layout of a transfer section this build writes and reads.
const SECTION_VERSION: u16 = 1;

/// A transfer section's payload, frozen like a snapshot format: the donor's state in the v1
/// model without the books of symbols not named and the ClOrdIDs of their orders, plus the
/// moved orders' parties in the v3 wire form.
#[derive(Serialize, Deserialize)]
struct SectionV1 {
    /// Position, time, the named books, the ClOrdIDs of their orders, of ended orders and of
    /// rejected requests, and every ended order.
    base: v1::StateV1,
    /// The parties of each moved resting order that has any, by OrderID.
    parties: Vec<SectionPartiesV1>,
}

/// One moved resting order's parties.
#[derive(Serialize, Deserialize)]
struct SectionPartiesV1 {
    /// The order.
    order_id: u64,
    /// Its parties, in the order the counterparty sent them.
    parties: Vec<v3::PartyV3>,
}

/// What a transfer for some symbols carries, cut from the donor's snapshot: the bytes to
/// journal and send, and how many resting orders they move (for the change report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferSection {
    /// The section as journaled beside the journal and applied by every engine.
    pub bytes: Vec<u8>,
    /// Resting orders in the named books.
    pub orders_moved: u64,
}

/// Why an engine could not take a transfer; it is left as it was, but for its input seq.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The snapshot does not read (another format, corrupt, or not this engine's instruments).
    #[error("the transferred snapshot cannot be loaded: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The snapshot is not at the input before the transfer.
    #[error("the transferred snapshot stands at input {snapshot_seq}, not {expected_seq}")]
    Position {
        /// Where the snapshot stands.
        snapshot_seq: u64,
        /// The input before the transfer.
        expected_seq: u64,
    },
    /// The bytes are not the ones the gateway journaled.
    #[error("the transferred snapshot does not have the SHA-256 the input names")]
    Hash,
}

/// Cuts the transfer of `symbols` from the donor's `snapshot` (any snapshot format): reads and
/// checks it once (format, layout, recorded digest), then keeps the named books and the day
/// section. Refused if the snapshot does not read, so nothing unreadable is journaled.
pub fn transfer_section(
    snapshot: &[u8],
    symbols: &[Symbol],
) -> Result<TransferSection, SnapshotError> {
    let State { base, parties } = snapshot::read(snapshot)?;
    let books: Vec<v1::BookV1> = base
        .books
        .into_iter()
        .filter(|book| symbols.contains(&book.symbol))
        .collect();
    let mut moved: Vec<u64> = books
        .iter()
        .flat_map(|book| book.bids.iter().chain(&book.asks))
        .map(|order| order.order_id)
        .collect();
    moved.sort_unstable();
    let orders_ended = base.orders_ended;
    let is_ended = |order_id: u64| {
        orders_ended
            .binary_search_by_key(&order_id, |ended| ended.order_id)
            .is_ok()
    };
    // ClOrdIDs of orders resting in other books stay out; the rest (moved orders, ended
    // orders, rejected requests) is the donor's word for the day.
    let cl_ord_ids: Vec<v1::ClOrdIdV1> = base
        .cl_ord_ids
        .into_iter()
        .filter(|entry| {
            entry.order_id == snapshot::NO_ORDER_ID
                || moved.binary_search(&entry.order_id).is_ok()
                || is_ended(entry.order_id)
        })
        .collect();
    let parties: Vec<SectionPartiesV1> = parties
        .into_iter()
        .filter(|entry| moved.binary_search(&entry.order_id).is_ok())
        .map(|entry| SectionPartiesV1 {
            order_id: entry.order_id,
            parties: snapshot::parties_to_wire(&entry.parties),
        })
        .collect();
    let section = SectionV1 {
        base: v1::StateV1 {
            last_input_seq: base.last_input_seq,
            last_time_ns: base.last_time_ns,
            books,
            cl_ord_ids,
            orders_ended,
        },
        parties,
    };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&SECTION_MAGIC);
    bytes.extend_from_slice(&SECTION_VERSION.to_le_bytes());
    bincode::serde::encode_into_std_write(&section, &mut bytes, snapshot::bincode_config())
        .expect("encoding plain data into a Vec cannot fail");
    Ok(TransferSection {
        bytes,
        orders_moved: moved.len() as u64,
    })
}

/// The donor's side of a transfer: a section ([`transfer_section`]), or the whole snapshot a
/// journal written before sections existed names. Only format and layout are checked here;
/// `check_state` judges the merged result.
fn donor_state(bytes: &[u8]) -> Result<State, SnapshotError> {
    if !bytes.starts_with(&SECTION_MAGIC) {
        return snapshot::read(bytes);
    }
    if bytes.len() < snapshot::HEADER_LEN {
        return Err(SnapshotError::Truncated);
    }
    let version = u16::from_le_bytes([bytes[SECTION_MAGIC.len()], bytes[SECTION_MAGIC.len() + 1]]);
    if version != SECTION_VERSION {
        return Err(SnapshotError::UnknownVersion { version });
    }
    let section: SectionV1 = snapshot::decode(&bytes[snapshot::HEADER_LEN..])?;
    let mut parties = Vec::with_capacity(section.parties.len());
    for entry in section.parties {
        parties.push(RestingParties {
            order_id: entry.order_id,
            parties: snapshot::parties_from_wire(entry.parties)?,
        });
    }
    Ok(State {
        base: section.base,
        parties,
    })
}

impl MatchingEngine {
    /// Takes `transfer` as input `seq` at `time` (already recorded as the last input by the
    /// caller). On error nothing but the input seq and time changed.
    pub(crate) fn apply_transfer(
        &mut self,
        transfer: &StateTransfer,
        seq: u64,
        time: Timestamp,
    ) -> Result<(), TransferError> {
        use sha2::Digest as _;
        let hash: [u8; 32] = sha2::Sha256::digest(&transfer.snapshot).into();
        if hash != transfer.snapshot_sha256 {
            return Err(TransferError::Hash);
        }
        let donor = donor_state(&transfer.snapshot)?;
        let expected_seq = seq - 1;
        if donor.last_input_seq != expected_seq {
            return Err(TransferError::Position {
                snapshot_seq: donor.last_input_seq,
                expected_seq,
            });
        }
        let merged = merge(self.canonical_state(), donor, &transfer.symbols, seq, time);
        self.check_state(&merged)?;
        self.load_state(merged);
        Ok(())
    }
}

/// `own` with the books of `symbols` and the day section taken from `donor`, at input `seq`.
/// Canonical order is kept (books by symbol, ClOrdIDs by (session, ClOrdID), ended orders and
/// parties by OrderID); a clash (the same ClOrdID or OrderID from both sides) is left for
/// `check_state` to refuse.
fn merge(own: State, donor: State, symbols: &[Symbol], seq: u64, time: Timestamp) -> State {
    let moved = |symbol: &Symbol| symbols.contains(symbol);
    // Sorted, for binary search: one pass over the books and a sort, no tree to build.
    let resting_ids = |state: &State, moving: bool| -> Vec<u64> {
        let mut ids: Vec<u64> = state
            .books
            .iter()
            .filter(|book| moved(&book.symbol) == moving)
            .flat_map(|book| book.bids.iter().chain(&book.asks))
            .map(|order| order.order_id)
            .collect();
        ids.sort_unstable();
        ids
    };
    let holds = |ids: &[u64], order_id: u64| ids.binary_search(&order_id).is_ok();
    // What stays: own orders resting outside the named books.
    let own_kept = resting_ids(&own, false);
    // What the donor keeps for itself: its orders resting outside the named books (none in a
    // section, which leaves those books out).
    let donor_left = resting_ids(&donor, false);
    let mut books: Vec<_> = own
        .base
        .books
        .into_iter()
        .filter(|book| !moved(&book.symbol))
        .chain(
            donor
                .base
                .books
                .iter()
                .filter(|book| moved(&book.symbol))
                .cloned(),
        )
        .collect();
    books.sort_by_key(|book| book.symbol);
    let mut cl_ord_ids: Vec<_> = own
        .base
        .cl_ord_ids
        .into_iter()
        .filter(|entry| holds(&own_kept, entry.order_id))
        .chain(
            donor
                .base
                .cl_ord_ids
                .iter()
                .filter(|entry| !holds(&donor_left, entry.order_id))
                .cloned(),
        )
        .collect();
    cl_ord_ids.sort_by_key(|entry| (entry.session, entry.cl_ord_id));
    let mut parties: Vec<_> = own
        .parties
        .into_iter()
        .filter(|entry| holds(&own_kept, entry.order_id))
        .chain(
            donor
                .parties
                .iter()
                .filter(|entry| !holds(&donor_left, entry.order_id))
                .cloned(),
        )
        .collect();
    parties.sort_by_key(|entry| entry.order_id);
    State {
        base: v1::StateV1 {
            last_input_seq: seq,
            last_time_ns: time.0,
            books,
            cl_ord_ids,
            orders_ended: donor.base.orders_ended,
        },
        parties,
    }
}
