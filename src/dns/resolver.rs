//! The machinery both front ends call to ask DNS about a HELO name: `Resolver::start`
//! asks A, AAAA and MX at once in a task of their own (through the cache, within a bound
//! on lookups in flight), and the `Pending` it returns is waited on at RCPT for no longer
//! than a limit. A slow server holds up only the sessions that wait on it, each for at
//! most that limit.

use super::{
    cache::Cache, counters::DnsLookups, Answer, Failure, Fetched, HeloDns, Lookup, RecordType,
};
use log::{debug, warn};
use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::{watch, Semaphore};

/// Names looked up at once, by default; beyond it a name gets no lookup and its
/// questions read `Failed(Timeout)` (a DNS failure: mail goes through).
pub const MAX_IN_FLIGHT: usize = 256;

/// How often at most the "no room for another lookup" warning is logged.
const BUSY_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds of a `Resolver`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Names whose lookups may be under way at once.
    pub max_in_flight: usize,
    /// Answers kept in the cache.
    pub cache_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: MAX_IN_FLIGHT,
            cache_entries: super::cache::MAX_ENTRIES,
        }
    }
}

/// Asks DNS about HELO names; cheap to clone (one cache and one bound for all clones).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    lookup: Arc<dyn Lookup>,
    timeout: Duration,
    counters: Arc<DnsLookups>,
    cache: Cache,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    last_busy_warning: Mutex<Option<Instant>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("timeout", &self.inner.timeout)
            .field("max_in_flight", &self.inner.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// The three answers as they arrive, in `RecordType::ALL`'s order.
type Progress = [Option<Answer>; 3];

/// The lookups about one name, started: cheap to clone, waited on by `wait`.
#[derive(Clone, Debug)]
pub struct Pending {
    name: Arc<str>,
    answers: watch::Receiver<Progress>,
}

impl Resolver {
    /// A resolver asking `lookup`, each question for at most `timeout`, counting its
    /// lookups in `counters` (`Stats::dns`), with the default `Limits`.
    pub fn new(lookup: Arc<dyn Lookup>, timeout: Duration, counters: Arc<DnsLookups>) -> Self {
        Self::with_limits(lookup, timeout, counters, Limits::default())
    }

    pub fn with_limits(
        lookup: Arc<dyn Lookup>,
        timeout: Duration,
        counters: Arc<DnsLookups>,
        limits: Limits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                lookup,
                timeout,
                counters,
                cache: Cache::with_capacity(limits.cache_entries),
                slots: Arc::new(Semaphore::new(limits.max_in_flight)),
                max_in_flight: limits.max_in_flight,
                last_busy_warning: Mutex::new(None),
            }),
        }
    }

    /// How long a question may take (`dns_timeout`): also how long a RCPT waits.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Starts asking A, AAAA and MX of `name` (a HELO name in the form of
    /// `domain::normalize`, asked as fully qualified), answering from the cache what it
    /// can. Must be called within a Tokio runtime: the lookups run in a task of their own.
    pub fn start(&self, name: &str) -> Pending {
        let now = Instant::now();
        let cached: Progress =
            RecordType::ALL.map(|record| self.inner.cache.get(name, record, now));
        let name: Arc<str> = Arc::from(name);
        if cached.iter().all(Option::is_some) {
            return Pending::answered(name, cached);
        }
        let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
            return self.busy(name, cached);
        };
        let (tx, answers) = watch::channel(cached.clone());
        let inner = self.inner.clone();
        let task_name = name.clone();
        tokio::spawn(async move {
            let ask = |i: usize| {
                let (inner, name, tx, cached) = (&inner, &task_name, &tx, &cached);
                async move {
                    if cached[i].is_none() {
                        let answer = inner.ask(name, RecordType::ALL[i]).await;
                        tx.send_modify(|progress| progress[i] = Some(answer));
                    }
                }
            };
            tokio::join!(ask(0), ask(1), ask(2));
            drop(permit);
        });
        Pending { name, answers }
    }

    /// No room for another lookup: the questions not in the cache are not asked.
    fn busy(&self, name: Arc<str>, mut answers: Progress) -> Pending {
        for answer in answers.iter_mut().filter(|a| a.is_none()) {
            self.inner.counters.dropped();
            *answer = Some(Answer::Failed(Failure::Timeout));
        }
        let mut last = self
            .inner
            .last_busy_warning
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= BUSY_WARNING_INTERVAL) {
            warn!(
                "event=dns_limit max_in_flight={} lookup=skipped answer=timeout counter=dns_lookups_dropped reason=\"as many HELO names are being looked up already; logged at most every 10s\"",
                self.inner.max_in_flight
            );
            *last = Some(Instant::now());
        }
        Pending::answered(name, answers)
    }
}

impl Inner {
    /// One question to the server (a cache miss), counted and its answer kept.
    async fn ask(&self, name: &str, record: RecordType) -> Answer {
        let started = Instant::now();
        // The lookup should give up by itself; this holds it to it.
        let asked = self.lookup.lookup(name, record, self.timeout);
        let fetched = tokio::time::timeout(self.timeout, asked)
            .await
            .unwrap_or(Fetched {
                answer: Answer::Failed(Failure::Timeout),
                ttl: Duration::ZERO,
            });
        let took = started.elapsed();
        self.counters.looked_up(&fetched.answer, took);
        debug!(
            "event=dns_lookup name={name} type={} answer={:?} ttl={} took_ms={}",
            record.name(),
            format!("{:?}", fetched.answer),
            fetched.ttl.as_secs(),
            took.as_millis()
        );
        let answer = fetched.answer.clone();
        self.cache
            .insert(name, record, fetched.answer, fetched.ttl, Instant::now());
        answer
    }
}

impl Pending {
    /// Lookups already complete (from the cache, or never made).
    fn answered(name: Arc<str>, answers: Progress) -> Self {
        let (_, answers) = watch::channel(answers);
        Self { name, answers }
    }

    /// The name asked about.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The answers once all three are in, or after `limit` those that are: a question
    /// still unanswered then reads `Failed(Timeout)`.
    pub async fn wait(&self, limit: Duration) -> HeloDns {
        let mut answers = self.answers.clone();
        let complete = |p: &Progress| p.iter().all(Option::is_some);
        // Closed (the task is gone) or late: what is there is all there is.
        let _ = tokio::time::timeout(limit, answers.wait_for(complete)).await;
        let progress = answers.borrow().clone();
        let [a, aaaa, mx] =
            progress.map(|answer| answer.unwrap_or(Answer::Failed(Failure::Timeout)));
        HeloDns { a, aaaa, mx }
    }

    /// Whether all three answers are in.
    pub fn is_complete(&self) -> bool {
        self.answers.borrow().iter().all(Option::is_some)
    }
}

#[cfg(test)]
#[path = "resolver_tests.rs"]
mod tests;
