//! The parts of an envelope recipient that the decision looks at.

/// A recipient as given in RCPT TO, with its angle brackets and any source route removed.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Recipient<'a> {
    pub address: &'a str,
    pub domain: &'a str,
}

impl<'a> Recipient<'a> {
    pub fn parse(arg: &'a str) -> Self {
        let arg = arg.trim();
        let arg = arg
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(arg);
        // An RFC 5321 source route (`<@relay:user@domain>`) precedes the mailbox.
        let address = match arg.strip_prefix('@') {
            Some(route) => route.split_once(':').map_or(arg, |(_, mailbox)| mailbox),
            None => arg,
        };
        // The local part may be quoted and contain `@`; the domain follows the last one.
        let domain = address.rsplit_once('@').map_or("", |(_, domain)| domain);
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        Self { address, domain }
    }
}

/// The whitelist form of an address: lower-cased, and with any `+detail` subaddress removed
/// (`Private+Orders@Example.com` → `private@example.com`).
pub fn base_address(address: &str) -> String {
    let address = address.to_ascii_lowercase();
    match address.rsplit_once('@') {
        Some((local, domain)) => match local.split_once('+') {
            Some((base, _detail)) if !base.is_empty() => format!("{base}@{domain}"),
            _ => address,
        },
        None => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envelope_forms() {
        let r = Recipient::parse("<User@Example.COM>");
        assert_eq!(r.address, "User@Example.COM");
        assert_eq!(r.domain, "Example.COM");
        assert_eq!(Recipient::parse("user@example.com.").domain, "example.com");
        assert_eq!(
            Recipient::parse("<@relay.example:u@example.org>").domain,
            "example.org"
        );
        assert_eq!(
            Recipient::parse("<\"a@b\"@example.net>").domain,
            "example.net"
        );
        assert_eq!(Recipient::parse("<postmaster>").domain, "");
        assert_eq!(Recipient::parse("<>").domain, "");
    }

    #[test]
    fn base_addresses() {
        assert_eq!(
            base_address("Private+Orders@Example.com"),
            "private@example.com"
        );
        assert_eq!(base_address("private@example.com"), "private@example.com");
        assert_eq!(base_address("+x@example.com"), "+x@example.com");
        assert_eq!(base_address("postmaster"), "postmaster");
    }
}
