//! The counters of the DNS lookups about HELO names: per result and their latency, and
//! the lookups not made for want of room (`Resolver`'s bound on lookups in flight). Part
//! of `stats::Stats`, which the statistics line and the metrics read.

use super::{Answer, Failure};
use crate::stats::{Bounds, Histogram, HistogramSnapshot, Key, PerKey, BUCKETS};
use std::{
    fmt::{self, Display, Formatter},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// What a lookup (one question to a server) came back with, in counter order.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum LookupResult {
    /// Records of the type asked.
    Ok,
    NxDomain,
    NoData,
    /// SERVFAIL, REFUSED, a malformed answer or no server to ask.
    ServFail,
    Timeout,
}

impl LookupResult {
    pub const ALL: [Self; 5] = [
        Self::Ok,
        Self::NxDomain,
        Self::NoData,
        Self::ServFail,
        Self::Timeout,
    ];

    /// Its name in the statistics line and the metrics' `result` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NxDomain => "nxdomain",
            Self::NoData => "nodata",
            Self::ServFail => "servfail",
            Self::Timeout => "timeout",
        }
    }

    pub fn of(answer: &Answer) -> Self {
        match answer {
            Answer::Addresses(_) | Answer::Exchanges(_) => Self::Ok,
            Answer::NxDomain => Self::NxDomain,
            Answer::NoData => Self::NoData,
            Answer::Failed(Failure::ServFail) => Self::ServFail,
            Answer::Failed(Failure::Timeout) => Self::Timeout,
        }
    }
}

impl Key for LookupResult {
    const ALL: &'static [Self] = &Self::ALL;

    fn index(self) -> usize {
        match self {
            Self::Ok => 0,
            Self::NxDomain => 1,
            Self::NoData => 2,
            Self::ServFail => 3,
            Self::Timeout => 4,
        }
    }
}

/// The lookup latency's bucket bounds, in nanoseconds: from a local cache's answer
/// (1 ms) to past the longest `dns_timeout`.
#[derive(Debug, Default)]
pub struct LookupTime;

impl Bounds for LookupTime {
    const BOUNDS: [u64; BUCKETS] = [
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        10_000_000_000,
    ];
}

/// The lookups made (a cache hit is none) and those dropped.
#[derive(Debug, Default)]
pub struct DnsLookups {
    results: PerKey<LookupResult, AtomicU64, { LookupResult::ALL.len() }>,
    duration: Histogram<LookupTime>,
    /// Questions left unasked: the bound on lookups in flight was reached.
    dropped: AtomicU64,
}

impl DnsLookups {
    /// A lookup came back with `answer` after `took`.
    pub fn looked_up(&self, answer: &Answer, took: Duration) {
        self.results[LookupResult::of(answer)].fetch_add(1, Relaxed);
        self.duration.observe(took);
    }

    /// A question left unasked for want of room.
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    pub fn lookups(&self, result: LookupResult) -> u64 {
        self.results[result].load(Relaxed)
    }

    pub fn duration(&self) -> HistogramSnapshot {
        self.duration.snapshot()
    }

    pub fn dropped_count(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// `dns_lookups_ok=3 dns_lookups_nxdomain=0 ... dns_lookups_dropped=0`.
impl Display for DnsLookups {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for result in LookupResult::ALL {
            write!(f, "dns_lookups_{}={} ", result.name(), self.lookups(result))?;
        }
        write!(f, "dns_lookups_dropped={}", self.dropped_count())
    }
}
