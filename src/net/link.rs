//! The rtnetlink calls of network bring-up: list links, set them up, add the
//! leased address, the default route and the MTU. Each call is the netlink
//! equivalent of one `ip` command, named in its doc line.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub ethernet: bool,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: Vec::new(),
            ethernet: message.header.link_layer_type == LinkLayerType::Ether,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Address(mac) => link.mac.clone_from(mac),
                _ => {}
            }
        }
        link
    }
}

/// The links to run DHCP on: Ethernet with a 6-byte MAC. Loopback reports
/// type `Loopback`, and tunnels or WWAN links other types, so they drop out.
pub fn dhcp_candidates(links: &[Link]) -> Vec<Link> {
    links
        .iter()
        .filter(|l| l.ethernet && l.mac.len() == 6 && l.name != "lo")
        .cloned()
        .collect()
}

/// `ip link show`
pub async fn list(handle: &Handle) -> Result<Vec<Link>, rtnetlink::Error> {
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(message) = stream.try_next().await? {
        links.push(Link::from_message(&message));
    }
    Ok(links)
}

/// `ip link set INDEX up`
pub async fn set_up(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
}

/// `ip link set INDEX mtu MTU`
pub async fn set_mtu(handle: &Handle, index: u32, mtu: u32) -> Result<(), rtnetlink::Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
}

/// `ip address replace ADDRESS/PREFIX dev INDEX` (replace, so running
/// net-up twice is harmless). The address is permanent: nothing renews the
/// lease after net-up exits, and the kernel must not drop it at expiry.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), rtnetlink::Error> {
    handle
        .address()
        .add(index, IpAddr::V4(address), prefix_len)
        .replace()
        .execute()
        .await
}

/// `ip route replace default via GATEWAY dev INDEX proto dhcp [onlink]`
pub async fn add_default_route(
    handle: &Handle,
    index: u32,
    gateway: Ipv4Addr,
    onlink: bool,
) -> Result<(), rtnetlink::Error> {
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .protocol(RouteProtocol::Dhcp);
    if onlink {
        route = route.onlink();
    }
    handle.route().add(route.build()).replace().execute().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: &[u8], ethernet: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac: mac.to_vec(),
            ethernet,
        }
    }

    fn check(links: &[Link], expected: &[&str]) {
        let got: Vec<String> = dhcp_candidates(links).into_iter().map(|l| l.name).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn candidates() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        check(&[], &[]);
        check(
            &[
                link(1, "lo", &[0; 6], false),
                link(2, "eth0", &mac, true),
                link(3, "eth1", &mac, true),
            ],
            &["eth0", "eth1"],
        );
        // A loopback-like entry that claims Ethernet, a tunnel, and an
        // InfiniBand-sized hardware address are all skipped.
        check(
            &[
                link(1, "lo", &mac, true),
                link(4, "sit0", &[0; 4], false),
                link(5, "ib0", &[0; 20], true),
            ],
            &[],
        );
    }
}
