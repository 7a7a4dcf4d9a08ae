//! The decision: a pure function of the greeting, the connection, the recipient and the
//! policy. No I/O here; the milter callbacks and `explain` both call `decide`.

use crate::{
    helo::Helo,
    policy::{Action, Policy},
    recipient::Recipient,
};
use std::{
    fmt::{self, Display, Formatter},
    net::IpAddr,
};

/// What the MTA told us about the SMTP session so far.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// The latest HELO/EHLO, if any came.
    pub helo: Option<Helo>,
    pub client: Option<IpAddr>,
    /// The addresses the client reached, from `{daemon_addr}` and `{if_addr}`.
    pub local: Vec<IpAddr>,
    /// The MTA's own host name (`j`), normalized.
    pub server_name: Option<String>,
    pub authenticated: bool,
}

/// The page's three rules, most specific first.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Rule {
    /// The HELO is one of the receiving server's own addresses: "Hello, I'm you!".
    OwnIp(IpAddr),
    /// The HELO is some other IP address instead of a host name.
    Ip,
    /// The HELO is the recipient's domain or one of the server's own names.
    RcptDomain,
}

impl Rule {
    /// The name used in logs, configuration and statistics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OwnIp(_) => "own-ip",
            Self::Ip => "ip",
            Self::RcptDomain => "rcpt-domain",
        }
    }
}

/// The text the bounce page explains, exactly.
impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnIp(ip) => write!(f, "bogus helo {ip}"),
            Self::Ip => f.write_str("bogus helo"),
            Self::RcptDomain => f.write_str("bogus helo matches rcpt"),
        }
    }
}

/// Why a recipient whose HELO matched a rule is let through all the same.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Exemption {
    Trusted,
    Authenticated,
    Whitelist,
    /// The recipient domain's action (or the top-level one) is `off`.
    Off,
}

impl Exemption {
    pub const ALL: [Self; 4] = [
        Self::Whitelist,
        Self::Authenticated,
        Self::Trusted,
        Self::Off,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Authenticated => "authenticated",
            Self::Whitelist => "whitelist",
            Self::Off => "off",
        }
    }
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// No rule matches.
    Pass,
    Exempt(Rule, Exemption),
    Reject(Rule),
    Tempfail(Rule),
    /// Accepted; the log says what would have been done.
    Log(Rule),
}

impl Verdict {
    pub fn rule(&self) -> Option<Rule> {
        match *self {
            Self::Pass => None,
            Self::Exempt(rule, _) | Self::Reject(rule) | Self::Tempfail(rule) | Self::Log(rule) => {
                Some(rule)
            }
        }
    }
}

pub fn decide(policy: &Policy, conn: &Connection, rcpt: &Recipient<'_>) -> Verdict {
    let Some(rule) = match_rule(policy, conn, rcpt) else {
        return Verdict::Pass;
    };
    let exemption = if conn.client.is_some_and(|ip| policy.is_trusted(ip)) {
        Some(Exemption::Trusted)
    } else if conn.authenticated && policy.skip_authenticated {
        Some(Exemption::Authenticated)
    } else if policy.is_whitelisted(rcpt.address) {
        Some(Exemption::Whitelist)
    } else {
        None
    };
    if let Some(exemption) = exemption {
        return Verdict::Exempt(rule, exemption);
    }
    match policy.action_for(rcpt.domain) {
        Action::Reject => Verdict::Reject(rule),
        Action::Tempfail => Verdict::Tempfail(rule),
        Action::Log => Verdict::Log(rule),
        Action::Off => Verdict::Exempt(rule, Exemption::Off),
    }
}

fn match_rule(policy: &Policy, conn: &Connection, rcpt: &Recipient<'_>) -> Option<Rule> {
    match conn.helo.as_ref()? {
        Helo::Ip(ip) => {
            if conn.local.contains(ip) || policy.is_own_address(*ip) {
                Some(Rule::OwnIp(*ip))
            } else {
                Some(Rule::Ip)
            }
        }
        Helo::Name(name) => {
            let is_own = (!rcpt.domain.is_empty() && name.eq_ignore_ascii_case(rcpt.domain))
                || conn.server_name.as_deref() == Some(name.as_str())
                || policy.own_names.contains(name);
            is_own.then_some(Rule::RcptDomain)
        }
    }
}

/// An SMTP reply: code, enhanced status code and text.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Reply {
    pub code: &'static str,
    pub status: &'static str,
    pub text: String,
}

impl Reply {
    /// The reply a refusal of this rule gets, permanent or temporary.
    pub fn new(rule: Rule, permanent: bool, reply_url: Option<&str>) -> Self {
        let (code, status) = if permanent {
            ("550", "5.7.1")
        } else {
            ("450", "4.7.1")
        };
        let text = match reply_url {
            Some(url) => format!("{rule} {url}"),
            None => rule.to_string(),
        };
        Self { code, status, text }
    }

    /// The reply this verdict sends, or for a dry run would send.
    pub fn for_verdict(verdict: &Verdict, policy: &Policy) -> Option<Self> {
        let url = policy.reply_url.as_deref();
        match *verdict {
            Verdict::Reject(rule) | Verdict::Log(rule) => Some(Self::new(rule, true, url)),
            Verdict::Tempfail(rule) => Some(Self::new(rule, false, url)),
            Verdict::Pass | Verdict::Exempt(..) => None,
        }
    }
}

impl Display for Reply {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}
