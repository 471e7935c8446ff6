//! The NBD front end: `ebsim ec2 attach-volume --nbd unix:PATH|tcp:HOST:PORT` serves
//! an attached volume to NBD clients (qemu, libnbd's nbdinfo/nbdcopy/nbdfuse, fio's
//! nbd engine, the kernel's nbd-client where there is one). docs/NBD.md says what is
//! implemented and how it maps onto the volume.
//!
//! - `proto.rs`: the wire format, bounds-checked parsers, request checks (no I/O).
//! - `server.rs`: the tokio server: listener, handshake, transmission.
//! - `tls.rs`: TLS after `NBD_OPT_STARTTLS` (pre-shared keys or x509 certificates).

pub mod proto;
pub mod server;
pub mod tls;

pub use server::{Bound, Export, Listen, Server};
pub use tls::{Tls, TlsFlags};
