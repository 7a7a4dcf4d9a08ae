//! The rule set that a configuration compiles to: what the decision consults, and nothing
//! else. (Named so that "policy" means one thing in this code: the Postfix policy service,
//! `src/delegation/`.)

mod kinds;

pub use kinds::{Action, DnsFailure, RuleKind};

use crate::{
    address_set::AddressSet,
    recipient::{base_local, Recipient},
    whitelist::Whitelist,
};
use std::{
    collections::{HashMap, HashSet},
    fmt::{self, Display, Formatter},
    net::IpAddr,
};

/// The actions one table sets: for every rule (`action`), and per rule (`[rules]`).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Actions {
    pub any: Option<Action>,
    pub per_rule: [Option<Action>; RuleKind::ALL.len()],
}

impl Actions {
    fn all(&self) -> impl Iterator<Item = Action> + '_ {
        self.any
            .into_iter()
            .chain(self.per_rule.iter().flatten().copied())
    }
}

/// The actions of each recipient domain that has its own: `[domains."example.com"]` for
/// the domain itself, `[domains.".example.com"]` for every domain below it.
#[derive(Clone, Debug, Default)]
pub struct DomainActions {
    /// Domain in comparable form → actions.
    exact: HashMap<String, Actions>,
    /// Parent domain in comparable form, without the leading dot → actions.
    below: HashMap<String, Actions>,
    /// Whether any entry tags, kept as entries are added.
    tags: bool,
}

impl DomainActions {
    /// Adds an entry as written (`example.com` or `.example.com`, already normalized).
    pub fn insert(&mut self, pattern: &str, actions: Actions) -> Option<Actions> {
        self.tags |= actions.all().any(|a| a == Action::Tag);
        match pattern.strip_prefix('.') {
            Some(parent) => self.below.insert(parent.to_string(), actions),
            None => self.exact.insert(pattern.to_string(), actions),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.below.is_empty()
    }

    /// The entries as written: `example.com`, `.example.com`.
    pub fn entries(&self) -> impl Iterator<Item = (String, Actions)> + '_ {
        let exact = self.exact.iter().map(|(d, a)| (d.clone(), *a));
        let below = self.below.iter().map(|(d, a)| (format!(".{d}"), *a));
        exact.chain(below)
    }

    /// The entries that apply to `domain`, the most specific first: the domain itself,
    /// then `.parent` for each parent outwards; with each entry's name as written
    /// (`.example.com` as `example.com` and `below`).
    pub fn enclosing<'a>(
        &'a self,
        domain: &'a str,
    ) -> impl Iterator<Item = (DomainEntry<'a>, &'a Actions)> + 'a {
        let exact = self
            .exact
            .get_key_value(domain)
            .map(|(name, actions)| (DomainEntry { name, below: false }, actions));
        // Without `.parent` entries there is nothing to walk: the common case costs nothing.
        let parents = (!self.below.is_empty())
            .then(|| {
                std::iter::successors(domain.split_once('.').map(|(_, p)| p), |rest| {
                    rest.split_once('.').map(|(_, p)| p)
                })
            })
            .into_iter()
            .flatten()
            .filter_map(|parent| {
                self.below
                    .get_key_value(parent)
                    .map(|(name, actions)| (DomainEntry { name, below: true }, actions))
            });
        exact.into_iter().chain(parents)
    }
}

/// A `[domains]` entry that applies to a recipient.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct DomainEntry<'a> {
    pub name: &'a str,
    /// Written with a leading dot: the domains below `name`.
    pub below: bool,
}

/// The setting that decided a recipient's action, the most specific first.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Setting<'a> {
    DomainRule(DomainEntry<'a>, RuleKind),
    Domain(DomainEntry<'a>),
    Rule(RuleKind),
    TopLevel,
    /// No rule key names this opt-in rule: it is off.
    OffByDefault(RuleKind),
}

/// As the configuration file spells the key: `domains."example.org".rules.own-ip`.
impl Display for Setting<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let domain = |f: &mut Formatter<'_>, entry: &DomainEntry<'_>| {
            let dot = if entry.below { "." } else { "" };
            write!(f, "domains.\"{dot}{}\"", entry.name)
        };
        match self {
            Self::DomainRule(entry, rule) => {
                domain(f, entry)?;
                write!(f, ".rules.{}", rule.name())
            }
            Self::Domain(entry) => {
                domain(f, entry)?;
                f.write_str(".action")
            }
            Self::Rule(rule) => write!(f, "rules.{}", rule.name()),
            Self::TopLevel => f.write_str("action"),
            Self::OffByDefault(_) => f.write_str("the default (off until a rule key names it)"),
        }
    }
}

/// The compiled configuration. Its fields are private: a rule set is built only from the
/// values that `config::check` checked and normalised (`Policy::from(Parts)`), then
/// read through the accessors below.
#[derive(Clone, Debug)]
pub struct RuleSet {
    /// The top-level `action` and `[rules]`: for recipient domains without their own.
    actions: Actions,
    domains: DomainActions,
    whitelist: Whitelist,
    /// The characters that start a subaddress (`private+orders`); may be empty.
    recipient_delimiter: String,
    /// Never refuse postmaster and abuse, at any domain (RFC 2142 role accounts).
    exempt_role_accounts: bool,
    /// The configured `own_addresses` and the host's interface addresses.
    own_networks: AddressSet,
    /// Host names in comparable form, besides the MTA's `j`.
    own_names: HashSet<String>,
    trusted_networks: AddressSet,
    skip_authenticated: bool,
    /// Appended to every reply text when set.
    reply_url: Option<String>,
    /// Appended (` key=...`) to the policy service's tag header, for Postfix's
    /// `header_checks` to tell it from a forged one (README, "The tag header").
    tag_key: Option<String>,
    dns_failure: DnsFailure,
}

/// The checked values a rule set is built from (by `config::check` only), each the field
/// of `Policy` of its name.
pub(crate) struct Parts {
    pub actions: Actions,
    pub domains: DomainActions,
    pub whitelist: Whitelist,
    pub recipient_delimiter: String,
    pub exempt_role_accounts: bool,
    pub own_networks: AddressSet,
    pub own_names: HashSet<String>,
    pub trusted_networks: AddressSet,
    pub skip_authenticated: bool,
    pub reply_url: Option<String>,
    pub tag_key: Option<String>,
    pub dns_failure: DnsFailure,
}

impl From<Parts> for RuleSet {
    fn from(p: Parts) -> Self {
        Self {
            actions: p.actions,
            domains: p.domains,
            whitelist: p.whitelist,
            recipient_delimiter: p.recipient_delimiter,
            exempt_role_accounts: p.exempt_role_accounts,
            own_networks: p.own_networks,
            own_names: p.own_names,
            trusted_networks: p.trusted_networks,
            skip_authenticated: p.skip_authenticated,
            reply_url: p.reply_url,
            tag_key: p.tag_key,
            dns_failure: p.dns_failure,
        }
    }
}

/// The local parts that RFC 2142 asks every domain to accept, exempt by default.
pub const ROLE_ACCOUNTS: [&str; 2] = ["postmaster", "abuse"];

impl RuleSet {
    /// What a match of `rule` does to a recipient in `domain` (in comparable form), and
    /// the setting that says so. From the most specific entry out (the domain itself, then
    /// `.parent` for each parent), each entry's setting for that rule, then its `action`;
    /// then the top-level `[rules]`, then the top-level `action`: a setting an entry leaves
    /// out is inherited from the entry that encloses it, so a per-rule entry for a
    /// subdomain keeps what its parent entry says about the other rules. For an opt-in
    /// rule (`RuleKind::is_opt_in`) an `action` other than `off` is skipped (it would
    /// turn the rule on), the top-level `action` always, and the default is `off`
    /// (`Setting::OffByDefault`).
    pub fn action_for<'a>(&'a self, domain: &'a str, rule: RuleKind) -> (Action, Setting<'a>) {
        let r = rule.index();
        let opt_in = rule.is_opt_in();
        for (entry, actions) in self.domains.enclosing(domain) {
            if let Some(action) = actions.per_rule[r] {
                return (action, Setting::DomainRule(entry, rule));
            }
            // `off` says "do not check this domain": that holds for an opt-in rule too.
            if let Some(action) = actions.any.filter(|&a| !opt_in || a == Action::Off) {
                return (action, Setting::Domain(entry));
            }
        }
        match self.actions.per_rule[r] {
            Some(action) => (action, Setting::Rule(rule)),
            None if opt_in => (Action::Off, Setting::OffByDefault(rule)),
            None => (
                self.actions.any.unwrap_or(Action::Reject),
                Setting::TopLevel,
            ),
        }
    }

    /// Whether any setting tags: only then does the milter ask the MTA for the right to
    /// add a header, which costs nothing where it is not asked for.
    pub fn uses_tag(&self) -> bool {
        self.domains.tags || self.actions.all().any(|a| a == Action::Tag)
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

    /// Whether `ip` is in one of this server's own networks (`verdict::is_own` keeps the
    /// unspecified addresses out).
    pub fn is_own_address(&self, ip: IpAddr) -> bool {
        self.own_networks.contains(ip)
    }

    /// Appended to every reply text when set.
    pub fn reply_url(&self) -> Option<&str> {
        self.reply_url.as_deref()
    }

    /// The secret the policy service appends to its tag header.
    pub fn tag_key(&self) -> Option<&str> {
        self.tag_key.as_deref()
    }

    /// The top-level `action` and `[rules]`.
    pub fn actions(&self) -> &Actions {
        &self.actions
    }

    pub fn domains(&self) -> &DomainActions {
        &self.domains
    }

    pub fn whitelist(&self) -> &Whitelist {
        &self.whitelist
    }

    pub fn recipient_delimiter(&self) -> &str {
        &self.recipient_delimiter
    }

    pub fn exempt_role_accounts(&self) -> bool {
        self.exempt_role_accounts
    }

    /// `own_addresses`, and the interface addresses once added (`add_own_addresses`).
    pub fn own_networks(&self) -> &AddressSet {
        &self.own_networks
    }

    pub fn own_names(&self) -> &HashSet<String> {
        &self.own_names
    }

    pub fn trusted_networks(&self) -> &AddressSet {
        &self.trusted_networks
    }

    pub fn skip_authenticated(&self) -> bool {
        self.skip_authenticated
    }

    /// Adds the host's addresses (`Config::ruleset_with`).
    pub(crate) fn add_own_addresses(&mut self, ips: &[IpAddr]) {
        self.own_networks
            .extend(ips.iter().map(|&ip| ipnet::IpNet::from(ip)));
    }

    /// Whether some setting gives a DNS rule (`unknown`, `mismatch`) an action other than
    /// `off`: only then do the front ends ask DNS about a HELO name.
    pub fn needs_dns(&self) -> bool {
        // Only a rule key turns an opt-in rule on: an `action` never does.
        let on = |actions: &Actions| {
            RuleKind::ALL
                .into_iter()
                .filter(|r| r.is_dns())
                .any(|r| actions.per_rule[r.index()].is_some_and(|a| a != Action::Off))
        };
        let domains = &self.domains;
        on(&self.actions) || domains.exact.values().chain(domains.below.values()).any(on)
    }

    /// What a recipient gets when a DNS failure leaves a DNS rule that would refuse it
    /// undecided.
    pub fn dns_failure(&self) -> DnsFailure {
        self.dns_failure
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_networks.contains(ip)
    }
}
