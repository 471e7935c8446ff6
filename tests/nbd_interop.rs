//! `ebsim ec2 attach-volume --nbd` checked with independent NBD clients: nbdinfo
//! (size, flags, --map), qemu-io patterns, qemu-img convert and compare, nbdcopy
//! both ways over four connections, fio's nbd engine with crc32c verification;
//! plus the attach errors, detach while clients are connected, FUSE and NBD at
//! once, and kill -9 after a flush. scripts/test.sh installs the clients
//! (libnbd-bin, qemu-utils, fio); a test says why when it skips
//! and is counted as skipped (common::skip).
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

#[macro_use]
mod common;

use common::sandbox::Sandbox;
use std::path::Path;
use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

/// Attaches `vol` with `--nbd unix:<sandbox>/<vol>.sock`; returns the NBD URI.
fn attach_nbd(s: &Sandbox, vol: &str) -> String {
    attach_nbd_pid(s, vol).0
}

/// [`attach_nbd`], and the attachment process's id.
fn attach_nbd_pid(s: &Sandbox, vol: &str) -> (String, i32) {
    let sock = s.path("sock").join(format!("{vol}.sock"));
    let out = s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        vol,
        "--nbd",
        &format!("unix:{}", sock.display()),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["State"], "attached");
    let uri = v["NbdUri"].as_str().unwrap().to_string();
    assert_eq!(uri, format!("nbd+unix:///{vol}?socket={}", sock.display()));
    assert_eq!(v["Device"], uri.as_str());
    (uri, v["ProcessId"].as_i64().unwrap() as i32)
}

fn random_file(path: &Path, bytes: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut data = vec![0u8; bytes];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    std::fs::write(path, data).unwrap();
}

#[test]
fn nbdinfo_sees_the_size_the_flags_and_the_real_allocation() {
    require!("nbdinfo", "qemu-io");
    let s = Sandbox::new();
    let vol = s.volume(true, 64 << 20);
    let uri = attach_nbd(&s, &vol);
    assert_eq!(run("nbdinfo", &["--size", &uri]).trim(), "67108864");
    for can in [
        "flush",
        "fua",
        "trim",
        "zero",
        "fast-zero",
        "multi-conn",
        "cache",
        "df",
        "structured-reply",
        "write",
    ] {
        run("nbdinfo", &["--can", can, &uri]);
    }
    let list = run("nbdinfo", &["--list", &uri]);
    assert!(list.contains(&vol) && list.contains("encrypted"), "{list}");
    // Write 64 KiB at 1 MiB with qemu-io; the map shows exactly that as data.
    run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5c 1M 64k", &uri],
    );
    let map: serde_json::Value =
        serde_json::from_str(&run("nbdinfo", &["--map", "--json", &uri])).unwrap();
    let extents: Vec<(u64, u64, u64)> = map
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["type"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        extents,
        vec![
            (0, 1 << 20, 3),
            (1 << 20, 64 << 10, 0),
            ((1 << 20) + (64 << 10), (63 << 20) - (64 << 10), 3)
        ]
    );
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert_eq!(s.state(&vol), "available");
}

#[test]
fn qemu_io_patterns_and_qemu_img_convert_and_compare() {
    require!("qemu-io", "qemu-img");
    let s = Sandbox::new();
    let vol = s.volume(true, 32 << 20);
    let uri = attach_nbd(&s, &vol);
    // Patterns at aligned and unaligned places, zeroes, discard, each read back.
    let out = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xa1 0 4k",
            "-c",
            "write -P 0xb2 1000 3000",
            "-c",
            "write -P 0xc3 5M 2M",
            "-c",
            "write -z 5M 4k",
            "-c",
            "discard 6M 64k",
            "-c",
            "flush",
            "-c",
            "read -P 0xa1 0 1000",
            "-c",
            "read -P 0xb2 1000 3000",
            "-c",
            "read -P 0xa1 4000 96",
            "-c",
            "read -P 0 5M 4k",
            "-c",
            "read -P 0xc3 5124k 1020k",
            "-c",
            "read -P 0 6M 64k",
            "-c",
            "read -P 0xc3 6208k 960k",
            &uri,
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    // qemu-img convert a random image in, then compare (block status and zero
    // detection on both sides).
    let src = s.path("img").join("src.raw");
    random_file(&src, 32 << 20, 1);
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ],
    );
    let cmp = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ],
    );
    assert!(cmp.contains("identical"), "{cmp}");
    // And out again, into a qcow2 file that compares equal too.
    let back = s.path("img").join("back.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &uri,
            back.to_str().unwrap(),
        ],
    );
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            src.to_str().unwrap(),
            back.to_str().unwrap(),
        ],
    );
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    // The image holds ciphertext only.
    let raw = std::fs::read(s.image(&vol)).unwrap();
    let plain = std::fs::read(&src).unwrap();
    assert!(!raw.windows(64).any(|w| w == &plain[4096..4160]));
}

#[test]
fn nbdcopy_both_ways_over_four_connections_encrypted_and_not() {
    require!("nbdcopy");
    for encrypted in [true, false] {
        let s = Sandbox::new();
        let vol = s.volume(encrypted, 48 << 20);
        let uri = attach_nbd(&s, &vol);
        let src = s.path("img").join("src.raw");
        // Random data with a hole in the middle (nbdcopy zeroes it on the target).
        random_file(&src, 48 << 20, 2);
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
            f.write_all_at(&vec![0u8; 8 << 20], 16 << 20).unwrap();
        }
        run(
            "nbdcopy",
            &["-C", "4", "--flush", src.to_str().unwrap(), &uri],
        );
        let out = s.path("img").join("out.raw");
        run("nbdcopy", &["-C", "4", &uri, out.to_str().unwrap()]);
        assert!(
            std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap(),
            "nbdcopy round trip differs (encrypted: {encrypted})"
        );
        s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    }
}

#[test]
fn fio_nbd_engine_with_crc32c_verify() {
    require!("fio");
    let s = Sandbox::new();
    let vol = s.volume(true, 64 << 20);
    let uri = attach_nbd(&s, &vol);
    let o = Command::new("fio")
        .args([
            "--name=nbdverify",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randwrite",
            "--bsrange=4k-256k",
            "--size=12M",
            "--offset_increment=16M",
            "--numjobs=4",
            "--iodepth=16",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
        ])
        .current_dir(s.path(""))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "fio failed:\n{text}");
    assert!(
        text.contains("err= 0") && !text.contains("verify: bad"),
        "{text}"
    );
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

#[test]
fn attach_errors_leave_nothing_behind_and_tcp_is_loopback_only() {
    require!("nbdinfo");
    let s = Sandbox::new();
    let vol = s.volume(true, 8 << 20);
    // A non-loopback address is refused unless asked for.
    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--nbd",
        "tcp:0.0.0.0:0",
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("--nbd-allow-remote"), "{}", o.stderr);
    // A path that is a regular file is not replaced.
    let file = s.path("x").join("file");
    std::fs::write(&file, b"keep").unwrap();
    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--nbd",
        &format!("unix:{}", file.display()),
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("not a socket"), "{}", o.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    // Neither a bad spec nor no front end at all.
    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--nbd",
        "ftp:x",
    ]);
    assert!(
        o.stderr.contains("unix:PATH or tcp:HOST:PORT"),
        "{}",
        o.stderr
    );
    let o = s.ebsim(&["ec2", "attach-volume", "--volume-id", &vol]);
    assert!(o.stderr.contains("--nbd"), "{}", o.stderr);
    assert_eq!(s.state(&vol), "available");
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
    let grants = s.ok(&[
        "kms",
        "list-grants",
        "--key-id",
        &key,
        "--query",
        "length(Grants)",
    ]);
    assert_eq!(grants, "0");
    // TCP without TLS must be asked for: refused with a clear error, nothing attached.
    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--nbd",
        "tcp:127.0.0.1:0",
    ]);
    assert_eq!(o.code, 254, "{}", o.stderr);
    assert!(
        o.stderr.contains("InvalidParameterCombination")
            && o.stderr.contains("needs TLS")
            && o.stderr.contains("--nbd-no-tls"),
        "{}",
        o.stderr
    );
    assert_eq!(s.state(&vol), "available");
    // Loopback TCP with port 0, explicitly without TLS: the URI names the port picked.
    let out = s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--nbd",
        "tcp:127.0.0.1:0",
        "--nbd-no-tls",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let uri = v["NbdUri"].as_str().unwrap();
    assert!(
        uri.starts_with("nbd://127.0.0.1:") && !uri.contains(":0/"),
        "{uri}"
    );
    assert_eq!(run("nbdinfo", &["--size", uri]).trim(), "8388608");
    // Attached already: a second attach is refused.
    let o = s.ebsim(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--nbd",
        "tcp:127.0.0.1:0",
        "--nbd-no-tls",
    ]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("VolumeInUse") || o.stderr.contains("IncorrectState"),
        "{}",
        o.stderr
    );
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

#[test]
fn detach_refuses_while_a_client_is_connected_unless_forced() {
    require!("qemu-io");
    let s = Sandbox::new();
    let vol = s.volume(true, 8 << 20);
    let uri = attach_nbd(&s, &vol);
    let sock = uri.split("socket=").nth(1).unwrap().to_string();
    // A client that negotiated and stays connected.
    let mut held = common::nbd_client::Client::connect(Path::new(&sock));
    assert_eq!(held.write(0, b"held", 0).error, 0);
    let o = s.ebsim(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("VolumeInUse") && o.stderr.contains("1 NBD client connection"),
        "{}",
        o.stderr
    );
    assert_eq!(s.state(&vol), "in-use");
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol, "--force"]);
    assert!(held.closed());
    assert_eq!(s.state(&vol), "available");
    assert!(!Path::new(&sock).exists(), "the socket file is removed");
    // The write before the forced detach is in the volume.
    let uri = attach_nbd(&s, &vol);
    run("qemu-io", &["-f", "raw", "-c", "read -P 0x68 0 1", &uri]);
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

#[test]
fn kill_9_after_flush_keeps_the_data_and_the_volume_reattaches() {
    require!("qemu-io");
    let s = Sandbox::new();
    let vol = s.volume(true, 16 << 20);
    let (uri, pid) = attach_nbd_pid(&s, &vol);
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x77 2M 1M",
            "-c",
            "flush",
            &uri,
        ],
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The stale attachment is repaired on the next look; the socket is reusable.
    assert_eq!(s.state(&vol), "available");
    let uri2 = attach_nbd(&s, &vol);
    assert_eq!(uri, uri2);
    run("qemu-io", &["-f", "raw", "-c", "read -P 0x77 2M 1M", &uri2]);
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
}

#[test]
fn fuse_and_nbd_at_once_serve_the_same_bytes() {
    require!("qemu-io");
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        common::skip("needs root and /dev/fuse (CI has both)");
        return;
    }
    let s = Sandbox::new();
    let vol = s.volume(true, 16 << 20);
    let dir = s.path("att");
    let sock = s.path("sock").join("v.sock");
    let out = s.ok(&[
        "ec2",
        "attach-volume",
        "--volume-id",
        &vol,
        "--fuse",
        &dir.display().to_string(),
        "--nbd",
        &format!("unix:{}", sock.display()),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let uri = v["NbdUri"].as_str().unwrap();
    assert_eq!(v["Device"], dir.join(&vol).display().to_string());
    run("qemu-io", &["-f", "raw", "-c", "write -P 0x3e 1M 8k", uri]);
    let file = std::fs::read(dir.join(&vol)).unwrap();
    assert!(file[1 << 20..(1 << 20) + 8192].iter().all(|&b| b == 0x3e));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&vol))
            .unwrap();
        f.write_all_at(&[0x4fu8; 4096], 4 << 20).unwrap();
        f.sync_all().unwrap();
    }
    run("qemu-io", &["-f", "raw", "-c", "read -P 0x4f 4M 4k", uri]);
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert_eq!(s.state(&vol), "available");
}
