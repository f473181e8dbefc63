//! Carries out the link part of the plan: `ifname=` renames, `bond=` and
//! `vlan=` links, then every planned link up. Renames go first because the
//! other arguments use the new names; slaves are enslaved while down, as the
//! bonding driver requires.

use rtnetlink::Handle;
use tracing::{debug, info, warn};

use super::link;
use super::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("list network links")]
    List(#[source] rtnetlink::Error),
    #[error("link {iface} not found after creating it")]
    Missing { iface: String },
    #[error("set link {iface} down")]
    Down {
        iface: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("delete the empty bond {iface} the driver made")]
    Delete {
        iface: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("set link {iface} up")]
    Up {
        iface: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("rename link {from} to {to} (ifname=)")]
    Rename {
        from: String,
        to: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("create bond {bond} (mode {mode})")]
    AddBond {
        bond: String,
        mode: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("enslave {slave} to bond {bond}")]
    Enslave {
        bond: String,
        slave: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("set MTU {mtu} on bond {bond}")]
    Mtu {
        bond: String,
        mtu: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("create VLAN {vlan} (id {id} on {parent})")]
    AddVlan {
        vlan: String,
        id: u16,
        parent: String,
        #[source]
        source: rtnetlink::Error,
    },
}

pub async fn create(handle: &Handle, plan: &Plan, policy: &crate::modules::Policy) -> Result<(), Error> {
    if !plan.bonds.is_empty() {
        load_driver("bonding", policy);
    }
    if !plan.vlans.is_empty() {
        load_driver("8021q", policy);
    }
    // Through a temporary name, so two links can swap names.
    for rename in &plan.renames {
        let down = |source| Error::Down { iface: rename.from.clone(), source };
        link::set_down(handle, rename.index).await.map_err(down)?;
        let temporary = format!("igtmp{}", rename.index);
        link::rename(handle, rename.index, &temporary).await.map_err(|source| Error::Rename {
            from: rename.from.clone(),
            to: temporary.clone(),
            source,
        })?;
    }
    for rename in &plan.renames {
        link::rename(handle, rename.index, &rename.to).await.map_err(|source| Error::Rename {
            from: rename.from.clone(),
            to: rename.to.clone(),
            source,
        })?;
        info!(from = %rename.from, to = %rename.to, "renamed link");
    }
    for bond in &plan.bonds {
        // Loading `bonding` creates an empty bond0 (max_bonds=1): replace
        // it, so the mode and options are ours.
        let existing = link::list(handle).await.map_err(Error::List)?;
        if let Some(stale) = existing.iter().find(|l| l.name == bond.name && l.kind == link::Kind::Bond) {
            link::delete(handle, stale.index)
                .await
                .map_err(|source| Error::Delete { iface: bond.name.clone(), source })?;
        }
        link::add_bond(handle, bond).await.map_err(|source| Error::AddBond {
            bond: bond.name.clone(),
            mode: bond.mode.clone(),
            source,
        })?;
        let index = index_of(handle, &bond.name).await?;
        for slave in &bond.slaves {
            let slave_index = index_of(handle, slave).await?;
            link::set_down(handle, slave_index)
                .await
                .map_err(|source| Error::Down { iface: slave.clone(), source })?;
            link::enslave(handle, slave_index, index).await.map_err(|source| Error::Enslave {
                bond: bond.name.clone(),
                slave: slave.clone(),
                source,
            })?;
        }
        if let Some(mtu) = bond.mtu {
            link::set_mtu(handle, index, mtu)
                .await
                .map_err(|source| Error::Mtu { bond: bond.name.clone(), mtu, source })?;
        }
        info!(bond = %bond.name, mode = %bond.mode, slaves = %bond.slaves.join(","), "created bond");
    }
    for vlan in &plan.vlans {
        let parent = index_of(handle, &vlan.phys).await?;
        link::add_vlan(handle, &vlan.name, parent, vlan.id).await.map_err(|source| Error::AddVlan {
            vlan: vlan.name.clone(),
            id: vlan.id,
            parent: vlan.phys.clone(),
            source,
        })?;
        info!(vlan = %vlan.name, id = vlan.id, parent = %vlan.phys, "created VLAN");
    }
    for name in &plan.up {
        let index = index_of(handle, name).await?;
        link::set_up(handle, index)
            .await
            .map_err(|source| Error::Up { iface: name.clone(), source })?;
    }
    Ok(())
}

/// The kernel asks modprobe for a missing link type, and the initramfs has
/// none: load the driver ourselves. A failure is only logged: the driver may
/// be built in, and if it is missing creating the link names the problem.
fn load_driver(name: &str, policy: &crate::modules::Policy) {
    let loaded = crate::modules::kernel_modules_dir()
        .and_then(|dir| crate::modules::load_named(&dir, &[name], policy));
    match loaded {
        Ok(report) => debug!(module = name, ?report, "driver for net-up"),
        Err(err) => warn!(module = name, %err, "could not load driver"),
    }
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, Error> {
    let links = link::list(handle).await.map_err(Error::List)?;
    links
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| Error::Missing { iface: name.to_owned() })
}
