//! dracut-compatible network arguments on the kernel command line, so that
//! existing PXE configurations keep working: `ip=`, `nameserver=`,
//! `rd.neednet=`, `ifname=`, `vlan=`, `bond=`, `rd.route=` (dracut.cmdline(7)).
//!
//! Pure: `parse` takes the whole command line and returns what it asks for,
//! or an error that quotes the offending argument. IPv6 addresses are written
//! in brackets (`[2001:db8::1]`), as dracut wants, so `:` can separate fields.

use std::net::IpAddr;

use crate::cmdline::split;

/// How an interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Dhcp,
    Dhcp6,
    Auto6,
    Link6,
    Either6,
    Ibft,
    /// Static configuration only (`none`/`off`).
    None,
}

/// One `ip=` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ip {
    /// `ip=dhcp`, `ip=eth0:dhcp[:mtu[:mac]]`.
    Auto { iface: Option<String>, method: Method, mtu: Option<u32>, mac: Option<String> },
    /// `ip=<client>:[<peer>]:<gateway>:<netmask>:<hostname>:<iface>:<method>[:dns1[:dns2]]`
    /// (or `[:mtu[:mac]]` in place of the DNS servers).
    Static {
        address: IpAddr,
        peer: Option<IpAddr>,
        gateway: Option<IpAddr>,
        prefix: u8,
        hostname: Option<String>,
        iface: Option<String>,
        method: Method,
        dns: Vec<IpAddr>,
        mtu: Option<u32>,
        mac: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    pub name: String,
    pub id: u16,
    pub phys: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bond {
    pub name: String,
    pub slaves: Vec<String>,
    /// `mode=...` and the other options, in order; mode defaults to
    /// balance-rr as in dracut.
    pub mode: String,
    pub options: Vec<(String, String)>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub iface: Option<String>,
}

/// Everything the network arguments of a command line ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetArgs {
    pub ip: Vec<Ip>,
    pub nameservers: Vec<IpAddr>,
    pub need_net: bool,
    /// `ifname=<name>:<MAC>`: rename the NIC with that MAC.
    pub ifnames: Vec<(String, String)>,
    pub vlans: Vec<Vlan>,
    pub bonds: Vec<Bond>,
    pub routes: Vec<Route>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{arg}: {reason}")]
pub struct Error {
    pub arg: String,
    pub reason: String,
}

pub fn parse(line: &str) -> Result<NetArgs, Error> {
    let mut out = NetArgs::default();
    for (key, value) in split(line) {
        let Some(value) = value else { continue };
        let arg = format!("{key}={value}");
        let err = |reason: String| Error { arg: arg.clone(), reason };
        match key.as_str() {
            "ip" => out.ip.push(ip(&value).map_err(err)?),
            "nameserver" => out.nameservers.push(addr(&value).map_err(err)?),
            "rd.neednet" => out.need_net = value == "1",
            "ifname" => out.ifnames.push(ifname(&value).map_err(err)?),
            "vlan" => out.vlans.push(vlan(&value).map_err(err)?),
            "bond" => out.bonds.push(bond(&value).map_err(err)?),
            "rd.route" => out.routes.push(route(&value).map_err(err)?),
            _ => {}
        }
    }
    Ok(out)
}

/// Splits on `:` outside brackets; brackets are removed from the fields.
fn fields(value: &str) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut depth = 0;
    for c in value.chars() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return Err("unbalanced brackets".into()),
            ':' if depth == 0 => out.push(String::new()),
            _ => out.last_mut().map_or((), |f| f.push(c)),
        }
    }
    if depth != 0 {
        return Err("unbalanced brackets".into());
    }
    Ok(out)
}

fn method(text: &str) -> Option<Method> {
    Some(match text {
        "dhcp" | "on" | "any" | "single-dhcp" => Method::Dhcp,
        "dhcp6" => Method::Dhcp6,
        "auto6" => Method::Auto6,
        "link6" => Method::Link6,
        "either6" => Method::Either6,
        "ibft" => Method::Ibft,
        "none" | "off" => Method::None,
        _ => return None,
    })
}

fn addr(text: &str) -> Result<IpAddr, String> {
    let text = text.trim_start_matches('[').trim_end_matches(']');
    text.parse().map_err(|_| format!("{text:?} is not an IP address"))
}

fn opt<T>(text: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if text.is_empty() { Ok(None) } else { f(text).map(Some) }
}

fn name(text: &str) -> Result<String, String> {
    let ok = (1..=15).contains(&text.len()) && text.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok { Ok(text.to_string()) } else { Err(format!("{text:?} is not an interface name")) }
}

fn mtu(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (68..=65535).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not an MTU (68..65535)")),
    }
}

fn mac(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let ok = parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok { Ok(parts.join(":").to_ascii_lowercase()) } else { Err(format!("{text:?} is not a MAC address")) }
}

/// A netmask (`255.255.255.0`) or a prefix length (`24`, `64`).
fn prefix(text: &str, v6: bool) -> Result<u8, String> {
    let max = if v6 { 128 } else { 32 };
    if let Ok(n) = text.parse::<u8>() {
        if n <= max {
            return Ok(n);
        }
    }
    if let Ok(IpAddr::V4(mask)) = text.parse::<IpAddr>() {
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() == 32 && !v6 {
            return u8::try_from(bits.leading_ones()).map_err(|_| String::new());
        }
    }
    Err(format!("{text:?} is not a netmask or prefix length"))
}

fn ip(value: &str) -> Result<Ip, String> {
    let f = fields(value)?;
    let get = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
    if f.len() == 1 {
        let method = method(get(0)).ok_or_else(|| format!("unknown method {:?}", get(0)))?;
        return Ok(Ip::Auto { iface: None, method, mtu: None, mac: None });
    }
    // `<iface>:<method>[:<mtu>[:<mac>]]`: the second field is a method (in
    // the static form it is the peer, an address or empty). The MAC keeps
    // its colons, so it is everything after the MTU.
    if let Some(m) = method(get(1)).filter(|_| get(0).parse::<IpAddr>().is_err() && !get(0).starts_with('[')) {
        if m == Method::None {
            return Err("`none` needs a static address (ip=<client>:[<peer>]:<gw>:<mask>:<host>:<iface>:none)".into());
        }
        let mac_text = f.get(3..).map(|rest| rest.join(":")).unwrap_or_default();
        return Ok(Ip::Auto { iface: Some(name(get(0))?), method: m, mtu: opt(get(2), mtu)?, mac: opt(&mac_text, mac)? });
    }
    if f.len() <= 4 {
        return Err(format!("unknown method {:?}", get(1)));
    }
    if !(7..=9).contains(&f.len()) {
        return Err("expected <client>:[<peer>]:<gateway>:<netmask>:<hostname>:<iface>:<method>[:dns1[:dns2]]".into());
    }
    let address = addr(get(0))?;
    let v6 = address.is_ipv6();
    let m = method(get(6)).ok_or_else(|| format!("unknown method {:?}", get(6)))?;
    // The two optional fields are DNS servers when they parse as addresses,
    // else MTU and MAC.
    let (mut dns, mut mtu_v, mut mac_v) = (Vec::new(), None, None);
    if get(7).parse::<IpAddr>().is_ok() || get(7).starts_with('[') {
        dns.push(addr(get(7))?);
        if !get(8).is_empty() {
            dns.push(addr(get(8))?);
        }
    } else {
        mtu_v = opt(get(7), mtu)?;
        mac_v = opt(get(8), mac)?;
    }
    let gateway = opt(get(2), addr)?;
    if gateway.is_some_and(|g| g.is_ipv6() != v6) {
        return Err("client and gateway addresses are of different families".into());
    }
    Ok(Ip::Static {
        address,
        peer: opt(get(1), addr)?,
        gateway,
        prefix: prefix(get(3), v6)?,
        hostname: opt(get(4), |h| {
            let ok = h.len() <= 253 && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
            if ok { Ok(h.to_string()) } else { Err(format!("{h:?} is not a hostname")) }
        })?,
        iface: opt(get(5), name)?,
        method: m,
        dns,
        mtu: mtu_v,
        mac: mac_v,
    })
}

/// What net-up does not apply (`ip=either6`/`link6`, MTU or MAC fields of
/// the `dhcp`/`dhcp6`/`auto6` and static IPv6 forms, `ip=ibft`), for a
/// warning; None when it applies it all.
pub fn unapplied(net: &NetArgs) -> Option<String> {
    let ip: Vec<Ip> = net
        .ip
        .iter()
        .filter(|ip| {
            super::plan::static_lease(ip).is_none()
                && !matches!(ip, Ip::Auto { method: Method::Dhcp, mtu: None, mac: None, .. })
                && !matches!(ip, Ip::Auto { method: Method::Dhcp6 | Method::Auto6, mtu: None, mac: None, .. })
                && !super::static6::is_static_v6(ip)
        })
        .cloned()
        .collect();
    let rest = NetArgs { ip, ..NetArgs::default() };
    (rest != NetArgs::default()).then(|| format!("{rest:?}"))
}

fn ifname(value: &str) -> Result<(String, String), String> {
    let (n, m) = value.split_once(':').ok_or("expected <name>:<MAC>")?;
    Ok((name(n)?, mac(m)?))
}

/// The VLAN id is in the name: `eth0.5`, `vlan0005`, `vlan5`, `eth0.0005`.
fn vlan(value: &str) -> Result<Vlan, String> {
    let (n, phys) = value.split_once(':').ok_or("expected <vlanname>:<phys>")?;
    let digits = n.rsplit_once('.').map(|(_, d)| d).or_else(|| n.strip_prefix("vlan")).unwrap_or("");
    let id = match digits.parse::<u16>() {
        Ok(id) if (1..=4094).contains(&id) => id,
        _ => return Err(format!("no VLAN id 1..4094 in {n:?} (name it like eth0.5 or vlan5)")),
    };
    Ok(Vlan { name: name(n)?, id, phys: name(phys)? })
}

fn bond(value: &str) -> Result<Bond, String> {
    let mut parts = value.splitn(4, ':');
    let bond_name = name(parts.next().unwrap_or(""))?;
    let slaves: Vec<String> = match parts.next() {
        Some(s) if !s.is_empty() => s.split(',').map(name).collect::<Result<_, _>>()?,
        _ => vec!["eth0".into(), "eth1".into()],
    };
    let mut mode = "balance-rr".to_string();
    let mut options = Vec::new();
    for option in parts.next().unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        let (k, v) = option.split_once('=').ok_or_else(|| format!("bond option {option:?} is not key=value"))?;
        if k == "mode" {
            const MODES: &[&str] = &["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"];
            let m = match v {
                "0" => "balance-rr",
                "1" => "active-backup",
                "4" => "802.3ad",
                other if MODES.contains(&other) => other,
                other => return Err(format!("unknown bond mode {other:?}")),
            };
            mode = m.to_string();
        } else {
            options.push((k.to_string(), v.to_string()));
        }
    }
    Ok(Bond { name: bond_name, slaves, mode, options, mtu: opt(parts.next().unwrap_or(""), mtu)? })
}

/// `rd.route=<net>/<prefix>:[<gateway>][:<iface>]`.
fn route(value: &str) -> Result<Route, String> {
    let f = fields(value)?;
    let get = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
    if f.len() > 3 || get(0).is_empty() {
        return Err("expected <net>/<netmask>:[<gateway>][:<interface>]".into());
    }
    let (net, len) = get(0).split_once('/').ok_or("the destination needs a /prefix")?;
    let destination = addr(net)?;
    Ok(Route {
        destination,
        prefix: prefix(len, destination.is_ipv6())?,
        gateway: opt(get(1), addr)?,
        iface: opt(get(2), name)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn check(line: &str, want: Result<NetArgs, &str>) {
        assert_eq!(parse(line).map_err(|e| e.to_string()), want.map_err(str::to_string), "{line}");
    }

    fn only(f: impl FnOnce(&mut NetArgs)) -> Result<NetArgs, &'static str> {
        let mut n = NetArgs::default();
        f(&mut n);
        Ok(n)
    }

    #[test]
    fn auto_forms() {
        let auto = |iface: Option<&str>, method, mtu, mac: Option<&str>| Ip::Auto {
            iface: iface.map(str::to_string),
            method,
            mtu,
            mac: mac.map(str::to_string),
        };
        check("ip=dhcp", only(|n| n.ip = vec![auto(None, Method::Dhcp, None, None)]));
        check("ip=dhcp6 rd.neednet=1", only(|n| {
            n.ip = vec![auto(None, Method::Dhcp6, None, None)];
            n.need_net = true;
        }));
        check("ip=eth1:dhcp", only(|n| n.ip = vec![auto(Some("eth1"), Method::Dhcp, None, None)]));
        check(
            "ip=eth1:dhcp:9000:52:54:00:12:34:56",
            only(|n| n.ip = vec![auto(Some("eth1"), Method::Dhcp, Some(9000), Some("52:54:00:12:34:56"))]),
        );
        check("ip=eth1:dhcp::52:54:00:12:34", Err("ip=eth1:dhcp::52:54:00:12:34: \"52:54:00:12:34\" is not a MAC address"));
        check("ip=eth1:bogus", Err("ip=eth1:bogus: unknown method \"bogus\""));
        check("ip=eth1:dhcp:9000", only(|n| n.ip = vec![auto(Some("eth1"), Method::Dhcp, Some(9000), None)]));
    }

    #[test]
    fn static_forms() {
        let line = "ip=192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none:192.168.1.2:192.168.1.3 nameserver=9.9.9.9";
        check(line, only(|n| {
            n.ip = vec![Ip::Static {
                address: a("192.168.1.10"),
                peer: None,
                gateway: Some(a("192.168.1.1")),
                prefix: 24,
                hostname: Some("node1".into()),
                iface: Some("eth0".into()),
                method: Method::None,
                dns: vec![a("192.168.1.2"), a("192.168.1.3")],
                mtu: None,
                mac: None,
            }];
            n.nameservers = vec![a("9.9.9.9")];
        }));
        check("ip=[2001:db8::2]::[2001:db8::1]:64::eth0:none", only(|n| {
            n.ip = vec![Ip::Static {
                address: a("2001:db8::2"),
                peer: None,
                gateway: Some(a("2001:db8::1")),
                prefix: 64,
                hostname: None,
                iface: Some("eth0".into()),
                method: Method::None,
                dns: vec![],
                mtu: None,
                mac: None,
            }];
        }));
        check("ip=10.0.0.5::10.0.0.1:16:h:eth0:off:1500:AA-BB-CC-DD-EE-FF", only(|n| {
            n.ip = vec![Ip::Static {
                address: a("10.0.0.5"),
                peer: None,
                gateway: Some(a("10.0.0.1")),
                prefix: 16,
                hostname: Some("h".into()),
                iface: Some("eth0".into()),
                method: Method::None,
                dns: vec![],
                mtu: Some(1500),
                mac: Some("aa:bb:cc:dd:ee:ff".into()),
            }];
        }));
    }

    #[test]
    fn devices_and_routes() {
        check("ifname=lan0:52:54:00:12:34:56 vlan=eth0.100:eth0 vlan=vlan7:lan0", only(|n| {
            n.ifnames = vec![("lan0".into(), "52:54:00:12:34:56".into())];
            n.vlans = vec![
                Vlan { name: "eth0.100".into(), id: 100, phys: "eth0".into() },
                Vlan { name: "vlan7".into(), id: 7, phys: "lan0".into() },
            ];
        }));
        check("bond=bond0:eth0,eth1:mode=802.3ad,miimon=100:9000", only(|n| {
            n.bonds = vec![Bond {
                name: "bond0".into(),
                slaves: vec!["eth0".into(), "eth1".into()],
                mode: "802.3ad".into(),
                options: vec![("miimon".into(), "100".into())],
                mtu: Some(9000),
            }];
        }));
        check("bond=bond1", only(|n| {
            n.bonds = vec![Bond { name: "bond1".into(), slaves: vec!["eth0".into(), "eth1".into()], mode: "balance-rr".into(), options: vec![], mtu: None }];
        }));
        check("rd.route=10.1.0.0/16:10.0.0.1:eth0 rd.route=[2001:db8:1::]/48:[2001:db8::1]", only(|n| {
            n.routes = vec![
                Route { destination: a("10.1.0.0"), prefix: 16, gateway: Some(a("10.0.0.1")), iface: Some("eth0".into()) },
                Route { destination: a("2001:db8:1::"), prefix: 48, gateway: Some(a("2001:db8::1")), iface: None },
            ];
        }));
    }

    #[test]
    fn errors_name_the_argument() {
        let cases: &[(&str, &str)] = &[
            ("ip=dhcpx", "ip=dhcpx: unknown method \"dhcpx\""),
            ("ip=eth0:none", "ip=eth0:none: `none` needs a static address (ip=<client>:[<peer>]:<gw>:<mask>:<host>:<iface>:none)"),
            ("ip=10.0.0.300::10.0.0.1:24:h:eth0:none", "ip=10.0.0.300::10.0.0.1:24:h:eth0:none: \"10.0.0.300\" is not an IP address"),
            ("ip=10.0.0.3::10.0.0.1:255.0.255.0:h:eth0:none", "ip=10.0.0.3::10.0.0.1:255.0.255.0:h:eth0:none: \"255.0.255.0\" is not a netmask or prefix length"),
            ("ip=10.0.0.3::[2001:db8::1]:24:h:eth0:none", "ip=10.0.0.3::[2001:db8::1]:24:h:eth0:none: client and gateway addresses are of different families"),
            ("ip=[2001:db8::2::[2001:db8::1]:64::eth0:none", "ip=[2001:db8::2::[2001:db8::1]:64::eth0:none: unbalanced brackets"),
            ("nameserver=dns.example", "nameserver=dns.example: \"dns.example\" is not an IP address"),
            ("ifname=lan0", "ifname=lan0: expected <name>:<MAC>"),
            ("ifname=lan0:zz:54:00:12:34:56", "ifname=lan0:zz:54:00:12:34:56: \"zz:54:00:12:34:56\" is not a MAC address"),
            ("vlan=eth0:eth0", "vlan=eth0:eth0: no VLAN id 1..4094 in \"eth0\" (name it like eth0.5 or vlan5)"),
            ("vlan=eth0.5000:eth0", "vlan=eth0.5000:eth0: no VLAN id 1..4094 in \"eth0.5000\" (name it like eth0.5 or vlan5)"),
            ("bond=bond0:eth0:mode=fast", "bond=bond0:eth0:mode=fast: unknown bond mode \"fast\""),
            ("bond=bond0:eth0:miimon", "bond=bond0:eth0:miimon: bond option \"miimon\" is not key=value"),
            ("rd.route=10.1.0.0:10.0.0.1", "rd.route=10.1.0.0:10.0.0.1: the destination needs a /prefix"),
            ("ip=eth0:dhcp:10", "ip=eth0:dhcp:10: \"10\" is not an MTU (68..65535)"),
            ("ip=averyveryverylongname0:dhcp", "ip=averyveryverylongname0:dhcp: \"averyveryverylongname0\" is not an interface name"),
        ];
        for (line, want) in cases {
            check(line, Err(want));
        }
    }

    #[test]
    fn static_v4_becomes_the_configuration() {
        let net = parse("ip=10.0.2.15::10.0.2.2:255.255.255.0:guest:eth0:none:10.0.2.3").unwrap();
        let lease = super::super::plan::static_lease(&net.ip[0]).unwrap();
        assert_eq!(lease.interface, "eth0");
        assert_eq!((lease.address, lease.prefix_len, lease.gateway), ("10.0.2.15".parse().unwrap(), 24, Some("10.0.2.2".parse().unwrap())));
        assert_eq!(
            super::super::config::summary_line(&lease),
            "static: iface=eth0 addr=10.0.2.15/24 gateway=10.0.2.2 dns=10.0.2.3 (from ip=)"
        );
        assert!(super::super::plan::static_lease(&parse("ip=dhcp").unwrap().ip[0]).is_none());
        assert!(super::super::plan::static_lease(&parse("ip=[2001:db8::2]::[2001:db8::1]:64::eth0:none").unwrap().ip[0]).is_none());
    }

    #[test]
    fn unapplied_arguments_are_named() {
        let applied = [
            "",
            "ip=10.0.2.15::10.0.2.2:24::eth0:none nameserver=1.1.1.1 rd.neednet=1",
            "ip=dhcp6",
            "ip=eth1:dhcp6 ip=auto6",
            "ip=[2001:db8::2]::[2001:db8::1]:64::eth0:none ip=dhcp",
            "ip=dhcp ip=eth1:dhcp ifname=lan0:52:54:00:12:34:56 vlan=eth0.5:eth0 bond=bond0:eth1,eth2:mode=802.3ad rd.route=10.1.0.0/16:10.0.0.1",
        ];
        for line in applied {
            assert_eq!(unapplied(&parse(line).unwrap()), None, "{line}");
        }
        let not = unapplied(&parse("ip=10.0.2.15::10.0.2.2:24::eth0:none ip=eth0:either6 vlan=eth0.5:eth0").unwrap()).unwrap();
        assert!(not.contains("Either6") && !not.contains("10.0.2.15") && !not.contains("eth0.5"), "{not}");
        assert!(unapplied(&parse("ip=either6").unwrap()).is_some());
        assert!(unapplied(&parse("ip=eth0:dhcp6:1400").unwrap()).is_some());
        assert!(unapplied(&parse("ip=[2001:db8::2]::[2001:db8::1]:64::eth0:none:1400").unwrap()).is_some());
        assert_eq!(unapplied(&parse("rd.route=[2001:db8:1::]/48:[2001:db8::1]").unwrap()), None);
        assert!(unapplied(&parse("ip=eth0:dhcp:1400").unwrap()).is_some());
    }

    #[test]
    fn other_arguments_are_ignored() {
        check("console=ttyS0 rd.iguana.containers=a ip nameserver", Ok(NetArgs::default()));
    }
}
