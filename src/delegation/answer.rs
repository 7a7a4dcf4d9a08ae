//! Answering a complete request: the facts its attributes give, judged (`judgement`), and
//! the outcome as the `action=...` answer Postfix reads.

use super::{request::Request, Service};
use crate::{
    dns::{
        session::{self as dns_session, Recent},
        HeloDns,
    },
    helo::{parse_macro_ip, Helo},
    judgement::{Facts, Outcome},
    recipient::Recipient,
    stats::FrontEnd,
    verdict::{Connection, TagHeader},
};
use std::borrow::Cow;

/// The answer to everything this service has no opinion on: Postfix goes on with the
/// next restriction.
const DUNNO: &[u8] = b"action=DUNNO\n\n";

impl Service {
    /// The DNS answers about the HELO name for a RCPT request, when some DNS rule is on:
    /// the lookups that this connection started for the same message and name, or new
    /// ones, waited for up to `dns_timeout`. An authenticated client that
    /// `skip_authenticated` exempts causes none.
    pub(super) async fn dns_for(&self, request: &Request, recent: &mut Recent) -> Option<HeloDns> {
        let at_rcpt = request.request == "smtpd_access_policy"
            && request.protocol_state.eq_ignore_ascii_case("RCPT");
        if !at_rcpt {
            return None;
        }
        let ruleset = self.shared.ruleset();
        // With the DNS rules off (the usual case) the facts are not gathered twice a RCPT.
        if !ruleset.needs_dns() {
            return None;
        }
        let conn = self.connection_facts(request);
        let name = dns_session::name_to_ask(&ruleset, &conn)?;
        if !dns_session::waits(&ruleset, &conn) {
            return None;
        }
        let resolver = self.shared.resolver()?;
        let asked = recent.get_or_start(&resolver, &request.instance, name);
        Some(asked.answers().await)
    }

    /// The answer to a complete request: a decision at RCPT, `DUNNO` to anything else;
    /// `dns` the answers about the HELO name (`dns_for`).
    pub(super) fn answer(&self, request: &Request, dns: Option<HeloDns>) -> Cow<'static, [u8]> {
        if self.misplaced(request) {
            return Cow::Borrowed(DUNNO);
        }
        // Per request: a reload applies from the next request on, also on the long-lived
        // connections that Postfix keeps open.
        let ruleset = self.shared.ruleset();
        let mut conn = self.connection_facts(request);
        conn.dns = dns;
        let rcpt = Recipient::parse(&request.recipient);
        let facts = Facts {
            ruleset: &ruleset,
            conn: &conn,
            rcpt: &rcpt,
            via: FrontEnd::PolicyService,
            helo_text: &request.helo_name,
            queue_id: Some(&request.queue_id),
            can_tag: true,
        };
        match facts.judge(&self.shared.stats).outcome {
            Outcome::Accept | Outcome::DryRun(_) => Cow::Borrowed(DUNNO),
            Outcome::Refuse(reply) => Cow::Owned(format!("action={reply}\n\n").into_bytes()),
            // One header per message, as the milter adds it.
            Outcome::Tag(_) if !self.tagged.first(&request.instance) => Cow::Borrowed(DUNNO),
            Outcome::Tag(value) => {
                let value = match ruleset.tag_key() {
                    Some(key) => with_key(value, key),
                    None => value,
                };
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
            dns: None,
        };
        if let Some(ip) = parse_macro_ip(&request.server_address) {
            conn.add_local(ip);
        }
        conn
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
