//! The bench's plots, as SVG files next to `report.json`: (a) latency over time with switch and
//! kill events marked, so a blip can be seen against steady load; (b) latency by percentile for
//! baton and the same-run baseline, so the shape of the tail compares at a glance.

use std::path::Path;

use plotters::prelude::*;

use super::report::{BenchReport, Latency, SeriesPoint};

/// Why a plot or the report file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Writing a file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The plotting library failed to draw.
    #[error("drawing {file}: {reason}")]
    Draw {
        /// The plot being drawn.
        file: String,
        /// What the library said.
        reason: String,
    },
}

const SIZE: (u32, u32) = (900, 480);

/// Writes `report.json`, `latency_over_time.svg` and `percentiles.svg` into `dir`.
pub fn write_all(report: &BenchReport, dir: &Path) -> Result<(), PlotError> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    let draw = |file: &str| {
        let file = file.to_string();
        move |e: Box<dyn std::error::Error>| PlotError::Draw {
            file,
            reason: e.to_string(),
        }
    };
    over_time(report, &dir.join("latency_over_time.svg")).map_err(draw("latency_over_time.svg"))?;
    percentiles(report, &dir.join("percentiles.svg")).map_err(draw("percentiles.svg"))?;
    Ok(())
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// One line of the time-series plot: name, colour, the series and which value of it.
type Line<'a> = (
    &'a str,
    RGBColor,
    &'a [SeriesPoint],
    fn(&SeriesPoint) -> u64,
);

/// Latency per time bucket (baton p50, p99, max; echo p99), events as vertical lines.
fn over_time(report: &BenchReport, path: &Path) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || report.series.iter().chain(&report.baseline_series);
    let end_s = all().map(|p| p.at_ms).max().unwrap_or(0) as f64 / 1_000.0 + 0.1;
    let top_us = all().map(|p| p.max_us).max().unwrap_or(10).max(10) as f64 * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "latency over time: {} sessions, {} orders/s",
                report.sessions, report.rate_per_s
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, (1f64..top_us).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (by intended send time)")
        .y_desc("latency, µs (log)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let lines: [Line<'_>; 4] = [
        ("baton p50", BLUE, &report.series, |p| p.p50_us),
        ("baton p99", RGBColor(255, 127, 14), &report.series, |p| {
            p.p99_us
        }),
        ("baton max", RED, &report.series, |p| p.max_us),
        (
            "echo p99",
            RGBColor(127, 127, 127),
            &report.baseline_series,
            |p| p.p99_us,
        ),
    ];
    for (name, color, series, value) in lines {
        chart
            .draw_series(LineSeries::new(
                series
                    .iter()
                    .map(|p| (p.at_ms as f64 / 1_000.0, value(p).max(1) as f64)),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    let green = RGBColor(44, 160, 44);
    for event in &report.events {
        let x = event.at_ms as f64 / 1_000.0;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, 1.0), (x, top_us)],
            green.stroke_width(1),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            event.kind.clone(),
            (x, top_us / 2.0),
            ("sans-serif", 12).into_font().color(&green),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Latency against percentile, x as 1/(1-p) on a log scale so 90%, 99%, 99.9%... are equally
/// spaced.
fn percentiles(report: &BenchReport, path: &Path) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let quantiles = [0.5, 0.9, 0.99, 0.999, 0.9999];
    let values = |l: &Latency| [l.p50_us, l.p90_us, l.p99_us, l.p99_9_us, l.p99_99_us];
    let baton = values(&report.baton.latency);
    let echo = values(&report.baseline.latency);
    let top_us = baton
        .iter()
        .chain(&echo)
        .copied()
        .max()
        .unwrap_or(10)
        .max(10) as f64
        * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "latency by percentile: baton and the same-run echo baseline",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.5f64..20_000f64).log_scale(), (1f64..top_us).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency, µs (log)")
        .x_label_formatter(&|x| percent((1.0 - 1.0 / x) * 100.0))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (name, color, values) in [
        ("baton", BLUE, baton),
        ("echo baseline", RGBColor(127, 127, 127), echo),
    ] {
        let points: Vec<(f64, f64)> = quantiles
            .iter()
            .zip(values)
            .map(|(&q, v)| (1.0 / (1.0 - q), v.max(1) as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `99.9%` rather than `99.90000000000001%`.
fn percent(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}
