//! When the front ends ask DNS about a HELO name, through the milter's socket and the
//! policy service's, with the answers from a table the test injects (`TestDns`, which
//! records every question): the milter starts at HELO, once per name per session; the
//! policy service at RCPT, once per message and name on a connection; never for an
//! address, a name of one label, a trusted client or an authenticated one (policy); and a
//! RCPT is answered though the DNS server never answers.

mod common;

use common::in_process::{InProcess, TestDns, TestHost};
use indymilter_test::{MacroStage, Status, TestConnection};
use std::{
    io::Write,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// `unknown` logs only: these tests look at the questions, not at verdicts. The
/// milter's test connections come from 198.51.100.7, the policy requests too.
const CONFIG: &str =
    "trusted_networks = [\"192.0.2.0/24\"]\ndns_timeout = \"300ms\"\n[rules]\nunknown = \"log\"\n";

async fn start(dns: &std::sync::Arc<TestDns>) -> InProcess {
    let host = TestHost::new(&[], Some("mx.example.com"));
    InProcess::start_with_dns(CONFIG, host, Some(dns.clone())).await
}

/// Waits (generously) until `check` holds.
async fn eventually(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn milter_session(service: &InProcess, client: [u8; 4]) -> TestConnection {
    let mut conn = TestConnection::open(service.milter).await.expect("open");
    conn.macros(MacroStage::Connect, [("j", "mx.example.com")])
        .await
        .expect("macros");
    conn.connect("client.example.net", client)
        .await
        .expect("connect");
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_milter_asks_at_helo_once_per_name_and_a_silent_server_holds_up_no_rcpt() {
    let dns = TestDns::new();
    let service = start(&dns).await;
    let mut conn = milter_session(&service, [198, 51, 100, 7]).await;
    // Neither an address nor a name of one label is asked about.
    conn.helo("[192.0.2.9]").await.expect("helo");
    conn.helo("localhost").await.expect("helo");
    // A name is, as soon as it arrives: before MAIL.
    conn.helo("Silent.Helo.TEST.").await.expect("helo");
    assert!(
        eventually(|| dns.asked().len() == 3).await,
        "{:?}",
        dns.asked()
    );
    assert_eq!(dns.names_asked(), ["silent.helo.test"]);
    // The same name again (EHLO after STARTTLS) keeps the lookups under way.
    conn.helo("silent.helo.test").await.expect("helo");
    conn.mail(["<sender@example.org>"]).await.expect("mail");
    // The server never answers: the RCPT is answered all the same, mail goes through.
    let status = conn.rcpt(["<u@example.com>"]).await.expect("rcpt");
    assert_eq!(status, Status::Continue);
    assert_eq!(dns.asked().len(), 3, "{:?}", dns.asked());
    // Another name starts other lookups.
    conn.helo("mail.helo.test").await.expect("helo");
    assert!(
        eventually(|| dns.asked().len() == 6).await,
        "{:?}",
        dns.asked()
    );
    assert_eq!(dns.names_asked(), ["silent.helo.test", "mail.helo.test"]);
    conn.close().await.expect("close");
    service.stop().await.expect("run ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_milter_never_asks_for_a_trusted_client() {
    let dns = TestDns::new();
    let service = start(&dns).await;
    let mut trusted = milter_session(&service, [192, 0, 2, 7]).await;
    trusted.helo("trusted.helo.test").await.expect("helo");
    trusted.mail(["<sender@example.org>"]).await.expect("mail");
    // The RCPT's answer: the HELO has been seen by then.
    trusted.rcpt(["<u@example.com>"]).await.expect("rcpt");
    trusted.close().await.expect("close");
    let mut other = milter_session(&service, [198, 51, 100, 7]).await;
    other.helo("untrusted.helo.test").await.expect("helo");
    assert!(
        eventually(|| dns.asked().len() == 3).await,
        "{:?}",
        dns.asked()
    );
    assert_eq!(dns.names_asked(), ["untrusted.helo.test"]);
    other.close().await.expect("close");
    service.stop().await.expect("run ends cleanly");
}

/// Policy requests on one connection, each answered; the answers.
async fn policy_requests(service: &InProcess, requests: &[(&str, &str, &str)]) -> Vec<String> {
    let stream = TcpStream::connect(service.policy).await.expect("connect");
    let mut stream = BufReader::new(stream);
    let mut answers = Vec::new();
    for (helo, instance, sasl) in requests {
        let request = format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
             client_address=198.51.100.7\nclient_name=unknown\nhelo_name={helo}\n\
             sender=sender@example.org\nrecipient=u@example.com\nqueue_id=\n\
             instance={instance}\nsasl_username={sasl}\n\n"
        );
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .expect("send");
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            let n = stream.read_line(&mut line).await.expect("read");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_service_asks_at_rcpt_once_per_message_and_name() {
    let dns = TestDns::new();
    let service = start(&dns).await;
    let answers = policy_requests(
        &service,
        &[
            // An authenticated client causes no lookup.
            ("auth.helo.test", "1.1", "someone"),
            // The server never answers: each RCPT is answered all the same.
            ("silent.helo.test", "2.1", ""),
            ("silent.helo.test", "2.1", ""),
            ("[192.0.2.9]", "3.1", ""),
        ],
    )
    .await;
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[1], "action=DUNNO");
    assert_eq!(answers[2], "action=DUNNO");
    // The second RCPT of the message found the first's lookups.
    assert_eq!(dns.names_asked(), ["silent.helo.test"]);
    assert_eq!(dns.asked().len(), 3, "{:?}", dns.asked());
    // Another message, on another connection, is asked about again.
    policy_requests(&service, &[("silent.helo.test", "4.1", "")]).await;
    assert_eq!(dns.asked().len(), 6, "{:?}", dns.asked());
    service.stop().await.expect("run ends cleanly");
}

/// One RCPT request to the policy service at `addr` on a connection of its own; the
/// answer without its empty line.
fn policy_rcpt(addr: std::net::SocketAddr, helo: &str, instance: &str) -> String {
    use std::io::{BufRead, BufReader as SyncReader};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let request = format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=198.51.100.7\n\
         helo_name={helo}\nrecipient=u@example.com\ninstance={instance}\n\n"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    for line in SyncReader::new(stream).lines() {
        let line = line.expect("read");
        if line.is_empty() {
            break;
        }
        answer.push_str(&line);
    }
    answer
}

/// The binary asking real servers: a silent one, then after a reload that changes
/// `dns_servers` NSD; a server list that does not load keeps NSD. Seen in the counters of
/// the statistics line.
#[test]
fn a_reload_that_changes_dns_servers_rebuilds_the_resolver() {
    use common::dns_server::{self, FakeDns, Nsd};
    if !common::dependency(dns_server::nsd_available(), "nsd", dns_server::INSTALL_NSD) {
        return;
    }
    let silent = FakeDns::silent();
    let nsd = Nsd::start();
    // Above CONFIG's [rules] table.
    let config = |server: &str| format!("dns_servers = [\"{server}\"]\n{CONFIG}");
    let service = common::milter::Milter::start_policy(&config(&silent.addr.to_string()), false);
    // The lookups may end just after the RCPT's answer: the line is asked for again
    // until it holds.
    let stats = |line: &str| {
        common::wait_until(Duration::from_secs(10), || {
            service.signal(nix::sys::signal::Signal::SIGUSR1);
            service.wait_for_log(line, Duration::from_millis(200))
        })
    };
    assert_eq!(
        policy_rcpt(service.addr(), "a-only.helo.test", "1"),
        "action=DUNNO"
    );
    assert!(
        stats(" dns_lookups_ok=0 dns_lookups_nxdomain=0 dns_lookups_nodata=0 dns_lookups_servfail=0 dns_lookups_timeout=3 dns_lookups_dropped=0"),
        "{}",
        service.log()
    );
    service.write_config(&config(&nsd.addr.to_string()));
    assert!(service.reload().contains("result=ok"), "{}", service.log());
    assert_eq!(
        policy_rcpt(service.addr(), "a-only.helo.test", "2"),
        "action=DUNNO"
    );
    // a-only.helo.test: an A record, NODATA for AAAA and MX (tests/common/dns_server.rs).
    assert!(
        stats(" dns_lookups_ok=1 dns_lookups_nxdomain=0 dns_lookups_nodata=2 dns_lookups_servfail=0 dns_lookups_timeout=3 dns_lookups_dropped=0"),
        "{}",
        service.log()
    );
    service.write_config(&config("ns.example"));
    assert!(
        service.reload().contains("result=failed"),
        "{}",
        service.log()
    );
    assert_eq!(
        policy_rcpt(service.addr(), "missing.helo.test", "3"),
        "action=DUNNO"
    );
    assert!(
        stats(" dns_lookups_ok=1 dns_lookups_nxdomain=3 dns_lookups_nodata=2 dns_lookups_servfail=0 dns_lookups_timeout=3 dns_lookups_dropped=0"),
        "{}",
        service.log()
    );
    assert!(service.stop());
}
