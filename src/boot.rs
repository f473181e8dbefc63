//! PID 1: the boot, as the list of its phases.
//!
//! early mounts → logging → cmdline → extensions → modules → machine-id →
//! network → (fetched extensions) → workflow → handover. Each phase lives in its own module; this file only
//! orders them, logs `phase NAME` when each is reached (the boot benchmark
//! reads those lines), and turns any failure into a safe end: the debug shell
//! or a reboot. PID 1 never returns, never panics on purpose, and reaps
//! orphans.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cmdline::{self, Failsafe};
use crate::handover::{self, Requests};
use crate::{early, extension, logging, machine_id, modules, report, workflow};

/// Where iguana keeps its working state (a tmpfs: RAM is the disk here).
const WORK: &str = "/run/iguana";
const BUILTIN_WORKFLOW: &str = "/etc/iguana/control.yaml";
/// Where a job's container may say why it failed (`job.finished`'s `reason`).
const REASON: &str = "/iguana/reason";
/// network.json is read up to this for the `network.up` event.
const NETWORK_EVENT_MAX: u64 = 64 << 10;
/// network.json larger than this is not read for NTP servers.
const NETWORK_JSON_MAX: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read /proc/cmdline")]
    ReadCmdline(#[source] std::io::Error),
    #[error("kernel command line")]
    Cmdline(#[from] cmdline::Error),
    #[error("machine-id")]
    MachineId(#[from] machine_id::Error),
    #[error("network: {0}")]
    Network(String),
    #[error("kernel command line")]
    NetArgs(#[from] crate::net::args::Error),
    #[error("kernel command line")]
    ModuleArgs(#[from] modules::args::Error),
    #[error("trust keys")]
    Trust(#[from] crate::trust::keys::Error),
    #[error(transparent)]
    Workflow(#[from] workflow::Error),
    #[error("kernel command line")]
    ExtensionArgs(#[from] extension::args::Error),
    #[error(transparent)]
    Extension(#[from] extension::Error),
}

/// The whole life of PID 1.
pub fn run() -> ! {
    // Before anything is set: what the new root's init will get.
    let kernel_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let early_errors = early::setup();
    // Ctrl-Alt-Del must not reboot mid-install. With it disabled the
    // kernel sends SIGINT to PID 1 instead, which PID 1 leaves at SIG_DFL:
    // the kernel drops default-action signals aimed at init, so nothing
    // is interrupted or killed.
    let cad = nix::sys::reboot::set_cad_enabled(false);
    let console = early::attach_console();
    let raw = cmdline::read_proc_cmdline();
    let failsafe = cmdline::failsafe(raw.as_deref().unwrap_or(""));
    logging::init_pid1(failsafe.debug);
    install_panic_hook(failsafe, kernel_env.clone());
    tracing::info!("phase start version={}", env!("CARGO_PKG_VERSION"));
    if let Err(e) = cad {
        tracing::warn!("reboot(RB_DISABLE_CAD): {e}");
    }
    if let Err(e) = console {
        tracing::warn!("attach stdio to /dev/console: {e}");
    }
    for e in early_errors {
        tracing::warn!("{}", logging::chain(&e));
    }
    handover::progress::start();
    if failsafe.debug {
        handover::real::spawn_tty2_shell();
    }
    let result = raw.map_err(Error::ReadCmdline).and_then(|raw| boot(&raw, failsafe));
    let failure = result.as_ref().err().map(|e| logging::chain(e));
    if let Some(reason) = &failure {
        tracing::error!("{reason}");
    }
    // What the containers asked for counts only after a successful
    // workflow; an oversize or unreadable request is then the failure.
    let (failure, requests) = match failure {
        Some(reason) => (Some(reason), Requests::default()),
        None => match Requests::read(Path::new("/iguana")) {
            Ok(requests) => (None, requests),
            Err(e) => {
                let reason = logging::chain(&e);
                tracing::error!("{reason}");
                (Some(reason), Requests::default())
            }
        },
    };
    let action = handover::decide(failure.as_deref(), failsafe, &requests);
    report_end(failure.as_deref(), &action);
    // Secrets PID 1 wrote for its children: /run goes to the next system.
    crate::proxy::forget();
    report::pid1::forget();
    handover::execute(&action, &mut handover::Real::new(kernel_env));
    halt()
}

/// Before the handover: the failure summary for the next boot (pstore),
/// the last events, and a bounded wait for their delivery.
fn report_end(failure: Option<&str>, action: &handover::Action) {
    use crate::report::{self, pid1, pstore};
    if let Some(error) = failure {
        let job = pid1::failed_job();
        let step = job.as_ref().map_or("boot".to_string(), |j| format!("job {}", j.job));
        let log = job.as_ref().map(|j| report::sender::read_tail(&j.log, 16 << 10)).unwrap_or_default();
        let reason = job.as_ref().and_then(|j| j.reason.as_deref());
        pstore::write_summary(&pstore::summary(&step, error, reason, &String::from_utf8_lossy(&log)));
    }
    let what = match action {
        handover::Action::Reboot { .. } => "reboot",
        handover::Action::Poweroff => "poweroff",
        handover::Action::Kexec => "kexec",
        handover::Action::Shell { .. } => "shell",
        handover::Action::HandOver { .. } => "switch_root",
    };
    pid1::emit(report::workflow_finished(failure));
    pid1::emit(report::handover(what, failure));
    pid1::finish(pid1::FLUSH_LIMIT);
}

/// The phases after early setup.
fn boot(raw: &str, failsafe: Failsafe) -> Result<(), Error> {
    let args = cmdline::parse(raw)?;
    tracing::debug!("cmdline: {args:?}");
    let _ = std::fs::create_dir_all(WORK);
    report::pid1::configure(args.report_url.as_deref(), args.report_token.as_deref(), args.ca.as_deref());
    for e in early::resize_tmpfs(&args.tmpfs_size) {
        tracing::warn!("{}", logging::chain(&e));
    }
    // Checked here so a typo stops the boot with its name; net-up reads
    // them again to apply what it can.
    let net_args = crate::net::args::parse(raw)?;
    if let Err(e) = crate::proxy::export(args.proxy.as_deref(), &args.no_proxy) {
        tracing::warn!("rd.iguana.proxy: {e} (pulls and fetches go direct)");
    }
    if let Some(what) = crate::net::args::unapplied(&net_args) {
        tracing::warn!("network arguments checked but not applied yet: {what}");
    }

    let policy = modules::args::parse(raw)?;
    // Drivers, firmware and site settings from an appended cpio: merged
    // before coldplug and before the workflow is chosen.
    let extensions = extension::args::parse(raw)?;
    let mut merged = extension::Merged::default();
    extension::merge_local(&extensions, &policy, &mut merged)?;

    // Before net-up starts: it writes both when a lease says more.
    let _ = std::fs::write("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n");
    if !Path::new("/etc/resolv.conf").exists() {
        let _ = std::fs::write("/etc/resolv.conf", "");
    }
    // DHCP starts as soon as the network drivers are in, while the other
    // modules load and the workflow is read (a DHCP exchange is mostly
    // waiting); the boot waits for it where the network is first needed.
    let mut net = Network(NetState::NotStarted);
    load_modules(&policy, &mut |loaded: &[String]| {
        tracing::debug!("network drivers loaded ({}): starting net-up", loaded.join(" "));
        net.start(&args);
    });
    net.start(&args);
    // Block devices: their disk's driver is one coldplug loaded.
    extension::merge_devices(&extensions, &policy, &mut merged)?;
    // After the modules: ramoops and efi-pstore fill /sys/fs/pstore when they load.
    let previous = report::pstore::take_previous(Path::new(report::pstore::PSTORE));
    if let Some(summary) = &previous {
        tracing::warn!("previous boot failed: {}", summary.replace('\n', " | "));
        if let Err(e) = std::fs::write(report::pstore::COPY, format!("{summary}\n")) {
            tracing::warn!("write {}: {e}", report::pstore::COPY);
        }
    }

    let (id, source) = machine_id::provision(&[Path::new("/etc/machine-id"), Path::new("/iguana/machine-id")])?;
    tracing::info!("phase machine-id {id} source={source:?}");
    report::pid1::set_machine_id(&id);
    report::pid1::emit(report::boot_started(&report::machine::identity(raw)));
    if let Some(summary) = &previous {
        report::pid1::emit(report::previous_boot_failed(summary));
    }

    // A remote control_url needs the network before the workflow is loaded;
    // otherwise the workflow is read while DHCP goes on. So do extensions
    // fetched from the network.
    let fetched = extensions.sources.iter().any(extension::args::Source::needs_network);
    if fetched || args.control_url.as_deref().is_some_and(|u| u.starts_with("http")) {
        net.up(&args)?;
        let registry = extension::oci::Registry {
            insecure_registries: &args.insecure_registries,
            mirrors: &args.registry_mirrors,
            ca: args.ca.as_deref(),
        };
        extension::merge_network(&extensions, &policy, &mut merged, &registry)?;
    }
    // Loaded once, from the initrd (and the verified extensions merged into
    // it: the pull child reads the same directory): nothing on the command
    // line changes what is trusted.
    let keys = crate::trust::load_for_boot()?;
    let loaded = workflow::load(&args, Path::new(BUILTIN_WORKFLOW), Path::new(WORK), &keys)?;
    net.up(&args)?;
    // After the clock phase: `expires:` is checked against a clock we trust,
    // before an expired workflow's `report:` is given anything.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    workflow::check_expiry(&loaded, now, crate::clock::build_epoch())?;
    report::pid1::workflow_url(loaded.workflow.report.as_deref(), loaded.verified);
    report::pid1::start();
    let ctx = workflow::Context {
        insecure_registries: &args.insecure_registries,
        registry_mirrors: &args.registry_mirrors,
        ca: args.ca.as_deref(),
        work: Path::new(WORK),
        debug: failsafe.debug,
        reason: Some(Path::new(REASON)),
        verified: loaded.verified,
    };
    let wf = loaded.workflow;
    let results = workflow::run(&ctx, &wf)?;
    tracing::info!("phase workflow-done jobs={}", results.len());
    Ok(())
}

/// Coldplug: drivers for the hardware present, plus the modules nothing asks
/// for by modalias, then hotplug for what appears later. A module that fails
/// to load is logged, not fatal: the hardware that needs it will fail later
/// with its own error. `network_ready` is called once the network drivers
/// are in (see `modules::coldplug`); not at all when there are no modules.
fn load_modules(policy: &modules::Policy, network_ready: &mut dyn FnMut(&[String])) {
    let dir = match modules::kernel_modules_dir() {
        Ok(dir) if dir.exists() => dir,
        Ok(dir) => return tracing::warn!("no modules for this kernel: {} is missing", dir.display()),
        Err(e) => return tracing::warn!("{}", logging::chain(&e)),
    };
    let started = Instant::now();
    // Opened before the sysfs scan, so a device added during coldplug is
    // either seen by the scan or queued on the socket.
    let uevents = modules::hotplug::Listener::open()
        .map_err(|e| tracing::warn!("no hotplug: {}", logging::chain(&e)))
        .ok();
    // Besides the drivers: overlay for the rootfs, and the pstore backends,
    // ramoops when the command line places it, efi-pstore on UEFI.
    let mut named = vec!["overlay"];
    if policy.params.contains_key("ramoops") {
        named.push("ramoops");
    }
    if Path::new("/sys/firmware/efi").exists() {
        named.push("efi_pstore");
    }
    // Passes after the first take their devices from the uevents queued
    // meanwhile instead of scanning sysfs again.
    let mut announced = || uevents.as_ref().and_then(modules::hotplug::Listener::drain);
    match modules::coldplug(&dir, Path::new("/sys"), policy, &named, &mut announced, network_ready) {
        Ok(report) => tracing::info!("coldplug: {report}"),
        Err(e) => tracing::warn!("{}", logging::chain(&e)),
    }
    if let Some(Err(e)) = uevents.map(modules::hotplug::Listener::start_child) {
        tracing::warn!("no hotplug: {}", logging::chain(&e));
    }
    tracing::info!("phase modules-loaded in {:.2}s", started.elapsed().as_secs_f64());
}

/// `iguana net-up` (DHCP), started as soon as the network drivers are in
/// and waited for once, where the network is first needed. A boot that
/// fails before that stops it (drop), so it never runs into the handover.
struct Network(NetState);

enum NetState {
    NotStarted,
    Started(Result<crate::child::Running, String>),
    Waited,
}

impl Network {
    /// Starts net-up unless it was started already. Its deadline runs from
    /// here: net-up gives up after its own --timeout; PID 1 kills it a
    /// little later.
    fn start(&mut self, cmdline: &cmdline::Cmdline) {
        if !matches!(self.0, NetState::NotStarted) {
            return;
        }
        let timeout = cmdline.net_timeout;
        // `--publish`: net-up writes the containers' copy (installers configure
        // the installed system from it) and keeps it in step when SLAAC lands
        // late (`--late-ipv6`), which a copy made here would race.
        let args: Vec<String> = ["net-up", "--timeout", &timeout.as_secs().to_string(), "--publish", "/iguana/network.json", "--late-ipv6"]
            .map(str::to_owned)
            .to_vec();
        self.0 = NetState::Started(crate::child::start(&args, timeout.saturating_add(Duration::from_secs(30))));
    }

    /// Waits for net-up (starting it first if nothing did), then the clock:
    /// this is the one place before the first TLS connection (control_url
    /// fetch or pull). Once it succeeded, later calls return at once.
    fn up(&mut self, cmdline: &cmdline::Cmdline) -> Result<(), Error> {
        self.start(cmdline);
        match std::mem::replace(&mut self.0, NetState::Waited) {
            NetState::Started(child) => child.and_then(crate::child::Running::wait).map_err(Error::Network)?,
            _ => return Ok(()),
        }
        tracing::info!("phase network-up");
        let json = crate::fsutil::read_bounded(Path::new("/run/iguana/network.json"), NETWORK_EVENT_MAX).unwrap_or_default();
        report::pid1::emit(report::network_up(serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null)));
        crate::clock::ensure(&cmdline.ntp, || {
            // Written by the net-up child: read with a bound all the same.
            let json = crate::fsutil::read_bounded(Path::new("/run/iguana/network.json"), NETWORK_JSON_MAX)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            crate::net::ntp_servers(&json)
        });
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let NetState::Started(Ok(child)) = std::mem::replace(&mut self.0, NetState::Waited) {
            child.stop();
        }
    }
}

/// Reaps any exited child for up to `limit`; PID 1 inherits every orphan.
pub fn reap_for(limit: Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let until = Instant::now() + limit;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= until {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A panic in PID 1 would take the kernel with it: log it, then give the
/// shell (debug) or reboot, before the process can abort.
fn install_panic_hook(failsafe: Failsafe, kernel_env: Vec<(OsString, OsString)>) {
    let default = std::panic::take_hook();
    let pid_ns = pid_namespace();
    std::panic::set_hook(Box::new(move |info| {
        // libcontainer's forked children inherit this hook: in them a panic
        // must only end that child, never stop the machine. A container's
        // init is pid 1 too, of its own pid namespace.
        if !acts_on_panic(nix::unistd::getpid(), pid_namespace(), pid_ns) {
            return default(info);
        }
        let reason = format!("iguana panicked: {info}");
        tracing::error!("{reason}");
        let action = handover::decide(Some(&reason), failsafe, &Requests::default());
        handover::execute(&action, &mut handover::Real::new(kernel_env.clone()));
        halt();
    }));
}

/// Whether the panic hook of process `pid` in pid namespace `now` reboots
/// the machine: only in PID 1 of the namespace it was installed in
/// (`recorded`), whose end would be the kernel's. When either namespace is
/// unknown (no /proc), pid 1 acts: a kernel panic is the worse outcome.
fn acts_on_panic(pid: nix::unistd::Pid, now: Option<u64>, recorded: Option<u64>) -> bool {
    pid.as_raw() == 1 && (now.is_none() || recorded.is_none() || now == recorded)
}

/// The inode of this process's pid namespace, which tells namespaces apart.
fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// How long halt sleeps when PID 1 has no child: an orphan adopted later
/// is reaped within this.
const IDLE: Duration = Duration::from_secs(60);

/// Nothing left to do and the machine would not reboot: never exit.
fn halt() -> ! {
    use nix::sys::wait::waitpid;
    loop {
        reap_or_sleep(|| waitpid(None, None), std::thread::sleep);
    }
}

/// One turn of `halt`: reap a child, blocking, or sleep when there is none
/// to wait for, so PID 1 never spins.
fn reap_or_sleep(wait: impl FnOnce() -> nix::Result<nix::sys::wait::WaitStatus>, sleep: impl FnOnce(Duration)) {
    match wait() {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        // ECHILD: nobody to wait for (EINVAL cannot happen with no flags).
        Err(_) => sleep(IDLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn only_pid_1_reboots_on_panic() {
        // (pid, the pid namespace now, the one PID 1 recorded, acts)
        let cases: &[(i32, Option<u64>, Option<u64>, bool)] = &[
            (1, Some(7), Some(7), true),
            (2, Some(7), Some(7), false),
            (4321, Some(7), Some(7), false),
            // A container's init: pid 1 of a namespace of its own.
            (1, Some(9), Some(7), false),
            // No /proc to tell: PID 1 errs on the side of not panicking the kernel.
            (1, None, Some(7), true),
            (1, Some(7), None, true),
        ];
        for &(pid, now, recorded, acts) in cases {
            assert_eq!(acts_on_panic(Pid::from_raw(pid), now, recorded), acts, "{pid} {now:?} {recorded:?}");
        }
    }

    #[test]
    fn halt_sleeps_when_there_is_nothing_to_reap() {
        let exited = Ok(WaitStatus::Exited(Pid::from_raw(7), 0));
        let cases: [(nix::Result<WaitStatus>, Option<Duration>); 4] =
            [(Err(Errno::ECHILD), Some(IDLE)), (exited, None), (Err(Errno::EINTR), None), (Err(Errno::EINVAL), Some(IDLE))];
        for (answer, want) in cases {
            let mut slept = None;
            reap_or_sleep(|| answer, |d| slept = Some(d));
            assert_eq!(slept, want, "{answer:?}");
        }
    }
}
