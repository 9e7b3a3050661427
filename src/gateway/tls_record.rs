//! The TLS record layer that continues a connection after a planned gateway upgrade.
//!
//! rustls's connection state cannot move between processes, and this host has no kernel TLS to
//! hand the keys to. So at a planned upgrade the running gateway asks rustls for the connection's
//! traffic keys and record sequence numbers (`dangerous_extract_secrets`), carries them to its
//! successor with the socket (over the holder's Unix socket only: see [`TlsCarry`]), and the
//! successor protects the application data itself, with this record layer. After the handshake a
//! FIX connection only ever carries application data, so the layer is small:
//!
//! - TLS 1.3 (RFC 8446 §5): records of outer type application_data, nonce = iv XOR sequence
//!   number, additional data = the record header, inner content type after the plaintext and
//!   zero padding (tolerated on input, never written).
//! - TLS 1.2 AEAD (RFC 5246 §6.2.3.3, RFC 5288 for AES-GCM, RFC 7905 for ChaCha20-Poly1305):
//!   additional data = sequence number, type, version and plaintext length; AES-GCM records carry
//!   an explicit 8-byte nonce after a 4-byte salt from the key block (written as rustls does:
//!   the key block's nonce XOR the sequence number), ChaCha20-Poly1305 uses iv XOR sequence.
//! - AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 through ring, the provider rustls uses here:
//!   every suite the gateway's rustls configuration can negotiate.
//! - A close_notify from the peer is end of stream; ours is sent when the gateway closes.
//! - Anything else the peer may send after a handshake is refused, with an alert, and ends the
//!   connection: a TLS 1.2 renegotiation, any TLS 1.3 handshake message, a record that does not
//!   decrypt or is too long. A TLS 1.3 KeyUpdate ends it too, but cleanly (close_notify): the
//!   layer holds the traffic keys, not the traffic secrets a new generation is derived from
//!   (rustls extracts only keys), so the counterparty reconnects and recovers by FIX resend.
//!   A key that reaches its AES-GCM record limit ([`constants::TLS_AES_GCM_RECORDS_MAX`]) ends
//!   the connection cleanly for the same reason.
//!
//! The layer is sans-IO: [`RecordLayer::open`] decrypts one record in place in the caller's
//! buffer, [`RecordLayer::seal`] appends one to the caller's. It never allocates, so the
//! continued connection's steady path allocates no more than the plain one.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::constants;

/// TLS content types (RFC 8446 §5.1).
const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;

/// The TLS 1.3 KeyUpdate handshake message type (RFC 8446 §4.6.3).
const HANDSHAKE_KEY_UPDATE: u8 = 24;

/// Alert descriptions (RFC 8446 §6).
const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
const ALERT_BAD_RECORD_MAC: u8 = 20;
const ALERT_RECORD_OVERFLOW: u8 = 22;
const ALERT_DECODE_ERROR: u8 = 50;
const ALERT_USER_CANCELED: u8 = 90;

/// Alert levels (RFC 5246 §7.2; TLS 1.3 keeps the byte).
const ALERT_LEVEL_WARNING: u8 = 1;
const ALERT_LEVEL_FATAL: u8 = 2;

/// The AEAD tag of every suite here.
const TAG_LEN: usize = 16;

/// TLS 1.2 AES-GCM's explicit nonce, sent before each record's ciphertext (RFC 5288 §3).
const GCM_EXPLICIT_NONCE_LEN: usize = 8;

/// The record version every TLS 1.2 and 1.3 record carries on the wire.
const LEGACY_VERSION: [u8; 2] = [3, 3];

/// Which TLS version the connection negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TlsProtocol {
    /// TLS 1.2 with an AEAD suite.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The AEAD the connection's suite protects records with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TlsSuite {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    Chacha20Poly1305,
}

impl TlsSuite {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            TlsSuite::Aes128Gcm => &aead::AES_128_GCM,
            TlsSuite::Aes256Gcm => &aead::AES_256_GCM,
            TlsSuite::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    /// Records one key may protect before the connection is closed (see the module docs).
    fn records_max(self) -> u64 {
        match self {
            TlsSuite::Aes128Gcm | TlsSuite::Aes256Gcm => constants::TLS_AES_GCM_RECORDS_MAX,
            // Sequence numbers must not wrap (RFC 8446 §5.3).
            TlsSuite::Chacha20Poly1305 => u64::MAX,
        }
    }
}

/// One direction's keys and next record sequence number, as carried.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectionCarry {
    /// The AEAD key, in hex (the hand-over message is JSON).
    pub key_hex: String,
    /// The 12-byte iv (TLS 1.2 AES-GCM: the 4-byte salt, then the key block's explicit nonce).
    pub iv_hex: String,
    /// The sequence number of the next record in this direction.
    pub seq: u64,
}

impl Drop for DirectionCarry {
    fn drop(&mut self) {
        self.key_hex.zeroize();
        self.iv_hex.zeroize();
    }
}

/// What a TLS connection needs to go on in another process: its version and suite, each
/// direction's keys and sequence number, and what was received but not yet read.
///
/// It holds the connection's traffic keys: it travels only over the socket holder's Unix socket,
/// its `Debug` shows no key, and its key strings are wiped when they are dropped.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsCarry {
    /// [`constants::TLS_CARRY_VERSION`] of the process that wrote it.
    pub version: u32,
    /// TLS 1.2 or 1.3.
    pub protocol: TlsProtocol,
    /// The AEAD.
    pub suite: TlsSuite,
    /// Counterparty → gateway.
    pub rx: DirectionCarry,
    /// Gateway → counterparty.
    pub tx: DirectionCarry,
    /// Bytes received that are not a whole record yet (a record cut by the hand-over), in hex:
    /// the successor decrypts them with the rest of the record from the socket.
    pub ciphertext_hex: String,
    /// Bytes decrypted but not yet read by the session, in hex; handed to it first.
    pub plaintext_hex: String,
}

impl std::fmt::Debug for TlsCarry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCarry")
            .field("version", &self.version)
            .field("protocol", &self.protocol)
            .field("suite", &self.suite)
            .field("rx_seq", &self.rx.seq)
            .field("tx_seq", &self.tx.seq)
            .field("ciphertext_bytes", &(self.ciphertext_hex.len() / 2))
            .field("plaintext_bytes", &(self.plaintext_hex.len() / 2))
            .finish_non_exhaustive()
    }
}

impl TlsCarry {
    /// The carry of a connection rustls ran, from what `dangerous_extract_secrets` gave and what
    /// was received but not yet decrypted (`ciphertext`) or not yet read (`plaintext`).
    pub fn from_rustls(
        protocol: rustls::ProtocolVersion,
        secrets: rustls::ExtractedSecrets,
        ciphertext: &[u8],
        plaintext: &[u8],
    ) -> Result<TlsCarry, RecordError> {
        let protocol = match protocol {
            rustls::ProtocolVersion::TLSv1_3 => TlsProtocol::Tls13,
            rustls::ProtocolVersion::TLSv1_2 => TlsProtocol::Tls12,
            other => return Err(RecordError::Unsupported(format!("{other:?}"))),
        };
        let (rx_suite, rx) = direction_from_rustls(secrets.rx)?;
        let (tx_suite, tx) = direction_from_rustls(secrets.tx)?;
        if rx_suite != tx_suite {
            return Err(RecordError::Unsupported(
                "different suites per direction".into(),
            ));
        }
        Ok(TlsCarry {
            version: constants::TLS_CARRY_VERSION,
            protocol,
            suite: rx_suite,
            rx,
            tx,
            ciphertext_hex: hex(ciphertext),
            plaintext_hex: hex(plaintext),
        })
    }

    /// The bytes received but not yet a whole record.
    pub fn ciphertext(&self) -> Option<Vec<u8>> {
        unhex(&self.ciphertext_hex)
    }

    /// The bytes decrypted but not yet read.
    pub fn plaintext(&self) -> Option<Vec<u8>> {
        unhex(&self.plaintext_hex)
    }
}

fn direction_from_rustls(
    (seq, secrets): (u64, rustls::ConnectionTrafficSecrets),
) -> Result<(TlsSuite, DirectionCarry), RecordError> {
    let (suite, key, iv) = match &secrets {
        rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (TlsSuite::Aes128Gcm, key, iv),
        rustls::ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (TlsSuite::Aes256Gcm, key, iv),
        rustls::ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (TlsSuite::Chacha20Poly1305, key, iv)
        }
        _ => return Err(RecordError::Unsupported("cipher suite".into())),
    };
    Ok((
        suite,
        DirectionCarry {
            key_hex: hex(key.as_ref()),
            iv_hex: hex(iv.as_ref()),
            seq,
        },
    ))
}

/// Why a record could not be read or written, or a carry not used. Peer input that is wrong is
/// one of these, never a panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// A record header that is not TLS.
    #[error("malformed TLS record")]
    Malformed,
    /// A record longer than the protocol allows.
    #[error("TLS record too long")]
    RecordOverflow,
    /// A record that does not decrypt with the connection's key: corrupted, forged or cut.
    #[error("TLS record does not decrypt")]
    BadRecordMac,
    /// A record that is not application data, a closure alert or something handled.
    #[error("unexpected TLS message (content type {0})")]
    UnexpectedMessage(u8),
    /// The peer asked for new TLS 1.3 keys, which this layer cannot derive.
    #[error("TLS 1.3 KeyUpdate from the peer: the continued connection cannot rekey")]
    KeyUpdate,
    /// The peer sent a fatal alert.
    #[error("TLS alert {0} from the peer")]
    PeerAlert(u8),
    /// A key protected as many records as it may.
    #[error("TLS record limit of the key reached")]
    KeysExhausted,
    /// A carried connection this build cannot continue.
    #[error("TLS state cannot be continued: {0}")]
    Unsupported(String),
}

impl RecordError {
    /// The alert to send before closing (level, description); `None` when the peer ended it.
    pub fn alert(&self) -> Option<(u8, u8)> {
        match self {
            RecordError::Malformed => Some((ALERT_LEVEL_FATAL, ALERT_DECODE_ERROR)),
            RecordError::RecordOverflow => Some((ALERT_LEVEL_FATAL, ALERT_RECORD_OVERFLOW)),
            RecordError::BadRecordMac => Some((ALERT_LEVEL_FATAL, ALERT_BAD_RECORD_MAC)),
            RecordError::UnexpectedMessage(_) => {
                Some((ALERT_LEVEL_FATAL, ALERT_UNEXPECTED_MESSAGE))
            }
            // Not the peer's fault: a clean close, and it reconnects.
            RecordError::KeyUpdate | RecordError::KeysExhausted | RecordError::Unsupported(_) => {
                Some((ALERT_LEVEL_WARNING, ALERT_CLOSE_NOTIFY))
            }
            RecordError::PeerAlert(_) => None,
        }
    }
}

/// What [`RecordLayer::open`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Not a whole record yet: read more after the bytes already there.
    Incomplete,
    /// Application data (possibly empty) at `plaintext` in the buffer; the record took the
    /// first `consumed` bytes.
    Data {
        /// Bytes of the buffer the record took.
        consumed: usize,
        /// Where its plaintext now is in the buffer (within the first `consumed` bytes).
        plaintext: Range<usize>,
    },
    /// The peer's close_notify: end of stream.
    CloseNotify,
}

/// One direction's AEAD state.
struct Direction {
    /// The key as ring uses it.
    key: LessSafeKey,
    /// The key bytes, kept to carry the connection on at a second upgrade; wiped on drop.
    raw_key: [u8; 32],
    /// How many of `raw_key` are the key.
    raw_key_len: usize,
    /// The iv (see [`DirectionCarry::iv_hex`]).
    iv: [u8; 12],
    /// The sequence number of the next record.
    seq: u64,
    /// Records this key may protect.
    seq_max: u64,
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.raw_key.zeroize();
        self.iv.zeroize();
    }
}

impl Direction {
    fn new(suite: TlsSuite, carry: &DirectionCarry) -> Result<Direction, RecordError> {
        let bad = || RecordError::Unsupported("key or iv is not what the suite needs".into());
        let mut key = unhex(&carry.key_hex).ok_or_else(bad)?;
        let mut iv = unhex(&carry.iv_hex).ok_or_else(bad)?;
        let algorithm = suite.algorithm();
        let result = (|| {
            if key.len() != algorithm.key_len() || iv.len() != 12 {
                return Err(bad());
            }
            let mut raw_key = [0u8; 32];
            raw_key[..key.len()].copy_from_slice(&key);
            let mut iv_bytes = [0u8; 12];
            iv_bytes.copy_from_slice(&iv);
            Ok(Direction {
                key: LessSafeKey::new(UnboundKey::new(algorithm, &key).map_err(|_| bad())?),
                raw_key,
                raw_key_len: key.len(),
                iv: iv_bytes,
                seq: carry.seq,
                seq_max: suite.records_max(),
            })
        })();
        key.zeroize();
        iv.zeroize();
        result
    }

    fn carry(&self) -> DirectionCarry {
        DirectionCarry {
            key_hex: hex(&self.raw_key[..self.raw_key_len]),
            iv_hex: hex(&self.iv),
            seq: self.seq,
        }
    }

    /// Takes the next sequence number, or says the key is used up.
    fn next_seq(&mut self) -> Result<u64, RecordError> {
        if self.seq >= self.seq_max {
            return Err(RecordError::KeysExhausted);
        }
        let seq = self.seq;
        self.seq += 1;
        Ok(seq)
    }

    /// iv XOR the sequence number, left-padded to the nonce's length (RFC 8446 §5.3).
    fn nonce(&self, seq: u64) -> [u8; 12] {
        let mut nonce = self.iv;
        for (byte, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *byte ^= s;
        }
        nonce
    }
}

/// TLS 1.2's additional data: sequence number, type, version, plaintext length.
fn tls12_aad(seq: u64, content_type: u8, version: [u8; 2], len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&version);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// A continued TLS connection's record protection, both directions (see the module docs).
pub struct RecordLayer {
    /// TLS 1.2 or 1.3.
    protocol: TlsProtocol,
    /// The AEAD.
    suite: TlsSuite,
    /// Counterparty → gateway.
    rx: Direction,
    /// Gateway → counterparty.
    tx: Direction,
}

impl RecordLayer {
    /// The layer a carry describes; refuses another carry version or keys that do not fit.
    pub fn new(carry: &TlsCarry) -> Result<RecordLayer, RecordError> {
        if carry.version != constants::TLS_CARRY_VERSION {
            return Err(RecordError::Unsupported(format!(
                "carry version {}, this build reads {}",
                carry.version,
                constants::TLS_CARRY_VERSION
            )));
        }
        Ok(RecordLayer {
            protocol: carry.protocol,
            suite: carry.suite,
            rx: Direction::new(carry.suite, &carry.rx)?,
            tx: Direction::new(carry.suite, &carry.tx)?,
        })
    }

    /// The layer's state as a carry, for a further upgrade, with what was received but not yet
    /// decrypted or read.
    pub fn carry(&self, ciphertext: &[u8], plaintext: &[u8]) -> TlsCarry {
        TlsCarry {
            version: constants::TLS_CARRY_VERSION,
            protocol: self.protocol,
            suite: self.suite,
            rx: self.rx.carry(),
            tx: self.tx.carry(),
            ciphertext_hex: hex(ciphertext),
            plaintext_hex: hex(plaintext),
        }
    }

    /// The negotiated version.
    pub fn protocol(&self) -> TlsProtocol {
        self.protocol
    }

    /// The AEAD.
    pub fn suite(&self) -> TlsSuite {
        self.suite
    }

    /// Decrypts the record at the front of `buf` in place, if it is whole.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Opened, RecordError> {
        if buf.len() < constants::TLS_RECORD_HEADER_LEN {
            return Ok(Opened::Incomplete);
        }
        let content_type = buf[0];
        let version = [buf[1], buf[2]];
        let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        if version[0] != LEGACY_VERSION[0] {
            return Err(RecordError::Malformed);
        }
        let len_max = match self.protocol {
            TlsProtocol::Tls13 => constants::TLS13_CIPHERTEXT_MAX,
            TlsProtocol::Tls12 => constants::TLS12_CIPHERTEXT_MAX,
        };
        if len > len_max {
            return Err(RecordError::RecordOverflow);
        }
        let consumed = constants::TLS_RECORD_HEADER_LEN + len;
        if buf.len() < consumed {
            return Ok(Opened::Incomplete);
        }
        let mut header = [0u8; constants::TLS_RECORD_HEADER_LEN];
        header.copy_from_slice(&buf[..constants::TLS_RECORD_HEADER_LEN]);
        let payload = &mut buf[constants::TLS_RECORD_HEADER_LEN..consumed];
        let start = constants::TLS_RECORD_HEADER_LEN;
        let (inner_type, content_len) = match self.protocol {
            TlsProtocol::Tls13 => {
                // After the handshake only protected records may come (RFC 8446 §5).
                if content_type != CONTENT_APPLICATION_DATA {
                    return Err(RecordError::UnexpectedMessage(content_type));
                }
                if len < TAG_LEN {
                    return Err(RecordError::BadRecordMac);
                }
                let seq = self.rx.next_seq()?;
                let nonce = Nonce::assume_unique_for_key(self.rx.nonce(seq));
                let plain_len = self
                    .rx
                    .key
                    .open_in_place(nonce, Aad::from(header), payload)
                    .map_err(|_| RecordError::BadRecordMac)?
                    .len();
                // The inner type is the last non-zero byte; zeros after it are padding.
                let Some(type_at) = payload[..plain_len].iter().rposition(|&b| b != 0) else {
                    return Err(RecordError::UnexpectedMessage(0));
                };
                (payload[type_at], type_at)
            }
            TlsProtocol::Tls12 => {
                let explicit = match self.suite {
                    TlsSuite::Chacha20Poly1305 => 0,
                    TlsSuite::Aes128Gcm | TlsSuite::Aes256Gcm => GCM_EXPLICIT_NONCE_LEN,
                };
                if len < explicit + TAG_LEN {
                    return Err(RecordError::BadRecordMac);
                }
                let seq = self.rx.next_seq()?;
                let aad = Aad::from(tls12_aad(
                    seq,
                    content_type,
                    version,
                    len - explicit - TAG_LEN,
                ));
                let plain_len = if explicit == 0 {
                    let nonce = Nonce::assume_unique_for_key(self.rx.nonce(seq));
                    self.rx.key.open_in_place(nonce, aad, payload)
                } else {
                    let mut nonce = [0u8; 12];
                    nonce[..4].copy_from_slice(&self.rx.iv[..4]);
                    nonce[4..].copy_from_slice(&payload[..GCM_EXPLICIT_NONCE_LEN]);
                    let nonce = Nonce::assume_unique_for_key(nonce);
                    self.rx
                        .key
                        .open_within(nonce, aad, payload, GCM_EXPLICIT_NONCE_LEN..)
                }
                .map_err(|_| RecordError::BadRecordMac)?
                .len();
                (content_type, plain_len)
            }
        };
        if content_len > constants::TLS_PLAINTEXT_MAX {
            return Err(RecordError::RecordOverflow);
        }
        let content = &payload[..content_len];
        match inner_type {
            CONTENT_APPLICATION_DATA => Ok(Opened::Data {
                consumed,
                plaintext: start..start + content_len,
            }),
            CONTENT_ALERT => match content {
                [_, ALERT_CLOSE_NOTIFY] => Ok(Opened::CloseNotify),
                // Not fatal in either version: nothing to read, go on.
                [ALERT_LEVEL_WARNING, ALERT_USER_CANCELED] => Ok(Opened::Data {
                    consumed,
                    plaintext: start..start,
                }),
                [_, description] => Err(RecordError::PeerAlert(*description)),
                _ => Err(RecordError::Malformed),
            },
            CONTENT_HANDSHAKE
                if self.protocol == TlsProtocol::Tls13
                    && content.first() == Some(&HANDSHAKE_KEY_UPDATE) =>
            {
                Err(RecordError::KeyUpdate)
            }
            // A TLS 1.2 renegotiation, a TLS 1.3 post-handshake message, a ChangeCipherSpec.
            other @ (CONTENT_HANDSHAKE | CONTENT_CHANGE_CIPHER_SPEC) => {
                Err(RecordError::UnexpectedMessage(other))
            }
            other => Err(RecordError::UnexpectedMessage(other)),
        }
    }

    /// Appends one record of `content_type` carrying `data` (at most
    /// [`constants::TLS_PLAINTEXT_MAX`] bytes) to `out`.
    fn seal(
        &mut self,
        content_type: u8,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        assert!(
            data.len() <= constants::TLS_PLAINTEXT_MAX,
            "caller cuts records"
        );
        let seq = self.tx.next_seq()?;
        let start = out.len();
        let (outer_type, explicit, inner) = match (self.protocol, self.suite) {
            (TlsProtocol::Tls13, _) => (CONTENT_APPLICATION_DATA, 0, 1),
            (TlsProtocol::Tls12, TlsSuite::Chacha20Poly1305) => (content_type, 0, 0),
            (TlsProtocol::Tls12, _) => (content_type, GCM_EXPLICIT_NONCE_LEN, 0),
        };
        let len = explicit + data.len() + inner + TAG_LEN;
        out.push(outer_type);
        out.extend_from_slice(&LEGACY_VERSION);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        let nonce = self.tx.nonce(seq);
        out.extend_from_slice(&nonce[4..4 + explicit]);
        let body = out.len();
        out.extend_from_slice(data);
        let aad = match self.protocol {
            TlsProtocol::Tls13 => {
                out.push(content_type);
                let mut header = [0u8; 13];
                header[..constants::TLS_RECORD_HEADER_LEN]
                    .copy_from_slice(&out[start..start + constants::TLS_RECORD_HEADER_LEN]);
                Aad::from(header)
            }
            TlsProtocol::Tls12 => {
                Aad::from(tls12_aad(seq, content_type, LEGACY_VERSION, data.len()))
            }
        };
        // The 1.3 additional data is the 5-byte header: the array above is cut to it.
        let aad_len = match self.protocol {
            TlsProtocol::Tls13 => constants::TLS_RECORD_HEADER_LEN,
            TlsProtocol::Tls12 => 13,
        };
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad.as_ref()[..aad_len]),
                &mut out[body..],
            )
            .map_err(|_| RecordError::KeysExhausted)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Appends `data` as application-data records of at most [`constants::TLS_PLAINTEXT_MAX`].
    pub fn seal_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        for chunk in data.chunks(constants::TLS_PLAINTEXT_MAX) {
            self.seal(CONTENT_APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// Appends an alert record (see [`RecordError::alert`]; close_notify is (1, 0)).
    pub fn seal_alert(&mut self, (level, description): (u8, u8), out: &mut Vec<u8>) {
        // A key used up cannot say so: the connection just closes.
        let _ = self.seal(CONTENT_ALERT, &[level, description], out);
    }

    /// Appends a close_notify.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) {
        self.seal_alert((ALERT_LEVEL_WARNING, ALERT_CLOSE_NOTIFY), out);
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// The bytes of `hex`; `None` if it is not hex.
fn unhex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    hex.chunks(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
#[path = "tls_record_tests.rs"]
mod tests;
