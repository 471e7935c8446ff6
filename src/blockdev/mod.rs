//! Front ends that expose an attached volume ([`crate::volume::Image`]) to Linux.
//!
//! - `fuse.rs`: one file in a FUSE mount (loop device + filesystem on top).
//! - `daemon.rs`: the attachment process behind `ebsim ec2 attach-volume --fuse`.
//! - `host.rs`: what the host still holds of an attachment whose process died.
//! - (`ebsim mount` / `ebsim unmount` live in `src/cli/attach.rs`.)

pub mod daemon;
pub mod fuse;
pub mod host;
