//! The two payloads whose layout protocol version 2 changed, as version 1 lays them out: an
//! Input and an Outputs without parties. A gateway of this build encodes the one and decodes the
//! other when it talks to an engine of the build before parties. Frozen: these are what that
//! build sends and reads, field for field.

use serde::{Deserialize, Serialize};

use crate::engine::{
    CancelReject, ClOrdId, ExecType, ExecutionReport, Input, OrdRejReason, OrdStatus, OrdType,
    Output, Parties, Price, Qty, RejectText, Report, Request, SessionId, Side, Symbol, TimeInForce,
};
use crate::fix::time::Timestamp;

/// An [`Input`] borrowed and encoded without its request's parties.
#[derive(Serialize)]
pub(super) struct InputRef<'a> {
    seq: u64,
    time: Timestamp,
    session: SessionId,
    request: RequestRef<'a>,
}

/// A request without its parties; variants in [`Request`]'s order, fields in each struct's.
#[derive(Serialize)]
enum RequestRef<'a> {
    New {
        cl_ord_id: &'a ClOrdId,
        symbol: &'a Symbol,
        side: Side,
        ord_type: OrdType,
        price: Option<Price>,
        qty: Qty,
        time_in_force: TimeInForce,
    },
    Cancel {
        cl_ord_id: &'a ClOrdId,
        orig_cl_ord_id: &'a ClOrdId,
        symbol: &'a Symbol,
        side: Side,
    },
    Replace {
        cl_ord_id: &'a ClOrdId,
        orig_cl_ord_id: &'a ClOrdId,
        symbol: &'a Symbol,
        side: Side,
        ord_type: OrdType,
        price: Option<Price>,
        qty: Qty,
    },
    /// Never sent: a gateway gives no state transfer to an engine of this version (see
    /// `LINK_PROTOCOL_VERSION_BEFORE_TRANSFER`). Encoded as a variant such an engine does not
    /// know, so that a mistake is refused by it rather than misread.
    Transfer,
}

impl<'a> InputRef<'a> {
    /// `input` as version 1 encodes it.
    pub fn new(input: &'a Input) -> InputRef<'a> {
        let request = match &input.request {
            Request::New(order) => RequestRef::New {
                cl_ord_id: &order.cl_ord_id,
                symbol: &order.symbol,
                side: order.side,
                ord_type: order.ord_type,
                price: order.price,
                qty: order.qty,
                time_in_force: order.time_in_force,
            },
            Request::Cancel(cancel) => RequestRef::Cancel {
                cl_ord_id: &cancel.cl_ord_id,
                orig_cl_ord_id: &cancel.orig_cl_ord_id,
                symbol: &cancel.symbol,
                side: cancel.side,
            },
            Request::Replace(replace) => RequestRef::Replace {
                cl_ord_id: &replace.cl_ord_id,
                orig_cl_ord_id: &replace.orig_cl_ord_id,
                symbol: &replace.symbol,
                side: replace.side,
                ord_type: replace.ord_type,
                price: replace.price,
                qty: replace.qty,
            },
            Request::Transfer(_) => RequestRef::Transfer,
        };
        InputRef {
            seq: input.seq,
            time: input.time,
            session: input.session,
            request,
        }
    }
}

/// An Outputs payload of version 1.
#[derive(Deserialize)]
pub(super) struct Outputs {
    input_seq: u64,
    outputs: Vec<OutputV1>,
}

/// An [`Output`] of version 1.
#[derive(Deserialize)]
struct OutputV1 {
    input_seq: u64,
    index: u32,
    session: SessionId,
    report: ReportV1,
}

/// A [`Report`] of version 1: only the ExecutionReport changed.
#[derive(Deserialize)]
enum ReportV1 {
    Execution(ExecutionReportV1),
    CancelReject(CancelReject),
}

/// An [`ExecutionReport`] without parties.
#[derive(Deserialize)]
struct ExecutionReportV1 {
    order_id: u64,
    cl_ord_id: ClOrdId,
    orig_cl_ord_id: Option<ClOrdId>,
    exec_type: ExecType,
    ord_status: OrdStatus,
    symbol: Symbol,
    side: Side,
    ord_type: OrdType,
    price: Option<Price>,
    time_in_force: TimeInForce,
    order_qty: Qty,
    last_qty: Qty,
    last_px: Option<Price>,
    cum_qty: Qty,
    leaves_qty: Qty,
    avg_px: Price,
    transact_time: Timestamp,
    ord_rej_reason: Option<OrdRejReason>,
    text: Option<RejectText>,
}

impl From<Outputs> for super::Outputs {
    fn from(outputs: Outputs) -> super::Outputs {
        super::Outputs {
            input_seq: outputs.input_seq,
            outputs: outputs
                .outputs
                .into_iter()
                .map(|output| Output {
                    input_seq: output.input_seq,
                    index: output.index,
                    session: output.session,
                    report: match output.report {
                        ReportV1::Execution(r) => Report::Execution(ExecutionReport {
                            order_id: r.order_id,
                            cl_ord_id: r.cl_ord_id,
                            orig_cl_ord_id: r.orig_cl_ord_id,
                            exec_type: r.exec_type,
                            ord_status: r.ord_status,
                            symbol: r.symbol,
                            side: r.side,
                            ord_type: r.ord_type,
                            price: r.price,
                            time_in_force: r.time_in_force,
                            order_qty: r.order_qty,
                            last_qty: r.last_qty,
                            last_px: r.last_px,
                            cum_qty: r.cum_qty,
                            leaves_qty: r.leaves_qty,
                            avg_px: r.avg_px,
                            transact_time: r.transact_time,
                            ord_rej_reason: r.ord_rej_reason,
                            text: r.text,
                            parties: Parties::NONE,
                        }),
                        ReportV1::CancelReject(reject) => Report::CancelReject(reject),
                    },
                })
                .collect(),
        }
    }
}
