//! Answering a complete request: the decision on the facts its attributes give, the log
//! line, and the `action=...` answer Postfix reads.

use super::{request::Request, Service};
use crate::{
    helo::{parse_macro_ip, Helo},
    logging::quote,
    policy::Policy,
    recipient::Recipient,
    stats::FrontEnd,
    verdict::{decide, Connection, Reply, TagHeader, Verdict},
};
use log::{debug, info};
use std::borrow::Cow;

/// The answer to everything this service has no opinion on: Postfix goes on with the
/// next restriction.
const DUNNO: &[u8] = b"action=DUNNO\n\n";

/// What a request is answered, besides the log line.
enum Answer {
    Dunno,
    Refuse(Reply),
    /// `PREPEND` the tag header with this value, once per message.
    Tag(String),
}

impl Service {
    /// The answer to a complete request: a decision at RCPT, `DUNNO` to anything else.
    pub(super) fn answer(&self, request: &Request) -> Cow<'static, [u8]> {
        if self.misplaced(request) {
            return Cow::Borrowed(DUNNO);
        }
        // Per request: a reload applies from the next request on, also on the long-lived
        // connections that Postfix keeps open.
        let policy = self.shared.policy();
        let conn = self.connection_facts(request);
        let rcpt = Recipient::parse(&request.recipient);
        let verdict = decide(&policy, &conn, &rcpt);
        self.shared.stats.count(FrontEnd::Policy, &verdict);
        match self.act(&policy, &conn, request, &rcpt, &verdict) {
            Answer::Dunno => Cow::Borrowed(DUNNO),
            Answer::Refuse(reply) => Cow::Owned(format!("action={reply}\n\n").into_bytes()),
            // One header per message, as the milter adds it: the rule is the HELO's, the
            // same for every recipient it matches.
            Answer::Tag(_) if !self.tagged.first(&request.instance) => Cow::Borrowed(DUNNO),
            Answer::Tag(value) => {
                Cow::Owned(format!("action=PREPEND {}: {value}\n\n", TagHeader::NAME).into_bytes())
            }
        }
    }

    /// What the milter gathers from macros and callbacks, from the attributes.
    fn connection_facts(&self, request: &Request) -> Connection {
        let mut conn = Connection {
            // Postfix sends an empty helo_name when the client did not greet.
            helo: (!request.helo_name.is_empty()).then(|| Helo::parse(&request.helo_name)),
            client: parse_macro_ip(&request.client_address).map(|ip| ip.to_canonical()),
            local: Vec::new(),
            server_name: self.shared.host_name().map(|name| name.to_string()),
            authenticated: !request.sasl_username.is_empty(),
        };
        if let Some(ip) = parse_macro_ip(&request.server_address) {
            conn.add_local(ip);
        }
        conn
    }

    /// Logs the verdict as the milter does (`via=policy`); what to answer.
    fn act(
        &self,
        policy: &Policy,
        conn: &Connection,
        request: &Request,
        rcpt: &Recipient<'_>,
        verdict: &Verdict,
    ) -> Answer {
        let describe = || {
            let client = conn
                .client
                .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            let queue_id = match request.queue_id.as_str() {
                "" => String::new(),
                id => format!(" queue_id={}", quote(id)),
            };
            format!(
                "rule={} client={client} helo={} rcpt={}{queue_id}",
                verdict.rule().map_or("none", |r| r.name()),
                quote(&request.helo_name),
                quote(rcpt.address),
            )
        };
        let action = match *verdict {
            Verdict::Pass => return Answer::Dunno,
            Verdict::Exempt(_, exemption) => {
                debug!(
                    "action=accept exempt={} {} via=policy",
                    exemption.name(),
                    describe()
                );
                return Answer::Dunno;
            }
            Verdict::Tag(rule) => {
                let value = TagHeader::value(rule, &request.helo_name, conn.client);
                info!(
                    "action=tag {} header={} via=policy",
                    describe(),
                    quote(&format!("{}: {value}", TagHeader::NAME))
                );
                return Answer::Tag(match &policy.tag_key {
                    Some(key) => with_key(value, key),
                    None => value,
                });
            }
            Verdict::Log(_) => "log",
            Verdict::Reject(_) => "reject",
            Verdict::Tempfail(_) => "tempfail",
        };
        let Some(reply) = Reply::for_verdict(verdict, policy) else {
            return Answer::Dunno;
        };
        if matches!(verdict, Verdict::Log(_)) {
            info!(
                "action={action} {} would_reply={} via=policy",
                describe(),
                quote(&reply.to_string())
            );
            return Answer::Dunno;
        }
        info!(
            "action={action} {} reply={} via=policy",
            describe(),
            quote(&reply.to_string())
        );
        Answer::Refuse(reply)
    }
}

/// Where Postfix's cleanup stops quoting a header it logs (`%.200s` in
/// cleanup_act_log: its `replace: header ...` line).
const POSTFIX_LOGGED_CHARS: usize = 200;

/// The tag header's value with `tag_key` at its end, for README's `header_checks` map to
/// keep this header (without the key) and drop forged ones. The key starts past what
/// Postfix logs of the header it replaces, so that it never reaches the mail log.
fn with_key(value: String, key: &str) -> String {
    let header_len = TagHeader::NAME.len() + 2 + value.len();
    let pad = POSTFIX_LOGGED_CHARS.saturating_sub(header_len);
    format!("{value}{} key={key}", " ".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_starts_past_what_postfix_logs() {
        for value in ["rule=ip".to_string(), "x".repeat(300)] {
            let header = format!("{}: {}", TagHeader::NAME, with_key(value.clone(), "K"));
            let key_at = header.rfind(" key=K").unwrap();
            assert!(key_at >= POSTFIX_LOGGED_CHARS, "{header:?}");
            assert!(header.ends_with(" key=K"));
            assert_eq!(
                header[..key_at].trim_end(),
                format!("X-Bogus-HELO: {value}")
            );
        }
    }
}
