//! `ebsim ec2 attach-volume --fuse DIR`, `ebsim ec2 detach-volume`, and the Linux
//! conveniences `ebsim mount` / `ebsim unmount` (attach + losetup + mkfs + mount).

use super::Ctx;
use crate::ec2::model::AttachmentRecord;
use crate::error::{Error, ErrorKind, Result};
use crate::host::linux::{check_fuse_dir, is_mount_point, users};
use crate::host::{LinuxHost, messages::Event, supervisor};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long detach waits for the attachment process.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The instance this machine plays: `i-` and 17 hex digits of its host name's hash,
/// so every attachment from one host names the same instance.
pub fn default_instance_id() -> String {
    use sha2::Digest;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = sha2::Sha256::digest(host.trim().as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("i-{}", &hex[..17])
}

/// EC2's AttachVolume / DetachVolume response, plus where ebsim serves the volume.
fn attachment_json(volume_id: &str, a: &AttachmentRecord, state: &str) -> serde_json::Value {
    let mut v = json!({
        "AttachTime": crate::kms::api::Time(a.attach_time),
        "Device": a.device,
        "InstanceId": a.instance_id,
        "State": state,
        "VolumeId": volume_id,
    });
    if let Some(dir) = &a.fuse_dir {
        v["FuseFile"] = json!(Path::new(dir).join(volume_id));
        v["ProcessId"] = json!(a.pid);
    }
    if let Some(uri) = &a.nbd_uri {
        v["NbdUri"] = json!(uri);
        v["ProcessId"] = json!(a.pid);
    }
    if let Some(l) = &a.loop_device {
        v["LoopDevice"] = json!(l);
    }
    if let Some(m) = &a.mounted_at {
        v["MountPoint"] = json!(m);
    }
    v
}

fn host(ctx: &Ctx) -> Result<LinuxHost> {
    LinuxHost::for_region(&ctx.root, &ctx.region)
}

/// Starts the attachment process as a child (this command line again, run in
/// the foreground and reporting to us) and waits for it to report. Returns the
/// attachment it recorded.
fn spawn_daemon(ctx: &Ctx, volume_id: &str) -> Result<AttachmentRecord> {
    crate::ec2::check_volume_id(volume_id)?;
    // A damaged data root (root key, stores) is refused here, before the
    // attachments directory and the process's log are made in it.
    ctx.ec2()?;
    let host = host(ctx)?;
    let log = host.attachments_dir()?.join(format!("{volume_id}.log"));
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the ebsim binary", e))?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.retain(|a| a != "--foreground");
    args.push("--foreground".into());
    args.push("--report-to-parent".into());
    let mut cmd = Command::new(exe);
    cmd.args(args);
    supervisor::start(cmd, volume_id, &log, super::exit::kind_of)
}

/// `ebsim ec2 attach-volume`.
#[allow(clippy::too_many_arguments)]
pub fn attach_volume(
    ctx: &Ctx,
    volume_id: &str,
    instance_id: Option<String>,
    device: Option<String>,
    front: &crate::host::Frontends,
    foreground: bool,
    report_to_parent: bool,
) -> Result<()> {
    if front.fuse.is_none() && front.nbd.is_none() {
        return Err(Error::new(
            ErrorKind::MissingParameter,
            "ebsim attaches a volume to this host through a front end: give --fuse DIR, --nbd unix:PATH|tcp:HOST:PORT, or both",
        ));
    }
    if !foreground {
        let a = spawn_daemon(ctx, volume_id)?;
        return ctx
            .out
            .print("AttachVolume", attachment_json(volume_id, &a, "attached"));
    }
    let instance = instance_id.unwrap_or_else(default_instance_id);
    // Every error until readiness, opening the region included, goes to the parent.
    let mut reported = false;
    let result = attachment_service(ctx).and_then(|ec2| {
        let control = control_socket(ctx, volume_id)?;
        crate::host::serve(
            &ec2,
            &ctx.caller,
            volume_id,
            front,
            &instance,
            device.as_deref(),
            &control,
            |a| {
                if report_to_parent {
                    reported = true;
                    supervisor::report(&Event::Ready {
                        attachment: a.clone(),
                    })
                } else {
                    ctx.out
                        .print("AttachVolume", attachment_json(volume_id, a, "attached"))
                }
            },
        )
    });
    if let (Err(e), true) = (&result, report_to_parent) {
        // Into the log, with its time (the CLI's error line follows, without).
        tracing::error!("{volume_id}: {}", e.message());
        if !reported {
            // Before readiness the supervisor is still reading: hand it the error.
            let _ = supervisor::report(&Event::failed(e));
        }
    }
    result
}

/// The volume service of an attachment process. A stop signal sets its cancel
/// flag (a snapshot in progress for a control client stops), and is also what
/// `host::serve` waits for to detach; unlike a command's, a second signal does
/// not end the process at once, which must unmount and flush first.
fn attachment_service(ctx: &Ctx) -> Result<crate::ec2::Ec2> {
    let mut ec2 = crate::ec2::Ec2::new(&ctx.root, ctx.kms()?)?;
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|e| Error::io("cannot install signal handlers", e))?;
    }
    ec2.set_cancel(flag);
    Ok(ec2)
}

fn control_socket(ctx: &Ctx, volume_id: &str) -> Result<PathBuf> {
    crate::ec2::check_volume_id(volume_id)?;
    let host = host(ctx)?;
    host.attachments_dir()?;
    Ok(host.control_socket(volume_id))
}

/// CreateSnapshot of a volume attached through a daemon: the daemon holds the
/// writes for the cut (the call was authorized by this process, which records
/// it). None when the volume is not attached that way.
pub fn snapshot_via_daemon(
    ctx: &Ctx,
    v: &crate::ec2::model::VolumeRecord,
    description: &str,
    tags: &[crate::ec2::model::Tag],
) -> Result<Option<crate::ec2::model::Snapshot>> {
    match &v.attachment {
        Some(a) if a.fuse_dir.is_some() || a.nbd_uri.is_some() => {
            let cancel = super::interrupted();
            supervisor::create_snapshot(
                &control_socket(ctx, &v.volume_id)?,
                description,
                tags,
                Some(&cancel),
            )
            .map(Some)
        }
        _ => Ok(None),
    }
}

/// `ebsim ec2 detach-volume`: DetachVolume is authorized (and recorded) here,
/// before the attachment process is told to stop; that process detaches.
pub fn detach_volume(ctx: &Ctx, volume_id: &str, force: bool) -> Result<()> {
    let ec2 = ctx.ec2()?;
    let a = ec2.detach_volume(&ctx.caller, volume_id, force, |a| {
        stop_attachment(ctx, &ec2, volume_id, a, force)
    })?;
    ctx.out
        .print("DetachVolume", attachment_json(volume_id, &a, "detached"))
}

/// Ends attachment `a` of `volume_id`: refuses while it is in use (unless
/// `force`), releases what the host holds, stops the attachment process.
fn stop_attachment(
    ctx: &Ctx,
    ec2: &crate::ec2::Ec2,
    volume_id: &str,
    a: &AttachmentRecord,
    force: bool,
) -> Result<()> {
    if !ec2.attached_now(volume_id) {
        // The attachment process died and something still holds what it served
        // (otherwise reading the record would have settled it).
        let holders = ec2.host().holders(volume_id, a);
        if !force {
            return Err(Error::new(
                ErrorKind::VolumeInUse,
                crate::ec2::stale_message(volume_id, a, &holders),
            ));
        }
        ec2.host().release(volume_id, a, true)?;
        ec2.update_attachment(volume_id, |r| {
            r.loop_device = None;
            r.mounted_at = None;
        })?;
        // Nothing holds it now: reading it settles the record and the grant.
        ec2.attachment(volume_id)?;
        return Ok(());
    }
    if a.fuse_dir.is_none() && a.nbd_uri.is_none() {
        return Err(Error::new(
            ErrorKind::IncorrectState,
            format!(
                "{volume_id} is attached in process {} without a FUSE mount or NBD export; that process detaches it",
                a.pid
            ),
        ));
    }
    if !force {
        if let Some(m) = &a.mounted_at {
            return Err(Error::new(
                ErrorKind::VolumeInUse,
                format!(
                    "{volume_id} is mounted on {m} by ebsim mount: run ebsim unmount {m} (or --force)"
                ),
            ));
        }
        if let Some(dir) = &a.fuse_dir {
            let file = Path::new(dir).join(volume_id);
            let users = users(&file);
            if !users.is_empty() {
                return Err(Error::new(
                    ErrorKind::VolumeInUse,
                    format!(
                        "{volume_id} is in use: {} holds {} (or --force)",
                        users.join(", "),
                        file.display()
                    ),
                ));
            }
        }
        if let Some(uri) = &a.nbd_uri {
            let n = supervisor::nbd_connections(&control_socket(ctx, volume_id)?)?;
            if n > 0 {
                return Err(Error::new(
                    ErrorKind::VolumeInUse,
                    format!(
                        "{volume_id} is in use: {n} NBD client connection(s) on {uri} (disconnect them, or --force)"
                    ),
                ));
            }
        }
    }
    if force {
        // What holds the FUSE file (ebsim mount's filesystem, loop devices) goes
        // first, or the attachment process could not unmount it.
        ec2.host().release(volume_id, a, false)?;
        if a.mounted_at.is_some() {
            ec2.update_attachment(volume_id, |r| {
                r.loop_device = None;
                r.mounted_at = None;
            })?;
        }
    }
    supervisor::stop(a, &control_socket(ctx, volume_id)?, STOP_TIMEOUT)?;
    // The daemon detached (or died): the record is repaired either way.
    ec2.attachment(volume_id)?;
    Ok(())
}

fn need_root(what: &str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::environment(format!(
            "{what} needs root (it runs losetup and mount); run it with sudo"
        )))
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        Error::environment(format!(
            "cannot run {program} ({e}); scripts/test.sh installs it"
        ))
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(Error::new(
            ErrorKind::Internal,
            format!(
                "{program} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// `ebsim mount VOL DIR [--mkfs ext4|xfs]`.
pub fn mount(ctx: &Ctx, volume_id: &str, dir: &Path, mkfs: Option<&str>) -> Result<()> {
    need_root("ebsim mount")?;
    if let Some(fs) = mkfs
        && !["ext4", "xfs"].contains(&fs)
    {
        return Err(Error::usage(format!("--mkfs takes ext4 or xfs, not {fs}")));
    }
    let target = check_fuse_dir(dir)?;
    let ec2 = ctx.ec2()?;
    // The volume must exist (InvalidVolume.NotFound); the attachment process
    // authorizes AttachVolume.
    ec2.attachment(volume_id)?;
    let fuse_dir = host(ctx)?.attachments_dir()?.join(volume_id);
    crate::fsutil::ensure_private_dir(&fuse_dir)?;
    // The attachment process runs attach-volume --foreground for us.
    let a = spawn_attach(ctx, volume_id, &fuse_dir)?;
    let file = fuse_dir.join(volume_id);
    let undo_attach = |e: Error| -> Error {
        if let Ok(control) = control_socket(ctx, volume_id) {
            let _ = supervisor::stop(&a, &control, STOP_TIMEOUT);
        }
        let _ = ec2.attachment(volume_id);
        e
    };
    let file_s = file.display().to_string();
    let loop_dev = run_tool(
        "losetup",
        &[
            "--find",
            "--show",
            "--direct-io=on",
            "--sector-size",
            "4096",
            &file_s,
        ],
    )
    .map_err(undo_attach)?;
    let undo_loop = |e: Error| -> Error {
        let _ = run_tool("losetup", &["-d", &loop_dev]);
        undo_attach(e)
    };
    if let Some(fs) = mkfs {
        let args: Vec<&str> = match fs {
            "ext4" => vec!["-q", "-F", &loop_dev],
            _ => vec!["-q", "-f", &loop_dev],
        };
        run_tool(&format!("mkfs.{fs}"), &args).map_err(undo_loop)?;
    }
    let target_s = target.display().to_string();
    run_tool("mount", &[&loop_dev, &target_s]).map_err(undo_loop)?;
    let rec = ec2
        .update_attachment(volume_id, |r| {
            r.loop_device = Some(loop_dev.clone());
            r.mounted_at = Some(target_s.clone());
        })
        .map_err(|e| {
            let _ = run_tool("umount", &[&target_s]);
            undo_loop(e)
        })?;
    ctx.out
        .print("Mount", attachment_json(volume_id, &rec, "attached"))
}

/// Starts the attachment process of `ebsim ec2 attach-volume --volume-id V
/// --fuse DIR` with this command's global options and caller, and waits until
/// it is ready (its errors arrive typed, as the attach's own).
fn spawn_attach(ctx: &Ctx, volume_id: &str, fuse_dir: &Path) -> Result<AttachmentRecord> {
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the ebsim binary", e))?;
    let mut cmd = Command::new(exe);
    if !ctx.caller.is_root() {
        cmd.args(["--principal", ctx.caller.arn()]);
    }
    cmd.args(["--home"])
        .arg(ctx.root.path())
        .args([
            "--region",
            &ctx.region,
            "--output",
            "json",
            "ec2",
            "attach-volume",
            "--volume-id",
            volume_id,
            "--fuse",
        ])
        .arg(fuse_dir)
        .args(["--foreground", "--report-to-parent"]);
    let log = host(ctx)?.log_file(volume_id);
    supervisor::start(cmd, volume_id, &log, super::exit::kind_of)
}

/// `ebsim unmount DIR`.
pub fn unmount(ctx: &Ctx, dir: &Path) -> Result<()> {
    need_root("ebsim unmount")?;
    let target = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", dir.display()), e))?;
    let target_s = target.display().to_string();
    let ec2 = ctx.ec2()?;
    let (volume_id, a) = ec2
        .find_attachment(|a| a.mounted_at.as_deref() == Some(target_s.as_str()))?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidParameterValue,
                format!("no volume is mounted on {target_s} by ebsim mount"),
            )
        })?;
    // DetachVolume, authorized and recorded; nothing is changed if refused.
    ec2.detach_volume(&ctx.caller, &volume_id, false, |a| {
        if is_mount_point(&target) {
            run_tool("umount", &[&target_s]).map_err(|e| {
                Error::new(
                    ErrorKind::VolumeInUse,
                    format!("{target_s} is busy, nothing was changed: {}", e.message()),
                )
            })?;
        }
        // Every loop device on the volume's FUSE file (the one ebsim mount made, and
        // any other), then the record, then the attachment process.
        ec2.host().release(&volume_id, a, false)?;
        ec2.update_attachment(&volume_id, |r| {
            r.loop_device = None;
            r.mounted_at = None;
        })?;
        // A process that is gone is not signalled (its pid may be another's now):
        // reading the record settles the attachment, the grant and its FUSE mount.
        if ec2.attached_now(&volume_id) {
            supervisor::stop(a, &control_socket(ctx, &volume_id)?, STOP_TIMEOUT)?;
        }
        ec2.attachment(&volume_id)?;
        Ok(())
    })?;
    ctx.out
        .print("Unmount", attachment_json(&volume_id, &a, "detached"))
}
