//! A whole release under `baton up`, with real processes: a change names a build that differs
//! from the running one, a second operator approves it, staging makes the supervisor restart the
//! standby from exactly that build (through `baton launch`), the standby reports the build's
//! hash, and a canary and a switch under the change give it authority. Every step is audited.

mod support;

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use baton::bench::initiator::{Initiator, InitiatorConfig};
use baton::control::api::{EngineRole, EngineStatus, Status};
use support::control::{audit_events, ctl, ok, order, refused, shared_account_operators, status};
use support::{WAIT, other_build, report, spawn_up, text, wait_for_engine};

/// `baton up`, stopped with SIGTERM (then SIGKILL) when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The engine in `role`, if one is.
fn engine(status: &Status, role: EngineRole) -> Option<&EngineStatus> {
    status.engines.iter().find(|e| e.role == role)
}

/// Waits until `check` holds for the status.
fn wait_until(control: SocketAddr, what: &str, check: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(control);
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_release_under_baton_up_stages_the_standby_from_the_approved_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    // The new build: the same program with bytes appended (an ELF ignores them), so it runs
    // and hashes differently from the running one.
    let build = other_build(dir.path(), "next");
    let build_sha = baton::control::artifact::sha256_file(&build).unwrap();

    // The control endpoint on port 0 too: the supervisor learns its port from the gateway's
    // ready file, as the test does.
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"{}\"\n\
         journal_dir = \"{}\"\nengines = [\"unix://{}\", \"unix://{}\"]\n\n\
         [defaults]\nSenderCompID = \"BATON\"\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n",
        path("store"),
        path("journal"),
        path("blue.sock"),
        path("green.sock"),
    );
    let config = config + &shared_account_operators();
    let config_path = dir.path().join("baton.toml");
    std::fs::write(&config_path, config).unwrap();
    let (child, ready) = spawn_up(&config_path);
    let (addr, control) = (ready.listen, ready.control);
    let _up = Up(child);
    let mut client = Initiator::connect(addr, InitiatorConfig::new("CLIENT1", "BATON")).unwrap();
    client.logon(false, WAIT).unwrap();
    wait_for_engine(&mut client);
    let s = wait_until(control, "a caught-up standby", |s| {
        engine(s, EngineRole::Standby).is_some_and(|e| e.lag_inputs == 0)
    });
    let standby = engine(&s, EngineRole::Standby).unwrap().name.clone();
    let old_sha = engine(&s, EngineRole::Authoritative)
        .unwrap()
        .executable_sha256
        .clone();
    assert_ne!(old_sha, build_sha);

    let build_path = build.to_str().unwrap();
    let filed = ok(ctl(
        control,
        "alice",
        &[
            "change",
            "file",
            "--artifact",
            build_path,
            "--reason",
            "next build",
        ],
    ));
    assert!(filed.contains("CHG-1"), "{filed}");
    // Staging runs new code on the venue's host: it needs the approval too.
    let early = refused(ctl(
        control,
        "alice",
        &["stage", "--change", "CHG-1", "--engine", &standby],
    ));
    assert!(early.contains("not approved"), "{early}");
    ok(ctl(control, "bob", &["change", "approve", "CHG-1"]));
    let authoritative = if standby == "blue" { "green" } else { "blue" };
    let wrong = refused(ctl(
        control,
        "alice",
        &["stage", "--change", "CHG-1", "--engine", authoritative],
    ));
    assert!(wrong.contains("has authority"), "{wrong}");
    let staged = ok(ctl(
        control,
        "alice",
        &["stage", "--change", "CHG-1", "--engine", &standby],
    ));
    assert!(staged.contains(&build_sha), "{staged}");

    // The supervisor restarts the standby from the build; it rejoins, restored and caught up,
    // reporting the build's hash.
    wait_until(control, "the standby running the staged build", |s| {
        engine(s, EngineRole::Standby)
            .is_some_and(|e| e.executable_sha256 == build_sha && e.lag_inputs == 0)
    });
    order(&mut client, "R-1", "AAPL", b'1', "10");
    assert_eq!(text(&report(&mut client), 150), "0");

    let canary = ok(ctl(
        control,
        "alice",
        &["canary", "--symbols", "AAPL", "--change", "CHG-1"],
    ));
    assert!(canary.contains("canary"), "{canary}");
    order(&mut client, "R-2", "AAPL", b'1', "10");
    assert_eq!(text(&report(&mut client), 150), "0");
    ok(ctl(control, "alice", &["switch", "--change", "CHG-1"]));
    let s = status(control);
    let now = engine(&s, EngineRole::Authoritative).unwrap();
    assert_eq!(
        (now.name.as_str(), now.executable_sha256.as_str()),
        (standby.as_str(), build_sha.as_str())
    );
    order(&mut client, "R-3", "AAPL", b'1', "10");
    assert_eq!(text(&report(&mut client), 150), "0");
    assert_eq!(client.gaps(), 0);

    let events = audit_events(dir.path());
    for expected in [
        "change-filed",
        "change-approved",
        "action-requested:stage",
        "staged",
        "engine-attached",
        "action-completed:canary",
        "action-completed:switch",
    ] {
        assert!(
            events.iter().any(|e| e == expected),
            "{expected}: {events:?}"
        );
    }
}
