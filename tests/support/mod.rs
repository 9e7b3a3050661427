//! Shared by the integration tests: runs the real `baton` binary as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use baton::bench::initiator::{Initiator, InitiatorConfig, InitiatorError};
use baton::fix::codec::Encoder;

/// Generous bound for anything over loopback; tests assert behavior, never speed. 30 s, not
/// less: the machine may be building and testing on every core at once, and nothing waits for
/// it to pass (it only stands between a hang and a failure).
pub const WAIT: Duration = Duration::from_secs(30);

/// Bound on a child process printing its first line: it may be starting while the machine is
/// busy building and testing, so this only stands between a hang and a failure.
pub const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// A config with `sessions` counterparties CLIENT1..CLIENTn and the given extra defaults.
pub fn write_config(dir: &Path, sessions: usize, extra_defaults: &str) -> PathBuf {
    let mut text = String::from(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"store\"\n\n[control]\napproval_required = []\n\n[defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n",
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
    /// Where it listens for FIX.
    pub addr: SocketAddr,
    /// Where its control endpoint listens.
    pub control: SocketAddr,
    /// Where it serves metrics, when it was asked to.
    pub metrics: Option<SocketAddr>,
}

impl Gateway {
    /// Starts the gateway with `config`, its store under `store_dir` and its journal beside it, on
    /// a free port.
    pub fn start(config: &Path, store_dir: &Path) -> Gateway {
        // The journal (and the audit log in it) beside the store, never in the working directory.
        let journal = store_dir.with_file_name("journal");
        Gateway::start_with(
            config,
            store_dir,
            &["--journal-dir".as_ref(), journal.as_os_str()],
        )
    }

    /// Starts the gateway with extra command-line arguments (engine address, journal). Every
    /// endpoint it opens on port 0 gets whatever port the kernel gives it, and the gateway says
    /// which in its ready file: no port is picked by the test and reused.
    pub fn start_with(config: &Path, store_dir: &Path, extra: &[&std::ffi::OsStr]) -> Gateway {
        let ready_path = ready_file(store_dir.parent().unwrap_or(store_dir));
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["gateway", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--store-dir")
            .arg(store_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .env(READY_FILE_ENV, &ready_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn baton gateway");
        let ready = wait_ready(&ready_path, &mut child);
        Gateway {
            child,
            addr: ready.listen,
            control: ready.control,
            metrics: ready.metrics,
        }
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
    let gateway = start_gateway_for(dir, &engine.addr);
    (engine, gateway)
}

/// A gateway over `dir` (config, store, journal as `start_trading` lays them out) talking to
/// the engine at `engine_addr`.
pub fn start_gateway_for(dir: &Path, engine_addr: &str) -> Gateway {
    start_gateway_for_engines(dir, &[engine_addr])
}

/// A gateway over `dir` talking to several engines (the first to attach is authoritative).
pub fn start_gateway_for_engines(dir: &Path, engine_addrs: &[&str]) -> Gateway {
    let journal = dir.join("journal");
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    for addr in engine_addrs {
        args.push("--engine".as_ref());
        args.push(addr.as_ref());
    }
    args.push("--journal-dir".as_ref());
    args.push(journal.as_os_str());
    Gateway::start_with(&dir.join("baton.toml"), &dir.join("store"), &args)
}

/// Blue (authoritative) and green (standby) engines behind one gateway, all real processes.
pub fn start_blue_green(dir: &Path, sessions: usize) -> (EngineProcess, EngineProcess, Gateway) {
    let config = write_config(dir, sessions, "");
    let blue = EngineProcess::start(&config, dir, "blue");
    // Blue attaches first and takes authority; green joins as the standby.
    wait_for_socket(&dir.join("blue.sock"));
    let green = EngineProcess::start(&config, dir, "green");
    wait_for_socket(&dir.join("green.sock"));
    let gateway = start_gateway_for_engines(dir, &[&blue.addr, &green.addr]);
    (blue, green, gateway)
}

/// Waits until a Unix socket file exists.
pub fn wait_for_socket(path: &Path) {
    let deadline = std::time::Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The value of `tag` as text, empty when absent.
pub fn text(message: &baton::fix::codec::Message, tag: u32) -> String {
    String::from_utf8_lossy(message.get(tag).unwrap_or_default()).into_owned()
}

/// Sends a limit NewOrderSingle for AAPL.
pub fn new_order(client: &mut Initiator, cl_ord_id: &str, side: u8, qty: u64, price: &str) {
    client
        .send(b"D", |e| {
            e.str(11, cl_ord_id)
                .str(55, "AAPL")
                .char(54, side)
                .str(60, "20261123-12:00:00")
                .uint(38, qty)
                .char(40, b'2')
                .str(44, price);
        })
        .expect("send order");
}

/// The next ExecutionReport or OrderCancelReject.
pub fn report(client: &mut Initiator) -> baton::fix::codec::Message {
    client
        .recv_until(WAIT, "execution report", |m| {
            m.msg_type() == b"8" || m.msg_type() == b"9"
        })
        .expect("report")
}

/// Waits until the gateway has an engine attached: probes with orders for a symbol no engine
/// lists until one is answered by the engine (a reject ExecutionReport) instead of the gateway's
/// "application not available".
pub fn wait_for_engine(client: &mut Initiator) {
    let deadline = std::time::Instant::now() + WAIT;
    for attempt in 0.. {
        assert!(
            std::time::Instant::now() < deadline,
            "no engine attached in time"
        );
        send_probe(client, &format!("PROBE-{attempt}")).expect("send probe");
        let answer = client
            .recv_until(WAIT, "probe answer", |m| {
                m.msg_type() == b"8" || m.msg_type() == b"j"
            })
            .expect("probe answer");
        if answer.msg_type() == b"8" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fields of a market NewOrderSingle for PROBE, a symbol no engine lists: the engine
/// answers it with a reject ExecutionReport, so it goes the whole way through the gateway and
/// the engine (and is sequenced with everything else) without growing any book.
pub fn probe_order_fields(e: &mut Encoder, cl_ord_id: &str) {
    e.str(11, cl_ord_id)
        .str(55, "PROBE")
        .char(54, b'1')
        .str(60, "20261123-12:00:00")
        .uint(38, 1)
        .char(40, b'1');
}

/// Sends a PROBE order (see `probe_order_fields`); returns its MsgSeqNum.
pub fn send_probe(client: &mut Initiator, cl_ord_id: &str) -> Result<u64, InitiatorError> {
    client.send(b"D", |e| probe_order_fields(e, cl_ord_id))
}

/// A logged-on initiator for CLIENTn.
pub fn logged_on(gateway: &Gateway, n: usize) -> Initiator {
    let mut client = gateway.client(n);
    client.logon(false, WAIT).expect("logon");
    client
}
pub mod child;
pub mod control;
pub mod counterparty;
pub mod logged;
pub mod mount;
pub mod venue;

/// Another build of baton in `dir`: the test binary with `tag` appended (an ELF ignores trailing
/// bytes), so it runs the same code but hashes differently, as a new release would.
pub fn other_build(dir: &Path, tag: &str) -> PathBuf {
    let path = dir.join(format!("baton-{tag}"));
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_baton")).expect("read the baton binary");
    bytes.extend_from_slice(tag.as_bytes());
    std::fs::write(&path, bytes).expect("write the other build");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make it executable");
    path
}

/// Starts `baton up` with `config` and returns it with the addresses its gateway bound.
pub fn spawn_up(config: &Path) -> (Child, Ready) {
    let ready_path = ready_file(config.parent().expect("the config is in a directory"));
    let mut up = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["up", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .env(READY_FILE_ENV, &ready_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn baton up");
    let ready = wait_ready(&ready_path, &mut up);
    (up, ready)
}

pub use baton::control::ready::{READY_FILE_ENV, Ready};

/// A path in `dir` for a gateway's ready file that no earlier gateway of this test process used,
/// so a restarted gateway is never taken for ready because of the file its predecessor wrote.
pub fn ready_file(dir: &Path) -> PathBuf {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("gateway-{n}.ready"))
}

/// Waits until the gateway started as (or by) `child` has written its ready file at `path`, for
/// at most `STARTUP_WAIT`; fails at once if `child` exits first. The child is killed when the
/// bound passes.
pub fn wait_ready(path: &Path, child: &mut Child) -> Ready {
    let deadline = std::time::Instant::now() + STARTUP_WAIT;
    loop {
        // Renamed into place once whole: once it is there, it reads.
        if path.exists() {
            return baton::control::ready::read(path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        }
        if let Some(status) = child.try_wait().expect("poll the child") {
            panic!("the gateway exited ({status}) before it was ready");
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "the gateway wrote no ready file ({}) within {STARTUP_WAIT:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child's first stdout line, read on a thread so a child that never prints (or hangs
/// before it does) fails the test after `within` instead of hanging it; the child is killed
/// then. The rest of its stdout is drained until it closes, so a later print never fails.
pub fn first_stdout_line(child: &mut Child, within: Duration) -> String {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let first = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(first);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    match rx.recv_timeout(within) {
        Ok(Ok(line)) if !line.is_empty() => line,
        Ok(Ok(_)) => panic!("the child closed its stdout without printing a line"),
        Ok(Err(error)) => panic!("reading the child's stdout: {error}"),
        Err(_) => {
            let _ = child.kill();
            panic!("the child printed no line within {within:?}");
        }
    }
}

/// A `baton up` config in `dir` for one engine (on a Unix socket there) and one session,
/// CLIENT1, with the gateway listening on `listen`; store and journal in `dir` too.
pub fn write_up_config(dir: &Path, listen: impl std::fmt::Display) -> PathBuf {
    let path = |name: &str| dir.join(name).display().to_string();
    let config = format!(
        "[gateway]\nlisten = \"{listen}\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"{}\"\njournal_dir = \"{}\"\nengines = [\"unix://{}\"]\n\n\
         [defaults]\nSenderCompID = \"BATON\"\n\n[[session]]\nTargetCompID = \"CLIENT1\"\n",
        path("store"),
        path("journal"),
        path("engine.sock"),
    );
    let config_path = dir.join("baton.toml");
    std::fs::write(&config_path, config).unwrap();
    config_path
}

/// A child killed when the test ends, passed or not: for children spawned with their own
/// stdio (pipes the test reads or closes), which `Gateway` and `EngineProcess` do not allow.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CLIENT1 logged on at `addr`, the FIX address of a gateway that said it is ready.
pub fn log_on(addr: SocketAddr) -> Initiator {
    let mut client =
        Initiator::connect(addr, InitiatorConfig::new("CLIENT1", "BATON")).expect("connect");
    client.logon(false, WAIT).expect("logon");
    client
}

/// The whole HTTP response of one `GET /metrics` at `addr`, head and body: the scrape the
/// tests that read a single counter share.
pub fn scrape_metrics(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics connect");
    // Bounded: an endpoint that answers and never closes fails the read instead of hanging it.
    stream
        .set_read_timeout(Some(STARTUP_WAIT))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the whole response, then the close");
    response
}

/// A gateway over `dir` (laid out as `start_trading` does) talking to the engine at
/// `engine_addr` and serving metrics on a loopback port of its choosing, returned with it.
pub fn start_gateway_with_metrics(dir: &Path, engine_addr: &str) -> (Gateway, SocketAddr) {
    let journal = dir.join("journal");
    let gateway = Gateway::start_with(
        &dir.join("baton.toml"),
        &dir.join("store"),
        &[
            "--engine".as_ref(),
            engine_addr.as_ref(),
            "--journal-dir".as_ref(),
            journal.as_os_str(),
            "--metrics".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
    );
    let metrics = gateway.metrics.expect("the gateway serves metrics");
    (gateway, metrics)
}

/// `baton gateway` on a free FIX port with `config`, its store and journal in `dir`, not yet
/// spawned: for tests that set their own flags, environment or stdio on it, or expect it to fail.
pub fn gateway_command(config: &Path, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
    command
        .args(["gateway", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--store-dir")
        .arg(dir.join("store"))
        .arg("--journal-dir")
        .arg(dir.join("journal"));
    command
}

/// `gateway_command` writing its ready file at the returned path (see `wait_ready`): for tests
/// that must know the gateway's addresses without reading its stdout (which they pipe elsewhere).
pub fn gateway_command_ready(config: &Path, dir: &Path) -> (Command, PathBuf) {
    let ready_path = ready_file(dir);
    let mut command = gateway_command(config, dir);
    command.env(READY_FILE_ENV, &ready_path);
    (command, ready_path)
}

/// Runs `command` to its exit like `Command::output`, but for at most `within`: a command that
/// hangs is killed and fails the test with what it wrote to stderr so far, instead of hanging
/// it. Its output is read on threads as it comes, so a chatty command never blocks on a pipe.
pub fn output_within(command: &mut Command, within: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = done_tx.send(bytes);
        });
        done
    };
    let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let Some(status) = exit_within(&mut child, within) else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = stderr.recv_timeout(within).unwrap_or_default();
        panic!(
            "{command:?} still running after {within:?}; its stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        );
    };
    // Bounded too: a process the command left behind could hold its pipes open.
    let output = |pipe: std::sync::mpsc::Receiver<Vec<u8>>, name: &str| {
        pipe.recv_timeout(within)
            .unwrap_or_else(|_| panic!("{command:?} exited but its {name} stayed open"))
    };
    std::process::Output {
        status,
        stdout: output(stdout, "stdout"),
        stderr: output(stderr, "stderr"),
    }
}

/// Sends SIGTERM to `child`, the way systemd or an operator stops baton.
pub fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// Polls until `child` exits, for at most `within`; `None` if it is still running then, so the
/// caller's assertion can say what it was waiting for.
pub fn exit_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the live gateway process `baton up` (pid `up`) runs, other than `not`, polled for
/// until one runs or `within` passes (then the test fails).
pub fn gateway_pid_under(up: u32, not: Option<u32>, within: Duration) -> u32 {
    let deadline = std::time::Instant::now() + within;
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            let mut after_comm = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace())
                .into_iter()
                .flatten();
            let zombie = after_comm.next() == Some("Z");
            let ppid = after_comm.next().and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let is_gateway = cmdline.split(|b| *b == 0).any(|arg| arg == b"gateway");
            if ppid == Some(up) && is_gateway && !zombie && Some(pid) != not {
                return pid;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no gateway process under baton up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
