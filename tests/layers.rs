//! The layer rules of docs/ARCHITECTURE.md ("Layer rules"), checked against the
//! source: every path into another component (`crate::kms::…`, `use crate::{ec2,
//! …}`) in a file is compared with what its component may reach. Comments and a
//! file's `#[cfg(test)]` tail are not code of the layer and are skipped.

use std::collections::BTreeSet;
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

/// The component a file belongs to: its top-level module (`src/kms/…` → `kms`,
/// `src/clock.rs` → `clock`, `src/main.rs` → `main`).
fn component(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// A file's code without comments and without its unit tests.
fn code_of(text: &str, file: &Path) -> String {
    if file.ends_with("tests.rs") {
        return String::new();
    }
    code_with_tests(text, false)
}

/// A file's code without comments; its unit tests too when `tests`.
fn code_with_tests(text: &str, tests: bool) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") && !tests {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        // A trailing comment: drop it unless `//` is inside a string (good enough
        // for paths, which never sit in strings next to `//`).
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every `crate::a::b` path a piece of code names, as `a::b` (or `a` alone),
/// grouped imports (`crate::{a::X, b}`) expanded one level.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_string()
    };
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `ebsim_crate::` or similar: not ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let p = ident(item.trim());
                if !p.is_empty() {
                    out.insert(p);
                }
            }
        } else {
            let p = ident(rest);
            if !p.is_empty() {
                out.insert(p);
            }
        }
    }
    out
}

/// What a path may not be for a file of `component`, or `None` if allowed.
fn violation(component: &str, path: &str) -> Option<&'static str> {
    let top = path.split("::").next().unwrap();
    let second = path.split("::").nth(1).unwrap_or("");
    const FRONT_ENDS: &[&str] = &["cli", "blockdev", "nbd", "server", "main"];
    // 1. Nothing below the CLI knows it: the core never prints or knows exit codes.
    if top == "cli" && component != "cli" && component != "main" {
        return Some("the core imports the CLI");
    }
    // 2. The volume format stands on crypto and plumbing only.
    if component == "volume"
        && ![
            "volume", "crypto", "error", "fsutil", "fault", "clock", "num",
        ]
        .contains(&top)
    {
        return Some("the volume format imports a layer above it");
    }
    // 3. A front end never holds a key service (or an engine): it reaches them
    //    through the service layer. The KMS's request/response shapes and key
    //    specs are the language of requests, not the service.
    if FRONT_ENDS.contains(&component) && top == "kms" && !["api", "spec"].contains(&second) {
        return Some("a front end imports the KMS");
    }
    if FRONT_ENDS.contains(&component) && top == "ec2" && second == "Ec2" {
        return Some("a front end holds the EC2 engine");
    }
    // 4. Serving code (FUSE, NBD) gets the unlocked image the attachment process
    //    hands it, never a key service, EC2, the host or the services.
    if ["blockdev", "nbd"].contains(&component) && ["kms", "ec2", "host", "service"].contains(&top)
    {
        return Some("a serving front end imports what unlocks volumes");
    }
    // 5. Services never touch mounts or sockets: the host does (src/host/).
    if component == "ec2" && ["blockdev", "nbd", "server", "service"].contains(&top) {
        return Some("EC2 imports a front end or the service layer");
    }
    //    The engine is given its host (an `AttachmentHost`) by the service layer;
    //    it never names the Linux one.
    if component == "ec2" && top == "host" {
        return Some("EC2 names the host instead of being given one");
    }
    // 6. The snapshot engine works over injected stores, under EC2.
    if component == "snapshot"
        && ["ec2", "kms", "service", "blockdev", "nbd", "server", "iam"].contains(&top)
    {
        return Some("the snapshot engine imports a layer above it");
    }
    // 7. The KMS, IAM, policies and crypto know nothing of volumes or front ends.
    if ["kms", "iam", "policy", "crypto"].contains(&component)
        && [
            "ec2", "volume", "snapshot", "blockdev", "nbd", "server", "service",
        ]
        .contains(&top)
    {
        return Some("a lower layer imports a higher one");
    }
    None
}

#[test]
fn no_component_imports_across_its_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut broken = Vec::new();
    for f in &files {
        let comp = component(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for p in crate_paths(&code_of(&text, f)) {
            if let Some(why) = violation(&comp, &p) {
                broken.push(format!(
                    "{}: crate::{p}: {why}",
                    f.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn library_code_never_prints() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for f in &files {
        let comp = component(&src, f);
        if comp == "cli" || comp == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests too: a test that cannot run says so through
        // crate::test_skip, not on stderr.
        let code = code_with_tests(&text, true);
        for m in ["println!", "eprintln!", "print!(", "eprint!(", "dbg!("] {
            if code.contains(m) {
                broken.push(format!("{}: {m}", f.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "library code prints:\n{}",
        broken.join("\n")
    );
}

/// EC2 reaches mounts and sockets only through its `AttachmentHost` (the host
/// module implements it): no unmounting, no socket handling in src/ec2/.
#[test]
fn ec2_never_touches_a_mount_or_a_socket() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("ec2"), &mut files);
    let broken = naming(
        &src,
        &files,
        &[
            "nix::mount",
            "umount",
            "UnixStream",
            "UnixListener",
            "remove_stale_socket",
            ".sock\"",
        ],
    );
    assert!(
        broken.is_empty(),
        "EC2 touches the host:\n{}",
        broken.join("\n")
    );
}

/// `file: word` for each of `words` that the code of one of `files` names.
fn naming(src: &Path, files: &[PathBuf], words: &[&str]) -> Vec<String> {
    let mut broken = Vec::new();
    for f in files {
        let code = code_of(&std::fs::read_to_string(f).unwrap(), f);
        for word in words {
            if code.contains(word) {
                broken.push(format!(
                    "{}: {word}",
                    f.strip_prefix(src).unwrap().display()
                ));
            }
        }
    }
    broken
}

/// The CLI opens no engine: every call, attach and detach included, goes through
/// `crate::service` (imports are checked above; this catches the calls that name
/// no path, such as `services.ec2_engine(..)`).
#[test]
fn the_cli_opens_no_engine() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("cli"), &mut files);
    files.push(src.join("main.rs"));
    let broken = naming(
        &src,
        &files,
        &[
            "ec2_engine",
            "kms_engine",
            "iam_engine",
            "Ec2::new",
            "Ec2::with_host",
            "Kms::open",
            "agent::",
        ],
    );
    assert!(
        broken.is_empty(),
        "the CLI opens an engine:\n{}",
        broken.join("\n")
    );
}

/// Every module of the crate is in lib.rs's map (its `# Layout` table) and in
/// docs/ARCHITECTURE.md.
#[test]
fn every_module_is_on_the_maps() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let arch = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert!(
        modules.len() > 10,
        "lib.rs declares its modules as `pub mod x;`"
    );
    for m in modules {
        assert!(
            lib.contains(&format!("//! | [`{m}`] |")),
            "src/lib.rs's layout table has no row for {m}"
        );
        assert!(
            arch.contains(&format!("src/{m}/")) || arch.contains(&format!("{m}.rs")),
            "docs/ARCHITECTURE.md does not place {m}"
        );
    }
    // And every file under src/ is named in ARCHITECTURE.md.
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if ["mod.rs", "lib.rs", "main.rs", "tests.rs"].contains(&name.as_str()) {
            continue;
        }
        assert!(
            arch.contains(&name),
            "docs/ARCHITECTURE.md does not name {}",
            f.strip_prefix(root).unwrap().display()
        );
    }
}

/// The checker itself: each rule fires on the import it is about, and the
/// parser sees grouped imports and ignores comments and tests.
#[test]
fn the_checker_finds_what_it_looks_for() {
    let code = code_of(
        "use crate::{kms::Kms, error::Result};\n// crate::cli::x\nlet a = crate::volume::Image::open(); // crate::ec2\n#[cfg(test)]\nuse crate::cli;\n",
        Path::new("src/x/mod.rs"),
    );
    let paths = crate_paths(&code);
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        ["error::Result", "kms::Kms", "volume::Image::open"]
    );
    assert!(violation("cli", "kms::Kms").is_some());
    assert!(violation("cli", "kms::api::EncryptRequest").is_none());
    assert!(violation("blockdev", "kms::access::Caller").is_some());
    assert!(violation("nbd", "ec2::model::AttachmentRecord").is_some());
    assert!(violation("blockdev", "volume::Image").is_none());
    assert!(violation("volume", "kms::Kms").is_some());
    assert!(violation("volume", "crypto::xts::Xts").is_none());
    assert!(violation("kms", "cli::exit").is_some());
    assert!(violation("main", "cli::main_with_args").is_none());
    assert!(violation("ec2", "blockdev::host").is_some());
    assert!(violation("snapshot", "ec2::model").is_some());
}
