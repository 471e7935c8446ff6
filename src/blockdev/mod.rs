//! Front ends that expose an attached volume ([`crate::volume::Image`]) to Linux.
//!
//! - `fuse.rs`: one file in a FUSE mount (loop device + filesystem on top).
//! - `daemon.rs`: the attachment process behind `ebsim ec2 attach-volume --fuse`.
//! - `host.rs`: what the host still holds of an attachment whose process died.
//! - (`ebsim mount` / `ebsim unmount` live in `src/cli/attach.rs`.)

pub mod daemon;
pub mod fuse;
pub mod host;

/// Where the attachment process's messages go (attach, detach, refused requests).
/// The library writes none itself: the front end that runs it (the CLI, whose
/// attachment process logs to `regions/<r>/attachments/<vol>.log`) installs a sink
/// with [`set_log`]; without one they are dropped.
static LOG: std::sync::OnceLock<Box<Sink>> = std::sync::OnceLock::new();

/// A receiver of the attachment process's messages.
pub type Sink = dyn Fn(&str) + Send + Sync;

/// Installs the sink for [`log`] (the first one wins).
pub fn set_log(sink: impl Fn(&str) + Send + Sync + 'static) {
    let _ = LOG.set(Box::new(sink));
}

/// Reports one message of the attachment process.
pub(crate) fn log(message: &str) {
    if let Some(sink) = LOG.get() {
        sink(message);
    }
}
