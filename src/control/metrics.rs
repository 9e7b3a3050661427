//! The gateway's metrics endpoint: what `baton ctl status` shows, as Prometheus text exposition
//! format 0.0.4 on `GET /metrics`, so an operator's monitoring can scrape, graph and alert on it
//! (sessions logged on, engines up and lagging, switches and their pauses, canary gates, halted
//! symbols) without polling the control endpoint's JSON.
//!
//! Like the control endpoint it decides nothing and owns no state: each scrape sends the same
//! [`ControlRequest::Status`] that `baton ctl status` sends, down the same command channel, and
//! renders the answer with [`render`], a pure function of the [`Status`]. The numbers are therefore
//! exactly what status says, and a gateway whose sequencer is stuck answers 503 (after
//! [`constants::METRICS_STATUS_TIMEOUT_MS`]) instead of stale figures.
//!
//! The HTTP side is a minimal responder written here rather than an HTTP server crate: a scrape is
//! one `GET` and one response on a loopback connection that is then closed, which needs a bounded
//! head reader and a status line, not hyper's dependency tree in a gateway that otherwise has no
//! HTTP at all. Its bounds: a request head of at most
//! [`constants::METRICS_REQUEST_HEAD_BYTES_MAX`] bytes, sent within
//! [`constants::METRICS_IO_TIMEOUT_MS`], at most [`constants::METRICS_CONNECTIONS_MAX`]
//! connections at once, one request per connection (`Connection: close`).
//!
//! Only the local host may connect, as for the control endpoint: [`bind`] refuses a non-loopback
//! address and every accepted peer is checked again.
//!
//! Two figures are not in the status, because they are checks rather than state, and the endpoint
//! makes them itself at scrape time ([`Checks`]): whether each session is inside its window now
//! (from the configured schedules), so "logged off inside its window" is an exact alert; and
//! whether the audit log on disk still verifies through the head the control plane holds, so a
//! trail edited, cut or replaced while the gateway runs is an alert rather than a surprise at the
//! next start (where a log that does not verify stops the gateway).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::api::{AuditHead, ControlReply, ControlRequest, EngineRole, EngineStatus, Status};
use super::endpoint::{ControlCommand, Slot, Slots, accept_local, bind_loopback, stopped};
use crate::constants;
use crate::fix::schedule::Schedule;
use crate::fix::time::Timestamp;

/// The Content-Type of the Prometheus text exposition format 0.0.4, as Prometheus's own client
/// libraries send it: the version tells the scraper which parser to use, and the charset covers
/// label values (CompIDs, symbols) that are not ASCII.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the metrics endpoint could not start. The messages name the address and the config key,
/// because an operator with several gateways on one host needs to know which.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The configured address is reachable from other hosts.
    #[error(
        "metrics endpoint address {addr} is not a loopback address: `[gateway] metrics` (or --metrics) must be 127.0.0.1 or ::1, because the metrics name sessions and engines; scrape from another host through an agent or proxy on this one"
    )]
    NotLoopback {
        /// The address that was refused.
        addr: SocketAddr,
    },
    /// The listening socket could not be set up (port in use, permission).
    #[error("cannot listen for metrics scrapes on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// Why a scrape got no status: each becomes a 503 whose body says which, so the operator reading
/// the scraper's error sees the cause.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unavailable {
    /// The command channel is closed: the control plane has stopped (the gateway is going away).
    #[error("the gateway's control plane is not running")]
    NotRunning,
    /// The control plane dropped the request without answering (shutting down mid-request).
    #[error("the gateway's control plane stopped before answering")]
    Dropped,
    /// The control plane refused the status request.
    #[error("the gateway refused the status request: {reason}")]
    Refused {
        /// Its reason.
        reason: String,
    },
    /// Something other than a status came back.
    #[error("the gateway answered a status request with something else")]
    NotStatus,
    /// No answer within the bound.
    #[error("no status from the gateway within {timeout_ms} ms")]
    Timeout {
        /// The bound that was exceeded.
        timeout_ms: u128,
    },
}

/// A bound metrics endpoint that has not started serving yet: binding first lets the gateway
/// report a busy port or a refused address before it takes any traffic.
#[derive(Debug)]
pub struct MetricsEndpoint {
    /// The listening socket, bound to a loopback address.
    listener: TcpListener,
    /// Where it is bound (the real port when asked for port 0).
    local_addr: SocketAddr,
    /// How long a scrape waits for the status before answering 503.
    status_timeout: Duration,
    /// How long a connection may take to send its request head, or to take its response.
    io_timeout: Duration,
    /// What scrapes check beside the status.
    checker: Checker,
}

/// What the endpoint checks itself at each scrape (see [`Checks`]); shared by its connections.
#[derive(Clone, Debug, Default)]
struct Checker {
    /// Each configured session's counterparty CompID and schedule, in config (= status) order.
    windows: Arc<Vec<(String, Schedule)>>,
    /// The audit log to re-verify; `None`: `baton_audit_chain_ok` is not exported.
    audit: Option<Arc<AuditCheck>>,
}

/// Re-verifies the audit log on disk, at most once per interval.
#[derive(Debug)]
struct AuditCheck {
    /// The log the control plane appends to.
    path: PathBuf,
    /// Least time between two verifications.
    interval: Duration,
    /// When the last verification ran and what it found; held across a verification, so
    /// concurrent scrapes wait for one instead of each reading the log.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

/// Figures a scrape adds to the status: checks the endpoint makes itself, not state the gateway
/// keeps. Empty (the default) renders nothing extra.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    /// Per session, in status order: whether now is inside its window (`None`: unknown).
    pub in_window: Vec<Option<bool>>,
    /// Whether the audit log on disk verifies through the head in the status.
    pub audit_chain_ok: Option<bool>,
}

impl Checker {
    /// The checks for `status`, made now.
    async fn checks(&self, status: &Status) -> Checks {
        let now = Timestamp::now();
        let in_window = status
            .sessions
            .iter()
            .enumerate()
            .map(|(index, session)| {
                self.windows
                    .get(index)
                    .filter(|(target, _)| *target == session.target_comp_id)
                    .map(|(_, schedule)| schedule.window(now).is_some())
            })
            .collect();
        let audit_chain_ok = match (&self.audit, &status.audit_head) {
            (Some(audit), Some(head)) => Some(audit.holds(head).await),
            _ => None,
        };
        Checks {
            in_window,
            audit_chain_ok,
        }
    }
}

impl AuditCheck {
    /// Whether the log verifies through `head`, re-reading it when the last look is older than
    /// the interval.
    async fn holds(&self, head: &AuditHead) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < self.interval
        {
            return ok;
        }
        let path = self.path.clone();
        let (seq, hash) = (head.seq, head.hash.clone());
        let verdict = tokio::task::spawn_blocking(move || chain_holds(&path, seq, &hash))
            .await
            .unwrap_or_else(|error| Err(format!("verification did not finish: {error}")));
        let ok = verdict.is_ok();
        let was_ok = last.is_none_or(|(_, ok)| ok);
        match verdict {
            Err(reason) if was_ok => {
                tracing::error!(path = %self.path.display(), %reason, "the audit log on disk no longer verifies");
            }
            Ok(()) if !was_ok => {
                tracing::warn!(path = %self.path.display(), "the audit log on disk verifies again");
            }
            _ => {}
        }
        *last = Some((Instant::now(), ok));
        ok
    }
}

/// Checks the audit log at `path` without touching it: every complete record must verify, and
/// the record the control plane last wrote (`seq`, `hash`) must be among them, so an edited
/// record, a cut and a log rebuilt with fresh hashes all fail. Records appended after the head
/// was read, and a line being appended (a torn tail), are fine.
fn chain_holds(path: &std::path::Path, seq: u64, hash: &str) -> Result<(), String> {
    let (records, report) = super::audit::read(path).map_err(|error| error.to_string())?;
    if let Some(bad) = report.first_bad {
        return Err(format!("record at {bad}"));
    }
    if seq == 0 || records.iter().any(|r| r.seq == seq && r.hash == hash) {
        Ok(())
    } else {
        Err(format!(
            "record {seq} with the hash the gateway wrote is gone (the log ends at {})",
            report.head_seq
        ))
    }
}

/// Binds the metrics endpoint to `addr`, which must be a loopback address: the metrics name the
/// venue's counterparties and engines, which must not be readable from another host however the
/// configuration is written.
pub async fn bind(addr: SocketAddr) -> Result<MetricsEndpoint, MetricsError> {
    let (listener, local_addr) = bind_loopback(addr).await.map_err(|error| match error {
        None => MetricsError::NotLoopback { addr },
        Some(source) => MetricsError::Bind { addr, source },
    })?;
    Ok(MetricsEndpoint {
        listener,
        local_addr,
        status_timeout: Duration::from_millis(constants::METRICS_STATUS_TIMEOUT_MS),
        io_timeout: Duration::from_millis(constants::METRICS_IO_TIMEOUT_MS),
        checker: Checker::default(),
    })
}

impl MetricsEndpoint {
    /// The bound address, so a gateway started on port 0 can log where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the bound on waiting for the status
    /// ([`constants::METRICS_STATUS_TIMEOUT_MS`] by default), so tests can see the 503 without
    /// waiting for the full bound.
    pub fn with_status_timeout(mut self, status_timeout: Duration) -> MetricsEndpoint {
        self.status_timeout = status_timeout;
        self
    }

    /// Exports `baton_session_in_window` for these sessions (counterparty CompID and schedule,
    /// in config order), so an alert can tell a session lost inside its window from one closed
    /// by its schedule.
    pub fn with_session_windows(mut self, windows: Vec<(String, Schedule)>) -> MetricsEndpoint {
        self.checker.windows = Arc::new(windows);
        self
    }

    /// Exports `baton_audit_chain_ok`, re-verifying the audit log at `path` at most once per
    /// `interval` ([`constants::METRICS_AUDIT_VERIFY_INTERVAL_MS`] in the gateway).
    pub fn with_audit_log(mut self, path: PathBuf, interval: Duration) -> MetricsEndpoint {
        self.checker.audit = Some(Arc::new(AuditCheck {
            path,
            interval,
            last: tokio::sync::Mutex::new(None),
        }));
        self
    }

    /// Serves scrapes until `shutdown` turns true (or its sender is dropped, which can only mean
    /// the gateway is going away). Each connection is its own task, so a slow scraper does not
    /// hold up another; status requests go down `commands`, the control plane's channel, whose
    /// bound applies backpressure. Connections still open at shutdown are closed.
    pub async fn run(
        self,
        commands: mpsc::Sender<ControlCommand>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tracing::info!(addr = %self.local_addr, "metrics endpoint listening");
        let slots = Slots::new(constants::METRICS_CONNECTIONS_MAX);
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = accept_local(&self.listener, &slots, "metrics") => {
                    let Some((stream, peer, slot)) = accepted else {
                        continue;
                    };
                    let commands = commands.clone();
                    let status_timeout = self.status_timeout;
                    let io_timeout = self.io_timeout;
                    let checker = self.checker.clone();
                    tasks.spawn(async move {
                        serve(stream, peer, &slot, &commands, status_timeout, io_timeout, &checker).await;
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = stopped(&mut shutdown) => break,
            }
        }
        tracing::info!(connections = tasks.len(), "metrics endpoint shutting down");
        tasks.shutdown().await;
    }
}

/// One connection: read one request head, answer it, close.
/// Until its head is complete the connection may be evicted for a newer one, and it must send
/// that head within [`constants::LOCAL_FIRST_REQUEST_TIMEOUT_MS`]: a scraper writes it at once.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: &Slot,
    commands: &mpsc::Sender<ControlCommand>,
    status_timeout: Duration,
    io_timeout: Duration,
    checker: &Checker,
) {
    let head_timeout = io_timeout.min(Duration::from_millis(
        constants::LOCAL_FIRST_REQUEST_TIMEOUT_MS,
    ));
    let read = tokio::select! {
        read = tokio::time::timeout(
            head_timeout,
            read_head(&mut stream, constants::METRICS_REQUEST_HEAD_BYTES_MAX),
        ) => read,
        () = slot.evicted() => {
            tracing::debug!(%peer, "idle metrics connection evicted for a newer one");
            return;
        }
    };
    slot.set_busy(true);
    let response = match read {
        Err(_) => {
            tracing::debug!(%peer, "metrics request head not received in time");
            Response::text(
                408,
                "Request Timeout",
                "request head not received in time\n",
            )
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "metrics connection read failed");
            return;
        }
        Ok(Ok(HeadRead::Closed)) => return,
        Ok(Ok(HeadRead::Truncated)) => Response::text(
            400,
            "Bad Request",
            "connection closed before the request head ended\n",
        ),
        Ok(Ok(HeadRead::TooLarge)) => {
            tracing::warn!(%peer, "metrics request head too large; refused");
            Response::text(
                431,
                "Request Header Fields Too Large",
                &format!(
                    "request head longer than {} bytes\n",
                    constants::METRICS_REQUEST_HEAD_BYTES_MAX
                ),
            )
        }
        Ok(Ok(HeadRead::Complete(head))) => match route(&head) {
            Route::Metrics => match fetch_status(commands, status_timeout).await {
                Ok(status) => {
                    let checks = checker.checks(&status).await;
                    Response::metrics(render_with(&status, &checks))
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "metrics scrape without status");
                    Response::text(503, "Service Unavailable", &format!("{error}\n"))
                }
            },
            Route::NotFound => Response::text(404, "Not Found", "metrics are at /metrics\n"),
            Route::MethodNotAllowed => Response::text(
                405,
                "Method Not Allowed",
                "only GET is served on /metrics\n",
            ),
            Route::BadRequest(why) => {
                tracing::debug!(%peer, why, "bad metrics request");
                Response::text(400, "Bad Request", &format!("{why}\n"))
            }
        },
    };
    let write = async {
        stream.write_all(&response.encode()).await?;
        // FIN after the response: with `Connection: close` and no keep-alive this is how the
        // client knows the body ended, besides Content-Length.
        stream.shutdown().await
    };
    match tokio::time::timeout(io_timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%peer, %error, "metrics response not written"),
        Err(_) => tracing::debug!(%peer, "metrics client does not read its response; closing"),
    }
}

/// Asks the control plane for the status, as `baton ctl status` does, within `timeout`. Status is
/// read-only and not audited, so the request carries no operator or account.
pub(crate) async fn fetch_status(
    commands: &mpsc::Sender<ControlCommand>,
    timeout: Duration,
) -> Result<Status, Unavailable> {
    let (reply_tx, reply_rx) = oneshot::channel();
    let command = ControlCommand {
        request: ControlRequest::Status,
        reply: reply_tx,
        expect_sha256: None,
        canary_only: false,
        peer_uid: None,
    };
    let exchange = async {
        commands
            .send(command)
            .await
            .map_err(|_| Unavailable::NotRunning)?;
        match reply_rx.await {
            Ok(ControlReply::Status(status)) => Ok(status),
            Ok(ControlReply::Refused { reason }) => Err(Unavailable::Refused { reason }),
            Ok(other) => {
                // A bug in the control plane, but not one worth taking the gateway down for from
                // a monitoring scrape: the 503 and this line make it visible.
                tracing::error!(reply = ?other, "status request answered with something else");
                Err(Unavailable::NotStatus)
            }
            Err(_) => Err(Unavailable::Dropped),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(Unavailable::Timeout {
            timeout_ms: timeout.as_millis(),
        }))
}

/// How reading a request head ended.
#[derive(Debug, PartialEq, Eq)]
enum HeadRead {
    /// The head, up to and including the blank line that ends it.
    Complete(Vec<u8>),
    /// More than the bound arrived without the blank line.
    TooLarge,
    /// The peer closed after sending part of a head.
    Truncated,
    /// The peer closed without sending anything (a port probe).
    Closed,
}

/// Reads an HTTP/1.x request head (request line and headers, through the blank line) holding at
/// most `max_bytes` of it plus one read: a longer head costs a 431, not memory. Anything after the
/// head (a body nobody should send with GET) is left unread; the connection closes anyway.
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> std::io::Result<HeadRead> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            return Ok(if head.is_empty() {
                HeadRead::Closed
            } else {
                HeadRead::Truncated
            });
        }
        // The terminator may straddle two reads: look back over the last three bytes.
        let search_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head_end(&head[search_from..]) {
            let end = search_from + end;
            if end > max_bytes {
                return Ok(HeadRead::TooLarge);
            }
            head.truncate(end);
            return Ok(HeadRead::Complete(head));
        }
        if head.len() > max_bytes {
            return Ok(HeadRead::TooLarge);
        }
    }
}

/// Where the head in `bytes` ends (the index just past its blank line), if it does: CRLF CRLF as
/// HTTP/1.1 specifies, or bare LF LF, which RFC 9112 lets a server accept and which a hand-typed
/// `nc` session sends.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (any query string is ignored): the scrape.
    Metrics,
    /// A path other than `/metrics`.
    NotFound,
    /// `/metrics` with a method other than GET.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line; the text says what is wrong.
    BadRequest(&'static str),
}

/// Routes a request by its request line (`METHOD SP target SP HTTP/1.x`); the headers are not
/// needed to serve a scrape and are ignored.
fn route(head: &[u8]) -> Route {
    let line_end = head
        .iter()
        .position(|&byte| byte == b'\n')
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest("the request line is not text");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest("expected a request line such as `GET /metrics HTTP/1.1`");
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Route::BadRequest("only HTTP/1.0 and HTTP/1.1 are served");
    }
    if method.is_empty() || !method.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Route::BadRequest("the method is not an HTTP method");
    }
    if !target.starts_with('/') {
        return Route::BadRequest("the request target must be a path such as /metrics");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        Route::NotFound
    } else if method != "GET" {
        Route::MethodNotAllowed
    } else {
        Route::Metrics
    }
}

/// A response about to be written.
#[derive(Debug)]
struct Response {
    /// HTTP status code.
    code: u16,
    /// Its reason phrase.
    reason: &'static str,
    /// What the body is.
    content_type: &'static str,
    /// The body.
    body: String,
}

impl Response {
    /// 200 with the exposition.
    fn metrics(body: String) -> Response {
        Response {
            code: 200,
            reason: "OK",
            content_type: CONTENT_TYPE,
            body,
        }
    }

    /// An error status with a line of text saying why.
    fn text(code: u16, reason: &'static str, body: &str) -> Response {
        Response {
            code,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }

    /// The bytes on the wire. Every response closes the connection: a scraper opens one per
    /// scrape anyway, and no keep-alive means no idle connections to bound.
    fn encode(&self) -> Vec<u8> {
        let allow = if self.code == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.code,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

/// The kind of a metric family, for its `# TYPE` line.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A value that goes up and down (sessions logged on, lag).
    Gauge,
    /// A count that only rises while the gateway runs (and restarts at 0 with it), so the scraper
    /// can take rates across restarts.
    Counter,
}

/// An exposition being written: families in a fixed order, each with its HELP and TYPE lines.
#[derive(Default)]
struct Exposition {
    /// The text so far.
    out: String,
}

impl Exposition {
    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help, [(Vec::new(), value)]);
    }

    /// A family and its samples, each with its labels; a family without samples (no sessions
    /// configured, no symbol halted) is left out entirely.
    fn family<'a>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'static str, &'a str)>, u64)>,
    ) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        // HELP text would need `\` and newline escaped; ours is fixed text without either.
        debug_assert!(
            !help.contains(['\\', '\n']),
            "{name}: help text needs escaping"
        );
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        self.out
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (index, (label, label_value)) in labels.iter().enumerate() {
                    if index > 0 {
                        self.out.push(',');
                    }
                    self.out.push_str(label);
                    self.out.push_str("=\"");
                    escape_label_value(label_value, &mut self.out);
                    self.out.push('"');
                }
                self.out.push('}');
            }
            self.out.push_str(&format!(" {value}\n"));
        }
    }
}

/// Appends `value` escaped as the exposition format wants inside a label's double quotes:
/// backslash, double quote and newline, so a CompID or symbol can never end the label early or
/// break the line.
fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The engine's label: its name, or its link address while it is down (status names an engine
/// only once its handshake said who it is), so a down engine is still one distinct series.
fn engine_label(engine: &EngineStatus) -> &str {
    if engine.name.is_empty() {
        &engine.addr
    } else {
        &engine.name
    }
}

/// The role as status's JSON spells it.
fn role_name(role: EngineRole) -> &'static str {
    match role {
        EngineRole::Authoritative => "authoritative",
        EngineRole::Standby => "standby",
        EngineRole::Canary => "canary",
        EngineRole::Down => "down",
    }
}

/// The status as Prometheus text exposition format 0.0.4: every figure `baton ctl status` shows
/// that an alert or a graph can use, one family after another in a fixed order (sessions, journal,
/// switches, engines, shadow, canary, halts, changes, audit), samples in status's order. Families
/// that only exist sometimes (the last switch, a canary's gates, halted symbols) are left out
/// while there is nothing to report, except `baton_canary_active`, which is always there so an
/// alert can say "no canary". Last come the process's own `baton_log_lines_dropped_total` and
/// `baton_disk_full` (with `baton_disk_free_bytes` while full).
pub fn render(status: &Status) -> String {
    render_with(status, &Checks::default())
}

/// [`render`], with the scrape's own [`Checks`]: `baton_session_in_window` after the sessions'
/// families and `baton_audit_chain_ok` after the audit head, each only when known.
pub fn render_with(status: &Status, checks: &Checks) -> String {
    let mut out = Exposition::default();
    let sessions = &status.sessions;
    out.single(
        "baton_sessions_configured",
        Kind::Gauge,
        "FIX sessions configured on the gateway.",
        sessions.len() as u64,
    );
    out.single(
        "baton_sessions_logged_on",
        Kind::Gauge,
        "FIX sessions with a logged-on counterparty; a drop means counterparties lost their session.",
        sessions.iter().filter(|s| s.logged_on).count() as u64,
    );
    out.family(
        "baton_session_logged_on",
        Kind::Gauge,
        "Whether the counterparty is logged on (1) or not (0).",
        sessions.iter().map(|s| {
            (
                vec![("target_comp_id", s.target_comp_id.as_str())],
                u64::from(s.logged_on),
            )
        }),
    );
    out.family(
        "baton_session_in_window",
        Kind::Gauge,
        "Whether the session's schedule has it open now (1) or closed (0); logged off while 1 means the counterparty lost its session in trading hours.",
        sessions
            .iter()
            .zip(&checks.in_window)
            .filter_map(|(s, in_window)| {
                in_window.map(|open| {
                    (
                        vec![("target_comp_id", s.target_comp_id.as_str())],
                        u64::from(open),
                    )
                })
            }),
    );
    out.family(
        "baton_session_seq_num_next_in",
        Kind::Gauge,
        "Next MsgSeqNum expected from the counterparty.",
        sessions.iter().map(|s| {
            (
                vec![("target_comp_id", s.target_comp_id.as_str())],
                s.seq_num_next_in,
            )
        }),
    );
    out.family(
        "baton_session_seq_num_next_out",
        Kind::Gauge,
        "Next MsgSeqNum the gateway will send the counterparty.",
        sessions.iter().map(|s| {
            (
                vec![("target_comp_id", s.target_comp_id.as_str())],
                s.seq_num_next_out,
            )
        }),
    );
    out.single(
        "baton_journal_last_seq",
        Kind::Gauge,
        "Last input sequence number written to the input journal.",
        status.journal_last_seq,
    );
    out.single(
        "baton_delivered_through",
        Kind::Gauge,
        "Last input whose outputs were all delivered; its distance to the journal is work in flight.",
        status.delivered_through,
    );
    out.single(
        "baton_switches_total",
        Kind::Counter,
        "Moves of authority (planned switches, canaries, rollbacks, failovers) since the gateway started.",
        status.switches,
    );
    if let Some(last) = &status.last_switch {
        out.single(
            "baton_last_switch_pause_microseconds",
            Kind::Gauge,
            "How long requests were held by the most recent switch.",
            last.pause_us,
        );
        out.single(
            "baton_last_switch_barrier_seq",
            Kind::Gauge,
            "Barrier input of the most recent switch: outputs after it came from the new engine.",
            last.barrier_seq,
        );
    }
    let engines = &status.engines;
    out.family(
        "baton_engine_up",
        Kind::Gauge,
        "Whether the engine is attached (1) or down (0), labelled with its role.",
        engines.iter().map(|e| {
            (
                vec![("engine", engine_label(e)), ("role", role_name(e.role))],
                u64::from(e.role != EngineRole::Down),
            )
        }),
    );
    out.family(
        "baton_engine_answered_through",
        Kind::Gauge,
        "Last input the engine answered.",
        engines
            .iter()
            .map(|e| (vec![("engine", engine_label(e))], e.answered_through)),
    );
    out.family(
        "baton_engine_lag_inputs",
        Kind::Gauge,
        "Inputs the engine is behind the journal; a switch to a standby lagging too far is refused.",
        engines
            .iter()
            .map(|e| (vec![("engine", engine_label(e))], e.lag_inputs)),
    );
    out.family(
        "baton_engine_lag_microseconds",
        Kind::Gauge,
        "Age of the oldest input the engine has not answered (0 when caught up).",
        engines
            .iter()
            .map(|e| (vec![("engine", engine_label(e))], e.lag_us)),
    );
    out.family(
        "baton_engine_silent_milliseconds",
        Kind::Gauge,
        "Time since the engine last sent anything; the authoritative engine fails over past failover_timeout_ms.",
        engines
            .iter()
            .map(|e| (vec![("engine", engine_label(e))], e.silent_ms)),
    );
    out.family(
        "baton_engine_delivered_inputs_total",
        Kind::Counter,
        "Inputs whose outputs were delivered from this engine since the gateway started.",
        engines
            .iter()
            .map(|e| (vec![("engine", engine_label(e))], e.delivered_inputs)),
    );
    out.single(
        "baton_shadow_matches_total",
        Kind::Counter,
        "Inputs on which the standby's outputs matched the authoritative engine's.",
        status.shadow.matches,
    );
    out.single(
        "baton_shadow_divergences_total",
        Kind::Counter,
        "Inputs on which the standby's outputs differed from the authoritative engine's.",
        status.shadow.divergences,
    );
    out.single(
        "baton_canary_active",
        Kind::Gauge,
        "Whether a canary is running (1) or not (0).",
        u64::from(status.canary.is_some()),
    );
    if let Some(canary) = &status.canary {
        let gates = &canary.gates;
        out.single(
            "baton_canary_symbols",
            Kind::Gauge,
            "Symbols the canary engine is authoritative for.",
            canary.symbols.len() as u64,
        );
        out.single(
            "baton_canary_compared_total",
            Kind::Counter,
            "Canary-owned inputs both engines answered, since the canary started.",
            gates.compared,
        );
        out.single(
            "baton_canary_errors_total",
            Kind::Counter,
            "Compared canary inputs whose answers differed between the engines.",
            gates.errors,
        );
        let sides = [
            ("canary", canary.engine.as_str()),
            ("baseline", canary.baseline.as_str()),
        ];
        out.family(
            "baton_canary_rejects_total",
            Kind::Counter,
            "Reject reports each side produced for the compared canary inputs.",
            sides
                .iter()
                .zip([gates.canary_rejects, gates.baseline_rejects])
                .map(|(&(side, engine), value)| (vec![("side", side), ("engine", engine)], value)),
        );
        out.family(
            "baton_canary_answer_latency_p99_microseconds",
            Kind::Gauge,
            "p99 answer latency of each side on the compared canary inputs.",
            sides
                .iter()
                .zip([gates.canary_p99_us, gates.baseline_p99_us])
                .map(|(&(side, engine), value)| (vec![("side", side), ("engine", engine)], value)),
        );
        out.single(
            "baton_canary_gate_breached",
            Kind::Gauge,
            "Whether a gate of the running canary tripped (1): it is being rolled back.",
            u64::from(gates.breach.is_some()),
        );
    }
    out.single(
        "baton_halted_symbols",
        Kind::Gauge,
        "Symbols halted until an operator reconciles and resumes them.",
        status.halted.len() as u64,
    );
    out.family(
        "baton_symbol_halted",
        Kind::Gauge,
        "A halted symbol (1): requests for it are refused until `baton ctl resume`.",
        status
            .halted
            .iter()
            .map(|symbol| (vec![("symbol", symbol.as_str())], 1)),
    );
    out.single(
        "baton_changes_open",
        Kind::Gauge,
        "Changes filed and not yet closed.",
        status.open_changes.len() as u64,
    );
    if let Some(head) = &status.audit_head {
        out.single(
            "baton_audit_head_seq",
            Kind::Gauge,
            "Sequence number of the last audit record.",
            head.seq,
        );
    }
    if let Some(ok) = checks.audit_chain_ok {
        out.single(
            "baton_audit_chain_ok",
            Kind::Gauge,
            "Whether the audit log on disk verifies through the last record the gateway wrote (1); 0: a record was edited or removed, or the file replaced.",
            u64::from(ok),
        );
    }
    // Not part of the status: the gateway process's own, read where it is kept.
    out.single(
        "baton_log_lines_dropped_total",
        Kind::Counter,
        "Log lines the gateway could not write (stderr closed, or its reader too slow): its log is incomplete.",
        crate::logging::lines_dropped(),
    );
    out.single(
        "baton_disk_full",
        Kind::Gauge,
        "Whether the input journal cannot get disk space (1): new business is refused with 380=4 until space returns.",
        u64::from(crate::gateway::disk::full()),
    );
    if crate::gateway::disk::full()
        && let Some(free_bytes) = crate::gateway::disk::free_bytes_when_full()
    {
        out.single(
            "baton_disk_free_bytes",
            Kind::Gauge,
            "Free bytes on the journal's file system when it was found full.",
            free_bytes,
        );
    }
    out.out
}

#[cfg(test)]
mod tests;
