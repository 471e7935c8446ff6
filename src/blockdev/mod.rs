//! The FUSE front end: exposes an unlocked volume ([`crate::volume::Image`]) to Linux
//! as one file in a FUSE mount.
//!
//! This module never sees a key or the KMS: it is handed an `Arc<Image>` that
//! the attachment process (`crate::host::agent`) unlocked through the EC2 service.
//! What it has to say (a refused truncation, a failed request) goes out as
//! `tracing` events; the attachment process writes them to its log.

pub mod fuse;
