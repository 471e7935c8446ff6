//! The attachment process (the agent): unlock a volume through the EC2 service,
//! serve the unlocked image at a FUSE mount and/or as an NBD export until told
//! to stop (SIGTERM, SIGINT, SIGHUP) or until the FUSE mount goes away, then
//! detach.
//!
//! This is the only place that holds both the EC2 service (and so the KMS) and
//! the front ends: it is handed the region's engine by the service layer
//! (`crate::service::attach::serve`, which opened it through `Services`);
//! `Ec2::attach` makes the grant and decrypts the data key into locked memory;
//! FUSE ([`crate::blockdev::fuse`]) and NBD ([`crate::nbd`]) get only the
//! `Arc<Image>` it returns.
//!
//! `ebsim ec2 attach-volume --fuse DIR` (or `--nbd …`) runs this in a child
//! process of its own ([`super::supervisor`], with the command line the CLI
//! gives `crate::service::attach::attach_volume`); `--foreground` runs it in the
//! command itself. It answers [`Request`]s on its control socket with
//! [`Event`]s (super::messages), and logs attach, detach, signals and errors
//! as `tracing` events (in a child: to `regions/<region>/attachments/<vol>.log`).

use super::linux::check_fuse_dir;
use super::messages::{Event, Request};
use crate::blockdev::fuse::VolumeFs;
use crate::ec2::Ec2;
use crate::ec2::model::AttachmentRecord;
use crate::error::{Error, ErrorKind, Result};
use crate::kms::access::Caller;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

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
        tracing::warn!(
            "PR_SET_IO_FLUSHER not set ({e}); a loop device over this volume may stall under memory pressure"
        );
    }
    let device = device
        .map(str::to_string)
        .unwrap_or_else(|| match (&dir, &bound) {
            (Some(d), _) => d.join(volume_id).display().to_string(),
            (None, Some(b)) => b.uri(volume_id),
            (None, None) => unreachable!("checked above"),
        });
    let attachment = ec2.attach(caller, volume_id, instance_id, &device)?;
    tracing::info!(
        "{volume_id}: attached to {instance_id} as {device} by {} (process {})",
        caller.arn(),
        std::process::id()
    );
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
            tracing::error!("{e}; snapshots of this attachment are unavailable");
            None
        }
    };
    let mut unmounted_outside = false;
    // The client of a Detach request, answered once the volume is detached.
    let mut detach_client = None;
    'wait: loop {
        if let Some(sig) = signals.pending().next() {
            tracing::info!("{volume_id}: {} received; detaching", signal_name(sig));
            break 'wait;
        }
        if let Some(l) = &listener
            && let Ok((stream, _)) = l.accept()
            && let Some(client) = serve_control(ec2, &attachment, server.as_ref(), stream)
        {
            tracing::info!("{volume_id}: detach requested");
            detach_client = Some(client);
            break 'wait;
        }
        if session.as_ref().is_some_and(|s| s.guard.is_finished()) {
            unmounted_outside = true;
            break 'wait;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A supervisor signals a process that did not read its Detach (busy with a
    // snapshot) after writing it: the request waits on the socket.
    if detach_client.is_none()
        && let Some(l) = &listener
    {
        detach_client = pending_detach(l, volume_id);
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
            tracing::info!("{} was unmounted; detaching {volume_id}", dir.display());
            let _ = session.join();
        } else if let Err(e) = session.umount_and_join() {
            tracing::error!("unmounting {}: {e}", dir.display());
        }
    }
    let detached = attachment.detach(ec2);
    match &detached {
        Ok(()) => tracing::info!("{volume_id}: detached"),
        Err(e) => tracing::error!("{volume_id}: detach: {}", e.message()),
    }
    if let Some(client) = detach_client {
        let answer = match &detached {
            Ok(()) => Event::Detached,
            Err(e) => Event::failed(e),
        };
        if let Err(e) = super::messages::write_frame(&client, &answer) {
            tracing::debug!("detach answer not delivered: {e}");
        }
    }
    detached
}

/// The client of a Detach request waiting on `listener`, if one is; any other
/// request waiting there is refused (the volume is being detached).
fn pending_detach(
    listener: &std::os::unix::net::UnixListener,
    volume_id: &str,
) -> Option<std::os::unix::net::UnixStream> {
    let mut client = None;
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = std::io::BufReader::new(&stream);
        match super::messages::read_frame::<Request>(&mut reader) {
            Ok(Request::Detach) if client.is_none() => client = Some(stream),
            Ok(_) | Err(_) => {
                let busy = Error::new(
                    ErrorKind::IncorrectState,
                    format!("{volume_id} is being detached"),
                );
                let _ = super::messages::write_frame(&stream, &Event::failed(&busy));
            }
        }
    }
    client
}

fn signal_name(sig: i32) -> &'static str {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
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

/// One control request: a [`Request`] line in, an [`Event`] line out. A
/// `Detach` is not answered here: its client is returned, to be answered once
/// the volume is detached.
fn serve_control(
    ec2: &Ec2,
    attachment: &crate::ec2::Attachment,
    nbd: Option<&crate::nbd::Server>,
    stream: std::os::unix::net::UnixStream,
) -> Option<std::os::unix::net::UnixStream> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = std::io::BufReader::new(&stream);
    let request = super::messages::read_frame::<Request>(&mut reader);
    tracing::debug!("control request: {request:?}");
    let reply = match request {
        Ok(Request::CreateSnapshot { description, tags }) => {
            let watch = ClientWatch::start(&stream);
            let made = ec2.create_snapshot_of(attachment, &description, tags, Some(&watch.gone));
            drop(watch);
            match made {
                Ok(snapshot) => {
                    tracing::info!(
                        "{}: snapshot {} made",
                        attachment.volume_id(),
                        snapshot.snapshot_id
                    );
                    Event::Snapshot { snapshot }
                }
                Err(e) => {
                    tracing::warn!(
                        "{}: snapshot failed: {}",
                        attachment.volume_id(),
                        e.message()
                    );
                    Event::failed(&e)
                }
            }
        }
        Ok(Request::Detach) => return Some(stream),
        Ok(Request::Status) => Event::Status {
            nbd_connections: nbd.map_or(0, |s| {
                let n = s
                    .stats()
                    .connections
                    .load(std::sync::atomic::Ordering::SeqCst);
                u64::try_from(n).unwrap_or(u64::MAX)
            }),
        },
        Err(e) => {
            tracing::warn!("control request refused: {}", e.message());
            Event::failed(&e)
        }
    };
    if let Err(e) = super::messages::write_frame(&stream, &reply) {
        tracing::debug!("control reply not delivered: {e}");
    }
    None
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
