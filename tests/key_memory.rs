//! Issue 14 item 7: every copy of a volume's XTS key in a running attachment
//! process sits in locked memory. The test attaches an encrypted volume through the
//! CLI (NBD always; FUSE too when root with /dev/fuse), drives reads and writes of
//! every size class through it so every thread that encrypts runs (inline on the
//! NBD workers, the blocking pool, rayon for large requests, the FUSE threads), then
//! obtains the data key the way a KMS principal can (Decrypt of the header's wrapped
//! key with the volume's context) and reads the process's memory through
//! /proc/PID/smaps and /proc/PID/mem (`ebsim::crypto::memscan`). Any copy of the
//! 64-byte key, of either 32-byte half (an AES-256 schedule starts with its key
//! verbatim) or of any 16-byte quarter in a mapping without the `lo` (mlock'ed) flag
//! fails the test with its address and mapping. The scan must also find the locked
//! copies (the key page and the schedules), so it is known to be able to see them.
//! After detach the process is gone. ebsim marks itself non-dumpable, so reading its
//! memory takes CAP_SYS_PTRACE (root, as in CI); without it the test says SKIP.
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::nbd_client::Client;
use common::sandbox::Sandbox;
use ebsim::crypto::memscan;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The volume's plaintext XTS key, from the KMS of the sandbox's data root.
fn data_key(s: &Sandbox, vol: &str) -> zeroize::Zeroizing<Vec<u8>> {
    use ebsim::kms::api::{Blob, DecryptRequest};
    let root = ebsim::home::DataRoot::open(s.home()).unwrap();
    let kms = ebsim::kms::Kms::open(
        &root,
        "us-east-1",
        ebsim::clock::Clock::system(chrono::TimeDelta::zero()),
    )
    .unwrap();
    let header = ebsim::volume::image::read_copies(&s.image(vol)).unwrap()[0]
        .clone()
        .unwrap()
        .header;
    let caller = ebsim::kms::access::Caller::account_root(kms.account_id()).via("ec2", "us-east-1");
    let out = kms
        .decrypt(
            &caller,
            DecryptRequest {
                ciphertext_blob: Blob::new(header.wrapped_key.clone()),
                encryption_context: [("aws:ebs:id".to_string(), vol.to_string())].into(),
                key_id: Some(header.kms_key_arn.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.plaintext.as_slice().len(), 64);
    zeroize::Zeroizing::new(out.plaintext.as_slice().to_vec())
}

/// The needles: the whole key, its halves, its quarters.
fn needles(key: &[u8]) -> Vec<(&'static str, &[u8])> {
    vec![
        ("whole key K1||K2", key),
        ("K1 (data key half)", &key[..32]),
        ("K2 (tweak key half)", &key[32..]),
        ("K1[0..16]", &key[..16]),
        ("K1[16..32]", &key[16..32]),
        ("K2[0..16]", &key[32..48]),
        ("K2[16..32]", &key[48..]),
    ]
}

/// Scans `pid`; None (after saying SKIP) when its memory cannot be read.
fn scan(pid: u32, key: &[u8]) -> Option<memscan::Report> {
    match memscan::scan(pid, &needles(key)) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!(
                "SKIP: cannot read /proc/{pid}/mem ({e}); ebsim makes itself non-dumpable, \
                 so reading its memory takes CAP_SYS_PTRACE (root, as in CI)"
            );
            None
        }
        Err(e) => panic!("cannot scan process {pid}: {e}"),
    }
}

/// Fails listing every copy outside locked memory; checks that the locked copies
/// were seen.
fn assert_only_locked_copies(r: &memscan::Report, what: &str) {
    let all: Vec<String> = r.hits.iter().map(|h| format!("  {h}")).collect();
    eprintln!(
        "{what}: {} mappings, {} MiB read, {} copies:\n{}",
        r.mappings.len(),
        r.bytes_read >> 20,
        r.hits.len(),
        all.join("\n")
    );
    for (m, e) in &r.unreadable {
        eprintln!(
            "  unreadable: {:x}-{:x} {} {}: {e}",
            m.start, m.end, m.perms, m.name
        );
    }
    let unlocked = r.unlocked();
    assert!(
        unlocked.is_empty(),
        "{what}: {} copies of key material in memory that is not locked:\n{}",
        unlocked.len(),
        unlocked
            .iter()
            .map(|h| format!("  {h}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The key page (SecretBytes) holds the whole key; the schedules hold each half.
    for must in [
        "whole key K1||K2",
        "K1 (data key half)",
        "K2 (tweak key half)",
    ] {
        assert!(
            r.hits.iter().any(|h| h.needle == must && h.locked),
            "{what}: the scan did not find {must} in locked memory, so it cannot be \
             trusted to find it anywhere"
        );
    }
}

/// Waits until process `pid` has exited (or is a zombie, whose memory is gone).
fn assert_gone(pid: u32, key: &[u8]) {
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if stat.is_empty() || state.starts_with('Z') || state.starts_with('X') {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the attachment process {pid} is still running after detach: {stat}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        memscan::scan(pid, &needles(key)).is_err(),
        "process {pid} still has memory to scan after detach"
    );
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Reads and writes of every size class through NBD, from several connections at
/// once: 4 KiB and 64 KiB (inline on the runtime's workers), unaligned (read-modify-
/// write), 1 MiB (the blocking pool, and rayon: at least 256 KiB).
fn nbd_io(sock: &Path) {
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            scope.spawn(move || {
                let mut c = Client::connect(sock);
                let base = t * (8 << 20);
                for (i, len) in [4096usize, 65536, 1 << 20, 3000, 512 << 10]
                    .into_iter()
                    .enumerate()
                {
                    let off = base + (i as u64) * (1 << 20) + if len == 3000 { 1000 } else { 0 };
                    let data = pattern(len, (t * 7 + i as u64) as u8);
                    assert_eq!(c.write(off, &data, 0).error, 0);
                    let back = c.read(off, len as u32);
                    assert_eq!(back.error, 0);
                    assert!(back.data == data, "read back differs at {off}");
                }
                assert_eq!(c.simple(ebsim::nbd::proto::CMD_FLUSH, 0, 0, 0).error, 0);
                c.send(ebsim::nbd::proto::CMD_DISC, 0, 9, 0, 0, &[]);
            });
        }
    });
}

fn attach(s: &Sandbox, vol: &str, front: &[&str]) -> u32 {
    let mut args = vec!["ec2", "attach-volume", "--volume-id", vol];
    args.extend_from_slice(front);
    let out = s.ok(&args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["State"], "attached", "{out}");
    v["ProcessId"].as_u64().unwrap() as u32
}

#[test]
fn no_copy_of_the_xts_key_outside_locked_memory_in_an_nbd_attachment() {
    let s = Sandbox::new();
    let vol = s.volume(true, 64 << 20);
    let sock = s.path("sock").join("v.sock");
    let pid = attach(&s, &vol, &["--nbd", &format!("unix:{}", sock.display())]);
    nbd_io(&sock);
    let key = data_key(&s, &vol);
    let Some(report) = scan(pid, &key) else {
        s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
        return;
    };
    assert_only_locked_copies(&report, "NBD attachment");
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert_gone(pid, &key);
}

#[test]
fn no_copy_of_the_xts_key_outside_locked_memory_in_a_fuse_attachment() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP: FUSE needs root and /dev/fuse (CI runs as root)");
        return;
    }
    let s = Sandbox::new();
    let vol = s.volume(true, 64 << 20);
    let dir = s.path("fuse");
    let pid = attach(&s, &vol, &["--fuse", &dir.display().to_string()]);
    let file = dir.join(&vol);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let file = &file;
            scope.spawn(move || {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(file)
                    .unwrap();
                let base = t * (8 << 20);
                for (i, len) in [4096usize, 65536, 1 << 20, 3000, 512 << 10]
                    .into_iter()
                    .enumerate()
                {
                    let off = base + (i as u64) * (1 << 20) + if len == 3000 { 1000 } else { 0 };
                    let data = pattern(len, (t * 5 + i as u64) as u8);
                    f.write_all_at(&data, off).unwrap();
                    let mut back = vec![0u8; len];
                    f.read_exact_at(&mut back, off).unwrap();
                    assert!(back == data, "read back differs at {off}");
                }
                f.sync_all().unwrap();
            });
        }
    });
    let key = data_key(&s, &vol);
    let Some(report) = scan(pid, &key) else {
        s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
        return;
    };
    assert_only_locked_copies(&report, "FUSE attachment");
    s.ok(&["ec2", "detach-volume", "--volume-id", &vol]);
    assert_gone(pid, &key);
}
