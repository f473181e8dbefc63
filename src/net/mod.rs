//! Phase "network": `iguana net-up`, run by PID 1 as a child process so the
//! async runtime and the DHCP client never live in PID 1 itself.
//!
//! Reads the dracut network arguments, plans (`plan.rs`), renames links and
//! creates bonds and VLANs (`devices.rs`), sets every planned link up,
//! applies static `ip=`, runs DHCPv4 on the planned links at once
//! (`dhcp.rs`), adds `rd.route=` routes, and writes `/etc/resolv.conf`,
//! /etc/hosts and `/run/iguana/network.json` (`record.rs`). IPv6 (`ipv6.rs`:
//! the kernel's SLAAC, and DHCPv6 for `ip=dhcp6` in `dhcp6.rs`) runs beside
//! IPv4 and is merged into the same files. Prints one `lease: ...`/`static:
//! ...` line per configured address and one `ipv6: ...` line on stdout, and
//! logs to stderr. Assumes AF_PACKET is available (built in on Debian
//! kernels, else loaded by the modules phase) and the NIC drivers are loaded.

pub mod args;
mod config;
/// For the clock phase: the DHCP NTP servers recorded in network.json.
pub use config::ntp_servers;
mod devices;
mod dhcp;
mod dhcp6;
mod ipv6;
mod link;
mod plan;
mod record;
mod static6;

#[cfg(test)]
mod netns6_tests;
#[cfg(test)]
mod netns_tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::Either;
use tracing::{info, warn};

use self::config::Lease;
use self::link::Link;
use self::record::{DefaultRoute, LeaseRecord};

const DEFAULT_TIMEOUT_SECS: u64 = 60;
const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
const DEFAULT_JSON: &str = "/run/iguana/network.json";
/// MTUs below the IPv4 minimum reassembly size are a broken or hostile lease.
const MIN_MTU: u16 = 576;
/// After the first lease, how long the other links get to answer.
const DHCP_GRACE: Duration = Duration::from_secs(2);

const USAGE: &str = "usage: iguana net-up [--timeout SECS] [--resolv-conf PATH] [--json PATH] [--publish PATH] [--late-ipv6] | net-up --watch-ipv6 IFACES [--timeout SECS] [--json PATH] [--publish PATH]";

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
    #[error(transparent)]
    Args(#[from] args::Error),
    #[error(transparent)]
    Plan(#[from] plan::Error),
    #[error(transparent)]
    Device(#[from] devices::Error),
    #[error("link {iface} vanished during configuration")]
    LinkGone { iface: String },
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
    #[error("add route {route} (rd.route=)")]
    AddStaticRoute {
        route: String,
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
    /// A copy of network.json for containers (`/iguana/network.json`),
    /// kept in step by net-up and its IPv6 watcher.
    pub publish: Option<PathBuf>,
    /// When IPv6 is not waited for, start `--watch-ipv6` in the background
    /// to record SLAAC when it lands (PID 1 asks for it; tests do not).
    pub late_ipv6: bool,
    /// Be that watcher, on these interfaces.
    pub watch_ipv6: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
            json: PathBuf::from(DEFAULT_JSON),
            cmdline: PathBuf::from("/proc/cmdline"),
            publish: None,
            late_ipv6: false,
            watch_ipv6: None,
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
            "--publish" => options.publish = Some(PathBuf::from(value()?)),
            "--late-ipv6" => options.late_ipv6 = true,
            "--watch-ipv6" => {
                let names: Vec<String> = value()?.split(',').filter(|n| !n.is_empty()).map(str::to_owned).collect();
                if names.is_empty() {
                    return Err(usage("net-up: --watch-ipv6 wants interface names".into()));
                }
                options.watch_ipv6 = Some(names);
            }
            other => return Err(usage(format!("net-up: unknown argument {other:?}"))),
        }
    }
    Ok(options)
}

/// Entry point of `iguana net-up [--timeout SECS] [--resolv-conf PATH]
/// [--json PATH] [--cmdline PATH] [--publish PATH] [--late-ipv6]` and of
/// its IPv6 watcher; `args` are the arguments after `net-up`.
pub fn cli_net_up(args: &[String]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    if let Some(names) = &options.watch_ipv6 {
        runtime.block_on(watch_ipv6(names, &options))?;
        return Ok(());
    }
    let up = runtime.block_on(net_up(&options))?;
    for lease in &up.configured {
        println!("{}", config::summary_line(lease));
    }
    let pending = if up.v6_pending { " (not waited for: SLAAC goes on in the background)" } else { "" };
    println!("{}{pending}", ipv6::summary_line(&up.v6));
    Ok(())
}

/// What net-up configured: static `ip=` first, then DHCP leases in the
/// order they came; the IPv6 outcome; whether SLAAC was left to finish
/// in the background.
struct Up {
    configured: Vec<Lease>,
    v6: ipv6::Outcome,
    v6_pending: bool,
}

/// Carries out the plan (see `plan.rs` for the order). IPv6 runs beside
/// IPv4, bounded, and is only fatal when `ip=dhcp6`/`ip=auto6` asks for it;
/// alone, those replace DHCPv4. Once IPv4 is up, IPv6 is only waited for
/// when `ipv6::wait_reason` says something needs it.
async fn net_up(options: &Options) -> Result<Up, Error> {
    let text = fs::read_to_string(&options.cmdline).unwrap_or_default();
    let net_args = args::parse(&text)?;
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Netlink)?;
    tokio::spawn(connection);

    let links = link::list(&handle).await.map_err(Error::ListLinks)?;
    if let Some(lo) = links.iter().find(|l| l.name == "lo") {
        link_up(&handle, lo).await?;
    }
    let mut plan = plan::plan(&links, &net_args)?;
    // PID 1 already refused a malformed blacklist; here it only keeps a
    // blacklisted bonding/8021q driver unloaded.
    let policy = crate::modules::args::parse(&text).unwrap_or_default();
    devices::create(&handle, &plan, &policy).await?;
    let links = link::list(&handle).await.map_err(Error::ListLinks)?;
    // IPv6 on the links IPv4 configures (never on bond slaves).
    let v4_names: Vec<&String> = plan.dhcp.iter().chain(plan.statics.iter().map(|l| &l.interface)).collect();
    let v6_links: Vec<Link> = links.iter().filter(|l| v4_names.contains(&&l.name)).cloned().collect();
    let v6_plan = ipv6::plan(&net_args);
    if v6_plan.only_v6 {
        plan.dhcp.clear();
    }
    let v4 = std::pin::pin!(ipv4(&handle, &plan, &links, options));
    let v6 = std::pin::pin!(ipv6::configure(&handle, &v6_links, &net_args, options.timeout));
    let v6_target = ipv6_target(&text);
    let (configured, network, v6) = match futures_util::future::select(v4, v6).await {
        Either::Left((v4, v6)) => {
            let (configured, network) = v4?;
            match ipv6::wait_reason(&v6_plan, configured.len(), v6_target) {
                Some(reason) => {
                    info!(reason, "IPv4 is up; waiting for IPv6");
                    (configured, network, v6.await?)
                }
                None => (configured, network, ipv6::snapshot(&handle, &v6_links).await),
            }
        }
        Either::Right((v6, v4)) => {
            let v6 = v6?;
            let (configured, network) = v4.await?;
            (configured, network, v6)
        }
    };
    // Also when best-effort IPv6 gave up first (no router heard within
    // its wait): an advertisement that comes later is still recorded.
    let needed = ipv6::wait_reason(&v6_plan, configured.len(), v6_target).is_some();
    let v6_pending = !needed && !ipv6::settled(&v6) && !v6_links.is_empty();
    write_records(&configured, &network, options)?;
    ipv6::record(&v6, &v6_links, &options.resolv_conf, &options.json)?;
    // As when PID 1 copied it: a missing copy is a warning, not a failed boot.
    if let Some(publish) = &options.publish {
        if let Err(err) = fs::read_to_string(&options.json).and_then(|text| write_atomic(publish, &text)) {
            warn!(path = %publish.display(), %err, "network.json not published");
        }
    }
    if v6_pending {
        info!(summary = %ipv6::summary_line(&v6), "IPv6 not waited for: nothing needs it; SLAAC goes on in the background");
        if options.late_ipv6 {
            start_watcher(&v6_links, options);
        }
    }
    Ok(Up { configured, v6, v6_pending })
}

/// Whether a registry or the control_url on the command line is an IPv6
/// literal. Host names are not resolved: that would cost every boot a DNS
/// round trip before it may go on.
fn ipv6_target(cmdline: &str) -> bool {
    let Ok(args) = crate::cmdline::parse(cmdline) else { return false };
    let mirrors = args.registry_mirrors.iter().flat_map(|(from, to)| [from, to]);
    let mut references = args.control_url.iter().chain(&args.containers).chain(&args.insecure_registries).chain(args.proxy.iter()).chain(mirrors);
    references.any(|reference| ipv6::is_ipv6_literal(reference))
}

/// Starts `iguana net-up --watch-ipv6` and does not wait for it: it outlives
/// net-up (PID 1 inherits and reaps it), ends by its own deadline, and is
/// killed with everything else at handover. A failure to start it only
/// costs network.json the late address.
fn start_watcher(links: &[Link], options: &Options) {
    let names = links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(",");
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .args(["net-up", "--watch-ipv6", &names, "--timeout", &options.timeout.as_secs().to_string()])
        .arg("--json")
        .arg(&options.json)
        .stdin(std::process::Stdio::null())
        // Its errors are its own: PID 1 must not read them as a later child's.
        .env_remove(crate::child::ERROR_FILE_ENV);
    if let Some(publish) = &options.publish {
        command.arg("--publish").arg(publish);
    }
    match crate::child::spawn_background(&mut command) {
        Ok(child) => info!(pid = child.id(), interfaces = %names, "IPv6 watcher started"),
        Err(err) => warn!(%err, "IPv6 watcher not started; network.json will miss a late SLAAC address"),
    }
}

/// `iguana net-up --watch-ipv6 IFACES`: records SLAAC on IFACES in
/// network.json when it lands, within `--timeout`.
async fn watch_ipv6(names: &[String], options: &Options) -> Result<(), Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Netlink)?;
    tokio::spawn(connection);
    let links: Vec<Link> = link::list(&handle).await.map_err(Error::ListLinks)?.into_iter().filter(|l| names.contains(&l.name)).collect();
    let deadline = tokio::time::Instant::now() + options.timeout;
    ipv6::watch(&handle, &links, deadline, &options.json, options.publish.as_deref()).await?;
    Ok(())
}

/// Static `ip=`, DHCPv4, `rd.route=`: what was configured and its record.
async fn ipv4(
    handle: &rtnetlink::Handle,
    plan: &plan::Plan,
    links: &[Link],
    options: &Options,
) -> Result<(Vec<Lease>, record::Network), Error> {
    let find = |name: &str| links.iter().find(|l| l.name == name).ok_or_else(|| Error::LinkGone { iface: name.to_owned() });

    let mut configured: Vec<Lease> = Vec::new();
    let mut default_route = None;
    for lease in &plan.statics {
        let with_default = default_route.is_none() && lease.gateway.is_some();
        apply(handle, find(&lease.interface)?, lease, with_default).await?;
        if with_default {
            default_route = lease.gateway.map(|gateway| DefaultRoute { gateway, interface: lease.interface.clone() });
        }
        configured.push(lease.clone());
    }
    let records = if plan.dhcp.is_empty() {
        Vec::new()
    } else {
        dhcp_phase(handle, plan, links, options.timeout, &mut configured, &mut default_route).await?
    };
    for route in &plan.routes {
        let index = match &route.iface {
            Some(name) => Some(find(name)?.index),
            None => None,
        };
        link::add_route(handle, route.destination, route.prefix, route.gateway, index)
            .await
            .map_err(|source| Error::AddStaticRoute { route: format!("{}/{}", route.destination, route.prefix), source })?;
    }

    let links = link::list(handle).await.map_err(Error::ListLinks)?;
    let network = record::build(plan, &links, &configured, default_route, records);
    Ok((configured, network))
}

/// resolv.conf, the host name and network.json from what IPv4 configured;
/// `ipv6::record` adds to them.
fn write_records(configured: &[Lease], network: &record::Network, options: &Options) -> Result<(), Error> {
    let source = configured.iter().map(|l| l.interface.as_str()).collect::<Vec<_>>().join(", ");
    let source = if source.is_empty() { "IPv6".to_owned() } else { format!("the configuration of {source}") };
    write_file(&options.resolv_conf, &network.resolv_conf(&source))?;
    if let Some(lease) = configured.iter().find(|l| l.hostname.is_some()) {
        set_hostname(lease, options)?;
    }
    write_atomic(&options.json, &network.to_json()).map_err(|source| Error::Write { path: options.json.clone(), source })
}

/// DHCP on the planned links; each lease is installed (the first with a
/// gateway gives the default route unless a static `ip=` did) and appended
/// to `configured`. A lease that makes no sense is skipped with a warning
/// when another one is usable, else it is the error.
async fn dhcp_phase(
    handle: &rtnetlink::Handle,
    plan: &plan::Plan,
    links: &[Link],
    timeout: Duration,
    configured: &mut Vec<Lease>,
    default_route: &mut Option<DefaultRoute>,
) -> Result<Vec<LeaseRecord>, Error> {
    let candidates = plan
        .dhcp
        .iter()
        .map(|name| links.iter().find(|l| &l.name == name).cloned().ok_or_else(|| Error::LinkGone { iface: name.clone() }))
        .collect::<Result<Vec<Link>, Error>>()?;
    info!(interfaces = %plan.dhcp.join(", "), timeout_secs = timeout.as_secs(), "DHCP");
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = dhcp::leases(handle, &candidates, deadline, DHCP_GRACE).await;
    if outcome.leases.is_empty() && (configured.is_empty() || plan.dhcp_named) {
        return Err(no_lease(&plan.dhcp, outcome, timeout));
    }
    for iface in &outcome.no_carrier {
        warn!(%iface, "no carrier, not configured");
    }
    let mut records = Vec::new();
    let mut bad = None;
    for acquired in &outcome.leases {
        let lease = match Lease::from_dhcp(&acquired.link.name, &acquired.lease) {
            Ok(lease) => lease,
            Err(err) => {
                warn!(iface = %acquired.link.name, %err, "lease skipped");
                bad.get_or_insert(err);
                continue;
            }
        };
        let with_default = default_route.is_none() && lease.gateway.is_some();
        apply(handle, &acquired.link, &lease, with_default).await?;
        if with_default {
            *default_route = lease.gateway.map(|gateway| DefaultRoute { gateway, interface: lease.interface.clone() });
        }
        let acquired_at = acquired.at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        records.push(LeaseRecord { lease: lease.clone(), acquired_at });
        configured.push(lease);
    }
    match bad {
        Some(err) if configured.is_empty() => Err(err.into()),
        _ => Ok(records),
    }
}

/// Why DHCP gave nothing: every link failed, or time ran out.
fn no_lease(tried: &[String], outcome: dhcp::Outcome, timeout: Duration) -> Error {
    if !outcome.failures.is_empty() && outcome.failures.len() == tried.len() {
        let failures: Vec<String> = outcome.failures.iter().map(|(iface, err)| format!("{iface}: {err}")).collect();
        return Error::DhcpFailed { failures: failures.join("; ") };
    }
    let mut tried = tried.join(", ");
    if !outcome.no_carrier.is_empty() {
        tried = format!("{tried}; no carrier on {}", outcome.no_carrier.join(", "));
    }
    Error::NoLease { tried, secs: timeout.as_secs() }
}

async fn link_up(handle: &rtnetlink::Handle, link: &Link) -> Result<(), Error> {
    link::set_up(handle, link.index)
        .await
        .map_err(|source| Error::LinkUp {
            iface: link.name.clone(),
            source,
        })
}

/// Installs the lease: MTU (best effort), address, and the default route if
/// `with_default`.
async fn apply(handle: &rtnetlink::Handle, link: &Link, lease: &Lease, with_default: bool) -> Result<(), Error> {
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
    if let Some(gateway) = lease.gateway.filter(|_| with_default) {
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

/// Replaces `path` with `text` in one step (a temporary file beside it,
/// then rename), creating the parent directory: a reader never sees half a
/// record, even while the IPv6 watcher rewrites it.
pub(crate) fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    // create_new: a symlink or file a container planted at that name is
    // not followed or reused; it is removed and the write tried once more.
    let create = || fs::OpenOptions::new().write(true).create_new(true).open(&temporary);
    let mut file = create().or_else(|_| fs::remove_file(&temporary).and_then(|()| create()))?;
    io::Write::write_all(&mut file, text.as_bytes())?;
    drop(file);
    fs::rename(&temporary, path).inspect_err(|_| {
        let _ = fs::remove_file(&temporary);
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
                ..Options::default()
            }),
        );
        check(
            &["--publish", "/iguana/network.json", "--late-ipv6"],
            Ok(Options { publish: Some("/iguana/network.json".into()), late_ipv6: true, ..Options::default() }),
        );
        check(
            &["--watch-ipv6", "eth0,bond0", "--json", "/run/n.json"],
            Ok(Options { watch_ipv6: Some(vec!["eth0".into(), "bond0".into()]), json: "/run/n.json".into(), ..Options::default() }),
        );
        check(&["--watch-ipv6", ","], Err("net-up: --watch-ipv6 wants interface names"));
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
    fn atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/iguana/network.json");
        write_atomic(&path, "{\"a\": 1}\n").unwrap();
        write_atomic(&path, "{}\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}\n");
        let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("network.json")], "no temporary file left");
    }

    /// /iguana is writable by containers: a symlink planted at the
    /// temporary name must not make the write land elsewhere.
    #[test]
    fn atomic_write_follows_no_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "untouched").unwrap();
        let path = dir.path().join("iguana/network.json");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let planted = path.with_file_name(format!(".network.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&outside, &planted).unwrap();
        write_atomic(&path, "{}\n").unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "untouched");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}\n");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
    }

    #[test]
    fn ipv6_targets_on_the_command_line() {
        for (line, expected) in [
            ("rd.iguana.containers=10.0.2.2:5000/a rd.iguana.insecure_registries=10.0.2.2:5000", false),
            // Image references cannot carry brackets; the registry list can.
            ("rd.iguana.insecure_registries=[fd00:6::2]:5000", true),
            ("rd.iguana.control_url=http://[fd00:6::2]:8080/wf.yaml", true),
            ("rd.iguana.control_url=http://10.0.2.2:8080/wf.yaml", false),
            ("", false),
        ] {
            assert_eq!(ipv6_target(line), expected, "{line}");
        }
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
