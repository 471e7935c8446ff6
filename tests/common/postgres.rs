//! What the tests of PostgreSQL servers on encrypted volumes need
//! (tests/postgres_host.rs, tests/rds.rs, tests/rds_server.rs): root,
//! /dev/fuse, Debian's PostgreSQL 15 and the tools; and free loopback ports.

use std::path::Path;

/// Why such a test cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    if let Err(e) = ebsim::host::postgres::server_binaries() {
        return Some(e.to_string());
    }
    if let Some(tool) = ["losetup", "mkfs.ext4", "psql", "runuser"]
        .into_iter()
        .find(|t| !super::have(t))
    {
        return Some(format!("{tool} is not installed"));
    }
    None
}

/// Records the test as skipped, saying why, when it cannot run here.
pub fn skipped() -> bool {
    let Some(why) = missing() else {
        return false;
    };
    super::skip(&format!(
        "{why} (scripts/test.sh installs PostgreSQL 15 and the tools; CI runs as root)"
    ));
    true
}

/// A loopback TCP port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
