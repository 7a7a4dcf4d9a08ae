//! Counters for the summary line logged on SIGUSR1 and every `stats_interval`.

use crate::verdict::{Exemption, Rule, Verdict};
use std::{
    fmt::{self, Display, Formatter},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

const RULES: [&str; 3] = ["own_ip", "ip", "rcpt_domain"];
const OUTCOMES: [&str; 3] = ["rejected", "tempfailed", "logged"];

/// Recipients counted since start, per rule and outcome, and per exemption.
#[derive(Debug, Default)]
pub struct Stats {
    matched: [[AtomicU64; 3]; 3],
    exempted: [AtomicU64; Exemption::ALL.len()],
}

impl Stats {
    pub fn count(&self, verdict: &Verdict) {
        let rule_index = |rule: &Rule| match rule {
            Rule::OwnIp(_) => 0,
            Rule::Ip => 1,
            Rule::RcptDomain => 2,
        };
        let counter = match verdict {
            Verdict::Pass => return,
            Verdict::Reject(rule) => &self.matched[0][rule_index(rule)],
            Verdict::Tempfail(rule) => &self.matched[1][rule_index(rule)],
            Verdict::Log(rule) => &self.matched[2][rule_index(rule)],
            Verdict::Exempt(_, exemption) => {
                let i = Exemption::ALL
                    .iter()
                    .position(|e| e == exemption)
                    .unwrap_or_default();
                &self.exempted[i]
            }
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// `rejected_own_ip=0 rejected_ip=2 ... exempted_whitelist=1 ...`
impl Display for Stats {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (outcome, counters) in OUTCOMES.iter().zip(&self.matched) {
            for (rule, counter) in RULES.iter().zip(counters) {
                write!(f, "{sep}{outcome}_{rule}={}", counter.load(Relaxed))?;
                sep = " ";
            }
        }
        for (exemption, counter) in Exemption::ALL.iter().zip(&self.exempted) {
            write!(
                f,
                " exempted_{}={}",
                exemption.name(),
                counter.load(Relaxed)
            )?;
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
        stats.count(&Verdict::Reject(Rule::Ip));
        stats.count(&Verdict::Reject(Rule::Ip));
        stats.count(&Verdict::Tempfail(Rule::RcptDomain));
        stats.count(&Verdict::Log(Rule::OwnIp("192.0.2.1".parse().unwrap())));
        stats.count(&Verdict::Exempt(Rule::Ip, Exemption::Whitelist));
        stats.count(&Verdict::Exempt(Rule::Ip, Exemption::Off));
        stats.count(&Verdict::Pass);
        assert_eq!(
            stats.to_string(),
            "rejected_own_ip=0 rejected_ip=2 rejected_rcpt_domain=0 \
             tempfailed_own_ip=0 tempfailed_ip=0 tempfailed_rcpt_domain=1 \
             logged_own_ip=1 logged_ip=0 logged_rcpt_domain=0 \
             exempted_whitelist=1 exempted_authenticated=0 exempted_trusted=0 \
             exempted_role_account=0 exempted_off=1"
        );
    }
}
