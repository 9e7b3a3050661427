//! A blue/green venue behind one gateway with a reachable control endpoint: the layout the
//! canary, gate and rollback tests all start from.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use baton::bench::initiator::Initiator;

use super::{
    EngineProcess, Gateway, logged_on, start_gateway_for_engines, wait_for_engine, wait_for_socket,
};

/// Writes `baton.toml` in `dir` with the control endpoint on a port the gateway picks (see
/// `Gateway::control`), `gateway_extra` appended to `[gateway]`, `control` as the whole body of `[control]` and `sessions`
/// counterparties CLIENT1..CLIENTn. Unlike `write_config` it leaves the approval policy to the
/// caller, which is what the release tests vary.
pub fn write_venue_config(
    dir: &Path,
    gateway_extra: &str,
    control: &str,
    sessions: usize,
) -> PathBuf {
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\
         {gateway_extra}\n[control]\n{control}\n\n[defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n"
    );
    for n in 1..=sessions {
        text.push_str(&format!("\n[[session]]\nTargetCompID = \"CLIENT{n}\"\n"));
    }
    let path = dir.join("baton.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Starts blue, a gateway that knows both blue and green, a logged-on CLIENT1 answered by blue,
/// and only then green (`baton engine` logging at `green_log`, rejecting every order on
/// `green_fault` if given), so blue holds authority and green is certainly the standby. Does
/// not wait for green to catch up: callers poll the status for that with their own bound.
pub fn start_blue_then_green(
    dir: &Path,
    config: &Path,
    green_fault: Option<&str>,
    green_log: &str,
) -> (EngineProcess, EngineProcess, Gateway, Initiator) {
    let blue = EngineProcess::start(config, dir, "blue");
    wait_for_socket(&dir.join("blue.sock"));
    let green_addr = format!("unix://{}", dir.join("green.sock").display());
    let gateway = start_gateway_for_engines(dir, &[&blue.addr, &green_addr]);
    let mut client = logged_on(&gateway, 1);
    wait_for_engine(&mut client);
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
    command.args(["engine", "--config"]).arg(config).args([
        "--listen",
        &green_addr,
        "--name",
        "green",
    ]);
    if let Some(symbol) = green_fault {
        command.args(["--fault-reject-symbol", symbol]);
    }
    let child = command
        .env("RUST_LOG", green_log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn green");
    let green = EngineProcess {
        child,
        addr: green_addr,
    };
    (blue, green, gateway, client)
}
