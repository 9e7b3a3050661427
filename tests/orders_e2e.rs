//! Orders end to end over real TCP with the real binaries: two counterparties trade through the
//! gateway, its sequencer and journal, and a matching engine in its own process.

mod support;

use support::{WAIT, logged_on, new_order, report, start_trading, text, wait_for_engine};

#[test]
fn crossing_orders_fill_both_sides_with_correct_quantities() {
    let dir = tempfile::tempdir().unwrap();
    let (_engine, gateway) = start_trading(dir.path(), 2);
    let mut buyer = logged_on(&gateway, 1);
    let mut seller = logged_on(&gateway, 2);
    wait_for_engine(&mut buyer);

    new_order(&mut buyer, "B-1", b'1', 100, "10.25");
    let ack = report(&mut buyer);
    assert_eq!(
        (text(&ack, 150), text(&ack, 39), text(&ack, 11)),
        ("0".into(), "0".into(), "B-1".into())
    );
    let buy_order_id = text(&ack, 37);
    assert_eq!(text(&ack, 151), "100");

    new_order(&mut seller, "S-1", b'2', 60, "10.2");
    let ack = report(&mut seller);
    assert_eq!(
        (text(&ack, 150), text(&ack, 11)),
        ("0".into(), "S-1".into())
    );
    let sell_order_id = text(&ack, 37);
    assert_ne!(buy_order_id, sell_order_id);
    let fill = report(&mut seller);
    assert_eq!(
        (text(&fill, 150), text(&fill, 39)),
        ("F".into(), "2".into())
    );
    assert_eq!(
        (text(&fill, 32), text(&fill, 31)),
        ("60".into(), "10.25".into()),
        "passive price"
    );
    assert_eq!(
        (text(&fill, 14), text(&fill, 151)),
        ("60".into(), "0".into())
    );
    assert_eq!(text(&fill, 37), sell_order_id);

    let fill = report(&mut buyer);
    assert_eq!(
        (text(&fill, 150), text(&fill, 39)),
        ("F".into(), "1".into())
    );
    assert_eq!(
        (text(&fill, 32), text(&fill, 31)),
        ("60".into(), "10.25".into())
    );
    assert_eq!(
        (text(&fill, 14), text(&fill, 151), text(&fill, 6)),
        ("60".into(), "40".into(), "10.25".into())
    );
    assert_eq!(text(&fill, 37), buy_order_id);
    assert_ne!(text(&fill, 17), "", "ExecID present");

    // Replace the rest of the buy order to a lower quantity, then cancel it.
    buyer
        .send(b"G", |e| {
            e.str(41, "B-1")
                .str(11, "B-2")
                .str(55, "AAPL")
                .char(54, b'1')
                .str(60, "20261123-12:00:01")
                .uint(38, 80)
                .char(40, b'2')
                .str(44, "10.25");
        })
        .unwrap();
    let replaced = report(&mut buyer);
    assert_eq!(
        (
            text(&replaced, 150),
            text(&replaced, 11),
            text(&replaced, 41)
        ),
        ("5".into(), "B-2".into(), "B-1".into())
    );
    assert_eq!(
        (
            text(&replaced, 38),
            text(&replaced, 14),
            text(&replaced, 151)
        ),
        ("80".into(), "60".into(), "20".into())
    );
    assert_eq!(
        text(&replaced, 37),
        buy_order_id,
        "OrderID kept across replace"
    );

    buyer
        .send(b"F", |e| {
            e.str(41, "B-2")
                .str(11, "B-3")
                .str(55, "AAPL")
                .char(54, b'1')
                .str(60, "20261123-12:00:02");
        })
        .unwrap();
    let canceled = report(&mut buyer);
    assert_eq!(
        (
            text(&canceled, 150),
            text(&canceled, 39),
            text(&canceled, 151)
        ),
        ("4".into(), "4".into(), "0".into())
    );

    // Canceling again is refused with an OrderCancelReject.
    buyer
        .send(b"F", |e| {
            e.str(41, "B-3")
                .str(11, "B-4")
                .str(55, "AAPL")
                .char(54, b'1')
                .str(60, "20261123-12:00:03");
        })
        .unwrap();
    let reject = report(&mut buyer);
    assert_eq!(reject.msg_type(), b"9");
    assert_eq!(text(&reject, 434), "1");
    assert_eq!((buyer.gaps(), seller.gaps()), (0, 0));
}

#[test]
fn invalid_orders_are_rejected_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_engine, gateway) = start_trading(dir.path(), 1);
    let mut client = logged_on(&gateway, 1);
    wait_for_engine(&mut client);
    // Unknown symbol.
    client
        .send(b"D", |e| {
            e.str(11, "X-1")
                .str(55, "NOPE")
                .char(54, b'1')
                .str(60, "20261123-12:00:00")
                .uint(38, 10)
                .char(40, b'2')
                .str(44, "1");
        })
        .unwrap();
    let rejected = report(&mut client);
    assert_eq!(
        (text(&rejected, 150), text(&rejected, 103)),
        ("8".into(), "1".into())
    );
    // Price off the tick.
    new_order(&mut client, "X-2", b'1', 10, "10.001");
    let rejected = report(&mut client);
    assert_eq!(text(&rejected, 150), "8");
    assert!(!text(&rejected, 58).is_empty());
    // Duplicate ClOrdID.
    new_order(&mut client, "X-3", b'1', 10, "10");
    assert_eq!(text(&report(&mut client), 150), "0");
    new_order(&mut client, "X-3", b'1', 10, "10");
    let rejected = report(&mut client);
    assert_eq!(
        (text(&rejected, 150), text(&rejected, 103)),
        ("8".into(), "6".into())
    );
    // A limit order without a price never reaches the engine.
    client
        .send(b"D", |e| {
            e.str(11, "X-4")
                .str(55, "AAPL")
                .char(54, b'1')
                .str(60, "20261123-12:00:00")
                .uint(38, 10)
                .char(40, b'2');
        })
        .unwrap();
    let reject = client
        .recv_until(WAIT, "BusinessMessageReject", |m| m.msg_type() == b"j")
        .unwrap();
    assert_eq!(text(&reject, 380), "5");
}
