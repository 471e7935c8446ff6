//! AttachVolume and DetachVolume on this host, and what goes with them: the
//! attachment process's own attach ([`serve`]), `ebsim mount` / `ebsim unmount`
//! ([`attach_for_mount`], [`record_mount`], [`unmount`]), and CreateSnapshot of a
//! volume an attachment process serves ([`create_snapshot`]).
//!
//! Authorization, validation and the CloudTrail record stay in the EC2 engine
//! (`Ec2::attach`, `Ec2::detach_volume`, `Ec2::create_snapshot_via`); this module
//! gets the region's engine and host from [`Services`] and drives the
//! attachment process through the host's supervisor (`src/host/`). The command
//! line that runs an attachment process is the front end's ([`Launch`]): only
//! it knows its binary and flags.

use super::{RequestContext, Services, to_value};
use crate::ec2::Ec2;
use crate::ec2::model::{AttachmentRecord, Snapshot, Tag, VolumeAttachment, VolumeRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::host::linux::users;
use crate::host::{Frontends, LinuxHost, supervisor};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a detach waits for the attachment process.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How a front end starts an attachment process: a command line that runs
/// [`serve`] for the volume and reports to its parent (`supervisor::report`),
/// and what that program's exit codes mean should it die before it reports.
pub struct Launch {
    pub command: std::process::Command,
    pub exit_meaning: supervisor::ExitMeaning,
}

/// AttachVolume's request, in EC2's member names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AttachVolumeRequest {
    pub volume_id: String,
    /// This host's instance when absent ([`default_instance_id`]).
    pub instance_id: Option<String>,
    /// Where the volume is served when absent (the FUSE file, or the NBD URI).
    pub device: Option<String>,
    /// EC2's DryRun (AttachVolume through the table): authorized, then
    /// DryRunOperation; no process is started.
    pub dry_run: bool,
}

/// DetachVolume's request, in EC2's member names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DetachVolumeRequest {
    pub volume_id: String,
    /// Detach even while the host uses the volume (ebsim releases what holds it).
    pub force: bool,
    /// Accepted and ignored: a volume has one attachment.
    pub instance_id: Option<String>,
    pub device: Option<String>,
    pub dry_run: bool,
}

/// The instance this machine plays: `i-` and 17 hex digits of its host name's
/// hash, so every attachment from one host names the same instance.
pub fn default_instance_id() -> String {
    use sha2::Digest;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = sha2::Sha256::digest(host.trim().as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("i-{}", &hex[..17])
}

/// EC2's VolumeAttachment (AttachVolume's and DetachVolume's response) in
/// `state`, plus where ebsim serves the volume (`FuseFile`, `NbdUri`,
/// `ProcessId`, and `ebsim mount`'s `LoopDevice` and `MountPoint`).
pub fn attachment_response(volume_id: &str, a: &AttachmentRecord, state: &str) -> Value {
    let aws = VolumeAttachment {
        attach_time: crate::kms::api::Time(a.attach_time),
        device: a.device.clone(),
        instance_id: a.instance_id.clone(),
        state: state.to_string(),
        volume_id: volume_id.to_string(),
        delete_on_termination: false,
    };
    let mut v = to_value(aws);
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

/// The control socket of `volume_id`'s attachment process (its directory made
/// if missing).
fn control_socket(host: &LinuxHost, volume_id: &str) -> Result<PathBuf> {
    crate::ec2::check_volume_id(volume_id)?;
    host.attachments_dir()?;
    Ok(host.control_socket(volume_id))
}

/// Starts the attachment process of `volume_id` and waits until it is ready
/// (its errors arrive typed, as an attach's own). Returns its attachment.
fn start(
    services: &Services,
    ctx: &RequestContext,
    volume_id: &str,
    launch: Launch,
) -> Result<AttachmentRecord> {
    crate::ec2::check_volume_id(volume_id)?;
    // A damaged data root (root key, stores) is refused here, before the
    // attachments directory and the process's log are made in it.
    services.ec2_engine(&ctx.region)?;
    let host = services.host(&ctx.region)?;
    let log = host.attachments_dir()?.join(format!("{volume_id}.log"));
    supervisor::start(launch.command, volume_id, &log, launch.exit_meaning)
}

/// AttachVolume on this host: starts the attachment process `launch` runs,
/// which authorizes and records the call, unlocks the volume and serves it
/// ([`serve`]), and returns once it is ready.
pub fn attach_volume(
    services: &Services,
    ctx: &RequestContext,
    req: &AttachVolumeRequest,
    launch: Launch,
) -> Result<Value> {
    if req.dry_run {
        let ec2 = services.ec2_engine(&ctx.region)?;
        let instance = req.instance_id.clone().unwrap_or_else(default_instance_id);
        ec2.attach_dry_run(
            &ctx.caller,
            &req.volume_id,
            &instance,
            req.device.as_deref().unwrap_or(""),
        )?;
    }
    let a = start(services, ctx, &req.volume_id, launch)?;
    Ok(attachment_response(&req.volume_id, &a, "attached"))
}

/// In the attachment process: AttachVolume (authorized and recorded as the
/// caller; the grant and the Decrypt as the instance) on the region's engine,
/// then the unlocked image served through `front` until the process is told to
/// stop (`crate::host::serve`). `ready` is called once with the attachment when
/// every front end is live. The engine's cancel flag (the front end's
/// `super::Ec2Hooks`) stops a snapshot in progress for a control client.
pub fn serve(
    services: &Services,
    ctx: &RequestContext,
    req: &AttachVolumeRequest,
    front: &Frontends,
    ready: impl FnOnce(&AttachmentRecord) -> Result<()>,
) -> Result<()> {
    let ec2 = services.ec2_engine(&ctx.region)?;
    let control = control_socket(&services.host(&ctx.region)?, &req.volume_id)?;
    let instance = req.instance_id.clone().unwrap_or_else(default_instance_id);
    crate::host::serve(
        &ec2,
        &ctx.caller,
        &req.volume_id,
        front,
        &instance,
        req.device.as_deref(),
        &control,
        ready,
    )
}

/// What a front end is told to start the attachment process of a volume
/// attached to a simulated instance: the process serves `volume_id` for
/// `instance_id` at `device` through NBD on `nbd_socket` (and, if the front end
/// wants FUSE too, a FUSE file in `fuse_dir`), both in the instance's directory.
pub struct InstanceLaunch<'a> {
    pub ctx: &'a RequestContext,
    pub root: &'a Path,
    pub volume_id: &'a str,
    pub instance_id: &'a str,
    pub device: &'a str,
    pub nbd_socket: &'a Path,
    pub fuse_dir: &'a Path,
}

/// How a front end starts attachment processes for AttachVolume requests that
/// arrive through the operation table (a simulated instance's devices).
pub type Launcher = dyn Fn(&InstanceLaunch<'_>) -> Result<Launch> + Send + Sync;

/// `/dev/sdf` → `sdf`: the name of a device in its instance's directory. EC2's
/// names: `/dev/sd[b-z]`, `/dev/xvd[b-z]`, `/dev/hd[b-z]`, optionally with a
/// partition digit (`/dev/sdf1`).
pub fn device_name(device: &str) -> Result<&str> {
    let name = device.strip_prefix("/dev/").unwrap_or("");
    let stem = ["sd", "xvd", "hd"]
        .iter()
        .find_map(|p| name.strip_prefix(p));
    let ok = stem.is_some_and(|rest| {
        let mut c = rest.chars();
        matches!(c.next(), Some('b'..='z'))
            && c.as_str().len() <= 2
            && c.as_str().chars().all(|d| d.is_ascii_digit())
    });
    if ok {
        Ok(name)
    } else {
        Err(Error::new(
            ErrorKind::InvalidParameterValue,
            format!(
                "Value ({device}) for parameter device is invalid. {device} is not a valid EBS device name."
            ),
        ))
    }
}

/// AttachVolume through the operation table: the instance must be a running
/// simulated instance (`Ec2::run_instances`) in the volume's zone, and the device
/// name free on it. The front end's [`Launcher`] gives the command line of the
/// attachment process, which authorizes and records the call as the caller,
/// unlocks the volume and serves it in the instance's directory
/// (`regions/<region>/instances/<i-…>/<device>.sock`).
pub fn attach_to_instance(
    services: &Services,
    ctx: &RequestContext,
    req: &AttachVolumeRequest,
) -> Result<Value> {
    let Some(instance_id) = req.instance_id.as_deref().filter(|i| !i.is_empty()) else {
        return Err(Error::new(
            ErrorKind::MissingParameter,
            "The request must contain the parameter InstanceId",
        ));
    };
    let Some(device) = req.device.as_deref().filter(|d| !d.is_empty()) else {
        return Err(Error::new(
            ErrorKind::MissingParameter,
            "The request must contain the parameter Device",
        ));
    };
    crate::ec2::check_volume_id(&req.volume_id)?;
    let name = device_name(device)?;
    let ec2 = services.ec2_engine(&ctx.region)?;
    let instance = ec2.running_instance(instance_id)?;
    if ec2.volume_zone(&req.volume_id)? != instance.availability_zone {
        return Err(Error::new(
            ErrorKind::InvalidVolumeZoneMismatch,
            format!(
                "The volume '{}' is not in the same availability zone as instance '{instance_id}'",
                req.volume_id
            ),
        )
        .with(crate::error::Field::VolumeId, &req.volume_id));
    }
    if let Some((other, _)) =
        ec2.find_attachment(|a| a.instance_id == instance_id && a.device == device)?
        && other != req.volume_id
    {
        return Err(Error::new(
            ErrorKind::InvalidParameterValue,
            format!(
                "Invalid value '{device}' for unixDevice. Attachment point {device} is already in use"
            ),
        ));
    }
    if req.dry_run {
        ec2.attach_dry_run(&ctx.caller, &req.volume_id, instance_id, device)?;
    }
    let launcher = services.launcher().ok_or_else(|| {
        Error::new(
            ErrorKind::UnsupportedOperation,
            "this front end cannot start attachment processes",
        )
    })?;
    let host = services.host(&ctx.region)?;
    let dir = host.instance_dir(instance_id)?;
    let nbd_socket = dir.join(format!("{name}.sock"));
    let fuse_dir = dir.join(name);
    let root = services.root().path().to_path_buf();
    let launch = launcher(&InstanceLaunch {
        ctx,
        root: &root,
        volume_id: &req.volume_id,
        instance_id,
        device,
        nbd_socket: &nbd_socket,
        fuse_dir: &fuse_dir,
    })?;
    let a = start(services, ctx, &req.volume_id, launch)?;
    Ok(attachment_response(&req.volume_id, &a, "attached"))
}

/// TerminateInstances: authorized and recorded by the engine; each running
/// instance's volumes are detached first (their attachment processes stopped, as
/// `DetachVolume --force` would, without DetachVolume records: EC2 records none
/// for a termination) and its directory removed.
pub fn terminate_instances(
    services: &Services,
    ctx: &RequestContext,
    req: crate::ec2::model::TerminateInstancesRequest,
) -> Result<Value> {
    let ec2 = services.ec2_engine(&ctx.region)?;
    let host = services.host(&ctx.region)?;
    ec2.terminate_instances(&ctx.caller, req, |instance| {
        let attached = ec2.volumes_attached_to(&instance.instance_id)?;
        for (volume_id, a) in attached {
            stop_attachment(&ec2, &host, &volume_id, &a, true)?;
        }
        host.remove_instance_dir(&instance.instance_id)
    })
    .map(to_value)
}

/// DetachVolume: authorized (and recorded) by the engine before the attachment
/// process is told to stop; that process detaches. Without `Force` it is
/// refused while the host uses the volume.
pub fn detach_volume(
    services: &Services,
    ctx: &RequestContext,
    req: &DetachVolumeRequest,
) -> Result<Value> {
    let ec2 = services.ec2_engine(&ctx.region)?;
    let host = services.host(&ctx.region)?;
    let id = req.volume_id.as_str();
    let a = ec2.detach_volume_with(&ctx.caller, id, req.force, req.dry_run, |a| {
        stop_attachment(&ec2, &host, id, a, req.force)
    })?;
    Ok(attachment_response(id, &a, "detached"))
}

/// Ends attachment `a` of `volume_id`: refuses while it is in use (unless
/// `force`), releases what the host holds, stops the attachment process.
pub(super) fn stop_attachment(
    ec2: &Ec2,
    host: &LinuxHost,
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
        clear_mount(ec2, volume_id)?;
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
            let n = supervisor::nbd_connections(&control_socket(host, volume_id)?)?;
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
            clear_mount(ec2, volume_id)?;
        }
    }
    supervisor::stop(a, &control_socket(host, volume_id)?, STOP_TIMEOUT)?;
    // The process detached (or died): the record is repaired either way.
    ec2.attachment(volume_id)?;
    Ok(())
}

fn clear_mount(ec2: &Ec2, volume_id: &str) -> Result<AttachmentRecord> {
    ec2.update_attachment(volume_id, |r| {
        r.loop_device = None;
        r.mounted_at = None;
    })
}

/// CreateSnapshot, authorized and recorded by the engine. A volume attached
/// through FUSE or NBD is snapshotted by its attachment process, which holds
/// its writes for the cut; the engine's cancel flag (Ctrl-C) withdraws the
/// request, and the process undoes the snapshot. Any other volume must be
/// detached, and is snapshotted here.
pub fn create_snapshot(
    services: &Services,
    ctx: &RequestContext,
    req: super::ec2::CreateSnapshotRequest,
) -> Result<Value> {
    let tags = super::ec2::snapshot_tags(req.tag_specifications)?;
    let ec2 = services.ec2_engine(&ctx.region)?;
    let host = services.host(&ctx.region)?;
    let description = req.description.as_str();
    ec2.create_snapshot_via_with(
        &ctx.caller,
        &req.volume_id,
        description,
        tags.clone(),
        req.dry_run,
        |v| snapshot_elsewhere(&ec2, &host, v, description, &tags),
    )
    .map(to_value)
}

/// The snapshot of `v` taken by its attachment process, or None when no
/// attachment process serves it.
fn snapshot_elsewhere(
    ec2: &Ec2,
    host: &LinuxHost,
    v: &VolumeRecord,
    description: &str,
    tags: &[Tag],
) -> Result<Option<Snapshot>> {
    match &v.attachment {
        Some(a) if a.fuse_dir.is_some() || a.nbd_uri.is_some() => {
            let cancel = ec2.cancel_flag();
            supervisor::create_snapshot(
                &control_socket(host, &v.volume_id)?,
                description,
                tags,
                cancel.as_deref(),
            )
            .map(Some)
        }
        _ => Ok(None),
    }
}

/// `ebsim mount`'s attach: the volume must exist (InvalidVolume.NotFound; the
/// attachment process authorizes AttachVolume). Its FUSE file is served in a
/// private directory of the region's attachments, given to `launch`, which
/// returns the command line that serves it. Returns the attachment once ready,
/// and the FUSE file.
pub fn attach_for_mount(
    services: &Services,
    ctx: &RequestContext,
    volume_id: &str,
    launch: impl FnOnce(&Path) -> Result<Launch>,
) -> Result<(AttachmentRecord, PathBuf)> {
    services.ec2_engine(&ctx.region)?.attachment(volume_id)?;
    let fuse_dir = services
        .host(&ctx.region)?
        .attachments_dir()?
        .join(volume_id);
    crate::fsutil::ensure_private_dir(&fuse_dir)?;
    let launch = launch(&fuse_dir)?;
    let a = start(services, ctx, volume_id, launch)?;
    Ok((a, fuse_dir.join(volume_id)))
}

/// Undoes [`attach_for_mount`] (a later step of `ebsim mount` failed): the
/// attachment process is stopped without a DetachVolume call, as if the attach
/// had not happened, and the record settled.
pub fn abandon_mount(
    services: &Services,
    ctx: &RequestContext,
    volume_id: &str,
    a: &AttachmentRecord,
) {
    if let Ok(host) = services.host(&ctx.region)
        && let Ok(control) = control_socket(&host, volume_id)
    {
        let _ = supervisor::stop(a, &control, STOP_TIMEOUT);
    }
    if let Ok(ec2) = services.ec2_engine(&ctx.region) {
        let _ = ec2.attachment(volume_id);
    }
}

/// Records (`Some`: loop device, mount point) or clears (`None`) the filesystem
/// `ebsim mount` put on `volume_id`'s attachment; returns the attachment.
pub fn record_mount(
    services: &Services,
    ctx: &RequestContext,
    volume_id: &str,
    mount: Option<(String, String)>,
) -> Result<AttachmentRecord> {
    let ec2 = services.ec2_engine(&ctx.region)?;
    match mount {
        None => clear_mount(&ec2, volume_id),
        Some((loop_device, mounted_at)) => ec2.update_attachment(volume_id, |r| {
            r.loop_device = Some(loop_device);
            r.mounted_at = Some(mounted_at);
        }),
    }
}

/// `ebsim unmount`: DetachVolume of the volume `ebsim mount` mounted on
/// `target`, authorized and recorded; nothing is changed if refused. Once
/// authorized, `umount` unmounts the filesystem (the front end runs the tool; a
/// busy one refuses with VolumeInUse and nothing changed), then every loop
/// device on the FUSE file goes, the record, and the attachment process.
pub fn unmount(
    services: &Services,
    ctx: &RequestContext,
    target: &str,
    umount: impl FnOnce(&AttachmentRecord) -> Result<()>,
) -> Result<Value> {
    let ec2 = services.ec2_engine(&ctx.region)?;
    let host = services.host(&ctx.region)?;
    let (volume_id, a) = ec2
        .find_attachment(|a| a.mounted_at.as_deref() == Some(target))?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidParameterValue,
                format!("no volume is mounted on {target} by ebsim mount"),
            )
        })?;
    ec2.detach_volume(&ctx.caller, &volume_id, false, |a| {
        umount(a)?;
        ec2.host().release(&volume_id, a, false)?;
        clear_mount(&ec2, &volume_id)?;
        // A process that is gone is not signalled (its pid may be another's now):
        // reading the record settles the attachment, the grant and its FUSE mount.
        if ec2.attached_now(&volume_id) {
            supervisor::stop(a, &control_socket(&host, &volume_id)?, STOP_TIMEOUT)?;
        }
        ec2.attachment(&volume_id)?;
        Ok(())
    })?;
    Ok(attachment_response(&volume_id, &a, "detached"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_responses_have_ec2s_members_then_ebsims() {
        let a = AttachmentRecord {
            instance_id: "i-0123456789abcdef0".into(),
            device: "/dev/sdf".into(),
            attach_time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            pid: 42,
            grant_id: None,
            key_arn: None,
            fuse_dir: Some("/mnt/x".into()),
            loop_device: None,
            mounted_at: None,
            nbd_uri: Some("nbd+unix:///vol-1?socket=/s".into()),
            nbd_socket: None,
        };
        let v = attachment_response("vol-1", &a, "attached");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "AttachTime",
                "Device",
                "InstanceId",
                "State",
                "VolumeId",
                "DeleteOnTermination",
                "FuseFile",
                "ProcessId",
                "NbdUri"
            ]
        );
        assert_eq!(v["FuseFile"], "/mnt/x/vol-1");
        assert_eq!(v["State"], "attached");
        let r: DetachVolumeRequest =
            serde_json::from_value(json!({"VolumeId": "vol-1", "Force": true})).unwrap();
        assert!(r.force);
    }
}
