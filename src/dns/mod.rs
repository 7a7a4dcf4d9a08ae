//! DNS facts about a HELO name, gathered for the rules `unknown` and `mismatch`: the answers
//! (`answer`, pure, what `verdict` reads), the lookup seam (`Lookup`, as viaspf's `Lookup`
//! under spf-milter's resolver), and the machinery both front ends call to ask.

pub mod answer;
pub mod cache;
pub mod counters;
pub mod hickory;
pub mod live;
pub mod resolver;
pub mod session;

pub use answer::{Answer, Failure, HeloDns, RecordType};
pub use live::ask_now;
pub use resolver::{Pending, Resolver};

use crate::config::DnsSettings;
use counters::DnsLookups;
use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

/// One answer as a server gave it, with how long it may be cached.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Fetched {
    pub answer: Answer,
    /// The record's TTL, or for NXDOMAIN and NODATA the SOA's negative TTL; zero for a
    /// failure (never cached).
    pub ttl: Duration,
}

/// Where answers come from: hickory-resolver in the binary, an in-memory table in a test.
pub trait Lookup: Send + Sync {
    /// Asks `name` (in the form of `domain::normalize`, asked as fully qualified: no search
    /// list) for records of `record`. Gives up after `timeout` with `Failure::Timeout`.
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        record: RecordType,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Fetched> + Send + 'a>>;
}

/// The resolver for `settings`: asking `injected` when given (a test's), else
/// hickory-resolver with the configured servers or those of /etc/resolv.conf; its
/// lookups counted in `counters` (`Stats::dns`).
pub fn build(
    settings: &DnsSettings,
    injected: Option<Arc<dyn Lookup>>,
    counters: Arc<DnsLookups>,
) -> Result<Resolver, hickory::BuildError> {
    let lookup: Arc<dyn Lookup> = match injected {
        Some(lookup) => lookup,
        None => Arc::new(hickory::Hickory::new(&settings.servers, settings.timeout)?),
    };
    Ok(Resolver::new(lookup, settings.timeout, counters))
}
