//! The milter's end-to-end cases again, through the policy service: a real Postfix
//! without a milter, with the README's `smtpd_recipient_restrictions =
//! check_policy_service inet:127.0.0.1:PORT`, and the binary with its milter socket off.
//! Postfix words a refusal from a policy service its own way, which is what a sender
//! sees and what these tests assert:
//! `550 5.7.1 <u@example.com>: Recipient address rejected: bogus helo`.

use crate::{
    bed::{helo_command, Bed},
    common::{mta::Kind, smtp::Session},
};
use std::time::Duration;

/// Postfix's words for a refusal `code status text` that the policy service answered.
fn refused(code_status: &str, rcpt: &str, text: &str) -> String {
    format!("{code_status} <{rcpt}>: Recipient address rejected: {text}")
}

/// A labelled session and the reply line expected for each of its recipients.
type Case<'a> = (&'a str, Session, Vec<(&'a str, String)>);

fn bogus(rcpt: &str) -> String {
    refused("550 5.7.1", rcpt, "bogus helo")
}

fn show(label: &str, outcome: &crate::common::smtp::Outcome) {
    println!("[policy] {label}: {}", helo_command(outcome));
    for (rcpt, reply) in &outcome.rcpts {
        println!("[policy]   RCPT <{rcpt}> -> {}", reply.line());
    }
    if let Some(reply) = &outcome.data {
        println!("[policy]   DATA -> {}", reply.line());
    }
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn each_rule() {
    // Postfix does not tell a policy service its myhostname: own_names does.
    let own_name = Kind::Postfix.hostname();
    let mut bed = Bed::start_policy(&format!(
        "own_addresses = [\"192.0.2.25\", \"198.51.100.0/24\"]\nown_names = [\"{own_name}\"]\n"
    ));
    let cases: Vec<Case> = vec![
        (
            "ip literal",
            Session::new("[192.0.2.9]", &["user@example.com", "user@example.org"]),
            vec![
                ("user@example.com", bogus("user@example.com")),
                ("user@example.org", bogus("user@example.org")),
            ],
        ),
        (
            "bare ip, HELO verb",
            Session::new("192.0.2.9", &["user@example.com"]).helo_verb(),
            vec![("user@example.com", bogus("user@example.com"))],
        ),
        (
            "the address the client reached (server_address)",
            Session::new("[127.0.0.1]", &["user@example.com"]),
            vec![(
                "user@example.com",
                refused("550 5.7.1", "user@example.com", "bogus helo 127.0.0.1"),
            )],
        ),
        (
            "own_addresses single entry",
            Session::new("[192.0.2.25]", &["user@example.com"]),
            vec![(
                "user@example.com",
                refused("550 5.7.1", "user@example.com", "bogus helo 192.0.2.25"),
            )],
        ),
        (
            "own_addresses network entry, bare",
            Session::new("198.51.100.7", &["user@example.com"]),
            vec![(
                "user@example.com",
                refused("550 5.7.1", "user@example.com", "bogus helo 198.51.100.7"),
            )],
        ),
        (
            "recipient's domain",
            Session::new("EXAMPLE.Com.", &["user@example.com", "user@example.org"]),
            vec![
                (
                    "user@example.com",
                    refused("550 5.7.1", "user@example.com", "bogus helo matches rcpt"),
                ),
                ("user@example.org", "250 2.1.5 Ok".into()),
            ],
        ),
        (
            "Postfix's myhostname, in own_names",
            Session::new(own_name, &["user@example.org"]),
            vec![(
                "user@example.org",
                refused("550 5.7.1", "user@example.org", "bogus helo matches rcpt"),
            )],
        ),
        (
            "IPv6 literal",
            Session::new("[IPv6:2001:db8::9]", &["user@example.com"]),
            vec![("user@example.com", bogus("user@example.com"))],
        ),
        (
            "a host name",
            Session::new("mail.example.net", &["user@example.com"]),
            vec![("user@example.com", "250 2.1.5 Ok".into())],
        ),
        (
            "localhost (no rule names it)",
            Session::new("localhost", &["user@example.com"]),
            vec![("user@example.com", "250 2.1.5 Ok".into())],
        ),
    ];
    for (label, session, expected) in &cases {
        let outcome = bed.send(session);
        show(label, &outcome);
        for (rcpt, line) in expected {
            bed.expect_rcpt_line(&outcome, rcpt, line);
        }
    }
    let log = bed.milter().log();
    for rule in ["rule=ip ", "rule=own-ip ", "rule=rcpt-domain "] {
        if !log
            .lines()
            .any(|l| l.contains(rule) && l.ends_with("via=policy"))
        {
            bed.problem(format!("no {rule:?} line with via=policy in the log"));
        }
    }
    bed.finish();
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn good_helo_is_delivered() {
    let mut bed = Bed::start_policy("");
    let session = Session::new(
        "mail.example.net",
        &["alice@example.com", "bob@example.org"],
    )
    .with_data();
    let outcome = bed.send(&session);
    show("good HELO", &outcome);
    bed.expect_rcpt(&outcome, "alice@example.com", "250");
    bed.expect_rcpt(&outcome, "bob@example.org", "250");
    bed.expect_delivered_to(&outcome, &["alice@example.com", "bob@example.org"]);
    bed.finish();
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn whitelisted_and_other_recipient() {
    let mut bed = Bed::start_policy("whitelist = [\"private@example.com\"]\n");
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
    show("whitelist", &outcome);
    bed.expect_rcpt(&outcome, "private@example.com", "250");
    bed.expect_rcpt_line(&outcome, "sales@example.com", &bogus("sales@example.com"));
    bed.expect_rcpt(&outcome, "Private+urgent@Example.com", "250");
    bed.expect_delivered_to(
        &outcome,
        &["private@example.com", "Private+urgent@Example.com"],
    );
    bed.finish();
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn domain_actions() {
    let mut bed = Bed::start_policy(
        r#"action = "reject"
reply_url = "https://example.net/why%20bogus-helo?q=100%25"
[domains."tempfail.example"]
action = "tempfail"
[domains."log.example"]
action = "log"
[domains."off.example"]
action = "off"
"#,
    );
    let url = "https://example.net/why%20bogus-helo?q=100%25";
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
    show("domain actions", &outcome);
    bed.expect_rcpt_line(
        &outcome,
        "a@example.com",
        &refused("550 5.7.1", "a@example.com", &format!("bogus helo {url}")),
    );
    bed.expect_rcpt_line(
        &outcome,
        "b@tempfail.example",
        &refused(
            "450 4.7.1",
            "b@tempfail.example",
            &format!("bogus helo {url}"),
        ),
    );
    bed.expect_rcpt(&outcome, "c@log.example", "250");
    bed.expect_rcpt(&outcome, "d@off.example", "250");
    bed.expect_delivered_to(&outcome, &["c@log.example", "d@off.example"]);
    let log = bed.milter().log();
    match log
        .lines()
        .find(|l| l.contains("action=log") && l.contains("c@log.example"))
    {
        Some(line) if line.contains("rule=ip") && line.ends_with("via=policy") => {
            println!("[policy]   service: {line}")
        }
        other => bed.problem(format!("no action=log line via=policy: {other:?}")),
    }
    if let Some(line) = log.lines().find(|l| l.contains("d@off.example")) {
        bed.problem(format!("a domain that is off was judged: {line}"));
    }
    bed.finish();
}

/// The service stopped: Postfix answers with smtpd_policy_service_default_action,
/// `451 4.3.5 Server configuration problem` by default, never a 5xx, and accepts no
/// message.
#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn service_down_tempfails() {
    let mut bed = Bed::start_policy("");
    let before = bed.send(&Session::new("[192.0.2.9]", &["user@example.com"]));
    bed.expect_rcpt_line(&before, "user@example.com", &bogus("user@example.com"));
    let addr = bed.milter().addr();
    if !bed.stop_milter() {
        bed.problem("the service did not exit cleanly on SIGTERM");
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the stopped service still listens"
    );
    for (label, helo) in [
        ("service down, good HELO", "mail.example.net"),
        ("service down, bogus HELO", "[192.0.2.9]"),
    ] {
        let session = Session::new(helo, &["user@example.com"]).with_data();
        let outcome = bed.send(&session);
        show(label, &outcome);
        bed.expect_rcpt_line(
            &outcome,
            "user@example.com",
            &refused(
                "451 4.3.5",
                "user@example.com",
                "Server configuration problem",
            ),
        );
        if outcome.data.as_ref().is_some_and(|r| r.code == 250) {
            bed.problem(format!("{label}: a message was accepted"));
        }
    }
    bed.finish();
}

/// SIGHUP: the next request gets the new policy, on the connection Postfix kept open.
#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn sighup_changes_policy() {
    let mut bed = Bed::start_policy("action = \"reject\"\n");
    let session = Session::new("[192.0.2.9]", &["user@example.com", "user@example.org"]);
    let first = bed.send(&session);
    show("before SIGHUP (reject)", &first);
    bed.expect_rcpt_line(&first, "user@example.com", &bogus("user@example.com"));
    bed.write_config("action = \"tempfail\"\n[domains.\"example.org\"]\naction = \"off\"\n");
    let result = bed.milter().reload();
    if !result.contains("result=ok") {
        bed.problem(format!("reload did not succeed: {result}"));
    }
    let second = bed.send(&session);
    show("after SIGHUP (tempfail, example.org off)", &second);
    bed.expect_rcpt_line(
        &second,
        "user@example.com",
        &refused("450 4.7.1", "user@example.com", "bogus helo"),
    );
    bed.expect_rcpt(&second, "user@example.org", "250");
    bed.finish();
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn ipv6_client() {
    let mut bed = Bed::start_policy("");
    let bogus_v6 = bed.send_v6(&Session::new("[192.0.2.9]", &["user@example.com"]));
    show("IPv6 client, ip literal", &bogus_v6);
    bed.expect_rcpt_line(&bogus_v6, "user@example.com", &bogus("user@example.com"));
    let own = bed.send_v6(&Session::new("[IPv6:::1]", &["user@example.com"]));
    show("IPv6 client, own address ::1", &own);
    bed.expect_rcpt_line(
        &own,
        "user@example.com",
        &refused("550 5.7.1", "user@example.com", "bogus helo ::1"),
    );
    if !bed
        .milter()
        .wait_for_log("client=::1", Duration::from_secs(5))
    {
        bed.problem("the service never logged client=::1");
    }
    bed.finish();
}

/// `tag` through the policy service: Postfix prepends the header (`action=PREPEND`) once
/// per message, however many recipients are tagged, and the message is delivered; its
/// cleanup logs the header (a `header_checks` INFO rule).
#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn tag_prepends_one_header_per_message() {
    let checks = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let path = checks.path().join("header_checks");
        std::fs::write(&path, "/^X-Bogus-HELO:/ INFO\n").unwrap();
        std::fs::set_permissions(checks.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let main_cf = format!(
        "header_checks = regexp:{}/header_checks\n",
        checks.path().display()
    );
    let mut bed = Bed::start_policy_with_main_cf(
        "[rules]\nip = \"tag\"\n[domains.\"example.org\"]\naction = \"log\"\n",
        &main_cf,
    );
    let session = Session::new(
        "[192.0.2.9]",
        &["a@example.com", "b@example.net", "c@example.org"],
    )
    .with_data();
    let first = bed.send(&session);
    show("rules.ip = tag", &first);
    for rcpt in ["a@example.com", "b@example.net", "c@example.org"] {
        bed.expect_rcpt(&first, rcpt, "250");
    }
    bed.expect_delivered_to(&first, &["a@example.com", "b@example.net", "c@example.org"]);
    // A second message on a new session gets its own header.
    let second = bed.send(&Session::new("[192.0.2.9]", &["d@example.com"]).with_data());
    bed.expect_delivered_to(&second, &["d@example.com"]);

    let header = "X-Bogus-HELO: rule=ip helo=\"[192.0.2.9]\" client=127.0.0.1";
    let both = crate::common::wait_until(Duration::from_secs(10), || {
        bed.mta.log().matches(header).count() >= 2
    });
    let log = bed.mta.log();
    for line in log.lines().filter(|l| l.contains(header)) {
        println!("[policy]   Postfix: {line}");
    }
    for outcome in [&first, &second] {
        let qid = bed.mta.queue_id(&outcome.message_id).unwrap_or_default();
        let count = log
            .lines()
            .filter(|l| l.contains(header) && l.contains(&format!(" {qid}: ")))
            .count();
        if !both || qid.is_empty() || count != 1 {
            bed.problem(format!(
                "message {qid:?}: {count} header lines in the Postfix log, expected 1"
            ));
        }
    }
    let service = bed.milter().log();
    if service.matches("action=tag rule=ip").count() != 3 || !service.contains("action=log rule=ip")
    {
        bed.problem("expected three action=tag lines (two, then one) and one action=log line");
    }
    bed.finish();
}

/// Once per message across policy connections: with `smtpd_policy_service_request_limit
/// = 1` (SMTPD_POLICY_README's suggestion), Postfix asks about each RCPT over a new
/// connection; a message with three tagged recipients still carries one header, which
/// cleanup logs (a `header_checks` INFO rule logs each header line of the message).
#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn tag_once_per_message_with_a_request_limit_of_one() {
    let checks = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let path = checks.path().join("header_checks");
        std::fs::write(&path, "/^X-Bogus-HELO:/ INFO\n").unwrap();
        std::fs::set_permissions(checks.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let main_cf = format!(
        "header_checks = regexp:{}/header_checks\nsmtpd_policy_service_request_limit = 1\n",
        checks.path().display()
    );
    let mut bed = Bed::start_policy_with_main_cf("[rules]\nip = \"tag\"\n", &main_cf);
    let rcpts = ["a@example.com", "b@example.net", "c@example.org"];
    let outcome = bed.send(&Session::new("[192.0.2.9]", &rcpts).with_data());
    show("rules.ip = tag, request limit 1", &outcome);
    for rcpt in rcpts {
        bed.expect_rcpt(&outcome, rcpt, "250");
    }
    bed.expect_delivered_to(&outcome, &rcpts);
    let qid = bed.mta.queue_id(&outcome.message_id).unwrap_or_default();
    // The queue id comes from cleanup's message-id= line, which the same cleanup logs
    // after the headers that Postfix prepended at the top: all are in the log by now.
    let log = bed.mta.log();
    let headers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!(" {qid}: info: header X-Bogus-HELO:")))
        .collect();
    for line in &headers {
        println!("[policy]   Postfix: {line}");
    }
    if qid.is_empty() || headers.len() != 1 {
        bed.problem(format!(
            "message {qid:?}: {} X-Bogus-HELO header lines in the Postfix log, expected 1",
            headers.len()
        ));
    }
    let service = bed.milter().log();
    if service.matches("action=tag rule=ip").count() != 3 {
        bed.problem("expected three action=tag lines, one per recipient");
    }
    bed.finish();
}
