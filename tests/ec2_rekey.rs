//! Re-keying a volume in place (ebsim extension), and its crash safety: killed at
//! every crash point (`EBSIM_FAULT`, src/fault.rs), rerun, and the data verified
//! after each round.
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::*;
use ebsim::ec2::Ec2;
use ebsim::ec2::model::*;
use ebsim::kms::api::*;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn ec2(env: &Env) -> Ec2 {
    Ec2::new(&env.root, env.region("us-east-1")).unwrap()
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

fn key_of(ec2: &Ec2, vol: &str) -> String {
    ec2.describe_volumes(
        &ebsim::kms::access::Caller::account_root(ACCOUNT),
        DescribeVolumesRequest {
            volume_ids: vec![vol.into()],
            ..Default::default()
        },
    )
    .unwrap()
    .volumes[0]
        .kms_key_id
        .clone()
        .unwrap()
}

#[test]
fn rekey_moves_a_volume_to_a_new_key_and_data_key() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let a = env.create_key();
    let b = env.create_key();
    let vol = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                size_bytes: Some(4 * MIB),
                encrypted: Some(true),
                kms_key_id: Some(a.arn.clone()),
                ..Default::default()
            },
        )
        .unwrap()
        .volume_id;
    let data = ebsim::crypto::random_bytes(MIB as usize);
    let att = ec2
        .attach(&env.me, &vol, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    att.image().write(MIB, &data, true).unwrap();
    let e = ec2
        .rekey_volume(&env.me, &vol, &b.arn, &|_, _| {})
        .unwrap_err();
    assert_eq!(e.code(), "VolumeInUse");
    att.detach(&ec2).unwrap();
    let snap = ec2
        .create_snapshot(&env.me, &vol, "before", vec![])
        .unwrap();
    let before_raw = ebsim::ec2::data_area(&ec2.image_path(&vol)).unwrap();

    let seen = std::cell::Cell::new(0u64);
    let v = ec2
        .rekey_volume(&env.me, &vol, &b.key_id, &|done, _| seen.set(done))
        .unwrap();
    assert_eq!(v.kms_key_id.as_deref(), Some(b.arn.as_str()));
    assert_eq!(seen.get(), 4 * MIB / 4096, "progress reaches the end");
    let after_raw = ebsim::ec2::data_area(&ec2.image_path(&vol)).unwrap();
    assert!(
        after_raw[MIB as usize..2 * MIB as usize] != before_raw[MIB as usize..2 * MIB as usize]
    );
    assert!(
        after_raw[..MIB as usize].iter().all(|&x| x == 0),
        "holes stay holes"
    );
    // Key A can go: the volume is under B now.
    env.kms
        .disable_key(
            &env.me,
            KeyIdRequest {
                key_id: a.key_id.clone(),
            },
        )
        .unwrap();
    assert_eq!(
        &read_all(&ec2, &env, &vol)[MIB as usize..2 * MIB as usize],
        &data[..]
    );
    // A new data key: the next snapshot is full, not incremental to the old one.
    let s2 = ec2.create_snapshot(&env.me, &vol, "after", vec![]).unwrap();
    assert_ne!(s2.data_encryption_key_id, snap.data_encryption_key_id);
    assert!(
        ec2.list_changed_blocks(&env.me, &snap.snapshot_id, &s2.snapshot_id)
            .is_err()
    );

    // EBS's rule: an unencrypted volume is not encrypted in place.
    let plain = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                size_bytes: Some(MIB),
                ..Default::default()
            },
        )
        .unwrap();
    let e = ec2
        .rekey_volume(&env.me, &plain.volume_id, &b.arn, &|_, _| {})
        .unwrap_err();
    assert_eq!(e.code(), "IncorrectState");
}

#[test]
fn a_rekey_killed_at_every_crash_point_loses_nothing_and_a_rerun_completes_it() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let keys = [env.create_key(), env.create_key()];
    let vol = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                size_bytes: Some(4 * MIB),
                encrypted: Some(true),
                kms_key_id: Some(keys[0].arn.clone()),
                ..Default::default()
            },
        )
        .unwrap()
        .volume_id;
    let mut data = ebsim::crypto::random_bytes((4 * MIB) as usize);
    data[(2 * MIB) as usize..(2 * MIB + 256 * 1024) as usize].fill(0); // a hole in the middle
    {
        let a = ec2
            .attach(&env.me, &vol, "i-0123456789abcdef0", "/dev/sdf")
            .unwrap();
        a.image()
            .write(0, &data[..(2 * MIB) as usize], false)
            .unwrap();
        a.image()
            .write(
                2 * MIB + 256 * 1024,
                &data[(2 * MIB + 256 * 1024) as usize..],
                true,
            )
            .unwrap();
        a.detach(&ec2).unwrap();
    }
    // `fault`: a crash point (src/fault.rs) where the process kills itself.
    let rekey = |to: &str, fault: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ebsim"));
        if let Some(f) = fault {
            c.env("EBSIM_FAULT", f);
        }
        c.args([
            "ec2",
            "rekey-volume",
            "--volume-id",
            &vol,
            "--kms-key-id",
            to,
        ])
        .env("EBSIM_HOME", env.root.path())
        .env("EBSIM_REKEY_CHUNK_UNITS", "16")
        .env_remove("EBSIM_NOW")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    // 4 MiB in 16-unit (64 KiB) chunks: 60 chunks with data around one hole.
    let kills = [
        ("rekey:started", 1, true),
        ("rekey:after-journal", 1, true),
        ("rekey:after-data", 1, true),
        ("rekey:after-boundary", 1, true),
        ("rekey:after-journal", 9, true),
        ("rekey:after-data", 31, true),
        ("rekey:after-boundary", 33, true),
        ("rekey:after-journal", 60, true),
        ("rekey:before-final-header", 1, true),
        ("rekey:after-final-header", 1, false),
    ];
    for (round, (point, nth, mid_way)) in kills.into_iter().enumerate() {
        let target = &keys[(round + 1) % 2];
        let fault = format!("{point}@{nth}");
        let status = rekey(&target.arn, Some(&fault)).wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{fault}: the run was not killed at its crash point ({status})"
        );
        let header = ebsim::volume::image::read_copies(&ec2.image_path(&vol)).unwrap()[0]
            .clone()
            .unwrap()
            .header;
        assert_eq!(header.rekey.is_some(), mid_way, "{fault}");
        if let Some(r) = &header.rekey {
            assert_eq!(r.kms_key_arn, target.arn);
            // Half-way, the volume cannot be attached, and says why.
            let e = ec2
                .attach(&env.me, &vol, "i-0123456789abcdef0", "/dev/sdf")
                .unwrap_err();
            assert_eq!(e.code(), "IncorrectState", "{fault}");
            assert!(e.message().contains("being re-keyed"), "{e}");
        }
        // The rerun finishes it (after the final header: re-keys once more).
        let out = rekey(&target.arn, None).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{fault}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(key_of(&ec2, &vol), target.arn, "{fault}");
        assert!(read_all(&ec2, &env, &vol) == data, "{fault}: data changed");
        assert!(
            !ec2.image_path(&vol).with_extension("rekey").exists(),
            "{fault}: the journal is removed"
        );
    }
}
