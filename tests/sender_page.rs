//! The sender-facing page (`doc/bogus-helo.txt`, `doc/bogus-helo.html`, shipped in the
//! package's docs and published behind `reply_url`) stays true to the product: every reply
//! the binary gives, as `explain` prints it, is explained in both files, each in the HTML
//! section whose anchor README names.

mod common;

use common::dns_server::{self, names, FakeDns, Nsd};
use std::{fs, path::Path, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_bogus-helo-milter");

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reply `explain` gives for this HELO and recipient, the milter's local address
/// 192.0.2.25, under the shipped configuration with this top-level action (set from the
/// environment).
fn reply(action: &str, helo: &str, rcpt: &str) -> String {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("milter.conf.example");
    reply_under(&shipped, action, helo, rcpt)
}

/// The same under the configuration file `config`.
fn reply_under(config: &Path, action: &str, helo: &str, rcpt: &str) -> String {
    let out = Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(["explain", "--helo", helo, "--rcpt", rcpt])
        .args(["--client", "198.51.100.7", "--local", "192.0.2.25"])
        .env("BOGUS_HELO_MILTER_ACTION", action)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "explain {helo}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("reply:"))
        .unwrap_or_else(|| panic!("explain {helo} {rcpt} gives no reply:\n{stdout}"))
        .trim()
        .to_owned()
}

/// The HTML from the element with `id="{id}"` up to the next `<h2`.
fn html_section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("doc/bogus-helo.html: no element with id=\"{id}\""));
    let body = &html[start..];
    let end = body[1..].find("<h2").map_or(body.len(), |e| e + 1);
    &body[..end]
}

fn assert_explained(reply: &str, anchor: &str) {
    let text = read("doc/bogus-helo.txt");
    assert!(
        text.contains(reply),
        "doc/bogus-helo.txt does not explain {reply:?}"
    );
    let html = read("doc/bogus-helo.html");
    assert!(
        html_section(&html, anchor).contains(reply),
        "doc/bogus-helo.html: the section #{anchor} does not give {reply:?}"
    );
}

#[test]
fn the_page_explains_each_reply_the_binary_gives() {
    // The three rules of the bounce page, refused (550) and temporarily refused (450).
    for (action, anchor_450) in [("reject", None), ("tempfail", Some("temporary"))] {
        let cases = [
            ("[192.0.2.25]", "info@example.com", "bogus-helo-ip"),
            ("[198.51.100.7]", "info@example.com", "bogus-helo"),
            ("example.com", "info@example.com", "bogus-helo-matches-rcpt"),
        ];
        for (helo, rcpt, anchor) in cases {
            let reply = reply(action, helo, rcpt);
            assert!(
                reply.starts_with(if action == "reject" { "550 " } else { "450 " }),
                "{action} {helo}: {reply}"
            );
            match anchor_450 {
                None => assert_explained(&reply, anchor),
                // The page gives one 450 form as the example; the others are the same text.
                Some(temporary) if helo == "[198.51.100.7]" => assert_explained(&reply, temporary),
                Some(_) => {
                    let text = reply.replacen("450 4.7.1", "550 5.7.1", 1);
                    assert_explained(&text, anchor);
                }
            }
        }
    }
}

#[test]
fn the_page_explains_the_replies_of_the_opt_in_rules() {
    // The opt-in rules the binary has, turned on as an administrator would.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.conf");
    fs::write(
        &config,
        "[rules]\ninvalid = \"reject\"\nnon-fqdn = \"reject\"\n",
    )
    .unwrap();
    for (helo, anchor) in [
        ("exa_mple.com", "bogus-helo-invalid-name"),
        ("DESKTOP-4F2K", "bogus-helo-not-fully-qualified"),
    ] {
        let reply = reply_under(&config, "reject", helo, "info@example.com");
        assert!(reply.starts_with("550 "), "{helo}: {reply}");
        assert_explained(&reply, anchor);
    }
}

#[test]
fn the_page_explains_the_replies_of_the_dns_rules() {
    // As explain gives them from its live lookups: a server that never answers, with
    // dns_failure = "tempfail"; then NSD's NXDOMAIN for a name not in its zone.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.conf");
    let with_server = |server: std::net::SocketAddr, extra: &str| {
        let text = format!("dns_servers = [\"{server}\"]\n{extra}[rules]\nunknown = \"reject\"\n");
        fs::write(&config, text).unwrap();
    };
    let silent = FakeDns::silent();
    with_server(
        silent.addr,
        "dns_timeout = \"300ms\"\ndns_failure = \"tempfail\"\n",
    );
    let reply = reply_under(&config, "reject", names::MISSING, "info@example.com");
    assert!(reply.starts_with("451 4.4.3 "), "{reply}");
    assert_explained(&reply, "dns-failure");

    if !common::dependency(dns_server::nsd_available(), "nsd", dns_server::INSTALL_NSD) {
        return;
    }
    let nsd = Nsd::start();
    with_server(nsd.addr, "");
    let reply = reply_under(&config, "reject", names::MISSING, "info@example.com");
    assert!(reply.starts_with("550 "), "{reply}");
    assert_explained(&reply, "bogus-helo-unknown-host");
}

#[test]
fn the_page_has_the_placeholder_and_nothing_external() {
    for file in ["doc/bogus-helo.txt", "doc/bogus-helo.html"] {
        assert!(
            read(file).contains("PRIVATE_ADDRESS"),
            "{file}: no PRIVATE_ADDRESS for the administrator to replace"
        );
    }
    // Served from any web server as one file: no style sheet, script, font or image
    // to fetch, and links only within the page.
    let html = read("doc/bogus-helo.html");
    for external in ["<link", "<script", "src=", "@import", "url("] {
        assert!(
            !html.contains(external),
            "doc/bogus-helo.html holds {external:?}"
        );
    }
    for href in html.split("href=\"").skip(1) {
        assert!(
            href.starts_with('#'),
            "doc/bogus-helo.html links outside itself: href=\"{}",
            &href[..href.find('"').unwrap_or(href.len())]
        );
    }
}
