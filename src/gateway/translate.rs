//! FIX business messages to engine requests, and engine outputs back to FIX.
//!
//! The engine never sees FIX (invariant 1), so this is where FIX field semantics live on the
//! business side: which tags a request needs, their types, and how each report is written. A
//! message the dictionary accepted can still be unusable here (a limit order without a price, a
//! ClOrdID longer than the venue allows); such a message is answered with a
//! BusinessMessageReject and never reaches the sequencer.

use crate::config::VenueConfig;
use crate::constants;
use crate::engine::{
    CancelOrder, ClOrdId, NewOrder, OrdType, Output, Price, Qty, ReplaceOrder, Report, Request,
    Side, Symbol, TimeInForce,
};
use crate::fix::codec::{Encoder, Message, push_uint};
use crate::fix::dictionary::Dictionary;
use crate::fix::tags::{self, BusinessRejectReason, msg_type};

/// Tags of the order fields this module reads or writes (the session layer names its own in
/// [`tags`]).
pub(crate) mod tag {
    pub const AVG_PX: u32 = 6;
    pub const CUM_QTY: u32 = 14;
    pub const EXEC_ID: u32 = 17;
    pub const LAST_PX: u32 = 31;
    pub const LAST_QTY: u32 = 32;
    pub const ORDER_ID: u32 = 37;
    pub const ORDER_QTY: u32 = 38;
    pub const ORD_STATUS: u32 = 39;
    pub const ORD_TYPE: u32 = 40;
    pub const ORIG_CL_ORD_ID: u32 = 41;
    pub const PRICE: u32 = 44;
    pub const SIDE: u32 = 54;
    pub const SYMBOL: u32 = 55;
    pub const TEXT: u32 = 58;
    pub const TIME_IN_FORCE: u32 = 59;
    pub const TRANSACT_TIME: u32 = 60;
    pub const CXL_REJ_REASON: u32 = 102;
    pub const ORD_REJ_REASON: u32 = 103;
    pub const EXEC_TYPE: u32 = 150;
    pub const LEAVES_QTY: u32 = 151;
    pub const CXL_REJ_RESPONSE_TO: u32 = 434;
    /// PartyID (448): the first field of each party.
    pub const PARTY_ID: u32 = 448;
    /// PartyRole (452), read by the venue's party rules (and by the config check of them).
    pub const PARTY_ROLE: u32 = 452;
    /// NoPartyIDs (453): how many parties follow.
    pub const NO_PARTY_IDS: u32 = 453;
}

/// Why a business message cannot become an engine request: answered with a
/// BusinessMessageReject carrying this reason and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable {
    /// BusinessRejectReason (380).
    pub reason: BusinessRejectReason,
    /// Text (58), naming the field.
    pub text: String,
}

fn unusable(reason: BusinessRejectReason, text: impl Into<String>) -> Unusable {
    Unusable {
        reason,
        text: text.into(),
    }
}

fn required<'a>(message: &'a Message, tag: u32, name: &str) -> Result<&'a [u8], Unusable> {
    message.get(tag).ok_or_else(|| {
        unusable(
            BusinessRejectReason::ConditionallyRequiredFieldMissing,
            format!("{name} ({tag}) is required"),
        )
    })
}

fn parse<T>(
    message: &Message,
    tag: u32,
    name: &str,
    limit: &str,
    read: impl Fn(&[u8]) -> Option<T>,
) -> Result<T, Unusable> {
    let value = required(message, tag, name)?;
    read(value).ok_or_else(|| {
        unusable(
            BusinessRejectReason::Other,
            format!("{name} ({tag}) {limit}"),
        )
    })
}

fn cl_ord_id(message: &Message, tag: u32, name: &str) -> Result<ClOrdId, Unusable> {
    parse(
        message,
        tag,
        name,
        "must be 1 to 32 printable characters",
        ClOrdId::try_from_bytes,
    )
}

fn symbol(message: &Message) -> Result<Symbol, Unusable> {
    parse(
        message,
        tag::SYMBOL,
        "Symbol",
        "must be 1 to 16 printable characters",
        Symbol::try_from_bytes,
    )
}

fn side(message: &Message) -> Result<Side, Unusable> {
    parse(
        message,
        tag::SIDE,
        "Side",
        "must be 1 (buy) or 2 (sell)",
        |v| match v {
            [c] => Side::from_fix(*c),
            _ => None,
        },
    )
}

fn ord_type(message: &Message) -> Result<OrdType, Unusable> {
    parse(
        message,
        tag::ORD_TYPE,
        "OrdType",
        "must be 1 (market) or 2 (limit)",
        |v| match v {
            [c] => OrdType::from_fix(*c),
            _ => None,
        },
    )
}

fn qty(message: &Message) -> Result<Qty, Unusable> {
    parse(
        message,
        tag::ORDER_QTY,
        "OrderQty",
        "must be a whole number",
        Qty::parse_decimal,
    )
}

/// Price is conditionally required: present for limit orders, absent for market orders.
fn price(message: &Message, ord_type: OrdType) -> Result<Option<Price>, Unusable> {
    match (ord_type, message.get(tag::PRICE)) {
        (OrdType::Limit, None) => Err(unusable(
            BusinessRejectReason::ConditionallyRequiredFieldMissing,
            "Price (44) is required for limit orders",
        )),
        (OrdType::Market, Some(_)) => Err(unusable(
            BusinessRejectReason::Other,
            "Price (44) is not allowed on market orders",
        )),
        (_, None) => Ok(None),
        (_, Some(value)) => Price::parse_decimal(value).map(Some).ok_or_else(|| {
            unusable(
                BusinessRejectReason::Other,
                "Price (44) must be a decimal number",
            )
        }),
    }
}

/// Checks an order request's Parties group against the venue's bounds and rules: at most
/// [`constants::PARTIES_MAX`] parties, PartyIDs of at most [`constants::PARTY_ID_LEN_MAX`]
/// bytes, and every role `[venue] parties_required_roles` names. The dictionary has already
/// checked the group's structure (count, order, required members), so the PartyRole fields of
/// the message are exactly the roles of its parties (the nested sub-ID group has none).
///
/// A missing role is answered with a BusinessMessageReject (380=5, conditionally required field
/// missing) naming the roles, rather than an ExecutionReport: the order never reaches the
/// sequencer, so no engine assigns it an OrderID, exactly like a limit order without a Price.
fn check_parties(message: &Message, venue: &VenueConfig) -> Result<(), Unusable> {
    let count = message
        .uint_opt(tag::NO_PARTY_IDS)
        .unwrap_or(None)
        .unwrap_or(0);
    if count == 0 && venue.parties_required_roles.is_empty() {
        // Nothing to bound and nothing required: the common order costs no walk of its fields.
        return Ok(());
    }
    if count > constants::PARTIES_MAX as u64 {
        return Err(unusable(
            BusinessRejectReason::Other,
            format!(
                "NoPartyIDs (453) is {count}; the venue takes at most {} parties per order",
                constants::PARTIES_MAX
            ),
        ));
    }
    let mut roles = [0u32; constants::PARTIES_MAX];
    let mut roles_len = 0;
    for (tag, value) in message.fields() {
        match tag {
            tag::PARTY_ID if value.len() > constants::PARTY_ID_LEN_MAX => {
                return Err(unusable(
                    BusinessRejectReason::Other,
                    format!(
                        "PartyID (448) must be at most {} characters",
                        constants::PARTY_ID_LEN_MAX
                    ),
                ));
            }
            tag::PARTY_ROLE if roles_len < roles.len() => {
                // The dictionary checked the value against PartyRole's list of integers.
                roles[roles_len] = crate::fix::codec::parse_uint(value)
                    .and_then(|role| u32::try_from(role).ok())
                    .unwrap_or(u32::MAX);
                roles_len += 1;
            }
            _ => {}
        }
    }
    let present = &roles[..roles_len];
    let missing: Vec<u32> = venue
        .parties_required_roles
        .iter()
        .copied()
        .filter(|role| !present.contains(role))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|&role| role_name(role)).collect();
    Err(unusable(
        BusinessRejectReason::ConditionallyRequiredFieldMissing,
        format!(
            "Parties (453) must include PartyRole {}; the venue requires it on every order",
            names.join(", ")
        ),
    ))
}

/// `3 (CLIENT_ID)`: a role with the name the dictionary gives it, for reject texts.
fn role_name(role: u32) -> String {
    let description = Dictionary::venue()
        .field(tag::PARTY_ROLE)
        .and_then(|field| {
            field
                .values()
                .iter()
                .find(|v| v.value() == role.to_string())
        })
        .map(|v| v.description().to_owned())
        .unwrap_or_default();
    if description.is_empty() {
        role.to_string()
    } else {
        format!("{role} ({description})")
    }
}

/// The engine request for a business message the dictionary accepted, checked against the
/// venue's rules.
pub fn request_from_fix(message: &Message, venue: &VenueConfig) -> Result<Request, Unusable> {
    if matches!(
        message.msg_type(),
        msg_type::NEW_ORDER_SINGLE
            | msg_type::ORDER_CANCEL_REQUEST
            | msg_type::ORDER_CANCEL_REPLACE_REQUEST
    ) {
        check_parties(message, venue)?;
    }
    match message.msg_type() {
        msg_type::NEW_ORDER_SINGLE => {
            let ord_type = ord_type(message)?;
            let time_in_force = match message.get(tag::TIME_IN_FORCE) {
                None => TimeInForce::Day,
                Some([c]) => TimeInForce::from_fix(*c).ok_or_else(|| {
                    unusable(
                        BusinessRejectReason::Other,
                        "TimeInForce (59) must be 0 (day), 3 (IOC) or 4 (FOK)",
                    )
                })?,
                Some(_) => {
                    return Err(unusable(
                        BusinessRejectReason::Other,
                        "TimeInForce (59) must be one character",
                    ));
                }
            };
            Ok(Request::New(NewOrder {
                cl_ord_id: cl_ord_id(message, tags::CL_ORD_ID, "ClOrdID")?,
                symbol: symbol(message)?,
                side: side(message)?,
                ord_type,
                price: price(message, ord_type)?,
                qty: qty(message)?,
                time_in_force,
            }))
        }
        msg_type::ORDER_CANCEL_REQUEST => Ok(Request::Cancel(CancelOrder {
            cl_ord_id: cl_ord_id(message, tags::CL_ORD_ID, "ClOrdID")?,
            orig_cl_ord_id: cl_ord_id(message, tag::ORIG_CL_ORD_ID, "OrigClOrdID")?,
            symbol: symbol(message)?,
            side: side(message)?,
        })),
        msg_type::ORDER_CANCEL_REPLACE_REQUEST => {
            let ord_type = ord_type(message)?;
            Ok(Request::Replace(ReplaceOrder {
                cl_ord_id: cl_ord_id(message, tags::CL_ORD_ID, "ClOrdID")?,
                orig_cl_ord_id: cl_ord_id(message, tag::ORIG_CL_ORD_ID, "OrigClOrdID")?,
                symbol: symbol(message)?,
                side: side(message)?,
                ord_type,
                price: price(message, ord_type)?,
                qty: qty(message)?,
            }))
        }
        _ => Err(unusable(
            BusinessRejectReason::UnsupportedMessageType,
            "message type not accepted from counterparties",
        )),
    }
}

/// The MsgType of the FIX message that carries `output`.
pub fn output_msg_type(output: &Output) -> &'static [u8] {
    match output.report {
        Report::Execution(_) => msg_type::EXECUTION_REPORT,
        Report::CancelReject(_) => msg_type::ORDER_CANCEL_REJECT,
    }
}

/// ExecID (17) of an output: `(input seq, index)` is its identity across engines, so the same
/// execution gets the same ExecID whichever engine produced it.
fn write_exec_id(out: &mut Vec<u8>, output: &Output) {
    push_uint(out, output.input_seq);
    out.push(b'-');
    push_uint(out, u64::from(output.index));
}

/// Writes the body (everything after the standard header) of the FIX message for `output`.
pub fn write_output(encoder: &mut Encoder, output: &Output) {
    match &output.report {
        Report::Execution(report) => {
            encoder
                .uint(tag::ORDER_ID, report.order_id)
                .bytes(tags::CL_ORD_ID, report.cl_ord_id.as_bytes());
            if let Some(orig) = &report.orig_cl_ord_id {
                encoder.bytes(tag::ORIG_CL_ORD_ID, orig.as_bytes());
            }
            encoder
                .with(tag::EXEC_ID, |out| write_exec_id(out, output))
                .char(tag::EXEC_TYPE, report.exec_type.fix_value())
                .char(tag::ORD_STATUS, report.ord_status.fix_value())
                .bytes(tag::SYMBOL, report.symbol.as_bytes())
                .char(tag::SIDE, report.side.fix_value())
                .with(tag::ORDER_QTY, |out| report.order_qty.write_decimal(out))
                .char(tag::ORD_TYPE, report.ord_type.fix_value());
            if let Some(price) = report.price {
                encoder.with(tag::PRICE, |out| price.write_decimal(out));
            }
            encoder.char(tag::TIME_IN_FORCE, report.time_in_force.fix_value());
            if let Some(last_px) = report.last_px {
                encoder
                    .with(tag::LAST_QTY, |out| report.last_qty.write_decimal(out))
                    .with(tag::LAST_PX, |out| last_px.write_decimal(out));
            }
            encoder
                .with(tag::LEAVES_QTY, |out| report.leaves_qty.write_decimal(out))
                .with(tag::CUM_QTY, |out| report.cum_qty.write_decimal(out))
                .with(tag::AVG_PX, |out| report.avg_px.write_decimal(out))
                .timestamp(tag::TRANSACT_TIME, report.transact_time);
            if let Some(reason) = report.ord_rej_reason {
                encoder.uint(tag::ORD_REJ_REASON, u64::from(reason.fix_value()));
            }
            if let Some(text) = report.text {
                encoder.str(tag::TEXT, text.as_str());
            }
        }
        Report::CancelReject(reject) => {
            match reject.order_id {
                Some(id) => encoder.uint(tag::ORDER_ID, id),
                None => encoder.bytes(tag::ORDER_ID, b"NONE"),
            };
            encoder
                .bytes(tags::CL_ORD_ID, reject.cl_ord_id.as_bytes())
                .bytes(tag::ORIG_CL_ORD_ID, reject.orig_cl_ord_id.as_bytes())
                .char(tag::ORD_STATUS, reject.ord_status.fix_value())
                .char(tag::CXL_REJ_RESPONSE_TO, reject.response_to.fix_value())
                .uint(tag::CXL_REJ_REASON, u64::from(reject.reason.fix_value()));
            if let Some(text) = reject.text {
                encoder.str(tag::TEXT, text.as_str());
            }
            encoder.timestamp(tag::TRANSACT_TIME, reject.transact_time);
        }
    }
}

/// Writes the body of a BusinessMessageReject answering `message`.
pub fn write_business_reject(
    encoder: &mut Encoder,
    message: &Message,
    reason: BusinessRejectReason,
    text: &str,
) {
    encoder
        .uint(
            tags::REF_SEQ_NUM,
            message.uint(tags::MSG_SEQ_NUM).unwrap_or(0),
        )
        .bytes(tags::REF_MSG_TYPE, message.msg_type());
    if let Some(id) = message.get(tags::CL_ORD_ID) {
        encoder.bytes(tags::BUSINESS_REJECT_REF_ID, id);
    }
    encoder
        .uint(tags::BUSINESS_REJECT_REASON, u64::from(reason.code()))
        .str(tags::TEXT, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::time::Timestamp;

    fn message(msg_type: &[u8], fields: &[(u32, &str)]) -> Message {
        let mut encoder = Encoder::new("FIX.4.4");
        encoder
            .start(msg_type)
            .str(49, "C")
            .str(56, "B")
            .uint(34, 7)
            .timestamp(52, Timestamp::ZERO);
        for (tag, value) in fields {
            encoder.str(*tag, value);
        }
        Message::parse(encoder.finish()).unwrap()
    }

    #[test]
    fn new_order_single_becomes_a_new_request() {
        let msg = message(
            b"D",
            &[
                (11, "A1"),
                (55, "ACME"),
                (54, "2"),
                (38, "300"),
                (40, "2"),
                (44, "10.25"),
                (59, "3"),
            ],
        );
        let Request::New(order) = request_from_fix(&msg, &VenueConfig::default()).unwrap() else {
            panic!("not a new order")
        };
        assert_eq!(order.cl_ord_id.as_bytes(), b"A1");
        assert_eq!(order.side, Side::Sell);
        assert_eq!(order.qty, Qty(300));
        assert_eq!(order.price, Price::parse_decimal(b"10.25"));
        assert_eq!(order.time_in_force, TimeInForce::Ioc);
    }

    #[test]
    fn limit_order_without_price_is_unusable() {
        let msg = message(
            b"D",
            &[(11, "A1"), (55, "ACME"), (54, "1"), (38, "300"), (40, "2")],
        );
        let error = request_from_fix(&msg, &VenueConfig::default()).unwrap_err();
        assert_eq!(
            error.reason,
            BusinessRejectReason::ConditionallyRequiredFieldMissing
        );
        assert!(error.text.contains("Price (44)"));
    }

    #[test]
    fn overlong_cl_ord_id_and_fractional_quantity_are_unusable() {
        let long = "X".repeat(33);
        let msg = message(
            b"D",
            &[(11, &long), (55, "ACME"), (54, "1"), (38, "300"), (40, "1")],
        );
        assert!(
            request_from_fix(&msg, &VenueConfig::default())
                .unwrap_err()
                .text
                .contains("ClOrdID")
        );
        let msg = message(
            b"D",
            &[(11, "A"), (55, "ACME"), (54, "1"), (38, "1.5"), (40, "1")],
        );
        assert!(
            request_from_fix(&msg, &VenueConfig::default())
                .unwrap_err()
                .text
                .contains("OrderQty")
        );
    }

    /// A NewOrderSingle with these parties, as (PartyID, PartyRole).
    fn order_with_parties(parties: &[(&str, &str)]) -> Message {
        let count = parties.len().to_string();
        let mut fields: Vec<(u32, &str)> = vec![
            (11, "A1"),
            (55, "ACME"),
            (54, "1"),
            (38, "300"),
            (40, "1"),
            (453, &count),
        ];
        for (id, role) in parties {
            fields.extend([(448, *id), (447, "P"), (452, *role)]);
        }
        message(b"D", &fields)
    }

    fn roles(roles: &[u32]) -> VenueConfig {
        VenueConfig {
            parties_required_roles: roles.to_vec(),
        }
    }

    #[test]
    fn required_party_roles_are_checked_and_named() {
        let venue = roles(&[3, 12]);
        let both = order_with_parties(&[("12345", "3"), ("7", "12"), ("9", "122")]);
        assert!(request_from_fix(&both, &venue).is_ok());
        let error = request_from_fix(&order_with_parties(&[("7", "12")]), &venue).unwrap_err();
        assert_eq!(
            error.reason,
            BusinessRejectReason::ConditionallyRequiredFieldMissing
        );
        assert_eq!(
            error.text,
            "Parties (453) must include PartyRole 3 (CLIENT_ID); the venue requires it on every order"
        );
        let error = request_from_fix(&order_with_parties(&[]), &venue).unwrap_err();
        assert!(
            error
                .text
                .contains("PartyRole 3 (CLIENT_ID), 12 (EXECUTING_TRADER)"),
            "{}",
            error.text
        );
        // No rule: no parties needed. Cancels are held to the rule too.
        assert!(request_from_fix(&order_with_parties(&[]), &roles(&[])).is_ok());
        let cancel = message(b"F", &[(41, "A1"), (11, "C1"), (55, "ACME"), (54, "1")]);
        assert!(request_from_fix(&cancel, &roles(&[3])).is_err());
    }

    #[test]
    fn parties_beyond_the_bounds_are_unusable() {
        let many: Vec<(&str, &str)> = (0..=constants::PARTIES_MAX).map(|_| ("1", "3")).collect();
        let error = request_from_fix(&order_with_parties(&many), &roles(&[])).unwrap_err();
        assert!(error.text.contains("at most 8 parties"), "{}", error.text);
        let long = "9".repeat(constants::PARTY_ID_LEN_MAX + 1);
        let error =
            request_from_fix(&order_with_parties(&[(&long, "3")]), &roles(&[])).unwrap_err();
        assert!(error.text.contains("PartyID (448)"), "{}", error.text);
        let longest = "9".repeat(constants::PARTY_ID_LEN_MAX);
        assert!(request_from_fix(&order_with_parties(&[(&longest, "3")]), &roles(&[])).is_ok());
    }

    #[test]
    fn cancel_and_replace_requests_carry_orig_cl_ord_id() {
        let msg = message(b"F", &[(41, "A1"), (11, "C1"), (55, "ACME"), (54, "1")]);
        let Request::Cancel(cancel) = request_from_fix(&msg, &VenueConfig::default()).unwrap()
        else {
            panic!()
        };
        assert_eq!(cancel.orig_cl_ord_id.as_bytes(), b"A1");
        let msg = message(
            b"G",
            &[
                (41, "A1"),
                (11, "R1"),
                (55, "ACME"),
                (54, "1"),
                (38, "50"),
                (40, "2"),
                (44, "9"),
            ],
        );
        let Request::Replace(replace) = request_from_fix(&msg, &VenueConfig::default()).unwrap()
        else {
            panic!()
        };
        assert_eq!(replace.qty, Qty(50));
    }
}
