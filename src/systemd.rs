//! What systemd hands the milter: listening sockets (socket activation, `LISTEN_FDS`)
//! and a channel for readiness (`NOTIFY_SOCKET`, `Type=notify`).
//!
//! A socket from systemd outlives the milter: while one instance stops and the next
//! starts (`systemctl restart`, a package upgrade), the MTA's new connections wait in
//! the kernel's queue instead of being refused. Each socket is matched by its
//! `FileDescriptorName=`, never by its position, so that more sockets can join.
//!
//! The policy service's socket is not in the socket unit: `policy_socket` is milter.conf's
//! alone. The milter binds it and hands a copy to systemd's file descriptor store
//! (`FDSTORE=1`, `FileDescriptorStoreMax=` in the unit), which keeps it while the service
//! restarts and passes it back to the next instance under the name `policy`, as the
//! socket unit passes the milter's.

use crate::socket::{Listener, Socket};
use indymilter::EitherListener;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use socket2::SockRef;
use std::{
    env,
    ffi::OsString,
    fmt::{self, Display, Formatter},
    fs, io,
    io::IoSlice,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::{fs::FileTypeExt, net::UnixDatagram},
    },
    path::PathBuf,
};

/// The `FileDescriptorName=` of the milter's socket in `bogus-helo-milter.socket`.
pub const MILTER_FD_NAME: &str = "milter";

/// The name under which the policy service's socket is kept in systemd's file descriptor
/// store, and passed back in `LISTEN_FDNAMES`.
pub const POLICY_FD_NAME: &str = "policy";

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// One socket passed by systemd, with its `FileDescriptorName=`.
#[derive(Debug)]
pub struct Inherited {
    pub name: String,
    fd: OwnedFd,
}

/// Takes the sockets systemd passed to this process, if any, and removes the variables
/// that describe them (they are meant for this process alone). Call once, at start,
/// before any other descriptor is opened.
pub fn take_listen_fds() -> Vec<Inherited> {
    let pid = env::var_os("LISTEN_PID");
    let count = env::var_os("LISTEN_FDS");
    let names = env::var_os("LISTEN_FDNAMES");
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        env::remove_var(var);
    }
    parse_listen_fds(pid, count, names, std::process::id())
        .into_iter()
        .map(|(name, fd)| {
            // SAFETY: systemd passed these descriptors to this very process (LISTEN_PID),
            // and nothing else in the process knows of them: each is owned once, here.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Not to be inherited by anything the milter might start.
            let _ = nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            Inherited { name, fd }
        })
        .collect()
}

/// The descriptors and names the variables describe, if they are meant for `own_pid`.
/// A descriptor without a name gets systemd's default name, `unknown`.
fn parse_listen_fds(
    pid: Option<OsString>,
    count: Option<OsString>,
    names: Option<OsString>,
    own_pid: u32,
) -> Vec<(String, i32)> {
    let for_us = pid
        .and_then(|p| p.to_str()?.trim().parse::<u32>().ok())
        .is_some_and(|p| p == own_pid);
    let count = count
        .and_then(|c| c.to_str()?.trim().parse::<u16>().ok())
        .unwrap_or(0);
    if !for_us || count == 0 {
        return Vec::new();
    }
    let names = names
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names = names.split(':');
    (0..i32::from(count))
        .map(|i| {
            let name = names.next().filter(|n| !n.is_empty()).unwrap_or("unknown");
            (name.to_owned(), LISTEN_FDS_START + i)
        })
        .collect()
}

/// Where a socket passed by systemd listens, as `milter.conf` would spell it.
#[derive(Debug, Eq, PartialEq)]
pub enum Address {
    Socket(Socket),
    /// Not a listening TCP or unix stream socket (a datagram socket, a FIFO, ...).
    Other(String),
}

impl Display for Address {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(socket) => socket.fmt(f),
            Self::Other(what) => f.write_str(what),
        }
    }
}

impl Inherited {
    pub fn address(&self) -> Address {
        let sock = SockRef::from(&self.fd);
        if !sock.is_listener().unwrap_or(false) {
            return Address::Other("not a listening socket".into());
        }
        if sock.r#type().ok() != Some(socket2::Type::STREAM) {
            return Address::Other("not a stream socket".into());
        }
        let Ok(local) = sock.local_addr() else {
            return Address::Other("no local address".into());
        };
        if let Some(addr) = local.as_socket() {
            return Address::Socket(Socket::Inet(addr));
        }
        match local.as_pathname() {
            Some(path) => Address::Socket(Socket::Unix(PathBuf::from(path))),
            None => Address::Other("an abstract or unnamed unix socket".into()),
        }
    }

    /// Hands the socket (back) to systemd's file descriptor store under its name.
    pub fn store(&self, notifier: &Notifier) -> bool {
        notifier.store(self.fd.as_fd(), &self.name)
    }

    /// The socket as the milter's listener. It stays open in systemd too: stopping must
    /// not shut it (see `StoppableListener::inherited`).
    pub fn into_listener(self) -> io::Result<Listener> {
        let listener = match self.address() {
            Address::Socket(Socket::Inet(_)) => {
                // As for a socket the milter binds: connections accepted from it inherit
                // the option (see `Socket::bind`).
                SockRef::from(&self.fd).set_tcp_nodelay(true)?;
                let std = std::net::TcpListener::from(self.fd);
                std.set_nonblocking(true)?;
                EitherListener::Tcp(tokio::net::TcpListener::from_std(std)?)
            }
            Address::Socket(Socket::Unix(_)) => {
                let std = std::os::unix::net::UnixListener::from(self.fd);
                std.set_nonblocking(true)?;
                EitherListener::Unix(tokio::net::UnixListener::from_std(std)?)
            }
            Address::Other(what) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
            }
        };
        Ok(listener)
    }
}

/// Takes the policy service's socket out of those systemd passed (`policy`, from its file
/// descriptor store), if it listens where `policy_socket` (milter.conf) says. Any other
/// one, or all when the policy service is off, is closed here with a warning; the second
/// value then says that the store holds a socket to forget (`Notifier::forget`).
pub fn policy_socket(
    inherited: &mut Vec<Inherited>,
    socket: Option<&Socket>,
) -> (Option<Inherited>, bool) {
    let (ours, rest) = std::mem::take(inherited)
        .into_iter()
        .partition(|fd| fd.name == POLICY_FD_NAME);
    *inherited = rest;
    let mut chosen = None;
    let mut stale = false;
    for fd in ours {
        let address = fd.address();
        let reason = match socket {
            None => Some("policy_socket is off in milter.conf".to_owned()),
            Some(socket) if address != Address::Socket(socket.clone()) => {
                Some(format!("milter.conf now says policy_socket={socket}"))
            }
            // A unix socket whose file is gone (its directory removed while the service
            // was stopped, say) listens where no client can reach it.
            Some(Socket::Unix(path)) if !is_socket_file(path) => {
                Some(format!("{} is no longer there", path.display()))
            }
            Some(_) if chosen.is_some() => Some("a second copy".to_owned()),
            Some(_) => None,
        };
        match reason {
            None => chosen = Some(fd),
            Some(reason) => {
                log::warn!(
                    "event=start systemd_socket={address} name={:?} served=no reason={reason:?} fdstore=forgotten",
                    fd.name
                );
                stale = true;
            }
        }
    }
    (chosen, stale)
}

fn is_socket_file(path: &std::path::Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
}

/// Picks the milter's socket among those systemd passed: the one named `milter`, if it
/// listens where `socket` (milter.conf) says. Any other is closed here, and so not
/// served, with a warning that says how to make the socket unit match.
pub fn milter_socket(inherited: Vec<Inherited>, socket: &Socket) -> Option<Inherited> {
    let wanted = Address::Socket(socket.clone());
    let mut chosen = None;
    for fd in inherited {
        let address = fd.address();
        if fd.name != MILTER_FD_NAME {
            log::warn!(
                "event=start systemd_socket={address} name={:?} served=no reason=\"no FileDescriptorName= this milter knows ({MILTER_FD_NAME}, {POLICY_FD_NAME})\"",
                fd.name
            );
        } else if address != wanted || chosen.is_some() {
            let listen = match socket {
                Socket::Inet(addr) => addr.to_string(),
                Socket::Unix(path) => path.display().to_string(),
            };
            log::warn!(
                "event=start systemd_socket={address} socket={socket} served=no hint={:?}",
                format!(
                    "milter.conf's socket is bound instead, without systemd holding it across restarts; \
                     to make the socket unit match: systemctl edit bogus-helo-milter.socket, \
                     under [Socket] the lines ListenStream= and ListenStream={listen}, \
                     then systemctl stop bogus-helo-milter.service bogus-helo-milter.socket \
                     and systemctl start bogus-helo-milter.socket bogus-helo-milter.service"
                )
            );
        } else {
            chosen = Some(fd);
        }
    }
    chosen
}

/// Messages to systemd about the milter's state (`sd_notify`); silent when the milter
/// was not started by systemd with `Type=notify`.
pub struct Notifier {
    socket: Option<UnixAddr>,
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` from the environment (it is meant for this process alone).
    pub fn from_env() -> Self {
        let path = env::var_os("NOTIFY_SOCKET");
        env::remove_var("NOTIFY_SOCKET");
        let socket = path.and_then(|path| {
            let bytes = path.as_encoded_bytes();
            match bytes.strip_prefix(b"@") {
                // An abstract socket address: `@` stands for the leading NUL byte.
                Some(name) => UnixAddr::new_abstract(name).ok(),
                None => UnixAddr::new(bytes).ok(),
            }
        });
        Self { socket }
    }

    /// The milter serves its socket.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"), &[]);
    }

    /// The milter stops accepting and finishes the sessions in progress.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=finishing the sessions in progress", &[]);
    }

    /// Hands a copy of `fd` to systemd's file descriptor store under `name`. True when it
    /// was sent; whether systemd keeps it depends on the unit's `FileDescriptorStoreMax=`,
    /// which the milter cannot see. systemd keeps one copy of the same socket however
    /// often it is sent.
    pub fn store(&self, fd: BorrowedFd<'_>, name: &str) -> bool {
        self.send(&format!("FDSTORE=1\nFDNAME={name}"), &[fd.as_raw_fd()])
    }

    /// Closes every descriptor systemd stores under `name`.
    pub fn forget(&self, name: &str) {
        self.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]);
    }

    fn send(&self, message: &str, fds: &[i32]) -> bool {
        let Some(addr) = &self.socket else {
            return false;
        };
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        let sent = UnixDatagram::unbound().and_then(|s| {
            let iov = [IoSlice::new(message.as_bytes())];
            sendmsg(s.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), Some(addr))
                .map_err(io::Error::from)
        });
        if let Err(e) = &sent {
            log::warn!("event=notify error={:?}", e.to_string());
        }
        sent.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pid: &str, count: &str, names: Option<&str>) -> Vec<(String, i32)> {
        parse_listen_fds(
            Some(pid.into()),
            Some(count.into()),
            names.map(Into::into),
            42,
        )
    }

    #[test]
    fn listen_fds_are_named_in_order() {
        assert_eq!(
            parse("42", "2", Some("policy:milter")),
            [("policy".to_owned(), 3), ("milter".to_owned(), 4)]
        );
        assert_eq!(parse("42", "1", None), [("unknown".to_owned(), 3)]);
        assert_eq!(
            parse("42", "2", Some("milter")),
            [("milter".to_owned(), 3), ("unknown".to_owned(), 4)]
        );
    }

    #[test]
    fn listen_fds_for_another_process_are_not_ours() {
        assert!(parse("41", "1", Some("milter")).is_empty());
        assert!(parse("", "1", Some("milter")).is_empty());
        assert!(parse("42", "0", Some("milter")).is_empty());
        assert!(parse("42", "x", Some("milter")).is_empty());
        assert!(parse_listen_fds(None, Some("1".into()), None, 42).is_empty());
    }

    #[test]
    fn addresses_of_real_sockets() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let inherited = Inherited {
            name: "milter".into(),
            fd: tcp.into(),
        };
        assert_eq!(inherited.address(), Address::Socket(Socket::Inet(addr)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let inherited = Inherited {
            name: "milter".into(),
            fd: unix.into(),
        };
        assert_eq!(inherited.address(), Address::Socket(Socket::Unix(path)));

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inherited = Inherited {
            name: "milter".into(),
            fd: udp.into(),
        };
        assert!(matches!(inherited.address(), Address::Other(_)));
    }

    fn named(name: &str, fd: impl Into<OwnedFd>) -> Inherited {
        Inherited {
            name: name.into(),
            fd: fd.into(),
        }
    }

    #[test]
    fn the_stored_policy_socket_is_taken_when_milter_conf_names_it() {
        let policy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = policy.local_addr().unwrap();
        let milter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut inherited = vec![named("milter", milter), named("policy", policy)];
        let (chosen, stale) = policy_socket(&mut inherited, Some(&Socket::Inet(addr)));
        assert_eq!(
            chosen.map(|fd| fd.address()),
            Some(Address::Socket(Socket::Inet(addr)))
        );
        assert!(!stale);
        // The milter's socket is left for `milter_socket`.
        assert_eq!(inherited.len(), 1);
        assert_eq!(inherited[0].name, "milter");
    }

    #[test]
    fn a_stored_policy_socket_milter_conf_does_not_name_is_stale() {
        let other = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for wanted in [None, Some(Socket::Inet(other))] {
            let policy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut inherited = vec![named("policy", policy)];
            let (chosen, stale) = policy_socket(&mut inherited, wanted.as_ref());
            assert!(chosen.is_none() && stale, "{wanted:?}");
            assert!(inherited.is_empty());
        }
        // Two copies: one is served, the store is cleaned up.
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap();
        let second = first.try_clone().unwrap();
        let mut inherited = vec![named("policy", first), named("policy", second)];
        let (chosen, stale) = policy_socket(&mut inherited, Some(&Socket::Inet(addr)));
        assert!(chosen.is_some() && stale);
    }

    #[test]
    fn a_stored_unix_policy_socket_whose_file_is_gone_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.sock");
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let copy = unix.try_clone().unwrap();
        let wanted = Socket::Unix(path.clone());
        let (chosen, stale) = policy_socket(&mut vec![named("policy", unix)], Some(&wanted));
        assert!(chosen.is_some() && !stale);
        fs::remove_file(&path).unwrap();
        let (chosen, stale) = policy_socket(&mut vec![named("policy", copy)], Some(&wanted));
        assert!(chosen.is_none() && stale);
    }
}
