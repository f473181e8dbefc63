//! PID 1's side of the reporter: it stamps events and hands them to the
//! `iguana report` child without ever blocking.
//!
//! The pipe to the child is non-blocking on PID 1's end (1 MiB): a frame
//! that does not fit is dropped and counted, a frame written in part keeps
//! its rest until the next write. Before the child runs (the URL may come
//! from the workflow, and the network must be up) events wait in a small
//! bounded buffer. `finish` closes the pipe and gives the child at most a
//! deadline PID 1 enforces itself to deliver the rest, then kills its
//! process group: a dead sink costs a handover [`FLUSH_LIMIT`], no more.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::sender::Frame;
use super::Event;

/// How long a handover waits for the sender to deliver what is queued.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Frames held before the sender runs.
const BUFFER_MAX: usize = 64;
const PIPE_SIZE: usize = 1 << 20;
/// `rd.iguana.report_token=` is copied here (0600) for the child to read.
const TOKEN_COPY: &str = "/run/iguana/report-token";

#[derive(Default)]
struct State {
    url: Option<String>,
    token_file: Option<PathBuf>,
    /// The copy of `rd.iguana.report_token` PID 1 wrote: removed before
    /// the handover ([`forget`]), the next system keeps /run.
    token_copy: Option<PathBuf>,
    ca: Option<PathBuf>,
    machine_id: Option<String>,
    seq: u64,
    buffer: Vec<Vec<u8>>,
    sender: Option<Running>,
    /// No report_url anywhere: events are not kept.
    off: bool,
    dropped: u64,
    /// The last job that failed and its log, for the pstore summary.
    failed_job: Option<FailedJob>,
    /// The binary started as `iguana report`: `/proc/self/exe` unless a
    /// host test (whose own binary is not iguana) named one.
    binary: Option<PathBuf>,
}

struct Running {
    child: Child,
    pipe: Pipe,
}

/// PID 1's non-blocking end of the pipe, with the rest of a frame it
/// could write only in part.
struct Pipe {
    fd: Option<OwnedFd>,
    pending: Vec<u8>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(State::default))
}

/// From the command line: the URL (may be `None`, the workflow may name
/// one), the token (copied to a 0600 file; else the initrd's
/// [`super::TOKEN_FILE`] when present) and the extra CA file.
pub fn configure(url: Option<&str>, token: Option<&str>, ca: Option<&str>) {
    configure_with_copy(url, token, ca, Path::new(TOKEN_COPY));
}

/// [`configure`] with the token's copy at `copy` (tests).
fn configure_with_copy(url: Option<&str>, token: Option<&str>, ca: Option<&str>, copy: &Path) {
    let token_file = match token {
        Some(token) => {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(copy)
                .and_then(|mut f| f.write_all(token.as_bytes()));
            match written {
                Ok(()) => Some(copy.to_path_buf()),
                Err(e) => {
                    tracing::warn!("report: write {}: {e}; events go without a token", copy.display());
                    None
                }
            }
        }
        None => Some(PathBuf::from(super::TOKEN_FILE)).filter(|p| p.is_file()),
    };
    with(|s| {
        s.url = url.map(str::to_owned);
        s.token_copy = token.and(token_file.clone());
        s.token_file = token_file;
        s.ca = ca.map(PathBuf::from);
    });
}

/// The workflow's `report:`, used when the command line named none.
pub fn workflow_url(url: Option<&str>, verified: bool) {
    with(|s| {
        let (url, keep_token) = report_target(s.url.as_deref(), url, verified);
        s.url = url;
        if !keep_token && s.token_file.take().is_some() {
            tracing::warn!("report: the workflow's report: URL is not from a verified workflow: events go without the token");
        }
    });
}

/// The report URL and whether the token goes with it: the command line's
/// URL wins; a workflow's `report:` gets the token only when the workflow
/// is verified (an unsigned control_url could send it anywhere).
fn report_target(cmdline: Option<&str>, workflow: Option<&str>, verified: bool) -> (Option<String>, bool) {
    match (cmdline, workflow) {
        (Some(url), _) => (Some(url.to_owned()), true),
        (None, Some(url)) => (Some(url.to_owned()), verified),
        (None, None) => (None, true),
    }
}

/// Host tests: the iguana binary to start as the sender (PID 1 starts
/// itself, `/proc/self/exe`).
pub fn use_binary(path: &Path) {
    with(|s| s.binary = Some(path.to_owned()));
}

/// Events are stamped with the machine id; before it is known they are not kept.
pub fn set_machine_id(id: &str) {
    with(|s| s.machine_id = Some(id.to_owned()));
}

pub fn emit(event: Event) {
    emit_with_tail(event, None);
}

/// An event whose `data.log` the sender fills with the end of `tail`.
pub fn emit_with_tail(event: Event, tail: Option<PathBuf>) {
    with(|s| {
        let Some(id) = s.machine_id.clone() else { return };
        s.seq += 1;
        let event = super::cloudevent(&id, s.seq, &crate::clock::now_text(), &event);
        queue(s, &Frame::Event { event, tail });
    });
}

/// The job's whole log, PUT when the job ended.
pub fn put_log(job: &str, file: &Path) {
    with(|s| queue(s, &Frame::Log { job: job.to_owned(), file: file.to_owned() }));
}

/// The last job that failed: its name, log and /iguana/reason.
#[derive(Debug, Clone)]
pub struct FailedJob {
    pub job: String,
    pub log: PathBuf,
    pub reason: Option<String>,
}

pub fn note_failed_job(job: &str, log: &Path, reason: Option<&str>) {
    let failed = FailedJob { job: job.to_owned(), log: log.to_owned(), reason: reason.map(str::to_owned) };
    with(|s| s.failed_job = Some(failed));
}

pub fn failed_job() -> Option<FailedJob> {
    with(|s| s.failed_job.clone())
}

fn queue(s: &mut State, frame: &Frame) {
    if s.off {
        return;
    }
    let Ok(mut line) = serde_json::to_vec(frame) else { return };
    line.push(b'\n');
    let sent = match s.sender.as_mut() {
        Some(running) => running.pipe.write(&line),
        None if s.buffer.len() < BUFFER_MAX => {
            s.buffer.push(line);
            true
        }
        None => false,
    };
    if !sent {
        s.dropped += 1;
    }
}

impl Pipe {
    /// Writes what is pending, then `line`, never blocking; false when
    /// `line` could not be taken (pipe full or closed).
    fn write(&mut self, line: &[u8]) -> bool {
        if !self.drain() {
            return false;
        }
        let Some(pipe) = &self.fd else { return false };
        match rustix::io::write(pipe, line) {
            Ok(n) if n == line.len() => true,
            Ok(n) => {
                self.pending = line[n..].to_vec();
                true
            }
            Err(_) => false,
        }
    }
}

impl Pipe {
    /// True once nothing is pending.
    fn drain(&mut self) -> bool {
        let Some(pipe) = &self.fd else { return false };
        while !self.pending.is_empty() {
            match rustix::io::write(pipe, &self.pending) {
                Ok(n) => drop(self.pending.drain(..n)),
                Err(_) => return false,
            }
        }
        true
    }
}

/// Starts the sender when there is a URL and it does not run yet; with no
/// URL anywhere, reporting is off and the buffer goes.
pub fn start() {
    with(|s| {
        if s.sender.is_some() || s.off {
            return;
        }
        let (Some(url), Some(id)) = (s.url.clone(), s.machine_id.clone()) else {
            s.off = s.url.is_none();
            s.buffer.clear();
            return;
        };
        let binary = s.binary.clone().unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        match spawn(&binary, &url, &id, s.token_file.as_deref(), s.ca.as_deref()) {
            Ok(mut running) => {
                tracing::info!("report: events to {}", crate::redact::redact_url(&url));
                for line in std::mem::take(&mut s.buffer) {
                    if !running.pipe.write(&line) {
                        s.dropped += 1;
                    }
                }
                s.sender = Some(running);
            }
            Err(e) => {
                tracing::warn!("report: start iguana report: {e}; no events will be sent");
                s.off = true;
                s.buffer.clear();
            }
        }
    });
}

/// A pipe whose write end (PID 1's) never blocks; close-on-exec both.
fn pipe(size: usize) -> std::io::Result<(OwnedFd, Pipe)> {
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    rustix::fs::fcntl_setfl(&writer, rustix::fs::OFlags::NONBLOCK)?;
    let _ = rustix::pipe::fcntl_setpipe_size(&writer, size);
    Ok((reader, Pipe { fd: Some(writer), pending: Vec::new() }))
}

fn spawn(binary: &Path, url: &str, id: &str, token: Option<&Path>, ca: Option<&Path>) -> std::io::Result<Running> {
    let (reader, writer) = pipe(PIPE_SIZE)?;
    let mut args: Vec<String> = vec!["report".into(), url.into(), "--machine-id".into(), id.into()];
    if let Some(token) = token {
        args.extend(["--token-file".into(), token.display().to_string()]);
    }
    if let Some(ca) = ca {
        args.extend(["--ca".into(), ca.display().to_string()]);
    }
    // The one proxy file PID 1 wrote for pull and fetch too (removed by
    // proxy::forget before the handover, whatever became of this child).
    if let Some(file) = crate::proxy::exported_file() {
        args.extend(["--proxy-file".into(), file.display().to_string()]);
    }
    let child = Command::new(binary).args(&args).stdin(Stdio::from(reader)).process_group(0).spawn()?;
    Ok(Running { child, pipe: writer })
}

/// Before the handover, after [`finish`]: the token's copy goes (the
/// switch_root'ed system gets /run as it is).
pub fn forget() {
    if let Some(copy) = with(|s| s.token_copy.take()) {
        let _ = std::fs::remove_file(copy);
    }
}

/// Before a handover: the sender gets the end of input and at most `limit`
/// to deliver; then it is killed. Never fails the boot.
pub fn finish(limit: Duration) {
    start();
    let Some(running) = with(|s| {
        if s.dropped > 0 {
            tracing::warn!("report: {} events dropped (the sender fell behind)", s.dropped);
        }
        s.sender.take()
    }) else {
        return;
    };
    flush(running, limit);
}

/// Closes the child's input and gives it at most `limit` to exit; then
/// kills its process group.
fn flush(mut running: Running, limit: Duration) {
    let deadline = Instant::now() + limit;
    // The rest of a frame written in part, then the end of input.
    while !running.pipe.drain() && Instant::now() < deadline && matches!(running.child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    running.pipe.fd = None;
    loop {
        match running.child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    tracing::warn!("report: events not delivered within {} s; going on without them", limit.as_secs());
    if let Ok(pid) = i32::try_from(running.child.id()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    let gone = Instant::now() + Duration::from_secs(1);
    while matches!(running.child.try_wait(), Ok(None)) && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    /// The token given on the command line is copied for the sender, root
    /// only, and the copy is gone before the handover (/run goes over).
    #[test]
    fn the_token_copy_is_root_only_and_forgotten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("report-token");
        super::configure_with_copy(Some("http://127.0.0.1:9/e"), Some("s3cr3t"), None, &copy);
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "s3cr3t");
        assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
        super::forget();
        assert!(!copy.exists(), "the token's copy outlives the handover");
    }

    #[test]
    fn the_token_goes_only_where_the_initrd_or_a_verified_workflow_says() {
        // (command line URL, workflow's report:, workflow verified) -> (URL, token kept)
        let cases = [
            (Some("http://a/e"), Some("http://b/e"), false, (Some("http://a/e"), true)),
            (None, Some("http://b/e"), true, (Some("http://b/e"), true)),
            (None, Some("http://b/e"), false, (Some("http://b/e"), false)),
            (None, None, false, (None, true)),
        ];
        for (cmdline, workflow, verified, (url, token)) in cases {
            let got = super::report_target(cmdline, workflow, verified);
            assert_eq!((got.0.as_deref(), got.1), (url, token), "{cmdline:?} {workflow:?} {verified}");
        }
    }

    use super::*;
    use std::io::Read;

    #[test]
    fn a_full_pipe_drops_frames_and_never_blocks() {
        let (reader, mut pipe) = pipe(4096).unwrap();
        let mut reader = std::fs::File::from(reader);
        let mut read = |n: usize| {
            let mut buf = vec![0; n];
            reader.read_exact(&mut buf).unwrap();
            buf
        };
        // Nobody reads yet: a frame larger than the pipe goes in part, its
        // rest is kept; the next frame is refused, without blocking.
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        assert!(pipe.write(&big));
        assert_eq!(pipe.pending.len(), 5000 - 4096);
        assert!(!pipe.write(b"refused\n"));
        // The reader catches up: the rest goes first, then the next frame.
        let mut got = read(4096);
        assert!(pipe.write(b"next\n"));
        got.extend(read(5000 - 4096 + 5));
        assert_eq!(&got[..5000], &big[..]);
        assert_eq!(&got[5000..], b"next\n");
        // A closed pipe takes nothing.
        pipe.fd = None;
        assert!(!pipe.write(b"late\n"));
    }
}
