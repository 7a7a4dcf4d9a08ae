//! `milter.conf`: reading, checking, and compiling it into the policy and the runtime settings.

use crate::{
    address_set::AddressSet,
    helo::normalize_name,
    policy::{Action, Policy},
    socket::{Socket, UnixPermissions},
};
use config::{Environment, File, FileFormat};
use ipnet::IpNet;
use log::LevelFilter;
use serde::Deserialize;
use std::{
    collections::{BTreeMap, HashMap},
    error::Error,
    fmt::{self, Display, Formatter, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub const DEFAULT_PATH: &str = "/etc/bogus-helo-milter/milter.conf";
pub const ENV_PREFIX: &str = "BOGUS_HELO_MILTER";

/// The file as written; every key has a default so that no file at all is a valid config.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    socket: String,
    socket_mode: String,
    socket_group: String,
    action: String,
    reply_url: String,
    own_addresses: Vec<String>,
    own_names: Vec<String>,
    trusted_networks: Vec<String>,
    skip_authenticated: bool,
    whitelist: Vec<String>,
    max_connections: u64,
    idle_timeout: String,
    stats_interval: String,
    log_level: String,
    domains: HashMap<String, DomainSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DomainSettings {
    action: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            socket: "inet:127.0.0.1:8895".into(),
            socket_mode: "0660".into(),
            socket_group: String::new(),
            action: "reject".into(),
            reply_url: String::new(),
            own_addresses: Vec::new(),
            own_names: Vec::new(),
            trusted_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            skip_authenticated: true,
            whitelist: Vec::new(),
            max_connections: 1000,
            idle_timeout: "1h".into(),
            stats_interval: "1h".into(),
            log_level: "info".into(),
            domains: HashMap::new(),
        }
    }
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from; `None` when the default file is absent.
    pub file: Option<PathBuf>,
    pub socket: Socket,
    /// For a unix socket: its mode and group, as configured (the group by name).
    pub unix_permissions: UnixPermissions,
    pub socket_group: Option<String>,
    /// The policy without the interface addresses, which are added at run time
    /// (`with_interfaces`) so that the check does not depend on the machine it runs on.
    pub policy: Policy,
    pub max_connections: usize,
    /// A milter connection on which the MTA sends nothing for this long is closed.
    pub idle_timeout: Duration,
    pub stats_interval: Option<Duration>,
    pub log_level: LevelFilter,
}

/// A configuration that cannot be used, with what a mail administrator needs to fix it.
#[derive(Debug)]
pub enum ConfigError {
    /// The named file does not exist.
    Missing(PathBuf),
    /// Unreadable, not TOML, an unknown key or a value of the wrong type.
    Read { origin: String, message: String },
    /// A file that anyone may change is no policy of the administrator's.
    WorldWritable(PathBuf),
    /// A value of the right type that makes no sense.
    Invalid {
        origin: String,
        key: String,
        value: String,
        problem: String,
    },
}

impl Display for ConfigError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(path) => write!(f, "{}: no such configuration file", path.display()),
            Self::Read { origin, message } => write!(f, "{origin}: {message}"),
            Self::WorldWritable(path) => write!(
                f,
                "{0}: writable by every user; refusing it (chmod o-w {0})",
                path.display()
            ),
            Self::Invalid {
                origin,
                key,
                value,
                problem,
            } => write!(f, "{origin}: {key} = {value:?}: {problem}"),
        }
    }
}

impl Error for ConfigError {}

impl Config {
    /// Reads `path`, or the default file if `path` is `None` (where a missing default file
    /// means the built-in defaults), then the `BOGUS_HELO_MILTER_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_PATH), false),
        };
        let exists = path.exists();
        if required && !exists {
            return Err(ConfigError::Missing(path.into()));
        }
        if exists && is_world_writable(path) {
            return Err(ConfigError::WorldWritable(path.into()));
        }
        let origin = if exists {
            path.display().to_string()
        } else {
            "built-in defaults".to_string()
        };
        let env_names: Vec<String> = std::env::vars()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(ENV_PREFIX))
            .collect();
        let origin_with_env = if env_names.is_empty() {
            origin.clone()
        } else {
            format!("{origin} with {}", env_names.join(", "))
        };

        let mut builder = config::Config::builder();
        if exists {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let mut env = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .try_parsing(true)
            .list_separator(",");
        for key in [
            "own_addresses",
            "own_names",
            "trusted_networks",
            "whitelist",
        ] {
            env = env.with_list_parse_key(key);
        }
        let mut config = Self::build(builder.add_source(env), &origin_with_env)?;
        config.file = exists.then(|| path.into());
        Ok(config)
    }

    /// Reads a configuration from TOML text alone, with no file and no environment.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let source = File::from_str(text, FileFormat::Toml);
        Self::build(config::Config::builder().add_source(source), origin)
    }

    fn build(
        builder: config::builder::ConfigBuilder<config::builder::DefaultState>,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let read_error = |e: config::ConfigError| ConfigError::Read {
            origin: origin.to_string(),
            message: e.to_string(),
        };
        let settings: Settings = builder
            .build()
            .map_err(read_error)?
            .try_deserialize()
            .map_err(read_error)?;
        Self::from_settings(settings, origin)
    }

    fn from_settings(s: Settings, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |key: &str, value: &str, problem: &str| ConfigError::Invalid {
            origin: origin.into(),
            key: key.into(),
            value: value.into(),
            problem: problem.into(),
        };

        let socket = s
            .socket
            .parse()
            .map_err(|problem| invalid("socket", &s.socket, problem))?;

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
        let action = parse_action("action", &s.action)?;
        let mut domains = HashMap::new();
        for (domain, settings) in &s.domains {
            let key = format!("domains.\"{domain}\".action");
            if settings.action.is_empty() {
                return Err(invalid(
                    &key,
                    "",
                    "missing; expected reject, tempfail, log or off",
                ));
            }
            let name = normalize_name(domain);
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '@') {
                return Err(invalid(
                    &format!("domains.\"{domain}\""),
                    domain,
                    "not a domain name",
                ));
            }
            domains.insert(name, parse_action(&key, &settings.action)?);
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

        let mut own_names = std::collections::HashSet::new();
        for name in &s.own_names {
            let normalized = normalize_name(name.trim());
            if normalized.is_empty() || normalized.contains(char::is_whitespace) {
                return Err(invalid("own_names", name, "not a host name"));
            }
            own_names.insert(normalized);
        }

        let mut whitelist = std::collections::HashSet::new();
        for address in &s.whitelist {
            let trimmed = address.trim();
            let trimmed = trimmed
                .strip_prefix('<')
                .and_then(|a| a.strip_suffix('>'))
                .unwrap_or(trimmed);
            match trimmed.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                    whitelist.insert(trimmed.to_ascii_lowercase());
                }
                _ => {
                    return Err(invalid(
                        "whitelist",
                        address,
                        "not a mail address (expected local-part@domain)",
                    ))
                }
            }
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

        let log_level = s.log_level.parse::<LevelFilter>().map_err(|_| {
            invalid(
                "log_level",
                &s.log_level,
                "expected off, error, warn, info, debug or trace",
            )
        })?;

        Ok(Self {
            file: None,
            socket,
            unix_permissions: UnixPermissions { mode, group: gid },
            socket_group,
            policy: Policy {
                action,
                domains,
                whitelist,
                own_networks: AddressSet::new(own_networks),
                own_names,
                trusted_networks: AddressSet::new(trusted_networks),
                skip_authenticated: s.skip_authenticated,
                reply_url,
            },
            max_connections,
            idle_timeout,
            stats_interval,
            log_level,
        })
    }

    /// The policy as the milter applies it: the configured one plus this host's addresses.
    pub fn policy_with(&self, interfaces: &[IpAddr]) -> Policy {
        let mut policy = self.policy.clone();
        policy
            .own_networks
            .extend(interfaces.iter().map(|&ip| IpNet::from(ip)));
        policy
    }

    /// Where the config came from, for log lines.
    pub fn origin(&self) -> String {
        match &self.file {
            Some(path) => path.display().to_string(),
            None => "built-in defaults".to_string(),
        }
    }

    /// The effective configuration in `milter.conf` syntax, as `--check-config` prints it.
    pub fn to_toml(&self) -> String {
        fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
            let items: Vec<String> = items
                .into_iter()
                .map(|i| toml_string(&i.to_string()))
                .collect();
            format!("[{}]", items.join(", "))
        }
        fn sorted<T: Display>(items: impl IntoIterator<Item = T>) -> Vec<String> {
            let mut items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
            items.sort();
            items
        }
        let p = &self.policy;
        let mut out = String::new();
        let _ = writeln!(out, "# effective configuration from {}", self.origin());
        let _ = writeln!(out, "socket = \"{}\"", self.socket);
        let mode = self.unix_permissions.mode;
        let _ = writeln!(out, "socket_mode = \"{mode:04o}\"");
        let group = toml_string(self.socket_group.as_deref().unwrap_or(""));
        let _ = writeln!(out, "socket_group = {group}");
        let _ = writeln!(out, "action = \"{}\"", p.action);
        let url = toml_string(p.reply_url.as_deref().unwrap_or(""));
        let _ = writeln!(out, "reply_url = {url}");
        let _ = writeln!(out, "own_addresses = {}", list(p.own_networks.networks()));
        let _ = writeln!(out, "own_names = {}", list(sorted(&p.own_names)));
        let _ = writeln!(
            out,
            "trusted_networks = {}",
            list(p.trusted_networks.networks())
        );
        let _ = writeln!(out, "skip_authenticated = {}", p.skip_authenticated);
        let _ = writeln!(out, "whitelist = {}", list(sorted(&p.whitelist)));
        let _ = writeln!(out, "max_connections = {}", self.max_connections);
        let idle = humantime::format_duration(self.idle_timeout);
        let _ = writeln!(out, "idle_timeout = \"{idle}\"");
        let interval = self.stats_interval.map_or("0".to_string(), |d| {
            humantime::format_duration(d).to_string()
        });
        let _ = writeln!(out, "stats_interval = \"{interval}\"");
        let _ = writeln!(
            out,
            "log_level = \"{}\"",
            self.log_level.as_str().to_ascii_lowercase()
        );
        let domains: BTreeMap<_, _> = p.domains.iter().collect();
        for (domain, action) in domains {
            let domain = toml_string(domain);
            let _ = write!(out, "\n[domains.{domain}]\naction = \"{action}\"\n");
        }
        out
    }
}

fn is_world_writable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o002 != 0)
}

/// A TOML basic string: in double quotes, with `"`, `\` and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An address (`192.0.2.25`, a host network) or a network (`2001:db8::/64`); an address
/// literal's brackets and `IPv6:` tag are allowed too.
fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    crate::helo::parse_macro_ip(text).map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `--check-config` prints is itself a configuration that prints the same.
    fn round_trip(text: &str) {
        let config = Config::parse(text, "test").unwrap();
        let printed = config.to_toml();
        let again = Config::parse(&printed, "test").unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(again.to_toml(), printed);
    }

    #[test]
    fn the_printed_config_reads_back() {
        round_trip("");
        round_trip(include_str!("../milter.conf.example"));
        round_trip(
            "reply_url = \"https://x.example/a\\\"b\"
             own_names = [\"a\\\\b\", \"x\\u0001y\"]
             whitelist = [\"\\\"john\\\"@example.com\"]
             own_addresses = [\"[IPv6:2001:db8::1]\", \"192.0.2.1/24\"]
             stats_interval = \"90min\"
             idle_timeout = \"2s\"
             [domains.\"Ex\\\"ample.com\"]
             action = \"LOG\"",
        );
    }

    #[test]
    fn errors_name_origin_key_and_value() {
        let e = Config::parse("own_names = [\" \"]", "f.conf").unwrap_err();
        assert_eq!(e.to_string(), "f.conf: own_names = \" \": not a host name");
        let e = Config::parse("[domains.\"a b\"]\naction = \"log\"", "f.conf").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.conf: domains.\"a b\" = \"a b\": not a domain name"
        );
    }
}
