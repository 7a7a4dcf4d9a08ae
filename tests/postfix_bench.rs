//! End-to-end benchmark (issue 5): Postfix's own `smtp-source` against a private Postfix
//! instance (the e2e harness's, tests/common/mta.rs), with no milter, with the milter over
//! TCP and with the milter over a unix socket, in one run; and (issue 12) with the policy
//! service instead (`policy`: the README's `smtpd_recipient_restrictions =
//! check_policy_service inet:127.0.0.1:PORT`, the binary with its milter socket off) and
//! with a null policy service in its place (`null-policy`, tests/common/null_policy.rs:
//! it answers DUNNO to everything), with the policy service's targets printed at the
//! end. `BENCH_TARGETS=tcp,policy,null-policy` measures only those (and `none`).
//!
//! ```text
//! cargo test --release --test postfix_bench -- --ignored --nocapture   # or bench/postfix-bench
//! BENCH_QUICK=1 cargo test --release --test postfix_bench -- --ignored --nocapture
//! ```
//!
//! Three Postfix instances run side by side, identical but for `smtpd_milters`: none,
//! `inet:127.0.0.1:PORT`, `unix:/tmp/.../milter.sock` (the instances run without chroot).
//! The milter runs twice (once per socket) with a configuration of realistic size (the one
//! of bench/protocol-bench: 300 whitelisted mailboxes, 200 own networks, 43 domains, and
//! `trusted_networks = []` so that the loopback client is judged like any other). Every
//! message greets with a good HELO, so it is accepted and delivered to the discard
//! transport; the benchmark checks that every message was accepted and delivered and none
//! refused, and asserts nothing about speed (machines are noisy).
//!
//! For each scenario (smtp-source's `-s` parallel sessions, `-m` messages, `-d` several
//! messages per connection or one connection per message), the rounds alternate none, tcp,
//! unix, none, tcp, unix, ...; a round's rate is messages ÷ smtp-source's wall time (the
//! queue is left to drain before the next round, outside the timing). Printed: medians,
//! ranges, the CPU per message of Postfix (all its processes) and of the milter, the
//! ratios tcp/none and unix/none of the medians and of the CPU per message, and, at one
//! session (`-s 1`), the latency of each message (timestamped from smtp-source's `-c`
//! counter: p50/p90/p99/max and how many took over 25 ms, i.e. the ~40 ms TCP stall).
//!
//! Environment: `BENCH_QUICK=1` (a few hundred messages, about 20 s; the default for a
//! debug build, so that `cargo test -- --include-ignored` stays short), `BENCH_QUICK=0`
//! (the full run, the default for `--release`), `BENCH_ROUNDS=N` (rounds of each target
//! per scenario), `BENCH_RCPTS=N` (recipients per message), `BENCH_MILTER_BIN=/path`
//! (benchmark another build of the milter), `BENCH_MILTERS=a=/path/a,b=/path/b` (several
//! builds in the same run: targets tcp:a, unix:a, tcp:b, unix:b, each against none).

mod common;

use common::{
    bench::{cpu_time, proc_stat, realistic_config, ticks_to_duration},
    milter::Milter,
    mta::{postfix_policy_snippet, Mta},
    null_policy::NullPolicy,
};
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    fmt::Write as _,
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
/// A good HELO: a name, not an address, not one of ours, not the recipients' domain.
const HELO: &str = "mail.sender.example";
const SENDER: &str = "news@sender.example";
/// smtp-source prepends a number to it for each recipient (`-N`, `-r`): `1rcpt@...`.
const RCPT: &str = "rcpt@example.com";
/// Message body bytes (`-l`), headers not included: a small message, so that Postfix's
/// own work per message (queue file, fsync, delivery) does not hide the milter's cost.
const BODY_BYTES: u32 = 4096;

#[derive(Clone, Copy, Debug)]
struct Scenario {
    /// smtp-source `-s`: SMTP sessions in parallel.
    sessions: u32,
    /// `-m`: messages in a round.
    messages: u32,
    /// `-d`: the messages of a session share its connection (else one connection each).
    keep_connection: bool,
    /// `-r`: recipients per message.
    rcpts: u32,
}

impl Scenario {
    fn label(&self) -> String {
        format!(
            "-s {} -m {}{}{}",
            self.sessions,
            self.messages,
            if self.keep_connection { " -d" } else { "" },
            if self.rcpts > 1 {
                format!(" -r {}", self.rcpts)
            } else {
                String::new()
            }
        )
    }

    fn describe(&self) -> String {
        let per_conn = if self.keep_connection {
            format!(
                "{} messages per connection",
                self.messages.div_ceil(self.sessions)
            )
        } else {
            "one message per connection".to_string()
        };
        format!(
            "{} parallel session(s), {per_conn}, {} recipient(s) each",
            self.sessions, self.rcpts
        )
    }
}

struct Settings {
    quick: bool,
    rounds: usize,
    scenarios: Vec<Scenario>,
    /// No new round starts after this much time; the medians are of the rounds done.
    budget: Duration,
    /// One smtp-source run longer than this fails the benchmark.
    run_timeout: Duration,
}

fn env_flag(name: &str) -> Option<bool> {
    std::env::var(name)
        .ok()
        .map(|v| !matches!(v.trim(), "" | "0" | "no" | "false"))
}

fn settings() -> Settings {
    // A debug build measures a debug milter: only good for the smoke run.
    let quick = env_flag("BENCH_QUICK").unwrap_or(cfg!(debug_assertions));
    let rcpts = std::env::var("BENCH_RCPTS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(1);
    let s = |sessions, messages, keep_connection| Scenario {
        sessions,
        messages,
        keep_connection,
        rcpts,
    };
    let (rounds, scenarios, budget) = if quick {
        (
            2,
            vec![s(10, 100, false), s(10, 100, true), s(1, 20, false)],
            Duration::from_secs(60),
        )
    } else {
        (
            5,
            vec![
                s(10, 2000, false),
                s(10, 2000, true),
                s(1, 200, false),
                s(1, 200, true),
            ],
            Duration::from_secs(20 * 60),
        )
    };
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(rounds);
    Settings {
        quick,
        rounds,
        scenarios,
        budget,
        run_timeout: Duration::from_secs(if quick { 60 } else { 300 }),
    }
}

/// One Postfix instance and the milter or policy service it uses, if any.
struct Target {
    name: String,
    // Dropped in this order: Postfix first, then its milter or policy service.
    mta: Mta,
    /// bogus-helo-milter: as a milter, or (`policy`) as a policy service.
    milter: Option<Milter>,
    null_policy: Option<NullPolicy>,
    /// What main.cf says about the milter or policy service, for the header.
    main_cf: String,
    /// How far the Postfix log has been read.
    log_offset: usize,
}

/// What one round measured.
#[derive(Clone)]
struct Round {
    wall: Duration,
    /// The milter's or policy service's user + system CPU time during the round.
    milter_cpu: Option<Duration>,
    /// The CPU time of all of the Postfix instance's processes during the round, delivery
    /// of the round's messages included.
    postfix_cpu: Duration,
    /// The time each message took after the one before (from the start for the first):
    /// with one session, each message's latency, connection and QUIT included.
    gaps: Vec<Duration>,
}

impl Target {
    fn start(name: String, milter: Option<Milter>) -> Self {
        let spec = milter.as_ref().map(Milter::socket_spec);
        let mta = Mta::start_postfix_with(spec.as_deref(), "");
        Self {
            name,
            mta,
            main_cf: format!("smtpd_milters = {}", spec.as_deref().unwrap_or("(none)")),
            milter,
            null_policy: None,
            log_offset: 0,
        }
    }

    /// Postfix with the README's `check_policy_service` line: to bogus-helo-milter's
    /// policy service (`service`), or else to a null policy service.
    fn start_policy(name: &str, service: Option<Milter>) -> Self {
        let null_policy = service.is_none().then(NullPolicy::start);
        let addr = match (&service, &null_policy) {
            (Some(service), _) => service.addr(),
            (None, Some(null)) => null.addr(),
            (None, None) => unreachable!(),
        };
        let mta = Mta::start_postfix_policy(addr, "");
        Self {
            name: name.to_string(),
            mta,
            main_cf: postfix_policy_snippet(addr).trim().to_string(),
            milter: service,
            null_policy,
            log_offset: 0,
        }
    }

    /// The CPU time of the milter or policy service so far.
    fn service_cpu(&self) -> Option<Duration> {
        match (&self.milter, &self.null_policy) {
            (Some(m), _) => Some(cpu_time(m.pid())),
            (None, Some(null)) => Some(null.cpu()),
            (None, None) => None,
        }
    }

    /// Runs smtp-source for `scenario`, then waits until Postfix has delivered every
    /// message; panics (with the logs) when anything was refused or went wrong.
    fn round(&mut self, scenario: &Scenario, timeout: Duration) -> Round {
        let postfix_before = postfix_cpu(&self.mta);
        let cpu_before = self.service_cpu();
        let start = Instant::now();
        let output = run_smtp_source(scenario, self.mta.addr().port(), timeout);
        let wall = start.elapsed();
        let milter_cpu = match (cpu_before, self.service_cpu()) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let run = match output {
            Ok(run) => run,
            Err(e) => self.fail(&format!("smtp-source {}: {e}", scenario.label())),
        };
        if !run.status.success() || !run.stderr.is_empty() {
            self.fail(&format!(
                "smtp-source {} failed ({}) after {} messages: a message was not accepted\n{}",
                scenario.label(),
                run.status,
                run.done.len(),
                run.stderr
            ));
        }
        if run.done.len() != scenario.messages as usize {
            self.fail(&format!(
                "smtp-source {} counted {} messages",
                scenario.label(),
                run.done.len()
            ));
        }
        self.drain(u64::from(scenario.messages * scenario.rcpts), scenario);
        let postfix_cpu = postfix_cpu(&self.mta).saturating_sub(postfix_before);
        let mut previous = Duration::ZERO;
        let gaps = run
            .done
            .iter()
            .map(|&t| {
                let gap = t.saturating_sub(previous);
                previous = t;
                gap
            })
            .collect();
        Round {
            wall,
            milter_cpu,
            postfix_cpu,
            gaps,
        }
    }

    /// Follows the Postfix log until `expected` more deliveries are logged; any refusal,
    /// deferral, bounce or milter trouble fails the benchmark.
    fn drain(&mut self, expected: u64, scenario: &Scenario) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut sent = 0u64;
        loop {
            let (text, end) = self.mta.log_from(self.log_offset);
            self.log_offset = end;
            for line in text.lines() {
                if line.contains(" status=sent ") {
                    sent += 1;
                } else if line.contains(" reject: ")
                    || line.contains("milter-reject")
                    || line.contains(" status=deferred ")
                    || line.contains(" status=bounced ")
                    || (line.contains("warning:")
                        && (line.to_ascii_lowercase().contains("milter")
                            || line.contains("policy")))
                {
                    self.fail(&format!("{}: {line}", scenario.label()));
                }
            }
            if sent == expected {
                return;
            }
            if sent > expected {
                self.fail(&format!(
                    "{}: {sent} deliveries logged, expected {expected}",
                    scenario.label()
                ));
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "{}: only {sent} of {expected} deliveries logged after 120 s",
                    scenario.label()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let milter_log = self.milter.as_ref().map(Milter::log).unwrap_or_default();
        let log = self.mta.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        panic!(
            "{}: {what}\n--- last Postfix log lines ({}) ---\n{}\n--- milter log ---\n{}",
            self.name,
            self.mta.dir().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            milter_log
        );
    }
}

/// What smtp-source did.
struct SourceRun {
    status: ExitStatus,
    stderr: String,
    /// When each message's DATA completed (`-c` prints a counter then), from the start.
    done: Vec<Duration>,
}

/// Runs smtp-source against 127.0.0.1:`port`; kills it after `timeout`.
fn run_smtp_source(scenario: &Scenario, port: u16, timeout: Duration) -> Result<SourceRun, String> {
    let mut command = Command::new(SMTP_SOURCE);
    command
        .args(["-c", "-4", "-N", "-M", HELO, "-f", SENDER, "-t", RCPT])
        .args(["-l", &BODY_BYTES.to_string()])
        .args(["-s", &scenario.sessions.to_string()])
        .args(["-m", &scenario.messages.to_string()])
        .args(["-r", &scenario.rcpts.to_string()]);
    if scenario.keep_connection {
        command.arg("-d");
    }
    command
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("spawn {SMTP_SOURCE}: {e} (run .ci/install-mtas)"))?;
    let pid = Pid::from_raw(child.id() as i32);
    // smtp-source writes and flushes "N\r" as message N completes (and "\n" at the end):
    // timestamp each.
    let stdout = child.stdout.take().expect("piped stdout");
    let counter = thread::spawn(move || {
        let mut done = Vec::new();
        let mut stdout = stdout;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let now = start.elapsed();
            let ends = buf[..n].iter().filter(|&&b| b == b'\r').count();
            done.resize(done.len() + ends, now);
        }
        done
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(status) => status.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = rx.recv();
            Err(format!("did not finish in {timeout:?}"))
        }
    };
    let done = counter.join().unwrap_or_default();
    let stderr = errors.join().unwrap_or_default();
    Ok(SourceRun {
        status: status?,
        stderr,
        done,
    })
}

/// CPU time of a Postfix instance so far: its master process, the children it has
/// reaped, and its live children (smtpd, cleanup, qmgr, discard, ...) with theirs.
fn postfix_cpu(mta: &Mta) -> Duration {
    let Some(master) = fs::read_to_string(mta.dir().join("queue/pid/master.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return Duration::ZERO;
    };
    let mut total = 0;
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            match proc_stat(pid) {
                Some((ppid, own, reaped)) if ppid == master => total += own + reaped,
                _ => {}
            }
        }
    }
    let (_, own, reaped) = proc_stat(master).unwrap_or_default();
    ticks_to_duration(total + own + reaped)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The figures of one target in one scenario.
struct Summary {
    rate: f64,
    min: f64,
    max: f64,
    /// Wall time per message of one session, ms (`-s 1`: each message's latency).
    session_ms: f64,
    milter_us: Option<f64>,
    /// Postfix's CPU per message, µs (all its processes, delivery included).
    postfix_us: f64,
    rounds: usize,
    /// Per-message gaps of all rounds (see [`Round::gaps`]), sorted, in ms.
    gaps_ms: Vec<f64>,
}

impl Summary {
    fn gap_percentile(&self, p: f64) -> f64 {
        let n = self.gaps_ms.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.gaps_ms[rank.clamp(1, n) - 1]
    }

    /// Messages that took longer than `ms`.
    fn gaps_over(&self, ms: f64) -> usize {
        self.gaps_ms.iter().filter(|&&g| g > ms).count()
    }
}

/// A message slower than this at one session counts as stalled (the stall is ~40 ms,
/// Linux's minimum delayed-ACK time; Postfix alone takes a few ms).
const STALL_MS: f64 = 25.0;

fn summarize(scenario: &Scenario, rounds: &[Round]) -> Summary {
    let messages = f64::from(scenario.messages);
    let mut rates: Vec<f64> = rounds
        .iter()
        .map(|r| messages / r.wall.as_secs_f64())
        .collect();
    let rate = median(&mut rates);
    let milter_us = {
        let cpu: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r.milter_cpu)
            .map(|c| c.as_secs_f64())
            .collect();
        (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / (messages * cpu.len() as f64) * 1e6)
    };
    let postfix_us = rounds
        .iter()
        .map(|r| r.postfix_cpu.as_secs_f64())
        .sum::<f64>()
        / (messages * rounds.len() as f64)
        * 1e6;
    let mut gaps_ms: Vec<f64> = rounds
        .iter()
        .flat_map(|r| r.gaps.iter().map(|g| g.as_secs_f64() * 1000.0))
        .collect();
    gaps_ms.sort_by(f64::total_cmp);
    Summary {
        rate,
        min: rates.first().copied().unwrap_or(f64::NAN),
        max: rates.last().copied().unwrap_or(f64::NAN),
        session_ms: f64::from(scenario.sessions) / rate * 1000.0,
        milter_us,
        postfix_us,
        rounds: rounds.len(),
        gaps_ms,
    }
}

#[test]
#[ignore = "benchmark, needs Postfix (bash .ci/install-mtas): bench/postfix-bench"]
fn postfix_smtp_source() {
    assert!(
        Path::new(SMTP_SOURCE).exists(),
        "{SMTP_SOURCE} missing: run .ci/install-mtas (package postfix)"
    );
    let settings = settings();
    let started = Instant::now();
    let load_before = load();
    let config = realistic_config();
    let mut targets = vec![Target::start("none".into(), None)];
    let builds = milter_builds();
    for (label, bin) in &builds {
        for unix in [false, true] {
            let name = match (label.is_empty(), unix) {
                (true, false) => "tcp".to_string(),
                (true, true) => "unix".to_string(),
                (false, false) => format!("tcp:{label}"),
                (false, true) => format!("unix:{label}"),
            };
            if !wanted(&name) {
                continue;
            }
            let milter = Milter::start_from(bin, &config, unix);
            targets.push(Target::start(name, Some(milter)));
        }
    }
    if wanted("policy") {
        let service = Milter::start_policy(&config, false);
        targets.push(Target::start_policy("policy", Some(service)));
    }
    if wanted("null-policy") {
        targets.push(Target::start_policy("null-policy", None));
    }
    println!(
        "postfix end-to-end benchmark ({} mode): smtp-source -4 -N -M {HELO} -l {BODY_BYTES} \
         against Postfix {}",
        if settings.quick { "quick" } else { "full" },
        postfix_version(),
    );
    for (label, bin) in &builds {
        let label = if label.is_empty() { "milter" } else { label };
        println!("  {label}: {}", bin.display());
    }
    for t in &targets {
        println!("  {:<11} {}", t.name, t.main_cf);
    }
    println!("  load average at start: {load_before}");
    // Warm-up: smtpd, cleanup and the milters' first connections, untimed.
    let warm_up = Scenario {
        sessions: 5,
        messages: 20,
        keep_connection: false,
        rcpts: 1,
    };
    for t in targets.iter_mut() {
        t.round(&warm_up, settings.run_timeout);
    }

    let mut results: Vec<(Scenario, Vec<Vec<Round>>)> = Vec::new();
    let mut cut_short = false;
    'scenarios: for scenario in &settings.scenarios {
        println!(
            "\n{} ({}); load average {}",
            scenario.label(),
            scenario.describe(),
            load()
        );
        let mut per_target: Vec<Vec<Round>> = vec![Vec::new(); targets.len()];
        for round in 1..=settings.rounds {
            if started.elapsed() > settings.budget && round > 1 {
                cut_short = true;
                println!("  time budget spent: the rest of the rounds are skipped");
                results.push((*scenario, per_target));
                break 'scenarios;
            }
            let mut line = format!("  round {round}:");
            for (n, t) in targets.iter_mut().enumerate() {
                let r = t.round(scenario, settings.run_timeout);
                let _ = write!(
                    line,
                    "  {} {:.0}/s",
                    t.name,
                    f64::from(scenario.messages) / r.wall.as_secs_f64()
                );
                per_target[n].push(r);
            }
            println!("{line}");
        }
        results.push((*scenario, per_target));
    }

    let load_after = load();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{:<22} {:<10} {:>8} {:>15} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "scenario",
        "target",
        "msg/s",
        "range",
        "ms/msg/ses",
        "postfix µs",
        "service µs",
        "CPU µs",
        "rounds"
    );
    let mut stall = String::new();
    for (scenario, per_target) in &results {
        let summaries: Vec<Summary> = per_target
            .iter()
            .map(|rounds| summarize(scenario, rounds))
            .collect();
        for (t, s) in targets.iter().zip(&summaries) {
            let _ = writeln!(
                table,
                "{:<22} {:<10} {:>8.1} {:>15} {:>10.2} {:>10.0} {:>10} {:>10.0} {:>6}",
                scenario.label(),
                t.name,
                s.rate,
                format!("{:.0}–{:.0}", s.min, s.max),
                s.session_ms,
                s.postfix_us,
                s.milter_us
                    .map(|u| format!("{u:.0}"))
                    .unwrap_or_else(|| "-".into()),
                s.postfix_us + s.milter_us.unwrap_or(0.0),
                s.rounds
            );
        }
        let none = &summaries[0];
        let ratios: Vec<String> = targets
            .iter()
            .zip(&summaries)
            .skip(1)
            .map(|(t, s)| format!("{}/none {:.3}", t.name, s.rate / none.rate))
            .collect();
        let _ = writeln!(table, "{:<22} msg/s ratio  {}", "", ratios.join("   "));
        // What the throughput ratio would be on a machine that the benchmark saturates:
        // Postfix's CPU per message alone ÷ with the milter (Postfix's and the milter's).
        let cpu = |s: &Summary| s.postfix_us + s.milter_us.unwrap_or(0.0);
        let cpu_ratios: Vec<String> = targets
            .iter()
            .zip(&summaries)
            .skip(1)
            .map(|(t, s)| format!("{}/none {:.3}", t.name, cpu(none) / cpu(s)))
            .collect();
        let _ = writeln!(table, "{:<22} CPU ratio    {}", "", cpu_ratios.join("   "));
        if scenario.sessions == 1 {
            let _ = writeln!(stall, "  {}", scenario.label());
            for (t, s) in targets.iter().zip(&summaries) {
                let extra = s.session_ms - none.session_ms;
                let stalled = s.gaps_over(STALL_MS);
                let _ = writeln!(
                    stall,
                    "    {:<10} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>+8.2} {:>5}/{:<5}{}",
                    t.name,
                    s.session_ms,
                    s.gap_percentile(50.0),
                    s.gap_percentile(90.0),
                    s.gap_percentile(99.0),
                    s.gaps_ms.last().copied().unwrap_or(f64::NAN),
                    extra,
                    stalled,
                    s.gaps_ms.len(),
                    if stalled * 2 > s.gaps_ms.len() {
                        "  the ~40 ms stall shows"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    print!("{table}");
    print!("{}", policy_targets(&targets, &results));
    if !stall.is_empty() {
        println!(
            "\nper-message latency at one session, ms (the ~40 ms TCP stall of issue 5; \
             stalled = over {STALL_MS} ms):\n    {:<10} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>11}\n{stall}",
            "milter", "mean", "p50", "p90", "p99", "max", "vs none", "stalled"
        );
    }
    println!(
        "load average: {load_before} at start, {load_after} at end; {:.0} s{}",
        started.elapsed().as_secs_f64(),
        if cut_short { " (cut short)" } else { "" }
    );
    for t in &targets {
        if let Some(m) = &t.milter {
            let log = m.log();
            assert!(
                !log.contains("action=reject") && !log.contains("action=tempfail"),
                "{}: the milter refused a good HELO:\n{log}",
                t.name
            );
        }
    }
}

/// Whether the target `name` is measured: all by default, else those in `BENCH_TARGETS`
/// (`tcp,policy,null-policy`, say; `none`, the baseline, always is).
fn wanted(name: &str) -> bool {
    match std::env::var("BENCH_TARGETS") {
        Ok(list) => list.split(',').any(|t| t.trim() == name),
        Err(_) => true,
    }
}

/// The policy service against its targets (issue 12), per scenario: ≥ 0.92 of Postfix's
/// throughput without it, and no less than a null policy service in the same run.
fn policy_targets(targets: &[Target], results: &[(Scenario, Vec<Vec<Round>>)]) -> String {
    let find = |name: &str| targets.iter().position(|t| t.name == name);
    let (Some(policy), Some(null)) = (find("policy"), find("null-policy")) else {
        return String::new();
    };
    let milter = find("tcp");
    let mut out = String::from(
        "\npolicy service (issue 12 targets: policy/none >= 0.92, policy/null-policy >= 1.0):\n",
    );
    for (scenario, per_target) in results {
        let rate = |n: usize| summarize(scenario, &per_target[n]).rate;
        let none = rate(0);
        let (p, nl) = (rate(policy) / none, rate(null) / none);
        let _ = writeln!(
            out,
            "  {:<22} policy/none {p:.3} ({})   null-policy/none {nl:.3}   policy/null-policy {:.3} ({}){}",
            scenario.label(),
            if p >= 0.92 { "met" } else { "missed" },
            p / nl,
            if p >= nl { "met" } else { "missed" },
            milter.map_or(String::new(), |m| format!("   tcp milter/none {:.3}", rate(m) / none)),
        );
    }
    out
}

/// The milter builds to measure, with their labels (one unlabelled build by default).
fn milter_builds() -> Vec<(String, PathBuf)> {
    let Ok(list) = std::env::var("BENCH_MILTERS") else {
        return vec![(String::new(), common::milter::bin())];
    };
    list.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((label, path)) if !label.is_empty() && Path::new(path).is_file() => {
                (label.trim().to_string(), PathBuf::from(path.trim()))
            }
            _ => panic!("BENCH_MILTERS: expected label=/path/to/bogus-helo-milter, got {entry:?}"),
        })
        .collect()
}

fn postfix_version() -> String {
    Command::new("/usr/sbin/postconf")
        .args(["-dh", "mail_version"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
