//! A milter-protocol client that writes the packets byte by byte, for what a well-behaved
//! client library cannot send: Sendmail's odd address forms, garbage, broken packets.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

pub const NR_CONN: u32 = 0x1000;
pub const NR_HELO: u32 = 0x2000;
pub const NR_MAIL: u32 = 0x4000;

pub struct RawMta {
    pub stream: TcpStream,
    /// The protocol options the milter negotiated.
    pub opts: u32,
}

impl RawMta {
    /// Connects without negotiating.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self { stream, opts: 0 }
    }

    /// Connects and negotiates protocol version 6 with all actions and protocol options
    /// offered, as Sendmail and Postfix do.
    pub fn open(addr: SocketAddr) -> Self {
        let mut mta = Self::connect(addr);
        let mut optneg = 6u32.to_be_bytes().to_vec();
        optneg.extend_from_slice(&0x1ffu32.to_be_bytes());
        optneg.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
        mta.send(b'O', &optneg);
        let (cmd, reply) = mta.receive().unwrap();
        assert_eq!(cmd, b'O');
        mta.opts = u32::from_be_bytes(reply[8..12].try_into().unwrap());
        mta
    }

    pub fn send(&mut self, cmd: u8, payload: &[u8]) {
        let len = u32::try_from(payload.len() + 1).unwrap();
        let mut packet = len.to_be_bytes().to_vec();
        packet.push(cmd);
        packet.extend_from_slice(payload);
        self.stream.write_all(&packet).unwrap();
    }

    pub fn receive(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut len = [0; 4];
        self.stream.read_exact(&mut len)?;
        let mut packet = vec![0; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut packet)?;
        Ok((packet[0], packet[1..].to_vec()))
    }

    /// Sends a command and returns the answer, or `None` if the milter asked not to
    /// answer this stage (`no_reply`, one of the `NR_*` bits).
    pub fn command(&mut self, cmd: u8, payload: &[u8], no_reply: u32) -> Option<(u8, Vec<u8>)> {
        self.send(cmd, payload);
        (self.opts & no_reply == 0).then(|| self.receive().unwrap())
    }

    /// The connect packet for an IPv4 or IPv6 client address as the MTA writes it.
    pub fn connect_payload(family: u8, addr: &str) -> Vec<u8> {
        let mut payload = b"client.example\0".to_vec();
        payload.push(family);
        payload.extend_from_slice(&25u16.to_be_bytes());
        payload.extend_from_slice(addr.as_bytes());
        payload.push(0);
        payload
    }

    /// Whether the milter has closed the connection: a read gets end of file (or a reset).
    pub fn is_closed(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut byte = [0; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}
