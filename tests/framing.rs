//! Packets and requests cut and joined however TCP delivers them (issue 22): a milter
//! connection reads a packet header straight from the socket and the rest through a small
//! buffer released once consumed, a payload too large for it straight into its own; a
//! policy connection reads a request through a buffer that exists only while requests
//! arrive. Each case must be read whole, whatever the cuts.

mod common;

use common::{
    milter::Milter,
    raw::{RawMta, NR_CONN, NR_HELO, NR_MAIL},
};
use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    time::Duration,
};

const CONFIG: &str = "trusted_networks = []\n";

/// A milter packet as the MTA writes it.
fn packet(cmd: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = u32::try_from(payload.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    bytes.push(cmd);
    bytes.extend_from_slice(payload);
    bytes
}

/// Connect, HELO `helo`, MAIL and RCPT to `rcpt`, as one run of bytes.
fn session_packets(helo: &str, rcpt: &str) -> Vec<u8> {
    [
        packet(b'C', &RawMta::connect_payload(b'4', "198.51.100.7")),
        packet(b'H', format!("{helo}\0").as_bytes()),
        packet(b'M', b"<a@example.org>\0"),
        packet(b'R', format!("<{rcpt}>\0").as_bytes()),
    ]
    .concat()
}

/// Writes `bytes` one at a time, each in a segment of its own, with a pause after every
/// 32 so that the reader gets them in pieces rather than all at once (the pauses make
/// the cuts likely, they assert nothing).
fn write_byte_by_byte(stream: &mut TcpStream, bytes: &[u8]) {
    stream.set_nodelay(true).unwrap();
    for (i, byte) in bytes.iter().enumerate() {
        stream.write_all(&[*byte]).unwrap();
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The milter must answer only the RCPT: it negotiates no reply for connect, HELO and MAIL.
fn negotiated(milter: &Milter) -> RawMta {
    let mta = RawMta::open(milter.addr());
    let no_reply = NR_CONN | NR_HELO | NR_MAIL;
    assert_eq!(mta.opts & no_reply, no_reply, "options {:#x}", mta.opts);
    mta
}

#[test]
fn milter_packets_split_byte_by_byte_are_read_whole() {
    let milter = Milter::start(CONFIG);
    // A HELO name longer than the read buffer (512 bytes), and a short one.
    let long = format!("{}.example.com", "a".repeat(600));
    for (helo, rcpt, reply) in [
        (
            long.as_str(),
            format!("u@{long}"),
            "550 5.7.1 bogus helo matches rcpt",
        ),
        (
            "[192.0.2.9]",
            "u@example.com".into(),
            "550 5.7.1 bogus helo",
        ),
    ] {
        let mut mta = negotiated(&milter);
        write_byte_by_byte(&mut mta.stream, &session_packets(helo, &rcpt));
        let expected = (b'y', format!("{reply}\0").into_bytes());
        assert_eq!(
            mta.receive().unwrap(),
            expected,
            "HELO of {} bytes",
            helo.len()
        );
        mta.send(b'Q', b"");
    }
}

#[test]
fn milter_packets_joined_in_one_write_are_read_whole_at_every_offset() {
    let milter = Milter::start(CONFIG);
    // The connect packet is some 40 bytes and the HELO packet's header follows it: HELO
    // names of these lengths put the MAIL and RCPT headers (and the HELO's end) across
    // the 512-byte reads of the milter's buffer, one byte further each time.
    for len in 440..=520 {
        let helo = format!("{}.example.com", "b".repeat(len));
        let mut mta = negotiated(&milter);
        mta.stream
            .write_all(&session_packets(&helo, &format!("u@{helo}")))
            .unwrap();
        assert_eq!(
            mta.receive().unwrap(),
            (b'y', b"550 5.7.1 bogus helo matches rcpt\0".to_vec()),
            "HELO of {} bytes",
            helo.len()
        );
        mta.send(b'Q', b"");
    }
}

/// A request as Postfix sends it at RCPT, the attributes the decision uses and padding.
fn policy_request(helo: &str, padding: usize) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=198.51.100.7\n\
         client_name=unknown\nhelo_name={helo}\nsender=a@example.org\n\
         recipient=u@example.com\nccert_subject={}\ninstance=1.2.3\n\n",
        "s".repeat(padding)
    )
}

/// Reads one answer (lines up to the empty one) and returns it without the empty line.
fn policy_answer(reader: &mut BufReader<TcpStream>) -> String {
    let mut answer = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "closed: {answer:?}"
        );
        if line == "\n" {
            return answer;
        }
        answer.push_str(&line);
    }
}

#[test]
fn policy_requests_split_byte_by_byte_or_joined_are_answered_whole() {
    let service = Milter::start_policy(CONFIG, false);
    let mut stream = TcpStream::connect(service.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    const REJECT: &str = "action=550 5.7.1 bogus helo\n";
    const DUNNO: &str = "action=DUNNO\n";

    // Longer than the 4 KiB read buffer, byte by byte.
    let long = policy_request("[192.0.2.9]", 6000);
    write_byte_by_byte(&mut stream, long.as_bytes());
    assert_eq!(policy_answer(&mut reader), REJECT);

    // Two requests in one write, the second past the end of the first read: both are
    // answered, in order, on the same connection.
    let joined = policy_request("mail.example.net", 4000) + &policy_request("[192.0.2.9]", 10);
    stream.write_all(joined.as_bytes()).unwrap();
    assert_eq!(policy_answer(&mut reader), DUNNO);
    assert_eq!(policy_answer(&mut reader), REJECT);

    // And a short one after the connection was idle.
    stream
        .write_all(policy_request("[192.0.2.9]", 0).as_bytes())
        .unwrap();
    assert_eq!(policy_answer(&mut reader), REJECT);
}
