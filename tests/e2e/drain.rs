//! A stop under way (issue 19 item 8): the milter serves whole sessions, not just their
//! current command, for up to its drain timeout (20 s); and what a sender sees when the
//! timeout cuts a session: the MTA's default action for a milter that went away.

use crate::{
    bed::{block_on, Bed},
    common::{mta::Kind, smtp::Client},
};
use nix::sys::signal::Signal;
use std::time::Duration;

const BOGUS: &str = "550 5.7.1 bogus helo";

/// Longer than the drain timeout, with room for a slow machine.
const CUT_WAIT: Duration = Duration::from_secs(60);

pub fn stop_drains_whole_sessions(kind: Kind) {
    let mut bed = Bed::start(kind, "");
    let addr = bed.mta.addr();
    let milter = bed.milter();
    // One runtime for the whole SMTP session; the waits on the milter's log block it,
    // which only this client uses.
    let (problems, transcript) = block_on(async {
        let mut problems = Vec::new();
        let (mut client, _) = Client::connect(addr).await.expect("connect");
        let mut say = async |line: &str| {
            client
                .command(line)
                .await
                .unwrap_or_else(|e| panic!("{line}: {e}"))
        };
        say("EHLO [192.0.2.9]").await;
        say("MAIL FROM:<sender@example.net>").await;
        // The MTA opened its milter connection at the SMTP connect: one session.
        milter.signal(Signal::SIGTERM);
        if !milter.wait_for_log(
            "event=shutdown new_connections=refused sessions_in_progress=1",
            Duration::from_secs(10),
        ) {
            problems.push("no shutdown with one session in progress logged".to_string());
        }

        // Several commands after the stop began: the whole session is served, not only
        // the command under way at SIGTERM.
        let first = say("RCPT TO:<user@example.com>").await;
        let rset = say("RSET").await;
        say("MAIL FROM:<sender@example.net>").await;
        let second = say("RCPT TO:<user@example.org>").await;
        for (label, reply) in [("first", &first), ("after RSET", &second)] {
            println!(
                "[{kind}] while draining, RCPT ({label}) -> {}",
                reply.line()
            );
            if reply.milter_form() != BOGUS {
                problems.push(format!(
                    "RCPT {label} during the drain: expected {BOGUS:?}, got {:?}",
                    reply.full()
                ));
            }
        }
        if rset.code != 250 {
            problems.push(format!("RSET during the drain: {}", rset.full()));
        }

        // The drain timeout cuts the session that is still open.
        if !milter.wait_for_log("event=shutdown sessions_cut_short=1 after=20s", CUT_WAIT) {
            problems.push("the open session was not cut at the drain timeout".to_string());
        }
        if !milter.wait_for_log("event=stop ", CUT_WAIT) {
            problems.push("the milter did not stop after the drain timeout".to_string());
        }
        let cut = say("RCPT TO:<other@example.com>").await;
        println!("[{kind}] after the cut, RCPT -> {}", cut.full());
        // The MTA's default action for a milter that went away (Postfix's
        // milter_default_action = tempfail, Sendmail's F=T), never a refusal.
        let expected = match kind {
            Kind::Postfix => "451 4.7.1 Service unavailable - try again later",
            Kind::Sendmail => "451 4.3.2 Please try again later",
        };
        if cut.line() != expected {
            problems.push(format!(
                "RCPT after the cut: expected {expected:?}, got {:?}",
                cut.full()
            ));
        }
        (problems, client.quit().await)
    });
    for problem in problems {
        bed.problem(format!("{problem}\n{}", transcript.join("\n")));
    }
    bed.finish();
}
