//! The shared-memory link between two processes: a real `baton engine` listening on
//! `shm://`, this test process as the gateway. Frames cross the mapped rings both ways, a
//! gateway that vanishes without a Close leaves the engine serving the next one with its state,
//! and a SIGKILLed engine is seen by the gateway as a closed link (the socket beside the rings
//! closes with the process), not as silence.

mod support;

use std::time::Duration;

use baton::engine::{
    ClOrdId, Input, NewOrder, OrdType, Parties, Price, Qty, Request, Side, Symbol, TimeInForce,
};
use baton::fix::time::Timestamp;
use baton::link::{EngineLink, Frame, Hello, LinkAddr, LinkError, connect};
use support::{EngineProcess, wait_for_socket, write_config};

/// Generous bound on any single wait, so a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(60);

fn order(seq: u64, cl_ord_id: &str, side: Side) -> Input {
    Input {
        seq,
        time: Timestamp::from_millis(1_700_000_000_000 + seq),
        session: 1,
        request: Request::New(NewOrder {
            cl_ord_id: ClOrdId::try_from_bytes(cl_ord_id.as_bytes()).unwrap(),
            symbol: Symbol::try_from_bytes(b"AAPL").unwrap(),
            side,
            ord_type: OrdType::Limit,
            price: Some(Price(10 * Price::SCALE)),
            qty: Qty(10),
            time_in_force: TimeInForce::Day,
            parties: Parties::NONE,
        }),
    }
}

/// Attaches to the engine at `addr`. The socket's file exists from its `bind`, a moment before
/// its `listen`: a refusal in between is tried again, within the bound.
async fn attach(addr: &LinkAddr) -> (EngineLink, Hello) {
    let attempts = async {
        loop {
            match connect(addr).await {
                Err(LinkError::Io(error))
                    if error.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                attached => return attached,
            }
        }
    };
    tokio::time::timeout(WAIT, attempts)
        .await
        .expect("attach within the bound")
        .expect("attach")
}

/// The next frame that is not a heartbeat, or the error that ended the link.
async fn next(link: &mut EngineLink) -> Result<Frame, LinkError> {
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
        .expect("a frame or the link's end within the bound")
}

/// Sends `count` orders from `first_seq` in one batch and checks each is answered, in order.
async fn trade(link: &mut EngineLink, first_seq: u64, count: u64) {
    let inputs: Vec<Input> = (first_seq..first_seq + count)
        .map(|seq| {
            let side = if seq % 2 == 0 { Side::Buy } else { Side::Sell };
            order(seq, &format!("O-{seq}"), side)
        })
        .collect();
    link.send_inputs(&inputs).await.unwrap();
    for seq in first_seq..first_seq + count {
        match next(link).await.unwrap() {
            Frame::Outputs(outputs) => assert_eq!(outputs.input_seq, seq),
            other => panic!("expected Outputs of {seq}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_process_serves_over_shared_memory_and_its_death_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let path = dir.path().join("blue.sock");
    let addr = LinkAddr::Shm(path.clone());
    let start = |name: &str| {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["engine", "--config"])
            .arg(&config)
            .args(["--listen", &addr.to_string(), "--name", name])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn baton engine");
        EngineProcess {
            child,
            addr: addr.to_string(),
        }
    };
    let mut engine = start("blue");
    wait_for_socket(&path);

    let (mut link, hello) = attach(&addr).await;
    assert_eq!(hello.engine_name, "blue");
    // Enough batches to go round both rings' bookkeeping many times, with sleeps between so
    // both readers fall asleep and must be woken.
    let mut seq = 1;
    for batch in 0..20 {
        trade(&mut link, seq, 1 + batch * 7).await;
        seq += 1 + batch * 7;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let applied = seq - 1;

    // The gateway vanishes without a Close: the engine notices the closed socket and serves the
    // next gateway with its state.
    drop(link);
    let (mut link, hello) = attach(&addr).await;
    assert_eq!(hello.last_input_seq, applied);
    trade(&mut link, seq, 3).await;

    // SIGKILL: the gateway side sees the link end, promptly and as a disconnect.
    engine.kill();
    match next(&mut link).await {
        Err(LinkError::Disconnected) => {}
        other => panic!("expected the link to end with the engine, got {other:?}"),
    }
}
