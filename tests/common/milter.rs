//! Runs the real milter binary for a test: a config in a temp dir, a free loopback port,
//! its stderr captured to a file, stopped when dropped.

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    fs,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_bogus-helo-milter");

pub struct Milter {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
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
        let dir = tempfile::tempdir().expect("temp dir");
        // A port picked here can be taken by another test before the milter binds it:
        // then try another.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let milter = Self::spawn(dir.path(), addr, config, env);
            match milter {
                Some(child) => return Self { child, addr, dir },
                None => continue,
            }
        }
        panic!(
            "milter did not start; log:\n{}",
            fs::read_to_string(dir.path().join("milter.log")).unwrap_or_default()
        );
    }

    fn spawn(dir: &Path, addr: SocketAddr, config: &str, env: &[(&str, &str)]) -> Option<Child> {
        let config_path = dir.join("milter.conf");
        fs::write(&config_path, format!("socket = \"inet:{addr}\"\n{config}"))
            .expect("write config");
        let log = fs::File::create(dir.join("milter.log")).expect("log file");
        let mut command = Command::new(BIN);
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
        let mut child = command.spawn().expect("spawn milter");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
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

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket as `smtpd_milters` and Sendmail's `S=` spell it.
    pub fn socket_spec(&self) -> String {
        format!("inet:{}", self.addr)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("milter.conf")
    }

    /// Replaces the config file (the socket line is kept); takes effect on `reload`.
    pub fn write_config(&self, config: &str) {
        fs::write(
            self.config_path(),
            format!("socket = \"inet:{}\"\n{config}", self.addr),
        )
        .expect("write config");
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
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.log()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            sleep(Duration::from_millis(20));
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
