//! Value types the engine trades in: fixed-point prices, whole quantities, inline identifiers and
//! the FIX enumerations the gateway maps to and from the wire.
//!
//! Everything here is `Copy` and heap-free, because every order carries several of these values
//! through the hot path and the engine promises not to allocate per order.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::constants::{
    ENGINE_CL_ORD_ID_LEN_MAX, ENGINE_SYMBOL_LEN_MAX, PARTIES_MAX, PARTY_ID_LEN_MAX,
};

/// A price as a fixed-point number with [`Price::SCALE`] units per 1.
///
/// Fixed point rather than a float so that tick checks are exact integer remainders and the
/// average price is reproduced bit for bit by every engine version (invariant 3). Negative prices
/// are representable because spreads and some futures trade below zero.
///
/// Serialization: binary formats (snapshots, link frames) carry the raw `i64`; human-readable
/// formats (TOML, JSON) carry the decimal string, and also accept a number, so an operator can
/// write `tick_size = 0.01` or `tick_size = "0.01"` and get exactly one cent.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i64);

/// Decimal digits after the point in a [`Price`]; 8 covers FX pips and crypto satoshis.
const PRICE_SCALE_DIGITS: usize = 8;

impl Price {
    /// Raw units per 1.0: `Price(Price::SCALE)` is a price of 1.
    pub const SCALE: i64 = 100_000_000;

    /// Zero, the average price of an order with nothing filled yet.
    pub const ZERO: Price = Price(0);

    /// Parses a FIX decimal (`101.25`, `-0.5`, `100`, `.5`, `100.`; no exponent, no `+`).
    ///
    /// Digits past the eighth decimal place are accepted only if they are zeros, so a price the
    /// engine cannot represent exactly is refused (`None`) instead of being silently rounded.
    /// Overflow also gives `None`.
    pub fn parse_decimal(text: &[u8]) -> Option<Price> {
        let (negative, digits) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let magnitude = parse_fixed(digits, PRICE_SCALE_DIGITS)?;
        if negative {
            // i64::MIN has no positive counterpart, so go through i128.
            i64::try_from(-i128::from(magnitude)).ok().map(Price)
        } else {
            i64::try_from(magnitude).ok().map(Price)
        }
    }

    /// Appends the decimal form with trailing zeros trimmed (`101.25`, `100`, `-0.5`), without
    /// any allocation beyond `out` growing, because every ExecutionReport carries prices.
    pub fn write_decimal(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; DECIMAL_BUF_LEN];
        let start = format_fixed(
            self.0.unsigned_abs(),
            self.0 < 0,
            PRICE_SCALE_DIGITS,
            &mut buf,
        );
        out.extend_from_slice(&buf[start..]);
    }

    /// Whether this price is a whole multiple of `tick` (positive), the tick-size rule every
    /// order price must pass; exact because both are fixed point.
    pub fn is_multiple_of(self, tick: Price) -> bool {
        self.0 % tick.0 == 0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; DECIMAL_BUF_LEN];
        let start = format_fixed(
            self.0.unsigned_abs(),
            self.0 < 0,
            PRICE_SCALE_DIGITS,
            &mut buf,
        );
        f.write_str(std::str::from_utf8(&buf[start..]).unwrap_or("?"))
    }
}

impl fmt::Debug for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Price({self})")
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(DecimalPriceVisitor)
        } else {
            i64::deserialize(deserializer).map(Price)
        }
    }
}

/// Reads a price written by a person: a decimal string, a float or an integer.
struct DecimalPriceVisitor;

impl Visitor<'_> for DecimalPriceVisitor {
    type Value = Price;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal price with at most 8 fractional digits, such as 0.01 or \"0.01\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Price, E> {
        Price::parse_decimal(value.as_bytes())
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(value), &self))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Price, E> {
        // Display prints the shortest decimal that reads back as the same float and never uses an
        // exponent, so `0.01` becomes "0.01" and converts exactly; NaN and infinities fail parsing.
        let text = value.to_string();
        Price::parse_decimal(text.as_bytes())
            .ok_or_else(|| E::invalid_value(de::Unexpected::Float(value), &self))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Price, E> {
        value
            .checked_mul(Price::SCALE)
            .map(Price)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(value), &self))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Price, E> {
        i64::try_from(value)
            .ok()
            .and_then(|v| v.checked_mul(Price::SCALE))
            .map(Price)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(value), &self))
    }
}

/// A quantity in whole units: the venue trades integer quantities, so fractional quantities are
/// refused at the edge rather than rounded somewhere inside.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Qty(pub u64);

impl Qty {
    /// Nothing, the quantity of a report that carries no fill.
    pub const ZERO: Qty = Qty(0);

    /// Parses a FIX quantity: `100`, `100.` and `100.0` are accepted, `100.5`, signs and overflow
    /// give `None`, so the gateway can reject the message with a clear reason.
    pub fn parse_decimal(text: &[u8]) -> Option<Qty> {
        parse_fixed(text, 0).map(Qty)
    }

    /// Appends the decimal form (`100`) without allocating beyond `out` growing.
    pub fn write_decimal(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; DECIMAL_BUF_LEN];
        let start = format_fixed(self.0, false, 0, &mut buf);
        out.extend_from_slice(&buf[start..]);
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Qty({})", self.0)
    }
}

/// Room for a sign, 20 digits of u64 and a decimal point.
const DECIMAL_BUF_LEN: usize = 24;

/// Parses unsigned `digits[.digits]` into an integer scaled by 10^`scale_digits`. At least one
/// digit is required; fractional digits beyond the scale must be zeros.
fn parse_fixed(text: &[u8], scale_digits: usize) -> Option<u64> {
    let (int_part, frac_part) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &text[text.len()..]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in int_part {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    for (i, &b) in frac_part.iter().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        if i < scale_digits {
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        } else if b != b'0' {
            return None;
        }
    }
    for _ in frac_part.len()..scale_digits {
        value = value.checked_mul(10)?;
    }
    Some(value)
}

/// Writes `magnitude / 10^scale_digits` right-aligned into `buf` with trailing fractional zeros
/// trimmed and returns where the text starts.
fn format_fixed(
    mut magnitude: u64,
    negative: bool,
    scale_digits: usize,
    buf: &mut [u8; DECIMAL_BUF_LEN],
) -> usize {
    let mut pos = buf.len();
    let mut frac_digits = scale_digits;
    // Drop trailing zeros of the fraction first: they are never written.
    while frac_digits > 0 && magnitude.is_multiple_of(10) {
        magnitude /= 10;
        frac_digits -= 1;
    }
    for _ in 0..frac_digits {
        pos -= 1;
        buf[pos] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
    }
    if frac_digits > 0 {
        pos -= 1;
        buf[pos] = b'.';
    }
    loop {
        pos -= 1;
        buf[pos] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        pos -= 1;
        buf[pos] = b'-';
    }
    pos
}

/// Defines a fixed-capacity, inline, printable-ASCII identifier type.
macro_rules! inline_ascii {
    ($(#[$meta:meta])* $name:ident, $capacity:expr, $what:literal) => {
        $(#[$meta])*
        // Equality compares the fixed-size fields, which agrees with comparing `as_bytes()`
        // because bytes past `len` are always zero.
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            /// Number of meaningful bytes in `bytes`; 1..=capacity for every constructed value.
            len: u8,
            /// The identifier, left-aligned; bytes past `len` are always zero, which is what
            /// lets equality and hashing work on the whole array.
            bytes: [u8; $capacity],
        }

        impl $name {
            /// Longest accepted identifier in bytes.
            pub const CAPACITY: usize = $capacity;

            /// Copies `bytes` in; `None` if empty, longer than [`Self::CAPACITY`] or not
            /// printable ASCII, so that every value can be written back into a FIX field and
            /// shown in a log as is.
            pub fn try_from_bytes(bytes: &[u8]) -> Option<Self> {
                if bytes.is_empty()
                    || bytes.len() > $capacity
                    || !bytes.iter().all(|b| (0x20..=0x7e).contains(b))
                {
                    return None;
                }
                let mut inline = [0u8; $capacity];
                inline[..bytes.len()].copy_from_slice(bytes);
                Some(Self { len: bytes.len() as u8, bytes: inline })
            }

            /// The identifier's bytes as received.
            pub fn as_bytes(&self) -> &[u8] {
                &self.bytes[..usize::from(self.len)]
            }

            /// The identifier as text; always valid because construction admits ASCII only.
            pub fn as_str(&self) -> &str {
                std::str::from_utf8(self.as_bytes()).expect(concat!($what, " holds ASCII only"))
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            /// Byte-wise, so sorted snapshots do not depend on the capacity.
            fn cmp(&self, other: &Self) -> Ordering {
                self.as_bytes().cmp(other.as_bytes())
            }
        }

        impl Hash for $name {
            /// Whole fixed-size words rather than a length-prefixed slice: the padding is
            /// always zero, so this agrees with `Eq` and hashes in a few word-sized steps.
            fn hash<H: Hasher>(&self, state: &mut H) {
                state.write(&self.bytes);
                state.write_u8(self.len);
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl Serialize for $name {
            /// Bytes in binary formats (stable snapshot and link encoding), text in readable ones.
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.serialize_str(self.as_str())
                } else {
                    serializer.serialize_bytes(self.as_bytes())
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            /// Validates like [`Self::try_from_bytes`], so a snapshot or frame cannot smuggle in
            /// an identifier the FIX side could not have produced.
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct InlineVisitor;
                impl<'de> Visitor<'de> for InlineVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} of 1 to {} printable ASCII bytes", $what, $capacity)
                    }

                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        $name::try_from_bytes(v)
                            .ok_or_else(|| E::invalid_value(de::Unexpected::Bytes(v), &self))
                    }

                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        self.visit_bytes(v.as_bytes())
                    }
                }
                if deserializer.is_human_readable() {
                    deserializer.deserialize_str(InlineVisitor)
                } else {
                    deserializer.deserialize_bytes(InlineVisitor)
                }
            }
        }
    };
}

inline_ascii!(
    /// A client order id (FIX ClOrdID, tag 11), unique per session for the whole session day.
    /// Inline and `Copy` so the duplicate check and order records never allocate.
    ClOrdId,
    ENGINE_CL_ORD_ID_LEN_MAX,
    "ClOrdID"
);

inline_ascii!(
    /// An instrument symbol (FIX Symbol, tag 55). Inline and `Copy` because every report and
    /// request carries one.
    Symbol,
    ENGINE_SYMBOL_LEN_MAX,
    "Symbol"
);

inline_ascii!(
    /// A party's identifier (FIX PartyID, tag 448): a MiFID II short code, an LEI, a MIC or a
    /// firm's own code. Inline and `Copy` so an order keeps its parties without a heap pointer.
    PartyId,
    PARTY_ID_LEN_MAX,
    "PartyID"
);

/// One instance of the Parties group (NoPartyIDs, 453): who stands behind an order in one role.
///
/// Roles and sources are kept as their FIX wire values rather than enums: the gateway's
/// dictionary decides which values the venue accepts, and the engine only stores and echoes
/// them, so adding a role to the dictionary needs no engine change (and no snapshot format).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "PartyWire")]
pub struct Party {
    /// PartyID (448).
    pub id: PartyId,
    /// PartyIDSource (447) as its FIX character; printable ASCII, so it can be echoed as is.
    pub source: u8,
    /// PartyRole (452).
    pub role: u16,
    /// PartyRoleQualifier (2376), when the party had one.
    pub role_qualifier: Option<u16>,
}

/// A [`Party`] as decoded, before the source character is checked: a link frame or a snapshot
/// is external input and must not put a control character into an ExecutionReport.
#[derive(Deserialize)]
struct PartyWire {
    id: PartyId,
    source: u8,
    role: u16,
    role_qualifier: Option<u16>,
}

impl Party {
    /// A party from decoded wire values; `None` unless `source` is one printable, non-space
    /// ASCII character, the only kind the FIX side can have produced and can echo.
    pub fn try_from_wire(
        id: PartyId,
        source: u8,
        role: u16,
        role_qualifier: Option<u16>,
    ) -> Option<Party> {
        (0x21..=0x7e).contains(&source).then_some(Party {
            id,
            source,
            role,
            role_qualifier,
        })
    }
}

impl TryFrom<PartyWire> for Party {
    type Error = String;

    fn try_from(wire: PartyWire) -> Result<Party, String> {
        Party::try_from_wire(wire.id, wire.source, wire.role, wire.role_qualifier).ok_or_else(
            || {
                format!(
                    "PartyIDSource must be one printable character, not byte {}",
                    wire.source
                )
            },
        )
    }
}

/// A slot of [`Parties`] past its length. Never read: equality, hashing, ordering and
/// serialization look at the first `len` entries only.
const PARTY_UNUSED: Party = Party {
    id: PartyId {
        len: 0,
        bytes: [0; PARTY_ID_LEN_MAX],
    },
    source: 0,
    role: 0,
    role_qualifier: None,
};

/// The parties of an order (or of a cancel or replace request), in the order the counterparty
/// sent them, which is the order they are echoed in.
///
/// A fixed-capacity inline list of at most [`PARTIES_MAX`] entries, so an order record, a
/// request and a report stay `Copy` and heap-free (the engine allocates nothing per order). The
/// gateway refuses a message with more parties before it is sequenced, so nothing is ever
/// truncated here; [`Parties::push`] reports a full list instead. Encoded (link, journal,
/// snapshots) as a length-prefixed sequence of its entries, so an order without parties costs
/// one byte.
#[derive(Clone, Copy, Eq)]
pub struct Parties {
    /// Entries in use, 0..=PARTIES_MAX.
    len: u8,
    /// The entries; slots from `len` on hold `PARTY_UNUSED`, never read (equality, hashing and
    /// ordering look at the first `len` only).
    entries: [Party; PARTIES_MAX],
}

impl Parties {
    /// No parties: the value for an order that carried none.
    pub const NONE: Parties = Parties {
        len: 0,
        entries: [PARTY_UNUSED; PARTIES_MAX],
    };

    /// Appends `party`; gives it back when the list already holds [`PARTIES_MAX`] entries.
    pub fn push(&mut self, party: Party) -> Result<(), Party> {
        let Some(slot) = self.entries.get_mut(usize::from(self.len)) else {
            return Err(party);
        };
        *slot = party;
        self.len += 1;
        Ok(())
    }

    /// The parties, in the order they were sent.
    pub fn as_slice(&self) -> &[Party] {
        &self.entries[..usize::from(self.len)]
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Builds a list from a slice; `None` if it has more than [`PARTIES_MAX`] entries.
    pub fn from_slice(parties: &[Party]) -> Option<Parties> {
        let mut list = Parties::NONE;
        for party in parties {
            list.push(*party).ok()?;
        }
        Some(list)
    }
}

impl Default for Parties {
    fn default() -> Parties {
        Parties::NONE
    }
}

impl PartialEq for Parties {
    /// The entries in use only: the shadow comparison compares every output of both engines,
    /// and comparing all [`PARTIES_MAX`] slots field by field was most of its time when orders
    /// carry none or a few (unused slots are equal anyway).
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.as_slice() == other.as_slice()
    }
}

impl std::hash::Hash for Parties {
    /// The entries in use, as equality sees them.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialOrd for Parties {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Parties {
    /// Entry by entry, so sorted lists do not depend on the capacity.
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl fmt::Debug for Parties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for Parties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Parties {
    /// Refuses more than [`PARTIES_MAX`] entries, so a frame or snapshot cannot overflow the
    /// inline list (the gateway never sequences such an order).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PartiesVisitor;
        impl<'de> Visitor<'de> for PartiesVisitor {
            type Value = Parties;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {PARTIES_MAX} parties")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parties, A::Error> {
                let mut parties = Parties::NONE;
                while let Some(party) = seq.next_element::<Party>()? {
                    if parties.push(party).is_err() {
                        return Err(de::Error::invalid_length(PARTIES_MAX + 1, &self));
                    }
                }
                Ok(parties)
            }
        }
        deserializer.deserialize_seq(PartiesVisitor)
    }
}

/// Defines a FIX enumeration whose wire value is one ASCII character.
macro_rules! fix_char_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The character FIX puts on the wire for this value.
            pub const fn fix_value(self) -> u8 {
                match self {
                    $($name::$variant => $value,)+
                }
            }

            /// The value for a wire character; `None` for values this venue does not support,
            /// which the gateway answers with a session-level reject.
            pub const fn from_fix(value: u8) -> Option<Self> {
                match value {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

/// Defines a FIX enumeration whose wire value is an integer.
macro_rules! fix_int_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The integer FIX puts on the wire for this value.
            pub const fn fix_value(self) -> u32 {
                match self {
                    $($name::$variant => $value,)+
                }
            }

            /// The value for a wire integer; `None` for values FIX 4.4 does not define.
            pub const fn from_fix(value: u32) -> Option<Self> {
                match value {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

fix_char_enum!(
    /// Side (tag 54). Only the two sides a central limit order book matches are supported.
    Side {
        /// Buys; rests on the bid side.
        Buy = b'1',
        /// Sells; rests on the ask side.
        Sell = b'2',
    }
);

impl Side {
    /// The side this one trades against.
    pub const fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

fix_char_enum!(
    /// OrdType (tag 40).
    OrdType {
        /// Takes whatever liquidity there is and never rests; carries no price.
        Market = b'1',
        /// Trades at its price or better; must carry a price.
        Limit = b'2',
    }
);

fix_char_enum!(
    /// TimeInForce (tag 59).
    TimeInForce {
        /// Rests until filled or canceled (the venue has no end-of-day expiry in the engine yet).
        Day = b'0',
        /// Immediate or cancel: fills what crosses now, the rest is canceled.
        Ioc = b'3',
        /// Fill or kill: fills completely now or not at all.
        Fok = b'4',
    }
);

fix_char_enum!(
    /// ExecType (tag 150) as FIX 4.4 defines it: fills are `Trade` (F); 4.2's PartialFill (1) and
    /// Fill (2) were removed in 4.3, so they are not offered.
    ExecType {
        /// The order was accepted.
        New = b'0',
        /// The order was canceled, by request or because an IOC, FOK or market order could not
        /// trade its remainder.
        Canceled = b'4',
        /// A cancel/replace request was applied.
        Replaced = b'5',
        /// The order was refused; OrdRejReason and Text say why.
        Rejected = b'8',
        /// The order traded; LastQty and LastPx say how much at what price.
        Trade = b'F',
    }
);

fix_char_enum!(
    /// OrdStatus (tag 39): the state of the order after the report. FIX 4.4's Replaced (5) is
    /// marked "no longer used" and is never emitted, so it is not offered.
    OrdStatus {
        /// Accepted, nothing filled.
        New = b'0',
        /// Some filled, the rest still open.
        PartiallyFilled = b'1',
        /// Completely filled; the order is done.
        Filled = b'2',
        /// Canceled (possibly after partial fills); the order is done.
        Canceled = b'4',
        /// Refused; no order exists. Also what a CancelReject reports for an unknown order.
        Rejected = b'8',
    }
);

fix_char_enum!(
    /// CxlRejResponseTo (tag 434): which request a CancelReject answers.
    CxlRejResponseTo {
        /// An OrderCancelRequest.
        Cancel = b'1',
        /// An OrderCancelReplaceRequest.
        Replace = b'2',
    }
);

fix_int_enum!(
    /// OrdRejReason (tag 103) values of FIX 4.4 that the engine uses or the gateway may map.
    OrdRejReason {
        /// Broker or exchange option.
        BrokerOption = 0,
        /// The symbol is not traded here.
        UnknownSymbol = 1,
        /// The venue is closed.
        ExchangeClosed = 2,
        /// The order exceeds a limit (here: the maximum order quantity).
        OrderExceedsLimit = 3,
        /// Too late to enter.
        TooLateToEnter = 4,
        /// Unknown order.
        UnknownOrder = 5,
        /// The ClOrdID was already used by this session today.
        DuplicateOrder = 6,
        /// The order is stale.
        StaleOrder = 8,
        /// An order attribute combination is not supported (market with price, limit without).
        UnsupportedOrderCharacteristic = 11,
        /// The quantity is zero or not a multiple of the lot size.
        IncorrectQuantity = 13,
        /// Anything else; Text says what (off-tick price, capacity reached).
        Other = 99,
    }
);

fix_int_enum!(
    /// CxlRejReason (tag 102) values of FIX 4.4.
    CxlRejReason {
        /// The order is already filled or canceled.
        TooLateToCancel = 0,
        /// No open order of this session matches OrigClOrdID, Symbol and Side.
        UnknownOrder = 1,
        /// Broker or exchange option.
        BrokerOption = 2,
        /// The order is pending another request (never, here: requests apply synchronously).
        AlreadyPending = 3,
        /// A mass cancel could not be processed.
        UnableToProcessMassCancel = 4,
        /// OrigOrdModTime did not match.
        OrigOrdModTimeMismatch = 5,
        /// The request's ClOrdID was already used by this session today.
        DuplicateClOrdId = 6,
        /// Anything else; Text says what.
        Other = 99,
    }
);

/// The fixed texts of rejects (FIX Text, tag 58). An enum rather than formatted strings so that a
/// reject allocates nothing and every engine version words the same reject the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RejectText {
    /// The symbol is not configured.
    UnknownSymbol,
    /// The ClOrdID was used before by this session.
    DuplicateClOrdId,
    /// The per-day ClOrdID table is full.
    ClOrdIdCapacity,
    /// The order table is full.
    OrderCapacity,
    /// The book side has no room for another price level.
    LevelCapacity,
    /// Market orders take any price; a price on one is a client mistake.
    MarketOrderWithPrice,
    /// A limit order needs its limit.
    LimitOrderWithoutPrice,
    /// The price is not a multiple of the instrument's tick size.
    PriceOffTick,
    /// The quantity is zero.
    QtyZero,
    /// The quantity is not a multiple of the instrument's lot size.
    QtyOffLot,
    /// The quantity is above the venue maximum.
    QtyTooLarge,
    /// No order of this session carries the OrigClOrdID.
    UnknownOrder,
    /// The OrigClOrdID's order has another symbol or side than the request.
    OrderMismatch,
    /// OrigClOrdID names an earlier ClOrdID of an order that has been replaced since.
    NotLatestClOrdId,
    /// The order is already filled or canceled.
    OrderDone,
    /// A replace may not turn a limit order into a market order.
    OrdTypeChange,
    /// A replace must leave something open.
    QtyNotAboveFilled,
}

impl RejectText {
    /// The text sent in tag 58.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectText::UnknownSymbol => "unknown symbol",
            RejectText::DuplicateClOrdId => "duplicate ClOrdID",
            RejectText::ClOrdIdCapacity => "ClOrdID capacity for the session day reached",
            RejectText::OrderCapacity => "order capacity reached",
            RejectText::LevelCapacity => "price level capacity reached",
            RejectText::MarketOrderWithPrice => "market order must not carry a price",
            RejectText::LimitOrderWithoutPrice => "limit order requires a price",
            RejectText::PriceOffTick => "price is not a multiple of the tick size",
            RejectText::QtyZero => "quantity must be positive",
            RejectText::QtyOffLot => "quantity is not a multiple of the lot size",
            RejectText::QtyTooLarge => "quantity exceeds the maximum order quantity",
            RejectText::UnknownOrder => "unknown order",
            RejectText::OrderMismatch => "symbol or side does not match the order",
            RejectText::NotLatestClOrdId => "OrigClOrdID is not the order's latest ClOrdID",
            RejectText::OrderDone => "order is already filled or canceled",
            RejectText::OrdTypeChange => "order type cannot be changed",
            RejectText::QtyNotAboveFilled => "new quantity must exceed the filled quantity",
        }
    }
}

impl fmt::Display for RejectText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price_text(p: Price) -> String {
        let mut out = Vec::new();
        p.write_decimal(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn price_parses_fix_decimals_exactly() {
        let cases: &[(&[u8], i64)] = &[
            (b"101.25", 10_125_000_000),
            (b"-0.5", -50_000_000),
            (b"100", 10_000_000_000),
            (b"100.", 10_000_000_000),
            (b".5", 50_000_000),
            (b"0.00000001", 1),
            (b"1.000000000", Price::SCALE),
            (b"-0", 0),
            (b"92233720368.54775807", i64::MAX),
            (b"-92233720368.54775808", i64::MIN),
        ];
        for &(text, raw) in cases {
            assert_eq!(Price::parse_decimal(text), Some(Price(raw)), "{:?}", text);
        }
    }

    #[test]
    fn price_refuses_what_it_cannot_represent() {
        for bad in [
            &b""[..],
            b"-",
            b".",
            b"1e5",
            b"+1",
            b"1.2.3",
            b"0.000000001",
            b"92233720368.54775808",
            b"-92233720368.54775809",
            b"99999999999999999999999",
            b" 1",
            b"--1",
        ] {
            assert_eq!(
                Price::parse_decimal(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn price_writes_trimmed_decimals() {
        assert_eq!(price_text(Price(10_125_000_000)), "101.25");
        assert_eq!(price_text(Price(10_000_000_000)), "100");
        assert_eq!(price_text(Price(-50_000_000)), "-0.5");
        assert_eq!(price_text(Price(0)), "0");
        assert_eq!(price_text(Price(1)), "0.00000001");
        assert_eq!(price_text(Price(i64::MIN)), "-92233720368.54775808");
        assert_eq!(price_text(Price(i64::MAX)), "92233720368.54775807");
        assert_eq!(Price(123_400_000).to_string(), "1.234");
    }

    #[test]
    fn qty_accepts_whole_numbers_only() {
        assert_eq!(Qty::parse_decimal(b"100"), Some(Qty(100)));
        assert_eq!(Qty::parse_decimal(b"100.0"), Some(Qty(100)));
        assert_eq!(Qty::parse_decimal(b"100."), Some(Qty(100)));
        assert_eq!(
            Qty::parse_decimal(b"18446744073709551615"),
            Some(Qty(u64::MAX))
        );
        for bad in [
            &b"100.5"[..],
            b"-1",
            b"",
            b".",
            b"18446744073709551616",
            b"1e3",
        ] {
            assert_eq!(
                Qty::parse_decimal(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut out = Vec::new();
        Qty(1500).write_decimal(&mut out);
        assert_eq!(out, b"1500");
    }

    #[test]
    fn inline_ids_check_length_and_charset() {
        assert!(ClOrdId::try_from_bytes(b"").is_none());
        assert!(ClOrdId::try_from_bytes(&[b'a'; 33]).is_none());
        assert!(ClOrdId::try_from_bytes(b"a\x01b").is_none());
        assert!(ClOrdId::try_from_bytes("é".as_bytes()).is_none());
        let id = ClOrdId::try_from_bytes(&[b'z'; 32]).unwrap();
        assert_eq!(id.as_bytes().len(), 32);
        assert!(Symbol::try_from_bytes(&[b'A'; 17]).is_none());
        let sym = Symbol::try_from_bytes(b"EUR/USD").unwrap();
        assert_eq!(sym.as_str(), "EUR/USD");
        assert!(Symbol::try_from_bytes(b"AB") < Symbol::try_from_bytes(b"ABC"));
    }

    #[test]
    fn fix_enums_map_both_ways() {
        for side in [Side::Buy, Side::Sell] {
            assert_eq!(Side::from_fix(side.fix_value()), Some(side));
        }
        assert_eq!(ExecType::Trade.fix_value(), b'F');
        assert_eq!(TimeInForce::from_fix(b'3'), Some(TimeInForce::Ioc));
        assert_eq!(TimeInForce::from_fix(b'1'), None);
        assert_eq!(
            OrdRejReason::from_fix(13),
            Some(OrdRejReason::IncorrectQuantity)
        );
        assert_eq!(CxlRejReason::TooLateToCancel.fix_value(), 0);
        assert_eq!(CxlRejResponseTo::Replace.fix_value(), b'2');
    }

    #[test]
    fn price_reads_toml_floats_and_strings_exactly() {
        #[derive(Deserialize)]
        struct T {
            a: Price,
            b: Price,
            c: Price,
        }
        let t: T = toml::from_str("a = 0.01\nb = \"0.01\"\nc = 5").unwrap();
        assert_eq!(t.a, Price(1_000_000));
        assert_eq!(t.b, Price(1_000_000));
        assert_eq!(t.c, Price(5 * Price::SCALE));
        assert!(toml::from_str::<T>("a = 1e-9\nb = 1\nc = 1").is_err());
    }

    #[test]
    fn binary_encoding_is_compact_and_validated() {
        let config = bincode::config::standard();
        let id = ClOrdId::try_from_bytes(b"abc").unwrap();
        let mut bytes = Vec::new();
        bincode::serde::encode_into_std_write(id, &mut bytes, config).unwrap();
        assert_eq!(bytes, b"\x03abc");
        let (back, _): (ClOrdId, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, id);
        let bad: Result<(ClOrdId, usize), _> =
            bincode::serde::decode_from_slice(b"\x02a\x01", config);
        assert!(bad.is_err());
        let mut bytes = Vec::new();
        bincode::serde::encode_into_std_write(Price(-5), &mut bytes, config).unwrap();
        let (back, _): (Price, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, Price(-5));
    }
}
