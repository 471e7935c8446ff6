//! Interrupted operations leave nothing behind (issue 14 items 4, 8, 9): Ctrl-C
//! (SIGINT) undoes a snapshot, a copy or a restore, in the attachment process
//! too; `kill -9` and crashes at every crash point (`EBSIM_FAULT`) are settled by
//! the next command; a grow the filesystem cannot hold fails instead of hanging.
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::sandbox::Sandbox;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn spawn(s: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ebsim"));
    c.args(args)
        .env("EBSIM_HOME", s.home())
        .env_remove("EBSIM_NOW")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Waits for `child`; returns its exit code (128 + signal when killed) and stderr.
fn finish(child: Child) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    let out = child.wait_with_output().unwrap();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// An encrypted volume of `mib` MiB filled with random data (through the library
/// on the sandbox's data root, so no root or FUSE is needed).
fn full_volume(s: &Sandbox, mib: u64) -> String {
    let vol = s.volume(true, mib * MIB);
    let root = ebsim::home::DataRoot::open(s.home()).unwrap();
    let clock = ebsim::clock::Clock::system(chrono::TimeDelta::zero());
    let kms = ebsim::kms::Kms::open(&root, "us-east-1", clock).unwrap();
    let ec2 = ebsim::ec2::Ec2::new(&root, kms).unwrap();
    let me = ebsim::kms::access::Caller::account_root(common::ACCOUNT);
    let a = ec2
        .attach(&me, &vol, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    let chunk = ebsim::crypto::random_bytes((4 * MIB) as usize);
    for i in 0..mib / 4 {
        a.image().write(i * 4 * MIB, &chunk, false).unwrap();
    }
    a.detach(&ec2).unwrap();
    vol
}

/// A snapshot of `vol`, by the CLI; its id.
fn snapshot_id(s: &Sandbox, vol: &str) -> String {
    s.ok(&[
        "ec2",
        "create-snapshot",
        "--volume-id",
        vol,
        "--query",
        "SnapshotId",
        "--output",
        "text",
    ])
}

/// `copy-snapshot` of `snap` in us-east-1 under `key`.
fn copy_args<'a>(snap: &'a str, key: &'a str) -> [&'a str; 9] {
    [
        "ec2",
        "copy-snapshot",
        "--source-region",
        "us-east-1",
        "--source-snapshot-id",
        snap,
        "--encrypted",
        "--kms-key-id",
        key,
    ]
}

/// A new KMS key's ARN.
fn new_key(s: &Sandbox) -> String {
    s.ok(&[
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.Arn",
        "--output",
        "text",
    ])
}

fn snapshots(s: &Sandbox) -> Vec<(String, String)> {
    let out = s.ok(&[
        "ec2",
        "describe-snapshots",
        "--query",
        "Snapshots[].[SnapshotId,State]",
        "--output",
        "text",
    ]);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().into(), w.next().unwrap().into())
        })
        .collect()
}

fn block_files(s: &Sandbox) -> usize {
    let dir = s.home().join("regions/us-east-1/snapshots/blocks");
    let mut n = 0;
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if sub.path().is_dir() {
            n += std::fs::read_dir(sub.path()).unwrap().count();
        }
    }
    n
}

/// Waits until a snapshot shows `pending` (the operation is under way).
fn wait_pending(s: &Sandbox, child: &mut Child) {
    let start = Instant::now();
    loop {
        if snapshots(s).iter().any(|(_, st)| st == "pending") {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the operation ended ({st}) before it could be interrupted");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no pending snapshot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn volume_dir_debris(s: &Sandbox) -> Vec<String> {
    std::fs::read_dir(s.home().join("regions/us-east-1/volumes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn ctrl_c_undoes_a_snapshot_and_kill_9_leaves_an_error_snapshot_and_no_blocks() {
    use nix::sys::signal::Signal;
    let s = Sandbox::new();
    let vol = full_volume(&s, 256);

    let mut c = spawn(&s, &["ec2", "create-snapshot", "--volume-id", &vol], &[]);
    wait_pending(&s, &mut c);
    signal(&c, Signal::SIGINT);
    let (code, err) = finish(c);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(
        snapshots(&s),
        vec![],
        "nothing is kept of a cancelled snapshot"
    );
    assert_eq!(block_files(&s), 0, "its blocks were removed");

    let mut c = spawn(&s, &["ec2", "create-snapshot", "--volume-id", &vol], &[]);
    wait_pending(&s, &mut c);
    signal(&c, Signal::SIGKILL);
    finish(c);
    // The next command settles it: error, with why; blocks collected.
    let out = s.ok(&[
        "ec2",
        "describe-snapshots",
        "--query",
        "Snapshots[0].[State,StateMessage]",
        "--output",
        "text",
    ]);
    assert!(
        out.starts_with("error") && out.contains("was interrupted"),
        "{out}"
    );
    assert_eq!(block_files(&s), 0);
    let id = snapshots(&s)[0].0.clone();
    // An error snapshot can be deleted, and cannot be restored.
    let out = s.ebsim(&["ec2", "create-volume", "--snapshot-id", &id]);
    assert_eq!(out.code, 254);
    assert!(out.stderr.contains("IncorrectState"), "{}", out.stderr);
    s.ok(&["ec2", "delete-snapshot", "--snapshot-id", &id]);
    assert!(snapshots(&s).is_empty());
}

#[test]
fn ctrl_c_on_a_copy_and_on_a_restore_leaves_nothing() {
    use nix::sys::signal::Signal;
    let s = Sandbox::new();
    let vol = full_volume(&s, 192);
    let snap = snapshot_id(&s, &vol);
    let blocks = block_files(&s);
    let key = new_key(&s);
    let mut c = spawn(&s, &copy_args(&snap, &key), &[]);
    wait_pending(&s, &mut c);
    signal(&c, Signal::SIGINT);
    let (code, err) = finish(c);
    assert_eq!(code, 130, "{err}");
    assert_eq!(snapshots(&s), vec![(snap.clone(), "completed".into())]);
    assert_eq!(block_files(&s), blocks, "only the source's blocks remain");

    // A restore under another key (block by block): interrupted while its
    // temporary image is being filled.
    for sig in [Signal::SIGINT, Signal::SIGKILL] {
        let mut c = spawn(
            &s,
            &[
                "ec2",
                "create-volume",
                "--snapshot-id",
                &snap,
                "--encrypted",
                "--kms-key-id",
                &key,
            ],
            &[],
        );
        let start = Instant::now();
        while !volume_dir_debris(&s)
            .iter()
            .any(|n| n.ends_with(".img.creating"))
        {
            assert!(c.try_wait().unwrap().is_none(), "the restore ended early");
            assert!(start.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        signal(&c, sig);
        let (code, err) = finish(c);
        assert_eq!(code, if sig == Signal::SIGINT { 130 } else { 137 }, "{err}");
        s.ok(&["ec2", "describe-volumes"]);
        assert_eq!(volume_dir_debris(&s), Vec::<String>::new(), "{sig}");
        let vols = s.ok(&["ec2", "describe-volumes", "--query", "length(Volumes)"]);
        assert_eq!(vols, "1", "no volume was recorded ({sig})");
    }
}

#[test]
fn ctrl_c_on_a_snapshot_of_an_attached_volume_cancels_it_in_the_attachment_process() {
    use nix::sys::signal::Signal;
    let s = Sandbox::new();
    let vol = full_volume(&s, 256);
    let sock = s.path("run").join("v.sock");
    let nbd = format!("unix:{}", sock.display());
    s.ok(&["ec2", "attach-volume", "--volume-id", &vol, "--nbd", &nbd]);
    let mut c = spawn(&s, &["ec2", "create-snapshot", "--volume-id", &vol], &[]);
    wait_pending(&s, &mut c);
    signal(&c, Signal::SIGINT);
    let (code, err) = finish(c);
    assert_eq!(code, 130, "{err}");
    // The attachment process undid it before answering.
    assert_eq!(snapshots(&s), vec![]);
    assert_eq!(block_files(&s), 0);
    // And it still serves, and snapshots.
    s.ok(&["ec2", "create-snapshot", "--volume-id", &vol]);
    assert_eq!(snapshots(&s).len(), 1);
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

#[test]
fn detach_during_a_snapshot_in_the_attachment_process_cancels_it_and_detaches() {
    let s = Sandbox::new();
    let vol = full_volume(&s, 256);
    let sock = s.path("run").join("v.sock");
    let nbd = format!("unix:{}", sock.display());
    s.ok(&["ec2", "attach-volume", "--volume-id", &vol, "--nbd", &nbd]);
    let mut c = spawn(&s, &["ec2", "create-snapshot", "--volume-id", &vol], &[]);
    wait_pending(&s, &mut c);
    // The attachment process is busy with the snapshot and cannot read the
    // Detach at once: it is signalled, the snapshot stops, then it detaches.
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol, "--force"]);
    let (code, err) = finish(c);
    // Interrupted, as when its own Ctrl-C stops it.
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(snapshots(&s), vec![]);
    assert_eq!(block_files(&s), 0);
    let state = s.ok(&[
        "ec2",
        "describe-volumes",
        "--volume-ids",
        &vol,
        "--query",
        "Volumes[0].State",
    ]);
    assert_eq!(state, "\"available\"");
}

/// Runs `args` with `EBSIM_FAULT=point`; the process must die there.
fn crash_at(s: &Sandbox, point: &str, args: &[&str]) {
    let (code, err) = finish(spawn(s, args, &[("EBSIM_FAULT", point)]));
    assert_eq!(code, 137, "{point} was not reached: {err}");
}

fn size_of(s: &Sandbox, vol: &str) -> u64 {
    s.ok(&[
        "ec2",
        "describe-volumes",
        "--volume-ids",
        vol,
        "--query",
        "Volumes[0].SizeBytes",
    ])
    .parse()
    .unwrap()
}

#[test]
fn a_crash_at_every_point_is_settled_by_the_next_command() {
    let s = Sandbox::new();
    // Grow: the record follows the header, which is the truth.
    for (point, grown) in [
        ("grow:after-set-len", false),
        ("grow:after-header-a", true),
        ("modify-volume:after-header", true),
    ] {
        let vol = s.volume(true, MIB);
        crash_at(
            &s,
            point,
            &[
                "ec2",
                "modify-volume",
                "--volume-id",
                &vol,
                "--size-bytes",
                "2097152",
                "--volume-type",
                "gp2",
            ],
        );
        let want = if grown { 2 * MIB } else { MIB };
        assert_eq!(size_of(&s, &vol), want, "{point}");
        let vt = s.ok(&[
            "ec2",
            "describe-volumes",
            "--volume-ids",
            &vol,
            "--query",
            "Volumes[0].VolumeType",
            "--output",
            "text",
        ]);
        assert_eq!(vt, if grown { "gp2" } else { "gp3" }, "{point}");
        // The volume opens with that size, and grows again.
        s.ok(&[
            "ec2",
            "modify-volume",
            "--volume-id",
            &vol,
            "--size-bytes",
            "4194304",
        ]);
        assert_eq!(size_of(&s, &vol), 4 * MIB, "{point}");
    }
    // Create: nothing recorded, the temporary image removed.
    crash_at(
        &s,
        "create-volume:before-commit",
        &["ec2", "create-volume", "--size-bytes", "1048576"],
    );
    s.ok(&["ec2", "describe-volumes"]);
    assert_eq!(volume_dir_debris(&s), Vec::<String>::new());
    // Delete: before the commit the volume comes back whole; after, it is gone.
    let keep = s.volume(true, MIB);
    crash_at(
        &s,
        "delete-volume:after-rename",
        &["ec2", "delete-volume", "--volume-id", &keep],
    );
    assert_eq!(s.state(&keep), "available");
    assert!(s.image(&keep).exists());
    s.ok(&["ec2", "create-snapshot", "--volume-id", &keep]);
    let gone = s.volume(false, MIB);
    crash_at(
        &s,
        "delete-volume:after-commit",
        &["ec2", "delete-volume", "--volume-id", &gone],
    );
    let out = s.ebsim(&["ec2", "describe-volumes", "--volume-ids", &gone]);
    assert!(
        out.stderr.contains("InvalidVolume.NotFound"),
        "{}",
        out.stderr
    );
    assert_eq!(volume_dir_debris(&s), Vec::<String>::new());
    // Snapshot and copy killed after their blocks: error, blocks collected.
    let before = block_files(&s);
    let vol = full_volume(&s, 8);
    crash_at(
        &s,
        "snapshot:after-blocks",
        &["ec2", "create-snapshot", "--volume-id", &vol],
    );
    let states = snapshots(&s);
    assert_eq!(
        states.iter().filter(|(_, st)| st == "error").count(),
        1,
        "{states:?}"
    );
    assert_eq!(block_files(&s), before);
    let snap = snapshot_id(&s, &vol);
    let with_snap = block_files(&s);
    let key = new_key(&s);
    crash_at(&s, "copy:after-blocks", &copy_args(&snap, &key));
    let states = snapshots(&s);
    assert_eq!(
        states.iter().filter(|(_, st)| st == "error").count(),
        2,
        "{states:?}"
    );
    assert_eq!(block_files(&s), with_snap);
    // Nothing is left pending.
    let pending: Vec<PathBuf> = std::fs::read_dir(s.home().join("regions/us-east-1/pending"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(pending, Vec::<PathBuf>::new());
}

#[test]
fn a_grow_the_filesystem_cannot_hold_fails_and_releases_the_volume() {
    let s = Sandbox::new();
    let vol = s.volume(true, MIB);
    // 64 TiB: past ext4's largest file (16 TiB with 4 KiB blocks).
    let mut c = spawn(
        &s,
        &[
            "ec2",
            "modify-volume",
            "--volume-id",
            &vol,
            "--size",
            "65536",
        ],
        &[],
    );
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = c.kill();
            panic!("modify-volume hung (it held the volume's lock and waited for it again)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, err) = finish(c);
    if code == 0 {
        common::skip(
            "this filesystem holds a 64 TiB sparse file, so the failing grow cannot be provoked here",
        );
        return;
    }
    assert_eq!(code, 255, "{err}");
    assert!(
        err.contains(&vol) && err.contains("grow"),
        "the error names the volume: {err}"
    );
    assert_eq!(size_of(&s, &vol), MIB);
    // The volume is not held: it grows to a size that fits.
    s.ok(&[
        "ec2",
        "modify-volume",
        "--volume-id",
        &vol,
        "--size-bytes",
        "2097152",
    ]);
    assert_eq!(size_of(&s, &vol), 2 * MIB);
}
