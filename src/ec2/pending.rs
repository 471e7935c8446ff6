//! Operations in progress, recorded before they change anything, so that whatever
//! an interrupted one leaves (a process killed, a machine crashed) is finished or
//! removed by the next command that opens the region, or by `ebsim ec2 cleanup`.
//!
//! An operation takes an exclusive `flock` on `regions/<r>/pending/<id>.lock`, then
//! commits its record to `ec2.db` (table `pending`); it removes the record in the
//! same transaction that commits its result, then the lock file. The kernel drops
//! the lock when the process dies, however it dies, so "the record exists and its
//! lock can be taken" proves the operation was abandoned — no process ids or clocks
//! are trusted. Recovery holds that lock while it works, so two recovering
//! processes never act on one record.
//!
//! What recovery does (docs/DATA-ROOT.md, "Interrupted operations"):
//! - CreateVolume: removes the new image's temporary files; no volume was recorded.
//! - DeleteVolume: the image was renamed to `.vol-….img.deleting` before the record
//!   went away; if the record is still there, the image is put back.
//! - ModifyVolume (grow): the image header is the truth: if it has the new size,
//!   the record is brought up to the modification; otherwise it stays as it was.
//! - CreateSnapshot, CopySnapshot: the snapshot (state `pending`) becomes `error`
//!   with a message, and the blocks it wrote are collected once no writer runs.

use super::model::SnapshotRecord;
use super::{Ec2, store};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

/// What a pending operation is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation")]
pub enum PendingOp {
    CreateVolume {
        volume_id: String,
    },
    DeleteVolume {
        volume_id: String,
    },
    ModifyVolume {
        volume_id: String,
        original_size: u64,
        target_size: u64,
        volume_type: String,
        iops: Option<u32>,
        throughput: Option<u32>,
    },
    CreateSnapshot {
        snapshot_id: String,
    },
    CopySnapshot {
        snapshot_id: String,
    },
}

impl PendingOp {
    /// The volume or snapshot the operation concerns.
    pub fn resource_id(&self) -> &str {
        match self {
            PendingOp::CreateVolume { volume_id }
            | PendingOp::DeleteVolume { volume_id }
            | PendingOp::ModifyVolume { volume_id, .. } => volume_id,
            PendingOp::CreateSnapshot { snapshot_id } | PendingOp::CopySnapshot { snapshot_id } => {
                snapshot_id
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            PendingOp::CreateVolume { .. } => "CreateVolume",
            PendingOp::DeleteVolume { .. } => "DeleteVolume",
            PendingOp::ModifyVolume { .. } => "ModifyVolume",
            PendingOp::CreateSnapshot { .. } => "CreateSnapshot",
            PendingOp::CopySnapshot { .. } => "CopySnapshot",
        }
    }
}

/// One row of the `pending` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    pub id: String,
    /// The process that started it (for messages only; liveness is the lock).
    pub pid: u32,
    pub started: Timestamp,
    #[serde(flatten)]
    pub op: PendingOp,
}

/// A running operation: holds its lock until [`Ec2::finish`] or drop. Dropped
/// without finishing (an error path that did not clean up, a panic), it leaves the
/// record for recovery.
pub(crate) struct Pending {
    id: String,
    lock_path: PathBuf,
    _lock: File,
}

/// What one recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Recovered {
    /// Operations found abandoned and settled (e.g. `CreateSnapshot snap-… (process 123)`).
    pub abandoned_operations: Vec<String>,
    /// Temporary files removed.
    pub removed_files: Vec<String>,
    /// Images put back by an interrupted DeleteVolume.
    pub restored_images: Vec<String>,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.abandoned_operations.is_empty()
            && self.removed_files.is_empty()
            && self.restored_images.is_empty()
    }
}

fn open_lock(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

/// True if `f` is still the file at `path`. A lock is only worth something on
/// the file that has the name: a recovery may remove a lock file it holds (its
/// operation is gone) just after another process opened it and before that
/// process locked it; that process must then start again on a new file.
fn still_named(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Waits for, and holds, the lock of a new operation at `path`.
fn take(path: &Path) -> Result<File> {
    loop {
        let f = open_lock(path)?;
        f.lock()
            .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        if still_named(&f, path) {
            return Ok(f);
        }
    }
}

/// Tries to take the lock of a pending record: Some(file) if its owner is gone.
/// None while the owner holds it (or the file was replaced meanwhile: another
/// process is looking at it too).
fn try_take(path: &Path) -> Result<Option<File>> {
    let f = open_lock(path)?;
    match f.try_lock() {
        Ok(()) if still_named(&f, path) => Ok(Some(f)),
        Ok(()) | Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("cannot lock {}", path.display()), e))
        }
    }
}

/// Files older than this, under a temporary name of ebsim's and with no pending
/// record, are debris of an ebsim that predates pending records.
pub(crate) const TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

fn older_than(meta: &std::fs::Metadata, age: std::time::Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a > age)
}

impl Ec2 {
    fn pending_dir(&self) -> Result<PathBuf> {
        let d = self.base_dir()?.join("pending");
        crate::fsutil::ensure_private_dir(&d)?;
        Ok(d)
    }

    /// Records that `op` starts: its lock first, then its record (with whatever
    /// `also` writes in the same transaction, e.g. a `pending` snapshot).
    pub(crate) fn begin(
        &self,
        op: PendingOp,
        also: impl FnOnce(&mut store::Tx<'_>) -> Result<()>,
    ) -> Result<Pending> {
        let id = format!(
            "{}-{}",
            op.resource_id(),
            super::new_id("op").trim_start_matches("op-")
        );
        let lock_path = self.pending_dir()?.join(format!("{id}.lock"));
        let lock = take(&lock_path)?;
        let rec = PendingRecord {
            id: id.clone(),
            pid: std::process::id(),
            started: self.kms.clock().now(),
            op,
        };
        let written = self.write(|tx| {
            tx.put_pending(&rec)?;
            also(tx)
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&lock_path);
            return Err(e);
        }
        Ok(Pending {
            id,
            lock_path,
            _lock: lock,
        })
    }

    /// Ends `p`: `f` commits the operation's result in the transaction that removes
    /// its record. On failure the record stays (and is recovered later).
    pub(crate) fn finish<T>(
        &self,
        p: Pending,
        f: impl FnOnce(&mut store::Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.finish_or_keep(p, f).map_err(|(_, e)| e)
    }

    /// Like [`Ec2::finish`], but hands the operation back when the transaction
    /// fails, so the caller can undo it.
    pub(crate) fn finish_or_keep<T>(
        &self,
        p: Pending,
        f: impl FnOnce(&mut store::Tx<'_>) -> Result<T>,
    ) -> std::result::Result<T, (Pending, Error)> {
        let written = self.write(|tx| {
            let out = f(tx)?;
            tx.delete_pending(&p.id)?;
            Ok(out)
        });
        match written {
            Ok(out) => {
                let _ = std::fs::remove_file(&p.lock_path);
                Ok(out)
            }
            Err(e) => Err((p, e)),
        }
    }

    /// The resources some live operation is working on right now.
    pub(crate) fn live_resources(&self) -> Result<std::collections::HashSet<String>> {
        let dir = self.pending_dir()?;
        let mut out = std::collections::HashSet::new();
        for rec in self.store.lock().expect("ec2 store").pending()? {
            if try_take(&dir.join(format!("{}.lock", rec.id)))?.is_none() {
                out.insert(rec.op.resource_id().to_string());
            }
        }
        Ok(out)
    }

    /// Settles every abandoned operation and removes the temporary files of this
    /// region's volumes that nothing live owns. Runs when the region's volume
    /// service opens, and from `ebsim ec2 cleanup`.
    pub(crate) fn recover(&self) -> Result<Recovered> {
        let mut done = Recovered::default();
        let dir = self.pending_dir()?;
        let records = self.store.lock().expect("ec2 store").pending()?;
        let mut abandoned_resources = std::collections::HashSet::new();
        let mut live = std::collections::HashSet::new();
        let mut snapshots_abandoned = false;
        for rec in records {
            let lock_path = dir.join(format!("{}.lock", rec.id));
            let Some(_held) = try_take(&lock_path)? else {
                live.insert(rec.op.resource_id().to_string());
                continue;
            };
            // Re-read under the lock: the owner may have finished in between.
            let still = self
                .store
                .lock()
                .expect("ec2 store")
                .pending()?
                .into_iter()
                .any(|r| r.id == rec.id);
            if still {
                self.settle(&rec, &mut done)?;
                abandoned_resources.insert(rec.op.resource_id().to_string());
                snapshots_abandoned |= matches!(
                    rec.op,
                    PendingOp::CreateSnapshot { .. } | PendingOp::CopySnapshot { .. }
                );
                done.abandoned_operations.push(format!(
                    "{} {} (process {}, started {})",
                    rec.op.name(),
                    rec.op.resource_id(),
                    rec.pid,
                    crate::clock::iso8601(&rec.started)
                ));
            }
            let _ = std::fs::remove_file(&lock_path);
        }
        // Lock files without a record: their owner finished (it removes the record,
        // then the file), died between taking the lock and recording itself, or has
        // not recorded itself yet. Only a file this process holds locked, and whose
        // record is still absent once it holds it, is removed; an owner that had
        // opened it but not locked it yet notices (`take`) and starts again.
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".lock") else {
                continue;
            };
            if let Some(_held) = try_take(&e.path())? {
                let recorded = self
                    .store
                    .lock()
                    .expect("ec2 store")
                    .pending()?
                    .iter()
                    .any(|r| r.id == id);
                if !recorded {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        self.sweep_volume_dir(&live, &abandoned_resources, &mut done)?;
        if snapshots_abandoned {
            self.request_block_collection()?;
        }
        Ok(done)
    }

    /// Puts right what the abandoned operation `rec` left. The caller holds its lock.
    fn settle(&self, rec: &PendingRecord, done: &mut Recovered) -> Result<()> {
        match &rec.op {
            PendingOp::CreateVolume { volume_id } => {
                // The record of the volume is written in the transaction that
                // renames its image into place, and that transaction also removes
                // this pending record: so no volume was recorded.
                for p in self.creation_files(volume_id) {
                    remove(&p, done)?;
                }
                self.write(|tx| tx.delete_pending(&rec.id))
            }
            PendingOp::DeleteVolume { volume_id } => {
                let image = self.image_path(volume_id);
                let tomb = self.tombstone_path(volume_id);
                self.write(|tx| {
                    if tx.volume(volume_id)?.is_some() && tomb.exists() && !image.exists() {
                        std::fs::rename(&tomb, &image).map_err(|e| {
                            Error::io(format!("cannot restore {}", image.display()), e)
                        })?;
                        crate::fsutil::fsync_dir(&self.dir)?;
                        done.restored_images.push(image.display().to_string());
                    }
                    tx.delete_pending(&rec.id)
                })
            }
            PendingOp::ModifyVolume {
                volume_id,
                original_size,
                target_size,
                volume_type,
                iops,
                throughput,
            } => {
                let header_size = newest_header_size(&self.image_path(volume_id));
                self.write(|tx| {
                    if let Some(mut v) = tx.volume(volume_id)?
                        && header_size == Some(*target_size)
                        && v.size_bytes == *original_size
                    {
                        v.size_bytes = *target_size;
                        v.volume_type = volume_type.clone();
                        v.iops = *iops;
                        v.throughput = *throughput;
                        tx.put_volume(&v)?;
                    }
                    tx.delete_pending(&rec.id)
                })
            }
            PendingOp::CreateSnapshot { snapshot_id } | PendingOp::CopySnapshot { snapshot_id } => {
                let message = format!(
                    "{} was interrupted: the process creating it ({}) stopped before it completed",
                    rec.op.name(),
                    rec.pid
                );
                self.write(|tx| {
                    if let Some(mut s) = tx.snapshot(snapshot_id)?
                        && s.state == "pending"
                    {
                        mark_error(&mut s, &message);
                        tx.put_snapshot(&s)?;
                    }
                    tx.delete_pending(&rec.id)
                })
            }
        }
    }

    /// The temporary files a CreateVolume of `volume_id` makes.
    pub(crate) fn creation_files(&self, volume_id: &str) -> [PathBuf; 2] {
        let tmp = self.creating_path(volume_id);
        let cbt = crate::volume::cbt::Cbt::path_for(&tmp);
        [tmp, cbt]
    }

    pub(crate) fn creating_path(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!(".{volume_id}.img.creating"))
    }

    pub(crate) fn tombstone_path(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!(".{volume_id}.img.deleting"))
    }

    /// Removes temporary names in `volumes/` that nothing live owns. Images
    /// (`vol-….img`) are never removed here, whatever the store says: only a file
    /// under ebsim's own temporary name, whose operation is proven abandoned (or,
    /// without a record, older than [`TEMP_AGE`]), is.
    fn sweep_volume_dir(
        &self,
        live: &std::collections::HashSet<String>,
        abandoned: &std::collections::HashSet<String>,
        done: &mut Recovered,
    ) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("cannot list {}", self.dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            let old = older_than(&meta, TEMP_AGE);
            // `.vol-X.img.creating`, its tracking file `.vol-X.img.cbt`, and the
            // tombstone `.vol-X.img.deleting`.
            let temp_of = name
                .strip_prefix('.')
                .and_then(|n| {
                    n.strip_suffix(".img.creating")
                        .or_else(|| n.strip_suffix(".img.cbt"))
                        .or_else(|| n.strip_suffix(".img.deleting"))
                })
                .filter(|id| id.starts_with("vol-"));
            if let Some(id) = temp_of {
                if live.contains(id) {
                    continue;
                }
                if name.ends_with(".deleting") {
                    // A DeleteVolume holds the image's lock from before the rename
                    // until after its commit: a tombstone whose lock is free is
                    // settled by what the store says.
                    let Ok(f) = File::open(entry.path()) else {
                        continue;
                    };
                    if f.try_lock().is_err() {
                        continue;
                    }
                    let recorded = self.store.lock().expect("ec2 store").volume(id)?.is_some();
                    let image = self.image_path(id);
                    if recorded && !image.exists() {
                        std::fs::rename(entry.path(), &image).map_err(|e| {
                            Error::io(format!("cannot restore {}", image.display()), e)
                        })?;
                        crate::fsutil::fsync_dir(&self.dir)?;
                        done.restored_images.push(image.display().to_string());
                        continue;
                    }
                    if recorded {
                        // Both exist: keep both and let a person look.
                        continue;
                    }
                } else if !(abandoned.contains(id) || old) {
                    continue;
                }
                remove(&entry.path(), done)?;
            } else if name.starts_with(".tmp-") && old {
                // An atomic write (tracking file) that never reached its rename.
                remove(&entry.path(), done)?;
            }
        }
        Ok(())
    }
}

fn remove(p: &Path, done: &mut Recovered) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => {
            done.removed_files.push(p.display().to_string());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", p.display()), e)),
    }
}

/// A snapshot that will never complete: `error`, with why, and no blocks.
pub(crate) fn mark_error(s: &mut SnapshotRecord, message: &str) {
    s.state = "error".into();
    s.state_message = Some(message.to_string());
    s.blocks.clear();
}

/// The size in the newest header copy that parses (sequence order), without the
/// key: recovery only has to choose between the size before and after a grow, and
/// both are values the owner of the volume asked for.
fn newest_header_size(image: &Path) -> Option<u64> {
    let copies = crate::volume::image::read_copies(image).ok()?;
    copies
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .max_by_key(|p| p.header.sequence)
        .map(|p| p.header.size)
}

/// What `ebsim ec2 cleanup` did and found.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cleanup {
    #[serde(flatten)]
    pub recovered: Recovered,
    /// Unreferenced snapshot blocks removed, and their bytes.
    pub collected_blocks: u64,
    pub collected_bytes: u64,
    /// `done`, or why the collection waits (another operation uses the blocks).
    pub block_collection: String,
    /// Images no volume record names: never removed by ebsim (they may be the
    /// only copy of a volume whose record was lost); listed for a person to judge.
    pub unrecorded_images: Vec<String>,
}

impl Ec2 {
    /// Settles interrupted operations (as opening the region does), collects
    /// unreferenced snapshot blocks, removes old temporary files of the data root
    /// and the region, and lists images without a record.
    ///
    /// An ebsim extension, authorized as `ec2:Cleanup` on `*` and recorded as
    /// `Cleanup`.
    pub fn cleanup(&self, caller: &crate::kms::access::Caller) -> Result<Cleanup> {
        self.cleanup_with(caller, false)
    }

    /// [`Ec2::cleanup`] with EC2's DryRun.
    pub fn cleanup_with(&self, caller: &crate::kms::access::Caller, dry: bool) -> Result<Cleanup> {
        self.call(
            caller,
            "Cleanup",
            serde_json::json!({}),
            |_| {
                self.authorize(caller, "ec2:Cleanup", &[super::authz::Target::any()])?;
                super::dry_run(dry)?;
                self.cleanup_op()
            },
            |c| {
                serde_json::json!({
                    "abandonedOperations": c.recovered.abandoned_operations.len(),
                    "removedFiles": c.recovered.removed_files.len(),
                    "collectedBlocks": c.collected_blocks,
                    "collectedBytes": c.collected_bytes,
                    "unrecordedImages": c.unrecorded_images.len(),
                })
            },
        )
    }

    fn cleanup_op(&self) -> Result<Cleanup> {
        let mut out = Cleanup {
            recovered: self.recovered.clone(),
            ..Default::default()
        };
        let again = self.recover()?;
        out.recovered
            .abandoned_operations
            .extend(again.abandoned_operations);
        out.recovered.removed_files.extend(again.removed_files);
        out.recovered.restored_images.extend(again.restored_images);
        match self.collect_blocks()? {
            Some(c) => {
                out.collected_blocks = c.blocks;
                out.collected_bytes = c.bytes;
                out.block_collection = "done".into();
                for _ in 0..c.temporary_files {
                    out.recovered
                        .removed_files
                        .push("a snapshot block under a temporary name".into());
                }
            }
            None => {
                out.block_collection =
                    "deferred: a snapshot, copy or restore is using the blocks; the next command collects them"
                        .into()
            }
        }
        // Atomic writes and store creations that never reached their rename.
        let region_dir = self.root.region_dir(self.region())?;
        let mut dirs = vec![self.root.path().to_path_buf(), region_dir.clone()];
        if self.base_dir()? != region_dir {
            dirs.push(self.base_dir()?);
        }
        for dir in dirs {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let temp = name.starts_with(".tmp-") || name.starts_with(".root.key-");
                if temp
                    && e.metadata()
                        .is_ok_and(|m| m.is_file() && older_than(&m, TEMP_AGE))
                {
                    remove(&e.path(), &mut out.recovered)?;
                }
            }
        }
        // Control sockets of attachment processes that are gone.
        for path in self.host().clear_stale_sockets(&|id| self.attached_now(id)) {
            out.recovered.removed_files.push(path.display().to_string());
        }
        let known: std::collections::HashSet<String> = self
            .store
            .lock()
            .expect("ec2 store")
            .volumes()?
            .into_iter()
            .map(|v| v.volume_id)
            .collect();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".img")
                && id.starts_with("vol-")
                && !known.contains(id)
            {
                out.unrecorded_images.push(e.path().display().to_string());
            }
        }
        Ok(out)
    }
}
