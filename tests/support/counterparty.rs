//! A counterparty that keeps its own books across reconnects, the way a real one reconciles:
//! every MsgSeqNum it processed, every ExecID, and the reports per ClOrdID. A resend marked
//! PossDup of a number it already processed is dropped; the same number again without PossDup
//! fails the test, as does an ExecID seen twice.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use baton::bench::initiator::Initiator;
use baton::fix::codec::Message;

use super::text;

/// One counterparty's view of its session, surviving reconnects.
pub struct Counterparty {
    /// The current connection.
    pub client: Initiator,
    /// MsgSeqNums processed (or skipped by a GapFill), kept across reconnects.
    processed: BTreeSet<u64>,
    /// The next MsgSeqNum the counterparty has not seen; a higher one means a gap to request.
    expected: u64,
    /// ExecIDs processed; a repeat is a duplicated execution.
    exec_ids: HashSet<String>,
    /// ExecTypes (150) processed per ClOrdID, in arrival order.
    pub reports: BTreeMap<String, Vec<String>>,
    /// The input seq each of those reports answers (the first part of its ExecID), same order.
    pub input_seqs: BTreeMap<String, Vec<u64>>,
    /// Resent copies of messages already processed, dropped as a counterparty must.
    pub poss_dup_dropped: u64,
}

impl Counterparty {
    /// Takes over a logged-on initiator whose every message so far counts as processed.
    pub fn new(client: Initiator) -> Counterparty {
        let expected = client.seq_num_next_in();
        Counterparty {
            client,
            processed: (1..expected).collect(),
            expected,
            exec_ids: HashSet::new(),
            reports: BTreeMap::new(),
            input_seqs: BTreeMap::new(),
            poss_dup_dropped: 0,
        }
    }

    /// Reconnects with a new connection: logs on with the numbers where the session left off
    /// and asks for anything the acceptor sent that it has not processed. With `behind` > 0 its
    /// inbound number lags what it processed by that much, as when a counterparty's sequence
    /// store is persisted after its message store: the acceptor then resends those messages,
    /// which must come marked PossDup and are dropped.
    pub fn reconnect(&mut self, mut client: Initiator, behind: u64, timeout: Duration) {
        self.expected -= behind;
        client.set_seq_num_next_out(self.client.seq_num_next_out());
        client.set_seq_num_next_in(self.expected);
        let logon = client.logon(false, timeout).expect("logon after reconnect");
        assert_eq!(logon.msg_type(), b"A", "logon refused: {logon:?}");
        self.client = client;
        self.process(logon);
    }

    /// Processes one message from the acceptor.
    pub fn process(&mut self, message: Message) {
        let seq = message.uint(34).expect("MsgSeqNum on every message");
        let poss_dup = text(&message, 43) == "Y";
        if message.msg_type() == b"4" {
            let new_seq = message.uint(36).expect("NewSeqNo on a SequenceReset");
            self.processed.extend(seq..new_seq);
            self.expected = self.expected.max(new_seq);
            return;
        }
        if !self.processed.insert(seq) {
            assert!(
                poss_dup,
                "MsgSeqNum {seq} repeated without PossDupFlag: {message:?}"
            );
            self.poss_dup_dropped += 1;
            return;
        }
        if seq > self.expected && !poss_dup {
            // A gap: ask for everything from the first number not seen.
            let from = self.expected;
            self.client
                .send(b"2", |e| {
                    e.uint(7, from).uint(16, 0);
                })
                .expect("send ResendRequest");
        }
        self.expected = self.expected.max(seq + 1);
        if message.msg_type() == b"8" {
            let exec_id = text(&message, 17);
            assert!(
                self.exec_ids.insert(exec_id.clone()),
                "ExecID {exec_id} processed twice: {message:?}"
            );
            let input_seq = exec_id
                .split('-')
                .next()
                .and_then(|seq| seq.parse().ok())
                .unwrap_or_else(|| panic!("ExecID {exec_id} is not INPUTSEQ-INDEX"));
            let cl_ord_id = text(&message, 11);
            self.input_seqs
                .entry(cl_ord_id.clone())
                .or_default()
                .push(input_seq);
            self.reports
                .entry(cl_ord_id)
                .or_default()
                .push(text(&message, 150));
        }
    }

    /// Processes messages until `done` holds for this counterparty; panics with what it has if
    /// `timeout` passes first.
    pub fn until(&mut self, timeout: Duration, what: &str, done: impl Fn(&Counterparty) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not within {timeout:?}; reports so far {:?}",
                self.reports
            );
            match self.client.recv(left) {
                Ok(Some(message)) => self.process(message),
                Ok(None) => {}
                Err(error) => panic!("{what}: {error}; reports so far {:?}", self.reports),
            }
        }
    }

    /// Whether every MsgSeqNum below the next expected one was processed or gap-filled.
    pub fn gap_free(&self) -> bool {
        self.processed.len() as u64 == self.expected - 1
            && self.processed.first().is_none_or(|first| *first == 1)
    }

    /// The ExecTypes processed for `cl_ord_id`.
    pub fn exec_types(&self, cl_ord_id: &str) -> &[String] {
        self.reports.get(cl_ord_id).map_or(&[], Vec::as_slice)
    }
}
