//! `cargo xtask e2e --only extensions`: drivers, firmware and site settings
//! from extensions, in four QEMU boots of the base initrd.
//!
//! The registry serves HTTPS with a certificate for 10.0.2.2 that only the
//! `ca` extension (etc/ssl/certs/ca-certificates.crt) makes the guest
//! trust, so every boot that pulls proves an etc/ merge too.
//!
//! - `ext-signed`: trust keys appended; a `vmw_pvscsi` erofs fetched over
//!   HTTP with its `.sig` after network-up, coldplugged; the container
//!   writes to the pvscsi disk and reads it back. Refused, each with one
//!   line, the boot going on: wrong `ID=`, a corrupt image, an image signed
//!   by another key. A firmware file is found through firmware_class's path.
//!   After network-up too, in command-line order: a `.raw` verified by its
//!   `.sigstore.json` bundle, a signed `oci:` extension (built by `xtask
//!   extension --format oci`, pushed to a plain-HTTP registry given as
//!   `rd.iguana.insecure_registries`, signed by testkit's cosign signer)
//!   whose firmware is then read through the merged /usr/lib/firmware; an
//!   unsigned `oci:` one, a signed one with the wrong `ID=` and one not in
//!   the registry, each refused with its one line.
//! - `ext-appended`: no rd.iguana.* argument and a vmxnet3 NIC only; the
//!   initrd is base + vmxnet3 cpio + pvscsi squashfs + site cpio (its
//!   control.yaml is the workflow): DHCP works, the disk is written.
//! - `ext-none-nic`: vmxnet3 only, base initrd: no interface to configure.
//! - `ext-none-disk`: virtio NIC, pvscsi disk, no pvscsi extension: the
//!   container sees no disk. The registry's CA comes from a second virtio
//!   disk (erofs labelled SITE-EXT, `rd.iguana.extensions=LABEL=SITE-EXT`),
//!   whose driver coldplug loads: the pull proves it was merged after. An
//!   appended tree whose `vmw_pvscsi.ko` has another kernel's `vermagic=`
//!   is refused with one line naming the module.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::{FileServer, Image, Registry, RegistryOptions};

use crate::e2e::{self, COMMON_APPEND};
use crate::extension::{self as ext, Format};
use crate::initrd::{self, Options};
use crate::qemu::{Net, Outcome, Vm, VmConfig};
use crate::{run_cmd, target_dir, tools};

pub const NAME: &str = "extensions";
const TIMEOUT: Duration = Duration::from_secs(180);

/// The container: waits for the pvscsi disk (the SCSI scan is
/// asynchronous), writes a marker to it and reads it back.
const SCRIPT: &str = r#"i=0
while [ ! -b /dev/sda ] && [ $i -lt 20 ]; do busybox sleep 1; i=$((i+1)); done
if [ -b /dev/sda ]; then
  echo "IGUANA-E2E sda present driver=$(busybox basename "$(busybox readlink /sys/block/sda/device/../../../driver)")"
  echo iguana-extension-wrote-this > /tmp/mark
  busybox dd if=/tmp/mark of=/dev/sda bs=512 count=1 conv=sync,fsync 2>/dev/null
  if busybox dd if=/dev/sda bs=512 count=1 2>/dev/null | grep -q iguana-extension-wrote-this; then echo 'IGUANA-E2E sda written and read back'; fi
else
  echo 'IGUANA-E2E no sda'
fi
for n in /sys/class/net/*; do
  [ -e "$n/device/driver" ] && echo "IGUANA-E2E nic $(busybox basename "$n") driver=$(busybox basename "$(busybox readlink "$n/device/driver")")"
done
"#;

/// Runs the boots; returns the pass count and failed names like `e2e::run`.
pub fn run_all() -> Result<(usize, Vec<String>)> {
    let started = Instant::now();
    match run() {
        Ok(results) => {
            let mut failed = Vec::new();
            for (name, result) in &results {
                match result {
                    Ok(elapsed) => println!("PASS {name} ({elapsed:.1?})"),
                    Err(err) => {
                        println!("FAIL {name}: {err:#}");
                        failed.push(name.clone());
                    }
                }
            }
            println!("{NAME}: {} boots in {:.1?}", results.len(), started.elapsed());
            Ok((results.len() - failed.len(), failed))
        }
        Err(err) => {
            println!("FAIL {NAME} ({:.1?}): {err:#}", started.elapsed());
            Ok((0, vec![NAME.to_owned()]))
        }
    }
}

struct Setup {
    dir: PathBuf,
    kernel: PathBuf,
    base: PathBuf,
    registry: String,
    files: FileServer,
    /// The registry as the host reaches it (127.0.0.1:PORT).
    registry_host: String,
    _registry: Option<Registry>,
}

/// The manifest digest of `name:tag` in the (TLS) test registry.
fn image_digest(host: &str, name_tag: &str) -> Result<String> {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}", &format!("docker://{host}/{name_tag}")])
        .output()
        .context("skopeo inspect")?;
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !digest.starts_with("sha256:") {
        bail!("skopeo inspect {host}/{name_tag}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(digest)
}

fn run() -> Result<Vec<(String, Result<Duration>)>> {
    tools::ensure_tools()?;
    let dir = target_dir().join("iguana-e2e/extensions");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let built = initrd::build(&Options::default())?;
    let (cert, key) = cert_for_guest(&dir)?;
    let registry = Registry::start_with(RegistryOptions { tls: Some((cert.clone(), key)), ..Default::default() })?;
    Image::busybox_script(SCRIPT)?.build_and_push(&registry, "extdisk:latest")?;
    let reg = format!("10.0.2.2:{}", registry.port());
    let files = FileServer::start()?;
    let setup = Setup {
        dir,
        kernel: built.kernel.vmlinuz.clone(),
        base: built.initrd.clone(),
        registry: reg,
        registry_host: registry.host(),
        files,
        _registry: Some(registry),
    };

    let (signer, other) = (keypair(&setup.dir, "site")?, keypair(&setup.dir, "other")?);
    // With keys, every image needs a signature, unless a verified workflow
    // pins it by digest: the signed `ca` extension carries such a workflow,
    // so it also proves that a verified extension's etc/ counts as the
    // initrd's own (a built-in workflow is verified).
    let digest = image_digest(&setup.registry_host, "extdisk:latest")?;
    let cas = etc_dir(
        &setup.dir,
        "ca",
        &[
            ("ssl/certs/ca-certificates.crt", &fs::read_to_string(&cert)?),
            ("iguana/control.yaml", &format!("name: site-signed\njobs:\n  site:\n    container:\n      image: {}/extdisk@{digest}\n", setup.registry)),
        ],
    )?;
    let site = etc_dir(
        &setup.dir,
        "site",
        &[
            ("ssl/certs/ca-certificates.crt", &fs::read_to_string(&cert)?),
            ("iguana/control.yaml", &format!("name: site\njobs:\n  site:\n    container:\n      image: {}/extdisk\n", setup.registry)),
        ],
    )?;
    let badmagic = vermagic_cpio(&setup.dir, &built.kernel)?;
    let firmware = setup.dir.join("iguana-test-fw.bin");
    fs::write(&firmware, b"firmware bytes for the e2e\n")?;
    let oci = OciParts::new(&setup.dir)?;

    let mut results = Vec::new();
    let mut boot = |name: &str, f: &dyn Fn(&Setup) -> Result<Outcome>, expect: &[&[&str]], reject: &[&[&str]]| {
        let started = Instant::now();
        let result = f(&setup).and_then(|outcome| {
            let log = setup.dir.join(format!("{name}.log"));
            let _ = fs::write(&log, outcome.transcript());
            let strings = |l: &[&[&str]]| l.iter().map(|p| p.iter().map(|s| s.to_string()).collect()).collect::<Vec<Vec<String>>>();
            for line in outcome.lines.iter().filter(|l| l.text.contains("phase extensions-merged") || l.text.contains(": fetched")) {
                eprintln!("xtask: {name}: {}", line.text);
            }
            e2e::check(&outcome, &strings(expect), &strings(reject), TIMEOUT).with_context(|| format!("console: {}", log.display()))
        });
        results.push((name.to_string(), result.map(|()| started.elapsed())));
    };

    // 1. Keys present: everything must be signed.
    let signed = |s: &Setup| -> Result<Outcome> {
        let mut o = ext::Options::new("pvscsi", Format::Erofs);
        o.modules = vec!["vmw_pvscsi".into()];
        o.sign_key = Some(signer.0.clone());
        o.out = Some(s.dir.join("pvscsi.raw"));
        let pvscsi = ext::build(&o)?;
        s.files.add("/ext/pvscsi.raw", fs::read(&pvscsi)?);
        s.files.add("/ext/pvscsi.raw.sig", fs::read(s.dir.join("pvscsi.raw.sig"))?);
        let mut parts = vec![s.base.clone(), trust_cpio(&s.dir, &signer.1)?];
        parts.push(build(&s.dir, "ca", Format::Cpio, |o| {
            o.etc = Some(cas.clone());
            o.sign_key = Some(signer.0.clone());
        })?);
        parts.push(build(&s.dir, "fw", Format::Cpio, |o| {
            o.firmware = vec![firmware.clone()];
            o.sign_key = Some(signer.0.clone());
        })?);
        parts.push(build(&s.dir, "wrongid", Format::Cpio, |o| {
            o.id = "fedora".into();
            o.sign_key = Some(signer.0.clone());
        })?);
        // Images in an appended cpio, at systemd-stub's place.
        let corrupt = build(&s.dir, "corrupt", Format::Erofs, |o| o.sign_key = None)?;
        corrupt_image(&corrupt)?;
        fs::write(s.dir.join("corrupt.raw.sig"), ext::sign(&signer.0, &corrupt)?)?;
        let badsig = build(&s.dir, "badsig", Format::Squashfs, |o| o.sign_key = Some(other.0.clone()))?;
        parts.push(files_cpio(&s.dir, "images", &[
            (".extra/sysext/corrupt.raw", &corrupt),
            (".extra/sysext/corrupt.raw.sig", &s.dir.join("corrupt.raw.sig")),
            (".extra/sysext/badsig.raw", &badsig),
            (".extra/sysext/badsig.raw.sig", &s.dir.join("badsig.raw.sig")),
        ])?);
        parts.push(oci.trust_cpio(&s.dir)?);
        let initrd = concat(&s.dir.join("signed.img"), &parts)?;
        let append = format!(
            "rd.iguana.extensions=http://10.0.2.2:{}/ext/pvscsi.raw,{} {COMMON_APPEND}",
            s.files.port(),
            oci.sources(s)?,
        );
        boot_vm(s, &initrd, &append, Net::User, true)
    };
    boot(
        "ext-signed",
        &signed,
        &[
            &["extension wrongid refused: ID=fedora does not match this initrd's ID=iguana"],
            &["extension corrupt refused: mount", "corrupt or unreadable image"],
            &["extension badsig refused: not verified", "badsig.raw.sig: the signature does not verify against the trusted keys"],
            &["extension ca admitted", "verified by site.pub"],
            &["extension fw: firmware /usr/lib/firmware/iguana-test-fw.bin readable (27 bytes), firmware_class path /usr/lib/firmware"],
            &["extension pvscsi: fetched http://10.0.2.2:"],
            &["extension pvscsi admitted", "verified by site.pub"],
            &["extensions: coldplug loaded", "vmw_pvscsi"],
            &["workflow site-signed: 1 jobs"],
            &["IGUANA-E2E sda present driver=vmw_pvscsi"],
            &["IGUANA-E2E sda written and read back"],
            &["extension bundled admitted from http://10.0.2.2:", "verified by oci.pub"],
            &["extension ocifw admitted from oci:10.0.2.2:", "/ext/ocifw:1, verified by oci.pub"],
            &["extension ocifw: firmware /usr/lib/firmware/iguana-oci-fw.bin readable (22 bytes)"],
            &["extension oci:10.0.2.2:", "/ext/ociunsigned:1 refused: pull: image 10.0.2.2:", "refused: no signature found"],
            &["extension oci:10.0.2.2:", "/ext/ociwrongid:1 refused: ID=fedora does not match this initrd's ID=iguana"],
            &["extension oci:10.0.2.2:", "/ext/ocimissing:1 refused: pull: image 10.0.2.2:", "/ext/ocimissing:1: fetch manifest"],
            &["phase extensions-merged pvscsi,bundled,ocifw in"],
        ],
        &[&["unverified"], &["panicked"], &["extension pvscsi refused"], &["extension ca refused"], &["extension bundled refused"], &["ocifw:1 refused"]],
    );

    // 2. No rd.iguana.* argument, vmxnet3 only, no keys.
    let appended = |s: &Setup| -> Result<Outcome> {
        let vmxnet3 = build(&s.dir, "vmxnet3", Format::Cpio, |o| o.modules = vec!["vmxnet3".into()])?;
        let pvscsi = build(&s.dir, "pvscsi", Format::Squashfs, |o| o.modules = vec!["vmw_pvscsi".into()])?;
        let pvscsi = files_cpio(&s.dir, "pvscsi-squashfs", &[(".extra/sysext/pvscsi.raw", &pvscsi)])?;
        let site = build(&s.dir, "site", Format::Cpio, |o| o.etc = Some(site.clone()))?;
        let initrd = concat(&s.dir.join("appended.img"), &[s.base.clone(), vmxnet3, pvscsi, site])?;
        boot_vm(s, &initrd, "", Net::Vmxnet3, true)
    };
    boot(
        "ext-appended",
        &appended,
        &[
            &["extension vmxnet3 admitted from /extensions/vmxnet3: unverified"],
            &["extension pvscsi admitted from /.extra/sysext/pvscsi.raw: unverified"],
            &["module loaded", "module=vmxnet3"],
            &["phase network-up"],
            &["IGUANA-E2E nic eth0 driver=vmxnet3"],
            &["IGUANA-E2E sda present driver=vmw_pvscsi"],
            &["IGUANA-E2E sda written and read back"],
        ],
        &[&["refused"], &["panicked"]],
    );

    // 3. and 4.: the same hardware without the extensions.
    let none_nic = |s: &Setup| boot_vm(s, &s.base, &format!("rd.iguana.containers={}/extdisk {COMMON_APPEND}", s.registry), Net::Vmxnet3, false);
    boot("ext-none-nic", &none_nic, &[&["no Ethernet interface to configure (links: lo)"]], &[&["phase network-up"], &["panicked"]]);
    // The registry's CA comes only from a second virtio disk holding an
    // erofs labelled SITE-EXT: virtio_blk is a module coldplug loads, so
    // the pull works only if that device is merged after coldplug.
    let none_disk = |s: &Setup| -> Result<Outcome> {
        let device = labelled_erofs(&s.dir, "siteext", "SITE-EXT", &fs::read_to_string(cas.join("ssl/certs/ca-certificates.crt"))?)?;
        let initrd = concat(&s.dir.join("none-disk.img"), &[s.base.clone(), badmagic.0.clone()])?;
        let append = format!("rd.iguana.extensions=LABEL=SITE-EXT rd.iguana.containers={}/extdisk {COMMON_APPEND}", s.registry);
        let disk = vec![
            "-drive".into(),
            format!("file={},if=none,id=sx,format=raw,readonly=on", device.display()),
            "-device".into(),
            "virtio-blk-pci,drive=sx".into(),
        ];
        boot_vm_with(s, &initrd, &append, Net::User, true, disk)
    };
    boot(
        "ext-none-disk",
        &none_disk,
        &[
            &["extension siteext admitted from LABEL=SITE-EXT: unverified"],
            &["extension siteext: firmware /usr/lib/firmware/iguana-siteext.bin readable"],
            &[&badmagic.1],
            &["IGUANA-E2E no sda"],
            &["IGUANA-E2E nic eth0 driver=virtio_net"],
        ],
        &[&["IGUANA-E2E sda present"], &["panicked"], &["extension siteext refused"], &["extension LABEL=SITE-EXT refused"]],
    );
    Ok(results)
}

/// The `oci:` extensions and the `.sigstore.json` one of `ext-signed`: a
/// plain-HTTP registry for the images and testkit's cosign signer, whose
/// key the guest trusts as oci.pub.
struct OciParts {
    registry: Registry,
    signer: testkit::cosign::Signer,
    firmware: PathBuf,
}

impl OciParts {
    fn new(dir: &Path) -> Result<OciParts> {
        let firmware = dir.join("iguana-oci-fw.bin");
        fs::write(&firmware, b"oci extension firmware")?;
        Ok(OciParts { registry: Registry::start()?, signer: testkit::cosign::Signer::new()?, firmware })
    }

    fn trust_cpio(&self, dir: &Path) -> Result<PathBuf> {
        files_cpio(dir, "oci-trust", &[("etc/iguana/trust/oci.pub", &self.signer.public_key())])
    }

    /// Builds, pushes and signs; returns the `rd.iguana.extensions` items
    /// after pvscsi.raw, and the insecure registry they need.
    fn sources(&self, s: &Setup) -> Result<String> {
        // NAME.raw + NAME.raw.sigstore.json (no .sig) on the file server.
        let bundled = build(&s.dir, "bundled", Format::Erofs, |_| {})?;
        s.files.add("/ext/bundled.raw", fs::read(&bundled)?);
        s.files.add("/ext/bundled.raw.sigstore.json", self.signer.blob_bundle(&bundled)?);
        let guest = format!("10.0.2.2:{}", self.registry.port());
        let mut items = vec![format!("http://10.0.2.2:{}/ext/bundled.raw", s.files.port())];
        // ocimissing is never pushed.
        for (name, signed, id) in [("ocifw", true, "iguana"), ("ociunsigned", false, "iguana"), ("ociwrongid", true, "fedora"), ("ocimissing", false, "")] {
            if id.is_empty() {
                items.push(format!("oci:{guest}/ext/{name}:1"));
                continue;
            }
            build(&s.dir, name, Format::Oci, |o| {
                o.firmware = vec![self.firmware.clone()];
                o.id = id.into();
                o.push = Some(format!("{}/ext/{name}:1", self.registry.host()));
            })?;
            if signed {
                let digest = self.registry.descriptor(&format!("ext/{name}"), "1")?["digest"].as_str().unwrap_or_default().to_string();
                let (payload, signature) = self.signer.legacy(&digest, &format!("{guest}/ext/{name}:1"))?;
                self.registry.push_legacy_signatures(&format!("ext/{name}"), &digest, &[(payload, Some(signature))])?;
            }
            items.push(format!("oci:{guest}/ext/{name}:1"));
        }
        Ok(format!("{} rd.iguana.insecure_registries={guest}", items.join(",")))
    }
}

fn boot_vm(s: &Setup, initrd: &Path, append: &str, net: Net, pvscsi: bool) -> Result<Outcome> {
    boot_vm_with(s, initrd, append, net, pvscsi, Vec::new())
}

/// [`boot_vm`] with more QEMU arguments (another disk).
fn boot_vm_with(s: &Setup, initrd: &Path, append: &str, net: Net, pvscsi: bool, extra: Vec<String>) -> Result<Outcome> {
    let mut config = VmConfig::new(s.kernel.clone(), initrd.to_owned(), append);
    config.net = net;
    if pvscsi {
        let disk = s.dir.join(format!("{}.disk", initrd.file_stem().unwrap_or_default().to_string_lossy()));
        fs::File::create(&disk)?.set_len(4 << 20)?;
        config.extra_args = vec![
            "-drive".into(),
            format!("file={},if=none,id=pd,format=raw", disk.display()),
            "-device".into(),
            "pvscsi,id=pv".into(),
            "-device".into(),
            "scsi-hd,drive=pd,bus=pv.0".into(),
        ];
    }
    config.extra_args.extend(extra);
    let vm = Vm::start(&config)?;
    Ok(vm.wait(TIMEOUT))
}

/// An appended tree `badmagic` carrying the real `vmw_pvscsi.ko` under the
/// running release's directory, its `vermagic=` naming another release (the
/// first digit changed, the length kept); and the line that refuses it.
fn vermagic_cpio(dir: &Path, kernel: &crate::kernel::Kernel) -> Result<(PathBuf, String)> {
    let rel = "kernel/drivers/scsi/vmw_pvscsi.ko";
    let mut module = fs::read(kernel.modules.join(rel)).with_context(|| format!("read {rel}"))?;
    let needle = format!("vermagic={}", kernel.release);
    let at = module.windows(needle.len()).position(|w| w == needle.as_bytes()).with_context(|| format!("{rel}: no {needle}"))?;
    let digit = &mut module[at + "vermagic=".len()];
    *digit = if *digit == b'9' { b'8' } else { b'9' };
    let other = String::from_utf8_lossy(&module[at + "vermagic=".len()..at + needle.len()]).into_owned();
    let (module_file, release_file) = (dir.join("badmagic.ko"), dir.join("badmagic.release"));
    fs::write(&module_file, &module)?;
    fs::write(&release_file, format!("ID=iguana\nIGUANA_LEVEL={}\n", ext::IGUANA_LEVEL))?;
    let in_tree = format!("usr/lib/modules/{}/{rel}", kernel.release);
    let cpio = files_cpio(dir, "badmagic", &[
        ("extensions/badmagic/usr/lib/extension-release.d/extension-release.badmagic", &release_file),
        (&format!("extensions/badmagic/{in_tree}"), &module_file),
    ])?;
    let line = format!("extension badmagic refused: module {in_tree} was built for kernel {other} (vermagic), this is {}", kernel.release);
    Ok((cpio, line))
}

/// An erofs extension NAME labelled LABEL (a USB stick's or a second
/// disk's filesystem): the CA bundle in etc/ and a firmware file. The
/// release file's NAME is the only way iguana learns its name.
fn labelled_erofs(dir: &Path, name: &str, label: &str, ca: &str) -> Result<PathBuf> {
    let staging = dir.join(format!("{name}.tree"));
    let _ = fs::remove_dir_all(&staging);
    let files = [
        (format!("usr/lib/extension-release.d/extension-release.{name}"), format!("ID=iguana\nIGUANA_LEVEL={}\n", ext::IGUANA_LEVEL)),
        ("etc/ssl/certs/ca-certificates.crt".to_string(), ca.to_string()),
        (format!("usr/lib/firmware/iguana-{name}.bin"), "firmware from a labelled disk\n".to_string()),
    ];
    for (path, text) in files {
        let p = staging.join(path);
        fs::create_dir_all(p.parent().unwrap_or(&staging))?;
        fs::write(p, text)?;
    }
    let out = dir.join(format!("{name}.erofs"));
    run_cmd(Command::new("mkfs.erofs").args(["--quiet", "--all-root", "-T0"]).arg(&out).arg(&staging))?;
    let mut bytes = fs::read(&out)?;
    erofs_set_label(&mut bytes, label)?;
    // A disk's size is a multiple of its sector.
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    fs::write(&out, bytes)?;
    Ok(out)
}

/// Writes an erofs volume label (Debian 12's mkfs.erofs 1.5 has no `-L`):
/// `volume_name` at 64 in the superblock (at 1024), then the superblock
/// checksum again (crc32c over the rest of the 4 KiB block, seed ~0, no
/// final xor, as the kernel checks it). The checksum mkfs wrote is checked
/// first, so a wrong layout fails here rather than in the guest.
fn erofs_set_label(image: &mut [u8], label: &str) -> Result<()> {
    const SB: usize = 1024;
    const SB_CHKSUM: u32 = 1;
    if image.len() < 4096 || image[SB..SB + 4] != 0xE0F5_E1E2u32.to_le_bytes() || label.len() > 15 {
        bail!("not an erofs image with 4 KiB blocks, or a label over 15 bytes");
    }
    let crc32c = |data: &[u8]| {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            }
        }
        crc
    };
    let checksummed = u32::from_le_bytes(image[SB + 8..SB + 12].try_into()?) & SB_CHKSUM != 0;
    let sum = |image: &mut [u8]| {
        image[SB + 4..SB + 8].fill(0);
        crc32c(&image[SB..4096])
    };
    if checksummed {
        let stored = u32::from_le_bytes(image[SB + 4..SB + 8].try_into()?);
        let mut copy = image[..4096].to_vec();
        if sum(&mut copy) != stored {
            bail!("erofs superblock checksum not as expected: cannot relabel");
        }
    }
    image[SB + 64..SB + 80].fill(0);
    image[SB + 64..SB + 64 + label.len()].copy_from_slice(label.as_bytes());
    if checksummed {
        let crc = sum(image);
        image[SB + 4..SB + 8].copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

fn build(dir: &Path, name: &str, format: Format, set: impl FnOnce(&mut ext::Options)) -> Result<PathBuf> {
    let mut o = ext::Options::new(name, format);
    let suffix = match format {
        Format::Cpio => "cpio",
        Format::Oci => "oci",
        _ => "raw",
    };
    o.out = Some(dir.join(format!("{name}.{suffix}")));
    set(&mut o);
    ext::build(&o)
}

/// An etc/ tree with `files` (relative to etc/).
fn etc_dir(dir: &Path, name: &str, files: &[(&str, &str)]) -> Result<PathBuf> {
    let root = dir.join(format!("{name}.etc"));
    for (path, text) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap_or(&root))?;
        fs::write(p, text)?;
    }
    Ok(root)
}

/// A cpio of `files` at the given paths (parents included).
fn files_cpio(dir: &Path, name: &str, files: &[(&str, &Path)]) -> Result<PathBuf> {
    let mut archive = crate::cpio::Archive::default();
    for (path, src) in files {
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().map(|(_, p)| p.to_vec()).unwrap_or_default() {
            parent = if parent.is_empty() { part.to_string() } else { format!("{parent}/{part}") };
            archive.dir(&parent);
        }
        archive.file(path, 0o644, fs::read(src).with_context(|| format!("read {}", src.display()))?);
    }
    let out = dir.join(format!("{name}.cpio"));
    fs::write(&out, archive.to_bytes())?;
    Ok(out)
}

/// The public key as an appended cpio at /etc/iguana/trust/site.pub.
fn trust_cpio(dir: &Path, public: &Path) -> Result<PathBuf> {
    files_cpio(dir, "trust", &[("etc/iguana/trust/site.pub", public)])
}

/// Base initrd and extensions one after the other, as a boot loader given
/// `initrd base.img site.cpio` loads them (each padded to 4 bytes).
fn concat(out: &Path, parts: &[PathBuf]) -> Result<PathBuf> {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend(fs::read(part).with_context(|| format!("read {}", part.display()))?);
        while bytes.len() % 4 != 0 {
            bytes.push(0);
        }
    }
    fs::write(out, bytes)?;
    Ok(out.to_owned())
}

/// Damages an erofs image's superblock (checksummed) and cuts it short.
fn corrupt_image(path: &Path) -> Result<()> {
    let mut bytes = fs::read(path)?;
    if bytes.len() < 4096 {
        bail!("{}: too small to corrupt", path.display());
    }
    for b in &mut bytes[1024 + 16..1024 + 24] {
        *b ^= 0xff;
    }
    bytes.truncate(4096);
    fs::write(path, bytes)?;
    Ok(())
}

/// An EC P-256 key pair by openssl: (private PEM, public PEM).
fn keypair(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let (private, public) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    run_cmd(Command::new("openssl").args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]).arg(&private))?;
    run_cmd(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(&private).arg("-out").arg(&public))?;
    Ok((private, public))
}

/// A self-signed certificate for 10.0.2.2 (the host as the guest sees it)
/// and 127.0.0.1; returns (cert.pem, key.pem).
fn cert_for_guest(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cfg, cert, key) = (dir.join("openssl.cnf"), dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(
        &cfg,
        "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n[dn]\nCN = 10.0.2.2\n\
         [ext]\nbasicConstraints = critical,CA:FALSE\nsubjectAltName = IP:10.0.2.2,IP:127.0.0.1\n\
         keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )?;
    run_cmd(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-config"])
            .arg(&cfg)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null()),
    )?;
    Ok((cert, key))
}

/// `cargo xtask bench extensions [--runs N]`: what merging an extension
/// costs the boot, erofs against squashfs, with the base initrd as the
/// peer, boots interleaved. The same `vmw_pvscsi` extension (3 modules)
/// sits at /.extra/sysext/pvscsi.raw of an appended cpio; the guest has
/// the pvscsi disk in every boot. Printed: medians of the guest's uptime
/// at `phase modules-loaded` (kernel, initrd unpack, merge, coldplug) and
/// of the merge itself (`phase extensions-merged ... in`).
pub fn bench(runs: usize) -> Result<()> {
    tools::ensure_tools()?;
    let dir = target_dir().join("iguana-bench/extensions");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let built = initrd::build(&Options::default())?;
    let mut variants: Vec<(&str, PathBuf)> = vec![("base", built.initrd.clone())];
    for (name, format) in [("erofs", Format::Erofs), ("squashfs", Format::Squashfs)] {
        let image = build(&dir, &format!("pvscsi-{name}"), format, |o| o.modules = vec!["vmw_pvscsi".into()])?;
        // The file's name is the extension's: the release file inside says pvscsi-<format>.
        let cpio = files_cpio(&dir, name, &[(&format!(".extra/sysext/pvscsi-{name}.raw"), &image)])?;
        let size = fs::metadata(&image)?.len();
        eprintln!("xtask: bench: {name} image {size} bytes");
        variants.push((name, concat(&dir.join(format!("{name}.img")), &[built.initrd.clone(), cpio])?));
    }
    let files = FileServer::start()?;
    let setup = Setup { dir: dir.clone(), kernel: built.kernel.vmlinuz.clone(), base: built.initrd.clone(), registry: String::new(), registry_host: String::new(), files, _registry: None };
    let mut loaded: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut merged: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for run in 0..runs {
        for (i, (name, initrd)) in variants.iter().enumerate() {
            let outcome = boot_vm(&setup, initrd, &format!("rd.iguana.net_timeout=1 {COMMON_APPEND}"), Net::NoLease, true)?;
            let _ = fs::write(dir.join(format!("{name}-{}.log", run + 1)), outcome.transcript());
            let at = |mark: &str| outcome.lines.iter().find(|l| l.text.contains(mark)).map(|l| l.text.clone());
            let uptime = at("phase modules-loaded").and_then(|t| t.split(']').next()?.trim_start_matches('[').trim().parse::<f64>().ok());
            let merge = at("phase extensions-merged").and_then(|t| t.rsplit(" in ").next()?.trim().trim_end_matches('s').parse::<f64>().ok());
            eprintln!("xtask: bench: run {} {name}: modules-loaded at {uptime:?} s, merge {merge:?} s", run + 1);
            // A refused extension would measure the base initrd twice.
            if i > 0 && merge.is_none() {
                bail!("bench extensions: {name} run {}: no `phase extensions-merged` line (see {})", run + 1, dir.join(format!("{name}-{}.log", run + 1)).display());
            }
            loaded[i].extend(uptime);
            merged[i].extend(merge);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let base = median(&mut loaded[0].clone()).unwrap_or(f64::NAN);
    println!("| initrd | `phase modules-loaded` (guest s) | vs base | merge (s) |");
    println!("|---|---|---|---|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let l = median(&mut loaded[i]).unwrap_or(f64::NAN);
        let m = median(&mut merged[i]).map_or("—".to_string(), |m| format!("{m:.2}"));
        println!("| {name} | {l:.2} | {:.2}x | {m} |", l / base);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A relabelled image still passes fsck.erofs and carries the label
    /// where iguana reads it, with a superblock checksum that matches.
    #[test]
    fn relabelled_erofs_keeps_a_valid_superblock() {
        let tmp = std::env::temp_dir().join(format!("iguana-relabel-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let ca = "-----BEGIN CERTIFICATE-----\n";
        let out = super::labelled_erofs(&tmp, "siteext", "SITE-EXT", ca).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[1024 + 64..1024 + 72], b"SITE-EXT");
        assert_eq!(bytes[1024 + 72], 0);
        let fsck = std::process::Command::new("fsck.erofs").arg(&out).output().unwrap();
        assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
        // The checksum was recomputed: relabelling again verifies it (as
        // it verified mkfs.erofs's own above), and a changed byte fails it.
        let mut copy = bytes.clone();
        super::erofs_set_label(&mut copy, "OTHER").unwrap();
        copy[1024 + 64] = b'X';
        assert!(super::erofs_set_label(&mut copy, "AGAIN").is_err());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
