//! How each MTA treats `%` in a milter's reply text. libmilter's documentation says a
//! literal `%` must be written `%%`; bogus-helo-milter escapes `%` in `reply_url` that way.
//! A probe milter answers every RCPT with the text named by the recipient's local part:
//! `double` → `probe 100%%20 double`, `single` → `probe 100%20 single`.

use crate::{
    bed::ProbeMilter,
    common::{
        mta::{Kind, Mta},
        smtp::Session,
    },
};
use indymilter::{Callbacks, SetErrorReply, Status};

fn probe() -> Callbacks<()> {
    Callbacks::new().on_rcpt(|cx, args| {
        Box::pin(async move {
            let rcpt = args
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = if rcpt.starts_with("<double@") {
                "probe 100%%20 double"
            } else if rcpt.starts_with("<single@") {
                "probe 100%20 single"
            } else {
                return Status::Continue;
            };
            match cx.reply.set_error_reply("550", Some("5.7.1"), [text]) {
                Ok(()) => Status::Reject,
                Err(_) => Status::Tempfail,
            }
        })
    })
}

pub fn percent_in_reply_text(kind: Kind) {
    let probe = ProbeMilter::start(probe());
    let rt = &probe.rt;
    let mta = Mta::start(kind, probe.addr);

    let session = Session::new(
        "mail.example.net",
        &["double@example.com", "single@example.com"],
    );
    let outcome = rt.block_on(session.run(mta.addr())).expect("SMTP session");
    for (rcpt, reply) in &outcome.rcpts {
        println!(
            "[{kind}] milter text for <{rcpt}> -> client sees {:?}",
            reply.line()
        );
    }
    let double = outcome.rcpt("double@example.com").map(|r| r.milter_form());
    let single = outcome.rcpt("single@example.com").map(|r| r.milter_form());
    let log = mta.log();
    drop(mta);
    drop(probe);

    // What bogus-helo-milter relies on: `%%` reaches the client as `%`.
    assert_eq!(
        double.as_deref(),
        Some("550 5.7.1 probe 100%20 double"),
        "{kind}: `%%` in a milter reply\n{}\n{log}",
        outcome.transcript()
    );
    // A single `%` is not what libmilter allows; record what this MTA does with it.
    println!("[{kind}] single % -> {single:?}");
}
