//! Faults behind a real MTA (issue 6): the milter is killed (SIGKILL) in the middle of an
//! SMTP load through a private Postfix with `milter_default_action = tempfail`. Every
//! message must end either accepted with the right verdict (and delivered to exactly the
//! recipients accepted) or tempfailed; none wrongly rejected, none silently dropped. Then
//! the milter is started again on the same address, and mail flows as before.
//!
//! `cargo test --test e2e faults -- --include-ignored --nocapture` prints the counts.

use crate::common::{
    load::{has_exited, wait_until, Greeting, MilterAt, PostfixLog},
    milter::Milter,
    mta::{Kind, Mta},
    smtp::{Outcome, Session},
};
use nix::sys::signal::Signal;
use std::{
    collections::HashSet,
    fmt::Write as _,
    io,
    net::SocketAddr,
    ops::Range,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// Messages sent in all, by this many clients at a time; the milter is killed once this
/// many have finished.
const MESSAGES: usize = 300;
const CLIENTS: usize = 8;
const KILL_AFTER: usize = 120;
/// Messages sent once the milter runs again.
const AFTER_RESTART: usize = 60;

/// The recipient the milter judges, and one on its whitelist: a message with a bogus HELO
/// is refused for the first and accepted for the second, so it too reaches DATA.
const JUDGED: &str = "user@example.com";
const WHITELISTED: &str = "postmaster@example.com";

/// One message of the load.
struct Sent {
    n: usize,
    greeting: Greeting,
    started: Instant,
    ended: Instant,
    outcome: io::Result<Outcome>,
}

/// What became of one message.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// 250 at the end of DATA, every recipient with its verdict, no 4xx anywhere.
    Accepted,
    /// A 4xx at some stage: the sender retries later.
    Tempfailed,
    /// A 5xx that the policy does not give.
    WronglyRejected(String),
    /// A bogus HELO's judged recipient accepted.
    LetThrough(String),
    /// No final reply (the session broke off) or accepted but not delivered.
    Dropped(String),
}

/// Judges the replies of one message (delivery is checked afterwards).
fn judge(sent: &Sent) -> Fate {
    let outcome = match &sent.outcome {
        Ok(outcome) => outcome,
        Err(e) => return Fate::Dropped(format!("no final reply: {e}")),
    };
    let bogus = sent.greeting.refusal_text();
    let mut replies: Vec<(&str, &crate::common::smtp::Reply)> =
        vec![("greeting", &outcome.greeting)];
    replies.extend(outcome.helo.iter().map(|r| ("HELO", r)));
    replies.extend(outcome.mail.iter().map(|r| ("MAIL", r)));
    for (rcpt, reply) in &outcome.rcpts {
        let expected_refusal = match bogus {
            Some(text) if rcpt == JUDGED => Some(format!("550 5.7.1 {text}")),
            _ => None,
        };
        match (&expected_refusal, reply.code) {
            (Some(expected), 500..=599) if reply.milter_form() == *expected => {}
            (Some(_), 200..=299) => {
                return Fate::LetThrough(format!("RCPT <{rcpt}>: {}", reply.line()))
            }
            _ => replies.push(("RCPT", reply)),
        }
    }
    replies.extend(outcome.data.iter().map(|r| ("DATA", r)));
    if let Some((stage, reply)) = replies.iter().find(|(_, r)| r.code >= 500) {
        return Fate::WronglyRejected(format!("{stage}: {}", reply.line()));
    }
    if replies.iter().any(|(_, r)| (400..500).contains(&r.code)) {
        return Fate::Tempfailed;
    }
    match &outcome.data {
        Some(reply) if reply.code == 250 => Fate::Accepted,
        other => Fate::Dropped(format!("no 4xx and not accepted: DATA {other:?}")),
    }
}

/// The recipients a message's 250 at the end of DATA covers: those accepted at RCPT.
fn accepted_rcpts(outcome: &Outcome) -> HashSet<String> {
    outcome
        .rcpts
        .iter()
        .filter(|(_, r)| r.is_positive())
        .map(|(rcpt, _)| rcpt.to_lowercase())
        .collect()
}

/// Sends messages `ns` (their numbers pick the HELO), `CLIENTS` sessions at a time;
/// counts each finished one in `finished`.
async fn send_all(smtp: SocketAddr, ns: Range<usize>, finished: Arc<AtomicUsize>) -> Vec<Sent> {
    let next = Arc::new(AtomicUsize::new(ns.start));
    let results = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, finished, results) = (next.clone(), finished.clone(), results.clone());
            let end = ns.end;
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        break;
                    }
                    let greeting = Greeting::nth(n);
                    let session =
                        Session::new(&greeting.helo(n), &[JUDGED, WHITELISTED]).with_data();
                    let started = Instant::now();
                    let outcome = session.run(smtp).await;
                    let sent = Sent {
                        n,
                        greeting,
                        started,
                        ended: Instant::now(),
                        outcome,
                    };
                    results.lock().unwrap().push(sent);
                    finished.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    let sent = std::mem::take(&mut *results.lock().unwrap());
    sent
}

fn milter_config() -> String {
    format!("trusted_networks = []\nwhitelist = [\"{WHITELISTED}\"]\n")
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn postfix_sigkill_of_the_milter_under_load() {
    let milter = Milter::start(&milter_config());
    let milter_pid = milter.pid();
    // Postfix with the documented snippet: `milter_default_action = tempfail`.
    let mta = Mta::start(Kind::Postfix, milter.addr());
    let smtp = mta.addr();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let finished = Arc::new(AtomicUsize::new(0));
    let load = rt.spawn(send_all(smtp, 0..MESSAGES, finished.clone()));

    // Midway: SIGKILL. The clients go on sending the rest.
    assert!(
        wait_until(Duration::from_secs(120), || finished
            .load(Ordering::Relaxed)
            >= KILL_AFTER),
        "the load did not get going: {} messages finished",
        finished.load(Ordering::Relaxed)
    );
    let killed = Instant::now();
    milter.signal(Signal::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || has_exited(milter_pid)),
        "the milter survived SIGKILL"
    );
    let load_at_kill = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut sent = rt.block_on(load).expect("load");
    assert_eq!(sent.len(), MESSAGES);

    // Then the milter is started again where Postfix expects it: mail flows again.
    let restarted = MilterAt::start(milter.addr(), &milter_config());
    let restarted_at = Instant::now();
    sent.extend(rt.block_on(send_all(
        smtp,
        MESSAGES..MESSAGES + AFTER_RESTART,
        Arc::new(AtomicUsize::new(0)),
    )));

    // Every message accepted must be delivered (Postfix's discard transport logs
    // `status=sent`) to exactly the recipients it accepted.
    let accepted_ids: Vec<String> = sent
        .iter()
        .filter_map(|s| s.outcome.as_ref().ok())
        .filter(|o| o.data.as_ref().is_some_and(|r| r.code == 250))
        .map(|o| o.message_id.clone())
        .collect();
    wait_until(Duration::from_secs(60), || {
        let log = PostfixLog::parse(&mta.log());
        accepted_ids.iter().all(|id| log.is_done(id))
    });
    let log = PostfixLog::parse(&mta.log());

    let mut counts = Counts::default();
    let mut problems = String::new();
    for s in &sent {
        let mut fate = judge(s);
        if let (Ok(outcome), Fate::Accepted | Fate::Tempfailed) = (&s.outcome, &fate) {
            if outcome.data.as_ref().is_some_and(|r| r.code == 250) {
                let delivered = log.delivered(&outcome.message_id);
                let expected = accepted_rcpts(outcome);
                if delivered != expected {
                    fate = Fate::Dropped(format!(
                        "250 at end of DATA, delivered to {delivered:?} (queue id {:?}), \
                         expected {expected:?}",
                        log.queue_id(&outcome.message_id)
                    ));
                }
            }
        }
        let phase = if s.started > restarted_at {
            &mut counts.restarted
        } else if s.ended < killed {
            &mut counts.before
        } else if s.started < killed {
            &mut counts.in_flight
        } else {
            &mut counts.after
        };
        phase.sent += 1;
        match &fate {
            Fate::Accepted => {
                phase.accepted += 1;
                if s.greeting.is_bogus() {
                    phase.rejected += 1;
                }
            }
            Fate::Tempfailed => phase.tempfailed += 1,
            Fate::WronglyRejected(_) => phase.wrongly_rejected += 1,
            Fate::LetThrough(_) => phase.let_through += 1,
            Fate::Dropped(_) => phase.dropped += 1,
        }
        if s.started > restarted_at {
            if fate != Fate::Accepted {
                let _ = writeln!(
                    problems,
                    "message {} sent after the restart was not accepted: {fate:?}",
                    s.n
                );
            }
        } else if s.started > killed && fate != Fate::Tempfailed {
            let _ = writeln!(
                problems,
                "message {} sent after the kill was not tempfailed: {fate:?}",
                s.n
            );
        }
        if !matches!(fate, Fate::Accepted | Fate::Tempfailed) {
            let transcript = s
                .outcome
                .as_ref()
                .map(Outcome::transcript)
                .unwrap_or_default();
            let _ = writeln!(
                problems,
                "message {} ({:?}): {fate:?}\n{transcript}",
                s.n, s.greeting
            );
        }
    }
    let total = counts.total();
    println!(
        "SIGKILL of the milter behind Postfix (milter_default_action = tempfail), {CLIENTS} \
         clients, load average at the kill {}",
        load_at_kill
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (label, phase) in [
        ("finished before the kill", &counts.before),
        ("in flight at the kill", &counts.in_flight),
        ("started after the kill", &counts.after),
        ("after the restart", &counts.restarted),
        ("all", &total),
    ] {
        println!("  {label:>24}: {phase}");
    }
    // Where and how the tempfails came.
    let mut tempfails: std::collections::BTreeMap<String, usize> = Default::default();
    for outcome in sent.iter().filter_map(|s| s.outcome.as_ref().ok()) {
        let stages = [("MAIL", outcome.mail.as_ref())]
            .into_iter()
            .chain(outcome.rcpts.iter().map(|(_, r)| ("RCPT", Some(r))))
            .chain([("DATA", outcome.data.as_ref())]);
        for (stage, reply) in stages {
            if let Some(reply) = reply.filter(|r| (400..500).contains(&r.code)) {
                *tempfails
                    .entry(format!("{stage} {}", reply.line()))
                    .or_default() += 1;
            }
        }
    }
    for (reply, n) in &tempfails {
        println!("  {n:>5} x {reply}");
    }
    let milter_warnings = mta
        .log()
        .lines()
        .filter(|l| l.contains("warning") && l.contains("milter"))
        .count();
    println!("  Postfix logged {milter_warnings} milter warnings");

    assert!(
        problems.is_empty(),
        "{problems}\n{}",
        tail(&mta.describe(), 60)
    );
    assert_eq!(total.sent, MESSAGES + AFTER_RESTART);
    assert_eq!(total.accepted + total.tempfailed, MESSAGES + AFTER_RESTART);
    assert_eq!(counts.restarted.accepted, AFTER_RESTART);
    assert!(
        !restarted.log().contains("event=session_error"),
        "{}",
        restarted.log()
    );
    assert!(
        counts.before.accepted > 0 && counts.before.rejected > 0,
        "nothing accepted or refused before the kill: {}",
        counts.before
    );
    assert!(
        counts.after.tempfailed > 0,
        "nothing sent after the kill: {}",
        counts.after
    );
}

#[derive(Default)]
struct Phase {
    sent: usize,
    /// Accepted at the end of DATA, with the right verdict for each recipient.
    accepted: usize,
    /// Of those accepted, messages with a bogus HELO whose judged recipient got the 550.
    rejected: usize,
    tempfailed: usize,
    wrongly_rejected: usize,
    let_through: usize,
    dropped: usize,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, accepted {} (of which {} with the bogus-HELO recipient rejected 550), \
             tempfailed {}, wrongly rejected {}, let through {}, silently dropped {}",
            self.sent,
            self.accepted,
            self.rejected,
            self.tempfailed,
            self.wrongly_rejected,
            self.let_through,
            self.dropped
        )
    }
}

#[derive(Default)]
struct Counts {
    before: Phase,
    in_flight: Phase,
    after: Phase,
    restarted: Phase,
}

impl Counts {
    fn total(&self) -> Phase {
        let mut all = Phase::default();
        for p in [&self.before, &self.in_flight, &self.after, &self.restarted] {
            all.sent += p.sent;
            all.accepted += p.accepted;
            all.rejected += p.rejected;
            all.tempfailed += p.tempfailed;
            all.wrongly_rejected += p.wrongly_rejected;
            all.let_through += p.let_through;
            all.dropped += p.dropped;
        }
        all
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
