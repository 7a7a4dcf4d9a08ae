//! A set of IP networks with a lookup that stays fast for hundreds of entries: the
//! networks are merged into sorted, disjoint ranges and searched by bisection.

use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct AddressSet {
    /// As configured, for display.
    networks: Vec<IpNet>,
    /// Disjoint, sorted, inclusive ranges, one list per address family: an IPv6 network,
    /// even `::/0`, never holds an IPv4 address.
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

/// An IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120`) is the IPv4 network it maps, as
/// an IPv4-mapped address is the IPv4 address.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(v4.into(), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn merged(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

impl AddressSet {
    pub fn new(networks: Vec<IpNet>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in networks.iter().map(|&net| canonical(net)) {
            let range = (number(net.network()), number(net.broadcast()));
            match net {
                IpNet::V4(_) => v4.push(range),
                IpNet::V6(_) => v6.push(range),
            }
        }
        Self {
            networks,
            v4: merged(v4),
            v6: merged(v6),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let ranges = match ip {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        let n = number(ip);
        // The last range starting at or before `n` is the only one that can hold it.
        let i = ranges.partition_point(|&(start, _)| start <= n);
        i > 0 && n <= ranges[i - 1].1
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }

    pub fn extend(&mut self, more: impl IntoIterator<Item = IpNet>) {
        let mut networks = std::mem::take(&mut self.networks);
        networks.extend(more);
        *self = Self::new(networks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> AddressSet {
        AddressSet::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn has(set: &AddressSet, ip: &str) -> bool {
        set.contains(ip.parse().unwrap())
    }

    #[test]
    fn lookups() {
        let s = set(&[
            "192.0.2.0/24",
            "192.0.2.128/25",
            "198.51.100.7/32",
            "2001:db8::/64",
            "10.0.0.0/8",
            "11.0.0.0/8",
        ]);
        for ip in [
            "192.0.2.0",
            "192.0.2.255",
            "198.51.100.7",
            "2001:db8::1",
            "10.255.0.1",
            "11.0.0.0",
            "::ffff:192.0.2.9",
        ] {
            assert!(has(&s, ip), "{ip}");
        }
        for ip in [
            "192.0.3.0",
            "192.0.1.255",
            "198.51.100.8",
            "2001:db8:0:1::1",
            "12.0.0.0",
            "::1",
            "0.0.0.0",
        ] {
            assert!(!has(&s, ip), "{ip}");
        }
        assert!(!has(&set(&[]), "127.0.0.1"));
        assert!(has(&set(&["0.0.0.0/0"]), "203.0.113.1"));
        assert!(!has(&set(&["0.0.0.0/0"]), "2001:db8::1"));
        assert!(has(&set(&["::/0"]), "2001:db8::1"));
    }

    #[test]
    fn families_never_mix() {
        for net in ["::/0", "::/64", "::ffff:0:0/95", "::/96"] {
            for ip in ["192.0.2.9", "0.0.0.1", "::ffff:192.0.2.9"] {
                assert!(!has(&set(&[net]), ip), "{net} holds {ip}");
            }
        }
        // An IPv4-mapped network is the IPv4 network it maps.
        let mapped = set(&["::ffff:192.0.2.0/120"]);
        assert!(has(&mapped, "192.0.2.9"));
        assert!(has(&mapped, "::ffff:192.0.2.9"));
        assert!(!has(&mapped, "192.0.3.9"));
        assert!(!has(&set(&["0.0.0.0/0"]), "::"));
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        let nets: Vec<IpNet> = (0..200u32)
            .map(|i| {
                IpNet::new(
                    IpAddr::from(i.wrapping_mul(2_654_435_761).to_be_bytes()),
                    (i % 25 + 8) as u8,
                )
                .unwrap()
                .trunc()
            })
            .collect();
        let s = AddressSet::new(nets.clone());
        for i in 0..20_000u32 {
            let ip = IpAddr::from((i.wrapping_mul(2_246_822_519)).to_be_bytes());
            assert_eq!(s.contains(ip), nets.iter().any(|n| n.contains(&ip)), "{ip}");
        }
    }
}
