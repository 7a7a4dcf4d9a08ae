//! The policy that a configuration compiles to: what the decision consults, and nothing else.

use crate::{
    address_set::AddressSet,
    recipient::{base_local, Recipient},
    whitelist::Whitelist,
};
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

/// The action for each recipient domain that has its own: `[domains."example.com"]` for
/// the domain itself, `[domains.".example.com"]` for every domain below it.
#[derive(Clone, Debug, Default)]
pub struct DomainActions {
    /// Domain in comparable form → action.
    exact: HashMap<String, Action>,
    /// Parent domain in comparable form, without the leading dot → action.
    below: HashMap<String, Action>,
}

/// Which `[domains]` entry decided, for `explain`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum DomainMatch {
    Exact(String),
    Below(String),
}

impl DomainActions {
    /// Adds an entry as written (`example.com` or `.example.com`, already normalized).
    pub fn insert(&mut self, pattern: &str, action: Action) -> Option<Action> {
        match pattern.strip_prefix('.') {
            Some(parent) => self.below.insert(parent.to_string(), action),
            None => self.exact.insert(pattern.to_string(), action),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.below.is_empty()
    }

    /// The entries as written: `example.com`, `.example.com`.
    pub fn entries(&self) -> impl Iterator<Item = (String, Action)> + '_ {
        let exact = self.exact.iter().map(|(d, a)| (d.clone(), *a));
        let below = self.below.iter().map(|(d, a)| (format!(".{d}"), *a));
        exact.chain(below)
    }

    /// The most specific entry for `domain`: the domain itself, else its nearest parent.
    pub fn lookup(&self, domain: &str) -> Option<(DomainMatch, Action)> {
        if let Some(&action) = self.exact.get(domain) {
            return Some((DomainMatch::Exact(domain.to_string()), action));
        }
        if self.below.is_empty() {
            return None;
        }
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(&action) = self.below.get(parent) {
                return Some((DomainMatch::Below(parent.to_string()), action));
            }
            rest = parent;
        }
        None
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    /// For recipient domains without a `[domains]` entry.
    pub action: Action,
    pub domains: DomainActions,
    pub whitelist: Whitelist,
    /// The characters that start a subaddress (`private+orders`); may be empty.
    pub recipient_delimiter: String,
    /// Never refuse postmaster and abuse, at any domain (RFC 2142 role accounts).
    pub exempt_role_accounts: bool,
    /// The configured `own_addresses` and the host's interface addresses.
    pub own_networks: AddressSet,
    /// Host names in comparable form, besides the MTA's `j`.
    pub own_names: HashSet<String>,
    pub trusted_networks: AddressSet,
    pub skip_authenticated: bool,
    /// Appended to every reply text when set.
    pub reply_url: Option<String>,
}

/// The local parts that RFC 2142 asks every domain to accept, exempt by default.
pub const ROLE_ACCOUNTS: [&str; 2] = ["postmaster", "abuse"];

impl Default for Policy {
    fn default() -> Self {
        Self {
            action: Action::Reject,
            domains: DomainActions::default(),
            whitelist: Whitelist::default(),
            recipient_delimiter: "+".to_string(),
            exempt_role_accounts: true,
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
    /// The action for a recipient domain (in comparable form).
    pub fn action_for(&self, domain: &str) -> Action {
        if self.domains.is_empty() {
            return self.action;
        }
        self.domains
            .lookup(domain)
            .map_or(self.action, |(_, action)| action)
    }

    pub fn is_whitelisted(&self, rcpt: &Recipient<'_>) -> bool {
        self.whitelist.contains(rcpt, &self.recipient_delimiter)
    }

    /// `<postmaster>` always; postmaster and abuse at any domain unless turned off.
    pub fn is_role_account(&self, rcpt: &Recipient<'_>) -> bool {
        rcpt.is_bare_postmaster()
            || (self.exempt_role_accounts
                && ROLE_ACCOUNTS.contains(&base_local(&rcpt.local, &self.recipient_delimiter)))
    }

    /// Whether `ip` is one of this server's own addresses. The unspecified addresses
    /// (`0.0.0.0`, `::`, which Sendmail sends as `{daemon_addr}` when it listens on all
    /// addresses) never are.
    pub fn is_own_address(&self, ip: IpAddr) -> bool {
        !ip.is_unspecified() && self.own_networks.contains(ip)
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_networks.contains(ip)
    }
}
