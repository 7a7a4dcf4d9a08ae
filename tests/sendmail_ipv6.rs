//! Sendmail passes an IPv6 client as `IPv6:0:0:0:0:0:0:0:1` in the connect packet, a form
//! that indymilter-test cannot send: so this test speaks the milter protocol byte by byte.

mod common;

use common::milter::Milter;
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

const NR_CONN: u32 = 0x1000;
const NR_HELO: u32 = 0x2000;
const NR_MAIL: u32 = 0x4000;

struct Mta {
    stream: TcpStream,
    opts: u32,
}

impl Mta {
    fn send(&mut self, cmd: u8, payload: &[u8]) {
        let len = u32::try_from(payload.len() + 1).unwrap();
        let mut packet = len.to_be_bytes().to_vec();
        packet.push(cmd);
        packet.extend_from_slice(payload);
        self.stream.write_all(&packet).unwrap();
    }

    fn receive(&mut self) -> (u8, Vec<u8>) {
        let mut len = [0; 4];
        self.stream.read_exact(&mut len).unwrap();
        let mut packet = vec![0; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut packet).unwrap();
        (packet[0], packet[1..].to_vec())
    }

    /// Sends a command and returns the milter's answer, or `None` if it was told not to
    /// answer that stage.
    fn command(&mut self, cmd: u8, payload: &[u8], no_reply: u32) -> Option<(u8, Vec<u8>)> {
        self.send(cmd, payload);
        (self.opts & no_reply == 0).then(|| self.receive())
    }
}

fn open(milter: &Milter) -> Mta {
    let stream = TcpStream::connect(milter.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut mta = Mta { stream, opts: 0 };
    // Protocol version 6, all actions, all protocol options offered (as Sendmail does).
    let mut optneg = 6u32.to_be_bytes().to_vec();
    optneg.extend_from_slice(&0x1ffu32.to_be_bytes());
    optneg.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
    mta.send(b'O', &optneg);
    let (cmd, reply) = mta.receive();
    assert_eq!(cmd, b'O');
    mta.opts = u32::from_be_bytes(reply[8..12].try_into().unwrap());
    mta
}

#[test]
fn sendmail_ipv6_client_address_is_understood() {
    let milter = Milter::start("trusted_networks = []");
    let mut mta = open(&milter);
    let mut connect = b"client.example\0".to_vec();
    connect.push(b'6');
    connect.extend_from_slice(&25u16.to_be_bytes());
    connect.extend_from_slice(b"IPv6:0:0:0:0:0:0:0:1\0");
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
