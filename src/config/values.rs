//! One type per kind of value in `milter.conf`, each parsing the text written for a key
//! into what the configuration holds. `Err` says what is wrong with the value; `check`
//! adds the file, the key and the value. A value whose mistakes need more words gets a
//! file of its own (`metrics_listen.rs`).

use crate::{
    domain, ip_text,
    ruleset::{Action, DnsFailure},
    socket::Socket,
    whitelist::Entry,
};
use ipnet::IpNet;
use log::LevelFilter;
use std::{net::SocketAddr, time::Duration};

/// `tag_key`'s length: enough not to be guessed, short enough for a header.
const TAG_KEY_MIN: usize = 16;
const TAG_KEY_MAX: usize = 128;

/// A key's value, parsed from the text written for it.
pub trait Value: Sized {
    /// The value, or what is wrong with `text`.
    fn parse(text: &str) -> Result<Self, String>;

    /// `text` as an error shows it.
    fn shown(text: &str) -> String {
        text.to_string()
    }
}

/// `socket`, `policy_socket`: where a front end listens; `None` for "" (it is off).
pub struct Listen(pub Option<Socket>);

impl Value for Listen {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" => Ok(Self(None)),
            spec => spec.parse().map(|socket| Self(Some(socket))),
        }
    }
}

/// `socket_mode`: an octal file mode, such as `0660`.
pub struct SocketMode(pub u32);

impl Value for SocketMode {
    fn parse(text: &str) -> Result<Self, String> {
        u32::from_str_radix(text.trim(), 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .map(Self)
            .ok_or_else(|| "expected an octal file mode such as \"0660\"".into())
    }
}

/// `socket_group`: a group by name, and its ID; `None` for "" (the process's own).
pub struct SocketGroup(pub Option<(String, u32)>);

impl Value for SocketGroup {
    fn parse(text: &str) -> Result<Self, String> {
        let name = match text.trim() {
            "" => return Ok(Self(None)),
            name => name,
        };
        match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Ok(Self(Some((name.to_string(), group.gid.as_raw())))),
            Ok(None) => Err("no such group".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn shown(text: &str) -> String {
        text.trim().to_string()
    }
}

/// `action`, and each action in `[rules]` and `[domains]` tables.
impl Value for Action {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|()| format!("expected {}", Action::NAMES))
    }
}

/// `dns_failure`: what a recipient gets when a DNS failure leaves a DNS rule that would
/// refuse it undecided.
impl Value for DnsFailure {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "accept" => Ok(Self::Accept),
            "tempfail" => Ok(Self::Tempfail),
            _ => Err("expected accept or tempfail".into()),
        }
    }
}

/// `reply_url`: appended to reply texts; `None` for "".
pub struct ReplyUrl(pub Option<String>);

impl Value for ReplyUrl {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" => Ok(Self(None)),
            url if url.bytes().all(|b| b.is_ascii_graphic()) && url.len() <= 200 => {
                Ok(Self(Some(url.to_string())))
            }
            _ => Err("must be printable ASCII without spaces, at most 200 characters".into()),
        }
    }
}

/// `tag_key`: the secret in the policy service's tag header; `None` for "".
pub struct TagKey(pub Option<String>);

impl Value for TagKey {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" => Ok(Self(None)),
            key if (TAG_KEY_MIN..=TAG_KEY_MAX).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(Self(Some(key.to_string())))
            }
            _ => Err(format!(
                "must be {TAG_KEY_MIN} to {TAG_KEY_MAX} letters, digits, '-' or '_' (it goes into a regexp map as it stands), e.g. from: head -c 24 /dev/urandom | base64 | tr '+/' '-_'"
            )),
        }
    }

    /// A secret: not repeated in the error, which may end up in a shared log.
    fn shown(text: &str) -> String {
        format!("({} characters, not shown)", text.chars().count())
    }
}

/// An entry of `own_addresses` or `trusted_networks`: an address (`192.0.2.25`, a host
/// network) or a network (`2001:db8::/64`); an address literal's brackets and `IPv6:` tag
/// are allowed too.
pub struct Network(pub IpNet);

impl Value for Network {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Self(net.trunc()));
        }
        // Only the plain dotted quad for IPv4: `inet_aton`'s other spellings are for
        // reading a peer's HELO, not for writing a configuration.
        if text.split('.').count() == 4 || text.contains(':') {
            if let Some(ip) = ip_text::parse(text) {
                return Ok(Self(IpNet::from(ip)));
            }
        }
        Err("not an IP address or network".into())
    }
}

/// An entry of `own_names`: a host name in comparable form.
pub struct HostName(pub String);

impl Value for HostName {
    fn parse(text: &str) -> Result<Self, String> {
        domain::parse(text).map(Self).map_err(String::from)
    }
}

/// An entry of `whitelist`.
impl Value for Entry {
    fn parse(text: &str) -> Result<Self, String> {
        Entry::parse(text).map_err(String::from)
    }
}

/// `recipient_delimiter`: the characters that start a subaddress.
pub struct RecipientDelimiter(pub String);

impl Value for RecipientDelimiter {
    fn parse(text: &str) -> Result<Self, String> {
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '"')
        {
            return Err(
                "characters that start a subaddress, such as \"+\" or \"+-\"; \"\" for none".into(),
            );
        }
        Ok(Self(text.to_string()))
    }
}

/// `max_connections`: connections served at once, per front end.
pub struct MaxConnections(pub usize);

impl Value for MaxConnections {
    fn parse(text: &str) -> Result<Self, String> {
        match text.parse::<usize>() {
            Ok(n @ 1..=1_000_000) => Ok(Self(n)),
            _ => Err("expected a number from 1 to 1000000".into()),
        }
    }
}

/// `idle_timeout`: how long a milter connection may be silent. The MTA is silent on its
/// milter connection while the client sends the message (headers and body are not asked
/// for), so this must outlast a slow DATA.
pub struct IdleTimeout(pub Duration);

impl Value for IdleTimeout {
    fn parse(text: &str) -> Result<Self, String> {
        timeout(text, "\"1h\" or \"30min\"").map(Self)
    }
}

/// `policy_idle_timeout`: how long a policy connection may be silent between requests.
/// Postfix closes a policy connection itself after smtpd_policy_service_max_idle (300 s
/// by default) without a request: a silent connection that outlives it is no smtpd's,
/// and holds one of max_connections.
pub struct PolicyIdleTimeout(pub Duration);

impl Value for PolicyIdleTimeout {
    fn parse(text: &str) -> Result<Self, String> {
        timeout(text, "\"300s\" or \"5min\"").map(Self)
    }
}

/// A duration of at least a second; `examples` for the message.
fn timeout(text: &str, examples: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err("must be at least 1s".into()),
        Err(e) => Err(format!("{e}; expected a duration such as {examples}")),
    }
}

/// `stats_interval`: how often the statistics line is logged; `None` for "0" or "".
pub struct StatsInterval(pub Option<Duration>);

impl Value for StatsInterval {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "0" | "" => Ok(Self(None)),
            text => match humantime::parse_duration(text) {
                Ok(d) if d.is_zero() => Ok(Self(None)),
                Ok(d) => Ok(Self(Some(d))),
                Err(e) => Err(format!(
                    "{e}; expected a duration such as \"1h\" or \"30min\", or \"0\""
                )),
            },
        }
    }
}

/// `metrics_listen`: where the metrics endpoint listens; `None` for "".
pub struct MetricsListen(pub Option<SocketAddr>);

impl Value for MetricsListen {
    fn parse(text: &str) -> Result<Self, String> {
        super::metrics_listen::parse(text).map(Self)
    }
}

/// An entry of `dns_servers`: `IP`, `IP:port`, `[IPv6]` or `[IPv6]:port`; port 53 when
/// none is given.
pub struct DnsServer(pub SocketAddr);

impl Value for DnsServer {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        // An IPv6 address in brackets without a port is one too.
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        let addr = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => text.parse::<SocketAddr>().map_err(|_| {
                "expected a DNS server's address, with a port or not: \"192.0.2.53\", \"127.0.0.1:5353\", \"2001:db8::53\" or \"[::1]:5353\"".to_string()
            })?,
        };
        if addr.port() == 0 {
            return Err("port 0 is no server's; leave the port out for 53".into());
        }
        if addr.ip().is_unspecified() {
            return Err("an unspecified address (0.0.0.0, ::) is no server's".into());
        }
        Ok(Self(SocketAddr::new(addr.ip().to_canonical(), addr.port())))
    }
}

/// The bounds of `dns_timeout`: below the lower a busy resolver's honest answer would read
/// as a failure; above the upper the MTA's own wait for the milter (Postfix's
/// `milter_command_timeout`, 30 s) would come near.
pub const DNS_TIMEOUT_MIN: Duration = Duration::from_millis(100);
pub const DNS_TIMEOUT_MAX: Duration = Duration::from_secs(20);

/// `dns_timeout`: how long a DNS question may take, and a RCPT wait for the answers.
pub struct DnsTimeout(pub Duration);

impl Value for DnsTimeout {
    fn parse(text: &str) -> Result<Self, String> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if (DNS_TIMEOUT_MIN..=DNS_TIMEOUT_MAX).contains(&d) => Ok(Self(d)),
            Ok(_) => Err("must be from 100ms to 20s".into()),
            Err(e) => Err(format!(
                "{e}; expected a duration such as \"2s\" or \"500ms\""
            )),
        }
    }
}

/// `log_level`.
pub struct LogLevel(pub LevelFilter);

impl Value for LogLevel {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map(Self)
            .map_err(|_| "expected off, error, warn, info, debug or trace".into())
    }
}
