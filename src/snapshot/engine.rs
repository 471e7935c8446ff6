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
                let len = BLOCK.min(size - b * BLOCK) as usize;
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
    // Under the lock no operation writes blocks, and only completed snapshots
    // name blocks: a pending one belongs to a process that died before its
    // manifest was committed.
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
