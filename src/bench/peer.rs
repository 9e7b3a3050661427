//! A third-party FIX acceptor measured in the same run as baton: the QuickFIX C++ acceptor of
//! `benches/peers/quickfix/` (Debian's `libquickfix-dev`, a FileStore, answering each
//! NewOrderSingle with an ExecutionReport New in its own process). The echo baseline says what
//! the machine costs; the peer says what a conventional FIX engine costs on it, so "baton ÷
//! QuickFIX" reads as the price of the gateway, the engines and the journal over answering
//! in-process.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use crate::constants;

/// Why the peer could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The `--peer` value names no known peer.
    #[error("unknown peer {0:?}: expected quickfix or quickfix=PATH (PATH: a built peer binary)")]
    Unknown(String),
    /// A binary given with `quickfix=PATH` is not there.
    #[error("no peer binary at {0}")]
    Missing(PathBuf),
    /// The build script is absent or failed.
    #[error(
        "building the QuickFIX peer with {script} failed: {detail} \
         (run the script by hand, or pass --peer quickfix=PATH to a built binary)"
    )]
    Build {
        /// The script that builds it.
        script: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Starting or talking to the peer process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The peer exited or stayed silent instead of reporting it listens.
    #[error("the QuickFIX peer did not start: {0}")]
    NotReady(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PeerError {
    let what = what.into();
    move |source| PeerError::Io { what, source }
}

/// `--peer quickfix[=PATH]`: which peer, and its binary when not the one the script builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// A built peer binary; without it the bench builds one (once) beside its own binary.
    pub binary: Option<PathBuf>,
}

impl FromStr for PeerSpec {
    type Err = PeerError;

    fn from_str(text: &str) -> Result<PeerSpec, PeerError> {
        match text.split_once('=') {
            None if text == "quickfix" => Ok(PeerSpec { binary: None }),
            Some(("quickfix", path)) if !path.is_empty() => Ok(PeerSpec {
                binary: Some(PathBuf::from(path)),
            }),
            _ => Err(PeerError::Unknown(text.to_string())),
        }
    }
}

/// The script that builds the peer, in this source tree.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/quickfix/build.sh")
}

/// The venue's own FIX 4.4 dictionary, which the gateway validates every inbound message
/// against: the peer validates with the same file, so neither side skips checks the other makes
/// (Debian's package ships no dictionary of its own).
pub fn dictionary() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fix-specs/FIX44.xml");
    path.exists().then_some(path)
}

/// The peer binary to run: the one given, or the one built beside `program` (the running
/// `baton`), building it with [`build_script`] when it is missing.
pub fn locate(spec: &PeerSpec, program: &Path) -> Result<PathBuf, PeerError> {
    if let Some(path) = &spec.binary {
        return if path.is_file() {
            Ok(path.clone())
        } else {
            Err(PeerError::Missing(path.clone()))
        };
    }
    let dir = program
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("peers/quickfix");
    let binary = dir.join("quickfix-peer");
    if binary.is_file() {
        return Ok(binary);
    }
    let script = build_script();
    let failed = |detail: String| PeerError::Build {
        script: script.clone(),
        detail,
    };
    if !script.is_file() {
        return Err(failed("the script is not there".into()));
    }
    tracing::info!(script = %script.display(), dir = %dir.display(), "building the QuickFIX peer");
    let output = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("could not run bash: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(failed(format!("{}: {}", output.status, tail.join(" | "))));
    }
    if !binary.is_file() {
        return Err(failed(format!("it left no binary at {}", binary.display())));
    }
    Ok(binary)
}

/// A running peer; stopped (SIGKILL, its FileStore left on disk) when dropped.
pub struct PeerProcess {
    child: Child,
    /// Where it accepts the bench's sessions.
    pub addr: SocketAddr,
}

impl PeerProcess {
    /// Starts `binary` for `sessions` sessions (CompID BATON, counterparties TRADER1..N, as the
    /// bench's initiator names them) with its FileStore in `dir`, and waits until it listens.
    pub fn start(binary: &Path, sessions: usize, dir: &Path) -> Result<PeerProcess, PeerError> {
        let mut last = String::new();
        // QuickFIX takes a port number, not a listener: a free port is picked here and released
        // for the peer to bind, and another thread can take it in between; then try again.
        for _ in 0..constants::BENCH_PEER_START_ATTEMPTS {
            match PeerProcess::start_once(binary, sessions, dir)? {
                Ok(peer) => return Ok(peer),
                Err(why) => last = why,
            }
        }
        Err(PeerError::NotReady(last))
    }

    fn start_once(
        binary: &Path,
        sessions: usize,
        dir: &Path,
    ) -> Result<Result<PeerProcess, String>, PeerError> {
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(io(format!("creating {}", store.display())))?;
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(io("picking a port"))?;
            listener.local_addr().map_err(io("picking a port"))?.port()
        };
        let stderr_path = dir.join("peer.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(io(format!("creating {}", stderr_path.display())))?;
        let mut command = Command::new(binary);
        command
            .arg("--port")
            .arg(port.to_string())
            .arg("--sessions")
            .arg(sessions.to_string())
            .arg("--store")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(dictionary) = dictionary() {
            command.arg("--dictionary").arg(dictionary);
        }
        let mut child = command
            .spawn()
            .map_err(io(format!("starting {}", binary.display())))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PeerError::NotReady("no stdout".into()));
        };
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let ready = receiver.recv_timeout(Duration::from_secs(constants::BENCH_PEER_READY_S));
        let mut peer = PeerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        match ready {
            Ok(line) if line.trim() == "ready" => Ok(Ok(peer)),
            Ok(_) => {
                // Closed stdout or another line: it exited; its stderr says why.
                let _ = peer.child.wait();
                let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                Ok(Err(format!("it exited: {}", said.trim())))
            }
            Err(_) => Ok(Err(format!(
                "it did not report listening within {} s",
                constants::BENCH_PEER_READY_S
            ))),
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_is_named_with_an_optional_binary() {
        assert_eq!(
            "quickfix".parse::<PeerSpec>().expect("peer"),
            PeerSpec { binary: None }
        );
        assert_eq!(
            "quickfix=/opt/peer".parse::<PeerSpec>().expect("peer"),
            PeerSpec {
                binary: Some(PathBuf::from("/opt/peer"))
            }
        );
        for bad in ["", "quickfix=", "quickfixj", "onixs=/x"] {
            assert!(bad.parse::<PeerSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_binary_is_named() {
        let spec = PeerSpec {
            binary: Some(PathBuf::from("/nonexistent/quickfix-peer")),
        };
        let error = locate(&spec, Path::new("/nonexistent/baton")).expect_err("missing");
        assert!(
            error.to_string().contains("/nonexistent/quickfix-peer"),
            "{error}"
        );
    }
}
