//! Phase "network": `iguana net-up`, run by PID 1 as a child process so the
//! async runtime and the DHCP client never live in PID 1 itself.
//!
//! Brings `lo` and every Ethernet link up, runs DHCPv4 on all of them at
//! once, and configures the first lease: address and default route over
//! rtnetlink, `/etc/resolv.conf`, and a JSON record in
//! `/run/iguana/network.json`. IPv6 (`ipv6.rs`: SLAAC, and DHCPv6 for
//! `ip=dhcp6`) runs beside it and is merged into the same files. Prints one
//! `lease: ...` and one `ipv6: ...` line on stdout and logs to stderr. Assumes AF_PACKET is available (built in on Debian
//! kernels, else loaded by the modules phase) and the NIC drivers are loaded.

pub mod args;
mod config;
mod dhcp;
mod dhcp6;
mod ipv6;
mod link;

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod netns6_tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use self::config::{Interface, Lease};
use self::link::Link;

const DEFAULT_TIMEOUT_SECS: u64 = 60;
const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
const DEFAULT_JSON: &str = "/run/iguana/network.json";
/// MTUs below the IPv4 minimum reassembly size are a broken or hostile lease.
const MIN_MTU: u16 = 576;

const USAGE: &str = "usage: iguana net-up [--timeout SECS] [--resolv-conf PATH] [--json PATH]";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{reason} ({USAGE})")]
    Usage { reason: String },
    #[error("start async runtime")]
    Runtime(#[source] io::Error),
    #[error("open rtnetlink socket")]
    Netlink(#[source] io::Error),
    #[error("list network links")]
    ListLinks(#[source] rtnetlink::Error),
    #[error("set link {iface} up")]
    LinkUp {
        iface: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("ip= names interface {iface}, which does not exist (links: {links})")]
    NoSuchInterface { iface: String, links: String },
    #[error("no Ethernet interface to run DHCP on (links: {links})")]
    NoEthernet { links: String },
    #[error("no DHCP lease on any interface (tried {tried}) within {secs}s")]
    NoLease { tried: String, secs: u64 },
    #[error("DHCP failed on every interface: {failures}")]
    DhcpFailed { failures: String },
    #[error(transparent)]
    Lease(#[from] config::Error),
    #[error("add address {address} to {iface}")]
    AddAddress {
        iface: String,
        address: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("add default route via {gateway} dev {iface}")]
    AddRoute {
        iface: String,
        gateway: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(transparent)]
    Ipv6(#[from] ipv6::Error),
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Command-line options of `iguana net-up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub timeout: Duration,
    pub resolv_conf: PathBuf,
    pub json: PathBuf,
    /// Where the dracut network arguments (`ip=`...) are read from.
    pub cmdline: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
            json: PathBuf::from(DEFAULT_JSON),
            cmdline: PathBuf::from("/proc/cmdline"),
        }
    }
}

/// Parses the arguments that follow `net-up`.
pub fn parse_args(args: &[String]) -> Result<Options, Error> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let usage = |reason: String| Error::Usage { reason };
        let mut value = || {
            args.next()
                .ok_or_else(|| usage(format!("net-up: {flag} needs a value")))
        };
        match flag.as_str() {
            "--timeout" => {
                let text = value()?;
                let secs: u64 = text.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    usage(format!(
                        "net-up: --timeout wants whole seconds > 0, got {text:?}"
                    ))
                })?;
                options.timeout = Duration::from_secs(secs);
            }
            "--resolv-conf" => options.resolv_conf = PathBuf::from(value()?),
            "--json" => options.json = PathBuf::from(value()?),
            "--cmdline" => options.cmdline = PathBuf::from(value()?),
            other => return Err(usage(format!("net-up: unknown argument {other:?}"))),
        }
    }
    Ok(options)
}

/// Entry point of `iguana net-up [--timeout SECS] [--resolv-conf PATH]
/// [--json PATH]`; `args` are the arguments after `net-up`.
pub fn cli_net_up(args: &[String]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let summary = runtime.block_on(net_up(&options))?;
    println!("{summary}");
    Ok(())
}

async fn net_up(options: &Options) -> Result<String, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Netlink)?;
    tokio::spawn(connection);

    let links = link::list(&handle).await.map_err(Error::ListLinks)?;
    if let Some(lo) = links.iter().find(|l| l.name == "lo") {
        link_up(&handle, lo).await?;
    }
    let candidates = link::dhcp_candidates(&links);
    if candidates.is_empty() {
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        return Err(Error::NoEthernet {
            links: names.join(", "),
        });
    }
    for candidate in &candidates {
        link_up(&handle, candidate).await?;
    }
    // A static `ip=<client>:...:none` replaces DHCP.
    let text = fs::read_to_string(&options.cmdline).unwrap_or_default();
    let net_args = args::parse(&text).map_err(|e| Error::Usage { reason: e.to_string() })?;
    // IPv6 beside IPv4: bounded, and only fatal when ip=dhcp6/auto6 asks.
    let only_v6 = ipv6::plan(&net_args).only_v6;
    let v4 = async {
        match only_v6 {
            true => Ok(None),
            false => ipv4(&handle, &links, &candidates, &net_args, options).await.map(Some),
        }
    };
    let v6 = async { Ok::<_, Error>(ipv6::configure(&handle, &candidates, &net_args, options.timeout).await?) };
    let (v4, v6) = futures_util::try_join!(v4, v6)?;
    ipv6::record(&v6, &candidates, v4.is_some(), &options.resolv_conf, &options.json)?;
    let v4 = v4.map(|lease| config::summary_line(&lease));
    Ok(v4.into_iter().chain([ipv6::summary_line(&v6)]).collect::<Vec<_>>().join("\n"))
}

/// DHCPv4 on every candidate, or the static `ip=`; writes resolv.conf,
/// /etc/hosts and network.json.
async fn ipv4(
    handle: &rtnetlink::Handle,
    links: &[Link],
    candidates: &[Link],
    net_args: &args::NetArgs,
    options: &Options,
) -> Result<Lease, Error> {
    if let Some((iface, mut lease)) = args::static_v4(net_args) {
        let link = match &iface {
            Some(name) => links.iter().find(|l| &l.name == name).ok_or_else(|| Error::NoSuchInterface {
                iface: name.clone(),
                links: links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", "),
            })?,
            None => candidates.first().ok_or_else(|| Error::NoEthernet { links: String::new() })?,
        };
        link_up(handle, link).await?;
        lease.interface = link.name.clone();
        apply(handle, link, &lease).await?;
        write_file(&options.resolv_conf, &config::resolv_conf(&lease))?;
        set_hostname(&lease, options)?;
        let interfaces = vec![Interface { name: link.name.clone(), mac: config::format_mac(&link.mac), addresses: Vec::new() }];
        write_file(&options.json, &config::network_json(&interfaces, &lease))?;
        return Ok(lease);
    }
    let names: Vec<&str> = candidates.iter().map(|l| l.name.as_str()).collect();
    info!(interfaces = %names.join(", "), timeout_secs = options.timeout.as_secs(), "DHCP");

    let acquired = match tokio::time::timeout(options.timeout, dhcp::first_lease(candidates)).await
    {
        Ok(Ok(acquired)) => acquired,
        Ok(Err(dhcp::AllFailed(failures))) => {
            let failures: Vec<String> = failures
                .iter()
                .map(|(iface, err)| format!("{iface}: {err}"))
                .collect();
            return Err(Error::DhcpFailed {
                failures: failures.join("; "),
            });
        }
        Err(_elapsed) => {
            return Err(Error::NoLease {
                tried: names.join(", "),
                secs: options.timeout.as_secs(),
            });
        }
    };
    let lease = Lease::from_dhcp(&acquired.link.name, &acquired.lease)?;
    apply(handle, &acquired.link, &lease).await?;
    write_file(&options.resolv_conf, &config::resolv_conf(&lease))?;
    set_hostname(&lease, options)?;
    let interfaces: Vec<Interface> = candidates
        .iter()
        .map(|l| Interface {
            name: l.name.clone(),
            mac: config::format_mac(&l.mac),
            addresses: Vec::new(),
        })
        .collect();
    write_file(&options.json, &config::network_json(&interfaces, &lease))?;
    Ok(lease)
}

async fn link_up(handle: &rtnetlink::Handle, link: &Link) -> Result<(), Error> {
    link::set_up(handle, link.index)
        .await
        .map_err(|source| Error::LinkUp {
            iface: link.name.clone(),
            source,
        })
}

/// Installs the lease: MTU (best effort), address, default route.
async fn apply(handle: &rtnetlink::Handle, link: &Link, lease: &Lease) -> Result<(), Error> {
    if let Some(mtu) = lease.mtu.filter(|m| *m >= MIN_MTU) {
        if let Err(err) = link::set_mtu(handle, link.index, mtu.into()).await {
            warn!(iface = %link.name, mtu, %err, "could not set MTU from lease, keeping the default");
        }
    }
    link::add_address(handle, link.index, lease.address, lease.prefix_len)
        .await
        .map_err(|source| Error::AddAddress {
            iface: link.name.clone(),
            address: format!("{}/{}", lease.address, lease.prefix_len),
            source,
        })?;
    if let Some(gateway) = lease.gateway {
        let onlink = !lease.gateway_is_on_subnet(gateway);
        link::add_default_route(handle, link.index, gateway, onlink)
            .await
            .map_err(|source| Error::AddRoute {
                iface: link.name.clone(),
                gateway: gateway.to_string(),
                source,
            })?;
    }
    Ok(())
}

/// The host name from the lease or `ip=`: the kernel's (shared with the
/// containers, which have no UTS namespace) and /etc/hosts beside resolv.conf.
fn set_hostname(lease: &Lease, options: &Options) -> Result<(), Error> {
    let Some(name) = &lease.hostname else { return Ok(()) };
    if options.resolv_conf == Path::new(DEFAULT_RESOLV_CONF) {
        if let Err(err) = nix::unistd::sethostname(name) {
            warn!(hostname = %name, %err, "could not set the host name");
        }
    }
    let hosts = options.resolv_conf.with_file_name("hosts");
    write_file(&hosts, &config::hosts(lease))
}

/// Writes `text` to `path`, creating the parent directory: a bare initramfs
/// may have neither /etc nor /run/iguana yet.
fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let result = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fs::create_dir_all(parent),
        _ => Ok(()),
    };
    result
        .and_then(|()| fs::write(path, text))
        .map_err(|source| Error::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: Result<Options, &str>) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let got = parse_args(&args).map_err(|e| e.to_string());
        let expected = expected.map_err(|reason| format!("{reason} ({USAGE})"));
        assert_eq!(got, expected, "parse_args({args:?})");
    }

    #[test]
    fn args() {
        check(&[], Ok(Options::default()));
        check(
            &["--timeout", "5"],
            Ok(Options {
                timeout: Duration::from_secs(5),
                ..Options::default()
            }),
        );
        check(
            &[
                "--resolv-conf",
                "/tmp/r",
                "--json",
                "/tmp/n.json",
                "--timeout",
                "120",
                "--cmdline",
                "/tmp/cmdline",
            ],
            Ok(Options {
                timeout: Duration::from_secs(120),
                resolv_conf: "/tmp/r".into(),
                json: "/tmp/n.json".into(),
                cmdline: "/tmp/cmdline".into(),
            }),
        );
        check(&["--timeout"], Err("net-up: --timeout needs a value"));
        check(
            &["--timeout", "soon"],
            Err("net-up: --timeout wants whole seconds > 0, got \"soon\""),
        );
        check(
            &["--timeout", "0"],
            Err("net-up: --timeout wants whole seconds > 0, got \"0\""),
        );
        check(&["eth0"], Err("net-up: unknown argument \"eth0\""));
    }

    #[test]
    fn timeout_message() {
        let err = Error::NoLease {
            tried: "eth0, eth1".into(),
            secs: 60,
        };
        assert_eq!(
            err.to_string(),
            "no DHCP lease on any interface (tried eth0, eth1) within 60s"
        );
    }
}
