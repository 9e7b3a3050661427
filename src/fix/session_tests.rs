//! The FIX session-level behaviors of an acceptor, on virtual time, byte for byte.

use super::*;
use crate::fix::codec::{Decoder, Encoder, Frame, Message};
use crate::fix::schedule::{Schedule, TimeOfDay};
use crate::fix::store::MemoryStore;

/// Monday 2026-11-23 12:00:00 UTC.
const T0: Timestamp = Timestamp::from_secs(1_795_435_200);

/// A counterparty written from the FIX specification, driving one session.
struct Harness {
    session: Session<MemoryStore>,
    now: Timestamp,
    /// The counterparty's next outbound MsgSeqNum.
    seq: u64,
    encoder: Encoder,
}

/// What the session sent back, parsed.
fn parse_all(bytes: &[u8]) -> Vec<Message> {
    let decoder = Decoder::new(1 << 16);
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match decoder.frame(&bytes[at..]) {
            Frame::Complete(len) => {
                out.push(
                    Message::parse(&bytes[at..at + len]).expect("session sent a garbled message"),
                );
                at += len;
            }
            other => panic!("session sent a bad frame: {other:?}"),
        }
    }
    out
}

fn text(message: &Message, tag: u32) -> String {
    String::from_utf8_lossy(message.get(tag).unwrap_or_default()).into_owned()
}

impl Harness {
    fn with_config(config: SessionConfig) -> Harness {
        Harness::with_store(config, MemoryStore::new())
    }

    /// A session over a store that already holds sequence numbers (a restart).
    fn with_store(config: SessionConfig, store: MemoryStore) -> Harness {
        let mut session = Session::new(config, store, Dictionary::venue());
        session.on_connect(T0);
        Harness {
            session,
            now: T0,
            seq: 1,
            encoder: Encoder::new("FIX.4.4"),
        }
    }

    fn new() -> Harness {
        Harness::with_config(SessionConfig::new("BATON", "CLIENT"))
    }

    /// Builds a message from the counterparty with the next sequence number.
    fn build(&mut self, msg_type: &[u8], fields: &[(u32, &str)]) -> Vec<u8> {
        let seq = self.seq;
        self.seq += 1;
        self.build_with_seq(msg_type, seq, fields)
    }

    fn build_with_seq(&mut self, msg_type: &[u8], seq: u64, fields: &[(u32, &str)]) -> Vec<u8> {
        self.encoder
            .start(msg_type)
            .str(49, "CLIENT")
            .str(56, "BATON")
            .uint(34, seq)
            .timestamp(52, self.now);
        for (tag, value) in fields {
            self.encoder.str(*tag, value);
        }
        self.encoder.finish().to_vec()
    }

    /// Feeds bytes and returns what the session sent in answer.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.session.handle_bytes(self.now, bytes);
        self.sent()
    }

    fn send(&mut self, msg_type: &[u8], fields: &[(u32, &str)]) -> Vec<Message> {
        let bytes = self.build(msg_type, fields);
        self.feed(&bytes)
    }

    fn sent(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        parse_all(&out)
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    /// Moves virtual time forward by `ms`, firing every timer on the way (bounded, so a timer
    /// that re-arms itself at `now` fails the test instead of hanging it).
    fn advance(&mut self, ms: u64) -> Vec<Message> {
        let until = self.now.plus_millis(ms);
        let mut steps = 0;
        while let Some(at) = self.session.next_timeout().filter(|at| *at <= until) {
            steps += 1;
            assert!(steps < 10_000, "timers do not settle");
            self.now = at.max(self.now);
            self.session.handle_timeout(self.now);
        }
        self.now = until;
        self.sent()
    }

    fn logon(&mut self) -> Vec<Message> {
        let answer = self.send(b"A", &[(98, "0"), (108, "30")]);
        assert_eq!(self.session.state(), State::Active, "{answer:?}");
        answer
    }

    fn disconnected_with(&mut self) -> Option<DisconnectReason> {
        self.events().into_iter().find_map(|e| match e {
            Event::Disconnect(reason) => Some(reason),
            _ => None,
        })
    }
}

fn order(cl_ord_id: &str) -> Vec<(u32, &str)> {
    vec![
        (11, cl_ord_id),
        (55, "ACME"),
        (54, "1"),
        (60, "20261123-12:00:00"),
        (38, "100"),
        (40, "2"),
        (44, "10.5"),
    ]
}

// ----- Logon -------------------------------------------------------------------------------------

#[test]
fn logon_is_answered_with_logon_and_agreed_heartbeat() {
    let mut h = Harness::new();
    let answer = h.logon();
    assert_eq!(answer.len(), 1);
    let logon = &answer[0];
    assert_eq!(logon.msg_type(), b"A");
    assert_eq!(text(logon, 49), "BATON");
    assert_eq!(text(logon, 56), "CLIENT");
    assert_eq!(text(logon, 34), "1");
    assert_eq!(text(logon, 108), "30");
    assert_eq!(text(logon, 98), "0");
    assert_eq!(h.events(), vec![Event::LoggedOn { reset: false }]);
    assert_eq!(h.session.seq_num_next_in(), 2);
    assert_eq!(h.session.store().seq_num_next_out(), 2);
}

#[test]
fn first_message_not_logon_disconnects_without_answer() {
    let mut h = Harness::new();
    let answer = h.send(b"0", &[]);
    assert!(answer.is_empty());
    assert_eq!(
        h.disconnected_with(),
        Some(DisconnectReason::FirstMessageNotLogon)
    );
    assert_eq!(h.session.state(), State::Disconnected);
}

#[test]
fn logon_with_wrong_begin_string_is_refused_with_logout() {
    let mut h = Harness::new();
    h.encoder = Encoder::new("FIX.4.2");
    let answer = h.send(b"A", &[(98, "0"), (108, "30")]);
    assert_eq!(answer[0].msg_type(), b"5");
    assert_eq!(text(&answer[0], 58), "incorrect BeginString");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn logon_with_unknown_comp_id_is_closed_without_a_message() {
    let mut h = Harness::new();
    h.encoder
        .start(b"A")
        .str(49, "STRANGER")
        .str(56, "BATON")
        .uint(34, 1)
        .timestamp(52, T0)
        .uint(98, 0)
        .uint(108, 30);
    let bytes = h.encoder.finish().to_vec();
    let answer = h.feed(&bytes);
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(
        h.disconnected_with(),
        Some(DisconnectReason::LogonRefused("unknown CompID pair".into()))
    );
    assert_eq!(h.session.store().seq_num_next_out(), 1, "no number taken");
}

#[test]
fn logon_with_heart_bt_int_out_of_range_is_refused() {
    let mut h = Harness::new();
    let answer = h.send(b"A", &[(98, "0"), (108, "100000")]);
    assert_eq!(answer[0].msg_type(), b"5");
    assert!(text(&answer[0], 58).contains("HeartBtInt"));
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::LogonRefused(_))
    ));
}

#[test]
fn logon_with_encryption_is_refused() {
    let mut h = Harness::new();
    let answer = h.send(b"A", &[(98, "1"), (108, "30")]);
    assert_eq!(answer[0].msg_type(), b"5");
    // The venue dictionary allows only EncryptMethod 0, so the Logon fails validation on tag 98.
    assert!(
        text(&answer[0], 58).contains("tag 98"),
        "{:?}",
        text(&answer[0], 58)
    );
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::LogonRefused(_))
    ));
}

#[test]
fn logon_outside_session_schedule_is_refused() {
    let mut config = SessionConfig::new("BATON", "CLIENT");
    config.schedule = Schedule {
        start: TimeOfDay::parse("13:00:00").unwrap(),
        end: TimeOfDay::parse("17:00:00").unwrap(),
        weekdays: 0x7f,
        non_stop: false,
    };
    let mut h = Harness::with_config(config);
    let answer = h.send(b"A", &[(98, "0"), (108, "30")]);
    assert_eq!(text(&answer[0], 58), "outside of session time");
    assert_eq!(
        h.disconnected_with(),
        Some(DisconnectReason::LogonRefused(
            "outside of session time".into()
        ))
    );
}

#[test]
fn logon_with_seq_too_high_is_accepted_then_resend_requested() {
    let mut h = Harness::new();
    h.seq = 5;
    let answer = h.send(b"A", &[(98, "0"), (108, "30")]);
    assert_eq!(answer.len(), 2);
    assert_eq!(answer[0].msg_type(), b"A");
    assert_eq!(answer[1].msg_type(), b"2");
    assert_eq!(text(&answer[1], 7), "1");
    assert_eq!(text(&answer[1], 16), "0");
    // The counterparty fills 1..4 with a gap fill; then its Logon's number (5) is consumed.
    let gap_fill = h.build_with_seq(
        b"4",
        1,
        &[(43, "Y"), (122, "20261123-11:59:59"), (123, "Y"), (36, "5")],
    );
    assert!(h.feed(&gap_fill).is_empty());
    assert_eq!(h.session.seq_num_next_in(), 6);
    let answer = h.send(b"D", &order("O-1"));
    assert!(answer.is_empty());
    assert!(matches!(h.events().last(), Some(Event::Application(_))));
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn logon_with_seq_too_low_is_refused() {
    let mut store = MemoryStore::new();
    store.set_seq_num_next_in(10).unwrap();
    let mut h = Harness::with_store(SessionConfig::new("BATON", "CLIENT"), store);
    let answer = h.send(b"A", &[(98, "0"), (108, "30")]);
    assert_eq!(answer[0].msg_type(), b"5");
    assert_eq!(
        text(&answer[0], 58),
        "MsgSeqNum too low, expecting 10 but received 1"
    );
}

#[test]
fn a_connection_taken_back_after_a_crash_continues_logged_on_and_closes_gaps_by_resend() {
    let mut h = Harness::new();
    h.logon();
    h.session.on_disconnect();
    assert!(h.session.resume(h.now, 30_000));
    assert_eq!(h.session.state(), State::Active);
    // No Logon: a TestRequest at once, numbered where the store left off.
    let sent = h.advance(0);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg_type(), b"1");
    assert_eq!(sent[0].uint(34), Ok(2));
    // A message the dead process had read is gone: the next one shows the gap, which is asked for.
    h.seq += 1;
    let answer = h.send(b"0", &[]);
    assert_eq!(answer[0].msg_type(), b"2", "{answer:?}");
    assert_eq!(answer[0].uint(7), Ok(2));
}

#[test]
fn a_session_handed_over_at_an_upgrade_continues_mid_frame_with_its_deadlines() {
    let mut h = Harness::new();
    h.logon();
    let heartbeat = h.build(b"0", &[]);
    let (first, rest) = heartbeat.split_at(heartbeat.len() / 2);
    assert!(h.feed(first).is_empty());
    assert!(h.session.settled());
    let carry = h.session.carry();
    let deadline = h.session.next_timeout();
    h.session.on_disconnect();
    h.now = h.now.plus_millis(5);
    assert!(h.session.resume_carried(h.now, &carry));
    // The old deadlines, not a TestRequest at once as after a crash.
    assert_eq!(h.session.next_timeout(), deadline);
    assert!(h.advance(0).is_empty());
    // The half frame read by the old process and the rest read by the new make one message, in
    // sequence: no gap, no ResendRequest.
    assert!(h.feed(rest).is_empty());
    assert_eq!(h.session.seq_num_next_in(), 3);
    assert_eq!(h.session.stats().resend_requests_sent, 0);
    // A carry this build cannot read closes the connection instead of guessing.
    let bad = SessionCarry {
        unread_hex: "zz".into(),
        ..carry
    };
    h.session.on_disconnect();
    assert!(!h.session.resume_carried(h.now, &bad));
    assert_eq!(h.session.state(), State::Disconnected);
}

/// Writes what `session` gives, as the acceptor's connection loop does: everything polled,
/// then the next resend (or held) step once that is written, bounded so a loop fails the test.
fn write_out(session: &mut Session<MemoryStore>, now: Timestamp) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1_000 {
        session.poll_transmit(&mut out);
        if !session.resend_pending() {
            return out;
        }
        session.continue_resend(now);
    }
    panic!("the session kept writing");
}

fn report(session: &mut Session<MemoryStore>, now: Timestamp, id: &str) -> u64 {
    session
        .send_app(now, b"8", |e| {
            e.str(37, id)
                .str(11, id)
                .str(17, id)
                .char(150, b'0')
                .char(39, b'0');
        })
        .expect("stored")
}

#[test]
fn a_message_stored_after_the_hand_over_is_written_by_the_successor_first_as_stored() {
    let mut h = Harness::new();
    h.logon(); // our 1: Logon
    assert_eq!(report(&mut h.session, h.now, "E-1"), 2);
    assert_eq!(h.sent().len(), 1, "2 is written before the hand-over");
    let carry = h.session.carry();
    assert_eq!(carry.seq_num_out_written, Some(2));
    // An output reaches the old process's session after it was handed over: stored under the
    // next number, never written by this process.
    assert_eq!(report(&mut h.session, h.now, "E-2"), 3);
    let late = h.session.store().sent(3).expect("stored").to_vec();
    h.session.on_disconnect();

    // The successor opens the same store and continues the carried session.
    let mut successor = Session::new(
        SessionConfig::new("BATON", "CLIENT"),
        h.session.store().clone(),
        Dictionary::venue(),
    );
    let now = h.now.plus_millis(5);
    assert!(successor.resume_carried(now, &carry));
    assert!(!successor.settled(), "something is still to be written");
    assert_eq!(report(&mut successor, now, "E-3"), 4);
    let mut out = Vec::new();
    successor.poll_transmit(&mut out);
    assert!(
        out.is_empty(),
        "nothing new goes before the unwritten 3: {out:?}"
    );
    let written = write_out(&mut successor, now);
    let sent = parse_all(&written);
    let seqs: Vec<u64> = sent.iter().map(|m| m.uint(34).unwrap()).collect();
    assert_eq!(seqs, [3, 4], "the counterparty sees no gap");
    // The original, byte for byte: the counterparty never saw it, so it is no PossDup copy.
    assert!(written.starts_with(&late), "3 goes out as it was stored");
    assert_eq!(sent[0].get(43), None);
    assert!(successor.settled());
    assert_eq!(successor.seq_num_out_polled(), 4);
}

#[test]
fn a_write_cut_short_at_the_hand_over_is_written_again_by_the_successor() {
    let mut h = Harness::new();
    h.logon();
    report(&mut h.session, h.now, "E-1");
    // Polled by the hand-over, whose write then fails: the driver lowers what the carry says
    // was written to what it had written before.
    let written_before = h.session.seq_num_out_polled();
    let mut lost = Vec::new();
    h.session.poll_transmit(&mut lost);
    let mut carry = h.session.carry();
    assert_eq!(carry.seq_num_out_written, Some(2));
    carry.seq_num_out_written = Some(written_before);
    h.session.on_disconnect();
    let mut successor = Session::new(
        SessionConfig::new("BATON", "CLIENT"),
        h.session.store().clone(),
        Dictionary::venue(),
    );
    assert!(successor.resume_carried(h.now, &carry));
    let seqs: Vec<u64> = parse_all(&write_out(&mut successor, h.now))
        .iter()
        .map(|m| m.uint(34).unwrap())
        .collect();
    assert_eq!(seqs, [2]);
}

#[test]
fn a_carry_from_a_build_that_did_not_record_what_it_wrote_continues_from_the_store() {
    let mut h = Harness::new();
    h.logon();
    report(&mut h.session, h.now, "E-1");
    h.sent();
    let carry = h.session.carry();
    // The hand-over message is JSON; an older build's has no such field.
    let mut json = serde_json::to_value(&carry).unwrap();
    json.as_object_mut().unwrap().remove("seq_num_out_written");
    let old: SessionCarry = serde_json::from_value(json).unwrap();
    assert_eq!(old.seq_num_out_written, None);
    report(&mut h.session, h.now, "E-2");
    h.session.on_disconnect();
    let mut successor = Session::new(
        SessionConfig::new("BATON", "CLIENT"),
        h.session.store().clone(),
        Dictionary::venue(),
    );
    assert!(successor.resume_carried(h.now, &old));
    assert!(successor.settled());
    assert!(write_out(&mut successor, h.now).is_empty());
}

#[test]
fn a_connection_taken_back_on_a_new_session_day_is_closed() {
    let mut h = Harness::new();
    h.logon();
    h.session.on_disconnect();
    h.session.store_mut().reset(12345).unwrap();
    assert!(!h.session.resume(h.now, 30_000));
    assert_eq!(h.session.state(), State::Disconnected);
}

#[test]
fn logon_with_reset_seq_num_flag_resets_both_sides() {
    let mut h = Harness::new();
    h.session.store_mut().set_seq_num_next_in(10).unwrap();
    h.session.store_mut().set_seq_num_next_out(20).unwrap();
    let answer = h.send(b"A", &[(98, "0"), (108, "30"), (141, "Y")]);
    assert_eq!(answer[0].msg_type(), b"A");
    assert_eq!(text(&answer[0], 141), "Y");
    assert_eq!(text(&answer[0], 34), "1");
    assert_eq!(h.events(), vec![Event::LoggedOn { reset: true }]);
    assert_eq!(h.session.seq_num_next_in(), 2);
}

#[test]
fn logon_deadline_disconnects_a_silent_connection() {
    let mut h = Harness::new();
    assert!(
        h.advance(constants::LOGON_TIMEOUT_DEFAULT_MS - 1)
            .is_empty()
    );
    assert_eq!(h.session.state(), State::AwaitingLogon);
    h.advance(1);
    assert_eq!(h.disconnected_with(), Some(DisconnectReason::LogonTimeout));
}

#[test]
fn second_logon_on_a_live_session_is_refused() {
    let mut h = Harness::new();
    h.logon();
    let answer = h.send(b"A", &[(98, "0"), (108, "30")]);
    assert_eq!(answer[0].msg_type(), b"5");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

// ----- Heartbeat and TestRequest -----------------------------------------------------------------

#[test]
fn heartbeat_is_sent_after_an_interval_without_sending() {
    let mut h = Harness::new();
    h.logon();
    assert!(h.advance(29_999).is_empty());
    let sent = h.advance(1);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg_type(), b"0");
    assert_eq!(sent[0].get(112), None);
}

#[test]
fn test_request_is_answered_with_its_test_req_id() {
    let mut h = Harness::new();
    h.logon();
    let answer = h.send(b"1", &[(112, "PING-7")]);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].msg_type(), b"0");
    assert_eq!(text(&answer[0], 112), "PING-7");
}

#[test]
fn silence_gets_a_test_request_then_a_disconnect() {
    let mut h = Harness::new();
    h.logon();
    // Heartbeats keep flowing out while the peer says nothing.
    let sent = h.advance(36_000);
    assert_eq!(
        sent.iter()
            .map(|m| m.msg_type().to_vec())
            .collect::<Vec<_>>(),
        vec![b"0".to_vec(), b"1".to_vec()]
    );
    assert!(h.session.state() == State::Active);
    h.advance(36_000);
    assert_eq!(h.disconnected_with(), Some(DisconnectReason::PeerSilent));
}

#[test]
fn traffic_from_the_peer_defers_the_test_request() {
    let mut h = Harness::new();
    h.logon();
    for _ in 0..5 {
        h.advance(30_000);
        h.send(b"0", &[]);
    }
    assert_eq!(h.session.state(), State::Active);
    assert!(
        h.events()
            .iter()
            .all(|e| !matches!(e, Event::Disconnect(_)))
    );
}

// ----- Sequence numbers --------------------------------------------------------------------------

#[test]
fn gap_triggers_resend_request_and_queued_messages_are_processed_in_order() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    let first = h.build(b"D", &order("O-2")); // seq 2, "lost"
    let _ = first;
    let answer = h.send(b"D", &order("O-3")); // seq 3
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].msg_type(), b"2");
    assert_eq!(text(&answer[0], 7), "2");
    assert_eq!(text(&answer[0], 16), "0");
    // More messages beyond the gap do not produce a second ResendRequest.
    assert!(h.send(b"D", &order("O-4")).is_empty());
    assert!(
        h.events().is_empty(),
        "nothing delivered while the gap is open"
    );
    // The resent message fills the gap; everything comes out in order.
    let resent = h.build_with_seq(
        b"D",
        2,
        &[(43, "Y"), (122, "20261123-11:59:00")]
            .into_iter()
            .chain(order("O-2"))
            .collect::<Vec<_>>(),
    );
    assert!(h.feed(&resent).is_empty());
    let delivered: Vec<String> = h
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Application(m) => text(&m, 11),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(delivered, ["O-2", "O-3", "O-4"]);
    assert_eq!(h.session.seq_num_next_in(), 5);
}

#[test]
fn seq_too_low_without_poss_dup_logs_out() {
    let mut h = Harness::new();
    h.logon();
    let bytes = h.build_with_seq(b"0", 1, &[]);
    let answer = h.feed(&bytes);
    assert_eq!(answer[0].msg_type(), b"5");
    assert_eq!(
        text(&answer[0], 58),
        "MsgSeqNum too low, expecting 2 but received 1"
    );
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn poss_dup_duplicate_is_ignored() {
    let mut h = Harness::new();
    h.logon();
    h.send(b"D", &order("O-1"));
    h.events();
    let fields: Vec<(u32, &str)> = [(43, "Y"), (122, "20261123-11:59:00")]
        .into_iter()
        .chain(order("O-1"))
        .collect();
    let dup = h.build_with_seq(b"D", 2, &fields);
    assert!(h.feed(&dup).is_empty());
    assert!(h.events().is_empty(), "duplicate not delivered again");
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn poss_dup_without_orig_sending_time_is_rejected() {
    let mut h = Harness::new();
    h.logon();
    h.send(b"0", &[]);
    let dup = h.build_with_seq(b"0", 2, &[(43, "Y")]);
    let answer = h.feed(&dup);
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "1");
    assert_eq!(text(&answer[0], 371), "122");
    assert_eq!(text(&answer[0], 45), "2");
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn orig_sending_time_after_sending_time_is_rejected_then_logged_out() {
    let mut h = Harness::new();
    h.logon();
    let answer = h.send(b"0", &[(43, "Y"), (122, "20261123-12:30:00")]);
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "10");
    assert_eq!(answer[1].msg_type(), b"5");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

// ----- Resend ------------------------------------------------------------------------------------

/// Sends three execution reports from the gateway so there is something to resend.
fn with_sent_business(h: &mut Harness) {
    for id in ["E-1", "E-2", "E-3"] {
        h.session
            .send_app(h.now, b"8", |e| {
                e.str(37, id)
                    .str(11, id)
                    .str(17, id)
                    .char(150, b'0')
                    .char(39, b'0');
            })
            .unwrap();
    }
    h.sent();
}

#[test]
fn resend_request_resends_business_with_poss_dup_and_gap_fills_session_messages() {
    let mut h = Harness::new();
    h.logon(); // our seq 1 = Logon
    with_sent_business(&mut h); // our seqs 2, 3, 4
    h.advance(30_000); // our seq 5 = Heartbeat
    h.send(b"0", &[]);
    h.now = h.now.plus_millis(1000);
    let answer = h.send(b"2", &[(7, "1"), (16, "5")]);
    let summary: Vec<(String, String)> =
        answer.iter().map(|m| (text(m, 35), text(m, 34))).collect();
    assert_eq!(
        summary,
        [("4", "1"), ("8", "2"), ("8", "3"), ("8", "4"), ("4", "5")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // Session messages are gap-filled past themselves.
    assert_eq!(text(&answer[0], 123), "Y");
    assert_eq!(text(&answer[0], 36), "2");
    assert_eq!(text(&answer[4], 36), "6");
    for resent in &answer[1..4] {
        assert_eq!(text(resent, 43), "Y");
        assert_eq!(text(resent, 122), "20261123-12:00:00.000");
        assert_eq!(text(resent, 52), "20261123-12:00:31.000");
    }
    assert_eq!(text(&answer[2], 11), "E-2");
    // Resending changes no sequence number.
    assert_eq!(h.session.store().seq_num_next_out(), 6);
}

#[test]
fn resend_request_with_end_seq_no_zero_means_everything() {
    let mut h = Harness::new();
    h.logon();
    with_sent_business(&mut h);
    let answer = h.send(b"2", &[(7, "3"), (16, "0")]);
    let seqs: Vec<String> = answer.iter().map(|m| text(m, 34)).collect();
    assert_eq!(seqs, ["3", "4"]);
    assert!(answer.iter().all(|m| m.msg_type() == b"8"));
}

#[test]
fn business_sent_while_disconnected_is_stored_and_resent_after_logon() {
    let mut h = Harness::new();
    h.logon();
    h.session.on_disconnect();
    h.session
        .send_app(h.now, b"8", |e| {
            e.str(37, "X")
                .str(11, "X")
                .str(17, "X")
                .char(150, b'0')
                .char(39, b'0');
        })
        .unwrap();
    assert!(
        h.sent().is_empty(),
        "nothing is written without a connection"
    );
    h.session.on_connect(h.now);
    let answer = h.send(b"A", &[(98, "0"), (108, "30")]);
    // Our Logon carries 3: the counterparty sees the gap at 2 and asks for it.
    assert_eq!(text(&answer[0], 34), "3");
    let answer = h.send(b"2", &[(7, "2"), (16, "2")]);
    assert_eq!(answer.len(), 1);
    assert_eq!(text(&answer[0], 11), "X");
    assert_eq!(text(&answer[0], 43), "Y");
}

// ----- SequenceReset -----------------------------------------------------------------------------

#[test]
fn sequence_reset_gap_fill_moves_the_expected_number_forward() {
    let mut h = Harness::new();
    h.logon();
    let answer = h.send(b"4", &[(123, "Y"), (36, "10")]);
    assert!(answer.is_empty());
    assert_eq!(h.session.seq_num_next_in(), 10);
}

#[test]
fn sequence_reset_gap_fill_that_lowers_is_rejected() {
    let mut h = Harness::new();
    h.logon();
    let answer = h.send(b"4", &[(123, "Y"), (36, "1")]);
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "5");
    assert_eq!(text(&answer[0], 371), "36");
}

#[test]
fn sequence_reset_reset_mode_ignores_msg_seq_num() {
    let mut h = Harness::new();
    h.logon();
    let bytes = h.build_with_seq(b"4", 999, &[(36, "50")]);
    assert!(h.feed(&bytes).is_empty());
    assert_eq!(h.session.seq_num_next_in(), 50);
}

#[test]
fn sequence_reset_reset_mode_that_lowers_is_rejected() {
    let mut h = Harness::new();
    h.logon();
    let bytes = h.build_with_seq(b"4", 2, &[(36, "20")]);
    h.feed(&bytes);
    let bytes = h.build_with_seq(b"4", 20, &[(36, "5")]);
    let answer = h.feed(&bytes);
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "5");
    assert_eq!(h.session.seq_num_next_in(), 20);
}

// ----- Reject ------------------------------------------------------------------------------------

fn reject_for(fields_bytes: &[u8]) -> (Vec<Message>, Harness) {
    let mut h = Harness::new();
    h.logon();
    let answer = h.feed(fields_bytes);
    (answer, h)
}

fn frame(body: &str) -> Vec<u8> {
    let body = body.replace('|', "\x01");
    let head = format!("8=FIX.4.4\x019={}\x01{}", body.len(), body);
    let sum = crate::fix::codec::checksum(head.as_bytes());
    format!("{head}10={sum:03}\x01").into_bytes()
}

#[test]
fn invalid_msg_type_is_rejected_with_reason_11() {
    let (answer, h) = reject_for(&frame(
        "35=ZZ|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|",
    ));
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "11");
    assert_eq!(text(&answer[0], 372), "ZZ");
    assert_eq!(
        h.session.seq_num_next_in(),
        3,
        "the rejected message takes its number"
    );
}

#[test]
fn tag_without_value_is_rejected_with_reason_4() {
    let (answer, _) = reject_for(&frame(
        "35=0|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|112=|",
    ));
    assert_eq!(text(&answer[0], 373), "4");
    assert_eq!(text(&answer[0], 371), "112");
}

#[test]
fn repeated_tag_is_rejected_with_reason_13() {
    let (answer, _) = reject_for(&frame(
        "35=0|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|112=A|112=B|",
    ));
    assert_eq!(text(&answer[0], 373), "13");
    assert_eq!(text(&answer[0], 371), "112");
}

#[test]
fn wrongly_formatted_value_is_rejected_with_reason_6() {
    let (answer, _) = reject_for(&frame("35=0|49=CLIENT|56=BATON|34=2|52=2026-11-23 12:00|"));
    assert_eq!(text(&answer[0], 373), "6");
    assert_eq!(text(&answer[0], 371), "52");
}

#[test]
fn missing_required_tag_is_rejected_with_reason_1() {
    let (answer, h) = reject_for(&frame(
        "35=D|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|55=ACME|",
    ));
    assert_eq!(text(&answer[0], 373), "1");
    assert_eq!(text(&answer[0], 371), "11");
    let mut h = h;
    assert!(
        h.events()
            .iter()
            .all(|e| !matches!(e, Event::Application(_))),
        "never delivered"
    );
}

#[test]
fn sending_time_out_of_tolerance_is_rejected_then_logged_out() {
    let mut h = Harness::new();
    h.logon();
    h.now = h.now.plus_millis(constants::MAX_LATENCY_DEFAULT_MS + 1);
    let bytes = h.build(b"0", &[]);
    h.now = T0;
    let answer = h.feed(&bytes);
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "10");
    assert_eq!(text(&answer[0], 371), "52");
    assert_eq!(answer[1].msg_type(), b"5");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn comp_id_problem_is_rejected_then_logged_out() {
    let (answer, mut h) = reject_for(&frame(
        "35=0|49=IMPOSTOR|56=BATON|34=2|52=20261123-12:00:00|",
    ));
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "9");
    assert_eq!(text(&answer[0], 371), "49");
    assert_eq!(answer[1].msg_type(), b"5");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn garbled_messages_are_ignored_without_consuming_a_sequence_number() {
    let mut h = Harness::new();
    h.logon();
    let mut bad_checksum = h.build_with_seq(b"0", 2, &[]);
    let len = bad_checksum.len();
    bad_checksum[len - 2] = if bad_checksum[len - 2] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let mut bad_length = frame("35=0|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|");
    bad_length[12] = b'4'; // BodyLength 50 claimed as 40
    let mut input = b"noise".to_vec();
    input.extend_from_slice(&bad_checksum);
    input.extend_from_slice(&bad_length);
    assert!(h.feed(&input).is_empty());
    assert_eq!(h.session.stats().garbled, 3);
    assert_eq!(h.session.seq_num_next_in(), 2);
    // The next good message with number 2 is processed normally.
    h.seq = 2;
    assert_eq!(h.send(b"1", &[(112, "OK")])[0].msg_type(), b"0");
}

#[test]
fn a_message_split_across_reads_is_processed_once_complete() {
    let mut h = Harness::new();
    let bytes = h.build(b"A", &[(98, "0"), (108, "30")]);
    for chunk in bytes.chunks(7) {
        h.session.handle_bytes(h.now, chunk);
    }
    assert_eq!(h.session.state(), State::Active);
}

// ----- Logout ------------------------------------------------------------------------------------

#[test]
fn counterparty_logout_is_answered_and_the_connection_closed() {
    let mut h = Harness::new();
    h.logon();
    let answer = h.send(b"5", &[]);
    assert_eq!(answer[0].msg_type(), b"5");
    assert_eq!(h.disconnected_with(), Some(DisconnectReason::LoggedOut));
    assert_eq!(h.session.seq_num_next_in(), 3);
}

#[test]
fn gateway_logout_completes_on_the_answer() {
    let mut h = Harness::new();
    h.logon();
    h.session.logout(h.now, "maintenance");
    let sent = h.sent();
    assert_eq!(text(&sent[0], 58), "maintenance");
    assert_eq!(h.session.state(), State::LogoutSent);
    assert!(h.send(b"5", &[]).is_empty(), "no second Logout");
    assert_eq!(h.disconnected_with(), Some(DisconnectReason::LoggedOut));
}

#[test]
fn gateway_logout_waits_a_bounded_time_for_the_answer() {
    let mut h = Harness::new();
    h.logon();
    h.session.logout(h.now, "maintenance");
    h.advance(constants::LOGOUT_TIMEOUT_DEFAULT_MS - 1);
    assert_eq!(h.session.state(), State::LogoutSent);
    h.advance(1);
    assert_eq!(h.disconnected_with(), Some(DisconnectReason::LogoutTimeout));
}

// ----- Schedule ----------------------------------------------------------------------------------

#[test]
fn session_end_logs_out_and_the_next_session_day_resets_sequence_numbers() {
    let mut config = SessionConfig::new("BATON", "CLIENT");
    config.schedule = Schedule {
        start: TimeOfDay::parse("08:00:00").unwrap(),
        end: TimeOfDay::parse("17:00:00").unwrap(),
        weekdays: 0x7f,
        non_stop: false,
    };
    let mut h = Harness::with_config(config);
    h.logon();
    for _ in 0..3 {
        h.send(b"0", &[]);
    }
    // Keep the session alive until the end of the day, then see it logged out at 17:00.
    let mut logout_seen = false;
    for _ in 0..1000 {
        h.send(b"0", &[]);
        if h.advance(20_000).iter().any(|m| m.msg_type() == b"5") {
            logout_seen = true;
            break;
        }
    }
    assert!(logout_seen, "logged out at the end of the session day");
    h.send(b"5", &[]);
    h.session.on_disconnect();
    // Next morning: both sides start again at 1.
    h.now = T0.plus_millis(20 * 3600 * 1000);
    h.session.on_connect(h.now);
    h.seq = 1;
    let answer = h.send(b"A", &[(98, "0"), (108, "30")]);
    assert_eq!(answer[0].msg_type(), b"A");
    assert_eq!(text(&answer[0], 34), "1");
    assert_eq!(h.session.seq_num_next_in(), 2);
}

// ----- Business messages -------------------------------------------------------------------------

#[test]
fn valid_business_message_is_delivered_exactly_once() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    assert!(h.send(b"D", &order("O-1")).is_empty());
    let events = h.events();
    assert_eq!(events.len(), 1);
    match &events[0] {
        Event::Application(message) => assert_eq!(text(message, 11), "O-1"),
        other => panic!("unexpected {other:?}"),
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes, before and after Logon, never panic the session and never make it
        /// buffer more than one frame.
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), logon_first in any::<bool>()) {
            let mut h = Harness::new();
            if logon_first {
                h.logon();
            }
            for chunk in &chunks {
                h.session.handle_bytes(h.now, chunk);
                h.sent();
                h.advance(1_000);
            }
            prop_assert!(h.session.recv.len() <= h.session.decoder.frame_len_max() + 300);
        }

        /// Valid messages with random mutations never panic, and every message the session
        /// sends back is well formed.
        #[test]
        fn mutated_messages_never_panic(position in 0usize..200, byte in any::<u8>(), which in 0usize..4) {
            let mut h = Harness::new();
            h.logon();
            let mut bytes = match which {
                0 => h.build(b"D", &order("O-1")),
                1 => h.build(b"2", &[(7, "1"), (16, "0")]),
                2 => h.build(b"4", &[(123, "Y"), (36, "9")]),
                _ => h.build(b"1", &[(112, "X")]),
            };
            let at = position % bytes.len();
            bytes[at] = byte;
            h.feed(&bytes);
            h.advance(100_000);
        }
    }
}

// ----- Found in review --------------------------------------------------------------------------

#[test]
fn filling_a_long_gap_does_not_deepen_the_stack() {
    let child = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(|| {
            let mut h = Harness::new();
            h.logon();
            let _lost = h.build(b"0", &[]);
            let mut burst = Vec::new();
            for _ in 0..constants::INBOUND_QUEUE_MAX - 1 {
                burst.extend(h.build(b"0", &[]));
            }
            h.feed(&burst);
            let fill = h.build_with_seq(b"4", 2, &[(43, "Y"), (123, "Y"), (36, "3")]);
            h.feed(&fill);
            h.session.seq_num_next_in()
        })
        .unwrap();
    assert_eq!(
        child.join().unwrap(),
        constants::INBOUND_QUEUE_MAX as u64 + 2
    );
}

#[test]
fn resend_request_beyond_a_gap_is_served_once() {
    let mut h = Harness::new();
    h.logon();
    with_sent_business(&mut h);
    h.events();
    let _lost = h.build(b"0", &[]);
    let first = h.send(b"2", &[(7, "2"), (16, "0")]);
    assert_eq!(first.iter().filter(|m| m.msg_type() == b"8").count(), 3);
    let fill = h.build_with_seq(b"4", 2, &[(43, "Y"), (123, "Y"), (36, "3")]);
    let second = h.feed(&fill);
    assert_eq!(second.iter().filter(|m| m.msg_type() == b"8").count(), 0);
    assert_eq!(h.session.seq_num_next_in(), 4);
}

#[test]
fn comp_id_problem_beyond_a_gap_keeps_the_gap() {
    let mut h = Harness::new();
    h.logon();
    h.encoder
        .start(b"0")
        .str(49, "CLIENT")
        .str(56, "WRONG")
        .uint(34, 10)
        .timestamp(52, h.now);
    let bytes = h.encoder.finish().to_vec();
    h.feed(&bytes);
    assert_eq!(h.session.seq_num_next_in(), 2);
}

#[test]
fn order_received_after_our_logout_is_still_delivered() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    h.session.logout(h.now, "end of day");
    h.sent();
    h.send(b"D", &order("O-1"));
    let delivered = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Application(_)))
        .count();
    assert_eq!(delivered, 1);
}

#[test]
fn after_our_logout_business_waits_for_resend_and_no_second_logout() {
    let mut h = Harness::new();
    h.logon();
    h.session.logout(h.now, "bye");
    h.sent();
    h.session
        .send_app(h.now, b"8", |e| {
            e.str(37, "X")
                .str(11, "X")
                .str(17, "X")
                .char(150, b'0')
                .char(39, b'0');
        })
        .unwrap();
    assert!(h.sent().is_empty(), "stored, not written, after our Logout");
    let bytes = h.build_with_seq(b"5", 5, &[]);
    assert!(
        h.feed(&bytes).is_empty(),
        "a Logout answer with a gap gets no second Logout"
    );
    assert_eq!(h.disconnected_with(), Some(DisconnectReason::LoggedOut));
}

#[test]
fn absurd_sequence_numbers_do_not_overflow() {
    let mut h = Harness::new();
    h.logon();
    // u64::MAX itself has 20 digits and is refused as a format error.
    let bytes = h.build_with_seq(b"4", 2, &[(36, &u64::MAX.to_string())]);
    let answer = h.feed(&bytes);
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "6");
    // The largest accepted number can be reset to, and counted on from.
    let largest = constants::SEQ_NUM_MAX.to_string();
    let bytes = h.build_with_seq(b"4", 3, &[(36, &largest)]);
    assert!(h.feed(&bytes).is_empty());
    assert_eq!(h.session.seq_num_next_in(), constants::SEQ_NUM_MAX);
    let bytes = h.build_with_seq(b"0", constants::SEQ_NUM_MAX, &[]);
    assert!(h.feed(&bytes).is_empty());
    assert_eq!(h.session.seq_num_next_in(), constants::SEQ_NUM_MAX + 1);
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn sequence_reset_beyond_the_largest_sequence_number_is_rejected() {
    // Reset mode: 9999999999999999999 parses, but the message after it could not.
    let mut h = Harness::new();
    h.logon();
    let bytes = h.build_with_seq(b"4", 2, &[(36, "9999999999999999999")]);
    let answer = h.feed(&bytes);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "5");
    assert_eq!(text(&answer[0], 371), "36");
    assert_eq!(
        h.session.seq_num_next_in(),
        2,
        "the expected number is unchanged"
    );
    // The session goes on with the numbers it had.
    h.seq = 2;
    assert_eq!(h.send(b"1", &[(112, "STILL")])[0].msg_type(), b"0");

    // GapFill mode: the same refusal, and the gap fill takes its own number.
    let mut h = Harness::new();
    h.logon();
    let beyond = (constants::SEQ_NUM_MAX + 1).to_string();
    let answer = h.send(b"4", &[(123, "Y"), (36, &beyond)]);
    assert_eq!(text(&answer[0], 373), "5");
    assert_eq!(text(&answer[0], 371), "36");
    assert_eq!(h.session.seq_num_next_in(), 3);

    // A MsgSeqNum beyond the maximum is as unusable as one that does not parse.
    let mut h = Harness::new();
    h.logon();
    let bytes = h.build_with_seq(b"0", constants::SEQ_NUM_MAX + 1, &[]);
    assert_eq!(h.feed(&bytes)[0].msg_type(), b"5");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn gap_queue_is_bounded_in_bytes() {
    let mut h = Harness::new();
    h.logon();
    let _lost = h.build(b"0", &[]);
    let text_60k = "x".repeat(60 * 1024);
    let mut sent = 0;
    let logout = loop {
        assert!(
            sent < constants::INBOUND_QUEUE_MAX,
            "the byte bound must stop a queue of large messages long before the count bound"
        );
        let answer = h.send(b"0", &[(58, &text_60k)]);
        sent += 1;
        assert!(h.session.queue_bytes <= constants::INBOUND_QUEUE_BYTES_MAX);
        if let Some(logout) = answer.into_iter().find(|m| m.msg_type() == b"5") {
            break logout;
        }
    };
    assert_eq!(
        text(&logout, 58),
        "too many bytes queued behind a sequence gap"
    );
    assert!(sent * 60 * 1024 > constants::INBOUND_QUEUE_BYTES_MAX);
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
    assert_eq!(h.session.queue_bytes, 0, "the queue is released");
}

#[test]
fn message_without_target_comp_id_is_rejected_with_reason_1() {
    let (answer, mut h) = reject_for(&frame("35=0|49=CLIENT|34=2|52=20261123-12:00:00|"));
    assert_eq!(answer.len(), 1, "a Reject, no Logout: {answer:?}");
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "1");
    assert_eq!(text(&answer[0], 371), "56");
    assert_eq!(text(&answer[0], 45), "2");
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(
        h.session.seq_num_next_in(),
        3,
        "the rejected message takes its number"
    );
    assert!(h.disconnected_with().is_none());
}

#[test]
fn field_without_equals_sign_is_garbled_and_keeps_its_number() {
    let (answer, mut h) = reject_for(&frame(
        "35=1|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|112|",
    ));
    assert!(answer.is_empty(), "ignored, no Reject: {answer:?}");
    assert_eq!(h.session.stats().garbled, 1);
    assert_eq!(h.session.seq_num_next_in(), 2);
    h.seq = 2;
    assert_eq!(h.send(b"1", &[(112, "OK")])[0].msg_type(), b"0");
    assert_eq!(h.session.seq_num_next_in(), 3);
}

#[test]
fn logon_with_reset_seq_num_flag_while_logged_on_resets_both_sides() {
    let mut h = Harness::new();
    h.logon();
    h.send(b"0", &[]);
    h.send(b"0", &[]);
    h.events();
    assert_eq!(h.session.seq_num_next_in(), 4);
    let reset = h.build_with_seq(b"A", 1, &[(98, "0"), (108, "30"), (141, "Y")]);
    let answer = h.feed(&reset);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0].msg_type(), b"A");
    assert_eq!(text(&answer[0], 141), "Y");
    assert_eq!(text(&answer[0], 34), "1");
    assert_eq!(h.events(), vec![Event::LoggedOn { reset: true }]);
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(h.session.seq_num_next_in(), 2);
    assert_eq!(h.session.store().seq_num_next_out(), 2);
    // Both sides go on from the new numbers.
    h.seq = 2;
    let answer = h.send(b"1", &[(112, "AFTER-RESET")]);
    assert_eq!(text(&answer[0], 34), "2");
    assert_eq!(h.session.seq_num_next_in(), 3);
}

#[test]
fn reset_logon_while_logged_on_must_carry_msg_seq_num_1() {
    let mut h = Harness::new();
    h.logon();
    let answer = h.send(b"A", &[(98, "0"), (108, "30"), (141, "Y")]);
    assert_eq!(answer[0].msg_type(), b"5");
    assert_eq!(
        text(&answer[0], 58),
        "ResetSeqNumFlag=Y requires MsgSeqNum=1"
    );
}

#[test]
fn fix44_message_type_the_venue_does_not_take_is_accepted_for_a_business_reject() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    // News (B) is FIX 4.4 but not in the venue's dictionary.
    let answer = h.send(b"B", &[(148, "Headline")]);
    assert!(answer.is_empty(), "no session Reject: {answer:?}");
    assert_eq!(h.session.seq_num_next_in(), 3, "its number is taken");
    match h.events().as_slice() {
        [Event::Application(message)] => assert_eq!(message.msg_type(), b"B"),
        other => panic!("expected the News for the application, got {other:?}"),
    }
}

#[test]
fn unsupported_message_type_still_needs_a_standard_header() {
    let (answer, mut h) = reject_for(&frame("35=B|49=CLIENT|56=BATON|34=2|148=Headline|"));
    assert_eq!(text(&answer[0], 373), "1");
    assert_eq!(text(&answer[0], 371), "52");
    assert!(
        h.events()
            .iter()
            .all(|e| !matches!(e, Event::Application(_)))
    );
}

#[test]
fn store_keeps_an_unconfirmed_business_message_to_ask_for_it_after_a_crash() {
    let mut h = Harness::new();
    h.logon();
    h.send(b"D", &order("O-1")); // seq 2
    h.send(b"0", &[]); // seq 3
    h.send(b"D", &order("O-2")); // seq 4
    assert_eq!(h.session.seq_num_next_in(), 5);
    assert_eq!(
        h.session.store().seq_num_next_in(),
        2,
        "O-1 not journaled yet"
    );
    h.session.confirm_in(2);
    assert_eq!(h.session.store().seq_num_next_in(), 4, "O-2 still pending");
    h.session.confirm_in(4);
    assert_eq!(h.session.store().seq_num_next_in(), 5);
    // A session restarted from that store expects the first unconfirmed message again.
    let mut h = Harness::new();
    h.logon();
    h.send(b"D", &order("O-3")); // seq 2, never confirmed: the gateway "crashes"
    let store = h.session.store().clone();
    let mut restarted = Session::new(
        SessionConfig::new("BATON", "CLIENT"),
        store,
        Dictionary::venue(),
    );
    restarted.on_connect(h.now);
    assert_eq!(restarted.seq_num_next_in(), 2);
}

// ----- FIX session test cases not covered above (see fix-specs/session-test-cases.md) ----------

#[test]
fn logon_with_sending_time_out_of_tolerance_is_refused() {
    let mut h = Harness::new();
    h.now = T0.plus_millis(constants::MAX_LATENCY_DEFAULT_MS + 1_000);
    let bytes = h.build(b"A", &[(98, "0"), (108, "30")]);
    h.now = T0;
    let answer = h.feed(&bytes);
    assert_eq!(answer[0].msg_type(), b"5");
    assert!(
        text(&answer[0], 58).starts_with("SendingTime accuracy problem"),
        "{:?}",
        text(&answer[0], 58)
    );
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::LogonRefused(_))
    ));
}

#[test]
fn wrong_begin_string_after_logon_logs_out() {
    let mut h = Harness::new();
    h.logon();
    h.encoder = Encoder::new("FIX.4.2");
    let answer = h.send(b"0", &[]);
    assert_eq!(answer[0].msg_type(), b"5");
    assert_eq!(text(&answer[0], 58), "incorrect BeginString");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn first_three_fields_out_of_order_are_garbled() {
    let mut h = Harness::new();
    h.logon();
    // MsgType before BodyLength, and MsgSeqNum before MsgType.
    let body = "35=0\x0149=CLIENT\x0156=BATON\x0134=2\x0152=20261123-12:00:00\x01";
    let head = format!("8=FIX.4.4\x0135=0\x019={}\x01{}", body.len(), &body[5..]);
    let sum = crate::fix::codec::checksum(head.as_bytes());
    let mut input = format!("{head}10={sum:03}\x01").into_bytes();
    input.extend(frame("34=2|35=0|49=CLIENT|56=BATON|52=20261123-12:00:00|"));
    assert!(h.feed(&input).is_empty());
    assert_eq!(h.session.stats().garbled, 2);
    assert_eq!(h.session.seq_num_next_in(), 2);
    h.seq = 2;
    assert_eq!(h.send(b"1", &[(112, "OK")])[0].msg_type(), b"0");
}

#[test]
fn reject_from_the_counterparty_takes_its_number() {
    let mut h = Harness::new();
    h.logon();
    let answer = h.send(b"3", &[(45, "1"), (373, "99"), (58, "not for us")]);
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(h.session.seq_num_next_in(), 3);
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn gap_fill_beyond_the_expected_number_asks_for_the_gap() {
    let mut h = Harness::new();
    h.logon();
    let bytes = h.build_with_seq(b"4", 5, &[(123, "Y"), (36, "8")]);
    let answer = h.feed(&bytes);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].msg_type(), b"2");
    assert_eq!(text(&answer[0], 7), "2");
    assert_eq!(h.session.seq_num_next_in(), 2);
    // Once 2..4 arrive, the queued gap fill moves the expected number to 8.
    let fill = h.build_with_seq(b"4", 2, &[(43, "Y"), (123, "Y"), (36, "5")]);
    h.feed(&fill);
    assert_eq!(h.session.seq_num_next_in(), 8);
}

#[test]
fn gap_fill_with_a_low_number_and_poss_dup_is_ignored() {
    let mut h = Harness::new();
    h.logon();
    h.send(b"0", &[]);
    h.send(b"0", &[]);
    let bytes = h.build_with_seq(b"4", 2, &[(43, "Y"), (123, "Y"), (36, "3")]);
    assert!(h.feed(&bytes).is_empty());
    assert_eq!(h.session.seq_num_next_in(), 4);
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn gap_fill_with_a_low_number_without_poss_dup_logs_out() {
    let mut h = Harness::new();
    h.logon();
    h.send(b"0", &[]);
    h.send(b"0", &[]);
    let bytes = h.build_with_seq(b"4", 2, &[(123, "Y"), (36, "3")]);
    let answer = h.feed(&bytes);
    assert_eq!(answer[0].msg_type(), b"5");
    assert_eq!(
        text(&answer[0], 58),
        "MsgSeqNum too low, expecting 4 but received 2"
    );
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn sequence_reset_to_the_expected_number_changes_nothing() {
    let mut h = Harness::new();
    h.logon();
    let bytes = h.build_with_seq(b"4", 7, &[(36, "2")]);
    assert!(h.feed(&bytes).is_empty());
    assert_eq!(h.session.seq_num_next_in(), 2);
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn undefined_tag_is_rejected_with_reason_0() {
    let (answer, h) = reject_for(&frame(
        "35=0|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|9999=X|",
    ));
    assert_eq!(text(&answer[0], 373), "0");
    assert_eq!(text(&answer[0], 371), "9999");
    assert_eq!(h.session.seq_num_next_in(), 3);
}

#[test]
fn tag_not_defined_for_the_message_type_is_rejected_with_reason_2() {
    let (answer, h) = reject_for(&frame(
        "35=0|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|11=ORDER|",
    ));
    assert_eq!(text(&answer[0], 373), "2");
    assert_eq!(text(&answer[0], 371), "11");
    assert_eq!(h.session.seq_num_next_in(), 3);
}

#[test]
fn value_out_of_range_is_rejected_with_reason_5() {
    let (answer, mut h) = reject_for(&frame(
        "35=D|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|11=O-1|55=ACME|54=9|60=20261123-12:00:00|38=100|40=2|44=10.5|",
    ));
    assert_eq!(text(&answer[0], 373), "5");
    assert_eq!(text(&answer[0], 371), "54");
    assert!(
        h.events()
            .iter()
            .all(|e| !matches!(e, Event::Application(_)))
    );
}

#[test]
fn header_field_after_a_body_field_is_rejected_with_reason_14() {
    let (answer, h) = reject_for(&frame(
        "35=1|49=CLIENT|56=BATON|34=2|112=X|52=20261123-12:00:00|",
    ));
    assert_eq!(text(&answer[0], 373), "14");
    assert_eq!(text(&answer[0], 371), "52");
    assert_eq!(h.session.seq_num_next_in(), 3);
}

#[test]
fn fields_in_another_order_are_accepted() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    let answer = h.feed(&frame(
        "35=D|34=2|56=BATON|52=20261123-12:00:00|49=CLIENT|40=2|44=10.5|38=100|60=20261123-12:00:00|54=1|55=ACME|11=O-1|",
    ));
    assert!(answer.is_empty(), "{answer:?}");
    match h.events().as_slice() {
        [Event::Application(message)] => assert_eq!(text(message, 11), "O-1"),
        other => panic!("expected the order, got {other:?}"),
    }
    assert_eq!(h.session.seq_num_next_in(), 3);
}

#[test]
fn poss_resend_message_reaches_the_application_to_check_its_id() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    let fields: Vec<(u32, &str)> = [(97, "Y")].into_iter().chain(order("O-1")).collect();
    assert!(h.send(b"D", &fields).is_empty());
    match h.events().as_slice() {
        [Event::Application(message)] => assert_eq!(text(message, 97), "Y"),
        other => panic!("expected the order, got {other:?}"),
    }
}

// ----- Resend served in steps ----------------------------------------------------------------------

/// Sends `count` execution reports from the gateway and discards what went out.
fn with_many_sent(h: &mut Harness, count: usize) {
    for n in 0..count {
        let id = format!("E-{n}");
        h.session
            .send_app(h.now, b"8", |e| {
                e.str(37, &id)
                    .str(11, &id)
                    .str(17, &id)
                    .char(150, b'0')
                    .char(39, b'0');
            })
            .unwrap();
    }
    h.sent();
}

/// What a step may hold: the step size plus the one message that crosses it.
const STEP_BOUND: usize = constants::RESEND_STEP_BYTES + 1024;

/// Raw bytes the session has for the driver now.
fn raw(h: &mut Harness) -> Vec<u8> {
    let mut out = Vec::new();
    h.session.poll_transmit(&mut out);
    out
}

/// Feeds `bytes`, then drives the resend the way the connection driver does (the next step
/// only once the previous one is written), checking every step against the bound. Returns all
/// the counterparty received, and how many steps it took.
fn serve_in_steps(h: &mut Harness, bytes: &[u8]) -> (Vec<Message>, usize) {
    h.session.handle_bytes(h.now, bytes);
    let mut received = Vec::new();
    let mut steps = 0;
    loop {
        let step = raw(h);
        assert!(step.len() <= STEP_BOUND, "a step of {} bytes", step.len());
        received.extend(parse_all(&step));
        if !h.session.resend_pending() {
            break;
        }
        steps += 1;
        assert!(steps < 100_000, "resend does not finish");
        h.session.continue_resend(h.now);
    }
    (received, steps)
}

/// The MsgSeqNums the counterparty's expected number moves through: every message counts
/// once, a gap fill moves it to its NewSeqNo. Panics on anything out of order.
fn assert_contiguous(received: &[Message], from: u64) -> u64 {
    let mut expected = from;
    for message in received {
        let seq: u64 = text(message, 34).parse().unwrap();
        assert_eq!(seq, expected, "out of order: {message:?}");
        expected = if message.msg_type() == b"4" && text(message, 123) == "Y" {
            text(message, 36).parse().unwrap()
        } else {
            seq + 1
        };
    }
    expected
}

#[test]
fn a_large_resend_is_served_in_steps_of_bounded_size() {
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_many_sent(&mut h, 5_000); // our seqs 2..=5001
    let request = h.build(b"2", &[(7, "1"), (16, "0")]);
    h.session.handle_bytes(h.now, &request);
    let first = raw(&mut h);
    assert!(first.len() <= STEP_BOUND);
    assert!(
        h.session.resend_pending(),
        "5,000 reports do not fit one step"
    );
    let mut received = parse_all(&first);
    let (rest, steps) = serve_in_steps(&mut h, &[]);
    received.extend(rest);
    assert!(steps >= 5, "{steps} steps");
    assert_eq!(assert_contiguous(&received, 1), 5_002);
    assert!(received[1..].iter().all(|m| text(m, 43) == "Y"));
    assert_eq!(text(&received[5_000], 11), "E-4999");
}

#[test]
fn a_run_of_session_messages_is_gap_filled_with_bounded_work_per_step() {
    let mut h = Harness::new();
    h.logon(); // our seq 1
    // Heartbeats only: nothing to write per message, so the step is bounded by what it reads.
    let heartbeats = 3 * constants::RESEND_STEP_MESSAGES_MAX;
    for _ in 0..heartbeats {
        h.session.send_app(h.now, b"0", |_| {}).expect("stored");
    }
    h.sent();
    let request = h.build(b"2", &[(7, "1"), (16, "0")]);
    let (received, steps) = serve_in_steps(&mut h, &request);
    assert!(steps >= 2, "{steps} steps");
    assert!(received.iter().all(|m| m.msg_type() == b"4"));
    assert_eq!(
        assert_contiguous(&received, 1),
        heartbeats as u64 + 2,
        "{received:?}"
    );
}

#[test]
fn many_resend_requests_at_once_are_served_once_within_the_bound() {
    let mut h = Harness::new();
    h.logon();
    with_many_sent(&mut h, 2_000);
    let mut packet = Vec::new();
    for _ in 0..100 {
        packet.extend(h.build(b"2", &[(7, "1"), (16, "0")]));
    }
    let (received, _) = serve_in_steps(&mut h, &packet);
    // The first step may have gone out before the others arrived; after it, one pass from 1.
    let restart = received
        .iter()
        .rposition(|m| text(m, 34) == "1")
        .expect("the range starts at 1");
    // A step is about 500 of these reports: 100 requests cost one range and one step.
    assert!(
        restart < 1_000,
        "only the first step is repeated: {restart}"
    );
    assert_eq!(assert_contiguous(&received[restart..], 1), 2_002);
}

#[test]
fn business_sent_during_a_resend_follows_it_in_order() {
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_many_sent(&mut h, 3_000); // our seqs 2..=3001
    let request = h.build(b"2", &[(7, "2"), (16, "0")]);
    h.session.handle_bytes(h.now, &request);
    let mut received = parse_all(&raw(&mut h));
    assert!(h.session.resend_pending());
    // The outbox delivers while the resend is served, and a heartbeat falls due: both are
    // stored now but reach the counterparty after the resend, so it never sees a gap.
    let mut live = Vec::new();
    for n in 0..3 {
        let id = format!("LIVE-{n}");
        live.push(
            h.session
                .send_app(h.now, b"8", |e| {
                    e.str(37, &id)
                        .str(11, &id)
                        .str(17, &id)
                        .char(150, b'0')
                        .char(39, b'0');
                })
                .unwrap(),
        );
        assert!(raw(&mut h).is_empty(), "held behind the resend");
    }
    assert_eq!(live, [3002, 3003, 3004]);
    h.now = h.now.plus_millis(31_000);
    h.session.handle_timeout(h.now); // Heartbeat, seq 3005
    assert!(raw(&mut h).is_empty(), "held behind the resend");
    let (rest, _) = serve_in_steps(&mut h, &[]);
    received.extend(rest);
    assert_eq!(assert_contiguous(&received, 2), 3_006);
    let tail: Vec<(String, String, String)> = received[received.len() - 4..]
        .iter()
        .map(|m| (text(m, 35), text(m, 11), text(m, 43)))
        .collect();
    assert_eq!(
        tail,
        [
            ("8", "LIVE-0", ""),
            ("8", "LIVE-1", ""),
            ("8", "LIVE-2", ""),
            ("0", "", "")
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    // Live again: the next message goes out at once.
    h.session
        .send_app(h.now, b"8", |e| {
            e.str(37, "AFTER").str(11, "AFTER").str(17, "AFTER");
        })
        .unwrap();
    let after = h.sent();
    assert_eq!(text(&after[0], 34), "3006");
}

#[test]
fn a_resend_request_while_one_is_served_is_merged_with_it() {
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_many_sent(&mut h, 3_000); // our seqs 2..=3001
    let request = h.build(b"2", &[(7, "1000"), (16, "2000")]);
    h.session.handle_bytes(h.now, &request);
    let mut received = parse_all(&raw(&mut h));
    assert!(h.session.resend_pending());
    // Asks for more, from further back: served from there to the farther end.
    let request = h.build(b"2", &[(7, "500"), (16, "0")]);
    let (rest, _) = serve_in_steps(&mut h, &request);
    let restart = rest.iter().position(|m| text(m, 34) == "500").unwrap();
    assert_eq!(
        restart, 0,
        "the merged range starts at the lower BeginSeqNo"
    );
    assert_eq!(assert_contiguous(&rest, 500), 3_002);
    received.extend(rest);
    assert!(
        received.len() < 3_000,
        "nothing served twice beyond one step"
    );
}

#[test]
fn a_logout_during_a_resend_goes_out_at_once_and_ends_it() {
    let mut h = Harness::new();
    h.logon();
    with_many_sent(&mut h, 3_000);
    let request = h.build(b"2", &[(7, "1"), (16, "0")]);
    h.session.handle_bytes(h.now, &request);
    raw(&mut h);
    assert!(h.session.resend_pending());
    h.session.logout(h.now, "end of day");
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg_type(), b"5");
    assert!(!h.session.resend_pending());
}

// ----- Repeating groups at the session level (cases 14i and 14j) ---------------------------------

#[test]
fn group_count_differing_from_its_instances_is_rejected_with_reason_16() {
    let (answer, h) = reject_for(&frame(
        "35=D|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|11=O-1|453=2|448=CL1|447=D|452=3|55=ACME|54=1|60=20261123-12:00:00|38=100|40=2|44=10.5|",
    ));
    assert_eq!(text(&answer[0], 373), "16");
    assert_eq!(text(&answer[0], 371), "453");
    assert_eq!(h.session.seq_num_next_in(), 3, "the number is consumed");
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn group_instance_not_starting_with_its_delimiter_is_rejected_with_reason_15() {
    let (answer, h) = reject_for(&frame(
        "35=D|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|11=O-1|453=1|447=D|448=CL1|452=3|55=ACME|54=1|60=20261123-12:00:00|38=100|40=2|44=10.5|",
    ));
    assert_eq!(text(&answer[0], 373), "15");
    assert_eq!(h.session.seq_num_next_in(), 3, "the number is consumed");
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn a_well_formed_parties_group_reaches_the_application() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    let answer = h.feed(&frame(
        "35=D|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|11=O-1|453=2|448=CL1|447=P|452=3|448=TRD7|447=P|452=12|55=ACME|54=1|60=20261123-12:00:00|38=100|40=2|44=10.5|",
    ));
    assert!(answer.is_empty(), "{answer:?}");
    match h.events().as_slice() {
        [Event::Application(message)] => assert_eq!(text(message, 453), "2"),
        other => panic!("expected the order, got {other:?}"),
    }
}

// ----- Found by mutation testing -----------------------------------------------------------------

#[test]
fn gap_fill_whose_new_seq_no_is_its_own_number_is_rejected() {
    let mut h = Harness::new();
    h.logon();
    // In sequence at 2, claiming the next number is 2: it moves nothing forward.
    let answer = h.send(b"4", &[(123, "Y"), (36, "2")]);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 45), "2");
    assert_eq!(text(&answer[0], 373), "5");
    assert_eq!(text(&answer[0], 371), "36");
    assert_eq!(
        h.session.seq_num_next_in(),
        3,
        "the reject takes its number"
    );
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn wrong_target_comp_id_is_rejected_then_logged_out() {
    let (answer, mut h) = reject_for(&frame(
        "35=0|49=CLIENT|56=ELSEWHERE|34=2|52=20261123-12:00:00|",
    ));
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "9");
    assert_eq!(text(&answer[0], 371), "56");
    assert_eq!(answer[1].msg_type(), b"5");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::ProtocolViolation(_))
    ));
}

#[test]
fn orig_sending_time_equal_to_sending_time_is_accepted() {
    let mut h = Harness::new();
    h.logon();
    // SendingTime is T0, 2026-11-23 12:00:00: a message resent at once is not from the future.
    let answer = h.send(b"0", &[(43, "Y"), (122, "20261123-12:00:00")]);
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(h.session.seq_num_next_in(), 3);
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn sequence_reset_to_exactly_the_largest_sequence_number_is_accepted() {
    let largest = constants::SEQ_NUM_MAX.to_string();
    // GapFill mode, in sequence.
    let mut h = Harness::new();
    h.logon();
    assert!(h.send(b"4", &[(123, "Y"), (36, &largest)]).is_empty());
    assert_eq!(h.session.seq_num_next_in(), constants::SEQ_NUM_MAX);
    // Reset mode.
    let mut h = Harness::new();
    h.logon();
    let bytes = h.build_with_seq(b"4", 2, &[(36, &largest)]);
    assert!(h.feed(&bytes).is_empty());
    assert_eq!(h.session.seq_num_next_in(), constants::SEQ_NUM_MAX);
}

#[test]
fn sending_time_exactly_at_the_tolerance_is_accepted() {
    let mut h = Harness::new();
    h.now = T0.plus_millis(constants::MAX_LATENCY_DEFAULT_MS);
    let bytes = h.build(b"A", &[(98, "0"), (108, "30")]);
    h.now = T0;
    let answer = h.feed(&bytes);
    assert_eq!(answer[0].msg_type(), b"A", "{answer:?}");
    assert_eq!(h.session.state(), State::Active);
    // The same bound after Logon, in the other direction.
    h.now = T0.plus_millis(constants::MAX_LATENCY_DEFAULT_MS);
    let bytes = h.build(b"1", &[(112, "EDGE")]);
    h.now = T0.plus_millis(2 * constants::MAX_LATENCY_DEFAULT_MS);
    let answer = h.feed(&bytes);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0].msg_type(), b"0");
    assert_eq!(text(&answer[0], 112), "EDGE");
}

#[test]
fn logon_with_a_msg_seq_num_beyond_the_largest_is_refused() {
    let mut h = Harness::new();
    let beyond = h.build_with_seq(b"A", constants::SEQ_NUM_MAX + 1, &[(98, "0"), (108, "30")]);
    let answer = h.feed(&beyond);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0].msg_type(), b"5");
    assert_eq!(text(&answer[0], 58), "MsgSeqNum missing or invalid");
    assert!(matches!(
        h.disconnected_with(),
        Some(DisconnectReason::LogonRefused(_))
    ));
}

#[test]
fn silence_allowance_is_the_interval_plus_its_margin_to_the_millisecond() {
    let mut h = Harness::new();
    h.logon();
    let allowance_ms = 30_000 + 30_000 * constants::HEARTBEAT_MARGIN_PCT / 100;
    // Our heartbeat at the interval; nothing else until the allowance has passed.
    let sent = h.advance(allowance_ms - 1);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg_type(), b"0");
    let sent = h.advance(1);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg_type(), b"1");
    assert_eq!(text(&sent[0], 112), "1");
    // The same allowance for the answer, then the connection is given up.
    h.advance(allowance_ms - 1);
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(h.disconnected_with(), None);
    h.advance(1);
    assert_eq!(h.disconnected_with(), Some(DisconnectReason::PeerSilent));
}

#[test]
fn each_test_request_carries_a_new_test_req_id() {
    let mut h = Harness::new();
    h.logon();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let sent = h.advance(36_000);
        let request = sent
            .iter()
            .find(|m| m.msg_type() == b"1")
            .expect("a TestRequest after the silence allowance");
        ids.push(text(request, 112));
        // The peer answers, which re-arms the wait for the next silence.
        h.send(b"0", &[(112, ids.last().unwrap())]);
    }
    assert_eq!(ids, ["1", "2", "3"]);
}

#[test]
fn logons_are_counted_including_a_reset_while_logged_on() {
    let mut h = Harness::new();
    assert_eq!(h.session.stats().logons, 0);
    h.logon();
    assert_eq!(h.session.stats().logons, 1);
    let reset = h.build_with_seq(b"A", 1, &[(98, "0"), (108, "30"), (141, "Y")]);
    h.feed(&reset);
    assert_eq!(h.session.stats().logons, 2);
}

#[test]
fn a_reset_logon_while_logged_on_takes_its_new_heart_bt_int() {
    let mut h = Harness::new();
    h.logon();
    let reset = h.build_with_seq(b"A", 1, &[(98, "0"), (108, "10"), (141, "Y")]);
    let answer = h.feed(&reset);
    assert_eq!(text(&answer[0], 108), "10");
    assert_eq!(h.session.heartbeat_interval_ms(), 10_000);
    assert!(h.advance(9_999).is_empty());
    let sent = h.advance(1);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg_type(), b"0");
}

#[test]
fn gateway_logout_before_logon_closes_and_a_second_one_waits_for_the_answer() {
    // Nothing to log out of yet: the connection is closed at once, without a message.
    let mut h = Harness::new();
    h.session.logout(h.now, "shutting down");
    assert!(h.sent().is_empty());
    assert_eq!(h.disconnected_with(), Some(DisconnectReason::LoggedOut));
    // Logged on: a second logout while the first waits for its answer changes nothing.
    let mut h = Harness::new();
    h.logon();
    h.events();
    h.session.logout(h.now, "shutting down");
    assert_eq!(h.sent()[0].msg_type(), b"5");
    h.session.logout(h.now, "shutting down again");
    assert!(h.sent().is_empty());
    assert_eq!(h.session.state(), State::LogoutSent);
    assert_eq!(h.disconnected_with(), None);
}

#[test]
fn heart_bt_int_zero_where_allowed_means_no_heartbeats_and_no_test_requests() {
    // The config file refuses a minimum of 0, but the session itself gives 0 its FIX meaning.
    let config = SessionConfig {
        heart_bt_int_min_s: 0,
        ..SessionConfig::new("BATON", "CLIENT")
    };
    let mut h = Harness::with_config(config);
    let answer = h.send(b"A", &[(98, "0"), (108, "0")]);
    assert_eq!(text(&answer[0], 108), "0");
    assert_eq!(h.session.state(), State::Active);
    h.send(b"0", &[]);
    assert!(h.advance(3_600_000).is_empty());
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(h.disconnected_with(), None);
}

// ----- Resend serving, exactly -------------------------------------------------------------------

/// Stores `count` Heartbeats from the gateway (session-level, so a resend gap-fills them) and
/// discards what went out.
fn with_heartbeats_sent(h: &mut Harness, count: usize) {
    for _ in 0..count {
        h.session.send_app(h.now, b"0", |_| {}).expect("stored");
    }
    h.sent();
}

/// (MsgType, MsgSeqNum, NewSeqNo) of each message, to compare a resend with its exact answer.
fn seq_summary(messages: &[Message]) -> Vec<(String, u64, String)> {
    messages
        .iter()
        .map(|m| {
            (
                text(m, 35),
                text(m, 34).parse().expect("MsgSeqNum"),
                text(m, 36),
            )
        })
        .collect()
}

fn gap_fill(seq: u64, new_seq: u64) -> (String, u64, String) {
    ("4".to_string(), seq, new_seq.to_string())
}

fn resent_report(seq: u64) -> (String, u64, String) {
    ("8".to_string(), seq, String::new())
}

#[test]
fn a_run_of_session_messages_in_a_resend_becomes_exactly_one_gap_fill() {
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_heartbeats_sent(&mut h, 10); // 2..=11
    with_many_sent(&mut h, 1); // 12
    with_heartbeats_sent(&mut h, 5); // 13..=17
    with_many_sent(&mut h, 1); // 18
    let answer = h.send(b"2", &[(7, "1"), (16, "0")]);
    assert_eq!(
        seq_summary(&answer),
        [
            gap_fill(1, 12),
            resent_report(12),
            gap_fill(13, 18),
            resent_report(18)
        ]
    );
    // A range that ends inside a run fills up to its end, and one that starts inside a run
    // fills from there.
    let answer = h.send(b"2", &[(7, "14"), (16, "16")]);
    assert_eq!(seq_summary(&answer), [gap_fill(14, 17)]);
    let answer = h.send(b"2", &[(7, "5"), (16, "12")]);
    assert_eq!(seq_summary(&answer), [gap_fill(5, 12), resent_report(12)]);
    assert!(!h.session.resend_pending());
}

#[test]
fn each_resend_step_gap_fills_exactly_its_message_budget() {
    let budget = constants::RESEND_STEP_MESSAGES_MAX as u64;
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_heartbeats_sent(&mut h, 3 * constants::RESEND_STEP_MESSAGES_MAX); // 2..=3*budget+1
    let request = h.build(b"2", &[(7, "1"), (16, "0")]);
    h.session.handle_bytes(h.now, &request);
    let mut steps = vec![seq_summary(&parse_all(&raw(&mut h)))];
    while h.session.resend_pending() {
        assert!(steps.len() < 10, "resend does not finish");
        h.session.continue_resend(h.now);
        steps.push(seq_summary(&parse_all(&raw(&mut h))));
    }
    // A step examines exactly the budget: one gap fill over that many messages each, and the
    // last step the one message left.
    assert_eq!(
        steps,
        [
            vec![gap_fill(1, budget + 1)],
            vec![gap_fill(budget + 1, 2 * budget + 1)],
            vec![gap_fill(2 * budget + 1, 3 * budget + 1)],
            vec![gap_fill(3 * budget + 1, 3 * budget + 2)],
        ]
    );
}

#[test]
fn business_resent_in_a_step_counts_against_its_message_budget() {
    let budget = constants::RESEND_STEP_MESSAGES_MAX as u64;
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_many_sent(&mut h, 100); // 2..=101
    with_heartbeats_sent(&mut h, 2 * constants::RESEND_STEP_MESSAGES_MAX);
    let answer = h.send(b"2", &[(7, "1"), (16, "0")]);
    let mut expected = vec![gap_fill(1, 2)];
    expected.extend((2..=101).map(resent_report));
    // 101 messages examined before the run: the gap fill covers what is left of the budget.
    expected.push(gap_fill(102, budget + 1));
    assert_eq!(seq_summary(&answer), expected);
    assert!(h.session.resend_pending());
}

#[test]
fn a_resend_request_for_an_invalid_range_is_rejected_and_serves_nothing() {
    let mut h = Harness::new();
    h.logon();
    with_sent_business(&mut h); // our seqs 2, 3, 4
    let answer = h.send(b"2", &[(7, "0"), (16, "2")]);
    assert_eq!(seq_summary(&answer), [("3".to_string(), 5, String::new())]);
    assert_eq!(text(&answer[0], 373), "5");
    let answer = h.send(b"2", &[(7, "4"), (16, "3")]);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0].msg_type(), b"3");
    assert_eq!(text(&answer[0], 373), "5");
    assert_eq!(text(&answer[0], 371), "16");
    assert_eq!(text(&answer[0], 58), "EndSeqNo lower than BeginSeqNo");
    // A number that is not one is a format problem of that field, not a range problem.
    let answer = h.send(b"2", &[(7, "x"), (16, "0")]);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(text(&answer[0], 373), "6");
    assert_eq!(text(&answer[0], 371), "7");
    assert_eq!(h.session.stats().resends_served, 0);
    assert!(!h.session.resend_pending());
}

#[test]
fn a_resend_request_past_what_was_sent_is_served_up_to_the_last_sent() {
    let mut h = Harness::new();
    h.logon();
    with_sent_business(&mut h); // our seqs 2, 3, 4
    let answer = h.send(b"2", &[(7, "3"), (16, "100")]);
    assert_eq!(seq_summary(&answer), [resent_report(3), resent_report(4)]);
    let answer = h.send(b"2", &[(7, "4"), (16, "4")]);
    assert_eq!(seq_summary(&answer), [resent_report(4)]);
    // Nothing sent from there on: nothing to serve, and the request is still counted.
    let answer = h.send(b"2", &[(7, "10"), (16, "0")]);
    assert!(answer.is_empty(), "{answer:?}");
    assert!(!h.session.resend_pending());
    assert_eq!(h.session.stats().resends_served, 3);
    assert_eq!(h.session.store().seq_num_next_out(), 5);
}

#[test]
fn a_resend_request_covering_messages_held_behind_a_resend_sends_each_once() {
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_many_sent(&mut h, 3_000); // 2..=3001
    let request = h.build(b"2", &[(7, "2"), (16, "0")]);
    h.session.handle_bytes(h.now, &request);
    let mut received = parse_all(&raw(&mut h));
    for n in 0..3 {
        let id = format!("LIVE-{n}");
        h.session
            .send_app(h.now, b"8", |e| {
                e.str(37, &id).str(11, &id).str(17, &id);
            })
            .unwrap(); // 3002..=3004, held
    }
    assert!(raw(&mut h).is_empty(), "held behind the resend");
    // The counterparty asks again, now for everything: the held messages are part of the
    // range, so they are resent in it and not a second time after it.
    let request = h.build(b"2", &[(7, "2"), (16, "0")]);
    let (rest, _) = serve_in_steps(&mut h, &request);
    received.extend(rest);
    let restart = received
        .iter()
        .rposition(|m| text(m, 34) == "2")
        .expect("served from 2");
    assert_eq!(assert_contiguous(&received[restart..], 2), 3_005);
    let live: Vec<(String, String)> = received
        .iter()
        .filter(|m| text(m, 11).starts_with("LIVE-"))
        .map(|m| (text(m, 34), text(m, 43)))
        .collect();
    assert_eq!(
        live,
        [("3002", "Y"), ("3003", "Y"), ("3004", "Y")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn after_our_logout_held_session_messages_follow_a_resend_and_business_waits() {
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_many_sent(&mut h, 3_000); // 2..=3001
    h.session.logout(h.now, "bye"); // 3002
    assert_eq!(h.sent().len(), 1);
    // The counterparty closes its gap before it answers our Logout, as it should.
    let request = h.build(b"2", &[(7, "2"), (16, "0")]);
    h.session.handle_bytes(h.now, &request);
    let mut received = parse_all(&raw(&mut h));
    assert!(h.session.resend_pending());
    // A Reject (ours, 3003) falls due during the resend; then the outbox delivers (3004).
    received.extend(h.send(b"ZZ", &[]));
    h.session
        .send_app(h.now, b"8", |e| {
            e.str(37, "LATE").str(11, "LATE").str(17, "LATE");
        })
        .unwrap();
    let (rest, _) = serve_in_steps(&mut h, &[]);
    received.extend(rest);
    assert_eq!(assert_contiguous(&received, 2), 3_004);
    let last = received.last().expect("something was sent");
    assert_eq!(
        (text(last, 35), text(last, 34)),
        ("3".to_string(), "3003".to_string())
    );
    assert!(
        received.iter().all(|m| text(m, 11) != "LATE"),
        "business waits for the next session after our Logout"
    );
}

#[test]
fn every_message_written_is_counted_once_and_so_is_every_frame_reject_and_resend() {
    let mut h = Harness::new();
    let mut received = h.logon();
    for n in 0..1_500 {
        let id = format!("E-{n}");
        h.session
            .send_app(h.now, b"8", |e| {
                e.str(37, &id).str(11, &id).str(17, &id);
            })
            .unwrap();
    }
    received.extend(h.sent()); // live
    received.extend(h.send(b"ZZ", &[])); // a Reject
    received.extend(h.advance(31_000)); // a Heartbeat
    let request = h.build(b"2", &[(7, "1"), (16, "0")]);
    h.session.handle_bytes(h.now, &request);
    received.extend(parse_all(&raw(&mut h)));
    for n in 0..2 {
        let id = format!("HELD-{n}");
        h.session
            .send_app(h.now, b"8", |e| {
                e.str(37, &id).str(11, &id).str(17, &id);
            })
            .unwrap();
    }
    let (rest, _) = serve_in_steps(&mut h, &[]); // resent, gap fills, then the held ones
    received.extend(rest);
    assert!(received.iter().any(|m| text(m, 11) == "HELD-1"));
    let stats = h.session.stats();
    assert_eq!(stats.messages_out, received.len() as u64);
    assert_eq!(stats.frames_in, 3, "Logon, the bad message, ResendRequest");
    assert_eq!(stats.rejects_sent, 1);
    assert_eq!(stats.resends_served, 1);
    assert_eq!(stats.garbled, 0);
    assert_eq!(stats.logons, 1);
}

#[test]
fn a_reject_names_a_tag_only_when_one_is_at_fault() {
    // A tag that is not a number: no tag number can be named.
    let (answer, _) = reject_for(&frame(
        "35=0|49=CLIENT|56=BATON|34=2|52=20261123-12:00:00|x9=X|",
    ));
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(text(&answer[0], 373), "0");
    assert_eq!(answer[0].get(371), None, "{answer:?}");
    assert_eq!(text(&answer[0], 45), "2");
    assert_eq!(text(&answer[0], 372), "0");
}

#[test]
fn identify_reads_the_begin_string_and_both_comp_ids() {
    let logon = Message::parse(&frame(
        "35=A|49=CLIENT|56=BATON|34=1|52=20261123-12:00:00|98=0|108=30|",
    ))
    .unwrap();
    assert_eq!(
        identify(&logon),
        Some((&b"FIX.4.4"[..], &b"CLIENT"[..], &b"BATON"[..]))
    );
    let anonymous = Message::parse(&frame(
        "35=A|49=CLIENT|34=1|52=20261123-12:00:00|98=0|108=30|",
    ))
    .unwrap();
    assert_eq!(identify(&anonymous), None);
}

// ----- The queue behind a gap, exactly ------------------------------------------------------------

#[test]
fn a_gap_fill_past_queued_messages_drops_them_and_releases_their_bytes() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    let _lost = h.build(b"0", &[]); // seq 2
    h.send(b"D", &order("O-3")); // queued, and the ResendRequest goes out
    h.send(b"D", &order("O-4"));
    let _after = h.build(b"0", &[]); // seq 5, lost too
    h.send(b"D", &order("O-6"));
    assert_eq!(h.session.queue.len(), 3);
    assert!(h.session.queue_bytes > 0);
    assert!(!h.session.settled());
    // The counterparty's answer says 2..=4 were session-level after all: the two orders it
    // replaces are dropped, and 6 still waits for 5.
    let fill = h.build_with_seq(
        b"4",
        2,
        &[(43, "Y"), (122, "20261123-11:59:00"), (123, "Y"), (36, "5")],
    );
    assert!(h.feed(&fill).is_empty());
    assert!(
        h.events().is_empty(),
        "nothing a gap fill covered is delivered"
    );
    assert_eq!(h.session.seq_num_next_in(), 5);
    let left: Vec<u64> = h.session.queue.keys().copied().collect();
    assert_eq!(left, [6]);
    let expected_bytes: usize = h
        .session
        .queue
        .values()
        .map(|q| queued_bytes(&q.message))
        .sum();
    assert_eq!(h.session.queue_bytes, expected_bytes);
    assert!(!h.session.settled(), "5 is still missing");
    let fill = h.build_with_seq(
        b"4",
        5,
        &[(43, "Y"), (122, "20261123-11:59:00"), (123, "Y"), (36, "6")],
    );
    assert!(h.feed(&fill).is_empty());
    let delivered: Vec<(String, u64)> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Application(m) => Some((text(&m, 11), text(&m, 34).parse().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [("O-6".to_string(), 6)]);
    assert_eq!(h.session.queue_bytes, 0);
    h.session.confirm_in(6);
    assert!(
        h.session.settled(),
        "the gap is closed and nothing is queued"
    );
}

#[test]
fn a_gap_closed_by_the_resent_messages_leaves_the_session_settled() {
    let mut h = Harness::new();
    h.logon();
    h.events();
    let lost = h.build(b"0", &[]); // seq 2
    h.send(b"0", &[]); // seq 3, queued
    assert!(!h.session.settled());
    let resent = h.build_with_seq(b"0", 2, &[(43, "Y"), (122, "20261123-11:59:00")]);
    drop(lost);
    h.feed(&resent);
    assert_eq!(h.session.seq_num_next_in(), 4);
    assert!(
        h.session.settled(),
        "gap closed: {:?}",
        h.session.resend_target
    );
    // A second gap asks again.
    let _lost = h.build(b"0", &[]); // seq 4
    let answer = h.send(b"0", &[]); // seq 5
    assert_eq!(seq_summary(&answer), [("2".to_string(), 3, String::new())]);
    assert_eq!(text(&answer[0], 7), "4");
}

#[test]
fn messages_held_behind_a_resend_count_against_each_steps_budget() {
    let budget = constants::RESEND_STEP_MESSAGES_MAX as u64;
    let mut h = Harness::new();
    h.logon(); // our seq 1
    with_many_sent(&mut h, 3_000); // 2..=3001
    h.session.logout(h.now, "bye"); // 3002
    h.sent();
    let request = h.build(b"2", &[(7, "2"), (16, "0")]);
    h.session.handle_bytes(h.now, &request);
    raw(&mut h);
    // A Reject during the resend is held (3003); the outbox's business after it (from 3004)
    // is stored, but after our Logout it waits for the next session, so the held messages
    // after the Reject are examined without writing anything.
    h.send(b"ZZ", &[]);
    with_many_sent(&mut h, 2 * constants::RESEND_STEP_MESSAGES_MAX);
    while h.session.replay.is_some() {
        h.session.continue_resend(h.now);
        raw(&mut h);
    }
    // Steps that start among the held messages examine at most the budget each.
    let mut steps = 0;
    while let Some(from) = h.session.held_from {
        steps += 1;
        assert!(steps < 10, "held messages do not drain");
        h.session.continue_resend(h.now);
        let to = h
            .session
            .held_from
            .unwrap_or(h.session.store().seq_num_next_out());
        assert!(to - from <= budget, "{from}..{to} in one step");
        raw(&mut h);
    }
    assert!(steps >= 2, "{steps} steps");
}
