//! `milter.conf`: reading it (`settings`), parsing each value (`values`), checking it and
//! compiling it into the rule set and the run-time settings (`check`), and printing the
//! effective one (`print`).

mod check;
mod metrics_listen;
mod print;
mod settings;
mod values;

use crate::{ruleset::RuleSet, socket::Socket, socket::UnixPermissions};
use log::LevelFilter;
use std::{
    error::Error,
    fmt::{self, Display, Formatter},
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

pub use settings::ENV_PREFIX;

pub const DEFAULT_PATH: &str = "/etc/bogus-helo-milter/milter.conf";

/// A checked configuration: made only by `load` and `parse`, through every check, so its
/// fields are read through the methods of the same names.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from; `None` when the default file is absent.
    file: Option<PathBuf>,
    /// The `BOGUS_HELO_MILTER_*` variables that overrode it.
    env: Vec<String>,
    /// The milter's socket; `None` when `socket = ""` (only the policy service runs).
    socket: Option<Socket>,
    /// The Postfix policy service's socket; `None` (the default) when it is off.
    policy_socket: Option<Socket>,
    /// For a unix socket: its mode and group, as configured (the group by name).
    unix_permissions: UnixPermissions,
    socket_group: Option<String>,
    /// The rule set without the interface addresses, which are added at run time
    /// (`ruleset_with`) so that the check does not depend on the machine it runs on.
    ruleset: RuleSet,
    /// Whether the host's interface addresses are own addresses (`host::Host::read`).
    own_interfaces: bool,
    max_connections: usize,
    /// A milter connection on which the MTA sends nothing for this long is closed.
    idle_timeout: Duration,
    /// A policy connection silent this long between requests is closed, and a request
    /// must be complete this long after its first byte.
    policy_idle_timeout: Duration,
    stats_interval: Option<Duration>,
    log_level: LevelFilter,
    /// Where `GET /metrics` is served; `None` (the default) when it is off.
    metrics_listen: Option<SocketAddr>,
    dns: DnsSettings,
}

/// Where and how long the DNS lookups about HELO names ask (`dns::hickory::Hickory`,
/// `dns::Resolver`). Reloadable: a change rebuilds the resolver.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct DnsSettings {
    /// `dns_servers`; empty: the servers of /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// `dns_timeout`.
    pub timeout: Duration,
}

/// The fields, read-only.
impl Config {
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub fn env(&self) -> &[String] {
        &self.env
    }

    pub fn socket(&self) -> Option<&Socket> {
        self.socket.as_ref()
    }

    pub fn policy_socket(&self) -> Option<&Socket> {
        self.policy_socket.as_ref()
    }

    pub fn unix_permissions(&self) -> UnixPermissions {
        self.unix_permissions
    }

    pub fn socket_group(&self) -> Option<&str> {
        self.socket_group.as_deref()
    }

    pub fn ruleset(&self) -> &RuleSet {
        &self.ruleset
    }

    pub fn own_interfaces(&self) -> bool {
        self.own_interfaces
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn policy_idle_timeout(&self) -> Duration {
        self.policy_idle_timeout
    }

    pub fn stats_interval(&self) -> Option<Duration> {
        self.stats_interval
    }

    pub fn log_level(&self) -> LevelFilter {
        self.log_level
    }

    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.metrics_listen
    }

    pub fn dns(&self) -> &DnsSettings {
        &self.dns
    }
}

/// A configuration that cannot be used, with what a mail administrator needs to fix it.
#[derive(Debug)]
pub enum ConfigError {
    /// The named file does not exist.
    Missing(PathBuf),
    /// The file exists but cannot be read (permissions, say).
    Unreadable { path: PathBuf, error: io::Error },
    /// A directory or device where a file was expected.
    NotAFile(PathBuf),
    /// A file that anyone may change is no policy of the administrator's.
    WorldWritable(PathBuf),
    /// Not TOML.
    Syntax { origin: String, message: String },
    /// An unknown key, or a value of the wrong type.
    Type {
        origin: String,
        key: String,
        problem: String,
    },
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
            Self::Unreadable { path, error } => {
                write!(
                    f,
                    "{}: cannot read the configuration file: ",
                    path.display()
                )?;
                match error.kind() {
                    io::ErrorKind::PermissionDenied => f.write_str(
                        "permission denied (the milter's user needs read access to the file and search access to each directory above it)",
                    ),
                    _ => write!(f, "{error}"),
                }
            }
            Self::NotAFile(path) => write!(
                f,
                "{}: not a regular file (a directory?); expected the configuration file",
                path.display()
            ),
            Self::WorldWritable(path) => write!(
                f,
                "{0}: writable by every user; refusing it (chmod o-w {0})",
                path.display()
            ),
            Self::Syntax { origin, message } => write!(f, "{origin}: {message}"),
            Self::Type {
                origin,
                key,
                problem,
            } => write!(f, "{origin}: {key}: {problem}"),
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
        let text = match read_file(path) {
            Ok(text) => Some(text),
            Err(ConfigError::Missing(_)) if !required => None,
            Err(e) => return Err(e),
        };
        let overrides = settings::environment();
        let mut origin = match text {
            Some(_) => path.display().to_string(),
            None => "built-in defaults".to_string(),
        };
        let env: Vec<String> = overrides.iter().map(|o| o.name.clone()).collect();
        if !env.is_empty() {
            origin = format!("{origin} with {}", env.join(", "));
        }
        let settings = settings::read(text.as_deref().unwrap_or(""), &overrides, &origin)?;
        let mut config = check::compile(settings, &origin)?;
        config.file = text.is_some().then(|| path.into());
        config.env = env;
        Ok(config)
    }

    /// Reads a configuration from TOML text alone, with no file and no environment.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        check::compile(settings::read(text, &[], origin)?, origin)
    }

    /// The rule set as the front ends apply it: the configured one plus this host's addresses.
    pub fn ruleset_with(&self, interfaces: &[IpAddr]) -> RuleSet {
        let mut ruleset = self.ruleset.clone();
        ruleset.add_own_addresses(interfaces);
        ruleset
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
        print::to_toml(self)
    }

    /// The keys whose new values `new` cannot take effect before a restart.
    pub fn restart_keys(&self, new: &Self) -> Vec<&'static str> {
        // The mode and group apply to unix sockets only, and the sockets in force are
        // this configuration's: with none, a changed mode or group changes nothing.
        let unix = [&self.socket, &self.policy_socket]
            .into_iter()
            .any(|s| matches!(s, Some(crate::socket::Socket::Unix(_))));
        [
            ("socket", self.socket != new.socket),
            ("policy_socket", self.policy_socket != new.policy_socket),
            (
                "socket_mode",
                unix && self.unix_permissions.mode != new.unix_permissions.mode,
            ),
            (
                "socket_group",
                unix && self.socket_group != new.socket_group,
            ),
            (
                "max_connections",
                self.max_connections != new.max_connections,
            ),
            ("idle_timeout", self.idle_timeout != new.idle_timeout),
            (
                "policy_idle_timeout",
                self.policy_idle_timeout != new.policy_idle_timeout,
            ),
            ("metrics_listen", self.metrics_listen != new.metrics_listen),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// `new` with this configuration's restart-only settings, which stay in force.
    pub fn keep_restart_settings(&self, new: Self) -> Self {
        Self {
            socket: self.socket.clone(),
            policy_socket: self.policy_socket.clone(),
            unix_permissions: self.unix_permissions,
            socket_group: self.socket_group.clone(),
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            policy_idle_timeout: self.policy_idle_timeout,
            metrics_listen: self.metrics_listen,
            ..new
        }
    }
}

/// The file's text; a missing file, an unreadable one and a directory are told apart.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => ConfigError::Missing(path.into()),
        _ => ConfigError::Unreadable {
            path: path.into(),
            error,
        },
    })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile(path.into()));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(ConfigError::WorldWritable(path.into()));
    }
    let bytes = std::fs::read(path).map_err(|error| ConfigError::Unreadable {
        path: path.into(),
        error,
    })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::Syntax {
        origin: path.display().to_string(),
        message: "not UTF-8 text".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::Config;

    /// Both sockets are bound at start: a reload names a changed one and keeps the old.
    #[test]
    fn sockets_change_at_restart_only() {
        let old = Config::parse("policy_socket = \"inet:127.0.0.1:8896\"", "old").unwrap();
        let new = Config::parse(
            "socket = \"\"\npolicy_socket = \"inet:127.0.0.1:9896\"\nlog_level = \"debug\"\nmetrics_listen = \"[::1]:9465\"",
            "new",
        )
        .unwrap();
        let new_level = new.log_level;
        assert_eq!(
            old.restart_keys(&new),
            ["socket", "policy_socket", "metrics_listen"]
        );
        let kept = old.keep_restart_settings(new);
        assert_eq!(kept.socket, old.socket);
        assert_eq!(kept.policy_socket, old.policy_socket);
        assert_eq!(kept.metrics_listen, None);
        assert_eq!(kept.log_level, new_level);
    }
}
