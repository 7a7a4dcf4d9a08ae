// Each test target uses only part of these helpers.
#![allow(dead_code)]

pub mod bench;
pub mod in_process;
pub mod load;
pub mod milter;
pub mod mta;
pub mod null_policy;
pub mod raw;
pub mod smtp;

use std::time::{Duration, Instant};

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
