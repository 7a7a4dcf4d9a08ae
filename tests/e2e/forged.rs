//! Issue 19: a message that arrives with forged `X-Bogus-HELO` headers leaves with none
//! that we did not add, through the milter behind Postfix and Sendmail, and through the
//! policy service behind Postfix with README's `header_checks` recipe. The messages go to
//! [`CAPTURE_DOMAIN`], so the test reads them as the MTA delivered them.

use crate::{
    bed::Bed,
    common::{
        mta::{Kind, CAPTURE_DOMAIN},
        smtp::Session,
    },
};
use std::time::Duration;

/// The forgery, and another spelling of the name.
const FORGED: [&str; 2] = [
    "X-Bogus-HELO: rule=none helo=\"mail.sender.example\" client=203.0.113.5",
    "x-bogus-helo: rule=own-ip helo=\"[192.0.2.25]\" client=203.0.113.5",
];

/// What we write for HELO `[192.0.2.9]` from 127.0.0.1 (README's format).
pub const OURS: &str = "rule=ip helo=\"[192.0.2.9]\" client=127.0.0.1";

/// The values of the headers named `X-Bogus-HELO` (in any case) in `message`'s header,
/// unfolded.
pub fn tag_headers(message: &str) -> Vec<String> {
    let head = message
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .replace("\r\n", "\n");
    let mut headers: Vec<String> = Vec::new();
    for line in head.lines() {
        match (line.starts_with([' ', '\t']), headers.last_mut()) {
            (true, Some(last)) => last.push_str(line),
            _ => headers.push(line.to_string()),
        }
    }
    headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("X-Bogus-HELO"))
        .map(|(_, value)| value.trim().to_string())
        .collect()
}

/// Sends `session` with the forged headers and expects exactly `expected` tag headers
/// in what was delivered.
pub fn expect_delivered_tags(bed: &mut Bed, label: &str, helo: &str, expected: &[&str]) {
    let rcpt = format!("u@{CAPTURE_DOMAIN}");
    let mut session = Session::new(helo, &[rcpt.as_str()]);
    for header in FORGED {
        session = session.with_header(header);
    }
    let outcome = bed.send(&session);
    bed.expect_rcpt(&outcome, &rcpt, "250");
    bed.expect_delivered_to(&outcome, &[rcpt.as_str()]);
    let kind = bed.kind();
    let Some(message) = bed
        .mta
        .delivered_message(&outcome.message_id, Duration::from_secs(30))
    else {
        bed.problem(format!(
            "{label}: message <{}> not delivered",
            outcome.message_id
        ));
        return;
    };
    let seen = tag_headers(&message);
    println!("[{kind}] {label}: delivered X-Bogus-HELO headers {seen:?}");
    if seen != expected {
        bed.problem(format!(
            "{label}: expected X-Bogus-HELO headers {expected:?}, delivered {seen:?}:\n{message}"
        ));
    }
}

/// Through the milter, whenever a setting uses `tag`: a tagged message leaves with ours
/// alone, an untagged one with none.
pub fn forged_headers_removed(kind: Kind) {
    let mut bed = Bed::start(kind, "[rules]\nip = \"tag\"\n");
    expect_delivered_tags(&mut bed, "tagged", "[192.0.2.9]", &[OURS]);
    expect_delivered_tags(&mut bed, "not tagged", "mail.sender.example", &[]);
    let log = bed.milter().log();
    if log
        .matches("event=header_removed header=X-Bogus-HELO count=2 ")
        .count()
        != 2
    {
        bed.problem("expected two event=header_removed count=2 lines in the milter log");
    }
    bed.finish();
}
