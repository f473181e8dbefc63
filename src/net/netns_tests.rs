//! `net-up` against a real DHCP server: busybox `udhcpd` on one end of a veth
//! pair, `net-up` on the other, each in a network namespace the test creates
//! and deletes. Traffic never leaves those namespaces; the addresses are from
//! TEST-NET-1 (192.0.2.0/24). Needs root, `ip` and busybox with `udhcpd`;
//! without them the tests print why and pass.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::cli_net_up;

/// Why these tests cannot run here, if they cannot.
pub(super) fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root to create network namespaces".into());
    }
    let has = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has("ip", &["-V"]) {
        return Some("needs `ip` (iproute2)".into());
    }
    let applets = Command::new("busybox")
        .arg("--list")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if !String::from_utf8_lossy(&applets)
        .lines()
        .any(|applet| applet == "udhcpd")
    {
        return Some("needs busybox with udhcpd (Debian: busybox-static)".into());
    }
    None
}

macro_rules! skip_unless_possible {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// Skips (printing why) when the kernel lacks the link kinds a test needs;
/// the QEMU scenario `bond-vlan` covers them on the pinned Debian kernel.
macro_rules! skip_unless_kernel_has {
    ($lab:expr, $kinds:expr) => {
        if let Some(reason) = $lab.unsupported($kinds) {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

pub(super) fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A client and a server namespace joined by veth pairs; deleted on drop,
/// together with the DHCP server.
pub(super) struct Lab {
    pub(super) client: String,
    pub(super) server: String,
    dhcpd: Vec<Child>,
    pub(super) dir: tempfile::TempDir,
}

impl Lab {
    pub(super) fn new(tag: &str) -> Lab {
        let id = std::process::id();
        let lab = Lab {
            client: format!("igc-{id}-{tag}"),
            server: format!("igs-{id}-{tag}"),
            dhcpd: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        run("ip", &["netns", "add", &lab.client]);
        run("ip", &["netns", "add", &lab.server]);
        run("ip", &["-n", &lab.server, "link", "set", "lo", "up"]);
        lab
    }

    /// `client_if` in the client namespace, `server_if` in the server one.
    pub(super) fn veth(&self, client_if: &str, server_if: &str) {
        run(
            "ip",
            &[
                "-n",
                &self.client,
                "link",
                "add",
                client_if,
                "type",
                "veth",
                "peer",
                "name",
                server_if,
                "netns",
                &self.server,
            ],
        );
        run("ip", &["-n", &self.server, "link", "set", server_if, "up"]);
    }

    fn start_udhcpd(&mut self, server_if: &str, subnet: &str) {
        self.start_udhcpd_for(server_if, "192.0.2", subnet);
    }

    /// udhcpd on `server_if` at `net`.1, handing out `net`.100.
    fn start_udhcpd_for(&mut self, server_if: &str, net: &str, subnet: &str) {
        self.in_server(&["ip", "address", "add", &format!("{net}.1/24"), "dev", server_if]);
        let dir = self.dir.path();
        let conf = dir.join(format!("udhcpd-{server_if}.conf"));
        let leases = dir.join(format!("udhcpd-{server_if}.leases"));
        let text = format!(
            "start {net}.100\nend {net}.100\ninterface {server_if}\n\
             lease_file {leases}\npidfile {pid}\n\
             opt subnet {subnet}\nopt router {net}.1\nopt dns {net}.53 {net}.54\n\
             opt domain lab.example\nopt lease 3600\nopt ntpsrv {net}.123\n",
            leases = leases.display(),
            pid = dir.join(format!("udhcpd-{server_if}.pid")).display(),
        );
        fs::write(&conf, text).unwrap();
        fs::write(&leases, "").unwrap();
        let conf = conf.to_str().unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server,
                "busybox",
                "udhcpd",
                "-f",
                conf,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.dhcpd.push(child);
    }

    /// Runs `iguana net-up ARGS` with the calling thread moved into the client
    /// namespace; files go to the lab's temporary directory.
    fn net_up(&self, timeout_secs: u32) -> anyhow::Result<()> {
        // The host's own command line has nothing to do with this test.
        self.net_up_with("", timeout_secs)
    }

    /// `net-up` with `cmdline` as the kernel command line.
    fn net_up_with(&self, cmdline: &str, timeout_secs: u32) -> anyhow::Result<()> {
        fs::write(self.path("cmdline"), cmdline).unwrap();
        let args: Vec<String> = vec![
            "--timeout".into(),
            timeout_secs.to_string(),
            "--resolv-conf".into(),
            self.path("resolv.conf"),
            "--json".into(),
            self.path("run/iguana/network.json"),
            "--cmdline".into(),
            self.path("cmdline"),
        ];
        let netns = File::open(Path::new("/run/netns").join(&self.client)).unwrap();
        // setns(CLONE_NEWNET) moves only the calling thread, so the test
        // harness and other tests stay in the host namespace.
        thread::spawn(move || {
            setns(&netns, CloneFlags::CLONE_NEWNET).unwrap();
            cli_net_up(&args)
        })
        .join()
        .unwrap()
    }

    pub(super) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    pub(super) fn in_client(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.client];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn in_server(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.server];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Why the kernel cannot make the links `kinds` (`vlan`, `bond`,
    /// `bridge`) in this lab, if it cannot: a kernel without 8021q, bonding
    /// or bridge support answers "Unknown device type". Needs a veth `eth0`.
    fn unsupported(&self, kinds: &[&str]) -> Option<String> {
        for kind in kinds {
            let mut args = vec!["-n", self.client.as_str(), "link", "add"];
            if *kind == "vlan" {
                args.extend(["link", "eth0", "name", "igprobe", "type", "vlan", "id", "99"]);
            } else {
                args.extend(["igprobe", "type", kind]);
            }
            let output = Command::new("ip").args(&args).output().unwrap();
            if !output.status.success() {
                return Some(format!(
                    "this kernel cannot create a {kind} link: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            run("ip", &["-n", &self.client, "link", "del", "igprobe"]);
        }
        None
    }

    /// `ip -d -j link show NAME` in the client namespace, parsed.
    fn link_json(&self, name: &str) -> serde_json::Value {
        let text = self.in_client(&["ip", "-d", "-j", "link", "show", name]);
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        list[0].clone()
    }

    fn network_json(&self) -> serde_json::Value {
        let text = fs::read_to_string(self.path("run/iguana/network.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.dhcpd {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn lease_from_udhcpd_on_second_link() {
    skip_unless_possible!();
    let mut lab = Lab::new("lease");
    // eth0 leads nowhere useful (no server), eth1 has udhcpd: DHCP must run
    // on both at once and take the lease that comes.
    lab.veth("eth0", "vs0");
    lab.veth("eth1", "vs1");
    lab.start_udhcpd("vs1", "255.255.255.0");
    thread::sleep(Duration::from_millis(300));

    lab.net_up(30).unwrap();

    let lo = lab.in_client(&["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    let addr = lab.in_client(&["ip", "-4", "-o", "address", "show", "dev", "eth1"]);
    assert!(addr.contains("inet 192.0.2.100/24"), "{addr}");
    let route = lab.in_client(&["ip", "-4", "route", "show", "default"]);
    assert!(
        route.starts_with("default via 192.0.2.1 dev eth1 proto dhcp"),
        "{route}"
    );
    assert_eq!(
        fs::read_to_string(lab.path("resolv.conf")).unwrap(),
        "# written by iguana net-up from the configuration of eth1\n\
         search lab.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"
    );
    let json = lab.network_json();
    assert_eq!(json["leases"][0]["interface"], "eth1");
    assert_eq!(json["leases"][0]["address"], "192.0.2.100");
    assert_eq!(json["leases"][0]["gateway"], "192.0.2.1");
    assert_eq!(json["leases"][0]["lease_seconds"], 3600);
    assert_eq!(json["default_route"], serde_json::json!({"gateway": "192.0.2.1", "interface": "eth1"}));
    assert_eq!(json["interfaces"][0]["name"], "eth0");
    assert_eq!(json["interfaces"][0]["dhcp"], false);
    assert_eq!(json["interfaces"][1]["addresses"][0], "192.0.2.100/24");
    assert_eq!(json["interfaces"][1]["dhcp"], true);
    // DHCP option 42, as the clock phase reads it.
    assert_eq!(super::ntp_servers(&json.to_string()), ["192.0.2.123"]);
    // The configuration works: the server answers across the veth.
    lab.in_client(&["busybox", "ping", "-c", "1", "-W", "3", "192.0.2.1"]);
}

#[test]
fn gateway_outside_a_host_lease_is_onlink() {
    skip_unless_possible!();
    let mut lab = Lab::new("onlink");
    lab.veth("eth0", "vs0");
    lab.start_udhcpd("vs0", "255.255.255.255");
    thread::sleep(Duration::from_millis(300));

    lab.net_up(30).unwrap();

    let addr = lab.in_client(&["ip", "-4", "-o", "address", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 192.0.2.100/32"), "{addr}");
    let route = lab.in_client(&["ip", "-4", "route", "show", "default"]);
    assert!(
        route.starts_with("default via 192.0.2.1 dev eth0 proto dhcp"),
        "{route}"
    );
    assert!(route.contains("onlink"), "{route}");
    lab.in_client(&["busybox", "ping", "-c", "1", "-W", "3", "192.0.2.1"]);
}

#[test]
fn no_server_times_out_with_clear_error() {
    skip_unless_possible!();
    let lab = Lab::new("silent");
    lab.veth("eth0", "vs0");
    let err = lab.net_up(3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no DHCP lease on any interface (tried eth0) within 3s"
    );
    assert!(!Path::new(&lab.path("run/iguana/network.json")).exists());
}

#[test]
fn no_ethernet_link_is_an_error() {
    skip_unless_possible!();
    let lab = Lab::new("empty");
    let err = lab.net_up(3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no Ethernet interface to configure (links: lo)"
    );
}

/// Asserts `link` (from `ip -d -j link`) is of `kind` and its `info_data`
/// has the `expected` fields.
fn assert_kind(link: &serde_json::Value, kind: &str, expected: &[(&str, serde_json::Value)]) {
    let info = &link["linkinfo"];
    assert_eq!(info["info_kind"], kind, "{link}");
    for (key, value) in expected {
        assert_eq!(&info["info_data"][key], value, "{key} in {link}");
    }
}

#[test]
fn every_link_with_a_server_is_configured() {
    skip_unless_possible!();
    let mut lab = Lab::new("both");
    lab.veth("eth0", "vs0");
    lab.veth("eth1", "vs1");
    lab.start_udhcpd_for("vs0", "192.0.2", "255.255.255.0");
    lab.start_udhcpd_for("vs1", "198.51.100", "255.255.255.0");
    thread::sleep(Duration::from_millis(300));

    lab.net_up(30).unwrap();

    let json = lab.network_json();
    let leases = json["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "{json}");
    // The first lease to come gives the default route; both links keep theirs.
    let first = leases[0]["interface"].as_str().unwrap();
    let route = lab.in_client(&["ip", "-4", "route", "show", "default"]);
    assert!(route.contains(&format!("dev {first} proto dhcp")), "{route}");
    assert_eq!(route.lines().count(), 1, "{route}");
    let addr = lab.in_client(&["ip", "-4", "-o", "address", "show"]);
    assert!(addr.contains("eth0    inet 192.0.2.100/24"), "{addr}");
    assert!(addr.contains("eth1    inet 198.51.100.100/24"), "{addr}");
    lab.in_client(&["busybox", "ping", "-c", "1", "-W", "3", "198.51.100.1"]);
    lab.in_client(&["busybox", "ping", "-c", "1", "-W", "3", "192.0.2.1"]);
}

#[test]
fn named_interface_only_after_rename() {
    skip_unless_possible!();
    let mut lab = Lab::new("ifname");
    lab.veth("eth0", "vs0");
    lab.veth("eth1", "vs1");
    lab.in_client(&["ip", "link", "set", "eth1", "address", "02:00:00:00:00:11"]);
    // Servers on both; only the named (renamed) link may take a lease.
    lab.start_udhcpd_for("vs0", "192.0.2", "255.255.255.0");
    lab.start_udhcpd_for("vs1", "198.51.100", "255.255.255.0");
    thread::sleep(Duration::from_millis(300));

    lab.net_up_with("ifname=lan7:02:00:00:00:00:11 ip=lan7:dhcp", 30).unwrap();

    let lan7 = lab.link_json("lan7");
    assert_eq!(lan7["address"], "02:00:00:00:00:11");
    assert!(lan7["flags"].as_array().unwrap().contains(&"UP".into()), "{lan7}");
    let addr = lab.in_client(&["ip", "-4", "-o", "address", "show"]);
    assert!(addr.contains("lan7    inet 198.51.100.100/24"), "{addr}");
    assert!(!addr.contains("192.0.2."), "{addr}");
    let route = lab.in_client(&["ip", "-4", "route", "show", "default"]);
    assert!(route.starts_with("default via 198.51.100.1 dev lan7"), "{route}");
    let json = lab.network_json();
    assert_eq!(json["interfaces"][1]["name"], "lan7", "{json}");
    assert_eq!(json["leases"].as_array().unwrap().len(), 1, "{json}");
}

#[test]
fn vlan_gets_a_lease() {
    skip_unless_possible!();
    let mut lab = Lab::new("vlan");
    lab.veth("eth0", "vs0");
    skip_unless_kernel_has!(lab, &["vlan"]);
    // The server side speaks only tagged frames with id 5.
    lab.in_server(&["ip", "link", "add", "link", "vs0", "name", "vs0.5", "type", "vlan", "id", "5"]);
    lab.in_server(&["ip", "link", "set", "vs0.5", "up"]);
    lab.start_udhcpd_for("vs0.5", "192.0.2", "255.255.255.0");
    thread::sleep(Duration::from_millis(300));

    lab.net_up_with("vlan=vlan0005:eth0 ip=vlan0005:dhcp", 30).unwrap();

    let vlan = lab.link_json("vlan0005");
    assert_kind(&vlan, "vlan", &[("protocol", "802.1Q".into()), ("id", 5.into())]);
    assert_eq!(vlan["link"], "eth0", "{vlan}");
    let addr = lab.in_client(&["ip", "-4", "-o", "address", "show", "dev", "vlan0005"]);
    assert!(addr.contains("inet 192.0.2.100/24"), "{addr}");
    let route = lab.in_client(&["ip", "-4", "route", "show", "default"]);
    assert!(route.starts_with("default via 192.0.2.1 dev vlan0005"), "{route}");
    let json = lab.network_json();
    let entry = json["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "vlan0005").unwrap().clone();
    assert_eq!(entry["kind"], "vlan");
    assert_eq!(entry["vlan_id"], 5);
    assert_eq!(entry["parent"], "eth0");
    assert_eq!(entry["addresses"][0], "192.0.2.100/24");
    lab.in_client(&["busybox", "ping", "-c", "1", "-W", "3", "192.0.2.1"]);
}

/// The server side of a bond: both peers in a bridge, so either slave reaches it.
fn bridge_peers(lab: &Lab) {
    lab.in_server(&["ip", "link", "add", "br0", "type", "bridge"]);
    for peer in ["vs0", "vs1"] {
        lab.in_server(&["ip", "link", "set", peer, "master", "br0"]);
    }
    lab.in_server(&["ip", "link", "set", "br0", "up"]);
}

#[test]
fn active_backup_bond_with_static_address() {
    skip_unless_possible!();
    let lab = Lab::new("bondab");
    lab.veth("eth0", "vs0");
    lab.veth("eth1", "vs1");
    skip_unless_kernel_has!(lab, &["bond", "bridge"]);
    bridge_peers(&lab);
    lab.in_server(&["ip", "address", "add", "192.0.2.1/24", "dev", "br0"]);

    lab.net_up_with(
        "bond=bond0:eth0,eth1:mode=active-backup,miimon=100 ip=192.0.2.10::192.0.2.1:24:node1.lab.example:bond0:none nameserver=192.0.2.53 rd.route=203.0.113.0/24:192.0.2.1:bond0",
        30,
    )
    .unwrap();

    let bond = lab.link_json("bond0");
    assert_kind(&bond, "bond", &[("mode", "active-backup".into()), ("miimon", 100.into())]);
    for slave in ["eth0", "eth1"] {
        assert_eq!(lab.link_json(slave)["master"], "bond0", "{slave}");
    }
    let addr = lab.in_client(&["ip", "-4", "-o", "address", "show", "dev", "bond0"]);
    assert!(addr.contains("inet 192.0.2.10/24"), "{addr}");
    let routes = lab.in_client(&["ip", "-4", "route", "show"]);
    assert!(routes.contains("default via 192.0.2.1 dev bond0"), "{routes}");
    assert!(routes.contains("203.0.113.0/24 via 192.0.2.1 dev bond0 proto boot"), "{routes}");
    assert_eq!(
        fs::read_to_string(lab.path("resolv.conf")).unwrap(),
        "# written by iguana net-up from the configuration of bond0\n\
         search lab.example\nnameserver 192.0.2.53\n"
    );
    let json = lab.network_json();
    let entry = json["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "bond0").unwrap().clone();
    assert_eq!(entry["kind"], "bond");
    assert_eq!(entry["bond_mode"], "active-backup");
    assert_eq!(entry["slaves"], serde_json::json!(["eth0", "eth1"]));
    assert_eq!(json["hostname"], "node1.lab.example");
    assert_eq!(json["routes"][0]["destination"], "203.0.113.0/24");
    lab.in_client(&["busybox", "ping", "-c", "1", "-W", "3", "192.0.2.1"]);
}

#[test]
fn lacp_bond_with_a_vlan_and_static_address() {
    skip_unless_possible!();
    let lab = Lab::new("bondad");
    lab.veth("eth0", "vs0");
    lab.veth("eth1", "vs1");
    skip_unless_kernel_has!(lab, &["bond", "bridge", "vlan"]);
    bridge_peers(&lab);
    lab.in_server(&["ip", "link", "add", "link", "br0", "name", "br0.7", "type", "vlan", "id", "7"]);
    lab.in_server(&["ip", "link", "set", "br0.7", "up"]);
    lab.in_server(&["ip", "address", "add", "192.0.2.1/24", "dev", "br0.7"]);

    lab.net_up_with(
        "bond=bond0:eth0,eth1:mode=802.3ad,miimon=100,lacp_rate=fast vlan=bond0.7:bond0 ip=192.0.2.10:::24::bond0.7:none",
        30,
    )
    .unwrap();

    let bond = lab.link_json("bond0");
    assert_kind(&bond, "bond", &[("mode", "802.3ad".into()), ("miimon", 100.into()), ("ad_lacp_rate", "fast".into())]);
    let vlan = lab.link_json("bond0.7");
    assert_kind(&vlan, "vlan", &[("id", 7.into())]);
    assert_eq!(vlan["link"], "bond0", "{vlan}");
    let addr = lab.in_client(&["ip", "-4", "-o", "address", "show", "dev", "bond0.7"]);
    assert!(addr.contains("inet 192.0.2.10/24"), "{addr}");
    // No LACP partner behind a bridge: the bond still sends on one port.
    lab.in_client(&["busybox", "ping", "-c", "1", "-W", "3", "192.0.2.1"]);
}

#[test]
fn link_without_carrier_does_not_delay() {
    skip_unless_possible!();
    let mut lab = Lab::new("nocarrier");
    lab.veth("eth0", "vs0");
    lab.veth("eth1", "vs1");
    // A veth whose peer is down has no carrier: an unplugged cable.
    lab.in_server(&["ip", "link", "set", "vs0", "down"]);
    lab.start_udhcpd("vs1", "255.255.255.0");
    thread::sleep(Duration::from_millis(300));

    let started = std::time::Instant::now();
    lab.net_up(30).unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let json = lab.network_json();
    assert_eq!(json["interfaces"][0]["name"], "eth0");
    assert_eq!(json["interfaces"][0]["carrier"], false, "{json}");
    assert_eq!(json["interfaces"][1]["carrier"], true, "{json}");
    assert_eq!(json["default_route"]["interface"], "eth1", "{json}");
}

#[test]
fn no_carrier_anywhere_is_named_in_the_error() {
    skip_unless_possible!();
    let lab = Lab::new("unplugged");
    lab.veth("eth0", "vs0");
    lab.in_server(&["ip", "link", "set", "vs0", "down"]);
    let err = lab.net_up(2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no DHCP lease on any interface (tried eth0; no carrier on eth0) within 2s"
    );
}
