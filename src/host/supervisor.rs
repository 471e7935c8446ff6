//! The supervisor: the side of a command that owns an attachment process. It
//! starts the process (its own process group, stdin closed, stdout a pipe,
//! stderr its log) and waits for its one start [`Event`] (`Ready` or `Failed`),
//! asks it [`Request`]s over its control socket, and stops it.
//!
//! Nothing here reads the process's log for meaning: an error arrives as a
//! typed `Failed` event and becomes the same [`Error`] (kind and message) the
//! attach would have returned in process. Only a process that dies before it
//! can report (a damaged data root, refused while its command line is read) is
//! judged by its exit status, and its log's last lines are quoted for a person.

use super::messages::{Event, Request, write_frame};
use crate::ec2::model::{AttachmentRecord, Snapshot, Tag};
use crate::error::{Error, ErrorKind, Result};
use nix::unistd::Pid;
use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What an exit status of the attachment process's program means, for a process
/// that died before it could report (the front end that started it knows its own
/// exit codes; the host does not).
pub type ExitMeaning = fn(i32) -> Option<ErrorKind>;

/// Starts `cmd` (a command line that runs [`super::agent::serve`] and reports
/// with [`report`]) as the attachment process of `volume_id`, its stderr
/// appended to `log`, and waits until it is ready. Returns the attachment it
/// recorded.
pub fn start(
    mut cmd: Command,
    volume_id: &str,
    log: &Path,
    exit_meaning: ExitMeaning,
) -> Result<AttachmentRecord> {
    use std::os::unix::process::CommandExt;
    let log_file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .map_err(|e| Error::io(format!("cannot open {}", log.display()), e))?
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("cannot start the attachment process", e))?;
    tracing::debug!(
        "started attachment process {} for {volume_id}, log {}",
        child.id(),
        log.display()
    );
    let mut pipe = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = Vec::new();
    let read = pipe.read_until(b'\n', &mut line);
    if read.is_err() || line.iter().all(u8::is_ascii_whitespace) {
        let status = child.wait().ok();
        // A process that died before it could report still says, by its exit
        // code, what kind of failure it was (the CLI's 253: a damaged data root).
        let kind = status
            .and_then(|s| s.code())
            .and_then(exit_meaning)
            .unwrap_or(ErrorKind::Internal);
        return Err(Error::new(
            kind,
            format!(
                "the attachment process stopped ({}) before {volume_id} was ready; its log {}:\n{}",
                status.map(|s| s.to_string()).unwrap_or_default(),
                log.display(),
                log_tail(log, 5)
            ),
        ));
    }
    match super::messages::parse_frame::<Event>(&line)? {
        Event::Ready { attachment } => {
            tracing::debug!("attachment process {} is ready", child.id());
            Ok(attachment)
        }
        Event::Failed { error } => {
            let _ = child.wait();
            Err(error.into())
        }
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::new(
                ErrorKind::Internal,
                format!("the attachment process reported {other:?} instead of Ready"),
            ))
        }
    }
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.reverse();
    tail.join("\n")
}

/// In the attachment process: reports its start `event` to the supervisor
/// (its stdout), then points stdout at /dev/null, so nothing more reaches the
/// supervisor's pipe.
pub fn report(event: &Event) -> Result<()> {
    write_frame(std::io::stdout().lock(), event)
        .map_err(|e| Error::io("cannot report to the supervisor", e))?;
    let null =
        std::fs::File::open("/dev/null").map_err(|e| Error::io("cannot open /dev/null", e))?;
    nix::unistd::dup2_stdout(&null).map_err(|e| Error::io("cannot redirect stdout", e.into()))
}

/// Sends one request to the attachment process listening on `socket` and
/// returns its answer (a `Failed` answer is returned as its error). When
/// `cancel` is set while it waits (Ctrl-C), the request is withdrawn: the
/// connection is half-closed, which cancels the operation in the process, and
/// its answer (Interrupted, once it has undone what it did) is awaited.
pub fn request(
    socket: &Path,
    req: &Request,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Event> {
    match exchange(connect(socket)?, req, cancel, None, None)? {
        Event::Failed { error } => Err(error.into()),
        event => Ok(event),
    }
}

fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).map_err(|e| {
        Error::io(
            format!(
                "cannot reach the attachment process at {}",
                socket.display()
            ),
            e,
        )
    })
}

/// [`request`] on a connected stream, its answer as it came (`Failed`
/// included). With a `deadline`, an answer that has not come by then is an
/// error; `nudge` is called once if the answer takes longer than its duration.
fn exchange(
    stream: UnixStream,
    req: &Request,
    cancel: Option<&std::sync::atomic::AtomicBool>,
    deadline: Option<Instant>,
    mut nudge: Option<(Duration, &dyn Fn())>,
) -> Result<Event> {
    tracing::debug!("control request: {req:?}");
    let sent = Instant::now();
    write_frame(&stream, req).map_err(|e| Error::io("cannot send to the attachment process", e))?;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut line = Vec::new();
    let mut reader = std::io::BufReader::new(&stream);
    let mut withdrawn: Option<Instant> = None;
    loop {
        match reader.read_until(b'\n', &mut line) {
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if let Some((after, f)) = nudge
                    && sent.elapsed() > after
                {
                    f();
                    nudge = None;
                }
                if deadline.is_some_and(|d| Instant::now() > d) {
                    return Err(Error::new(
                        ErrorKind::IncorrectState,
                        format!("the attachment process did not answer {req:?} in time"),
                    ));
                }
                let cancelled =
                    cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
                match withdrawn {
                    None if cancelled => {
                        let _ = stream.shutdown(std::net::Shutdown::Write);
                        withdrawn = Some(Instant::now());
                    }
                    Some(t) if t.elapsed() > Duration::from_secs(60) => {
                        return Err(Error::new(
                            ErrorKind::Interrupted,
                            "interrupted; the attachment process did not confirm within 60 s that it stopped",
                        ));
                    }
                    _ => {}
                }
            }
            Err(e) => return Err(Error::io("no answer from the attachment process", e)),
        }
    }
    tracing::debug!(
        "control answer: {}",
        String::from_utf8_lossy(&line).trim_end()
    );
    match super::messages::parse_frame::<Event>(&line)? {
        Event::Failed { error } => Err(error.into()),
        event => Ok(event),
    }
}

fn unexpected(event: Event) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("unexpected answer from the attachment process: {event:?}"),
    )
}

/// CreateSnapshot, made by the attachment process on `socket`.
pub fn create_snapshot(
    socket: &Path,
    description: &str,
    tags: &[Tag],
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Snapshot> {
    let req = Request::CreateSnapshot {
        description: description.to_string(),
        tags: tags.to_vec(),
    };
    match request(socket, &req, cancel)? {
        Event::Snapshot { snapshot } => Ok(snapshot),
        other => Err(unexpected(other)),
    }
}

/// How many NBD clients the attachment process on `socket` serves now.
pub fn nbd_connections(socket: &Path) -> Result<u64> {
    match request(socket, &Request::Status, None)? {
        Event::Status { nbd_connections } => Ok(nbd_connections),
        other => Err(unexpected(other)),
    }
}

/// Asks the attachment process holding `a` to detach and waits (up to
/// `timeout`) until it has and is gone. It is asked with [`Request::Detach`] on
/// its control socket `control`, whose answer carries a failed detach's error.
/// A process busy with a snapshot cannot read the request: after [`NUDGE`] it
/// is also sent SIGTERM, which cancels the snapshot (as before this protocol),
/// and it then answers the Detach waiting on its socket. A process that cannot
/// be reached there, or closes without answering, is sent SIGTERM and awaited.
pub fn stop(a: &AttachmentRecord, control: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let nudge = || {
        tracing::debug!("no answer yet: SIGTERM to process {}", a.pid);
        let _ = signal(a);
    };
    let answer = UnixStream::connect(control)
        .map_err(|e| Error::io(format!("cannot reach {}", control.display()), e))
        .and_then(|stream| {
            exchange(
                stream,
                &Request::Detach,
                None,
                Some(deadline),
                Some((NUDGE, &nudge)),
            )
        });
    match answer {
        Ok(Event::Detached) => tracing::debug!("attachment process {} detached", a.pid),
        Ok(Event::Failed { error }) => {
            let _ = wait_gone(a, deadline);
            return Err(error.into());
        }
        Ok(other) => return Err(unexpected(other)),
        Err(e) => {
            tracing::debug!("{e}: signalling process {}", a.pid);
            if !signal(a)? {
                return Ok(());
            }
        }
    }
    wait_gone(a, deadline)
}

/// How long a Detach may go unread before the process is also signalled.
const NUDGE: Duration = Duration::from_secs(2);

/// Sends SIGTERM to `a`'s process; false if it is gone already.
fn signal(a: &AttachmentRecord) -> Result<bool> {
    use nix::sys::signal::{Signal, kill};
    match kill(Pid::from_raw(a.pid as i32), Signal::SIGTERM) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(Error::io(
            format!("cannot signal process {}", a.pid),
            e.into(),
        )),
    }
}

/// Waits until `a`'s process has ended (or is a zombie: its files, the image
/// lock among them, are closed).
fn wait_gone(a: &AttachmentRecord, deadline: Instant) -> Result<()> {
    let pid = Pid::from_raw(a.pid as i32);
    loop {
        if nix::sys::signal::kill(pid, None).is_err() || is_zombie(a.pid) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::IncorrectState,
                format!("the attachment process {} did not finish in time", a.pid),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_failed_start_keeps_its_kind_and_message() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("vol.log");
        let e = start(
            sh(r#"echo 'not this' >&2; echo '{"event":"Failed","error":{"kind":"VolumeInUse","message":"vol-1 is busy"}}'"#),
            "vol-1",
            &log,
            exit_meaning,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::VolumeInUse);
        assert_eq!(e.message(), "vol-1 is busy");
        // stderr went to the log, and was not read for meaning.
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "not this\n");
    }

    /// The meaning the CLI gives its exit codes (253: a damaged data root).
    fn exit_meaning(code: i32) -> Option<ErrorKind> {
        (code == 253).then_some(ErrorKind::Environment)
    }

    #[test]
    fn a_process_that_dies_silently_is_judged_by_its_exit_code() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("vol.log");
        let e = start(
            sh("echo 'root.key is damaged' >&2; exit 253"),
            "vol-1",
            &log,
            exit_meaning,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Environment);
        assert!(
            e.message().contains("root.key is damaged"),
            "{}",
            e.message()
        );
        let e = start(sh("exit 1"), "vol-1", &log, exit_meaning).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
    }

    #[test]
    fn control_requests_get_typed_answers() {
        let d = tempfile::tempdir().unwrap();
        let socket = d.path().join("vol.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                Event::Status { nbd_connections: 3 },
                Event::failed(&Error::new(ErrorKind::Interrupted, "undone")),
            ] {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(&stream);
                let _: Request = super::super::messages::read_frame(&mut reader).unwrap();
                write_frame(&stream, &answer).unwrap();
            }
        });
        assert_eq!(nbd_connections(&socket).unwrap(), 3);
        let e = create_snapshot(&socket, "d", &[], None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Interrupted);
        server.join().unwrap();
    }
}
