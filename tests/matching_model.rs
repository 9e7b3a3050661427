//! Price-time priority checked against an independent model: a plain book (a `Vec` of orders,
//! linear scans for the best one) that is obviously right, driven side by side with
//! [`MatchingEngine`] over random limit, market, IOC and FOK orders, cancels and replaces. After
//! every input the fills (which orders, price, quantity, in order), the outcome of each cancel or
//! replace, and the whole resting book in priority order must agree.
//!
//! The model shares no code with the engine: it does not know about levels, slabs or queues, only
//! the rules. Best price first; at one price, the order that has waited longest. A replace keeps
//! the order's place only when the price is unchanged and the total quantity does not go up;
//! anything else takes it out of the queue, lets it trade at its new price and puts what is left
//! at the back.

use baton::engine::{
    CancelOrder, ClOrdId, Engine, EngineConfig, ExecType, Input, InstrumentConfig, MatchingEngine,
    NewOrder, OrdType, Output, Parties, Price, Qty, ReplaceOrder, Report, Request, Side, Symbol,
    TimeInForce,
};
use baton::fix::time::Timestamp;
use proptest::prelude::*;

const SYMBOL: &str = "XYZ";

/// Far more room than a stream can use, so no capacity reject muddies the comparison.
fn engine() -> MatchingEngine {
    MatchingEngine::new(&EngineConfig {
        instruments: vec![InstrumentConfig {
            symbol: SYMBOL.into(),
            tick_size: Price(Price::SCALE),
            lot_size: 1,
        }],
        orders_max: 1024,
        levels_max: 256,
        cl_ord_ids_max: 4096,
    })
    .unwrap()
}

fn symbol() -> Symbol {
    Symbol::try_from_bytes(SYMBOL.as_bytes()).unwrap()
}

fn cl_ord_id(n: u64) -> ClOrdId {
    ClOrdId::try_from_bytes(format!("C{n}").as_bytes()).unwrap()
}

/// How a new order may trade and rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Day,
    Ioc,
    Fok,
    Market,
}

/// How a replace sets the new total quantity, relative to the order it changes.
#[derive(Clone, Copy, Debug)]
enum NewQty {
    /// Down to the order's current leaves (FIX OrderQty counts fills, so this shrinks it).
    ToLeaves,
    /// Down to one more than the leaves: still a decrease, still above the leaves.
    AboveLeaves,
    /// Down by one.
    LessOne,
    /// Unchanged.
    Same,
    /// Up by this much.
    More(u64),
    /// Exactly what has filled: refused.
    ToFilled,
    /// One more than what has filled.
    FilledPlusOne,
}

#[derive(Clone, Debug)]
enum Action {
    New {
        session: u32,
        side: Side,
        kind: Kind,
        /// Limit price in whole ticks.
        price: i64,
        qty: u64,
    },
    /// Cancel the `pick`-th live order (modulo how many there are).
    Cancel { pick: usize },
    Replace {
        pick: usize,
        /// Price change in ticks; mostly zero, where priority is decided by quantity alone.
        delta: i64,
        qty: NewQty,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let kind = prop_oneof![
        6 => Just(Kind::Day),
        1 => Just(Kind::Ioc),
        1 => Just(Kind::Fok),
        1 => Just(Kind::Market),
    ];
    let new = (1..=2u32, side, kind, 97..=103i64, 1..=10u64).prop_map(
        |(session, side, kind, price, qty)| Action::New {
            session,
            side,
            kind,
            price,
            qty,
        },
    );
    let new_qty = prop_oneof![
        3 => Just(NewQty::ToLeaves),
        2 => Just(NewQty::AboveLeaves),
        2 => Just(NewQty::LessOne),
        1 => Just(NewQty::Same),
        2 => (1..=5u64).prop_map(NewQty::More),
        1 => Just(NewQty::ToFilled),
        2 => Just(NewQty::FilledPlusOne),
    ];
    let delta = prop_oneof![4 => Just(0i64), 1 => -2..=2i64];
    let replace = (any::<usize>(), delta, new_qty).prop_map(|(pick, delta, qty)| Action::Replace {
        pick,
        delta,
        qty,
    });
    let cancel = any::<usize>().prop_map(|pick| Action::Cancel { pick });
    prop_oneof![6 => new, 1 => cancel, 3 => replace]
}

/// A resting order in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Resting {
    order_id: u64,
    session: u32,
    /// Latest ClOrdID number.
    cl_ord: u64,
    side: Side,
    /// Whole ticks.
    price: i64,
    order_qty: u64,
    cum_qty: u64,
    /// When it joined its queue: lower waited longer.
    since: u64,
}

impl Resting {
    fn leaves(&self) -> u64 {
        self.order_qty - self.cum_qty
    }
}

/// One trade: (passive OrderID, aggressor OrderID, quantity, price in ticks).
type Fill = (u64, u64, u64, i64);

/// The obviously correct book.
#[derive(Default)]
struct Model {
    /// Resting orders, in no particular order.
    resting: Vec<Resting>,
    /// Next queue-join stamp.
    clock: u64,
}

impl Model {
    /// Whether a resting order at `price` on the other side trades with an aggressor.
    fn crosses(side: Side, limit: Option<i64>, price: i64) -> bool {
        match (side, limit) {
            (_, None) => true,
            (Side::Buy, Some(limit)) => price <= limit,
            (Side::Sell, Some(limit)) => price >= limit,
        }
    }

    /// Position of the resting order an aggressor meets first: best price, then longest wait.
    fn best_against(&self, side: Side, limit: Option<i64>) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, order) in self.resting.iter().enumerate() {
            if order.side == side || !Model::crosses(side, limit, order.price) {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => {
                    let current = &self.resting[b];
                    let price_better = match side {
                        Side::Buy => order.price < current.price,
                        Side::Sell => order.price > current.price,
                    };
                    price_better || (order.price == current.price && order.since < current.since)
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }

    /// Trades an aggressor for up to `qty`; returns what it filled.
    fn trade(
        &mut self,
        order_id: u64,
        side: Side,
        limit: Option<i64>,
        qty: u64,
        fills: &mut Vec<Fill>,
    ) -> u64 {
        let mut filled = 0;
        while filled < qty {
            let Some(i) = self.best_against(side, limit) else {
                break;
            };
            let passive = &mut self.resting[i];
            let size = passive.leaves().min(qty - filled);
            passive.cum_qty += size;
            filled += size;
            fills.push((passive.order_id, order_id, size, passive.price));
            if passive.leaves() == 0 {
                self.resting.remove(i);
            }
        }
        filled
    }

    fn rest(&mut self, mut order: Resting) {
        order.since = self.clock;
        self.clock += 1;
        self.resting.push(order);
    }

    /// The book in the engine's inspection order: bids best (highest) first, then asks best
    /// (lowest) first, longest waiting first at each price.
    fn book(&self) -> Vec<(u64, Side, i64, u64, u64)> {
        let mut orders: Vec<&Resting> = self.resting.iter().collect();
        orders.sort_by_key(|o| match o.side {
            Side::Buy => (0, -o.price, o.since),
            Side::Sell => (1, o.price, o.since),
        });
        orders
            .iter()
            .map(|o| (o.order_id, o.side, o.price, o.order_qty, o.cum_qty))
            .collect()
    }
}

/// The engine's trades for one input, as (passive, aggressor, qty, price) in report order:
/// each trade is reported passive first, aggressor second.
fn engine_fills(outputs: &[Output]) -> Vec<Fill> {
    let trades: Vec<_> = outputs
        .iter()
        .filter_map(|o| match &o.report {
            Report::Execution(r) if r.exec_type == ExecType::Trade => Some(r),
            _ => None,
        })
        .collect();
    assert!(trades.len() % 2 == 0, "trade reports come in pairs");
    trades
        .chunks(2)
        .map(|pair| {
            let price = pair[0].last_px.expect("a trade has a price");
            assert_eq!(price.0 % Price::SCALE, 0, "prices are whole ticks");
            (
                pair[0].order_id,
                pair[1].order_id,
                pair[0].last_qty.0,
                price.0 / Price::SCALE,
            )
        })
        .collect()
}

fn engine_book(engine: &MatchingEngine) -> Vec<(u64, Side, i64, u64, u64)> {
    engine
        .open_orders()
        .iter()
        .map(|o| {
            (
                o.order_id,
                o.side,
                o.price.0 / Price::SCALE,
                o.order_qty.0,
                o.cum_qty.0,
            )
        })
        .collect()
}

/// Whether the engine applied a cancel or replace (rather than answering OrderCancelReject).
fn engine_accepted(outputs: &[Output], wanted: ExecType) -> bool {
    let accepted = outputs
        .iter()
        .any(|o| matches!(&o.report, Report::Execution(r) if r.exec_type == wanted));
    let refused = outputs
        .iter()
        .any(|o| matches!(o.report, Report::CancelReject(_)));
    assert!(accepted != refused, "exactly one answer: {outputs:?}");
    accepted
}

/// Runs `actions` through both and compares after every input.
fn check(actions: &[Action]) -> Result<(), TestCaseError> {
    let mut engine = engine();
    let mut model = Model::default();
    let mut outputs = Vec::new();
    let mut seq = 0;
    for action in actions {
        // Inputs are numbered without gaps; an action skipped on an empty book takes none.
        let is_empty = model.resting.is_empty();
        if is_empty && !matches!(action, Action::New { .. }) {
            continue;
        }
        seq += 1;
        let id = cl_ord_id(seq);
        let mut fills = Vec::new();
        let (session, request, expect_accept) = match action {
            Action::New {
                session,
                side,
                kind,
                price,
                qty,
            } => {
                let limit = (*kind != Kind::Market).then_some(*price);
                let request = Request::New(NewOrder {
                    cl_ord_id: id,
                    symbol: symbol(),
                    side: *side,
                    ord_type: if limit.is_some() {
                        OrdType::Limit
                    } else {
                        OrdType::Market
                    },
                    price: limit.map(|p| Price(p * Price::SCALE)),
                    qty: Qty(*qty),
                    time_in_force: match kind {
                        Kind::Day => TimeInForce::Day,
                        Kind::Ioc | Kind::Market => TimeInForce::Ioc,
                        Kind::Fok => TimeInForce::Fok,
                    },
                    parties: Parties::NONE,
                });
                let available: u64 = model
                    .resting
                    .iter()
                    .filter(|o| o.side != *side && Model::crosses(*side, limit, o.price))
                    .map(Resting::leaves)
                    .sum();
                if *kind != Kind::Fok || available >= *qty {
                    let filled = model.trade(seq, *side, limit, *qty, &mut fills);
                    if *kind == Kind::Day && filled < *qty {
                        model.rest(Resting {
                            order_id: seq,
                            session: *session,
                            cl_ord: seq,
                            side: *side,
                            price: *price,
                            order_qty: *qty,
                            cum_qty: filled,
                            since: 0,
                        });
                    }
                }
                (*session, request, None)
            }
            Action::Cancel { pick } => {
                let order = model.resting.remove(pick % model.resting.len());
                let request = Request::Cancel(CancelOrder {
                    cl_ord_id: id,
                    orig_cl_ord_id: cl_ord_id(order.cl_ord),
                    symbol: symbol(),
                    side: order.side,
                    parties: Parties::NONE,
                });
                (order.session, request, Some((ExecType::Canceled, true)))
            }
            Action::Replace { pick, delta, qty } => {
                let i = pick % model.resting.len();
                let order = model.resting[i].clone();
                let new_qty = match qty {
                    NewQty::ToLeaves => order.leaves(),
                    NewQty::AboveLeaves => order.leaves() + 1,
                    NewQty::LessOne => order.order_qty - 1,
                    NewQty::Same => order.order_qty,
                    NewQty::More(more) => order.order_qty + more,
                    NewQty::ToFilled => order.cum_qty,
                    NewQty::FilledPlusOne => order.cum_qty + 1,
                };
                let new_price = order.price + delta;
                let request = Request::Replace(ReplaceOrder {
                    cl_ord_id: id,
                    orig_cl_ord_id: cl_ord_id(order.cl_ord),
                    symbol: symbol(),
                    side: order.side,
                    ord_type: OrdType::Limit,
                    price: Some(Price(new_price * Price::SCALE)),
                    qty: Qty(new_qty),
                    parties: Parties::NONE,
                });
                // A replace must leave something open: the new total must exceed the fills.
                let accepted = new_qty > order.cum_qty;
                if accepted {
                    let keeps_place = new_price == order.price && new_qty <= order.order_qty;
                    let order = &mut model.resting[i];
                    order.cl_ord = seq;
                    order.order_qty = new_qty;
                    order.price = new_price;
                    if !keeps_place {
                        let order = model.resting.remove(i);
                        let filled = model.trade(
                            order.order_id,
                            order.side,
                            Some(new_price),
                            order.leaves(),
                            &mut fills,
                        );
                        if filled < order.leaves() {
                            model.rest(Resting {
                                cum_qty: order.cum_qty + filled,
                                ..order
                            });
                        }
                    }
                }
                (order.session, request, Some((ExecType::Replaced, accepted)))
            }
        };
        outputs.clear();
        engine.apply(
            &Input {
                seq,
                time: Timestamp(seq),
                session,
                request,
            },
            &mut outputs,
        );
        if let Some((wanted, accepted)) = expect_accept {
            prop_assert_eq!(
                engine_accepted(&outputs, wanted),
                accepted,
                "input {} {:?}",
                seq,
                action
            );
        }
        prop_assert_eq!(
            engine_fills(&outputs),
            fills,
            "fills of input {} {:?}",
            seq,
            action
        );
        prop_assert_eq!(
            engine_book(&engine),
            model.book(),
            "book after input {} {:?}",
            seq,
            action
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matching_agrees_with_a_plain_price_time_book(
        actions in prop::collection::vec(action(), 1..120)
    ) {
        check(&actions)?;
    }
}

/// The case the random streams must reach, spelled out: partly filled orders shrunk to their
/// leaves, and to just above them, at the same price keep their places ahead of later orders
/// at that price.
#[test]
fn a_partly_filled_order_shrunk_to_its_leaves_keeps_its_place() {
    let sell = |price, qty| Action::New {
        session: 1,
        side: Side::Sell,
        kind: Kind::Day,
        price,
        qty,
    };
    let buy = |qty| Action::New {
        session: 2,
        side: Side::Buy,
        kind: Kind::Day,
        price: 100,
        qty,
    };
    check(&[
        sell(100, 10),
        sell(100, 10),
        buy(4),
        Action::Replace {
            pick: 0,
            delta: 0,
            qty: NewQty::ToLeaves,
        },
        buy(3),
        sell(101, 10),
        sell(101, 10),
        Action::New {
            session: 2,
            side: Side::Buy,
            kind: Kind::Day,
            price: 101,
            // The 9 left at 100, then 4 of the first sell at 101.
            qty: 9 + 4,
        },
        // That sell, 10 with 4 filled and 6 left, down to 7; it is now the oldest resting order.
        Action::Replace {
            pick: 0,
            delta: 0,
            qty: NewQty::AboveLeaves,
        },
        Action::New {
            session: 2,
            side: Side::Buy,
            kind: Kind::Day,
            price: 101,
            qty: 2,
        },
    ])
    .unwrap();
}
