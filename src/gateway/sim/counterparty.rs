//! A counterparty of the simulation: a FIX 4.4 initiator written from the specification, as
//! the session tests' counterparty is, so the gateway's sessions are driven through the bytes a
//! real client sends and read back what a real client would see.
//!
//! It keeps its own numbers across connections (it never crashes), logs on without a reset,
//! answers TestRequests and ResendRequests (its orders resent with PossDupFlag=Y, everything
//! else gap-filled), asks for what it missed with one ResendRequest to infinity and drops what
//! arrives beyond the gap until the resend brings it. On the way it checks what the gateway owes
//! it: MsgSeqNums in order with nothing lower unless marked PossDup, every ExecID once, and
//! every order it sent acknowledged once (an ExecutionReport New or Rejected, or a
//! BusinessMessageReject naming its ClOrdID).

use std::collections::{BTreeMap, BTreeSet};

use crate::constants;
use crate::fix::codec::{Decoder, Encoder, Frame, Message};
use crate::fix::tags::{self, msg_type};
use crate::gateway::translate::{exec_id_key, tag};
use crate::time::Timestamp;

/// ExecType (150) values that acknowledge an order: New and Rejected.
const ACKNOWLEDGING_EXEC_TYPES: [&[u8]; 2] = [b"0", b"8"];

/// An order as sent, kept to resend it under its own number.
struct SentOrder {
    /// SendingTime of the first transmission: OrigSendingTime of every resend.
    sending_time: Timestamp,
    /// Body fields after the standard header.
    fields: Vec<(u32, String)>,
}

/// One simulated client.
pub(super) struct Counterparty {
    /// Its CompID; the gateway's is [`GATEWAY_COMP_ID`].
    pub(super) comp_id: String,
    /// MsgSeqNum of its next message.
    next_out: u64,
    /// MsgSeqNum it expects next from the gateway.
    next_in: u64,
    /// Orders by the MsgSeqNum they were sent under; every other number is gap-filled on resend.
    sent: BTreeMap<u64, SentOrder>,
    /// A transport to the gateway is open.
    pub(super) connected: bool,
    /// The gateway answered its Logon (or took the connection back logged on).
    pub(super) logged_on: bool,
    /// Highest MsgSeqNum seen beyond a gap, while its ResendRequest is outstanding.
    resend_target: Option<u64>,
    /// Bytes read and not yet framed.
    recv: Vec<u8>,
    decoder: Decoder,
    encoder: Encoder,
    /// Bytes to write to the gateway.
    pub(super) out: Vec<u8>,
    /// Acknowledgements per ClOrdID it sent.
    pub(super) acks: BTreeMap<String, u32>,
    /// ExecIDs received, as (input seq, index).
    pub(super) exec_ids: BTreeSet<(u64, u32)>,
    /// The body of each execution report received, by ExecID: checked at rest against what a
    /// replay of the journal says the report is, so a report from an engine whose book
    /// diverged is caught even when its ExecID is right.
    pub(super) reports: BTreeMap<(u64, u32), Body>,
    /// Orders sent so far, for ClOrdIDs.
    orders: u64,
    /// The first thing the gateway did wrong, if anything.
    pub(super) broken: Option<String>,
    /// It asked the gateway to log out and waits for the answer.
    logout_sent: bool,
    /// Gaps it saw in the gateway's numbers and asked for (not counting its own requests for
    /// what it already had).
    pub(super) gaps: u64,
}

/// The gateway's CompID in the simulation.
pub(super) const GATEWAY_COMP_ID: &str = "BATON";

impl Counterparty {
    pub(super) fn new(comp_id: String) -> Counterparty {
        Counterparty {
            comp_id,
            next_out: 1,
            next_in: 1,
            sent: BTreeMap::new(),
            connected: false,
            logged_on: false,
            resend_target: None,
            recv: Vec::new(),
            decoder: Decoder::new(constants::BODY_LENGTH_MAX),
            encoder: Encoder::new("FIX.4.4"),
            out: Vec::new(),
            acks: BTreeMap::new(),
            exec_ids: BTreeSet::new(),
            reports: BTreeMap::new(),
            orders: 0,
            broken: None,
            logout_sent: false,
            gaps: 0,
        }
    }

    /// MsgSeqNum it expects next from the gateway.
    pub(super) fn next_in(&self) -> u64 {
        self.next_in
    }

    /// Whether it asked for a gap and the resend has not brought it yet: until then it drops
    /// what arrives beyond the gap.
    pub(super) fn awaiting_resend(&self) -> bool {
        self.resend_target.is_some()
    }

    /// MsgSeqNum of its next message.
    pub(super) fn next_out(&self) -> u64 {
        self.next_out
    }

    fn header(&mut self, now: Timestamp, msg_type: &[u8], seq: u64) {
        self.encoder
            .start(msg_type)
            .str(tags::SENDER_COMP_ID, &self.comp_id)
            .str(tags::TARGET_COMP_ID, GATEWAY_COMP_ID)
            .uint(tags::MSG_SEQ_NUM, seq)
            .timestamp(tags::SENDING_TIME, now);
    }

    fn finish(&mut self) {
        let bytes = self.encoder.finish();
        self.out.extend_from_slice(bytes);
    }

    /// A session-level message under the next number.
    fn send_admin(&mut self, now: Timestamp, msg_type: &[u8], body: impl FnOnce(&mut Encoder)) {
        let seq = self.next_out;
        self.next_out += 1;
        self.header(now, msg_type, seq);
        body(&mut self.encoder);
        self.finish();
    }

    /// A new transport: it logs on with its numbers as they are.
    pub(super) fn connect(&mut self, now: Timestamp) {
        self.connected = true;
        self.logged_on = false;
        self.logout_sent = false;
        self.recv.clear();
        self.out.clear();
        self.resend_target = None;
        self.send_admin(now, msg_type::LOGON, |e| {
            e.uint(tags::ENCRYPT_METHOD, 0)
                .uint(tags::HEART_BT_INT, constants::SIM_HEART_BT_INT_S);
        });
    }

    /// The transport closed; bytes in flight are lost.
    pub(super) fn disconnect(&mut self) {
        self.connected = false;
        self.logged_on = false;
        self.logout_sent = false;
        self.recv.clear();
        self.out.clear();
        self.resend_target = None;
    }

    /// The gateway took the held connection back still logged on: nothing changes here.
    pub(super) fn still_logged_on(&self) -> bool {
        self.connected && self.logged_on
    }

    /// Asks the gateway to end the session.
    pub(super) fn logout(&mut self, now: Timestamp) {
        if self.logged_on && !self.logout_sent {
            self.logout_sent = true;
            self.send_admin(now, msg_type::LOGOUT, |e| {
                e.str(tags::TEXT, "done for now");
            });
        }
    }

    /// Sends a limit order; returns its ClOrdID.
    pub(super) fn order(
        &mut self,
        now: Timestamp,
        symbol: &str,
        buy: bool,
        price: u64,
        qty: u64,
    ) -> String {
        self.orders += 1;
        let cl_ord_id = format!("{}-{}", self.comp_id, self.orders);
        let fields = vec![
            (tags::CL_ORD_ID, cl_ord_id.clone()),
            (tag::SYMBOL, symbol.to_owned()),
            (tag::SIDE, if buy { "1" } else { "2" }.to_owned()),
            (tag::TRANSACT_TIME, transact_time(now)),
            (tag::ORDER_QTY, qty.to_string()),
            (tag::ORD_TYPE, "2".to_owned()),
            (tag::PRICE, price.to_string()),
        ];
        let seq = self.next_out;
        self.next_out += 1;
        self.header(now, msg_type::NEW_ORDER_SINGLE, seq);
        for (tag, value) in &fields {
            self.encoder.str(*tag, value);
        }
        self.finish();
        self.acks.insert(cl_ord_id.clone(), 0);
        self.sent.insert(
            seq,
            SentOrder {
                sending_time: now,
                fields,
            },
        );
        cl_ord_id
    }

    /// Asks the gateway to send `begin..=end` again (`end` 0: everything from `begin`), as a
    /// client that lost its own copy does.
    pub(super) fn ask_resend(&mut self, now: Timestamp, begin: u64, end: u64) {
        self.send_admin(now, msg_type::RESEND_REQUEST, |e| {
            e.uint(tags::BEGIN_SEQ_NO, begin)
                .uint(tags::END_SEQ_NO, end);
        });
    }

    fn problem(&mut self, text: String) {
        if self.broken.is_none() {
            self.broken = Some(format!("{}: {text}", self.comp_id));
        }
    }

    /// Bytes from the gateway. Returns true when the counterparty closes the connection (a
    /// Logout exchanged).
    pub(super) fn handle_bytes(&mut self, now: Timestamp, bytes: &[u8]) -> bool {
        if !self.connected {
            return false;
        }
        self.recv.extend_from_slice(bytes);
        let mut consumed = 0;
        let mut close = false;
        while !close {
            match self.decoder.frame(&self.recv[consumed..]) {
                Frame::Incomplete => break,
                Frame::Garbled { skip, reason } => {
                    self.problem(format!("the gateway sent garbled bytes: {reason:?}"));
                    consumed += skip;
                }
                Frame::Complete(len) => {
                    let parsed = Message::parse(&self.recv[consumed..consumed + len]);
                    consumed += len;
                    match parsed {
                        Ok(message) => close = self.handle_message(now, &message),
                        Err(reason) => {
                            self.problem(format!("the gateway sent a garbled message: {reason:?}"))
                        }
                    }
                }
            }
        }
        self.recv.drain(..consumed.min(self.recv.len()));
        if close {
            self.disconnect();
        }
        close
    }

    fn handle_message(&mut self, now: Timestamp, message: &Message) -> bool {
        let Ok(seq) = message.uint(tags::MSG_SEQ_NUM) else {
            self.problem("a message without MsgSeqNum".into());
            return false;
        };
        let kind = message.msg_type().to_vec();
        let poss_dup = message
            .bool_opt(tags::POSS_DUP_FLAG)
            .ok()
            .flatten()
            .unwrap_or(false);
        if kind == msg_type::LOGON {
            self.logged_on = true;
        }
        let gap_fill = message
            .bool_opt(tags::GAP_FILL_FLAG)
            .ok()
            .flatten()
            .unwrap_or(false);
        if kind == msg_type::SEQUENCE_RESET && !gap_fill {
            self.problem(format!("a SequenceReset-Reset at {seq}"));
            return false;
        }
        if seq < self.next_in {
            if !poss_dup {
                self.problem(format!(
                    "MsgSeqNum {seq} without PossDupFlag while expecting {}",
                    self.next_in
                ));
            }
            // A copy of what was processed: recognised and dropped.
            return false;
        }
        if seq > self.next_in {
            if kind == msg_type::RESEND_REQUEST {
                self.serve_resend(now, message);
            }
            if kind == msg_type::LOGOUT {
                return true;
            }
            match self.resend_target {
                Some(target) => self.resend_target = Some(target.max(seq)),
                None => {
                    self.gaps += 1;
                    self.resend_target = Some(seq);
                    let begin = self.next_in;
                    self.ask_resend(now, begin, 0);
                }
            }
            // Dropped: the resend brings it again, in order.
            return false;
        }
        if kind == msg_type::SEQUENCE_RESET {
            match message.uint(tags::NEW_SEQ_NO) {
                Ok(new) if new > seq => self.next_in = new,
                _ => {
                    self.problem(format!("a gap fill at {seq} that does not move forward"));
                    self.next_in = seq + 1;
                }
            }
        } else {
            self.next_in = seq + 1;
        }
        if self
            .resend_target
            .is_some_and(|target| self.next_in > target)
        {
            self.resend_target = None;
        }
        match kind.as_slice() {
            msg_type::TEST_REQUEST => {
                let id = message.get(tags::TEST_REQ_ID).unwrap_or_default().to_vec();
                self.send_admin(now, msg_type::HEARTBEAT, |e| {
                    e.bytes(tags::TEST_REQ_ID, &id);
                });
            }
            msg_type::RESEND_REQUEST => self.serve_resend(now, message),
            msg_type::LOGOUT => {
                if !self.logout_sent {
                    self.send_admin(now, msg_type::LOGOUT, |_| {});
                }
                return true;
            }
            msg_type::REJECT => {
                let text = String::from_utf8_lossy(message.get(tags::TEXT).unwrap_or_default())
                    .into_owned();
                self.problem(format!("the gateway rejected message {seq}: {text}"));
            }
            msg_type::EXECUTION_REPORT => self.execution_report(message),
            msg_type::BUSINESS_MESSAGE_REJECT => {
                if let Some(id) = message.get(tags::BUSINESS_REJECT_REF_ID) {
                    let id = String::from_utf8_lossy(id).into_owned();
                    self.acknowledge(&id);
                }
            }
            _ => {}
        }
        false
    }

    fn execution_report(&mut self, message: &Message) {
        let Some(key) = message.get(tag::EXEC_ID).and_then(exec_id_key) else {
            self.problem("an ExecutionReport without an ExecID of baton's form".into());
            return;
        };
        if !self.exec_ids.insert(key) {
            self.problem(format!("ExecID {}-{} received twice", key.0, key.1));
        }
        self.reports.insert(key, body_fields(message));
        let exec_type = message.get(tag::EXEC_TYPE).unwrap_or_default();
        if ACKNOWLEDGING_EXEC_TYPES.contains(&exec_type) {
            let id = String::from_utf8_lossy(message.get(tags::CL_ORD_ID).unwrap_or_default())
                .into_owned();
            self.acknowledge(&id);
        }
    }

    fn acknowledge(&mut self, cl_ord_id: &str) {
        let count = self.acks.get_mut(cl_ord_id).map(|count| {
            *count += 1;
            *count
        });
        match count {
            Some(1) => {}
            Some(count) => self.problem(format!("order {cl_ord_id} acknowledged {count} times")),
            None => self.problem(format!(
                "an answer about an order it never sent: {cl_ord_id}"
            )),
        }
    }

    /// Sends its orders in the range again with PossDupFlag=Y; every other number in it is
    /// covered by a gap fill.
    fn serve_resend(&mut self, now: Timestamp, message: &Message) {
        let begin = message.uint(tags::BEGIN_SEQ_NO).unwrap_or(1).max(1);
        let last = self.next_out - 1;
        let end = match message.uint(tags::END_SEQ_NO) {
            Ok(0) | Err(_) => last,
            Ok(end) => end.min(last),
        };
        let mut seq = begin;
        while seq <= end {
            if let Some(order) = self.sent.get(&seq) {
                let fields = order.fields.clone();
                let orig = order.sending_time;
                self.encoder
                    .start(msg_type::NEW_ORDER_SINGLE)
                    .str(tags::SENDER_COMP_ID, &self.comp_id)
                    .str(tags::TARGET_COMP_ID, GATEWAY_COMP_ID)
                    .uint(tags::MSG_SEQ_NUM, seq)
                    .timestamp(tags::SENDING_TIME, now)
                    .bool(tags::POSS_DUP_FLAG, true)
                    .timestamp(tags::ORIG_SENDING_TIME, orig);
                for (tag, value) in &fields {
                    self.encoder.str(*tag, value);
                }
                self.finish();
                seq += 1;
                continue;
            }
            let mut to = seq + 1;
            while to <= end && !self.sent.contains_key(&to) {
                to += 1;
            }
            self.header(now, msg_type::SEQUENCE_RESET, seq);
            self.encoder
                .bool(tags::POSS_DUP_FLAG, true)
                .timestamp(tags::ORIG_SENDING_TIME, now)
                .bool(tags::GAP_FILL_FLAG, true)
                .uint(tags::NEW_SEQ_NO, to);
            self.finish();
            seq = to;
        }
    }
}

/// A message's body fields, (tag, value) in order.
pub(super) type Body = Vec<(u32, Vec<u8>)>;

/// The fields of `message` after its standard header and before its trailer: what the
/// message says, whichever MsgSeqNum and transmission carried it.
pub(super) fn body_fields(message: &Message) -> Body {
    message
        .fields()
        .filter(|(tag, _)| !tags::TRANSMISSION.contains(tag))
        .map(|(tag, value)| (tag, value.to_vec()))
        .collect()
}

/// TransactTime (60) of an order sent at `now`.
fn transact_time(now: Timestamp) -> String {
    let mut out = Vec::new();
    now.write_fix(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
