//! The milter as an MTA sees it: the real binary, driven over its socket with
//! indymilter-test.

mod common;

use common::milter::Milter;
use indymilter_test::{MacroStage, ProtoOpts, Status, TestConnection};
use std::{ffi::CString, time::Duration};

/// Opens a session from `client` with Postfix's connect macros, and sends `helo` if given.
async fn session(milter: &Milter, client: [u8; 4], helo: Option<&str>) -> TestConnection {
    let mut conn = TestConnection::open(milter.addr()).await.expect("open");
    conn.macros(
        MacroStage::Connect,
        [("j", "mx.example.com"), ("{daemon_addr}", "192.0.2.25")],
    )
    .await
    .expect("macros");
    let status = conn
        .connect("client.example.net", client)
        .await
        .expect("connect");
    assert_eq!(status, Status::Noreply);
    if let Some(helo) = helo {
        assert_eq!(conn.helo(helo).await.expect("helo"), Status::Noreply);
    }
    conn
}

fn reject(text: &str) -> Status {
    Status::Reject {
        message: Some(CString::new(format!("550 5.7.1 {text}")).unwrap()),
    }
}

fn tempfail(text: &str) -> Status {
    Status::Tempfail {
        message: Some(CString::new(format!("450 4.7.1 {text}")).unwrap()),
    }
}

async fn rcpt(conn: &mut TestConnection, to: &str) -> Status {
    conn.rcpt([format!("<{to}>")]).await.expect("rcpt")
}

/// The verdict for one message from a foreign client, HELO `helo`, to `to`.
async fn verdict(milter: &Milter, helo: &str, to: &str) -> Status {
    let mut conn = session(milter, [198, 51, 100, 7], Some(helo)).await;
    assert_eq!(
        conn.mail(["<sender@example.org>"]).await.unwrap(),
        Status::Noreply
    );
    let status = rcpt(&mut conn, to).await;
    conn.abort().await.unwrap();
    conn.close().await.unwrap();
    status
}

const BASE: &str = "
own_addresses = [\"203.0.113.0/24\", \"2001:db8:25::25\"]
own_names = [\"mail.example.com\"]
whitelist = [\"private@example.com\"]
";

#[tokio::test]
async fn each_rule_answers_with_its_exact_text() {
    let milter = Milter::start(BASE);
    let cases = [
        // ip: any other address, bare or literal, IPv4 or IPv6
        ("[192.0.2.9]", "user@example.com", reject("bogus helo")),
        ("192.0.2.9", "user@example.com", reject("bogus helo")),
        (
            "[IPv6:2001:db8::9]",
            "user@example.com",
            reject("bogus helo"),
        ),
        ("2001:db8::9", "user@example.com", reject("bogus helo")),
        // own-ip: the MTA's {daemon_addr}, an own_addresses network and address, loopback
        (
            "[192.0.2.25]",
            "user@example.com",
            reject("bogus helo 192.0.2.25"),
        ),
        (
            "192.0.2.25",
            "user@example.com",
            reject("bogus helo 192.0.2.25"),
        ),
        (
            "[203.0.113.77]",
            "user@example.com",
            reject("bogus helo 203.0.113.77"),
        ),
        (
            "[IPv6:2001:DB8:25:0::25]",
            "user@example.com",
            reject("bogus helo 2001:db8:25::25"),
        ),
        (
            "[127.0.0.1]",
            "user@example.com",
            reject("bogus helo 127.0.0.1"),
        ),
        ("[IPv6:::1]", "user@example.com", reject("bogus helo ::1")),
        // rcpt-domain: the recipient's domain, the MTA's j, own_names; case and dot ignored
        (
            "example.com",
            "user@example.com",
            reject("bogus helo matches rcpt"),
        ),
        (
            "EXAMPLE.com.",
            "user@Example.COM",
            reject("bogus helo matches rcpt"),
        ),
        (
            "mx.example.com",
            "user@example.org",
            reject("bogus helo matches rcpt"),
        ),
        (
            "Mail.Example.Com",
            "user@example.org",
            reject("bogus helo matches rcpt"),
        ),
        // none of the rules
        ("example.com", "user@example.org", Status::Continue),
        ("mail.example.net", "user@example.com", Status::Continue),
        ("localhost", "user@example.com", Status::Continue),
        ("[192.0.2.9", "user@example.com", Status::Continue),
        ("", "user@example.com", Status::Continue),
    ];
    for (helo, to, expected) in cases {
        assert_eq!(
            verdict(&milter, helo, to).await,
            expected,
            "HELO {helo:?} RCPT {to}"
        );
    }
    let log = milter.log();
    assert!(
        log.contains("action=reject rule=own-ip client=198.51.100.7 helo=\"[127.0.0.1]\" rcpt=\"user@example.com\" reply=\"550 5.7.1 bogus helo 127.0.0.1\""),
        "{log}"
    );
}

#[tokio::test]
async fn asks_for_the_macros_it_needs() {
    let milter = Milter::start("");
    let conn = TestConnection::open(milter.addr()).await.unwrap();
    let macros = conn.requested_macros();
    assert_eq!(
        macros[&MacroStage::Connect].to_str().unwrap(),
        "j {daemon_addr} {if_addr}"
    );
    assert_eq!(macros[&MacroStage::Mail].to_str().unwrap(), "{auth_authen}");
    assert_eq!(macros[&MacroStage::Rcpt].to_str().unwrap(), "i");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn only_rcpt_and_end_of_message_make_the_mta_wait() {
    let milter = Milter::start("");
    let conn = TestConnection::open(milter.addr()).await.unwrap();
    let opts = conn.negotiated_opts();
    let no_reply = ProtoOpts::NOREPLY_CONNECT | ProtoOpts::NOREPLY_HELO | ProtoOpts::NOREPLY_MAIL;
    assert!(opts.contains(no_reply), "{opts:?}");
    assert!(!opts.contains(ProtoOpts::NOREPLY_RCPT));
    let skipped =
        ProtoOpts::NO_DATA | ProtoOpts::NO_HEADER | ProtoOpts::NO_EOH | ProtoOpts::NO_BODY;
    assert!(opts.contains(skipped), "{opts:?}");
    conn.close().await.unwrap();

    // An MTA that cannot do without replies gets them.
    let mut conn = TestConnection::configure()
        .available_opts(ProtoOpts::all() - no_reply)
        .open_tcp(milter.addr())
        .await
        .unwrap();
    assert!(!conn.negotiated_opts().intersects(no_reply));
    assert_eq!(
        conn.connect("client", [198, 51, 100, 7]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(conn.helo("[192.0.2.9]").await.unwrap(), Status::Continue);
    assert_eq!(
        conn.mail(["<a@example.org>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(rcpt(&mut conn, "u@example.com").await, reject("bogus helo"));
    conn.close().await.unwrap();
    assert!(!milter.log().contains("warning"), "{}", milter.log());
}

#[tokio::test]
async fn sendmail_if_addr_is_an_own_address() {
    let milter = Milter::start("");
    let mut conn = TestConnection::open(milter.addr()).await.unwrap();
    conn.macros(MacroStage::Connect, [("{if_addr}", "IPv6:2001:db8:1::1")])
        .await
        .unwrap();
    conn.connect("client", [198, 51, 100, 7]).await.unwrap();
    conn.helo("[IPv6:2001:db8:1::1]").await.unwrap();
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(
        rcpt(&mut conn, "u@example.com").await,
        reject("bogus helo 2001:db8:1::1")
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn decides_per_recipient_with_the_whitelist() {
    let milter = Milter::start(BASE);
    let mut conn = session(&milter, [198, 51, 100, 7], Some("[192.0.2.9]")).await;
    conn.mail(["<sender@example.org>"]).await.unwrap();
    assert_eq!(
        rcpt(&mut conn, "private@example.com").await,
        Status::Continue
    );
    assert_eq!(
        rcpt(&mut conn, "info@example.com").await,
        reject("bogus helo")
    );
    assert_eq!(
        rcpt(&mut conn, "Private+Orders@EXAMPLE.com").await,
        Status::Continue
    );
    assert_eq!(
        rcpt(&mut conn, "privatex@example.com").await,
        reject("bogus helo")
    );
    let (_, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn authenticated_and_trusted_clients_are_exempt() {
    let milter = Milter::start("trusted_networks = [\"198.51.100.0/24\", \"2001:db8:7::/48\"]");
    // trusted
    let mut conn = session(&milter, [198, 51, 100, 7], Some("[192.0.2.9]")).await;
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, Status::Continue);
    conn.close().await.unwrap();

    // authenticated for one message only
    let mut conn = session(&milter, [192, 0, 2, 100], Some("[192.0.2.9]")).await;
    conn.macros(MacroStage::Mail, [("{auth_authen}", "alice")])
        .await
        .unwrap();
    conn.mail(["<alice@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, Status::Continue);
    conn.eom().await.unwrap();
    // The MTA sends each MAIL's macros anew; this time without a login.
    conn.macros(MacroStage::Mail, [("{mail_addr}", "b@example.org")])
        .await
        .unwrap();
    conn.mail(["<b@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, reject("bogus helo"));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn skip_authenticated_false_checks_logged_in_clients() {
    let milter = Milter::start("skip_authenticated = false\ntrusted_networks = []");
    let mut conn = session(&milter, [127, 0, 0, 1], Some("[192.0.2.9]")).await;
    conn.macros(MacroStage::Mail, [("{auth_authen}", "alice")])
        .await
        .unwrap();
    conn.mail(["<alice@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, reject("bogus helo"));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn loopback_is_trusted_by_default() {
    let milter = Milter::start("");
    let mut conn = session(&milter, [127, 0, 0, 1], Some("[127.0.0.1]")).await;
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, Status::Continue);
    conn.close().await.unwrap();
}

/// A dual-stack socket gives an IPv4 client IPv4-mapped: the milter judges and logs it as
/// the IPv4 address (trusted as 127.0.0.1 by default, in an IPv4 network, named in the log).
#[tokio::test]
async fn ipv4_mapped_clients_count_as_ipv4() {
    let milter = Milter::start(
        "log_level = \"debug\"\ntrusted_networks = [\"127.0.0.0/8\", \"192.0.2.0/24\"]",
    );
    for (client, status) in [
        ("::ffff:127.0.0.1", Status::Continue),
        ("::ffff:192.0.2.7", Status::Continue),
        ("::ffff:198.51.100.7", reject("bogus helo")),
    ] {
        let client: std::net::Ipv6Addr = client.parse().unwrap();
        let mut conn = TestConnection::open(milter.addr()).await.expect("open");
        conn.macros(MacroStage::Connect, [("{daemon_addr}", "192.0.2.25")])
            .await
            .unwrap();
        conn.connect("client.example.net", client).await.unwrap();
        conn.helo("[198.51.100.9]").await.unwrap();
        conn.mail(["<a@example.org>"]).await.unwrap();
        assert_eq!(rcpt(&mut conn, "u@example.com").await, status, "{client}");
        conn.close().await.unwrap();
    }
    milter.assert_logged_lines(&[
        "debug: action=accept exempt=trusted rule=ip client=127.0.0.1 helo=\"[198.51.100.9]\" rcpt=\"u@example.com\" via=milter",
        "debug: action=accept exempt=trusted rule=ip client=192.0.2.7 helo=\"[198.51.100.9]\" rcpt=\"u@example.com\" via=milter",
        "action=reject rule=ip client=198.51.100.7 helo=\"[198.51.100.9]\" rcpt=\"u@example.com\" reply=\"550 5.7.1 bogus helo\" via=milter",
    ]);
}

#[tokio::test]
async fn the_latest_helo_counts_and_no_helo_matches_nothing() {
    let milter = Milter::start("");
    // no HELO at all
    let mut conn = session(&milter, [198, 51, 100, 7], None).await;
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, Status::Continue);
    conn.abort().await.unwrap();
    // a bogus greeting, then a good one (as after STARTTLS)
    assert_eq!(conn.helo("[192.0.2.9]").await.unwrap(), Status::Noreply);
    assert_eq!(
        conn.helo("mail.example.net").await.unwrap(),
        Status::Noreply
    );
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, Status::Continue);
    conn.abort().await.unwrap();
    // and the other way round
    conn.helo("[192.0.2.9]").await.unwrap();
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, reject("bogus helo"));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn several_messages_on_one_connection() {
    let milter = Milter::start("[domains.\"example.net\"]\naction = \"off\"");
    let mut conn = session(&milter, [198, 51, 100, 7], Some("example.com")).await;
    for _ in 0..3 {
        conn.mail(["<a@example.org>"]).await.unwrap();
        assert_eq!(
            rcpt(&mut conn, "u@example.com").await,
            reject("bogus helo matches rcpt")
        );
        assert_eq!(rcpt(&mut conn, "u@example.net").await, Status::Continue);
        assert_eq!(rcpt(&mut conn, "u@example.org").await, Status::Continue);
        conn.eom().await.unwrap();
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn actions_per_domain() {
    let milter = Milter::start(
        "action = \"log\"
[domains.\"tempfail.example\"]
action = \"tempfail\"
[domains.\"Reject.Example\"]
action = \"reject\"
[domains.\"off.example\"]
action = \"off\"",
    );
    let mut conn = session(&milter, [198, 51, 100, 7], Some("[192.0.2.9]")).await;
    conn.mail(["<a@example.org>"]).await.unwrap();
    conn.macros(MacroStage::Rcpt, [("i", "4QueueID")])
        .await
        .unwrap();
    assert_eq!(
        rcpt(&mut conn, "u@tempfail.example").await,
        tempfail("bogus helo")
    );
    assert_eq!(
        rcpt(&mut conn, "u@reject.example").await,
        reject("bogus helo")
    );
    assert_eq!(rcpt(&mut conn, "u@off.example").await, Status::Continue);
    assert_eq!(rcpt(&mut conn, "u@other.example").await, Status::Continue);
    conn.close().await.unwrap();
    assert!(milter.wait_for_log(
        "action=log rule=ip client=198.51.100.7 helo=\"[192.0.2.9]\" rcpt=\"u@other.example\" queue_id=\"4QueueID\" would_reply=\"550 5.7.1 bogus helo\"",
        Duration::from_secs(5)
    ), "{}", milter.log());
    assert!(!milter.log().contains("u@off.example"), "{}", milter.log());
}

#[tokio::test]
async fn reply_url_follows_the_text() {
    let milter = Milter::start("reply_url = \"https://example.com/bounces?why=bogus%20helo\"");
    let status = verdict(&milter, "[192.0.2.9]", "u@example.com").await;
    // `%` goes to the MTA doubled, as the milter protocol wants it.
    assert_eq!(
        status,
        reject("bogus helo https://example.com/bounces?why=bogus%%20helo")
    );
}

/// A HELO that matches a rule is logged: peer text in it and in the recipient (CR, LF,
/// quotes, backslashes, `key=value` look-alikes) stays inside its quoted field.
#[tokio::test]
async fn peer_text_cannot_split_or_forge_a_log_line() {
    let milter = Milter::start("");
    // The HELO is the recipient's domain, so rule rcpt-domain matches and the line is logged.
    let domain = "x.example\r\nforged action=accept helo=\"y\" \\z";
    let mut conn = session(&milter, [198, 51, 100, 7], Some(domain)).await;
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(
        rcpt(&mut conn, &format!("u@{domain}")).await,
        reject("bogus helo matches rcpt")
    );
    // An IP literal (rule ip) with a recipient that forges fields.
    conn.helo("[192.0.2.9]").await.unwrap();
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(
        rcpt(&mut conn, "u\" rule=off\r\n\\x@example.com").await,
        reject("bogus helo")
    );
    conn.helo(CString::new(b"[192.0.2.9]\xff".to_vec()).unwrap())
        .await
        .unwrap();
    conn.mail(["<a@example.org>"]).await.unwrap();
    let status = conn
        .rcpt([CString::new(b"<u\xfe@example.com>".to_vec()).unwrap()])
        .await
        .unwrap();
    assert_eq!(
        status,
        Status::Continue,
        "a name with junk bytes is no IP address"
    );
    conn.close().await.unwrap();
    // Written by hand from logging::quote's promise: `"` and `\` escaped, CR and LF as \xNN.
    let expected = [
        concat!(
            r#"action=reject rule=rcpt-domain client=198.51.100.7 "#,
            r#"helo="x.example\x0d\x0aforged action=accept helo=\"y\" \\z" "#,
            r#"rcpt="u@x.example\x0d\x0aforged action=accept helo=\"y\" \\z" "#,
            r#"reply="550 5.7.1 bogus helo matches rcpt" via=milter"#,
        ),
        concat!(
            r#"action=reject rule=ip client=198.51.100.7 helo="[192.0.2.9]" "#,
            r#"rcpt="u\" rule=off\x0d\x0a\\x@example.com" "#,
            r#"reply="550 5.7.1 bogus helo" via=milter"#,
        ),
    ];
    milter.assert_logged_lines(&expected);
    for line in milter.log().lines() {
        assert!(!line.starts_with("forged"), "{line}");
    }
}

/// Issue 19 item 10: Unicode format characters (a right-to-left override that would make
/// the address display reversed, a soft hyphen that IDNA drops) are escaped in the log
/// line as control characters are.
#[tokio::test]
async fn format_characters_are_escaped_in_the_log() {
    let milter = Milter::start("");
    // The soft hyphen vanishes in the comparable form: this HELO is the recipient's domain.
    assert_eq!(
        verdict(&milter, "exam\u{ad}ple.com", "u@example.com").await,
        reject("bogus helo matches rcpt")
    );
    assert_eq!(
        verdict(
            &milter,
            "192.0.2.9",
            "moc.elpmaxe\u{202e}@example.com\u{202c}"
        )
        .await,
        reject("bogus helo")
    );
    for line in [
        "action=reject rule=rcpt-domain client=198.51.100.7 helo=\"exam\\xadple.com\" rcpt=\"u@example.com\"",
        "helo=\"192.0.2.9\" rcpt=\"moc.elpmaxe\\u{202e}@example.com\\u{202c}\"",
    ] {
        assert!(
            milter.wait_for_log(line, Duration::from_secs(5)),
            "{line}\n{}",
            milter.log()
        );
    }
    assert!(!milter.log().contains('\u{202e}'), "{}", milter.log());
}

#[tokio::test]
async fn reload_applies_to_new_connections_and_a_bad_config_keeps_the_old() {
    let milter = Milter::start("");
    let mut old_session = session(&milter, [198, 51, 100, 7], Some("[192.0.2.9]")).await;

    milter.write_config("action = \"tempfail\"");
    let line = milter.reload();
    assert!(line.contains("event=reload result=ok"), "{line}");
    assert_eq!(
        verdict(&milter, "[192.0.2.9]", "u@example.com").await,
        tempfail("bogus helo")
    );
    // The session that started before the reload keeps its policy.
    old_session.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(
        rcpt(&mut old_session, "u@example.com").await,
        reject("bogus helo")
    );
    old_session.close().await.unwrap();

    for bad in [
        "action = \"bounce\"",
        "own_addresses = [\"192.0.2.300\"]",
        "no_such_key = 1",
        "action = [",
    ] {
        milter.write_config(bad);
        let line = milter.reload();
        assert!(
            line.contains("event=reload result=failed keeping=previous"),
            "{line}"
        );
        assert!(
            line.contains("milter.conf"),
            "the error names the file: {line}"
        );
        assert_eq!(
            verdict(&milter, "[192.0.2.9]", "u@example.com").await,
            tempfail("bogus helo")
        );
    }
    assert!(milter.stop(), "clean exit on SIGTERM");
}

/// A reload that cannot read a usable file keeps the old verdicts and logs the failure:
/// the file deleted, unreadable by the milter's user, writable by every user, or replaced
/// by a directory while the milter runs. The milter runs as nobody: root reads any file.
#[tokio::test]
#[ignore = "needs root (setpriv, to run the milter as nobody); CI runs it with --include-ignored"]
async fn a_config_file_gone_unreadable_world_writable_or_a_directory_keeps_the_old() {
    use std::{fs, os::unix::fs::PermissionsExt};
    if !common::dependency(
        nix::unistd::geteuid().is_root(),
        "root (the milter runs as nobody through setpriv)",
        "run the tests as root",
    ) {
        return;
    }
    let milter = Milter::start_as_nobody("action = \"tempfail\"");
    let path = milter.config_path();
    let set_mode =
        |mode: u32| fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    let cases: [(&str, &dyn Fn(), &str); 4] = [
        (
            "deleted",
            &|| fs::remove_file(&path).unwrap(),
            "no such configuration file",
        ),
        ("unreadable", &|| set_mode(0o200), "permission denied"),
        (
            "world-writable",
            &|| set_mode(0o666),
            "writable by every user",
        ),
        (
            "a directory",
            &|| {
                fs::remove_file(&path).unwrap();
                fs::create_dir(&path).unwrap();
            },
            "not a regular file",
        ),
    ];
    for (what, break_file, reason) in cases {
        // What the file would say, could it be read: a verdict that shows it was not.
        milter.write_config("action = \"log\"");
        set_mode(0o644);
        break_file();
        let line = milter.reload();
        assert!(
            line.contains("event=reload result=failed keeping=previous"),
            "{what}: {line}"
        );
        assert!(
            line.contains(&path.display().to_string()) && line.contains(reason),
            "{what}: the error names the file and why: {line}"
        );
        assert_eq!(
            verdict(&milter, "[192.0.2.9]", "u@example.com").await,
            tempfail("bogus helo"),
            "{what}"
        );
        if path.is_dir() {
            fs::remove_dir(&path).unwrap();
        }
    }
    // A good file again is read (the milter's user could read it all along).
    milter.write_config("action = \"reject\"");
    set_mode(0o644);
    assert!(milter.reload().contains("event=reload result=ok"));
    assert_eq!(
        verdict(&milter, "[192.0.2.9]", "u@example.com").await,
        reject("bogus helo")
    );
}

#[tokio::test]
async fn sigusr1_logs_the_counters() {
    let milter = Milter::start(BASE);
    verdict(&milter, "[192.0.2.9]", "u@example.com").await;
    verdict(&milter, "[192.0.2.9]", "u@example.com").await;
    verdict(&milter, "example.com", "private@example.com").await;
    verdict(&milter, "mail.example.net", "u@example.com").await;
    milter.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(
        milter.wait_for_log(
            "event=stats rejected_own_ip=0 rejected_ip=2 rejected_rcpt_domain=0 \
             tempfailed_own_ip=0 tempfailed_ip=0 tempfailed_rcpt_domain=0 \
             logged_own_ip=0 logged_ip=0 logged_rcpt_domain=0 \
             tagged_own_ip=0 tagged_ip=0 tagged_rcpt_domain=0 \
             exempted_whitelist=1 exempted_authenticated=0 exempted_trusted=0 \
             exempted_role_account=0 exempted_off=0",
            Duration::from_secs(5)
        ),
        "{}",
        milter.log()
    );
}

#[tokio::test]
async fn stats_interval_logs_the_counters() {
    let milter = Milter::start("stats_interval = \"300ms\"");
    assert!(
        milter.wait_for(Duration::from_secs(5), |log| log
            .matches("event=stats ")
            .count()
            >= 2),
        "{}",
        milter.log()
    );
}

#[tokio::test]
async fn sigterm_refuses_new_connections_and_lets_sessions_finish() {
    let milter = Milter::start("");
    let mut conn = session(&milter, [198, 51, 100, 7], Some("[192.0.2.9]")).await;
    milter.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        milter.wait_for_log(
            "event=shutdown new_connections=refused sessions_in_progress=1",
            Duration::from_secs(5)
        ),
        "{}",
        milter.log()
    );
    assert!(
        TestConnection::open(milter.addr()).await.is_err(),
        "new connections are refused"
    );
    // The session in progress still gets its verdicts.
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, reject("bogus helo"));
    conn.close().await.unwrap();
    assert!(
        milter.wait_for_log("event=stop ", Duration::from_secs(5)),
        "{}",
        milter.log()
    );
    assert!(milter.stop(), "exit status 0");
}

#[tokio::test]
async fn idle_connections_time_out() {
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], common::milter::free_port()));
    let milter = Milter::start(&format!(
        "idle_timeout = \"1s\"\nmetrics_listen = \"{metrics}\""
    ));
    let mut idle = session(&milter, [198, 51, 100, 7], Some("[192.0.2.9]")).await;
    // The positive event: the milter counts the connection closed.
    let open =
        |n: u32| format!("\nbogus_helo_milter_connections_open{{front_end=\"milter\"}} {n}\n");
    assert!(
        common::milter::scrape(metrics).contains(&open(1)),
        "{}",
        common::milter::scrape(metrics)
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || common::milter::scrape(metrics)
            .contains(&open(0))),
        "the idle connection was not closed: {}",
        common::milter::scrape(metrics)
    );
    // MAIL gets no reply (the MTA was told not to wait), so RCPT finds the connection closed.
    let _ = idle.mail(["<a@example.org>"]).await;
    assert!(
        idle.rcpt(["<u@example.com>"]).await.is_err(),
        "closed after 1s of silence"
    );
    // A session that keeps talking is not disturbed.
    assert_eq!(
        verdict(&milter, "[192.0.2.9]", "u@example.com").await,
        reject("bogus helo")
    );
}

/// The verdict for one message with the MTA's `{daemon_addr}` given.
async fn verdict_at(milter: &Milter, daemon_addr: &str, helo: &str, to: &str) -> Status {
    let mut conn = TestConnection::open(milter.addr()).await.expect("open");
    conn.macros(MacroStage::Connect, [("{daemon_addr}", daemon_addr)])
        .await
        .expect("macros");
    conn.connect("client.example.net", [198, 51, 100, 7])
        .await
        .expect("connect");
    conn.helo(helo).await.expect("helo");
    conn.mail(["<sender@example.org>"]).await.expect("mail");
    let status = rcpt(&mut conn, to).await;
    conn.close().await.unwrap();
    status
}

/// What an administrator tries first (issue 10), each case over the milter protocol.
#[tokio::test]
async fn administrator_probes() {
    let milter = Milter::start(
        r#"
trusted_networks = ["::/0"]
own_addresses = ["::/0", "203.0.113.25"]
whitelist = ["@whole.example", "private@example.com", "sales@*"]
recipient_delimiter = "+-"
[domains."bücher.example"]
action = "off"
[domains.".sub.example"]
action = "tempfail"
"#,
    );
    let cases = [
        // postmaster and abuse: never refused
        ("[192.0.2.9]", "postmaster", Status::Continue),
        ("[192.0.2.9]", "Postmaster@example.com", Status::Continue),
        ("[192.0.2.9]", "abuse+x@example.org", Status::Continue),
        (
            "[192.0.2.9]",
            "hostmaster@example.org",
            reject("bogus helo"),
        ),
        // the whitelist's three forms, normalised like the rules
        ("[192.0.2.9]", "private@example.com.", Status::Continue),
        ("[192.0.2.9]", "\"Private\"@EXAMPLE.com", Status::Continue),
        (
            "[192.0.2.9]",
            "private-orders@example.com",
            Status::Continue,
        ),
        ("[192.0.2.9]", "anyone@Whole.Example", Status::Continue),
        ("[192.0.2.9]", "sales@anywhere.example", Status::Continue),
        ("[192.0.2.9]", "sale@anywhere.example", reject("bogus helo")),
        // an IPv6 network holds no IPv4 client or HELO
        ("[192.0.2.9]", "u@example.com", reject("bogus helo")),
        (
            "[203.0.113.25]",
            "u@example.com",
            reject("bogus helo 203.0.113.25"),
        ),
        // IDN: one name in every spelling
        ("[192.0.2.9]", "u@xn--bcher-kva.example", Status::Continue),
        ("[192.0.2.9]", "u@BÜCHER.example", Status::Continue),
        (
            "BÜCHER.example",
            "u@xn--bcher-kva.example",
            Status::Continue,
        ),
        ("xn--bcher-kva.example", "u@example.net", Status::Continue),
        ("Bücher.Example.", "u@example.net", Status::Continue),
        // subdomains
        ("[192.0.2.9]", "u@a.sub.example", tempfail("bogus helo")),
        ("[192.0.2.9]", "u@sub.example", reject("bogus helo")),
        // every text that denotes an address is one
        ("192.000.002.009", "u@example.com", reject("bogus helo")),
        ("3221225993", "u@example.com", reject("bogus helo")),
        ("0xc0.0.2.9", "u@example.com", reject("bogus helo")),
        // own_addresses = ["::/0"] holds every IPv6 address, and only those
        (
            "[IPv6:fe80::1%eth0]",
            "u@example.com",
            reject("bogus helo fe80::1"),
        ),
        (
            "0xcb.0.113.25",
            "u@example.com",
            reject("bogus helo 203.0.113.25"),
        ),
    ];
    for (helo, to, expected) in cases {
        assert_eq!(
            verdict_at(&milter, "192.0.2.25", helo, to).await,
            expected,
            "HELO {helo:?} RCPT {to}"
        );
    }
    // Sendmail's {daemon_addr} without DaemonPortOptions=Addr: no address of ours.
    for (daemon_addr, helo) in [("0.0.0.0", "[0.0.0.0]"), ("IPv6:::", "[IPv6:::]")] {
        assert_eq!(
            verdict_at(&milter, daemon_addr, helo, "u@example.com").await,
            reject("bogus helo"),
            "{daemon_addr}"
        );
    }
    // An IDN recipient domain matched by an IDN HELO is "matches rcpt".
    let milter = Milter::start("");
    assert_eq!(
        verdict_at(
            &milter,
            "192.0.2.25",
            "XN--BCHER-KVA.example",
            "u@bücher.example"
        )
        .await,
        reject("bogus helo matches rcpt")
    );
}

#[tokio::test]
async fn reload_applies_log_level_and_stats_interval_and_names_restart_keys() {
    let milter = Milter::start("whitelist = [\"private@example.com\"]");
    assert_eq!(
        verdict(&milter, "[192.0.2.9]", "private@example.com").await,
        Status::Continue
    );
    assert!(!milter.log().contains("exempt=whitelist"));

    milter.write_config(
        "whitelist = [\"private@example.com\"]\nlog_level = \"debug\"\nstats_interval = \"1s\"\nmax_connections = 7\nidle_timeout = \"5min\"\npolicy_idle_timeout = \"1min\"",
    );
    let line = milter.reload();
    assert!(
        line.contains("event=reload result=ok")
            && line.contains("log_level=debug stats_interval=1s"),
        "{line}"
    );
    assert!(
        milter.log().contains(
            "event=reload restart_needed=max_connections,idle_timeout,policy_idle_timeout "
        ),
        "{}",
        milter.log()
    );
    assert_eq!(
        verdict(&milter, "[192.0.2.9]", "private@example.com").await,
        Status::Continue
    );
    assert!(
        milter.wait_for_log("exempt=whitelist", Duration::from_secs(5)),
        "debug level not applied:\n{}",
        milter.log()
    );
    assert!(
        milter.wait_for(Duration::from_secs(5), |log| log
            .matches("event=stats ")
            .count()
            >= 2),
        "stats_interval not applied:\n{}",
        milter.log()
    );
    assert!(milter.stop());
}

/// `tag` (issue 14): the recipient is accepted and the message gets one header, asked
/// for at negotiation only where some setting tags.
#[tokio::test]
async fn tag_adds_one_header_per_message() {
    use indymilter_test::{Actions, EomAction};
    let plain = Milter::start("");
    let conn = TestConnection::open(plain.addr()).await.unwrap();
    assert!(!conn.negotiated_actions().contains(Actions::ADD_HEADER));
    conn.close().await.unwrap();

    let milter = Milter::start(
        r#"
[rules]
ip = "tag"
[domains."example.org".rules]
ip = "reject"
"#,
    );
    let mut conn = session(&milter, [198, 51, 100, 7], Some("[192.0.2.9]")).await;
    assert!(conn.negotiated_actions().contains(Actions::ADD_HEADER));
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "a@example.com").await, Status::Continue);
    assert_eq!(rcpt(&mut conn, "b@example.net").await, Status::Continue);
    assert_eq!(rcpt(&mut conn, "c@example.org").await, reject("bogus helo"));
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    let expected = EomAction::AddHeader {
        name: CString::new("X-Bogus-HELO").unwrap(),
        value: CString::new("rule=ip helo=\"[192.0.2.9]\" client=198.51.100.7").unwrap(),
    };
    assert_eq!(actions.actions, [expected]);

    // The next message, not tagged, gets no header.
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "c@example.org").await, reject("bogus helo"));
    let (actions, _) = conn.eom().await.unwrap();
    assert!(actions.actions.is_empty(), "{actions:?}");
    conn.close().await.unwrap();

    let log = milter.log();
    assert_eq!(log.matches("action=tag rule=ip").count(), 2, "{log}");
    assert!(
        log.contains("header=\"X-Bogus-HELO: rule=ip helo="),
        "{log}"
    );
    milter.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(
        milter.wait_for_log(
            "tagged_own_ip=0 tagged_ip=2 tagged_rcpt_domain=0",
            Duration::from_secs(5)
        ),
        "{}",
        milter.log()
    );
}

/// The opt-in rules: on only where a rule key names them, per recipient, with the
/// whitelist, an `off` domain and a logging domain in one transaction.
#[tokio::test]
async fn invalid_and_non_fqdn_per_recipient() {
    let milter = Milter::start(&format!(
        "{BASE}
action = \"reject\"
[rules]
invalid = \"reject\"
non-fqdn = \"tempfail\"
[domains.\"off.example\".rules]
invalid = \"off\"
non-fqdn = \"off\"
[domains.\"log.example\".rules]
non-fqdn = \"log\""
    ));
    let mut conn = session(&milter, [198, 51, 100, 7], Some("DESKTOP-4F2K")).await;
    conn.mail(["<a@example.org>"]).await.unwrap();
    assert_eq!(
        rcpt(&mut conn, "u@example.com").await,
        tempfail("bogus helo not fully qualified")
    );
    assert_eq!(
        rcpt(&mut conn, "private@example.com").await,
        Status::Continue
    );
    assert_eq!(rcpt(&mut conn, "u@off.example").await, Status::Continue);
    assert_eq!(rcpt(&mut conn, "u@log.example").await, Status::Continue);
    conn.close().await.unwrap();
    assert!(milter.wait_for_log(
        "action=log rule=non-fqdn client=198.51.100.7 helo=\"DESKTOP-4F2K\" rcpt=\"u@log.example\"",
        Duration::from_secs(5)
    ), "{}", milter.log());

    for (helo, expected) in [
        ("exa_mple.com", reject("bogus helo invalid name")),
        ("[192.0.2.9", reject("bogus helo invalid name")),
        ("-bad.example", reject("bogus helo invalid name")),
        ("localhost", tempfail("bogus helo not fully qualified")),
        ("bücher.example", Status::Continue),
        ("client.example.net.", Status::Continue),
        // The page's rule first.
        ("[192.0.2.9]", reject("bogus helo")),
    ] {
        assert_eq!(
            verdict(&milter, helo, "u@example.com").await,
            expected,
            "{helo}"
        );
    }

    // An authenticated client never meets them.
    let mut conn = session(&milter, [198, 51, 100, 7], Some("localhost")).await;
    conn.macros(MacroStage::Mail, [("{auth_authen}", "alice")])
        .await
        .unwrap();
    conn.mail(["<alice@example.org>"]).await.unwrap();
    assert_eq!(rcpt(&mut conn, "u@example.com").await, Status::Continue);
    conn.close().await.unwrap();
}

/// An existing `action = "reject"` does not turn the opt-in rules on.
#[tokio::test]
async fn invalid_and_non_fqdn_are_off_until_configured() {
    let milter = Milter::start(&format!(
        "{BASE}
action = \"reject\"
[domains.\"example.com\"]
action = \"tempfail\""
    ));
    for helo in ["localhost", "DESKTOP-4F2K", "exa_mple.com", "[192.0.2.9"] {
        for to in ["u@example.com", "u@example.org"] {
            assert_eq!(
                verdict(&milter, helo, to).await,
                Status::Continue,
                "{helo} {to}"
            );
        }
    }
    assert_eq!(
        verdict(&milter, "[192.0.2.9]", "u@example.com").await,
        tempfail("bogus helo")
    );
}
