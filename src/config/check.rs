//! From `Settings` to a `Config`: every value checked, every name and address in the one
//! comparable form that the peer's text is compared in, and no two entries that say the
//! same thing (after normalising) in different words.

use super::{settings::Settings, Config, ConfigError};
use crate::{
    address_set::AddressSet,
    domain, ip_text,
    policy::{Action, Actions, DomainActions, Parts, Policy, RuleKind},
    socket::{Socket, UnixPermissions},
    whitelist::{Entry, Whitelist},
};
use ipnet::IpNet;
use log::LevelFilter;
use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

/// `tag_key`'s length: enough not to be guessed, short enough for a header.
const TAG_KEY_MIN: usize = 16;
const TAG_KEY_MAX: usize = 128;

pub fn compile(s: Settings, origin: &str) -> Result<Config, ConfigError> {
    let invalid = |key: &str, value: &str, problem: &str| ConfigError::Invalid {
        origin: origin.into(),
        key: key.into(),
        value: value.into(),
        problem: problem.into(),
    };
    // Two entries that normalise to one: whichever came last would silently win.
    let duplicate = |key: &str, first: &str, second: &str, normalized: &str| {
        invalid(
            key,
            second,
            &format!("the same as the entry {first:?} (both are {normalized:?}); keep one"),
        )
    };

    // "" turns a front end off; at least one must be on, and not both on one address.
    let listen = |key: &str, value: &str| match value.trim() {
        "" => Ok(None),
        spec => spec
            .parse()
            .map(Some)
            .map_err(|problem: String| invalid(key, value, &problem)),
    };
    let socket: Option<Socket> = listen("socket", &s.socket)?;
    let policy_socket = listen("policy_socket", &s.policy_socket)?;
    match (&socket, &policy_socket) {
        (None, None) => {
            return Err(invalid(
                "socket",
                &s.socket,
                "the milter's socket and policy_socket are both off (\"\"): nothing would listen; set at least one",
            ))
        }
        (Some(milter), Some(policy)) if milter == policy => {
            return Err(invalid(
                "policy_socket",
                &s.policy_socket,
                "the same address as socket (the milter's): each needs its own",
            ))
        }
        _ => {}
    }

    let mode = u32::from_str_radix(s.socket_mode.trim(), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| {
            invalid(
                "socket_mode",
                &s.socket_mode,
                "expected an octal file mode such as \"0660\"",
            )
        })?;
    let socket_group = match s.socket_group.trim() {
        "" => None,
        name => Some(name.to_string()),
    };
    let gid = match &socket_group {
        None => None,
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid.as_raw()),
            Ok(None) => return Err(invalid("socket_group", name, "no such group")),
            Err(e) => return Err(invalid("socket_group", name, &e.to_string())),
        },
    };

    let parse_action = |key: &str, value: &str| {
        value
            .parse::<Action>()
            .map_err(|()| invalid(key, value, &format!("expected {}", Action::NAMES)))
    };
    // A `[rules]` table: rule name → action, under the key `prefix`.
    let rule_actions = |prefix: &str, rules: &BTreeMap<String, String>| {
        let mut per_rule = [None; 3];
        for (name, value) in rules {
            let key = format!("{prefix}.{name}");
            let rule = name.parse::<RuleKind>().map_err(|()| {
                invalid(
                    &key,
                    value,
                    &format!("no such rule; the rules are {}", RuleKind::NAMES),
                )
            })?;
            per_rule[rule.index()] = Some(parse_action(&key, value)?);
        }
        Ok::<_, ConfigError>(per_rule)
    };
    let actions = Actions {
        any: Some(parse_action("action", &s.action)?),
        per_rule: rule_actions("rules", &s.rules)?,
    };
    let mut domains = DomainActions::default();
    let mut domain_spellings: BTreeMap<String, &str> = BTreeMap::new();
    for (written, settings) in &s.domains {
        let key = format!("domains.{written:?}");
        // `.example.com`: every domain below example.com.
        let (dot, name) = match written.trim().strip_prefix('.') {
            Some(parent) => (".", parent),
            None => ("", written.as_str()),
        };
        let name = domain::parse(name).map_err(|problem| invalid(&key, written, problem))?;
        let pattern = format!("{dot}{name}");
        if let Some(first) = domain_spellings.insert(pattern.clone(), written) {
            return Err(duplicate("domains", first, written, &pattern));
        }
        let entry = Actions {
            any: match settings.action.as_str() {
                "" => None,
                action => Some(parse_action(&format!("{key}.action"), action)?),
            },
            per_rule: rule_actions(&format!("{key}.rules"), &settings.rules)?,
        };
        if entry == Actions::default() {
            return Err(invalid(
                &format!("{key}.action"),
                "",
                &format!(
                    "missing; a [domains] entry needs an action ({}) or a [domains.{written:?}.rules] table",
                    Action::NAMES
                ),
            ));
        }
        domains.insert(&pattern, entry);
    }

    let reply_url = match s.reply_url.trim() {
        "" => None,
        url if url.bytes().all(|b| b.is_ascii_graphic()) && url.len() <= 200 => {
            Some(url.to_string())
        }
        _ => {
            return Err(invalid(
                "reply_url",
                &s.reply_url,
                "must be printable ASCII without spaces, at most 200 characters",
            ))
        }
    };

    let tag_key = match s.tag_key.as_str() {
        "" => None,
        key if (TAG_KEY_MIN..=TAG_KEY_MAX).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(key.to_string())
        }
        _ => {
            // A secret: not repeated in the error, which may end up in a shared log.
            return Err(invalid(
                "tag_key",
                &format!("({} characters, not shown)", s.tag_key.chars().count()),
                &format!(
                    "must be {TAG_KEY_MIN} to {TAG_KEY_MAX} letters, digits, '-' or '_' (it goes into a regexp map as it stands), e.g. from: head -c 24 /dev/urandom | base64 | tr '+/' '-_'"
                ),
            ));
        }
    };

    let networks = |key: &str, values: &[String]| {
        values
            .iter()
            .map(|v| {
                parse_network(v).ok_or_else(|| invalid(key, v, "not an IP address or network"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let own_networks = networks("own_addresses", &s.own_addresses)?;
    let trusted_networks = networks("trusted_networks", &s.trusted_networks)?;

    let mut own_names = HashSet::new();
    let mut name_spellings: BTreeMap<String, &str> = BTreeMap::new();
    for written in &s.own_names {
        let name =
            domain::parse(written).map_err(|problem| invalid("own_names", written, problem))?;
        if let Some(first) = name_spellings.insert(name.clone(), written) {
            return Err(duplicate("own_names", first, written, &name));
        }
        own_names.insert(name);
    }

    let mut entries = Vec::new();
    let mut entry_spellings: BTreeMap<String, &str> = BTreeMap::new();
    for written in &s.whitelist {
        let entry =
            Entry::parse(written).map_err(|problem| invalid("whitelist", written, problem))?;
        let normalized = entry.to_string();
        if let Some(first) = entry_spellings.insert(normalized.clone(), written) {
            return Err(duplicate("whitelist", first, written, &normalized));
        }
        entries.push(entry);
    }

    let recipient_delimiter = s.recipient_delimiter.clone();
    if recipient_delimiter
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '"')
    {
        return Err(invalid(
            "recipient_delimiter",
            &recipient_delimiter,
            "characters that start a subaddress, such as \"+\" or \"+-\"; \"\" for none",
        ));
    }

    let max_connections = match usize::try_from(s.max_connections) {
        Ok(n @ 1..=1_000_000) => n,
        _ => {
            return Err(invalid(
                "max_connections",
                &s.max_connections.to_string(),
                "expected a number from 1 to 1000000",
            ))
        }
    };

    // The MTA is silent on its milter connection while the client sends the message
    // (headers and body are not asked for), so this must outlast a slow DATA.
    let idle_timeout = match humantime::parse_duration(s.idle_timeout.trim()) {
        Ok(d) if d >= Duration::from_secs(1) => d,
        Ok(_) => {
            return Err(invalid(
                "idle_timeout",
                &s.idle_timeout,
                "must be at least 1s",
            ))
        }
        Err(e) => {
            return Err(invalid(
                "idle_timeout",
                &s.idle_timeout,
                &format!("{e}; expected a duration such as \"1h\" or \"30min\""),
            ))
        }
    };

    // Postfix closes a policy connection itself after smtpd_policy_service_max_idle (300 s
    // by default) without a request: a silent connection that outlives it is no smtpd's,
    // and holds one of max_connections.
    let policy_idle_timeout = match humantime::parse_duration(s.policy_idle_timeout.trim()) {
        Ok(d) if d >= Duration::from_secs(1) => d,
        Ok(_) => {
            return Err(invalid(
                "policy_idle_timeout",
                &s.policy_idle_timeout,
                "must be at least 1s",
            ))
        }
        Err(e) => {
            return Err(invalid(
                "policy_idle_timeout",
                &s.policy_idle_timeout,
                &format!("{e}; expected a duration such as \"300s\" or \"5min\""),
            ))
        }
    };

    let stats_interval = match s.stats_interval.trim() {
        "0" | "" => None,
        text => match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                return Err(invalid(
                    "stats_interval",
                    &s.stats_interval,
                    &format!("{e}; expected a duration such as \"1h\" or \"30min\", or \"0\""),
                ))
            }
        },
    };

    let metrics_listen = super::metrics_listen::parse(&s.metrics_listen)
        .map_err(|problem| invalid("metrics_listen", &s.metrics_listen, &problem))?;
    let taken = |socket: &Option<Socket>| matches!(socket, Some(Socket::Inet(addr)) if Some(*addr) == metrics_listen);
    if taken(&socket) || taken(&policy_socket) {
        return Err(invalid(
            "metrics_listen",
            &s.metrics_listen,
            "the same address as socket or policy_socket: the endpoint needs its own port",
        ));
    }

    let log_level = s.log_level.parse::<LevelFilter>().map_err(|_| {
        invalid(
            "log_level",
            &s.log_level,
            "expected off, error, warn, info, debug or trace",
        )
    })?;

    Ok(Config {
        file: None,
        env: Vec::new(),
        socket,
        policy_socket,
        unix_permissions: UnixPermissions { mode, group: gid },
        socket_group,
        policy: Policy::from(Parts {
            actions,
            domains,
            whitelist: Whitelist::new(entries),
            recipient_delimiter,
            exempt_role_accounts: s.exempt_role_accounts,
            own_networks: AddressSet::new(own_networks),
            own_names,
            trusted_networks: AddressSet::new(trusted_networks),
            skip_authenticated: s.skip_authenticated,
            reply_url,
            tag_key,
        }),
        own_interfaces: s.own_interfaces,
        max_connections,
        idle_timeout,
        policy_idle_timeout,
        stats_interval,
        log_level,
        metrics_listen,
    })
}

/// An address (`192.0.2.25`, a host network) or a network (`2001:db8::/64`); an address
/// literal's brackets and `IPv6:` tag are allowed too.
fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    // Only the plain dotted quad for IPv4: `inet_aton`'s other spellings are for reading
    // a peer's HELO, not for writing a configuration.
    if text.split('.').count() == 4 || text.contains(':') {
        return ip_text::parse(text).map(IpNet::from);
    }
    None
}
