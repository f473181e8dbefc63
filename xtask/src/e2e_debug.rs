//! The debug-mode scenario of `cargo xtask e2e`: a failing container with
//! `rd.iguana.debug` must give a shell on the serial console that answers a
//! command, and the machine must reboot by itself once that shell exits.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::{Image, Registry};

use crate::initrd::Built;
use crate::qemu::{Vm, VmConfig};

/// iguana's line when it opens the shell.
const SHELL_OPENED: &str = "debug mode: starting a shell on the console";
/// What we type, and what only a working shell prints back (6*7).
const COMMAND: &str = "echo SHELL-ANSWERS-$((6*7))\n";
const ANSWER: &str = "SHELL-ANSWERS-42";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Boots a failing container in debug mode and talks to the shell.
pub fn run(built: &Built, registry: &Registry, log: &std::path::Path) -> Result<()> {
    let reference = Image::busybox_script("echo 'IGUANA-E2E failing on purpose'; exit 7\n")?
        .build_and_push(registry, "debug-fail:latest")?;
    let guest_ref = reference.replace("127.0.0.1", "10.0.2.2");
    let append = format!(
        "rd.iguana.containers={guest_ref} rd.iguana.insecure_registries=10.0.2.2:{} rd.iguana.debug",
        registry.port()
    );
    let mut config = VmConfig::new(built.kernel.vmlinuz.clone(), built.initrd.clone(), append);
    config.interactive = true;
    let started = Instant::now();
    let mut vm = Vm::start(&config)?;
    let result = (|| {
        vm.wait_for("job debug-fail failed: exit status 7", TIMEOUT).context("no failure line for the job")?;
        vm.wait_for(SHELL_OPENED, TIMEOUT).context("no debug shell announced")?;
        // The shell may still be starting: type until it answers.
        for _ in 0..10 {
            vm.type_text(COMMAND)?;
            if vm.wait_for(ANSWER, started.elapsed() + Duration::from_secs(3)).is_some() {
                vm.type_text("exit\n")?;
                return Ok(());
            }
        }
        bail!("the shell never printed {ANSWER}")
    })();
    let outcome = vm.wait(TIMEOUT);
    let _ = std::fs::write(log, outcome.transcript());
    result.with_context(|| format!("console in {}", log.display()))?;
    if !outcome.exited_by_itself() {
        bail!("the VM did not reboot after the shell exited (console in {})", log.display());
    }
    Ok(())
}
