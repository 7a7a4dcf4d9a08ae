//! What the benchmarks share: the configuration of realistic size they give the milter
//! and the policy service, and the CPU time of a process from /proc.

use nix::unistd::Pid;
use std::{fmt::Write as _, fs, time::Duration};

/// A milter configuration of realistic size, as bench/protocol-bench writes it (without
/// `socket`, which the harness adds).
pub fn realistic_config() -> String {
    let mut c = String::new();
    c.push_str("action = \"reject\"\n");
    c.push_str("reply_url = \"https://www.example.com/bogus-helo.html\"\n");
    c.push_str("trusted_networks = []\n");
    c.push_str("skip_authenticated = true\n");
    c.push_str("max_connections = 2000\n");
    c.push_str("log_level = \"info\"\n");
    let names: Vec<String> = (1..=12)
        .map(|i| format!("\"mx{i}.example.com\""))
        .chain(["\"mx.example.com\"".to_string()])
        .collect();
    let _ = writeln!(c, "own_names = [{}]", names.join(", "));
    let own: Vec<String> = (0..100)
        .map(|i| format!("\"203.0.113.{i}\""))
        .chain((0..50).map(|i| format!("\"10.{i}.0.0/16\"")))
        .chain((0..49).map(|i| format!("\"2001:db8:{i:x}::/48\"")))
        .chain(["\"198.18.0.0/15\"".to_string()])
        .collect();
    let _ = writeln!(c, "own_addresses = [{}]", own.join(", "));
    let whitelist: Vec<String> = (1..300)
        .map(|i| format!("\"private{i}@customer{}.example\"", i % 40))
        .chain(["\"private@example.com\"".to_string()])
        .collect();
    let _ = writeln!(c, "whitelist = [{}]", whitelist.join(", "));
    for d in ["example.com", "example.org", "shop.example"] {
        let _ = write!(c, "\n[domains.\"{d}\"]\naction = \"reject\"\n");
    }
    let actions = ["reject", "tempfail", "log", "off"];
    for i in 0..40 {
        let _ = write!(
            c,
            "\n[domains.\"customer{i}.example\"]\naction = \"{}\"\n",
            actions[i % 4]
        );
    }
    c
}

/// From /proc/PID/stat: the parent's pid, the process's user + system CPU ticks, and
/// those of its children that it has reaped. Ticks are USER_HZ, 100 a second on Linux.
pub fn proc_stat(pid: i32) -> Option<(i32, u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name in parentheses: state is field 3, ppid 4,
    // utime 14, stime 15, cutime 16, cstime 17.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
    let ticks = |n: usize| field(n).map_or(0, |t| t.max(0) as u64);
    Some((
        field(4)? as i32,
        ticks(14) + ticks(15),
        ticks(16) + ticks(17),
    ))
}

pub fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// User + system CPU time of a process so far.
pub fn cpu_time(pid: Pid) -> Duration {
    ticks_to_duration(proc_stat(pid.as_raw()).map_or(0, |(_, own, _)| own))
}
