//! `baton ctl watch`: the status a release operator would otherwise re-run `baton ctl status`
//! for, redrawn about once a second in the terminal, so a canary's gate evidence, a standby
//! falling behind or a halt is seen as it happens.
//!
//! Split like the rest of the control plane: [`View`] holds what the last status request
//! returned, [`draw`] is a pure function from a [`View`] to a frame (tested on ratatui's
//! `TestBackend`, no terminal needed), and [`run`] is the thin driver that owns the terminal,
//! reads keys and feeds the view from a fetcher thread. The fetcher uses the same request and
//! the same [`Status`] as `baton ctl status --json`, so the two never disagree.
//!
//! The driver never exits because the gateway went away: during a failover or a restart is
//! exactly when the operator needs the view, so it says "unreachable" and keeps asking.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, Wrap};

use super::api::{ControlReply, ControlRequest, EngineRole, Status};
use super::client::{self, describe_switch, role};
use super::endpoint::ControlError;
use crate::constants;

/// Why the watch could not run at all. A gateway that does not answer is not one of these: the
/// view shows it and retries.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Raw mode and the alternate screen need a terminal; piped output would only collect
    /// escape codes.
    #[error("baton ctl watch needs a terminal on stdout; use `baton ctl status --json` in scripts")]
    NotATerminal,
    /// The terminal refused raw mode, the alternate screen, a draw or a key read.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// What the watch knows: the last status the gateway returned and whether the latest request
/// failed. A failure keeps the last status, marked as stale, because the numbers just before a
/// gateway went away are what the operator wants to see next to the fact that it did.
#[derive(Clone, Debug)]
pub struct View {
    /// The control address asked, shown so the operator knows which gateway this is.
    pub addr: SocketAddr,
    /// The last status received; `None` until the first reply.
    pub status: Option<Status>,
    /// Why the latest request failed; `None` when it succeeded (or none has finished yet).
    pub unreachable: Option<String>,
    /// Requests failed in a row since the last success: shows the retrying is alive.
    pub failures_in_row: u64,
}

impl View {
    /// A view that has not heard from the gateway yet.
    pub fn new(addr: SocketAddr) -> View {
        View {
            addr,
            status: None,
            unreachable: None,
            failures_in_row: 0,
        }
    }

    /// Takes in the outcome of one status request. A refusal or an unexpected reply counts as a
    /// failure: the view cannot show anything newer than what it has.
    pub fn update(&mut self, outcome: Result<ControlReply, ControlError>) {
        let reason = match outcome {
            Ok(ControlReply::Status(status)) => {
                self.status = Some(status);
                self.unreachable = None;
                self.failures_in_row = 0;
                return;
            }
            Ok(ControlReply::Refused { reason }) => format!("status refused: {reason}"),
            Ok(_) => "the endpoint answered status with something else".to_owned(),
            Err(error) => error.to_string(),
        };
        self.unreachable = Some(reason);
        self.failures_in_row = self.failures_in_row.saturating_add(1);
    }
}

/// Draws `view` over the whole frame: a header saying which gateway and whether it answers,
/// then sessions, engines, the canary with its gate evidence, and halts with the last switch.
/// Pure: everything shown comes from `view`, so a test backend renders exactly what a terminal
/// would.
pub fn draw(frame: &mut Frame, view: &View) {
    let area = frame.area();
    let Some(status) = &view.status else {
        let [header, rest] =
            Layout::vertical([Constraint::Length(header_height(view)), Constraint::Min(0)])
                .areas(area);
        draw_header(frame, header, view);
        let text = match &view.unreachable {
            Some(reason) => format!(
                "{reason}\n\nNo status received yet. Is the gateway running, and is this its \
                 control address (`[gateway] control`, or --addr)?"
            ),
            None => "Waiting for the first status...".to_owned(),
        };
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .block(Block::default().borders(Borders::ALL)),
            rest,
        );
        return;
    };

    // Tables ask for their rows plus borders and header; on a screen too short for them all,
    // the layout cuts the sessions table, so engines, the canary and halts (what decides a
    // release) stay in view; the full list is in `baton ctl status`.
    let rows = |n: usize| {
        u16::try_from(n.max(1))
            .unwrap_or(u16::MAX)
            .saturating_add(3)
    };
    let [header, sessions, engines, canary, bottom] = Layout::vertical([
        Constraint::Length(header_height(view)),
        Constraint::Length(rows(status.sessions.len())),
        Constraint::Length(rows(status.engines.len())),
        Constraint::Length(6),
        Constraint::Min(5),
    ])
    .areas(area);
    draw_header(frame, header, view);
    draw_sessions(frame, sessions, status);
    draw_engines(frame, engines, status);
    draw_canary(frame, canary, status);
    draw_bottom(frame, bottom, status);
}

/// Rows of the header: its border and what [`header_lines`] says.
fn header_height(view: &View) -> u16 {
    u16::try_from(header_lines(view).len())
        .unwrap_or(u16::MAX)
        .saturating_add(2)
}

/// Whether the gateway answers, and if not why not, each on its own line so a long reason
/// cannot push the state out of sight.
fn header_lines(view: &View) -> Vec<Line<'static>> {
    let refresh_s = constants::CONTROL_WATCH_REFRESH_MS as f64 / 1000.0;
    let mut lines = Vec::new();
    match (&view.unreachable, &view.status) {
        (Some(reason), stale) => {
            lines.push(Line::from(vec![
                Span::styled("GATEWAY UNREACHABLE", alarm()),
                Span::raw(format!(
                    " ({} failed in a row, retrying every {refresh_s} s)",
                    view.failures_in_row
                )),
            ]));
            // Without a status the body has room to wrap the reason; with one, the reason
            // takes a line here and is cut at the width (its start names the problem).
            if stale.is_some() {
                lines.push(Line::raw(reason.clone()));
                lines.push(Line::styled(
                    "below: the last status received, not the current one",
                    Style::default().fg(Color::Yellow),
                ));
            }
        }
        (None, Some(_)) => lines.push(Line::from(vec![
            Span::styled("connected", Style::default().fg(Color::Green)),
            Span::raw(format!(", refreshed every {refresh_s} s")),
        ])),
        (None, None) => lines.push(Line::raw("connecting...")),
    }
    lines
}

/// Which gateway, whether it answers, and how to quit.
fn draw_header(frame: &mut Frame, area: Rect, view: &View) {
    let title = format!(" baton ctl watch — {}   q, Esc or Ctrl-C quits ", view.addr);
    frame.render_widget(
        Paragraph::new(header_lines(view))
            .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

/// One row per configured session: logged on, and the sequence numbers both ways.
fn draw_sessions(frame: &mut Frame, area: Rect, status: &Status) {
    let block = Block::default().borders(Borders::ALL).title(" sessions ");
    if status.sessions.is_empty() {
        frame.render_widget(Paragraph::new("none configured").block(block), area);
        return;
    }
    let rows = status.sessions.iter().map(|session| {
        let logged_on = if session.logged_on {
            Span::styled("yes", Style::default().fg(Color::Green))
        } else {
            Span::styled("no", Style::default().fg(Color::Yellow))
        };
        Row::new(vec![
            Line::raw(session.target_comp_id.clone()),
            Line::from(logged_on),
            Line::raw(session.seq_num_next_in.to_string()).right_aligned(),
            Line::raw(session.seq_num_next_out.to_string()).right_aligned(),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(24),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(header_row(&[
        ("CompID", false),
        ("logged on", false),
        ("next in", true),
        ("next out", true),
    ]))
    .flex(Flex::Start)
    .block(block);
    frame.render_widget(table, area);
}

/// One row per engine: role, build, how far behind, and a word on whether that matters.
fn draw_engines(frame: &mut Frame, area: Rect, status: &Status) {
    let block = Block::default().borders(Borders::ALL).title(" engines ");
    if status.engines.is_empty() {
        frame.render_widget(
            Paragraph::new("none configured (sessions only)").block(block),
            area,
        );
        return;
    }
    let rows = status.engines.iter().map(|engine| {
        let (note, style) = match engine.role {
            EngineRole::Down => ("down".to_owned(), alarm()),
            EngineRole::Standby if engine.lag_inputs > constants::SWITCH_LAG_MAX_INPUTS => {
                ("LAGGING: a switch would be refused".to_owned(), alarm())
            }
            EngineRole::Standby if engine.lag_inputs > 0 => {
                ("lagging".to_owned(), Style::default().fg(Color::Yellow))
            }
            _ => ("ok".to_owned(), Style::default().fg(Color::Green)),
        };
        let build = if engine.build_version.is_empty() {
            "-".to_owned()
        } else {
            engine.build_version.clone()
        };
        Row::new(vec![
            Line::raw(engine.name.clone()),
            Line::raw(role(engine.role)),
            Line::raw(build),
            Line::raw(engine.answered_through.to_string()).right_aligned(),
            Line::raw(engine.lag_inputs.to_string()).right_aligned(),
            Line::raw(engine.lag_us.to_string()).right_aligned(),
            Line::raw(engine.silent_ms.to_string()).right_aligned(),
            Line::styled(note, style),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(13),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Min(8),
        ],
    )
    .header(header_row(&[
        ("name", false),
        ("role", false),
        ("build", false),
        ("answered", true),
        ("lag inputs", true),
        ("lag µs", true),
        ("silent ms", true),
        ("", false),
    ]))
    .block(block);
    frame.render_widget(table, area);
}

/// The running canary and its gate evidence, with the breach (if any) in red.
fn draw_canary(frame: &mut Frame, area: Rect, status: &Status) {
    let block = Block::default().borders(Borders::ALL).title(" canary ");
    let Some(canary) = &status.canary else {
        frame.render_widget(Paragraph::new("no canary running").block(block), area);
        return;
    };
    let g = &canary.gates;
    let allowance = if g.latency_allowance_p99_us == 0 {
        "-".to_owned()
    } else {
        g.latency_allowance_p99_us.to_string()
    };
    let verdict = match &g.breach {
        Some(breach) => Line::from(vec![
            Span::styled(format!("BREACHED {}", breach.gate), alarm()),
            Span::raw(format!(
                ": {:.4} over the limit {:.4} after {} compared; rolling back",
                breach.observed, breach.limit, breach.compared
            )),
        ]),
        None => Line::styled(
            "gates holding",
            Style::default()
                .fg(Color::Green)
                .add_modifier(Modifier::BOLD),
        ),
    };
    let lines = vec![
        Line::raw(format!(
            "{} on {} (rest on {}) since input {}",
            canary.engine,
            canary.symbols.join(","),
            canary.baseline,
            canary.since_seq
        )),
        Line::raw(format!(
            "compared {}   errors {}   rejects {} (baseline {})",
            g.compared, g.errors, g.canary_rejects, g.baseline_rejects
        )),
        Line::raw(format!(
            "p99 {} µs   allowance {allowance} µs   baseline p99 {} µs",
            g.canary_p99_us, g.baseline_p99_us
        )),
        verdict,
    ];
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// Halts first (they need an operator), then the last switch and the counters behind it.
fn draw_bottom(frame: &mut Frame, area: Rect, status: &Status) {
    let halted = if status.halted.is_empty() {
        Line::from(vec![
            Span::raw("halted       "),
            Span::styled("none", Style::default().fg(Color::Green)),
        ])
    } else {
        Line::from(vec![
            Span::raw("halted       "),
            Span::styled(status.halted.join(","), alarm()),
            Span::raw("  (resume with baton ctl resume --symbols after reconciliation)"),
        ])
    };
    let last_switch = match &status.last_switch {
        Some(report) if report.rollback => format!("rolled back {}", describe_switch(report)),
        Some(report) => describe_switch(report),
        None => "none".to_owned(),
    };
    let lines = vec![
        halted,
        Line::raw(format!("last switch  {last_switch}")),
        Line::raw(format!(
            "switches {}   journal last seq {}   delivered through {}   shadow {} matched, {} diverged",
            status.switches,
            status.journal_last_seq,
            status.delivered_through,
            status.shadow.matches,
            status.shadow.divergences
        )),
    ];
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" halts and switches "),
        ),
        area,
    );
}

/// A bold table header; `true` right-aligns a title over a column of numbers.
fn header_row(titles: &[(&'static str, bool)]) -> Row<'static> {
    Row::new(titles.iter().map(|&(title, right)| {
        if right {
            Line::raw(title).right_aligned()
        } else {
            Line::raw(title)
        }
    }))
    .style(Style::default().add_modifier(Modifier::BOLD))
}

/// The style of anything that needs an operator now.
fn alarm() -> Style {
    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
}

/// Whether a key ends the watch. In raw mode Ctrl-C arrives as a key, not a signal.
fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// Puts the terminal back (cooked mode, main screen) however the watch ends: a return, an error
/// propagated with `?`, or a panic unwinding through [`run`] (ratatui's own panic hook restores
/// it before the message is printed, so the message is readable).
struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the dashboard against the control endpoint at `addr` until the operator quits.
///
/// Status requests run on their own thread so a gateway that takes its full
/// [`constants::CONTROL_WATCH_REQUEST_TIMEOUT_MS`] to fail never delays a key press. The thread
/// ends at its next send once the watch has returned; the process exits right after anyway.
pub fn run(addr: SocketAddr) -> Result<(), WatchError> {
    if !std::io::stdout().is_terminal() {
        return Err(WatchError::NotATerminal);
    }
    // One slot: the fetcher waits for the view to take a reply before it asks again, so replies
    // never queue up behind a slow terminal.
    let (replies_tx, replies_rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("ctl-watch-fetch".to_owned())
        .spawn(move || {
            let timeout = Duration::from_millis(constants::CONTROL_WATCH_REQUEST_TIMEOUT_MS);
            let refresh = Duration::from_millis(constants::CONTROL_WATCH_REFRESH_MS);
            loop {
                let outcome = client::request(addr, &ControlRequest::Status, timeout);
                if replies_tx.send(outcome).is_err() {
                    return;
                }
                std::thread::sleep(refresh);
            }
        })?;

    let mut terminal = ratatui::try_init()?;
    let _restore = RestoreOnDrop;
    let mut view = View::new(addr);
    let key_poll = Duration::from_millis(constants::CONTROL_WATCH_KEY_POLL_MS);
    loop {
        // No log line for a failed request: the header shows it, and a log on stderr would
        // scribble over the alternate screen.
        while let Ok(outcome) = replies_rx.try_recv() {
            view.update(outcome);
        }
        terminal.draw(|frame| draw(frame, &view))?;
        if event::poll(key_poll)?
            && let Event::Key(key) = event::read()?
            && quits(&key)
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
