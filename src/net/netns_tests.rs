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
    dhcpd: Option<Child>,
    pub(super) dir: tempfile::TempDir,
}

impl Lab {
    pub(super) fn new(tag: &str) -> Lab {
        let id = std::process::id();
        let lab = Lab {
            client: format!("igc-{id}-{tag}"),
            server: format!("igs-{id}-{tag}"),
            dhcpd: None,
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
        run(
            "ip",
            &[
                "-n",
                &self.server,
                "address",
                "add",
                "192.0.2.1/24",
                "dev",
                server_if,
            ],
        );
        let dir = self.dir.path();
        let conf = dir.join("udhcpd.conf");
        let text = format!(
            "start 192.0.2.100\nend 192.0.2.100\ninterface {server_if}\n\
             lease_file {leases}\npidfile {pid}\n\
             opt subnet {subnet}\nopt router 192.0.2.1\nopt dns 192.0.2.53 192.0.2.54\n\
             opt domain lab.example\nopt lease 3600\nopt ntpsrv 192.0.2.123\n",
            leases = dir.join("udhcpd.leases").display(),
            pid = dir.join("udhcpd.pid").display(),
        );
        fs::write(&conf, text).unwrap();
        fs::write(dir.join("udhcpd.leases"), "").unwrap();
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
        self.dhcpd = Some(child);
    }

    /// Runs `iguana net-up ARGS` with the calling thread moved into the client
    /// namespace; files go to the lab's temporary directory.
    fn net_up(&self, timeout_secs: u32) -> anyhow::Result<()> {
        let args: Vec<String> = vec![
            "--timeout".into(),
            timeout_secs.to_string(),
            "--resolv-conf".into(),
            self.path("resolv.conf"),
            "--json".into(),
            self.path("run/iguana/network.json"),
            // The host's own command line has nothing to do with this test.
            "--cmdline".into(),
            "/dev/null".into(),
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
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.dhcpd.take() {
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
        "# written by iguana net-up from the DHCP lease on eth1\n\
         search lab.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(lab.path("run/iguana/network.json")).unwrap())
            .unwrap();
    assert_eq!(json["dhcp"]["interface"], "eth1");
    assert_eq!(json["dhcp"]["address"], "192.0.2.100");
    assert_eq!(json["dhcp"]["gateway"], "192.0.2.1");
    assert_eq!(json["dhcp"]["lease_seconds"], 3600);
    assert_eq!(json["interfaces"][0]["name"], "eth0");
    assert_eq!(json["interfaces"][1]["addresses"][0], "192.0.2.100/24");
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
        "no Ethernet interface to run DHCP on (links: lo)"
    );
}
