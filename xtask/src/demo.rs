//! `cargo xtask demo`: the two-container boot of the e2e, cut down to one
//! friendly container, with the guest's console shown live.
//!
//! The container runs `examples/hello/run.sh` when that file exists, and
//! `FALLBACK_SCRIPT` otherwise. The image has a static busybox with the
//! applets cat, echo, grep, wget, ls, mkdir; others via `busybox NAME`.

use std::fs;
use std::time::Duration;

use anyhow::{bail, Result};
use testkit::Image;

use crate::e2e::Fixture;
use crate::initrd::Options;
use crate::qemu::KERNEL_PANIC;
use crate::{flag_value, tools, workspace_root};

/// PID 1's log prefix for the error that ends a boot.
const FAILED: &str = "iguana: error:";

const EXAMPLE: &str = "examples/hello/run.sh";

const FALLBACK_SCRIPT: &str = r#"echo "Hello from a container that iguana pulled and started"
echo "kernel $(busybox uname -r), machine id $(cat /iguana/machine-id)"
echo "iguana=$iguana is in my environment"
busybox ip -4 -o addr show | grep -v ' lo '
echo "shared with later containers: /iguana"; ls /iguana
"#;

pub fn main(args: &[String]) -> Result<()> {
    let mut memory_mib = 256;
    let mut opts = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--memory" => memory_mib = flag_value(&mut args, arg)?.parse()?,
            "--init" => opts.init = Some(flag_value(&mut args, arg)?.into()),
            other => bail!("demo: unknown argument {other:?}"),
        }
    }
    tools::ensure_tools()?;
    let script = fs::read_to_string(workspace_root().join(EXAMPLE))
        .unwrap_or_else(|_| FALLBACK_SCRIPT.to_owned());
    let fixture = Fixture::new(&opts, |_| {
        Ok(vec![("hello", Image::busybox_script(&script)?)])
    })?;
    let reg = &fixture.guest_registry;
    let mut config = fixture.vm(&format!(
        "rd.iguana.containers={reg}/hello rd.iguana.insecure_registries={reg}"
    ));
    config.memory_mib = memory_mib;
    config.echo = Some(String::new());
    eprintln!(
        "xtask: booting {} with {}",
        config.kernel.display(),
        config.initrd.display()
    );
    let outcome = crate::qemu::Vm::start(&config)?.wait(Duration::from_secs(180));
    if outcome.exited.is_none() {
        bail!("the guest was still running after 180 s; killed it");
    }
    if let Some(line) = outcome
        .find(&[FAILED])
        .or_else(|| outcome.find(&[KERNEL_PANIC]))
    {
        bail!("the boot failed: {}", line.text);
    }
    eprintln!(
        "xtask: the guest shut down by itself (QEMU exited) after {:.1?}",
        outcome.elapsed
    );
    Ok(())
}
