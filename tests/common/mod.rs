//! Shared helpers for the integration tests.
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]
#![allow(dead_code, unused_macros)]

pub mod nbd_client;
pub mod pki;
pub mod postgres;
pub mod sandbox;
pub mod server;

use ebsim::clock::{Clock, Timestamp, parse_time};
use ebsim::home::DataRoot;
use ebsim::kms::Kms;
use ebsim::kms::access::Caller;
use ebsim::kms::api::*;
use ebsim::{Error, ErrorKind};

pub const ACCOUNT: &str = "111122223333";

pub fn start() -> Timestamp {
    parse_time("2026-01-01T00:00:00Z").unwrap()
}

/// A KMS on a fresh data root with a manual clock and no throttling.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: DataRoot,
    pub clock: Clock,
    pub kms: Kms,
    pub me: Caller,
}

impl Env {
    pub fn new() -> Self {
        Self::with_region("us-east-1")
    }

    pub fn with_region(region: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::open(dir.path()).unwrap();
        let clock = Clock::manual(start());
        let kms = Kms::open_with(&root, region, ACCOUNT, clock.clone(), None).unwrap();
        Env {
            dir,
            root,
            clock,
            kms,
            me: Caller::account_root(ACCOUNT),
        }
    }

    /// Another region's KMS on the same data root and clock.
    pub fn region(&self, region: &str) -> Kms {
        Kms::open_with(&self.root, region, ACCOUNT, self.clock.clone(), None).unwrap()
    }

    pub fn advance_days(&mut self, days: i64) {
        self.clock.advance(chrono::TimeDelta::days(days));
    }

    pub fn create_key(&self) -> KeyMetadata {
        self.kms
            .create_key(&self.me, CreateKeyRequest::default())
            .unwrap()
            .key_metadata
    }

    pub fn encrypt(&self, key_id: &str, plaintext: &[u8]) -> Result<EncryptResponse, Error> {
        self.kms.encrypt(
            &self.me,
            EncryptRequest {
                key_id: key_id.into(),
                plaintext: Blob::new(plaintext.to_vec()),
                ..Default::default()
            },
        )
    }

    pub fn decrypt(&self, blob: &[u8]) -> Result<DecryptResponse, Error> {
        self.kms.decrypt(
            &self.me,
            DecryptRequest {
                ciphertext_blob: Blob::new(blob.to_vec()),
                ..Default::default()
            },
        )
    }

    pub fn describe(&self, key_id: &str) -> Result<KeyMetadata, Error> {
        self.kms
            .describe_key(
                &self.me,
                DescribeKeyRequest {
                    key_id: key_id.into(),
                    ..Default::default()
                },
            )
            .map(|r| r.key_metadata)
    }

    pub fn key(&self, key_id: &str) -> KeyIdRequest {
        KeyIdRequest {
            key_id: key_id.into(),
        }
    }
}

/// Asserts an error of `kind` and returns its message.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, kind: ErrorKind) -> String {
    match r {
        Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "wrong error: {e}");
            e.message().to_string()
        }
    }
}

pub fn ctx(pairs: &[(&str, &str)]) -> ebsim::kms::context::EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every byte of every regular file under `dir`.
pub fn all_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Skips the running test: says why on stderr and records it in
/// `target/tmp/skipped-tests.txt`, which scripts/test.sh reads so that a skipped test
/// counts as skipped in its summary, not as passed (libtest has no runtime skip).
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    eprintln!("SKIP: {test}: {why}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        // One write of the whole line: `writeln!` may split it into several
        // writes, which tests skipping at once interleave.
        let _ = f.write_all(format!("{test}\t{why}\n").as_bytes());
    }
}

/// True if `tool` is on the PATH (or in /usr/sbin or /sbin, where root's
/// tools live when a PATH leaves them out).
pub fn have(tool: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|d| std::path::Path::new(d).join(tool).exists())
}

/// Skips the test (recorded by [`skip`]) unless every tool is on PATH.
macro_rules! require {
    ($($tool:expr),*) => {
        for tool in [$($tool),*] {
            if !common::have(tool) {
                common::skip(&format!("{tool} is not installed (scripts/test.sh installs it)"));
                return;
            }
        }
    };
}
