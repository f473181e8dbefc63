//! `cargo xtask e2e --only trust`: an initrd with trust keys
//! (`initrd --trust`), three lean boots, two at a time:
//!
//! - `trust`: a signed control_url (with a `?token=` that must never show)
//!   runs: a signed image runs, an unsigned image pinned by digest in the
//!   signed workflow runs (the workflow's signature covers it), an
//!   unsigned image by tag is refused with the pull's one line before
//!   anything of it is fetched, and its job never prints.
//! - `trust-tampered`: the same file with one byte changed, beside the
//!   same signature: refused, nothing runs.
//! - `trust-expired`: a signed workflow whose `expires:` has passed:
//!   refused, nothing runs.
//!
//! Workflows are signed with openssl (testkit::BlobKey), images with
//! trust-image's independent cosign signer (testkit::cosign::Signer,
//! Python cryptography, attached at cosign's legacy `sha256-<hex>.sig`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testkit::cosign::Signer;
use testkit::{BlobKey, FileServer, Image, Registry};

use crate::e2e::{check, COMMON_APPEND};
use crate::initrd::{self, Options};
use crate::qemu::{Vm, VmConfig};
use crate::{target_dir, tools};

pub const NAME: &str = "trust";

const SIGNED_RAN: &str = "IGUANA-E2E trust signed ran";
const PINNED_RAN: &str = "IGUANA-E2E trust pinned ran";
const UNSIGNED_RAN: &str = "IGUANA-E2E trust unsigned ran";
const TOKEN: &str = "s3cr3t-trust";
const TIMEOUT: Duration = Duration::from_secs(150);

struct Boot {
    name: &'static str,
    /// The workflow's path on the file server (the guest adds `?token=`).
    path: &'static str,
    expect: Vec<Vec<String>>,
    reject: Vec<Vec<String>>,
}

/// The workflow, for the guest's registry `reg` and the pinned digest.
fn workflow(reg: &str, pinned: &str, expires: &str) -> String {
    format!(
        "name: trust e2e\nexpires: {expires}\njobs:\n  signed:\n    container: {{image: {reg}/signed}}\n  \
         pinned:\n    container: {{image: \"{reg}/pinned@{pinned}\"}}\n  \
         unsigned:\n    container: {{image: {reg}/unsigned}}\n    continue_on_error: true\n"
    )
}

fn lines(parts: &[&[&str]]) -> Vec<Vec<String>> {
    parts.iter().map(|l| l.iter().map(|p| p.to_string()).collect()).collect()
}

pub fn run_all() -> Result<(usize, Vec<String>)> {
    tools::ensure_tools()?;
    let keys = target_dir().join("iguana-e2e/trust-keys");
    std::fs::create_dir_all(&keys)?;
    let workflow_key = BlobKey::generate(&keys, "workflow")?;
    let image_signer = Signer::new()?;
    let built = initrd::build(&Options {
        trust: vec![workflow_key.public().to_owned(), image_signer.public_key()],
        ..Options::default()
    })?;

    let registry = Registry::start().context("start docker-registry")?;
    let reg = format!("10.0.2.2:{}", registry.port());
    for (name, mark) in [("signed", SIGNED_RAN), ("pinned", PINNED_RAN), ("unsigned", UNSIGNED_RAN)] {
        Image::busybox_script(&format!("echo '{mark}'\n"))?
            .build_and_push(&registry, &format!("{name}:latest"))
            .with_context(|| format!("build and push {name}"))?;
    }
    let digest = |name: &str| -> Result<String> {
        let d = registry.descriptor(name, "latest")?;
        Ok(d["digest"].as_str().context("digest")?.to_string())
    };
    let signed = digest("signed")?;
    let (payload, signature) = image_signer.legacy(&signed, &format!("{reg}/signed:latest"))?;
    registry.push_legacy_signatures("signed", &signed, &[(payload, Some(signature))])?;
    let pinned = digest("pinned")?;

    let files = FileServer::start()?;
    let serve = |path: &str, text: &str, signed_text: &str| -> Result<()> {
        files.add(&format!("{path}?token={TOKEN}"), text);
        files.add(&format!("{path}.sig?token={TOKEN}"), workflow_key.sign(signed_text.as_bytes())?);
        Ok(())
    };
    let good = workflow(&reg, &pinned, "2099-12-31T23:59:59Z");
    serve("/good.yaml", &good, &good)?;
    // One byte changed after signing: the unsigned job made to stop the workflow.
    let tampered = good.replace("continue_on_error: true", "continue_on_error: fals");
    serve("/tampered.yaml", &tampered, &good)?;
    let expired = workflow(&reg, &pinned, "2020-01-01T00:00:00Z");
    serve("/expired.yaml", &expired, &expired)?;

    let url = |path: &str| format!("http://10.0.2.2:{}{path}", files.port());
    // The kernel itself prints its command line, token and all: only
    // iguana's lines and its children's must not.
    let nothing_ran: Vec<Vec<String>> =
        lines(&[&["IGUANA-E2E trust"], &["phase image-pulled"], &["iguana:", TOKEN], &["fetch", TOKEN]]);
    let boots = [
        Boot {
            name: "trust",
            path: "/good.yaml",
            expect: vec![
                vec!["trust: 2 keys in /etc/iguana/trust (cosign.pub, workflow.pub)".into()],
                vec![format!("workflow {}?***: signed by workflow.pub (.sig)", url("/good.yaml"))],
                vec!["valid until 2099-12-31T23:59:59Z".into()],
                vec![format!("[signed] {SIGNED_RAN}")],
                vec![format!("[pinned] {PINNED_RAN}")],
                vec!["job unsigned".into(), format!("image {reg}/unsigned"), "refused: no signature found at".into()],
                vec!["job unsigned failed; continuing".into()],
                vec!["phase workflow-done".into()],
            ],
            reject: lines(&[&[UNSIGNED_RAN], &["phase image-pulled job=unsigned"], &["iguana:", TOKEN], &["fetch", TOKEN]]),
        },
        Boot {
            name: "trust-tampered",
            path: "/tampered.yaml",
            expect: vec![vec![format!("workflow {}?***: refused: signature by an unknown key", url("/tampered.yaml"))]],
            reject: nothing_ran.clone(),
        },
        Boot {
            name: "trust-expired",
            path: "/expired.yaml",
            expect: vec![
                vec![format!("workflow {}?***: signed by workflow.pub", url("/expired.yaml"))],
                vec![format!("workflow {}?***: refused: expired at 2020-01-01T00:00:00Z (it is ", url("/expired.yaml"))],
            ],
            reject: nothing_ran,
        },
    ];

    let log_dir = target_dir().join("iguana-e2e");
    std::fs::create_dir_all(&log_dir)?;
    let results: Vec<(&str, Result<()>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = boots
            .iter()
            .map(|boot| {
                let (built, reg, url) = (&built, &reg, &url);
                let log = log_dir.join(format!("{}.log", boot.name));
                scope.spawn(move || {
                    let append = format!(
                        "rd.iguana.control_url={}?token={TOKEN} rd.iguana.insecure_registries={reg} {COMMON_APPEND}",
                        url(boot.path)
                    );
                    let config = VmConfig::new(built.kernel.vmlinuz.clone(), built.initrd.clone(), &append);
                    let started = Instant::now();
                    let result = Vm::start(&config).and_then(|vm| {
                        let outcome = vm.wait(TIMEOUT);
                        let _ = std::fs::write(&log, outcome.transcript());
                        check(&outcome, &boot.expect, &boot.reject, TIMEOUT)
                            .with_context(|| format!("console: {}", log.display()))
                    });
                    println!(
                        "{} {} ({:.1?})",
                        if result.is_ok() { "PASS" } else { "FAIL" },
                        boot.name,
                        started.elapsed()
                    );
                    (boot.name, result)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(("panicked", Err(anyhow::anyhow!("panicked"))))).collect()
    });
    let mut failed = Vec::new();
    for (name, result) in &results {
        if let Err(e) = result {
            println!("FAIL {name}: {e:#}");
            failed.push(name.to_string());
        }
    }
    Ok((results.len() - failed.len(), failed))
}
