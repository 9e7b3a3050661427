//! The `baton ctl` side of the control endpoint: send one request, read one reply, and turn the
//! reply into text an operator reads at a glance.
//!
//! Plain blocking std I/O: the CLI sends one request and exits, so an async runtime would add
//! start-up cost and nothing else. Every step is bounded by one deadline, because an operator
//! running `baton ctl switch` during an incident must get an answer or an error, never a hang.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::api::{ControlReply, ControlRequest, EngineRole, Status, SwitchReport};
use super::change::{ChangeSummary, rfc3339, scope_text};
use super::endpoint::ControlError;
use crate::constants;

/// Sends `request` to the control endpoint at `addr` and returns its reply. `timeout` bounds the
/// whole exchange (connect, send, wait, read); pick it longer than the endpoint's own reply
/// timeout ([`constants::CONTROL_CLIENT_TIMEOUT_MS`]) so a slow switch ends with the gateway's
/// refusal, which says more than a client-side timeout can.
pub fn request(
    addr: SocketAddr,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlReply, ControlError> {
    let deadline = Instant::now() + timeout;
    let timeout_error = || ControlError::Timeout {
        addr,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let io_error = |source: std::io::Error| {
        if matches!(source.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            timeout_error()
        } else {
            ControlError::Io { addr, source }
        }
    };
    let remaining = |deadline: Instant| {
        // A zero timeout means "none" to std's socket options, so an exhausted deadline is
        // reported here instead of being passed on.
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    };

    let connect_timeout = remaining(deadline).ok_or_else(timeout_error)?;
    let mut stream = TcpStream::connect_timeout(&addr, connect_timeout).map_err(|source| {
        if source.kind() == ErrorKind::TimedOut {
            timeout_error()
        } else {
            ControlError::Connect { addr, source }
        }
    })?;
    // Replies are small and requests single lines: send each at once.
    stream.set_nodelay(true).map_err(io_error)?;

    let mut line = serde_json::to_vec(request).map_err(|source| ControlError::Io {
        addr,
        source: source.into(),
    })?;
    line.push(b'\n');
    stream
        .set_write_timeout(Some(remaining(deadline).ok_or_else(timeout_error)?))
        .map_err(io_error)?;
    stream.write_all(&line).map_err(io_error)?;

    let mut reply: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline).ok_or_else(timeout_error)?))
            .map_err(io_error)?;
        let read = match stream.read(&mut chunk) {
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(io_error(error)),
        };
        if read == 0 {
            return Err(ControlError::Closed { addr });
        }
        let received = &chunk[..read];
        let end = received.iter().position(|&byte| byte == b'\n');
        let take = end.unwrap_or(read);
        if reply.len() + take > constants::CONTROL_REPLY_LINE_BYTES_MAX {
            return Err(ControlError::ReplyTooLong {
                addr,
                max_bytes: constants::CONTROL_REPLY_LINE_BYTES_MAX,
            });
        }
        reply.extend_from_slice(&received[..take]);
        if end.is_some() {
            break;
        }
    }
    serde_json::from_slice(&reply).map_err(|source| ControlError::MalformedReply { addr, source })
}

/// The status as the operator's overview: who is connected, which engine is authoritative and
/// how far behind the standby is, what the last switch cost, and whether the shadow comparison
/// found anything. Columns are aligned so a change between two runs stands out; the full
/// record, samples untruncated, is `baton ctl status --json`.
pub fn render_status(status: &Status) -> String {
    let mut out = String::new();

    if status.sessions.is_empty() {
        out.push_str("sessions   none configured\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .sessions
            .iter()
            .map(|session| {
                vec![
                    session.target_comp_id.clone(),
                    yes_no(session.logged_on).to_owned(),
                    session.seq_num_next_in.to_string(),
                    session.seq_num_next_out.to_string(),
                ]
            })
            .collect();
        out.push_str("sessions\n");
        out.push_str(&table(
            &[
                ("CompID", Align::Left),
                ("logged on", Align::Left),
                ("next in", Align::Right),
                ("next out", Align::Right),
            ],
            &rows,
        ));
    }
    out.push('\n');

    if status.engines.is_empty() {
        out.push_str("engines    none configured (sessions only)\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .engines
            .iter()
            .map(|engine| {
                vec![
                    engine.name.clone(),
                    role(engine.role).to_owned(),
                    or_dash(&engine.build_version),
                    engine.answered_through.to_string(),
                    engine.lag_inputs.to_string(),
                    engine.lag_us.to_string(),
                    engine.silent_ms.to_string(),
                    engine.delivered_inputs.to_string(),
                    short_hash(&engine.executable_sha256),
                    or_dash(&engine.addr),
                ]
            })
            .collect();
        out.push_str("engines\n");
        out.push_str(&table(
            &[
                ("name", Align::Left),
                ("role", Align::Left),
                ("build", Align::Left),
                ("answered", Align::Right),
                ("lag inputs", Align::Right),
                ("lag µs", Align::Right),
                ("silent ms", Align::Right),
                ("delivered", Align::Right),
                ("sha256", Align::Left),
                ("link", Align::Left),
            ],
            &rows,
        ));
    }
    out.push('\n');

    let last_switch = match &status.last_switch {
        Some(report) if report.rollback => format!("rolled back {}", describe_switch(report)),
        Some(report) => describe_switch(report),
        None => "none".to_owned(),
    };
    let shadow = &status.shadow;
    let canary = match &status.canary {
        Some(canary) => {
            let g = &canary.gates;
            let breach = match &g.breach {
                Some(b) => format!(
                    "; BREACHED {} ({:.4} over {:.4}), rolling back",
                    b.gate, b.observed, b.limit
                ),
                None => String::new(),
            };
            let delivery = if canary.delivery.is_empty() {
                String::new()
            } else {
                format!(", {} delivery", canary.delivery)
            };
            let expected = if canary.expected_divergence.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} expected divergences on {}",
                    g.expected_divergences,
                    canary.expected_divergence.describe()
                )
            };
            format!(
                "{} on {} (rest on {}) since input {}{delivery}; {} compared, {} errors{expected}, rejects {} vs {}, p99 {} vs {} µs{breach}",
                canary.engine,
                canary.symbols.join(","),
                canary.baseline,
                canary.since_seq,
                g.compared,
                g.errors,
                g.canary_rejects,
                g.baseline_rejects,
                g.canary_p99_us,
                g.baseline_p99_us
            )
        }
        None => "none".to_owned(),
    };
    let changes = if status.open_changes.is_empty() {
        "none open".to_owned()
    } else {
        status
            .open_changes
            .iter()
            .map(|c| format!("{} {}", c.id, c.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let audit = match &status.audit_head {
        Some(head) => format!("#{} {}", head.seq, head.hash),
        None => "-".to_owned(),
    };
    let last_switch = match status.switch_waiting_at {
        Some(barrier) => format!("{last_switch}; another waits at barrier {barrier}"),
        None => last_switch,
    };
    let facts = [
        ("journal last seq", status.journal_last_seq.to_string()),
        ("delivered through", status.delivered_through.to_string()),
        ("last switch", last_switch),
        ("switches", status.switches.to_string()),
        (
            "gateway upgrade",
            match &status.gateway_upgrade {
                Some(u) => format!(
                    "{} to {}: {} sessions handed over, pause {} µs",
                    u.change,
                    short_sha256(&u.artifact_sha256),
                    u.sessions,
                    u.pause_us
                ),
                None => "none".to_owned(),
            },
        ),
        (
            "gateway build",
            match &status.gateway_build {
                Some(build) => match &build.fallback {
                    Some(reason) => format!(
                        "{} (configured binary: {reason})",
                        short_sha256(&build.executable_sha256)
                    ),
                    None => short_sha256(&build.executable_sha256).to_owned(),
                },
                None => "-".to_owned(),
            },
        ),
        ("canary", canary),
        (
            "halted",
            if status.halted.is_empty() {
                "none".to_owned()
            } else {
                format!(
                    "{} (resume with baton ctl resume --symbols after reconciliation)",
                    status.halted.join(",")
                )
            },
        ),
        ("changes", changes),
        ("audit head", audit),
        (
            "shadow",
            format!(
                "{} matched, {} diverged",
                shadow.matches, shadow.divergences
            ),
        ),
    ];
    let label_width = facts
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    for (label, value) in facts {
        let _ = writeln!(out, "{label:<label_width$}  {value}");
    }

    for sample in shadow.samples.iter().take(constants::CONTROL_SAMPLES_SHOWN) {
        let _ = writeln!(out, "  input {}", sample.input_seq);
        let _ = writeln!(
            out,
            "    authoritative  {}",
            one_line(&sample.authoritative)
        );
        let _ = writeln!(out, "    standby        {}", one_line(&sample.standby));
    }
    let hidden = shadow
        .samples
        .len()
        .saturating_sub(constants::CONTROL_SAMPLES_SHOWN);
    if hidden > 0 {
        let _ = writeln!(out, "  ({hidden} more samples in --json)");
    }
    out
}

/// One line for a completed `baton ctl switch` or `rollback`: who has authority now, where the
/// barrier fell and how long order flow paused, which is the number the change record needs.
/// A rollback says so: the operator pulled the brake and must see that authority went back.
pub fn render_switch(report: &SwitchReport) -> String {
    let verb = if report.rollback {
        "rolled back"
    } else {
        "switched"
    };
    format!("{verb} {}\n", describe_switch(report))
}

/// One line per change, for `baton ctl change list` and after a filing or approval.
pub fn render_changes(changes: &[ChangeSummary]) -> String {
    if changes.is_empty() {
        return "no changes\n".to_owned();
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.state.to_string(),
                c.filed_by.clone(),
                or_dash(&c.approved_by.join(",")),
                format!("{}..{}", rfc3339(c.window_start), rfc3339(c.window_end)),
                short_hash(&c.artifact_sha256),
                c.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            ("change", Align::Left),
            ("state", Align::Left),
            ("filed by", Align::Left),
            ("approved by", Align::Left),
            ("window", Align::Left),
            ("artifact", Align::Left),
            ("reason", Align::Left),
        ],
        &rows,
    )
}

/// The first 12 hex digits of a hash: enough to tell builds apart in a table.
fn short_hash(hash: &str) -> String {
    match hash.get(..12) {
        Some(short) => short.to_owned(),
        None => or_dash(hash),
    }
}

/// A switch in words, shared by the status overview and the switch reply so both read alike.
pub(crate) fn describe_switch(report: &SwitchReport) -> String {
    format!(
        "{} → {} at barrier {} ({}), pause {} µs ({})",
        report.from,
        report.to,
        report.barrier_seq,
        scope_text(&report.scope),
        report.pause_us,
        if report.planned {
            "planned"
        } else {
            "failover"
        }
    )
}

/// How a column's cells line up: text reads from the left, numbers compare by their last digit.
#[derive(Clone, Copy)]
enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left.
    Right,
}

/// `rows` under `columns`, each row indented by two spaces, columns two spaces apart, widths in
/// characters (not bytes, for "µs"), trailing spaces trimmed.
fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|(header, _)| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headers: Vec<&str> = columns.iter().map(|(header, _)| *header).collect();
    push_row(&mut out, columns, &widths, &headers);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        push_row(&mut out, columns, &widths, &cells);
    }
    out
}

/// Appends one aligned row of [`table`].
fn push_row(out: &mut String, columns: &[(&str, Align)], widths: &[usize], cells: &[&str]) {
    let mut line = String::from(" ");
    for (((_, align), width), cell) in columns.iter().zip(widths).zip(cells) {
        line.push(' ');
        let pad = width.saturating_sub(cell.chars().count());
        match align {
            Align::Left => {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
            Align::Right => {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        line.push(' ');
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// `yes`/`no`, shorter to scan than `true`/`false`.
fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The role as the API spells it, so the table and `--json` use the same words.
pub(crate) fn role(role: EngineRole) -> &'static str {
    match role {
        EngineRole::Authoritative => "authoritative",
        EngineRole::Standby => "standby",
        EngineRole::Canary => "canary",
        EngineRole::Down => "down",
    }
}

/// An empty cell shown as `-`, so a missing value (a down engine's build) is visibly missing
/// instead of shifting the eye to the next column.
fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// A sample's debug text flattened to one line and cut to
/// [`constants::CONTROL_SAMPLE_TEXT_CHARS_MAX`] characters, so one verbose sample cannot push the
/// rest of the overview off the screen.
/// The first 12 hex digits of a SHA-256: enough for a person to tell builds apart.
fn short_sha256(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let max = constants::CONTROL_SAMPLE_TEXT_CHARS_MAX;
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::{DivergenceSample, EngineStatus, SessionStatus, ShadowStatus};

    fn sample_status() -> Status {
        Status {
            sessions: vec![
                SessionStatus {
                    target_comp_id: "CLIENT1".into(),
                    logged_on: true,
                    seq_num_next_out: 1042,
                    seq_num_next_in: 987,
                },
                SessionStatus {
                    target_comp_id: "CLIENT22".into(),
                    logged_on: false,
                    seq_num_next_out: 1,
                    seq_num_next_in: 1,
                },
            ],
            engines: vec![
                EngineStatus {
                    name: "green".into(),
                    addr: "unix://var/engine-green.sock".into(),
                    build_version: "0.2.0".into(),
                    role: EngineRole::Authoritative,
                    answered_through: 5310,
                    lag_inputs: 0,
                    lag_us: 0,
                    silent_ms: 3,
                    executable_sha256:
                        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                    delivered_inputs: 309,
                    sent_through: 0,
                    kept_inputs: 0,
                },
                EngineStatus {
                    name: "blue".into(),
                    addr: "unix://var/engine-blue.sock".into(),
                    build_version: "0.1.0".into(),
                    role: EngineRole::Standby,
                    answered_through: 5306,
                    lag_inputs: 4,
                    lag_us: 850,
                    silent_ms: 12,
                    executable_sha256: String::new(),
                    delivered_inputs: 5000,
                    sent_through: 0,
                    kept_inputs: 0,
                },
                EngineStatus {
                    name: "red".into(),
                    addr: "tcp://127.0.0.1:7001".into(),
                    build_version: String::new(),
                    role: EngineRole::Down,
                    answered_through: 0,
                    lag_inputs: 5310,
                    lag_us: 0,
                    silent_ms: 60000,
                    executable_sha256: String::new(),
                    delivered_inputs: 0,
                    sent_through: 0,
                    kept_inputs: 0,
                },
            ],
            journal_last_seq: 5310,
            delivered_through: 5309,
            switch_waiting_at: None,
            last_switch: Some(SwitchReport {
                from: "blue".into(),
                to: "green".into(),
                barrier_seq: 5000,
                pause_us: 42,
                planned: true,
                rollback: false,
                scope: Default::default(),
            }),
            switches: 1,
            shadow: ShadowStatus {
                matches: 5290,
                divergences: 2,
                samples: vec![
                    DivergenceSample {
                        input_seq: 17,
                        authoritative: "[Ack { order_id: 17 }]".into(),
                        standby: "[Reject {\n  reason: Full }]".into(),
                    },
                    DivergenceSample {
                        input_seq: 4211,
                        authoritative: "[Fill { qty: 10 }]".into(),
                        standby: "[Fill { qty: 9 }]".into(),
                    },
                ],
            },
            canary: None,
            open_changes: Vec::new(),
            audit_head: None,
            halted: Vec::new(),
            gateway_upgrade: None,
            gateway_build: Some(crate::control::api::GatewayBuild {
                executable_sha256:
                    "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
                fallback: None,
            }),
        }
    }

    #[test]
    fn status_table_snapshot() {
        let expected = "\
sessions
  CompID    logged on  next in  next out
  CLIENT1   yes            987      1042
  CLIENT22  no               1         1

engines
  name   role           build  answered  lag inputs  lag µs  silent ms  delivered  sha256        link
  green  authoritative  0.2.0      5310           0       0          3        309  9f86d081884c  unix://var/engine-green.sock
  blue   standby        0.1.0      5306           4     850         12       5000  -             unix://var/engine-blue.sock
  red    down           -             0        5310       0      60000          0  -             tcp://127.0.0.1:7001

journal last seq   5310
delivered through  5309
last switch        blue → green at barrier 5000 (all symbols), pause 42 µs (planned)
switches           1
gateway upgrade    none
gateway build      2c26b46b68ff
canary             none
halted             none
changes            none open
audit head         -
shadow             5290 matched, 2 diverged
  input 17
    authoritative  [Ack { order_id: 17 }]
    standby        [Reject {   reason: Full }]
  input 4211
    authoritative  [Fill { qty: 10 }]
    standby        [Fill { qty: 9 }]
";
        assert_eq!(render_status(&sample_status()), expected);
    }

    #[test]
    fn empty_status_says_what_is_missing() {
        let text = render_status(&Status::default());
        assert!(text.contains("sessions   none configured"), "{text}");
        assert!(text.contains("engines    none configured"), "{text}");
        assert!(text.contains("last switch        none"), "{text}");
        assert!(text.contains("0 matched, 0 diverged"), "{text}");
    }

    #[test]
    fn samples_beyond_the_shown_few_are_counted_and_long_ones_cut() {
        let mut status = Status::default();
        let long = "x".repeat(constants::CONTROL_SAMPLE_TEXT_CHARS_MAX * 2);
        for input_seq in 1..=(constants::CONTROL_SAMPLES_SHOWN as u64 + 2) {
            status.shadow.samples.push(DivergenceSample {
                input_seq,
                authoritative: long.clone(),
                standby: "y".into(),
            });
        }
        let text = render_status(&status);
        assert!(text.contains("(2 more samples in --json)"), "{text}");
        let cut = format!(
            "authoritative  {}…\n",
            "x".repeat(constants::CONTROL_SAMPLE_TEXT_CHARS_MAX - 1)
        );
        assert!(text.contains(&cut), "{text}");
    }

    #[test]
    fn switch_report_names_both_engines_the_barrier_and_the_pause() {
        let report = SwitchReport {
            from: "green".into(),
            to: "blue".into(),
            barrier_seq: 9001,
            pause_us: 1234,
            planned: false,
            rollback: false,
            scope: Default::default(),
        };
        assert_eq!(
            render_switch(&report),
            "switched green → blue at barrier 9001 (all symbols), pause 1234 µs (failover)\n"
        );
    }

    #[test]
    fn a_rollback_says_rolled_back_in_its_reply_and_in_status() {
        let report = SwitchReport {
            from: "green".into(),
            to: "blue".into(),
            barrier_seq: 12,
            pause_us: 40,
            planned: true,
            rollback: true,
            scope: Default::default(),
        };
        assert_eq!(
            render_switch(&report),
            "rolled back green → blue at barrier 12 (all symbols), pause 40 µs (planned)\n"
        );
        let status = Status {
            last_switch: Some(report),
            ..Status::default()
        };
        let text = render_status(&status);
        assert!(
            text.contains("last switch        rolled back green → blue"),
            "{text}"
        );
    }
}
