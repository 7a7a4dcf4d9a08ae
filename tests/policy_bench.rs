//! Load benchmark of the policy service (issue 12): the CPU time it spends per request at
//! 128 concurrent connections, against a null policy service in the same run.
//!
//! ```text
//! cargo test --release --test policy_bench -- --ignored --nocapture   # or bench/policy-bench
//! BENCH_QUICK=1 cargo test --release --test policy_bench -- --ignored --nocapture
//! ```
//!
//! The real binary runs with only its policy service on and the configuration of the
//! Postfix benchmark (300 whitelisted mailboxes, 200 own networks, 43 domains, a
//! `reply_url`, `trusted_networks = []`, log level info, its log written to a file). The
//! load generator opens 1, then 128 connections (`BENCH_CONNECTIONS=1,128`) and on each, as Postfix's
//! smtpd does, sends a request of every attribute Postfix 3.7 sends at RCPT, waits for
//! the answer, and sends the next: one in ten greets with an IP literal and is refused
//! (a log line each), one in ten is a whitelisted or exempted recipient, the rest are
//! good HELOs. Every answer is checked. Rounds of `BENCH_DURATION` seconds alternate
//! bogus-helo-milter's service and the null one (tests/common/null_policy.rs: a thread
//! per connection that answers DUNNO); the connections are opened before and closed
//! after the measured span. The service's CPU time is utime + stime from /proc/PID/stat
//! (the null service's: its threads' CPU clocks), divided by the requests answered.
//! Nothing about speed is asserted (machines are noisy): the figures are printed, with
//! the target (< 100 µs of CPU per request) met or missed.

mod common;

use common::{
    bench::{cpu_time, realistic_config},
    milter::Milter,
    null_policy::NullPolicy,
};
use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Barrier,
    },
    thread,
    time::{Duration, Instant},
};

const URL: &str = "https://www.example.com/bogus-helo.html";

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

struct Settings {
    quick: bool,
    /// Concurrent connections of each measurement: `BENCH_CONNECTIONS=1,128`.
    concurrency: Vec<usize>,
    rounds: usize,
    duration: Duration,
}

fn settings() -> Settings {
    let quick = std::env::var("BENCH_QUICK")
        .map(|v| !matches!(v.trim(), "" | "0" | "no" | "false"))
        .unwrap_or(cfg!(debug_assertions));
    Settings {
        quick,
        concurrency: std::env::var("BENCH_CONNECTIONS")
            .ok()
            .map(|list| {
                list.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .filter(|&n| n > 0)
                    .collect()
            })
            .filter(|list: &Vec<usize>| !list.is_empty())
            .unwrap_or_else(|| vec![1, 128]),
        rounds: env_number("BENCH_ROUNDS").unwrap_or(if quick { 2 } else { 5 }) as usize,
        duration: Duration::from_secs(env_number("BENCH_DURATION").unwrap_or(if quick {
            1
        } else {
            5
        })),
    }
}

/// A request as Postfix 3.7 sends it at RCPT, and the answer bogus-helo-milter owes it.
fn request(n: usize) -> (Vec<u8>, String) {
    let (helo, rcpt, expected) = match n % 10 {
        0 => (
            "[192.0.2.9]".to_string(),
            format!("user{n}@example.org"),
            format!("action=550 5.7.1 bogus helo {URL}"),
        ),
        // Bogus, but whitelisted.
        1 => (
            "[192.0.2.9]".to_string(),
            format!(
                "private{}@customer{}.example",
                n % 299 + 1,
                (n % 299 + 1) % 40
            ),
            "action=DUNNO".to_string(),
        ),
        _ => (
            format!("mail{n}.sender.example"),
            format!("user{n}@example.com"),
            "action=DUNNO".to_string(),
        ),
    };
    let attributes = [
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("protocol_name", "ESMTP"),
        ("client_address", "198.51.100.7"),
        ("client_name", "unknown"),
        ("client_port", "41234"),
        ("reverse_client_name", "unknown"),
        ("server_address", "192.0.2.25"),
        ("server_port", "25"),
        ("helo_name", &helo),
        ("sender", "news@sender.example"),
        ("recipient", &rcpt),
        ("recipient_count", "0"),
        ("queue_id", ""),
        ("instance", "7a1.656c2f0e.1a2b3.0"),
        ("size", "4096"),
        ("etrn_domain", ""),
        ("stress", ""),
        ("sasl_method", ""),
        ("sasl_username", ""),
        ("sasl_sender", ""),
        ("ccert_subject", ""),
        ("ccert_issuer", ""),
        ("ccert_fingerprint", ""),
        ("ccert_pubkey_fingerprint", ""),
        ("encryption_protocol", ""),
        ("encryption_cipher", ""),
        ("encryption_keysize", "0"),
        ("policy_context", ""),
        ("compatibility_level", "3.6"),
        ("mail_version", "3.7.11"),
    ];
    let mut text: String = attributes
        .iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect();
    text.push('\n');
    (text.into_bytes(), expected)
}

/// What one round measured.
struct Round {
    requests: u64,
    wall: Duration,
    cpu: Duration,
    /// Every request's round trip, sorted.
    latencies: Vec<Duration>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }

    fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests as f64
    }

    fn latency_ms(&self, p: f64) -> f64 {
        let n = self.latencies.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies[rank.clamp(1, n) - 1].as_secs_f64() * 1000.0
    }
}

/// One round against `addr`: `connections` connections, each sending requests in turn
/// for `duration`. `cpu` reads the service's CPU time; `check` compares the answers.
fn round(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    cpu: &dyn Fn() -> Duration,
    check: bool,
) -> Round {
    let requests: Arc<Vec<(Vec<u8>, String)>> = Arc::new((0..1000).map(request).collect());
    let start_line = Arc::new(Barrier::new(connections + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let (requests, start_line, stop) = (requests.clone(), start_line.clone(), stop.clone());
            thread::spawn(move || {
                let stream = TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut latencies = Vec::new();
                let mut answer = String::new();
                start_line.wait();
                let mut n = c * 37;
                while !stop.load(Ordering::Relaxed) {
                    let (request, expected) = &requests[n % requests.len()];
                    n += 1;
                    let sent = Instant::now();
                    writer.write_all(request).expect("send a request");
                    answer.clear();
                    while !answer.ends_with("\n\n") {
                        let read = reader.read_line(&mut answer).expect("read an answer");
                        assert!(read > 0, "the service closed a connection");
                    }
                    latencies.push(sent.elapsed());
                    if check {
                        assert_eq!(answer.trim_end(), expected, "wrong answer");
                    }
                }
                // The connection is closed after the measured span (see below).
                start_line.wait();
                latencies
            })
        })
        .collect();
    start_line.wait();
    let cpu_before = cpu();
    let started = Instant::now();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    // Each connection finishes the request it has under way, then waits here with its
    // connection still open, so that closing is not measured.
    start_line.wait();
    let wall = started.elapsed();
    let cpu = cpu().saturating_sub(cpu_before);
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a load thread failed"))
        .collect();
    latencies.sort();
    Round {
        requests: latencies.len() as u64,
        wall,
        cpu,
        latencies,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[test]
#[ignore = "benchmark: bench/policy-bench"]
fn policy_service_cpu_per_request() {
    let settings = settings();
    let most = settings.concurrency.iter().copied().max().unwrap_or(1);
    let limit = common::load::raise_open_files_limit();
    assert!(
        limit as usize > most * 2 + 64,
        "open files limit {limit} is too low for {most} connections"
    );
    let service = Milter::start_policy(&realistic_config(), false);
    let null = NullPolicy::start();
    println!(
        "policy service load benchmark ({} mode): {:?} connections, {} rounds of {} s each \
         alternating bogus-helo-milter ({}) and a null policy service; load average {}",
        if settings.quick { "quick" } else { "full" },
        settings.concurrency,
        settings.rounds,
        settings.duration.as_secs(),
        common::milter::bin().display(),
        load()
    );
    let pid = service.pid();
    let ours_cpu = move || cpu_time(pid);
    let null_cpu = || null.cpu();
    // Warm-up, untimed.
    round(
        service.addr(),
        most,
        Duration::from_millis(300),
        &ours_cpu,
        true,
    );
    let mut table = format!(
        "\n{:<12} {:>5} {:>10} {:>14} {:>10} {:>10} {:>10}\n",
        "service", "conns", "req/s", "µs CPU/req", "p50 ms", "p99 ms", "requests"
    );
    let mut verdicts = String::new();
    for &connections in &settings.concurrency {
        println!("\n{connections} connection(s); load average {}", load());
        let mut ours = Vec::new();
        let mut baseline = Vec::new();
        for n in 1..=settings.rounds {
            let o = round(
                service.addr(),
                connections,
                settings.duration,
                &ours_cpu,
                true,
            );
            let b = round(
                null.addr(),
                connections,
                settings.duration,
                &null_cpu,
                false,
            );
            println!(
                "  round {n}: policy {:>7.0} req/s {:>6.1} µs CPU/req   null-policy {:>7.0} req/s {:>6.1} µs CPU/req",
                o.rate(),
                o.cpu_us(),
                b.rate(),
                b.cpu_us(),
            );
            ours.push(o);
            baseline.push(b);
        }
        let summary = |rounds: &[Round]| {
            (
                median(rounds.iter().map(Round::rate).collect()),
                median(rounds.iter().map(Round::cpu_us).collect()),
                median(rounds.iter().map(|r| r.latency_ms(50.0)).collect()),
                median(rounds.iter().map(|r| r.latency_ms(99.0)).collect()),
                rounds.iter().map(|r| r.requests).sum::<u64>(),
            )
        };
        let (o_rate, o_cpu, o_p50, o_p99, o_n) = summary(&ours);
        let (b_rate, b_cpu, b_p50, b_p99, b_n) = summary(&baseline);
        for (name, rate, cpu, p50, p99, n) in [
            ("policy", o_rate, o_cpu, o_p50, o_p99, o_n),
            ("null-policy", b_rate, b_cpu, b_p50, b_p99, b_n),
        ] {
            table.push_str(&format!(
                "{name:<12} {connections:>5} {rate:>10.0} {cpu:>14.1} {p50:>10.3} {p99:>10.3} {n:>10}\n"
            ));
        }
        table.push_str(&format!(
            "{:<12} {connections:>5} ratios policy/null-policy (medians): req/s {:.3}, CPU per request {:.3}, p50 latency {:.3}\n",
            "",
            o_rate / b_rate,
            o_cpu / b_cpu,
            o_p50 / b_p50,
        ));
        if connections == 128 {
            verdicts.push_str(&format!(
                "target (issue 12): < 100 µs of CPU per request at 128 connections: {} ({o_cpu:.1} µs)\n",
                if o_cpu < 100.0 { "met" } else { "missed" }
            ));
        }
    }
    print!("{table}{verdicts}");
    println!("load average at the end: {}", load());
    let log = service.log();
    assert!(!log.contains("warning:"), "the service warned:\n{log}");
    assert!(service.stop(), "the service did not stop cleanly");
}
