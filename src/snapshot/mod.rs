//! Snapshot storage: content-addressed 512 KiB blocks behind [`BlockStore`], with a
//! local-filesystem implementation (an S3-compatible store can implement the same
//! trait later). Which blocks make up a snapshot (its manifest) is kept with the
//! snapshot's record in `ec2.db` (`crate::ec2`).
//!
//! A block is stored under the SHA-256 of its bytes — the volume's stored bytes,
//! so ciphertext for an encrypted volume — and its checksum is verified on every
//! read. All-zero blocks (holes) are not stored: a manifest without an entry for a
//! block means zeros.

use crate::error::{Error, ErrorKind, Result};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// Bytes per snapshot block (EBS's snapshot block size; block index = offset / BLOCK).
pub const BLOCK: u64 = crate::volume::cbt::BLOCK;

/// A block's SHA-256, as lowercase hex.
pub type Digest = String;

/// Where snapshot blocks live.
pub trait BlockStore: Send + Sync {
    /// Stores `bytes` (idempotent) and returns their digest. Durable only after
    /// [`BlockStore::sync`].
    fn put(&self, bytes: &[u8]) -> Result<Digest>;
    /// Makes every block put so far durable (called before a manifest that names
    /// them is committed).
    fn sync(&self) -> Result<()>;
    /// The block with `digest`, its checksum verified.
    fn get(&self, digest: &str) -> Result<Vec<u8>>;
    /// Removes a block (no error if it is already gone).
    fn delete(&self, digest: &str) -> Result<()>;
    /// Every stored digest.
    fn list(&self) -> Result<Vec<Digest>>;
}

pub fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Blocks as files: `DIR/ab/abcdef….blk`, written atomically, mode 0600.
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn open(dir: &Path) -> Result<Self> {
        crate::fsutil::ensure_private_dir(dir)?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, digest: &str) -> Result<PathBuf> {
        let ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("'{digest}' is not a block digest"),
            ));
        }
        Ok(self.dir.join(&digest[..2]).join(format!("{digest}.blk")))
    }
}

impl BlockStore for LocalStore {
    fn put(&self, bytes: &[u8]) -> Result<Digest> {
        use std::io::Write;
        let d = digest(bytes);
        let path = self.path(&d)?;
        if path.exists() {
            return Ok(d);
        }
        // Written under a temporary name and renamed, so a reader never sees half a
        // block; not fsynced one by one: `sync` makes a whole snapshot's blocks
        // durable at once.
        let dir = path.parent().expect("blocks live in a subdirectory");
        crate::fsutil::ensure_private_dir(dir)?;
        let io = |e| Error::io(format!("cannot store block {d}"), e);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(bytes).map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(d)
    }

    fn sync(&self) -> Result<()> {
        let dir = std::fs::File::open(&self.dir)
            .map_err(|e| Error::io(format!("cannot open {}", self.dir.display()), e))?;
        nix::unistd::syncfs(&dir)
            .map_err(|e| Error::io(format!("cannot sync {}", self.dir.display()), e.into()))
    }

    fn get(&self, digest_hex: &str) -> Result<Vec<u8>> {
        let path = self.path(digest_hex)?;
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("snapshot block {digest_hex} cannot be read: {e}"),
            )
        })?;
        if digest(&bytes) != digest_hex {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "snapshot block {digest_hex} is corrupt: its SHA-256 does not match ({})",
                    path.display()
                ),
            ));
        }
        Ok(bytes)
    }

    fn delete(&self, digest_hex: &str) -> Result<()> {
        match std::fs::remove_file(self.path(digest_hex)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("cannot remove block {digest_hex}"), e)),
        }
    }

    fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(d) = f.file_name().to_string_lossy().strip_suffix(".blk") {
                    out.push(d.to_string());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_content_addressed_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let a = s.put(b"block a").unwrap();
        assert_eq!(s.put(b"block a").unwrap(), a);
        assert_eq!(s.get(&a).unwrap(), b"block a");
        assert_eq!(s.list().unwrap(), vec![a.clone()]);
        let path = dir.path().join(&a[..2]).join(format!("{a}.blk"));
        std::fs::write(&path, b"block b").unwrap();
        let e = s.get(&a).unwrap_err();
        assert!(e.message().contains("is corrupt"), "{e}");
        s.delete(&a).unwrap();
        s.delete(&a).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert!(s.get("../etc").is_err());
    }
}
