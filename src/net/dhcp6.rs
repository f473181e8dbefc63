//! Stateful DHCPv6 (RFC 8415) for `ip=dhcp6` and `ip=<iface>:dhcp6`: one
//! non-temporary address (IA_NA) and the DNS servers and search list.
//!
//! The protocol is mozim's (SOLICIT/ADVERTISE/REQUEST/REPLY over UDP from
//! the link-local address). Built without mozim's netlink feature, so we
//! hand it the interface index, the link-local address once its duplicate
//! address detection is over, and a DUID from the MAC. Like DHCPv4, the
//! first lease on any link wins and nothing renews it after net-up exits.

use std::net::Ipv6Addr;
use std::pin::Pin;

use futures_util::stream::FuturesUnordered;
use futures_util::{Future, StreamExt};
use mozim::{DhcpV6Client, DhcpV6Config, DhcpV6Lease, DhcpV6Mode, DhcpV6State};
use serde::Serialize;
use tracing::{debug, warn};

use super::config::valid_domain;
use super::link::Link;

/// glibc before 2.26 stops at six search domains; stay within it.
const MAX_SEARCH_DOMAINS: usize = 6;

/// What a DHCPv6 lease gives this machine, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease6 {
    pub interface: String,
    /// Installed as a /128 (RFC 8415 section 21.6): the on-link prefix is
    /// the router advertisement's business.
    pub address: Ipv6Addr,
    pub preferred_seconds: u32,
    pub valid_seconds: u32,
    pub server: Ipv6Addr,
    pub dns: Vec<Ipv6Addr>,
    pub search: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("DHCPv6 lease on {iface} offers unusable address {address}")]
    BadAddress { iface: String, address: Ipv6Addr },
}

impl Lease6 {
    pub fn from_dhcp(iface: &str, dhcp: &DhcpV6Lease) -> Result<Lease6, Error> {
        let address = dhcp.address;
        if !unicast(&address) || is_link_local(&address) {
            return Err(Error::BadAddress { iface: iface.to_owned(), address });
        }
        let mut search: Vec<String> = Vec::new();
        for domain in &dhcp.domain_list {
            let domain = domain.trim_end_matches('.');
            if valid_domain(domain) && !search.iter().any(|d| d == domain) {
                search.push(domain.to_owned());
            }
        }
        search.truncate(MAX_SEARCH_DOMAINS);
        let mut dns: Vec<Ipv6Addr> = Vec::new();
        for server in dhcp.dns_srvs.iter().filter(|s| unicast(s)) {
            if !dns.contains(server) {
                dns.push(*server);
            }
        }
        Ok(Lease6 {
            interface: iface.to_owned(),
            address,
            preferred_seconds: dhcp.preferred_time_sec,
            valid_seconds: dhcp.valid_time_sec,
            server: dhcp.srv_ip,
            dns,
            search,
        })
    }
}

/// An address a host can have or talk to: not ::, ::1 or multicast.
fn unicast(address: &Ipv6Addr) -> bool {
    !address.is_unspecified() && !address.is_loopback() && !address.is_multicast()
}

/// fe80::/10.
pub fn is_link_local(address: &Ipv6Addr) -> bool {
    address.segments()[0] & 0xffc0 == 0xfe80
}

/// Why no link got a lease (running out of time is the caller's to enforce).
#[derive(Debug)]
pub struct AllFailed(pub Vec<(String, String)>);

type Attempt = Pin<Box<dyn Future<Output = Result<(Link, DhcpV6Lease), (String, String)>>>>;

/// DHCPv6 on every `(link, its link-local address)` at once; the first
/// lease wins and the other attempts are dropped, closing their sockets.
pub async fn first_lease(links: &[(Link, Ipv6Addr)]) -> Result<(Link, DhcpV6Lease), AllFailed> {
    let mut attempts: FuturesUnordered<Attempt> = links
        .iter()
        .map(|(link, local)| {
            let (link, local) = (link.clone(), *local);
            Box::pin(async move {
                match acquire(&link, local).await {
                    Ok(lease) => Ok((link, lease)),
                    Err(err) => Err((link.name, err.to_string())),
                }
            }) as Attempt
        })
        .collect();
    let mut failures = Vec::new();
    while let Some(result) = attempts.next().await {
        match result {
            Ok(acquired) => return Ok(acquired),
            Err((iface, err)) => {
                warn!(%iface, %err, "DHCPv6 failed");
                failures.push((iface, err));
            }
        }
    }
    Err(AllFailed(failures))
}

async fn acquire(link: &Link, local: Ipv6Addr) -> Result<DhcpV6Lease, mozim::DhcpError> {
    let mut config = DhcpV6Config::new(&link.name, DhcpV6Mode::NonTemporaryAddresses);
    config
        .set_iface_index(link.index)
        .set_link_local_ip(local)
        .set_duid_by_iface_mac(&link.mac);
    let mut client = DhcpV6Client::init(config, None).await?;
    loop {
        match client.run().await? {
            DhcpV6State::Done(lease) => return Ok(*lease),
            state => debug!(iface = %link.name, %state, "DHCPv6"),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    /// What dnsmasq hands out in the netns test.
    fn dnsmasq() -> DhcpV6Lease {
        let mut d = DhcpV6Lease::default();
        d.address = ip("2001:db8:1::100");
        d.preferred_time_sec = 3600;
        d.valid_time_sec = 3600;
        d.srv_ip = ip("fe80::1");
        d.dns_srvs = vec![ip("2001:db8:1::53")];
        d.domain_list = vec!["lab.example".into()];
        d
    }

    /// The lease `dnsmasq()` gives; also used by `ipv6`'s tests.
    pub(in crate::net) fn lease() -> Lease6 {
        Lease6 {
            interface: "eth0".into(),
            address: ip("2001:db8:1::100"),
            preferred_seconds: 3600,
            valid_seconds: 3600,
            server: ip("fe80::1"),
            dns: vec![ip("2001:db8:1::53")],
            search: vec!["lab.example".into()],
        }
    }

    fn check(dhcp: DhcpV6Lease, expected: Result<Lease6, Error>) {
        assert_eq!(Lease6::from_dhcp("eth0", &dhcp), expected);
    }

    #[test]
    fn lease_from_dhcp() {
        check(dnsmasq(), Ok(lease()));

        let mut d = dnsmasq();
        d.dns_srvs = vec![ip("::"), ip("ff02::1"), ip("2001:db8:1::53"), ip("2001:db8:1::53"), ip("::1"), ip("fe80::53")];
        check(d, Ok(Lease6 { dns: vec![ip("2001:db8:1::53"), ip("fe80::53")], ..lease() }));

        let mut d = dnsmasq();
        d.domain_list = vec!["a.example.".into(), "evil\nnameserver 6.6.6.6".into(), "a.example".into()];
        check(d, Ok(Lease6 { search: vec!["a.example".into()], ..lease() }));

        for bad in ["::", "::1", "ff02::1:2", "fe80::100"] {
            let mut d = dnsmasq();
            d.address = ip(bad);
            check(d, Err(Error::BadAddress { iface: "eth0".into(), address: ip(bad) }));
        }
    }

    #[test]
    fn link_local() {
        for (text, expected) in [("fe80::1", true), ("febf::1", true), ("fec0::1", false), ("2001:db8::1", false)] {
            assert_eq!(is_link_local(&ip(text)), expected, "{text}");
        }
    }
}
