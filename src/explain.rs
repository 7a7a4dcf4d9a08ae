//! `bogus-helo-milter explain`: the verdict for one HELO and recipient, and why, in words a
//! mail administrator can pass on to a sender.

use crate::{
    dns::{answer::Finding, Failure, HeloDns},
    domain,
    helo::Helo,
    judgement::{outcome, Outcome, Would},
    recipient::Recipient,
    ruleset::{Action, RuleSet, Setting},
    verdict::{
        decide, is_own, name_rule, Connection, DnsFallback, Exemption, Rule, TagHeader, Verdict,
    },
};
use std::{fmt::Write, net::IpAddr};

/// The facts an administrator can give on the command line.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Question {
    /// The HELO/EHLO name the client sent.
    #[arg(long)]
    pub helo: String,
    /// The recipient address.
    #[arg(long)]
    pub rcpt: String,
    /// The client's IP address.
    #[arg(long, value_name = "IP")]
    pub client: Option<IpAddr>,
    /// The local address the client connected to (the MTA's {daemon_addr}); may repeat.
    #[arg(long, value_name = "IP")]
    pub local: Vec<IpAddr>,
    /// The MTA's host name (its `j` macro, Postfix's myhostname).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// The SASL login name, if the client authenticated.
    #[arg(long, value_name = "USER")]
    pub auth: Option<String>,
    /// The DNS answers about the HELO name, looked up by the caller (never an option).
    #[arg(skip)]
    pub dns: Option<HeloDns>,
}

pub fn explain(ruleset: &RuleSet, q: &Question) -> String {
    let conn = Connection {
        helo: Some(Helo::parse(&q.helo)),
        client: q.client.map(|ip| ip.to_canonical()),
        local: Vec::new(),
        server_name: q
            .server_name
            .as_deref()
            .map(|name| domain::normalize(name).into_owned()),
        authenticated: q.auth.as_deref().is_some_and(|a| !a.is_empty()),
        dns: q.dns.clone(),
    };
    let mut conn = conn;
    for &ip in &q.local {
        conn.add_local(ip);
    }
    let rcpt = Recipient::parse(&q.rcpt);
    let verdict = decide(ruleset, &conn, &rcpt);

    let mut out = String::new();
    let helo_kind = match &conn.helo {
        Some(Helo::Ip(ip)) => format!("an IP address ({ip})"),
        Some(Helo::Name(_)) | None => "a name".to_string(),
    };
    let _ = writeln!(out, "helo:      {:?} is {helo_kind}", q.helo);
    let _ = writeln!(
        out,
        "recipient: {:?}, domain {:?}",
        rcpt.address, rcpt.domain
    );
    let mut own: Vec<String> = (conn.local.iter())
        .filter(|&&ip| is_own(ruleset, &conn, ip))
        .map(|ip| ip.to_string())
        .collect();
    own.extend(
        ruleset
            .own_networks()
            .networks()
            .iter()
            .map(|n| n.to_string()),
    );
    let _ = writeln!(
        out,
        "own:       addresses {} (own_addresses, this host's interfaces, --local)",
        if own.is_empty() {
            "none".to_string()
        } else {
            own.join(" ")
        }
    );
    if let Some(dns) = &conn.dns {
        for (i, line) in dns.lines().enumerate() {
            let label = if i == 0 { "dns:" } else { "" };
            let _ = writeln!(out, "{label:<10} {line}");
        }
    }
    let rule = match (verdict, verdict.rule()) {
        // What the rule asks could not be answered: the line says so rather than claim
        // what a rule that matched would (a name DNS does not know, say).
        (Verdict::DnsFailure(rule, failure, _), _) => undecided(rule, failure),
        (_, None) if conn.dns.is_some() => "none: the HELO is neither an IP address nor the recipient's domain or one of this server's names, and the DNS answers meet no DNS rule that is on".to_string(),
        (_, None) => "none: the HELO is neither an IP address nor the recipient's domain or one of this server's names".to_string(),
        (_, Some(rule @ Rule::OwnIp(_))) => format!("{} (\"{rule}\"): the HELO is one of this server's own addresses (local address, interface or own_addresses)", rule.name()),
        (_, Some(rule @ Rule::Ip)) => format!("{} (\"{rule}\"): the HELO is an IP address instead of a host name", rule.name()),
        (_, Some(rule @ Rule::RcptDomain)) => format!("{} (\"{rule}\"): the HELO is the recipient's domain or one of this server's names (own_names, --server-name)", rule.name()),
        (_, Some(rule @ Rule::Invalid)) => format!("{} (\"{rule}\"): the HELO is neither a valid host name (letters, digits, hyphens; labels of 1 to 63; at most 253) nor an IP address", rule.name()),
        (_, Some(rule @ Rule::NonFqdn)) => format!("{} (\"{rule}\"): the HELO is a host name of a single label, not fully qualified", rule.name()),
        (_, Some(rule @ Rule::Unknown)) => format!("{} (\"{rule}\"): DNS has no A, AAAA or MX record of the HELO name (each NXDOMAIN or NODATA)", rule.name()),
        (_, Some(rule @ Rule::Mismatch)) => format!("{}: the HELO name's addresses (A for an IPv4 client, AAAA for IPv6) do not hold the client's address; never refused (RFC 5321 §4.1.4)", rule.name()),
    };
    let _ = writeln!(out, "rule:      {rule}");
    if verdict.rule().is_none() {
        // `decide` passes a HELO that only an opt-in rule no setting turns on matches.
        if let Some(off) = match &conn.helo {
            Some(Helo::Name(name)) => name_rule(name).or_else(|| dns_rule(&conn)),
            _ => None,
        } {
            let setting = ruleset.action_for(&rcpt.domain, off.kind()).1;
            let _ = writeln!(
                out,
                "           ({} would match, but is off: {setting})",
                off.name()
            );
        }
        // Without the client's address mismatch is not judged at all: "meets no DNS
        // rule" must not read as the name passing it.
        let mismatch_on = !matches!(
            ruleset.action_for(&rcpt.domain, Rule::Mismatch.kind()).1,
            Setting::OffByDefault(_)
        );
        if conn.dns.is_some() && conn.client.is_none() && mismatch_on {
            let _ = writeln!(
                out,
                "           (mismatch is on but not judged: it needs the client's address, --client)"
            );
        }
    }
    if let Some(rule) = verdict.rule() {
        let (action, setting) = ruleset.action_for(&rcpt.domain, rule.kind());
        let _ = writeln!(out, "action:    {action} (from {setting})");
    }
    let decision = match verdict {
        Verdict::Pass => "accept".to_string(),
        Verdict::Exempt(_, why) => format!(
            "accept, exempt: {}",
            match why {
                Exemption::Trusted => "the client address is in trusted_networks",
                Exemption::Authenticated =>
                    "the client authenticated and skip_authenticated = true",
                Exemption::Whitelist => "the recipient is on the whitelist",
                Exemption::RoleAccount =>
                    "postmaster and abuse are never refused (exempt_role_accounts; <postmaster> always)",
                Exemption::Off => "the action for this rule and recipient is off",
            }
        ),
        Verdict::DnsFailure(rule, failure, fallback) => {
            let why = format!(
                "a DNS failure ({}) leaves {} undecided",
                failure.name(),
                rule.name()
            );
            match fallback {
                DnsFallback::Tempfail => format!("tempfail: {why}, and dns_failure = \"tempfail\""),
                DnsFallback::Accept => format!("accept: {why}, and dns_failure = \"accept\""),
                DnsFallback::NoVerdict => format!(
                    "accept: {why}; no verdict, since it would not refuse this recipient"
                ),
            }
        }
        Verdict::Reject(_) => "reject".to_string(),
        Verdict::Tempfail(_) => "tempfail".to_string(),
        Verdict::Log(rule) if !rule.kind().allows(Action::Reject) => {
            "accept, log only (action = log)".to_string()
        }
        Verdict::Log(_) => {
            "accept, log only (action = log): the milter would reply as below".to_string()
        }
        Verdict::Tag(rule) => format!(
            "accept, and tag the message: {}: {}",
            TagHeader::NAME,
            TagHeader::value(rule, &q.helo, conn.client)
        ),
    };
    let _ = writeln!(out, "verdict:   {decision}");
    match outcome(verdict, ruleset, &q.helo, conn.client, true) {
        Outcome::Refuse(reply) | Outcome::DryRun(Would::Reply(reply)) => {
            let _ = writeln!(out, "reply:     {reply}");
        }
        Outcome::DryRun(Would::Nothing) => {
            let _ = writeln!(out, "reply:     none: this rule never refuses");
        }
        Outcome::Accept | Outcome::Tag(_) | Outcome::DryRun(Would::Tag(_)) => {
            let _ = writeln!(out, "reply:     none from the milter (the MTA goes on)");
        }
    }
    out
}

/// The rule line of a DNS rule that `failure` left undecided: why it is neither matched
/// nor not.
fn undecided(rule: Rule, failure: Failure) -> String {
    let failure = failure.name();
    match rule {
        Rule::Mismatch => format!("{}, undecided: the question for the client's family of addresses (A for IPv4, AAAA for IPv6) failed ({failure}), so whether they hold the client's address is not known", rule.name()),
        _ => format!("{} (\"{rule}\"), undecided: no answer gave an A, AAAA or MX record, and a question failed ({failure}), so DNS may know the name", rule.name()),
    }
}

/// The DNS rule the answers meet, whatever the settings: what to name when it is off.
fn dns_rule(conn: &Connection) -> Option<Rule> {
    let dns = conn.dns.as_ref()?;
    if dns.is_unknown() == Finding::Yes {
        return Some(Rule::Unknown);
    }
    (dns.misses(conn.client?) == Finding::Yes).then_some(Rule::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, dns::Answer};
    use Answer::{Failed, NoData, NxDomain};

    fn explain_with(config: &str, client: &str, dns: HeloDns) -> String {
        let ruleset = Config::parse(config, "test").unwrap().ruleset().clone();
        let q = Question {
            helo: "mail.example.net".into(),
            rcpt: "u@example.com".into(),
            client: Some(client.parse().unwrap()),
            dns: Some(dns),
            ..Question::default()
        };
        explain(&ruleset, &q)
    }

    fn assert_lines(out: &str, lines: &[&str]) {
        for line in lines {
            assert!(out.contains(line), "{line:?} in:\n{out}");
        }
    }

    #[test]
    fn each_answer_and_the_dns_rules_verdict() {
        let answers = HeloDns {
            a: NxDomain,
            aaaa: Answer::Addresses(vec!["2001:db8::7".parse().unwrap()]),
            mx: NoData,
        };
        let out = explain_with(
            "[rules]\nunknown = \"reject\"\nmismatch = \"log\"",
            "198.51.100.7",
            answers,
        );
        assert_lines(
            &out,
            &[
                "dns:       A: NXDOMAIN\n           AAAA: 2001:db8::7\n           MX: NODATA\n",
                "rule:      mismatch: the HELO name's addresses (A for an IPv4 client, AAAA for IPv6) do not hold the client's address; never refused (RFC 5321 §4.1.4)\n",
                "action:    log (from rules.mismatch)\n",
                "verdict:   accept, log only (action = log)\n",
                "reply:     none: this rule never refuses\n",
            ],
        );

        let unknown = HeloDns {
            a: NxDomain,
            aaaa: NoData,
            mx: NxDomain,
        };
        let out = explain_with(
            "[rules]\nunknown = \"tempfail\"",
            "198.51.100.7",
            unknown.clone(),
        );
        assert_lines(
            &out,
            &[
                "rule:      unknown (\"bogus helo unknown host\"): DNS has no A, AAAA or MX record",
                "action:    tempfail (from rules.unknown)\n",
                "reply:     450 4.7.1 bogus helo unknown host\n",
            ],
        );
        // Without the client's address, mismatch is not judged, and says so.
        let ruleset = Config::parse("[rules]\nmismatch = \"tag\"", "test")
            .unwrap()
            .ruleset()
            .clone();
        let q = Question {
            helo: "mail.example.net".into(),
            rcpt: "u@example.com".into(),
            dns: Some(unknown.clone()),
            ..Question::default()
        };
        assert_lines(
            &explain(&ruleset, &q),
            &["           (mismatch is on but not judged: it needs the client's address, --client)\nverdict:   accept\n"],
        );
        // Off by default: the rule that would match is named, with why it is off.
        let out = explain_with("", "198.51.100.7", unknown);
        assert_lines(
            &out,
            &[
                "rule:      none: the HELO is neither an IP address nor the recipient's domain or one of this server's names, and the DNS answers meet no DNS rule that is on\n",
                "(unknown would match, but is off: the default (off until a rule key names it))\n",
                "verdict:   accept\n",
            ],
        );
    }

    #[test]
    fn a_dns_failure_and_what_dns_failure_makes_of_it() {
        let failed = HeloDns {
            a: Failed(crate::dns::Failure::Timeout),
            aaaa: NxDomain,
            mx: Failed(crate::dns::Failure::ServFail),
        };
        let out = explain_with(
            "dns_failure = \"tempfail\"\n[rules]\nunknown = \"reject\"",
            "198.51.100.7",
            failed.clone(),
        );
        assert_lines(
            &out,
            &[
                "dns:       A: timeout\n           AAAA: NXDOMAIN\n           MX: servfail\n",
                // Not "DNS has no A, AAAA or MX record": that is not known.
                "rule:      unknown (\"bogus helo unknown host\"), undecided: no answer gave an A, AAAA or MX record, and a question failed (timeout), so DNS may know the name\n",
                "action:    reject (from rules.unknown)\n",
                "verdict:   tempfail: a DNS failure (timeout) leaves unknown undecided, and dns_failure = \"tempfail\"\n",
                "reply:     451 4.4.3 bogus helo dns failure\n",
            ],
        );
        let out = explain_with(
            "[rules]\nunknown = \"reject\"",
            "198.51.100.7",
            failed.clone(),
        );
        assert_lines(
            &out,
            &[
                "verdict:   accept: a DNS failure (timeout) leaves unknown undecided, and dns_failure = \"accept\"\n",
                "reply:     none from the milter",
            ],
        );
        let out = explain_with("[rules]\nunknown = \"tag\"", "198.51.100.7", failed);
        assert_lines(
            &out,
            &["verdict:   accept: a DNS failure (timeout) leaves unknown undecided; no verdict, since it would not refuse this recipient\n"],
        );
        let failed = HeloDns {
            a: Failed(crate::dns::Failure::ServFail),
            aaaa: Answer::Addresses(vec!["2001:db8::7".parse().unwrap()]),
            mx: NoData,
        };
        let out = explain_with("[rules]\nmismatch = \"tag\"", "198.51.100.7", failed);
        assert_lines(
            &out,
            &["rule:      mismatch, undecided: the question for the client's family of addresses (A for IPv4, AAAA for IPv6) failed (servfail), so whether they hold the client's address is not known\n"],
        );
    }
}
