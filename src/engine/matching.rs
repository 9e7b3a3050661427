//! [`MatchingEngine`]: price-time priority matching over one limit order book per instrument.
//!
//! All memory is reserved in [`MatchingEngine::new`] from the configured capacities; applying an
//! input allocates nothing (beyond the caller's output vector, which the caller can reserve).
//! When a table is full the request is rejected with a reason instead of anything growing.
//! The one hash table, the ClOrdID registry, has a randomly seeded layout; nothing iterates it on
//! the way to an output, and snapshots sort its entries, so outputs, snapshots and digests
//! depend only on the inputs (DESIGN.md invariant 3).

use super::book::{Book, NIL, Order, Slab};
use super::config::{EngineConfig, EngineConfigError, InstrumentSpec};
use super::registry::{ClOrdIdRegistry, NO_ORDER};
use super::snapshot::{
    self, SNAPSHOT_FORMAT_DEFAULT, SNAPSHOT_FORMAT_VERSIONS, SnapshotError, SnapshotFormat,
};
use super::types::{
    ClOrdId, CxlRejReason, CxlRejResponseTo, ExecType, OrdRejReason, OrdStatus, OrdType, Parties,
    Price, Qty, RejectText, Side, Symbol, TimeInForce,
};
use super::warm;
use super::{
    CancelOrder, CancelReject, Digest, Engine, ExecutionReport, FrozenState, Input, NewOrder,
    Output, ReplaceOrder, Report, Request, SessionId,
};
use crate::constants::ENGINE_ORDER_QTY_MAX;
use crate::fix::time::Timestamp;

/// Where an order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrderState {
    /// Resting, in this slab slot.
    Live(u32),
    /// Done; kept for the session day so a late cancel is answered TooLateToCancel with the
    /// order's final status.
    Ended(OrdStatus),
}

/// One order created today, live or ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OrderRecord {
    /// Its OrderID.
    pub order_id: u64,
    /// Where it is now.
    pub state: OrderState,
}

/// One configured instrument and its book.
#[derive(Clone)]
pub(crate) struct Instrument {
    /// Symbol, tick and lot from the configuration.
    pub spec: InstrumentSpec,
    /// Resting orders.
    pub book: Book,
}

/// The reference [`Engine`]: deterministic price-time priority matching.
pub struct MatchingEngine {
    /// One entry per configured instrument, sorted by symbol: lookups binary-search it and every
    /// walk over books (snapshot, digest, inspection) visits books in this fixed order.
    pub(crate) instruments: Vec<Instrument>,
    /// Every resting order.
    pub(crate) slab: Slab,
    /// Every ClOrdID each session used today → the index in `orders` of the order it created
    /// or acted on, or [`NO_ORDER`]. Requests beyond its capacity are rejected.
    pub(crate) cl_ord_ids: ClOrdIdRegistry,
    /// Every order created today, in ascending OrderID order (orders are appended as inputs
    /// create them, and a restore loads them sorted). Append-only: a live order turns ended in
    /// place. Each order consumed a ClOrdID, so it never outgrows its `cl_ord_ids_max`
    /// capacity.
    pub(crate) orders: Vec<OrderRecord>,
    /// Price levels per book side, for checking snapshots against this configuration.
    pub(crate) levels_max: u32,
    /// Seq of the last applied input; the next must be one more.
    pub(crate) last_input_seq: u64,
    /// Time of the last applied input; inputs may not go back in time.
    pub(crate) last_time: Timestamp,
    /// The format [`Engine::snapshot`] writes; chosen at start so that a build can write what
    /// an older build it may be rolled back to reads. Restore reads every format regardless.
    pub(crate) snapshot_format: SnapshotFormat,
    /// How far past the end of each vector filled in order the memory is present (see
    /// [`Engine::prepare`]); no part of the state.
    pub(crate) ahead: MemoryAhead,
}

/// The [`warm::Ahead`] of each vector the engine fills in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryAhead {
    /// Order records ([`Slab`]).
    slab: warm::Ahead,
    /// The day's orders (`orders`).
    orders: warm::Ahead,
    /// ClOrdID entries ([`ClOrdIdRegistry`]).
    cl_ord_ids: warm::Ahead,
}

/// A resting order as tests and operators inspect it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOrder {
    /// OrderID.
    pub order_id: u64,
    /// Owning session.
    pub session: SessionId,
    /// The order's latest ClOrdID.
    pub cl_ord_id: ClOrdId,
    /// The book it rests in.
    pub symbol: Symbol,
    /// Bid or ask side.
    pub side: Side,
    /// Resting price.
    pub price: Price,
    /// Current total quantity.
    pub order_qty: Qty,
    /// Filled so far.
    pub cum_qty: Qty,
    /// Still open; always positive for a resting order.
    pub leaves_qty: Qty,
    /// The parties its reports echo.
    pub parties: Parties,
}

/// Appends the outputs of one input with consecutive indices.
struct Emitter<'a> {
    /// The caller's output vector.
    outputs: &'a mut Vec<Output>,
    /// Seq of the input being applied.
    input_seq: u64,
    /// Index of the next output of this input.
    index: u32,
    /// Sequencer time of the input: TransactTime of every report.
    time: Timestamp,
}

impl Emitter<'_> {
    /// Appends one report with the next index.
    fn push(&mut self, session: SessionId, report: Report) {
        self.outputs.push(Output {
            input_seq: self.input_seq,
            index: self.index,
            session,
            report,
        });
        self.index += 1;
    }

    /// A report about `order` (as it is now) carrying `exec_type`.
    fn execution(
        &mut self,
        order: &Order,
        symbol: Symbol,
        exec_type: ExecType,
        ord_status: OrdStatus,
        orig_cl_ord_id: Option<ClOrdId>,
        last: Option<(Qty, Price)>,
    ) {
        let done = matches!(ord_status, OrdStatus::Filled | OrdStatus::Canceled);
        let report = ExecutionReport {
            order_id: order.order_id,
            cl_ord_id: order.cl_ord_id,
            orig_cl_ord_id,
            exec_type,
            ord_status,
            symbol,
            side: order.side,
            ord_type: order.ord_type,
            price: order.price,
            time_in_force: order.time_in_force,
            order_qty: order.order_qty,
            last_qty: last.map_or(Qty::ZERO, |(qty, _)| qty),
            last_px: last.map(|(_, px)| px),
            cum_qty: order.cum_qty,
            leaves_qty: if done { Qty::ZERO } else { order.leaves_qty() },
            avg_px: order.avg_px(),
            transact_time: self.time,
            ord_rej_reason: None,
            text: None,
            parties: order.parties,
        };
        self.push(order.session, Report::Execution(report));
    }

    /// The Rejected acknowledgement of a NewOrderSingle.
    fn reject_new(
        &mut self,
        session: SessionId,
        request: &NewOrder,
        reason: OrdRejReason,
        text: RejectText,
    ) {
        let report = ExecutionReport {
            order_id: self.input_seq,
            cl_ord_id: request.cl_ord_id,
            orig_cl_ord_id: None,
            exec_type: ExecType::Rejected,
            ord_status: OrdStatus::Rejected,
            symbol: request.symbol,
            side: request.side,
            ord_type: request.ord_type,
            price: request.price,
            time_in_force: request.time_in_force,
            order_qty: request.qty,
            last_qty: Qty::ZERO,
            last_px: None,
            cum_qty: Qty::ZERO,
            leaves_qty: Qty::ZERO,
            avg_px: Price::ZERO,
            transact_time: self.time,
            ord_rej_reason: Some(reason),
            text: Some(text),
            parties: request.parties,
        };
        self.push(session, Report::Execution(report));
    }

    /// An OrderCancelReject.
    fn cancel_reject(
        &mut self,
        session: SessionId,
        request: &RequestIds,
        order_id: Option<u64>,
        ord_status: OrdStatus,
        reason: CxlRejReason,
        text: RejectText,
    ) {
        let reject = CancelReject {
            order_id,
            cl_ord_id: request.cl_ord_id,
            orig_cl_ord_id: request.orig_cl_ord_id,
            ord_status,
            response_to: request.response_to,
            reason,
            text: Some(text),
            transact_time: self.time,
        };
        self.push(session, Report::CancelReject(reject));
    }
}

/// The variable fields of a CancelReject: OrderID (if the request named an order), that order's
/// status, the reason and the text.
type Refusal = (Option<u64>, OrdStatus, CxlRejReason, RejectText);

/// What cancel and replace requests have in common.
struct RequestIds {
    /// The request's own ClOrdID.
    cl_ord_id: ClOrdId,
    /// The ClOrdID of the order it acts on.
    orig_cl_ord_id: ClOrdId,
    /// Must match the order.
    symbol: Symbol,
    /// Must match the order.
    side: Side,
    /// Which request this is, for the CancelReject.
    response_to: CxlRejResponseTo,
}

impl MatchingEngine {
    /// Builds an empty engine, reserving all memory the configured capacities need. It writes
    /// the newest snapshot format, [`SNAPSHOT_FORMAT_DEFAULT`].
    pub fn new(config: &EngineConfig) -> Result<MatchingEngine, EngineConfigError> {
        MatchingEngine::with_snapshot_format(config, SNAPSHOT_FORMAT_DEFAULT)
    }

    /// Builds an empty engine that writes snapshots in format version `format`, one of
    /// [`SNAPSHOT_FORMAT_VERSIONS`]. During an upgrade the new build writes the format the old
    /// build reads, so rolling back to the old binary can restore its snapshots; the engine
    /// still reads every supported format.
    pub fn with_snapshot_format(
        config: &EngineConfig,
        format: u16,
    ) -> Result<MatchingEngine, EngineConfigError> {
        let snapshot_format = SnapshotFormat::from_version(format)
            .ok_or(EngineConfigError::UnsupportedSnapshotFormat { format })?;
        let specs = config.validate()?;
        let instruments = specs
            .into_iter()
            .map(|spec| Instrument {
                spec,
                book: Book::new(config.levels_max),
            })
            .collect();
        Ok(MatchingEngine {
            instruments,
            slab: Slab::with_capacity(config.orders_max),
            cl_ord_ids: ClOrdIdRegistry::with_capacity(config.cl_ord_ids_max),
            orders: Vec::with_capacity(config.cl_ord_ids_max as usize),
            levels_max: config.levels_max,
            last_input_seq: 0,
            last_time: Timestamp::ZERO,
            snapshot_format,
            ahead: MemoryAhead::default(),
        })
    }

    /// Writes the randomly probed memory reserved at start once (the ClOrdID table, 16 bytes
    /// per configured ClOrdID), so the first orders do not take the kernel's first-touch page
    /// faults on the order path (one or two per order at first, falling over minutes; see
    /// `engine::warm`). What fills in order (order records, ClOrdID entries, book levels)
    /// faults once per page and stays lazy, so the day's capacity is not made resident at
    /// start. The engine process calls it once at start; tests and simulations that build many
    /// engines do not.
    pub fn touch_memory(&mut self) {
        self.cl_ord_ids.touch_memory();
    }

    /// The snapshot format version this engine writes.
    pub fn snapshot_format(&self) -> u16 {
        self.snapshot_format.version()
    }

    /// The formats to announce in the link handshake (`ServeConfig::snapshot_formats`): every
    /// format this engine reads, with the one it writes last, since the link takes the last
    /// entry as the format of the snapshots it sends. An engine writing an older format than
    /// the newest therefore lists the newer ones first.
    pub fn snapshot_formats(&self) -> Vec<u16> {
        let written = self.snapshot_format.version();
        SNAPSHOT_FORMAT_VERSIONS
            .iter()
            .copied()
            .filter(|&format| format != written)
            .chain([written])
            .collect()
    }

    /// Best (highest) bid of `symbol`, for inspection and tests; `None` if none rests or the
    /// symbol is unknown.
    pub fn best_bid(&self, symbol: Symbol) -> Option<Price> {
        self.instrument_index(symbol)
            .and_then(|i| self.instruments[i].book.bids.best())
    }

    /// Best (lowest) ask of `symbol`, for inspection and tests.
    pub fn best_ask(&self, symbol: Symbol) -> Option<Price> {
        self.instrument_index(symbol)
            .and_then(|i| self.instruments[i].book.asks.best())
    }

    /// Every resting order in book order: instruments by symbol, bids before asks, best price
    /// first, oldest first within a price. Allocates; meant for tests and operators, not the
    /// hot path.
    pub fn open_orders(&self) -> Vec<OpenOrder> {
        let mut open = Vec::with_capacity(self.slab.live() as usize);
        for instrument in &self.instruments {
            for side in [&instrument.book.bids, &instrument.book.asks] {
                for order in side.iter(&self.slab) {
                    open.push(OpenOrder {
                        order_id: order.order_id,
                        session: order.session,
                        cl_ord_id: order.cl_ord_id,
                        symbol: instrument.spec.symbol,
                        side: order.side,
                        price: order.price.expect("resting orders have a price"),
                        order_qty: order.order_qty,
                        cum_qty: order.cum_qty,
                        leaves_qty: order.leaves_qty(),
                        parties: order.parties,
                    });
                }
            }
        }
        open
    }

    /// Index of `symbol` in the sorted instrument table.
    pub(crate) fn instrument_index(&self, symbol: Symbol) -> Option<usize> {
        self.instruments
            .binary_search_by(|i| i.spec.symbol.cmp(&symbol))
            .ok()
    }

    /// NewOrderSingle: validate, acknowledge (or reject), match, then rest or cancel the rest.
    /// Every check that can reject runs before the acknowledgement, so a NewOrderSingle gets
    /// exactly one New or Rejected.
    fn new_order(&mut self, session: SessionId, request: &NewOrder, out: &mut Emitter<'_>) {
        if self.cl_ord_ids.contains(session, &request.cl_ord_id) {
            out.reject_new(
                session,
                request,
                OrdRejReason::DuplicateOrder,
                RejectText::DuplicateClOrdId,
            );
            return;
        }
        if self.cl_ord_ids.is_full() {
            out.reject_new(
                session,
                request,
                OrdRejReason::Other,
                RejectText::ClOrdIdCapacity,
            );
            return;
        }
        // The ClOrdID counts as used whether the order is accepted or not; it is written once,
        // with the outcome, to keep the hot path at two table lookups.
        let (instrument, fillable, rests) = match self.check_new(request) {
            Ok(accepted) => accepted,
            Err((reason, text)) => {
                self.cl_ord_ids.insert(session, request.cl_ord_id, NO_ORDER);
                out.reject_new(session, request, reason, text);
                return;
            }
        };
        let order_id = out.input_seq;
        let order_index = self.orders.len() as u32;
        self.cl_ord_ids
            .insert(session, request.cl_ord_id, order_index);
        let mut order = Order {
            order_id,
            order_index,
            session,
            cl_ord_id: request.cl_ord_id,
            instrument: instrument as u32,
            side: request.side,
            ord_type: request.ord_type,
            time_in_force: request.time_in_force,
            price: request.price,
            order_qty: request.qty,
            cum_qty: Qty::ZERO,
            notional: 0,
            prev: NIL,
            next: NIL,
            parties: request.parties,
        };
        let symbol = request.symbol;
        out.execution(&order, symbol, ExecType::New, OrdStatus::New, None, None);
        if request.time_in_force == TimeInForce::Fok && !fillable {
            out.execution(
                &order,
                symbol,
                ExecType::Canceled,
                OrdStatus::Canceled,
                None,
                None,
            );
            self.orders.push(OrderRecord {
                order_id,
                state: OrderState::Ended(OrdStatus::Canceled),
            });
            return;
        }
        self.match_aggressor(&mut order, out);
        self.settle_aggressor(order, None, rests, out);
    }

    /// Every check of a NewOrderSingle, run before the acknowledgement. When it passes: the
    /// instrument's index, whether the book holds enough crossing quantity to fill it, and
    /// whether its remainder will rest.
    fn check_new(
        &self,
        request: &NewOrder,
    ) -> Result<(usize, bool, bool), (OrdRejReason, RejectText)> {
        let Some(instrument) = self.instrument_index(request.symbol) else {
            return Err((OrdRejReason::UnknownSymbol, RejectText::UnknownSymbol));
        };
        let spec = &self.instruments[instrument].spec;
        match (request.ord_type, request.price) {
            (OrdType::Market, Some(_)) => {
                return Err((
                    OrdRejReason::UnsupportedOrderCharacteristic,
                    RejectText::MarketOrderWithPrice,
                ));
            }
            (OrdType::Limit, None) => {
                return Err((
                    OrdRejReason::UnsupportedOrderCharacteristic,
                    RejectText::LimitOrderWithoutPrice,
                ));
            }
            _ => {}
        }
        check_qty(request.qty, spec).map_err(|text| {
            let reason = match text {
                RejectText::QtyTooLarge => OrdRejReason::OrderExceedsLimit,
                _ => OrdRejReason::IncorrectQuantity,
            };
            (reason, text)
        })?;
        if let Some(price) = request.price
            && !price.is_multiple_of(spec.tick_size)
        {
            return Err((OrdRejReason::Other, RejectText::PriceOffTick));
        }
        let book = &self.instruments[instrument].book;
        let crossing = book
            .side(request.side.opposite())
            .crossing_qty(request.price, request.qty.0);
        let fillable = crossing >= request.qty.0;
        let rests = request.ord_type == OrdType::Limit
            && request.time_in_force == TimeInForce::Day
            && !fillable;
        if rests {
            // Once an order is acknowledged it must be able to rest; matching only consumes the
            // other side, so room found now is still there after matching.
            if !self.slab.has_room() {
                return Err((OrdRejReason::Other, RejectText::OrderCapacity));
            }
            let price = request.price.expect("limit orders have a price");
            if !book.side(request.side).has_room_for(price, None) {
                return Err((OrdRejReason::Other, RejectText::LevelCapacity));
            }
        }
        Ok((instrument, fillable, rests))
    }

    /// Trades `aggressor` against the opposite side of its book in price-time priority while it
    /// crosses, emitting for each fill the passive report, then the aggressor's.
    fn match_aggressor(&mut self, aggressor: &mut Order, out: &mut Emitter<'_>) {
        let instrument = &mut self.instruments[aggressor.instrument as usize];
        let symbol = instrument.spec.symbol;
        let opposite = instrument.book.side_mut(aggressor.side.opposite());
        while aggressor.leaves_qty().0 > 0 {
            let Some(level) = opposite.levels.last_mut() else {
                break;
            };
            if !opposite_crossed(aggressor, level.price) {
                break;
            }
            let price = level.price;
            let index = level.head;
            let passive = self.slab.get_mut(index);
            let qty = Qty(aggressor.leaves_qty().0.min(passive.leaves_qty().0));
            passive.fill(qty, price);
            level.qty_total -= qty.0;
            let passive = *passive;
            out.execution(
                &passive,
                symbol,
                ExecType::Trade,
                passive.status(),
                None,
                Some((qty, price)),
            );
            aggressor.fill(qty, price);
            out.execution(
                aggressor,
                symbol,
                ExecType::Trade,
                aggressor.status(),
                None,
                Some((qty, price)),
            );
            if passive.leaves_qty().0 == 0 {
                level.head = passive.next;
                if passive.next == NIL {
                    level.tail = NIL;
                } else {
                    self.slab.get_mut(passive.next).prev = NIL;
                }
                level.count -= 1;
                if level.count == 0 {
                    opposite.levels.pop();
                }
                self.slab.remove(index);
                self.orders[passive.order_index as usize].state =
                    OrderState::Ended(OrdStatus::Filled);
            }
        }
    }

    /// Decides what becomes of an aggressor after matching: done if filled, resting if it may
    /// rest, otherwise its remainder is canceled. `slot` is the slab slot a replaced order
    /// already holds.
    fn settle_aggressor(
        &mut self,
        order: Order,
        slot: Option<u32>,
        rests: bool,
        out: &mut Emitter<'_>,
    ) {
        let state = if order.leaves_qty().0 == 0 {
            if let Some(slot) = slot {
                self.slab.remove(slot);
            }
            OrderState::Ended(OrdStatus::Filled)
        } else if rests {
            let index = match slot {
                Some(slot) => {
                    *self.slab.get_mut(slot) = order;
                    slot
                }
                None => self.slab.insert(order),
            };
            self.instruments[order.instrument as usize]
                .book
                .side_mut(order.side)
                .push_back(&mut self.slab, index);
            OrderState::Live(index)
        } else {
            assert!(slot.is_none(), "only orders that may rest hold a slot");
            let symbol = self.instruments[order.instrument as usize].spec.symbol;
            out.execution(
                &order,
                symbol,
                ExecType::Canceled,
                OrdStatus::Canceled,
                None,
                None,
            );
            OrderState::Ended(OrdStatus::Canceled)
        };
        match slot {
            // A replaced order already has its record.
            Some(_) => self.orders[order.order_index as usize].state = state,
            None => {
                assert_eq!(
                    order.order_index as usize,
                    self.orders.len(),
                    "orders out of order"
                );
                self.orders.push(OrderRecord {
                    order_id: order.order_id,
                    state,
                });
            }
        }
    }

    /// The checks cancel and replace share: a fresh ClOrdID, room to remember it, and an open
    /// order of this session under OrigClOrdID with the same symbol and side. When one fails it
    /// emits the CancelReject, records the ClOrdID as used and returns `None`. Otherwise it
    /// returns the order's slab slot and leaves recording the ClOrdID to the caller, which
    /// knows the outcome (one table write per request).
    fn open_request(
        &mut self,
        session: SessionId,
        request: &RequestIds,
        out: &mut Emitter<'_>,
    ) -> Option<u32> {
        if self.cl_ord_ids.contains(session, &request.cl_ord_id) {
            out.cancel_reject(
                session,
                request,
                None,
                OrdStatus::Rejected,
                CxlRejReason::DuplicateClOrdId,
                RejectText::DuplicateClOrdId,
            );
            return None;
        }
        if self.cl_ord_ids.is_full() {
            out.cancel_reject(
                session,
                request,
                None,
                OrdStatus::Rejected,
                CxlRejReason::Other,
                RejectText::ClOrdIdCapacity,
            );
            return None;
        }
        match self.find_open(session, request) {
            Ok(found) => Some(found),
            Err((order_id, ord_status, reason, text)) => {
                self.cl_ord_ids.insert(session, request.cl_ord_id, NO_ORDER);
                out.cancel_reject(session, request, order_id, ord_status, reason, text);
                None
            }
        }
    }

    /// The slab slot of the open order a cancel or replace names, or what to answer when there
    /// is none.
    fn find_open(&self, session: SessionId, request: &RequestIds) -> Result<u32, Refusal> {
        let unknown = |text| Err((None, OrdStatus::Rejected, CxlRejReason::UnknownOrder, text));
        let record = match self.cl_ord_ids.get(session, &request.orig_cl_ord_id) {
            Some(index) if index != NO_ORDER => self.orders[index as usize],
            _ => return unknown(RejectText::UnknownOrder),
        };
        let slot = match record.state {
            OrderState::Live(slot) => slot,
            OrderState::Ended(status) => {
                return Err((
                    Some(record.order_id),
                    status,
                    CxlRejReason::TooLateToCancel,
                    RejectText::OrderDone,
                ));
            }
        };
        let order = self.slab.get(slot);
        if order.cl_ord_id != request.orig_cl_ord_id {
            return unknown(RejectText::NotLatestClOrdId);
        }
        let symbol = self.instruments[order.instrument as usize].spec.symbol;
        if symbol != request.symbol || order.side != request.side {
            return unknown(RejectText::OrderMismatch);
        }
        Ok(slot)
    }

    /// OrderCancelRequest: removes the named open order of this session.
    fn cancel(&mut self, session: SessionId, request: &CancelOrder, out: &mut Emitter<'_>) {
        let ids = RequestIds {
            cl_ord_id: request.cl_ord_id,
            orig_cl_ord_id: request.orig_cl_ord_id,
            symbol: request.symbol,
            side: request.side,
            response_to: CxlRejResponseTo::Cancel,
        };
        let Some(slot) = self.open_request(session, &ids, out) else {
            return;
        };
        let mut order = *self.slab.get(slot);
        self.cl_ord_ids
            .insert(session, request.cl_ord_id, order.order_index);
        self.instruments[order.instrument as usize]
            .book
            .side_mut(order.side)
            .unlink(&mut self.slab, slot);
        self.slab.remove(slot);
        self.orders[order.order_index as usize].state = OrderState::Ended(OrdStatus::Canceled);
        order.cl_ord_id = request.cl_ord_id;
        out.execution(
            &order,
            request.symbol,
            ExecType::Canceled,
            OrdStatus::Canceled,
            Some(request.orig_cl_ord_id),
            None,
        );
    }

    /// Takes resting order `order_id` out of its book without a report, as if it had never
    /// rested: what a build that rejected it would hold. Only [`super::fault::RejectSymbol`]
    /// calls it, so that the deliberately faulty build's state agrees with the rejects it
    /// sends, as a real build's would. False if the order is not resting.
    pub(crate) fn withdraw(&mut self, order_id: u64) -> bool {
        let Ok(at) = self
            .orders
            .binary_search_by_key(&order_id, |record| record.order_id)
        else {
            return false;
        };
        let OrderState::Live(slot) = self.orders[at].state else {
            return false;
        };
        let order = *self.slab.get(slot);
        self.instruments[order.instrument as usize]
            .book
            .side_mut(order.side)
            .unlink(&mut self.slab, slot);
        self.slab.remove(slot);
        self.orders[at].state = OrderState::Ended(OrdStatus::Canceled);
        true
    }

    /// OrderCancelReplaceRequest: new price and/or quantity under a new ClOrdID, same OrderID.
    /// A quantity decrease at the same price keeps the order's place in the queue; any other
    /// change requeues it at the back of its (new) price, trading first if the price crosses.
    fn replace(&mut self, session: SessionId, request: &ReplaceOrder, out: &mut Emitter<'_>) {
        let ids = RequestIds {
            cl_ord_id: request.cl_ord_id,
            orig_cl_ord_id: request.orig_cl_ord_id,
            symbol: request.symbol,
            side: request.side,
            response_to: CxlRejResponseTo::Replace,
        };
        let Some(slot) = self.open_request(session, &ids, out) else {
            return;
        };
        let order = *self.slab.get(slot);
        let book = &self.instruments[order.instrument as usize].book;
        let old_price = order.price.expect("resting orders have a price");
        let checked = self.check_replace(&order, request).and_then(|new_price| {
            let keeps_priority = new_price == old_price && request.qty <= order.order_qty;
            if !keeps_priority {
                let leaves = request.qty.0 - order.cum_qty.0;
                let crossing = book
                    .side(order.side.opposite())
                    .crossing_qty(Some(new_price), leaves);
                if crossing < leaves
                    && !book
                        .side(order.side)
                        .has_room_for(new_price, Some(old_price))
                {
                    return Err(RejectText::LevelCapacity);
                }
            }
            Ok((new_price, keeps_priority))
        });
        let (new_price, keeps_priority) = match checked {
            Ok(accepted) => accepted,
            Err(text) => {
                self.cl_ord_ids.insert(session, request.cl_ord_id, NO_ORDER);
                out.cancel_reject(
                    session,
                    &ids,
                    Some(order.order_id),
                    order.status(),
                    CxlRejReason::Other,
                    text,
                );
                return;
            }
        };

        self.cl_ord_ids
            .insert(session, request.cl_ord_id, order.order_index);
        let mut replaced = order;
        replaced.cl_ord_id = request.cl_ord_id;
        replaced.price = Some(new_price);
        replaced.order_qty = request.qty;
        if !request.parties.is_empty() {
            replaced.parties = request.parties;
        }
        out.execution(
            &replaced,
            request.symbol,
            ExecType::Replaced,
            replaced.status(),
            Some(request.orig_cl_ord_id),
            None,
        );
        let side = self.instruments[order.instrument as usize]
            .book
            .side_mut(order.side);
        if keeps_priority {
            side.reduce(old_price, order.order_qty.0 - request.qty.0);
            *self.slab.get_mut(slot) = replaced;
        } else {
            // Losing priority: leave the queue, trade if the new price crosses, and rejoin at the
            // back of the new price's queue with whatever is left.
            side.unlink(&mut self.slab, slot);
            replaced.prev = NIL;
            replaced.next = NIL;
            self.match_aggressor(&mut replaced, out);
            self.settle_aggressor(replaced, Some(slot), true, out);
        }
    }

    /// Validation of a replace that does not depend on the book; the new price when it passes.
    fn check_replace(&self, order: &Order, request: &ReplaceOrder) -> Result<Price, RejectText> {
        if request.ord_type != order.ord_type {
            return Err(RejectText::OrdTypeChange);
        }
        let Some(price) = request.price else {
            return Err(RejectText::LimitOrderWithoutPrice);
        };
        let spec = &self.instruments[order.instrument as usize].spec;
        check_qty(request.qty, spec)?;
        if !price.is_multiple_of(spec.tick_size) {
            return Err(RejectText::PriceOffTick);
        }
        if request.qty <= order.cum_qty {
            return Err(RejectText::QtyNotAboveFilled);
        }
        Ok(price)
    }
}

/// Whether `aggressor` trades with a level of the opposite side at `price`.
fn opposite_crossed(aggressor: &Order, price: Price) -> bool {
    match (aggressor.price, aggressor.side) {
        (None, _) => true,
        (Some(limit), Side::Buy) => price <= limit,
        (Some(limit), Side::Sell) => price >= limit,
    }
}

/// Quantity rules shared by new orders and replaces.
fn check_qty(qty: Qty, spec: &InstrumentSpec) -> Result<(), RejectText> {
    if qty.0 == 0 {
        Err(RejectText::QtyZero)
    } else if qty.0 > ENGINE_ORDER_QTY_MAX {
        Err(RejectText::QtyTooLarge)
    } else if !qty.0.is_multiple_of(spec.lot_size) {
        Err(RejectText::QtyOffLot)
    } else {
        Ok(())
    }
}

impl Engine for MatchingEngine {
    fn apply(&mut self, input: &Input, outputs: &mut Vec<Output>) {
        assert!(
            Some(input.seq) == self.last_input_seq.checked_add(1),
            "input seq {} does not follow {}",
            input.seq,
            self.last_input_seq
        );
        assert!(
            input.time >= self.last_time,
            "input {} goes back in time: {:?} < {:?}",
            input.seq,
            input.time,
            self.last_time
        );
        self.last_input_seq = input.seq;
        self.last_time = input.time;
        let mut out = Emitter {
            outputs,
            input_seq: input.seq,
            index: 0,
            time: input.time,
        };
        match &input.request {
            Request::New(request) => self.new_order(input.session, request, &mut out),
            Request::Cancel(request) => self.cancel(input.session, request, &mut out),
            Request::Replace(request) => self.replace(input.session, request, &mut out),
            Request::Transfer(transfer) => {
                // Every engine applies the same transfer to the same state, so one that cannot
                // take it is one whose state already differed: it keeps its own, says why, and
                // the shadow comparison shows the difference from then on.
                if let Err(error) = self.apply_transfer(transfer, input.seq, input.time) {
                    tracing::error!(seq = input.seq, %error, "state transfer not applied");
                }
            }
        }
    }

    fn prepare(&mut self) {
        self.slab.keep_ahead(&mut self.ahead.slab);
        self.ahead.orders.keep(&mut self.orders);
        self.cl_ord_ids.keep_ahead(&mut self.ahead.cl_ord_ids);
    }

    fn last_input_seq(&self) -> u64 {
        self.last_input_seq
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        snapshot::write(self.snapshot_format, &self.canonical_state(), out);
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let state = snapshot::read(bytes)?;
        self.check_state(&state)?;
        self.load_state(state);
        Ok(())
    }

    fn digest(&self) -> Digest {
        snapshot::digest(&self.canonical_state())
    }

    fn build_version(&self) -> &str {
        self.snapshot_format.build_version()
    }

    fn freeze(&self) -> Option<Box<dyn FrozenState>> {
        Some(Box::new(self.frozen()))
    }

    fn withdraw(&mut self, order_id: u64) -> bool {
        MatchingEngine::withdraw(self, order_id)
    }
}
