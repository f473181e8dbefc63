//! The output supervisor: one poll loop that copies every running
//! container's output to the console and its log, and reaps children
//! (this is PID 1: every orphan is ours).

use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::Exit;

/// A started container whose output is being copied to the console.
pub struct Running {
    pub name: String,
    pub(super) container: libcontainer::container::Container,
    pub(super) pid: Option<Pid>,
    pub(super) output: std::fs::File,
    pub(super) pending: Vec<u8>,
    pub(super) log: Option<std::fs::File>,
    pub(super) exit: Option<Exit>,
    /// After the exit: how long to keep reading what is left in the pipe.
    pub(super) drain_until: Option<Instant>,
}

/// Copies the output of every running container to the console and reaps
/// children (this is PID 1: every orphan is ours). Single-threaded: one
/// poll loop over all the pipes.
#[derive(Default)]
pub struct Supervisor {
    running: Vec<Running>,
}

impl Supervisor {
    pub fn add(&mut self, running: Running) {
        self.running.push(running);
    }

    /// Waits for the named container to exit; after `timeout` it is killed
    /// and `Exit::TimedOut` returned.
    pub fn wait(&mut self, name: &str, timeout: Option<Duration>) -> Exit {
        if let Some(exit) = self.wait_until(name, timeout.map(|t| Instant::now() + t)) {
            return exit;
        }
        let secs = timeout.map_or(0, |t| t.as_secs());
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
            self.pump(Duration::from_millis(100));
        }
    }

    /// Deletes a finished container's state and cgroup.
    pub fn remove(&mut self, name: &str) {
        if let Some(i) = self.running.iter().position(|r| r.name == name) {
            let mut r = self.running.remove(i);
            flush(&mut r);
            let _ = r.container.delete(true);
        }
    }

    fn signal(&mut self, name: &str, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.running.iter().find(|r| r.name == name && r.exit.is_none()).and_then(|r| r.pid) {
            let _ = nix::sys::signal::kill(pid, signal);
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

    /// One round: reap, then read whatever the pipes have, for at most `limit`.
    fn pump(&mut self, limit: Duration) {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        self.reap();
        let now = Instant::now();
        let open: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].drain_until.is_none_or(|t| now < t))
            .collect();
        if open.is_empty() {
            std::thread::sleep(limit.min(Duration::from_millis(50)));
            return;
        }
        let ready: Vec<usize> = {
            let fds: Vec<_> = open.iter().map(|&i| self.running[i].output.as_fd()).collect();
            let mut polls: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
            let timeout = Timespec { tv_sec: 0, tv_nsec: i64::try_from(limit.as_nanos()).unwrap_or(100_000_000) };
            if poll(&mut polls, Some(&timeout)).unwrap_or(0) == 0 {
                return;
            }
            polls.iter().zip(&open).filter(|(p, _)| !p.revents().is_empty()).map(|(_, &i)| i).collect()
        };
        let mut buf = [0u8; 8192];
        for i in ready {
            let r = &mut self.running[i];
            match r.output.read(&mut buf) {
                Ok(0) => {
                    // Every writer closed: nothing more will come.
                    if r.exit.is_some() {
                        r.drain_until = Some(Instant::now());
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Ok(n) => {
                    r.pending.extend_from_slice(&buf[..n]);
                    emit_lines(&r.name, &mut r.pending, r.log.as_mut(), false);
                }
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
            if let Some(r) = self.running.iter_mut().find(|r| r.pid == Some(pid)) {
                r.exit = Some(exit);
                // A daemon it left behind may hold the pipe open forever.
                r.drain_until = Some(Instant::now() + Duration::from_millis(300));
            }
        }
        // A container whose init vanished (reaped elsewhere) counts as ended.
        for r in self.running.iter_mut().filter(|r| r.exit.is_none()) {
            if let Some(pid) = r.pid {
                if nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH) {
                    r.exit = Some(Exit::Signal(0));
                    r.drain_until = Some(Instant::now());
                }
            }
        }
    }
}

fn flush(r: &mut Running) {
    emit_lines(&r.name, &mut r.pending, r.log.as_mut(), true);
}

/// Prints every complete line in `pending` as `[job] line`; with `flush`,
/// the incomplete tail too.
fn emit_lines(job: &str, pending: &mut Vec<u8>, mut log: Option<&mut std::fs::File>, flush: bool) {
    use std::io::Write;
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line[..end]);
        crate::logging::console_line(&format!("[{job}] {}", text.trim_end_matches('\r')));
        if let Some(log) = log.as_deref_mut() {
            let _ = log.write_all(&line);
        }
    }
    if flush && !pending.is_empty() {
        let text = String::from_utf8_lossy(pending).into_owned();
        crate::logging::console_line(&format!("[{job}] {text}"));
        if let Some(log) = log.as_deref_mut() {
            let _ = log.write_all(pending);
        }
        pending.clear();
    }
}

