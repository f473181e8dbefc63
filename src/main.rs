//! iguana: as PID 1 it boots the machine (see `boot`); as any other process it
//! is a command-line tool (see `cli`).

use iguana::{boot, child, cli, logging};

fn main() {
    if std::process::id() == 1 {
        boot::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let debug = std::env::var_os("IGUANA_DEBUG").is_some();
    logging::init_cli(debug);
    if let Err(err) = cli::main(&args) {
        let message = scrub_secrets(&format_chain(&err), &args);
        // A helper child of PID 1 also leaves its error where PID 1 reads it.
        match std::env::var_os(child::ERROR_FILE_ENV) {
            Some(path) => {
                let _ = std::fs::write(path, &message);
                tracing::error!("{message}");
            }
            None => eprintln!("error: {message}"),
        }
        std::process::exit(1);
    }
}

/// Without the secrets of the URLs this process was given (arguments and
/// the proxy): an error from a library may quote them, and a helper
/// child's error is logged by PID 1.
fn scrub_secrets(message: &str, args: &[String]) -> String {
    let proxy = iguana::proxy::Proxy::from_env().map(|p| p.url).unwrap_or_default();
    let mut urls: Vec<&str> = args.iter().map(String::as_str).filter(|a| a.contains("://")).collect();
    urls.push(&proxy);
    iguana::redact::scrub(message, &urls)
}

/// The whole chain once, on one line (`step: cause: cause`).
fn format_chain(err: &anyhow::Error) -> String {
    err.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}
