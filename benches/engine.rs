//! Matching engine microbenchmarks on a deep book (1,000 price levels × 10 orders per side):
//! adding a resting order, canceling one, and a crossing order that sweeps 5 levels (50 fills,
//! 101 reports). `baseline/push_output` (one report pushed into a preallocated vector) runs in
//! the same process, so results can be read as ratios that hold across machines.
//!
//! Only `MatchingEngine::apply` is timed: inputs are built, and the book is restored to its
//! depth, outside the timed sections. The `snapshot` group times what a snapshot of that book
//! costs the order loop and what it costs the thread that writes it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use baton::engine::{
    CancelOrder, ClOrdId, Engine, EngineConfig, ExecType, ExecutionReport, Input, InstrumentConfig,
    MatchingEngine, NewOrder, OrdStatus, OrdType, Output, Parties, Price, Qty, Report, Request,
    SNAPSHOT_FORMAT_DEFAULT, Side, Symbol, TimeInForce,
};
use baton::fix::time::Timestamp;
use baton::link::{Frame, Snapshot, encode};
use criterion::{Criterion, criterion_group, criterion_main};

/// Price levels per side of the deep book.
const LEVELS: i64 = 1_000;
/// Orders per level.
const PER_LEVEL: u64 = 10;
/// Quantity of every resting order.
const ORDER_QTY: u64 = 100;
/// Levels the sweeping order takes out.
const SWEEP_LEVELS: i64 = 5;
/// Inputs timed between two reads of the clock.
const CHUNK: u64 = 1_000;
/// ClOrdIDs per engine before the fixture rebuilds it (every input consumes one).
const CL_ORD_IDS_MAX: u32 = 1 << 20;

const TICK: i64 = Price::SCALE / 100;
/// Best bid; asks start one tick above.
const BEST_BID: i64 = 100 * Price::SCALE;

fn symbol() -> Symbol {
    Symbol::try_from_bytes(b"BENCH").unwrap()
}

/// `c<n>` without allocating.
fn cl_ord_id(n: u64) -> ClOrdId {
    let mut buf = [0u8; 21];
    let mut at = buf.len();
    let mut rest = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    at -= 1;
    buf[at] = b'c';
    ClOrdId::try_from_bytes(&buf[at..]).unwrap()
}

fn bid_price(level: i64) -> Price {
    Price(BEST_BID - level * TICK)
}

fn ask_price(level: i64) -> Price {
    Price(BEST_BID + (level + 1) * TICK)
}

/// An engine holding the deep book, and the sequencer state to feed it.
struct Fixture {
    engine: MatchingEngine,
    /// Seq of the last input applied.
    seq: u64,
    /// Reports of the last input; preallocated so pushing never reallocates.
    outputs: Vec<Output>,
}

impl Fixture {
    fn new() -> Fixture {
        let config = EngineConfig {
            instruments: vec![InstrumentConfig {
                symbol: "BENCH".into(),
                tick_size: Price(TICK),
                lot_size: 1,
            }],
            orders_max: (2 * LEVELS as u32 * PER_LEVEL as u32) + 2 * CHUNK as u32,
            levels_max: 2 * LEVELS as u32,
            cl_ord_ids_max: CL_ORD_IDS_MAX,
        };
        let mut fixture = Fixture {
            engine: MatchingEngine::new(&config).unwrap(),
            seq: 0,
            outputs: Vec::with_capacity(1024),
        };
        for level in 0..LEVELS {
            for _ in 0..PER_LEVEL {
                let bid =
                    fixture.new_order(fixture.seq + 1, Side::Buy, bid_price(level), ORDER_QTY);
                fixture.apply(&bid);
                let ask =
                    fixture.new_order(fixture.seq + 1, Side::Sell, ask_price(level), ORDER_QTY);
                fixture.apply(&ask);
            }
        }
        fixture
    }

    /// Rebuilds the book when fewer than `inputs` ClOrdIDs are left, so a long measurement
    /// never runs into the ClOrdID capacity.
    fn ensure_room(&mut self, inputs: u64) {
        if self.seq + inputs + 16 > u64::from(CL_ORD_IDS_MAX) {
            *self = Fixture::new();
        }
    }

    /// Input `seq` placing a Day limit order.
    fn new_order(&self, seq: u64, side: Side, price: Price, qty: u64) -> Input {
        self.input_at(
            seq,
            Request::New(NewOrder {
                cl_ord_id: cl_ord_id(seq),
                symbol: symbol(),
                side,
                ord_type: OrdType::Limit,
                price: Some(price),
                qty: Qty(qty),
                time_in_force: TimeInForce::Day,
                parties: Parties::NONE,
            }),
        )
    }

    fn input_at(&self, seq: u64, request: Request) -> Input {
        Input {
            seq,
            time: Timestamp(seq),
            session: (seq % 4) as u32 + 1,
            request,
        }
    }

    fn apply(&mut self, input: &Input) {
        self.outputs.clear();
        self.engine.apply(input, &mut self.outputs);
        self.seq = input.seq;
    }

    /// Places `n` bids spread over the existing bid levels; returns the inputs.
    fn adds(&self, n: u64, into: &mut Vec<Input>) {
        into.clear();
        for i in 0..n {
            let seq = self.seq + 1 + i;
            let level = (seq % LEVELS as u64) as i64;
            into.push(self.new_order(seq, Side::Buy, bid_price(level), ORDER_QTY));
        }
    }

    /// Cancels of the orders `adds` placed, in the same order.
    fn cancels(&self, adds: &[Input], into: &mut Vec<Input>) {
        into.clear();
        for (i, add) in adds.iter().enumerate() {
            let Request::New(order) = &add.request else {
                unreachable!()
            };
            let seq = self.seq + 1 + i as u64;
            let request = Request::Cancel(CancelOrder {
                cl_ord_id: cl_ord_id(seq),
                orig_cl_ord_id: order.cl_ord_id,
                symbol: order.symbol,
                side: order.side,
                parties: Parties::NONE,
            });
            let mut input = self.input_at(seq, request);
            input.session = add.session;
            into.push(input);
        }
    }

    /// Applies `inputs` and returns how long that took.
    fn timed(&mut self, inputs: &[Input]) -> Duration {
        let start = Instant::now();
        for input in inputs {
            self.outputs.clear();
            self.engine.apply(input, &mut self.outputs);
        }
        let elapsed = start.elapsed();
        black_box(&self.outputs);
        self.seq = inputs.last().map_or(self.seq, |input| input.seq);
        elapsed
    }

    fn untimed(&mut self, inputs: &[Input]) {
        for input in inputs {
            self.apply(input);
        }
    }
}

fn baseline(c: &mut Criterion) {
    let output = Output {
        input_seq: 1,
        index: 0,
        session: 1,
        report: Report::Execution(ExecutionReport {
            order_id: 1,
            cl_ord_id: cl_ord_id(1),
            orig_cl_ord_id: None,
            exec_type: ExecType::Trade,
            ord_status: OrdStatus::PartiallyFilled,
            symbol: symbol(),
            side: Side::Buy,
            ord_type: OrdType::Limit,
            price: Some(bid_price(0)),
            time_in_force: TimeInForce::Day,
            order_qty: Qty(ORDER_QTY),
            last_qty: Qty(10),
            last_px: Some(bid_price(0)),
            cum_qty: Qty(10),
            leaves_qty: Qty(90),
            avg_px: bid_price(0),
            transact_time: Timestamp(1),
            ord_rej_reason: None,
            text: None,
            parties: Parties::NONE,
        }),
    };
    let mut outputs: Vec<Output> = Vec::with_capacity(1024);
    c.bench_function("baseline/push_output", |b| {
        b.iter(|| {
            outputs.clear();
            outputs.push(black_box(&output).clone());
            black_box(&outputs);
        })
    });
}

fn add_resting(c: &mut Criterion) {
    let mut fixture = Fixture::new();
    let (mut adds, mut cancels) = (Vec::new(), Vec::new());
    c.bench_function("engine/add_resting_order", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = CHUNK.min(iters - done);
                fixture.ensure_room(2 * n);
                fixture.adds(n, &mut adds);
                total += fixture.timed(&adds);
                // Back to the original depth so every chunk sees the same book.
                fixture.cancels(&adds, &mut cancels);
                fixture.untimed(&cancels);
                done += n;
            }
            total
        })
    });
}

fn cancel_resting(c: &mut Criterion) {
    let mut fixture = Fixture::new();
    let (mut adds, mut cancels) = (Vec::new(), Vec::new());
    c.bench_function("engine/cancel_order", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = CHUNK.min(iters - done);
                fixture.ensure_room(2 * n);
                fixture.adds(n, &mut adds);
                fixture.untimed(&adds);
                fixture.cancels(&adds, &mut cancels);
                total += fixture.timed(&cancels);
                done += n;
            }
            total
        })
    });
}

fn sweep(c: &mut Criterion) {
    let mut fixture = Fixture::new();
    let mut refill = Vec::new();
    c.bench_function("engine/sweep_5_levels_50_fills", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                fixture.ensure_room(1 + (SWEEP_LEVELS as u64) * PER_LEVEL);
                let qty = SWEEP_LEVELS as u64 * PER_LEVEL * ORDER_QTY;
                let sweep =
                    fixture.new_order(fixture.seq + 1, Side::Buy, ask_price(SWEEP_LEVELS - 1), qty);
                total += fixture.timed(std::slice::from_ref(&sweep));
                assert_eq!(
                    fixture.outputs.len(),
                    1 + 2 * (SWEEP_LEVELS as u64 * PER_LEVEL) as usize
                );
                // Put the taken liquidity back, oldest level first, as it was.
                refill.clear();
                for level in 0..SWEEP_LEVELS {
                    for _ in 0..PER_LEVEL {
                        let seq = fixture.seq + 1 + refill.len() as u64;
                        refill.push(fixture.new_order(
                            seq,
                            Side::Sell,
                            ask_price(level),
                            ORDER_QTY,
                        ));
                    }
                }
                fixture.untimed(&refill);
            }
            total
        })
    });
}

/// What a SnapshotRequest costs the engine's order loop on the deep book: before, the whole
/// snapshot (canonical state, digest, encoding, the link frame) was written between two inputs;
/// now only the frozen copy is taken there, and the rest runs on the snapshot's own thread.
fn snapshot(c: &mut Criterion) {
    let fixture = Fixture::new();
    let engine = &fixture.engine;
    let mut group = c.benchmark_group("snapshot");
    // Milliseconds per iteration: a few samples are enough and keep the run short.
    group.sample_size(10);
    let mut bytes = Vec::new();
    engine.snapshot(&mut bytes);
    println!("snapshot of the deep book: {} bytes", bytes.len());
    group.bench_function("written_on_the_loop", |b| {
        b.iter(|| {
            let mut bytes = Vec::new();
            engine.snapshot(&mut bytes);
            let snapshot = Snapshot {
                at_input_seq: engine.last_input_seq(),
                format_version: SNAPSHOT_FORMAT_DEFAULT,
                digest: engine.digest(),
                bytes,
            };
            let mut frame = Vec::new();
            encode(&Frame::Snapshot(snapshot), &mut frame).unwrap();
            black_box(frame)
        })
    });
    group.bench_function("freeze_on_the_loop", |b| {
        b.iter(|| black_box(engine.freeze().unwrap()))
    });
    let frozen = engine.freeze().unwrap();
    group.bench_function("frozen_written_off_the_loop", |b| {
        b.iter(|| {
            let mut bytes = Vec::new();
            black_box(frozen.snapshot_and_digest(&mut bytes));
            black_box(bytes)
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    baseline,
    add_resting,
    cancel_resting,
    sweep,
    snapshot
);
criterion_main!(benches);
