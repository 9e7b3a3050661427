//! A venue whose log goes into a pipe that closes (`baton up 2>&1 | head -3`) or that nobody
//! reads keeps trading and still stops on SIGTERM: log lines are dropped and counted, never a
//! panic or a block.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use baton::bench::initiator::Initiator;
use support::{
    EngineProcess, Killed, READY_FILE_ENV, exit_within, gateway_command_ready, log_on, new_order,
    ready_file, report, scrape_metrics, sigterm, text, wait_for_engine, wait_ready, write_config,
    write_up_config,
};

/// Generous bound for a loaded machine: the test asserts outcomes, never speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Reads `lines` lines from the pipe, then closes its read end: the next writes fail with EPIPE.
/// Read on a thread, so a child that writes fewer lines fails the test after `PATIENCE` instead
/// of hanging it.
fn read_then_close(reader: std::io::PipeReader, lines: usize) {
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut read = 0;
        while read < lines {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            read += 1;
        }
        drop(reader);
        let _ = done_tx.send(read);
    });
    match done.recv_timeout(PATIENCE) {
        Ok(read) => assert_eq!(read, lines, "the pipe closed after {read} lines"),
        Err(_) => panic!("fewer than {lines} log lines within {PATIENCE:?}"),
    }
}

/// An order is answered: the venue trades.
fn trades(client: &mut Initiator, cl_ord_id: &str) {
    wait_for_engine(client);
    new_order(client, cl_ord_id, b'1', 10, "10");
    assert_eq!(
        text(&report(client), 150),
        "0",
        "order {cl_ord_id} accepted"
    );
}

/// SIGTERM, then the process exits cleanly within the bound.
fn stops_on_sigterm(child: &mut Child) {
    sigterm(child);
    let status = exit_within(child, PATIENCE).expect("did not stop on SIGTERM");
    assert!(status.success(), "exited with {status}");
}

/// `baton_log_lines_dropped_total` from the metrics endpoint at `addr`.
fn lines_dropped(addr: SocketAddr) -> u64 {
    let response = scrape_metrics(addr);
    response
        .lines()
        .find_map(|line| line.strip_prefix("baton_log_lines_dropped_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no dropped-lines counter in {response}"))
}

#[test]
fn a_gateway_whose_log_pipe_closes_keeps_trading_counts_the_lines_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let engine = EngineProcess::start(&config, dir.path(), "blue");
    // `baton gateway ... 2>&1 | head -3`: stdout and stderr into one pipe, closed after 3 lines,
    // before the gateway prints where it listens.
    let (reader, writer) = std::io::pipe().unwrap();
    let (mut command, ready_path) = gateway_command_ready(&config, dir.path());
    let gateway = command
        .args(["--engine", &engine.addr])
        .args(["--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("spawn baton gateway");
    let mut gateway = Killed(gateway);
    read_then_close(reader, 3);
    let ready = wait_ready(&ready_path, &mut gateway.0);
    let metrics = ready.metrics.expect("the gateway serves metrics");

    let mut client = log_on(ready.listen);
    trades(&mut client, "PIPE-1");
    assert!(
        lines_dropped(metrics) > 0,
        "the lines written after the pipe closed are counted"
    );
    stops_on_sigterm(&mut gateway.0);
}

#[test]
fn baton_up_whose_log_pipe_closes_keeps_trading_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_up_config(dir.path(), "127.0.0.1:0");
    let ready_path = ready_file(dir.path());
    // `baton up 2>&1 | head -3`.
    let (reader, writer) = std::io::pipe().unwrap();
    let up = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["up", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .env(READY_FILE_ENV, &ready_path)
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("spawn baton up");
    let mut up = Killed(up);
    read_then_close(reader, 3);
    let ready = wait_ready(&ready_path, &mut up.0);

    let mut client = log_on(ready.listen);
    trades(&mut client, "UP-PIPE-1");
    stops_on_sigterm(&mut up.0);
}

#[test]
fn a_gateway_whose_log_pipe_is_never_read_keeps_trading_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let engine = EngineProcess::start(&config, dir.path(), "blue");
    // stderr into a pipe that nobody reads, already full: every write to it would block.
    let (reader, mut writer) = std::io::pipe().unwrap();
    // SAFETY: fcntl(2) on a pipe descriptor this test owns; no memory is passed.
    let capacity = unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(
        capacity > 0,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
    writer
        .write_all(&vec![b'.'; capacity as usize])
        .expect("fill the pipe");
    let (mut command, ready_path) = gateway_command_ready(&config, dir.path());
    let gateway = command
        .args(["--engine", &engine.addr])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .expect("spawn baton gateway");
    let mut gateway = Killed(gateway);
    let ready = wait_ready(&ready_path, &mut gateway.0);

    let mut client = log_on(ready.listen);
    for n in 0..20 {
        trades(&mut client, &format!("STALL-{n}"));
    }
    stops_on_sigterm(&mut gateway.0);
    drop(reader);
}
