//! What a HELO/EHLO argument names: an IP address or a host name.

use crate::{domain, ip_text};
use std::net::IpAddr;

/// A client's greeting, parsed once when it arrives and judged for each recipient.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Helo {
    /// Text that denotes an IP address, in any of the forms of `ip_text` (bare, as an
    /// address literal, `inet_aton` spellings, with an IPv6 zone), in canonical form.
    Ip(IpAddr),
    /// Anything else, in the comparable form of `domain::normalize`. An exact match
    /// against a recipient domain or one of the server's own names gives it a meaning, and
    /// so, where turned on, does its syntax (`domain::host_name`: invalid, one label).
    Name(String),
}

impl Helo {
    pub fn parse(raw: &str) -> Self {
        // `192.0.2.1.` is an address too; the name path drops its own trailing dot.
        match ip_text::parse(raw.strip_suffix('.').unwrap_or(raw)) {
            Some(ip) => Self::Ip(ip),
            None => Self::Name(domain::normalize(raw).into_owned()),
        }
    }
}

/// An address from an MTA macro such as `{daemon_addr}`: `192.0.2.1`, `::1`, `IPv6:::1`
/// or `[192.0.2.1]`.
pub fn parse_macro_ip(text: &str) -> Option<IpAddr> {
    ip_text::parse(text.trim())
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
        assert_eq!(Helo::parse("192.000.002.009"), ip("192.0.2.9"));
        assert_eq!(Helo::parse("3221225993"), ip("192.0.2.9"));
        assert_eq!(Helo::parse("0xc0.0.2.9"), ip("192.0.2.9"));
        assert_eq!(Helo::parse("[IPv6:fe80::1%eth0]"), ip("fe80::1"));
        assert_eq!(Helo::parse("fe80::1%eth0"), ip("fe80::1"));
    }

    #[test]
    fn names_and_junk() {
        assert_eq!(
            Helo::parse("Mail.Example.COM."),
            Helo::Name("mail.example.com".into())
        );
        assert_eq!(
            Helo::parse("BÜCHER.example"),
            Helo::Name("xn--bcher-kva.example".into())
        );
        assert_eq!(Helo::parse("localhost"), Helo::Name("localhost".into()));
        assert_eq!(Helo::parse(""), Helo::Name("".into()));
        // Not an address literal: these name no IP and so match no IP rule.
        for junk in [
            "[192.0.2.1",
            "192.0.2.256",
            "[IPv6:192.0.2.1x]",
            "1.2.3.4.5",
            "0x1.example",
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
