//! The one judge of both front ends: from the facts a front end gathered, the verdict
//! (`verdict::decide`), its count, its one log line (`via=milter` or `via=policy`), and
//! what to do with the recipient in no front end's terms (`Outcome`). The milter and the
//! policy service only gather the facts and translate the outcome into their protocols.

use crate::{
    dns::Failure,
    logging::quote,
    recipient::Recipient,
    ruleset::{Action, RuleSet},
    stats::{FrontEnd, Stats},
    verdict::{decide, Connection, DnsFallback, Reply, Rule, TagHeader, Verdict},
};
use log::{error, Level};
use std::net::IpAddr;

/// What a front end knows when a recipient is to be judged.
pub struct Facts<'a> {
    pub ruleset: &'a RuleSet,
    pub conn: &'a Connection,
    pub rcpt: &'a Recipient<'a>,
    pub via: FrontEnd,
    /// The HELO as the peer sent it, for the log and the tag header.
    pub helo_text: &'a str,
    /// The MTA's queue ID, when it gave one.
    pub queue_id: Option<&'a str>,
    /// Whether this session can add the tag header: where it cannot, `tag` acts as `log`.
    pub can_tag: bool,
}

/// What to do with a recipient.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Outcome {
    /// Accept: no rule matched, or one did and the recipient is exempt.
    Accept,
    /// Refuse with this reply.
    Refuse(Reply),
    /// Accept: a dry run (`log`, or `tag` where the session cannot tag), whose log line
    /// says what would have been done.
    DryRun(Would),
    /// Accept, and add the tag header with this value: once per message, since the rule
    /// is the HELO's, the same for every recipient it matches.
    Tag(String),
}

/// What a dry run would have done.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Would {
    Reply(Reply),
    /// Add the tag header with this value.
    Tag(String),
    /// Nothing but the log line: the rule never refuses (`mismatch`), so there is no
    /// reply to claim.
    Nothing,
}

/// The outcome of `verdict`, without counting or logging it (for `explain`): the reply
/// texts come from `ruleset`, the tag header's value from the peer's HELO text and the
/// client's address.
pub fn outcome(
    verdict: Verdict,
    ruleset: &RuleSet,
    helo_text: &str,
    client: Option<IpAddr>,
    can_tag: bool,
) -> Outcome {
    let refusal = |rule, permanent| Reply::new(rule, permanent, ruleset.reply_url());
    match verdict {
        Verdict::Pass | Verdict::Exempt(..) => Outcome::Accept,
        Verdict::DnsFailure(_, _, DnsFallback::Tempfail) => {
            Outcome::Refuse(Reply::dns_failure(ruleset.reply_url()))
        }
        Verdict::DnsFailure(..) => Outcome::Accept,
        Verdict::Reject(rule) => Outcome::Refuse(refusal(rule, true)),
        Verdict::Tempfail(rule) => Outcome::Refuse(refusal(rule, false)),
        Verdict::Log(rule) if !rule.kind().allows(Action::Reject) => {
            Outcome::DryRun(Would::Nothing)
        }
        Verdict::Log(rule) => Outcome::DryRun(Would::Reply(refusal(rule, true))),
        Verdict::Tag(rule) => {
            let value = TagHeader::value(rule, helo_text, client);
            match can_tag {
                true => Outcome::Tag(value),
                false => Outcome::DryRun(Would::Tag(value)),
            }
        }
    }
}

/// A recipient judged: what to do, and the rule that matched, for a later log line.
pub struct Judgement {
    pub outcome: Outcome,
    rule: Option<Rule>,
}

impl Facts<'_> {
    /// Decides, counts the verdict in `stats` and logs it; what to do.
    pub fn judge(&self, stats: &Stats) -> Judgement {
        let verdict = decide(self.ruleset, self.conn, self.rcpt);
        let outcome = outcome(
            verdict,
            self.ruleset,
            self.helo_text,
            self.conn.client,
            self.can_tag,
        );
        // A tag that cannot be applied is counted and logged as what was done: a log.
        let verdict = match (verdict, &outcome) {
            (Verdict::Tag(rule), Outcome::DryRun(_)) => Verdict::Log(rule),
            _ => verdict,
        };
        stats.count(self.via, &verdict);
        self.log(verdict, &outcome);
        Judgement {
            outcome,
            rule: verdict.rule(),
        }
    }

    /// Logs that the refusal of `judgement` could not be sent and the recipient was
    /// accepted instead.
    pub fn not_sent(&self, judgement: &Judgement, error: &str) {
        error!(
            "action=accept {} error={error:?} via={}",
            self.describe(judgement.rule, None),
            self.via.name()
        );
    }

    fn log(&self, verdict: Verdict, outcome: &Outcome) {
        if let Some((level, line)) = self.line(verdict, outcome) {
            log::log!(level, "{line}");
        }
    }

    /// The one log line of a judged recipient and its level; none for a plain accept.
    fn line(&self, verdict: Verdict, outcome: &Outcome) -> Option<(Level, String)> {
        let via = self.via.name();
        let describe = || self.describe(verdict.rule(), None);
        let action = verdict.action().map_or("", Action::name);
        let info = |line| Some((Level::Info, line));
        match (verdict, outcome) {
            (Verdict::DnsFailure(rule, failure, fallback), _) => {
                let described = self.describe(Some(rule), Some(failure));
                match (fallback, outcome) {
                    (_, Outcome::Refuse(reply)) => info(format!(
                        "action=tempfail {described} reply={} via={via}",
                        quote(&reply.to_string())
                    )),
                    // The answer could have changed nothing here.
                    (DnsFallback::NoVerdict, _) => Some((
                        Level::Debug,
                        format!("action=accept {described} via={via}"),
                    )),
                    _ => info(format!("action=accept {described} via={via}")),
                }
            }
            (Verdict::Exempt(_, exemption), _) => Some((
                Level::Debug,
                format!(
                    "action=accept exempt={} {} via={via}",
                    exemption.name(),
                    describe()
                ),
            )),
            (_, Outcome::Accept) => None,
            (_, Outcome::Refuse(reply)) => info(format!(
                "action={action} {} reply={} via={via}",
                describe(),
                quote(&reply.to_string())
            )),
            (_, Outcome::DryRun(Would::Reply(reply))) => info(format!(
                "action={action} {} would_reply={} via={via}",
                describe(),
                quote(&reply.to_string())
            )),
            // A rule that never refuses claims no reply.
            (_, Outcome::DryRun(Would::Nothing)) => {
                info(format!("action={action} {} via={via}", describe()))
            }
            (_, Outcome::DryRun(Would::Tag(value))) => info(format!(
                "action={action} {} would_tag={} reason=\"the MTA does not offer header changes\" via={via}",
                describe(),
                quote(&format!("{}: {value}", TagHeader::NAME))
            )),
            (_, Outcome::Tag(value)) => info(format!(
                "action={action} {} header={} via={via}",
                describe(),
                quote(&format!("{}: {value}", TagHeader::NAME))
            )),
        }
    }

    /// The facts of a log line: `rule=ip client=198.51.100.7 helo="[192.0.2.9]"
    /// rcpt="user@example.com" queue_id="4Bx..."`, with `dns=timeout` after the rule where
    /// a DNS failure left it undecided.
    fn describe(&self, rule: Option<Rule>, dns: Option<Failure>) -> String {
        let client = self
            .conn
            .client
            .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        let queue_id = match self.queue_id {
            None | Some("") => String::new(),
            Some(id) => format!(" queue_id={}", quote(id)),
        };
        let dns = dns.map_or(String::new(), |f| format!(" dns={}", f.name()));
        format!(
            "rule={}{dns} client={client} helo={} rcpt={}{queue_id}",
            rule.map_or("none", |r| r.name()),
            quote(self.helo_text),
            quote(self.rcpt.address),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        dns::{Answer, HeloDns},
        helo::Helo,
        verdict::Exemption,
    };

    fn ruleset(extra: &str) -> RuleSet {
        Config::parse(extra, "test").unwrap().ruleset().clone()
    }

    #[test]
    fn replies_are_the_pages_texts() {
        let p = ruleset("");
        let client = Some("198.51.100.7".parse().unwrap());
        let of = |v| outcome(v, &p, "[192.0.2.25]", client, true);
        let reply = |code, status, text: &str| Reply {
            code,
            status,
            text: text.into(),
        };
        assert_eq!(
            of(Verdict::Reject(Rule::Ip)),
            Outcome::Refuse(reply("550", "5.7.1", "bogus helo"))
        );
        assert_eq!(
            of(Verdict::Reject(Rule::OwnIp(
                "2001:db8::25".parse().unwrap()
            ))),
            Outcome::Refuse(reply("550", "5.7.1", "bogus helo 2001:db8::25"))
        );
        assert_eq!(
            of(Verdict::Tempfail(Rule::RcptDomain)),
            Outcome::Refuse(reply("450", "4.7.1", "bogus helo matches rcpt"))
        );
        // A dry run says what it would have replied; only it, not the front end, knows.
        assert_eq!(
            of(Verdict::Log(Rule::Ip)),
            Outcome::DryRun(Would::Reply(reply("550", "5.7.1", "bogus helo")))
        );
        assert_eq!(of(Verdict::Pass), Outcome::Accept);
        assert_eq!(
            of(Verdict::Exempt(Rule::Ip, Exemption::Off)),
            Outcome::Accept
        );
        let tag = "rule=ip helo=\"[192.0.2.25]\" client=198.51.100.7";
        assert_eq!(of(Verdict::Tag(Rule::Ip)), Outcome::Tag(tag.into()));
        assert_eq!(
            outcome(Verdict::Tag(Rule::Ip), &p, "[192.0.2.25]", client, false),
            Outcome::DryRun(Would::Tag(tag.into()))
        );
        let with_url = ruleset("reply_url = \"https://example.com/helo\"");
        assert_eq!(
            outcome(Verdict::Reject(Rule::Ip), &with_url, "x", None, true),
            Outcome::Refuse(reply("550", "5.7.1", "bogus helo https://example.com/helo"))
        );
    }

    /// The line a recipient gets, judged on these answers under `config`.
    fn line_for(config: &str, answers: HeloDns, rcpt: &str) -> Option<(Level, String)> {
        let ruleset = ruleset(config);
        let conn = Connection {
            helo: Some(Helo::parse("Mail.Example.NET")),
            client: Some("198.51.100.7".parse().unwrap()),
            dns: Some(answers),
            ..Connection::default()
        };
        let rcpt = Recipient::parse(rcpt);
        let facts = Facts {
            ruleset: &ruleset,
            conn: &conn,
            rcpt: &rcpt,
            via: FrontEnd::Milter,
            helo_text: "Mail.Example.NET",
            queue_id: Some("4Bx"),
            can_tag: true,
        };
        let verdict = decide(&ruleset, &conn, &rcpt);
        facts.line(
            verdict,
            &outcome(verdict, &ruleset, "Mail.Example.NET", conn.client, true),
        )
    }

    #[test]
    fn dns_rules_log_what_they_did_and_never_claim_a_reply() {
        use Answer::{Failed, NxDomain};
        let timeout = || Failed(crate::dns::Failure::Timeout);
        let maybe = HeloDns {
            a: timeout(),
            aaaa: NxDomain,
            mx: NxDomain,
        };
        let none = HeloDns {
            a: NxDomain,
            aaaa: NxDomain,
            mx: NxDomain,
        };
        let facts =
            "client=198.51.100.7 helo=\"Mail.Example.NET\" rcpt=\"u@example.com\" queue_id=\"4Bx\"";
        let unknown = "[rules]\nunknown = \"reject\"";
        let info = |line: String| Some((Level::Info, line));
        assert_eq!(
            line_for(&format!("dns_failure = \"tempfail\"\n{unknown}"), maybe.clone(), "u@example.com"),
            info(format!("action=tempfail rule=unknown dns=timeout {facts} reply=\"451 4.4.3 bogus helo dns failure\" via=milter"))
        );
        assert_eq!(
            line_for(unknown, maybe.clone(), "u@example.com"),
            info(format!(
                "action=accept rule=unknown dns=timeout {facts} via=milter"
            ))
        );
        assert_eq!(
            line_for("[rules]\nunknown = \"log\"", maybe.clone(), "u@example.com"),
            Some((
                Level::Debug,
                format!("action=accept rule=unknown dns=timeout {facts} via=milter")
            ))
        );
        assert_eq!(
            line_for(unknown, none.clone(), "u@example.com"),
            info(format!("action=reject rule=unknown {facts} reply=\"550 5.7.1 bogus helo unknown host\" via=milter"))
        );
        assert_eq!(
            line_for("[rules]\nmismatch = \"log\"", none.clone(), "u@example.com"),
            info(format!("action=log rule=mismatch {facts} via=milter"))
        );
        assert_eq!(
            line_for("[rules]\nmismatch = \"tag\"", none, "u@example.com"),
            info(format!("action=tag rule=mismatch {facts} header=\"X-Bogus-HELO: rule=mismatch helo=\\\"Mail.Example.NET\\\" client=198.51.100.7\" via=milter"))
        );
    }

    #[test]
    fn dns_failures_and_mismatch_outcomes() {
        let p = ruleset("reply_url = \"https://example.com/helo\"");
        let of = |v| outcome(v, &p, "x.example", None, true);
        let failed = |fallback| {
            of(Verdict::DnsFailure(
                Rule::Unknown,
                crate::dns::Failure::ServFail,
                fallback,
            ))
        };
        assert_eq!(
            failed(DnsFallback::Tempfail),
            Outcome::Refuse(Reply {
                code: "451",
                status: "4.4.3",
                text: "bogus helo dns failure https://example.com/helo".into()
            })
        );
        assert_eq!(failed(DnsFallback::Accept), Outcome::Accept);
        assert_eq!(failed(DnsFallback::NoVerdict), Outcome::Accept);
        assert_eq!(
            of(Verdict::Log(Rule::Mismatch)),
            Outcome::DryRun(Would::Nothing)
        );
        assert_eq!(
            of(Verdict::Log(Rule::Unknown)),
            Outcome::DryRun(Would::Reply(Reply {
                code: "550",
                status: "5.7.1",
                text: "bogus helo unknown host https://example.com/helo".into()
            }))
        );
    }
}
