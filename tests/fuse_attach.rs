//! Attach through FUSE and mount on Linux, for real: these tests mount, make loop
//! devices and filesystems, kill daemons. They need root, /dev/fuse, losetup,
//! mkfs.ext4 and fio (scripts/test.sh installs them; CI runs as root) and say why
//! when they skip.

mod common;

use common::sandbox::Sandbox;
use sha2::Digest;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    if let Some(tool) = ["losetup", "mkfs.ext4", "mount", "umount", "fio"]
        .into_iter()
        .find(|t| !common::have(t))
    {
        return Some(format!("{tool} is not installed"));
    }
    None
}

macro_rules! require_linux_tools {
    () => {
        if let Some(why) = missing() {
            common::skip(&format!(
                "{why} (scripts/test.sh installs the tools; CI runs as root)"
            ));
            return;
        }
    };
}

/// Attaches `vol` through FUSE in the sandbox's `att/`; the volume's file.
fn attach_fuse(s: &Sandbox, vol: &str) -> std::path::PathBuf {
    let dir = s.path("att");
    s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        vol,
        "--fuse",
        &dir.display().to_string(),
    ]);
    dir.join(vol)
}

fn sha(path: &Path) -> Vec<u8> {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn mount_write_unmount_remount_reads_back_identical_and_the_image_holds_no_plaintext() {
    require_linux_tools!();
    let s = Sandbox::new();
    let vol = s.volume(true, 128 << 20);
    let fs = s.path("fs");
    let fs_s = fs.display().to_string();
    let out = s.ok(&["mount", &vol, &fs_s, "--mkfs", "ext4"]);
    assert!(out.contains("\"LoopDevice\": \"/dev/loop"), "{out}");
    assert_eq!(s.state(&vol), "in-use");
    let marker = b"ebsim-plaintext-marker: attack at dawn. ".repeat(200);
    let random = ebsim::crypto::random_bytes(5 << 20);
    std::fs::write(fs.join("plans.txt"), &marker).unwrap();
    std::fs::write(fs.join("random.bin"), &random).unwrap();
    std::fs::create_dir(fs.join("sub")).unwrap();
    std::fs::write(fs.join("sub/small"), b"small file").unwrap();
    let want: Vec<(String, Vec<u8>)> = ["plans.txt", "random.bin", "sub/small"]
        .iter()
        .map(|f| (f.to_string(), sha(&fs.join(f))))
        .collect();
    s.ok(&["unmount", &fs_s]);
    assert_eq!(s.state(&vol), "available");
    s.assert_no_leftovers();

    s.ok(&["mount", &vol, &fs_s]);
    for (f, h) in &want {
        assert_eq!(&sha(&fs.join(f)), h, "{f} changed across unmount/mount");
    }
    s.ok(&["unmount", &fs_s]);
    s.assert_no_leftovers();

    let raw = std::fs::read(s.image(&vol)).unwrap();
    assert!(
        !raw.windows(40).any(|w| w == &marker[..40]),
        "plaintext text in the image"
    );
    assert!(
        !raw.windows(64).any(|w| w == &random[4096..4160]),
        "plaintext data in the image"
    );
    assert!(!raw.windows(10).any(|w| w == b"small file"));
}

#[test]
fn fio_with_crc32c_verify_passes_over_the_fuse_file() {
    require_linux_tools!();
    let s = Sandbox::new();
    let vol = s.volume(true, 64 << 20);
    let file = attach_fuse(&s, &vol);
    let fio = Command::new("fio")
        .args([
            "--name=verify",
            &format!("--filename={}", file.display()),
            "--rw=randwrite",
            "--bs=4k",
            "--size=32M",
            "--direct=1",
            "--ioengine=psync",
            "--numjobs=1",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
        ])
        // fio leaves its verify state files in the working directory.
        .current_dir(s.path(""))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&fio.stdout).into_owned() + &String::from_utf8_lossy(&fio.stderr);
    assert!(fio.status.success(), "fio failed:\n{text}");
    assert!(!text.contains("verify: bad"), "{text}");
    let mixed = Command::new("fio")
        .args([
            "--name=mixed",
            &format!("--filename={}", file.display()),
            "--rw=randrw",
            "--bs=4k,64k",
            // Four jobs, each on its own 4 MiB region (verify needs that).
            "--size=4M",
            "--offset=40M",
            "--offset_increment=4M",
            "--direct=1",
            "--ioengine=psync",
            "--numjobs=4",
            "--verify=crc32c",
            "--verify_fatal=1",
        ])
        // fio leaves its verify state files in the working directory.
        .current_dir(s.path(""))
        .output()
        .unwrap();
    assert!(
        mixed.status.success(),
        "{}",
        String::from_utf8_lossy(&mixed.stdout)
    );
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    s.assert_no_leftovers();
}

#[test]
fn kill_9_after_fsync_loses_nothing_and_the_volume_attaches_cleanly() {
    require_linux_tools!();
    let s = Sandbox::new();
    let vol = s.volume(true, 32 << 20);
    let dir = s.path("att");
    let dir_s = dir.display().to_string();
    let out = s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--fuse",
        &dir_s,
        "--query",
        "ProcessId",
        "--output",
        "text",
    ]);
    let pid: i32 = out.parse().unwrap();
    let data = ebsim::crypto::random_bytes(1 << 20);
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(&vol))
            .unwrap();
        f.write_all_at(&data, 5 << 20).unwrap();
        f.sync_all().unwrap();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..100 {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The dead daemon's attachment is seen as stale and its dead mount cleared.
    assert_eq!(s.state(&vol), "available");
    s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--fuse",
        &dir_s,
    ]);
    let mut got = vec![0u8; data.len()];
    std::fs::File::open(dir.join(&vol))
        .unwrap()
        .read_exact_at(&mut got, 5 << 20)
        .unwrap();
    assert!(got == data, "fsynced data lost");
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    s.assert_no_leftovers();
}

#[test]
fn errors_are_clear_and_leave_no_half_state() {
    require_linux_tools!();
    let s = Sandbox::new();
    let key = s.ok(&[
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.KeyId",
        "--output",
        "text",
    ]);
    let vol = s.ok(&[
        "ec2",
        "create-volume",
        "--size-bytes",
        "16777216",
        "--encrypted",
        "--kms-key-id",
        &key,
        "--query",
        "VolumeId",
        "--output",
        "text",
    ]);
    let a = s.path("a");
    let b = s.path("b");
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());

    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        "vol-00000000000000000",
        "--fuse",
        &a_s,
    ]);
    assert_eq!(o.code, 254);
    assert!(
        o.stderr.contains("(InvalidVolume.NotFound)"),
        "{}",
        o.stderr
    );
    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--fuse",
        &s.dir.path().join("nope").display().to_string(),
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("cannot be used"), "{}", o.stderr);
    s.assert_no_leftovers();
    assert_eq!(s.state(&vol), "available");

    s.ok(&["ec2", "attach-volume", "--volume-id", &vol, "--fuse", &a_s]);
    let o = s.ebsim(&["ec2", "attach-volume", "--volume-id", &vol, "--fuse", &b_s]);
    assert_eq!(o.code, 254);
    assert!(o.stderr.contains("(VolumeInUse)"), "{}", o.stderr);
    let other = s.volume(false, 1 << 20);
    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &other,
        "--fuse",
        &a_s,
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("already mounted"), "{}", o.stderr);
    assert_eq!(s.state(&other), "available");

    // The file is open: detach refuses without --force, and detaches with it.
    let held = std::fs::File::open(a.join(&vol)).unwrap();
    let o = s.ebsim(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert_eq!(o.code, 254);
    assert!(
        o.stderr.contains("(VolumeInUse)") && o.stderr.contains("process"),
        "{}",
        o.stderr
    );
    assert_eq!(s.state(&vol), "in-use");
    drop(held);
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert_eq!(s.state(&vol), "available");
    let o = s.ebsim(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert!(o.stderr.contains("(IncorrectState)"), "{}", o.stderr);

    // A disabled key: the attach fails with the KMS error, nothing is left.
    s.ok(&["kms", "disable-key", "--key-id", &key]);
    let o = s.ebsim(&["ec2", "attach-volume", "--volume-id", &vol, "--fuse", &a_s]);
    assert_eq!(o.code, 254);
    assert!(o.stderr.contains("(DisabledException)"), "{}", o.stderr);
    let fs = s.path("fs");
    let o = s.ebsim(&["mount", &vol, &fs.display().to_string()]);
    assert!(o.stderr.contains("(DisabledException)"), "{}", o.stderr);
    s.assert_no_leftovers();
    assert_eq!(s.state(&vol), "available");
    let grants = s.ok(&[
        "kms",
        "list-grants",
        "--key-id",
        &key,
        "--query",
        "length(Grants)",
    ]);
    assert_eq!(grants, "0", "no grant outlives a failed attach");
}

#[test]
fn a_snapshot_of_a_fuse_attached_volume_is_taken_by_its_daemon() {
    require_linux_tools!();
    let s = Sandbox::new();
    let vol = s.volume(true, 16 << 20);
    let dir = s.path("att");
    s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--fuse",
        &dir.display().to_string(),
    ]);
    let data = ebsim::crypto::random_bytes(3 << 20);
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&vol))
            .unwrap();
        f.write_all_at(&data, 1 << 20).unwrap();
        f.sync_all().unwrap();
    }
    let snap = s.ok(&[
        "ec2",
        "create-snapshot",
        "--volume-id",
        &vol,
        "--description",
        "live",
        "--query",
        "SnapshotId",
        "--output",
        "text",
    ]);
    assert!(snap.starts_with("snap-"), "{snap}");
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    let copy = s.ok(&[
        "ec2",
        "create-volume",
        "--snapshot-id",
        &snap,
        "--query",
        "VolumeId",
        "--output",
        "text",
    ]);
    let dir2 = s.path("att2");
    s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &copy,
        "--fuse",
        &dir2.display().to_string(),
    ]);
    let mut got = vec![0u8; data.len()];
    std::fs::File::open(dir2.join(&copy))
        .unwrap()
        .read_exact_at(&mut got, 1 << 20)
        .unwrap();
    assert!(got == data, "the snapshot holds what was fsynced before it");
    s.ok(&["ec2", "detach-volume", "--volume-id", &copy]);
    s.assert_no_leftovers();
}

fn wait_gone(pid: i32) {
    for _ in 0..250 {
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true);
        if gone {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("process {pid} did not die");
}

/// Issue 14 item 6: kill -9 of the attachment process under `ebsim mount` leaves
/// ext4 on a loop device over a dead FUSE file. The volume shows it, a new attach
/// is refused, and `ebsim unmount` (or detach-volume --force) cleans up the
/// mount, the loop device and the grant; the fsynced data is there afterwards.
#[test]
fn kill_9_under_ebsim_mount_shows_error_and_unmount_or_force_cleans_up() {
    require_linux_tools!();
    let s = Sandbox::new();
    let vol = s.volume(true, 64 << 20);
    let key = s.ok(&[
        "ec2",
        "describe-volumes",
        "--volume-ids",
        &vol,
        "--query",
        "Volumes[0].KmsKeyId",
        "--output",
        "text",
    ]);
    let grants = || {
        s.ok(&[
            "kms",
            "list-grants",
            "--key-id",
            &key,
            "--query",
            "length(Grants)",
        ])
    };
    let fs = s.path("fs");
    let fs_s = fs.display().to_string();
    for way in ["unmount", "force"] {
        let mkfs: &[&str] = if way == "unmount" {
            &["--mkfs", "ext4"]
        } else {
            &[]
        };
        let mut args = vec!["mount", vol.as_str(), fs_s.as_str()];
        args.extend_from_slice(mkfs);
        s.ok(&args);
        if way == "unmount" {
            std::fs::write(fs.join("kept.txt"), b"written before the crash").unwrap();
            Command::new("sync").status().unwrap();
        }
        let pid = daemon_pid(&vol);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_gone(pid);
        // Every command that reads the attachment sees it.
        let out = s.ok(&[
            "ec2",
            "describe-volumes",
            "--volume-ids",
            &vol,
            "--query",
            "Volumes[0].[State,Attachments[0].State,StateMessage]",
            "--output",
            "text",
        ]);
        assert!(out.starts_with("error\tbusy\t"), "{way}: {out}");
        assert!(
            out.contains(&format!("is gone, but a filesystem is mounted on {fs_s}")),
            "{way}: {out}"
        );
        assert_eq!(grants(), "1", "{way}: the grant stays until it is released");
        let other = s.path("other");
        let out = s.ebsim(&[
            "ec2",
            "attach-volume",
            "--volume-id",
            &vol,
            "--fuse",
            &other.display().to_string(),
        ]);
        assert_eq!(out.code, 254, "{way}: {}", out.stderr);
        assert!(
            out.stderr.contains("VolumeInUse") && out.stderr.contains("ebsim unmount"),
            "{way}: {}",
            out.stderr
        );
        let out = s.ebsim(&["ec2", "detach-volume", "--volume-id", &vol]);
        assert_eq!(out.code, 254, "{way}: without --force: {}", out.stderr);
        if way == "unmount" {
            s.ok(&["unmount", &fs_s]);
        } else {
            s.ok(&["ec2", "detach-volume", "--volume-id", &vol, "--force"]);
        }
        assert_eq!(s.state(&vol), "available", "{way}");
        assert_eq!(grants(), "0", "{way}: the grant was retired");
        s.assert_no_leftovers();
    }
    // The data fsynced before the first crash is there.
    s.ok(&["mount", &vol, &fs_s]);
    assert_eq!(
        std::fs::read(fs.join("kept.txt")).unwrap(),
        b"written before the crash"
    );
    s.ok(&["unmount", &fs_s]);
    s.assert_no_leftovers();
}

/// The attachment process of `vol` (`ebsim ec2 attach-volume … --foreground`).
fn daemon_pid(vol: &str) -> i32 {
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("attach-volume") && cmd.contains(vol) && cmd.contains("--foreground") {
            return pid;
        }
    }
    panic!("no attachment process for {vol}");
}

/// Issue 14 item 9: the FUSE file behaves like a block device towards truncation:
/// O_TRUNC and truncations to its size or beyond are ignored (so `cp`, `dd`
/// without conv=notrunc and `: >` work), a real shrink is refused.
#[test]
fn the_fuse_file_ignores_o_trunc_and_refuses_a_shrink() {
    require_linux_tools!();
    let s = Sandbox::new();
    let vol = s.volume(true, 8 << 20);
    let file = attach_fuse(&s, &vol);
    let file_s = file.display().to_string();
    let src = s.dir.path().join("src.bin");
    let data = ebsim::crypto::random_bytes(8 << 20);
    std::fs::write(&src, &data).unwrap();
    let st = Command::new("cp")
        .args([src.display().to_string(), file_s.clone()])
        .status()
        .unwrap();
    assert!(st.success(), "cp onto the device file");
    assert!(std::fs::read(&file).unwrap() == data);
    // `: >` (O_TRUNC) changes nothing.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 8 << 20);
    assert!(std::fs::read(&file).unwrap() == data);
    // dd without conv=notrunc writes the first block and keeps the rest.
    let small = s.dir.path().join("small.bin");
    std::fs::write(&small, [9u8; 4096]).unwrap();
    let st = Command::new("dd")
        .args([
            format!("if={}", small.display()),
            format!("of={file_s}"),
            "status=none".into(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let got = std::fs::read(&file).unwrap();
    assert_eq!(&got[..4096], &[9u8; 4096]);
    assert!(got[4096..] == data[4096..]);
    // Truncation to the size or beyond: ignored; a shrink: refused, nothing lost.
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(8 << 20).unwrap();
    f.set_len(16 << 20).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 8 << 20);
    let e = f.set_len(4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EPERM), "{e}");
    drop(f);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 8 << 20);
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    let log = std::fs::read_to_string(
        s.home()
            .join(format!("regions/us-east-1/attachments/{vol}.log")),
    )
    .unwrap();
    assert!(
        log.contains(&format!("{vol}: refused a truncation to 4096 bytes")),
        "{log}"
    );
    s.assert_no_leftovers();
}
