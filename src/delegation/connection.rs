//! One policy connection: requests read and answered in turn until Postfix closes it,
//! it stays idle too long, the service stops, or a request is bad (then, as the protocol
//! asks, no answer, a warning and the connection closed).

use super::{
    request::{read_request, Request, Trouble, MAX_LINE},
    Service,
};
use crate::{dns::session::Recent, stats::FrontEnd};
use log::{debug, warn};
use std::time::Instant;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    select,
    sync::watch,
    time::timeout_at,
};

impl Service {
    pub(super) async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: &str,
        mut stop: watch::Receiver<bool>,
    ) {
        // Requests and answers alternate: one buffered stream serves both ways.
        let mut stream = BufReader::with_capacity(MAX_LINE, stream);
        let mut line = Vec::with_capacity(256);
        let mut request = Request::default();
        let mut lookups = Recent::default();
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
            let dns = self.dns_for(&request, &mut lookups).await;
            let answer = self.answer(&request, dns);
            let written = async {
                stream.write_all(&answer).await?;
                stream.flush().await
            };
            if let Err(e) = written.await {
                return self.trouble(peer, &Trouble::Io(e));
            }
            if request.protocol_state.eq_ignore_ascii_case("RCPT") {
                self.shared.stats.answered(FrontEnd::PolicyService, arrived);
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
