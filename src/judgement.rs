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
use log::{debug, error, info};
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
        let via = self.via.name();
        let describe = || self.describe(verdict.rule(), None);
        let action = verdict.action().map_or("", Action::name);
        match (verdict, outcome) {
            (Verdict::DnsFailure(rule, failure, fallback), _) => {
                self.log_dns_failure(rule, failure, fallback, outcome)
            }
            (Verdict::Exempt(_, exemption), _) => debug!(
                "action=accept exempt={} {} via={via}",
                exemption.name(),
                describe()
            ),
            (_, Outcome::Accept) => {}
            (_, Outcome::Refuse(reply)) => info!(
                "action={action} {} reply={} via={via}",
                describe(),
                quote(&reply.to_string())
            ),
            (_, Outcome::DryRun(Would::Reply(reply))) => info!(
                "action={action} {} would_reply={} via={via}",
                describe(),
                quote(&reply.to_string())
            ),
            (_, Outcome::DryRun(Would::Nothing)) => {
                info!("action={action} {} via={via}", describe())
            }
            (_, Outcome::DryRun(Would::Tag(value))) => info!(
                "action={action} {} would_tag={} reason=\"the MTA does not offer header changes\" via={via}",
                describe(),
                quote(&format!("{}: {value}", TagHeader::NAME))
            ),
            (_, Outcome::Tag(value)) => info!(
                "action={action} {} header={} via={via}",
                describe(),
                quote(&format!("{}: {value}", TagHeader::NAME))
            ),
        }
    }

    /// A DNS rule left undecided: `action=tempfail rule=unknown dns=timeout ...
    /// reply="451 4.4.3 ..."` or `action=accept rule=unknown dns=servfail ...`; at debug
    /// where the answer could have changed nothing (`DnsFallback::NoVerdict`).
    fn log_dns_failure(
        &self,
        rule: Rule,
        failure: Failure,
        fallback: DnsFallback,
        outcome: &Outcome,
    ) {
        let via = self.via.name();
        let described = self.describe(Some(rule), Some(failure));
        match (fallback, outcome) {
            (_, Outcome::Refuse(reply)) => info!(
                "action=tempfail {described} reply={} via={via}",
                quote(&reply.to_string())
            ),
            (DnsFallback::NoVerdict, _) => debug!("action=accept {described} via={via}"),
            _ => info!("action=accept {described} via={via}"),
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
    use crate::{config::Config, verdict::Exemption};

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
}
