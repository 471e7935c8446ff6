//! `ebsim ec2 attach-volume --fuse DIR`, `ebsim ec2 detach-volume`, and the Linux
//! conveniences `ebsim mount` / `ebsim unmount` (attach + losetup + mkfs + mount).
//!
//! Every call goes through the service layer (`crate::service::attach`); what
//! stays here is the front end's: the command line that runs an attachment
//! process (this binary, its flags), reporting to the parent, printing, and the
//! tools `ebsim mount` runs (losetup, mkfs, mount, umount).

use super::Ctx;
use crate::error::{Error, ErrorKind, Result};
use crate::host::linux::{check_fuse_dir, is_mount_point, run_tool};
use crate::host::{messages::Event, supervisor};
use crate::service::attach::{self as svc, AttachVolumeRequest, DetachVolumeRequest, Launch};
use std::path::Path;
use std::process::Command;

/// A command line that runs this binary as an attachment process.
fn launch(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Launch> {
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the ebsim binary", e))?;
    let mut command = Command::new(exe);
    command.args(args);
    Ok(Launch {
        command,
        exit_meaning: super::exit::kind_of,
    })
}

/// The command line of the attachment process that serves a volume for a
/// simulated instance: this binary's `ec2 attach-volume … --nbd unix:SOCKET
/// --foreground --report-to-parent`, as the caller, on the same data root and
/// region. Every front end that runs in this binary (the CLI, `ebsim serve`)
/// lends it to its `Services`.
pub fn instance_launcher(spec: &svc::InstanceLaunch<'_>) -> Result<Launch> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if !spec.ctx.caller.is_root() {
        args.extend(["--principal".into(), spec.ctx.caller.arn().into()]);
    }
    args.extend(["--home".into(), spec.root.as_os_str().to_owned()]);
    for a in [
        "--region",
        &spec.ctx.region,
        "--output",
        "json",
        "ec2",
        "attach-volume",
        "--volume-id",
        spec.volume_id,
        "--instance-id",
        spec.instance_id,
        "--device",
        spec.device,
        "--foreground",
        "--report-to-parent",
    ] {
        args.push(a.into());
    }
    let mut nbd = std::ffi::OsString::from("unix:");
    nbd.push(spec.nbd_socket.as_os_str());
    args.extend(["--nbd".into(), nbd]);
    launch(args)
}

/// `ebsim ec2 attach-volume`.
pub fn attach_volume(
    ctx: &Ctx,
    req: AttachVolumeRequest,
    front: &crate::host::Frontends,
    foreground: bool,
    report_to_parent: bool,
) -> Result<()> {
    if front.fuse.is_none() && front.nbd.is_none() {
        return Err(Error::new(
            ErrorKind::MissingParameter,
            "ebsim attaches a volume to this host through a front end: give --fuse DIR, --nbd unix:PATH|tcp:HOST:PORT, or both; or give --instance-id and --device of an instance from run-instances",
        ));
    }
    let rctx = ctx.request_context();
    if !foreground {
        // The attachment process runs this command line again, in the
        // foreground and reporting to us.
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        args.retain(|a| a != "--foreground");
        args.push("--foreground".into());
        args.push("--report-to-parent".into());
        let out = svc::attach_volume(&ctx.services, &rctx, &req, launch(args)?)?;
        return ctx.out.print("AttachVolume", out);
    }
    // Every error until readiness, opening the region included, goes to the parent.
    let volume_id = req.volume_id.clone();
    let mut reported = false;
    let result = svc::serve(&ctx.services, &rctx, &req, front, |a| {
        if report_to_parent {
            reported = true;
            supervisor::report(&Event::Ready {
                attachment: a.clone(),
            })
        } else {
            ctx.out.print(
                "AttachVolume",
                svc::attachment_response(&volume_id, a, "attached"),
            )
        }
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

/// `ebsim ec2 detach-volume`.
pub fn detach_volume(ctx: &Ctx, req: DetachVolumeRequest) -> Result<()> {
    let rctx = ctx.request_context();
    let out = ctx
        .services
        .ec2(&rctx, crate::service::ec2::Ec2Request::DetachVolume(req))?;
    ctx.out.print("DetachVolume", out)
}

fn need_root(what: &str) -> Result<()> {
    need_root_for(what, "it runs losetup and mount")
}

/// Refuses a command that mounts or unmounts unless it runs as root; `why`
/// says what it does that needs root.
pub(super) fn need_root_for(what: &str, why: &str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::environment(format!(
            "{what} needs root ({why}); run it with sudo"
        )))
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
    let rctx = ctx.request_context();
    // The attachment process runs attach-volume --foreground for us.
    let (a, file) = svc::attach_for_mount(&ctx.services, &rctx, volume_id, |fuse_dir| {
        launch(attach_args(ctx, volume_id, fuse_dir))
    })?;
    let undo_attach = |e: Error| -> Error {
        svc::abandon_mount(&ctx.services, &rctx, volume_id, &a);
        e
    };
    let loop_dev = crate::host::linux::loop_attach(&file).map_err(undo_attach)?;
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
    let rec = svc::record_mount(
        &ctx.services,
        &rctx,
        volume_id,
        Some((loop_dev.clone(), target_s.clone())),
    )
    .map_err(|e| {
        let _ = run_tool("umount", &[&target_s]);
        undo_loop(e)
    })?;
    ctx.out.print(
        "Mount",
        svc::attachment_response(volume_id, &rec, "attached"),
    )
}

/// The command line of `ebsim ec2 attach-volume --volume-id V --fuse DIR` with
/// this command's global options and caller, run in the foreground and
/// reporting to its parent.
fn attach_args(ctx: &Ctx, volume_id: &str, fuse_dir: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if !ctx.caller.is_root() {
        args.extend(["--principal".into(), ctx.caller.arn().into()]);
    }
    args.extend(["--home".into(), ctx.root.path().as_os_str().to_owned()]);
    for a in [
        "--region",
        &ctx.region,
        "--output",
        "json",
        "ec2",
        "attach-volume",
        "--volume-id",
        volume_id,
        "--fuse",
    ] {
        args.push(a.into());
    }
    args.push(fuse_dir.as_os_str().to_owned());
    args.extend(["--foreground".into(), "--report-to-parent".into()]);
    args
}

/// `ebsim unmount DIR`.
pub fn unmount(ctx: &Ctx, dir: &Path) -> Result<()> {
    need_root("ebsim unmount")?;
    let target = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", dir.display()), e))?;
    let target_s = target.display().to_string();
    // DetachVolume, authorized and recorded; nothing is changed if refused.
    let out = svc::unmount(&ctx.services, &ctx.request_context(), &target_s, |_| {
        if is_mount_point(&target) {
            run_tool("umount", &[&target_s]).map_err(|e| {
                Error::new(
                    ErrorKind::VolumeInUse,
                    format!("{target_s} is busy, nothing was changed: {}", e.message()),
                )
            })?;
        }
        Ok(())
    })?;
    ctx.out.print("Unmount", out)
}
