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
//! attribute carries: own names are `own_names` and this host's name (`host_name`).

mod answer;
mod connection;
mod request;

pub use request::{MAX_ATTRIBUTES, MAX_LINE};

use crate::{
    domain,
    shared::{LiveSession, Shared},
    socket::{Listener, Origin, StoppableListener},
    stats::FrontEnd,
};
use indymilter::{EitherStream, Listener as _};
use log::warn;
use std::{
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};
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
    /// complete this long after its first byte.
    pub idle_timeout: Duration,
}

/// What the service knows besides the policy in force.
struct Service {
    shared: Arc<Shared>,
    /// This host's name in the form of `domain::normalize`, when it is fully qualified:
    /// stands in for Postfix's `myhostname`, which no policy attribute carries.
    host_name: Option<String>,
    limits: Limits,
    /// Whether the "not at RCPT" warning was logged: once per process is enough to tell
    /// the administrator, and a request per SMTP command must not flood the log.
    warned_state: AtomicBool,
    warned_request: AtomicBool,
}

/// This host's name, for the rcpt-domain rule: what Postfix's `myhostname` is by
/// default. A name without a dot is not used: a single-label HELO matches no rule.
pub fn host_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?;
    let name = domain::normalize(name.to_str()?).into_owned();
    name.contains('.').then_some(name)
}

/// Serves policy connections on `listener` until `stop` turns true; then accepts no more
/// and lets each connection finish the request it is reading, answer it and close. The
/// connections count in `Shared::sessions`, which the caller's drain waits for.
pub async fn serve(
    listener: Listener,
    origin: Origin,
    shared: Arc<Shared>,
    limits: Limits,
    host_name: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let service = Arc::new(Service {
        shared,
        host_name,
        limits,
        warned_state: AtomicBool::new(false),
        warned_request: AtomicBool::new(false),
    });
    let (mut listener, stop_handle) = StoppableListener::new(listener, origin);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
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
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
            }
        };
        let stream = select! {
            accepted = std::future::poll_fn(|cx| listener.poll_accept(cx)) => match accepted {
                Ok(stream) => stream,
                // StoppableListener retries failed accepts itself.
                Err(_) => continue,
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
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
        let live = LiveSession::new(service.shared.clone(), FrontEnd::Policy);
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
