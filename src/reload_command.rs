//! `bogus-helo-milter reload PID`, the systemd unit's `ExecReload`: signals the milter
//! running as PID to reread its configuration, and never any other process.

use crate::{EXIT_CONFIG, EXIT_NOT_MILTER};
use bogus_helo_milter::config::{Config, ConfigError};
use std::{fs, io, os::unix::fs::MetadataExt, path::Path, process::ExitCode};

/// Sends SIGHUP to `pid` if it is this milter. A bad file is still signalled: the milter
/// rereads it, keeps the configuration in force and reports the failed reload (its log
/// line, `config_last_reload_successful` 0), so that the state an alert reads follows the
/// file on disk whichever way the reload was tried; the exit status still fails
/// `systemctl reload`. Quiet on success, as `systemctl reload` expects.
pub fn signal(pid: i32, config: Result<Config, ConfigError>) -> ExitCode {
    if let Err(what) = is_this_milter(pid) {
        eprintln!("bogus-helo-milter: reload: process {pid} {what}; nothing signalled");
        if let Err(e) = config {
            eprintln!("bogus-helo-milter: {e}");
        }
        return ExitCode::from(EXIT_NOT_MILTER);
    }
    use nix::{sys::signal, unistd::Pid};
    if let Err(e) = signal::kill(Pid::from_raw(pid), signal::Signal::SIGHUP) {
        eprintln!("bogus-helo-milter: reload: cannot signal the milter (process {pid}): {e}");
        return ExitCode::FAILURE;
    }
    match config {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bogus-helo-milter: {e}; the milter (process {pid}) keeps its configuration");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Whether process `pid` runs this program: its `/proc/PID/exe` is the same file as ours
/// (device and inode), or, after an upgrade replaced the file under the running milter
/// (the link then reads `PATH (deleted)` and the inode differs), the same path. A process
/// that runs another binary at our path is an older version of this milter. `Err` says
/// what the process is instead.
fn is_this_milter(pid: i32) -> Result<(), String> {
    let proc = format!("/proc/{pid}");
    let theirs_link = Path::new(&proc).join("exe");
    let theirs = match fs::read_link(&theirs_link) {
        Ok(path) => path,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if Path::new(&proc).exists() {
                format!(
                    "runs no program ({}: a kernel thread or an exited process)",
                    comm(&proc)
                )
            } else {
                "does not exist".to_string()
            });
        }
        Err(e) => {
            return Err(format!(
                "cannot be told to be bogus-helo-milter: {}: {e}",
                theirs_link.display()
            ))
        }
    };
    let own = fs::read_link("/proc/self/exe")
        .map_err(|e| format!("cannot be compared: /proc/self/exe: {e}"))?;
    let same_file = match (fs::metadata(&theirs_link), fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    let text = theirs.to_string_lossy();
    let replaced = text
        .strip_suffix(" (deleted)")
        .is_some_and(|path| Path::new(path) == own);
    if same_file || replaced {
        Ok(())
    } else {
        Err(format!(
            "is not bogus-helo-milter ({}) but {} ({})",
            own.display(),
            bogus_helo_milter::logging::quote(&text),
            comm(&proc)
        ))
    }
}

/// The process's name as the kernel keeps it (`sleep`), for the error message.
fn comm(proc: &str) -> String {
    fs::read_to_string(format!("{proc}/comm")).map_or_else(
        |_| "name unknown".to_string(),
        |c| format!("name {:?}", c.trim_end()),
    )
}
