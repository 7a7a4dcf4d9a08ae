//! One policy connection: requests read and answered in turn until Postfix closes it,
//! it stays idle too long, the service stops, or a request is bad (then, as the protocol
//! asks, no answer, a warning and the connection closed).

use super::{
    reader::BurstReader,
    request::{read_request, Request, Trouble},
    Service,
};
use crate::{dns::session::Recent, stats::FrontEnd};
use indymilter::EitherStream;
use log::{debug, warn};
use std::{io, time::Instant};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpStream, UnixStream},
    select,
    sync::watch,
    time::timeout_at,
};

/// A policy connection's socket.
pub(super) type PolicyStream = EitherStream<TcpStream, UnixStream>;

/// Waits until the socket has something to read (or its end), without a buffer. The
/// `poll_read_ready` of a stream costs less than its `readable`, which takes a lock to
/// queue its waker; the connection's one task is the stream's only reader.
async fn readable(stream: &PolicyStream) -> io::Result<()> {
    std::future::poll_fn(|cx| match stream {
        EitherStream::Tcp(tcp) => tcp.poll_read_ready(cx),
        EitherStream::Unix(unix) => unix.poll_read_ready(cx),
    })
    .await
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
        let mut lookups = Recent::default();
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
            // A buffer only from here: an idle connection holds none.
            let mut reader = BurstReader::new(&mut stream);
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
                let dns = self.dns_for(&request, &mut lookups).await;
                let answer = self.answer(&request, dns);
                if let Err(e) = reader.get_mut().write_all(&answer).await {
                    return self.trouble(peer, &Trouble::Io(e));
                }
                if request.protocol_state.eq_ignore_ascii_case("RCPT") {
                    self.shared.stats.answered(FrontEnd::PolicyService, arrived);
                }
                // Postfix waits for the answer before its next request; a client that
                // sent more already has it read from the buffer, which is kept for it.
                if !reader.has_buffered() {
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
