//! Recovery with real processes: the engine dies and comes back, the gateway is SIGKILLed and
//! restarted, and the journal alone rebuilds the engine's exact state. Nothing is lost and
//! nothing is delivered twice.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use baton::bench::initiator::{Initiator, InitiatorError};
use baton::fix::codec::Message;
use support::control::status_until;
use support::{
    EngineProcess, WAIT, logged_on, new_order, report, send_probe, start_gateway_for,
    start_trading, text, wait_for_engine,
};

/// ExecIDs seen by one counterparty; a repeat is a duplicated execution.
fn assert_unique_exec_ids(reports: &[Message]) {
    let mut seen = HashSet::new();
    for report in reports.iter().filter(|m| m.msg_type() == b"8") {
        assert!(
            seen.insert(text(report, 17)),
            "ExecID {} delivered twice",
            text(report, 17)
        );
    }
}

/// Waits until the gateway has noticed its engine is gone: probes until one is answered by the
/// gateway itself (BusinessMessageReject naming that probe). A probe sent before it noticed may
/// stay unanswered, so each gets a short wait and the next one is sent; rejects of earlier
/// probes arrive before the one awaited and are skipped.
fn wait_for_no_engine(client: &mut Initiator) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let id = format!("GONE-{attempt}");
        new_order(client, &id, b'1', 1, "10");
        let answer = client.recv_until(Duration::from_millis(500), "probe reject", |m| {
            m.msg_type() == b"j" && text(m, 379) == id
        });
        match answer {
            Ok(reject) => {
                assert_eq!(text(&reject, 380), "4", "{reject:?}");
                return;
            }
            Err(InitiatorError::Timeout(_)) => assert!(
                Instant::now() < deadline,
                "the gateway never noticed its engine is gone"
            ),
            Err(error) => panic!("the session failed while probing: {error}"),
        }
    }
}

#[test]
fn engine_down_means_business_reject_and_sessions_stay_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, gateway) = start_trading(dir.path(), 1);
    let mut client = logged_on(&gateway, 1);
    wait_for_engine(&mut client);
    engine.kill();
    wait_for_no_engine(&mut client);
    new_order(&mut client, "DOWN-1", b'1', 10, "10");
    let reject = client
        .recv_until(WAIT, "BusinessMessageReject", |m| m.msg_type() == b"j")
        .unwrap();
    assert_eq!(text(&reject, 380), "4");
    assert_eq!(text(&reject, 379), "DOWN-1");
    client
        .send(b"1", |e| {
            e.str(112, "alive");
        })
        .unwrap();
    client
        .recv_until(WAIT, "Heartbeat", |m| m.get(112).is_some())
        .unwrap();
}

#[test]
fn restarted_engine_is_rebuilt_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, gateway) = start_trading(dir.path(), 2);
    let mut buyer = logged_on(&gateway, 1);
    let mut seller = logged_on(&gateway, 2);
    wait_for_engine(&mut seller);
    new_order(&mut seller, "S-1", b'2', 100, "20");
    let ack = report(&mut seller);
    assert_eq!(text(&ack, 150), "0");
    let order_id = text(&ack, 37);

    // The engine process dies with the resting order in its book; a fresh one starts empty.
    engine.kill();
    let _engine = EngineProcess::start(&dir.path().join("baton.toml"), dir.path(), "blue");
    wait_for_engine(&mut buyer);

    // The book was rebuilt from the journal: the resting order is still there to trade against,
    // and its acknowledgement was not sent again.
    new_order(&mut buyer, "B-1", b'1', 40, "20");
    assert_eq!(text(&report(&mut buyer), 150), "0");
    let fill = report(&mut buyer);
    assert_eq!(
        (text(&fill, 150), text(&fill, 32), text(&fill, 31)),
        ("F".into(), "40".into(), "20".into())
    );
    let passive = report(&mut seller);
    assert_eq!(
        (text(&passive, 150), text(&passive, 11)),
        ("F".into(), "S-1".into()),
        "no second ack before the fill"
    );
    assert_eq!(text(&passive, 37), order_id);
    assert_eq!(
        (text(&passive, 14), text(&passive, 151)),
        ("40".into(), "60".into())
    );
    assert_eq!((buyer.gaps(), seller.gaps()), (0, 0));
}

#[test]
fn gateway_sigkill_and_restart_delivers_every_report_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_engine, mut gateway) = start_trading(dir.path(), 2);
    let mut buyer = logged_on(&gateway, 1);
    let mut seller = logged_on(&gateway, 2);
    wait_for_engine(&mut buyer);
    let mut seller_reports = Vec::new();
    for i in 0..20 {
        new_order(&mut seller, &format!("S-{i}"), b'2', 10, "40");
        seller_reports.push(report(&mut seller));
    }
    for i in 0..5 {
        new_order(&mut buyer, &format!("B-{i}"), b'1', 10, "40");
        report(&mut buyer);
        report(&mut buyer);
        seller_reports.push(report(&mut seller));
    }
    let resume = |client: &Initiator| (client.seq_num_next_out(), client.seq_num_next_in());
    let (buyer_seqs, seller_seqs) = (resume(&buyer), resume(&seller));
    gateway.kill();
    drop((buyer, seller));

    // Same store, same journal, same (still running) engine.
    let gateway = start_gateway_for(
        dir.path(),
        &format!("unix://{}", dir.path().join("blue.sock").display()),
    );
    let reconnect = |n: usize, (out, inn): (u64, u64)| {
        let mut client = gateway.client(n);
        client.set_seq_num_next_out(out);
        client.set_seq_num_next_in(inn);
        let logon = client.logon(false, WAIT).unwrap();
        assert_eq!(
            text(&logon, 34),
            inn.to_string(),
            "numbering continues, nothing extra was stored"
        );
        client
    };
    let mut buyer = reconnect(1, buyer_seqs);
    let mut seller = reconnect(2, seller_seqs);
    wait_for_engine(&mut buyer);
    for i in 5..10 {
        new_order(&mut buyer, &format!("B-{i}"), b'1', 10, "40");
        let ack = report(&mut buyer);
        assert_eq!(text(&ack, 150), "0");
        assert_eq!(text(&report(&mut buyer), 150), "F");
        seller_reports.push(report(&mut seller));
    }
    assert_unique_exec_ids(&seller_reports);
    assert_eq!((buyer.gaps(), seller.gaps()), (0, 0));
    // Nothing more is pending: the outbox delivers in input order, so a stray report for an
    // earlier input would come before the answer to a probe sent now.
    send_probe(&mut seller, "AFTER").expect("send probe");
    let next = seller
        .recv_until(WAIT, "the probe's answer", |m| m.msg_type() == b"8")
        .expect("probe answered");
    assert_eq!(text(&next, 11), "AFTER", "a stray report: {next:?}");
}

#[test]
fn journal_replay_reproduces_the_engine_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (_engine, mut gateway) = start_trading(dir.path(), 2);
    let mut buyer = logged_on(&gateway, 1);
    let mut seller = logged_on(&gateway, 2);
    wait_for_engine(&mut buyer);
    for i in 0..10 {
        new_order(
            &mut seller,
            &format!("S-{i}"),
            b'2',
            10 + i,
            &format!("{}", 50 + i % 3),
        );
        report(&mut seller);
    }
    for i in 0..4 {
        new_order(&mut buyer, &format!("B-{i}"), b'1', 15, "51");
        report(&mut buyer);
    }
    // Every input answered and delivered before the gateway stops, so the engine is idle.
    status_until(gateway.control, "every input delivered", |s| {
        s.journal_last_seq > 0 && s.delivered_through == s.journal_last_seq
    });
    gateway.kill();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: baton::link::LinkAddr = format!("unix://{}", dir.path().join("blue.sock").display())
        .parse()
        .unwrap();
    // Bounded as a whole: an engine that never sends its digest fails the test, not hangs it.
    let live = runtime.block_on(async {
        let digest = async {
            let (mut link, hello) = baton::link::connect(&addr).await.unwrap();
            link.request_digest().await.unwrap();
            loop {
                if let baton::link::Frame::Digest(report) = link.recv().await.unwrap() {
                    assert_eq!(report.at_input_seq, hello.last_input_seq);
                    return report.digest.to_string();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), digest)
            .await
            .expect("the engine's digest within 60 s")
    });

    let output = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["journal", "replay", "--config"])
            .arg(dir.path().join("baton.toml"))
            .arg("--journal-dir")
            .arg(dir.path().join("journal")),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let replayed = stdout
        .lines()
        .find_map(|line| line.strip_prefix("digest "))
        .unwrap_or_else(|| panic!("no digest in {stdout}"));
    assert_eq!(replayed, live);
}
