//! iguana as an ordinary command: the tools PID 1 uses, for people and tests.

use anyhow::{bail, Context};

const USAGE: &str = "\
iguana: a tiny initramfs init that runs OCI containers

Run as PID 1 (the initrd's /init) it boots the machine. Otherwise:

  iguana cmdline [--file FILE]     show how a kernel command line is understood
                                   (default: /proc/cmdline)
  iguana pull IMAGE --rootfs DIR [--insecure-registry HOST:PORT]... [--config-out FILE] [--store DIR]
                                   pull an image and unpack it into DIR
  iguana net-up [--timeout SECS]   bring up the network with DHCP (used by PID 1)
  iguana --help | --version
";

/// Runs a subcommand; the caller prints the error chain.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        "-V" | "--version" => {
            println!("iguana {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "cmdline" => cmdline(rest),
        "pull" => crate::image::cli_pull(rest),
        "net-up" => crate::net::cli_net_up(rest),
        "progress-relay" => crate::handover::progress::cli(rest),
        "kexec-load" => crate::handover::progress::cli_kexec_load(rest),
        other => bail!("unknown command {other:?} (see iguana --help)"),
    }
}

fn cmdline(args: &[String]) -> anyhow::Result<()> {
    let path = match args {
        [] => "/proc/cmdline".to_string(),
        [flag, file] if flag == "--file" => file.clone(),
        _ => bail!("usage: iguana cmdline [--file FILE]"),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let failsafe = crate::cmdline::failsafe(&text);
    let parsed = crate::cmdline::parse(&text).with_context(|| format!("parse {path}"))?;
    println!("containers:          {}", parsed.containers.join(", "));
    println!("control_url:         {}", parsed.control_url.as_deref().unwrap_or("-"));
    println!("insecure_registries: {}", parsed.insecure_registries.join(", "));
    println!("net_timeout:         {}s", parsed.net_timeout.as_secs());
    println!("debug:               {}", failsafe.debug);
    println!("reboot_timeout:      {}s", failsafe.reboot_timeout.as_secs());
    Ok(())
}
