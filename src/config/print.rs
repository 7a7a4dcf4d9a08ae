//! The effective configuration in `milter.conf` syntax, as `--check-config` prints it:
//! itself a configuration that reads back to the same.

use super::Config;
use crate::ruleset::{Action, Actions, RuleKind, RuleSet};
use std::fmt::{Display, Write};

pub fn to_toml(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# effective configuration from {}", config.origin());
    for name in &config.env {
        let _ = writeln!(out, "# with {name} from the environment");
    }
    socket_keys(&mut out, config);
    ruleset_keys(&mut out, &config.ruleset);
    run_time_keys(&mut out, config);
    dns_keys(&mut out, config);
    let domains = tables(&mut out, &config.ruleset);
    effective_actions(&mut out, &config.ruleset, &domains);
    out
}

/// A TOML array of strings.
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

/// `socket`, `policy_socket` and their unix sockets' mode and group.
fn socket_keys(out: &mut String, config: &Config) {
    let listen = |socket: &Option<crate::socket::Socket>| {
        socket.as_ref().map_or(String::new(), |s| s.to_string())
    };
    let _ = writeln!(out, "socket = {}", toml_string(&listen(&config.socket)));
    let _ = writeln!(
        out,
        "policy_socket = {}",
        toml_string(&listen(&config.policy_socket))
    );
    let mode = config.unix_permissions.mode;
    let _ = writeln!(out, "socket_mode = \"{mode:04o}\"");
    let group = toml_string(config.socket_group.as_deref().unwrap_or(""));
    let _ = writeln!(out, "socket_group = {group}");
}

/// The top-level keys of the rule set.
fn ruleset_keys(out: &mut String, p: &RuleSet) {
    let _ = writeln!(
        out,
        "action = \"{}\"",
        p.actions().any.unwrap_or(crate::ruleset::Action::Reject)
    );
    let url = toml_string(p.reply_url().unwrap_or(""));
    let _ = writeln!(out, "reply_url = {url}");
    let key = toml_string(p.tag_key().unwrap_or(""));
    let _ = writeln!(out, "tag_key = {key}");
    let _ = writeln!(out, "own_addresses = {}", list(p.own_networks().networks()));
    let _ = writeln!(out, "own_names = {}", list(sorted(p.own_names())));
    let _ = writeln!(
        out,
        "trusted_networks = {}",
        list(p.trusted_networks().networks())
    );
    let _ = writeln!(out, "skip_authenticated = {}", p.skip_authenticated());
    let _ = writeln!(out, "whitelist = {}", list(sorted(p.whitelist().entries())));
    let _ = writeln!(
        out,
        "recipient_delimiter = {}",
        toml_string(p.recipient_delimiter())
    );
    let _ = writeln!(out, "exempt_role_accounts = {}", p.exempt_role_accounts());
}

/// The limits, timeouts, statistics, logging and metrics.
fn run_time_keys(out: &mut String, config: &Config) {
    let _ = writeln!(out, "own_interfaces = {}", config.own_interfaces);
    let _ = writeln!(out, "max_connections = {}", config.max_connections);
    let idle = humantime::format_duration(config.idle_timeout);
    let _ = writeln!(out, "idle_timeout = \"{idle}\"");
    let idle = humantime::format_duration(config.policy_idle_timeout);
    let _ = writeln!(out, "policy_idle_timeout = \"{idle}\"");
    let interval = config.stats_interval.map_or("0".to_string(), |d| {
        humantime::format_duration(d).to_string()
    });
    let _ = writeln!(out, "stats_interval = \"{interval}\"");
    let _ = writeln!(
        out,
        "log_level = \"{}\"",
        config.log_level.as_str().to_ascii_lowercase()
    );
    let metrics = config
        .metrics_listen
        .map_or(String::new(), |a| a.to_string());
    let _ = writeln!(out, "metrics_listen = {}", toml_string(&metrics));
}

/// The DNS settings, for the rules `unknown` and `mismatch`: one block, the last of the
/// top-level keys.
fn dns_keys(out: &mut String, config: &Config) {
    let _ = writeln!(out, "\n# DNS, for the rules unknown and mismatch");
    let _ = writeln!(
        out,
        "dns_failure = \"{}\"",
        config.ruleset.dns_failure().name()
    );
    let _ = writeln!(out, "dns_servers = {}", list(&config.dns.servers));
    let timeout = humantime::format_duration(config.dns.timeout);
    let _ = writeln!(out, "dns_timeout = \"{timeout}\"");
}

/// The `[rules]` and `[domains]` tables; returns the domain entries, sorted.
fn tables(out: &mut String, p: &RuleSet) -> Vec<(String, Actions)> {
    rule_table(out, "rules", &p.actions().per_rule);
    let mut domains: Vec<_> = p.domains().entries().collect();
    domains.sort_by(|a, b| a.0.cmp(&b.0));
    for (domain, actions) in &domains {
        let domain = toml_string(domain);
        if let Some(action) = actions.any {
            let _ = write!(out, "\n[domains.{domain}]\naction = \"{action}\"\n");
        }
        rule_table(out, &format!("domains.{domain}.rules"), &actions.per_rule);
    }
    domains
}

/// A `[rules]` table, when it sets any rule.
fn rule_table(out: &mut String, header: &str, per_rule: &[Option<Action>; RuleKind::ALL.len()]) {
    if per_rule.iter().any(Option::is_some) {
        let _ = writeln!(out, "\n[{header}]");
        for rule in RuleKind::ALL {
            if let Some(action) = per_rule[rule.index()] {
                let _ = writeln!(out, "{} = \"{action}\"", rule.name());
            }
        }
    }
}

/// What applies where, for every rule: the table an administrator checks a change by.
fn effective_actions(out: &mut String, p: &RuleSet, domains: &[(String, Actions)]) {
    let _ = writeln!(
        out,
        "\n# effective actions          own-ip     ip         rcpt-domain invalid    non-fqdn   unknown    mismatch"
    );
    // A `.parent` entry applies to the domains below it: show one of them.
    let mut rows = vec![("(other domains)".to_string(), String::new())];
    rows.extend(domains.iter().map(|(domain, _)| {
        let sample = match domain.strip_prefix('.') {
            Some(parent) => format!("*.{parent}"),
            None => domain.clone(),
        };
        let rcpt_domain = sample.replace('*', "sub");
        (sample, rcpt_domain)
    }));
    for (label, domain) in &rows {
        let [a, b, c, d, e, f, g] =
            RuleKind::ALL.map(|rule| p.action_for(domain, rule).0.to_string());
        let _ = writeln!(
            out,
            "#   {label:<26} {a:<10} {b:<10} {c:<11} {d:<10} {e:<10} {f:<10} {g}"
        );
    }
    // Which setting decides each cell, inherited ones included: why a row says what it says.
    let _ = writeln!(
        out,
        "# from (an entry's rule, then its action, from the most specific entry out; then [rules], then action):"
    );
    for (label, domain) in &rows {
        let from: Vec<String> = RuleKind::ALL
            .iter()
            .map(|&rule| format!("{} {}", rule.name(), p.action_for(domain, rule).1))
            .collect();
        let _ = writeln!(out, "#   {label:<26} {}", from.join(", "));
    }
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

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
        round_trip(include_str!("../../milter.conf.example"));
        round_trip(
            "reply_url = \"https://x.example/a\\\"b\"
             own_names = [\"Bücher.example\", \"mx_1.example.\"]
             whitelist = [\"\\\"john\\\"@example.com\", \"@Example.org\", \"Abuse@*\"]
             own_addresses = [\"[IPv6:2001:db8::1]\", \"192.0.2.1/24\"]
             recipient_delimiter = \"+-\"
             stats_interval = \"90min\"
             idle_timeout = \"2s\"
             policy_idle_timeout = \"90s\"
             socket = \"\"
             policy_socket = \"inet:[::1]:8896\"
             metrics_listen = \"[::1]:9465\"
             [domains.\"Example.com\"]
             action = \"LOG\"
             [domains.\".example.net\"]
             action = \"off\"",
        );
    }
}
