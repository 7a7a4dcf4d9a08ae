//! The DNS rules `unknown` and `mismatch` and `dns_failure` end to end (issue 21): real
//! SMTP through the milter behind Postfix and Sendmail and through the policy service
//! behind Postfix, the binary asking the real NSD of `common::dns_server` (zone
//! `helo.test.`), a server that never answers or one that answers SERVFAIL. Per recipient:
//! a whitelisted recipient and one at an `off` domain accepted, and delivered, in the
//! transaction in which another is refused.
//!
//! The client is 127.0.0.1 (the bed's `trusted_networks = []` makes it untrusted) or ::1.
//! Neither MTA asks DNS about the HELO itself: Postfix only with
//! `reject_unknown_helo_hostname`, which the beds do not set; the Sendmail bed's service
//! switch names `hosts files` only. So every DNS verdict here is ours; where an MTA
//! answers itself (Sendmail's 501 to an 8-bit HELO) the test says so.

use crate::{
    bed::{block_on, helo_command, Bed},
    common::{
        self,
        dns_server::{self, names, FakeDns, Nsd},
        mta::{Kind, CAPTURE_DOMAIN},
        smtp::{Client, Outcome, Session},
    },
    forged::expect_tags_delivered,
};
use std::{
    io,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

const PRIVATE: &str = "private@example.com";
const SALES: &str = "sales@example.com";
const OFF: &str = "d@off.example";
/// The refusable recipient first: the policy service, which starts its lookups at the
/// first RCPT, must wait for them there.
const RCPTS: [&str; 3] = [SALES, PRIVATE, OFF];

/// The replies as the milter words them (the table).
const UNKNOWN: &str = "550 5.7.1 bogus helo unknown host";
const DNS_FAILURE: &str = "451 4.4.3 bogus helo dns failure";

/// The whitelist and the `off` domain of every config here (top-level keys go before
/// it, rules after it).
const EXEMPTIONS: &str = "whitelist = [\"private@example.com\"]\n\
                          [domains.\"off.example\"]\naction = \"off\"\n";

fn nsd_here() -> bool {
    common::dependency(dns_server::nsd_available(), "nsd", dns_server::INSTALL_NSD)
}

/// Where the mail goes in: the milter behind an MTA, or the policy service behind Postfix.
#[derive(Clone, Copy, Debug)]
enum Front {
    Milter(Kind),
    Policy,
}

impl Front {
    fn start(self, config: &str) -> Bed {
        match self {
            Front::Milter(kind) => Bed::start(kind, config),
            Front::Policy => Bed::start_policy(config),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Front::Milter(kind) => kind.name(),
            Front::Policy => "policy",
        }
    }
}

/// Expects `rcpt` refused with `refusal` (as the milter words it), in exactly the words
/// each MTA wraps around it:
/// - Postfix passes a milter's reply on as it stands.
/// - Sendmail puts `<rcpt>... ` before the text of a milter's 5xx at RCPT, but not of a
///   4xx (seen: `550 5.7.1 <sales@example.com>... bogus helo unknown host`, and
///   `451 4.4.3 bogus helo dns failure`).
/// - Through the policy service Postfix words our `action=NNN D.S.N text` as for any
///   access map: `<rcpt>: Recipient address rejected:` before our text, the same code and
///   enhanced status. 4.4.3 stays 4.4.3: access(5) "ENHANCED STATUS CODES" rewrites only
///   address statuses (X.1.1-X.1.6) and, for non-address matches, to X.0.0.
fn expect_refused(bed: &mut Bed, front: Front, outcome: &Outcome, rcpt: &str, refusal: &str) {
    let (code_status, text) = refusal.split_at(9);
    let line = match front {
        Front::Milter(Kind::Sendmail) if refusal.starts_with('5') => {
            format!("{code_status} <{rcpt}>...{text}")
        }
        Front::Milter(_) => refusal.to_string(),
        Front::Policy => format!("{code_status} <{rcpt}>: Recipient address rejected:{text}"),
    };
    bed.expect_rcpt_line(outcome, rcpt, &line);
}

/// Sends one message from `helo` to [`RCPTS`]: the whitelisted and the `off` recipient
/// accepted and delivered; `sales` refused with `refusal`, or (None) accepted and
/// delivered too.
fn expect_per_recipient(bed: &mut Bed, front: Front, helo: &str, refusal: Option<&str>) {
    let outcome = bed.send(&Session::new(helo, &RCPTS).with_data());
    println!(
        "[{}] {}: RCPT TO:<{SALES}> {}",
        front.label(),
        helo_command(&outcome),
        outcome.rcpt(SALES).map(|r| r.line()).unwrap_or_default()
    );
    bed.expect_rcpt(&outcome, PRIVATE, "250");
    bed.expect_rcpt(&outcome, OFF, "250");
    match refusal {
        Some(refusal) => {
            expect_refused(bed, front, &outcome, SALES, refusal);
            bed.expect_delivered_to(&outcome, &[PRIVATE, OFF]);
        }
        None => {
            bed.expect_rcpt(&outcome, SALES, "250");
            bed.expect_delivered_to(&outcome, &RCPTS);
        }
    }
}

/// `dns_failure = "tempfail"`: a lookup that failed (a name asked in a wrong form, say)
/// shows as 451, never as a pass.
fn unknown_config(server: SocketAddr) -> String {
    unknown_config_servers(&[server])
}

fn unknown_config_servers(servers: &[SocketAddr]) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "dns_servers = [{}]\ndns_failure = \"tempfail\"\n\
         {EXEMPTIONS}[rules]\nunknown = \"reject\"\n",
        servers.join(", ")
    )
}

/// `unknown = "reject"`: an NXDOMAIN name and a NODATA one refused for `sales` alone;
/// an MX alone (as in Postfix) and an A alone pass; names in any case, with the root's
/// dot, and in IDNA U-labels asked in their one form.
fn unknown_per_recipient(front: Front) {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    let mut bed = front.start(&unknown_config(nsd.addr));
    for helo in [names::MISSING, names::TXT_ONLY, "TXT-Only.HELO.Test."] {
        expect_per_recipient(&mut bed, front, helo, Some(UNKNOWN));
    }
    for helo in [names::MX_ONLY, names::A_ONLY, "A-ONLY.helo.test."] {
        expect_per_recipient(&mut bed, front, helo, None);
    }
    for (helo, refusal) in [(names::BUECHER, None), ("müller.helo.test", Some(UNKNOWN))] {
        match front {
            // Sendmail refuses a HELO with 8-bit characters itself, before any milter
            // hears of it: it allows letters, digits and `[].-_#:` only (opt_in.rs).
            Front::Milter(Kind::Sendmail) => {
                let outcome = bed.send(&Session::new(helo, &RCPTS));
                let seen = outcome.helo.as_ref().map(|r| r.line());
                println!("[sendmail] EHLO {helo}: {seen:?}");
                if seen.as_deref() != Some("501 5.0.0 Invalid domain name") {
                    bed.problem(format!(
                        "EHLO {helo}: expected Sendmail's own 501, got {seen:?}\n{}",
                        outcome.transcript()
                    ));
                }
            }
            _ => expect_per_recipient(&mut bed, front, helo, refusal),
        }
    }
    // A server that answers SERVFAIL listed beside NSD, before it and after it: NSD's
    // answers decide (they once failed every lookup with 451 4.4.3).
    let servfail = FakeDns::servfail();
    for servers in [[servfail.addr, nsd.addr], [nsd.addr, servfail.addr]] {
        bed.write_config(&unknown_config_servers(&servers));
        let result = bed.milter().reload();
        if !result.contains("result=ok") {
            bed.problem(format!("reload to dns_servers {servers:?}: {result}"));
        }
        // A reload that changes dns_servers rebuilds the resolver, its cache with it;
        // the NXDOMAIN name is new to this bed besides.
        let fresh = if servers[0] == nsd.addr { "1" } else { "2" };
        expect_per_recipient(
            &mut bed,
            front,
            &format!("nx{fresh}.helo.test"),
            Some(UNKNOWN),
        );
        expect_per_recipient(&mut bed, front, names::OTHER, None);
    }
    bed.finish();
}

/// `mismatch = "tag"`, the client's family of addresses read: from 127.0.0.1,
/// `other.helo.test` (A 192.0.2.20 and .21) delivered with our header and `ns.helo.test`
/// (A 127.0.0.1) without one; from ::1, `loopback6.helo.test` (AAAA ::1) without one and
/// `ns.helo.test` with one (an IPv6 client is looked for among the AAAA records only).
/// Through Sendmail this also reads its `IPv6:0:0:0:0:0:0:0:1` connect form as ::1.
fn mismatch_tagged(front: Front) {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    let config = format!(
        "dns_servers = [\"{}\"]\n{EXEMPTIONS}[rules]\nmismatch = \"tag\"\n",
        nsd.addr
    );
    let mut bed = front.start(&config);
    let tag = |helo: &str, client: &str| format!("rule=mismatch helo=\"{helo}\" client={client}");
    expect_tags(
        &mut bed,
        front,
        Family::V4,
        names::OTHER,
        &[&tag(names::OTHER, "127.0.0.1")],
    );
    expect_tags(&mut bed, front, Family::V4, names::NS, &[]);
    expect_tags(&mut bed, front, Family::V6, names::LOOPBACK6, &[]);
    expect_tags(
        &mut bed,
        front,
        Family::V6,
        names::NS,
        &[&tag(names::NS, "::1")],
    );
    bed.finish();
}

/// Which of the MTA's addresses the client connects to.
#[derive(Clone, Copy, Debug)]
enum Family {
    V4,
    V6,
}

/// Sends a message from `helo` to [`CAPTURE_DOMAIN`] and expects exactly `expected`
/// `X-Bogus-HELO` values in what the MTA delivered.
fn expect_tags(bed: &mut Bed, front: Front, family: Family, helo: &str, expected: &[&str]) {
    let rcpt = format!("u@{CAPTURE_DOMAIN}");
    let session = Session::new(helo, &[rcpt.as_str()]).with_data();
    let outcome = match family {
        Family::V4 => bed.send(&session),
        Family::V6 => bed.send_v6(&session),
    };
    // The bed prints the MTA's name; the front end only where it is not the milter.
    let label = match front {
        Front::Policy => format!("policy, {family:?} {helo}"),
        Front::Milter(_) => format!("{family:?} {helo}"),
    };
    expect_tags_delivered(bed, &label, &outcome, &rcpt, expected);
}

fn failure_config(server: SocketAddr, dns_failure: &str) -> String {
    format!(
        "dns_servers = [\"{server}\"]\ndns_timeout = \"500ms\"\ndns_failure = \"{dns_failure}\"\n\
         {EXEMPTIONS}[rules]\nunknown = \"reject\"\n"
    )
}

/// A DNS failure is never `unknown`: with `dns_failure = "tempfail"` a server that never
/// answers and one that answers SERVFAIL get `sales` a 451 4.4.3 (the others delivered);
/// with `"accept"` everyone gets the mail, and the log says which failure let it through.
/// One bed, its config changed by reloads (which rebuild the resolver).
fn failure_per_recipient(front: Front) {
    let silent = FakeDns::silent();
    let servfail = FakeDns::servfail();
    let mut bed = front.start(&failure_config(silent.addr, "tempfail"));
    let steps = [
        (silent.addr, "tempfail", Some(DNS_FAILURE), "timeout"),
        (servfail.addr, "tempfail", Some(DNS_FAILURE), "servfail"),
        (servfail.addr, "accept", None, "servfail"),
        (silent.addr, "accept", None, "timeout"),
    ];
    for (n, (server, dns_failure, refusal, failure)) in steps.into_iter().enumerate() {
        if n > 0 {
            bed.write_config(&failure_config(server, dns_failure));
            let result = bed.milter().reload();
            if !result.contains("result=ok") {
                bed.problem(format!("reload to {server} {dns_failure}: {result}"));
            }
        }
        println!(
            "[{}] dns_failure={dns_failure}, dns={failure}",
            front.label()
        );
        expect_per_recipient(&mut bed, front, names::MISSING, refusal);
        let action = refusal.map_or("accept", |_| "tempfail");
        let line = format!(
            "action={action} rule=unknown dns={failure} client=127.0.0.1 helo=\"{}\" rcpt=\"{SALES}\"",
            names::MISSING
        );
        // Each step's (action, failure) is its own: a line of an earlier step cannot pass.
        if !bed
            .milter()
            .wait_for(Duration::from_secs(10), |log| log.contains(&line))
        {
            bed.problem(format!("no {line:?} in the milter log"));
        }
    }
    bed.finish();
}

/// A DNS server on a loopback port that passes each UDP query to `upstream` and its
/// answer back `delay` later: an answer that comes after MAIL, so that a RCPT decides
/// on it only by waiting for it. Stops (and joins its threads) when dropped.
struct SlowDns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SlowDns {
    fn start(upstream: SocketAddr, delay: Duration) -> Self {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind slow DNS");
        let addr = socket.local_addr().expect("slow DNS address");
        // A short read timeout: the thread looks at `stop` between reads.
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut relays = Vec::new();
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let (query, Ok(back)) = (buf[..n].to_vec(), socket.try_clone()) else {
                    continue;
                };
                let relay = std::thread::spawn(move || {
                    if let Some(answer) = relay(upstream, &query) {
                        std::thread::sleep(delay);
                        let _ = back.send_to(&answer, peer);
                    }
                });
                relays.push(relay);
            }
            for relay in relays {
                let _ = relay.join();
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

/// `upstream`'s answer to `query`, or None.
fn relay(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    socket.send_to(query, upstream).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

impl Drop for SlowDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A RCPT waits for an answer that comes a second after the HELO (the milter asked at
/// HELO, the policy service at the first RCPT) while `dns_timeout` allows: NXDOMAIN,
/// refused for `sales`. With a `dns_timeout` shorter than the second it does not: a
/// timeout, which `dns_failure`'s default accepts (and the log says so).
fn waits_for_a_slow_answer(front: Front) {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    let slow = SlowDns::start(nsd.addr, Duration::from_secs(1));
    let config = |timeout: &str| {
        format!(
            "dns_servers = [\"{}\"]\ndns_timeout = \"{timeout}\"\n{EXEMPTIONS}[rules]\nunknown = \"reject\"\n",
            slow.addr
        )
    };
    let mut bed = front.start(&config("10s"));
    expect_per_recipient(&mut bed, front, names::MISSING, Some(UNKNOWN));
    bed.write_config(&config("300ms"));
    let result = bed.milter().reload();
    if !result.contains("result=ok") {
        bed.problem(format!("reload to dns_timeout 300ms: {result}"));
    }
    // Another name: nothing cached.
    expect_per_recipient(&mut bed, front, names::TXT_ONLY, None);
    let line = format!(
        "action=accept rule=unknown dns=timeout client=127.0.0.1 helo=\"{}\" rcpt=\"{SALES}\"",
        names::TXT_ONLY
    );
    if !bed
        .milter()
        .wait_for(Duration::from_secs(10), |log| log.contains(&line))
    {
        bed.problem(format!("no {line:?} in the milter log"));
    }
    bed.finish();
}

/// Two EHLOs in one session (as after STARTTLS, or a client that changes its mind):
/// the last name is judged, on the lookups the second EHLO started. A-only then missing:
/// `sales` refused; missing then A-only: accepted.
fn last_helo_decides(front: Front) {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    let mut bed = front.start(&unknown_config(nsd.addr));
    for (first, last, refusal) in [
        (names::A_ONLY, names::MISSING, Some(UNKNOWN)),
        (names::MISSING, names::A_ONLY, None),
    ] {
        let outcome = match block_on(two_helos(bed.mta.addr(), first, last)) {
            Ok(outcome) => outcome,
            Err(e) => panic!("SMTP session failed: {e}{}", bed.logs()),
        };
        println!(
            "[{}] EHLO {first}, EHLO {last}: RCPT TO:<{SALES}> {}",
            front.label(),
            outcome.rcpt(SALES).map(|r| r.line()).unwrap_or_default()
        );
        bed.expect_rcpt(&outcome, PRIVATE, "250");
        match refusal {
            Some(refusal) => expect_refused(&mut bed, front, &outcome, SALES, refusal),
            None => bed.expect_rcpt(&outcome, SALES, "250"),
        }
    }
    bed.finish();
}

/// A session of EHLO `first`, EHLO `last`, MAIL, RCPT to `sales` and the whitelisted
/// recipient, RSET, QUIT.
async fn two_helos(addr: SocketAddr, first: &str, last: &str) -> io::Result<Outcome> {
    let first = format!("EHLO {first}");
    let last = format!("EHLO {last}");
    scripted(addr, &[&first, &last]).await
}

/// A session of the commands `before_mail` (the last one's reply in `helo`), MAIL, RCPT
/// to `sales` and the whitelisted recipient, RSET, QUIT.
async fn scripted(addr: SocketAddr, before_mail: &[&str]) -> io::Result<Outcome> {
    let (mut client, greeting) = Client::connect(addr).await?;
    let mut helo = None;
    for command in before_mail {
        helo = Some(client.command(command).await?);
    }
    let mail = client.command("MAIL FROM:<sender@example.net>").await?;
    let mut rcpts = Vec::new();
    for rcpt in [SALES, PRIVATE] {
        let reply = client.command(&format!("RCPT TO:<{rcpt}>")).await?;
        rcpts.push((rcpt.to_string(), reply));
    }
    client.command("RSET").await?;
    Ok(Outcome {
        greeting,
        helo,
        mail: Some(mail),
        rcpts,
        data: None,
        message_id: String::new(),
        transcript: client.quit().await,
    })
}

/// A client that authenticated is never refused for DNS (its RCPT does not wait for
/// answers, and it is exempt besides; that it does not wait is no functional fact): with
/// a server that never answers and `dns_failure = "tempfail"`, `sales` is accepted after
/// AUTH and gets the 451 without it. Postfix with Cyrus SASL's ANONYMOUS mechanism (as
/// macros_seen.rs); the Sendmail bed offers no AUTH.
fn authenticated_client_accepted(front: Front) {
    let silent = FakeDns::silent();
    let sasl = tempfile::tempdir().expect("temp dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(sasl.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    std::fs::write(sasl.path().join("smtpd.conf"), "mech_list: ANONYMOUS\n")
        .expect("write smtpd.conf");
    let main_cf = format!(
        "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = cyrus\nsmtpd_sasl_path = smtpd\n\
         cyrus_sasl_config_path = {}\nsmtpd_sasl_security_options =\n",
        sasl.path().display()
    );
    let config = failure_config(silent.addr, "tempfail");
    let mut bed = match front {
        Front::Milter(kind) => Bed::start_with_main_cf(
            kind,
            &format!("{}{config}", crate::bed::CONFIG_HEAD),
            &main_cf,
        ),
        Front::Policy => Bed::start_policy_with_main_cf(&config, &main_cf),
    };
    let ehlo = format!("EHLO {}", names::MISSING);
    for (auth, refusal) in [(true, None), (false, Some(DNS_FAILURE))] {
        let commands: &[&str] = match auth {
            true => &[&ehlo, "AUTH ANONYMOUS dHJhY2U="],
            false => &[&ehlo],
        };
        let outcome = match block_on(scripted(bed.mta.addr(), commands)) {
            Ok(outcome) => outcome,
            Err(e) => panic!("SMTP session failed: {e}{}", bed.logs()),
        };
        println!(
            "[{}] {commands:?}: RCPT TO:<{SALES}> {}",
            front.label(),
            outcome.rcpt(SALES).map(|r| r.line()).unwrap_or_default()
        );
        if auth && outcome.helo.as_ref().map(|r| r.code) != Some(235) {
            bed.problem(format!("AUTH refused:\n{}", outcome.transcript()));
        }
        bed.expect_rcpt(&outcome, PRIVATE, "250");
        match refusal {
            Some(refusal) => expect_refused(&mut bed, front, &outcome, SALES, refusal),
            None => bed.expect_rcpt(&outcome, SALES, "250"),
        }
    }
    bed.finish();
}

pub fn dns_unknown_per_recipient(kind: Kind) {
    unknown_per_recipient(Front::Milter(kind));
}

pub fn dns_mismatch_tagged(kind: Kind) {
    mismatch_tagged(Front::Milter(kind));
}

pub fn dns_failure_per_recipient(kind: Kind) {
    failure_per_recipient(Front::Milter(kind));
}

pub fn dns_waits_for_a_slow_answer(kind: Kind) {
    waits_for_a_slow_answer(Front::Milter(kind));
}

pub fn dns_last_helo_decides(kind: Kind) {
    last_helo_decides(Front::Milter(kind));
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn policy_dns_unknown_per_recipient() {
    unknown_per_recipient(Front::Policy);
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn policy_dns_mismatch_tagged() {
    mismatch_tagged(Front::Policy);
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn policy_dns_failure_per_recipient() {
    failure_per_recipient(Front::Policy);
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn policy_dns_waits_for_a_slow_answer() {
    waits_for_a_slow_answer(Front::Policy);
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn policy_dns_last_helo_decides() {
    last_helo_decides(Front::Policy);
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn postfix_dns_authenticated_client_accepted() {
    authenticated_client_accepted(Front::Milter(Kind::Postfix));
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn policy_dns_authenticated_client_accepted() {
    authenticated_client_accepted(Front::Policy);
}
