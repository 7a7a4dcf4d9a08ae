//! What every front end (the milter, the policy service) shares: the policy in force
//! (replaced on reload), the counters, and the sessions in progress (which a stop waits
//! for).

use crate::{policy::Policy, stats::Stats};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, RwLock,
};

#[derive(Debug)]
pub struct Shared {
    policy: RwLock<Arc<Policy>>,
    pub stats: Stats,
    sessions: AtomicUsize,
}

impl Shared {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: RwLock::new(Arc::new(policy)),
            stats: Stats::default(),
            sessions: AtomicUsize::new(0),
        }
    }

    /// Connections of either front end open and not yet closed: milter sessions and
    /// policy service connections.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
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

/// Counts a session in `Shared::sessions` for as long as it lives.
pub struct LiveSession(Arc<Shared>);

impl LiveSession {
    pub fn new(shared: Arc<Shared>) -> Self {
        shared.sessions.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}
