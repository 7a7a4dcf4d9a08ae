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
/// directly rather than when the listener is next polled. A socket from systemd is
/// never shut: it is the same socket systemd holds, and the connections that arrive
/// meanwhile wait in its queue for the next instance.
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
    /// The socket to shut at stop: `None` for a socket from systemd.
    fd: Option<RawFd>,
    stopped: Arc<AtomicBool>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(fd) = self.fd {
            // The listener still owns the descriptor (it is dropped only with the
            // listener), so this is the listening socket: new connections are refused
            // from now on.
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }
}

/// Where the listening socket comes from, which decides how a stop treats it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Origin {
    /// Bound by the milter itself (`socket` in milter.conf), shut at stop.
    Bound,
    /// Passed by systemd (socket activation), left open at stop.
    Systemd,
}

const ACCEPT_RETRY: Duration = Duration::from_millis(100);
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(10);

impl StoppableListener {
    pub fn new(inner: Listener, origin: Origin) -> (Self, StopHandle) {
        let fd = match &inner {
            EitherListener::Tcp(listener) => listener.as_raw_fd(),
            EitherListener::Unix(listener) => listener.as_raw_fd(),
        };
        let stopped = Arc::new(AtomicBool::new(false));
        let handle = StopHandle {
            fd: (origin == Origin::Bound).then_some(fd),
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

impl QuickAckStream {
    /// The plain connection, for a protocol whose every request gets an answer (the
    /// policy service's): the answer carries the ACK, and the option would cost a system
    /// call per read.
    pub fn into_inner(self) -> TcpStream {
        self.0
    }
}

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
    type Err = String;

    /// Accepts `inet:HOST:PORT`, Sendmail's `inet:PORT@HOST`, `inet6:` likewise, and
    /// `unix:PATH` or `local:PATH`. HOST is an IP address (or `localhost`); an IPv6 one
    /// may be in brackets.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str =
            "expected inet:HOST:PORT (inet:127.0.0.1:8895), inet:PORT@HOST or unix:/PATH";
        let (kind, rest) = s.split_once(':').ok_or(EXPECTED)?;
        match kind.to_ascii_lowercase().as_str() {
            "unix" | "local" => {
                let path = PathBuf::from(rest);
                if !rest.starts_with('/') {
                    Err("a unix socket needs an absolute path, as in unix:/run/bogus-helo-milter/milter.sock".into())
                } else if path.file_name().is_none() || rest.ends_with('/') {
                    Err("the path names a directory, not a socket file; as in unix:/run/bogus-helo-milter/milter.sock".into())
                } else if rest.len() > 107 {
                    // sun_path holds 108 bytes with the terminating NUL.
                    Err("a unix socket path may be at most 107 bytes long".into())
                } else {
                    Ok(Self::Unix(path))
                }
            }
            "inet" | "inet6" => parse_inet(rest).map(Self::Inet),
            _ => Err(EXPECTED.into()),
        }
    }
}

fn parse_inet(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = match s.split_once('@') {
        Some((port, host)) => (host, port),
        None => match s.rsplit_once(':') {
            // `[::1]:8895`, `127.0.0.1:8895`; a bare IPv6 address has colons but no port.
            Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
                (host, port)
            }
            _ if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() => {
                return Err(format!(
                    "no address to listen on; name one, as in inet:127.0.0.1:{s} (loopback) or inet:0.0.0.0:{s} (every address)"
                ))
            }
            _ => return Err("expected inet:HOST:PORT, as in inet:127.0.0.1:8895 or inet:[::1]:8895".into()),
        },
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        host => host.parse().map_err(|_| {
            format!("{host:?} is not an IP address; the milter listens on an address, not a host name (inet:127.0.0.1:PORT, inet:[::1]:PORT)")
        })?,
    };
    let port = match port.parse::<u32>() {
        Ok(port @ 1..=65535) => port as u16,
        Ok(_) => return Err(format!("port {port} is out of range: expected 1 to 65535")),
        Err(_) => return Err(format!("{port:?} is not a port number (1 to 65535)")),
    };
    Ok(SocketAddr::new(ip, port))
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

/// A bound socket: the listener, and for a unix socket the file that is ours to remove.
pub struct Bound {
    pub listener: Listener,
    pub unix_file: Option<SocketFile>,
}

/// A unix socket file that this process created, known by its inode: another instance
/// that replaced it owns the path now, and its file must be left alone.
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Removes the file at shutdown, so that the MTA sees the milter is gone; only if it
    /// is still the one this process made.
    pub fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                let _ = fs::remove_file(&self.path);
            }
            _ => warn!(
                "event=stop socket=unix:{} another process has replaced the socket file; left in place",
                self.path.display()
            ),
        }
    }
}

/// Why a socket cannot be bound, in words for the administrator.
#[derive(Debug)]
pub enum BindError {
    /// Another process answers on the unix socket: a second instance, most likely.
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    NotASocket(PathBuf),
    Io(io::Error),
}

impl Display for BindError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::InUse(path) => write!(
                f,
                "another process is listening on {} (a second bogus-helo-milter?); stop it first or choose another socket",
                path.display()
            ),
            Self::NotASocket(path) => write!(
                f,
                "{} exists and is not a socket; refusing to replace it (remove it, or choose another path)",
                path.display()
            ),
            Self::Io(e) if e.kind() == io::ErrorKind::AddrInUse => {
                write!(f, "{e}: another process listens on this address and port")
            }
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for BindError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl Socket {
    pub fn bind(&self, unix: UnixPermissions) -> Result<Bound, BindError> {
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
                Ok(Bound {
                    listener: EitherListener::Tcp(socket.listen(LISTEN_BACKLOG)?),
                    unix_file: None,
                })
            }
            Self::Unix(path) => {
                use std::os::unix::fs::MetadataExt;
                // A socket file left by an earlier run would make bind fail; one on which
                // a process still answers belongs to a live milter and stays.
                if let Ok(meta) = fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(BindError::NotASocket(path.clone()));
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(BindError::InUse(path.clone()));
                    }
                    fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                let meta = fs::symlink_metadata(path)?;
                let file = SocketFile {
                    path: path.clone(),
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                let set_permissions = || -> io::Result<()> {
                    if let Some(gid) = unix.group {
                        std::os::unix::fs::chown(path, None, Some(gid))?;
                    }
                    fs::set_permissions(path, fs::Permissions::from_mode(unix.mode))
                };
                if let Err(e) = set_permissions() {
                    file.remove();
                    return Err(e.into());
                }
                Ok(Bound {
                    listener: EitherListener::Unix(listener),
                    unix_file: Some(file),
                })
            }
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
        for (bad, problem) in [
            ("", "expected inet:HOST:PORT"),
            ("8895", "expected inet:HOST:PORT"),
            ("inet:", "expected inet:HOST:PORT"),
            ("inet:127.0.0.1", "expected inet:HOST:PORT"),
            ("inet:8895", "no address to listen on"),
            ("inet:127.0.0.1:99999", "port 99999 is out of range"),
            ("inet:127.0.0.1:0", "port 0 is out of range"),
            ("inet:0@127.0.0.1", "port 0 is out of range"),
            ("inet:127.0.0.1:x", "\"x\" is not a port number"),
            ("inet:mx.example.com:8895", "not an IP address"),
            ("inet:host.example:25", "not an IP address"),
            ("unix:rel", "absolute path"),
            ("unix:/", "names a directory"),
            ("unix:/run/", "names a directory"),
            ("tcp:1@x", "expected inet:HOST:PORT"),
        ] {
            let e = bad.parse::<Socket>().unwrap_err();
            assert!(e.contains(problem), "{bad}: {e}");
        }
    }
}
