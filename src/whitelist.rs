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
        let written_local = !local.is_empty();
        let local = normalize_local(local).into_owned();
        if written_local && local.is_empty() {
            return Err(
                "an empty local part (\"\"@...); for a whole domain write \"@example.com\"",
            );
        }
        if domain == "*" {
            if local.is_empty() {
                return Err("\"@*\" would name every recipient; to turn the rules off write action = \"off\"");
            }
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

/// As written in `milter.conf`, and as `-t` prints it: what reads back as the same entry.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address { local, domain } => write!(f, "{}@{domain}", LocalPart(local)),
            Self::Domain(domain) => write!(f, "@{domain}"),
            Self::Local(local) => write!(f, "{}@*", LocalPart(local)),
        }
    }
}

/// A local part as RFC 5321 writes it: bare when it is a dot-atom, else quoted, with `"`
/// and `\` escaped.
struct LocalPart<'a>(&'a str);

impl fmt::Display for LocalPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let atext =
            |c: char| c.is_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c);
        let dot_atom = self
            .0
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
        if dot_atom {
            return f.write_str(self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
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
    fn printed_entries_read_back() {
        for written in [
            "\"\\\"x\\\"\"@example.com",
            "\"a@b\"@example.com",
            "\"a..b\"@*",
            "\".x\"@example.com",
            "Jöhn.Doe@example.com",
            "@example.com",
        ] {
            let entry = Entry::parse(written).unwrap();
            assert_eq!(
                Entry::parse(&entry.to_string()),
                Ok(entry.clone()),
                "{written} as {entry}"
            );
        }
        assert_eq!(
            Entry::parse("\"\\\"x\\\"\"@example.com")
                .unwrap()
                .to_string(),
            "\"\\\"x\\\"\"@example.com"
        );
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
            "@*",
            "\n@*",
        ] {
            assert!(Entry::parse(bad).is_err(), "{bad:?}");
        }
    }
}
