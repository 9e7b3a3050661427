//! A gateway of this build attached to an engine of the build before parties (link protocol 1),
//! the engine a rollback returns to: over a real socket, the gateway answers its Hello in
//! version 1, sends it inputs in the layout it reads (without parties), and reads its reports
//! (which carry none). The engine here is a raw socket speaking version 1 byte for byte.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use baton::engine::{
    ClOrdId, ExecType, ExecutionReport, Input, NewOrder, OrdStatus, OrdType, Output, Parties,
    Party, PartyId, Price, Qty, Report, Request, Side, Symbol, TimeInForce,
};
use baton::fix::time::Timestamp;
use baton::link::{
    Frame, FrameDecoder, Hello, LINK_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION_BEFORE_PARTIES,
    LinkAddr, Outputs, connect, encode, encode_at,
};

/// Bound on each socket read, so a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(30);

fn order(parties: Parties) -> Input {
    Input {
        seq: 1,
        time: Timestamp(1_700_000_000_000_000_000),
        session: 4,
        request: Request::New(NewOrder {
            cl_ord_id: ClOrdId::try_from_bytes(b"A1").unwrap(),
            symbol: Symbol::try_from_bytes(b"AAPL").unwrap(),
            side: Side::Buy,
            ord_type: OrdType::Limit,
            price: Some(Price(50 * Price::SCALE)),
            qty: Qty(10),
            time_in_force: TimeInForce::Day,
            parties,
        }),
    }
}

fn ack() -> Outputs {
    Outputs {
        input_seq: 1,
        outputs: vec![Output {
            input_seq: 1,
            index: 0,
            session: 4,
            report: Report::Execution(ExecutionReport {
                order_id: 1,
                cl_ord_id: ClOrdId::try_from_bytes(b"A1").unwrap(),
                orig_cl_ord_id: None,
                exec_type: ExecType::New,
                ord_status: OrdStatus::New,
                symbol: Symbol::try_from_bytes(b"AAPL").unwrap(),
                side: Side::Buy,
                ord_type: OrdType::Limit,
                price: Some(Price(50 * Price::SCALE)),
                time_in_force: TimeInForce::Day,
                order_qty: Qty(10),
                last_qty: Qty::ZERO,
                last_px: None,
                cum_qty: Qty::ZERO,
                leaves_qty: Qty(10),
                avg_px: Price::ZERO,
                transact_time: Timestamp(1_700_000_000_000_000_000),
                ord_rej_reason: None,
                text: None,
                parties: Parties::NONE,
            }),
        }],
    }
}

/// `frame` as version 1 writes it, when its version 2 encoding without parties ends with the
/// one byte that says "no parties" (an Input of one request, an Outputs of one report): the same
/// bytes without it, and version 1 in the header.
fn as_version_1(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode(frame, &mut bytes).unwrap();
    assert_eq!(bytes.pop(), Some(0), "ends with an empty parties list");
    let rest = u32::from_le_bytes(bytes[..4].try_into().unwrap()) - 1;
    bytes[..4].copy_from_slice(&rest.to_le_bytes());
    bytes[4..6].copy_from_slice(&LINK_PROTOCOL_VERSION_BEFORE_PARTIES.to_le_bytes());
    bytes
}

/// Reads whole frames until `count` raw frames (header included) have arrived.
fn read_raw_frames(stream: &mut std::net::TcpStream, count: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    while frames.len() < count {
        if buf.len() >= 4 {
            let len = 4 + u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() >= len {
                frames.push(buf.drain(..len).collect());
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the gateway hung up");
        buf.extend_from_slice(&chunk[..n]);
    }
    frames
}

#[tokio::test]
async fn a_gateway_speaks_version_1_to_an_engine_from_before_parties() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let with_parties = {
        let mut parties = Parties::NONE;
        parties
            .push(
                Party::try_from_wire(PartyId::try_from_bytes(b"1001").unwrap(), b'P', 3, None)
                    .unwrap(),
            )
            .unwrap();
        order(parties)
    };
    let engine = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let hello = Hello {
            protocol_version: LINK_PROTOCOL_VERSION_BEFORE_PARTIES,
            engine_name: "old".into(),
            build_version: "baton-matching-engine/before-parties".into(),
            last_input_seq: 0,
            snapshot_formats: vec![1, 2],
            executable_sha256: String::new(),
            auth_nonce: Vec::new(),
        };
        let mut bytes = Vec::new();
        encode_at(
            LINK_PROTOCOL_VERSION_BEFORE_PARTIES,
            &Frame::Hello(hello),
            &mut bytes,
        )
        .unwrap();
        stream.write_all(&bytes).unwrap();
        // The Welcome names version 1; the input comes in version 1's layout.
        let frames = read_raw_frames(&mut stream, 2);
        let mut decoder = FrameDecoder::new();
        decoder.push(&frames[0]);
        match decoder.next_frame().unwrap() {
            Some(Frame::Welcome(welcome)) => {
                assert_eq!(
                    welcome.protocol_version,
                    LINK_PROTOCOL_VERSION_BEFORE_PARTIES
                )
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
        assert_eq!(
            frames[1],
            as_version_1(&Frame::Input(order(Parties::NONE))),
            "the input without its parties, in version 1"
        );
        stream
            .write_all(&as_version_1(&Frame::Outputs(ack())))
            .unwrap();
    });

    let addr: LinkAddr = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let (mut link, hello) = connect(&addr).await.unwrap();
    assert_eq!(hello.protocol_version, LINK_PROTOCOL_VERSION_BEFORE_PARTIES);
    link.send_input(&with_parties).await.unwrap();
    let answer = tokio::time::timeout(WAIT, link.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, Frame::Outputs(ack()));
    engine.join().unwrap();
    // This build's engines speak only the newest version.
    assert_ne!(LINK_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION_BEFORE_PARTIES);
}
