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
//! A TLS session's keys live in the gateway process: a socket kept open across a gateway restart
//! could not carry the session on, so a TLS counterparty reconnects after a restart and catches up
//! by FIX resend.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::GatewayConfig;
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
        let config = builder
            .with_single_cert(chain, private_key)
            .map_err(|error| TlsError::Refused {
                key: "tls_key",
                path: key.clone(),
                reason: format!("cannot serve tls_cert {}: {error}", cert.display()),
            })?;
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
        let stream = self.acceptor.accept(tcp).await?;
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
    /// TLS over TCP; boxed because rustls's connection state is large and most of a venue's
    /// connections may be plain.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            FixStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            FixStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            FixStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            FixStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
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
