//! Properties of the matching engine over random order streams: determinism, snapshot/restore
//! equivalence, an uncrossed book, conservation of quantity, one acknowledgement per order, and
//! a restore that never panics whatever the bytes. The streams come from `support_engine`.

mod support_engine;

use std::collections::{HashMap, HashSet};

use baton::engine::{
    Engine, ExecType, ExecutionReport, MatchingEngine, OrdStatus, Output, Qty, Report, Request,
    Side, Symbol,
};
use baton::fix::time::Timestamp;
use proptest::prelude::*;
use support_engine::{Action, Kind, SYMBOLS, actions, build_inputs, fresh, run};

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
                // Not generated: only the gateway makes transfers, and they answer no one.
                Request::Transfer(_) => prop_assert!(outputs.is_empty()),
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
