//! The metrics endpoint of the real `baton gateway`, scraped over a real socket as Prometheus
//! would: what an operator's monitoring sees when a counterparty logs on, and that a
//! non-loopback address stops the gateway before it serves anything.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{
    EngineProcess, WAIT, gateway_command, logged_on, start_gateway_with_metrics, wait_for_socket,
    write_config,
};

/// A response: its status line, its head (status line and headers) and its body.
struct Scraped {
    status_line: String,
    head: String,
    body: String,
}

/// One HTTP/1.1 request for `path`, read until the gateway closes the connection.
fn get(addr: SocketAddr, path: &str) -> Scraped {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain;version=0.0.4\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("response, then close");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {response:?}"));
    Scraped {
        status_line: head.lines().next().unwrap_or_default().to_owned(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Scrapes until the exposition contains every one of `lines` (status changes reach the
/// sequencer asynchronously), or fails showing the last scrape.
fn scrape_until(addr: SocketAddr, lines: &[&str]) -> Scraped {
    let deadline = Instant::now() + WAIT;
    loop {
        let scraped = get(addr, "/metrics");
        assert_eq!(scraped.status_line, "HTTP/1.1 200 OK", "{}", scraped.head);
        if lines
            .iter()
            .all(|line| scraped.body.lines().any(|have| have == *line))
        {
            return scraped;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {lines:?} in:\n{}",
            scraped.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_scrape_shows_sessions_and_engines_and_follows_a_logon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), 2, "");
    let engine = EngineProcess::start(&config, dir.path(), "blue");
    wait_for_socket(&dir.path().join("blue.sock"));
    let (gateway, metrics) = start_gateway_with_metrics(dir.path(), &engine.addr);

    let scraped = scrape_until(
        metrics,
        &[
            "baton_engine_up{engine=\"blue\",role=\"authoritative\"} 1",
            "baton_sessions_configured 2",
        ],
    );
    assert!(
        scraped
            .head
            .lines()
            .any(|line| line == "Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        scraped.head
    );
    assert!(
        scraped.head.lines().any(|line| line == "Connection: close"),
        "{}",
        scraped.head
    );
    for line in [
        "# TYPE baton_sessions_logged_on gauge",
        "baton_sessions_logged_on 0",
        "baton_session_logged_on{target_comp_id=\"CLIENT1\"} 0",
        // Non-stop sessions: always inside their window. The audit log the gateway just opened
        // verifies through its head.
        "baton_session_in_window{target_comp_id=\"CLIENT1\"} 1",
        "baton_audit_chain_ok 1",
        "baton_canary_active 0",
        "baton_halted_symbols 0",
    ] {
        assert!(
            scraped.body.lines().any(|have| have == line),
            "{line} missing from:\n{}",
            scraped.body
        );
    }

    let _client = logged_on(&gateway, 1);
    scrape_until(
        metrics,
        &[
            "baton_sessions_logged_on 1",
            "baton_session_logged_on{target_comp_id=\"CLIENT1\"} 1",
            "baton_session_logged_on{target_comp_id=\"CLIENT2\"} 0",
        ],
    );

    let not_found = get(metrics, "/nope");
    assert_eq!(not_found.status_line, "HTTP/1.1 404 Not Found");
}

#[test]
fn a_non_loopback_metrics_address_stops_the_gateway_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), 1, "");
    let mut child = gateway_command(&config, dir.path())
        .args(["--metrics", "0.0.0.0:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton gateway");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait for the gateway").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway kept running with a non-loopback metrics address");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("gateway output");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[gateway] metrics 0.0.0.0:0"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "nothing may be announced as listening: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
}
