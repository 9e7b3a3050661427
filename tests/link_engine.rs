//! The engine link over real sockets: a matching engine served on a thread, the tokio client on
//! the other end, over TCP and over a Unix socket. Crossing orders from two sessions, snapshot
//! and restore into a second engine, identical outputs and digests from both, reconnects that
//! keep the engine's state, resent inputs that are never applied twice, and protocol errors that
//! close the link with a reason while the engine keeps serving.

mod support_engine;

use std::io::{Read, Write};
use std::time::Duration;

use baton::engine::{
    ClOrdId, Digest, Engine, EngineConfig, ExecType, FrozenState, Input, MatchingEngine, NewOrder,
    OrdType, Output, Parties, Price, Qty, Report, Request, SNAPSHOT_FORMAT_DEFAULT,
    SNAPSHOT_FORMAT_VERSIONS, Side, SnapshotError, Symbol, TimeInForce,
};
use baton::fix::time::Timestamp;
use baton::link::{
    DigestReport, EngineLink, Frame, FrameDecoder, Hello, LINK_PROTOCOL_VERSION, LinkAddr,
    LinkError, LinkSecret, Outputs, Restored, ServeConfig, Snapshot, connect,
    connect_authenticated, encode,
};
use support_engine::RunningEngine;

/// Generous bound on any single wait, so a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(30);

/// The reference engine served under `name`.
fn start(addr: &LinkAddr, name: &str, config: ServeConfig) -> RunningEngine {
    let engine = MatchingEngine::new(&EngineConfig::default()).unwrap();
    let config = ServeConfig {
        engine_name: name.to_owned(),
        ..config
    };
    RunningEngine::serve(engine, addr, config)
}

fn test_config() -> ServeConfig {
    ServeConfig {
        heartbeat_interval: Duration::from_millis(50),
        ..ServeConfig::default()
    }
}

fn limit(seq: u64, session: u32, cl_ord_id: &str, side: Side, price: i64, qty: u64) -> Input {
    Input {
        seq,
        time: Timestamp::from_millis(1_700_000_000_000 + seq),
        session,
        request: Request::New(NewOrder {
            cl_ord_id: ClOrdId::try_from_bytes(cl_ord_id.as_bytes()).unwrap(),
            symbol: Symbol::try_from_bytes(b"AAPL").unwrap(),
            side,
            ord_type: OrdType::Limit,
            price: Some(Price(price * Price::SCALE)),
            qty: Qty(qty),
            time_in_force: TimeInForce::Day,
            parties: Parties::NONE,
        }),
    }
}

async fn connect_ok(addr: &LinkAddr) -> (EngineLink, Hello) {
    tokio::time::timeout(WAIT, connect(addr))
        .await
        .unwrap()
        .unwrap()
}

/// The next frame that is not a heartbeat (engines heartbeat whenever they are idle).
async fn recv(link: &mut EngineLink) -> Frame {
    recv_result(link).await.unwrap()
}

/// Bounded as a whole, not per frame: an engine that only ever heartbeats fails the test
/// after `WAIT` instead of keeping it waiting forever.
async fn recv_result(link: &mut EngineLink) -> Result<Frame, LinkError> {
    let skip_heartbeats = async {
        loop {
            match link.recv().await? {
                Frame::Heartbeat(_) => continue,
                frame => return Ok(frame),
            }
        }
    };
    tokio::time::timeout(WAIT, skip_heartbeats)
        .await
        .unwrap_or_else(|_| panic!("no frame but heartbeats within {WAIT:?}"))
}

async fn recv_outputs(link: &mut EngineLink) -> Outputs {
    match recv(link).await {
        Frame::Outputs(outputs) => outputs,
        other => panic!("expected Outputs, got {other:?}"),
    }
}

async fn digest(link: &mut EngineLink) -> DigestReport {
    link.request_digest().await.unwrap();
    match recv(link).await {
        Frame::Digest(report) => report,
        other => panic!("expected Digest, got {other:?}"),
    }
}

fn exec_types_by_session(outputs: &[Output]) -> Vec<(u32, ExecType)> {
    outputs
        .iter()
        .map(|output| match &output.report {
            Report::Execution(report) => (output.session, report.exec_type),
            Report::CancelReject(_) => (output.session, ExecType::Rejected),
        })
        .collect()
}

fn assert_keyed(outputs: &Outputs, input_seq: u64) {
    assert_eq!(outputs.input_seq, input_seq);
    for (index, output) in outputs.outputs.iter().enumerate() {
        assert_eq!((output.input_seq, output.index), (input_seq, index as u32));
    }
}

fn wire(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode(frame, &mut bytes).unwrap();
    bytes
}

/// The whole conversation, on whatever transport `a` and `b` name.
async fn round_trip(a: LinkAddr, b: LinkAddr) {
    let blue = start(&a, "blue", test_config());
    let green = start(&b, "green", test_config());

    // Handshake: a fresh engine stands at seq 0.
    let (mut link, hello) = connect_ok(&blue.addr).await;
    assert_eq!(hello.protocol_version, LINK_PROTOCOL_VERSION);
    assert_eq!(hello.engine_name, "blue");
    assert_eq!(hello.last_input_seq, 0);
    assert_eq!(hello.snapshot_formats, SNAPSHOT_FORMAT_VERSIONS);
    assert!(hello.build_version.starts_with("baton-matching-engine/"));

    // Two sessions cross; three inputs in one write.
    let inputs = [
        limit(1, 1, "s1-a", Side::Sell, 100, 100),
        limit(2, 2, "s2-a", Side::Buy, 100, 60),
        limit(3, 1, "s1-b", Side::Sell, 101, 50),
    ];
    link.send_inputs(&inputs).await.unwrap();
    let first = recv_outputs(&mut link).await;
    assert_keyed(&first, 1);
    assert_eq!(exec_types_by_session(&first.outputs), [(1, ExecType::New)]);
    let second = recv_outputs(&mut link).await;
    assert_keyed(&second, 2);
    let mut kinds = exec_types_by_session(&second.outputs);
    kinds.sort_by_key(|&(session, kind)| (session, kind as u8));
    assert_eq!(
        kinds,
        [
            (1, ExecType::Trade),
            (2, ExecType::New),
            (2, ExecType::Trade)
        ],
        "ack to the aggressor and a fill to each side"
    );
    let third = recv_outputs(&mut link).await;
    assert_keyed(&third, 3);
    assert_eq!(exec_types_by_session(&third.outputs), [(1, ExecType::New)]);

    // Snapshot, checked against the digest the engine reports.
    link.request_snapshot().await.unwrap();
    let snapshot: Snapshot = match recv(&mut link).await {
        Frame::Snapshot(snapshot) => snapshot,
        other => panic!("expected Snapshot, got {other:?}"),
    };
    assert_eq!(snapshot.at_input_seq, 3);
    assert_eq!(snapshot.format_version, SNAPSHOT_FORMAT_DEFAULT);
    let blue_digest = digest(&mut link).await;
    assert_eq!(
        blue_digest,
        DigestReport {
            at_input_seq: 3,
            digest: snapshot.digest
        }
    );

    // Restore it into green.
    let (mut standby, green_hello) = connect_ok(&green.addr).await;
    assert_eq!(green_hello.engine_name, "green");
    assert_eq!(green_hello.last_input_seq, 0);
    standby.restore(&snapshot.bytes).await.unwrap();
    assert_eq!(
        recv(&mut standby).await,
        Frame::Restored(Restored {
            at_input_seq: 3,
            digest: snapshot.digest
        })
    );

    // The same next input to both: the same outputs and digests, byte for byte.
    let fourth = limit(4, 2, "s2-b", Side::Buy, 101, 80);
    link.send_input(&fourth).await.unwrap();
    standby.send_input(&fourth).await.unwrap();
    let blue_out = recv(&mut link).await;
    let green_out = recv(&mut standby).await;
    assert!(matches!(&blue_out, Frame::Outputs(outputs) if outputs.input_seq == 4));
    assert_eq!(wire(&blue_out), wire(&green_out));
    let blue_digest = digest(&mut link).await;
    assert_eq!(blue_digest, digest(&mut standby).await);
    assert_eq!(blue_digest.at_input_seq, 4);

    // A clean disconnect and a reconnect: the engine kept its state.
    link.close("test reconnects").await.unwrap();
    let (mut link, hello) = connect_ok(&blue.addr).await;
    assert_eq!(hello.last_input_seq, 4);
    assert_eq!(digest(&mut link).await, blue_digest);

    // Resending an applied input gives back the first outputs, and applies nothing.
    link.send_input(&fourth).await.unwrap();
    match recv(&mut link).await {
        Frame::Replayed(replayed) => assert_eq!(wire(&Frame::Outputs(replayed)), wire(&blue_out)),
        other => panic!("expected Replayed, got {other:?}"),
    }
    assert_eq!(digest(&mut link).await, blue_digest);

    // A connection cut while an input is in flight: the input was applied, and resending it
    // after reconnecting recovers its outputs.
    let fifth = limit(5, 1, "s1-c", Side::Sell, 99, 10);
    link.send_input(&fifth).await.unwrap();
    drop(link);
    let (mut link, hello) = connect_ok(&blue.addr).await;
    assert_eq!(hello.last_input_seq, 5);
    link.send_inputs(&[fifth.clone(), limit(6, 2, "s2-c", Side::Buy, 99, 10)])
        .await
        .unwrap();
    let replayed = match recv(&mut link).await {
        Frame::Replayed(outputs) => outputs,
        other => panic!("expected Replayed, got {other:?}"),
    };
    assert_keyed(&replayed, 5);
    assert!(!replayed.outputs.is_empty());
    let sixth = recv_outputs(&mut link).await;
    assert_keyed(&sixth, 6);
    assert!(
        exec_types_by_session(&sixth.outputs).contains(&(1, ExecType::Trade)),
        "the resting sell of input 5 is in the book: {sixth:?}"
    );

    // A gap closes the link with the reason; the engine is untouched and serves the next one.
    link.send_input(&limit(9, 1, "s1-d", Side::Sell, 100, 1))
        .await
        .unwrap();
    match recv_result(&mut link).await {
        Err(LinkError::Closed { reason }) => assert!(reason.contains("skips ahead"), "{reason}"),
        other => panic!("expected Close, got {other:?}"),
    }
    let (mut link, hello) = connect_ok(&blue.addr).await;
    assert_eq!(hello.last_input_seq, 6);
    let before_shutdown = digest(&mut link).await;

    // Shutdown closes the link with a reason and hands the engine back.
    blue.shutdown.trigger();
    match recv_result(&mut link).await {
        Err(LinkError::Closed { reason }) => assert!(reason.contains("shutting down"), "{reason}"),
        other => panic!("expected Close, got {other:?}"),
    }
    let engine = blue.stop();
    assert_eq!(engine.last_input_seq(), 6);
    assert_eq!(engine.digest(), before_shutdown.digest);

    standby.close("done").await.unwrap();
    let engine = green.stop();
    assert_eq!(engine.last_input_seq(), 4);
}

#[tokio::test]
async fn tcp_round_trip() {
    let any_port: LinkAddr = "tcp://127.0.0.1:0".parse().unwrap();
    round_trip(any_port.clone(), any_port).await;
}

/// The round trip over a link whose addresses are socket files (`kind` makes one from a path):
/// the engine's socket file is removed when it stops.
async fn socket_file_round_trip(kind: fn(std::path::PathBuf) -> LinkAddr) {
    let dir = tempfile::tempdir().unwrap();
    let a = kind(dir.path().join("blue.sock"));
    let b = kind(dir.path().join("green.sock"));
    round_trip(a, b).await;
    assert!(
        !dir.path().join("blue.sock").exists(),
        "socket file removed on stop"
    );
}

#[tokio::test]
async fn unix_socket_round_trip() {
    socket_file_round_trip(LinkAddr::Unix).await;
}

#[tokio::test]
async fn shared_memory_round_trip() {
    socket_file_round_trip(LinkAddr::Shm).await;
}

/// Over shared memory the engine's heartbeats still reach an idle gateway (each one wakes a
/// reader asleep on the socket), and a gateway that never answers is still dropped.
#[tokio::test]
async fn an_idle_shared_memory_link_heartbeats_and_drops_a_silent_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        heartbeat_interval: Duration::from_millis(20),
        peer_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let engine = start(&LinkAddr::Shm(dir.path().join("blue.sock")), "blue", config);
    let (mut link, _) = connect_ok(&engine.addr).await;
    for _ in 0..3 {
        let frame = tokio::time::timeout(WAIT, link.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(frame, Frame::Heartbeat(_)), "{frame:?}");
    }
    match recv_result(&mut link).await {
        Err(LinkError::Closed { reason }) => assert!(reason.contains("no frame"), "{reason}"),
        other => panic!("expected Close, got {other:?}"),
    }
    let (link, hello) = connect_ok(&engine.addr).await;
    assert_eq!(hello.last_input_seq, 0);
    link.close("done").await.unwrap();
    engine.stop();
}

/// A message larger than a ring (a 20 MB restore, over 8 MiB rings) goes through shared memory
/// in pieces: the gateway's writer waits for room while the engine reads, and the engine gets
/// the whole message (here refusing it as no snapshot) and serves on.
#[tokio::test]
async fn a_message_larger_than_the_ring_crosses_shared_memory_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(
        &LinkAddr::Shm(dir.path().join("blue.sock")),
        "blue",
        test_config(),
    );
    let (mut link, _) = connect_ok(&engine.addr).await;
    let bytes = vec![0x5a_u8; 20 << 20];
    assert!(bytes.len() > baton::constants::LINK_SHM_RING_BYTES);
    tokio::time::timeout(WAIT, link.restore(&bytes))
        .await
        .expect("the restore is written within the bound")
        .unwrap();
    match recv(&mut link).await {
        Frame::Refused(refused) => {
            assert_eq!(refused.request, baton::link::RefusedRequest::Restore);
            assert!(refused.reason.contains("magic"), "{}", refused.reason);
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    link.send_inputs(&[limit(1, 1, "S-1", Side::Sell, 10, 5)])
        .await
        .unwrap();
    assert_keyed(&recv_outputs(&mut link).await, 1);
    link.close("done").await.unwrap();
    engine.stop();
}

/// Gateway and engine must agree on the transport: either mismatch fails the attach with an
/// error instead of a link that hangs, and the engine serves the next, matching gateway.
#[tokio::test]
async fn a_transport_mismatch_is_refused_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blue.sock");
    let engine = start(&LinkAddr::Unix(path.clone()), "blue", test_config());
    let error = tokio::time::timeout(WAIT, connect(&LinkAddr::Shm(path.clone())))
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.to_string().contains("[link] transport"), "{error}");
    let (link, _) = connect_ok(&engine.addr).await;
    link.close("done").await.unwrap();
    engine.stop();

    let engine = start(&LinkAddr::Shm(path.clone()), "blue", test_config());
    assert!(
        tokio::time::timeout(WAIT, connect(&LinkAddr::Unix(path.clone())))
            .await
            .unwrap()
            .is_err()
    );
    let (mut link, _) = connect_ok(&engine.addr).await;
    link.send_inputs(&[limit(1, 1, "S-1", Side::Sell, 10, 5)])
        .await
        .unwrap();
    assert_keyed(&recv_outputs(&mut link).await, 1);
    link.close("done").await.unwrap();
    engine.stop();
}

#[tokio::test]
async fn the_gateway_sees_the_executable_hash_the_engine_serves_with() {
    let any_port: LinkAddr = "tcp://127.0.0.1:0".parse().unwrap();
    let sha256 = "0123456789abcdef".repeat(4);
    let blue = start(
        &any_port,
        "blue",
        ServeConfig {
            executable_sha256: sha256.clone(),
            ..test_config()
        },
    );
    let (link, hello) = connect_ok(&blue.addr).await;
    assert_eq!(hello.executable_sha256, sha256);
    assert_eq!(hello.engine_name, "blue");
    drop(link);
    blue.stop();

    // Not configured: the Hello says so with an empty hash rather than a made-up one.
    let green = start(&any_port, "green", test_config());
    let (link, hello) = connect_ok(&green.addr).await;
    assert_eq!(hello.executable_sha256, "");
    drop(link);
    green.stop();
}

/// Reads frames from a raw socket until one is complete.
fn read_frame(stream: &mut std::net::TcpStream, decoder: &mut FrameDecoder) -> Frame {
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return frame;
        }
        let n = stream.read(decoder.read_space()).unwrap();
        assert!(n > 0, "engine hung up without a Close");
        decoder.advance(n);
    }
}

#[test]
fn malformed_frames_close_the_link_with_a_reason_and_the_engine_serves_on() {
    let engine = start(&"tcp://127.0.0.1:0".parse().unwrap(), "blue", test_config());
    let LinkAddr::Tcp { host, port } = &engine.addr else {
        unreachable!()
    };
    let cases: [(&[u8], &str); 4] = [
        (&[3, 0, 0, 0, 3, 0, 200], "unknown frame kind 200"),
        // Version 1 is the layout from before requests and reports carried parties.
        (&[3, 0, 0, 0, 1, 0, 9], "protocol version 1"),
        // Version 2 is the one before inputs could carry a state transfer: an engine of this
        // build speaks only the current one.
        (&[3, 0, 0, 0, 2, 0, 9], "protocol version 2"),
        (&[0xFF, 0xFF, 0xFF, 0xFF], "exceeds the limit"),
    ];
    for (bytes, reason) in cases {
        let mut stream = std::net::TcpStream::connect((host.as_str(), *port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut decoder = FrameDecoder::new();
        assert!(matches!(
            read_frame(&mut stream, &mut decoder),
            Frame::Hello(_)
        ));
        let mut welcome = Vec::new();
        encode(
            &Frame::Welcome(baton::link::Welcome {
                protocol_version: LINK_PROTOCOL_VERSION,
                auth_nonce: Vec::new(),
                auth_proof: Vec::new(),
            }),
            &mut welcome,
        )
        .unwrap();
        stream.write_all(&welcome).unwrap();
        stream.write_all(bytes).unwrap();
        // Bounded: an engine that heartbeats on instead of closing fails here, not hangs.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match read_frame(&mut stream, &mut decoder) {
                Frame::Heartbeat(_) => assert!(
                    std::time::Instant::now() < deadline,
                    "no Close for {reason:?} within {WAIT:?}, only heartbeats"
                ),
                Frame::Close(close) => {
                    assert!(close.reason.contains(reason), "{} / {reason}", close.reason);
                    break;
                }
                other => panic!("expected Close, got {other:?}"),
            }
        }
    }
    // A gateway that never says Welcome is refused too, and then a good one is served.
    let mut stream = std::net::TcpStream::connect((host.as_str(), *port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut decoder = FrameDecoder::new();
    assert!(matches!(
        read_frame(&mut stream, &mut decoder),
        Frame::Hello(_)
    ));
    stream.write_all(&[3, 0, 0, 0, 3, 0, 14]).unwrap(); // DigestRequest before Welcome
    match read_frame(&mut stream, &mut decoder) {
        Frame::Close(close) => assert!(close.reason.contains("before Welcome"), "{}", close.reason),
        other => panic!("expected Close, got {other:?}"),
    }
    assert_eq!(engine.stop().last_input_seq(), 0);
}

#[tokio::test]
async fn an_idle_engine_heartbeats_and_drops_a_silent_gateway() {
    let config = ServeConfig {
        heartbeat_interval: Duration::from_millis(20),
        peer_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let engine = start(&"tcp://127.0.0.1:0".parse().unwrap(), "blue", config);
    let (mut link, _) = connect_ok(&engine.addr).await;
    let frame = tokio::time::timeout(WAIT, link.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(frame, Frame::Heartbeat(h) if h.last_input_seq == 0),
        "{frame:?}"
    );
    // Never answering: the engine gives up on us with a reason.
    let error = recv_result(&mut link).await;
    match error {
        Err(LinkError::Closed { reason }) => assert!(reason.contains("no frame"), "{reason}"),
        other => panic!("expected Close, got {other:?}"),
    }
    // The next gateway is served.
    let (link, hello) = connect_ok(&engine.addr).await;
    assert_eq!(hello.last_input_seq, 0);
    link.close("done").await.unwrap();
    engine.stop();
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused_and_the_engine_is_unchanged() {
    let engine = start(&"tcp://127.0.0.1:0".parse().unwrap(), "blue", test_config());
    let (mut link, _) = connect_ok(&engine.addr).await;
    link.send_input(&limit(1, 1, "a", Side::Buy, 100, 1))
        .await
        .unwrap();
    recv_outputs(&mut link).await;
    let before = digest(&mut link).await;
    link.restore(b"definitely not a snapshot").await.unwrap();
    match recv(&mut link).await {
        Frame::Refused(refused) => {
            assert_eq!(refused.request, baton::link::RefusedRequest::Restore);
            assert!(refused.reason.contains("magic"), "{}", refused.reason);
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(digest(&mut link).await, before);
    link.close("done").await.unwrap();
    engine.stop();
}

#[tokio::test]
async fn silent_connections_do_not_delay_a_gateways_attach() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blue.sock");
    let engine = start(&LinkAddr::Unix(path.clone()), "blue", test_config());
    // More connections that never say a word than the engine waits on at once, all queued
    // before the gateway's: each would hold the engine for its whole handshake timeout if
    // handshakes were taken one at a time, longer than the gateway waits for its Hello.
    let silent: Vec<std::os::unix::net::UnixStream> = (0
        ..baton::constants::LINK_PENDING_HANDSHAKES_MAX + 2)
        .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
        .collect();
    let (mut link, hello) = tokio::time::timeout(WAIT, connect(&engine.addr))
        .await
        .expect("the gateway attaches within the bound")
        .expect("the gateway's handshake completes beside the silent ones");
    assert_eq!(hello.engine_name, "blue");
    link.send_inputs(&[limit(1, 1, "S-1", Side::Sell, 10, 5)])
        .await
        .unwrap();
    assert_keyed(&recv_outputs(&mut link).await, 1);
    drop(silent);
}

#[test]
fn the_unix_link_socket_is_for_the_engines_account_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blue.sock");
    let engine = start(&LinkAddr::Unix(path.clone()), "blue", test_config());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    engine.stop();
}

fn secret_config(secret: &[u8]) -> ServeConfig {
    ServeConfig {
        link_secret: Some(LinkSecret::from_bytes(secret)),
        ..test_config()
    }
}

const SECRET: &[u8] = b"correct horse battery staple";

#[tokio::test]
async fn a_tcp_link_with_the_right_secret_works_and_any_other_is_refused_on_both_sides() {
    let engine = start(
        &"tcp://127.0.0.1:0".parse().unwrap(),
        "blue",
        secret_config(SECRET),
    );
    let other = LinkSecret::from_bytes(b"another secret of some length");
    // A gateway with another secret: the engine finds its proof wrong and says so.
    let wrong = connect_authenticated(&engine.addr, WAIT, Some(&other)).await;
    match wrong {
        Err(LinkError::Closed { reason }) => {
            assert!(reason.contains("different link secret"), "{reason}")
        }
        other => panic!("expected the engine to refuse, got {other:?}"),
    }
    // A gateway without one: refused before it may send anything, naming the fix.
    match connect_authenticated(&engine.addr, WAIT, None).await {
        Err(LinkError::Unauthenticated(reason)) => {
            assert!(reason.contains("[link] secret_file"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The engine's own refusal, as a peer that speaks without the secret reads it.
    let LinkAddr::Tcp { host, port } = &engine.addr else {
        unreachable!()
    };
    let mut stream = std::net::TcpStream::connect((host.as_str(), *port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut decoder = FrameDecoder::new();
    match read_frame(&mut stream, &mut decoder) {
        Frame::Hello(hello) => assert_eq!(hello.auth_nonce.len(), 32),
        other => panic!("expected Hello, got {other:?}"),
    }
    let mut welcome = Vec::new();
    encode(
        &Frame::Welcome(baton::link::Welcome {
            protocol_version: LINK_PROTOCOL_VERSION,
            auth_nonce: Vec::new(),
            auth_proof: Vec::new(),
        }),
        &mut welcome,
    )
    .unwrap();
    stream.write_all(&welcome).unwrap();
    match read_frame(&mut stream, &mut decoder) {
        Frame::Close(close) => assert!(
            close.reason.contains("does not prove the link secret"),
            "{}",
            close.reason
        ),
        other => panic!("expected Close, got {other:?}"),
    }
    // The right secret: the link works.
    let secret = LinkSecret::from_bytes(SECRET);
    let (mut link, _) = connect_authenticated(&engine.addr, WAIT, Some(&secret))
        .await
        .expect("the right secret is accepted");
    link.send_inputs(&[limit(1, 1, "S-1", Side::Sell, 10, 5)])
        .await
        .unwrap();
    assert_keyed(&recv_outputs(&mut link).await, 1);
}

#[tokio::test]
async fn a_gateway_with_a_secret_refuses_an_engine_without_one() {
    let engine = start(&"tcp://127.0.0.1:0".parse().unwrap(), "blue", test_config());
    let secret = LinkSecret::from_bytes(SECRET);
    match connect_authenticated(&engine.addr, WAIT, Some(&secret)).await {
        Err(LinkError::Unauthenticated(reason)) => assert!(
            reason.contains("does not authenticate the link"),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Opens once the test has seen what it waits for; bounded, so a broken engine loop fails the
/// test after [`WAIT`] instead of hanging it.
#[derive(Clone)]
struct Gate(std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>);

impl Gate {
    fn new() -> (std::sync::mpsc::Sender<()>, Gate) {
        let (open, gate) = std::sync::mpsc::channel();
        (open, Gate(std::sync::Arc::new(std::sync::Mutex::new(gate))))
    }

    fn wait(&self) {
        let _ = self.0.lock().unwrap().recv_timeout(WAIT);
    }
}

/// The reference engine whose snapshots are written only once the gate opens: a snapshot that
/// takes as long as the test likes, wherever it is written.
struct SlowSnapshots {
    engine: MatchingEngine,
    gate: Gate,
}

/// [`SlowSnapshots`]' frozen state, equally slow.
struct SlowFrozen {
    frozen: Box<dyn FrozenState>,
    gate: Gate,
}

impl FrozenState for SlowFrozen {
    fn last_input_seq(&self) -> u64 {
        self.frozen.last_input_seq()
    }

    fn snapshot_and_digest(&self, out: &mut Vec<u8>) -> Digest {
        self.gate.wait();
        self.frozen.snapshot_and_digest(out)
    }
}

impl Engine for SlowSnapshots {
    fn apply(&mut self, input: &Input, outputs: &mut Vec<Output>) {
        self.engine.apply(input, outputs);
    }

    fn last_input_seq(&self) -> u64 {
        self.engine.last_input_seq()
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        self.gate.wait();
        self.engine.snapshot(out);
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.engine.restore(snapshot)
    }

    fn digest(&self) -> Digest {
        self.engine.digest()
    }

    fn build_version(&self) -> &str {
        self.engine.build_version()
    }

    fn freeze(&self) -> Option<Box<dyn FrozenState>> {
        let frozen = self.engine.freeze()?;
        Some(Box::new(SlowFrozen {
            frozen,
            gate: self.gate.clone(),
        }))
    }
}

/// A snapshot is written beside the order loop: an input sent after the SnapshotRequest is
/// answered while the snapshot is still being written (its writer waits for the test to see
/// that answer), and the snapshot, when it comes, is the state at the input it names, not one
/// that includes the later input.
#[tokio::test]
async fn inputs_after_a_snapshot_request_are_answered_before_the_snapshot_is_written() {
    let (open, gate) = Gate::new();
    let engine = SlowSnapshots {
        engine: MatchingEngine::new(&EngineConfig::default()).unwrap(),
        gate,
    };
    let listener = baton::link::LinkListener::bind(&"tcp://127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = baton::link::Shutdown::new();
    let stop = shutdown.clone();
    let config = test_config();
    let serving = std::thread::spawn(move || {
        baton::link::serve_on(engine, listener, &config, &stop).unwrap()
    });

    let (mut link, _) = connect_ok(&addr).await;
    link.send_input(&limit(1, 1, "a", Side::Buy, 100, 10))
        .await
        .unwrap();
    assert_keyed(&recv_outputs(&mut link).await, 1);
    let at_first = digest(&mut link).await;

    link.request_snapshot().await.unwrap();
    link.send_input(&limit(2, 2, "b", Side::Sell, 100, 4))
        .await
        .unwrap();
    let second = recv_outputs(&mut link).await;
    assert_keyed(&second, 2);
    assert_eq!(
        exec_types_by_session(&second.outputs).len(),
        3,
        "the cross was applied while the snapshot waited"
    );
    open.send(()).unwrap();
    let snapshot = match recv(&mut link).await {
        Frame::Snapshot(snapshot) => snapshot,
        other => panic!("expected the Snapshot, got {other:?}"),
    };
    assert_eq!(
        DigestReport {
            at_input_seq: snapshot.at_input_seq,
            digest: snapshot.digest
        },
        at_first,
        "the snapshot is the state at the request, not after the input that followed it"
    );
    let at_second = digest(&mut link).await;
    assert_eq!(at_second.at_input_seq, 2);
    link.close("done").await.unwrap();

    // The bytes are that state too: restored and fed the second input, another engine reaches
    // the same digest as the engine that went on.
    let mut replica = MatchingEngine::new(&EngineConfig::default()).unwrap();
    replica.restore(&snapshot.bytes).unwrap();
    assert_eq!(replica.digest(), at_first.digest);
    let mut outputs = Vec::new();
    replica.apply(&limit(2, 2, "b", Side::Sell, 100, 4), &mut outputs);
    assert_eq!(outputs, second.outputs);
    assert_eq!(replica.digest(), at_second.digest);

    shutdown.trigger();
    serving.join().unwrap();
}
