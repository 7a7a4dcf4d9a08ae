//! DNS servers for the tests of the DNS rules, all on loopback ports the test picks: a real
//! authoritative server (Debian's NSD) serving the test zone `helo.test.`
//! ([`ZONE`]), one that never answers, and one that answers every query with SERVFAIL.
//! Each stops when dropped.

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};
use tempfile::TempDir;

/// Debian's package path of the server.
pub const NSD: &str = "/usr/sbin/nsd";

/// The test zone. The expected answers of the tests are read off this text by hand.
/// The negative TTL (the SOA's minimum, 5 s) and `short`'s TTL (1 s) are small for the
/// cache to be exercised; `$TTL` is what every other record gets.
pub const ZONE: &str = r#"$ORIGIN helo.test.
$TTL 60
@          IN SOA  ns.helo.test. hostmaster.helo.test. 1 3600 600 86400 5
@          IN NS   ns
ns         IN A    127.0.0.1
; the end-to-end tests' IPv6 client (::1)
loopback6  IN AAAA ::1
; an IDNA name: names::BUECHER spells it as a HELO would (a U-label)
xn--bcher-kva IN A 192.0.2.50
; any name under cold.helo.test (bench/dns-bench: every session a name never asked
; before), with client's address: it passes the rule mismatch
*.cold     IN A    198.51.100.7
; one record type each
a-only     IN A    192.0.2.10
aaaa-only  IN AAAA 2001:db8::10
mx-only    IN MX   10 mx.example.net.
; the name exists, with no A, AAAA or MX: NODATA for all three
txt-only   IN TXT  "no address here"
; the test client's addresses (tests/milter.rs connects as 198.51.100.7)
client     IN A    198.51.100.7
client     IN MX   10 mx.example.net.
client6    IN AAAA 2001:db8::7
; addresses that are not the client's
other      IN A    192.0.2.20
other      IN A    192.0.2.21
other      IN AAAA 2001:db8::20
; a record that the cache keeps for one second only
short  1   IN A    192.0.2.30
; aliases: to a name with an address, and to a name that does not exist
alias      IN CNAME a-only
dangling   IN CNAME missing
"#;

/// The zone's names, fully qualified, as the tests ask them.
pub mod names {
    /// A 127.0.0.1: the end-to-end tests' IPv4 client.
    pub const NS: &str = "ns.helo.test";
    /// AAAA ::1: their IPv6 client.
    pub const LOOPBACK6: &str = "loopback6.helo.test";
    /// `xn--bcher-kva.helo.test` A 192.0.2.50, as a HELO would spell it.
    pub const BUECHER: &str = "BÜCHER.helo.test";
    pub const A_ONLY: &str = "a-only.helo.test";
    pub const AAAA_ONLY: &str = "aaaa-only.helo.test";
    pub const MX_ONLY: &str = "mx-only.helo.test";
    pub const TXT_ONLY: &str = "txt-only.helo.test";
    pub const CLIENT: &str = "client.helo.test";
    pub const CLIENT6: &str = "client6.helo.test";
    pub const OTHER: &str = "other.helo.test";
    pub const SHORT: &str = "short.helo.test";
    /// A CNAME to `a-only`.
    pub const ALIAS: &str = "alias.helo.test";
    /// A CNAME to `missing`, a name that does not exist.
    pub const DANGLING: &str = "dangling.helo.test";
    /// Not in the zone: NXDOMAIN.
    pub const MISSING: &str = "missing.helo.test";
}

/// Whether NSD is here (`common::dependency`).
pub fn nsd_available() -> bool {
    Path::new(NSD).exists()
}

pub const INSTALL_NSD: &str =
    "apt-get install nsd (with a policy-rc.d that exits 101, as .ci/install-mtas does)";

/// NSD serving [`ZONE`] on 127.0.0.1, UDP and TCP, in a temp dir of its own.
pub struct Nsd {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Nsd {
    /// Starts NSD and waits until it answers a query for the zone's SOA; panics with its
    /// log when it does not within a generous deadline.
    pub fn start() -> Self {
        let mut last_log = String::new();
        // A port free a moment ago can be taken meanwhile: then another.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            fs::write(dir.path().join("helo.test.zone"), ZONE).expect("write the zone");
            let port = free_udp_tcp_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let conf = dir.path().join("nsd.conf");
            fs::write(&conf, nsd_conf(dir.path(), port)).expect("write nsd.conf");
            let child = Command::new(NSD)
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nsd");
            let mut nsd = Self { child, addr, dir };
            if nsd.wait_serving(Duration::from_secs(30)) {
                return nsd;
            }
            last_log = fs::read_to_string(nsd.dir.path().join("nsd.log")).unwrap_or_default();
        }
        panic!("nsd did not serve helo.test.; its log:\n{last_log}");
    }

    /// True once a query for the zone's SOA gets an answer with NOERROR; false when the
    /// process ended or `limit` passed.
    fn wait_serving(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Some(reply) = udp_query(self.addr, "helo.test", 6, Duration::from_millis(200)) {
                if rcode(&reply) == Some(0) {
                    return true;
                }
            }
        }
        false
    }

    fn stop(&mut self) {
        // SIGTERM: NSD then stops its server and xfrd children, which SIGKILL would orphan
        // (holding the port).
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn nsd_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"server:
  ip-address: 127.0.0.1@{port}
  username: ""
  chroot: ""
  zonesdir: "{d}"
  pidfile: "{d}/nsd.pid"
  zonelistfile: "{d}/zone.list"
  xfrdfile: "{d}/xfrd.state"
  xfrdir: "{d}"
  database: ""
  logfile: "{d}/nsd.log"
  server-count: 1
  verbosity: 1
  # No response rate limiting: above 200 answers a second to loopback NSD drops or
  # truncates some (bench/dns-bench asks thousands a second).
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: helo.test.
  zonefile: "{d}/helo.test.zone"
"#
    )
}

/// A port that was free on 127.0.0.1 for both UDP and TCP a moment ago.
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else { continue };
        if TcpListener::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// A DNS query for `name` of type `qtype` with ID 0x4242, recursion desired.
pub fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    q
}

/// The RCODE of a DNS message, if it is one.
pub fn rcode(message: &[u8]) -> Option<u8> {
    message.get(3).map(|b| b & 0x0f)
}

/// Sends one query over UDP and returns the reply, or None after `wait`.
pub fn udp_query(server: SocketAddr, name: &str, qtype: u16, wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    socket.set_read_timeout(Some(wait)).ok()?;
    socket.send_to(&query_bytes(name, qtype), server).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// The reply of a server that answers everything with SERVFAIL: the query's ID and
/// question, QR set, RD copied, RA set, RCODE 2, no records. None for what is no query.
pub fn servfail_reply(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    // The question: its name's labels up to the root, then QTYPE and QCLASS.
    let mut end = 12;
    loop {
        let len = *query.get(end)? as usize;
        end += 1 + len;
        if len == 0 {
            break;
        }
    }
    end += 4;
    let question = query.get(12..end)?;
    let mut reply = vec![
        query[0],
        query[1],
        0x80 | (query[2] & 0x01),
        0x80 | 2,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    reply.extend_from_slice(question);
    Some(reply)
}

/// What a hand-written server does with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Silent,
    ServFail,
}

/// A hand-written DNS server on a loopback port, UDP and TCP: silent (reads every query
/// and says nothing, as a server that never answers) or answering every query SERVFAIL.
pub struct FakeDns {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeDns {
    /// A server that never answers.
    pub fn silent() -> Self {
        Self::start(Behaviour::Silent)
    }

    /// A server that answers every query with SERVFAIL.
    pub fn servfail() -> Self {
        Self::start(Behaviour::ServFail)
    }

    fn start(behaviour: Behaviour) -> Self {
        let (udp, tcp) = loop {
            let port = free_udp_tcp_port();
            let (Ok(udp), Ok(tcp)) = (
                UdpSocket::bind((Ipv4Addr::LOCALHOST, port)),
                TcpListener::bind((Ipv4Addr::LOCALHOST, port)),
            ) else {
                continue;
            };
            break (udp, tcp);
        };
        let addr = udp.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        // Short read timeouts: the threads look at `stop` between reads.
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        tcp.set_nonblocking(true).expect("non-blocking listener");
        let udp_stop = stop.clone();
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !udp_stop.load(Ordering::Relaxed) {
                let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                if behaviour == Behaviour::ServFail {
                    if let Some(reply) = servfail_reply(&buf[..n]) {
                        let _ = udp.send_to(&reply, peer);
                    }
                }
            }
        });
        let tcp_stop = stop.clone();
        let tcp_thread = std::thread::spawn(move || {
            // Connections kept open (silent) until the server stops.
            let mut held = Vec::new();
            while !tcp_stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((stream, _)) => {
                        if behaviour == Behaviour::ServFail {
                            serve_tcp_servfail(&stream);
                        }
                        held.push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }
}

/// Answers the length-prefixed queries of one TCP connection with SERVFAIL until the
/// peer stops sending (a short read timeout: one connection at a time).
fn serve_tcp_servfail(mut stream: &TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut query).is_err() {
            return;
        }
        let Some(reply) = servfail_reply(&query) else {
            return;
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).is_err() {
            return;
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
