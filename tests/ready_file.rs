//! `BATON_READY_FILE` with the real binary: a gateway started with every endpoint on port 0
//! says which port each one got, so whoever started it connects without picking a port first
//! (and racing another process for it) or reading its stdout.

mod support;

use std::process::Stdio;

use support::control::status;
use support::{
    Gateway, Killed, STARTUP_WAIT, first_stdout_line, gateway_command_ready, log_on,
    scrape_metrics, wait_ready, write_config,
};

#[test]
fn the_ready_file_names_the_fix_control_and_metrics_addresses_the_gateway_bound() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let (mut command, ready_path) = gateway_command_ready(&config, dir.path());
    let child = command
        .args(["--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn baton gateway");
    let mut gateway = Killed(child);
    let line = first_stdout_line(&mut gateway.0, STARTUP_WAIT);
    let ready = wait_ready(&ready_path, &mut gateway.0);

    // The same FIX address as the line on stdout, and each address answers as what it names.
    assert_eq!(
        line.trim_end(),
        format!("baton gateway listening on {}", ready.listen)
    );
    let client = log_on(ready.listen);
    // A status reply (no engine: nothing journaled), not some other service on that port.
    assert_eq!(status(ready.control).journal_last_seq, 0);
    drop(client);
    let metrics = ready.metrics.expect("metrics named when served");
    let response = scrape_metrics(metrics);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Renamed into place: nothing half-written is left beside it.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Without metrics, the file does not name any.
    let journal = dir.path().join("journal2");
    let other = Gateway::start_with(
        &config,
        &dir.path().join("store2"),
        &["--journal-dir".as_ref(), journal.as_os_str()],
    );
    assert_eq!(other.metrics, None);
    assert_ne!(other.control, ready.control);
}
