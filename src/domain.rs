//! The one form in which domain and host names are compared: IDNA A-labels (UTS #46),
//! lower case, without the trailing dot of an absolute name. Every name passes here,
//! whether it comes from `milter.conf` (recipient domains, `own_names`, the whitelist) or
//! from the peer (HELO, RCPT), so that `Bücher.example.`, `bücher.example` and
//! `xn--bcher-kva.example` are one name.

use std::borrow::Cow;

/// The comparable form of a name from the peer. Never fails: text that is no valid name
/// (junk in a HELO, say) keeps its ASCII-lowered self, which can only ever equal a name
/// that is spelt the same way.
pub fn normalize(name: &str) -> Cow<'_, str> {
    // Fast path for the common case: plain lower-case ASCII letters, digits, `-`, `.`.
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return match without_root_dot(name) {
            Some(stripped) => Cow::Borrowed(stripped),
            None => Cow::Borrowed(name),
        };
    }
    // The trailing dot is looked at after IDNA's mapping, which can make one (`example.com。`,
    // or a dot followed by a soft hyphen, which IDNA drops): otherwise the result would
    // still end in a dot and normalising it again would change it.
    let mapped = match idna::domain_to_ascii_cow(name.as_bytes(), idna::AsciiDenyList::EMPTY) {
        Ok(ascii) => ascii.into_owned(),
        Err(_) => name.to_lowercase(),
    };
    match without_root_dot(&mapped) {
        Some(stripped) => Cow::Owned(stripped.to_owned()),
        None => Cow::Owned(mapped),
    }
}

/// The name without the one trailing dot that marks an absolute name. Two or more make no
/// name at all, which is kept whole so that normalising it again changes nothing.
fn without_root_dot(name: &str) -> Option<&str> {
    name.strip_suffix('.')
        .filter(|stripped| !stripped.ends_with('.'))
}

/// What a name in the comparable form of `normalize` is as a host name (RFC 1123 §2.1):
/// labels of letters, digits and hyphens, 1 to 63 long, no hyphen first or last, the
/// whole at most 253. `_` is not allowed here (it is in `parse`): a HELO names a host,
/// not a service record. An IDN is judged by its A-labels, after IDNA's mapping; text
/// IDNA refused keeps non-ASCII characters and so is never a host name.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum HostName {
    /// Not a host name at all.
    Invalid,
    /// One label: `localhost`, `desktop-4f2k`.
    SingleLabel,
    /// Two labels or more.
    Qualified,
}

pub fn host_name(comparable: &str) -> HostName {
    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if comparable.len() > 253 || !comparable.split('.').all(valid_label) {
        HostName::Invalid
    } else if comparable.contains('.') {
        HostName::Qualified
    } else {
        HostName::SingleLabel
    }
}

/// A name written in `milter.conf`, in its comparable form, or what is wrong with it.
/// Host names may hold `_` (seen in real HELOs and DNS), but no label may be empty or
/// longer than 63 octets, and wildcards are not patterns here.
pub fn parse(name: &str) -> Result<String, &'static str> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err("empty; expected a domain name such as \"example.com\"");
    }
    if trimmed.contains('*') {
        return Err("wildcards are not supported: name the domain itself (\"example.com\")");
    }
    // Whatever a HELO of this text would be read as an address can never match as a name.
    if trimmed.starts_with('[')
        || crate::ip_text::parse(trimmed.strip_suffix('.').unwrap_or(trimmed)).is_some()
    {
        return Err("an IP address, not a domain name");
    }
    let ascii = idna::domain_to_ascii_cow(
        trimmed.strip_suffix('.').unwrap_or(trimmed).as_bytes(),
        idna::AsciiDenyList::EMPTY,
    )
    .map_err(|_| "not a valid internationalized domain name (IDNA)")?;
    // IDNA maps some characters to digits and dots ("³" is "3", "１９２．０．２．１" is
    // "192.0.2.1"): what comes out must not read as an address either.
    if crate::ip_text::parse(&ascii).is_some() {
        return Err("an IP address, not a domain name");
    }
    if ascii.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("has an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return Err("has a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("holds a character that no domain name has (letters, digits, '-', '_' and '.' only)");
        }
    }
    let normalized = normalize(trimmed).into_owned();
    // The peer's path and the configuration's path must agree, or nothing would match.
    debug_assert_eq!(normalized, ascii);
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_form_for_every_spelling() {
        for spelling in [
            "bücher.example",
            "BÜCHER.example",
            "Bücher.Example.",
            "xn--bcher-kva.example",
            "XN--BCHER-KVA.EXAMPLE.",
        ] {
            assert_eq!(normalize(spelling), "xn--bcher-kva.example", "{spelling}");
            assert_eq!(parse(spelling).unwrap(), "xn--bcher-kva.example");
        }
        assert_eq!(normalize("Mail.Example.COM."), "mail.example.com");
        assert_eq!(normalize("mx_1.example.com"), "mx_1.example.com");
        // Junk from a peer is kept, lowered, and matches nothing configured.
        assert_eq!(normalize("FOO BAR"), "foo bar");
        assert_eq!(normalize(""), "");
        for junk in [
            "example.com..",
            "EXAMPLE.COM..",
            "a...",
            ".",
            "\n....\n.\u{ad} ",
        ] {
            let once = normalize(junk).into_owned();
            assert_eq!(normalize(&once), once, "{junk}");
            assert_ne!(once, "example.com");
        }
        // IDNA's mapping can make the root's dot; it goes like a written one.
        for spelling in ["example.com\u{3002}", "Example.COM.\u{ad}"] {
            assert_eq!(normalize(spelling), "example.com", "{spelling:?}");
        }
    }

    #[test]
    fn names_that_can_never_match_are_refused() {
        for bad in [
            "",
            " ",
            "*.example.com",
            "example.com..",
            ".example.com",
            "a..b",
            "a b.example",
            "user@example.com",
            "192.0.2.1",
            "[192.0.2.1]",
            "192.0.2.1.",
            "3221225993",
            "0xc0.0.2.9",
            "³",
            "１９２．０．２．１",
            &format!("{}.example", "a".repeat(64)),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(" Example.COM. ").unwrap(), "example.com");
    }
}
