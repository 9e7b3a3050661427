//! Engine link codec microbenchmarks: encoding and decoding an Input frame (a NewOrderSingle)
//! and an Outputs frame with two ExecutionReports (an ack and a fill), each against a same-run
//! baseline that copies the same number of bytes, so the cost reads as "n memcpys" on any
//! machine.
//!
//! Criterion measures each case; then a short interleaved run prints the ratios directly.

use std::hint::black_box;
use std::time::{Duration, Instant};

use baton::engine::{
    ClOrdId, ExecType, ExecutionReport, Input, NewOrder, OrdStatus, OrdType, Output, Parties,
    Price, Qty, Report, Request, Side, Symbol, TimeInForce,
};
use baton::fix::time::Timestamp;
use baton::link::{Frame, FrameDecoder, Outputs, encode, encode_input};
use criterion::{Criterion, criterion_group};

fn cl_ord_id(text: &str) -> ClOrdId {
    ClOrdId::try_from_bytes(text.as_bytes()).unwrap()
}

fn symbol() -> Symbol {
    Symbol::try_from_bytes(b"AAPL").unwrap()
}

fn time() -> Timestamp {
    Timestamp(1_767_225_600_123_456_789)
}

/// A NewOrderSingle as the sequencer stamps it, with realistic id lengths.
fn input() -> Input {
    Input {
        seq: 1_234_567,
        time: time(),
        session: 17,
        request: Request::New(NewOrder {
            cl_ord_id: cl_ord_id("20260101-OMS7-000123456"),
            symbol: symbol(),
            side: Side::Buy,
            ord_type: OrdType::Limit,
            price: Some(Price(18_525 * Price::SCALE / 100)),
            qty: Qty(300),
            time_in_force: TimeInForce::Day,
            parties: Parties::NONE,
        }),
    }
}

/// The ack and the fill of an aggressive order: the common two-report answer.
fn outputs() -> Outputs {
    let report = |index: u32, exec_type, ord_status, last_qty: u64, cum_qty: u64| Output {
        input_seq: 1_234_567,
        index,
        session: 17,
        report: Report::Execution(ExecutionReport {
            order_id: 1_234_567,
            cl_ord_id: cl_ord_id("20260101-OMS7-000123456"),
            orig_cl_ord_id: None,
            exec_type,
            ord_status,
            symbol: symbol(),
            side: Side::Buy,
            ord_type: OrdType::Limit,
            price: Some(Price(18_525 * Price::SCALE / 100)),
            time_in_force: TimeInForce::Day,
            order_qty: Qty(300),
            last_qty: Qty(last_qty),
            last_px: (last_qty > 0).then_some(Price(18_524 * Price::SCALE / 100)),
            cum_qty: Qty(cum_qty),
            leaves_qty: Qty(300 - cum_qty),
            avg_px: Price(if cum_qty > 0 {
                18_524 * Price::SCALE / 100
            } else {
                0
            }),
            transact_time: time(),
            ord_rej_reason: None,
            text: None,
            parties: Parties::NONE,
        }),
    };
    Outputs {
        input_seq: 1_234_567,
        outputs: vec![
            report(0, ExecType::New, OrdStatus::New, 0, 0),
            report(1, ExecType::Trade, OrdStatus::PartiallyFilled, 100, 100),
        ],
    }
}

/// State reused across iterations, as a link reuses its buffers.
struct Codec {
    buf: Vec<u8>,
    decoder: FrameDecoder,
}

impl Codec {
    fn new() -> Codec {
        Codec {
            buf: Vec::with_capacity(4096),
            decoder: FrameDecoder::new(),
        }
    }

    fn input_round_trip(&mut self, input: &Input) -> Frame {
        self.buf.clear();
        encode_input(input, &mut self.buf).unwrap();
        self.decoder.push(&self.buf);
        self.decoder.next_frame().unwrap().unwrap()
    }

    fn frame_round_trip(&mut self, frame: &Frame) -> Frame {
        self.buf.clear();
        encode(frame, &mut self.buf).unwrap();
        self.decoder.push(&self.buf);
        self.decoder.next_frame().unwrap().unwrap()
    }
}

fn wire_len(frame: &Frame) -> usize {
    let mut bytes = Vec::new();
    encode(frame, &mut bytes).unwrap();
    bytes.len()
}

/// Copies `len` bytes between two buffers: the floor any codec is compared with.
struct Memcpy {
    src: Vec<u8>,
    dst: Vec<u8>,
}

impl Memcpy {
    fn new(len: usize) -> Memcpy {
        Memcpy {
            src: (0..len).map(|i| i as u8).collect(),
            dst: vec![0; len],
        }
    }

    fn run(&mut self) {
        let src = black_box(&self.src[..]);
        self.dst.copy_from_slice(src);
        black_box(&mut self.dst);
    }
}

fn input_frame(c: &mut Criterion) {
    let input = input();
    let len = wire_len(&Frame::Input(input.clone()));
    let mut memcpy = Memcpy::new(len);
    c.bench_function(&format!("baseline/memcpy_{len}_bytes"), |b| {
        b.iter(|| memcpy.run())
    });
    let mut codec = Codec::new();
    c.bench_function("link/input_encode_decode", |b| {
        b.iter(|| black_box(codec.input_round_trip(black_box(&input))))
    });
}

fn outputs_frame(c: &mut Criterion) {
    let frame = Frame::Outputs(outputs());
    let len = wire_len(&frame);
    let mut memcpy = Memcpy::new(len);
    c.bench_function(&format!("baseline/memcpy_{len}_bytes"), |b| {
        b.iter(|| memcpy.run())
    });
    let mut codec = Codec::new();
    c.bench_function("link/outputs_2_reports_encode_decode", |b| {
        b.iter(|| black_box(codec.frame_round_trip(black_box(&frame))))
    });
}

/// Median time per call, from samples of `iterations` calls each.
fn median_ns(samples: &mut [Duration], iterations: u32) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_nanos() as f64 / f64::from(iterations)
}

/// Interleaves the codec and its baseline sample by sample, so frequency scaling and noisy
/// neighbours hit both alike, and prints the ratio of the medians.
fn print_ratios() {
    const SAMPLES: usize = 51;
    const ITERATIONS: u32 = 20_000;
    let input = input();
    let outputs = Frame::Outputs(outputs());
    let mut codec = Codec::new();

    let report = |name: &str, len: usize, op: &mut dyn FnMut()| {
        let mut memcpy = Memcpy::new(len);
        let (mut op_times, mut base_times) = (Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let start = Instant::now();
            for _ in 0..ITERATIONS {
                op();
            }
            op_times.push(start.elapsed());
            let start = Instant::now();
            for _ in 0..ITERATIONS {
                memcpy.run();
            }
            base_times.push(start.elapsed());
        }
        let op_ns = median_ns(&mut op_times, ITERATIONS);
        let base_ns = median_ns(&mut base_times, ITERATIONS);
        println!(
            "{name}: {len} bytes on the wire, {:.1}x a memcpy of the same bytes \
             ({op_ns:.1} ns vs {base_ns:.1} ns)",
            op_ns / base_ns
        );
    };
    let input_len = wire_len(&Frame::Input(input.clone()));
    report("link/input_encode_decode", input_len, &mut || {
        black_box(codec.input_round_trip(black_box(&input)));
    });
    let mut codec = Codec::new();
    let outputs_len = wire_len(&outputs);
    report(
        "link/outputs_2_reports_encode_decode",
        outputs_len,
        &mut || {
            black_box(codec.frame_round_trip(black_box(&outputs)));
        },
    );
}

criterion_group!(benches, input_frame, outputs_frame);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
