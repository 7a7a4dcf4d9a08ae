//! Nanoseconds per decision with a configuration of realistic size: 500 whitelist
//! entries, 300 own networks, 50 recipient domains, 20 trusted networks.
//!
//!     cargo bench --bench verdict

use bogus_helo_milter::{
    config::Config,
    helo::Helo,
    recipient::Recipient,
    verdict::{decide, Connection},
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::{fmt::Write, hint::black_box, net::IpAddr};

fn large_config() -> String {
    let mut c = String::new();
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    let own = (0..300)
        .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
        .collect();
    let trusted = (0..20)
        .map(|i| format!("\"2001:db8:{i:x}::/48\""))
        .collect();
    let whitelist = (0..500)
        .map(|i| format!("\"private{i}@example{}.com\"", i % 50))
        .collect();
    let names = (0..20).map(|i| format!("\"mx{i}.example.com\"")).collect();
    let _ = writeln!(c, "own_addresses = {}", list(own));
    let _ = writeln!(c, "trusted_networks = {}", list(trusted));
    let _ = writeln!(c, "whitelist = {}", list(whitelist));
    let _ = writeln!(c, "own_names = {}", list(names));
    let _ = writeln!(c, "reply_url = \"https://www.example.com/bogus-helo\"");
    for i in 0..50 {
        let action = ["reject", "tempfail", "log", "off"][i % 4];
        let _ = writeln!(c, "[domains.\"example{i}.com\"]\naction = \"{action}\"");
    }
    c
}

fn connection(helo: &str) -> Connection {
    Connection {
        helo: Some(Helo::parse(helo)),
        client: Some("198.51.100.7".parse::<IpAddr>().unwrap()),
        local: vec!["192.0.2.25".parse().unwrap()],
        server_name: Some("mx.example.com".into()),
        authenticated: false,
        dns: None,
    }
}

fn bench(c: &mut Criterion) {
    let config = Config::parse(&large_config(), "bench").expect("valid config");
    let ruleset = config.ruleset_with(&["192.0.2.25".parse().unwrap()]);
    let cases = [
        ("good helo", "mail.example.net", "<user@example7.com>"),
        ("ip helo", "[192.0.2.9]", "<user@example8.com>"),
        ("own ip helo", "[10.1.2.3]", "<user@example8.com>"),
        ("rcpt domain helo", "example8.com", "<user@Example8.com>"),
        (
            "whitelisted rcpt",
            "[192.0.2.9]",
            "<Private9+x@example9.com>",
        ),
        (
            "ipv6 helo",
            "[IPv6:2001:db8:99::1]",
            "<user@unlisted.example>",
        ),
    ];
    for (name, helo, rcpt) in cases {
        let conn = connection(helo);
        c.bench_function(name, |b| {
            b.iter(|| {
                decide(
                    black_box(&ruleset),
                    black_box(&conn),
                    &Recipient::parse(black_box(rcpt)),
                )
            })
        });
    }
    c.bench_function("parse helo", |b| {
        b.iter(|| Helo::parse(black_box("[IPv6:2001:db8::25]")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
