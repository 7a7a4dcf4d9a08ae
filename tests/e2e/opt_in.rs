//! The opt-in rules `invalid` and `non-fqdn` end to end, through the milter behind Postfix
//! and Sendmail and through the policy service behind Postfix: per recipient, a
//! whitelisted recipient and one at an `off` domain accepted in the transaction in which
//! another is refused. Both MTAs pass these HELOs on: Postfix accepts any HELO by default,
//! and Sendmail refuses only characters outside letters, digits and `[].-_#:` ("501 5.0.0
//! Invalid domain name"), so no space and no other punctuation here.

use crate::{
    bed::{helo_command, Bed},
    common::{mta::Kind, smtp::Session},
};

const CONFIG: &str = r#"whitelist = ["private@example.com"]
[rules]
invalid = "reject"
non-fqdn = "tempfail"
[domains."off.example"]
action = "off"
"#;

/// HELO, and the reply the milter gives `sales@example.com` (as the milter words it).
const CASES: [(&str, &str); 3] = [
    ("exa_mple.com", "550 5.7.1 bogus helo invalid name"),
    ("[192.0.2.9", "550 5.7.1 bogus helo invalid name"),
    ("DESKTOP-4F2K", "450 4.7.1 bogus helo not fully qualified"),
];

const RCPTS: [&str; 3] = ["private@example.com", "sales@example.com", "d@off.example"];

pub fn invalid_and_non_fqdn(kind: Kind) {
    let mut bed = Bed::start(kind, CONFIG);
    for (helo, refusal) in CASES {
        let outcome = bed.send(&Session::new(helo, &RCPTS).with_data());
        println!("[{kind}] {}", helo_command(&outcome));
        bed.expect_rcpt(&outcome, "private@example.com", "250");
        bed.expect_rcpt(&outcome, "sales@example.com", refusal);
        bed.expect_rcpt(&outcome, "d@off.example", "250");
        bed.expect_delivered_to(&outcome, &["private@example.com", "d@off.example"]);
    }
    // A valid fully qualified name meets neither rule.
    let outcome = bed.send(&Session::new("client.example.net", &RCPTS).with_data());
    bed.expect_rcpt(&outcome, "sales@example.com", "250");
    bed.finish();
}

#[test]
#[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
fn policy_invalid_and_non_fqdn() {
    let mut bed = Bed::start_policy(CONFIG);
    for (helo, refusal) in CASES {
        let outcome = bed.send(&Session::new(helo, &RCPTS).with_data());
        println!("[policy] {}", helo_command(&outcome));
        let (code_status, text) = refusal.split_at(9);
        bed.expect_rcpt(&outcome, "private@example.com", "250");
        bed.expect_rcpt_line(
            &outcome,
            "sales@example.com",
            &format!("{code_status} <sales@example.com>: Recipient address rejected:{text}"),
        );
        bed.expect_rcpt(&outcome, "d@off.example", "250");
        bed.expect_delivered_to(&outcome, &["private@example.com", "d@off.example"]);
    }
    bed.finish();
}
