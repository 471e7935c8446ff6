//! ebsim: AWS KMS and EBS-style envelope encryption, for real, on one Linux box.
//!
//! # Layout
//!
//! From the top (front ends) down; docs/ARCHITECTURE.md draws the layers and
//! their rules, and tests/layers.rs holds the code to them.
//!
//! | module | layer | owns |
//! |---|---|---|
//! | [`cli`] | front end | the `ebsim` command line, shaped like the AWS CLI: parse, call the service layer, format; exit codes (`cli::exit`), log setup |
//! | [`server`] | front end | the network edge, `ebsim serve`: HTTP/1.1, SigV4, AWS JSON 1.1 (KMS, CloudTrail), STS, IAM, EC2 and RDS over Query, the EBS direct APIs over REST-JSON, test-harness health and reset, HTTP statuses of errors |
//! | [`blockdev`] | front end | the FUSE file that serves an unlocked volume image |
//! | [`nbd`] | front end | the NBD export (protocol, server, TLS) of an unlocked volume image |
//! | [`host`] | host | attachment processes: supervisor, typed messages, the agent, the Linux host (mounts, loop devices, sockets) |
//! | [`service`] | services | the service layer: `Services`, `RequestContext`, one operation table per service (KMS, IAM, EC2, CloudTrail) |
//! | [`rds`] | engine | RDS's DB instances: validation, authorization, the status machine, CloudTrail records (the host work is the service layer's) |
//! | [`ec2`] | engine | EC2's volumes, snapshots API, attachments, re-key API; authorization and CloudTrail records |
//! | [`kms`] | engine | keys, key material versions, aliases, grants, policies, rotation, deletion, crypto operations, sealed store, audit log, quotas |
//! | [`iam`] | engine | users, roles, identity policies, principals, access keys, role sessions |
//! | [`policy`] | engine | the IAM policy language: grammar, conditions, evaluation |
//! | [`snapshot`] | engine | snapshot take / restore / copy / collect over injected block and manifest stores; the local block store |
//! | [`volume`] | format | the volume image (docs/FORMAT.md): headers, block I/O, stored-unit XTS, re-key engine, changed-block tracking, owner |
//! | [`crypto`] | base | locked zeroizing secrets (and the stacks that touch them), AES-256-GCM, HKDF, XTS, randomness |
//! | [`home`] | base | the data root: config, root key, stores made once, per-region subtrees |
//! | [`error`] | base | the one error type: kind, AWS-style message, structured context |
//! | [`clock`] | base | the movable clock every time rule reads |
//! | [`fsutil`] | base | private modes, atomic file replacement, directory fsync |
//! | [`fault`] | base | crash points for crash tests (`EBSIM_FAULT`) |
//! | [`num`] | base | integer conversions that cannot truncate |
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
pub mod rds;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod volume;

#[cfg(test)]
mod test_skip;

pub use error::{Error, ErrorKind, Result};
