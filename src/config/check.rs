//! From `Settings` to a `Config`: every value checked, every name and address in the one
//! comparable form that the peer's text is compared in, and no two entries that say the
//! same thing (after normalising) in different words.

use super::{
    settings::{DomainSettings, Settings},
    values::{
        DnsServer, DnsTimeout, HostName, IdleTimeout, Listen, LogLevel, MaxConnections,
        MetricsListen, Network, PolicyIdleTimeout, RecipientDelimiter, ReplyUrl, SocketGroup,
        SocketMode, StatsInterval, TagKey, Value,
    },
    Config, ConfigError,
};
use crate::{
    address_set::AddressSet,
    domain,
    ruleset::{Action, Actions, DnsFailure, DomainActions, Parts, RuleKind, RuleSet},
    socket::{Socket, UnixPermissions},
    whitelist::{Entry, Whitelist},
};
use std::{collections::BTreeMap, net::SocketAddr};

pub fn compile(s: Settings, origin: &str) -> Result<Config, ConfigError> {
    let check = Check { origin };
    let (socket, policy_socket) = check.sockets(&s)?;
    let SocketMode(mode) = check.value("socket_mode", &s.socket_mode)?;
    let SocketGroup(group) = check.value("socket_group", &s.socket_group)?;
    let ruleset = check.ruleset(&s)?;
    let max_connections = s.max_connections.to_string();
    let MaxConnections(max_connections) = check.value("max_connections", &max_connections)?;
    let IdleTimeout(idle_timeout) = check.value("idle_timeout", &s.idle_timeout)?;
    let PolicyIdleTimeout(policy_idle_timeout) =
        check.value("policy_idle_timeout", &s.policy_idle_timeout)?;
    let StatsInterval(stats_interval) = check.value("stats_interval", &s.stats_interval)?;
    let metrics_listen = check.metrics_listen(&s.metrics_listen, [&socket, &policy_socket])?;
    let LogLevel(log_level) = check.value("log_level", &s.log_level)?;
    let dns_servers = check.unique("dns_servers", &s.dns_servers, |d: &DnsServer| {
        d.0.to_string()
    })?;
    let DnsTimeout(dns_timeout) = check.value("dns_timeout", &s.dns_timeout)?;
    let (socket_group, gid) = group.unzip();
    Ok(Config {
        file: None,
        env: Vec::new(),
        socket,
        policy_socket,
        unix_permissions: UnixPermissions { mode, group: gid },
        socket_group,
        ruleset,
        own_interfaces: s.own_interfaces,
        max_connections,
        idle_timeout,
        policy_idle_timeout,
        stats_interval,
        log_level,
        metrics_listen,
        dns: super::DnsSettings {
            servers: dns_servers.into_iter().map(|d| d.0).collect(),
            timeout: dns_timeout,
        },
    })
}

/// The checks of one configuration, whose errors name where it came from.
struct Check<'a> {
    origin: &'a str,
}

impl Check<'_> {
    fn invalid(&self, key: &str, value: &str, problem: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.into(),
            key: key.into(),
            value: value.into(),
            problem: problem.into(),
        }
    }

    /// Two entries that normalise to one: whichever came last would silently win.
    fn duplicate(&self, key: &str, first: &str, second: &str, normalized: &str) -> ConfigError {
        self.invalid(
            key,
            second,
            &format!("the same as the entry {first:?} (both are {normalized:?}); keep one"),
        )
    }

    /// The value written for `key`, parsed as its type.
    fn value<T: Value>(&self, key: &str, text: &str) -> Result<T, ConfigError> {
        T::parse(text).map_err(|problem| self.invalid(key, &T::shown(text), &problem))
    }

    /// A list's entries, each parsed as `T`.
    fn list<T: Value>(&self, key: &str, texts: &[String]) -> Result<Vec<T>, ConfigError> {
        texts.iter().map(|text| self.value(key, text)).collect()
    }

    /// A list's entries, of which no two are the same in their `normal` form.
    fn unique<T: Value>(
        &self,
        key: &str,
        texts: &[String],
        normal: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, ConfigError> {
        let mut spellings: BTreeMap<String, &str> = BTreeMap::new();
        let mut entries = Vec::new();
        for written in texts {
            let entry: T = self.value(key, written)?;
            let normalized = normal(&entry);
            if let Some(first) = spellings.insert(normalized.clone(), written) {
                return Err(self.duplicate(key, first, written, &normalized));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    /// The two front ends' sockets: "" turns one off; at least one must be on, and not
    /// both on one address.
    fn sockets(&self, s: &Settings) -> Result<(Option<Socket>, Option<Socket>), ConfigError> {
        let Listen(socket) = self.value("socket", &s.socket)?;
        let Listen(policy_socket) = self.value("policy_socket", &s.policy_socket)?;
        match (&socket, &policy_socket) {
            (None, None) => Err(self.invalid(
                "socket",
                &s.socket,
                "the milter's socket and policy_socket are both off (\"\"): nothing would listen; set at least one",
            )),
            (Some(milter), Some(policy)) if milter == policy => Err(self.invalid(
                "policy_socket",
                &s.policy_socket,
                "the same address as socket (the milter's): each needs its own",
            )),
            _ => Ok((socket, policy_socket)),
        }
    }

    /// The metrics endpoint's address, which neither front end may listen on.
    fn metrics_listen(
        &self,
        text: &str,
        sockets: [&Option<Socket>; 2],
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let MetricsListen(metrics_listen) = self.value("metrics_listen", text)?;
        let taken = |socket: &Option<Socket>| matches!(socket, Some(Socket::Inet(addr)) if Some(*addr) == metrics_listen);
        if sockets.into_iter().any(taken) {
            return Err(self.invalid(
                "metrics_listen",
                text,
                "the same address as socket or policy_socket: the endpoint needs its own port",
            ));
        }
        Ok(metrics_listen)
    }

    /// What the decision consults.
    fn ruleset(&self, s: &Settings) -> Result<RuleSet, ConfigError> {
        let actions = Actions {
            any: Some(self.value("action", &s.action)?),
            per_rule: self.rule_actions("rules", &s.rules)?,
        };
        let domains = self.domains(&s.domains)?;
        let ReplyUrl(reply_url) = self.value("reply_url", &s.reply_url)?;
        let TagKey(tag_key) = self.value("tag_key", &s.tag_key)?;
        let dns_failure: DnsFailure = self.value("dns_failure", &s.dns_failure)?;
        let own_networks = self.list("own_addresses", &s.own_addresses)?;
        let trusted_networks = self.list("trusted_networks", &s.trusted_networks)?;
        let own_names = self.unique("own_names", &s.own_names, |n: &HostName| n.0.clone())?;
        let entries = self.unique("whitelist", &s.whitelist, Entry::to_string)?;
        let RecipientDelimiter(recipient_delimiter) =
            self.value("recipient_delimiter", &s.recipient_delimiter)?;
        let networks =
            |list: Vec<Network>| AddressSet::new(list.into_iter().map(|n| n.0).collect());
        Ok(RuleSet::from(Parts {
            actions,
            domains,
            whitelist: Whitelist::new(entries),
            recipient_delimiter,
            exempt_role_accounts: s.exempt_role_accounts,
            own_networks: networks(own_networks),
            own_names: own_names.into_iter().map(|n| n.0).collect(),
            trusted_networks: networks(trusted_networks),
            skip_authenticated: s.skip_authenticated,
            reply_url,
            tag_key,
            dns_failure,
        }))
    }

    /// A `[rules]` table: rule name → action, under the key `prefix`.
    fn rule_actions(
        &self,
        prefix: &str,
        rules: &BTreeMap<String, String>,
    ) -> Result<[Option<Action>; RuleKind::ALL.len()], ConfigError> {
        let mut per_rule = [None; RuleKind::ALL.len()];
        for (name, value) in rules {
            let key = format!("{prefix}.{name}");
            let rule = name.parse::<RuleKind>().map_err(|()| {
                self.invalid(
                    &key,
                    value,
                    &format!("no such rule; the rules are {}", RuleKind::NAMES),
                )
            })?;
            let action = self.value(&key, value)?;
            if !rule.allows(action) {
                return Err(self.invalid(
                    &key,
                    value,
                    &format!(
                        "{} can only log, tag or be off: RFC 5321 §4.1.4 says a server MUST NOT refuse mail because the HELO does not match the client's address",
                        rule.name()
                    ),
                ));
            }
            per_rule[rule.index()] = Some(action);
        }
        Ok(per_rule)
    }

    /// The `[domains]` tables, no two for one domain.
    fn domains(
        &self,
        tables: &BTreeMap<String, DomainSettings>,
    ) -> Result<DomainActions, ConfigError> {
        let mut domains = DomainActions::default();
        let mut spellings: BTreeMap<String, &str> = BTreeMap::new();
        for (written, settings) in tables {
            let key = format!("domains.{written:?}");
            // `.example.com`: every domain below example.com.
            let (dot, name) = match written.trim().strip_prefix('.') {
                Some(parent) => (".", parent),
                None => ("", written.as_str()),
            };
            let name =
                domain::parse(name).map_err(|problem| self.invalid(&key, written, problem))?;
            let pattern = format!("{dot}{name}");
            if let Some(first) = spellings.insert(pattern.clone(), written) {
                return Err(self.duplicate("domains", first, written, &pattern));
            }
            domains.insert(&pattern, self.domain_actions(&key, written, settings)?);
        }
        Ok(domains)
    }

    /// One `[domains]` table's actions, of which it needs at least one.
    fn domain_actions(
        &self,
        key: &str,
        written: &str,
        settings: &DomainSettings,
    ) -> Result<Actions, ConfigError> {
        let entry = Actions {
            any: match settings.action.as_str() {
                "" => None,
                action => Some(self.value(&format!("{key}.action"), action)?),
            },
            per_rule: self.rule_actions(&format!("{key}.rules"), &settings.rules)?,
        };
        if entry == Actions::default() {
            return Err(self.invalid(
                &format!("{key}.action"),
                "",
                &format!(
                    "missing; a [domains] entry needs an action ({}) or a [domains.{written:?}.rules] table",
                    Action::NAMES
                ),
            ));
        }
        Ok(entry)
    }
}
