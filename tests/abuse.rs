//! Hostile and broken milter clients: each gets an answer or a closed connection, costs one
//! log line at most, and a well-behaved session running at the same time is not disturbed.

mod common;

use common::{
    milter::Milter,
    raw::{RawMta, NR_CONN, NR_HELO, NR_MAIL},
};
use std::{io::Write, net::TcpStream, time::Duration};

const CONFIG: &str = "trusted_networks = []\nidle_timeout = \"1s\"";

/// A complete, correct session with a bogus HELO: it must get the rejection.
fn normal_session(milter: &Milter) {
    let mut mta = RawMta::open(milter.addr());
    mta.command(
        b'C',
        &RawMta::connect_payload(b'4', "198.51.100.7"),
        NR_CONN,
    );
    mta.command(b'H', b"[192.0.2.9]\0", NR_HELO);
    mta.command(b'M', b"<a@example.org>\0", NR_MAIL);
    let reply = mta.command(b'R', b"<u@example.com>\0", 0);
    assert_eq!(reply, Some((b'y', b"550 5.7.1 bogus helo\0".to_vec())));
    mta.send(b'Q', b"");
}

/// Runs `abuse`, then checks that a normal session started before it still completes,
/// and that the abuse cost exactly `log_lines` session-error lines.
fn check(abuse: impl FnOnce(&Milter), log_lines: usize) {
    check_with("", abuse, log_lines);
}

/// [`check`] with `config` added to [`CONFIG`].
fn check_with(config: &str, abuse: impl FnOnce(&Milter), log_lines: usize) {
    let milter = Milter::start(&format!("{CONFIG}\n{config}"));
    let mut bystander = RawMta::open(milter.addr());
    bystander.command(
        b'C',
        &RawMta::connect_payload(b'4', "198.51.100.8"),
        NR_CONN,
    );
    bystander.command(b'H', b"example.com\0", NR_HELO);

    abuse(&milter);

    bystander.command(b'M', b"<a@example.org>\0", NR_MAIL);
    let reply = bystander.command(b'R', b"<u@example.com>\0", 0);
    assert_eq!(
        reply,
        Some((b'y', b"550 5.7.1 bogus helo matches rcpt\0".to_vec()))
    );
    bystander.send(b'Q', b"");
    normal_session(&milter);
    let errors = milter.log().matches("event=session_error").count();
    assert_eq!(errors, log_lines, "{}", milter.log());
}

#[test]
fn garbage_bytes_close_the_connection() {
    check(
        |milter| {
            let mut peer = RawMta::connect(milter.addr());
            peer.stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert!(peer.is_closed(Duration::from_secs(5)));
            assert!(milter.wait_for_log("event=session_error", Duration::from_secs(5)));
        },
        1,
    );
}

#[test]
fn a_4_gib_length_prefix_closes_the_connection() {
    check(
        |milter| {
            let mut peer = RawMta::open(milter.addr());
            peer.stream
                .write_all(&[0xff, 0xff, 0xff, 0xff, b'H'])
                .unwrap();
            assert!(peer.is_closed(Duration::from_secs(5)));
            assert!(milter.wait_for_log("event=session_error", Duration::from_secs(5)));
        },
        1,
    );
}

#[test]
fn an_unknown_command_closes_the_connection() {
    check(
        |milter| {
            let mut peer = RawMta::open(milter.addr());
            peer.send(b'Z', b"what\0");
            assert!(peer.is_closed(Duration::from_secs(5)));
            assert!(milter.wait_for_log("event=session_error", Duration::from_secs(5)));
        },
        1,
    );
}

/// Waits until `peers` are closed by the idle timeout, running normal sessions meanwhile;
/// returns how many normal sessions ran.
fn normal_sessions_until_closed(milter: &Milter, peers: &mut [RawMta]) -> usize {
    let mut sessions = 0;
    for peer in peers {
        while !peer.is_closed(Duration::from_millis(200)) {
            normal_session(milter);
            sessions += 1;
            assert!(sessions < 100, "not closed by idle_timeout");
        }
    }
    sessions
}

#[test]
fn a_truncated_packet_then_silence_times_out() {
    let milter = Milter::start(CONFIG);
    let mut peer = RawMta::open(milter.addr());
    peer.stream.write_all(&[0, 0, 0, 100, b'H', b'x']).unwrap();
    assert!(normal_sessions_until_closed(&milter, &mut [peer]) > 0);
    assert!(milter.wait_for_log("event=session_error", Duration::from_secs(5)));
    assert_eq!(milter.log().matches("event=session_error").count(), 1);
}

#[test]
fn clients_that_never_speak_time_out() {
    let milter = Milter::start(CONFIG);
    let mut silent: Vec<RawMta> = (0..20).map(|_| RawMta::connect(milter.addr())).collect();
    assert!(normal_sessions_until_closed(&milter, &mut silent) > 0);
    assert!(
        milter.wait_for(Duration::from_secs(5), |log| log
            .matches("event=session_error error=\"I/O error: timed out\"")
            .count()
            == 20),
        "{}",
        milter.log()
    );
}

#[test]
fn a_64_kib_helo_is_judged_and_logged_short() {
    check(
        |milter| {
            let long = "a".repeat(64 * 1024);
            let mut peer = RawMta::open(milter.addr());
            peer.command(
                b'C',
                &RawMta::connect_payload(b'4', "198.51.100.9"),
                NR_CONN,
            );
            peer.command(b'H', format!("{long}\0").as_bytes(), NR_HELO);
            peer.command(b'M', b"<a@example.org>\0", NR_MAIL);
            let reply = peer.command(b'R', format!("<u@{long}>\0").as_bytes(), 0);
            assert_eq!(
                reply,
                Some((b'y', b"550 5.7.1 bogus helo matches rcpt\0".to_vec()))
            );
            peer.send(b'Q', b"");
            assert!(milter.wait_for_log("client=198.51.100.9", Duration::from_secs(5)));
            let line = milter
                .log()
                .lines()
                .find(|l| l.contains("client=198.51.100.9"))
                .unwrap()
                .to_string();
            assert!(line.len() < 1000, "{} bytes", line.len());
        },
        0,
    );
}

#[test]
fn nul_and_non_utf8_bytes_are_judged() {
    check(
        |milter| {
            let mut peer = RawMta::open(milter.addr());
            peer.command(
                b'C',
                &RawMta::connect_payload(b'4', "198.51.100.9"),
                NR_CONN,
            );
            // Anything after the first NUL is not part of the name.
            peer.command(b'H', b"[192.0.2.9]\0junk\0", NR_HELO);
            peer.command(b'M', b"<a@example.org>\0", NR_MAIL);
            let reply = peer.command(b'R', b"<\xff\xfe@example.com>\0", 0);
            assert_eq!(reply, Some((b'y', b"550 5.7.1 bogus helo\0".to_vec())));
            peer.command(b'H', b"\xc3\x28[192.0.2.9]\0", NR_HELO);
            peer.command(b'M', b"<a@example.org>\0", NR_MAIL);
            let reply = peer.command(b'R', b"<u@example.com>\0", 0);
            assert_eq!(reply, Some((b'c', vec![])), "junk bytes make no IP address");
            peer.send(b'Q', b"");
        },
        0,
    );
}

#[test]
fn commands_out_of_order_are_ignored_and_the_session_goes_on() {
    check(
        |milter| {
            let mut peer = RawMta::open(milter.addr());
            peer.command(
                b'C',
                &RawMta::connect_payload(b'4', "198.51.100.9"),
                NR_CONN,
            );
            // RCPT before MAIL, and an end of message with no message: indymilter, like
            // libmilter, skips a command that its state machine cannot reach, without an
            // answer (no MTA sends these; the MTA's own timeout would end its wait).
            peer.send(b'R', b"<u@example.com>\0");
            peer.send(b'E', b"");
            peer.command(b'H', b"[192.0.2.9]\0", NR_HELO);
            peer.command(b'M', b"<a@example.org>\0", NR_MAIL);
            let reply = peer.command(b'R', b"<u@example.com>\0", 0);
            assert_eq!(reply, Some((b'y', b"550 5.7.1 bogus helo\0".to_vec())));
            peer.send(b'Q', b"");
            assert!(!milter.log().contains("event=session_error"));
        },
        0,
    );
}

#[test]
fn a_peer_that_hangs_up_is_no_error() {
    check_with(
        "log_level = \"debug\"",
        |milter| {
            let ended = "debug: event=session_end peer_closed_without_quit";
            // The harness's own probe that the milter listens is one already.
            let before = milter.log().matches(ended).count();
            let mut peer = RawMta::open(milter.addr());
            peer.command(
                b'C',
                &RawMta::connect_payload(b'4', "198.51.100.9"),
                NR_CONN,
            );
            drop(peer);
            // Nor does a health check's connect-and-close.
            drop(TcpStream::connect(milter.addr()).unwrap());
            // Both sessions have ended: what they cost in the log is written by then.
            assert!(
                milter.wait_for(Duration::from_secs(10), |log| log.matches(ended).count()
                    == before + 2),
                "{}",
                milter.log()
            );
        },
        // A peer that simply hangs up is no error: no warning.
        0,
    );
}

#[test]
fn running_out_of_file_descriptors_is_survived() {
    use common::milter::{free_port, BIN};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let config = dir.path().join("milter.conf");
    std::fs::write(&config, format!("socket = \"inet:{addr}\"\n{CONFIG}\n")).unwrap();
    let log = dir.path().join("milter.log");
    // 64 descriptors: some for the runtime, the rest for connections.
    let mut child = Command::new("prlimit")
        .args(["--nofile=64:64", "--"])
        .arg(BIN)
        .arg("-c")
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "milter did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // More connections than descriptors: the surplus wait in the listen queue.
    let held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !read_log().contains("event=accept error=") {
        assert!(std::time::Instant::now() < deadline, "{}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    // Once descriptors are free again, sessions get their verdicts.
    let mut done = false;
    for _ in 0..100 {
        let mut mta = RawMta::connect(addr);
        mta.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut optneg = 6u32.to_be_bytes().to_vec();
        optneg.extend_from_slice(&0x1ffu32.to_be_bytes());
        optneg.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
        mta.send(b'O', &optneg);
        if mta.receive().is_ok() {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        done,
        "no session after the descriptors came back:\n{}",
        read_log()
    );
    let mut mta = RawMta::open(addr);
    mta.command(
        b'C',
        &RawMta::connect_payload(b'4', "198.51.100.7"),
        NR_CONN,
    );
    mta.command(b'H', b"[192.0.2.9]\0", NR_HELO);
    mta.command(b'M', b"<a@example.org>\0", NR_MAIL);
    let reply = mta.command(b'R', b"<u@example.com>\0", 0);
    assert_eq!(reply, Some((b'y', b"550 5.7.1 bogus helo\0".to_vec())));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the milter is still running"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        read_log().matches("event=accept error=").count(),
        1,
        "warned once, not per retry:\n{}",
        read_log()
    );
}
