use bogus_helo_milter::{
    config::{Config, DEFAULT_PATH},
    dns::{self, session::qualified_name},
    explain::{explain, Question},
    helo::Helo,
    host::{Host, System},
    logging,
    socket::{Bound, Origin},
    systemd, Listeners,
};
use clap::{Parser, Subcommand};
use indymilter::EitherListener;
use std::{future::Future, net::SocketAddr, os::fd::AsFd, path::PathBuf, process::ExitCode};
use tokio::signal::unix::{signal, Signal, SignalKind};

mod reload_command;

// jemalloc, because a milter lives as long as the MTA: after a burst of connections its
// background thread hands the freed memory back to the system within about a second
// (dirty pages decay over 1 s, then are returned at once), where glibc's malloc keeps the
// peak for the life of the process. See README, "Memory".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's `malloc_conf`, read when it starts; `MALLOC_CONF`-style settings in the
/// environment variable `_RJEM_MALLOC_CONF` are applied after these.
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: JemallocConf =
    JemallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer, as jemalloc reads `malloc_conf`.
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// Safety: it points to a constant string.
unsafe impl Sync for JemallocConf {}

/// A milter for Postfix and Sendmail that refuses mail, per recipient, from clients that
/// greet with a bogus HELO: an IP address, the receiving server's own address, or the
/// recipient's own domain.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without this option the default file,
    /// /etc/bogus-helo-milter/milter.conf, is read if it exists, else the built-in
    /// defaults apply.
    #[arg(short, long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,

    /// Check the configuration, print the effective configuration, and exit.
    #[arg(short = 't', long)]
    check_config: bool,

    /// With --check-config: print nothing but errors (as the systemd unit does).
    #[arg(short, long, requires = "check_config")]
    quiet: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the verdict that this configuration gives a HELO and a recipient, and why.
    Explain(Box<Question>),
    /// Make the milter running as PID reread its configuration (SIGHUP), after checking
    /// that PID is this milter and the file quietly. The systemd unit's ExecReload: a bad
    /// file makes `systemctl reload` fail (exit status 2; the milter still rereads it,
    /// keeps its configuration and reports the failed reload), a PID that is not this
    /// milter too (exit status 3; nothing is signalled).
    Reload {
        /// The milter's process ID (systemd's $MAINPID).
        #[arg(value_parser = clap::value_parser!(i32).range(2..))]
        pid: i32,
    },
}

pub(crate) const EXIT_CONFIG: u8 = 2;
/// `reload`: the PID is not this milter (or cannot be told to be), nothing signalled.
pub(crate) const EXIT_NOT_MILTER: u8 = 3;

/// Writes to standard output; a reader that went away (`-t | head`) is no error.
fn output(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let (false, Some(Command::Reload { pid })) = (cli.check_config, &cli.command) {
        return reload_command::signal(*pid, Config::load(cli.config.as_deref()));
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bogus-helo-milter: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    if cli.check_config {
        if !cli.quiet {
            print_effective(&config);
        }
        return ExitCode::SUCCESS;
    }

    match cli.command {
        Some(Command::Explain(mut question)) => {
            let ruleset = config.ruleset_with(&Host::read(&System, &config).interfaces);
            // Live, against the configured servers, as the service would ask: only while a
            // DNS rule is on, and only about a fully qualified name.
            let helo = Helo::parse(&question.helo);
            if let Some(name) = ruleset.needs_dns().then(|| qualified_name(&helo)).flatten() {
                match dns::ask_now(config.dns(), name) {
                    Ok(answers) => question.dns = Some(answers),
                    Err(e) => {
                        eprintln!("bogus-helo-milter: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                }
            }
            output(&explain(&ruleset, &question));
            return ExitCode::SUCCESS;
        }
        Some(Command::Reload { .. }) | None => {}
    }
    start(config, cli.config)
}

/// `-t`: the effective configuration, with a warning about the host when it has one.
fn print_effective(config: &Config) {
    let host = nix::unistd::gethostname().unwrap_or_default();
    let host = host.to_string_lossy();
    if let Some(warning) = bogus_helo_milter::delegation::host_name_warning(config, &host) {
        eprintln!("bogus-helo-milter: warning: {warning}");
    }
    // Not configuration, but what the own-ip rule also counts: read at start and at
    // every reload, so a changed interface address applies at the next reload.
    let interfaces = Host::read(&System, config).interfaces;
    let mut list: Vec<String> = interfaces.iter().map(|ip| ip.to_string()).collect();
    if !config.own_interfaces() {
        list.push("none (own_interfaces = false)".into());
    }
    output(&format!(
        "{}\n# this host's interface addresses, own addresses besides own_addresses and the\n# address each client connected to (read at start and at each reload):\n# {}\n",
        config.to_toml(),
        list.join(" ")
    ));
}

/// The milter (and the policy service) until SIGTERM or SIGINT.
fn start(config: Config, config_path: Option<PathBuf>) -> ExitCode {
    // Before anything opens a descriptor or starts a thread (they change the environment).
    let from_systemd = systemd::take_listen_fds();
    let notifier = systemd::Notifier::from_env();

    logging::init(config.log_level());
    // Each front end has max_connections of its own.
    let front_ends =
        usize::from(config.socket().is_some()) + usize::from(config.policy_socket().is_some());
    raise_open_files_limit(config.max_connections() * front_ends);
    if config.file().is_none() {
        log::info!("event=config file={DEFAULT_PATH:?} status=absent using=built-in-defaults");
    }

    // One thread, by measurement (BENCHMARKS.md): a session is a handful of short
    // callbacks, and indymilter hands each message between a reader task and the session
    // task, which on a multi-thread runtime means hops between threads. Behind Postfix
    // the current-thread runtime cost 25-40% less milter CPU per message and less latency
    // than the multi-thread one, in every scenario. One core at ~250 µs per session
    // serves some 4,000 sessions/s, well beyond what the MTA in front of it can send.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("event=start error={:?}", e.to_string());
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, config_path, from_systemd, notifier))
}

/// Binds (or takes from systemd) every socket, tells systemd it is ready, and serves.
async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    mut from_systemd: Vec<systemd::Inherited>,
    notifier: systemd::Notifier,
) -> ExitCode {
    // Handlers first: until they exist, SIGTERM or SIGHUP would kill the process
    // outright, leaving a unix socket file behind.
    let Some((mut term, mut int)) = signal_handlers() else {
        log::error!("event=start error=\"cannot install signal handlers\"");
        return ExitCode::FAILURE;
    };
    // The metrics endpoint first: bound before the milter's socket accepts (and
    // before systemd hears "ready"), and a failure leaves no socket file behind.
    let Ok(metrics) = metrics_listener(config.metrics_listen()).await else {
        return ExitCode::FAILURE;
    };
    // The policy service's socket from systemd's file descriptor store (an earlier
    // instance put it there), when it is still milter.conf's; else it is bound below.
    let (stored_policy, stale) = systemd::policy_socket(&mut from_systemd, config.policy_socket());
    if stale {
        notifier.forget(systemd::POLICY_FD_NAME);
    }
    let Ok(milter) = milter_listener(&config, from_systemd) else {
        return ExitCode::FAILURE;
    };
    let policy_from = if stored_policy.is_some() {
        "systemd"
    } else {
        "milter.conf"
    };
    let policy = match config.policy_socket() {
        Some(socket) => match policy_listener(stored_policy, stale, socket, &config, &notifier) {
            Ok(policy) => Some(policy),
            Err(e) => {
                log::error!("event=start result=failed policy_socket={socket} error={e:?}");
                if let Some(file) = milter.and_then(|(bound, _)| bound.unix_file) {
                    file.remove();
                }
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let milter_from = match milter.as_ref().map(|(_, origin)| *origin) {
        Some(Origin::Systemd) => "systemd",
        _ => "milter.conf",
    };
    announce(&config, milter_from, policy_from, &notifier);
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        notifier.stopping();
    };
    run(config, config_path, [milter, policy], metrics, shutdown).await
}

/// Installs the handlers of every signal the process takes; returns SIGTERM's and
/// SIGINT's, which stop it (SIGHUP's and SIGUSR1's are `run`'s to take again).
fn signal_handlers() -> Option<(Signal, Signal)> {
    let signals = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::user_defined1(),
    ]
    .map(signal);
    let [Ok(term), Ok(int), Ok(_), Ok(_)] = signals else {
        return None;
    };
    Some((term, int))
}

/// Serves the milter's and the policy service's sockets until `shutdown`, then removes
/// the socket files bound here.
async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    [milter, policy]: [Option<(Bound, Origin)>; 2],
    metrics: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> ExitCode {
    let mut files = Vec::new();
    let listeners = Listeners {
        milter: milter.map(|(bound, origin)| {
            files.extend(bound.unix_file);
            (bound.listener, origin)
        }),
        policy_service: policy.map(|(bound, origin)| {
            files.extend(bound.unix_file);
            (bound.listener, origin)
        }),
        metrics,
    };
    let result = bogus_helo_milter::run(
        listeners,
        config,
        config_path,
        bogus_helo_milter::Sources::system(),
        shutdown,
    )
    .await;
    for file in files {
        file.remove();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The metrics endpoint's listener, when `metrics_listen` is set; `Err` once logged.
async fn metrics_listener(
    listen: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>, ()> {
    let Some(addr) = listen else {
        return Ok(None);
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            let (level, line) = bogus_helo_milter::metrics::start_line(addr);
            log::log!(level, "{line}");
            Ok(Some(listener))
        }
        Err(e) => {
            log::error!(
                "event=start result=failed metrics_listen={addr} error={:?}",
                e.to_string()
            );
            Err(())
        }
    }
}

/// The milter's socket, from systemd (one of `from_systemd`) or bound here, when there is
/// one; `Err` once logged. Without one, the sockets from systemd are served by nothing.
fn milter_listener(
    config: &Config,
    from_systemd: Vec<systemd::Inherited>,
) -> Result<Option<(Bound, Origin)>, ()> {
    let Some(socket) = config.socket() else {
        for fd in from_systemd {
            log::warn!(
                "event=start systemd_socket={} name={:?} served=no reason=\"socket = \\\"\\\" in milter.conf: no milter\"",
                fd.address(),
                fd.name
            );
        }
        return Ok(None);
    };
    let (bound, origin) = match systemd::milter_socket(from_systemd, socket) {
        Some(fd) => {
            // No socket file of ours: one from systemd is systemd's to remove.
            let bound = fd.into_listener().map(|listener| Bound {
                listener,
                unix_file: None,
            });
            (bound.map_err(|e| e.to_string()), Origin::Systemd)
        }
        None => {
            let bound = socket.bind(config.unix_permissions());
            (bound.map_err(|e| e.to_string()), Origin::Bound)
        }
    };
    match bound {
        Ok(bound) => Ok(Some((bound, origin))),
        Err(e) => {
            log::error!("event=start result=failed socket={socket} error={e:?}");
            Err(())
        }
    }
}

/// Logs where each front end listens and tells systemd the service is ready.
fn announce(config: &Config, milter_from: &str, policy_from: &str, notifier: &systemd::Notifier) {
    for (key, socket, from) in [
        ("socket", config.socket(), milter_from),
        ("policy_socket", config.policy_socket(), policy_from),
    ] {
        if let Some(socket) = socket {
            log::info!("event=listen {key}={socket} from={from}");
        }
    }
    let serving: Vec<String> = [config.socket(), config.policy_socket()]
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    notifier.ready(&format!("serving {}", serving.join(" and ")));
}

/// The policy service's socket: the one from systemd's store, or bound here and then
/// handed to the store, so that the next instance gets it. A socket in the store is
/// systemd's from then on: not shut at stop and, for a unix socket, its file not removed
/// (`Origin::Systemd`, no `unix_file`).
/// `forgotten`: systemd was told to drop every socket stored under the name, this one too,
/// so it is stored again.
fn policy_listener(
    stored: Option<systemd::Inherited>,
    forgotten: bool,
    socket: &bogus_helo_milter::socket::Socket,
    config: &Config,
    notifier: &systemd::Notifier,
) -> Result<(Bound, Origin), String> {
    if let Some(fd) = stored {
        if forgotten {
            fd.store(notifier);
        }
        let listener = fd.into_listener().map_err(|e| e.to_string())?;
        let bound = Bound {
            listener,
            unix_file: None,
        };
        return Ok((bound, Origin::Systemd));
    }
    let bound = socket
        .bind(config.unix_permissions())
        .map_err(|e| e.to_string())?;
    let stored = match &bound.listener {
        EitherListener::Tcp(l) => notifier.store(l.as_fd(), systemd::POLICY_FD_NAME),
        EitherListener::Unix(l) => notifier.store(l.as_fd(), systemd::POLICY_FD_NAME),
    };
    if stored {
        log::info!(
            "event=fdstore policy_socket={socket} name={}",
            systemd::POLICY_FD_NAME
        );
        let bound = Bound {
            listener: bound.listener,
            unix_file: None,
        };
        return Ok((bound, Origin::Systemd));
    }
    Ok((bound, Origin::Bound))
}

/// Each milter connection is a file descriptor: lift the soft limit (often 1024) to the
/// hard one, so that `max_connections` is the limit that applies.
fn raise_open_files_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    // Besides the connections: the listener, stdio, the runtime's own descriptors.
    if limit < max_connections as u64 + 32 {
        log::warn!(
            "event=start open_files_limit={limit} is below max_connections={max_connections}; connections past it wait"
        );
    }
}
