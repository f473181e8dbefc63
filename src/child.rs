//! Helper children of PID 1: the same binary re-executed with a subcommand.
//!
//! Async code (tokio, for oci-client and rtnetlink) and parsing of untrusted
//! registry data run in a child, so PID 1 stays single-threaded (libcontainer
//! needs that) and a panic there fails one step instead of the kernel.
//!
//! Every child runs under a deadline that PID 1 itself enforces: a registry
//! that trickles one byte a second, or a DHCP client stuck in a syscall,
//! cannot hold the boot. When the deadline passes, the child's whole
//! process group is killed (SIGKILL) and reaped.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Where a failing child leaves its error, so PID 1's own error line can
/// say why rather than just "exit status 1".
pub const ERROR_FILE_ENV: &str = "IGUANA_ERROR_FILE";
const ERROR_FILE: &str = "/run/iguana/child-error";
/// A child's error text longer than this is not quoted (its status is).
const ERROR_FILE_MAX: u64 = 64 << 10;

/// How often PID 1 looks whether the child has ended when the kernel gives
/// no pidfd (before Linux 5.3). With one, PID 1 sleeps in poll(2) until the
/// child ends or its deadline comes, and goes on at once.
const POLL: Duration = Duration::from_millis(20);
/// How long PID 1 waits for a killed child to be gone.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs `iguana ARGS...` with the console as stdio and waits for it, at
/// most `limit`. A failure is described by the child's own error message
/// when it left one.
pub fn run(args: &[String], limit: Duration) -> Result<(), String> {
    tracing::debug!("run child: iguana {} (deadline {} s)", crate::redact::args(args), limit.as_secs());
    run_program(Path::new("/proc/self/exe"), args, limit, Path::new(ERROR_FILE))
}

/// Runs `program ARGS...` in a process group of its own; kills that group
/// when `limit` passes. The error names the child (`iguana pull`) and the
/// limit. `error_file` is where the child may leave its own error text.
pub fn run_program(program: &Path, args: &[String], limit: Duration, error_file: &Path) -> Result<(), String> {
    start_program(program, args, limit, error_file)?.wait()
}

/// A helper child PID 1 started and has not waited for yet (`net-up`
/// while the modules phase goes on). Its deadline runs from its start;
/// [`Running::wait`] enforces it. Dropping one unwaited leaves the child
/// to PID 1's reaping of orphans.
#[derive(Debug)]
pub struct Running {
    child: Child,
    what: String,
    limit: Duration,
    deadline: Option<Instant>,
    error_file: PathBuf,
}

/// Starts `iguana ARGS...` like [`run`] but returns at once. Its error
/// file is its own (`/run/iguana/child-error-<subcommand>`), so a child
/// run meanwhile cannot take it.
pub fn start(args: &[String], limit: Duration) -> Result<Running, String> {
    tracing::debug!("start child: iguana {} (deadline {} s)", crate::redact::args(args), limit.as_secs());
    let name = args.first().map_or("", String::as_str);
    let error_file = PathBuf::from(format!("{ERROR_FILE}-{name}"));
    start_program(Path::new("/proc/self/exe"), args, limit, &error_file)
}

fn start_program(program: &Path, args: &[String], limit: Duration, error_file: &Path) -> Result<Running, String> {
    let what = format!("iguana {}", args.first().map_or("", String::as_str));
    // A step whose deadline has already passed (a job timeout used up by
    // earlier pulls) is not started at all.
    if limit.is_zero() {
        return Err(format!("{what} not started: its deadline had passed"));
    }
    let _ = std::fs::remove_file(error_file);
    if let Some(dir) = error_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let child = Command::new(program)
        .args(args)
        .env(ERROR_FILE_ENV, error_file)
        .envs(crate::proxy::child_env(args))
        // Its own group, so the kill reaches anything it started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start {what}: {e}"))?;
    // A limit too far away to represent is no limit.
    let deadline = Instant::now().checked_add(limit);
    Ok(Running { child, what, limit, deadline, error_file: error_file.to_owned() })
}

impl Running {
    /// Kills the child's process group and reaps it: the boot failed
    /// before it needed the child's result.
    pub fn stop(mut self) {
        tracing::debug!("stop child: {}", self.what);
        kill_group(&mut self.child);
    }

    /// Waits for the child until its deadline (counted from its start);
    /// past it, kills its process group. The error is the child's own
    /// message when it left one.
    pub fn wait(mut self) -> Result<(), String> {
        let what = &self.what;
        let status = match wait_until(&mut self.child, self.deadline) {
            Ok(Some(status)) => status,
            Ok(None) => {
                kill_group(&mut self.child);
                return Err(format!("{what} did not finish within {}; killed", seconds(self.limit)));
            }
            Err(e) => {
                kill_group(&mut self.child);
                return Err(format!("wait for {what}: {e}"));
            }
        };
        if status.success() {
            return Ok(());
        }
        // The child wrote it, but a child's bug must not grow PID 1's heap.
        match crate::fsutil::read_bounded(&self.error_file, ERROR_FILE_MAX) {
            Ok(bytes) if !String::from_utf8_lossy(&bytes).trim().is_empty() => {
                Err(String::from_utf8_lossy(&bytes).trim().to_string())
            }
            _ => Err(describe(status)),
        }
    }
}

/// Starts `command` as a helper that nothing on the boot's path waits for
/// (the progress relay, hotplug, the IPv6 watcher) at the lowest priority,
/// nice 19: its start (the exec of this 8 MB binary and its setup) takes
/// the CPU when the boot's own steps leave it, instead of sharing it with
/// them (a one-CPU VM runs every helper's start on the same CPU as the
/// module loads, DHCP and the pull). Set right after `spawn` returns, which
/// is once the child has exec'd, before it ran far (nice is per thread:
/// threads it started by then keep nice 0). A helper whose later work is
/// wanted promptly (hotplug's drivers, the relay's lines) goes back to
/// [`normal_priority`] once set up. A failure to lower it is logged and
/// the child runs as it is.
pub fn spawn_background(command: &mut Command) -> std::io::Result<Child> {
    let child = command.spawn()?;
    let pid = rustix::process::Pid::from_child(&child);
    if let Err(e) = rustix::process::setpriority_process(Some(pid), BACKGROUND_NICE) {
        tracing::warn!("nice {BACKGROUND_NICE} for pid {}: {e}", child.id());
    }
    Ok(child)
}

/// The priority of [`spawn_background`]'s children.
pub const BACKGROUND_NICE: i32 = 19;

/// Back to nice 0 (root may lower its nice value): a background helper
/// whose start is over and whose work is wanted promptly, such as loading
/// a late device's driver while a pull keeps the CPU busy.
pub fn normal_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, 0) {
        tracing::debug!("nice 0: {e}");
    }
}

/// The child's status once it ended, or `None` when `deadline` came first.
/// Its pidfd becomes readable when it ends, so the wait ends then, not at
/// the next poll tick (each helper on the boot's path used to cost PID 1
/// up to 20 ms of looking).
fn wait_until(child: &mut Child, deadline: Option<Instant>) -> std::io::Result<Option<ExitStatus>> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut pidfd = rustix::process::pidfd_open(rustix::process::Pid::from_child(child), rustix::process::PidfdFlags::empty()).ok();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Ok(None);
        }
        match &pidfd {
            Some(fd) => {
                // Capped so a spurious wakeup or EINTR only loops.
                let step = left.min(Duration::from_secs(1));
                let timeout = Timespec { tv_sec: step.as_secs().try_into().unwrap_or(1), tv_nsec: step.subsec_nanos().into() };
                match poll(&mut [PollFd::new(fd, PollFlags::IN)], Some(&timeout)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    // Never spin on a poll that fails at once: from here on
                    // look every POLL, as without a pidfd.
                    Err(_) => pidfd = None,
                }
            }
            None => std::thread::sleep(POLL.min(left)),
        }
    }
}

/// SIGKILL to the child's process group, then reap the child itself (its
/// own children are orphans now, and PID 1's reaper collects them).
fn kill_group(child: &mut Child) {
    match i32::try_from(child.id()) {
        Ok(pid) => {
            if let Err(e) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL) {
                tracing::warn!("kill process group {pid}: {e}");
                let _ = child.kill();
            }
        }
        Err(_) => {
            let _ = child.kill();
        }
    }
    // SIGKILL waits for a process in uninterruptible sleep (a stuck driver
    // or netlink call) to come back to user space: wait a bounded time, then
    // leave it to PID 1's reaping of every child.
    let _ = wait_until(child, Instant::now().checked_add(KILL_GRACE));
}

/// `90 s`, or `30 min` for whole minutes.
fn seconds(limit: Duration) -> String {
    let secs = limit.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// "exit status 1" / "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "unknown status".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, limit: Duration) -> (Result<(), String>, Duration, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let args = vec!["-c".to_string(), script.to_string()];
        let start = Instant::now();
        let result = run_program(Path::new("/bin/sh"), &args, limit, &dir.path().join("error"));
        (result, start.elapsed(), dir)
    }

    #[test]
    fn a_child_past_its_deadline_is_killed_and_reaped() {
        // The grandchild `sleep` holds the pipe open: only a group kill ends it.
        let (result, took, dir) = sh("sleep 30 & echo $! > \"${IGUANA_ERROR_FILE%error}pid\"; wait", Duration::from_millis(500));
        assert_eq!(result, Err("iguana -c did not finish within 0 s; killed".to_string()));
        assert!(took < Duration::from_secs(10), "waited {took:?}");
        let pid: i32 = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().parse().unwrap();
        // The grandchild dies too (a zombie at most, until init reaps it).
        let dead = || {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            state.is_empty() || state.contains(") Z ")
        };
        let since = Instant::now();
        while !dead() && since.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(dead(), "grandchild {pid} still running");
    }

    #[test]
    fn a_started_child_keeps_its_deadline_while_nobody_waits() {
        // (script, time spent elsewhere before waiting, result)
        let cases: [(&str, u64, Result<(), String>); 3] = [
            ("exit 0", 0, Ok(())),
            ("exit 0", 300, Ok(())),
            ("sleep 30", 800, Err("iguana -c did not finish within 0 s; killed".to_string())),
        ];
        for (script, elsewhere, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let args = vec!["-c".to_string(), script.to_string()];
            let running = start_program(Path::new("/bin/sh"), &args, Duration::from_millis(500), &dir.path().join("error")).unwrap();
            std::thread::sleep(Duration::from_millis(elsewhere));
            // The deadline ran while the test did something else.
            assert_eq!(running.wait(), expected, "{script} after {elsewhere} ms");
        }
    }

    #[test]
    fn results_within_the_deadline() {
        for (script, expected) in [
            ("exit 0", Ok(())),
            ("exit 3", Err("exit status 3".to_string())),
            ("kill -TERM $$", Err("killed by signal 15".to_string())),
            ("echo 'pull: registry said no' > \"$IGUANA_ERROR_FILE\"; exit 1", Err("pull: registry said no".to_string())),
        ] {
            let (result, _, _) = sh(script, Duration::from_secs(20));
            assert_eq!(result, expected, "{script}");
        }
    }

    /// nice is field 19 of /proc/PID/stat (after the parenthesized name).
    fn nice_of(pid: u32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_background_helper_runs_at_the_lowest_priority_and_a_waited_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut background = spawn_background(Command::new("/bin/sleep").arg("5")).unwrap();
        // As PID 1 starts net-up and the pull (start/run): never niced.
        let waited = start_program(Path::new("/bin/sleep"), &["5".to_string()], Duration::from_secs(30), &dir.path().join("error")).unwrap();
        let mine = nice_of(std::process::id());
        let (got_background, got_waited) = (nice_of(background.id()), nice_of(waited.child.id()));
        background.kill().unwrap();
        background.wait().unwrap();
        waited.stop();
        assert_ne!(mine, BACKGROUND_NICE, "the test runs at nice {mine}: it cannot tell the two apart");
        assert_eq!(got_background, BACKGROUND_NICE);
        assert_eq!(got_waited, mine);
    }

    #[test]
    fn limits_read_as_seconds_or_minutes() {
        for (secs, expected) in [(0, "0 s"), (90, "90 s"), (120, "2 min"), (1800, "30 min")] {
            assert_eq!(seconds(Duration::from_secs(secs)), expected);
        }
    }
}
