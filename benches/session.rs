//! What the FIX side costs per message: framing and indexing a NewOrderSingle, validating it
//! against the venue dictionary, the whole session state machine step for it, and encoding an
//! ExecutionReport — next to a same-run baseline (copying the same bytes), so results are ratios.
//!
//! `cargo bench --bench session -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use baton::fix::codec::{Decoder, Encoder, Frame, Message};
use baton::fix::dictionary::Dictionary;
use baton::fix::session::{Event, Session, SessionConfig};
use baton::fix::store::MemoryStore;
use baton::fix::time::Timestamp;
use criterion::{Criterion, criterion_group, criterion_main};

/// Monday 2026-11-23 12:00:00 UTC.
const NOW: Timestamp = Timestamp::from_secs(1_795_435_200);

fn new_order(encoder: &mut Encoder, seq: u64) -> Vec<u8> {
    encoder
        .start(b"D")
        .str(49, "CLIENT")
        .str(56, "BATON")
        .uint(34, seq)
        .timestamp(52, NOW)
        .str(11, "ORDER-000001")
        .str(55, "AAPL")
        .char(54, b'1')
        .str(60, "20261123-12:00:00")
        .uint(38, 100)
        .char(40, b'2')
        .str(44, "101.25");
    encoder.finish().to_vec()
}

fn bench(c: &mut Criterion) {
    let mut encoder = Encoder::new("FIX.4.4");
    let order = new_order(&mut encoder, 2);
    let dictionary = Dictionary::venue();

    c.bench_function("baseline_copy_of_the_order", |b| {
        let mut out = Vec::with_capacity(order.len());
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&order));
            black_box(&out);
        })
    });

    c.bench_function("frame_and_index_new_order_single", |b| {
        let decoder = Decoder::new(1 << 16);
        let mut message = Message::default();
        b.iter(|| {
            let Frame::Complete(len) = decoder.frame(black_box(&order)) else {
                unreachable!("a whole frame")
            };
            message.parse_into(&order[..len]).expect("well formed");
            black_box(&message);
        })
    });

    c.bench_function("validate_new_order_single", |b| {
        let message = Message::parse(&order).expect("well formed");
        b.iter(|| black_box(dictionary.validate(black_box(&message))).expect("valid"))
    });

    c.bench_function("encode_execution_report", |b| {
        let mut encoder = Encoder::new("FIX.4.4");
        b.iter(|| {
            encoder
                .start(b"8")
                .str(49, "BATON")
                .str(56, "CLIENT")
                .uint(34, black_box(1234))
                .timestamp(52, NOW)
                .uint(37, 42)
                .str(11, "ORDER-000001")
                .str(17, "42-0")
                .char(150, b'0')
                .char(39, b'0')
                .str(55, "AAPL")
                .char(54, b'1')
                .uint(38, 100)
                .char(40, b'2')
                .str(44, "101.25")
                .char(59, b'0')
                .uint(151, 100)
                .uint(14, 0)
                .uint(6, 0)
                .timestamp(60, NOW);
            black_box(encoder.finish());
        })
    });

    c.bench_function("session_step_for_new_order_single", |b| {
        // A logged-on session; each iteration feeds the next NewOrderSingle and takes the event.
        let mut session = Session::new(
            SessionConfig::new("BATON", "CLIENT"),
            MemoryStore::new(),
            dictionary,
        );
        session.on_connect(NOW);
        let mut client = Encoder::new("FIX.4.4");
        client
            .start(b"A")
            .str(49, "CLIENT")
            .str(56, "BATON")
            .uint(34, 1)
            .timestamp(52, NOW)
            .uint(98, 0)
            .uint(108, 30);
        let logon = client.finish().to_vec();
        session.handle_bytes(NOW, &logon);
        let mut sink = Vec::new();
        session.poll_transmit(&mut sink);
        while session.poll_event().is_some() {}
        let mut seq = 2;
        b.iter_batched(
            || {
                let bytes = new_order(&mut client, seq);
                seq += 1;
                (bytes, seq - 1)
            },
            |(bytes, order_seq)| {
                session.handle_bytes(NOW, &bytes);
                match session.poll_event() {
                    Some(Event::Application(message)) => {
                        session.confirm_in(order_seq);
                        black_box(message);
                    }
                    other => unreachable!("expected the order, got {other:?}"),
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// A NewOrderSingle header followed by `count` distinct tags (`1000=1`, `1001=1`,
/// ...): the shape that made the old repeated-tag check quadratic.
fn many_tags(count: usize) -> Vec<u8> {
    let mut encoder = Encoder::new("FIX.4.4");
    encoder
        .start(b"D")
        .str(49, "CLIENT")
        .str(56, "BATON")
        .uint(34, 2)
        .timestamp(52, NOW);
    for i in 0..count {
        encoder.uint(1_000 + i as u32, 1);
    }
    encoder.finish().to_vec()
}

/// The same header and one Text field padded so the frame is exactly `len` bytes long (give or
/// take the BodyLength digits): the baseline the many-tags message is compared with.
fn one_field_of_len(len: usize) -> Vec<u8> {
    let mut encoder = Encoder::new("FIX.4.4");
    let mut padding = 0;
    loop {
        encoder
            .start(b"D")
            .str(49, "CLIENT")
            .str(56, "BATON")
            .uint(34, 2)
            .timestamp(52, NOW)
            .bytes(58, &vec![b'x'; padding]);
        let frame_len = encoder.finish().len();
        if frame_len >= len {
            return encoder.finish().to_vec();
        }
        padding += len - frame_len;
    }
}

/// Framing, indexing and validating hostile input: 9,000 distinct tags in 63 KB (over the field
/// cap, so indexing stops at it) and 1,000 (under it, so validation walks them all), each next
/// to a one-field message of the same size. Ratios near 1 mean the work is linear in the bytes.
fn bench_hostile(c: &mut Criterion) {
    let dictionary = Dictionary::venue();
    for count in [9_000, 1_000] {
        let tags = many_tags(count);
        let one = one_field_of_len(tags.len());
        for (name, bytes) in [("distinct_tags", &tags), ("one_field_same_size", &one)] {
            c.bench_function(
                &format!("hostile_{count}_{name}_frame_parse_validate"),
                |b| {
                    let decoder = Decoder::new(1 << 16);
                    let mut message = Message::default();
                    b.iter(|| {
                        let Frame::Complete(len) = decoder.frame(black_box(bytes)) else {
                            unreachable!("a whole frame")
                        };
                        message.parse_into(&bytes[..len]).expect("well formed");
                        // Rejected either way (unknown tags, or Text is not in the header...);
                        // the cost is what matters.
                        let _ = black_box(dictionary.validate(&message));
                    })
                },
            );
        }
    }
}

criterion_group!(benches, bench, bench_hostile);
criterion_main!(benches);
