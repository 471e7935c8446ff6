//! Where the library's `tracing` events go.
//!
//! - A command: its warnings only (a missing audit record, memory that cannot be
//!   locked), as `ebsim: warning: …` lines on stderr; everything else only when
//!   `--debug` (ebsim's events at debug level, like the AWS CLI's `--debug`) or
//!   `RUST_LOG` (an `EnvFilter`, e.g. `RUST_LOG=ebsim=debug`) asks.
//! - An attachment process (`attach-volume --foreground`, which is what the
//!   supervisor starts): always, at info level unless `--debug`/`RUST_LOG` say
//!   otherwise, with timestamps, to stderr — for a started process, its log
//!   `regions/<region>/attachments/<vol>.log`.

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A command's warnings, as one `ebsim: warning: <message>` line each.
struct WarningLine;

impl<S, N> FormatEvent<S, N> for WarningLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "ebsim: warning: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

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
        (false, None) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("ebsim=warn"))
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .event_format(WarningLine)
                .try_init();
            return;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(debug)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A command's warning reads as it always did (`ebsim: warning: …`), and
    /// events below warning level print nothing.
    #[test]
    fn warnings_print_as_one_line_and_nothing_else_does() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("ebsim=warn"))
            .with_writer(move || SharedBuf(sink.clone()))
            .with_ansi(false)
            .event_format(WarningLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("attached");
            tracing::warn!("cannot append to {}: disk full", "cloudtrail.jsonl");
        });
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out,
            "ebsim: warning: cannot append to cloudtrail.jsonl: disk full\n"
        );
    }

    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
