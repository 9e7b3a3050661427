//! The upgrade-and-crash soak, with real processes over real TCP: 50 counterparties trade
//! continuously through 5 canaries (a quarter of the symbols to the standby and back), 20
//! switches of authority between blue and green under an approved change, 2 planned upgrades of
//! the gateway process, 2 SIGKILLs of it, and 5 SIGKILLs of the authoritative engine. Afterwards
//! no counterparty saw a Logout or a disconnect, no gap and no resend around the planned
//! upgrades, every sequence gap came around a gateway kill and
//! was closed by a resend, none came twice without PossDup, every order got exactly one
//! acknowledgement, no ExecID came twice, per symbol the quantity bought in fills equals the
//! quantity sold, every order's last report says what a replay of the journal says, and both
//! engines' books equal that replay.

use std::time::Duration;

use baton::bench::demo::{self, DemoConfig};
use baton::control::api::SwitchScope;

#[test]
fn fifty_sessions_through_twenty_switches_five_kills_and_two_gateway_upgrades() {
    soak(2);
}

/// The soak, with `gateway_upgrades` planned upgrades of the gateway process before its kills.
fn soak(gateway_upgrades: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = DemoConfig {
        program: env!("CARGO_BIN_EXE_baton").into(),
        dir: dir.path().to_path_buf(),
        sessions: 50,
        orders_per_session_per_s: 10,
        canaries: 5,
        switches: 20,
        kills: 5,
        gateway_upgrades,
        gateway_kills: 2,
        event_gap: Duration::from_millis(300),
    };
    let report = demo::run(&config, &|line| eprintln!("{line}")).expect("soak ran");
    eprintln!("{}", report.render());
    assert_eq!(
        report.sessions_kept, 50,
        "a session saw a Logout or a disconnect"
    );
    assert_eq!(
        report.gaps, 0,
        "sequence gaps outside the gateway kills: {:?}",
        report.gap_samples
    );
    assert_eq!(report.gateway_upgrades.len(), gateway_upgrades);
    for upgrade in &report.gateway_upgrades {
        assert_eq!(
            (upgrade.disconnects, upgrade.resent, upgrade.gaps),
            (0, 0, 0),
            "a planned upgrade showed: {upgrade:?}; {:?}",
            report.gap_samples
        );
        assert_eq!(upgrade.sessions, 50, "{upgrade:?}");
    }
    assert_eq!(report.gaps_open, 0, "gaps asked for and never closed");
    assert_eq!(report.gateway_kills.len(), 2);
    for kill in &report.gateway_kills {
        assert_eq!(kill.disconnects, 0, "a gateway kill disconnected: {kill:?}");
        assert_eq!(
            kill.sessions_answered, 50,
            "not every session answered after a gateway kill: {kill:?}"
        );
    }
    assert_eq!(
        report.repeated, 0,
        "sequence numbers repeated without PossDup"
    );
    assert_eq!(report.lost, 0, "orders without acknowledgement");
    assert_eq!(
        report.duplicated, 0,
        "duplicated acknowledgements or ExecIDs"
    );
    assert!(
        report.orders > 1_000,
        "too little flow to mean anything: {}",
        report.orders
    );
    // Each canary is a start and a rollback, then the 20 switches.
    assert_eq!(report.switches.iter().filter(|s| s.planned).count(), 30);
    assert_eq!(
        report
            .switches
            .iter()
            .filter(|s| matches!(s.scope, SwitchScope::CanaryStarted { .. }))
            .count(),
        5
    );
    assert!(report.audit_verified, "the audit chain does not verify");
    assert!(report.change.is_some(), "the change was not closed");
    assert_eq!(report.switches.iter().filter(|s| !s.planned).count(), 5);
    assert!(
        report.books_match_replay,
        "books differ from the journal replay: {:?}",
        report.digests
    );
    // Reconciled: every trade has a buyer and a seller, and the counterparties' view of every
    // order is the journal's.
    assert_eq!(
        report.filled_per_symbol.len(),
        4,
        "{:?}",
        report.filled_per_symbol
    );
    for (symbol, (bought, sold)) in &report.filled_per_symbol {
        assert!(*bought > 0, "no fills on {symbol}");
        assert_eq!(bought, sold, "{symbol}: bought {bought}, sold {sold}");
    }
    assert_eq!(report.final_states_compared, report.orders);
    assert_eq!(
        report.final_state_mismatches, 0,
        "orders whose last report differs from the replay: {:?}",
        report.final_state_samples
    );
    assert!(report.ok(), "{}", report.render());
}
