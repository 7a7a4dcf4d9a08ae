//! Sendmail passes an IPv6 client as `IPv6:0:0:0:0:0:0:0:1` in the connect packet, a form
//! that indymilter-test cannot send: so this test speaks the milter protocol byte by byte.

mod common;

use common::{
    milter::Milter,
    raw::{RawMta, NR_CONN, NR_HELO, NR_MAIL},
};
use std::time::Duration;

#[test]
fn sendmail_ipv6_client_address_is_understood() {
    let milter = Milter::start("trusted_networks = []");
    let mut mta = RawMta::open(milter.addr());
    let connect = RawMta::connect_payload(b'6', "IPv6:0:0:0:0:0:0:0:1");
    if let Some((cmd, _)) = mta.command(b'C', &connect, NR_CONN) {
        assert_eq!(cmd, b'c', "continue, not the connection dropped");
    }
    mta.command(b'H', b"[IPv6:::1]\0", NR_HELO);
    mta.command(b'M', b"<sender@example.org>\0", NR_MAIL);
    let (cmd, text) = mta.command(b'R', b"<user@example.com>\0", 0).unwrap();
    assert_eq!(cmd, b'y', "a reply code, not the connection dropped");
    assert_eq!(text, b"550 5.7.1 bogus helo ::1\0");
    assert!(
        milter.wait_for_log("client=::1 ", Duration::from_secs(5)),
        "the client address is logged as parsed: {}",
        milter.log()
    );
    mta.send(b'Q', b"");
}
