//! The metrics endpoint as Prometheus sees it: the real binary with `metrics_listen` on a
//! free loopback port, milter sessions (indymilter-test) and policy requests sent to it,
//! then `GET /metrics` over plain TCP; every value checked is computed here from what
//! the test sent.

mod common;

use common::{
    dependency,
    milter::{free_port, Milter},
    raw::RawMta,
    wait_until,
};
use indymilter_test::{MacroStage, Status, TestConnection};
use nix::sys::signal::Signal;
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const PREFIX: &str = "bogus_helo_milter_";

/// An HTTP response: status code, headers (names in lower case), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (the method and path, and the rest of a request head) and reads the
/// response to the end: the server closes every connection after one response.
fn http(addr: SocketAddr, method: &str, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header");
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut body = String::new();
    reader.read_to_string(&mut body).expect("body");
    Response {
        status,
        headers,
        body,
    }
}

/// The samples of a scrape: `name{labels}` (as written) -> value.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let response = http(addr, "GET", "/metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    samples(&response.body)
}

fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {l:?}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// The value of the series `name` with exactly these labels, in the endpoint's order.
fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let key = match labels.is_empty() {
        true => format!("{PREFIX}{name}"),
        false => format!("{PREFIX}{name}{{{}}}", labels.join(",")),
    };
    *samples
        .get(&key)
        .unwrap_or_else(|| panic!("no series {key} in {samples:#?}"))
}

/// `config` plus `metrics_listen` on a free port of `host`; the endpoint's address.
fn with_metrics(config: &str, host: &str) -> (String, SocketAddr) {
    let addr: SocketAddr = format!("{host}:{}", free_port()).parse().unwrap();
    (format!("metrics_listen = \"{addr}\"\n{config}"), addr)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One milter session from a foreign client: HELO `helo`, then each recipient in turn;
/// the answers.
async fn milter_session(addr: SocketAddr, helo: &str, rcpts: &[&str]) -> Vec<Status> {
    let mut conn = TestConnection::open(addr).await.expect("open");
    conn.macros(
        MacroStage::Connect,
        [("j", "mx.example.com"), ("{daemon_addr}", "192.0.2.25")],
    )
    .await
    .unwrap();
    conn.connect("client.example.net", [198, 51, 100, 7])
        .await
        .unwrap();
    conn.helo(helo).await.unwrap();
    conn.mail(["<sender@example.org>"]).await.unwrap();
    let mut answers = Vec::new();
    for rcpt in rcpts {
        answers.push(conn.rcpt([format!("<{rcpt}>")]).await.unwrap());
    }
    conn.abort().await.unwrap();
    conn.close().await.unwrap();
    answers
}

/// One policy request at RCPT, as Postfix sends it (the attributes the service reads).
fn policy_request(helo: &str, rcpt: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=198.51.100.7\nserver_address=192.0.2.25\nhelo_name={helo}\nrecipient={rcpt}\ninstance=1.2.3\n\n"
    )
}

/// Sends each request on one policy connection; the answers' first lines.
fn policy_session(addr: SocketAddr, requests: &[String]) -> Vec<String> {
    let stream = TcpStream::connect(addr).expect("connect to the policy service");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut answers = Vec::new();
    for request in requests {
        writer.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        let mut empty = String::new();
        reader.read_line(&mut empty).unwrap();
        answers.push(answer.trim_end().to_string());
    }
    answers
}

const CONFIG: &str = "trusted_networks = []
whitelist = [\"private@example.com\"]
[domains.\"tempfail.example\"]
action = \"tempfail\"
[domains.\"log.example\"]
action = \"log\"
[domains.\"tag.example\"]
action = \"tag\"
";

const FRONT_ENDS: [&str; 2] = ["milter", "policy"];
const RULES: [&str; 3] = ["own-ip", "ip", "rcpt-domain"];
const ACTIONS: [&str; 4] = ["reject", "tempfail", "log", "tag"];
const EXEMPTIONS: [&str; 5] = [
    "whitelist",
    "authenticated",
    "trusted",
    "role_account",
    "off",
];
const SESSION_ERRORS: [&str; 4] = ["protocol", "oversized", "timeout", "io"];

/// Verdicts and exemptions of both front ends, the RCPT answer time histogram,
/// connections, reloads and build info: every series, with the values the test caused.
#[tokio::test]
async fn counts_what_the_mta_sent() {
    let started = unix_now();
    let (config, metrics) = with_metrics(CONFIG, "127.0.0.1");
    let service = Milter::start_policy(&config, true);
    let milter = service.milter_addr().expect("the milter is on");

    // Before any mail: every series is there, at 0, but for the one connection that
    // `start_policy` made to see the policy service listen (which counts, once closed).
    let probed = |s: &BTreeMap<String, f64>| {
        let policy = [("front_end", "policy")];
        value(s, "connections_total", &policy) == 1.0
            && value(s, "connections_open", &policy) == 0.0
    };
    assert!(wait_until(Duration::from_secs(5), || probed(&scrape(
        metrics
    ))));
    let before = scrape(metrics);
    for front_end in FRONT_ENDS {
        for rule in RULES {
            for action in ACTIONS {
                let labels = [("front_end", front_end), ("rule", rule), ("action", action)];
                assert_eq!(value(&before, "verdicts_total", &labels), 0.0);
            }
        }
        for reason in EXEMPTIONS {
            let labels = [("front_end", front_end), ("reason", reason)];
            assert_eq!(value(&before, "exemptions_total", &labels), 0.0);
        }
        for reason in SESSION_ERRORS {
            let labels = [("front_end", front_end), ("reason", reason)];
            assert_eq!(value(&before, "session_errors_total", &labels), 0.0);
        }
        let fe = [("front_end", front_end)];
        let probe = if front_end == "policy" { 1.0 } else { 0.0 };
        assert_eq!(value(&before, "connections_total", &fe), probe);
        assert_eq!(value(&before, "connections_open", &fe), 0.0);
        assert_eq!(value(&before, "rcpt_answer_seconds_count", &fe), 0.0);
    }

    // What is sent, and the expected counters: (front end, rule, action) -> n.
    let ip_helo = "[192.0.2.9]";
    let answers = milter_session(
        milter,
        ip_helo,
        &[
            "user@example.com",       // ip, reject
            "user@tempfail.example",  // ip, tempfail
            "user@log.example",       // ip, log
            "user@tag.example",       // ip, tag
            "user2@example.com",      // ip, reject
            "private@example.com",    // whitelist
            "postmaster@example.com", // role_account
        ],
    )
    .await;
    assert!(matches!(answers[0], Status::Reject { .. }), "{answers:?}");
    assert!(matches!(answers[1], Status::Tempfail { .. }), "{answers:?}");
    let answers = milter_session(milter, "example.com", &["user@example.com"]).await;
    assert!(matches!(answers[0], Status::Reject { .. }), "{answers:?}");
    let answers = milter_session(milter, "[192.0.2.25]", &["user@log.example"]).await;
    assert_eq!(answers, [Status::Continue]);
    let answers = milter_session(milter, "mail.example.net", &["user@example.com"]).await;
    assert_eq!(answers, [Status::Continue]);
    let policy = policy_session(
        service.addr(),
        &[
            policy_request(ip_helo, "user@example.com"),
            policy_request(ip_helo, "private@example.com"),
            policy_request("tempfail.example", "user@tempfail.example"),
        ],
    );
    assert_eq!(
        policy,
        [
            "action=550 5.7.1 bogus helo",
            "action=DUNNO",
            "action=450 4.7.1 bogus helo matches rcpt"
        ]
    );
    let verdicts = BTreeMap::from([
        (("milter", "ip", "reject"), 2.0),
        (("milter", "ip", "tempfail"), 1.0),
        (("milter", "ip", "log"), 1.0),
        (("milter", "ip", "tag"), 1.0),
        (("milter", "rcpt-domain", "reject"), 1.0),
        (("milter", "own-ip", "log"), 1.0),
        (("policy", "ip", "reject"), 1.0),
        (("policy", "rcpt-domain", "tempfail"), 1.0),
    ]);
    let exemptions = BTreeMap::from([
        (("milter", "whitelist"), 1.0),
        (("milter", "role_account"), 1.0),
        (("policy", "whitelist"), 1.0),
    ]);
    let rcpts = [("milter", 10.0), ("policy", 3.0)];
    // The policy service's: the probe and the test's one connection.
    let connections = [("milter", 4.0), ("policy", 2.0)];

    // Closed connections are counted as closed once the milter has seen them close.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = scrape(metrics);
            FRONT_ENDS
                .iter()
                .all(|fe| value(&s, "connections_open", &[("front_end", fe)]) == 0.0)
        }),
        "connections still open"
    );
    let after = scrape(metrics);
    for front_end in FRONT_ENDS {
        for rule in RULES {
            for action in ACTIONS {
                let labels = [("front_end", front_end), ("rule", rule), ("action", action)];
                let expected = verdicts.get(&(front_end, rule, action)).unwrap_or(&0.0);
                assert_eq!(
                    value(&after, "verdicts_total", &labels),
                    *expected,
                    "{labels:?}"
                );
            }
        }
        for reason in EXEMPTIONS {
            let labels = [("front_end", front_end), ("reason", reason)];
            let expected = exemptions.get(&(front_end, reason)).unwrap_or(&0.0);
            assert_eq!(
                value(&after, "exemptions_total", &labels),
                *expected,
                "{labels:?}"
            );
        }
    }
    for ((fe, n), (_, c)) in rcpts.iter().zip(connections) {
        let labels = [("front_end", *fe)];
        assert_eq!(value(&after, "rcpt_answer_seconds_count", &labels), *n);
        assert_eq!(value(&after, "connections_total", &labels), c);
        // Cumulative buckets: each at most the next, +Inf the count.
        let mut last = 0.0;
        for le in [
            "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
            "0.01", "0.025", "0.05", "0.1", "+Inf",
        ] {
            let bucket = value(
                &after,
                "rcpt_answer_seconds_bucket",
                &[("front_end", fe), ("le", le)],
            );
            assert!(bucket >= last, "{fe} le={le}: {bucket} < {last}");
            last = bucket;
        }
        assert_eq!(last, *n);
        let sum = value(&after, "rcpt_answer_seconds_sum", &labels);
        assert!(sum > 0.0 && sum < *n * 1.0, "{fe}: sum {sum}");
    }
    assert_eq!(
        value(&after, "config_reloads_total", &[("result", "ok")]),
        0.0
    );
    assert_eq!(
        value(&after, "config_reloads_total", &[("result", "failed")]),
        0.0
    );
    assert_eq!(value(&after, "config_last_reload_successful", &[]), 1.0);
    let loaded = value(&after, "config_last_load_timestamp_seconds", &[]);
    assert!(
        loaded >= started.floor() && loaded <= unix_now(),
        "{loaded}"
    );
    assert_eq!(
        value(
            &after,
            "build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // The statistics line is the same counters, summed over the front ends.
    service.signal(Signal::SIGUSR1);
    assert!(
        service.wait_for_log(
            "event=stats rejected_own_ip=0 rejected_ip=3 rejected_rcpt_domain=1 tempfailed_own_ip=0 tempfailed_ip=1 tempfailed_rcpt_domain=1 logged_own_ip=1 logged_ip=1 logged_rcpt_domain=0 tagged_own_ip=0 tagged_ip=1 tagged_rcpt_domain=0 exempted_whitelist=2 exempted_authenticated=0 exempted_trusted=0 exempted_role_account=1 exempted_off=0",
            Duration::from_secs(5)
        ),
        "{}",
        service.log()
    );
    assert!(
        service
            .log()
            .contains(&format!("event=metrics listen={metrics} path=/metrics")),
        "{}",
        service.log()
    );
}

#[test]
fn only_get_metrics() {
    let (config, metrics) = with_metrics("", "127.0.0.1");
    let _milter = Milter::start(&config);
    let ok = http(metrics, "GET", "/metrics");
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(ok
        .body
        .contains("# TYPE bogus_helo_milter_verdicts_total counter\n"));
    // A query string is no other resource.
    assert_eq!(http(metrics, "GET", "/metrics?x=1").status, 200);
    for path in ["/", "/metrics/", "/metricsx", "/favicon.ico"] {
        let r = http(metrics, "GET", path);
        assert_eq!(r.status, 404, "{path}");
    }
    // HEAD (RFC 9110 §9.1): the head of the GET response, no body. Nothing happens
    // between the two requests, so the length of the body left out is that of `ok`.
    let head = http(metrics, "HEAD", "/metrics");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), ok.header("content-type"));
    assert_eq!(
        head.header("content-length"),
        Some(ok.body.len().to_string().as_str())
    );
    assert_eq!(head.body, "");
    assert_eq!(http(metrics, "HEAD", "/nothing").status, 404);
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = http(metrics, method, "/metrics");
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
}

#[test]
fn ipv6_loopback() {
    if !dependency(
        std::net::TcpListener::bind("[::1]:0").is_ok(),
        "an IPv6 loopback (::1)",
        "enable IPv6 on lo (sysctl net.ipv6.conf.lo.disable_ipv6=0)",
    ) {
        return;
    }
    let (config, metrics) = with_metrics("", "[::1]");
    let milter = Milter::start(&config);
    let s = scrape(metrics);
    assert_eq!(
        value(&s, "connections_total", &[("front_end", "milter")]),
        0.0
    );
    assert!(milter
        .log()
        .contains(&format!("event=metrics listen={metrics} path=/metrics")));
}

/// 20 HTTP clients that connect and never send a request: the endpoint holds 16 (then
/// closes them after the 5 s header timeout) and closes the rest at once, and mail is
/// answered meanwhile. (How fast mail is answered is the benchmarks' business.)
#[tokio::test]
async fn silent_http_clients_do_not_slow_mail() {
    let (config, metrics) = with_metrics("trusted_networks = []", "127.0.0.1");
    let milter = Milter::start(&config);
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    let opened = Instant::now();
    // Closed: end of file or a reset, and no response; open: nothing to read yet.
    let closed = |s: &TcpStream| {
        s.set_nonblocking(true).unwrap();
        let mut byte = [0; 1];
        match s.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("a response to no request"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    // The four beyond the limit are closed; the others are held until the header
    // timeout (5 s), long after the four.
    assert!(
        wait_until(Duration::from_secs(10), || silent
            .iter()
            .filter(|s| closed(s))
            .count()
            >= 4),
        "the connections beyond the limit were not closed"
    );
    assert_eq!(silent.iter().filter(|s| closed(s)).count(), 4);

    for _ in 0..20 {
        let answers = milter_session(milter.addr(), "[192.0.2.9]", &["user@example.com"]).await;
        assert!(matches!(answers[0], Status::Reject { .. }), "{answers:?}");
    }
    // Past the header timeout the slots are free again, and a scrape is answered.
    assert!(
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(metrics).is_ok_and(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
                let mut head = [0; 12];
                s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
            })
        }),
        "no scrape answered after the silent clients timed out"
    );
    // Held, not dropped early: the header timeout is the product's 5 s.
    assert!(opened.elapsed() >= Duration::from_secs(4));
    assert!(wait_until(Duration::from_secs(10), || silent
        .iter()
        .all(&closed)));
    let s = scrape(metrics);
    assert_eq!(
        value(
            &s,
            "verdicts_total",
            &[
                ("front_end", "milter"),
                ("rule", "ip"),
                ("action", "reject")
            ]
        ),
        20.0
    );
    drop(silent);
}

#[test]
fn reloads_good_and_bad() {
    let (config, metrics) = with_metrics("", "127.0.0.1");
    let milter = Milter::start(&config);
    let first = value(&scrape(metrics), "config_last_load_timestamp_seconds", &[]);
    std::thread::sleep(Duration::from_millis(1100));
    milter.write_config(&format!("{config}action = \"log\"\n"));
    assert!(milter.reload().contains("result=ok"));
    let s = scrape(metrics);
    assert_eq!(value(&s, "config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(
        value(&s, "config_reloads_total", &[("result", "failed")]),
        0.0
    );
    let second = value(&s, "config_last_load_timestamp_seconds", &[]);
    assert!(second >= first + 1.0, "{first} -> {second}");

    milter.write_config(&format!("{config}action = \"bounce\"\n"));
    assert!(milter.reload().contains("result=failed"));
    let s = scrape(metrics);
    assert_eq!(value(&s, "config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(
        value(&s, "config_reloads_total", &[("result", "failed")]),
        1.0
    );
    // A failed reload is no load.
    assert_eq!(value(&s, "config_last_load_timestamp_seconds", &[]), second);

    // metrics_listen is restart-only: a reload names it.
    milter.write_config("metrics_listen = \"\"\n");
    assert!(milter.reload().contains("result=ok"));
    assert!(
        milter.log().contains("restart_needed=metrics_listen"),
        "{}",
        milter.log()
    );
    assert_eq!(
        value(
            &scrape(metrics),
            "config_reloads_total",
            &[("result", "ok")]
        ),
        2.0
    );
}

/// Issue 19 item 5: `config_last_reload_successful` follows the file on disk whichever
/// way a reload was tried: `reload PID` (systemd's `ExecReload`) and a plain SIGHUP.
#[test]
fn last_reload_successful_follows_the_file() {
    let (config, metrics) = with_metrics("", "127.0.0.1");
    let milter = Milter::start(&config);
    let state = || value(&scrape(metrics), "config_last_reload_successful", &[]);
    assert_eq!(state(), 1.0);
    let reload_command = || {
        Command::new(common::milter::BIN)
            .arg("-c")
            .arg(milter.config_path())
            .args(["reload", &milter.pid().to_string()])
            .output()
            .unwrap()
            .status
            .code()
    };
    let wait = Duration::from_secs(20);

    milter.write_config(&format!("{config}action = \"bounce\"\n"));
    assert_eq!(reload_command(), Some(2));
    assert!(wait_until(wait, || state() == 0.0), "{}", milter.log());
    // A restart would fail as well; the state holds until the file loads again.
    assert!(milter.reload().contains("result=failed"));
    assert_eq!(state(), 0.0);

    milter.write_config(&format!("{config}action = \"log\"\n"));
    assert_eq!(reload_command(), Some(0));
    assert!(wait_until(wait, || state() == 1.0), "{}", milter.log());

    milter.write_config(&format!("{config}action = \"bounce\"\n"));
    assert!(milter.reload().contains("result=failed"));
    assert_eq!(state(), 0.0);
    milter.write_config(&config);
    assert!(milter.reload().contains("result=ok"));
    assert_eq!(state(), 1.0);
}

#[test]
fn policy_session_errors_by_reason() {
    let (config, metrics) = with_metrics("", "127.0.0.1");
    let service = Milter::start_policy(&config, false);
    let send = |bytes: &[u8]| {
        let mut stream = TcpStream::connect(service.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let mut rest = Vec::new();
        // Closed without an answer.
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{rest:?}");
    };
    send(b"no equals sign\n\n");
    send(b"\n");
    send(&[b"a=".as_slice(), &[b'x'; 9000], b"\n\n"].concat());
    let expected = [
        ("protocol", 2.0),
        ("oversized", 1.0),
        ("timeout", 0.0),
        ("io", 0.0),
    ];
    assert!(wait_until(Duration::from_secs(5), || {
        let s = scrape(metrics);
        expected.iter().all(|(reason, n)| {
            value(
                &s,
                "session_errors_total",
                &[("front_end", "policy"), ("reason", reason)],
            ) == *n
        })
    }));
    let s = scrape(metrics);
    for reason in SESSION_ERRORS {
        let labels = [("front_end", "milter"), ("reason", reason)];
        assert_eq!(value(&s, "session_errors_total", &labels), 0.0);
    }
}

/// Silent policy connections cannot hold the slots for long: `policy_idle_timeout`
/// closes them (here 2 s, while the milter's `idle_timeout` is an hour), and the
/// connection that waited for a slot meanwhile is answered and counted as a wait.
/// `connections_max` says each front end's limit.
#[test]
fn silent_policy_connections_are_closed_and_waits_counted() {
    let (config, metrics) = with_metrics(
        "trusted_networks = []\nmax_connections = 2\nidle_timeout = \"1h\"\npolicy_idle_timeout = \"2s\"\n",
        "127.0.0.1",
    );
    let service = Milter::start_policy(&config, true);
    let s = scrape(metrics);
    for fe in FRONT_ENDS {
        assert_eq!(
            value(&s, "connections_max", &[("front_end", fe)]),
            2.0,
            "{fe}"
        );
    }
    assert_eq!(
        value(&s, "connection_waits_total", &[("front_end", "policy")]),
        0.0
    );
    // The harness's probe that the socket is up is a connection too: once it is closed,
    // both slots are free.
    let policy = [("front_end", "policy")];
    assert!(wait_until(Duration::from_secs(10), || value(
        &scrape(metrics),
        "connections_open",
        &policy
    ) == 0.0));
    let before = value(&scrape(metrics), "connections_total", &policy);
    // Two connections that each asked once (so they hold a slot), then fell silent.
    let mut silent = Vec::new();
    for _ in 0..2 {
        let stream = TcpStream::connect(service.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        (&stream)
            .write_all(policy_request("[198.51.100.9]", "u@example.com").as_bytes())
            .unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert_eq!(answer, "action=550 5.7.1 bogus helo\n");
        silent.push((stream, reader));
    }
    // The third waits in the listen queue until the idle limit frees a slot.
    let answers = policy_session(
        service.addr(),
        &[policy_request("[198.51.100.9]", "v@example.com")],
    );
    assert_eq!(answers, ["action=550 5.7.1 bogus helo"]);
    // The silent ones were closed by the service (end of file, not our read timeout).
    for (_, reader) in &mut silent {
        let mut rest = String::new();
        while reader.read_line(&mut rest).unwrap() > 0 {}
        assert_eq!(rest, "\n");
    }
    let s = scrape(metrics);
    assert_eq!(
        value(&s, "connection_waits_total", &[("front_end", "policy")]),
        1.0
    );
    assert_eq!(
        value(&s, "connections_total", &[("front_end", "policy")]),
        before + 3.0
    );
    // Closing an idle connection is no session error.
    for reason in SESSION_ERRORS {
        let labels = [("front_end", "policy"), ("reason", reason)];
        assert_eq!(value(&s, "session_errors_total", &labels), 0.0, "{reason}");
    }
    assert!(
        service
            .log()
            .contains("event=policy_limit max_connections=2 reached"),
        "{}",
        service.log()
    );
}

/// A milter connection that waits in the listen queue for one of `max_connections` is
/// counted when it is accepted (the patched indymilter's `on_connection_waited`).
#[tokio::test]
async fn a_milter_connection_that_waited_is_counted() {
    let (config, metrics) = with_metrics("max_connections = 1\n", "127.0.0.1");
    let milter = Milter::start(&config);
    let addr = milter.addr();
    // Negotiated: it holds the only slot (the harness's probe is gone, and if this one
    // waited behind it, that is counted already).
    let holder = TestConnection::open(addr).await.expect("open");
    let milter_fe = [("front_end", "milter")];
    let s = scrape(metrics);
    assert_eq!(value(&s, "connections_max", &milter_fe), 1.0);
    let before = value(&s, "connection_waits_total", &milter_fe);
    // In the listen queue once connect returns; accepted once the holder is gone.
    let waiting = TcpStream::connect(addr).unwrap();
    holder.close().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || value(
            &scrape(metrics),
            "connection_waits_total",
            &milter_fe
        ) == before + 1.0),
        "{:#?}\n{}",
        scrape(metrics),
        milter.log()
    );
    drop(waiting);
}

/// With the milter's socket off, its limit is not exported: no front end to fill.
#[test]
fn connections_max_only_for_front_ends_that_run() {
    let (config, metrics) = with_metrics("max_connections = 7\n", "127.0.0.1");
    let _service = Milter::start_policy(&config, false);
    let s = scrape(metrics);
    assert_eq!(
        value(&s, "connections_max", &[("front_end", "policy")]),
        7.0
    );
    assert!(
        !s.keys()
            .any(|k| k.starts_with("bogus_helo_milter_connections_max{front_end=\"milter\"")),
        "{s:#?}"
    );
}

/// Milter sessions that end on an error, one of each reason, counted as indymilter
/// classifies them through the hook that patches/indymilter adds.
#[test]
fn milter_session_errors_by_reason() {
    let (config, metrics) = with_metrics("idle_timeout = \"1s\"", "127.0.0.1");
    let milter = Milter::start(&config);
    // protocol: an unknown command.
    let mut peer = RawMta::connect(milter.addr());
    peer.send(b'Z', b"what\0");
    assert!(peer.is_closed(Duration::from_secs(5)));
    // oversized: a 4 GiB length prefix.
    let mut peer = RawMta::open(milter.addr());
    peer.stream
        .write_all(&[0xff, 0xff, 0xff, 0xff, b'H'])
        .unwrap();
    assert!(peer.is_closed(Duration::from_secs(5)));
    // timeout: silence past idle_timeout.
    let mut peer = RawMta::connect(milter.addr());
    assert!(peer.is_closed(Duration::from_secs(5)));
    // io: half a packet, then a reset.
    let peer = RawMta::open(milter.addr());
    (&peer.stream)
        .write_all(&[0, 0, 0, 100, b'H', b'x'])
        .unwrap();
    socket2::SockRef::from(&peer.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    let expected = SESSION_ERRORS.map(|reason| (reason, 1.0));
    let counted = |s: &BTreeMap<String, f64>| {
        expected.iter().all(|(reason, n)| {
            value(
                s,
                "session_errors_total",
                &[("front_end", "milter"), ("reason", reason)],
            ) == *n
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), || counted(&scrape(metrics))),
        "{:#?}\n{}",
        scrape(metrics),
        milter.log()
    );
    assert_eq!(milter.log().matches("event=session_error").count(), 4);
}

/// Issue 19: forged `X-Bogus-HELO` headers removed, and sessions whose MTA offered no
/// header changes (tag acts as log), counted from the start.
#[tokio::test]
async fn forged_headers_and_sessions_without_header_changes() {
    use indymilter_test::{Actions, ProtoOpts};
    let (config, metrics) = with_metrics("[rules]\nip = \"tag\"\n", "127.0.0.1");
    let milter = Milter::start(&config);
    let series = |s: &BTreeMap<String, f64>| {
        (
            value(
                s,
                "forged_headers_removed_total",
                &[("front_end", "milter")],
            ),
            value(
                s,
                "tag_unavailable_sessions_total",
                &[("front_end", "milter")],
            ),
        )
    };
    assert_eq!(series(&scrape(metrics)), (0.0, 0.0));

    let mut conn = TestConnection::open(milter.addr()).await.unwrap();
    conn.connect("client", [198, 51, 100, 7]).await.unwrap();
    conn.helo("[192.0.2.9]").await.unwrap();
    conn.mail(["<a@example.net>"]).await.unwrap();
    conn.rcpt(["<a@example.com>"]).await.unwrap();
    for name in ["X-Bogus-HELO", "x-bogus-helo", "Subject"] {
        conn.header(name, "rule=none").await.unwrap();
    }
    conn.eom().await.unwrap();
    conn.close().await.unwrap();

    let conn = TestConnection::configure()
        .available_actions(Actions::ADD_RCPT)
        .available_opts(ProtoOpts::all())
        .open_tcp(milter.addr())
        .await
        .unwrap();
    conn.close().await.unwrap();

    assert!(
        wait_until(Duration::from_secs(5), || series(&scrape(metrics))
            == (2.0, 1.0)),
        "{:#?}\n{}",
        scrape(metrics),
        milter.log()
    );
}

#[test]
fn a_port_in_use_is_a_clear_error_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.conf");
    std::fs::write(
        &path,
        format!(
            "socket = \"inet:127.0.0.1:{}\"\nmetrics_listen = \"{addr}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let mut child = Command::new(common::milter::bin())
        .arg("-c")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "still running: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "event=start result=failed metrics_listen={addr} error=\"Address already in use"
        )),
        "{stderr}"
    );
    drop(taken);
}

/// `promtool check metrics` (Prometheus's own linter) finds nothing in a scrape with
/// every kind of series set. Skipped, saying so, where promtool is not installed, and a
/// failure then under CI.
#[tokio::test]
async fn promtool_accepts_a_scrape() {
    if !dependency(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool",
        "apt-get install prometheus",
    ) {
        return;
    }
    let (config, metrics) = with_metrics("trusted_networks = []", "127.0.0.1");
    let milter = Milter::start(&config);
    milter_session(milter.addr(), "[192.0.2.9]", &["user@example.com"]).await;
    let mut garbage = RawMta::connect(milter.addr());
    garbage.send(b'Z', b"what\0");
    assert!(garbage.is_closed(Duration::from_secs(5)));
    let body = http(metrics, "GET", "/metrics").body;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
