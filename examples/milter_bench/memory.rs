//! The memory figures of milter-bench beyond the idle connections (issue 22): the RSS of
//! each milter while a storm of connections is open and as it settles after they all
//! closed, and the policy service's RSS with idle connections that each made a request.

use super::{config_with_head, free_ports, open_idle, vm_rss_kb, Args, Server, Target};
use std::{fmt::Write as _, path::Path, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::{sleep, timeout, Instant},
};

/// How often RSS is read while the process settles after a storm.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// VmRSS (kB) around a storm of connections that all close.
pub struct Storm {
    /// The process before the storm, with no connection open.
    pub before: u64,
    /// With all the storm's connections open.
    pub open: u64,
    /// Every `SAMPLE_EVERY` after they all closed, for `--settle`.
    pub after: Vec<(Duration, u64)>,
}

/// Opens `n` negotiated connections at once, closes them all, and samples VmRSS.
pub async fn storm(
    target: &Target,
    n: usize,
    settle: Duration,
    args: &Args,
) -> Result<Storm, String> {
    let pid = target.server.pid();
    let before = vm_rss_kb(pid);
    let open = open_idle(target, n, args).await?;
    let open_rss = vm_rss_kb(pid);
    drop(open);
    let closed = Instant::now();
    let mut after = Vec::new();
    while closed.elapsed() < settle {
        sleep(SAMPLE_EVERY).await;
        after.push((closed.elapsed(), vm_rss_kb(pid)));
    }
    Ok(Storm {
        before,
        open: open_rss,
        after,
    })
}

/// A request as Postfix 3.7 sends it at RCPT (every attribute), from a client with a
/// good HELO: the answer is `action=DUNNO`.
const POLICY_REQUEST: &str = "request=smtpd_access_policy\nprotocol_state=RCPT\n\
    protocol_name=ESMTP\nclient_address=198.51.100.7\nclient_name=unknown\n\
    client_port=41234\nreverse_client_name=unknown\nserver_address=192.0.2.25\n\
    server_port=25\nhelo_name=mail.sender.example\nsender=news@sender.example\n\
    recipient=user1@example.com\nrecipient_count=0\nqueue_id=\n\
    instance=7a1.656c2f0e.1a2b3.0\nsize=4096\netrn_domain=\nstress=\nsasl_method=\n\
    sasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n\
    ccert_pubkey_fingerprint=\nencryption_protocol=\nencryption_cipher=\n\
    encryption_keysize=0\npolicy_context=\ncompatibility_level=3.6\n\
    mail_version=3.7.11\n\n";

/// One policy connection that has made one request and had its answer.
async fn policy_connection(addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(POLICY_REQUEST.as_bytes()).await?;
    let mut answer = Vec::with_capacity(64);
    let mut chunk = [0; 64];
    while !answer.ends_with(b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    if answer != b"action=DUNNO\n\n" {
        return Err(std::io::Error::other(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&answer)
        )));
    }
    Ok(stream)
}

/// Starts the real milter with only its policy service on, opens `n` connections that
/// each make a request and stay open, and returns VmRSS before and after (kB).
pub async fn policy_idle(
    milter: &Path,
    config: &Path,
    dir: &Path,
    n: usize,
    args: &Args,
) -> Result<(u64, u64), String> {
    let port = free_ports(1)
        .map_err(|e| format!("free ports: {e}"))?
        .pop()
        .unwrap_or_default();
    let policy_config = dir.join("policy.conf");
    let head = format!("socket = \"\"\npolicy_socket = \"inet:127.0.0.1:{port}\"\n");
    config_with_head(config, &head, &policy_config)?;
    let run_args = vec!["-c".into(), policy_config.display().to_string()];
    let mut server = Server::start("policy", milter, &run_args, port, dir.join("policy.log"))?;
    // Let the probe connection of `Server::start` close.
    sleep(Duration::from_millis(200)).await;
    let pid = server.pid();
    let before = vm_rss_kb(pid);
    let mut open = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    let mut started = 0;
    while open.len() < n {
        while started < n && pending.len() < 64 {
            started += 1;
            pending.spawn(timeout(args.timeout, policy_connection(server.addr)));
        }
        match pending.join_next().await {
            Some(Ok(Ok(Ok(stream)))) => open.push(stream),
            Some(Ok(Ok(Err(e)))) => {
                return Err(format!("policy: idle connection {}: {e}", open.len()))
            }
            Some(Ok(Err(_))) => {
                return Err(format!(
                    "policy: idle connection {} timed out (max_connections below {n}?)",
                    open.len()
                ))
            }
            Some(Err(e)) => return Err(format!("load generator task failed: {e}")),
            None => break,
        }
    }
    sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kb(pid);
    drop(open);
    server.check_alive()?;
    Ok((before, after))
}

/// The storm and policy lines of the report.
pub fn report(out: &mut String, targets: &[Target], policy: Option<(u64, u64)>, args: &Args) {
    if let Some((before, after)) = policy {
        let per = (after as f64 - before as f64) / args.policy_idle.max(1) as f64;
        let _ = writeln!(
            out,
            "\npolicy service, {} idle connections after one request each (VmRSS):\n       {:<10} {before:>7} kB -> {after:>7} kB   {per:>6.1} kB per connection",
            args.policy_idle, "policy"
        );
    }
    if !targets.iter().any(|t| t.storm.is_some()) {
        return;
    }
    let _ = writeln!(
        out,
        "\nstorm: {} negotiated connections opened at once, then all closed (VmRSS, kB; idle = the fresh process):",
        args.storm
    );
    let marks: Vec<Duration> = [0.25, 1.0, 2.0, 3.0]
        .into_iter()
        .map(Duration::from_secs_f64)
        .filter(|&d| d < args.settle)
        .chain([args.settle])
        .collect();
    let mut header = format!(
        "       {:<10} {:>7} {:>7} {:>7}",
        "target", "idle", "before", "open"
    );
    for mark in &marks {
        let _ = write!(header, " {:>7}", format!("{:.2}s", mark.as_secs_f64()));
    }
    let _ = writeln!(out, "{header}   last/idle");
    for target in targets {
        let Some(storm) = &target.storm else {
            continue;
        };
        let idle = target.rss.map_or(storm.before, |(fresh, _)| fresh);
        let mut line = format!(
            "       {:<10} {idle:>7} {:>7} {:>7}",
            target.server.name, storm.before, storm.open
        );
        for mark in &marks {
            // The first sample at or after the mark.
            let rss = storm
                .after
                .iter()
                .find(|(at, _)| *at + SAMPLE_EVERY / 2 >= *mark)
                .or(storm.after.last())
                .map_or(0, |(_, rss)| *rss);
            let _ = write!(line, " {rss:>7}");
        }
        let last = storm.after.last().map_or(0, |(_, rss)| *rss);
        let _ = writeln!(line, "   {:>6.2}x", last as f64 / idle.max(1) as f64);
        out.push_str(&line);
    }
}
