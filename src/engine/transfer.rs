//! Taking another engine's state for some symbols: the [`Request::Transfer`](super::Request)
//! input a canary's rollback sequences (see [`StateTransfer`]).
//!
//! The receiving engine builds one state from two: its own books for every symbol not named,
//! with their resting orders, parties and ClOrdIDs; and from the donor's snapshot the named
//! books (resting orders with every ClOrdID that addresses them and their parties) and the day
//! section (ended orders and the ClOrdIDs of rejected requests, which no format attributes to a
//! symbol). The result passes the same checks as a restored snapshot before it replaces
//! anything, so a transfer that does not fit (the donor disagrees about another symbol's
//! orders) leaves the engine as it was.
//!
//! Applying a transfer is deterministic: every engine that applies it at the same seq from the
//! same state ends in the same state, which is how `baton journal replay` reproduces it.

use std::collections::BTreeSet;

use super::matching::MatchingEngine;
use super::snapshot::{self, SnapshotError, State, v1};
use super::{StateTransfer, Symbol};
use crate::fix::time::Timestamp;

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

/// How many resting orders `snapshot` holds in the books of `symbols`: what a transfer of it
/// moves, for the change report.
pub fn transfer_orders(snapshot: &[u8], symbols: &[Symbol]) -> Result<u64, SnapshotError> {
    let state = snapshot::read(snapshot)?;
    Ok(state
        .books
        .iter()
        .filter(|book| symbols.contains(&book.symbol))
        .map(|book| (book.bids.len() + book.asks.len()) as u64)
        .sum())
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
        let donor = snapshot::read(&transfer.snapshot)?;
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
    let resting_ids = |state: &State, moving: bool| -> BTreeSet<u64> {
        state
            .books
            .iter()
            .filter(|book| moved(&book.symbol) == moving)
            .flat_map(|book| book.bids.iter().chain(&book.asks))
            .map(|order| order.order_id)
            .collect()
    };
    // What stays: own orders resting outside the named books.
    let own_kept = resting_ids(&own, false);
    // What the donor keeps for itself: its orders resting outside the named books.
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
        .filter(|entry| own_kept.contains(&entry.order_id))
        .chain(
            donor
                .base
                .cl_ord_ids
                .iter()
                .filter(|entry| !donor_left.contains(&entry.order_id))
                .cloned(),
        )
        .collect();
    cl_ord_ids.sort_by_key(|entry| (entry.session, entry.cl_ord_id));
    let mut parties: Vec<_> = own
        .parties
        .into_iter()
        .filter(|entry| own_kept.contains(&entry.order_id))
        .chain(
            donor
                .parties
                .iter()
                .filter(|entry| !donor_left.contains(&entry.order_id))
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
