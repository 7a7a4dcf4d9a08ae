//! Runs the real milter binary for a test: a config in a temp dir, a free loopback port
//! (or a unix socket in the temp dir), its stderr captured to a file, stopped when dropped.

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    fs,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_bogus-helo-milter");

/// The binary the tests start: [`BIN`], or the one named by `BENCH_MILTER_BIN` (to
/// benchmark another build of the milter with the same harness).
pub fn bin() -> PathBuf {
    std::env::var_os("BENCH_MILTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

pub struct Milter {
    child: Child,
    endpoint: Endpoint,
    /// The socket lines that each config written gets before the test's own.
    head: String,
    dir: TempDir,
    /// Holds the wrapper of [`Milter::start_policy_on_host`].
    wrapper_dir: Option<TempDir>,
}

/// Where the milter listens.
#[derive(Clone, Debug)]
enum Endpoint {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    /// As `milter.conf`'s `socket`, `smtpd_milters` and Sendmail's `S=` spell it.
    fn spec(&self) -> String {
        match self {
            Endpoint::Inet(addr) => format!("inet:{addr}"),
            Endpoint::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    fn accepts(&self) -> bool {
        match self {
            Endpoint::Inet(addr) => TcpStream::connect(addr).is_ok(),
            Endpoint::Unix(path) => UnixStream::connect(path).is_ok(),
        }
    }
}

/// A scrape of the metrics endpoint at `addr`, head and body (HTTP/1.0: the response
/// ends at the close).
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// A shell script in a temp dir of its own that runs `line` (which ends in `exec`, so
/// that the milter keeps the script's pid and gets the signals sent to it).
fn wrapper(line: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join("wrapper");
    fs::write(&path, format!("#!/bin/sh\n{line}\n")).expect("write wrapper");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, path)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl Milter {
    /// Starts the milter with `config` (TOML without `socket`), listening on a free port.
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_inet(&bin(), config, env)
    }

    fn start_inet(bin: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // A milter that runs as nobody (`start_as_nobody`) reads its config here.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        // A port picked here can be taken by another test before the milter binds it:
        // then try another.
        for _ in 0..5 {
            let endpoint = Endpoint::Inet(SocketAddr::from(([127, 0, 0, 1], free_port())));
            let head = format!("socket = \"{}\"\n", endpoint.spec());
            let milter = Self::spawn(bin, dir.path(), &endpoint, &head, config, env);
            match milter {
                Some(child) => {
                    return Self {
                        child,
                        endpoint,
                        head,
                        dir,
                        wrapper_dir: None,
                    }
                }
                None => continue,
            }
        }
        panic!(
            "milter did not start; log:\n{}",
            fs::read_to_string(dir.path().join("milter.log")).unwrap_or_default()
        );
    }

    /// Starts the milter with `config` (TOML without `socket`), listening on a unix socket
    /// `milter.sock` in its temp dir, which the MTAs' unprivileged users may connect to.
    pub fn start_unix(config: &str) -> Self {
        Self::start_unix_from(&bin(), config)
    }

    /// [`Milter::start`] or, with `unix`, [`Milter::start_unix`], of the binary `bin`.
    pub fn start_from(bin: &Path, config: &str, unix: bool) -> Self {
        if unix {
            Self::start_unix_from(bin, config)
        } else {
            Self::start_inet(bin, config, &[])
        }
    }

    fn start_unix_from(bin: &Path, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Postfix's smtpd runs as `postfix`: it must reach the socket (see below).
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.path().join("milter.sock");
        let endpoint = Endpoint::Unix(path.clone());
        let head = format!("socket = \"{}\"\n", endpoint.spec());
        let Some(child) = Self::spawn(bin, dir.path(), &endpoint, &head, config, &[]) else {
            panic!(
                "milter did not start on {}; log:\n{}",
                path.display(),
                fs::read_to_string(dir.path().join("milter.log")).unwrap_or_default()
            );
        };
        // The milter creates its socket under its umask (0755 as root): connecting needs
        // write permission.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod socket");
        Self {
            child,
            endpoint,
            head,
            dir,
            wrapper_dir: None,
        }
    }

    /// Starts the binary with its policy service on a free loopback port (`addr`), and
    /// the milter's socket off, or with `milter` also on a free port
    /// (`milter_addr`). `config` is TOML without `socket` and `policy_socket`.
    pub fn start_policy(config: &str, milter: bool) -> Self {
        Self::start_policy_from(&bin(), config, milter)
    }

    /// [`Milter::start_policy`] without the milter's socket, on a host named `host_name`:
    /// the binary runs in a UTS namespace of its own (`unshare --uts`, which needs root),
    /// so that a test does not depend on the name of the host it runs on. `None` when
    /// that namespace cannot be made.
    pub fn start_policy_on_host(config: &str, host_name: &str) -> Option<Self> {
        let probe = Command::new("unshare")
            .args(["--uts", "hostname", "probe.example"])
            .stderr(Stdio::null())
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            return None;
        }
        let (dir, wrapper) = wrapper(&format!(
            "exec unshare --uts sh -c 'hostname \"$0\" && exec \"$@\"' '{host_name}' '{}' \"$@\"",
            bin().display()
        ));
        let mut service = Self::start_policy_from(&wrapper, config, false);
        // The wrapper's dir must live as long as the milter.
        service.wrapper_dir = Some(dir);
        Some(service)
    }

    /// [`Milter::start`] as the user nobody (`setpriv`, which needs root), for what only
    /// an unprivileged milter meets, such as a config file it may not read.
    pub fn start_as_nobody(config: &str) -> Self {
        let (dir, wrapper) = wrapper(&format!(
            "exec setpriv --reuid=nobody --regid=nogroup --clear-groups '{}' \"$@\"",
            bin().display()
        ));
        let mut milter = Self::start_inet(&wrapper, config, &[]);
        milter.wrapper_dir = Some(dir);
        milter
    }

    fn start_policy_from(bin: &Path, config: &str, milter: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let endpoint = Endpoint::Inet(SocketAddr::from(([127, 0, 0, 1], free_port())));
            let socket = match milter {
                true => format!("inet:127.0.0.1:{}", free_port()),
                false => String::new(),
            };
            let head = format!(
                "socket = \"{socket}\"\npolicy_socket = \"{}\"\n",
                endpoint.spec()
            );
            if let Some(child) = Self::spawn(bin, dir.path(), &endpoint, &head, config, &[]) {
                let milter = Self {
                    child,
                    endpoint,
                    head,
                    dir,
                    wrapper_dir: None,
                };
                // The milter's socket is bound before the policy one: when the policy
                // socket accepts, both are up.
                return milter;
            }
        }
        panic!(
            "policy service did not start; log:\n{}",
            fs::read_to_string(dir.path().join("milter.log")).unwrap_or_default()
        );
    }

    /// For [`Milter::start_policy`] with the milter on: the milter's address.
    pub fn milter_addr(&self) -> Option<SocketAddr> {
        let line = self.head.lines().next()?;
        let spec = line.strip_prefix("socket = \"inet:")?.strip_suffix('"')?;
        spec.parse().ok()
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        endpoint: &Endpoint,
        head: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Option<Child> {
        let config_path = dir.join("milter.conf");
        fs::write(&config_path, format!("{head}{config}")).expect("write config");
        let log = fs::File::create(dir.join("milter.log")).expect("log file");
        let mut command = Command::new(bin);
        command
            .arg("-c")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child =
            super::exec_retrying(&mut command, std::process::Command::spawn).expect("spawn milter");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if endpoint.accepts() {
                return Some(child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The TCP address (panics for a milter started with [`Milter::start_unix`]).
    pub fn addr(&self) -> SocketAddr {
        match &self.endpoint {
            Endpoint::Inet(addr) => *addr,
            Endpoint::Unix(path) => panic!("the milter listens on {}", path.display()),
        }
    }

    /// The socket as `smtpd_milters` spells it: `inet:127.0.0.1:PORT` or `unix:/PATH`.
    pub fn socket_spec(&self) -> String {
        self.endpoint.spec()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("milter.conf")
    }

    /// Replaces the config file (the socket line is kept); takes effect on `reload`.
    pub fn write_config(&self, config: &str) {
        fs::write(self.config_path(), format!("{}{config}", self.head)).expect("write config");
    }

    /// Sends SIGHUP and waits for the milter to log the outcome; returns that log line.
    pub fn reload(&self) -> String {
        const RESULT: &str = "event=reload result=";
        let before = self.log().matches(RESULT).count();
        self.signal(Signal::SIGHUP);
        assert!(
            self.wait_for(Duration::from_secs(10), |log| log.matches(RESULT).count()
                > before),
            "no reload logged:\n{}",
            self.log()
        );
        let log = self.log();
        let line = log.lines().filter(|l| l.contains(RESULT)).nth(before);
        line.unwrap_or_default().to_string()
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal milter");
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("milter.log")).unwrap_or_default()
    }

    /// Waits until `done` holds for the log, or the timeout passes.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> bool {
        super::wait_until(timeout, || done(&self.log()))
    }

    /// Waits (10 s at most) for each of `lines` to be a whole line of the log; panics
    /// naming the first that is not, with the log.
    pub fn assert_logged_lines(&self, lines: &[&str]) {
        for line in lines {
            assert!(
                self.wait_for(Duration::from_secs(10), |log| log
                    .lines()
                    .any(|l| l == *line)),
                "no line\n{line}\nin\n{}",
                self.log()
            );
        }
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for(timeout, |log| log.contains(needle))
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
