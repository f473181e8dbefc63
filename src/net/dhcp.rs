//! DHCPv4 on several links at once, each once it has a carrier.
//!
//! The protocol is mozim's (DISCOVER/OFFER/REQUEST/ACK over an AF_PACKET
//! socket, with RFC 2131 retransmission). We give it the interface index and
//! MAC we already got from netlink, so its own netlink lookup is never used.
//! net-up is a one-shot process: nothing renews the leases afterwards.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures_util::stream::FuturesUnordered;
use futures_util::{Future, StreamExt};
use mozim::{DhcpError, DhcpV4Client, DhcpV4Config, DhcpV4Lease, DhcpV4State};
use rtnetlink::Handle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::link::Link;

/// A lease and the link it came from.
pub struct Acquired {
    pub link: Link,
    pub lease: DhcpV4Lease,
    /// When the lease came, by the machine's clock.
    pub at: SystemTime,
}

/// What DHCP on several links produced by the deadline.
#[derive(Default)]
pub struct Outcome {
    /// In the order they came.
    pub leases: Vec<Acquired>,
    pub failures: Vec<(String, DhcpError)>,
    /// Links that never showed a carrier.
    pub no_carrier: Vec<String>,
}

type Attempt = Pin<Box<dyn Future<Output = Result<Acquired, (String, Option<DhcpError>)>>>>;

/// How often a link without carrier is looked at again.
const CARRIER_POLL: Duration = Duration::from_millis(100);

/// Runs DHCP on every link concurrently, each as soon as it has a carrier,
/// until `deadline`. After the first lease the others get `grace` more to
/// answer: every NIC with a DHCP server should end up configured, but a link
/// without a cable or a server must not hold up the boot.
pub async fn leases(handle: &Handle, links: &[Link], deadline: Instant, grace: Duration) -> Outcome {
    let mut attempts: FuturesUnordered<Attempt> = links
        .iter()
        .map(|link| {
            let link = link.clone();
            let handle = handle.clone();
            Box::pin(async move {
                if !wait_for_carrier(&handle, &link).await {
                    return Err((link.name, None));
                }
                match acquire(&link).await {
                    Ok(lease) => Ok(Acquired { link, lease, at: SystemTime::now() }),
                    Err(err) => Err((link.name, Some(err))),
                }
            }) as Attempt
        })
        .collect();
    let mut outcome = Outcome::default();
    let mut until = deadline;
    while let Ok(Some(result)) = tokio::time::timeout_at(until, attempts.next()).await {
        match result {
            Ok(acquired) => {
                if outcome.leases.is_empty() {
                    until = until.min(Instant::now() + grace);
                }
                outcome.leases.push(acquired);
            }
            Err((iface, Some(err))) => {
                warn!(%iface, %err, "DHCP failed");
                outcome.failures.push((iface, err));
            }
            Err((iface, None)) => outcome.no_carrier.push(iface),
        }
    }
    let done: Vec<&str> = outcome
        .leases
        .iter()
        .map(|a| a.link.name.as_str())
        .chain(outcome.failures.iter().map(|(name, _)| name.as_str()))
        .collect();
    for link in links.iter().filter(|l| !done.contains(&l.name.as_str())) {
        let carrier = super::link::get(handle, link.index).await.is_ok_and(|now| now.carrier);
        if !carrier && !outcome.no_carrier.contains(&link.name) {
            outcome.no_carrier.push(link.name.clone());
        }
    }
    outcome
}

/// The DHCP client's settings for `link`: its MAC as client id, and the
/// first DISCOVER at once, as the kernel's `ip=dhcp` and udhcpc send it
/// (mozim waits a random 0-200 ms by default, RFC 2131 4.4.1, which was on
/// every boot's critical path). Retries keep RFC 2131's randomized backoff.
fn client_config(link: &Link) -> Result<DhcpV4Config, DhcpError> {
    let mut config = DhcpV4Config::new(&link.name);
    config
        .set_iface_index(link.index)
        .set_iface_mac_raw(&link.mac)?
        .use_mac_as_client_id()
        .set_start_delay_max_ms(0);
    Ok(config)
}

/// Polls the link until it reports a carrier; false if the link is gone.
async fn wait_for_carrier(handle: &Handle, link: &Link) -> bool {
    let mut logged = false;
    loop {
        match super::link::get(handle, link.index).await {
            Ok(now) if now.carrier => return true,
            Ok(_) if !logged => {
                debug!(iface = %link.name, "waiting for carrier");
                logged = true;
            }
            Ok(_) => {}
            Err(err) => {
                warn!(iface = %link.name, %err, "link vanished while waiting for carrier");
                return false;
            }
        }
        tokio::time::sleep(CARRIER_POLL).await;
    }
}
async fn acquire(link: &Link) -> Result<DhcpV4Lease, DhcpError> {
    let mut client = DhcpV4Client::init(client_config(link)?, None).await?;
    loop {
        match client.run().await? {
            DhcpV4State::Done(lease) => return Ok(*lease),
            state => debug!(iface = %link.name, %state, "DHCP"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::link::Kind;

    #[test]
    fn the_first_discover_is_not_held_back() {
        let link = Link { index: 2, name: "eth0".into(), mac: vec![0x52, 0x54, 0, 0x12, 0x34, 0x56], ethernet: true, kind: Kind::Ethernet, carrier: true, controller: None };
        let config = client_config(&link).unwrap();
        assert_eq!(config.start_delay_max_ms, 0, "mozim's random wait before the first DISCOVER is off");
        assert_eq!((config.iface_name.as_str(), config.iface_index), ("eth0", 2));
        // Upstream's default, kept for anyone else using the vendored crate.
        assert_eq!(DhcpV4Config::new("eth0").start_delay_max_ms, 200);
    }
}
