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
    CancelOrder, ClOrdId, NewOrder, OrdType, Output, Parties, Party, PartyId, Price, Qty,
    ReplaceOrder, Report, Request, Side, Symbol, TimeInForce,
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
    /// PartyIDSource (447).
    pub const PARTY_ID_SOURCE: u32 = 447;
    /// PartyID (448): the first field of each party.
    pub const PARTY_ID: u32 = 448;
    /// PartyRole (452), read by the venue's party rules (and by the config check of them).
    pub const PARTY_ROLE: u32 = 452;
    /// NoPartyIDs (453): how many parties follow.
    pub const NO_PARTY_IDS: u32 = 453;
    /// PartyRoleQualifier (2376).
    pub const PARTY_ROLE_QUALIFIER: u32 = 2376;
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

/// Reads an order request's Parties group and checks it against the venue's bounds and rules: at
/// most [`constants::PARTIES_MAX`] parties, PartyIDs of at most [`constants::PARTY_ID_LEN_MAX`]
/// bytes, and every role `[venue] parties_required_roles` names. The dictionary has already
/// checked the group's structure (count, order, required members), so each PartyID (448) starts
/// a party and the PartyIDSource, PartyRole and PartyRoleQualifier after it are that party's.
/// The nested sub-IDs (802) are validated by the dictionary but not kept: the order record holds
/// the four fields MiFID II reporting needs, in a fixed inline size.
///
/// A message over the cap is refused whole, never cut to the cap: a report echoing some of an
/// order's parties would misstate who is behind it. A missing role is answered with a
/// BusinessMessageReject (380=5, conditionally required field missing) naming the roles, rather
/// than an ExecutionReport: the order never reaches the sequencer, so no engine assigns it an
/// OrderID, exactly like a limit order without a Price.
fn parties(message: &Message, venue: &VenueConfig) -> Result<Parties, Unusable> {
    let count = message
        .uint_opt(tag::NO_PARTY_IDS)
        .unwrap_or(None)
        .unwrap_or(0);
    if count == 0 && venue.parties_required_roles.is_empty() {
        // Nothing to read and nothing required: the common order costs no walk of its fields.
        return Ok(Parties::NONE);
    }
    let over_cap = || {
        unusable(
            BusinessRejectReason::Other,
            format!(
                "NoPartyIDs (453) is {count}; the venue takes at most {} parties per order",
                constants::PARTIES_MAX
            ),
        )
    };
    if count > constants::PARTIES_MAX as u64 {
        return Err(over_cap());
    }
    let mut parties = Parties::NONE;
    let mut pending: Option<PartyFields> = None;
    for (tag, value) in message.fields() {
        match tag {
            tag::PARTY_ID => {
                if let Some(fields) = pending.take() {
                    parties.push(fields.party()?).map_err(|_| over_cap())?;
                }
                let id = PartyId::try_from_bytes(value).ok_or_else(|| {
                    unusable(
                        BusinessRejectReason::Other,
                        format!(
                            "PartyID (448) must be 1 to {} printable characters",
                            constants::PARTY_ID_LEN_MAX
                        ),
                    )
                })?;
                pending = Some(PartyFields {
                    id,
                    source: None,
                    role: None,
                    role_qualifier: None,
                });
            }
            tag::PARTY_ID_SOURCE => {
                if let (Some(fields), [source]) = (pending.as_mut(), value) {
                    fields.source = Some(*source);
                }
            }
            tag::PARTY_ROLE => {
                if let Some(fields) = pending.as_mut() {
                    fields.role = Some(small_int(value, "PartyRole (452)")?);
                }
            }
            tag::PARTY_ROLE_QUALIFIER => {
                if let Some(fields) = pending.as_mut() {
                    fields.role_qualifier = Some(small_int(value, "PartyRoleQualifier (2376)")?);
                }
            }
            _ => {}
        }
    }
    if let Some(fields) = pending {
        parties.push(fields.party()?).map_err(|_| over_cap())?;
    }
    let present = parties.as_slice();
    let missing: Vec<u32> = venue
        .parties_required_roles
        .iter()
        .copied()
        .filter(|&role| !present.iter().any(|party| u32::from(party.role) == role))
        .collect();
    if missing.is_empty() {
        return Ok(parties);
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

/// The fields of one Parties instance while it is read.
struct PartyFields {
    /// PartyID (448), which opened the instance.
    id: PartyId,
    /// PartyIDSource (447).
    source: Option<u8>,
    /// PartyRole (452).
    role: Option<u16>,
    /// PartyRoleQualifier (2376).
    role_qualifier: Option<u16>,
}

impl PartyFields {
    /// The party, once the instance is complete. The dictionary requires PartyIDSource and
    /// PartyRole in every instance, so an incomplete one means the message was not validated;
    /// it is refused like any other unusable message rather than trusted.
    fn party(self) -> Result<Party, Unusable> {
        let incomplete = || {
            unusable(
                BusinessRejectReason::Other,
                "each party in Parties (453) needs PartyIDSource (447) and PartyRole (452)",
            )
        };
        let (Some(source), Some(role)) = (self.source, self.role) else {
            return Err(incomplete());
        };
        Party::try_from_wire(self.id, source, role, self.role_qualifier).ok_or_else(incomplete)
    }
}

/// An integer field the venue stores in 16 bits (PartyRole, PartyRoleQualifier: FIX's values
/// are all below 1,000).
fn small_int(value: &[u8], name: &str) -> Result<u16, Unusable> {
    crate::fix::codec::parse_uint(value)
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| {
            unusable(
                BusinessRejectReason::Other,
                format!("{name} is out of range"),
            )
        })
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
    let parties = if matches!(
        message.msg_type(),
        msg_type::NEW_ORDER_SINGLE
            | msg_type::ORDER_CANCEL_REQUEST
            | msg_type::ORDER_CANCEL_REPLACE_REQUEST
    ) {
        parties(message, venue)?
    } else {
        Parties::NONE
    };
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
                parties,
            }))
        }
        msg_type::ORDER_CANCEL_REQUEST => Ok(Request::Cancel(CancelOrder {
            cl_ord_id: cl_ord_id(message, tags::CL_ORD_ID, "ClOrdID")?,
            orig_cl_ord_id: cl_ord_id(message, tag::ORIG_CL_ORD_ID, "OrigClOrdID")?,
            symbol: symbol(message)?,
            side: side(message)?,
            parties,
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
                parties,
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

/// The `(input seq, index)` an ExecID written by [`write_output`] names, or `None` for any other
/// value: what a restarted gateway and the simulation read back from a session's store to know
/// which outputs it already holds.
pub fn exec_id_key(value: &[u8]) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (seq, index) = text.split_once('-')?;
    Some((seq.parse().ok()?, index.parse().ok()?))
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
            write_parties(encoder, &report.parties);
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

/// Writes the Parties group (453 and its instances, each in the dictionary's member order) when
/// there are parties. Nothing otherwise, so a report about an order without parties is byte for
/// byte what it was before parties were echoed.
fn write_parties(encoder: &mut Encoder, parties: &Parties) {
    if parties.is_empty() {
        return;
    }
    encoder.uint(tag::NO_PARTY_IDS, parties.len() as u64);
    for party in parties.as_slice() {
        encoder
            .bytes(tag::PARTY_ID, party.id.as_bytes())
            .char(tag::PARTY_ID_SOURCE, party.source)
            .uint(tag::PARTY_ROLE, u64::from(party.role));
        if let Some(qualifier) = party.role_qualifier {
            encoder.uint(tag::PARTY_ROLE_QUALIFIER, u64::from(qualifier));
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
    fn parties_are_carried_into_every_order_request_in_the_order_sent() {
        let fields = [
            (11, "A1"),
            (41, "A0"),
            (55, "ACME"),
            (54, "1"),
            (38, "300"),
            (40, "2"),
            (44, "10"),
            (453, "2"),
            (448, "12345"),
            (447, "P"),
            (452, "3"),
            (2376, "24"),
            (802, "1"),
            (523, "desk"),
            (803, "9"),
            (448, "FIRMLEI"),
            (447, "N"),
            (452, "1"),
        ];
        let expected = [
            Party::try_from_wire(
                PartyId::try_from_bytes(b"12345").unwrap(),
                b'P',
                3,
                Some(24),
            )
            .unwrap(),
            Party::try_from_wire(PartyId::try_from_bytes(b"FIRMLEI").unwrap(), b'N', 1, None)
                .unwrap(),
        ];
        for msg_type in [&b"D"[..], b"F", b"G"] {
            let msg = message(msg_type, &fields);
            let carried = match request_from_fix(&msg, &VenueConfig::default()).unwrap() {
                Request::New(order) => order.parties,
                Request::Cancel(cancel) => cancel.parties,
                Request::Replace(replace) => replace.parties,
                Request::Transfer(_) => unreachable!("FIX never makes a transfer"),
            };
            assert_eq!(carried.as_slice(), expected, "{msg_type:?}");
        }
        let plain = message(
            b"D",
            &[(11, "A1"), (55, "ACME"), (54, "1"), (38, "300"), (40, "1")],
        );
        let Request::New(order) = request_from_fix(&plain, &VenueConfig::default()).unwrap() else {
            panic!("not a new order")
        };
        assert!(order.parties.is_empty());
    }

    /// The ExecutionReport for `report` as the counterparty receives it.
    fn report_message(report: crate::engine::ExecutionReport) -> Message {
        let output = Output {
            input_seq: 5,
            index: 0,
            session: 1,
            report: Report::Execution(report),
        };
        let mut encoder = Encoder::new("FIX.4.4");
        encoder
            .start(output_msg_type(&output))
            .str(49, "B")
            .str(56, "C")
            .uint(34, 9)
            .timestamp(52, Timestamp::ZERO);
        write_output(&mut encoder, &output);
        Message::parse(encoder.finish()).unwrap()
    }

    #[test]
    fn execution_reports_echo_parties_and_validate() {
        let mut parties = Parties::NONE;
        for (id, source, role, qualifier) in [
            ("12345", b'P', 3, Some(24)),
            ("7", b'P', 12, None),
            ("ALGO1", b'P', 122, Some(22)),
        ] {
            parties
                .push(
                    Party::try_from_wire(
                        PartyId::try_from_bytes(id.as_bytes()).unwrap(),
                        source,
                        role,
                        qualifier,
                    )
                    .unwrap(),
                )
                .unwrap();
        }
        let report = crate::engine::ExecutionReport {
            order_id: 5,
            cl_ord_id: ClOrdId::try_from_bytes(b"A1").unwrap(),
            orig_cl_ord_id: None,
            exec_type: crate::engine::ExecType::New,
            ord_status: crate::engine::OrdStatus::New,
            symbol: Symbol::try_from_bytes(b"ACME").unwrap(),
            side: Side::Buy,
            ord_type: OrdType::Limit,
            price: Price::parse_decimal(b"10"),
            time_in_force: TimeInForce::Day,
            order_qty: Qty(300),
            last_qty: Qty::ZERO,
            last_px: None,
            cum_qty: Qty::ZERO,
            leaves_qty: Qty(300),
            avg_px: Price::ZERO,
            transact_time: Timestamp::ZERO,
            ord_rej_reason: None,
            text: None,
            parties,
        };
        let echoed = report_message(report.clone());
        Dictionary::venue().validate(&echoed).unwrap();
        let group: Vec<(u32, &[u8])> = echoed
            .fields()
            .skip_while(|(tag, _)| *tag != tag::NO_PARTY_IDS)
            .take_while(|(tag, _)| *tag != 10)
            .collect();
        let expected: Vec<(u32, &[u8])> = vec![
            (453, b"3"),
            (448, b"12345"),
            (447, b"P"),
            (452, b"3"),
            (2376, b"24"),
            (448, b"7"),
            (447, b"P"),
            (452, b"12"),
            (448, b"ALGO1"),
            (447, b"P"),
            (452, b"122"),
            (2376, b"22"),
        ];
        assert_eq!(group, expected);
        // Without parties, no group at all.
        let plain = report_message(crate::engine::ExecutionReport {
            parties: Parties::NONE,
            ..report
        });
        Dictionary::venue().validate(&plain).unwrap();
        assert_eq!(plain.get(tag::NO_PARTY_IDS), None);
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

    #[test]
    fn an_exec_id_reads_back_as_the_output_it_was_written_for() {
        for (input_seq, index) in [(0, 0), (5, 3), (u64::MAX, u32::MAX)] {
            let output = Output {
                input_seq,
                index,
                session: 1,
                report: Report::CancelReject(crate::engine::CancelReject {
                    order_id: None,
                    cl_ord_id: ClOrdId::try_from_bytes(b"C1").unwrap(),
                    orig_cl_ord_id: ClOrdId::try_from_bytes(b"C0").unwrap(),
                    ord_status: crate::engine::OrdStatus::Rejected,
                    response_to: crate::engine::CxlRejResponseTo::Replace,
                    reason: crate::engine::CxlRejReason::TooLateToCancel,
                    text: None,
                    transact_time: Timestamp::ZERO,
                }),
            };
            let mut written = Vec::new();
            write_exec_id(&mut written, &output);
            assert_eq!(exec_id_key(&written), Some((input_seq, index)));
        }
        for other in [&b""[..], b"5", b"5-", b"-3", b"5-x", b"5-3-1", b"\xff-1"] {
            assert_eq!(exec_id_key(other), None, "{other:?}");
        }
    }
}
