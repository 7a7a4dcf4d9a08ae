//! The host's own addresses, which a HELO must not claim.

use log::warn;
use std::net::IpAddr;

/// The addresses of all network interfaces; on failure none, with a warning, since the
/// configured `own_addresses` and the MTA's `{daemon_addr}` still work.
pub fn addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => {
            let mut ips: Vec<IpAddr> = interfaces.iter().map(|i| i.ip().to_canonical()).collect();
            ips.sort();
            ips.dedup();
            ips
        }
        Err(e) => {
            warn!(
                "event=interfaces error={:?} own addresses are only the configured ones",
                e.to_string()
            );
            Vec::new()
        }
    }
}
