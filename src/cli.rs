//! iguana as an ordinary command: the tools PID 1 uses, for people and tests.

use anyhow::{bail, Context};

const USAGE: &str = "\
iguana: a tiny initramfs init that runs OCI containers

Run as PID 1 (the initrd's /init) it boots the machine. Otherwise:

  iguana cmdline [--file FILE]     show how a kernel command line is understood
                                   (default: /proc/cmdline)
  iguana pull IMAGE --rootfs DIR [--insecure-registry HOST:PORT]... [--config-out FILE]
              [--store DIR] [--keep-blobs] [--auth-file FILE] [--mirror REGISTRY=MIRROR]... [--ca PEM]...
                                   pull an image and unpack it into DIR
  iguana validate [--key KEY.pub]... FILE...
                                   check workflow files; errors name line and column;
                                   says whether FILE.sig or FILE.sigstore.json is a
                                   signature by one of the keys (default /etc/iguana/trust)
                                   and when the workflow expires
  iguana verify IMAGE [--key KEY.pub]... [--insecure-registry HOST:PORT]...
                                   check that IMAGE is signed by a key (default: the keys
                                   in /etc/iguana/trust) and print by which
  iguana verify --file FILE [--sig S | --bundle B] [--key KEY.pub]...
                                   the same for a file (a workflow): its .sig or cosign
                                   blob bundle, by default the one beside it
  iguana run [--dry-run] [--debug] [--newroot DIR] FILE
                                   run a workflow (as root, with cgroup2); --dry-run
                                   prints the plan: jobs, images, env, volumes,
                                   services, needs and what would be skipped
  iguana fetch URL --out FILE [--signature]
                                   fetch a control_url (and URL.sig or URL.sigstore.json)
                                   with retries (used by PID 1)
  iguana net-up [--timeout SECS]   bring up the network with DHCP (used by PID 1)
  iguana sntp [--set] SERVER[:PORT]...
                                   ask NTP servers the time; --set sets the clock (used by PID 1)
  iguana extension inspect FILE [--os-release FILE] [--trust DIR]
                                   what an extension (NAME.raw, a tree, or each in a cpio) carries,
                                   whether it fits and verifies
  iguana extension probe /dev/NAME|LABEL=L --wait SECS --out FILE
                                   wait for an extension's block device (used by PID 1)
  iguana report URL --machine-id ID [--token-file FILE] [--ca FILE] [--heartbeat SECS]
                                   POST the CloudEvents read from stdin, one JSON frame a
                                   line, with retries (used by PID 1)
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
        "fetch" => crate::workflow::source::cli_fetch(rest),
        "sntp" => crate::clock::cli_sntp(rest),
        "validate" => validate(rest),
        "verify" => crate::trust::cli::verify(rest),
        "run" => run(rest),
        "progress-relay" => crate::handover::progress::cli(rest),
        "kexec-load" => crate::handover::progress::cli_kexec_load(rest),
        "hotplug" => crate::modules::hotplug::cli(rest),
        "extension" => crate::extension::inspect::cli(rest),
        "report" => crate::report::sender::cli(rest),
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
    // Userinfo and query may be credentials: shown redacted.
    let redact = |url: &Option<String>| url.as_deref().map_or("-".to_string(), crate::redact::redact_url);
    println!("control_url:         {}", redact(&parsed.control_url));
    println!("insecure_registries: {}", parsed.insecure_registries.join(", "));
    println!("net_timeout:         {}s", parsed.net_timeout.as_secs());
    println!("ntp:                 {}", parsed.ntp.join(", "));
    println!("proxy:               {}", redact(&parsed.proxy));
    println!("no_proxy:            {}", parsed.no_proxy.join(", "));
    println!("debug:               {}", failsafe.debug);
    println!("reboot_timeout:      {}s", failsafe.reboot_timeout.as_secs());
    let modules = crate::modules::args::parse(&text).with_context(|| format!("parse {path}"))?;
    let blacklist: Vec<&str> = modules.blacklist.iter().map(String::as_str).collect();
    println!("module_blacklist:    {}", blacklist.join(", "));
    for module in modules.params.keys() {
        println!("module_params:       {module}: {}", modules.params_for(module));
    }
    Ok(())
}

fn validate(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: iguana validate [--key KEY.pub]... FILE...";
    let mut key_files = Vec::new();
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--key" => key_files.push(std::path::PathBuf::from(it.next().context(usage)?)),
            other if other.starts_with("--") => bail!("unexpected argument {other:?}\n{usage}"),
            file => files.push(file.to_string()),
        }
    }
    if files.is_empty() {
        bail!("{usage}");
    }
    let keys = crate::trust::keys_for_cli(&key_files)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut failed = 0;
    for file in &files {
        let result = std::fs::read(file)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok((crate::workflow::schema::parse(&bytes)?, bytes)));
        match result {
            Ok((wf, bytes)) => {
                let mut line = format!("{file}: ok ({} jobs)", wf.jobs.0.len());
                let (note, ok) = crate::trust::signature_note(&keys, std::path::Path::new(file), &bytes);
                line.push_str(&format!(", {note}"));
                let mut good = ok;
                if let Some(expires) = &wf.expires {
                    // The host's clock is taken as it is (build date 0).
                    match crate::workflow::expires::check(expires, now, 0) {
                        Ok(_) => line.push_str(&format!(", expires {expires}")),
                        Err(e) => {
                            line.push_str(&format!(", {e}"));
                            good = false;
                        }
                    }
                }
                println!("{line}");
                if !good {
                    failed += 1;
                }
            }
            Err(e) => {
                println!("{file}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} files invalid", files.len());
    }
    Ok(())
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: iguana run [--dry-run] [--debug] [--newroot DIR] FILE";
    let mut dry_run = false;
    let mut debug = false;
    let mut newroot = "/sysroot".to_string();
    let mut file = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dry-run" => dry_run = true,
            "--debug" => debug = true,
            "--newroot" => newroot = it.next().cloned().context(usage)?,
            other if file.is_none() && !other.starts_with("--") => file = Some(other.to_string()),
            other => bail!("unexpected argument {other:?}\n{usage}"),
        }
    }
    let Some(file) = file else { bail!("{usage}") };
    let bytes = std::fs::read(&file).with_context(|| format!("read {file}"))?;
    let wf = crate::workflow::schema::parse(&bytes).with_context(|| file.clone())?;
    if dry_run {
        print!("{}", crate::workflow::plan::describe(&wf));
        println!("new root: {newroot} (where the handover mounts the installed system)");
        return Ok(());
    }
    let work = std::path::Path::new("/run/iguana");
    let ctx = crate::workflow::Context { insecure_registries: &[], registry_mirrors: &[], ca: None, work, debug, reason: None, verified: false };
    let results = crate::workflow::run(&ctx, &wf)?;
    for (job, outcome) in results {
        println!("{job}: {outcome:?}");
    }
    Ok(())
}
