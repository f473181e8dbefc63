//! `iguana report URL --machine-id ID [--token-file FILE] [--ca FILE]
//! [--proxy-file FILE] [--heartbeat SECS]`: the helper child that delivers PID 1's events.
//!
//! PID 1 writes one JSON [`Frame`] per line on its stdin. A reader thread
//! puts each into a bounded queue (a full queue drops and counts); the main
//! thread delivers the queue in order: an event is POSTed as
//! `application/cloudevents+json` until a 2xx acknowledges it or a 4xx
//! other than 408/429 refuses it (dropped, and said so), with backoff
//! between tries; a log is PUT to `URL/logs/<machine-id>/<job>`. While a
//! job runs (between its `job.started` and `job.finished`), a `heartbeat`
//! is queued every `--heartbeat` seconds. At end of input the child
//! delivers what is left and exits; PID 1 bounds that wait itself.
//!
//! The token and the proxy (`rd.iguana.proxy=`, whose URL may carry
//! credentials) are read from files PID 1 wrote, never from the command
//! line or the environment, and never printed; URLs are printed redacted.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use super::policy::{self, Queue, Verdict};

/// Items the child holds at most.
pub const QUEUE_CAP: usize = 256;
/// A frame line longer than this is skipped.
pub const FRAME_MAX: u64 = 256 << 10;
/// A job log PUT carries at most this much (the log itself keeps its first
/// and last MiB).
const LOG_MAX: u64 = 4 << 20;
const TOKEN_MAX: u64 = 4 << 10;

/// What PID 1 hands the sender, one JSON document a line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frame {
    /// A CloudEvent; `tail`: a log whose last [`super::LOG_TAIL`] bytes
    /// become `data.log`.
    Event { event: Value, tail: Option<PathBuf> },
    /// PUT `file` to `URL/logs/<machine-id>/<job>`.
    Log { job: String, file: PathBuf },
}

struct Shared {
    queue: Queue<Frame>,
    closed: bool,
    /// The job running now and since when, for heartbeats.
    running: Option<(String, Instant)>,
}

struct Args {
    url: String,
    machine_id: String,
    token_file: Option<PathBuf>,
    /// Extra roots beside the initrd's CA bundle (`rd.iguana.ca=`).
    ca: Option<PathBuf>,
    /// `rd.iguana.proxy=` and `no_proxy=`, as PID 1 wrote them (0600).
    proxy_file: Option<PathBuf>,
    heartbeat: Duration,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let usage = "usage: iguana report URL --machine-id ID [--token-file FILE] [--ca FILE] [--proxy-file FILE] [--heartbeat SECS]";
    let (mut url, mut machine_id, mut token_file) = (None, None, None);
    let (mut ca, mut proxy_file) = (None, None);
    let mut heartbeat = Duration::from_secs(60);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--machine-id" => machine_id = it.next().cloned(),
            "--token-file" => token_file = it.next().map(PathBuf::from),
            "--ca" => ca = Some(it.next().map(PathBuf::from).context(usage)?),
            "--proxy-file" => proxy_file = Some(it.next().map(PathBuf::from).context(usage)?),
            "--heartbeat" => heartbeat = Duration::from_secs(it.next().and_then(|v| v.parse().ok()).context(usage)?),
            other if url.is_none() && !other.starts_with("--") => url = Some(other.to_string()),
            other => bail!("unexpected argument {other:?}\n{usage}"),
        }
    }
    let (Some(url), Some(machine_id)) = (url, machine_id) else { bail!("{usage}") };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("report_url {}: must be http:// or https://", crate::redact::redact_url(&url));
    }
    Ok(Args { url, machine_id, token_file, ca, proxy_file, heartbeat })
}

pub fn cli(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let token = match &args.token_file {
        Some(path) => {
            let bytes = crate::fsutil::read_bounded(path, TOKEN_MAX).with_context(|| format!("report token {}", path.display()))?;
            Some(String::from_utf8_lossy(&bytes).trim().to_string()).filter(|t| !t.is_empty())
        }
        None => None,
    };
    let proxy = match &args.proxy_file {
        Some(path) => crate::proxy::Proxy::read_file(path).with_context(|| format!("read proxy file {}", path.display()))?,
        None => None,
    };
    let agent = agent(&args.url, args.ca.as_deref(), proxy.as_ref())?;
    let shared = Arc::new((Mutex::new(Shared { queue: Queue::new(QUEUE_CAP), closed: false, running: None }), Condvar::new()));
    let reader = Arc::clone(&shared);
    std::thread::spawn(move || read_frames(std::io::stdin().lock(), &reader));
    let sink = Sink { agent, url: args.url.trim_end_matches('/').to_string(), token, machine_id: args.machine_id };
    let (delivered, refused) = deliver(&shared, &sink, args.heartbeat);
    let dropped = shared.0.lock().map(|s| s.queue.dropped).unwrap_or(0);
    eprintln!("report: {delivered} delivered, {refused} refused, {dropped} dropped (queue full)");
    Ok(())
}

/// Reads frames until end of input; a bad or oversize line is skipped.
fn read_frames(mut input: impl BufRead, shared: &(Mutex<Shared>, Condvar)) {
    loop {
        let mut line = Vec::new();
        let n = (&mut input).take(FRAME_MAX + 1).read_until(b'\n', &mut line).unwrap_or(0);
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && n as u64 > FRAME_MAX {
            eprintln!("report: a frame over {FRAME_MAX} bytes skipped");
            // Skip to the end of that line.
            let _ = input.read_until(b'\n', &mut Vec::new());
            continue;
        }
        let Ok(frame) = serde_json::from_slice::<Frame>(&line) else { continue };
        let Ok(mut s) = shared.0.lock() else { return };
        if let Frame::Event { event, .. } = &frame {
            let job = event["subject"].as_str().unwrap_or_default().to_string();
            match event["type"].as_str() {
                Some("job.started") => s.running = Some((job, Instant::now())),
                Some("job.finished") => s.running = None,
                _ => {}
            }
        }
        s.queue.push(frame);
        shared.1.notify_all();
    }
    if let Ok(mut s) = shared.0.lock() {
        s.closed = true;
        shared.1.notify_all();
    }
}

/// Delivers the queue in order until input ended and the queue is empty;
/// returns how many items were delivered and refused.
fn deliver(shared: &(Mutex<Shared>, Condvar), sink: &Sink, heartbeat: Duration) -> (u64, u64) {
    let (mut delivered, mut refused, mut beats) = (0u64, 0u64, 0u64);
    let mut next_beat = Instant::now() + heartbeat;
    loop {
        let frame = {
            let Ok(mut s) = shared.0.lock() else { break };
            loop {
                if Instant::now() >= next_beat {
                    next_beat = Instant::now() + heartbeat;
                    if let Some((job, since)) = s.running.clone() {
                        beats += 1;
                        let event = super::heartbeat(&job, since.elapsed().as_secs());
                        let time = crate::clock::now_text();
                        let mut e = super::cloudevent(&sink.machine_id, 0, &time, &event);
                        e["id"] = format!("{}-heartbeat-{beats}", sink.machine_id).into();
                        s.queue.push(Frame::Event { event: e, tail: None });
                    }
                }
                if let Some(frame) = s.queue.front() {
                    break frame.clone();
                }
                if s.closed {
                    return (delivered, refused);
                }
                let wait = next_beat.saturating_duration_since(Instant::now());
                s = match shared.1.wait_timeout(s, wait) {
                    Ok((s, _)) => s,
                    Err(_) => return (delivered, refused),
                };
            }
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let (status, what) = sink.send(&frame);
            match policy::verdict(status) {
                Verdict::Delivered => {
                    delivered += 1;
                    break;
                }
                Verdict::Drop => {
                    eprintln!("report: {what} refused by {}: HTTP {}; dropped", sink.shown(), status.unwrap_or(0));
                    refused += 1;
                    break;
                }
                Verdict::Retry => {
                    if tries == 1 {
                        let why = status.map_or("no answer".to_string(), |s| format!("HTTP {s}"));
                        eprintln!("report: {what} to {}: {why}; retrying", sink.shown());
                    }
                    std::thread::sleep(policy::backoff(tries));
                }
            }
        }
        if let Ok(mut s) = shared.0.lock() {
            s.queue.pop();
        }
    }
    (delivered, refused)
}

struct Sink {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
    machine_id: String,
}

impl Sink {
    fn shown(&self) -> String {
        crate::redact::redact_url(&self.url)
    }

    /// One try: the HTTP status, or `None` without an answer; and what
    /// was sent, for messages.
    fn send(&self, frame: &Frame) -> (Option<u16>, String) {
        let (request, body, what) = match frame {
            Frame::Event { event, tail } => {
                let mut event = event.clone();
                if let Some(path) = tail {
                    event["data"]["log"] = String::from_utf8_lossy(&read_tail(path, super::LOG_TAIL)).into_owned().into();
                }
                let what = format!("event {} {}", event["type"].as_str().unwrap_or("?"), event["id"].as_str().unwrap_or("?"));
                let body = serde_json::to_vec(&event).unwrap_or_default();
                (self.agent.post(&self.url).header("Content-Type", super::CONTENT_TYPE), body, what)
            }
            Frame::Log { job, file } => {
                let url = log_url(&self.url, &self.machine_id, job);
                let body = crate::fsutil::read_bounded(file, LOG_MAX).unwrap_or_else(|_| read_tail(file, LOG_MAX));
                (self.agent.put(&url).header("Content-Type", "text/plain; charset=utf-8"), body, format!("log of job {job}"))
            }
        };
        let request = match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        match request.send(&body[..]) {
            Ok(response) => (Some(response.status().as_u16()), what),
            Err(_) => (None, what),
        }
    }
}

/// The last `limit` bytes of a regular file; empty when unreadable.
pub fn read_tail(path: &Path, limit: u64) -> Vec<u8> {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(meta.len().saturating_sub(limit)))?;
        let mut out = Vec::new();
        file.take(limit).read_to_end(&mut out)?;
        Ok(out)
    };
    read().unwrap_or_default()
}

/// The initrd's CA bundle (when present) and `extra` are trusted for
/// https; `proxy` (rd.iguana.proxy, from PID 1's file) unless no_proxy
/// names the sink.
fn agent(url: &str, extra: Option<&Path>, proxy: Option<&crate::proxy::Proxy>) -> anyhow::Result<ureq::Agent> {
    let roots = || {
        let bundle = crate::workflow::source::CA_BUNDLE;
        let mut pem = crate::fsutil::read_bounded(Path::new(bundle), 16 << 20).unwrap_or_default();
        if let Some(extra) = extra {
            pem.extend(crate::fsutil::read_bounded(extra, 16 << 20).with_context(|| format!("read CA file {}", extra.display()))?);
        }
        Ok((pem, format!("{bundle} or rd.iguana.ca")))
    };
    crate::workflow::source::http_agent(url, roots, proxy, Duration::from_secs(10))
}

/// Where a job's whole log goes: `{report_url}/logs/<machine-id>/<job>`.
/// The path goes before a query the report URL may carry (a token).
fn log_url(url: &str, machine_id: &str, job: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    format!("{}/logs/{machine_id}/{job}{query}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::log_url;

    #[test]
    fn log_urls_go_before_the_query() {
        let cases = [
            ("http://h/e", "http://h/e/logs/m1/install"),
            ("https://h/e/?k=v", "https://h/e/logs/m1/install?k=v"),
            ("https://h/e?token=x", "https://h/e/logs/m1/install?token=x"),
        ];
        for (url, want) in cases {
            assert_eq!(log_url(url, "m1", "install"), want, "{url}");
        }
    }

    use super::*;

    #[test]
    fn frames_round_trip_and_bad_lines_are_skipped() {
        let event = Frame::Event { event: serde_json::json!({"type": "job.started", "subject": "a", "id": "m-1"}), tail: None };
        let log = Frame::Log { job: "a".into(), file: "/run/iguana/logs/a.log".into() };
        let mut input = serde_json::to_vec(&event).unwrap();
        input.extend(b"\nnot json\n");
        input.extend(vec![b'x'; FRAME_MAX as usize + 10]);
        input.push(b'\n');
        input.extend(serde_json::to_vec(&log).unwrap());
        input.push(b'\n');
        let shared = (Mutex::new(Shared { queue: Queue::new(8), closed: false, running: None }), Condvar::new());
        read_frames(&input[..], &shared);
        let mut s = shared.0.lock().unwrap();
        assert!(s.closed);
        assert_eq!(s.running.as_ref().map(|(job, _)| job.as_str()), Some("a"));
        assert_eq!((s.queue.pop(), s.queue.pop(), s.queue.pop()), (Some(event), Some(log), None));
    }

    /// Heartbeats while a job runs, numbered, for that job; none once it
    /// finished. The interval is the test's (100 ms); what is asserted is
    /// what arrived, not when.
    #[test]
    fn heartbeats_while_a_job_runs_and_not_after() {
        let sink = testkit::EventReceiver::start(0).unwrap();
        let url = sink.url("127.0.0.1");
        let agent = agent(&url, None, None).unwrap();
        let sink_side = Sink { agent, url, token: None, machine_id: "m1".into() };
        let shared = Arc::new((
            Mutex::new(Shared { queue: Queue::new(8), closed: false, running: Some(("build".into(), Instant::now())) }),
            Condvar::new(),
        ));
        let deliverer = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || deliver(&shared, &sink_side, Duration::from_millis(100)))
        };
        let beats = |events: &[Value]| events.iter().filter(|e| e["type"] == "heartbeat").count();
        let guard = Instant::now() + Duration::from_secs(60);
        while beats(&sink.events()) < 3 {
            assert!(Instant::now() < guard, "no 3 heartbeats: {:?}", sink.events());
            std::thread::sleep(Duration::from_millis(50));
        }
        // job.finished, as read_frames handles it; then the end of input.
        {
            let mut s = shared.0.lock().unwrap();
            s.running = None;
            let finished = serde_json::json!({"type": "job.finished", "subject": "build", "id": "m1-9"});
            s.queue.push(Frame::Event { event: finished, tail: None });
            s.closed = true;
            shared.1.notify_all();
        }
        let (delivered, refused) = deliverer.join().unwrap();
        let events = sink.events();
        assert_eq!((delivered, refused), (events.len() as u64, 0));
        let (last, heartbeats) = events.split_last().unwrap();
        assert_eq!(last["id"], "m1-9", "{events:?}");
        assert!(heartbeats.len() >= 3);
        for (n, e) in heartbeats.iter().enumerate() {
            assert_eq!(e["type"], "heartbeat", "{events:?}");
            assert_eq!(e["id"], format!("m1-heartbeat-{}", n + 1));
            assert_eq!((e["subject"].as_str(), e["data"]["job"].as_str()), (Some("build"), Some("build")));
        }
    }

    #[test]
    fn tails_are_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_tail(&path, 4), b"6789");
        assert_eq!(read_tail(&path, 64), b"0123456789");
        assert_eq!(read_tail(&dir.path().join("missing"), 4), b"");
        assert_eq!(read_tail(dir.path(), 4), b"");
    }
}
