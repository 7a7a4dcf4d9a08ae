//! The counters: the one source that every view reads (the `event=stats` line logged on
//! SIGUSR1 and every `stats_interval`, and any other view of them).

use crate::verdict::{Exemption, Rule, Verdict};
use std::{
    fmt::{self, Display, Formatter},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

/// The front end that gathered the facts and applied the verdict.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum FrontEnd {
    Milter,
    /// Postfix's policy delegation protocol.
    Policy,
}

impl FrontEnd {
    pub const ALL: [Self; 2] = [Self::Milter, Self::Policy];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Milter => "milter",
            Self::Policy => "policy",
        }
    }

    fn index(&self) -> usize {
        *self as usize
    }
}

/// The outcomes of a rule match that refused or would have refused, in counter order.
pub const OUTCOMES: [&str; 4] = ["rejected", "tempfailed", "logged", "tagged"];
/// The rules' names in counter order (`Rule::index`).
pub const RULES: [&str; 3] = ["own-ip", "ip", "rcpt-domain"];

fn rule_index(rule: &Rule) -> usize {
    match rule {
        Rule::OwnIp(_) => 0,
        Rule::Ip => 1,
        Rule::RcptDomain => 2,
    }
}

/// Recipients counted since start, per front end: per outcome and rule, and per exemption.
#[derive(Debug, Default)]
pub struct Stats {
    matched: [[[AtomicU64; RULES.len()]; OUTCOMES.len()]; FrontEnd::ALL.len()],
    exempted: [[AtomicU64; Exemption::ALL.len()]; FrontEnd::ALL.len()],
}

impl Stats {
    pub fn count(&self, via: FrontEnd, verdict: &Verdict) {
        let counter = match verdict {
            Verdict::Pass => return,
            Verdict::Reject(rule) => &self.matched[via.index()][0][rule_index(rule)],
            Verdict::Tempfail(rule) => &self.matched[via.index()][1][rule_index(rule)],
            Verdict::Log(rule) => &self.matched[via.index()][2][rule_index(rule)],
            Verdict::Tag(rule) => &self.matched[via.index()][3][rule_index(rule)],
            Verdict::Exempt(_, exemption) => {
                let i = Exemption::ALL
                    .iter()
                    .position(|e| e == exemption)
                    .unwrap_or_default();
                &self.exempted[via.index()][i]
            }
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Recipients with this outcome (an index of `OUTCOMES`) and rule (of `RULES`).
    pub fn matched(&self, via: FrontEnd, outcome: usize, rule: usize) -> u64 {
        self.matched[via.index()][outcome][rule].load(Relaxed)
    }

    pub fn exempted(&self, via: FrontEnd, exemption: Exemption) -> u64 {
        let i = Exemption::ALL
            .iter()
            .position(|e| *e == exemption)
            .unwrap_or_default();
        self.exempted[via.index()][i].load(Relaxed)
    }
}

/// `rejected_own_ip=0 rejected_ip=2 ... exempted_whitelist=1 ...`: the sums over the
/// front ends.
impl Display for Stats {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (outcome, outcome_name) in OUTCOMES.iter().enumerate() {
            for (rule, rule_name) in RULES.iter().enumerate() {
                let n: u64 = FrontEnd::ALL
                    .iter()
                    .map(|&via| self.matched(via, outcome, rule))
                    .sum();
                write!(f, "{sep}{outcome_name}_{}={n}", rule_name.replace('-', "_"))?;
                sep = " ";
            }
        }
        for exemption in Exemption::ALL {
            let n: u64 = FrontEnd::ALL
                .iter()
                .map(|&via| self.exempted(via, exemption))
                .sum();
            write!(f, " exempted_{}={n}", exemption.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_outcome_once() {
        let stats = Stats::default();
        let milter = FrontEnd::Milter;
        stats.count(milter, &Verdict::Reject(Rule::Ip));
        stats.count(FrontEnd::Policy, &Verdict::Reject(Rule::Ip));
        stats.count(milter, &Verdict::Tempfail(Rule::RcptDomain));
        stats.count(
            milter,
            &Verdict::Log(Rule::OwnIp("192.0.2.1".parse().unwrap())),
        );
        stats.count(milter, &Verdict::Exempt(Rule::Ip, Exemption::Whitelist));
        stats.count(milter, &Verdict::Exempt(Rule::Ip, Exemption::Off));
        stats.count(milter, &Verdict::Pass);
        assert_eq!(
            stats.to_string(),
            "rejected_own_ip=0 rejected_ip=2 rejected_rcpt_domain=0 \
             tempfailed_own_ip=0 tempfailed_ip=0 tempfailed_rcpt_domain=1 \
             logged_own_ip=1 logged_ip=0 logged_rcpt_domain=0 \
             tagged_own_ip=0 tagged_ip=0 tagged_rcpt_domain=0 \
             exempted_whitelist=1 exempted_authenticated=0 exempted_trusted=0 \
             exempted_role_account=0 exempted_off=1"
        );
        assert_eq!(stats.matched(FrontEnd::Policy, 0, 1), 1);
        assert_eq!(stats.matched(milter, 0, 1), 1);
    }
}
