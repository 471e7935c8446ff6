//! The snapshot engine: taking a snapshot of an image, restoring one into an
//! image, copying one's blocks (under another data key if asked), and collecting
//! blocks no manifest names. It works over an injected [`BlockStore`] and
//! [`ManifestStore`]; it knows nothing of KMS, records or pending operations,
//! which the owning service (`crate::ec2`) keeps around each call.
//!
//! Locks: [`restore`] and [`collect`] take the store's lock themselves (shared,
//! exclusive). [`take`] and [`copy`] write blocks that only a manifest the caller
//! commits afterwards will name, so the caller holds the shared lock
//! ([`BlockStore::share`]) from before the call until that commit.

use super::{BLOCK, BlockStore, Digest, Manifest, ManifestStore, Progress, io_pool};
use crate::crypto::xts::Xts;
use crate::error::Result;
use crate::num::usize_of;
use crate::volume::image::Image;
use crate::volume::{DATA_UNIT, units};
use rayon::prelude::*;
use std::collections::HashSet;

/// What a snapshot is incremental to: the manifest of the snapshot the image's
/// change tracking counts from, and the blocks changed since.
#[derive(Debug, Clone, Copy)]
pub struct Base<'a> {
    pub manifest: &'a Manifest,
    pub changed: &'a [u64],
}

/// Stores the blocks of `image` that a new snapshot needs and returns its
/// manifest: with a `base`, its manifest updated with the changed blocks; without
/// one, every allocated block (a full snapshot). Blocks that read as zeros are
/// holes, not stored; blocks past the image's end are dropped.
///
/// For a crash-consistent cut the caller holds the image's writes
/// ([`Image::hold_writes`]); it holds the store's shared lock until the manifest
/// is committed.
pub fn take(
    blocks: &dyn BlockStore,
    image: &Image,
    base: Option<Base<'_>>,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let size = image.size();
    let (mut manifest, todo): (Manifest, Vec<u64>) = match base {
        Some(b) => (b.manifest.clone(), b.changed.to_vec()),
        None => {
            let mut all = Vec::new();
            for e in image.allocation(0, size)?.iter().filter(|e| e.allocated) {
                all.extend(e.offset / BLOCK..(e.offset + e.length).div_ceil(BLOCK));
            }
            all.dedup();
            (Manifest::new(), all)
        }
    };
    progress.start(todo.len() as u64);
    let stored: Vec<(u64, Option<Digest>)> = io_pool().install(|| {
        todo.par_iter()
            .map(|&b| -> Result<(u64, Option<Digest>)> {
                progress.step()?;
                let len = usize_of(BLOCK.min(size - b * BLOCK));
                let mut buf = vec![0u8; len];
                image.read_stored(b * BLOCK, &mut buf)?;
                if units::is_zero(&buf) {
                    Ok((b, None))
                } else {
                    Ok((b, Some(blocks.put(&buf)?)))
                }
            })
            .collect::<Result<_>>()
    })?;
    for (b, d) in stored {
        match d {
            Some(d) => manifest.insert(b, d),
            None => manifest.remove(&b),
        };
    }
    manifest.retain(|b, _| b * BLOCK < size);
    Ok(manifest)
}

/// How a restore writes a snapshot's blocks into the new image.
#[derive(Clone, Copy)]
pub enum Fill<'a> {
    /// The blocks are the image's stored bytes already (the same data key, or
    /// both unencrypted): written as they are.
    Stored,
    /// The blocks are decrypted with `source` (None: the snapshot is
    /// unencrypted) and written through the image, which encrypts them under its
    /// own data key. Units of zeros stay holes.
    Plain { source: Option<&'a Xts> },
}

/// Fills `image` from completed snapshot `snapshot_id` (its manifest read from
/// `manifests` under the store's shared lock, so no collector removes a block
/// of a snapshot deleted meanwhile). Blocks are read and checked in parallel;
/// memory is bounded by one block per worker. The image is flushed at the end.
pub fn restore(
    blocks: &dyn BlockStore,
    manifests: &dyn ManifestStore,
    snapshot_id: &str,
    image: &Image,
    fill: Fill<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    let _reading = blocks.share()?;
    let manifest = manifests.manifest(snapshot_id)?;
    let items: Vec<(u64, Digest)> = manifest.into_iter().collect();
    progress.start(items.len() as u64);
    items.par_iter().try_for_each(|(b, digest)| -> Result<()> {
        progress.step()?;
        let mut bytes = blocks
            .get(digest)
            .map_err(|e| e.context(format!("{snapshot_id} block {b}")))?;
        let offset = b * BLOCK;
        match fill {
            Fill::Stored => image.write_stored(offset, &bytes),
            Fill::Plain { source } => {
                if let Some(x) = source {
                    units::decrypt(x, offset / DATA_UNIT, &mut bytes);
                }
                write_plain_runs(image, offset, &bytes)
            }
        }
    })?;
    image.flush()
}

/// Writes the non-zero units of plaintext `buf` at `offset` (zeros stay holes).
fn write_plain_runs(image: &Image, offset: u64, buf: &[u8]) -> Result<()> {
    let u = units::UNIT;
    let mut at = 0;
    while let Some(r) = units::next_run(buf, at) {
        image.write(
            offset + (r.start * u) as u64,
            &buf[r.start * u..r.end * u],
            false,
        )?;
        at = r.end;
    }
    Ok(())
}

/// How a copy changes each block's units on the way.
#[derive(Clone, Copy, Default)]
pub struct Recode<'a> {
    /// The source snapshot's data key (None: its blocks are plaintext).
    pub decrypt: Option<&'a Xts>,
    /// The copy's data key (None: the copy is unencrypted).
    pub encrypt: Option<&'a Xts>,
}

/// Copies the blocks `manifest` names (snapshot `source_id`'s) from `source` into
/// `dest`, decrypting and re-encrypting each under `recode` (a unit whose
/// plaintext is zeros becomes a hole), and returns the copy's manifest. Runs on
/// [`io_pool`]. The caller holds both stores shared until the copy's manifest is
/// committed.
pub fn copy(
    source: &dyn BlockStore,
    dest: &dyn BlockStore,
    source_id: &str,
    manifest: &Manifest,
    recode: Recode<'_>,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let items: Vec<(u64, &Digest)> = manifest.iter().map(|(b, d)| (*b, d)).collect();
    progress.start(items.len() as u64);
    io_pool().install(|| {
        items
            .par_iter()
            .map(|&(b, d)| -> Result<(u64, Digest)> {
                progress.step()?;
                let mut bytes = source
                    .get(d)
                    .map_err(|e| e.context(format!("{source_id} block {b}")))?;
                let first_unit = b * BLOCK / DATA_UNIT;
                if let Some(x) = recode.decrypt {
                    units::decrypt(x, first_unit, &mut bytes);
                }
                if let Some(x) = recode.encrypt {
                    units::encrypt(x, first_unit, &mut bytes);
                }
                Ok((b, dest.put(&bytes)?))
            })
            .collect::<Result<Manifest>>()
    })
}

/// What a collection of unreferenced snapshot blocks removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Collected {
    pub blocks: u64,
    pub bytes: u64,
    pub temporary_files: u64,
}

/// Removes every stored block no completed snapshot's manifest names, and what
/// unfinished puts left, holding the store's exclusive lock so no snapshot, copy
/// or restore runs meanwhile; `settle` runs last, still under the lock (the
/// service clears its request for a collection). When an operation holds the
/// store, nothing is removed and None is returned.
pub fn collect(
    blocks: &dyn BlockStore,
    manifests: &dyn ManifestStore,
    settle: impl FnOnce() -> Result<()>,
) -> Result<Option<Collected>> {
    let Some(_exclusive) = blocks.try_exclusive()? else {
        return Ok(None);
    };
    // Under the lock no operation writes blocks, and the manifest store says
    // which snapshots name blocks: completed ones (a pending CreateSnapshot or
    // copy belongs to a process that died before its manifest was committed),
    // and, for EC2, those being written through the EBS direct APIs.
    let used: HashSet<Digest> = manifests.referenced()?;
    let mut out = Collected::default();
    for d in blocks.list()? {
        if !used.contains(&d) {
            out.bytes += blocks.stored_len(&d);
            blocks.delete(&d)?;
            out.blocks += 1;
        }
    }
    out.temporary_files = blocks.remove_unfinished();
    settle()?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret::SecretBytes;
    use crate::snapshot::{LocalStore, MemoryManifests};
    use crate::volume::header::{Cipher, Header, ZERO_UNIT_IS_HOLE};
    use crate::volume::image;
    use std::sync::atomic::{AtomicU64, Ordering};

    const VOL: &str = "vol-0123456789abcdef0";
    const SIZE: u64 = 4 * BLOCK;

    /// Counts steps; fails once `stop_after` steps were taken.
    #[derive(Default)]
    struct Steps {
        total: AtomicU64,
        done: AtomicU64,
        stop_after: Option<u64>,
    }

    impl Progress for Steps {
        fn start(&self, total: u64) {
            self.total.store(total, Ordering::Relaxed);
        }

        fn step(&self) -> Result<()> {
            let n = self.done.fetch_add(1, Ordering::Relaxed);
            match self.stop_after {
                Some(max) if n >= max => Err(crate::error::Error::new(
                    crate::error::ErrorKind::Interrupted,
                    "cancelled",
                )),
                _ => Ok(()),
            }
        }
    }

    fn new_image(dir: &std::path::Path, name: &str, key: Option<&SecretBytes>) -> Image {
        let h = Header {
            sequence: 1,
            incompat_features: ZERO_UNIT_IS_HOLE,
            compat_features: 0,
            size: SIZE,
            cipher: if key.is_some() {
                Cipher::AesXtsPlain64
            } else {
                Cipher::None
            },
            created_ms: 0,
            volume_id: VOL.into(),
            region: "us-east-1".into(),
            kms_key_arn: if key.is_some() {
                "arn:aws:kms:us-east-1:111122223333:key/k".into()
            } else {
                String::new()
            },
            encryption_context: if key.is_some() {
                Header::volume_context(VOL)
            } else {
                String::new()
            },
            source_snapshot_id: String::new(),
            wrapped_key: if key.is_some() { vec![1; 100] } else { vec![] },
            rekey: None,
        };
        let path = dir.join(name);
        image::create_file(&path, &h, key).unwrap();
        Image::open(&path, VOL, &mut |_h: &Header| {
            Ok(key.expect("encrypted").duplicate())
        })
        .unwrap()
    }

    fn contents(img: &Image) -> Vec<u8> {
        let mut buf = vec![0u8; usize_of(SIZE)];
        img.read(0, &mut buf).unwrap();
        buf
    }

    #[test]
    fn take_restore_and_copy_round_trip_across_data_keys() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = LocalStore::open(&dir.path().join("blocks")).unwrap();
        let manifests = MemoryManifests::default();
        let key = SecretBytes::random(64);
        let src = new_image(dir.path(), "src.img", Some(&key));
        // Block 0 and 2 carry data (2 only its last unit); 1 and 3 are holes.
        src.write(100, b"first block", false).unwrap();
        src.write(3 * BLOCK - 10, b"end of 2", false).unwrap();
        let want = contents(&src);

        let steps = Steps::default();
        let full = take(&blocks, &src, None, &steps).unwrap();
        assert_eq!(full.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(steps.total.load(Ordering::Relaxed), 2);
        manifests.put("snap-1", full.clone());

        // Incremental: block 1 written, block 2 zeroed; the base's block 0 kept.
        src.write(BLOCK, b"second", false).unwrap();
        src.write_zeroes(2 * BLOCK, BLOCK, true).unwrap();
        let base = Base {
            manifest: &full,
            changed: &[1, 2],
        };
        let next = take(&blocks, &src, Some(base), &Steps::default()).unwrap();
        assert_eq!(next.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(next[&0], full[&0]);

        // The same data key: stored bytes as they are.
        let same = new_image(dir.path(), "same.img", Some(&key));
        restore(
            &blocks,
            &manifests,
            "snap-1",
            &same,
            Fill::Stored,
            &Steps::default(),
        )
        .unwrap();
        assert_eq!(contents(&same), want);

        // Another data key: decrypted with the snapshot's, written as plaintext.
        let old_xts = Xts::new(key.expose()).unwrap();
        let other_key = SecretBytes::random(64);
        let other = new_image(dir.path(), "other.img", Some(&other_key));
        let fill = Fill::Plain {
            source: Some(&old_xts),
        };
        restore(
            &blocks,
            &manifests,
            "snap-1",
            &other,
            fill,
            &Steps::default(),
        )
        .unwrap();
        assert_eq!(contents(&other), want);

        // A copy under a third key restores to the same bytes.
        let copy_key = SecretBytes::random(64);
        let copy_xts = Xts::new(copy_key.expose()).unwrap();
        let recode = Recode {
            decrypt: Some(&old_xts),
            encrypt: Some(&copy_xts),
        };
        let copied = copy(&blocks, &blocks, "snap-1", &full, recode, &Steps::default()).unwrap();
        assert_eq!(copied.len(), full.len());
        assert_ne!(copied[&0], full[&0], "re-encrypted");
        manifests.put("snap-2", copied);
        let from_copy = new_image(dir.path(), "copy.img", Some(&copy_key));
        restore(
            &blocks,
            &manifests,
            "snap-2",
            &from_copy,
            Fill::Stored,
            &Steps::default(),
        )
        .unwrap();
        assert_eq!(contents(&from_copy), want);

        // An unknown snapshot is the manifest store's error.
        let e = restore(
            &blocks,
            &manifests,
            "snap-9",
            &from_copy,
            Fill::Stored,
            &Steps::default(),
        )
        .unwrap_err();
        assert!(e.message().contains("snap-9"), "{e}");
    }

    #[test]
    fn a_cancelled_take_stops_and_collect_keeps_only_named_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = LocalStore::open(&dir.path().join("blocks")).unwrap();
        let manifests = MemoryManifests::default();
        let img = new_image(dir.path(), "plain.img", None);
        for b in 0..4 {
            img.write(b * BLOCK, &[u8::try_from(b + 1).unwrap(); 10], false)
                .unwrap();
        }
        let stop = Steps {
            stop_after: Some(0),
            ..Default::default()
        };
        let e = take(&blocks, &img, None, &stop).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Interrupted);

        let kept = take(&blocks, &img, None, &Steps::default()).unwrap();
        assert_eq!(kept.len(), 4);
        manifests.put(
            "snap-1",
            kept.iter().take(2).map(|(b, d)| (*b, d.clone())).collect(),
        );
        // A shared holder defers the collection.
        let held = blocks.share().unwrap();
        assert_eq!(collect(&blocks, &manifests, || Ok(())).unwrap(), None);
        drop(held);
        let mut settled = false;
        let c = collect(&blocks, &manifests, || {
            settled = true;
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert!(settled);
        assert_eq!(c.blocks, 2);
        assert!(c.bytes > 0);
        let mut left = blocks.list().unwrap();
        left.sort();
        let mut named: Vec<_> = manifests.referenced().unwrap().into_iter().collect();
        named.sort();
        assert_eq!(left, named);
    }
}
