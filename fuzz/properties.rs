//! The properties the fuzz targets check, shared with the stable test
//! `tests/fuzz_regressions.rs`, which replays the inputs kept in `fuzz/regressions/`.

use arbitrary::Arbitrary;
use bogus_helo_milter::{
    address_set::AddressSet,
    config::Config,
    helo::{normalize_name, parse_macro_ip, Helo},
    policy::{Action, Policy},
    recipient::{base_address, Recipient},
    verdict::{decide, Connection, Reply, Rule, Verdict},
};
use ipnet::IpNet;
use std::net::IpAddr;

/// The HELO and recipient parsers: total, and consistent with what they claim.
pub fn helo(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Helo::parse(&text) {
        Helo::Ip(ip) => {
            assert_eq!(ip, ip.to_canonical(), "an IP HELO is canonical");
            assert!(
                text.bytes().any(|b| b.is_ascii_hexdigit() || b == b':'),
                "{text:?}"
            );
        }
        Helo::Name(name) => {
            assert_eq!(name, name.to_ascii_lowercase());
            assert_eq!(name, normalize_name(&text));
        }
    }
    let _ = parse_macro_ip(&text);
    let rcpt = Recipient::parse(&text);
    assert!(text.contains(rcpt.address));
    assert!(rcpt.address.contains(rcpt.domain) || rcpt.domain.is_empty());
    let base = base_address(rcpt.address);
    assert_eq!(base_address(&base), base, "base_address is idempotent");
}

/// The config reader: never panics; what `--check-config` prints reads back the same.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.conf") {
        Ok(config) => {
            let printed = config.to_toml();
            let again = Config::parse(&printed, "fuzz.conf")
                .unwrap_or_else(|e| panic!("printed config does not read back: {e}\n{printed}"));
            assert_eq!(again.to_toml(), printed);
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.conf: "), "{e}"),
    }
}

#[derive(Arbitrary, Debug)]
pub struct DecisionInput {
    helo: Option<String>,
    rcpt: String,
    client: Option<IpAddr>,
    local: Vec<IpAddr>,
    server_name: Option<String>,
    authenticated: bool,
    action: u8,
    domains: Vec<(String, u8)>,
    whitelist: Vec<String>,
    own_networks: Vec<(IpAddr, u8)>,
    own_names: Vec<String>,
    trusted_networks: Vec<(IpAddr, u8)>,
    skip_authenticated: bool,
    reply_url: Option<String>,
}

fn action(n: u8) -> Action {
    [Action::Reject, Action::Tempfail, Action::Log, Action::Off][usize::from(n % 4)]
}

fn networks(list: &[(IpAddr, u8)]) -> Vec<IpNet> {
    list.iter()
        .filter_map(|&(ip, len)| IpNet::new(ip.to_canonical(), len).ok())
        .map(|net| net.trunc())
        .collect()
}

/// The whole decision, on a policy built as the config reader builds one: never panics,
/// never refuses what an exemption covers or what no rule names, and replies only with
/// the page's texts on one printable line.
pub fn decision(input: &DecisionInput) {
    let reply_url = input
        .reply_url
        .clone()
        .filter(|url| !url.is_empty() && url.bytes().all(|b| b.is_ascii_graphic()));
    let policy = Policy {
        action: action(input.action),
        domains: input
            .domains
            .iter()
            .map(|(domain, a)| (normalize_name(domain), action(*a)))
            .collect(),
        whitelist: input
            .whitelist
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect(),
        own_networks: AddressSet::new(networks(&input.own_networks)),
        own_names: input.own_names.iter().map(|n| normalize_name(n)).collect(),
        trusted_networks: AddressSet::new(networks(&input.trusted_networks)),
        skip_authenticated: input.skip_authenticated,
        reply_url,
    };
    let helo = input.helo.as_deref().map(Helo::parse);
    let conn = Connection {
        helo: helo.clone(),
        client: input.client.map(|ip| ip.to_canonical()),
        local: input.local.iter().map(|ip| ip.to_canonical()).collect(),
        server_name: input.server_name.as_deref().map(normalize_name),
        authenticated: input.authenticated,
    };
    let rcpt = Recipient::parse(&input.rcpt);
    let verdict = decide(&policy, &conn, &rcpt);

    let refused = matches!(
        verdict,
        Verdict::Reject(_) | Verdict::Tempfail(_) | Verdict::Log(_)
    );
    if refused {
        assert!(
            !policy.is_whitelisted(rcpt.address),
            "whitelisted: {verdict:?}"
        );
        assert!(
            !conn.client.is_some_and(|ip| policy.is_trusted(ip)),
            "trusted: {verdict:?}"
        );
        assert!(
            !(conn.authenticated && policy.skip_authenticated),
            "authenticated: {verdict:?}"
        );
        assert_ne!(policy.action_for(rcpt.domain), Action::Off);
    }
    match (verdict.rule(), &helo) {
        (None, _) => {}
        (Some(_), None) => panic!("a rule matched with no HELO"),
        (Some(Rule::OwnIp(ip)), Some(Helo::Ip(helo_ip))) => {
            assert_eq!(ip, *helo_ip);
            assert!(conn.local.contains(&ip) || policy.is_own_address(ip));
        }
        (Some(Rule::Ip), Some(Helo::Ip(ip))) => {
            assert!(!conn.local.contains(ip) && !policy.is_own_address(*ip));
        }
        (Some(Rule::RcptDomain), Some(Helo::Name(name))) => {
            assert!(
                name.eq_ignore_ascii_case(rcpt.domain)
                    || conn.server_name.as_deref() == Some(name.as_str())
                    || policy.own_names.contains(name)
            );
        }
        (Some(rule), helo) => panic!("rule {rule:?} for HELO {helo:?}"),
    }
    if let Some(reply) = Reply::for_verdict(&verdict, &policy) {
        let line = reply.to_string();
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
        let text = verdict.rule().map(|r| r.to_string()).unwrap_or_default();
        assert!(reply.text.starts_with(&text));
    }
}
