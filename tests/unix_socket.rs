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
