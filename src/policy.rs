//! The policy that a configuration compiles to: what the decision consults, and nothing else.

use crate::{address_set::AddressSet, recipient::base_address};
use std::{
    collections::{HashMap, HashSet},
    fmt::{self, Display, Formatter},
    net::IpAddr,
    str::FromStr,
};

/// What a rule match does to a recipient.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Action {
    Reject,
    Tempfail,
    /// Accept, and log what would have been done: a dry run.
    Log,
    /// Do not check at all.
    Off,
}

impl Action {
    pub const NAMES: &'static str = "reject, tempfail, log or off";
}

impl FromStr for Action {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "reject" => Ok(Self::Reject),
            "tempfail" => Ok(Self::Tempfail),
            "log" => Ok(Self::Log),
            "off" => Ok(Self::Off),
            _ => Err(()),
        }
    }
}

impl Display for Action {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reject => "reject",
            Self::Tempfail => "tempfail",
            Self::Log => "log",
            Self::Off => "off",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    /// For recipient domains not in `domains`.
    pub action: Action,
    /// Lower-case recipient domain → action.
    pub domains: HashMap<String, Action>,
    /// Lower-case addresses; a `+detail` subaddress of one counts as that address.
    pub whitelist: HashSet<String>,
    /// The configured `own_addresses` and the host's interface addresses.
    pub own_networks: AddressSet,
    /// Lower-case host names without trailing dot, besides the MTA's `j`.
    pub own_names: HashSet<String>,
    pub trusted_networks: AddressSet,
    pub skip_authenticated: bool,
    /// Appended to every reply text when set.
    pub reply_url: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            action: Action::Reject,
            domains: HashMap::new(),
            whitelist: HashSet::new(),
            own_networks: AddressSet::default(),
            own_names: HashSet::new(),
            trusted_networks: AddressSet::new(vec![
                "127.0.0.0/8".parse().expect("valid network"),
                "::1/128".parse().expect("valid network"),
            ]),
            skip_authenticated: true,
            reply_url: None,
        }
    }
}

impl Policy {
    pub fn action_for(&self, domain: &str) -> Action {
        if self.domains.is_empty() {
            return self.action;
        }
        let domain = domain.to_ascii_lowercase();
        self.domains.get(&domain).copied().unwrap_or(self.action)
    }

    pub fn is_whitelisted(&self, address: &str) -> bool {
        if self.whitelist.is_empty() {
            return false;
        }
        self.whitelist.contains(&address.to_ascii_lowercase())
            || self.whitelist.contains(&base_address(address))
    }

    pub fn is_own_address(&self, ip: IpAddr) -> bool {
        self.own_networks.contains(ip)
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_networks.contains(ip)
    }
}
