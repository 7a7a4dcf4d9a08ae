//! Text that denotes an IP address, in every form that a resolver or an MTA accepts as
//! one. A HELO of `3221225993` or `0xc0.0.2.9` greets with an address just as
//! `192.0.2.9` does, so the rules must see the address behind each of them.
//!
//! Accepted, each bare or as an RFC 5321 address literal (`[...]`, `[IPv6:...]`, the tag
//! in any case):
//! - IPv4 in the forms of `inet_aton(3)`: one to four parts (`192.0.2.9`, `192.0.521`,
//!   `192.521`, `3221225993`), each decimal, hexadecimal (`0xc0`) or, with a leading
//!   zero, octal (`0300`). A part with a leading zero and a digit 8 or 9 (`009`) is not
//!   octal: it is read as decimal, as many resolvers do, so `192.000.002.009` is
//!   192.0.2.9.
//! - IPv6 in RFC 4291 text, with or without a zone (`fe80::1%eth0`; the zone is dropped).
//! - An IPv4-mapped IPv6 address (`::ffff:192.0.2.9`) is the IPv4 address it maps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address `text` denotes, if it denotes one.
pub fn parse(text: &str) -> Option<IpAddr> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let inner = strip_ipv6_tag(inner);
    let ip = match ipv4(inner) {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ipv6(inner)?),
    };
    Some(ip.to_canonical())
}

/// Strips the RFC 5321 `IPv6:` tag, which Sendmail also puts on addresses in its macros.
fn strip_ipv6_tag(text: &str) -> &str {
    match text.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => &text[5..],
        _ => text,
    }
}

fn ipv6(text: &str) -> Option<Ipv6Addr> {
    let address = match text.split_once('%') {
        Some((address, zone))
            if !zone.is_empty()
                && zone
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) =>
        {
            address
        }
        Some(_) => return None,
        None => text,
    };
    address.parse().ok()
}

fn ipv4(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers = parts
        .iter()
        .map(|part| number(part))
        .collect::<Option<Vec<u64>>>()?;
    let (last, leading) = numbers.split_last()?;
    // Each leading part is one octet; the last fills the octets that remain.
    let last_bits = 8 * (4 - leading.len() as u32);
    if leading.iter().any(|&n| n > 255) || *last >= 1u64 << last_bits {
        return None;
    }
    let value = leading
        .iter()
        .enumerate()
        .fold(*last, |acc, (i, &n)| acc | n << (24 - 8 * i as u32));
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn number(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1
            && part.starts_with('0')
            && part.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    // At most 10 digits: enough for 2^32 in any radix, and no overflow below.
    if digits.is_empty() || digits.len() > 11 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn ipv4_in_every_resolver_form() {
        for text in [
            "192.0.2.9",
            "[192.0.2.9]",
            "192.000.002.009",
            "3221225993",
            "0xc0.0.2.9",
            "0XC0.0X0.0x2.0x9",
            "0300.0.02.011",
            "192.0.521",
            "192.521",
            "0xc0000209",
            "030000001011",
            "[IPv6:::ffff:192.0.2.9]",
            "::ffff:c000:209",
        ] {
            assert_eq!(parse(text), ip("192.0.2.9"), "{text}");
        }
        assert_eq!(parse("0"), ip("0.0.0.0"));
        assert_eq!(parse("4294967295"), ip("255.255.255.255"));
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(parse("[IPv6:fe80::1%eth0]"), ip("fe80::1"));
        assert_eq!(parse("fe80::1%25"), ip("fe80::1"));
        assert_eq!(parse("[ipv6:2001:DB8::1]"), ip("2001:db8::1"));
        assert_eq!(parse("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(parse("IPv6:0:0:0:0:0:0:0:1"), ip("::1"));
    }

    #[test]
    fn not_addresses() {
        for text in [
            "",
            ".",
            "192.0.2.256",
            "192.0.2.9.1",
            "192.0.2.",
            "192..2.9",
            "4294967296",
            "0x",
            "0xg",
            "192.0.65536",
            "1e3",
            "+1",
            "mail.example.com",
            "[192.0.2.9",
            "fe80::1%",
            "fe80::1%eth 0",
            "[IPv6:192.0.2.1x]",
            "99999999999999999999",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
