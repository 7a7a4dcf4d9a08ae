//! The properties the fuzz targets check, shared with the stable test
//! `tests/fuzz_regressions.rs`, which replays the inputs kept in `fuzz/regressions/`.
//!
//! `decision` tests the milter as an administrator meets it: the input chooses a
//! scenario, the property writes the `milter.conf` for it, reads it with `Config::parse`,
//! builds the connection from the raw texts the way the milter does, and compares the
//! verdict with what an independent model says from the choices alone. The model never
//! calls the code under test: every name spelling is a literal in the tables below, every
//! address text is formatted here, and the model compares table indices, not strings.

use arbitrary::Arbitrary;
use bogus_helo_milter::{
    config::Config,
    delegation,
    dns::{Answer, Failure, HeloDns},
    domain,
    helo::{parse_macro_ip, Helo},
    judgement::{self, Outcome, Would},
    recipient::{base_local, Recipient},
    ruleset::RuleSet,
    verdict::{decide, Connection, DnsFallback, Exemption, Rule, Verdict},
    whitelist::Entry,
};
use std::{fmt::Write, net::IpAddr, sync::OnceLock};

/// The HELO and recipient parsers: total, and consistent with what they claim.
pub fn helo(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Helo::parse(&text) {
        Helo::Ip(ip) => {
            assert_eq!(ip, ip.to_canonical(), "an IP HELO is canonical: {text:?}");
            assert!(
                text.bytes().any(|b| b.is_ascii_hexdigit() || b == b':'),
                "{text:?}"
            );
            // The address's own text, bare or as a literal, is the same address.
            let literal = match ip {
                IpAddr::V4(v4) => format!("[{v4}]"),
                IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
            };
            assert_eq!(Helo::parse(&ip.to_string()), Helo::Ip(ip), "{text:?}");
            assert_eq!(Helo::parse(&literal), Helo::Ip(ip), "{text:?}");
        }
        Helo::Name(name) => {
            assert_eq!(
                domain::normalize(&name),
                name,
                "a HELO name is in normalised form: {text:?}"
            );
        }
    }
    let _ = parse_macro_ip(&text);

    let rcpt = Recipient::parse(&text);
    assert!(text.contains(rcpt.address), "{text:?}");
    assert_eq!(
        domain::normalize(&rcpt.domain),
        rcpt.domain,
        "a recipient domain is in normalised form: {text:?}"
    );
    for delimiters in ["+", "+-", ""] {
        let base = base_local(&rcpt.local, delimiters);
        assert!(rcpt.local.starts_with(base));
        assert_eq!(base_local(base, delimiters), base, "{text:?}");
    }

    if let Ok(name) = domain::parse(&text) {
        assert_eq!(domain::normalize(text.trim()), name, "{text:?}");
        assert_eq!(domain::parse(&name), Ok(name.clone()), "{text:?}");
    }
    // A whitelist entry as `-t` prints it is the same entry.
    if let Ok(entry) = Entry::parse(&text) {
        assert_eq!(
            Entry::parse(&entry.to_string()),
            Ok(entry.clone()),
            "{text:?} prints as {entry}"
        );
    }
}

/// The config reader: never panics; what `--check-config` prints reads back the same and
/// decides every probe as the original.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.conf") {
        Ok(config) => {
            let printed = config.to_toml();
            let again = Config::parse(&printed, "fuzz.conf")
                .unwrap_or_else(|e| panic!("printed config does not read back: {e}\n{printed}"));
            assert_eq!(again.to_toml(), printed);
            // Printing is only right if the printed file decides as the original: compared
            // on probes, not through the printer itself.
            let (original, printed_policy) = (config.ruleset_with(&[]), again.ruleset_with(&[]));
            for probe in probes() {
                let rcpt = Recipient::parse(probe.rcpt);
                assert_eq!(
                    decide(&original, &probe.conn, &rcpt),
                    decide(&printed_policy, &probe.conn, &rcpt),
                    "{probe:?}\n{text}\nprinted:\n{printed}"
                );
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.conf: "), "{e}"),
    }
}

/// A connection and recipient on which two configs are compared.
#[derive(Debug)]
struct Probe {
    conn: Connection,
    rcpt: &'static str,
}

/// A fixed set of probes: every rule, the exemptions, IPv4 and IPv6, names and IDNs
/// (the config alphabet of the random inputs and the kept ones reach these names).
fn probes() -> &'static [Probe] {
    static PROBES: OnceLock<Vec<Probe>> = OnceLock::new();
    PROBES.get_or_init(|| {
        let helos = [
            "[192.0.2.9]",
            "[192.0.2.25]",
            "[127.0.0.1]",
            "[IPv6:2001:db8::25]",
            "[IPv6:::1]",
            "example.com",
            "a.example.com",
            "mx.example.com",
            "xn--bcher-kva.example",
            "client.example.net",
            "localhost",
            "exa_mple.com",
        ];
        let clients = [
            "198.51.100.7",
            "127.0.0.1",
            "192.0.2.7",
            "10.1.2.3",
            "2001:db8::7",
        ];
        let rcpts = [
            "<u@example.com>",
            "<u@a.example.com>",
            "<u@example.org>",
            "<postmaster@example.com>",
            "<abuse@example.net>",
            "<postmaster>",
            "<private+x@example.com>",
            "<u@xn--bcher-kva.example>",
            "<sales@mx.example.com>",
        ];
        let mut probes = Vec::new();
        for (i, helo) in helos.iter().enumerate() {
            for (j, client) in clients.iter().enumerate() {
                for rcpt in rcpts {
                    let mut conn = Connection {
                        helo: Some(Helo::parse(helo)),
                        client: Some(client.parse().expect("probe address")),
                        server_name: Some("mx.example.com".into()),
                        authenticated: (i + j) % 4 == 0,
                        ..Connection::default()
                    };
                    conn.add_local("192.0.2.25".parse().expect("probe address"));
                    probes.push(Probe { conn, rcpt });
                }
            }
        }
        probes
    })
}

// ---------------------------------------------------------------------------------------
// The policy service: requests as a peer may send them.

/// A policy under which every answer can occur: refusals (with `reply_url`), tempfails,
/// tags, and requests let through by an exemption or a `log` action.
const POLICY_CONF: &str = r#"
own_addresses = ["192.0.2.0/24", "2001:db8::/32"]
own_names = ["mail.example.com"]
trusted_networks = ["10.0.0.0/8"]
whitelist = ["private@example.com"]
reply_url = "https://example.com/why?helo=1"
[domains."tempfail.example"]
action = "tempfail"
[domains."log.example"]
action = "log"
[domains."tag.example"]
action = "tag"
[domains.".tag.example"]
rules = { ip = "tag", rcpt-domain = "tag" }
"#;

fn policy_target_ruleset() -> RuleSet {
    static POLICY: OnceLock<RuleSet> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            Config::parse(POLICY_CONF, "policy.conf")
                .unwrap_or_else(|e| panic!("{e}"))
                .ruleset_with(&[])
        })
        .clone()
}

/// Checks that every log line of the policy service is one line: a peer's text must not
/// start a line of its own in the log (the `logging::quote` promise).
struct OneLineLog;

impl log::Log for OneLineLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let target = metadata.target();
        target.starts_with("bogus_helo_milter::delegation")
            || target.starts_with("bogus_helo_milter::judgement")
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            assert!(
                !line.contains(['\n', '\r', '\0']),
                "a log line that is not one line: {line:?}"
            );
        }
    }

    fn flush(&self) {}
}

/// Whether `name` is a header field name (RFC 5322 §3.6.8: printable ASCII but ':').
fn header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// The policy service on bytes from a peer, as one connection reads them: no input
/// panics, at most one answer per request (a request takes at least an attribute line
/// and the empty line that ends it), and each answer is what Postfix reads as one
/// action: `action=VALUE`, an empty line, VALUE free of CR, LF and NUL and one of the
/// forms the service answers: `DUNNO`, a `550 5.7.1` or `450 4.7.1` reply, or `PREPEND`
/// of one header `Name: value`. Returns the answers.
pub fn policy(data: &[u8]) -> Vec<Vec<u8>> {
    static LOGGER: OneLineLog = OneLineLog;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    let answers = delegation::answers(policy_target_ruleset(), Some("mx.example.net".into()), data);
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    assert!(
        answers.len() <= newlines / 2,
        "{} answers to {newlines} lines: {answers:?}",
        answers.len()
    );
    for answer in &answers {
        let text = String::from_utf8_lossy(answer);
        let value = answer
            .strip_prefix(b"action=")
            .and_then(|rest| rest.strip_suffix(b"\n\n"))
            .unwrap_or_else(|| panic!("not action=...\\n\\n: {text:?}"));
        assert!(
            !value.iter().any(|b| matches!(b, b'\r' | b'\n' | b'\0')),
            "CR, LF or NUL in the action: {text:?}"
        );
        let value = std::str::from_utf8(value).unwrap_or_else(|_| panic!("not UTF-8: {text:?}"));
        let known = value == "DUNNO"
            || value.starts_with("550 5.7.1 bogus helo")
            || value.starts_with("450 4.7.1 bogus helo")
            || value
                .strip_prefix("PREPEND ")
                .and_then(|header| header.split_once(": "))
                .is_some_and(|(name, _)| header_name(name));
        assert!(known, "an answer of no known form: {text:?}");
    }
    answers
}

// ---------------------------------------------------------------------------------------
// The decision, through the configuration file.

/// A domain or host name: its canonical form (IDNA A-labels, lower case, no trailing dot),
/// used by the model only to see which name lies below which, and the spellings that
/// must all denote it, written out by hand.
struct Name {
    canonical: &'static str,
    spellings: &'static [&'static str],
}

/// The one name of `NAMES` with a single label (`example`): `non-fqdn` where no page's
/// rule matches it.
const SINGLE_LABEL_NAME: usize = 3;

const NAMES: [Name; 8] = [
    Name {
        canonical: "example.com",
        spellings: &["example.com", "Example.COM", "EXAMPLE.COM.", "example.com."],
    },
    Name {
        canonical: "sub.example.com",
        spellings: &["sub.example.com", "Sub.Example.Com", "SUB.EXAMPLE.COM."],
    },
    Name {
        canonical: "a.sub.example.com",
        spellings: &["a.sub.example.com", "A.SUB.example.com."],
    },
    Name {
        canonical: "example",
        spellings: &["example", "EXAMPLE", "Example."],
    },
    Name {
        canonical: "xn--bcher-kva.example",
        spellings: &[
            "bücher.example",
            "BÜCHER.example",
            "Bücher.Example.",
            "xn--bcher-kva.example",
            "XN--BCHER-KVA.EXAMPLE.",
        ],
    },
    Name {
        canonical: "www.xn--bcher-kva.example",
        spellings: &[
            "www.bücher.example",
            "WWW.BÜCHER.EXAMPLE",
            "www.xn--bcher-kva.example.",
        ],
    },
    Name {
        canonical: "xn--mnchen-3ya.example",
        spellings: &[
            "münchen.example",
            "MÜNCHEN.example.",
            "xn--mnchen-3ya.example",
            "Xn--Mnchen-3ya.Example",
        ],
    },
    Name {
        canonical: "mx.example.net",
        spellings: &["mx.example.net", "MX.example.net.", "Mx.Example.Net"],
    },
];

/// HELO texts that name no IP address and none of the names above: never a rule.
/// HELOs that are neither an address nor a configured name, each with what it is to the
/// opt-in rules, by hand: `Some(Invalid)`, `Some(NonFqdn)` or `None` (a host name of two
/// labels or more, or no text at all).
const JUNK_HELOS: [(&str, Option<Rule>); 17] = [
    ("localhost", Some(Rule::NonFqdn)),
    ("mail", Some(Rule::NonFqdn)),
    ("DESKTOP-4F2K", Some(Rule::NonFqdn)),
    ("", None),
    ("[192.0.2.9", Some(Rule::Invalid)),
    ("192.0.2.256", None),
    ("1.2.3.4.5", None),
    ("[IPv6:192.0.2.1x]", Some(Rule::Invalid)),
    ("[IPv6:junk]", Some(Rule::Invalid)),
    ("0x1.example", None),
    ("example.com..", Some(Rule::Invalid)),
    ("sub..example.com", Some(Rule::Invalid)),
    ("mx.example.net.example", None),
    ("exa_mple.com", Some(Rule::Invalid)),
    ("-bad.example", Some(Rule::Invalid)),
    ("two words.example", Some(Rule::Invalid)),
    ("münchen", Some(Rule::NonFqdn)),
];

const ADDRESSES: [&str; 11] = [
    "192.0.2.25",
    "192.0.2.9",
    "203.0.113.200",
    "198.51.100.7",
    "127.0.0.1",
    "0.0.0.0",
    "2001:db8::25",
    "2001:db8:1::9",
    "fe80::1",
    "::1",
    "::",
];

/// `own_addresses` and `trusted_networks` entries as written, and the network each is in
/// the model: an IPv4-mapped network is the IPv4 network it maps, and no IPv6 network
/// holds an IPv4 address.
const NETWORKS: [(&str, &str); 16] = [
    ("192.0.2.25", "192.0.2.25/32"),
    ("192.0.2.0/24", "192.0.2.0/24"),
    ("[192.0.2.9]", "192.0.2.9/32"),
    ("203.0.113.0/24", "203.0.113.0/24"),
    ("198.51.100.0/24", "198.51.100.0/24"),
    ("127.0.0.0/8", "127.0.0.0/8"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("::/0", "::/0"),
    ("::/64", "::/64"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("[IPv6:2001:DB8::25]", "2001:db8::25/128"),
    ("::1/128", "::1/128"),
    ("fe80::/10", "fe80::/10"),
    ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
    ("::ffff:198.51.100.7", "198.51.100.7/32"),
    ("::ffff:0:0/96", "0.0.0.0/0"),
];

/// `trusted_networks` when the file does not set it.
const DEFAULT_TRUSTED: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// Local parts, each in spellings that denote the same mailbox.
const LOCALS: [[&str; 4]; 4] = [
    ["user", "User", "USER", "\"user\""],
    ["private", "Private", "PRIVATE", "\"Private\""],
    ["postmaster", "Postmaster", "POSTMASTER", "\"postmaster\""],
    ["abuse", "Abuse", "ABUSE", "\"abuse\""],
];
const POSTMASTER: usize = 2;
const ABUSE: usize = 3;

/// The characters a recipient's subaddress may start with.
const DETAIL_STARTS: [char; 4] = ['+', '-', '_', '.'];

/// `recipient_delimiter` as written (`None`: not set), and what it is in the model.
const DELIMITERS: [(Option<&str>, &str); 6] = [
    (None, "+"),
    (Some(""), ""),
    (Some("+"), "+"),
    (Some("-"), "-"),
    (Some("+-"), "+-"),
    (Some("_."), "_."),
];

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Act {
    Reject,
    Tempfail,
    Log,
    Tag,
    Off,
}

const ACTIONS: [(&str, Act); 10] = [
    ("reject", Act::Reject),
    ("REJECT", Act::Reject),
    ("tempfail", Act::Tempfail),
    ("Tempfail", Act::Tempfail),
    ("log", Act::Log),
    ("LOG", Act::Log),
    ("off", Act::Off),
    ("Off", Act::Off),
    ("tag", Act::Tag),
    ("TAG", Act::Tag),
];

/// A `[domains]` entry as the model reads it: name, below, action, per-rule actions.
type ModelDomain = (usize, bool, Option<Act>, [Option<Act>; MODEL_RULES]);

/// The number of rules chosen in `ConfigChoice` (the DNS rules' are in `DnsChoice`, so
/// that the inputs kept before them still choose the same rules).
const RULES: usize = 5;
/// Every rule, the DNS rules last.
const MODEL_RULES: usize = RULES + 2;

/// The actions `mismatch` may have, the end of `ACTIONS`: it is never refused (RFC 5321
/// §4.1.4).
const MISMATCH_FIRST_ACTION: usize = 4;

/// The answers a DNS question may get, as the model reads them.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum ModelAnswer {
    NxDomain,
    NoData,
    /// An address of `ADDRESSES`.
    Address(u8),
    Exchange,
    Failed(Failure),
}

const DNS_ANSWERS: [ModelAnswer; 9] = [
    ModelAnswer::NxDomain,
    ModelAnswer::NoData,
    ModelAnswer::Address(3),
    ModelAnswer::Address(1),
    ModelAnswer::Address(6),
    ModelAnswer::Address(7),
    ModelAnswer::Exchange,
    ModelAnswer::Failed(Failure::Timeout),
    ModelAnswer::Failed(Failure::ServFail),
];

/// The answer the decision gets.
fn answer(model: ModelAnswer) -> Answer {
    match model {
        ModelAnswer::NxDomain => Answer::NxDomain,
        ModelAnswer::NoData => Answer::NoData,
        ModelAnswer::Address(a) => Answer::Addresses(vec![address(a)]),
        ModelAnswer::Exchange => Answer::Exchanges(vec!["mx.example.net".to_string()]),
        ModelAnswer::Failed(failure) => Answer::Failed(failure),
    }
}

/// The `[rules]` keys of the DNS rules, in the order of `rule_index`.
const DNS_RULE_KEYS: [&str; 2] = ["unknown", "mismatch"];

/// The action a DNS rule's choice writes and means.
fn dns_act(which: usize, n: u8) -> (&'static str, Act) {
    match which {
        0 => pick(&ACTIONS, n),
        _ => pick(&ACTIONS[MISMATCH_FIRST_ACTION..], n),
    }
}

/// The `[rules]` keys, in the order of `rule_index`.
const RULE_KEYS: [&str; RULES] = ["own-ip", "ip", "rcpt-domain", "invalid", "non-fqdn"];

fn rule_index(rule: Rule) -> usize {
    match rule {
        Rule::OwnIp(_) => 0,
        Rule::Ip => 1,
        Rule::RcptDomain => 2,
        Rule::Invalid => 3,
        Rule::NonFqdn => 4,
        Rule::Unknown => 5,
        Rule::Mismatch => 6,
    }
}

/// Whether only a rule key turns the rule on (an `action` does not; the default is off).
fn opt_in(rule: Rule) -> bool {
    rule_index(rule) >= 3
}

/// Per-rule actions as the model reads them, the DNS rules' from `dns`.
fn rule_acts(choice: &[Option<u8>; RULES], dns: [Option<u8>; 2]) -> [Option<Act>; MODEL_RULES] {
    let mut acts = [None; MODEL_RULES];
    for (i, a) in choice.iter().enumerate() {
        acts[i] = a.map(|a| pick(&ACTIONS, a).1);
    }
    for (i, a) in dns.iter().enumerate() {
        acts[RULES + i] = a.map(|a| dns_act(i, a).1);
    }
    acts
}

/// A `[rules]` table under `header`, when it has an entry.
fn write_rules(
    conf: &mut String,
    header: &str,
    choice: &[Option<u8>; RULES],
    dns: [Option<u8>; 2],
) {
    if choice.iter().chain(&dns).any(Option::is_some) {
        let _ = writeln!(conf, "\n[{header}]");
        for (key, action) in RULE_KEYS.iter().zip(choice) {
            if let Some(action) = action {
                let _ = writeln!(conf, "{key} = {}", toml(pick(&ACTIONS, *action).0));
            }
        }
        for (i, (key, action)) in DNS_RULE_KEYS.iter().zip(dns).enumerate() {
            if let Some(action) = action {
                let _ = writeln!(conf, "{key} = {}", toml(dns_act(i, action).0));
            }
        }
    }
}

const REPLY_URLS: [Option<&str>; 3] = [
    None,
    Some("https://example.com/helo"),
    Some("http://x.example/why?helo=1&x=%20"),
];

fn pick<T: Copy>(table: &[T], n: u8) -> T {
    table[usize::from(n) % table.len()]
}

/// A name and one of its spellings.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Spelt {
    name: u8,
    spelling: u8,
}

impl Spelt {
    fn name(self) -> usize {
        usize::from(self.name) % NAMES.len()
    }

    fn text(self) -> &'static str {
        pick(NAMES[self.name()].spellings, self.spelling)
    }

    /// The same name in another spelling.
    fn respelt(self, step: u8) -> Self {
        let count = NAMES[self.name()].spellings.len();
        let current = usize::from(self.spelling) % count;
        let other = (current + 1 + usize::from(step) % (count - 1)) % count;
        Self {
            name: self.name() as u8,
            spelling: other as u8,
        }
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum HeloChoice {
    None,
    /// An address from `ADDRESSES` in one of the forms of `address_text`.
    Address {
        address: u8,
        form: u8,
        style: u8,
    },
    /// The recipient's domain (another name if the recipient has none).
    RcptDomain {
        spelling: u8,
    },
    /// One of `own_names` (another name if there are none).
    OwnName {
        which: u8,
        spelling: u8,
    },
    /// The MTA's `j` (another name if it has none).
    MtaName {
        spelling: u8,
    },
    Name(Spelt),
    Junk(u8),
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct RcptChoice {
    local: u8,
    spelling: u8,
    /// A subaddress starting with one of `DETAIL_STARTS`.
    detail: Option<u8>,
    domain: Spelt,
    /// RFC 5321's bare `<postmaster>` instead, one time in eight.
    bare_postmaster: u8,
    brackets: bool,
    source_route: bool,
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct DomainChoice {
    name: Spelt,
    /// `.example.com`: every domain below.
    below: bool,
    /// `None`: no `action` key (then `rules` is made to have an entry).
    action: Option<u8>,
    rules: [Option<u8>; RULES],
}

impl DomainChoice {
    /// The entry as written: an action or per-rule actions, at least one of them.
    fn action(&self) -> Option<u8> {
        match self.action {
            None if self.rules.iter().all(Option::is_none) => Some(0),
            action => action,
        }
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum WhitelistChoice {
    /// `local@domain`
    Address {
        local: u8,
        spelling: u8,
        domain: Spelt,
    },
    /// `@domain`
    Domain(Spelt),
    /// `local@*`
    Local { local: u8, spelling: u8 },
}

/// A second entry that normalises to the same as an earlier one, in another spelling.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum DuplicateChoice {
    Domain { which: u8, step: u8 },
    Whitelist { which: u8, step: u8 },
    OwnName { which: u8, step: u8 },
}

#[derive(Arbitrary, Clone, Debug)]
pub struct ConfigChoice {
    action: Option<u8>,
    rules: [Option<u8>; RULES],
    domains: Vec<DomainChoice>,
    whitelist: Vec<WhitelistChoice>,
    own_names: Vec<Spelt>,
    own_addresses: Vec<u8>,
    /// `None`: the key is not set.
    trusted_networks: Option<Vec<u8>>,
    skip_authenticated: Option<bool>,
    exempt_role_accounts: Option<bool>,
    recipient_delimiter: u8,
    reply_url: u8,
    /// Made one time in eight, when there is an entry to repeat.
    duplicate: (u8, DuplicateChoice),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct DecisionInput {
    helo: HeloChoice,
    /// The MTA's `j` macro.
    mta_name: Option<Spelt>,
    /// `{daemon_addr}` and `{if_addr}`: an address and the form of its text.
    local: Vec<(u8, u8)>,
    /// The host's interface addresses.
    interfaces: Vec<u8>,
    /// The client's address, and whether the socket gave it IPv4-mapped.
    client: Option<(u8, bool)>,
    authenticated: bool,
    rcpt: RcptChoice,
    config: ConfigChoice,
    dns: DnsChoice,
}

/// The DNS rules' settings and the answers about the HELO name.
#[derive(Arbitrary, Clone, Debug)]
pub struct DnsChoice {
    /// A, AAAA and MX, each an index into `DNS_ANSWERS`; `None`: not asked.
    answers: Option<[u8; 3]>,
    /// `dns_failure`: not set, `"tempfail"` (true) or `"accept"`.
    tempfail: Option<bool>,
    /// `[rules]` unknown and mismatch.
    rules: [Option<u8>; 2],
    /// The same for each `[domains]` entry, in their order.
    domain_rules: Vec<[Option<u8>; 2]>,
}

fn address(n: u8) -> IpAddr {
    pick(&ADDRESSES, n).parse().expect("table address")
}

/// Text that denotes `ip`, in the form `form` (bare, literal, `inet_aton` spellings,
/// IPv4-mapped, with a zone, ...), formatted here from the address's numbers.
fn address_text(ip: IpAddr, form: u8, style: u8) -> String {
    match ip {
        IpAddr::V4(v4) if form % 10 < 8 => {
            let n = u32::from(v4);
            let [a, b, c, d] = v4.octets();
            let bare = match form % 10 {
                0 => format!("{a}.{b}.{c}.{d}"),
                1 => v4
                    .octets()
                    .iter()
                    .enumerate()
                    .map(|(i, &octet)| octet_text(octet, style >> (2 * i)))
                    .collect::<Vec<_>>()
                    .join("."),
                2 => n.to_string(),
                3 => format!("0x{n:x}"),
                4 => format!("0{n:o}"),
                5 => format!("{a}.{b}.{}", n & 0xffff),
                6 => format!("{a}.{}", n & 0xff_ffff),
                // 192.000.002.009: zero-padded where that cannot read as octal.
                _ => v4
                    .octets()
                    .iter()
                    .map(|&octet| {
                        let padded = format!("{octet:03}");
                        if !(8..100).contains(&octet) || padded.contains(['8', '9']) {
                            padded
                        } else {
                            octet.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("."),
            };
            match (style >> 4) % 3 {
                0 => bare,
                1 => format!("[{bare}]"),
                _ => format!("{bare}."),
            }
        }
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let mapped = if form % 10 == 8 {
                format!("::ffff:{a}.{b}.{c}.{d}")
            } else {
                format!(
                    "::FFFF:{:x}:{:x}",
                    u16::from_be_bytes([a, b]),
                    u16::from_be_bytes([c, d])
                )
            };
            v6_wrapped(&mapped, style)
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let bare = match form % 5 {
                0 => v6.to_string(),
                1 => segments.map(|s| format!("{s:x}")).join(":"),
                2 => segments.map(|s| format!("{s:04X}")).join(":"),
                3 => format!("{v6}%eth0"),
                _ => format!("{}%25", segments.map(|s| format!("{s:x}")).join(":")),
            };
            v6_wrapped(&bare, style)
        }
    }
}

/// One octet of a dotted IPv4 address: decimal, hexadecimal or octal.
fn octet_text(octet: u8, style: u8) -> String {
    match style % 4 {
        0 => octet.to_string(),
        1 => format!("0x{octet:x}"),
        2 => format!("0{octet:o}"),
        _ => format!("0X{octet:X}"),
    }
}

fn v6_wrapped(bare: &str, style: u8) -> String {
    match (style >> 4) % 6 {
        0 => bare.to_string(),
        1 => format!("[IPv6:{bare}]"),
        2 => format!("[ipv6:{bare}]"),
        3 => format!("[{bare}]"),
        4 => format!("IPv6:{bare}"),
        _ => format!("{bare}."),
    }
}

/// An address as an MTA puts it in `{daemon_addr}`.
fn macro_text(ip: IpAddr, form: u8) -> String {
    match (ip, form % 3) {
        (IpAddr::V4(v4), 1) => format!("[{v4}]"),
        (IpAddr::V4(v4), _) => v4.to_string(),
        (IpAddr::V6(v6), 0) => v6.to_string(),
        (IpAddr::V6(v6), 1) => format!("IPv6:{v6}"),
        (IpAddr::V6(v6), _) => {
            format!("IPv6:{}", v6.segments().map(|s| format!("{s:x}")).join(":"))
        }
    }
}

/// A network of the model: its address and prefix length.
fn model_network(n: u8) -> (IpAddr, u32) {
    network_of(pick(&NETWORKS, n).1)
}

fn network_of(text: &str) -> (IpAddr, u32) {
    let (ip, len) = text.split_once('/').expect("table network");
    (
        ip.parse().expect("table network"),
        len.parse().expect("table network"),
    )
}

fn in_network(ip: IpAddr, (net, len): (IpAddr, u32)) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// A TOML basic string.
fn toml(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn toml_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| toml(i)).collect();
    format!("[{}]", items.join(", "))
}

/// The HELO a scenario sends, resolved to what the model needs.
#[derive(Clone, Copy, Debug)]
enum HeloIs {
    None,
    Address(usize),
    Name(usize),
    Junk(usize),
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Listed {
    Address { local: usize, domain: usize },
    Domain(usize),
    Local(usize),
}

/// The choices, made consistent (lists without duplicates unless one is asked for) and
/// written out as the texts the milter would get.
#[derive(Debug)]
struct Scenario {
    // What the model reads.
    helo: HeloIs,
    mta_name: Option<usize>,
    local: Vec<usize>,
    interfaces: Vec<usize>,
    client: Option<IpAddr>,
    authenticated: bool,
    rcpt_local: usize,
    rcpt_detail: Option<char>,
    rcpt_domain: Option<usize>,
    action: Act,
    rules: [Option<Act>; MODEL_RULES],
    domains: Vec<ModelDomain>,
    dns_answers: Option<[ModelAnswer; 3]>,
    dns_tempfail: bool,
    whitelist: Vec<Listed>,
    own_names: Vec<usize>,
    own_addresses: Vec<u8>,
    trusted_networks: Vec<(IpAddr, u32)>,
    skip_authenticated: bool,
    exempt_role_accounts: bool,
    delimiters: &'static str,
    reply_url: Option<&'static str>,
    /// Two entries that must be refused as duplicates, as written.
    duplicate: Option<(String, String)>,
    // What the code under test reads.
    conf: String,
    helo_text: Option<String>,
    /// The client as the socket gave it (an IPv4 client possibly IPv4-mapped).
    client_sent: Option<IpAddr>,
    mta_name_text: Option<&'static str>,
    local_texts: Vec<String>,
    rcpt_text: String,
}

impl Scenario {
    fn new(input: &DecisionInput) -> Self {
        let c = &input.config;

        let mut domains: Vec<(DomainChoice, String)> = Vec::new();
        for d in c.domains.iter().take(6) {
            if !domains
                .iter()
                .any(|(e, _)| e.name.name() == d.name.name() && e.below == d.below)
            {
                domains.push((*d, domain_key(d.name, d.below)));
            }
        }
        let mut whitelist: Vec<(Listed, WhitelistChoice, String)> = Vec::new();
        for w in c.whitelist.iter().take(4) {
            let listed = listed(*w);
            if !whitelist.iter().any(|(l, _, _)| *l == listed) {
                whitelist.push((listed, *w, whitelist_text(*w)));
            }
        }
        let mut own_names: Vec<Spelt> = Vec::new();
        for n in c.own_names.iter().take(3) {
            if !own_names.iter().any(|o| o.name() == n.name()) {
                own_names.push(*n);
            }
        }

        let mut conf = String::new();
        let mut extra_domain = None;
        let mut extra_whitelist = None;
        let mut extra_own_name = None;
        let duplicate = match c.duplicate {
            (gate, _) if !gate.is_multiple_of(8) => None,
            (_, DuplicateChoice::Domain { which, step }) if !domains.is_empty() => {
                let (d, first) = &domains[usize::from(which) % domains.len()];
                let second = domain_key(d.name.respelt(step), d.below);
                extra_domain = Some((second.clone(), d.action().unwrap_or(0).wrapping_add(step)));
                Some((first.clone(), second))
            }
            (_, DuplicateChoice::Whitelist { which, step }) if !whitelist.is_empty() => {
                let (_, w, first) = &whitelist[usize::from(which) % whitelist.len()];
                let second = whitelist_text(respelt_entry(*w, step));
                extra_whitelist = Some(second.clone());
                Some((first.clone(), second))
            }
            (_, DuplicateChoice::OwnName { which, step }) if !own_names.is_empty() => {
                let n = own_names[usize::from(which) % own_names.len()];
                let second = n.respelt(step).text();
                extra_own_name = Some(second);
                Some((n.text().to_string(), second.to_string()))
            }
            _ => None,
        };

        let action = c.action.map(|a| pick(&ACTIONS, a));
        if let Some((written, _)) = action {
            let _ = writeln!(conf, "action = {}", toml(written));
        }
        let reply_url = pick(&REPLY_URLS, c.reply_url);
        if let Some(url) = reply_url {
            let _ = writeln!(conf, "reply_url = {}", toml(url));
        }
        let own_addresses: Vec<u8> = c.own_addresses.iter().take(3).copied().collect();
        if !own_addresses.is_empty() {
            let written: Vec<String> = own_addresses
                .iter()
                .map(|&n| pick(&NETWORKS, n).0.to_string())
                .collect();
            let _ = writeln!(conf, "own_addresses = {}", toml_list(&written));
        }
        let trusted_networks = match &c.trusted_networks {
            None => DEFAULT_TRUSTED.iter().map(|n| network_of(n)).collect(),
            Some(list) => {
                let list: Vec<u8> = list.iter().take(3).copied().collect();
                let written: Vec<String> = list
                    .iter()
                    .map(|&n| pick(&NETWORKS, n).0.to_string())
                    .collect();
                let _ = writeln!(conf, "trusted_networks = {}", toml_list(&written));
                list.iter().map(|&n| model_network(n)).collect()
            }
        };
        if let Some(skip) = c.skip_authenticated {
            let _ = writeln!(conf, "skip_authenticated = {skip}");
        }
        if let Some(exempt) = c.exempt_role_accounts {
            let _ = writeln!(conf, "exempt_role_accounts = {exempt}");
        }
        let (delimiter_written, delimiters) = pick(&DELIMITERS, c.recipient_delimiter);
        if let Some(written) = delimiter_written {
            let _ = writeln!(conf, "recipient_delimiter = {}", toml(written));
        }
        let mut written: Vec<String> = whitelist.iter().map(|(_, _, t)| t.clone()).collect();
        written.extend(extra_whitelist);
        if !written.is_empty() {
            let _ = writeln!(conf, "whitelist = {}", toml_list(&written));
        }
        let mut written: Vec<String> = own_names.iter().map(|n| n.text().to_string()).collect();
        written.extend(extra_own_name.map(str::to_string));
        if !written.is_empty() {
            let _ = writeln!(conf, "own_names = {}", toml_list(&written));
        }
        let dns = &input.dns;
        if let Some(tempfail) = dns.tempfail {
            let value = if tempfail { "tempfail" } else { "accept" };
            let _ = writeln!(conf, "dns_failure = {}", toml(value));
        }
        let domain_dns = |i: usize| dns.domain_rules.get(i).copied().unwrap_or([None; 2]);
        write_rules(&mut conf, "rules", &c.rules, dns.rules);
        for (i, (d, key)) in domains.iter().enumerate() {
            let _ = writeln!(conf, "\n[domains.{}]", toml(key));
            if let Some(action) = d.action() {
                let _ = writeln!(conf, "action = {}", toml(pick(&ACTIONS, action).0));
            }
            let header = format!("domains.{}.rules", toml(key));
            write_rules(&mut conf, &header, &d.rules, domain_dns(i));
        }
        if let Some((key, action)) = extra_domain {
            let _ = write!(
                conf,
                "\n[domains.{}]\naction = {}\n",
                toml(&key),
                toml(pick(&ACTIONS, action).0)
            );
        }

        let r = input.rcpt;
        let rcpt_domain = (!r.bare_postmaster.is_multiple_of(8)).then_some(r.domain);
        let (rcpt_local, rcpt_detail, rcpt_text) = match rcpt_domain {
            None => {
                let local = pick(&LOCALS[POSTMASTER], r.spelling);
                let text = if r.brackets {
                    format!("<{local}>")
                } else {
                    local.to_string()
                };
                (POSTMASTER, None, text)
            }
            Some(domain) => {
                // Ordinary mailboxes twice as often as role accounts.
                let index = pick(&[0, 1, 2, 3, 0, 1], r.local);
                let spelt = pick(&LOCALS[index], r.spelling);
                let detail = r.detail.map(|d| pick(&DETAIL_STARTS, d));
                let local = match (detail, spelt.strip_suffix('"')) {
                    (None, _) => spelt.to_string(),
                    (Some(c), Some(quoted)) => format!("{quoted}{c}orders\""),
                    (Some(c), None) => format!("{spelt}{c}orders"),
                };
                let mailbox = format!("{local}@{}", domain.text());
                let text = match (r.brackets, r.source_route) {
                    (_, true) => format!("<@relay.example:{mailbox}>"),
                    (true, false) => format!("<{mailbox}>"),
                    (false, false) => mailbox,
                };
                (index, detail, text)
            }
        };

        let mta_name = input.mta_name;
        let (helo, helo_text) = match input.helo {
            HeloChoice::None => (HeloIs::None, None),
            HeloChoice::Address {
                address: a,
                form,
                style,
            } => (
                HeloIs::Address(usize::from(a) % ADDRESSES.len()),
                Some(address_text(address(a), form, style)),
            ),
            HeloChoice::Junk(n) => {
                let junk = usize::from(n) % JUNK_HELOS.len();
                (HeloIs::Junk(junk), Some(JUNK_HELOS[junk].0.to_string()))
            }
            other => {
                let spelt = match other {
                    HeloChoice::RcptDomain { spelling } => Spelt {
                        name: r.domain.name,
                        spelling,
                    },
                    HeloChoice::OwnName { which, spelling } => Spelt {
                        name: own_names
                            .get(usize::from(which) % own_names.len().max(1))
                            .map_or(which, |n| n.name),
                        spelling,
                    },
                    HeloChoice::MtaName { spelling } => Spelt {
                        name: mta_name.map_or(spelling, |n| n.name),
                        spelling,
                    },
                    HeloChoice::Name(spelt) => spelt,
                    _ => unreachable!("handled above"),
                };
                (HeloIs::Name(spelt.name()), Some(spelt.text().to_string()))
            }
        };

        let local: Vec<(u8, u8)> = input.local.iter().take(2).copied().collect();
        Self {
            helo,
            mta_name: mta_name.map(Spelt::name),
            local: local
                .iter()
                .map(|&(a, _)| usize::from(a) % ADDRESSES.len())
                .collect(),
            interfaces: input
                .interfaces
                .iter()
                .take(2)
                .map(|&a| usize::from(a) % ADDRESSES.len())
                .collect(),
            client: input.client.map(|(a, _)| address(a)),
            // Raw, as a dual-stack socket gives it: the product must treat it as IPv4.
            client_sent: input.client.map(|(a, mapped)| match address(a) {
                IpAddr::V4(v4) if mapped => IpAddr::V6(v4.to_ipv6_mapped()),
                ip => ip,
            }),
            authenticated: input.authenticated,
            rcpt_local,
            rcpt_detail,
            rcpt_domain: rcpt_domain.map(Spelt::name),
            action: action.map_or(Act::Reject, |(_, a)| a),
            rules: rule_acts(&c.rules, dns.rules),
            domains: domains
                .iter()
                .enumerate()
                .map(|(i, (d, _))| {
                    let action = d.action().map(|a| pick(&ACTIONS, a).1);
                    (
                        d.name.name(),
                        d.below,
                        action,
                        rule_acts(&d.rules, domain_dns(i)),
                    )
                })
                .collect(),
            dns_answers: dns.answers.map(|a| a.map(|n| pick(&DNS_ANSWERS, n))),
            dns_tempfail: dns.tempfail == Some(true),
            whitelist: whitelist.iter().map(|(l, _, _)| *l).collect(),
            own_names: own_names.iter().map(|n| n.name()).collect(),
            own_addresses,
            trusted_networks,
            skip_authenticated: c.skip_authenticated.unwrap_or(true),
            exempt_role_accounts: c.exempt_role_accounts.unwrap_or(true),
            delimiters,
            reply_url,
            duplicate,
            conf,
            helo_text,
            mta_name_text: mta_name.map(Spelt::text),
            local_texts: local
                .iter()
                .map(|&(a, form)| macro_text(address(a), form))
                .collect(),
            rcpt_text,
        }
    }

    /// The verdict, from the choices alone: the page's rules, most specific first
    /// (own-ip, ip, rcpt-domain), then invalid and non-fqdn (a pass unless a rule key turns
    /// them on); the exemptions in their order (trusted, authenticated, role account,
    /// whitelist); then the recipient domain's action.
    fn expected(&self) -> Verdict {
        let rule = match self.helo {
            HeloIs::None => None,
            HeloIs::Junk(j) => JUNK_HELOS[j].1,
            HeloIs::Address(a) => {
                let ip = address(a as u8);
                let own = !ip.is_unspecified()
                    && (self.local.contains(&a)
                        || self.interfaces.contains(&a)
                        || self
                            .own_addresses
                            .iter()
                            .any(|&n| in_network(ip, model_network(n))));
                Some(if own { Rule::OwnIp(ip) } else { Rule::Ip })
            }
            HeloIs::Name(n)
                if self.rcpt_domain == Some(n)
                    || self.own_names.contains(&n)
                    || self.mta_name == Some(n) =>
            {
                Some(Rule::RcptDomain)
            }
            HeloIs::Name(n) => (n == SINGLE_LABEL_NAME).then_some(Rule::NonFqdn),
        };
        // The DNS rules last, for a qualified name no other rule matched.
        let (rule, failure) = match rule {
            Some(rule) => (rule, None),
            None => match self.dns_rule() {
                Some(found) => found,
                None => return Verdict::Pass,
            },
        };
        let Some(action) = self.setting(rule) else {
            // An opt-in rule that no rule key turns on matches nothing.
            return Verdict::Pass;
        };

        // The mailbox without its subaddress, if the configured delimiters find it.
        let base = match self.rcpt_detail {
            None => Some(self.rcpt_local),
            Some(c) if self.delimiters.contains(c) => Some(self.rcpt_local),
            Some(_) => None,
        };
        let bare_postmaster = self.rcpt_domain.is_none();
        let trusted = self
            .client
            .is_some_and(|ip| self.trusted_networks.iter().any(|&net| in_network(ip, net)));
        let role = bare_postmaster
            || (self.exempt_role_accounts && matches!(base, Some(POSTMASTER | ABUSE)));
        let whitelisted = self.whitelist.iter().any(|listed| match *listed {
            Listed::Address { local, domain } => {
                base == Some(local) && self.rcpt_domain == Some(domain)
            }
            Listed::Domain(domain) => self.rcpt_domain == Some(domain),
            Listed::Local(local) => base == Some(local),
        });
        let exemption = if trusted {
            Some(Exemption::Trusted)
        } else if self.authenticated && self.skip_authenticated {
            Some(Exemption::Authenticated)
        } else if role {
            Some(Exemption::RoleAccount)
        } else if whitelisted {
            Some(Exemption::Whitelist)
        } else {
            None
        };
        if let Some(failure) = failure {
            // dns_failure decides only where the rule would refuse, unexempted.
            let fallback = match action {
                Act::Reject | Act::Tempfail if exemption.is_none() && self.dns_tempfail => {
                    DnsFallback::Tempfail
                }
                Act::Reject | Act::Tempfail if exemption.is_none() => DnsFallback::Accept,
                _ => DnsFallback::NoVerdict,
            };
            return Verdict::DnsFailure(rule, failure, fallback);
        }
        if let Some(exemption) = exemption {
            return Verdict::Exempt(rule, exemption);
        }

        match action {
            Act::Reject => Verdict::Reject(rule),
            Act::Tempfail => Verdict::Tempfail(rule),
            Act::Log => Verdict::Log(rule),
            Act::Tag => Verdict::Tag(rule),
            Act::Off => Verdict::Exempt(rule, Exemption::Off),
        }
    }

    /// The action for `rule` and this recipient: from the most specific entry out (the
    /// domain itself, then `.parent` for each parent, the longest first), each entry's
    /// setting for this rule, then its `action`; then the top-level `[rules]`, then
    /// `action`. `None` for an opt-in rule that no rule key turns on.
    fn setting(&self, rule: Rule) -> Option<Act> {
        let r = rule_index(rule);
        let mut entries: Vec<(usize, Option<Act>)> = Vec::new();
        if let Some(d) = self.rcpt_domain {
            let canonical = NAMES[d].canonical;
            for &(name, below, any, per_rule) in &self.domains {
                let applies = if below {
                    canonical.ends_with(&format!(".{}", NAMES[name].canonical))
                } else {
                    name == d
                };
                if applies {
                    // The domain itself is more specific than any parent of it.
                    let depth = if below {
                        NAMES[name].canonical.len()
                    } else {
                        usize::MAX
                    };
                    // An `action` does not turn an opt-in rule on; `off` turns it off.
                    let any = if opt_in(rule) {
                        any.filter(|&a| a == Act::Off)
                    } else {
                        any
                    };
                    entries.push((depth, per_rule[r].or(any)));
                }
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        entries
            .iter()
            .find_map(|&(_, action)| action)
            .or(self.rules[r])
            .or((!opt_in(rule)).then_some(self.action))
    }

    /// The first DNS rule turned on for this recipient that the answers meet (no
    /// failure) or leave undecided (the failure): `unknown` when no answer has a record
    /// and every one is negative; `mismatch` when the answer of the client's family (A
    /// for IPv4, AAAA for IPv6) does not hold the client.
    fn dns_rule(&self) -> Option<(Rule, Option<Failure>)> {
        let answers = self.dns_answers?;
        let qualified = match self.helo {
            HeloIs::Name(n) => n != SINGLE_LABEL_NAME,
            HeloIs::Junk(j) => JUNK_HELOS[j].1.is_none() && !JUNK_HELOS[j].0.is_empty(),
            HeloIs::None | HeloIs::Address(_) => false,
        };
        if !qualified {
            return None;
        }
        let failed = |a: &ModelAnswer| match *a {
            ModelAnswer::Failed(failure) => Some(failure),
            _ => None,
        };
        for rule in [Rule::Unknown, Rule::Mismatch] {
            if self.setting(rule).is_none() {
                continue;
            }
            let found = if rule == Rule::Unknown {
                let record = answers
                    .iter()
                    .any(|a| matches!(a, ModelAnswer::Address(_) | ModelAnswer::Exchange));
                match answers.iter().find_map(failed) {
                    _ if record => None,
                    failure => Some(failure),
                }
            } else {
                let Some(client) = self.client else {
                    continue;
                };
                let asked = if client.is_ipv4() {
                    answers[0]
                } else {
                    answers[1]
                };
                match asked {
                    ModelAnswer::Address(a) if address(a) == client => None,
                    other => Some(failed(&other)),
                }
            };
            if let Some(failure) = found {
                return Some((rule, failure));
            }
        }
        None
    }

    /// The reply line the verdict must send: the page's text, then `reply_url`.
    fn expected_reply(&self, verdict: Verdict) -> Option<String> {
        let (code, rule) = match verdict {
            Verdict::DnsFailure(_, _, DnsFallback::Tempfail) => {
                let text = "451 4.4.3 bogus helo dns failure";
                return Some(match self.reply_url {
                    Some(url) => format!("{text} {url}"),
                    None => text.to_string(),
                });
            }
            // A rule that never refuses claims no reply.
            Verdict::Log(Rule::Mismatch) => return None,
            Verdict::Reject(rule) | Verdict::Log(rule) => ("550 5.7.1", rule),
            Verdict::Tempfail(rule) => ("450 4.7.1", rule),
            Verdict::Pass | Verdict::Exempt(..) | Verdict::Tag(_) | Verdict::DnsFailure(..) => {
                return None
            }
        };
        let text = match rule {
            Rule::OwnIp(ip) => format!("bogus helo {ip}"),
            Rule::Ip => "bogus helo".to_string(),
            Rule::RcptDomain => "bogus helo matches rcpt".to_string(),
            Rule::Invalid => "bogus helo invalid name".to_string(),
            Rule::NonFqdn => "bogus helo not fully qualified".to_string(),
            Rule::Unknown => "bogus helo unknown host".to_string(),
            Rule::Mismatch => {
                unreachable!("mismatch is never refused, and its log claims no reply")
            }
        };
        Some(match self.reply_url {
            Some(url) => format!("{code} {text} {url}"),
            None => format!("{code} {text}"),
        })
    }
}

fn domain_key(name: Spelt, below: bool) -> String {
    if below {
        format!(".{}", name.text())
    } else {
        name.text().to_string()
    }
}

fn listed(w: WhitelistChoice) -> Listed {
    let local = |n: u8| usize::from(n) % LOCALS.len();
    match w {
        WhitelistChoice::Address {
            local: l, domain, ..
        } => Listed::Address {
            local: local(l),
            domain: domain.name(),
        },
        WhitelistChoice::Domain(domain) => Listed::Domain(domain.name()),
        WhitelistChoice::Local { local: l, .. } => Listed::Local(local(l)),
    }
}

fn whitelist_text(w: WhitelistChoice) -> String {
    let local = |l: u8, s: u8| pick(&LOCALS[usize::from(l) % LOCALS.len()], s);
    match w {
        WhitelistChoice::Address {
            local: l,
            spelling,
            domain,
        } => format!("{}@{}", local(l, spelling), domain.text()),
        WhitelistChoice::Domain(domain) => format!("@{}", domain.text()),
        WhitelistChoice::Local { local: l, spelling } => format!("{}@*", local(l, spelling)),
    }
}

/// The same entry in another spelling.
fn respelt_entry(w: WhitelistChoice, step: u8) -> WhitelistChoice {
    match w {
        WhitelistChoice::Address {
            local,
            spelling,
            domain,
        } => WhitelistChoice::Address {
            local,
            spelling,
            domain: domain.respelt(step),
        },
        WhitelistChoice::Domain(domain) => WhitelistChoice::Domain(domain.respelt(step)),
        WhitelistChoice::Local { local, spelling } => WhitelistChoice::Local {
            local,
            spelling: ((usize::from(spelling) % 4 + 1 + usize::from(step) % 3) % 4) as u8,
        },
    }
}

/// The whole decision through the configuration file an administrator writes, against
/// an independent model of the page's rules; refusals carry the page's text on one line.
pub fn decision(input: &DecisionInput) {
    let s = Scenario::new(input);
    let parsed = Config::parse(&s.conf, "decision.conf");
    if let Some((first, second)) = &s.duplicate {
        let error = match parsed {
            Ok(_) => panic!("duplicates {first:?} and {second:?} accepted:\n{}", s.conf),
            Err(e) => e.to_string(),
        };
        assert!(error.starts_with("decision.conf: "), "{error}");
        for entry in [first, second] {
            assert!(
                error.contains(&format!("{entry:?}")),
                "{error}\ndoes not name {entry:?}:\n{}",
                s.conf
            );
        }
        return;
    }
    let config = parsed.unwrap_or_else(|e| panic!("{e}\n{}", s.conf));
    let interfaces: Vec<IpAddr> = s.interfaces.iter().map(|&a| address(a as u8)).collect();
    let ruleset = config.ruleset_with(&interfaces);

    // As the milter's callbacks build it, but with the client as the socket gave it: the
    // decision must read an IPv4-mapped client as IPv4 by itself (the front ends'
    // canonicalising is tested over their sockets, tests/milter.rs, tests/policy_service.rs).
    let mut conn = Connection {
        client: s.client_sent,
        server_name: s.mta_name_text.map(|j| domain::normalize(j).into_owned()),
        authenticated: s.authenticated,
        ..Connection::default()
    };
    for text in &s.local_texts {
        let ip = parse_macro_ip(text).unwrap_or_else(|| panic!("{{daemon_addr}} {text:?}"));
        conn.add_local(ip);
    }
    conn.helo = s.helo_text.as_deref().map(Helo::parse);
    conn.dns = s.dns_answers.map(|[a, aaaa, mx]| HeloDns {
        a: answer(a),
        aaaa: answer(aaaa),
        mx: answer(mx),
    });
    let rcpt = Recipient::parse(&s.rcpt_text);

    let verdict = decide(&ruleset, &conn, &rcpt);
    let expected = s.expected();
    assert_eq!(verdict, expected, "{s:#?}\nconn: {conn:?}\nrcpt: {rcpt:?}");

    let reply = match judgement::outcome(verdict, &ruleset, "", None, true) {
        Outcome::Refuse(reply) | Outcome::DryRun(Would::Reply(reply)) => Some(reply.to_string()),
        Outcome::Accept
        | Outcome::Tag(_)
        | Outcome::DryRun(Would::Tag(_))
        | Outcome::DryRun(Would::Nothing) => None,
    };
    assert_eq!(reply, s.expected_reply(expected), "{s:#?}");
    if let Some(line) = reply {
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
    }
}
