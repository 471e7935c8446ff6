//! Which module may reach what (docs/ARCHITECTURE.md, docs/EBS.md §3): the front
//! ends (FUSE, NBD) get an unlocked image and never a KMS or EC2 handle; the EC2
//! engine reaches mounts and sockets only through its `AttachmentHost`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code lines (comments dropped) of every file under `src/<dir>`.
fn code_of(dir: &str) -> Vec<(PathBuf, usize, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, l) in text.lines().enumerate() {
            let code = l.split("//").next().unwrap_or_default();
            if !code.trim().is_empty() {
                out.push((f.clone(), i + 1, code.to_string()));
            }
        }
    }
    out
}

fn refuse(dir: &str, forbidden: &[&str], why: &str) {
    for (f, n, line) in code_of(dir) {
        for word in forbidden {
            assert!(
                !line.contains(word),
                "{}:{n}: {word} ({why}): {line}",
                f.display()
            );
        }
    }
}

#[test]
fn front_ends_never_hold_a_kms_or_ec2_handle() {
    let why = "FUSE and NBD serve the Arc<Image> the attachment process unlocked";
    refuse(
        "blockdev",
        &["crate::kms", "crate::ec2", "crate::host"],
        why,
    );
    refuse("nbd", &["crate::kms", "crate::ec2", "crate::host"], why);
}

#[test]
fn ec2_never_touches_a_mount_or_a_socket() {
    refuse(
        "ec2",
        &[
            "nix::mount",
            "umount",
            "UnixStream",
            "UnixListener",
            "remove_stale_socket",
            ".sock\"",
            "crate::blockdev",
            "crate::nbd",
            "crate::host",
            "LinuxHost",
        ],
        "the EC2 engine goes through the AttachmentHost the service layer gives it",
    );
}

#[test]
fn the_cli_holds_no_engine() {
    refuse(
        "cli",
        &[
            "crate::ec2::Ec2",
            "Ec2::new",
            "Ec2::with_host",
            "ec2_engine",
            "crate::kms::Kms",
            "Kms::open",
            "kms_engine",
        ],
        "the CLI calls the service layer (src/service/), attach and detach included",
    );
}
