//! The Grafana dashboard in `deploy/grafana/baton.json` keeps up with the gateway: every metric
//! `src/control/metrics.rs` renders has a panel whose query names it, so a metric added to the
//! gateway without a panel fails here instead of being invisible to operators.

use std::collections::BTreeSet;
use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Metric names as string literals in the renderer (`"baton_..."`).
fn rendered_metrics() -> BTreeSet<String> {
    let source = read("src/control/metrics.rs");
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| {
            literal.starts_with("baton_")
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_owned)
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(value: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for panel in value["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panels(panel));
    }
    out
}

/// Whether `expr` names `metric` as a whole identifier (not as the prefix of a longer name).
fn names(expr: &str, metric: &str) -> bool {
    expr.match_indices(metric).any(|(at, _)| {
        let before = expr[..at].bytes().last();
        let after = expr[at + metric.len()..].bytes().next();
        let ident = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        !ident(before) && !ident(after)
    })
}

#[test]
fn every_rendered_metric_has_a_panel() {
    let metrics = rendered_metrics();
    assert!(
        metrics.len() >= 20 && metrics.contains("baton_sessions_configured"),
        "the renderer's metric names were not found: {metrics:?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/baton.json")).expect("dashboard is JSON");
    let exprs: Vec<&str> = panels(&dashboard)
        .into_iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str())
        .collect();
    let missing: Vec<&String> = metrics
        .iter()
        .filter(|metric| !exprs.iter().any(|expr| names(expr, metric)))
        .collect();
    assert!(missing.is_empty(), "metrics without a panel: {missing:?}");
}

#[test]
fn panels_have_unique_ids_and_a_prometheus_datasource() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/baton.json")).expect("dashboard is JSON");
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["type"], "prometheus",
                "{}",
                panel["title"]
            );
        }
    }
}

#[test]
fn a_name_is_matched_whole() {
    assert!(names(
        "rate(baton_switches_total[1m])",
        "baton_switches_total"
    ));
    assert!(!names(
        "baton_sessions_logged_on",
        "baton_session_logged_on"
    ));
    assert!(!names("baton_canary_active_x", "baton_canary_active"));
}
