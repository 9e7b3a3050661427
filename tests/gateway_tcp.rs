//! The gateway over real TCP, with the real `baton` binary: logon, heartbeats, logout,
//! refusals, business messages without an engine, and SIGKILL-and-restart recovery with resend.
//! Gaps and garbled bytes are the session's rules, tested in `fix::session` on virtual time.

mod support;

use baton::bench::initiator::{Initiator, InitiatorError};
use baton::fix::codec::{Encoder, Message};
use support::{Gateway, WAIT, text, write_config};

/// The fields of the limit buy for ACME these tests send, so an order with extra fields (the
/// parties tests) differs from the plain one only by those.
fn acme_order_fields(e: &mut Encoder, cl_ord_id: &str) {
    e.str(11, cl_ord_id)
        .str(55, "ACME")
        .char(54, b'1')
        .str(60, "20261123-12:00:00")
        .uint(38, 100)
        .char(40, b'2')
        .str(44, "10.5");
}

/// Sends a TestRequest with TestReqID `id` and returns the Heartbeat that answers it: the
/// check that a session is still alive and processing after whatever the test did to it.
fn test_request_answered(client: &mut Initiator, id: &str) -> Message {
    client
        .send(b"1", |e| {
            e.str(112, id);
        })
        .unwrap();
    client
        .recv_until(WAIT, "Heartbeat", |m| m.get(112).is_some())
        .unwrap()
}

fn send_order(client: &mut Initiator, cl_ord_id: &str) -> u64 {
    client
        .send(b"D", |e| acme_order_fields(e, cl_ord_id))
        .expect("send order")
}

fn setup(sessions: usize) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), sessions, "");
    let gateway = Gateway::start(&config, &dir.path().join("store"));
    (dir, gateway)
}

#[test]
fn logon_heartbeat_and_logout_over_tcp() {
    let (_dir, gateway) = setup(1);
    let mut client = gateway.client(1);
    client.set_auto_heartbeat(false);
    let mut config_hb = baton::bench::initiator::InitiatorConfig::new("CLIENT1", "BATON");
    config_hb.heart_bt_int_s = 1;
    let mut client = Initiator::connect(gateway.addr, config_hb).unwrap();
    drop(gateway.client(1)); // an idle extra connection must not disturb anything
    let logon = client.logon(false, WAIT).unwrap();
    assert_eq!(logon.msg_type(), b"A");
    assert_eq!(text(&logon, 108), "1");
    let heartbeat = client
        .recv_until(WAIT, "Heartbeat", |m| m.msg_type() == b"0")
        .unwrap();
    assert_eq!(text(&heartbeat, 49), "BATON");
    let answer = test_request_answered(&mut client, "are-you-there");
    assert_eq!(text(&answer, 112), "are-you-there");
    let logout = client.logout(WAIT).unwrap();
    assert_eq!(logout.msg_type(), b"5");
    assert!(client.closed_within(WAIT));
    assert_eq!(client.gaps(), 0);
}

#[test]
fn business_message_without_engine_gets_business_message_reject() {
    let (_dir, gateway) = setup(1);
    let mut client = gateway.client(1);
    client.logon(false, WAIT).unwrap();
    let seq = send_order(&mut client, "ORD-1");
    let reject = client
        .recv_until(WAIT, "BusinessMessageReject", |m| m.msg_type() == b"j")
        .unwrap();
    assert_eq!(text(&reject, 380), "4");
    assert_eq!(text(&reject, 45), seq.to_string());
    assert_eq!(text(&reject, 372), "D");
    assert_eq!(text(&reject, 379), "ORD-1");
    // The session stays up.
    test_request_answered(&mut client, "still-here");
}

#[test]
fn unknown_comp_id_and_second_connection_are_closed_without_a_message() {
    let (_dir, gateway) = setup(1);
    let mut stranger = Initiator::connect(
        gateway.addr,
        baton::bench::initiator::InitiatorConfig::new("NOBODY", "BATON"),
    )
    .unwrap();
    let answer = stranger.logon(false, WAIT);
    assert!(
        matches!(answer, Err(InitiatorError::Closed)),
        "closed with nothing sent: {answer:?}"
    );

    let mut first = gateway.client(1);
    first.logon(false, WAIT).unwrap();
    let mut second = gateway.client(1);
    let answer = second.logon(false, WAIT);
    assert!(
        matches!(answer, Err(InitiatorError::Closed)),
        "closed with nothing sent: {answer:?}"
    );
    // The first connection is untouched.
    test_request_answered(&mut first, "first");
}

#[test]
fn many_sessions_run_concurrently() {
    const SESSIONS: usize = 20;
    let (_dir, gateway) = setup(SESSIONS);
    let addr = gateway.addr;
    let threads: Vec<_> = (1..=SESSIONS)
        .map(|n| {
            std::thread::spawn(move || {
                let mut client = Initiator::connect(
                    addr,
                    baton::bench::initiator::InitiatorConfig::new(&format!("CLIENT{n}"), "BATON"),
                )
                .unwrap();
                client.logon(false, WAIT).unwrap();
                for i in 0..10 {
                    send_order(&mut client, &format!("C{n}-{i}"));
                }
                for i in 0..10 {
                    let reject = client
                        .recv_until(WAIT, "reject", |m| m.msg_type() == b"j")
                        .unwrap();
                    assert_eq!(text(&reject, 379), format!("C{n}-{i}"));
                }
                client.logout(WAIT).unwrap();
                client.gaps()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 0);
    }
}

#[test]
fn sigkill_and_restart_keeps_sequence_numbers_and_resend() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let store = dir.path().join("store");
    let mut gateway = Gateway::start(&config, &store);
    let mut client = gateway.client(1);
    client.logon(false, WAIT).unwrap();
    for i in 0..25 {
        send_order(&mut client, &format!("K-{i}"));
        client
            .recv_until(WAIT, "reject", |m| m.msg_type() == b"j")
            .unwrap();
    }
    let (out_before, in_before) = (client.seq_num_next_out(), client.seq_num_next_in());
    gateway.kill();
    assert!(client.closed_within(WAIT));

    let gateway = Gateway::start(&config, &store);
    let mut client = gateway.client(1);
    client.set_seq_num_next_out(out_before);
    client.set_seq_num_next_in(in_before);
    let logon = client.logon(false, WAIT).unwrap();
    assert_eq!(logon.msg_type(), b"A", "{logon:?}");
    assert_eq!(
        text(&logon, 34),
        in_before.to_string(),
        "gateway continues its numbering"
    );
    assert_eq!(client.gaps(), 0);
    // Everything sent before the kill can still be resent.
    client
        .send(b"2", |e| {
            e.uint(7, 1).uint(16, 0);
        })
        .unwrap();
    let mut resent = Vec::new();
    while resent.len() < 25 {
        let message = client
            .recv_until(WAIT, "resent reject", |m| m.msg_type() == b"j")
            .unwrap();
        assert_eq!(text(&message, 43), "Y");
        assert!(message.get(122).is_some());
        resent.push(text(&message, 379));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("K-{i}")).collect();
    assert_eq!(resent, expected);
}

/// A Logon for CLIENT1 padded with a Username of `padding` bytes.
fn padded_logon(padding: usize) -> Vec<u8> {
    let mut encoder = baton::fix::codec::Encoder::new("FIX.4.4");
    encoder
        .start(b"A")
        .str(49, "CLIENT1")
        .str(56, "BATON")
        .uint(34, 1)
        .timestamp(52, baton::fix::time::Timestamp::now())
        .uint(98, 0)
        .uint(108, 30)
        .bytes(553, &vec![b'u'; padding]);
    encoder.finish().to_vec()
}

#[test]
fn oversized_message_before_logon_closes_the_connection_unanswered() {
    use std::io::{Read, Write};
    let (_dir, gateway) = setup(1);
    let mut logon = padded_logon(2 * baton::constants::LOGON_BODY_LENGTH_MAX);
    assert!(logon.len() < baton::constants::BODY_LENGTH_MAX);
    // A proper Logon right behind it: a gateway that skipped the big frame and read on would
    // answer this one.
    logon.extend_from_slice(&padded_logon(8));
    let mut stream = std::net::TcpStream::connect(gateway.addr).unwrap();
    stream.set_read_timeout(Some(WAIT * 3)).unwrap();
    // The gateway may close while the body is still being written; that is the point.
    let _ = stream.write_all(&logon);
    let mut answer = Vec::new();
    let closed = match stream.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the connection must be closed, not left waiting");
    // Neither Logon was answered: the connection ended at the oversized header.
    assert!(
        answer.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&answer)
    );
    // The session itself is unharmed, and once logged on may send large messages.
    let mut client = gateway.client(1);
    client.logon(false, WAIT).unwrap();
    let seq = client
        .send(b"D", |e| {
            acme_order_fields(e, "BIG-1");
            e.bytes(58, &vec![b't'; 2 * baton::constants::LOGON_BODY_LENGTH_MAX]);
        })
        .unwrap();
    let reject = client
        .recv_until(WAIT, "BusinessMessageReject", |m| m.msg_type() == b"j")
        .unwrap();
    assert_eq!(text(&reject, 45), seq.to_string());
}

#[test]
fn orders_without_the_venues_required_party_roles_are_refused_with_a_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config.push_str("\n[venue]\nparties_required_roles = [3, 12]\n");
    std::fs::write(&config, text_config).unwrap();
    let gateway = Gateway::start(&config, &dir.path().join("store"));
    let mut client = gateway.client(1);
    client.logon(false, WAIT).unwrap();
    let order = |client: &mut Initiator, cl_ord_id: &str, parties: &[(u32, &str)]| {
        client
            .send(b"D", |e| {
                acme_order_fields(e, cl_ord_id);
                for (tag, value) in parties {
                    e.str(*tag, value);
                }
            })
            .unwrap()
    };
    // Only the client ID: the executing trader is missing.
    let seq = order(
        &mut client,
        "NO-TRADER",
        &[(453, "1"), (448, "12345"), (447, "P"), (452, "3")],
    );
    let reject = client
        .recv_until(WAIT, "BusinessMessageReject", |m| m.msg_type() == b"j")
        .unwrap();
    assert_eq!(text(&reject, 45), seq.to_string());
    assert_eq!(text(&reject, 380), "5");
    assert_eq!(
        text(&reject, 58),
        "Parties (453) must include PartyRole 12 (EXECUTING_TRADER); the venue requires it on every order"
    );
    // Both roles: the rule passes and the order goes on (here to "no engine", 380=4).
    let seq = order(
        &mut client,
        "BOTH",
        &[
            (453, "2"),
            (448, "12345"),
            (447, "P"),
            (452, "3"),
            (448, "7"),
            (447, "P"),
            (452, "12"),
            (2376, "24"),
        ],
    );
    let reject = client
        .recv_until(WAIT, "BusinessMessageReject", |m| {
            m.msg_type() == b"j" && m.get(45) == Some(seq.to_string().as_bytes())
        })
        .unwrap();
    assert_eq!(text(&reject, 380), "4");
}

#[test]
fn message_with_more_fields_than_the_cap_gets_a_reject_and_the_session_goes_on() {
    let (_dir, gateway) = setup(1);
    let mut client = gateway.client(1);
    client.logon(false, WAIT).unwrap();
    let seq = client
        .send(b"D", |e| {
            e.str(11, "WIDE-1").str(55, "ACME").char(54, b'1');
            for i in 0..baton::constants::FIELDS_PER_MESSAGE_MAX {
                e.uint(5_000 + i as u32, 1);
            }
        })
        .unwrap();
    let reject = client
        .recv_until(WAIT, "Reject", |m| m.msg_type() == b"3")
        .unwrap();
    assert_eq!(text(&reject, 45), seq.to_string());
    assert_eq!(text(&reject, 373), "99");
    let answer = test_request_answered(&mut client, "after-wide");
    assert_eq!(text(&answer, 112), "after-wide");
}
