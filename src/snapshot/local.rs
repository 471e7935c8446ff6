//! [`LocalStore`]: snapshot blocks as files in a directory of the data root
//! (`regions/<region>/snapshots/blocks/`).

use super::{BlockLock, BlockStore, Digest, digest};
use crate::error::{Error, ErrorKind, Result};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks as files: `DIR/ab/abcdef….blk`, written atomically, mode 0600.
///
/// Blocks are written with `O_DIRECT` where the filesystem allows it: a snapshot or
/// a copy writes every block once and reads it back rarely, so passing it through
/// the page cache only costs a copy per byte, dirty-page throttling and a
/// writeback pass, and evicts what the volumes' own I/O has cached. Durability is
/// unchanged: [`BlockStore::sync`] (`syncfs`) still runs before a manifest names
/// the blocks, and flushes the device's cache. Filesystems that refuse `O_DIRECT`
/// (`EINVAL`) get buffered writes.
pub struct LocalStore {
    dir: PathBuf,
    direct: AtomicBool,
}

impl LocalStore {
    fn lock_file(&self) -> Result<File> {
        let p = self.dir.join(".lock");
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| Error::io(format!("cannot open {}", p.display()), e))
    }

    /// Every file in the store's subdirectories, with its name.
    fn files(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if !sub.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push((f.path(), f.file_name().to_string_lossy().into_owned()));
            }
        }
        out
    }

    pub fn open(dir: &Path) -> Result<Self> {
        crate::fsutil::ensure_private_dir(dir)?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
            direct: AtomicBool::new(true),
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

    /// Creates a new block file (mode 0600), with `O_DIRECT` when `direct` and the
    /// filesystem accepts it; says which it got.
    fn create(&self, path: &Path, direct: bool) -> std::io::Result<(File, bool)> {
        let open = |flags: i32| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(flags)
                .open(path)
        };
        if direct {
            match open(nix::libc::O_DIRECT) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    self.direct.store(false, Ordering::Relaxed)
                }
                r => return r.map(|f| (f, true)),
            }
        }
        open(0).map(|f| (f, false))
    }
}

/// Alignment of buffers, offsets and lengths for `O_DIRECT` (the largest logical
/// block size Linux devices use).
const DIRECT_ALIGN: usize = 4096;

thread_local! {
    /// A block-sized, page-aligned staging buffer per thread for `O_DIRECT` writes
    /// of unaligned data.
    static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes `bytes` at the start of `file`. A file opened with `O_DIRECT` (`direct`) needs an
/// aligned source: an unaligned one is copied through this thread's staging buffer
/// (one memcpy that stays in the CPU's cache, against the page cache's copy plus
/// writeback). If the filesystem refuses the direct write after all (`EINVAL`),
/// `O_DIRECT` is dropped from the file and the write is made through the cache.
fn write_block(file: &File, direct: bool, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if direct && !bytes.is_empty() {
        // Allocated first, so the direct write below does not extend the file:
        // ext4 makes an extending direct write wait on its journal (orphan list
        // and size update) each time.
        nix::fcntl::fallocate(
            file,
            nix::fcntl::FallocateFlags::empty(),
            0,
            bytes.len() as i64,
        )?;
    }
    let r = if !direct || bytes.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
        file.write_all_at(bytes, 0)
    } else {
        STAGING.with_borrow_mut(|staging| {
            // Over-allocated by one alignment unit so an aligned window of
            // `bytes.len()` always fits; `align_offset` finds it without `unsafe`.
            if staging.len() < bytes.len() + DIRECT_ALIGN {
                *staging = vec![0; bytes.len() + DIRECT_ALIGN];
            }
            let at = staging.as_ptr().align_offset(DIRECT_ALIGN);
            let window = &mut staging[at..at + bytes.len()];
            window.copy_from_slice(bytes);
            file.write_all_at(window, 0)
        })
    };
    match r {
        Err(e) if direct && e.raw_os_error() == Some(nix::libc::EINVAL) => {
            // The file's only status flag is O_DIRECT: clear it.
            nix::fcntl::fcntl(
                file,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            )?;
            file.write_all_at(bytes, 0)
        }
        r => r,
    }
}

impl BlockStore for LocalStore {
    fn put(&self, bytes: &[u8]) -> Result<Digest> {
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
        let direct =
            bytes.len().is_multiple_of(DIRECT_ALIGN) && self.direct.load(Ordering::Relaxed);
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .make_in(dir, |p| self.create(p, direct))
            .map_err(io)?;
        let (file, direct) = tmp.as_file();
        write_block(file, *direct, bytes).map_err(io)?;
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
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::SnapshotBlockCorrupt
            } else {
                ErrorKind::Internal
            };
            Error::new(
                kind,
                format!(
                    "snapshot block {digest_hex} cannot be read ({}): {e}",
                    path.display()
                ),
            )
        })?;
        if digest(&bytes) != digest_hex {
            return Err(Error::new(
                ErrorKind::SnapshotBlockCorrupt,
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
        Ok(self
            .files()
            .into_iter()
            .filter_map(|(_, name)| name.strip_suffix(".blk").map(str::to_string))
            .collect())
    }

    fn stored_len(&self, digest: &str) -> u64 {
        self.path(digest)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// `DIR/.lock`, flock(2) shared.
    fn share(&self) -> Result<BlockLock> {
        let f = self.lock_file()?;
        f.lock_shared().map_err(|e| {
            Error::io(
                format!("cannot lock {}", self.dir.join(".lock").display()),
                e,
            )
        })?;
        Ok(BlockLock::new(f))
    }

    /// `DIR/.lock`, flock(2) exclusive, without waiting.
    fn try_exclusive(&self) -> Result<Option<BlockLock>> {
        let f = self.lock_file()?;
        match f.try_lock() {
            Ok(()) => Ok(Some(BlockLock::new(f))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(
                format!("cannot lock {}", self.dir.join(".lock").display()),
                e,
            )),
        }
    }

    /// Block files under a temporary name (`.tmp-…`).
    fn remove_unfinished(&self) -> u64 {
        let mut removed = 0;
        for (path, name) in self.files() {
            if name.starts_with(".tmp-") && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::BLOCK;

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

    #[test]
    fn block_sized_puts_round_trip_from_aligned_and_unaligned_buffers() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let block = crate::crypto::random_bytes(crate::num::usize_of(BLOCK) + 1);
        // An unaligned source (staged through the aligned buffer) and, most
        // likely, differently aligned windows of a second allocation.
        let mut other = vec![0u8; crate::num::usize_of(BLOCK) + DIRECT_ALIGN];
        let at = other.as_ptr().align_offset(DIRECT_ALIGN);
        other[at..at + crate::num::usize_of(BLOCK)].copy_from_slice(&block[1..]);
        for (name, bytes) in [
            ("unaligned", &block[1..]),
            ("aligned", &other[at..at + crate::num::usize_of(BLOCK)]),
            ("short", &block[..3 * DIRECT_ALIGN]),
            ("odd length", &block[..DIRECT_ALIGN + 17]),
        ] {
            let d = s.put(bytes).unwrap();
            assert_eq!(d, digest(bytes), "{name}");
            assert_eq!(s.get(&d).unwrap(), bytes, "{name}");
            let meta = std::fs::metadata(s.path(&d).unwrap()).unwrap();
            assert_eq!(meta.len(), bytes.len() as u64, "{name}: exact length");
            assert_eq!(meta.mode() & 0o777, 0o600, "{name}: private");
        }
        // No temporary file is left behind.
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }
}
