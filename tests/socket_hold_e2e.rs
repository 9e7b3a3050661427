//! The gateway process dies under `baton up` and its counterparties do not notice a disconnect:
//! the supervisor holds every accepted socket, the restarted gateway takes them back, and FIX
//! resend closes whatever the dead process had read or written but not finished. Real
//! processes, real TCP, SIGKILL.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use baton::bench::initiator::{Initiator, InitiatorConfig, InitiatorError};
use baton::fix::codec::Message;
use support::counterparty::Counterparty;
use support::{
    Killed, READY_FILE_ENV, STARTUP_WAIT, ready_file, text, wait_for_engine, wait_ready,
};

/// Bound on everything that waits for the venue while a gateway restarts on a loaded machine.
const RECOVERY_WAIT: Duration = Duration::from_secs(60);

/// A `baton up` config for `sessions` counterparties CLIENT1..n, holding sockets `hold_ms`,
/// with its control endpoint on a port of its own choosing.
fn write_config(dir: &Path, sessions: usize, hold_ms: u64) -> PathBuf {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nstore_dir = \"{}\"\njournal_dir = \"{}\"\nengines = [\"unix://{}\"]\nhold_sockets_max_ms = {hold_ms}\n\n\
         [defaults]\nSenderCompID = \"BATON\"\nNonStopSession = true\n",
        path("store"),
        path("journal"),
        path("engine.sock"),
    );
    for n in 1..=sessions {
        config.push_str(&format!("\n[[session]]\nTargetCompID = \"CLIENT{n}\"\n"));
    }
    // The operators who file and approve the builds of the planned upgrades.
    config.push('\n');
    config.push_str(&support::control::shared_account_operators());
    let config_path = dir.join("baton.toml");
    std::fs::write(&config_path, config).unwrap();
    config_path
}

/// The pid of the gateway `baton up` (pid `up`) runs now, other than `not`.
fn gateway_pid(up: u32, not: Option<u32>) -> u32 {
    support::gateway_pid_under(up, not, RECOVERY_WAIT)
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a process this test's `baton up` started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// One counterparty with what it sent, so it can answer the gateway's ResendRequests.
struct Client {
    /// Its books.
    party: Counterparty,
    /// ClOrdID of each order, by the MsgSeqNum it went out with.
    orders: BTreeMap<u64, String>,
    /// ResendRequests of the gateway's answered.
    resends_served: u64,
    /// ResendRequests of ours (gaps on the gateway's side).
    resends_asked: u64,
    /// The connection's local port: the same one throughout means the same TCP connection.
    local_port: u16,
}

fn order(
    client: &mut Initiator,
    seq: u64,
    cl_ord_id: &str,
    resend: bool,
) -> Result<(), InitiatorError> {
    client.send_with_seq(b"D", seq, |e| {
        if resend {
            e.char(43, b'Y').str(122, "20261123-12:00:00.000");
        }
        e.str(11, cl_ord_id)
            .str(55, "AAPL")
            .char(54, b'1')
            .str(60, "20261123-12:00:00")
            .uint(38, 1)
            .char(40, b'2')
            .str(44, "10");
    })
}

impl Client {
    /// Logs CLIENTn on; the first one waits until an engine answers, when `engine`.
    fn log_on(addr: SocketAddr, n: usize) -> Client {
        Client::log_on_with(addr, n, true)
    }

    fn log_on_with(addr: SocketAddr, n: usize, engine: bool) -> Client {
        let mut initiator =
            Initiator::connect(addr, InitiatorConfig::new(&format!("CLIENT{n}"), "BATON"))
                .expect("connect");
        let logon = initiator.logon(false, STARTUP_WAIT).expect("logon");
        assert_eq!(logon.msg_type(), b"A", "{logon:?}");
        if n == 1 && engine {
            wait_for_engine(&mut initiator);
        }
        let local_port = initiator_port(&initiator);
        // The Logon is counted as processed by `Counterparty::new`.
        let party = Counterparty::new(initiator);
        Client {
            party,
            orders: BTreeMap::new(),
            resends_served: 0,
            resends_asked: 0,
            local_port,
        }
    }

    fn send_order(&mut self, cl_ord_id: &str) {
        let seq = self.party.client.seq_num_next_out();
        self.party.client.set_seq_num_next_out(seq + 1);
        order(&mut self.party.client, seq, cl_ord_id, false).expect("send order: disconnected");
        self.orders.insert(seq, cl_ord_id.to_string());
    }

    /// Answers a ResendRequest: orders again marked PossDup, everything else as gap fills.
    fn serve_resend(&mut self, request: &Message) {
        self.resends_served += 1;
        let begin = request.uint(7).expect("BeginSeqNo");
        let last = self.party.client.seq_num_next_out() - 1;
        let end = match request.uint(16).expect("EndSeqNo") {
            0 => last,
            end => end.min(last),
        };
        for seq in begin..=end {
            let client = &mut self.party.client;
            match self.orders.get(&seq) {
                Some(cl_ord_id) => order(client, seq, cl_ord_id, true),
                None => client.send_with_seq(b"4", seq, |e| {
                    e.char(43, b'Y')
                        .str(122, "20261123-12:00:00.000")
                        .char(123, b'Y')
                        .uint(36, seq + 1);
                }),
            }
            .expect("resend: disconnected");
        }
    }

    /// Processes messages until every order has exactly its one New report.
    fn until_acknowledged(&mut self, what: &str) {
        let deadline = Instant::now() + RECOVERY_WAIT;
        loop {
            let done = self
                .orders
                .values()
                .all(|id| !self.party.exec_types(id).is_empty());
            if done {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: orders not acknowledged: {:?}",
                self.party.reports
            );
            let gaps_before = self.party.client.gaps();
            match self.party.client.recv(left.min(Duration::from_millis(500))) {
                Ok(Some(message)) => {
                    if message.msg_type() == b"2" && text(&message, 43) != "Y" {
                        self.serve_resend(&message);
                    }
                    self.party.process(message);
                    if self.party.client.gaps() > gaps_before {
                        self.resends_asked += 1;
                    }
                }
                Ok(None) => {}
                Err(error) => panic!(
                    "{what}: {error} (a disconnect); reports {:?}",
                    self.party.reports
                ),
            }
        }
    }
}

fn initiator_port(initiator: &Initiator) -> u16 {
    initiator.local_addr().expect("local address").port()
}

/// `baton up` running: the process, the FIX address, and the ready file each of its gateways
/// rewrites with the addresses it bound (the FIX listener is held across restarts; the control
/// endpoint is bound anew on port 0 by each gateway).
fn start(dir: &Path, sessions: usize, hold_ms: u64) -> (Killed, SocketAddr, PathBuf) {
    start_with_env(dir, sessions, hold_ms, &[])
}

/// [`start`] with variables added to `baton up`'s environment (its children inherit them).
fn start_with_env(
    dir: &Path,
    sessions: usize,
    hold_ms: u64,
    env: &[(&str, &std::ffi::OsStr)],
) -> (Killed, SocketAddr, PathBuf) {
    let config = write_config(dir, sessions, hold_ms);
    let ready_path = ready_file(dir);
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["up", "--config"])
        .arg(&config)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .env(READY_FILE_ENV, &ready_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn baton up");
    let addr = wait_ready(&ready_path, &mut up).listen;
    (Killed(up), addr, ready_path)
}

/// The control endpoint of the gateway running now: read once it serves again, so its ready
/// file is the one it wrote.
fn control_of(ready_path: &Path) -> SocketAddr {
    baton::control::ready::read(ready_path)
        .unwrap_or_else(|error| panic!("{}: {error}", ready_path.display()))
        .control
}

fn up_pid(up: &Killed) -> u32 {
    let child: &Child = &up.0;
    child.id()
}

#[test]
fn counterparties_keep_their_connections_across_gateway_kills() {
    const SESSIONS: usize = 50;
    const KILLS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let (up, addr, control) = start(dir.path(), SESSIONS, 60_000);
    let mut clients: Vec<Client> = (1..=SESSIONS).map(|n| Client::log_on(addr, n)).collect();
    // Warm-up: the engine is attached once one order per session is acknowledged.
    for (n, client) in clients.iter_mut().enumerate() {
        client.send_order(&format!("WARM-{n}"));
    }
    for client in &mut clients {
        client.until_acknowledged("warm-up");
    }
    let mut previous = None;
    let mut recoveries = Vec::new();
    let started = Instant::now();
    for kill in 0..KILLS {
        let pid = gateway_pid(up_pid(&up), previous);
        // Orders in flight when the gateway dies: some read and not journaled, some not read.
        for (n, client) in clients.iter_mut().enumerate() {
            client.send_order(&format!("K{kill}-A-{n}"));
        }
        sigkill(pid);
        let killed_at = Instant::now();
        // Orders sent while no gateway runs: the kernel keeps them on the held connection.
        for (n, client) in clients.iter_mut().enumerate() {
            client.send_order(&format!("K{kill}-B-{n}"));
        }
        for client in &mut clients {
            client.until_acknowledged(&format!("after kill {kill}"));
        }
        // Every session serving again: each has the answers to what it sent while no gateway ran.
        recoveries.push(killed_at.elapsed());
        previous = Some(pid);
    }
    let took = started.elapsed();
    // The tail of a resend asked for around the last kill may still be on its way (a
    // ResendRequest asks for everything from the gap on): one more order each, answered after
    // whatever the gateway sends before it, settles it.
    for (n, client) in clients.iter_mut().enumerate() {
        client.send_order(&format!("SETTLE-{n}"));
    }
    for client in &mut clients {
        client.until_acknowledged("after the kills");
    }
    // Then planned upgrades between two builds, under the same flow: no resend at all.
    let resent_before: Vec<(u64, u64, u64)> = clients
        .iter()
        .map(|c| (c.resends_served, c.resends_asked, c.party.poss_dup_dropped))
        .collect();
    let (builds, changes) = file_gateway_builds(dir.path(), control_of(&control));
    let config = dir.path().join("baton.toml");
    let pauses = upgrade_rounds(&up, &config, &control, &builds, &changes, &mut clients);
    for (client, before) in clients.iter().zip(&resent_before) {
        assert_eq!(
            (
                client.resends_served,
                client.resends_asked,
                client.party.poss_dup_dropped
            ),
            *before,
            "a resend around a planned upgrade"
        );
    }
    let mut served = 0;
    let mut asked = 0;
    for client in &mut clients {
        assert_eq!(
            initiator_port(&client.party.client),
            client.local_port,
            "a new connection"
        );
        for id in client.orders.values() {
            assert_eq!(
                client.party.exec_types(id),
                ["0"],
                "{id}: not acknowledged exactly once"
            );
        }
        assert!(client.party.gap_free(), "a gap the gateway never closed");
        served += client.resends_served;
        asked += client.resends_asked;
    }
    // The gateway's side: every order was taken in, none is still expected.
    let status = support::control::status(control_of(&control));
    for (n, client) in clients.iter().enumerate() {
        let session = &status.sessions[n];
        assert!(session.logged_on, "{session:?}");
        assert_eq!(
            session.seq_num_next_in,
            client.party.client.seq_num_next_out(),
            "{session:?}"
        );
        assert_eq!(
            session.seq_num_next_out,
            client.party.client.seq_num_next_in(),
            "{session:?}"
        );
    }
    recoveries.sort_unstable();
    eprintln!(
        "socket hold: {SESSIONS} sessions, {KILLS} gateway kills in {took:?}: 0 disconnects; resend requests served by counterparties {served}, sent by counterparties {asked}, all around the kills; from SIGKILL to every session answered again p50 {:?}, max {:?}; then {} planned upgrades without a resend, pause p50 {} µs, max {} µs",
        recoveries[recoveries.len() / 2],
        recoveries[recoveries.len() - 1],
        pauses.len(),
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1]
    );
    drop(up);
}

/// Bytes the gateway's side of the connection from client port `client_port` to `gateway_port`
/// has received and not read yet, from /proc/net/tcp; `None` while no such socket is listed.
fn unread_by_gateway(gateway_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if port(local)? != gateway_port || port(remote)? != client_port {
            return None;
        }
        u64::from_str_radix(queues.rsplit_once(':')?.1, 16).ok()
    })
}

#[test]
fn a_gateway_killed_after_reading_half_a_frame_recovers_it_by_resend_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (up, addr, control) = start(dir.path(), 1, 60_000);
    let mut client = Client::log_on(addr, 1);
    client.send_order("BEFORE");
    client.until_acknowledged("before the kill");
    let pid = gateway_pid(up_pid(&up), None);
    // An order whose first half the gateway reads, then dies holding it.
    let seq = client.party.client.seq_num_next_out();
    client.party.client.set_seq_num_next_out(seq + 1);
    client.orders.insert(seq, "HALF".into());
    let mut encoder = baton::fix::codec::Encoder::new("FIX.4.4");
    encoder
        .start(b"D")
        .str(49, "CLIENT1")
        .str(56, "BATON")
        .uint(34, seq)
        .timestamp(52, baton::fix::time::Timestamp::now())
        .str(11, "HALF")
        .str(55, "AAPL")
        .char(54, b'1')
        .str(60, "20261123-12:00:00")
        .uint(38, 1)
        .char(40, b'2')
        .str(44, "10");
    let frame = encoder.finish().to_vec();
    let (head, tail) = frame.split_at(frame.len() / 2);
    client.party.client.send_raw(head).unwrap();
    let deadline = Instant::now() + RECOVERY_WAIT;
    while unread_by_gateway(addr.port(), client.local_port) != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the gateway never read the half frame"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    sigkill(pid);
    // The rest of it reaches the next gateway as a frame without its start: garbled, skipped.
    client.party.client.send_raw(tail).unwrap();
    client.send_order("AFTER");
    client.until_acknowledged("after the kill");
    assert_eq!(
        initiator_port(&client.party.client),
        client.local_port,
        "a new connection"
    );
    assert!(
        client.resends_served >= 1,
        "the gateway never asked for the lost order"
    );
    for id in ["BEFORE", "HALF", "AFTER"] {
        assert_eq!(client.party.exec_types(id), ["0"], "{id}");
    }
    let status = support::control::status(control_of(&control));
    assert_eq!(
        status.sessions[0].seq_num_next_in,
        client.party.client.seq_num_next_out()
    );
    drop(up);
}

#[test]
fn a_gateway_that_dies_half_way_through_writing_a_report_resends_it_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("aborted-mid-write");
    // Disarmed (the file exists) while the session logs on and the engine answers a probe.
    std::fs::write(&marker, b"").unwrap();
    let (up, addr, control) = start_with_env(
        dir.path(),
        1,
        60_000,
        &[(
            baton::gateway::acceptor::TEST_ABORT_MID_WRITE_ENV,
            marker.as_os_str(),
        )],
    );
    let mut client = Client::log_on(addr, 1);
    client.party.client.set_skip_garbled(true);
    let pid = gateway_pid(up_pid(&up), None);
    // Armed: the next ExecutionReport is written in half, then the gateway aborts.
    std::fs::remove_file(&marker).unwrap();
    client.send_order("CUT");
    let deadline = Instant::now() + RECOVERY_WAIT;
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the gateway never wrote a report"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    client.send_order("AFTER");
    client.until_acknowledged("after the crash in the middle of a write");
    assert_ne!(gateway_pid(up_pid(&up), Some(pid)), pid);
    assert_eq!(
        initiator_port(&client.party.client),
        client.local_port,
        "a new connection"
    );
    assert!(
        client.party.client.garbled() >= 1,
        "the half-written report was not seen"
    );
    for id in ["CUT", "AFTER"] {
        assert_eq!(client.party.exec_types(id), ["0"], "{id}");
    }
    assert!(client.party.gap_free(), "a gap left open");
    let status = support::control::status(control_of(&control));
    assert_eq!(
        status.sessions[0].seq_num_next_out,
        client.party.client.seq_num_next_in()
    );
    drop(up);
}

#[test]
fn a_counterparty_the_gateway_logs_out_or_refuses_is_really_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (up, addr, _control) = start(dir.path(), 1, 60_000);
    let mut client = Client::log_on(addr, 1);
    let logout = client
        .party
        .client
        .logout(RECOVERY_WAIT)
        .expect("Logout answered");
    assert_eq!(logout.msg_type(), b"5");
    // The holder's duplicate is closed with the gateway's: the counterparty reads end of stream.
    assert!(
        client.party.client.closed_within(RECOVERY_WAIT),
        "the connection stayed open after Logout"
    );
    // A Logon the gateway refuses without an answer: it only closes its descriptor, so without
    // the holder closing its duplicate the counterparty would wait on an open connection.
    let mut stranger =
        Initiator::connect(addr, InitiatorConfig::new("STRANGER", "BATON")).expect("connect");
    let refused = stranger.logon(false, Duration::from_millis(1));
    assert!(
        matches!(
            refused,
            Err(InitiatorError::Timeout(_)) | Err(InitiatorError::Closed)
        ),
        "{refused:?}"
    );
    assert!(
        stranger.closed_within(RECOVERY_WAIT),
        "the refused connection stayed open"
    );
    drop(up);
}

#[test]
fn sockets_are_released_when_the_gateway_does_not_come_back_in_time() {
    let dir = tempfile::tempdir().unwrap();
    // Held for 50 ms, while the supervisor waits at least 200 ms before the first restart.
    let (up, addr, _control) = start(dir.path(), 1, 50);
    let mut client = Client::log_on(addr, 1);
    sigkill(gateway_pid(up_pid(&up), None));
    assert!(
        client.party.client.closed_within(RECOVERY_WAIT),
        "the holder kept the connection past its bound"
    );
    drop(up);
}

/// systemd's side of the file descriptor store, stood in for by a datagram socket bound as
/// `NOTIFY_SOCKET`: every state line seen, and the descriptors stored by name.
struct FdStore {
    socket: std::os::unix::net::UnixDatagram,
    seen: Vec<String>,
    stored: BTreeMap<String, std::os::fd::OwnedFd>,
}

impl FdStore {
    /// Reads notifications, applying FDSTORE/FDSTOREREMOVE as systemd does, until `done`.
    fn until(&mut self, what: &str, done: impl Fn(&FdStore) -> bool) {
        use std::os::fd::AsFd;
        let deadline = Instant::now() + RECOVERY_WAIT;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what}: not seen; seen {:?}", self.seen);
            self.socket.set_read_timeout(Some(left)).unwrap();
            let (bytes, mut fds) = baton::handover::recv_bytes(self.socket.as_fd(), true)
                .unwrap_or_else(|error| panic!("{what}: {error}; seen {:?}", self.seen));
            let text = String::from_utf8(bytes).unwrap();
            let mut store = false;
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("FDSTORE", "1")) => store = true,
                    Some(("FDSTOREREMOVE", "1")) => store = false,
                    Some(("FDNAME", name)) if store => {
                        let fd = fds.pop().expect("FDSTORE=1 without a descriptor");
                        self.stored.insert(name.to_string(), fd);
                    }
                    Some(("FDNAME", name)) => {
                        self.stored.remove(name);
                    }
                    _ => {}
                }
            }
            self.seen.push(text);
        }
    }
}

#[test]
fn under_systemd_the_sockets_are_stored_with_it_and_a_new_gateway_takes_them_back() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), 1, "");
    let notify_path = dir.path().join("notify");
    let mut store = FdStore {
        socket: std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap(),
        seen: Vec::new(),
        stored: BTreeMap::new(),
    };
    let mut first = support::gateway_command(&config, dir.path());
    first
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("LISTEN_PID")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped());
    let mut first = Killed(first.spawn().unwrap());
    let line = support::first_stdout_line(&mut first.0, STARTUP_WAIT);
    let addr: SocketAddr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let mut client = Client::log_on_with(addr, 1, false);
    store.until(
        "READY, WATCHDOG, the listener and the logged-on connection",
        |s| {
            s.seen.iter().any(|m| m.contains("READY=1"))
                && s.seen.iter().any(|m| m.contains("WATCHDOG=1"))
                && s.stored.contains_key("listener")
                && s.stored.keys().any(|name| name.starts_with('s'))
        },
    );
    assert_eq!(store.stored.len(), 2, "{:?}", store.stored.keys());
    sigkill(first.0.id());
    let _ = first.0.wait();

    // Started as systemd starts a unit again: its stored descriptors from 3 on, their names in
    // LISTEN_FDNAMES, LISTEN_PID the new process's (the shell's pid, kept by exec).
    let names: Vec<String> = store.stored.keys().cloned().collect();
    let high: Vec<libc::c_int> = names
        .iter()
        .map(|name| {
            // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor this test owns, above 100, so the
            // dup2 to 3.. in the child cannot overwrite a source.
            unsafe { libc::fcntl(store.stored[name].as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) }
        })
        .collect();
    assert!(high.iter().all(|fd| *fd >= 100));
    let mut second = std::process::Command::new("sh");
    second
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_baton"))
        .args(support::gateway_command(&config, dir.path()).get_args())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("LISTEN_FDS", names.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    let sources = high.clone();
    // SAFETY: only dup2(2), async-signal-safe, between fork and exec.
    unsafe {
        second.pre_exec(move || {
            for (index, fd) in sources.iter().enumerate() {
                if libc::dup2(*fd, 3 + index as libc::c_int) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let second = Killed(second.spawn().unwrap());
    for fd in high {
        // SAFETY: closing the duplicates made above, owned by this test alone.
        unsafe {
            libc::close(fd);
        }
    }
    // The same connection answers a TestRequest from the new process.
    client
        .party
        .client
        .send(b"1", |e| {
            e.str(112, "after-restart");
        })
        .expect("send TestRequest: disconnected");
    let answer = client
        .party
        .client
        .recv_until(RECOVERY_WAIT, "Heartbeat from the new gateway", |m| {
            m.get(112) == Some(b"after-restart".as_slice())
        })
        .expect("the session answers on the same connection");
    assert_eq!(answer.msg_type(), b"0");
    assert_eq!(initiator_port(&client.party.client), client.local_port);
    // A Logout makes the new gateway drop the connection from the store.
    let label = names.iter().find(|n| n.starts_with('s')).unwrap().clone();
    client
        .party
        .client
        .logout(RECOVERY_WAIT)
        .expect("Logout answered");
    store.until("the connection removed from the store", |s| {
        s.seen
            .iter()
            .any(|m| m.contains("FDSTOREREMOVE=1") && m.contains(&label))
    });
    drop(second);
}

/// Runs `baton ctl upgrade-gateway --change CHANGE` the way an operator would (it finds the
/// gateway through the config and the ready file, before and after the upgrade) while the
/// counterparties keep sending orders; returns the pause it printed, in microseconds.
fn upgrade_under_load(
    config: &Path,
    ready_path: &Path,
    change: &str,
    clients: &mut [Client],
    round: usize,
) -> u64 {
    let mut ctl = support::control::spawn_upgrade_gateway(config, ready_path, change);
    let deadline = Instant::now() + RECOVERY_WAIT;
    let mut batch = 0;
    // Order flow throughout the upgrade: a batch from every session, acknowledged, again.
    while ctl.try_wait().expect("ctl").is_none() {
        assert!(Instant::now() < deadline, "baton ctl upgrade-gateway hangs");
        for (n, client) in clients.iter_mut().enumerate() {
            client.send_order(&format!("U{round}-{batch}-{n}"));
        }
        for client in clients.iter_mut() {
            client.until_acknowledged(&format!("during upgrade {round}"));
        }
        batch += 1;
    }
    let output = ctl.wait_with_output().expect("ctl output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "upgrade {round} ({change}): {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .split("pause ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|us| us.parse().ok())
        .unwrap_or_else(|| panic!("no pause in {stdout:?}"))
}

/// Files and approves a change for each of two gateway builds: the same program under two
/// hashes (bytes appended to the executable, which it ignores). Honestly the same code; what
/// differs is the artifact the change approves and `baton launch` verifies, which is what a
/// planned upgrade moves between.
fn file_gateway_builds(dir: &Path, control: SocketAddr) -> ([PathBuf; 2], Vec<String>) {
    let builds = [
        support::other_build(dir, "upgrade-a"),
        support::other_build(dir, "upgrade-b"),
    ];
    let mut changes = Vec::new();
    for build in &builds {
        changes.push(support::control::approved_change(control, build));
    }
    (builds, changes)
}

/// Planned gateway upgrades in each round: A, B, A, B, A, so every one after the first is also
/// a rollback to the other build.
const UPGRADES: usize = 5;

/// Runs [`UPGRADES`] planned upgrades under order flow, checking after each that a new gateway
/// process, adopted by the supervisor, serves every session from the change's build; returns the
/// pauses, sorted.
fn upgrade_rounds(
    up: &Killed,
    config: &Path,
    ready_path: &Path,
    builds: &[PathBuf; 2],
    changes: &[String],
    clients: &mut [Client],
) -> Vec<u64> {
    let mut pauses = Vec::new();
    let mut previous = gateway_pid(up_pid(up), None);
    for round in 0..UPGRADES {
        let change = &changes[round % 2];
        pauses.push(upgrade_under_load(
            config, ready_path, change, clients, round,
        ));
        let now = gateway_pid(up_pid(up), Some(previous));
        assert_ne!(now, previous, "upgrade {round}: the same gateway process");
        // The supervisor adopted the new process: it is its child, and the old one is gone.
        assert!(
            !std::path::Path::new(&format!("/proc/{previous}")).exists()
                || std::fs::read_to_string(format!("/proc/{previous}/stat"))
                    .is_ok_and(|stat| stat.contains(") Z ")),
            "upgrade {round}: the old gateway still runs"
        );
        previous = now;
        let status = support::control::status(control_of(ready_path));
        let upgrade = status.gateway_upgrade.expect("the upgrade in status");
        assert_eq!(&upgrade.change, change);
        assert_eq!(upgrade.sessions, clients.len() as u64);
        assert_eq!(
            upgrade.artifact_sha256,
            baton::control::artifact::sha256_file(&builds[round % 2]).unwrap()
        );
        // Recorded for the next `baton up`, each upgrade (a rollback too) over the last.
        recorded_build_becomes(config, change);
    }
    pauses.sort_unstable();
    pauses
}

/// Waits until the supervisor of the venue configured at `config` has recorded the build of
/// `change` as the gateway's (it does when it sees the old gateway exit).
fn recorded_build_becomes(config: &Path, change: &str) {
    let stage = baton::control::stage::stage_dir(&config.parent().unwrap().join("journal"));
    let deadline = Instant::now() + RECOVERY_WAIT;
    loop {
        let recorded = baton::control::stage::read_gateway_build(&stage).unwrap();
        if recorded
            .as_ref()
            .is_some_and(|build| build.change == change)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway's build record says {recorded:?}, not {change}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn counterparties_see_no_disconnect_and_no_resend_across_planned_gateway_upgrades() {
    const SESSIONS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let (up, addr, ready_path) = start(dir.path(), SESSIONS, 60_000);
    let config = dir.path().join("baton.toml");
    let (builds, changes) = file_gateway_builds(dir.path(), control_of(&ready_path));
    let mut clients: Vec<Client> = (1..=SESSIONS).map(|n| Client::log_on(addr, n)).collect();
    for (n, client) in clients.iter_mut().enumerate() {
        client.send_order(&format!("WARM-{n}"));
    }
    for client in &mut clients {
        client.until_acknowledged("warm-up");
    }
    let pauses = upgrade_rounds(&up, &config, &ready_path, &builds, &changes, &mut clients);
    // After the last upgrade, more flow on the last build.
    for (n, client) in clients.iter_mut().enumerate() {
        client.send_order(&format!("AFTER-{n}"));
    }
    for client in &mut clients {
        client.until_acknowledged("after the upgrades");
    }
    let mut orders = 0;
    for client in &mut clients {
        assert_eq!(
            initiator_port(&client.party.client),
            client.local_port,
            "a new connection"
        );
        for id in client.orders.values() {
            assert_eq!(
                client.party.exec_types(id),
                ["0"],
                "{id}: not acknowledged exactly once"
            );
        }
        orders += client.orders.len();
        assert!(client.party.gap_free(), "a gap");
        assert_eq!(client.resends_served, 0, "the gateway asked for a resend");
        assert_eq!(client.resends_asked, 0, "a counterparty saw a gap");
        assert_eq!(client.party.poss_dup_dropped, 0, "a message came twice");
    }
    let status = support::control::status(control_of(&ready_path));
    for (n, client) in clients.iter().enumerate() {
        let session = &status.sessions[n];
        assert!(session.logged_on, "{session:?}");
        assert_eq!(
            session.seq_num_next_in,
            client.party.client.seq_num_next_out()
        );
        assert_eq!(
            session.seq_num_next_out,
            client.party.client.seq_num_next_in()
        );
    }
    // The change reports carry each upgrade and its pause.
    let report = support::control::ok(support::control::ctl(
        control_of(&ready_path),
        "alice",
        &["change", "report", &changes[0]],
    ));
    assert_eq!(
        report.matches("gateway upgraded to").count(),
        UPGRADES.div_ceil(2),
        "{report}"
    );
    eprintln!(
        "planned gateway upgrades: {SESSIONS} sessions, {UPGRADES} upgrades, {orders} orders: 0 disconnects, 0 resends, 0 gaps; pause p50 {} µs, max {} µs",
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1]
    );
    drop(up);
}

#[test]
fn a_refused_or_failed_gateway_upgrade_leaves_the_running_gateway_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (up, addr, ready_path) = start(dir.path(), 1, 60_000);
    let control = control_of(&ready_path);
    let build = support::other_build(dir.path(), "broken");
    let filed = support::control::ok(support::control::ctl(
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
    assert!(filed.contains("CHG-1"), "{filed}");
    let mut client = Client::log_on(addr, 1);
    client.send_order("BEFORE");
    client.until_acknowledged("before");
    let pid = gateway_pid(up_pid(&up), None);
    // Not approved: refused by policy, nothing started.
    let refused = support::control::refused(support::control::ctl(
        control,
        "alice",
        &["upgrade-gateway", "--change", "CHG-1"],
    ));
    assert!(refused.contains("not approved"), "{refused}");
    support::control::ok(support::control::ctl(
        control,
        "bob",
        &["change", "approve", "CHG-1"],
    ));
    // Approved, but the file no longer is the approved build: `baton launch` refuses to run it,
    // the new process exits, and the running gateway hears of it and reads again.
    let mut bytes = std::fs::read(&build).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&build, bytes).unwrap();
    let failed = support::control::refused(support::control::ctl(
        control,
        "alice",
        &["upgrade-gateway", "--change", "CHG-1"],
    ));
    assert!(failed.contains("exited before taking over"), "{failed}");
    client.send_order("AFTER");
    client.until_acknowledged("after the failed upgrade");
    assert_eq!(
        gateway_pid(up_pid(&up), None),
        pid,
        "the gateway was replaced"
    );
    assert_eq!(initiator_port(&client.party.client), client.local_port);
    assert_eq!((client.resends_served, client.resends_asked), (0, 0));
    for id in ["BEFORE", "AFTER"] {
        assert_eq!(client.party.exec_types(id), ["0"], "{id}");
    }
    let events = support::control::audit_events(dir.path());
    assert_eq!(
        events
            .iter()
            .filter(|e| e.as_str() == "action-refused:upgrade-gateway")
            .count(),
        2,
        "{events:?}"
    );
    drop(up);
}

/// Stops `baton up` the way an operator does (SIGTERM: sessions logged out, children stopped)
/// and waits for it to exit.
fn stop_up(mut up: Killed) {
    support::sigterm(&up.0);
    assert!(
        support::exit_within(&mut up.0, RECOVERY_WAIT).is_some(),
        "baton up did not stop on SIGTERM"
    );
}

/// The build the gateway under `baton up` runs, as status says once it has hashed it.
fn running_build(ready_path: &Path) -> baton::control::api::GatewayBuild {
    let status =
        support::control::status_until(control_of(ready_path), "the gateway's hash", |s| {
            s.gateway_build
                .as_ref()
                .is_some_and(|b| !b.executable_sha256.is_empty())
        });
    status.gateway_build.expect("checked above")
}

/// Waits until a gateway process under `up` other than `not` runs `executable` (a gateway
/// started through `baton launch` is the configured binary until the launch has checked the
/// build and executed it); returns its pid.
fn gateway_running(up: &Killed, not: Option<u32>, executable: &Path) -> u32 {
    let deadline = Instant::now() + RECOVERY_WAIT;
    loop {
        let pid = gateway_pid(up_pid(up), not);
        let running = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if running.as_deref() == Some(executable) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway runs {running:?}, not {}",
            executable.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_build_a_planned_upgrade_moved_to_is_what_a_restarted_baton_up_runs() {
    let dir = tempfile::tempdir().unwrap();
    let configured = baton::control::artifact::sha256_file(Path::new(env!("CARGO_BIN_EXE_baton")))
        .expect("hash the configured binary");
    let (up, addr, ready_path) = start(dir.path(), 1, 60_000);
    let config = dir.path().join("baton.toml");
    let (builds, changes) = file_gateway_builds(dir.path(), control_of(&ready_path));
    let upgraded = baton::control::artifact::sha256_file(&builds[1]).unwrap();
    assert_ne!(upgraded, configured);
    assert_eq!(running_build(&ready_path).executable_sha256, configured);
    let mut clients = vec![Client::log_on(addr, 1)];
    clients[0].send_order("BEFORE");
    clients[0].until_acknowledged("before the upgrade");
    upgrade_under_load(&config, &ready_path, &changes[1], &mut clients, 0);
    assert_eq!(running_build(&ready_path).executable_sha256, upgraded);
    drop(clients);
    stop_up(up);

    // A new `baton up` on the same directories runs build B again, through `baton launch`.
    let (up, _, ready_path) = start(dir.path(), 1, 60_000);
    let build = running_build(&ready_path);
    assert_eq!(build.executable_sha256, upgraded, "{build:?}");
    assert_eq!(build.fallback, None);
    let build_b = builds[1].canonicalize().unwrap();
    let pid = gateway_running(&up, None, &build_b);
    // A gateway that dies is restarted from it too.
    sigkill(pid);
    gateway_running(&up, Some(pid), &build_b);
    stop_up(up);

    // The recorded build no longer has the bytes its record names: the configured binary runs,
    // and status says why.
    let mut bytes = std::fs::read(&builds[1]).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&builds[1], bytes).unwrap();
    let (up, _, ready_path) = start(dir.path(), 1, 60_000);
    let build = running_build(&ready_path);
    assert_eq!(build.executable_sha256, configured, "{build:?}");
    let reason = build.fallback.expect("the fallback is said in status");
    assert!(reason.contains(&changes[1]), "{reason}");
    let shown = support::control::ok(support::control::ctl(
        control_of(&ready_path),
        "alice",
        &["status"],
    ));
    assert!(shown.contains("configured binary"), "{shown}");
    drop(up);
}
