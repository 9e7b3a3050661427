//! Hostile traffic beside the measured sessions (`baton bench --hostile KIND`): what one
//! counterparty or local user can do to the venue, started at a set time of the run, so the
//! report shows the measured sessions' worst latency around it as a ratio to their steady p99.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::initiator::{Initiator, InitiatorConfig};
use super::load::LoadError;
use crate::constants;
use crate::control::api::ControlRequest;
use crate::control::client;
use crate::fix::codec::Encoder;
use crate::fix::time::Timestamp;

/// What the hostile neighbour does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostile {
    /// A session with a full store asks for all of it again, many times, in one write, while
    /// status is asked of the gateway (own venue).
    ResendStorm,
    /// Logons from unknown CompIDs, each with thousands of distinct tags.
    WideLogons,
    /// More idle connections than the connection limit, while a configured session
    /// reconnects.
    PrelogonFlood,
    /// Idle connections to the control endpoint, while an operator asks for status.
    CtlFlood,
}

impl FromStr for Hostile {
    type Err = String;

    fn from_str(text: &str) -> Result<Hostile, String> {
        match text {
            "resend-storm" => Ok(Hostile::ResendStorm),
            "wide-logons" => Ok(Hostile::WideLogons),
            "prelogon-flood" => Ok(Hostile::PrelogonFlood),
            "ctl-flood" => Ok(Hostile::CtlFlood),
            other => Err(format!(
                "unknown hostile traffic {other:?}: expected resend-storm, wide-logons, \
                 prelogon-flood or ctl-flood"
            )),
        }
    }
}

impl Hostile {
    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Hostile::ResendStorm => "resend-storm",
            Hostile::WideLogons => "wide-logons",
            Hostile::PrelogonFlood => "prelogon-flood",
            Hostile::CtlFlood => "ctl-flood",
        }
    }

    /// Whether it needs a configured session of its own beside the measured ones.
    pub fn needs_session(self) -> bool {
        matches!(self, Hostile::ResendStorm | Hostile::PrelogonFlood)
    }
}

/// Where the hostile traffic goes.
#[derive(Clone, Debug)]
pub struct HostileTarget {
    /// The FIX acceptor.
    pub fix: SocketAddr,
    /// SenderCompID of the configured session the hostile traffic may use (not a measured
    /// one).
    pub sender: String,
    /// The acceptor's CompID.
    pub target_comp_id: String,
    /// The control endpoint, when the bench knows it (its own venue).
    pub control: Option<SocketAddr>,
}

/// What preparing left for the hostile run: the storm session's next MsgSeqNum.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prepared {
    /// The hostile session's next outbound MsgSeqNum.
    seq_num_next_out: u64,
}

/// How it went, for the event report.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What happened, in words.
    pub detail: String,
    /// How long the hostile traffic lasted.
    pub lasted: Duration,
}

/// Before the measured load: gives the storm's session a full store (the gateway's answers to
/// [`constants::BENCH_HOSTILE_STORED`] orders).
pub fn prepare(kind: Hostile, target: &HostileTarget) -> Result<Prepared, LoadError> {
    if kind != Hostile::ResendStorm {
        return Ok(Prepared::default());
    }
    let mut session = Initiator::connect(
        target.fix,
        InitiatorConfig::new(&target.sender, &target.target_comp_id),
    )
    .map_err(|error| LoadError::Logon(target.sender.clone(), error.to_string()))?;
    let failed = |error: super::initiator::InitiatorError| {
        LoadError::Logon(target.sender.clone(), error.to_string())
    };
    let wait = Duration::from_secs(30);
    session.logon(true, wait).map_err(failed)?;
    let batch = 1_000;
    let mut sent = 0;
    while sent < constants::BENCH_HOSTILE_STORED {
        for n in 0..batch {
            session
                .send(b"D", |e| {
                    e.str(11, &format!("HOSTILE-{}", sent + n))
                        .str(55, "HOSTILE")
                        .char(54, b'1')
                        .str(60, "20261123-12:00:00")
                        .uint(38, 1)
                        .char(40, b'1');
                })
                .map_err(failed)?;
        }
        for _ in 0..batch {
            session
                .recv_until(wait, "an answer to a fill order", |m| {
                    m.msg_type() == b"8" || m.msg_type() == b"j"
                })
                .map_err(failed)?;
        }
        sent += batch;
    }
    session.logout(wait).map_err(failed)?;
    Ok(Prepared {
        seq_num_next_out: session.seq_num_next_out(),
    })
}

/// Does it now; returns when the hostile traffic is over.
pub fn run(kind: Hostile, target: &HostileTarget, prepared: Prepared) -> Outcome {
    let started = Instant::now();
    let detail = match kind {
        Hostile::ResendStorm => resend_storm(target, prepared),
        Hostile::WideLogons => wide_logons(target),
        Hostile::PrelogonFlood => prelogon_flood(target),
        Hostile::CtlFlood => ctl_flood(target),
    };
    Outcome {
        detail,
        lasted: started.elapsed(),
    }
}

/// One message from `sender` with MsgSeqNum `seq`.
fn build(
    encoder: &mut Encoder,
    sender: &str,
    target: &str,
    msg_type: &[u8],
    seq: u64,
    body: impl FnOnce(&mut Encoder),
) -> Vec<u8> {
    encoder
        .start(msg_type)
        .str(49, sender)
        .str(56, target)
        .uint(34, seq)
        .timestamp(52, Timestamp::now());
    body(encoder);
    encoder.finish().to_vec()
}

/// Reads and discards until the peer closes, or is quiet for `quiet` after sending something
/// (after `limit` at most); returns the bytes read and when the last arrived.
fn drain(stream: &mut TcpStream, quiet: Duration, limit: Duration) -> (u64, Instant) {
    let started = Instant::now();
    let mut last = Instant::now();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    while started.elapsed() < limit && (total == 0 || last.elapsed() < quiet) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                last = Instant::now();
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    (total, last)
}

fn resend_storm(target: &HostileTarget, prepared: Prepared) -> String {
    let mut encoder = Encoder::new("FIX.4.4");
    let (sender, comp) = (&target.sender, &target.target_comp_id);
    let mut seq = prepared.seq_num_next_out.max(1);
    let mut packet = build(&mut encoder, sender, comp, b"A", seq, |e| {
        e.uint(98, 0).uint(108, 30);
    });
    for _ in 0..constants::BENCH_HOSTILE_RESEND_REQUESTS {
        seq += 1;
        packet.extend(build(&mut encoder, sender, comp, b"2", seq, |e| {
            e.uint(7, 1).uint(16, 0);
        }));
    }
    let started = Instant::now();
    let mut stream = match TcpStream::connect_timeout(&target.fix, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(error) => return format!("could not connect: {error}"),
    };
    if let Err(error) = stream.write_all(&packet) {
        return format!("could not send: {error}");
    }
    // Meanwhile an operator (or a metrics scraper) asks for status, which reads every
    // session, the storming one included.
    let done = std::sync::atomic::AtomicBool::new(false);
    let (bytes, last, slowest_status) = std::thread::scope(|scope| {
        let poller = target.control.map(|control| {
            let done = &done;
            scope.spawn(move || {
                let mut slowest = Duration::ZERO;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let asked = Instant::now();
                    let _ =
                        client::request(control, &ControlRequest::Status, Duration::from_secs(30));
                    slowest = slowest.max(asked.elapsed());
                    std::thread::sleep(Duration::from_millis(100));
                }
                slowest
            })
        });
        let (bytes, last) = drain(&mut stream, Duration::from_secs(1), Duration::from_secs(60));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let slowest = poller.and_then(|poller| poller.join().ok());
        (bytes, last, slowest)
    });
    let status = match slowest_status {
        Some(slowest) => format!(
            "; status every 100 ms meanwhile, slowest {} ms",
            slowest.as_millis()
        ),
        None => String::new(),
    };
    format!(
        "{} ResendRequests for {} stored messages in one write; {bytes} bytes resent in {} ms{status}",
        constants::BENCH_HOSTILE_RESEND_REQUESTS,
        constants::BENCH_HOSTILE_STORED,
        last.saturating_duration_since(started).as_millis()
    )
}

fn wide_logons(target: &HostileTarget) -> String {
    let started = Instant::now();
    let threads = 4;
    let sent: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    let mut encoder = Encoder::new("FIX.4.4");
                    let mut sent = 0;
                    let per_thread = constants::BENCH_HOSTILE_WIDE_LOGONS / threads;
                    while sent < per_thread && started.elapsed() < Duration::from_secs(10) {
                        let sender = format!("STRANGER{thread}-{sent}");
                        let logon = build(
                            &mut encoder,
                            &sender,
                            &target.target_comp_id,
                            b"A",
                            1,
                            |e| {
                                e.uint(98, 0).uint(108, 30);
                                for tag in 0..constants::BENCH_HOSTILE_WIDE_TAGS {
                                    e.str(10_000 + tag, "1");
                                }
                            },
                        );
                        if let Ok(mut stream) =
                            TcpStream::connect_timeout(&target.fix, Duration::from_secs(5))
                        {
                            let _ = stream.write_all(&logon);
                            drain(&mut stream, Duration::from_secs(2), Duration::from_secs(2));
                        }
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    format!(
        "{sent} Logons of {} distinct tags from unknown CompIDs in {} ms",
        constants::BENCH_HOSTILE_WIDE_TAGS,
        started.elapsed().as_millis()
    )
}

/// Opens `count` connections to `addr` that never send anything.
fn idle_connections(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .collect()
}

fn prelogon_flood(target: &HostileTarget) -> String {
    let idle = idle_connections(target.fix, constants::BENCH_HOSTILE_IDLE_CONNECTIONS);
    let opened = idle.len();
    // The spare session reconnects, as a counterparty would after a network blip.
    let started = Instant::now();
    let mut attempts = 0;
    let logged_on = loop {
        attempts += 1;
        if started.elapsed() > Duration::from_secs(15) {
            break None;
        }
        let config = InitiatorConfig::new(&target.sender, &target.target_comp_id);
        let Ok(mut session) = Initiator::connect(target.fix, config) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        match session.logon(true, Duration::from_secs(15)) {
            Ok(answer) if answer.msg_type() == b"A" => {
                let took = started.elapsed();
                let _ = session.logout(Duration::from_secs(5));
                break Some(took);
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    drop(idle);
    match logged_on {
        Some(took) => format!(
            "{opened} idle connections; a configured session reconnecting logged on after {} ms \
             ({attempts} attempts)",
            took.as_millis()
        ),
        None => format!(
            "{opened} idle connections; a configured session reconnecting could not log on in \
             15 s ({attempts} attempts)"
        ),
    }
}

fn ctl_flood(target: &HostileTarget) -> String {
    let Some(control) = target.control else {
        return "no control endpoint known (own venue only)".into();
    };
    let idle = idle_connections(control, constants::BENCH_HOSTILE_IDLE_CONTROL_CONNECTIONS);
    let opened = idle.len();
    let started = Instant::now();
    let answer = client::request(control, &ControlRequest::Status, Duration::from_secs(60));
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    drop(idle);
    match answer {
        Ok(_) => format!(
            "{opened} idle control connections; status answered in {} ms",
            took.as_millis()
        ),
        Err(error) => format!(
            "{opened} idle control connections; status failed after {} ms: {error}",
            took.as_millis()
        ),
    }
}
