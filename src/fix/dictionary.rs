//! The venue dictionary: which messages and fields the venue takes, loaded from the QuickFIX-format
//! `fix-specs/FIX44.xml`, and the session-level validation of every inbound message against it.
//!
//! The XML file is the single source of truth for what a counterparty may send; the
//! rules-of-engagement page is checked against it by a test, so the two cannot drift apart.
//! Loading does all the work that can be done once (lookup tables, per-message tag sets), so
//! that [`Dictionary::validate`], which runs on every inbound message, only reads slices and
//! never allocates.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::codec::{self, FieldProblem, Message};
use super::tags::{self, SessionRejectReason};
use super::time::Timestamp;
use crate::constants;

/// The venue's dictionary, compiled into the binary so a gateway can never start with a
/// dictionary other than the one its rules of engagement describe.
const VENUE_XML: &str = include_str!("../../fix-specs/FIX44.xml");

/// Tags below this number are found through a direct table; standard FIX 4.4 tags used by the
/// venue all fall below it, so the common case is one array read. Higher (user-defined) tags fall
/// back to a binary search.
const SMALL_TAG_LIMIT: u32 = 1024;

/// Deepest nesting of `<component>` references followed while flattening; deeper means a cycle
/// or a file no venue would write, and is refused rather than recursing without bound.
const COMPONENT_DEPTH_MAX: usize = 16;

/// Why an XML dictionary could not be loaded. Each variant names the element or attribute at
/// fault and, where there is one, the line, so whoever edits the file can go straight to it.
#[derive(Debug, thiserror::Error)]
pub enum DictionaryError {
    /// The text is not well-formed XML.
    #[error("dictionary is not well-formed XML: {0}")]
    Xml(#[from] roxmltree::Error),
    /// The root element is not `<fix>`.
    #[error("line {line}: root element is <{found}>, expected <fix>")]
    UnexpectedRoot {
        /// The root element's name.
        found: String,
        /// Line of the root element.
        line: u32,
    },
    /// A section every dictionary must have is absent.
    #[error("<{parent}> has no <{element}> element")]
    MissingElement {
        /// The element that should contain it.
        parent: &'static str,
        /// The missing element.
        element: &'static str,
    },
    /// An element lacks an attribute it needs.
    #[error("line {line}: <{element}> has no {attribute} attribute")]
    MissingAttribute {
        /// The element, with its name attribute when it has one.
        element: String,
        /// The missing attribute.
        attribute: &'static str,
        /// Line of the element.
        line: u32,
    },
    /// An attribute's value is not one the format allows.
    #[error("line {line}: <{element}> has {attribute}=\"{value}\": {reason}")]
    InvalidAttribute {
        /// The element, with its name attribute when it has one.
        element: String,
        /// The attribute at fault.
        attribute: &'static str,
        /// Its value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
        /// Line of the element.
        line: u32,
    },
    /// An element that has no meaning where it stands.
    #[error("line {line}: unexpected <{found}> inside {parent}")]
    UnexpectedElement {
        /// Where it was found.
        parent: String,
        /// The element's name.
        found: String,
        /// Line of the element.
        line: u32,
    },
    /// A `<group>` where the validator does not check groups (the standard header or
    /// trailer), so accepting one would let unchecked fields through.
    #[error(
        "line {line}: repeating group {group} in {context}: groups are checked only in message bodies"
    )]
    RepeatingGroup {
        /// The message, component, header or trailer holding the group.
        context: String,
        /// The group's name attribute.
        group: String,
        /// Line of the group.
        line: u32,
    },
    /// A `<group>` the validator cannot check within its fixed bounds: its name is not a
    /// NumInGroup field, it has no members, too many members
    /// ([`constants::GROUP_MEMBERS_MAX`]) or it nests too deep
    /// ([`constants::GROUP_DEPTH_MAX`]).
    #[error("line {line}: repeating group {group} in {context}: {reason}")]
    InvalidGroup {
        /// The message holding the group.
        context: String,
        /// The group's name attribute.
        group: String,
        /// What is wrong with it.
        reason: &'static str,
        /// Line of the group.
        line: u32,
    },
    /// More fields than the validator's fixed seen-set holds.
    #[error("the dictionary defines {count} fields, more than the {max} the validator tracks")]
    TooManyFields {
        /// Fields defined.
        count: usize,
        /// [`constants::DICTIONARY_FIELDS_MAX`].
        max: usize,
    },
    /// A field type that is not a FIX 4.4 type.
    #[error("line {line}: field {field} has unknown type {type_name}")]
    UnknownFieldType {
        /// The field's name.
        field: String,
        /// The type as written.
        type_name: String,
        /// Line of the field.
        line: u32,
    },
    /// A DATA or XMLDATA field: its value may contain SOH, which the codec does not frame.
    #[error(
        "line {line}: field {field} has type {type_name}, whose values may contain SOH; the venue takes no data fields"
    )]
    DataField {
        /// The field's name.
        field: String,
        /// The type as written.
        type_name: String,
        /// Line of the field.
        line: u32,
    },
    /// Two `<fields>` entries share a number or a name.
    #[error("line {line}: field {what} {value} is defined twice")]
    DuplicateField {
        /// `number` or `name`.
        what: &'static str,
        /// The repeated number or name.
        value: String,
        /// Line of the second definition.
        line: u32,
    },
    /// An enumerated value is listed twice for one field.
    #[error("line {line}: field {field} lists value {value} twice")]
    DuplicateValue {
        /// The field's name.
        field: String,
        /// The repeated value.
        value: String,
        /// Line of the second occurrence.
        line: u32,
    },
    /// An enumerated value that the field's own type would refuse, so no valid message could
    /// ever carry it.
    #[error(
        "line {line}: field {field} of type {type_name} lists value \"{value}\", which is not a valid {type_name}"
    )]
    ValueFormat {
        /// The field's name.
        field: String,
        /// The field's type.
        type_name: &'static str,
        /// The value.
        value: String,
        /// Line of the value.
        line: u32,
    },
    /// A message, component, header or trailer names a field that `<fields>` does not define.
    #[error("line {line}: {context} uses field {name}, which <fields> does not define")]
    UndefinedField {
        /// The field name used.
        name: String,
        /// Where it was used.
        context: String,
        /// Line of the reference.
        line: u32,
    },
    /// A reference to a component that `<components>` does not define.
    #[error("line {line}: {context} uses component {name}, which <components> does not define")]
    UndefinedComponent {
        /// The component name used.
        name: String,
        /// Where it was used.
        context: String,
        /// Line of the reference.
        line: u32,
    },
    /// Components that include each other, or nest deeper than any real dictionary does.
    #[error("line {line}: component {name} includes itself or nests too deeply")]
    ComponentCycle {
        /// The component where the cycle was detected.
        name: String,
        /// Line of the reference.
        line: u32,
    },
    /// The same field twice in one message (directly or through components), or a message
    /// field that is also a header or trailer field: either would make a tag's place ambiguous.
    #[error("line {line}: field {field} appears twice in {context}")]
    DuplicateMember {
        /// The field's name.
        field: String,
        /// The message, header or trailer.
        context: String,
        /// Line of the second occurrence.
        line: u32,
    },
    /// Two messages share a MsgType or a name.
    #[error("line {line}: message {what} {value} is defined twice")]
    DuplicateMessage {
        /// `msgtype` or `name`.
        what: &'static str,
        /// The repeated value.
        value: String,
        /// Line of the second definition.
        line: u32,
    },
}

/// A FIX 4.4 field type as QuickFIX dictionaries spell it. The type decides which values pass
/// the format check (SessionRejectReason 6), so each one maps to exactly one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// INT: optional '-' then digits.
    Int,
    /// LENGTH: a byte count.
    Length,
    /// SEQNUM: a message sequence number.
    SeqNum,
    /// NUMINGROUP: a repeating group count.
    NumInGroup,
    /// TAGNUM: a tag number.
    TagNum,
    /// DAYOFMONTH: 1 to 31.
    DayOfMonth,
    /// FLOAT: a decimal.
    Float,
    /// QTY: a quantity, as a decimal.
    Qty,
    /// PRICE: a price, as a decimal.
    Price,
    /// PRICEOFFSET: a price difference, as a decimal.
    PriceOffset,
    /// AMT: an amount, as a decimal.
    Amt,
    /// PERCENTAGE: a decimal fraction.
    Percentage,
    /// CHAR: one character.
    Char,
    /// BOOLEAN: `Y` or `N`.
    Boolean,
    /// STRING: free text without control characters.
    String,
    /// MULTIPLEVALUESTRING: space-separated values (FIX 4.4's only multi-value type).
    MultipleValueString,
    /// MULTIPLESTRINGVALUE: space-separated strings (later FIX versions' name).
    MultipleStringValue,
    /// MULTIPLECHARVALUE: space-separated single characters.
    MultipleCharValue,
    /// CURRENCY: an ISO 4217 code, checked as a string.
    Currency,
    /// EXCHANGE: an ISO 10383 MIC, checked as a string.
    Exchange,
    /// COUNTRY: an ISO 3166 code, checked as a string.
    Country,
    /// LANGUAGE: an ISO 639 code, checked as a string.
    Language,
    /// UTCTIMESTAMP: `YYYYMMDD-HH:MM:SS[.fff]`.
    UtcTimestamp,
    /// UTCTIMEONLY: `HH:MM:SS[.fff]`.
    UtcTimeOnly,
    /// UTCDATEONLY: `YYYYMMDD`.
    UtcDateOnly,
    /// LOCALMKTDATE: `YYYYMMDD` in the market's time zone.
    LocalMktDate,
    /// MONTHYEAR: `YYYYMM`, `YYYYMMDD` or `YYYYMMwN`.
    MonthYear,
    /// TZTIMEONLY: a time with zone offset, checked as a string.
    TzTimeOnly,
    /// TZTIMESTAMP: a timestamp with zone offset, checked as a string.
    TzTimestamp,
}

/// How a type's values are checked; several FIX types share one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// Optional '-' then digits, fitting an i64.
    SignedInt,
    /// Digits only, fitting a u64 (what the session layer's `parse_uint` reads).
    UnsignedInt,
    /// Digits 1 to 31.
    DayOfMonth,
    /// Optional '-', digits with at most one '.', no exponent.
    Decimal,
    /// Exactly one printable byte.
    Char,
    /// `Y` or `N`.
    Boolean,
    /// Non-empty, printable.
    Text,
    /// Space-separated non-empty printable values.
    MultipleString,
    /// Space-separated single printable bytes.
    MultipleChar,
    /// [`Timestamp::parse_fix`].
    UtcTimestamp,
    /// `HH:MM:SS` with an optional fraction.
    UtcTimeOnly,
    /// A calendar date `YYYYMMDD`.
    Date,
    /// `YYYYMM`, `YYYYMMDD` or `YYYYMMwN`.
    MonthYear,
}

impl FieldType {
    /// Every type, with its QuickFIX spelling; one table so parsing and naming cannot disagree.
    const ALL: [(FieldType, &'static str); 30] = [
        (FieldType::Int, "INT"),
        (FieldType::Length, "LENGTH"),
        (FieldType::SeqNum, "SEQNUM"),
        (FieldType::NumInGroup, "NUMINGROUP"),
        (FieldType::TagNum, "TAGNUM"),
        (FieldType::DayOfMonth, "DAYOFMONTH"),
        (FieldType::Float, "FLOAT"),
        (FieldType::Qty, "QTY"),
        (FieldType::Price, "PRICE"),
        (FieldType::PriceOffset, "PRICEOFFSET"),
        (FieldType::Amt, "AMT"),
        (FieldType::Percentage, "PERCENTAGE"),
        (FieldType::Char, "CHAR"),
        (FieldType::Boolean, "BOOLEAN"),
        (FieldType::String, "STRING"),
        (FieldType::MultipleValueString, "MULTIPLEVALUESTRING"),
        (FieldType::MultipleStringValue, "MULTIPLESTRINGVALUE"),
        (FieldType::MultipleCharValue, "MULTIPLECHARVALUE"),
        (FieldType::Currency, "CURRENCY"),
        (FieldType::Exchange, "EXCHANGE"),
        (FieldType::Country, "COUNTRY"),
        (FieldType::Language, "LANGUAGE"),
        (FieldType::UtcTimestamp, "UTCTIMESTAMP"),
        (FieldType::UtcTimeOnly, "UTCTIMEONLY"),
        (FieldType::UtcDateOnly, "UTCDATEONLY"),
        (FieldType::LocalMktDate, "LOCALMKTDATE"),
        (FieldType::MonthYear, "MONTHYEAR"),
        (FieldType::TzTimeOnly, "TZTIMEONLY"),
        (FieldType::TzTimestamp, "TZTIMESTAMP"),
        // Kept last: the previous FIX name of UTCDATEONLY, still found in FIX 4.4 files.
        (FieldType::UtcDateOnly, "UTCDATE"),
    ];

    /// The type named `name` in a QuickFIX file (upper case), if it is one the validator knows.
    pub fn from_name(name: &str) -> Option<FieldType> {
        FieldType::ALL
            .iter()
            .find(|(_, spelled)| *spelled == name)
            .map(|(field_type, _)| *field_type)
    }

    /// The QuickFIX spelling, so documents generated from or checked against the dictionary use
    /// the same words as the XML file.
    pub fn name(self) -> &'static str {
        FieldType::ALL
            .iter()
            .find(|(field_type, _)| *field_type == self)
            .map_or("STRING", |(_, spelled)| spelled)
    }

    /// Whether a field of this type takes several space-separated values, each of which must be
    /// in the field's value list.
    pub fn is_multiple_value(self) -> bool {
        matches!(
            self,
            FieldType::MultipleValueString
                | FieldType::MultipleStringValue
                | FieldType::MultipleCharValue
        )
    }

    fn format(self) -> Format {
        match self {
            FieldType::Int => Format::SignedInt,
            FieldType::Length | FieldType::SeqNum | FieldType::NumInGroup | FieldType::TagNum => {
                Format::UnsignedInt
            }
            FieldType::DayOfMonth => Format::DayOfMonth,
            FieldType::Float
            | FieldType::Qty
            | FieldType::Price
            | FieldType::PriceOffset
            | FieldType::Amt
            | FieldType::Percentage => Format::Decimal,
            FieldType::Char => Format::Char,
            FieldType::Boolean => Format::Boolean,
            FieldType::MultipleValueString | FieldType::MultipleStringValue => {
                Format::MultipleString
            }
            FieldType::MultipleCharValue => Format::MultipleChar,
            FieldType::UtcTimestamp => Format::UtcTimestamp,
            FieldType::UtcTimeOnly => Format::UtcTimeOnly,
            FieldType::UtcDateOnly | FieldType::LocalMktDate => Format::Date,
            FieldType::MonthYear => Format::MonthYear,
            FieldType::String
            | FieldType::Currency
            | FieldType::Exchange
            | FieldType::Country
            | FieldType::Language
            | FieldType::TzTimeOnly
            | FieldType::TzTimestamp => Format::Text,
        }
    }

    /// Whether `value` is well formed for this type (SessionRejectReason 6 when not). Anything
    /// this accepts, the session layer's typed readers (`Message::uint`, `timestamp_opt`...)
    /// accept too, so a validated message never fails a later read.
    pub fn accepts(self, value: &[u8]) -> bool {
        match self.format() {
            Format::SignedInt => is_signed_int(value),
            Format::UnsignedInt => codec::parse_uint(value).is_some(),
            Format::DayOfMonth => matches!(codec::parse_uint(value), Some(1..=31)),
            Format::Decimal => is_decimal(value),
            Format::Char => value.len() == 1 && is_printable(value[0]),
            Format::Boolean => value == b"Y" || value == b"N",
            Format::Text => !value.is_empty() && value.iter().all(|&b| is_printable(b)),
            Format::MultipleString => {
                !value.is_empty()
                    && value
                        .split(|&b| b == b' ')
                        .all(|item| !item.is_empty() && item.iter().all(|&b| is_printable(b)))
            }
            Format::MultipleChar => {
                !value.is_empty()
                    && value
                        .split(|&b| b == b' ')
                        .all(|item| item.len() == 1 && is_printable(item[0]))
            }
            Format::UtcTimestamp => is_utc_timestamp(value),
            Format::UtcTimeOnly => is_time_only(value),
            Format::Date => is_date(value),
            Format::MonthYear => is_month_year(value),
        }
    }
}

/// One enumerated value of a field, as the XML lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumValue {
    /// The value as it appears on the wire.
    value: String,
    /// The XML `description` attribute (e.g. `BUY`), for documents and logs; empty if absent.
    description: String,
}

impl EnumValue {
    /// The value as it appears on the wire.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The name the dictionary gives the value, for documents and logs.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// One field of the dictionary's `<fields>` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDef {
    /// The tag number; unique in the dictionary.
    number: u32,
    /// The FIX name; unique in the dictionary.
    name: String,
    /// Decides the format check.
    field_type: FieldType,
    /// The values the venue takes, in file order; empty means any well-formed value. Each value
    /// passes `field_type`'s format check (checked at load).
    values: Vec<EnumValue>,
}

impl FieldDef {
    /// The tag number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The FIX name, for Reject texts and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The FIX type, which decides what a well-formed value is.
    pub fn field_type(&self) -> FieldType {
        self.field_type
    }

    /// The values the venue takes, in dictionary order; empty when any well-formed value goes.
    pub fn values(&self) -> &[EnumValue] {
        &self.values
    }

    /// Whether `value` is allowed by the value list (each space-separated item, for the
    /// multiple-value types). Always true for a field without a list.
    pub fn accepts_value(&self, value: &[u8]) -> bool {
        if self.values.is_empty() {
            return true;
        }
        let listed = |item: &[u8]| self.values.iter().any(|v| v.value.as_bytes() == item);
        if self.field_type.is_multiple_value() {
            value.split(|&b| b == b' ').all(listed)
        } else {
            listed(value)
        }
    }
}

/// A field's membership in a message, header or trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldRef {
    /// The tag number; always defined in the dictionary's fields.
    tag: u32,
    /// Whether a message without it is rejected with reason 1.
    required: bool,
}

impl FieldRef {
    /// The tag number.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Whether a message without this field is rejected (SessionRejectReason 1).
    pub fn is_required(&self) -> bool {
        self.required
    }
}

/// Whether a message belongs to the session layer or to the business (the XML's `msgcat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageCategory {
    /// `admin`: answered by the session layer, gap-filled rather than resent.
    Admin,
    /// `app`: business messages, sequenced and handed to the engines.
    App,
}

/// Which dictionary fields are in a set, one bit per field index. Sized at load, so membership
/// tests on the validation path are a shift and a mask.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct FieldSet {
    /// Bit `i % 64` of word `i / 64` is set when the field at index `i` is in the set.
    words: Box<[u64]>,
}

impl FieldSet {
    fn new(field_count: usize, indexes: impl IntoIterator<Item = usize>) -> FieldSet {
        let mut words = vec![0u64; field_count.div_ceil(64)].into_boxed_slice();
        for index in indexes {
            words[index / 64] |= 1 << (index % 64);
        }
        FieldSet { words }
    }

    fn contains(&self, index: usize) -> bool {
        self.words
            .get(index / 64)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

/// Where a dictionary field stands in one message type: at the top level of the body, or as
/// the member at `position` of one of its repeating groups. Built at load for every field of the
/// dictionary, so the validator finds a field's place with one array read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Place {
    /// 0: top level (or not in the message: see `MessageDef::allowed`); `g + 1`: member of
    /// the message's group `g`.
    group: u8,
    /// The member's position in its group (0 is the delimiter); 0 at the top level.
    position: u8,
    /// `g + 1` when this field is the NumInGroup count that opens group `g`; 0 otherwise.
    opens: u8,
}

/// One repeating group of a message type, as the XML's `<group>` defines it: a NumInGroup
/// field, then that many instances of the members, each starting with the first member (the
/// delimiter) and keeping the dictionary's member order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDef {
    /// The NumInGroup field's name (the `<group>` name).
    name: String,
    /// The NumInGroup tag that precedes the instances.
    count_tag: u32,
    /// Whether a message of this type without the group is rejected (reason 1).
    required: bool,
    /// Members in order, components flattened; the first is the delimiter. A member that is
    /// itself a NumInGroup field opens a nested group. At most
    /// [`constants::GROUP_MEMBERS_MAX`] (checked at load).
    members: Vec<FieldRef>,
    /// Bit `p` set when the member at position `p` is required in every instance.
    required_mask: u64,
    /// The enclosing group's index in the message's groups; `None` at the body's top level.
    parent: Option<usize>,
}

impl GroupDef {
    /// The NumInGroup field's name, e.g. `NoPartyIDs`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The NumInGroup tag that counts the instances.
    pub fn count_tag(&self) -> u32 {
        self.count_tag
    }

    /// Whether the message requires the group.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// The tag every instance must start with.
    pub fn delimiter(&self) -> u32 {
        self.members[0].tag
    }

    /// Members in the order every instance must keep; the first is the delimiter.
    pub fn members(&self) -> &[FieldRef] {
        &self.members
    }

    /// The enclosing group (an index into [`MessageDef::groups`]), `None` at the top level.
    pub fn parent(&self) -> Option<usize> {
        self.parent
    }
}

/// One message of the dictionary's `<messages>` section, with its lookup sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageDef {
    /// The FIX name (e.g. `NewOrderSingle`).
    name: String,
    /// The MsgType (35) value; unique in the dictionary.
    msg_type: String,
    /// Session or business.
    category: MessageCategory,
    /// Top-level body fields in dictionary order, components flattened; a group appears as its
    /// NumInGroup field (required when the group is).
    fields: Vec<FieldRef>,
    /// Repeating groups, outer before inner, in dictionary order.
    groups: Vec<GroupDef>,
    /// Every body field, group members included, as a set of field indexes.
    allowed: FieldSet,
    /// Per dictionary field index: where that field stands in this message.
    places: Box<[Place]>,
    /// Field indexes of the required top-level body fields, for the missing-field check.
    required: Box<[usize]>,
}

impl MessageDef {
    /// The FIX name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MsgType (35) value.
    pub fn msg_type(&self) -> &str {
        &self.msg_type
    }

    /// Session or business.
    pub fn category(&self) -> MessageCategory {
        self.category
    }

    /// Top-level body fields in dictionary order (header, trailer and group members excluded),
    /// components flattened; each group is represented by its NumInGroup field.
    pub fn fields(&self) -> &[FieldRef] {
        &self.fields
    }

    /// The message's repeating groups, outer before inner.
    pub fn groups(&self) -> &[GroupDef] {
        &self.groups
    }
}

/// The venue's FIX dictionary, with lookup tables built once at load so that validating an
/// inbound message allocates nothing.
#[derive(Clone, Debug)]
pub struct Dictionary {
    /// `FIX.4.4`, from the root element's type, major and minor attributes.
    begin_string: String,
    /// Every field, sorted by tag number (so a binary search finds tags above the table).
    fields: Vec<FieldDef>,
    /// For tags below [`SMALL_TAG_LIMIT`]: index into `fields` plus one, 0 for undefined.
    small_tags: Box<[u32]>,
    /// Header fields in dictionary order.
    header: Vec<FieldRef>,
    /// The header fields as a set of field indexes.
    header_set: FieldSet,
    /// Field indexes of the required header fields.
    header_required: Box<[usize]>,
    /// Trailer fields in dictionary order.
    trailer: Vec<FieldRef>,
    /// The trailer fields as a set of field indexes.
    trailer_set: FieldSet,
    /// Field indexes of the required trailer fields.
    trailer_required: Box<[usize]>,
    /// Messages in dictionary order. No message field is also a header or trailer field
    /// (checked at load), so every tag has one place.
    messages: Vec<MessageDef>,
    /// Indexes into `messages`, sorted by MsgType bytes, for binary search.
    messages_by_type: Box<[usize]>,
}

/// Which kind of problem a field has, in the order the first problem is chosen: a structural
/// problem anywhere in the message outranks a value problem, because it says more about what
/// went wrong on the counterparty's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Problem {
    /// Reason 13: a tag repeated outside a repeating group, or within one instance.
    Repeated,
    /// Reason 0: the tag is not in the dictionary.
    Unknown,
    /// Reason 2: the tag is defined but not in this message, header or trailer.
    NotInMessage,
    /// Reason 14: a header field after a body field, or a field after the trailer started.
    OutOfOrder,
    /// Reason 15: a group member outside an instance of its group, before the delimiter, or
    /// out of the dictionary's member order.
    GroupOrder,
    /// Reason 16: a group's NumInGroup differs from the instances that follow it.
    GroupCount,
    /// Reason 6: the value is malformed for the field's type.
    Format,
    /// Reason 5: the value is well formed but not in the field's list.
    Value,
    /// Reason 1: a required field (or required group member) is absent.
    Missing,
}

impl Problem {
    fn reason(self) -> SessionRejectReason {
        match self {
            Problem::Repeated => SessionRejectReason::TagAppearsMoreThanOnce,
            Problem::Unknown => SessionRejectReason::InvalidTagNumber,
            Problem::NotInMessage => SessionRejectReason::TagNotDefinedForMessageType,
            Problem::OutOfOrder => SessionRejectReason::TagSpecifiedOutOfRequiredOrder,
            Problem::GroupOrder => SessionRejectReason::RepeatingGroupFieldsOutOfOrder,
            Problem::GroupCount => SessionRejectReason::IncorrectNumInGroupCount,
            Problem::Format => SessionRejectReason::IncorrectDataFormat,
            Problem::Value => SessionRejectReason::ValueIsIncorrect,
            Problem::Missing => SessionRejectReason::RequiredTagMissing,
        }
    }
}

/// Words of the validator's seen-set: one bit per dictionary field.
const SEEN_WORDS: usize = constants::DICTIONARY_FIELDS_MAX / 64;

/// The state of one validation pass, all of it fixed-size and on the stack, so that validating
/// never allocates and does a bounded amount of work per field (the "work" counter says how
/// much, so a test can prove the pass linear without a clock).
struct Walk<'d> {
    /// The message type's definition.
    definition: &'d MessageDef,
    /// Top-level fields seen (header, body outside groups, trailer), by field index.
    seen: [u64; SEEN_WORDS],
    /// Tags outside the dictionary seen so far, for the repeated-tag check; the first
    /// [`constants::UNKNOWN_TAGS_TRACKED_MAX`] only.
    unknown: [u32; constants::UNKNOWN_TAGS_TRACKED_MAX],
    /// How many of `unknown` are filled.
    unknown_len: usize,
    /// Groups open at this point of the message, innermost last.
    open: [OpenGroup; constants::GROUP_DEPTH_MAX],
    /// How many of `open` are in use.
    depth: usize,
    /// The highest-ranked problem so far and its tag.
    first: Option<(Problem, u32)>,
    /// Steps taken: one per field, per closed instance, per unknown tag compared and per
    /// required field checked.
    work: u64,
}

/// A repeating group whose instances are being read.
#[derive(Clone, Copy, Debug, Default)]
struct OpenGroup {
    /// Index into the message's groups.
    group: usize,
    /// The NumInGroup value; `None` when it was malformed (already a reason-6 problem, so
    /// the instances are not counted against it).
    declared: Option<u64>,
    /// Instances started so far (delimiters seen).
    instances: u64,
    /// Bit `p` set for each member position seen in the current instance.
    members_seen: u64,
    /// Position of the last member seen in the current instance.
    position_last: u8,
}

impl<'d> Walk<'d> {
    fn new(definition: &'d MessageDef) -> Walk<'d> {
        Walk {
            definition,
            seen: [0; SEEN_WORDS],
            unknown: [0; constants::UNKNOWN_TAGS_TRACKED_MAX],
            unknown_len: 0,
            open: [OpenGroup::default(); constants::GROUP_DEPTH_MAX],
            depth: 0,
            first: None,
            work: 0,
        }
    }

    fn note(&mut self, problem: Problem, tag: u32) {
        note(&mut self.first, problem, tag);
    }

    /// Marks a top-level field seen; false if it already was.
    fn see(&mut self, index: usize) -> bool {
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        let fresh = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        fresh
    }

    fn has_seen(&self, index: usize) -> bool {
        self.seen[index / 64] & (1u64 << (index % 64)) != 0
    }

    /// A tag outside the dictionary: reason 0, or 13 if it repeats one tracked earlier.
    fn unknown_tag(&mut self, tag: u32) {
        let tracked = &self.unknown[..self.unknown_len];
        self.work += tracked.len() as u64;
        if tracked.contains(&tag) {
            self.note(Problem::Repeated, tag);
        } else if self.unknown_len < self.unknown.len() {
            self.unknown[self.unknown_len] = tag;
            self.unknown_len += 1;
        }
        self.note(Problem::Unknown, tag);
    }

    /// Ends the current instance of the innermost open group: its required members must be
    /// there.
    fn close_instance(&mut self) {
        let open = self.open[self.depth - 1];
        if open.instances == 0 {
            return;
        }
        self.work += 1;
        let group = &self.definition.groups[open.group];
        let missing = group.required_mask & !open.members_seen;
        if missing != 0 {
            let tag = group.members[missing.trailing_zeros() as usize].tag;
            self.note(Problem::Missing, tag);
        }
    }

    /// Ends the innermost open group: its count must match the instances read.
    fn close_group(&mut self) {
        self.close_instance();
        let open = self.open[self.depth - 1];
        if open
            .declared
            .is_some_and(|declared| declared != open.instances)
        {
            let tag = self.definition.groups[open.group].count_tag;
            self.note(Problem::GroupCount, tag);
        }
        self.depth -= 1;
    }

    /// A field of this message's body or of one of its groups; returns nothing, notes problems.
    fn body_field(&mut self, index: usize, tag: u32, place: Place) {
        // Close the groups this field is not a member of.
        while self.depth > 0 && usize::from(place.group) != self.open[self.depth - 1].group + 1 {
            self.work += 1;
            self.close_group();
        }
        if self.depth == 0 {
            if place.group != 0 {
                // A member of a group that is not open here.
                self.note(Problem::GroupOrder, tag);
            } else if !self.see(index) {
                self.note(Problem::Repeated, tag);
            }
            return;
        }
        let open = &mut self.open[self.depth - 1];
        let bit = 1u64 << place.position;
        if place.position == 0 {
            self.close_instance();
            let open = &mut self.open[self.depth - 1];
            open.instances += 1;
            open.members_seen = bit;
            open.position_last = 0;
        } else if open.instances == 0 {
            // The first instance must start with the delimiter.
            open.members_seen |= bit;
            self.note(Problem::GroupOrder, tag);
        } else if open.members_seen & bit != 0 {
            self.note(Problem::Repeated, tag);
        } else if place.position < open.position_last {
            open.members_seen |= bit;
            self.note(Problem::GroupOrder, tag);
        } else {
            open.members_seen |= bit;
            open.position_last = place.position;
        }
    }

    /// A NumInGroup field with a well-formed value opens its group.
    fn open_group(&mut self, group: usize, declared: Option<u64>) {
        // Nesting is bounded at load, so the stack cannot overflow; if it ever did, the
        // group is left unchecked rather than indexing out of bounds on peer input.
        if self.depth < self.open.len() {
            self.open[self.depth] = OpenGroup {
                group,
                declared,
                ..OpenGroup::default()
            };
            self.depth += 1;
        }
    }
}

/// Where a field stands in the message, to check that the header comes first and the trailer
/// last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    /// Standard header fields; 8, 9 and 35 first, which the codec already enforces.
    Header,
    /// The message's own fields.
    Body,
    /// Standard trailer fields; CheckSum last, which the codec already enforces.
    Trailer,
}

impl Dictionary {
    /// Loads a QuickFIX-format dictionary. Every problem with the file is a typed error naming
    /// the element or attribute at fault, never a panic: the file may have been edited by hand.
    pub fn from_xml(xml: &str) -> Result<Dictionary, DictionaryError> {
        let document = roxmltree::Document::parse(xml)?;
        Loader {
            document: &document,
        }
        .load()
    }

    /// The venue's own dictionary, `fix-specs/FIX44.xml`, parsed on first use and shared.
    pub fn venue() -> &'static Dictionary {
        static VENUE: OnceLock<Dictionary> = OnceLock::new();
        VENUE.get_or_init(|| {
            // The file is compiled in and a unit test loads it, so failing here is a build
            // defect, not an input error.
            Dictionary::from_xml(VENUE_XML).expect("fix-specs/FIX44.xml is a valid dictionary")
        })
    }

    /// The BeginString every message must carry (`FIX.4.4`); a session compares the frame's
    /// BeginString with this before anything else.
    pub fn begin_string(&self) -> &str {
        &self.begin_string
    }

    /// Whether the venue knows this MsgType; an unknown one gets Reject reason 11.
    pub fn is_defined_msg_type(&self, msg_type: &[u8]) -> bool {
        self.message(msg_type).is_some()
    }

    /// Whether this MsgType is a session (admin) message: those are answered by the session
    /// layer and gap-filled on resend. False for unknown types.
    pub fn is_admin(&self, msg_type: &[u8]) -> bool {
        self.message(msg_type)
            .is_some_and(|message| message.category == MessageCategory::Admin)
    }

    /// The FIX name of a MsgType, for logs and Reject texts.
    pub fn message_name(&self, msg_type: &[u8]) -> Option<&str> {
        self.message(msg_type).map(|message| message.name.as_str())
    }

    /// The FIX name of a tag, for logs and Reject texts.
    pub fn field_name(&self, tag: u32) -> Option<&str> {
        self.field(tag).map(|field| field.name.as_str())
    }

    /// The definition of a MsgType.
    pub fn message(&self, msg_type: &[u8]) -> Option<&MessageDef> {
        self.messages_by_type
            .binary_search_by(|&index| self.messages[index].msg_type.as_bytes().cmp(msg_type))
            .ok()
            .map(|found| &self.messages[self.messages_by_type[found]])
    }

    /// The definition of a tag.
    pub fn field(&self, tag: u32) -> Option<&FieldDef> {
        self.field_index(tag).map(|index| &self.fields[index])
    }

    /// Every message in dictionary order, so documents can be checked against the dictionary.
    pub fn messages(&self) -> impl ExactSizeIterator<Item = &MessageDef> + '_ {
        self.messages.iter()
    }

    /// Every field in tag order, so documents can be checked against the dictionary.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = &FieldDef> + '_ {
        self.fields.iter()
    }

    /// The standard header's fields in dictionary order.
    pub fn header(&self) -> &[FieldRef] {
        &self.header
    }

    /// The standard trailer's fields in dictionary order.
    pub fn trailer(&self) -> &[FieldRef] {
        &self.trailer
    }

    /// Checks a parsed message against the dictionary and returns the session-level Reject
    /// (SessionRejectReason and RefTagID) for its first problem.
    ///
    /// The first problem is chosen by kind, then by position in the message:
    /// 1. the codec's own finding ([`Message::problem`]: empty value 4, unreadable tag 0, too
    ///    many fields 99);
    /// 2. a tag repeated outside a repeating group or within one instance: 13;
    /// 3. MsgType not in the dictionary: 11 (RefTagID 35);
    /// 4. a tag not in the dictionary: 0;
    /// 5. a tag not in this message, header or trailer: 2;
    /// 6. a header tag after a body tag: 14;
    /// 7. a group member outside its group, before its delimiter or out of member order: 15;
    /// 8. a NumInGroup that differs from the instances that follow: 16 (RefTagID the count);
    /// 9. a value malformed for its type: 6;
    /// 10. a value outside the field's list: 5;
    /// 11. a required header, body, trailer or group-instance field missing: 1.
    ///
    /// BeginString, CompIDs, sequence numbers and SendingTime accuracy are the session's to
    /// check; conditionally required fields (Price on a limit order) are business rules.
    ///
    /// Runs on every inbound message, so it walks the message's field index once, with a
    /// fixed-size seen-set and group stack on the stack: linear in the fields, no allocation.
    pub fn validate(&self, message: &Message) -> Result<(), FieldProblem> {
        self.validate_counting_work(message).0
    }

    /// [`Dictionary::validate`], also returning the steps it took (one per field, per group
    /// instance closed, per tracked unknown tag compared, per required field checked), so a
    /// test can show the work grows linearly with the message without timing anything.
    #[doc(hidden)]
    pub fn validate_counting_work(&self, message: &Message) -> (Result<(), FieldProblem>, u64) {
        if let Some(problem) = message.problem() {
            return (Err(problem), 0);
        }
        let Some(definition) = self.message(message.msg_type()) else {
            return self.repeats_in_unknown_type(message);
        };
        let mut walk = Walk::new(definition);
        let mut section = Section::Header;
        for (tag, value) in message.fields() {
            walk.work += 1;
            let Some(index) = self.field_index(tag) else {
                walk.unknown_tag(tag);
                continue;
            };
            let field_section = if self.header_set.contains(index) {
                Section::Header
            } else if definition.allowed.contains(index) {
                Section::Body
            } else if self.trailer_set.contains(index) {
                Section::Trailer
            } else {
                walk.note(Problem::NotInMessage, tag);
                continue;
            };
            if field_section == Section::Body {
                walk.body_field(index, tag, definition.places[index]);
            } else {
                while walk.depth > 0 {
                    walk.work += 1;
                    walk.close_group();
                }
                if !walk.see(index) {
                    walk.note(Problem::Repeated, tag);
                }
            }
            if field_section < section {
                walk.note(Problem::OutOfOrder, tag);
            } else {
                section = field_section;
            }
            let field = &self.fields[index];
            let well_formed = field.field_type.accepts(value);
            if !well_formed {
                walk.note(Problem::Format, tag);
            } else if !field.accepts_value(value) {
                walk.note(Problem::Value, tag);
            }
            let opens = definition.places[index].opens;
            if field_section == Section::Body && opens != 0 {
                // A malformed count still opens its group, so its members are read as members
                // and the answer is the count's reason 6, not a 15 on every member. A count
                // too large for u64 cannot match any number of instances.
                let declared = well_formed.then(|| codec::parse_uint(value).unwrap_or(u64::MAX));
                walk.open_group(usize::from(opens - 1), declared);
            }
        }
        while walk.depth > 0 {
            walk.work += 1;
            walk.close_group();
        }
        let required = self
            .header_required
            .iter()
            .chain(definition.required.iter())
            .chain(self.trailer_required.iter());
        for &index in required {
            walk.work += 1;
            if !walk.has_seen(index) {
                walk.note(Problem::Missing, self.fields[index].number);
                // Required fields are listed in dictionary order: the first missing one is
                // the answer among missing fields.
                break;
            }
        }
        let work = walk.work;
        match walk.first {
            Some((problem, tag)) => (
                Err(FieldProblem {
                    reason: problem.reason(),
                    tag,
                }),
                work,
            ),
            None => (Ok(()), work),
        }
    }

    /// A MsgType the venue does not know: reason 11, unless a tag repeats (13), which the
    /// counterparty needs to hear about first because it says the message is malformed.
    fn repeats_in_unknown_type(&self, message: &Message) -> (Result<(), FieldProblem>, u64) {
        let mut seen = [0u64; SEEN_WORDS];
        let mut unknown = [0u32; constants::UNKNOWN_TAGS_TRACKED_MAX];
        let mut unknown_len = 0;
        let mut work = 0u64;
        for (tag, _) in message.fields() {
            work += 1;
            let repeated = match self.field_index(tag) {
                Some(index) => {
                    let (word, bit) = (index / 64, 1u64 << (index % 64));
                    let repeated = seen[word] & bit != 0;
                    seen[word] |= bit;
                    repeated
                }
                None => {
                    work += unknown_len as u64;
                    let repeated = unknown[..unknown_len].contains(&tag);
                    if !repeated && unknown_len < unknown.len() {
                        unknown[unknown_len] = tag;
                        unknown_len += 1;
                    }
                    repeated
                }
            };
            if repeated {
                let problem = FieldProblem {
                    reason: SessionRejectReason::TagAppearsMoreThanOnce,
                    tag,
                };
                return (Err(problem), work);
            }
        }
        let problem = FieldProblem {
            reason: SessionRejectReason::InvalidMsgType,
            tag: tags::MSG_TYPE,
        };
        (Err(problem), work)
    }

    fn field_index(&self, tag: u32) -> Option<usize> {
        if tag < SMALL_TAG_LIMIT {
            let slot = *self.small_tags.get(tag as usize)?;
            (slot as usize).checked_sub(1)
        } else {
            self.fields
                .binary_search_by_key(&tag, |field| field.number)
                .ok()
        }
    }
}

/// Keeps the highest-ranked problem, and the earliest field among equals.
fn note(first: &mut Option<(Problem, u32)>, problem: Problem, tag: u32) {
    if first.is_none_or(|(kept, _)| problem < kept) {
        *first = Some((problem, tag));
    }
}

/// Builds a [`Dictionary`] from a parsed document.
struct Loader<'a, 'input> {
    /// The parsed XML, kept for line numbers in errors.
    document: &'a roxmltree::Document<'input>,
}

impl<'a, 'input> Loader<'a, 'input> {
    fn line(&self, node: roxmltree::Node<'_, '_>) -> u32 {
        self.document.text_pos_at(node.range().start).row
    }

    fn load(&self) -> Result<Dictionary, DictionaryError> {
        let root = self.document.root_element();
        if root.tag_name().name() != "fix" {
            return Err(DictionaryError::UnexpectedRoot {
                found: root.tag_name().name().to_owned(),
                line: self.line(root),
            });
        }
        let begin_string = self.begin_string(root)?;
        let fields = self.fields(child(root, "fix", "fields")?)?;
        if fields.len() > constants::DICTIONARY_FIELDS_MAX {
            return Err(DictionaryError::TooManyFields {
                count: fields.len(),
                max: constants::DICTIONARY_FIELDS_MAX,
            });
        }
        let by_name: HashMap<&str, usize> = fields
            .iter()
            .enumerate()
            .map(|(index, field)| (field.name.as_str(), index))
            .collect();
        let mut components = HashMap::new();
        if let Some(section) = root.children().find(|n| n.has_tag_name("components")) {
            for component in elements(section) {
                if component.tag_name().name() != "component" {
                    return Err(self.unexpected("<components>", component));
                }
                let name = self.attribute(component, "name", "component")?;
                components.insert(name, component);
            }
        }
        let resolver = Resolver {
            loader: self,
            by_name: &by_name,
            components: &components,
            fields: &fields,
        };
        let header = resolver.members(child(root, "fix", "header")?, "the header")?;
        let trailer = resolver.members(child(root, "fix", "trailer")?, "the trailer")?;
        for &(index, _) in &trailer {
            if header.iter().any(|&(other, _)| other == index) {
                return Err(DictionaryError::DuplicateMember {
                    field: fields[index].name.clone(),
                    context: "the header and the trailer".to_owned(),
                    line: self.line(root),
                });
            }
        }
        let header_set = FieldSet::new(fields.len(), header.iter().map(|&(i, _)| i));
        let trailer_set = FieldSet::new(fields.len(), trailer.iter().map(|&(i, _)| i));
        let messages = self.messages(
            child(root, "fix", "messages")?,
            &resolver,
            &header_set,
            &trailer_set,
        )?;
        let mut messages_by_type: Vec<usize> = (0..messages.len()).collect();
        messages_by_type.sort_by(|&a, &b| {
            messages[a]
                .msg_type
                .as_bytes()
                .cmp(messages[b].msg_type.as_bytes())
        });
        let mut small_tags = vec![0u32; SMALL_TAG_LIMIT as usize].into_boxed_slice();
        for (index, field) in fields.iter().enumerate() {
            if field.number < SMALL_TAG_LIMIT {
                // Field counts are bounded by the file's size, far below u32::MAX.
                small_tags[field.number as usize] = u32::try_from(index + 1).unwrap_or(0);
            }
        }
        let refs = |members: &[(usize, bool)]| -> Vec<FieldRef> {
            members
                .iter()
                .map(|&(index, required)| FieldRef {
                    tag: fields[index].number,
                    required,
                })
                .collect()
        };
        let header_refs = refs(&header);
        let trailer_refs = refs(&trailer);
        Ok(Dictionary {
            begin_string,
            header_required: required_indexes(&header),
            header: header_refs,
            header_set,
            trailer_required: required_indexes(&trailer),
            trailer: trailer_refs,
            trailer_set,
            messages,
            messages_by_type: messages_by_type.into_boxed_slice(),
            small_tags,
            fields,
        })
    }

    fn begin_string(&self, root: roxmltree::Node<'a, 'input>) -> Result<String, DictionaryError> {
        let protocol = self.attribute(root, "type", "fix")?;
        let major = self.attribute(root, "major", "fix")?;
        let minor = self.attribute(root, "minor", "fix")?;
        for (attribute, value) in [("major", major), ("minor", minor)] {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DictionaryError::InvalidAttribute {
                    element: "fix".to_owned(),
                    attribute,
                    value: value.to_owned(),
                    reason: "expected a version number",
                    line: self.line(root),
                });
            }
        }
        if protocol.is_empty() || !protocol.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(DictionaryError::InvalidAttribute {
                element: "fix".to_owned(),
                attribute: "type",
                value: protocol.to_owned(),
                reason: "expected FIX or FIXT",
                line: self.line(root),
            });
        }
        Ok(format!("{protocol}.{major}.{minor}"))
    }

    /// The `<fields>` section, sorted by tag number.
    fn fields(
        &self,
        section: roxmltree::Node<'a, 'input>,
    ) -> Result<Vec<FieldDef>, DictionaryError> {
        let mut fields: Vec<FieldDef> = Vec::new();
        let mut lines: HashMap<u32, u32> = HashMap::new();
        let mut names: HashMap<String, u32> = HashMap::new();
        for node in elements(section) {
            if node.tag_name().name() != "field" {
                return Err(self.unexpected("<fields>", node));
            }
            let line = self.line(node);
            let name = self.attribute(node, "name", "field")?;
            let label = format!("field {name}");
            let number_text = self.attribute(node, "number", &label)?;
            let number = match codec::parse_uint(number_text.as_bytes())
                .and_then(|n| u32::try_from(n).ok())
            {
                Some(number) if number > 0 && !number_text.starts_with('0') => number,
                _ => {
                    return Err(DictionaryError::InvalidAttribute {
                        element: label,
                        attribute: "number",
                        value: number_text.to_owned(),
                        reason: "expected a tag number from 1 without leading zeros",
                        line,
                    });
                }
            };
            let type_name = self.attribute(node, "type", &label)?;
            if type_name == "DATA" || type_name == "XMLDATA" {
                return Err(DictionaryError::DataField {
                    field: name.to_owned(),
                    type_name: type_name.to_owned(),
                    line,
                });
            }
            let Some(field_type) = FieldType::from_name(type_name) else {
                return Err(DictionaryError::UnknownFieldType {
                    field: name.to_owned(),
                    type_name: type_name.to_owned(),
                    line,
                });
            };
            if lines.insert(number, line).is_some() {
                return Err(DictionaryError::DuplicateField {
                    what: "number",
                    value: number.to_string(),
                    line,
                });
            }
            if names.insert(name.to_owned(), line).is_some() {
                return Err(DictionaryError::DuplicateField {
                    what: "name",
                    value: name.to_owned(),
                    line,
                });
            }
            let mut values: Vec<EnumValue> = Vec::new();
            for value_node in elements(node) {
                if value_node.tag_name().name() != "value" {
                    return Err(self.unexpected(&label, value_node));
                }
                let value = self.attribute(value_node, "enum", &format!("value of {name}"))?;
                let value_line = self.line(value_node);
                // A multiple-value field's list holds single items, each of which must be a
                // valid (single-item) value on its own.
                if !field_type.accepts(value.as_bytes())
                    || (field_type.is_multiple_value() && value.contains(' '))
                {
                    return Err(DictionaryError::ValueFormat {
                        field: name.to_owned(),
                        type_name: field_type.name(),
                        value: value.to_owned(),
                        line: value_line,
                    });
                }
                if values.iter().any(|v| v.value == value) {
                    return Err(DictionaryError::DuplicateValue {
                        field: name.to_owned(),
                        value: value.to_owned(),
                        line: value_line,
                    });
                }
                values.push(EnumValue {
                    value: value.to_owned(),
                    description: value_node
                        .attribute("description")
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            fields.push(FieldDef {
                number,
                name: name.to_owned(),
                field_type,
                values,
            });
        }
        fields.sort_by_key(|field| field.number);
        Ok(fields)
    }

    fn messages(
        &self,
        section: roxmltree::Node<'a, 'input>,
        resolver: &Resolver<'_, 'a, 'input>,
        header_set: &FieldSet,
        trailer_set: &FieldSet,
    ) -> Result<Vec<MessageDef>, DictionaryError> {
        let mut messages: Vec<MessageDef> = Vec::new();
        for node in elements(section) {
            if node.tag_name().name() != "message" {
                return Err(self.unexpected("<messages>", node));
            }
            let line = self.line(node);
            let name = self.attribute(node, "name", "message")?;
            let label = format!("message {name}");
            let msg_type = self.attribute(node, "msgtype", &label)?;
            if msg_type.is_empty() || !msg_type.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(DictionaryError::InvalidAttribute {
                    element: label,
                    attribute: "msgtype",
                    value: msg_type.to_owned(),
                    reason: "expected letters and digits",
                    line,
                });
            }
            let category = match self.attribute(node, "msgcat", &label)? {
                "admin" => MessageCategory::Admin,
                "app" => MessageCategory::App,
                other => {
                    return Err(DictionaryError::InvalidAttribute {
                        element: label,
                        attribute: "msgcat",
                        value: other.to_owned(),
                        reason: "expected admin or app",
                        line,
                    });
                }
            };
            if messages.iter().any(|m| m.msg_type == msg_type) {
                return Err(DictionaryError::DuplicateMessage {
                    what: "msgtype",
                    value: msg_type.to_owned(),
                    line,
                });
            }
            if messages.iter().any(|m| m.name == name) {
                return Err(DictionaryError::DuplicateMessage {
                    what: "name",
                    value: name.to_owned(),
                    line,
                });
            }
            let body = resolver.body(node, &label)?;
            for &index in &body.all {
                if header_set.contains(index) || trailer_set.contains(index) {
                    return Err(DictionaryError::DuplicateMember {
                        field: resolver.fields[index].name.clone(),
                        context: format!("{label} and the header or trailer"),
                        line,
                    });
                }
            }
            let field_ref = |&(index, required): &(usize, bool)| FieldRef {
                tag: resolver.fields[index].number,
                required,
            };
            let mut places = vec![Place::default(); resolver.fields.len()].into_boxed_slice();
            let mut groups = Vec::with_capacity(body.groups.len());
            for (g, build) in body.groups.iter().enumerate() {
                // Both bounds are checked while collecting.
                let group_id = u8::try_from(g + 1).unwrap_or(u8::MAX);
                places[build.count_index].opens = group_id;
                let mut required_mask = 0u64;
                for (position, &(index, required)) in build.members.iter().enumerate() {
                    places[index].group = group_id;
                    places[index].position = u8::try_from(position).unwrap_or(u8::MAX);
                    if required {
                        required_mask |= 1 << position;
                    }
                }
                groups.push(GroupDef {
                    name: build.name.clone(),
                    count_tag: resolver.fields[build.count_index].number,
                    required: build.required,
                    members: build.members.iter().map(field_ref).collect(),
                    required_mask,
                    parent: build.parent,
                });
            }
            messages.push(MessageDef {
                name: name.to_owned(),
                msg_type: msg_type.to_owned(),
                category,
                allowed: FieldSet::new(resolver.fields.len(), body.all.iter().copied()),
                places,
                required: body
                    .top
                    .iter()
                    .filter(|&&(_, required)| required)
                    .map(|&(index, _)| index)
                    .collect(),
                fields: body.top.iter().map(field_ref).collect(),
                groups,
            });
        }
        Ok(messages)
    }

    fn attribute(
        &self,
        node: roxmltree::Node<'a, 'input>,
        attribute: &'static str,
        element: &str,
    ) -> Result<&'a str, DictionaryError> {
        node.attribute(attribute)
            .ok_or_else(|| DictionaryError::MissingAttribute {
                element: element.to_owned(),
                attribute,
                line: self.line(node),
            })
    }

    fn unexpected(&self, parent: &str, node: roxmltree::Node<'_, '_>) -> DictionaryError {
        if node.tag_name().name() == "group" {
            return DictionaryError::RepeatingGroup {
                context: parent.to_owned(),
                group: node.attribute("name").unwrap_or_default().to_owned(),
                line: self.line(node),
            };
        }
        DictionaryError::UnexpectedElement {
            parent: parent.to_owned(),
            found: node.tag_name().name().to_owned(),
            line: self.line(node),
        }
    }
}

/// Flattens `<field>` and `<component>` references into field indexes.
struct Resolver<'l, 'a, 'input> {
    /// For attributes and line numbers.
    loader: &'l Loader<'a, 'input>,
    /// Field name to index in `fields`.
    by_name: &'l HashMap<&'l str, usize>,
    /// Component name to its element.
    components: &'l HashMap<&'a str, roxmltree::Node<'a, 'input>>,
    /// The dictionary's fields, sorted by tag.
    fields: &'l [FieldDef],
}

/// The fields of a header, trailer or message body as the loader collects them: the top level
/// and each repeating group, as (field index, required) in dictionary order.
#[derive(Default)]
struct Collected {
    /// Top-level fields; a group is represented by its NumInGroup field.
    top: Vec<(usize, bool)>,
    /// Groups in the order their `<group>` elements open (so outer before inner).
    groups: Vec<GroupBuild>,
    /// Every field index collected anywhere, to refuse a field in two places.
    all: Vec<usize>,
}

/// One `<group>` while it is being collected.
struct GroupBuild {
    /// The group's (NumInGroup field's) name.
    name: String,
    /// Field index of the NumInGroup field.
    count_index: usize,
    /// Whether the message requires the group.
    required: bool,
    /// Members in order; the first is the delimiter.
    members: Vec<(usize, bool)>,
    /// The enclosing group, if nested.
    parent: Option<usize>,
    /// Nesting depth: 1 for a group at the body's top level.
    depth: usize,
}

impl<'a, 'input> Resolver<'_, 'a, 'input> {
    /// The fields of a header or trailer, in order, as (field index, required). Groups are
    /// refused there: the validator checks them only in message bodies.
    fn members(
        &self,
        node: roxmltree::Node<'a, 'input>,
        context: &str,
    ) -> Result<Vec<(usize, bool)>, DictionaryError> {
        let mut collected = Collected::default();
        let mut stack = Vec::new();
        self.collect(node, context, true, &mut stack, &mut collected, None, false)?;
        Ok(collected.top)
    }

    /// The fields and groups of a message body.
    fn body(
        &self,
        node: roxmltree::Node<'a, 'input>,
        context: &str,
    ) -> Result<Collected, DictionaryError> {
        let mut collected = Collected::default();
        let mut stack = Vec::new();
        self.collect(node, context, true, &mut stack, &mut collected, None, true)?;
        Ok(collected)
    }

    /// Appends the fields under `node` to the top level (`target` None) or to group `target`;
    /// `stack` holds the components being expanded, to detect cycles. A field is required when
    /// it and every component around it (up to its group) are.
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        node: roxmltree::Node<'a, 'input>,
        context: &str,
        required_outer: bool,
        stack: &mut Vec<&'a str>,
        out: &mut Collected,
        target: Option<usize>,
        groups_allowed: bool,
    ) -> Result<(), DictionaryError> {
        for member in elements(node) {
            let line = self.loader.line(member);
            match member.tag_name().name() {
                "field" => {
                    let name =
                        self.loader
                            .attribute(member, "name", &format!("field in {context}"))?;
                    let required = self.required(member, name)?;
                    let index = self.field_named(name, context, line)?;
                    self.place(
                        out,
                        target,
                        index,
                        required_outer && required,
                        name,
                        context,
                        line,
                    )?;
                }
                "group" if groups_allowed => {
                    let name =
                        self.loader
                            .attribute(member, "name", &format!("group in {context}"))?;
                    let required = self.required(member, name)?;
                    let index = self.field_named(name, context, line)?;
                    let invalid = |reason| DictionaryError::InvalidGroup {
                        context: context.to_owned(),
                        group: name.to_owned(),
                        reason,
                        line,
                    };
                    if self.fields[index].field_type != FieldType::NumInGroup {
                        return Err(invalid("its name is not a NumInGroup field"));
                    }
                    let depth = target.map_or(0, |t| out.groups[t].depth) + 1;
                    if depth > constants::GROUP_DEPTH_MAX {
                        return Err(invalid("nested deeper than the validator tracks"));
                    }
                    let group_required = required_outer && required;
                    self.place(out, target, index, group_required, name, context, line)?;
                    let group = out.groups.len();
                    if group >= usize::from(u8::MAX) {
                        return Err(invalid(
                            "more groups in one message than the validator tracks",
                        ));
                    }
                    out.groups.push(GroupBuild {
                        name: name.to_owned(),
                        count_index: index,
                        required: group_required,
                        members: Vec::new(),
                        parent: target,
                        depth,
                    });
                    // Members are required per instance, whatever the group's own flag says.
                    self.collect(member, context, true, stack, out, Some(group), true)?;
                    let members = out.groups[group].members.len();
                    if members == 0 {
                        return Err(invalid("it has no members"));
                    }
                    if members > constants::GROUP_MEMBERS_MAX {
                        return Err(invalid("more members than the validator tracks"));
                    }
                }
                "component" => {
                    let name = self.loader.attribute(
                        member,
                        "name",
                        &format!("component in {context}"),
                    )?;
                    let required = self.required(member, name)?;
                    let Some(&definition) = self.components.get(name) else {
                        return Err(DictionaryError::UndefinedComponent {
                            name: name.to_owned(),
                            context: context.to_owned(),
                            line,
                        });
                    };
                    if stack.contains(&name) || stack.len() >= COMPONENT_DEPTH_MAX {
                        return Err(DictionaryError::ComponentCycle {
                            name: name.to_owned(),
                            line,
                        });
                    }
                    stack.push(name);
                    // Errors inside the component name the message that uses it, which is
                    // what the reader of the error is looking at.
                    self.collect(
                        definition,
                        context,
                        required_outer && required,
                        stack,
                        out,
                        target,
                        groups_allowed,
                    )?;
                    stack.pop();
                }
                _ => return Err(self.loader.unexpected(context, member)),
            }
        }
        Ok(())
    }

    fn field_named(&self, name: &str, context: &str, line: u32) -> Result<usize, DictionaryError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| DictionaryError::UndefinedField {
                name: name.to_owned(),
                context: context.to_owned(),
                line,
            })
    }

    /// Adds a field to the top level or a group, refusing a field in two places of one
    /// message: every tag has one place, which is what lets the validator find it in O(1).
    #[allow(clippy::too_many_arguments)]
    fn place(
        &self,
        out: &mut Collected,
        target: Option<usize>,
        index: usize,
        required: bool,
        name: &str,
        context: &str,
        line: u32,
    ) -> Result<(), DictionaryError> {
        if out.all.contains(&index) {
            return Err(DictionaryError::DuplicateMember {
                field: name.to_owned(),
                context: context.to_owned(),
                line,
            });
        }
        out.all.push(index);
        match target {
            None => out.top.push((index, required)),
            Some(group) => out.groups[group].members.push((index, required)),
        }
        Ok(())
    }

    fn required(
        &self,
        node: roxmltree::Node<'a, 'input>,
        name: &str,
    ) -> Result<bool, DictionaryError> {
        match self.loader.attribute(node, "required", name)? {
            "Y" => Ok(true),
            "N" => Ok(false),
            other => Err(DictionaryError::InvalidAttribute {
                element: name.to_owned(),
                attribute: "required",
                value: other.to_owned(),
                reason: "expected Y or N",
                line: self.loader.line(node),
            }),
        }
    }
}

/// The element children of a node (skipping text, comments and processing instructions).
fn elements<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
    node.children().filter(roxmltree::Node::is_element)
}

/// The one child element named `name`, or an error naming the section that lacks it.
fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    parent: &'static str,
    name: &'static str,
) -> Result<roxmltree::Node<'a, 'input>, DictionaryError> {
    elements(node)
        .find(|n| n.tag_name().name() == name)
        .ok_or(DictionaryError::MissingElement {
            parent,
            element: name,
        })
}

fn required_indexes(members: &[(usize, bool)]) -> Box<[usize]> {
    members
        .iter()
        .filter(|&&(_, required)| required)
        .map(|&(index, _)| index)
        .collect()
}

/// Not a control character. Bytes from 0x80 pass so that UTF-8 text in free-text fields
/// survives; the codec has already split on SOH.
fn is_printable(byte: u8) -> bool {
    byte >= 0x20 && byte != 0x7f
}

fn is_signed_int(value: &[u8]) -> bool {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    // Checking the magnitude as a u64 and the bound separately keeps i64::MIN valid.
    match codec::parse_uint(digits) {
        Some(magnitude) if value.first() == Some(&b'-') => magnitude <= i64::MIN.unsigned_abs(),
        Some(magnitude) => magnitude <= i64::MAX as u64,
        None => false,
    }
}

fn is_decimal(value: &[u8]) -> bool {
    let unsigned = value.strip_prefix(b"-").unwrap_or(value);
    let mut digits = 0usize;
    let mut points = 0usize;
    for &b in unsigned {
        match b {
            b'0'..=b'9' => digits += 1,
            b'.' => points += 1,
            _ => return false,
        }
    }
    digits > 0 && points <= 1
}

/// Two ASCII digits as a number.
fn two_digits(value: &[u8]) -> Option<u32> {
    match value {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        }
        _ => None,
    }
}

/// Latest year a [`Timestamp`] (u64 nanoseconds since 1970, ending in July 2554) holds in
/// full. `Timestamp::parse_fix` multiplies without an overflow check, so a later year from a
/// peer would overflow it; such values are refused before it runs.
const TIMESTAMP_YEAR_MAX: u64 = 2553;

/// A FIX UTCTimestamp that [`Timestamp`] can represent.
fn is_utc_timestamp(value: &[u8]) -> bool {
    let year_fits = value
        .get(..4)
        .and_then(codec::parse_uint)
        .is_some_and(|year| year <= TIMESTAMP_YEAR_MAX);
    year_fits && Timestamp::parse_fix(value).is_some()
}

/// `HH:MM:SS` with an optional fraction of 1 to 9 digits (as [`Timestamp::parse_fix`] allows);
/// second 60 is a leap second.
fn is_time_only(value: &[u8]) -> bool {
    if value.len() < 8 || value[2] != b':' || value[5] != b':' {
        return false;
    }
    let in_range = matches!(
        (
            two_digits(&value[0..2]),
            two_digits(&value[3..5]),
            two_digits(&value[6..8])
        ),
        (Some(0..=23), Some(0..=59), Some(0..=60))
    );
    let fraction = &value[8..];
    in_range
        && (fraction.is_empty()
            || (fraction[0] == b'.'
                && (2..=10).contains(&fraction.len())
                && fraction[1..].iter().all(u8::is_ascii_digit)))
}

/// `YYYYMMDD`, a real calendar date.
fn is_date(value: &[u8]) -> bool {
    value.len() == 8
        && value.iter().all(u8::is_ascii_digit)
        && calendar_date(&value[..4], &value[4..6], &value[6..8])
}

fn calendar_date(year: &[u8], month: &[u8], day: &[u8]) -> bool {
    let (Some(year), Some(month), Some(day)) =
        (codec::parse_uint(year), two_digits(month), two_digits(day))
    else {
        return false;
    };
    let (Ok(year), Ok(month), Ok(day)) =
        (i32::try_from(year), u8::try_from(month), u8::try_from(day))
    else {
        return false;
    };
    time::Month::try_from(month)
        .ok()
        .is_some_and(|month| time::Date::from_calendar_date(year, month, day).is_ok())
}

/// `YYYYMM`, `YYYYMMDD` (a real date) or `YYYYMMwN` (week 1 to 5), the FIX 4.4 MonthYear forms.
fn is_month_year(value: &[u8]) -> bool {
    if value.len() < 6
        || !value[..6].iter().all(u8::is_ascii_digit)
        || !matches!(two_digits(&value[4..6]), Some(1..=12))
    {
        return false;
    }
    match &value[6..] {
        [] => true,
        [b'w', week] => (b'1'..=b'5').contains(week),
        day @ [_, _] => calendar_date(&value[..4], &value[4..6], day),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::codec::Encoder;

    /// The encoder the tests build messages with.
    fn encoder() -> Encoder {
        Encoder::new("FIX.4.4")
    }

    /// A standard header after MsgType, as a counterparty would send it.
    fn header(encoder: &mut Encoder) -> &mut Encoder {
        encoder
            .str(49, "CLIENT")
            .str(56, "BATON")
            .uint(34, 7)
            .str(52, "20260302-09:30:00.123")
    }

    /// Builds a message: header, then the body fields given.
    fn message(msg_type: &str, body: &[(u32, &str)]) -> Message {
        let mut encoder = encoder();
        encoder.start(msg_type.as_bytes());
        header(&mut encoder);
        for &(tag, value) in body {
            encoder.str(tag, value);
        }
        Message::parse(encoder.finish()).expect("the encoder frames every message")
    }

    fn new_order(extra: &[(u32, &str)]) -> Message {
        let mut body = vec![
            (11, "ORD-1"),
            (55, "ACME"),
            (54, "1"),
            (60, "20260302-09:30:00.100"),
            (38, "100"),
            (40, "2"),
            (44, "10.25"),
        ];
        body.extend_from_slice(extra);
        message("D", &body)
    }

    fn problem(reason: SessionRejectReason, tag: u32) -> Result<(), FieldProblem> {
        Err(FieldProblem { reason, tag })
    }

    fn venue() -> &'static Dictionary {
        Dictionary::venue()
    }

    #[test]
    fn venue_dictionary_loads_with_every_supported_message() {
        let dictionary = venue();
        assert_eq!(dictionary.begin_string(), "FIX.4.4");
        let types: Vec<&str> = dictionary.messages().map(MessageDef::msg_type).collect();
        assert_eq!(
            types,
            [
                "0", "1", "2", "3", "4", "5", "A", "D", "F", "G", "8", "9", "j"
            ]
        );
        for msg_type in ["0", "1", "2", "3", "4", "5", "A"] {
            assert!(dictionary.is_admin(msg_type.as_bytes()), "{msg_type}");
            assert!(tags::msg_type::is_admin(msg_type.as_bytes()));
        }
        for msg_type in ["D", "F", "G", "8", "9", "j"] {
            assert!(!dictionary.is_admin(msg_type.as_bytes()), "{msg_type}");
            assert!(!tags::msg_type::is_admin(msg_type.as_bytes()));
        }
        assert_eq!(dictionary.message_name(b"D"), Some("NewOrderSingle"));
        assert_eq!(dictionary.message_name(b"H"), None);
        assert_eq!(dictionary.field_name(789), Some("NextExpectedMsgSeqNum"));
        assert_eq!(dictionary.field_name(95), None);
        assert!(dictionary.is_defined_msg_type(b"j"));
        assert!(!dictionary.is_defined_msg_type(b"J"));
        assert!(!dictionary.is_admin(b"Z"));
    }

    #[test]
    fn venue_dictionary_field_types_match_the_fix_44_spec() {
        let dictionary = venue();
        let expect = [
            (34, "MsgSeqNum", FieldType::SeqNum),
            (38, "OrderQty", FieldType::Qty),
            (44, "Price", FieldType::Price),
            (52, "SendingTime", FieldType::UtcTimestamp),
            (54, "Side", FieldType::Char),
            (108, "HeartBtInt", FieldType::Int),
            (141, "ResetSeqNumFlag", FieldType::Boolean),
        ];
        for (tag, name, field_type) in expect {
            let field = dictionary.field(tag).expect("defined");
            assert_eq!((field.name(), field.field_type()), (name, field_type));
        }
        let side: Vec<&str> = dictionary
            .field(54)
            .into_iter()
            .flat_map(|f| f.values())
            .map(EnumValue::value)
            .collect();
        assert_eq!(side, ["1", "2"]);
    }

    #[test]
    fn valid_messages_pass() {
        let dictionary = venue();
        assert_eq!(
            dictionary.validate(&new_order(&[(59, "3"), (58, "hello world")])),
            Ok(())
        );
        assert_eq!(
            dictionary.validate(&message("A", &[(98, "0"), (108, "30"), (141, "Y")])),
            Ok(())
        );
        assert_eq!(dictionary.validate(&message("0", &[])), Ok(()));
        assert_eq!(
            dictionary.validate(&message("2", &[(7, "1"), (16, "0")])),
            Ok(())
        );
        assert_eq!(
            dictionary.validate(&message(
                "3",
                &[
                    (45, "3"),
                    (371, "44"),
                    (372, "D"),
                    (373, "5"),
                    (58, "bad price")
                ]
            )),
            Ok(())
        );
    }

    #[test]
    fn codec_problem_comes_first() {
        // An empty value in an unknown message type: the codec's finding wins.
        let message =
            Message::parse(b"8=FIX.4.4\x019=5\x0135=ZZ\x0158=\x0110=000\x01").expect("framed");
        assert_eq!(
            venue().validate(&message),
            problem(SessionRejectReason::TagSpecifiedWithoutValue, 58)
        );
        let message = Message::parse(b"8=FIX.4.4\x019=5\x0135=D\x0155=A\x0155=B\x0110=000\x01")
            .expect("framed");
        assert_eq!(
            venue().validate(&message),
            problem(SessionRejectReason::TagAppearsMoreThanOnce, 55)
        );
    }

    #[test]
    fn unknown_msg_type_is_reason_11() {
        assert_eq!(
            venue().validate(&message("H", &[(11, "ORD-1")])),
            problem(SessionRejectReason::InvalidMsgType, 35)
        );
    }

    #[test]
    fn unknown_tag_is_reason_0() {
        assert_eq!(
            venue().validate(&new_order(&[(95, "zz"), (9999, "x")])),
            problem(SessionRejectReason::InvalidTagNumber, 95)
        );
        assert_eq!(
            venue().validate(&new_order(&[(5000, "x")])),
            problem(SessionRejectReason::InvalidTagNumber, 5000)
        );
    }

    #[test]
    fn unknown_tag_outranks_earlier_value_problems() {
        assert_eq!(
            venue().validate(&new_order(&[(59, "9"), (95, "zz")])),
            problem(SessionRejectReason::InvalidTagNumber, 95)
        );
    }

    #[test]
    fn tag_of_another_message_is_reason_2() {
        // HeartBtInt belongs to Logon.
        assert_eq!(
            venue().validate(&new_order(&[(108, "30")])),
            problem(SessionRejectReason::TagNotDefinedForMessageType, 108)
        );
    }

    #[test]
    fn header_tag_after_body_is_reason_14() {
        let mut encoder = encoder();
        encoder
            .start(b"1")
            .str(49, "CLIENT")
            .str(56, "BATON")
            .uint(34, 7)
            .str(112, "TEST-1")
            .str(52, "20260302-09:30:00.123");
        let message = Message::parse(encoder.finish()).expect("framed");
        assert_eq!(
            venue().validate(&message),
            problem(SessionRejectReason::TagSpecifiedOutOfRequiredOrder, 52)
        );
    }

    /// A valid NewOrderSingle body with one field's value replaced (or added).
    fn new_order_with(tag: u32, value: &str) -> Message {
        let mut body = vec![
            (11, "ORD-1"),
            (55, "ACME"),
            (54, "1"),
            (60, "20260302-09:30:00.100"),
            (38, "100"),
            (40, "2"),
            (44, "10.25"),
        ];
        match body.iter_mut().find(|(t, _)| *t == tag) {
            Some(slot) => slot.1 = value,
            None => body.push((tag, value)),
        }
        message("D", &body)
    }

    #[test]
    fn malformed_value_is_reason_6() {
        for (tag, value) in [
            (38, "1e5"),
            (38, "1.2.3"),
            (38, "-"),
            (44, "ten"),
            (54, "12"),
            (60, "99999999-99:99:99"),
            (60, "20260302 09:30:00"),
            (58, "tab\there"),
        ] {
            assert_eq!(
                venue().validate(&new_order_with(tag, value)),
                problem(SessionRejectReason::IncorrectDataFormat, tag),
                "{tag}={value}"
            );
        }
    }

    #[test]
    fn malformed_header_value_is_reason_6() {
        let mut encoder = encoder();
        encoder
            .start(b"0")
            .str(49, "CLIENT")
            .str(56, "BATON")
            .str(34, "-1")
            .str(52, "20260302-09:30:00.123")
            .str(43, "X");
        let message = Message::parse(encoder.finish()).expect("framed");
        assert_eq!(
            venue().validate(&message),
            problem(SessionRejectReason::IncorrectDataFormat, 34)
        );
    }

    #[test]
    fn value_outside_list_is_reason_5() {
        assert_eq!(
            venue().validate(&new_order(&[(59, "1")])),
            problem(SessionRejectReason::ValueIsIncorrect, 59)
        );
        assert_eq!(
            venue().validate(&message("A", &[(98, "1"), (108, "30")])),
            problem(SessionRejectReason::ValueIsIncorrect, 98)
        );
    }

    #[test]
    fn format_outranks_value_whatever_the_order() {
        assert_eq!(
            venue().validate(&new_order(&[(59, "1"), (58, "bell\x07")])),
            problem(SessionRejectReason::IncorrectDataFormat, 58)
        );
    }

    #[test]
    fn missing_required_tag_is_reason_1() {
        assert_eq!(
            venue().validate(&message("A", &[(98, "0")])),
            problem(SessionRejectReason::RequiredTagMissing, 108)
        );
        assert_eq!(
            venue().validate(&message("D", &[(11, "ORD-1"), (55, "ACME")])),
            problem(SessionRejectReason::RequiredTagMissing, 54)
        );
    }

    #[test]
    fn missing_required_header_tag_is_reason_1() {
        let mut encoder = encoder();
        encoder
            .start(b"0")
            .str(49, "CLIENT")
            .str(56, "BATON")
            .uint(34, 7);
        let message = Message::parse(encoder.finish()).expect("framed");
        assert_eq!(
            venue().validate(&message),
            problem(SessionRejectReason::RequiredTagMissing, 52)
        );
    }

    #[test]
    fn value_problems_outrank_missing_fields() {
        assert_eq!(
            venue().validate(&message("A", &[(98, "x")])),
            problem(SessionRejectReason::IncorrectDataFormat, 98)
        );
    }

    #[test]
    fn int_types_take_digits_and_only_int_takes_a_sign() {
        assert!(FieldType::Int.accepts(b"-12"));
        assert!(FieldType::Int.accepts(b"-9223372036854775808"));
        assert!(!FieldType::Int.accepts(b"9223372036854775808"));
        assert!(!FieldType::Int.accepts(b"+1"));
        assert!(!FieldType::Int.accepts(b"1.0"));
        // What `codec::parse_uint` reads, so a validated value never fails a later typed read.
        assert!(FieldType::SeqNum.accepts(b"0009999999999999999"));
        assert!(!FieldType::SeqNum.accepts(b"18446744073709551615"));
        assert!(!FieldType::SeqNum.accepts(b"-1"));
        assert!(!FieldType::Length.accepts(b""));
        assert!(FieldType::DayOfMonth.accepts(b"31"));
        assert!(!FieldType::DayOfMonth.accepts(b"32"));
    }

    #[test]
    fn decimal_types_refuse_exponents_and_second_points() {
        for good in ["0", "-1", "1.", ".5", "123.456", "-0.0001"] {
            assert!(FieldType::Price.accepts(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "-", ".", "1e5", "1.2.3", "+1", "1,5", " 1", "NaN", "--1",
        ] {
            assert!(!FieldType::Qty.accepts(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn char_boolean_and_text_types() {
        assert!(FieldType::Char.accepts(b"A"));
        assert!(!FieldType::Char.accepts(b"AB"));
        assert!(!FieldType::Char.accepts(b"\x02"));
        assert!(FieldType::Boolean.accepts(b"Y") && FieldType::Boolean.accepts(b"N"));
        assert!(!FieldType::Boolean.accepts(b"y"));
        assert!(FieldType::String.accepts("prix élevé".as_bytes()));
        assert!(!FieldType::String.accepts(b"a\x7fb"));
        assert!(FieldType::MultipleCharValue.accepts(b"A B C"));
        assert!(!FieldType::MultipleCharValue.accepts(b"A  B"));
        assert!(!FieldType::MultipleValueString.accepts(b"AB "));
    }

    #[test]
    fn time_and_date_types() {
        assert!(FieldType::UtcTimestamp.accepts(b"20260302-09:30:00"));
        assert!(!FieldType::UtcTimestamp.accepts(b"99999999-99:99:99"));
        assert!(FieldType::UtcTimestamp.accepts(b"25531231-23:59:59.999"));
        // Past what a Timestamp holds: refused rather than overflowing the parser.
        assert!(!FieldType::UtcTimestamp.accepts(b"25540722-00:00:00"));
        assert!(!FieldType::UtcTimestamp.accepts(b"99991231-23:59:59"));
        assert!(FieldType::UtcTimeOnly.accepts(b"23:59:60"));
        assert!(FieldType::UtcTimeOnly.accepts(b"09:30:00.123"));
        assert!(!FieldType::UtcTimeOnly.accepts(b"24:00:00"));
        assert!(!FieldType::UtcTimeOnly.accepts(b"09:30:00."));
        assert!(FieldType::UtcDateOnly.accepts(b"20240229"));
        assert!(!FieldType::UtcDateOnly.accepts(b"20230229"));
        assert!(!FieldType::LocalMktDate.accepts(b"2024-02-29"));
        for good in ["202603", "20260315", "202603w2"] {
            assert!(FieldType::MonthYear.accepts(good.as_bytes()), "{good}");
        }
        for bad in ["202613", "20260231", "202603w6", "2026031", "202603w"] {
            assert!(!FieldType::MonthYear.accepts(bad.as_bytes()), "{bad}");
        }
    }

    /// A small dictionary exercising what the venue file does not: components, a
    /// multiple-value field and a tag above the direct table.
    const COMPONENT_XML: &str = r#"<fix type="FIX" major="4" minor="4" servicepack="0">
  <header>
    <field name="BeginString" required="Y"/><field name="BodyLength" required="Y"/>
    <field name="MsgType" required="Y"/>
  </header>
  <trailer><field name="CheckSum" required="Y"/></trailer>
  <messages>
    <message name="Quote" msgtype="S" msgcat="app">
      <component name="Instrument" required="Y"/>
      <field name="QuoteCondition" required="N"/>
      <field name="VenueTag" required="N"/>
    </message>
  </messages>
  <components>
    <component name="Instrument">
      <field name="Symbol" required="Y"/>
      <component name="Issuer" required="N"/>
    </component>
    <component name="Issuer"><field name="Issuer" required="Y"/></component>
  </components>
  <fields>
    <field number="8" name="BeginString" type="STRING"/>
    <field number="9" name="BodyLength" type="LENGTH"/>
    <field number="10" name="CheckSum" type="STRING"/>
    <field number="35" name="MsgType" type="STRING"/>
    <field number="55" name="Symbol" type="STRING"/>
    <field number="106" name="Issuer" type="STRING"/>
    <field number="276" name="QuoteCondition" type="MULTIPLEVALUESTRING">
      <value enum="A" description="OPEN"/><value enum="B" description="CLOSED"/>
    </field>
    <field number="20001" name="VenueTag" type="INT"/>
  </fields>
</fix>"#;

    fn quote(fields: &[(u32, &str)]) -> Message {
        let mut encoder = encoder();
        encoder.start(b"S");
        for &(tag, value) in fields {
            encoder.str(tag, value);
        }
        Message::parse(encoder.finish()).expect("framed")
    }

    #[test]
    fn components_are_flattened_with_required_flags_combined() {
        let dictionary = Dictionary::from_xml(COMPONENT_XML).expect("loads");
        let quote_def = dictionary.message(b"S").expect("defined");
        let flags: Vec<(u32, bool)> = quote_def
            .fields()
            .iter()
            .map(|f| (f.tag(), f.is_required()))
            .collect();
        assert_eq!(
            flags,
            [(55, true), (106, false), (276, false), (20001, false)]
        );
        assert_eq!(
            dictionary.validate(&quote(&[(55, "ACME"), (20001, "-5")])),
            Ok(())
        );
        assert_eq!(
            dictionary.validate(&quote(&[(106, "X")])),
            problem(SessionRejectReason::RequiredTagMissing, 55)
        );
        assert_eq!(
            dictionary.validate(&quote(&[(55, "ACME"), (20001, "x")])),
            problem(SessionRejectReason::IncorrectDataFormat, 20001)
        );
        assert_eq!(
            dictionary.validate(&quote(&[(55, "ACME"), (20002, "x")])),
            problem(SessionRejectReason::InvalidTagNumber, 20002)
        );
    }

    #[test]
    fn multiple_value_fields_check_each_value() {
        let dictionary = Dictionary::from_xml(COMPONENT_XML).expect("loads");
        assert_eq!(
            dictionary.validate(&quote(&[(55, "ACME"), (276, "A B")])),
            Ok(())
        );
        assert_eq!(
            dictionary.validate(&quote(&[(55, "ACME"), (276, "A C")])),
            problem(SessionRejectReason::ValueIsIncorrect, 276)
        );
        assert_eq!(
            dictionary.validate(&quote(&[(55, "ACME"), (276, "A  B")])),
            problem(SessionRejectReason::IncorrectDataFormat, 276)
        );
    }

    /// The venue file with one substitution, for loader error tests.
    fn venue_with(from: &str, to: &str) -> Result<Dictionary, DictionaryError> {
        assert!(VENUE_XML.contains(from), "{from}");
        Dictionary::from_xml(&VENUE_XML.replacen(from, to, 1))
    }

    #[test]
    fn repeating_group_in_the_header_is_refused_with_its_name() {
        let error = venue_with(
            r#"<field name="PossDupFlag" required="N"/>"#,
            r#"<group name="NoPartyIDs" required="N"><field name="PartyID" required="N"/></group>"#,
        )
        .expect_err("header groups are refused");
        assert!(
            matches!(&error, DictionaryError::RepeatingGroup { group, context, .. }
            if group == "NoPartyIDs" && context == "the header"),
            "{error}"
        );
    }

    #[test]
    fn group_named_after_a_field_that_is_not_a_count_is_refused() {
        let error = venue_with(
            r#"<field name="Username" required="N"/>"#,
            r#"<group name="Username" required="N"><field name="Password" required="N"/></group>"#,
        )
        .expect_err("not a NumInGroup");
        assert!(
            matches!(&error, DictionaryError::InvalidGroup { group, context, .. }
            if group == "Username" && context == "message Logon"),
            "{error}"
        );
    }

    #[test]
    fn venue_parties_group_is_loaded_with_its_nested_group() {
        let order = venue().message(b"D").expect("NewOrderSingle");
        let groups = order.groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (
                groups[0].name(),
                groups[0].count_tag(),
                groups[0].delimiter()
            ),
            ("NoPartyIDs", 453, 448)
        );
        let members: Vec<u32> = groups[0].members().iter().map(|m| m.tag()).collect();
        assert_eq!(members, [448, 447, 452, 2376, 802]);
        assert_eq!(groups[0].parent(), None);
        assert_eq!(
            (groups[1].name(), groups[1].delimiter(), groups[1].parent()),
            ("NoPartySubIDs", 523, Some(0))
        );
        // The top level shows the group as its count field.
        assert!(order.fields().iter().any(|f| f.tag() == 453));
        assert!(!order.fields().iter().any(|f| f.tag() == 448));
    }

    /// A NewOrderSingle with these Parties fields after the order's own.
    fn order_with_parties(parties: &[(u32, &str)]) -> Message {
        new_order(parties)
    }

    #[test]
    fn parties_group_validates() {
        assert_eq!(
            venue().validate(&order_with_parties(&[
                (453, "3"),
                (448, "12345"),
                (447, "P"),
                (452, "3"),
                (448, "TRADER7"),
                (447, "P"),
                (452, "12"),
                (2376, "24"),
                (448, "ALGO1"),
                (447, "P"),
                (452, "122"),
                (2376, "22"),
            ])),
            Ok(())
        );
        // NumInGroup 0 with no instances, and the group absent altogether.
        assert_eq!(venue().validate(&order_with_parties(&[(453, "0")])), Ok(()));
        assert_eq!(venue().validate(&order_with_parties(&[])), Ok(()));
    }

    #[test]
    fn nested_group_validates_and_is_checked() {
        let nested = [
            (453, "2"),
            (448, "12345"),
            (447, "P"),
            (452, "3"),
            (802, "2"),
            (523, "desk-4"),
            (803, "1"),
            (523, "room-2"),
            (803, "2"),
            (448, "TRADER7"),
            (447, "P"),
            (452, "12"),
        ];
        assert_eq!(venue().validate(&order_with_parties(&nested)), Ok(()));
        // One sub-instance short: the nested count is wrong.
        let mut short = nested.to_vec();
        short.drain(7..9);
        assert_eq!(
            venue().validate(&order_with_parties(&short)),
            problem(SessionRejectReason::IncorrectNumInGroupCount, 802)
        );
        // A nested member after the outer instance moved on: out of order.
        let mut late = nested.to_vec();
        late.push((523, "late"));
        assert_eq!(
            venue().validate(&order_with_parties(&late)),
            problem(SessionRejectReason::RepeatingGroupFieldsOutOfOrder, 523)
        );
    }

    #[test]
    fn wrong_num_in_group_is_reason_16() {
        let two_declared_one_sent = [(453, "2"), (448, "12345"), (447, "P"), (452, "3")];
        assert_eq!(
            venue().validate(&order_with_parties(&two_declared_one_sent)),
            problem(SessionRejectReason::IncorrectNumInGroupCount, 453)
        );
        let one_declared_two_sent = [
            (453, "1"),
            (448, "12345"),
            (447, "P"),
            (452, "3"),
            (448, "TRADER7"),
            (447, "P"),
            (452, "12"),
        ];
        assert_eq!(
            venue().validate(&order_with_parties(&one_declared_two_sent)),
            problem(SessionRejectReason::IncorrectNumInGroupCount, 453)
        );
    }

    #[test]
    fn group_order_problems_are_reason_15() {
        // The first instance does not start with the delimiter.
        assert_eq!(
            venue().validate(&order_with_parties(&[
                (453, "1"),
                (447, "P"),
                (448, "12345"),
                (452, "3"),
            ])),
            problem(SessionRejectReason::RepeatingGroupFieldsOutOfOrder, 447)
        );
        // Members out of the dictionary's order within an instance.
        assert_eq!(
            venue().validate(&order_with_parties(&[
                (453, "1"),
                (448, "12345"),
                (452, "3"),
                (447, "P"),
            ])),
            problem(SessionRejectReason::RepeatingGroupFieldsOutOfOrder, 447)
        );
        // A member without its group.
        assert_eq!(
            venue().validate(&order_with_parties(&[(448, "12345")])),
            problem(SessionRejectReason::RepeatingGroupFieldsOutOfOrder, 448)
        );
    }

    #[test]
    fn repeats_within_an_instance_or_of_the_count_are_reason_13() {
        assert_eq!(
            venue().validate(&order_with_parties(&[
                (453, "1"),
                (448, "12345"),
                (447, "P"),
                (447, "D"),
                (452, "3"),
            ])),
            problem(SessionRejectReason::TagAppearsMoreThanOnce, 447)
        );
        assert_eq!(
            venue().validate(&order_with_parties(&[(453, "0"), (453, "0")])),
            problem(SessionRejectReason::TagAppearsMoreThanOnce, 453)
        );
    }

    #[test]
    fn required_member_missing_from_an_instance_is_reason_1() {
        assert_eq!(
            venue().validate(&order_with_parties(&[
                (453, "2"),
                (448, "12345"),
                (447, "P"),
                (452, "3"),
                (448, "TRADER7"),
                (452, "12"),
            ])),
            problem(SessionRejectReason::RequiredTagMissing, 447)
        );
    }

    #[test]
    fn malformed_count_is_reason_6_not_a_group_problem() {
        assert_eq!(
            venue().validate(&order_with_parties(&[
                (453, "x"),
                (448, "12345"),
                (447, "P"),
                (452, "3"),
            ])),
            problem(SessionRejectReason::IncorrectDataFormat, 453)
        );
    }

    #[test]
    fn more_fields_than_the_cap_are_reason_99() {
        let mut body = Vec::new();
        let values: Vec<String> = (0..constants::FIELDS_PER_MESSAGE_MAX)
            .map(|i| i.to_string())
            .collect();
        for value in &values {
            body.push((58, value.as_str()));
        }
        assert_eq!(
            venue().validate(&new_order(&body)),
            problem(SessionRejectReason::Other, 0)
        );
    }

    /// Validation work per field stays bounded however the fields are chosen: distinct unknown
    /// tags (the repeated-tag fallback), distinct known tags, repeats, and long groups. The
    /// old duplicate check compared every field with every earlier one; this counts steps, so
    /// it proves the bound without a clock.
    #[test]
    fn validation_work_is_linear_in_the_fields() {
        let per_field_max = constants::UNKNOWN_TAGS_TRACKED_MAX as u64 + 4;
        for n in [16usize, 64, 256, 1_000] {
            let unknown: Vec<(u32, String)> =
                (0..n).map(|i| (5_000 + i as u32, "1".to_owned())).collect();
            let repeats: Vec<(u32, String)> = (0..n).map(|_| (58, "x".to_owned())).collect();
            let mut group = vec![(453, (n / 3).to_string())];
            for i in 0..n / 3 {
                group.push((448, format!("P{i}")));
                group.push((447, "P".to_owned()));
                group.push((452, "3".to_owned()));
            }
            let nested = {
                let mut fields = vec![(453, "1".to_owned())];
                fields.push((448, "P".to_owned()));
                fields.push((447, "P".to_owned()));
                fields.push((452, "3".to_owned()));
                fields.push((802, (n / 2).to_string()));
                for i in 0..n / 2 {
                    fields.push((523, format!("S{i}")));
                    fields.push((803, "1".to_owned()));
                }
                fields
            };
            for extra in [unknown, repeats, group, nested] {
                let body: Vec<(u32, &str)> = extra.iter().map(|(t, v)| (*t, v.as_str())).collect();
                let message = new_order(&body);
                let fields = message.fields().count() as u64;
                let (_, work) = venue().validate_counting_work(&message);
                assert!(
                    work <= per_field_max * fields + 64,
                    "{work} steps for {fields} fields"
                );
            }
        }
    }

    #[test]
    fn missing_attribute_names_element_and_attribute() {
        let error = venue_with(
            r#"<field number="44" name="Price" type="PRICE"/>"#,
            r#"<field number="44" name="Price"/>"#,
        )
        .expect_err("type is needed");
        assert!(
            matches!(&error, DictionaryError::MissingAttribute { element, attribute: "type", .. }
            if element == "field Price"),
            "{error}"
        );
        assert!(error.to_string().contains("line "), "{error}");
    }

    #[test]
    fn undefined_field_reference_is_named() {
        let error = venue_with(
            r#"<field name="Account" required="N"/>"#,
            r#"<field name="Acount" required="N"/>"#,
        )
        .expect_err("misspelled field");
        assert!(
            matches!(&error, DictionaryError::UndefinedField { name, context, .. }
            if name == "Acount" && context == "message NewOrderSingle"),
            "{error}"
        );
    }

    #[test]
    fn unknown_and_data_types_are_refused() {
        let error = venue_with(r#"type="PRICE""#, r#"type="PRICEY""#).expect_err("unknown type");
        assert!(
            matches!(&error, DictionaryError::UnknownFieldType { type_name, .. } if type_name == "PRICEY")
        );
        let error = venue_with(r#"name="Text" type="STRING""#, r#"name="Text" type="DATA""#)
            .expect_err("data");
        assert!(matches!(&error, DictionaryError::DataField { field, .. } if field == "Text"));
    }

    #[test]
    fn duplicates_are_refused() {
        let error = venue_with(r#"number="6" name="AvgPx""#, r#"number="1" name="AvgPx""#)
            .expect_err("dup number");
        assert!(
            matches!(&error, DictionaryError::DuplicateField { what: "number", value, .. } if value == "1")
        );
        let error = venue_with(r#"msgtype="j""#, r#"msgtype="D""#).expect_err("dup msgtype");
        assert!(matches!(
            &error,
            DictionaryError::DuplicateMessage {
                what: "msgtype",
                ..
            }
        ));
        let error = venue_with(
            r#"<field name="TestReqID" required="Y"/>"#,
            r#"<field name="TestReqID" required="Y"/><field name="TestReqID" required="N"/>"#,
        )
        .expect_err("dup member");
        assert!(
            matches!(&error, DictionaryError::DuplicateMember { field, .. } if field == "TestReqID")
        );
        let error = venue_with(
            r#"<field name="TestReqID" required="Y"/>"#,
            r#"<field name="TestReqID" required="Y"/><field name="SendingTime" required="N"/>"#,
        )
        .expect_err("header field in a body");
        assert!(
            matches!(&error, DictionaryError::DuplicateMember { field, .. } if field == "SendingTime")
        );
    }

    #[test]
    fn enum_value_must_fit_its_type() {
        let error = venue_with(
            r#"<value enum="1" description="BUY"/>"#,
            r#"<value enum="10" description="BUY"/>"#,
        )
        .expect_err("two characters in a CHAR");
        assert!(
            matches!(&error, DictionaryError::ValueFormat { field, value, .. } if field == "Side" && value == "10")
        );
    }

    #[test]
    fn bad_required_flag_and_msgcat_are_named() {
        let error = venue_with(
            r#"<field name="TestReqID" required="Y"/>"#,
            r#"<field name="TestReqID" required="yes"/>"#,
        )
        .expect_err("flag");
        assert!(
            matches!(&error, DictionaryError::InvalidAttribute { attribute: "required", value, .. } if value == "yes")
        );
        let error = venue_with(r#"msgcat="admin""#, r#"msgcat="session""#).expect_err("category");
        assert!(matches!(
            &error,
            DictionaryError::InvalidAttribute {
                attribute: "msgcat",
                ..
            }
        ));
    }

    #[test]
    fn component_cycle_is_refused() {
        let xml = COMPONENT_XML.replace(
            r#"<component name="Issuer"><field name="Issuer" required="Y"/></component>"#,
            r#"<component name="Issuer"><component name="Instrument" required="Y"/></component>"#,
        );
        let error = Dictionary::from_xml(&xml).expect_err("cycle");
        assert!(
            matches!(&error, DictionaryError::ComponentCycle { .. }),
            "{error}"
        );
    }

    #[test]
    fn malformed_xml_and_wrong_root_are_errors() {
        assert!(matches!(
            Dictionary::from_xml("<fix"),
            Err(DictionaryError::Xml(_))
        ));
        assert!(matches!(
            Dictionary::from_xml("<quickfix/>"),
            Err(DictionaryError::UnexpectedRoot { found, .. }) if found == "quickfix"
        ));
        assert!(matches!(
            Dictionary::from_xml(
                r#"<fix type="FIX" major="4" minor="4"><header/><trailer/><messages/></fix>"#
            ),
            Err(DictionaryError::MissingElement {
                element: "fields",
                ..
            })
        ));
    }
}
