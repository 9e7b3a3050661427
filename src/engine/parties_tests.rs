//! Parties through the engine: kept with the order, echoed on its reports, replaced or kept by a
//! replace, carried by snapshot format 3 and dropped (with the digest telling) by older formats,
//! covered by the digest, and read from journal payloads written before parties existed.

use proptest::prelude::*;
use sha2::Digest as _;

use super::*;

fn cid(text: &str) -> ClOrdId {
    ClOrdId::try_from_bytes(text.as_bytes()).unwrap()
}

fn sym(text: &str) -> Symbol {
    Symbol::try_from_bytes(text.as_bytes()).unwrap()
}

fn px(text: &str) -> Price {
    Price::parse_decimal(text.as_bytes()).unwrap()
}

/// A party list from (PartyID, PartyRole) pairs, all short codes (`P`), the first one qualified
/// as a natural person.
fn parties(list: &[(&str, u16)]) -> Parties {
    let mut parties = Parties::NONE;
    for (i, (id, role)) in list.iter().enumerate() {
        let party = Party::try_from_wire(
            PartyId::try_from_bytes(id.as_bytes()).unwrap(),
            b'P',
            *role,
            (i == 0).then_some(24),
        )
        .unwrap();
        parties.push(party).unwrap();
    }
    parties
}

fn config() -> EngineConfig {
    EngineConfig {
        instruments: vec![InstrumentConfig {
            symbol: "AAA".into(),
            tick_size: px("0.01"),
            lot_size: 1,
        }],
        orders_max: 16,
        levels_max: 8,
        cl_ord_ids_max: 64,
    }
}

/// An engine writing `format`, fed consecutive seqs.
struct Venue {
    engine: MatchingEngine,
    seq: u64,
}

impl Venue {
    fn new(format: u16) -> Venue {
        Venue {
            engine: MatchingEngine::with_snapshot_format(&config(), format).unwrap(),
            seq: 0,
        }
    }

    fn apply(&mut self, request: Request) -> Vec<Output> {
        self.seq += 1;
        let input = Input {
            seq: self.seq,
            time: Timestamp(1_000 * self.seq),
            session: 1,
            request,
        };
        let mut outputs = Vec::new();
        self.engine.apply(&input, &mut outputs);
        outputs
    }

    fn limit(&mut self, id: &str, side: Side, price: &str, qty: u64, with: Parties) -> Vec<Output> {
        self.apply(Request::New(NewOrder {
            cl_ord_id: cid(id),
            symbol: sym("AAA"),
            side,
            ord_type: OrdType::Limit,
            price: Some(px(price)),
            qty: Qty(qty),
            time_in_force: TimeInForce::Day,
            parties: with,
        }))
    }

    fn replace(
        &mut self,
        id: &str,
        orig: &str,
        price: &str,
        qty: u64,
        with: Parties,
    ) -> Vec<Output> {
        self.apply(Request::Replace(ReplaceOrder {
            cl_ord_id: cid(id),
            orig_cl_ord_id: cid(orig),
            symbol: sym("AAA"),
            side: Side::Buy,
            ord_type: OrdType::Limit,
            price: Some(px(price)),
            qty: Qty(qty),
            parties: with,
        }))
    }

    fn cancel(&mut self, id: &str, orig: &str, with: Parties) -> Vec<Output> {
        self.apply(Request::Cancel(CancelOrder {
            cl_ord_id: cid(id),
            orig_cl_ord_id: cid(orig),
            symbol: sym("AAA"),
            side: Side::Buy,
            parties: with,
        }))
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.engine.snapshot(&mut bytes);
        bytes
    }
}

/// (ClOrdID, ExecType, parties) of each ExecutionReport.
fn echoed(outputs: &[Output]) -> Vec<(String, ExecType, Parties)> {
    outputs
        .iter()
        .map(|output| match &output.report {
            Report::Execution(report) => (
                report.cl_ord_id.to_string(),
                report.exec_type,
                report.parties,
            ),
            Report::CancelReject(reject) => panic!("unexpected cancel reject {reject:?}"),
        })
        .collect()
}

#[test]
fn every_report_about_an_order_echoes_its_parties() {
    let client = parties(&[("1001", 3), ("7", 12), ("42", 122)]);
    let mut venue = Venue::new(3);
    assert_eq!(
        echoed(&venue.limit("b1", Side::Buy, "10", 100, client)),
        [("b1".into(), ExecType::New, client)]
    );
    // An aggressor without parties: each side's fill echoes its own order's parties.
    assert_eq!(
        echoed(&venue.limit("s1", Side::Sell, "10", 40, Parties::NONE)),
        [
            ("s1".into(), ExecType::New, Parties::NONE),
            ("b1".into(), ExecType::Trade, client),
            ("s1".into(), ExecType::Trade, Parties::NONE),
        ]
    );
    // The cancel's own parties are journaled with it; the order's are what its report echoes.
    assert_eq!(
        echoed(&venue.cancel("c1", "b1", parties(&[("9", 12)]))),
        [("c1".into(), ExecType::Canceled, client)]
    );
}

#[test]
fn a_rejected_order_echoes_the_parties_it_was_sent_with() {
    let client = parties(&[("1001", 3)]);
    let mut venue = Venue::new(3);
    let outputs = venue.limit("b1", Side::Buy, "10.001", 100, client);
    assert_eq!(
        echoed(&outputs),
        [("b1".into(), ExecType::Rejected, client)]
    );
}

#[test]
fn a_replace_with_parties_replaces_them_and_one_without_keeps_them() {
    let first = parties(&[("1001", 3), ("7", 12)]);
    let second = parties(&[("2002", 3)]);
    let mut venue = Venue::new(3);
    venue.limit("b1", Side::Buy, "10", 100, first);
    assert_eq!(
        echoed(&venue.replace("b2", "b1", "10", 90, Parties::NONE)),
        [("b2".into(), ExecType::Replaced, first)]
    );
    assert_eq!(
        echoed(&venue.replace("b3", "b2", "11", 90, second)),
        [("b3".into(), ExecType::Replaced, second)]
    );
    assert_eq!(venue.engine.open_orders()[0].parties, second);
    // A later fill echoes the parties the last replace set.
    let outputs = venue.limit("s1", Side::Sell, "11", 90, Parties::NONE);
    assert_eq!(echoed(&outputs)[1], ("b3".into(), ExecType::Trade, second));
}

/// A venue with two resting orders, one with parties and one without.
fn venue_with_parties(format: u16, client: Parties) -> Venue {
    let mut venue = Venue::new(format);
    venue.limit("b1", Side::Buy, "10", 100, client);
    venue.limit("b2", Side::Buy, "9", 100, Parties::NONE);
    venue
}

#[test]
fn format_3_restores_parties_exactly_and_reports_after_the_restore_echo_them() {
    let client = parties(&[("1001", 3), ("7", 12), ("42", 122)]);
    let original = venue_with_parties(3, client);
    let bytes = original.snapshot();
    assert_eq!(bytes[8..10], [3, 0]);
    let mut restored = Venue::new(3);
    restored.engine.restore(&bytes).unwrap();
    restored.seq = original.seq;
    assert_eq!(restored.engine.open_orders(), original.engine.open_orders());
    assert_eq!(restored.engine.digest(), original.engine.digest());
    assert_eq!(restored.snapshot(), bytes);
    let outputs = restored.limit("s1", Side::Sell, "10", 10, Parties::NONE);
    assert_eq!(echoed(&outputs)[1], ("b1".into(), ExecType::Trade, client));
}

#[test]
fn formats_1_and_2_drop_parties_and_the_digest_shows_it() {
    let client = parties(&[("1001", 3)]);
    for format in [1, 2] {
        let writer = venue_with_parties(format, client);
        let mut restored = Venue::new(3);
        restored.engine.restore(&writer.snapshot()).unwrap();
        let open = restored.engine.open_orders();
        assert!(
            open.iter().all(|order| order.parties.is_empty()),
            "{open:?}"
        );
        assert_ne!(
            restored.engine.digest(),
            writer.engine.digest(),
            "v{format}"
        );
        // Exactly the state the writer would have without the parties.
        let without = venue_with_parties(format, Parties::NONE);
        assert_eq!(
            restored.engine.digest(),
            without.engine.digest(),
            "v{format}"
        );
    }
}

#[test]
fn the_digest_without_parties_is_the_v1_snapshot_hash_and_any_party_changes_it() {
    let plain = venue_with_parties(1, Parties::NONE);
    // Exactly what builds before parties computed: SHA-256 of the v1 snapshot.
    let v1_hash: [u8; 32] = sha2::Sha256::digest(plain.snapshot()).into();
    assert_eq!(plain.engine.digest().0, v1_hash);
    assert_eq!(
        venue_with_parties(3, Parties::NONE).engine.digest().0,
        v1_hash
    );

    let base = venue_with_parties(3, parties(&[("1001", 3), ("7", 12)]))
        .engine
        .digest();
    assert_ne!(base.0, v1_hash);
    for changed in [
        parties(&[("1002", 3), ("7", 12)]),
        parties(&[("1001", 3), ("7", 11)]),
        parties(&[("7", 12), ("1001", 3)]),
        parties(&[("1001", 3)]),
    ] {
        assert_ne!(venue_with_parties(3, changed).engine.digest(), base);
    }
    let mut qualifier = parties(&[("1001", 3), ("7", 12)]);
    let mut edited = Parties::NONE;
    for party in qualifier.as_slice() {
        edited
            .push(Party {
                role_qualifier: None,
                ..*party
            })
            .unwrap();
    }
    qualifier = edited;
    assert_ne!(venue_with_parties(3, qualifier).engine.digest(), base);
}

#[test]
fn a_v3_snapshot_with_bad_parties_is_refused() {
    let client = parties(&[("1001", 3)]);
    let bytes = venue_with_parties(3, client).snapshot();
    let (mut stored, _): (snapshot::v3::StateV3, usize) =
        bincode::serde::decode_from_slice(&bytes[10..], bincode::config::standard()).unwrap();
    let encode = |state: &snapshot::v3::StateV3| {
        let mut bytes = b"BTNSNAP\0\x03\x00".to_vec();
        bincode::serde::encode_into_std_write(state, &mut bytes, bincode::config::standard())
            .unwrap();
        bytes
    };
    // A changed party no longer matches the recorded digest.
    stored.books[0].bids[0].parties[0].role = 12;
    let mut target = Venue::new(3);
    assert!(matches!(
        target.engine.restore(&encode(&stored)),
        Err(SnapshotError::DigestMismatch { .. })
    ));
    // A control character as PartyIDSource is refused before anything else.
    stored.books[0].bids[0].parties[0].source = 1;
    assert!(matches!(
        target.engine.restore(&encode(&stored)),
        Err(SnapshotError::Inconsistent(_))
    ));
    // More parties than the cap.
    stored.books[0].bids[0].parties = vec![
        snapshot::v3::PartyV3 {
            id: PartyId::try_from_bytes(b"1").unwrap(),
            source: b'P',
            role: 3,
            role_qualifier: None,
        };
        crate::constants::PARTIES_MAX + 1
    ];
    assert!(matches!(
        target.engine.restore(&encode(&stored)),
        Err(SnapshotError::Inconsistent(_))
    ));
    assert!(target.engine.open_orders().is_empty());
}

fn party_strategy() -> impl Strategy<Value = Party> {
    (
        "[ -~]{1,32}",
        0x21..=0x7eu8,
        any::<u16>(),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(|(id, source, role, qualifier)| {
            Party::try_from_wire(
                PartyId::try_from_bytes(id.as_bytes()).unwrap(),
                source,
                role,
                qualifier,
            )
            .unwrap()
        })
}

fn parties_strategy() -> impl Strategy<Value = Parties> {
    proptest::collection::vec(party_strategy(), 0..=crate::constants::PARTIES_MAX)
        .prop_map(|list| Parties::from_slice(&list).unwrap())
}

/// std's hasher with its fixed keys, so equal values hash alike within a test run.
fn hash_of(parties: &Parties) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parties.hash(&mut hasher);
    hasher.finish()
}

proptest! {
    #[test]
    fn parties_are_equal_exactly_when_their_entries_are_and_equal_ones_hash_alike(
        a in proptest::collection::vec(party_strategy(), 0..=crate::constants::PARTIES_MAX),
        b in proptest::collection::vec(party_strategy(), 0..=crate::constants::PARTIES_MAX),
    ) {
        let (left, right) = (Parties::from_slice(&a).unwrap(), Parties::from_slice(&b).unwrap());
        prop_assert_eq!(left == right, a == b);
        prop_assert_eq!(left.cmp(&right) == std::cmp::Ordering::Equal, a == b);
        let again = Parties::from_slice(&a).unwrap();
        prop_assert!(left == again);
        prop_assert_eq!(hash_of(&left), hash_of(&again));
        // A prefix is not the list.
        if let Some((_, prefix)) = a.split_last() {
            prop_assert!(left != Parties::from_slice(prefix).unwrap());
        }
    }
}

fn journaled(input: &Input) -> Vec<u8> {
    let mut bytes = Vec::new();
    bincode::serde::encode_into_std_write(input, &mut bytes, bincode::config::standard()).unwrap();
    bytes
}

proptest! {
    #[test]
    fn journal_payloads_round_trip_with_parties(
        parties in parties_strategy(),
        kind in 0..3u8,
        seq in 1..u64::MAX,
    ) {
        let request = match kind {
            0 => Request::New(NewOrder {
                cl_ord_id: cid("A1"),
                symbol: sym("AAA"),
                side: Side::Buy,
                ord_type: OrdType::Limit,
                price: Some(px("10")),
                qty: Qty(5),
                time_in_force: TimeInForce::Day,
                parties,
            }),
            1 => Request::Cancel(CancelOrder {
                cl_ord_id: cid("C1"),
                orig_cl_ord_id: cid("A1"),
                symbol: sym("AAA"),
                side: Side::Sell,
                parties,
            }),
            _ => Request::Replace(ReplaceOrder {
                cl_ord_id: cid("R1"),
                orig_cl_ord_id: cid("A1"),
                symbol: sym("AAA"),
                side: Side::Sell,
                ord_type: OrdType::Limit,
                price: None,
                qty: Qty(7),
                parties,
            }),
        };
        let input = Input { seq, time: Timestamp(seq), session: 3, request };
        let bytes = journaled(&input);
        prop_assert_eq!(Input::decode_journaled(&bytes).unwrap(), input.clone());
        // A payload of an earlier build is this one without the parties' length (0).
        if parties.is_empty() {
            prop_assert_eq!(Input::decode_journaled(&bytes[..bytes.len() - 1]).unwrap(), input);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(Input::decode_journaled(&longer).is_err());
    }
}

#[test]
fn a_journal_payload_of_an_earlier_build_reads_as_the_same_input_without_parties() {
    // The exact bytes an earlier build journaled for a NewOrderSingle: seq 7, time 9, session 2,
    // variant 0 (New), "A1", "AAA", Buy (variant 0), Limit (1), Some(10 × 10^8), qty 5, Day (0).
    let mut earlier = vec![7, 9, 2, 0, 2, b'A', b'1', 3, b'A', b'A', b'A', 0, 1, 1];
    bincode::serde::encode_into_std_write(
        1_000_000_000i64,
        &mut earlier,
        bincode::config::standard(),
    )
    .unwrap();
    earlier.extend([5, 0]);
    let input = Input::decode_journaled(&earlier).unwrap();
    assert_eq!(
        input,
        Input {
            seq: 7,
            time: Timestamp(9),
            session: 2,
            request: Request::New(NewOrder {
                cl_ord_id: cid("A1"),
                symbol: sym("AAA"),
                side: Side::Buy,
                ord_type: OrdType::Limit,
                price: Some(px("10")),
                qty: Qty(5),
                time_in_force: TimeInForce::Day,
                parties: Parties::NONE,
            }),
        }
    );
}

proptest! {
    #[test]
    fn a_journal_payload_carries_its_origin_and_one_without_reads_as_before(
        seq in 1u64..u64::MAX, msg_seq_num in 1u64..u64::MAX, sequence_epoch in 0u64..u64::MAX,
    ) {
        let request = Request::Cancel(CancelOrder {
            cl_ord_id: cid("C1"),
            orig_cl_ord_id: cid("A1"),
            symbol: sym("AAA"),
            side: Side::Buy,
            parties: Parties::NONE,
        });
        let input = Input { seq, time: Timestamp(seq), session: 1, request };
        let origin = JournalOrigin { msg_seq_num, sequence_epoch };
        let mut with = Vec::new();
        input.encode_journaled(Some(origin), &mut with).unwrap();
        prop_assert_eq!(
            Input::decode_journaled_with_origin(&with).unwrap(),
            (input.clone(), Some(origin))
        );
        prop_assert_eq!(Input::decode_journaled(&with).unwrap(), input.clone());
        let without = journaled(&input);
        prop_assert_eq!(Input::decode_journaled_with_origin(&without).unwrap(), (input.clone(), None));
        // A torn origin is refused, never read as a shorter one.
        prop_assert!(Input::decode_journaled_with_origin(&with[..with.len() - 1]).is_err());
        // An earlier build's payload (no parties' length) never reads as one with an origin.
        let earlier = &without[..without.len() - 1];
        prop_assert_eq!(Input::decode_journaled_with_origin(earlier).unwrap().1, None);
    }
}
