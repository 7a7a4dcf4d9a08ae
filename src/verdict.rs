//! The decision: a pure function of the greeting, the connection, the recipient and the
//! rule set. No I/O here; `judgement` (for both front ends) and `explain` call `decide`.

mod dns;

pub use dns::DnsFallback;

use crate::{
    dns::{Failure, HeloDns},
    domain::{self, HostName},
    helo::Helo,
    recipient::Recipient,
    ruleset::{Action, RuleKind, RuleSet, Setting},
};
use std::{
    fmt::{self, Display, Formatter},
    net::IpAddr,
};

/// What the MTA told us about the SMTP session so far.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// The latest HELO/EHLO, if any came.
    pub helo: Option<Helo>,
    pub client: Option<IpAddr>,
    /// The addresses the client reached, from `{daemon_addr}` and `{if_addr}`.
    pub local: Vec<IpAddr>,
    /// The MTA's own host name (`j`), in the form of `domain::normalize`.
    pub server_name: Option<String>,
    pub authenticated: bool,
    /// The DNS answers about the HELO name, where a DNS rule needed them and they were
    /// asked (never for an address, a trusted client or an authenticated one).
    pub dns: Option<HeloDns>,
}

impl Connection {
    /// Notes an address the client reached.
    pub fn add_local(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if !self.local.contains(&ip) {
            self.local.push(ip);
        }
    }
}

/// The rules, in the order of precedence: the page's three, most specific first, then the
/// opt-in ones (`RuleKind::is_opt_in`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Rule {
    /// The HELO is one of the receiving server's own addresses: "Hello, I'm you!".
    OwnIp(IpAddr),
    /// The HELO is some other IP address instead of a host name.
    Ip,
    /// The HELO is the recipient's domain or one of the server's own names.
    RcptDomain,
    /// The HELO is neither a host name nor an address (`domain::host_name`).
    Invalid,
    /// The HELO is a host name of a single label.
    NonFqdn,
    /// DNS has no A, AAAA or MX record of the HELO name.
    Unknown,
    /// The HELO name's addresses do not hold the client's.
    Mismatch,
}

impl Rule {
    pub fn kind(&self) -> RuleKind {
        match self {
            Self::OwnIp(_) => RuleKind::OwnIp,
            Self::Ip => RuleKind::Ip,
            Self::RcptDomain => RuleKind::RcptDomain,
            Self::Invalid => RuleKind::Invalid,
            Self::NonFqdn => RuleKind::NonFqdn,
            Self::Unknown => RuleKind::Unknown,
            Self::Mismatch => RuleKind::Mismatch,
        }
    }

    /// The name used in logs, configuration and statistics.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// The text the bounce page explains, exactly.
impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnIp(ip) => write!(f, "bogus helo {ip}"),
            Self::Ip => f.write_str("bogus helo"),
            Self::RcptDomain => f.write_str("bogus helo matches rcpt"),
            Self::Invalid => f.write_str("bogus helo invalid name"),
            Self::NonFqdn => f.write_str("bogus helo not fully qualified"),
            Self::Unknown => f.write_str("bogus helo unknown host"),
            // Never a reply (`RuleKind::allows`): only the tag header and logs name it.
            Self::Mismatch => f.write_str("bogus helo does not match the client"),
        }
    }
}

/// Why a recipient whose HELO matched a rule is let through all the same.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Exemption {
    Trusted,
    Authenticated,
    Whitelist,
    /// `<postmaster>`, or postmaster or abuse at any domain (`exempt_role_accounts`).
    RoleAccount,
    /// The recipient domain's action (or the top-level one) is `off`.
    Off,
}

impl Exemption {
    pub const ALL: [Self; 5] = [
        Self::Whitelist,
        Self::Authenticated,
        Self::Trusted,
        Self::RoleAccount,
        Self::Off,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Authenticated => "authenticated",
            Self::Whitelist => "whitelist",
            Self::RoleAccount => "role_account",
            Self::Off => "off",
        }
    }
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// No rule matches.
    Pass,
    Exempt(Rule, Exemption),
    Reject(Rule),
    Tempfail(Rule),
    /// Accepted; the log says what would have been done.
    Log(Rule),
    /// Accepted; the message gets a header (`Tag`) that says why.
    Tag(Rule),
    /// A DNS rule that a temporary DNS failure left undecided: never a verdict of the
    /// rule itself; `DnsFallback` says what the recipient gets instead.
    DnsFailure(Rule, Failure, DnsFallback),
}

impl Verdict {
    /// The action that made this verdict, where a rule matched and no exemption applied.
    pub fn action(&self) -> Option<Action> {
        match self {
            Self::Pass | Self::Exempt(..) | Self::DnsFailure(..) => None,
            Self::Reject(_) => Some(Action::Reject),
            Self::Tempfail(_) => Some(Action::Tempfail),
            Self::Log(_) => Some(Action::Log),
            Self::Tag(_) => Some(Action::Tag),
        }
    }

    pub fn rule(&self) -> Option<Rule> {
        match *self {
            Self::Pass => None,
            Self::Exempt(rule, _)
            | Self::Reject(rule)
            | Self::Tempfail(rule)
            | Self::Log(rule)
            | Self::Tag(rule)
            | Self::DnsFailure(rule, ..) => Some(rule),
        }
    }
}

pub fn decide(ruleset: &RuleSet, conn: &Connection, rcpt: &Recipient<'_>) -> Verdict {
    // The DNS rules come last, for a qualified name no other rule matched; they skip
    // themselves where no setting turns them on (`dns::find`), so that one of them off by
    // default leaves the name to the next.
    let (rule, failure) = match match_rule(ruleset, conn, rcpt) {
        Some(rule) => (rule, None),
        None => match dns::find(ruleset, conn, rcpt) {
            Some(found) => found,
            None => return Verdict::Pass,
        },
    };
    // An opt-in rule no setting turns on matches nothing: it is neither counted nor logged
    // as an exemption, so an upgrade changes no counter.
    let (action, setting) = ruleset.action_for(&rcpt.domain, rule.kind());
    if rule.kind().is_opt_in() && matches!(setting, Setting::OffByDefault(_)) {
        return Verdict::Pass;
    }
    let exemption = if conn.client.is_some_and(|ip| ruleset.is_trusted(ip)) {
        Some(Exemption::Trusted)
    } else if conn.authenticated && ruleset.skip_authenticated() {
        Some(Exemption::Authenticated)
    } else if ruleset.is_role_account(rcpt) {
        Some(Exemption::RoleAccount)
    } else if ruleset.is_whitelisted(rcpt) {
        Some(Exemption::Whitelist)
    } else {
        None
    };
    if let Some(failure) = failure {
        let fallback = DnsFallback::new(ruleset, action, exemption.is_some());
        return Verdict::DnsFailure(rule, failure, fallback);
    }
    if let Some(exemption) = exemption {
        return Verdict::Exempt(rule, exemption);
    }
    match action {
        Action::Reject => Verdict::Reject(rule),
        Action::Tempfail => Verdict::Tempfail(rule),
        Action::Log => Verdict::Log(rule),
        Action::Tag => Verdict::Tag(rule),
        Action::Off => Verdict::Exempt(rule, Exemption::Off),
    }
}

fn match_rule(ruleset: &RuleSet, conn: &Connection, rcpt: &Recipient<'_>) -> Option<Rule> {
    match conn.helo.as_ref()? {
        Helo::Ip(ip) if is_own(ruleset, conn, *ip) => Some(Rule::OwnIp(*ip)),
        Helo::Ip(_) => Some(Rule::Ip),
        Helo::Name(name) => {
            let is_own = (!rcpt.domain.is_empty() && *name == rcpt.domain)
                || conn.server_name.as_deref() == Some(name.as_str())
                || ruleset.own_names().contains(name);
            if is_own {
                Some(Rule::RcptDomain)
            } else {
                name_rule(name)
            }
        }
    }
}

/// The opt-in rule a HELO name (in comparable form) meets, if any, whatever the settings.
pub fn name_rule(name: &str) -> Option<Rule> {
    match domain::host_name(name) {
        // No greeting text at all is not a bogus name (as for the page's rules).
        _ if name.is_empty() => None,
        HostName::Invalid => Some(Rule::Invalid),
        HostName::SingleLabel => Some(Rule::NonFqdn),
        HostName::Qualified => None,
    }
}

/// Whether `ip` is one of this server's own addresses: one the client reached, or in an
/// own network. `0.0.0.0` and `::` never are, whatever those say (Sendmail's
/// `{daemon_addr}` when it listens on every address, an own network `0.0.0.0/0`): they
/// name no host.
pub fn is_own(ruleset: &RuleSet, conn: &Connection, ip: IpAddr) -> bool {
    !ip.is_unspecified() && (conn.local.contains(&ip) || ruleset.is_own_address(ip))
}

/// An SMTP reply: code, enhanced status code and text.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Reply {
    pub code: &'static str,
    pub status: &'static str,
    pub text: String,
}

impl Reply {
    /// The reply a refusal of this rule gets, permanent or temporary.
    pub fn new(rule: Rule, permanent: bool, reply_url: Option<&str>) -> Self {
        let (code, status) = if permanent {
            ("550", "5.7.1")
        } else {
            ("450", "4.7.1")
        };
        let text = match reply_url {
            Some(url) => format!("{rule} {url}"),
            None => rule.to_string(),
        };
        Self { code, status, text }
    }

    /// The reply to a recipient that a DNS rule would refuse but a temporary DNS failure
    /// left undecided, under `dns_failure = "tempfail"`.
    pub fn dns_failure(reply_url: Option<&str>) -> Self {
        const TEXT: &str = "bogus helo dns failure";
        let text = match reply_url {
            Some(url) => format!("{TEXT} {url}"),
            None => TEXT.to_string(),
        };
        Self {
            code: "451",
            status: "4.4.3",
            text,
        }
    }

    /// Whether the refusal is permanent (`5xx`) rather than temporary (`4xx`).
    pub fn is_permanent(&self) -> bool {
        self.code.starts_with('5')
    }
}

/// The header a tagged message gets, so that a spam filter (rspamd, SpamAssassin,
/// Sieve) can score or file it: `X-Bogus-HELO: rule=ip helo="[192.0.2.9]"
/// client=198.51.100.7`. The HELO is the client's own text, so it is quoted with `"` and
/// `\` escaped and everything but printable ASCII written as `\xNN` or `\u{NNNN}`: no
/// client can end the header, add another, or forge a field.
pub struct TagHeader;

impl TagHeader {
    pub const NAME: &'static str = "X-Bogus-HELO";

    pub fn value(rule: Rule, helo: &str, client: Option<IpAddr>) -> String {
        const MAX_CHARS: usize = 200;
        let mut value = format!("rule={} helo=\"", rule.name());
        for (i, c) in helo.chars().enumerate() {
            if i == MAX_CHARS {
                value.push_str("...");
                break;
            }
            match c {
                '"' | '\\' => {
                    value.push('\\');
                    value.push(c);
                }
                ' '..='~' => value.push(c),
                c if (c as u32) < 0x100 => value.push_str(&format!("\\x{:02x}", c as u32)),
                c => value.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            }
        }
        value.push('"');
        match client {
            Some(ip) => value.push_str(&format!(" client={ip}")),
            None => value.push_str(" client=unknown"),
        }
        value
    }
}

impl Display for Reply {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, ruleset::Action};

    /// The rule set of a `milter.conf` with `extra` top-level keys, as an administrator
    /// writes it: the decision is tested through the configuration, not beside it.
    fn ruleset_with(extra: &str) -> RuleSet {
        ruleset_with_tables(extra, "")
    }

    /// `ruleset_with`, and `tables` after the domain tables (a table ends at the next).
    pub(super) fn ruleset_with_tables(extra: &str, tables: &str) -> RuleSet {
        let text = format!(
            "{extra}
            own_addresses = [\"203.0.113.0/24\", \"2001:db8:25::/64\"]
            own_names = [\"mail.example.com\"]
            whitelist = [\"private@example.com\"]
            [domains.\"tempfail.example\"]
            action = \"tempfail\"
            [domains.\"log.example\"]
            action = \"log\"
            [domains.\"off.example\"]
            action = \"off\"
            {tables}
            "
        );
        Config::parse(&text, "test").unwrap().ruleset().clone()
    }

    fn ruleset() -> RuleSet {
        ruleset_with("")
    }

    fn conn(helo: &str) -> Connection {
        Connection {
            helo: Some(Helo::parse(helo)),
            client: Some("198.51.100.7".parse().unwrap()),
            local: vec![
                "192.0.2.25".parse().unwrap(),
                "2001:db8::25".parse().unwrap(),
            ],
            server_name: Some("mx.example.com".into()),
            authenticated: false,
            dns: None,
        }
    }

    fn judge(ruleset: &RuleSet, conn: &Connection, rcpt: &str) -> Verdict {
        decide(ruleset, conn, &Recipient::parse(rcpt))
    }

    fn own(ip: &str) -> Rule {
        Rule::OwnIp(ip.parse().unwrap())
    }

    #[test]
    fn each_rule_in_each_form() {
        let p = ruleset();
        let cases = [
            ("192.0.2.9", Some(Rule::Ip)),
            ("[192.0.2.9]", Some(Rule::Ip)),
            ("2001:db8::9", Some(Rule::Ip)),
            ("[IPv6:2001:db8::9]", Some(Rule::Ip)),
            ("192.0.2.25", Some(own("192.0.2.25"))),
            ("[192.0.2.25]", Some(own("192.0.2.25"))),
            ("[IPv6:2001:DB8:0:0::25]", Some(own("2001:db8::25"))),
            ("2001:db8::25", Some(own("2001:db8::25"))),
            ("[IPv6:::ffff:192.0.2.25]", Some(own("192.0.2.25"))),
            ("[203.0.113.200]", Some(own("203.0.113.200"))),
            ("[IPv6:2001:db8:25::abc]", Some(own("2001:db8:25::abc"))),
            ("example.com", Some(Rule::RcptDomain)),
            ("EXAMPLE.COM.", Some(Rule::RcptDomain)),
            ("mx.example.com", Some(Rule::RcptDomain)),
            ("MX.Example.com.", Some(Rule::RcptDomain)),
            ("mail.example.com", Some(Rule::RcptDomain)),
            ("sub.example.com", None),
            ("example.com..", None),
            ("localhost", None),
            ("mail", None),
            ("", None),
            ("[192.0.2.9", None),
        ];
        for (helo, rule) in cases {
            let expected = rule.map_or(Verdict::Pass, Verdict::Reject);
            assert_eq!(
                judge(&p, &conn(helo), "<user@Example.com>"),
                expected,
                "{helo:?}"
            );
        }
    }

    #[test]
    fn most_specific_rule_wins() {
        // An own address is also an IP address: own-ip decides.
        assert_eq!(
            judge(&ruleset(), &conn("[192.0.2.25]"), "user@example.com"),
            Verdict::Reject(own("192.0.2.25"))
        );
    }

    #[test]
    fn no_helo_matches_nothing() {
        let c = Connection {
            helo: None,
            ..conn("")
        };
        assert_eq!(judge(&ruleset(), &c, "user@example.com"), Verdict::Pass);
    }

    #[test]
    fn rcpt_domain_needs_a_domain() {
        let c = conn("");
        assert_eq!(judge(&ruleset(), &c, "<postmaster>"), Verdict::Pass);
        let c = Connection {
            server_name: None,
            ..conn("mx.example.com")
        };
        assert_eq!(judge(&ruleset(), &c, "user@example.com"), Verdict::Pass);
    }

    #[test]
    fn exemptions() {
        let p = ruleset();
        let c = conn("[192.0.2.9]");
        assert_eq!(
            judge(&p, &c, "Private@Example.COM"),
            Verdict::Exempt(Rule::Ip, Exemption::Whitelist)
        );
        assert_eq!(
            judge(&p, &c, "private+orders@example.com"),
            Verdict::Exempt(Rule::Ip, Exemption::Whitelist)
        );
        assert_eq!(
            judge(&p, &c, "private2@example.com"),
            Verdict::Reject(Rule::Ip)
        );
        assert_eq!(
            judge(&p, &c, "private@example.org"),
            Verdict::Reject(Rule::Ip)
        );

        let auth = Connection {
            authenticated: true,
            ..c.clone()
        };
        assert_eq!(
            judge(&p, &auth, "u@example.com"),
            Verdict::Exempt(Rule::Ip, Exemption::Authenticated)
        );
        let strict = ruleset_with("skip_authenticated = false");
        assert_eq!(
            judge(&strict, &auth, "u@example.com"),
            Verdict::Reject(Rule::Ip)
        );

        for client in ["127.0.0.1", "127.9.9.9", "::1"] {
            let local = Connection {
                client: Some(client.parse().unwrap()),
                ..conn("[127.0.0.1]")
            };
            assert_eq!(
                judge(&p, &local, "u@example.com"),
                Verdict::Exempt(Rule::Ip, Exemption::Trusted),
                "{client}"
            );
        }
        let v6 = ruleset_with("trusted_networks = [\"2001:db8:7::/48\"]");
        let c6 = Connection {
            client: Some("2001:db8:7::1".parse().unwrap()),
            ..c.clone()
        };
        assert_eq!(
            judge(&v6, &c6, "u@example.com"),
            Verdict::Exempt(Rule::Ip, Exemption::Trusted)
        );
        let none = ruleset_with("trusted_networks = []");
        let lo = Connection {
            client: Some("127.0.0.1".parse().unwrap()),
            ..c.clone()
        };
        assert_eq!(
            judge(&none, &lo, "u@example.com"),
            Verdict::Reject(Rule::Ip)
        );
        assert_eq!(
            judge(&p, &c, "u@off.example"),
            Verdict::Exempt(Rule::Ip, Exemption::Off)
        );
    }

    #[test]
    fn actions_per_domain_and_top_level() {
        let p = ruleset();
        let c = conn("[192.0.2.9]");
        assert_eq!(
            judge(&p, &c, "u@tempfail.example"),
            Verdict::Tempfail(Rule::Ip)
        );
        assert_eq!(
            judge(&p, &c, "u@TEMPFAIL.example."),
            Verdict::Tempfail(Rule::Ip)
        );
        assert_eq!(judge(&p, &c, "u@log.example"), Verdict::Log(Rule::Ip));
        assert_eq!(judge(&p, &c, "u@other.example"), Verdict::Reject(Rule::Ip));
        for (action, verdict) in [
            (Action::Tempfail, Verdict::Tempfail(Rule::Ip)),
            (Action::Log, Verdict::Log(Rule::Ip)),
            (Action::Off, Verdict::Exempt(Rule::Ip, Exemption::Off)),
        ] {
            let top = ruleset_with(&format!("action = \"{action}\""));
            assert_eq!(judge(&top, &c, "u@other.example"), verdict);
            assert_eq!(
                judge(&top, &c, "u@tempfail.example"),
                Verdict::Tempfail(Rule::Ip)
            );
        }
    }

    #[test]
    fn several_recipients_are_judged_on_their_own() {
        let p = ruleset();
        let c = conn("example.com");
        let verdicts: Vec<Verdict> = [
            "a@example.com",
            "private@example.com",
            "b@example.org",
            "c@off.example",
        ]
        .iter()
        .map(|r| judge(&p, &c, r))
        .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Reject(Rule::RcptDomain),
                Verdict::Exempt(Rule::RcptDomain, Exemption::Whitelist),
                Verdict::Pass,
                Verdict::Pass,
            ]
        );
    }

    #[test]
    fn the_most_specific_setting_decides() {
        // domain + rule, then domain, then rule, then the top-level action.
        let p = Config::parse(
            r#"
            action = "reject"
            [rules]
            ip = "tempfail"
            rcpt-domain = "tag"
            [domains."example.org"]
            action = "log"
            [domains."example.org".rules]
            own-ip = "reject"
            [domains.".example.net"]
            [domains.".example.net".rules]
            ip = "off"
            "#,
            "test",
        )
        .unwrap()
        .ruleset()
        .clone();
        let setting = |domain: &str, rule: RuleKind| {
            let (action, setting) = p.action_for(domain, rule);
            format!("{action} {setting}")
        };
        assert_eq!(
            setting("example.org", RuleKind::OwnIp),
            "reject domains.\"example.org\".rules.own-ip"
        );
        assert_eq!(
            setting("example.org", RuleKind::Ip),
            "log domains.\"example.org\".action"
        );
        assert_eq!(setting("example.com", RuleKind::Ip), "tempfail rules.ip");
        assert_eq!(setting("example.com", RuleKind::OwnIp), "reject action");
        assert_eq!(
            setting("example.com", RuleKind::RcptDomain),
            "tag rules.rcpt-domain"
        );
        assert_eq!(
            setting("a.example.net", RuleKind::Ip),
            "off domains.\".example.net\".rules.ip"
        );
        assert_eq!(setting("a.example.net", RuleKind::OwnIp), "reject action");
        assert!(p.uses_tag());

        let c = conn("[192.0.2.9]");
        assert_eq!(judge(&p, &c, "u@example.org"), Verdict::Log(Rule::Ip));
        assert_eq!(judge(&p, &c, "u@example.com"), Verdict::Tempfail(Rule::Ip));
        assert_eq!(
            judge(&p, &c, "u@b.example.net"),
            Verdict::Exempt(Rule::Ip, Exemption::Off)
        );
        assert_eq!(
            judge(&p, &conn("[192.0.2.25]"), "u@example.org"),
            Verdict::Reject(own("192.0.2.25"))
        );
        assert_eq!(
            judge(&p, &conn("example.com"), "u@example.com"),
            Verdict::Tag(Rule::RcptDomain)
        );
        assert!(!ruleset().uses_tag());
    }

    #[test]
    fn invalid_and_non_fqdn_in_each_form() {
        let p = ruleset_with_tables("", "[rules]\ninvalid = \"reject\"\nnon-fqdn = \"reject\"");
        let (inv, one) = (Some(Rule::Invalid), Some(Rule::NonFqdn));
        let long_label = format!("{}.example", "a".repeat(64));
        let label_63 = format!("{}.example", "a".repeat(63));
        // 254 characters: four labels of 62 and one of 2, with their dots.
        let name_254 = format!("{0}.{0}.{0}.{0}.ab", "b".repeat(62));
        let name_253 = format!("{0}.{0}.{0}.{0}.a", "b".repeat(62));
        assert_eq!((name_254.len(), name_253.len()), (254, 253));
        let cases: [(&str, Option<Rule>); 24] = [
            ("localhost", one),
            ("localhost.", one),
            ("DESKTOP-4F2K", one),
            ("exa_mple.com", inv),
            ("-bad.example", inv),
            ("bad-.example", inv),
            (&long_label, inv),
            (&label_63, None),
            (&name_254, inv),
            (&name_253, None),
            ("example.com.", Some(Rule::RcptDomain)),
            ("client.example.net.", None),
            ("ex..ample", inv),
            ("example.net..", inv),
            (".example.net", inv),
            ("[192.0.2.9", inv),
            ("[IPv6:junk]", inv),
            ("[192.0.2.9]", Some(Rule::Ip)),
            ("bücher.example", None),
            ("BÜCHER", one),
            ("foo bar.example", inv),
            (" ", inv),
            ("", None),
            ("1.2.3.4.5", None),
        ];
        for (helo, rule) in cases {
            let expected = rule.map_or(Verdict::Pass, Verdict::Reject);
            assert_eq!(
                judge(&p, &conn(helo), "<user@example.com>"),
                expected,
                "{helo:?}"
            );
        }
        // The page's rule first: a recipient domain of one label is rcpt-domain.
        assert_eq!(
            judge(&p, &conn("localhost"), "u@localhost"),
            Verdict::Reject(Rule::RcptDomain)
        );
    }

    #[test]
    fn invalid_and_non_fqdn_are_off_until_a_rule_key_names_them() {
        // Neither the top-level action nor a domain's turns them on.
        let p = ruleset_with("action = \"reject\"");
        for helo in ["localhost", "exa_mple.com"] {
            assert_eq!(judge(&p, &conn(helo), "u@example.com"), Verdict::Pass);
            assert_eq!(judge(&p, &conn(helo), "u@tempfail.example"), Verdict::Pass);
        }
        // ... but a domain's `off` turns them off.
        let on = ruleset_with_tables("", "[rules]\nnon-fqdn = \"reject\"");
        assert_eq!(
            judge(&on, &conn("localhost"), "u@off.example"),
            Verdict::Exempt(Rule::NonFqdn, Exemption::Off)
        );
        assert_eq!(
            judge(&on, &conn("localhost"), "u@log.example"),
            Verdict::Reject(Rule::NonFqdn)
        );
        let (action, setting) = p.action_for("example.com", RuleKind::NonFqdn);
        assert_eq!(
            format!("{action} {setting}"),
            "off the default (off until a rule key names it)"
        );
        // A domain's rule key turns a rule on for that domain only, with every action;
        // the exemptions apply as to every rule.
        let p = ruleset_with_tables(
            "",
            "[rules]
            invalid = \"log\"
            [domains.\"tag.example\".rules]
            non-fqdn = \"tag\"
            [domains.\"tf.example\".rules]
            non-fqdn = \"tempfail\"
            [domains.\"no.example\".rules]
            invalid = \"off\"",
        );
        let c = conn("desktop-4f2k");
        assert_eq!(judge(&p, &c, "u@example.com"), Verdict::Pass);
        assert_eq!(judge(&p, &c, "u@tag.example"), Verdict::Tag(Rule::NonFqdn));
        assert_eq!(
            judge(&p, &c, "u@tf.example"),
            Verdict::Tempfail(Rule::NonFqdn)
        );
        assert_eq!(
            judge(&p, &c, "private@tag.example"),
            Verdict::Tag(Rule::NonFqdn),
            "the whitelist names private@example.com only"
        );
        let bad = conn("exa_mple.com");
        assert_eq!(
            judge(&p, &bad, "u@example.com"),
            Verdict::Log(Rule::Invalid)
        );
        assert_eq!(
            judge(&p, &bad, "u@tag.example"),
            Verdict::Log(Rule::Invalid)
        );
        assert_eq!(
            judge(&p, &bad, "u@no.example"),
            Verdict::Exempt(Rule::Invalid, Exemption::Off)
        );
        assert_eq!(
            judge(&p, &bad, "private@example.com"),
            Verdict::Exempt(Rule::Invalid, Exemption::Whitelist)
        );
        let auth = Connection {
            authenticated: true,
            ..bad.clone()
        };
        assert_eq!(
            judge(&p, &auth, "u@example.com"),
            Verdict::Exempt(Rule::Invalid, Exemption::Authenticated)
        );
        let trusted = Connection {
            client: Some("127.0.0.1".parse().unwrap()),
            ..c.clone()
        };
        assert_eq!(
            judge(&p, &trusted, "u@tag.example"),
            Verdict::Exempt(Rule::NonFqdn, Exemption::Trusted)
        );
        assert_eq!(
            Reply::new(Rule::Invalid, true, None).to_string(),
            "550 5.7.1 bogus helo invalid name"
        );
        assert_eq!(
            Reply::new(Rule::NonFqdn, false, Some("https://x.example/h")).to_string(),
            "450 4.7.1 bogus helo not fully qualified https://x.example/h"
        );
    }

    #[test]
    fn the_tag_header_cannot_be_forged() {
        let client = Some("198.51.100.7".parse().unwrap());
        assert_eq!(
            TagHeader::value(Rule::Ip, "[192.0.2.9]", client),
            "rule=ip helo=\"[192.0.2.9]\" client=198.51.100.7"
        );
        assert_eq!(
            TagHeader::value(Rule::RcptDomain, "a\"b\\c\r\nX-Spam: no\u{e9}\u{2028}", None),
            "rule=rcpt-domain helo=\"a\\\"b\\\\c\\x0d\\x0aX-Spam: no\\xe9\\u{2028}\" client=unknown"
        );
        let long = TagHeader::value(Rule::Ip, &"a".repeat(1000), client);
        assert!(long.len() < 260 && long.contains("...\""), "{long}");
    }
}
