//! The bench's plots, as small SVG files next to `report.json`: (a) latency over time with
//! switch and kill events marked, (b) the percentile distribution of baton and the baseline.
//!
//! Written by hand rather than with `plotters`: both plots are a few polylines on fixed axes,
//! and this keeps the bench free of a plotting stack. Moving to `plotters` (svg_backend,
//! line_series, no default features) is the way to go if the plots grow.

use std::fmt::Write as _;
use std::path::Path;

use super::report::{BenchReport, SeriesPoint};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 160.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// Writes `report.json`, `latency_over_time.svg` and `percentiles.svg` into `dir`.
pub fn write_all(report: &BenchReport, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("latency_over_time.svg"), over_time(report))?;
    std::fs::write(dir.join("percentiles.svg"), percentiles(report))?;
    Ok(())
}

/// A log10 y axis from 1 µs to the next power of ten above `max`.
struct LogY {
    decades: f64,
}

impl LogY {
    fn new(max: u64) -> LogY {
        LogY {
            decades: (max.max(10) as f64).log10().ceil(),
        }
    }

    fn y(&self, value: u64) -> f64 {
        let v = (value.max(1) as f64).log10() / self.decades;
        TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - v)
    }

    fn draw(&self, svg: &mut String) {
        for d in 0..=self.decades as u32 {
            let y = self.y(10u64.pow(d));
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                format_us(10u64.pow(d))
            );
        }
    }
}

fn format_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{} ms", us / 1_000),
        _ => format!("{} s", us / 1_000_000),
    }
}

fn header(svg: &mut String, title: &str, x_label: &str) {
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{:.1}" y="24" text-anchor="middle" font-size="16">{title}</text><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{x_label}</text><text x="16" y="{:.1}" font-size="13" transform="rotate(-90 16 {:.1})" text-anchor="middle">latency (log scale)</text><rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#888"/>"##,
        WIDTH / 2.0,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 16.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM,
    );
}

fn polyline(svg: &mut String, points: &[(f64, f64)], color: &str, dashed: bool) {
    let mut path = String::new();
    for (x, y) in points {
        let _ = write!(path, "{x:.1},{y:.1} ");
    }
    let dash = if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = writeln!(
        svg,
        r#"<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>"#
    );
}

fn legend(svg: &mut String, entries: &[(&str, &str, bool)]) {
    for (i, (name, color, dashed)) in entries.iter().enumerate() {
        let y = TOP + 20.0 + i as f64 * 20.0;
        let x = WIDTH - RIGHT + 12.0;
        let dash = if *dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}" font-size="12">{name}</text>"#,
            x + 24.0,
            x + 30.0,
            y + 4.0
        );
    }
}

/// Latency per time bucket (p50, p99, max) for baton and the baseline's p99, events as lines.
pub fn over_time(report: &BenchReport) -> String {
    let mut svg = String::new();
    header(
        &mut svg,
        &format!(
            "latency over time: {} sessions, {} orders/s",
            report.sessions, report.rate_per_s
        ),
        "seconds since start (by intended send time)",
    );
    let max = report
        .series
        .iter()
        .chain(&report.baseline_series)
        .map(|p| p.max_us)
        .max()
        .unwrap_or(10);
    let y = LogY::new(max);
    y.draw(&mut svg);
    let end_ms = report
        .series
        .iter()
        .chain(&report.baseline_series)
        .map(|p| p.at_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let x = |ms: u64| LEFT + (WIDTH - LEFT - RIGHT) * ms as f64 / end_ms as f64;
    for s in 0..=end_ms / 1_000 {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{s}</text>"#,
            x(s * 1_000),
            HEIGHT - BOTTOM + 16.0
        );
    }
    let line = |series: &[SeriesPoint], value: fn(&SeriesPoint) -> u64| -> Vec<(f64, f64)> {
        series.iter().map(|p| (x(p.at_ms), y.y(value(p)))).collect()
    };
    polyline(
        &mut svg,
        &line(&report.series, |p| p.p50_us),
        "#1f77b4",
        false,
    );
    polyline(
        &mut svg,
        &line(&report.series, |p| p.p99_us),
        "#ff7f0e",
        false,
    );
    polyline(
        &mut svg,
        &line(&report.series, |p| p.max_us),
        "#d62728",
        false,
    );
    polyline(
        &mut svg,
        &line(&report.baseline_series, |p| p.p99_us),
        "#7f7f7f",
        true,
    );
    for event in &report.events {
        let ex = x(event.at_ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{ex:.1}" y1="{TOP}" x2="{ex:.1}" y2="{:.1}" stroke="#2ca02c" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#2ca02c">{}</text>"##,
            HEIGHT - BOTTOM,
            ex + 3.0,
            TOP + 12.0,
            event.kind
        );
    }
    legend(
        &mut svg,
        &[
            ("baton p50", "#1f77b4", false),
            ("baton p99", "#ff7f0e", false),
            ("baton max", "#d62728", false),
            ("echo p99", "#7f7f7f", true),
            ("switch / kill", "#2ca02c", true),
        ],
    );
    svg.push_str("</svg>\n");
    svg
}

/// Latency against percentile, x as 1/(1-p) on a log scale (50%, 90%, 99%... equally spaced).
pub fn percentiles(report: &BenchReport) -> String {
    let mut svg = String::new();
    header(
        &mut svg,
        "latency by percentile: baton and the same-run echo baseline",
        "percentile",
    );
    let steps = [
        (0.5, "50%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
    ];
    let decades = 4.0 + 0.301;
    let x = |p: f64| {
        let v = (1.0 / (1.0 - p)).log10() - 2f64.log10();
        LEFT + (WIDTH - LEFT - RIGHT) * v / (decades - 2f64.log10())
    };
    let latency =
        |m: &super::report::Latency| [m.p50_us, m.p90_us, m.p99_us, m.p99_9_us, m.p99_99_us];
    let baton = latency(&report.baton.latency);
    let echo = latency(&report.baseline.latency);
    let y = LogY::new(baton.iter().chain(&echo).copied().max().unwrap_or(10));
    y.draw(&mut svg);
    for (p, label) in steps {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{label}</text>"#,
            x(p),
            HEIGHT - BOTTOM + 16.0
        );
    }
    let points = |values: [u64; 5]| -> Vec<(f64, f64)> {
        steps
            .iter()
            .zip(values)
            .map(|(&(p, _), v)| (x(p), y.y(v)))
            .collect()
    };
    polyline(&mut svg, &points(baton), "#1f77b4", false);
    polyline(&mut svg, &points(echo), "#7f7f7f", true);
    legend(
        &mut svg,
        &[
            ("baton", "#1f77b4", false),
            ("echo baseline", "#7f7f7f", true),
        ],
    );
    svg.push_str("</svg>\n");
    svg
}
