use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::ReadBuf;

use super::*;
use crate::control::api::{
    AuditHead, CanaryStatus, GateBreach, GateStatus, SessionStatus, ShadowStatus, SwitchReport,
    SwitchScope,
};
use crate::control::change::{ChangeState, ChangeSummary};
use crate::fix::time::Timestamp;

fn session(target_comp_id: &str, logged_on: bool, seq_num_next_in: u64) -> SessionStatus {
    SessionStatus {
        target_comp_id: target_comp_id.to_owned(),
        logged_on,
        seq_num_next_out: seq_num_next_in + 10,
        seq_num_next_in,
    }
}

fn engine(name: &str, addr: &str, role: EngineRole, lag_inputs: u64) -> EngineStatus {
    EngineStatus {
        name: name.to_owned(),
        addr: addr.to_owned(),
        build_version: "baton 0.1.0".to_owned(),
        role,
        answered_through: 120 - lag_inputs,
        lag_inputs,
        lag_us: lag_inputs * 7,
        silent_ms: 3,
        executable_sha256: String::new(),
        delivered_inputs: 60,
        sent_through: 0,
        kept_inputs: 0,
    }
}

/// Two sessions (one logged on), blue authoritative and green running a canary of MSFT whose
/// error gate tripped, ESZ6 halted, one open change.
fn sample() -> Status {
    Status {
        sessions: vec![session("CLIENT1", true, 5), session("CLIENT2", false, 1)],
        engines: vec![
            engine(
                "blue",
                "unix://var/engine-blue.sock",
                EngineRole::Authoritative,
                0,
            ),
            engine(
                "green",
                "unix://var/engine-green.sock",
                EngineRole::Canary,
                2,
            ),
        ],
        journal_last_seq: 120,
        delivered_through: 118,
        switch_waiting_at: None,
        last_switch: Some(SwitchReport {
            from: "blue".into(),
            to: "green".into(),
            barrier_seq: 100,
            pause_us: 42,
            planned: true,
            rollback: false,
            scope: SwitchScope::CanaryStarted {
                symbols: vec!["MSFT".into()],
            },
        }),
        switches: 3,
        shadow: ShadowStatus {
            matches: 90,
            divergences: 1,
            samples: Vec::new(),
        },
        canary: Some(CanaryStatus {
            engine: "green".into(),
            baseline: "blue".into(),
            symbols: vec!["MSFT".into()],
            since_seq: 101,
            gates: GateStatus {
                compared: 19,
                errors: 1,
                canary_rejects: 4,
                baseline_rejects: 3,
                canary_p99_us: 250,
                baseline_p99_us: 200,
                latency_allowance_p99_us: 400,
                expected_divergences: 0,
                breach: Some(GateBreach {
                    gate: "error-rate".into(),
                    observed: 0.05,
                    limit: 0.001,
                    compared: 19,
                    since_seq: 101,
                }),
            },
            delivery: "immediate".into(),
            expected_divergence: Default::default(),
        }),
        open_changes: vec![ChangeSummary {
            id: "CHG-1".into(),
            state: ChangeState::Approved,
            filed_by: "alice".into(),
            filed_at: Timestamp(1),
            artifact_path: "baton".into(),
            artifact_sha256: "00".repeat(32),
            reason: "release".into(),
            window_start: Timestamp(1),
            window_end: Timestamp(2),
            approved_by: vec!["bob".into()],
            actions_completed: 1,
            expected_divergence: Default::default(),
        }],
        audit_head: Some(AuditHead {
            seq: 7,
            hash: "ab".repeat(32),
        }),
        halted: vec!["ESZ6".into()],
        gateway_upgrade: None,
        gateway_build: None,
    }
}

const SAMPLE_EXPOSITION: &str = r##"# HELP baton_sessions_configured FIX sessions configured on the gateway.
# TYPE baton_sessions_configured gauge
baton_sessions_configured 2
# HELP baton_sessions_logged_on FIX sessions with a logged-on counterparty; a drop means counterparties lost their session.
# TYPE baton_sessions_logged_on gauge
baton_sessions_logged_on 1
# HELP baton_session_logged_on Whether the counterparty is logged on (1) or not (0).
# TYPE baton_session_logged_on gauge
baton_session_logged_on{target_comp_id="CLIENT1"} 1
baton_session_logged_on{target_comp_id="CLIENT2"} 0
# HELP baton_session_seq_num_next_in Next MsgSeqNum expected from the counterparty.
# TYPE baton_session_seq_num_next_in gauge
baton_session_seq_num_next_in{target_comp_id="CLIENT1"} 5
baton_session_seq_num_next_in{target_comp_id="CLIENT2"} 1
# HELP baton_session_seq_num_next_out Next MsgSeqNum the gateway will send the counterparty.
# TYPE baton_session_seq_num_next_out gauge
baton_session_seq_num_next_out{target_comp_id="CLIENT1"} 15
baton_session_seq_num_next_out{target_comp_id="CLIENT2"} 11
# HELP baton_journal_last_seq Last input sequence number written to the input journal.
# TYPE baton_journal_last_seq gauge
baton_journal_last_seq 120
# HELP baton_delivered_through Last input whose outputs were all delivered; its distance to the journal is work in flight.
# TYPE baton_delivered_through gauge
baton_delivered_through 118
# HELP baton_switches_total Moves of authority (planned switches, canaries, rollbacks, failovers) since the gateway started.
# TYPE baton_switches_total counter
baton_switches_total 3
# HELP baton_last_switch_pause_microseconds How long requests were held by the most recent switch.
# TYPE baton_last_switch_pause_microseconds gauge
baton_last_switch_pause_microseconds 42
# HELP baton_last_switch_barrier_seq Barrier input of the most recent switch: outputs after it came from the new engine.
# TYPE baton_last_switch_barrier_seq gauge
baton_last_switch_barrier_seq 100
# HELP baton_engine_up Whether the engine is attached (1) or down (0), labelled with its role.
# TYPE baton_engine_up gauge
baton_engine_up{engine="blue",role="authoritative"} 1
baton_engine_up{engine="green",role="canary"} 1
# HELP baton_engine_answered_through Last input the engine answered.
# TYPE baton_engine_answered_through gauge
baton_engine_answered_through{engine="blue"} 120
baton_engine_answered_through{engine="green"} 118
# HELP baton_engine_lag_inputs Inputs the engine is behind the journal; a switch to a standby lagging too far is refused.
# TYPE baton_engine_lag_inputs gauge
baton_engine_lag_inputs{engine="blue"} 0
baton_engine_lag_inputs{engine="green"} 2
# HELP baton_engine_lag_microseconds Age of the oldest input the engine has not answered (0 when caught up).
# TYPE baton_engine_lag_microseconds gauge
baton_engine_lag_microseconds{engine="blue"} 0
baton_engine_lag_microseconds{engine="green"} 14
# HELP baton_engine_silent_milliseconds Time since the engine last sent anything; the authoritative engine fails over past failover_timeout_ms.
# TYPE baton_engine_silent_milliseconds gauge
baton_engine_silent_milliseconds{engine="blue"} 3
baton_engine_silent_milliseconds{engine="green"} 3
# HELP baton_engine_delivered_inputs_total Inputs whose outputs were delivered from this engine since the gateway started.
# TYPE baton_engine_delivered_inputs_total counter
baton_engine_delivered_inputs_total{engine="blue"} 60
baton_engine_delivered_inputs_total{engine="green"} 60
# HELP baton_shadow_matches_total Inputs on which the standby's outputs matched the authoritative engine's.
# TYPE baton_shadow_matches_total counter
baton_shadow_matches_total 90
# HELP baton_shadow_divergences_total Inputs on which the standby's outputs differed from the authoritative engine's.
# TYPE baton_shadow_divergences_total counter
baton_shadow_divergences_total 1
# HELP baton_canary_active Whether a canary is running (1) or not (0).
# TYPE baton_canary_active gauge
baton_canary_active 1
# HELP baton_canary_symbols Symbols the canary engine is authoritative for.
# TYPE baton_canary_symbols gauge
baton_canary_symbols 1
# HELP baton_canary_compared_total Canary-owned inputs both engines answered, since the canary started.
# TYPE baton_canary_compared_total counter
baton_canary_compared_total 19
# HELP baton_canary_errors_total Compared canary inputs whose answers differed between the engines.
# TYPE baton_canary_errors_total counter
baton_canary_errors_total 1
# HELP baton_canary_rejects_total Reject reports each side produced for the compared canary inputs.
# TYPE baton_canary_rejects_total counter
baton_canary_rejects_total{side="canary",engine="green"} 4
baton_canary_rejects_total{side="baseline",engine="blue"} 3
# HELP baton_canary_answer_latency_p99_microseconds p99 answer latency of each side on the compared canary inputs.
# TYPE baton_canary_answer_latency_p99_microseconds gauge
baton_canary_answer_latency_p99_microseconds{side="canary",engine="green"} 250
baton_canary_answer_latency_p99_microseconds{side="baseline",engine="blue"} 200
# HELP baton_canary_gate_breached Whether a gate of the running canary tripped (1): it is being rolled back.
# TYPE baton_canary_gate_breached gauge
baton_canary_gate_breached 1
# HELP baton_halted_symbols Symbols halted until an operator reconciles and resumes them.
# TYPE baton_halted_symbols gauge
baton_halted_symbols 1
# HELP baton_symbol_halted A halted symbol (1): requests for it are refused until `baton ctl resume`.
# TYPE baton_symbol_halted gauge
baton_symbol_halted{symbol="ESZ6"} 1
# HELP baton_changes_open Changes filed and not yet closed.
# TYPE baton_changes_open gauge
baton_changes_open 1
# HELP baton_audit_head_seq Sequence number of the last audit record.
# TYPE baton_audit_head_seq gauge
baton_audit_head_seq 7
# HELP baton_log_lines_dropped_total Log lines the gateway could not write (stderr closed, or its reader too slow): its log is incomplete.
# TYPE baton_log_lines_dropped_total counter
baton_log_lines_dropped_total 0
# HELP baton_disk_full Whether the input journal cannot get disk space (1): new business is refused with 380=4 until space returns.
# TYPE baton_disk_full gauge
baton_disk_full 0
"##;

#[test]
fn a_full_status_renders_exactly() {
    let got = render(&sample());
    // Line by line first, so a failure names the first line that differs.
    for (number, (got, want)) in got.lines().zip(SAMPLE_EXPOSITION.lines()).enumerate() {
        assert_eq!(got, want, "line {}", number + 1);
    }
    assert_eq!(got, SAMPLE_EXPOSITION);
}

#[test]
fn an_idle_gateway_leaves_out_what_does_not_exist() {
    // No sessions, engines, switch, canary, halt or audit head: their families are left out,
    // except the totals an alert compares against zero and `baton_canary_active`.
    let got = render(&Status::default());
    let names: Vec<&str> = got.lines().filter(|line| !line.starts_with('#')).collect();
    assert_eq!(
        names,
        [
            "baton_sessions_configured 0",
            "baton_sessions_logged_on 0",
            "baton_journal_last_seq 0",
            "baton_delivered_through 0",
            "baton_switches_total 0",
            "baton_shadow_matches_total 0",
            "baton_shadow_divergences_total 0",
            "baton_canary_active 0",
            "baton_halted_symbols 0",
            "baton_changes_open 0",
            "baton_log_lines_dropped_total 0",
            "baton_disk_full 0",
        ]
    );
    assert!(got.ends_with('\n'), "the exposition ends with a line feed");
}

#[test]
fn every_sample_follows_the_help_and_type_of_its_family() {
    let text = render(&sample());
    let mut family = "";
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            family = rest.split(' ').next().expect("family name");
            let kind = lines.next().expect("TYPE line");
            assert!(
                kind == format!("# TYPE {family} gauge")
                    || kind == format!("# TYPE {family} counter"),
                "{kind}"
            );
            assert!(
                !family.ends_with("_total") || kind.ends_with("counter"),
                "{family} is named as a counter"
            );
            continue;
        }
        let name = line.split(['{', ' ']).next().expect("sample name");
        assert_eq!(name, family, "{line} outside its family");
    }
}

#[test]
fn a_down_engine_is_labelled_by_its_link_address() {
    let mut status = sample();
    status.engines[1] = engine("", "unix://var/engine-green.sock", EngineRole::Down, 0);
    let got = render(&status);
    assert!(
        got.contains("baton_engine_up{engine=\"unix://var/engine-green.sock\",role=\"down\"} 0\n"),
        "{got}"
    );
    assert!(
        got.contains("baton_engine_lag_inputs{engine=\"unix://var/engine-green.sock\"} 0\n"),
        "{got}"
    );
    assert!(!got.contains("engine=\"\""), "{got}");
}

#[test]
fn label_values_are_escaped() {
    let mut out = String::new();
    escape_label_value("plain", &mut out);
    assert_eq!(out, "plain");
    out.clear();
    escape_label_value("a\\b\"c\nd", &mut out);
    assert_eq!(out, r#"a\\b\"c\nd"#);

    let status = Status {
        sessions: vec![session("EVIL\"} 1\nbaton_fake 9\\", true, 1)],
        halted: vec!["A\"B".into()],
        ..Status::default()
    };
    let got = render(&status);
    assert!(
        got.contains(
            "baton_session_logged_on{target_comp_id=\"EVIL\\\"} 1\\nbaton_fake 9\\\\\"} 1\n"
        ),
        "{got}"
    );
    assert!(
        got.contains("baton_symbol_halted{symbol=\"A\\\"B\"} 1\n"),
        "{got}"
    );
    assert!(
        !got.lines().any(|line| line.starts_with("baton_fake")),
        "a label value must not be able to start a line: {got}"
    );
}

// ----- Request heads -----------------------------------------------------------------------------

#[test]
fn the_head_ends_at_the_first_blank_line_in_either_spelling() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
    assert_eq!(head_end(b"GET / HTTP/1.1\nHost: x\n\nbody"), Some(24));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n\n\n"), Some(18));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    assert_eq!(head_end(b""), None);
}

#[test]
fn requests_are_routed_by_their_request_line() {
    for (head, want) in [
        (
            &b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            Route::Metrics,
        ),
        (b"GET /metrics HTTP/1.0\r\n\r\n", Route::Metrics),
        (b"GET /metrics?x=1 HTTP/1.1\n\n", Route::Metrics),
        (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
        (b"GET /metricsz HTTP/1.1\r\n\r\n", Route::NotFound),
        (b"POST / HTTP/1.1\r\n\r\n", Route::NotFound),
        (b"POST /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
    ] {
        assert_eq!(route(head), want, "{}", String::from_utf8_lossy(head));
    }
    for head in [
        &b"\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
        b"GET /metrics HTTP/2.0\r\n\r\n",
        b"GET /metrics SSH-2.0\r\n\r\n",
        b"get /metrics HTTP/1.1\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET http://host/metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics\xff HTTP/1.1\r\n\r\n",
    ] {
        assert!(
            matches!(route(head), Route::BadRequest(_)),
            "{} is not a request line",
            String::from_utf8_lossy(head)
        );
    }
}

/// A reader that hands over one byte per read, so every split of a head across reads happens.
struct Trickle<'a>(&'a [u8]);

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some((&first, rest)) = self.0.split_first() {
            buf.put_slice(&[first]);
            self.0 = rest;
        }
        Poll::Ready(Ok(()))
    }
}

async fn head(input: &[u8], max_bytes: usize) -> HeadRead {
    let whole = read_head(&mut &input[..], max_bytes)
        .await
        .expect("in-memory read");
    let trickled = read_head(&mut Trickle(input), max_bytes)
        .await
        .expect("in-memory read");
    assert_eq!(
        whole, trickled,
        "the result does not depend on how reads split"
    );
    whole
}

#[tokio::test]
async fn heads_are_read_through_the_blank_line_and_no_further() {
    let request = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nleftover";
    assert_eq!(
        head(request, 1024).await,
        HeadRead::Complete(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".to_vec())
    );
    assert_eq!(head(b"", 1024).await, HeadRead::Closed);
    assert_eq!(
        head(b"GET /metrics HTTP/1.1\r\n", 1024).await,
        HeadRead::Truncated
    );
}

#[tokio::test]
async fn a_head_of_exactly_the_bound_is_read_and_one_byte_more_is_too_large() {
    let exact = b"GET /metrics HTTP/1.1\r\n\r\n"; // 25 bytes
    assert_eq!(
        head(exact, exact.len()).await,
        HeadRead::Complete(exact.to_vec())
    );
    assert_eq!(head(exact, exact.len() - 1).await, HeadRead::TooLarge);
}

#[tokio::test]
async fn an_endless_head_is_cut_off_at_the_bound_without_reading_it_all() {
    let endless = vec![b'a'; 1024 * 1024];
    let mut reader = &endless[..];
    let got = read_head(&mut reader, constants::METRICS_REQUEST_HEAD_BYTES_MAX)
        .await
        .expect("in-memory read");
    assert_eq!(got, HeadRead::TooLarge);
    let consumed = endless.len() - reader.len();
    assert!(
        consumed <= constants::METRICS_REQUEST_HEAD_BYTES_MAX + 1024,
        "read {consumed} bytes"
    );
}

#[test]
fn responses_close_the_connection_and_say_their_length() {
    let response = Response::metrics("a 1\n".to_owned()).encode();
    assert_eq!(
        String::from_utf8(response).expect("text"),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\na 1\n"
    );
    let response = Response::text(405, "Method Not Allowed", "no\n").encode();
    assert_eq!(
        String::from_utf8(response).expect("text"),
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nAllow: GET\r\nConnection: close\r\n\r\nno\n"
    );
}

// ----- The endpoint over a real loopback socket ---------------------------------------------------

/// What stands in for the control plane.
#[derive(Clone, Copy)]
enum Plane {
    /// Answers every status request with [`sample`].
    Answers,
    /// Takes requests and never answers.
    Silent,
}

struct Harness {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
}

async fn start(plane: Plane, status_timeout: Duration) -> Harness {
    let endpoint = bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind")
        .with_status_timeout(status_timeout);
    let addr = endpoint.local_addr();
    let (commands_tx, mut commands_rx) = mpsc::channel::<ControlCommand>(4);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(command) = commands_rx.recv().await {
            assert_eq!(command.request, ControlRequest::Status);
            match plane {
                Plane::Answers => {
                    let _ = command.reply.send(ControlReply::Status(sample()));
                }
                Plane::Silent => held.push(command),
            }
        }
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let served = tokio::spawn(endpoint.run(commands_tx, shutdown_rx));
    Harness {
        addr,
        shutdown,
        served,
    }
}

/// Sends `request` and reads the response until the server closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send request");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    String::from_utf8(response).expect("text response")
}

#[tokio::test]
async fn a_scrape_gets_the_status_as_the_exposition() {
    let harness = start(Plane::Answers, Duration::from_secs(5)).await;
    let response = exchange(harness.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{head}"
    );
    assert_eq!(body, SAMPLE_EXPOSITION);
}

#[tokio::test]
async fn wrong_paths_methods_and_heads_get_their_status_codes() {
    let harness = start(Plane::Answers, Duration::from_secs(5)).await;
    for (request, status_line) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 404 Not Found\r\n"),
        (
            b"POST /metrics HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed\r\n",
        ),
        (b"hello\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"),
    ] {
        let response = exchange(harness.addr, request).await;
        assert!(response.starts_with(status_line), "{response}");
    }
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    huge.resize(constants::METRICS_REQUEST_HEAD_BYTES_MAX + 10, b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    let response = exchange(harness.addr, &huge).await;
    assert!(
        response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn a_status_that_does_not_come_gets_503_naming_the_wait() {
    let harness = start(Plane::Silent, Duration::from_millis(100)).await;
    let response = exchange(harness.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with("no status from the gateway within 100 ms\n"),
        "{response}"
    );
}

#[tokio::test]
async fn a_gone_control_plane_gets_503() {
    let endpoint = bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let addr = endpoint.local_addr();
    let (commands_tx, commands_rx) = mpsc::channel::<ControlCommand>(1);
    drop(commands_rx);
    let (_shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(endpoint.run(commands_tx, shutdown_rx));
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{response}"
    );
    assert!(response.contains("not running"), "{response}");
}

#[tokio::test]
async fn non_loopback_addresses_are_refused_at_bind() {
    for addr in ["0.0.0.0:0", "[::]:0", "10.1.2.3:9880"] {
        let addr: SocketAddr = addr.parse().expect("address");
        let error = bind(addr).await.expect_err("must refuse");
        assert!(matches!(error, MetricsError::NotLoopback { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.contains("not a loopback address"), "{message}");
    }
}

#[tokio::test]
async fn shutdown_stops_the_endpoint() {
    let harness = start(Plane::Answers, Duration::from_secs(5)).await;
    harness.shutdown.send(true).expect("endpoint listening");
    tokio::time::timeout(Duration::from_secs(5), harness.served)
        .await
        .expect("endpoint stops")
        .expect("endpoint task");
    assert!(TcpStream::connect(harness.addr).await.is_err());
}

#[test]
fn checks_add_the_session_windows_and_the_audit_chain_when_known() {
    let checks = Checks {
        in_window: vec![Some(true), Some(false)],
        audit_chain_ok: Some(false),
    };
    let text = render_with(&sample(), &checks);
    for line in [
        "baton_session_in_window{target_comp_id=\"CLIENT1\"} 1\n",
        "baton_session_in_window{target_comp_id=\"CLIENT2\"} 0\n",
        "# TYPE baton_session_in_window gauge\n",
        "baton_audit_chain_ok 0\n",
        "# TYPE baton_audit_chain_ok gauge\n",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    // Unknown is left out, not reported as closed or broken.
    let unknown = Checks {
        in_window: vec![None, Some(true)],
        audit_chain_ok: None,
    };
    let text = render_with(&sample(), &unknown);
    assert!(
        !text.contains("in_window{target_comp_id=\"CLIENT1\"}"),
        "{text}"
    );
    assert!(
        text.contains("in_window{target_comp_id=\"CLIENT2\"} 1"),
        "{text}"
    );
    assert!(!text.contains("baton_audit_chain_ok"), "{text}");
}

/// An audit log of `records` records in `dir`, returned with its head.
fn audit_log(path: &std::path::Path, records: u64) -> (u64, String) {
    let (mut log, _) =
        crate::control::audit::AuditLog::<serde_json::Value>::open(path).expect("open audit log");
    for n in 0..records {
        log.append(
            Timestamp::from_secs(1_795_392_000 + n),
            "alice",
            serde_json::json!({ "n": n }),
        )
        .expect("append");
    }
    let (seq, hash) = log.head();
    (seq, hash.to_owned())
}

#[test]
fn the_audit_chain_check_catches_an_edit_a_cut_and_a_rebuilt_log() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.log");
    let (seq, hash) = audit_log(&path, 3);
    assert_eq!(chain_holds(&path, seq, &hash), Ok(()));
    let original = std::fs::read_to_string(&path).expect("read");

    // Records appended after the head was read, and a line being written, are fine.
    {
        let (mut log, _) =
            crate::control::audit::AuditLog::<serde_json::Value>::open(&path).expect("reopen");
        log.append(
            Timestamp::from_secs(1_795_393_000),
            "bob",
            serde_json::json!({ "n": 3 }),
        )
        .expect("append");
    }
    let mut grown = std::fs::read_to_string(&path).expect("read");
    grown.push_str("{\"seq\":5,\"time\":\"2026-11-2");
    std::fs::write(&path, &grown).expect("write");
    assert_eq!(
        chain_holds(&path, seq, &hash),
        Ok(()),
        "later records and a torn tail"
    );

    let edited = original.replacen("alice", "mallo", 1);
    std::fs::write(&path, &edited).expect("write");
    assert!(chain_holds(&path, seq, &hash).is_err(), "an edited record");

    let cut: String = original.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, &cut).expect("write");
    let error = chain_holds(&path, seq, &hash).expect_err("a cut log");
    assert!(error.contains("is gone"), "{error}");

    // A log rebuilt from scratch verifies on its own, but not through the head the gateway wrote.
    std::fs::remove_file(&path).expect("remove");
    let rebuilt = path.with_file_name("rebuilt.log");
    let (rebuilt_seq, rebuilt_hash) = {
        let (mut log, _) =
            crate::control::audit::AuditLog::<serde_json::Value>::open(&rebuilt).expect("open");
        for n in 0..3u64 {
            log.append(
                Timestamp::from_secs(1_795_392_100 + n),
                "alice",
                serde_json::json!({ "n": n }),
            )
            .expect("append");
        }
        let (seq, hash) = log.head();
        (seq, hash.to_owned())
    };
    assert_eq!((rebuilt_seq, rebuilt_hash == hash), (seq, false));
    std::fs::copy(&rebuilt, &path).expect("copy");
    assert!(chain_holds(&path, seq, &hash).is_err(), "a rebuilt log");

    std::fs::remove_file(&path).expect("remove");
    assert!(chain_holds(&path, seq, &hash).is_err(), "a missing log");
}

#[tokio::test]
async fn a_scrape_reports_each_sessions_window_and_a_tampered_audit_log() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.log");
    let (seq, hash) = audit_log(&path, 3);
    let closed = Schedule {
        weekdays: 0,
        non_stop: false,
        ..Schedule::non_stop()
    };
    let endpoint = bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind")
        .with_session_windows(vec![
            ("CLIENT1".to_owned(), Schedule::non_stop()),
            ("CLIENT2".to_owned(), closed),
        ])
        // Every scrape verifies again.
        .with_audit_log(path.clone(), Duration::ZERO);
    let addr = endpoint.local_addr();
    let (commands_tx, mut commands_rx) = mpsc::channel::<ControlCommand>(4);
    let head = AuditHead { seq, hash };
    tokio::spawn(async move {
        while let Some(command) = commands_rx.recv().await {
            let mut status = sample();
            status.audit_head = Some(head.clone());
            let _ = command.reply.send(ControlReply::Status(status));
        }
    });
    let (_shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(endpoint.run(commands_tx, shutdown_rx));
    let scrape = || exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");

    let body = scrape().await;
    for line in [
        "baton_session_in_window{target_comp_id=\"CLIENT1\"} 1\n",
        "baton_session_in_window{target_comp_id=\"CLIENT2\"} 0\n",
        "baton_audit_chain_ok 1\n",
    ] {
        assert!(body.contains(line), "{line:?} missing:\n{body}");
    }
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replacen("alice", "mallo", 1)).expect("tamper");
    let body = scrape().await;
    assert!(body.contains("baton_audit_chain_ok 0\n"), "{body}");
}
