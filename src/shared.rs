//! What every front end (the milter, the policy service) shares: the policy in force,
//! this host's name and the DNS resolver (replaced on reload), the counters, and the sessions in progress (which a stop waits
//! for, and which the counters hold per front end).

use crate::{
    config::DnsSettings,
    dns::Resolver,
    ruleset::RuleSet,
    stats::{FrontEnd, Stats},
};
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Shared {
    ruleset: RwLock<Arc<RuleSet>>,
    /// `host::Host::name`: an own name for the policy service.
    host_name: RwLock<Option<Arc<str>>>,
    /// The resolver of the DNS rules and the settings it was built with; none while no
    /// DNS rule is on.
    dns: RwLock<Option<(DnsSettings, Resolver)>>,
    pub stats: Stats,
}

impl Shared {
    pub fn new(ruleset: RuleSet) -> Self {
        Self {
            ruleset: RwLock::new(Arc::new(ruleset)),
            host_name: RwLock::new(None),
            dns: RwLock::new(None),
            stats: Stats::default(),
        }
    }

    /// Connections of either front end open and not yet closed: milter sessions and
    /// policy service connections.
    pub fn sessions(&self) -> usize {
        FrontEnd::ALL
            .iter()
            .map(|&via| self.stats.connections_open(via))
            .sum()
    }

    pub fn ruleset(&self) -> Arc<RuleSet> {
        // A poisoned lock still holds a complete rule set: the writer only swaps an Arc.
        self.ruleset
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_ruleset(&self, ruleset: RuleSet) {
        *self.ruleset.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ruleset);
    }

    pub fn host_name(&self) -> Option<Arc<str>> {
        self.host_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_host_name(&self, name: Option<String>) {
        *self.host_name.write().unwrap_or_else(|e| e.into_inner()) = name.map(Arc::from);
    }

    /// The resolver in force, when some DNS rule is on.
    pub fn resolver(&self) -> Option<Resolver> {
        self.dns_in_force().map(|(_, resolver)| resolver)
    }

    /// The resolver in force and the settings it was built with.
    pub fn dns_in_force(&self) -> Option<(DnsSettings, Resolver)> {
        self.dns.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_dns(&self, dns: Option<(DnsSettings, Resolver)>) {
        *self.dns.write().unwrap_or_else(|e| e.into_inner()) = dns;
    }
}

/// Counts a session of a front end as open (in `Shared::sessions` and the counters) for
/// as long as it lives, and once in the total.
pub struct LiveSession {
    shared: Arc<Shared>,
    via: FrontEnd,
}

impl LiveSession {
    pub fn new(shared: Arc<Shared>, via: FrontEnd) -> Self {
        shared.stats.connection_opened(via);
        Self { shared, via }
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.shared.stats.connection_closed(self.via);
    }
}
