//! A full disk under the store and the journal: the gateway refuses new business with
//! BusinessMessageReject (380=4) naming the cause, keeps the session logged on, says so in an
//! ERROR and a metric, and accepts business again by itself once space returns. Nothing it
//! acknowledged is lost.
//!
//! Needs root (it mounts a 20 MB tmpfs); skipped with a message otherwise.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use baton::bench::initiator::Initiator;
use support::logged::Logged;
use support::mount::Mount;
use support::{
    EngineProcess, READY_FILE_ENV, WAIT, log_on, new_order, ready_file, scrape_metrics, text,
    wait_for_engine, wait_ready,
};

/// Generous bound for a loaded machine: the test asserts outcomes, never speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Fills the file system holding `path` with one file, to the last byte it takes.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    for chunk in [1 << 20, 4096, 512] {
        let bytes = vec![0xAAu8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
}

/// `name`'s value from the metrics endpoint at `addr`, if present.
fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let response = scrape_metrics(addr);
    response.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    })
}

/// Sends an order and returns its answer: an ExecutionReport or a BusinessMessageReject.
fn order(client: &mut Initiator, cl_ord_id: &str) -> baton::fix::codec::Message {
    new_order(client, cl_ord_id, b'1', 10, "10");
    client
        .recv_until(WAIT, "answer to an order", |m| {
            m.msg_type() == b"8" || m.msg_type() == b"j"
        })
        .expect("an answer")
}

/// A venue whose store and journal are on a fresh 20 MB tmpfs; `None` (after saying why) where
/// mounting is not permitted.
struct Venue {
    client: Initiator,
    metrics: SocketAddr,
    disk: PathBuf,
    // Dropped in this order: the processes before the file system they write to.
    gateway: Logged,
    _engine: EngineProcess,
    _mount: Mount,
    _dir: tempfile::TempDir,
}

impl Venue {
    fn start(test: &str, journal_segment_bytes: u64) -> Option<Venue> {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let mount = match Mount::tmpfs(&disk, "20m") {
            Ok(mount) => mount,
            Err(why) => {
                eprintln!("SKIPPED {test}: {why} (needs root and tmpfs)");
                return None;
            }
        };
        let config = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nstore_dir = \"{}\"\njournal_dir = \"{}\"\njournal_segment_bytes = {journal_segment_bytes}\n\n\
             [control]\napproval_required = []\n\n[defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n",
            disk.join("store").display(),
            disk.join("journal").display(),
        );
        let config_path = dir.path().join("baton.toml");
        std::fs::write(&config_path, config).unwrap();
        let engine = EngineProcess::start(&config_path, dir.path(), "blue");
        support::wait_for_socket(&dir.path().join("blue.sock"));
        let ready_path = ready_file(dir.path());
        let mut gateway = Logged::spawn(
            Command::new(env!("CARGO_BIN_EXE_baton"))
                .args(["gateway", "--config"])
                .arg(&config_path)
                .args(["--engine", &engine.addr])
                .env("RUST_LOG", "warn")
                .env(READY_FILE_ENV, &ready_path),
        );
        let ready = wait_ready(&ready_path, &mut gateway.child);
        let metrics = ready.metrics.expect("the gateway serves metrics");
        let mut client = log_on(ready.listen);
        // Journals its first inputs: the journal's first segment is allocated now.
        wait_for_engine(&mut client);
        Some(Venue {
            client,
            metrics,
            disk,
            gateway,
            _engine: engine,
            _mount: mount,
            _dir: dir,
        })
    }

    /// Fills the disk, then sends orders until one is refused; every one before is accepted.
    fn fill_until_refused(&mut self) -> baton::fix::codec::Message {
        fill(&self.disk.join("filler"));
        let mut accepted = 0;
        loop {
            let answer = order(&mut self.client, &format!("FULL-{accepted}"));
            if answer.msg_type() == b"j" {
                eprintln!("{accepted} orders accepted after the disk filled, then refused");
                return answer;
            }
            assert_eq!(text(&answer, 150), "0");
            accepted += 1;
            assert!(accepted < 10_000, "the disk never ran out of space");
        }
    }

    /// The gateway's ERROR about the full disk, waited for: the gateway's log lines reach its
    /// stderr from a writer thread of their own, so the line may land after the refusal did.
    fn disk_full_error(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.gateway.stderr();
            if let Some(line) = log
                .lines()
                .find(|line| line.contains("ERROR") && line.contains("disk full"))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no ERROR naming the full disk within {PATIENCE:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Frees the disk and waits until an order is accepted again.
    fn free_and_resume(&mut self) {
        std::fs::remove_file(self.disk.join("filler")).unwrap();
        let freed = Instant::now();
        let deadline = Instant::now() + PATIENCE;
        for attempt in 0.. {
            let answer = order(&mut self.client, &format!("AFTER-{attempt}"));
            if answer.msg_type() == b"8" {
                assert_eq!(text(&answer, 150), "0");
                eprintln!(
                    "accepted again {:?} after the space returned",
                    freed.elapsed()
                );
                break;
            }
            assert!(Instant::now() < deadline, "business never resumed");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(metric(self.metrics, "baton_disk_full"), Some(0));
    }
}

/// The refusal is a BusinessMessageReject 380=4 naming the cause; the session is up and is
/// answered again at once; the metric says so.
fn assert_refused_while_full(venue: &mut Venue, refusal: &baton::fix::codec::Message) {
    assert_eq!(text(refusal, 380), "4");
    assert!(
        text(refusal, 58).contains("disk full"),
        "Text names the cause: {:?}",
        text(refusal, 58)
    );
    let again = order(&mut venue.client, "STILL-FULL");
    assert_eq!(again.msg_type(), b"j");
    assert_eq!(text(&again, 380), "4");
    assert_eq!(metric(venue.metrics, "baton_disk_full"), Some(1));
}

#[test]
fn a_journal_that_cannot_roll_over_refuses_new_business_and_resumes_when_space_returns() {
    // Small segments: the journal asks for space again soon after the disk fills.
    let Some(mut venue) = Venue::start("a_journal_that_cannot_roll_over", 16 << 10) else {
        return;
    };
    let first = order(&mut venue.client, "BEFORE-FULL");
    assert_eq!(text(&first, 150), "0", "accepted while there is space");
    let refusal = venue.fill_until_refused();
    assert_refused_while_full(&mut venue, &refusal);
    let error = venue.disk_full_error();
    assert!(
        error.contains("journal") && error.contains("free_bytes="),
        "the ERROR names the file and the free space: {error}"
    );
    venue.free_and_resume();
    // What was acknowledged before the disk filled is still there: it can be canceled.
    venue
        .client
        .send(b"F", |e| {
            e.str(41, "BEFORE-FULL")
                .str(11, "CANCEL-1")
                .str(55, "AAPL")
                .char(54, b'1')
                .str(60, "20261123-12:00:00");
        })
        .unwrap();
    let canceled = support::report(&mut venue.client);
    assert_eq!(
        text(&canceled, 150),
        "4",
        "the order from before is still on the book"
    );
}

#[test]
fn a_session_store_that_cannot_grow_ahead_refuses_new_business_and_resumes_when_space_returns() {
    // One large segment allocated before the disk fills: the session store is what runs out.
    let Some(mut venue) = Venue::start("a_session_store_that_cannot_grow_ahead", 8 << 20) else {
        return;
    };
    let refusal = venue.fill_until_refused();
    assert_refused_while_full(&mut venue, &refusal);
    let error = venue.disk_full_error();
    assert!(
        error.contains("message log") && error.contains("store") && error.contains("free_bytes="),
        "the ERROR names the file and the free space: {error}"
    );
    venue.free_and_resume();
}
