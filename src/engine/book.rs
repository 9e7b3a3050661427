//! Order records and the price levels they queue in, all in memory reserved at start.
//!
//! Orders live in one [`Slab`] addressed by `u32` indices; each price level is a FIFO threaded
//! through the orders themselves (`prev`/`next`), so joining or leaving a queue touches no
//! allocator. Each side of a book is a vector of levels sorted so that the best level is the
//! last element: the sweep of an aggressive order pops from the end, and the common case of
//! trading at the touch never shifts the vector.

use super::SessionId;
use super::types::{ClOrdId, OrdStatus, OrdType, Parties, Price, Qty, Side, TimeInForce};

/// "No order": the end of a FIFO or of the free list.
pub(crate) const NIL: u32 = u32::MAX;

/// One order, live in a book or being matched as the aggressor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Order {
    /// The OrderID: input seq of the NewOrderSingle that created it; unique, never reused.
    /// Zero marks a free slab slot.
    pub order_id: u64,
    /// Index of the order's record in the engine's list of the day's orders, where its state
    /// (live or how it ended) is kept.
    pub order_index: u32,
    /// Owner; all reports about the order go to this session.
    pub session: SessionId,
    /// The ClOrdID of the latest accepted request on the order (new or replace), the only one a
    /// cancel or replace may name as OrigClOrdID.
    pub cl_ord_id: ClOrdId,
    /// Index of the order's instrument in the engine's sorted instrument table.
    pub instrument: u32,
    /// Which side of the book it rests on or takes from.
    pub side: Side,
    /// Echoed in reports; a resting order is always a limit order.
    pub ord_type: OrdType,
    /// Echoed in reports; a resting order is always Day.
    pub time_in_force: TimeInForce,
    /// The limit; `None` only for a market order, which never rests.
    pub price: Option<Price>,
    /// Total quantity as last set by the client; always `> cum_qty` while the order rests.
    pub order_qty: Qty,
    /// Quantity filled so far.
    pub cum_qty: Qty,
    /// Sum of fill quantity × fill price in raw price units; exact, so AvgPx is reproducible.
    /// Bounded by `cum_qty × |i64::MAX|`, which `ENGINE_ORDER_QTY_MAX` keeps inside `i128`.
    pub notional: i128,
    /// Previous order in the level FIFO (towards the head), or [`NIL`].
    pub prev: u32,
    /// Next order in the level FIFO, or [`NIL`]; for a free slot, the next free slot.
    pub next: u32,
    /// The order's parties, echoed on every report about it: those of its NewOrderSingle, or of
    /// the latest replace that carried any. Inline, so the record stays `Copy` and the slab is
    /// still one allocation made at start.
    pub parties: Parties,
}

impl Order {
    /// What is still open.
    pub fn leaves_qty(&self) -> Qty {
        Qty(self.order_qty.0 - self.cum_qty.0)
    }

    /// The status a report about this order carries while it is live.
    pub fn status(&self) -> OrdStatus {
        if self.cum_qty.0 == 0 {
            OrdStatus::New
        } else if self.cum_qty.0 < self.order_qty.0 {
            OrdStatus::PartiallyFilled
        } else {
            OrdStatus::Filled
        }
    }

    /// Records a fill of `qty` at `price`.
    pub fn fill(&mut self, qty: Qty, price: Price) {
        assert!(
            qty.0 > 0 && qty.0 <= self.leaves_qty().0,
            "fill beyond leaves"
        );
        self.cum_qty.0 += qty.0;
        self.notional += i128::from(qty.0) * i128::from(price.0);
    }

    /// Volume-weighted average fill price.
    pub fn avg_px(&self) -> Price {
        avg_px(self.notional, self.cum_qty).expect("average of i64 fill prices fits an i64")
    }
}

/// `notional / cum_qty` rounded half away from zero, so that every engine computes the same
/// AvgPx to the last unit; `None` if it does not fit a [`Price`] (only for corrupt snapshots).
pub(crate) fn avg_px(notional: i128, cum_qty: Qty) -> Option<Price> {
    if cum_qty.0 == 0 {
        return (notional == 0).then_some(Price::ZERO);
    }
    let divisor = i128::from(cum_qty.0);
    let quotient = notional / divisor;
    let remainder = notional % divisor;
    let rounded = if 2 * remainder.abs() >= divisor {
        quotient + notional.signum()
    } else {
        quotient
    };
    i64::try_from(rounded).ok().map(Price)
}

/// Every order record, in memory reserved at start.
#[derive(Clone)]
pub(crate) struct Slab {
    /// Order records; grows by push up to `capacity` (never reallocating, as the vector was
    /// created with that capacity) and then only reuses freed slots.
    slots: Vec<Order>,
    /// Head of the list of freed slots, threaded through `Order::next`; [`NIL`] when empty.
    free_head: u32,
    /// `orders_max` from the configuration: the most records that may be live at once.
    capacity: u32,
    /// Live records, for capacity checks and snapshot validation.
    live: u32,
}

impl Slab {
    /// Reserves room for `capacity` orders.
    pub fn with_capacity(capacity: u32) -> Slab {
        Slab {
            slots: Vec::with_capacity(capacity as usize),
            free_head: NIL,
            capacity,
            live: 0,
        }
    }

    /// Makes the memory of the next records pushed present (see [`super::warm::Ahead`]).
    pub fn keep_ahead(&mut self, ahead: &mut super::warm::Ahead) {
        ahead.keep(&mut self.slots);
    }

    /// Whether one more order fits.
    pub fn has_room(&self) -> bool {
        self.live < self.capacity
    }

    /// The most records that may be live at once.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Live records.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// Forgets every order, keeping the reserved memory.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.free_head = NIL;
        self.live = 0;
    }

    /// Stores `order` and returns its index; callers check [`Slab::has_room`] first.
    pub fn insert(&mut self, order: Order) -> u32 {
        assert!(self.has_room(), "slab insert without room");
        assert!(order.order_id != 0, "order id 0 marks free slots");
        self.live += 1;
        if self.free_head != NIL {
            let index = self.free_head;
            let slot = &mut self.slots[index as usize];
            self.free_head = slot.next;
            *slot = order;
            index
        } else {
            let index = self.slots.len() as u32;
            self.slots.push(order);
            index
        }
    }

    /// Frees slot `index`.
    pub fn remove(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        assert!(slot.order_id != 0, "double free of slab slot {index}");
        slot.order_id = 0;
        slot.next = self.free_head;
        self.free_head = index;
        self.live -= 1;
    }

    /// The live order in slot `index`.
    pub fn get(&self, index: u32) -> &Order {
        let order = &self.slots[index as usize];
        debug_assert!(order.order_id != 0, "read of free slab slot {index}");
        order
    }

    /// The live order in slot `index`, for updates.
    pub fn get_mut(&mut self, index: u32) -> &mut Order {
        let order = &mut self.slots[index as usize];
        debug_assert!(order.order_id != 0, "write to free slab slot {index}");
        order
    }
}

/// All orders resting at one price on one side, in time priority.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Level {
    /// The price every order in the level rests at.
    pub price: Price,
    /// Oldest order (first to trade); never [`NIL`] while the level exists.
    pub head: u32,
    /// Newest order (where new arrivals join).
    pub tail: u32,
    /// Sum of the leaves of the level's orders, so a FOK check or a sweep estimate does not walk
    /// the FIFO.
    pub qty_total: u64,
    /// Orders in the FIFO; a level with zero orders is removed at once.
    pub count: u32,
}

/// One side of one book.
#[derive(Clone)]
pub(crate) struct BookSide {
    /// Which side; decides the sort direction of `levels`.
    side: Side,
    /// `levels_max` from the configuration; `levels.len()` never exceeds it, so the vector
    /// (created with this capacity) never reallocates.
    levels_max: usize,
    /// Levels sorted worst to best (bids ascending, asks descending), so the best is `last()`.
    /// Created with capacity `levels_max` and never allowed past it.
    pub levels: Vec<Level>,
}

impl BookSide {
    /// An empty side with room for `levels_max` levels.
    pub fn new(side: Side, levels_max: u32) -> BookSide {
        BookSide {
            side,
            levels_max: levels_max as usize,
            levels: Vec::with_capacity(levels_max as usize),
        }
    }

    /// Where the level at `price` is (`Ok`) or would be inserted (`Err`).
    pub fn position(&self, price: Price) -> Result<usize, usize> {
        match self.side {
            Side::Buy => self
                .levels
                .binary_search_by(|level| level.price.cmp(&price)),
            Side::Sell => self
                .levels
                .binary_search_by(|level| price.cmp(&level.price)),
        }
    }

    /// The best price, if any order rests.
    pub fn best(&self) -> Option<Price> {
        self.levels.last().map(|level| level.price)
    }

    /// Open quantity an aggressor on the other side with `limit` (`None`: market) could trade
    /// now, counted until it reaches `wanted`.
    pub fn crossing_qty(&self, limit: Option<Price>, wanted: u64) -> u64 {
        let mut total = 0u64;
        for level in self.levels.iter().rev() {
            if !self.crossed_by(limit, level.price) || total >= wanted {
                break;
            }
            total += level.qty_total;
        }
        total
    }

    /// Whether an aggressor with `limit` trades against a level of this side at `price`.
    pub fn crossed_by(&self, limit: Option<Price>, price: Price) -> bool {
        match (limit, self.side) {
            (None, _) => true,
            // This side holds bids: a sell at `limit` trades with bids at or above it.
            (Some(limit), Side::Buy) => price >= limit,
            (Some(limit), Side::Sell) => price <= limit,
        }
    }

    /// Appends order `index` (already in `slab`) to the FIFO at its price, creating the level if
    /// needed; callers have checked that a new level fits.
    pub fn push_back(&mut self, slab: &mut Slab, index: u32) {
        let order = *slab.get(index);
        let price = order.price.expect("resting orders have a price");
        let leaves = order.leaves_qty().0;
        assert!(leaves > 0, "resting order without leaves");
        match self.position(price) {
            Ok(at) => {
                let level = &mut self.levels[at];
                let tail = level.tail;
                slab.get_mut(tail).next = index;
                let linked = slab.get_mut(index);
                linked.prev = tail;
                linked.next = NIL;
                level.tail = index;
                level.qty_total += leaves;
                level.count += 1;
            }
            Err(at) => {
                assert!(
                    self.levels.len() < self.levels_max,
                    "level vector would pass levels_max"
                );
                let linked = slab.get_mut(index);
                linked.prev = NIL;
                linked.next = NIL;
                self.levels.insert(
                    at,
                    Level {
                        price,
                        head: index,
                        tail: index,
                        qty_total: leaves,
                        count: 1,
                    },
                );
            }
        }
    }

    /// Unlinks order `index` from its level, removing the level if it empties; the slot stays
    /// allocated.
    pub fn unlink(&mut self, slab: &mut Slab, index: u32) {
        let order = *slab.get(index);
        let price = order.price.expect("resting orders have a price");
        let at = self.position(price).expect("resting order's level exists");
        let level = &mut self.levels[at];
        if order.prev == NIL {
            level.head = order.next;
        } else {
            slab.get_mut(order.prev).next = order.next;
        }
        if order.next == NIL {
            level.tail = order.prev;
        } else {
            slab.get_mut(order.next).prev = order.prev;
        }
        level.qty_total -= order.leaves_qty().0;
        level.count -= 1;
        if level.count == 0 {
            self.levels.remove(at);
        }
    }

    /// Lowers the open quantity of the level at `price` after an in-place quantity decrease.
    pub fn reduce(&mut self, price: Price, qty: u64) {
        let at = self.position(price).expect("resting order's level exists");
        self.levels[at].qty_total -= qty;
    }

    /// Whether an order could join this side at `price` after the level at `leaving` (the price
    /// of an order about to be unlinked, if any) lost one order.
    pub fn has_room_for(&self, price: Price, leaving: Option<Price>) -> bool {
        if self.position(price).is_ok() {
            return true;
        }
        let freed = leaving
            .and_then(|p| self.position(p).ok())
            .is_some_and(|at| self.levels[at].count == 1);
        self.levels.len() - usize::from(freed) < self.levels_max
    }

    /// Orders in priority order: best level first, oldest first within a level.
    pub fn iter<'a>(&'a self, slab: &'a Slab) -> impl Iterator<Item = &'a Order> + 'a {
        self.levels.iter().rev().flat_map(move |level| {
            let mut next = level.head;
            std::iter::from_fn(move || {
                if next == NIL {
                    return None;
                }
                let order = slab.get(next);
                next = order.next;
                Some(order)
            })
        })
    }
}

/// The two sides of one instrument's book.
#[derive(Clone)]
pub(crate) struct Book {
    /// Resting buy orders.
    pub bids: BookSide,
    /// Resting sell orders.
    pub asks: BookSide,
}

impl Book {
    /// An empty book with room for `levels_max` levels per side.
    pub fn new(levels_max: u32) -> Book {
        Book {
            bids: BookSide::new(Side::Buy, levels_max),
            asks: BookSide::new(Side::Sell, levels_max),
        }
    }

    /// The side where orders of `side` rest.
    pub fn side(&self, side: Side) -> &BookSide {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    /// The side where orders of `side` rest, for updates.
    pub fn side_mut(&mut self, side: Side) -> &mut BookSide {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_px_rounds_half_away_from_zero() {
        assert_eq!(avg_px(0, Qty(0)), Some(Price(0)));
        assert_eq!(avg_px(5, Qty(0)), None);
        assert_eq!(avg_px(10, Qty(4)), Some(Price(3)));
        assert_eq!(avg_px(9, Qty(4)), Some(Price(2)));
        assert_eq!(avg_px(-10, Qty(4)), Some(Price(-3)));
        assert_eq!(avg_px(-9, Qty(4)), Some(Price(-2)));
        assert_eq!(
            avg_px(i128::from(i64::MAX) * 3, Qty(3)),
            Some(Price(i64::MAX))
        );
        assert_eq!(avg_px(i128::from(i64::MAX) * 3 + 2, Qty(3)), None);
    }
}
