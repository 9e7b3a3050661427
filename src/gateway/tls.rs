//! TLS on FIX connections, and the client certificate that says which counterparty may log on.
//!
//! Counterparties that reach the venue over a network it does not own want their orders
//! encrypted, and the venue wants more than a CompID in a Logon as proof of who is connecting.
//! With `[gateway] tls_cert` and `tls_key` every FIX connection speaks TLS (rustls, TLS 1.2 and
//! 1.3); with `tls_client_ca` as well, a counterparty must present a certificate issued by that
//! authority, and `[gateway.tls_clients]` maps the certificate's names (its subject CN and its
//! DNS subject alternative names) to the counterparty CompIDs (the SenderCompID of their Logon)
//! it may log on as.
//!
//! What a connection proves at the handshake travels with it as a [`Peer`]; the acceptor asks it
//! once, when the Logon names a session. A Logon for a CompID the certificate does not cover is
//! refused exactly like a Logon for an unknown CompID pair: the connection is closed without an
//! answer, so an unauthenticated peer learns nothing and no session's numbering moves.
//!
//! The handshake runs inside the connection's own task, after the connection took its place in
//! the pre-logon budget and under the same Logon deadline: a client that stalls its handshake is
//! an idle pre-logon connection like any other, closed at the deadline or evicted to make room.
//!
//! A TLS session's keys live in the gateway process. At a planned upgrade they are handed to the
//! successor with the socket (rustls's secret extraction, see [`FixStream::hand_off`]), which goes
//! on with its own record layer ([`super::tls_record`], [`ContinuedTls`]). After a crash they are
//! gone: the socket holder closes TLS connections instead of handing them to the restarted
//! gateway, and the counterparty reconnects and catches up by FIX resend.

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::tls_record::{Opened, RecordError, RecordLayer, TlsCarry};
use crate::config::GatewayConfig;
use crate::constants;
use crate::fix::escape::Escaped;

/// Why the TLS settings cannot be used. Each message names the config key and the file, since a
/// gateway that cannot load its certificate must not start and the operator fixes one file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file named in the config cannot be read.
    #[error("[gateway] {key} {}: cannot read it: {source}", path.display())]
    Read {
        /// The config key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file holds no PEM item of the kind the key needs, or a malformed one.
    #[error("[gateway] {key} {}: {what}", path.display())]
    Pem {
        /// The config key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected or what is wrong with it.
        what: String,
    },
    /// rustls refused the certificate, key or authority (a key that does not match the
    /// certificate, an unsupported key type, a CA certificate it cannot parse).
    #[error("[gateway] {key} {}: {reason}", path.display())]
    Refused {
        /// The config key whose file was refused.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// What a connection proved about itself before its Logon was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Plain TCP, or TLS without client certificates: the CompIDs in the Logon are all there is,
    /// as on any FIX session.
    Unverified,
    /// A client certificate issued by `tls_client_ca`.
    Certified {
        /// The certificate's names (subject CN first, then DNS SANs), for logs.
        names: Vec<String>,
        /// The counterparty CompIDs those names are mapped to: the only ones it may log on as.
        comp_ids: Vec<Vec<u8>>,
    },
}

impl Peer {
    /// Whether a Logon whose SenderCompID is `comp_id` may proceed on this connection.
    pub fn may_log_on_as(&self, comp_id: &[u8]) -> bool {
        match self {
            Peer::Unverified => true,
            Peer::Certified { comp_ids, .. } => comp_ids.iter().any(|c| c == comp_id),
        }
    }

    /// The certificate's names for a log line (empty when there is no certificate), escaped
    /// and bounded like any peer-supplied value: a CN may hold any character.
    pub fn names(&self) -> String {
        match self {
            Peer::Unverified => String::new(),
            Peer::Certified { names, .. } => names
                .iter()
                .map(|name| Escaped(name.as_bytes()).to_string())
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// The FIX listener's TLS side, loaded once at start-up.
pub struct FixTls {
    /// Runs server handshakes with the configured certificate (and client verifier).
    acceptor: tokio_rustls::TlsAcceptor,
    /// Certificate name → counterparty CompIDs; `None` when no client certificate is asked for.
    clients: Option<BTreeMap<String, Vec<Vec<u8>>>>,
}

impl FixTls {
    /// The TLS side `gateway` configures, or `None` for plain TCP. Reads and checks every file
    /// now, so a bad certificate stops the gateway at start instead of failing each handshake.
    pub fn from_config(gateway: &GatewayConfig) -> Result<Option<Arc<FixTls>>, TlsError> {
        let (Some(cert), Some(key)) = (&gateway.tls_cert, &gateway.tls_key) else {
            // Config::parse refuses one without the other, and a client CA without both.
            return Ok(None);
        };
        let chain = load_certs("tls_cert", cert)?;
        let private_key = load_key(key)?;
        // ring, though rustls marks it deprecated for lacking post-quantum key exchange: it builds
        // from the registry with a C compiler alone, where aws-lc-rs needs more of a toolchain on
        // every build machine. Classical X25519/P-256 key exchange is what counterparties' FIX
        // engines negotiate today; moving to aws-lc-rs is this line and Cargo.toml's features.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Refused {
                key: "tls_cert",
                path: cert.clone(),
                reason: error.to_string(),
            })?;
        let (builder, clients) = match &gateway.tls_client_ca {
            None => (builder.with_no_client_auth(), None),
            Some(ca) => {
                let refused = |reason: String| TlsError::Refused {
                    key: "tls_client_ca",
                    path: ca.clone(),
                    reason,
                };
                let mut roots = rustls::RootCertStore::empty();
                for authority in load_certs("tls_client_ca", ca)? {
                    roots
                        .add(authority)
                        .map_err(|error| refused(error.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|error| refused(error.to_string()))?;
                let clients = gateway
                    .tls_clients
                    .iter()
                    .map(|(name, comp_ids)| {
                        (
                            name.clone(),
                            comp_ids.iter().map(|c| c.as_bytes().to_vec()).collect(),
                        )
                    })
                    .collect();
                (builder.with_client_cert_verifier(verifier), Some(clients))
            }
        };
        let mut config = builder
            .with_single_cert(chain, private_key)
            .map_err(|error| TlsError::Refused {
                key: "tls_key",
                path: key.clone(),
                reason: format!("cannot serve tls_cert {}: {error}", cert.display()),
            })?;
        // A planned upgrade hands each connection's traffic keys to the successor.
        config.enable_secret_extraction = true;
        // TLS 1.3 session tickets are the one thing rustls would send unasked after the
        // handshake; none, so nothing but application data and closure ever follows it, and
        // nothing can be queued in rustls when the keys are handed over.
        config.send_tls13_tickets = 0;
        tracing::info!(
            cert = %cert.display(),
            client_certificates = clients.is_some(),
            "FIX connections speak TLS"
        );
        Ok(Some(Arc::new(FixTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            clients,
        })))
    }

    /// Runs the server handshake on `tcp` and says what the peer proved. The caller bounds it in
    /// time: a peer that stalls here must not hold the connection longer than one that stalls
    /// before its Logon.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<(FixStream, Peer)> {
        let stream = self.acceptor.accept(Tap::new(tcp)).await?;
        let peer = match &self.clients {
            None => Peer::Unverified,
            Some(clients) => {
                // The verifier required a certificate chained to the client CA; without one the
                // handshake above already failed.
                let names = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(certificate_names)
                    .unwrap_or_default();
                let comp_ids = names
                    .iter()
                    .filter_map(|name| clients.get(name))
                    .flatten()
                    .cloned()
                    .collect();
                Peer::Certified { names, comp_ids }
            }
        };
        Ok((FixStream::Tls(Box::new(stream)), peer))
    }
}

/// Reads a PEM file of certificates for `key`; at least one.
fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            key,
            path: path.to_path_buf(),
            what: format!("not a PEM certificate file: {error}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            key,
            path: path.to_path_buf(),
            what: "holds no PEM CERTIFICATE".into(),
        });
    }
    Ok(certs)
}

/// Reads the private key (PKCS#8, PKCS#1 or SEC1 PEM).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("tls_key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsError::Pem {
        key: "tls_key",
        path: path.to_path_buf(),
        what: match error {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no PEM PRIVATE KEY".into(),
            other => format!("not a PEM private key file: {other}"),
        },
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// The names a client certificate is known by: its subject's common names, then its DNS
/// subject alternative names. Names that are not text are skipped; a certificate rustls
/// accepted but whose subject does not parse simply has fewer names (and so maps to fewer
/// CompIDs), never a panic.
fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return Vec::new();
    };
    let mut names = common_names(cert.subject());
    for dns in cert.valid_dns_names() {
        if !names.iter().any(|n| n == dns) {
            names.push(dns.to_owned());
        }
    }
    names
}

/// OID 2.5.4.3, id-at-commonName, as DER content bytes.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The commonName values of an X.501 Name given as its DER content (the RDN SETs without the
/// outer SEQUENCE, as webpki hands it out).
fn common_names(mut name: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    while let Some((0x31, mut rdn, rest)) = der_next(name) {
        name = rest;
        while let Some((0x30, attribute, more)) = der_next(rdn) {
            rdn = more;
            let Some((0x06, oid, value)) = der_next(attribute) else {
                continue;
            };
            // UTF8String, PrintableString, IA5String: what certificate tools write for a CN.
            if oid == OID_COMMON_NAME
                && let Some((0x0c | 0x13 | 0x16, text, _)) = der_next(value)
                && let Ok(text) = std::str::from_utf8(text)
            {
                found.push(text.to_owned());
            }
        }
    }
    found
}

/// Splits one DER element off `input`: its tag, its contents and what follows. `None` for
/// anything truncated or malformed (indefinite or over-long lengths), so a bad encoding ends
/// the walk instead of reading past it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        // 0x80 is BER's indefinite length, not DER; over four length bytes is no certificate.
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// A FIX connection's byte stream, plain or TLS: the acceptor's driver reads and writes it the
/// same way either way, so TLS adds no second copy of the session loop.
pub enum FixStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, run by rustls; boxed because rustls's connection state is large and most of
    /// a venue's connections may be plain.
    Tls(Box<tokio_rustls::server::TlsStream<Tap>>),
    /// TLS handed over by a previous gateway process at a planned upgrade, continued by
    /// [`ContinuedTls`].
    Continued(Box<ContinuedTls>),
}

impl FixStream {
    /// A TLS connection handed over at a planned upgrade, continued on `tcp` from `carry`.
    pub fn continued(tcp: TcpStream, carry: &TlsCarry) -> Result<FixStream, RecordError> {
        Ok(FixStream::Continued(Box::new(ContinuedTls::new(
            tcp, carry,
        )?)))
    }

    /// Planned upgrade: what the successor needs to go on with this connection besides the
    /// socket: nothing for plain TCP, the TLS state for TLS. Call it only once everything
    /// written was flushed. `Err` says why a TLS connection cannot be handed over; it was then
    /// closed cleanly (close_notify where the TLS state still allows one, then a shutdown), and
    /// the counterparty reconnects. Nothing is read from or written to the socket otherwise.
    pub async fn hand_off(self) -> Result<Option<TlsCarry>, String> {
        match self {
            FixStream::Plain(_) => Ok(None),
            FixStream::Continued(mut continued) => match continued.carry() {
                Some(carry) => Ok(Some(carry)),
                None => {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_millis(constants::UPGRADE_HANDOVER_MAX_MS),
                        tokio::io::AsyncWriteExt::shutdown(continued.as_mut()),
                    )
                    .await;
                    Err("TLS records not yet written".into())
                }
            },
            FixStream::Tls(stream) => {
                let (tap, mut connection) = stream.into_inner();
                let mut tcp = tap.tcp;
                let refused = |why: String| why;
                // Decrypted but not read by the session yet: the successor gives it first.
                let mut plaintext = Vec::new();
                let mut chunk = vec![0u8; constants::READ_CHUNK];
                loop {
                    match connection.reader().read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => plaintext.extend_from_slice(&chunk[..n]),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => return Err(refused(error.to_string())),
                    }
                }
                let why = if connection.is_handshaking() {
                    Some("handshake not finished".to_string())
                } else if connection.wants_write() {
                    Some("TLS records not yet written".to_string())
                } else if tap.records.partial().is_none() {
                    Some("received bytes not tracked to a record boundary".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    connection.send_close_notify();
                    let mut out = Vec::new();
                    while connection.wants_write() && connection.write_tls(&mut out).is_ok() {}
                    let close = async {
                        tokio::io::AsyncWriteExt::write_all(&mut tcp, &out).await?;
                        tokio::io::AsyncWriteExt::shutdown(&mut tcp).await
                    };
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_millis(constants::UPGRADE_HANDOVER_MAX_MS),
                        close,
                    )
                    .await;
                    return Err(why);
                }
                let ciphertext = tap.records.partial().unwrap_or_default().to_vec();
                let Some(version) = connection.protocol_version() else {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tcp).await;
                    return Err("no protocol version".into());
                };
                let carried = connection
                    .dangerous_extract_secrets()
                    .map_err(|error| error.to_string())
                    .and_then(|secrets| {
                        TlsCarry::from_rustls(version, secrets, &ciphertext, &plaintext)
                            .map_err(|error| error.to_string())
                    });
                plaintext.fill(0);
                match carried {
                    Ok(carry) => Ok(Some(carry)),
                    Err(why) => {
                        // The keys are gone with rustls's state: no close_notify can be made.
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tcp).await;
                        Err(why)
                    }
                }
            }
        }
    }
}

/// The TCP side of a rustls connection, watching where TLS records begin and end in what rustls
/// reads (see [`RecordTracker`]).
pub struct Tap {
    /// The connection.
    tcp: TcpStream,
    /// Record boundaries in what was read.
    records: RecordTracker,
}

impl Tap {
    fn new(tcp: TcpStream) -> Tap {
        Tap {
            tcp,
            records: RecordTracker::default(),
        }
    }
}

/// Follows TLS record framing over a byte stream, so that at a planned upgrade the bytes of a
/// record rustls holds but cannot decrypt yet (the rest is still on the way) are known and handed
/// over with the keys.
///
/// rustls decrypts every whole record it reads at once (tokio-rustls processes after each
/// read), so what it holds undecrypted is exactly the record the stream stops in.
#[derive(Debug)]
struct RecordTracker {
    /// The header of the record being read, as far as it arrived.
    header: [u8; constants::TLS_RECORD_HEADER_LEN],
    /// How much of `header` arrived.
    header_len: usize,
    /// Body bytes of the current record still to come.
    body_left: usize,
    /// The current record's bytes so far (empty at a boundary); `None` once a record was
    /// longer than any TLS record may be, when rustls fails the connection anyway.
    partial: Option<Vec<u8>>,
}

impl Default for RecordTracker {
    fn default() -> RecordTracker {
        RecordTracker {
            header: [0; constants::TLS_RECORD_HEADER_LEN],
            header_len: 0,
            body_left: 0,
            partial: Some(Vec::new()),
        }
    }
}

impl RecordTracker {
    /// The bytes of the record the stream stops in (empty at a record boundary); `None` if
    /// the framing was lost.
    fn partial(&self) -> Option<&[u8]> {
        self.partial.as_deref()
    }

    /// Follows the record framing over `bytes`, the next ones read.
    fn track(&mut self, bytes: &[u8]) {
        let mut at = 0;
        // Where the current record starts in `bytes` (0: in an earlier read).
        let mut record_start = 0;
        while at < bytes.len() {
            if self.header_len < constants::TLS_RECORD_HEADER_LEN {
                self.header[self.header_len] = bytes[at];
                self.header_len += 1;
                at += 1;
                if self.header_len == constants::TLS_RECORD_HEADER_LEN {
                    self.body_left =
                        usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                }
            } else {
                let take = self.body_left.min(bytes.len() - at);
                at += take;
                self.body_left -= take;
            }
            if self.header_len == constants::TLS_RECORD_HEADER_LEN && self.body_left == 0 {
                self.header_len = 0;
                record_start = at;
                if let Some(partial) = &mut self.partial {
                    partial.clear();
                }
            }
        }
        if let Some(partial) = &mut self.partial {
            partial.extend_from_slice(&bytes[record_start..]);
            if partial.len() > constants::TLS_RECORD_MAX {
                self.partial = None;
            }
        }
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        this.records.track(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A TLS connection continued after a planned upgrade: [`RecordLayer`] over the socket, with
/// buffers sized once for the largest record, so reading and writing allocate nothing.
pub struct ContinuedTls {
    /// The connection.
    tcp: TcpStream,
    /// Keys and sequence numbers.
    layer: RecordLayer,
    /// Received bytes `rx[..rx_len]`; the record at the front is decrypted in place.
    rx: Box<[u8]>,
    /// How much of `rx` holds bytes.
    rx_len: usize,
    /// Bytes of `rx` the opened front record takes (0: none opened).
    opened: usize,
    /// The opened record's plaintext not read yet, in `rx`.
    plain: Range<usize>,
    /// Plaintext the previous process had decrypted but not read; read first.
    carried: Vec<u8>,
    /// How much of `carried` was read.
    carried_at: usize,
    /// Records to write, `tx[tx_at..]` not written yet.
    tx: Vec<u8>,
    /// How much of `tx` was written.
    tx_at: usize,
    /// The peer's close_notify, end of stream or a fatal error was read: nothing more is.
    read_closed: bool,
    /// Our close_notify is queued: nothing more is written.
    close_sent: bool,
}

impl ContinuedTls {
    /// Continues on `tcp` from `carry`.
    pub fn new(tcp: TcpStream, carry: &TlsCarry) -> Result<ContinuedTls, RecordError> {
        let layer = RecordLayer::new(carry)?;
        let bad = || RecordError::Unsupported("carried bytes are not hex".into());
        let ciphertext = carry.ciphertext().ok_or_else(bad)?;
        let carried = carry.plaintext().ok_or_else(bad)?;
        let mut rx = vec![0u8; constants::TLS_RECORD_MAX].into_boxed_slice();
        if ciphertext.len() > rx.len() {
            return Err(RecordError::RecordOverflow);
        }
        rx[..ciphertext.len()].copy_from_slice(&ciphertext);
        Ok(ContinuedTls {
            tcp,
            layer,
            rx,
            rx_len: ciphertext.len(),
            opened: 0,
            plain: 0..0,
            carried,
            carried_at: 0,
            tx: Vec::with_capacity(constants::TLS_RECORD_MAX),
            tx_at: 0,
            read_closed: false,
            close_sent: false,
        })
    }

    /// The state to carry on in another process; `None` while records wait to be written.
    fn carry(&self) -> Option<TlsCarry> {
        if self.tx_at < self.tx.len() {
            return None;
        }
        let mut plaintext = self.carried[self.carried_at..].to_vec();
        plaintext.extend_from_slice(&self.rx[self.plain.clone()]);
        let carry = self
            .layer
            .carry(&self.rx[self.opened..self.rx_len], &plaintext);
        plaintext.fill(0);
        Some(carry)
    }

    /// Forgets the opened record: what follows it moves to the front.
    fn consume_opened(&mut self) {
        self.rx.copy_within(self.opened..self.rx_len, 0);
        self.rx_len -= self.opened;
        self.opened = 0;
        self.plain = 0..0;
    }

    /// A record could not be read: queue the alert it calls for and try to send it at once
    /// (a peer that stops reading does not get to hold the connection open for it).
    fn fail(&mut self, error: &RecordError) {
        self.read_closed = true;
        if let Some(alert) = error.alert()
            && !self.close_sent
        {
            self.layer.seal_alert(alert, &mut self.tx);
            self.close_sent = true;
            while self.tx_at < self.tx.len() {
                match self.tcp.try_write(&self.tx[self.tx_at..]) {
                    Ok(n) if n > 0 => self.tx_at += n,
                    _ => break,
                }
            }
        }
        tracing::warn!(%error, "continued TLS connection: record refused; closing");
    }

    /// Writes what `tx` holds.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tx_at < self.tx.len() {
            let n =
                std::task::ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.tx[self.tx_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx_at += n;
        }
        self.tx.clear();
        self.tx_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ContinuedTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.carried_at < this.carried.len() {
            let n = buf.remaining().min(this.carried.len() - this.carried_at);
            buf.put_slice(&this.carried[this.carried_at..this.carried_at + n]);
            this.carried_at += n;
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.plain.is_empty() {
                let n = buf.remaining().min(this.plain.len());
                buf.put_slice(&this.rx[this.plain.start..this.plain.start + n]);
                this.plain.start += n;
                if this.plain.is_empty() {
                    this.consume_opened();
                }
                return Poll::Ready(Ok(()));
            }
            if this.opened > 0 {
                this.consume_opened();
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.layer.open(&mut this.rx[..this.rx_len]) {
                Ok(Opened::Data {
                    consumed,
                    plaintext,
                }) => {
                    this.opened = consumed;
                    this.plain = plaintext;
                }
                Ok(Opened::CloseNotify) => {
                    this.read_closed = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(Opened::Incomplete) => {
                    if this.rx_len == this.rx.len() {
                        // open() refuses a header longer than the buffer, so a full buffer
                        // always holds a whole record.
                        let error = RecordError::RecordOverflow;
                        this.fail(&error);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
                    }
                    let mut free = ReadBuf::new(&mut this.rx[this.rx_len..]);
                    std::task::ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut free))?;
                    let n = free.filled().len();
                    if n == 0 {
                        // End of stream without close_notify: for FIX, a disconnect like any.
                        this.read_closed = true;
                        return Poll::Ready(Ok(()));
                    }
                    this.rx_len += n;
                }
                Err(error) => {
                    this.fail(&error);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
                }
            }
        }
    }
}

impl AsyncWrite for ContinuedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(constants::TLS_PLAINTEXT_MAX);
        if let Err(error) = this.layer.seal_data(&buf[..n], &mut this.tx) {
            this.close_sent = true;
            return Poll::Ready(Err(io::Error::other(error)));
        }
        // Sent now if the socket takes it; otherwise by the next write or flush.
        if let Poll::Ready(Err(error)) = this.poll_drain(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            std::task::ready!(this.poll_drain(cx))?;
            this.layer.seal_close_notify(&mut this.tx);
            this.close_sent = true;
        }
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for FixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            FixStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            FixStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            FixStream::Continued(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for FixStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            FixStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            FixStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            FixStream::Continued(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            FixStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            FixStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            FixStream::Continued(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            FixStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            FixStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            FixStream::Continued(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Logs why a handshake failed, at warn: a counterparty whose certificate expired sees only a
/// closed connection, so the venue's log is where its operator finds out.
pub fn log_handshake_failure(peer: std::net::SocketAddr, error: &io::Error) {
    tracing::warn!(%peer, %error, "TLS handshake failed; closing");
}

/// Logs a Logon refused because the certificate does not cover its CompID.
pub fn log_not_mapped(peer: std::net::SocketAddr, identity: &Peer, comp_id: &[u8]) {
    tracing::warn!(
        %peer,
        certificate = %identity.names(),
        sender = %Escaped(comp_id),
        "Logon for a CompID the client certificate is not mapped to ([gateway.tls_clients]): closed without an answer"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str, sans: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Broker");
        (params.self_signed(&key).expect("self-signed"), key)
    }

    proptest::proptest! {
        /// Records of any lengths, read in chunks of any sizes: after each read the tracker's
        /// partial record is exactly the bytes after the last whole record.
        #[test]
        fn the_tracker_knows_the_record_a_read_stops_in(
            lengths in proptest::collection::vec(0usize..600, 1..8),
            cuts in proptest::collection::vec(1usize..700, 1..40),
        ) {
            let mut stream = Vec::new();
            let mut boundaries = vec![0];
            for (n, len) in lengths.iter().enumerate() {
                stream.extend_from_slice(&[23, 3, 3]);
                stream.extend_from_slice(&(*len as u16).to_be_bytes());
                stream.extend(std::iter::repeat_n(n as u8, *len));
                boundaries.push(stream.len());
            }
            let mut tracker = RecordTracker::default();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at == stream.len() {
                    break;
                }
                let end = (at + cut).min(stream.len());
                tracker.track(&stream[at..end]);
                at = end;
                let boundary = boundaries.iter().rev().find(|b| **b <= at).copied().unwrap_or(0);
                proptest::prop_assert_eq!(tracker.partial(), Some(&stream[boundary..at]));
            }
        }
    }

    /// A rustls server connection over `tcp`, allowing secret extraction as the gateway's does,
    /// and the PEM of its self-signed certificate.
    async fn rustls_server(
        listener: &tokio::net::TcpListener,
        cert: &rcgen::Certificate,
        key: &rcgen::KeyPair,
    ) -> FixStream {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        config.enable_secret_extraction = true;
        config.send_tls13_tickets = 0;
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        FixStream::Tls(Box::new(acceptor.accept(Tap::new(tcp)).await.unwrap()))
    }

    /// What the holder does at an upgrade: keeps a duplicate of the socket, which the successor
    /// gets back as a new descriptor.
    fn duplicate(stream: &FixStream) -> TcpStream {
        use std::os::fd::AsFd;
        let tcp = match stream {
            FixStream::Plain(tcp) => tcp,
            FixStream::Tls(tls) => &tls.get_ref().0.tcp,
            FixStream::Continued(continued) => &continued.tcp,
        };
        let std = std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned().unwrap());
        std.set_nonblocking(true).unwrap();
        TcpStream::from_std(std).unwrap()
    }

    async fn read_exactly(stream: &mut FixStream, len: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0u8; len];
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stream.read_exact(&mut got),
        )
        .await
        .expect("in time")
        .expect("read");
        got
    }

    /// The real driver's path: a rustls connection handed off with a record cut in its buffer,
    /// continued on a duplicate of the socket, handed off again, and closed; a rustls client on
    /// the other end of a real TCP connection reads and writes throughout.
    #[tokio::test]
    async fn a_rustls_connection_is_handed_off_twice_mid_record_and_the_client_notices_nothing() {
        use std::io::{Read, Write};
        use tokio::io::AsyncWriteExt;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cert_der = cert.der().clone();
        let (to_client, from_test) = std::sync::mpsc::channel::<&'static str>();
        let client = std::thread::spawn(move || {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert_der).unwrap();
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let conn =
                rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                    .unwrap();
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(b"one|").unwrap();
            // A record cut in two: the first 7 bytes now, the rest when told.
            tls.conn.writer().write_all(b"two|").unwrap();
            let mut record = Vec::new();
            tls.conn.write_tls(&mut record).unwrap();
            tls.sock.write_all(&record[..7]).unwrap();
            assert_eq!(from_test.recv().unwrap(), "rest");
            tls.sock.write_all(&record[7..]).unwrap();
            let mut got = [0u8; 6];
            tls.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"reply|");
            assert_eq!(from_test.recv().unwrap(), "more");
            tls.write_all(b"three|").unwrap();
            let mut rest = Vec::new();
            // close_notify, then end of stream: read_to_end succeeds only on a clean close.
            tls.read_to_end(&mut rest).unwrap();
            rest
        });
        let mut stream = rustls_server(&listener, &cert, &key).await;
        assert_eq!(read_exactly(&mut stream, 4).await, b"one|");
        // Wait until rustls read the cut record's first part (and so holds it undecrypted).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let FixStream::Tls(tls) = &mut stream else {
                unreachable!()
            };
            if tls
                .get_ref()
                .0
                .records
                .partial()
                .is_some_and(|p| p.len() == 7)
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the first part never arrived"
            );
            let mut byte = [0u8; 1];
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(20),
                tokio::io::AsyncReadExt::read(&mut stream, &mut byte),
            )
            .await;
        }
        let tcp = duplicate(&stream);
        let carry = stream.hand_off().await.expect("handed off").expect("TLS");
        assert_eq!(carry.ciphertext().unwrap().len(), 7);
        let mut stream = FixStream::continued(tcp, &carry).expect("continued");
        to_client.send("rest").unwrap();
        assert_eq!(read_exactly(&mut stream, 4).await, b"two|");
        stream.write_all(b"reply|").await.unwrap();
        stream.flush().await.unwrap();
        // A second hand-off, from the continued layer.
        let tcp = duplicate(&stream);
        let carry = stream.hand_off().await.expect("handed off").expect("TLS");
        let mut stream = FixStream::continued(tcp, &carry).expect("continued again");
        to_client.send("more").unwrap();
        assert_eq!(read_exactly(&mut stream, 6).await, b"three|");
        stream.write_all(b"last|").await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(client.join().unwrap(), b"last|");
    }

    #[test]
    fn names_are_the_common_name_then_the_dns_alternative_names() {
        let (cert, _) = pair("client-one", &["one.broker.example", "client-one"]);
        assert_eq!(
            certificate_names(cert.der()),
            ["client-one", "one.broker.example"]
        );
    }

    #[test]
    fn a_malformed_name_yields_no_name_and_no_panic() {
        // A SET whose length runs past the end, a long form with no length bytes, garbage.
        for bytes in [
            &[0x31, 0x10, 0x30][..],
            &[0x31, 0x80],
            &[0x31, 0x85, 1, 2, 3, 4, 5],
            &[0xff; 7],
            &[],
        ] {
            assert!(common_names(bytes).is_empty());
        }
        assert!(certificate_names(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_empty());
    }

    #[test]
    fn names_in_a_log_line_cannot_break_it() {
        let peer = Peer::Certified {
            names: vec!["evil\nlevel=ERROR forged".into(), "ok.example".into()],
            comp_ids: Vec::new(),
        };
        let shown = peer.names();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.ends_with(",ok.example"), "{shown}");
    }

    #[test]
    fn a_certified_peer_may_log_on_only_as_its_comp_ids() {
        let peer = Peer::Certified {
            names: vec!["client-one".into()],
            comp_ids: vec![b"CLIENT1".to_vec()],
        };
        assert!(peer.may_log_on_as(b"CLIENT1"));
        assert!(!peer.may_log_on_as(b"CLIENT2"));
        assert!(Peer::Unverified.may_log_on_as(b"CLIENT2"));
    }

    fn gateway_config(dir: &Path, extra: &str) -> GatewayConfig {
        let text = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\ntls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"\n{extra}[[session]]\nSenderCompID = \"V\"\nTargetCompID = \"CLIENT1\"\n",
            dir.display()
        );
        crate::config::Config::parse(&text, "t")
            .expect("config")
            .gateway
    }

    #[test]
    fn bad_files_are_errors_naming_the_key_and_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let config = gateway_config(dir.path(), "");
        let error = |config: &GatewayConfig| {
            FixTls::from_config(config)
                .err()
                .expect("refused")
                .to_string()
        };
        let missing = error(&config);
        assert!(
            missing.contains("[gateway] tls_cert") && missing.contains("cert.pem"),
            "{missing}"
        );
        let (cert, key) = pair("venue", &["venue.example"]);
        std::fs::write(dir.path().join("cert.pem"), "not pem at all\n").unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let garbage = error(&config);
        assert!(garbage.contains("holds no PEM CERTIFICATE"), "{garbage}");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), cert.pem()).unwrap();
        let no_key = error(&config);
        assert!(
            no_key.contains("tls_key") && no_key.contains("no PEM PRIVATE KEY"),
            "{no_key}"
        );
        let (_, other_key) = pair("other", &[]);
        std::fs::write(dir.path().join("key.pem"), other_key.serialize_pem()).unwrap();
        let mismatch = error(&config);
        assert!(
            mismatch.contains("tls_key") && mismatch.contains("cannot serve tls_cert"),
            "{mismatch}"
        );
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        assert!(FixTls::from_config(&config).expect("loads").is_some());
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let ca = gateway_config(
            dir.path(),
            &format!(
                "tls_client_ca = \"{}/ca.pem\"\n[gateway.tls_clients]\nclient-one = [\"CLIENT1\"]\n",
                dir.path().display()
            ),
        );
        let empty_ca = error(&ca);
        assert!(empty_ca.contains("tls_client_ca"), "{empty_ca}");
    }
}
