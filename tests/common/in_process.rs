//! The milter and the policy service run inside the test (`bogus_helo_milter::run`, as
//! `main` calls it) with facts about the host that the test injects (`TestHost`): what
//! the binary-driven harness (`milter.rs`) cannot give, since the binary reads the facts
//! of the machine it runs on. Both front ends listen on free loopback ports; the test
//! drives the milter with indymilter-test and the policy service with `ask_policy`.

use bogus_helo_milter::{
    config::Config,
    dns::{Answer, Fetched, Lookup, RecordType},
    host::HostFacts,
    socket::Origin,
    Listeners, Sources,
};
use indymilter::EitherListener;
use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

/// Facts about the host as the test sets them; read by `run` at start and at each reload.
#[derive(Debug, Default)]
pub struct TestHost {
    interfaces: Mutex<Vec<IpAddr>>,
    name: Mutex<Option<String>>,
}

impl TestHost {
    pub fn new(interfaces: &[&str], name: Option<&str>) -> Arc<Self> {
        let host = Arc::new(Self::default());
        host.set(interfaces, name);
        host
    }

    /// New facts, for the next reload to read.
    pub fn set(&self, interfaces: &[&str], name: Option<&str>) {
        let interfaces = interfaces
            .iter()
            .map(|ip| ip.parse().expect("an IP address"))
            .collect();
        *self.interfaces.lock().unwrap() = interfaces;
        *self.name.lock().unwrap() = name.map(str::to_string);
    }
}

impl HostFacts for TestHost {
    fn interface_addresses(&self) -> Vec<IpAddr> {
        self.interfaces.lock().unwrap().clone()
    }

    fn host_name(&self) -> Option<String> {
        self.name.lock().unwrap().clone()
    }
}

/// `run` inside this test's runtime (a multi-thread one: the test's own tasks and the
/// service's run side by side); stopped when `stop` is called or the runtime ends.
pub struct InProcess {
    pub milter: SocketAddr,
    pub policy: SocketAddr,
    pub host: Arc<TestHost>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    _dir: TempDir,
}

impl InProcess {
    /// Starts the milter and the policy service with `config` (TOML without the sockets)
    /// and the facts of `host`.
    pub async fn start(config: &str, host: Arc<TestHost>) -> Self {
        Self::start_with_dns(config, host, None).await
    }

    /// As `start`, the DNS answers from `dns` (`None`: hickory, asking `dns_servers`).
    pub async fn start_with_dns(
        config: &str,
        host: Arc<TestHost>,
        dns: Option<Arc<dyn Lookup>>,
    ) -> Self {
        let milter = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let policy = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let milter_addr = milter.local_addr().unwrap();
        let policy_addr = policy.local_addr().unwrap();
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("milter.conf");
        let head =
            format!("socket = \"inet:{milter_addr}\"\npolicy_socket = \"inet:{policy_addr}\"\n");
        std::fs::write(&config_path, format!("{head}{config}")).expect("write config");
        let config = Config::load(Some(&config_path)).unwrap_or_else(|e| panic!("{e}"));
        let listeners = Listeners {
            milter: Some((EitherListener::Tcp(milter), Origin::Bound)),
            policy_service: Some((EitherListener::Tcp(policy), Origin::Bound)),
            metrics: None,
        };
        let sources = Sources {
            host: host.clone(),
            dns,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(bogus_helo_milter::run(
            listeners,
            config,
            Some(config_path),
            sources,
            shutdown,
        ));
        Self {
            milter: milter_addr,
            policy: policy_addr,
            host,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// Stops it as SIGTERM does, and waits for `run` to return.
    pub async fn stop(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("run panicked")
    }

    /// One request on a new policy connection, as Postfix sends it at RCPT; the answer
    /// without its empty line.
    pub async fn ask_policy(&self, helo: &str, rcpt: &str) -> String {
        let request = format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
             client_address=198.51.100.7\nclient_name=unknown\nhelo_name={helo}\n\
             sender=sender@example.org\nrecipient={rcpt}\nqueue_id=\n\
             instance=7a1.656c2f0e.1a2b3.0\nsasl_username=\n\n"
        );
        let mut stream = TcpStream::connect(self.policy).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).await.expect("read");
            assert!(n > 0, "closed before the end of the answer: {answer:?}");
            if line == "\n" {
                return answer.trim_end().to_string();
            }
            answer.push_str(&line);
        }
    }
}

/// DNS answers as the test sets them, every question recorded: a name of the table gets
/// its answers, a name starting `silent.` never an answer, any other NXDOMAIN.
#[derive(Debug, Default)]
pub struct TestDns {
    answers: Mutex<Vec<(String, RecordType, Answer)>>,
    asked: Mutex<Vec<(String, RecordType)>>,
}

impl TestDns {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set(&self, name: &str, record: RecordType, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .push((name.to_string(), record, answer));
    }

    /// The questions asked so far, in order.
    pub fn asked(&self) -> Vec<(String, RecordType)> {
        self.asked.lock().unwrap().clone()
    }

    /// The names asked so far, each once, in order.
    pub fn names_asked(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, _) in self.asked() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

impl Lookup for TestDns {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        record: RecordType,
        _timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Fetched> + Send + 'a>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push((name.to_string(), record));
            if name.starts_with("silent.") {
                std::future::pending::<()>().await;
            }
            let answer = self
                .answers
                .lock()
                .unwrap()
                .iter()
                .find(|(n, r, _)| n == name && *r == record)
                .map(|(_, _, answer)| answer.clone())
                .unwrap_or(Answer::NxDomain);
            Fetched {
                answer,
                ttl: Duration::from_secs(60),
            }
        })
    }
}
