//! The Postfix policy service: the second front end on the same decision, speaking
//! Postfix's policy delegation protocol (SMTPD_POLICY_README) on `policy_socket`.
//!
//! A request is `name=value` lines ended by an empty line; the answer is one
//! `action=...` line and an empty line. Postfix keeps a connection open for many requests
//! (one per RCPT with `check_policy_service` in `smtpd_recipient_restrictions`), closes it
//! after `smtpd_policy_service_max_idle` (300 s) or `_max_ttl` (1000 s), and on any
//! trouble the protocol wants no answer but a logged warning and a closed connection:
//! Postfix then retries, and finally applies `smtpd_policy_service_default_action`.
//!
//! The decision is `verdict::decide`, the counters `Shared::stats`, the log lines those of
//! the milter with `via=policy`. What the milter learns from macros comes from the
//! request's attributes here, except the MTA's own host name (`myhostname`), which no
//! attribute carries: own names are `own_names` and this host's name (`host_name`).

use crate::{
    domain,
    helo::{parse_macro_ip, Helo},
    logging::quote,
    policy::Policy,
    recipient::Recipient,
    shared::{LiveSession, Shared},
    socket::{Listener, Origin, StoppableListener},
    stats::{FrontEnd, SessionError},
    verdict::{decide, Connection, Reply, TagHeader, Verdict},
};
use indymilter::{EitherStream, Listener as _};
use log::{debug, info, warn};
use std::{
    borrow::Cow,
    fmt::{self, Display, Formatter},
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{
        AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
        BufReader,
    },
    select,
    sync::{watch, Semaphore},
    time::timeout_at,
};

/// The longest attribute line accepted, newline included. Postfix's longest values
/// (a HELO or an address, at most `smtpd_line_limit`, 2048 bytes; xtext-encoded
/// certificate names) stay well below it.
pub const MAX_LINE: usize = 8192;

/// The most attributes in one request; Postfix 3.7 sends about 30.
pub const MAX_ATTRIBUTES: usize = 256;

/// The answer to everything this service has no opinion on: Postfix goes on with the
/// next restriction.
const DUNNO: &[u8] = b"action=DUNNO\n\n";

/// The limits of the service, from the configuration (restart-only keys).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// A connection silent this long between requests is closed; a request must be
    /// complete this long after its first byte.
    pub idle_timeout: Duration,
}

/// What the service knows besides the policy in force.
struct Service {
    shared: Arc<Shared>,
    /// This host's name in the form of `domain::normalize`, when it is fully qualified:
    /// stands in for Postfix's `myhostname`, which no policy attribute carries.
    host_name: Option<String>,
    limits: Limits,
    /// Whether the "not at RCPT" warning was logged: once per process is enough to tell
    /// the administrator, and a request per SMTP command must not flood the log.
    warned_state: AtomicBool,
    warned_request: AtomicBool,
}

/// This host's name, for the rcpt-domain rule: what Postfix's `myhostname` is by
/// default. A name without a dot is not used: a single-label HELO matches no rule.
pub fn host_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?;
    let name = domain::normalize(name.to_str()?).into_owned();
    name.contains('.').then_some(name)
}

/// Serves policy connections on `listener` until `stop` turns true; then accepts no more
/// and lets each connection finish the request it is reading, answer it and close. The
/// connections count in `Shared::sessions`, which the caller's drain waits for.
pub async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    limits: Limits,
    host_name: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let service = Arc::new(Service {
        shared,
        host_name,
        limits,
        warned_state: AtomicBool::new(false),
        warned_request: AtomicBool::new(false),
    });
    let (mut listener, stop_handle) = StoppableListener::new(listener, Origin::Bound);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    warn!(
                        "event=policy_limit max_connections={} reached; new policy connections wait",
                        limits.max_connections
                    );
                    last_full_warning = Some(Instant::now());
                }
                select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
            }
        };
        let stream = select! {
            accepted = std::future::poll_fn(|cx| listener.poll_accept(cx)) => match accepted {
                Ok(stream) => stream,
                // StoppableListener retries failed accepts itself.
                Err(_) => continue,
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (stream, peer) = match stream {
            EitherStream::Tcp(tcp) => {
                let tcp = tcp.into_inner();
                let peer = tcp
                    .peer_addr()
                    .map_or_else(|_| "unknown".into(), |a| a.to_string());
                (EitherStream::Tcp(tcp), peer)
            }
            EitherStream::Unix(unix) => (EitherStream::Unix(unix), "unix".to_string()),
        };
        let live = LiveSession::new(service.shared.clone(), FrontEnd::Policy);
        let service = service.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            service.connection(stream, &peer, stop).await;
            drop(live);
            drop(permit);
        });
    }
    // New connections are refused from now on; a unix socket file is removed by main.
    stop_handle.stop();
}

/// Why a connection is closed without an answer.
#[derive(Debug)]
enum Trouble {
    LineTooLong,
    TooManyAttributes,
    /// A line without `=`, or with a NUL byte.
    Malformed(String),
    /// The peer closed the connection in the middle of a request.
    Truncated,
    /// The request was not complete within `idle_timeout` of its first byte.
    Slow(Duration),
    Io(io::Error),
}

impl Trouble {
    /// Its reason in the session error counters.
    fn reason(&self) -> SessionError {
        match self {
            Self::LineTooLong | Self::TooManyAttributes => SessionError::Oversized,
            Self::Malformed(_) => SessionError::Protocol,
            Self::Slow(_) => SessionError::Timeout,
            Self::Truncated | Self::Io(_) => SessionError::Io,
        }
    }
}

impl Display for Trouble {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong => write!(f, "an attribute line longer than {MAX_LINE} bytes"),
            Self::TooManyAttributes => write!(f, "more than {MAX_ATTRIBUTES} attributes"),
            Self::Malformed(line) => write!(f, "not a name=value line: {}", quote(line)),
            Self::Truncated => f.write_str("the peer closed the connection in mid-request"),
            Self::Slow(limit) => write!(
                f,
                "the request was not complete after {} (idle_timeout)",
                humantime::format_duration(*limit)
            ),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The attributes of a request that the decision and the log use; the rest are ignored,
/// as the protocol asks. A repeated attribute keeps its last value.
#[derive(Debug, Default)]
struct Request {
    request: String,
    protocol_state: String,
    helo_name: String,
    client_address: String,
    server_address: String,
    recipient: String,
    sasl_username: String,
    queue_id: String,
    /// One message delivery: the same for the requests about its recipients.
    instance: String,
}

/// What a request is answered, besides the log line.
enum Answer {
    Dunno,
    Refuse(Reply),
    /// `PREPEND` the tag header with this value, once per message.
    Tag(String),
}

impl Request {
    /// Empties every attribute, keeping the allocations for the next request.
    fn clear(&mut self) {
        for field in [
            &mut self.request,
            &mut self.protocol_state,
            &mut self.helo_name,
            &mut self.client_address,
            &mut self.server_address,
            &mut self.recipient,
            &mut self.sasl_username,
            &mut self.queue_id,
            &mut self.instance,
        ] {
            field.clear();
        }
    }

    fn set(&mut self, name: &[u8], value: &[u8]) {
        let field = match name {
            b"request" => &mut self.request,
            b"protocol_state" => &mut self.protocol_state,
            b"helo_name" => &mut self.helo_name,
            b"client_address" => &mut self.client_address,
            b"server_address" => &mut self.server_address,
            b"recipient" => &mut self.recipient,
            b"sasl_username" => &mut self.sasl_username,
            b"queue_id" => &mut self.queue_id,
            b"instance" => &mut self.instance,
            _ => return,
        };
        field.clear();
        // Not UTF-8 (a client's Latin-1 HELO, say): the replacement character keeps
        // it from matching any name, and `quote` escapes it in the log.
        field.push_str(&String::from_utf8_lossy(value));
    }
}

/// Reads one request's lines into `request`. `false`: the peer closed the connection
/// cleanly before it.
async fn read_request<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    request: &mut Request,
) -> Result<bool, Trouble> {
    request.clear();
    let mut attributes = 0;
    loop {
        line.clear();
        let n = (&mut *reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', line)
            .await
            .map_err(Trouble::Io)?;
        if n == 0 {
            return if attributes == 0 {
                Ok(false)
            } else {
                Err(Trouble::Truncated)
            };
        }
        let Some(content) = line.strip_suffix(b"\n") else {
            return Err(if n >= MAX_LINE {
                Trouble::LineTooLong
            } else {
                Trouble::Truncated
            });
        };
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return if attributes == 0 {
                // An empty request: nothing to answer, and it cannot be Postfix.
                Err(Trouble::Malformed(String::new()))
            } else {
                Ok(true)
            };
        }
        attributes += 1;
        if attributes > MAX_ATTRIBUTES {
            return Err(Trouble::TooManyAttributes);
        }
        let split = content.iter().position(|&b| b == b'=');
        match split {
            Some(at) if at > 0 && !content.contains(&0) => {
                request.set(&content[..at], &content[at + 1..]);
            }
            _ => {
                return Err(Trouble::Malformed(
                    String::from_utf8_lossy(content).into_owned(),
                ))
            }
        }
    }
}

impl Service {
    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: &str,
        mut stop: watch::Receiver<bool>,
    ) {
        // Requests and answers alternate: one buffered stream serves both ways.
        let mut stream = BufReader::with_capacity(MAX_LINE, stream);
        let mut line = Vec::with_capacity(256);
        let mut request = Request::default();
        // The `instance` (one message) that got its header on this connection: Postfix
        // asks about all the recipients of a message over one connection.
        let mut tagged = String::new();
        let idle = self.limits.idle_timeout;
        loop {
            // Between requests: wait for the next one, or close on stop or when idle.
            let idle_deadline = tokio::time::Instant::now() + idle;
            let ready = select! {
                biased;
                ready = timeout_at(idle_deadline, stream.fill_buf()) => ready,
                _ = stop.wait_for(|stopped| *stopped) => return,
            };
            match ready {
                Ok(Ok([])) => return,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    debug!(
                        "event=policy_connection peer={peer} closed error={:?}",
                        e.to_string()
                    );
                    return;
                }
                Err(_) => {
                    debug!(
                        "event=policy_connection peer={peer} closed idle_for={}",
                        humantime::format_duration(idle)
                    );
                    return;
                }
            }
            // A request under way is read to its end and answered, even while stopping.
            // Its first bytes are here: the RCPT answer time counts from now.
            let arrived = Instant::now();
            let deadline = tokio::time::Instant::now() + idle;
            let read = read_request(&mut stream, &mut line, &mut request);
            match timeout_at(deadline, read).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return,
                Ok(Err(trouble)) => return self.trouble(peer, &trouble),
                Err(_) => return self.trouble(peer, &Trouble::Slow(idle)),
            }
            let answer = self.answer(&request, &mut tagged);
            let written = async {
                stream.write_all(&answer).await?;
                stream.flush().await
            };
            if let Err(e) = written.await {
                return self.trouble(peer, &Trouble::Io(e));
            }
            if request.protocol_state.eq_ignore_ascii_case("RCPT") {
                self.shared.stats.answered(FrontEnd::Policy, arrived);
            }
        }
    }

    /// The protocol's rule on trouble: no answer, a warning, and the connection closed.
    fn trouble(&self, peer: &str, trouble: &Trouble) {
        self.shared
            .stats
            .session_error(FrontEnd::Policy, trouble.reason());
        warn!(
            "event=policy_request result=closed peer={peer} error={:?} (no answer; Postfix retries, then applies smtpd_policy_service_default_action)",
            trouble.to_string()
        );
    }

    /// The `action=...` answer to a complete request; `tagged` is the message instance
    /// that this connection has prepended the tag header to.
    fn answer(&self, request: &Request, tagged: &mut String) -> Cow<'static, [u8]> {
        if request.request != "smtpd_access_policy" {
            if !self.warned_request.swap(true, Ordering::Relaxed) {
                warn!(
                    "event=policy_request request={} answered=DUNNO expected request=smtpd_access_policy (logged once)",
                    quote(&request.request)
                );
            }
            return Cow::Borrowed(DUNNO);
        }
        if !request.protocol_state.eq_ignore_ascii_case("RCPT") {
            if !self.warned_state.swap(true, Ordering::Relaxed) {
                warn!(
                    "event=policy_request protocol_state={} answered=DUNNO the policy service decides at RCPT only: put check_policy_service in smtpd_recipient_restrictions, not in another restriction list (logged once)",
                    quote(&request.protocol_state)
                );
            }
            return Cow::Borrowed(DUNNO);
        }
        // Per request: a reload applies from the next request on, also on the long-lived
        // connections that Postfix keeps open.
        let policy = self.shared.policy();
        let conn = self.connection_facts(request);
        let rcpt = Recipient::parse(&request.recipient);
        let verdict = decide(&policy, &conn, &rcpt);
        self.shared.stats.count(FrontEnd::Policy, &verdict);
        match self.act(&policy, &conn, request, &rcpt, &verdict) {
            Answer::Dunno => Cow::Borrowed(DUNNO),
            Answer::Refuse(reply) => Cow::Owned(format!("action={reply}\n\n").into_bytes()),
            // One header per message, as the milter adds it: the rule is the HELO's, the
            // same for every recipient it matches.
            Answer::Tag(_) if !request.instance.is_empty() && *tagged == request.instance => {
                Cow::Borrowed(DUNNO)
            }
            Answer::Tag(value) => {
                tagged.clone_from(&request.instance);
                Cow::Owned(format!("action=PREPEND {}: {value}\n\n", TagHeader::NAME).into_bytes())
            }
        }
    }

    /// What the milter gathers from macros and callbacks, from the attributes.
    fn connection_facts(&self, request: &Request) -> Connection {
        let mut conn = Connection {
            // Postfix sends an empty helo_name when the client did not greet.
            helo: (!request.helo_name.is_empty()).then(|| Helo::parse(&request.helo_name)),
            client: parse_macro_ip(&request.client_address).map(|ip| ip.to_canonical()),
            local: Vec::new(),
            server_name: self.host_name.clone(),
            authenticated: !request.sasl_username.is_empty(),
        };
        if let Some(ip) = parse_macro_ip(&request.server_address) {
            conn.add_local(ip);
        }
        conn
    }

    /// Logs the verdict as the milter does (`via=policy`); what to answer.
    fn act(
        &self,
        policy: &Policy,
        conn: &Connection,
        request: &Request,
        rcpt: &Recipient<'_>,
        verdict: &Verdict,
    ) -> Answer {
        let describe = || {
            let client = conn
                .client
                .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            let queue_id = match request.queue_id.as_str() {
                "" => String::new(),
                id => format!(" queue_id={}", quote(id)),
            };
            format!(
                "rule={} client={client} helo={} rcpt={}{queue_id}",
                verdict.rule().map_or("none", |r| r.name()),
                quote(&request.helo_name),
                quote(rcpt.address),
            )
        };
        let action = match *verdict {
            Verdict::Pass => return Answer::Dunno,
            Verdict::Exempt(_, exemption) => {
                debug!(
                    "action=accept exempt={} {} via=policy",
                    exemption.name(),
                    describe()
                );
                return Answer::Dunno;
            }
            Verdict::Tag(rule) => {
                let value = TagHeader::value(rule, &request.helo_name, conn.client);
                info!(
                    "action=tag {} header={} via=policy",
                    describe(),
                    quote(&format!("{}: {value}", TagHeader::NAME))
                );
                return Answer::Tag(value);
            }
            Verdict::Log(_) => "log",
            Verdict::Reject(_) => "reject",
            Verdict::Tempfail(_) => "tempfail",
        };
        let Some(reply) = Reply::for_verdict(verdict, policy) else {
            return Answer::Dunno;
        };
        if matches!(verdict, Verdict::Log(_)) {
            info!(
                "action={action} {} would_reply={} via=policy",
                describe(),
                quote(&reply.to_string())
            );
            return Answer::Dunno;
        }
        info!(
            "action={action} {} reply={} via=policy",
            describe(),
            quote(&reply.to_string())
        );
        Answer::Refuse(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(input: &[u8]) -> Result<Option<Request>, Trouble> {
        let mut reader = BufReader::new(input);
        let mut request = Request::default();
        let complete = read_request(&mut reader, &mut Vec::new(), &mut request).await?;
        Ok(complete.then_some(request))
    }

    #[tokio::test]
    async fn requests_and_trouble() {
        let request = parse(b"request=smtpd_access_policy\nprotocol_state=RCPT\nhelo_name=[192.0.2.1]\nrecipient=a@b\nrecipient=c@d\nx=\n\n")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(request.protocol_state, "RCPT");
        assert_eq!(request.helo_name, "[192.0.2.1]");
        assert_eq!(request.recipient, "c@d");
        let latin1 = parse(b"helo_name=b\xfccher.example\r\n\r\n")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latin1.helo_name, "b\u{fffd}cher.example");
        assert!(parse(b"").await.unwrap().is_none());
        for (input, expected) in [
            (&b"request=x\n"[..], "mid-request"),
            (b"request=x", "mid-request"),
            (b"no equals sign\n\n", "not a name=value line"),
            (b"=value\n\n", "not a name=value line"),
            (b"a=b\0c\n\n", "not a name=value line"),
            (b"\n", "not a name=value line"),
        ] {
            let e = parse(input).await.unwrap_err().to_string();
            assert!(e.contains(expected), "{input:?}: {e}");
        }
        let long = [b"a=".as_slice(), &[b'x'; MAX_LINE], b"\n\n"].concat();
        assert!(matches!(parse(&long).await, Err(Trouble::LineTooLong)));
        let many = "a=b\n".repeat(MAX_ATTRIBUTES + 1) + "\n";
        assert!(matches!(
            parse(many.as_bytes()).await,
            Err(Trouble::TooManyAttributes)
        ));
    }
}
