//! Helpers for the fault and load tests: the process figures of the milter (open files,
//! peak memory, exit), the open-files limit of the test process, milter-protocol sessions
//! with a known verdict, and reading a Postfix log for what became of each message.

use indymilter_test::{MacroStage, Status, TestConnection, TestResult};
use nix::{
    sys::resource::{getrlimit, setrlimit, Resource},
    unistd::Pid,
};
use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    fs,
    net::SocketAddr,
    thread::sleep,
    time::{Duration, Instant},
};

/// Read and write timeouts of the milter-protocol sessions: generous, for a loaded machine.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// Lifts this process's soft limit of open files to the hard one; returns the soft limit
/// now in force.
pub fn raise_open_files_limit() -> u64 {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").0
}

/// The number of open file descriptors of `pid` (`/proc/<pid>/fd`).
pub fn fd_count(pid: Pid) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

/// The number of open file descriptors of `pid` once it has settled: the lowest count seen
/// until it has not changed for half a second (at most 10 s). Connections that a peer has
/// just closed (such as the readiness probe of [`super::milter::Milter::start`]) take a
/// moment to be closed on the milter's side too.
pub fn settled_fd_count(pid: Pid) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = fd_count(pid);
    let mut lowest = last;
    let mut unchanged = 0;
    while unchanged < 10 && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
        let now = fd_count(pid);
        lowest = lowest.min(now);
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
    }
    lowest
}

/// A `kB` field of `/proc/<pid>/status`, such as `VmHWM` (peak RSS) or `VmRSS`.
pub fn status_kib(pid: Pid, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The soft "Max open files" of `pid`, as `/proc/<pid>/limits` shows it.
pub fn open_files_limit(pid: Pid) -> String {
    fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("?")
        .to_string()
}

/// Whether `pid` has exited (a zombie not yet reaped, or gone). The milter's `Child` stays
/// with [`super::milter::Milter`], which reaps it in `stop`.
pub fn has_exited(pid: Pid) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Waits until `pid` has exited, up to `timeout`; returns whether it did.
pub fn wait_exited(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !has_exited(pid) {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
    true
}

pub use super::wait_until;

/// The kinds of session the loads mix, each with a known verdict at RCPT (with the milter's
/// top-level `action`, no whitelist, `trusted_networks = []`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Greeting {
    /// A host name: accepted.
    Good,
    /// An IP literal: `bogus helo` (rule `ip`).
    IpLiteral,
    /// The recipient's own domain: `bogus helo matches rcpt` (rule `rcpt-domain`).
    RcptDomain,
}

impl Greeting {
    /// The n-th of a mix: half good, a quarter of each bogus kind.
    pub fn nth(n: usize) -> Self {
        match n % 4 {
            0 | 2 => Greeting::Good,
            1 => Greeting::IpLiteral,
            _ => Greeting::RcptDomain,
        }
    }

    pub fn helo(self, n: usize) -> String {
        match self {
            Greeting::Good => format!("mx{n}.example.net"),
            Greeting::IpLiteral => "[192.0.2.9]".to_string(),
            Greeting::RcptDomain => "example.com".to_string(),
        }
    }

    pub fn is_bogus(self) -> bool {
        self != Greeting::Good
    }

    /// The reply text of a refusal, after the codes.
    pub fn refusal_text(self) -> Option<&'static str> {
        match self {
            Greeting::Good => None,
            Greeting::IpLiteral => Some("bogus helo"),
            Greeting::RcptDomain => Some("bogus helo matches rcpt"),
        }
    }

    /// The status the milter must answer at RCPT under `action` (`reject` or `tempfail`).
    pub fn expected(self, action: &str) -> Status {
        let Some(text) = self.refusal_text() else {
            return Status::Continue;
        };
        match action {
            "reject" => Status::Reject {
                message: Some(CString::new(format!("550 5.7.1 {text}")).unwrap()),
            },
            "tempfail" => Status::Tempfail {
                message: Some(CString::new(format!("450 4.7.1 {text}")).unwrap()),
            },
            other => panic!("no expected status for action {other:?}"),
        }
    }
}

/// The recipient every load session sends to (its domain is what `RcptDomain` greets with).
pub const RCPT: &str = "<user@example.com>";

/// Opens and negotiates a milter connection with generous timeouts.
pub async fn open(addr: SocketAddr) -> TestResult<TestConnection> {
    TestConnection::configure()
        .read_timeout(SESSION_TIMEOUT)
        .write_timeout(SESSION_TIMEOUT)
        .open_tcp(addr)
        .await
}

/// A foreign client address for session `n` (not loopback, so never trusted).
pub fn client_ip(n: usize) -> [u8; 4] {
    [198, 51, 100, (n % 250) as u8 + 1]
}

/// Sends what Postfix sends before RCPT: connect macros, connect, HELO, MAIL.
pub async fn before_rcpt(
    conn: &mut TestConnection,
    n: usize,
    greeting: Greeting,
) -> TestResult<()> {
    conn.macros(
        MacroStage::Connect,
        [("j", "mx.example.org"), ("{daemon_addr}", "203.0.113.25")],
    )
    .await?;
    conn.connect(format!("client{n}.example.net"), client_ip(n))
        .await?;
    conn.helo(greeting.helo(n)).await?;
    conn.mail(["<sender@example.net>"]).await?;
    Ok(())
}

/// Sends RCPT and returns the verdict, then ends the message and closes the connection.
pub async fn rcpt_and_close(mut conn: TestConnection) -> TestResult<Status> {
    let status = conn.rcpt([RCPT]).await?;
    conn.abort().await?;
    conn.close().await?;
    Ok(status)
}

/// What a Postfix log says about the messages that were accepted: for each Message-ID,
/// its queue id, the recipients delivered (`status=sent`) and whether Postfix is done
/// with it (`removed`).
#[derive(Debug, Default)]
pub struct PostfixLog {
    queue_ids: HashMap<String, String>,
    delivered: HashMap<String, HashSet<String>>,
    removed: HashSet<String>,
}

impl PostfixLog {
    pub fn parse(log: &str) -> Self {
        let mut parsed = Self::default();
        for line in log.lines() {
            // "... postfix/cleanup[123]: 4Xyz: message-id=<id>"
            let Some((_, rest)) = line.split_once("]: ") else {
                continue;
            };
            let Some((qid, what)) = rest.split_once(": ") else {
                continue;
            };
            if let Some(id) = what.strip_prefix("message-id=<") {
                let id = id.trim_end().trim_end_matches('>');
                parsed.queue_ids.insert(id.to_string(), qid.to_string());
            } else if let Some(to) = what.strip_prefix("to=<") {
                if what.contains(", status=sent ") {
                    let rcpt = to.split('>').next().unwrap_or_default().to_lowercase();
                    parsed
                        .delivered
                        .entry(qid.to_string())
                        .or_default()
                        .insert(rcpt);
                }
            } else if what.trim_end() == "removed" {
                parsed.removed.insert(qid.to_string());
            }
        }
        parsed
    }

    pub fn queue_id(&self, message_id: &str) -> Option<&str> {
        self.queue_ids.get(message_id).map(String::as_str)
    }

    /// Whether Postfix has finished with the message (delivered and removed from the queue).
    pub fn is_done(&self, message_id: &str) -> bool {
        self.queue_id(message_id)
            .is_some_and(|qid| self.removed.contains(qid))
    }

    /// The recipients the message was delivered to, lower-cased.
    pub fn delivered(&self, message_id: &str) -> HashSet<String> {
        self.queue_id(message_id)
            .and_then(|qid| self.delivered.get(qid))
            .cloned()
            .unwrap_or_default()
    }
}

/// The milter binary started by hand on a given address (to restart it where the MTA
/// expects it, after [`super::milter::Milter`]'s process was killed). Killed when dropped.
pub struct MilterAt {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl MilterAt {
    /// Starts the milter with `config` (TOML without `socket`) on `addr`; panics with its
    /// log if it does not listen within 10 s.
    pub fn start(addr: SocketAddr, config: &str) -> Self {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("milter.conf");
        fs::write(&config_path, format!("socket = \"inet:{addr}\"\n{config}")).expect("config");
        let log = fs::File::create(dir.path().join("milter.log")).expect("log file");
        let child = Command::new(super::milter::bin())
            .arg("-c")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn milter");
        let mut milter = Self { child, dir };
        let listening = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        if !listening || !matches!(milter.child.try_wait(), Ok(None)) {
            panic!("the milter did not start on {addr}:\n{}", milter.log());
        }
        milter
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("milter.log")).unwrap_or_default()
    }
}

impl Drop for MilterAt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
