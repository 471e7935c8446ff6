//! Front ends that expose an attached volume ([`crate::volume::Image`]) to Linux.
//!
//! - `fuse.rs`: one file in a FUSE mount (loop device + filesystem on top).
//! - `daemon.rs`: the attachment process behind `ebsim ec2 attach-volume --fuse`.
//! - `mount.rs`: `ebsim mount` / `ebsim unmount` (attach + losetup + mkfs + mount).

pub mod daemon;
pub mod fuse;
