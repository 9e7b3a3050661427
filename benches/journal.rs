//! What journaling an input costs on the sequencer's path, next to the cheapest thing it could be
//! (copying the bytes onto the end of a `Vec`), measured in the same run so the report can give
//! ratios that hold across machines. Also how fast a standby can replay the journal.
//!
//! `cargo bench --bench journal -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use baton::fix::time::Timestamp;
use baton::gateway::journal::{Journal, JournalConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Appends between untimed restarts, so the journal stays a few tens of MiB however many
/// iterations criterion asks for.
const APPENDS_PER_RESTART: u64 = 100_000;
/// Payload sizes measured: a small order message and a typical one with parties and text.
const PAYLOAD_BYTES: [usize; 2] = [64, 256];
/// Records in the journal the replay bench reads over and over.
const REPLAY_RECORDS: u64 = 200_000;

/// FIX-looking bytes of the given length.
fn payload(len: usize) -> Vec<u8> {
    let mut payload =
        b"8=FIX.4.4\x019=000\x0135=D\x0149=CLIENT\x0156=BATON\x0134=1234567\x01".to_vec();
    payload.resize(len, b'0');
    payload
}

/// Times `iters` calls of `append` on `state`, calling `restart` (untimed) every
/// `APPENDS_PER_RESTART`.
fn time_appends<S>(
    iters: u64,
    state: &mut S,
    restart: impl Fn(&mut S),
    append: impl Fn(&mut S),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let count = left.min(APPENDS_PER_RESTART);
        restart(state);
        let started = Instant::now();
        for _ in 0..count {
            append(state);
        }
        total += started.elapsed();
        left -= count;
    }
    total
}

/// A journal being appended to, with the seq its next record carries.
struct Appending {
    /// The journal under measurement.
    journal: Journal,
    /// The next record's seq (and time, in nanoseconds: it only has to rise).
    seq: u64,
}

fn append(c: &mut Criterion) {
    for len in PAYLOAD_BYTES {
        let payload = payload(len);
        let mut group = c.benchmark_group(format!("journal_append_{len}_bytes"));
        group.throughput(Throughput::Elements(1));

        group.bench_function("vec_extend_baseline", |b| {
            let mut log: Vec<u8> = Vec::new();
            b.iter_custom(|iters| {
                time_appends(
                    iters,
                    &mut log,
                    |log| log.clear(),
                    |log| log.extend_from_slice(black_box(&payload)),
                )
            })
        });

        // A fresh journal every restart: appends always go to pages never touched before, as
        // they do in production (the journal never reuses a page), so each 4 KiB costs a page
        // fault and a block allocation, and the first append of each restart creates a segment.
        group.bench_function("journal_os", |b| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("journal");
            let mut state: Option<Appending> = None;
            b.iter_custom(|iters| {
                time_appends(
                    iters,
                    &mut state,
                    |state| {
                        *state = None;
                        let _ = std::fs::remove_dir_all(&path);
                        *state = Some(Appending {
                            journal: Journal::open(&path, JournalConfig::default()).unwrap(),
                            seq: 1,
                        });
                    },
                    |state| {
                        let state = state.as_mut().unwrap();
                        state
                            .journal
                            .append(state.seq, Timestamp(state.seq), black_box(&payload))
                            .unwrap();
                        state.seq += 1;
                    },
                )
            })
        });
        group.finish();
    }
}

/// Writes `REPLAY_RECORDS` records of `len` bytes into a new journal at `dir`.
fn write_journal(dir: &Path, len: usize) {
    let payload = payload(len);
    let mut journal = Journal::open(dir, JournalConfig::default()).unwrap();
    for seq in 1..=REPLAY_RECORDS {
        journal.append(seq, Timestamp(seq), &payload).unwrap();
    }
}

fn replay(c: &mut Criterion) {
    let len = 256;
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), len);
    let mut group = c.benchmark_group(format!("journal_replay_{len}_bytes"));
    group.throughput(Throughput::Elements(1));
    // Reads the whole journal from the page cache, starting over at its end; one iteration is
    // one record returned.
    group.bench_function("reader", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            let mut left = iters;
            while left > 0 {
                let mut reader = Journal::read_from(dir.path(), 1).unwrap();
                while left > 0 {
                    match reader.next().unwrap() {
                        Some(entry) => {
                            black_box(entry);
                            left -= 1;
                        }
                        None => break,
                    }
                }
            }
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, append, replay);
criterion_main!(benches);
