//! Hostile neighbours: one counterparty trades normally through the real gateway and engines
//! while other connections do their worst: a ResendRequest storm over a full store, Logons from
//! unknown CompIDs with thousands of tags, a flood of connections that never log on, and a
//! session that fills its queue behind a sequence gap, while an operator asks for status. The
//! well-behaved session must get every order answered, no engine link may drop, and the
//! gateway's memory stays bounded.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use baton::bench::initiator::InitiatorError;
use baton::control::api::EngineRole;
use baton::fix::codec::Encoder;
use baton::fix::time::Timestamp;
use support::control::{audit_events, status};
use support::{
    EngineProcess, Gateway, WAIT, logged_on, probe_order_fields, send_probe,
    start_gateway_for_engines, text, wait_for_engine, wait_for_socket, write_config,
};

/// Bound for what the hostile connections take to do their part on a loaded machine.
const LONG_WAIT: Duration = Duration::from_secs(60);

/// Idle connections in the flood: more than the default `connections_max` (1,024).
const FLOOD: usize = 1_100;

/// Messages the resend storm's session has in its store before the storm: each request asks
/// for all of them.
const STORED: usize = 3_000;

/// ResendRequests in the storm, in one write.
const STORM_REQUESTS: usize = 200;

/// Bytes the storm's session must receive for its resend to count as served: at least a
/// hundred bytes for each stored message, about one full resend of the store.
const RESENT_BYTES_MIN: u64 = (STORED * 100) as u64;

/// Waits until the well-behaved session's trader has had more than `beyond` orders answered;
/// it asserts each answer itself, so a stall here means the session stopped being served.
fn answered_beyond(answered: &AtomicU64, beyond: u64, what: &str) {
    let deadline = Instant::now() + LONG_WAIT;
    while answered.load(Ordering::Relaxed) <= beyond {
        assert!(
            Instant::now() < deadline,
            "{what}: {} answered within {LONG_WAIT:?}",
            answered.load(Ordering::Relaxed)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// How much the gateway's resident memory may grow during the attack. Serving each request in
/// full at once, as a gateway without write backpressure does, takes STORM_REQUESTS times the
/// store (about 140 MB here); bounded steps take a few hundred kilobytes.
const RSS_GROWTH_MAX_KB: u64 = 64 * 1024;

/// Blue (authoritative) and green (standby) engines behind a gateway with `sessions` sessions,
/// `runtime_threads` threads (`[gateway] runtime_threads`, 0: a worker per core) and a control
/// endpoint the test can reach.
fn venue(
    dir: &Path,
    sessions: usize,
    runtime_threads: usize,
) -> (EngineProcess, EngineProcess, Gateway, SocketAddr) {
    let config = dir.join("baton.toml");
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\
         runtime_threads = {runtime_threads}\n\n\
         [control]\napproval_required = []\n\n[defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n",
    );
    for n in 1..=sessions {
        text.push_str(&format!("\n[[session]]\nTargetCompID = \"CLIENT{n}\"\n"));
    }
    std::fs::write(&config, text).expect("config");
    let blue = EngineProcess::start(&config, dir, "blue");
    wait_for_socket(&dir.join("blue.sock"));
    let green = EngineProcess::start(&config, dir, "green");
    wait_for_socket(&dir.join("green.sock"));
    let gateway = start_gateway_for_engines(dir, &[&blue.addr, &green.addr]);
    let control = gateway.control;
    (blue, green, gateway, control)
}

/// Resident memory of process `pid`, KiB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A message from `sender` to the gateway with MsgSeqNum `seq`.
fn build(
    encoder: &mut Encoder,
    sender: &str,
    msg_type: &[u8],
    seq: u64,
    body: impl FnOnce(&mut Encoder),
) -> Vec<u8> {
    encoder
        .start(msg_type)
        .str(49, sender)
        .str(56, "BATON")
        .uint(34, seq)
        .timestamp(52, Timestamp::now());
    body(encoder);
    encoder.finish().to_vec()
}

/// Reads and discards everything from `stream` until it closes, goes quiet for a few seconds
/// once more than `enough` bytes came, or `LONG_WAIT` passes; returns the byte count. A pause
/// before `enough` (a loaded machine) never ends it, so only the bytes the caller asserts on
/// come before a quiet is taken for the end.
fn drain(mut stream: TcpStream, enough: u64) -> u64 {
    let deadline = Instant::now() + LONG_WAIT;
    let mut last_byte = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                last_byte = Instant::now();
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if total > enough && last_byte.elapsed() > Duration::from_secs(3) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    total
}

/// Opens `count` connections that never send a byte, and keeps them.
fn flood(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
        .collect()
}

/// Logs CLIENTn on and off `rounds` times; each Logon must be answered.
fn reconnects_log_on(gateway: &Gateway, n: usize, rounds: usize) {
    for round in 0..rounds {
        let deadline = Instant::now() + WAIT;
        let mut client = loop {
            let mut client = gateway.client(n);
            // A new day each time: sequence numbers start again at 1.
            match client.logon(true, WAIT) {
                Ok(logon) if logon.msg_type() == b"A" => break client,
                Ok(other) => panic!("round {round}: Logon answered with {other:?}"),
                // Closed without a message: the gateway has not noticed the previous round's
                // close yet, and refuses a second connection silently. Anything else (no
                // answer at all, garbage) is a failure, not a reason to try again.
                Err(InitiatorError::Closed | InitiatorError::Io(_)) => {
                    assert!(Instant::now() < deadline, "round {round}: still connected")
                }
                Err(error) => panic!("round {round}: Logon not answered: {error}"),
            }
            thread::sleep(Duration::from_millis(20));
        };
        client.logout(WAIT).expect("Logout answered");
        assert!(client.closed_within(WAIT));
    }
}

#[test]
fn idle_connections_never_keep_a_counterparty_from_logging_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let gateway = Gateway::start(&config, &dir.path().join("store"));
    let idle = flood(gateway.addr, FLOOD);
    assert!(idle.len() > 1_024, "only {} connected", idle.len());
    // The idle sockets are still open on this side (and, without a pre-logon budget, on the
    // gateway's until its 10 s Logon timeout): the counterparty logs on anyway, every time.
    reconnects_log_on(&gateway, 1, 3);
    // And again while more keep arriving.
    let more = flood(gateway.addr, 300);
    reconnects_log_on(&gateway, 1, 2);
    drop((idle, more));
}

#[test]
fn hostile_neighbours_do_not_hurt_a_well_behaved_session() {
    hostile_neighbours_on(0);
}

/// Invariant 9 with the gateway on one thread (`runtime_threads = 1`): sessions, the sequencer
/// and the engine links then share that thread, so engine-link liveness holds only if a
/// session's work per wake-up stays bounded.
#[test]
fn hostile_neighbours_do_not_hurt_a_well_behaved_session_on_a_one_thread_gateway() {
    hostile_neighbours_on(1);
}

/// A resend storm, wide Logons, idle connections and a session behind a gap beside a well-behaved
/// session, on a gateway with `runtime_threads` threads: the session keeps being answered,
/// memory stays bounded, no engine link drops.
fn hostile_neighbours_on(runtime_threads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (_blue, _green, gateway, control) = venue(dir.path(), 4, runtime_threads);
    let pid = gateway.child.id();

    // Both engines attached: blue authoritative, green its standby.
    let mut good = logged_on(&gateway, 1);
    wait_for_engine(&mut good);
    let deadline = Instant::now() + LONG_WAIT;
    while !status(control)
        .engines
        .iter()
        .all(|engine| matches!(engine.role, EngineRole::Authoritative | EngineRole::Standby))
    {
        assert!(Instant::now() < deadline, "standby never attached");
        thread::sleep(Duration::from_millis(50));
    }

    // The storm's session fills its store first: STORED answers from the engine.
    let mut hostile = logged_on(&gateway, 2);
    for batch in 0..STORED / 100 {
        for n in 0..100 {
            send_probe(&mut hostile, &format!("FILL-{batch}-{n}")).expect("send order");
        }
        for _ in 0..100 {
            hostile
                .recv_until(LONG_WAIT, "fill answer", |m| m.msg_type() == b"8")
                .expect("fill order answered");
        }
    }
    hostile.logout(WAIT).expect("Logout answered");
    let storm_seq = hostile.seq_num_next_out();
    drop(hostile);

    let rss_before = rss_kb(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let rss_peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (stop, peak) = (stop.clone(), rss_peak.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                // The sampling interval, not a wait for anything.
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The well-behaved session: one order at a time, each must be answered by the engine.
    let trading = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(AtomicU64::new(0));
    let trader = {
        let (trading, answered_so_far) = (trading.clone(), answered.clone());
        thread::spawn(move || {
            let mut answered = 0u64;
            while trading.load(Ordering::Relaxed) {
                let id = format!("GOOD-{answered}");
                send_probe(&mut good, &id).expect("send order");
                let answer = good
                    .recv_until(LONG_WAIT, "answer", |m| {
                        m.msg_type() == b"8" || m.msg_type() == b"j"
                    })
                    .unwrap_or_else(|error| panic!("{id}: {error}"));
                assert_eq!(answer.msg_type(), b"8", "{id}: {answer:?}");
                assert_eq!(text(&answer, 11), id);
                answered += 1;
                answered_so_far.store(answered, Ordering::Relaxed);
            }
            assert_eq!(good.gaps(), 0);
            good.logout(WAIT).expect("good session logs out normally");
            answered
        })
    };
    // The attacks start once the well-behaved session is trading.
    answered_beyond(
        &answered,
        0,
        "the well-behaved session trading before the attacks",
    );

    // 1. The storm: Logon, orders in flight, and STORM_REQUESTS ResendRequests for everything,
    //    all in one write.
    let storm = {
        let addr = gateway.addr;
        thread::spawn(move || {
            let mut encoder = Encoder::new("FIX.4.4");
            let mut packet = Vec::new();
            let mut seq = storm_seq;
            packet.extend(build(&mut encoder, "CLIENT2", b"A", seq, |e| {
                e.uint(98, 0).uint(108, 30);
            }));
            for n in 0..50 {
                seq += 1;
                packet.extend(build(&mut encoder, "CLIENT2", b"D", seq, |e| {
                    probe_order_fields(e, &format!("STORM-{n}"));
                }));
            }
            for _ in 0..STORM_REQUESTS {
                seq += 1;
                packet.extend(build(&mut encoder, "CLIENT2", b"2", seq, |e| {
                    e.uint(7, 1).uint(16, 0);
                }));
            }
            // The gateway may not have noticed the Logout's close yet: a second connection for
            // the session is then closed without a byte and nothing of it was processed, so the
            // same packet is sent again on a new one.
            let deadline = Instant::now() + LONG_WAIT;
            loop {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.write_all(&packet).expect("write the storm");
                let received = drain(stream, RESENT_BYTES_MIN);
                if received > 0 || Instant::now() > deadline {
                    break received;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Meanwhile an operator asks for status, which reads every session, the storming one too.
    let poller = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                status(control);
                // An operator's pace, part of the load; not a wait for anything.
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // 2. Logons with thousands of distinct tags from CompIDs nobody configured.
    let wide = {
        let addr = gateway.addr;
        thread::spawn(move || {
            let mut encoder = Encoder::new("FIX.4.4");
            for n in 0..10 {
                let logon = build(&mut encoder, &format!("STRANGER{n}"), b"A", 1, |e| {
                    e.uint(98, 0).uint(108, 30);
                    // 7,000 distinct tags: just under the 64 KiB body limit.
                    for tag in 10_000..17_000 {
                        e.str(tag, "1");
                    }
                });
                if let Ok(mut stream) = TcpStream::connect(addr) {
                    let _ = stream.write_all(&logon);
                    let _ = stream.set_read_timeout(Some(LONG_WAIT));
                    let _ = stream.read(&mut [0u8; 1024]);
                }
            }
        })
    };

    // 3. Connections that never log on, more than the connection limit, while a configured
    //    counterparty reconnects.
    let idle = flood(gateway.addr, FLOOD);
    reconnects_log_on(&gateway, 3, 2);

    // 4. A session that queues messages behind a sequence gap.
    let mut gapper = logged_on(&gateway, 4);
    let filler = "x".repeat(4_000);
    let ahead = gapper.seq_num_next_out() + 10;
    for n in 0..1_000 {
        gapper
            .send_with_seq(b"0", ahead + n, |e| {
                e.str(58, &filler);
            })
            .expect("gap filler sent");
    }

    wide.join().expect("wide Logons");
    // The storm's session gets its resend, paced by its reading, until it goes quiet.
    let storm_bytes = storm.join().expect("storm");
    // The well-behaved session is still answered after every attack did its part.
    let after_attacks = answered.load(Ordering::Relaxed);
    answered_beyond(
        &answered,
        after_attacks + 10,
        "ten more orders of the well-behaved session answered after the attacks",
    );
    trading.store(false, Ordering::Relaxed);
    let answered = trader.join().expect("the well-behaved session");
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    poller.join().expect("status answered throughout");
    drop((idle, gapper));

    let peak = rss_peak.load(Ordering::Relaxed);
    eprintln!(
        "hostile neighbours: {answered} orders answered; storm session got {storm_bytes} bytes; \
         RSS {rss_before} KiB before, {peak} KiB peak"
    );
    assert!(
        storm_bytes > RESENT_BYTES_MIN,
        "the storm's resend was served: {storm_bytes} bytes"
    );
    assert!(
        peak.saturating_sub(rss_before) < RSS_GROWTH_MAX_KB,
        "RSS grew from {rss_before} KiB to {peak} KiB"
    );
    // No engine link dropped: no failover, and each engine attached once.
    let after = status(control);
    assert_eq!(after.switches, 0, "{:?}", after.last_switch);
    assert!(
        after
            .engines
            .iter()
            .all(|engine| matches!(engine.role, EngineRole::Authoritative | EngineRole::Standby)),
        "{:?}",
        after.engines
    );
    let attached = audit_events(dir.path())
        .iter()
        .filter(|event| event.contains("attached"))
        .count();
    assert_eq!(attached, 2, "{:?}", audit_events(dir.path()));
}
