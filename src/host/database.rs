//! Where an RDS DB instance lives on this host (docs/RDS.md §2): its run
//! directory, the mount point of its storage volume's filesystem, the socket
//! directory of its PostgreSQL server, and the server itself
//! ([`super::postgres::Postgres`]).
//!
//! The run directory is outside the data root, whose directories are private
//! to root (0700): PostgreSQL runs as its own user, which must be able to pass
//! through every directory above its data. Each data root gets its own
//! directory under the run base (`EBSIM_RDS_RUN`, else `/run/ebsim/rds`),
//! named by a hash of the data root's path; every directory on the way is
//! root's, mode 0711 (passable, not listable). Nothing secret is there: the
//! data directory is on the encrypted volume mounted at `storage/`, and the
//! socket directory holds the server's socket and lock file only.
//!
//! ```text
//! /run/ebsim/rds/<root-hash>/<region>/<db-instance-identifier>/
//!     storage/      the ext4 of the instance's storage volume (loop on its FUSE file)
//!         pgdata/   the PostgreSQL cluster (0700, the postgres user's), its log/ inside
//!     socket/       the server's unix socket (.s.PGSQL.<port>)
//! ```

use super::postgres::Postgres;
use crate::error::{Error, ErrorKind, Result};
use crate::home::DataRoot;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The run base when `EBSIM_RDS_RUN` is not set.
pub const DEFAULT_RUN_BASE: &str = "/run/ebsim/rds";

/// One DB instance's place on this host.
#[derive(Debug, Clone)]
pub struct DatabaseHost {
    dir: PathBuf,
}

fn run_base() -> PathBuf {
    std::env::var_os("EBSIM_RDS_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_BASE))
}

/// 16 hex digits of the SHA-256 of the data root's canonical path.
fn root_tag(root: &DataRoot) -> String {
    use sha2::Digest;
    let path = std::fs::canonicalize(root.path()).unwrap_or_else(|_| root.path().to_path_buf());
    let h = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    h.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Makes `dir` (and what is missing above it) root's and mode 0711.
fn passable_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(|e| Error::io(format!("cannot create directory {}", dir.display()), e))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| Error::io_file(dir, e))
}

impl DatabaseHost {
    /// The place of instance `identifier` of `region` in `root`'s run directory.
    pub fn new(root: &DataRoot, region: &str, identifier: &str) -> Result<Self> {
        crate::home::validate_region(region)?;
        if identifier.is_empty()
            || !identifier
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::new(
                ErrorKind::InvalidParameterValue,
                format!("{identifier:?} is not a DB instance identifier"),
            ));
        }
        Ok(DatabaseHost {
            dir: run_base()
                .join(root_tag(root))
                .join(region)
                .join(identifier),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the storage volume's filesystem is mounted.
    pub fn mount_point(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// The server's socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// Makes the run directory and the mount point, passable by PostgreSQL's
    /// user all the way down.
    pub fn prepare(&self) -> Result<()> {
        let base = run_base();
        // Every directory below the run base is made passable (the base's
        // parents, /run say, are the system's and already are).
        // The base is made passable only when this code makes it: an existing
        // one (EBSIM_RDS_RUN=/tmp, say) keeps its mode.
        if !base.is_dir() {
            passable_dir(&base)?;
        }
        let mut chain = vec![self.mount_point()];
        let mut d = self.dir.clone();
        while d.starts_with(&base) && d != base {
            chain.push(d.clone());
            if !d.pop() {
                break;
            }
        }
        for dir in chain.iter().rev() {
            passable_dir(dir)?;
        }
        Ok(())
    }

    /// The instance's PostgreSQL cluster (its data directory on the mounted
    /// storage) listening on 127.0.0.1:`port` and the socket directory.
    pub fn postgres(&self, port: u16) -> Result<Postgres> {
        let bin = super::postgres::server_binaries()?;
        Ok(Postgres::new(
            &bin,
            &self.mount_point().join("pgdata"),
            &self.socket_dir(),
            port,
        ))
    }

    /// Removes the run directory once nothing is mounted in it; an error names
    /// what is still there.
    pub fn remove(&self) -> Result<()> {
        if super::linux::is_mount_point(&self.mount_point()) {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "{} is still mounted; nothing was removed",
                    self.mount_point().display()
                ),
            ));
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io_file(&self.dir, e)),
        }
    }
}

/// The version of the PostgreSQL server programs (`15.18`), from `postgres
/// --version`.
pub fn server_version() -> Result<String> {
    let bin = super::postgres::server_binaries()?;
    let out = std::process::Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .map_err(|e| Error::environment(format!("cannot run postgres --version: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    text.split_whitespace()
        .nth(2)
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .ok_or_else(|| {
            Error::environment(format!(
                "cannot read the PostgreSQL version from {:?}",
                text.trim()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_data_root_and_instance_has_its_own_place() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ra = DataRoot::open(a.path()).unwrap();
        let rb = DataRoot::open(b.path()).unwrap();
        let x = DatabaseHost::new(&ra, "us-east-1", "db1").unwrap();
        let y = DatabaseHost::new(&rb, "us-east-1", "db1").unwrap();
        let z = DatabaseHost::new(&ra, "us-west-2", "db1").unwrap();
        assert_ne!(x.dir(), y.dir());
        assert_ne!(x.dir(), z.dir());
        assert!(x.dir().ends_with("us-east-1/db1"));
        assert_eq!(x.mount_point(), x.dir().join("storage"));
        assert!(DatabaseHost::new(&ra, "us-east-1", "../x").is_err());
        assert!(DatabaseHost::new(&ra, "us-east-1", "DB1").is_err());
    }
}
