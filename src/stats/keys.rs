//! What is counted per variant (`Key`), and the slots for it (`PerKey`): the front ends,
//! outcomes, session errors, rules, exemptions.

use crate::{
    ruleset::{Action, RuleKind},
    verdict::{DnsFallback, Exemption},
};
use std::{marker::PhantomData, ops::Index};

/// A kind of thing counted per variant: one slot each, in `ALL`'s order.
pub trait Key: Copy + 'static {
    /// Every variant, in the order of the counters and of every view of them.
    const ALL: &'static [Self];
    /// The variant's slot: its place in `ALL`. An exhaustive `match`, so that a new
    /// variant does not compile until it has one.
    fn index(self) -> usize;
}

/// One `T` per variant of `K`, indexed by the variant: nothing else can pick a slot.
/// `N` is `K::ALL.len()`, checked where the slots are made.
#[derive(Debug)]
pub struct PerKey<K, T, const N: usize> {
    slots: [T; N],
    key: PhantomData<K>,
}

impl<K: Key, T: Default, const N: usize> Default for PerKey<K, T, N> {
    fn default() -> Self {
        const { assert!(N == K::ALL.len(), "one slot per variant") };
        Self {
            slots: std::array::from_fn(|_| T::default()),
            key: PhantomData,
        }
    }
}

impl<K: Key, T, const N: usize> Index<K> for PerKey<K, T, N> {
    type Output = T;

    fn index(&self, key: K) -> &T {
        &self.slots[key.index()]
    }
}

/// The front end that gathered the facts and applied the verdict.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum FrontEnd {
    Milter,
    /// Postfix's policy delegation protocol.
    PolicyService,
}

impl FrontEnd {
    pub const ALL: [Self; 2] = [Self::Milter, Self::PolicyService];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Milter => "milter",
            Self::PolicyService => "policy",
        }
    }
}

impl Key for FrontEnd {
    const ALL: &'static [Self] = &Self::ALL;

    fn index(self) -> usize {
        match self {
            Self::Milter => 0,
            Self::PolicyService => 1,
        }
    }
}

pub(super) type PerFrontEnd<T> = PerKey<FrontEnd, T, { FrontEnd::ALL.len() }>;

/// Why a session was closed on an error, in counter order.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum SessionError {
    /// Something that is not the protocol: an unknown command, a malformed packet or
    /// request, an impossible negotiation.
    Protocol,
    /// A packet, line or request larger than the limits.
    Oversized,
    /// The peer was silent too long, or too slow to finish a request.
    Timeout,
    /// The connection broke (reset, closed in mid-request).
    Io,
}

impl SessionError {
    pub const ALL: [Self; 4] = [Self::Protocol, Self::Oversized, Self::Timeout, Self::Io];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Protocol => "protocol",
            Self::Oversized => "oversized",
            Self::Timeout => "timeout",
            Self::Io => "io",
        }
    }
}

impl Key for SessionError {
    const ALL: &'static [Self] = &Self::ALL;

    fn index(self) -> usize {
        match self {
            Self::Protocol => 0,
            Self::Oversized => 1,
            Self::Timeout => 2,
            Self::Io => 3,
        }
    }
}

/// The outcomes of a rule match that refused or would have refused, in counter order.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Outcome {
    Rejected,
    Tempfailed,
    Logged,
    Tagged,
}

impl Outcome {
    pub const ALL: [Self; 4] = [Self::Rejected, Self::Tempfailed, Self::Logged, Self::Tagged];

    /// Its name in the `event=stats` line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Tempfailed => "tempfailed",
            Self::Logged => "logged",
            Self::Tagged => "tagged",
        }
    }

    /// The configured action that leads to it, the metrics' `action` label.
    pub fn action(self) -> Action {
        match self {
            Self::Rejected => Action::Reject,
            Self::Tempfailed => Action::Tempfail,
            Self::Logged => Action::Log,
            Self::Tagged => Action::Tag,
        }
    }
}

impl Key for Outcome {
    const ALL: &'static [Self] = &Self::ALL;

    fn index(self) -> usize {
        match self {
            Self::Rejected => 0,
            Self::Tempfailed => 1,
            Self::Logged => 2,
            Self::Tagged => 3,
        }
    }
}

impl Key for RuleKind {
    const ALL: &'static [Self] = &Self::ALL;

    fn index(self) -> usize {
        match self {
            Self::OwnIp => 0,
            Self::Ip => 1,
            Self::RcptDomain => 2,
            Self::Invalid => 3,
            Self::NonFqdn => 4,
            Self::Unknown => 5,
            Self::Mismatch => 6,
        }
    }
}

impl Key for DnsFallback {
    const ALL: &'static [Self] = &Self::ALL;

    fn index(self) -> usize {
        match self {
            Self::Tempfail => 0,
            Self::Accept => 1,
            Self::NoVerdict => 2,
        }
    }
}

impl Key for Exemption {
    const ALL: &'static [Self] = &Self::ALL;

    fn index(self) -> usize {
        match self {
            Self::Whitelist => 0,
            Self::Authenticated => 1,
            Self::Trusted => 2,
            Self::RoleAccount => 3,
            Self::Off => 4,
        }
    }
}
