//! Engines that write different snapshot formats, as an upgrade and a rollback have them: an
//! engine writing v1 (the older build) and one writing v2 (the newer) restore each other's
//! snapshots into the identical engine, over random order streams and over the real link. v3
//! adds the orders' parties: it round-trips them exactly, and an engine written to be rolled back
//! to (v2) restores everything but the parties, which it drops.
//!
//! What "identical" means here: the same book, the same outputs for every later input, and the
//! same digest after every input, whichever format was written and however the state was reached.

mod support_engine;

use std::time::Duration;

use baton::engine::{
    CancelOrder, ClOrdId, Engine, Input, MatchingEngine, NewOrder, OrdType, Parties, Price, Qty,
    RejectText, ReplaceOrder, Report, Request, SNAPSHOT_FORMAT_VERSIONS, Side, Symbol, TimeInForce,
};
use baton::fix::time::Timestamp;
use baton::link::{
    DigestReport, EngineLink, Frame, Hello, LinkAddr, Restored, ServeConfig, Snapshot, connect,
};
use proptest::prelude::*;
use support_engine::{
    RunningEngine, actions, build_inputs, fresh_writing, parties_for, run, with_parties,
};

/// The format version in a snapshot's header.
fn version_of(snapshot: &[u8]) -> u16 {
    u16::from_le_bytes([snapshot[8], snapshot[9]])
}

fn snapshot_of(engine: &MatchingEngine) -> Vec<u8> {
    let mut bytes = Vec::new();
    engine.snapshot(&mut bytes);
    bytes
}

/// Runs `inputs[..split]` on an engine writing `from`, restores its snapshot into a fresh engine
/// writing `to`, then feeds the rest to both, comparing outputs and digests after every input;
/// at the end both must also match an engine that ran every input without a restore.
fn restore_across_formats(
    from: u16,
    to: u16,
    inputs: &[Input],
    split: usize,
) -> Result<(), TestCaseError> {
    let mut old = fresh_writing(from);
    run(&mut old, &inputs[..split]);
    let bytes = snapshot_of(&old);
    prop_assert_eq!(version_of(&bytes), from);

    let mut new = fresh_writing(to);
    new.restore(&bytes)
        .map_err(|error| TestCaseError::fail(format!("restore: {error}")))?;
    prop_assert_eq!(new.last_input_seq(), split as u64);
    prop_assert_eq!(new.open_orders(), old.open_orders());
    prop_assert_eq!(new.digest(), old.digest());
    prop_assert_eq!(version_of(&snapshot_of(&new)), to);

    let (mut old_outputs, mut new_outputs) = (Vec::new(), Vec::new());
    for input in &inputs[split..] {
        old_outputs.clear();
        new_outputs.clear();
        old.apply(input, &mut old_outputs);
        new.apply(input, &mut new_outputs);
        prop_assert_eq!(&new_outputs, &old_outputs, "outputs of input {}", input.seq);
        prop_assert_eq!(
            new.digest(),
            old.digest(),
            "digest after input {}",
            input.seq
        );
    }
    prop_assert_eq!(new.open_orders(), old.open_orders());

    let mut uninterrupted = fresh_writing(to);
    run(&mut uninterrupted, inputs);
    prop_assert_eq!(uninterrupted.digest(), new.digest());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_v1_snapshot_restored_into_a_v2_engine_behaves_identically(
        actions in actions(200),
        split in any::<prop::sample::Index>(),
    ) {
        let inputs = build_inputs(&actions);
        restore_across_formats(1, 2, &inputs, split.index(inputs.len() + 1))?;
    }

    #[test]
    fn a_v2_snapshot_restored_into_a_v1_engine_behaves_identically(
        actions in actions(200),
        split in any::<prop::sample::Index>(),
    ) {
        let inputs = build_inputs(&actions);
        restore_across_formats(2, 1, &inputs, split.index(inputs.len() + 1))?;
    }

    #[test]
    fn each_format_restores_into_the_other_without_losing_anything(actions in actions(200)) {
        let inputs = build_inputs(&actions);
        let (mut v1_writer, mut v2_writer) = (fresh_writing(1), fresh_writing(2));
        run(&mut v1_writer, &inputs);
        run(&mut v2_writer, &inputs);
        let (v1_bytes, v2_bytes) = (snapshot_of(&v1_writer), snapshot_of(&v2_writer));
        prop_assert_eq!(v1_writer.digest(), v2_writer.digest());

        // v1 → an engine writing v2 writes what the uninterrupted v2 engine writes, and back.
        let mut via_v1 = fresh_writing(2);
        via_v1.restore(&v1_bytes).unwrap();
        prop_assert_eq!(snapshot_of(&via_v1), v2_bytes.clone());
        let mut via_v2 = fresh_writing(1);
        via_v2.restore(&v2_bytes).unwrap();
        prop_assert_eq!(snapshot_of(&via_v2), v1_bytes);
    }

    #[test]
    fn a_v3_snapshot_with_parties_restores_into_the_identical_engine(
        actions in actions(200),
        split in any::<prop::sample::Index>(),
    ) {
        let inputs = with_parties(&build_inputs(&actions));
        restore_across_formats(3, 3, &inputs, split.index(inputs.len() + 1))?;
    }

    #[test]
    fn v2_and_v3_restore_each_other_without_parties_identically(
        actions in actions(200),
        split in any::<prop::sample::Index>(),
    ) {
        let inputs = build_inputs(&actions);
        let split = split.index(inputs.len() + 1);
        restore_across_formats(2, 3, &inputs, split)?;
        restore_across_formats(3, 2, &inputs, split)?;
        restore_across_formats(1, 3, &inputs, split)?;
    }

    #[test]
    fn a_frozen_state_writes_the_snapshot_and_digest_of_the_moment_it_was_frozen(
        actions in actions(200),
        split in any::<prop::sample::Index>(),
    ) {
        let inputs = with_parties(&build_inputs(&actions));
        let split = split.index(inputs.len() + 1);
        for format in SNAPSHOT_FORMAT_VERSIONS.iter().copied() {
            let mut engine = fresh_writing(format);
            run(&mut engine, &inputs[..split]);
            let (bytes, digest) = (snapshot_of(&engine), engine.digest());
            let frozen = engine.freeze().expect("the reference engine freezes its state");
            // The engine goes on; the copy does not.
            run(&mut engine, &inputs[split..]);
            let mut written = Vec::new();
            prop_assert_eq!(frozen.snapshot_and_digest(&mut written), digest);
            prop_assert_eq!(frozen.last_input_seq(), split as u64);
            prop_assert_eq!(written, bytes);
        }
    }

    #[test]
    fn an_engine_writing_v2_for_a_rollback_drops_exactly_the_parties(actions in actions(200)) {
        let plain = build_inputs(&actions);
        let inputs = with_parties(&plain);
        let mut with = fresh_writing(2);
        run(&mut with, &inputs);
        let mut without = fresh_writing(2);
        run(&mut without, &plain);
        // The rollback target restores the book the counterparties saw, parties aside.
        let mut rolled_back = fresh_writing(2);
        rolled_back.restore(&snapshot_of(&with)).unwrap();
        prop_assert_eq!(rolled_back.digest(), without.digest());
        prop_assert_eq!(rolled_back.open_orders(), without.open_orders());
        let stripped: Vec<_> = with
            .open_orders()
            .into_iter()
            .map(|order| baton::engine::OpenOrder { parties: Parties::NONE, ..order })
            .collect();
        prop_assert_eq!(stripped, without.open_orders());
        // The digest tells the two apart whenever a resting order had parties.
        let any_parties = with.open_orders().iter().any(|order| !order.parties.is_empty());
        prop_assert_eq!(with.digest() != without.digest(), any_parties);
        // And every resting order of the v3 writer carries the parties its last request set.
        for order in with.open_orders() {
            prop_assert!(order.parties.is_empty() || order.parties == parties_for_order(&inputs, order.order_id));
        }
    }

    #[test]
    fn a_damaged_v3_snapshot_restores_the_written_state_or_nothing(
        actions in actions(80),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..4),
        cut in prop::option::weighted(0.3, any::<prop::sample::Index>()),
    ) {
        let inputs = with_parties(&build_inputs(&actions));
        let mut source = fresh_writing(3);
        run(&mut source, &inputs);
        let mut snapshot = snapshot_of(&source);
        for (at, xor) in &flips {
            let at = at.index(snapshot.len());
            snapshot[at] ^= xor;
        }
        if let Some(cut) = cut {
            snapshot.truncate(cut.index(snapshot.len()));
        }
        for format in [2, 3] {
            let mut engine = fresh_writing(format);
            let before = engine.digest();
            match engine.restore(&snapshot) {
                Ok(()) => {
                    prop_assert_eq!(engine.digest(), source.digest());
                    prop_assert_eq!(engine.open_orders(), source.open_orders());
                }
                Err(_) => prop_assert_eq!(engine.digest(), before, "a failed restore changes nothing"),
            }
        }
    }

    #[test]
    fn a_damaged_v2_snapshot_restores_the_written_state_or_nothing(
        actions in actions(80),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..4),
        cut in prop::option::weighted(0.3, any::<prop::sample::Index>()),
    ) {
        let inputs = build_inputs(&actions);
        let mut source = fresh_writing(2);
        run(&mut source, &inputs);
        let mut snapshot = snapshot_of(&source);
        for (at, xor) in &flips {
            let at = at.index(snapshot.len());
            snapshot[at] ^= xor;
        }
        if let Some(cut) = cut {
            snapshot.truncate(cut.index(snapshot.len()));
        }
        for format in [1, 2] {
            let mut engine = fresh_writing(format);
            let before = engine.digest();
            match engine.restore(&snapshot) {
                // The recorded digest admits only the state that was written.
                Ok(()) => prop_assert_eq!(engine.digest(), source.digest()),
                Err(_) => prop_assert_eq!(engine.digest(), before, "a failed restore changes nothing"),
            }
        }
    }

    #[test]
    fn restore_of_arbitrary_bytes_under_any_version_never_panics(
        version in prop_oneof![Just(1u16), Just(2u16), Just(3u16), any::<u16>()],
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut snapshot = b"BTNSNAP\0".to_vec();
        snapshot.extend_from_slice(&version.to_le_bytes());
        snapshot.extend_from_slice(&bytes);
        for format in [1, 2, 3] {
            let mut engine = fresh_writing(format);
            let before = engine.digest();
            if engine.restore(&snapshot).is_err() {
                prop_assert_eq!(engine.digest(), before);
            }
        }
    }
}

/// The parties resting order `order_id` should carry: those of the last accepted request on it
/// that had any. Replaces name the order by ClOrdID, so this follows the reports instead: the
/// engine's own Replaced reports say which replace applied.
fn parties_for_order(inputs: &[Input], order_id: u64) -> Parties {
    let mut engine = fresh_writing(3);
    let mut outputs = Vec::new();
    let mut parties = parties_for(order_id);
    for input in inputs {
        outputs.clear();
        engine.apply(input, &mut outputs);
        for output in &outputs {
            if let Report::Execution(report) = &output.report
                && report.order_id == order_id
                && report.exec_type == baton::engine::ExecType::Replaced
                && !parties_for(input.seq).is_empty()
            {
                parties = parties_for(input.seq);
            }
        }
    }
    parties
}

// ----- Over the real link ----------------------------------------------------------------------

/// Generous bound on any single wait, so a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(30);

/// A matching engine writing one snapshot format, served on a thread as `baton engine
/// --snapshot-format N` serves it.
/// An engine writing snapshot `format`, served under `name` on a free TCP port.
fn start(name: &str, format: u16) -> RunningEngine {
    let engine = fresh_writing(format);
    let config = ServeConfig {
        engine_name: name.to_owned(),
        snapshot_formats: engine.snapshot_formats(),
        heartbeat_interval: Duration::from_millis(50),
        ..ServeConfig::default()
    };
    RunningEngine::serve(engine, &"tcp://127.0.0.1:0".parse().unwrap(), config)
}

async fn connect_ok(addr: &LinkAddr) -> (EngineLink, Hello) {
    tokio::time::timeout(WAIT, connect(addr))
        .await
        .unwrap()
        .unwrap()
}

/// The next frame that is not a heartbeat, within `WAIT` as a whole: an engine that only ever
/// heartbeats fails the test instead of keeping it waiting forever.
async fn recv(link: &mut EngineLink) -> Frame {
    let skip_heartbeats = async {
        loop {
            match link.recv().await.unwrap() {
                Frame::Heartbeat(_) => continue,
                frame => return frame,
            }
        }
    };
    tokio::time::timeout(WAIT, skip_heartbeats)
        .await
        .unwrap_or_else(|_| panic!("no frame but heartbeats within {WAIT:?}"))
}

async fn digest(link: &mut EngineLink) -> DigestReport {
    link.request_digest().await.unwrap();
    match recv(link).await {
        Frame::Digest(report) => report,
        other => panic!("expected Digest, got {other:?}"),
    }
}

async fn snapshot(link: &mut EngineLink) -> Snapshot {
    link.request_snapshot().await.unwrap();
    match recv(link).await {
        Frame::Snapshot(snapshot) => snapshot,
        other => panic!("expected Snapshot, got {other:?}"),
    }
}

/// Restores `snapshot` through `link` and checks the engine reports the snapshot's state.
async fn restore(link: &mut EngineLink, snapshot: &Snapshot) {
    link.restore(&snapshot.bytes).await.unwrap();
    assert_eq!(
        recv(link).await,
        Frame::Restored(Restored {
            at_input_seq: snapshot.at_input_seq,
            digest: snapshot.digest,
        })
    );
}

/// Sends `input` to both engines, checks they answer with the same outputs and digest, and
/// returns the reports.
async fn apply_to_both(a: &mut EngineLink, b: &mut EngineLink, input: &Input) -> Vec<Report> {
    a.send_input(input).await.unwrap();
    b.send_input(input).await.unwrap();
    let (from_a, from_b) = (recv(a).await, recv(b).await);
    assert_eq!(from_a, from_b, "outputs of input {}", input.seq);
    assert_eq!(digest(a).await, digest(b).await);
    match from_a {
        Frame::Outputs(outputs) if outputs.input_seq == input.seq => outputs
            .outputs
            .into_iter()
            .map(|output| output.report)
            .collect(),
        other => panic!("expected the Outputs of input {}, got {other:?}", input.seq),
    }
}

/// The ExecTypes of `reports`, with CancelRejects as the reject's text.
fn outcomes(reports: &[Report]) -> Vec<String> {
    reports
        .iter()
        .map(|report| match report {
            Report::Execution(report) => format!("{:?}", report.exec_type),
            Report::CancelReject(reject) => format!("CancelReject {:?}", reject.text),
        })
        .collect()
}

fn cl_ord_id(text: &str) -> ClOrdId {
    ClOrdId::try_from_bytes(text.as_bytes()).unwrap()
}

fn input(seq: u64, session: u32, request: Request) -> Input {
    Input {
        seq,
        time: Timestamp::from_millis(1_700_000_000_000 + seq),
        session,
        request,
    }
}

/// A Day limit order in AAA (tick 0.5, lot 1) or BBB (tick 0.01, lot 10) of `support_engine`.
fn limit(
    seq: u64,
    session: u32,
    id: &str,
    symbol: &str,
    side: Side,
    price: i64,
    qty: u64,
) -> Input {
    let request = Request::New(NewOrder {
        cl_ord_id: cl_ord_id(id),
        symbol: Symbol::try_from_bytes(symbol.as_bytes()).unwrap(),
        side,
        ord_type: OrdType::Limit,
        price: Some(Price(price * Price::SCALE)),
        qty: Qty(qty),
        time_in_force: TimeInForce::Day,
        parties: Parties::NONE,
    });
    input(seq, session, request)
}

#[tokio::test]
async fn engines_writing_v1_and_v2_restore_each_others_snapshots_over_the_link() {
    let blue = start("blue", 1);
    let green = start("green", 2);
    let (mut old, old_hello) = connect_ok(&blue.addr).await;
    let (mut new, new_hello) = connect_ok(&green.addr).await;
    // The handshake shows two builds, each reading every format and writing the last it lists.
    assert!(old_hello.build_version.ends_with("+snap1"));
    assert!(new_hello.build_version.ends_with("+snap2"));
    assert_eq!(old_hello.snapshot_formats, [2, 3, 1]);
    assert_eq!(new_hello.snapshot_formats, [1, 3, 2]);

    // The older build trades: a fill, a replace, a rejected cancel, a second book.
    let history = [
        limit(1, 1, "a1", "AAA", Side::Sell, 100, 10),
        limit(2, 2, "b1", "AAA", Side::Buy, 100, 4),
        limit(3, 1, "a2", "AAA", Side::Sell, 101, 5),
        input(
            4,
            1,
            Request::Replace(ReplaceOrder {
                cl_ord_id: cl_ord_id("a3"),
                orig_cl_ord_id: cl_ord_id("a2"),
                symbol: Symbol::try_from_bytes(b"AAA").unwrap(),
                side: Side::Sell,
                ord_type: OrdType::Limit,
                price: Some(Price(102 * Price::SCALE)),
                qty: Qty(6),
                parties: Parties::NONE,
            }),
        ),
        input(
            5,
            2,
            Request::Cancel(CancelOrder {
                cl_ord_id: cl_ord_id("c1"),
                orig_cl_ord_id: cl_ord_id("never"),
                symbol: Symbol::try_from_bytes(b"AAA").unwrap(),
                side: Side::Buy,
                parties: Parties::NONE,
            }),
        ),
        limit(6, 3, "d1", "BBB", Side::Buy, 50, 20),
    ];
    old.send_inputs(&history).await.unwrap();
    for input in &history {
        assert!(matches!(recv(&mut old).await, Frame::Outputs(o) if o.input_seq == input.seq));
    }

    // Upgrade: the older build's v1 snapshot restores into the newer build.
    let from_old = snapshot(&mut old).await;
    assert_eq!(from_old.at_input_seq, 6);
    assert_eq!(from_old.format_version, 1);
    assert_eq!(version_of(&from_old.bytes), 1);
    assert_eq!(
        digest(&mut old).await,
        DigestReport {
            at_input_seq: 6,
            digest: from_old.digest
        }
    );
    restore(&mut new, &from_old).await;
    // The next input takes the rest of a1 and part of the replaced order, which keeps resting
    // under its new ClOrdID with the old one still its own.
    let reports = apply_to_both(
        &mut old,
        &mut new,
        &limit(7, 2, "b2", "AAA", Side::Buy, 102, 8),
    )
    .await;
    assert_eq!(
        outcomes(&reports),
        ["New", "Trade", "Trade", "Trade", "Trade"]
    );

    // Rollback: the newer build's v2 snapshot restores into the older build.
    let from_new = snapshot(&mut new).await;
    assert_eq!(from_new.at_input_seq, 7);
    assert_eq!(from_new.format_version, 2);
    assert_eq!(version_of(&from_new.bytes), 2);
    assert_eq!(from_new.digest, digest(&mut old).await.digest);
    restore(&mut old, &from_new).await;
    // A cancel naming the replaced order's first ClOrdID is refused the same way by both, and
    // one naming its latest cancels it.
    let cancel = |seq, id: &str, orig: &str| {
        let request = Request::Cancel(CancelOrder {
            cl_ord_id: cl_ord_id(id),
            orig_cl_ord_id: cl_ord_id(orig),
            symbol: Symbol::try_from_bytes(b"AAA").unwrap(),
            side: Side::Sell,
            parties: Parties::NONE,
        });
        input(seq, 1, request)
    };
    let reports = apply_to_both(&mut old, &mut new, &cancel(8, "c2", "a2")).await;
    assert_eq!(
        outcomes(&reports),
        [format!(
            "CancelReject {:?}",
            Some(RejectText::NotLatestClOrdId)
        )]
    );
    apply_to_both(
        &mut old,
        &mut new,
        &limit(9, 3, "e1", "AAA", Side::Buy, 102, 1),
    )
    .await;
    let reports = apply_to_both(&mut old, &mut new, &cancel(10, "c3", "a3")).await;
    assert_eq!(outcomes(&reports), ["Canceled"]);

    old.close("done").await.unwrap();
    new.close("done").await.unwrap();
    let (old, new) = (blue.stop(), green.stop());
    assert_eq!(old.last_input_seq(), 10);
    assert_eq!(old.open_orders(), new.open_orders());
    assert!(!old.open_orders().is_empty());
    assert_eq!(old.digest(), new.digest());
}
