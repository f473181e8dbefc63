//! Hotplug: drivers for devices that appear after coldplug (a NIC whose
//! firmware is slow, a disk attached later), the job udev's `kmod` builtin
//! does on a normal system.
//!
//! PID 1 opens the kernel's uevent socket *before* coldplug, so no event
//! falls between the sysfs scan and the listening, and after coldplug hands
//! it to a re-executed child, `iguana hotplug --fd N`, that loads the
//! drivers each `ACTION=add` event's `MODALIAS` asks for. A child rather
//! than PID 1's own loops: PID 1 spends the boot blocked in waits for
//! helper children and containers (libcontainer), which is exactly when late
//! devices show up, and it must stay single-threaded. The child runs until
//! the handover, which kills every process but PID 1. During coldplug PID
//! 1 reads the same socket itself ([`Listener::drain`]): the devices its
//! loads made appear, so its passes after the first need no sysfs scan.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use tracing::{debug, info, warn};

use super::{kernel_modules_dir, read_index, sysfs, uevent, KernelLoader, Session};
use super::index::Index;

/// The kernel's multicast group for uevents (udev's own messages use 2).
const KERNEL_GROUP: u32 = 1;

/// Room for the burst of events coldplug itself causes (a few per module
/// and device) while nobody reads; past it the kernel drops events and we
/// rescan sysfs instead.
const RECEIVE_BUFFER: usize = 4 << 20;
/// One [`Listener::drain`] reads at most this many messages (a boot's
/// coldplug causes tens); past it the pass scans sysfs instead, so a flood
/// of messages (any process may send to the socket; only the kernel's
/// count) can neither hold coldplug nor grow PID 1's heap.
const DRAIN_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT)")]
    Socket(#[source] Errno),
    #[error("bind uevent socket to group {group}")]
    Bind {
        group: u32,
        #[source]
        source: Errno,
    },
    #[error("hand the uevent socket (fd {fd}) to iguana hotplug")]
    Inherit {
        fd: i32,
        #[source]
        source: Errno,
    },
    #[error("start iguana hotplug")]
    Spawn(#[source] std::io::Error),
}

/// The uevent socket, opened by PID 1 before coldplug.
pub struct Listener(OwnedFd);

impl Listener {
    pub fn open() -> Result<Listener, Error> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(Error::Socket)?;
        if let Err(err) = setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER) {
            debug!(%err, "SO_RCVBUFFORCE refused, trying SO_RCVBUF");
            let _ = setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))
            .map_err(|source| Error::Bind { group: KERNEL_GROUP, source })?;
        Ok(Listener(fd))
    }

    /// The modaliases of the `add` uevents the kernel queued since the last
    /// call, read without waiting, for coldplug's passes after the first
    /// (a pass then needs no scan of sysfs). `None` when the kernel dropped
    /// events (the queue overflowed) or reading failed: only a scan is sure
    /// then. What is read here is gone for the hotplug child, which starts
    /// after coldplug's last pass and reads what came after it. Messages
    /// are the kernel's own, parsed as the child parses them (the same
    /// `MODALIAS=` a sysfs scan reads from each device's `uevent` file);
    /// the queue is bounded by the socket's receive buffer.
    pub fn drain(&self) -> Option<BTreeSet<String>> {
        use nix::sys::socket::{recvmsg, MsgFlags};
        let mut buf = vec![0u8; uevent::MAX_LEN + 1];
        let mut modaliases = BTreeSet::new();
        for _ in 0..DRAIN_MAX {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let received = recvmsg::<NetlinkAddr>(self.0.as_raw_fd(), &mut iov, None, MsgFlags::MSG_DONTWAIT)
                .map(|msg| (msg.bytes, msg.address.map_or(u32::MAX, |a| a.pid()), msg.flags.contains(MsgFlags::MSG_TRUNC)));
            match received {
                Ok((len, 0, false)) => {
                    let event = buf.get(..len).map(uevent::parse);
                    if let Some(Ok(event)) = event {
                        modaliases.extend(event.wants_driver().map(str::to_owned));
                    }
                }
                // Not the kernel's, or longer than any uevent: not a device.
                Ok(_) => {}
                Err(Errno::EAGAIN) => return Some(modaliases),
                Err(Errno::EINTR) => {}
                Err(errno) => {
                    debug!(%errno, "uevents not read (ENOBUFS: some were lost); coldplug scans sysfs");
                    return None;
                }
            }
        }
        debug!(max = DRAIN_MAX, "more uevents queued than one drain reads; coldplug scans sysfs");
        None
    }

    /// Starts `iguana hotplug` with this socket; PID 1 keeps no copy. PID 1
    /// is single-threaded, so no other child can inherit the descriptor
    /// while its close-on-exec flag is off.
    pub fn start_child(self) -> Result<(), Error> {
        let fd = self.0.as_raw_fd();
        let inherit = |flags| {
            fcntl(self.0.as_fd(), FcntlArg::F_SETFD(flags)).map(drop).map_err(|source| Error::Inherit { fd, source })
        };
        inherit(FdFlag::empty())?;
        let spawned = crate::child::spawn_background(
            Command::new("/proc/self/exe")
                .args(["hotplug", "--fd", &fd.to_string()])
                .env("IGUANA_CHILD", "1")
                .stdin(Stdio::null()),
        );
        inherit(FdFlag::FD_CLOEXEC)?;
        spawned.map(drop).map_err(Error::Spawn)
    }
}

/// `iguana hotplug --fd N`: loads drivers for added devices, forever.
pub fn cli(args: &[String]) -> anyhow::Result<()> {
    let fd = match args {
        [flag, fd] if flag == "--fd" => fd.parse().with_context(|| format!("--fd {fd:?}"))?,
        _ => bail!("usage: iguana hotplug --fd FD (started by PID 1)"),
    };
    let socket = crate::sys::adopt_inherited_fd(fd)?;
    let raw = crate::cmdline::read_proc_cmdline().context("read /proc/cmdline")?;
    // PID 1 stopped the boot on a bad blacklist before starting us.
    let policy = super::args::parse(&raw)?;
    let dir = kernel_modules_dir()?;
    let index = read_index(&dir)?;
    let mut loader = KernelLoader;
    let mut hotplug = Hotplug { session: Session::new(&index, &dir, &mut loader, &policy) };
    info!(fd, "hotplug: listening for uevents");
    // Started at nice 19 (its start is not on the boot's path); a late
    // device's driver is, when a job waits for it.
    crate::child::normal_priority();
    let mut buf = vec![0u8; uevent::MAX_LEN + 1];
    loop {
        match recvfrom::<NetlinkAddr>(socket.as_raw_fd(), &mut buf) {
            Ok((len, sender)) => {
                let sender = sender.map_or(u32::MAX, |addr| addr.pid());
                hotplug.handle(&buf[..len.min(buf.len())], sender);
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ENOBUFS) => {
                warn!("uevents were lost (receive queue full), rescanning /sys");
                hotplug.rescan(std::path::Path::new("/sys"));
            }
            Err(errno) => bail!("recvfrom(uevent socket {fd}): {errno}"),
        }
    }
}

struct Hotplug<'a> {
    session: Session<'a>,
}

impl Hotplug<'_> {
    /// One message from the socket; `sender` is its netlink port id, 0 for
    /// the kernel. Anything else than a kernel uevent is dropped.
    fn handle(&mut self, message: &[u8], sender: u32) {
        if sender != 0 {
            debug!(sender, "uevent not from the kernel, ignored");
            return;
        }
        let event = match uevent::parse(message) {
            Ok(event) => event,
            Err(err) => return debug!(%err, len = message.len(), "uevent ignored"),
        };
        let Some(modalias) = event.wants_driver() else { return };
        let index: &Index = self.session.index;
        let before = self.session.report.loaded.len();
        for module in index.modules_for(modalias) {
            self.session.ensure(module, false);
        }
        let loaded = &self.session.report.loaded[before..];
        if !loaded.is_empty() {
            info!(devpath = %event.devpath, modalias, modules = %loaded.join(" "), "hotplug: drivers loaded");
        }
    }

    /// After lost events: what coldplug does, once.
    fn rescan(&mut self, sys_dir: &std::path::Path) {
        let index: &Index = self.session.index;
        for modalias in sysfs::modaliases(sys_dir) {
            for module in index.modules_for(&modalias) {
                self.session.ensure(module, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{LoadError, Loaded, Loader};
    use super::*;

    const ALIAS: &str = "\
alias virtio:d00000008v* virtio_scsi
alias scsi:t-0x00* sd_mod
alias virtio:d00000002v* virtio_blk
";
    const DEP: &str = "\
kernel/drivers/scsi/virtio_scsi.ko.xz: kernel/drivers/virtio/virtio.ko.zst
kernel/drivers/scsi/sd_mod.ko.zst:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko.zst
kernel/drivers/virtio/virtio.ko.zst:
";

    #[derive(Default)]
    struct Recorder(Vec<(String, PathBuf, String)>);

    impl Loader for Recorder {
        fn load(&mut self, name: &str, path: &Path, params: &str) -> Result<Loaded, LoadError> {
            self.0.push((name.to_owned(), path.to_owned(), params.to_owned()));
            Ok(Loaded::New)
        }
    }

    fn event(action: &str, devpath: &str, modalias: &str) -> Vec<u8> {
        format!("{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0MODALIAS={modalias}\0SEQNUM=7\0").into_bytes()
    }

    #[test]
    fn loads_drivers_for_added_devices_only() {
        let index = Index::parse(ALIAS, DEP, "");
        let policy = super::super::args::parse("rd.driver.blacklist=virtio_blk sd-mod.x=1").unwrap();
        let dir = PathBuf::from("/lib/modules/6.1.0-56-cloud-amd64");
        let mut rec = Recorder::default();
        let mut hotplug = Hotplug { session: Session::new(&index, &dir, &mut rec, &policy) };
        let scsi = event("add", "/devices/pci0000:00/0000:00:05.0/virtio3", "virtio:d00000008v00001AF4");
        let inputs: Vec<(Vec<u8>, u32)> = vec![
            (b"garbage without a NUL".to_vec(), 0),
            (b"libudev\0\xfe\xed".to_vec(), 0),
            (vec![0xff; 100_000], 0),
            // From a process, not the kernel.
            (scsi.clone(), 4242),
            (event("remove", "/devices/x", "virtio:d00000008v00001AF4"), 0),
            (scsi.clone(), 0),
            (scsi, 0),
            (event("add", "/devices/virtio4", "virtio:d00000002v00001AF4"), 0),
            (event("add", "/devices/target0:0:0/0:0:0:0", "scsi:t-0x00"), 0),
            (event("add", "/devices/platform/x", "platform:unknown"), 0),
        ];
        for (message, sender) in &inputs {
            hotplug.handle(message, *sender);
        }
        assert_eq!(hotplug.session.report.blacklisted, ["virtio_blk"]);
        drop(hotplug);
        let calls: Vec<(&str, String, &str)> = rec
            .0
            .iter()
            .map(|(n, p, params)| (n.as_str(), p.strip_prefix(&dir).unwrap().display().to_string(), params.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("virtio", "kernel/drivers/virtio/virtio.ko.zst".to_owned(), ""),
                ("virtio_scsi", "kernel/drivers/scsi/virtio_scsi.ko.xz".to_owned(), ""),
                ("sd_mod", "kernel/drivers/scsi/sd_mod.ko.zst".to_owned(), "x=1"),
            ]
        );
    }
}
