//! `baton bench` end to end at a low rate against its own venue: the report must be complete
//! and consistent. Latency numbers are never asserted; they depend on the machine.

use std::process::Command;

#[test]
fn bench_runs_and_reports_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "bench",
            "--sessions",
            "2",
            "--rate",
            "200",
            "--duration",
            "2",
            "--json",
            "--out",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("run baton bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let baton = &report["baton"];
    let orders = baton["orders"].as_u64().expect("orders");
    assert!(orders > 0, "{report}");
    assert_eq!(baton["answered"].as_u64(), Some(orders), "{report}");
    assert_eq!(baton["missing"].as_u64(), Some(0), "{report}");
    assert_eq!(baton["duplicates"].as_u64(), Some(0), "{report}");
    assert_eq!(baton["disconnects"].as_u64(), Some(0), "{report}");
    assert!(
        report["baseline"]["answered"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(
        report["ratios"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    assert!(!report["series"].as_array().expect("series").is_empty());
    for file in ["report.json", "latency_over_time.svg", "percentiles.svg"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
}
