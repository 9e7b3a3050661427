//! TLS counterparties across planned gateway upgrades and a gateway kill, under `baton up`: real
//! processes, real TCP, real rustls clients (one on TLS 1.3, one on TLS 1.2). A planned upgrade
//! hands each connection's keys to the new gateway, which goes on with its own record layer: the
//! clients keep their connection and their TLS session, trade on, and see no gap and no resend,
//! across two upgrades (the second continues what the first continued). A SIGKILL takes the keys
//! with it: the connections are closed (never read as plain TCP), and the clients log on again.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::fix::codec::{Decoder, Encoder, Frame, Message};
use baton::fix::time::Timestamp;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::{Killed, READY_FILE_ENV, ready_file, wait_ready};

/// Bound on everything that waits for the venue while a gateway starts or restarts on a loaded
/// machine.
const RECOVERY_WAIT: Duration = Duration::from_secs(60);

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// What [`Client::next`] calls a close_notify followed by end of stream.
const CLEAN_CLOSE: &str = "close_notify";

/// Writes a CA, the venue's certificate and a `baton up` config with TLS and sessions CLIENT1
/// and CLIENT2; returns the config's path and the CA's PEM.
fn write_config(dir: &Path) -> (PathBuf, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Venue Test CA");
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"{}\"\n\
         journal_dir = \"{}\"\nengines = [\"unix://{}\"]\nhold_sockets_max_ms = 60000\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\n\n\
         [defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n\n\
         [[session]]\nTargetCompID = \"CLIENT1\"\n\n[[session]]\nTargetCompID = \"CLIENT2\"\n\n{}",
        path("store"),
        path("journal"),
        path("engine.sock"),
        path("server.pem"),
        path("server.key"),
        support::control::shared_account_operators(),
    );
    let config_path = dir.join("baton.toml");
    std::fs::write(&config_path, config).unwrap();
    (config_path, ca_pem)
}

/// A rustls client connection to the venue on `version`, verifying its certificate.
fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> TlsStream {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    TlsStream::new(connection, TcpStream::connect(addr).expect("connect"))
}

/// How a read ended when the connection did (`why` is for the failure message).
#[derive(Debug)]
#[allow(dead_code)]
struct Closed {
    kind: std::io::ErrorKind,
    why: String,
}

/// A FIX initiator over TLS that checks, for every message it receives, that the gateway's
/// numbering has no gap and nothing is resent.
struct Client {
    name: String,
    stream: TlsStream,
    decoder: Decoder,
    encoder: Encoder,
    buf: Vec<u8>,
    seq_num_next_out: u64,
    seq_num_next_in: u64,
    /// ResendRequests, PossDup messages and gaps seen from the gateway.
    resends: u64,
    gaps: u64,
    /// Orders sent and which of them are acknowledged (ExecType 0).
    acknowledged: std::collections::BTreeMap<String, u32>,
    local_port: u16,
    version: &'static rustls::SupportedProtocolVersion,
}

impl Client {
    fn log_on(
        addr: SocketAddr,
        ca_pem: &str,
        name: &str,
        version: &'static rustls::SupportedProtocolVersion,
        seq_num_next_out: u64,
    ) -> Client {
        let stream = tls_connect(addr, ca_pem, version);
        let local_port = stream.sock.local_addr().unwrap().port();
        let mut client = Client {
            name: name.to_owned(),
            stream,
            decoder: Decoder::new(64 * 1024),
            encoder: Encoder::new("FIX.4.4"),
            buf: Vec::new(),
            seq_num_next_out,
            seq_num_next_in: 0,
            resends: 0,
            gaps: 0,
            acknowledged: Default::default(),
            local_port,
            version,
        };
        client.send(b"A", |e| {
            e.uint(98, 0).uint(108, 30);
        });
        let logon = client.next().expect("logon answered");
        assert_eq!(logon.msg_type(), b"A", "{name}: {logon:?}");
        client.seq_num_next_in = logon.uint(34).unwrap() + 1;
        client
    }

    fn send(&mut self, msg_type: &[u8], body: impl FnOnce(&mut Encoder)) {
        self.encoder
            .start(msg_type)
            .str(49, &self.name)
            .str(56, "BATON")
            .uint(34, self.seq_num_next_out)
            .timestamp(52, Timestamp::now());
        body(&mut self.encoder);
        let bytes = self.encoder.finish().to_vec();
        self.seq_num_next_out += 1;
        self.stream.write_all(&bytes).expect("write: disconnected");
        self.stream.flush().expect("flush: disconnected");
    }

    /// The next message, answering TestRequests and ResendRequests on the way; `Err` when the
    /// connection ends.
    fn next(&mut self) -> Result<Message, Closed> {
        let deadline = Instant::now() + RECOVERY_WAIT;
        let mut chunk = [0u8; 4096];
        loop {
            match self.decoder.frame(&self.buf) {
                Frame::Complete(len) => {
                    let message = Message::parse(&self.buf[..len]).expect("a FIX message");
                    self.buf.drain(..len);
                    self.check(&message);
                    return Ok(message);
                }
                Frame::Garbled { skip, reason } => {
                    panic!(
                        "{}: garbled bytes from the gateway ({reason:?}, {skip})",
                        self.name
                    )
                }
                Frame::Incomplete => {}
            }
            assert!(
                Instant::now() < deadline,
                "{}: nothing from the gateway",
                self.name
            );
            self.stream
                .sock
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            match self.stream.read(&mut chunk) {
                // rustls reads 0 only after the peer's close_notify: a clean close.
                Ok(0) => {
                    return Err(Closed {
                        kind: std::io::ErrorKind::UnexpectedEof,
                        why: CLEAN_CLOSE.into(),
                    });
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => {
                    return Err(Closed {
                        kind: error.kind(),
                        why: error.to_string(),
                    });
                }
            }
        }
    }

    /// Numbering: each message exactly the next, none marked PossDup, no ResendRequest.
    fn check(&mut self, message: &Message) {
        let seq = message.uint(34).expect("MsgSeqNum");
        if self.seq_num_next_in != 0 {
            if seq != self.seq_num_next_in {
                self.gaps += 1;
            }
            self.seq_num_next_in = seq + 1;
        }
        if message.get(43) == Some(b"Y") || message.msg_type() == b"2" {
            self.resends += 1;
        }
    }

    /// Sends an order and reads until it is acknowledged; an order refused because no engine is
    /// attached yet (a BusinessMessageReject) is sent again.
    fn trade(&mut self, cl_ord_id: &str) {
        let deadline = Instant::now() + RECOVERY_WAIT;
        'again: loop {
            assert!(
                Instant::now() < deadline,
                "{}: {cl_ord_id} never acknowledged",
                self.name
            );
            self.send(b"D", |e| {
                e.str(11, cl_ord_id)
                    .str(55, "AAPL")
                    .char(54, b'1')
                    .str(60, "20261123-12:00:00")
                    .uint(38, 1)
                    .char(40, b'2')
                    .str(44, "10");
            });
            loop {
                let message = self
                    .next()
                    .unwrap_or_else(|closed| panic!("{}: disconnected: {closed:?}", self.name));
                match message.msg_type() {
                    b"8" if message.get(11) == Some(cl_ord_id.as_bytes()) => {
                        if message.get(150) == Some(b"0") {
                            *self.acknowledged.entry(cl_ord_id.to_owned()).or_default() += 1;
                        }
                        return;
                    }
                    b"j" => {
                        std::thread::sleep(Duration::from_millis(200));
                        continue 'again;
                    }
                    b"1" => {
                        let id = message.get(112).unwrap_or_default().to_vec();
                        self.send(b"0", |e| {
                            e.bytes(112, &id);
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

fn start(dir: &Path, config: &Path) -> (Killed, SocketAddr, PathBuf) {
    let ready_path = ready_file(dir);
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["up", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .env(READY_FILE_ENV, &ready_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn baton up");
    let addr = wait_ready(&ready_path, &mut up).listen;
    (Killed(up), addr, ready_path)
}

fn control_of(ready_path: &Path) -> SocketAddr {
    baton::control::ready::read(ready_path).unwrap().control
}

/// The pid of the gateway `baton up` (pid `up`) runs now, other than `not`.
fn gateway_pid(up: u32, not: Option<u32>) -> u32 {
    support::gateway_pid_under(up, not, RECOVERY_WAIT)
}

/// Runs `baton ctl upgrade-gateway` while the clients trade; returns its output.
fn upgrade_under_trading(
    config: &Path,
    ready_path: &Path,
    change: &str,
    clients: &mut [Client],
    round: usize,
) -> String {
    let mut ctl = support::control::spawn_upgrade_gateway(config, ready_path, change);
    let deadline = Instant::now() + RECOVERY_WAIT;
    let mut batch = 0;
    while ctl.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "upgrade-gateway hangs");
        for client in clients.iter_mut() {
            client.trade(&format!("U{round}-{batch}-{}", client.name));
        }
        batch += 1;
    }
    let output = ctl.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "upgrade {round}: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn tls_counterparties_stay_connected_across_two_planned_upgrades_and_are_closed_by_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (config, ca_pem) = write_config(dir.path());
    let (up, addr, ready_path) = start(dir.path(), &config);
    let up_pid = up.0.id();
    let mut clients = vec![
        Client::log_on(addr, &ca_pem, "CLIENT1", &rustls::version::TLS13, 1),
        Client::log_on(addr, &ca_pem, "CLIENT2", &rustls::version::TLS12, 1),
    ];
    for client in &mut clients {
        client.trade(&format!("WARM-{}", client.name));
    }
    let builds = [
        support::other_build(dir.path(), "tls-a"),
        support::other_build(dir.path(), "tls-b"),
    ];
    let mut previous = gateway_pid(up_pid, None);
    let mut pauses = Vec::new();
    for (round, build) in builds.iter().enumerate() {
        let change = support::control::approved_change(control_of(&ready_path), build);
        let printed = upgrade_under_trading(&config, &ready_path, &change, &mut clients, round);
        pauses.push(printed.trim().to_owned());
        let now = gateway_pid(up_pid, Some(previous));
        assert_ne!(now, previous, "upgrade {round}: the same gateway process");
        previous = now;
        let status = support::control::status(control_of(&ready_path));
        let upgrade = status.gateway_upgrade.expect("the upgrade in status");
        assert_eq!(upgrade.change, change);
        assert_eq!(upgrade.sessions, 2, "{upgrade:?}");
        assert_eq!(upgrade.tls_closed, 0, "{upgrade:?}");
        for client in &mut clients {
            client.trade(&format!("AFTER{round}-{}", client.name));
        }
    }
    for client in &clients {
        assert_eq!(
            client.stream.sock.local_addr().unwrap().port(),
            client.local_port,
            "{}: a new connection",
            client.name
        );
        assert_eq!(
            (client.gaps, client.resends),
            (0, 0),
            "{}: a gap or a resend",
            client.name
        );
        assert!(client.acknowledged.len() > 2, "{}", client.name);
        assert!(
            client.acknowledged.values().all(|n| *n == 1),
            "{}: not acknowledged exactly once: {:?}",
            client.name,
            client.acknowledged
        );
    }
    let status = support::control::status(control_of(&ready_path));
    for (session, client) in status.sessions.iter().zip(&clients) {
        assert!(session.logged_on, "{session:?}");
        assert_eq!(session.seq_num_next_in, client.seq_num_next_out);
        assert_eq!(session.seq_num_next_out, client.seq_num_next_in);
    }

    // A TLS 1.3 KeyUpdate on a continued connection: the gateway cannot rekey it, so it closes
    // it cleanly (close_notify), and the counterparty logs on again.
    let updating = &mut clients[0];
    updating
        .stream
        .conn
        .refresh_traffic_keys()
        .expect("key update");
    updating.stream.flush().expect("send the KeyUpdate");
    let closed = loop {
        match updating.next() {
            Ok(message) => assert_ne!(message.msg_type(), b"A"),
            Err(closed) => break closed,
        }
    };
    assert_eq!(closed.why, CLEAN_CLOSE, "{closed:?}");
    let (name, version, seq) = (
        updating.name.clone(),
        updating.version,
        updating.seq_num_next_out,
    );
    *updating = Client::log_on(addr, &ca_pem, &name, version, seq);
    updating.trade("AFTER-KEY-UPDATE");

    // A SIGKILL: the keys die with the process, so the connections are closed, not taken back.
    // SAFETY: kill(2) on a process this test's `baton up` started.
    unsafe {
        libc::kill(previous as i32, libc::SIGKILL);
    }
    for client in &mut clients {
        let closed = loop {
            match client.next() {
                Ok(message) => assert_ne!(message.msg_type(), b"A", "{}", client.name),
                Err(closed) => break closed,
            }
        };
        // Plain FIX bytes read as TLS would be a corrupt record (InvalidData) at the client.
        assert_ne!(
            closed.kind,
            std::io::ErrorKind::InvalidData,
            "{}: {closed:?}",
            client.name
        );
    }
    let restarted = gateway_pid(up_pid, Some(previous));
    assert_ne!(restarted, previous);
    for client in &mut clients {
        let mut again = Client::log_on(
            addr,
            &ca_pem,
            &client.name,
            client.version,
            client.seq_num_next_out,
        );
        again.trade(&format!("RECONNECTED-{}", client.name));
        assert_ne!(again.local_port, client.local_port);
    }
    eprintln!("TLS hand-over: upgrade outputs {pauses:?}");
    drop(up);
}
