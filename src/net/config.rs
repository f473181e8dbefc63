//! What a DHCP lease means for this machine, as plain data: the address and
//! route to install, the search domains and host name it offers, and the
//! one-line console summary (`record.rs` turns leases into the files).
//!
//! Everything here is pure. Lease contents come from whoever answered on the
//! wire, so names that end up in files are checked character by character.

use std::net::Ipv4Addr;

use mozim::DhcpV4Lease;
use serde::Serialize;

/// glibc before 2.26 stops at six search domains; stay within it.
const MAX_SEARCH_DOMAINS: usize = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("DHCP lease on {iface} offers unusable address {address}")]
    BadAddress { iface: String, address: Ipv4Addr },
    #[error("DHCP lease on {iface} has non-contiguous netmask {mask}")]
    BadNetmask { iface: String, mask: Ipv4Addr },
}

/// The network configuration taken from one DHCP lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub lease_seconds: u32,
    pub server: Ipv4Addr,
    pub mtu: Option<u16>,
    /// From the DHCP host name option or `ip=`; only valid host names.
    pub hostname: Option<String>,
    /// DHCP option 42, for the clock phase (`clock::ensure`).
    pub ntp_servers: Vec<Ipv4Addr>,
}

impl Lease {
    pub fn from_dhcp(iface: &str, dhcp: &DhcpV4Lease) -> Result<Lease, Error> {
        let address = dhcp.yiaddr;
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(Error::BadAddress {
                iface: iface.to_owned(),
                address,
            });
        }
        let prefix_len =
            prefix_len(address, dhcp.subnet_mask).ok_or_else(|| Error::BadNetmask {
                iface: iface.to_owned(),
                mask: dhcp.subnet_mask,
            })?;
        Ok(Lease {
            interface: iface.to_owned(),
            address,
            prefix_len,
            gateway: gateway(dhcp),
            dns: dhcp
                .dns_srvs
                .iter()
                .flatten()
                .copied()
                .filter(usable)
                .collect(),
            search: search_domains(dhcp),
            lease_seconds: dhcp.lease_time_sec,
            server: dhcp.srv_id,
            mtu: dhcp.mtu,
            hostname: dhcp.host_name.as_deref().filter(|h| valid_hostname(h)).map(str::to_owned),
            ntp_servers: dhcp.ntp_srvs.iter().flatten().copied().filter(usable).collect(),
        })
    }

    /// Whether `gateway` is inside the leased subnet; if not, the default
    /// route needs the `onlink` flag (common with /32 leases in clouds).
    pub fn gateway_is_on_subnet(&self, gateway: Ipv4Addr) -> bool {
        let mask = mask_of(self.prefix_len);
        u32::from(gateway) & mask == u32::from(self.address) & mask
    }
}

fn usable(address: &Ipv4Addr) -> bool {
    !address.is_unspecified() && !address.is_broadcast()
}

/// Prefix length of `mask`; a missing mask (0.0.0.0) falls back to the
/// classful default like dhclient does. `None` for a non-contiguous mask.
fn prefix_len(address: Ipv4Addr, mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    if bits == 0 {
        let [first, ..] = address.octets();
        return Some(match first {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        });
    }
    let ones = bits.leading_ones();
    if ones + bits.trailing_zeros() == 32 {
        u8::try_from(ones).ok()
    } else {
        None
    }
}

fn mask_of(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

/// RFC 3442: when the server sends classless static routes, the Router
/// option must be ignored; the default route is then the 0.0.0.0/0 entry.
fn gateway(dhcp: &DhcpV4Lease) -> Option<Ipv4Addr> {
    match &dhcp.classless_routes {
        Some(routes) => routes
            .iter()
            .find(|r| r.prefix_length == 0)
            .map(|r| r.router),
        None => dhcp.gateways.iter().flatten().copied().find(usable),
    }
}

/// Option 119 when present, else the domain name (option 15), which some
/// servers fill with a space-separated list.
fn search_domains(dhcp: &DhcpV4Lease) -> Vec<String> {
    let candidates: Vec<&str> = match &dhcp.domain_search {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => dhcp
            .domain_name
            .as_deref()
            .map(|d| d.split_whitespace().collect())
            .unwrap_or_default(),
    };
    let mut domains: Vec<String> = Vec::new();
    for domain in candidates {
        let domain = domain.trim_end_matches('.');
        if valid_domain(domain) && !domains.iter().any(|d| d == domain) {
            domains.push(domain.to_owned());
        }
    }
    domains.truncate(MAX_SEARCH_DOMAINS);
    domains
}

/// A DNS name safe to put in resolv.conf: no whitespace or control bytes
/// that could smuggle in extra lines.
pub(super) fn valid_domain(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
        && !name.contains("..")
}

/// The line `iguana net-up` prints on stdout, parsed by tests and read by
/// people on the console.
pub fn summary_line(lease: &Lease) -> String {
    let gateway = lease
        .gateway
        .map_or_else(|| "none".to_owned(), |g| g.to_string());
    let dns = if lease.dns.is_empty() {
        "none".to_owned()
    } else {
        lease
            .dns
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if lease.server.is_unspecified() {
        return format!(
            "static: iface={} addr={}/{} gateway={gateway} dns={dns} (from ip=)",
            lease.interface, lease.address, lease.prefix_len
        );
    }
    format!(
        "lease: iface={} addr={}/{} gateway={gateway} dns={dns} lease={}s",
        lease.interface, lease.address, lease.prefix_len, lease.lease_seconds
    )
}

/// The NTP servers a network.json records (`ntp_servers` at any depth, so
/// the record's layout may change around it), for the clock phase.
pub fn ntp_servers(json: &str) -> Vec<String> {
    fn find(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("ntp_servers", serde_json::Value::Array(items)) => {
                            out.extend(items.iter().filter_map(|i| i.as_str()).map(str::to_owned));
                        }
                        _ => find(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| find(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(json) {
        find(&value, &mut out);
    }
    out.dedup();
    out
}

/// RFC 1123 host names: dot-separated labels of letters, digits and `-`,
/// 1-63 characters each, 253 in all. A lease's host name is untrusted: it
/// ends up in /etc/hosts and the kernel's host name.
pub fn valid_hostname(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// /etc/hosts for this machine: localhost, and the host name on its address.
pub fn hosts(lease: &Lease) -> String {
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    if let Some(name) = &lease.hostname {
        let short = name.split('.').next().unwrap_or(name);
        if short == name {
            text.push_str(&format!("{} {name}\n", lease.address));
        } else {
            text.push_str(&format!("{} {name} {short}\n", lease.address));
        }
    }
    text
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use mozim::DhcpV4ClasslessRoute;

    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    /// What QEMU's user network (slirp) hands out.
    fn slirp() -> DhcpV4Lease {
        let mut dhcp = DhcpV4Lease::default();
        dhcp.yiaddr = ip("10.0.2.15");
        dhcp.subnet_mask = ip("255.255.255.0");
        dhcp.gateways = Some(vec![ip("10.0.2.2")]);
        dhcp.dns_srvs = Some(vec![ip("10.0.2.3")]);
        dhcp.srv_id = ip("10.0.2.2");
        dhcp.lease_time_sec = 86400;
        dhcp
    }

    fn slirp_lease() -> Lease {
        Lease {
            interface: "eth0".into(),
            address: ip("10.0.2.15"),
            prefix_len: 24,
            gateway: Some(ip("10.0.2.2")),
            dns: vec![ip("10.0.2.3")],
            search: vec![],
            lease_seconds: 86400,
            server: ip("10.0.2.2"),
            mtu: None,
            hostname: None,
            ntp_servers: vec![],
        }
    }

    fn check(dhcp: DhcpV4Lease, expected: Result<Lease, Error>) {
        assert_eq!(Lease::from_dhcp("eth0", &dhcp), expected);
    }

    #[test]
    fn hostnames() {
        let cases: &[(&str, bool)] = &[
            ("node1", true),
            ("node1.example.org", true),
            ("", false),
            ("-bad", false),
            ("bad-", false),
            ("a b", false),
            ("x\n127.0.0.1 evil", false),
            ("a..b", false),
        ];
        for (name, ok) in cases {
            assert_eq!(valid_hostname(name), *ok, "{name:?}");
        }
        let mut d = slirp();
        d.host_name = Some("evil\nname".into());
        assert_eq!(Lease::from_dhcp("eth0", &d).unwrap().hostname, None);
        d.host_name = Some("node1.lab".into());
        let lease = Lease::from_dhcp("eth0", &d).unwrap();
        assert_eq!(hosts(&lease), "127.0.0.1 localhost\n::1 localhost\n10.0.2.15 node1.lab node1\n");
    }

    #[test]
    fn lease_from_dhcp() {
        check(slirp(), Ok(slirp_lease()));

        let mut d = slirp();
        d.subnet_mask = ip("0.0.0.0");
        check(
            d,
            Ok(Lease {
                prefix_len: 8,
                ..slirp_lease()
            }),
        );

        let mut d = slirp();
        d.subnet_mask = ip("255.255.255.255");
        d.classless_routes = Some(vec![
            DhcpV4ClasslessRoute {
                destination: ip("169.254.169.254"),
                prefix_length: 32,
                router: ip("10.0.2.9"),
            },
            DhcpV4ClasslessRoute {
                destination: ip("0.0.0.0"),
                prefix_length: 0,
                router: ip("10.0.2.1"),
            },
        ]);
        check(
            d,
            Ok(Lease {
                prefix_len: 32,
                gateway: Some(ip("10.0.2.1")),
                ..slirp_lease()
            }),
        );

        let mut d = slirp();
        d.gateways = Some(vec![ip("0.0.0.0"), ip("10.0.2.4")]);
        d.dns_srvs = Some(vec![ip("10.0.2.3"), ip("0.0.0.0"), ip("1.1.1.1")]);
        d.mtu = Some(1400);
        check(
            d,
            Ok(Lease {
                gateway: Some(ip("10.0.2.4")),
                dns: vec![ip("10.0.2.3"), ip("1.1.1.1")],
                mtu: Some(1400),
                ..slirp_lease()
            }),
        );

        let mut d = slirp();
        d.gateways = None;
        d.dns_srvs = None;
        check(
            d,
            Ok(Lease {
                gateway: None,
                dns: vec![],
                ..slirp_lease()
            }),
        );

        let mut d = slirp();
        d.domain_name = Some("corp.example lab.example".into());
        check(
            d,
            Ok(Lease {
                search: vec!["corp.example".into(), "lab.example".into()],
                ..slirp_lease()
            }),
        );

        let mut d = slirp();
        d.domain_name = Some("ignored.example".into());
        d.domain_search = Some(vec![
            "a.example.".into(),
            "evil\nnameserver 6.6.6.6".into(),
            "a.example".into(),
        ]);
        check(
            d,
            Ok(Lease {
                search: vec!["a.example".into()],
                ..slirp_lease()
            }),
        );

        let mut d = slirp();
        d.subnet_mask = ip("255.0.255.0");
        check(
            d,
            Err(Error::BadNetmask {
                iface: "eth0".into(),
                mask: ip("255.0.255.0"),
            }),
        );

        let mut d = slirp();
        d.yiaddr = ip("0.0.0.0");
        check(
            d,
            Err(Error::BadAddress {
                iface: "eth0".into(),
                address: ip("0.0.0.0"),
            }),
        );
    }

    #[test]
    fn gateway_on_subnet() {
        let lease = slirp_lease();
        assert!(lease.gateway_is_on_subnet(ip("10.0.2.2")));
        assert!(!lease.gateway_is_on_subnet(ip("10.0.3.1")));
        let host = Lease {
            prefix_len: 32,
            ..slirp_lease()
        };
        assert!(!host.gateway_is_on_subnet(ip("10.0.2.2")));
        let all = Lease {
            prefix_len: 0,
            ..slirp_lease()
        };
        assert!(all.gateway_is_on_subnet(ip("192.0.2.1")));
    }

    #[test]
    fn summary() {
        assert_eq!(
            summary_line(&slirp_lease()),
            "lease: iface=eth0 addr=10.0.2.15/24 gateway=10.0.2.2 dns=10.0.2.3 lease=86400s"
        );
        let bare = Lease {
            gateway: None,
            dns: vec![],
            ..slirp_lease()
        };
        assert_eq!(
            summary_line(&bare),
            "lease: iface=eth0 addr=10.0.2.15/24 gateway=none dns=none lease=86400s"
        );
    }

    #[test]
    fn ntp_servers_from_lease_and_json() {
        let mut d = slirp();
        d.ntp_srvs = Some(vec![ip("10.0.2.5"), ip("0.0.0.0"), ip("10.0.2.6")]);
        let lease = Lease::from_dhcp("eth0", &d).unwrap();
        assert_eq!(lease.ntp_servers, vec![ip("10.0.2.5"), ip("10.0.2.6")]);
        let cases: &[(&str, &[&str])] = &[
            (&serde_json::json!({"leases": [&lease]}).to_string(), &["10.0.2.5", "10.0.2.6"]),
            (&serde_json::json!({"leases": [slirp_lease()]}).to_string(), &[]),
            (r#"{"links": [{"dhcp": {"ntp_servers": ["192.0.2.1"]}}]}"#, &["192.0.2.1"]),
            (r#"{"ntp_servers": "10.0.0.1"}"#, &[]),
            ("not json", &[]),
        ];
        for (json, expected) in cases {
            assert_eq!(ntp_servers(json), *expected, "{json}");
        }
    }
}
