//! `cargo xtask e2e` scenario `dracut-two-containers`: the initrd built by
//! dracut with `dracut-module/90iguana` (`cargo xtask dracut`) boots in
//! QEMU and runs the `two-containers` scenario, passing on the same console
//! lines. Console saved in `target/iguana-e2e/dracut-two-containers.log`.

use std::fs;
use std::time::Instant;

use anyhow::{Context, Result};
use testkit::Registry;

use crate::e2e::{self, COMMON_APPEND, SCENARIOS};
use crate::qemu::{Vm, VmConfig};
use crate::{dracut, target_dir, tools};

const NAME: &str = "dracut-two-containers";
/// The `e2e` scenario whose kernel arguments and expectations we reuse.
const TWIN: &str = "two-containers";

pub fn main(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        anyhow::bail!("e2e-dracut: unknown argument {arg:?}");
    }
    let (_, failed) = run_all()?;
    if !failed.is_empty() {
        anyhow::bail!("e2e-dracut failed");
    }
    Ok(())
}

/// Builds the dracut initrd and boots it; returns the pass count and the
/// failed scenario's name, as `e2e::run` does.
pub fn run_all() -> Result<(usize, Vec<String>)> {
    tools::ensure_tools()?;
    let twin = SCENARIOS
        .iter()
        .find(|s| s.name == TWIN)
        .with_context(|| format!("no e2e scenario {TWIN}"))?;
    let built = dracut::build()?;
    let registry = Registry::start().context("start docker-registry")?;
    let guest_registry = format!("10.0.2.2:{}", registry.port());
    for (name, image) in e2e::e2e_images(&guest_registry)? {
        image
            .build_and_push(&registry, &format!("{name}:latest"))
            .with_context(|| format!("build and push image {name}"))?;
    }
    let subst = |s: &str| s.replace("{REG}", &guest_registry);
    let mut config = VmConfig::new(
        built.kernel.vmlinuz.clone(),
        built.initrd.clone(),
        format!("{} {COMMON_APPEND}", subst(twin.append)),
    );
    config.net = twin.net;
    let log_dir = target_dir().join("iguana-e2e");
    fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let log = log_dir.join(format!("{NAME}.log"));

    let started = Instant::now();
    let outcome = Vm::start(&config)?.wait(twin.timeout);
    let _ = fs::write(&log, outcome.transcript());
    let lines = |list: &[&[&str]]| -> Vec<Vec<String>> {
        list.iter()
            .map(|parts| parts.iter().map(|part| subst(part)).collect())
            .collect()
    };
    let elapsed = started.elapsed();
    match e2e::check(
        &outcome,
        &lines(twin.expect),
        &lines(twin.reject),
        twin.timeout,
    ) {
        Ok(()) => {
            println!("PASS {NAME} ({elapsed:.1?})");
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
