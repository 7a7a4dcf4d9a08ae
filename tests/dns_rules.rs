//! The DNS rules of issue 21 (`unknown`, `mismatch`, `dns_failure`) through the binary's
//! two sockets, the milter's (indymilter-test) and the policy service's, answered by real
//! servers on loopback: NSD serving the zone of `tests/common/dns_server.rs`, a server
//! that never answers and one that answers SERVFAIL. The expected replies are written by
//! hand from that zone and the issue's table, per recipient; then the exemptions, the
//! counters, and `explain`'s live lookups on the command line. (Which questions are asked
//! when, with answers from a table, is tests/dns_wiring.rs's.)

mod common;

use common::{
    dns_server::{self, names, FakeDns, Nsd},
    milter::{scrape, Milter, BIN},
    wait_until,
};
use indymilter_test::{EomAction, MacroStage, Status, TestConnection};
use std::{
    ffi::CString,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const UNKNOWN_550: &str = "550 5.7.1 bogus helo unknown host";
const UNKNOWN_450: &str = "450 4.7.1 bogus helo unknown host";
const DNS_FAILURE: &str = "451 4.4.3 bogus helo dns failure";
/// An accepted recipient.
const ACCEPT: &str = "";

/// The test client of tests/milter.rs: `client.helo.test` has its address.
const CLIENT: &str = "198.51.100.7";

/// NSD serving the test zone, or None (the test skips) where NSD is missing outside CI.
fn nsd() -> Option<Nsd> {
    common::dependency(dns_server::nsd_available(), "nsd", dns_server::INSTALL_NSD).then(Nsd::start)
}

/// The binary with both front ends on, asking `server`; `config` without the sockets.
fn start(server: SocketAddr, config: &str) -> Milter {
    Milter::start_policy(&format!("dns_servers = [\"{server}\"]\n{config}"), true)
}

/// [`start`] asking `nsd`. Its answers come at once: a generous `dns_timeout` keeps a
/// loaded machine from turning one into a timeout (a RCPT waits only until they are in).
fn start_nsd(nsd: &Nsd, config: &str) -> Milter {
    start(nsd.addr, &format!("dns_timeout = \"10s\"\n{config}"))
}

fn milter_addr(service: &Milter) -> SocketAddr {
    service.milter_addr().expect("the milter's socket is on")
}

/// What the milter answers a RCPT with `expected` (a reply, or [`ACCEPT`]).
fn milter_status(expected: &str) -> Status {
    if expected.is_empty() {
        return Status::Continue;
    }
    let message = Some(CString::new(expected).unwrap());
    match expected.starts_with('5') {
        true => Status::Reject { message },
        false => Status::Tempfail { message },
    }
}

/// What the policy service answers a RCPT with `expected` (a reply, or [`ACCEPT`]).
fn policy_answer(expected: &str) -> String {
    match expected {
        "" => "action=DUNNO".into(),
        reply => format!("action={reply}"),
    }
}

/// One message through the milter: a session from `client` greeting with `helo`, MAIL
/// (with `{auth_authen}` when `auth` is given), each recipient, end of message. The
/// RCPTs' answers and the end of message's header actions.
async fn milter_message(
    addr: SocketAddr,
    client: &str,
    helo: &str,
    auth: Option<&str>,
    rcpts: &[&str],
) -> (Vec<Status>, Vec<EomAction>) {
    let client: IpAddr = client.parse().unwrap();
    let mut conn = TestConnection::open(addr).await.expect("open");
    conn.macros(MacroStage::Connect, [("j", "mx.example.com")])
        .await
        .expect("macros");
    conn.connect("client.example.net", client)
        .await
        .expect("connect");
    conn.helo(helo).await.expect("helo");
    if let Some(auth) = auth {
        conn.macros(MacroStage::Mail, [("{auth_authen}", auth)])
            .await
            .expect("macros");
    }
    conn.mail(["<sender@example.org>"]).await.expect("mail");
    let mut statuses = Vec::new();
    for rcpt in rcpts {
        statuses.push(conn.rcpt([format!("<{rcpt}>")]).await.expect("rcpt"));
    }
    let (actions, _) = conn.eom().await.expect("eom");
    conn.close().await.expect("close");
    (statuses, actions.actions)
}

/// One message through the policy service, on a connection of its own: a RCPT request
/// per recipient (message `instance`, `sasl_username` = `sasl`); the answers without
/// their empty line. Each answer must come within 10 s.
fn policy_message(
    addr: SocketAddr,
    client: &str,
    helo: &str,
    sasl: &str,
    instance: &str,
    rcpts: &[&str],
) -> Vec<String> {
    let stream = TcpStream::connect(addr).expect("connect to the policy service");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut answers = Vec::new();
    for rcpt in rcpts {
        let request = format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
             client_address={client}\nclient_name=unknown\nhelo_name={helo}\n\
             sender=sender@example.org\nrecipient={rcpt}\nqueue_id=\n\
             instance={instance}\nsasl_username={sasl}\n\n"
        );
        writer.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("an answer within 10 s");
            assert!(n > 0, "closed before the end of the answer: {answer:?}");
            if line == "\n" {
                break;
            }
            answer.push_str(&line);
        }
        answers.push(answer.trim_end().to_string());
    }
    answers
}

/// Sends SIGUSR1 until a statistics line holds each of `parts` (the lookups may end just
/// after the RCPT's answer); panics with the log's other lines and its last statistics
/// line when none does within 10 s.
fn assert_stats(service: &Milter, parts: &[&str]) {
    let holds =
        |line: &str| line.starts_with("event=stats ") && parts.iter().all(|p| line.contains(p));
    let found = wait_until(Duration::from_secs(10), || {
        service.signal(nix::sys::signal::Signal::SIGUSR1);
        service.wait_for(Duration::from_millis(200), |log| log.lines().any(holds))
    });
    let log = service.log();
    let (stats, others): (Vec<&str>, Vec<&str>) =
        log.lines().partition(|l| l.starts_with("event=stats "));
    assert!(
        found,
        "no statistics line with {parts:?}; the last:\n{}\nthe log:\n{}",
        stats.last().unwrap_or(&""),
        others.join("\n")
    );
}

/// The statistics line's DNS lookups, in its order.
fn lookups(ok: u32, nxdomain: u32, nodata: u32, servfail: u32, timeout: u32) -> String {
    format!(
        " dns_lookups_ok={ok} dns_lookups_nxdomain={nxdomain} dns_lookups_nodata={nodata} \
         dns_lookups_servfail={servfail} dns_lookups_timeout={timeout} dns_lookups_dropped=0"
    )
}

/// HELO names and what each recipient gets, per the zone: NXDOMAIN and NODATA for all
/// three questions are unknown; one A, AAAA or MX record (an MX alone too) is known.
#[tokio::test]
async fn unknown_refuses_a_name_dns_does_not_know_per_recipient() {
    let Some(nsd) = nsd() else { return };
    let service = start_nsd(
        &nsd,
        r#"whitelist = ["private@example.com"]
[rules]
unknown = "reject"
[domains."t.example".rules]
unknown = "tempfail"
[domains."off.example"]
action = "off"
"#,
    );
    let rcpts = [
        "u@example.com",
        "private@example.com",
        "u@off.example",
        "u@t.example",
    ];
    let refused = [UNKNOWN_550, ACCEPT, ACCEPT, UNKNOWN_450];
    let passed = [ACCEPT; 4];
    let cases = [
        (names::MISSING, refused),
        (names::TXT_ONLY, refused),
        // An alias of a name that does not exist is no better, as for Postfix.
        (names::DANGLING, refused),
        // Compared in its normal form, asked as that.
        ("Missing.HELO.test.", refused),
        (names::A_ONLY, passed),
        (names::AAAA_ONLY, passed),
        (names::MX_ONLY, passed),
        (names::CLIENT, passed),
        (names::ALIAS, passed),
    ];
    let mut problems = Vec::new();
    for (i, (helo, expected)) in cases.iter().enumerate() {
        let (statuses, _) = milter_message(milter_addr(&service), CLIENT, helo, None, &rcpts).await;
        let want: Vec<Status> = expected.iter().map(|e| milter_status(e)).collect();
        if statuses != want {
            problems.push(format!(
                "milter, HELO {helo}: {statuses:?}, expected {want:?}"
            ));
        }
        let answers = policy_message(service.addr(), CLIENT, helo, "", &i.to_string(), &rcpts);
        let want: Vec<String> = expected.iter().map(|e| policy_answer(e)).collect();
        if answers != want {
            problems.push(format!(
                "policy, HELO {helo}: {answers:?}, expected {want:?}"
            ));
        }
    }
    assert_answers(&service, &problems, &[
        "action=reject rule=unknown client=198.51.100.7 helo=\"missing.helo.test\" rcpt=\"u@example.com\" reply=\"550 5.7.1 bogus helo unknown host\" via=milter",
        "action=tempfail rule=unknown client=198.51.100.7 helo=\"txt-only.helo.test\" rcpt=\"u@t.example\" reply=\"450 4.7.1 bogus helo unknown host\" via=policy",
    ]);
}

/// Panics naming each case answered otherwise than expected (`problems`), or else each
/// of `lines` missing from the log (awaited).
fn assert_answers(service: &Milter, problems: &[String], lines: &[&str]) {
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        service.log()
    );
    service.assert_logged_lines(lines);
}

/// `mismatch` never refuses: `tag` adds the header (the milter at end of message, the
/// policy service as PREPEND), `log` logs; the client's family of addresses is compared,
/// an IPv4-mapped client as IPv4.
#[tokio::test]
async fn mismatch_tags_a_name_whose_addresses_leave_the_client_out() {
    let Some(nsd) = nsd() else { return };
    let service = start_nsd(
        &nsd,
        "[rules]\nmismatch = \"tag\"\n[domains.\"log.example\".rules]\nmismatch = \"log\"\n",
    );
    let header =
        |helo: &str, client: &str| format!("rule=mismatch helo=\"{helo}\" client={client}");
    // Client, HELO, the tag header's value where the name leaves the client out.
    let cases = [
        (CLIENT, names::OTHER, Some(header(names::OTHER, CLIENT))),
        (CLIENT, names::CLIENT, None),
        ("2001:db8::7", names::CLIENT6, None),
        // client.helo.test has no AAAA record.
        (
            "2001:db8::7",
            names::CLIENT,
            Some(header(names::CLIENT, "2001:db8::7")),
        ),
        ("::ffff:198.51.100.7", names::CLIENT, None),
        (
            "::ffff:198.51.100.7",
            names::OTHER,
            Some(header(names::OTHER, CLIENT)),
        ),
    ];
    let rcpts = ["u@example.com", "u@log.example"];
    let mut problems = Vec::new();
    for (i, (client, helo, tag)) in cases.iter().enumerate() {
        let (statuses, actions) =
            milter_message(milter_addr(&service), client, helo, None, &rcpts).await;
        let added: Vec<EomAction> = tag
            .iter()
            .map(|value| EomAction::AddHeader {
                name: CString::new("X-Bogus-HELO").unwrap(),
                value: CString::new(value.as_str()).unwrap(),
            })
            .collect();
        if statuses != [Status::Continue, Status::Continue] || actions != added {
            problems.push(format!(
                "milter, {client} HELO {helo}: {statuses:?} {actions:?}, expected {added:?}"
            ));
        }
        let answers = policy_message(service.addr(), client, helo, "", &i.to_string(), &rcpts);
        let first = tag.as_ref().map_or("action=DUNNO".into(), |value| {
            format!("action=PREPEND X-Bogus-HELO: {value}")
        });
        if answers != [first.clone(), "action=DUNNO".into()] {
            problems.push(format!(
                "policy, {client} HELO {helo}: {answers:?}, expected {first:?} then DUNNO"
            ));
        }
    }
    assert_answers(&service, &problems, &[
        "action=tag rule=mismatch client=198.51.100.7 helo=\"other.helo.test\" rcpt=\"u@example.com\" header=\"X-Bogus-HELO: rule=mismatch helo=\\\"other.helo.test\\\" client=198.51.100.7\" via=milter",
        "action=log rule=mismatch client=198.51.100.7 helo=\"other.helo.test\" rcpt=\"u@log.example\" via=milter",
        "action=log rule=mismatch client=2001:db8::7 helo=\"client.helo.test\" rcpt=\"u@log.example\" via=policy",
    ]);
}

/// A server that never answers, and one that answers SERVFAIL: never an `unknown`
/// verdict. `dns_failure` decides for the recipient the rule would refuse, the
/// whitelisted one and the one at an `off` domain are accepted in the same transaction;
/// logged with `dns=timeout` or `dns=servfail`, counted.
#[tokio::test]
async fn a_dns_failure_is_never_unknown_and_dns_failure_decides() {
    // Each message through the silent server waits for the whole timeout: a short one.
    // The other answers at once: a generous one, so that it is never a timeout.
    for (server, failure, timeout) in [
        (FakeDns::silent(), "timeout", "300ms"),
        (FakeDns::servfail(), "servfail", "10s"),
    ] {
        for mode in ["accept", "tempfail"] {
            let service = start(
                server.addr,
                &format!(
                    r#"dns_timeout = "{timeout}"
dns_failure = "{mode}"
whitelist = ["private@example.com"]
[rules]
unknown = "reject"
[domains."off.example"]
action = "off"
"#
                ),
            );
            let case = format!("{failure}, dns_failure = {mode}");
            let first = if mode == "tempfail" {
                DNS_FAILURE
            } else {
                ACCEPT
            };
            let expected = [first, ACCEPT, ACCEPT];
            let rcpts = ["u@example.com", "private@example.com", "u@off.example"];
            let (statuses, _) =
                milter_message(milter_addr(&service), CLIENT, names::MISSING, None, &rcpts).await;
            let want: Vec<Status> = expected.iter().map(|e| milter_status(e)).collect();
            assert_eq!(statuses, want, "milter, {case}\n{}", service.log());
            let answers = policy_message(service.addr(), CLIENT, names::MISSING, "", "1", &rcpts);
            let want: Vec<String> = expected.iter().map(|e| policy_answer(e)).collect();
            assert_eq!(answers, want, "policy, {case}\n{}", service.log());
            let facts = format!(
                "rule=unknown dns={failure} client=198.51.100.7 helo=\"missing.helo.test\" rcpt=\"u@example.com\""
            );
            let line = |via: &str| match mode {
                "tempfail" => format!("action=tempfail {facts} reply=\"{DNS_FAILURE}\" via={via}"),
                _ => format!("action=accept {facts} via={via}"),
            };
            service.assert_logged_lines(&[&line("milter"), &line("policy")]);
            // Per front end: u@example.com decided by dns_failure, the other two no verdict.
            let (tempfailed, accepted) = if mode == "tempfail" { (2, 0) } else { (0, 2) };
            // Failures are not cached: the milter's session and the policy service's
            // message each asked the three questions.
            let (servfail, timeout) = if failure == "servfail" {
                (6, 0)
            } else {
                (0, 6)
            };
            assert_stats(
                &service,
                &[&format!(
                    " rejected_unknown=0 rejected_mismatch=0 tempfailed_unknown=0 \
                     tempfailed_mismatch=0 logged_unknown=0 logged_mismatch=0 \
                     tagged_unknown=0 tagged_mismatch=0 dns_failure_tempfailed={tempfailed} \
                     dns_failure_accepted={accepted} dns_failure_no_verdict=4{}",
                    lookups(0, 0, 0, servfail, timeout)
                )],
            );
            assert!(service.stop());
        }
    }
}

/// A trusted client is never looked up nor refused; neither is an address HELO looked
/// up. Any lookup would be counted before its RCPT's answer (the RCPT waits for it):
/// the last message's lookups, counted alone, show there was none before.
#[tokio::test]
async fn trusted_clients_and_address_helos_are_never_looked_up() {
    let Some(nsd) = nsd() else { return };
    let service = start_nsd(
        &nsd,
        "trusted_networks = [\"192.0.2.0/24\"]\n[rules]\nunknown = \"reject\"\n",
    );
    let rcpt = ["u@example.com"];
    let trusted = "192.0.2.7";
    let (statuses, _) =
        milter_message(milter_addr(&service), trusted, names::TXT_ONLY, None, &rcpt).await;
    assert_eq!(statuses, [Status::Continue]);
    let answers = policy_message(service.addr(), trusted, names::MX_ONLY, "", "1", &rcpt);
    assert_eq!(answers, ["action=DUNNO"]);
    // An address is judged by the page's rule `ip`, and never asked about.
    for (i, helo) in [
        "192.0.2.9",
        "[192.0.2.9]",
        "[IPv6:2001:db8::9]",
        "2001:db8::9",
    ]
    .into_iter()
    .enumerate()
    {
        let (statuses, _) = milter_message(milter_addr(&service), CLIENT, helo, None, &rcpt).await;
        assert_eq!(statuses, [milter_status("550 5.7.1 bogus helo")], "{helo}");
        let answers = policy_message(service.addr(), CLIENT, helo, "", &format!("a{i}"), &rcpt);
        assert_eq!(answers, ["action=550 5.7.1 bogus helo"], "{helo}");
    }
    let answers = policy_message(service.addr(), CLIENT, names::MISSING, "", "2", &rcpt);
    assert_eq!(answers, [policy_answer(UNKNOWN_550)], "{}", service.log());
    assert_stats(&service, &[&lookups(0, 3, 0, 0, 0)]);
    assert!(service.stop());
}

/// An authenticated client never waits for DNS: with a server that never answers and
/// `dns_timeout` at its longest, the RCPT is answered well within it (each answer is
/// awaited for 10 s at most, half the timeout).
#[tokio::test]
async fn an_authenticated_client_never_waits_for_dns() {
    let silent = FakeDns::silent();
    let service = start(
        silent.addr,
        "dns_timeout = \"20s\"\n[rules]\nunknown = \"reject\"\n",
    );
    let rcpt = ["u@example.com"];
    let message = milter_message(
        milter_addr(&service),
        CLIENT,
        names::MISSING,
        Some("alice"),
        &rcpt,
    );
    let (statuses, _) = tokio::time::timeout(Duration::from_secs(10), message)
        .await
        .expect("the milter answered within 10 s");
    assert_eq!(statuses, [Status::Continue]);
    let answers = policy_message(service.addr(), CLIENT, names::MISSING, "alice", "1", &rcpt);
    assert_eq!(answers, ["action=DUNNO"]);
}

/// After a few messages, the statistics line and the metrics count the lookups by result
/// (from the zone: missing.helo.test NXDOMAIN x3, txt-only NODATA x3, client.helo.test
/// A and MX but no AAAA, aaaa-only only AAAA) and the refusals by rule.
#[tokio::test]
async fn the_counters_show_the_lookups_by_result() {
    let Some(nsd) = nsd() else { return };
    let metrics = SocketAddr::from(([127, 0, 0, 1], common::milter::free_port()));
    let service = start_nsd(
        &nsd,
        &format!("metrics_listen = \"{metrics}\"\n[rules]\nunknown = \"reject\"\n"),
    );
    let rcpt = ["u@example.com"];
    let milter = milter_addr(&service);
    let (statuses, _) = milter_message(milter, CLIENT, names::MISSING, None, &rcpt).await;
    assert_eq!(statuses, [milter_status(UNKNOWN_550)]);
    let (statuses, _) = milter_message(milter, CLIENT, names::CLIENT, None, &rcpt).await;
    assert_eq!(statuses, [Status::Continue]);
    let answers = policy_message(service.addr(), CLIENT, names::TXT_ONLY, "", "1", &rcpt);
    assert_eq!(answers, [policy_answer(UNKNOWN_550)]);
    let answers = policy_message(service.addr(), CLIENT, names::AAAA_ONLY, "", "2", &rcpt);
    assert_eq!(answers, ["action=DUNNO"]);
    assert_stats(
        &service,
        &[
            " rejected_unknown=2 rejected_mismatch=0 ",
            &lookups(3, 3, 6, 0, 0),
        ],
    );
    let scraped = scrape(metrics);
    for (result, n) in [
        ("ok", 3),
        ("nxdomain", 3),
        ("nodata", 6),
        ("servfail", 0),
        ("timeout", 0),
    ] {
        let line = format!("bogus_helo_milter_dns_lookups_total{{result=\"{result}\"}} {n}\n");
        assert!(scraped.contains(&line), "no {line:?} in\n{scraped}");
    }
    assert!(
        scraped.contains("bogus_helo_milter_dns_lookup_duration_seconds_count 12\n"),
        "{scraped}"
    );
    assert!(service.stop());
}

/// `explain` with `config`, HELO `helo` to u@example.com from [`CLIENT`]: its output,
/// which must come within 10 s.
fn explain(config: &str, helo: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.conf");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .args([
            "explain",
            "--helo",
            helo,
            "--rcpt",
            "u@example.com",
            "--client",
            CLIENT,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run explain");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("explain {helo} did not end within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        status.success(),
        "explain {helo}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_lines(out: &str, lines: &[&str]) {
    for line in lines {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
}

/// `explain` asks the configured servers there and then while a DNS rule is on, and
/// prints each answer, the rule and the setting that decided.
#[test]
fn explain_asks_live_and_prints_each_answer() {
    let Some(nsd) = nsd() else { return };
    let config = format!(
        "dns_servers = [\"{}\"]\ndns_timeout = \"10s\"\n[rules]\nunknown = \"reject\"\n",
        nsd.addr
    );
    let answers = |a: &str, aaaa: &str, mx: &str| {
        format!("dns:       A: {a}\n           AAAA: {aaaa}\n           MX: {mx}\n")
    };
    let out = explain(&config, names::MISSING);
    assert_lines(
        &out,
        &[
            &answers("NXDOMAIN", "NXDOMAIN", "NXDOMAIN"),
            "\nrule:      unknown (\"bogus helo unknown host\"): DNS has no A, AAAA or MX record of the HELO name",
            "\naction:    reject (from rules.unknown)\n",
            "\nreply:     550 5.7.1 bogus helo unknown host\n",
        ],
    );
    let out = explain(&config, names::TXT_ONLY);
    assert_lines(&out, &[&answers("NODATA", "NODATA", "NODATA"), UNKNOWN_550]);
    for (helo, expected) in [
        (
            names::AAAA_ONLY,
            answers("NODATA", "2001:db8::10", "NODATA"),
        ),
        (
            names::MX_ONLY,
            answers("NODATA", "NODATA", "mx.example.net"),
        ),
        (
            names::CLIENT,
            answers("198.51.100.7", "NODATA", "mx.example.net"),
        ),
        // The address the alias leads to; the CNAME itself is no answer to AAAA or MX.
        (names::ALIAS, answers("192.0.2.10", "NODATA", "NODATA")),
    ] {
        let out = explain(&config, helo);
        assert_lines(
            &out,
            &[
                &expected,
                "\nrule:      none: the HELO is neither an IP address nor the recipient's domain or one of this server's names, and the DNS answers meet no DNS rule that is on\n",
                "\nverdict:   accept\n",
            ],
        );
    }
    let silent = FakeDns::silent();
    let config = format!(
        "dns_servers = [\"{}\"]\ndns_timeout = \"300ms\"\ndns_failure = \"tempfail\"\n[rules]\nunknown = \"reject\"\n",
        silent.addr
    );
    let out = explain(&config, names::MISSING);
    assert_lines(
        &out,
        &[
            &answers("timeout", "timeout", "timeout"),
            "\nrule:      unknown (\"bogus helo unknown host\"), undecided: no answer gave an A, AAAA or MX record, and a question failed (timeout), so DNS may know the name\n",
            "\naction:    reject (from rules.unknown)\n",
            "\nverdict:   tempfail: a DNS failure (timeout) leaves unknown undecided, and dns_failure = \"tempfail\"\n",
            "\nreply:     451 4.4.3 bogus helo dns failure\n",
        ],
    );
}

/// With no DNS rule on, or for an address, `explain` asks nothing: against a server that
/// never answers and the longest `dns_timeout`, it ends well within it, with no answers.
#[test]
fn explain_asks_nothing_without_a_dns_rule_or_a_name() {
    let silent = FakeDns::silent();
    let servers = format!(
        "dns_servers = [\"{}\"]\ndns_timeout = \"20s\"\n",
        silent.addr
    );
    for (config, helo) in [
        (servers.clone(), names::MISSING),
        (
            format!("{servers}[rules]\nunknown = \"off\"\n"),
            names::MISSING,
        ),
        (
            format!("{servers}[rules]\nunknown = \"reject\"\n"),
            "[192.0.2.9]",
        ),
    ] {
        let out = explain(&config, helo);
        assert!(!out.contains("dns:"), "{config}\n{out}");
        assert!(out.contains("\nverdict:   "), "{out}");
    }
}
