//! ebsim: AWS KMS and EBS-style envelope encryption, for real, on one Linux box.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`error`] | the one error type: AWS error code, message, exit code |
//! | [`clock`] | the movable clock every time rule reads |
//! | [`home`] | the data root: config, root key, per-region subtrees |
//! | [`fsutil`] | private modes and atomic file replacement |
//! | [`fault`] | crash points for crash tests (`EBSIM_FAULT`) |
//! | [`crypto`] | locked zeroizing secrets (and the stacks that touch them), AES-256-GCM, HKDF, XTS, randomness |
//! | [`kms`] | keys, backing-key versions, aliases, rotation, deletion, crypto operations, sealed store, audit log, quotas |
//! | [`service`] | the service layer: request context, each service's operation table; what every front end calls |
//! | [`host`] | attachment processes (supervisor, typed messages, agent) and the Linux host they live on |
//! | [`cli`] | the `ebsim` command line, shaped like the AWS CLI |
//!
//! docs/ARCHITECTURE.md shows how the parts fit; docs/KMS.md specifies the
//! ciphertext and store formats.

// `unsafe` is denied by Cargo.toml's [lints] and allowed in exactly one module,
// src/crypto/xts_vaes.rs (x86 intrinsics); tests/unsafe_fence.rs holds both.

pub mod blockdev;
pub mod cli;
pub mod clock;
pub mod crypto;
pub mod ec2;
pub mod error;
pub mod fault;
pub mod fsutil;
pub mod home;
pub mod host;
pub mod iam;
pub mod kms;
pub mod nbd;
pub mod num;
pub mod policy;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod volume;

pub use error::{Error, ErrorKind, Result};
