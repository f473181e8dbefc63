// SPDX-License-Identifier: Apache-2.0

mod bpf;
mod client;
mod config;
mod discovery;
mod lease;
mod msg;
mod option;
mod proiscuous;
mod rebind;
mod reboot;
mod renew;
mod request;
mod socket;
mod state;
mod time;

pub use self::{
    client::DhcpV4Client,
    config::DhcpV4Config,
    lease::DhcpV4Lease,
    msg::DhcpV4MessageType,
    option::{
        DhcpV4ClasslessRoute, DhcpV4Option, DhcpV4OptionCode,
        DhcpV4OptionUnknown,
    },
    state::DhcpV4State,
};
pub(crate) use self::{
    client::InitMode, msg::DhcpV4Message, socket::DhcpV4Socket,
};
