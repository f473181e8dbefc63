//! Phase "network": links up, DHCPv4, address + default route via netlink, resolv.conf (owned by the net/modules work).
