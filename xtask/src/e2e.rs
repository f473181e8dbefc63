//! `cargo xtask e2e`: boots the real initrd in QEMU against a real
//! docker-registry on the host and checks the serial console.
//!
//! One boot runs two busybox containers and checks what they print, one
//! runs a workflow file served over HTTP (`e2e_workflow`); each
//! bad-input scenario is a separate lean boot that must print its one-line
//! error and then reboot by itself. Every scenario also fails on a kernel
//! panic or when QEMU had to be killed at the timeout. Consoles are saved
//! in `target/iguana-e2e/<scenario>.log`.
//!
//! The metal-image-install boots (`e2e_metal`) run here too and take
//! `--only` names of their own (`metal-install`, `metal-md5-mismatch`), and
//! so does the fault matrix (`e2e_faults`, `--only faults`), and the
//! unified kernel image under Secure Boot (`e2e_uki`, `--only uki-secure-boot`),
//! a network boot of two guests by iPXE (`e2e_pxe`, `--only pxe`), and the
//! demo's check (`demo`, `--only demo`).
//!
//! Container output reaches the console prefixed by its job name
//! (`[a] ...`), so all matching is by substring, never by position, and
//! case-insensitive.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::{Image, Registry};

use crate::e2e_guards;
use crate::e2e_modules;
use crate::e2e_report;
use crate::e2e_workflow as wf;
use crate::initrd::{self, Built, Options};
use crate::qemu::{Net, Outcome, Vm, VmConfig, KERNEL_PANIC};
use crate::{flag_value, target_dir, tools};

// ---------------------------------------------------------------------------
// What the console must show. Each expectation is a list of substrings that
// must all be on one line. `{REG}` stands for the registry as the guest sees
// it (`10.0.2.2:PORT`), `{CLOSED}` for a host port nothing listens on, `{NTP}`
// for the host port of the SNTP server, `{YEAR}` for this year, `{WF}`
// for the host port serving the workflow scenario's file.

/// Printed by container `a`, which then writes `A_WROTE` to `/iguana/from-a`.
pub const MARK_A_RAN: &str = "IGUANA-E2E a ran";
const A_WROTE: &str = "hello-from-a";
/// `iguana pull` mounted the containers' rootfs as an overlay of their
/// per-layer directories.
const MARK_OVERLAY_A: &[&str] = &["pull {REG}/a: rootfs is an overlay of", "layers on /run/iguana/images/a/rootfs"];
const MARK_OVERLAY_B: &[&str] = &["pull {REG}/b: rootfs is an overlay of", "layers on /run/iguana/images/b/rootfs"];
/// Printed by container `b` after `cat /iguana/from-a`.
const MARK_B_SAW: &str = "IGUANA-E2E b saw hello-from-a";
/// `b`: /iguana/machine-id is one line of 32 lowercase hex digits.
const MARK_MACHINE_ID: &str = "IGUANA-E2E machine-id ok";
/// `b`: `iguana=true` is in its environment.
const MARK_ENV: &str = "IGUANA-E2E env iguana=true";
/// `b`: /iguana/network.json lists the address (QEMU's 10.0.2.15/24).
const MARK_NETWORK_JSON: &str = "IGUANA-E2E network.json ok";
/// `b`: `wget http://{REG}/v2/` worked from inside the guest.
const MARK_NET: &str = "IGUANA-E2E network ok";

/// `v6`: the SLAAC address QEMU's MAC 52:54:00:12:34:56 gets in fd00:6::/64.
const V6_SLAAC: &str = "fd00:6::5054:ff:fe12:3456";
const MARK_V6_JSON: &str = "IGUANA-E2E v6 network.json ok";
const MARK_V6_PING: &str = "IGUANA-E2E v6 ping fd00:6::2 ok";

/// The image does not exist in the registry.
const ERR_IMAGE_MISSING: &[&str] = &["error", "image {REG}/nope", "manifest unknown"];
/// Nothing listens where the registry should be.
const ERR_UNREACHABLE: &[&str] = &["error", "10.0.2.2:{CLOSED}/a", "connection refused"];
/// `nets`: what the container sees of the network, one fact a line.
const NETS: &str = "IGUANA-E2E nets";
/// Marks the lines of the `v6s` container.
const V6S: &str = "IGUANA-E2E v6s";
/// Marks the lines of the `vlan` container.
const VLAN: &str = "IGUANA-E2E vlan";

/// The NIC is up but no DHCP server answers.
const ERR_NO_LEASE: &[&str] = &["no DHCP lease"];
/// `clock-sntp`: the RTC says 2001; PID 1 sets the clock from the test's
/// SNTP server (`{NTP}`), and the container sees this year (`{YEAR}`).
const MARK_CLOCK_SET: &[&str] = &["clock set from NTP: 2001-01-01T", "server=10.0.2.2:{NTP}"];
const MARK_YEAR: &[&str] = &["IGUANA-E2E year {YEAR}"];
/// `rd.iguana.containers=,,`.
const ERR_EMPTY_NAME: &[&str] = &["error", "rd.iguana.containers: item 1 is empty"];
/// The image's entrypoint is `/bin/nope`, which the image lacks.
const ERR_NO_EXECUTABLE: &[&str] = &["executable", "/bin/nope", "not found"];
// ---------------------------------------------------------------------------

/// One boot and what its console must show.
pub struct Scenario {
    pub name: &'static str,
    /// Kernel arguments after `console=ttyS0 panic=-1`, with `{REG}`,
    /// `{CLOSED}` and `{WF}` substituted; `COMMON_APPEND` follows.
    pub append: &'static str,
    pub net: Net,
    pub expect: &'static [&'static [&'static str]],
    /// Lines that must not appear (same form as `expect`).
    pub reject: &'static [&'static [&'static str]],
    pub timeout: Duration,
}

/// On every boot: reboot at once after a failure instead of after 10 s.
pub const COMMON_APPEND: &str = "rd.iguana.reboot_timeout=0";

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const ERROR_TIMEOUT: Duration = Duration::from_secs(90);

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "two-containers",
        append: "rd.iguana.containers={REG}/a,{REG}/b rd.iguana.insecure_registries={REG}",
        net: Net::User,
        expect: &[&[MARK_A_RAN], &[MARK_B_SAW], &[MARK_MACHINE_ID], &[MARK_ENV], &[MARK_NET], &[MARK_NETWORK_JSON], MARK_OVERLAY_A, MARK_OVERLAY_B],
        reject: &[&["overlay not used"]],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "image-missing",
        append: "rd.iguana.containers={REG}/nope rd.iguana.insecure_registries={REG}",
        net: Net::User,
        expect: &[ERR_IMAGE_MISSING],
        reject: &[],
        timeout: ERROR_TIMEOUT,
    },
    Scenario {
        name: "registry-unreachable",
        append: "rd.iguana.containers=10.0.2.2:{CLOSED}/a rd.iguana.insecure_registries=10.0.2.2:{CLOSED}",
        net: Net::User,
        expect: &[ERR_UNREACHABLE],
        reject: &[],
        timeout: ERROR_TIMEOUT,
    },
    Scenario {
        name: "no-dhcp-lease",
        append: "rd.iguana.containers={REG}/a rd.iguana.insecure_registries={REG} rd.iguana.net_timeout=5",
        net: Net::NoLease,
        expect: &[ERR_NO_LEASE],
        reject: &[],
        timeout: ERROR_TIMEOUT,
    },
    Scenario {
        name: "garbage-args",
        append: "rd.iguana.containers=,,",
        net: Net::User,
        expect: &[ERR_EMPTY_NAME],
        reject: &[],
        timeout: ERROR_TIMEOUT,
    },
    Scenario {
        name: "executable-missing",
        append: "rd.iguana.containers={REG}/nobin rd.iguana.insecure_registries={REG}",
        net: Net::User,
        expect: &[ERR_NO_EXECUTABLE],
        reject: &[],
        timeout: ERROR_TIMEOUT,
    },
    Scenario {
        name: "static-ip",
        // QEMU's user network accepts the guest's own static configuration.
        // The extra route and name server are only looked at, never used.
        append: "ip=10.0.2.15::10.0.2.2:255.255.255.0:guest:eth0:none:10.0.2.3 nameserver=10.0.2.4 rd.route=192.0.2.0/24:10.0.2.2:eth0 rd.iguana.containers={REG}/a,{REG}/b,{REG}/nets rd.iguana.insecure_registries={REG}",
        net: Net::User,
        expect: &[
            &["static: iface=eth0 addr=10.0.2.15/24 gateway=10.0.2.2 dns=10.0.2.3,10.0.2.4 (from ip=)"],
            &[MARK_NET],
            &[MARK_NETWORK_JSON],
            &["IGUANA-E2E hostname guest hosts: 10.0.2.15 guest"],
            &[NETS, "addr: eth0 10.0.2.15/24;"],
            &[NETS, "routes:", "default via 10.0.2.2 dev eth0", "192.0.2.0/24 via 10.0.2.2 dev eth0"],
            &[NETS, "resolv: nameserver 10.0.2.3; nameserver 10.0.2.4;"],
            &[NETS, "json:", r#""routes":[{"destination":"192.0.2.0/24","gateway":"10.0.2.2","interface":"eth0"}]"#, r#""default_route":{"gateway":"10.0.2.2","interface":"eth0"}"#],
        ],
        // Matching ignores case, and network.json has `"dhcp":false`.
        reject: &[&["DHCP interfaces="], &["lease: iface="]],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "two-nics",
        // eth0 has a carrier but no DHCP server; eth1 is the user network.
        // The timeout equals the scenario's: waiting it out fails the boot.
        append: "rd.iguana.net_timeout=120 rd.iguana.containers={REG}/nets rd.iguana.insecure_registries={REG}",
        net: Net::SilentThenUser,
        expect: &[
            &["lease: iface=eth1 addr=10.0.2.15/24 gateway=10.0.2.2"],
            &[NETS, "addr: eth1 10.0.2.15/24;"],
            &[NETS, "routes:", "default via 10.0.2.2 dev eth1"],
            &[NETS, "resolv: nameserver 10.0.2.3;"],
            &[NETS, "json:", r#""name":"eth0","mac":"52:54:00:12:34:56","kind":"ethernet","carrier":true,"addresses":[],"dhcp":false"#,
              r#""name":"eth1","mac":"52:54:00:12:34:57","kind":"ethernet","carrier":true,"addresses":["10.0.2.15/24""#, r#"],"dhcp":true"#,
              r#""default_route":{"gateway":"10.0.2.2","interface":"eth1"}"#],
        ],
        reject: &[&[NETS, "addr:", "eth0"], &["lease: iface=eth0"]],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "bond-vlan",
        // A bond over both NICs, eth1 (the user network) first so it is
        // the active one, DHCP on the bond, a VLAN on the bond with a static
        // address. The user network drops tagged frames: here the VLAN is
        // checked as the kernel reports it; `vlan-lacp` carries traffic
        // over VLANs between two NICs on a hub.
        append: "bond=bond0:eth1,eth0:mode=active-backup,miimon=100 vlan=bond0.5:bond0 ip=bond0:dhcp ip=192.0.2.10:::24::bond0.5:none rd.iguana.containers={REG}/nets rd.iguana.insecure_registries={REG}",
        net: Net::SilentThenUser,
        expect: &[
            &["lease: iface=bond0 addr=10.0.2.15/24 gateway=10.0.2.2"],
            &[NETS, "addr: bond0 10.0.2.15/24;bond0.5 192.0.2.10/24;"],
            &[NETS, "routes:", "default via 10.0.2.2 dev bond0"],
            &[NETS, "bond: Bonding Mode: fault-tolerance (active-backup);", "MII Polling Interval (ms): 100;", "Slave Interface: eth1;Slave Interface: eth0;"],
            &[NETS, "vlan:", ";bond0.5 | 5 | bond0;"],
            &[NETS, "json:", r#""name":"bond0","mac":"52:54:00:12:34:57","kind":"bond","carrier":true,"addresses":["10.0.2.15/24""#, r#"],"dhcp":true,"vlan_id":null,"parent":null,"bond_mode":"active-backup","slaves":["eth0","eth1"]"#,
              r#""name":"bond0.5","mac":"52:54:00:12:34:57","kind":"vlan","carrier":true,"addresses":["192.0.2.10/24""#, r#"],"dhcp":false,"vlan_id":5,"parent":"bond0""#],
        ],
        reject: &[],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "vlan-lacp",
        // Traffic over 802.1Q and an 802.3ad bond. eth0 (user network) is
        // the only slave of an 802.3ad bond that gets the lease (no LACP
        // partner: the bond still carries traffic on its one port); eth1 and
        // eth2 share a hub, with VLAN 5 on both and VLAN 6 on eth2. ARP from
        // eth1.5 must be answered for the address on eth2.5 and not for the
        // one on eth2.6 (arp_ignore=1: only the interface holding the address
        // answers), so the tag is what carries the frame.
        append: "bond=bond0:eth0:mode=802.3ad,miimon=100 ip=bond0:dhcp vlan=eth1.5:eth1 vlan=eth2.5:eth2 vlan=eth2.6:eth2 ip=192.0.2.10:::24::eth1.5:none ip=192.0.2.20:::24::eth2.5:none ip=192.0.2.30:::24::eth2.6:none rd.iguana.containers={REG}/vlan rd.iguana.insecure_registries={REG}",
        net: Net::UserThenPair,
        expect: &[
            &["lease: iface=bond0 addr=10.0.2.15/24 gateway=10.0.2.2"],
            &[VLAN, "bond: Bonding Mode: IEEE 802.3ad Dynamic link aggregation;", "Slave Interface: eth0;"],
            &[VLAN, "5 to 192.0.2.20:", "Received 2 response"],
            &[VLAN, "5 to 192.0.2.30:", "Received 0 response"],
        ],
        reject: &[],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "ipv6-slaac",
        // No ip=: DHCPv4 as always, and SLAAC from slirp's advertisements.
        append: "rd.iguana.containers={REG}/v6 rd.iguana.insecure_registries={REG}",
        net: Net::UserV6,
        expect: &[
            &["ipv6: addr=fd00:6::5054:ff:fe12:3456/64%eth0(ra) gateway=fe80::2%eth0"],
            &["IGUANA-E2E v6 addr", "inet6 fd00:6::5054:ff:fe12:3456/64", "scope global"],
            &["IGUANA-E2E v6 route default via fe80::2", "dev eth0"],
            &[MARK_V6_JSON],
            &[MARK_V6_PING],
        ],
        reject: &[&["IPv6 not configured"], &["IGUANA-E2E v6", "bad"]],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "ipv6-static",
        // dracut's bracketed static form beside DHCPv4: the address, the
        // default route via slirp's router and the DNS server of `ip=`; and
        // an IPv6 `rd.route=`.
        append: "ip=dhcp ip=[fd00:6::99]::[fd00:6::2]:64::eth0:none:[fd00:6::3] rd.route=[fd00:7::]/64:[fd00:6::2]:eth0 rd.iguana.containers={REG}/v6s rd.iguana.insecure_registries={REG}",
        net: Net::UserV6,
        expect: &[
            &["ipv6: addr=", "fd00:6::99/64%eth0(static)", "dns=fd00:6::3"],
            &[V6S, "addr", "inet6 fd00:6::99/64", "scope global"],
            &[V6S, "route", "default via fd00:6::2 dev eth0"],
            &[V6S, "routes", "fd00:7::/64 via fd00:6::2 dev eth0"],
            &[V6S, "resolv", "nameserver fd00:6::3;"],
            &[V6S, "json", r#""address":"fd00:6::99","prefix_len":64,"origin":"static""#],
            &[V6S, "ping ok"],
        ],
        reject: &[&["not applied"], &[V6S, "ping bad"]],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "rescue-example",
        append: "rd.iguana.containers={REG}/rescue rd.iguana.insecure_registries={REG}",
        net: Net::User,
        expect: &[&["inventory: {\"cpus\": 1, ", "\"memory_kib\": ", "\"disks\": [], ", "\"nics\": [{\"name\": \"eth0\", \"mac\": \"52:54:00:", "\"machine_id\": \""]],
        reject: &[&["error"], &["[rescue]", "can't"]],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "clock-sntp",
        append: "rd.iguana.containers={REG}/clock rd.iguana.insecure_registries={REG} rd.iguana.ntp=10.0.2.2:{NTP}",
        net: Net::User,
        expect: &[&["clock 2001-01-01T", "before iguana's build date, asking NTP"], MARK_CLOCK_SET, MARK_YEAR],
        reject: &[&["IGUANA-E2E year 2001"], &["clock not set"]],
        timeout: BOOT_TIMEOUT,
    },
    // Also the status events: every event of the workflow in order, through
    // a receiver refusing the first ones (e2e_report::check_workflow).
    Scenario {
        name: "workflow",
        append: "rd.iguana.control_url=http://10.0.2.2:{WF}/workflow.yaml rd.iguana.insecure_registries={REG} \
                 rd.iguana.report_url=http://10.0.2.2:{EV}/events rd.iguana.report_token={TOKEN}",
        net: Net::User,
        expect: &[
            &[wf::MARK_ENV],
            &[wf::MARK_SERVICE],
            &["error", wf::MARK_FAILED],
            &[wf::MARK_CONTINUED],
            &[wf::MARK_SKIPPED],
            &[wf::MARK_STOPPED],
        ],
        reject: &[&[wf::MARK_DEPENDENT_RAN], &["workflow stopped"]],
        timeout: BOOT_TIMEOUT,
    },
    // Two boots: the first fails and reboots warm, the second tells why
    // (ramoops; e2e_report::run_previous_boot).
    Scenario {
        name: e2e_report::PREVIOUS_BOOT,
        append: "rd.iguana.containers={REG}/prev,{REG}/nope rd.iguana.insecure_registries={REG} {RAMOOPS}",
        net: Net::User,
        expect: &[],
        reject: &[],
        timeout: Duration::from_secs(240),
    },
    // URL secrets on the kernel command line (userinfo and query of the
    // control_url, the proxy's credentials) never reach iguana's lines nor a
    // child's, even in debug, where the parsed command line and each child's
    // arguments are logged. (The kernel's own `Command line:` shows them.)
    Scenario {
        name: "secrets",
        append: "rd.iguana.control_url=http://alice:hunter2@10.0.2.2:{WF}/workflow.yaml?token=s3cr3t \
                 rd.iguana.proxy=http://bob:pr0xyPW@10.0.2.2:{CLOSED} rd.iguana.no_proxy=10.0.2.2 \
                 rd.iguana.insecure_registries={REG} rd.iguana.debug",
        net: Net::User,
        expect: &[
            &["iguana:", "cmdline: Cmdline", "control_url: Some(\"http://***@10.0.2.2:", "/workflow.yaml?***\")"],
            &["iguana:", "proxy: Some(\"http://***@10.0.2.2:"],
            &["iguana:", "run child: iguana fetch http://***@10.0.2.2:", "/workflow.yaml?***"],
            &[wf::MARK_ENV],
        ],
        reject: &[
            &["iguana:", "hunter2"],
            &["iguana:", "s3cr3t"],
            &["iguana:", "pr0xyPW"],
            &["fetch", "hunter2"],
            &["fetch", "s3cr3t"],
        ],
        timeout: BOOT_TIMEOUT,
    },
    Scenario {
        name: "container-guards",
        append: "rd.iguana.containers={REG}/guards-a,{REG}/guards-b rd.iguana.insecure_registries={REG}",
        net: Net::User,
        expect: e2e_guards::EXPECT,
        reject: e2e_guards::REJECT,
        timeout: BOOT_TIMEOUT,
    },
];

/// More QEMU arguments for a scenario, by name (kept apart from `Scenario`
/// so the table's entries stay short).
const QEMU_ARGS: &[(&str, &[&str])] = &[
    // The RTC, and so the kernel's clock at boot, says 2001 (qemu(1): -rtc base=datetime).
    ("clock-sntp", &["-rtc", "base=2001-01-01"]),
];

/// Container `a`: a marker, then a file for `b` in the shared /iguana.
fn script_a() -> String {
    format!("echo '{MARK_A_RAN}'\necho {A_WROTE} > /iguana/from-a\n")
}

/// Container `b`: checks what `a` left, the machine id, its env, the network.
fn script_b(guest_registry: &str) -> String {
    format!(
        r#"echo "IGUANA-E2E b saw $(cat /iguana/from-a)"
id=$(cat /iguana/machine-id)
if [ "$id" = "$(grep -Ex '[0-9a-f]{{32}}' /iguana/machine-id)" ] && [ -n "$id" ]; then
  echo '{MARK_MACHINE_ID}'
else
  echo "IGUANA-E2E machine-id bad: '$id'"
fi
if [ "$iguana" = true ]; then echo '{MARK_ENV}'; else echo "IGUANA-E2E env iguana='$iguana'"; fi
echo "IGUANA-E2E hostname $(cat /proc/sys/kernel/hostname) hosts: $(grep 10.0.2.15 /etc/hosts)"
if grep -q '"10.0.2.15/24"' /iguana/network.json; then echo '{MARK_NETWORK_JSON}'; else echo "IGUANA-E2E network.json bad: $(cat /iguana/network.json)"; fi
if body=$(wget -q -O- http://{guest_registry}/v2/); then
  echo "{MARK_NET} $body"
else
  echo "IGUANA-E2E network failed"
fi
"#
    )
}

/// Container `v6`: the SLAAC address and default route seen from inside,
/// network.json recording them, and the router (slirp) answering over IPv6.
/// Nothing in this boot needs IPv6, so the boot does not wait for SLAAC:
/// the container waits (20 s at most) until net-up's background watcher
/// has recorded it, as a container started later would simply find it.
fn script_v6() -> String {
    format!(
        r#"i=0
while ! grep -q '"{V6_SLAAC}/64"' /iguana/network.json && [ $i -lt 40 ]; do busybox sleep 0.5; i=$((i+1)); done
echo "IGUANA-E2E v6 addr $(busybox ip -6 addr show dev eth0 | grep 'scope global')"
echo "IGUANA-E2E v6 route $(busybox ip -6 route show default)"
if grep -q '"{V6_SLAAC}/64"' /iguana/network.json && grep -q '"origin": "ra"' /iguana/network.json; then
  echo '{MARK_V6_JSON}'
else
  echo "IGUANA-E2E v6 network.json bad: $(cat /iguana/network.json)"
fi
if busybox ping -6 -c 1 -W 5 fd00:6::2 >/dev/null; then echo '{MARK_V6_PING}'; else echo 'IGUANA-E2E v6 ping bad'; fi
"#
    )
}

/// Container `v6s`: the static IPv6 configuration seen from inside.
fn script_v6s() -> String {
    format!(
        r#"echo "{V6S} addr $(busybox ip -6 addr show dev eth0 | busybox grep 'fd00:6::99')"
echo "{V6S} route $(busybox ip -6 route show default | busybox tr '\n' ';')"
echo "{V6S} routes $(busybox ip -6 route show | busybox tr '\n' ';')"
echo "{V6S} resolv $(busybox grep nameserver /etc/resolv.conf | busybox tr '\n' ';')"
echo "{V6S} json $(busybox tr -d ' \n' < /iguana/network.json)"
if busybox ping -6 -c 1 -W 5 -I fd00:6::99 fd00:6::2 >/dev/null; then echo '{V6S} ping ok'; else echo '{V6S} ping bad'; fi
"#
    )
}

/// Container `vlan`: ARP over VLAN 5 to an address on VLAN 5 and to one
/// on VLAN 6 (see the `vlan-lacp` scenario), and the bond as the kernel
/// reports it. The requests carry a source address the machine does not
/// have: Linux ignores ARP from one of its own addresses.
fn script_vlan() -> String {
    format!(
        r#"echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore
echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind
echo "{VLAN} bond: $(busybox grep -E 'Bonding Mode|Slave Interface' /proc/net/bonding/bond0 | busybox tr '\n' ';')"
for target in 192.0.2.20 192.0.2.30; do
  echo "{VLAN} 5 to $target: $(busybox arping -c 2 -w 4 -I eth1.5 -s 192.0.2.99 $target 2>&1 | busybox tr '\n' ';')"
done
"#
    )
}

/// Container `nets`: addresses, routes, resolv.conf and network.json as the
/// container sees them, each on one line.
fn script_nets() -> String {
    format!(
        r#"echo "{NETS} addr: $(busybox ip -4 -o addr show | busybox awk '$2 != "lo" {{print $2, $4}}' | busybox tr '\n' ';')"
echo "{NETS} routes: $(busybox ip -4 route show | busybox tr '\n' ';')"
echo "{NETS} resolv: $(busybox grep -v '^#' /etc/resolv.conf | busybox tr '\n' ';' | busybox sed 's/;/; /g')"
echo "{NETS} json: $(busybox tr -d ' \n' < /iguana/network.json)"
echo "{NETS} bond: $(busybox grep -E 'Mode|MII Polling|Slave Interface' /proc/net/bonding/bond0 | busybox tr '\n' ';')"
echo "{NETS} vlan: $(busybox grep '|' /proc/net/vlan/config | busybox tr -s ' ' | busybox tr '\n' ';')"
"#
    )
}

/// The built initrd, a registry with the test images, and the guest's view of it.
pub struct Fixture {
    pub built: Built,
    /// Kept alive for the boots: dropping it stops the registry.
    pub registry: Registry,
    /// `10.0.2.2:PORT`: the registry seen from the guest.
    pub guest_registry: String,
    /// Port on 127.0.0.1 serving the workflow scenario's file.
    pub workflow_port: u16,
    /// SNTP server on 127.0.0.1 telling the host's time (`clock-sntp`).
    pub sntp: testkit::SntpServer,
    /// The status event receiver of the `workflow` boot.
    pub events: testkit::EventReceiver,
}

impl Fixture {
    /// Builds the initrd, starts the registry and pushes `images(guest_registry)`.
    pub fn new(
        opts: &Options,
        images: impl FnOnce(&str) -> Result<Vec<(&'static str, Image)>>,
    ) -> Result<Fixture> {
        let built = initrd::build(opts)?;
        let registry = Registry::start().context("start docker-registry")?;
        let guest_registry = format!("10.0.2.2:{}", registry.port());
        let images = images(&guest_registry)?;
        let count = images.len();
        for (name, image) in images {
            image
                .build_and_push(&registry, &format!("{name}:latest"))
                .with_context(|| format!("build and push image {name}"))?;
        }
        eprintln!("xtask: registry {} with {} images", registry.host(), count);
        let workflow_port = wf::serve(wf::workflow(&guest_registry))?;
        let sntp = testkit::SntpServer::real_time("127.0.0.1:0").context("start SNTP server")?;
        let events = testkit::EventReceiver::start(e2e_report::FAIL_FIRST).context("start event receiver")?;
        Ok(Fixture {
            built,
            registry,
            guest_registry,
            workflow_port,
            sntp,
            events,
        })
    }

    /// A VM config booting this fixture's initrd with `append`.
    pub fn vm(&self, append: &str) -> VmConfig {
        VmConfig::new(
            self.built.kernel.vmlinuz.clone(),
            self.built.initrd.clone(),
            append,
        )
    }
}

/// The test images: `a`, `b` and `nobin` (entrypoint missing).
pub fn e2e_images(guest_registry: &str) -> Result<Vec<(&'static str, Image)>> {
    Ok(vec![
        ("a", Image::busybox_script(&script_a())?),
        ("b", Image::busybox_script(&script_b(guest_registry))?),
        (
            "nobin",
            Image::busybox_script("echo unreachable\n")?.entrypoint(&["/bin/nope"]),
        ),
        ("shenv", Image::busybox_script("eval \"$SCRIPT\"\n")?),
        ("clock", Image::busybox_script("echo \"IGUANA-E2E year $(date +%Y)\"\n")?),
        // previous-boot: what a container sees of the last boot's failure.
        (
            "prev",
            Image::busybox_script("if [ -f /iguana/previous-boot.txt ]; then sed 's/^/IGUANA-E2E prev: /' /iguana/previous-boot.txt; else echo 'IGUANA-E2E prev: none'; fi\n")?,
        ),
        ("v6", Image::busybox_script(&script_v6())?),
        ("nets", Image::busybox_script(&script_nets())?),
        ("vlan", Image::busybox_script(&script_vlan())?),
        ("v6s", Image::busybox_script(&script_v6s())?),
        ("rescue", Image::busybox_script(&fs::read_to_string(crate::workspace_root().join("examples/rescue/run.sh"))?)?),
        ("guards-a", Image::busybox_script(&e2e_guards::script_a())?),
        ("guards-b", Image::busybox_script(&e2e_guards::script_b())?),
    ])
}

pub fn main(args: &[String]) -> Result<()> {
    let mut only: Vec<String> = Vec::new();
    // Two TCG guests at a time use both cores: measured 33 s vs 44 s for
    // the six boots.
    let mut jobs = 2;
    let mut verbose = false;
    let mut opts = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => only.extend(flag_value(&mut args, arg)?.split(',').map(str::to_owned)),
            "--jobs" => jobs = flag_value(&mut args, arg)?.parse()?,
            "-v" | "--verbose" => verbose = true,
            "--init" => opts.init = Some(flag_value(&mut args, arg)?.into()),
            other => bail!("e2e: unknown argument {other:?}"),
        }
    }
    // The modules boot (own initrd and a monitor) and the metal-image-install
    // boots (own fixture) are not rows of SCENARIOS.
    let (metal, only): (Vec<String>, Vec<String>) =
        only.into_iter().partition(|name| crate::e2e_metal::NAMES.contains(&name.as_str()));
    let modules_only = only.iter().any(|name| name == e2e_modules::NAME);
    let faults_only = only.iter().any(|name| name == crate::e2e_faults::NAME);
    let uki_only = only.iter().any(|name| name == crate::e2e_uki::NAME);
    let extensions_only = only.iter().any(|name| name == crate::e2e_extensions::NAME);
    let pxe_only = only.iter().any(|name| name == crate::e2e_pxe::NAME);
    let demo_only = only.iter().any(|name| name == crate::demo::NAME);
    let trust_only = only.iter().any(|name| name == crate::e2e_trust::NAME);
    let own = [
        e2e_modules::NAME,
        crate::e2e_faults::NAME,
        crate::e2e_uki::NAME,
        crate::e2e_extensions::NAME,
        crate::e2e_pxe::NAME,
        crate::demo::NAME,
        crate::e2e_trust::NAME,
    ];
    let only: Vec<String> = only.into_iter().filter(|name| !own.contains(&name.as_str())).collect();
    for name in &only {
        if !SCENARIOS.iter().any(|s| s.name == name) {
            let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
            names.extend(crate::e2e_metal::NAMES);
            names.push(e2e_modules::NAME);
            names.push(crate::e2e_faults::NAME);
            names.push(crate::e2e_uki::NAME);
            names.push(crate::e2e_extensions::NAME);
            names.push(crate::e2e_pxe::NAME);
            names.push(crate::demo::NAME);
            names.push(crate::e2e_trust::NAME);
            bail!("e2e: no scenario {name:?} (have {})", names.join(", "));
        }
    }
    let everything = only.is_empty()
        && metal.is_empty()
        && !modules_only
        && !faults_only
        && !uki_only
        && !extensions_only
        && !pxe_only
        && !demo_only
        && !trust_only;
    let scenarios: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| everything || only.iter().any(|name| name == s.name))
        .collect();
    let (mut passed, mut failed) = if scenarios.is_empty() {
        (0, Vec::new())
    } else {
        run(&opts, &scenarios, jobs, verbose)?
    };
    if everything || modules_only {
        let (p, f) = e2e_modules::run_all(&opts)?;
        passed += p;
        failed.extend(f);
    }
    if everything || extensions_only {
        let (p, f) = crate::e2e_extensions::run_all()?;
        passed += p;
        failed.extend(f);
    }
    if everything || trust_only {
        let (p, f) = crate::e2e_trust::run_all()?;
        passed += p;
        failed.extend(f);
    }
    if everything || faults_only {
        let (p, f) = crate::e2e_faults::run_all(&opts)?;
        passed += p;
        failed.extend(f);
    }
    if everything || pxe_only {
        let (p, f) = crate::e2e_pxe::run_all()?;
        passed += p;
        failed.extend(f);
    }
    if everything || demo_only {
        let (p, f) = crate::demo::run_all()?;
        passed += p;
        failed.extend(f);
    }
    if everything || uki_only {
        let (p, f) = crate::e2e_uki::run_all()?;
        passed += p;
        failed.extend(f);
    }
    if everything || !metal.is_empty() {
        let (p, f) = crate::e2e_metal::run_all(&metal)?;
        passed += p;
        failed.extend(f);
    }
    if everything {
        let (p, f) = crate::e2e_handover::run_all(None)?;
        passed += p;
        failed.extend(f);
        let (p, f) = crate::e2e_dracut::run_all()?;
        passed += p;
        failed.extend(f);
    }
    println!("e2e: {} passed, {} failed", passed, failed.len());
    if !failed.is_empty() {
        bail!("e2e failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs the scenarios, `jobs` at a time; returns the pass count and the
/// names of the failed ones.
pub fn run(
    opts: &Options,
    scenarios: &[&Scenario],
    jobs: usize,
    verbose: bool,
) -> Result<(usize, Vec<String>)> {
    tools::ensure_tools()?;
    let fixture = Fixture::new(opts, e2e_images)?;
    let closed = closed_port()?;
    let log_dir = target_dir().join("iguana-e2e");
    fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while let Some(scenario) = scenarios.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let log = log_dir.join(format!("{}.log", scenario.name));
                    let started = Instant::now();
                    let result = run_one(&fixture, scenario, closed, verbose, &log);
                    let elapsed = started.elapsed();
                    match result {
                        Ok(()) => println!("PASS {} ({elapsed:.1?})", scenario.name),
                        Err(err) => {
                            println!("FAIL {} ({elapsed:.1?}): {err:#}", scenario.name);
                            if let Ok(mut failed) = failed.lock() {
                                failed.push(scenario.name.to_owned());
                            }
                        }
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_default();
    println!(
        "e2e: {} boots in {:.1?}, {jobs} at a time",
        scenarios.len(),
        started.elapsed()
    );
    Ok((scenarios.len() - failed.len(), failed))
}

/// Boots one scenario; fails with why, and the console's telling part.
fn run_one(
    fixture: &Fixture,
    scenario: &Scenario,
    closed: u16,
    verbose: bool,
    log: &Path,
) -> Result<()> {
    let subst = |s: &str| {
        s.replace("{REG}", &fixture.guest_registry)
            .replace("{CLOSED}", &closed.to_string())
            .replace("{WF}", &fixture.workflow_port.to_string())
            .replace("{NTP}", &fixture.sntp.port().to_string())
            .replace("{YEAR}", &this_year())
            .replace("{EV}", &fixture.events.port().to_string())
            .replace("{TOKEN}", e2e_report::TOKEN)
            .replace("{RAMOOPS}", e2e_report::RAMOOPS)
    };
    let mut config = fixture.vm(&format!("{} {COMMON_APPEND}", subst(scenario.append)));
    config.net = scenario.net;
    for (_, args) in QEMU_ARGS.iter().filter(|(name, _)| *name == scenario.name) {
        config.extra_args.extend(args.iter().map(|a| a.to_string()));
    }
    if verbose {
        config.echo = Some(format!("[{}] ", scenario.name));
    }
    if scenario.name == e2e_report::PREVIOUS_BOOT {
        return e2e_report::run_previous_boot(config, log, scenario.timeout);
    }
    let outcome = Vm::start(&config)?.wait(scenario.timeout);
    let _ = fs::write(log, outcome.transcript());
    if scenario.name == "workflow" {
        e2e_report::check_workflow(&fixture.events, &outcome)
            .map_err(|e| anyhow::anyhow!("{e:#}\n  console: {}", log.display()))?;
    }
    let subst_all = |lines: &[&[&str]]| -> Vec<Vec<String>> {
        lines
            .iter()
            .map(|parts| parts.iter().map(|part| subst(part)).collect())
            .collect()
    };
    let result = check(
        &outcome,
        &subst_all(scenario.expect),
        &subst_all(scenario.reject),
        scenario.timeout,
    );
    if let Err(err) = result {
        bail!(
            "{err}\n  console: {}\n    {}",
            log.display(),
            console_excerpt(&outcome).join("\n    ")
        );
    }
    Ok(())
}

/// The host's year (UTC), which a guest whose clock was set by NTP sees.
fn this_year() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days to civil year (Howard Hinnant), enough for the year alone.
    let z = (secs / 86_400) as i64 + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let month_index = (5 * doy + 2) / 153;
    (yoe + era * 400 + i64::from(month_index >= 10)).to_string()
}

/// The lines worth showing for a failure: those up to a kernel panic, or the last ones.
fn console_excerpt(outcome: &Outcome) -> Vec<&str> {
    let end = outcome
        .lines
        .iter()
        .position(|line| line.text.contains(KERNEL_PANIC))
        .map_or(outcome.lines.len(), |panic| panic + 1);
    let start = end.saturating_sub(25);
    outcome
        .lines
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|l| l.text.as_str())
        .collect()
}

/// Every expectation is met, nothing rejected shows, the kernel did not
/// panic, and QEMU exited by itself.
pub fn check(
    outcome: &Outcome,
    expect: &[Vec<String>],
    reject: &[Vec<String>],
    timeout: Duration,
) -> Result<()> {
    let show = |parts: &Vec<String>| format!("{:?}", parts.join(" … "));
    let missing: Vec<String> = expect
        .iter()
        .filter(|parts| find_line(outcome, parts).is_none())
        .map(show)
        .collect();
    if !missing.is_empty() {
        bail!("console lacks {}", missing.join(", "));
    }
    let unwanted: Vec<String> = reject
        .iter()
        .filter(|parts| find_line(outcome, parts).is_some())
        .map(show)
        .collect();
    if !unwanted.is_empty() {
        bail!("console shows {}", unwanted.join(", "));
    }
    if outcome.kernel_panicked() {
        bail!("kernel panicked");
    }
    if !outcome.exited_by_itself() {
        bail!("the VM did not power off or reboot within {timeout:?}");
    }
    Ok(())
}

/// The first line that contains all of `parts`, ignoring case.
pub fn find_line<'a>(outcome: &'a Outcome, parts: &[String]) -> Option<&'a crate::qemu::Line> {
    let parts: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
    outcome.lines.iter().find(|line| {
        let text = line.text.to_lowercase();
        parts.iter().all(|part| text.contains(part.as_str()))
    })
}

/// A port on 127.0.0.1 with nothing listening (we bound it and let it go).
fn closed_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A group that is one test (`demo`, `pxe`, `modules`): runs it, prints
/// `PASS`/`FAIL NAME (time)` and returns (passed, failed names) like [`run`].
pub fn one_test(name: &str, test: impl FnOnce() -> Result<()>) -> (usize, Vec<String>) {
    let started = Instant::now();
    match test() {
        Ok(()) => {
            println!("PASS {name} ({:.1?})", started.elapsed());
            (1, Vec::new())
        }
        Err(err) => {
            println!("FAIL {name} ({:.1?}): {err:#}", started.elapsed());
            (0, vec![name.to_owned()])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Line;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn outcome(lines: &[&str], exited: bool) -> Outcome {
        Outcome {
            lines: lines
                .iter()
                .map(|text| Line {
                    at: Duration::ZERO,
                    text: (*text).to_owned(),
                })
                .collect(),
            exited: exited.then(|| ExitStatus::from_raw(0)),
            elapsed: Duration::ZERO,
        }
    }

    fn strings(lines: &[&[&str]]) -> Vec<Vec<String>> {
        lines
            .iter()
            .map(|parts| parts.iter().map(|p| (*p).to_owned()).collect())
            .collect()
    }

    /// `expected`: None to pass, or a substring of the failure.
    fn check_case(
        lines: &[&str],
        exited: bool,
        expect: &[&[&str]],
        reject: &[&[&str]],
        expected: Option<&str>,
    ) {
        let result = check(
            &outcome(lines, exited),
            &strings(expect),
            &strings(reject),
            Duration::from_secs(1),
        );
        match (result, expected) {
            (Ok(()), None) => {}
            (Err(err), Some(want)) => {
                assert!(err.to_string().contains(want), "{err} lacks {want:?}")
            }
            (result, expected) => panic!("{lines:?}: got {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn console_checks() {
        let boot = [
            "[    5.2] iguana: error: image 10.0.2.2:5000/nope: fetch manifest: manifest unknown",
            "[a] IGUANA-E2E a ran",
        ];
        check_case(
            &boot,
            true,
            &[&["ERROR", "image 10.0.2.2:5000/nope", "Manifest Unknown"]],
            &[],
            None,
        );
        check_case(
            &boot,
            true,
            &[&["IGUANA-E2E a ran"], &["IGUANA-E2E b"]],
            &[],
            Some("lacks \"IGUANA-E2E b\""),
        );
        // All parts must be on the same line.
        check_case(
            &boot,
            true,
            &[&["a ran", "manifest unknown"]],
            &[],
            Some("lacks"),
        );
        check_case(
            &boot,
            true,
            &[],
            &[&["a ran"]],
            Some("console shows \"a ran\""),
        );
        check_case(&boot, false, &[&["a ran"]], &[], Some("did not power off"));
        check_case(
            &["Kernel panic - not syncing: Attempted to kill init!"],
            true,
            &[],
            &[],
            Some("kernel panicked"),
        );
    }
}
