//! The cases of issue 10, as an administrator meets them: a `milter.conf`, and the
//! binary's `explain` or `-t` on it. Every expected value is written out by hand.

mod common;

use bogus_helo_milter::{domain, helo::Helo};
use common::milter::BIN;
use std::{fs, process::Command};

struct Run {
    code: i32,
    stdout: String,
    /// With the config file's path replaced by `FILE`.
    stderr: String,
}

fn run(config: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.conf");
    fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE"),
    }
}

/// What `explain` says: the rule's name (`none` if none), the verdict and the reply.
#[derive(Debug, Eq, PartialEq)]
struct Explained {
    rule: String,
    verdict: String,
    reply: String,
}

fn explain(config: &str, args: &[&str]) -> Explained {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    let r = run(config, &all);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    let field = |name: &str| {
        r.stdout
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{}", r.stdout))
            .trim()
            .to_string()
    };
    let rule = field("rule:");
    Explained {
        rule: rule.split([' ', ':']).next().unwrap_or("").to_string(),
        verdict: field("verdict:"),
        reply: field("reply:"),
    }
}

/// `explain` for a client at 198.51.100.7, which no default setting trusts.
fn judge(config: &str, helo: &str, rcpt: &str, more: &[&str]) -> Explained {
    let mut args = vec!["--helo", helo, "--rcpt", rcpt, "--client", "198.51.100.7"];
    args.extend_from_slice(more);
    explain(config, &args)
}

fn answer(rule: &str, verdict: &str, reply: &str) -> Explained {
    Explained {
        rule: rule.into(),
        verdict: verdict.into(),
        reply: reply.into(),
    }
}

const ROLE: &str = "accept, exempt: postmaster and abuse are never refused (exempt_role_accounts; <postmaster> always)";
const LISTED: &str = "accept, exempt: the recipient is on the whitelist";
const OFF: &str = "accept, exempt: the action for this rule and recipient is off";
const TRUSTED: &str = "accept, exempt: the client address is in trusted_networks";
const NO_REPLY: &str = "none from the milter (the MTA goes on)";
const BOGUS: &str = "550 5.7.1 bogus helo";

fn rejected_ip() -> Explained {
    answer("ip", "reject", BOGUS)
}

fn exempt(rule: &str, verdict: &str) -> Explained {
    answer(rule, verdict, NO_REPLY)
}

/// Item 1: postmaster, bare or at any domain, and abuse get mail whatever the HELO.
#[test]
fn postmaster_and_abuse_are_never_refused() {
    for rcpt in [
        "<postmaster>",
        "postmaster",
        "<Postmaster>",
        "postmaster@example.com",
        "<POSTMASTER@Example.COM.>",
        "postmaster+bounces@example.com",
        "abuse@example.org",
    ] {
        assert_eq!(
            judge("", "[192.0.2.9]", rcpt, &[]),
            exempt("ip", ROLE),
            "{rcpt}"
        );
    }
    assert_eq!(
        judge("", "[192.0.2.9]", "user@example.com", &[]),
        rejected_ip()
    );

    // Turned off, only RFC 5321's bare <postmaster> stays exempt.
    let off = "exempt_role_accounts = false\n";
    assert_eq!(
        judge(off, "[192.0.2.9]", "<postmaster>", &[]),
        exempt("ip", ROLE)
    );
    for rcpt in ["postmaster@example.com", "abuse@example.org"] {
        assert_eq!(
            judge(off, "[192.0.2.9]", rcpt, &[]),
            rejected_ip(),
            "{rcpt}"
        );
    }
}

/// Item 1: the whitelist holds whole domains and local parts at every domain.
#[test]
fn whitelist_holds_domains_and_local_parts() {
    let config = "exempt_role_accounts = false\nwhitelist = [\"postmaster@*\", \"@example.com\"]\n";
    for rcpt in [
        "postmaster@example.org",
        "postmaster@bücher.example",
        "Postmaster+x@example.net",
        "anyone@example.com",
        "<Anyone@EXAMPLE.COM.>",
    ] {
        assert_eq!(
            judge(config, "[192.0.2.9]", rcpt, &[]),
            exempt("ip", LISTED),
            "{rcpt}"
        );
    }
    for rcpt in [
        "anyone@sub.example.com",
        "abuse@example.org",
        "postmaster2@example.org",
    ] {
        assert_eq!(
            judge(config, "[192.0.2.9]", rcpt, &[]),
            rejected_ip(),
            "{rcpt}"
        );
    }
}

/// Item 2: two entries that normalise to one are an error naming both, every time.
#[test]
fn duplicates_after_normalising_are_errors() {
    let cases = [
        (
            "[domains.\"example.com\"]\naction = \"off\"\n[domains.\"Example.COM.\"]\naction = \"reject\"\n",
            ["\"example.com\"", "\"Example.COM.\""],
        ),
        (
            "whitelist = [\"private@example.com\", \"Private@EXAMPLE.com.\"]\n",
            ["\"private@example.com\"", "\"Private@EXAMPLE.com.\""],
        ),
        (
            "own_names = [\"mx.bücher.example\", \"MX.xn--bcher-kva.example\"]\n",
            ["\"mx.bücher.example\"", "\"MX.xn--bcher-kva.example\""],
        ),
    ];
    for (config, names) in cases {
        let args = [
            "explain",
            "--helo",
            "[192.0.2.9]",
            "--rcpt",
            "u@example.com",
            "--client",
            "198.51.100.7",
        ];
        let first = run(config, &args);
        for _ in 0..5 {
            for args in [&args[..], &["-t"]] {
                let r = run(config, args);
                assert_eq!(r.code, 2, "{config}\n{}", r.stdout);
                assert!(r.stdout.is_empty(), "{}", r.stdout);
                assert_eq!(r.stderr, first.stderr, "{config}");
            }
        }
        assert!(
            first.stderr.starts_with("bogus-helo-milter: FILE: "),
            "{}",
            first.stderr
        );
        for name in names {
            assert!(first.stderr.contains(name), "{name} in {}", first.stderr);
        }
    }
}

/// Item 3: an IPv6 network holds IPv6 addresses only.
#[test]
fn ipv6_networks_hold_no_ipv4_address() {
    for network in ["::/0", "::/64"] {
        let trusted = format!("trusted_networks = [\"{network}\"]\n");
        assert_eq!(
            judge(&trusted, "[192.0.2.9]", "u@example.com", &[]),
            rejected_ip(),
            "{network}"
        );
        let own = format!("own_addresses = [\"{network}\"]\n");
        assert_eq!(
            judge(&own, "[192.0.2.9]", "u@example.com", &[]),
            rejected_ip(),
            "{network}"
        );
    }
    // And do hold the IPv6 ones.
    let r = explain(
        "trusted_networks = [\"::/0\"]\n",
        &[
            "--helo",
            "[192.0.2.9]",
            "--rcpt",
            "u@example.com",
            "--client",
            "2001:db8::7",
        ],
    );
    assert_eq!(r, exempt("ip", TRUSTED));
    assert_eq!(
        judge(
            "own_addresses = [\"::/0\"]\n",
            "[IPv6:2001:db8::9]",
            "u@example.com",
            &[]
        ),
        answer("own-ip", "reject", "550 5.7.1 bogus helo 2001:db8::9")
    );
    // An IPv4-mapped client is the IPv4 address it maps.
    let r = explain(
        "trusted_networks = [\"198.51.100.0/24\"]\n",
        &[
            "--helo",
            "[192.0.2.9]",
            "--rcpt",
            "u@example.com",
            "--client",
            "::ffff:198.51.100.7",
        ],
    );
    assert_eq!(r, exempt("ip", TRUSTED));
}

/// Item 4: a value of the wrong type is an error naming the key and the value, and the
/// file once.
#[test]
fn wrong_types_are_errors() {
    let cases = [
        ("socket_mode = 0o660\n", "socket_mode", "432"),
        ("max_connections = true\n", "max_connections", "true"),
        ("max_connections = 1.5\n", "max_connections", "1.5"),
    ];
    for (config, key, value) in cases {
        let r = run(config, &["-t"]);
        assert_eq!(r.code, 2, "{config}");
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        assert!(
            r.stderr
                .starts_with(&format!("bogus-helo-milter: FILE: {key}: ")),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(value), "{}", r.stderr);
        assert!(r.stderr.contains("expected"), "{}", r.stderr);
        assert_eq!(r.stderr.matches("FILE").count(), 1, "{}", r.stderr);
    }
}

/// Item 5: every spelling of an internationalised domain is one domain.
#[test]
fn idn_domains_are_one_domain() {
    let config = "[domains.\"bücher.example\"]\naction = \"off\"\n";
    for rcpt in [
        "u@xn--bcher-kva.example",
        "u@BÜCHER.example",
        "u@Bücher.Example.",
        "u@XN--BCHER-KVA.EXAMPLE",
    ] {
        assert_eq!(
            judge(config, "[192.0.2.9]", rcpt, &[]),
            exempt("ip", OFF),
            "{rcpt}"
        );
    }
    assert_eq!(
        judge(config, "[192.0.2.9]", "u@www.bücher.example", &[]),
        rejected_ip()
    );
    // The HELO is compared in the same form.
    for (helo, rcpt) in [
        ("BÜCHER.example", "u@xn--bcher-kva.example"),
        ("xn--bcher-kva.example.", "u@Bücher.example"),
    ] {
        assert_eq!(
            judge("", helo, rcpt, &[]),
            answer("rcpt-domain", "reject", "550 5.7.1 bogus helo matches rcpt"),
            "{helo} {rcpt}"
        );
    }
    assert_eq!(
        judge(
            "own_names = [\"MX.Bücher.example.\"]\n",
            "mx.xn--bcher-kva.example",
            "u@example.org",
            &[]
        ),
        answer("rcpt-domain", "reject", "550 5.7.1 bogus helo matches rcpt")
    );
}

/// IDNA maps the ideographic full stop to a dot and drops a soft hyphen, so a name can end in
/// the root's dot only after mapping: it is the same domain as without it (found by the helo
/// fuzz target, input `fuzz/regressions/helo/crash-dot-after-mapping`).
#[test]
fn a_root_dot_made_by_idna_is_the_root_dot() {
    let off = "[domains.\"example.com\"]\naction = \"off\"\n";
    for rcpt in ["u@example.com\u{3002}", "u@Example.COM.\u{ad}"] {
        assert_eq!(
            judge(off, "[192.0.2.9]", rcpt, &[]),
            exempt("ip", OFF),
            "{rcpt}"
        );
        assert_eq!(
            judge("", "example.com", rcpt, &[]),
            answer("rcpt-domain", "reject", "550 5.7.1 bogus helo matches rcpt"),
            "{rcpt}"
        );
    }
    assert_eq!(
        judge(
            "own_names = [\"mx.example.com\"]\n",
            "MX.example.com\u{3002}",
            "u@example.org",
            &[]
        )
        .rule,
        "rcpt-domain"
    );
}

/// Item 5: `.example.com` is every domain below example.com, and entries that can never
/// match are errors.
#[test]
fn subdomain_entries() {
    let config = "[domains.\".example.com\"]\naction = \"tempfail\"\n[domains.\"b.example.com\"]\naction = \"off\"\n[domains.\".c.example.com\"]\naction = \"log\"\n";
    let tempfail = answer("ip", "tempfail", "450 4.7.1 bogus helo");
    let log = answer(
        "ip",
        "accept, log only (action = log): the milter would reply as below",
        BOGUS,
    );
    for (rcpt, expected) in [
        ("u@a.example.com", tempfail),
        (
            "u@x.y.example.com",
            answer("ip", "tempfail", "450 4.7.1 bogus helo"),
        ),
        ("u@example.com", rejected_ip()),
        ("u@b.example.com", exempt("ip", OFF)),
        (
            "u@x.b.example.com",
            answer("ip", "tempfail", "450 4.7.1 bogus helo"),
        ),
        (
            "u@c.example.com",
            answer("ip", "tempfail", "450 4.7.1 bogus helo"),
        ),
        ("u@x.c.example.com", log),
        ("u@notexample.com", rejected_ip()),
    ] {
        assert_eq!(judge(config, "[192.0.2.9]", rcpt, &[]), expected, "{rcpt}");
    }
    for key in ["*.example.com", "example.com..", "..example.com"] {
        let r = run(&format!("[domains.\"{key}\"]\naction = \"off\"\n"), &["-t"]);
        assert_eq!(r.code, 2, "{key}");
        assert!(
            r.stderr
                .starts_with(&format!("bogus-helo-milter: FILE: domains.\"{key}\"")),
            "{}",
            r.stderr
        );
    }
}

/// Item 6: the whitelist is compared in the form the rules use.
#[test]
fn whitelist_is_normalised_like_the_rules() {
    let config = "whitelist = [\"private@example.com\"]\n";
    for rcpt in [
        "private@example.com.",
        "<Private@EXAMPLE.COM.>",
        "\"private\"@example.com",
        "private+orders@Example.com.",
    ] {
        assert_eq!(
            judge(config, "[192.0.2.9]", rcpt, &[]),
            exempt("ip", LISTED),
            "{rcpt}"
        );
    }
    // The trailing dot counts for the rcpt-domain rule as it does for the whitelist.
    assert_eq!(
        judge(config, "example.com", "private@example.com.", &[]),
        exempt("rcpt-domain", LISTED)
    );
    assert_eq!(
        judge(config, "example.com", "other@example.com.", &[]),
        answer("rcpt-domain", "reject", "550 5.7.1 bogus helo matches rcpt")
    );
}

/// Item 10: text that resolvers read as an IP address is an IP address to the rules.
#[test]
fn every_address_form_is_an_address() {
    for helo in [
        "192.000.002.009",
        "3221225993",
        "0xc0.0.2.9",
        "[192.0.2.9]",
        "0300.0.2.011",
    ] {
        assert_eq!(
            judge("", helo, "u@example.com", &[]),
            rejected_ip(),
            "{helo}"
        );
        assert_eq!(
            judge("", helo, "u@example.com", &["--local", "192.0.2.9"]),
            answer("own-ip", "reject", "550 5.7.1 bogus helo 192.0.2.9"),
            "{helo}"
        );
    }
    let helo = "[IPv6:fe80::1%eth0]";
    assert_eq!(judge("", helo, "u@example.com", &[]), rejected_ip());
    assert_eq!(
        judge("", helo, "u@example.com", &["--local", "fe80::1"]),
        answer("own-ip", "reject", "550 5.7.1 bogus helo fe80::1")
    );
    assert_eq!(
        judge(
            "own_addresses = [\"fe80::1\"]\n",
            helo,
            "u@example.com",
            &[]
        ),
        answer("own-ip", "reject", "550 5.7.1 bogus helo fe80::1")
    );
}

/// Item 10: the unspecified addresses (Sendmail's `{daemon_addr}` when it listens on every
/// address) are never own addresses.
#[test]
fn unspecified_addresses_are_never_own() {
    for (helo, local) in [("[0.0.0.0]", "0.0.0.0"), ("[IPv6:::]", "::")] {
        assert_eq!(
            judge("", helo, "u@example.com", &["--local", local]),
            rejected_ip(),
            "{helo}"
        );
    }
    assert_eq!(
        judge(
            "own_addresses = [\"0.0.0.0/0\"]\n",
            "[0.0.0.0]",
            "u@example.com",
            &[]
        ),
        rejected_ip()
    );
}

/// What `-t` prints reads back as the same configuration (whitelist entries included).
#[test]
fn printed_whitelist_reads_back() {
    let config = "whitelist = [\"\\\"\\\\\\\"x\\\\\\\"\\\"@example.com\"]\n";
    let first = run(config, &["-t"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let again = run(&first.stdout, &["-t"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again.stdout), body(&first.stdout));
}

/// An empty quoted local part is refused, never read as the whole domain.
#[test]
fn empty_quoted_local_part_is_not_a_domain() {
    let r = run("whitelist = [\"\\\"\\\"@example.com\"]\n", &["-t"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("an empty local part"), "{}", r.stderr);
}

/// `"@*"` (the fuzzer's `"\n@*"`) would whitelist every recipient with an empty local
/// part, and reads as "everyone": it is an error, never an entry.
#[test]
fn at_star_is_no_entry() {
    for entry in ["@*", "\\n@*", " <@*> "] {
        let r = run(&format!("whitelist = [\"{entry}\"]\n"), &["-t"]);
        assert_eq!(r.code, 2, "{entry:?}: {}", r.stdout);
        assert!(
            r.stderr.contains("whitelist") && r.stderr.contains("would name every recipient"),
            "{entry:?}: {}",
            r.stderr
        );
    }
}

/// A name that is an IP address in another spelling can never match as a name.
#[test]
fn addresses_are_not_own_names() {
    for name in ["192.0.2.1.", "3221225993", "0xc0.0.2.9"] {
        let r = run(&format!("own_names = [\"{name}\"]\n"), &["-t"]);
        assert_eq!(r.code, 2, "{name}: {}", r.stdout);
        assert!(
            r.stderr.contains("an IP address, not a domain name"),
            "{}",
            r.stderr
        );
    }
}

/// IDNA maps "³" to "3" and full-width digits and dots to ASCII ones: a name that becomes
/// an address once normalised is refused like the address (found by the helo fuzz target,
/// input `fuzz/regressions/helo/crash-superscript-three`).
#[test]
fn names_that_normalise_to_addresses_are_refused() {
    for name in ["³", "１９２．０．２．１", "0x³"] {
        let r = run(&format!("own_names = [\"{name}\"]\n"), &["-t"]);
        assert_eq!(r.code, 2, "{name}: {}", r.stdout);
        assert!(
            r.stderr.contains("own_names") && r.stderr.contains("an IP address, not a domain name"),
            "{name}: {}",
            r.stderr
        );
    }
}

/// The comparable form of a name is a fixed point: normalising it again changes nothing.
#[test]
fn normalize_is_idempotent() {
    for text in [
        "example.com..",
        "EXAMPLE.COM..",
        "a...",
        "example.com\u{3002}",
        "\n....\n.\u{ad} ",
    ] {
        let once = domain::normalize(text).into_owned();
        assert_eq!(domain::normalize(&once), once, "{text}");
        match Helo::parse(text) {
            Helo::Name(name) => assert_eq!(domain::normalize(&name), name, "{text}"),
            ip => panic!("{text}: {ip:?}"),
        }
    }
}

/// Issue 19 item 1: a setting an entry leaves out comes from the nearest enclosing entry
/// before the top level, so a per-rule entry for a subdomain does not turn the parent
/// entry's dry run into real refusals.
#[test]
fn a_subdomain_entry_inherits_from_its_parent_entry() {
    let config = "action = \"reject\"\n[domains.\".example.com\"]\naction = \"log\"\n[domains.\"a.example.com\".rules]\nip = \"tag\"\n";
    let action = |rcpt: &str, helo: &str| {
        let r = run(
            config,
            &[
                "explain",
                "--helo",
                helo,
                "--local",
                "192.0.2.25",
                "--rcpt",
                rcpt,
            ],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        let field = |name: &str| {
            r.stdout
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in:\n{}", r.stdout))
                .trim()
                .to_string()
        };
        (field("action:"), field("verdict:"))
    };
    let log = "accept, log only (action = log): the milter would reply as below";
    let from_parent = "log (from domains.\".example.com\".action)";
    for rcpt in ["u@a.example.com", "u@b.example.com", "u@x.a.example.com"] {
        assert_eq!(
            action(rcpt, "[192.0.2.25]"),
            (from_parent.to_string(), log.to_string()),
            "{rcpt}"
        );
    }
    assert_eq!(
        action("u@a.example.com", "[192.0.2.9]"),
        (
            "tag (from domains.\"a.example.com\".rules.ip)".to_string(),
            "accept, and tag the message: X-Bogus-HELO: rule=ip helo=\"[192.0.2.9]\" client=unknown"
                .to_string()
        )
    );
    assert_eq!(
        action("u@example.com", "[192.0.2.25]"),
        ("reject (from action)".to_string(), "reject".to_string())
    );

    let r = run(config, &["-t"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in [
        "#   *.example.com              log        log        log         off        off        off        off\n",
        "#   a.example.com              log        tag        log         off        off        off        off\n",
        "#   a.example.com              own-ip domains.\".example.com\".action, ip domains.\"a.example.com\".rules.ip, rcpt-domain domains.\".example.com\".action, invalid the default (off until a rule key names it), non-fqdn the default (off until a rule key names it), unknown the default (off until a rule key names it), mismatch the default (off until a rule key names it)\n",
        "#   (other domains)            own-ip action, ip action, rcpt-domain action, invalid the default (off until a rule key names it), non-fqdn the default (off until a rule key names it), unknown the default (off until a rule key names it), mismatch the default (off until a rule key names it)\n",
    ] {
        assert!(r.stdout.contains(line), "{line:?} in:\n{}", r.stdout);
    }

    // At each level the entry's rule, then its action; a nearer level before a farther
    // one, the top-level `[rules]` only after every entry.
    let config = "[rules]\nown-ip = \"tempfail\"\n[domains.\".example.com\".rules]\nown-ip = \"off\"\n[domains.\".a.example.com\"]\naction = \"log\"\n[domains.\"a.example.com\"]\naction = \"tag\"\n[domains.\".net\"]\naction = \"log\"\n";
    let expected = [
        (
            "u@a.example.com",
            "tag (from domains.\"a.example.com\".action)",
        ),
        (
            "u@x.a.example.com",
            "log (from domains.\".a.example.com\".action)",
        ),
        (
            "u@b.example.com",
            "off (from domains.\".example.com\".rules.own-ip)",
        ),
        ("u@example.net", "log (from domains.\".net\".action)"),
        ("u@example.org", "tempfail (from rules.own-ip)"),
    ];
    for (rcpt, from) in expected {
        let r = run(
            config,
            &[
                "explain",
                "--helo",
                "[192.0.2.25]",
                "--local",
                "192.0.2.25",
                "--rcpt",
                rcpt,
            ],
        );
        assert!(
            r.stdout.contains(&format!("action:    {from}\n")),
            "{rcpt}:\n{}",
            r.stdout
        );
    }
}
