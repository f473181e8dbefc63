//! Static IPv6 from dracut's bracketed `ip=` form:
//! `ip=[<client>]:[<peer>]:[<gateway>]:<prefix>:<host>:<iface>:none[:[<dns1>][:[<dns2>]]]`.
//! `static_v6` is pure; `apply` installs the address and the default route,
//! after which `ipv6.rs` waits for duplicate address detection and records
//! them like the other IPv6 addresses (origin `static`). IPv6 `rd.route=`
//! routes are added once IPv6 is configured (`add_routes`).

use std::net::{IpAddr, Ipv6Addr};

use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{Handle, RouteMessageBuilder};

use serde::Serialize;

use super::args::{Ip, Method, NetArgs};
use super::link::Link;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ip= names interface {iface} for static IPv6 {address}, which does not exist (links: {links})")]
    NoSuchInterface { iface: String, address: Ipv6Addr, links: String },
    #[error("no Ethernet link for static IPv6 {address}")]
    NoLink { address: Ipv6Addr },
    #[error("add address {address}/{prefix_len} to {iface}")]
    AddAddress {
        iface: String,
        address: Ipv6Addr,
        prefix_len: u8,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("rd.route= names interface {iface} for {destination}/{prefix}, which does not exist")]
    NoRouteInterface { iface: String, destination: Ipv6Addr, prefix: u8 },
    #[error("add route {destination}/{prefix} (rd.route=)")]
    AddStaticRoute {
        destination: Ipv6Addr,
        prefix: u8,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("add IPv6 default route via {gateway} dev {iface}")]
    AddRoute {
        iface: String,
        gateway: Ipv6Addr,
        #[source]
        source: rtnetlink::Error,
    },
}

/// One static IPv6 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Static6 {
    /// None: the first Ethernet link.
    pub iface: Option<String>,
    pub address: Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv6Addr>,
    pub dns: Vec<Ipv6Addr>,
}

/// An IPv6 `rd.route=<net>/<len>:[<gw>][:<iface>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route6 {
    pub destination: Ipv6Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv6Addr>,
    pub iface: Option<String>,
}

/// The IPv6 `rd.route=` arguments, in order (a gateway of the other
/// family is refused by the parser).
pub fn routes_v6(net: &NetArgs) -> Vec<Route6> {
    net.routes
        .iter()
        .filter_map(|r| match (r.destination, r.gateway) {
            (IpAddr::V6(destination), gateway) => Some(Route6 {
                destination,
                prefix: r.prefix,
                gateway: match gateway {
                    Some(IpAddr::V6(g)) => Some(g),
                    _ => None,
                },
                iface: r.iface.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// `ip -6 route replace DESTINATION/PREFIX [via GATEWAY] [dev IFACE] proto boot`
pub async fn add_routes(handle: &Handle, links: &[Link], routes: &[Route6]) -> Result<(), Error> {
    for r in routes {
        let mut route = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(r.destination, r.prefix)
            .protocol(RouteProtocol::Boot);
        if let Some(gateway) = r.gateway {
            route = route.gateway(gateway);
        }
        if let Some(name) = &r.iface {
            let link = links.iter().find(|l| &l.name == name).ok_or_else(|| Error::NoRouteInterface {
                iface: name.clone(),
                destination: r.destination,
                prefix: r.prefix,
            })?;
            route = route.output_interface(link.index);
        }
        handle
            .route()
            .add(route.build())
            .replace()
            .execute()
            .await
            .map_err(|source| Error::AddStaticRoute { destination: r.destination, prefix: r.prefix, source })?;
    }
    Ok(())
}

/// Whether `ip` is a static IPv6 form net-up applies (no MTU or MAC field).
pub fn is_static_v6(ip: &Ip) -> bool {
    matches!(ip, Ip::Static { address: IpAddr::V6(_), method: Method::None, mtu: None, mac: None, .. })
}

/// The static IPv6 `ip=` arguments, in order; DNS servers: those of `ip=`.
pub fn static_v6(net: &NetArgs) -> Vec<Static6> {
    let v6 = |a: &IpAddr| match a {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    };
    net.ip
        .iter()
        .filter(|ip| is_static_v6(ip))
        .filter_map(|ip| match ip {
            Ip::Static { address: IpAddr::V6(address), gateway, prefix, iface, dns, .. } => Some(Static6 {
                iface: iface.clone(),
                address: *address,
                prefix_len: *prefix,
                gateway: gateway.as_ref().and_then(v6),
                dns: dns.iter().filter_map(v6).collect(),
            }),
            _ => None,
        })
        .collect()
}

/// Installs each address (and its default route) on its link.
pub async fn apply(handle: &Handle, links: &[Link], statics: &[Static6]) -> Result<(), Error> {
    for s in statics {
        let link = match &s.iface {
            Some(name) => links.iter().find(|l| &l.name == name).ok_or_else(|| Error::NoSuchInterface {
                iface: name.clone(),
                address: s.address,
                links: links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", "),
            })?,
            None => links.first().ok_or(Error::NoLink { address: s.address })?,
        };
        handle
            .address()
            .add(link.index, IpAddr::V6(s.address), s.prefix_len)
            .replace()
            .execute()
            .await
            .map_err(|source| Error::AddAddress {
                iface: link.name.clone(),
                address: s.address,
                prefix_len: s.prefix_len,
                source,
            })?;
        if let Some(gateway) = s.gateway {
            let route = RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gateway)
                .output_interface(link.index)
                .protocol(RouteProtocol::Boot)
                .build();
            handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|source| Error::AddRoute { iface: link.name.clone(), gateway, source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::args::parse;

    fn check(line: &str, expected: &[Static6]) {
        assert_eq!(static_v6(&parse(line).unwrap()), expected, "{line}");
    }

    fn ip(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn statics() {
        check("ip=dhcp ip=10.0.0.5::10.0.0.1:24::eth0:none ip=dhcp6", &[]);
        check(
            "ip=[2001:db8::5]::[2001:db8::1]:64::eth1:none",
            &[Static6 { iface: Some("eth1".into()), address: ip("2001:db8::5"), prefix_len: 64, gateway: Some(ip("2001:db8::1")), dns: vec![] }],
        );
        check(
            "ip=[2001:db8::5]:::64:node1::none:[2001:db8::53] ip=[fd00::7]:::48::eth2:none",
            &[
                Static6 { iface: None, address: ip("2001:db8::5"), prefix_len: 64, gateway: None, dns: vec![ip("2001:db8::53")] },
                Static6 { iface: Some("eth2".into()), address: ip("fd00::7"), prefix_len: 48, gateway: None, dns: vec![] },
            ],
        );
        // With an MTU: not applied (args::unapplied names it).
        check("ip=[2001:db8::5]::[2001:db8::1]:64::eth1:none:1400", &[]);
    }

    #[test]
    fn routes() {
        let routes = |line: &str| routes_v6(&parse(line).unwrap());
        assert_eq!(routes("rd.route=10.1.0.0/16:10.0.0.1"), []);
        assert_eq!(
            routes("rd.route=10.1.0.0/16:10.0.0.1 rd.route=[2001:db8:1::]/48:[2001:db8::1]:eth1 rd.route=[fd00:7::]/64"),
            [
                Route6 { destination: ip("2001:db8:1::"), prefix: 48, gateway: Some(ip("2001:db8::1")), iface: Some("eth1".into()) },
                Route6 { destination: ip("fd00:7::"), prefix: 64, gateway: None, iface: None },
            ]
        );
    }
}
