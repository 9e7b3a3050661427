//! The two-person rule against a real gateway: names are typed by whoever runs `baton ctl`, so an
//! approval from the OS account that filed the change (as the control endpoint reads it from
//! the peer's credentials) is refused by default; and an operator with neither USER nor LOGNAME
//! is called by the account's login name. What `[control.operators]` declares is the change
//! book's rule, tested in `control::change`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use support::control::{ctl, ok, refused};
use support::{Gateway, WAIT};

/// A gateway with no engines (changes are filed and approved all the same) and `control` as its
/// extra config; returns it with its control address.
fn gateway(dir: &Path, control: &str) -> (Gateway, SocketAddr) {
    let config = dir.join("baton.toml");
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\n\
         [defaults]\nSenderCompID = \"BATON\"\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n\n{control}"
    );
    std::fs::write(&config, text).expect("config");
    let gateway = Gateway::start(&config, &dir.join("store"));
    let addr = gateway.control;
    // The endpoint is bound once the gateway is ready; poll until the plane behind it answers.
    let deadline = std::time::Instant::now() + WAIT;
    while ctl(addr, "ops", &["change", "list"]).status.code() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "control endpoint never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (gateway, addr)
}

fn file(control: SocketAddr, operator: &str) -> std::process::Output {
    ctl(
        control,
        operator,
        &[
            "change",
            "file",
            "--artifact",
            env!("CARGO_BIN_EXE_baton"),
            "--reason",
            "matching fix",
        ],
    )
}

fn account() -> String {
    baton::control::peer::current_account_name().expect("the test account has a name")
}

#[test]
fn an_approval_from_the_filers_account_is_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (_gateway, control) = gateway(dir.path(), "");
    ok(file(control, "alice"));
    let same_account = refused(ctl(control, "bob", &["change", "approve", "CHG-1"]));
    assert!(
        same_account.contains("from the OS account that filed it"),
        "{same_account}"
    );
    let switch = refused(ctl(control, "alice", &["switch", "--change", "CHG-1"]));
    assert!(switch.contains("not approved"), "{switch}");
    let listed = ok(ctl(control, "ops", &["change", "list"]));
    assert!(listed.contains("CHG-1   filed"), "{listed}");
}

#[test]
fn without_user_or_logname_the_operator_is_the_accounts_login_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_gateway, control) = gateway(dir.path(), "");
    let output = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["ctl", "--addr", &control.to_string()])
            .args([
                "change",
                "file",
                "--artifact",
                env!("CARGO_BIN_EXE_baton"),
                "--reason",
                "container",
            ])
            .env_remove("USER")
            .env_remove("LOGNAME"),
        support::STARTUP_WAIT,
    );
    let filed = ok(output);
    assert!(filed.contains(&account()), "filed by the account: {filed}");
}
