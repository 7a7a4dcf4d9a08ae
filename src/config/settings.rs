//! `milter.conf` as written, and the environment's overrides of it, read with the types
//! that each key must have: a value of another type is an error, never converted (TOML's
//! `socket_mode = 0o660` is the integer 432, not the mode "0660").

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const ENV_PREFIX: &str = "BOGUS_HELO_MILTER_";

/// The file as written; every key has a default so that no file at all is a valid config.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub socket: String,
    pub policy_socket: String,
    pub socket_mode: String,
    pub socket_group: String,
    pub action: String,
    pub reply_url: String,
    pub tag_key: String,
    pub own_addresses: Vec<String>,
    pub own_interfaces: bool,
    pub own_names: Vec<String>,
    pub trusted_networks: Vec<String>,
    pub skip_authenticated: bool,
    pub whitelist: Vec<String>,
    pub recipient_delimiter: String,
    pub exempt_role_accounts: bool,
    pub max_connections: u64,
    pub idle_timeout: String,
    pub policy_idle_timeout: String,
    pub stats_interval: String,
    pub log_level: String,
    pub metrics_listen: String,
    /// The DNS servers asked about HELO names; none: those of /etc/resolv.conf.
    pub dns_servers: Vec<String>,
    pub dns_timeout: String,
    /// What a recipient gets when a DNS failure leaves a DNS rule that would refuse it
    /// undecided: "accept" or "tempfail".
    pub dns_failure: String,
    /// Rule name → action, for every recipient domain without its own.
    pub rules: BTreeMap<String, String>,
    pub domains: BTreeMap<String, DomainSettings>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainSettings {
    pub action: String,
    /// Rule name → action, for this domain.
    pub rules: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            socket: "inet:127.0.0.1:8895".into(),
            policy_socket: String::new(),
            socket_mode: "0660".into(),
            socket_group: String::new(),
            action: "reject".into(),
            reply_url: String::new(),
            tag_key: String::new(),
            own_addresses: Vec::new(),
            own_interfaces: true,
            own_names: Vec::new(),
            trusted_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            skip_authenticated: true,
            whitelist: Vec::new(),
            recipient_delimiter: "+".into(),
            exempt_role_accounts: true,
            max_connections: 1000,
            idle_timeout: "1h".into(),
            policy_idle_timeout: "300s".into(),
            stats_interval: "1h".into(),
            log_level: "info".into(),
            metrics_listen: String::new(),
            dns_servers: Vec::new(),
            dns_timeout: "2s".into(),
            dns_failure: "accept".into(),
            rules: BTreeMap::new(),
            domains: BTreeMap::new(),
        }
    }
}

/// An environment variable that overrides a key: `BOGUS_HELO_MILTER_ACTION=log`.
pub struct Override {
    pub name: String,
    pub value: String,
}

/// The `BOGUS_HELO_MILTER_*` variables of this process, sorted by name.
pub fn environment() -> Vec<Override> {
    let mut overrides: Vec<Override> = std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with(ENV_PREFIX).then(|| Override {
                name,
                value: value.to_string_lossy().into_owned(),
            })
        })
        .collect();
    overrides.sort_by(|a, b| a.name.cmp(&b.name));
    overrides
}

/// Reads `text` (TOML) with `overrides` on top, with strict types.
pub fn read(text: &str, overrides: &[Override], origin: &str) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    let defaults = defaults();
    for o in overrides {
        let (key, value) =
            typed_override(o, &defaults).map_err(|problem| ConfigError::Invalid {
                origin: origin.to_string(),
                key: o.name.clone(),
                value: o.value.clone(),
                problem,
            })?;
        builder = builder
            .set_override(key, value)
            .map_err(|e| syntax(origin, e))?;
    }
    let merged: config::Value = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| syntax(origin, e))?;
    let merged = to_toml(merged).unwrap_or(toml::Value::Table(toml::Table::new()));
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(merged, &mut track);
    Settings::deserialize(deserializer).map_err(|e| type_error(origin, &track.path(), &e))
}

fn syntax(origin: &str, e: config::ConfigError) -> ConfigError {
    ConfigError::Syntax {
        origin: origin.to_string(),
        message: e.to_string(),
    }
}

/// The built-in defaults as TOML values: what type each key has.
fn defaults() -> toml::Table {
    match toml::Value::try_from(Settings::default()) {
        Ok(toml::Value::Table(table)) => table,
        _ => toml::Table::new(),
    }
}

/// The key an override sets and its value, parsed as the type the key has.
fn typed_override(o: &Override, defaults: &toml::Table) -> Result<(String, config::Value), String> {
    let key = o.name[ENV_PREFIX.len()..].to_ascii_lowercase();
    let text = o.value.trim();
    let value = match defaults.get(&key) {
        None => return Err("no such key (see milter.conf.example for the keys)".into()),
        Some(toml::Value::String(_)) => config::Value::from(o.value.clone()),
        Some(toml::Value::Integer(_)) => config::Value::from(
            text.parse::<i64>()
                .map_err(|_| "expected an integer".to_string())?,
        ),
        Some(toml::Value::Boolean(_)) => config::Value::from(match text {
            "true" => true,
            "false" => false,
            _ => return Err("expected true or false".into()),
        }),
        // An empty variable empties the list.
        Some(toml::Value::Array(_)) => config::Value::from(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>(),
        ),
        Some(_) => {
            return Err(
                "tables ([rules], [domains]) can be set in the configuration file only".into(),
            )
        }
    };
    Ok((key, value))
}

/// The config crate's merged tree, as the TOML value it was read from: every value keeps
/// the type it was written with.
fn to_toml(value: config::Value) -> Option<toml::Value> {
    use config::ValueKind as K;
    Some(match value.kind {
        K::Nil => return None,
        K::Boolean(b) => toml::Value::Boolean(b),
        K::I64(n) => toml::Value::Integer(n),
        K::I128(n) => toml::Value::Integer(i64::try_from(n).ok()?),
        K::U64(n) => toml::Value::Integer(i64::try_from(n).ok()?),
        K::U128(n) => toml::Value::Integer(i64::try_from(n).ok()?),
        K::Float(x) => toml::Value::Float(x),
        K::String(s) => toml::Value::String(s),
        K::Array(items) => toml::Value::Array(items.into_iter().filter_map(to_toml).collect()),
        K::Table(table) => toml::Value::Table(
            table
                .into_iter()
                .filter_map(|(k, v)| Some((k, to_toml(v)?)))
                .collect(),
        ),
    })
}

/// A value of the wrong type, or an unknown key, with the key's full name.
fn type_error(origin: &str, path: &serde_path_to_error::Path, e: &toml::de::Error) -> ConfigError {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    for segment in path.iter() {
        let part = match segment {
            Segment::Map { key } if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                key.clone()
            }
            Segment::Map { key } => format!("{key:?}"),
            Segment::Seq { index } => format!("[{index}]"),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => "?".into(),
        };
        if !key.is_empty() && !part.starts_with('[') {
            key.push('.');
        }
        key.push_str(&part);
    }
    // Administrators write keys, not serde's fields.
    let message = e.message().trim().replace("unknown field", "unknown key");
    let mut problem = message.clone();
    if let Some(field) = message
        .strip_prefix("unknown key `")
        .and_then(|rest| rest.split('`').next())
    {
        if key.starts_with("domains") && field != "domains" && defaults().contains_key(field) {
            problem.push_str(&format!(
                "; `{field}` is a top-level key, but in TOML every key after a [domains.\"...\"] header belongs to that table: move it above the first [domains] table"
            ));
        }
    } else if key == "socket_mode" && message.contains("integer") {
        problem.push_str("; write the mode as a string, e.g. socket_mode = \"0660\"");
    }
    ConfigError::Type {
        origin: origin.to_string(),
        key,
        problem,
    }
}
