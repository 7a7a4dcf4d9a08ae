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
