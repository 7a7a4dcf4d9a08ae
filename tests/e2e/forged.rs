//! Issue 19: a message that arrives with forged `X-Bogus-HELO` headers leaves with none
//! that we did not add, through the milter behind Postfix and Sendmail, and through the
//! policy service behind Postfix with README's `header_checks` recipe. The messages go to
//! [`CAPTURE_DOMAIN`], so the test reads them as the MTA delivered them.

use crate::{
    bed::Bed,
    common::{
        mta::{Kind, CAPTURE_DOMAIN},
        smtp::{Outcome, Session},
    },
};
use std::time::Duration;

/// The forgery, another spelling of the name, and a guess at the policy
/// service's key.
const FORGED: [&str; 3] = [
    "X-Bogus-HELO: rule=none helo=\"mail.sender.example\" client=203.0.113.5",
    "x-bogus-helo: rule=own-ip helo=\"[192.0.2.25]\" client=203.0.113.5",
    "X-Bogus-HELO : rule=ip helo=\"x\" client=203.0.113.5 key=0123456789abcdef0123",
];

/// README's `header_checks` map for the policy service, verbatim; `TAG_KEY` stands for
/// `tag_key`'s value.
pub const HEADER_CHECKS: &str = "\
if /^X-Bogus-HELO[[:space:]]*:/
/^(X-Bogus-HELO: .*[^ ]) +key=TAG_KEY$/i REPLACE ${1}
/^/ IGNORE
endif
";

/// README's `main.cf` line for it.
pub const HEADER_CHECKS_MAIN_CF: &str =
    "header_checks = regexp:/etc/postfix/bogus-helo-header-checks\n";

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
    expect_tags_delivered(bed, label, &outcome, &rcpt, expected);
}

/// Expects `rcpt` (at [`CAPTURE_DOMAIN`]) accepted and the message of `outcome`
/// delivered to it with exactly `expected` tag headers.
pub fn expect_tags_delivered(
    bed: &mut Bed,
    label: &str,
    outcome: &Outcome,
    rcpt: &str,
    expected: &[&str],
) {
    bed.expect_rcpt(outcome, rcpt, "250");
    bed.expect_delivered_to(outcome, &[rcpt]);
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
    let removed = "event=header_removed header=X-Bogus-HELO count=3 ";
    if log.matches(removed).count() != 2 {
        bed.problem(format!("expected two {removed:?} lines in the milter log"));
    }
    bed.finish();
}

/// Through the policy service behind Postfix with README's recipe (`tag_key` and the
/// `header_checks` map): ours alone, without its key, when tagged; none when not; the
/// key never in a log. Without the recipe the forged headers go through beside ours, as
/// README says.
#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn policy_forged_headers_removed_by_header_checks() {
    const KEY: &str = "e2e-Key_0123456789abcdefXYZ";
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("bogus-helo-header-checks");
    std::fs::write(&map, HEADER_CHECKS.replace("TAG_KEY", KEY)).unwrap();
    {
        // As README advises: the map readable by root only (cleanup opens it as root).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let main_cf = HEADER_CHECKS_MAIN_CF.replace(
        "/etc/postfix/bogus-helo-header-checks",
        &map.display().to_string(),
    );
    let config = format!("tag_key = \"{KEY}\"\n[rules]\nip = \"tag\"\n");
    let mut bed = Bed::start_policy_with_main_cf(&config, &main_cf);
    expect_delivered_tags(&mut bed, "policy, tagged", "[192.0.2.9]", &[OURS]);
    expect_delivered_tags(&mut bed, "policy, not tagged", "mail.sender.example", &[]);
    if bed.milter().log().contains(KEY) || bed.mta.log().contains(KEY) {
        bed.problem("the key is in a log");
    }
    bed.finish();

    let mut bed = Bed::start_policy("[rules]\nip = \"tag\"\n");
    let mut everything: Vec<String> = FORGED
        .iter()
        .map(|h| h.split_once(':').unwrap().1.trim().to_string())
        .collect();
    everything.insert(0, OURS.to_string());
    let everything: Vec<&str> = everything.iter().map(String::as_str).collect();
    expect_delivered_tags(
        &mut bed,
        "policy without the recipe",
        "[192.0.2.9]",
        &everything,
    );
    bed.finish();
}

/// README gives the map and the `main.cf` line that the policy test uses, verbatim.
#[test]
fn readme_has_the_tested_header_checks_recipe() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for snippet in [HEADER_CHECKS, HEADER_CHECKS_MAIN_CF] {
        assert!(
            readme.contains(snippet),
            "README.md must contain, verbatim, what the tests use:\n{snippet}"
        );
    }
}

/// Issue 19, item 13, through a real MTA: Postfix with `milter_protocol = 2` offers
/// neither `NOREPLY_*` nor skipping DATA or unknown commands, which the milter used to
/// ask for whatever was offered (every session then failed its negotiation and got
/// `milter_default_action`). It asks only for what is offered: the message is tagged and
/// the forged headers removed all the same.
#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn postfix_milter_protocol_2() {
    let mut bed = Bed::start_with_main_cf(
        Kind::Postfix,
        &format!("{}[rules]\nip = \"tag\"\n", crate::bed::CONFIG_HEAD),
        "milter_protocol = 2\n",
    );
    expect_delivered_tags(
        &mut bed,
        "milter_protocol 2, tagged",
        "[192.0.2.9]",
        &[OURS],
    );
    // The MTA's own address: refused, with the macros Postfix sends unasked in protocol 2.
    let own = bed.send(&Session::new("[127.0.0.1]", &["u@example.com"]));
    bed.expect_rcpt(&own, "u@example.com", "550 5.7.1 bogus helo 127.0.0.1");
    let log = bed.milter().log();
    if log.contains("event=session_error") || log.contains("event=negotiate") {
        bed.problem("expected every session to negotiate");
    }
    bed.finish();
}
