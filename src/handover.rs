//! Phase "handover": what happens to the machine after the workflow.
//!
//! `decide` is pure: from the workflow's result and what the containers left
//! in /iguana it picks one action. `execute` carries it out through the
//! `Machine` seam, so the decision logic is tested without a VM. PID 1 never
//! returns from here.

use std::time::Duration;

use crate::cmdline::Failsafe;

/// What the containers asked for, read from /iguana.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// Contents of /iguana/kernelAction, trimmed.
    pub kernel_action: Option<String>,
    /// Contents of /iguana/mountlist.
    pub mountlist: Option<String>,
}

impl Requests {
    pub fn read(dir: &std::path::Path) -> Requests {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        Requests {
            kernel_action: read("kernelAction").map(|s| s.trim().to_string()),
            mountlist: read("mountlist"),
        }
    }
}

/// The one thing PID 1 does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reboot { reason: String, delay: Duration },
    Poweroff,
    /// Execute the kernel a container loaded with `kexec -l`.
    Kexec,
    /// Debug mode: a shell on the console, then reboot when it exits.
    Shell { reason: String },
}

/// Picks the action. `failure` is the workflow's error, if it failed.
pub fn decide(failure: Option<&str>, failsafe: Failsafe, requests: &Requests) -> Action {
    if let Some(reason) = failure {
        return if failsafe.debug {
            Action::Shell { reason: reason.to_string() }
        } else {
            Action::Reboot { reason: reason.to_string(), delay: failsafe.reboot_timeout }
        };
    }
    let unsupported = |what: String| {
        let reason = format!("{what} is not supported yet: rebooting");
        if failsafe.debug {
            Action::Shell { reason }
        } else {
            Action::Reboot { reason, delay: failsafe.reboot_timeout }
        }
    };
    match requests.kernel_action.as_deref() {
        Some("reboot") => return Action::Reboot { reason: "kernelAction reboot".into(), delay: Duration::ZERO },
        Some("poweroff") => return Action::Poweroff,
        Some("kexec") => return Action::Kexec,
        Some(other) => return unsupported(format!("/iguana/kernelAction {other:?}")),
        None => {}
    }
    if requests.mountlist.is_some() {
        return unsupported("/iguana/mountlist (switch_root)".into());
    }
    Action::Reboot { reason: "workflow done, nothing to hand over to".into(), delay: Duration::ZERO }
}

/// Side effects of the handover, behind one seam.
pub trait Machine {
    fn sleep(&mut self, delay: Duration);
    fn shell(&mut self);
    /// Stops every other process and syncs the disks.
    fn quiesce(&mut self);
    fn reboot(&mut self);
    fn poweroff(&mut self);
    fn kexec(&mut self);
}

/// Carries out the action. Returns only if the machine refused to reboot or
/// power off; the caller then waits forever.
pub fn execute(action: &Action, machine: &mut dyn Machine) {
    match action {
        Action::Reboot { reason, delay } => {
            tracing::info!("rebooting in {}s: {reason}", delay.as_secs());
            machine.sleep(*delay);
            machine.quiesce();
            machine.reboot();
        }
        Action::Poweroff => {
            tracing::info!("powering off");
            machine.quiesce();
            machine.poweroff();
        }
        Action::Kexec => {
            tracing::info!("kexec into the loaded kernel");
            machine.quiesce();
            machine.kexec();
            tracing::error!("kexec failed: was a kernel loaded with kexec -l? rebooting");
            machine.reboot();
        }
        Action::Shell { reason } => {
            tracing::error!("debug mode: starting a shell on the console ({reason}); exit it to reboot");
            machine.shell();
            machine.quiesce();
            machine.reboot();
        }
    }
}

/// The real machine.
pub struct Real;

impl Machine for Real {
    fn sleep(&mut self, delay: Duration) {
        std::thread::sleep(delay);
    }

    fn shell(&mut self) {
        let shell = ["/bin/sh", "/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists());
        let Some(shell) = shell else {
            tracing::error!("no shell in the initrd (/bin/sh, /bin/busybox)");
            return;
        };
        let mut cmd = std::process::Command::new(shell);
        if shell.ends_with("busybox") {
            cmd.arg("sh");
        }
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("PS1", "iguana# ");
        if let Err(e) = cmd.status() {
            tracing::error!("shell {shell}: {e}");
        }
    }

    fn quiesce(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let all = Pid::from_raw(-1);
        let _ = kill(all, Signal::SIGTERM);
        crate::boot::reap_for(Duration::from_millis(500));
        let _ = kill(all, Signal::SIGKILL);
        crate::boot::reap_for(Duration::from_millis(100));
        nix::unistd::sync();
    }

    fn reboot(&mut self) {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        tracing::error!("reboot(RB_AUTOBOOT): {e}");
    }

    fn poweroff(&mut self) {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        tracing::error!("reboot(RB_POWER_OFF): {e}");
    }

    fn kexec(&mut self) {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC);
        tracing::error!("reboot(RB_KEXEC): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Failsafe = Failsafe { debug: false, reboot_timeout: Duration::from_secs(10) };
    const DEBUG: Failsafe = Failsafe { debug: true, reboot_timeout: Duration::from_secs(10) };

    fn requests(kernel_action: Option<&str>, mountlist: Option<&str>) -> Requests {
        Requests { kernel_action: kernel_action.map(str::to_string), mountlist: mountlist.map(str::to_string) }
    }

    #[test]
    fn decisions() {
        let done = "workflow done, nothing to hand over to";
        let cases: Vec<(Option<&str>, Failsafe, Requests, Action)> = vec![
            (None, OK, requests(None, None), Action::Reboot { reason: done.into(), delay: Duration::ZERO }),
            (Some("job a failed"), OK, requests(None, None), Action::Reboot { reason: "job a failed".into(), delay: Duration::from_secs(10) }),
            (Some("job a failed"), DEBUG, requests(None, None), Action::Shell { reason: "job a failed".into() }),
            // A failed workflow never hands over, whatever the containers wrote.
            (Some("x"), OK, requests(Some("poweroff"), Some("/dev/vda1 /sysroot")), Action::Reboot { reason: "x".into(), delay: Duration::from_secs(10) }),
            (None, OK, requests(Some("poweroff"), None), Action::Poweroff),
            (None, OK, requests(Some("kexec"), Some("ignored")), Action::Kexec),
            (None, OK, requests(Some("reboot"), None), Action::Reboot { reason: "kernelAction reboot".into(), delay: Duration::ZERO }),
        ];
        for (failure, failsafe, req, want) in cases {
            assert_eq!(decide(failure, failsafe, &req), want, "{failure:?} {req:?}");
        }
    }

    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Machine for Recorder {
        fn sleep(&mut self, d: Duration) {
            self.0.push(format!("sleep {}", d.as_secs()));
        }
        fn shell(&mut self) {
            self.0.push("shell".into());
        }
        fn quiesce(&mut self) {
            self.0.push("quiesce".into());
        }
        fn reboot(&mut self) {
            self.0.push("reboot".into());
        }
        fn poweroff(&mut self) {
            self.0.push("poweroff".into());
        }
        fn kexec(&mut self) {
            self.0.push("kexec".into());
        }
    }

    #[test]
    fn execution_order() {
        let cases: Vec<(Action, &[&str])> = vec![
            (Action::Reboot { reason: "r".into(), delay: Duration::from_secs(3) }, &["sleep 3", "quiesce", "reboot"]),
            (Action::Poweroff, &["quiesce", "poweroff"]),
            (Action::Kexec, &["quiesce", "kexec", "reboot"]),
            (Action::Shell { reason: "r".into() }, &["shell", "quiesce", "reboot"]),
        ];
        for (action, want) in cases {
            let mut rec = Recorder::default();
            execute(&action, &mut rec);
            assert_eq!(rec.0, *want, "{action:?}");
        }
    }
}
