//! Phase "network", IPv6 half, run by `iguana net-up` beside DHCPv4.
//!
//! SLAAC is the kernel's: with `accept_ra` and `autoconf` at their defaults
//! (on, since nothing forwards), a link that is up solicits a router and
//! configures an address and a default route from the advertisement. We
//! wait for them over rtnetlink and record them. `ip=dhcp6` adds stateful
//! DHCPv6 (`dhcp6.rs`): the leased address is installed as a /128, and its
//! DNS servers go to resolv.conf.
//!
//! IPv6 never blocks or fails an IPv4 boot: without `ip=auto6` or
//! `ip=dhcp6` the wait ends after `ROUTER_WAIT` when no router answered and
//! after `BEST_EFFORT` at most, and a failure is a warning.
//! DNS servers from router advertisements (RDNSS) are not read: the kernel
//! only forwards them to listeners of RTNLGRP_ND_USEROPT, which rtnetlink
//! does not parse.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::static6::{self, Route6, Static6};
use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use super::args::{Ip, Method, NetArgs};
use super::config::format_mac;
use super::dhcp6::{self, Lease6};
use super::link::Link;

/// How long IPv6 may hold up net-up when nothing asked for it, if a router
/// was heard: link-local duplicate address detection (1 s), the router
/// solicitation delay (up to 1 s), a lost first solicitation (the kernel
/// repeats it after 4 s) and the SLAAC address's own detection (1 s).
pub const BEST_EFFORT: Duration = Duration::from_secs(10);
/// When no router has been heard by then, IPv6 stops waiting: link-local
/// detection and the first solicitation went unanswered. Kept short because
/// every IPv4-only boot pays it; the kernel goes on with SLAAC afterwards,
/// only network.json misses an address that comes later.
const ROUTER_WAIT: Duration = Duration::from_secs(3);
/// How long DHCPv6 waits for more links to finish link-local address
/// detection once one has.
const LINK_LOCAL_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(200);
/// The background watcher polls less often: nothing waits for it.
const WATCH_POLL: Duration = Duration::from_millis(250);
/// The main routing table, where the kernel puts routes from advertisements.
const MAIN_TABLE: u8 = 254;
/// glibc and musl both read at most three `nameserver` lines (MAXNS).
const MAX_NAMESERVERS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ip= names interface {iface} for DHCPv6, which does not exist (links: {links})")]
    NoSuchInterface { iface: String, links: String },
    #[error(transparent)]
    Static(#[from] static6::Error),
    #[error("static IPv6 address {address} not usable within {secs}s (duplicate address detection)")]
    StaticNotUsable { address: Ipv6Addr, secs: u64 },
    #[error("list IPv6 addresses")]
    ListAddresses(#[source] rtnetlink::Error),
    #[error("list IPv6 routes")]
    ListRoutes(#[source] rtnetlink::Error),
    #[error("no IPv6 link-local address for DHCPv6 on {tried} within {secs}s")]
    NoLinkLocal { tried: String, secs: u64 },
    #[error("no DHCPv6 lease on any interface (tried {tried}) within {secs}s")]
    NoDhcp6Lease { tried: String, secs: u64 },
    #[error("DHCPv6 failed on every interface: {failures}")]
    Dhcp6Failed { failures: String },
    #[error(transparent)]
    Lease(#[from] dhcp6::Error),
    #[error("add address {address}/128 to {iface}")]
    AddAddress {
        iface: String,
        address: Ipv6Addr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no IPv6 address from a router advertisement (ip=auto6) within {secs}s")]
    NoSlaac { secs: u64 },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not the JSON net-up wrote")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the `ip=` arguments ask of IPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `ip=dhcp6` (None: every Ethernet link) or `ip=<iface>:dhcp6`.
    pub dhcp6: Option<Option<String>>,
    /// `ip=auto6`: an address from router advertisements is required.
    pub auto6: bool,
    /// Every `ip=` is dhcp6, auto6 or static IPv6: DHCPv4 is not run at all.
    pub only_v6: bool,
    /// Static IPv6 `ip=[...]...:none`, installed before anything is waited for.
    pub statics: Vec<Static6>,
    /// IPv6 `rd.route=`, added after the wait.
    pub routes: Vec<Route6>,
}

impl Plan {
    pub fn required(&self) -> bool {
        self.auto6 || self.dhcp6.is_some() || !self.statics.is_empty()
    }
}

pub fn plan(net: &NetArgs) -> Plan {
    let mut plan = Plan::default();
    for ip in &net.ip {
        if let Ip::Auto { iface, method, .. } = ip {
            match method {
                Method::Dhcp6 => plan.dhcp6 = Some(iface.clone()),
                Method::Auto6 => plan.auto6 = true,
                _ => {}
            }
        }
    }
    plan.only_v6 = !net.ip.is_empty()
        && net
            .ip
            .iter()
            .all(|ip| matches!(ip, Ip::Auto { method: Method::Dhcp6 | Method::Auto6, .. }) || static6::is_static_v6(ip));
    plan.statics = static6::static_v6(net);
    plan.routes = static6::routes_v6(net);
    plan
}

/// Why net-up waits for IPv6 once IPv4 is up, or None: the kernel then
/// finishes SLAAC in the background and `watch` records it when it lands.
/// `v4_addresses` counts static and DHCP IPv4 addresses; `v6_target` says
/// a registry or control_url on the command line is an IPv6 literal.
pub fn wait_reason(plan: &Plan, v4_addresses: usize, v6_target: bool) -> Option<&'static str> {
    if plan.auto6 {
        Some("ip=auto6")
    } else if plan.dhcp6.is_some() {
        Some("ip=dhcp6")
    } else if !plan.statics.is_empty() {
        Some("static IPv6 ip=")
    } else if !plan.routes.is_empty() {
        Some("IPv6 rd.route=")
    } else if v4_addresses == 0 {
        Some("no IPv4 address")
    } else if v6_target {
        Some("an IPv6 registry or control_url")
    } else {
        None
    }
}

/// Whether `reference` (an image reference, a registry, a URL) names its
/// host as an IPv6 literal: `[2001:db8::1]:5000/app`, `http://[::1]/wf`.
pub fn is_ipv6_literal(reference: &str) -> bool {
    let rest = reference.split_once("://").map_or(reference, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    host.starts_with('[')
}

/// One global address on one of our links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub interface: String,
    pub address: Ipv6Addr,
    pub prefix_len: u8,
    /// `ra` (SLAAC), `dhcp6` or `static`.
    pub origin: &'static str,
}

/// A default route the kernel learned from a router advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gateway {
    pub interface: String,
    pub address: Ipv6Addr,
}

/// Everything IPv6 configured, for network.json and resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub addresses: Vec<Address>,
    pub gateways: Vec<Gateway>,
    pub dns: Vec<Ipv6Addr>,
    pub search: Vec<String>,
    pub dhcp6: Option<Lease6>,
    /// IPv6 `rd.route=` routes as added.
    pub routes: Vec<Route6>,
}

/// An IPv6 address as rtnetlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    index: u32,
    address: Ipv6Addr,
    prefix_len: u8,
    scope: AddressScope,
    flags: AddressFlags,
}

impl Seen {
    fn from_message(message: &AddressMessage) -> Option<Seen> {
        if message.header.family != AddressFamily::Inet6 {
            return None;
        }
        // The 32-bit attribute supersedes the header's 8 bits of flags.
        let mut flags = AddressFlags::from_bits_retain(message.header.flags.bits().into());
        let mut address = None;
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Address(IpAddr::V6(a)) => address = Some(*a),
                AddressAttribute::Flags(f) => flags = *f,
                _ => {}
            }
        }
        Some(Seen {
            index: message.header.index,
            address: address?,
            prefix_len: message.header.prefix_len,
            scope: message.header.scope,
            flags,
        })
    }

    /// Duplicate address detection is over and found no duplicate.
    fn usable(&self) -> bool {
        !self.flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed)
    }
}

/// A route as rtnetlink reports it, reduced to what a default route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenRoute {
    index: Option<u32>,
    prefix_len: u8,
    gateway: Option<Ipv6Addr>,
    table: u8,
}

impl SeenRoute {
    fn from_message(message: &RouteMessage) -> SeenRoute {
        let mut route = SeenRoute {
            index: None,
            prefix_len: message.header.destination_prefix_length,
            gateway: None,
            table: message.header.table,
        };
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Oif(index) => route.index = Some(*index),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => route.gateway = Some(*g),
                _ => {}
            }
        }
        route
    }
}

/// The usable link-local address of link `index`, the source of DHCPv6.
fn link_local(seen: &[Seen], index: u32) -> Option<Ipv6Addr> {
    seen.iter()
        .find(|s| s.index == index && s.usable() && dhcp6::is_link_local(&s.address))
        .map(|s| s.address)
}

/// What the kernel has configured on `links`, as an outcome.
fn observe(seen: &[Seen], routes: &[SeenRoute], links: &[Link], lease: Option<&Lease6>) -> Outcome {
    let name = |index: u32| links.iter().find(|l| l.index == index).map(|l| l.name.clone());
    let addresses = seen
        .iter()
        .filter(|s| routable(s) && s.usable())
        .filter_map(|s| {
            let origin = if lease.is_some_and(|l| l.address == s.address) { "dhcp6" } else { "ra" };
            Some(Address { interface: name(s.index)?, address: s.address, prefix_len: s.prefix_len, origin })
        })
        .collect();
    let gateways = routes
        .iter()
        .filter(|r| r.prefix_len == 0 && r.table == MAIN_TABLE)
        .filter_map(|r| Some(Gateway { interface: name(r.index?)?, address: r.gateway? }))
        .collect();
    let (dns, search) = lease.map(|l| (l.dns.clone(), l.search.clone())).unwrap_or_default();
    Outcome { addresses, gateways, dns, search, dhcp6: lease.cloned(), routes: Vec::new() }
}

/// Marks the static addresses as such and adds their DNS servers; whether
/// every static address is usable and every static gateway is routed.
fn with_statics(outcome: &mut Outcome, statics: &[Static6]) -> bool {
    for address in &mut outcome.addresses {
        if statics.iter().any(|s| s.address == address.address) {
            address.origin = "static";
        }
    }
    for s in statics {
        for dns in &s.dns {
            if !outcome.dns.contains(dns) {
                outcome.dns.push(*dns);
            }
        }
    }
    statics.iter().all(|s| {
        outcome.addresses.iter().any(|a| a.address == s.address)
            && s.gateway.is_none_or(|g| outcome.gateways.iter().any(|w| w.address == g))
    })
}

/// Global scope, or site scope: QEMU's user network still advertises the
/// deprecated site-local fec0::/64 unless told otherwise.
fn routable(seen: &Seen) -> bool {
    matches!(seen.scope, AddressScope::Universe | AddressScope::Site) && !dhcp6::is_link_local(&seen.address)
}

/// Whether a router advertisement has configured anything on `links`: an
/// address (even one still in duplicate address detection) or a route.
fn heard_router(seen: &[Seen], outcome: &Outcome, links: &[Link]) -> bool {
    !outcome.gateways.is_empty()
        || seen.iter().any(|s| {
            routable(s) && links.iter().any(|l| l.index == s.index)
        })
}

/// Whether there is nothing more to wait for: a default route, and an
/// address (the leased one, when DHCPv6 ran).
fn complete(outcome: &Outcome) -> bool {
    let want = if outcome.dhcp6.is_some() { "dhcp6" } else { "ra" };
    !outcome.gateways.is_empty() && outcome.addresses.iter().any(|a| a.origin == want)
}

/// Configures IPv6 on `links` as `net` asks and returns what it got. Only
/// fails when `ip=auto6`/`ip=dhcp6` asked for IPv6; otherwise a failure is
/// logged and the outcome is empty.
pub async fn configure(handle: &Handle, links: &[Link], net: &NetArgs, timeout: Duration) -> Result<Outcome, Error> {
    let plan = plan(net);
    let wait = if plan.required() { timeout } else { BEST_EFFORT.min(timeout) };
    let mut outcome = match run(handle, links, &plan, wait).await {
        Ok(outcome) => {
            info!(summary = %summary_line(&outcome), required = plan.required(), "IPv6");
            outcome
        }
        Err(err) if !plan.required() => {
            warn!(err = %crate::logging::chain(&err), "IPv6 not configured, the boot goes on without it");
            Outcome::default()
        }
        Err(err) => return Err(err),
    };
    // Asked for explicitly: a route that cannot be added fails the boot.
    static6::add_routes(handle, links, &plan.routes).await?;
    outcome.routes = plan.routes;
    Ok(outcome)
}

/// What SLAAC has configured on `links` so far, without waiting: the
/// record of a boot that does not need IPv6. A failure is logged.
pub async fn snapshot(handle: &Handle, links: &[Link]) -> Outcome {
    let observed = async { Ok::<_, Error>(observe(&addresses(handle).await?, &routes(handle).await?, links, None)) };
    match observed.await {
        Ok(outcome) => outcome,
        Err(err) => {
            warn!(err = %crate::logging::chain(&err), "IPv6 not observed");
            Outcome::default()
        }
    }
}

/// Whether SLAAC has finished on `links`: an address and a default route.
pub fn settled(outcome: &Outcome) -> bool {
    complete(outcome)
}

/// The background half of a boot that did not wait for IPv6: until SLAAC
/// has given an address and a default route, or `deadline`, merges what
/// the kernel configured into network.json (`json`, then its `publish`
/// copy, each replaced atomically) whenever it changes, and prints the
/// summary line.
pub async fn watch(handle: &Handle, links: &[Link], deadline: Instant, json: &Path, publish: Option<&Path>) -> Result<Outcome, Error> {
    let start = Instant::now();
    let mut recorded = Outcome::default();
    loop {
        let outcome = observe(&addresses(handle).await?, &routes(handle).await?, links, None);
        if outcome != recorded && !outcome.addresses.is_empty() {
            // Only our own record (on /run) is read; the copy on /iguana,
            // which containers may have replaced by anything, is only ever
            // replaced.
            let base = fs::read_to_string(json).map_err(|source| Error::Read { path: json.to_owned(), source })?;
            let text = network_json(Some(&base), &outcome, links).map_err(|source| Error::Json { path: json.to_owned(), source })?;
            for path in std::iter::once(json).chain(publish) {
                write(path, &text)?;
            }
            let after = start.elapsed().as_secs_f64();
            println!("{} (recorded in the background, {after:.1}s after net-up)", summary_line(&outcome));
            recorded = outcome;
        }
        if complete(&recorded) {
            return Ok(recorded);
        }
        if Instant::now() >= deadline {
            info!(summary = %summary_line(&recorded), "IPv6 watch over");
            return Ok(recorded);
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}

async fn run(handle: &Handle, links: &[Link], plan: &Plan, wait: Duration) -> Result<Outcome, Error> {
    let start = Instant::now();
    let deadline = start + wait;
    let secs = wait.as_secs();
    static6::apply(handle, links, &plan.statics).await?;
    let lease = match &plan.dhcp6 {
        Some(iface) => {
            let on: Vec<Link> = match iface {
                Some(name) => vec![links.iter().find(|l| &l.name == name).cloned().ok_or_else(|| Error::NoSuchInterface {
                    iface: name.clone(),
                    links: names(links),
                })?],
                None => links.to_vec(),
            };
            Some(dhcp6_lease(handle, &on, deadline, secs).await?)
        }
        None => None,
    };
    loop {
        let seen = addresses(handle).await?;
        let mut outcome = observe(&seen, &routes(handle).await?, links, lease.as_ref());
        let statics_done = with_statics(&mut outcome, &plan.statics);
        let now = Instant::now();
        let silent = !plan.required() && now >= start + ROUTER_WAIT && !heard_router(&seen, &outcome, links);
        let only_statics = plan.dhcp6.is_none() && !plan.auto6 && !plan.statics.is_empty();
        let done = statics_done && (only_statics || complete(&outcome));
        if done || silent || now >= deadline {
            if let Some(s) = plan.statics.iter().find(|s| !outcome.addresses.iter().any(|a| a.address == s.address)) {
                return Err(Error::StaticNotUsable { address: s.address, secs });
            }
            if plan.auto6 && !outcome.addresses.iter().any(|a| a.origin == "ra") {
                return Err(Error::NoSlaac { secs });
            }
            return Ok(outcome);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for link-local addresses, runs DHCPv6 and installs the address.
async fn dhcp6_lease(handle: &Handle, links: &[Link], deadline: Instant, secs: u64) -> Result<Lease6, Error> {
    let tried = names(links);
    let mut first_seen: Option<Instant> = None;
    let ready = loop {
        let seen = addresses(handle).await?;
        let ready: Vec<(Link, Ipv6Addr)> =
            links.iter().filter_map(|l| Some((l.clone(), link_local(&seen, l.index)?))).collect();
        let now = Instant::now();
        if !ready.is_empty() && first_seen.is_none() {
            first_seen = Some(now);
        }
        let grace_over = first_seen.is_some_and(|t| now >= t + LINK_LOCAL_GRACE);
        if ready.len() == links.len() || grace_over || (now >= deadline && !ready.is_empty()) {
            break ready;
        }
        if now >= deadline {
            return Err(Error::NoLinkLocal { tried, secs });
        }
        tokio::time::sleep(POLL).await;
    };
    let (link, dhcp) = match tokio::time::timeout_at(deadline, dhcp6::first_lease(&ready)).await {
        Ok(Ok(acquired)) => acquired,
        Ok(Err(dhcp6::AllFailed(failures))) => {
            let failures: Vec<String> = failures.iter().map(|(iface, err)| format!("{iface}: {err}")).collect();
            return Err(Error::Dhcp6Failed { failures: failures.join("; ") });
        }
        Err(_elapsed) => return Err(Error::NoDhcp6Lease { tried, secs }),
    };
    let lease = Lease6::from_dhcp(&link.name, &dhcp)?;
    // Permanent like the DHCPv4 address: nothing renews it after net-up.
    handle
        .address()
        .add(link.index, IpAddr::V6(lease.address), 128)
        .replace()
        .execute()
        .await
        .map_err(|source| Error::AddAddress { iface: link.name.clone(), address: lease.address, source })?;
    info!(iface = %link.name, address = %lease.address, "DHCPv6 lease");
    Ok(lease)
}

/// `ip -6 address show`
async fn addresses(handle: &Handle) -> Result<Vec<Seen>, Error> {
    let mut request = handle.address().get();
    request.message_mut().header.family = AddressFamily::Inet6;
    let messages: Vec<AddressMessage> = request.execute().try_collect().await.map_err(Error::ListAddresses)?;
    Ok(messages.iter().filter_map(Seen::from_message).collect())
}

/// `ip -6 route show`
async fn routes(handle: &Handle) -> Result<Vec<SeenRoute>, Error> {
    let request = handle.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build());
    let messages: Vec<RouteMessage> = request.execute().try_collect().await.map_err(Error::ListRoutes)?;
    Ok(messages.iter().map(SeenRoute::from_message).collect())
}

fn names(links: &[Link]) -> String {
    links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Adds the IPv6 outcome to the resolv.conf and network.json net-up wrote
/// for IPv4 (with no IPv4 configured, they list only the links).
pub fn record(outcome: &Outcome, links: &[Link], resolv_conf: &Path, json: &Path) -> Result<(), Error> {
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })
    };
    let (resolv_base, json_base) = (read(resolv_conf)?, read(json)?);
    let text = network_json(Some(&json_base), outcome, links)
        .map_err(|source| Error::Json { path: json.to_owned(), source })?;
    write(resolv_conf, &resolv_conf_text(&resolv_base, outcome))?;
    write(json, &text)
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    super::write_atomic(path, text).map_err(|source| Error::Write { path: path.to_owned(), source })
}

/// `base` with the DHCPv6 search domains added to its `search` line and
/// the IPv6 name servers after the IPv4 ones, within the three the
/// resolvers read.
pub fn resolv_conf_text(base: &str, outcome: &Outcome) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
    let search_at = lines.iter().position(|l| l.starts_with("search "));
    let mut search: Vec<String> = search_at
        .map(|i| lines[i].split_whitespace().skip(1).map(str::to_owned).collect())
        .unwrap_or_default();
    for domain in &outcome.search {
        if !search.contains(domain) && search.len() < 6 {
            search.push(domain.clone());
        }
    }
    if !search.is_empty() {
        let line = format!("search {}", search.join(" "));
        match search_at {
            Some(i) => lines[i] = line,
            None => {
                let after_comments = lines.iter().take_while(|l| l.starts_with('#')).count();
                lines.insert(after_comments, line);
            }
        }
    }
    let present: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("nameserver ").map(|s| s.trim().to_owned()))
        .collect();
    let room = MAX_NAMESERVERS.saturating_sub(present.len());
    let new = outcome.dns.iter().map(Ipv6Addr::to_string).filter(|s| !present.contains(s));
    lines.extend(new.take(room).map(|s| format!("nameserver {s}")));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// `base` (net-up's IPv4 record) with the IPv6 addresses added to each
/// interface's `addresses` and the whole outcome under `ipv6`; without a
/// base, a record of the links with `dhcp: null`.
pub fn network_json(base: Option<&str>, outcome: &Outcome, links: &[Link]) -> Result<String, serde_json::Error> {
    let mut record: serde_json::Value = match base {
        Some(text) => serde_json::from_str(text)?,
        None => {
            let interfaces: Vec<serde_json::Value> = links
                .iter()
                .map(|l| serde_json::json!({ "name": l.name, "mac": format_mac(&l.mac), "addresses": [] }))
                .collect();
            serde_json::json!({ "interfaces": interfaces, "dhcp": null })
        }
    };
    if let Some(interfaces) = record.get_mut("interfaces").and_then(|i| i.as_array_mut()) {
        for address in &outcome.addresses {
            let entry = interfaces.iter_mut().find(|i| i["name"] == address.interface.as_str());
            if let Some(list) = entry.and_then(|i| i.get_mut("addresses")).and_then(|a| a.as_array_mut()) {
                // The watcher merges into a record that may hold it already.
                let text = serde_json::Value::from(format!("{}/{}", address.address, address.prefix_len));
                if !list.contains(&text) {
                    list.push(text);
                }
            }
        }
    }
    if let Some(object) = record.as_object_mut() {
        object.insert("ipv6".into(), serde_json::to_value(outcome)?);
    }
    let mut text = serde_json::to_string_pretty(&record)?;
    text.push('\n');
    Ok(text)
}

/// The line `iguana net-up` prints after the IPv4 one.
pub fn summary_line(outcome: &Outcome) -> String {
    let list = |items: Vec<String>| if items.is_empty() { "none".to_owned() } else { items.join(",") };
    let addresses = outcome
        .addresses
        .iter()
        .map(|a| format!("{}/{}%{}({})", a.address, a.prefix_len, a.interface, a.origin))
        .collect();
    let gateways = outcome.gateways.iter().map(|g| format!("{}%{}", g.address, g.interface)).collect();
    let dns = outcome.dns.iter().map(Ipv6Addr::to_string).collect();
    format!("ipv6: addr={} gateway={} dns={}", list(addresses), list(gateways), list(dns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::args;

    fn ip(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    fn check_plan(line: &str, expected: Plan) {
        assert_eq!(plan(&args::parse(line).unwrap()), expected, "{line}");
    }

    #[test]
    fn plans() {
        check_plan("", Plan::default());
        check_plan("ip=dhcp", Plan::default());
        check_plan("ip=dhcp6", Plan { dhcp6: Some(None), only_v6: true, ..Plan::default() });
        check_plan("ip=eth1:dhcp6", Plan { dhcp6: Some(Some("eth1".into())), only_v6: true, ..Plan::default() });
        check_plan("ip=auto6", Plan { auto6: true, only_v6: true, ..Plan::default() });
        check_plan("ip=eth0:dhcp ip=eth1:dhcp6", Plan { dhcp6: Some(Some("eth1".into())), ..Plan::default() });
        check_plan("ip=10.0.2.15::10.0.2.2:24::eth0:none ip=auto6", Plan { auto6: true, ..Plan::default() });
        assert!(!Plan::default().required());
        assert!(Plan { auto6: true, ..Plan::default() }.required());
    }

    #[test]
    fn waits_only_when_needed() {
        let v4 = 1;
        let cases: &[(&str, usize, bool, Option<&str>)] = &[
            // IPv4 is up and nothing asks for IPv6: SLAAC goes on alone.
            ("", v4, false, None),
            ("ip=dhcp", v4, false, None),
            ("ip=10.0.2.15::10.0.2.2:24::eth0:none", v4, false, None),
            ("ip=auto6", 0, false, Some("ip=auto6")),
            ("ip=dhcp ip=auto6", v4, false, Some("ip=auto6")),
            ("ip=eth0:dhcp ip=eth1:dhcp6", v4, false, Some("ip=dhcp6")),
            ("ip=dhcp ip=[fd00:6::99]::[fd00:6::2]:64::eth0:none", v4, false, Some("static IPv6 ip=")),
            ("ip=dhcp rd.route=[fd00:7::]/64:[fd00:6::2]:eth0", v4, false, Some("IPv6 rd.route=")),
            ("ip=dhcp", 0, false, Some("no IPv4 address")),
            ("", v4, true, Some("an IPv6 registry or control_url")),
        ];
        for (line, v4_addresses, v6_target, expected) in cases {
            let plan = plan(&args::parse(line).unwrap());
            assert_eq!(wait_reason(&plan, *v4_addresses, *v6_target), *expected, "{line:?} v4={v4_addresses} target={v6_target}");
        }
    }

    #[test]
    fn ipv6_literals() {
        for (reference, expected) in [
            ("[fd00:6::2]:5000/app", true),
            ("[::1]/app:latest", true),
            ("http://[fd00:6::2]:8080/workflow.yaml", true),
            ("https://user:pw@[2001:db8::1]/wf", true),
            ("10.0.2.2:5000/a", false),
            ("registry.example/app@sha256:0123", false),
            ("http://10.0.2.2:8080/wf?x=[::1]", false),
            ("docker.io/library/busybox", false),
            ("", false),
        ] {
            assert_eq!(is_ipv6_literal(reference), expected, "{reference}");
        }
    }

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mac: vec![0x52, 0x54, 0, 0x12, 0x34, 0x56],
            ethernet: true,
            kind: crate::net::link::Kind::Ethernet,
            carrier: true,
            controller: None,
        }
    }

    fn seen(index: u32, address: &str, prefix_len: u8, scope: AddressScope, flags: AddressFlags) -> Seen {
        Seen { index, address: ip(address), prefix_len, scope, flags }
    }

    fn default_route(index: u32, gateway: &str) -> SeenRoute {
        SeenRoute { index: Some(index), prefix_len: 0, gateway: Some(ip(gateway)), table: MAIN_TABLE }
    }

    fn lease6() -> Lease6 {
        crate::net::dhcp6::tests::lease()
    }

    /// What QEMU's user network gives: SLAAC in fec0::/64, router fe80::2.
    fn slirp() -> Outcome {
        Outcome {
            addresses: vec![Address { interface: "eth0".into(), address: ip("fec0::5054:ff:fe12:3456"), prefix_len: 64, origin: "ra" }],
            gateways: vec![Gateway { interface: "eth0".into(), address: ip("fe80::2") }],
            ..Outcome::default()
        }
    }

    #[test]
    fn observed() {
        use AddressScope::{Link as Local, Universe};
        let none = AddressFlags::empty();
        let links = [link(2, "eth0"), link(3, "eth1")];
        let addresses = [
            seen(1, "::1", 128, AddressScope::Host, AddressFlags::Permanent),
            seen(2, "fe80::5054:ff:fe12:3456", 64, Local, AddressFlags::Permanent),
            seen(2, "fec0::5054:ff:fe12:3456", 64, AddressScope::Site, none),
            // Still in duplicate address detection, or failed it.
            seen(3, "fec0::1", 64, Universe, AddressFlags::Tentative),
            seen(3, "fec0::2", 64, Universe, AddressFlags::Dadfailed),
            // Not one of our links.
            seen(9, "2001:db8::9", 64, Universe, none),
        ];
        let routes = [
            default_route(2, "fe80::2"),
            SeenRoute { index: Some(2), prefix_len: 64, gateway: None, table: MAIN_TABLE },
            SeenRoute { table: 255, ..default_route(2, "fe80::3") },
            default_route(9, "fe80::9"),
        ];
        let outcome = observe(&addresses, &routes, &links, None);
        assert_eq!(outcome, slirp());
        assert!(complete(&outcome));
        assert!(!complete(&observe(&addresses, &[], &links, None)));
        assert!(!complete(&observe(&addresses[..2], &routes, &links, None)));

        // With DHCPv6, only the leased address completes the picture.
        assert!(!complete(&observe(&addresses, &routes, &links, Some(&lease6()))));
        let mut with_lease = addresses.to_vec();
        with_lease.push(seen(2, "2001:db8:1::100", 128, Universe, AddressFlags::Permanent));
        let outcome = observe(&with_lease, &routes, &links, Some(&lease6()));
        assert!(complete(&outcome));
        assert_eq!(outcome.addresses[1].origin, "dhcp6");
        assert_eq!(outcome.dns, vec![ip("2001:db8:1::53")]);
        assert_eq!(outcome.search, vec!["lab.example".to_owned()]);

        assert!(heard_router(&addresses, &outcome, &links));
        assert!(heard_router(&addresses[3..4], &Outcome::default(), &links));
        assert!(!heard_router(&addresses[..2], &Outcome::default(), &links));
        assert!(!heard_router(&addresses[5..], &Outcome::default(), &links));
        assert_eq!(link_local(&addresses, 2), Some(ip("fe80::5054:ff:fe12:3456")));
        assert_eq!(link_local(&addresses, 3), None);
        let tentative = [seen(3, "fe80::1", 64, Local, AddressFlags::Tentative)];
        assert_eq!(link_local(&tentative, 3), None);
    }

    fn check_resolv(base: &str, outcome: &Outcome, expected: &str) {
        assert_eq!(resolv_conf_text(base, outcome), expected, "{base:?}");
    }

    #[test]
    fn resolv_conf() {
        let v4 = "# written by iguana net-up from the DHCP lease on eth0\nnameserver 10.0.2.3\n";
        check_resolv(v4, &slirp(), v4);
        let dhcp6 = Outcome { dns: vec![ip("2001:db8:1::53"), ip("2001:db8:1::54")], search: vec!["lab.example".into()], ..slirp() };
        check_resolv(
            v4,
            &dhcp6,
            "# written by iguana net-up from the DHCP lease on eth0\nsearch lab.example\n\
             nameserver 10.0.2.3\nnameserver 2001:db8:1::53\nnameserver 2001:db8:1::54\n",
        );
        check_resolv(
            "# x\nsearch corp.example lab.example\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n",
            &dhcp6,
            "# x\nsearch corp.example lab.example\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 2001:db8:1::53\n",
        );
        check_resolv("# x\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\n", &dhcp6, "# x\nsearch lab.example\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\n");
        check_resolv(
            "# written by iguana net-up from IPv6\n",
            &dhcp6,
            "# written by iguana net-up from IPv6\nsearch lab.example\nnameserver 2001:db8:1::53\nnameserver 2001:db8:1::54\n",
        );
    }

    #[test]
    fn json_record() {
        let links = [link(2, "eth0"), link(3, "eth1")];
        let v4 = r#"{"interfaces": [{"name": "eth0", "mac": "52:54:00:12:34:56", "addresses": ["10.0.2.15/24"]},
                                    {"name": "eth1", "mac": "52:54:00:12:34:57", "addresses": []}],
                     "dhcp": {"interface": "eth0", "address": "10.0.2.15"}}"#;
        let got: serde_json::Value = serde_json::from_str(&network_json(Some(v4), &slirp(), &links).unwrap()).unwrap();
        let expected = serde_json::json!({
            "interfaces": [
                {"name": "eth0", "mac": "52:54:00:12:34:56", "addresses": ["10.0.2.15/24", "fec0::5054:ff:fe12:3456/64"]},
                {"name": "eth1", "mac": "52:54:00:12:34:57", "addresses": []},
            ],
            "dhcp": {"interface": "eth0", "address": "10.0.2.15"},
            "ipv6": {
                "addresses": [{"interface": "eth0", "address": "fec0::5054:ff:fe12:3456", "prefix_len": 64, "origin": "ra"}],
                "gateways": [{"interface": "eth0", "address": "fe80::2"}],
                "dns": [], "search": [], "dhcp6": null, "routes": [],
            },
        });
        assert_eq!(got, expected);
        // The watcher merges a later outcome into a record that has one.
        let twice = network_json(Some(&network_json(Some(v4), &slirp(), &links).unwrap()), &slirp(), &links).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&twice).unwrap(), expected);

        let fresh: serde_json::Value = serde_json::from_str(&network_json(None, &Outcome::default(), &links[..1]).unwrap()).unwrap();
        let expected = serde_json::json!({
            "interfaces": [{"name": "eth0", "mac": "52:54:00:12:34:56", "addresses": []}],
            "dhcp": null,
            "ipv6": {"addresses": [], "gateways": [], "dns": [], "search": [], "dhcp6": null, "routes": []},
        });
        assert_eq!(fresh, expected);
        assert!(network_json(Some("{not json"), &slirp(), &links).is_err());
    }

    #[test]
    fn summary() {
        assert_eq!(summary_line(&Outcome::default()), "ipv6: addr=none gateway=none dns=none");
        assert_eq!(
            summary_line(&Outcome { dns: vec![ip("2001:db8:1::53")], ..slirp() }),
            "ipv6: addr=fec0::5054:ff:fe12:3456/64%eth0(ra) gateway=fe80::2%eth0 dns=2001:db8:1::53"
        );
    }
}
