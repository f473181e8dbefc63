//! `cargo xtask e2e` scenario `uki-secure-boot`: the unified kernel image
//! (`uki`, `cargo xtask dist --uki`) boots under OVMF with Secure Boot on,
//! and the firmware refuses the images it must refuse, in one boot.
//!
//! A test PK, KEK and db (openssl, made in `target/iguana-uki/`) are
//! enrolled into a copy of OVMF's variable store with virt-firmware's
//! `virt-fw-vars`. The UKI carries the `two-containers` command line
//! (the registry's port is only known now, so it is built here); it is
//! signed with the db key by `sbsign`. The guest has three FAT disks, each
//! with one image as `EFI/BOOT/BOOTX64.EFI` (the path OVMF boots by
//! default), tried in this order:
//!
//! 1. the same UKI unsigned: refused (`Access Denied`);
//! 2. the signed UKI with one bit of its `.initrd` changed after signing:
//!    refused;
//! 3. the signed UKI: boots, and passes the `two-containers` checks.
//!
//! Each refusal costs a few seconds under TCG (the firmware hashes the
//! 19 MB image); the PASS line tells when the firmware began loading and
//! when the kernel started. Console saved in
//! `target/iguana-e2e/uki-secure-boot.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testkit::Registry;

use crate::e2e::{self, COMMON_APPEND, SCENARIOS};
use crate::initrd::{self, Options};
use crate::qemu::{Uefi, Vm, VmConfig};
use crate::{cmd_output, target_dir, tools, uki};

pub const NAME: &str = "uki-secure-boot";
/// The `e2e` scenario whose kernel arguments and expectations we reuse.
const TWIN: &str = "two-containers";

/// Debian's `ovmf`: the Secure Boot build (SMM) and its empty variables.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Owner GUID of the enrolled test certificates (any GUID will do).
const OWNER: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The images on the three disks, in boot order, and what must happen.
const DISKS: [&str; 3] = ["unsigned", "tampered", "signed"];

/// Builds the initrd and the three images, and boots them; returns the
/// pass count and the failed scenario's name, as `e2e::run` does.
pub fn run_all() -> Result<(usize, Vec<String>)> {
    tools::ensure_tools()?;
    let twin = SCENARIOS
        .iter()
        .find(|s| s.name == TWIN)
        .with_context(|| format!("no e2e scenario {TWIN}"))?;
    let built = initrd::build(&Options::default())?;
    let registry = Registry::start().context("start docker-registry")?;
    let guest_registry = format!("10.0.2.2:{}", registry.port());
    for (name, image) in e2e::e2e_images(&guest_registry)? {
        image
            .build_and_push(&registry, &format!("{name}:latest"))
            .with_context(|| format!("build and push image {name}"))?;
    }
    let subst = |s: &str| s.replace("{REG}", &guest_registry);

    let dir = target_dir().join("iguana-uki");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let keys = Keys::generate(&dir)?;
    let vars = dir.join("OVMF_VARS_4M.enrolled.fd");
    keys.enroll(&vars)?;

    // The command line the direct-kernel boots get from qemu.rs, then the
    // scenario's: all of it is inside the signed image.
    let cmdline = format!(
        "console=ttyS0 panic=-1 {} {COMMON_APPEND}",
        subst(twin.append)
    );
    let unsigned = dir.join("unsigned.efi");
    uki::build(&built.kernel.vmlinuz, &built.initrd, &cmdline, &unsigned)?;
    let signed = dir.join("signed.efi");
    fs::copy(&unsigned, &signed).with_context(|| format!("copy to {}", signed.display()))?;
    uki::sign(&signed, &keys.db_key, &keys.db_cert)?;
    let tampered = dir.join("tampered.efi");
    uki::tamper_initrd(&signed, &tampered)?;
    if uki::verify(&tampered, &keys.db_cert).is_ok() {
        anyhow::bail!("sbverify accepts the tampered image {}", tampered.display());
    }
    let images = [&unsigned, &tampered, &signed];
    let disks = DISKS
        .iter()
        .zip(images)
        .map(|(name, image)| esp(&dir.join(format!("esp-{name}")), image))
        .collect::<Result<Vec<PathBuf>>>()?;

    let mut config = VmConfig::new(built.kernel.vmlinuz.clone(), built.initrd.clone(), "");
    config.net = twin.net;
    config.uefi = Some(Uefi {
        code: OVMF_CODE_SECBOOT.into(),
        vars,
        secure: true,
        disks,
    });
    let log_dir = target_dir().join("iguana-e2e");
    fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let log = log_dir.join(format!("{NAME}.log"));

    // The firmware and SMM under TCG add to the direct boot's time.
    let timeout = twin.timeout + Duration::from_secs(120);
    let started = Instant::now();
    let outcome = Vm::start(&config)?.wait(timeout);
    let _ = fs::write(&log, outcome.transcript());
    let elapsed = started.elapsed();
    let (mut expect, mut reject) = firmware_lines();
    expect.extend(
        twin.expect
            .iter()
            .map(|parts| parts.iter().map(|p| subst(p)).collect()),
    );
    reject.extend(
        twin.reject
            .iter()
            .map(|parts| parts.iter().map(|p| subst(p)).collect()),
    );
    let at = |needle: &str| {
        outcome
            .find(&[needle])
            .map_or("-".to_owned(), |line| format!("{:.1?}", line.at))
    };
    let (firmware_at, kernel_at) = (at("BdsDxe: loading"), at("Linux version"));
    match e2e::check(&outcome, &expect, &reject, timeout) {
        Ok(()) => {
            println!(
                "PASS {NAME} ({elapsed:.1?}; first image loaded at {firmware_at}, \
                 kernel started at {kernel_at})"
            );
            Ok((1, Vec::new()))
        }
        Err(err) => {
            println!(
                "FAIL {NAME} ({elapsed:.1?}): {err:#}\n  console: {}",
                log.display()
            );
            Ok((0, vec![NAME.to_owned()]))
        }
    }
}

/// What OVMF and the kernel must say (and must not) about the three disks.
fn firmware_lines() -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let pci = |i: usize| format!("PciRoot(0x0)/Pci({:#x},0x0)", Uefi::slot(i));
    let refused = |i: usize| {
        vec![
            "BdsDxe: failed to load".to_owned(),
            pci(i),
            "Access Denied".to_owned(),
        ]
    };
    let started = |i: usize| vec!["BdsDxe: starting".to_owned(), pci(i)];
    let expect = vec![
        refused(0),
        refused(1),
        started(2),
        vec!["EFI stub: UEFI Secure Boot is enabled".to_owned()],
        vec!["secureboot: Secure boot enabled".to_owned()],
    ];
    let reject = vec![started(0), started(1)];
    (expect, reject)
}

/// `dir/EFI/BOOT/BOOTX64.EFI` holding `image`; returns `dir`.
fn esp(dir: &Path, image: &Path) -> Result<PathBuf> {
    let boot = dir.join("EFI/BOOT");
    fs::create_dir_all(&boot).with_context(|| format!("create {}", boot.display()))?;
    fs::copy(image, boot.join("BOOTX64.EFI"))
        .with_context(|| format!("copy {} to {}", image.display(), boot.display()))?;
    Ok(dir.to_owned())
}

/// A self-signed test PK, KEK and db, and the db's key, which signs.
struct Keys {
    dir: PathBuf,
    db_key: PathBuf,
    db_cert: PathBuf,
}

impl Keys {
    fn generate(dir: &Path) -> Result<Keys> {
        for name in ["PK", "KEK", "db"] {
            cmd_output(
                Command::new("openssl")
                    .args([
                        "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                    ])
                    .args([
                        "-days",
                        "3650",
                        "-subj",
                        &format!("/CN=iguana test {name}/"),
                    ])
                    .arg("-keyout")
                    .arg(dir.join(format!("{name}.key")))
                    .arg("-out")
                    .arg(dir.join(format!("{name}.crt"))),
            )
            .with_context(|| format!("generate the test {name} with openssl"))?;
        }
        Ok(Keys {
            dir: dir.to_owned(),
            db_key: dir.join("db.key"),
            db_cert: dir.join("db.crt"),
        })
    }

    /// Writes `vars`: OVMF's empty variable store with our PK, KEK and db
    /// enrolled and Secure Boot on (user mode).
    fn enroll(&self, vars: &Path) -> Result<()> {
        let cert = |name: &str| self.dir.join(format!("{name}.crt"));
        cmd_output(
            Command::new("virt-fw-vars")
                .args(["--input", OVMF_VARS])
                .args(["--set-pk", OWNER])
                .arg(cert("PK"))
                .args(["--add-kek", OWNER])
                .arg(cert("KEK"))
                .args(["--add-db", OWNER])
                .arg(cert("db"))
                .arg("--secure-boot")
                .arg("--output")
                .arg(vars),
        )
        .with_context(|| format!("enroll the test keys into {}", vars.display()))?;
        Ok(())
    }
}
