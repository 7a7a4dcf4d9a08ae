//! One policy connection: requests read and answered in turn until Postfix closes it,
//! it stays idle too long, the service stops, or a request is bad (then, as the protocol
//! asks, no answer, a warning and the connection closed).

use super::{
    request::{read_request, Request, Trouble},
    Service,
};
use crate::stats::FrontEnd;
use indymilter::EitherStream;
use log::{debug, warn};
use std::{io, time::Instant};
use tokio::{
    io::{AsyncWriteExt, BufReader},
    net::{TcpStream, UnixStream},
    select,
    sync::watch,
    time::timeout_at,
};

/// A policy connection's socket.
pub(super) type PolicyStream = EitherStream<TcpStream, UnixStream>;

/// The read buffer of a request: Postfix's requests (some 30 attributes, 1 KiB or so)
/// fit in one read; a longer one takes more. It exists only while a request is read:
/// Postfix keeps a connection open between requests, and an idle one holds no buffer.
const REQUEST_BUFFER: usize = 4096;

/// Waits until the socket has something to read (or its end), without a buffer.
async fn readable(stream: &PolicyStream) -> io::Result<()> {
    match stream {
        EitherStream::Tcp(tcp) => tcp.readable().await,
        EitherStream::Unix(unix) => unix.readable().await,
    }
}

impl Service {
    pub(super) async fn connection(
        &self,
        mut stream: PolicyStream,
        peer: &str,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut line = Vec::with_capacity(256);
        let mut request = Request::default();
        let idle = self.limits.idle_timeout;
        loop {
            // Between requests: wait for the next one, or close on stop or when idle.
            let idle_deadline = tokio::time::Instant::now() + idle;
            let ready = select! {
                biased;
                ready = timeout_at(idle_deadline, readable(&stream)) => ready,
                _ = stop.wait_for(|stopped| *stopped) => return,
            };
            match ready {
                Ok(Ok(())) => {}
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
            let mut reader = BufReader::with_capacity(REQUEST_BUFFER, &mut stream);
            loop {
                // A request under way is read to its end and answered, even while
                // stopping. Its first bytes are here: the RCPT answer time counts from now.
                let arrived = Instant::now();
                let deadline = tokio::time::Instant::now() + idle;
                let read = read_request(&mut reader, &mut line, &mut request);
                match timeout_at(deadline, read).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => return,
                    Ok(Err(trouble)) => return self.trouble(peer, &trouble),
                    Err(_) => return self.trouble(peer, &Trouble::Slow(idle)),
                }
                let answer = self.answer(&request);
                if let Err(e) = reader.get_mut().write_all(&answer).await {
                    return self.trouble(peer, &Trouble::Io(e));
                }
                if request.protocol_state.eq_ignore_ascii_case("RCPT") {
                    self.shared.stats.answered(FrontEnd::PolicyService, arrived);
                }
                // Postfix waits for the answer before its next request; a client that
                // sent more already has it read from the buffer, which is kept for it.
                if reader.buffer().is_empty() {
                    break;
                }
                if *stop.borrow() {
                    return;
                }
            }
        }
    }

    /// The protocol's rule on trouble: no answer, a warning, and the connection closed.
    fn trouble(&self, peer: &str, trouble: &Trouble) {
        self.shared
            .stats
            .session_error(FrontEnd::PolicyService, trouble.reason());
        warn!(
            "event=policy_request result=closed peer={peer} error={:?} (no answer; Postfix retries, then applies smtpd_policy_service_default_action)",
            trouble.to_string()
        );
    }
}
