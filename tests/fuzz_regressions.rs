//! The fuzz targets' properties (fuzz/properties.rs) on stable Rust: every input kept in
//! fuzz/regressions/, and a fixed stream of pseudo-random inputs.

#[path = "../fuzz/properties.rs"]
mod properties;

use arbitrary::{Arbitrary, Unstructured};
use std::{fs, path::Path};

fn kept_inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    inputs.sort();
    inputs
}

fn decision(bytes: &[u8]) {
    if let Ok(input) = properties::DecisionInput::arbitrary_take_rest(Unstructured::new(bytes)) {
        properties::decision(&input);
    }
}

#[test]
fn kept_inputs_keep_the_properties() {
    for input in kept_inputs("helo") {
        properties::helo(&input);
    }
    for input in kept_inputs("config") {
        properties::config(&input);
    }
    for input in kept_inputs("decision") {
        decision(&input);
    }
    // The kept requests reach every kind of answer, so the property is not vacuous.
    let mut answers = Vec::new();
    for input in kept_inputs("policy") {
        answers.extend(properties::policy(&input));
    }
    for start in [
        "action=DUNNO\n",
        "action=550 5.7.1 bogus helo",
        "action=450 4.7.1 bogus helo",
        "action=PREPEND ",
    ] {
        assert!(
            answers.iter().any(|a| a.starts_with(start.as_bytes())),
            "no kept input is answered {start:?}"
        );
    }
}

/// One to three requests as Postfix sends them at RCPT, with a HELO, recipient and
/// instance of the policy's names or random bytes (no LF: the values stay values), so
/// that the decision and the tag header meet hostile text; then random bytes.
fn random_requests(random: &mut Random, any: &[u8]) -> Vec<u8> {
    let choose = |random: &mut Random, known: &[&str]| -> Vec<u8> {
        let n = (random.next() % (known.len() as u64 + 1)) as usize;
        match known.get(n) {
            Some(text) => text.as_bytes().to_vec(),
            None => random
                .bytes(30, any)
                .into_iter()
                .filter(|&b| b != b'\n')
                .collect(),
        }
    };
    let mut out = Vec::new();
    for _ in 0..1 + random.next() % 3 {
        let helo = choose(random, &["[198.51.100.9]", "[192.0.2.25]", "tag.example"]);
        let mut rcpt = choose(random, &["u@example.com", "u@tempfail.example"]);
        if random.next() & 1 == 0 {
            rcpt.extend_from_slice(b"@tag.example");
        }
        let instance = choose(random, &["1", "2"]);
        for (name, value) in [
            (&b"request"[..], &b"smtpd_access_policy"[..]),
            (b"protocol_state", b"RCPT"),
            (b"client_address", b"198.51.100.7"),
            (b"server_address", b"192.0.2.25"),
            (b"helo_name", &helo),
            (b"recipient", &rcpt),
            (b"instance", &instance),
        ] {
            out.extend_from_slice(name);
            out.push(b'=');
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out.extend(random.bytes(20, any));
    out
}

/// xorshift64*: deterministic, so that a failure here can be replayed.
struct Random(u64);

impl Random {
    fn bytes(&mut self, max_len: usize, alphabet: &[u8]) -> Vec<u8> {
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect()
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_inputs_keep_the_properties() {
    let all: Vec<u8> = (0..=255).collect();
    let helo_like = b"[]:.0123456789abcdefABCDEFIPv6:x@+<>\r\n\0 %\"\\";
    let toml_like = b"[]=\"\\ \n.,#0123456789abcdefloguthrjecnmp_sdw:/@";
    let mut random = Random(0x5eed_1234_abcd_ef01);
    for _ in 0..20_000 {
        properties::helo(&random.bytes(40, helo_like));
        properties::helo(&random.bytes(40, &all));
        decision(&random.bytes(300, &all));
    }
    for _ in 0..2_000 {
        properties::config(&random.bytes(120, toml_like));
    }
    // Requests: attribute lines and empty lines in any order, then any bytes at all.
    let request_like = b"=\n\n\r\0[]:.@<>\"\\ 0123456789abcdefrequstpolinam_RCPTVY";
    let mut prepends = 0;
    for _ in 0..5_000 {
        properties::policy(&random.bytes(200, request_like));
        properties::policy(&random.bytes(200, &all));
        let answers = properties::policy(&random_requests(&mut random, &all));
        prepends += answers
            .iter()
            .filter(|a| a.starts_with(b"action=PREPEND "))
            .count();
    }
    assert!(
        prepends > 100,
        "{prepends} tag headers: the requests miss the decision"
    );
}
