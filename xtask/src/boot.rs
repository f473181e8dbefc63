//! `cargo xtask boot`: builds the initrd and boots it once in QEMU with the
//! console shown live; for poking at PID 1 by hand. With `--init FILE` the
//! initrd's `/init` is that file instead of iguana (e.g. a busybox script,
//! to check the kernel, modules and console plumbing on their own).

use std::time::Duration;

use anyhow::{bail, Result};

use crate::initrd::{self, Options};
use crate::qemu::{Net, Vm, VmConfig};
use crate::{flag_value, tools};

pub fn main(args: &[String]) -> Result<()> {
    let mut opts = Options::default();
    let mut memory_mib = 256;
    let mut timeout = 120;
    let mut net = Net::User;
    let mut append = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--init" => opts.init = Some(flag_value(&mut args, arg)?.into()),
            "--workflow" => opts.workflow = Some(flag_value(&mut args, arg)?.into()),
            "--compression" => opts.compression = flag_value(&mut args, arg)?.parse()?,
            "--memory" => memory_mib = flag_value(&mut args, arg)?.parse()?,
            "--timeout" => timeout = flag_value(&mut args, arg)?.parse()?,
            "--no-lease" => net = Net::NoLease,
            "--" => append.extend(args.by_ref().cloned()),
            other => bail!("boot: unknown argument {other:?} (kernel arguments go after --)"),
        }
    }
    tools::ensure_tools()?;
    let built = initrd::build(&opts)?;
    let mut config = VmConfig::new(built.kernel.vmlinuz, built.initrd, append.join(" "));
    config.memory_mib = memory_mib;
    config.net = net;
    config.echo = Some(String::new());
    let outcome = Vm::start(&config)?.wait(Duration::from_secs(timeout));
    match outcome.exited {
        Some(status) => eprintln!(
            "xtask: QEMU exited by itself after {:.1?}: {status}",
            outcome.elapsed
        ),
        None => bail!("QEMU killed at the {timeout} s timeout"),
    }
    Ok(())
}
