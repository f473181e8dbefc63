//! DHCPv4 on several links at once; the first lease wins.
//!
//! The protocol is mozim's (DISCOVER/OFFER/REQUEST/ACK over an AF_PACKET
//! socket, with RFC 2131 retransmission). We give it the interface index and
//! MAC we already got from netlink, so its own netlink lookup is never used,
//! and we stop at the first lease: net-up is a one-shot process and nothing
//! renews the lease afterwards.

use std::pin::Pin;

use futures_util::stream::FuturesUnordered;
use futures_util::{Future, StreamExt};
use mozim::{DhcpError, DhcpV4Client, DhcpV4Config, DhcpV4Lease, DhcpV4State};
use tracing::{debug, warn};

use super::link::Link;

/// A lease and the link it came from.
pub struct Acquired {
    pub link: Link,
    pub lease: DhcpV4Lease,
}

/// Why no link got a lease (other than running out of time, which the caller
/// enforces around this future).
#[derive(Debug)]
pub struct AllFailed(pub Vec<(String, DhcpError)>);

type Attempt = Pin<Box<dyn Future<Output = Result<Acquired, (String, DhcpError)>>>>;

/// Runs DHCP on every link concurrently and returns the first lease. The
/// other attempts are dropped, which closes their sockets.
pub async fn first_lease(links: &[Link]) -> Result<Acquired, AllFailed> {
    let mut attempts: FuturesUnordered<Attempt> = links
        .iter()
        .map(|link| {
            let link = link.clone();
            Box::pin(async move {
                match acquire(&link).await {
                    Ok(lease) => Ok(Acquired { link, lease }),
                    Err(err) => Err((link.name, err)),
                }
            }) as Attempt
        })
        .collect();
    let mut failures = Vec::new();
    while let Some(result) = attempts.next().await {
        match result {
            Ok(acquired) => return Ok(acquired),
            Err((iface, err)) => {
                warn!(%iface, %err, "DHCP failed");
                failures.push((iface, err));
            }
        }
    }
    Err(AllFailed(failures))
}

async fn acquire(link: &Link) -> Result<DhcpV4Lease, DhcpError> {
    let mut config = DhcpV4Config::new(&link.name);
    config
        .set_iface_index(link.index)
        .set_iface_mac_raw(&link.mac)?
        .use_mac_as_client_id();
    let mut client = DhcpV4Client::init(config, None).await?;
    loop {
        match client.run().await? {
            DhcpV4State::Done(lease) => return Ok(*lease),
            state => debug!(iface = %link.name, %state, "DHCP"),
        }
    }
}
