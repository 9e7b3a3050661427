//! Properties of the matching engine over random order streams: determinism, snapshot/restore
//! equivalence, an uncrossed book, conservation of quantity, one acknowledgement per order, and
//! a restore that never panics whatever the bytes.
//!
//! Streams mix three sessions, two configured symbols with different tick and lot sizes and one
//! unknown symbol, every order type and time in force, cancels and replaces of earlier orders
//! (own and other sessions'), duplicate ClOrdIDs, off-tick prices and off-lot quantities, on an
//! engine small enough that order, level and ClOrdID capacities are reached.

use std::collections::{HashMap, HashSet};

use baton::engine::{
    CancelOrder, ClOrdId, Engine, EngineConfig, ExecType, ExecutionReport, Input, InstrumentConfig,
    MatchingEngine, NewOrder, OrdStatus, OrdType, Output, Price, Qty, ReplaceOrder, Report,
    Request, Side, Symbol, TimeInForce,
};
use baton::fix::time::Timestamp;
use proptest::prelude::*;

/// (symbol, tick in raw price units, lot); the last one is not configured.
const SYMBOLS: [(&str, i64, u64); 3] = [
    ("AAA", Price::SCALE / 2, 1),
    ("BBB", Price::SCALE / 100, 10),
    ("ZZZ", Price::SCALE, 1),
];

fn config() -> EngineConfig {
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

fn fresh() -> MatchingEngine {
    MatchingEngine::new(&config()).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Day,
    Ioc,
    Fok,
    Market,
    MarketIoc,
    /// A limit order without a price, which must be rejected.
    LimitWithoutPrice,
}

#[derive(Clone, Debug)]
enum Action {
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

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        8 => Just(Kind::Day),
        2 => Just(Kind::Ioc),
        2 => Just(Kind::Fok),
        1 => Just(Kind::Market),
        1 => Just(Kind::MarketIoc),
        1 => Just(Kind::LimitWithoutPrice),
    ]
}

fn action() -> impl Strategy<Value = Action> {
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

fn actions(max: usize) -> impl Strategy<Value = Vec<(Action, u64)>> {
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

fn id(text: &str) -> ClOrdId {
    ClOrdId::try_from_bytes(text.as_bytes()).unwrap()
}

/// A price near 100, buys a little lower and sells a little higher so that books build depth
/// (and reach the level capacity) while still crossing often.
fn price(symbol: usize, side: Side, ticks: i64, off_tick: bool) -> Price {
    let tick = SYMBOLS[symbol].1;
    let skew = match side {
        Side::Buy => -2,
        Side::Sell => 2,
    };
    Price(100 * Price::SCALE + (ticks + skew) * tick + if off_tick { tick / 2 } else { 0 })
}

/// Index of one of the 12 most recent of `len` orders: older ones are mostly done already.
fn recent(pick: usize, len: usize) -> usize {
    len - 1 - pick % len.min(12)
}

/// Turns actions into sequenced inputs. Like a client, it follows the acknowledgements (run on
/// a scratch engine) to know each order's latest ClOrdID, so that most cancels and replaces
/// name a live order and the rest exercise the reject paths.
fn build_inputs(actions: &[(Action, u64)]) -> Vec<Input> {
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
        }
        inputs.push(input);
    }
    inputs
}

/// Applies `inputs` to `engine`, returning each input's outputs.
fn run(engine: &mut MatchingEngine, inputs: &[Input]) -> Vec<Vec<Output>> {
    inputs
        .iter()
        .map(|input| {
            let mut outputs = Vec::new();
            engine.apply(input, &mut outputs);
            outputs
        })
        .collect()
}

fn exec(output: &Output) -> Option<&ExecutionReport> {
    match &output.report {
        Report::Execution(report) => Some(report),
        Report::CancelReject(_) => None,
    }
}

fn symbols() -> impl Iterator<Item = Symbol> {
    SYMBOLS
        .iter()
        .map(|s| Symbol::try_from_bytes(s.0.as_bytes()).unwrap())
}

/// Fill quantities seen so far, per order and per side.
#[derive(Default)]
struct Ledger {
    /// Sum of LastQty of every Trade report, by OrderID.
    filled: HashMap<u64, u64>,
    /// Orders that reported Filled or Canceled; nothing may follow about them.
    ended: HashSet<u64>,
    /// Quantity bought across all trades.
    bought: u64,
    /// Quantity sold across all trades.
    sold: u64,
}

impl Ledger {
    /// Checks one input's reports for quantity conservation and records them.
    fn record(&mut self, outputs: &[Output]) -> Result<(), TestCaseError> {
        let mut trades = Vec::new();
        for output in outputs {
            let Some(report) = exec(output) else { continue };
            if report.exec_type == ExecType::Rejected {
                continue;
            }
            prop_assert!(
                !self.ended.contains(&report.order_id),
                "report about ended order {}",
                report.order_id
            );
            if report.exec_type == ExecType::Trade {
                let filled = self.filled.entry(report.order_id).or_default();
                *filled += report.last_qty.0;
                prop_assert_eq!(*filled, report.cum_qty.0, "CumQty is the sum of LastQty");
                prop_assert!(report.last_qty.0 > 0 && report.last_px.is_some());
                trades.push(report);
            }
            match report.ord_status {
                OrdStatus::Filled => {
                    prop_assert_eq!(report.cum_qty, report.order_qty);
                    prop_assert_eq!(report.leaves_qty, Qty(0));
                    self.ended.insert(report.order_id);
                }
                OrdStatus::Canceled => {
                    prop_assert_eq!(report.leaves_qty, Qty(0));
                    prop_assert!(report.cum_qty < report.order_qty);
                    self.ended.insert(report.order_id);
                }
                OrdStatus::New | OrdStatus::PartiallyFilled => {
                    prop_assert_eq!(report.order_qty.0, report.cum_qty.0 + report.leaves_qty.0);
                    prop_assert!(report.leaves_qty.0 > 0);
                }
                OrdStatus::Rejected => {
                    prop_assert!(false, "non-reject report with status Rejected")
                }
            }
        }
        prop_assert!(trades.len() % 2 == 0, "trade reports come in pairs");
        for pair in trades.chunks(2) {
            let (passive, aggressor) = (pair[0], pair[1]);
            prop_assert_eq!(passive.last_qty, aggressor.last_qty);
            prop_assert_eq!(passive.last_px, aggressor.last_px);
            prop_assert_eq!(passive.symbol, aggressor.symbol);
            prop_assert_eq!(passive.side, aggressor.side.opposite());
            prop_assert_eq!(
                Some(passive.price.unwrap()),
                passive.last_px,
                "trades at the passive price"
            );
            for report in pair {
                match report.side {
                    Side::Buy => self.bought += report.last_qty.0,
                    Side::Sell => self.sold += report.last_qty.0,
                }
            }
        }
        prop_assert_eq!(self.bought, self.sold, "total bought == total sold");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn same_inputs_give_same_outputs_and_digest(actions in actions(200)) {
        let inputs = build_inputs(&actions);
        let (mut first, mut second) = (fresh(), fresh());
        prop_assert_eq!(run(&mut first, &inputs), run(&mut second, &inputs));
        prop_assert_eq!(first.digest(), second.digest());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        first.snapshot(&mut a);
        second.snapshot(&mut b);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn snapshot_restore_then_replay_matches_an_uninterrupted_run(
        actions in actions(200),
        split in any::<prop::sample::Index>(),
    ) {
        let inputs = build_inputs(&actions);
        let split = split.index(inputs.len() + 1);
        let mut uninterrupted = fresh();
        let expected = run(&mut uninterrupted, &inputs);

        let mut before = fresh();
        run(&mut before, &inputs[..split]);
        let mut bytes = Vec::new();
        before.snapshot(&mut bytes);
        let mut after = fresh();
        after.restore(&bytes).unwrap();
        prop_assert_eq!(after.last_input_seq(), split as u64);
        prop_assert_eq!(after.digest(), before.digest());
        prop_assert_eq!(after.open_orders(), before.open_orders());

        prop_assert_eq!(&run(&mut after, &inputs[split..])[..], &expected[split..]);
        prop_assert_eq!(after.digest(), uninterrupted.digest());
    }

    #[test]
    fn book_never_crosses(actions in actions(200)) {
        let inputs = build_inputs(&actions);
        let mut engine = fresh();
        let mut outputs = Vec::new();
        for input in &inputs {
            engine.apply(input, &mut outputs);
            for symbol in symbols() {
                if let (Some(bid), Some(ask)) = (engine.best_bid(symbol), engine.best_ask(symbol)) {
                    prop_assert!(bid < ask, "{} crossed after input {}: {:?} >= {:?}", symbol, input.seq, bid, ask);
                }
            }
        }
    }

    #[test]
    fn quantity_is_conserved(actions in actions(200)) {
        let inputs = build_inputs(&actions);
        let mut engine = fresh();
        let mut ledger = Ledger::default();
        let mut outputs = Vec::new();
        for input in &inputs {
            outputs.clear();
            engine.apply(input, &mut outputs);
            ledger.record(&outputs)?;
            for open in engine.open_orders() {
                prop_assert_eq!(open.order_qty.0, open.cum_qty.0 + open.leaves_qty.0);
                prop_assert!(open.leaves_qty.0 > 0);
                prop_assert_eq!(open.cum_qty.0, ledger.filled.get(&open.order_id).copied().unwrap_or(0));
                prop_assert!(!ledger.ended.contains(&open.order_id));
            }
        }
    }

    #[test]
    fn each_new_order_is_acknowledged_exactly_once(actions in actions(200)) {
        let inputs = build_inputs(&actions);
        let mut engine = fresh();
        for (input, outputs) in inputs.iter().zip(run(&mut engine, &inputs)) {
            prop_assert!(!outputs.is_empty(), "every input is answered");
            for (index, output) in outputs.iter().enumerate() {
                prop_assert_eq!((output.input_seq, output.index as usize), (input.seq, index));
            }
            let acks: Vec<usize> = outputs
                .iter()
                .enumerate()
                .filter(|(_, o)| exec(o).is_some_and(|r| matches!(r.exec_type, ExecType::New | ExecType::Rejected)))
                .map(|(at, _)| at)
                .collect();
            match &input.request {
                Request::New(_) => {
                    prop_assert_eq!(acks, vec![0], "one acknowledgement, first");
                    prop_assert_eq!(outputs[0].session, input.session);
                }
                Request::Cancel(_) | Request::Replace(_) => {
                    prop_assert!(acks.is_empty());
                    prop_assert_eq!(outputs[0].session, input.session);
                    let answers = outputs
                        .iter()
                        .filter(|o| match &o.report {
                            Report::CancelReject(_) => true,
                            Report::Execution(r) => matches!(r.exec_type, ExecType::Canceled | ExecType::Replaced),
                        })
                        .count();
                    prop_assert_eq!(answers, 1, "one answer per cancel or replace");
                }
            }
        }
    }

    #[test]
    fn restore_of_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        header in prop_oneof![Just(&b""[..]), Just(&b"BTNSNAP\0"[..]), Just(&b"BTNSNAP\0\x01\x00"[..])],
    ) {
        let mut snapshot = header.to_vec();
        snapshot.extend_from_slice(&bytes);
        let mut engine = fresh();
        if engine.restore(&snapshot).is_ok() {
            exercise_restored(&mut engine)?;
        }
    }

    #[test]
    fn restore_of_a_corrupted_snapshot_never_panics(
        actions in actions(80),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..4),
        cut in prop::option::weighted(0.3, any::<prop::sample::Index>()),
    ) {
        let inputs = build_inputs(&actions);
        let mut source = fresh();
        run(&mut source, &inputs);
        let mut snapshot = Vec::new();
        source.snapshot(&mut snapshot);
        for (at, xor) in &flips {
            let at = at.index(snapshot.len());
            snapshot[at] ^= xor;
        }
        if let Some(cut) = cut {
            snapshot.truncate(cut.index(snapshot.len()));
        }
        let mut engine = fresh();
        let before = engine.digest();
        match engine.restore(&snapshot) {
            Ok(()) => exercise_restored(&mut engine)?,
            Err(_) => prop_assert_eq!(engine.digest(), before, "a failed restore changes nothing"),
        }
    }
}

/// Whatever a restore accepted must be a state the engine can keep working from: it snapshots
/// and restores again to the same digest, and applies further inputs without tripping an
/// internal assertion.
fn exercise_restored(engine: &mut MatchingEngine) -> Result<(), TestCaseError> {
    let mut again = Vec::new();
    engine.snapshot(&mut again);
    let mut copy = fresh();
    prop_assert!(
        copy.restore(&again).is_ok(),
        "a restored state snapshots into a valid snapshot"
    );
    prop_assert_eq!(copy.digest(), engine.digest());
    let base = engine.last_input_seq();
    if base == u64::MAX {
        return Ok(());
    }
    let probe: Vec<(Action, u64)> = (0..40)
        .map(|n| {
            let action = match n % 4 {
                0 | 1 => Action::New {
                    session: n % 3 + 1,
                    symbol: (n % 2) as usize,
                    side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
                    kind: if n % 8 == 1 { Kind::Market } else { Kind::Day },
                    ticks: (n as i64 % 5) - 2,
                    off_tick: false,
                    lots: u64::from(n % 3 + 1),
                    off_lot: false,
                    reuse: None,
                },
                2 => Action::Replace {
                    pick: n as usize,
                    own: true,
                    ticks: 1,
                    lots: 2,
                },
                _ => Action::Cancel {
                    pick: n as usize,
                    stale: false,
                    own: true,
                    wrong_side: false,
                },
            };
            (action, 0)
        })
        .collect();
    let mut outputs = Vec::new();
    for (n, mut input) in build_inputs(&probe).into_iter().enumerate() {
        let Some(seq) = base.checked_add(n as u64 + 1) else {
            break;
        };
        input.seq = seq;
        // The restored time is unknown here; the latest representable time is never earlier.
        input.time = Timestamp(u64::MAX);
        engine.apply(&input, &mut outputs);
    }
    Ok(())
}
