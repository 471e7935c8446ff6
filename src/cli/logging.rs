//! Where the library's `tracing` events go.
//!
//! - A command: nowhere, unless `--debug` (ebsim's events at debug level, like
//!   the AWS CLI's `--debug`) or `RUST_LOG` (an `EnvFilter`, e.g.
//!   `RUST_LOG=ebsim=debug`) asks; then to stderr. Without either, no
//!   subscriber is installed and stderr is exactly what it always was.
//! - An attachment process (`attach-volume --foreground`, which is what the
//!   supervisor starts): always, at info level unless `--debug`/`RUST_LOG` say
//!   otherwise, with timestamps, to stderr — for a started process, its log
//!   `regions/<region>/attachments/<vol>.log`.

use tracing_subscriber::EnvFilter;

/// Installs the subscriber for this process (once; later calls do nothing).
pub fn init(debug: bool, attachment_process: bool) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok());
    let filter = match (debug, from_env) {
        (true, _) => EnvFilter::new("ebsim=debug"),
        (false, Some(f)) => f,
        (false, None) if attachment_process => EnvFilter::new("ebsim=info"),
        (false, None) => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(debug)
        .try_init();
}
