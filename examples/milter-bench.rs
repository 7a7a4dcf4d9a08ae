//! Milter-protocol benchmark: bogus-helo-milter against null milters, under the load an MTA
//! puts on them, in one run.
//!
//! ```text
//! cargo build --release --examples --bins
//! target/release/examples/milter-bench \
//!     --milter target/release/bogus-helo-milter --config bench.conf \
//!     --null target/release/examples/null-milter [--libmilter /tmp/null-libmilter] [--quick]
//! ```
//!
//! (`bench/protocol-bench` does all of this, with a realistic configuration.)
//!
//! It starts each milter itself on a free loopback port, then, for each concurrency
//! (`--concurrency 1,16,128,512`), runs rounds of `--duration` on each target in turn
//! (A, B, C, A, B, C, ...: `--rounds` of each), every round with that many concurrent
//! sessions, each session a new milter connection as Postfix's smtpd opens one per SMTP
//! client: negotiate, connect, helo, mail, `--rcpts` recipients, then abort (or, with
//! `--data`, data, headers, end of headers, body, end of message), quit.
//!
//! It speaks the milter protocol as Postfix does: it offers protocol version 6, all actions
//! and all protocol options, honours the milter's answer (a stage the milter opted out of
//! with `SMFIP_NO*` is not sent, the reply to a stage with `SMFIP_NR_*` is not awaited),
//! sends Postfix's default macros for each stage or the ones the milter asked for (a macro
//! packet for every stage, even a skipped one, as Postfix does), buffers its writes until it
//! needs an answer (Postfix's VSTREAM), and does not set `TCP_NODELAY` (Postfix does not;
//! `--nodelay` sets it). With `--data`, the writes are also flushed after the DATA command,
//! where Postfix's smtpd hands the milter connection to its cleanup server.
//!
//! The HELO mix: half the sessions greet with `mail.example.net`, a quarter with
//! `[192.0.2.9]` and a quarter with the recipients' domain (from `--domains`). Against the
//! real milter every recipient of a bogus-HELO session must get a 550 reply and every other
//! recipient must be let through; against the null milters everything must be let through.
//! Any mismatch or failed session makes the exit status 1.
//!
//! Printed per target and concurrency: sessions/s (median of the rounds, with their
//! range), p50/p99 session latency (all rounds pooled; in a closed loop of N sessions it is
//! mostly queueing at high N), p99 of the TCP connect alone (a dropped SYN shows as 1 s or
//! more, counted in `conn≥1s`: the listen backlog; the p99 includes this load generator's
//! own scheduling delay at high concurrency), server CPU per session (utime +
//! stime from /proc/PID/stat over the rounds ÷ sessions), this client's CPU per session,
//! and the ratios of the real milter to each baseline. Before the rounds, on freshly
//! started servers: VmRSS with `--idle-connections` (1,000) negotiated, connected, idle
//! milter connections, before and after, in kB per connection; then VmRSS with `--storm`
//! (2,000) connections opened at once, and every 250 ms for `--settle` (5 s) after they
//! all closed, against the fresh process's (does the memory come back?). With `--milter`,
//! also the real milter's policy service alone (`socket = ""`): VmRSS with
//! `--policy-idle` (1,000) connections that each made one request and stay open.
//! `--other-milter PATH` adds another build of the real milter as target `other`, to
//! compare two builds (an allocator, say) in one run.
//!
//! With `--metrics`, the real milter runs twice, with `metrics_listen` on (target
//! `milter+m`) and off (`milter`), in alternating rounds like the others; during each
//! round of `milter+m` a scraper GETs `/metrics` every second, so that the endpoint's cost
//! counts, and the report adds the ratio on/off of sessions/s and of server CPU.
//!
//! The DNS rules (issue 21; `bench/dns-bench` runs these): each `--dns-target NAME` is
//! one more run of the real milter with `--config` plus the `--dns-set` lines at its top,
//! in alternating rounds; `{nsd}` and `{silent}` in those lines become the addresses of
//! NSD serving the test zone and of a DNS server that never answers, both from
//! tests/common/dns_server.rs, started here on loopback ports and stopped at the end.
//! `--good-helo [TARGET=]NAME` sets the good sessions' HELO (`%n` in it: a number unique
//! in the run, a name never asked before), `--ip-helos` makes every session greet with an
//! IP literal (never looked up), and `--background N` runs N more sessions greeting with
//! `--background-helo` beside each round of a DNS target, not counted in its sessions/s.
//! The report adds each DNS target's ratio to `milter`, and the RCPT answer time (sending
//! a good session's first RCPT to its reply: the one that waits for the lookups) of
//! every target and of the background sessions.
//!
//! Bounded: every session has a timeout, every round a duration; the servers it started
//! are stopped (SIGTERM, then SIGKILL) when it ends, fails, panics or gets SIGINT/SIGTERM.
//! It only talks to 127.0.0.1.

#[path = "milter_bench/memory.rs"]
mod memory;

use clap::Parser;
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    borrow::Cow,
    collections::HashMap,
    fmt::Write as _,
    fs::{self, File},
    io,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    task::JoinSet,
    time::{sleep, timeout},
};

#[derive(Parser, Debug)]
#[command(about = "Milter-protocol benchmark: bogus-helo-milter against null milters")]
struct Args {
    /// The real milter's binary (target/release/bogus-helo-milter).
    #[arg(long, value_name = "PATH", requires = "config")]
    milter: Option<PathBuf>,
    /// Its configuration; the `socket` line is replaced by one on a free loopback port.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the real milter's stderr (its log) goes; default: a temporary file.
    #[arg(long, value_name = "FILE")]
    milter_log: Option<PathBuf>,
    /// Another build of the real milter, run as target `other` with the same
    /// configuration and expectations (to compare two builds in one run).
    #[arg(long, value_name = "PATH", requires = "milter")]
    other_milter: Option<PathBuf>,
    /// The null indymilter milter (target/release/examples/null-milter).
    #[arg(long, value_name = "PATH")]
    null: Option<PathBuf>,
    /// Also run the null indymilter milter on a current-thread runtime, as target `null-ct`.
    #[arg(long, requires = "null")]
    null_current_thread: bool,
    /// The null milter in C on libmilter (built by bench/protocol-bench).
    #[arg(long, value_name = "PATH")]
    libmilter: Option<PathBuf>,
    /// Concurrent sessions, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,128,512")]
    concurrency: Vec<usize>,
    /// Length of one round.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    duration: Duration,
    /// Rounds per target and concurrency.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Smoke mode for CI: 0.3 s rounds, 2 rounds each.
    #[arg(long)]
    quick: bool,
    /// Recipients per session.
    #[arg(long, default_value_t = 2)]
    rcpts: usize,
    /// Send the message (data, headers, body, end of message) instead of aborting after RCPT.
    #[arg(long)]
    data: bool,
    /// Recipient domains, used in turn; the bogus-HELO sessions greet with them.
    #[arg(long, value_delimiter = ',', default_value = "example.com,example.org")]
    domains: Vec<String>,
    /// Idle negotiated connections for the memory measurement (0: skip it).
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Connections opened at once and all closed after the idle measurement, with VmRSS
    /// sampled while the milter settles (0: skip it).
    #[arg(long, default_value_t = 2000)]
    storm: usize,
    /// How long VmRSS is sampled after the storm.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    settle: Duration,
    /// Idle connections to the real milter's policy service, after one request each, for
    /// its memory (0: skip it; needs --milter).
    #[arg(long, default_value_t = 1000)]
    policy_idle: usize,
    /// Threads of this load generator (1: a current-thread runtime, the cheapest).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Set TCP_NODELAY on the client side (Postfix does not).
    #[arg(long)]
    nodelay: bool,
    /// Also run the real milter with `metrics_listen` on (target `milter+m`), scraped
    /// every second during its rounds, and print the ratio of metrics on to off.
    #[arg(long, requires = "milter")]
    metrics: bool,
    /// Give up on a session after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Another run of the real milter, target NAME, with `--config` plus the `--dns-set`
    /// lines, in alternating rounds with the others; the report adds its ratio to `milter`.
    #[arg(long, value_name = "NAME", requires = "milter")]
    dns_target: Vec<String>,
    /// A line put at the top of the `--dns-target` configurations (a top-level key, or a
    /// dotted one: `rules.unknown = "reject"`); `{nsd}` becomes the address of NSD serving
    /// the zone helo.test. of tests/common/dns_server.rs, `{silent}` that of a DNS server
    /// that never answers, each started by the benchmark.
    #[arg(long, value_name = "LINE")]
    dns_set: Vec<String>,
    /// The HELO of the good sessions, NAME for every target or TARGET=NAME for one; `%n`
    /// in it becomes a number unique in the run (a name never asked before).
    #[arg(long, value_name = "[TARGET=]NAME")]
    good_helo: Vec<String>,
    /// Every session greets with an IP literal, never asked about in DNS (refused: 550).
    #[arg(long)]
    ip_helos: bool,
    /// Sessions run in a closed loop beside the others during each round of a
    /// `--dns-target`, every one greeting with `--background-helo`; not counted in the
    /// target's sessions/s, reported apart.
    #[arg(long, default_value_t = 0, requires = "background_helo")]
    background: usize,
    /// The background sessions' HELO (`%n`: as in `--good-helo`); a good name.
    #[arg(long, value_name = "NAME")]
    background_helo: Option<String>,
    /// The client address of the good and background sessions (one a `--good-helo` name
    /// resolves to, so that the rule `mismatch` passes too).
    #[arg(long, value_name = "IPV4")]
    good_client: Option<Ipv4Addr>,
}

// Milter protocol constants (libmilter's mfdef.h).
const SMFI_VERSION: u32 = 6;
const ALL_ACTIONS: u32 = 0x1ff;
const ALL_PROTOCOL_OPTS: u32 = 0x1f_ffff;
const NO_CONNECT: u32 = 0x1;
const NO_HELO: u32 = 0x2;
const NO_MAIL: u32 = 0x4;
const NO_RCPT: u32 = 0x8;
const NO_BODY: u32 = 0x10;
const NO_HDRS: u32 = 0x20;
const NO_EOH: u32 = 0x40;
const NR_HDR: u32 = 0x80;
const NO_DATA: u32 = 0x200;
const NR_CONN: u32 = 0x1000;
const NR_HELO: u32 = 0x2000;
const NR_MAIL: u32 = 0x4000;
const NR_RCPT: u32 = 0x8000;
const NR_DATA: u32 = 0x10000;
const NR_EOH: u32 = 0x40000;
const NR_BODY: u32 = 0x80000;

/// Macro stages, as indexed in the option-negotiation reply (SMFIM_*).
const STAGE_CONNECT: usize = 0;
const STAGE_HELO: usize = 1;
const STAGE_MAIL: usize = 2;
const STAGE_RCPT: usize = 3;
const STAGE_DATA: usize = 4;
const STAGE_EOM: usize = 5;
const STAGE_EOH: usize = 6;
const STAGES: usize = 7;

/// Postfix 3.7's default `milter_*_macros`, by stage; a milter's own request replaces the
/// list of that stage. Postfix sends the ones that have a value.
const POSTFIX_MACROS: [&str; STAGES] = [
    "j {daemon_name} {daemon_addr} v _",
    "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
    "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
    "i",
    "i",
    "i",
];

const GOOD_HELO: &str = "mail.example.net";
const IP_HELO: &str = "[192.0.2.9]";
const SERVER_NAME: &str = "mx.example.com";
const DAEMON_ADDR: &str = "192.0.2.25";

const HEADERS: [(&str, &str); 8] = [
    (
        "Received",
        "from mail.example.net (mail.example.net [198.51.100.7])\n\tby mx.example.com (Postfix) with ESMTP id 4XyzAbc",
    ),
    ("From", "Sender <sender@example.org>"),
    ("To", "User <user@example.com>"),
    ("Subject", "Quarterly figures"),
    ("Date", "Mon, 3 Mar 2025 10:00:00 +0000"),
    ("Message-ID", "<20250303100000.1234@example.org>"),
    ("MIME-Version", "1.0"),
    ("Content-Type", "text/plain; charset=utf-8"),
];

/// Replies that end a stage (the others are progress or, at end of message, modifications).
fn is_final(code: u8) -> bool {
    matches!(code, b'c' | b'a' | b'r' | b't' | b'y' | b'd' | b's')
}

// ---------------------------------------------------------------------------------------
// One milter connection, MTA side.

struct Mta {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
    opts: u32,
    /// When the TCP connection was established.
    connect_time: Instant,
    /// Macro names to send per stage (Postfix's defaults or the milter's request).
    macros: [Vec<String>; STAGES],
}

type Reply = (u8, Vec<u8>);

impl Mta {
    async fn open(addr: SocketAddr, nodelay: bool) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let connect_time = Instant::now();
        stream.set_nodelay(nodelay)?;
        let mut mta = Self {
            connect_time,
            stream: BufReader::with_capacity(4096, stream),
            out: Vec::with_capacity(4096),
            opts: 0,
            macros: POSTFIX_MACROS.map(|list| list.split(' ').map(String::from).collect()),
        };
        let mut payload = SMFI_VERSION.to_be_bytes().to_vec();
        payload.extend_from_slice(&ALL_ACTIONS.to_be_bytes());
        payload.extend_from_slice(&ALL_PROTOCOL_OPTS.to_be_bytes());
        mta.put(b'O', &[&payload]);
        let (code, reply) = mta.reply().await?;
        if code != b'O' || reply.len() < 12 {
            return Err(protocol_error(format!(
                "option negotiation answered with {:?}",
                code as char
            )));
        }
        mta.opts = u32::from_be_bytes([reply[8], reply[9], reply[10], reply[11]]);
        // Then: (u32 stage, "name name ...\0")*.
        let mut rest = &reply[12..];
        while rest.len() > 4 {
            let stage = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let end = rest[4..]
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(rest.len() - 4);
            let names = String::from_utf8_lossy(&rest[4..4 + end]);
            if stage < STAGES {
                mta.macros[stage] = names.split_whitespace().map(String::from).collect();
            }
            rest = rest.get(4 + end + 1..).unwrap_or(&[]);
        }
        Ok(mta)
    }

    /// Appends one packet to the output buffer.
    fn put(&mut self, cmd: u8, parts: &[&[u8]]) {
        let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        self.out.extend_from_slice(&(len as u32).to_be_bytes());
        self.out.push(cmd);
        for part in parts {
            self.out.extend_from_slice(part);
        }
    }

    /// Appends the macro packet of a stage, as Postfix does before every event.
    fn put_macros(&mut self, cmd: u8, stage: usize, values: &Values) {
        let mut payload = vec![cmd];
        for name in &self.macros[stage] {
            if let Some(value) = values.get(name) {
                payload.extend_from_slice(name.as_bytes());
                payload.push(0);
                payload.extend_from_slice(value.as_bytes());
                payload.push(0);
            }
        }
        self.put(b'D', &[&payload]);
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.get_mut().write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flushes what is buffered and reads replies up to the final one of the stage.
    async fn reply(&mut self) -> io::Result<Reply> {
        self.flush().await?;
        loop {
            let len = self.stream.read_u32().await? as usize;
            if len == 0 || len > 1 << 20 {
                return Err(protocol_error(format!("reply packet of length {len}")));
            }
            let mut packet = vec![0; len];
            self.stream.read_exact(&mut packet).await?;
            let code = packet[0];
            packet.remove(0);
            if code == b'O' || is_final(code) {
                return Ok((code, packet));
            }
        }
    }

    /// Sends one event (preceded by its macros) and returns the milter's reply, or `None`
    /// when the milter skips the stage (`no_stage`) or does not answer it (`no_reply`).
    async fn event(
        &mut self,
        cmd: u8,
        stage: Option<usize>,
        values: &Values,
        parts: &[&[u8]],
        no_stage: u32,
        no_reply: u32,
    ) -> io::Result<Option<Reply>> {
        if let Some(stage) = stage {
            self.put_macros(cmd, stage, values);
        }
        if self.opts & no_stage != 0 {
            return Ok(None);
        }
        self.put(cmd, parts);
        if self.opts & no_reply != 0 {
            return Ok(None);
        }
        self.reply().await.map(Some)
    }

    async fn quit(mut self) -> io::Result<()> {
        self.put(b'Q', &[]);
        self.flush().await
    }
}

fn protocol_error(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Macro values defined at this point of the session.
type Values = HashMap<String, String>;

// ---------------------------------------------------------------------------------------
// Sessions.

/// What a session is checked against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The real milter: 550 for every recipient of a bogus-HELO session, continue otherwise.
    Verdicts,
    /// A null milter: continue everywhere.
    Continue,
}

struct SessionPlan<'a> {
    helo: Cow<'a, str>,
    bogus: bool,
    client: Ipv4Addr,
    rcpts: Vec<String>,
    sender: String,
    queue_id: String,
}

impl<'a> SessionPlan<'a> {
    fn new(index: u64, rcpts: usize, domains: &'a [String]) -> Self {
        let domain = &domains[(index / 4) as usize % domains.len()];
        let (helo, bogus) = match index % 4 {
            0 | 1 => (GOOD_HELO, false),
            2 => (IP_HELO, true),
            _ => (domain.as_str(), true),
        };
        Self {
            helo: helo.into(),
            bogus,
            client: Ipv4Addr::new(198, 51, 100, (index % 250) as u8 + 1),
            rcpts: (0..rcpts)
                .map(|r| format!("<user{}@{domain}>", (index + r as u64) % 1000))
                .collect(),
            sender: format!("<sender{}@example.org>", index % 1000),
            queue_id: format!("4X{index:010X}"),
        }
    }
}

#[derive(Default)]
struct Tally {
    sessions: u64,
    errors: u64,
    mismatches: u64,
    rejected: u64,
    /// Scrapes of /metrics during the rounds (`--metrics`).
    scrapes: u64,
    latencies_us: Vec<u32>,
    connect_us: Vec<u32>,
    examples: Vec<String>,
    /// Good sessions: from sending the first RCPT to its reply (`report_dns`).
    rcpt_us: Vec<u32>,
}

impl Tally {
    fn note(&mut self, example: String) {
        if self.examples.len() < 5 {
            self.examples.push(example);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.sessions += other.sessions;
        self.errors += other.errors;
        self.mismatches += other.mismatches;
        self.rejected += other.rejected;
        self.scrapes += other.scrapes;
        self.latencies_us.extend(other.latencies_us);
        self.connect_us.extend(other.connect_us);
        self.rcpt_us.extend(other.rcpt_us);
        for example in other.examples {
            self.note(example);
        }
    }
}

fn describe(reply: &Option<Reply>) -> String {
    match reply {
        None => "no reply (not negotiated)".into(),
        Some((code, text)) => {
            let text = String::from_utf8_lossy(text);
            format!("{:?} {:?}", *code as char, text.trim_end_matches('\0'))
        }
    }
}

/// One SMTP session through a fresh milter connection. Returns the recipients refused.
async fn session(
    addr: SocketAddr,
    plan: &SessionPlan<'_>,
    expect: Expect,
    data: bool,
    nodelay: bool,
    tally: &mut Tally,
) -> io::Result<()> {
    let connect_start = Instant::now();
    let mut mta = Mta::open(addr, nodelay).await?;
    let connected = mta.connect_time.duration_since(connect_start);
    tally.connect_us.push(micros(connected));
    let client = plan.client.to_string();
    let mut values: Values = [
        ("j", SERVER_NAME.to_string()),
        ("{daemon_name}", "smtpd".into()),
        ("{daemon_addr}", DAEMON_ADDR.into()),
        ("{daemon_port}", "25".into()),
        ("v", "Postfix 3.7.11".into()),
        ("_", format!("unknown [{client}]")),
        ("{client_addr}", client.clone()),
        ("{client_name}", "unknown".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let early = |tally: &mut Tally, stage: &str, reply: &Option<Reply>| -> bool {
        match reply {
            None => false,
            Some((b'c', _)) => false,
            other => {
                tally.mismatches += 1;
                tally.note(format!(
                    "{stage} (helo {:?}): expected continue, got {}",
                    plan.helo,
                    describe(other)
                ));
                true
            }
        }
    };

    // Client host name (unknown: no PTR), family, port, address.
    let mut connect = b"unknown\x004".to_vec();
    connect.extend_from_slice(&40_000u16.to_be_bytes());
    connect.extend_from_slice(client.as_bytes());
    connect.push(0);
    let reply = mta
        .event(
            b'C',
            Some(STAGE_CONNECT),
            &values,
            &[&connect],
            NO_CONNECT,
            NR_CONN,
        )
        .await?;
    if early(tally, "connect", &reply) {
        return quit(mta).await;
    }

    let helo = [plan.helo.as_bytes(), b"\0"].concat();
    let reply = mta
        .event(b'H', Some(STAGE_HELO), &values, &[&helo], NO_HELO, NR_HELO)
        .await?;
    if early(tally, "helo", &reply) {
        return quit(mta).await;
    }

    values.insert(
        "{mail_addr}".into(),
        plan.sender.trim_matches(['<', '>']).into(),
    );
    values.insert("{mail_host}".into(), "mail.example.org".into());
    values.insert("{mail_mailer}".into(), "smtp".into());
    let mail = [plan.sender.as_bytes(), b"\0BODY=8BITMIME\0"].concat();
    let reply = mta
        .event(b'M', Some(STAGE_MAIL), &values, &[&mail], NO_MAIL, NR_MAIL)
        .await?;
    if early(tally, "mail", &reply) {
        return quit(mta).await;
    }

    let mut accepted = 0;
    let mut first_rcpt = true;
    for rcpt in &plan.rcpts {
        let address = rcpt.trim_matches(['<', '>']);
        values.insert("{rcpt_addr}".into(), address.into());
        values.insert(
            "{rcpt_host}".into(),
            address.rsplit('@').next().unwrap_or_default().into(),
        );
        values.insert("{rcpt_mailer}".into(), "smtp".into());
        let arg = [rcpt.as_bytes(), b"\0"].concat();
        let sent = Instant::now();
        let reply = mta
            .event(b'R', Some(STAGE_RCPT), &values, &[&arg], NO_RCPT, NR_RCPT)
            .await?;
        if std::mem::take(&mut first_rcpt) && !plan.bogus {
            tally.rcpt_us.push(micros(sent.elapsed()));
        }
        let refused_550 = matches!(&reply, Some((b'y', text)) if text.starts_with(b"550 "));
        let ok = match (expect, plan.bogus) {
            (Expect::Verdicts, true) => refused_550,
            _ => matches!(reply, None | Some((b'c', _))),
        };
        if refused_550 {
            tally.rejected += 1;
        }
        if !ok {
            tally.mismatches += 1;
            let wanted = if expect == Expect::Verdicts && plan.bogus {
                "a 550 reply"
            } else {
                "continue"
            };
            tally.note(format!(
                "rcpt {rcpt} (helo {:?}): expected {wanted}, got {}",
                plan.helo,
                describe(&reply)
            ));
        }
        if matches!(reply, None | Some((b'c', _))) {
            accepted += 1;
            // Postfix assigns the queue ID with the first accepted recipient.
            values
                .entry("i".into())
                .or_insert_with(|| plan.queue_id.clone());
        }
    }

    if data && accepted > 0 {
        let reply = mta
            .event(b'T', Some(STAGE_DATA), &values, &[], NO_DATA, NR_DATA)
            .await?;
        if early(tally, "data", &reply) {
            return quit(mta).await;
        }
        // Postfix's smtpd hands the milter connection over to its cleanup server here.
        mta.flush().await?;
        for (name, value) in HEADERS {
            let reply = mta
                .event(
                    b'L',
                    Some(STAGE_EOH),
                    &values,
                    &[name.as_bytes(), b"\0", value.as_bytes(), b"\0"],
                    NO_HDRS,
                    NR_HDR,
                )
                .await?;
            if early(tally, "header", &reply) {
                return quit(mta).await;
            }
        }
        let reply = mta
            .event(b'N', Some(STAGE_EOH), &values, &[], NO_EOH, NR_EOH)
            .await?;
        if early(tally, "eoh", &reply) {
            return quit(mta).await;
        }
        let body = "The figures for the quarter are attached.\r\n".repeat(48);
        let reply = mta
            .event(
                b'B',
                Some(STAGE_EOM),
                &values,
                &[body.as_bytes()],
                NO_BODY,
                NR_BODY,
            )
            .await?;
        if early(tally, "body", &reply) {
            return quit(mta).await;
        }
        // End of message: never skipped, always answered.
        let reply = mta.event(b'E', Some(STAGE_EOM), &values, &[], 0, 0).await?;
        early(tally, "eom", &reply);
    } else {
        mta.put(b'A', &[]);
    }
    quit(mta).await
}

/// Quits and closes the connection without waiting, as Postfix does.
async fn quit(mta: Mta) -> io::Result<()> {
    mta.quit().await
}

/// The macro lists a milter asked for, where they differ from Postfix's defaults.
fn describe_macros(macros: &[Vec<String>; STAGES]) -> String {
    const NAMES: [&str; STAGES] = ["connect", "helo", "mail", "rcpt", "data", "eom", "eoh"];
    let mut text = String::new();
    for (stage, names) in macros.iter().enumerate() {
        if names.join(" ") != POSTFIX_MACROS[stage] {
            let _ = write!(text, ", {} macros {:?}", NAMES[stage], names.join(" "));
        }
    }
    text
}

struct Load {
    addr: SocketAddr,
    expect: Expect,
    data: bool,
    nodelay: bool,
    rcpts: usize,
    domains: Vec<String>,
    timeout: Duration,
    next: AtomicU64,
    greeting: Greeting,
}

async fn worker(load: Arc<Load>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let index = load.next.fetch_add(1, Ordering::Relaxed);
        let plan = load
            .greeting
            .apply(SessionPlan::new(index, load.rcpts, &load.domains));
        let start = Instant::now();
        let mut local = Tally::default();
        let result = timeout(
            load.timeout,
            session(
                load.addr,
                &plan,
                load.expect,
                load.data,
                load.nodelay,
                &mut local,
            ),
        )
        .await;
        let elapsed = start.elapsed();
        tally.merge(local);
        match result {
            Ok(Ok(())) => {
                tally.sessions += 1;
                tally.latencies_us.push(micros(elapsed));
            }
            Ok(Err(e)) => {
                tally.errors += 1;
                tally.note(format!("session error: {e}"));
            }
            Err(_) => {
                tally.errors += 1;
                tally.note(format!("session timed out after {:?}", load.timeout));
            }
        }
        if tally.sessions == 0 && tally.errors >= 100 {
            // Nothing works (the server is gone?): stop hammering it.
            break;
        }
    }
    tally
}

// ---------------------------------------------------------------------------------------
// Servers.

struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    /// The metrics endpoint, scraped during the rounds (`--metrics`).
    metrics: Option<SocketAddr>,
}

impl Server {
    fn start(
        name: &str,
        program: &Path,
        args: &[String],
        port: u16,
        log: PathBuf,
    ) -> Result<Self, String> {
        let log_file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .env_remove("RUST_LOG");
        for (key, _) in std::env::vars() {
            if key.starts_with("BOGUS_HELO_MILTER_") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .map_err(|e| format!("{name}: cannot start {}: {e}", program.display()))?;
        let mut server = Self {
            name: name.into(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            metrics: None,
        };
        server.wait_listening()?;
        Ok(server)
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited at start ({status}): {}",
                    self.name,
                    self.log_tail()
                ));
            }
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} does not listen on {}: {}",
                    self.name,
                    self.addr,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} died ({status}): {}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    // Held together so that they differ; released just before the servers bind them.
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The real milter's configuration with its `socket` line replaced, and `metrics_listen`
/// set (before any table) when `metrics` is given.
fn config_with_port(
    config: &Path,
    port: u16,
    metrics: Option<SocketAddr>,
    out: &Path,
) -> Result<(), String> {
    let mut head = format!("socket = \"inet:127.0.0.1:{port}\"\n");
    if let Some(addr) = metrics {
        head.push_str(&format!("metrics_listen = \"{addr}\"\n"));
    }
    config_with_head(config, &head, out)
}

/// The real milter's configuration with its `socket`, `policy_socket` and
/// `metrics_listen` lines replaced by `head` (before any table).
fn config_with_head(config: &Path, head: &str, out: &Path) -> Result<(), String> {
    let text = fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut new = head.to_string();
    for line in text.lines() {
        let key = line.trim_start();
        let is_key = |name: &str| {
            key.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        if !is_key("socket") && !is_key("policy_socket") && !is_key("metrics_listen") {
            new.push_str(line);
            new.push('\n');
        }
    }
    fs::write(out, new).map_err(|e| format!("{}: {e}", out.display()))
}

// ---------------------------------------------------------------------------------------
// /proc.

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process (all its threads, dead ones included), in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

fn vm_rss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Measurements.

struct Target {
    server: Server,
    expect: Expect,
    /// Per concurrency: sessions/s of each round, and the pooled tally.
    rounds: Vec<Vec<f64>>,
    tallies: Vec<Tally>,
    server_cpu_ticks: Vec<u64>,
    client_cpu_ticks: Vec<u64>,
    rss: Option<(u64, u64)>,
    storm: Option<memory::Storm>,
    /// How its sessions greet (`--good-helo`, `--ip-helos`).
    greeting: Greeting,
    /// A `--dns-target`: `--background` sessions run beside its rounds.
    dns: bool,
    /// Those background sessions, all rounds pooled.
    background: Tally,
}

struct Round {
    rate: f64,
    tally: Tally,
    server_ticks: u64,
    client_ticks: u64,
    background: Tally,
}

async fn run_round(target: &Target, concurrency: usize, args: &Args) -> Result<Round, String> {
    let pid = target.server.pid().to_string();
    let load = Arc::new(Load {
        addr: target.server.addr,
        expect: target.expect,
        data: args.data,
        nodelay: args.nodelay,
        rcpts: args.rcpts,
        domains: args.domains.clone(),
        timeout: args.timeout,
        next: AtomicU64::new(0),
        greeting: target.greeting.clone(),
    });
    let server0 = cpu_ticks(&pid);
    let client0 = cpu_ticks("self");
    let start = Instant::now();
    let deadline = start + args.duration;
    let scraper = target
        .server
        .metrics
        .map(|addr| tokio::spawn(scrape_every_second(addr, deadline)));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(worker(load.clone(), deadline));
    }
    let background = spawn_background(target, args, deadline);
    let mut tally = Tally::default();
    while let Some(result) = workers.join_next().await {
        tally.merge(result.map_err(|e| format!("load generator task failed: {e}"))?);
    }
    let elapsed = start.elapsed();
    // After `elapsed`: their last sessions may outlast the round by up to dns_timeout.
    let background = join_all(background).await?;
    if let Some(scraper) = scraper {
        let (scrapes, failed) = scraper
            .await
            .map_err(|e| format!("scraper task failed: {e}"))?;
        tally.scrapes += scrapes;
        if failed > 0 {
            tally.errors += failed;
            tally.note(format!("{failed} scrapes of /metrics failed"));
        }
    }
    // Let the server finish the last quits before reading its CPU time.
    sleep(Duration::from_millis(30)).await;
    Ok(Round {
        rate: tally.sessions as f64 / elapsed.as_secs_f64(),
        tally,
        server_ticks: cpu_ticks(&pid).saturating_sub(server0),
        client_ticks: cpu_ticks("self").saturating_sub(client0),
        background,
    })
}

/// GETs `/metrics` at `addr` every second (the first at once) until `deadline`, as
/// Prometheus would with a 1 s scrape interval; returns the scrapes done and failed.
async fn scrape_every_second(addr: SocketAddr, deadline: Instant) -> (u64, u64) {
    let (mut done, mut failed) = (0, 0);
    let mut next = Instant::now();
    while next < deadline {
        let scrape = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
                .await?;
            let mut response = Vec::with_capacity(16 * 1024);
            stream.read_to_end(&mut response).await?;
            io::Result::Ok(response.starts_with(b"HTTP/1.1 200 "))
        };
        match timeout(Duration::from_secs(5), scrape).await {
            Ok(Ok(true)) => done += 1,
            _ => failed += 1,
        }
        next += Duration::from_secs(1);
        tokio::time::sleep_until(next.into()).await;
    }
    (done, failed)
}

/// Opens `n` negotiated, connected, idle milter connections and returns VmRSS before and
/// after, in kB.
async fn idle_rss(target: &Target, n: usize, args: &Args) -> Result<(u64, u64), String> {
    let pid = target.server.pid();
    let before = vm_rss_kb(pid);
    let open = open_idle(target, n, args).await?;
    sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kb(pid);
    drop(open);
    // Let the server close them before the rounds start.
    sleep(Duration::from_millis(500)).await;
    Ok((before, after))
}

/// Opens `n` negotiated, connected milter connections, at most 64 connects in flight.
async fn open_idle(target: &Target, n: usize, args: &Args) -> Result<Vec<Mta>, String> {
    let addr = target.server.addr;
    let nodelay = args.nodelay;
    let mut open = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    let mut started = 0;
    let values: Arc<Values> = Arc::new(
        [
            ("j", SERVER_NAME.to_string()),
            ("{daemon_addr}", DAEMON_ADDR.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    while open.len() < n {
        // At most 64 connects in flight: this measures memory, not the listen queue.
        while started < n && pending.len() < 64 {
            started += 1;
            let values = values.clone();
            pending.spawn(timeout(args.timeout, async move {
                let mut mta = Mta::open(addr, nodelay).await?;
                let connect = b"unknown\x004\x9c\x40198.51.100.7\0";
                mta.event(
                    b'C',
                    Some(STAGE_CONNECT),
                    &values,
                    &[connect],
                    NO_CONNECT,
                    NR_CONN,
                )
                .await?;
                mta.flush().await?;
                io::Result::Ok(mta)
            }));
        }
        match pending.join_next().await {
            Some(Ok(Ok(Ok(mta)))) => open.push(mta),
            Some(Ok(Ok(Err(e)))) => {
                return Err(format!(
                    "{}: idle connection {}: {e}",
                    target.server.name,
                    open.len()
                ))
            }
            Some(Ok(Err(_))) => {
                return Err(format!(
                    "{}: idle connection {} timed out (max_connections below {n}?)",
                    target.server.name,
                    open.len()
                ))
            }
            Some(Err(e)) => return Err(format!("load generator task failed: {e}")),
            None => break,
        }
    }
    Ok(open)
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

async fn bench(mut args: Args) -> Result<bool, String> {
    if args.quick {
        args.duration = Duration::from_millis(300);
        args.rounds = 2;
        args.settle = args.settle.min(Duration::from_secs(1));
    }
    if args.domains.is_empty() || args.domains.iter().any(|d| d.is_empty()) {
        return Err("--domains needs at least one domain".into());
    }
    if args.concurrency.contains(&0) || args.rounds == 0 {
        return Err("--concurrency and --rounds must be at least 1".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("milter-bench.")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let tick = clock_ticks_per_second();

    // (name, program, args with {port}, expectation)
    let mut specs: Vec<(&str, PathBuf, Vec<String>, Expect)> = Vec::new();
    if let (Some(milter), Some(_)) = (&args.milter, &args.config) {
        specs.push(("milter", milter.clone(), vec![], Expect::Verdicts));
        if args.metrics {
            specs.push((METRICS_ON, milter.clone(), vec![], Expect::Verdicts));
        }
        if let Some(other) = &args.other_milter {
            specs.push((OTHER, other.clone(), vec![], Expect::Verdicts));
        }
        for name in &args.dns_target {
            specs.push((name, milter.clone(), vec![], Expect::Verdicts));
        }
    }
    if let Some(null) = &args.null {
        specs.push((
            "null",
            null.clone(),
            vec!["{port}".into()],
            Expect::Continue,
        ));
        if args.null_current_thread {
            specs.push((
                "null-ct",
                null.clone(),
                vec!["{port}".into(), "--current-thread".into()],
                Expect::Continue,
            ));
        }
    }
    if let Some(libmilter) = &args.libmilter {
        specs.push((
            "libmilter",
            libmilter.clone(),
            vec!["inet:{port}@127.0.0.1".into()],
            Expect::Continue,
        ));
    }
    if specs.is_empty() {
        return Err("nothing to measure: give --milter/--config, --null or --libmilter".into());
    }

    // One more port for the metrics endpoint.
    let mut ports = free_ports(specs.len() + 1).map_err(|e| format!("free ports: {e}"))?;
    let metrics_port = ports.pop().unwrap_or_default();
    let mut targets = Vec::new();
    // Stopped when dropped, at the end of `bench`.
    let (dns_lines, _dns_servers) = DnsServers::start(&args)?;
    for ((name, program, spec_args, expect), port) in specs.into_iter().zip(ports) {
        let is_dns = args.dns_target.iter().any(|t| t == name);
        let metrics =
            (name == METRICS_ON).then(|| SocketAddr::from(([127, 0, 0, 1], metrics_port)));
        let mut run_args: Vec<String> = spec_args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let mut log = dir.path().join(format!("{name}.log"));
        if name == "milter" || name == METRICS_ON || name == OTHER || is_dns {
            let config = dir.path().join(format!("{name}.conf"));
            config_with_port(
                args.config.as_deref().unwrap_or(Path::new("")),
                port,
                metrics,
                &config,
            )?;
            if is_dns {
                prepend_lines(&config, &dns_lines)?;
            }
            run_args = vec!["-c".into(), config.display().to_string()];
            if let (Some(path), "milter") = (&args.milter_log, name) {
                log = path.clone();
            }
        }
        let mut server = Server::start(name, &program, &run_args, port, log)?;
        server.metrics = metrics;
        let probe = timeout(args.timeout, Mta::open(server.addr, args.nodelay))
            .await
            .map_err(|_| format!("{name}: option negotiation timed out"))?
            .map_err(|e| format!("{name}: option negotiation: {e}"))?;
        eprintln!(
            "milter-bench: {name} (pid {}) on {}: protocol options {:#x}{}",
            server.pid(),
            server.addr,
            probe.opts,
            describe_macros(&probe.macros),
        );
        probe.quit().await.map_err(|e| format!("{name}: {e}"))?;
        targets.push(Target {
            server,
            expect,
            rounds: vec![Vec::new(); args.concurrency.len()],
            tallies: (0..args.concurrency.len())
                .map(|_| Tally::default())
                .collect(),
            server_cpu_ticks: vec![0; args.concurrency.len()],
            client_cpu_ticks: vec![0; args.concurrency.len()],
            rss: None,
            storm: None,
            greeting: Greeting::for_target(name, &args),
            dns: is_dns,
            background: Tally::default(),
        });
    }

    if args.idle_connections > 0 {
        for target in &mut targets {
            let rss = idle_rss(target, args.idle_connections, &args).await?;
            eprintln!(
                "milter-bench: {}: VmRSS {} kB -> {} kB with {} idle connections",
                target.server.name, rss.0, rss.1, args.idle_connections
            );
            target.rss = Some(rss);
            target.server.check_alive()?;
        }
    }

    if args.storm > 0 {
        for target in &mut targets {
            let storm = memory::storm(target, args.storm, args.settle, &args).await?;
            eprintln!(
                "milter-bench: {}: VmRSS {} kB -> {} kB with {} connections open, {} kB {:?} after they closed",
                target.server.name,
                storm.before,
                storm.open,
                args.storm,
                storm.after.last().map_or(0, |(_, rss)| *rss),
                args.settle,
            );
            target.storm = Some(storm);
            target.server.check_alive()?;
        }
    }
    let policy = match (&args.milter, &args.config) {
        (Some(milter), Some(config)) if args.policy_idle > 0 => {
            let rss =
                memory::policy_idle(milter, config, dir.path(), args.policy_idle, &args).await?;
            eprintln!(
                "milter-bench: policy: VmRSS {} kB -> {} kB with {} idle connections",
                rss.0, rss.1, args.policy_idle
            );
            Some(rss)
        }
        _ => None,
    };

    for (ci, &concurrency) in args.concurrency.iter().enumerate() {
        for round in 1..=args.rounds {
            for target in &mut targets {
                let r = run_round(target, concurrency, &args).await?;
                target.server.check_alive()?;
                eprintln!(
                    "milter-bench: c={concurrency:<4} round {round}/{} {:<10} {:>8.0} sessions/s  errors {}  mismatches {}",
                    args.rounds, target.server.name, r.rate, r.tally.errors, r.tally.mismatches
                );
                target.rounds[ci].push(r.rate);
                target.tallies[ci].merge(r.tally);
                target.server_cpu_ticks[ci] += r.server_ticks;
                target.client_cpu_ticks[ci] += r.client_ticks;
                target.background.merge(r.background);
            }
        }
    }

    Ok(report(&mut targets, policy, &args, tick))
}

/// The target name of the real milter with `metrics_listen` on (`--metrics`).
const METRICS_ON: &str = "milter+m";
/// The target name of the other build of the real milter (`--other-milter`).
const OTHER: &str = "other";

/// Prints the results; returns whether every session went as expected.
fn report(targets: &mut [Target], policy: Option<(u64, u64)>, args: &Args, tick: u64) -> bool {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmilter-protocol benchmark: {} rounds of {:?} per target and concurrency, {} rcpt(s) per session, {}, client {} thread(s){}",
        args.rounds,
        args.duration,
        args.rcpts,
        if args.data { "full message (data..eom)" } else { "abort after RCPT" },
        args.client_threads,
        if args.nodelay { ", TCP_NODELAY" } else { "" },
    );
    let _ = writeln!(
        out,
        "\n{:>5}  {:<10} {:>11} {:>17} {:>8} {:>8} {:>8} {:>7} {:>12} {:>12} {:>7} {:>10}",
        "conc",
        "target",
        "sessions/s",
        "(min..max)",
        "p50 ms",
        "p99 ms",
        "p99 conn",
        "conn≥1s",
        "srv µs/sess",
        "cli µs/sess",
        "errors",
        "mismatch"
    );
    let mut ok = true;
    let us_per_tick = 1e6 / tick as f64;
    let mut summary: Vec<Vec<(f64, f64)>> = Vec::new();
    for (ci, &concurrency) in args.concurrency.iter().enumerate() {
        let mut row = Vec::new();
        for target in targets.iter_mut() {
            let tally = &mut target.tallies[ci];
            tally.latencies_us.sort_unstable();
            tally.connect_us.sort_unstable();
            let rates = &target.rounds[ci];
            let rate = median(rates);
            let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rates.iter().copied().fold(0.0, f64::max);
            let sessions = tally.sessions.max(1) as f64;
            let server_cpu = target.server_cpu_ticks[ci] as f64 * us_per_tick / sessions;
            let client_cpu = target.client_cpu_ticks[ci] as f64 * us_per_tick / sessions;
            let _ = writeln!(
                out,
                "{:>5}  {:<10} {:>11.0} {:>17} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>12.0} {:>12.0} {:>7} {:>10}",
                concurrency,
                target.server.name,
                rate,
                format!("({min:.0}..{max:.0})"),
                percentile_ms(&tally.latencies_us, 50.0),
                percentile_ms(&tally.latencies_us, 99.0),
                percentile_ms(&tally.connect_us, 99.0),
                tally.connect_us.iter().filter(|&&us| us >= 1_000_000).count(),
                server_cpu,
                client_cpu,
                tally.errors,
                tally.mismatches,
            );
            row.push((rate, server_cpu));
        }
        summary.push(row);
    }

    let names: Vec<&str> = targets.iter().map(|t| t.server.name.as_str()).collect();
    if let Some(on) = names.iter().position(|n| *n == METRICS_ON) {
        let scrapes: u64 = targets[on].tallies.iter().map(|t| t.scrapes).sum();
        let _ = writeln!(
            out,
            "\nmetrics on / off ({METRICS_ON} / milter; {scrapes} scrapes of /metrics, one a second during its rounds):"
        );
        for (ci, &concurrency) in args.concurrency.iter().enumerate() {
            let (off_rate, off_cpu) = summary[ci][0];
            let (on_rate, on_cpu) = summary[ci][on];
            let _ = writeln!(
                out,
                "{concurrency:>5}   sessions/s {:.3}x, server cpu per session {:.3}x",
                on_rate / off_rate.max(f64::MIN_POSITIVE),
                on_cpu / off_cpu.max(f64::MIN_POSITIVE)
            );
        }
    }
    if names.first() == Some(&"milter")
        && names
            .iter()
            .any(|n| n.starts_with("null") || *n == "libmilter" || *n == OTHER)
    {
        let _ = writeln!(
            out,
            "\nratios, milter / baseline (sessions/s; server CPU per session):"
        );
        for (ci, &concurrency) in args.concurrency.iter().enumerate() {
            let (rate, cpu) = summary[ci][0];
            let mut line = format!("{concurrency:>5}  ");
            for (bi, name) in names.iter().enumerate().skip(1) {
                if *name == METRICS_ON {
                    continue;
                }
                let (base_rate, base_cpu) = summary[ci][bi];
                let _ = write!(
                    line,
                    " milter/{name}: {:.2}x, cpu {:.2}x;",
                    rate / base_rate.max(f64::MIN_POSITIVE),
                    cpu / base_cpu.max(f64::MIN_POSITIVE)
                );
            }
            let _ = writeln!(out, "{}", line.trim_end_matches(';'));
        }
    }

    if targets.iter().any(|t| t.rss.is_some()) {
        let _ = writeln!(
            out,
            "\nmemory with {} idle negotiated connections (VmRSS):",
            args.idle_connections
        );
        let per_conn = |t: &Target| {
            t.rss.map(|(before, after)| {
                (after as f64 - before as f64) / args.idle_connections as f64
            })
        };
        for target in targets.iter() {
            if let (Some((before, after)), Some(per)) = (target.rss, per_conn(target)) {
                let _ = writeln!(
                    out,
                    "       {:<10} {before:>7} kB -> {after:>7} kB   {per:>6.1} kB per connection",
                    target.server.name
                );
            }
        }
        if let Some(milter) = targets.iter().find(|t| t.server.name == "milter") {
            for base in targets
                .iter()
                .filter(|t| t.server.name != "milter" && t.server.name != METRICS_ON)
            {
                if let (Some((_, m_after)), Some((_, b_after)), Some(m_per), Some(b_per)) =
                    (milter.rss, base.rss, per_conn(milter), per_conn(base))
                {
                    let _ = writeln!(
                        out,
                        "       milter/{}: {:.2}x RSS with the connections open, {:.2}x per connection",
                        base.server.name,
                        m_after as f64 / b_after.max(1) as f64,
                        m_per / b_per.max(0.1),
                    );
                }
            }
        }
    }

    memory::report(&mut out, targets, policy, args);

    let rejected: u64 = targets
        .iter()
        .filter(|t| t.expect == Expect::Verdicts)
        .flat_map(|t| t.tallies.iter())
        .map(|t| t.rejected)
        .sum();
    if targets.iter().any(|t| t.expect == Expect::Verdicts) {
        let _ = writeln!(
            out,
            "\nmilter: {rejected} recipients of bogus-HELO sessions refused with 550"
        );
    }
    for target in targets.iter() {
        let mut examples = Vec::new();
        let (mut errors, mut mismatches) = (0, 0);
        for tally in &target.tallies {
            errors += tally.errors;
            mismatches += tally.mismatches;
            examples.extend(tally.examples.iter().cloned());
        }
        if errors > 0 || mismatches > 0 {
            ok = false;
            let _ = writeln!(
                out,
                "FAILED {}: {errors} failed sessions, {mismatches} wrong answers, e.g.:",
                target.server.name
            );
            for example in examples.iter().take(5) {
                let _ = writeln!(out, "    {example}");
            }
        }
    }
    ok &= report_dns(&mut out, targets, args, tick);
    if ok {
        let _ = writeln!(out, "all sessions answered as expected");
    }
    print!("{out}");
    ok
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("milter-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        // Dropping `bench` on a signal drops the servers it started, which stops them.
        tokio::select! {
            result = bench(args) => result,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
            _ = term.recv() => Err("terminated".to_string()),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("milter-bench: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------
// DNS rules (issue 21): `--dns-target`, `--dns-set`, `--good-helo`, `--ip-helos`,
// `--background`.

/// The DNS servers of the test suite, shared rather than copied: NSD with the test zone,
/// and the server that never answers.
#[allow(dead_code)]
#[path = "../tests/common/dns_server.rs"]
mod dns_server;

/// How the sessions of a target greet where options change the default mix.
#[derive(Clone, Default)]
struct Greeting {
    /// The good sessions' HELO (`--good-helo`).
    good: Option<String>,
    /// Every session's HELO, and whether it is bogus (`--ip-helos`, background sessions).
    every: Option<(String, bool)>,
    /// The good sessions' client address (`--good-client`).
    client: Option<Ipv4Addr>,
}

/// Numbers for `%n` in HELO names: unique in the run, so the name was never asked before.
static UNIQUE_NAMES: AtomicU64 = AtomicU64::new(0);

impl Greeting {
    /// The target's greeting: `--ip-helos`, else its `--good-helo` (TARGET=NAME before
    /// NAME).
    fn for_target(target: &str, args: &Args) -> Self {
        if args.ip_helos {
            return Self {
                good: None,
                every: Some((IP_HELO.into(), true)),
                client: None,
            };
        }
        let own = args
            .good_helo
            .iter()
            .find_map(|g| g.strip_prefix(target)?.strip_prefix('='));
        let any = args.good_helo.iter().find(|g| !g.contains('='));
        Self {
            good: own.or(any.map(String::as_str)).map(String::from),
            every: None,
            client: args.good_client,
        }
    }

    fn apply<'a>(&self, mut plan: SessionPlan<'a>) -> SessionPlan<'a> {
        if let Some((helo, bogus)) = &self.every {
            plan.helo = unique_name(helo).into();
            plan.bogus = *bogus;
        } else if let (Some(good), false) = (&self.good, plan.bogus) {
            plan.helo = unique_name(good).into();
        }
        if let (Some(client), false) = (self.client, plan.bogus) {
            plan.client = client;
        }
        plan
    }
}

fn unique_name(template: &str) -> String {
    if template.contains("%n") {
        let n = UNIQUE_NAMES.fetch_add(1, Ordering::Relaxed);
        template.replace("%n", &n.to_string())
    } else {
        template.to_string()
    }
}

/// The DNS servers that `--dns-set` names, running until dropped.
#[derive(Default)]
struct DnsServers {
    nsd: Option<dns_server::Nsd>,
    silent: Option<dns_server::FakeDns>,
}

impl DnsServers {
    /// Starts the servers the `--dns-set` lines name and returns the lines with their
    /// addresses in.
    fn start(args: &Args) -> Result<(Vec<String>, Self), String> {
        let mut servers = Self::default();
        let wants = |placeholder| args.dns_set.iter().any(|l| l.contains(placeholder));
        if wants("{nsd}") {
            if !dns_server::nsd_available() {
                return Err(format!(
                    "{} is missing: {}",
                    dns_server::NSD,
                    dns_server::INSTALL_NSD
                ));
            }
            // Panics with NSD's log when it does not serve the zone.
            let nsd = std::panic::catch_unwind(dns_server::Nsd::start)
                .map_err(|_| "NSD did not start (its log is above)".to_string())?;
            eprintln!("milter-bench: NSD serving helo.test. on {}", nsd.addr);
            servers.nsd = Some(nsd);
        }
        if wants("{silent}") {
            let silent = dns_server::FakeDns::silent();
            eprintln!(
                "milter-bench: a DNS server that never answers on {}",
                silent.addr
            );
            servers.silent = Some(silent);
        }
        let lines = args
            .dns_set
            .iter()
            .map(|line| {
                let mut line = line.clone();
                if let Some(nsd) = &servers.nsd {
                    line = line.replace("{nsd}", &nsd.addr.to_string());
                }
                if let Some(silent) = &servers.silent {
                    line = line.replace("{silent}", &silent.addr.to_string());
                }
                line
            })
            .collect();
        Ok((lines, servers))
    }
}

/// Puts `lines` at the top of the configuration file `path` (before any table).
fn prepend_lines(path: &Path, lines: &[String]) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut new = lines.join("\n");
    new.push('\n');
    new.push_str(&text);
    fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `--background` sessions beside a round of a `--dns-target`, until `deadline`.
fn spawn_background(target: &Target, args: &Args, deadline: Instant) -> JoinSet<Tally> {
    let mut workers = JoinSet::new();
    let Some(helo) = args.background_helo.as_ref().filter(|_| target.dns) else {
        return workers;
    };
    let load = Arc::new(Load {
        addr: target.server.addr,
        expect: target.expect,
        data: false,
        nodelay: args.nodelay,
        rcpts: args.rcpts,
        domains: args.domains.clone(),
        timeout: args.timeout,
        next: AtomicU64::new(0),
        greeting: Greeting {
            good: None,
            every: Some((helo.clone(), false)),
            client: args.good_client,
        },
    });
    // Staggered over 0.5 s: started together, sessions that each wait the same timeout
    // would stay in step, and one stall of the machine would hit all of them at once.
    let step = Duration::from_millis(500) / args.background.max(1) as u32;
    for i in 0..args.background {
        let (load, start) = (load.clone(), step * i as u32);
        workers.spawn(async move {
            sleep(start).await;
            worker(load, deadline).await
        });
    }
    workers
}

async fn join_all(mut workers: JoinSet<Tally>) -> Result<Tally, String> {
    let mut tally = Tally::default();
    while let Some(result) = workers.join_next().await {
        tally.merge(result.map_err(|e| format!("load generator task failed: {e}"))?);
    }
    Ok(tally)
}

/// The DNS figures: each `--dns-target`'s sessions/s and CPU against `milter`'s, the RCPT
/// answer times of the good sessions, and the background sessions. Returns whether the
/// background sessions went as expected.
fn report_dns(out: &mut String, targets: &mut [Target], args: &Args, tick: u64) -> bool {
    if args.dns_target.is_empty() {
        return true;
    }
    let us_per_tick = 1e6 / tick as f64;
    let figures = |t: &Target, ci: usize| {
        let sessions = t.tallies[ci].sessions.max(1) as f64;
        (
            median(&t.rounds[ci]),
            t.server_cpu_ticks[ci] as f64 * us_per_tick / sessions,
        )
    };
    let ms = |us: &[u32], p: f64| percentile_ms(us, p);
    let Some(off) = targets.iter().position(|t| t.server.name == "milter") else {
        return true;
    };
    let _ = writeln!(out, "\nDNS rules on / off (target / milter):");
    for (ci, &concurrency) in args.concurrency.iter().enumerate() {
        let (off_rate, off_cpu) = figures(&targets[off], ci);
        for target in targets.iter().filter(|t| t.dns) {
            let (rate, cpu) = figures(target, ci);
            let _ = writeln!(
                out,
                "{concurrency:>5}   {:<12} sessions/s {:.3}x, server cpu per session {:.3}x",
                target.server.name,
                rate / off_rate.max(f64::MIN_POSITIVE),
                cpu / off_cpu.max(f64::MIN_POSITIVE)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nRCPT answer, good sessions (sending the first RCPT to its reply), all rounds:"
    );
    let _ = writeln!(
        out,
        "       {:<24} {:>9} {:>8} {:>8} {:>8}  helo",
        "target", "RCPTs", "p50 ms", "p99 ms", "max ms"
    );
    let mut ok = true;
    for target in targets.iter_mut() {
        let mut rows = vec![(target.server.name.clone(), Tally::default(), false)];
        for tally in &mut target.tallies {
            rows[0].1.rcpt_us.append(&mut tally.rcpt_us);
        }
        if target.background.sessions + target.background.errors > 0 {
            let mut background = std::mem::take(&mut target.background);
            let name = format!("{} background", target.server.name);
            ok &= background.errors == 0 && background.mismatches == 0;
            if background.errors + background.mismatches > 0 {
                let _ = writeln!(
                    out,
                    "FAILED {name}: {} failed sessions, {} wrong answers, e.g.:",
                    background.errors, background.mismatches
                );
                for example in background.examples.iter().take(5) {
                    let _ = writeln!(out, "    {example}");
                }
            }
            background.examples.clear();
            rows.push((name, background, true));
        }
        for (name, mut tally, background) in rows {
            tally.rcpt_us.sort_unstable();
            let helo = match (background, &target.greeting) {
                (true, _) => args.background_helo.clone().unwrap_or_default(),
                (
                    false,
                    Greeting {
                        every: Some((h, _)),
                        ..
                    },
                ) => h.clone(),
                (false, Greeting { good: Some(h), .. }) => h.clone(),
                _ => GOOD_HELO.into(),
            };
            let _ = writeln!(
                out,
                "       {name:<24} {:>9} {:>8.2} {:>8.2} {:>8.2}  {helo}{}",
                tally.rcpt_us.len(),
                ms(&tally.rcpt_us, 50.0),
                ms(&tally.rcpt_us, 99.0),
                ms(&tally.rcpt_us, 100.0),
                if background {
                    // Good names: any reply but continue is a wrong answer.
                    format!(
                        " ({} sessions, {} RCPTs refused or tempfailed)",
                        tally.sessions, tally.mismatches
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    ok
}
