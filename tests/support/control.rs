//! Driving a running gateway's control endpoint from tests: status, commands, `baton ctl`, and
//! what the audit log says.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use baton::bench::initiator::Initiator;
use baton::control::api::{ControlReply, ControlRequest, Status};
use baton::control::client;

/// A loopback address nothing listens on, held for as long as the returned socket lives: a
/// connection to it is refused, and no other test can take the port meanwhile, as it could one
/// bound, released and assumed free. The socket is bound without listening, with SO_REUSEADDR,
/// so a listener the test starts on it later (tokio's, as the control endpoint's, sets it too)
/// can bind it while it is held.
pub fn held_refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind("127.0.0.1:0".parse().expect("loopback"))
        .expect("bind loopback port 0");
    let addr = socket.local_addr().expect("bound address");
    (socket, addr)
}

/// One control request, answered.
pub fn ask(addr: SocketAddr, request: &ControlRequest) -> ControlReply {
    client::request(addr, request, std::time::Duration::from_secs(30)).expect("control reply")
}

/// The gateway's status.
pub fn status(addr: SocketAddr) -> Status {
    match ask(addr, &ControlRequest::Status) {
        ControlReply::Status(status) => status,
        other => panic!("status: {other:?}"),
    }
}

/// Polls the gateway's status at `control` until `done` holds and returns that status; fails
/// after `STATUS_WAIT` naming `what` was awaited and showing the last status.
pub fn status_until(control: SocketAddr, what: &str, done: impl Fn(&Status) -> bool) -> Status {
    let deadline = std::time::Instant::now() + STATUS_WAIT;
    loop {
        let s = status(control);
        if done(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {STATUS_WAIT:?}; last status {s:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Bound on waiting for a status condition: generous, since the gateway, its engines and the
/// machine's other work share two cores; it only stands between a hang and a failure.
pub const STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether engine `name` is attached as the standby and has answered every journaled input.
pub fn standby_caught_up(s: &Status, name: &str) -> bool {
    s.engines.iter().any(|e| {
        e.name == name
            && e.role == baton::control::api::EngineRole::Standby
            && e.answered_through == s.journal_last_seq
    })
}

/// Sends a resting limit order on `symbol`.
pub fn order(client: &mut Initiator, cl_ord_id: &str, symbol: &str, side: u8, price: &str) {
    client
        .send(b"D", |e| {
            e.str(11, cl_ord_id)
                .str(55, symbol)
                .char(54, side)
                .str(60, "20261123-12:00:00")
                .uint(38, 10)
                .char(40, b'2')
                .str(44, price);
        })
        .expect("send order");
}

/// The event names in the audit log, in order.
pub fn audit_events(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("journal").join("audit.log")).expect("audit log");
    // The audit writer appends on a thread of its own: a line it is writing right now is not
    // an event yet.
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("audit line");
            let event = &value["event"];
            match event["action"]["kind"].as_str() {
                Some(kind) => format!("{}:{kind}", event["event"].as_str().unwrap_or_default()),
                None => event["event"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Waits (bounded) until the audit log holds `event`: records the control plane did not wait
/// for (an outputs-withheld record, say) reach the log through the audit writer's thread a
/// moment after the gateway acted on them.
pub fn audit_event_until(dir: &Path, event: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + super::STARTUP_WAIT;
    loop {
        let events = audit_events(dir);
        if events.iter().any(|e| e == event) {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {event} in the audit log: {events:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `baton ctl` against `control` as `operator`, bounded by `super::STARTUP_WAIT`.
pub fn ctl(control: SocketAddr, operator: &str, args: &[&str]) -> std::process::Output {
    super::output_within(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "ctl",
                "--addr",
                &control.to_string(),
                "--operator",
                operator,
            ])
            .args(args),
        super::STARTUP_WAIT,
    )
}

/// The stdout of a command that must succeed.
pub fn ok(output: std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The stderr of a command that must fail.
pub fn refused(output: std::process::Output) -> String {
    assert!(!output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `[control.operators]` declaring the OS account the tests run as shared by the demo operators:
/// every `baton ctl` of a test comes from one account, which the two-person rule otherwise reads
/// as one person.
pub fn shared_account_operators() -> String {
    let account =
        baton::control::peer::current_account_name().expect("the test account has a name");
    format!("[control.operators]\n{account:?} = [\"alice\", \"bob\", \"carol\", \"ops\"]\n")
}

/// Runs `control` with a fake sequencer behind it that answers every request with `answer`,
/// until the test's runtime ends: for testing `baton ctl` against a real control endpoint
/// without a gateway.
pub fn serve_fake_sequencer(
    control: baton::control::endpoint::ControlEndpoint,
    answer: impl Fn(ControlRequest) -> ControlReply + Send + 'static,
) {
    let (commands_tx, mut commands_rx) =
        tokio::sync::mpsc::channel::<baton::control::endpoint::ControlCommand>(8);
    tokio::spawn(async move {
        while let Some(command) = commands_rx.recv().await {
            let reply = answer(command.request);
            let _ = command.reply.send(reply);
        }
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        control.run(commands_tx, shutdown_rx).await;
        drop(shutdown_tx);
    });
}

/// Files a change for `build` as alice and approves it as bob (the second person): what a
/// planned upgrade or a stage needs before it runs. Returns the change's id.
pub fn approved_change(control: SocketAddr, build: &Path) -> String {
    let filed = ok(ctl(
        control,
        "alice",
        &[
            "change",
            "file",
            "--artifact",
            build.to_str().unwrap(),
            "--reason",
            "gateway build",
        ],
    ));
    let change = filed
        .split_whitespace()
        .find(|word| word.starts_with("CHG-"))
        .unwrap_or_else(|| panic!("no change in {filed}"))
        .to_owned();
    ok(ctl(control, "bob", &["change", "approve", &change]));
    change
}

/// Starts `baton ctl upgrade-gateway --change CHANGE` the way an operator runs it (it finds the
/// gateway through the config and the ready file, before and after the upgrade), output piped,
/// so a test can keep trading while it runs.
pub fn spawn_upgrade_gateway(
    config: &Path,
    ready_path: &Path,
    change: &str,
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["ctl", "--config"])
        .arg(config)
        .args(["--operator", "alice", "upgrade-gateway", "--change", change])
        .env(super::READY_FILE_ENV, ready_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn baton ctl")
}
