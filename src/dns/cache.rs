//! The answers about HELO names kept within their TTL: bounded in entries, the TTL capped,
//! failures never kept (the next session asks again).

use super::{Answer, RecordType};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Entries kept at most (one per name and record type).
pub const MAX_ENTRIES: usize = 10_000;
/// The longest an answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct Cache {
    entries: Mutex<HashMap<(String, RecordType), Entry>>,
    capacity: usize,
}

#[derive(Debug)]
struct Entry {
    answer: Answer,
    expires: Instant,
}

impl Default for Cache {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl Cache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The answer kept for `name` and `record`, if it has not expired at `now`.
    pub fn get(&self, name: &str, record: RecordType, now: Instant) -> Option<Answer> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), record);
        match entries.get(&key) {
            Some(entry) if entry.expires > now => Some(entry.answer.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `answer` for `ttl` (at most `MAX_TTL`) from `now`; a failure or a zero TTL is
    /// not kept. When full: the expired entries go, and if none had, the one that
    /// expires first.
    pub fn insert(
        &self,
        name: &str,
        record: RecordType,
        answer: Answer,
        ttl: Duration,
        now: Instant,
    ) {
        if matches!(answer, Answer::Failed(_)) || ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), record);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.capacity {
                let first = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(key, _)| key.clone());
                if let Some(first) = first {
                    entries.remove(&first);
                }
            }
        }
        let expires = now + ttl.min(MAX_TTL);
        entries.insert(key, Entry { answer, expires });
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Failure;

    fn a(ip: &str) -> Answer {
        Answer::Addresses(vec![ip.parse().unwrap()])
    }

    #[test]
    fn kept_within_the_ttl_only() {
        let cache = Cache::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        cache.insert("x.example", RecordType::A, a("192.0.2.1"), 10 * s, t0);
        cache.insert("x.example", RecordType::Mx, Answer::NoData, 2 * s, t0);
        assert_eq!(
            cache.get("x.example", RecordType::A, t0 + 9 * s),
            Some(a("192.0.2.1"))
        );
        assert_eq!(
            cache.get("x.example", RecordType::Mx, t0 + s),
            Some(Answer::NoData)
        );
        assert_eq!(cache.get("x.example", RecordType::Mx, t0 + 2 * s), None);
        assert_eq!(cache.get("x.example", RecordType::Aaaa, t0), None);
        assert_eq!(cache.get("y.example", RecordType::A, t0), None);
        assert_eq!(cache.get("x.example", RecordType::A, t0 + 10 * s), None);
    }

    #[test]
    fn failures_and_zero_ttls_are_not_kept_and_ttls_are_capped() {
        let cache = Cache::default();
        let t0 = Instant::now();
        let day = Duration::from_secs(86_400);
        for failure in [Failure::ServFail, Failure::Timeout] {
            cache.insert("x.example", RecordType::A, Answer::Failed(failure), day, t0);
        }
        cache.insert(
            "x.example",
            RecordType::Aaaa,
            Answer::NxDomain,
            Duration::ZERO,
            t0,
        );
        assert!(cache.is_empty());
        cache.insert("x.example", RecordType::Mx, Answer::NxDomain, day, t0);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            cache.get(
                "x.example",
                RecordType::Mx,
                t0 + hour - Duration::from_secs(1)
            ),
            Some(Answer::NxDomain)
        );
        assert_eq!(cache.get("x.example", RecordType::Mx, t0 + hour), None);
    }

    #[test]
    fn bounded_in_entries_the_first_to_expire_goes() {
        let cache = Cache::with_capacity(2);
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        cache.insert("long.example", RecordType::A, a("192.0.2.1"), 100 * s, t0);
        cache.insert("soon.example", RecordType::A, a("192.0.2.2"), 10 * s, t0);
        cache.insert("new.example", RecordType::A, a("192.0.2.3"), 50 * s, t0);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("soon.example", RecordType::A, t0), None);
        assert!(cache.get("long.example", RecordType::A, t0).is_some());
        assert!(cache.get("new.example", RecordType::A, t0).is_some());
        // Expired entries go first, whatever expires soonest among the rest.
        cache.insert(
            "later.example",
            RecordType::A,
            a("192.0.2.4"),
            5 * s,
            t0 + 60 * s,
        );
        assert_eq!(cache.len(), 2);
        assert!(cache
            .get("long.example", RecordType::A, t0 + 60 * s)
            .is_some());
        assert!(cache
            .get("later.example", RecordType::A, t0 + 60 * s)
            .is_some());
    }
}
