//! Hot standby with real processes: a green engine joins, is restored from blue's snapshot and
//! shadows it; when blue is SIGKILLed, green takes authority and nothing is lost or sent twice.

mod support;

use std::collections::{HashMap, HashSet};

use support::control::{standby_caught_up, status_until};
use support::{
    EngineProcess, logged_on, new_order, report, start_blue_green, start_gateway_for_engines, text,
    wait_for_engine, wait_for_socket, write_config,
};

#[test]
fn authoritative_engine_killed_standby_takes_over_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (blue, green, gateway) = start_blue_green(dir.path(), 2);
    kill_blue_and_trade_on(dir.path(), blue, green, gateway, false);
}

/// The same over shared-memory links (`[link] transport = "shm"` on gateway and engines): the
/// gateway learns of blue's death from the link's socket closing, as on a plain socket link.
#[test]
fn over_shared_memory_a_killed_engine_is_seen_and_failed_over() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 2, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[link]\ntransport = \"shm\"\n");
    std::fs::write(&config, text).unwrap();
    let blue = EngineProcess::start(&config, dir.path(), "blue");
    wait_for_socket(&dir.path().join("blue.sock"));
    let green = EngineProcess::start(&config, dir.path(), "green");
    wait_for_socket(&dir.path().join("green.sock"));
    let gateway = start_gateway_for_engines(dir.path(), &[&blue.addr, &green.addr]);
    kill_blue_and_trade_on(dir.path(), blue, green, gateway, true);
}

/// Rests orders on blue, SIGKILLs it once green is caught up, and checks that green answers
/// every order after it exactly once, and that blue, restarted empty, rejoins. With `shm`, first
/// checks that the links really are shared memory: blue has a link region mapped.
fn kill_blue_and_trade_on(
    dir: &std::path::Path,
    mut blue: EngineProcess,
    green: EngineProcess,
    gateway: support::Gateway,
    shm: bool,
) {
    let mut buyer = logged_on(&gateway, 1);
    let mut seller = logged_on(&gateway, 2);
    wait_for_engine(&mut buyer);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", blue.child.id())).unwrap();
    assert_eq!(maps.contains("memfd:baton-link"), shm, "blue's link region");
    // Resting orders before the kill; green (joined empty) is restored from blue's snapshot.
    for i in 0..20 {
        new_order(&mut seller, &format!("S-{i}"), b'2', 10, "50");
        assert_eq!(text(&report(&mut seller), 150), "0");
    }
    // Green holds every resting order before blue dies: it is the standby and has answered
    // every input journaled so far.
    status_until(gateway.control, "green caught up as the standby", |s| {
        standby_caught_up(s, "green")
    });
    // The standby's wake-ups must not preempt the order path: green runs in SCHED_BATCH, blue,
    // which answers, in the normal class.
    classes_until(green.child.id(), libc::SCHED_BATCH, "green, the standby");
    classes_until(
        blue.child.id(),
        libc::SCHED_OTHER,
        "blue, the authoritative engine",
    );
    blue.kill();
    // Orders keep flowing: green has the book, so each buy fills against blue-era resting orders.
    let mut acks: HashMap<String, usize> = HashMap::new();
    let mut exec_ids = HashSet::new();
    for i in 0..20 {
        new_order(&mut buyer, &format!("B-{i}"), b'1', 10, "50");
    }
    let mut fills = 0;
    while fills < 20 {
        let message = report(&mut buyer);
        assert!(
            exec_ids.insert(text(&message, 17)),
            "ExecID {} twice",
            text(&message, 17)
        );
        match text(&message, 150).as_str() {
            "0" => *acks.entry(text(&message, 11)).or_default() += 1,
            "F" => fills += 1,
            other => panic!("unexpected ExecType {other}: {message:?}"),
        }
    }
    assert_eq!(acks.len(), 20);
    assert!(
        acks.values().all(|&n| n == 1),
        "every order acknowledged exactly once: {acks:?}"
    );
    let mut passive_fills = 0;
    while passive_fills < 20 {
        let message = report(&mut seller);
        assert!(exec_ids.insert(text(&message, 17)));
        assert_eq!(text(&message, 150), "F");
        passive_fills += 1;
    }
    assert_eq!((buyer.gaps(), seller.gaps()), (0, 0));
    // Green answers now: back in the normal class.
    classes_until(
        green.child.id(),
        libc::SCHED_OTHER,
        "green, now authoritative",
    );
    // Blue comes back empty and rejoins as the standby; trading goes on.
    let blue = EngineProcess::start(&dir.join("baton.toml"), dir, "blue");
    wait_for_socket(&dir.join("blue.sock"));
    new_order(&mut buyer, "B-after", b'1', 5, "49");
    assert_eq!(text(&report(&mut buyer), 150), "0");
    classes_until(
        blue.child.id(),
        libc::SCHED_BATCH,
        "blue, the standby again",
    );
}

/// Waits (bounded) until every thread of process `pid` is in scheduling class `class`.
fn classes_until(pid: u32, class: i32, what: &str) {
    let classes = || -> Vec<i32> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter_map(|task| task.file_name().to_str()?.parse::<u32>().ok())
                    .filter_map(|tid| baton::gateway::placement::policy_of(tid).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = classes();
        if !now.is_empty() && now.iter().all(|&c| c == class) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: threads in classes {now:?}, expected all {class}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
