//! The real `baton ctl` binary against a control endpoint served in this process by a fake
//! sequencer: what the operator sees on stdout, and the exit status a script checks.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use baton::config::Config;
use baton::control::api::{
    ControlReply, ControlRequest, EngineRole, EngineStatus, Status, SwitchReport,
};
use baton::control::endpoint;

fn status() -> Status {
    Status {
        engines: vec![EngineStatus {
            name: "blue".into(),
            addr: "unix://var/engine-blue.sock".into(),
            build_version: "0.1.0".into(),
            role: EngineRole::Authoritative,
            answered_through: 42,
            lag_inputs: 0,
            lag_us: 0,
            silent_ms: 1,
            executable_sha256: String::new(),
            delivered_inputs: 42,
            sent_through: 42,
            kept_inputs: 0,
        }],
        journal_last_seq: 42,
        delivered_through: 42,
        ..Status::default()
    }
}

/// Serves a fake sequencer on a free loopback port: status answers, switch switches, rollback
/// is refused. Runs until the test's runtime ends.
async fn serve() -> SocketAddr {
    let control = endpoint::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind loopback");
    let addr = control.local_addr();
    support::control::serve_fake_sequencer(control, |request| match request {
        ControlRequest::Status => ControlReply::Status(status()),
        ControlRequest::Switch { .. } => ControlReply::Switched(SwitchReport {
            from: "blue".into(),
            to: "green".into(),
            barrier_seq: 42,
            pause_us: 17,
            planned: true,
            rollback: false,
            scope: Default::default(),
        }),
        ControlRequest::Rollback { .. } => ControlReply::Refused {
            reason: "no switch to roll back".into(),
        },
        _ => ControlReply::Refused {
            reason: "not handled by this fake".into(),
        },
    });
    addr
}

/// Runs `baton ctl` with `args` off the runtime's threads.
async fn ctl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        support::output_within(
            Command::new(env!("CARGO_BIN_EXE_baton"))
                .arg("ctl")
                .args(args)
                .env("RUST_LOG", "warn"),
            support::STARTUP_WAIT,
        )
    })
    .await
    .expect("client thread")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_table_or_json() {
    let addr = serve().await;
    let table = ctl(vec!["--addr".into(), addr.to_string(), "status".into()]).await;
    assert!(table.status.success(), "{table:?}");
    let text = stdout(&table);
    assert!(text.contains("authoritative"), "{text}");
    assert!(text.contains("journal last seq   42"), "{text}");

    let json = ctl(vec![
        "--addr".into(),
        addr.to_string(),
        "status".into(),
        "--json".into(),
    ])
    .await;
    assert!(json.status.success(), "{json:?}");
    let parsed: Status = serde_json::from_slice(&json.stdout).expect("status JSON");
    assert_eq!(parsed, status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_prints_the_pause_and_a_refusal_fails_with_its_reason() {
    let addr = serve().await;
    let switch = ctl(vec!["--addr".into(), addr.to_string(), "switch".into()]).await;
    assert!(switch.status.success(), "{switch:?}");
    assert_eq!(
        stdout(&switch),
        "switched blue → green at barrier 42 (all symbols), pause 17 µs (planned)\n"
    );

    let rollback = ctl(vec!["--addr".into(), addr.to_string(), "rollback".into()]).await;
    assert!(!rollback.status.success(), "{rollback:?}");
    assert!(rollback.stdout.is_empty(), "{rollback:?}");
    let stderr = String::from_utf8_lossy(&rollback.stderr);
    assert!(stderr.contains("no switch to roll back"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_comes_from_the_config_when_not_given() {
    let addr = serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &format!("control = \"{addr}\"\n"));
    let output = ctl(vec![
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "status".into(),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains("blue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_fails_naming_the_address() {
    let (_held, addr) = support::control::held_refusing_addr();
    let output = ctl(vec!["--addr".into(), addr.to_string(), "status".into()]).await;
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
}

#[test]
fn control_defaults_to_loopback_9879() {
    let embedded = Config::load(None).expect("embedded default");
    assert_eq!(
        embedded.gateway.control,
        "127.0.0.1:9879".parse::<SocketAddr>().expect("addr")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let without_key = Config::load(Some(&write_config(dir.path(), ""))).expect("config");
    assert_eq!(
        without_key.gateway.control,
        baton::constants::CONTROL_ADDR_DEFAULT
    );
}

/// A minimal config with `gateway_extra` appended to its `[gateway]` section.
fn write_config(dir: &Path, gateway_extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"store\"\n{gateway_extra}\n[defaults]\nSenderCompID = \"BATON\"\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n"
    );
    let path = dir.join("baton.toml");
    std::fs::write(&path, text).expect("write config");
    path
}
