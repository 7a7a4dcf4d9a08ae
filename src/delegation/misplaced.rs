//! Requests that are not a RCPT's access policy question: `DUNNO`, and for the ones that
//! mean a misplaced `check_policy_service`, a warning now and then.
//!
//! VRFY is expected: Postfix runs `smtpd_recipient_restrictions` for it too (README's own
//! setup), so it is answered `DUNNO` without a word. Any other state, or another
//! `request=`, means `check_policy_service` sits in another restriction list or is not
//! Postfix's: reported while it lasts, but at most once per `WARNING_INTERVAL`, so that
//! a request per SMTP command does not flood the log and a misplacement made after the
//! first warning (a later `main.cf` edit) is still reported.

use super::{request::Request, Service};
use crate::logging::quote;
use log::warn;
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// How often a misplacement is reported again while it lasts.
pub(super) const WARNING_INTERVAL: Duration = Duration::from_secs(600);

/// One kind of warning: when it was last logged, and how many were left out since.
#[derive(Debug, Default)]
pub(super) struct Reminder {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Reminder {
    /// `Some(left_out)` when a warning is due at `now`: the first one, or the first
    /// after `WARNING_INTERVAL`, with the number of those left out since the last one.
    fn due(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, left_out) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < WARNING_INTERVAL => {
                *left_out += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(left_out))
            }
        }
    }
}

/// ` left_out=N` after a warning that left some out, for the log line.
fn left_out(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(" left_out={n}"),
    }
}

impl Service {
    /// Whether `request` is one to answer `DUNNO` without a decision (and to warn about,
    /// now and then).
    pub(super) fn misplaced(&self, request: &Request) -> bool {
        let interval = humantime::format_duration(WARNING_INTERVAL);
        if request.request != "smtpd_access_policy" {
            if let Some(n) = self.warned_request.due(Instant::now()) {
                warn!(
                    "event=policy_request request={} answered=DUNNO{} expected request=smtpd_access_policy (logged at most every {interval})",
                    quote(&request.request),
                    left_out(n),
                );
            }
            return true;
        }
        let state = &request.protocol_state;
        if state.eq_ignore_ascii_case("RCPT") {
            return false;
        }
        if !state.eq_ignore_ascii_case("VRFY") {
            if let Some(n) = self.warned_state.due(Instant::now()) {
                warn!(
                    "event=policy_request protocol_state={} answered=DUNNO{} the policy service decides at RCPT only: put check_policy_service in smtpd_recipient_restrictions, not in another restriction list (logged at most every {interval})",
                    quote(state),
                    left_out(n),
                );
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_interval_with_the_count_left_out() {
        let reminder = Reminder::default();
        let start = Instant::now();
        assert_eq!(reminder.due(start), Some(0));
        assert_eq!(reminder.due(start), None);
        assert_eq!(reminder.due(start + Duration::from_secs(599)), None);
        assert_eq!(reminder.due(start + Duration::from_secs(600)), Some(2));
        assert_eq!(reminder.due(start + Duration::from_secs(601)), None);
        assert_eq!(reminder.due(start + Duration::from_secs(1300)), Some(1));
        // A clock that goes back (it cannot, but) keeps it quiet rather than loud.
        assert_eq!(reminder.due(start), None);
    }
}
