//! A deliberately broken build, for rehearsing a canary and testing its gates.
//!
//! A canary exists because a new build can be wrong in ways no test caught. To rehearse one (and
//! to test that the gates catch it) an operator needs a build that is wrong on purpose, in a way
//! that is visible to counterparties and limited to a symbol: [`RejectSymbol`] wraps a real engine
//! and turns every acknowledgement of a new order on one symbol into a reject, as a build with a
//! bad risk check would. Like such a build, it then does not hold the order it rejected: the
//! wrapped engine's order is withdrawn from its book, so that when a canary's rollback moves
//! this engine's state back (a state transfer), the book that moves is the one its answers
//! told the counterparties about. Until it rejects something, its digest matches a correct
//! engine's.
//! `baton engine --fault-reject-symbol SYMBOL` runs it.

use super::{
    Digest, Engine, ExecType, FrozenState, Input, OrdRejReason, OrdStatus, Output, Qty, RejectText,
    Report, SnapshotError, Symbol,
};

/// Rejects every new order on `symbol` that the wrapped engine accepted.
pub struct RejectSymbol<E> {
    /// The engine that does the real work.
    inner: E,
    /// The symbol whose acknowledgements are turned into rejects.
    symbol: Symbol,
    /// The inner build with `+fault-reject-<symbol>`, so status and change records show it.
    build_version: String,
}

impl<E: Engine> RejectSymbol<E> {
    /// Wraps `inner`.
    pub fn new(inner: E, symbol: Symbol) -> RejectSymbol<E> {
        let build_version = format!("{}+fault-reject-{}", inner.build_version(), symbol.as_str());
        RejectSymbol {
            inner,
            symbol,
            build_version,
        }
    }
}

impl<E: Engine> Engine for RejectSymbol<E> {
    fn apply(&mut self, input: &Input, outputs: &mut Vec<Output>) {
        let first = outputs.len();
        self.inner.apply(input, outputs);
        for output in &mut outputs[first..] {
            if let Report::Execution(report) = &mut output.report
                && report.symbol == self.symbol
                && report.exec_type == ExecType::New
            {
                // Withdrawn before the reject goes out: the order this build says it refused
                // must not rest in its book (a partly filled aggressor's rest included).
                self.inner.withdraw(report.order_id);
                report.exec_type = ExecType::Rejected;
                report.ord_status = OrdStatus::Rejected;
                report.leaves_qty = Qty(0);
                report.ord_rej_reason = Some(OrdRejReason::Other);
                report.text = Some(RejectText::OrderCapacity);
            }
        }
    }

    fn prepare(&mut self) {
        self.inner.prepare();
    }

    fn last_input_seq(&self) -> u64 {
        self.inner.last_input_seq()
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        self.inner.snapshot(out);
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.inner.restore(snapshot)
    }

    fn digest(&self) -> Digest {
        self.inner.digest()
    }

    fn freeze(&self) -> Option<Box<dyn FrozenState>> {
        self.inner.freeze()
    }

    fn build_version(&self) -> &str {
        &self.build_version
    }

    fn withdraw(&mut self, order_id: u64) -> bool {
        self.inner.withdraw(order_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        ClOrdId, EngineConfig, MatchingEngine, NewOrder, OrdType, Parties, Price, Request, Side,
        TimeInForce,
    };
    use crate::fix::time::Timestamp;

    fn order(seq: u64, symbol: &str) -> Input {
        Input {
            seq,
            time: Timestamp(seq),
            session: 1,
            request: Request::New(NewOrder {
                cl_ord_id: ClOrdId::try_from_bytes(format!("C{seq}").as_bytes()).unwrap(),
                symbol: Symbol::try_from_bytes(symbol.as_bytes()).unwrap(),
                side: Side::Buy,
                ord_type: OrdType::Limit,
                price: Price::parse_decimal(b"10"),
                qty: Qty(1),
                time_in_force: TimeInForce::Day,
                parties: Parties::NONE,
            }),
        }
    }

    #[test]
    fn only_the_faulty_symbol_is_answered_differently_and_its_book_agrees_with_the_reject() {
        let config = EngineConfig::default();
        let mut good = MatchingEngine::new(&config).unwrap();
        let mut bad = RejectSymbol::new(
            MatchingEngine::new(&config).unwrap(),
            Symbol::try_from_bytes(b"MSFT").unwrap(),
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        good.apply(&order(1, "AAPL"), &mut a);
        bad.apply(&order(1, "AAPL"), &mut b);
        assert_eq!(a, b);
        assert_eq!(good.digest(), bad.digest());
        good.apply(&order(2, "MSFT"), &mut a);
        bad.apply(&order(2, "MSFT"), &mut b);
        assert_ne!(a, b);
        let Report::Execution(report) = &b[1].report else {
            panic!("execution report");
        };
        assert_eq!(report.exec_type, ExecType::Rejected);
        // The rejected order rests in the good engine's book only.
        let msft = Symbol::try_from_bytes(b"MSFT").unwrap();
        assert!(good.open_orders().iter().any(|o| o.symbol == msft));
        assert!(bad.inner.open_orders().iter().all(|o| o.symbol != msft));
        assert_ne!(good.digest(), bad.digest());
        assert!(bad.build_version().ends_with("+fault-reject-MSFT"));
    }
}
