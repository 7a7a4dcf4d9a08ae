//! The DNS lookups of the rules `unknown` and `mismatch` against real servers on loopback:
//! NSD serving the test zone (tests/common/dns_server.rs), a server that never answers and
//! one that answers SERVFAIL. The expected answers are read off the zone by hand.

mod common;

use common::dns_server::{self, rcode, udp_query, FakeDns, Nsd};
use std::time::Duration;

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
