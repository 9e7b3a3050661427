//! A FIX 4.4 initiator over a blocking TCP socket: the counterparty used by integration tests
//! and the load generator.
//!
//! It is deliberately plain: one socket, one thread, explicit calls. A test states exactly what
//! the counterparty sends and checks exactly what comes back; the initiator only keeps sequence
//! numbers, answers TestRequests (so a slow test is not logged out) and counts inbound gaps and
//! repeats.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::constants;
use crate::fix::codec::{Decoder, Encoder, Frame, Message};
use crate::fix::tags::{self, msg_type};
use crate::fix::time::Timestamp;

/// Why an initiator call failed.
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing matching arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The acceptor closed the connection.
    #[error("connection closed by the acceptor")]
    Closed,
    /// The acceptor sent bytes that are not a FIX frame.
    #[error("garbled input from the acceptor")]
    Garbled,
}

/// Who the initiator is.
#[derive(Clone, Debug)]
pub struct InitiatorConfig {
    /// Our CompID (SenderCompID on what we send).
    pub sender_comp_id: String,
    /// The acceptor's CompID.
    pub target_comp_id: String,
    /// HeartBtInt asked for in the Logon, seconds.
    pub heart_bt_int_s: u64,
}

impl InitiatorConfig {
    /// An initiator `sender` talking to acceptor `target`, with a 30 s heartbeat.
    pub fn new(sender: &str, target: &str) -> InitiatorConfig {
        InitiatorConfig {
            sender_comp_id: sender.to_string(),
            target_comp_id: target.to_string(),
            heart_bt_int_s: 30,
        }
    }
}

/// One FIX connection from the counterparty's side.
pub struct Initiator {
    /// The connection.
    stream: TcpStream,
    /// Who we are.
    config: InitiatorConfig,
    /// Builds what we send.
    encoder: Encoder,
    /// Frames what we receive.
    decoder: Decoder,
    /// Bytes received and not yet framed.
    recv: Vec<u8>,
    /// Read buffer.
    chunk: Vec<u8>,
    /// MsgSeqNum of our next message.
    seq_num_next_out: u64,
    /// MsgSeqNum we expect next from the acceptor.
    seq_num_next_in: u64,
    /// Inbound sequence gaps seen (a number skipped without a gap fill).
    gaps: u64,
    /// Inbound MsgSeqNums seen again without PossDupFlag: a resend must say it is one, so a
    /// repeat without the flag is an acceptor that sent something twice (or reused a number).
    repeated: u64,
    /// Whether TestRequests are answered automatically.
    auto_heartbeat: bool,
    /// Whether garbled input is skipped, as FIX asks of a session (the next message's gap then
    /// says what was lost), instead of being an error; counted in `garbled`.
    skip_garbled: bool,
    /// Garbled frames skipped.
    garbled: u64,
}

impl Initiator {
    /// Connects to an acceptor (no Logon yet).
    pub fn connect(addr: SocketAddr, config: InitiatorConfig) -> Result<Initiator, InitiatorError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Ok(Initiator {
            stream,
            config,
            encoder: Encoder::new("FIX.4.4"),
            decoder: Decoder::new(constants::BODY_LENGTH_MAX),
            recv: Vec::with_capacity(constants::READ_CHUNK),
            chunk: vec![0; constants::READ_CHUNK],
            seq_num_next_out: 1,
            seq_num_next_in: 1,
            gaps: 0,
            repeated: 0,
            auto_heartbeat: true,
            skip_garbled: false,
            garbled: 0,
        })
    }

    /// MsgSeqNum our next message will carry.
    pub fn seq_num_next_out(&self) -> u64 {
        self.seq_num_next_out
    }

    /// This end's address: a test that sees the same one before and after an event knows its
    /// TCP connection was never replaced.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Moves our outbound sequence number (to resume a session, or to create a gap on purpose).
    pub fn set_seq_num_next_out(&mut self, seq: u64) {
        self.seq_num_next_out = seq;
    }

    /// MsgSeqNum expected next from the acceptor.
    pub fn seq_num_next_in(&self) -> u64 {
        self.seq_num_next_in
    }

    /// Sets the inbound number we expect (to resume a session after reconnecting).
    pub fn set_seq_num_next_in(&mut self, seq: u64) {
        self.seq_num_next_in = seq;
    }

    /// Inbound gaps seen so far.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// MsgSeqNums received again without PossDupFlag so far: an error of the acceptor's, counted
    /// like a gap.
    pub fn repeated(&self) -> u64 {
        self.repeated
    }

    /// Turns automatic answers to TestRequest on or off.
    pub fn set_auto_heartbeat(&mut self, on: bool) {
        self.auto_heartbeat = on;
    }

    /// Sends a message with the standard header and the next sequence number; returns it.
    pub fn send(
        &mut self,
        msg_type: &[u8],
        body: impl FnOnce(&mut Encoder),
    ) -> Result<u64, InitiatorError> {
        let seq = self.seq_num_next_out;
        self.seq_num_next_out += 1;
        self.send_with_seq(msg_type, seq, body)?;
        Ok(seq)
    }

    /// Sends a message with an explicit sequence number (resends, deliberate errors); our own
    /// counter is left alone.
    pub fn send_with_seq(
        &mut self,
        msg_type: &[u8],
        seq: u64,
        body: impl FnOnce(&mut Encoder),
    ) -> Result<(), InitiatorError> {
        self.encoder
            .start(msg_type)
            .str(tags::SENDER_COMP_ID, &self.config.sender_comp_id)
            .str(tags::TARGET_COMP_ID, &self.config.target_comp_id)
            .uint(tags::MSG_SEQ_NUM, seq)
            .timestamp(tags::SENDING_TIME, Timestamp::now());
        body(&mut self.encoder);
        let bytes = self.encoder.finish();
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Writes raw bytes (garbled input, split frames).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), InitiatorError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Sends Logon and waits for the acceptor's Logon.
    pub fn logon(
        &mut self,
        reset_seq_num: bool,
        timeout: Duration,
    ) -> Result<Message, InitiatorError> {
        let heart_bt_int = self.config.heart_bt_int_s;
        if reset_seq_num {
            self.seq_num_next_out = 1;
            self.seq_num_next_in = 1;
        }
        self.send(msg_type::LOGON, |e| {
            e.uint(tags::ENCRYPT_METHOD, 0)
                .uint(tags::HEART_BT_INT, heart_bt_int);
            if reset_seq_num {
                e.bool(tags::RESET_SEQ_NUM_FLAG, true);
            }
        })?;
        self.recv_until(timeout, "Logon", |m| {
            m.msg_type() == msg_type::LOGON || m.msg_type() == msg_type::LOGOUT
        })
    }

    /// Skips garbled input instead of failing on it, as a FIX session must (a frame an acceptor
    /// died in the middle of writing is such input); see [`Initiator::garbled`].
    pub fn set_skip_garbled(&mut self, skip: bool) {
        self.skip_garbled = skip;
    }

    /// Garbled frames skipped so far.
    pub fn garbled(&self) -> u64 {
        self.garbled
    }

    /// Sends Logout and waits for the answer.
    pub fn logout(&mut self, timeout: Duration) -> Result<Message, InitiatorError> {
        self.send(msg_type::LOGOUT, |_| {})?;
        self.recv_until(timeout, "Logout", |m| m.msg_type() == msg_type::LOGOUT)
    }

    /// The next message from the acceptor, or `None` if nothing came within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Message>, InitiatorError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.decoder.frame(&self.recv) {
                Frame::Complete(len) => {
                    let message = match Message::parse(&self.recv[..len]) {
                        Ok(message) => message,
                        Err(_) if self.skip_garbled => {
                            self.garbled += 1;
                            self.recv.drain(..len);
                            continue;
                        }
                        Err(_) => return Err(InitiatorError::Garbled),
                    };
                    self.recv.drain(..len);
                    self.track(&message)?;
                    return Ok(Some(message));
                }
                Frame::Garbled { skip, .. } if self.skip_garbled => {
                    self.garbled += 1;
                    self.recv.drain(..skip.max(1).min(self.recv.len()));
                    continue;
                }
                Frame::Garbled { .. } => return Err(InitiatorError::Garbled),
                Frame::Incomplete => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut self.chunk) {
                Ok(0) => return Err(InitiatorError::Closed),
                Ok(n) => self.recv.extend_from_slice(&self.chunk[..n]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(InitiatorError::Closed);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Receives until a message satisfies `matches`, returning it; other messages are dropped.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut matches: impl FnMut(&Message) -> bool,
    ) -> Result<Message, InitiatorError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                Some(message) if matches(&message) => return Ok(message),
                Some(_) => {}
                None => return Err(InitiatorError::Timeout(what.to_string())),
            }
        }
    }

    /// Whether the acceptor closed the connection within `timeout` (messages before the close
    /// are read and dropped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.recv(left) {
                Ok(Some(_)) => {}
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Keeps inbound sequence numbers and answers TestRequests.
    fn track(&mut self, message: &Message) -> Result<(), InitiatorError> {
        let seq = message.uint(tags::MSG_SEQ_NUM).unwrap_or(0);
        let poss_dup = message
            .bool_opt(tags::POSS_DUP_FLAG)
            .ok()
            .flatten()
            .unwrap_or(false);
        if message.msg_type() == msg_type::SEQUENCE_RESET {
            if let Ok(new_seq) = message.uint(tags::NEW_SEQ_NO) {
                self.seq_num_next_in = self.seq_num_next_in.max(new_seq);
            }
        } else if seq == self.seq_num_next_in {
            self.seq_num_next_in += 1;
        } else if seq > self.seq_num_next_in && !poss_dup {
            self.gaps += 1;
            self.seq_num_next_in = seq + 1;
        } else if seq < self.seq_num_next_in && !poss_dup {
            self.repeated += 1;
        }
        if self.auto_heartbeat && message.msg_type() == msg_type::TEST_REQUEST {
            let id = message.get(tags::TEST_REQ_ID).unwrap_or_default().to_vec();
            self.send(msg_type::HEARTBEAT, |e| {
                e.bytes(tags::TEST_REQ_ID, &id);
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_repeated_seq_num_is_counted_unless_it_is_marked_poss_dup() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = Initiator::connect(
            listener.local_addr().unwrap(),
            InitiatorConfig::new("C", "A"),
        )
        .unwrap();
        let (mut acceptor, _) = listener.accept().unwrap();
        let mut encoder = Encoder::new("FIX.4.4");
        // 2 resent as a resend must be (PossDup), then 1 again without the flag.
        let sent = [(1, false), (2, false), (2, true), (1, false), (3, false)];
        for (seq, poss_dup) in sent {
            encoder
                .start(msg_type::HEARTBEAT)
                .str(tags::SENDER_COMP_ID, "A")
                .str(tags::TARGET_COMP_ID, "C")
                .uint(tags::MSG_SEQ_NUM, seq)
                .timestamp(tags::SENDING_TIME, Timestamp::now());
            if poss_dup {
                encoder.bool(tags::POSS_DUP_FLAG, true);
            }
            acceptor.write_all(encoder.finish()).unwrap();
        }
        for _ in sent {
            assert!(client.recv(Duration::from_secs(30)).unwrap().is_some());
        }
        assert_eq!(
            (client.repeated(), client.gaps(), client.seq_num_next_in()),
            (1, 0, 4)
        );
    }
}
