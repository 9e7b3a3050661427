//! A real Prometheus server scraping a real `baton gateway`: the shipped
//! `deploy/prometheus/prometheus.yml` itself (its target pointed at the test's gateway, its
//! intervals at 1 s) with the shipped alert rules beside it, loaded by the server itself, and a baton metric read back through Prometheus's HTTP API, as a
//! dashboard or an alert would see it. Skips, saying so, where `prometheus` is not installed;
//! CI installs it (`.ci/run`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{EngineProcess, start_gateway_with_metrics, wait_for_socket, write_config};

/// Prometheus starts, scrapes and evaluates on its own clock; on a loaded machine the first
/// sample can take a while.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// A running Prometheus; killed when dropped, its log kept for failure messages.
struct Prometheus {
    child: Child,
    log: PathBuf,
    web: SocketAddr,
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed() -> bool {
    Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn start_prometheus(dir: &Path, target: SocketAddr) -> Prometheus {
    // What README has an operator do: both shipped files side by side in one directory, the
    // config naming the rules by their relative path. Only the scrape target (this test's
    // gateway) and the intervals (1 s instead of 5 s, so the test waits less) change, each
    // found exactly once, so a shipped file that drifts fails here rather than on a venue.
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    std::fs::copy(deploy.join("baton-rules.yml"), dir.join("baton-rules.yml"))
        .expect("copy baton-rules.yml");
    let shipped =
        std::fs::read_to_string(deploy.join("prometheus.yml")).expect("read prometheus.yml");
    let mut text = shipped.clone();
    for (from, to) in [
        ("\"127.0.0.1:9880\"".to_owned(), format!("\"{target}\"")),
        (
            "scrape_interval: 5s".to_owned(),
            "scrape_interval: 1s".to_owned(),
        ),
        (
            "evaluation_interval: 5s".to_owned(),
            "evaluation_interval: 1s".to_owned(),
        ),
        (
            "scrape_timeout: 5s".to_owned(),
            "scrape_timeout: 1s".to_owned(),
        ),
    ] {
        assert_eq!(
            text.matches(&from).count(),
            1,
            "deploy/prometheus/prometheus.yml no longer has {from} once:\n{shipped}"
        );
        text = text.replacen(&from, &to, 1);
    }
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, text).expect("write prometheus.yml");
    let log = dir.join("prometheus.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        // Port 0: Prometheus logs the port it got, so none is picked here and reused.
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .expect("spawn prometheus");
    let web = listening_addr(&mut child, &log);
    Prometheus { child, log, web }
}

/// The web address from Prometheus's `msg="Listening on" address=ADDR` log line, waited for
/// within `PROMETHEUS_WAIT`; Prometheus is killed if it never says.
fn listening_addr(child: &mut Child, log: &Path) -> SocketAddr {
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    loop {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let bound = log
            .lines()
            .filter(|line| line.contains("msg=\"Listening on\""))
            .find_map(|line| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix("address="))
            })
            .and_then(|addr| addr.parse().ok());
        if let Some(addr) = bound {
            return addr;
        }
        if let Some(status) = child.try_wait().expect("poll prometheus") {
            panic!("prometheus exited ({status}) before listening; its log:\n{log}");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("prometheus said nowhere where it listens; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One GET against Prometheus's HTTP API; the JSON body, or `None` while it is not answering.
/// HTTP/1.0, so the body comes whole (no chunked encoding) and ends when the server closes.
fn api(web: SocketAddr, path_and_query: &str) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect(web).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: {web}\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

#[test]
fn prometheus_scrapes_the_gateway_and_serves_its_metrics_back() {
    if !installed() {
        eprintln!(
            "SKIPPED: `prometheus` is not installed (apt-get install prometheus); CI installs it"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), 3, "");
    // With an engine, as in production: a gateway without one reports no sessions in its status.
    let engine = EngineProcess::start(&config, dir.path(), "blue");
    wait_for_socket(&dir.path().join("blue.sock"));
    let (_gateway, metrics) = start_gateway_with_metrics(dir.path(), &engine.addr);
    let prometheus = start_prometheus(dir.path(), metrics);

    let deadline = Instant::now() + PROMETHEUS_WAIT;
    let value = loop {
        let answer = api(
            prometheus.web,
            "/api/v1/query?query=baton_sessions_configured",
        );
        let value = answer.as_ref().and_then(|json| {
            let sample = json["data"]["result"].as_array()?.first()?.clone();
            Some((sample["metric"]["job"].clone(), sample["value"][1].clone()))
        });
        if let Some(value) = value {
            break value;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned baton_sessions_configured (last answer {answer:?}); its log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(value.0, "baton", "scraped by the job of the config");
    assert_eq!(value.1, "3", "the gateway's three sessions");

    // The shipped rules loaded into the same server: every alert of baton-rules.yml is there.
    let rules = api(prometheus.web, "/api/v1/rules").expect("rules answer");
    let names: Vec<&str> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .filter_map(|rule| rule["name"].as_str())
        .collect();
    for alert in [
        "BatonEngineDown",
        "BatonStandbyLagging",
        "BatonCanaryGateBreached",
        "BatonSymbolsHalted",
        "BatonSessionLoggedOff",
        "BatonAuditChainBroken",
        "BatonLogLinesDropped",
        "BatonDiskSpaceLow",
    ] {
        assert!(names.contains(&alert), "{alert} not loaded: {names:?}");
    }
}
