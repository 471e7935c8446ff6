//! The attachment daemon: attach a volume, serve it at a FUSE mount and/or as an
//! NBD export until told to stop (SIGTERM, SIGINT, SIGHUP) or until the FUSE mount
//! goes away, then detach.
//!
//! `ebsim ec2 attach-volume --fuse DIR` (or `--nbd …`) runs this in a child process of its own (a
//! new process group, stderr to `regions/<region>/attachments/<vol>.log`) and
//! returns once the child reports the mount ready; `--foreground` runs it in the
//! command itself. `ebsim ec2 detach-volume` signals the recorded process and waits
//! for it to finish.

use super::fuse::VolumeFs;
use crate::ec2::Ec2;
use crate::ec2::model::AttachmentRecord;
use crate::error::{Error, ErrorKind, Result};
use crate::kms::access::Caller;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Where FUSE mounts are, from /proc/self/mountinfo (field 5 is the mount point,
/// with spaces and friends octal-escaped).
fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')));
        match octal {
            Some(v) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[test]
fn mountinfo_escapes_are_undone() {
    assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
    assert_eq!(unescape("/plain"), "/plain");
    assert_eq!(unescape("/x\\"), "/x\\");
}

/// True if `dir` is a mount point.
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    mount_points().contains(&dir)
}

/// Checks a FUSE mount directory: /dev/fuse present, `dir` an existing directory
/// that nothing is mounted on. Returns its canonical path.
pub fn check_fuse_dir(dir: &Path) -> Result<PathBuf> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::environment(
            "/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass --device /dev/fuse",
        ));
    }
    let meta = std::fs::metadata(dir).map_err(|e| {
        Error::new(
            ErrorKind::InvalidParameterValue,
            format!("the mount directory {} cannot be used: {e}", dir.display()),
        )
    })?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidParameterValue,
            format!("the mount directory {} is not a directory", dir.display()),
        ));
    }
    let canon = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", dir.display()), e))?;
    if is_mount_point(&canon) {
        return Err(Error::new(
            ErrorKind::InvalidParameterValue,
            format!(
                "something is already mounted on {} (umount it, or choose another directory)",
                canon.display()
            ),
        ));
    }
    Ok(canon)
}

/// What holds the FUSE file of an attachment open: loop devices backed by it and
/// processes with it open.
pub fn users(file: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let backing =
            std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
        if Path::new(backing.trim()) == file {
            out.push(format!("/dev/{name}"));
        }
    }
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        let fds = std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        if fds
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| target == file)
        {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push(format!("process {pid} ({})", comm.trim()));
        }
    }
    out
}

/// The front ends one attachment process serves: a FUSE file, an NBD export, or both.
#[derive(Debug, Clone, Default)]
pub struct Frontends {
    /// Serve `DIR/<volume-id>` through FUSE.
    pub fuse: Option<PathBuf>,
    /// Serve an NBD export there.
    pub nbd: Option<crate::nbd::Listen>,
    /// Require TLS on the NBD export (FORCEDTLS); `crate::nbd::TlsFlags::resolve`
    /// decides whether an export may go without.
    pub nbd_tls: Option<crate::nbd::Tls>,
}

/// How long a stopping NBD server waits for requests in flight.
const NBD_GRACE: Duration = Duration::from_secs(30);

/// Attaches `volume_id` and serves it through `front` until a signal (or, with
/// FUSE, an unmount from outside); `ready` is called once with the attachment when
/// every front end is live; `control` is the unix socket where the process answers
/// requests (snapshots, status).
#[allow(clippy::too_many_arguments)]
pub fn serve(
    ec2: &Ec2,
    caller: &Caller,
    volume_id: &str,
    front: &Frontends,
    instance_id: &str,
    device: Option<&str>,
    control: &Path,
    ready: impl FnOnce(&AttachmentRecord) -> Result<()>,
) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    if front.fuse.is_none() && front.nbd.is_none() {
        return Err(Error::new(
            ErrorKind::MissingParameter,
            "ebsim attaches a volume to this host through a front end: give --fuse DIR, --nbd unix:PATH|tcp:HOST:PORT, or both",
        ));
    }
    let dir = front.fuse.as_deref().map(check_fuse_dir).transpose()?;
    // Bound before the volume is attached, so a busy address fails with nothing done.
    let bound = front
        .nbd
        .as_ref()
        .map(|l| crate::nbd::Bound::bind(l, front.nbd_tls.clone()))
        .transpose()?;
    // Until the server owns it (and removes it when it stops), the socket file is
    // this function's to remove: a failed attach leaves no socket behind.
    let mut socket_file = SocketFile(
        bound
            .as_ref()
            .and_then(|b| b.socket().map(Path::to_path_buf)),
    );
    // Signals are caught from here on, so a stop request during attach is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    // This process sits in the block I/O path (loop device over FUSE, NBD clients):
    // memory reclaim must not wait on I/O it would itself have to serve
    // (PR_SET_IO_FLUSHER, which needs CAP_SYS_RESOURCE; without it the daemon
    // still works). Threads started later inherit it.
    if let Err(e) = rustix::process::configure_io_flusher_behavior(true) {
        super::log(&format!(
            "PR_SET_IO_FLUSHER not set ({e}); a loop device over this volume may stall under memory pressure"
        ));
    }
    let device = device
        .map(str::to_string)
        .unwrap_or_else(|| match (&dir, &bound) {
            (Some(d), _) => d.join(volume_id).display().to_string(),
            (None, Some(b)) => b.uri(volume_id),
            (None, None) => unreachable!("checked above"),
        });
    let attachment = ec2.attach(caller, volume_id, instance_id, &device)?;
    let session = match &dir {
        None => None,
        Some(dir) => {
            let open = Arc::new(AtomicU64::new(0));
            let fs = VolumeFs::new(attachment.shared_image(), volume_id, open);
            match fuser::spawn_mount(fs, dir, &VolumeFs::config(&format!("ebsim:{volume_id}"))) {
                Ok(s) => Some(s),
                Err(e) => {
                    let _ = attachment.detach(ec2);
                    return Err(Error::io(
                        format!("cannot mount FUSE on {}", dir.display()),
                        e,
                    ));
                }
            }
        }
    };
    let server = match bound {
        None => None,
        Some(b) => {
            let image = attachment.shared_image();
            let description = format!(
                "ebsim {} volume {volume_id} ({} bytes{})",
                if image.is_encrypted() {
                    "encrypted"
                } else {
                    "unencrypted"
                },
                image.size(),
                attachment
                    .record()
                    .key_arn
                    .as_deref()
                    .map(|k| format!(", KMS key {k}"))
                    .unwrap_or_default()
            );
            let export = crate::nbd::Export {
                name: volume_id.to_string(),
                description,
                image,
                read_only: false,
            };
            match crate::nbd::Server::start(export, b) {
                Ok(s) => {
                    socket_file.0 = None;
                    Some(s)
                }
                Err(e) => {
                    if let Some(s) = session {
                        let _ = s.umount_and_join();
                    }
                    let _ = attachment.detach(ec2);
                    return Err(e);
                }
            }
        }
    };
    let recorded = ec2.update_attachment(volume_id, |a| {
        a.fuse_dir = dir.as_ref().map(|d| d.display().to_string());
        a.nbd_uri = server.as_ref().map(|s| s.uri().to_string());
        a.nbd_socket = match &front.nbd {
            Some(crate::nbd::Listen::Unix(p)) => Some(p.display().to_string()),
            _ => None,
        };
    });
    let started = recorded.and_then(|rec| ready(&rec));
    if let Err(e) = started {
        if let Some(s) = server {
            s.stop(NBD_GRACE);
        }
        if let Some(s) = session {
            let _ = s.umount_and_join();
        }
        let _ = attachment.detach(ec2);
        return Err(e);
    }
    // The control socket: requests that must run where the attachment lives
    // (a crash-consistent snapshot holds this process's writes).
    let _ = std::fs::remove_file(control);
    let listener = std::os::unix::net::UnixListener::bind(control)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::io(format!("cannot listen on {}", control.display()), e));
    let listener = match listener {
        Ok(l) => Some(l),
        Err(e) => {
            super::log(&format!(
                "{e}; snapshots of this attachment are unavailable"
            ));
            None
        }
    };
    let mut unmounted_outside = false;
    'wait: loop {
        if signals.pending().next().is_some() {
            break 'wait;
        }
        if let Some(l) = &listener
            && let Ok((stream, _)) = l.accept()
        {
            serve_control(ec2, &attachment, server.as_ref(), stream);
        }
        if session.as_ref().is_some_and(|s| s.guard.is_finished()) {
            unmounted_outside = true;
            break 'wait;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(listener);
    let _ = std::fs::remove_file(control);
    // NBD first: its clients' requests in flight finish and are answered.
    if let Some(s) = server {
        s.stop(NBD_GRACE);
    }
    if let Some(session) = session {
        let dir = dir.as_ref().expect("a session has a dir");
        if unmounted_outside {
            super::log(&format!(
                "{} was unmounted; detaching {volume_id}",
                dir.display()
            ));
            let _ = session.join();
        } else if let Err(e) = session.umount_and_join() {
            super::log(&format!("unmounting {}: {e}", dir.display()));
        }
    }
    attachment.detach(ec2)
}

/// A unix socket file removed when dropped (unless emptied first).
struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One control request: a JSON line in, a JSON line out.
fn serve_control(
    ec2: &Ec2,
    attachment: &crate::ec2::Attachment,
    nbd: Option<&crate::nbd::Server>,
    stream: std::os::unix::net::UnixStream,
) {
    use std::io::{BufRead, Write};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(req) if req["op"] == "create-snapshot" => {
            let tags: Vec<crate::ec2::model::Tag> =
                serde_json::from_value(req["tags"].clone()).unwrap_or_default();
            let watch = ClientWatch::start(&stream);
            let made = ec2.create_snapshot_of(
                attachment,
                req["description"].as_str().unwrap_or_default(),
                tags,
                Some(&watch.gone),
            );
            drop(watch);
            match made {
                Ok(s) => serde_json::json!({ "ok": s }),
                Err(e) => {
                    serde_json::json!({ "error": { "code": e.code(), "message": e.message() } })
                }
            }
        }
        Ok(req) if req["op"] == "status" => {
            let n = nbd.map(|s| {
                s.stats()
                    .connections
                    .load(std::sync::atomic::Ordering::SeqCst)
            });
            serde_json::json!({ "ok": { "nbd_connections": n.unwrap_or(0) } })
        }
        _ => {
            serde_json::json!({ "error": { "code": "InternalError", "message": "unknown control request" } })
        }
    };
    let mut w = &stream;
    let _ = writeln!(w, "{reply}");
}

/// Watches the client of a control request while it is served: a client sends
/// nothing after its request, so a read that ends means it went away (it was
/// interrupted) and the request is cancelled (`gone`).
struct ClientWatch {
    gone: Arc<std::sync::atomic::AtomicBool>,
    served: Arc<std::sync::atomic::AtomicBool>,
}

impl ClientWatch {
    fn start(stream: &std::os::unix::net::UnixStream) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let gone = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicBool::new(false));
        if let Ok(s) = stream.try_clone() {
            let (g, d) = (gone.clone(), served.clone());
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            std::thread::spawn(move || {
                use std::io::Read;
                let mut byte = [0u8; 1];
                while !d.load(Ordering::Relaxed) {
                    match (&s).read(&mut byte) {
                        // EOF, or anything at all: the client is gone or broke
                        // the protocol.
                        Ok(_) => {
                            g.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) => {}
                        Err(_) => {
                            g.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            });
        }
        ClientWatch { gone, served }
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        self.served
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends one control request to the daemon serving an attachment. When `cancel`
/// is set while it waits (Ctrl-C), the request is withdrawn: the connection is
/// half-closed, which cancels the operation in the daemon, and its answer (an
/// Interrupted error once the daemon has undone it) is awaited.
pub fn control_request(
    socket: &Path,
    req: &serde_json::Value,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<serde_json::Value> {
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        Error::io(
            format!(
                "cannot reach the attachment process at {}",
                socket.display()
            ),
            e,
        )
    })?;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut w = &stream;
    writeln!(w, "{req}").map_err(|e| Error::io("cannot send to the attachment process", e))?;
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
    let line = String::from_utf8_lossy(&line).into_owned();
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("bad answer from the attachment process: {e}"),
        )
    })?;
    if let Some(e) = v.get("error") {
        let kind = e["code"]
            .as_str()
            .and_then(ErrorKind::from_code)
            .unwrap_or(ErrorKind::Internal);
        return Err(Error::new(kind, e["message"].as_str().unwrap_or_default()));
    }
    Ok(v["ok"].clone())
}

/// Asks the daemon holding `a` to detach and waits (up to `timeout`) until it has.
pub fn stop_daemon(a: &AttachmentRecord, timeout: Duration) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(a.pid as i32);
    match kill(pid, Signal::SIGTERM) {
        Ok(()) => {}
        Err(nix::errno::Errno::ESRCH) => return Ok(()),
        Err(e) => {
            return Err(Error::io(
                format!("cannot signal process {}", a.pid),
                e.into(),
            ));
        }
    }
    let start = Instant::now();
    while start.elapsed() < timeout {
        if kill(pid, None).is_err() || is_zombie(a.pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::new(
        ErrorKind::IncorrectState,
        format!(
            "the attachment process {} did not finish within {}s",
            a.pid,
            timeout.as_secs()
        ),
    ))
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
