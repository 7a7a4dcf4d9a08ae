//! The counters: the one source that every view reads (the `event=stats` line logged on
//! SIGUSR1 and every `stats_interval`, and the metrics endpoint, `metrics`).
//!
//! Everything here is a relaxed atomic, written on the mail path without a lock or an
//! allocation; a view reads them when it is asked, so no view can drift from another.

mod histogram;
mod keys;

pub use histogram::{
    Bounds, Histogram, HistogramSnapshot, RcptAnswer, BUCKETS, RCPT_ANSWER_BUCKETS,
};
use keys::PerFrontEnd;
pub use keys::{FrontEnd, Key, Outcome, PerKey, SessionError};

use crate::{
    dns::counters::DnsLookups,
    ruleset::RuleKind,
    verdict::{DnsFallback, Exemption, Verdict},
};
use std::{
    fmt::{self, Display, Formatter},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Per front end, since start: recipients per outcome and rule and per exemption, the
/// time to answer a RCPT, connections, sessions closed on an error; and the
/// configuration's loads.
#[derive(Debug, Default)]
pub struct Stats {
    matched: PerFrontEnd<PerOutcome<PerRule<AtomicU64>>>,
    exempted: PerFrontEnd<PerKey<Exemption, AtomicU64, { Exemption::ALL.len() }>>,
    rcpt_answer: PerFrontEnd<Histogram>,
    connections_total: PerFrontEnd<AtomicU64>,
    connections_open: PerFrontEnd<AtomicUsize>,
    /// `max_connections` of each front end that runs; 0 for one that is off.
    connections_max: PerFrontEnd<AtomicUsize>,
    /// Connections that waited for a slot, `max_connections` being reached.
    connection_waits: PerFrontEnd<AtomicU64>,
    session_errors: PerFrontEnd<PerKey<SessionError, AtomicU64, { SessionError::ALL.len() }>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Unix time in milliseconds of the last successful load; 0 before the first.
    last_load_millis: AtomicU64,
    /// The last reload failed: the file on disk would not load, and a restart would fail
    /// too. Cleared by the next successful one.
    last_reload_failed: AtomicBool,
    headers: HeaderCounters,
    /// The DNS lookups about HELO names, shared with the resolver that makes them.
    dns: Arc<DnsLookups>,
    /// Recipients whose DNS rule a temporary DNS failure left undecided, by what they got.
    dns_failures: PerFrontEnd<PerKey<DnsFallback, AtomicU64, { DnsFallback::ALL.len() }>>,
}

/// What the milter did to headers besides tagging, per front end (only the milter can).
#[derive(Debug, Default)]
struct HeaderCounters {
    /// Incoming headers of our name removed.
    forged_removed: PerFrontEnd<AtomicU64>,
    /// Sessions in which some setting tags but the MTA offered no header changes.
    tag_unavailable: PerFrontEnd<AtomicU64>,
}

type PerOutcome<T> = PerKey<Outcome, T, { Outcome::ALL.len() }>;
type PerRule<T> = PerKey<RuleKind, T, { RuleKind::ALL.len() }>;

impl Stats {
    pub fn count(&self, via: FrontEnd, verdict: &Verdict) {
        let matched = &self.matched[via];
        let counter = match verdict {
            Verdict::Pass => return,
            Verdict::Exempt(_, exemption) => &self.exempted[via][*exemption],
            Verdict::Reject(rule) => &matched[Outcome::Rejected][rule.kind()],
            Verdict::Tempfail(rule) => &matched[Outcome::Tempfailed][rule.kind()],
            Verdict::Log(rule) => &matched[Outcome::Logged][rule.kind()],
            Verdict::Tag(rule) => &matched[Outcome::Tagged][rule.kind()],
            Verdict::DnsFailure(_, _, fallback) => &self.dns_failures[via][*fallback],
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Recipients with this outcome and rule.
    pub fn matched(&self, via: FrontEnd, outcome: Outcome, rule: RuleKind) -> u64 {
        self.matched[via][outcome][rule].load(Relaxed)
    }

    pub fn exempted(&self, via: FrontEnd, exemption: Exemption) -> u64 {
        self.exempted[via][exemption].load(Relaxed)
    }

    /// Recipients whose DNS rule a DNS failure left undecided, that got `fallback`.
    pub fn dns_failures(&self, via: FrontEnd, fallback: DnsFallback) -> u64 {
        self.dns_failures[via][fallback].load(Relaxed)
    }

    /// The time from a RCPT's arrival (`since`) to its answer, now.
    pub fn answered(&self, via: FrontEnd, since: std::time::Instant) {
        self.answer_took(via, since.elapsed());
    }

    pub fn answer_took(&self, via: FrontEnd, elapsed: Duration) {
        self.rcpt_answer[via].observe(elapsed);
    }

    pub fn rcpt_answer(&self, via: FrontEnd) -> HistogramSnapshot {
        self.rcpt_answer[via].snapshot()
    }

    /// A connection opened; `connection_closed` must follow (`shared::LiveSession`).
    pub fn connection_opened(&self, via: FrontEnd) {
        self.connections_total[via].fetch_add(1, Relaxed);
        self.connections_open[via].fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self, via: FrontEnd) {
        self.connections_open[via].fetch_sub(1, Relaxed);
    }

    pub fn connections_total(&self, via: FrontEnd) -> u64 {
        self.connections_total[via].load(Relaxed)
    }

    pub fn connections_open(&self, via: FrontEnd) -> usize {
        self.connections_open[via].load(Relaxed)
    }

    /// The front end runs, with this `max_connections`.
    pub fn set_connections_max(&self, via: FrontEnd, max: usize) {
        self.connections_max[via].store(max, Relaxed);
    }

    /// `max_connections` of the front end; `None` when it is off.
    pub fn connections_max(&self, via: FrontEnd) -> Option<usize> {
        Some(self.connections_max[via].load(Relaxed)).filter(|&n| n > 0)
    }

    /// A connection was accepted after waiting for a slot.
    pub fn connection_waited(&self, via: FrontEnd) {
        self.connection_waits[via].fetch_add(1, Relaxed);
    }

    pub fn connection_waits(&self, via: FrontEnd) -> u64 {
        self.connection_waits[via].load(Relaxed)
    }

    pub fn session_error(&self, via: FrontEnd, reason: SessionError) {
        self.session_errors[via][reason].fetch_add(1, Relaxed);
    }

    pub fn session_errors(&self, via: FrontEnd, reason: SessionError) -> u64 {
        self.session_errors[via][reason].load(Relaxed)
    }

    /// The configuration was loaded: at start, or by a reload (`reload`: whether it
    /// was one, which counts in `reloads`).
    pub fn config_loaded(&self, reload: bool) {
        if reload {
            self.reloads_ok.fetch_add(1, Relaxed);
        }
        self.last_reload_failed.store(false, Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let millis = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        self.last_load_millis.store(millis, Relaxed);
    }

    /// A reload failed; the configuration in force stays.
    pub fn reload_failed(&self) {
        self.reloads_failed.fetch_add(1, Relaxed);
        self.last_reload_failed.store(true, Relaxed);
    }

    /// Whether the last load, at start or reload, succeeded: a state an alert can hold
    /// for as long as the file is broken, which a counter of failures cannot.
    pub fn last_reload_successful(&self) -> bool {
        !self.last_reload_failed.load(Relaxed)
    }

    /// Reloads that succeeded and that failed.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Relaxed),
            self.reloads_failed.load(Relaxed),
        )
    }

    /// Unix time of the last successful load, in seconds; 0 before the first.
    pub fn last_load(&self) -> f64 {
        self.last_load_millis.load(Relaxed) as f64 / 1000.0
    }
}

impl Stats {
    pub fn forged_headers_removed(&self, via: FrontEnd, n: u64) {
        self.headers.forged_removed[via].fetch_add(n, Relaxed);
    }

    pub fn forged_headers(&self, via: FrontEnd) -> u64 {
        self.headers.forged_removed[via].load(Relaxed)
    }

    /// A session in which `tag` acts as `log`: the MTA did not offer header changes.
    pub fn tag_unavailable(&self, via: FrontEnd) {
        self.headers.tag_unavailable[via].fetch_add(1, Relaxed);
    }

    pub fn tag_unavailable_sessions(&self, via: FrontEnd) -> u64 {
        self.headers.tag_unavailable[via].load(Relaxed)
    }

    /// The DNS lookups' counters, which the resolver (`dns::Resolver`) writes.
    pub fn dns(&self) -> &Arc<DnsLookups> {
        &self.dns
    }
}

/// `rejected_own_ip=0 rejected_ip=2 ... exempted_whitelist=1 ... forged_headers_removed=0
/// tag_unavailable_sessions=0 rejected_invalid=0 ... tagged_non_fqdn=0 rejected_unknown=0
/// ... tagged_mismatch=0 dns_failure_tempfailed=0 ... dns_lookups_ok=0 ...`: the sums over
/// the front ends. What came later comes last (the opt-in rules, then the DNS rules, DNS
/// failures and DNS lookups), so that the line as it was before each is still its
/// beginning, byte for byte.
impl Display for Stats {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let matched =
            |f: &mut Formatter<'_>, which: fn(&RuleKind) -> bool, mut sep: &'static str| {
                for outcome in Outcome::ALL {
                    for rule in RuleKind::ALL.into_iter().filter(which) {
                        let n: u64 = FrontEnd::ALL
                            .iter()
                            .map(|&via| self.matched(via, outcome, rule))
                            .sum();
                        let (outcome, rule) = (outcome.name(), rule.name().replace('-', "_"));
                        write!(f, "{sep}{outcome}_{rule}={n}")?;
                        sep = " ";
                    }
                }
                Ok(())
            };
        matched(f, |r| !r.is_opt_in(), "")?;
        for exemption in Exemption::ALL {
            let n: u64 = FrontEnd::ALL
                .iter()
                .map(|&via| self.exempted(via, exemption))
                .sum();
            write!(f, " exempted_{}={n}", exemption.name())?;
        }
        let sum_by = |count: &dyn Fn(FrontEnd) -> u64| -> u64 {
            FrontEnd::ALL.iter().map(|&via| count(via)).sum()
        };
        let sum = |count: fn(&Self, FrontEnd) -> u64| -> u64 { sum_by(&|via| count(self, via)) };
        write!(
            f,
            " forged_headers_removed={} tag_unavailable_sessions={}",
            sum(Self::forged_headers),
            sum(Self::tag_unavailable_sessions)
        )?;
        matched(f, |r| r.is_opt_in() && !r.is_dns(), " ")?;
        matched(f, |r| r.is_dns(), " ")?;
        for fallback in DnsFallback::ALL {
            let n = sum_by(&|via| self.dns_failures(via, fallback));
            write!(f, " dns_failure_{}={n}", fallback.name())?;
        }
        write!(f, " {}", self.dns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dns::Failure, verdict::Rule};

    #[test]
    fn counts_each_outcome_once() {
        let stats = Stats::default();
        let milter = FrontEnd::Milter;
        stats.count(milter, &Verdict::Reject(Rule::Ip));
        stats.count(FrontEnd::PolicyService, &Verdict::Reject(Rule::Ip));
        stats.count(milter, &Verdict::Tempfail(Rule::RcptDomain));
        stats.count(
            milter,
            &Verdict::Log(Rule::OwnIp("192.0.2.1".parse().unwrap())),
        );
        stats.count(milter, &Verdict::Exempt(Rule::Ip, Exemption::Whitelist));
        stats.count(milter, &Verdict::Exempt(Rule::Ip, Exemption::Off));
        stats.count(milter, &Verdict::Pass);
        stats.count(FrontEnd::PolicyService, &Verdict::Tag(Rule::NonFqdn));
        stats.count(milter, &Verdict::Reject(Rule::Invalid));
        stats.count(milter, &Verdict::Reject(Rule::Invalid));
        stats.count(milter, &Verdict::Tag(Rule::Mismatch));
        stats.count(FrontEnd::PolicyService, &Verdict::Reject(Rule::Unknown));
        let failure = |fallback| Verdict::DnsFailure(Rule::Unknown, Failure::ServFail, fallback);
        stats.count(milter, &failure(DnsFallback::Accept));
        stats.count(FrontEnd::PolicyService, &failure(DnsFallback::Accept));
        stats.count(milter, &failure(DnsFallback::NoVerdict));
        assert_eq!(
            stats.to_string(),
            "rejected_own_ip=0 rejected_ip=2 rejected_rcpt_domain=0 \
             tempfailed_own_ip=0 tempfailed_ip=0 tempfailed_rcpt_domain=1 \
             logged_own_ip=1 logged_ip=0 logged_rcpt_domain=0 \
             tagged_own_ip=0 tagged_ip=0 tagged_rcpt_domain=0 \
             exempted_whitelist=1 exempted_authenticated=0 exempted_trusted=0 \
             exempted_role_account=0 exempted_off=1 \
             forged_headers_removed=0 tag_unavailable_sessions=0 \
             rejected_invalid=2 rejected_non_fqdn=0 tempfailed_invalid=0 tempfailed_non_fqdn=0 \
             logged_invalid=0 logged_non_fqdn=0 tagged_invalid=0 tagged_non_fqdn=1 \
             rejected_unknown=1 rejected_mismatch=0 tempfailed_unknown=0 tempfailed_mismatch=0 \
             logged_unknown=0 logged_mismatch=0 tagged_unknown=0 tagged_mismatch=1 \
             dns_failure_tempfailed=0 dns_failure_accepted=2 dns_failure_no_verdict=1 \
             dns_lookups_ok=0 dns_lookups_nxdomain=0 dns_lookups_nodata=0 \
             dns_lookups_servfail=0 dns_lookups_timeout=0 dns_lookups_dropped=0"
        );
        assert_eq!(stats.dns_failures(milter, DnsFallback::Accept), 1);
        assert_eq!(
            stats.matched(FrontEnd::PolicyService, Outcome::Rejected, RuleKind::Ip),
            1
        );
        assert_eq!(stats.matched(milter, Outcome::Rejected, RuleKind::Ip), 1);
    }

    /// `index` and `ALL` agree, so that every view lists the slots in counter order.
    #[test]
    fn every_variant_has_its_own_slot() {
        fn check<K: Key + fmt::Debug>() {
            for (i, key) in K::ALL.iter().enumerate() {
                assert_eq!(key.index(), i, "{key:?}");
            }
        }
        check::<FrontEnd>();
        check::<SessionError>();
        check::<Outcome>();
        check::<RuleKind>();
        check::<Exemption>();
        check::<crate::dns::counters::LookupResult>();
        check::<DnsFallback>();
    }

    #[test]
    fn histogram_buckets_are_inclusive_and_cumulative() {
        let h = Histogram::<RcptAnswer>::default();
        for micros in [5, 10, 11, 1_000, 100_000, 100_001, 3_000_000] {
            h.observe(Duration::from_micros(micros));
        }
        let s = h.snapshot();
        // <=10µs: 5 and 10; <=25µs: +11; <=1ms: +1000; <=100ms: +100000.
        assert_eq!(s.cumulative, [2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5]);
        assert_eq!(s.count, 7);
        let sum = (5 + 10 + 11 + 1_000 + 100_000 + 100_001 + 3_000_000) as f64 / 1e6;
        assert!((s.sum_seconds - sum).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn connections_errors_and_loads() {
        let stats = Stats::default();
        stats.connection_opened(FrontEnd::Milter);
        stats.connection_opened(FrontEnd::Milter);
        stats.connection_opened(FrontEnd::PolicyService);
        stats.connection_closed(FrontEnd::Milter);
        assert_eq!(stats.connections_total(FrontEnd::Milter), 2);
        assert_eq!(stats.connections_open(FrontEnd::Milter), 1);
        assert_eq!(stats.connections_open(FrontEnd::PolicyService), 1);

        stats.session_error(FrontEnd::PolicyService, SessionError::Timeout);
        assert_eq!(
            stats.session_errors(FrontEnd::PolicyService, SessionError::Timeout),
            1
        );
        assert_eq!(
            stats.session_errors(FrontEnd::Milter, SessionError::Timeout),
            0
        );

        assert_eq!(stats.last_load(), 0.0);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        stats.config_loaded(false);
        assert_eq!(stats.reloads(), (0, 0));
        assert!(stats.last_load() >= before.as_secs() as f64);
        assert!(stats.last_reload_successful());
        stats.config_loaded(true);
        stats.reload_failed();
        assert_eq!(stats.reloads(), (1, 1));
        assert!(!stats.last_reload_successful());
        stats.config_loaded(true);
        assert!(stats.last_reload_successful());
        // None of this is in the statistics line, which keeps its text.
        assert!(!stats.to_string().contains("reload"));
    }
}
