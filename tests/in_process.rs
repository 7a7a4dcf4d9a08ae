//! The milter and the policy service inside the test, with facts about the host that the
//! test injects (`common::in_process`): what no binary-driven test can show, since the
//! binary reads the facts of the machine it runs on.

mod common;

use common::{in_process::InProcess, in_process::TestHost};
use indymilter_test::{MacroStage, Status, TestConnection};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    ffi::CString,
    net::SocketAddr,
    time::{Duration, Instant},
};

/// The tests connect from 198.51.100.7, which no setting trusts. A reload (a SIGHUP
/// reaches every run in this process) sets the log level: debug, for the exemption lines.
const CONFIG: &str = "trusted_networks = []\nlog_level = \"debug\"\n";

fn reject(text: &str) -> Status {
    Status::Reject {
        message: Some(CString::new(format!("550 5.7.1 {text}")).unwrap()),
    }
}

/// The milter's verdict on one recipient, from an MTA that sends `j` but no
/// `{daemon_addr}` or `{if_addr}`: the only own addresses are the host's and the config's.
async fn milter_verdict(addr: SocketAddr, helo: &str, rcpt: &str) -> Status {
    let mut conn = TestConnection::open(addr).await.expect("open");
    conn.macros(MacroStage::Connect, [("j", "mx.example.com")])
        .await
        .expect("macros");
    conn.connect("client.example.net", [198, 51, 100, 7])
        .await
        .expect("connect");
    conn.helo(helo).await.expect("helo");
    conn.mail(["<sender@example.org>"]).await.expect("mail");
    let status = conn.rcpt([format!("<{rcpt}>")]).await.expect("rcpt");
    conn.abort().await.expect("abort");
    conn.close().await.expect("close");
    status
}

/// Waits (generously) until `check` holds, asking again every 20 ms.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_ip_comes_from_an_injected_interface_address() {
    let host = TestHost::new(&["192.0.2.25", "2001:db8::25"], None);
    let service = InProcess::start(CONFIG, host).await;
    let own = milter_verdict(service.milter, "[192.0.2.25]", "user@example.com").await;
    assert_eq!(own, reject("bogus helo 192.0.2.25"));
    let own = milter_verdict(service.milter, "[IPv6:2001:db8::25]", "u@example.com").await;
    assert_eq!(own, reject("bogus helo 2001:db8::25"));
    // An address of no interface is just an IP address.
    let other = milter_verdict(service.milter, "[192.0.2.26]", "user@example.com").await;
    assert_eq!(other, reject("bogus helo"));
    service.stop().await.expect("run ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_interfaces_false_leaves_the_interface_addresses_out() {
    let host = TestHost::new(&["192.0.2.25"], None);
    let config = format!("{CONFIG}own_interfaces = false\nown_addresses = [\"203.0.113.5\"]\n");
    let service = InProcess::start(&config, host).await;
    let status = milter_verdict(service.milter, "[192.0.2.25]", "user@example.com").await;
    assert_eq!(status, reject("bogus helo"));
    let answer = service.ask_policy("[192.0.2.25]", "user@example.com").await;
    assert_eq!(answer, "action=550 5.7.1 bogus helo");
    // own_addresses still count.
    let status = milter_verdict(service.milter, "[203.0.113.5]", "user@example.com").await;
    assert_eq!(status, reject("bogus helo 203.0.113.5"));
    service.stop().await.expect("run ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_service_knows_the_injected_host_name() {
    let host = TestHost::new(&[], Some("MX.Injected.Example."));
    let service = InProcess::start(CONFIG, host).await;
    let answer = service
        .ask_policy("mx.injected.example", "user@example.org")
        .await;
    assert_eq!(answer, "action=550 5.7.1 bogus helo matches rcpt");
    // The milter knows the MTA's own name from `j`, not this host's.
    let status = milter_verdict(service.milter, "mx.injected.example", "user@example.org").await;
    assert_eq!(status, Status::Continue);
    service.stop().await.expect("run ends cleanly");

    // A single-label host name never counts.
    let host = TestHost::new(&[], Some("mx"));
    let service = InProcess::start(CONFIG, host).await;
    let answer = service.ask_policy("mx", "user@example.org").await;
    assert_eq!(answer, "action=DUNNO");
    service.stop().await.expect("run ends cleanly");
}

/// Interface addresses and host name are read again at each reload, both alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_the_host_facts() {
    let host = TestHost::new(&["192.0.2.25"], Some("old.example.net"));
    let service = InProcess::start(CONFIG, host).await;
    assert_eq!(
        service.ask_policy("new.example.net", "u@example.org").await,
        "action=DUNNO"
    );
    assert_eq!(
        milter_verdict(service.milter, "[192.0.2.26]", "u@example.com").await,
        reject("bogus helo")
    );
    service.host.set(&["192.0.2.26"], Some("new.example.net"));
    // A SIGHUP reaches every run in this process; each rereads its own config file.
    kill(Pid::this(), Signal::SIGHUP).expect("SIGHUP");
    assert!(
        eventually(|| async {
            service.ask_policy("new.example.net", "u@example.org").await
                == "action=550 5.7.1 bogus helo matches rcpt"
        })
        .await,
        "the new host name never applied"
    );
    assert_eq!(
        milter_verdict(service.milter, "[192.0.2.26]", "u@example.com").await,
        reject("bogus helo 192.0.2.26")
    );
    assert_eq!(
        milter_verdict(service.milter, "[192.0.2.25]", "u@example.com").await,
        reject("bogus helo")
    );
    service.stop().await.expect("run ends cleanly");
}

/// The log lines of every `run` in this process, as `logging` writes them.
fn logged() -> &'static std::sync::Mutex<Vec<String>> {
    static LINES: std::sync::OnceLock<std::sync::Mutex<Vec<String>>> = std::sync::OnceLock::new();
    LINES.get_or_init(Default::default)
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        logged().lock().unwrap().push(record.args().to_string());
    }

    fn flush(&self) {}
}

/// The lines logged so far that name `rcpt`.
fn lines_for(rcpt: &str) -> Vec<String> {
    let needle = format!("rcpt=\"{rcpt}\"");
    let lines = logged().lock().unwrap();
    lines
        .iter()
        .filter(|l| l.contains(&needle))
        .cloned()
        .collect()
}

/// One judge: the same facts through either front end give the same log line but for
/// `via=`, for every action, while each front end answers in its own protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_front_ends_log_one_judgement_alike() {
    static CAPTURE: Capture = Capture;
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let config = format!(
        "{CONFIG}whitelist = [\"private@judge.example\"]\n\
         [domains.\"tempfail.judge.example\"]\naction = \"tempfail\"\n\
         [domains.\"log.judge.example\"]\naction = \"log\"\n\
         [domains.\"tag.judge.example\"]\naction = \"tag\"\n"
    );
    let service = InProcess::start(&config, TestHost::new(&[], None)).await;
    let helo = "[192.0.2.9]";
    let cases = [
        (
            "u@judge.example",
            "action=550 5.7.1 bogus helo",
            "action=reject rule=ip client=198.51.100.7 helo=\"[192.0.2.9]\" rcpt=\"u@judge.example\" reply=\"550 5.7.1 bogus helo\"",
        ),
        (
            "u@tempfail.judge.example",
            "action=450 4.7.1 bogus helo",
            "action=tempfail rule=ip client=198.51.100.7 helo=\"[192.0.2.9]\" rcpt=\"u@tempfail.judge.example\" reply=\"450 4.7.1 bogus helo\"",
        ),
        (
            "u@log.judge.example",
            "action=DUNNO",
            "action=log rule=ip client=198.51.100.7 helo=\"[192.0.2.9]\" rcpt=\"u@log.judge.example\" would_reply=\"550 5.7.1 bogus helo\"",
        ),
        (
            "u@tag.judge.example",
            "action=PREPEND X-Bogus-HELO: rule=ip helo=\"[192.0.2.9]\" client=198.51.100.7",
            "action=tag rule=ip client=198.51.100.7 helo=\"[192.0.2.9]\" rcpt=\"u@tag.judge.example\" header=\"X-Bogus-HELO: rule=ip helo=\\\"[192.0.2.9]\\\" client=198.51.100.7\"",
        ),
        (
            "private@judge.example",
            "action=DUNNO",
            "action=accept exempt=whitelist rule=ip client=198.51.100.7 helo=\"[192.0.2.9]\" rcpt=\"private@judge.example\"",
        ),
    ];
    for (rcpt, answer, line) in cases {
        milter_verdict(service.milter, helo, rcpt).await;
        assert_eq!(service.ask_policy(helo, rcpt).await, answer, "{rcpt}");
        // Logged before the answer went out: both lines are there now.
        let lines = lines_for(rcpt);
        assert_eq!(
            lines,
            [format!("{line} via=milter"), format!("{line} via=policy")],
            "{rcpt}"
        );
    }
    service.stop().await.expect("run ends cleanly");
}
