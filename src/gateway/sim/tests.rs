//! The simulation run by `cargo test`: a fixed set of seeds, the planted bugs it must catch and
//! the regression seeds of the bugs it found.

use super::*;

/// Seeds every `cargo test` runs; a failing seed found once joins them.
const SEEDS: std::ops::Range<u64> = 0..constants::SIM_TEST_SEEDS;

#[test]
fn the_simulation_keeps_every_invariant_on_a_fixed_set_of_seeds() {
    let config = SimConfig::default();
    let mut transfers = 0;
    for seed in SEEDS {
        match run(seed, &config) {
            Ok(report) => transfers += report.transfers,
            Err(failure) => panic!("{failure}"),
        }
    }
    // The seeds end canaries that answered, so the state transfer is among what they check.
    assert!(transfers > 0, "no seed moved a canary's state back");
}

#[test]
fn the_same_seed_runs_the_same_way_down_to_the_bytes_the_sessions_stored() {
    let config = SimConfig::default();
    let first = run(7, &config).map_err(|f| f.to_string());
    let second = run(7, &config).map_err(|f| f.to_string());
    assert_eq!(first, second);
    let other = run(8, &config).map_err(|f| f.to_string());
    assert_ne!(first, other, "a different seed is a different run");
}

/// The first seed within [`constants::SIM_PLANTED_SEEDS_MAX`] that catches `bug`.
fn caught(bug: PlantedBug) -> Option<(u64, String)> {
    let config = SimConfig {
        planted: Some(bug),
        ..SimConfig::default()
    };
    let caught = (0..constants::SIM_PLANTED_SEEDS_MAX)
        .find_map(|seed| run(seed, &config).err().map(|f| (seed, f.invariant)));
    eprintln!("{bug:?} caught: {caught:?}");
    caught
}

#[test]
fn a_planted_delivery_before_journaling_is_caught() {
    let caught = caught(PlantedBug::DeliverBeforeJournal);
    assert!(
        caught
            .as_ref()
            .is_some_and(|(_, why)| why.contains("journal does not hold")),
        "not caught within {} seeds: {caught:?}",
        constants::SIM_PLANTED_SEEDS_MAX
    );
}

#[test]
fn a_planted_redelivery_after_failover_is_caught() {
    let caught = caught(PlantedBug::RedeliverAfterFailover);
    assert!(
        caught
            .as_ref()
            .is_some_and(|(_, why)| why.contains("twice")),
        "not caught as a double delivery within {} seeds: {caught:?}",
        constants::SIM_PLANTED_SEEDS_MAX
    );
}

#[test]
fn a_planted_switch_before_the_standby_answered_through_the_barrier_is_caught() {
    let caught = caught(PlantedBug::SwitchBeforeStandbyAnswered);
    assert!(
        caught
            .as_ref()
            .is_some_and(|(_, why)| why.contains("barrier")),
        "not caught within {} seeds: {caught:?}",
        constants::SIM_PLANTED_SEEDS_MAX
    );
}

/// Regression: a gateway killed after an input's outputs reached their sessions and before
/// its cursor write landed delivered them again (same ExecIDs) after the restart. Found by
/// this seed; fixed by reading each session store's newest ExecID at start.
#[test]
fn seed_0_a_cursor_write_lost_in_a_crash_delivers_nothing_twice() {
    if let Err(failure) = run(0, &SimConfig::default()) {
        panic!("{failure}");
    }
}

/// Regression: a standby restoring from a snapshot asked it of the authoritative engine,
/// which died before answering; the engine that took authority was never asked, and the
/// standby waited, without inputs, for good. Found by this seed.
#[test]
fn seed_12_a_standby_whose_snapshot_source_died_is_restored_from_the_next_one() {
    if let Err(failure) = run(12, &SimConfig::default()) {
        panic!("{failure}");
    }
}
