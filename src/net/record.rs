//! What `net-up` leaves for containers: `/iguana/network.json` (a stable,
//! documented shape: README, "container contract") and `/etc/resolv.conf`.
//! Pure: `mod.rs` fills the structs from what it configured.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use super::config::{format_mac, Lease};
use super::link::{Kind, Link};
use super::plan::Plan;

/// glibc and musl both read at most three `nameserver` lines (MAXNS).
const MAX_NAMESERVERS: usize = 3;
/// glibc before 2.26 stops at six search domains; stay within it.
const MAX_SEARCH_DOMAINS: usize = 6;

/// One interface in network.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub kind: Kind,
    pub carrier: bool,
    /// Addresses with prefix length (`10.0.2.15/24`, `2001:db8::2/64`).
    pub addresses: Vec<String>,
    /// An address on it came from DHCPv4.
    pub dhcp: bool,
    /// VLAN id, for kind `vlan`.
    pub vlan_id: Option<u16>,
    /// The link under a VLAN, or the bond a slave belongs to.
    pub parent: Option<String>,
    /// For kind `bond`: its mode and slaves.
    pub bond_mode: Option<String>,
    pub slaves: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultRoute {
    pub gateway: Ipv4Addr,
    pub interface: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// `10.1.0.0/16`
    pub destination: String,
    pub gateway: Option<IpAddr>,
    pub interface: Option<String>,
}

/// A DHCP lease (or a static `ip=`, with server 0.0.0.0 and lease 0) and
/// when it was acquired, in seconds since the epoch by the machine's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    #[serde(flatten)]
    pub lease: Lease,
    pub acquired_at: u64,
}

/// All of `/iguana/network.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    pub hostname: Option<String>,
    pub interfaces: Vec<Interface>,
    pub default_route: Option<DefaultRoute>,
    pub routes: Vec<Route>,
    pub dns: Vec<IpAddr>,
    pub search: Vec<String>,
    /// DHCP leases in the order they came; the first one that has a
    /// gateway gave the default route unless a static `ip=` did.
    pub leases: Vec<LeaseRecord>,
}

impl Network {
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and addresses cannot fail.
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }

    /// Adds `server` to the DNS list unless it is already there.
    pub fn add_dns(&mut self, server: IpAddr) {
        if !server.is_unspecified() && !self.dns.contains(&server) {
            self.dns.push(server);
        }
    }

    pub fn add_search(&mut self, domain: &str) {
        if !self.search.iter().any(|d| d == domain) && self.search.len() < MAX_SEARCH_DOMAINS {
            self.search.push(domain.to_owned());
        }
    }

    /// resolv.conf: the search domains, then the first three servers.
    pub fn resolv_conf(&self, source: &str) -> String {
        let mut text = format!("# written by iguana net-up from {source}\n");
        if !self.search.is_empty() {
            let _ = writeln!(text, "search {}", self.search.join(" "));
        }
        for server in self.dns.iter().take(MAX_NAMESERVERS) {
            let _ = writeln!(text, "nameserver {server}");
        }
        text
    }
}

/// The record of what was configured: `links` as the kernel lists them
/// afterwards, `configured` static `ip=` first then DHCP leases, `leases`
/// the DHCP ones with their time. DNS servers: those of `ip=`, then
/// `nameserver=`, then the DHCP servers'.
pub fn build(
    plan: &Plan,
    links: &[Link],
    configured: &[Lease],
    default_route: Option<DefaultRoute>,
    leases: Vec<LeaseRecord>,
) -> Network {
    let is_static = |l: &&Lease| l.server.is_unspecified();
    let mut network = Network {
        hostname: configured.iter().find_map(|l| l.hostname.clone()),
        default_route,
        leases,
        ..Network::default()
    };
    for server in configured.iter().filter(is_static).flat_map(|l| &l.dns) {
        network.add_dns(IpAddr::V4(*server));
    }
    for server in &plan.nameservers {
        network.add_dns(*server);
    }
    for server in configured.iter().filter(|l| !is_static(l)).flat_map(|l| &l.dns) {
        network.add_dns(IpAddr::V4(*server));
    }
    for domain in configured.iter().flat_map(|l| &l.search) {
        network.add_search(domain);
    }
    network.routes = plan
        .routes
        .iter()
        .map(|r| Route {
            destination: format!("{}/{}", r.destination, r.prefix),
            gateway: r.gateway.map(IpAddr::V4),
            interface: r.iface.clone(),
        })
        .collect();
    let name_of = |index: u32| links.iter().find(|l| l.index == index).map(|l| l.name.clone());
    for link in links.iter().filter(|l| l.kind != Kind::Other && l.mac.len() == 6 && l.name != "lo") {
        let mine: Vec<&Lease> = configured.iter().filter(|l| l.interface == link.name).collect();
        let vlan = plan.vlans.iter().find(|v| v.name == link.name);
        network.interfaces.push(Interface {
            name: link.name.clone(),
            mac: format_mac(&link.mac),
            kind: link.kind,
            carrier: link.carrier,
            addresses: mine.iter().map(|l| format!("{}/{}", l.address, l.prefix_len)).collect(),
            dhcp: mine.iter().any(|l| !l.server.is_unspecified()),
            vlan_id: vlan.map(|v| v.id),
            parent: vlan.map(|v| v.phys.clone()).or_else(|| link.controller.and_then(name_of)),
            bond_mode: plan.bonds.iter().find(|b| b.name == link.name).map(|b| b.mode.clone()),
            slaves: links.iter().filter(|l| l.controller == Some(link.index)).map(|l| l.name.clone()).collect(),
        });
    }
    network
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            interface: "eth1".into(),
            address: "10.0.2.15".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.0.2.2".parse().unwrap()),
            dns: vec!["10.0.2.3".parse().unwrap()],
            search: vec![],
            lease_seconds: 86400,
            server: "10.0.2.2".parse().unwrap(),
            mtu: None,
            hostname: None,
            ntp_servers: vec![],
        }
    }

    #[test]
    fn json_shape() {
        let mut network = Network {
            hostname: Some("node1".into()),
            interfaces: vec![
                Interface {
                    name: "eth0".into(),
                    mac: "52:54:00:12:34:56".into(),
                    kind: Kind::Ethernet,
                    carrier: false,
                    addresses: vec![],
                    dhcp: false,
                    vlan_id: None,
                    parent: Some("bond0".into()),
                    bond_mode: None,
                    slaves: vec![],
                },
                Interface {
                    name: "eth1.5".into(),
                    mac: "52:54:00:12:34:57".into(),
                    kind: Kind::Vlan,
                    carrier: true,
                    addresses: vec!["10.0.2.15/24".into()],
                    dhcp: true,
                    vlan_id: Some(5),
                    parent: Some("eth1".into()),
                    bond_mode: None,
                    slaves: vec![],
                },
            ],
            default_route: Some(DefaultRoute { gateway: "10.0.2.2".parse().unwrap(), interface: "eth1.5".into() }),
            routes: vec![Route { destination: "10.1.0.0/16".into(), gateway: Some("10.0.2.9".parse().unwrap()), interface: None }],
            leases: vec![LeaseRecord { lease: lease(), acquired_at: 1_700_000_000 }],
            ..Network::default()
        };
        network.add_dns("10.0.2.3".parse().unwrap());
        network.add_dns("10.0.2.3".parse().unwrap());
        network.add_search("lab.example");
        let json: serde_json::Value = serde_json::from_str(&network.to_json()).unwrap();
        let expected = serde_json::json!({
            "hostname": "node1",
            "interfaces": [
                {"name": "eth0", "mac": "52:54:00:12:34:56", "kind": "ethernet", "carrier": false,
                 "addresses": [], "dhcp": false, "vlan_id": null, "parent": "bond0", "bond_mode": null, "slaves": []},
                {"name": "eth1.5", "mac": "52:54:00:12:34:57", "kind": "vlan", "carrier": true,
                 "addresses": ["10.0.2.15/24"], "dhcp": true, "vlan_id": 5, "parent": "eth1", "bond_mode": null, "slaves": []},
            ],
            "default_route": {"gateway": "10.0.2.2", "interface": "eth1.5"},
            "routes": [{"destination": "10.1.0.0/16", "gateway": "10.0.2.9", "interface": null}],
            "dns": ["10.0.2.3"],
            "search": ["lab.example"],
            "leases": [{
                "interface": "eth1", "address": "10.0.2.15", "prefix_len": 24,
                "gateway": "10.0.2.2", "dns": ["10.0.2.3"], "search": [],
                "lease_seconds": 86400, "server": "10.0.2.2", "mtu": null, "hostname": null, "ntp_servers": [],
                "acquired_at": 1_700_000_000,
            }],
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn built_from_what_was_configured() {
        let link = |index, name: &str, kind, controller| Link {
            index,
            name: name.into(),
            mac: vec![0x52, 0x54, 0, 0, 0, u8::try_from(index).unwrap()],
            ethernet: true,
            kind,
            carrier: index != 3,
            controller,
        };
        let links = vec![
            Link { mac: vec![0; 6], ..link(1, "lo", Kind::Other, None) },
            link(2, "eth0", Kind::Ethernet, Some(4)),
            link(3, "eth1", Kind::Ethernet, Some(4)),
            link(4, "bond0", Kind::Bond, None),
            link(5, "bond0.5", Kind::Vlan, None),
            link(6, "eth2", Kind::Ethernet, None),
        ];
        let net = super::super::args::parse(
            "bond=bond0:eth0,eth1:mode=active-backup,miimon=100 vlan=bond0.5:bond0 \
             ip=10.5.0.2::10.5.0.1:24:node1.lab.example:bond0.5:none:10.5.0.53 \
             nameserver=2001:db8::53 rd.route=10.6.0.0/16:10.5.0.9 ip=eth2:dhcp",
        )
        .unwrap();
        let plan = super::super::plan::plan(&links, &net).unwrap();
        let stat = plan.statics[0].clone();
        let dhcp = Lease { search: vec!["lab.example".into(), "dhcp.example".into()], ..lease() };
        let dhcp = Lease { interface: "eth2".into(), ..dhcp };
        let default_route = Some(DefaultRoute { gateway: "10.5.0.1".parse().unwrap(), interface: "bond0.5".into() });
        let record = LeaseRecord { lease: dhcp.clone(), acquired_at: 5 };
        let network = build(&plan, &links, &[stat, dhcp], default_route.clone(), vec![record.clone()]);
        let iface = |name: &str| network.interfaces.iter().find(|i| i.name == name).unwrap().clone();
        assert_eq!(network.interfaces.len(), 5);
        assert_eq!(network.hostname.as_deref(), Some("node1.lab.example"));
        assert_eq!(network.default_route, default_route);
        assert_eq!(network.leases, vec![record]);
        assert_eq!(network.dns, ["10.5.0.53", "2001:db8::53", "10.0.2.3"].map(|a| a.parse::<IpAddr>().unwrap()));
        assert_eq!(network.search, ["lab.example", "dhcp.example"]);
        assert_eq!(network.routes, vec![Route { destination: "10.6.0.0/16".into(), gateway: Some("10.5.0.9".parse().unwrap()), interface: None }]);
        let bond = iface("bond0");
        assert_eq!((bond.kind, bond.bond_mode.as_deref(), bond.slaves.clone()), (Kind::Bond, Some("active-backup"), vec!["eth0".to_string(), "eth1".to_string()]));
        let slave = iface("eth1");
        assert_eq!((slave.parent.as_deref(), slave.carrier, slave.addresses.len()), (Some("bond0"), false, 0));
        let vlan = iface("bond0.5");
        assert_eq!((vlan.vlan_id, vlan.parent.as_deref(), vlan.addresses.clone(), vlan.dhcp), (Some(5), Some("bond0"), vec!["10.5.0.2/24".to_string()], false));
        let eth2 = iface("eth2");
        assert_eq!((eth2.addresses.clone(), eth2.dhcp), (vec!["10.0.2.15/24".to_string()], true));
    }

    fn check(dns: &[&str], search: &[&str], expected: &str) {
        let mut network = Network::default();
        for server in dns {
            network.add_dns(server.parse().unwrap());
        }
        for domain in search {
            network.add_search(domain);
        }
        assert_eq!(network.resolv_conf("ip="), expected);
    }

    #[test]
    fn resolv_conf() {
        check(&[], &[], "# written by iguana net-up from ip=\n");
        check(&["10.0.2.3", "2001:db8::53", "10.0.2.3", "0.0.0.0"], &["a.example"],
              "# written by iguana net-up from ip=\nsearch a.example\nnameserver 10.0.2.3\nnameserver 2001:db8::53\n");
        check(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], &["a", "b", "a", "c", "d", "e", "f", "g"],
              "# written by iguana net-up from ip=\nsearch a b c d e f\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n");
    }
}
