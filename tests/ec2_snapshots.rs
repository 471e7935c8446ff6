//! Snapshots, volumes from snapshots, copies and cross-region copies, following
//! EBS's rules (shared/reference/kms-ebs.md §2).
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::*;
use ebsim::ec2::Ec2;
use ebsim::ec2::model::*;
use ebsim::kms::api::*;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 512 * 1024;

fn ec2(env: &Env, region: &str) -> Ec2 {
    Ec2::new(&env.root, env.region(region)).unwrap()
}

fn volume(ec2: &Ec2, env: &Env, key: Option<&str>, size: u64) -> String {
    ec2.create_volume(
        &env.me,
        CreateVolumeRequest {
            size_bytes: Some(size),
            encrypted: Some(key.is_some()),
            kms_key_id: key.map(str::to_string),
            ..Default::default()
        },
    )
    .unwrap()
    .volume_id
}

fn write(ec2: &Ec2, env: &Env, vol: &str, at: u64, data: &[u8]) {
    let a = ec2
        .attach(&env.me, vol, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    a.image().write(at, data, false).unwrap();
    a.detach(ec2).unwrap();
}

fn read_all(ec2: &Ec2, env: &Env, vol: &str) -> Vec<u8> {
    let a = ec2
        .attach(&env.me, vol, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    let mut buf = vec![0u8; a.image().size() as usize];
    a.image().read(0, &mut buf).unwrap();
    a.detach(ec2).unwrap();
    buf
}

/// A volume restored from `snapshot_id` (its own size and key).
fn restore(ec2: &Ec2, env: &Env, snapshot_id: &str) -> String {
    ec2.create_volume(
        &env.me,
        CreateVolumeRequest {
            snapshot_id: Some(snapshot_id.to_string()),
            ..Default::default()
        },
    )
    .unwrap()
    .volume_id
}

fn snapshot(ec2: &Ec2, env: &Env, vol: &str) -> Snapshot {
    ec2.create_snapshot(&env.me, vol, "test", vec![]).unwrap()
}

fn block_files(env: &Env) -> usize {
    fn count(d: &std::path::Path) -> usize {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            usize::from(e.path().extension().is_some_and(|x| x == "blk"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&env.root.path().join("regions"))
}

#[test]
fn snapshots_are_incremental_through_changed_block_tracking() {
    let env = Env::new();
    let ec2 = ec2(&env, "us-east-1");
    let key = env.create_key();
    let vol = volume(&ec2, &env, Some(&key.arn), 8 * MIB);
    write(&ec2, &env, &vol, 0, &vec![1u8; (2 * BLOCK) as usize]);
    write(&ec2, &env, &vol, 5 * BLOCK + 100, b"five");
    let s1 = snapshot(&ec2, &env, &vol);
    assert_eq!(
        s1.block_count, 3,
        "the first snapshot is full: every block with data"
    );
    assert_eq!(block_files(&env), 3);
    assert!(s1.encrypted && s1.kms_key_id.as_deref() == Some(key.arn.as_str()));
    assert_eq!(
        (s1.state.as_str(), s1.progress.as_str()),
        ("completed", "100%")
    );

    write(&ec2, &env, &vol, 5 * BLOCK, b"FIVE");
    write(&ec2, &env, &vol, 9 * BLOCK, b"nine");
    let s2 = snapshot(&ec2, &env, &vol);
    assert_eq!(s2.block_count, 4);
    assert_eq!(
        block_files(&env),
        5,
        "only the two changed blocks were stored"
    );
    let changed = ec2
        .list_changed_blocks(&env.me, &s1.snapshot_id, &s2.snapshot_id)
        .unwrap();
    let idx: Vec<u64> = changed
        .changed_blocks
        .iter()
        .map(|c| c.block_index)
        .collect();
    assert_eq!(idx, vec![5, 9]);
    assert_eq!(changed.block_size, BLOCK);
    assert!(changed.changed_blocks[1].first_block_token.is_none());
    // No change: the next snapshot stores nothing new.
    let s3 = snapshot(&ec2, &env, &vol);
    assert_eq!(block_files(&env), 5);
    assert!(
        ec2.list_changed_blocks(&env.me, &s2.snapshot_id, &s3.snapshot_id)
            .unwrap()
            .changed_blocks
            .is_empty()
    );

    // Deleting a snapshot frees only blocks no other snapshot uses.
    ec2.delete_snapshot(&env.me, &s1.snapshot_id).unwrap();
    assert_eq!(
        block_files(&env),
        4,
        "block 5's first version was s1's alone"
    );
    let e = ec2.delete_snapshot(&env.me, &s1.snapshot_id).unwrap_err();
    assert_eq!(e.code(), "InvalidSnapshot.NotFound");
    let restored = restore(&ec2, &env, &s3.snapshot_id);
    assert_eq!(read_all(&ec2, &env, &restored), read_all(&ec2, &env, &vol));
}

#[test]
fn snapshot_of_a_volume_attached_in_this_process_holds_writes_for_the_cut() {
    let env = Env::new();
    let ec2 = ec2(&env, "us-east-1");
    let key = env.create_key();
    let vol = volume(&ec2, &env, Some(&key.arn), 4 * MIB);
    let a = ec2
        .attach(&env.me, &vol, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    a.image().write(0, b"before", false).unwrap();
    let e = ec2.create_snapshot(&env.me, &vol, "", vec![]).unwrap_err();
    assert_eq!(e.code(), "IncorrectState");
    let s = ec2.create_snapshot_of(&a, "live", vec![], None).unwrap();
    a.image().write(0, b"after!", false).unwrap();
    a.detach(&ec2).unwrap();
    let v2 = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                snapshot_id: Some(s.snapshot_id),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(&read_all(&ec2, &env, &v2.volume_id)[..6], b"before");
}

#[test]
fn volumes_from_snapshots_share_the_data_key_only_under_the_same_kms_key() {
    let env = Env::new();
    let ec2 = ec2(&env, "us-east-1");
    let a = env.create_key();
    let b = env.create_key();
    let vol = volume(&ec2, &env, Some(&a.arn), 4 * MIB);
    let data: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    write(&ec2, &env, &vol, MIB, &data);
    let s = snapshot(&ec2, &env, &vol);

    // Same key: same data key, blocks copied as ciphertext (identical stored bytes).
    let same = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                snapshot_id: Some(s.snapshot_id.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(same.encrypted);
    assert_eq!(same.kms_key_id.as_deref(), Some(a.arn.as_str()));
    assert_eq!(same.snapshot_id, s.snapshot_id);
    let raw_src = ebsim::ec2::data_area(&ec2.image_path(&vol)).unwrap();
    let raw_same = ebsim::ec2::data_area(&ec2.image_path(&same.volume_id)).unwrap();
    assert!(
        raw_src == raw_same,
        "same data key: the ciphertext is the same"
    );
    assert_eq!(
        read_all(&ec2, &env, &same.volume_id)[MIB as usize..2 * MIB as usize],
        data[..]
    );

    // Another key: a new data key, every block re-encrypted.
    let other = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                snapshot_id: Some(s.snapshot_id.clone()),
                encrypted: Some(true),
                kms_key_id: Some(b.key_id.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(other.kms_key_id.as_deref(), Some(b.arn.as_str()));
    let raw_other = ebsim::ec2::data_area(&ec2.image_path(&other.volume_id)).unwrap();
    assert!(raw_other[MIB as usize..2 * MIB as usize] != raw_src[MIB as usize..2 * MIB as usize]);
    assert_eq!(
        read_all(&ec2, &env, &other.volume_id)[MIB as usize..2 * MIB as usize],
        data[..]
    );
    let snaps = ec2.describe_snapshots(&env.me, &[], &[]).unwrap().snapshots;
    let dek_of_snapshot = snaps[0].data_encryption_key_id.clone().unwrap();
    let s_same = snapshot(&ec2, &env, &same.volume_id);
    let s_other = snapshot(&ec2, &env, &other.volume_id);
    assert_eq!(
        s_same.data_encryption_key_id.as_deref(),
        Some(dek_of_snapshot.as_str())
    );
    assert_ne!(
        s_other.data_encryption_key_id.as_deref(),
        Some(dek_of_snapshot.as_str())
    );

    // Encryption is never removed; a bigger volume keeps the snapshot's data.
    let kept = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                snapshot_id: Some(s.snapshot_id.clone()),
                encrypted: Some(false),
                size_bytes: Some(8 * MIB),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(kept.encrypted);
    assert_eq!(kept.size_bytes, 8 * MIB);
    let e = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                snapshot_id: Some(s.snapshot_id.clone()),
                size_bytes: Some(MIB),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");

    // An unencrypted snapshot becomes an encrypted volume on request.
    let plain = volume(&ec2, &env, None, 2 * MIB);
    write(&ec2, &env, &plain, 4096, b"plain data");
    let ps = snapshot(&ec2, &env, &plain);
    assert!(!ps.encrypted);
    let enc = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                snapshot_id: Some(ps.snapshot_id.clone()),
                encrypted: Some(true),
                kms_key_id: Some(a.key_id.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(enc.encrypted);
    assert_eq!(
        &read_all(&ec2, &env, &enc.volume_id)[4096..4106],
        b"plain data"
    );
    let raw = ebsim::ec2::data_area(&ec2.image_path(&enc.volume_id)).unwrap();
    assert!(!raw.windows(10).any(|w| w == b"plain data"));
    let e = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                snapshot_id: Some("snap-0123456789abcdef0".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "InvalidSnapshot.NotFound");
}

#[test]
fn copy_snapshot_follows_ebs_rules_and_a_cross_region_copy_is_independent() {
    let env = Env::new();
    let east = ec2(&env, "us-east-1");
    let west = ec2(&env, "us-west-2");
    let key_a = env.create_key();
    let key_b = env
        .region("us-west-2")
        .create_key(&env.me, CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    let vol = volume(&east, &env, Some(&key_a.arn), 4 * MIB);
    let data = ebsim::crypto::random_bytes(3 * MIB as usize);
    write(&east, &env, &vol, 0, &data);
    let s = snapshot(&east, &env, &vol);
    let before = block_files(&env);

    // Same region, same key: a new snapshot id, no data copied.
    let same = east
        .copy_snapshot(
            &env.me,
            "us-east-1",
            &s.snapshot_id,
            None,
            None,
            None,
            vec![],
        )
        .unwrap();
    assert_ne!(same.snapshot_id, s.snapshot_id);
    assert_eq!(same.volume_id, "vol-ffffffff");
    assert_eq!(block_files(&env), before);

    // Rules.
    let e = east
        .copy_snapshot(
            &env.me,
            "us-east-1",
            &s.snapshot_id,
            Some(false),
            None,
            None,
            vec![],
        )
        .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");
    let e = east
        .copy_snapshot(
            &env.me,
            "us-east-1",
            &s.snapshot_id,
            None,
            Some(&key_a.arn),
            None,
            vec![],
        )
        .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterCombination");
    let e = west
        .copy_snapshot(
            &env.me,
            "us-east-1",
            &s.snapshot_id,
            Some(true),
            Some(&key_a.arn),
            None,
            vec![],
        )
        .unwrap_err();
    assert_eq!(
        e.code(),
        "InvalidParameterValue",
        "a key of another region is refused"
    );

    // Cross-region under key B: a full copy re-encrypted under a new data key.
    let copy = west
        .copy_snapshot(
            &env.me,
            "us-east-1",
            &s.snapshot_id,
            Some(true),
            Some(&key_b.arn),
            None,
            vec![],
        )
        .unwrap();
    assert_eq!(copy.kms_key_id.as_deref(), Some(key_b.arn.as_str()));
    assert_ne!(copy.data_encryption_key_id, s.data_encryption_key_id);
    let east_blocks: std::collections::HashSet<_> = list_digests(&env, "us-east-1");
    let west_blocks: std::collections::HashSet<_> = list_digests(&env, "us-west-2");
    assert!(!west_blocks.is_empty());
    assert!(
        east_blocks.is_disjoint(&west_blocks),
        "the copy shares no ciphertext block"
    );
    let there = west
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                snapshot_id: Some(copy.snapshot_id.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        &read_all(&west, &env, &there.volume_id)[..data.len()],
        &data[..]
    );

    // Key A disabled afterwards: us-west-2 is unaffected; us-east-1 copies stop with
    // the KMS error and leave nothing half-made.
    env.kms
        .disable_key(
            &env.me,
            KeyIdRequest {
                key_id: key_a.key_id.clone(),
            },
        )
        .unwrap();
    assert_eq!(
        &read_all(&west, &env, &there.volume_id)[..data.len()],
        &data[..]
    );
    let snaps_before = west
        .describe_snapshots(&env.me, &[], &[])
        .unwrap()
        .snapshots
        .len();
    let files_before = block_files(&env);
    let e = west
        .copy_snapshot(
            &env.me,
            "us-east-1",
            &s.snapshot_id,
            Some(true),
            Some(&key_b.arn),
            None,
            vec![],
        )
        .unwrap_err();
    assert_eq!(e.code(), "DisabledException");
    assert_eq!(
        west.describe_snapshots(&env.me, &[], &[])
            .unwrap()
            .snapshots
            .len(),
        snaps_before
    );
    assert_eq!(block_files(&env), files_before);

    // Without a key, a cross-region copy uses the destination's default key.
    env.kms
        .enable_key(
            &env.me,
            KeyIdRequest {
                key_id: key_a.key_id.clone(),
            },
        )
        .unwrap();
    let dflt = west
        .copy_snapshot(
            &env.me,
            "us-east-1",
            &s.snapshot_id,
            None,
            None,
            None,
            vec![],
        )
        .unwrap();
    let west_ebs = env
        .region("us-west-2")
        .describe_key(
            &env.me,
            DescribeKeyRequest {
                key_id: "alias/aws/ebs".into(),
                grant_tokens: vec![],
            },
        )
        .unwrap();
    assert_eq!(
        dflt.kms_key_id.as_deref(),
        Some(west_ebs.key_metadata.arn.as_str())
    );
}

fn list_digests(env: &Env, region: &str) -> std::collections::HashSet<String> {
    let dir = env
        .root
        .path()
        .join("regions")
        .join(region)
        .join("snapshots/blocks");
    let mut out = std::collections::HashSet::new();
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.insert(f.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Issue 14 item 2: a copy that fails while another copy is writing its blocks
/// must not collect them. Two volume services (as two processes would have): the
/// good copy is held half-way (its progress callback waits) while the failing
/// copy runs to its error; then the good copy finishes and is restored.
#[test]
fn a_failing_copy_never_collects_the_blocks_of_a_copy_beside_it() {
    use std::sync::{Arc, Mutex, mpsc};
    let env = Env::new();
    let plain = ec2(&env, "us-east-1");
    let key = env.create_key();
    let other_key = env.create_key();
    let vol = volume(&plain, &env, Some(&key.arn), 16 * MIB);
    let first = ebsim::crypto::random_bytes((16 * MIB) as usize);
    write(&plain, &env, &vol, 0, &first);
    let good_source = snapshot(&plain, &env, &vol);
    let first_blocks = list_digests(&env, "us-east-1");
    write(
        &plain,
        &env,
        &vol,
        0,
        &ebsim::crypto::random_bytes((16 * MIB) as usize),
    );
    let bad_source = snapshot(&plain, &env, &vol);
    let blocks_dir = env.root.path().join("regions/us-east-1/snapshots/blocks");
    // The second snapshot's own blocks: damaged once the good copy runs.
    let second_only: Vec<std::path::PathBuf> = list_digests(&env, "us-east-1")
        .difference(&first_blocks)
        .map(|f| blocks_dir.join(&f[..2]).join(f))
        .collect();
    assert_eq!(second_only.len(), 32, "16 MiB of new data is 32 blocks");

    let (mid_tx, mid_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let mid_tx = Mutex::new(Some(mid_tx));
    let mut good_service = ec2(&env, "us-east-1");
    good_service.set_progress(Arc::new(move |_what: &str, done, total| {
        if done == total / 2
            && let Some(tx) = mid_tx.lock().unwrap().take()
        {
            tx.send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
        }
    }));
    let (good_id, dest_key, me) = (
        good_source.snapshot_id.clone(),
        other_key.arn.clone(),
        env.me.clone(),
    );
    let good = std::thread::spawn(move || {
        let copy = good_service.copy_snapshot(
            &me,
            "us-east-1",
            &good_id,
            Some(true),
            Some(&dest_key),
            None,
            vec![],
        );
        (copy, good_service)
    });
    mid_rx.recv().unwrap();
    // The good copy is half-way, its blocks written but not committed.
    let written_so_far = list_digests(&env, "us-east-1").len();
    assert!(written_so_far > first_blocks.len() + second_only.len());
    // One damaged block: the failing copy writes some of the others first.
    std::fs::write(&second_only[7], b"damaged").unwrap();
    let failing_service = ec2(&env, "us-east-1");
    let e = failing_service
        .copy_snapshot(
            &env.me,
            "us-east-1",
            &bad_source.snapshot_id,
            Some(true),
            Some(&other_key.arn),
            None,
            vec![],
        )
        .unwrap_err();
    assert_eq!(e.kind(), ebsim::ErrorKind::SnapshotBlockCorrupt, "{e}");
    assert!(e.message().contains(&bad_source.snapshot_id), "{e}");
    assert!(
        list_digests(&env, "us-east-1").len() >= written_so_far,
        "the failed copy removed blocks while the good copy was running"
    );
    go_tx.send(()).unwrap();
    let (copy, good_service) = good.join().unwrap();
    let copy = copy.unwrap();
    assert_eq!(copy.state, "completed");
    // The failed copy left no snapshot record behind.
    let states: Vec<(String, String)> = good_service
        .describe_snapshots(&env.me, &[], &[])
        .unwrap()
        .snapshots
        .into_iter()
        .map(|s| (s.snapshot_id, s.state))
        .collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(states.iter().all(|(_, st)| st == "completed"), "{states:?}");
    // Restoring the good copy gives the first write back, byte for byte.
    let restored = |svc: &Ec2| read_all(svc, &env, &restore(svc, &env, &copy.snapshot_id));
    assert!(restored(&good_service) == first);
    // Once nothing runs, the failed copy's blocks are collected, and only they:
    // what stays is the two sources' blocks and the good copy's.
    let before = list_digests(&env, "us-east-1").len();
    let c = good_service.cleanup(&env.me).unwrap();
    assert_eq!(c.block_collection, "done");
    let after = list_digests(&env, "us-east-1").len();
    assert_eq!(after, 3 * 32, "{c:?}");
    assert_eq!(c.collected_blocks as usize, before - after, "{c:?}");
    assert!(restored(&good_service) == first);
}
