//! The Linux host attachments live on: its mounts, loop devices, processes and
//! sockets. [`LinuxHost`] is the [`AttachmentHost`] the EC2 engine is given, so
//! `src/ec2/` itself never unmounts anything or removes a socket.
//!
//! What this host still holds of an attachment whose process is gone: the
//! filesystem `ebsim mount` mounted, loop devices on its FUSE file, processes
//! with that file open. While any of them exists, the attachment cannot be
//! settled quietly (its key is gone, so their I/O fails): the volume shows
//! `error` and `ebsim unmount` or `detach-volume --force` releases them. When
//! nothing holds it, what the dead process left (its FUSE mount, its NBD and
//! control sockets) is cleared.

use crate::ec2::AttachmentHost;
use crate::ec2::model::AttachmentRecord;
use crate::error::{Error, ErrorKind, Result};
use crate::home::DataRoot;
use crate::volume::owner::VolumeOwner;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The attachments of one region on this Linux host.
#[derive(Debug, Clone)]
pub struct LinuxHost {
    /// `regions/<region>/attachments`: control sockets, logs, FUSE directories of
    /// `ebsim mount`.
    dir: PathBuf,
    /// The data root, for the hosts of other regions.
    root: DataRoot,
    /// Whose attachments these are (EC2's, or RDS's storage in `rds/`).
    owner: &'static VolumeOwner,
}

impl LinuxHost {
    /// The host of `region`'s attachments under `root`.
    pub fn for_region(root: &DataRoot, region: &str) -> Result<Self> {
        Self::for_owner(root, region, &VolumeOwner::EC2)
    }

    /// The host of the attachments of `owner`'s volumes in `region`
    /// (`attachments/` in the owner's directory): each owner's engine clears
    /// only the stale sockets of its own volumes.
    pub fn for_owner(root: &DataRoot, region: &str, owner: &'static VolumeOwner) -> Result<Self> {
        Ok(LinuxHost {
            dir: owner
                .base_dir(&root.region_dir(region)?)
                .join("attachments"),
            root: root.clone(),
            owner,
        })
    }

    /// The directory of the region's attachment files (made private on demand).
    pub fn attachments_dir(&self) -> Result<&Path> {
        crate::fsutil::ensure_private_dir(&self.dir)?;
        Ok(&self.dir)
    }

    /// The control socket of `volume_id`'s attachment process.
    pub fn control_socket(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!("{volume_id}.sock"))
    }

    /// The log of `volume_id`'s attachment process.
    pub fn log_file(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!("{volume_id}.log"))
    }

    /// `regions/<region>/instances/<instance_id>`: where the devices of a
    /// simulated instance appear (NBD sockets `<device>.sock`, FUSE directories
    /// `<device>/`), made private on demand.
    pub fn instance_dir(&self, instance_id: &str) -> Result<PathBuf> {
        crate::ec2::instances::check_instance_id(instance_id)?;
        let parent = self.instances_dir();
        crate::fsutil::ensure_private_dir(&parent)?;
        let dir = parent.join(instance_id);
        crate::fsutil::ensure_private_dir(&dir)?;
        Ok(dir)
    }

    fn instances_dir(&self) -> PathBuf {
        self.dir.with_file_name("instances")
    }

    /// Removes a terminated instance's directory: only empty device directories
    /// and nothing else may be left in it (its attachment processes are gone and
    /// took their sockets and mounts with them); anything else is an error that
    /// names it.
    pub fn remove_instance_dir(&self, instance_id: &str) -> Result<()> {
        crate::ec2::instances::check_instance_id(instance_id)?;
        let dir = self.instances_dir().join(instance_id);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io_file(&dir, e)),
        };
        for e in entries {
            let path = e.map_err(|e| Error::io_file(&dir, e))?.path();
            if path.is_dir() && !is_mount_point(&path) {
                std::fs::remove_dir(&path).map_err(|e| Error::io_file(&path, e))?;
            } else if path.extension().is_some_and(|x| x == "sock") {
                // A socket its (stopped) process did not remove.
                std::fs::remove_file(&path).map_err(|e| Error::io_file(&path, e))?;
            } else {
                return Err(Error::new(
                    ErrorKind::VolumeInUse,
                    format!(
                        "{} is still in use: {} remains",
                        instance_id,
                        path.display()
                    ),
                ));
            }
        }
        std::fs::remove_dir(&dir).map_err(|e| Error::io_file(&dir, e))
    }
}

impl AttachmentHost for LinuxHost {
    fn for_region(&self, region: &str) -> Result<Option<std::sync::Arc<dyn AttachmentHost>>> {
        Ok(Some(std::sync::Arc::new(LinuxHost::for_owner(
            &self.root, region, self.owner,
        )?)))
    }

    fn holders(&self, volume_id: &str, a: &AttachmentRecord) -> Vec<String> {
        holders(volume_id, a)
    }

    fn clear_dead(&self, volume_id: &str, a: &AttachmentRecord) {
        if let Some(dir) = &a.fuse_dir {
            // The process died with its FUSE mount still in place ("Transport
            // endpoint is not connected"): detach it lazily so the directory can
            // be used again.
            if let Err(e) = nix::mount::umount2(dir.as_str(), nix::mount::MntFlags::MNT_DETACH) {
                tracing::debug!("{volume_id}: lazy unmount of {dir}: {e}");
            }
        }
        if let Some(sock) = &a.nbd_socket {
            // The NBD socket of the dead process (nobody answers on it any more).
            let _ = crate::nbd::server::remove_stale_socket(Path::new(sock));
        }
        let _ = crate::nbd::server::remove_stale_socket(&self.control_socket(volume_id));
        tracing::info!(
            "{volume_id}: settled the attachment of process {}, which is gone",
            a.pid
        );
    }

    fn release(
        &self,
        volume_id: &str,
        a: &AttachmentRecord,
        process_gone: bool,
    ) -> Result<Vec<String>> {
        let done = release(volume_id, a, process_gone)?;
        for d in &done {
            tracing::info!("{volume_id}: {d}");
        }
        Ok(done)
    }

    fn clear_stale_sockets(&self, live: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".sock")
                && id.starts_with("vol-")
                && !live(id)
                && crate::nbd::server::remove_stale_socket(&e.path()).is_ok()
                && !e.path().exists()
            {
                out.push(e.path());
            }
        }
        out
    }
}

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
            Some(v) if let Ok(v) = u8::try_from(v) => {
                out.push(v);
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

/// Runs one of the host's tools (losetup, mkfs, mount, umount); its stdout,
/// trimmed. A tool that cannot run is an environment error naming it; one that
/// fails, an error with its command line and stderr.
pub fn run_tool(program: &str, args: &[&str]) -> Result<String> {
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

/// A loop device on a volume's FUSE file (direct I/O, 4096-byte sectors: the
/// volume's unit); its path.
pub fn loop_attach(file: &Path) -> Result<String> {
    let file_s = file.display().to_string();
    run_tool(
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
}

/// A new ext4 on `device`: no discard (a new volume is all holes already),
/// the inode tables and journal initialized lazily (by the kernel, on first
/// mount), as on EBS volumes.
pub fn mkfs_ext4(device: &str) -> Result<()> {
    run_tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
            device,
        ],
    )
    .map(|_| ())
}

/// Grows the (unmounted) ext4 on `device` to the device's size when the
/// device is larger (a volume grown since): `e2fsck -f` first, as resize2fs
/// requires offline, then `resize2fs`. Nothing when it is that size already
/// (read from the superblock: `dumpe2fs -h`). Online growth is not used: a
/// guest kernel may refuse it (EPERM seen on this project's VMs).
pub fn grow_ext4(device: &str) -> Result<bool> {
    let device_bytes: u64 = run_tool("blockdev", &["--getsize64", device])?
        .parse()
        .map_err(|_| {
            Error::new(
                ErrorKind::Internal,
                format!("blockdev --getsize64 {device}: not a number"),
            )
        })?;
    let header = run_tool("dumpe2fs", &["-h", device])?;
    let field = |name: &str| -> Option<u64> {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let (Some(blocks), Some(block_size)) = (field("Block count:"), field("Block size:")) else {
        return Err(Error::new(
            ErrorKind::Internal,
            format!("dumpe2fs -h {device}: no block count or size"),
        ));
    };
    if blocks * block_size + block_size > device_bytes {
        return Ok(false);
    }
    run_tool("e2fsck", &["-f", "-p", device])?;
    run_tool("resize2fs", &[device])?;
    Ok(true)
}

/// Mounts the filesystem on `device` at `target`.
pub fn mount(device: &str, target: &Path) -> Result<()> {
    let t = target.display().to_string();
    run_tool("mount", &[device, &t]).map(|_| ())
}

/// Unmounts `target` (nothing if it is not a mount point).
pub fn umount(target: &Path) -> Result<()> {
    if !is_mount_point(target) {
        return Ok(());
    }
    let t = target.display().to_string();
    run_tool("umount", &[&t]).map(|_| ())
}

/// Detaches loop device `device`.
pub fn loop_detach(device: &str) -> Result<()> {
    run_tool("losetup", &["-d", device]).map(|_| ())
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

/// The FUSE file an attachment served, if it had one.
pub fn fuse_file(volume_id: &str, a: &AttachmentRecord) -> Option<PathBuf> {
    a.fuse_dir.as_ref().map(|d| Path::new(d).join(volume_id))
}

/// What still holds the attachment `a` of `volume_id`, one line each.
fn holders(volume_id: &str, a: &AttachmentRecord) -> Vec<String> {
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
fn release(volume_id: &str, a: &AttachmentRecord, process_gone: bool) -> Result<Vec<String>> {
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
