//! The resolver against an in-memory `Lookup`: cache, bound, wait limit, counting.

use super::*;
use crate::dns::counters::LookupResult;
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

/// Answers from a table; a name starting `slow.` answers only once `gate` gives a permit
/// (or never); every call is counted.
struct Table {
    answers: HashMap<(String, RecordType), Fetched>,
    calls: AtomicUsize,
    gate: Semaphore,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            answers: HashMap::new(),
            calls: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        }
    }
}

impl Table {
    fn with(mut self, name: &str, record: RecordType, answer: Answer, ttl: u64) -> Self {
        let ttl = Duration::from_secs(ttl);
        self.answers
            .insert((name.to_string(), record), Fetched { answer, ttl });
        self
    }
}

impl Lookup for Table {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        record: RecordType,
        _timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Relaxed);
            if name.starts_with("slow.") {
                let _ = self.gate.acquire().await.map(|p| p.forget());
            }
            self.answers
                .get(&(name.to_string(), record))
                .cloned()
                .unwrap_or(Fetched {
                    answer: Answer::NxDomain,
                    ttl: Duration::from_secs(60),
                })
        })
    }
}

fn ip(s: &str) -> Answer {
    Answer::Addresses(vec![s.parse().unwrap()])
}

const LONG: Duration = Duration::from_secs(30);

fn resolver(table: &Arc<Table>, timeout: Duration, limits: Limits) -> (Resolver, Arc<DnsLookups>) {
    let counters = Arc::new(DnsLookups::default());
    let lookup: Arc<dyn Lookup> = table.clone();
    let resolver = Resolver::with_limits(lookup, timeout, counters.clone(), limits);
    (resolver, counters)
}

#[tokio::test]
async fn asks_three_questions_counts_them_and_answers_again_from_the_cache() {
    let table = Arc::new(
        Table::default()
            .with("mail.example", RecordType::A, ip("192.0.2.1"), 300)
            .with("mail.example", RecordType::Aaaa, Answer::NoData, 300)
            .with(
                "mail.example",
                RecordType::Mx,
                Answer::Exchanges(vec!["mx.example".into()]),
                300,
            ),
    );
    let (resolver, counters) = resolver(&table, LONG, Limits::default());
    let expected = HeloDns {
        a: ip("192.0.2.1"),
        aaaa: Answer::NoData,
        mx: Answer::Exchanges(vec!["mx.example".into()]),
    };
    let pending = resolver.start("mail.example");
    assert_eq!(pending.name(), "mail.example");
    assert_eq!(pending.wait(LONG).await, expected);
    assert!(pending.is_complete());
    assert_eq!(table.calls.load(Relaxed), 3);
    assert_eq!(counters.lookups(LookupResult::Ok), 2);
    assert_eq!(counters.lookups(LookupResult::NoData), 1);
    assert_eq!(counters.duration().count, 3);
    // Cached: no call, no lookup counted, complete at once.
    let again = resolver.start("mail.example");
    assert!(again.is_complete());
    assert_eq!(again.wait(LONG).await, expected);
    assert_eq!(table.calls.load(Relaxed), 3);
    assert_eq!(counters.duration().count, 3);
    // Another name is asked.
    let other = resolver.start("other.example").wait(LONG).await;
    assert_eq!(other.a, Answer::NxDomain);
    assert_eq!(table.calls.load(Relaxed), 6);
    assert_eq!(counters.lookups(LookupResult::NxDomain), 3);
}

#[tokio::test]
async fn failures_and_zero_ttls_are_asked_again() {
    let table = Arc::new(
        Table::default()
            .with(
                "x.example",
                RecordType::A,
                Answer::Failed(Failure::ServFail),
                300,
            )
            .with("x.example", RecordType::Aaaa, ip("2001:db8::1"), 0)
            .with("x.example", RecordType::Mx, Answer::NoData, 300),
    );
    let (resolver, counters) = resolver(&table, LONG, Limits::default());
    for round in 1..=2 {
        let dns = resolver.start("x.example").wait(LONG).await;
        assert_eq!(dns.a, Answer::Failed(Failure::ServFail));
        assert_eq!(dns.aaaa, ip("2001:db8::1"));
        // Round 1 asks all three, round 2 the two not kept.
        assert_eq!(table.calls.load(Relaxed), [3, 5][round - 1]);
    }
    assert_eq!(counters.lookups(LookupResult::ServFail), 2);
    assert_eq!(counters.lookups(LookupResult::Ok), 2);
    assert_eq!(counters.lookups(LookupResult::NoData), 1);
}

#[tokio::test]
async fn a_wait_ends_at_its_limit_with_the_unanswered_as_timeouts() {
    let table = Arc::new(Table::default());
    let (resolver, _) = resolver(&table, LONG, Limits::default());
    let pending = resolver.start("slow.example");
    let dns = tokio::time::timeout(LONG, pending.wait(Duration::from_millis(50)))
        .await
        .expect("wait gives up at its limit");
    let timeout = Answer::Failed(Failure::Timeout);
    assert_eq!(
        dns,
        HeloDns {
            a: timeout.clone(),
            aaaa: timeout.clone(),
            mx: timeout
        }
    );
    assert!(!pending.is_complete());
    // The lookups go on: once the server answers, a later wait gets the answers.
    table.gate.add_permits(3);
    assert_eq!(pending.wait(LONG).await.a, Answer::NxDomain);
}

#[tokio::test]
async fn a_lookup_that_outlasts_the_timeout_is_a_counted_timeout() {
    let table = Arc::new(Table::default());
    let (resolver, counters) = resolver(&table, Duration::from_millis(50), Limits::default());
    let dns = resolver.start("slow.example").wait(LONG).await;
    assert_eq!(dns.mx, Answer::Failed(Failure::Timeout));
    assert_eq!(counters.lookups(LookupResult::Timeout), 3);
    // Not kept: asked again.
    resolver.start("slow.example").wait(LONG).await;
    assert_eq!(table.calls.load(Relaxed), 6);
}

#[tokio::test]
async fn beyond_the_bound_in_flight_no_lookup_and_a_slow_name_holds_up_no_other() {
    let table = Arc::new(Table::default().with("fast.example", RecordType::A, ip("192.0.2.9"), 60));
    let limits = Limits {
        max_in_flight: 2,
        cache_entries: 100,
    };
    let (resolver, counters) = resolver(&table, LONG, limits);
    let slow = resolver.start("slow.example");
    // One slot left: another name is answered while the slow one waits.
    let fast = resolver.start("fast.example").wait(LONG).await;
    assert_eq!(fast.a, ip("192.0.2.9"));
    let slow_too = resolver.start("slow.other.example");
    let calls = table.calls.load(Relaxed);
    // Both slots taken: no lookup, timeouts at once, counted as dropped.
    let busy = resolver.start("third.example");
    assert!(busy.is_complete());
    let dns = busy.wait(LONG).await;
    assert_eq!(dns.a, Answer::Failed(Failure::Timeout));
    assert_eq!(counters.dropped_count(), 3);
    assert_eq!(table.calls.load(Relaxed), calls);
    // The slots come free when the lookups end.
    table.gate.add_permits(6);
    slow.wait(LONG).await;
    slow_too.wait(LONG).await;
    let dns = tokio::time::timeout(LONG, async {
        loop {
            let dns = resolver.start("third.example").wait(LONG).await;
            if dns.a == Answer::NxDomain {
                return dns;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a slot comes free");
    assert_eq!(dns.mx, Answer::NxDomain);
}
