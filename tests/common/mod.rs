// Each test target uses only part of these helpers.
#![allow(dead_code)]

pub mod bench;
pub mod dns_server;
pub mod in_process;
pub mod load;
pub mod milter;
pub mod mta;
pub mod null_policy;
pub mod raw;
pub mod smtp;

use std::{
    io::Write,
    time::{Duration, Instant},
};

/// Runs `make(command)` (`Command::spawn` or `Command::output`), again while it fails with
/// ETXTBSY: a binary a test copied a moment ago can still be open for writing in a child
/// that another test thread forked meanwhile (the copy's descriptor lives in the child
/// until it execs), and exec refuses a file open for writing. A few milliseconds cure it.
pub fn exec_retrying<T>(
    command: &mut std::process::Command,
    make: impl Fn(&mut std::process::Command) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match make(command) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Polls `done` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a dependency a test needs is here. When it is not: under CI (`CI` set, as
/// `.ci/run` runs in CI) the test fails saying what to install; elsewhere it prints
/// that it skips, and the caller returns.
pub fn dependency(available: bool, what: &str, install: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{what} is missing and CI is set: {install}");
    }
    // Written to the stream itself: libtest captures only `eprintln!`'s output.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what} is missing ({install}); under CI=true this fails"
    );
    false
}
