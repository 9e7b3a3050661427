//! The engine side of baton: the [`Engine`] trait every engine implements, the inputs it applies
//! and the outputs it emits, and [`MatchingEngine`], the reference implementation (price-time
//! priority limit order books).
//!
//! An engine is a pure state machine (DESIGN.md invariant 3): it never reads a clock, a random
//! source or a socket. The gateway's sequencer gives each input its sequence number and time;
//! order ids and execution ids derive from them, so two engines fed the same snapshot and inputs
//! emit the same outputs byte for byte. The engine never sees FIX either: the gateway translates
//! FIX messages into [`Input`]s and [`Output`]s back into ExecutionReports and
//! OrderCancelRejects, with the wire values from each enum's `fix_value`.
//!
//! Snapshots are versioned (DESIGN.md invariant 6) because a standby running newer code restores
//! what an engine running older code wrote, and a rollback goes the other way. A
//! [`MatchingEngine`] writes one format, chosen when it is built
//! ([`MatchingEngine::with_snapshot_format`], default [`SNAPSHOT_FORMAT_DEFAULT`]), and restores
//! every format in [`SNAPSHOT_FORMAT_VERSIONS`]. v1 is a flat model of the state; v2 holds the
//! same information per symbol (each book with its orders and every ClOrdID that names them) and
//! records the state's digest, which the reader verifies; v3 adds each resting order's parties.
//! The [`Digest`] does not depend on the format written, so engines writing different formats,
//! and builds from before v2, compare equal in the same state (for builds from before v3, while
//! no order has parties). A binary from before v2 reads v1 only, one from before v3 reads v1 and
//! v2: to keep a rollback to it possible, run the newer build with `--snapshot-format` set to
//! what it reads until the change is closed, accepting that the parties of resting orders are
//! not in those snapshots (see `engine::snapshot`).

mod book;
mod config;
pub mod fault;
mod hash;
mod matching;
mod registry;
mod snapshot;
mod transfer;
mod types;
mod warm;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fix::time::Timestamp;

pub use config::{EngineConfig, EngineConfigError, InstrumentConfig};
pub use matching::{MatchingEngine, OpenOrder};
pub use snapshot::{SNAPSHOT_FORMAT_DEFAULT, SNAPSHOT_FORMAT_VERSIONS, SnapshotError};
pub use transfer::{TransferError, TransferSection, transfer_section};
pub use types::{
    ClOrdId, CxlRejReason, CxlRejResponseTo, ExecType, OrdRejReason, OrdStatus, OrdType, Parties,
    Party, PartyId, Price, Qty, RejectText, Side, Symbol, TimeInForce,
};

/// An opaque owner id the gateway assigns to each FIX session. The engine only routes outputs
/// by it and scopes ClOrdIDs to it; it never learns CompIDs (invariant 1).
pub type SessionId = u32;

/// One sequenced business message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// Global input sequence number from the sequencer; each engine applies exactly
    /// `last_input_seq + 1`. Also the OrderID of an order this input creates.
    pub seq: u64,
    /// Sequencer timestamp; the engine's only notion of time, never decreasing between inputs.
    /// Becomes TransactTime of every output of this input.
    pub time: Timestamp,
    /// The session that sent the message; owns any order it creates.
    pub session: SessionId,
    /// What the session asks for.
    pub request: Request,
}

impl Input {
    /// Decodes one journal record's payload (bincode's standard configuration, as the sequencer
    /// writes it), whole: bytes after the input other than one [`JournalOrigin`] are refused.
    ///
    /// Journals written before parties were carried hold the same encoding without the request's
    /// last field, its parties (every request type ends with them, and the request ends the
    /// input). Such a payload ends where the current encoding would read the parties' length, so
    /// it never decodes as the current encoding; it is then read with the earlier layout and
    /// given no parties. The journal's file format is unchanged, so a gateway of this build
    /// replays a journal an earlier build wrote, and no payload can be read both ways.
    pub fn decode_journaled(payload: &[u8]) -> Result<Input, bincode::error::DecodeError> {
        Input::decode_journaled_with_origin(payload).map(|(input, _)| input)
    }

    /// As [`Input::decode_journaled`], with the origin the sequencer wrote after the input
    /// (`None` in payloads of builds that did not write one). The origin follows the input's
    /// own encoding, so it is read only where a whole current input was read first; an earlier
    /// build's payload ends before that, and so can never be taken for an input with an origin.
    pub fn decode_journaled_with_origin(
        payload: &[u8],
    ) -> Result<(Input, Option<JournalOrigin>), bincode::error::DecodeError> {
        let config = bincode::config::standard();
        let current = match bincode::serde::decode_from_slice::<Input, _>(payload, config) {
            Ok((input, used)) if used == payload.len() => return Ok((input, None)),
            Ok((input, used)) => {
                let rest = &payload[used..];
                return match bincode::serde::decode_from_slice::<JournalOrigin, _>(rest, config) {
                    Ok((origin, read)) if read == rest.len() => Ok((input, Some(origin))),
                    _ => Err(bincode::error::DecodeError::OtherString(format!(
                        "{} bytes after the input are not its origin",
                        rest.len()
                    ))),
                };
            }
            Err(error) => error,
        };
        match bincode::serde::decode_from_slice::<journal_v0::Input, _>(payload, config) {
            Ok((input, used)) if used == payload.len() => Ok((input.into(), None)),
            // Neither layout reads it: report why the current one did not.
            _ => Err(current),
        }
    }

    /// Appends this input's journal payload to `out`: the input, then `origin` if there is one.
    pub fn encode_journaled(
        &self,
        origin: Option<JournalOrigin>,
        out: &mut Vec<u8>,
    ) -> Result<(), bincode::error::EncodeError> {
        let config = bincode::config::standard();
        bincode::serde::encode_into_std_write(self, out, config)?;
        if let Some(origin) = origin {
            bincode::serde::encode_into_std_write(origin, out, config)?;
        }
        Ok(())
    }
}

/// Where a journaled input came from in its session's FIX sequence: the MsgSeqNum of the message
/// and the store's [`sequence_epoch`](crate::fix::store::SessionStore::sequence_epoch) it was
/// numbered in. Journaled beside the input, never sent to an engine: the journal is the record
/// of what was accepted, so a gateway restarted between journaling a message and recording its
/// receipt in the session store learns from the journal not to take the message again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalOrigin {
    /// The message's MsgSeqNum (34).
    pub msg_seq_num: u64,
    /// The session store's sequence epoch when the message was received.
    pub sequence_epoch: u64,
}

/// The input layout journals held before requests carried parties: each request type without
/// its last field. Frozen; read only, by [`Input::decode_journaled`].
mod journal_v0 {
    use serde::Deserialize;

    use super::{ClOrdId, OrdType, Parties, Price, Qty, Side, Symbol, TimeInForce, Timestamp};

    #[derive(Deserialize)]
    pub struct Input {
        seq: u64,
        time: Timestamp,
        session: u32,
        request: Request,
    }

    #[derive(Deserialize)]
    enum Request {
        New {
            cl_ord_id: ClOrdId,
            symbol: Symbol,
            side: Side,
            ord_type: OrdType,
            price: Option<Price>,
            qty: Qty,
            time_in_force: TimeInForce,
        },
        Cancel {
            cl_ord_id: ClOrdId,
            orig_cl_ord_id: ClOrdId,
            symbol: Symbol,
            side: Side,
        },
        Replace {
            cl_ord_id: ClOrdId,
            orig_cl_ord_id: ClOrdId,
            symbol: Symbol,
            side: Side,
            ord_type: OrdType,
            price: Option<Price>,
            qty: Qty,
        },
    }

    impl From<Input> for super::Input {
        fn from(input: Input) -> super::Input {
            let request = match input.request {
                Request::New {
                    cl_ord_id,
                    symbol,
                    side,
                    ord_type,
                    price,
                    qty,
                    time_in_force,
                } => super::Request::New(super::NewOrder {
                    cl_ord_id,
                    symbol,
                    side,
                    ord_type,
                    price,
                    qty,
                    time_in_force,
                    parties: Parties::NONE,
                }),
                Request::Cancel {
                    cl_ord_id,
                    orig_cl_ord_id,
                    symbol,
                    side,
                } => super::Request::Cancel(super::CancelOrder {
                    cl_ord_id,
                    orig_cl_ord_id,
                    symbol,
                    side,
                    parties: Parties::NONE,
                }),
                Request::Replace {
                    cl_ord_id,
                    orig_cl_ord_id,
                    symbol,
                    side,
                    ord_type,
                    price,
                    qty,
                } => super::Request::Replace(super::ReplaceOrder {
                    cl_ord_id,
                    orig_cl_ord_id,
                    symbol,
                    side,
                    ord_type,
                    price,
                    qty,
                    parties: Parties::NONE,
                }),
            };
            super::Input {
                seq: input.seq,
                time: input.time,
                session: input.session,
                request,
            }
        }
    }
}

/// The business messages an engine understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// NewOrderSingle (35=D).
    New(NewOrder),
    /// OrderCancelRequest (35=F).
    Cancel(CancelOrder),
    /// OrderCancelReplaceRequest (35=G).
    Replace(ReplaceOrder),
    /// Not from a counterparty: the gateway's word, at a canary's rollback, that the canary
    /// engine's state for some symbols is what the counterparties were told, so every engine
    /// takes it (see [`StateTransfer`]). Last, so the encodings of the other requests, and every
    /// journal written before it existed, are unchanged.
    Transfer(StateTransfer),
}

/// The per-symbol state of the engine that owned some symbols during a canary, moved to every
/// engine when the canary ends (issue: a rollback that halts the instrument is a market
/// incident). It is an input like any other, sequenced and journaled, so replaying the journal
/// reproduces it (invariant 2), and each engine applies it at the same seq (invariant 3).
///
/// What travels is the named books and the day section, cut from the canary engine's snapshot
/// by the gateway (see [`transfer_section`]): order records that ended and the ClOrdIDs of
/// rejected requests carry no symbol in any snapshot format, so the day section comes whole
/// with the books; the other books stay out. A receiving engine keeps its own
/// books for every other symbol, with their orders and ClOrdIDs, and takes the named books and
/// the day section from the snapshot; where the two engines agreed on every other symbol (the
/// gateway checks that the canary engine answered no input outside its symbols differently)
/// the result is the canary engine's state exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTransfer {
    /// The symbols whose books move, sorted and unique.
    pub symbols: Vec<Symbol>,
    /// SHA-256 of `snapshot`: the journal keeps the snapshot in a file beside it named by this
    /// (a whole venue's orders do not fit a journal record) and the record holds only the hash.
    pub snapshot_sha256: [u8; 32],
    /// The transfer section cut from the canary engine's snapshot at the input before this one
    /// (a whole snapshot in journals written before sections existed, still taken). Empty in
    /// the journal record; filled from the file before the input reaches an engine.
    pub snapshot: Vec<u8>,
}

/// A NewOrderSingle, already parsed and type-checked by the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// The client's id for this order; must be new for the session today.
    pub cl_ord_id: ClOrdId,
    /// Which book.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Market or limit.
    pub ord_type: OrdType,
    /// Limit price: required for limit orders, forbidden for market orders.
    pub price: Option<Price>,
    /// OrderQty: positive and a multiple of the lot size.
    pub qty: Qty,
    /// How long the order may rest.
    pub time_in_force: TimeInForce,
    /// The Parties group (MiFID II identification): kept with the order and echoed on every
    /// ExecutionReport about it. Last in the struct, so an input journaled before parties were
    /// carried is this encoding without its last field (see [`Input::decode_journaled`]).
    pub parties: Parties,
}

/// An OrderCancelRequest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrder {
    /// The id of this request; must be new for the session today.
    pub cl_ord_id: ClOrdId,
    /// The latest ClOrdID of the order to cancel, within the same session.
    pub orig_cl_ord_id: ClOrdId,
    /// Must match the order's symbol, a guard against canceling the wrong order.
    pub symbol: Symbol,
    /// Must match the order's side, for the same reason.
    pub side: Side,
    /// The parties the request carried: journaled with it as the record of who canceled. The
    /// order keeps (and its Canceled report echoes) the parties it had.
    pub parties: Parties,
}

/// An OrderCancelReplaceRequest: a new price and/or quantity for an open limit order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceOrder {
    /// The id of this request; becomes the order's ClOrdID if accepted.
    pub cl_ord_id: ClOrdId,
    /// The latest ClOrdID of the order to change, within the same session.
    pub orig_cl_ord_id: ClOrdId,
    /// Must match the order's symbol.
    pub symbol: Symbol,
    /// Must match the order's side.
    pub side: Side,
    /// Must equal the order's type (limit): a resting order cannot become a market order.
    pub ord_type: OrdType,
    /// The new limit price.
    pub price: Option<Price>,
    /// The new total quantity (FIX OrderQty semantics, fills included); must exceed what has
    /// already been filled.
    pub qty: Qty,
    /// The parties the request carried. When there are any they replace the order's, since a
    /// replace restates the order; when there are none the order keeps its own, so a client
    /// that names parties only on the NewOrderSingle does not lose them by amending a price.
    pub parties: Parties,
}

/// One report to one session. `(input_seq, index)` identifies it across engines (invariant 4) and
/// is the ExecID the gateway formats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The input this output answers.
    pub input_seq: u64,
    /// Position among this input's outputs, from 0 without gaps.
    pub index: u32,
    /// The session the report goes to: the owner of the order it is about.
    pub session: SessionId,
    /// The report itself.
    pub report: Report,
}

/// The two kinds of report an engine sends.
// An ExecutionReport carries its order's parties inline and so outweighs a CancelReject several
// times; boxing it would cost a heap allocation per report on the hot path (invariant 11),
// while the size only matters for the output vector, which the caller reuses.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// ExecutionReport (35=8).
    Execution(ExecutionReport),
    /// OrderCancelReject (35=9).
    CancelReject(CancelReject),
}

/// An ExecutionReport, with every field FIX 4.4 requires already decided by the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionReport {
    /// OrderID (37): the input seq of the NewOrderSingle that created the order; for a rejected
    /// NewOrderSingle, that input's seq (no order exists, but the tag is required).
    pub order_id: u64,
    /// ClOrdID (11) of the request this report answers, or the order's latest for a fill.
    pub cl_ord_id: ClOrdId,
    /// OrigClOrdID (41), on reports answering a cancel or replace.
    pub orig_cl_ord_id: Option<ClOrdId>,
    /// ExecType (150): what happened.
    pub exec_type: ExecType,
    /// OrdStatus (39): the order's state afterwards.
    pub ord_status: OrdStatus,
    /// Symbol (55).
    pub symbol: Symbol,
    /// Side (54).
    pub side: Side,
    /// OrdType (40).
    pub ord_type: OrdType,
    /// Price (44): the order's limit; `None` for market orders.
    pub price: Option<Price>,
    /// TimeInForce (59).
    pub time_in_force: TimeInForce,
    /// OrderQty (38): the order's current total quantity.
    pub order_qty: Qty,
    /// LastQty (32): quantity of this fill; zero when the report is not a fill.
    pub last_qty: Qty,
    /// LastPx (31): price of this fill (the passive order's price); `None` when not a fill.
    pub last_px: Option<Price>,
    /// CumQty (14): filled so far.
    pub cum_qty: Qty,
    /// LeavesQty (151): still open; zero once the order is done. `order_qty == cum_qty +
    /// leaves_qty` while the order is live.
    pub leaves_qty: Qty,
    /// AvgPx (6): volume-weighted average fill price, rounded half away from zero to the price
    /// scale; zero before the first fill.
    pub avg_px: Price,
    /// TransactTime (60): the input's sequencer time.
    pub transact_time: Timestamp,
    /// OrdRejReason (103), on rejects only.
    pub ord_rej_reason: Option<OrdRejReason>,
    /// Text (58), on rejects only.
    pub text: Option<RejectText>,
    /// The order's Parties group (453), echoed so a counterparty's trade records carry the
    /// MiFID II identification of each execution; on a rejected NewOrderSingle, the request's.
    pub parties: Parties,
}

/// An OrderCancelReject: a cancel or replace request that was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReject {
    /// OrderID (37) of the order the request named, or `None` (FIX "NONE") when it named no
    /// open order of the session.
    pub order_id: Option<u64>,
    /// ClOrdID (11) of the rejected request.
    pub cl_ord_id: ClOrdId,
    /// OrigClOrdID (41) of the rejected request.
    pub orig_cl_ord_id: ClOrdId,
    /// OrdStatus (39) of the named order, unchanged by the request; Rejected for an unknown one.
    pub ord_status: OrdStatus,
    /// CxlRejResponseTo (434): which kind of request this answers.
    pub response_to: CxlRejResponseTo,
    /// CxlRejReason (102).
    pub reason: CxlRejReason,
    /// Text (58).
    pub text: Option<RejectText>,
    /// TransactTime (60): the input's sequencer time.
    pub transact_time: Timestamp,
}

/// SHA-256 of an engine's canonical state. Two engines with equal digests will emit the same
/// outputs for the same inputs, which is how shadow comparison and restores are verified. For
/// [`MatchingEngine`] it hashes the state's v1 snapshot, plus its orders' parties when there
/// are any, whatever format it writes, so it compares engines across snapshot formats and
/// builds (see `engine::snapshot`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    /// Lower-case hex, as `sha256sum` prints it, so operators can compare by eye or by tool.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// What the gateway needs from an engine. Implement it (or speak the link protocol) to get
/// baton's failover, shadowing and switching for your own engine.
pub trait Engine: Send + 'static {
    /// Applies one sequenced input, appending its outputs in order (index = position within
    /// this input). Panics if `input.seq` is not `last_input_seq() + 1` or time goes backwards:
    /// both are sequencer bugs, and a crashed engine is replaced by its standby while a
    /// diverged one would trade on.
    fn apply(&mut self, input: &Input, outputs: &mut Vec<Output>);

    /// Seq of the last applied input (0 before the first), so the gateway knows where journal
    /// replay resumes after a restore.
    fn last_input_seq(&self) -> u64;

    /// Appends the complete state in a versioned binary format to `out` (appending lets the
    /// caller put a frame header first).
    fn snapshot(&self, out: &mut Vec<u8>);

    /// Replaces the whole state by a snapshot of any supported format version. On error the
    /// engine is unchanged: a snapshot is external input and may be corrupt or from a newer build.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError>;

    /// SHA-256 of the canonical state; equal across snapshot → restore and across engines that
    /// applied the same inputs, whichever snapshot format each one writes.
    fn digest(&self) -> Digest;

    /// Housekeeping between inputs, called by the link once the answers to a batch are written
    /// and before it waits for more: makes present the memory the next inputs will write
    /// (order records, ClOrdID entries), so their first-touch page faults are not taken while
    /// an order waits for its answer. A page fault on fresh memory cost 4–16 µs on the virtual
    /// machine the benchmarks ran on, one every few resting orders. Never changes the state.
    fn prepare(&mut self) {}

    /// Which engine build this is, recorded in change records and shadow reports. Engines of one
    /// binary configured differently in a way that matters to an upgrade (the snapshot format
    /// [`MatchingEngine`] writes) report different builds.
    fn build_version(&self) -> &str;

    /// A copy of the state as it is now, from which another thread writes the snapshot and the
    /// digest while this engine goes on applying inputs: building, hashing and encoding a large
    /// state takes long enough that doing it between two inputs stalls every order behind it.
    /// `None` (the default) when the engine offers no such copy; the link then calls
    /// [`Engine::snapshot`] and [`Engine::digest`] between inputs instead.
    fn freeze(&self) -> Option<Box<dyn FrozenState>> {
        None
    }

    /// Takes resting order `order_id` out of its book without a report; false if the engine
    /// cannot or the order does not rest. Only the deliberately faulty build
    /// ([`fault::RejectSymbol`]) uses it, so that what it holds agrees with the rejects it sends;
    /// an engine that offers no such thing keeps the default.
    #[doc(hidden)]
    fn withdraw(&mut self, _order_id: u64) -> bool {
        false
    }
}

/// An engine's state frozen between two inputs by [`Engine::freeze`].
pub trait FrozenState: Send + 'static {
    /// Seq of the last input the frozen state applied: the snapshot's position.
    fn last_input_seq(&self) -> u64;

    /// Appends what [`Engine::snapshot`] would have appended at the moment of the freeze, and
    /// returns what [`Engine::digest`] would have returned then.
    fn snapshot_and_digest(&self, out: &mut Vec<u8>) -> Digest;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod parties_tests;
