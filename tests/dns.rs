//! The DNS lookups of the rules `unknown` and `mismatch` against real servers on loopback:
//! NSD serving the test zone (tests/common/dns_server.rs), a server that never answers and
//! one that answers SERVFAIL. The expected answers are read off the zone by hand.

mod common;

use bogus_helo_milter::config::DnsSettings;
use bogus_helo_milter::dns::{
    counters::{DnsLookups, LookupResult},
    hickory::Hickory,
    Answer, Failure, Fetched, HeloDns, Lookup, RecordType, Resolver,
};
use common::dns_server::{self, names, rcode, udp_query, FakeDns, Nsd};
use std::{sync::Arc, time::Duration};

fn nsd_here() -> bool {
    common::dependency(dns_server::nsd_available(), "nsd", dns_server::INSTALL_NSD)
}

/// The servers themselves, by hand-written queries: what the other tests build on.
#[test]
fn the_test_servers_answer_as_written() {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    let wait = Duration::from_secs(10);
    // A (1) of a-only: NOERROR with one answer record.
    let reply = udp_query(nsd.addr, "a-only.helo.test", 1, wait).expect("nsd answers");
    assert_eq!(rcode(&reply), Some(0));
    assert_eq!(&reply[6..8], &[0, 1], "one answer record");
    // Not in the zone: NXDOMAIN (3).
    let reply = udp_query(nsd.addr, "missing.helo.test", 1, wait).expect("nsd answers");
    assert_eq!(rcode(&reply), Some(3));
    let servfail = FakeDns::servfail();
    let reply = udp_query(servfail.addr, "a-only.helo.test", 1, wait).expect("an answer");
    assert_eq!(rcode(&reply), Some(2));
    assert_eq!(&reply[..2], &[0x42, 0x42], "the query's ID");
}

/// Asks `name` for `record` through the real lookup (hickory) at `server`.
fn ask(server: std::net::SocketAddr, name: &str, record: RecordType, timeout: Duration) -> Fetched {
    ask_servers(&[server], name, record, timeout)
}

/// Asks `name` for `record` through the real lookup with `servers` as `dns_servers`.
fn ask_servers(
    servers: &[std::net::SocketAddr],
    name: &str,
    record: RecordType,
    timeout: Duration,
) -> Fetched {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let hickory = Hickory::new(servers, timeout).expect("a resolver");
        hickory.lookup(name, record, timeout).await
    })
}

fn ips(list: &[&str]) -> Answer {
    Answer::Addresses(list.iter().map(|ip| ip.parse().expect("an IP")).collect())
}

fn fetched(answer: Answer, ttl: u64) -> Fetched {
    Fetched {
        answer,
        ttl: Duration::from_secs(ttl),
    }
}

/// Every case of the zone, each question: what NSD serves, as the lookup maps it. The
/// TTLs: 60 s ($TTL), 1 s (`short`), and 5 s for NXDOMAIN and NODATA (the SOA minimum).
#[test]
fn hickory_maps_every_answer_of_the_zone() {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    use RecordType::{Aaaa, Mx, A};
    let exchanges = |list: &[&str]| Answer::Exchanges(list.iter().map(|s| s.to_string()).collect());
    let cases = [
        (names::A_ONLY, A, fetched(ips(&["192.0.2.10"]), 60)),
        (names::A_ONLY, Aaaa, fetched(Answer::NoData, 5)),
        (names::A_ONLY, Mx, fetched(Answer::NoData, 5)),
        (names::AAAA_ONLY, A, fetched(Answer::NoData, 5)),
        (names::AAAA_ONLY, Aaaa, fetched(ips(&["2001:db8::10"]), 60)),
        (names::MX_ONLY, A, fetched(Answer::NoData, 5)),
        (
            names::MX_ONLY,
            Mx,
            fetched(exchanges(&["mx.example.net"]), 60),
        ),
        (names::TXT_ONLY, A, fetched(Answer::NoData, 5)),
        (names::TXT_ONLY, Aaaa, fetched(Answer::NoData, 5)),
        (names::TXT_ONLY, Mx, fetched(Answer::NoData, 5)),
        (names::CLIENT, A, fetched(ips(&["198.51.100.7"]), 60)),
        (names::CLIENT, Aaaa, fetched(Answer::NoData, 5)),
        (
            names::CLIENT,
            Mx,
            fetched(exchanges(&["mx.example.net"]), 60),
        ),
        (names::CLIENT6, A, fetched(Answer::NoData, 5)),
        (names::CLIENT6, Aaaa, fetched(ips(&["2001:db8::7"]), 60)),
        (names::OTHER, Aaaa, fetched(ips(&["2001:db8::20"]), 60)),
        (names::SHORT, A, fetched(ips(&["192.0.2.30"]), 1)),
        (names::MISSING, A, fetched(Answer::NxDomain, 5)),
        (names::MISSING, Aaaa, fetched(Answer::NxDomain, 5)),
        (names::MISSING, Mx, fetched(Answer::NxDomain, 5)),
        // Asked as given, fully qualified: a trailing dot changes nothing.
        ("a-only.helo.test.", A, fetched(ips(&["192.0.2.10"]), 60)),
    ];
    let timeout = Duration::from_secs(10);
    for (name, record, expected) in cases {
        assert_eq!(
            ask(nsd.addr, name, record, timeout),
            expected,
            "{name} {record:?}"
        );
    }
    // Two A records, in either order.
    let mut other = ask(nsd.addr, names::OTHER, A, timeout);
    if let Answer::Addresses(list) = &mut other.answer {
        list.sort();
    }
    assert_eq!(other, fetched(ips(&["192.0.2.20", "192.0.2.21"]), 60));
}

#[test]
fn a_server_that_never_answers_is_a_timeout() {
    let silent = FakeDns::silent();
    for record in RecordType::ALL {
        let got = ask(
            silent.addr,
            names::A_ONLY,
            record,
            Duration::from_millis(300),
        );
        assert_eq!(
            got,
            fetched(Answer::Failed(Failure::Timeout), 0),
            "{record:?}"
        );
    }
}

#[test]
fn a_servfail_is_a_failure() {
    let servfail = FakeDns::servfail();
    for record in RecordType::ALL {
        let got = ask(
            servfail.addr,
            names::A_ONLY,
            record,
            Duration::from_secs(10),
        );
        assert_eq!(
            got,
            fetched(Answer::Failed(Failure::ServFail), 0),
            "{record:?}"
        );
    }
}

/// A server that answers SERVFAIL, or none, beside one that answers: the answer is the
/// good server's, wherever each stands in `dns_servers`, as with a stub resolver that
/// goes on to the next server (hickory's own pool ended the question at the first
/// SERVFAIL: one broken server failed every lookup). Failures alone: SERVFAIL where a
/// server said so, though another said nothing.
#[test]
fn a_broken_server_beside_a_good_one_loses_no_answer() {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    let servfail = FakeDns::servfail();
    let silent = FakeDns::silent();
    let cases = [
        (
            names::A_ONLY,
            RecordType::A,
            fetched(ips(&["192.0.2.10"]), 60),
        ),
        (names::MISSING, RecordType::A, fetched(Answer::NxDomain, 5)),
        (names::TXT_ONLY, RecordType::Mx, fetched(Answer::NoData, 5)),
    ];
    for bad in [servfail.addr, silent.addr] {
        for servers in [[bad, nsd.addr], [nsd.addr, bad]] {
            for (name, record, expected) in &cases {
                assert_eq!(
                    &ask_servers(&servers, name, *record, Duration::from_secs(10)),
                    expected,
                    "{name} {record:?} from {servers:?} (NSD at {})",
                    nsd.addr
                );
            }
        }
    }
    let got = ask_servers(
        &[silent.addr, servfail.addr],
        names::A_ONLY,
        RecordType::A,
        Duration::from_millis(300),
    );
    assert_eq!(got, fetched(Answer::Failed(Failure::ServFail), 0));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn resolver_at(server: std::net::SocketAddr, timeout: Duration) -> (Resolver, Arc<DnsLookups>) {
    let counters = Arc::new(DnsLookups::default());
    let hickory = Hickory::new(&[server], timeout).expect("a resolver");
    (
        Resolver::new(Arc::new(hickory), timeout, counters.clone()),
        counters,
    )
}

fn helo_dns(a: Answer, aaaa: Answer, mx: Answer) -> HeloDns {
    HeloDns { a, aaaa, mx }
}

/// The resolver both front ends call, against NSD: the three answers about each name of
/// the zone, each lookup counted by result, a second ask answered from the cache.
#[test]
fn the_resolver_asks_nsd_and_keeps_answers_within_their_ttl() {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    let long = Duration::from_secs(10);
    let (resolver, counters) = resolver_at(nsd.addr, long);
    let mx = || Answer::Exchanges(vec!["mx.example.net".into()]);
    let cases = [
        (
            names::A_ONLY,
            helo_dns(ips(&["192.0.2.10"]), Answer::NoData, Answer::NoData),
        ),
        (
            names::AAAA_ONLY,
            helo_dns(Answer::NoData, ips(&["2001:db8::10"]), Answer::NoData),
        ),
        (
            names::MX_ONLY,
            helo_dns(Answer::NoData, Answer::NoData, mx()),
        ),
        (
            names::TXT_ONLY,
            helo_dns(Answer::NoData, Answer::NoData, Answer::NoData),
        ),
        (
            names::CLIENT,
            helo_dns(ips(&["198.51.100.7"]), Answer::NoData, mx()),
        ),
        (
            names::CLIENT6,
            helo_dns(Answer::NoData, ips(&["2001:db8::7"]), Answer::NoData),
        ),
        (
            names::MISSING,
            helo_dns(Answer::NxDomain, Answer::NxDomain, Answer::NxDomain),
        ),
    ];
    runtime().block_on(async {
        for (name, expected) in &cases {
            assert_eq!(resolver.start(name).wait(long).await, *expected, "{name}");
        }
        // 7 names x 3 questions: 6 with records, 12 NODATA, 3 NXDOMAIN.
        let counted = |r| counters.lookups(r);
        assert_eq!(counted(LookupResult::Ok), 6);
        assert_eq!(counted(LookupResult::NoData), 12);
        assert_eq!(counted(LookupResult::NxDomain), 3);
        assert_eq!(
            counted(LookupResult::ServFail) + counted(LookupResult::Timeout),
            0
        );
        assert_eq!(counters.duration().count, 21);
        // Again: all from the cache (TTLs of 60 s and 5 s), no lookup.
        for (name, expected) in &cases {
            let pending = resolver.start(name);
            assert!(pending.is_complete(), "{name} from the cache");
            assert_eq!(pending.wait(long).await, *expected, "{name}");
        }
        assert_eq!(counters.duration().count, 21);
        // `short`'s A record is kept for its TTL of 1 s, then asked again.
        resolver.start(names::SHORT).wait(long).await;
        let ok = counted(LookupResult::Ok);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while counted(LookupResult::Ok) == ok {
            assert!(
                std::time::Instant::now() < deadline,
                "short.helo.test never asked again"
            );
            let dns = resolver.start(names::SHORT).wait(long).await;
            assert_eq!(dns.a, ips(&["192.0.2.30"]));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// A server that never answers: the wait ends at its limit, then the lookups at the
/// timeout, each counted; nothing kept.
#[test]
fn the_resolver_with_a_silent_server_answers_timeouts() {
    let silent = FakeDns::silent();
    let (resolver, counters) = resolver_at(silent.addr, Duration::from_millis(500));
    let timeout = || Answer::Failed(Failure::Timeout);
    runtime().block_on(async {
        let pending = resolver.start(names::A_ONLY);
        let dns = pending.wait(Duration::from_millis(50)).await;
        assert_eq!(dns, helo_dns(timeout(), timeout(), timeout()));
        // The lookups end by themselves, each a counted timeout.
        assert_eq!(pending.wait(Duration::from_secs(30)).await, dns);
        assert!(pending.is_complete());
        assert_eq!(counters.lookups(LookupResult::Timeout), 3);
        assert!(
            !resolver.start(names::A_ONLY).is_complete(),
            "a timeout is not kept"
        );
    });
}

#[test]
fn the_resolver_with_a_servfail_server_answers_failures() {
    let servfail = FakeDns::servfail();
    let (resolver, counters) = resolver_at(servfail.addr, Duration::from_secs(10));
    let failed = || Answer::Failed(Failure::ServFail);
    runtime().block_on(async {
        let dns = resolver
            .start(names::MISSING)
            .wait(Duration::from_secs(30))
            .await;
        assert_eq!(dns, helo_dns(failed(), failed(), failed()));
        assert_eq!(counters.lookups(LookupResult::ServFail), 3);
        // A failure is not kept: the same name is asked again (counted), not answered
        // from the cache (which counts nothing).
        let again = resolver
            .start(names::MISSING)
            .wait(Duration::from_secs(30))
            .await;
        assert_eq!(again, helo_dns(failed(), failed(), failed()));
        assert_eq!(counters.lookups(LookupResult::ServFail), 6);
    });
}

/// What `explain` asks: the three answers there and then, from the configured servers.
#[test]
fn ask_now_gives_the_answers_of_the_configured_servers() {
    if !nsd_here() {
        return;
    }
    let nsd = Nsd::start();
    let settings = DnsSettings {
        servers: vec![nsd.addr],
        timeout: Duration::from_secs(10),
    };
    let dns = bogus_helo_milter::dns::ask_now(&settings, names::CLIENT6).expect("a resolver");
    assert_eq!(
        dns,
        helo_dns(Answer::NoData, ips(&["2001:db8::7"]), Answer::NoData)
    );
    let silent = FakeDns::silent();
    let settings = DnsSettings {
        servers: vec![silent.addr],
        timeout: Duration::from_millis(200),
    };
    let timeout = || Answer::Failed(Failure::Timeout);
    let dns = bogus_helo_milter::dns::ask_now(&settings, names::CLIENT6).expect("a resolver");
    assert_eq!(dns, helo_dns(timeout(), timeout(), timeout()));
}
