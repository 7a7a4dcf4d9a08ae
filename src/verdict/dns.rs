//! The DNS part of the decision: which DNS rule (`unknown`, then `mismatch`) the answers
//! about a HELO name meet, and what a recipient gets when a temporary failure leaves one
//! undecided. Pure, as the rest of `verdict`: the answers are facts in `Connection::dns`.

use super::{Connection, Rule};
use crate::{
    dns::{answer::Finding, Failure},
    domain::{self, HostName},
    helo::Helo,
    recipient::Recipient,
    ruleset::{Action, DnsFailure, RuleSet, Setting},
};

/// What a recipient gets when a DNS rule is undecided (`Verdict::DnsFailure`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum DnsFallback {
    /// The rule would have refused and `dns_failure = "tempfail"`: `451 4.4.3`.
    Tempfail,
    /// The rule would have refused and `dns_failure = "accept"`.
    Accept,
    /// The rule would not have refused (`log`, `tag`, `off`, an exemption): no verdict.
    NoVerdict,
}

impl DnsFallback {
    pub const ALL: [Self; 3] = [Self::Tempfail, Self::Accept, Self::NoVerdict];

    /// `dns_failure` decides only where the rule's action for the recipient refuses and
    /// no exemption applies: elsewhere the answer could change nothing.
    pub fn new(ruleset: &RuleSet, action: Action, exempt: bool) -> Self {
        match action {
            Action::Reject | Action::Tempfail if !exempt => match ruleset.dns_failure() {
                DnsFailure::Tempfail => Self::Tempfail,
                DnsFailure::Accept => Self::Accept,
            },
            _ => Self::NoVerdict,
        }
    }

    /// As the statistics line and the metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tempfail => "tempfailed",
            Self::Accept => "accepted",
            Self::NoVerdict => "no_verdict",
        }
    }
}

/// The first DNS rule, in order of precedence, that some setting turns on for the
/// recipient and that the answers meet or leave undecided (with the failure). Only for a
/// qualified host name: no answers (`Connection::dns` is `None`), no DNS rule.
pub fn find(
    ruleset: &RuleSet,
    conn: &Connection,
    rcpt: &Recipient<'_>,
) -> Option<(Rule, Option<Failure>)> {
    let dns = conn.dns.as_ref()?;
    match conn.helo.as_ref()? {
        Helo::Name(name) if domain::host_name(name) == HostName::Qualified => {}
        _ => return None,
    }
    [Rule::Unknown, Rule::Mismatch]
        .into_iter()
        .filter(|rule| {
            let setting = ruleset.action_for(&rcpt.domain, rule.kind()).1;
            !matches!(setting, Setting::OffByDefault(_))
        })
        .find_map(|rule| {
            let finding = match rule {
                Rule::Unknown => dns.is_unknown(),
                // Without the client's address there is nothing to compare.
                _ => dns.misses(conn.client?),
            };
            match finding {
                Finding::Yes => Some((rule, None)),
                Finding::No => None,
                Finding::Undecided(failure) => Some((rule, Some(failure))),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dns::{Answer, HeloDns},
        ruleset::RuleKind,
        verdict::{decide, Exemption, Reply, Verdict},
    };
    use Answer::{NoData, NxDomain};

    const CLIENT: &str = "198.51.100.7";

    /// The rule set of a `milter.conf` of `extra` top-level keys and `tables`, beside
    /// domains with an action of their own and a whitelisted mailbox (verdict's).
    fn ruleset(extra: &str, tables: &str) -> RuleSet {
        super::super::tests::ruleset_with_tables(extra, tables)
    }

    fn ips(list: &[&str]) -> Answer {
        Answer::Addresses(list.iter().map(|ip| ip.parse().unwrap()).collect())
    }

    fn mx(list: &[&str]) -> Answer {
        Answer::Exchanges(list.iter().map(|name| name.to_string()).collect())
    }

    fn timeout() -> Answer {
        Answer::Failed(Failure::Timeout)
    }

    fn dns(a: Answer, aaaa: Answer, mx: Answer) -> HeloDns {
        HeloDns { a, aaaa, mx }
    }

    fn conn(helo: &str, client: &str, answers: Option<HeloDns>) -> Connection {
        Connection {
            helo: Some(Helo::parse(helo)),
            client: Some(client.parse().unwrap()),
            dns: answers,
            ..Connection::default()
        }
    }

    fn judge(ruleset: &RuleSet, answers: &HeloDns, rcpt: &str) -> Verdict {
        let c = conn("mail.example.net", CLIENT, Some(answers.clone()));
        decide(ruleset, &c, &Recipient::parse(rcpt))
    }

    #[test]
    fn unknown_is_no_a_aaaa_or_mx_record() {
        let p = ruleset("", "[rules]\nunknown = \"reject\"");
        let unknown = Verdict::Reject(Rule::Unknown);
        let cases = [
            (
                "A only",
                dns(ips(&["192.0.2.1"]), NoData, NoData),
                Verdict::Pass,
            ),
            (
                "AAAA only",
                dns(NxDomain, ips(&["2001:db8::1"]), NxDomain),
                Verdict::Pass,
            ),
            // As Postfix's reject_unknown_helo_hostname: an MX is enough.
            (
                "MX only",
                dns(NoData, NoData, mx(&["mx.example.net"])),
                Verdict::Pass,
            ),
            ("NXDOMAIN x3", dns(NxDomain, NxDomain, NxDomain), unknown),
            ("NODATA x3", dns(NoData, NoData, NoData), unknown),
            ("mixed", dns(NoData, NxDomain, NoData), unknown),
            ("empty answers", dns(ips(&[]), ips(&[]), mx(&[])), unknown),
            // An address is enough, whatever failed beside it.
            (
                "A failed, AAAA",
                dns(timeout(), ips(&["2001:db8::1"]), NxDomain),
                Verdict::Pass,
            ),
            (
                "MX failed, A",
                dns(ips(&["192.0.2.1"]), NoData, timeout()),
                Verdict::Pass,
            ),
        ];
        for (case, answers, expected) in cases {
            assert_eq!(judge(&p, &answers, "u@example.com"), expected, "{case}");
        }
        assert_eq!(
            Reply::new(Rule::Unknown, true, None).to_string(),
            "550 5.7.1 bogus helo unknown host"
        );
        assert_eq!(
            Reply::new(Rule::Unknown, false, Some("https://x.example/h")).to_string(),
            "450 4.7.1 bogus helo unknown host https://x.example/h"
        );
    }

    #[test]
    fn a_failure_is_never_an_unknown_verdict() {
        let failed = |fallback| Verdict::DnsFailure(Rule::Unknown, Failure::Timeout, fallback);
        let maybe = dns(timeout(), NxDomain, NxDomain);
        let tables = "[rules]\nunknown = \"reject\"\n[domains.\"dry.example\".rules]\nunknown = \"log\"\n[domains.\"t.example\".rules]\nunknown = \"tag\"";
        let accept = ruleset("", tables);
        assert_eq!(
            judge(&accept, &maybe, "u@example.com"),
            failed(DnsFallback::Accept)
        );
        let tempfail = ruleset("dns_failure = \"tempfail\"", tables);
        for (rcpt, fallback) in [
            ("u@example.com", DnsFallback::Tempfail),
            // An action does not turn the rule on: [rules] still says reject.
            ("u@log.example", DnsFallback::Tempfail),
            ("private@example.com", DnsFallback::NoVerdict),
            ("postmaster@example.com", DnsFallback::NoVerdict),
            ("u@off.example", DnsFallback::NoVerdict),
            ("u@dry.example", DnsFallback::NoVerdict),
            ("u@t.example", DnsFallback::NoVerdict),
        ] {
            assert_eq!(judge(&tempfail, &maybe, rcpt), failed(fallback), "{rcpt}");
        }
        let servfail = dns(NoData, Answer::Failed(Failure::ServFail), NxDomain);
        assert_eq!(
            judge(&tempfail, &servfail, "u@example.com"),
            Verdict::DnsFailure(Rule::Unknown, Failure::ServFail, DnsFallback::Tempfail)
        );
        let top_tempfail = ruleset(
            "dns_failure = \"tempfail\"",
            "[rules]\nunknown = \"tempfail\"",
        );
        assert_eq!(
            judge(&top_tempfail, &maybe, "u@example.com"),
            failed(DnsFallback::Tempfail)
        );
        // Trusted and authenticated clients are exempt: no verdict either.
        let mut c = conn("mail.example.net", "127.0.0.1", Some(maybe.clone()));
        let rcpt = Recipient::parse("u@example.com");
        assert_eq!(decide(&tempfail, &c, &rcpt), failed(DnsFallback::NoVerdict));
        c.client = Some(CLIENT.parse().unwrap());
        c.authenticated = true;
        assert_eq!(decide(&tempfail, &c, &rcpt), failed(DnsFallback::NoVerdict));
        assert_eq!(
            Reply::dns_failure(None).to_string(),
            "451 4.4.3 bogus helo dns failure"
        );
        assert_eq!(
            Reply::dns_failure(Some("https://x.example/h")).to_string(),
            "451 4.4.3 bogus helo dns failure https://x.example/h"
        );
    }

    #[test]
    fn mismatch_looks_for_the_client_in_its_family() {
        let p = ruleset("dns_failure = \"tempfail\"", "[rules]\nmismatch = \"log\"");
        let mismatch = Verdict::Log(Rule::Mismatch);
        let held = |client: &str, answers: HeloDns| {
            let c = conn("mail.example.net", client, Some(answers));
            decide(&p, &c, &Recipient::parse("u@example.com"))
        };
        let v4 = ips(&["192.0.2.1", CLIENT]);
        let v6 = ips(&["2001:db8::7"]);
        let cases = [
            (CLIENT, dns(v4.clone(), NoData, NoData), Verdict::Pass),
            (
                "2001:db8::7",
                dns(NoData, v6.clone(), NoData),
                Verdict::Pass,
            ),
            (
                "::ffff:198.51.100.7",
                dns(v4.clone(), NoData, NoData),
                Verdict::Pass,
            ),
            ("192.0.2.99", dns(v4.clone(), NoData, NoData), mismatch),
            // An IPv6 client is not looked for among the A records, nor IPv4 in AAAA.
            (
                "2001:db8::7",
                dns(ips(&["192.0.2.1"]), NoData, NoData),
                mismatch,
            ),
            (
                CLIENT,
                dns(NoData, ips(&["::ffff:198.51.100.7"]), NoData),
                mismatch,
            ),
            // No address at all holds no client.
            (CLIENT, dns(NxDomain, NxDomain, NxDomain), mismatch),
            // Only the client's family counts: a failure of the other is no doubt.
            (
                CLIENT,
                dns(ips(&["192.0.2.1"]), timeout(), NoData),
                mismatch,
            ),
            (CLIENT, dns(v4.clone(), timeout(), timeout()), Verdict::Pass),
            (
                CLIENT,
                dns(timeout(), v6.clone(), NoData),
                Verdict::DnsFailure(Rule::Mismatch, Failure::Timeout, DnsFallback::NoVerdict),
            ),
        ];
        for (client, answers, expected) in cases {
            assert_eq!(
                held(client, answers.clone()),
                expected,
                "{client} {answers:?}"
            );
        }
        let unknown_client = Connection {
            client: None,
            ..conn(
                "mail.example.net",
                CLIENT,
                Some(dns(NxDomain, NxDomain, NxDomain)),
            )
        };
        let rcpt = Recipient::parse("u@example.com");
        assert_eq!(decide(&p, &unknown_client, &rcpt), Verdict::Pass);
    }

    #[test]
    fn dns_rules_are_opt_in_and_come_last() {
        let none = dns(NxDomain, NxDomain, NxDomain);
        let both = ruleset("", "[rules]\nunknown = \"reject\"\nmismatch = \"tag\"\n[domains.\"x.example\".rules]\nunknown = \"off\"");
        assert_eq!(
            judge(&both, &none, "u@example.com"),
            Verdict::Reject(Rule::Unknown)
        );
        // A domain's `off` turns them off there, as an explicit rule key does.
        for rcpt in ["u@off.example", "u@x.example"] {
            assert_eq!(
                judge(&both, &none, rcpt),
                Verdict::Exempt(Rule::Unknown, Exemption::Off),
                "{rcpt}"
            );
        }
        assert_eq!(
            judge(&both, &none, "private@example.com"),
            Verdict::Exempt(Rule::Unknown, Exemption::Whitelist)
        );
        // Neither the top-level action nor a domain's turns them on.
        let off = ruleset("action = \"reject\"", "");
        for rcpt in ["u@example.com", "u@tempfail.example"] {
            assert_eq!(judge(&off, &none, rcpt), Verdict::Pass, "{rcpt}");
        }
        assert!(!off.needs_dns());
        // `unknown` off by default leaves a name without addresses to `mismatch`.
        let only_mismatch = ruleset("", "[rules]\nmismatch = \"tag\"");
        assert_eq!(
            judge(&only_mismatch, &none, "u@example.com"),
            Verdict::Tag(Rule::Mismatch)
        );
        // No answers, no DNS rule; the page's rules and the syntax rules first.
        let rcpt = Recipient::parse("u@example.com");
        let c = conn("mail.example.net", CLIENT, None);
        assert_eq!(decide(&both, &c, &rcpt), Verdict::Pass);
        for (helo, expected) in [
            ("example.com", Verdict::Reject(Rule::RcptDomain)),
            ("[192.0.2.9]", Verdict::Reject(Rule::Ip)),
            ("localhost", Verdict::Pass),
            ("exa_mple.com", Verdict::Pass),
        ] {
            let c = conn(helo, CLIENT, Some(none.clone()));
            assert_eq!(decide(&both, &c, &rcpt), expected, "{helo}");
        }
        let (action, setting) = off.action_for("example.com", RuleKind::Mismatch);
        assert_eq!(
            format!("{action} {setting}"),
            "off the default (off until a rule key names it)"
        );
    }

    #[test]
    fn dns_is_needed_where_a_rule_key_turns_a_dns_rule_on() {
        for (tables, needed) in [
            ("", false),
            ("[rules]\nunknown = \"off\"\nmismatch = \"off\"", false),
            ("[rules]\ninvalid = \"reject\"", false),
            ("[rules]\nmismatch = \"log\"", true),
            ("[rules]\nunknown = \"tag\"", true),
            (
                "[domains.\"a.example\".rules]\nunknown = \"tempfail\"",
                true,
            ),
            ("[domains.\".a.example\".rules]\nmismatch = \"tag\"", true),
            ("[domains.\"a.example\".rules]\nunknown = \"off\"", false),
        ] {
            assert_eq!(ruleset("", tables).needs_dns(), needed, "{tables}");
        }
        assert!(!ruleset("action = \"tag\"", "").needs_dns());
    }
}
