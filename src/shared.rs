//! What every front end (the milter, the policy service) shares: the policy in force
//! (replaced on reload), the counters, and the sessions in progress (which a stop waits
//! for, and which the counters hold per front end).

use crate::{
    policy::Policy,
    stats::{FrontEnd, Stats},
};
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Shared {
    policy: RwLock<Arc<Policy>>,
    pub stats: Stats,
}

impl Shared {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: RwLock::new(Arc::new(policy)),
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
