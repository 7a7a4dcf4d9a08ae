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
}
