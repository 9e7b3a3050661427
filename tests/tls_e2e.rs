//! TLS on FIX sessions, end to end: the real `baton gateway` with certificates made at test time,
//! and real TLS clients (rustls, and `openssl s_client` when it is installed) logging on. Client
//! certificates are mapped to the CompIDs they may log on as; anything else (another authority,
//! no certificate, a CompID the certificate does not cover, plain TCP, a handshake that stalls)
//! is refused without touching the sessions that are logged on.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::fix::codec::{Decoder, Encoder, Frame, Message};
use baton::fix::time::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use support::logged::Logged;
use support::{STARTUP_WAIT, WAIT};

/// Bound on anything the gateway does at its Logon deadline (10 s after the connection): the
/// machine may be loaded, and this only stands between a hang and a failure.
const DEADLINE_WAIT: Duration = Duration::from_secs(60);

/// A certificate authority made for one test.
struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Authority { params, key, pem }
    }

    /// A certificate with subject CN `name` and DNS names `sans`, for `usage`: (cert PEM, key PEM).
    fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Credentials {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        Credentials {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A certificate and its private key, as PEM.
struct Credentials {
    cert_pem: String,
    key_pem: String,
}

impl Credentials {
    /// Writes them as `name.pem` and `name.key` in `dir`.
    fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// One test's venue: its authority, the clients' certificates, and the running gateway.
struct Venue {
    dir: tempfile::TempDir,
    ca: Authority,
    /// Maps to CLIENT1 by its subject CN.
    client_one: Credentials,
    /// Maps to CLIENT2 by a DNS subject alternative name (its CN maps to nothing).
    client_two: Credentials,
    gateway: Logged,
    addr: SocketAddr,
}

impl Venue {
    /// A gateway whose FIX listener speaks TLS and requires client certificates from the venue's
    /// authority, with sessions CLIENT1 and CLIENT2; `extra_gateway` adds `[gateway]` keys.
    fn start(extra_gateway: &str) -> Venue {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Authority::new("Venue Test CA");
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write CA");
        let server = ca.issue("venue", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        let (cert, key) = server.write(dir.path(), "server");
        let client_one = ca.issue("client-one", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let client_two = ca.issue(
            "desk 7",
            &["two.broker.example"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let config = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n{extra_gateway}\n\
             [gateway.tls_clients]\n\"client-one\" = [\"CLIENT1\"]\n\"two.broker.example\" = [\"CLIENT2\"]\n\n\
             [control]\napproval_required = []\n\n\
             [defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n\n\
             [[session]]\nTargetCompID = \"CLIENT1\"\n\n[[session]]\nTargetCompID = \"CLIENT2\"\n",
            cert.display(),
            key.display(),
            dir.path().join("ca.pem").display(),
        );
        let config_path = dir.path().join("baton.toml");
        std::fs::write(&config_path, config).expect("write config");
        let (mut command, ready_path) = support::gateway_command_ready(&config_path, dir.path());
        let mut gateway = Logged::spawn(
            // The acceptor's debug lines say why a pre-logon connection was closed.
            command.env("RUST_LOG", "warn,baton::gateway::acceptor=debug"),
        );
        let addr = support::wait_ready(&ready_path, &mut gateway.child).listen;
        Venue {
            dir,
            ca,
            client_one,
            client_two,
            gateway,
            addr,
        }
    }

    /// A TLS connection presenting `credentials` (or no certificate), trusting the venue's CA.
    fn connect(&self, credentials: Option<&Credentials>) -> FixClient<TlsStream> {
        FixClient::new(tls_connect(self.addr, &self.ca.pem, credentials))
    }

    /// Polls the gateway's log for `line`, for at most `within`.
    fn wait_for_log(&self, line: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.gateway.stderr().contains(line) {
            assert!(
                Instant::now() < deadline,
                "the gateway never logged {line:?}:\n{}",
                self.gateway.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A rustls client connection to the venue, verifying its certificate for `localhost`.
fn tls_connect(addr: SocketAddr, ca_pem: &str, credentials: Option<&Credentials>) -> TlsStream {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA pem"))
        .expect("CA");
    // The provider the gateway uses (see gateway::tls).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match credentials {
        None => builder.with_no_client_auth(),
        Some(credentials) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(credentials.cert_pem.as_bytes()).expect("pem")],
                PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes()).expect("key pem"),
            )
            .expect("client auth"),
    };
    let name = ServerName::try_from("localhost").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    TlsStream::new(connection, tcp)
}

/// What a read from the gateway gave.
#[derive(Debug)]
enum Got {
    /// A whole FIX message.
    Message(Message),
    /// The connection ended (EOF, reset, or a TLS alert), with why.
    Closed(String),
}

/// A byte stream whose reads can time out.
trait Timed: Read + Write {
    fn set_read_timeout(&mut self, timeout: Duration);
}

impl Timed for TlsStream {
    fn set_read_timeout(&mut self, timeout: Duration) {
        self.sock.set_read_timeout(Some(timeout)).expect("timeout");
    }
}

impl Timed for TcpStream {
    fn set_read_timeout(&mut self, timeout: Duration) {
        TcpStream::set_read_timeout(self, Some(timeout)).expect("timeout");
    }
}

/// A FIX initiator over any stream: just enough to log on and exchange a TestRequest.
struct FixClient<S> {
    stream: S,
    decoder: Decoder,
    encoder: Encoder,
    buf: Vec<u8>,
    seq_num_next_out: u64,
    sender: String,
}

impl<S: Timed> FixClient<S> {
    fn new(stream: S) -> FixClient<S> {
        FixClient {
            stream,
            decoder: Decoder::new(64 * 1024),
            encoder: Encoder::new("FIX.4.4"),
            buf: Vec::new(),
            seq_num_next_out: 1,
            sender: String::new(),
        }
    }

    /// Sends a message; a write the gateway already refused is left for the next read to see.
    fn send(&mut self, msg_type: &[u8], body: impl FnOnce(&mut Encoder)) {
        let bytes = fix_message(
            &mut self.encoder,
            msg_type,
            &self.sender,
            self.seq_num_next_out,
            body,
        );
        self.seq_num_next_out += 1;
        let _ = self.stream.write_all(&bytes);
        let _ = self.stream.flush();
    }

    /// Sends Logon as `sender` and returns what came back.
    fn logon(&mut self, sender: &str) -> Got {
        self.sender = sender.to_owned();
        self.send(b"A", |e| {
            e.uint(98, 0).uint(108, 30);
        });
        self.next(WAIT)
    }

    /// The next message, or the close; fails the test if neither comes within `within`.
    fn next(&mut self, within: Duration) -> Got {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 4096];
        loop {
            match self.decoder.frame(&self.buf) {
                Frame::Complete(len) => {
                    let message = Message::parse(&self.buf[..len]).expect("a FIX message");
                    self.buf.drain(..len);
                    return Got::Message(message);
                }
                // Not FIX: a TLS alert sent to a plaintext client. Not a message, so skipped.
                Frame::Garbled { skip, .. } => {
                    self.buf.drain(..skip.max(1).min(self.buf.len()));
                    continue;
                }
                Frame::Incomplete => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "nothing from the gateway within {within:?}"
            );
            self.stream
                .set_read_timeout(left.min(Duration::from_millis(500)));
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Closed("end of stream".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => return Got::Closed(error.to_string()),
            }
        }
    }

    /// Asserts the session is alive: a TestRequest is answered with its Heartbeat.
    fn assert_alive(&mut self, id: &str) {
        self.send(b"1", |e| {
            e.str(112, id);
        });
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                Got::Message(m) if m.msg_type() == b"0" && m.get(112) == Some(id.as_bytes()) => {
                    return;
                }
                Got::Message(_) => {}
                Got::Closed(why) => panic!("session closed instead of answering {id}: {why}"),
            }
        }
    }
}

/// A FIX 4.4 message from `sender` to BATON.
fn fix_message(
    encoder: &mut Encoder,
    msg_type: &[u8],
    sender: &str,
    seq: u64,
    body: impl FnOnce(&mut Encoder),
) -> Vec<u8> {
    encoder
        .start(msg_type)
        .str(49, sender)
        .str(56, "BATON")
        .uint(34, seq)
        .timestamp(52, Timestamp::now());
    body(encoder);
    encoder.finish().to_vec()
}

/// Asserts `got` is the gateway's Logon answering ours, as its first message (34=1).
fn assert_logged_on(got: Got, who: &str) {
    match got {
        Got::Message(m) if m.msg_type() == b"A" => {
            assert_eq!(
                m.uint(34).ok(),
                Some(1),
                "{who}: first message from the gateway"
            );
        }
        other => panic!("{who} not logged on: {other:?}"),
    }
}

/// Asserts `got` is a close with nothing said first.
fn assert_refused(got: Got, who: &str) {
    match got {
        Got::Closed(_) => {}
        Got::Message(m) => panic!("{who} should be closed without an answer, got {m:?}"),
    }
}

#[test]
fn counterparties_log_on_over_tls_with_a_certificate_mapped_by_name_or_alternative_name() {
    let venue = Venue::start("");
    let mut one = venue.connect(Some(&venue.client_one));
    assert_logged_on(one.logon("CLIENT1"), "CLIENT1 (mapped by CN)");
    let mut two = venue.connect(Some(&venue.client_two));
    assert_logged_on(two.logon("CLIENT2"), "CLIENT2 (mapped by DNS SAN)");
    one.assert_alive("one");
    two.assert_alive("two");
}

#[test]
fn a_logon_for_a_comp_id_the_certificate_does_not_cover_is_closed_without_an_answer() {
    let venue = Venue::start("");
    let mut wrong = venue.connect(Some(&venue.client_one));
    assert_refused(
        wrong.logon("CLIENT2"),
        "client-one's certificate as CLIENT2",
    );
    venue.wait_for_log("client certificate is not mapped", WAIT);
    // CLIENT2's numbering did not move: its own certificate logs on at 34=1.
    let mut two = venue.connect(Some(&venue.client_two));
    assert_logged_on(two.logon("CLIENT2"), "CLIENT2 after the refusal");
    two.assert_alive("two");
}

#[test]
fn a_certificate_from_another_authority_or_none_at_all_is_refused() {
    let venue = Venue::start("");
    let rogue =
        Authority::new("Rogue CA").issue("client-one", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let mut forged = venue.connect(Some(&rogue));
    assert_refused(
        forged.logon("CLIENT1"),
        "a client-one certificate from another CA",
    );
    let mut anonymous = venue.connect(None);
    assert_refused(anonymous.logon("CLIENT1"), "no client certificate");
    venue.wait_for_log("TLS handshake failed", WAIT);
    let mut one = venue.connect(Some(&venue.client_one));
    assert_logged_on(one.logon("CLIENT1"), "CLIENT1 with its own certificate");
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_refused_and_harms_no_session() {
    let venue = Venue::start("");
    let mut one = venue.connect(Some(&venue.client_one));
    assert_logged_on(one.logon("CLIENT1"), "CLIENT1");
    let mut plain = FixClient::new(TcpStream::connect(venue.addr).expect("connect"));
    assert_refused(plain.logon("CLIENT2"), "a plaintext Logon");
    venue.wait_for_log("TLS handshake failed", WAIT);
    one.assert_alive("after the plaintext client");
    let mut two = venue.connect(Some(&venue.client_two));
    assert_logged_on(two.logon("CLIENT2"), "CLIENT2 after the plaintext client");
}

#[test]
fn a_stalled_handshake_is_closed_at_the_logon_deadline_or_to_make_room() {
    // One pre-logon connection per address: a second one evicts the first.
    let venue = Venue::start("prelogon_connections_per_address_max = 1");
    // A TLS record header announcing a ClientHello that never comes.
    let stall = || {
        let mut tcp = TcpStream::connect(venue.addr).expect("connect");
        tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .expect("write");
        tcp
    };
    let closed_within = |tcp: &mut TcpStream, within: Duration| {
        let deadline = Instant::now() + within;
        let mut byte = [0u8; 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "a stalled handshake still open after {within:?}"
            );
            Timed::set_read_timeout(tcp, left);
            match tcp.read(&mut byte) {
                Ok(0) => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Ok(_) | Err(_) => return,
            }
        }
    };
    let mut slow = stall();
    closed_within(&mut slow, DEADLINE_WAIT);
    venue.wait_for_log("TLS handshake not done before the Logon deadline", WAIT);

    let mut idle = stall();
    let mut one = venue.connect(Some(&venue.client_one));
    assert_logged_on(one.logon("CLIENT1"), "CLIENT1 beside a stalled handshake");
    closed_within(&mut idle, DEADLINE_WAIT);
    venue.wait_for_log("TLS handshake not done; closed to make room", WAIT);
    one.assert_alive("after the eviction");
}

#[test]
fn openssl_s_client_logs_on_as_a_third_party_tls_client() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: openssl is not installed, so there is no third-party TLS client");
        return;
    }
    let venue = Venue::start("");
    let (cert, key) = venue.client_one.write(venue.dir.path(), "client-one");
    let mut client = support::Killed(
        Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-verify_hostname",
                "localhost",
            ])
            .arg("-connect")
            .arg(venue.addr.to_string())
            .arg("-CAfile")
            .arg(venue.dir.path().join("ca.pem"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_client"),
    );
    let logon = fix_message(&mut Encoder::new("FIX.4.4"), b"A", "CLIENT1", 1, |e| {
        e.uint(98, 0).uint(108, 30);
    });
    let mut stdin = client.0.stdin.take().expect("stdin");
    stdin.write_all(&logon).expect("send Logon");
    stdin.flush().expect("flush");
    // Read s_client's stdout on a thread so a silent gateway fails the test instead of hanging it.
    let mut stdout = client.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let decoder = Decoder::new(64 * 1024);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Frame::Complete(len) = decoder.frame(&buf) {
                let _ = tx.send(Message::parse(&buf[..len]).ok());
                return;
            }
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let answer = rx
        .recv_timeout(STARTUP_WAIT)
        .expect("openssl s_client printed no FIX message in time");
    let answer = answer.expect("openssl s_client closed without a FIX message");
    assert_eq!(answer.msg_type(), b"A", "{answer:?}");
    assert_eq!(answer.get(56), Some(&b"CLIENT1"[..]));
    drop(stdin);
}

#[test]
fn a_key_that_does_not_load_stops_the_gateway_at_start_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Authority::new("Venue Test CA");
    let (cert, key) = ca
        .issue("venue", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth)
        .write(dir.path(), "server");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n").expect("write");
    let config = dir.path().join("baton.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\n\n[defaults]\nSenderCompID = \"BATON\"\n\n\
             [[session]]\nTargetCompID = \"CLIENT1\"\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("write config");
    let mut gateway = Logged::spawn(&mut support::gateway_command(&config, dir.path()));
    let status = support::exit_within(&mut gateway.child, STARTUP_WAIT)
        .expect("the gateway should stop at start");
    assert_eq!(
        status.code(),
        Some(i32::from(baton::constants::EXIT_FATAL_STARTUP)),
        "{}",
        gateway.stderr()
    );
    // The reader thread may still be copying the last line: poll for it.
    let deadline = Instant::now() + WAIT;
    let line = loop {
        let stderr = gateway.stderr();
        if let Some(line) = stderr.lines().find(|l| l.starts_with("error:")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no error line: {stderr}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        line.contains("[gateway] tls_key") && line.contains(&key.display().to_string()),
        "{line}"
    );
}
