//! A null Postfix policy service for the benchmarks' baseline: it reads each request to
//! its empty line and answers `action=DUNNO`, deciding nothing. A thread per connection
//! with blocking I/O, the least a policy service can do; in this process, on a free
//! loopback port, with its connection threads' CPU time counted ([`NullPolicy::cpu`]).

use nix::time::{clock_gettime, ClockId};
use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

pub struct NullPolicy {
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// The thread ids of the live connection threads.
    live: Mutex<Vec<i32>>,
    /// The CPU time (ns) of the connection threads that have ended.
    ended_ns: AtomicU64,
    stopped: AtomicBool,
}

/// The CPU time of thread `tid` of this process so far, in nanoseconds: its CPU-time
/// clock, as glibc's `pthread_getcpuclockid` makes the clock id (`MAKE_THREAD_CPUCLOCK`:
/// the complement of the thread id, shifted, with the per-thread and scheduler bits).
/// /proc's ticks (10 ms) are too coarse for threads that run a few ms each.
fn thread_cpu_ns(tid: i32) -> u64 {
    let id = ClockId::from_raw((!tid << 3) | 4 | 2);
    clock_gettime(id).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

impl NullPolicy {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the null policy service");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_state.stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = accept_state.clone();
                thread::spawn(move || serve(stream, &state));
            }
        });
        Self { addr, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CPU time of the connection threads so far, ended and live.
    pub fn cpu(&self) -> Duration {
        let live: u64 = self
            .state
            .live
            .lock()
            .map(|tids| tids.iter().map(|&tid| thread_cpu_ns(tid)).sum())
            .unwrap_or(0);
        Duration::from_nanos(live + self.state.ended_ns.load(Ordering::Relaxed))
    }
}

impl Drop for NullPolicy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, state: &State) {
    let tid = nix::unistd::gettid().as_raw();
    if let Ok(mut live) = state.live.lock() {
        live.push(tid);
    }
    let _ = stream.set_nodelay(true);
    if let Ok(mut writer) = stream.try_clone() {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        'requests: loop {
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break 'requests,
                    Ok(_) if line == "\n" => break,
                    Ok(_) => {}
                }
            }
            if writer.write_all(b"action=DUNNO\n\n").is_err() {
                break;
            }
        }
    }
    // Counted before the thread leaves the live list, so that no tick is lost or counted
    // twice by a concurrent `cpu()` (which may read this thread's ticks just before).
    if let Ok(mut live) = state.live.lock() {
        state
            .ended_ns
            .fetch_add(thread_cpu_ns(tid), Ordering::Relaxed);
        live.retain(|&t| t != tid);
    }
}
