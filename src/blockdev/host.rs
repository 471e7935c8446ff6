//! What this host still holds of an attachment whose process is gone: the
//! filesystem `ebsim mount` mounted, loop devices on its FUSE file, processes
//! with that file open. While any of them exists, the attachment cannot be
//! settled quietly (its key is gone, so their I/O fails): the volume shows
//! `error` and `ebsim unmount` or `detach-volume --force` releases them.

use super::daemon::{is_mount_point, users};
use crate::ec2::model::AttachmentRecord;
use crate::error::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The FUSE file an attachment served, if it had one.
pub fn fuse_file(volume_id: &str, a: &AttachmentRecord) -> Option<PathBuf> {
    a.fuse_dir.as_ref().map(|d| Path::new(d).join(volume_id))
}

/// What still holds the attachment `a` of `volume_id`, one line each.
pub fn holders(volume_id: &str, a: &AttachmentRecord) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = &a.mounted_at
        && is_mount_point(Path::new(m))
    {
        out.push(format!(
            "a filesystem is mounted on {m}{}",
            a.loop_device
                .as_deref()
                .map(|l| format!(" from {l}"))
                .unwrap_or_default()
        ));
    }
    if let Some(file) = fuse_file(volume_id, a) {
        for u in users(&file) {
            if !out.iter().any(|o| o.contains(&u)) {
                out.push(format!("{u} holds {}", file.display()));
            }
        }
    }
    out
}

/// The message a volume in `error` shows, and the error attaching it again gives.
pub fn stale_message(volume_id: &str, a: &AttachmentRecord, holders: &[String]) -> String {
    let fix = match &a.mounted_at {
        Some(m) => format!(
            "run ebsim unmount {m}, or ebsim ec2 detach-volume --volume-id {volume_id} --force"
        ),
        None => {
            format!("stop them, or run ebsim ec2 detach-volume --volume-id {volume_id} --force")
        }
    };
    format!(
        "the attachment process {} of {volume_id} is gone, but {}: {fix}",
        a.pid,
        holders.join("; ")
    )
}

fn run(program: &str, args: &[&str]) -> std::result::Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

/// Releases what holds an attachment (`--force`): the filesystem on
/// `mounted_at` (lazily if it is busy), every loop device on the FUSE file, and
/// the FUSE mount itself when its process is gone. Returns what it did.
pub fn release(volume_id: &str, a: &AttachmentRecord, process_gone: bool) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if let Some(m) = &a.mounted_at
        && is_mount_point(Path::new(m))
    {
        match run("umount", &[m]) {
            Ok(()) => done.push(format!("unmounted {m}")),
            Err(_) => {
                run("umount", &["-l", m]).map_err(|e| {
                    Error::new(ErrorKind::Internal, format!("cannot unmount {m}: {e}"))
                })?;
                done.push(format!("unmounted {m} lazily (it was busy)"));
            }
        }
    }
    if let Some(file) = fuse_file(volume_id, a) {
        for u in users(&file) {
            if let Some(dev) = u.strip_prefix("/dev/").map(|_| u.as_str()) {
                run("losetup", &["-d", dev]).map_err(|e| {
                    Error::new(
                        ErrorKind::Internal,
                        format!("cannot detach the loop device {dev}: {e}"),
                    )
                })?;
                done.push(format!("detached {dev}"));
            }
        }
        if process_gone
            && let Some(dir) = &a.fuse_dir
            && is_mount_point(Path::new(dir))
        {
            // The dead process's FUSE mount ("Transport endpoint is not
            // connected"): detached lazily, so processes still inside it fail
            // instead of hanging.
            nix::mount::umount2(dir.as_str(), nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| Error::io(format!("cannot unmount {dir}"), e.into()))?;
            done.push(format!("unmounted the FUSE mount {dir}"));
        }
    }
    Ok(done)
}
