//! Lookups asked there and then, outside any session: what `explain` prints.

use super::{counters::DnsLookups, hickory::BuildError, HeloDns};
use crate::config::DnsSettings;
use std::sync::Arc;

/// The three answers about `name` from the servers of `settings`, asked now and waited
/// for (each question for at most `dns_timeout`): for the command line, outside the
/// service's runtime, which it must not be called from.
pub fn ask_now(settings: &DnsSettings, name: &str) -> Result<HeloDns, BuildError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BuildError::Resolver(e.to_string()))?;
    runtime.block_on(async {
        let resolver = super::build(settings, None, Arc::new(DnsLookups::default()))?;
        // The lookups end by themselves at the timeout; the wait's own limit is a
        // margin over it.
        let limit = settings.timeout * 2;
        Ok(resolver.start(name).wait(limit).await)
    })
}
