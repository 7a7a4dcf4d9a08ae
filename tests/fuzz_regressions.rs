//! The fuzz targets' properties (fuzz/properties.rs) on stable Rust: every input kept in
//! fuzz/regressions/, and a fixed stream of pseudo-random inputs; and decision scenarios
//! written by hand with their verdicts (a kept fuzz input is bytes, which decode to
//! another scenario whenever the input type changes).

#[path = "../fuzz/properties.rs"]
mod properties;

use arbitrary::{Arbitrary, Unstructured};
use bogus_helo_milter::{
    config::Config,
    domain,
    helo::{parse_macro_ip, Helo},
    recipient::Recipient,
    verdict::{decide, Connection, Exemption, Rule, Verdict},
};
use std::{fs, net::IpAddr, path::Path};

fn kept_inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    inputs.sort();
    inputs
}

/// A kept input that no longer decodes fails: it would otherwise test nothing.
fn kept_decision(bytes: &[u8]) {
    let input = properties::DecisionInput::arbitrary_take_rest(Unstructured::new(bytes))
        .unwrap_or_else(|e| panic!("a kept decision input does not decode ({e}): {bytes:?}"));
    properties::decision(&input);
}

/// Random bytes need not decode.
fn random_decision(bytes: &[u8]) {
    if let Ok(input) = properties::DecisionInput::arbitrary_take_rest(Unstructured::new(bytes)) {
        properties::decision(&input);
    }
}

#[test]
fn kept_inputs_keep_the_properties() {
    for input in kept_inputs("helo") {
        properties::helo(&input);
    }
    for input in kept_inputs("config") {
        properties::config(&input);
    }
    for input in kept_inputs("decision") {
        kept_decision(&input);
    }
    // The kept requests reach every kind of answer, so the property is not vacuous.
    let mut answers = Vec::new();
    for input in kept_inputs("policy") {
        answers.extend(properties::policy(&input));
    }
    for start in [
        "action=DUNNO\n",
        "action=550 5.7.1 bogus helo",
        "action=450 4.7.1 bogus helo",
        "action=PREPEND ",
    ] {
        assert!(
            answers.iter().any(|a| a.starts_with(start.as_bytes())),
            "no kept input is answered {start:?}"
        );
    }
}

/// One to three requests as Postfix sends them at RCPT, with a HELO, recipient and
/// instance of the policy's names or random bytes (no LF: the values stay values), so
/// that the decision and the tag header meet hostile text; then random bytes.
fn random_requests(random: &mut Random, any: &[u8]) -> Vec<u8> {
    let choose = |random: &mut Random, known: &[&str]| -> Vec<u8> {
        let n = (random.next() % (known.len() as u64 + 1)) as usize;
        match known.get(n) {
            Some(text) => text.as_bytes().to_vec(),
            None => random
                .bytes(30, any)
                .into_iter()
                .filter(|&b| b != b'\n')
                .collect(),
        }
    };
    let mut out = Vec::new();
    for _ in 0..1 + random.next() % 3 {
        let helo = choose(random, &["[198.51.100.9]", "[192.0.2.25]", "tag.example"]);
        let mut rcpt = choose(random, &["u@example.com", "u@tempfail.example"]);
        if random.next() & 1 == 0 {
            rcpt.extend_from_slice(b"@tag.example");
        }
        let instance = choose(random, &["1", "2"]);
        for (name, value) in [
            (&b"request"[..], &b"smtpd_access_policy"[..]),
            (b"protocol_state", b"RCPT"),
            (b"client_address", b"198.51.100.7"),
            (b"server_address", b"192.0.2.25"),
            (b"helo_name", &helo),
            (b"recipient", &rcpt),
            (b"instance", &instance),
        ] {
            out.extend_from_slice(name);
            out.push(b'=');
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out.extend(random.bytes(20, any));
    out
}

/// xorshift64*: deterministic, so that a failure here can be replayed.
struct Random(u64);

impl Random {
    fn bytes(&mut self, max_len: usize, alphabet: &[u8]) -> Vec<u8> {
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect()
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_inputs_keep_the_properties() {
    let all: Vec<u8> = (0..=255).collect();
    let helo_like = b"[]:.0123456789abcdefABCDEFIPv6:x@+<>\r\n\0 %\"\\";
    let toml_like = b"[]=\"\\ \n.,#0123456789abcdefloguthrjecnmp_sdw:/@";
    let mut random = Random(0x5eed_1234_abcd_ef01);
    for _ in 0..20_000 {
        properties::helo(&random.bytes(40, helo_like));
        properties::helo(&random.bytes(40, &all));
        random_decision(&random.bytes(300, &all));
    }
    for _ in 0..2_000 {
        properties::config(&random.bytes(120, toml_like));
    }
    // Requests: attribute lines and empty lines in any order, then any bytes at all.
    let request_like = b"=\n\n\r\0[]:.@<>\"\\ 0123456789abcdefrequstpolinam_RCPTVY";
    let mut prepends = 0;
    for _ in 0..5_000 {
        properties::policy(&random.bytes(200, request_like));
        properties::policy(&random.bytes(200, &all));
        let answers = properties::policy(&random_requests(&mut random, &all));
        prepends += answers
            .iter()
            .filter(|a| a.starts_with(b"action=PREPEND "))
            .count();
    }
    assert!(
        prepends > 100,
        "{prepends} tag headers: the requests miss the decision"
    );
}

/// A decision scenario written by hand, in the texts an administrator and an MTA give:
/// `conf` is `milter.conf`, `local` the `{daemon_addr}`/`{if_addr}` texts, `client` the
/// socket's address as it arrives (IPv4-mapped stays mapped here: the decision must not
/// depend on a front end canonicalising it).
struct Written {
    name: &'static str,
    conf: &'static str,
    interfaces: &'static [&'static str],
    mta_name: Option<&'static str>,
    local: &'static [&'static str],
    client: &'static str,
    authenticated: bool,
    helo: &'static str,
    rcpt: &'static str,
    expected: Verdict,
}

const FOREIGN: &str = "198.51.100.7";

fn written_verdict(s: &Written) -> Verdict {
    let config = Config::parse(s.conf, "written.conf")
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", s.name, s.conf));
    let interfaces: Vec<IpAddr> = s.interfaces.iter().map(|a| a.parse().unwrap()).collect();
    let ruleset = config.ruleset_with(&interfaces);
    let mut conn = Connection {
        helo: Some(Helo::parse(s.helo)),
        client: Some(s.client.parse().unwrap()),
        server_name: s.mta_name.map(|j| domain::normalize(j).into_owned()),
        authenticated: s.authenticated,
        ..Connection::default()
    };
    for text in s.local {
        let ip = parse_macro_ip(text).unwrap_or_else(|| panic!("{}: {text:?}", s.name));
        conn.add_local(ip);
    }
    decide(&ruleset, &conn, &Recipient::parse(s.rcpt))
}

/// The scenarios the fuzzing of the decision once got wrong or that the model must keep
/// meeting, each with the verdict the bounce page and README give, written by hand.
#[test]
fn written_scenarios_have_their_verdicts() {
    let v4 = |text: &str| IpAddr::V4(text.parse().unwrap());
    let v6 = |text: &str| IpAddr::V6(text.parse().unwrap());
    let base = Written {
        name: "",
        conf: "",
        interfaces: &[],
        mta_name: Some("mx.example.com"),
        local: &["192.0.2.25"],
        client: FOREIGN,
        authenticated: false,
        helo: "[192.0.2.9]",
        rcpt: "<u@example.com>",
        expected: Verdict::Reject(Rule::Ip),
    };
    let scenarios = [
        Written {
            name: "bare postmaster is exempt with role accounts off (RFC 5321)",
            conf: "exempt_role_accounts = false",
            rcpt: "<postmaster>",
            expected: Verdict::Exempt(Rule::Ip, Exemption::RoleAccount),
            ..base
        },
        Written {
            name: "postmaster at a domain is refused with role accounts off",
            conf: "exempt_role_accounts = false",
            rcpt: "<postmaster@example.com>",
            expected: Verdict::Reject(Rule::Ip),
            ..base
        },
        Written {
            name: "an IDN parent entry with action off covers its A-label subdomains",
            conf: "[domains.\".B\u{fc}cher.example\"]\naction = \"off\"",
            rcpt: "<u@shop.xn--bcher-kva.example>",
            expected: Verdict::Exempt(Rule::Ip, Exemption::Off),
            ..base
        },
        Written {
            name: "a .parent entry does not cover the parent itself",
            conf: "[domains.\".b\u{fc}cher.example\"]\naction = \"off\"",
            rcpt: "<u@xn--bcher-kva.example>",
            expected: Verdict::Reject(Rule::Ip),
            ..base
        },
        Written {
            name: "::/0 trusts no IPv4 client",
            conf: "trusted_networks = [\"::/0\"]",
            expected: Verdict::Reject(Rule::Ip),
            ..base
        },
        Written {
            name: "::ffff:192.0.2.0/120 trusts 192.0.2.7",
            conf: "trusted_networks = [\"::ffff:192.0.2.0/120\"]",
            client: "192.0.2.7",
            expected: Verdict::Exempt(Rule::Ip, Exemption::Trusted),
            ..base
        },
        Written {
            name: "a client arriving IPv4-mapped is trusted as IPv4",
            client: "::ffff:127.0.0.1",
            expected: Verdict::Exempt(Rule::Ip, Exemption::Trusted),
            ..base
        },
        Written {
            name: "an IPv4-mapped client is matched by an IPv4 network",
            conf: "trusted_networks = [\"192.0.2.0/24\"]",
            client: "::ffff:192.0.2.7",
            expected: Verdict::Exempt(Rule::Ip, Exemption::Trusted),
            ..base
        },
        Written {
            name: "own address written as one decimal number (inet_aton)",
            conf: "own_addresses = [\"203.0.113.25\"]",
            helo: "[3405803801]",
            expected: Verdict::Reject(Rule::OwnIp(v4("203.0.113.25"))),
            ..base
        },
        Written {
            name: "own address in hex, decimal and a 16-bit octal part (inet_aton a.b.c)",
            conf: "own_addresses = [\"203.0.113.25\"]",
            helo: "0xcb.0.070431",
            expected: Verdict::Reject(Rule::OwnIp(v4("203.0.113.25"))),
            ..base
        },
        Written {
            name: "the {daemon_addr} with a zone is the address without it",
            local: &["fe80::25%eth0"],
            helo: "[IPv6:fe80::25]",
            expected: Verdict::Reject(Rule::OwnIp(v6("fe80::25"))),
            ..base
        },
        Written {
            name: "an interface address is an own address",
            interfaces: &["2001:db8::25"],
            local: &[],
            helo: "[IPv6:2001:DB8:0:0::25]",
            expected: Verdict::Reject(Rule::OwnIp(v6("2001:db8::25"))),
            ..base
        },
        Written {
            name: "an unspecified {daemon_addr} names no own address",
            local: &["0.0.0.0", "::"],
            helo: "[0.0.0.0]",
            expected: Verdict::Reject(Rule::Ip),
            ..base
        },
        Written {
            name: "a whitelisted local part at any domain, with a subaddress",
            conf: "whitelist = [\"sales@*\"]",
            rcpt: "<Sales+orders@any.example>",
            expected: Verdict::Exempt(Rule::Ip, Exemption::Whitelist),
            ..base
        },
        Written {
            name: "the HELO is the MTA's own name",
            helo: "MX.Example.COM.",
            expected: Verdict::Reject(Rule::RcptDomain),
            ..base
        },
        Written {
            name: "authenticated clients are exempt by default",
            authenticated: true,
            helo: "example.com",
            expected: Verdict::Exempt(Rule::RcptDomain, Exemption::Authenticated),
            ..base
        },
        Written {
            name: "a per-rule action in [rules]",
            conf: "[rules]\nip = \"tag\"",
            expected: Verdict::Tag(Rule::Ip),
            ..base
        },
        Written {
            name: "a host name that is no rule's passes",
            helo: "client.example.net",
            expected: Verdict::Pass,
            ..base
        },
    ];
    for s in &scenarios {
        assert_eq!(written_verdict(s), s.expected, "{}\n{}", s.name, s.conf);
    }
}

/// Two spellings of one domain in [domains] are refused, naming both.
#[test]
fn a_duplicate_domain_is_refused_naming_both_spellings() {
    let conf = "[domains.\"Example.COM\"]\naction = \"log\"\n[domains.\"example.com.\"]\naction = \"off\"\n";
    let error = Config::parse(conf, "written.conf")
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{conf}"))
        .to_string();
    assert!(error.starts_with("written.conf: "), "{error}");
    for spelling in ["\"Example.COM\"", "\"example.com.\""] {
        assert!(error.contains(spelling), "{error} does not name {spelling}");
    }
}

/// The normal forms the `helo` property only checks for idempotence, pinned by hand.
#[test]
fn normal_forms_written_by_hand() {
    for (name, normal) in [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("MX.Example.Com.", "mx.example.com"),
        ("B\u{fc}cher.example", "xn--bcher-kva.example"),
        ("b\u{fc}cher.example.", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("exam\u{ad}ple.com", "example.com"),
        ("example.com\u{3002}", "example.com"),
    ] {
        assert_eq!(domain::normalize(name), normal, "{name:?}");
    }
    let v4 = |text: &str| Helo::Ip(text.parse().unwrap());
    for (helo, normal) in [
        ("192.0.2.9", v4("192.0.2.9")),
        ("[192.0.2.9]", v4("192.0.2.9")),
        // Every inet_aton form of 192.0.2.9: a.b.c.d in decimal, octal and hex parts,
        // a.b.c (c 16 bits), a.b (b 24 bits), one 32-bit number.
        ("[0300.0.02.011]", v4("192.0.2.9")),
        ("0xc0.0x0.0x2.0x9", v4("192.0.2.9")),
        ("[192.0.521]", v4("192.0.2.9")),
        ("192.0x209", v4("192.0.2.9")),
        ("192.01011", v4("192.0.2.9")),
        ("[3221225993]", v4("192.0.2.9")),
        ("0xc0000209", v4("192.0.2.9")),
        ("030000001011", v4("192.0.2.9")),
        (
            "[IPv6:2001:DB8:0:0:0:0:0:25]",
            Helo::Ip("2001:db8::25".parse().unwrap()),
        ),
        (
            "[IPv6:2001:db8::25]",
            Helo::Ip("2001:db8::25".parse().unwrap()),
        ),
        ("[IPv6:::ffff:192.0.2.9]", v4("192.0.2.9")),
        ("::ffff:192.0.2.9", v4("192.0.2.9")),
        ("[IPv6:::1]", Helo::Ip("::1".parse().unwrap())),
        (
            "Client.Example.NET.",
            Helo::Name("client.example.net".into()),
        ),
        ("[192.0.2.9", Helo::Name("[192.0.2.9".into())),
        ("192.0.2.256", Helo::Name("192.0.2.256".into())),
    ] {
        assert_eq!(Helo::parse(helo), normal, "{helo:?}");
    }
    // The MTA's {daemon_addr} and {if_addr} texts.
    for (text, ip) in [
        ("192.0.2.25", Some("192.0.2.25")),
        ("[192.0.2.25]", Some("192.0.2.25")),
        ("IPv6:2001:db8::25", Some("2001:db8::25")),
        ("2001:DB8::25", Some("2001:db8::25")),
        ("fe80::25%eth0", Some("fe80::25")),
        ("::ffff:192.0.2.25", Some("192.0.2.25")),
        ("mx.example.com", None),
    ] {
        assert_eq!(
            parse_macro_ip(text),
            ip.map(|ip| ip.parse::<IpAddr>().unwrap()),
            "{text:?}"
        );
    }
}
