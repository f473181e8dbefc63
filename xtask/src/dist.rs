//! `cargo xtask dist [--dracut] [--uki [--cmdline ARGS] [--sign KEY CERT]]`:
//! the boot artifacts a PXE server or a reservation system needs, in
//! `target/dist/`:
//!
//! - `vmlinuz`, `iguana-initrd`: the pinned test kernel and the initrd
//!   (`cargo xtask initrd`'s, or dracut's with `--dracut`);
//! - `ipxe.script`: boots the pair, with `${registry}`-style placeholders
//!   for the site to fill in (iPXE expands its own variables);
//! - `kernel-args.txt`: every argument iguana reads, default and example;
//! - `iguana.efi` with `--uki`: kernel, initrd and command line in one
//!   unified kernel image (`uki`), signed for Secure Boot with `--sign`;
//! - `SHA256SUMS`: `sha256sum -c` format, for the three files above and
//!   the script (and `iguana.efi`).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cmd_output, dracut, flag_value, initrd, target_dir, tools, uki};

/// Files summed in SHA256SUMS, in this order.
pub const SUMMED: &[&str] = &["vmlinuz", "iguana-initrd", "ipxe.script", "kernel-args.txt"];

const IPXE_SCRIPT: &str = r#"#!ipxe
# iguana: boot the kernel and initrd next to this script.
# Set these before chaining (or replace them here):
#   ${base-url}   where vmlinuz and iguana-initrd are served, e.g. http://pxe.lan/iguana
#   ${registry}   the registry the containers come from, e.g. registry.lan:5000
#   ${image}      the image to run, e.g. ${registry}/installer:latest
#   ${extra-args} more kernel arguments, if any, e.g.
#                 rd.iguana.insecure_registries=${registry} for a lab registry
#                 without TLS, rd.iguana.registry_mirror=, rd.iguana.report_url=
# Use rd.iguana.control_url=${base-url}/workflow.yaml instead of
# rd.iguana.containers to run a workflow file; see kernel-args.txt.
kernel ${base-url}/vmlinuz initrd=iguana-initrd console=tty0 console=ttyS0,115200 rd.iguana.containers=${image} ${extra-args}
initrd ${base-url}/iguana-initrd
boot
"#;

/// `(argument, default, example)`, as in README's table and src/cmdline.rs.
#[rustfmt::skip]
const KERNEL_ARGS: &[(&str, &str, &str)] = &[
    ("rd.iguana.containers=IMG[,IMG...]", "-", "rd.iguana.containers=registry.lan:5000/installer:latest"),
    ("rd.iguana.control_url=URL", "-", "rd.iguana.control_url=https://pxe.lan/iguana/workflow.yaml"),
    ("rd.iguana.insecure_registries=HOST:PORT[,...]", "-", "rd.iguana.insecure_registries=registry.lan:5000"),
    ("rd.iguana.registry_mirror=REGISTRY=MIRROR[,...]", "-", "rd.iguana.registry_mirror=docker.io=mirror.lan:5000"),
    ("rd.iguana.ca=/path/ca.pem", "-", "rd.iguana.ca=/etc/iguana/ca.pem"),
    ("rd.iguana.net_timeout=SECS", "60", "rd.iguana.net_timeout=120"),
    ("rd.iguana.ntp=SERVER[,SERVER...]", "DHCP option 42", "rd.iguana.ntp=ntp.lan,192.168.1.1:123"),
    ("rd.iguana.proxy=http://[user:pass@]HOST[:PORT]", "-", "rd.iguana.proxy=http://proxy.lan:3128"),
    ("rd.iguana.no_proxy=ITEM[,...]", "-", "rd.iguana.no_proxy=.lan,10.0.0.0/8"),
    ("rd.iguana.reboot_timeout=SECS", "10", "rd.iguana.reboot_timeout=30"),
    ("rd.iguana.tmpfs_size=MOUNT=SIZE[,...] (run, iguana, tmp)", "run=50%,iguana=20%,tmp=10%", "rd.iguana.tmpfs_size=run=75%,tmp=64m"),
    ("rd.iguana.extensions=SRC[,SRC...] (URL of NAME.raw, /dev/..., LABEL=..., oci:REF)", "-", "rd.iguana.extensions=https://pxe.lan/ext/pvscsi.raw"),
    ("rd.iguana.extensions_required=1", "0", "rd.iguana.extensions_required=1"),
    ("rd.iguana.extensions_wait=SECONDS (for each /dev/... or LABEL= extension, after coldplug)", "10", "rd.iguana.extensions_wait=30"),
    ("rd.iguana.report_url=URL (status events, CloudEvents)", "-", "rd.iguana.report_url=https://events.lan/iguana"),
    ("rd.iguana.report_token=TOKEN (prefer /etc/iguana/report-token in the initrd)", "-", "rd.iguana.report_token=s3cr3t"),
    ("rd.iguana.debug", "off", "rd.iguana.debug"),
    ("rd.debug", "off", "rd.debug"),
    ("init=/path", "/sbin/init", "init=/usr/lib/systemd/systemd"),
    ("ip=<client>::<gw>:<mask>:<host>:<iface>:none[:<dns1>[:<dns2>]] (static IPv4, applied)", "DHCPv4 on every Ethernet link", "ip=192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none:192.168.1.1"),
    ("nameserver=IP (repeatable)", "-", "nameserver=192.168.1.1"),
    ("ip=dhcp|dhcp6|<iface>:dhcp, ifname=, vlan=, bond=, rd.route= (checked, not applied yet)", "-", "vlan=eth0.100:eth0"),
    ("rd.neednet=1", "-", "rd.neednet=1"),
    ("rd.driver.blacklist=MOD[,MOD...] (repeatable; also modprobe.blacklist=)", "-", "rd.driver.blacklist=nouveau"),
    ("<module>.<param>=<value> (for modules iguana loads)", "-", "virtio_net.napi_tx=0"),
];

/// The unified kernel image's file name in the dist directory.
const UKI: &str = "iguana.efi";

pub fn main(args: &[String]) -> Result<()> {
    let mut use_dracut = false;
    let mut make_uki = false;
    let mut cmdline: Option<String> = None;
    let mut sign: Option<(String, String)> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dracut" => use_dracut = true,
            "--uki" => make_uki = true,
            "--cmdline" => cmdline = Some(flag_value(&mut args, arg)?.to_owned()),
            "--sign" => {
                let key = flag_value(&mut args, arg)?.to_owned();
                let cert = flag_value(&mut args, "--sign KEY")?.to_owned();
                sign = Some((key, cert));
            }
            other => bail!("dist: unknown argument {other:?}"),
        }
    }
    if !make_uki && (cmdline.is_some() || sign.is_some()) {
        bail!("dist: --cmdline and --sign are for the unified kernel image: add --uki");
    }
    let dir = build(use_dracut)?;
    let mut summed = SUMMED.to_vec();
    if make_uki {
        let efi = dir.join(UKI);
        let cmdline = cmdline.as_deref().unwrap_or(uki::DEFAULT_CMDLINE);
        uki::build(&dir.join("vmlinuz"), &dir.join("iguana-initrd"), cmdline, &efi)?;
        if let Some((key, cert)) = &sign {
            uki::sign(&efi, Path::new(key), Path::new(cert))?;
        }
        summed.push(UKI);
        write_sums(&dir, &summed)?;
    }
    for name in summed.iter().chain(&["SHA256SUMS"]) {
        println!("{}", dir.join(name).display());
    }
    Ok(())
}

/// Builds the artifacts into `target/dist/` (the e2e `pxe` scenario boots
/// them); returns that directory.
pub fn build(use_dracut: bool) -> Result<std::path::PathBuf> {
    tools::ensure_tools()?;
    let (vmlinuz, initrd) = if use_dracut {
        let built = dracut::build()?;
        (built.kernel.vmlinuz, built.initrd)
    } else {
        let built = initrd::build(&initrd::Options::default())?;
        (built.kernel.vmlinuz, built.initrd)
    };
    let dir = target_dir().join("dist");
    write(&dir, &vmlinuz, &initrd)?;
    Ok(dir)
}

/// Fills `dir` with the artifacts and their SHA256SUMS.
fn write(dir: &Path, vmlinuz: &Path, initrd: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    copy(vmlinuz, &dir.join("vmlinuz"))?;
    copy(initrd, &dir.join("iguana-initrd"))?;
    write_file(&dir.join("ipxe.script"), IPXE_SCRIPT)?;
    write_file(&dir.join("kernel-args.txt"), &kernel_args())?;
    write_sums(dir, SUMMED)
}

fn kernel_args() -> String {
    let mut text = String::from(
        "# Kernel arguments iguana reads (README.md, \"Kernel arguments\").\n\
         # argument | default | example\n",
    );
    for (arg, default, example) in KERNEL_ARGS {
        text.push_str(&format!("{arg} | {default} | {example}\n"));
    }
    text
}

/// Writes `dir/SHA256SUMS` for `names` with `sha256sum`, run in `dir` so the
/// file names in it are relative.
fn write_sums(dir: &Path, names: &[&str]) -> Result<()> {
    let sums = cmd_output(Command::new("sha256sum").args(names).current_dir(dir))?;
    write_file(&dir.join("SHA256SUMS"), &sums)
}

fn copy(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst)
        .map(drop)
        .with_context(|| format!("copy {} to {}", src.display(), dst.display()))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh scratch directory under the target dir.
    fn scratch(name: &str) -> PathBuf {
        let dir = target_dir()
            .join("iguana-dist-test")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn sha256sums_match_the_files() {
        let dir = scratch("sums");
        let (kernel, initrd) = (dir.join("in/kernel"), dir.join("in/initrd"));
        fs::create_dir_all(dir.join("in")).unwrap();
        fs::write(&kernel, b"not really a kernel").unwrap();
        fs::write(&initrd, b"nor an initrd").unwrap();
        let out = dir.join("dist");
        write(&out, &kernel, &initrd).unwrap();

        let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
        let names: Vec<&str> = sums
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        assert_eq!(names, SUMMED);
        assert!(cmd_output(
            Command::new("sha256sum")
                .arg("-c")
                .arg("SHA256SUMS")
                .current_dir(&out)
        )
        .is_ok());
        fs::write(out.join("iguana-initrd"), b"changed").unwrap();
        assert!(cmd_output(
            Command::new("sha256sum")
                .arg("-c")
                .arg("SHA256SUMS")
                .current_dir(&out)
        )
        .is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn kernel_args_cover_the_readme_table() {
        let readme = fs::read_to_string(crate::workspace_root().join("README.md")).unwrap();
        let text = kernel_args();
        for line in readme.lines().filter(|l| l.starts_with("| `")) {
            for key in line
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|k| k.contains("rd.") || k.starts_with("init="))
            {
                let key = key.split(['=', ' ']).next().unwrap_or(key);
                assert!(text.contains(key), "kernel-args.txt lacks {key}");
            }
        }
    }
}
