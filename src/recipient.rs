//! The parts of an envelope recipient that the decision looks at, in comparable form.

use crate::domain;
use std::borrow::Cow;

/// A recipient as given in RCPT TO, with its angle brackets and any source route removed.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Recipient<'a> {
    /// As the peer wrote it, for the log.
    pub address: &'a str,
    /// The local part, unquoted and lower-cased (`"John"` → `john`).
    pub local: Cow<'a, str>,
    /// The domain in the form of `domain::normalize`; empty for `<postmaster>`.
    pub domain: Cow<'a, str>,
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
        let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
        Self {
            address,
            local: normalize_local(local),
            domain: domain::normalize(domain),
        }
    }

    /// Whether this is RFC 5321's `<postmaster>`, which every server must accept.
    pub fn is_bare_postmaster(&self) -> bool {
        self.domain.is_empty() && self.local == "postmaster"
    }
}

/// The comparable form of a local part: without the quotes of a quoted string (which
/// make no difference to the mailbox, RFC 5321 §4.1.2), and lower-cased.
pub fn normalize_local(local: &str) -> Cow<'_, str> {
    let unquoted: Cow<'_, str> = match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(quoted) => {
            let mut out = String::with_capacity(quoted.len());
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or(c)
                } else {
                    c
                });
            }
            Cow::Owned(out)
        }
        None => Cow::Borrowed(local),
    };
    if unquoted.chars().any(char::is_uppercase) {
        Cow::Owned(unquoted.to_lowercase())
    } else {
        unquoted
    }
}

/// The local part without its subaddress: `private+orders` → `private` when `+` is one
/// of the `delimiters` (Postfix's `recipient_delimiter`: each character is one).
pub fn base_local<'l>(local: &'l str, delimiters: &str) -> &'l str {
    match local.find(|c| delimiters.contains(c)) {
        Some(at) if at > 0 => &local[..at],
        _ => local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envelope_forms() {
        let r = Recipient::parse("<User@Example.COM>");
        assert_eq!(r.address, "User@Example.COM");
        assert_eq!(r.local, "user");
        assert_eq!(r.domain, "example.com");
        assert_eq!(Recipient::parse("user@example.com.").domain, "example.com");
        assert_eq!(
            Recipient::parse("u@BÜCHER.example").domain,
            "xn--bcher-kva.example"
        );
        assert_eq!(
            Recipient::parse("<@relay.example:u@example.org>").domain,
            "example.org"
        );
        let quoted = Recipient::parse("<\"A@b\"@example.net>");
        assert_eq!((&*quoted.local, &*quoted.domain), ("a@b", "example.net"));
        assert_eq!(Recipient::parse("<\"jo\\\"hn\"@x.example>").local, "jo\"hn");
        let postmaster = Recipient::parse("<Postmaster>");
        assert_eq!(
            (&*postmaster.local, &*postmaster.domain),
            ("postmaster", "")
        );
        assert!(postmaster.is_bare_postmaster());
        assert!(!Recipient::parse("<postmaster@example.com>").is_bare_postmaster());
        assert_eq!(Recipient::parse("<>").domain, "");
    }

    #[test]
    fn subaddresses() {
        assert_eq!(base_local("private+orders", "+"), "private");
        assert_eq!(base_local("private-orders", "+-"), "private");
        assert_eq!(base_local("private-orders", "+"), "private-orders");
        assert_eq!(base_local("+x", "+"), "+x");
        assert_eq!(base_local("private+orders", ""), "private+orders");
    }
}
