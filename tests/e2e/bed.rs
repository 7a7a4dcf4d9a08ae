//! A test bed: the milter with a test config, one private MTA in front of it, and an SMTP
//! client; and a list of expectations checked together so that one run shows every
//! mismatch with its transcript and both logs.

use crate::common::{
    milter::Milter,
    mta::{Kind, Mta},
    smtp::{Outcome, Session},
};
use std::{fmt::Write as _, future::Future, net::SocketAddr, time::Duration};

/// Every test config starts with this: the tests connect from loopback, which the
/// default `trusted_networks` would exempt; and no interface address is an own address,
/// so that an own-ip case passes only where the milter read the MTA's `{daemon_addr}` /
/// `{if_addr}` (the policy service its `server_address`): the interfaces hold 127.0.0.1
/// and ::1, to which the tests connect.
pub const CONFIG_HEAD: &str = "trusted_networks = []\nown_interfaces = false\n";

pub struct Bed {
    // Dropped in this order: the MTA first, then the milter.
    pub mta: Mta,
    milter: Option<Milter>,
    problems: Vec<String>,
}

impl Bed {
    /// Starts the milter with `config` (after [`CONFIG_HEAD`]) and a `kind` MTA in front.
    pub fn start(kind: Kind, config: &str) -> Self {
        Self::start_exact(kind, &format!("{CONFIG_HEAD}{config}"))
    }

    /// Starts the milter with exactly `config`, which must set `trusted_networks` and
    /// `own_interfaces` itself.
    pub fn start_exact(kind: Kind, config: &str) -> Self {
        Self::start_with_main_cf(kind, config, "")
    }

    /// [`Bed::start_exact`] with `extra_main_cf` appended to Postfix's main.cf (Sendmail
    /// ignores it).
    pub fn start_with_main_cf(kind: Kind, config: &str, extra_main_cf: &str) -> Self {
        let milter = Milter::start(config);
        let mta = match kind {
            Kind::Postfix if !extra_main_cf.is_empty() => {
                Mta::start_postfix_with(Some(&milter.socket_spec()), extra_main_cf)
            }
            _ => Mta::start(kind, milter.addr()),
        };
        Self {
            mta,
            milter: Some(milter),
            problems: Vec::new(),
        }
    }

    /// Starts the binary with only its policy service on (the milter's socket off) and
    /// `config` (after [`CONFIG_HEAD`]), and a Postfix without a milter in front that asks
    /// it at RCPT (`check_policy_service`).
    pub fn start_policy(config: &str) -> Self {
        Self::start_policy_with_main_cf(config, "")
    }

    /// [`Bed::start_policy`] with `extra_main_cf` appended to Postfix's main.cf.
    pub fn start_policy_with_main_cf(config: &str, extra_main_cf: &str) -> Self {
        let service = Milter::start_policy(&format!("{CONFIG_HEAD}{config}"), false);
        let mta = Mta::start_postfix_policy(service.addr(), extra_main_cf);
        Self {
            mta,
            milter: Some(service),
            problems: Vec::new(),
        }
    }

    /// Expects exactly the reply line `expected` (code and last line, as Postfix words
    /// it) for `rcpt`.
    pub fn expect_rcpt_line(&mut self, outcome: &Outcome, rcpt: &str, expected: &str) {
        let seen = outcome.rcpt(rcpt).map(|r| r.line());
        if seen.as_deref() != Some(expected) {
            self.problem(format!(
                "RCPT TO:<{rcpt}> after {:?}: expected {expected:?}, got {seen:?}\n{}",
                helo_command(outcome),
                outcome.transcript()
            ));
        }
    }

    /// The milter (panics after `stop_milter`).
    pub fn milter(&self) -> &Milter {
        self.milter.as_ref().expect("the milter was stopped")
    }

    /// Stops the milter with SIGTERM; returns whether it exited cleanly.
    pub fn stop_milter(&mut self) -> bool {
        self.milter.take().is_some_and(Milter::stop)
    }

    pub fn kind(&self) -> Kind {
        self.mta.kind()
    }

    /// Writes a new config (after [`CONFIG_HEAD`]) for the next `reload`.
    pub fn write_config(&self, config: &str) {
        self.milter()
            .write_config(&format!("{CONFIG_HEAD}{config}"));
    }

    /// Runs `session` against the MTA on 127.0.0.1.
    pub fn send(&self, session: &Session) -> Outcome {
        self.send_to(self.mta.addr(), session)
    }

    /// Runs `session` against the MTA on ::1.
    pub fn send_v6(&self, session: &Session) -> Outcome {
        self.send_to(self.mta.addr_v6(), session)
    }

    fn send_to(&self, addr: SocketAddr, session: &Session) -> Outcome {
        match block_on(session.run(addr)) {
            Ok(outcome) => outcome,
            Err(e) => panic!(
                "{}: SMTP session {session:?} to {addr} failed: {e}\n{}",
                self.kind(),
                self.logs()
            ),
        }
    }

    /// Records a mismatch; `finish` reports them all.
    pub fn problem(&mut self, what: impl Into<String>) {
        self.problems.push(what.into());
    }

    /// Expects the milter's reply `expected` (as the milter words it, e.g.
    /// `550 5.7.1 bogus helo`) for `rcpt`; for an accepted recipient pass `"250"`.
    pub fn expect_rcpt(&mut self, outcome: &Outcome, rcpt: &str, expected: &str) {
        let ok = match outcome.rcpt(rcpt) {
            Some(reply) if expected == "250" => reply.code == 250,
            Some(reply) => reply.milter_form() == expected,
            None => false,
        };
        if !ok {
            let seen = outcome
                .rcpt(rcpt)
                .map(|r| r.full())
                .unwrap_or_else(|| "(RCPT not sent)".into());
            self.problem(format!(
                "RCPT TO:<{rcpt}> after {:?}: expected {expected:?}, got {seen:?}\n{}",
                helo_command(outcome),
                outcome.transcript()
            ));
        }
    }

    /// Expects the message of `outcome` to be delivered to exactly `rcpts`.
    pub fn expect_delivered_to(&mut self, outcome: &Outcome, rcpts: &[&str]) {
        match &outcome.data {
            Some(reply) if reply.code == 250 => {}
            other => {
                self.problem(format!(
                    "message not accepted at end of DATA: {other:?}\n{}",
                    outcome.transcript()
                ));
                return;
            }
        }
        for rcpt in rcpts {
            if !self
                .mta
                .wait_delivered(&outcome.message_id, rcpt, Duration::from_secs(30))
            {
                self.problem(format!(
                    "no delivery of <{}> to <{rcpt}> in the {} log",
                    outcome.message_id,
                    self.kind()
                ));
            }
        }
        let mut delivered = self
            .mta
            .delivered_recipients(&outcome.message_id, Duration::from_secs(30));
        delivered.sort();
        delivered.dedup();
        let mut expected: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
        expected.sort();
        if delivered != expected {
            self.problem(format!(
                "message <{}> delivered to {delivered:?}, expected exactly {expected:?}",
                outcome.message_id
            ));
        }
    }

    /// Panics with every recorded problem, the MTA's log and the milter's log.
    pub fn finish(self) {
        if self.problems.is_empty() {
            return;
        }
        let mut report = format!("{}: {} problem(s):\n", self.kind(), self.problems.len());
        for (n, p) in self.problems.iter().enumerate() {
            let _ = writeln!(report, "\n#{}: {p}", n + 1);
        }
        report.push_str(&self.logs());
        panic!("{report}");
    }

    pub fn logs(&self) -> String {
        format!(
            "\n{}\n--- milter log ---\n{}",
            self.mta.describe(),
            self.milter.as_ref().map(Milter::log).unwrap_or_default()
        )
    }
}

pub fn helo_command(outcome: &Outcome) -> String {
    outcome
        .transcript
        .iter()
        .find(|l| l.starts_with("C: EHLO") || l.starts_with("C: HELO"))
        .map(|l| l.trim_start_matches("C: ").to_string())
        .unwrap_or_default()
}

/// Runs a future to completion on a runtime of its own (the tests themselves are sync:
/// the MTA and milter helpers block).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// A test milter of the test's own (indymilter callbacks) in this process, on a free
/// loopback port, with the runtime the test drives its SMTP client on. Stopped on drop.
pub struct ProbeMilter {
    pub rt: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ProbeMilter {
    pub fn start<T: Send + 'static>(callbacks: indymilter::Callbacks<T>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind probe milter");
        let addr = listener.local_addr().expect("probe milter address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(indymilter::run(
            listener,
            callbacks,
            indymilter::Config::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            rt,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl Drop for ProbeMilter {
    fn drop(&mut self) {
        if let (Some(stop), Some(task)) = (self.stop.take(), self.task.take()) {
            let _ = stop.send(());
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
        }
    }
}
