//! A small SMTP client for the end-to-end tests: it greets with a chosen name, sends one
//! message to several recipients and records every reply, code and text.

use std::{fmt, io, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    time::timeout,
};

/// How long to wait for any one reply. Milter timeouts in the MTAs are shorter.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// One SMTP reply, possibly multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// The whole reply as the client saw it, one line per line (`550 5.7.1 text`).
    pub fn full(&self) -> String {
        let last = self.lines.len().saturating_sub(1);
        self.lines
            .iter()
            .enumerate()
            .map(|(n, l)| format!("{}{}{}", self.code, if n == last { ' ' } else { '-' }, l))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last line as `code text`.
    pub fn line(&self) -> String {
        format!(
            "{} {}",
            self.code,
            self.lines.last().map(String::as_str).unwrap_or("")
        )
    }

    /// The reply as a milter wrote it, whatever the MTA wraps around it:
    /// `550 5.7.1 bogus helo` from Postfix's `550 5.7.1 bogus helo` and from
    /// Sendmail's `550 5.7.1 <rcpt@example.com>... bogus helo`.
    pub fn milter_form(&self) -> String {
        let text = self.lines.last().map(String::as_str).unwrap_or("");
        let (status, rest) = match text.split_once(' ') {
            Some((status, rest)) if is_enhanced_status(status) => (Some(status), rest),
            _ => (None, text),
        };
        let rest = match rest.strip_prefix('<').and_then(|r| r.split_once(">... ")) {
            Some((_, after)) => after,
            None => rest,
        };
        match status {
            Some(status) => format!("{} {status} {rest}", self.code),
            None => format!("{} {rest}", self.code),
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full())
    }
}

fn is_enhanced_status(s: &str) -> bool {
    let parts: Vec<_> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A connection to an SMTP server. Every command and reply is kept in `transcript`.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pub transcript: Vec<String>,
}

impl Client {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> io::Result<(Self, Reply)> {
        let stream = timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let (read, write) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer: write,
            transcript: vec![format!("(connect to {addr})")],
        };
        let greeting = client.read_reply().await?;
        Ok((client, greeting))
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "reply timed out"))??;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed; transcript:\n{}",
                        self.transcript.join("\n")
                    ),
                ));
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            self.transcript.push(format!("S: {line}"));
            let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"));
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            let (more, text) = match line.as_bytes().get(3) {
                Some(b'-') => (true, &line[4..]),
                Some(b' ') => (false, &line[4..]),
                None => (false, ""),
                Some(_) => return Err(bad()),
            };
            lines.push(text.to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.transcript.push(format!("C: {line}"));
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.read_reply().await
    }

    /// Sends DATA and, after a 354, the message and the final dot.
    pub async fn data(&mut self, message: &str) -> io::Result<Reply> {
        let reply = self.command("DATA").await?;
        if reply.code != 354 {
            return Ok(reply);
        }
        let mut body = String::new();
        for line in message.lines() {
            if line.starts_with('.') {
                body.push('.');
            }
            body.push_str(line);
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        self.transcript
            .push(format!("C: ({} bytes of message)", body.len()));
        self.writer.write_all(body.as_bytes()).await?;
        self.read_reply().await
    }

    pub async fn quit(mut self) -> Vec<String> {
        let _ = self.command("QUIT").await;
        self.transcript
    }
}

/// The greeting verb to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Ehlo,
    Helo,
}

/// One SMTP session: greet, one message, recipients, optionally DATA.
#[derive(Clone, Debug)]
pub struct Session {
    pub verb: Verb,
    pub helo: String,
    pub from: String,
    pub rcpts: Vec<String>,
    /// Send the message when at least one recipient was accepted.
    pub send_data: bool,
    /// Header lines of the message besides From, To, Subject and Message-ID.
    pub headers: Vec<String>,
}

impl Session {
    pub fn new(helo: &str, rcpts: &[&str]) -> Self {
        Self {
            verb: Verb::Ehlo,
            helo: helo.to_string(),
            from: "sender@example.net".to_string(),
            rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
            send_data: false,
            headers: Vec::new(),
        }
    }

    pub fn helo_verb(mut self) -> Self {
        self.verb = Verb::Helo;
        self
    }

    pub fn with_data(mut self) -> Self {
        self.send_data = true;
        self
    }

    /// Sends the message with this header line (`Name: value`) too.
    pub fn with_header(mut self, line: &str) -> Self {
        self.send_data = true;
        self.headers.push(line.to_string());
        self
    }

    /// Runs the session against `addr` and records every reply. Like a real client, it
    /// stops the transaction at the first refused step before RCPT (greeting, HELO, MAIL).
    pub async fn run(&self, addr: SocketAddr) -> io::Result<Outcome> {
        let (mut client, greeting) = Client::connect(addr).await?;
        let mut outcome = Outcome {
            greeting,
            helo: None,
            mail: None,
            rcpts: Vec::new(),
            data: None,
            message_id: String::new(),
            transcript: Vec::new(),
        };
        if outcome.greeting.code == 220 {
            let verb = match self.verb {
                Verb::Ehlo => "EHLO",
                Verb::Helo => "HELO",
            };
            let helo = client.command(&format!("{verb} {}", self.helo)).await?;
            let helo_ok = helo.code == 250;
            outcome.helo = Some(helo);
            if helo_ok {
                let mail = client
                    .command(&format!("MAIL FROM:<{}>", self.from))
                    .await?;
                let mail_ok = mail.code == 250;
                outcome.mail = Some(mail);
                if mail_ok {
                    for rcpt in &self.rcpts {
                        let reply = client.command(&format!("RCPT TO:<{rcpt}>")).await?;
                        outcome.rcpts.push((rcpt.clone(), reply));
                    }
                    let any_accepted = outcome.rcpts.iter().any(|(_, r)| r.is_positive());
                    if self.send_data && any_accepted {
                        let id = unique_message_id();
                        let extra: String = self.headers.iter().map(|h| format!("{h}\n")).collect();
                        let message = format!(
                            "From: <{}>\nTo: <{}>\nSubject: bogus-helo-milter e2e\nMessage-ID: <{id}>\n{extra}\nHello from the end-to-end tests.\n",
                            self.from,
                            self.rcpts.join(">, <"),
                        );
                        outcome.data = Some(client.data(&message).await?);
                        outcome.message_id = id;
                    } else {
                        let _ = client.command("RSET").await?;
                    }
                }
            }
        }
        outcome.transcript = client.quit().await;
        Ok(outcome)
    }
}

fn unique_message_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("e2e.{}.{nanos}.{n}@example.net", std::process::id())
}

/// What the client saw in one session.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub greeting: Reply,
    pub helo: Option<Reply>,
    pub mail: Option<Reply>,
    pub rcpts: Vec<(String, Reply)>,
    pub data: Option<Reply>,
    /// The Message-ID header sent with DATA, if any.
    pub message_id: String,
    pub transcript: Vec<String>,
}

impl Outcome {
    /// The reply to `RCPT TO:<rcpt>`.
    pub fn rcpt(&self, rcpt: &str) -> Option<&Reply> {
        self.rcpts
            .iter()
            .find(|(r, _)| r == rcpt)
            .map(|(_, reply)| reply)
    }

    /// Every reply the server gave, in order.
    pub fn replies(&self) -> Vec<&Reply> {
        let mut all = vec![&self.greeting];
        all.extend(self.helo.iter());
        all.extend(self.mail.iter());
        all.extend(self.rcpts.iter().map(|(_, r)| r));
        all.extend(self.data.iter());
        all
    }

    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }
}
