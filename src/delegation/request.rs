//! The wire protocol of Postfix's policy delegation: reading one request, a bounded
//! series of `name=value` lines ended by an empty line, and what can go wrong on the way.

use crate::{logging::quote, stats::SessionError};
use std::{
    fmt::{self, Display, Formatter},
    io,
    time::Duration,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest attribute line accepted, newline included. Postfix's longest values
/// (a HELO or an address, at most `smtpd_line_limit`, 2048 bytes; xtext-encoded
/// certificate names) stay well below it.
pub const MAX_LINE: usize = 8192;

/// The most attributes in one request; Postfix 3.7 sends about 30.
pub const MAX_ATTRIBUTES: usize = 256;

/// Why a connection is closed without an answer.
#[derive(Debug)]
pub(super) enum Trouble {
    LineTooLong,
    TooManyAttributes,
    /// A line without `=`, or with a NUL byte.
    Malformed(String),
    /// The peer closed the connection in the middle of a request.
    Truncated,
    /// The request was not complete within `policy_idle_timeout` of its first byte.
    Slow(Duration),
    Io(io::Error),
}

impl Trouble {
    /// Its reason in the session error counters.
    pub(super) fn reason(&self) -> SessionError {
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
                "the request was not complete after {} (policy_idle_timeout)",
                humantime::format_duration(*limit)
            ),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The attributes of a request that the decision and the log use; the rest are ignored,
/// as the protocol asks. A repeated attribute keeps its last value.
#[derive(Debug, Default)]
pub(super) struct Request {
    pub(super) request: String,
    pub(super) protocol_state: String,
    pub(super) helo_name: String,
    pub(super) client_address: String,
    pub(super) server_address: String,
    pub(super) recipient: String,
    pub(super) sasl_username: String,
    pub(super) queue_id: String,
    /// One message delivery: the same for the requests about its recipients.
    pub(super) instance: String,
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
pub(super) async fn read_request<R: AsyncBufRead + Unpin>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

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
