//! The messages that got the tag header, by Postfix's `instance` attribute, for the whole
//! process: Postfix may ask about one message's recipients over several connections
//! (`smtpd_policy_service_request_limit`, `_max_ttl`, `_max_idle`, or a reconnect after a
//! restart of the service), and the message must still get one header.
//!
//! No request says when a message is over, so the table forgets the oldest instance once
//! it holds `CAPACITY`. That only matters for a message still receiving recipients after
//! `CAPACITY` other messages were tagged: at a few thousand messages in progress at once
//! (Postfix's `default_process_limit` is 100) that leaves a wide margin, for at most
//! about 1 MiB (an instance is some 20 bytes, two copies and their bookkeeping).

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
};

/// The instances remembered: the most recently tagged messages.
pub(super) const CAPACITY: usize = 16_384;

#[derive(Debug, Default)]
pub(super) struct TaggedMessages {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    known: HashSet<Arc<str>>,
    /// Oldest first: the order to forget them in.
    order: VecDeque<Arc<str>>,
}

impl TaggedMessages {
    /// Whether `instance` gets the header now: the first time it is seen. An empty
    /// instance (no Postfix sends one) cannot be told from another message: every
    /// request with it gets the header, as the milter would give each message its own.
    pub(super) fn first(&self, instance: &str) -> bool {
        if instance.is_empty() {
            return true;
        }
        // A poisoned lock still holds a consistent table: nothing below can panic
        // between changing `known` and `order`.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.known.contains(instance) {
            return false;
        }
        if inner.order.len() >= CAPACITY {
            if let Some(oldest) = inner.order.pop_front() {
                inner.known.remove(&oldest);
            }
        }
        let instance: Arc<str> = instance.into();
        inner.known.insert(instance.clone());
        inner.order.push_back(instance);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_instance_and_bounded() {
        let table = TaggedMessages::default();
        assert!(table.first("a.1"));
        assert!(!table.first("a.1"));
        assert!(table.first("a.2"));
        assert!(table.first(""));
        assert!(table.first(""));
        for n in 0..CAPACITY - 2 {
            assert!(table.first(&format!("b.{n}")));
        }
        // Full: one more forgets "a.1", the oldest, and only it.
        assert!(!table.first("a.1"));
        assert!(table.first("c.0"));
        assert!(!table.first("a.2"));
        assert!(!table.first("b.0"));
        assert!(table.first("a.1"));
        assert_eq!(table.inner.lock().unwrap().order.len(), CAPACITY);
        assert_eq!(table.inner.lock().unwrap().known.len(), CAPACITY);
    }
}
