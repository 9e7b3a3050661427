//! The FIX tag=value codec: framing with limits, field indexing, and an allocation-free encoder.
//!
//! This is the only code that reads a counterparty's raw bytes, so it is written to be fuzzed
//! alone: every input gives a frame, a "need more bytes", or a garbled-frame verdict with how
//! many bytes to skip, and never a panic. A declared BodyLength over the limit is refused before
//! the body is buffered. The session layer depends only on the types here, never on a
//! third-party codec type.

use super::tags::{self, SessionRejectReason};
use super::time::Timestamp;
use crate::constants;

/// The FIX field delimiter.
pub const SOH: u8 = 0x01;

/// Bytes of the trailer `10=NNN<SOH>`.
const TRAILER_LEN: usize = 7;

/// Longest BeginString value accepted in a frame header (`FIXT.1.1` is 8); longer means the
/// bytes are not a FIX frame.
const BEGIN_STRING_LEN_MAX: usize = 16;

/// Longest BodyLength value in digits; more cannot be a valid length under any sane limit.
const BODY_LENGTH_DIGITS_MAX: usize = 9;

/// Why a run of bytes is not a well-formed frame. Garbled frames are ignored without consuming
/// a sequence number, as the FIX session specification requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbled {
    /// The bytes do not start with `8=`: noise before a frame, skipped up to the next `8=FIX`.
    NoBeginString,
    /// `9=` does not follow BeginString, or its value is not a number.
    BadBodyLength,
    /// The declared BodyLength is larger than the configured limit.
    BodyTooLong,
    /// `10=NNN<SOH>` is not where BodyLength says it should be.
    BadTrailer,
    /// The CheckSum does not match the bytes.
    BadCheckSum,
    /// MsgType is not the third field, or a header field is malformed.
    BadHeader,
    /// A field has no `=`: the bytes cannot be split into fields at all, unlike a field whose
    /// tag or value is wrong (those are noted as a [`FieldProblem`] and answered with a Reject).
    FieldWithoutEquals,
}

/// What the decoder found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole, checksummed frame of this many bytes is at the start of the buffer.
    Complete(usize),
    /// More bytes are needed; nothing is consumed. The normal, cheap case.
    Incomplete,
    /// The first `skip` bytes (always at least 1) are not a frame and must be dropped.
    Garbled {
        /// Bytes to drop from the start of the buffer.
        skip: usize,
        /// What was wrong.
        reason: Garbled,
    },
}

/// Splits a byte stream into FIX frames, enforcing the message size limit.
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    /// Largest BodyLength accepted now; a larger declared length is refused before buffering
    /// it. The session lowers it before Logon and raises it once the counterparty is known.
    body_length_max: usize,
}

impl Decoder {
    /// A decoder that refuses bodies longer than `body_length_max` bytes.
    pub fn new(body_length_max: usize) -> Decoder {
        Decoder { body_length_max }
    }

    /// Changes the largest BodyLength accepted from the next frame on: an unauthenticated
    /// connection may only send a Logon-sized message
    /// ([`constants::LOGON_BODY_LENGTH_MAX`]), a logged-on one up to
    /// [`constants::BODY_LENGTH_MAX`].
    pub fn set_body_length_max(&mut self, body_length_max: usize) {
        self.body_length_max = body_length_max;
    }

    /// The largest BodyLength accepted now.
    pub fn body_length_max(&self) -> usize {
        self.body_length_max
    }

    /// The most bytes one frame can occupy, so a connection's receive buffer can be bounded.
    pub fn frame_len_max(&self) -> usize {
        // 8=<begin>|9=<digits>|<body>10=NNN|
        2 + BEGIN_STRING_LEN_MAX
            + 1
            + 2
            + BODY_LENGTH_DIGITS_MAX
            + 1
            + self.body_length_max
            + TRAILER_LEN
    }

    /// Looks at the start of `buf` and says whether a frame is there.
    pub fn frame(&self, buf: &[u8]) -> Frame {
        if buf.is_empty() {
            return Frame::Incomplete;
        }
        if !buf.starts_with(b"8=") {
            if buf.len() == 1 && buf[0] == b'8' {
                return Frame::Incomplete;
            }
            return garbled_until_next_frame(buf, Garbled::NoBeginString);
        }
        // BeginString value up to the first SOH.
        let begin_end = match buf[2..]
            .iter()
            .take(BEGIN_STRING_LEN_MAX + 1)
            .position(|&b| b == SOH)
        {
            Some(pos) => 2 + pos,
            None if buf.len() < 2 + BEGIN_STRING_LEN_MAX + 1 => return Frame::Incomplete,
            None => return garbled_until_next_frame(buf, Garbled::NoBeginString),
        };
        let rest = &buf[begin_end + 1..];
        if rest.len() < 2 {
            return if b"9=".starts_with(rest) {
                Frame::Incomplete
            } else {
                garbled_until_next_frame(buf, Garbled::BadBodyLength)
            };
        }
        if &rest[..2] != b"9=" {
            return garbled_until_next_frame(buf, Garbled::BadBodyLength);
        }
        let digits = &rest[2..];
        let mut body_length: usize = 0;
        let mut digit_count = 0;
        loop {
            match digits.get(digit_count) {
                None => {
                    return if digit_count > BODY_LENGTH_DIGITS_MAX {
                        garbled_until_next_frame(buf, Garbled::BadBodyLength)
                    } else {
                        Frame::Incomplete
                    };
                }
                Some(&SOH) if digit_count > 0 => break,
                Some(&b) if b.is_ascii_digit() && digit_count < BODY_LENGTH_DIGITS_MAX => {
                    body_length = body_length * 10 + usize::from(b - b'0');
                    digit_count += 1;
                }
                Some(_) => return garbled_until_next_frame(buf, Garbled::BadBodyLength),
            }
        }
        if body_length > self.body_length_max {
            return garbled_until_next_frame(buf, Garbled::BodyTooLong);
        }
        let body_start = begin_end + 1 + 2 + digit_count + 1;
        let total = body_start + body_length + TRAILER_LEN;
        if buf.len() < total {
            return Frame::Incomplete;
        }
        let trailer = &buf[total - TRAILER_LEN..total];
        if &trailer[..3] != b"10="
            || trailer[6] != SOH
            || !trailer[3..6].iter().all(u8::is_ascii_digit)
        {
            return garbled_until_next_frame(buf, Garbled::BadTrailer);
        }
        let declared = u32::from(trailer[3] - b'0') * 100
            + u32::from(trailer[4] - b'0') * 10
            + u32::from(trailer[5] - b'0');
        if declared != checksum(&buf[..total - TRAILER_LEN]) {
            return Frame::Garbled {
                skip: total,
                reason: Garbled::BadCheckSum,
            };
        }
        Frame::Complete(total)
    }
}

/// FIX CheckSum: the sum of the bytes modulo 256.
pub fn checksum(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)))
        % 256
}

/// Skips to the next plausible frame start after position 0: `8=FIX` not preceded by a digit
/// (so the `58=FIX...` of a Text value is not mistaken for one), keeping a tail that could be
/// the beginning of one.
fn garbled_until_next_frame(buf: &[u8], reason: Garbled) -> Frame {
    const MARK: &[u8] = b"8=FIX";
    let skip = buf
        .windows(MARK.len())
        .enumerate()
        .skip(1)
        .find(|(i, w)| *w == MARK && !buf[i - 1].is_ascii_digit())
        .map(|(i, _)| i)
        .unwrap_or_else(|| {
            // Keep a possible partial mark at the end so it can complete with the next read.
            let keep = (1..MARK.len())
                .rev()
                .find(|&k| {
                    buf.len() > k
                        && buf.ends_with(&MARK[..k])
                        && !buf[buf.len() - k - 1].is_ascii_digit()
                })
                .unwrap_or(0);
            buf.len() - keep
        });
    Frame::Garbled {
        skip: skip.max(1),
        reason,
    }
}

/// A field-level defect found while indexing a well-framed message: the message keeps its
/// sequence number, and the session answers with a Reject carrying this reason and tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// SessionRejectReason to send.
    pub reason: SessionRejectReason,
    /// RefTagID to send; 0 when the tag itself could not be read.
    pub tag: u32,
}

/// Where one field's value sits in the message bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FieldSpan {
    /// The tag number.
    tag: u32,
    /// Offset of the first value byte.
    start: u32,
    /// Offset one past the last value byte.
    end: u32,
}

/// Why a field could not be read as the type the caller asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The field is absent.
    #[error("required tag {0} missing")]
    Missing(u32),
    /// The field is present but its value does not parse.
    #[error("incorrect data format for value of tag {0}")]
    Format(u32),
}

impl FieldError {
    /// The Reject that answers this error: reason and RefTagID.
    pub fn reject(self) -> FieldProblem {
        match self {
            FieldError::Missing(tag) => FieldProblem {
                reason: SessionRejectReason::RequiredTagMissing,
                tag,
            },
            FieldError::Format(tag) => FieldProblem {
                reason: SessionRejectReason::IncorrectDataFormat,
                tag,
            },
        }
    }
}

/// One decoded FIX message: its wire bytes and an index of its fields, in wire order.
///
/// Owning the bytes is what lets the session store the exact bytes it sent and lets a test
/// compare messages byte for byte. A `Message` can be reused with [`Message::parse_into`] so the
/// steady state does not allocate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The whole frame, `8=` through the CheckSum's SOH.
    bytes: Vec<u8>,
    /// Every readable field with a value, in wire order, repeats included; at most
    /// [`constants::FIELDS_PER_MESSAGE_MAX`], so a message's index never outgrows that bound.
    fields: Vec<FieldSpan>,
    /// The first field-level defect, if any.
    problem: Option<FieldProblem>,
    /// Whether fields beyond [`constants::FIELDS_PER_MESSAGE_MAX`] were left out of the index.
    too_many_fields: bool,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let printable: String = self
            .bytes
            .iter()
            .map(|&b| if b == SOH { '|' } else { char::from(b) })
            .collect();
        f.write_str(&printable)
    }
}

impl Message {
    /// Makes this message a copy of `other` in the buffers it already has: unlike `clone`, it
    /// allocates nothing once they are as large as the messages copied into them, which is how
    /// a session hands out a business message per order without a heap allocation.
    pub fn copy_from(&mut self, other: &Message) {
        self.bytes.clear();
        self.bytes.extend_from_slice(&other.bytes);
        self.fields.clear();
        self.fields.extend_from_slice(&other.fields);
        self.problem = other.problem;
        self.too_many_fields = other.too_many_fields;
    }

    /// Heap bytes this message holds (its buffers' capacity), so whoever keeps messages for
    /// reuse can refuse to keep a large one.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.fields.capacity() * std::mem::size_of::<FieldSpan>()
    }

    /// Indexes a complete frame (as returned by [`Decoder::frame`]). Fails only if the header is
    /// not `8`, `9`, `35` in that order or the trailer is not last: such bytes are garbled.
    pub fn parse(frame: &[u8]) -> Result<Message, Garbled> {
        let mut message = Message::default();
        message.parse_into(frame)?;
        Ok(message)
    }

    /// [`Message::parse`] into an existing message, reusing its buffers.
    pub fn parse_into(&mut self, frame: &[u8]) -> Result<(), Garbled> {
        self.bytes.clear();
        self.bytes.extend_from_slice(frame);
        self.fields.clear();
        self.problem = None;
        self.too_many_fields = false;
        if !self.bytes.ends_with(&[SOH]) || u32::try_from(self.bytes.len()).is_err() {
            return Err(Garbled::BadTrailer);
        }
        let mut position = 0usize;
        let mut index = 0usize;
        let len = self.bytes.len();
        while position < len {
            let field_end = position
                + self.bytes[position..]
                    .iter()
                    .position(|&b| b == SOH)
                    .unwrap_or(len - position);
            let field = &self.bytes[position..field_end];
            let parsed = field
                .iter()
                .position(|&b| b == b'=')
                .map(|eq| (parse_tag(&field[..eq]), position + eq + 1));
            // The header must be 8, 9, 35 and the trailer 10, last.
            let expected_header = match index {
                0 => Some(tags::BEGIN_STRING),
                1 => Some(tags::BODY_LENGTH),
                2 => Some(tags::MSG_TYPE),
                _ => None,
            };
            let is_last = field_end + 1 >= len;
            match parsed {
                Some((Some(tag), value_start)) => {
                    if let Some(expected) = expected_header
                        && (tag != expected || value_start == field_end)
                    {
                        return Err(Garbled::BadHeader);
                    }
                    if (tag == tags::CHECK_SUM) != is_last {
                        return Err(if is_last {
                            Garbled::BadTrailer
                        } else {
                            Garbled::BadHeader
                        });
                    }
                    if value_start == field_end {
                        self.note(SessionRejectReason::TagSpecifiedWithoutValue, tag);
                    } else if self.fields.len() >= constants::FIELDS_PER_MESSAGE_MAX {
                        // Framing is still checked to the end (linear in the bytes), but the
                        // index, and so all later work on the message, stays bounded.
                        self.note(SessionRejectReason::Other, 0);
                        self.too_many_fields = true;
                    } else {
                        // Repeats are indexed too: whether a repeat is legal depends on the
                        // repeating groups of the message type, which only the dictionary knows.
                        self.fields.push(FieldSpan {
                            tag,
                            start: value_start as u32,
                            end: field_end as u32,
                        });
                    }
                }
                None if expected_header.is_none() && !is_last => {
                    return Err(Garbled::FieldWithoutEquals);
                }
                _ => {
                    if expected_header.is_some() || is_last {
                        return Err(Garbled::BadHeader);
                    }
                    self.note(SessionRejectReason::InvalidTagNumber, 0);
                }
            }
            position = field_end + 1;
            index += 1;
        }
        Ok(())
    }

    fn note(&mut self, reason: SessionRejectReason, tag: u32) {
        if self.problem.is_none() {
            self.problem = Some(FieldProblem { reason, tag });
        }
    }

    /// The whole frame as sent on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The first field-level defect the codec alone can see (empty value, unreadable tag, more
    /// fields than [`constants::FIELDS_PER_MESSAGE_MAX`]), if any. Repeated tags are the
    /// dictionary's to judge, since a repeating group repeats its members legitimately.
    pub fn problem(&self) -> Option<FieldProblem> {
        self.problem
    }

    /// Whether the message had more fields than [`constants::FIELDS_PER_MESSAGE_MAX`]; the
    /// fields beyond it are not indexed, and the message is rejected (373=99).
    pub fn has_too_many_fields(&self) -> bool {
        self.too_many_fields
    }

    /// MsgType (35); always present in a parsed message.
    pub fn msg_type(&self) -> &[u8] {
        self.get(tags::MSG_TYPE).unwrap_or_default()
    }

    /// The value of `tag`'s first occurrence, if present.
    pub fn get(&self, tag: u32) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.tag == tag)
            .map(|f| &self.bytes[f.start as usize..f.end as usize])
    }

    /// Every indexed field as (tag, value), in wire order, header, trailer and repeated group
    /// members included.
    pub fn fields(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (f.tag, &self.bytes[f.start as usize..f.end as usize]))
    }

    /// A required non-negative integer field.
    pub fn uint(&self, tag: u32) -> Result<u64, FieldError> {
        self.uint_opt(tag)?.ok_or(FieldError::Missing(tag))
    }

    /// An optional non-negative integer field; present but malformed is an error.
    pub fn uint_opt(&self, tag: u32) -> Result<Option<u64>, FieldError> {
        match self.get(tag) {
            None => Ok(None),
            Some(value) => parse_uint(value).map(Some).ok_or(FieldError::Format(tag)),
        }
    }

    /// An optional Boolean field (`Y`/`N`).
    pub fn bool_opt(&self, tag: u32) -> Result<Option<bool>, FieldError> {
        match self.get(tag) {
            None => Ok(None),
            Some(b"Y") => Ok(Some(true)),
            Some(b"N") => Ok(Some(false)),
            Some(_) => Err(FieldError::Format(tag)),
        }
    }

    /// An optional UTCTimestamp field.
    pub fn timestamp_opt(&self, tag: u32) -> Result<Option<Timestamp>, FieldError> {
        match self.get(tag) {
            None => Ok(None),
            Some(value) => Timestamp::parse_fix(value)
                .map(Some)
                .ok_or(FieldError::Format(tag)),
        }
    }
}

/// A tag number: digits only, no sign, no leading zero, not 0.
fn parse_tag(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 || bytes[0] == b'0' {
        return None;
    }
    let mut tag: u32 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        tag = tag * 10 + u32::from(b - b'0');
    }
    Some(tag)
}

/// A FIX non-negative int (SeqNum, Length, NumInGroup...): digits only, no overflow.
pub fn parse_uint(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// Builds FIX messages into reused buffers: BodyLength and CheckSum are computed at the end,
/// so callers write fields in order and never count bytes.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// BeginString written first in every message.
    begin_string: Vec<u8>,
    /// Fields from MsgType on, as they are added.
    body: Vec<u8>,
    /// The finished frame.
    out: Vec<u8>,
}

impl Encoder {
    /// An encoder for messages with this BeginString (e.g. `FIX.4.4`).
    pub fn new(begin_string: &str) -> Encoder {
        Encoder {
            begin_string: begin_string.as_bytes().to_vec(),
            body: Vec::with_capacity(256),
            out: Vec::with_capacity(320),
        }
    }

    /// Starts a new message of this MsgType, discarding any unfinished one.
    pub fn start(&mut self, msg_type: &[u8]) -> &mut Encoder {
        self.body.clear();
        self.bytes(tags::MSG_TYPE, msg_type)
    }

    /// A field with a raw value. The value must not contain SOH (checked in debug builds; the
    /// venue dictionary has no data fields).
    pub fn bytes(&mut self, tag: u32, value: &[u8]) -> &mut Encoder {
        debug_assert!(!value.contains(&SOH), "SOH inside the value of tag {tag}");
        self.tag(tag);
        self.body.extend_from_slice(value);
        self.body.push(SOH);
        self
    }

    /// A string field.
    pub fn str(&mut self, tag: u32, value: &str) -> &mut Encoder {
        self.bytes(tag, value.as_bytes())
    }

    /// A non-negative integer field.
    pub fn uint(&mut self, tag: u32, value: u64) -> &mut Encoder {
        self.tag(tag);
        push_uint(&mut self.body, value);
        self.body.push(SOH);
        self
    }

    /// A single-character field.
    pub fn char(&mut self, tag: u32, value: u8) -> &mut Encoder {
        self.bytes(tag, &[value])
    }

    /// A Boolean field (`Y`/`N`).
    pub fn bool(&mut self, tag: u32, value: bool) -> &mut Encoder {
        self.char(tag, if value { b'Y' } else { b'N' })
    }

    /// A UTCTimestamp field with millisecond precision.
    pub fn timestamp(&mut self, tag: u32, value: Timestamp) -> &mut Encoder {
        self.tag(tag);
        value.write_fix(&mut self.body);
        self.body.push(SOH);
        self
    }

    /// A field whose value is written by `write` straight into the message (decimals, ids made
    /// of parts), so callers need no temporary string.
    pub fn with(&mut self, tag: u32, write: impl FnOnce(&mut Vec<u8>)) -> &mut Encoder {
        self.tag(tag);
        write(&mut self.body);
        self.body.push(SOH);
        self
    }

    fn tag(&mut self, tag: u32) {
        push_uint(&mut self.body, u64::from(tag));
        self.body.push(b'=');
    }

    /// Completes the message with BeginString, BodyLength and CheckSum, and returns its bytes.
    pub fn finish(&mut self) -> &[u8] {
        self.out.clear();
        self.out.extend_from_slice(b"8=");
        self.out.extend_from_slice(&self.begin_string);
        self.out.extend_from_slice(b"\x019=");
        push_uint(&mut self.out, self.body.len() as u64);
        self.out.push(SOH);
        self.out.extend_from_slice(&self.body);
        let sum = checksum(&self.out);
        self.out.extend_from_slice(b"10=");
        self.out.push(b'0' + (sum / 100) as u8);
        self.out.push(b'0' + (sum / 10 % 10) as u8);
        self.out.push(b'0' + (sum % 10) as u8);
        self.out.push(SOH);
        &self.out
    }
}

/// Decimal digits of `value`, without allocating.
pub fn push_uint(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut n = value;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(s: &str) -> Vec<u8> {
        s.replace('|', "\x01").into_bytes()
    }

    fn logon() -> Vec<u8> {
        let mut encoder = Encoder::new("FIX.4.4");
        encoder
            .start(b"A")
            .str(49, "CLIENT")
            .str(56, "BATON")
            .uint(34, 1)
            .timestamp(52, Timestamp::from_secs(1_795_437_296))
            .uint(98, 0)
            .uint(108, 30);
        encoder.finish().to_vec()
    }

    #[test]
    fn encoder_computes_body_length_and_checksum() {
        let bytes = logon();
        let expected_body = "35=A|49=CLIENT|56=BATON|34=1|52=20261123-12:34:56.000|98=0|108=30|";
        let head = format!("8=FIX.4.4|9={}|{}", expected_body.len(), expected_body);
        let sum = checksum(&wire(&head));
        assert_eq!(bytes, wire(&format!("{head}10={sum:03}|")));
        assert_eq!(
            Decoder::new(4096).frame(&bytes),
            Frame::Complete(bytes.len())
        );
        let message = Message::parse(&bytes).unwrap();
        assert_eq!(message.msg_type(), b"A");
        assert_eq!(message.uint(108), Ok(30));
        assert_eq!(message.problem(), None);
    }

    /// A gateway that takes a connection back from the socket holder starts reading wherever
    /// the dead process stopped: possibly inside a frame. Whatever tail of a frame comes first,
    /// it is garbled and skipped, and the next whole frame is found intact.
    #[test]
    fn a_stream_that_starts_inside_a_frame_resumes_at_the_next_frame() {
        let bytes = logon();
        let decoder = Decoder::new(4096);
        for start in 1..bytes.len() {
            let mut stream = bytes[start..].to_vec();
            stream.extend_from_slice(&bytes);
            let mut at = 0;
            let mut skipped = 0;
            let found = loop {
                match decoder.frame(&stream[at..]) {
                    Frame::Complete(len) => break Some(len),
                    Frame::Garbled { skip, .. } => {
                        at += skip;
                        skipped += skip;
                    }
                    Frame::Incomplete => break None,
                }
            };
            assert_eq!(found, Some(bytes.len()), "started at {start}");
            assert_eq!(skipped, bytes.len() - start, "started at {start}");
        }
    }

    #[test]
    fn partial_frames_are_incomplete_at_every_split() {
        let bytes = logon();
        let decoder = Decoder::new(4096);
        for cut in 0..bytes.len() {
            assert_eq!(
                decoder.frame(&bytes[..cut]),
                Frame::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bad_checksum_consumes_exactly_the_frame() {
        let mut bytes = logon();
        let len = bytes.len();
        bytes[len - 2] = if bytes[len - 2] == b'9' { b'0' } else { b'9' };
        bytes.extend_from_slice(&logon());
        assert_eq!(
            Decoder::new(4096).frame(&bytes),
            Frame::Garbled {
                skip: len,
                reason: Garbled::BadCheckSum
            }
        );
    }

    #[test]
    fn oversized_body_length_is_refused_before_buffering() {
        let decoder = Decoder::new(100);
        assert_eq!(
            decoder.frame(&wire("8=FIX.4.4|9=101|")),
            Frame::Garbled {
                skip: 16,
                reason: Garbled::BodyTooLong
            }
        );
    }

    #[test]
    fn noise_before_a_frame_is_skipped_up_to_it() {
        let mut bytes = wire("garbage|");
        let noise = bytes.len();
        bytes.extend_from_slice(&logon());
        assert_eq!(
            Decoder::new(4096).frame(&bytes),
            Frame::Garbled {
                skip: noise,
                reason: Garbled::NoBeginString
            }
        );
        assert_eq!(
            Decoder::new(4096).frame(&bytes[noise..]),
            Frame::Complete(bytes.len() - noise)
        );
    }

    #[test]
    fn wrong_body_length_is_garbled() {
        let mut bytes = logon();
        // Claim one byte more than there is: the trailer is no longer where it should be.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let len_start = text.find("\x019=").unwrap() + 3;
        let len_end = len_start + text[len_start..].find('\x01').unwrap();
        let declared: usize = text[len_start..len_end].parse().unwrap();
        bytes.splice(len_start..len_end, (declared - 1).to_string().into_bytes());
        assert!(matches!(
            Decoder::new(4096).frame(&bytes),
            Frame::Garbled {
                reason: Garbled::BadTrailer,
                ..
            }
        ));
    }

    #[test]
    fn field_defects_are_noted_not_fatal() {
        let msg = Message::parse(&wire("8=FIX.4.4|9=5|35=D|58=|49=X|49=Y|10=000|")).unwrap();
        assert_eq!(
            msg.problem(),
            Some(FieldProblem {
                reason: SessionRejectReason::TagSpecifiedWithoutValue,
                tag: 58
            })
        );
        // A repeat is indexed, not judged: only the dictionary knows the repeating groups.
        let msg = Message::parse(&wire("8=FIX.4.4|9=5|35=D|49=X|49=Y|10=000|")).unwrap();
        assert_eq!(msg.problem(), None);
        assert_eq!(msg.get(49), Some(&b"X"[..]));
        assert_eq!(msg.fields().filter(|&(tag, _)| tag == 49).count(), 2);
        let msg = Message::parse(&wire("8=FIX.4.4|9=5|35=D|x9=1|10=000|")).unwrap();
        assert_eq!(
            msg.problem().map(|p| p.reason),
            Some(SessionRejectReason::InvalidTagNumber)
        );
        let msg = Message::parse(&wire("8=FIX.4.4|9=5|35=D|34=zz|10=000|")).unwrap();
        assert_eq!(msg.uint(34), Err(FieldError::Format(34)));
    }

    #[test]
    fn fields_beyond_the_cap_are_not_indexed_and_reported() {
        let extra = 10;
        let mut body = String::from("35=D|");
        for tag in 0..constants::FIELDS_PER_MESSAGE_MAX + extra {
            body.push_str(&format!("{}=1|", 5000 + tag));
        }
        let msg = Message::parse(&wire(&format!("8=FIX.4.4|9=5|{body}10=000|"))).unwrap();
        assert_eq!(
            msg.problem(),
            Some(FieldProblem {
                reason: SessionRejectReason::Other,
                tag: 0
            })
        );
        assert!(msg.has_too_many_fields());
        assert_eq!(msg.fields().count(), constants::FIELDS_PER_MESSAGE_MAX);
        // Exactly at the cap (8, 9, 35 and 10 count too) is fine.
        let mut body = String::from("35=D|");
        for tag in 0..constants::FIELDS_PER_MESSAGE_MAX - 4 {
            body.push_str(&format!("{}=1|", 5000 + tag));
        }
        let msg = Message::parse(&wire(&format!("8=FIX.4.4|9=5|{body}10=000|"))).unwrap();
        assert_eq!(msg.problem(), None);
        assert!(!msg.has_too_many_fields());
    }

    #[test]
    fn the_body_limit_can_be_changed_between_frames() {
        let bytes = logon();
        let mut decoder = Decoder::new(constants::LOGON_BODY_LENGTH_MAX);
        assert_eq!(decoder.frame(&bytes), Frame::Complete(bytes.len()));
        let header = wire("8=FIX.4.4|9=5000|35=A|");
        assert!(matches!(
            decoder.frame(&header),
            Frame::Garbled {
                reason: Garbled::BodyTooLong,
                ..
            }
        ));
        decoder.set_body_length_max(constants::BODY_LENGTH_MAX);
        assert_eq!(decoder.frame(&header), Frame::Incomplete);
    }

    #[test]
    fn header_out_of_order_is_garbled() {
        assert_eq!(
            Message::parse(&wire("8=FIX.4.4|9=5|49=X|35=D|10=000|")),
            Err(Garbled::BadHeader)
        );
        assert_eq!(
            Message::parse(&wire("8=FIX.4.4|9=5|35=D|10=000|49=X|")),
            Err(Garbled::BadHeader)
        );
    }
}
