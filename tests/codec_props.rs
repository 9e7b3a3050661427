//! Properties of the codec and the dictionary together, on generated input.
//!
//! The codec and the validator are the only code that reads a counterparty's bytes, so they are
//! held to three promises here: every message the venue defines survives an encode/frame/parse
//! round trip byte for byte and validates; no input, however broken, panics them or stops the
//! framing loop from making progress; and the inputs known to crash other FIX decoders get the
//! Reject (or garbled verdict) the FIX session rules call for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use baton::fix::codec::{Decoder, Encoder, FieldProblem, Frame, Garbled, Message, checksum};
use baton::fix::dictionary::{Dictionary, FieldDef, FieldRef, FieldType, MessageDef};
use baton::fix::tags::SessionRejectReason;
use baton::fix::time::Timestamp;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// Body size limit for the decoders in these tests: far above any generated message, so only
/// the oversized-BodyLength cases hit it.
const BODY_LENGTH_MAX: usize = 8192;

/// Last millisecond of 2553, the last full year a `Timestamp` (u64 nanoseconds) holds.
const TIMESTAMP_MILLIS_MAX: u64 = 18_429_292_799_999;

/// Largest value `codec::parse_uint` reads (19 digits), which bounds SeqNum, Length and the
/// other unsigned types.
const UINT_MAX_19_DIGITS: u64 = 9_999_999_999_999_999_999;

/// Tags the encoder writes itself.
const FRAMING_TAGS: [u32; 4] = [8, 9, 35, 10];

// ----- generators -----

/// A printable byte as the venue's STRING check defines it (no control characters); bytes from
/// 0x80 are included because counterparties send UTF-8 in free text.
fn printable_byte() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0x20u8..=0x7e, 1 => 0x80u8..=0xff]
}

fn digits(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// `YYYYMMDD` of a real date.
fn date() -> impl Strategy<Value = Vec<u8>> {
    (1900u32..=2100, 1u32..=12, 1u32..=28)
        .prop_map(|(y, m, d)| format!("{y:04}{m:02}{d:02}").into_bytes())
}

/// A well-formed value for a field without a value list, by type.
fn typed_value(field_type: FieldType) -> BoxedStrategy<Vec<u8>> {
    match field_type {
        FieldType::Int => any::<i64>()
            .prop_map(|v| v.to_string().into_bytes())
            .boxed(),
        FieldType::Length | FieldType::SeqNum | FieldType::NumInGroup | FieldType::TagNum => {
            prop_oneof![0u64..=1_000_000, 0u64..=UINT_MAX_19_DIGITS]
                .prop_map(digits)
                .boxed()
        }
        FieldType::DayOfMonth => (1u64..=31).prop_map(digits).boxed(),
        FieldType::Float
        | FieldType::Qty
        | FieldType::Price
        | FieldType::PriceOffset
        | FieldType::Amt
        | FieldType::Percentage => (
            any::<bool>(),
            0u64..=999_999_999_999,
            proptest::option::of((0usize..=8, any::<u32>())),
        )
            .prop_map(|(negative, whole, fraction)| {
                let mut text = String::new();
                if negative {
                    text.push('-');
                }
                text.push_str(&whole.to_string());
                if let Some((places, bits)) = fraction {
                    text.push('.');
                    let fraction_digits = format!("{bits:010}");
                    text.push_str(&fraction_digits[..places]);
                }
                text.into_bytes()
            })
            .boxed(),
        FieldType::Char => (0x20u8..=0x7e).prop_map(|b| vec![b]).boxed(),
        FieldType::Boolean => prop_oneof![Just(b"Y".to_vec()), Just(b"N".to_vec())].boxed(),
        FieldType::UtcTimestamp => (0u64..=TIMESTAMP_MILLIS_MAX)
            .prop_map(|millis| {
                let mut out = Vec::new();
                Timestamp::from_millis(millis).write_fix(&mut out);
                out
            })
            .boxed(),
        FieldType::UtcTimeOnly => (
            0u32..24,
            0u32..60,
            0u32..=60,
            proptest::option::of(0u32..1000),
        )
            .prop_map(|(h, m, s, millis)| {
                let mut text = format!("{h:02}:{m:02}:{s:02}");
                if let Some(millis) = millis {
                    text.push_str(&format!(".{millis:03}"));
                }
                text.into_bytes()
            })
            .boxed(),
        FieldType::UtcDateOnly | FieldType::LocalMktDate => date().boxed(),
        FieldType::MonthYear => (1900u32..=2100, 1u32..=12)
            .prop_map(|(y, m)| format!("{y:04}{m:02}").into_bytes())
            .boxed(),
        FieldType::MultipleValueString | FieldType::MultipleStringValue => {
            prop::collection::vec(prop::collection::vec(0x21u8..=0x7e, 1..6), 1..4)
                .prop_map(|items| items.join(&b' '))
                .boxed()
        }
        FieldType::MultipleCharValue => prop::collection::vec(0x21u8..=0x7e, 1..4)
            .prop_map(|items| {
                items
                    .iter()
                    .map(|&b| vec![b])
                    .collect::<Vec<_>>()
                    .join(&b' ')
            })
            .boxed(),
        // STRING and the types checked as strings.
        _ => prop::collection::vec(printable_byte(), 1..24).boxed(),
    }
}

/// A value the venue accepts for `field`: one of its listed values if it has a list.
fn field_value(field: &FieldDef) -> BoxedStrategy<Vec<u8>> {
    let listed: Vec<Vec<u8>> = field
        .values()
        .iter()
        .map(|v| v.value().as_bytes().to_vec())
        .collect();
    if listed.is_empty() {
        typed_value(field.field_type())
    } else if field.field_type().is_multiple_value() {
        let count = listed.len();
        proptest::sample::subsequence(listed, 1..=count)
            .prop_map(|items| items.join(&b' '))
            .boxed()
    } else {
        proptest::sample::select(listed).boxed()
    }
}

/// A tag and the value to encode for it.
type TaggedValue = (u32, Vec<u8>);

/// One field, or a whole repeating group (its count and instances) that must stay together.
type Chunk = Vec<TaggedValue>;

/// Every required field and a random subset of the optional ones, in random order; a
/// repeating group of `message` (at its top level) moves as one block.
fn fields_of(
    dictionary: &'static Dictionary,
    refs: &[FieldRef],
    message: Option<&'static MessageDef>,
) -> BoxedStrategy<Vec<(u32, Vec<u8>)>> {
    let per_field: Vec<BoxedStrategy<Option<Chunk>>> = refs
        .iter()
        .filter(|r| !FRAMING_TAGS.contains(&r.tag()))
        .map(|r| member(dictionary, message, None, r))
        .collect();
    per_field
        .prop_map(|chosen| chosen.into_iter().flatten().collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(|chunks| chunks.into_iter().flatten().collect())
        .boxed()
}

/// A field of `message` at the top level (`parent` None) or inside group `parent`: a value, or
/// a whole nested group if the field is a group's count; absent sometimes when optional.
fn member(
    dictionary: &'static Dictionary,
    message: Option<&'static MessageDef>,
    parent: Option<usize>,
    r: &FieldRef,
) -> BoxedStrategy<Option<Chunk>> {
    let tag = r.tag();
    let group = message.and_then(|m| {
        m.groups()
            .iter()
            .position(|g| g.count_tag() == tag && g.parent() == parent)
            .map(|g| (m, g))
    });
    let chunk = match group {
        Some((message, g)) => group_block(dictionary, message, g),
        None => {
            let field = dictionary.field(tag).expect("message fields are defined");
            field_value(field).prop_map(move |v| vec![(tag, v)]).boxed()
        }
    };
    if r.is_required() {
        chunk.prop_map(Some).boxed()
    } else {
        proptest::option::of(chunk).boxed()
    }
}

/// A repeating group: its NumInGroup, then 0 to 3 instances, each with its members in the
/// dictionary's order (required ones always, optional ones sometimes, nested groups included).
fn group_block(
    dictionary: &'static Dictionary,
    message: &'static MessageDef,
    g: usize,
) -> BoxedStrategy<Chunk> {
    let group = &message.groups()[g];
    let count_tag = group.count_tag();
    let instance: Vec<BoxedStrategy<Option<Chunk>>> = group
        .members()
        .iter()
        .map(|r| member(dictionary, Some(message), Some(g), r))
        .collect();
    let instance = instance
        .prop_map(|chosen| chosen.into_iter().flatten().flatten().collect::<Chunk>())
        .boxed();
    prop::collection::vec(instance, 0..=3)
        .prop_map(move |instances| {
            let mut block = vec![(count_tag, digits(instances.len() as u64))];
            block.extend(instances.into_iter().flatten());
            block
        })
        .boxed()
}

/// A valid message of one type: header fields then body fields, each in random order.
fn message_fields(
    dictionary: &'static Dictionary,
    message: &'static MessageDef,
) -> BoxedStrategy<Vec<(u32, Vec<u8>)>> {
    (
        fields_of(dictionary, dictionary.header(), None),
        fields_of(dictionary, message.fields(), Some(message)),
    )
        .prop_map(|(mut header, body)| {
            header.extend(body);
            header
        })
        .boxed()
}

/// A valid message of any type, encoded.
fn any_valid_frame() -> BoxedStrategy<Vec<u8>> {
    let dictionary = Dictionary::venue();
    let per_type: Vec<BoxedStrategy<Vec<u8>>> = dictionary
        .messages()
        .map(|message| {
            let msg_type = message.msg_type().as_bytes().to_vec();
            message_fields(dictionary, message)
                .prop_map(move |fields| encode(&msg_type, &fields))
                .boxed()
        })
        .collect();
    proptest::strategy::Union::new(per_type).boxed()
}

fn encode(msg_type: &[u8], fields: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut encoder = Encoder::new("FIX.4.4");
    encoder.start(msg_type);
    for (tag, value) in fields {
        encoder.bytes(*tag, value);
    }
    encoder.finish().to_vec()
}

/// Frames an arbitrary body with a correct BodyLength and CheckSum, so the bytes reach
/// `Message::parse` and `validate` however broken the fields are.
fn frame_body(body: &[u8]) -> Vec<u8> {
    let mut out = format!("8=FIX.4.4\x019={}\x01", body.len()).into_bytes();
    out.extend_from_slice(body);
    let sum = checksum(&out);
    out.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
    out
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    /// Overwrite the byte at this position (modulo the length).
    Replace(usize, u8),
    /// Insert a byte before this position.
    Insert(usize, u8),
    /// Remove the byte at this position.
    Delete(usize),
    /// Cut everything from this position on.
    Truncate(usize),
}

/// Bytes that make mutations land on FIX structure rather than only on noise.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        1 => Just(0x01u8),
        1 => Just(b'='),
        1 => Just(b'-'),
        1 => Just(b'.'),
        1 => b'0'..=b'9',
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), interesting_byte()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        2 => (any::<usize>(), interesting_byte()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for mutation in mutations {
        let len = bytes.len();
        match *mutation {
            Mutation::Replace(at, b) if len > 0 => bytes[at % len] = b,
            Mutation::Insert(at, b) => bytes.insert(at % (len + 1), b),
            Mutation::Delete(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
}

// ----- the framing loop -----

/// Feeds `bytes` through the decoder as a connection would, consuming each verdict, and checks
/// that every step makes progress, that "incomplete" never holds more than one frame's worth
/// of bytes, and that parsing and validating every complete frame returns. Returns the
/// complete frames seen.
fn drain(decoder: &Decoder, bytes: &[u8]) -> usize {
    let dictionary = Dictionary::venue();
    let mut rest = bytes;
    let mut frames = 0;
    for _ in 0..=bytes.len() {
        match decoder.frame(rest) {
            Frame::Complete(len) => {
                assert!(
                    len >= 1 && len <= rest.len(),
                    "Complete({len}) with {} bytes",
                    rest.len()
                );
                if let Ok(message) = Message::parse(&rest[..len]) {
                    let _ = dictionary.validate(&message);
                }
                frames += 1;
                rest = &rest[len..];
            }
            Frame::Garbled { skip, .. } => {
                assert!(
                    skip >= 1 && skip <= rest.len(),
                    "Garbled skip {skip} with {} bytes",
                    rest.len()
                );
                rest = &rest[skip..];
            }
            Frame::Incomplete => {
                assert!(
                    rest.len() < decoder.frame_len_max(),
                    "Incomplete while holding {} bytes, more than one frame",
                    rest.len()
                );
                return frames;
            }
        }
    }
    panic!("the framing loop did not finish within one step per byte");
}

// ----- properties -----

/// Config for the hand-driven runners: they have no source file to persist failures next to,
/// and a failure panics with the message type instead.
fn runner_config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        ..Config::with_cases(cases)
    }
}

#[test]
fn every_venue_message_round_trips_and_validates() {
    let dictionary = Dictionary::venue();
    let decoder = Decoder::new(BODY_LENGTH_MAX);
    for message in dictionary.messages() {
        let msg_type = message.msg_type().as_bytes().to_vec();
        let mut runner = TestRunner::new(runner_config(128));
        let result = runner.run(&message_fields(dictionary, message), |fields| {
            let bytes = encode(&msg_type, &fields);
            prop_assert_eq!(decoder.frame(&bytes), Frame::Complete(bytes.len()));
            let parsed =
                Message::parse(&bytes).map_err(|g| TestCaseError::fail(format!("{g:?}")))?;
            prop_assert_eq!(parsed.problem(), None);
            prop_assert_eq!(parsed.msg_type(), &msg_type[..]);
            let mut expected: Vec<(u32, &[u8])> = vec![(35, &msg_type[..])];
            expected.extend(fields.iter().map(|(tag, value)| (*tag, &value[..])));
            let body: Vec<(u32, &[u8])> = parsed
                .fields()
                .filter(|(tag, _)| !matches!(tag, 8..=10))
                .collect();
            prop_assert_eq!(body, expected);
            // `get` finds a tag's first occurrence; group members repeat.
            for (i, (tag, value)) in fields.iter().enumerate() {
                if fields[..i].iter().all(|(earlier, _)| earlier != tag) {
                    prop_assert_eq!(parsed.get(*tag), Some(&value[..]));
                }
            }
            prop_assert_eq!(dictionary.validate(&parsed), Ok(()));
            Ok(())
        });
        if let Err(error) = result {
            panic!(
                "{} (MsgType {}): {error}",
                message.name(),
                message.msg_type()
            );
        }
    }
}

proptest! {
    #![proptest_config(Config::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_always_progress(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        drain(&Decoder::new(BODY_LENGTH_MAX), &bytes);
    }

    #[test]
    fn fix_shaped_noise_never_panics_and_always_progresses(
        pieces in prop::collection::vec(
            prop_oneof![
                Just(b"8=FIX.4.4\x01".to_vec()),
                Just(b"9=".to_vec()),
                Just(b"35=D\x01".to_vec()),
                Just(b"10=".to_vec()),
                Just(b"\x01".to_vec()),
                Just(b"=".to_vec()),
                (0u32..100_000).prop_map(|n| n.to_string().into_bytes()),
                prop::collection::vec(any::<u8>(), 0..8),
            ],
            0..64,
        )
    ) {
        drain(&Decoder::new(BODY_LENGTH_MAX), &pieces.concat());
    }

    #[test]
    fn valid_frames_survive_any_neighbours(
        frames in prop::collection::vec(any_valid_frame(), 1..5),
        noise in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..32), 5),
    ) {
        // Back to back, every frame comes through. With junk in between, a frame directly after
        // junk can be skipped with it (a frame start is only recognised after an SOH), so the
        // noisy stream is only held to the loop's own promises.
        let clean = frames.concat();
        prop_assert_eq!(drain(&Decoder::new(BODY_LENGTH_MAX), &clean), frames.len());
        let mut noisy = Vec::new();
        for (frame, junk) in frames.iter().zip(&noise) {
            noisy.extend_from_slice(junk);
            noisy.extend_from_slice(frame);
        }
        drain(&Decoder::new(BODY_LENGTH_MAX), &noisy);
    }

    #[test]
    fn mutated_frames_never_panic_and_always_progress(
        frames in prop::collection::vec(any_valid_frame(), 1..4),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut bytes = frames.concat();
        apply(&mut bytes, &mutations);
        drain(&Decoder::new(BODY_LENGTH_MAX), &bytes);
        // Small limits too, so BodyTooLong is exercised on real frames.
        drain(&Decoder::new(16), &bytes);
    }

    /// Any sequence of fields drawn from the Parties group, its nested group, ordinary body
    /// and header fields and unknown tags (repeats, wrong counts, members out of place, groups
    /// left open) gets a verdict with a bounded number of validation steps per field: the
    /// walk is linear whatever the peer sends, and never panics.
    #[test]
    fn validation_of_any_field_sequence_is_linear(
        fields in prop::collection::vec(
            (
                prop::sample::select(vec![
                    453u32, 448, 447, 452, 2376, 802, 523, 803, 11, 55, 54, 38, 40, 58, 49, 34,
                    5_001, 5_002, 9_999, 77_777,
                ]),
                prop::sample::select(vec!["0", "1", "2", "3", "P", "12", "x"]),
            ),
            0..600,
        )
    ) {
        let mut body = b"35=D\x0149=CLIENT\x0156=BATON\x0134=2\x0152=20260302-09:30:00.000\x01".to_vec();
        for (tag, value) in &fields {
            body.extend_from_slice(format!("{tag}={value}\x01").as_bytes());
        }
        let bytes = frame_body(&body);
        let message = Message::parse(&bytes).expect("framed");
        let (verdict, work) = Dictionary::venue().validate_counting_work(&message);
        let count = message.fields().count() as u64;
        // One step per field, a few per group closed, up to the unknown-tag fallback per
        // unknown tag, one per required field: bounded per field.
        let per_field = baton::constants::UNKNOWN_TAGS_TRACKED_MAX as u64 + 4;
        prop_assert!(work <= per_field * count + 64, "{} steps for {} fields ({:?})", work, count, verdict);
    }

    #[test]
    fn reframed_mutations_reach_the_validator_without_panic(
        frame in any_valid_frame(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        // Cut the valid frame down to its body, break the body, and frame it again with a
        // correct BodyLength and CheckSum: the broken fields now get past the decoder.
        let body_start = frame.windows(4).position(|w| w == b"\x0135=").map_or(0, |p| p + 1);
        let mut body = frame[body_start..frame.len() - 7].to_vec();
        apply(&mut body, &mutations);
        let bytes = frame_body(&body);
        prop_assert_eq!(Decoder::new(BODY_LENGTH_MAX).frame(&bytes), Frame::Complete(bytes.len()));
        if let Ok(message) = Message::parse(&bytes) {
            // Whatever the verdict, it must be one the session can send.
            if let Err(problem) = Dictionary::venue().validate(&message) {
                prop_assert!(problem.tag == 0 || message.fields().any(|(tag, _)| tag == problem.tag)
                    || problem.reason == SessionRejectReason::RequiredTagMissing
                    || problem.reason == SessionRejectReason::TagAppearsMoreThanOnce
                    || problem.reason == SessionRejectReason::TagSpecifiedWithoutValue,
                    "RefTagID {} of {:?} is not in the message", problem.tag, problem.reason);
            }
        }
    }
}

// ----- known crash inputs of other FIX decoders -----

/// What the gateway does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Valid: processed.
    Valid,
    /// Session-level Reject with this reason and RefTagID.
    Reject(SessionRejectReason, u32),
    /// Ignored as garbled.
    Garbled(Garbled),
    /// Waiting for more bytes.
    Incomplete,
}

fn verdict(bytes: &[u8]) -> Verdict {
    match Decoder::new(BODY_LENGTH_MAX).frame(bytes) {
        Frame::Incomplete => Verdict::Incomplete,
        Frame::Garbled { reason, .. } => Verdict::Garbled(reason),
        Frame::Complete(len) => {
            assert_eq!(len, bytes.len());
            match Message::parse(bytes) {
                Err(reason) => Verdict::Garbled(reason),
                Ok(message) => match Dictionary::venue().validate(&message) {
                    Ok(()) => Verdict::Valid,
                    Err(FieldProblem { reason, tag }) => Verdict::Reject(reason, tag),
                },
            }
        }
    }
}

/// `|` stands for SOH.
fn wire(text: &str) -> Vec<u8> {
    text.replace('|', "\x01").into_bytes()
}

/// A NewOrderSingle with a standard header, `extra` inserted where a field would go, framed
/// correctly.
fn order_with(header_extra: &str, body_extra: &str) -> Vec<u8> {
    frame_body(&wire(&format!(
        "35=D|49=CLIENT|56=BATON|34=2|52=20260302-09:30:00.000|{header_extra}11=ORD-1|55=ACME|54=1|60=20260302-09:30:00.000|38=100|40=2|44=10.5|{body_extra}"
    )))
}

#[test]
fn baseline_order_is_valid() {
    assert_eq!(verdict(&order_with("", "")), Verdict::Valid);
}

#[test]
fn classic_crash_inputs_get_the_right_verdict() {
    use SessionRejectReason as R;
    let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
        (
            "data length with letters",
            order_with("", "95=zz|"),
            Verdict::Reject(R::InvalidTagNumber, 95),
        ),
        (
            "negative sequence number",
            order_with("", "").replace_once(b"34=2", b"34=-1"),
            Verdict::Reject(R::IncorrectDataFormat, 34),
        ),
        (
            "sequence number beyond u64",
            order_with("", "").replace_once(b"34=2", b"34=18446744073709551616"),
            Verdict::Reject(R::IncorrectDataFormat, 34),
        ),
        (
            "impossible SendingTime",
            order_with("", "").replace_once(b"52=20260302-09:30:00.000", b"52=99999999-99:99:99"),
            Verdict::Reject(R::IncorrectDataFormat, 52),
        ),
        (
            "SendingTime past what a Timestamp holds",
            order_with("", "").replace_once(b"52=20260302-09:30:00.000", b"52=99991231-23:59:59"),
            Verdict::Reject(R::IncorrectDataFormat, 52),
        ),
        (
            "SendingTime with ten fraction digits",
            order_with("", "").replace_once(
                b"52=20260302-09:30:00.000",
                b"52=20260302-09:30:00.0000000000",
            ),
            Verdict::Reject(R::IncorrectDataFormat, 52),
        ),
        (
            "quantity with exponent",
            order_with("", "").replace_once(b"38=100", b"38=1e400"),
            Verdict::Reject(R::IncorrectDataFormat, 38),
        ),
        (
            "price NaN",
            order_with("", "").replace_once(b"44=10.5", b"44=NaN"),
            Verdict::Reject(R::IncorrectDataFormat, 44),
        ),
        (
            "boolean maybe",
            order_with("43=maybe|", ""),
            Verdict::Reject(R::IncorrectDataFormat, 43),
        ),
        (
            "side out of range",
            order_with("", "").replace_once(b"54=1", b"54=7"),
            Verdict::Reject(R::ValueIsIncorrect, 54),
        ),
        (
            "empty value",
            order_with("", "59=|"),
            Verdict::Reject(R::TagSpecifiedWithoutValue, 59),
        ),
        (
            "repeated tag",
            order_with("", "55=OTHER|"),
            Verdict::Reject(R::TagAppearsMoreThanOnce, 55),
        ),
        (
            "empty tag",
            order_with("", "=5|"),
            Verdict::Reject(R::InvalidTagNumber, 0),
        ),
        (
            "negative tag",
            order_with("", "-5=1|"),
            Verdict::Reject(R::InvalidTagNumber, 0),
        ),
        (
            "tag zero",
            order_with("", "0=1|"),
            Verdict::Reject(R::InvalidTagNumber, 0),
        ),
        (
            "tag beyond u32",
            order_with("", "4294967296=1|"),
            Verdict::Reject(R::InvalidTagNumber, 0),
        ),
        (
            "large undefined tag",
            order_with("", "999999999=1|"),
            Verdict::Reject(R::InvalidTagNumber, 999_999_999),
        ),
        (
            "field without equals sign",
            order_with("", "58|"),
            Verdict::Garbled(Garbled::FieldWithoutEquals),
        ),
        (
            "control byte in text",
            order_with("", "58=a\x07b|"),
            Verdict::Reject(R::IncorrectDataFormat, 58),
        ),
        (
            "HeartBtInt letters in Logon",
            frame_body(&wire(
                "35=A|49=CLIENT|56=BATON|34=1|52=20260302-09:30:00.000|98=0|108=abc|",
            )),
            Verdict::Reject(R::IncorrectDataFormat, 108),
        ),
        (
            "unknown MsgType",
            frame_body(&wire(
                "35=ZZ|49=CLIENT|56=BATON|34=1|52=20260302-09:30:00.000|",
            )),
            Verdict::Reject(R::InvalidMsgType, 35),
        ),
        (
            "empty MsgType",
            frame_body(&wire("35=|49=CLIENT|")),
            Verdict::Garbled(Garbled::BadHeader),
        ),
        (
            "empty body",
            frame_body(b""),
            Verdict::Garbled(Garbled::BadHeader),
        ),
        (
            "body of only SOH",
            frame_body(b"\x01\x01\x01"),
            Verdict::Garbled(Garbled::BadHeader),
        ),
        (
            "huge BodyLength",
            wire("8=FIX.4.4|9=999999999|35=D|"),
            Verdict::Garbled(Garbled::BodyTooLong),
        ),
        (
            "BodyLength beyond digits limit",
            wire("8=FIX.4.4|9=99999999999999999999|35=D|"),
            Verdict::Garbled(Garbled::BadBodyLength),
        ),
        (
            "empty BodyLength",
            wire("8=FIX.4.4|9=|35=D|10=000|"),
            Verdict::Garbled(Garbled::BadBodyLength),
        ),
        (
            "negative BodyLength",
            wire("8=FIX.4.4|9=-5|35=D|10=000|"),
            Verdict::Garbled(Garbled::BadBodyLength),
        ),
        (
            "CheckSum letters",
            {
                let mut bytes = order_with("", "");
                let len = bytes.len();
                bytes[len - 4..len - 1].copy_from_slice(b"abc");
                bytes
            },
            Verdict::Garbled(Garbled::BadTrailer),
        ),
        (
            "half a frame",
            wire("8=FIX.4.4|9=50|35=D|49=CL"),
            Verdict::Incomplete,
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(
            verdict(&bytes),
            expected,
            "{name}: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        // And the same bytes inside a stream never panic the loop.
        drain(&Decoder::new(BODY_LENGTH_MAX), &bytes);
    }
}

/// `replace_once` on byte strings, for readable crash cases.
trait ReplaceOnce {
    fn replace_once(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceOnce for Vec<u8> {
    fn replace_once(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("the test's anchor is in the message");
        let mut out = self[..at].to_vec();
        out.extend_from_slice(to);
        out.extend_from_slice(&self[at + from.len()..]);
        // The edit changes the body: frame it again so only the field is wrong.
        let body_start = out
            .windows(4)
            .position(|w| w == b"\x0135=")
            .map_or(0, |p| p + 1);
        frame_body(&out[body_start..out.len() - 7])
    }
}

// ----- validation allocates nothing -----

/// Counts allocations on threads that ask for it, so a test can prove a code path allocates
/// nothing. Delegates every call to the system allocator unchanged.
struct CountingAllocator;

thread_local! {
    /// Whether this thread's allocations are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocations counted on this thread.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: allocations during thread teardown must not panic inside the allocator.
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments, so the allocator
// contract holds exactly as it does for `System`; the counting touches only const-initialised
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded unchanged; see the impl's comment.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made by `f` on this thread.
fn allocations_during(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn validate_does_not_allocate() {
    // The counter itself works, so a zero below means something.
    assert!(allocations_during(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(8)))) > 0);
    let dictionary = Dictionary::venue();
    let mut messages = vec![
        order_with("", ""),
        order_with("", "95=zz|"),
        order_with("", "108=30|"),
        // The Parties group with its nested sub-IDs: a valid message with groups walks them
        // without allocating either.
        order_with(
            "",
            "453=2|448=1001|447=P|452=3|802=1|523=DESK7|803=4|448=TRDR1|447=D|452=12|2376=24|",
        ),
        order_with("", "").replace_once(b"54=1", b"54=7"),
        order_with("", "").replace_once(b"38=100", b"38=1e5"),
        frame_body(&wire(
            "35=A|49=CLIENT|56=BATON|34=1|52=20260302-09:30:00.000|98=0|",
        )),
        frame_body(&wire(
            "35=ZZ|49=CLIENT|56=BATON|34=1|52=20260302-09:30:00.000|",
        )),
    ];
    let mut runner = TestRunner::new(runner_config(1));
    for _ in 0..64 {
        let tree = any_valid_frame().new_tree(&mut runner).expect("generator");
        messages.push(tree.current());
    }
    for bytes in &messages {
        let message = Message::parse(bytes).expect("framed");
        let mut verdict = Ok(());
        let count = allocations_during(|| verdict = dictionary.validate(&message));
        if bytes == &messages[3] {
            assert!(verdict.is_ok(), "the Parties order is valid: {verdict:?}");
        }
        assert_eq!(count, 0, "validate allocated for {message:?} ({verdict:?})");
    }
}
