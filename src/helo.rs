//! What a HELO/EHLO argument names: an IP address or a host name.

use std::net::IpAddr;

/// A client's greeting, parsed once when it arrives and judged for each recipient.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Helo {
    /// An IP address, bare (`192.0.2.1`, `2001:db8::1`) or as an RFC 5321 address literal
    /// (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), in canonical form.
    Ip(IpAddr),
    /// Anything else, lower-cased, without one trailing dot. Only an exact match against a
    /// recipient domain or one of the server's own names gives it a meaning.
    Name(String),
}

impl Helo {
    pub fn parse(raw: &str) -> Self {
        let text = raw.strip_suffix('.').unwrap_or(raw);
        match parse_ip(text) {
            Some(ip) => Self::Ip(ip),
            None => Self::Name(text.to_ascii_lowercase()),
        }
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let inner = strip_ipv6_tag(inner);
    // An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) names the IPv4 host.
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Strips the RFC 5321 `IPv6:` tag, which Sendmail also puts on addresses in its macros.
pub fn strip_ipv6_tag(text: &str) -> &str {
    match text.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => &text[5..],
        _ => text,
    }
}

/// An address from an MTA macro such as `{daemon_addr}`: `192.0.2.1`, `::1`, `IPv6:::1`
/// or `[192.0.2.1]`.
pub fn parse_macro_ip(text: &str) -> Option<IpAddr> {
    parse_ip(text.trim())
}

/// Lower-cases a host name and drops one trailing dot, as HELO names are compared.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Helo {
        Helo::Ip(s.parse().unwrap())
    }

    #[test]
    fn ip_forms() {
        assert_eq!(Helo::parse("192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(Helo::parse("[192.0.2.1]"), ip("192.0.2.1"));
        assert_eq!(Helo::parse("192.0.2.1."), ip("192.0.2.1"));
        assert_eq!(Helo::parse("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(Helo::parse("[IPv6:2001:DB8:0::1]"), ip("2001:db8::1"));
        assert_eq!(Helo::parse("[ipv6:2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(Helo::parse("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(Helo::parse("[IPv6:::ffff:192.0.2.1]"), ip("192.0.2.1"));
    }

    #[test]
    fn names_and_junk() {
        assert_eq!(
            Helo::parse("Mail.Example.COM."),
            Helo::Name("mail.example.com".into())
        );
        assert_eq!(Helo::parse("localhost"), Helo::Name("localhost".into()));
        assert_eq!(Helo::parse(""), Helo::Name("".into()));
        // Not an address literal: these name no IP and so match no IP rule.
        for junk in [
            "[192.0.2.1",
            "192.0.2",
            "192.0.2.256",
            "[IPv6:192.0.2.1x]",
            "fe80::1%eth0",
        ] {
            assert!(matches!(Helo::parse(junk), Helo::Name(_)), "{junk}");
        }
    }

    #[test]
    fn macro_addresses() {
        assert_eq!(
            parse_macro_ip("IPv6:0:0:0:0:0:0:0:1"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            parse_macro_ip("127.0.0.1"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_macro_ip("unknown"), None);
    }
}
