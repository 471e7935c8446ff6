//! The `ebsim` binary as a process: exit codes, help, secrets on disk, concurrent
//! and killed processes on one data root.

mod common;
use base64::Engine;
use common::{all_files, contains};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn ebsim(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebsim"))
        .args(args)
        .env("EBSIM_HOME", home)
        .env_remove("EBSIM_NOW")
        .env_remove("EBSIM_REGION")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let o = ebsim(home, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn help_documents_the_exit_codes_and_usage_errors_exit_252() {
    let d = tempfile::tempdir().unwrap();
    let help = ok(d.path(), &["--help"]);
    for code in ["252", "253", "254", "255"] {
        assert!(help.contains(code), "--help must document exit code {code}");
    }
    let o = ebsim(d.path(), &["kms", "no-such-operation"]);
    assert_eq!(o.status.code(), Some(252));
    let o = ebsim(d.path(), &["kms", "encrypt", "--key-id", "alias/x"]);
    assert_eq!(o.status.code(), Some(252));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--plaintext"));
    let o = ebsim(d.path(), &["kms", "describe-key", "--key-id", "alias/x"]);
    assert_eq!(o.status.code(), Some(254));
    assert!(o.stdout.is_empty(), "errors go to stderr only");
}

#[test]
fn data_keys_handed_out_by_the_cli_never_reach_the_data_root() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    let key = ok(
        &home,
        &[
            "kms",
            "create-key",
            "--query",
            "KeyMetadata.KeyId",
            "--output",
            "text",
        ],
    );
    ok(&home, &["kms", "rotate-key-on-demand", "--key-id", &key]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut secrets = Vec::new();
    for i in 0..6 {
        let ctx = format!("aws:ebs:id=vol-{i:017}");
        let out = ok(
            &home,
            &[
                "kms",
                "generate-data-key",
                "--key-id",
                &key,
                "--number-of-bytes",
                "64",
                "--encryption-context",
                &ctx,
                "--output",
                "text",
                "--query",
                "[Plaintext,CiphertextBlob]",
            ],
        );
        let (plain, blob) = out.split_once('\t').unwrap();
        let plain = b64.decode(plain).unwrap();
        // Decrypt it back through the CLI, as attach will.
        let f = d.path().join(format!("dk{i}.enc"));
        std::fs::write(&f, b64.decode(blob).unwrap()).unwrap();
        let back = ok(
            &home,
            &[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &format!("fileb://{}", f.display()),
                "--encryption-context",
                &ctx,
                "--output",
                "text",
                "--query",
                "Plaintext",
            ],
        );
        assert_eq!(b64.decode(back).unwrap(), plain);
        secrets.push(plain);
    }
    let files = all_files(&home);
    assert!(files.len() >= 3);
    for (path, bytes) in &files {
        for s in &secrets {
            assert!(!contains(bytes, s), "data key bytes in {}", path.display());
            assert!(
                !contains(bytes, b64.encode(s).as_bytes()),
                "base64 data key in {}",
                path.display()
            );
        }
    }
}

#[test]
fn concurrent_processes_lose_no_update() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    ok(&home, &["kms", "list-keys"]); // creates the root key and store
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_ebsim"))
                .args([
                    "kms",
                    "create-key",
                    "--description",
                    &format!("k{i}"),
                    "--query",
                    "KeyMetadata.KeyId",
                    "--output",
                    "text",
                ])
                .env("EBSIM_HOME", &home)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success());
            String::from_utf8(o.stdout).unwrap().trim().to_string()
        })
        .collect();
    ids.sort();
    let listed = ok(
        &home,
        &[
            "kms",
            "list-keys",
            "--query",
            "Keys[].KeyId",
            "--output",
            "text",
        ],
    );
    let mut listed: Vec<String> = listed.split_whitespace().map(String::from).collect();
    listed.sort();
    assert_eq!(listed, ids);
    let log = std::fs::read_to_string(home.join("regions/us-east-1/cloudtrail.jsonl")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\"CreateKey\"")).count(),
        8,
        "one whole record per call"
    );
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}

#[test]
fn killed_processes_leave_a_consistent_store() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    ok(&home, &["kms", "list-keys"]);
    for round in 0..12u64 {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ebsim"))
            .args(["kms", "create-key", "--description", "maybe"])
            .env("EBSIM_HOME", &home)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(500 * round * round));
        let _ = c.kill();
        let _ = c.wait();
    }
    // Whatever was committed is whole: every listed key describes and encrypts.
    let listed = ok(
        &home,
        &[
            "kms",
            "list-keys",
            "--query",
            "Keys[].KeyId",
            "--output",
            "text",
        ],
    );
    for id in listed.split_whitespace() {
        ok(&home, &["kms", "describe-key", "--key-id", id]);
        ok(
            &home,
            &["kms", "encrypt", "--key-id", id, "--plaintext", "aGk="],
        );
    }
    ok(&home, &["kms", "create-key"]);
}

#[test]
fn debug_and_rust_log_add_log_lines_and_nothing_else_does() {
    let d = tempfile::tempdir().unwrap();
    let args = ["kms", "create-key", "--query", "KeyMetadata.KeyState"];
    let quiet = ebsim(d.path(), &args);
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    let mut debug_args = vec!["--debug"];
    debug_args.extend(args);
    let debug = ebsim(d.path(), &debug_args);
    assert_eq!(
        debug.stdout, quiet.stdout,
        "the output itself does not change"
    );
    let log = String::from_utf8_lossy(&debug.stderr);
    assert!(
        log.contains("DEBUG") && log.contains("kms CreateKey by arn:aws:iam::"),
        "{log}"
    );
    // RUST_LOG chooses what is logged without --debug.
    let o = Command::new(env!("CARGO_BIN_EXE_ebsim"))
        .args(["kms", "list-keys"])
        .env("EBSIM_HOME", d.path())
        .env("RUST_LOG", "ebsim=debug")
        .output()
        .unwrap();
    assert!(o.status.success());
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("kms ListKeys by "), "{log}");
}
