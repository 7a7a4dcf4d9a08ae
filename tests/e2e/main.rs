//! End-to-end tests: the built milter behind a private Postfix and a private Sendmail,
//! driven over SMTP by a small client, checking the replies a sender sees.
//!
//! `policy` runs the cases again through the policy service behind Postfix; `dns` runs the
//! DNS rules through all three against a real NSD (`common::dns_server`). `prometheus`
//! checks the metrics endpoint through Debian's Prometheus (`bash .ci/install-prometheus`).
//!
//! Every case runs against both MTAs (`postfix::<case>` and `sendmail::<case>`). They need
//! postfix, m4, sendmail-cf and an unpacked sendmail-bin (`bash .ci/install-mtas`), so they
//! are `#[ignore]`d: run them with `cargo test --test e2e -- --include-ignored`. A missing
//! MTA then fails the test; it is never skipped.

#[path = "../common/mod.rs"]
mod common;

mod bed;
mod cases;
mod dns;
mod docs;
mod drain;
mod faults;
mod forged;
mod macros_seen;
mod opt_in;
mod percent;
mod policy;
mod prometheus;

use common::mta::Kind;

/// Generates `postfix::$case` and `sendmail::$case`, each calling `cases::$case(kind)`.
macro_rules! both_mtas {
    ($($case:ident),* $(,)?) => {
        mod postfix {
            $(
                #[test]
                #[ignore = "needs Postfix: bash .ci/install-mtas; cargo test -- --include-ignored"]
                fn $case() {
                    crate::cases::$case(crate::Kind::Postfix);
                }
            )*
        }
        mod sendmail {
            $(
                #[test]
                #[ignore = "needs Sendmail: bash .ci/install-mtas; cargo test -- --include-ignored"]
                fn $case() {
                    crate::cases::$case(crate::Kind::Sendmail);
                }
            )*
        }
    };
}

both_mtas!(
    each_rule,
    good_helo_is_delivered,
    whitelisted_and_other_recipient,
    domain_actions,
    milter_down_tempfails,
    sighup_changes_policy,
    reply_url_with_percent,
    ipv6_client,
    macros_and_helo_calls,
    percent_in_reply_text,
    administrator_probes,
    per_rule_actions_and_tag,
    forged_headers_removed,
    stop_drains_whole_sessions,
    invalid_and_non_fqdn,
    dns_unknown_per_recipient,
    dns_mismatch_tagged,
    dns_failure_per_recipient,
    dns_waits_for_a_slow_answer,
    dns_last_helo_decides,
);
