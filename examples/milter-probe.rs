//! Drives one milter session against a running bogus-helo-milter, as an MTA would, and
//! checks the verdict: a client at 192.0.2.1 greeting with `[192.0.2.9]` must be refused
//! at RCPT with `550 5.7.1 bogus helo`, and a client greeting with a host name must not.
//!
//! ```text
//! cargo run --example milter-probe -- inet:127.0.0.1:8895
//! cargo run --example milter-probe -- unix:/run/bogus-helo-milter/milter.sock
//! ```
//!
//! The address is spelled as in `milter.conf` (`inet:HOST:PORT`, `inet:PORT@HOST`,
//! `unix:/PATH`) or as a bare `HOST:PORT`. `--expect TEXT` changes the expected reply
//! (for a config with `reply_url` or `action = "tempfail"`). Exit status 0 when the
//! milter answered as expected, 1 otherwise.

use indymilter_test::*;
use std::{error::Error, process::ExitCode, time::Duration};

const USAGE: &str = "usage: milter-probe [--expect TEXT] SOCKET";

enum Target {
    Tcp(String),
    Unix(String),
}

impl Target {
    fn parse(s: &str) -> Option<Self> {
        if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            return Some(Self::Unix(path.to_string()));
        }
        if s.starts_with('/') {
            return Some(Self::Unix(s.to_string()));
        }
        let rest = s
            .strip_prefix("inet:")
            .or_else(|| s.strip_prefix("inet6:"))
            .unwrap_or(s);
        match rest.split_once('@') {
            Some((port, host)) if host.contains(':') => Some(Self::Tcp(format!("[{host}]:{port}"))),
            Some((port, host)) => Some(Self::Tcp(format!("{host}:{port}"))),
            None if rest.contains(':') => Some(Self::Tcp(rest.to_string())),
            None => None,
        }
    }

    async fn open(&self) -> TestResult<TestConnection> {
        let builder = TestConnection::configure()
            .read_timeout(Duration::from_secs(10))
            .write_timeout(Duration::from_secs(10));
        match self {
            Self::Tcp(addr) => builder.open_tcp(addr.as_str()).await,
            Self::Unix(path) => builder.open_unix(path).await,
        }
    }
}

/// One SMTP transaction from 192.0.2.1 with the given HELO; returns the RCPT status.
async fn session(target: &Target, helo: &str) -> Result<Status, Box<dyn Error>> {
    let mut conn = target.open().await?;
    expect_continue(
        "connect",
        conn.connect("client.example", [192, 0, 2, 1]).await?,
    )?;
    expect_continue("helo", conn.helo(helo).await?)?;
    expect_continue("mail", conn.mail(["<a@example.org>"]).await?)?;
    let status = conn.rcpt(["<user@example.com>"]).await?;
    conn.close().await?;
    Ok(status)
}

fn expect_continue(stage: &str, status: Status) -> Result<(), Box<dyn Error>> {
    match status {
        Status::Continue | Status::Noreply => Ok(()),
        other => Err(format!("{stage}: expected continue, got {other:?}").into()),
    }
}

fn reply_text(status: &Status) -> Option<String> {
    match status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            Some(m.to_string_lossy().into_owned())
        }
        _ => None,
    }
}

async fn probe(target: &Target, expect: &str) -> Result<(), Box<dyn Error>> {
    let bogus = session(target, "[192.0.2.9]").await?;
    match reply_text(&bogus) {
        Some(text) if text == expect => println!("HELO [192.0.2.9]: {text} (as expected)"),
        _ => return Err(format!("HELO [192.0.2.9]: expected {expect:?}, got {bogus:?}").into()),
    }

    let good = session(target, "mail.example.net").await?;
    match good {
        Status::Continue | Status::Accept => println!("HELO mail.example.net: accepted"),
        other => {
            return Err(format!("HELO mail.example.net: expected accept, got {other:?}").into())
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut expect = "550 5.7.1 bogus helo".to_string();
    let mut socket = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--expect" => match args.next() {
                Some(text) => expect = text,
                None => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if socket.is_none() => socket = Some(arg),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(target) = socket.as_deref().and_then(Target::parse) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };

    match probe(&target, &expect).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("milter-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
