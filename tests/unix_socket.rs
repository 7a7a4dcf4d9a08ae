//! The milter on a unix socket: created with the configured mode and group, answering
//! as on TCP, and removed at exit.

mod common;

use common::milter::BIN;
use indymilter_test::{Status, TestConnection};
use std::{
    ffi::CString,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

#[tokio::test]
async fn unix_socket_with_mode_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("milter.sock");
    let config = dir.path().join("milter.conf");
    fs::write(
        &config,
        format!(
            "socket = \"unix:{}\"\nsocket_mode = \"0620\"\nsocket_group = \"mail\"\ntrusted_networks = []\n",
            socket.display()
        ),
    )
    .unwrap();
    // A stale socket file from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        if let Ok(conn) = TestConnection::configure().open_unix(&socket).await {
            break conn;
        }
        assert!(Instant::now() < deadline, "milter did not listen");
        sleep(Duration::from_millis(20));
    };

    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o620);
    let mail = nix::unistd::Group::from_name("mail").unwrap().unwrap();
    assert_eq!(meta.gid(), mail.gid.as_raw());

    conn.connect("client", [198, 51, 100, 7]).await.unwrap();
    conn.helo("[192.0.2.9]").await.unwrap();
    conn.mail(["<a@example.org>"]).await.unwrap();
    let status = conn.rcpt(["<u@example.com>"]).await.unwrap();
    let reply = CString::new("550 5.7.1 bogus helo").unwrap();
    assert_eq!(
        status,
        Status::Reject {
            message: Some(reply)
        }
    );
    conn.close().await.unwrap();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists(), "socket removed at exit");
}

fn start(config: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .arg("-c")
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts an instance that must refuse to start; returns what it said.
fn refused_start(config: &std::path::Path) -> String {
    let out = Command::new(BIN).arg("-c").arg(config).output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_for_socket(socket: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "milter did not listen");
        sleep(Duration::from_millis(20));
    }
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap()
}

/// A second instance on the same socket refuses to start, and the first keeps serving;
/// an instance whose socket file another one replaced leaves that file alone at exit.
#[test]
fn a_second_instance_never_takes_over_a_live_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("milter.sock");
    let config = dir.path().join("milter.conf");
    fs::write(&config, format!("socket = \"unix:{}\"\n", socket.display())).unwrap();

    let mut first = start(&config);
    wait_for_socket(&socket);
    let inode = fs::metadata(&socket).unwrap().ino();

    let stderr = refused_start(&config);
    assert!(
        stderr.contains("another process is listening on") && stderr.contains("milter.sock"),
        "{stderr}"
    );
    assert_eq!(
        fs::metadata(&socket).unwrap().ino(),
        inode,
        "socket replaced"
    );
    std::os::unix::net::UnixStream::connect(&socket).expect("the first still answers");

    // Someone removes the first one's file and a third instance binds the path anew.
    fs::remove_file(&socket).unwrap();
    let mut third = start(&config);
    wait_for_socket(&socket);
    assert!(terminate(&mut first).success());
    std::os::unix::net::UnixStream::connect(&socket).expect("the third's socket is left alone");
    assert!(terminate(&mut third).success());
    assert!(!socket.exists(), "the third removes its own socket");

    // A file that is not a socket is never replaced.
    fs::write(&socket, "not a socket").unwrap();
    let stderr = refused_start(&config);
    assert!(
        stderr.contains("exists and is not a socket; refusing to replace it"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&socket).unwrap(), "not a socket");
}
