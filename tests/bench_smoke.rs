//! `baton bench` end to end at a low rate against its own venue: the report must be complete
//! and consistent. Latency numbers are never asserted; they depend on the machine.

use std::process::Command;

/// Runs `baton bench ARGS --json --out DIR` and returns its JSON report; the run must succeed.
fn bench_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("bench")
        .args(args)
        .args(["--json", "--out"])
        .arg(dir)
        .env("RUST_LOG", "error")
        .output()
        .expect("run baton bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).expect("JSON report")
}

#[test]
fn bench_runs_and_reports_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = bench_json(
        dir.path(),
        &["--sessions", "2", "--rate", "200", "--duration", "2"],
    );
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

/// `--throughput`: the run's orders (rate × duration, here 2,000) are sent unpaced with a window
/// in flight, every one is answered once, and the report says it was a throughput run with
/// orders per second for baton and the echo. The rate reached is never asserted.
#[test]
fn bench_throughput_sends_every_order_unpaced_and_reports_orders_per_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = bench_json(
        dir.path(),
        &[
            "--throughput",
            "--sessions",
            "2",
            "--rate",
            "1000",
            "--duration",
            "2",
        ],
    );
    assert_eq!(report["throughput"].as_bool(), Some(true), "{report}");
    for side in ["baton", "baseline"] {
        let measured = &report[side];
        assert_eq!(measured["orders"].as_u64(), Some(2_000), "{side}: {report}");
        assert_eq!(
            measured["answered"].as_u64(),
            Some(2_000),
            "{side}: {report}"
        );
        assert_eq!(measured["missing"].as_u64(), Some(0), "{side}: {report}");
        assert!(
            measured["throughput_per_s"].as_f64().unwrap_or(0.0) > 0.0,
            "{side}: {report}"
        );
    }
    assert_eq!(report["baton"]["duplicates"].as_u64(), Some(0), "{report}");
    assert_eq!(report["baton"]["disconnects"].as_u64(), Some(0), "{report}");
}

/// The QuickFIX C++ peer (`--peer quickfix`) runs after baton and the echo with the same load and
/// its numbers and ratios are in the report; a mix it cannot answer is refused before anything
/// runs. Needs Debian's libquickfix-dev (`.ci/run` installs it); skipped without it.
#[test]
fn bench_compares_with_the_quickfix_peer() {
    let installed = Command::new("pkg-config")
        .args(["--exists", "quickfix"])
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("skipped: libquickfix-dev is not installed (pkg-config knows no quickfix)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["bench", "--peer", "quickfix", "--out"])
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("run baton bench");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the default mix has cancels");
    assert!(stderr.contains("new orders only"), "{stderr}");

    let report = bench_json(
        dir.path(),
        &[
            "--sessions",
            "2",
            "--rate",
            "200",
            "--duration",
            "2",
            "--mix",
            "new=1",
            "--peer",
            "quickfix",
        ],
    );
    let peer = &report["peer"];
    assert_eq!(peer["name"].as_str(), Some("quickfix"), "{report}");
    let measured = &peer["measurement"];
    let orders = measured["orders"].as_u64().expect("orders");
    assert_eq!(Some(orders), report["baton"]["orders"].as_u64(), "{report}");
    assert_eq!(measured["answered"].as_u64(), Some(orders), "{report}");
    assert_eq!(measured["refused"].as_u64(), Some(0), "{report}");
    assert_eq!(measured["disconnects"].as_u64(), Some(0), "{report}");
    assert!(
        measured["latency"]["p50_us"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    for ratio in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(
            peer["ratios"][ratio].as_f64().unwrap_or(0.0) > 0.0,
            "{ratio}: {report}"
        );
    }
    assert!(!peer["series"].as_array().expect("series").is_empty());
    let plot = std::fs::read_to_string(dir.path().join("percentiles.svg")).expect("plot");
    assert!(
        plot.contains("quickfix"),
        "the peer is a series of the plot"
    );
}

/// `--canary --verified-canary` runs the load under the default canary, then again on a fresh
/// venue under a verified one, and reports the second as a ratio to the first; without
/// `--canary` the flag is refused.
#[test]
fn bench_compares_verified_canary_delivery_with_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["bench", "--verified-canary", "--out"])
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("run baton bench");
    assert!(
        !refused.status.success(),
        "--verified-canary without --canary"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--canary"), "{stderr}");

    let report = bench_json(
        dir.path(),
        &[
            "--sessions",
            "2",
            "--rate",
            "200",
            "--duration",
            "2",
            "--canary",
            "--verified-canary",
        ],
    );
    let verified = &report["verified_canary"]["measurement"];
    let orders = verified["orders"].as_u64().expect("verified orders");
    assert!(orders > 0, "{report}");
    assert_eq!(verified["answered"].as_u64(), Some(orders), "{report}");
    assert_eq!(verified["missing"].as_u64(), Some(0), "{report}");
    assert_eq!(verified["duplicates"].as_u64(), Some(0), "{report}");
    assert!(
        report["verified_canary"]["ratios"]["p50"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{report}"
    );
}

/// `--link shm` and `--link tcp` run the venue's engine links over shared memory and loopback
/// TCP; every order is answered once either way, and the report names the link and gives CPU
/// and sleeps per order for the gateway, both engines and the bench's own client.
#[test]
fn bench_runs_over_each_link_and_reports_usage_per_process() {
    for link in ["shm", "tcp"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = bench_json(
            dir.path(),
            &[
                "--link",
                link,
                "--spin-us",
                "20",
                "--sessions",
                "2",
                "--rate",
                "200",
                "--duration",
                "2",
            ],
        );
        assert_eq!(report["link"].as_str(), Some(link), "{report}");
        let baton = &report["baton"];
        let orders = baton["orders"].as_u64().expect("orders");
        assert!(orders > 0, "{report}");
        assert_eq!(baton["answered"].as_u64(), Some(orders), "{report}");
        assert_eq!(baton["missing"].as_u64(), Some(0), "{report}");
        assert_eq!(baton["duplicates"].as_u64(), Some(0), "{report}");
        let processes = report["processes"].as_array().expect("processes");
        let names: Vec<&str> = processes
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["gateway", "blue", "green", "bench client"],
            "{report}"
        );
        // CPU time is counted in clock ticks (10 ms), too coarse to require of each idle-ish
        // process at this rate; together they spent some. Sleeps are exact counts: each
        // process slept waiting for the orders.
        let cpu: f64 = processes
            .iter()
            .map(|p| p["cpu_us_per_order"].as_f64().expect("cpu"))
            .sum();
        assert!(cpu > 0.0, "{report}");
        for process in processes {
            assert!(
                process["sleeps_per_order"].as_f64().unwrap_or(0.0) > 0.0,
                "{process}"
            );
        }
    }
}

/// `--pingpong --warmup`: one session sends its orders one at a time, every one answered once,
/// and the report says so; with the QuickFIX peer installed the same ping-pong runs against it
/// too, so one command gives baton ÷ QuickFIX. (That only one order is in flight is checked by
/// `bench::load`'s unit test against a connection that counts them.)
#[test]
fn bench_pingpong_sends_one_order_at_a_time_and_compares_with_the_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = Command::new("pkg-config")
        .args(["--exists", "quickfix"])
        .status()
        .is_ok_and(|s| s.success());
    let mut args = vec![
        "--pingpong",
        "--warmup",
        "50",
        "--sessions",
        "1",
        "--rate",
        "400",
        "--duration",
        "1",
        "--mix",
        "new=1",
    ];
    if peer {
        args.extend(["--peer", "quickfix"]);
    } else {
        eprintln!("libquickfix-dev is not installed: ping-pong against baton and the echo only");
    }
    let report = bench_json(dir.path(), &args);
    assert_eq!(report["pingpong"].as_bool(), Some(true), "{report}");
    assert_eq!(report["warmup_orders"].as_u64(), Some(50), "{report}");
    let mut sides = vec![&report["baton"], &report["baseline"]];
    if peer {
        sides.push(&report["peer"]["measurement"]);
        assert!(
            report["peer"]["ratios"]["p99"].as_f64().unwrap_or(0.0) > 0.0,
            "{report}"
        );
    }
    for measured in sides {
        assert_eq!(measured["orders"].as_u64(), Some(400), "{report}");
        assert_eq!(measured["answered"].as_u64(), Some(400), "{report}");
        assert_eq!(measured["missing"].as_u64(), Some(0), "{report}");
        assert_eq!(measured["duplicates"].as_u64(), Some(0), "{report}");
    }
    assert!(
        report["placement"]
            .as_str()
            .is_some_and(|p| p.contains("parks until the answer"))
    );
}

/// Runs the bench with one event option and returns the report and that event: it ran, its
/// detail says how it went, and nothing was lost, duplicated or disconnected over the run.
fn bench_with_event(
    dir: &std::path::Path,
    option: &str,
    kind: &str,
) -> (serde_json::Value, serde_json::Value) {
    let report = bench_json(
        dir,
        &[
            "--sessions",
            "3",
            "--rate",
            "300",
            "--duration",
            "4",
            option,
            "1.5",
        ],
    );
    let baton = &report["baton"];
    let orders = baton["orders"].as_u64().expect("orders");
    assert_eq!(orders, 1_200, "{report}");
    assert_eq!(baton["answered"].as_u64(), Some(orders), "{report}");
    assert_eq!(baton["missing"].as_u64(), Some(0), "{report}");
    assert_eq!(baton["duplicates"].as_u64(), Some(0), "{report}");
    assert_eq!(baton["disconnects"].as_u64(), Some(0), "{report}");
    let events = report["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{report}");
    let event = events[0].clone();
    assert_eq!(event["kind"].as_str(), Some(kind), "{report}");
    assert_eq!(event["seen"]["disconnects"].as_u64(), Some(0), "{report}");
    assert!(event["worst_us"].as_u64().unwrap_or(0) > 0, "{report}");
    // The window's worst is also compared with the worst of as many steady orders.
    assert!(event["window_orders"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(event["expected_worst_us"].as_u64().is_some(), "{report}");
    assert!(
        event["expected_worst_capped"].as_bool().is_some(),
        "{report}"
    );
    assert!(
        event["worst_to_expected_worst"].as_f64().is_some(),
        "{report}"
    );
    (report, event)
}

/// `--rejoin-at`: the standby is SIGKILLed and restarted empty under load; it rejoins and catches
/// up while every order is answered.
#[test]
fn bench_rejoin_at_kills_the_standby_and_it_rejoins_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (report, event) = bench_with_event(dir.path(), "--rejoin-at", "rejoin");
    let detail = event["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("rejoined"), "{report}");
    assert!(
        event["until_ms"].as_u64() > event["at_ms"].as_u64(),
        "a rejoin lasts until the engine caught up: {report}"
    );
}

/// `--gateway-kill-at`: the gateway is SIGKILLed under load; its supervisor's successor serves
/// every session on the connections it held, and whatever the dead process lost comes back by
/// resend (counted, not asserted: it depends on what was in flight).
#[test]
fn bench_gateway_kill_at_keeps_every_session_connected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (report, event) = bench_with_event(dir.path(), "--gateway-kill-at", "gw-kill");
    let detail = event["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("served 3 sessions"), "{report}");
}

/// `--gateway-upgrade-at`: a planned gateway upgrade under a change the bench files; sessions
/// are handed over with no resend and no gap in either direction.
#[test]
fn bench_gateway_upgrade_at_hands_sessions_over_without_a_resend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (report, event) = bench_with_event(dir.path(), "--gateway-upgrade-at", "gw-upgrade");
    let detail = event["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("3 sessions handed over"), "{report}");
    for count in ["gaps", "resent", "resends_served", "garbled"] {
        assert_eq!(event["seen"][count].as_u64(), Some(0), "{count}: {report}");
    }
}
