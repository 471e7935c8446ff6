//! A damaged data root is an error that names what is damaged (exit code 253),
//! never a fresh start, and nothing is deleted or re-created over it (issue 14
//! items 1, 3 and 9): missing, empty and corrupt stores, a bad root key, damaged
//! images, and images no record names.

mod common;

use common::sandbox::Sandbox;
use std::path::{Path, PathBuf};

fn region(s: &Sandbox) -> PathBuf {
    s.home().join("regions/us-east-1")
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    out
}

/// Moves `file` (and its WAL files) away and back.
fn set_aside(file: &Path) -> impl FnOnce() {
    let aside = file.with_extension("aside");
    std::fs::rename(file, &aside).unwrap();
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(file.with_extension(ext));
    }
    let file = file.to_path_buf();
    move || std::fs::rename(aside, file).unwrap()
}

/// Every file under `dir` with its bytes (and every directory), sorted.
fn snapshot_of_files(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push((p.clone(), None));
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).ok()));
            }
        }
    }
    out.sort();
    out
}

fn assert_damaged(out: &common::sandbox::Out, file: &Path, what: &str) {
    assert_eq!(out.code, 253, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&file.display().to_string()) && out.stderr.contains(what),
        "the error names {} and says {what:?}: {}",
        file.display(),
        out.stderr
    );
    assert!(
        out.stderr.contains("docs/DATA-ROOT.md"),
        "the error points to backup and restore: {}",
        out.stderr
    );
}

#[test]
fn a_missing_or_empty_ec2_store_deletes_nothing_and_is_an_error() {
    let s = Sandbox::new();
    let vol = s.volume(true, 1 << 20);
    let db = region(&s).join("ec2.db");
    let images = files_under(&region(&s).join("volumes"));
    assert!(images.iter().any(|f| f.starts_with(&vol)), "{images:?}");

    let put_back = set_aside(&db);
    // Even a read-only command: the store is not re-created and no image goes.
    let out = s.ebsim(&["ec2", "get-ebs-encryption-by-default"]);
    assert_damaged(&out, &db, "is missing");
    let out = s.ebsim(&["ec2", "describe-volumes"]);
    assert_damaged(&out, &db, "is missing");
    assert!(!db.exists(), "no new store was created");
    assert_eq!(files_under(&region(&s).join("volumes")), images);

    // An empty file is not a new store either.
    std::fs::write(&db, b"").unwrap();
    let out = s.ebsim(&["ec2", "describe-volumes"]);
    assert_damaged(&out, &db, "is empty");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "nothing written");
    assert_eq!(files_under(&region(&s).join("volumes")), images);
    std::fs::remove_file(&db).unwrap();

    // Not SQLite: corrupt, named, 253 (was 255 without the file).
    std::fs::write(&db, vec![0x5au8; 16384]).unwrap();
    let out = s.ebsim(&["ec2", "describe-volumes"]);
    assert_damaged(&out, &db, "is corrupt");
    std::fs::remove_file(&db).unwrap();

    put_back();
    let listed = s.ok(&[
        "ec2",
        "describe-volumes",
        "--query",
        "Volumes[].VolumeId",
        "--output",
        "text",
    ]);
    assert_eq!(listed, vol, "the store put back finds the untouched volume");
}

#[test]
fn a_store_deleted_with_its_registry_is_still_refused_while_images_exist() {
    // A data root from before stores.json (or one whose registry was lost too):
    // the volume images are evidence that ec2.db existed.
    let s = Sandbox::new();
    let vol = s.volume(false, 1 << 20);
    std::fs::remove_file(s.home().join("stores.json")).unwrap();
    let db = region(&s).join("ec2.db");
    let _aside = set_aside(&db);
    let out = s.ebsim(&["ec2", "describe-volumes"]);
    assert_damaged(&out, &db, "volume image(s) exist");
    assert!(s.image(&vol).exists());
}

#[test]
fn missing_empty_or_corrupt_kms_and_iam_stores_are_errors_not_new_stores() {
    let s = Sandbox::new();
    let key = s.ok(&[
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.KeyId",
        "--output",
        "text",
    ]);
    s.ok(&["iam", "create-user", "--user-name", "alice"]);
    let kms = region(&s).join("kms.db");
    let iam = s.home().join("iam.db");

    let put_back = set_aside(&kms);
    let out = s.ebsim(&["kms", "list-keys"]);
    assert_damaged(&out, &kms, "is missing");
    assert!(!kms.exists());
    std::fs::write(&kms, b"").unwrap();
    assert_damaged(&s.ebsim(&["kms", "list-keys"]), &kms, "is empty");
    std::fs::write(&kms, vec![7u8; 9000]).unwrap();
    assert_damaged(&s.ebsim(&["kms", "list-keys"]), &kms, "is corrupt");
    std::fs::remove_file(&kms).unwrap();
    put_back();
    let keys = s.ok(&[
        "kms",
        "list-keys",
        "--query",
        "Keys[].KeyId",
        "--output",
        "text",
    ]);
    assert!(keys.contains(&key), "{keys}");

    let put_back = set_aside(&iam);
    let out = s.ebsim(&["iam", "list-users"]);
    assert_damaged(&out, &iam, "is missing");
    assert!(!iam.exists());
    std::fs::write(&iam, b"").unwrap();
    assert_damaged(&s.ebsim(&["iam", "list-users"]), &iam, "is empty");
    std::fs::remove_file(&iam).unwrap();
    put_back();
    let users = s.ok(&[
        "iam",
        "list-users",
        "--query",
        "Users[].UserName",
        "--output",
        "text",
    ]);
    assert_eq!(users, "alice");

    // A region never used before still starts fresh on an existing root.
    s.ok(&["--region", "eu-west-3", "kms", "list-keys"]);
    assert!(s.home().join("regions/eu-west-3/kms.db").exists());
}

#[test]
fn a_bad_root_key_is_253_for_attach_too() {
    let s = Sandbox::new();
    let vol = s.volume(true, 1 << 20);
    let rk = s.home().join("root.key");
    let mut bytes = std::fs::read(&rk).unwrap();
    bytes[12] ^= 0xff;
    std::fs::write(&rk, &bytes).unwrap();
    let sock = s.path("run").join("v.sock");
    let nbd = format!("unix:{}", sock.display());
    let before = snapshot_of_files(&s.home());
    let out = s.ebsim(&["ec2", "attach-volume", "--volume-id", &vol, "--nbd", &nbd]);
    assert_eq!(out.code, 253, "{}", out.stderr);
    assert!(out.stderr.contains("root.key is corrupt"), "{}", out.stderr);
    assert!(!sock.exists(), "no socket is left by a failed attach");
    // Nothing is written into the damaged root (no attachments directory, no log).
    assert_eq!(snapshot_of_files(&s.home()), before);
    let out = s.ebsim(&["ec2", "describe-volumes"]);
    assert_eq!(out.code, 253, "{}", out.stderr);
}

#[test]
fn damaged_images_are_typed_errors_and_images_without_records_are_kept() {
    let s = Sandbox::new();
    let vol = s.volume(true, 1 << 20);
    let img = s.image(&vol);
    let sock = s.path("run").join("v.sock");
    let nbd = format!("unix:{}", sock.display());

    // Truncated.
    let full = std::fs::metadata(&img).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(full - 4096).unwrap();
    let out = s.ebsim(&["ec2", "attach-volume", "--volume-id", &vol, "--nbd", &nbd]);
    assert_eq!(out.code, 253, "{}", out.stderr);
    assert!(
        out.stderr.contains("VolumeImageTruncated") && out.stderr.contains(&vol),
        "{}",
        out.stderr
    );
    assert!(!sock.exists());
    f.set_len(full).unwrap();

    // Both header copies torn.
    use std::os::unix::fs::FileExt;
    let orig = std::fs::read(&img).unwrap()[..8192].to_vec();
    f.write_all_at(&[0u8; 64], 20).unwrap();
    f.write_all_at(&[0u8; 64], 4096 + 20).unwrap();
    let out = s.ebsim(&["ec2", "create-snapshot", "--volume-id", &vol]);
    assert_eq!(out.code, 253, "{}", out.stderr);
    assert!(
        out.stderr.contains("VolumeImageCorrupt") && out.stderr.contains("no valid header"),
        "{}",
        out.stderr
    );
    f.write_all_at(&orig, 0).unwrap();

    // Missing.
    let aside = img.with_extension("aside");
    std::fs::rename(&img, &aside).unwrap();
    let out = s.ebsim(&["ec2", "create-snapshot", "--volume-id", &vol]);
    assert_eq!(out.code, 253, "{}", out.stderr);
    assert!(out.stderr.contains("VolumeImageMissing"), "{}", out.stderr);
    std::fs::rename(&aside, &img).unwrap();
    s.ok(&["ec2", "create-snapshot", "--volume-id", &vol]);

    // An image no record names (a record lost, a file copied in) is never
    // removed; cleanup lists it.
    let stray = region(&s).join("volumes/vol-0123456789abcdef0.img");
    std::fs::copy(&img, &stray).unwrap();
    s.ok(&["ec2", "describe-volumes"]);
    let out = s.ok(&["ec2", "cleanup"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["UnrecordedImages"],
        serde_json::json!([stray.display().to_string()]),
        "{out}"
    );
    assert!(stray.exists(), "an unrecorded image is kept");
}

/// Processes creating and deleting volumes at once (each opening the region,
/// which settles abandoned operations) never take a live operation for an
/// abandoned one: every call succeeds and the counts are exact.
#[test]
fn concurrent_creates_and_deletes_are_exact() {
    let s = Sandbox::new();
    s.ok(&["ec2", "describe-volumes"]);
    let home = s.home();
    let bin = env!("CARGO_BIN_EXE_ebsim");
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let home = home.clone();
            std::thread::spawn(move || {
                let run = |args: &[&str]| {
                    let o = std::process::Command::new(bin)
                        .args(args)
                        .env("EBSIM_HOME", &home)
                        .output()
                        .unwrap();
                    assert!(
                        o.status.success(),
                        "worker {w}: {args:?}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    String::from_utf8_lossy(&o.stdout).trim().to_string()
                };
                let mut kept = 0;
                for i in 0..20 {
                    let v = run(&[
                        "ec2",
                        "create-volume",
                        "--size-bytes",
                        "1048576",
                        "--query",
                        "VolumeId",
                        "--output",
                        "text",
                    ]);
                    if i % 3 == 0 {
                        run(&["ec2", "delete-volume", "--volume-id", &v]);
                    } else {
                        kept += 1;
                    }
                }
                kept
            })
        })
        .collect();
    let kept: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let n = s.ok(&["ec2", "describe-volumes", "--query", "length(Volumes)"]);
    assert_eq!(n, kept.to_string());
    let images = std::fs::read_dir(region(&s).join("volumes"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
        .count();
    assert_eq!(images, kept, "one image per recorded volume");
    let out = s.ok(&["ec2", "cleanup"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["UnrecordedImages"], serde_json::json!([]), "{out}");
    assert_eq!(v["AbandonedOperations"], serde_json::json!([]), "{out}");
}
