//! What recording a sent message costs in the session store, next to the cheapest thing it could
//! be (copying the bytes onto the end of a `Vec`), measured in the same run so the report can give
//! ratios that hold across machines.
//!
//! `cargo bench --bench store -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use baton::fix::store::{Durability, MmapStore, SessionStore};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Appends between untimed resets, so the log stays a few tens of MiB however many iterations
/// criterion asks for.
const APPENDS_PER_RESET: u64 = 100_000;
/// Messages per `flush` in `Batch` mode: one batch of socket reads in a busy session.
const BATCH_MESSAGES: u64 = 64;

/// A 200-byte execution report, the typical size of what a gateway sends most.
fn message() -> Vec<u8> {
    let mut message = b"8=FIX.4.4\x019=178\x0135=8\x0149=BATON\x0156=CLIENT\x0134=1234567\x01\
        52=20250101-12:00:00.000\x0137=O-1\x0117=E-1\x01150=F\x0139=2\x0155=ABCD\x0154=1\x01"
        .to_vec();
    message.resize(193, b'0');
    message.extend_from_slice(b"10=000\x01");
    assert_eq!(message.len(), 200);
    message
}

/// Times `iters` calls of `append` on `state`, calling `restart` (untimed) every
/// `APPENDS_PER_RESET`.
fn time_appends<S>(
    iters: u64,
    state: &mut S,
    restart: impl Fn(&mut S),
    append: impl Fn(&mut S, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let count = left.min(APPENDS_PER_RESET);
        restart(state);
        let started = Instant::now();
        for i in 0..count {
            append(state, i);
        }
        total += started.elapsed();
        left -= count;
    }
    total
}

fn append(c: &mut Criterion) {
    let message = message();
    let mut group = c.benchmark_group("append_200_bytes");
    group.throughput(Throughput::Elements(1));

    group.bench_function("vec_extend_baseline", |b| {
        let mut log: Vec<u8> = Vec::new();
        b.iter_custom(|iters| {
            time_appends(
                iters,
                &mut log,
                |log| log.clear(),
                |log, _| log.extend_from_slice(black_box(&message)),
            )
        })
    });

    // The driver calls `flush` once per batch in every mode; in `Os` mode it does nothing.
    let append_one = |store: &mut MmapStore, i: u64| {
        let seq = store.seq_num_next_out();
        store.append_sent(seq, black_box(&message)).unwrap();
        if (i + 1).is_multiple_of(BATCH_MESSAGES) {
            store.flush().unwrap();
        }
    };

    // Steady state: one store for the whole run, so its pages are allocated and mapped, as in a
    // session past its first day.
    for (name, durability) in [
        ("mmap_os", Durability::Os),
        ("mmap_batch_flush_every_64", Durability::Batch),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MmapStore::open(dir.path(), durability).unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_appends(
                    iters,
                    &mut store,
                    |store| store.reset(0).unwrap(),
                    append_one,
                )
            })
        });
    }

    // First day: a new store every `APPENDS_PER_RESET` appends, so every page is touched for the
    // first time (a page fault and a block allocation per 4 KiB) and the log grows by remapping.
    group.bench_function("mmap_os_new_file", |b| {
        let dir = tempfile::tempdir().unwrap();
        let mut store = None;
        b.iter_custom(|iters| {
            time_appends(
                iters,
                &mut store,
                |store| {
                    *store = None;
                    let _ = std::fs::remove_dir_all(dir.path().join("session"));
                    *store =
                        Some(MmapStore::open(&dir.path().join("session"), Durability::Os).unwrap());
                },
                |store, i| append_one(store.as_mut().unwrap(), i),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
