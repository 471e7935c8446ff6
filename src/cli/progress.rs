//! Progress bars for long operations: shown on a terminal (stderr), silent
//! otherwise, so scripts and CI logs stay clean.

use std::io::IsTerminal;

/// A bar over units of work, or nothing when stderr is not a terminal.
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    pub fn new(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {percent:>3}% ({elapsed}, ETA {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_message(what.to_string());
        Bar(Some(b))
    }

    pub fn set(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// A progress reporter for `Ec2::set_progress`: one bar per operation, on a
/// terminal only.
pub fn reporter() -> Option<crate::ec2::Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = std::sync::Mutex::new(None::<(String, Bar)>);
    Some(std::sync::Arc::new(
        move |what: &str, done: u64, total: u64| {
            let mut g = bar.lock().unwrap_or_else(|p| p.into_inner());
            if g.as_ref().is_none_or(|(w, _)| w != what) {
                *g = Some((what.to_string(), Bar::new(what)));
            }
            let (_, b) = g.as_ref().expect("set above");
            b.set(done, total);
            if done >= total {
                b.finish();
            }
        },
    ))
}
