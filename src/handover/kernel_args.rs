//! The command line for kexec into the installed system's own kernel.
//!
//! Pure: the handover reads the inputs (our /proc/cmdline, the new root's
//! /etc/kernel/cmdline, the mounted root) and this file decides the text.
//! Nothing of iguana's own command line reaches the next kernel except what
//! the installed system needs to boot and be seen: `rd.iguana.*` (proxy
//! credentials included), `rd.debug`, `ip=`, module and network arguments
//! stay behind.

use nix::mount::MsFlags;

use super::{Device, Mount};
use crate::cmdline;

/// Arguments of the running command line the next kernel keeps when the
/// installed system has no /etc/kernel/cmdline: where its console is, and
/// `init=`, which iguana reads as "the new root's init" too.
const KEPT: &[&str] = &["console", "earlycon", "earlyprintk", "init"];

/// The mounted root, as the next kernel needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The value of `root=`: `UUID=...`, `PARTUUID=...` or a device path.
    pub spec: String,
    pub read_only: bool,
}

/// The next kernel's command line: the installed system's own
/// /etc/kernel/cmdline when it has one (`installed`), else `root=` and
/// `ro`/`rw` of the mounted root plus the console arguments of `current`.
pub fn build(installed: Option<&str>, current: &str, root: &Root) -> String {
    let own = installed.map(cmdline::split).filter(|args| !args.is_empty());
    let args: Vec<(String, Option<String>)> = match own {
        // The installed system's wish, minus what only iguana reads.
        Some(args) => args.into_iter().filter(|(key, _)| !key.starts_with("rd.iguana.")).collect(),
        None => {
            let mode = if root.read_only { "ro" } else { "rw" };
            let mut args = vec![("root".to_string(), Some(root.spec.clone())), (mode.to_string(), None)];
            args.extend(cmdline::split(current).into_iter().filter(|(key, _)| KEPT.contains(&key.as_str())));
            args
        }
    };
    args.iter().map(|(key, value)| join(key, value.as_deref())).collect::<Vec<_>>().join(" ")
}

/// One argument as the kernel reads it back: a value with blanks quoted.
fn join(key: &str, value: Option<&str>) -> String {
    let quoted = |s: &str| if s.contains(char::is_whitespace) { format!("\"{s}\"") } else { s.to_string() };
    match value {
        Some(value) => format!("{key}={}", quoted(value)),
        None => quoted(key),
    }
}

/// `root=` for the mounted root: `UUID=` when the next kernel has an
/// initrd to look it up, else what the kernel resolves by itself
/// (`PARTUUID=`, or the device path). `None` when the root is no block
/// device (a tmpfs root cannot be booted by a kernel).
pub fn root(mount: &Mount, devices: &[Device], has_initrd: bool) -> Option<Root> {
    let device = devices.iter().find(|d| d.path.as_os_str() == mount.source.as_str());
    let uuid = device.and_then(|d| d.fs.as_ref()?.uuid.clone()).filter(|_| has_initrd);
    let part_uuid = device.and_then(|d| d.part.as_ref()).map(|p| p.part_uuid.clone());
    let spec = match (uuid, part_uuid) {
        (Some(uuid), _) => format!("UUID={uuid}"),
        (None, Some(part_uuid)) => format!("PARTUUID={part_uuid}"),
        (None, None) if mount.source.starts_with("/dev/") => mount.source.clone(),
        (None, None) => return None,
    };
    Some(Root { spec, read_only: mount.flags.contains(MsFlags::MS_RDONLY) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::probe::{Filesystem, GptEntry};

    /// iguana's own e2e boot: QEMU's `-append`.
    const QEMU: &str = "console=ttyS0 panic=-1 rd.iguana.containers=10.0.2.2:5000/handover-own-kernel:latest \
                        rd.iguana.insecure_registries=10.0.2.2:5000 rd.iguana.reboot_timeout=0\n";
    /// A metal install over PXE: two consoles, static network, a control
    /// URL and a proxy with credentials, debug on.
    const METAL: &str = "BOOT_IMAGE=/iguana/vmlinuz initrd=iguana-initrd console=tty0 console=ttyS1,115200n8 \
                         earlyprintk=serial,ttyS1,115200 ip=10.1.0.5::10.1.0.1:255.255.255.0:m1:eth0:none rd.neednet=1 \
                         rd.iguana.control_url=https://ops:t0ken@control.lan/w.yaml?sig=abc \
                         rd.iguana.proxy=http://alice:s3cret@proxy.lan:3128 rd.iguana.no_proxy=.lan \
                         rd.iguana.containers=\"a, b\" rd.iguana.debug rd.debug init=/usr/lib/systemd/systemd \
                         virtio_net.napi_tx=1 modprobe.blacklist=floppy\n";

    fn root(spec: &str, read_only: bool) -> Root {
        Root { spec: spec.into(), read_only }
    }

    #[test]
    fn command_lines() {
        let uuid = root("UUID=4f1a7c3e-9a0b-4c7e-8d2f-1b2c3d4e5f60", false);
        let cases: Vec<(Option<&str>, &str, Root, &str)> = vec![
            (None, QEMU, uuid.clone(), "root=UUID=4f1a7c3e-9a0b-4c7e-8d2f-1b2c3d4e5f60 rw console=ttyS0"),
            (
                None,
                METAL,
                root("PARTUUID=0a1b2c3d-01", true),
                "root=PARTUUID=0a1b2c3d-01 ro console=tty0 console=ttyS1,115200n8 earlyprintk=serial,ttyS1,115200 init=/usr/lib/systemd/systemd",
            ),
            // The installed system's own file wins, as it is; only
            // iguana's arguments are taken out of it.
            (Some("root=UUID=abcd rw quiet splash\n"), METAL, uuid.clone(), "root=UUID=abcd rw quiet splash"),
            (
                Some("root=LABEL=root\nrw acpi_osi=\"Windows 2020\" rd.iguana.debug rd.debug\n"),
                QEMU,
                uuid.clone(),
                "root=LABEL=root rw acpi_osi=\"Windows 2020\" rd.debug",
            ),
            // An empty file says nothing: fall back.
            (Some(" \n"), QEMU, root("/dev/vda1", false), "root=/dev/vda1 rw console=ttyS0"),
            (None, "", root("/dev/sda2", true), "root=/dev/sda2 ro"),
        ];
        for (installed, current, root, want) in cases {
            let got = build(installed, current, &root);
            assert_eq!(got, want, "{installed:?} {current:?}");
            for secret in ["rd.iguana", "t0ken", "s3cret", "sig="] {
                assert!(!got.contains(secret), "{secret} in {got}");
            }
        }
    }

    fn device(path: &str, uuid: Option<&str>, part_uuid: Option<&str>) -> Device {
        Device {
            path: path.into(),
            fs: Some(Filesystem { fstype: "ext4".into(), uuid: uuid.map(str::to_string), label: None }),
            part: part_uuid.map(|p| GptEntry { number: 1, type_guid: String::new(), part_uuid: p.into(), name: String::new() }),
        }
    }

    fn mount(source: &str, flags: MsFlags) -> Mount {
        Mount { source: source.into(), target: "/sysroot".into(), fstype: "ext4".into(), flags, data: String::new() }
    }

    #[test]
    fn root_specs() {
        let devices = [device("/dev/vda1", Some("1234-abcd"), Some("0a-01")), device("/dev/vdb", None, None)];
        let cases = [
            (mount("/dev/vda1", MsFlags::MS_NOATIME), true, Some(root("UUID=1234-abcd", false))),
            // No initrd: the kernel knows PARTUUID= but not UUID=.
            (mount("/dev/vda1", MsFlags::MS_RDONLY), false, Some(root("PARTUUID=0a-01", true))),
            (mount("/dev/vdb", MsFlags::empty()), true, Some(root("/dev/vdb", false))),
            (mount("/dev/mapper/root", MsFlags::empty()), true, Some(root("/dev/mapper/root", false))),
            (mount("tmpfs", MsFlags::empty()), true, None),
        ];
        for (m, has_initrd, want) in cases {
            assert_eq!(super::root(&m, &devices, has_initrd), want, "{m} initrd={has_initrd}");
        }
    }
}
