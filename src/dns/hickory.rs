//! The real `Lookup`: hickory-resolver's stub resolver, asking the configured servers or
//! those of /etc/resolv.conf, and its results mapped to `Fetched`.

use super::{Answer, Failure, Fetched, Lookup, RecordType};
use hickory_resolver::{
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts},
    net::{runtime::TokioRuntimeProvider, DnsError, NetError},
    proto::{
        op::ResponseCode,
        rr::{Name, RData, RecordType as HickoryType},
    },
    TokioResolver,
};
use std::{
    fmt::{self, Display, Formatter},
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    str::FromStr,
    time::Duration,
};

/// The file read when no `dns_servers` are configured.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Why no resolver could be built.
#[derive(Debug)]
pub enum BuildError {
    /// /etc/resolv.conf is unreadable, or names no server.
    SystemConfig(String),
    /// hickory refused the configuration.
    Resolver(String),
}

impl Display for BuildError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::SystemConfig(e) => write!(
                f,
                "dns_servers is empty, so the servers of {RESOLV_CONF} are asked, but {e}; name the servers in dns_servers"
            ),
            Self::Resolver(e) => write!(f, "cannot build the DNS resolver: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Asks through hickory-resolver; cheap to share (`Arc<dyn Lookup>`).
pub struct Hickory {
    /// One resolver per server, all asked at once: the first server's answer that is no
    /// failure is the answer. hickory's own pool ends a question at the first SERVFAIL it
    /// gets, so one broken server among good ones would fail every lookup; a stub resolver
    /// (glibc's, Postfix's) goes on to the next server.
    resolvers: Vec<TokioResolver>,
}

impl Hickory {
    /// A resolver asking `servers` (UDP, TCP when an answer is truncated), or with none
    /// the servers of /etc/resolv.conf (only its servers: names are asked as fully
    /// qualified, so its search list and `ndots` play no part). Each question goes to
    /// every server at once, once, within `timeout`. hickory's cache is off: `dns::cache`
    /// caches.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Self, BuildError> {
        let name_servers = if servers.is_empty() {
            let (system, _) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| BuildError::SystemConfig(format!("it cannot be read: {e}")))?;
            let found = system.name_servers().to_vec();
            if found.is_empty() {
                return Err(BuildError::SystemConfig("it names no nameserver".into()));
            }
            found
        } else {
            servers.iter().map(|&addr| name_server(addr)).collect()
        };
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        // Retries after the first try: none, the caller's wait is bounded anyway.
        options.attempts = 0;
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.ndots = 0;
        options.preserve_intermediates = false;
        let resolvers = name_servers
            .into_iter()
            .map(|server| {
                let config = ResolverConfig::from_name_servers(vec![server]);
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                    .with_options(options.clone())
                    .build()
                    .map_err(|e| BuildError::Resolver(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { resolvers })
    }

    async fn ask(&self, name: &str, record: RecordType, timeout: Duration) -> Fetched {
        // The trailing dot: fully qualified, no search list.
        let Ok(fqdn) = Name::from_str(&format!("{}.", name.trim_end_matches('.'))) else {
            return failed(Failure::ServFail);
        };
        let mut asked = tokio::task::JoinSet::new();
        for resolver in &self.resolvers {
            let (resolver, fqdn) = (resolver.clone(), fqdn.clone());
            asked.spawn(async move {
                match resolver.lookup(fqdn, hickory_type(record)).await {
                    Ok(lookup) => records(record, lookup.answers()),
                    Err(e) => from_error(&e),
                }
            });
        }
        // A SERVFAIL is what is known when no server answered better; else a timeout.
        let mut failure = Failure::Timeout;
        let answered = tokio::time::timeout(timeout, async {
            while let Some(joined) = asked.join_next().await {
                match joined {
                    Ok(Fetched {
                        answer: Answer::Failed(Failure::Timeout),
                        ..
                    }) => {}
                    Ok(Fetched {
                        answer: Answer::Failed(Failure::ServFail),
                        ..
                    })
                    | Err(_) => failure = Failure::ServFail,
                    Ok(fetched) => return Some(fetched),
                }
            }
            None
        })
        .await;
        // Dropping the set stops the questions still under way.
        answered.ok().flatten().unwrap_or_else(|| failed(failure))
    }
}

impl Lookup for Hickory {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        record: RecordType,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(self.ask(name, record, timeout))
    }
}

/// A configured server: UDP and TCP on its port.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

fn hickory_type(record: RecordType) -> HickoryType {
    match record {
        RecordType::A => HickoryType::A,
        RecordType::Aaaa => HickoryType::AAAA,
        RecordType::Mx => HickoryType::MX,
    }
}

fn failed(failure: Failure) -> Fetched {
    Fetched {
        answer: Answer::Failed(failure),
        ttl: Duration::ZERO,
    }
}

/// The records of the type asked (a CNAME on the way is left out), with the smallest
/// TTL among them; none of them is NODATA with no TTL to cache it by.
fn records(record: RecordType, answers: &[hickory_resolver::proto::rr::Record]) -> Fetched {
    let mut ttl = u32::MAX;
    let mut addresses = Vec::new();
    let mut exchanges = Vec::new();
    for r in answers {
        let taken = match (&r.data, record) {
            (RData::A(a), RecordType::A) => {
                addresses.push(IpAddr::V4(a.0));
                true
            }
            (RData::AAAA(a), RecordType::Aaaa) => {
                addresses.push(IpAddr::V6(a.0).to_canonical());
                true
            }
            (RData::MX(mx), RecordType::Mx) => {
                exchanges.push(mx.exchange.to_ascii().trim_end_matches('.').to_string());
                true
            }
            _ => false,
        };
        if taken {
            ttl = ttl.min(r.ttl);
        }
    }
    let answer = match record {
        _ if addresses.is_empty() && exchanges.is_empty() => {
            return Fetched {
                answer: Answer::NoData,
                ttl: Duration::ZERO,
            }
        }
        RecordType::Mx => Answer::Exchanges(exchanges),
        RecordType::A | RecordType::Aaaa => Answer::Addresses(addresses),
    };
    Fetched {
        answer,
        ttl: Duration::from_secs(ttl.into()),
    }
}

fn from_error(e: &NetError) -> Fetched {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(none)) => {
            let answer = match none.response_code {
                ResponseCode::NXDomain => Answer::NxDomain,
                ResponseCode::NoError => Answer::NoData,
                _ => return failed(Failure::ServFail),
            };
            // Without an SOA there is no negative TTL: not cached.
            let ttl = Duration::from_secs(none.negative_ttl.unwrap_or(0).into());
            Fetched { answer, ttl }
        }
        NetError::Timeout => failed(Failure::Timeout),
        _ => failed(Failure::ServFail),
    }
}
