//! The output supervisor: one poll loop that copies every running
//! container's output to the console and its log, and reaps children
//! (this is PID 1: every orphan is ours).
//!
//! What it holds per container is bounded by `output`'s types, whatever the
//! container writes; and a round of the loop reads at most one pipe-full per
//! container, so a deadline is checked again within a round's console
//! writes, which the console budget bounds too.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::output::{ConsoleBudget, JobLog, LineAssembler};
use super::Exit;

/// One read: a whole default pipe buffer.
const READ_SIZE: usize = 64 * 1024;

/// A started container whose output is being copied to the console.
pub struct Running {
    pub name: String,
    container: libcontainer::container::Container,
    pid: Pid,
    output: std::fs::File,
    lines: LineAssembler,
    log: Option<JobLog<std::fs::File>>,
    console: ConsoleBudget,
    exit: Option<Exit>,
    /// After the exit: how long to keep reading what is left in the pipe.
    drain_until: Option<Instant>,
}

impl Running {
    /// A container started with init `pid`, writing to `output`; its log
    /// goes to `log` (best effort: without a log file it still runs).
    pub(super) fn new(name: String, container: libcontainer::container::Container, pid: Pid, output: std::fs::File, log: &Path) -> Running {
        let console = ConsoleBudget::new(&name, &log.display().to_string());
        let log = std::fs::File::create(log).ok().map(JobLog::new);
        Running { name, container, pid, output, lines: LineAssembler::default(), log, console, exit: None, drain_until: None }
    }

    /// Output as it came from the pipe: all of it to the log, lines to the
    /// console while its budget lasts.
    fn take(&mut self, bytes: &[u8]) {
        if let Some(log) = self.log.as_mut() {
            log.write(bytes);
        }
        // Past the budget nothing more is shown: do not even split lines.
        if !self.console.spent() {
            let (name, console) = (&self.name, &mut self.console);
            self.lines.feed(bytes, |line| show(console, name, line));
        }
    }

    /// The end of the output: the unfinished line, and the log's tail.
    fn finish(&mut self) {
        let (name, console) = (&self.name, &mut self.console);
        self.lines.finish(|line| show(console, name, line));
        if let Some(log) = self.log.as_mut() {
            log.finish();
        }
    }
}

fn show(console: &mut ConsoleBudget, job: &str, line: &[u8]) {
    for text in console.line(job, line) {
        crate::logging::console_line(&text);
    }
}

/// When a job must have ended: its deadline, and the whole timeout that
/// deadline came from (for the message).
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    pub deadline: Instant,
    pub total: Duration,
}

/// Copies the output of every running container to the console and reaps
/// children (this is PID 1: every orphan is ours). Single-threaded: one
/// poll loop over all the pipes.
pub struct Supervisor {
    running: Vec<Running>,
    buf: Vec<u8>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor { running: Vec::new(), buf: vec![0; READ_SIZE] }
    }
}

impl Supervisor {
    pub fn add(&mut self, running: Running) {
        self.running.push(running);
    }

    /// Waits for the named container to exit; at `timeout`'s deadline it is
    /// killed and `Exit::TimedOut` returned.
    pub fn wait(&mut self, name: &str, timeout: Option<Timeout>) -> Exit {
        if let Some(exit) = self.wait_until(name, timeout.map(|t| t.deadline)) {
            return exit;
        }
        // Exited in time, its output still being drained at the deadline:
        // that is its exit, not a timeout.
        if let Some(exit) = self.running.iter().find(|r| r.name == name).and_then(|r| r.exit) {
            return exit;
        }
        // The job's whole timeout (its pulls included), not what was left
        // of it when the container started.
        let secs = timeout.map_or(0, |t| t.total.as_secs());
        tracing::error!("job {name}: timed out after {secs}s, killing it");
        self.kill(name);
        Exit::TimedOut(secs)
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`; then removes it.
    /// (A container's init ignores SIGTERM unless it handles it, as PID 1
    /// of its namespace; SIGKILL always works.)
    pub fn stop(&mut self, name: &str, grace: Duration) -> Exit {
        self.signal(name, nix::sys::signal::Signal::SIGTERM);
        let exit = match self.wait_until(name, Some(Instant::now() + grace)) {
            Some(exit) => exit,
            None => {
                tracing::info!("{name} did not stop within {}s of SIGTERM: SIGKILL", grace.as_secs());
                self.kill(name)
            }
        };
        self.remove(name);
        exit
    }

    fn kill(&mut self, name: &str) -> Exit {
        self.signal(name, nix::sys::signal::Signal::SIGKILL);
        self.wait_until(name, Some(Instant::now() + Duration::from_secs(10)))
            .unwrap_or(Exit::Signal(nix::sys::signal::Signal::SIGKILL as i32))
    }

    /// Pumps output until the named container has exited and been drained,
    /// or the deadline passes.
    fn wait_until(&mut self, name: &str, deadline: Option<Instant>) -> Option<Exit> {
        loop {
            if let Some(exit) = self.finished(name) {
                return Some(exit);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            self.pump(Duration::from_millis(100), deadline);
        }
    }

    /// Deletes a finished container's state and cgroup.
    pub fn remove(&mut self, name: &str) {
        if let Some(i) = self.running.iter().position(|r| r.name == name) {
            let mut r = self.running.remove(i);
            r.finish();
            let _ = r.container.delete(true);
        }
    }

    fn signal(&mut self, name: &str, signal: nix::sys::signal::Signal) {
        if let Some(r) = self.running.iter().find(|r| r.name == name && r.exit.is_none()) {
            let _ = nix::sys::signal::kill(r.pid, signal);
        }
    }

    /// The exit of a container whose output has been drained.
    fn finished(&self, name: &str) -> Option<Exit> {
        let r = self.running.iter().find(|r| r.name == name)?;
        match (r.exit, r.drain_until) {
            (Some(exit), Some(until)) if Instant::now() >= until => Some(exit),
            (Some(exit), None) => Some(exit),
            _ => None,
        }
    }

    /// One round: reap, then read one pipe-full from each pipe that has
    /// output, waiting at most `limit` for some; a `deadline` that passes
    /// stops the round (console writes may have blocked).
    fn pump(&mut self, limit: Duration, deadline: Option<Instant>) {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        self.reap();
        let now = Instant::now();
        let open: Vec<usize> = self
            .running
            .iter()
            .enumerate()
            .filter(|(_, r)| r.drain_until.is_none_or(|t| now < t))
            .map(|(i, _)| i)
            .collect();
        if open.is_empty() {
            std::thread::sleep(limit.min(Duration::from_millis(50)));
            return;
        }
        let ready: Vec<usize> = {
            let fds: Vec<_> = open.iter().filter_map(|&i| self.running.get(i)).map(|r| r.output.as_fd()).collect();
            let mut polls: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
            let timeout = Timespec { tv_sec: 0, tv_nsec: i64::try_from(limit.as_nanos()).unwrap_or(100_000_000) };
            if poll(&mut polls, Some(&timeout)).unwrap_or(0) == 0 {
                return;
            }
            polls.iter().zip(&open).filter(|(p, _)| !p.revents().is_empty()).map(|(_, &i)| i).collect()
        };
        for i in ready {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            let Some(r) = self.running.get_mut(i) else { continue };
            match r.output.read(&mut self.buf) {
                Ok(0) => {
                    // Every writer closed: nothing more will come.
                    if r.exit.is_some() {
                        r.drain_until = Some(Instant::now());
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Ok(n) => r.take(self.buf.get(..n).unwrap_or_default()),
                Err(_) => {}
            }
        }
    }

    /// Reaps every exited child without blocking, recording container exits.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) => (p, Exit::Code(code)),
                Ok(WaitStatus::Signaled(p, sig, _)) => (p, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            if let Some(r) = self.running.iter_mut().find(|r| r.pid == pid) {
                r.exit = Some(exit);
                // A daemon it left behind may hold the pipe open forever.
                r.drain_until = Some(Instant::now() + Duration::from_millis(300));
            }
        }
        // A container whose init vanished (reaped elsewhere) has ended, and
        // how is unknown: that is not a success.
        for r in self.running.iter_mut().filter(|r| r.exit.is_none()) {
            if nix::sys::signal::kill(r.pid, None) == Err(nix::errno::Errno::ESRCH) {
                tracing::error!("job {}: its init (pid {}) is gone and its exit status with it", r.name, r.pid);
                r.exit = Some(Exit::Lost);
                r.drain_until = Some(Instant::now());
            }
        }
    }
}
