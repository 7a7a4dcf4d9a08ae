//! Log set-up and the quoting that keeps a peer's text on one log line.

use log::{Level, LevelFilter};
use std::{fmt::Write as _, io::Write};

/// Logs to stderr, one line per event, Postfix style: info lines bare, others prefixed
/// with their level (`warning: ...`). systemd adds the time and the program name.
/// `RUST_LOG`, when set, overrides the configured level (also across reloads).
pub fn init(level: LevelFilter) {
    let mut builder = env_logger::Builder::new();
    // The logger itself passes every level; `log`'s global maximum filters, so that a
    // reload can change the level (`set_level`).
    builder
        .filter_level(LevelFilter::Trace)
        .format(|out, record| {
            let prefix = match record.level() {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                Level::Info => "",
                Level::Debug => "debug: ",
                Level::Trace => "trace: ",
            };
            writeln!(out, "{prefix}{}", record.args())
        })
        .parse_env("RUST_LOG");
    // Only fails if a logger is set already (as in tests that run the milter in-process).
    let _ = builder.try_init();
    set_level(level);
}

/// Applies a reloaded `log_level`, unless `RUST_LOG` decides.
pub fn set_level(level: LevelFilter) {
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(level);
    }
}

/// The Unicode format characters (general category Cf, Unicode 15.1): invisible, and
/// some reorder the text around them (U+202E RIGHT-TO-LEFT OVERRIDE, the isolates
/// U+2066..U+2069), so that a peer's address would display as something else.
const FORMAT_CHARACTERS: [(u32, u32); 21] = [
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(c: char) -> bool {
    let c = c as u32;
    FORMAT_CHARACTERS
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// Quotes a value from the peer for a `key=value` log field: in double quotes, with `"`
/// and `\` escaped and every control and format character written as `\xNN` (or
/// `\u{NNNN}`), so that no peer can split a log line, forge a field, or make its text
/// display reversed or hidden. Long values are cut.
pub fn quote(value: &str) -> String {
    const MAX_CHARS: usize = 256;
    let mut out = String::with_capacity(value.len().min(MAX_CHARS) + 2);
    out.push('"');
    for (i, c) in value.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str("...");
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x100 && (c.is_control() || is_format(c)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control()
                || is_format(c)
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{fffd}') =>
            {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_keeps_one_line() {
        assert_eq!(quote("mail.example.com"), "\"mail.example.com\"");
        assert_eq!(quote("a\r\nb"), "\"a\\x0d\\x0ab\"");
        assert_eq!(quote("x\" action=reject"), "\"x\\\" action=reject\"");
        assert_eq!(quote("\u{7f}\u{85}\u{2028}"), "\"\\x7f\\x85\\u{2028}\"");
        // Format characters (Cf): bidirectional overrides and isolates, zero width.
        assert_eq!(
            quote("moc.elpmaxe\u{202e}@x\u{202c}"),
            "\"moc.elpmaxe\\u{202e}@x\\u{202c}\""
        );
        assert_eq!(
            quote("a\u{200b}\u{2066}\u{2069}\u{feff}\u{ad}\u{e0041}b"),
            "\"a\\u{200b}\\u{2066}\\u{2069}\\u{feff}\\xad\\u{e0041}b\""
        );
        // Letters of other scripts stay as they are.
        assert_eq!(quote("bücher.пример"), "\"bücher.пример\"");
        let long = quote(&"a".repeat(1000));
        assert!(long.len() < 300 && long.ends_with("...\""));
    }
}
