//! Parties end to end with real processes: a counterparty's order with its Parties group is
//! acknowledged and filled with the group echoed; a standby that joins later is rebuilt from the
//! journal (it runs the authoritative engine's executable), takes over when that engine is
//! SIGKILLed, and its reports about the order still carry the parties, as does a replace that
//! names none. A snapshot carrying parties is covered by `snapshot_versions`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton::bench::initiator::Initiator;
use baton::control::api::{EngineRole, Status};
use baton::fix::codec::Message;
use support::control::status;
use support::venue::write_venue_config;
use support::{
    EngineProcess, logged_on, new_order, report, start_gateway_for_engines, text, wait_for_engine,
    wait_for_socket,
};

/// The seller's parties as (PartyID, PartyIDSource, PartyRole, PartyRoleQualifier): client,
/// executing trader and an algorithm as investment decision maker, as MiFID II short codes.
const PARTIES: [(&str, &str, &str, Option<&str>); 3] = [
    ("1001", "P", "3", Some("24")),
    ("7", "P", "12", None),
    ("ALGO7", "P", "122", Some("22")),
];

/// The Parties group as the venue must echo it: NoPartyIDs, then each party's fields in the
/// dictionary's member order.
fn expected_group() -> Vec<(u32, String)> {
    let mut group = vec![(453, PARTIES.len().to_string())];
    for (id, source, role, qualifier) in PARTIES {
        group.extend([
            (448, id.to_owned()),
            (447, source.to_owned()),
            (452, role.to_owned()),
        ]);
        if let Some(qualifier) = qualifier {
            group.push((2376, qualifier.to_owned()));
        }
    }
    group
}

/// The Parties fields of a report, in the order they came.
fn group_of(message: &Message) -> Vec<(u32, String)> {
    message
        .fields()
        .filter(|(tag, _)| matches!(tag, 453 | 448 | 447 | 452 | 2376))
        .map(|(tag, value)| (tag, String::from_utf8_lossy(value).into_owned()))
        .collect()
}

/// A Day limit sell of `qty` at 50 on AAPL carrying [`PARTIES`].
fn sell_with_parties(client: &mut Initiator, cl_ord_id: &str, qty: u64) {
    client
        .send(b"D", |e| {
            e.str(11, cl_ord_id)
                .str(55, "AAPL")
                .char(54, b'2')
                .str(60, "20261123-12:00:00")
                .uint(38, qty)
                .char(40, b'2')
                .str(44, "50")
                .uint(453, PARTIES.len() as u64);
            for (id, source, role, qualifier) in PARTIES {
                e.str(448, id).str(447, source).str(452, role);
                if let Some(qualifier) = qualifier {
                    e.str(2376, qualifier);
                }
            }
        })
        .expect("send order with parties");
}

/// Bound on a status condition: generous, since the gateway, two engines and the machine's other
/// work share a few cores; it only stands between a hang and a failure.
const STATUS_WAIT: Duration = Duration::from_secs(60);

/// Polls the gateway's status until `check` holds, within [`STATUS_WAIT`].
fn wait_until(addr: SocketAddr, what: &str, check: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + STATUS_WAIT;
    loop {
        let s = status(addr);
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The next report, which must have `exec_type` (150).
fn next_report(client: &mut Initiator, exec_type: &str) -> Message {
    let message = report(client);
    assert_eq!(text(&message, 150), exec_type, "{message:?}");
    message
}

#[test]
fn parties_are_echoed_and_survive_a_snapshot_restore_and_failover() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_venue_config(dir.path(), "", "approval_required = []", 2);
    let mut blue = EngineProcess::start(&config, dir.path(), "blue");
    wait_for_socket(&dir.path().join("blue.sock"));
    let green_addr = format!("unix://{}", dir.path().join("green.sock").display());
    let gateway = start_gateway_for_engines(dir.path(), &[&blue.addr, &green_addr]);
    let control = gateway.control;
    let mut buyer = logged_on(&gateway, 1);
    let mut seller = logged_on(&gateway, 2);
    wait_for_engine(&mut buyer);

    // The acknowledgement echoes the parties; the fill against an order without any echoes
    // them to the seller only.
    sell_with_parties(&mut seller, "S-1", 20);
    let ack = next_report(&mut seller, "0");
    assert_eq!(group_of(&ack), expected_group());
    new_order(&mut buyer, "B-1", b'1', 5, "50");
    assert_eq!(group_of(&next_report(&mut buyer, "0")), []);
    assert_eq!(group_of(&next_report(&mut buyer, "F")), []);
    let fill = next_report(&mut seller, "F");
    assert_eq!(group_of(&fill), expected_group());
    assert_eq!(text(&fill, 14), "5");

    // Green joins empty after S-1 was journaled: it learns S-1's parties from the journal's
    // replay (or, were it another build, from blue's snapshot), never from the order itself.
    let _green = EngineProcess::start(&config, dir.path(), "green");
    let journaled = status(control).journal_last_seq;
    wait_until(control, "green restored and caught up", |s| {
        s.engines.iter().any(|e| {
            e.name == "green" && e.role == EngineRole::Standby && e.answered_through >= journaled
        })
    });
    blue.kill();
    wait_until(control, "green authoritative after blue's death", |s| {
        s.engines
            .iter()
            .any(|e| e.name == "green" && e.role == EngineRole::Authoritative)
    });

    // Green's reports about the order carry the parties it restored.
    new_order(&mut buyer, "B-2", b'1', 5, "50");
    assert_eq!(text(&next_report(&mut buyer, "0"), 11), "B-2");
    next_report(&mut buyer, "F");
    let fill = next_report(&mut seller, "F");
    assert_eq!(group_of(&fill), expected_group());
    assert_eq!(text(&fill, 14), "10");

    // A replace without parties keeps the order's own.
    seller
        .send(b"G", |e| {
            e.str(41, "S-1")
                .str(11, "S-2")
                .str(55, "AAPL")
                .char(54, b'2')
                .str(60, "20261123-12:00:00")
                .uint(38, 18)
                .char(40, b'2')
                .str(44, "50");
        })
        .expect("send replace");
    let replaced = next_report(&mut seller, "5");
    assert_eq!(text(&replaced, 11), "S-2");
    assert_eq!(group_of(&replaced), expected_group());
    assert_eq!((buyer.gaps(), seller.gaps()), (0, 0));
}
