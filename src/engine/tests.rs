//! Behavior of the matching engine, one rule per test, with exact expected reports.

use super::snapshot::{self, v1, v2};
use super::*;

const AAA: &str = "AAA";
const BBB: &str = "BBB";

fn cid(text: &str) -> ClOrdId {
    ClOrdId::try_from_bytes(text.as_bytes()).unwrap()
}

fn sym(text: &str) -> Symbol {
    Symbol::try_from_bytes(text.as_bytes()).unwrap()
}

fn px(text: &str) -> Price {
    Price::parse_decimal(text.as_bytes()).unwrap()
}

fn small_config() -> EngineConfig {
    EngineConfig {
        instruments: vec![
            InstrumentConfig {
                symbol: AAA.into(),
                tick_size: px("0.01"),
                lot_size: 1,
            },
            InstrumentConfig {
                symbol: BBB.into(),
                tick_size: px("0.5"),
                lot_size: 10,
            },
        ],
        orders_max: 64,
        levels_max: 8,
        cl_ord_ids_max: 256,
    }
}

/// An engine plus the sequencer's job: consecutive seqs and rising times.
struct Harness {
    engine: MatchingEngine,
    seq: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(&small_config())
    }

    fn with_config(config: &EngineConfig) -> Harness {
        Harness {
            engine: MatchingEngine::new(config).unwrap(),
            seq: 0,
        }
    }

    /// An engine that writes snapshot format `format`.
    fn with_format(format: u16) -> Harness {
        Harness {
            engine: MatchingEngine::with_snapshot_format(&small_config(), format).unwrap(),
            seq: 0,
        }
    }

    fn apply(&mut self, session: SessionId, request: Request) -> Vec<Output> {
        self.seq += 1;
        let input = Input {
            seq: self.seq,
            time: Timestamp(1_000 * self.seq),
            session,
            request,
        };
        let mut outputs = Vec::new();
        self.engine.apply(&input, &mut outputs);
        for (i, output) in outputs.iter().enumerate() {
            assert_eq!(output.input_seq, self.seq);
            assert_eq!(output.index as usize, i);
        }
        outputs
    }

    #[allow(clippy::too_many_arguments)]
    fn order(
        &mut self,
        session: SessionId,
        id: &str,
        symbol: &str,
        side: Side,
        price: Option<&str>,
        qty: u64,
        tif: TimeInForce,
    ) -> Vec<Output> {
        let ord_type = if price.is_some() {
            OrdType::Limit
        } else {
            OrdType::Market
        };
        self.apply(
            session,
            Request::New(NewOrder {
                cl_ord_id: cid(id),
                symbol: sym(symbol),
                side,
                ord_type,
                price: price.map(px),
                qty: Qty(qty),
                time_in_force: tif,
                parties: Parties::NONE,
            }),
        )
    }

    fn limit(
        &mut self,
        session: SessionId,
        id: &str,
        side: Side,
        price: &str,
        qty: u64,
    ) -> Vec<Output> {
        self.order(session, id, AAA, side, Some(price), qty, TimeInForce::Day)
    }

    fn cancel(&mut self, session: SessionId, id: &str, orig: &str, side: Side) -> Vec<Output> {
        self.apply(
            session,
            Request::Cancel(CancelOrder {
                cl_ord_id: cid(id),
                orig_cl_ord_id: cid(orig),
                symbol: sym(AAA),
                side,
                parties: Parties::NONE,
            }),
        )
    }

    fn replace(
        &mut self,
        session: SessionId,
        id: &str,
        orig: &str,
        side: Side,
        price: &str,
        qty: u64,
    ) -> Vec<Output> {
        self.apply(
            session,
            Request::Replace(ReplaceOrder {
                cl_ord_id: cid(id),
                orig_cl_ord_id: cid(orig),
                symbol: sym(AAA),
                side,
                ord_type: OrdType::Limit,
                price: Some(px(price)),
                qty: Qty(qty),
                parties: Parties::NONE,
            }),
        )
    }

    /// (session, ClOrdID, leaves) of the resting orders of AAA in book order.
    fn book(&self) -> Vec<(SessionId, String, u64)> {
        self.engine
            .open_orders()
            .iter()
            .filter(|o| o.symbol == sym(AAA))
            .map(|o| (o.session, o.cl_ord_id.to_string(), o.leaves_qty.0))
            .collect()
    }
}

fn exec(output: &Output) -> &ExecutionReport {
    match &output.report {
        Report::Execution(report) => report,
        Report::CancelReject(reject) => panic!("expected an execution report, got {reject:?}"),
    }
}

fn cxl_reject(output: &Output) -> &CancelReject {
    match &output.report {
        Report::CancelReject(reject) => reject,
        Report::Execution(report) => panic!("expected a cancel reject, got {report:?}"),
    }
}

/// (session, ExecType, OrdStatus, ClOrdID, LastQty, CumQty, LeavesQty) of each output.
fn summary(outputs: &[Output]) -> Vec<(SessionId, ExecType, OrdStatus, String, u64, u64, u64)> {
    outputs
        .iter()
        .map(|o| {
            let r = exec(o);
            (
                o.session,
                r.exec_type,
                r.ord_status,
                r.cl_ord_id.to_string(),
                r.last_qty.0,
                r.cum_qty.0,
                r.leaves_qty.0,
            )
        })
        .collect()
}

fn assert_rejected(outputs: &[Output], reason: OrdRejReason, text: RejectText) {
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let report = exec(&outputs[0]);
    assert_eq!(report.exec_type, ExecType::Rejected);
    assert_eq!(report.ord_status, OrdStatus::Rejected);
    assert_eq!(report.ord_rej_reason, Some(reason));
    assert_eq!(report.text, Some(text));
    assert_eq!((report.cum_qty, report.leaves_qty), (Qty(0), Qty(0)));
}

use super::ExecType::{Canceled, New as Ack, Replaced, Trade};
use super::OrdStatus::{Canceled as Done, Filled, New as Open, PartiallyFilled as Partial};
use super::Side::{Buy, Sell};
use super::TimeInForce::{Day, Fok, Ioc};

#[test]
fn limit_order_rests_and_is_acknowledged() {
    let mut h = Harness::new();
    let out = h.limit(1, "b1", Buy, "100.25", 10);
    assert_eq!(summary(&out), [(1, Ack, Open, "b1".into(), 0, 0, 10)]);
    let ack = exec(&out[0]);
    assert_eq!(ack.order_id, 1);
    assert_eq!(ack.price, Some(px("100.25")));
    assert_eq!(ack.transact_time, Timestamp(1_000));
    assert_eq!(ack.last_px, None);
    assert_eq!(h.engine.best_bid(sym(AAA)), Some(px("100.25")));
    assert_eq!(h.engine.best_ask(sym(AAA)), None);
    assert_eq!(h.engine.last_input_seq(), 1);
}

#[test]
fn fill_reports_go_to_both_sessions() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 10);
    let out = h.limit(2, "b1", Buy, "101", 4);
    assert_eq!(
        summary(&out),
        [
            (2, Ack, Open, "b1".into(), 0, 0, 4),
            (1, Trade, Partial, "s1".into(), 4, 4, 6),
            (2, Trade, Filled, "b1".into(), 4, 4, 0),
        ]
    );
    for report in [exec(&out[1]), exec(&out[2])] {
        assert_eq!(
            report.last_px,
            Some(px("100")),
            "trades at the passive price"
        );
        assert_eq!(report.avg_px, px("100"));
    }
    assert_eq!(exec(&out[1]).order_id, 1);
    assert_eq!(exec(&out[2]).order_id, 2);
    assert_eq!(h.book(), [(1, "s1".into(), 6)]);
}

#[test]
fn sweep_follows_price_then_time_priority() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "101", 5);
    h.limit(2, "s2", Sell, "100", 5);
    h.limit(3, "s3", Sell, "100", 5);
    h.limit(1, "s4", Sell, "102", 5);
    let out = h.limit(4, "b1", Buy, "101", 12);
    assert_eq!(
        summary(&out),
        [
            (4, Ack, Open, "b1".into(), 0, 0, 12),
            (2, Trade, Filled, "s2".into(), 5, 5, 0),
            (4, Trade, Partial, "b1".into(), 5, 5, 7),
            (3, Trade, Filled, "s3".into(), 5, 5, 0),
            (4, Trade, Partial, "b1".into(), 5, 10, 2),
            (1, Trade, Partial, "s1".into(), 2, 2, 3),
            (4, Trade, Filled, "b1".into(), 2, 12, 0),
        ]
    );
    assert_eq!(exec(&out[5]).last_px, Some(px("101")));
    // (5×100 + 5×100 + 2×101) / 12 = 100.1666… → 100.16666667
    assert_eq!(exec(&out[6]).avg_px, Price(10_016_666_667));
    assert_eq!(h.engine.best_ask(sym(AAA)), Some(px("101")));
    assert_eq!(h.book(), [(1, "s1".into(), 3), (1, "s4".into(), 5)]);
}

#[test]
fn limit_remainder_rests_after_partial_fill() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 3);
    let out = h.limit(2, "b1", Buy, "100", 10);
    assert_eq!(out.len(), 3);
    assert_eq!(h.book(), [(2, "b1".into(), 7)]);
    assert_eq!(h.engine.best_bid(sym(AAA)), Some(px("100")));
    let open = h.engine.open_orders();
    assert_eq!((open[0].order_qty, open[0].cum_qty), (Qty(10), Qty(3)));
}

#[test]
fn ioc_remainder_is_canceled() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 3);
    let out = h.order(2, "b1", AAA, Buy, Some("100"), 10, Ioc);
    assert_eq!(
        summary(&out),
        [
            (2, Ack, Open, "b1".into(), 0, 0, 10),
            (1, Trade, Filled, "s1".into(), 3, 3, 0),
            (2, Trade, Partial, "b1".into(), 3, 3, 7),
            (2, Canceled, Done, "b1".into(), 0, 3, 0),
        ]
    );
    assert!(h.book().is_empty());
}

#[test]
fn market_order_never_rests() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 3);
    h.limit(1, "s2", Sell, "105", 3);
    let out = h.order(2, "m1", AAA, Buy, None, 10, Day);
    assert_eq!(
        summary(&out),
        [
            (2, Ack, Open, "m1".into(), 0, 0, 10),
            (1, Trade, Filled, "s1".into(), 3, 3, 0),
            (2, Trade, Partial, "m1".into(), 3, 3, 7),
            (1, Trade, Filled, "s2".into(), 3, 3, 0),
            (2, Trade, Partial, "m1".into(), 3, 6, 4),
            (2, Canceled, Done, "m1".into(), 0, 6, 0),
        ]
    );
    assert_eq!(exec(&out[0]).price, None);
    assert_eq!(exec(&out[5]).avg_px, px("102.5"));
    let out = h.order(2, "m2", AAA, Sell, None, 1, Day);
    assert_eq!(
        summary(&out),
        [
            (2, Ack, Open, "m2".into(), 0, 0, 1),
            (2, Canceled, Done, "m2".into(), 0, 0, 0),
        ]
    );
    assert!(h.book().is_empty());
}

#[test]
fn fok_without_enough_liquidity_does_nothing() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 5);
    h.limit(1, "s2", Sell, "102", 5);
    let before = h.engine.digest();
    let out = h.order(2, "f1", AAA, Buy, Some("101"), 6, Fok);
    assert_eq!(
        summary(&out),
        [
            (2, Ack, Open, "f1".into(), 0, 0, 6),
            (2, Canceled, Done, "f1".into(), 0, 0, 0)
        ]
    );
    assert_eq!(h.book(), [(1, "s1".into(), 5), (1, "s2".into(), 5)]);
    assert_ne!(
        h.engine.digest(),
        before,
        "the ClOrdID is used even though nothing traded"
    );
}

#[test]
fn fok_with_enough_liquidity_fills_completely() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 5);
    h.limit(1, "s2", Sell, "102", 5);
    let out = h.order(2, "f1", AAA, Buy, Some("102"), 8, Fok);
    assert_eq!(
        summary(&out),
        [
            (2, Ack, Open, "f1".into(), 0, 0, 8),
            (1, Trade, Filled, "s1".into(), 5, 5, 0),
            (2, Trade, Partial, "f1".into(), 5, 5, 3),
            (1, Trade, Partial, "s2".into(), 3, 3, 2),
            (2, Trade, Filled, "f1".into(), 3, 8, 0),
        ]
    );
}

#[test]
fn duplicate_cl_ord_id_is_rejected() {
    let mut h = Harness::new();
    h.limit(1, "x", Buy, "100", 1);
    let out = h.limit(1, "x", Buy, "99", 1);
    assert_rejected(
        &out,
        OrdRejReason::DuplicateOrder,
        RejectText::DuplicateClOrdId,
    );
    // Still a duplicate once the order is gone: the id was used today.
    h.cancel(1, "c", "x", Buy);
    let out = h.limit(1, "x", Buy, "99", 1);
    assert_rejected(
        &out,
        OrdRejReason::DuplicateOrder,
        RejectText::DuplicateClOrdId,
    );
    // A rejected order uses its id too.
    h.limit(1, "bad", Buy, "99.999", 1);
    let out = h.limit(1, "bad", Buy, "99", 1);
    assert_rejected(
        &out,
        OrdRejReason::DuplicateOrder,
        RejectText::DuplicateClOrdId,
    );
    // Ids are per session.
    let out = h.limit(2, "x", Buy, "100", 1);
    assert_eq!(exec(&out[0]).exec_type, Ack);
}

#[test]
fn price_off_tick_is_rejected() {
    let mut h = Harness::new();
    let out = h.limit(1, "a", Buy, "100.001", 1);
    assert_rejected(&out, OrdRejReason::Other, RejectText::PriceOffTick);
    let out = h.order(1, "b", BBB, Buy, Some("100.25"), 10, Day);
    assert_rejected(&out, OrdRejReason::Other, RejectText::PriceOffTick);
    let out = h.order(1, "c", BBB, Buy, Some("100.5"), 10, Day);
    assert_eq!(exec(&out[0]).exec_type, Ack);
}

#[test]
fn qty_off_lot_or_zero_is_rejected() {
    let mut h = Harness::new();
    let out = h.limit(1, "a", Buy, "100", 0);
    assert_rejected(&out, OrdRejReason::IncorrectQuantity, RejectText::QtyZero);
    let out = h.order(1, "b", BBB, Buy, Some("100"), 15, Day);
    assert_rejected(&out, OrdRejReason::IncorrectQuantity, RejectText::QtyOffLot);
    let out = h.limit(
        1,
        "c",
        Buy,
        "100",
        crate::constants::ENGINE_ORDER_QTY_MAX + 1,
    );
    assert_rejected(
        &out,
        OrdRejReason::OrderExceedsLimit,
        RejectText::QtyTooLarge,
    );
}

#[test]
fn unknown_symbol_is_rejected() {
    let mut h = Harness::new();
    let out = h.order(1, "a", "ZZZ", Buy, Some("1"), 1, Day);
    assert_rejected(&out, OrdRejReason::UnknownSymbol, RejectText::UnknownSymbol);
    assert_eq!(exec(&out[0]).order_id, 1);
    assert_eq!(exec(&out[0]).symbol, sym("ZZZ"));
}

#[test]
fn market_with_price_or_limit_without_price_is_rejected() {
    let mut h = Harness::new();
    let mut request = NewOrder {
        cl_ord_id: cid("a"),
        symbol: sym(AAA),
        side: Buy,
        ord_type: OrdType::Market,
        price: Some(px("1")),
        qty: Qty(1),
        time_in_force: Day,
        parties: Parties::NONE,
    };
    let out = h.apply(1, Request::New(request.clone()));
    assert_rejected(
        &out,
        OrdRejReason::UnsupportedOrderCharacteristic,
        RejectText::MarketOrderWithPrice,
    );
    request.cl_ord_id = cid("b");
    request.ord_type = OrdType::Limit;
    request.price = None;
    let out = h.apply(1, Request::New(request));
    assert_rejected(
        &out,
        OrdRejReason::UnsupportedOrderCharacteristic,
        RejectText::LimitOrderWithoutPrice,
    );
}

#[test]
fn cancel_removes_the_order() {
    let mut h = Harness::new();
    h.limit(1, "b1", Buy, "100", 10);
    h.limit(2, "s1", Sell, "100", 4);
    let out = h.cancel(1, "c1", "b1", Buy);
    assert_eq!(summary(&out), [(1, Canceled, Done, "c1".into(), 0, 4, 0)]);
    let report = exec(&out[0]);
    assert_eq!(report.orig_cl_ord_id, Some(cid("b1")));
    assert_eq!(report.order_id, 1);
    assert_eq!(report.order_qty, Qty(10));
    assert_eq!(report.avg_px, px("100"));
    assert!(h.book().is_empty());
    assert_eq!(h.engine.best_bid(sym(AAA)), None);
}

#[test]
fn cancel_of_an_unknown_order_is_rejected() {
    let mut h = Harness::new();
    h.limit(1, "b1", Buy, "100", 10);
    for (session, orig, side) in [(1, "nope", Buy), (2, "b1", Buy), (1, "b1", Sell)] {
        let id = format!("c-{session}-{orig}-{side:?}");
        let out = h.cancel(session, &id, orig, side);
        let reject = cxl_reject(&out[0]);
        assert_eq!(
            reject.reason,
            CxlRejReason::UnknownOrder,
            "{session} {orig} {side:?}"
        );
        assert_eq!(reject.ord_status, OrdStatus::Rejected);
        assert_eq!(reject.order_id, None);
        assert_eq!(reject.response_to, CxlRejResponseTo::Cancel);
        assert_eq!(reject.orig_cl_ord_id, cid(orig));
    }
    let wrong_symbol = h.apply(
        1,
        Request::Cancel(CancelOrder {
            cl_ord_id: cid("c-sym"),
            orig_cl_ord_id: cid("b1"),
            symbol: sym(BBB),
            side: Buy,
            parties: Parties::NONE,
        }),
    );
    assert_eq!(
        cxl_reject(&wrong_symbol[0]).text,
        Some(RejectText::OrderMismatch)
    );
    assert_eq!(h.book(), [(1, "b1".into(), 10)]);
}

#[test]
fn cancel_of_a_filled_order_is_too_late() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 5);
    h.limit(2, "b1", Buy, "100", 5);
    let out = h.cancel(1, "c1", "s1", Sell);
    let reject = cxl_reject(&out[0]);
    assert_eq!(reject.reason, CxlRejReason::TooLateToCancel);
    assert_eq!(reject.ord_status, Filled);
    assert_eq!(reject.order_id, Some(1));
    let out = h.cancel(1, "c1", "s1", Sell);
    assert_eq!(cxl_reject(&out[0]).reason, CxlRejReason::DuplicateClOrdId);
}

#[test]
fn replace_with_lower_qty_keeps_priority() {
    let mut h = Harness::new();
    h.limit(1, "a", Buy, "100", 10);
    h.limit(2, "b", Buy, "100", 10);
    let out = h.replace(1, "a2", "a", Buy, "100", 6);
    assert_eq!(summary(&out), [(1, Replaced, Open, "a2".into(), 0, 0, 6)]);
    assert_eq!(exec(&out[0]).orig_cl_ord_id, Some(cid("a")));
    assert_eq!(
        exec(&out[0]).order_id,
        1,
        "a replaced order keeps its OrderID"
    );
    assert_eq!(h.book(), [(1, "a2".into(), 6), (2, "b".into(), 10)]);
    let out = h.limit(3, "s", Sell, "100", 6);
    assert_eq!(out[1].session, 1, "the reduced order still trades first");
}

#[test]
fn replace_with_higher_qty_loses_priority() {
    let mut h = Harness::new();
    h.limit(1, "a", Buy, "100", 10);
    h.limit(2, "b", Buy, "100", 10);
    h.replace(1, "a2", "a", Buy, "100", 11);
    assert_eq!(h.book(), [(2, "b".into(), 10), (1, "a2".into(), 11)]);
}

#[test]
fn replace_with_new_price_loses_priority() {
    let mut h = Harness::new();
    h.limit(1, "a", Buy, "100", 10);
    h.limit(2, "b", Buy, "99", 10);
    h.limit(2, "c", Buy, "99", 10);
    let out = h.replace(1, "a2", "a", Buy, "99", 5);
    assert_eq!(exec(&out[0]).price, Some(px("99")));
    assert_eq!(
        h.book(),
        [
            (2, "b".into(), 10),
            (2, "c".into(), 10),
            (1, "a2".into(), 5)
        ]
    );
    assert_eq!(h.engine.best_bid(sym(AAA)), Some(px("99")));
}

#[test]
fn replace_keeps_fills_and_counts_order_qty_including_them() {
    let mut h = Harness::new();
    h.limit(1, "a", Buy, "100", 10);
    h.limit(2, "s", Sell, "100", 4);
    let out = h.replace(1, "a2", "a", Buy, "100", 8);
    assert_eq!(
        summary(&out),
        [(1, Replaced, Partial, "a2".into(), 0, 4, 4)]
    );
    let out = h.replace(1, "a3", "a2", Buy, "100", 4);
    let reject = cxl_reject(&out[0]);
    assert_eq!(reject.reason, CxlRejReason::Other);
    assert_eq!(reject.text, Some(RejectText::QtyNotAboveFilled));
    assert_eq!(reject.ord_status, Partial);
    assert_eq!(reject.order_id, Some(1));
    assert_eq!(reject.response_to, CxlRejResponseTo::Replace);
    assert_eq!(h.book(), [(1, "a2".into(), 4)]);
}

#[test]
fn replace_that_crosses_matches() {
    let mut h = Harness::new();
    h.limit(1, "s", Sell, "101", 5);
    h.limit(2, "b", Buy, "100", 8);
    let out = h.replace(2, "b2", "b", Buy, "101", 8);
    assert_eq!(
        summary(&out),
        [
            (2, Replaced, Open, "b2".into(), 0, 0, 8),
            (1, Trade, Filled, "s".into(), 5, 5, 0),
            (2, Trade, Partial, "b2".into(), 5, 5, 3),
        ]
    );
    assert_eq!(h.book(), [(2, "b2".into(), 3)]);
    assert_eq!(h.engine.best_bid(sym(AAA)), Some(px("101")));
}

#[test]
fn replace_must_name_the_latest_cl_ord_id() {
    let mut h = Harness::new();
    h.limit(1, "a", Buy, "100", 10);
    h.replace(1, "a2", "a", Buy, "100", 9);
    let out = h.replace(1, "a3", "a", Buy, "100", 8);
    let reject = cxl_reject(&out[0]);
    assert_eq!(reject.reason, CxlRejReason::UnknownOrder);
    assert_eq!(reject.text, Some(RejectText::NotLatestClOrdId));
    let out = h.cancel(1, "c", "a2", Buy);
    assert_eq!(exec(&out[0]).exec_type, Canceled);
}

#[test]
fn replace_is_validated_like_a_new_order() {
    let mut h = Harness::new();
    h.limit(1, "a", Buy, "100", 10);
    let out = h.replace(1, "r1", "a", Buy, "100.001", 10);
    assert_eq!(cxl_reject(&out[0]).text, Some(RejectText::PriceOffTick));
    let out = h.replace(1, "r2", "a", Buy, "100", 0);
    assert_eq!(cxl_reject(&out[0]).text, Some(RejectText::QtyZero));
    let out = h.apply(
        1,
        Request::Replace(ReplaceOrder {
            cl_ord_id: cid("r3"),
            orig_cl_ord_id: cid("a"),
            symbol: sym(AAA),
            side: Buy,
            ord_type: OrdType::Market,
            price: None,
            qty: Qty(10),
            parties: Parties::NONE,
        }),
    );
    assert_eq!(cxl_reject(&out[0]).text, Some(RejectText::OrdTypeChange));
    assert_eq!(h.book(), [(1, "a".into(), 10)]);
}

#[test]
fn order_capacity_full_is_rejected_but_crossing_orders_still_trade() {
    let config = EngineConfig {
        orders_max: 2,
        ..small_config()
    };
    let mut h = Harness::with_config(&config);
    h.limit(1, "a", Buy, "100", 1);
    h.limit(1, "b", Buy, "99", 1);
    let out = h.limit(1, "c", Buy, "98", 1);
    assert_rejected(&out, OrdRejReason::Other, RejectText::OrderCapacity);
    let out = h.limit(2, "s", Sell, "100", 1);
    assert_eq!(out.len(), 3, "an order that fills completely needs no slot");
    let out = h.limit(1, "d", Buy, "98", 1);
    assert_eq!(
        exec(&out[0]).exec_type,
        Ack,
        "the filled order freed its slot"
    );
}

#[test]
fn level_capacity_full_is_rejected() {
    let config = EngineConfig {
        levels_max: 2,
        ..small_config()
    };
    let mut h = Harness::with_config(&config);
    h.limit(1, "a", Buy, "100", 1);
    h.limit(1, "b", Buy, "99", 1);
    let out = h.limit(1, "c", Buy, "98", 1);
    assert_rejected(&out, OrdRejReason::Other, RejectText::LevelCapacity);
    let out = h.limit(1, "d", Buy, "99", 1);
    assert_eq!(exec(&out[0]).exec_type, Ack, "an existing level has room");
    let out = h.replace(1, "e", "b", Buy, "97", 1);
    assert_eq!(cxl_reject(&out[0]).text, Some(RejectText::LevelCapacity));
    let out = h.replace(1, "f", "a", Buy, "97", 1);
    assert_eq!(
        exec(&out[0]).exec_type,
        Replaced,
        "moving the only order of a level frees it"
    );
}

#[test]
fn cl_ord_id_capacity_full_is_rejected() {
    let config = EngineConfig {
        cl_ord_ids_max: 2,
        ..small_config()
    };
    let mut h = Harness::with_config(&config);
    h.limit(1, "a", Buy, "100", 1);
    h.limit(1, "b", Buy, "100", 1);
    let out = h.limit(1, "c", Buy, "100", 1);
    assert_rejected(&out, OrdRejReason::Other, RejectText::ClOrdIdCapacity);
    let out = h.cancel(1, "d", "a", Buy);
    assert_eq!(cxl_reject(&out[0]).text, Some(RejectText::ClOrdIdCapacity));
}

#[test]
fn every_new_order_gets_exactly_one_acknowledgement_first() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 1);
    h.limit(1, "s2", Sell, "100", 1);
    let out = h.order(2, "b", AAA, Buy, Some("100"), 5, Ioc);
    let acks = out
        .iter()
        .filter(|o| matches!(exec(o).exec_type, ExecType::New | ExecType::Rejected))
        .count();
    assert_eq!(acks, 1);
    assert_eq!(exec(&out[0]).exec_type, Ack);
}

#[test]
#[should_panic(expected = "does not follow")]
fn apply_refuses_a_sequence_gap() {
    let mut engine = MatchingEngine::new(&small_config()).unwrap();
    let request = Request::Cancel(CancelOrder {
        cl_ord_id: cid("a"),
        orig_cl_ord_id: cid("b"),
        symbol: sym(AAA),
        side: Buy,
        parties: Parties::NONE,
    });
    engine.apply(
        &Input {
            seq: 2,
            time: Timestamp(1),
            session: 1,
            request,
        },
        &mut Vec::new(),
    );
}

#[test]
#[should_panic(expected = "goes back in time")]
fn apply_refuses_time_going_backwards() {
    let mut h = Harness::new();
    h.limit(1, "a", Buy, "1", 1);
    let request = Request::Cancel(CancelOrder {
        cl_ord_id: cid("c"),
        orig_cl_ord_id: cid("a"),
        symbol: sym(AAA),
        side: Buy,
        parties: Parties::NONE,
    });
    h.engine.apply(
        &Input {
            seq: 2,
            time: Timestamp(999),
            session: 1,
            request,
        },
        &mut Vec::new(),
    );
}

/// A book with fills, replaces, cancels and rejects in two instruments.
fn busy_harness() -> Harness {
    busy_harness_in(SNAPSHOT_FORMAT_DEFAULT)
}

/// [`busy_harness`] on an engine that writes snapshot format `format`.
fn busy_harness_in(format: u16) -> Harness {
    let mut h = Harness::with_format(format);
    h.limit(1, "s1", Sell, "101", 5);
    h.limit(2, "s2", Sell, "101", 7);
    h.limit(1, "s3", Sell, "102.5", 9);
    h.limit(3, "b1", Buy, "100", 4);
    h.limit(3, "b2", Buy, "99.99", 4);
    h.limit(2, "x", Buy, "101", 3);
    h.replace(3, "b3", "b2", Buy, "100", 6);
    h.cancel(1, "c1", "s1", Sell);
    h.limit(1, "bad", Buy, "1.001", 1);
    h.order(2, "y", BBB, Sell, Some("50"), 20, Day);
    h
}

/// Trading after a restore: a sweep, cancels and replaces of restored orders (one with a stale
/// ClOrdID), a reused ClOrdID and a new order; each input's outputs.
fn after_restore(h: &mut Harness) -> Vec<Vec<Output>> {
    vec![
        h.order(4, "m", AAA, Buy, None, 100, Ioc),
        h.cancel(2, "c2", "x", Buy),
        h.replace(3, "b4", "b3", Buy, "100", 2),
        h.cancel(3, "c4", "b2", Buy),
        h.limit(1, "s1", Sell, "100", 1),
        h.limit(1, "s5", Sell, "100", 1),
        h.cancel(1, "c3", "s1", Sell),
        h.cancel(1, "c5", "c1", Sell),
        h.order(2, "y2", BBB, Buy, Some("50"), 10, Day),
    ]
}

#[test]
fn snapshot_restore_preserves_digest_and_behavior() {
    let mut original = busy_harness();
    let mut bytes = Vec::new();
    original.engine.snapshot(&mut bytes);
    assert!(
        bytes.starts_with(b"BTNSNAP\0\x03\x00"),
        "the newest format by default"
    );

    let mut restored = Harness::new();
    restored.engine.restore(&bytes).unwrap();
    restored.seq = original.seq;
    assert_eq!(restored.engine.digest(), original.engine.digest());
    assert_eq!(
        restored.engine.last_input_seq(),
        original.engine.last_input_seq()
    );
    assert_eq!(restored.engine.open_orders(), original.engine.open_orders());
    let mut again = Vec::new();
    restored.engine.snapshot(&mut again);
    assert_eq!(again, bytes);

    let expected = after_restore(&mut original);
    assert_eq!(after_restore(&mut restored), expected);
    assert!(expected.concat().len() > 8);
    assert_eq!(restored.engine.digest(), original.engine.digest());
}

#[test]
fn digest_is_the_sha256_of_the_v1_snapshot_whatever_format_is_written() {
    use sha2::Digest as _;
    let v1_writer = busy_harness_in(1);
    let mut v1_bytes = Vec::new();
    v1_writer.engine.snapshot(&mut v1_bytes);
    assert!(v1_bytes.starts_with(b"BTNSNAP\0\x01\x00"));
    let expected: [u8; 32] = sha2::Sha256::digest(&v1_bytes).into();
    assert_eq!(v1_writer.engine.digest().0, expected);
    assert_eq!(v1_writer.engine.digest().to_string().len(), 64);

    // The same inputs on an engine that writes v2: another snapshot, the same digest.
    let v2_writer = busy_harness_in(2);
    let mut v2_bytes = Vec::new();
    v2_writer.engine.snapshot(&mut v2_bytes);
    assert_ne!(v2_bytes, v1_bytes);
    assert_eq!(v2_writer.engine.digest(), v1_writer.engine.digest());
    assert_ne!(v2_writer.engine.digest(), Harness::new().engine.digest());
}

/// Snapshots `from`'s busy state, restores it into a fresh engine writing `to`, and checks that
/// the two are the same engine: book, position in the input stream, digest, and the outputs of
/// everything that follows.
fn assert_cross_format_restore(from: u16, to: u16) {
    let mut original = busy_harness_in(from);
    let mut bytes = Vec::new();
    original.engine.snapshot(&mut bytes);
    assert_eq!(bytes[8..10], from.to_le_bytes());

    let mut restored = Harness::with_format(to);
    restored.engine.restore(&bytes).unwrap();
    restored.seq = original.seq;
    assert_eq!(restored.engine.open_orders(), original.engine.open_orders());
    assert_eq!(
        restored.engine.last_input_seq(),
        original.engine.last_input_seq()
    );
    assert_eq!(restored.engine.digest(), original.engine.digest());
    let mut again = Vec::new();
    restored.engine.snapshot(&mut again);
    assert_eq!(again[8..10], to.to_le_bytes(), "it writes its own format");

    let expected = after_restore(&mut original);
    assert_eq!(after_restore(&mut restored), expected);
    assert_eq!(restored.engine.digest(), original.engine.digest());
}

#[test]
fn a_v1_snapshot_restores_into_a_v2_engine_identically() {
    assert_cross_format_restore(1, 2);
}

#[test]
fn a_v2_snapshot_restores_into_a_v1_engine_identically() {
    assert_cross_format_restore(2, 1);
}

#[test]
fn formats_convert_losslessly_both_ways() {
    let snapshot_of = |h: &Harness| {
        let mut bytes = Vec::new();
        h.engine.snapshot(&mut bytes);
        bytes
    };
    let v1_bytes = snapshot_of(&busy_harness_in(1));
    let v2_bytes = snapshot_of(&busy_harness_in(2));
    // v1 → an engine writing v2 → its v2 snapshot is the one an uninterrupted v2 engine writes.
    let mut h = Harness::with_format(2);
    h.engine.restore(&v1_bytes).unwrap();
    assert_eq!(snapshot_of(&h), v2_bytes);
    // And back: v2 → an engine writing v1 → the original v1 bytes.
    let mut h = Harness::with_format(1);
    h.engine.restore(&v2_bytes).unwrap();
    assert_eq!(snapshot_of(&h), v1_bytes);
}

/// Decodes the payload of a v2 snapshot.
fn decode_v2(bytes: &[u8]) -> v2::StateV2 {
    assert_eq!(bytes[..10], *b"BTNSNAP\0\x02\x00");
    let (state, used) =
        bincode::serde::decode_from_slice(&bytes[10..], bincode::config::standard()).unwrap();
    assert_eq!(used, bytes.len() - 10);
    state
}

/// Encodes a hand-made v2 state as it is.
fn encode_v2(state: &v2::StateV2) -> Vec<u8> {
    let mut bytes = b"BTNSNAP\0\x02\x00".to_vec();
    bincode::serde::encode_into_std_write(state, &mut bytes, bincode::config::standard()).unwrap();
    bytes
}

/// Encodes a hand-made v2 state with the digest a writer would record for it.
fn encode_v2_with_digest(state: &v2::StateV2) -> Vec<u8> {
    let mut state = state.clone();
    state.digest = snapshot::digest(&snapshot::state_from_v2(state.clone()).unwrap()).0;
    encode_v2(&state)
}

#[test]
fn v2_files_every_cl_ord_id_under_its_book_and_order() {
    let h = busy_harness_in(2);
    let mut bytes = Vec::new();
    h.engine.snapshot(&mut bytes);
    let state = decode_v2(&bytes);
    assert_eq!(state.digest, h.engine.digest().0);
    assert_eq!(state.last_input_seq, 10);
    assert_eq!(state.last_time_ns, 10_000);
    let symbols: Vec<Symbol> = state.books.iter().map(|book| book.symbol).collect();
    assert_eq!(symbols, [sym(AAA), sym(BBB)]);
    let aaa = &state.books[0];
    // b2 was replaced by b3: the order rests under b3 and still owns b2. s1 was canceled.
    let ids = |orders: &[v2::OrderV2]| -> Vec<(String, Vec<String>)> {
        orders
            .iter()
            .map(|order| {
                let earlier = order.cl_ord_ids_earlier.iter().map(|id| id.to_string());
                (order.cl_ord_id.to_string(), earlier.collect())
            })
            .collect()
    };
    assert_eq!(
        ids(&aaa.bids),
        [("b1".into(), vec![]), ("b3".into(), vec!["b2".to_owned()])]
    );
    assert_eq!(
        ids(&aaa.asks),
        [("s2".into(), vec![]), ("s3".into(), vec![])]
    );
    assert_eq!(ids(&state.books[1].asks), [("y".into(), vec![])]);
    // Ended: s1 (canceled by c1) and x (filled).
    let ended: Vec<(u64, u32, u8, Vec<String>)> = state
        .orders_ended
        .iter()
        .map(|ended| {
            let ids = ended.cl_ord_ids.iter().map(|id| id.to_string()).collect();
            (ended.order_id, ended.session, ended.ord_status, ids)
        })
        .collect();
    assert_eq!(
        ended,
        [
            (1, 1, b'4', vec!["c1".to_owned(), "s1".to_owned()]),
            (6, 2, b'2', vec!["x".to_owned()]),
        ]
    );
    let unattached: Vec<(u32, String)> = state
        .cl_ord_ids_unattached
        .iter()
        .map(|entry| (entry.session, entry.cl_ord_id.to_string()))
        .collect();
    assert_eq!(unattached, [(1, "bad".to_owned())]);
}

#[test]
fn restore_refuses_bad_headers_and_leaves_the_engine_unchanged() {
    let h = busy_harness();
    let mut bytes = Vec::new();
    h.engine.snapshot(&mut bytes);
    let mut target = busy_harness();
    let before = target.engine.digest();

    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'X';
    assert!(matches!(
        target.engine.restore(&bad_magic),
        Err(SnapshotError::BadMagic)
    ));
    assert!(matches!(
        target.engine.restore(b"BTN"),
        Err(SnapshotError::Truncated)
    ));
    assert!(matches!(
        target.engine.restore(b""),
        Err(SnapshotError::Truncated)
    ));
    for version in [0, 4, u16::MAX] {
        let mut other = bytes.clone();
        other[8..10].copy_from_slice(&version.to_le_bytes());
        assert!(matches!(
            target.engine.restore(&other),
            Err(SnapshotError::UnknownVersion { version: v }) if v == version
        ));
    }
    assert!(matches!(
        target.engine.restore(&bytes[..bytes.len() - 1]),
        Err(SnapshotError::Truncated)
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        target.engine.restore(&trailing),
        Err(SnapshotError::TrailingBytes { extra: 1 })
    ));
    assert_eq!(target.engine.digest(), before);
    target.engine.restore(&bytes).unwrap();
    let _ = target.limit(9, "after", Buy, "1", 1);
}

/// Encodes a hand-made v1 state.
fn encode_v1(state: &v1::StateV1) -> Vec<u8> {
    let mut bytes = b"BTNSNAP\0\x01\x00".to_vec();
    bincode::serde::encode_into_std_write(state, &mut bytes, bincode::config::standard()).unwrap();
    bytes
}

#[test]
fn restore_refuses_inconsistent_states() {
    let h = busy_harness();
    let good = h.engine.canonical_state();
    assert!(!good.books.is_empty() && !good.books[0].bids.is_empty());
    let mut target = Harness::new();
    target.engine.restore(&encode_v1(&good)).unwrap();

    type Mutation = fn(&mut v1::StateV1);
    let cases: &[(&str, Mutation)] = &[
        ("crossed", |s| {
            s.books[0].bids[0].price = s.books[0].asks[0].price
        }),
        ("price priority", |s| s.books[0].bids[1].price += 1_000_000),
        ("after the last input", |s| {
            s.books[0].bids[0].order_id = s.last_input_seq + 1
        }),
        ("quantities", |s| {
            s.books[0].bids[0].cum_qty = s.books[0].bids[0].order_qty
        }),
        ("Day limit", |s| s.books[0].bids[0].time_in_force = b'3'),
        ("registered", |s| {
            s.books[0].bids[0].cl_ord_id = ClOrdId::try_from_bytes(b"zz").unwrap()
        }),
        ("notional", |s| s.books[0].bids[0].notional = 7),
        ("ClOrdIDs are not sorted", |s| s.cl_ord_ids.swap(0, 1)),
        ("ended", |s| s.orders_ended[0].ord_status = b'0'),
        ("does not exist", |s| {
            let entry = s.cl_ord_ids.iter_mut().find(|e| e.order_id == 0).unwrap();
            entry.order_id = 1_000;
        }),
        ("not named by any ClOrdID", |s| {
            let order_id = s.orders_ended[0].order_id;
            s.cl_ord_ids.retain(|e| e.order_id != order_id);
        }),
        ("without orders", |s| {
            s.books[0].bids.clear();
            s.books[0].asks.clear();
        }),
        ("rests twice", |s| {
            let order = s.books[0].bids[0].clone();
            s.books[0].bids.push(order);
        }),
        ("two sessions", |s| {
            // c1 canceled session 1's s1; file it under session 2 instead.
            let entry = s.cl_ord_ids.iter_mut().find(|e| e.cl_ord_id == cid("c1"));
            entry.unwrap().session = 2;
            s.cl_ord_ids.sort_by_key(|e| (e.session, e.cl_ord_id));
        }),
    ];
    for (expected, mutate) in cases {
        let mut state = good.clone();
        mutate(&mut state);
        match target.engine.restore(&encode_v1(&state)) {
            Err(SnapshotError::Inconsistent(what)) => {
                assert!(what.contains(expected), "{expected}: got {what}")
            }
            other => panic!("{expected}: expected Inconsistent, got {other:?}"),
        }
    }

    let mut state = good.clone();
    state.books[0].symbol = sym("ZZZ");
    assert!(matches!(
        target.engine.restore(&encode_v1(&state)),
        Err(SnapshotError::UnknownSymbol { .. } | SnapshotError::Inconsistent(_))
    ));
    let mut state = good;
    state.books[0].bids[0].ord_type = b'7';
    assert!(matches!(
        target.engine.restore(&encode_v1(&state)),
        Err(SnapshotError::Inconsistent(_))
    ));
}

#[test]
fn restore_refuses_a_v2_snapshot_whose_state_is_not_the_recorded_one() {
    let h = busy_harness_in(2);
    let mut bytes = Vec::new();
    h.engine.snapshot(&mut bytes);
    let good = decode_v2(&bytes);
    // One more lot on a resting bid: still a consistent book, but not the state written.
    let mut state = good.clone();
    state.books[0].bids[0].order_qty += 1;
    let mut target = Harness::with_format(2);
    let before = target.engine.digest();
    match target.engine.restore(&encode_v2(&state)) {
        Err(SnapshotError::DigestMismatch { recorded, decoded }) => {
            assert_eq!(recorded, h.engine.digest());
            assert_ne!(decoded, recorded);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert_eq!(target.engine.digest(), before, "nothing was loaded");
    // The same state with the digest its writer would have recorded loads: the digest refused it.
    target
        .engine
        .restore(&encode_v2_with_digest(&state))
        .unwrap();
    assert_ne!(target.engine.digest(), h.engine.digest());
}

#[test]
fn restore_refuses_inconsistent_v2_layouts() {
    let h = busy_harness_in(2);
    let mut bytes = Vec::new();
    h.engine.snapshot(&mut bytes);
    let good = decode_v2(&bytes);
    let mut target = Harness::with_format(1);
    target
        .engine
        .restore(&encode_v2_with_digest(&good))
        .unwrap();
    let before = target.engine.digest();

    type Mutation = fn(&mut v2::StateV2);
    // Refused while converting, before the digest is looked at.
    let layout: &[(&str, Mutation)] = &[
        ("earlier ClOrdIDs are not sorted", |s| {
            s.books[0].bids[1].cl_ord_ids_earlier.push(cid("a"))
        }),
        ("earlier ClOrdIDs are not sorted", |s| {
            let order = &mut s.books[0].bids[1];
            order.cl_ord_ids_earlier.push(order.cl_ord_ids_earlier[0]);
        }),
        ("latest ClOrdID is also listed", |s| {
            let order = &mut s.books[0].bids[1];
            order.cl_ord_ids_earlier = vec![order.cl_ord_id];
        }),
        ("ended order is not named", |s| {
            s.orders_ended[0].cl_ord_ids.clear()
        }),
        ("ended order's ClOrdIDs are not sorted", |s| {
            s.orders_ended[0].cl_ord_ids.reverse()
        }),
        ("unattached ClOrdIDs are not sorted", |s| {
            let first = s.cl_ord_ids_unattached[0].clone();
            s.cl_ord_ids_unattached.push(first);
        }),
    ];
    // Convertible, with a matching digest, but no engine could be in the state.
    let state: &[(&str, Mutation)] = &[
        ("ClOrdIDs are not sorted and unique", |s| {
            // One ClOrdID both rejected and naming an order.
            let id = s.books[0].bids[0].cl_ord_id;
            let session = s.books[0].bids[0].session;
            s.cl_ord_ids_unattached.push(v2::ClOrdIdUnattachedV2 {
                session,
                cl_ord_id: id,
            });
            s.cl_ord_ids_unattached
                .sort_by_key(|e| (e.session, e.cl_ord_id));
        }),
        ("ended orders are not sorted", |s| s.orders_ended.reverse()),
        ("crossed", |s| {
            s.books[0].bids[0].price = s.books[0].asks[0].price
        }),
        ("books are not sorted", |s| s.books.reverse()),
        ("both resting and ended", |s| {
            s.orders_ended[0].order_id = s.books[0].bids[0].order_id;
        }),
    ];
    for (expected, mutate) in layout {
        let mut mutated = good.clone();
        mutate(&mut mutated);
        match target.engine.restore(&encode_v2(&mutated)) {
            Err(SnapshotError::Inconsistent(what)) => {
                assert!(what.contains(expected), "{expected}: got {what}")
            }
            other => panic!("{expected}: expected Inconsistent, got {other:?}"),
        }
    }
    for (expected, mutate) in state {
        let mut mutated = good.clone();
        mutate(&mut mutated);
        match target.engine.restore(&encode_v2_with_digest(&mutated)) {
            Err(SnapshotError::Inconsistent(what)) => {
                assert!(what.contains(expected), "{expected}: got {what}")
            }
            other => panic!("{expected}: expected Inconsistent, got {other:?}"),
        }
    }
    assert_eq!(target.engine.digest(), before);
}

#[test]
fn restore_refuses_a_payload_under_another_version_header() {
    let snapshot_in = |format| {
        let mut bytes = Vec::new();
        busy_harness_in(format).engine.snapshot(&mut bytes);
        bytes
    };
    let mut target = busy_harness();
    let before = target.engine.digest();
    for (format, header) in [(1, 2u16), (2, 1u16)] {
        let mut bytes = snapshot_in(format);
        bytes[8..10].copy_from_slice(&header.to_le_bytes());
        let result = target.engine.restore(&bytes);
        assert!(
            result.is_err(),
            "a v{format} payload under a v{header} header: {result:?}"
        );
    }
    assert_eq!(target.engine.digest(), before);
}

#[test]
fn restore_refuses_a_snapshot_larger_than_the_configuration() {
    let h = busy_harness();
    let mut bytes = Vec::new();
    h.engine.snapshot(&mut bytes);
    for config in [
        EngineConfig {
            orders_max: 2,
            ..small_config()
        },
        EngineConfig {
            levels_max: 1,
            ..small_config()
        },
        EngineConfig {
            cl_ord_ids_max: 3,
            ..small_config()
        },
    ] {
        let mut engine = MatchingEngine::new(&config).unwrap();
        assert!(
            matches!(
                engine.restore(&bytes),
                Err(SnapshotError::CapacityExceeded { .. })
            ),
            "{config:?}"
        );
    }
    let only_bbb = EngineConfig {
        instruments: vec![small_config().instruments[1].clone()],
        ..small_config()
    };
    let mut engine = MatchingEngine::new(&only_bbb).unwrap();
    assert!(matches!(
        engine.restore(&bytes),
        Err(SnapshotError::UnknownSymbol { symbol }) if symbol == sym(AAA)
    ));
}

#[test]
fn build_version_names_the_engine_crate_version_and_written_format() {
    let version = |format| {
        MatchingEngine::with_snapshot_format(&small_config(), format)
            .unwrap()
            .build_version()
            .to_owned()
    };
    let prefix = concat!("baton-matching-engine/", env!("CARGO_PKG_VERSION"));
    assert_eq!(version(1), format!("{prefix}+snap1"));
    assert_eq!(version(2), format!("{prefix}+snap2"));
    assert_eq!(
        MatchingEngine::new(&small_config())
            .unwrap()
            .build_version(),
        version(SNAPSHOT_FORMAT_DEFAULT)
    );
}

#[test]
fn only_known_snapshot_formats_can_be_chosen() {
    for format in [0, 4, u16::MAX] {
        assert_eq!(
            MatchingEngine::with_snapshot_format(&small_config(), format).err(),
            Some(EngineConfigError::UnsupportedSnapshotFormat { format })
        );
    }
    // A known format does not hide a bad configuration.
    let empty = EngineConfig {
        instruments: vec![],
        ..small_config()
    };
    assert_eq!(
        MatchingEngine::with_snapshot_format(&empty, 1).err(),
        Some(EngineConfigError::NoInstruments)
    );
    for format in SNAPSHOT_FORMAT_VERSIONS {
        let engine = MatchingEngine::with_snapshot_format(&small_config(), *format).unwrap();
        assert_eq!(engine.snapshot_format(), *format);
    }
}

#[test]
fn the_link_is_told_every_format_read_with_the_written_one_last() {
    let formats = |format| {
        MatchingEngine::with_snapshot_format(&small_config(), format)
            .unwrap()
            .snapshot_formats()
    };
    assert_eq!(formats(3), [1, 2, 3]);
    assert_eq!(formats(2), [1, 3, 2]);
    assert_eq!(formats(1), [2, 3, 1]);
}

#[test]
fn the_default_config_builds_an_engine_usable_as_a_trait_object() {
    // The gateway holds engines as `Box<dyn Engine>`; this fails to compile if the trait stops
    // being object safe or MatchingEngine stops being Send.
    let mut engine: Box<dyn Engine> =
        Box::new(MatchingEngine::new(&EngineConfig::default()).unwrap());
    let input = Input {
        seq: 1,
        time: Timestamp(1),
        session: 1,
        request: Request::New(NewOrder {
            cl_ord_id: cid("a"),
            symbol: sym("AAPL"),
            side: Buy,
            ord_type: OrdType::Limit,
            price: Some(px("187.25")),
            qty: Qty(100),
            time_in_force: Day,
            parties: Parties::NONE,
        }),
    };
    let mut outputs = Vec::new();
    engine.apply(&input, &mut outputs);
    assert_eq!(exec(&outputs[0]).exec_type, Ack);
    assert_eq!(engine.last_input_seq(), 1);
}

// ----- Found by mutation testing -----------------------------------------------------------------

#[test]
fn fok_counts_only_what_is_left_at_a_partly_filled_level() {
    let mut h = Harness::new();
    h.limit(1, "s1", Sell, "100", 10);
    h.limit(2, "b1", Buy, "100", 4);
    // 6 left at 100: a FOK for 8 cannot fill and must not trade at all.
    let out = h.order(2, "f1", AAA, Buy, Some("100"), 8, Fok);
    assert_eq!(
        summary(&out),
        [
            (2, Ack, Open, "f1".into(), 0, 0, 8),
            (2, Canceled, Done, "f1".into(), 0, 0, 0)
        ]
    );
    assert_eq!(h.book(), [(1, "s1".into(), 6)]);
    // Exactly what is left fills completely.
    let out = h.order(2, "f2", AAA, Buy, Some("100"), 6, Fok);
    assert_eq!(exec(out.last().unwrap()).ord_status, Filled);
    assert!(h.book().is_empty());
}

#[test]
fn cancel_naming_a_rejected_order_is_an_unknown_order() {
    let mut h = Harness::new();
    // Off tick: rejected, but its ClOrdID is used (recorded without an order).
    h.limit(1, "r1", Buy, "100.001", 10);
    let out = h.cancel(1, "c1", "r1", Buy);
    let reject = cxl_reject(&out[0]);
    assert_eq!(reject.reason, CxlRejReason::UnknownOrder);
    assert_eq!(reject.text, Some(RejectText::UnknownOrder));
    assert_eq!(reject.order_id, None);
}

#[test]
fn replace_of_a_partly_filled_order_that_fully_crosses_needs_no_level() {
    let config = EngineConfig {
        levels_max: 2,
        ..small_config()
    };
    let mut h = Harness::with_config(&config);
    h.limit(1, "a", Buy, "100", 10);
    h.limit(2, "s", Sell, "100", 4);
    h.limit(1, "b", Buy, "100", 1);
    h.limit(1, "c", Buy, "99", 1);
    h.limit(2, "t", Sell, "105", 6);
    // Both bid levels are taken and "a" does not leave 100 empty, but its 6 left (10 - 4
    // filled) trade in full at 105, so it never needs a level of its own.
    let out = h.replace(1, "a2", "a", Buy, "105", 10);
    assert_eq!(
        summary(&out),
        [
            (1, Replaced, Partial, "a2".into(), 0, 4, 6),
            (2, Trade, Filled, "t".into(), 6, 6, 0),
            (1, Trade, Filled, "a2".into(), 6, 10, 0),
        ]
    );
    assert_eq!(h.book(), [(1, "b".into(), 1), (1, "c".into(), 1)]);
}

#[test]
fn fok_counts_a_reduced_order_at_its_new_quantity() {
    let mut h = Harness::new();
    h.limit(1, "s", Sell, "100", 10);
    h.replace(1, "s2", "s", Sell, "100", 6);
    let out = h.order(2, "f1", AAA, Buy, Some("100"), 7, Fok);
    assert_eq!(
        summary(&out),
        [
            (2, Ack, Open, "f1".into(), 0, 0, 7),
            (2, Canceled, Done, "f1".into(), 0, 0, 0)
        ]
    );
    assert_eq!(h.book(), [(1, "s2".into(), 6)]);
    let out = h.order(2, "f2", AAA, Buy, Some("100"), 6, Fok);
    assert_eq!(exec(out.last().unwrap()).ord_status, Filled);
}

#[test]
fn the_largest_quantity_is_accepted_for_new_orders_and_replaces() {
    let largest = crate::constants::ENGINE_ORDER_QTY_MAX;
    let mut h = Harness::new();
    let out = h.limit(1, "a", Buy, "100", largest);
    assert_eq!(summary(&out), [(1, Ack, Open, "a".into(), 0, 0, largest)]);
    h.limit(1, "b", Buy, "99", 1);
    let out = h.replace(1, "b2", "b", Buy, "99", largest);
    assert_eq!(
        summary(&out),
        [(1, Replaced, Open, "b2".into(), 0, 0, largest)]
    );
}

#[test]
fn last_input_seq_follows_every_applied_input() {
    let mut h = Harness::new();
    assert_eq!(h.engine.last_input_seq(), 0);
    h.limit(1, "a", Buy, "100", 1);
    h.limit(1, "a", Buy, "100", 1); // rejected as a duplicate: still an applied input
    h.cancel(1, "c", "nope", Buy);
    assert_eq!(h.engine.last_input_seq(), 3);
}

// ----- state transfer ----------------------------------------------------------------------

/// The transfer of `donor`'s state for `symbols`, as the gateway sequences it: the section cut
/// from its snapshot.
fn transfer_of(donor: &MatchingEngine, symbols: &[&str]) -> Request {
    let symbols: Vec<Symbol> = symbols.iter().map(|s| sym(s)).collect();
    let mut snapshot = Vec::new();
    donor.snapshot(&mut snapshot);
    let section = transfer_section(&snapshot, &symbols).unwrap();
    transfer_carrying(symbols, section.bytes)
}

/// A transfer for `symbols` carrying `bytes` (a section, or a whole snapshot as journals
/// written before sections name).
fn transfer_carrying(symbols: Vec<Symbol>, bytes: Vec<u8>) -> Request {
    use sha2::Digest as _;
    Request::Transfer(StateTransfer {
        symbols,
        snapshot_sha256: sha2::Sha256::digest(&bytes).into(),
        snapshot: bytes,
    })
}

/// Two engines that agree on everything until they are given different AAA inputs at the same
/// seqs (as a canary engine that answered differently would be), then the same BBB ones.
fn diverged_on_aaa() -> (Harness, Harness) {
    let mut baseline = Harness::new();
    let mut canary = Harness::new();
    for h in [&mut baseline, &mut canary] {
        h.limit(1, "S-0", Side::Sell, "20", 5);
        h.order(1, "B-0", BBB, Side::Buy, Some("10"), 10, TimeInForce::Day);
    }
    // Same seqs, different books: each booked a different bid.
    baseline.limit(2, "X-1", Side::Buy, "15", 3);
    canary.limit(2, "Y-1", Side::Buy, "18", 2);
    for h in [&mut baseline, &mut canary] {
        h.order(1, "B-1", BBB, Side::Sell, Some("12"), 10, TimeInForce::Day);
    }
    assert_ne!(baseline.engine.digest(), canary.engine.digest());
    (baseline, canary)
}

#[test]
fn a_transfer_gives_every_engine_the_donors_state_for_its_symbols() {
    let (mut baseline, mut canary) = diverged_on_aaa();
    let transfer = transfer_of(&canary.engine, &[AAA]);
    let expected_orders: Vec<OpenOrder> = canary.engine.open_orders();
    assert!(baseline.apply(0, transfer.clone()).is_empty());
    assert!(canary.apply(0, transfer).is_empty());
    assert_eq!(baseline.engine.digest(), canary.engine.digest());
    assert_eq!(baseline.engine.open_orders(), expected_orders);
    // The donor's resting order is live: it trades, with the same report on both engines.
    let fill_baseline = baseline.limit(3, "T-1", Side::Sell, "18", 2);
    let fill_canary = canary.limit(3, "T-1", Side::Sell, "18", 2);
    assert_eq!(fill_baseline, fill_canary);
    assert!(fill_baseline.iter().any(|o| matches!(&o.report,
        Report::Execution(r) if r.exec_type == ExecType::Trade && r.cl_ord_id == cid("Y-1"))));
    // The baseline's own order X-1, which the counterparties never saw, is gone; its ClOrdID
    // (unknown to the donor) is free, and the donor's Y-1 is a duplicate.
    let cancel = baseline.apply(
        2,
        Request::Cancel(CancelOrder {
            cl_ord_id: cid("C-1"),
            orig_cl_ord_id: cid("X-1"),
            symbol: sym(AAA),
            side: Side::Buy,
            parties: Parties::NONE,
        }),
    );
    assert!(
        matches!(&cancel[0].report, Report::CancelReject(_)),
        "{cancel:?}"
    );
    let duplicate = baseline.limit(2, "Y-1", Side::Buy, "1", 1);
    assert!(
        matches!(&duplicate[0].report,
        Report::Execution(r) if r.exec_type == ExecType::Rejected),
        "{duplicate:?}"
    );
    assert_eq!(baseline.engine.digest(), {
        canary.apply(
            2,
            Request::Cancel(CancelOrder {
                cl_ord_id: cid("C-1"),
                orig_cl_ord_id: cid("X-1"),
                symbol: sym(AAA),
                side: Side::Buy,
                parties: Parties::NONE,
            }),
        );
        canary.limit(2, "Y-1", Side::Buy, "1", 1);
        canary.engine.digest()
    });
}

#[test]
fn a_transfer_keeps_the_receivers_other_books() {
    let (mut baseline, canary) = diverged_on_aaa();
    let bbb_before: Vec<OpenOrder> = baseline
        .engine
        .open_orders()
        .into_iter()
        .filter(|o| o.symbol == sym(BBB))
        .collect();
    // Only BBB named: the baseline's AAA book is its own, its BBB book the donor's (the same).
    baseline.apply(0, transfer_of(&canary.engine, &[BBB]));
    let bbb_after: Vec<OpenOrder> = baseline
        .engine
        .open_orders()
        .into_iter()
        .filter(|o| o.symbol == sym(BBB))
        .collect();
    assert_eq!(bbb_before, bbb_after);
    assert!(
        baseline
            .engine
            .open_orders()
            .iter()
            .any(|o| o.cl_ord_id == cid("X-1"))
    );
}

#[test]
fn a_transfer_that_does_not_fit_leaves_the_engine_as_it_was() {
    let (mut baseline, canary) = diverged_on_aaa();
    let before = baseline.engine.canonical_state();
    // A snapshot from another position (the donor one input behind) is refused.
    let mut stale = Harness::new();
    stale.limit(1, "S-0", Side::Sell, "20", 5);
    let transfer = transfer_of(&stale.engine, &[AAA]);
    baseline.apply(0, transfer);
    let after = baseline.engine.canonical_state();
    assert_eq!(after.books, before.books);
    assert_eq!(after.cl_ord_ids, before.cl_ord_ids);
    // Bytes that do not hash to what the input names are refused too.
    let Request::Transfer(mut bad) = transfer_of(&canary.engine, &[AAA]) else {
        unreachable!()
    };
    bad.snapshot_sha256 = [0; 32];
    baseline.apply(0, Request::Transfer(bad));
    assert_eq!(baseline.engine.canonical_state().books, before.books);
}

#[test]
fn a_transfer_section_carries_the_named_books_and_counts_their_orders() {
    let (_, canary) = diverged_on_aaa();
    let mut snapshot = Vec::new();
    canary.engine.snapshot(&mut snapshot);
    let resting_aaa = canary
        .engine
        .open_orders()
        .iter()
        .filter(|o| o.symbol == sym(AAA))
        .count() as u64;
    let aaa = transfer_section(&snapshot, &[sym(AAA)]).unwrap();
    assert_eq!(aaa.orders_moved, resting_aaa);
    let none = transfer_section(&snapshot, &[]).unwrap();
    assert_eq!(none.orders_moved, 0);
    // The other book stays out: naming nothing is smaller than naming AAA, and both are
    // smaller than the whole snapshot.
    assert!(none.bytes.len() < aaa.bytes.len(), "{none:?} {aaa:?}");
    assert!(aaa.bytes.len() < snapshot.len());
    // A snapshot that does not read is refused, not cut.
    let mut damaged = snapshot.clone();
    damaged.truncate(snapshot.len() - 3);
    assert!(transfer_section(&damaged, &[sym(AAA)]).is_err());
}

#[test]
fn a_transfer_of_the_whole_snapshot_from_an_older_journal_gives_the_same_state() {
    let (mut from_section, canary) = diverged_on_aaa();
    let (mut from_snapshot, _) = diverged_on_aaa();
    from_section.apply(0, transfer_of(&canary.engine, &[AAA]));
    let mut snapshot = Vec::new();
    canary.engine.snapshot(&mut snapshot);
    from_snapshot.apply(0, transfer_carrying(vec![sym(AAA)], snapshot));
    assert_ne!(from_snapshot.engine.digest(), {
        let (untouched, _) = diverged_on_aaa();
        untouched.engine.digest()
    });
    assert_eq!(from_section.engine.digest(), from_snapshot.engine.digest());
    assert_eq!(
        from_section.engine.canonical_state().books,
        canary.engine.canonical_state().books
    );
}

#[test]
fn a_damaged_or_unknown_transfer_section_leaves_the_engine_as_it_was() {
    let (mut baseline, canary) = diverged_on_aaa();
    let before = baseline.engine.canonical_state();
    let Request::Transfer(good) = transfer_of(&canary.engine, &[AAA]) else {
        unreachable!()
    };
    let mut truncated = good.snapshot.clone();
    truncated.truncate(good.snapshot.len() - 2);
    let mut future = good.snapshot.clone();
    future[8] = 0xff;
    for bytes in [truncated, future, good.snapshot[..9].to_vec()] {
        baseline.apply(0, transfer_carrying(vec![sym(AAA)], bytes));
        // Only the input seq moved; nothing else did.
        let after = baseline.engine.canonical_state();
        assert_eq!(after.books, before.books);
        assert_eq!(after.cl_ord_ids, before.cl_ord_ids);
        assert_eq!(after.orders_ended, before.orders_ended);
    }
}

/// Between inputs the engine makes present the memory the next ones will write
/// ([`Engine::prepare`]): resting orders applied after it take no page fault for their records,
/// ClOrdID entries or the day's order list (each of which, filled in order, faults once per page
/// without it).
#[test]
fn orders_applied_after_prepare_take_no_page_faults() {
    let config = EngineConfig {
        orders_max: 1 << 16,
        cl_ord_ids_max: 1 << 16,
        ..small_config()
    };
    let mut engine = MatchingEngine::new(&config).unwrap();
    engine.touch_memory();
    let inputs: Vec<Input> = (1..=61)
        .map(|seq| Input {
            seq,
            time: Timestamp(1_000 * seq),
            session: 1,
            request: Request::New(NewOrder {
                cl_ord_id: cid(&format!("o{seq}")),
                symbol: sym(AAA),
                side: Side::Buy,
                ord_type: OrdType::Limit,
                price: Some(px("100")),
                qty: Qty(1),
                time_in_force: TimeInForce::Day,
                parties: Parties::NONE,
            }),
        })
        .collect();
    let mut outputs = Vec::with_capacity(16);
    // The first order opens the book's level, which allocates.
    engine.apply(&inputs[0], &mut outputs);
    let digest = engine.digest();
    engine.prepare();
    assert_eq!(
        engine.digest(),
        digest,
        "prepare changes no state (invariant 3)"
    );
    crate::mmap::thread_minor_faults();
    let before = crate::mmap::thread_minor_faults();
    for input in &inputs[1..] {
        outputs.clear();
        engine.apply(input, &mut outputs);
    }
    let faults = crate::mmap::thread_minor_faults() - before;
    assert_eq!(engine.open_orders().len(), 61, "every order rests");
    // 60 records of the slab alone span several pages.
    assert!(
        faults < 3,
        "{faults} page faults applying 60 resting orders after prepare"
    );
}
