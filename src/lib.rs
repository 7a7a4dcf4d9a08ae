//! bogus-helo-milter: refuses mail, per recipient, from clients that greet with a bogus HELO.
//!
//! The decision lives in `verdict` (pure), the rule set it consults in `ruleset`, built from
//! `config`; `judgement` turns it into the log line, the counters and an outcome. Two
//! front ends gather facts and translate outcomes into their protocols: `milter` (the
//! milter callbacks) and `delegation` (the Postfix policy service); what they share is in
//! `shared`, the facts about the host in `host`, and this file is the process around
//! them: signals, reloads and the statistics line, with the fact sources its caller
//! injects (`Sources`).

pub mod address_set;
pub mod config;
pub mod delegation;
pub mod dns;
pub mod domain;
pub mod explain;
pub mod helo;
pub mod host;
pub mod interfaces;
pub mod ip_text;
pub mod judgement;
pub mod logging;
pub mod metrics;
mod milter;
pub mod recipient;
pub mod ruleset;
pub mod shared;
pub mod socket;
pub mod stats;
pub mod systemd;
pub mod verdict;
pub mod whitelist;

use crate::{
    config::Config,
    host::{Host, HostFacts},
    logging::quote,
    shared::Shared,
    socket::{Listener, Origin, StoppableListener},
};
use log::{error, info, warn};
use std::{future::Future, io, path::PathBuf, sync::Arc, time::Duration};
use tokio::{
    select,
    signal::unix::{signal, SignalKind},
    time::{interval_at, Instant, MissedTickBehavior},
};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The sockets of the two front ends; at least one is there (`Config` checks it). The
/// milter's may come from systemd's socket unit, the policy service's from systemd's file
/// descriptor store (`Origin`). And the metrics endpoint's, when `metrics_listen` is set.
pub struct Listeners {
    pub milter: Option<(Listener, Origin)>,
    pub policy_service: Option<(Listener, Origin)>,
    pub metrics: Option<tokio::net::TcpListener>,
}

/// What `run` learns from outside its configuration, injected by its caller: the binary
/// passes the system's (`Sources::system`), a test its own.
#[derive(Clone)]
pub struct Sources {
    /// Read at start and at each reload (`host::Host::read`).
    pub host: Arc<dyn HostFacts>,
    /// Where the DNS rules' answers come from; `None`: hickory-resolver, asking the
    /// configured `dns_servers` (`dns::build`).
    pub dns: Option<Arc<dyn dns::Lookup>>,
}

impl Sources {
    pub fn system() -> Self {
        Self {
            host: Arc::new(host::System),
            dns: None,
        }
    }
}

/// Serves milter and policy service connections until `shutdown` completes, then accepts
/// no new connections (refuses them on a socket the process bound itself) and lets the
/// sessions in progress finish (for up to `SHUTDOWN_GRACE`). SIGHUP rereads
/// `config_path` (`None`: the default file) and the facts about the host from `sources`;
/// SIGUSR1 and every `stats_interval` log the counters, which both front ends share.
pub async fn run(
    listeners: Listeners,
    config: Config,
    config_path: Option<PathBuf>,
    sources: Sources,
    shutdown: impl Future,
) -> io::Result<()> {
    let host = Host::read(sources.host.as_ref(), &config);
    let shared = Arc::new(Shared::new(config.ruleset_with(&host.interfaces)));
    match resolver_for(&shared, &config, &shared.ruleset(), &sources) {
        Ok(dns) => shared.set_dns(dns),
        Err(e) => {
            error!("event=start result=failed error={:?}", e.to_string());
            return Err(io::Error::other(e.to_string()));
        }
    }
    shared.set_host_name(host.name.clone());
    shared.stats.config_loaded(false);
    let signals = signals(shared.clone(), config.clone(), config_path, sources)?;
    let mut tasks = vec![tokio::spawn(signals)];
    if listeners.milter.is_some() {
        shared
            .stats
            .set_connections_max(stats::FrontEnd::Milter, config.max_connections());
    }
    // What a stop does to new connections, for the shutdown line: the milter's socket
    // decides, or the policy service's when it is alone.
    let origin = listeners
        .milter
        .as_ref()
        .or(listeners.policy_service.as_ref())
        .map_or(Origin::Bound, |(_, origin)| *origin);
    let (stop_policy_service, policy_stopped) = tokio::sync::watch::channel(false);
    if let Some(policy) = listeners.policy_service {
        let service = serve_policy(policy, shared.clone(), &config, policy_stopped);
        tasks.push(tokio::spawn(service));
    }
    if let Some(listener) = listeners.metrics {
        tasks.push(tokio::spawn(metrics::serve(listener, shared.clone())));
    }
    let (milter, drain) = stopping(
        listeners.milter,
        shutdown,
        stop_policy_service,
        &shared,
        origin,
    );
    log_start(&config, &host);
    let result = match milter {
        Some(listener) => serve_milter(listener, &shared, &config, drain).await,
        None => {
            drain.await;
            Ok(())
        }
    };
    for task in tasks {
        task.abort();
    }
    match &result {
        Ok(()) => info!("event=stop {}", shared.stats),
        Err(e) => error!("event=stop error={:?}", e.to_string()),
    }
    result
}

/// The milter's listener, and the stop: when `shutdown` completes, both front ends
/// accept no more and the sessions in progress are waited for.
fn stopping(
    milter: Option<(Listener, Origin)>,
    shutdown: impl Future,
    stop_policy_service: tokio::sync::watch::Sender<bool>,
    shared: &Arc<Shared>,
    origin: Origin,
) -> (Option<StoppableListener>, impl Future<Output = ()>) {
    let (milter, stop_milter) = match milter {
        Some((listener, origin)) => {
            let (listener, handle) = StoppableListener::new(listener, origin);
            (Some(listener), Some(handle))
        }
        None => (None, None),
    };
    let shared = shared.clone();
    let drain = async move {
        shutdown.await;
        if let Some(handle) = stop_milter {
            handle.stop();
        }
        let _ = stop_policy_service.send(true);
        drain_sessions(&shared, origin).await;
    };
    (milter, drain)
}

/// The policy service on `listener` until `stopped` turns true.
fn serve_policy(
    (listener, origin): (Listener, Origin),
    shared: Arc<Shared>,
    config: &Config,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let limits = delegation::Limits {
        max_connections: config.max_connections(),
        idle_timeout: config.policy_idle_timeout(),
    };
    delegation::serve(listener, origin, shared, limits, stopped)
}

/// The signal handlers' task: SIGHUP reloads, SIGUSR1 and the statistics clock log the
/// counters. The handlers are installed before it returns.
fn signals(
    shared: Arc<Shared>,
    mut current: Config,
    config_path: Option<PathBuf>,
    sources: Sources,
) -> io::Result<impl Future<Output = ()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    Ok(async move {
        let mut ticks = stats_ticks(current.stats_interval());
        loop {
            select! {
                _ = hangup.recv() => {
                    let path = config_path.as_deref();
                    if let Some(new) = reload(&shared, &current, path, &sources) {
                        if new.stats_interval() != current.stats_interval() {
                            ticks = stats_ticks(new.stats_interval());
                        }
                        current = new;
                    }
                }
                _ = usr1.recv() => info!("event=stats {}", shared.stats),
                _ = ticks.tick(), if current.stats_interval().is_some() => {
                    info!("event=stats {}", shared.stats);
                }
            }
        }
    })
}

/// Serves milter connections on `listener` until `drain` completes.
async fn serve_milter(
    listener: StoppableListener,
    shared: &Arc<Shared>,
    config: &Config,
    drain: impl Future<Output = ()>,
) -> io::Result<()> {
    let milter_config = indymilter::Config {
        max_connections: config.max_connections(),
        connection_timeout: config.idle_timeout(),
        ..Default::default()
    };
    let callbacks = milter::callbacks(shared.clone());
    indymilter::run(listener, callbacks, milter_config, drain).await
}

fn log_start(config: &Config, host: &Host) {
    let off = || "off".to_string();
    info!(
        "event=start version={VERSION} socket={} policy_socket={} config={:?} own_interface_addresses={}{}",
        config.socket().map_or_else(off, ToString::to_string),
        config.policy_socket().map_or_else(off, ToString::to_string),
        config.origin(),
        host.interfaces.len(),
        match (config.policy_socket(), &host.name) {
            (None, _) => String::new(),
            (Some(_), name) => format!(" policy_host_name={}", quote(name.as_deref().unwrap_or(""))),
        }
    );
}

/// The statistics line's clock; with no `stats_interval` it never ticks (the caller's
/// guard), but a valid interval is still needed to build it.
fn stats_ticks(period: Option<Duration>) -> tokio::time::Interval {
    let period = period.unwrap_or(Duration::from_secs(3600));
    let mut ticks = interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// How long a stop waits for the sessions in progress: inside the unit's
/// `TimeoutStopSec=30s`, and short enough that the MTA connections queued meanwhile on
/// a socket from systemd reach the next instance within Postfix's
/// `milter_command_timeout` (30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Waits until the sessions in progress have ended, or `SHUTDOWN_GRACE` has passed; the
/// MTA answers the rest of a session cut short with its `milter_default_action`.
async fn drain_sessions(shared: &Shared, origin: Origin) {
    let sessions = shared.sessions();
    let new_connections = match origin {
        Origin::Bound => "refused",
        // They wait in systemd's socket for the next instance.
        Origin::Systemd => "queued",
    };
    info!("event=shutdown new_connections={new_connections} sessions_in_progress={sessions}");
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while shared.sessions() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = shared.sessions();
    if left > 0 {
        warn!(
            "event=shutdown sessions_cut_short={left} after={}s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// The resolver that `config` with `ruleset` needs: none while no DNS rule is on; the one
/// in force while the DNS settings stay (its cache with it); else a new one.
fn resolver_for(
    shared: &Shared,
    config: &Config,
    ruleset: &ruleset::RuleSet,
    sources: &Sources,
) -> Result<Option<(config::DnsSettings, dns::Resolver)>, dns::hickory::BuildError> {
    if !ruleset.needs_dns() {
        return Ok(None);
    }
    let settings = config.dns();
    if let Some((in_force, resolver)) = shared.dns_in_force() {
        if in_force == *settings {
            return Ok(Some((in_force, resolver)));
        }
    }
    let counters = shared.stats.dns().clone();
    let resolver = dns::build(settings, sources.dns.clone(), counters)?;
    Ok(Some((settings.clone(), resolver)))
}

/// Rereads the configuration; a bad one is logged and the old one stays in force.
/// The facts about the host are reread with it.
fn reload(
    shared: &Shared,
    current: &Config,
    path: Option<&std::path::Path>,
    sources: &Sources,
) -> Option<Config> {
    match Config::load(path) {
        Ok(new) => {
            let host = Host::read(sources.host.as_ref(), &new);
            let ruleset = new.ruleset_with(&host.interfaces);
            let dns = match resolver_for(shared, &new, &ruleset, sources) {
                Ok(dns) => dns,
                Err(e) => {
                    shared.stats.reload_failed();
                    error!(
                        "event=reload result=failed keeping=previous error={:?}",
                        e.to_string()
                    );
                    return None;
                }
            };
            shared.set_ruleset(ruleset);
            shared.set_dns(dns);
            shared.set_host_name(host.name);
            shared.stats.config_loaded(true);
            logging::set_level(new.log_level());
            let waiting = current.restart_keys(&new);
            if !waiting.is_empty() {
                warn!(
                    "event=reload restart_needed={} these keys changed and take effect only at restart",
                    waiting.join(",")
                );
            }
            info!(
                "event=reload result=ok config={:?} log_level={} stats_interval={}",
                new.origin(),
                new.log_level().as_str().to_ascii_lowercase(),
                new.stats_interval()
                    .map_or("0".to_string(), |d| humantime::format_duration(d)
                        .to_string())
            );
            Some(current.keep_restart_settings(new))
        }
        Err(e) => {
            shared.stats.reload_failed();
            error!(
                "event=reload result=failed keeping=previous error={:?}",
                e.to_string()
            );
            None
        }
    }
}
