//! The `X-Bogus-HELO` header over the milter socket (issue 19): incoming headers of our
//! name are removed whenever some setting tags, so that the only one that leaves is ours;
//! and negotiation asks only for what the MTA offers, `tag` acting as `log` in a session
//! whose MTA offers no header changes.

mod common;

use common::milter::Milter;
use indymilter_test::{Actions, EomAction, MacroStage, ProtoOpts, Status, TestConnection};
use nix::sys::signal::Signal;
use std::{ffi::CString, time::Duration};

const TAGS: &str = r#"
[rules]
ip = "tag"
[domains."example.org".rules]
ip = "reject"
"#;

/// What the milter writes for HELO `[192.0.2.9]` from 198.51.100.7 (README's example).
const OURS: &str = "rule=ip helo=\"[192.0.2.9]\" client=198.51.100.7";

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn delete(index: i32) -> EomAction {
    EomAction::DeleteHeader {
        name: c("X-Bogus-HELO"),
        index,
    }
}

/// Connect and HELO with Postfix's connect macros, from 198.51.100.7.
async fn greet(conn: &mut TestConnection, helo: &str) {
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
}

/// Sends `headers` as the MTA would, checking each answer fits what was negotiated.
async fn send_headers(conn: &mut TestConnection, headers: &[(&str, &str)]) {
    let expected = match conn.negotiated_opts().contains(ProtoOpts::NOREPLY_HEADER) {
        true => Status::Noreply,
        false => Status::Continue,
    };
    for (name, value) in headers {
        assert_eq!(conn.header(*name, *value).await.unwrap(), expected);
    }
    // What an MTA sends next unless the milter asked it not to.
    let opts = conn.negotiated_opts();
    if !opts.contains(ProtoOpts::NO_EOH) {
        conn.eoh().await.unwrap();
    }
    if !opts.contains(ProtoOpts::NO_BODY) {
        conn.body("Hello.\r\n").await.unwrap();
    }
}

#[tokio::test]
async fn forged_headers_are_removed_and_ours_added() {
    let milter = Milter::start(TAGS);
    let mut conn = TestConnection::open(milter.addr()).await.unwrap();
    let wanted = Actions::ADD_HEADER | Actions::CHANGE_HEADER;
    assert_eq!(conn.negotiated_actions(), wanted);
    let opts = conn.negotiated_opts();
    assert!(!opts.contains(ProtoOpts::NO_HEADER), "{opts:?}");
    assert!(opts.contains(ProtoOpts::NOREPLY_HEADER), "{opts:?}");
    greet(&mut conn, "[192.0.2.9]").await;

    // A tagged message with three forged headers of our name, in any case.
    conn.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(
        conn.rcpt(["<a@example.com>"]).await.unwrap(),
        Status::Continue
    );
    conn.macros(MacroStage::Rcpt, [("i", "4QueueA")])
        .await
        .unwrap();
    send_headers(
        &mut conn,
        &[
            ("Received", "from x by y"),
            (
                "X-Bogus-HELO",
                "rule=none helo=\"mail.sender.example\" client=203.0.113.5",
            ),
            ("Subject", "hello"),
            ("x-bogus-helo", "rule=none"),
            ("X-Bogus-HELO-Note", "not ours: another name"),
            ("X-BOGUS-HELO", "rule=none client=203.0.113.6"),
        ],
    )
    .await;
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    let ours = EomAction::AddHeader {
        name: c("X-Bogus-HELO"),
        value: c(OURS),
    };
    // The highest index first: the MTA counts what is left at each request.
    assert_eq!(actions.actions, [delete(3), delete(2), delete(1), ours]);

    // An untagged message on the same connection loses its forged header too.
    conn.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(
        conn.rcpt(["<postmaster@example.com>"]).await.unwrap(),
        Status::Continue
    );
    send_headers(&mut conn, &[("X-Bogus-HELO", "rule=ip")]).await;
    let (actions, _) = conn.eom().await.unwrap();
    assert_eq!(actions.actions, [delete(1)]);

    // And a message without one is left alone.
    conn.mail(["<a@example.net>"]).await.unwrap();
    conn.rcpt(["<postmaster@example.com>"]).await.unwrap();
    send_headers(&mut conn, &[("Subject", "X-Bogus-HELO: in a value")]).await;
    let (actions, _) = conn.eom().await.unwrap();
    assert!(actions.actions.is_empty(), "{actions:?}");
    conn.close().await.unwrap();

    // From a client with a good HELO, which no rule matches.
    let mut conn = TestConnection::open(milter.addr()).await.unwrap();
    greet(&mut conn, "mail.sender.example").await;
    conn.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(
        conn.rcpt(["<a@example.com>"]).await.unwrap(),
        Status::Continue
    );
    send_headers(&mut conn, &[("X-Bogus-HELO", "rule=own-ip")]).await;
    let (actions, _) = conn.eom().await.unwrap();
    assert_eq!(actions.actions, [delete(1)]);
    conn.close().await.unwrap();

    let log = milter.log();
    assert!(
        log.contains(
            "event=header_removed header=X-Bogus-HELO count=3 client=198.51.100.7 helo=\"[192.0.2.9]\" queue_id=\"4QueueA\" via=milter"
        ),
        "{log}"
    );
    assert_eq!(log.matches("event=header_removed ").count(), 3, "{log}");
    assert_eq!(log.matches("count=1 ").count(), 2, "{log}");
    milter.signal(Signal::SIGUSR1);
    assert!(
        milter.wait_for_log(
            "forged_headers_removed=5 tag_unavailable_sessions=0",
            Duration::from_secs(5)
        ),
        "{}",
        milter.log()
    );
}

/// With no setting that tags, the milter asks for no message change and no headers.
#[tokio::test]
async fn without_tag_no_headers_and_no_actions() {
    let milter = Milter::start("[rules]\nip = \"log\"\n");
    let mut conn = TestConnection::open(milter.addr()).await.unwrap();
    assert_eq!(conn.negotiated_actions(), Actions::empty());
    let opts = conn.negotiated_opts();
    assert!(opts.contains(ProtoOpts::NO_HEADER), "{opts:?}");
    greet(&mut conn, "[192.0.2.9]").await;
    conn.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(
        conn.rcpt(["<a@example.com>"]).await.unwrap(),
        Status::Continue
    );
    let (actions, _) = conn.eom().await.unwrap();
    assert!(actions.actions.is_empty(), "{actions:?}");
    conn.close().await.unwrap();
    assert!(
        !milter.log().contains("event=negotiate"),
        "{}",
        milter.log()
    );

    // An MTA that will send headers whatever is asked: they are read and ignored.
    let mut conn = TestConnection::configure()
        .available_opts(ProtoOpts::NOREPLY_HEADER | ProtoOpts::NOREPLY_CONNECT)
        .open_tcp(milter.addr())
        .await
        .unwrap();
    assert_eq!(
        conn.negotiated_opts(),
        ProtoOpts::NOREPLY_HEADER | ProtoOpts::NOREPLY_CONNECT
    );
    greet(&mut conn, "[192.0.2.9]").await;
    conn.mail(["<a@example.net>"]).await.unwrap();
    conn.rcpt(["<a@example.com>"]).await.unwrap();
    send_headers(&mut conn, &[("X-Bogus-HELO", "rule=none")]).await;
    let (actions, _) = conn.eom().await.unwrap();
    assert!(actions.actions.is_empty(), "{actions:?}");
    conn.close().await.unwrap();
}

/// An MTA that offers neither adding nor changing headers (nor any protocol option the
/// milter uses):
/// the negotiation succeeds, the tagged recipient is accepted and logged as `log`, the
/// session says so once, and the message goes on unchanged.
#[tokio::test]
async fn an_mta_without_header_changes_gets_tag_as_log() {
    let milter = Milter::start(TAGS);
    let offers = [
        (
            Actions::ADD_RCPT | Actions::DELETE_RCPT,
            "add_header,change_header",
        ),
        (Actions::ADD_HEADER | Actions::QUARANTINE, "change_header"),
    ];
    for (actions, missing) in offers {
        let mut conn = TestConnection::configure()
            .available_actions(actions)
            .available_opts(ProtoOpts::REJECTED_RCPT)
            .open_tcp(milter.addr())
            .await
            .expect("the negotiation succeeds");
        assert_eq!(conn.negotiated_actions(), Actions::empty());
        assert_eq!(conn.negotiated_opts(), ProtoOpts::empty());
        greet(&mut conn, "[192.0.2.9]").await;
        assert_eq!(
            conn.mail(["<a@example.net>"]).await.unwrap(),
            Status::Continue
        );
        assert_eq!(
            conn.rcpt(["<a@example.com>"]).await.unwrap(),
            Status::Continue
        );
        assert_eq!(
            conn.rcpt(["<b@example.com>"]).await.unwrap(),
            Status::Continue
        );
        send_headers(&mut conn, &[("X-Bogus-HELO", "rule=none")]).await;
        let (eom, status) = conn.eom().await.unwrap();
        assert_eq!(status, Status::Continue);
        assert!(eom.actions.is_empty(), "{eom:?}");
        conn.close().await.unwrap();
        let line = format!(
            "event=negotiate tag=log reason=\"the MTA does not offer header changes\" missing=\"{missing}\" via=milter"
        );
        assert!(
            milter.wait_for_log(&line, Duration::from_secs(5)),
            "{}",
            milter.log()
        );
    }
    let log = milter.log();
    assert_eq!(log.matches("event=negotiate ").count(), 2, "{log}");
    assert_eq!(log.matches("action=tag").count(), 0, "{log}");
    assert_eq!(
        log.matches(&format!(
            "action=log rule=ip client=198.51.100.7 helo=\"[192.0.2.9]\" rcpt=\"a@example.com\" would_tag=\"X-Bogus-HELO: {}\"",
            OURS.replace('"', "\\\"")
        ))
        .count(),
        2,
        "{log}"
    );
    // Another rule's reject still refuses.
    let mut conn = TestConnection::configure()
        .available_actions(Actions::ADD_RCPT)
        .open_tcp(milter.addr())
        .await
        .unwrap();
    greet(&mut conn, "[192.0.2.9]").await;
    conn.mail(["<a@example.net>"]).await.unwrap();
    assert!(matches!(
        conn.rcpt(["<c@example.org>"]).await.unwrap(),
        Status::Reject { .. }
    ));
    conn.close().await.unwrap();

    milter.signal(Signal::SIGUSR1);
    assert!(
        milter.wait_for_log(
            "logged_own_ip=0 logged_ip=4 logged_rcpt_domain=0 tagged_own_ip=0 tagged_ip=0",
            Duration::from_secs(5)
        ),
        "{}",
        milter.log()
    );
    assert!(
        milter.wait_for_log(
            "forged_headers_removed=0 tag_unavailable_sessions=3",
            Duration::from_secs(5)
        ),
        "{}",
        milter.log()
    );
}

/// The policy service, which cannot remove headers, writes `tag_key` at the end of its
/// header (past the 200 characters Postfix logs of a header it replaces) for README's
/// `header_checks` map; the key is never logged.
#[test]
fn policy_service_appends_tag_key_past_what_postfix_logs() {
    use std::io::{BufRead, BufReader, Write};
    const KEY: &str = "Test_key-0123456789abcdef";
    let config = format!("trusted_networks = []\ntag_key = \"{KEY}\"\n[rules]\nip = \"tag\"\n");
    let service = Milter::start_policy(&config, false);
    let stream = std::net::TcpStream::connect(service.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (&stream)
        .write_all(
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nhelo_name=[192.0.2.9]\n\
              client_address=198.51.100.7\nrecipient=a@example.com\ninstance=1.1\n\n",
        )
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).unwrap();
    let prepend = format!("action=PREPEND X-Bogus-HELO: {OURS}");
    let header = answer
        .strip_prefix("action=PREPEND ")
        .unwrap_or_else(|| panic!("{answer:?}"))
        .trim_end_matches('\n');
    assert!(answer.starts_with(&prepend), "{answer:?}");
    let key_at = header.find(" key=").unwrap_or_else(|| panic!("{answer:?}"));
    assert!(key_at >= 200, "{answer:?}");
    assert_eq!(&header[key_at..], format!(" key={KEY}"));
    // Ours, then only spaces up to the key.
    assert_eq!(header[..key_at].trim_end(), format!("X-Bogus-HELO: {OURS}"));
    let log = service.log();
    assert!(log.contains("action=tag rule=ip"), "{log}");
    assert!(!log.contains(KEY), "{log}");
}

/// A `tag_key` that is short or holds a character a regexp would read is a config
/// error, which names the key but not the secret.
#[test]
fn a_bad_tag_key_is_an_error_that_does_not_show_it() {
    for key in [
        "short-key",
        "with spaces and dots.......",
        "regexp$(chars)[0123456789]",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.conf");
        std::fs::write(&path, format!("tag_key = \"{key}\"\n")).unwrap();
        let out = std::process::Command::new(common::milter::BIN)
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "tag_key = \"({} characters, not shown)\": must be 16 to 128 letters, digits, '-' or '_'",
                key.len()
            )),
            "{stderr}"
        );
        assert!(!stderr.contains(key), "{stderr}");
    }
    // A good one reads back with -t.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.conf");
    std::fs::write(&path, "tag_key = \"0123456789abcdef-_XY\"\n").unwrap();
    let out = std::process::Command::new(common::milter::BIN)
        .args(["-t", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\ntag_key = \"0123456789abcdef-_XY\"\n"));
}
