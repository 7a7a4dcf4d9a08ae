//! The end-to-end cases; `main.rs` runs each against Postfix and against Sendmail.
//! Every case prints what the client saw (`--nocapture` shows it).

use crate::{
    bed::{helo_command, Bed},
    common::{
        mta::Kind,
        smtp::{Outcome, Session},
    },
};
use std::time::Duration;

pub use crate::{
    dns::{
        dns_failure_per_recipient, dns_last_helo_decides, dns_mismatch_tagged,
        dns_unknown_per_recipient, dns_waits_for_a_slow_answer,
    },
    drain::stop_drains_whole_sessions,
    forged::forged_headers_removed,
    macros_seen::macros_and_helo_calls,
    opt_in::invalid_and_non_fqdn,
    percent::percent_in_reply_text,
};

const BOGUS: &str = "550 5.7.1 bogus helo";
const MATCHES_RCPT: &str = "550 5.7.1 bogus helo matches rcpt";

fn show(kind: Kind, label: &str, outcome: &Outcome) {
    println!("[{kind}] {label}: {}", helo_command(outcome));
    for reply in [&outcome.mail].into_iter().flatten() {
        println!("[{kind}]   MAIL -> {}", reply.line());
    }
    for (rcpt, reply) in &outcome.rcpts {
        println!("[{kind}]   RCPT <{rcpt}> -> {}", reply.line());
    }
    if let Some(reply) = &outcome.data {
        println!("[{kind}]   DATA -> {}", reply.line());
    }
}

/// A labelled session and the reply expected for each of its recipients.
type Case<'a> = (&'a str, Session, Vec<(&'a str, String)>);

/// Each rule, every list entry, both verbs, and names the rules do not cover.
pub fn each_rule(kind: Kind) {
    let mut bed = Bed::start(
        kind,
        r#"own_addresses = ["192.0.2.25", "198.51.100.0/24"]
"#,
    );
    let own_name = kind.hostname();
    let cases: Vec<Case> = vec![
        (
            "ip literal",
            Session::new("[192.0.2.9]", &["user@example.com", "user@example.org"]),
            vec![
                ("user@example.com", BOGUS.into()),
                ("user@example.org", BOGUS.into()),
            ],
        ),
        (
            "bare ip",
            Session::new("192.0.2.9", &["user@example.com"]),
            vec![("user@example.com", BOGUS.into())],
        ),
        (
            "ip literal, HELO verb",
            Session::new("[192.0.2.9]", &["user@example.com"]).helo_verb(),
            vec![("user@example.com", BOGUS.into())],
        ),
        (
            "the MTA's own listening address",
            Session::new("[127.0.0.1]", &["user@example.com"]),
            vec![("user@example.com", format!("{BOGUS} 127.0.0.1"))],
        ),
        (
            "own_addresses single entry",
            Session::new("[192.0.2.25]", &["user@example.com"]),
            vec![("user@example.com", format!("{BOGUS} 192.0.2.25"))],
        ),
        (
            "own_addresses network entry, bare",
            Session::new("198.51.100.7", &["user@example.com"]),
            vec![("user@example.com", format!("{BOGUS} 198.51.100.7"))],
        ),
        (
            "recipient's domain",
            Session::new("example.com", &["user@example.com", "user@example.org"]),
            vec![
                ("user@example.com", MATCHES_RCPT.into()),
                ("user@example.org", "250".into()),
            ],
        ),
        (
            "recipient's domain, other case, trailing dot",
            Session::new("EXAMPLE.Com.", &["user@example.com"]),
            vec![("user@example.com", MATCHES_RCPT.into())],
        ),
        (
            "the MTA's own name (j macro)",
            Session::new(own_name, &["user@example.org"]),
            vec![("user@example.org", MATCHES_RCPT.into())],
        ),
        (
            "IPv6 literal",
            Session::new("[IPv6:2001:db8::9]", &["user@example.com"]),
            vec![("user@example.com", BOGUS.into())],
        ),
        (
            "a host name",
            Session::new("mail.example.net", &["user@example.com"]),
            vec![("user@example.com", "250".into())],
        ),
        (
            "localhost (no rule names it)",
            Session::new("localhost", &["user@example.com"]),
            vec![("user@example.com", "250".into())],
        ),
    ];
    for (label, session, expected) in &cases {
        let outcome = bed.send(session);
        show(kind, label, &outcome);
        for (rcpt, reply) in expected {
            bed.expect_rcpt(&outcome, rcpt, reply);
        }
    }
    // One log line per refusal, with the rule's name.
    for rule in ["rule=ip ", "rule=own-ip ", "rule=rcpt-domain "] {
        if !bed.milter().log().contains(rule) {
            bed.problem(format!("no {rule:?} line in the milter log"));
        }
    }
    bed.finish();
}

/// A good HELO is accepted and the message really delivered (to the discard transport /
/// the /bin/true mailer), as the MTA's log shows.
pub fn good_helo_is_delivered(kind: Kind) {
    let mut bed = Bed::start(kind, "");
    let session = Session::new(
        "mail.example.net",
        &["alice@example.com", "bob@example.org"],
    )
    .with_data();
    let outcome = bed.send(&session);
    show(kind, "good HELO", &outcome);
    bed.expect_rcpt(&outcome, "alice@example.com", "250");
    bed.expect_rcpt(&outcome, "bob@example.org", "250");
    bed.expect_delivered_to(&outcome, &["alice@example.com", "bob@example.org"]);
    bed.finish();
}

/// One message, a bogus HELO, a whitelisted and a non-whitelisted recipient: the first
/// (and its +detail form) gets 250, the other the rejection, and the message goes to the
/// whitelisted ones only.
pub fn whitelisted_and_other_recipient(kind: Kind) {
    let mut bed = Bed::start(kind, "whitelist = [\"private@example.com\"]\n");
    let session = Session::new(
        "[192.0.2.9]",
        &[
            "private@example.com",
            "sales@example.com",
            "Private+urgent@Example.com",
        ],
    )
    .with_data();
    let outcome = bed.send(&session);
    show(kind, "whitelist", &outcome);
    bed.expect_rcpt(&outcome, "private@example.com", "250");
    bed.expect_rcpt(&outcome, "sales@example.com", BOGUS);
    bed.expect_rcpt(&outcome, "Private+urgent@Example.com", "250");
    bed.expect_delivered_to(
        &outcome,
        &["private@example.com", "Private+urgent@Example.com"],
    );
    bed.finish();
}

/// Per-domain actions, all in one message: reject, tempfail, log (dry run), off.
pub fn domain_actions(kind: Kind) {
    let mut bed = Bed::start(
        kind,
        r#"action = "reject"
[domains."tempfail.example"]
action = "tempfail"
[domains."log.example"]
action = "log"
[domains."off.example"]
action = "off"
"#,
    );
    let session = Session::new(
        "[192.0.2.9]",
        &[
            "a@example.com",
            "b@tempfail.example",
            "c@log.example",
            "d@off.example",
        ],
    )
    .with_data();
    let outcome = bed.send(&session);
    show(kind, "domain actions", &outcome);
    bed.expect_rcpt(&outcome, "a@example.com", BOGUS);
    bed.expect_rcpt(&outcome, "b@tempfail.example", "450 4.7.1 bogus helo");
    bed.expect_rcpt(&outcome, "c@log.example", "250");
    bed.expect_rcpt(&outcome, "d@off.example", "250");
    bed.expect_delivered_to(&outcome, &["c@log.example", "d@off.example"]);

    let log = bed.milter().log();
    let log_line = log
        .lines()
        .find(|l| l.contains("action=log") && l.contains("c@log.example"));
    match log_line {
        Some(line) => {
            println!("[{kind}]   milter: {line}");
            if !line.contains("rule=ip") || !line.contains("550 5.7.1 bogus helo") {
                bed.problem(format!(
                    "the action=log line lacks the would-be decision: {line}"
                ));
            }
        }
        None => bed.problem("no action=log line for c@log.example in the milter log"),
    }
    if let Some(line) = log.lines().find(|l| l.contains("d@off.example")) {
        bed.problem(format!("a domain that is off was judged: {line}"));
    }
    bed.finish();
}

/// The milter stopped: with `milter_default_action = tempfail` (Postfix) and `F=T`
/// (Sendmail) the client gets a 4xx, never a 5xx, and no message is accepted.
pub fn milter_down_tempfails(kind: Kind) {
    let mut bed = Bed::start(kind, "");
    // The set-up works while the milter runs.
    let before = bed.send(&Session::new("[192.0.2.9]", &["user@example.com"]));
    bed.expect_rcpt(&before, "user@example.com", BOGUS);
    let stopped_addr = bed.milter().addr();
    if !bed.stop_milter() {
        bed.problem("the milter did not exit cleanly on SIGTERM");
    }
    assert!(
        std::net::TcpStream::connect(stopped_addr).is_err(),
        "the stopped milter still listens"
    );

    for (label, helo) in [
        ("milter down, good HELO", "mail.example.net"),
        ("milter down, bogus HELO", "[192.0.2.9]"),
    ] {
        let session = Session::new(helo, &["user@example.com", "other@example.org"]).with_data();
        let outcome = bed.send(&session);
        show(kind, label, &outcome);
        for (n, line) in outcome.transcript.iter().enumerate() {
            if n > 0 {
                println!("[{kind}]     {line}");
            }
        }
        let replies = outcome.replies();
        if let Some(bad) = replies.iter().find(|r| r.code >= 500) {
            bed.problem(format!(
                "{label}: a 5xx while the milter is down: {}\n{}",
                bad.full(),
                outcome.transcript()
            ));
        }
        if !replies.iter().any(|r| (400..500).contains(&r.code)) {
            bed.problem(format!(
                "{label}: no 4xx while the milter is down\n{}",
                outcome.transcript()
            ));
        }
        if outcome.data.as_ref().is_some_and(|r| r.code == 250) {
            bed.problem(format!(
                "{label}: the message was accepted while the milter is down\n{}",
                outcome.transcript()
            ));
        }
    }
    bed.finish();
}

/// SIGHUP with a changed config: the next connection gets the new policy; a bad config
/// keeps the one in force.
pub fn sighup_changes_policy(kind: Kind) {
    let mut bed = Bed::start(kind, "action = \"reject\"\n");
    let session = Session::new("[192.0.2.9]", &["user@example.com", "user@example.org"]);

    let first = bed.send(&session);
    show(kind, "before SIGHUP (reject)", &first);
    bed.expect_rcpt(&first, "user@example.com", BOGUS);

    bed.write_config("action = \"tempfail\"\n[domains.\"example.org\"]\naction = \"off\"\n");
    let result = bed.milter().reload();
    println!("[{kind}]   milter: {result}");
    if !result.contains("result=ok") {
        bed.problem(format!("reload did not succeed: {result}"));
    }
    let second = bed.send(&session);
    show(kind, "after SIGHUP (tempfail, example.org off)", &second);
    bed.expect_rcpt(&second, "user@example.com", "450 4.7.1 bogus helo");
    bed.expect_rcpt(&second, "user@example.org", "250");

    bed.write_config("action = \"no-such-action\"\n");
    let result = bed.milter().reload();
    println!("[{kind}]   milter: {result}");
    if !result.contains("result=failed") {
        bed.problem(format!("a bad config was not refused: {result}"));
    }
    let third = bed.send(&session);
    show(
        kind,
        "after SIGHUP with a bad config (tempfail stays)",
        &third,
    );
    bed.expect_rcpt(&third, "user@example.com", "450 4.7.1 bogus helo");
    bed.finish();
}

/// A `reply_url` with a `%` in it: the milter escapes it as `%%` (libmilter's rule), and
/// the client must see the URL as configured.
pub fn reply_url_with_percent(kind: Kind) {
    let url = "https://example.net/why%20bogus-helo?q=100%25";
    let mut bed = Bed::start(kind, &format!("reply_url = \"{url}\"\n"));
    let outcome = bed.send(&Session::new("[192.0.2.9]", &["user@example.com"]));
    show(kind, "reply_url with %", &outcome);
    bed.expect_rcpt(&outcome, "user@example.com", &format!("{BOGUS} {url}"));
    bed.finish();
}

/// A client on ::1 (Sendmail passes it to the milter as `IPv6:0:0:0:0:0:0:0:1`).
pub fn ipv6_client(kind: Kind) {
    let mut bed = Bed::start(kind, "");
    let bogus = bed.send_v6(&Session::new("[192.0.2.9]", &["user@example.com"]));
    show(kind, "IPv6 client, ip literal", &bogus);
    bed.expect_rcpt(&bogus, "user@example.com", BOGUS);

    let own = bed.send_v6(&Session::new("[IPv6:::1]", &["user@example.com"]));
    show(kind, "IPv6 client, own address ::1", &own);
    bed.expect_rcpt(&own, "user@example.com", &format!("{BOGUS} ::1"));

    let good = bed.send_v6(&Session::new("mail.example.net", &["user@example.com"]).with_data());
    show(kind, "IPv6 client, good HELO", &good);
    bed.expect_rcpt(&good, "user@example.com", "250");
    bed.expect_delivered_to(&good, &["user@example.com"]);

    if !bed
        .milter()
        .wait_for_log("client=::1", Duration::from_secs(5))
    {
        bed.problem("the milter never logged client=::1");
    }
    bed.finish();
}

/// What an administrator tries first (issue 10): postmaster and abuse are never refused,
/// an IPv6 trusted network does not trust IPv4 clients, internationalized domains match
/// in every spelling, and every text that denotes an address is an address.
pub fn administrator_probes(kind: Kind) {
    let mut bed = Bed::start_exact(
        kind,
        r#"trusted_networks = ["::/0"]
own_interfaces = false
own_addresses = ["192.0.2.25"]
whitelist = ["@whole.example", "private@example.com"]
[domains."bücher.example"]
action = "off"
"#,
    );
    let mut cases: Vec<Case> = vec![
        (
            "IPv4 client, ::/0 trusted: the IPv4 client is not",
            Session::new(
                "[192.0.2.9]",
                &[
                    "user@example.com",
                    "postmaster",
                    "postmaster@example.com",
                    "Abuse@example.org",
                    "u@xn--bcher-kva.example",
                    "u@XN--BCHER-KVA.EXAMPLE",
                    "Private@EXAMPLE.com",
                    "anyone@whole.example",
                ],
            ),
            vec![
                ("user@example.com", BOGUS.into()),
                ("postmaster", "250".into()),
                ("postmaster@example.com", "250".into()),
                ("Abuse@example.org", "250".into()),
                ("u@xn--bcher-kva.example", "250".into()),
                ("u@XN--BCHER-KVA.EXAMPLE", "250".into()),
                ("Private@EXAMPLE.com", "250".into()),
                ("anyone@whole.example", "250".into()),
            ],
        ),
        (
            "a 32-bit number is an address",
            Session::new("3221225993", &["user@example.com"]),
            vec![("user@example.com", BOGUS.into())],
        ),
        (
            "leading zeros",
            Session::new("192.000.002.009", &["user@example.com"]),
            vec![("user@example.com", BOGUS.into())],
        ),
        (
            "an own address in hexadecimal",
            Session::new("0xc0.0.2.25", &["user@example.com"]),
            vec![("user@example.com", format!("{BOGUS} 192.0.2.25"))],
        ),
    ];
    // Sendmail itself refuses this greeting (501 5.0.0 Invalid domain name).
    if matches!(kind, Kind::Postfix) {
        cases.push((
            "an IPv6 literal with a zone",
            Session::new("[IPv6:fe80::1%eth0]", &["user@example.com"]),
            vec![("user@example.com", BOGUS.into())],
        ));
    }
    for (label, session, expected) in &cases {
        let outcome = bed.send(session);
        show(kind, label, &outcome);
        for (rcpt, reply) in expected {
            bed.expect_rcpt(&outcome, rcpt, reply);
        }
    }
    bed.finish();
}

/// Actions per rule and per domain, the most specific setting first, and `tag` (issue
/// 14): the tagged recipients are accepted and the message carries one `X-Bogus-HELO`
/// header, which the MTA logs (Postfix: a `milter_header_checks` rule; Sendmail: its
/// milter log).
pub fn per_rule_actions_and_tag(kind: Kind) {
    let checks = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let path = checks.path().join("milter_header_checks");
        std::fs::write(&path, "/^X-Bogus-HELO:/ INFO\n").unwrap();
        std::fs::set_permissions(checks.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let main_cf = format!(
        "milter_header_checks = regexp:{}/milter_header_checks\n",
        checks.path().display()
    );
    let mut bed = Bed::start_with_main_cf(
        kind,
        &format!(
            r#"{}own_addresses = ["192.0.2.25"]
action = "reject"
[rules]
ip = "tag"
own-ip = "tempfail"
[domains."example.org"]
action = "log"
[domains."example.org".rules]
own-ip = "reject"
"#,
            crate::bed::CONFIG_HEAD
        ),
        &main_cf,
    );
    let tagged = Session::new(
        "[192.0.2.9]",
        &["a@example.com", "b@example.net", "c@example.org"],
    )
    .with_data();
    let outcome = bed.send(&tagged);
    show(kind, "rules.ip = tag, example.org log", &outcome);
    bed.expect_rcpt(&outcome, "a@example.com", "250");
    bed.expect_rcpt(&outcome, "b@example.net", "250");
    bed.expect_rcpt(&outcome, "c@example.org", "250");
    bed.expect_delivered_to(
        &outcome,
        &["a@example.com", "b@example.net", "c@example.org"],
    );

    let own = bed.send(&Session::new(
        "[192.0.2.25]",
        &["a@example.com", "c@example.org"],
    ));
    show(
        kind,
        "rules.own-ip = tempfail, example.org's own-ip reject",
        &own,
    );
    bed.expect_rcpt(&own, "a@example.com", "450 4.7.1 bogus helo 192.0.2.25");
    bed.expect_rcpt(&own, "c@example.org", "550 5.7.1 bogus helo 192.0.2.25");

    let name = bed.send(&Session::new("example.com", &["a@example.com"]));
    show(kind, "rcpt-domain: the top-level action", &name);
    bed.expect_rcpt(&name, "a@example.com", MATCHES_RCPT);

    // The header reached the MTA, once for the message with two tagged recipients.
    let header = "X-Bogus-HELO: rule=ip helo=\"[192.0.2.9]\" client=127.0.0.1";
    let seen =
        super::common::wait_until(Duration::from_secs(10), || bed.mta.log().contains(header));
    let log = bed.mta.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(header)).collect();
    for line in &lines {
        println!("[{kind}]   MTA: {line}");
    }
    if !seen || lines.len() != 1 {
        bed.problem(format!(
            "expected one MTA log line with {header:?}, found {}",
            lines.len()
        ));
    }
    let milter_log = bed.milter().log();
    if milter_log.matches("action=tag rule=ip").count() != 2 {
        bed.problem("expected two action=tag lines in the milter log");
    }
    bed.finish();
}
