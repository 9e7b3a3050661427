//! The codec against arbitrary frames and arbitrary bytes: round trips of every kind, any split
//! of the stream, no panic and no buffering beyond the limit whatever a peer sends.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::engine::{
    CancelOrder, CancelReject, ClOrdId, CxlRejReason, CxlRejResponseTo, ExecType, ExecutionReport,
    NewOrder, OrdRejReason, OrdStatus, OrdType, Parties, Party, PartyId, Price, Qty, RejectText,
    ReplaceOrder, Report, Request, Side, Symbol, TimeInForce,
};
use crate::fix::time::Timestamp;

// ----- Strategies -----------------------------------------------------------------------------

fn cl_ord_id() -> impl Strategy<Value = ClOrdId> {
    "[ -~]{1,32}".prop_map(|s| ClOrdId::try_from_bytes(s.as_bytes()).unwrap())
}

fn symbol() -> impl Strategy<Value = Symbol> {
    "[ -~]{1,16}".prop_map(|s| Symbol::try_from_bytes(s.as_bytes()).unwrap())
}

fn side() -> impl Strategy<Value = Side> {
    prop::sample::select(vec![Side::Buy, Side::Sell])
}

fn ord_type() -> impl Strategy<Value = OrdType> {
    prop::sample::select(vec![OrdType::Market, OrdType::Limit])
}

fn time_in_force() -> impl Strategy<Value = TimeInForce> {
    prop::sample::select(vec![TimeInForce::Day, TimeInForce::Ioc, TimeInForce::Fok])
}

fn price() -> impl Strategy<Value = Price> {
    any::<i64>().prop_map(Price)
}

fn qty() -> impl Strategy<Value = Qty> {
    any::<u64>().prop_map(Qty)
}

fn time() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp)
}

fn reject_text() -> impl Strategy<Value = RejectText> {
    prop::sample::select(vec![
        RejectText::UnknownSymbol,
        RejectText::DuplicateClOrdId,
        RejectText::ClOrdIdCapacity,
        RejectText::OrderCapacity,
        RejectText::LevelCapacity,
        RejectText::MarketOrderWithPrice,
        RejectText::LimitOrderWithoutPrice,
        RejectText::PriceOffTick,
        RejectText::QtyZero,
        RejectText::QtyOffLot,
        RejectText::QtyTooLarge,
        RejectText::UnknownOrder,
        RejectText::OrderMismatch,
        RejectText::NotLatestClOrdId,
        RejectText::OrderDone,
        RejectText::OrdTypeChange,
        RejectText::QtyNotAboveFilled,
    ])
}

/// Up to the cap of parties, with any identifier, printable source, role and qualifier.
fn parties() -> impl Strategy<Value = Parties> {
    let party = (
        "[ -~]{1,32}",
        0x21..=0x7eu8,
        any::<u16>(),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(|(id, source, role, role_qualifier)| {
            Party::try_from_wire(
                PartyId::try_from_bytes(id.as_bytes()).unwrap(),
                source,
                role,
                role_qualifier,
            )
            .unwrap()
        });
    vec(party, 0..=crate::constants::PARTIES_MAX)
        .prop_map(|list| Parties::from_slice(&list).unwrap())
}

fn request() -> impl Strategy<Value = Request> {
    let new = (
        cl_ord_id(),
        symbol(),
        side(),
        ord_type(),
        proptest::option::of(price()),
        qty(),
        time_in_force(),
        parties(),
    )
        .prop_map(
            |(cl_ord_id, symbol, side, ord_type, price, qty, time_in_force, parties)| {
                Request::New(NewOrder {
                    cl_ord_id,
                    symbol,
                    side,
                    ord_type,
                    price,
                    qty,
                    time_in_force,
                    parties,
                })
            },
        );
    let cancel = (cl_ord_id(), cl_ord_id(), symbol(), side(), parties()).prop_map(
        |(cl_ord_id, orig_cl_ord_id, symbol, side, parties)| {
            Request::Cancel(CancelOrder {
                cl_ord_id,
                orig_cl_ord_id,
                symbol,
                side,
                parties,
            })
        },
    );
    let replace = (
        cl_ord_id(),
        cl_ord_id(),
        symbol(),
        side(),
        ord_type(),
        proptest::option::of(price()),
        qty(),
        parties(),
    )
        .prop_map(
            |(cl_ord_id, orig_cl_ord_id, symbol, side, ord_type, price, qty, parties)| {
                Request::Replace(ReplaceOrder {
                    cl_ord_id,
                    orig_cl_ord_id,
                    symbol,
                    side,
                    ord_type,
                    price,
                    qty,
                    parties,
                })
            },
        );
    prop_oneof![new, cancel, replace]
}

fn input() -> impl Strategy<Value = Input> {
    (any::<u64>(), time(), any::<u32>(), request()).prop_map(|(seq, time, session, request)| {
        Input {
            seq,
            time,
            session,
            request,
        }
    })
}

fn execution_report() -> impl Strategy<Value = Report> {
    let ids = (
        any::<u64>(),
        cl_ord_id(),
        proptest::option::of(cl_ord_id()),
        prop::sample::select(vec![
            ExecType::New,
            ExecType::Canceled,
            ExecType::Replaced,
            ExecType::Rejected,
            ExecType::Trade,
        ]),
        prop::sample::select(vec![
            OrdStatus::New,
            OrdStatus::PartiallyFilled,
            OrdStatus::Filled,
            OrdStatus::Canceled,
            OrdStatus::Rejected,
        ]),
        symbol(),
        side(),
        ord_type(),
    );
    let quantities = (
        proptest::option::of(price()),
        time_in_force(),
        qty(),
        qty(),
        proptest::option::of(price()),
        qty(),
        qty(),
        price(),
    );
    let rest = (
        time(),
        proptest::option::of(prop::sample::select(vec![
            OrdRejReason::BrokerOption,
            OrdRejReason::UnknownSymbol,
            OrdRejReason::DuplicateOrder,
            OrdRejReason::IncorrectQuantity,
            OrdRejReason::Other,
        ])),
        proptest::option::of(reject_text()),
        parties(),
    );
    (ids, quantities, rest).prop_map(
        |(
            (order_id, cl_ord_id, orig_cl_ord_id, exec_type, ord_status, symbol, side, ord_type),
            (price, time_in_force, order_qty, last_qty, last_px, cum_qty, leaves_qty, avg_px),
            (transact_time, ord_rej_reason, text, parties),
        )| {
            Report::Execution(ExecutionReport {
                order_id,
                cl_ord_id,
                orig_cl_ord_id,
                exec_type,
                ord_status,
                symbol,
                side,
                ord_type,
                price,
                time_in_force,
                order_qty,
                last_qty,
                last_px,
                cum_qty,
                leaves_qty,
                avg_px,
                transact_time,
                ord_rej_reason,
                text,
                parties,
            })
        },
    )
}

fn cancel_reject() -> impl Strategy<Value = Report> {
    (
        proptest::option::of(any::<u64>()),
        cl_ord_id(),
        cl_ord_id(),
        prop::sample::select(vec![OrdStatus::New, OrdStatus::Rejected, OrdStatus::Filled]),
        prop::sample::select(vec![CxlRejResponseTo::Cancel, CxlRejResponseTo::Replace]),
        prop::sample::select(vec![
            CxlRejReason::TooLateToCancel,
            CxlRejReason::UnknownOrder,
            CxlRejReason::DuplicateClOrdId,
            CxlRejReason::Other,
        ]),
        proptest::option::of(reject_text()),
        time(),
    )
        .prop_map(
            |(order_id, cl_ord_id, orig_cl_ord_id, ord_status, response_to, reason, text, time)| {
                Report::CancelReject(CancelReject {
                    order_id,
                    cl_ord_id,
                    orig_cl_ord_id,
                    ord_status,
                    response_to,
                    reason,
                    text,
                    transact_time: time,
                })
            },
        )
}

fn outputs() -> impl Strategy<Value = Outputs> {
    (
        any::<u64>(),
        vec(
            (
                any::<u32>(),
                prop_oneof![execution_report(), cancel_reject()],
            ),
            0..6,
        ),
    )
        .prop_map(|(input_seq, reports)| Outputs {
            input_seq,
            outputs: reports
                .into_iter()
                .enumerate()
                .map(|(index, (session, report))| Output {
                    input_seq,
                    index: index as u32,
                    session,
                    report,
                })
                .collect(),
        })
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

/// Mostly small byte strings, sometimes a few frames long so chunking is exercised.
fn blob() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..64),
        1 => (0..3 * LINK_FRAME_BYTES_MAX, any::<u8>(), any::<u8>())
            .prop_map(|(len, a, b)| (0..len).map(|i| if i % 7 == 0 { a } else { b }).collect()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u16>(),
            text(),
            text(),
            any::<u64>(),
            vec(any::<u16>(), 0..4),
            prop_oneof![Just(String::new()), "[0-9a-f]{64}", text()],
        )
            .prop_map(
                |(
                    protocol_version,
                    engine_name,
                    build_version,
                    last_input_seq,
                    snapshot_formats,
                    executable_sha256,
                )| {
                    Frame::Hello(Hello {
                        protocol_version,
                        engine_name,
                        build_version,
                        last_input_seq,
                        snapshot_formats,
                        executable_sha256,
                        auth_nonce: vec![7; 32],
                    })
                }
            ),
        any::<u16>().prop_map(|protocol_version| Frame::Welcome(Welcome {
            protocol_version,
            auth_nonce: vec![1; 32],
            auth_proof: vec![2; 32],
        })),
        text().prop_map(|reason| Frame::Close(Close { reason })),
        any::<u64>().prop_map(|last_input_seq| Frame::Heartbeat(Heartbeat { last_input_seq })),
        input().prop_map(Frame::Input),
        outputs().prop_map(Frame::Outputs),
        outputs().prop_map(Frame::Replayed),
        (any::<u64>(), any::<u64>()).prop_map(|(input_seq, last_input_seq)| {
            Frame::AlreadyApplied(AlreadyApplied {
                input_seq,
                last_input_seq,
            })
        }),
        Just(Frame::SnapshotRequest),
        (any::<u64>(), any::<u16>(), digest(), blob()).prop_map(
            |(at_input_seq, format_version, digest, bytes)| {
                Frame::Snapshot(Snapshot {
                    at_input_seq,
                    format_version,
                    digest,
                    bytes,
                })
            }
        ),
        blob().prop_map(|bytes| Frame::Restore(Restore { bytes })),
        (any::<u64>(), digest()).prop_map(|(at_input_seq, digest)| {
            Frame::Restored(Restored {
                at_input_seq,
                digest,
            })
        }),
        (
            prop::sample::select(vec![RefusedRequest::Snapshot, RefusedRequest::Restore]),
            text()
        )
            .prop_map(|(request, reason)| Frame::Refused(Refused { request, reason })),
        Just(Frame::DigestRequest),
        (any::<u64>(), digest()).prop_map(|(at_input_seq, digest)| {
            Frame::Digest(DigestReport {
                at_input_seq,
                digest,
            })
        }),
    ]
}

// ----- Helpers --------------------------------------------------------------------------------

/// Feeds `bytes` through a decoder in pieces of at most `piece` bytes, collecting frames until
/// the first error.
fn decode_all(bytes: &[u8], piece: usize) -> (Vec<Frame>, Option<LinkError>, FrameDecoder) {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                frames.push(frame);
                continue;
            }
            Ok(None) => {}
            Err(error) => return (frames, Some(error), decoder),
        }
        assert!(
            decoder.end - decoder.start < LINK_FRAME_BYTES_MAX,
            "an incomplete frame fills the buffer"
        );
        if rest.is_empty() {
            return (frames, None, decoder);
        }
        let n = decoder.push(&rest[..rest.len().min(piece)]);
        assert!(
            n > 0,
            "the decoder must always take more bytes after Ok(None)"
        );
        rest = &rest[n..];
    }
}

/// Pushes all of `bytes`, decoding as it goes; panics on a decode error.
fn feed(decoder: &mut FrameDecoder, mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames.push(frame);
        }
        if bytes.is_empty() {
            return frames;
        }
        let n = decoder.push(bytes);
        bytes = &bytes[n..];
    }
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode(frame, &mut out).unwrap();
    out
}

fn header(len_rest: u32, version: u16, kind: u8) -> Vec<u8> {
    let mut bytes = len_rest.to_le_bytes().to_vec();
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.push(kind);
    bytes
}

fn raw_frame(version: u16, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = header((payload.len() + 3) as u32, version, kind);
    bytes.extend_from_slice(payload);
    bytes
}

fn single_error(bytes: &[u8]) -> LinkError {
    let (frames, error, _) = decode_all(bytes, bytes.len().max(1));
    assert!(frames.is_empty(), "{frames:?}");
    error.expect("an error")
}

// ----- Properties -----------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_frame_round_trips(frames in vec(frame(), 1..4), piece in 1usize..100_000) {
        let mut bytes = Vec::new();
        for frame in &frames {
            encode(frame, &mut bytes).unwrap();
        }
        let (decoded, error, decoder) = decode_all(&bytes, piece);
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(decoded, frames);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    /// Decoding outputs into pooled vectors (the gateway's way, which reads them one at a time)
    /// gives what decoding them whole gives: the same outputs, or an error for the same bytes,
    /// whatever the vectors held before and wherever the bytes are corrupted.
    #[test]
    fn outputs_decode_the_same_into_pooled_vectors(
        outputs in outputs(),
        used in outputs(),
        corrupt in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = encoded(&Frame::Outputs(outputs));
        if let Some((at, value)) = corrupt {
            // Past the header, so both see the same payload.
            let at = FRAME_HEADER_BYTES + at.index(bytes.len() - FRAME_HEADER_BYTES);
            bytes[at] = value;
        }
        if let Some(at) = cut {
            // A shorter payload under a header that says so.
            let len = FRAME_HEADER_BYTES + at.index(bytes.len() - FRAME_HEADER_BYTES + 1);
            bytes.truncate(len);
            let rest = (len - LENGTH_PREFIX_BYTES) as u32;
            bytes[..4].copy_from_slice(&rest.to_le_bytes());
        }
        let mut plain = FrameDecoder::new();
        plain.push(&bytes);
        let pool = OutputsPool::new();
        let mut kept = used.outputs;
        kept.shrink_to(crate::constants::LINK_OUTPUTS_SPARE_CAPACITY_MAX);
        pool.give(kept);
        let mut pooled = FrameDecoder::new();
        pooled.use_outputs_pool(pool);
        pooled.push(&bytes);
        match (plain.next_frame(), pooled.next_frame()) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "whole: {:?}, pooled: {:?}", a, b),
        }
    }

    #[test]
    fn an_input_at_version_1_is_the_input_without_its_parties(input in input()) {
        // Version 2's encoding of the input without parties ends with the one byte that says
        // "none"; version 1's is the rest, under a version 1 header.
        let mut stripped = input.clone();
        match &mut stripped.request {
            Request::New(order) => order.parties = Parties::NONE,
            Request::Cancel(cancel) => cancel.parties = Parties::NONE,
            Request::Replace(replace) => replace.parties = Parties::NONE,
            Request::Transfer(_) => {}
        }
        let mut expected = encoded(&Frame::Input(stripped));
        prop_assert_eq!(expected.pop(), Some(0));
        let rest = u32::from_le_bytes(expected[..4].try_into().unwrap()) - 1;
        expected[..4].copy_from_slice(&rest.to_le_bytes());
        expected[4..6].copy_from_slice(&LINK_PROTOCOL_VERSION_BEFORE_PARTIES.to_le_bytes());
        let mut bytes = Vec::new();
        encode_input_at(LINK_PROTOCOL_VERSION_BEFORE_PARTIES, &input, &mut bytes).unwrap();
        prop_assert_eq!(bytes, expected);
    }

    #[test]
    fn a_frame_split_anywhere_decodes_once_complete(frame in frame()) {
        let bytes = encoded(&frame);
        // Every boundary for small frames; for chunked ones, boundaries around each frame edge.
        let splits: Vec<usize> = if bytes.len() <= 4096 {
            (0..=bytes.len()).collect()
        } else {
            let mut splits = vec![0, 1, 3, 4, 6, 7, 8, bytes.len() - 1, bytes.len()];
            let mut edge = 0;
            while edge < bytes.len() {
                let len = 4 + u32::from_le_bytes(bytes[edge..edge + 4].try_into().unwrap()) as usize;
                splits.extend([edge + 1, edge + len - 1, edge + len]);
                edge += len;
            }
            splits
        };
        for split in splits {
            let mut decoder = FrameDecoder::new();
            let early = feed(&mut decoder, &bytes[..split]);
            if split < bytes.len() {
                prop_assert!(early.is_empty(), "decoded before complete at {}", split);
            }
            let mut frames = early;
            frames.extend(feed(&mut decoder, &bytes[split..]));
            prop_assert_eq!(&frames, std::slice::from_ref(&frame), "split at {}", split);
            prop_assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overbuffer(
        bytes in vec(any::<u8>(), 0..2048),
        piece in 1usize..512,
    ) {
        let (_, _, decoder) = decode_all(&bytes, piece);
        prop_assert!(decoder.buffered() <= LINK_FRAME_BYTES_MAX);
    }

    #[test]
    fn arbitrary_payloads_behind_valid_headers_never_panic(
        frames in vec((0u8..20, vec(any::<u8>(), 0..300)), 1..6),
        piece in 1usize..512,
    ) {
        let mut bytes = Vec::new();
        for (kind, payload) in &frames {
            // Kinds 0..=17 cover every message kind; map 16..=19 onto the chunking kinds and
            // beyond.
            let kind = match kind {
                16 => 0xF0,
                17 => 0xF1,
                k => *k,
            };
            bytes.extend(raw_frame(LINK_PROTOCOL_VERSION, kind, payload));
        }
        let _ = decode_all(&bytes, piece);
    }

    #[test]
    fn corrupted_encodings_never_panic(
        frames in vec(frame(), 1..3),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = Vec::new();
        for frame in &frames {
            encode(frame, &mut bytes).unwrap();
        }
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        let (_, _, decoder) = decode_all(&bytes, 1 << 20);
        prop_assert!(decoder.end - decoder.start <= LINK_FRAME_BYTES_MAX);
    }
}

// ----- Unit tests -----------------------------------------------------------------------------

#[test]
fn wire_layout_is_as_documented() {
    let bytes = encoded(&Frame::Heartbeat(Heartbeat { last_input_seq: 5 }));
    // Length of the rest (version 2 + kind 1 + varint 1), version 3, kind 4, payload.
    assert_eq!(bytes, [4, 0, 0, 0, 3, 0, 4, 5]);
    let bytes = encoded(&Frame::SnapshotRequest);
    assert_eq!(bytes, [3, 0, 0, 0, 3, 0, 9]);
}

#[test]
fn oversized_length_is_refused_before_buffering_the_body() {
    for declared in [LINK_FRAME_BYTES_MAX as u32 - 3, u32::MAX] {
        let mut decoder = FrameDecoder::new();
        assert_eq!(decoder.push(&declared.to_le_bytes()), 4);
        match decoder.next_frame() {
            Err(LinkError::FrameTooLong { len, max }) => {
                assert_eq!(len, u64::from(declared) + 4);
                assert_eq!(max, LINK_FRAME_BYTES_MAX);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decoder.buffered(), 4);
    }
    // Exactly at the limit is accepted (a chunk of maximal size).
    let mut decoder = FrameDecoder::new();
    decoder.push(&(LINK_FRAME_BYTES_MAX as u32 - 4).to_le_bytes());
    assert!(matches!(decoder.next_frame(), Ok(None)));
}

#[test]
fn too_short_length_is_refused() {
    assert!(matches!(
        single_error(&[2, 0, 0, 0, 1, 0]),
        LinkError::FrameTooShort { len: 2 }
    ));
}

#[test]
fn a_decoder_speaking_version_1_reads_reports_without_parties_and_refuses_the_current_version() {
    let outputs = Outputs {
        input_seq: 3,
        outputs: vec![Output {
            input_seq: 3,
            index: 0,
            session: 1,
            report: Report::CancelReject(CancelReject {
                order_id: None,
                cl_ord_id: ClOrdId::try_from_bytes(b"C").unwrap(),
                orig_cl_ord_id: ClOrdId::try_from_bytes(b"O").unwrap(),
                ord_status: OrdStatus::Rejected,
                response_to: CxlRejResponseTo::Cancel,
                reason: CxlRejReason::UnknownOrder,
                text: Some(RejectText::UnknownOrder),
                transact_time: Timestamp(9),
            }),
        }],
    };
    // A CancelReject has no parties, so its layout is the same in both versions.
    let mut v1 = Vec::new();
    encode_at(
        LINK_PROTOCOL_VERSION,
        &Frame::Outputs(outputs.clone()),
        &mut v1,
    )
    .unwrap();
    v1[4..6].copy_from_slice(&LINK_PROTOCOL_VERSION_BEFORE_PARTIES.to_le_bytes());
    let mut decoder = FrameDecoder::new();
    decoder.speak(LINK_PROTOCOL_VERSION_BEFORE_PARTIES);
    decoder.push(&v1);
    assert_eq!(
        decoder.next_frame().unwrap(),
        Some(Frame::Outputs(outputs.clone()))
    );
    // Speaking version 1, a frame of the current version is refused, like any other version.
    decoder.push(&encoded(&Frame::Outputs(outputs.clone())));
    assert!(matches!(
        decoder.next_frame(),
        Err(LinkError::UnsupportedVersion {
            version: LINK_PROTOCOL_VERSION,
            ..
        })
    ));
    // Outputs are never sent at version 1: only engines send them, and they speak the current one.
    assert!(
        encode_at(
            LINK_PROTOCOL_VERSION_BEFORE_PARTIES,
            &Frame::Outputs(outputs),
            &mut Vec::new()
        )
        .is_err()
    );
}

#[test]
fn wrong_protocol_version_is_a_typed_error() {
    // Version 1 is the layout before requests and reports carried parties.
    let mut bytes = encoded(&Frame::Heartbeat(Heartbeat { last_input_seq: 5 }));
    bytes[4] = 1;
    assert!(matches!(
        single_error(&bytes),
        LinkError::UnsupportedVersion {
            version: 1,
            kind: 4
        }
    ));
    // Also for a kind this build does not know: the version is what is wrong.
    assert!(matches!(
        single_error(&raw_frame(9, 200, &[])),
        LinkError::UnsupportedVersion {
            version: 9,
            kind: 200
        }
    ));
}

#[test]
fn handshake_frames_decode_at_any_version_and_ignore_appended_fields() {
    let hello = Hello {
        protocol_version: 7,
        engine_name: "green".into(),
        build_version: "v7".into(),
        last_input_seq: 42,
        snapshot_formats: vec![1, 2],
        executable_sha256: "ab".repeat(32),
        auth_nonce: vec![9; 32],
    };
    let mut bytes = encoded(&Frame::Hello(hello.clone()));
    // A later version's Hello: its own header version and a field appended.
    bytes[4] = 7;
    bytes.extend_from_slice(&[0xAA, 0xBB]);
    let len = (bytes.len() - 4) as u32;
    bytes[..4].copy_from_slice(&len.to_le_bytes());
    let (frames, error, _) = decode_all(&bytes, bytes.len());
    assert!(error.is_none(), "{error:?}");
    assert_eq!(frames, [Frame::Hello(hello)]);

    let close = raw_frame(3, FrameKind::Close as u8, &[3, b'b', b'y', b'e', 9, 9]);
    let (frames, error, _) = decode_all(&close, close.len());
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        frames,
        [Frame::Close(Close {
            reason: "bye".into()
        })]
    );
}

#[test]
fn a_version_1_hello_without_appended_fields_decodes_with_them_empty() {
    // An engine that predates `executable_sha256` sends exactly version 1's fields.
    let v1 = (1u16, "blue", "v1", 42u64, vec![1u16]);
    let payload = bincode::serde::encode_to_vec(v1, CONFIG).unwrap();
    let bytes = raw_frame(1, FrameKind::Hello as u8, &payload);
    let (frames, error, _) = decode_all(&bytes, bytes.len());
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        frames,
        [Frame::Hello(Hello {
            protocol_version: 1,
            engine_name: "blue".into(),
            build_version: "v1".into(),
            last_input_seq: 42,
            snapshot_formats: vec![1],
            executable_sha256: String::new(),
            auth_nonce: Vec::new(),
        })]
    );

    // A version 1 Welcome has no authentication fields: it decodes with them empty.
    let welcome = raw_frame(1, FrameKind::Welcome as u8, &[1]);
    let (frames, error, _) = decode_all(&welcome, welcome.len());
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        frames,
        [Frame::Welcome(Welcome {
            protocol_version: 1,
            auth_nonce: Vec::new(),
            auth_proof: Vec::new(),
        })]
    );

    // Cut inside version 1's fields it is still malformed, not silently defaulted.
    let cut = raw_frame(1, FrameKind::Hello as u8, &payload[..payload.len() - 1]);
    assert!(matches!(
        single_error(&cut),
        LinkError::Malformed { kind: "Hello", .. }
    ));
    // And a truncated appended field is malformed too.
    let mut torn = payload.clone();
    torn.extend_from_slice(&[64, b'a', b'b']);
    assert!(matches!(
        single_error(&raw_frame(1, FrameKind::Hello as u8, &torn)),
        LinkError::Malformed { kind: "Hello", .. }
    ));
}

#[test]
fn unknown_kind_is_a_typed_error() {
    for kind in [0, 17, 0xEF, 0xF2, 0xFF] {
        assert!(matches!(
            single_error(&raw_frame(LINK_PROTOCOL_VERSION, kind, &[])),
            LinkError::UnknownKind { kind: k } if k == kind
        ));
    }
}

#[test]
fn undecodable_and_overlong_payloads_are_typed_errors() {
    // An Input whose payload stops after the seq.
    assert!(matches!(
        single_error(&raw_frame(
            LINK_PROTOCOL_VERSION,
            FrameKind::Input as u8,
            &[1]
        )),
        LinkError::Malformed { kind: "Input", .. }
    ));
    // A Heartbeat with a byte too many.
    assert!(matches!(
        single_error(&raw_frame(
            LINK_PROTOCOL_VERSION,
            FrameKind::Heartbeat as u8,
            &[1, 2]
        )),
        LinkError::TrailingBytes {
            kind: "Heartbeat",
            extra: 1
        }
    ));
    // A request that must be empty.
    assert!(matches!(
        single_error(&raw_frame(
            LINK_PROTOCOL_VERSION,
            FrameKind::DigestRequest as u8,
            &[0]
        )),
        LinkError::TrailingBytes { .. }
    ));
    // A byte string claiming far more than the frame holds: refused without allocating it.
    // bincode varint: 252 announces a little-endian u32.
    let mut payload = vec![252];
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        single_error(&raw_frame(
            LINK_PROTOCOL_VERSION,
            FrameKind::Restore as u8,
            &payload
        )),
        LinkError::Malformed {
            kind: "Restore",
            ..
        }
    ));
}

#[test]
fn outputs_must_be_keyed_by_input_seq_and_index() {
    let mut outputs = Outputs {
        input_seq: 9,
        outputs: vec![],
    };
    let report = Report::CancelReject(CancelReject {
        order_id: None,
        cl_ord_id: ClOrdId::try_from_bytes(b"a").unwrap(),
        orig_cl_ord_id: ClOrdId::try_from_bytes(b"b").unwrap(),
        ord_status: OrdStatus::Rejected,
        response_to: CxlRejResponseTo::Cancel,
        reason: CxlRejReason::UnknownOrder,
        text: None,
        transact_time: Timestamp(1),
    });
    for (input_seq, index) in [(9, 0), (9, 1)] {
        outputs.outputs.push(Output {
            input_seq,
            index,
            session: 1,
            report: report.clone(),
        });
    }
    let bytes = encoded(&Frame::Outputs(outputs.clone()));
    assert!(decode_all(&bytes, bytes.len()).1.is_none());

    outputs.outputs[1].index = 2;
    assert!(matches!(
        single_error(&encoded(&Frame::Outputs(outputs.clone()))),
        LinkError::Inconsistent {
            kind: "Outputs",
            ..
        }
    ));
    outputs.outputs[1].index = 1;
    outputs.outputs[0].input_seq = 8;
    assert!(matches!(
        single_error(&encoded(&Frame::Replayed(outputs))),
        LinkError::Inconsistent {
            kind: "Replayed",
            ..
        }
    ));
}

#[test]
fn chunking_rules_are_enforced() {
    let v = LINK_PROTOCOL_VERSION;
    let begin = |kind: u8, len: u64| {
        let mut payload = vec![kind];
        payload.extend_from_slice(&len.to_le_bytes());
        raw_frame(v, FrameKind::ChunkedBegin as u8, &payload)
    };
    let big = FRAME_PAYLOAD_BYTES_MAX as u64 + 1;
    let chunk = |bytes: &[u8]| raw_frame(v, FrameKind::Chunk as u8, bytes);
    let heartbeat = encoded(&Frame::Heartbeat(Heartbeat { last_input_seq: 1 }));

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (chunk(b"x"), "without ChunkedBegin"),
        ([begin(5, big), heartbeat.clone()].concat(), "interrupted"),
        ([begin(5, big), begin(5, big)].concat(), "inside another"),
        ([begin(5, big), chunk(&[])].concat(), "empty chunk"),
        (begin(0xF1, big), "of chunks"),
        (begin(5, 10), "fits one frame"),
        (
            [
                begin(5, big),
                chunk(&vec![0; FRAME_PAYLOAD_BYTES_MAX]),
                chunk(b"ab"),
            ]
            .concat(),
            "overrun",
        ),
    ];
    for (bytes, what) in cases {
        match single_error(&bytes) {
            LinkError::Chunking(message) => assert!(message.contains(what), "{message} / {what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(matches!(
        single_error(&begin(5, LINK_MESSAGE_BYTES_MAX as u64 + 1)),
        LinkError::MessageTooLong { .. }
    ));
    assert!(matches!(
        single_error(&begin(99, big)),
        LinkError::UnknownKind { kind: 99 }
    ));
}

#[test]
fn a_sweep_too_large_for_one_frame_is_chunked_and_reassembled() {
    let report = |index: u32| Output {
        input_seq: 77,
        index,
        session: index % 3,
        report: Report::Execution(ExecutionReport {
            order_id: u64::from(index),
            cl_ord_id: ClOrdId::try_from_bytes(format!("order-{index:026}").as_bytes()).unwrap(),
            orig_cl_ord_id: None,
            exec_type: ExecType::Trade,
            ord_status: OrdStatus::Filled,
            symbol: Symbol::try_from_bytes(b"AAPL").unwrap(),
            side: Side::Sell,
            ord_type: OrdType::Limit,
            price: Some(Price(100 * Price::SCALE)),
            time_in_force: TimeInForce::Day,
            order_qty: Qty(100),
            last_qty: Qty(100),
            last_px: Some(Price(100 * Price::SCALE)),
            cum_qty: Qty(100),
            leaves_qty: Qty(0),
            avg_px: Price(100 * Price::SCALE),
            transact_time: Timestamp(1_700_000_000_000_000_000),
            ord_rej_reason: None,
            text: None,
            parties: Parties::NONE,
        }),
    };
    let outputs = Outputs {
        input_seq: 77,
        outputs: (0..2000).map(report).collect(),
    };
    let bytes = encoded(&Frame::Outputs(outputs.clone()));
    assert!(bytes.len() > 2 * LINK_FRAME_BYTES_MAX);
    assert_eq!(bytes[6], FrameKind::ChunkedBegin as u8);

    // The engine's path (payload from a borrowed slice, then framed) gives the same bytes.
    let mut payload = Vec::new();
    encode_outputs_payload(77, &outputs.outputs, &mut payload).unwrap();
    let mut framed = Vec::new();
    write_message(FrameKind::Outputs, &payload, &mut framed).unwrap();
    assert_eq!(framed, bytes);

    let (frames, error, decoder) = decode_all(&bytes, 1500);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(frames, [Frame::Outputs(outputs)]);
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn borrowed_restore_encodes_like_the_owned_frame() {
    for len in [0, 10, 3 * LINK_FRAME_BYTES_MAX] {
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut borrowed = Vec::new();
        encode_restore(&bytes, &mut borrowed).unwrap();
        assert_eq!(
            borrowed,
            encoded(&Frame::Restore(Restore {
                bytes: bytes.clone()
            }))
        );
    }
}

#[test]
fn a_message_over_the_limit_is_refused_on_encode_and_leaves_the_buffer_alone() {
    let mut out = vec![1, 2, 3];
    let too_big = vec![0u8; LINK_MESSAGE_BYTES_MAX + 1];
    let error = write_message(FrameKind::Restore, &too_big, &mut out).unwrap_err();
    assert!(matches!(error, LinkError::MessageTooLong { .. }));
    assert_eq!(out, [1, 2, 3]);
}
