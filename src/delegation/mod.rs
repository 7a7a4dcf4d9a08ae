//! The Postfix policy service: the second front end on the same decision, speaking
//! Postfix's policy delegation protocol (SMTPD_POLICY_README) on `policy_socket`.
//!
//! A request is `name=value` lines ended by an empty line; the answer is one
//! `action=...` line and an empty line. Postfix keeps a connection open for many requests
//! (one per RCPT with `check_policy_service` in `smtpd_recipient_restrictions`), closes it
//! after `smtpd_policy_service_max_idle` (300 s) or `_max_ttl` (1000 s), and on any
//! trouble the protocol wants no answer but a logged warning and a closed connection:
//! Postfix then retries, and finally applies `smtpd_policy_service_default_action`.
//!
//! The decision is `verdict::decide`, the counters `Shared::stats`, the log lines those of
//! the milter with `via=policy`. What the milter learns from macros comes from the
//! request's attributes here, except the MTA's own host name (`myhostname`), which no
//! attribute carries: own names are `own_names` and this host's name (`Shared::host_name`,
//! from `host::Host`).

mod answer;
mod connection;
mod misplaced;
mod reader;
mod request;
mod tagged;

pub use request::{MAX_ATTRIBUTES, MAX_LINE};

use crate::{
    host,
    ruleset::RuleSet,
    shared::{LiveSession, Shared},
    socket::{Listener, Origin, StoppableListener},
    stats::FrontEnd,
};
use indymilter::{EitherStream, Listener as _};
use log::warn;
use misplaced::Reminder;
use std::{
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};
use tagged::TaggedMessages;
use tokio::{
    select,
    sync::{watch, Semaphore},
};

/// The limits of the service, from the configuration (restart-only keys).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// A connection silent this long between requests is closed; a request must be
    /// complete this long after its first byte (`policy_idle_timeout`).
    pub idle_timeout: Duration,
}

/// What the service knows besides the rule set in force.
struct Service {
    shared: Arc<Shared>,
    limits: Limits,
    /// The "not at RCPT" and "not smtpd_access_policy" warnings, each logged at most
    /// once per `misplaced::WARNING_INTERVAL`.
    warned_state: Reminder,
    warned_request: Reminder,
    /// The messages that got the tag header, across all connections.
    tagged: TaggedMessages,
}

impl Service {
    fn new(shared: Arc<Shared>, limits: Limits) -> Self {
        Self {
            shared,
            limits,
            warned_state: Reminder::default(),
            warned_request: Reminder::default(),
            tagged: TaggedMessages::default(),
        }
    }
}

/// The bytes that one policy connection writes back for `input`: an answer per request,
/// up to the end of `input` or the first request that the protocol calls bad (which the
/// service meets by closing the connection unanswered). The reader and the answer of
/// `serve`, deciding on `ruleset` with `host_name`, without a socket or a runtime:
/// for the fuzz target `fuzz/fuzz_targets/policy.rs`. The log lines go wherever `log`
/// sends them, the counters to a `Shared` of this call's own.
pub fn answers(ruleset: RuleSet, host_name: Option<String>, input: &[u8]) -> Vec<Vec<u8>> {
    let limits = Limits {
        max_connections: 1,
        idle_timeout: Duration::from_secs(300),
    };
    let shared = Shared::new(ruleset);
    shared.set_host_name(host_name);
    let service = Service::new(Arc::new(shared), limits);
    let mut reader = input;
    let mut line = Vec::new();
    let mut request = request::Request::default();
    let mut answers = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        // A byte slice never makes a reader wait: the first poll is the outcome.
        let read = pin!(request::read_request(&mut reader, &mut line, &mut request)).poll(&mut cx);
        match read {
            // No DNS answers here (`dns_for` needs a runtime to look up in): the DNS
            // rules see none.
            Poll::Ready(Ok(true)) => answers.push(service.answer(&request, None).into_owned()),
            Poll::Ready(Ok(false) | Err(_)) | Poll::Pending => return answers,
        }
    }
}

/// The warning that the policy path knows fewer own names than the milter, which also
/// learns Postfix's `myhostname` (`j`) from the MTA: the policy service is on, this
/// host's name is not fully qualified (`host::qualified` gives none) and `own_names` is empty,
/// so it knows none. Listing `myhostname` in `own_names` makes the two paths equal.
/// `host` is the name as the system gives it, for the message.
pub fn host_name_warning(config: &crate::config::Config, host: &str) -> Option<String> {
    if config.policy_socket().is_none() || !config.ruleset().own_names().is_empty() {
        return None;
    }
    if host::qualified(host).is_some() {
        return None;
    }
    Some(format!(
        "policy_host_name=\"\" own_names=[] this host's name {} is not fully qualified and Postfix does not send the policy service its myhostname, so the policy service knows no own name for the rcpt-domain rule where the milter knows myhostname; add Postfix's myhostname (postconf -h myhostname) to own_names",
        crate::logging::quote(host)
    ))
}

/// Serves policy connections on `listener` until `stop` turns true; then accepts no more
/// and lets each connection finish the request it is reading, answer it and close. The
/// connections count in `Shared::sessions`, which the caller's drain waits for.
pub async fn serve(
    listener: Listener,
    origin: Origin,
    shared: Arc<Shared>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let service = Arc::new(Service::new(shared, limits));
    let (mut listener, stop_handle) = StoppableListener::new(listener, origin);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    service
        .shared
        .stats
        .set_connections_max(FrontEnd::PolicyService, limits.max_connections);
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let (permit, full) = match slots.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    warn!(
                        "event=policy_limit max_connections={} reached; new policy connections wait",
                        limits.max_connections
                    );
                    last_full_warning = Some(Instant::now());
                }
                select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => (permit, true),
                        Err(_) => break,
                    },
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
            }
        };
        // A connection already in the listen queue when a slot came free is one that
        // waited for it.
        let queued = if full {
            std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await
        } else {
            Poll::Pending
        };
        let accepted = match queued {
            Poll::Ready(accepted) => {
                if accepted.is_ok() {
                    service
                        .shared
                        .stats
                        .connection_waited(FrontEnd::PolicyService);
                }
                accepted
            }
            Poll::Pending => select! {
                accepted = std::future::poll_fn(|cx| listener.poll_accept(cx)) => accepted,
                _ = stop.wait_for(|stopped| *stopped) => break,
            },
        };
        // StoppableListener retries failed accepts itself.
        let Ok(stream) = accepted else { continue };
        let (stream, peer) = match stream {
            EitherStream::Tcp(tcp) => {
                let tcp = tcp.into_inner();
                let peer = tcp
                    .peer_addr()
                    .map_or_else(|_| "unknown".into(), |a| a.to_string());
                (EitherStream::Tcp(tcp), peer)
            }
            EitherStream::Unix(unix) => (EitherStream::Unix(unix), "unix".to_string()),
        };
        let live = LiveSession::new(service.shared.clone(), FrontEnd::PolicyService);
        let service = service.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            service.connection(stream, &peer, stop).await;
            drop(live);
            drop(permit);
        });
    }
    // New connections are refused from now on (they wait in the socket when systemd
    // holds it for the next instance); a unix socket file is removed by main.
    stop_handle.stop();
}
