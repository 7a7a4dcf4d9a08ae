//! What every front end (the milter, the policy service) shares: the policy in force
//! and this host's name (both replaced on reload), the counters, and the sessions in progress (which a stop waits
//! for, and which the counters hold per front end).

use crate::{
    policy::Policy,
    stats::{FrontEnd, Stats},
};
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Shared {
    policy: RwLock<Arc<Policy>>,
    /// `host::Host::name`: an own name for the policy service.
    host_name: RwLock<Option<Arc<str>>>,
    pub stats: Stats,
}

impl Shared {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: RwLock::new(Arc::new(policy)),
            host_name: RwLock::new(None),
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

    pub fn policy(&self) -> Arc<Policy> {
        // A poisoned lock still holds a complete policy: the writer only swaps an Arc.
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
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
