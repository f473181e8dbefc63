//! IPv6 in `net-up` against a real router and DHCPv6 server: `dnsmasq`
//! (router advertisements, DHCPv6, DHCPv4; DNS off with `--port=0`) on the
//! server end of a veth pair in the namespaces of `netns_tests::Lab`.
//! Addresses are from the documentation prefixes 2001:db8::/32 and
//! 192.0.2.0/24. Needs root, `ip`, busybox and dnsmasq (`dnsmasq-base`,
//! in xtask's tools table); without them the tests print why and pass.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::{cli_net_up, ipv6, Options};
use super::netns_tests::{run, skip_reason, Lab};

fn skip_reason6() -> Option<String> {
    if let Some(reason) = skip_reason() {
        return Some(reason);
    }
    let found = Command::new("dnsmasq").arg("--version").stdout(Stdio::null()).status();
    if !found.is_ok_and(|s| s.success()) {
        return Some("needs dnsmasq (Debian: dnsmasq-base)".into());
    }
    None
}

macro_rules! skip_unless_possible {
    () => {
        if let Some(reason) = skip_reason6() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// dnsmasq in the lab's server namespace; killed on drop.
struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Gives `server_if` 2001:db8:1::1/64 and 192.0.2.1/24 and starts dnsmasq
/// on it with `ranges` (its `--dhcp-range=` values).
fn start_dnsmasq(lab: &Lab, server_if: &str, ranges: &[&str]) -> Dnsmasq {
    let ns = lab.server.as_str();
    // nodad: the router's address is usable at once, not after 1 s of
    // duplicate address detection.
    run("ip", &["-n", ns, "address", "add", "2001:db8:1::1/64", "dev", server_if, "nodad"]);
    run("ip", &["-n", ns, "address", "add", "192.0.2.1/24", "dev", server_if]);
    let dir = lab.dir.path();
    let mut args: Vec<String> = [
        "netns",
        "exec",
        ns,
        "dnsmasq",
        "--conf-file=/dev/null",
        "--no-daemon",
        "--port=0",
        "--user=root",
        "--bind-interfaces",
        "--enable-ra",
        "--dhcp-option=option6:dns-server,[2001:db8:1::53]",
        "--dhcp-option=option6:domain-search,lab.example",
        "--dhcp-option=option:router,192.0.2.1",
        "--dhcp-option=option:dns-server,192.0.2.53",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(format!("--interface={server_if}"));
    args.push(format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()));
    args.push(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
    args.push(format!("--log-facility={}", dir.join("dnsmasq.log").display()));
    args.extend(ranges.iter().map(|r| format!("--dhcp-range={r}")));
    let child = Command::new("ip").args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // dnsmasq needs the server's link-local address, which is out of
    // duplicate address detection after about a second.
    thread::sleep(Duration::from_millis(1500));
    Dnsmasq(child)
}

/// `iguana net-up` in the client namespace with `cmdline` as its kernel
/// command line; files go to the lab's temporary directory.
fn net_up(lab: &Lab, cmdline: &str, timeout_secs: u32) -> anyhow::Result<()> {
    let cmdline_path = lab.path("cmdline");
    fs::write(&cmdline_path, cmdline).unwrap();
    let args: Vec<String> = vec![
        "--timeout".into(),
        timeout_secs.to_string(),
        "--resolv-conf".into(),
        lab.path("resolv.conf"),
        "--json".into(),
        lab.path("run/iguana/network.json"),
        "--cmdline".into(),
        cmdline_path,
    ];
    let netns = File::open(Path::new("/run/netns").join(&lab.client)).unwrap();
    thread::spawn(move || {
        setns(&netns, CloneFlags::CLONE_NEWNET).unwrap();
        cli_net_up(&args)
    })
    .join()
    .unwrap()
}

/// Runs `f` on a thread inside the lab's client namespace.
fn in_client<T: Send + 'static>(lab: &Lab, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = File::open(Path::new("/run/netns").join(&lab.client)).unwrap();
    thread::spawn(move || {
        setns(&netns, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn network_json(lab: &Lab) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(lab.path("run/iguana/network.json")).unwrap()).unwrap()
}

#[test]
fn dhcp6_lease_from_dnsmasq() {
    skip_unless_possible!();
    let lab = Lab::new("dhcp6");
    lab.veth("eth0", "vs0");
    // Stateful only: the advertisement has the M flag and an on-link
    // prefix without autonomous configuration, so the address can only
    // come from DHCPv6.
    let _dnsmasq = start_dnsmasq(&lab, "vs0", &["2001:db8:1::100,2001:db8:1::100,64,1h"]);

    net_up(&lab, "console=ttyS0 ip=dhcp6", 30).unwrap();

    let addr = lab.in_client(&["ip", "-6", "-o", "address", "show", "dev", "eth0", "scope", "global"]);
    assert!(addr.contains("inet6 2001:db8:1::100/128"), "{addr}");
    assert_eq!(addr.lines().count(), 1, "{addr}");
    let route = lab.in_client(&["ip", "-6", "route", "show", "default"]);
    assert!(route.starts_with("default via fe80::") && route.contains("dev eth0 proto ra"), "{route}");
    // ip=dhcp6 alone: no DHCPv4, so no IPv4 address.
    let v4 = lab.in_client(&["ip", "-4", "-o", "address", "show", "dev", "eth0"]);
    assert_eq!(v4, "");
    assert_eq!(
        fs::read_to_string(lab.path("resolv.conf")).unwrap(),
        "# written by iguana net-up from IPv6\nsearch lab.example\nnameserver 2001:db8:1::53\n"
    );
    let json = network_json(&lab);
    assert_eq!(json["leases"], serde_json::json!([]));
    assert_eq!(json["interfaces"][0]["name"], "eth0");
    assert_eq!(json["interfaces"][0]["addresses"], serde_json::json!(["2001:db8:1::100/128"]));
    assert_eq!(json["ipv6"]["dhcp6"]["interface"], "eth0");
    assert_eq!(json["ipv6"]["dhcp6"]["address"], "2001:db8:1::100");
    assert_eq!(json["ipv6"]["dhcp6"]["valid_seconds"], 3600);
    assert_eq!(json["ipv6"]["dns"], serde_json::json!(["2001:db8:1::53"]));
    assert_eq!(json["ipv6"]["gateways"][0]["interface"], "eth0");
    // The configuration works: the router answers across the veth.
    lab.in_client(&["busybox", "ping", "-6", "-c", "1", "-W", "3", "2001:db8:1::1"]);
}

#[test]
fn slaac_beside_dhcpv4() {
    skip_unless_possible!();
    let lab = Lab::new("slaac");
    lab.veth("eth0", "vs0");
    let _dnsmasq = start_dnsmasq(&lab, "vs0", &["192.0.2.100,192.0.2.100,255.255.255.0,1h", "2001:db8:1::,ra-only,64"]);

    // DHCPv4 and SLAAC together. `ip=auto6` makes net-up wait for the
    // SLAAC address: dnsmasq's first advertisement can come after the
    // 3 s that best-effort IPv6 waits (the `ipv6-slaac` boot proves the
    // best-effort path against QEMU's router).
    net_up(&lab, "console=ttyS0 ip=dhcp ip=auto6", 30).unwrap();

    let v4 = lab.in_client(&["ip", "-4", "-o", "address", "show", "dev", "eth0"]);
    assert!(v4.contains("inet 192.0.2.100/24"), "{v4}");
    let v6 = lab.in_client(&["ip", "-6", "-o", "address", "show", "dev", "eth0", "scope", "global"]);
    assert!(v6.contains("inet6 2001:db8:1:0:"), "{v6}");
    let slaac = v6.split_whitespace().nth(3).unwrap().to_owned();
    let json = network_json(&lab);
    assert_eq!(json["leases"][0]["address"], "192.0.2.100");
    assert_eq!(json["interfaces"][0]["addresses"], serde_json::json!(["192.0.2.100/24", slaac]));
    assert_eq!(json["ipv6"]["addresses"][0]["origin"], "ra");
    assert!(json["ipv6"]["gateways"][0]["address"].as_str().unwrap().starts_with("fe80::"), "{json}");
    assert_eq!(json["ipv6"]["dhcp6"], serde_json::Value::Null);
    // No RDNSS is read and DHCPv6 did not run: resolv.conf is DHCPv4's.
    assert_eq!(
        fs::read_to_string(lab.path("resolv.conf")).unwrap(),
        "# written by iguana net-up from the configuration of eth0\nnameserver 192.0.2.53\n"
    );
    lab.in_client(&["busybox", "ping", "-6", "-c", "1", "-W", "3", "2001:db8:1::1"]);
}

#[test]
fn dhcp6_without_server_times_out_with_clear_error() {
    skip_unless_possible!();
    let lab = Lab::new("nodhcp6");
    lab.veth("eth0", "vs0");
    let err = net_up(&lab, "ip=eth0:dhcp6", 4).unwrap_err();
    assert_eq!(err.to_string(), "no DHCPv6 lease on any interface (tried eth0) within 4s");
    assert!(!Path::new(&lab.path("run/iguana/network.json")).exists());
}

#[test]
fn dhcp6_on_missing_interface_is_named() {
    skip_unless_possible!();
    let lab = Lab::new("noif6");
    lab.veth("eth0", "vs0");
    let err = net_up(&lab, "ip=eth7:dhcp6", 4).unwrap_err();
    assert_eq!(err.to_string(), "ip= names interface eth7 for DHCPv6, which does not exist (links: eth0)");
}

#[test]
fn slaac_recorded_in_the_background_when_nothing_waits_for_it() {
    skip_unless_possible!();
    let lab = Lab::new("late6");
    lab.veth("eth0", "vs0");
    let _dnsmasq = start_dnsmasq(&lab, "vs0", &["192.0.2.100,192.0.2.100,255.255.255.0,1h", "2001:db8:1::,ra-only,64"]);
    let cmdline = lab.path("cmdline");
    fs::write(&cmdline, "console=ttyS0 ip=dhcp").unwrap();
    let options = Options {
        timeout: Duration::from_secs(30),
        resolv_conf: lab.path("resolv.conf").into(),
        json: lab.path("run/iguana/network.json").into(),
        cmdline: cmdline.into(),
        publish: Some(lab.path("iguana/network.json").into()),
        ..Options::default()
    };

    // IPv4 is all the boot needs: net-up returns once DHCPv4 is done, with
    // SLAAC recorded only if it was already complete by then.
    let up_options = options.clone();
    let up = in_client(&lab, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(super::net_up(&up_options)).unwrap()
    });
    assert_eq!(up.configured.len(), 1);
    assert!(up.v6_pending != ipv6::settled(&up.v6), "pending exactly when SLAAC had not settled: {:?}", up.v6);
    let json = network_json(&lab);
    assert_eq!(json["leases"][0]["address"], "192.0.2.100");
    assert_eq!(json, serde_json::from_str::<serde_json::Value>(&fs::read_to_string(lab.path("iguana/network.json")).unwrap()).unwrap());

    // The watcher PID 1's net-up starts (`--late-ipv6`), here in-thread.
    let args: Vec<String> = ["--watch-ipv6", "eth0", "--timeout", "30", "--json", &lab.path("run/iguana/network.json"), "--publish", &lab.path("iguana/network.json")]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    in_client(&lab, move || cli_net_up(&args)).unwrap();

    let v6 = lab.in_client(&["ip", "-6", "-o", "address", "show", "dev", "eth0", "scope", "global"]);
    let slaac = v6.split_whitespace().nth(3).unwrap().to_owned();
    assert!(slaac.starts_with("2001:db8:1:0:"), "{v6}");
    for path in ["run/iguana/network.json", "iguana/network.json"] {
        let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(lab.path(path)).unwrap()).unwrap();
        // Merged into the IPv4 record, once, and nothing of IPv4 lost.
        assert_eq!(json["interfaces"][0]["addresses"], serde_json::json!(["192.0.2.100/24", slaac]), "{path}");
        assert_eq!(json["leases"][0]["address"], "192.0.2.100", "{path}");
        assert_eq!(json["ipv6"]["addresses"][0]["origin"], "ra", "{path}");
        assert!(json["ipv6"]["gateways"][0]["address"].as_str().unwrap().starts_with("fe80::"), "{path}: {json}");
    }
}
