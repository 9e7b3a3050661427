//! `baton up`: the supervisor starts the engine and the gateway, restarts a killed engine, and
//! stops everything cleanly on SIGTERM.

mod support;

use std::time::Duration;

use baton::bench::initiator::{Initiator, InitiatorConfig};
use support::{
    WAIT, exit_within, new_order, report, sigterm, spawn_up, text, wait_for_engine, write_up_config,
};

#[test]
fn up_runs_the_venue_restarts_a_dead_engine_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_up_config(dir.path(), "127.0.0.1:0");
    let (mut up, ready) = spawn_up(&config_path);
    let addr = ready.listen;
    let mut client = Initiator::connect(addr, InitiatorConfig::new("CLIENT1", "BATON")).unwrap();
    client.logon(false, WAIT).unwrap();
    wait_for_engine(&mut client);
    new_order(&mut client, "UP-1", b'1', 10, "10");
    assert_eq!(text(&report(&mut client), 150), "0");

    // Kill the engine behind the supervisor's back: it is restarted and rebuilt from the journal,
    // so the resting order is still there to cancel.
    let engine_pid = find_process(&["engine", &config_path.display().to_string()])
        .expect("engine child running");
    // SAFETY: kill(2) on a pid we just looked up; the worst case is signalling nothing.
    unsafe {
        libc::kill(engine_pid, libc::SIGKILL);
    }
    // The supervisor starts a new engine process (the killed one is gone or a nameless zombie).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match find_process(&["engine", &config_path.display().to_string()]) {
            Some(pid) if pid != engine_pid => break,
            running => assert!(
                std::time::Instant::now() < deadline,
                "the engine was not restarted: {running:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_engine(&mut client);
    client
        .send(b"F", |e| {
            e.str(41, "UP-1")
                .str(11, "UP-2")
                .str(55, "AAPL")
                .char(54, b'1')
                .str(60, "20261123-12:00:00");
        })
        .unwrap();
    assert_eq!(
        text(&report(&mut client), 150),
        "4",
        "canceled: the book survived the engine restart"
    );

    // SIGTERM: the gateway logs the session out, everything stops.
    sigterm(&up);
    let logout = client
        .recv_until(WAIT, "Logout", |m| m.msg_type() == b"5")
        .unwrap();
    assert_eq!(text(&logout, 58), "gateway shutting down");
    let status = exit_within(&mut up, WAIT).expect("baton up did not stop");
    assert!(status.success(), "baton up exited with {status}");
}

/// The pid of a running process whose command line contains every one of `words`.
fn find_process(words: &[&str]) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            words
                .iter()
                .all(|word| cmdline.contains(word))
                .then_some(pid)
        })
}
