//! Session rules over real TCP against the real `baton` binary: what an unauthenticated peer
//! can make the gateway write into its log, and what a logged-on peer gets for a FIX message
//! type the venue does not take.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton::fix::codec::Encoder;
use baton::fix::time::Timestamp;
use support::{WAIT, gateway_command_ready, logged_on, text, wait_ready, write_config};

/// A gateway whose stderr (its log) is captured line by line, as raw bytes.
struct LoggedGateway {
    child: Child,
    addr: std::net::SocketAddr,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl LoggedGateway {
    fn start(dir: &std::path::Path) -> LoggedGateway {
        let config = write_config(dir, 1, "");
        let (mut command, ready_path) = gateway_command_ready(&config, dir);
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn baton gateway");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                lines.lock().unwrap().push(std::mem::take(&mut line));
            }
        });
        let addr = wait_ready(&ready_path, &mut child).listen;
        LoggedGateway { child, addr, log }
    }

    /// Waits (bounded) until a log line contains `needle`, and returns every line so far.
    fn wait_for_line(&self, needle: &str) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines = self.log.lock().unwrap().clone();
            if lines
                .iter()
                .any(|line| String::from_utf8_lossy(line).contains(needle))
            {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LoggedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the gateway sends on `stream` until it closes it.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(error) => panic!("the gateway did not close the connection: {error}"),
        }
    }
}

#[test]
fn a_forged_log_line_in_a_comp_id_never_reaches_the_log_nor_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = LoggedGateway::start(dir.path());
    let forged = "2026-11-23T12:00:00.000000Z  INFO baton: FORGED operator approved";
    let mut sender = b"EVIL\n".to_vec();
    sender.extend_from_slice(forged.as_bytes());
    sender.extend_from_slice(b"\n\x00\xc3\xa9");
    let mut encoder = Encoder::new("FIX.4.4");
    encoder
        .start(b"A")
        .bytes(49, &sender)
        .str(56, "BATON")
        .uint(34, 1)
        .timestamp(52, Timestamp::now())
        .uint(98, 0)
        .uint(108, 30);
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    stream.write_all(encoder.finish()).unwrap();
    assert!(
        read_until_closed(&mut stream).is_empty(),
        "nothing is echoed to an unknown CompID pair"
    );

    let lines = gateway.wait_for_line("unknown CompID pair");
    for line in &lines {
        let shown = String::from_utf8_lossy(line);
        assert!(
            !shown.contains("FORGED") || shown.contains("unknown CompID pair"),
            "a line of the peer's making: {shown:?}"
        );
        if shown.contains("FORGED") {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            assert!(
                body.iter()
                    .all(|&b| b == b'\x1b' || (b' '..=b'~').contains(&b)),
                "raw control or non-ASCII bytes logged: {shown:?}"
            );
            assert!(shown.contains("EVIL\\x0a2026"), "{shown:?}");
        }
    }
}

#[test]
fn a_fix44_message_type_the_venue_does_not_take_gets_a_business_message_reject() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let gateway = support::Gateway::start(&config, &dir.path().join("store"));
    let mut client = logged_on(&gateway, 1);
    let seq = client
        .send(b"B", |e| {
            e.str(148, "venue news");
        })
        .unwrap();
    let reject = client
        .recv_until(WAIT, "BusinessMessageReject", |m| {
            m.msg_type() == b"j" || m.msg_type() == b"3"
        })
        .unwrap();
    assert_eq!(reject.msg_type(), b"j", "{reject:?}");
    assert_eq!(text(&reject, 380), "3");
    assert_eq!(text(&reject, 372), "B");
    assert_eq!(text(&reject, 45), seq.to_string());
    // Its number was taken: the next message is in sequence and answered.
    client
        .send(b"1", |e| {
            e.str(112, "after-news");
        })
        .unwrap();
    client
        .recv_until(WAIT, "Heartbeat", |m| m.get(112).is_some())
        .unwrap();
    assert_eq!(client.gaps(), 0);
}
