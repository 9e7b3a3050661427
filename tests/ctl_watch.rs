//! The real `baton ctl watch` in a real pseudo-terminal (util-linux `script`), against a real
//! control endpoint served in this process: it shows an absent gateway and keeps asking, shows
//! the status once the gateway appears, and on `q` exits 0 with the terminal restored.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton::control::api::{ControlReply, ControlRequest, SessionStatus, Status};
use baton::control::endpoint;

/// Generous: the machine running the tests may be loaded.
const WAIT: Duration = Duration::from_secs(60);

/// Serves status on `addr` from a fake sequencer until the runtime ends.
async fn serve(addr: SocketAddr) {
    let control = endpoint::bind(addr).await.expect("bind the held port");
    support::control::serve_fake_sequencer(control, |request| match request {
        ControlRequest::Status => ControlReply::Status(Status {
            sessions: vec![SessionStatus {
                target_comp_id: "WATCHED1".into(),
                logged_on: true,
                seq_num_next_out: 77,
                seq_num_next_in: 66,
            }],
            halted: vec!["HALTSYM".into()],
            ..Status::default()
        }),
        _ => ControlReply::Refused {
            reason: "not handled by this fake".into(),
        },
    });
}

/// Polls `output` until it holds `needle`, for at most [`WAIT`].
async fn wait_for(output: &Arc<Mutex<Vec<u8>>>, needle: &str) {
    let started = Instant::now();
    loop {
        let seen = String::from_utf8_lossy(&output.lock().expect("output lock")).into_owned();
        if seen.contains(needle) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "no {needle:?} on the screen within {WAIT:?}; the screen so far:\n{seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_retries_until_the_gateway_answers_then_q_restores_the_terminal() {
    let have_script = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        have_script,
        "this test needs util-linux `script` for a pseudo-terminal"
    );
    // A port nothing listens on yet, held so no other test takes it; the fake gateway binds
    // it later.
    let (held, addr) = support::control::held_refusing_addr();

    // A pseudo-terminal starts 0x0; give it a size the layout fits in, then run the watch.
    let inner = format!(
        "stty cols 140 rows 40 && exec '{}' ctl --addr {addr} watch",
        env!("CARGO_BIN_EXE_baton")
    );
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &inner, "/dev/null"])
        .env("TERM", "xterm")
        .env("RUST_LOG", "warn")
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read) = stdout.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                output
                    .lock()
                    .expect("output lock")
                    .extend_from_slice(&chunk[..read]);
            }
        })
    };

    wait_for(&output, "GATEWAY UNREACHABLE").await;
    // Still running: an absent gateway is shown, not an exit.
    assert!(
        child.try_wait().expect("child state").is_none(),
        "watch exited while the gateway was unreachable"
    );

    serve(addr).await;
    drop(held);
    wait_for(&output, "WATCHED1").await;
    wait_for(&output, "HALTSYM").await;

    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"q").expect("press q");
    stdin.flush().expect("flush");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("child state") {
            break status;
        }
        assert!(started.elapsed() < WAIT, "q did not end the watch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(stdin);
    reader.join().expect("reader thread");
    let seen = String::from_utf8_lossy(&output.lock().expect("output lock")).into_owned();
    assert!(status.success(), "watch exited {status:?}:\n{seen}");
    // Entered the alternate screen, and left it again after the last frame.
    let entered = seen
        .find("\x1b[?1049h")
        .expect("entered the alternate screen");
    let left = seen
        .rfind("\x1b[?1049l")
        .expect("left the alternate screen");
    assert!(entered < left, "{seen}");
    assert!(
        seen[left..].find("HALTSYM").is_none(),
        "nothing drawn after restoring"
    );
}
