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

/// Quotes a value from the peer for a `key=value` log field: in double quotes, with `"`
/// and `\` escaped and every control character written as `\xNN` (or `\u{NNNN}`), so
/// that no peer can split a log line or forge a field. Long values are cut.
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
            c if (c as u32) < 0x100 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{fffd}') => {
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
        let long = quote(&"a".repeat(1000));
        assert!(long.len() < 300 && long.ends_with("...\""));
    }
}
