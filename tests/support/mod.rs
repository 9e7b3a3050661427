//! Shared by the integration tests: runs the real `baton` binary as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use baton::bench::initiator::{Initiator, InitiatorConfig};

/// Generous bound for anything over loopback; tests assert behavior, never speed.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config with `sessions` counterparties CLIENT1..CLIENTn and the given extra defaults.
pub fn write_config(dir: &Path, sessions: usize, extra_defaults: &str) -> PathBuf {
    let mut text = String::from(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\n[defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n",
    );
    text.push_str(extra_defaults);
    for n in 1..=sessions {
        text.push_str(&format!("\n[[session]]\nTargetCompID = \"CLIENT{n}\"\n"));
    }
    let path = dir.join("baton.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `baton gateway`; killed (SIGKILL) when dropped.
pub struct Gateway {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Gateway {
    /// Starts the gateway with `config`, its store under `store_dir`, on a free port.
    pub fn start(config: &Path, store_dir: &Path) -> Gateway {
        Gateway::start_with(config, store_dir, &[])
    }

    /// Starts the gateway with extra command-line arguments (engine address, journal).
    pub fn start_with(config: &Path, store_dir: &Path, extra: &[&std::ffi::OsStr]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["gateway", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--store-dir")
            .arg(store_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn baton gateway");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read address line");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Gateway { child, addr }
    }

    /// SIGKILL, no goodbye: the crash case.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A connected (not logged on) initiator for `CLIENTn`.
    pub fn client(&self, n: usize) -> Initiator {
        Initiator::connect(
            self.addr,
            InitiatorConfig::new(&format!("CLIENT{n}"), "BATON"),
        )
        .expect("connect")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `baton engine`; killed (SIGKILL) when dropped.
pub struct EngineProcess {
    /// The process.
    pub child: Child,
    /// The link address it serves.
    pub addr: String,
}

impl EngineProcess {
    /// Starts `baton engine` with `config`, serving the link on a Unix socket in `dir`.
    pub fn start(config: &Path, dir: &Path, name: &str) -> EngineProcess {
        let addr = format!("unix://{}", dir.join(format!("{name}.sock")).display());
        let child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["engine", "--config"])
            .arg(config)
            .args(["--listen", &addr, "--name", name])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn baton engine");
        EngineProcess { child, addr }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gateway in front of one engine process, both real, sharing `dir`.
pub fn start_trading(dir: &Path, sessions: usize) -> (EngineProcess, Gateway) {
    let config = write_config(dir, sessions, "");
    let engine = EngineProcess::start(&config, dir, "blue");
    let journal = dir.join("journal");
    let gateway = Gateway::start_with(
        &config,
        &dir.join("store"),
        &["--engine".as_ref(), engine.addr.as_ref(), "--journal-dir".as_ref(), journal.as_os_str()],
    );
    (engine, gateway)
}
pub mod child;
