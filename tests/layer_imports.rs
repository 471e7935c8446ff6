//! The layers of docs/ARCHITECTURE.md, enforced: the volume layer knows nothing of
//! KMS, EC2 or the front ends, and the snapshot engine nothing of EC2, the CLI or
//! the service layer. Read from the source, so a new `use` that breaks a layer
//! fails here with the file and line.

use std::collections::BTreeSet;
use std::path::Path;

/// Every `crate::<module>` a file's code (comments skipped) names, with its line.
fn crate_modules(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push((n + 1, name));
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push((n + 1, name));
            }
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every `crate::` module a layer's files use outside `allowed`, as `file:line module`.
fn violations(layer: &str, allowed: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bad = BTreeSet::new();
    for file in rust_files(&root.join("src").join(layer)) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, module) in crate_modules(&text) {
            if !allowed.contains(&module.as_str()) {
                let rel = file.strip_prefix(root).unwrap().display().to_string();
                bad.insert(format!("{rel}:{line} uses crate::{module}"));
            }
        }
    }
    bad.into_iter().collect()
}

#[test]
fn the_volume_layer_uses_only_crypto_and_the_small_utilities() {
    let v = violations(
        "volume",
        &["volume", "crypto", "fsutil", "error", "fault", "clock"],
    );
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn the_snapshot_engine_does_not_know_ec2_the_cli_or_the_service_layer() {
    let v = violations(
        "snapshot",
        &[
            "snapshot", "volume", "crypto", "fsutil", "error", "fault", "clock",
        ],
    );
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn the_scanner_sees_plain_grouped_and_inline_paths() {
    let found = crate_modules(
        "use crate::volume::Image;\nuse crate::{error::Result, kms};\n// crate::ec2 in a comment\nlet x = crate::ec2::f(); // crate::cli\n",
    );
    let names: Vec<_> = found.iter().map(|(l, m)| format!("{l}:{m}")).collect();
    assert_eq!(names, ["1:volume", "2:error", "2:kms", "4:ec2"]);
}
