//! The answers about a HELO name, as facts the decision reads: no I/O here.

use std::net::IpAddr;

/// The record types asked about a HELO name.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
}

impl RecordType {
    pub const ALL: [Self; 3] = [Self::A, Self::Aaaa, Self::Mx];

    pub fn name(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Mx => "MX",
        }
    }
}

/// The answer to one question.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Answer {
    /// The addresses of an A or AAAA answer (canonical: no IPv4-mapped IPv6).
    Addresses(Vec<IpAddr>),
    /// The exchange names of an MX answer, as the server gave them.
    Exchanges(Vec<String>),
    /// An authoritative "no such name".
    NxDomain,
    /// The name exists but has no record of the type.
    NoData,
    /// No answer to rely on.
    Failed(Failure),
}

/// Why a question got no answer to rely on: both are temporary, never an `unknown` verdict.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Failure {
    /// SERVFAIL, REFUSED, a malformed answer, or no server to ask.
    ServFail,
    /// No answer within `dns_timeout` (or no room for another lookup in flight).
    Timeout,
}

/// The three answers about one HELO name, as known when a recipient is judged; a question
/// still unanswered when the wait ended is `Failed(Failure::Timeout)`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct HeloDns {
    pub a: Answer,
    pub aaaa: Answer,
    pub mx: Answer,
}

impl Failure {
    /// As log lines (`dns=timeout`) and `explain` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::ServFail => "servfail",
            Self::Timeout => "timeout",
        }
    }
}

/// What the answers say about one question a DNS rule asks of them.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Finding {
    Yes,
    No,
    /// The answer turns on a question that failed: neither yes nor no.
    Undecided(Failure),
}

impl Answer {
    fn failure(&self) -> Option<Failure> {
        match self {
            Self::Failed(failure) => Some(*failure),
            _ => None,
        }
    }

    /// Whether it names something: an address, or a mail exchanger.
    fn has_records(&self) -> bool {
        match self {
            Self::Addresses(ips) => !ips.is_empty(),
            Self::Exchanges(names) => !names.is_empty(),
            Self::NxDomain | Self::NoData | Self::Failed(_) => false,
        }
    }
}

impl HeloDns {
    /// Whether the name is unknown to DNS (rule `unknown`): no A, AAAA or MX record, each
    /// an authoritative NXDOMAIN or NODATA. One record of any of them makes it known, a
    /// failure beside them with none makes it undecided: a failed question might have
    /// had the record.
    pub fn is_unknown(&self) -> Finding {
        let answers = [&self.a, &self.aaaa, &self.mx];
        if answers.iter().any(|a| a.has_records()) {
            return Finding::No;
        }
        match answers.iter().find_map(|a| a.failure()) {
            Some(failure) => Finding::Undecided(failure),
            None => Finding::Yes,
        }
    }

    /// Whether the name's addresses leave out `client` (rule `mismatch`): an IPv4 client
    /// (an IPv4-mapped one too) is looked for among the A records, an IPv6 client among
    /// the AAAA records; only a failure of that question leaves it undecided.
    pub fn misses(&self, client: IpAddr) -> Finding {
        let client = client.to_canonical();
        let answer = match client {
            IpAddr::V4(_) => &self.a,
            IpAddr::V6(_) => &self.aaaa,
        };
        match answer {
            Answer::Addresses(ips) if ips.iter().any(|ip| ip.to_canonical() == client) => {
                Finding::No
            }
            Answer::Failed(failure) => Finding::Undecided(*failure),
            _ => Finding::Yes,
        }
    }

    /// Each answer as `explain` prints it: `A: NXDOMAIN`, `AAAA: 2001:db8::7`,
    /// `MX: mx1.example.org mx2.example.org`, `A: timeout`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let answers = [&self.a, &self.aaaa, &self.mx];
        RecordType::ALL
            .into_iter()
            .zip(answers)
            .map(|(record, answer)| {
                let text = match answer {
                    Answer::Addresses(ips) if !ips.is_empty() => ips
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    Answer::Exchanges(names) if !names.is_empty() => names.join(" "),
                    Answer::Addresses(_) | Answer::Exchanges(_) | Answer::NoData => "NODATA".into(),
                    Answer::NxDomain => "NXDOMAIN".into(),
                    Answer::Failed(failure) => failure.name().into(),
                };
                format!("{}: {text}", record.name())
            })
    }
}
