//! Facts about the host the milter runs on, in one place: its interface addresses (own
//! addresses for the own-ip rule) and its host name (an own name for the policy service,
//! which no policy attribute tells Postfix's `myhostname`). Both are read at start and
//! at each reload alike (`Host::read`), from a source the caller of `run` provides
//! (`HostFacts`): the system's (`System`) in the binary, the test's own in a test.

use crate::{config::Config, domain, interfaces};
use std::net::IpAddr;

/// Where the facts about the host come from.
pub trait HostFacts: Send + Sync {
    /// The addresses of the host's network interfaces.
    fn interface_addresses(&self) -> Vec<IpAddr>;
    /// The host's name as the system gives it, if it gives one.
    fn host_name(&self) -> Option<String>;
}

/// The running system's facts: its interfaces and `gethostname`.
#[derive(Clone, Copy, Debug, Default)]
pub struct System;

impl HostFacts for System {
    fn interface_addresses(&self) -> Vec<IpAddr> {
        interfaces::addresses()
    }

    fn host_name(&self) -> Option<String> {
        let name = nix::unistd::gethostname().ok()?;
        name.into_string().ok()
    }
}

/// The facts about the host as read at one time, as the decision uses them.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Host {
    /// Own addresses besides `own_addresses`; none where `own_interfaces = false`.
    pub interfaces: Vec<IpAddr>,
    /// This host's name in the form of `domain::normalize`, when it is fully qualified
    /// (`qualified`).
    pub name: Option<String>,
}

impl Host {
    /// Reads the facts that `config` asks for from `source`.
    pub fn read(source: &dyn HostFacts, config: &Config) -> Self {
        let interfaces = if config.own_interfaces() {
            source.interface_addresses()
        } else {
            Vec::new()
        };
        Self {
            interfaces,
            name: source.host_name().as_deref().and_then(qualified),
        }
    }
}

/// A host name as an own name, for the rcpt-domain rule: what Postfix's `myhostname` is
/// by default. A name without a dot never counts: a single-label HELO matches no rule.
pub fn qualified(name: &str) -> Option<String> {
    let name = domain::normalize(name).into_owned();
    name.contains('.').then_some(name)
}

#[cfg(test)]
mod tests {
    use super::qualified;

    #[test]
    fn only_a_fully_qualified_name_counts() {
        assert_eq!(qualified("MX.Example.COM."), Some("mx.example.com".into()));
        assert_eq!(qualified("mx"), None);
        assert_eq!(qualified("mx."), None);
        assert_eq!(qualified(""), None);
    }
}
