//! EBS snapshots: CreateSnapshot (incremental through changed-block tracking),
//! DescribeSnapshots, DeleteSnapshot, CopySnapshot (same region, new key, other
//! region), ListChangedBlocks, and CreateVolume from a snapshot
//! (shared/reference/kms-ebs.md §2.1, §2.4, §2.5).
//!
//! This is the EC2 side: validation, authorization, KMS calls, records, pending
//! operations, CloudTrail. Moving blocks is `crate::snapshot`'s engine, over this
//! region's block store and the manifests kept in the snapshot records
//! ([`Manifests`]).

use super::Counter;
use super::authz::{NewSnapshot, Target, snapshot_arn};
use super::model::*;
use super::{Ec2, err, new_data_key_id, new_id, trail};
use crate::crypto::secret::SecretBytes;
use crate::crypto::xts::Xts;
use crate::error::{Error, ErrorKind, Result};
use crate::kms::access::Caller;
use crate::kms::api::{Blob, DecryptRequest, ReEncryptRequest};
use crate::snapshot::{self, Collected, Manifest, ManifestStore};
use crate::volume::image::Image;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The region's manifests, as the snapshot engine reads them: each snapshot's
/// block list is kept in its record in `ec2.db`, committed in the transaction
/// that completes the snapshot.
struct Manifests<'a>(&'a Ec2);

impl ManifestStore for Manifests<'_> {
    fn manifest(&self, snapshot_id: &str) -> Result<Manifest> {
        Ok(self.0.completed_snapshot(snapshot_id)?.blocks)
    }

    fn referenced(&self) -> Result<HashSet<String>> {
        Ok(self
            .0
            .store
            .lock()
            .expect("ec2 store")
            .snapshots()?
            .into_iter()
            // A snapshot being written through the EBS direct APIs owns the
            // blocks its committed PutSnapshotBlocks named.
            .filter(|s| s.is_completed() || (s.state == "pending" && s.direct.is_some()))
            .flat_map(|s| s.blocks.into_values())
            .collect())
    }
}

/// An operation's [`Counter`], made once the engine says how many blocks it has.
struct Report<'a, F> {
    make: F,
    counter: std::sync::OnceLock<Counter<'a>>,
}

impl<'a, F: Fn(u64) -> Counter<'a> + Sync> Report<'a, F> {
    fn new(make: F) -> Self {
        Report {
            make,
            counter: std::sync::OnceLock::new(),
        }
    }
}

impl<'a, F: Fn(u64) -> Counter<'a> + Sync> snapshot::Progress for Report<'a, F> {
    fn start(&self, total: u64) {
        let _ = self.counter.set((self.make)(total));
    }

    fn step(&self) -> Result<()> {
        self.counter.get().expect("started before any step").step()
    }
}

/// How a new volume is filled from a snapshot.
pub(super) struct RestoreSource {
    /// Same KMS key as the snapshot: the snapshot's data key, re-wrapped for the new
    /// volume (wrapped blob, key ARN, plaintext); blocks are copied as ciphertext.
    pub shared_key: Option<(Vec<u8>, String, SecretBytes)>,
    /// The snapshot's data key, when blocks must be decrypted to be re-encrypted.
    source_xts: Option<Xts>,
    /// The new volume is encrypted under a data key of its own.
    encrypt: bool,
}

pub(super) fn snapshot_not_found(id: &str) -> Error {
    err(
        ErrorKind::InvalidSnapshotNotFound,
        format!("The snapshot '{id}' does not exist."),
    )
    .with(crate::error::Field::SnapshotId, id)
}

fn check_snapshot_id(id: &str) -> Result<()> {
    let ok = id.strip_prefix("snap-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if ok {
        Ok(())
    } else {
        Err(err(
            ErrorKind::InvalidParameterValue,
            format!("Invalid id: \"{id}\" (expecting \"snap-...\")"),
        ))
    }
}

impl Ec2 {
    pub(super) fn snapshot_record(&self, id: &str) -> Result<SnapshotRecord> {
        check_snapshot_id(id)?;
        self.store
            .lock()
            .expect("ec2 store")
            .snapshot(id)?
            .ok_or_else(|| snapshot_not_found(id))
    }

    /// A snapshot that can be read: restored, copied, compared. AWS refuses one
    /// that is still `pending` or ended in `error`.
    pub(super) fn completed_snapshot(&self, id: &str) -> Result<SnapshotRecord> {
        let s = self.snapshot_record(id)?;
        if s.is_completed() {
            Ok(s)
        } else {
            Err(err(
                ErrorKind::IncorrectState,
                format!("Snapshot '{id}' is in the '{}' state.", s.state),
            ))
        }
    }

    /// Records the progress of a pending snapshot.
    pub(super) fn record_progress(&self, id: &str, pct: u32) -> Result<()> {
        self.write(|tx| {
            if let Some(mut s) = tx.snapshot(id)?
                && s.state == "pending"
            {
                s.progress = pct;
                tx.put_snapshot(&s)?;
            }
            Ok(())
        })
    }

    /// The snapshot's plaintext data key, decrypted through EC2 for the caller.
    pub(super) fn snapshot_key(&self, caller: &Caller, s: &SnapshotRecord) -> Result<SecretBytes> {
        self.kms.decrypt_locked(
            &self.via(caller),
            DecryptRequest {
                ciphertext_blob: Blob::new(s.wrapped_key.clone().unwrap_or_default()),
                encryption_context: self.context(s.key_context_id.as_deref().unwrap_or_default()),
                key_id: s.kms_key_arn.clone(),
                ..Default::default()
            },
        )
    }

    /// Every KMS call a restore needs, made before anything is written.
    pub(super) fn restore_source(
        &self,
        caller: &Caller,
        s: &SnapshotRecord,
        key_arn: Option<&str>,
        volume_id: &str,
    ) -> Result<RestoreSource> {
        let via = self.via(caller);
        match key_arn {
            Some(arn) if s.encrypted && s.kms_key_arn.as_deref() == Some(arn) => {
                // Same key: the same data key, re-wrapped for the new volume's context.
                let re = self.kms.re_encrypt(
                    &via,
                    ReEncryptRequest {
                        ciphertext_blob: Blob::new(s.wrapped_key.clone().unwrap_or_default()),
                        source_encryption_context: self
                            .context(s.key_context_id.as_deref().unwrap_or_default()),
                        source_key_id: Some(arn.to_string()),
                        destination_key_id: arn.to_string(),
                        destination_encryption_context: self.context(volume_id),
                        ..Default::default()
                    },
                )?;
                let plain = self.kms.decrypt_locked(
                    &via,
                    DecryptRequest {
                        ciphertext_blob: re.ciphertext_blob.clone(),
                        encryption_context: self.context(volume_id),
                        key_id: Some(re.key_id.clone()),
                        ..Default::default()
                    },
                )?;
                Ok(RestoreSource {
                    shared_key: Some((re.ciphertext_blob.as_slice().to_vec(), re.key_id, plain)),
                    source_xts: None,
                    encrypt: false,
                })
            }
            Some(_) => {
                let source_xts = if s.encrypted {
                    let k = self.snapshot_key(caller, s)?;
                    Some(Xts::new(k.expose()).map_err(|e| {
                        Error::new(ErrorKind::VolumeImage, format!("{}: {e}", s.snapshot_id))
                    })?)
                } else {
                    None
                };
                Ok(RestoreSource {
                    shared_key: None,
                    source_xts,
                    encrypt: true,
                })
            }
            None => Ok(RestoreSource {
                shared_key: None,
                source_xts: None,
                encrypt: false,
            }),
        }
    }

    /// Fills the new image at `path` from snapshot `s` (blocks read and checked in
    /// parallel; memory bounded by one block per worker).
    pub(super) fn restore(
        &self,
        s: &SnapshotRecord,
        src: &RestoreSource,
        path: &Path,
        volume_id: &str,
        data_key: Option<&SecretBytes>,
    ) -> Result<()> {
        let image = Image::open(path, volume_id, &mut |_h| {
            Ok(data_key
                .expect("encrypted images come with their key")
                .duplicate())
        })?;
        // The engine reads the manifest under the store's shared lock, so no
        // collector removes a block of `s` (deleted meanwhile) under it.
        let fill = if src.encrypt {
            snapshot::Fill::Plain {
                source: src.source_xts.as_ref(),
            }
        } else {
            snapshot::Fill::Stored
        };
        let report = Report::new(|total| {
            self.progress(&format!("restoring {}", s.snapshot_id), total, None)
        });
        snapshot::restore(
            &*self.blocks,
            &Manifests(self),
            &s.snapshot_id,
            &image,
            fill,
            &report,
        )?;
        // Same data key: the new volume's blocks are the snapshot's, so its next
        // snapshot can be incremental to it. Otherwise the next one is full.
        let same = src.shared_key.is_some() || (!s.encrypted && !image.is_encrypted());
        image.reset_tracking(same.then_some(s.snapshot_id.as_str()))
    }

    // ---- CreateSnapshot ---------------------------------------------------

    /// Snapshot of a detached volume (its image is opened, its header authenticated).
    pub fn create_snapshot(
        &self,
        caller: &Caller,
        volume_id: &str,
        description: &str,
        tags: Vec<Tag>,
    ) -> Result<Snapshot> {
        self.create_snapshot_via(caller, volume_id, description, tags, |_| Ok(None))
    }

    /// CreateSnapshot, authorized and recorded here; `elsewhere` is asked first
    /// whether another process takes it (the attachment process of a volume
    /// attached through FUSE or NBD holds its writes for the cut): None = take it
    /// here, which needs the volume detached.
    pub fn create_snapshot_via(
        &self,
        caller: &Caller,
        volume_id: &str,
        description: &str,
        tags: Vec<Tag>,
        elsewhere: impl FnOnce(&VolumeRecord) -> Result<Option<Snapshot>>,
    ) -> Result<Snapshot> {
        self.create_snapshot_via_with(caller, volume_id, description, tags, false, elsewhere)
    }

    /// [`Ec2::create_snapshot_via`] with EC2's DryRun: authorized, then
    /// DryRunOperation before `elsewhere` is asked.
    pub fn create_snapshot_via_with(
        &self,
        caller: &Caller,
        volume_id: &str,
        description: &str,
        tags: Vec<Tag>,
        dry: bool,
        elsewhere: impl FnOnce(&VolumeRecord) -> Result<Option<Snapshot>>,
    ) -> Result<Snapshot> {
        let request = json!({
            "volumeId": volume_id,
            "description": description,
            "tagSpecificationSet": trail::tag_specifications("snapshot", &tags),
        });
        self.call(
            caller,
            "CreateSnapshot",
            request,
            |t| {
                let mut v = self.record(volume_id)?;
                t.resources.push(self.volume_arn(volume_id));
                self.repair(&mut v)?;
                let new = self.new_snapshot_target(&NewSnapshot {
                    size_bytes: v.size_bytes,
                    encrypted: v.encrypted,
                    parent_volume: Some(self.volume_arn(volume_id)),
                    parent_snapshot: None,
                    tags: &tags,
                });
                self.authorize(
                    caller,
                    "ec2:CreateSnapshot",
                    &[self.volume_target(&v), new.clone()],
                )?;
                self.authorize_tags(caller, "CreateSnapshot", &new, &tags)?;
                super::dry_run(dry)?;
                let s = match elsewhere(&v)? {
                    Some(s) => s,
                    None => self.create_snapshot_here(caller, v, description, tags)?,
                };
                t.resources
                    .push(snapshot_arn(self.region(), &s.snapshot_id));
                Ok(s)
            },
            trail::snapshot_response,
        )
    }

    fn create_snapshot_here(
        &self,
        caller: &Caller,
        v: VolumeRecord,
        description: &str,
        tags: Vec<Tag>,
    ) -> Result<Snapshot> {
        let volume_id = v.volume_id.as_str();
        if let Some(a) = &v.attachment {
            return Err(err(
                ErrorKind::IncorrectState,
                format!(
                    "{volume_id} is attached (process {}); ebsim snapshots detached volumes, or attached ones from the attaching process (Ec2::create_snapshot_of)",
                    a.pid
                ),
            ));
        }
        let (image, _) = self.open_image(caller, &v, None)?;
        super::refuse_rekeying(&image, volume_id)?;
        self.snapshot_image(&image, &v, description, tags, None)
    }

    /// Snapshot of a volume attached in this process: its writes are held for the
    /// cut, so the snapshot is crash-consistent. Setting `cancel` stops it (its
    /// client went away): nothing is committed and its blocks are collected.
    pub fn create_snapshot_of(
        &self,
        attachment: &super::Attachment,
        description: &str,
        tags: Vec<Tag>,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Snapshot> {
        let v = self.record(attachment.volume_id())?;
        self.snapshot_image(attachment.image(), &v, description, tags, cancel)
    }

    /// Takes the snapshot: a `pending` record first (with the operation's lock, so
    /// an interruption is recovered), the blocks, one `syncfs`, then the manifest
    /// and `completed` in one transaction. On any failure the record is removed and
    /// the blocks written are collected.
    fn snapshot_image(
        &self,
        image: &Image,
        v: &VolumeRecord,
        description: &str,
        tags: Vec<Tag>,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Snapshot> {
        self.check_cancel(cancel)?;
        let snapshot_id = new_id("snap");
        let header = image.header();
        let writing = self.blocks.share()?;
        let mut record = SnapshotRecord {
            snapshot_id: snapshot_id.clone(),
            volume_id: v.volume_id.clone(),
            size_bytes: image.size(),
            start_time: self.kms.clock().now(),
            description: description.into(),
            encrypted: v.encrypted,
            kms_key_arn: v.kms_key_arn.clone(),
            wrapped_key: v.encrypted.then(|| header.wrapped_key.clone()),
            key_context_id: v.encrypted.then(|| v.volume_id.clone()),
            data_key_id: v.data_key_id.clone(),
            parent: None,
            tags,
            blocks: BTreeMap::new(),
            state: "pending".into(),
            state_message: None,
            progress: 0,
            direct: None,
        };
        let op = self.begin(
            super::pending::PendingOp::CreateSnapshot {
                snapshot_id: snapshot_id.clone(),
            },
            |tx| tx.put_snapshot(&record),
        )?;
        let held = match image.hold_writes() {
            Ok(h) => h,
            Err(e) => return Err(self.abort_snapshot(op, &snapshot_id, writing, e)),
        };
        match self.snapshot_blocks(image, v, &snapshot_id, cancel) {
            Ok((blocks, parent)) => {
                record.blocks = blocks;
                record.parent = parent;
                record.size_bytes = image.size();
            }
            Err(e) => {
                drop(held);
                return Err(self.abort_snapshot(op, &snapshot_id, writing, e));
            }
        }
        crate::fault::point("snapshot:after-blocks");
        record.state = "completed".into();
        record.progress = 100;
        // The last moment a cancel is honoured: after it, the snapshot commits.
        if let Err(e) = self.check_cancel(cancel).and_then(|()| self.blocks.sync()) {
            drop(held);
            return Err(self.abort_snapshot(op, &snapshot_id, writing, e));
        }
        if let Err((op, e)) = self.finish_or_keep(op, |tx| tx.put_snapshot(&record)) {
            drop(held);
            return Err(self.abort_snapshot(op, &snapshot_id, writing, e));
        }
        drop(writing);
        // A crash before this line keeps the old marks: the next snapshot copies a
        // superset against the same (still existing) base.
        image.reset_tracking(Some(&snapshot_id))?;
        drop(held);
        Ok(Snapshot::from_record(&record, self.kms.account_id()))
    }

    /// Undoes a snapshot or copy that failed or was cancelled: its record goes, in
    /// the transaction that ends its pending operation, then its blocks are
    /// collected (now, or by the next collection if another writer runs).
    fn abort_snapshot(
        &self,
        op: super::pending::Pending,
        snapshot_id: &str,
        writing: crate::snapshot::BlockLock,
        cause: Error,
    ) -> Error {
        let removed = self.finish(op, |tx| tx.delete_snapshot(snapshot_id));
        drop(writing);
        let collected = self.collect_blocks();
        match (removed, collected) {
            (Ok(()), Ok(_)) => cause,
            (Err(e), _) | (_, Err(e)) => cause.context(format!(
                "{snapshot_id} could not be cleaned up ({}); ebsim ec2 cleanup finishes it",
                e.message()
            )),
        }
    }

    /// Stores every changed (or, for a full snapshot, every allocated) block of
    /// `image`; returns the manifest and the parent it is incremental to.
    fn snapshot_blocks(
        &self,
        image: &Image,
        v: &VolumeRecord,
        snapshot_id: &str,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<(BTreeMap<u64, String>, Option<String>)> {
        let changes = image.changes();
        let size = image.size();
        let parent = changes
            .base
            .as_deref()
            .and_then(|b| self.snapshot_record(b).ok())
            .filter(|p| {
                p.is_completed()
                    && p.data_key_id == v.data_key_id
                    && p.encrypted == v.encrypted
                    && p.size_bytes <= size
            });
        let base = parent.as_ref().map(|p| snapshot::Base {
            manifest: &p.blocks,
            changed: &changes.blocks,
        });
        let report = Report::new(|total| {
            self.progress(&format!("snapshot of {}", v.volume_id), total, cancel)
                .for_snapshot(snapshot_id)
        });
        let blocks = snapshot::take(&*self.blocks, image, base, &report)?;
        Ok((blocks, parent.map(|p| p.snapshot_id)))
    }

    // ---- DescribeSnapshots / DeleteSnapshot / ListChangedBlocks ------------

    pub fn describe_snapshots(
        &self,
        caller: &Caller,
        snapshot_ids: &[String],
        filters: &[Filter],
    ) -> Result<DescribeSnapshotsResponse> {
        self.describe_snapshots_with(caller, snapshot_ids, filters, false)
    }

    /// [`Ec2::describe_snapshots`] with EC2's DryRun.
    pub fn describe_snapshots_with(
        &self,
        caller: &Caller,
        snapshot_ids: &[String],
        filters: &[Filter],
        dry: bool,
    ) -> Result<DescribeSnapshotsResponse> {
        let request = json!({
            "snapshotSet": trail::id_set("snapshotId", snapshot_ids),
            "filterSet": trail::filter_set(filters),
        });
        self.call(
            caller,
            "DescribeSnapshots",
            request,
            |_| {
                self.authorize(caller, "ec2:DescribeSnapshots", &[Target::any()])?;
                super::dry_run(dry)?;
                self.describe_snapshots_op(snapshot_ids, filters)
            },
            |_| Value::Null,
        )
    }

    fn describe_snapshots_op(
        &self,
        snapshot_ids: &[String],
        filters: &[Filter],
    ) -> Result<DescribeSnapshotsResponse> {
        for id in snapshot_ids {
            check_snapshot_id(id)?;
        }
        // A snapshot written through the EBS direct APIs past its Timeout shows
        // as `error`, not `pending`.
        self.settle_direct_snapshots()?;
        let all = self.store.lock().expect("ec2 store").snapshots()?;
        if let Some(missing) = snapshot_ids
            .iter()
            .find(|id| !all.iter().any(|s| &s.snapshot_id == *id))
        {
            return Err(snapshot_not_found(missing));
        }
        const NAMES: &[&str] = &[
            "snapshot-id",
            "volume-id",
            "status",
            "encrypted",
            "kms-key-id",
            "description",
            "tag-key",
        ];
        for f in filters {
            if !NAMES.contains(&f.name.as_str()) && !f.name.starts_with("tag:") {
                return Err(err(
                    ErrorKind::InvalidParameterValue,
                    format!("The filter '{}' is invalid", f.name),
                ));
            }
        }
        let matches = |s: &SnapshotRecord, f: &Filter| {
            let values: Vec<String> = match f.name.as_str() {
                "snapshot-id" => vec![s.snapshot_id.clone()],
                "volume-id" => vec![s.volume_id.clone()],
                "status" => vec![s.state.clone()],
                "encrypted" => vec![s.encrypted.to_string()],
                "kms-key-id" => s.kms_key_arn.clone().into_iter().collect(),
                "description" => vec![s.description.clone()],
                "tag-key" => s.tags.iter().map(|t| t.key.clone()).collect(),
                name => {
                    let k = name.strip_prefix("tag:").unwrap_or_default();
                    s.tags
                        .iter()
                        .filter(|t| t.key == k)
                        .map(|t| t.value.clone())
                        .collect()
                }
            };
            f.values
                .iter()
                .any(|w| values.iter().any(|h| crate::policy::glob(w, h)))
        };
        Ok(DescribeSnapshotsResponse {
            snapshots: all
                .iter()
                .filter(|s| snapshot_ids.is_empty() || snapshot_ids.contains(&s.snapshot_id))
                .filter(|s| filters.iter().all(|f| matches(s, f)))
                .map(|s| Snapshot::from_record(s, self.kms.account_id()))
                .collect(),
        })
    }

    /// Deletes a snapshot, then collects the blocks no other snapshot uses (at once
    /// if no snapshot, copy or restore is running, else at the next collection).
    /// A snapshot still being written is refused; one that ended in `error` (its
    /// process was killed) can be deleted.
    /// Empties the region (`ebsim serve`'s reset, `service::Services::reset`):
    /// every volume and snapshot is deleted as DeleteVolume and DeleteSnapshot
    /// delete them (one at a time, each crash-safe), then the simulated instances
    /// and the region's settings go and every snapshot block is collected. An
    /// attached volume stops it (VolumeInUse): the service layer detaches first.
    /// The calls' records go with the audit log, which the KMS's reset empties.
    pub fn reset(&self) -> Result<()> {
        let root = Caller::account_root(self.kms.account_id());
        let volumes = self.store.lock().expect("ec2 store").volumes()?;
        for v in volumes {
            self.delete_volume(&root, &v.volume_id, false)?;
        }
        let snapshots = self.store.lock().expect("ec2 store").snapshots()?;
        for s in snapshots {
            self.delete_snapshot(&root, &s.snapshot_id)?;
        }
        self.write(|tx| tx.clear_instances_and_settings())?;
        if self.collect_blocks()?.is_none() {
            return Err(Error::new(
                ErrorKind::IncorrectState,
                "the region's snapshot blocks are in use by another process (a snapshot or copy in progress); nothing else is left",
            ));
        }
        Ok(())
    }

    pub fn delete_snapshot(&self, caller: &Caller, snapshot_id: &str) -> Result<()> {
        self.delete_snapshot_with(caller, snapshot_id, false)
    }

    /// [`Ec2::delete_snapshot`] with EC2's DryRun.
    pub fn delete_snapshot_with(
        &self,
        caller: &Caller,
        snapshot_id: &str,
        dry: bool,
    ) -> Result<()> {
        self.call(
            caller,
            "DeleteSnapshot",
            json!({ "snapshotId": snapshot_id }),
            |t| {
                let s = self.snapshot_record(snapshot_id)?;
                t.resources.push(snapshot_arn(self.region(), snapshot_id));
                self.authorize(
                    caller,
                    "ec2:DeleteSnapshot",
                    &[self.snapshot_target(self.region(), &s)],
                )?;
                super::dry_run(dry)?;
                self.delete_snapshot_op(snapshot_id)
            },
            |_| json!({ "_return": true }),
        )
    }

    fn delete_snapshot_op(&self, snapshot_id: &str) -> Result<()> {
        let live = self.live_resources()?;
        self.write(|tx| {
            let cur = tx
                .snapshot(snapshot_id)?
                .ok_or_else(|| snapshot_not_found(snapshot_id))?;
            if cur.state == "pending" && live.contains(snapshot_id) {
                return Err(err(
                    ErrorKind::IncorrectState,
                    format!("Snapshot '{snapshot_id}' is in the 'pending' state."),
                ));
            }
            tx.delete_snapshot(snapshot_id)
        })?;
        // After the commit: a crash before the collection leaves unreferenced
        // blocks, which the request below (or `ebsim ec2 cleanup`) collects.
        self.request_block_collection()?;
        self.collect_blocks()?;
        Ok(())
    }

    /// Asks for a collection of unreferenced blocks (recorded in `ec2.db`, so the
    /// next command that opens the region runs it if this one cannot).
    pub(super) fn request_block_collection(&self) -> Result<()> {
        self.write(|tx| tx.put_setting(super::COLLECT_BLOCKS, Some("true")))
    }

    pub(super) fn block_collection_requested(&self) -> Result<bool> {
        Ok(self
            .store
            .lock()
            .expect("ec2 store")
            .setting(super::COLLECT_BLOCKS)?
            .is_some())
    }

    /// Removes every stored block no completed snapshot references, and block
    /// files left under a temporary name, holding the store's exclusive lock so no
    /// snapshot, copy or restore runs meanwhile. When one runs, nothing is removed
    /// and the collection stays requested; returns None then.
    pub fn collect_blocks(&self) -> Result<Option<Collected>> {
        let collected = snapshot::collect(&*self.blocks, &Manifests(self), || {
            self.write(|tx| tx.put_setting(super::COLLECT_BLOCKS, None))
        })?;
        if collected.is_none() {
            self.request_block_collection()?;
        }
        Ok(collected)
    }

    /// EBS direct API ListChangedBlocks (its first page): the 512 KiB blocks that
    /// differ between two snapshots of one lineage (same data key). The direct
    /// APIs are in `direct.rs`.
    pub fn list_changed_blocks(
        &self,
        caller: &Caller,
        first: &str,
        second: &str,
    ) -> Result<ListChangedBlocksResponse> {
        self.list_changed_blocks_page(caller, Some(first), second, &BlockPage::default())
    }

    // ---- CopySnapshot -----------------------------------------------------

    /// CopySnapshot into this (the destination) region, authorized on the source
    /// snapshot and the copy, recorded in this region.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_snapshot(
        &self,
        caller: &Caller,
        source_region: &str,
        source_snapshot_id: &str,
        encrypted: Option<bool>,
        kms_key_id: Option<&str>,
        description: Option<&str>,
        tags: Vec<Tag>,
    ) -> Result<Snapshot> {
        self.copy_snapshot_with(
            caller,
            source_region,
            source_snapshot_id,
            encrypted,
            kms_key_id,
            description,
            tags,
            false,
        )
    }

    /// [`Ec2::copy_snapshot`] with EC2's DryRun: the source is read and the key
    /// resolved (a refusal fails as it would), then DryRunOperation.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_snapshot_with(
        &self,
        caller: &Caller,
        source_region: &str,
        source_snapshot_id: &str,
        encrypted: Option<bool>,
        kms_key_id: Option<&str>,
        description: Option<&str>,
        tags: Vec<Tag>,
        dry: bool,
    ) -> Result<Snapshot> {
        let request = json!({
            "sourceRegion": source_region,
            "sourceSnapshotId": source_snapshot_id,
            "destinationRegion": self.region(),
            "description": description,
            "encrypted": encrypted,
            "kmsKeyId": kms_key_id,
            "tagSpecificationSet": trail::tag_specifications("snapshot", &tags),
        });
        self.call(
            caller,
            "CopySnapshot",
            request,
            |t| {
                self.copy_snapshot_op(
                    caller,
                    source_region,
                    source_snapshot_id,
                    encrypted,
                    kms_key_id,
                    description,
                    tags,
                    dry,
                    t,
                )
            },
            |s| json!({ "snapshotId": s.snapshot_id }),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_snapshot_op(
        &self,
        caller: &Caller,
        source_region: &str,
        source_snapshot_id: &str,
        encrypted: Option<bool>,
        kms_key_id: Option<&str>,
        description: Option<&str>,
        tags: Vec<Tag>,
        dry: bool,
        trail: &mut trail::Trail,
    ) -> Result<Snapshot> {
        crate::home::validate_region(source_region)?;
        let other;
        let source: &Ec2 = if source_region == self.region() {
            self
        } else {
            let kms = crate::kms::Kms::open(&self.root, source_region, self.kms.clock().clone())?;
            let host = self
                .host
                .for_region(source_region)?
                .unwrap_or_else(|| std::sync::Arc::new(super::NoHost));
            other = Ec2::for_owner(&self.root, kms, host, self.owner)?;
            &other
        };
        let s = source.snapshot_record(source_snapshot_id)?;
        trail
            .resources
            .push(snapshot_arn(source_region, source_snapshot_id));
        let by_default = self.by_default()?;
        let new = self.new_snapshot_target(&NewSnapshot {
            size_bytes: s.size_bytes,
            encrypted: s.encrypted || encrypted == Some(true) || by_default,
            parent_volume: None,
            parent_snapshot: Some(snapshot_arn(source_region, source_snapshot_id)),
            tags: &tags,
        });
        self.authorize(
            caller,
            "ec2:CopySnapshot",
            &[self.snapshot_target(source_region, &s), new.clone()],
        )?;
        self.authorize_tags(caller, "CopySnapshot", &new, &tags)?;
        let s = source.completed_snapshot(source_snapshot_id)?;
        if s.encrypted && encrypted == Some(false) {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "The snapshot {source_snapshot_id} is encrypted; a copy of it cannot be unencrypted."
                ),
            ));
        }
        if kms_key_id.is_some() && encrypted != Some(true) {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                "The parameter KmsKeyId requires the parameter Encrypted to be set.",
            ));
        }
        let encrypt = s.encrypted || encrypted == Some(true) || by_default;
        let same_region = source_region == self.region();
        let key_arn = if encrypt {
            let k = match (kms_key_id, s.encrypted && same_region) {
                (Some(k), _) => k.to_string(),
                (None, true) => s
                    .kms_key_arn
                    .clone()
                    .expect("encrypted snapshots have a key"),
                (None, false) => self.default_key_id()?,
            };
            Some(self.resolve_key(caller, &k)?)
        } else {
            None
        };
        super::dry_run(dry)?;
        let snapshot_id = new_id("snap");
        trail
            .resources
            .push(snapshot_arn(self.region(), &snapshot_id));
        let via = self.via(caller);
        let mut record = SnapshotRecord {
            snapshot_id: snapshot_id.clone(),
            volume_id: "vol-ffffffff".into(),
            size_bytes: s.size_bytes,
            start_time: self.kms.clock().now(),
            description: description
                .map(str::to_string)
                .unwrap_or_else(|| format!("[Copied {source_snapshot_id} from {source_region}]")),
            encrypted: encrypt,
            kms_key_arn: key_arn.clone(),
            wrapped_key: None,
            key_context_id: encrypt.then(|| snapshot_id.clone()),
            data_key_id: None,
            parent: None,
            tags,
            blocks: BTreeMap::new(),
            state: "completed".into(),
            state_message: None,
            progress: 100,
            direct: None,
        };
        // Both stores are held shared until the copy is committed: no collector
        // removes a source block (its snapshot deleted meanwhile) or a block this
        // copy wrote or counts on. The source is re-read under its lock.
        let reading = source.blocks.share()?;
        let writing = self.blocks.share()?;
        let s = source.completed_snapshot(source_snapshot_id)?;
        let same_key = same_region && s.kms_key_arn == key_arn;
        if same_key {
            // Same region, same key (or both unencrypted): a new id over the same
            // blocks; no data is copied. The data key is re-wrapped for the copy's
            // own context.
            if let Some(arn) = &key_arn {
                let re = self.kms.re_encrypt(
                    &via,
                    ReEncryptRequest {
                        ciphertext_blob: Blob::new(s.wrapped_key.clone().unwrap_or_default()),
                        source_encryption_context: self
                            .context(s.key_context_id.as_deref().unwrap_or_default()),
                        source_key_id: Some(arn.clone()),
                        destination_key_id: arn.clone(),
                        destination_encryption_context: self.context(&snapshot_id),
                        ..Default::default()
                    },
                )?;
                record.wrapped_key = Some(re.ciphertext_blob.as_slice().to_vec());
            }
            record.data_key_id = s.data_key_id.clone();
            record.blocks = s.blocks.clone();
            record.parent = Some(s.snapshot_id.clone());
            self.write(|tx| tx.put_snapshot(&record))?;
            drop((writing, reading));
            return Ok(Snapshot::from_record(&record, self.kms.account_id()));
        }
        // A full copy under a new data key. Every KMS call first: a refusal leaves
        // nothing behind.
        let source_xts = if s.encrypted {
            let k = source.snapshot_key(caller, &s)?;
            Some(Xts::new(k.expose()).map_err(|e| {
                Error::new(ErrorKind::VolumeImage, format!("{source_snapshot_id}: {e}"))
            })?)
        } else {
            None
        };
        let dest_xts = match &key_arn {
            Some(arn) => {
                let (wrapped, arn, key) = self.new_data_key(caller, arn, &snapshot_id)?;
                record.wrapped_key = Some(wrapped);
                record.kms_key_arn = Some(arn);
                record.data_key_id = Some(new_data_key_id());
                Some(Xts::new(key.expose()).map_err(|e| {
                    Error::new(ErrorKind::VolumeImage, format!("{snapshot_id}: {e}"))
                })?)
            }
            None => None,
        };
        // Recorded as `pending` before the first block is written: the copy owns
        // its blocks from here until it commits, or is undone.
        let pending_record = SnapshotRecord {
            state: "pending".into(),
            progress: 0,
            ..record.clone()
        };
        let op = self.begin(
            super::pending::PendingOp::CopySnapshot {
                snapshot_id: snapshot_id.clone(),
            },
            |tx| tx.put_snapshot(&pending_record),
        )?;
        let report = Report::new(|total| {
            self.progress(&format!("copying {source_snapshot_id}"), total, None)
                .for_snapshot(&snapshot_id)
        });
        let recode = snapshot::Recode {
            decrypt: source_xts.as_ref(),
            encrypt: dest_xts.as_ref(),
        };
        let copied = snapshot::copy(
            &*source.blocks,
            &*self.blocks,
            source_snapshot_id,
            &s.blocks,
            recode,
            &report,
        );
        drop(reading);
        let list = match copied
            .and_then(|list| self.check_cancel(None).map(|()| list))
            .and_then(|list| self.blocks.sync().map(|()| list))
        {
            Ok(list) => list,
            Err(e) => return Err(self.abort_snapshot(op, &snapshot_id, writing, e)),
        };
        record.blocks = list;
        crate::fault::point("copy:after-blocks");
        if let Err((op, e)) = self.finish_or_keep(op, |tx| tx.put_snapshot(&record)) {
            return Err(self.abort_snapshot(op, &snapshot_id, writing, e));
        }
        drop(writing);
        Ok(Snapshot::from_record(&record, self.kms.account_id()))
    }
}
