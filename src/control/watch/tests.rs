//! The dashboard rendered on ratatui's test backend: each test builds the status an operator
//! would see in one situation and checks the screen shows it.

use std::net::SocketAddr;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;

use super::*;
use crate::control::api::{
    CanaryStatus, EngineStatus, GateBreach, GateStatus, SessionStatus, SwitchReport, SwitchScope,
};

/// Wide enough for every column and the longest fact line; tall enough for every panel.
const WIDTH: u16 = 140;
const HEIGHT: u16 = 40;

fn addr() -> SocketAddr {
    "127.0.0.1:9879".parse().expect("a literal address")
}

fn render(view: &View) -> Buffer {
    let mut terminal =
        Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("the test backend never fails");
    terminal
        .draw(|frame| draw(frame, view))
        .expect("the test backend never fails");
    terminal.backend().buffer().clone()
}

/// The screen as text, one line per row, trailing spaces trimmed.
fn text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The row of `buffer` containing `needle`, and the column it starts at (in cells).
fn find(buffer: &Buffer, needle: &str) -> Option<(u16, u16)> {
    let area = buffer.area;
    for y in 0..area.height {
        let cells: Vec<&str> = (0..area.width).map(|x| buffer[(x, y)].symbol()).collect();
        for x in 0..cells.len() {
            let mut joined = String::new();
            for cell in &cells[x..] {
                if joined.len() >= needle.len() {
                    break;
                }
                joined.push_str(cell);
            }
            if joined.starts_with(needle) {
                return Some((u16::try_from(x).expect("fits the width"), y));
            }
        }
    }
    None
}

fn engine(name: &str, role: EngineRole, lag_inputs: u64, lag_us: u64) -> EngineStatus {
    EngineStatus {
        name: name.into(),
        addr: format!("unix://var/engine-{name}.sock"),
        build_version: "0.2.0".into(),
        role,
        answered_through: 50_310_u64.saturating_sub(lag_inputs),
        lag_inputs,
        lag_us,
        silent_ms: 4,
        executable_sha256: String::new(),
        delivered_inputs: 0,
        sent_through: 0,
        kept_inputs: 0,
    }
}

/// A venue mid-release: a canary on green whose error gate has tripped, a halted symbol, a
/// standby too far behind to switch to, and a canary start as the last switch.
fn troubled_status() -> Status {
    Status {
        sessions: vec![
            SessionStatus {
                target_comp_id: "CLIENT1".into(),
                logged_on: true,
                seq_num_next_out: 1042,
                seq_num_next_in: 987,
            },
            SessionStatus {
                target_comp_id: "CLIENT2".into(),
                logged_on: false,
                seq_num_next_out: 1,
                seq_num_next_in: 1,
            },
        ],
        engines: vec![
            engine("blue", EngineRole::Authoritative, 0, 0),
            engine("green", EngineRole::Canary, 2, 310),
            engine(
                "red",
                EngineRole::Standby,
                constants::SWITCH_LAG_MAX_INPUTS + 1,
                2_500_000,
            ),
        ],
        journal_last_seq: 50_310,
        delivered_through: 50_309,
        last_switch: Some(SwitchReport {
            from: "blue".into(),
            to: "green".into(),
            barrier_seq: 5000,
            pause_us: 42,
            planned: true,
            scope: SwitchScope::CanaryStarted {
                symbols: vec!["MSFT".into()],
            },
            rollback: false,
        }),
        switches: 3,
        canary: Some(CanaryStatus {
            engine: "green".into(),
            baseline: "blue".into(),
            symbols: vec!["MSFT".into()],
            since_seq: 5001,
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
                    observed: 0.0526,
                    limit: 0.001,
                    compared: 19,
                    since_seq: 5001,
                }),
            },
            delivery: "immediate".into(),
            expected_divergence: Default::default(),
        }),
        halted: vec!["AAPL".into()],
        ..Status::default()
    }
}

fn connected(status: Status) -> View {
    let mut view = View::new(addr());
    view.update(Ok(ControlReply::Status(status)));
    view
}

#[test]
fn a_troubled_release_shows_canary_evidence_breach_halt_and_lagging_standby() {
    let buffer = render(&connected(troubled_status()));
    let screen = text(&buffer);

    // Which gateway, and that it answers.
    assert!(screen.contains("127.0.0.1:9879"), "{screen}");
    assert!(screen.contains("connected"), "{screen}");
    // Sessions with their sequence numbers.
    assert!(screen.contains("CLIENT1"), "{screen}");
    assert!(screen.contains("987"), "{screen}");
    assert!(screen.contains("1042"), "{screen}");
    assert!(screen.contains("CLIENT2"), "{screen}");
    // Engines with roles and lag; the standby too far behind is called out.
    assert!(screen.contains("authoritative"), "{screen}");
    assert!(screen.contains("canary"), "{screen}");
    assert!(
        screen.contains(&(constants::SWITCH_LAG_MAX_INPUTS + 1).to_string()),
        "{screen}"
    );
    assert!(screen.contains("2500000"), "{screen}");
    assert!(
        screen.contains("LAGGING: a switch would be refused"),
        "{screen}"
    );
    // The canary's gate evidence, latency against its allowance, and the breach.
    assert!(
        screen.contains("green on MSFT (rest on blue) since input 5001"),
        "{screen}"
    );
    assert!(
        screen.contains("compared 19   errors 1   rejects 4 (baseline 3)"),
        "{screen}"
    );
    assert!(
        screen.contains("p99 250 µs   allowance 400 µs   baseline p99 200 µs"),
        "{screen}"
    );
    assert!(
        screen.contains(
            "BREACHED error-rate: 0.0526 over the limit 0.0010 after 19 compared; rolling back"
        ),
        "{screen}"
    );
    // The halt and the last switch with its kind, barrier and pause.
    assert!(screen.contains("halted       AAPL"), "{screen}");
    assert!(
        screen.contains(
            "last switch  blue → green at barrier 5000 (canary MSFT), pause 42 µs (planned)"
        ),
        "{screen}"
    );
    assert!(!screen.contains("UNREACHABLE"), "{screen}");

    // What needs an operator is red, so it is seen before it is read.
    for alarm in ["BREACHED", "AAPL", "LAGGING"] {
        let (x, y) = find(&buffer, alarm).unwrap_or_else(|| panic!("{alarm} on screen"));
        assert_eq!(buffer[(x, y)].fg, Color::Red, "{alarm} is red");
    }
}

#[test]
fn a_quiet_venue_says_no_canary_no_halts_and_gates_absent() {
    let mut status = troubled_status();
    status.canary = None;
    status.halted.clear();
    status.engines = vec![
        engine("blue", EngineRole::Authoritative, 0, 0),
        engine("green", EngineRole::Standby, 3, 120),
    ];
    let screen = text(&render(&connected(status)));
    assert!(screen.contains("no canary running"), "{screen}");
    assert!(screen.contains("halted       none"), "{screen}");
    // A standby a few inputs behind is worth a look, not an alarm.
    assert!(screen.contains("lagging"), "{screen}");
    assert!(!screen.contains("LAGGING"), "{screen}");
    assert!(!screen.contains("BREACHED"), "{screen}");
}

#[test]
fn a_holding_canary_says_so_and_an_unknown_allowance_is_a_dash() {
    let mut status = troubled_status();
    if let Some(canary) = status.canary.as_mut() {
        canary.gates.breach = None;
        canary.gates.latency_allowance_p99_us = 0;
    }
    let screen = text(&render(&connected(status)));
    assert!(screen.contains("gates holding"), "{screen}");
    assert!(screen.contains("allowance - µs"), "{screen}");
}

#[test]
fn an_unreachable_gateway_without_status_says_so_and_that_it_retries() {
    let mut view = View::new(addr());
    view.update(Err(ControlError::Connect {
        addr: addr(),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    }));
    let screen = text(&render(&view));
    assert!(screen.contains("GATEWAY UNREACHABLE"), "{screen}");
    assert!(screen.contains("retrying every 1 s"), "{screen}");
    assert!(
        screen.contains("cannot connect to the gateway's control endpoint at 127.0.0.1:9879"),
        "{screen}"
    );
    assert!(screen.contains("No status received yet"), "{screen}");
    assert!(!screen.contains("sessions"), "{screen}");
}

#[test]
fn losing_the_gateway_keeps_the_last_status_marked_stale_and_a_reply_clears_it() {
    let mut view = connected(troubled_status());
    for _ in 0..2 {
        view.update(Err(ControlError::Closed { addr: addr() }));
    }
    assert_eq!(view.failures_in_row, 2);
    let screen = text(&render(&view));
    assert!(
        screen.contains("GATEWAY UNREACHABLE (2 failed in a row"),
        "{screen}"
    );
    assert!(
        screen.contains("below: the last status received, not the current one"),
        "{screen}"
    );
    assert!(screen.contains("CLIENT1"), "{screen}");

    view.update(Ok(ControlReply::Status(Status::default())));
    assert_eq!(view.failures_in_row, 0);
    let screen = text(&render(&view));
    assert!(!screen.contains("UNREACHABLE"), "{screen}");
    assert!(screen.contains("none configured"), "{screen}");
}

#[test]
fn a_refused_status_counts_as_a_failure() {
    let mut view = View::new(addr());
    view.update(Ok(ControlReply::Refused {
        reason: "busy".into(),
    }));
    assert_eq!(view.unreachable.as_deref(), Some("status refused: busy"));
    assert_eq!(view.failures_in_row, 1);
}

#[test]
fn many_sessions_do_not_push_the_canary_and_halts_off_the_screen() {
    let mut status = troubled_status();
    status.sessions = (0..200)
        .map(|n| SessionStatus {
            target_comp_id: format!("CLIENT{n}"),
            logged_on: true,
            seq_num_next_out: 1,
            seq_num_next_in: 1,
        })
        .collect();
    let screen = text(&render(&connected(status)));
    assert!(screen.contains("CLIENT0"), "{screen}");
    assert!(screen.contains("LAGGING"), "{screen}");
    assert!(screen.contains("BREACHED error-rate"), "{screen}");
    assert!(screen.contains("halted       AAPL"), "{screen}");
    assert!(screen.contains("last switch  blue → green"), "{screen}");
}

#[test]
fn a_tiny_terminal_does_not_panic() {
    let view = connected(troubled_status());
    for (width, height) in [(1, 1), (10, 3), (40, 8)] {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
        terminal
            .draw(|frame| draw(frame, &view))
            .expect("test backend");
    }
}

#[test]
fn q_esc_and_ctrl_c_quit_and_plain_c_does_not() {
    let press = |code, modifiers| KeyEvent::new(code, modifiers);
    assert!(quits(&press(KeyCode::Char('q'), KeyModifiers::NONE)));
    assert!(quits(&press(KeyCode::Esc, KeyModifiers::NONE)));
    assert!(quits(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    assert!(!quits(&press(KeyCode::Char('c'), KeyModifiers::NONE)));
    assert!(!quits(&press(KeyCode::Char('x'), KeyModifiers::NONE)));
}
