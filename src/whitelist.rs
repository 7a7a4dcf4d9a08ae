//! Recipients never refused, whatever the HELO: the private mailbox that the bounce page
//! tells senders to use, whole domains, and local parts at every domain.

use crate::{
    domain,
    recipient::{base_local, normalize_local, Recipient},
};
use std::{collections::HashSet, fmt};

/// One `whitelist` entry, in comparable form.
#[derive(Clone, Debug, Eq, Hash, PartialEq, PartialOrd, Ord)]
pub enum Entry {
    /// `private@example.com`: that mailbox and its subaddresses.
    Address { local: String, domain: String },
    /// `@example.com`: every recipient in the domain.
    Domain(String),
    /// `postmaster@*`: that local part (and its subaddresses) in every domain.
    Local(String),
}

impl Entry {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let trimmed = text.trim();
        let trimmed = trimmed
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(trimmed);
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return Err("not a mail address; expected \"user@example.com\", \"@example.com\" (a whole domain) or \"user@*\" (a local part in every domain)");
        };
        if local.is_empty() && domain.is_empty() {
            return Err("expected \"user@example.com\", \"@example.com\" or \"user@*\"");
        }
        if local.chars().any(char::is_whitespace) {
            return Err("the local part holds white space");
        }
        let local = normalize_local(local).into_owned();
        if domain == "*" {
            return Ok(Self::Local(local));
        }
        let domain = domain::parse(domain).map_err(|_| "the domain is not a valid domain name")?;
        Ok(if local.is_empty() {
            Self::Domain(domain)
        } else {
            Self::Address { local, domain }
        })
    }
}

/// As written in `milter.conf`, and as `-t` prints it.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address { local, domain } => write!(f, "{local}@{domain}"),
            Self::Domain(domain) => write!(f, "@{domain}"),
            Self::Local(local) => write!(f, "{local}@*"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Whitelist {
    entries: HashSet<Entry>,
}

impl Whitelist {
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Self {
        Self {
            entries: entries.into_iter().collect(),
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Whether `rcpt` is on the list, itself or as a subaddress (`delimiters`) of an entry.
    pub fn contains(&self, rcpt: &Recipient<'_>, delimiters: &str) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let domain = rcpt.domain.to_string();
        if self.entries.contains(&Entry::Domain(domain.clone())) {
            return true;
        }
        let full = rcpt.local.as_ref();
        let base = base_local(full, delimiters);
        let locals = if base == full {
            &[full][..]
        } else {
            &[full, base]
        };
        locals.iter().any(|&local| {
            self.entries.contains(&Entry::Local(local.to_string()))
                || self.entries.contains(&Entry::Address {
                    local: local.to_string(),
                    domain: domain.clone(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Whitelist {
        Whitelist::new(entries.iter().map(|e| Entry::parse(e).unwrap()))
    }

    fn has(list: &Whitelist, rcpt: &str) -> bool {
        list.contains(&Recipient::parse(rcpt), "+")
    }

    #[test]
    fn entry_forms() {
        let w = list(&["Private@Example.COM.", "@bücher.example", "Postmaster@*"]);
        for yes in [
            "private@example.com",
            "<PRIVATE+orders@example.com.>",
            "\"private\"@example.com",
            "anyone@xn--bcher-kva.example",
            "x@BÜCHER.example",
            "postmaster@anywhere.example",
            "postmaster+x@anywhere.example",
        ] {
            assert!(has(&w, yes), "{yes}");
        }
        for no in [
            "private@example.org",
            "privat@example.com",
            "+private@example.com",
            "x@sub.bücher.example",
            "abuse@example.com",
        ] {
            assert!(!has(&w, no), "{no}");
        }
    }

    #[test]
    fn bad_entries() {
        for bad in [
            "postmaster",
            "",
            "@",
            "a@",
            "a b@example.com",
            "a@*.example",
            "a@example..com",
        ] {
            assert!(Entry::parse(bad).is_err(), "{bad:?}");
        }
    }
}
