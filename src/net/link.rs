//! The rtnetlink calls of network bring-up: list links, rename them, create
//! bonds and VLANs, set links up, add addresses and routes, set the MTU.
//! Each call is the netlink equivalent of one `ip` command, named in its doc
//! line.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    BondLacpRate, BondMode, BondXmitHashPolicy, InfoKind, LinkAttribute, LinkFlags, LinkInfo,
    LinkLayerType, LinkMessage,
};
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{Handle, LinkBond, LinkUnspec, LinkVlan, RouteMessageBuilder};

use super::plan::{BondOption, BondPlan};

/// What sort of link the kernel says it is (`ip -d link`'s kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ethernet,
    Vlan,
    Bond,
    Other,
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub ethernet: bool,
    pub kind: Kind,
    /// The lower layer is up (IFF_LOWER_UP): a cable, or a virtual peer.
    pub carrier: bool,
    /// The bond this link is enslaved to.
    pub controller: Option<u32>,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Link {
        let ethernet = message.header.link_layer_type == LinkLayerType::Ether;
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: Vec::new(),
            ethernet,
            kind: if ethernet { Kind::Ethernet } else { Kind::Other },
            carrier: message.header.flags.contains(LinkFlags::LowerUp),
            controller: None,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Address(mac) => link.mac.clone_from(mac),
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(InfoKind::Vlan) => link.kind = Kind::Vlan,
                            LinkInfo::Kind(InfoKind::Bond) => link.kind = Kind::Bond,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
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

/// `ip link show dev INDEX`
pub async fn get(handle: &Handle, index: u32) -> Result<Link, rtnetlink::Error> {
    let mut stream = handle.link().get().match_index(index).execute();
    match stream.try_next().await? {
        Some(message) => Ok(Link::from_message(&message)),
        None => Err(rtnetlink::Error::RequestFailed),
    }
}

/// `ip link set INDEX down`
pub async fn set_down(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
}

/// `ip link del INDEX`
pub async fn delete(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    handle.link().del(index).execute().await
}

/// `ip link set INDEX name NAME` (the link must be down)
pub async fn rename(handle: &Handle, index: u32, name: &str) -> Result<(), rtnetlink::Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).name(name).build())
        .execute()
        .await
}

/// `ip link add NAME type bond mode MODE [miimon N ...]`
pub async fn add_bond(handle: &Handle, bond: &BondPlan) -> Result<(), rtnetlink::Error> {
    let mode = match bond.mode.as_str() {
        "active-backup" => BondMode::ActiveBackup,
        "balance-xor" => BondMode::BalanceXor,
        "broadcast" => BondMode::Broadcast,
        "802.3ad" => BondMode::Ieee8023Ad,
        "balance-tlb" => BondMode::BalanceTlb,
        "balance-alb" => BondMode::BalanceAlb,
        _ => BondMode::BalanceRr,
    };
    let mut message = LinkBond::new(&bond.name).mode(mode);
    for option in &bond.options {
        message = match option {
            BondOption::Miimon(ms) => message.miimon(*ms),
            BondOption::Updelay(ms) => message.updelay(*ms),
            BondOption::Downdelay(ms) => message.downdelay(*ms),
            BondOption::MinLinks(n) => message.min_links(*n),
            BondOption::LacpRateFast(fast) => {
                message.ad_lacp_rate(if *fast { BondLacpRate::Fast } else { BondLacpRate::Slow })
            }
            BondOption::XmitHashPolicy(policy) => message.xmit_hash_policy(BondXmitHashPolicy::from(*policy)),
        };
    }
    handle.link().add(message.build()).execute().await
}

/// `ip link set INDEX master CONTROLLER` (the link must be down)
pub async fn enslave(handle: &Handle, index: u32, controller: u32) -> Result<(), rtnetlink::Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).controller(controller).build())
        .execute()
        .await
}

/// `ip link add link PARENT name NAME type vlan id ID`
pub async fn add_vlan(handle: &Handle, name: &str, parent: u32, id: u16) -> Result<(), rtnetlink::Error> {
    handle.link().add(LinkVlan::new(name, parent, id).build()).execute().await
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

/// `ip route replace DESTINATION/PREFIX [via GATEWAY] [dev INDEX] proto boot`
pub async fn add_route(
    handle: &Handle,
    destination: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    index: Option<u32>,
) -> Result<(), rtnetlink::Error> {
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(destination, prefix)
        .protocol(RouteProtocol::Boot);
    if let Some(gateway) = gateway {
        route = route.gateway(gateway);
    }
    if let Some(index) = index {
        route = route.output_interface(index);
    }
    handle.route().add(route.build()).replace().execute().await
}
