//! Phase "workflow": which jobs run, in which order, and running them.
//!
//! The workflow comes, in upstream's fallback order, from
//! `rd.iguana.control_url`, else from `rd.iguana.containers` (one job per
//! image, in order), else from the built-in `/etc/iguana/control.yaml`.
//! Jobs run sequentially in file order. A job whose `needs` did not all
//! succeed is skipped. A failed job stops the workflow unless it has
//! `continue_on_error`. Each image is pulled by a child process
//! (`iguana pull`) so that async code and untrusted registry data never run
//! inside PID 1; the containers are run by PID 1 itself.

pub mod expires;
mod images;
pub mod name;
pub mod plan;
pub mod schema;
pub mod source;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::cmdline::Cmdline;
use crate::report;
use crate::trust::Keys;
use crate::container::{self, Bind, Dirs, Exit, ImageConfig, Job, Stdin, Supervisor, Timeout};
use schema::{Container, Workflow};
use volumes::Source;

/// How long a service gets between SIGTERM and SIGKILL.
const SERVICE_GRACE: Duration = Duration::from_secs(5);
/// An image's config.json (written by the pull child from the registry's
/// config blob: env, entrypoint, cmd...) larger than this is refused.
const CONFIG_MAX_SIZE: u64 = 4 << 20;
/// A pull's deadline when its job has no `timeout` (which covers pull + run).
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The control_url fetch: 5 tries of at most 30 s each plus their backoff.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// /iguana/reason is read up to this.
const REASON_MAX: u64 = 4 << 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nothing to run: no rd.iguana.control_url, no rd.iguana.containers and no {0}")]
    Nothing(String),
    /// `url` is already redacted.
    #[error("control_url {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("workflow {origin}")]
    Read { origin: String, #[source] source: crate::fsutil::Error },
    #[error("workflow {origin}: {source}")]
    Parse { origin: String, #[source] source: schema::Error },
    #[error("workflow {origin}: refused")]
    Signature { origin: String, #[source] source: Box<crate::trust::blob::Error> },
    #[error("workflow {origin}: refused")]
    Expired { origin: String, #[source] source: Box<expires::Expired> },
    #[error("job {job}: {reason}")]
    Pull { job: String, image: String, reason: String },
    #[error("job {job}: image config")]
    Config { job: String, #[source] source: crate::fsutil::Error },
    #[error("job {job}: image config {path}")]
    ConfigJson { job: String, path: PathBuf, #[source] source: serde_json::Error },
    #[error("job {job}: volume {path}")]
    Volume { job: String, path: PathBuf, #[source] source: std::io::Error },
    #[error(transparent)]
    Container(#[from] container::Error),
    #[error("job {job} failed: {exit}")]
    Failed { job: String, exit: Exit },
    #[error("workflow stopped")]
    Stopped(#[source] Box<Error>),
}

/// A workflow as loaded, with what the boot needs to know about its origin.
#[derive(Debug)]
pub struct Loaded {
    pub workflow: Workflow,
    /// Where it came from, as lines show it (a redacted URL or a path).
    pub origin: String,
    /// Whether the initrd's trust vouches for its content: signed by one of
    /// its keys (a control_url) or part of the initrd itself (the built-in
    /// file). Never with no keys, and never for `rd.iguana.containers`
    /// (the kernel command line is as untrusted as the network).
    pub verified: bool,
}

/// Where the workflow comes from, in upstream's fallback order. Fetching a
/// remote control_url happens in a child (`iguana fetch`). With `keys`, a
/// control_url needs a signature by one of them beside it (`URL.sig` or
/// `URL.sigstore.json`), fetched by the same child under the same deadline.
pub fn load(args: &Cmdline, builtin: &Path, work: &Path, keys: &Keys) -> Result<Loaded, Error> {
    load_with(args, builtin, work, keys, &|fetch| crate::child::run(fetch, FETCH_TIMEOUT))
}

/// [`load`] with the way `iguana fetch ARGS...` is run (in PID 1: a child
/// under `FETCH_TIMEOUT`; the host tests run the built binary).
pub fn load_with(
    args: &Cmdline,
    builtin: &Path,
    work: &Path,
    keys: &Keys,
    run_fetch: &dyn Fn(&[String]) -> Result<(), String>,
) -> Result<Loaded, Error> {
    if let Some(url) = &args.control_url {
        let shown = crate::redact::redact_url(url);
        let fetch_err = |reason: String| Error::Fetch { url: shown.clone(), reason };
        let path = match source::locate(url).map_err(fetch_err)? {
            source::Location::File(path) => path,
            source::Location::Http(_) => {
                let out = work.join("control.yaml");
                let _ = std::fs::create_dir_all(work);
                let mut fetch = vec!["fetch".into(), url.clone(), "--out".into(), out.display().to_string()];
                if !keys.is_empty() {
                    fetch.push("--signature".into());
                }
                run_fetch(&fetch).map_err(crate::clock::with_hint).map_err(fetch_err)?;
                out
            }
        };
        let text = crate::fsutil::read_bounded(&path, source::MAX_SIZE)
            .map_err(|source| Error::Read { origin: shown.clone(), source })?;
        // Checked before the YAML parser sees a byte of it.
        if !keys.is_empty() {
            let (key, sig) = crate::trust::blob::verify_beside(keys, &path, &text, &shown)
                .map_err(|source| Error::Signature { origin: shown.clone(), source: Box::new(source) })?;
            tracing::info!("workflow {shown}: signed by {} ({})", key.name, sig_kind(&sig));
        }
        let workflow = schema::parse(&text).map_err(|source| Error::Parse { origin: shown.clone(), source })?;
        return Ok(Loaded { workflow, origin: shown, verified: !keys.is_empty() });
    }
    if !args.containers.is_empty() {
        if !keys.is_empty() {
            tracing::info!("rd.iguana.containers: from the command line, unsigned; each image needs its own signature");
        }
        return Ok(Loaded { workflow: from_images(&args.containers), origin: "rd.iguana.containers".into(), verified: false });
    }
    let origin = builtin.display().to_string();
    match crate::fsutil::read_bounded(builtin, source::MAX_SIZE) {
        Ok(text) => match schema::parse(&text) {
            // Part of the initrd: as trusted as the keys beside it.
            Ok(workflow) => Ok(Loaded { workflow, origin, verified: !keys.is_empty() }),
            Err(source) => Err(Error::Parse { origin, source }),
        },
        Err(e) if e.is_not_found() => Err(Error::Nothing(origin)),
        Err(source) => Err(Error::Read { origin, source }),
    }
}

/// `.sig` or `.sigstore.json`, from a signature file's path.
fn sig_kind(path: &Path) -> &'static str {
    let name = path.to_string_lossy();
    crate::trust::blob::SUFFIXES.into_iter().find(|s| name.ends_with(s)).unwrap_or("signature")
}

/// Refuses a workflow past its `expires:` at wall clock `now` for an
/// iguana built at `build` (seconds since 1970; see `expires::check`).
/// Called after the clock phase.
pub fn check_expiry(loaded: &Loaded, now: u64, build: u64) -> Result<(), Error> {
    let Some(expires) = &loaded.workflow.expires else { return Ok(()) };
    match expires::check(expires, now, build) {
        Ok(Some(note)) => tracing::warn!("workflow {}: {note}", loaded.origin),
        Ok(None) => tracing::info!("workflow {}: valid until {expires}", loaded.origin),
        Err(source) => return Err(Error::Expired { origin: loaded.origin.clone(), source: Box::new(source) }),
    }
    Ok(())
}

/// One job per image, named after the image's last path component; a name
/// that repeats gets a `-2`, `-3`... suffix. Every name follows the name
/// rule (`name::valid`) whatever the reference.
pub fn from_images(images: &[String]) -> Workflow {
    let mut jobs: IndexMap<String, schema::Job> = IndexMap::new();
    for image in images {
        let base = job_name(image);
        let mut name = base.clone();
        let mut n = 1;
        while jobs.contains_key(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        let container = Container { image: image.clone(), env: Default::default(), volumes: Vec::new() };
        let job = schema::Job {
            container,
            services: Default::default(),
            needs: Default::default(),
            continue_on_error: false,
            steps: Vec::new(),
            timeout: None,
        };
        jobs.insert(name, job);
    }
    Workflow { name: Some("rd.iguana.containers".into()), description: None, expires: None, env: Default::default(), jobs: schema::Unique(jobs), report: None }
}

/// At most 64 characters, so that a `-N` suffix keeps it within the rule.
/// A leading `.` or `-` is dropped: `host/..:tag` must not name `..`.
fn job_name(image: &str) -> String {
    let path = image.split('@').next().unwrap_or(image);
    let last = path.rsplit('/').next().unwrap_or(path);
    let last = last.split(':').next().unwrap_or(last);
    let clean: String = last
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' })
        .skip_while(|c| *c == '.' || *c == '-')
        .take(64)
        .collect();
    if name::valid(&clean) { clean } else { "job".to_string() }
}

/// What happened to one job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed(String),
    Skipped(String),
}

/// Everything a workflow run needs from the boot.
pub struct Context<'a> {
    pub insecure_registries: &'a [String],
    /// `(REGISTRY, MIRROR)` pairs, passed on as `iguana pull --mirror`.
    pub registry_mirrors: &'a [(String, String)],
    /// Extra CA file, passed on as `iguana pull --ca`.
    pub ca: Option<&'a str>,
    pub work: &'a Path,
    pub debug: bool,
    /// Where a container may leave why it failed (`/iguana/reason` in PID
    /// 1): removed before each job, read (bounded) into `job.finished`.
    pub reason: Option<&'a Path>,
    /// The workflow is verified (`Loaded::verified`): an image it pins by
    /// digest is covered by its signature (`iguana pull
    /// --pinned-by-verified-workflow`, which checks the pulled digest is
    /// the pinned one).
    pub verified: bool,
}

impl Context<'_> {
    fn dirs(&self) -> (PathBuf, PathBuf, PathBuf) {
        (self.work.join("state"), self.work.join("bundles"), self.work.join("logs"))
    }
}

/// Runs the jobs in order. Returns every job's outcome, or the error that
/// stopped the workflow. The outcomes are also written to
/// `WORK/results.json` for the handover to keep.
pub fn run(ctx: &Context<'_>, wf: &Workflow) -> Result<Vec<(String, Outcome)>, Error> {
    tracing::info!("workflow {}: {} jobs", wf.name.as_deref().unwrap_or("(unnamed)"), wf.jobs.0.len());
    let mut results: Vec<(String, Outcome)> = Vec::new();
    let mut stopped = None;
    for (id, job) in &wf.jobs.0 {
        let unmet: Vec<&String> = job
            .needs
            .0
            .iter()
            .filter(|need| !results.iter().any(|(j, o)| j == *need && *o == Outcome::Succeeded))
            .collect();
        if !unmet.is_empty() {
            let why = format!("needs {} which did not succeed", join(&unmet));
            tracing::warn!("job {id} skipped: {why}");
            let skipped = report::Finished { state: "skipped", exit_code: None, duration_secs: 0.0, error: Some(why.clone()), reason: None };
            report::pid1::emit(report::job_finished(id, &skipped));
            results.push((id.clone(), Outcome::Skipped(why)));
            continue;
        }
        if let Some(reason) = ctx.reason {
            let _ = std::fs::remove_file(reason);
        }
        let started = Instant::now();
        let result = run_job(ctx, wf, id, job);
        report_finished(ctx, id, &result, started.elapsed());
        match result {
            Ok(()) => {
                tracing::info!("job {id} succeeded");
                results.push((id.clone(), Outcome::Succeeded));
            }
            Err(e) => {
                let reason = crate::logging::chain(&e);
                tracing::error!("{reason}");
                results.push((id.clone(), Outcome::Failed(reason)));
                if job.continue_on_error {
                    tracing::warn!("job {id} failed; continuing (continue_on_error)");
                } else {
                    stopped = Some(e);
                    break;
                }
            }
        }
    }
    let _ = std::fs::write(ctx.work.join("results.json"), serde_json::to_string_pretty(&results).unwrap_or_default());
    if !ctx.debug {
        let _ = std::fs::remove_dir_all(ctx.work.join("volumes"));
        let _ = std::fs::remove_dir_all(ctx.work.join("layers"));
    }
    match stopped {
        Some(e) => Err(Error::Stopped(Box::new(e))),
        None => Ok(results),
    }
}

/// `job.finished` (with the end of the job's log), then the whole log.
fn report_finished(ctx: &Context<'_>, id: &str, result: &Result<(), Error>, took: Duration) {
    let (state, exit_code) = match result {
        Ok(()) => ("success", Some(0)),
        Err(Error::Failed { exit: Exit::TimedOut(_), .. }) => ("timeout", None),
        Err(Error::Failed { exit: Exit::Code(code), .. }) => ("failed", Some(*code)),
        Err(_) => ("failed", None),
    };
    let reason = ctx
        .reason
        .and_then(|path| crate::fsutil::read_bounded(path, REASON_MAX).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .filter(|r| !r.is_empty());
    let error = result.as_ref().err().map(|e| crate::logging::chain(e));
    let log = ctx.work.join("logs").join(format!("{id}.log"));
    let log = log.is_file().then_some(log);
    if result.is_err() {
        report::pid1::note_failed_job(id, log.as_deref().unwrap_or(Path::new("")), reason.as_deref());
    }
    let finished = report::Finished { state, exit_code, duration_secs: took.as_secs_f64(), error, reason };
    report::pid1::emit_with_tail(report::job_finished(id, &finished), log.clone());
    if let Some(log) = log {
        report::pid1::put_log(id, &log);
    }
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// Services first (in the background), then the job's container in the
/// foreground; services are stopped and removed afterwards, whatever the
/// job's result.
fn run_job(ctx: &Context<'_>, wf: &Workflow, id: &str, job: &schema::Job) -> Result<(), Error> {
    let (state, bundles, logs) = ctx.dirs();
    let dirs = Dirs { state: &state, bundles: &bundles, logs: &logs };
    let mut sup = Supervisor::default();
    let mut services = Vec::new();
    let mut result = Ok(());
    // The job's timeout covers its pulls and its run, from one deadline.
    let deadline = job.timeout().and_then(|t| Instant::now().checked_add(t));
    for (sid, svc) in &job.services.0 {
        let name = format!("{id}-{sid}");
        match prepare(ctx, wf, &name, svc, deadline).and_then(|j| container::start(&j, &dirs, Stdin::Null).map_err(Error::from)) {
            Ok(running) => {
                sup.add(running);
                services.push(name);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        result = prepare(ctx, wf, id, &job.container, deadline)
            .inspect(|_| report_started(ctx, id, &job.container.image))
            .and_then(|j| container::start(&j, &dirs, Stdin::Console).map_err(Error::from))
            .map(|running| {
                sup.add(running);
                let timeout = job.timeout().zip(deadline).map(|(total, deadline)| Timeout { deadline, total });
                let exit = sup.wait(id, timeout);
                sup.remove(id);
                exit
            })
            .and_then(|exit| if exit.success() { Ok(()) } else { Err(Error::Failed { job: id.to_string(), exit }) });
    }
    for name in services.iter().rev() {
        let exit = sup.stop(name, SERVICE_GRACE);
        tracing::info!("service {name} stopped: {exit}");
    }
    if !ctx.debug {
        let mut pulled = vec![(id.to_string(), job.container.image.as_str())];
        for (sid, svc) in &job.services.0 {
            pulled.push((format!("{id}-{sid}"), svc.image.as_str()));
        }
        images::release(&ctx.work.join("images"), &pulled, &images::images_after(wf, id));
    }
    result
}

/// `job.started`, with the digest the pull resolved the image to.
fn report_started(ctx: &Context<'_>, id: &str, image: &str) {
    let digest_file = crate::image::digest_file(&ctx.work.join("images").join(id).join("config.json"));
    let digest = crate::fsutil::read_bounded(&digest_file, 256).ok().map(|b| String::from_utf8_lossy(&b).trim().to_string());
    report::pid1::emit(report::job_started(id, image, digest.as_deref()));
}

/// Pulls a container's image and resolves its env and volumes.
fn prepare(ctx: &Context<'_>, wf: &Workflow, name: &str, c: &Container, deadline: Option<Instant>) -> Result<Job, Error> {
    let image = pull(ctx, name, &c.image, deadline)?;
    let mut env = wf.env.entries();
    env.extend(c.env.entries());
    let mut mounts = Vec::new();
    for (n, volume) in c.volumes().into_iter().enumerate() {
        let source = match &volume.source {
            Source::Named(v) => ctx.work.join("volumes").join(v),
            Source::Anonymous => ctx.work.join("volumes").join(format!(".anon-{name}-{n}")),
            Source::Host(path) => PathBuf::from(path),
        };
        // Like docker, a missing source is created as a directory.
        if !source.exists() {
            std::fs::create_dir_all(&source)
                .map_err(|e| Error::Volume { job: name.to_string(), path: source.clone(), source: e })?;
        }
        mounts.push(Bind { source, target: volume.target, read_only: volume.read_only });
    }
    let rootfs = ctx.work.join("images").join(name).join("rootfs");
    Ok(Job { name: name.to_string(), image, env, rootfs, mounts })
}

/// Pulls and unpacks an image in a child process, killed at the job's
/// `deadline` (or after [`DEFAULT_PULL_TIMEOUT`] without one).
fn pull(ctx: &Context<'_>, name: &str, image: &str, deadline: Option<Instant>) -> Result<ImageConfig, Error> {
    let dir = ctx.work.join("images").join(name);
    let rootfs = dir.join("rootfs");
    let config_path = dir.join("config.json");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let args = pull_args(ctx, image, &rootfs, &config_path);
    let pull_err = |reason: String| Error::Pull { job: name.to_string(), image: image.to_string(), reason };
    let limit = deadline.map_or(DEFAULT_PULL_TIMEOUT, |d| d.saturating_duration_since(Instant::now()));
    crate::child::run(&args, limit).map_err(crate::clock::with_hint).map_err(pull_err)?;
    tracing::info!("phase image-pulled job={name} image={image}");
    read_config(name, &config_path)
}

/// The image config the pull child wrote, read with a bound.
fn read_config(name: &str, path: &Path) -> Result<ImageConfig, Error> {
    let bytes = crate::fsutil::read_bounded(path, CONFIG_MAX_SIZE)
        .map_err(|source| Error::Config { job: name.to_string(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::ConfigJson { job: name.to_string(), path: path.to_owned(), source })
}

/// The `iguana pull` command line for one image.
fn pull_args(ctx: &Context<'_>, image: &str, rootfs: &Path, config_path: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "pull".into(),
        image.to_string(),
        "--rootfs".into(),
        rootfs.display().to_string(),
        "--config-out".into(),
        config_path.display().to_string(),
        "--store".into(),
        ctx.work.join("blobs").display().to_string(),
        "--layers".into(),
        ctx.work.join("layers").display().to_string(),
    ];
    for registry in ctx.insecure_registries {
        args.push("--insecure-registry".into());
        args.push(registry.clone());
    }
    for (registry, mirror) in ctx.registry_mirrors {
        args.push("--mirror".into());
        args.push(format!("{registry}={mirror}"));
    }
    if let Some(ca) = ctx.ca {
        args.push("--ca".into());
        args.push(ca.to_string());
    }
    if ctx.verified && image.contains("@sha256:") {
        args.push("--pinned-by-verified-workflow".into());
    }
    // Blobs are deleted after each pull to save RAM, kept for inspection in debug.
    if ctx.debug {
        args.push("--keep-blobs".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_flags_follow_the_context() {
        let insecure = ["10.0.2.2:5000".to_string()];
        let mirrors = [("docker.io".to_string(), "10.0.2.2:5001".to_string())];
        let mut ctx = Context {
            insecure_registries: &insecure,
            registry_mirrors: &mirrors,
            ca: Some("/etc/iguana/ca.pem"),
            work: Path::new("/run/iguana"),
            debug: false,
            reason: None,
            verified: false,
        };
        let args = pull_args(&ctx, "busybox", Path::new("/r"), Path::new("/c.json"));
        assert_eq!(
            args.join(" "),
            "pull busybox --rootfs /r --config-out /c.json --store /run/iguana/blobs --layers /run/iguana/layers \
             --insecure-registry 10.0.2.2:5000 --mirror docker.io=10.0.2.2:5001 --ca /etc/iguana/ca.pem"
        );
        ctx.debug = true;
        ctx.ca = None;
        let args = pull_args(&ctx, "busybox", Path::new("/r"), Path::new("/c.json"));
        assert!(args.join(" ").ends_with("--mirror docker.io=10.0.2.2:5001 --keep-blobs"), "{args:?}");
        // Only a verified workflow's digest pins are covered by its signature.
        let pinned = "r/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let covered = |ctx: &Context<'_>, image| pull_args(ctx, image, Path::new("/r"), Path::new("/c.json")).iter().any(|a| a == "--pinned-by-verified-workflow");
        assert!(!covered(&ctx, pinned));
        ctx.verified = true;
        assert!(covered(&ctx, pinned));
        assert!(!covered(&ctx, "r/a:v1"));
    }

    #[test]
    fn a_pull_past_the_job_deadline_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context { insecure_registries: &[], registry_mirrors: &[], ca: None, work: dir.path(), debug: false, reason: None, verified: false };
        let err = pull(&ctx, "slow", "127.0.0.1:1/never:v1", Some(Instant::now())).unwrap_err();
        assert_eq!(err.to_string(), "job slow: iguana pull not started: its deadline had passed");
    }

    #[test]
    fn jobs_are_named_after_images() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["10.0.2.2:5000/a", "10.0.2.2:5000/b"], &["a", "b"]),
            (&["registry.opensuse.org/agama/installer:latest"], &["installer"]),
            (&["busybox@sha256:abc"], &["busybox"]),
            (&["x/a", "y/a", "z/a:1"], &["a", "a-2", "a-3"]),
            (&["host:5000/ns/img+x:tag"], &["img-x"]),
        ];
        for (images, names) in cases {
            let images: Vec<String> = images.iter().map(|s| s.to_string()).collect();
            let wf = from_images(&images);
            let got: Vec<&String> = wf.jobs.0.keys().collect();
            assert_eq!(got, *names, "{images:?}");
        }
    }

    /// Whatever the image reference, the job names made from it follow the
    /// name rule (they become paths and cgroups), and so does a service's
    /// composed name.
    #[test]
    fn job_names_from_any_image_are_valid() {
        let cases: &[(&str, &str)] = &[
            ("host/..:tag", "job"),
            ("host/.hidden", "hidden"),
            ("host/...", "job"),
            ("host/.", "job"),
            ("host/-x", "x"),
            ("host/_x", "_x"),
            ("host:5000/", "job"),
            ("@sha256:abc", "job"),
            ("..", "job"),
            ("a/b/..", "job"),
            ("r/.a.b", "a.b"),
            ("r/ümlaut", "mlaut"),
        ];
        for (image, want) in cases {
            assert_eq!(job_name(image), *want, "{image:?}");
        }
        let long = format!("r/{}", "x".repeat(300));
        let images: Vec<String> = ["host/..:tag", "host/..:tag", "host/.hidden", &long, &long]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let wf = from_images(&images);
        for id in wf.jobs.0.keys() {
            assert!(name::valid(id), "{id:?}");
        }
        assert_eq!(wf.jobs.0.len(), 5);
    }

    /// The boot parses a control_url's workflow with the same rule, before
    /// any job runs.
    #[test]
    fn load_refuses_invalid_names() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("w.yaml");
        let mut args = Cmdline { control_url: Some(format!("file://{}", url.display())), ..Cmdline::default() };
        for (yaml, located) in [
            ("jobs:\n  \"..\":\n    container: {image: r/a}\n", "jobs...: job id \"..\" must be"),
            ("jobs:\n  a:\n    container: {image: r/a, volumes: [\"..:/x\"]}\n", "jobs.a.container.volumes[0]"),
            ("jobs:\n  a:\n    container: {image: r/a}\n    services: {\".\": {image: r/s}}\n", "jobs.a.services..: service id"),
        ] {
            std::fs::write(&url, yaml).unwrap();
            let err = load(&args, Path::new("/nonexistent"), dir.path(), &Keys::default()).unwrap_err();
            assert!(matches!(err, Error::Parse { .. }), "{err:?}");
            assert!(err.to_string().contains(located), "{err}");
        }
        // The built-in workflow too.
        args.control_url = None;
        let builtin = dir.path().join("control.yaml");
        std::fs::write(&builtin, "jobs:\n  \"..\":\n    container: {image: r/a}\n").unwrap();
        let err = load(&args, &builtin, dir.path(), &Keys::default()).unwrap_err();
        assert!(err.to_string().contains("jobs...: job id"), "{err}");
    }

    /// A control_url file and an image's config.json are read with a bound,
    /// and only if they are regular files (a FIFO would block PID 1).
    #[test]
    fn files_are_read_with_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        let mut text = b"jobs:\n  a:\n    container: {image: r/a}\n".to_vec();
        text.resize(usize::try_from(source::MAX_SIZE).unwrap() + 1, b'\n');
        std::fs::write(&big, &text).unwrap();
        let fifo = dir.path().join("fifo.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, message) in [(&big, "larger than the 1048576 byte limit"), (&fifo, "not a regular file")] {
            let args = Cmdline { control_url: Some(format!("file://{}", path.display())), ..Cmdline::default() };
            let err = load(&args, Path::new("/nonexistent"), dir.path(), &Keys::default()).unwrap_err();
            let chain = crate::logging::chain(&err);
            assert!(chain.contains(message) && chain.contains(&path.display().to_string()), "{chain}");
        }

        let config = dir.path().join("config.json");
        std::fs::write(&config, serde_json::to_string(&ImageConfig::default()).unwrap()).unwrap();
        assert_eq!(read_config("a", &config).unwrap(), ImageConfig::default());
        let mut json = b"{\"Env\": [\"".to_vec();
        json.resize(usize::try_from(CONFIG_MAX_SIZE).unwrap() + 1, b'x');
        std::fs::write(&config, &json).unwrap();
        let chain = crate::logging::chain(&read_config("a", &config).unwrap_err());
        assert_eq!(chain, format!("job a: image config: {}: larger than the 4194304 byte limit", config.display()));
    }

    /// With keys, the built-in workflow (part of the initrd) is verified,
    /// `rd.iguana.containers` (the untrusted command line) never is, and an
    /// unsigned control_url is refused; without keys nothing is verified.
    #[test]
    fn only_signed_or_built_in_workflows_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = dir.path().join("control.yaml");
        std::fs::write(&builtin, "jobs:\n  builtin:\n    container: {image: r/builtin}\n").unwrap();
        let url = dir.path().join("url.yaml");
        std::fs::write(&url, "jobs:\n  fromurl:\n    container: {image: r/u}\n").unwrap();
        let pem = include_bytes!("../../tests/fixtures/sigstore-conformance/key.pub");
        let keys = Keys::new(vec![crate::trust::PublicKey::from_pem("k.pub", pem).unwrap()]);
        let (none, builtin_only) = (Keys::default(), Cmdline::default());
        let containers = Cmdline { containers: vec!["r/a".into()], ..Cmdline::default() };
        let control_url = Cmdline { control_url: Some(format!("file://{}", url.display())), ..Cmdline::default() };
        // (command line, keys, Ok(verified) or the error)
        let cases: Vec<(&Cmdline, &Keys, Result<bool, String>)> = vec![
            (&builtin_only, &keys, Ok(true)),
            (&builtin_only, &none, Ok(false)),
            (&containers, &keys, Ok(false)),
            (&containers, &none, Ok(false)),
            (&control_url, &none, Ok(false)),
            (
                &control_url,
                &keys,
                Err(format!(
                    "workflow file://{0}: refused: no signature: neither file://{0}.sig nor file://{0}.sigstore.json",
                    url.display()
                )),
            ),
        ];
        for (args, keys, want) in cases {
            let got = load(args, &builtin, dir.path(), keys).map(|l| l.verified).map_err(|e| crate::logging::chain(&e));
            assert_eq!(got, want, "{args:?} with {} keys", keys.len());
        }
    }

    #[test]
    fn load_follows_the_fallback_order() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = dir.path().join("control.yaml");
        let mut args = Cmdline::default();
        let err = load(&args, &builtin, dir.path(), &Keys::default()).unwrap_err();
        assert!(err.to_string().starts_with("nothing to run"), "{err}");

        std::fs::write(&builtin, "jobs:\n  builtin:\n    container: {image: r/builtin}\n").unwrap();
        assert_eq!(load(&args, &builtin, dir.path(), &Keys::default()).unwrap().workflow.jobs.0.keys().collect::<Vec<_>>(), ["builtin"]);

        args.containers = vec!["r/a".into()];
        assert_eq!(load(&args, &builtin, dir.path(), &Keys::default()).unwrap().workflow.jobs.0.keys().collect::<Vec<_>>(), ["a"]);

        let url = dir.path().join("url.yaml");
        std::fs::write(&url, "jobs:\n  fromurl:\n    container: {image: r/u}\n").unwrap();
        args.control_url = Some(format!("file://{}", url.display()));
        assert_eq!(load(&args, &builtin, dir.path(), &Keys::default()).unwrap().workflow.jobs.0.keys().collect::<Vec<_>>(), ["fromurl"]);

        std::fs::write(&url, "jobs: {}\n").unwrap();
        let err = load(&args, &builtin, dir.path(), &Keys::default()).unwrap_err();
        assert_eq!(err.to_string(), format!("workflow file://{}: jobs: no jobs", url.display()));
    }
}
