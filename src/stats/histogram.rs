//! Histograms with fixed buckets, of atomics: the RCPT answer time, the DNS lookups'.

use std::{
    marker::PhantomData,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// The upper bounds of the RCPT answer time histogram's buckets, in nanoseconds (what is
/// compared on the mail path; views divide by 1e9): from what the milter takes with a small
/// rule set (tens of µs) to what would hold up the MTA.
pub const RCPT_ANSWER_BUCKETS: [u64; 13] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
];

/// How many bounds a histogram has (`Bounds::BOUNDS`).
pub const BUCKETS: usize = RCPT_ANSWER_BUCKETS.len();

/// The upper bounds of a histogram's buckets, in nanoseconds.
pub trait Bounds {
    const BOUNDS: [u64; BUCKETS];
}

/// The RCPT answer time's bounds.
#[derive(Debug, Default)]
pub struct RcptAnswer;

impl Bounds for RcptAnswer {
    const BOUNDS: [u64; BUCKETS] = RCPT_ANSWER_BUCKETS;
}

/// A histogram with fixed buckets (`B::BOUNDS`): one atomic add for the bucket and one
/// for the sum.
#[derive(Debug, Default)]
pub struct Histogram<B = RcptAnswer> {
    /// Per bucket (not cumulative), the last one for everything above the highest bound.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
    bounds: PhantomData<B>,
}

/// What a histogram held when it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bound: observations at most that long.
    pub cumulative: [u64; BUCKETS],
    pub count: u64,
    pub sum_seconds: f64,
}

impl<B: Bounds> Histogram<B> {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = B::BOUNDS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BUCKETS);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BUCKETS];
        let mut running = 0;
        for (i, slot) in cumulative.iter_mut().enumerate() {
            running += self.buckets[i].load(Relaxed);
            *slot = running;
        }
        let count = running + self.buckets[BUCKETS].load(Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}
