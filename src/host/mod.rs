//! The host side of attachments: the processes that serve them and what they
//! leave on this Linux machine.
//!
//! - `supervisor.rs`: starts an attachment process and waits for it to be
//!   ready, asks it requests over its control socket, stops it.
//! - `messages.rs`: the typed messages between the two ([`messages::Request`],
//!   [`messages::Event`]), one JSON document per line; errors keep their kind.
//! - `agent.rs`: the attachment process itself: unlocks the volume through the
//!   EC2 engine the service layer hands it and gives the unlocked image to FUSE
//!   and NBD.
//! - `postgres.rs`: a PostgreSQL 15 server (initdb, pg_ctl) on a data
//!   directory of the caller's, as the `postgres` user when ebsim runs as root:
//!   what RDS instances run on their encrypted volumes.
//! - `database.rs`: an RDS DB instance's place on this host: its run
//!   directory (outside the data root, passable by PostgreSQL's user), the
//!   mount point of its storage, its socket directory, its server.
//! - `linux.rs`: [`LinuxHost`], the [`crate::ec2::AttachmentHost`] the service
//!   layer gives each EC2 engine it opens: mounts, loop devices, holders, stale
//!   sockets.
//!
//! The service layer (`crate::service::attach`) drives all of it; a front end
//! only says which command line runs an attachment process.

pub mod agent;
pub mod database;
pub mod linux;
pub mod messages;
pub mod postgres;
pub mod supervisor;

pub use agent::{Frontends, serve};
pub use linux::LinuxHost;
