//! The milter's listening socket: its `milter.conf` spelling and how it is bound.

use indymilter::{EitherListener, EitherStream};
use log::warn;
use socket2::SockRef;
use std::{
    fmt::{self, Display, Formatter},
    fs,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::PathBuf,
    pin::Pin,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream},
    time::{sleep, Sleep},
};

pub type Listener = EitherListener<TcpListener, UnixListener>;

/// A listener whose socket can be shut from outside (`StopHandle`), so that the MTA's new
/// connections are refused at once while the sessions in progress go on. indymilter
/// polls the listener only while it has a free connection slot, so the socket is shut
/// directly rather than when the listener is next polled.
///
/// A failed accept (out of file descriptors, say) is logged and retried a moment later:
/// indymilter would otherwise end the whole milter on it.
pub struct StoppableListener {
    inner: Listener,
    stopped: Arc<AtomicBool>,
    retry: Option<Pin<Box<Sleep>>>,
    last_warning: Option<Instant>,
}

/// Stops a `StoppableListener`; valid for as long as the listener lives.
pub struct StopHandle {
    fd: RawFd,
    stopped: Arc<AtomicBool>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        // The listener still owns the descriptor (it is dropped only with the listener),
        // so this is the listening socket: new connections are refused from now on.
        let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Both);
    }
}

const ACCEPT_RETRY: Duration = Duration::from_millis(100);
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(10);

impl StoppableListener {
    pub fn new(inner: Listener) -> (Self, StopHandle) {
        let fd = match &inner {
            EitherListener::Tcp(listener) => listener.as_raw_fd(),
            EitherListener::Unix(listener) => listener.as_raw_fd(),
        };
        let stopped = Arc::new(AtomicBool::new(false));
        let handle = StopHandle {
            fd,
            stopped: stopped.clone(),
        };
        let listener = Self {
            inner,
            stopped,
            retry: None,
            last_warning: None,
        };
        (listener, handle)
    }

    fn accept_failed(&mut self, error: &io::Error) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|last| now - last >= ACCEPT_WARNING_EVERY)
        {
            warn!(
                "event=accept error={:?} retrying; new connections wait",
                error.to_string()
            );
            self.last_warning = Some(now);
        }
        self.retry = Some(Box::pin(sleep(ACCEPT_RETRY)));
    }
}

impl indymilter::Listener for StoppableListener {
    type Io = EitherStream<QuickAckStream, UnixStream>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        loop {
            // Once stopped, accept nothing more: the milter is draining.
            if self.stopped.load(Ordering::Acquire) {
                return Poll::Pending;
            }
            if let Some(retry) = &mut self.retry {
                ready!(retry.as_mut().poll(cx));
                self.retry = None;
            }
            match ready!(self.inner.poll_accept(cx)) {
                Ok(EitherStream::Tcp(tcp)) => {
                    return Poll::Ready(Ok(EitherStream::Tcp(QuickAckStream(tcp))))
                }
                Ok(EitherStream::Unix(unix)) => return Poll::Ready(Ok(EitherStream::Unix(unix))),
                Err(e) => self.accept_failed(&e),
            }
        }
    }
}

/// A TCP connection that acknowledges every packet from the MTA at once.
///
/// The MTA sends some packets that get no reply: macro definitions, and the stages for
/// which the milter negotiated "no reply" (connect, HELO, MAIL). Linux would delay the
/// ACK for such a packet by up to 40 ms, waiting for a reply to carry it; meanwhile the
/// MTA's next small packet waits for that ACK (Nagle's algorithm on the MTA's side,
/// which Postfix and Sendmail leave on). Measured behind Postfix 3.7, that is ~40 ms per
/// message. TCP_QUICKACK is not sticky, so it is set again after every read.
pub struct QuickAckStream(TcpStream);

impl AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // Only a hint to the kernel: a failure costs at most a delayed ACK.
            let _ = SockRef::from(&self.0).set_tcp_quickack(true);
        }
        result
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Deep enough that a burst of new SMTP sessions is queued by the kernel rather than
/// dropped (tokio's own `TcpListener::bind` uses 128, and clients then retry after 1 s).
const LISTEN_BACKLOG: u32 = 4096;

#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Socket {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Socket {
    type Err = &'static str;

    /// Accepts `inet:HOST:PORT`, Sendmail's `inet:PORT@HOST`, `inet6:` likewise, and
    /// `unix:PATH` or `local:PATH`. HOST is an IP address; an IPv6 one may be in brackets.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected inet:HOST:PORT, inet:PORT@HOST or unix:/PATH";
        let (kind, rest) = s.split_once(':').ok_or(EXPECTED)?;
        match kind.to_ascii_lowercase().as_str() {
            "unix" | "local" => {
                if rest.starts_with('/') {
                    Ok(Self::Unix(PathBuf::from(rest)))
                } else {
                    Err("a unix socket needs an absolute path, as in unix:/run/bogus-helo-milter/milter.sock")
                }
            }
            "inet" | "inet6" => parse_inet(rest).map(Self::Inet).ok_or(EXPECTED),
            _ => Err(EXPECTED),
        }
    }
}

fn parse_inet(s: &str) -> Option<SocketAddr> {
    let (host, port) = match s.split_once('@') {
        Some((port, host)) => (host, port),
        None => s.rsplit_once(':')?,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        host => host.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

impl Display for Socket {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(addr) => write!(f, "inet:{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Who may connect to a unix socket: its mode, and optionally its group.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct UnixPermissions {
    pub mode: u32,
    pub group: Option<u32>,
}

impl Socket {
    pub fn bind(&self, unix: UnixPermissions) -> io::Result<Listener> {
        match self {
            Self::Inet(addr) => {
                let socket = match addr {
                    SocketAddr::V4(_) => TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => TcpSocket::new_v6()?,
                };
                socket.set_reuseaddr(true)?;
                // The MTA sends small packets and waits for each answer: no Nagle delay.
                socket.set_nodelay(true)?;
                socket.bind(*addr)?;
                Ok(EitherListener::Tcp(socket.listen(LISTEN_BACKLOG)?))
            }
            Self::Unix(path) => {
                // A socket file left by an earlier run would make bind fail; anything
                // that is not a socket is left alone.
                if let Ok(meta) = fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        fs::remove_file(path)?;
                    }
                }
                let listener = UnixListener::bind(path)?;
                if let Some(gid) = unix.group {
                    std::os::unix::fs::chown(path, None, Some(gid))?;
                }
                fs::set_permissions(path, fs::Permissions::from_mode(unix.mode))?;
                Ok(EitherListener::Unix(listener))
            }
        }
    }

    /// Removes a unix socket file at shutdown, so that the MTA sees the milter is gone.
    pub fn cleanup(&self) {
        if let Self::Unix(path) = self {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let inet = |s: &str| Socket::Inet(s.parse().unwrap());
        assert_eq!("inet:127.0.0.1:8895".parse(), Ok(inet("127.0.0.1:8895")));
        assert_eq!("inet:8895@127.0.0.1".parse(), Ok(inet("127.0.0.1:8895")));
        assert_eq!("inet:localhost:8895".parse(), Ok(inet("127.0.0.1:8895")));
        assert_eq!("inet6:[::1]:8895".parse(), Ok(inet("[::1]:8895")));
        assert_eq!("inet6:8895@::1".parse(), Ok(inet("[::1]:8895")));
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(Socket::Unix(PathBuf::from("/run/x.sock")))
        );
        for bad in [
            "",
            "8895",
            "inet:",
            "inet:127.0.0.1",
            "inet:host.example:25",
            "unix:rel",
            "tcp:1@x",
        ] {
            assert!(bad.parse::<Socket>().is_err(), "{bad}");
        }
    }
}
