//! The network edge: what a kind of error becomes on the wire (`status`). The
//! HTTP server that speaks AWS's protocols (docs/ARCHITECTURE.md, issue 16) lives
//! here; the core decides nothing about HTTP.

pub mod ec2;
pub mod query;
pub mod status;
