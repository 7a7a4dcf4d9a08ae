//! The milter under systemd's conventions, driven as systemd drives it: sockets passed
//! with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES (taken by name, left open at stop, so that
//! a connection made between two instances is served by the next one), the `reload`
//! command of ExecReload, and the quiet check of ExecStartPre.

mod common;

use common::{
    milter::{free_port, Milter, BIN},
    raw::RawMta,
    wait_until,
};
use nix::{
    fcntl::{fcntl, FcntlArg},
    unistd::dup2,
};
use std::{
    fs,
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{net::UnixDatagram, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(10);

/// A milter started as systemd starts a socket-activated service.
struct Activated {
    child: Child,
    log: PathBuf,
}

impl Activated {
    /// Starts the milter with `config`, passing `sockets` (name, listener) as descriptors
    /// 3, 4, ... in that order.
    fn start(dir: &Path, name: &str, config: &str, sockets: &[(&str, &TcpListener)]) -> Self {
        Self::start_notifying(dir, name, config, sockets, None)
    }

    /// As `start`, with `NOTIFY_SOCKET` naming `notify` when given.
    fn start_notifying(
        dir: &Path,
        name: &str,
        config: &str,
        sockets: &[(&str, &TcpListener)],
        notify: Option<&Path>,
    ) -> Self {
        let conf = dir.join(format!("{name}.conf"));
        fs::write(&conf, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        // Copies well above the target numbers, so that placing one cannot overwrite
        // another that is still to be placed.
        let fds: Vec<RawFd> = sockets
            .iter()
            .map(|(_, l)| fcntl(l.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(100)).unwrap())
            .collect();
        let names: Vec<&str> = sockets.iter().map(|(n, _)| *n).collect();
        let mut command = Command::new("/bin/sh");
        // LISTEN_PID is the PID of the process that execs the milter, as systemd sets it.
        command
            .args(["-c", "export LISTEN_PID=$$; exec \"$0\" \"$@\"", BIN, "-c"])
            .arg(&conf)
            .env("LISTEN_FDS", sockets.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        match notify {
            Some(path) => command.env("NOTIFY_SOCKET", path),
            None => command.env_remove("NOTIFY_SOCKET"),
        };
        let targets = fds.clone();
        // SAFETY: only dup2 (async-signal-safe) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for (i, fd) in targets.iter().enumerate() {
                    dup2(*fd, 3 + i as RawFd)?;
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        for fd in fds {
            let _ = nix::unistd::close(fd);
        }
        Self { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str) -> bool {
        wait_until(WAIT, || self.log().contains(needle))
    }

    /// SIGTERM, then the exit status's success.
    fn stop(mut self) -> bool {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap().success()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Negotiates on a connection that is already open; the milter's answer proves that it
/// serves the connection.
fn negotiate(stream: TcpStream) -> bool {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut mta = RawMta { stream, opts: 0 };
    let mut optneg = 6u32.to_be_bytes().to_vec();
    optneg.extend_from_slice(&0x1ffu32.to_be_bytes());
    optneg.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
    mta.send(b'O', &optneg);
    matches!(mta.receive(), Ok((b'O', _)))
}

#[test]
fn the_socket_named_milter_is_served_and_outlives_the_milter() {
    let dir = tempfile::tempdir().unwrap();
    let milter_socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = milter_socket.local_addr().unwrap();
    let config = format!("socket = \"inet:{addr}\"\n");
    // The milter's socket second: it is found by its name, not its position.
    let sockets = [("policy", &other), ("milter", &milter_socket)];

    let first = Activated::start(dir.path(), "first", &config, &sockets);
    assert!(
        first.wait_for_log(&format!("event=listen socket=inet:{addr} from=systemd")),
        "{}",
        first.log()
    );
    assert!(negotiate(TcpStream::connect(addr).unwrap()));
    assert!(
        first.log().contains("name=\"policy\" served=no"),
        "{}",
        first.log()
    );
    let log = first.log();
    assert!(first.stop());
    assert!(log.contains("event=start"), "{log}");

    // Between two instances: the socket still listens (a milter that shut it would
    // make this connect fail), and the connection waits in its queue...
    let waiting = TcpStream::connect(addr).expect("the socket from systemd was shut at stop");
    // ... until the next instance serves it.
    let second = Activated::start(dir.path(), "second", &config, &sockets);
    assert!(negotiate(waiting), "{}", second.log());
    assert!(second.stop());
    assert!(fs::read_to_string(dir.path().join("first.log"))
        .unwrap()
        .contains("event=shutdown new_connections=queued"),);
}

#[test]
fn a_socket_from_systemd_that_milter_conf_does_not_name_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let stale = TcpListener::bind("127.0.0.1:0").unwrap();
    let stale_addr = stale.local_addr().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!("socket = \"inet:{addr}\"\n");

    let milter = Activated::start(dir.path(), "moved", &config, &[("milter", &stale)]);
    assert!(
        milter.wait_for_log(&format!("event=listen socket=inet:{addr} from=milter.conf")),
        "{}",
        milter.log()
    );
    let log = milter.log();
    let warning = log
        .lines()
        .find(|l| l.contains("served=no"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.starts_with("warning: "), "{warning}");
    assert!(
        warning.contains(&format!(
            "systemd_socket=inet:{stale_addr} socket=inet:{addr}"
        )),
        "{warning}"
    );
    assert!(
        warning.contains("systemctl edit bogus-helo-milter.socket")
            && warning.contains(&format!("ListenStream={addr}")),
        "{warning}"
    );
    // milter.conf's socket is served; the other one is not.
    assert!(negotiate(TcpStream::connect(addr).unwrap()));
    // The test holds the stale socket too: the connection waits in its queue for the
    // test to take it, with what the MTA sent, because no milter took it.
    let unserved = TcpStream::connect(stale_addr).unwrap();
    let mut mta = RawMta {
        stream: unserved,
        opts: 0,
    };
    mta.send(b'O', &[0; 12]);
    stale.set_nonblocking(true).unwrap();
    let mut taken = None;
    assert!(
        wait_until(WAIT, || {
            taken = stale.accept().ok();
            taken.is_some()
        }),
        "the connection to the stale socket was taken by the milter"
    );
    let (mut taken, _) = taken.unwrap();
    taken.set_nonblocking(false).unwrap();
    taken.set_read_timeout(Some(WAIT)).unwrap();
    let mut packet = [0; 17];
    taken.read_exact(&mut packet).unwrap();
    assert_eq!(&packet[..5], &[0, 0, 0, 13, b'O']);
    assert!(milter.stop());
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn reload_command_signals_and_fails_on_a_bad_file() {
    let milter = Milter::start("action = \"reject\"\n");
    let conf = milter.config_path();
    let conf = conf.to_str().unwrap();
    let pid = milter.pid().to_string();

    let out = run(&["-c", conf, "reload", &pid]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    assert!(milter.wait_for_log("event=reload result=ok", WAIT));

    milter.write_config("action = \"bounce\"\n");
    let out = run(&["-c", conf, "reload", &pid]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("action") && stderr.contains("bounce"),
        "{stderr}"
    );
    // The milter was signalled all the same: it logs the failure and keeps its config,
    // so that its reload state follows the file (issue 19 item 5).
    assert!(milter.wait_for_log("event=reload result=failed keeping=previous", WAIT));

    // PID 0 or 1 (no $MAINPID, say) would signal a process group or init.
    for pid in ["0", "1", "-1"] {
        assert_eq!(run(&["-c", conf, "reload", pid]).status.code(), Some(2));
    }
}

#[test]
fn quiet_check_prints_only_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.conf");
    fs::write(&good, "action = \"log\"\n").unwrap();
    let out = run(&["-c", good.to_str().unwrap(), "-t", "--quiet"]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    // Without --quiet the effective configuration is printed, as before.
    let out = run(&["-c", good.to_str().unwrap(), "-t"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("action = \"log\""));

    let bad = dir.path().join("bad.conf");
    fs::write(&bad, "action = \"bounce\"\n").unwrap();
    let out = run(&["-c", bad.to_str().unwrap(), "-t", "-q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(!out.stderr.is_empty());
}

/// One policy request on a new connection to `addr`; the answer line.
fn policy_answer(addr: SocketAddr) -> String {
    read_answer(send_policy_request(addr))
}

/// A new connection to `addr` with one policy request sent.
fn send_policy_request(addr: SocketAddr) -> TcpStream {
    use std::io::Write;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"request=smtpd_access_policy\nprotocol_state=RCPT\nhelo_name=[192.0.2.9]\nclient_address=198.51.100.7\nrecipient=u@example.com\n\n")
        .unwrap();
    stream
}

/// The answer line to the request sent on `stream`.
fn read_answer(stream: TcpStream) -> String {
    use std::io::{BufRead, BufReader};
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// The policy service beside socket activation (issue 12): its socket is bound by the
/// process, the milter's may come from systemd; with the milter off, a socket that
/// systemd passes is not served, and said so.
#[test]
fn the_policy_socket_is_bound_beside_a_socket_from_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let milter_socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = milter_socket.local_addr().unwrap();
    let policy = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sockets = [("milter", &milter_socket)];

    let both = Activated::start(
        dir.path(),
        "both",
        &format!(
            "socket = \"inet:{addr}\"\npolicy_socket = \"inet:{policy}\"\ntrusted_networks = []\n"
        ),
        &sockets,
    );
    assert!(
        both.wait_for_log(&format!(
            "event=listen policy_socket=inet:{policy} from=milter.conf"
        )),
        "{}",
        both.log()
    );
    assert!(both
        .log()
        .contains(&format!("event=listen socket=inet:{addr} from=systemd")));
    assert!(negotiate(TcpStream::connect(addr).unwrap()));
    assert_eq!(policy_answer(policy), "action=550 5.7.1 bogus helo");
    assert!(both.stop());

    let policy_only = Activated::start(
        dir.path(),
        "policy-only",
        &format!("socket = \"\"\npolicy_socket = \"inet:{policy}\"\ntrusted_networks = []\n"),
        &sockets,
    );
    assert!(
        policy_only.wait_for_log(&format!("event=listen policy_socket=inet:{policy}")),
        "{}",
        policy_only.log()
    );
    assert!(
        policy_only.log().contains(
            "name=\"milter\" served=no reason=\"socket = \\\"\\\" in milter.conf: no milter\""
        ),
        "{}",
        policy_only.log()
    );
    assert_eq!(policy_answer(policy), "action=550 5.7.1 bogus helo");
    assert!(policy_only.stop());
}

/// The socket the milter stored under the name `policy` after telling systemd to forget
/// every socket of that name (FDSTOREREMOVE before FDSTORE, in one start's messages).
fn stored_after_removal(notify: &UnixDatagram) -> TcpListener {
    let mut messages = notifications(notify);
    let remove = messages
        .iter()
        .position(|(m, _)| m == "FDSTOREREMOVE=1\nFDNAME=policy")
        .unwrap_or_else(|| panic!("no FDSTOREREMOVE: {messages:?}"));
    let store = messages
        .iter()
        .position(|(m, _)| m == "FDSTORE=1\nFDNAME=policy")
        .unwrap_or_else(|| panic!("no FDSTORE: {messages:?}"));
    assert!(remove < store, "{messages:?}");
    let fd = messages[store]
        .1
        .pop()
        .expect("FDSTORE without a descriptor");
    TcpListener::from(fd)
}

/// systemd's end of `NOTIFY_SOCKET`: the messages of one start, up to `READY=1`, each
/// with the descriptors it carried.
fn notifications(notify: &UnixDatagram) -> Vec<(String, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut messages = Vec::new();
    while !messages
        .iter()
        .any(|(m, _): &(String, _)| m.contains("READY=1"))
    {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<UnixAddr>(
            notify.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .expect("no message from the milter on NOTIFY_SOCKET");
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: the kernel just installed these descriptors for this process.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let bytes = msg.bytes;
        messages.push((String::from_utf8_lossy(&buf[..bytes]).into_owned(), fds));
    }
    messages
}

fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    (socket, path)
}

/// Issue 19, item 11: the policy socket goes to systemd's file descriptor store, and the
/// next instance serves it from there, including a connection made between the two.
#[test]
fn the_policy_socket_is_kept_in_systemds_store_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (notify, notify_path) = notify_socket(dir.path());
    let policy = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config =
        format!("socket = \"\"\npolicy_socket = \"inet:{policy}\"\ntrusted_networks = []\n");

    let first = Activated::start_notifying(dir.path(), "first", &config, &[], Some(&notify_path));
    let mut messages = notifications(&notify);
    let stored: Vec<_> = messages
        .iter_mut()
        .filter(|(m, _)| m.lines().any(|l| l == "FDSTORE=1"))
        .collect();
    assert_eq!(stored.len(), 1, "{messages:?}");
    let (message, fds) = stored.into_iter().next().unwrap();
    assert!(message.lines().any(|l| l == "FDNAME=policy"), "{message}");
    assert_eq!(fds.len(), 1, "{message}");
    let kept = TcpListener::from(fds.pop().unwrap());
    assert_eq!(kept.local_addr().unwrap(), policy);
    assert!(
        first.log().contains(&format!(
            "event=listen policy_socket=inet:{policy} from=milter.conf"
        )),
        "{}",
        first.log()
    );
    assert_eq!(policy_answer(policy), "action=550 5.7.1 bogus helo");
    assert!(first.stop());
    assert!(fs::read_to_string(dir.path().join("first.log"))
        .unwrap()
        .contains("event=shutdown new_connections=queued"));

    // Between two instances: the stored socket still listens (one shut at stop would
    // refuse this), and the request waits in its queue for the next instance.
    let waiting = send_policy_request(policy);
    let second = Activated::start_notifying(
        dir.path(),
        "second",
        &config,
        &[("policy", &kept)],
        Some(&notify_path),
    );
    assert_eq!(
        read_answer(waiting),
        "action=550 5.7.1 bogus helo",
        "{}",
        second.log()
    );
    assert!(
        second.log().contains(&format!(
            "event=listen policy_socket=inet:{policy} from=systemd"
        )),
        "{}",
        second.log()
    );
    let messages = notifications(&notify);
    assert!(
        !messages.iter().any(|(m, _)| m.contains("FDSTOREREMOVE")),
        "{messages:?}"
    );
    assert!(second.stop());
}

/// A stored policy socket that milter.conf no longer names is neither served nor kept:
/// systemd is told to forget it, and the new one is bound and stored instead.
#[test]
fn a_stored_policy_socket_milter_conf_no_longer_names_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (notify, notify_path) = notify_socket(dir.path());
    let old = TcpListener::bind("127.0.0.1:0").unwrap();
    let old_addr = old.local_addr().unwrap();
    let policy = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config =
        format!("socket = \"\"\npolicy_socket = \"inet:{policy}\"\ntrusted_networks = []\n");

    let milter = Activated::start_notifying(
        dir.path(),
        "moved",
        &config,
        &[("policy", &old)],
        Some(&notify_path),
    );
    assert_eq!(stored_after_removal(&notify).local_addr().unwrap(), policy);
    let log = milter.log();
    let warning = log
        .lines()
        .find(|l| l.contains("served=no"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warning.starts_with("warning: ")
            && warning.contains(&format!("systemd_socket=inet:{old_addr} name=\"policy\""))
            && warning.contains(&format!("policy_socket=inet:{policy}")),
        "{warning}"
    );
    assert_eq!(policy_answer(policy), "action=550 5.7.1 bogus helo");
    // The old socket is not served: its connection waits in the queue for the test to
    // take it, with the request sent, because the milter does not accept there.
    let _unserved = send_policy_request(old_addr);
    old.set_nonblocking(true).unwrap();
    let mut taken = None;
    assert!(
        wait_until(WAIT, || {
            taken = old.accept().ok();
            taken.is_some()
        }),
        "the connection to the old policy socket was taken by the milter"
    );
    let (mut taken, _) = taken.unwrap();
    taken.set_nonblocking(false).unwrap();
    taken.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = [0; 28];
    taken.read_exact(&mut request).unwrap();
    assert_eq!(&request, b"request=smtpd_access_policy\n");
    assert!(milter.stop());
}

/// Two copies of the stored socket (both named `policy`): one is served, and since the
/// store is emptied of the name, that one is stored again.
#[test]
fn a_duplicate_in_the_store_is_dropped_and_the_served_socket_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let (notify, notify_path) = notify_socket(dir.path());
    let kept = TcpListener::bind("127.0.0.1:0").unwrap();
    let policy = kept.local_addr().unwrap();
    let copy = kept.try_clone().unwrap();
    let config =
        format!("socket = \"\"\npolicy_socket = \"inet:{policy}\"\ntrusted_networks = []\n");

    let milter = Activated::start_notifying(
        dir.path(),
        "twice",
        &config,
        &[("policy", &kept), ("policy", &copy)],
        Some(&notify_path),
    );
    assert_eq!(stored_after_removal(&notify).local_addr().unwrap(), policy);
    assert!(
        milter.wait_for_log(&format!(
            "event=listen policy_socket=inet:{policy} from=systemd"
        )),
        "{}",
        milter.log()
    );
    assert_eq!(policy_answer(policy), "action=550 5.7.1 bogus helo");
    assert!(milter.stop());
}
