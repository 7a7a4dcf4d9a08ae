//! The policy service as Postfix sees it: the real binary, driven over its socket with
//! Postfix's policy delegation protocol (`name=value` lines, an empty line; the answer
//! `action=...` and an empty line), good requests and bad.

mod common;

use common::{dependency, milter::Milter, wait_until};
use indymilter_test::{MacroStage, Status, TestConnection};
use nix::sys::signal::Signal;
use std::{
    ffi::CString,
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// One policy connection, as Postfix's smtpd keeps it: many requests in turn.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to the policy service");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// The answer's lines up to the empty line; `None` when the service closed the
    /// connection instead (with no byte of an answer).
    fn answer(&mut self) -> Option<String> {
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) if answer.is_empty() => return None,
                Ok(0) => panic!("connection closed in mid-answer: {answer:?}"),
                Ok(_) if line == "\n" => return Some(answer),
                Ok(_) => answer.push_str(&line),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no answer: {e}"),
            }
        }
    }

    /// Sends `request` and returns the answer without its trailing newline.
    fn ask(&mut self, request: &str) -> String {
        self.send(request.as_bytes());
        let answer = self.answer().expect("an answer, not a closed connection");
        answer.trim_end_matches('\n').to_string()
    }

    /// Whether the service closed the connection (rather than answering or waiting).
    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
            || matches!(self.reader.read(&mut byte), Err(e) if e.kind() == ErrorKind::ConnectionReset)
    }
}

/// A request as Postfix 3.7's smtpd sends it at RCPT, every attribute included.
fn rcpt_request(helo: &str, rcpt: &str, overrides: &[(&str, &str)]) -> String {
    let mut attributes = vec![
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("protocol_name", "ESMTP"),
        ("client_address", "198.51.100.7"),
        ("client_name", "unknown"),
        ("client_port", "41234"),
        ("reverse_client_name", "unknown"),
        ("server_address", "192.0.2.25"),
        ("server_port", "25"),
        ("helo_name", helo),
        ("sender", "sender@example.org"),
        ("recipient", rcpt),
        ("recipient_count", "0"),
        ("queue_id", ""),
        ("instance", "7a1.656c2f0e.1a2b3.0"),
        ("size", "0"),
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
    for (name, value) in overrides {
        match attributes.iter_mut().find(|(n, _)| n == name) {
            Some(attribute) => attribute.1 = value,
            None => attributes.push((name, value)),
        }
    }
    let mut text: String = attributes
        .iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect();
    text.push('\n');
    text
}

const REJECT: &str = "action=550 5.7.1 bogus helo";
const DUNNO: &str = "action=DUNNO";

const BASE: &str = "
trusted_networks = [\"127.0.0.0/8\", \"10.0.0.0/8\"]
own_addresses = [\"203.0.113.0/24\"]
own_names = [\"mail.example.com\"]
whitelist = [\"private@example.com\"]
[domains.\"tempfail.example\"]
action = \"tempfail\"
[domains.\"log.example\"]
action = \"log\"
[domains.\"off.example\"]
action = \"off\"
";

/// HELO, recipient, attributes that differ from [`rcpt_request`]'s, expected answer.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], String);

/// Asks each case on `client`'s connection and reports every answer that differs.
fn expect_answers(client: &mut Client, cases: &[Case], service: &Milter) {
    let mut problems = Vec::new();
    for (helo, rcpt, overrides, expected) in cases {
        let answer = client.ask(&rcpt_request(helo, rcpt, overrides));
        if answer != *expected {
            problems.push(format!(
                "HELO {helo:?} RCPT {rcpt:?} {overrides:?}: expected {expected:?}, got {answer:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        service.log()
    );
}

#[test]
fn each_rule_exemption_and_action_on_one_connection() {
    let service = Milter::start_policy(BASE, false);
    let mut client = Client::connect(service.addr());
    let cases: &[Case] = &[
        ("[198.51.100.9]", "u@example.com", &[], REJECT.into()),
        ("198.51.100.9", "<u@example.com>", &[], REJECT.into()),
        ("[IPv6:2001:db8::9]", "u@example.com", &[], REJECT.into()),
        // own-ip: the address the client reached (server_address), own_addresses
        (
            "[192.0.2.25]",
            "u@example.com",
            &[],
            format!("{REJECT} 192.0.2.25"),
        ),
        (
            "[IPv6:2001:db8::25]",
            "u@example.com",
            &[("server_address", "2001:db8::25")],
            format!("{REJECT} 2001:db8::25"),
        ),
        (
            "203.0.113.7",
            "u@example.com",
            &[],
            format!("{REJECT} 203.0.113.7"),
        ),
        // rcpt-domain: the recipient's domain, an own name
        (
            "Example.COM.",
            "u@example.com",
            &[],
            format!("{REJECT} matches rcpt"),
        ),
        (
            "mail.example.com",
            "u@example.org",
            &[],
            format!("{REJECT} matches rcpt"),
        ),
        ("example.com", "u@example.org", &[], DUNNO.into()),
        ("mail.example.net", "u@example.com", &[], DUNNO.into()),
        ("localhost", "u@example.com", &[], DUNNO.into()),
        // no HELO at all (Postfix sends an empty helo_name)
        ("", "u@example.com", &[], DUNNO.into()),
        // exemptions
        ("[198.51.100.9]", "private@example.com", &[], DUNNO.into()),
        ("[198.51.100.9]", "Private+x@Example.com", &[], DUNNO.into()),
        (
            "[198.51.100.9]",
            "postmaster@example.com",
            &[],
            DUNNO.into(),
        ),
        (
            "[198.51.100.9]",
            "u@example.com",
            &[("sasl_username", "alice")],
            DUNNO.into(),
        ),
        (
            "[198.51.100.9]",
            "u@example.com",
            &[("client_address", "10.1.2.3")],
            DUNNO.into(),
        ),
        // per-domain actions
        (
            "[198.51.100.9]",
            "u@tempfail.example",
            &[],
            "action=450 4.7.1 bogus helo".into(),
        ),
        ("[198.51.100.9]", "u@log.example", &[], DUNNO.into()),
        ("[198.51.100.9]", "u@off.example", &[], DUNNO.into()),
    ];
    expect_answers(&mut client, cases, &service);

    let log = service.log();
    assert!(
        log.contains("action=reject rule=own-ip client=198.51.100.7 helo=\"[192.0.2.25]\" rcpt=\"u@example.com\" reply=\"550 5.7.1 bogus helo 192.0.2.25\" via=policy"),
        "{log}"
    );
    assert!(
        log.contains("action=log rule=ip client=198.51.100.7 helo=\"[198.51.100.9]\" rcpt=\"u@log.example\" would_reply=\"550 5.7.1 bogus helo\" via=policy"),
        "{log}"
    );
    assert!(log.contains("action=tempfail rule=ip "), "{log}");
    assert!(!log.contains("u@off.example"), "{log}");
    // The counters count what the policy service decided.
    service.signal(Signal::SIGUSR1);
    assert!(
        service.wait_for_log("event=stats rejected_own_ip=3 rejected_ip=3 rejected_rcpt_domain=2 tempfailed_own_ip=0 tempfailed_ip=1 tempfailed_rcpt_domain=0 logged_own_ip=0 logged_ip=1 logged_rcpt_domain=0 tagged_own_ip=0 tagged_ip=0 tagged_rcpt_domain=0 exempted_whitelist=2 exempted_authenticated=1 exempted_trusted=1 exempted_role_account=1 exempted_off=1", Duration::from_secs(5)),
        "{}",
        service.log()
    );
}

/// Postfix on a dual-stack socket may give an IPv4 client IPv4-mapped in client_address:
/// the service judges and logs it as the IPv4 address.
#[test]
fn ipv4_mapped_clients_count_as_ipv4() {
    let service = Milter::start_policy(
        "log_level = \"debug\"\ntrusted_networks = [\"127.0.0.0/8\", \"192.0.2.0/24\"]",
        false,
    );
    let mut client = Client::connect(service.addr());
    for (address, answer) in [
        ("::ffff:127.0.0.1", DUNNO),
        ("::ffff:192.0.2.7", DUNNO),
        ("::ffff:198.51.100.7", REJECT),
    ] {
        let request = rcpt_request(
            "[198.51.100.9]",
            "u@example.com",
            &[("client_address", address)],
        );
        assert_eq!(client.ask(&request), answer, "{address}");
    }
    service.assert_logged_lines(&[
        "debug: action=accept exempt=trusted rule=ip client=127.0.0.1 helo=\"[198.51.100.9]\" rcpt=\"u@example.com\" via=policy",
        "debug: action=accept exempt=trusted rule=ip client=192.0.2.7 helo=\"[198.51.100.9]\" rcpt=\"u@example.com\" via=policy",
        "action=reject rule=ip client=198.51.100.7 helo=\"[198.51.100.9]\" rcpt=\"u@example.com\" reply=\"550 5.7.1 bogus helo\" via=policy",
    ]);
}

#[test]
fn reply_url_follows_the_text() {
    let service = Milter::start_policy(
        "trusted_networks = []\nreply_url = \"https://example.net/why%20helo\"\n",
        false,
    );
    let mut client = Client::connect(service.addr());
    assert_eq!(
        client.ask(&rcpt_request("[198.51.100.9]", "u@example.com", &[])),
        "action=550 5.7.1 bogus helo https://example.net/why%20helo"
    );
}

/// VRFY is expected (Postfix runs `smtpd_recipient_restrictions` for it): DUNNO, no
/// warning. Another state or request type is a misplaced `check_policy_service`: DUNNO
/// and a warning, repeated at most every 10 minutes (the unit test in
/// `src/delegation/misplaced.rs` covers the repeat, which no test here can wait for).
#[test]
fn vrfy_is_expected_and_other_states_warn() {
    let service = Milter::start_policy("trusted_networks = []\n", false);
    let mut client = Client::connect(service.addr());
    let ask = |client: &mut Client, overrides: &[(&str, &str)]| {
        client.ask(&rcpt_request("[198.51.100.9]", "u@example.com", overrides))
    };
    for state in ["VRFY", "vrfy", "VRFY"] {
        assert_eq!(
            ask(&mut client, &[("protocol_state", state)]),
            DUNNO,
            "{state}"
        );
    }
    // The next state warns: the first warning of the process, so VRFY's would come first.
    assert_eq!(ask(&mut client, &[("protocol_state", "CONNECT")]), DUNNO);
    assert!(
        service.wait_for_log("protocol_state=\"CONNECT\"", Duration::from_secs(5)),
        "{}",
        service.log()
    );
    for state in ["EHLO", "MAIL", "DATA", "END-OF-MESSAGE", "VRFY", "DATA"] {
        assert_eq!(
            ask(&mut client, &[("protocol_state", state)]),
            DUNNO,
            "{state}"
        );
    }
    // RCPT on the same connection is still judged.
    assert_eq!(ask(&mut client, &[]), REJECT);
    // Another request type is no refusal either.
    assert_eq!(ask(&mut client, &[("request", "something_else")]), DUNNO);
    assert!(
        service.wait_for_log(
            "request=\"something_else\" answered=DUNNO",
            Duration::from_secs(5)
        ),
        "{}",
        service.log()
    );
    assert_eq!(ask(&mut client, &[("request", "another")]), DUNNO);
    // Answered after every request above: any warning for them is in the log by now.
    assert_eq!(ask(&mut client, &[]), REJECT);
    let log = service.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("answered=DUNNO"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log}");
    assert!(
        warnings[0]
            .starts_with("warning: event=policy_request protocol_state=\"CONNECT\" answered=DUNNO")
            && warnings[0].contains("smtpd_recipient_restrictions")
            && warnings[0].ends_with("(logged at most every 10m)"),
        "{log}"
    );
    assert!(
        warnings[1]
            .starts_with("warning: event=policy_request request=\"something_else\" answered=DUNNO")
            && warnings[1].ends_with("(logged at most every 10m)"),
        "{log}"
    );
    assert!(!log.contains("VRFY"), "{log}");
}

/// Each kind of bad input closes its own connection, unanswered, with one warning; a
/// connection opened before it goes on being answered, and so does a new one.
#[test]
fn bad_input_closes_only_its_own_connection() {
    let service = Milter::start_policy(
        "trusted_networks = []\npolicy_idle_timeout = \"2s\"\n",
        false,
    );
    let mut bystander = Client::connect(service.addr());
    assert_eq!(
        bystander.ask(&rcpt_request("[198.51.100.9]", "u@example.com", &[])),
        REJECT
    );
    let long_line = format!("helo_name={}\n\n", "x".repeat(10_000));
    let many = "a=b\n".repeat(300) + "\n";
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no =",
            b"request=smtpd_access_policy\ngarbage\n\n".to_vec(),
            "not a name=value line: \\\"garbage\\\"",
        ),
        ("empty name", b"=x\n\n".to_vec(), "not a name=value line"),
        (
            "NUL",
            b"request=smtpd_access_policy\nhelo_name=a\0b\n\n".to_vec(),
            "not a name=value line",
        ),
        ("empty request", b"\n".to_vec(), "not a name=value line"),
        (
            "line too long",
            long_line.into_bytes(),
            "an attribute line longer than 8192 bytes",
        ),
        (
            "too many attributes",
            many.into_bytes(),
            "more than 256 attributes",
        ),
        (
            "binary junk",
            (0u8..=255).collect(),
            "not a name=value line",
        ),
    ];
    for (label, input, error) in &bad {
        let before = service.log().matches("result=closed").count();
        let mut client = Client::connect(service.addr());
        client.send(input);
        assert!(client.answer().is_none(), "{label}: answered");
        assert!(
            service.wait_for(Duration::from_secs(5), |log| log
                .matches("result=closed")
                .count()
                > before),
            "{label}: no warning\n{}",
            service.log()
        );
        let log = service.log();
        let line = log
            .lines()
            .filter(|l| l.contains("result=closed"))
            .nth(before)
            .unwrap();
        assert!(
            line.starts_with("warning: event=policy_request result=closed peer=127.0.0.1:")
                && line.contains(error),
            "{label}: {line}"
        );
        assert_eq!(
            log.matches("result=closed").count(),
            before + 1,
            "{label}: {log}"
        );
        // The bystander's connection is still served.
        assert_eq!(
            bystander.ask(&rcpt_request("[198.51.100.9]", "u@example.com", &[])),
            REJECT,
            "{label}"
        );
    }

    // Closed in mid-request: nothing to answer, a warning.
    let mut client = Client::connect(service.addr());
    client.send(b"request=smtpd_access_policy\nprotocol_state=RC");
    drop(client);
    assert!(
        service.wait_for_log(
            "peer closed the connection in mid-request",
            Duration::from_secs(5)
        ),
        "{}",
        service.log()
    );

    // An endless request: a line at a time, never the empty line. Closed once the
    // request has taken policy_idle_timeout (2 s), however busy the peer keeps it.
    let mut client = Client::connect(service.addr());
    let start = Instant::now();
    let closed = loop {
        if client.writer.write_all(b"x=y\n").is_err() {
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
        // Meanwhile the bystander is served (and kept from its own idle timeout).
        assert_eq!(
            bystander.ask(&rcpt_request("[198.51.100.9]", "u@example.com", &[])),
            REJECT
        );
        if service.log().contains("was not complete after 2s") {
            break client.closed();
        }
        if start.elapsed() > Duration::from_secs(10) {
            break false;
        }
    };
    // A deadline reset by each line would never cut it off: the loop's 10 s ends it.
    assert!(
        closed,
        "an endless request was not cut off\n{}",
        service.log()
    );

    // Values that are not UTF-8 are judged, not fatal: a Latin-1 HELO is a name.
    let mut client = Client::connect(service.addr());
    let mut request = rcpt_request("b\u{fc}cher", "u@example.com", &[]).into_bytes();
    let at = request
        .windows(2)
        .position(|w| w == "\u{fc}".as_bytes())
        .unwrap();
    request.splice(at..at + 2, [0xfc]);
    client.send(&request);
    assert_eq!(client.answer().as_deref(), Some("action=DUNNO\n"));
    let mut request = rcpt_request("[198.51.100.9]", "u\u{fc}@example.com", &[]).into_bytes();
    let at = request
        .windows(2)
        .position(|w| w == "\u{fc}".as_bytes())
        .unwrap();
    request.splice(at..at + 2, [0xfc]);
    client.send(&request);
    assert_eq!(
        client.answer().as_deref(),
        Some("action=550 5.7.1 bogus helo\n")
    );
    assert!(
        service.log().contains("rcpt=\"u\\u{fffd}@example.com\""),
        "{}",
        service.log()
    );

    // Still the same process, still serving the first connection.
    assert_eq!(
        bystander.ask(&rcpt_request("mail.example.net", "u@example.com", &[])),
        DUNNO
    );
    assert!(service.stop(), "did not exit cleanly");
}

#[test]
fn an_idle_connection_is_closed_after_policy_idle_timeout() {
    let service = Milter::start_policy(
        "trusted_networks = []\npolicy_idle_timeout = \"1s\"\n",
        false,
    );
    let mut client = Client::connect(service.addr());
    assert_eq!(
        client.ask(&rcpt_request("[198.51.100.9]", "u@example.com", &[])),
        REJECT
    );
    let start = Instant::now();
    assert!(client.closed(), "not closed");
    // Not before the timeout; how soon after is the client's 10 s read timeout's to bound.
    let idle = start.elapsed();
    assert!(idle >= Duration::from_millis(900), "{idle:?}");
    // Closing an idle connection is routine (Postfix closes its own after 300 s): no warning.
    assert!(!service.log().contains("warning:"), "{}", service.log());
}

#[test]
fn connections_beyond_max_connections_wait() {
    let service = Milter::start_policy("trusted_networks = []\nmax_connections = 2\n", false);
    let request = rcpt_request("[198.51.100.9]", "u@example.com", &[]);
    let mut first = Client::connect(service.addr());
    let mut second = Client::connect(service.addr());
    assert_eq!(first.ask(&request), REJECT);
    assert_eq!(second.ask(&request), REJECT);
    // The kernel queues the third; the service does not take it up yet.
    let mut third = Client::connect(service.addr());
    third.send(request.as_bytes());
    third
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(third.reader.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a connection beyond max_connections was served"
    );
    assert!(
        service.wait_for_log(
            "event=policy_limit max_connections=2 reached",
            Duration::from_secs(5)
        ),
        "{}",
        service.log()
    );
    drop(first);
    third
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        third.answer().as_deref(),
        Some("action=550 5.7.1 bogus helo\n")
    );
    assert_eq!(second.ask(&request), REJECT);
}

/// A reload applies from the next request on, on a connection that stays open (Postfix
/// keeps them for up to 1000 s); a bad config keeps the one in force.
#[test]
fn reload_applies_to_the_next_request_on_an_open_connection() {
    let service = Milter::start_policy("trusted_networks = []\n", false);
    let mut client = Client::connect(service.addr());
    let request = rcpt_request("[198.51.100.9]", "u@example.com", &[]);
    assert_eq!(client.ask(&request), REJECT);
    service.write_config("trusted_networks = []\naction = \"tempfail\"\n");
    assert!(service.reload().contains("result=ok"));
    assert_eq!(client.ask(&request), "action=450 4.7.1 bogus helo");
    service.write_config("trusted_networks = []\naction = \"bounce\"\n");
    assert!(service.reload().contains("result=failed"));
    assert_eq!(client.ask(&request), "action=450 4.7.1 bogus helo");
    // policy_socket, like socket, takes effect at restart only.
    service.write_config("trusted_networks = []\naction = \"log\"\nmax_connections = 7\n");
    assert!(service.reload().contains("result=ok"));
    assert_eq!(client.ask(&request), DUNNO);
    let log = service.log();
    assert!(log.contains("restart_needed=max_connections "), "{log}");
}

/// Both front ends in one process: one configuration, one set of counters, one log
/// with `via=` saying which decided.
#[test]
fn milter_and_policy_service_share_counters_and_log() {
    let service = Milter::start_policy("trusted_networks = []\n", true);
    let milter_addr = service.milter_addr().expect("the milter is on");
    let mut client = Client::connect(service.addr());
    assert_eq!(
        client.ask(&rcpt_request("[198.51.100.9]", "u@example.com", &[])),
        REJECT
    );
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut conn = TestConnection::open(milter_addr).await.expect("open");
            conn.macros(MacroStage::Connect, [("j", "mx.example.com")])
                .await
                .unwrap();
            conn.connect("client.example.net", [198, 51, 100, 7])
                .await
                .unwrap();
            conn.helo("[198.51.100.9]").await.unwrap();
            conn.mail(["<s@example.org>"]).await.unwrap();
            let status = conn.rcpt(["<v@example.com>"]).await.unwrap();
            conn.close().await.unwrap();
            status
        });
    assert_eq!(
        status,
        Status::Reject {
            message: Some(CString::new("550 5.7.1 bogus helo").unwrap())
        }
    );
    service.signal(Signal::SIGUSR1);
    assert!(
        service.wait_for_log(
            "event=stats rejected_own_ip=0 rejected_ip=2 ",
            Duration::from_secs(5)
        ),
        "{}",
        service.log()
    );
    let log = service.log();
    assert!(
        log.contains("rcpt=\"u@example.com\" reply=\"550 5.7.1 bogus helo\" via=policy"),
        "{log}"
    );
    assert!(
        log.contains("rcpt=\"v@example.com\" reply=\"550 5.7.1 bogus helo\" via=milter"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "event=start version={} socket=inet:{milter_addr} policy_socket=inet:{}",
            env!("CARGO_PKG_VERSION"),
            service.addr()
        )),
        "{log}"
    );
}

/// SIGTERM: no new connections; an idle connection is closed at once; a request under
/// way is read to its end and answered, then its connection closed; the process exits.
#[test]
fn sigterm_answers_the_request_under_way_then_exits() {
    let service = Milter::start_policy("trusted_networks = []\n", false);
    let addr = service.addr();
    let mut idle = Client::connect(addr);
    assert_eq!(
        idle.ask(&rcpt_request("[198.51.100.9]", "u@example.com", &[])),
        REJECT
    );
    let mut busy = Client::connect(addr);
    let request = rcpt_request("[198.51.100.9]", "u@example.com", &[]);
    let (head, tail) = request.split_at(request.len() / 2);
    busy.send(head.as_bytes());
    assert!(wait_until(Duration::from_secs(5), || service
        .log()
        .contains("event=start")));
    std::thread::sleep(Duration::from_millis(200));
    service.signal(Signal::SIGTERM);
    assert!(
        service.wait_for_log(
            "event=shutdown new_connections=refused sessions_in_progress=2",
            Duration::from_secs(5)
        ),
        "{}",
        service.log()
    );
    assert!(idle.closed(), "the idle connection was not closed");
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(addr).is_err()),
        "still accepting connections while stopping"
    );
    busy.send(tail.as_bytes());
    assert_eq!(
        busy.answer().as_deref(),
        Some("action=550 5.7.1 bogus helo\n")
    );
    assert!(busy.closed(), "closed after its answer");
    assert!(
        service.wait_for_log("event=stop ", Duration::from_secs(5)),
        "{}",
        service.log()
    );
    assert!(service.stop(), "no clean exit");
}

/// Postfix does not tell a policy service its myhostname: own names are `own_names` and
/// this host's name, when fully qualified (the start line says which). The service runs
/// under a host name the test chooses, dotted and single-label, whatever the real one.
#[test]
#[ignore = "needs root (a UTS namespace of its own); CI runs it with --include-ignored"]
fn the_hosts_own_name_counts_as_an_own_name() {
    for (host_name, helo, start_name, answer) in [
        (
            "MX.Test.Example",
            "mx.test.example",
            "mx.test.example",
            format!("{REJECT} matches rcpt"),
        ),
        // A single label is no FQDN: a HELO like it matches no rule.
        ("mxhost", "mxhost", "", DUNNO.to_string()),
    ] {
        let service = Milter::start_policy_on_host("trusted_networks = []\n", host_name);
        let available = service.is_some();
        if !dependency(
            available,
            "a UTS namespace (unshare --uts)",
            "run the tests as root with util-linux's unshare",
        ) {
            return;
        }
        let service = service.unwrap();
        // The sockets are bound before the start line is logged.
        assert!(service.wait_for_log("event=start", Duration::from_secs(5)));
        assert!(
            service
                .log()
                .contains(&format!("policy_host_name=\"{start_name}\"")),
            "{host_name}: {}",
            service.log()
        );
        let mut client = Client::connect(service.addr());
        assert_eq!(
            client.ask(&rcpt_request(helo, "u@example.org", &[])),
            answer,
            "{host_name}"
        );
    }
}

/// `tag`: `action=PREPEND X-Bogus-HELO: ...` for the first tagged recipient of a message
/// (Postfix's `instance`), DUNNO for the others of the same message.
#[test]
fn tag_prepends_the_header_once_per_message() {
    let service = Milter::start_policy("trusted_networks = []\n[rules]\nip = \"tag\"\n", false);
    let mut client = Client::connect(service.addr());
    let prepend =
        "action=PREPEND X-Bogus-HELO: rule=ip helo=\"[198.51.100.9]\" client=198.51.100.7";
    let ask = |client: &mut Client, rcpt: &str, instance: &str| {
        client.ask(&rcpt_request(
            "[198.51.100.9]",
            rcpt,
            &[("instance", instance)],
        ))
    };
    assert_eq!(ask(&mut client, "a@example.com", "1.1"), prepend);
    assert_eq!(ask(&mut client, "b@example.com", "1.1"), DUNNO);
    assert_eq!(ask(&mut client, "c@example.com", "1.2"), prepend);
    let log = service.log();
    assert_eq!(log.matches("action=tag rule=ip").count(), 3, "{log}");
    assert!(log.contains("header=\"X-Bogus-HELO: rule=ip helo=\\\"[198.51.100.9]\\\" client=198.51.100.7\" via=policy"), "{log}");
}

/// Once per message across connections: with `smtpd_policy_service_request_limit = 1`
/// (or after `_max_ttl`, `_max_idle`) Postfix asks about each recipient of one message,
/// one `instance`, over a new connection; the message still gets one header.
#[test]
fn tag_prepends_once_per_message_across_connections() {
    let service = Milter::start_policy("trusted_networks = []\n[rules]\nip = \"tag\"\n", false);
    let ask = |rcpt: &str, instance: &str| {
        // One request per connection, closed after its answer, as Postfix does with
        // a request limit of 1.
        let mut client = Client::connect(service.addr());
        let answer = client.ask(&rcpt_request(
            "[198.51.100.9]",
            rcpt,
            &[("instance", instance)],
        ));
        drop(client);
        answer
    };
    let mut answers = Vec::new();
    for rcpt in ["a@example.com", "b@example.com", "c@example.com"] {
        answers.push(ask(rcpt, "2c4f.6770a1b2.3.0"));
    }
    // Another message, interleaved on a connection kept open meanwhile, gets its own.
    let mut open = Client::connect(service.addr());
    let other = rcpt_request(
        "[198.51.100.9]",
        "d@example.com",
        &[("instance", "2c50.6770a1b3.1.0")],
    );
    answers.push(open.ask(&other));
    answers.push(ask("e@example.com", "2c4f.6770a1b2.3.0"));
    answers.push(open.ask(&other));
    let prepends: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.starts_with("action=PREPEND X-Bogus-HELO: "))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(prepends, [0, 3], "{answers:#?}\n{}", service.log());
    for i in [1, 2, 4, 5] {
        assert_eq!(answers[i], DUNNO, "{answers:#?}");
    }
    // Each recipient is still logged and counted as tagged.
    let log = service.log();
    assert_eq!(log.matches("action=tag rule=ip").count(), 6, "{log}");
}

/// A unix socket for the policy service, the milter's off: served, given `socket_mode`,
/// and removed at exit.
#[test]
fn policy_service_on_a_unix_socket() {
    use std::os::unix::{fs::PermissionsExt, net::UnixStream};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.sock");
    let config = dir.path().join("milter.conf");
    std::fs::write(
        &config,
        format!(
            "socket = \"\"\npolicy_socket = \"unix:{}\"\nsocket_mode = \"0600\"\ntrusted_networks = []\n",
            path.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(common::milter::BIN)
        .arg("-c")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || UnixStream::connect(&path)
            .is_ok()),
        "no policy socket at {}",
        path.display()
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stream = UnixStream::connect(&path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .write_all(rcpt_request("[198.51.100.9]", "u@example.com", &[]).as_bytes())
        .unwrap();
    let mut answer = String::new();
    let mut reader = BufReader::new(stream);
    while !answer.ends_with("\n\n") {
        assert!(reader.read_line(&mut answer).unwrap() > 0, "closed");
    }
    assert_eq!(answer, format!("{REJECT}\n\n"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!path.exists(), "the socket file was left behind");
}

/// The opt-in rules over the policy service: per recipient, with the whitelist, an `off`
/// domain, a per-domain rule key and the exemptions; off where no rule key names them.
#[test]
fn invalid_and_non_fqdn_per_recipient() {
    let service = Milter::start_policy(
        &format!(
            "{BASE}
[rules]
invalid = \"reject\"
non-fqdn = \"tempfail\"
[domains.\"tag.example\".rules]
non-fqdn = \"tag\""
        ),
        false,
    );
    let mut client = Client::connect(service.addr());
    let invalid = "action=550 5.7.1 bogus helo invalid name";
    let non_fqdn = "action=450 4.7.1 bogus helo not fully qualified";
    let cases: &[Case] = &[
        ("exa_mple.com", "u@example.com", &[], invalid.into()),
        ("[192.0.2.9", "u@example.com", &[], invalid.into()),
        ("ex..ample", "u@example.com", &[], invalid.into()),
        ("DESKTOP-4F2K", "u@example.com", &[], non_fqdn.into()),
        ("localhost", "u@tempfail.example", &[], non_fqdn.into()),
        ("localhost", "private@example.com", &[], DUNNO.into()),
        ("localhost", "u@off.example", &[], DUNNO.into()),
        ("localhost", "u@log.example", &[], non_fqdn.into()),
        (
            "localhost",
            "u@tag.example",
            &[],
            "action=PREPEND X-Bogus-HELO: rule=non-fqdn helo=\"localhost\" client=198.51.100.7"
                .into(),
        ),
        (
            "localhost",
            "u@example.com",
            &[("sasl_username", "alice")],
            DUNNO.into(),
        ),
        (
            "exa_mple.com",
            "u@example.com",
            &[("client_address", "10.1.2.3")],
            DUNNO.into(),
        ),
        ("bücher.example", "u@example.com", &[], DUNNO.into()),
        ("", "u@example.com", &[], DUNNO.into()),
    ];
    expect_answers(&mut client, cases, &service);
    let log = service.log();
    assert!(
        log.contains("action=reject rule=invalid client=198.51.100.7 helo=\"exa_mple.com\" rcpt=\"u@example.com\" reply=\"550 5.7.1 bogus helo invalid name\" via=policy"),
        "{log}"
    );
    service.signal(Signal::SIGUSR1);
    assert!(
        service.wait_for_log(" rejected_invalid=3 rejected_non_fqdn=0 tempfailed_invalid=0 tempfailed_non_fqdn=3 logged_invalid=0 logged_non_fqdn=0 tagged_invalid=0 tagged_non_fqdn=1 ", Duration::from_secs(5)),
        "{}",
        service.log()
    );

    // Without a rule key they are off, whatever `action` says.
    let off = Milter::start_policy("action = \"reject\"\n", false);
    let mut client = Client::connect(off.addr());
    for helo in ["localhost", "exa_mple.com"] {
        assert_eq!(client.ask(&rcpt_request(helo, "u@example.com", &[])), DUNNO);
    }
}
