//! `unsafe` lives in one fenced module (docs/ARCHITECTURE.md): the crate denies it,
//! and only src/crypto/xts_vaes.rs may allow it, with a `// SAFETY:` comment on
//! every unsafe block.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn unsafe_is_allowed_in_one_module_and_every_block_says_why() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("[lints.rust]\n") && manifest.contains("\nunsafe_code = \"deny\""),
        "Cargo.toml's [lints] must deny unsafe_code"
    );
    assert!(
        manifest.contains("\ncast_possible_truncation = \"deny\""),
        "Cargo.toml's [lints] must deny truncating casts"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let allowed = f.ends_with("crypto/xts_vaes.rs");
        assert_eq!(
            text.contains("allow(unsafe_code)"),
            allowed,
            "{}: only src/crypto/xts_vaes.rs may allow unsafe code",
            f.display()
        );
        if allowed {
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let opens_block = l.contains("unsafe {") && !l.trim_start().starts_with("//");
                if opens_block {
                    let window = &lines[i.saturating_sub(4)..=i];
                    assert!(
                        window.iter().any(|w| w.contains("// SAFETY:")),
                        "{}:{}: unsafe block without a // SAFETY: comment",
                        f.display(),
                        i + 1
                    );
                }
            }
        }
    }
}
