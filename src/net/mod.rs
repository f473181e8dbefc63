//! Phase "network": links up, DHCPv4, address + default route via netlink, resolv.conf (owned by the net/modules work).

/// Placeholder until the network work lands.
pub fn cli_net_up(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("iguana net-up: not built yet")
}
