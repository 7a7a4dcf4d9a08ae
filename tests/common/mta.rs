//! Private Postfix and Sendmail instances for the end-to-end tests.
//!
//! Each instance lives in its own temp dir (config, queue, data, log), listens on a free
//! port on 127.0.0.1 and ::1, hands every SMTP session to the milter under test, and
//! "delivers" mail for every domain to nothing (Postfix: the discard transport; Sendmail:
//! a mailer that runs /bin/true). Dropping an instance stops all its processes and
//! removes its files, also when the test panicked.
//!
//! Needs what `.ci/install-mtas` installs: postfix, m4, sendmail-cf, and sendmail-bin
//! unpacked into [`SENDMAIL_ROOT`].

use nix::{
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};
use std::{
    fmt, fs,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    net::{SocketAddr, TcpStream},
    os::unix::{fs::PermissionsExt, net::UnixDatagram, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::{self, sleep, JoinHandle},
    time::{Duration, Instant},
};
use tempfile::TempDir;

/// Where `.ci/install-mtas` unpacks the sendmail-bin package (it conflicts with postfix,
/// so it is not installed through dpkg). Overridable with `E2E_SENDMAIL_ROOT`.
pub const SENDMAIL_ROOT: &str = "/opt/sendmail-root";

/// The milter address in the documented snippets; the tests put the real one in its place.
pub const DOC_MILTER_PORT: u16 = 8895;

/// The Postfix `main.cf` lines of the README's "Attaching to Postfix" (docs/attaching.md),
/// used as they stand with only the milter's port replaced.
pub const POSTFIX_MAIN_CF: &str = "\
smtpd_milters = inet:127.0.0.1:8895
milter_default_action = tempfail
";

/// The `sendmail.mc` line of the README's "Attaching to Sendmail" (docs/attaching.md),
/// used as it stands with only the milter's port replaced.
pub const SENDMAIL_MC: &str = "\
INPUT_MAIL_FILTER(`bogus-helo', `S=inet:8895@127.0.0.1, F=T, T=C:30s;S:30s;R:30s;E:1m')
";

/// The policy service's address in the documented snippet.
pub const DOC_POLICY_PORT: u16 = 8896;

/// The Postfix `main.cf` line of the README's "milter or policy service", used as it
/// stands with only the policy service's port replaced, in a Postfix without a milter.
pub const POSTFIX_POLICY_MAIN_CF: &str = "\
smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:8896
";

/// Mail to any address at this domain is not discarded but written, as the MTA hands it
/// to a mailer, to a file in the instance's `delivered/` ([`Mta::delivered_message`]).
pub const CAPTURE_DOMAIN: &str = "delivered.e2e.test";

/// The mailer both MTAs run for [`CAPTURE_DOMAIN`]: `capture.sh DIR [recipients...]`.
const CAPTURE_SH: &str = "#!/bin/sh\nexec cat > \"$(mktemp \"$1/msg.XXXXXX\")\"\n";

/// How long an MTA may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postfix,
    Sendmail,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postfix => "postfix",
            Kind::Sendmail => "sendmail",
        }
    }

    /// The host name the instance calls itself (`myhostname`, Sendmail's `$j`).
    pub fn hostname(self) -> &'static str {
        match self {
            Kind::Postfix => "postfix.e2e.test",
            Kind::Sendmail => "sendmail.e2e.test",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Postfix snippet for a milter at `milter` (127.0.0.1:port).
pub fn postfix_snippet(milter: SocketAddr) -> String {
    POSTFIX_MAIN_CF.replace(
        &format!("inet:127.0.0.1:{DOC_MILTER_PORT}"),
        &format!("inet:{}:{}", milter.ip(), milter.port()),
    )
}

/// The Postfix snippet for a policy service at `policy` (127.0.0.1:port).
pub fn postfix_policy_snippet(policy: SocketAddr) -> String {
    POSTFIX_POLICY_MAIN_CF.replace(
        &format!("inet:127.0.0.1:{DOC_POLICY_PORT}"),
        &format!("inet:{}:{}", policy.ip(), policy.port()),
    )
}

/// The Sendmail snippet for a milter at `milter` (127.0.0.1:port).
pub fn sendmail_snippet(milter: SocketAddr) -> String {
    SENDMAIL_MC.replace(
        &format!("inet:{DOC_MILTER_PORT}@127.0.0.1"),
        &format!("inet:{}@{}", milter.port(), milter.ip()),
    )
}

/// The log of an instance, collected as it is written.
enum LogSource {
    /// Postfix `maillog_file`.
    File(PathBuf),
    /// Syslog datagrams from Sendmail, received on a socket this process owns.
    Socket {
        text: Arc<Mutex<String>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    },
}

impl LogSource {
    fn text(&self) -> String {
        match self {
            LogSource::File(path) => fs::read_to_string(path).unwrap_or_default(),
            LogSource::Socket { text, .. } => text.lock().map(|t| t.clone()).unwrap_or_default(),
        }
    }

    fn socket(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::bind(path)?;
        // Sendmail runs as root and as its DefaultUser; let both write.
        fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let text = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (text, stop) = (text.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let line = String::from_utf8_lossy(&buf[..n]);
                        // "<22>Nov 27 17:53:08 sendmail[15869]: text": drop the priority.
                        let line = match line.strip_prefix('<').and_then(|l| l.split_once('>')) {
                            Some((_, rest)) => rest.to_string(),
                            None => line.to_string(),
                        };
                        if let Ok(mut text) = text.lock() {
                            text.push_str(line.trim_end_matches(['\n', '\0']));
                            text.push('\n');
                        }
                    }
                }
            })
        };
        Ok(LogSource::Socket {
            text,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LogSource {
    fn drop(&mut self) {
        if let LogSource::Socket { stop, thread, .. } = self {
            stop.store(true, Ordering::Relaxed);
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// A running private MTA.
pub struct Mta {
    kind: Kind,
    port: u16,
    /// The milter on 127.0.0.1 (None: a unix socket or no milter, see [`Mta::start_postfix_with`]).
    milter: Option<SocketAddr>,
    child: Option<Child>,
    log: LogSource,
    // Last, so that the files go after the processes.
    dir: TempDir,
}

impl Mta {
    /// Starts a private `kind` instance whose smtpd hands sessions to the milter at `milter`.
    /// Panics (naming what is missing) when the MTA is not installed.
    pub fn start(kind: Kind, milter: SocketAddr) -> Self {
        let mut last_error = String::new();
        // A free port can be taken by a parallel test before the MTA binds it: retry.
        for _ in 0..3 {
            let port = free_port_pair();
            let result = match kind {
                Kind::Postfix => {
                    Self::start_postfix(port, Some(milter), &postfix_snippet(milter), "")
                }
                Kind::Sendmail => Self::start_sendmail(port, milter),
            };
            match result {
                Ok(mta) => return mta,
                Err(e) => last_error = e,
            }
        }
        panic!("{kind} did not start: {last_error}");
    }

    /// Starts a private Postfix whose smtpd hands sessions to the milter `milter` as
    /// `smtpd_milters` spells it (`inet:127.0.0.1:PORT`, `unix:/path/milter.sock`; the
    /// instance runs without chroot, so any path its `postfix` user may connect to works),
    /// or to no milter at all (`None`). `extra_main_cf` is appended to `main.cf` (lines
    /// there override the defaults above them).
    pub fn start_postfix_with(milter: Option<&str>, extra_main_cf: &str) -> Self {
        let snippet = match milter {
            Some(spec) => format!("smtpd_milters = {spec}\nmilter_default_action = tempfail\n"),
            None => "# (no milter)\n".to_string(),
        };
        let inet = milter
            .and_then(|spec| spec.strip_prefix("inet:"))
            .and_then(|addr| addr.parse().ok());
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port_pair();
            match Self::start_postfix(port, inet, &snippet, extra_main_cf) {
                Ok(mta) => return mta,
                Err(e) => last_error = e,
            }
        }
        panic!("postfix did not start: {last_error}");
    }

    /// Starts a private Postfix without a milter whose smtpd asks the policy service at
    /// `policy` (127.0.0.1:port) at RCPT, with the README's `main.cf` line;
    /// `extra_main_cf` is appended to `main.cf`.
    pub fn start_postfix_policy(policy: SocketAddr, extra_main_cf: &str) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let snippet = postfix_policy_snippet(policy);
            match Self::start_postfix(port, None, &snippet, extra_main_cf) {
                Ok(mta) => return mta,
                Err(e) => last_error = e,
            }
        }
        panic!("postfix did not start: {last_error}");
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// 127.0.0.1 and the SMTP port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// ::1 and the SMTP port.
    pub fn addr_v6(&self) -> SocketAddr {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.port))
    }

    /// The milter's TCP address (panics for an instance without an inet milter).
    pub fn milter(&self) -> SocketAddr {
        self.milter.expect("this instance has no inet milter")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The MTA's log so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// The MTA's log from byte `offset` on, and the offset of its end: for following a
    /// long log without reading it all again. A partly written last line is left for the
    /// next call.
    pub fn log_from(&self, offset: usize) -> (String, usize) {
        let tail = match &self.log {
            LogSource::File(path) => {
                let mut tail = Vec::new();
                if let Ok(mut file) = fs::File::open(path) {
                    if file.seek(SeekFrom::Start(offset as u64)).is_ok() {
                        let _ = file.read_to_end(&mut tail);
                    }
                }
                tail
            }
            LogSource::Socket { .. } => self
                .log
                .text()
                .into_bytes()
                .get(offset..)
                .unwrap_or_default()
                .to_vec(),
        };
        let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |n| n + 1);
        (
            String::from_utf8_lossy(&tail[..complete]).into_owned(),
            offset + complete,
        )
    }

    pub fn wait_for_log(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> bool {
        super::wait_until(timeout, || done(&self.log()))
    }

    /// The queue id the MTA gave the message with header `Message-ID: <message_id>`.
    pub fn queue_id(&self, message_id: &str) -> Option<String> {
        queue_id_in(&self.log(), message_id)
    }

    /// Waits until the message with `message_id` was delivered (Postfix: discard transport,
    /// `status=sent`; Sendmail: the /bin/true mailer, `stat=Sent`) to `rcpt`.
    pub fn wait_delivered(&self, message_id: &str, rcpt: &str, timeout: Duration) -> bool {
        self.wait_for_log(timeout, |log| {
            queue_id_in(log, message_id).is_some_and(|qid| delivered_in(log, &qid, rcpt))
        })
    }

    /// Waits until the MTA has finished with the message (removed from the queue),
    /// then tells the recipients it was delivered to.
    pub fn delivered_recipients(&self, message_id: &str, timeout: Duration) -> Vec<String> {
        let done = |log: &str| match queue_id_in(log, message_id) {
            Some(qid) => log.lines().any(|l| {
                l.contains(&format!(": {qid}: removed")) || l.contains(&format!(": {qid}: done;"))
            }),
            None => false,
        };
        self.wait_for_log(timeout, done);
        let log = self.log();
        let Some(qid) = queue_id_in(&log, message_id) else {
            return Vec::new();
        };
        let mut rcpts = Vec::new();
        for line in log.lines() {
            if let Some(list) = delivery_line_rcpts(line, &qid) {
                rcpts.extend(list);
            }
        }
        rcpts
    }

    /// Waits for the message with `Message-ID: <message_id>` to be written for a recipient
    /// at [`CAPTURE_DOMAIN`], and returns it as the mailer got it.
    pub fn delivered_message(&self, message_id: &str, timeout: Duration) -> Option<String> {
        let needle = format!("<{message_id}>");
        let mut found = None;
        super::wait_until(timeout, || {
            let dir = self.dir.path().join("delivered");
            found = fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| fs::read_to_string(entry.path()).ok())
                .find(|text| text.contains(&needle));
            found.is_some()
        });
        found
    }

    /// A description for assertion messages: which MTA, and its log.
    pub fn describe(&self) -> String {
        format!(
            "--- {} log ({}) ---\n{}",
            self.kind,
            self.dir.path().display(),
            self.log()
        )
    }

    fn start_postfix(
        port: u16,
        milter: Option<SocketAddr>,
        snippet: &str,
        extra_main_cf: &str,
    ) -> Result<Self, String> {
        for path in ["/usr/sbin/postfix", "/usr/lib/postfix/sbin/master"] {
            if !Path::new(path).exists() {
                return Err(format!("{path} missing: run .ci/install-mtas"));
            }
        }
        let dir = e2e_tempdir();
        let root = dir.path();
        let etc = root.join("etc");
        let queue = root.join("queue");
        let data = root.join("data");
        for d in [&etc, &queue, &data] {
            fs::create_dir(d).map_err(|e| e.to_string())?;
        }
        // The postfix user must reach the queue and own data_directory.
        chown_postfix(&data)?;
        let maillog = root.join("maillog");
        let main_cf = format!(
            "# Private instance for bogus-helo-milter's end-to-end tests.
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {queue}
data_directory = {data}
maillog_file = {maillog}
maillog_file_prefixes = {root}
myhostname = {hostname}
mydomain = e2e.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard:e2e
relay_transport = discard:e2e
local_transport = discard:e2e
alias_maps =
alias_database =
local_recipient_maps =
transport_maps = inline:{{{capture_domain}=capture:}}
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no
append_dot_mydomain = no
delay_warning_time = 0
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
# The milter, as in docs/attaching.md:
{snippet}# No milter_*_macros: Postfix's defaults, and the milter asks for its own macros at
# negotiation (the e2e test macros_and_helo_calls shows they arrive).
{extra_main_cf}",
            etc = etc.display(),
            queue = queue.display(),
            data = data.display(),
            maillog = maillog.display(),
            root = root.display(),
            hostname = Kind::Postfix.hostname(),
            capture_domain = CAPTURE_DOMAIN,
        );
        fs::write(etc.join("main.cf"), main_cf).map_err(|e| e.to_string())?;
        let master_cf = format!(
            "# Only what a private smtpd and the discard transport need; chroot off.
127.0.0.1:{port} inet n - n - - smtpd
[::1]:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
capture   unix  -       n       n       -       -       pipe
  user=nobody argv={root}/capture.sh {root}/delivered
",
            root = root.display(),
        );
        capture_dir(root)?;
        fs::write(etc.join("master.cf"), master_cf).map_err(|e| e.to_string())?;

        let out = fs::File::create(root.join("postfix.out")).map_err(|e| e.to_string())?;
        let child = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&etc)
            .arg("start-fg")
            .env("MAIL_CONFIG", &etc)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn postfix: {e}"))?;
        let mut mta = Mta {
            kind: Kind::Postfix,
            port,
            milter,
            child: Some(child),
            log: LogSource::File(maillog),
            dir,
        };
        mta.wait_listening()?;
        Ok(mta)
    }

    fn start_sendmail(port: u16, milter: SocketAddr) -> Result<Self, String> {
        let sm_root = std::env::var("E2E_SENDMAIL_ROOT").unwrap_or_else(|_| SENDMAIL_ROOT.into());
        let sendmail = Path::new(&sm_root).join("usr/libexec/sendmail/sendmail");
        let cf_m4 = Path::new("/usr/share/sendmail/cf/m4/cf.m4");
        for path in [sendmail.as_path(), cf_m4, Path::new("/usr/bin/m4")] {
            if !path.exists() {
                return Err(format!("{} missing: run .ci/install-mtas", path.display()));
            }
        }
        let dir = e2e_tempdir();
        let root = dir.path();
        let queue = root.join("queue");
        fs::create_dir(&queue).map_err(|e| e.to_string())?;
        fs::set_permissions(&queue, fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let hostname = Kind::Sendmail.hostname();
        // Sendmail resolves its own name at start and sleeps 60 s when it is not fully
        // qualified: in its own UTS namespace it gets this name, and this hosts file.
        fs::write(
            root.join("hosts"),
            format!(
                "127.0.0.1 {hostname} sendmail localhost\n::1 {hostname} sendmail localhost ip6-localhost\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        fs::write(root.join("service.switch"), "hosts files\naliases files\n")
            .map_err(|e| e.to_string())?;
        fs::write(root.join("statistics"), "").map_err(|e| e.to_string())?;
        let mc = format!(
            "divert(-1)
# Private instance for bogus-helo-milter's end-to-end tests.
divert(0)dnl
VERSIONID(`bogus-helo-milter e2e')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{hostname}')dnl
define(`QUEUE_DIR', `{queue}')dnl
define(`confPID_FILE', `{root}/sendmail.pid')dnl
define(`STATUS_FILE', `{root}/statistics')dnl
define(`ALIAS_FILE', `')dnl
define(`confHOST_STATUS_DIRECTORY', `')dnl
define(`confSERVICE_SWITCH_FILE', `{root}/service.switch')dnl
define(`confHOSTS_FILE', `{root}/hosts')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confTO_IDENT', `0')dnl
define(`confLOG_LEVEL', `14')dnl
define(`confMILTER_LOG_LEVEL', `14')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`promiscuous_relay')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`nocanonify')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
DAEMON_OPTIONS(`Port={port}, Addr=::1, Name=MTA6, Family=inet6')dnl
dnl The milter, as in docs/attaching.md:
{snippet}MAILER_DEFINITIONS
Mtrue,	P=/bin/true, F=lsq, S=EnvFromL, R=EnvToL, A=true $u
Mcapture,	P={root}/capture.sh, F=lsq, S=EnvFromL, R=EnvToL, A=capture.sh {root}/delivered $u
LOCAL_RULE_0
R$* < @ {capture_tokens} $* > $*	$#capture $@ {capture_domain} $: $1 < @ {capture_domain} > $3
R$* < @ $* > $*		$#true $@ $2 $: $1 < @ $2 > $3
",
            capture_tokens = CAPTURE_DOMAIN.replace('.', " . "),
            capture_domain = CAPTURE_DOMAIN,
            queue = queue.display(),
            root = root.display(),
            snippet = sendmail_snippet(milter),
        );
        fs::write(root.join("sendmail.mc"), &mc).map_err(|e| e.to_string())?;
        capture_dir(root)?;
        let m4 = Command::new("/usr/bin/m4")
            .arg(cf_m4)
            .arg(root.join("sendmail.mc"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("m4: {e}"))?;
        if !m4.status.success() {
            return Err(format!(
                "m4 failed: {}",
                String::from_utf8_lossy(&m4.stderr)
            ));
        }
        fs::write(root.join("sendmail.cf"), &m4.stdout).map_err(|e| e.to_string())?;

        // Sendmail logs only through syslog(3) to /dev/log: give it a /dev of its own whose
        // `log` is a socket of ours. The mounts exist only in its mount namespace.
        let log =
            LogSource::socket(&root.join("log.sock")).map_err(|e| format!("log socket: {e}"))?;
        let dev = root.join("dev");
        fs::create_dir(&dev).map_err(|e| e.to_string())?;
        let script = format!(
            r#"set -e
hostname {hostname}
mount --bind {root}/hosts /etc/hosts
for n in null zero full random urandom tty; do
    : > {dev}/$n
    mount --bind /dev/$n {dev}/$n
done
ln -s /proc/self/fd {dev}/fd
: > {dev}/log
mount --bind {root}/log.sock {dev}/log
mount --rbind {dev} /dev
exec {sendmail} -bD -C {root}/sendmail.cf
"#,
            root = root.display(),
            dev = dev.display(),
            sendmail = sendmail.display(),
        );
        fs::write(root.join("start.sh"), script).map_err(|e| e.to_string())?;
        let out = fs::File::create(root.join("sendmail.out")).map_err(|e| e.to_string())?;
        let child = Command::new("/usr/bin/unshare")
            .args(["--uts", "--mount", "--propagation", "private", "/bin/sh"])
            .arg(root.join("start.sh"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn unshare: {e}"))?;
        let mut mta = Mta {
            kind: Kind::Sendmail,
            port,
            milter: Some(milter),
            child: Some(child),
            log,
            dir,
        };
        mta.wait_listening()?;
        Ok(mta)
    }

    /// Waits until the instance greets on 127.0.0.1 and ::1 with its own host name.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ready = [false, false];
        loop {
            for (n, addr) in [self.addr(), self.addr_v6()].into_iter().enumerate() {
                if !ready[n] {
                    ready[n] = greets_as(addr, self.kind.hostname());
                }
            }
            if ready == [true, true] {
                return Ok(());
            }
            let exited = match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                _ => None,
            };
            let text = self.log();
            let bind_failed = text.contains("Address already in use")
                || text.contains("cannot bind")
                || text.contains("bind: ");
            if exited.is_some() || bind_failed || Instant::now() > deadline {
                let why = exited
                    .map(|s| format!("exited ({s})"))
                    .unwrap_or_else(|| "did not listen".into());
                let out = ["postfix.out", "sendmail.out"]
                    .iter()
                    .filter_map(|f| fs::read_to_string(self.dir.path().join(f)).ok())
                    .collect::<String>();
                self.stop();
                return Err(format!(
                    "{} on port {}: {why}\n{out}\n{}",
                    self.kind,
                    self.port,
                    self.describe()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Stops every process of the instance. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        // Postfix's master runs in a session of its own (setsid): stop it by its pid file;
        // SIGTERM makes it stop its children too.
        let master = match self.kind {
            Kind::Postfix => fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .map(Pid::from_raw),
            Kind::Sendmail => None,
        };
        let groups: Vec<Pid> = master.into_iter().chain([group]).collect();
        for g in &groups {
            let _ = killpg(*g, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child_done = matches!(child.try_wait(), Ok(Some(_)));
            // kill(pgid, 0) succeeds while any process of the group is alive.
            let groups_done = groups.iter().all(|g| killpg(*g, None).is_err());
            if child_done && groups_done {
                break;
            }
            if Instant::now() > deadline {
                for g in &groups {
                    let _ = killpg(*g, Signal::SIGKILL);
                }
                if let Some(m) = master {
                    let _ = kill(m, Signal::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mta {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free on both 127.0.0.1 and ::1 a moment ago.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let port = super::milter::free_port();
        if std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// A temp dir that the MTAs' unprivileged users can traverse (tempfile makes it 0700).
fn e2e_tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bogus-helo-e2e.")
        .tempdir()
        .expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

/// `capture.sh` and `delivered/`, which the MTAs' unprivileged mailer users may write.
fn capture_dir(root: &Path) -> Result<(), String> {
    let script = root.join("capture.sh");
    let delivered = root.join("delivered");
    fs::write(&script, CAPTURE_SH).map_err(|e| e.to_string())?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    fs::create_dir(&delivered).map_err(|e| e.to_string())?;
    fs::set_permissions(&delivered, fs::Permissions::from_mode(0o777)).map_err(|e| e.to_string())
}

fn chown_postfix(path: &Path) -> Result<(), String> {
    let status = Command::new("chown")
        .arg("postfix")
        .arg(path)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("chown postfix {} failed", path.display()))
    }
}

/// Whether something on `addr` greets with a 220 that names `hostname`.
fn greets_as(addr: SocketAddr, hostname: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let ok = BufReader::new(&mut stream).read_line(&mut line).is_ok()
        && line.starts_with("220 ")
        && line.contains(hostname);
    let _ = stream.write_all(b"QUIT\r\n");
    let _ = stream.read(&mut [0u8; 512]);
    ok
}

/// The queue id in the log line that names `<message_id>` (`QID: message-id=<...>` from
/// Postfix's cleanup, `QID: from=..., msgid=<...>` from Sendmail).
fn queue_id_in(log: &str, message_id: &str) -> Option<String> {
    let needle = format!("<{message_id}>");
    log.lines().find(|l| l.contains(&needle)).and_then(|line| {
        let (_, rest) = line.split_once("]: ")?;
        let (qid, _) = rest.split_once(": ")?;
        Some(qid.to_string())
    })
}

/// The recipients that a delivery line for `qid` reports as sent.
fn delivery_line_rcpts(line: &str, qid: &str) -> Option<Vec<String>> {
    let (_, rest) = line.split_once(&format!(": {qid}: to="))?;
    let sent = rest.contains(", status=sent ") || rest.contains(", stat=Sent");
    if !sent {
        return None;
    }
    // Sendmail lists several recipients of one delivery: `to=<a@x>,<b@y>, delay=...`.
    let list = rest.split(", ").next().unwrap_or("");
    Some(
        list.split(',')
            .map(|r| {
                r.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
            .collect(),
    )
}

fn delivered_in(log: &str, qid: &str, rcpt: &str) -> bool {
    log.lines()
        .filter_map(|l| delivery_line_rcpts(l, qid))
        .any(|list| list.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
}
