//! Random order streams for the matching engine's property tests, shared by `engine_props` (one
//! engine's behavior) and `snapshot_versions` (engines writing different snapshot formats), so
//! both test the same kind of traffic.
//!
//! Streams mix three sessions, two configured symbols with different tick and lot sizes and one
//! unknown symbol, every order type and time in force, cancels and replaces of earlier orders
//! (own and other sessions'), duplicate ClOrdIDs, off-tick prices and off-lot quantities, on an
//! engine small enough that order, level and ClOrdID capacities are reached.

// Each test crate that declares this module uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;

use baton::engine::{
    CancelOrder, ClOrdId, Engine, EngineConfig, ExecType, Input, InstrumentConfig, MatchingEngine,
    NewOrder, OrdType, Output, Parties, Party, PartyId, Price, Qty, ReplaceOrder, Report, Request,
    Side, Symbol, TimeInForce,
};
use baton::fix::time::Timestamp;
use proptest::prelude::*;

/// (symbol, tick in raw price units, lot); the last one is not configured.
pub const SYMBOLS: [(&str, i64, u64); 3] = [
    ("AAA", Price::SCALE / 2, 1),
    ("BBB", Price::SCALE / 100, 10),
    ("ZZZ", Price::SCALE, 1),
];

/// Two instruments and capacities small enough that random streams reach them.
pub fn config() -> EngineConfig {
    EngineConfig {
        instruments: SYMBOLS[..2]
            .iter()
            .map(|&(symbol, tick, lot_size)| InstrumentConfig {
                symbol: symbol.into(),
                tick_size: Price(tick),
                lot_size,
            })
            .collect(),
        orders_max: 12,
        levels_max: 4,
        cl_ord_ids_max: 180,
    }
}

/// An empty engine on [`config`] writing the default snapshot format.
pub fn fresh() -> MatchingEngine {
    MatchingEngine::new(&config()).unwrap()
}

/// An empty engine on [`config`] writing snapshot format `format`.
pub fn fresh_writing(format: u16) -> MatchingEngine {
    MatchingEngine::with_snapshot_format(&config(), format).unwrap()
}

/// Order type and time in force of a new order.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Day,
    Ioc,
    Fok,
    Market,
    MarketIoc,
    /// A limit order without a price, which must be rejected.
    LimitWithoutPrice,
}

/// One client request, before it is turned into an input against the orders of the stream.
#[derive(Clone, Debug)]
pub enum Action {
    New {
        session: u32,
        symbol: usize,
        side: Side,
        kind: Kind,
        ticks: i64,
        off_tick: bool,
        lots: u64,
        off_lot: bool,
        /// Reuse an earlier ClOrdID of the session (a duplicate) instead of a fresh one.
        reuse: Option<usize>,
    },
    Cancel {
        /// Which earlier order, counted back from the most recent ones.
        pick: usize,
        /// Names the order's first ClOrdID instead of its latest (stale after a replace).
        stale: bool,
        /// Sent by the order's own session (otherwise by the next one: unknown order).
        own: bool,
        /// Names the wrong side (unknown order).
        wrong_side: bool,
    },
    Replace {
        pick: usize,
        own: bool,
        ticks: i64,
        lots: u64,
    },
}

/// Either side.
pub fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

/// Mostly Day limit orders, which build books.
pub fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        8 => Just(Kind::Day),
        2 => Just(Kind::Ioc),
        2 => Just(Kind::Fok),
        1 => Just(Kind::Market),
        1 => Just(Kind::MarketIoc),
        1 => Just(Kind::LimitWithoutPrice),
    ]
}

/// New orders, cancels and replaces, mostly valid.
pub fn action() -> impl Strategy<Value = Action> {
    let new = (
        1..=3u32,
        prop_oneof![10 => 0..2usize, 1 => Just(2usize)],
        side(),
        kind(),
        -4..=4i64,
        prop::bool::weighted(0.05),
        0..=6u64,
        prop::bool::weighted(0.05),
        prop::option::weighted(0.05, any::<usize>()),
    )
        .prop_map(
            |(session, symbol, side, kind, ticks, off_tick, lots, off_lot, reuse)| Action::New {
                session,
                symbol,
                side,
                kind,
                ticks,
                off_tick,
                lots,
                off_lot,
                reuse,
            },
        );
    let cancel = (
        any::<usize>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(pick, stale, own, wrong_side)| Action::Cancel {
            pick,
            stale,
            own,
            wrong_side,
        });
    let replace = (
        any::<usize>(),
        prop::bool::weighted(0.9),
        -4..=4i64,
        0..=6u64,
    )
        .prop_map(|(pick, own, ticks, lots)| Action::Replace {
            pick,
            own,
            ticks,
            lots,
        });
    prop_oneof![6 => new, 2 => cancel, 2 => replace]
}

/// Up to `max` actions, each with the time step before it (0 to 2 ns).
pub fn actions(max: usize) -> impl Strategy<Value = Vec<(Action, u64)>> {
    prop::collection::vec((action(), 0..3u64), 1..max)
}

/// An order the stream may later cancel or replace, as the client would track it.
struct Chain {
    session: u32,
    /// The ClOrdID of the NewOrderSingle; naming it after a replace is a stale reference.
    first: ClOrdId,
    latest: ClOrdId,
    symbol: Symbol,
    side: Side,
}

/// A ClOrdID from text the test controls.
pub fn id(text: &str) -> ClOrdId {
    ClOrdId::try_from_bytes(text.as_bytes()).unwrap()
}

/// A price near 100, buys a little lower and sells a little higher so that books build depth
/// (and reach the level capacity) while still crossing often.
pub fn price(symbol: usize, side: Side, ticks: i64, off_tick: bool) -> Price {
    let tick = SYMBOLS[symbol].1;
    let skew = match side {
        Side::Buy => -2,
        Side::Sell => 2,
    };
    Price(100 * Price::SCALE + (ticks + skew) * tick + if off_tick { tick / 2 } else { 0 })
}

/// Index of one of the 12 most recent of `len` orders: older ones are mostly done already.
pub fn recent(pick: usize, len: usize) -> usize {
    len - 1 - pick % len.min(12)
}

/// Turns actions into sequenced inputs. Like a client, it follows the acknowledgements (run on
/// a scratch engine) to know each order's latest ClOrdID, so that most cancels and replaces
/// name a live order and the rest exercise the reject paths.
pub fn build_inputs(actions: &[(Action, u64)]) -> Vec<Input> {
    let mut scratch = fresh();
    let mut chains: Vec<Chain> = Vec::new();
    let mut used: HashMap<u32, Vec<ClOrdId>> = HashMap::new();
    let mut inputs = Vec::with_capacity(actions.len());
    let mut time = 1_700_000_000_000_000_000u64;
    let mut outputs = Vec::new();
    for (n, (action, dt)) in actions.iter().enumerate() {
        let seq = n as u64 + 1;
        time += dt;
        let fresh_id = |session: u32| id(&format!("s{session}-{seq}"));
        let (session, request, chain_at) = match *action {
            Action::New {
                session,
                symbol,
                side,
                kind,
                ticks,
                off_tick,
                lots,
                off_lot,
                reuse,
            } => {
                let (sym, _, lot) = SYMBOLS[symbol];
                let ids = used.entry(session).or_default();
                let cl_ord_id = match reuse {
                    Some(pick) if !ids.is_empty() => ids[pick % ids.len()],
                    _ => fresh_id(session),
                };
                let (ord_type, time_in_force, limit) = match kind {
                    Kind::Day => (OrdType::Limit, TimeInForce::Day, true),
                    Kind::Ioc => (OrdType::Limit, TimeInForce::Ioc, true),
                    Kind::Fok => (OrdType::Limit, TimeInForce::Fok, true),
                    Kind::Market => (OrdType::Market, TimeInForce::Day, false),
                    Kind::MarketIoc => (OrdType::Market, TimeInForce::Ioc, false),
                    Kind::LimitWithoutPrice => (OrdType::Limit, TimeInForce::Day, false),
                };
                let request = NewOrder {
                    cl_ord_id,
                    symbol: Symbol::try_from_bytes(sym.as_bytes()).unwrap(),
                    side,
                    ord_type,
                    price: limit.then(|| price(symbol, side, ticks, off_tick)),
                    qty: Qty(lots * lot + u64::from(off_lot && lot > 1)),
                    time_in_force,
                    parties: Parties::NONE,
                };
                (session, Request::New(request), None)
            }
            Action::Cancel { .. } | Action::Replace { .. } if chains.is_empty() => {
                // Nothing to act on yet: a cancel of an id nobody used.
                let request = CancelOrder {
                    cl_ord_id: fresh_id(1),
                    orig_cl_ord_id: id("never-used"),
                    symbol: Symbol::try_from_bytes(b"AAA").unwrap(),
                    side: Side::Buy,
                    parties: Parties::NONE,
                };
                (1, Request::Cancel(request), None)
            }
            Action::Cancel {
                pick,
                stale,
                own,
                wrong_side,
            } => {
                let chain = &chains[recent(pick, chains.len())];
                let session = if own {
                    chain.session
                } else {
                    chain.session % 3 + 1
                };
                let request = CancelOrder {
                    cl_ord_id: fresh_id(session),
                    orig_cl_ord_id: if stale { chain.first } else { chain.latest },
                    symbol: chain.symbol,
                    side: if wrong_side {
                        chain.side.opposite()
                    } else {
                        chain.side
                    },
                    parties: Parties::NONE,
                };
                (session, Request::Cancel(request), None)
            }
            Action::Replace {
                pick,
                own,
                ticks,
                lots,
            } => {
                let at = pick % chains.len();
                let chain = &chains[at];
                let session = if own {
                    chain.session
                } else {
                    chain.session % 3 + 1
                };
                let symbol = SYMBOLS
                    .iter()
                    .position(|s| s.0.as_bytes() == chain.symbol.as_bytes())
                    .unwrap();
                let request = ReplaceOrder {
                    cl_ord_id: fresh_id(session),
                    orig_cl_ord_id: chain.latest,
                    symbol: chain.symbol,
                    side: chain.side,
                    ord_type: OrdType::Limit,
                    price: Some(price(symbol, chain.side, ticks, false)),
                    qty: Qty(lots * SYMBOLS[symbol].2),
                    parties: Parties::NONE,
                };
                (session, Request::Replace(request), Some(at))
            }
        };
        let input = Input {
            seq,
            time: Timestamp(time),
            session,
            request,
        };
        outputs.clear();
        scratch.apply(&input, &mut outputs);
        match &input.request {
            Request::New(order) => {
                used.entry(session).or_default().push(order.cl_ord_id);
                // Track orders that rest: the ones a client would later cancel or replace.
                if scratch
                    .open_orders()
                    .iter()
                    .any(|open| open.order_id == seq)
                {
                    chains.push(Chain {
                        session,
                        first: order.cl_ord_id,
                        latest: order.cl_ord_id,
                        symbol: order.symbol,
                        side: order.side,
                    });
                }
            }
            Request::Replace(replace) => {
                used.entry(session).or_default().push(replace.cl_ord_id);
                if let (Some(at), Report::Execution(r)) = (chain_at, &outputs[0].report)
                    && r.exec_type == ExecType::Replaced
                {
                    chains[at].latest = replace.cl_ord_id;
                }
            }
            Request::Cancel(cancel) => used.entry(session).or_default().push(cancel.cl_ord_id),
            // Not generated: the gateway makes transfers, counterparties do not.
            Request::Transfer(_) => {}
        }
        inputs.push(input);
    }
    inputs
}

/// The parties a stream gives input `seq`: none for a third of the inputs (so replaces both
/// keep and replace parties), otherwise one to three MiFID II-like parties whose identifiers
/// and qualifiers depend on `seq`, so two orders' parties differ and a mix-up shows.
pub fn parties_for(seq: u64) -> Parties {
    let count = (seq % 4) as usize;
    let roles = [3u16, 12, 122];
    let list: Vec<Party> = (0..count.min(3))
        .map(|i| {
            let id = format!("{}{}", ["C", "T", "D"][i], seq * 7 + i as u64);
            Party::try_from_wire(
                PartyId::try_from_bytes(id.as_bytes()).unwrap(),
                if i == 0 { b'P' } else { b'D' },
                roles[i],
                seq.is_multiple_of(2).then_some(22 + i as u16),
            )
            .unwrap()
        })
        .collect();
    Parties::from_slice(&list).unwrap()
}

/// `inputs` with [`parties_for`] each one's seq on every request: matching is unchanged, only
/// what orders carry and reports echo.
pub fn with_parties(inputs: &[Input]) -> Vec<Input> {
    inputs
        .iter()
        .map(|input| {
            let mut input = input.clone();
            let parties = parties_for(input.seq);
            match &mut input.request {
                Request::New(order) => order.parties = parties,
                Request::Cancel(cancel) => cancel.parties = parties,
                Request::Replace(replace) => replace.parties = parties,
                Request::Transfer(_) => {}
            }
            input
        })
        .collect()
}

/// Applies `inputs` to `engine`, returning each input's outputs.
pub fn run(engine: &mut MatchingEngine, inputs: &[Input]) -> Vec<Vec<Output>> {
    inputs
        .iter()
        .map(|input| {
            let mut outputs = Vec::new();
            engine.apply(input, &mut outputs);
            outputs
        })
        .collect()
}

/// A matching engine served on the link from a thread, for tests that talk to it with the real
/// client; [`RunningEngine::stop`] hands the engine back for inspection.
pub struct RunningEngine {
    /// Where it listens (the bound address when asked for port 0).
    pub addr: baton::link::LinkAddr,
    /// Stops the serve loop (also triggered directly by tests that stop without joining).
    pub shutdown: baton::link::Shutdown,
    /// The serve loop.
    thread: std::thread::JoinHandle<MatchingEngine>,
}

impl RunningEngine {
    /// Serves `engine` on `addr` with `config`.
    pub fn serve(
        engine: MatchingEngine,
        addr: &baton::link::LinkAddr,
        config: baton::link::ServeConfig,
    ) -> RunningEngine {
        let listener = baton::link::LinkListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = baton::link::Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            baton::link::serve_on(engine, listener, &config, &stop).unwrap()
        });
        RunningEngine {
            addr,
            shutdown,
            thread,
        }
    }

    /// Stops serving and returns the engine.
    pub fn stop(self) -> MatchingEngine {
        self.shutdown.trigger();
        self.thread.join().unwrap()
    }
}
