//! What both front ends do about DNS in a session: whether its HELO is asked about
//! (`name_to_ask`), whether a RCPT waits for the answers (`waits`), and the lookups of a
//! name kept for the session's RCPTs (`Asked`; the policy service keeps a few per
//! connection, `Recent`).

use super::{HeloDns, Pending, Resolver};
use crate::{
    domain::{self, HostName},
    helo::Helo,
    ruleset::RuleSet,
    verdict::Connection,
};
use std::{collections::VecDeque, time::Duration};

/// The name DNS is asked about for a session with these facts: none while no DNS rule is
/// on, for a trusted client, or for a HELO that is no fully qualified host name (an
/// address or address literal never causes a lookup, nor does a name the rules
/// `invalid` and `non-fqdn` judge).
pub fn name_to_ask<'a>(ruleset: &RuleSet, conn: &'a Connection) -> Option<&'a str> {
    if !ruleset.needs_dns() || conn.client.is_some_and(|ip| ruleset.is_trusted(ip)) {
        return None;
    }
    conn.helo.as_ref().and_then(qualified_name)
}

/// The HELO's name when it is a fully qualified host name: the only HELO asked about.
pub fn qualified_name(helo: &Helo) -> Option<&str> {
    match helo {
        Helo::Name(name) if domain::host_name(name) == HostName::Qualified => Some(name),
        _ => None,
    }
}

/// Whether a RCPT waits for DNS answers: an authenticated client that
/// `skip_authenticated` exempts never does.
pub fn waits(ruleset: &RuleSet, conn: &Connection) -> bool {
    !(conn.authenticated && ruleset.skip_authenticated())
}

/// The lookups about one HELO name in a session, and how long a RCPT waits for them.
#[derive(Clone, Debug)]
pub struct Asked {
    pending: Pending,
    limit: Duration,
    /// The answers once all three were in: later RCPTs do not wait.
    kept: Option<HeloDns>,
}

impl Asked {
    /// Starts the lookups of `name`; a RCPT waits for them for up to the resolver's timeout.
    pub fn start(resolver: &Resolver, name: &str) -> Self {
        Self {
            pending: resolver.start(name),
            limit: resolver.timeout(),
            kept: None,
        }
    }

    pub fn name(&self) -> &str {
        self.pending.name()
    }

    /// The answers for a RCPT: those kept, or what is there after waiting up to the limit.
    pub async fn answers(&mut self) -> HeloDns {
        if let Some(kept) = &self.kept {
            return kept.clone();
        }
        let mut dns = self.pending.wait(self.limit).await;
        if self.pending.is_complete() {
            // The last answer may have come in after the wait ended: read them all.
            dns = self.pending.wait(Duration::ZERO).await;
            self.kept = Some(dns.clone());
        }
        dns
    }
}

/// The lookups a policy connection started, by message (`instance`) and name: the
/// second RCPT of a message finds its first's. Postfix sends one session's requests in a
/// row on a connection, so a few are plenty.
#[derive(Debug, Default)]
pub struct Recent {
    entries: VecDeque<(String, Asked)>,
}

/// Lookups a policy connection keeps.
const RECENT: usize = 4;

impl Recent {
    /// The lookups of `name` for the message `instance`: those started already, or new
    /// ones from `resolver`.
    pub fn get_or_start(&mut self, resolver: &Resolver, instance: &str, name: &str) -> &mut Asked {
        let found = self
            .entries
            .iter()
            .position(|(i, asked)| i == instance && asked.name() == name);
        let index = match found {
            Some(index) => index,
            None => {
                if self.entries.len() >= RECENT {
                    self.entries.pop_front();
                }
                let asked = Asked::start(resolver, name);
                self.entries.push_back((instance.to_string(), asked));
                self.entries.len() - 1
            }
        };
        &mut self.entries[index].1
    }
}
