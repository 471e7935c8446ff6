//! Golden CLI tests: each `tests/golden/NAME.sh` is a transcript script run by bash
//! against the real `ebsim` binary on a fresh data root; its output must equal
//! `tests/golden/NAME.out`.
//!
//! Written by hand rather than with trycmd because the cases are shell pipelines
//! (the AWS seed lines pipe through `base64 --decode`) and reuse values from earlier
//! commands; trycmd runs single commands without a shell.
//!
//! In a script, `t 'COMMAND'` prints `$ COMMAND`, runs it with stderr merged into
//! stdout, and prints `[exit N]` when N is not 0. Random values are numbered in
//! order of first appearance: key ids become `<UUID-1>`, volume ids `<VOL-1>`, snapshot ids `<SNAP-1>`, key material ids
//! `<HEX-1>`, long base64 strings `<B64-1>`. The clock is pinned with `EBSIM_NOW`.
//! `EBSIM_BLESS=1 cargo test --test cli_golden` rewrites the `.out` files.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const PRELUDE: &str = r#"
set -u
t() { printf '$ %s\n' "$*"; eval "$*" 2>&1; local rc=$?; if [ $rc -ne 0 ]; then printf '[exit %d]\n' $rc; fi; return 0; }
"#;

/// Replaces each distinct match of `pattern` by `<LABEL-n>`.
fn number(text: &str, pattern: &regex_lite::Regex, label: &str) -> String {
    let mut seen: HashMap<String, usize> = HashMap::new();
    pattern
        .replace_all(text, |c: &regex_lite::Captures<'_>| {
            let n = seen.len() + 1;
            let id = *seen.entry(c[0].to_string()).or_insert(n);
            format!("<{label}-{id}>")
        })
        .into_owned()
}

fn normalize(out: &str, home: &Path) -> String {
    let out = out.replace(&home.display().to_string(), "$HOME");
    let uuid =
        regex_lite::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
            .unwrap();
    let hex = regex_lite::Regex::new(r"\b[0-9a-f]{64}\b").unwrap();
    let b64 = regex_lite::Regex::new(r"[A-Za-z0-9+/]{40,}={0,2}").unwrap();
    let vol = regex_lite::Regex::new(r"\bvol-[0-9a-f]{17}\b").unwrap();
    let snap = regex_lite::Regex::new(r"\bsnap-[0-9a-f]{17}\b").unwrap();
    let dek = regex_lite::Regex::new(r"\bdek-[0-9a-f]{17}\b").unwrap();
    let out = number(&out, &uuid, "UUID");
    let out = number(&out, &vol, "VOL");
    let out = number(&out, &snap, "SNAP");
    let out = number(&out, &dek, "DEK");
    let out = number(&out, &hex, "HEX");
    number(&out, &b64, "B64")
}

fn run_case(script: &Path) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let bin = Path::new(env!("CARGO_BIN_EXE_ebsim"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let body = std::fs::read_to_string(script).unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{body}"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("LC_ALL", "C")
        .env("EBSIM_HOME", &home)
        .env("EBSIM_NOW", "2026-01-01T00:00:00Z")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let expected_path = script.with_extension("out");
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    (normalize(&text, &home), expected)
}

#[test]
fn golden_cli_transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.sort();
    assert!(
        !scripts.is_empty(),
        "no golden scripts in {}",
        dir.display()
    );
    let bless = std::env::var("EBSIM_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for script in &scripts {
        let (got, want) = run_case(script);
        if got == want {
            continue;
        }
        if bless {
            std::fs::write(script.with_extension("out"), &got).unwrap();
            eprintln!("blessed {}", script.display());
            continue;
        }
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines().chain(std::iter::repeat("<missing>")))
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .take(5)
            .map(|(i, (w, g))| format!("  line {}:\n    want: {w}\n    got:  {g}", i + 1))
            .collect();
        failures.push(format!(
            "{} differs ({} lines expected, {} got):\n{}",
            script.display(),
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        ));
    }
    assert!(
        failures.is_empty(),
        "{}\n(rerun with EBSIM_BLESS=1 to accept)",
        failures.join("\n\n")
    );
}
