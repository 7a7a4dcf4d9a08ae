//! The README's "Attaching to Postfix/Sendmail" snippets are the ones the end-to-end tests
//! configure (`common::mta::{POSTFIX_MAIN_CF, SENDMAIL_MC}`): these tests (not ignored)
//! keep the two identical.

use crate::common::{
    mta::{
        postfix_policy_snippet, postfix_snippet, sendmail_snippet, POSTFIX_MAIN_CF,
        POSTFIX_POLICY_MAIN_CF, SENDMAIL_MC,
    },
    smtp::Reply,
};
use std::{fs, net::SocketAddr, path::Path};

fn read(relative: &str) -> Option<String> {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).ok()
}

/// The text of the section headed `## {title}` (up to the next `## `).
fn section<'a>(doc: &'a str, title: &str) -> Option<&'a str> {
    let start = doc.find(&format!("## {title}\n"))?;
    let body = &doc[start + title.len() + 4..];
    let end = body.find("\n## ").map_or(body.len(), |e| e + 1);
    Some(&body[..end])
}

fn check(file: &str, doc: &str) {
    for (title, snippet) in [
        ("Attaching to Postfix", POSTFIX_MAIN_CF),
        ("Attaching to Sendmail", SENDMAIL_MC),
        ("milter or policy service", POSTFIX_POLICY_MAIN_CF),
    ] {
        let text = section(doc, title).unwrap_or_else(|| panic!("{file}: no section {title:?}"));
        assert!(
            text.contains(snippet),
            "{file}, section {title:?}, must contain the snippet the tests use, verbatim:\n{snippet}"
        );
    }
}

#[test]
fn readme_has_the_tested_snippets() {
    let readme = read("README.md").expect("README.md");
    check("README.md", &readme);
    // What `Milter::start_policy` writes before each test's config, with its port.
    let policy_only = "socket = \"\"\npolicy_socket = \"inet:127.0.0.1:8896\"\n";
    assert!(
        section(&readme, "milter or policy service").is_some_and(|s| s.contains(policy_only)),
        "README.md must show the policy-only milter.conf lines the tests use:\n{policy_only}"
    );
}

#[test]
fn the_manual_has_the_tested_sendmail_line() {
    let manual = read("man/bogus-helo-milter.8").expect("man page");
    let manual = manual.replace("\\-", "-");
    assert!(
        manual.contains(SENDMAIL_MC.trim()),
        "man/bogus-helo-milter.8 must give the Sendmail line the tests use:\n{SENDMAIL_MC}"
    );
}

#[test]
fn snippets_get_the_test_milter_address() {
    let addr: SocketAddr = "127.0.0.1:31234".parse().unwrap();
    let postfix = postfix_snippet(addr);
    assert!(postfix.contains("smtpd_milters = inet:127.0.0.1:31234\n"));
    assert!(!postfix.contains("8895"));
    let policy = postfix_policy_snippet(addr);
    assert_eq!(
        policy,
        "smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:31234\n"
    );
    let sendmail = sendmail_snippet(addr);
    assert!(sendmail.contains("S=inet:31234@127.0.0.1,"));
    assert!(!sendmail.contains("8895"));
}

#[test]
fn replies_as_the_milter_wrote_them() {
    let reply = |code, text: &str| Reply {
        code,
        lines: vec![text.to_string()],
    };
    // Sendmail puts the recipient before a milter's text; Postfix does not.
    assert_eq!(
        reply(550, "5.7.1 <b@example.com>... bogus helo").milter_form(),
        "550 5.7.1 bogus helo"
    );
    assert_eq!(
        reply(550, "5.7.1 bogus helo 127.0.0.1").milter_form(),
        "550 5.7.1 bogus helo 127.0.0.1"
    );
    assert_eq!(reply(250, "2.1.5 Ok").milter_form(), "250 2.1.5 Ok");
    assert_eq!(reply(220, "mx ESMTP").milter_form(), "220 mx ESMTP");
}
