//! The values of a setting: the rules (`RuleKind`), what a match does (`Action`), and
//! what a DNS failure does (`DnsFailure`).

use std::{
    fmt::{self, Display, Formatter},
    str::FromStr,
};

/// What a rule match does to a recipient.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Action {
    Reject,
    Tempfail,
    /// Accept, and log what would have been done: a dry run.
    Log,
    /// Accept, and mark the message with a header for the spam filter.
    Tag,
    /// Do not check at all.
    Off,
}

impl Action {
    pub const NAMES: &'static str = "reject, tempfail, log, tag or off";
}

impl FromStr for Action {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "reject" => Ok(Self::Reject),
            "tempfail" => Ok(Self::Tempfail),
            "log" => Ok(Self::Log),
            "tag" => Ok(Self::Tag),
            "off" => Ok(Self::Off),
            _ => Err(()),
        }
    }
}

impl Action {
    /// As the configuration and the log lines spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Tempfail => "tempfail",
            Self::Log => "log",
            Self::Tag => "tag",
            Self::Off => "off",
        }
    }
}

impl Display for Action {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rules by name, as the configuration's `[rules]` tables spell them, in the order
/// of precedence: the page's three, then the opt-in ones.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum RuleKind {
    OwnIp,
    Ip,
    RcptDomain,
    Invalid,
    NonFqdn,
    /// DNS knows no A, AAAA or MX record of the name.
    Unknown,
    /// The name's addresses do not hold the client's: never refused (RFC 5321 §4.1.4).
    Mismatch,
}

impl RuleKind {
    pub const ALL: [Self; 7] = [
        Self::OwnIp,
        Self::Ip,
        Self::RcptDomain,
        Self::Invalid,
        Self::NonFqdn,
        Self::Unknown,
        Self::Mismatch,
    ];
    pub const NAMES: &'static str =
        "own-ip, ip, rcpt-domain, invalid, non-fqdn, unknown or mismatch";

    pub fn name(self) -> &'static str {
        match self {
            Self::OwnIp => "own-ip",
            Self::Ip => "ip",
            Self::RcptDomain => "rcpt-domain",
            Self::Invalid => "invalid",
            Self::NonFqdn => "non-fqdn",
            Self::Unknown => "unknown",
            Self::Mismatch => "mismatch",
        }
    }

    /// Beyond the page: off until a rule key names the rule. An `action` (top-level or a
    /// domain's) does not turn it on, so that an existing `action = "reject"` does not
    /// start refusing `EHLO localhost` after an upgrade; a domain's `action = "off"` still
    /// turns it off there.
    pub fn is_opt_in(self) -> bool {
        matches!(
            self,
            Self::Invalid | Self::NonFqdn | Self::Unknown | Self::Mismatch
        )
    }

    /// Judged on DNS answers about the HELO name (`Connection::dns`).
    pub fn is_dns(self) -> bool {
        matches!(self, Self::Unknown | Self::Mismatch)
    }

    /// Whether `action` is one this rule may have: `mismatch` is never refused, since RFC
    /// 5321 §4.1.4 says a server MUST NOT refuse mail because the HELO does not match the
    /// client's address.
    pub fn allows(self, action: Action) -> bool {
        self != Self::Mismatch || !matches!(action, Action::Reject | Action::Tempfail)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for RuleKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|r| r.name() == s).ok_or(())
    }
}

/// What a recipient gets when a temporary DNS failure leaves a DNS rule undecided where
/// that rule would refuse (`dns_failure`).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum DnsFailure {
    /// Accept: when in doubt, mail goes through (and is logged).
    #[default]
    Accept,
    /// A 4xx, so the client retries when DNS answers (Postfix's `defer_if_permit`).
    Tempfail,
}

impl DnsFailure {
    pub fn name(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Tempfail => "tempfail",
        }
    }
}
