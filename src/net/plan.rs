//! Phase "network", planning: what `net-up` will do to the links, worked out
//! from the kernel's link list and the dracut arguments before anything is
//! touched. Pure, so every combination of arguments is a table test; `mod.rs`
//! executes the plan in this order: rename → bonds → VLANs → links up →
//! static addresses → DHCP → routes.
//!
//! Choices the dracut arguments leave open: without any `ip=` (or with a
//! bare `ip=dhcp`) DHCPv4 runs on every top-level link (Ethernet links that
//! are not bond slaves, and the bonds and VLANs we create); `ip=<iface>:dhcp`
//! limits DHCP to the named links; a static IPv4 `ip=` alone turns DHCP off.

use std::net::{IpAddr, Ipv4Addr};

use super::args::{self, Ip, Method, NetArgs};
use super::config::Lease;
use super::link::{Kind, Link};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("ifname={name}:{mac}: no link has MAC {mac} (links: {links})")]
    NoSuchMac { name: String, mac: String, links: String },
    #[error("{arg}: no interface {iface} (links: {links})")]
    NoSuchInterface { arg: String, iface: String, links: String },
    #[error("{arg}: {iface} is a slave of bond {bond}; configure the bond")]
    Enslaved { arg: String, iface: String, bond: String },
    #[error("bond={bond}: {slave} is a slave of two bonds")]
    SlaveTwice { bond: String, slave: String },
    #[error("bond={bond}: option {option} is not supported (miimon, updelay, downdelay, min_links, lacp_rate, xmit_hash_policy)")]
    BondOption { bond: String, option: String },
    #[error("{arg}: name {name} is taken by another link")]
    NameTaken { arg: String, name: String },
    #[error("no Ethernet interface to configure (links: {links})")]
    NoEthernet { links: String },
}

/// `ifname=`: the link with this index gets a new name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub index: u32,
    pub from: String,
    pub to: String,
}

/// The bond options net-up passes to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondOption {
    Miimon(u32),
    Updelay(u32),
    Downdelay(u32),
    MinLinks(u32),
    LacpRateFast(bool),
    XmitHashPolicy(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondPlan {
    pub name: String,
    pub slaves: Vec<String>,
    pub mode: String,
    pub options: Vec<BondOption>,
    pub mtu: Option<u32>,
}

/// `rd.route=` for IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub iface: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub renames: Vec<Rename>,
    pub bonds: Vec<BondPlan>,
    pub vlans: Vec<args::Vlan>,
    /// Every link to set up, by its final name: physical ones first.
    pub up: Vec<String>,
    /// Static IPv4 `ip=`, each with the interface filled in.
    pub statics: Vec<Lease>,
    /// Where DHCPv4 runs.
    pub dhcp: Vec<String>,
    /// The DHCP links were named by `ip=<iface>:dhcp`.
    pub dhcp_named: bool,
    pub routes: Vec<Route>,
    /// `nameserver=` (both families: resolv.conf takes either).
    pub nameservers: Vec<IpAddr>,
}

pub fn plan(links: &[Link], net: &NetArgs) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    let all: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let physical: Vec<&Link> = links
        .iter()
        .filter(|l| l.kind == Kind::Ethernet && l.mac.len() == 6 && l.name != "lo")
        .collect();
    // Final names of the physical links, after `ifname=`.
    let mut names: Vec<String> = physical.iter().map(|l| l.name.clone()).collect();
    for (name, mac) in &net.ifnames {
        let found = physical.iter().position(|l| super::config::format_mac(&l.mac) == *mac);
        let Some(i) = found else {
            return Err(Error::NoSuchMac { name: name.clone(), mac: mac.clone(), links: all.join(", ") });
        };
        if physical[i].name != *name {
            plan.renames.push(Rename { index: physical[i].index, from: physical[i].name.clone(), to: name.clone() });
        }
        names[i].clone_from(name);
    }
    // Swapping names is fine; ending with two links of one name is not.
    for (name, mac) in &net.ifnames {
        if names.iter().filter(|n| *n == name).count() > 1 {
            return Err(Error::NameTaken { arg: format!("ifname={name}:{mac}"), name: name.clone() });
        }
    }
    let links_text = || names.join(", ");
    let bond_of = |iface: &str| net.bonds.iter().find(|b| b.slaves.iter().any(|s| s == iface)).map(|b| b.name.clone());
    let missing = |arg: String, iface: &str| match bond_of(iface) {
        Some(bond) => Error::Enslaved { arg, iface: iface.to_owned(), bond },
        None => Error::NoSuchInterface { arg, iface: iface.to_owned(), links: links_text() },
    };

    let mut slaves: Vec<String> = Vec::new();
    for bond in &net.bonds {
        let arg = format!("bond={}", bond.name);
        for slave in &bond.slaves {
            if !names.contains(slave) {
                return Err(Error::NoSuchInterface { arg, iface: slave.clone(), links: links_text() });
            }
            if slaves.contains(slave) {
                return Err(Error::SlaveTwice { bond: bond.name.clone(), slave: slave.clone() });
            }
            slaves.push(slave.clone());
        }
        if names.contains(&bond.name) {
            return Err(Error::NameTaken { arg, name: bond.name.clone() });
        }
        plan.bonds.push(bond_plan(bond)?);
    }
    let mut top: Vec<String> = names.iter().filter(|n| !slaves.contains(n)).cloned().collect();
    top.extend(plan.bonds.iter().map(|b| b.name.clone()));
    for vlan in &net.vlans {
        let arg = format!("vlan={}:{}", vlan.name, vlan.phys);
        if !top.contains(&vlan.phys) {
            return Err(missing(arg, &vlan.phys));
        }
        if top.contains(&vlan.name) || names.contains(&vlan.name) {
            return Err(Error::NameTaken { arg, name: vlan.name.clone() });
        }
        plan.vlans.push(vlan.clone());
        top.push(vlan.name.clone());
    }
    plan.up = names.clone();
    plan.up.extend(plan.bonds.iter().map(|b| b.name.clone()));
    plan.up.extend(plan.vlans.iter().map(|v| v.name.clone()));

    let nameserver4: Vec<Ipv4Addr> = net.nameservers.iter().filter_map(|a| v4(*a)).collect();
    for ip in &net.ip {
        if let Some(mut lease) = static_lease(ip) {
            let iface = match &lease.interface {
                name if name.is_empty() => top.first().cloned().ok_or_else(|| Error::NoEthernet { links: all.join(", ") })?,
                name if top.contains(name) => name.clone(),
                name => return Err(missing(format!("ip={}", lease.address), name)),
            };
            lease.interface = iface;
            for server in &nameserver4 {
                if !lease.dns.contains(server) {
                    lease.dns.push(*server);
                }
            }
            plan.statics.push(lease);
        }
    }
    let named: Vec<&String> = net
        .ip
        .iter()
        .filter_map(|ip| match ip {
            Ip::Auto { iface: Some(iface), method: Method::Dhcp, .. } => Some(iface),
            _ => None,
        })
        .collect();
    let any_dhcp = net.ip.iter().any(|ip| matches!(ip, Ip::Auto { iface: None, method: Method::Dhcp, .. }));
    if !named.is_empty() && !any_dhcp {
        for iface in named {
            if !top.contains(iface) {
                return Err(missing(format!("ip={iface}:dhcp"), iface));
            }
            if !plan.dhcp.contains(iface) {
                plan.dhcp.push(iface.clone());
            }
        }
        plan.dhcp_named = true;
    } else if any_dhcp || plan.statics.is_empty() {
        plan.dhcp = top.iter().filter(|n| !plan.statics.iter().any(|s| &s.interface == *n)).cloned().collect();
    }
    if plan.dhcp.is_empty() && plan.statics.is_empty() {
        return Err(Error::NoEthernet { links: all.join(", ") });
    }
    for route in &net.routes {
        let (IpAddr::V4(destination), gateway) = (route.destination, route.gateway) else { continue };
        if let Some(iface) = route.iface.as_ref().filter(|i| !top.contains(i)) {
            return Err(missing(format!("rd.route={destination}/{}", route.prefix), iface));
        }
        plan.routes.push(Route { destination, prefix: route.prefix, gateway: gateway.and_then(v4), iface: route.iface.clone() });
    }
    plan.nameservers.clone_from(&net.nameservers);
    Ok(plan)
}

fn v4(address: IpAddr) -> Option<Ipv4Addr> {
    match address {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// A static IPv4 `ip=...:none` as a lease-shaped record with no server and
/// no lifetime; `interface` is empty when `ip=` names none. A fully
/// qualified host name gives its domain as the search domain.
pub fn static_lease(ip: &Ip) -> Option<Lease> {
    let Ip::Static { address: IpAddr::V4(address), gateway, prefix, iface, method: Method::None, dns, mtu, hostname, .. } = ip else {
        return None;
    };
    let search = hostname.as_deref().and_then(|h| h.split_once('.')).map(|(_, domain)| vec![domain.to_owned()]).unwrap_or_default();
    Some(Lease {
        interface: iface.clone().unwrap_or_default(),
        address: *address,
        prefix_len: *prefix,
        gateway: gateway.and_then(v4),
        dns: dns.iter().filter_map(|a| v4(*a)).collect(),
        search,
        lease_seconds: 0,
        server: Ipv4Addr::UNSPECIFIED,
        mtu: mtu.and_then(|m| u16::try_from(m).ok()),
        hostname: hostname.clone(),
        ntp_servers: Vec::new(),
    })
}

fn bond_plan(bond: &args::Bond) -> Result<BondPlan, Error> {
    let mut options = Vec::new();
    for (key, value) in &bond.options {
        let bad = || Error::BondOption { bond: bond.name.clone(), option: format!("{key}={value}") };
        let number = || value.parse::<u32>().map_err(|_| bad());
        options.push(match key.as_str() {
            "miimon" => BondOption::Miimon(number()?),
            "updelay" => BondOption::Updelay(number()?),
            "downdelay" => BondOption::Downdelay(number()?),
            "min_links" => BondOption::MinLinks(number()?),
            "lacp_rate" => BondOption::LacpRateFast(match value.as_str() {
                "slow" | "0" => false,
                "fast" | "1" => true,
                _ => return Err(bad()),
            }),
            "xmit_hash_policy" => BondOption::XmitHashPolicy(match value.as_str() {
                "layer2" | "0" => 0,
                "layer3+4" | "1" => 1,
                "layer2+3" | "2" => 2,
                "encap2+3" | "3" => 3,
                "encap3+4" | "4" => 4,
                _ => return Err(bad()),
            }),
            _ => return Err(bad()),
        });
    }
    Ok(BondPlan { name: bond.name.clone(), slaves: bond.slaves.clone(), mode: bond.mode.clone(), options, mtu: bond.mtu })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC0: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x10];
    const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x11];

    fn links() -> Vec<Link> {
        let link = |index, name: &str, mac: &[u8], kind| Link {
            index,
            name: name.into(),
            mac: mac.to_vec(),
            ethernet: kind != Kind::Other,
            kind,
            carrier: true,
            controller: None,
        };
        vec![link(1, "lo", &[0; 6], Kind::Other), link(2, "eth0", &MAC0, Kind::Ethernet), link(3, "eth1", &MAC1, Kind::Ethernet)]
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The default plan for `links()`: both up, DHCP on both.
    fn base() -> Plan {
        Plan { up: strings(&["eth0", "eth1"]), dhcp: strings(&["eth0", "eth1"]), ..Plan::default() }
    }

    fn check(line: &str, expected: Result<Plan, &str>) {
        let got = plan(&links(), &args::parse(line).unwrap()).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "{line}");
    }

    fn static_eth0(address: &str, gateway: Option<&str>) -> Lease {
        Lease {
            interface: "eth0".into(),
            address: address.parse().unwrap(),
            prefix_len: 24,
            gateway: gateway.map(|g| g.parse().unwrap()),
            dns: vec![],
            search: vec![],
            lease_seconds: 0,
            server: Ipv4Addr::UNSPECIFIED,
            mtu: None,
            hostname: None,
            ntp_servers: vec![],
        }
    }

    #[test]
    fn dhcp_everywhere_or_where_named() {
        check("", Ok(base()));
        check("ip=dhcp rd.neednet=1", Ok(base()));
        check("ip=eth1:dhcp", Ok(Plan { dhcp: strings(&["eth1"]), dhcp_named: true, ..base() }));
        check("ip=eth1:dhcp ip=eth0:dhcp", Ok(Plan { dhcp: strings(&["eth1", "eth0"]), dhcp_named: true, ..base() }));
        check("ip=eth1:dhcp ip=dhcp", Ok(base()));
        // IPv6-only requests leave DHCPv4 on (the IPv6 part is not ours).
        check("ip=dhcp6", Ok(base()));
        check("ip=eth7:dhcp", Err("ip=eth7:dhcp: no interface eth7 (links: eth0, eth1)"));
        let lo_only = plan(&links()[..1], &NetArgs::default()).map_err(|e| e.to_string());
        assert_eq!(lo_only, Err("no Ethernet interface to configure (links: lo)".into()));
        // A loopback that claims Ethernet, a tunnel, an InfiniBand-sized
        // hardware address: none is a link to configure.
        let odd = |index, name: &str, mac: &[u8], kind| Link { index, name: name.into(), mac: mac.to_vec(), ethernet: true, kind, carrier: true, controller: None };
        let odd = [odd(1, "lo", &MAC0, Kind::Ethernet), odd(4, "sit0", &[0; 4], Kind::Other), odd(5, "ib0", &[0; 20], Kind::Ethernet)];
        let got = plan(&odd, &NetArgs::default()).map_err(|e| e.to_string());
        assert_eq!(got, Err("no Ethernet interface to configure (links: lo, sit0, ib0)".into()));
    }

    #[test]
    fn statics() {
        let s = static_eth0("10.0.0.5", Some("10.0.0.1"));
        check("ip=10.0.0.5::10.0.0.1:24:::none", Ok(Plan { statics: vec![s.clone()], dhcp: vec![], ..base() }));
        check("ip=10.0.0.5::10.0.0.1:24::eth0:none", Ok(Plan { statics: vec![s.clone()], dhcp: vec![], ..base() }));
        // Static on eth0 and DHCP on the other, asked either way.
        check("ip=10.0.0.5::10.0.0.1:24::eth0:none ip=eth1:dhcp", Ok(Plan { statics: vec![s.clone()], dhcp: strings(&["eth1"]), dhcp_named: true, ..base() }));
        check("ip=10.0.0.5::10.0.0.1:24::eth0:none ip=dhcp", Ok(Plan { statics: vec![s], dhcp: strings(&["eth1"]), ..base() }));
        let with_dns = Lease {
            dns: vec!["10.0.0.2".parse().unwrap(), "9.9.9.9".parse().unwrap()],
            hostname: Some("node1.lab.example".into()),
            search: strings(&["lab.example"]),
            ..static_eth0("10.0.0.5", None)
        };
        check("ip=10.0.0.5:::24:node1.lab.example:eth0:none:10.0.0.2 nameserver=9.9.9.9 nameserver=2001:db8::53", Ok(Plan {
            statics: vec![with_dns],
            dhcp: vec![],
            nameservers: vec!["9.9.9.9".parse().unwrap(), "2001:db8::53".parse().unwrap()],
            ..base()
        }));
        check("ip=10.0.0.5::10.0.0.1:24::eth9:none", Err("ip=10.0.0.5: no interface eth9 (links: eth0, eth1)"));
    }

    #[test]
    fn renames_bonds_vlans() {
        check("ifname=lan1:52:54:00:00:00:11 ip=lan1:dhcp", Ok(Plan {
            renames: vec![Rename { index: 3, from: "eth1".into(), to: "lan1".into() }],
            up: strings(&["eth0", "lan1"]),
            dhcp: strings(&["lan1"]),
            dhcp_named: true,
            ..base()
        }));
        // Swapping two names is allowed; executing it goes through temporary names.
        let swapped = plan(&links(), &args::parse("ifname=eth1:52:54:00:00:00:10 ifname=eth0:52:54:00:00:00:11").unwrap()).unwrap();
        assert_eq!(swapped.up, strings(&["eth1", "eth0"]));
        assert_eq!(swapped.renames.len(), 2);
        check("ifname=eth0:52:54:00:00:00:11", Err("ifname=eth0:52:54:00:00:00:11: name eth0 is taken by another link"));
        check("ifname=lan0:52:54:00:00:00:99", Err("ifname=lan0:52:54:00:00:00:99: no link has MAC 52:54:00:00:00:99 (links: lo, eth0, eth1)"));

        let bond = BondPlan {
            name: "bond0".into(),
            slaves: strings(&["eth0", "eth1"]),
            mode: "802.3ad".into(),
            options: vec![BondOption::Miimon(100), BondOption::LacpRateFast(true), BondOption::XmitHashPolicy(1)],
            mtu: None,
        };
        check("bond=bond0:eth0,eth1:mode=802.3ad,miimon=100,lacp_rate=fast,xmit_hash_policy=layer3+4", Ok(Plan {
            bonds: vec![bond.clone()],
            up: strings(&["eth0", "eth1", "bond0"]),
            dhcp: strings(&["bond0"]),
            ..base()
        }));
        // Static on a VLAN on the bond: the whole stack, DHCP off.
        let on_vlan = Lease { interface: "bond0.5".into(), ..static_eth0("10.5.0.2", None) };
        check("bond=bond0:eth0,eth1:mode=802.3ad,miimon=100,lacp_rate=fast,xmit_hash_policy=layer3+4 vlan=bond0.5:bond0 ip=10.5.0.2:::24::bond0.5:none rd.route=10.6.0.0/16:10.5.0.1:bond0.5", Ok(Plan {
            bonds: vec![bond],
            vlans: vec![args::Vlan { name: "bond0.5".into(), id: 5, phys: "bond0".into() }],
            up: strings(&["eth0", "eth1", "bond0", "bond0.5"]),
            statics: vec![on_vlan],
            dhcp: vec![],
            routes: vec![Route { destination: "10.6.0.0".parse().unwrap(), prefix: 16, gateway: Some("10.5.0.1".parse().unwrap()), iface: Some("bond0.5".into()) }],
            ..base()
        }));
        check("vlan=vlan0005:eth1", Ok(Plan {
            vlans: vec![args::Vlan { name: "vlan0005".into(), id: 5, phys: "eth1".into() }],
            up: strings(&["eth0", "eth1", "vlan0005"]),
            dhcp: strings(&["eth0", "eth1", "vlan0005"]),
            ..base()
        }));
        check("bond=bond0:eth0,eth3", Err("bond=bond0: no interface eth3 (links: eth0, eth1)"));
        check("bond=bond0:eth0 bond=bond1:eth0", Err("bond=bond1: eth0 is a slave of two bonds"));
        check("bond=bond0:eth0:mode=active-backup,arp_interval=100", Err("bond=bond0: option arp_interval=100 is not supported (miimon, updelay, downdelay, min_links, lacp_rate, xmit_hash_policy)"));
        check("bond=bond0:eth0:miimon=often", Err("bond=bond0: option miimon=often is not supported (miimon, updelay, downdelay, min_links, lacp_rate, xmit_hash_policy)"));
        check("bond=bond0:eth0 vlan=eth0.5:eth0", Err("vlan=eth0.5:eth0: eth0 is a slave of bond bond0; configure the bond"));
        check("bond=bond0:eth0 ip=eth0:dhcp", Err("ip=eth0:dhcp: eth0 is a slave of bond bond0; configure the bond"));
        check("vlan=eth1.5:eth1 vlan=eth1.0005:eth1 ip=eth1.0005:dhcp", Ok(Plan {
            vlans: vec![
                args::Vlan { name: "eth1.5".into(), id: 5, phys: "eth1".into() },
                args::Vlan { name: "eth1.0005".into(), id: 5, phys: "eth1".into() },
            ],
            up: strings(&["eth0", "eth1", "eth1.5", "eth1.0005"]),
            dhcp: strings(&["eth1.0005"]),
            dhcp_named: true,
            ..base()
        }));
    }

    #[test]
    fn routes() {
        check("rd.route=10.1.0.0/16:10.0.0.1 rd.route=[2001:db8:1::]/48:[2001:db8::1]", Ok(Plan {
            routes: vec![Route { destination: "10.1.0.0".parse().unwrap(), prefix: 16, gateway: Some("10.0.0.1".parse().unwrap()), iface: None }],
            ..base()
        }));
        check("rd.route=10.1.0.0/16:10.0.0.1:eth5", Err("rd.route=10.1.0.0/16: no interface eth5 (links: eth0, eth1)"));
    }
}
