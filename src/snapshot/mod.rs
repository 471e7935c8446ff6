//! Snapshots below the EC2 API: where their blocks live, where their manifests
//! live, and the engine that takes, restores and copies them.
//!
//! - this file: [`BlockStore`] (content-addressed 512 KiB blocks and the lock
//!   between their writers and the collector) and [`ManifestStore`] (which blocks
//!   make up a completed snapshot), both injected, so an S3-compatible store can
//!   take the local one's place; [`Progress`], how an operation reports and is
//!   cancelled.
//! - `local.rs`: [`LocalStore`], blocks as files in the data root.
//! - `engine.rs`: [`take`] (incremental through changed-block tracking),
//!   [`restore`], [`copy`] (re-encrypting under another data key when asked) and
//!   [`collect`]. Records, KMS and pending operations stay with the service
//!   (`crate::ec2`), which keeps manifests with the snapshot records in `ec2.db`.
//!
//! A block is stored under the SHA-256 of its bytes — the volume's stored bytes,
//! so ciphertext for an encrypted volume — and its checksum is verified on every
//! read. All-zero blocks (holes) are not stored: a manifest without an entry for a
//! block means zeros.

mod engine;
mod local;

pub use engine::{Base, Collected, Fill, Recode, collect, copy, restore, take};
pub use local::LocalStore;

use crate::error::Result;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashSet};

/// Bytes per snapshot block (EBS's snapshot block size; block index = offset / BLOCK).
pub const BLOCK: u64 = crate::volume::cbt::BLOCK;

/// A block's SHA-256, as lowercase hex.
pub type Digest = String;

/// A snapshot's blocks: block index → digest. A missing index is a hole.
pub type Manifest = BTreeMap<u64, Digest>;

/// Where snapshot blocks live.
///
/// The store also carries the lock between the operations that write or read
/// blocks (shared) and the collector of unreferenced blocks (exclusive), so a
/// collector never deletes a block that a running operation has just written, or
/// found already there and counts on, but not yet named in a committed manifest.
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
    /// Bytes a stored block takes (for reports; 0 if unknown).
    fn stored_len(&self, digest: &str) -> u64;
    /// Waits for, then holds, the shared lock: for the whole of an operation that
    /// writes or reads blocks.
    fn share(&self) -> Result<BlockLock>;
    /// The exclusive lock if no operation holds the store now (None otherwise).
    fn try_exclusive(&self) -> Result<Option<BlockLock>>;
    /// Removes what puts that never finished left behind (a kill between writing a
    /// block and naming it); returns how many. Only under the exclusive lock.
    fn remove_unfinished(&self) -> u64;
}

/// A held lock of a [`BlockStore`]; dropping it releases the lock.
pub struct BlockLock(#[allow(dead_code)] Box<dyn Send + Sync>);

impl BlockLock {
    /// A lock held for as long as `guard` lives.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        BlockLock(Box::new(guard))
    }
}

/// Where manifests live: which blocks make up each completed snapshot. The
/// service that owns the snapshots writes them (with its records); the engine
/// reads them to restore, and to know which blocks a collection must keep.
pub trait ManifestStore: Sync {
    /// The manifest of completed snapshot `snapshot_id`; an error (in the owning
    /// service's words) if there is none, or it is not completed.
    fn manifest(&self, snapshot_id: &str) -> Result<Manifest>;
    /// Every digest that some completed snapshot's manifest names.
    fn referenced(&self) -> Result<HashSet<Digest>>;
}

/// Manifests held in memory, by snapshot id: for a service that keeps them
/// nowhere else, and for testing the engine without one.
#[derive(Debug, Default)]
pub struct MemoryManifests(std::sync::Mutex<BTreeMap<String, Manifest>>);

impl MemoryManifests {
    /// Commits the manifest of completed snapshot `snapshot_id`.
    pub fn put(&self, snapshot_id: &str, manifest: Manifest) {
        self.0
            .lock()
            .expect("manifests")
            .insert(snapshot_id.to_string(), manifest);
    }

    /// Forgets snapshot `snapshot_id` (its blocks go at the next collection).
    pub fn remove(&self, snapshot_id: &str) {
        self.0.lock().expect("manifests").remove(snapshot_id);
    }
}

impl ManifestStore for MemoryManifests {
    fn manifest(&self, snapshot_id: &str) -> Result<Manifest> {
        self.0
            .lock()
            .expect("manifests")
            .get(snapshot_id)
            .cloned()
            .ok_or_else(|| {
                crate::error::Error::new(
                    crate::error::ErrorKind::InvalidSnapshotNotFound,
                    format!("The snapshot '{snapshot_id}' does not exist."),
                )
            })
    }

    fn referenced(&self) -> Result<HashSet<Digest>> {
        Ok(self
            .0
            .lock()
            .expect("manifests")
            .values()
            .flat_map(|m| m.values().cloned())
            .collect())
    }
}

/// How one long operation reports its progress and learns it was cancelled.
pub trait Progress: Sync {
    /// The operation has `total` blocks to do; called once, before any step.
    fn start(&self, total: u64);
    /// One block is about to be done; an error (the operation was cancelled)
    /// stops the operation with it.
    fn step(&self) -> Result<()>;
}

pub fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pool that snapshot, copy and restore work runs on: twice as many threads as
/// cores, because each block's work ends in a write that waits for the device
/// (`O_DIRECT`); with one thread per core a core would idle through every such
/// wait. The hashing and XTS between the waits still use every core.
pub fn io_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(2 * cores)
            .thread_name(|i| format!("ebsim-blocks-{i}"))
            .build()
            .expect("a thread pool")
    })
}
