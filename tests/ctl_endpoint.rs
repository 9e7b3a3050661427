//! The control endpoint over real loopback TCP, with a fake sequencer task answering its
//! commands: what `baton ctl` sees for each kind of answer, and for no answer at all.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use baton::control::api::{
    ControlReply, ControlRequest, EngineRole, EngineStatus, SessionStatus, Status, SwitchReport,
};
use baton::control::client;
use baton::control::endpoint::{self, ControlCommand, ControlError};
use tokio::sync::{mpsc, watch};

/// Generous bound for anything over loopback; tests assert behavior, never speed.
const WAIT: Duration = Duration::from_secs(30);

fn status() -> Status {
    Status {
        sessions: vec![SessionStatus {
            target_comp_id: "CLIENT1".into(),
            logged_on: true,
            seq_num_next_out: 7,
            seq_num_next_in: 5,
        }],
        engines: vec![EngineStatus {
            name: "blue".into(),
            addr: "unix://var/engine-blue.sock".into(),
            build_version: "0.1.0".into(),
            role: EngineRole::Authoritative,
            answered_through: 42,
            lag_inputs: 0,
            lag_us: 0,
            silent_ms: 1,
            executable_sha256: String::new(),
            delivered_inputs: 42,
            sent_through: 42,
            kept_inputs: 0,
        }],
        journal_last_seq: 42,
        delivered_through: 42,
        ..Status::default()
    }
}

fn switched() -> SwitchReport {
    SwitchReport {
        from: "blue".into(),
        to: "green".into(),
        barrier_seq: 42,
        pause_us: 17,
        planned: true,
        rollback: false,
        scope: Default::default(),
    }
}

/// How the fake sequencer answers.
#[derive(Clone, Copy)]
enum Fake {
    /// Status gets a status, Switch a report, Rollback a refusal.
    Answers,
    /// Takes commands and keeps them unanswered.
    Silent,
    /// Takes commands and drops them unanswered.
    Drops,
}

/// A running endpoint on a free loopback port with a fake sequencer behind it.
struct Harness {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    endpoint: tokio::task::JoinHandle<()>,
}

async fn start(fake: Fake, reply_timeout: Option<Duration>) -> Harness {
    let mut control = endpoint::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind loopback");
    if let Some(reply_timeout) = reply_timeout {
        control = control.with_reply_timeout(reply_timeout);
    }
    let addr = control.local_addr();
    let (commands_tx, mut commands_rx) = mpsc::channel::<ControlCommand>(8);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(command) = commands_rx.recv().await {
            let reply = match (fake, &command.request) {
                (Fake::Silent, _) => {
                    held.push(command);
                    continue;
                }
                (Fake::Drops, _) => continue,
                (Fake::Answers, ControlRequest::Status) => ControlReply::Status(status()),
                (Fake::Answers, ControlRequest::Switch { .. }) => {
                    ControlReply::Switched(switched())
                }
                (Fake::Answers, ControlRequest::Rollback { .. }) => ControlReply::Refused {
                    reason: "no switch to roll back".into(),
                },
                (Fake::Answers, _) => ControlReply::Refused {
                    reason: "not handled by this fake".into(),
                },
            };
            let _ = command.reply.send(reply);
        }
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let endpoint = tokio::spawn(control.run(commands_tx, shutdown_rx));
    Harness {
        addr,
        shutdown,
        endpoint,
    }
}

/// `client::request` from a blocking thread, as `baton ctl` calls it.
async fn ask(addr: SocketAddr, request: ControlRequest) -> Result<ControlReply, ControlError> {
    tokio::task::spawn_blocking(move || client::request(addr, &request, WAIT))
        .await
        .expect("client thread")
}

/// A raw line-oriented connection, for what `baton ctl` never sends.
struct Raw {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let writer = TcpStream::connect(addr).expect("connect");
        writer.set_read_timeout(Some(WAIT)).expect("timeout");
        let reader = BufReader::new(writer.try_clone().expect("clone"));
        Raw { writer, reader }
    }

    fn exchange(&mut self, line: &[u8]) -> ControlReply {
        self.writer.write_all(line).expect("write");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("read");
        assert!(reply.ends_with('\n'), "one whole line: {reply:?}");
        serde_json::from_str(&reply).expect("a control reply")
    }
}

async fn raw_exchanges(addr: SocketAddr, lines: Vec<Vec<u8>>) -> Vec<ControlReply> {
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(addr);
        lines.iter().map(|line| raw.exchange(line)).collect()
    })
    .await
    .expect("client thread")
}

fn refusal(reply: &ControlReply) -> &str {
    match reply {
        ControlReply::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn status_round_trips() {
    let harness = start(Fake::Answers, None).await;
    let reply = ask(harness.addr, ControlRequest::Status)
        .await
        .expect("reply");
    assert_eq!(reply, ControlReply::Status(status()));
}

#[tokio::test]
async fn switch_gets_the_report() {
    let harness = start(Fake::Answers, None).await;
    let reply = ask(harness.addr, ControlRequest::switch("test"))
        .await
        .expect("reply");
    assert_eq!(reply, ControlReply::Switched(switched()));
}

#[tokio::test]
async fn refusal_reaches_the_client_with_its_reason() {
    let harness = start(Fake::Answers, None).await;
    let reply = ask(harness.addr, ControlRequest::rollback("test"))
        .await
        .expect("reply");
    assert_eq!(refusal(&reply), "no switch to roll back");
}

#[tokio::test]
async fn malformed_lines_are_refused_and_the_connection_keeps_working() {
    let harness = start(Fake::Answers, None).await;
    let too_long = {
        let mut line = vec![b'x'; baton::constants::CONTROL_REQUEST_LINE_BYTES_MAX + 1];
        line.push(b'\n');
        line
    };
    let replies = raw_exchanges(
        harness.addr,
        vec![
            b"{\"command\":\"status\"}\n".to_vec(),
            b"not json\n".to_vec(),
            b"{\"command\":\"explode\"}\n".to_vec(),
            b"\xff\xfe\n".to_vec(),
            too_long,
            // Blank lines are skipped; a CRLF line end (telnet) is accepted.
            b"\n{\"command\":\"switch\"}\r\n".to_vec(),
        ],
    )
    .await;
    assert_eq!(replies[0], ControlReply::Status(status()));
    assert!(refusal(&replies[1]).starts_with("malformed request"));
    assert!(refusal(&replies[2]).contains("explode"), "{replies:?}");
    assert!(refusal(&replies[3]).starts_with("malformed request"));
    assert!(refusal(&replies[4]).contains("longer than"), "{replies:?}");
    assert_eq!(replies[5], ControlReply::Switched(switched()));
}

#[tokio::test]
async fn non_loopback_addresses_are_refused_at_bind() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:9879"] {
        let addr: SocketAddr = addr.parse().expect("addr");
        match endpoint::bind(addr).await {
            Err(ControlError::NotLoopback { addr: refused }) => assert_eq!(refused, addr),
            other => panic!("{addr} must be refused as not loopback, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_sequencer_that_never_answers_gives_a_refusal_after_the_timeout() {
    let harness = start(Fake::Silent, Some(Duration::from_millis(200))).await;
    let reply = ask(harness.addr, ControlRequest::switch("test"))
        .await
        .expect("reply");
    let reason = refusal(&reply);
    assert!(reason.contains("within 200 ms"), "{reason}");
    assert!(
        reason.contains("status"),
        "tells the operator to check: {reason}"
    );
}

#[tokio::test]
async fn a_sequencer_that_drops_the_command_gives_a_refusal() {
    let harness = start(Fake::Drops, None).await;
    let reply = ask(harness.addr, ControlRequest::switch("test"))
        .await
        .expect("reply");
    assert!(refusal(&reply).contains("stopped before answering"));
}

#[tokio::test]
async fn a_gone_sequencer_gives_a_refusal() {
    let control = endpoint::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind loopback");
    let addr = control.local_addr();
    let (commands_tx, commands_rx) = mpsc::channel::<ControlCommand>(1);
    drop(commands_rx);
    let (_shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(control.run(commands_tx, shutdown_rx));
    let reply = ask(addr, ControlRequest::Status).await.expect("reply");
    assert!(refusal(&reply).contains("not running"));
}

#[tokio::test]
async fn shutdown_stops_the_endpoint_and_closes_connections() {
    let harness = start(Fake::Answers, None).await;
    // An idle connection must not keep the endpoint alive.
    let (answered_tx, answered) = tokio::sync::oneshot::channel();
    let idle = tokio::task::spawn_blocking({
        let addr = harness.addr;
        move || {
            let mut raw = Raw::connect(addr);
            assert_eq!(
                raw.exchange(b"{\"command\":\"status\"}\n"),
                ControlReply::Status(status())
            );
            let _ = answered_tx.send(());
            let mut rest = String::new();
            raw.reader.read_line(&mut rest).expect("read until closed")
        }
    });
    // The connection was served once and now sits idle when the shutdown comes.
    tokio::time::timeout(WAIT, answered)
        .await
        .expect("the idle connection's first request answered")
        .expect("client thread");
    harness.shutdown.send(true).expect("endpoint listening");
    tokio::time::timeout(WAIT, harness.endpoint)
        .await
        .expect("endpoint stops")
        .expect("endpoint task");
    let read_after_close = tokio::time::timeout(WAIT, idle)
        .await
        .expect("connection closed")
        .expect("client thread");
    assert_eq!(read_after_close, 0, "EOF once the endpoint is gone");
    match ask(harness.addr, ControlRequest::Status).await {
        Err(ControlError::Connect { .. }) => {}
        other => panic!("nothing listens after shutdown, got {other:?}"),
    }
}

#[tokio::test]
async fn client_reports_a_missing_gateway_and_a_silent_peer() {
    // Nothing listens on a port held bound without listening: no other test can take it, as
    // it could a port bound and released.
    let held = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    held.bind("127.0.0.1:0".parse().expect("loopback"))
        .expect("bind loopback port 0");
    let addr = held.local_addr().expect("bound address");
    match ask(addr, ControlRequest::Status).await {
        Err(ControlError::Connect { addr: tried, .. }) => assert_eq!(tried, addr),
        other => panic!("expected a connect error, got {other:?}"),
    }
    // Something that accepts and never answers: the client's own timeout fires.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let result = tokio::task::spawn_blocking(move || {
        client::request(addr, &ControlRequest::Status, Duration::from_millis(200))
    })
    .await
    .expect("client thread");
    drop(listener);
    match result {
        Err(ControlError::Timeout { timeout_ms, .. }) => assert_eq!(timeout_ms, 200),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// Opens `count` connections to `addr` that never send a byte: enough to fill the endpoint's
/// table when it admits them.
fn silent_connections(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect()
}

#[tokio::test]
async fn a_full_table_of_silent_connections_never_keeps_status_or_rollback_out() {
    let harness = start(Fake::Answers, None).await;
    let addr = harness.addr;
    // Every slot held by a connection that never says anything, opened again after each command
    // so the table is full whenever the next one arrives.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.extend(silent_connections(
            addr,
            baton::constants::CONTROL_CONNECTIONS_MAX,
        ));
        let status_reply = ask(addr, ControlRequest::Status).await.expect("status");
        assert_eq!(status_reply, ControlReply::Status(status()));
        let rollback = ask(
            addr,
            ControlRequest::Rollback {
                operator: Some("ops".into()),
                change: None,
            },
        )
        .await
        .expect("rollback answered");
        assert_eq!(refusal(&rollback), "no switch to roll back");
    }
    drop(held);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_soon() {
    let harness = start(Fake::Answers, None).await;
    let closed = tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(harness.addr).expect("connect");
        // Far beyond the first-request bound, far below the idle bound between requests: EOF
        // inside it shows the silent connection was dropped for saying nothing.
        let bound = Duration::from_millis(baton::constants::CONTROL_IDLE_TIMEOUT_MS / 2);
        silent.set_read_timeout(Some(bound)).expect("timeout");
        let mut byte = [0u8; 1];
        std::io::Read::read(&mut silent, &mut byte)
    })
    .await
    .expect("client thread");
    match closed {
        Ok(0) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the endpoint to close a silent connection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_table_of_silent_connections_never_keeps_a_scrape_out() {
    let metrics = baton::control::metrics::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind loopback");
    let addr = metrics.local_addr();
    let (commands_tx, mut commands_rx) = mpsc::channel::<ControlCommand>(8);
    tokio::spawn(async move {
        while let Some(command) = commands_rx.recv().await {
            let _ = command.reply.send(ControlReply::Status(status()));
        }
    });
    let (_shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(metrics.run(commands_tx, shutdown_rx));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.extend(silent_connections(
            addr,
            baton::constants::METRICS_CONNECTIONS_MAX,
        ));
        let response = tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(WAIT)).expect("timeout");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .expect("write");
            let mut response = String::new();
            std::io::Read::read_to_string(&mut stream, &mut response).map(|_| response)
        })
        .await
        .expect("client thread")
        .expect("a response before the connection closes");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "scrape answered: {response:.200}"
        );
    }
    drop(held);
}
