//! Changed-block tracking (docs/FORMAT.md §8): which 512 KiB blocks of a volume
//! were written since its last snapshot, so an incremental snapshot copies only
//! those, without rereading the volume.
//!
//! `vol-….cbt`, beside the image (0600):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `EBSIMCBT` |
//! | 8 | 4 | version = 1 |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | number of 512 KiB blocks tracked |
//! | 24 | 1 | length of the base snapshot id (0: none) |
//! | 25 | 39 | base snapshot id, zero padded |
//! | 64 | ⌈blocks/8⌉ | bitmap, bit `b % 8` of byte `b / 8` set = block `b` changed |
//!
//! A bit is made durable *before* the write it covers reaches the image, so a
//! crash can only leave a block marked that did not change (copied once more),
//! never a changed block unmarked. Without a readable file the next snapshot is
//! full.

use crate::error::{Error, Result};
use crate::num::usize_of;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bytes per tracked block: EBS's snapshot block size.
pub const BLOCK: u64 = 512 * 1024;
const MAGIC: &[u8; 8] = b"EBSIMCBT";
const HEADER: u64 = 64;

/// What tracking says at the moment of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The snapshot the changes are relative to (None: everything counts as changed).
    pub base: Option<String>,
    /// Indices of the 512 KiB blocks written since `base`.
    pub blocks: Vec<u64>,
}

struct State {
    file: File,
    base: Option<String>,
    bits: Vec<u8>,
    blocks: u64,
}

/// The open tracking file of one volume.
pub struct Cbt {
    path: PathBuf,
    state: Mutex<Option<State>>,
}

fn encode(base: Option<&str>, blocks: u64, bits: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; usize_of(HEADER)];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    out[16..24].copy_from_slice(&blocks.to_le_bytes());
    if let Some(b) = base {
        let b = &b.as_bytes()[..b.len().min(39)];
        out[24] = u8::try_from(b.len()).expect("at most 39 bytes");
        out[25..25 + b.len()].copy_from_slice(b);
    }
    out.extend_from_slice(bits);
    out
}

impl Cbt {
    /// The tracking file that belongs to `image`.
    pub fn path_for(image: &Path) -> PathBuf {
        image.with_extension("cbt")
    }

    /// Opens the tracking of an image of `size` bytes; a missing or unreadable file
    /// means "no base" (the next snapshot is full), and tracking restarts.
    pub fn open(image: &Path, size: u64) -> Result<Cbt> {
        let path = Self::path_for(image);
        let blocks = size.div_ceil(BLOCK);
        let parsed = std::fs::read(&path).ok().and_then(|b| {
            let ok = b.len() as u64 >= HEADER
                && &b[..8] == MAGIC
                && b[8..12] == 1u32.to_le_bytes()
                && b[24] <= 39;
            if !ok {
                return None;
            }
            let n = u64::from_le_bytes(b[16..24].try_into().ok()?);
            let base = std::str::from_utf8(&b[25..25 + b[24] as usize])
                .ok()?
                .to_string();
            let bits = b
                .get(usize_of(HEADER)..usize_of(HEADER) + usize_of(n.div_ceil(8)))?
                .to_vec();
            Some(((!base.is_empty()).then_some(base), n, bits))
        });
        let cbt = Cbt {
            path,
            state: Mutex::new(None),
        };
        match parsed {
            Some((base, n, mut bits)) if n <= blocks => {
                bits.resize(usize_of(blocks.div_ceil(8)), 0);
                cbt.replace(base.as_deref(), blocks, bits)?;
            }
            _ => cbt.replace(None, blocks, vec![0; usize_of(blocks.div_ceil(8))])?,
        }
        Ok(cbt)
    }

    /// Writes a new tracking file atomically and makes it current.
    fn replace(&self, base: Option<&str>, blocks: u64, bits: Vec<u8>) -> Result<()> {
        crate::fsutil::write_atomic(&self.path, &encode(base, blocks, &bits))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| Error::io(format!("cannot open {}", self.path.display()), e))?;
        *self.state.lock().expect("cbt") = Some(State {
            file,
            base: base.map(str::to_string),
            bits,
            blocks,
        });
        Ok(())
    }

    /// Marks the blocks of `len` bytes at volume offset `offset` changed, durably,
    /// before the caller writes them.
    pub fn mark(&self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mut guard = self.state.lock().expect("cbt");
        let Some(s) = guard.as_mut() else {
            return Ok(());
        };
        let first = offset / BLOCK;
        let last = ((offset + len - 1) / BLOCK).min(s.blocks.saturating_sub(1));
        let mut dirty: Option<(usize, usize)> = None;
        for b in first..=last {
            let (byte, bit) = ((b / 8) as usize, 1u8 << (b % 8));
            if s.bits[byte] & bit == 0 {
                s.bits[byte] |= bit;
                dirty = Some(match dirty {
                    None => (byte, byte),
                    Some((lo, _)) => (lo, byte),
                });
            }
        }
        if let Some((lo, hi)) = dirty {
            s.file
                .write_all_at(&s.bits[lo..=hi], HEADER + lo as u64)
                .and_then(|()| s.file.sync_data())
                .map_err(|e| Error::io(format!("cannot update {}", self.path.display()), e))?;
        }
        Ok(())
    }

    /// The changes since the base snapshot.
    pub fn changes(&self) -> Changes {
        let guard = self.state.lock().expect("cbt");
        let s = guard.as_ref().expect("opened");
        Changes {
            base: s.base.clone(),
            blocks: (0..s.blocks)
                .filter(|b| s.bits[(b / 8) as usize] & (1 << (b % 8)) != 0)
                .collect(),
        }
    }

    /// Starts a new epoch: nothing changed since snapshot `base`.
    pub fn reset(&self, base: &str, size: u64) -> Result<()> {
        let blocks = size.div_ceil(BLOCK);
        self.replace(Some(base), blocks, vec![0; usize_of(blocks.div_ceil(8))])
    }

    /// The volume grew: the new blocks count as changed (their zeros are new data).
    pub fn grow(&self, old_size: u64, new_size: u64) -> Result<()> {
        let (base, mut bits) = {
            let g = self.state.lock().expect("cbt");
            let s = g.as_ref().expect("opened");
            (s.base.clone(), s.bits.clone())
        };
        let blocks = new_size.div_ceil(BLOCK);
        bits.resize(usize_of(blocks.div_ceil(8)), 0);
        for b in old_size / BLOCK..blocks {
            bits[(b / 8) as usize] |= 1 << (b % 8);
        }
        self.replace(base.as_deref(), blocks, bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_reopening_and_reset_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("vol-1.img");
        let size = 10 * BLOCK;
        let cbt = Cbt::open(&img, size).unwrap();
        assert_eq!(
            cbt.changes(),
            Changes {
                base: None,
                blocks: vec![]
            }
        );
        cbt.mark(BLOCK - 1, 2).unwrap();
        cbt.mark(9 * BLOCK, 10).unwrap();
        drop(cbt);
        let cbt = Cbt::open(&img, size).unwrap();
        assert_eq!(cbt.changes().blocks, vec![0, 1, 9]);
        cbt.reset("snap-0123456789abcdef0", size).unwrap();
        cbt.mark(3 * BLOCK, BLOCK + 1).unwrap();
        let again = Cbt::open(&img, size).unwrap();
        assert_eq!(
            again.changes(),
            Changes {
                base: Some("snap-0123456789abcdef0".into()),
                blocks: vec![3, 4]
            }
        );
        again.grow(size, 12 * BLOCK).unwrap();
        assert_eq!(again.changes().blocks, vec![3, 4, 10, 11]);
        std::fs::write(Cbt::path_for(&img), b"garbage").unwrap();
        assert_eq!(Cbt::open(&img, size).unwrap().changes().base, None);
    }
}
