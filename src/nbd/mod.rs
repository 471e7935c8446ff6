//! The NBD front end: `ebsim ec2 attach-volume --nbd unix:PATH|tcp:HOST:PORT` serves
//! an attached volume to NBD clients (qemu, libnbd's nbdinfo/nbdcopy/nbdfuse, fio's
//! nbd engine, the kernel's nbd-client where there is one). docs/NBD.md says what is
//! implemented and how it maps onto the volume.
//!
//! - `proto.rs`: the wire format, bounds-checked parsers, request checks (no I/O).
//! - `server.rs`: the tokio server: listener, handshake, transmission.

pub mod proto;
pub mod server;

pub use server::{Bound, Export, Listen, Server};
