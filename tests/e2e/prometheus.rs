//! Prometheus against the milter (issue 13): Debian's `prometheus` scrapes the metrics
//! endpoint (`metrics_listen`) every second while mail goes through a real Postfix, and
//! PromQL over Prometheus's HTTP API must give exactly what the test sent, per front end.
//! Along the way: every series is there with 0 before the first mail, `promtool check
//! metrics` finds nothing to say about the endpoint's text, every expression of the
//! Grafana dashboard (monitoring/grafana-dashboard.json) returns data, and the alert rule
//! BogusHeloMilterReloadFailed (monitoring/alerts.yml) fires after a failed `reload PID`
//! (the packaged `systemctl reload`), and clears after a good one.
//!
//! Needs Postfix (`bash .ci/install-mtas`) and Debian's prometheus (`bash
//! .ci/install-prometheus`). The expected figures are the test's own: what it sent.

use crate::{
    bed::Bed,
    common::{milter::free_port, mta::Kind, smtp::Session, wait_until},
};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tempfile::TempDir;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const JOB: &str = "bogus-helo-milter";

/// What the test sends, one recipient a session (HELO, recipient, expected reply code).
const REJECTED: usize = 3;
const WHITELISTED: usize = 2;
const TEMPFAILED: usize = 1;
const GOOD_HELO: usize = 2;
const SESSIONS: usize = REJECTED + WHITELISTED + TEMPFAILED + GOOD_HELO;

/// The milter's configuration (after the test's socket lines and `bed::CONFIG_HEAD`).
fn config(metrics: SocketAddr) -> String {
    format!(
        r#"metrics_listen = "{metrics}"
whitelist = ["private@example.com"]
[domains."tempfail.example"]
action = "tempfail"
"#
    )
}

/// The same with an error in it, for a failed reload.
fn broken_config(metrics: SocketAddr) -> String {
    format!("metrics_listen = \"{metrics}\"\naction = \"refuse-everything\"\n")
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[test]
#[ignore = "needs Postfix and Prometheus: bash .ci/install-mtas; bash .ci/install-prometheus"]
fn milter_counters_match_what_was_sent() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bed = Bed::start(Kind::Postfix, &config(metrics));
    check_front_end(bed, metrics, "milter", "policy");
}

#[test]
#[ignore = "needs Postfix and Prometheus: bash .ci/install-mtas; bash .ci/install-prometheus"]
fn policy_counters_match_what_was_sent() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bed = Bed::start_policy(&config(metrics));
    check_front_end(bed, metrics, "policy", "milter");
}

/// The whole check for the front end `front_end` (the one `bed` runs); `other` is the
/// front end that must stay at 0.
fn check_front_end(mut bed: Bed, metrics: SocketAddr, front_end: &str, other: &str) {
    let started = unix_now();
    let prometheus = Prometheus::start(metrics, &repo_file("monitoring/alerts.yml"));
    let fe = format!("job=\"{JOB}\", front_end=\"{front_end}\"");
    let other_fe = format!("job=\"{JOB}\", front_end=\"{other}\"");

    // --- Before any mail: scraped, every series there with 0. ---------------------------
    if !prometheus.wait_value(
        &format!("up{{job=\"{JOB}\"}}"),
        1.0,
        Duration::from_secs(30),
    ) {
        bed.problem(format!(
            "the milter's endpoint was never scraped successfully{}",
            prometheus.describe()
        ));
        bed.finish();
        return;
    }
    let series_counts = [
        // 2 front ends × 5 rules × 4 actions.
        ("count(bogus_helo_milter_verdicts_total)", 56.0),
        ("sum(bogus_helo_milter_verdicts_total)", 0.0),
        // 2 front ends × 5 reasons.
        ("count(bogus_helo_milter_exemptions_total)", 10.0),
        ("sum(bogus_helo_milter_exemptions_total)", 0.0),
        ("count(bogus_helo_milter_config_reloads_total)", 2.0),
        ("sum(bogus_helo_milter_config_reloads_total)", 0.0),
        // 2 front ends × (13 buckets + `+Inf`).
        ("count(bogus_helo_milter_rcpt_answer_seconds_bucket)", 28.0),
        ("sum(bogus_helo_milter_rcpt_answer_seconds_count)", 0.0),
        ("count(bogus_helo_milter_connections_open)", 2.0),
        ("count(bogus_helo_milter_connections_total)", 2.0),
        (
            "count(count by (front_end) (bogus_helo_milter_session_errors_total))",
            2.0,
        ),
        (
            "count(bogus_helo_milter_config_last_load_timestamp_seconds)",
            1.0,
        ),
        ("count(bogus_helo_milter_build_info)", 1.0),
    ];
    for (query, expected) in series_counts {
        prometheus.expect(&mut bed, query, expected);
    }
    for reason in ["whitelist", "authenticated", "trusted", "off"] {
        prometheus.expect(
            &mut bed,
            &format!("count(bogus_helo_milter_exemptions_total{{reason=\"{reason}\"}})"),
            2.0,
        );
    }
    prometheus.expect(
        &mut bed,
        &format!(
            "bogus_helo_milter_build_info{{job=\"{JOB}\", version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    let loaded = prometheus.value("bogus_helo_milter_config_last_load_timestamp_seconds");
    match loaded {
        Some(t) if t >= started.floor() - 10.0 && t <= unix_now() => {}
        other => bed.problem(format!(
            "config_last_load_timestamp_seconds {other:?}: expected the milter's start, \
             about {started}"
        )),
    }
    // The test harness probes the sockets before the test begins: count from here.
    let connections_before = prometheus
        .value(&format!("bogus_helo_milter_connections_total{{{fe}}}"))
        .unwrap_or(f64::NAN);
    let errors_before = prometheus
        .value(&format!(
            "sum(bogus_helo_milter_session_errors_total{{{fe}}})"
        ))
        .unwrap_or(f64::NAN);
    check_metrics_text(&mut bed, metrics);

    // --- The mail. ----------------------------------------------------------------------
    let sends: [(usize, &str, &str, u16); 4] = [
        (REJECTED, "[192.0.2.9]", "user@example.com", 550),
        (WHITELISTED, "[192.0.2.9]", "private@example.com", 250),
        (TEMPFAILED, "[192.0.2.9]", "b@tempfail.example", 450),
        (GOOD_HELO, "mail.example.net", "user@example.com", 250),
    ];
    for (times, helo, rcpt, code) in sends {
        for _ in 0..times {
            let outcome = bed.send(&Session::new(helo, &[rcpt]));
            let seen = outcome.rcpt(rcpt).map(|r| r.code);
            if seen != Some(code) {
                bed.problem(format!(
                    "HELO {helo}, RCPT TO:<{rcpt}>: expected {code}, got {seen:?}\n{}",
                    outcome.transcript()
                ));
            }
        }
    }
    let sent = unix_now();
    prometheus.scraped_after(&mut bed, sent, "the last message");

    // --- Exactly what was sent. ---------------------------------------------------------
    let expected = [
        (
            format!("bogus_helo_milter_verdicts_total{{{fe}, rule=\"ip\", action=\"reject\"}}"),
            REJECTED as f64,
        ),
        (
            format!("bogus_helo_milter_verdicts_total{{{fe}, rule=\"ip\", action=\"tempfail\"}}"),
            TEMPFAILED as f64,
        ),
        (
            "sum(bogus_helo_milter_verdicts_total)".to_string(),
            (REJECTED + TEMPFAILED) as f64,
        ),
        (
            format!("bogus_helo_milter_exemptions_total{{{fe}, reason=\"whitelist\"}}"),
            WHITELISTED as f64,
        ),
        (
            "sum(bogus_helo_milter_exemptions_total)".to_string(),
            WHITELISTED as f64,
        ),
        // Every RCPT is answered and timed, whatever the verdict.
        (
            format!("bogus_helo_milter_rcpt_answer_seconds_count{{{fe}}}"),
            SESSIONS as f64,
        ),
        (
            format!("bogus_helo_milter_rcpt_answer_seconds_bucket{{{fe}, le=\"+Inf\"}}"),
            SESSIONS as f64,
        ),
        (
            format!("bogus_helo_milter_rcpt_answer_seconds_count{{{other_fe}}}"),
            0.0,
        ),
        (
            format!("sum(bogus_helo_milter_connections_total{{{other_fe}}})"),
            0.0,
        ),
        (format!("up{{job=\"{JOB}\"}}"), 1.0),
        (
            "sum(bogus_helo_milter_config_reloads_total)".to_string(),
            0.0,
        ),
    ];
    for (query, value) in &expected {
        prometheus.expect(&mut bed, query, *value);
    }
    // The answer time of this tiny configuration is far below the highest bound (100 ms):
    // the highest finite bucket (cumulative, so the largest) holds every answer.
    prometheus.expect(
        &mut bed,
        &format!("max(bogus_helo_milter_rcpt_answer_seconds_bucket{{{fe}, le!=\"+Inf\"}})"),
        SESSIONS as f64,
    );
    let connections = prometheus
        .value(&format!("bogus_helo_milter_connections_total{{{fe}}}"))
        .unwrap_or(f64::NAN)
        - connections_before;
    match front_end {
        // Postfix opens a milter connection for each SMTP session.
        "milter" if connections != SESSIONS as f64 => bed.problem(format!(
            "milter connections during the test: {connections}, expected {SESSIONS}"
        )),
        // Postfix keeps a policy connection open between requests: at least one, at
        // most one a session.
        "policy" if !(1.0..=SESSIONS as f64).contains(&connections) => bed.problem(format!(
            "policy connections during the test: {connections}, expected 1 to {SESSIONS}"
        )),
        _ => {}
    }
    let errors = prometheus
        .value(&format!(
            "sum(bogus_helo_milter_session_errors_total{{{fe}}})"
        ))
        .unwrap_or(f64::NAN)
        - errors_before;
    if errors != 0.0 {
        bed.problem(format!(
            "{errors} session error(s) counted for sessions Postfix ended cleanly"
        ));
    }
    if front_end == "milter"
        && !prometheus.wait_value(
            &format!("bogus_helo_milter_connections_open{{{fe}}}"),
            0.0,
            Duration::from_secs(30),
        )
    {
        bed.problem(format!(
            "milter connections still open after every SMTP session ended: {:?}",
            prometheus.value(&format!("bogus_helo_milter_connections_open{{{fe}}}"))
        ));
    }
    check_dashboard(&mut bed, &prometheus);

    // --- A failed reload, then a good one. ----------------------------------------------
    const RELOAD_ALERT: &str =
        "ALERTS{alertname=\"BogusHeloMilterReloadFailed\", alertstate=\"firing\"}";
    prometheus.expect_empty(&mut bed, RELOAD_ALERT);
    prometheus.expect(
        &mut bed,
        "bogus_helo_milter_config_last_reload_successful",
        1.0,
    );
    // As systemd's ExecReload does it: `reload $MAINPID`, which fails on a bad file and
    // signals the milter all the same (issue 19 item 5).
    bed.write_config(&broken_config(metrics));
    let (code, line) = reload_command(&bed);
    if code != Some(2) || !line.contains("result=failed") {
        bed.problem(format!(
            "reload PID of a broken configuration: exit {code:?}, milter: {line}"
        ));
    }
    prometheus.scraped_after(&mut bed, unix_now(), "the failed reload");
    prometheus.expect(
        &mut bed,
        "bogus_helo_milter_config_reloads_total{result=\"failed\"}",
        1.0,
    );
    prometheus.expect(
        &mut bed,
        "bogus_helo_milter_config_reloads_total{result=\"ok\"}",
        0.0,
    );
    if prometheus.value("bogus_helo_milter_config_last_load_timestamp_seconds") != loaded {
        bed.problem("a failed reload changed config_last_load_timestamp_seconds");
    }
    prometheus.expect(
        &mut bed,
        "bogus_helo_milter_config_last_reload_successful",
        0.0,
    );
    if !prometheus.wait_present(RELOAD_ALERT, Duration::from_secs(30)) {
        bed.problem(format!(
            "BogusHeloMilterReloadFailed did not fire after a failed reload{}",
            prometheus.describe()
        ));
    }

    bed.write_config(&config(metrics));
    let before_reload = unix_now();
    let (code, line) = reload_command(&bed);
    if code != Some(0) || !line.contains("result=ok") {
        bed.problem(format!(
            "reload PID of the good configuration: exit {code:?}, milter: {line}"
        ));
    }
    prometheus.scraped_after(&mut bed, unix_now(), "the good reload");
    prometheus.expect(
        &mut bed,
        "bogus_helo_milter_config_last_reload_successful",
        1.0,
    );
    if !prometheus.wait_empty(RELOAD_ALERT, Duration::from_secs(30)) {
        bed.problem(format!(
            "BogusHeloMilterReloadFailed still fires after a good reload{}",
            prometheus.describe()
        ));
    }
    prometheus.expect(
        &mut bed,
        "bogus_helo_milter_config_reloads_total{result=\"ok\"}",
        1.0,
    );
    prometheus.expect(
        &mut bed,
        "bogus_helo_milter_config_reloads_total{result=\"failed\"}",
        1.0,
    );
    // Stored in milliseconds.
    match prometheus.value("bogus_helo_milter_config_last_load_timestamp_seconds") {
        Some(t) if t >= (before_reload * 1000.0).floor() / 1000.0 && t <= unix_now() => {}
        other => bed.problem(format!(
            "config_last_load_timestamp_seconds after the reload: {other:?}, expected \
             from {before_reload} on"
        )),
    }
    drop(prometheus);
    bed.finish();
}

/// `promtool check metrics` on the endpoint's text: no error, no lint.
/// `bogus-helo-milter reload PID` for the bed's milter, as systemd's `ExecReload` runs it;
/// its exit status and the milter's log line of the reload it caused.
fn reload_command(bed: &Bed) -> (Option<i32>, String) {
    const RESULT: &str = "event=reload result=";
    let milter = bed.milter();
    let before = milter.log().matches(RESULT).count();
    let code = Command::new(crate::common::milter::BIN)
        .arg("-c")
        .arg(milter.config_path())
        .args(["reload", &milter.pid().to_string()])
        .output()
        .map_or(None, |out| out.status.code());
    milter.wait_for(Duration::from_secs(30), |log| {
        log.matches(RESULT).count() > before
    });
    let log = milter.log();
    let line = log.lines().filter(|l| l.contains(RESULT)).nth(before);
    (code, line.unwrap_or("(no reload logged)").to_string())
}

fn check_metrics_text(bed: &mut Bed, metrics: SocketAddr) {
    let body = match http_get(metrics, "/metrics") {
        Ok((200, body)) => body,
        other => {
            bed.problem(format!("GET http://{metrics}/metrics: {other:?}"));
            return;
        }
    };
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (bash .ci/install-prometheus)");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bed.problem(format!(
            "promtool check metrics: {}\n{said}\n--- the endpoint's text ---\n{body}",
            out.status
        ));
    }
}

/// Every query of the dashboard, with Grafana's variables given plain values, returns
/// at least one series from the real milter.
fn check_dashboard(bed: &mut Bed, prometheus: &Prometheus) {
    let path = repo_file("monitoring/grafana-dashboard.json");
    let text = fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard["panels"], &mut exprs);
    if exprs.len() < 10 {
        bed.problem(format!(
            "only {} queries found in the dashboard",
            exprs.len()
        ));
    }
    for (title, expr) in exprs {
        let query = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$front_end", "milter|policy");
        match prometheus.query(&query) {
            Ok(result) if !result.is_empty() => {}
            other => bed.problem(format!(
                "dashboard panel {title:?}: {query} gave {other:?}, expected data"
            )),
        }
    }
}

fn collect_exprs(panels: &Value, out: &mut Vec<(String, String)>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.to_string(), expr.to_string()));
            }
        }
        collect_exprs(&panel["panels"], out);
    }
}

/// One series of an instant query's result.
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

impl std::fmt::Debug for Sample {
    /// As Prometheus's web interface shows it: `name{label="value", ...} value`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.labels.get("__name__").map_or("", String::as_str);
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        write!(f, "{name}{{{}}} {}", labels.join(", "), self.value)
    }
}

/// Debian's `prometheus` on a free loopback port, scraping only the milter every second,
/// with `rules` loaded and evaluated every second; its data in a temp dir. Killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr, rules: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules:?}
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ["{target}"]
"#
            ),
        )
        .expect("write prometheus.yml");
        let log_path = dir.path().join("prometheus.log");
        // A port picked here can be taken before Prometheus binds it: then another.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = fs::File::create(&log_path).expect("log file");
            let mut child = Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("run prometheus (bash .ci/install-prometheus)");
            if wait_ready(&mut child, addr, Duration::from_secs(60)) {
                return Self { child, addr, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            if !log.contains("address already in use") {
                panic!("prometheus did not get ready on {addr}; log:\n{log}");
            }
        }
        panic!("prometheus found no free loopback port");
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The scrape targets as Prometheus sees them, and the end of its log.
    fn describe(&self) -> String {
        let targets = http_get(self.addr, "/api/v1/targets")
            .map(|(_, body)| body)
            .unwrap_or_else(|e| e.to_string());
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        format!(
            "\n--- prometheus targets ---\n{targets}\n--- prometheus log (end) ---\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// An instant query now: its result, a vector of series.
    fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = http_get(self.addr, &path).map_err(|e| e.to_string())?;
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        if json["data"]["resultType"] != "vector" {
            return Err(format!("not a vector: {body}"));
        }
        let mut samples = Vec::new();
        for series in json["data"]["result"].as_array().into_iter().flatten() {
            let labels = series["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            // [ <unix time>, "<value>" ]
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("no value in {series}"))?;
            samples.push(Sample { labels, value });
        }
        Ok(samples)
    }

    /// The value of a query that gives exactly one series.
    fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql) {
            Ok(samples) if samples.len() == 1 => Some(samples[0].value),
            _ => None,
        }
    }

    /// Records a problem unless `promql` gives exactly one series of value `expected`.
    fn expect(&self, bed: &mut Bed, promql: &str, expected: f64) {
        match self.query(promql) {
            Ok(samples) if samples.len() == 1 && samples[0].value == expected => {}
            other => bed.problem(format!("{promql}: expected {expected}, got {other:?}")),
        }
    }

    /// Records a problem unless `promql` gives no series.
    fn expect_empty(&self, bed: &mut Bed, promql: &str) {
        match self.query(promql) {
            Ok(samples) if samples.is_empty() => {}
            other => bed.problem(format!("{promql}: expected nothing, got {other:?}")),
        }
    }

    fn wait_value(&self, promql: &str, expected: f64, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let done = self.value(promql) == Some(expected);
            if !done {
                sleep(Duration::from_millis(200));
            }
            done
        })
    }

    /// Waits until `promql` gives no series (a resolved alert leaves `ALERTS`).
    fn wait_empty(&self, promql: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let done = self.query(promql).is_ok_and(|s| s.is_empty());
            if !done {
                sleep(Duration::from_millis(200));
            }
            done
        })
    }

    fn wait_present(&self, promql: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let done = self.query(promql).is_ok_and(|s| !s.is_empty());
            if !done {
                sleep(Duration::from_millis(200));
            }
            done
        })
    }

    /// Waits for a successful scrape that started after `t` (unix time), when `what`
    /// was done; records a problem if none comes in 30 s.
    fn scraped_after(&self, bed: &mut Bed, t: f64, what: &str) {
        if !self.wait_scraped_after(t, Duration::from_secs(30)) {
            bed.problem(format!("no scrape after {what}{}", self.describe()));
        }
        self.expect(bed, &format!("up{{job=\"{JOB}\"}}"), 1.0);
    }

    /// Waits for a scrape that started after `t` (unix time): its samples hold
    /// everything the milter counted before `t` (if it succeeded: `up` says).
    fn wait_scraped_after(&self, t: f64, timeout: Duration) -> bool {
        // The sample's own time only for a plain selector: `timestamp(up == 1)` would
        // give the query's time.
        let query = format!("timestamp(up{{job=\"{JOB}\"}})");
        wait_until(timeout, || {
            let done = self.value(&query).is_some_and(|scraped| scraped > t);
            if !done {
                sleep(Duration::from_millis(200));
            }
            done
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until Prometheus answers /-/ready (true), or exits, or `timeout` passes.
fn wait_ready(child: &mut Child, addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(http_get(addr, "/-/ready"), Ok((200, _))) {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
    false
}

/// A minimal HTTP/1.0 GET (the server closes the connection after the body, so no
/// chunking and no length to track): the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no end of headers in {response:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
