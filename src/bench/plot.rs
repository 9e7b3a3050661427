//! The bench's plots, as SVG files next to `report.json`: (a) latency over time with switch and
//! kill events marked, so a blip can be seen against steady load; (b) latency by percentile for
//! baton and the same-run baseline, so the shape of the tail compares at a glance.

use std::path::Path;

use plotters::prelude::*;

use super::report::{BenchReport, Latency, SeriesPoint, plural};

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
    let peer_series: &[SeriesPoint] = report.peer.as_ref().map_or(&[], |p| &p.series);
    let all = || {
        report
            .series
            .iter()
            .chain(&report.baseline_series)
            .chain(peer_series)
    };
    let end_s = all().map(|p| p.at_ms).max().unwrap_or(0) as f64 / 1_000.0 + 0.1;
    let top_us = all().map(|p| p.max_us).max().unwrap_or(10).max(10) as f64 * 2.0;
    let bottom_us = log_floor(all().map(|p| p.p50_us.min(p.p99_us)).min());
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "latency over time: {}, {} orders/s",
                plural(report.sessions as u64, "session"),
                report.rate_per_s
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, (bottom_us..top_us).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (by intended send time)")
        .y_desc("latency, µs (log)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let peer_name = report.peer.as_ref().map(|p| format!("{} p99", p.name));
    let mut lines: Vec<Line<'_>> = vec![
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
    if let Some(name) = &peer_name {
        lines.push((name.as_str(), PEER_COLOR, peer_series, |p| p.p99_us));
    }
    for (name, color, series, value) in lines {
        chart
            .draw_series(LineSeries::new(
                series
                    .iter()
                    .map(|p| (p.at_ms as f64 / 1_000.0, (value(p) as f64).max(bottom_us))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    let green = RGBColor(44, 160, 44);
    for event in &report.events {
        let x = event.at_ms as f64 / 1_000.0;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, bottom_us), (x, top_us)],
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
    // The worst sample is drawn as the last point, at MAX_X: past 99.99% (x = 10 000), labelled
    // "max" rather than a percentile it is not.
    let quantiles = [0.5, 0.9, 0.99, 0.999, 0.9999];
    let xs = quantiles.map(|q| 1.0 / (1.0 - q));
    let values = |l: &Latency| {
        [
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p99_9_us,
            l.p99_99_us,
            l.max_us,
        ]
    };
    let baton = values(&report.baton.latency);
    let echo = values(&report.baseline.latency);
    let peer = report
        .peer
        .as_ref()
        .map(|p| (p.name.as_str(), values(&p.measurement.latency)));
    let peer_values: &[u64] = peer.as_ref().map_or(&[], |(_, v)| v);
    let top_us = baton
        .iter()
        .chain(&echo)
        .chain(peer_values)
        .copied()
        .max()
        .unwrap_or(10)
        .max(10) as f64
        * 2.0;
    let bottom_us = log_floor(
        baton
            .iter()
            .chain(&echo)
            .chain(peer_values)
            .copied()
            .filter(|&v| v > 0)
            .min(),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(
            match &peer {
                Some((name, _)) => {
                    format!("latency by percentile: baton, the same-run echo baseline and {name}")
                }
                None => "latency by percentile: baton and the same-run echo baseline".into(),
            },
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1.5f64..MAX_X * 1.5).log_scale(),
            (bottom_us..top_us).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency, µs (log)")
        .x_label_formatter(&|&x| {
            if x >= MAX_X * 0.99 {
                "max".to_string()
            } else if x > xs[4] * 1.01 {
                String::new()
            } else {
                percent((1.0 - 1.0 / x) * 100.0)
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let mut series = vec![
        ("baton", BLUE, baton),
        ("echo baseline", RGBColor(127, 127, 127), echo),
    ];
    if let Some((name, values)) = peer {
        series.push((name, PEER_COLOR, values));
    }
    for (name, color, values) in series {
        let points: Vec<(f64, f64)> = xs
            .iter()
            .copied()
            .chain([MAX_X])
            .zip(values)
            .map(|(x, v)| (x, (v as f64).max(bottom_us)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        if let Some(&(x, y)) = points.last() {
            chart.draw_series(std::iter::once(Text::new(
                format!("max {} µs", y.round()),
                (x / 3.0, y),
                ("sans-serif", 12).into_font().color(&color),
            )))?;
        }
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

/// The third-party peer's lines, apart from baton's blues and reds and the echo's grey.
const PEER_COLOR: RGBColor = RGBColor(148, 103, 189);

/// Where the percentile plot puts the maximum: right of 99.99% (x = 10 000).
const MAX_X: f64 = 20_000.0;

/// The bottom of a log latency axis: the power of ten at or below the smallest value, so the
/// lines use the height of the plot instead of starting at 1 µs (1 µs when there is no data).
fn log_floor(min_us: Option<u64>) -> f64 {
    match min_us {
        Some(min) if min > 1 => 10f64.powi((min as f64).log10().floor() as i32),
        _ => 1.0,
    }
}

/// `99.9%` rather than `99.90000000000001%`.
fn percent(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_axis_starts_at_the_data_not_at_one_microsecond() {
        assert_eq!(log_floor(Some(112)), 100.0);
        assert_eq!(log_floor(Some(100)), 100.0);
        assert_eq!(log_floor(Some(9)), 1.0);
        assert_eq!(log_floor(Some(2_500)), 1_000.0);
        assert_eq!(log_floor(None), 1.0);
    }

    #[test]
    fn the_percentile_plot_shows_the_maximum() {
        let latency = |base: u64| Latency {
            p50_us: base,
            p90_us: base * 2,
            p99_us: base * 4,
            p99_9_us: base * 8,
            p99_99_us: base * 16,
            max_us: base * 40,
        };
        let mut report = BenchReport::default();
        report.baton.latency = latency(300);
        report.baseline.latency = latency(120);
        let dir = tempfile::tempdir().unwrap();
        write_all(&report, dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("percentiles.svg")).unwrap();
        assert!(svg.contains("max 12000 µs"), "{svg}");
        assert!(svg.contains("max 4800 µs"), "{svg}");
        assert!(!svg.contains("quickfix"), "{svg}");
        report.peer = Some(super::super::report::PeerReport {
            name: "quickfix".into(),
            measurement: super::super::report::Measurement {
                latency: latency(100),
                ..Default::default()
            },
            series: vec![SeriesPoint {
                at_ms: 0,
                orders: 1,
                p50_us: 90,
                p99_us: 95,
                max_us: 99,
            }],
            ..Default::default()
        });
        write_all(&report, dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("percentiles.svg")).unwrap();
        assert!(
            svg.contains("max 4000 µs"),
            "the peer's series is drawn: {svg}"
        );
        let svg = std::fs::read_to_string(dir.path().join("latency_over_time.svg")).unwrap();
        assert!(svg.contains("quickfix p99"), "{svg}");
    }
}
