//! Helper children of PID 1: the same binary re-executed with a subcommand.
//!
//! Async code (tokio, for oci-client and rtnetlink) and parsing of untrusted
//! registry data run in a child, so PID 1 stays single-threaded (libcontainer
//! needs that) and a panic there fails one step instead of the kernel.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

/// Where a failing child leaves its error, so PID 1's own error line can
/// say why rather than just "exit status 1".
pub const ERROR_FILE_ENV: &str = "IGUANA_ERROR_FILE";
const ERROR_FILE: &str = "/run/iguana/child-error";

/// Runs `iguana ARGS...` with the console as stdio and waits for it. A
/// failure is described by the child's own error message when it left one.
pub fn run(args: &[String]) -> Result<(), String> {
    tracing::debug!("run child: iguana {}", crate::redact::args(args));
    let _ = std::fs::remove_file(ERROR_FILE);
    if let Some(dir) = std::path::Path::new(ERROR_FILE).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let status = Command::new("/proc/self/exe")
        .args(args)
        .env(ERROR_FILE_ENV, ERROR_FILE)
        .envs(crate::proxy::child_env(args))
        .status()
        .map_err(|e| format!("start iguana {}: {e}", args.first().map_or("", String::as_str)))?;
    if status.success() {
        return Ok(());
    }
    match std::fs::read_to_string(ERROR_FILE) {
        Ok(message) if !message.trim().is_empty() => Err(message.trim().to_string()),
        _ => Err(describe(status)),
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
