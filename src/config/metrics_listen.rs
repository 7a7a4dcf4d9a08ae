//! `metrics_listen`: the address of the metrics endpoint, an IP address and a port
//! (`127.0.0.1:9465`, `[::1]:9465`), or "" for none. Its own file because the mistakes
//! an administrator makes here each deserve their own message: the milter's socket
//! syntax (`inet:`), a host name, a missing port, a bare IPv6 address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The address, `None` for "" (off); `Err` is the problem, for `ConfigError::Invalid`.
pub fn parse(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let lower = text.to_ascii_lowercase();
    if ["inet:", "inet6:", "unix:", "local:"]
        .iter()
        .any(|prefix| lower.starts_with(prefix))
    {
        return Err(
            "an IP address and port without a prefix, such as \"127.0.0.1:9465\" (not the milter socket syntax): the endpoint is HTTP over TCP"
                .into(),
        );
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err("port 0 would be a random port that Prometheus cannot know; give a fixed one such as 9465".into());
        }
        return Ok(Some(addr));
    }
    Err(problem(text))
}

/// What is wrong with text that is not `IP:PORT` or `[IPv6]:PORT`.
fn problem(text: &str) -> String {
    let example = "such as \"127.0.0.1:9465\" or \"[::1]:9465\"";
    if let Ok(ip) = text.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(_) => format!("missing port: an IP address and a port, {example}"),
            IpAddr::V6(_) => {
                let mut problem = format!(
                    "an IPv6 address goes in brackets, followed by a port: \"[{ip}]:9465\""
                );
                // `2001:db8::1:9465` is an address too: perhaps the port was meant.
                if let Some((host, port)) = text.rsplit_once(':') {
                    if host.parse::<Ipv6Addr>().is_ok() && !port.is_empty() {
                        problem
                            .push_str(&format!(", or \"[{host}]:{port}\" if {port} is the port"));
                    }
                }
                problem
            }
        };
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_ok() {
            return format!("missing port: such as \"{text}:9465\"");
        }
    }
    // `::1:9465`: the port cannot be told from the address without brackets.
    if let Some((host, _)) = text.rsplit_once(':') {
        if host.parse::<Ipv6Addr>().is_ok() && !host.starts_with('[') {
            return format!(
                "an IPv6 address needs brackets around it: \"[{host}]:PORT\", {example}"
            );
        }
    }
    match text.rsplit_once(':') {
        Some((host, port)) => {
            if port.parse::<u16>().is_err() {
                format!("{port:?} is not a port number (1 to 65535); an IP address and a port, {example}")
            } else if host.trim_matches(['[', ']']).parse::<IpAddr>().is_err() {
                format!("{host:?} is not an IP address (a host name is not resolved: give the address to listen on), {example}")
            } else {
                format!("expected an IP address and a port, {example}")
            }
        }
        None => format!(
            "missing port, and {text:?} is not an IP address (a host name is not resolved); {example}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn addresses() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("  ").unwrap(), None);
        assert_eq!(
            parse("127.0.0.1:9465").unwrap(),
            Some("127.0.0.1:9465".parse().unwrap())
        );
        assert_eq!(
            parse("[::1]:9465").unwrap(),
            Some("[::1]:9465".parse().unwrap())
        );
        assert_eq!(
            parse("0.0.0.0:9465").unwrap(),
            Some("0.0.0.0:9465".parse().unwrap())
        );
        for (text, expected) in [
            ("localhost:9465", "not an IP address"),
            ("metrics.example.com", "missing port"),
            ("127.0.0.1", "missing port"),
            ("[::1]", "missing port"),
            ("::1", "in brackets, followed by a port: \"[::1]:9465\""),
            (
                "2001:db8::1:9465",
                "\"[2001:db8::1:9465]:9465\", or \"[2001:db8::1]:9465\" if 9465 is the port",
            ),
            (
                "2001:db8:0:0:0:0:0:1:9465",
                "brackets around it: \"[2001:db8:0:0:0:0:0:1]:PORT\"",
            ),
            ("127.0.0.1:0", "port 0"),
            ("[::1]:0", "port 0"),
            ("127.0.0.1:65536", "not a port number"),
            ("127.0.0.1:http", "not a port number"),
            ("inet:127.0.0.1:9465", "without a prefix"),
            ("INET6:[::1]:9465", "without a prefix"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
