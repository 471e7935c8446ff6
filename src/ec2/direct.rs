//! The EBS direct APIs (docs/EBS.md §9): reading a completed snapshot block by
//! block (ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock) and writing a
//! new one (StartSnapshot, PutSnapshotBlock, CompleteSnapshot).
//!
//! - Blocks are 512 KiB, as the snapshot store keeps them. GetSnapshotBlock
//!   decrypts a block with the snapshot's data key, which the KMS unwraps for the
//!   caller through EC2 (`kms:ViaService ec2.<region>.amazonaws.com`, as for a
//!   restore: the AWS managed key `aws/ebs` allows no other service).
//! - Block tokens and page tokens are opaque and verifiable: an expiry time and an
//!   HMAC-SHA256 (under a key derived from the data root's root key) of the
//!   snapshot, the block index, the block's digest and that time. Block tokens
//!   live 7 days, page tokens 60 minutes, as AWS's do.
//! - A snapshot written through StartSnapshot is a `pending` record with a
//!   [`DirectWrite`]: each PutSnapshotBlock stores its block (encrypted under the
//!   snapshot's data key) and names it in the record in one transaction, under the
//!   block store's shared lock, so a collection never removes it; blocks stored but
//!   never named (a crash between the two) are collected. CompleteSnapshot checks
//!   the count (and the aggregated checksum) and completes the record: it is then
//!   an ordinary snapshot (CreateVolume restores it). One still `pending` past its
//!   Timeout is set to `error`, and its blocks collected, by the next EBS direct
//!   call (or DescribeSnapshots) in the region. Each PutSnapshotBlock asks for a
//!   collection (kept in `ec2.db`) before it stores its block, so a block a crash
//!   left unnamed is removed by the next process that opens the region, or by
//!   CompleteSnapshot.
//! - Errors carry the EBS model's reason as [`Field::Reason`]; the service layer
//!   (`service::ebs`) turns EC2's and the KMS's errors into the EBS model's.

use super::authz::{NewSnapshot, snapshot_arn};
use super::model::*;
use super::{Ec2, new_data_key_id, new_id};
use crate::clock::Timestamp;
use crate::crypto::secret::SecretBytes;
use crate::crypto::xts::Xts;
use crate::error::{Error, ErrorKind, Field, Result};
use crate::kms::access::Caller;
use crate::kms::api::{Blob, ReEncryptRequest, Time};
use crate::num::usize_of;
use crate::snapshot::BLOCK;
use crate::volume::{DATA_UNIT, units};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::TimeDelta;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// How long a block token is good for.
const BLOCK_TOKEN_LIFE: TimeDelta = TimeDelta::days(7);
/// How long a page token (NextToken) is good for.
const PAGE_TOKEN_LIFE: TimeDelta = TimeDelta::minutes(60);
/// StartSnapshot's Timeout when none is given, and its bounds (minutes).
const DEFAULT_TIMEOUT: u32 = 60;
const TIMEOUTS: std::ops::RangeInclusive<u32> = 10..=4320;
/// MaxResults' bounds; a smaller value still gets 100 (AWS: "at least 100").
const PAGE_SIZES: std::ops::RangeInclusive<u64> = 100..=10000;
/// The largest snapshot StartSnapshot takes: 64 TiB, in GiB.
const MAX_GIB: u64 = 65536;
/// The label of the token key under the root key.
const TOKEN_KEY_LABEL: &[u8] = b"ebs direct api tokens v1";

/// An error of kind `kind` with the EBS model's `reason`.
pub fn ebs_error(kind: ErrorKind, reason: &str, message: impl Into<String>) -> Error {
    Error::new(kind, message).with(Field::Reason, reason)
}

/// ResourceNotFoundException (SNAPSHOT_NOT_FOUND) for `id`.
fn no_snapshot(id: &str) -> Error {
    ebs_error(
        ErrorKind::ResourceNotFound,
        "SNAPSHOT_NOT_FOUND",
        format!("The snapshot '{id}' does not exist."),
    )
}

fn invalid(reason: &str, message: impl Into<String>) -> Error {
    ebs_error(ErrorKind::Validation, reason, message)
}

/// Base64 SHA-256, as the EBS direct APIs' checksums are written.
pub fn checksum(data: &[u8]) -> String {
    B64.encode(Sha256::digest(data))
}

fn mac(key: &SecretBytes, parts: &[&[u8]]) -> [u8; 16] {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key.expose()).expect("any key");
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    let full = m.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// `expiry (8 bytes) || more || mac (16 bytes)`, base64.
fn seal_token(expiry: i64, more: &[u8], mac: [u8; 16]) -> String {
    let mut raw = expiry.to_be_bytes().to_vec();
    raw.extend_from_slice(more);
    raw.extend_from_slice(&mac);
    B64.encode(raw)
}

/// The expiry, the middle part and the MAC of a token of `more_len` middle bytes.
fn open_token(token: &str, more_len: usize) -> Option<(i64, Vec<u8>, [u8; 16])> {
    let raw = B64.decode(token).ok()?;
    if raw.len() != 8 + more_len + 16 {
        return None;
    }
    let expiry = i64::from_be_bytes(raw[..8].try_into().ok()?);
    let more = raw[8..8 + more_len].to_vec();
    let mac: [u8; 16] = raw[8 + more_len..].try_into().ok()?;
    Some((expiry, more, mac))
}

fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

fn block_mac(
    key: &SecretBytes,
    snapshot_id: &str,
    index: u64,
    digest: &str,
    expiry: i64,
) -> [u8; 16] {
    mac(
        key,
        &[
            b"block",
            snapshot_id.as_bytes(),
            &index.to_be_bytes(),
            digest.as_bytes(),
            &expiry.to_be_bytes(),
        ],
    )
}

fn page_mac(key: &SecretBytes, scope: &str, next: u64, expiry: i64) -> [u8; 16] {
    mac(
        key,
        &[
            b"page",
            scope.as_bytes(),
            &next.to_be_bytes(),
            &expiry.to_be_bytes(),
        ],
    )
}

/// A block token for block `index` (stored as `digest`) of `snapshot_id`.
fn block_token(
    key: &SecretBytes,
    snapshot_id: &str,
    index: u64,
    digest: &str,
    expiry: i64,
) -> String {
    seal_token(
        expiry,
        &[],
        block_mac(key, snapshot_id, index, digest, expiry),
    )
}

/// Checks a block token for block `index` of `snapshot_id`, which holds `digest`
/// there (None: the block is a hole, which no token names).
fn check_block_token(
    key: &SecretBytes,
    token: &str,
    snapshot_id: &str,
    index: u64,
    digest: Option<&str>,
    now: &Timestamp,
) -> Result<()> {
    let bad = || {
        invalid(
            "INVALID_BLOCK_TOKEN",
            format!("The block token is not valid for block {index} of {snapshot_id}"),
        )
    };
    let (expiry, _, got) = open_token(token, 0).ok_or_else(bad)?;
    let digest = digest.ok_or_else(bad)?;
    if !same(&got, &block_mac(key, snapshot_id, index, digest, expiry)) {
        return Err(bad());
    }
    if now.timestamp() > expiry {
        return Err(invalid(
            "INVALID_BLOCK_TOKEN",
            format!(
                "The block token for block {index} of {snapshot_id} expired at {}; list the blocks again for a new one",
                chrono::DateTime::from_timestamp(expiry, 0)
                    .map(|t| crate::clock::iso8601(&t))
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

fn page_token(key: &SecretBytes, scope: &str, next: u64, now: &Timestamp) -> String {
    let expiry = (*now + PAGE_TOKEN_LIFE).timestamp();
    seal_token(
        expiry,
        &next.to_be_bytes(),
        page_mac(key, scope, next, expiry),
    )
}

/// Where a page starts and how many it holds.
fn page_bounds(
    key: &SecretBytes,
    scope: &str,
    page: &BlockPage,
    now: &Timestamp,
) -> Result<(u64, usize)> {
    let max = page
        .max_results
        .unwrap_or(*PAGE_SIZES.end())
        .clamp(*PAGE_SIZES.start(), *PAGE_SIZES.end());
    let start = match &page.next_token {
        Some(t) => {
            let bad = |why: &str| invalid("INVALID_PAGE_TOKEN", format!("The page token {why}"));
            let (expiry, more, got) = open_token(t, 8).ok_or_else(|| bad("is not valid"))?;
            let next = u64::from_be_bytes(more.try_into().map_err(|_| bad("is not valid"))?);
            if !same(&got, &page_mac(key, scope, next, expiry)) {
                return Err(bad(&format!("is not valid for {scope}")));
            }
            if now.timestamp() > expiry {
                return Err(bad("has expired (page tokens last 60 minutes)"));
            }
            next
        }
        None => page.starting_block_index.unwrap_or(0),
    };
    Ok((start, usize_of(max)))
}

impl Ec2 {
    /// One EBS direct API call, recorded (`ebs.amazonaws.com`) with its error in
    /// the EBS model's words.
    fn call_ebs<T>(
        &self,
        caller: &Caller,
        name: &'static str,
        request: Value,
        op: impl FnOnce(&mut super::trail::Trail) -> Result<T>,
        response: impl FnOnce(&T) -> Value,
    ) -> Result<T> {
        self.call(
            caller,
            name,
            request,
            |t| op(t).map_err(in_ebs_terms),
            response,
        )
    }

    /// The key block and page tokens are sealed with.
    fn token_key(&self) -> Result<SecretBytes> {
        Ok(crate::kms::store::RootKey::load_or_create(&self.root)?.derive(TOKEN_KEY_LABEL))
    }

    /// Sets every snapshot written through StartSnapshot and still `pending` past
    /// its Timeout to `error`, and collects its blocks.
    pub(super) fn settle_direct_snapshots(&self) -> Result<()> {
        let now = self.kms.clock().now();
        let overdue = |s: &SnapshotRecord| {
            s.state == "pending" && s.direct.as_ref().is_some_and(|d| d.deadline <= now)
        };
        let any = self
            .store
            .lock()
            .expect("ec2 store")
            .snapshots()?
            .iter()
            .any(overdue);
        if !any {
            return Ok(());
        }
        self.write(|tx| {
            for mut s in tx.snapshots()?.into_iter().filter(overdue) {
                let minutes = s.direct.as_ref().map_or(0, |d| d.timeout_minutes);
                super::pending::mark_error(
                    &mut s,
                    &format!(
                        "The snapshot was not completed within its timeout of {minutes} minutes (StartSnapshot's Timeout); the blocks written were discarded"
                    ),
                );
                s.direct = None;
                tx.put_snapshot(&s)?;
            }
            Ok(())
        })?;
        self.request_block_collection()?;
        self.collect_blocks()?;
        Ok(())
    }

    /// The snapshot, found and authorized for `action`; completed unless `pending_ok`.
    fn direct_snapshot(
        &self,
        caller: &Caller,
        action: &str,
        snapshot_id: &str,
        t: &mut super::trail::Trail,
    ) -> Result<SnapshotRecord> {
        self.settle_direct_snapshots()?;
        let s = self.snapshot_record(snapshot_id)?;
        t.resources.push(snapshot_arn(self.region(), snapshot_id));
        self.authorize(caller, action, &[self.snapshot_target(self.region(), &s)])?;
        Ok(s)
    }

    // ---- reading ---------------------------------------------------------

    /// ListSnapshotBlocks: the blocks of a completed snapshot that hold data, in
    /// index order, with a token for each.
    pub fn list_snapshot_blocks(
        &self,
        caller: &Caller,
        snapshot_id: &str,
        page: &BlockPage,
    ) -> Result<ListSnapshotBlocksResponse> {
        let request = json!({
            "snapshotId": snapshot_id,
            "maxResults": page.max_results,
            "startingBlockIndex": page.starting_block_index,
        });
        self.call_ebs(
            caller,
            "ListSnapshotBlocks",
            request,
            |t| {
                self.direct_snapshot(caller, "ebs:ListSnapshotBlocks", snapshot_id, t)?;
                let s = self.completed_snapshot(snapshot_id)?;
                let key = self.token_key()?;
                let now = self.kms.clock().now();
                let (start, max) = page_bounds(&key, snapshot_id, page, &now)?;
                let expiry = now + BLOCK_TOKEN_LIFE;
                let mut blocks = Vec::new();
                let mut next_token = None;
                for (&i, d) in s.blocks.range(start..) {
                    if blocks.len() == max {
                        next_token = Some(page_token(&key, snapshot_id, i, &now));
                        break;
                    }
                    blocks.push(Block {
                        block_index: i,
                        block_token: block_token(&key, snapshot_id, i, d, expiry.timestamp()),
                    });
                }
                Ok(ListSnapshotBlocksResponse {
                    blocks,
                    expiry_time: Time(expiry),
                    volume_size: s.size_bytes.div_ceil(GIB),
                    block_size: BLOCK,
                    next_token,
                })
            },
            |_| Value::Null,
        )
    }

    /// ListChangedBlocks: the blocks that differ between two completed snapshots
    /// of one lineage (same data key), or, without `first`, every block of
    /// `second` that holds data.
    pub fn list_changed_blocks_page(
        &self,
        caller: &Caller,
        first: Option<&str>,
        second: &str,
        page: &BlockPage,
    ) -> Result<ListChangedBlocksResponse> {
        let request = json!({
            "firstSnapshotId": first,
            "secondSnapshotId": second,
            "maxResults": page.max_results,
            "startingBlockIndex": page.starting_block_index,
        });
        self.call_ebs(
            caller,
            "ListChangedBlocks",
            request,
            |t| {
                self.settle_direct_snapshots()?;
                let a = first.map(|f| self.snapshot_record(f)).transpose()?;
                let b = self.snapshot_record(second)?;
                let mut targets = Vec::new();
                if let Some(a) = &a {
                    t.resources.push(snapshot_arn(self.region(), &a.snapshot_id));
                    targets.push(self.snapshot_target(self.region(), a));
                }
                t.resources.push(snapshot_arn(self.region(), second));
                targets.push(self.snapshot_target(self.region(), &b));
                self.authorize(caller, "ebs:ListChangedBlocks", &targets)?;
                let a = first.map(|f| self.completed_snapshot(f)).transpose()?;
                let b = self.completed_snapshot(second)?;
                if let Some(a) = &a
                    && (a.data_key_id != b.data_key_id || a.encrypted != b.encrypted)
                {
                    return Err(invalid(
                        "UNRELATED_SNAPSHOTS",
                        format!(
                            "{} and {second} are not snapshots of one lineage (they do not share a data key); their blocks cannot be compared",
                            a.snapshot_id
                        ),
                    ));
                }
                let key = self.token_key()?;
                let now = self.kms.clock().now();
                let scope = format!("{}/{second}", first.unwrap_or(""));
                let (start, max) = page_bounds(&key, &scope, page, &now)?;
                let expiry = (now + BLOCK_TOKEN_LIFE).timestamp();
                let empty = std::collections::BTreeMap::new();
                let a_blocks = a.as_ref().map_or(&empty, |a| &a.blocks);
                let token = |s: &SnapshotRecord, i: u64| {
                    s.blocks
                        .get(&i)
                        .map(|d| block_token(&key, &s.snapshot_id, i, d, expiry))
                };
                let indices: std::collections::BTreeSet<u64> = a_blocks
                    .range(start..)
                    .map(|(i, _)| *i)
                    .chain(b.blocks.range(start..).map(|(i, _)| *i))
                    .collect();
                let mut changed_blocks = Vec::new();
                let mut next_token = None;
                for i in indices
                    .into_iter()
                    .filter(|i| a_blocks.get(i) != b.blocks.get(i))
                {
                    if changed_blocks.len() == max {
                        next_token = Some(page_token(&key, &scope, i, &now));
                        break;
                    }
                    changed_blocks.push(ChangedBlock {
                        block_index: i,
                        first_block_token: a.as_ref().and_then(|a| token(a, i)),
                        second_block_token: token(&b, i),
                    });
                }
                Ok(ListChangedBlocksResponse {
                    changed_blocks,
                    expiry_time: Time(now + BLOCK_TOKEN_LIFE),
                    volume_size: b.size_bytes.div_ceil(GIB),
                    block_size: BLOCK,
                    next_token,
                })
            },
            |_| Value::Null,
        )
    }

    /// GetSnapshotBlock: the block's plaintext (512 KiB), decrypted with the
    /// snapshot's data key, which the KMS unwraps for the caller.
    pub fn get_snapshot_block(
        &self,
        caller: &Caller,
        snapshot_id: &str,
        index: u64,
        token: &str,
    ) -> Result<SnapshotBlock> {
        let request = json!({ "snapshotId": snapshot_id, "blockIndex": index });
        self.call_ebs(
            caller,
            "GetSnapshotBlock",
            request,
            |t| {
                self.direct_snapshot(caller, "ebs:GetSnapshotBlock", snapshot_id, t)?;
                // Held from before the manifest is read until the block is: no
                // collection removes it (its snapshot deleted meanwhile) in between.
                let reading = self.blocks.share()?;
                let s = self.completed_snapshot(snapshot_id)?;
                let key = self.token_key()?;
                let now = self.kms.clock().now();
                let digest = s.blocks.get(&index).map(String::as_str);
                check_block_token(&key, token, snapshot_id, index, digest, &now)?;
                let digest = digest.expect("a valid token names a stored block");
                let xts = if s.encrypted {
                    let k = self.snapshot_key(caller, &s)?;
                    Some(Xts::new(k.expose()).map_err(|e| {
                        Error::new(ErrorKind::VolumeImage, format!("{snapshot_id}: {e}"))
                    })?)
                } else {
                    None
                };
                let stored = self
                    .blocks
                    .get(digest)
                    .map_err(|e| e.context(format!("{snapshot_id} block {index}")))?;
                drop(reading);
                let mut data = zeroize::Zeroizing::new(Vec::with_capacity(usize_of(BLOCK)));
                data.extend_from_slice(&stored);
                data.resize(usize_of(BLOCK), 0);
                if let Some(x) = &xts {
                    units::decrypt(x, index * BLOCK / DATA_UNIT, &mut data);
                }
                let checksum = checksum(&data);
                Ok(SnapshotBlock { data, checksum })
            },
            |_| Value::Null,
        )
    }

    // ---- writing ---------------------------------------------------------

    /// StartSnapshot: a new `pending` snapshot to be written block by block.
    pub fn start_snapshot(
        &self,
        caller: &Caller,
        r: StartSnapshotRequest,
    ) -> Result<StartSnapshotResponse> {
        let request = json!({
            "volumeSize": r.volume_size,
            "parentSnapshotId": r.parent_snapshot_id,
            "description": r.description,
            "encrypted": r.encrypted,
            "kmsKeyArn": r.kms_key_arn,
            "timeout": r.timeout,
            "clientToken": r.client_token,
            "tags": r.tags,
        });
        self.call_ebs(
            caller,
            "StartSnapshot",
            request,
            |t| self.start_snapshot_op(caller, r, t),
            |s| json!({ "snapshotId": s.snapshot_id, "status": s.status }),
        )
    }

    fn start_snapshot_response(&self, s: &SnapshotRecord) -> StartSnapshotResponse {
        StartSnapshotResponse {
            description: Some(s.description.clone()).filter(|d| !d.is_empty()),
            snapshot_id: s.snapshot_id.clone(),
            owner_id: self.kms.account_id().to_string(),
            status: s.state.clone(),
            start_time: Time(s.start_time),
            volume_size: s.size_bytes.div_ceil(GIB),
            block_size: BLOCK,
            tags: s.tags.clone(),
            parent_snapshot_id: s.parent.clone(),
            kms_key_arn: s.kms_key_arn.clone(),
            sse_type: s
                .direct
                .as_ref()
                .map(|d| d.sse_type.clone())
                .unwrap_or_else(|| if s.encrypted { "sse-kms" } else { "none" }.into()),
        }
    }

    fn start_snapshot_op(
        &self,
        caller: &Caller,
        r: StartSnapshotRequest,
        t: &mut super::trail::Trail,
    ) -> Result<StartSnapshotResponse> {
        self.settle_direct_snapshots()?;
        if !(1..=MAX_GIB).contains(&r.volume_size) {
            return Err(invalid(
                "INVALID_VOLUME_SIZE",
                format!(
                    "VolumeSize {} GiB is not between 1 and {MAX_GIB} GiB",
                    r.volume_size
                ),
            ));
        }
        let timeout = r.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !TIMEOUTS.contains(&timeout) {
            return Err(invalid(
                "INVALID_PARAMETER_VALUE",
                format!(
                    "Timeout {timeout} is not between {} and {} minutes",
                    TIMEOUTS.start(),
                    TIMEOUTS.end()
                ),
            ));
        }
        if r.description.as_ref().is_some_and(|d| d.len() > 255) {
            return Err(invalid(
                "INVALID_PARAMETER_VALUE",
                "Description is longer than 255 characters",
            ));
        }
        if let Some(token) = &r.client_token {
            // The same ClientToken: the snapshot it started.
            let started = self
                .store
                .lock()
                .expect("ec2 store")
                .snapshots()?
                .into_iter()
                .find(|s| {
                    s.direct
                        .as_ref()
                        .is_some_and(|d| d.client_token.as_deref() == Some(token))
                });
            if let Some(s) = started {
                t.resources
                    .push(snapshot_arn(self.region(), &s.snapshot_id));
                self.authorize(
                    caller,
                    "ebs:StartSnapshot",
                    &[self.snapshot_target(self.region(), &s)],
                )?;
                return Ok(self.start_snapshot_response(&s));
            }
        }
        if r.kms_key_arn.is_some() && r.encrypted != Some(true) {
            return Err(invalid(
                "INVALID_PARAMETER_VALUE",
                "KmsKeyArn requires Encrypted to be true",
            ));
        }
        let by_default = self.by_default()?;
        if by_default && r.encrypted == Some(false) {
            return Err(invalid(
                "INVALID_PARAMETER_VALUE",
                format!(
                    "Encryption by default is enabled in {}: Encrypted cannot be false",
                    self.region()
                ),
            ));
        }
        let parent = r
            .parent_snapshot_id
            .as_deref()
            .map(|p| self.snapshot_record(p))
            .transpose()?;
        if let Some(p) = &parent {
            t.resources
                .push(snapshot_arn(self.region(), &p.snapshot_id));
            if p.encrypted && r.encrypted == Some(false) {
                return Err(invalid(
                    "INVALID_PARAMETER_VALUE",
                    format!(
                        "The parent snapshot {} is encrypted: Encrypted cannot be false",
                        p.snapshot_id
                    ),
                ));
            }
        }
        let encrypt =
            r.encrypted == Some(true) || by_default || parent.as_ref().is_some_and(|p| p.encrypted);
        let size_bytes = r.volume_size * GIB;
        let new = self.new_snapshot_target(&NewSnapshot {
            size_bytes,
            encrypted: encrypt,
            parent_volume: None,
            parent_snapshot: parent
                .as_ref()
                .map(|p| snapshot_arn(self.region(), &p.snapshot_id)),
            tags: &r.tags,
        });
        let mut targets = vec![new.clone()];
        if let Some(p) = &parent {
            targets.push(self.snapshot_target(self.region(), p));
        }
        self.authorize(caller, "ebs:StartSnapshot", &targets)?;
        self.authorize_tags(caller, "StartSnapshot", &new, &r.tags)?;
        let parent = parent
            .map(|p| self.completed_snapshot(&p.snapshot_id))
            .transpose()?;
        let (key_arn, sse_type) = if encrypt {
            let k = match (&r.kms_key_arn, &parent) {
                (Some(k), _) => k.clone(),
                (None, Some(p)) if p.encrypted => p
                    .kms_key_arn
                    .clone()
                    .expect("encrypted snapshots have a key"),
                (None, _) => self.default_key_id()?,
            };
            let sse = if self.owner.is_default_alias(&k) {
                "sse-ebs"
            } else {
                "sse-kms"
            };
            (Some(self.resolve_key(caller, &k)?), sse)
        } else {
            (None, "none")
        };
        if let Some(p) = &parent
            && (p.encrypted != encrypt || p.kms_key_arn != key_arn)
        {
            return Err(invalid(
                "INVALID_PARAMETER_VALUE",
                format!(
                    "ebsim writes a child snapshot under its parent's data key: {} is {}, the new snapshot would be {}; start it without ParentSnapshotId, or with the parent's key",
                    p.snapshot_id,
                    p.kms_key_arn.as_deref().unwrap_or("unencrypted"),
                    key_arn.as_deref().unwrap_or("unencrypted")
                ),
            ));
        }
        let snapshot_id = new_id("snap");
        t.resources.push(snapshot_arn(self.region(), &snapshot_id));
        let via = self.via(caller);
        // Parent blocks are named by the new record from its commit on; until then
        // the shared lock keeps a collection (the parent deleted meanwhile) off them.
        let writing = self.blocks.share()?;
        let (wrapped_key, data_key_id, kms_key_arn) = match (&key_arn, &parent) {
            (Some(arn), Some(p)) => {
                let re = self.kms.re_encrypt(
                    &via,
                    ReEncryptRequest {
                        ciphertext_blob: Blob::new(p.wrapped_key.clone().unwrap_or_default()),
                        source_encryption_context: self
                            .context(p.key_context_id.as_deref().unwrap_or_default()),
                        source_key_id: Some(arn.clone()),
                        destination_key_id: arn.clone(),
                        destination_encryption_context: self.context(&snapshot_id),
                        ..Default::default()
                    },
                )?;
                (
                    Some(re.ciphertext_blob.as_slice().to_vec()),
                    p.data_key_id.clone(),
                    Some(re.key_id),
                )
            }
            (Some(arn), None) => {
                let (wrapped, arn, _key) = self.new_data_key(caller, arn, &snapshot_id)?;
                (Some(wrapped), Some(new_data_key_id()), Some(arn))
            }
            (None, Some(p)) => (None, p.data_key_id.clone(), None),
            (None, None) => (None, None, None),
        };
        let now = self.kms.clock().now();
        let record = SnapshotRecord {
            snapshot_id: snapshot_id.clone(),
            volume_id: "vol-ffffffff".into(),
            size_bytes,
            start_time: now,
            description: r.description.unwrap_or_default(),
            encrypted: encrypt,
            kms_key_arn,
            wrapped_key,
            key_context_id: encrypt.then(|| snapshot_id.clone()),
            data_key_id,
            parent: parent.as_ref().map(|p| p.snapshot_id.clone()),
            tags: r.tags,
            blocks: parent
                .as_ref()
                .map(|p| {
                    p.blocks
                        .iter()
                        .filter(|(i, _)| **i * BLOCK < size_bytes)
                        .map(|(i, d)| (*i, d.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            state: "pending".into(),
            state_message: None,
            progress: 0,
            direct: Some(DirectWrite {
                deadline: now + TimeDelta::minutes(i64::from(timeout)),
                timeout_minutes: timeout,
                client_token: r.client_token,
                sse_type: sse_type.into(),
                written: Default::default(),
            }),
        };
        self.write(|tx| tx.put_snapshot(&record))?;
        drop(writing);
        Ok(self.start_snapshot_response(&record))
    }

    /// The snapshot `s`, if it can still be written: `pending`, started with
    /// StartSnapshot, within its Timeout.
    fn check_writable(s: &SnapshotRecord, now: &Timestamp) -> Result<()> {
        match &s.direct {
            Some(d) if s.state == "pending" && *now < d.deadline => Ok(()),
            Some(_) if s.state == "pending" => Err(invalid(
                "WRITE_REQUEST_TIMEOUT",
                format!("{} was not completed within its Timeout", s.snapshot_id),
            )),
            _ => Err(invalid(
                "INVALID_SNAPSHOT_ID",
                format!(
                    "{} is {}: blocks can only be written to a pending snapshot started with StartSnapshot",
                    s.snapshot_id, s.state
                ),
            )),
        }
    }

    /// PutSnapshotBlock: one 512 KiB block, its checksum checked, encrypted under
    /// the snapshot's data key and stored.
    pub fn put_snapshot_block(
        &self,
        caller: &Caller,
        r: PutSnapshotBlockRequest,
    ) -> Result<PutSnapshotBlockResponse> {
        let request = json!({
            "snapshotId": r.snapshot_id,
            "blockIndex": r.block_index,
            "dataLength": r.data_length,
            "progress": r.progress,
            "checksum": r.checksum,
            "checksumAlgorithm": r.checksum_algorithm,
        });
        let snapshot_id = r.snapshot_id.clone();
        self.call_ebs(
            caller,
            "PutSnapshotBlock",
            request,
            |t| {
                let s = self.direct_snapshot(caller, "ebs:PutSnapshotBlock", &snapshot_id, t)?;
                self.put_snapshot_block_op(caller, &s, r)
            },
            |p| json!({ "checksum": p.checksum, "checksumAlgorithm": p.checksum_algorithm }),
        )
    }

    fn put_snapshot_block_op(
        &self,
        caller: &Caller,
        s: &SnapshotRecord,
        r: PutSnapshotBlockRequest,
    ) -> Result<PutSnapshotBlockResponse> {
        let id = &s.snapshot_id;
        let index = r.block_index;
        Self::check_writable(s, &self.kms.clock().now())?;
        if r.checksum_algorithm != "SHA256" {
            return Err(invalid(
                "INVALID_PARAMETER_VALUE",
                format!(
                    "ChecksumAlgorithm '{}' is not supported (SHA256 is)",
                    r.checksum_algorithm
                ),
            ));
        }
        if r.data_length != BLOCK || r.block_data.len() as u64 != BLOCK {
            return Err(invalid(
                "INVALID_BLOCK",
                format!(
                    "A block is {BLOCK} bytes: DataLength is {} and {} bytes of data were sent",
                    r.data_length,
                    r.block_data.len()
                ),
            ));
        }
        let blocks_in = s.size_bytes / BLOCK;
        if index >= blocks_in {
            return Err(invalid(
                "INVALID_BLOCK",
                format!(
                    "Block index {index} is past the end of {id} ({blocks_in} blocks of 512 KiB)"
                ),
            ));
        }
        if r.progress.is_some_and(|p| p > 100) {
            return Err(invalid(
                "INVALID_PARAMETER_VALUE",
                "Progress must be between 0 and 100",
            ));
        }
        let sum = checksum(&r.block_data);
        if sum != r.checksum {
            return Err(invalid(
                "INVALID_BLOCK",
                format!(
                    "The checksum {} does not match the SHA-256 of the data of block {index} ({sum})",
                    r.checksum
                ),
            ));
        }
        let mut data = r.block_data;
        if s.encrypted {
            let k = self.snapshot_key(caller, s)?;
            let x = Xts::new(k.expose())
                .map_err(|e| Error::new(ErrorKind::VolumeImage, format!("{id}: {e}")))?;
            units::encrypt(&x, index * BLOCK / DATA_UNIT, &mut data);
        }
        // A block is stored before the record names it: a crash in between leaves
        // it unnamed, so a collection is asked for first (kept in ec2.db, the next
        // process to open the region runs it); CompleteSnapshot runs it.
        if !self.block_collection_requested()? {
            self.request_block_collection()?;
        }
        let writing = self.blocks.share()?;
        let digest = if units::is_zero(&data) {
            None
        } else {
            let d = self.blocks.put(&data)?;
            self.blocks.sync()?;
            Some(d)
        };
        crate::fault::point("put-block:after-store");
        drop(data);
        let now = self.kms.clock().now();
        let committed = self.write(|tx| {
            let mut cur = tx.snapshot(id)?.ok_or_else(|| no_snapshot(id))?;
            Self::check_writable(&cur, &now)?;
            match &digest {
                Some(d) => cur.blocks.insert(index, d.clone()),
                None => cur.blocks.remove(&index),
            };
            if let Some(d) = cur.direct.as_mut() {
                d.written.insert(index, sum.clone());
            }
            if let Some(p) = r.progress {
                cur.progress = p;
            }
            tx.put_snapshot(&cur)
        });
        drop(writing);
        // A block written again leaves its first version unnamed, and a refused
        // commit the new one: the collection asked for above removes them.
        committed?;
        Ok(PutSnapshotBlockResponse {
            checksum: sum,
            checksum_algorithm: "SHA256".into(),
        })
    }

    /// CompleteSnapshot: the snapshot becomes `completed` once the blocks written
    /// match ChangedBlocksCount (and the aggregated checksum, when given).
    pub fn complete_snapshot(
        &self,
        caller: &Caller,
        r: CompleteSnapshotRequest,
    ) -> Result<CompleteSnapshotResponse> {
        let request = json!({
            "snapshotId": r.snapshot_id,
            "changedBlocksCount": r.changed_blocks_count,
            "checksum": r.checksum,
            "checksumAlgorithm": r.checksum_algorithm,
            "checksumAggregationMethod": r.checksum_aggregation_method,
        });
        self.call_ebs(
            caller,
            "CompleteSnapshot",
            request,
            |t| {
                let s = self.direct_snapshot(caller, "ebs:CompleteSnapshot", &r.snapshot_id, t)?;
                self.complete_snapshot_op(&s, &r)
            },
            |c| json!({ "status": c.status }),
        )
    }

    fn complete_snapshot_op(
        &self,
        s: &SnapshotRecord,
        r: &CompleteSnapshotRequest,
    ) -> Result<CompleteSnapshotResponse> {
        let id = &s.snapshot_id;
        if s.state == "error" {
            return Ok(CompleteSnapshotResponse {
                status: "error".into(),
            });
        }
        Self::check_writable(s, &self.kms.clock().now())?;
        let written = &s.direct.as_ref().expect("writable").written;
        if r.changed_blocks_count != written.len() as u64 {
            return Err(invalid(
                "INVALID_PARAMETER_VALUE",
                format!(
                    "ChangedBlocksCount is {}, but {} blocks were written to {id}",
                    r.changed_blocks_count,
                    written.len()
                ),
            ));
        }
        if let Some(given) = &r.checksum {
            if r.checksum_algorithm.as_deref() != Some("SHA256")
                || r.checksum_aggregation_method.as_deref() != Some("LINEAR")
            {
                return Err(invalid(
                    "INVALID_PARAMETER_VALUE",
                    "A Checksum needs ChecksumAlgorithm SHA256 and ChecksumAggregationMethod LINEAR",
                ));
            }
            let mut h = Sha256::new();
            for sum in written.values() {
                h.update(B64.decode(sum).unwrap_or_default());
            }
            let want = B64.encode(h.finalize());
            if *given != want {
                return Err(invalid(
                    "INVALID_PARAMETER_VALUE",
                    format!(
                        "The checksum {given} does not match the SHA-256 of the checksums of the {} blocks written, in block order ({want})",
                        written.len()
                    ),
                ));
            }
        }
        let now = self.kms.clock().now();
        self.write(|tx| {
            let mut cur = tx.snapshot(id)?.ok_or_else(|| no_snapshot(id))?;
            Self::check_writable(&cur, &now)?;
            if cur.direct.as_ref().map(|d| d.written.len()) != Some(written.len()) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("Blocks were written to {id} while it was being completed"),
                ));
            }
            cur.state = "completed".into();
            cur.progress = 100;
            cur.direct = None;
            tx.put_snapshot(&cur)
        })?;
        if self.block_collection_requested()? {
            self.collect_blocks()?;
        }
        Ok(CompleteSnapshotResponse {
            status: "completed".into(),
        })
    }
}

/// An error from EC2 or the KMS, as the EBS direct APIs name it.
pub fn in_ebs_terms(e: Error) -> Error {
    if e.field(Field::Reason).is_some() {
        return e;
    }
    let (kind, reason) = match e.kind() {
        ErrorKind::InvalidSnapshotNotFound => (ErrorKind::ResourceNotFound, "SNAPSHOT_NOT_FOUND"),
        ErrorKind::UnauthorizedOperation => (ErrorKind::AccessDenied, "UNAUTHORIZED_ACCOUNT"),
        // From the KMS, the dependency.
        ErrorKind::AccessDenied => (ErrorKind::AccessDenied, "DEPENDENCY_ACCESS_DENIED"),
        ErrorKind::NotFound
        | ErrorKind::Disabled
        | ErrorKind::KmsInvalidState
        | ErrorKind::InvalidKeyUsage
        | ErrorKind::IncorrectKey
        | ErrorKind::InvalidCiphertext
        | ErrorKind::InvalidArn => (ErrorKind::Validation, "INVALID_CUSTOMER_KEY"),
        ErrorKind::Throttling | ErrorKind::LimitExceeded => {
            (ErrorKind::RequestThrottled, "DEPENDENCY_REQUEST_THROTTLED")
        }
        ErrorKind::InvalidParameterValue
        | ErrorKind::InvalidParameterCombination
        | ErrorKind::MissingParameter
        | ErrorKind::IncorrectState
        | ErrorKind::Validation => (ErrorKind::Validation, "INVALID_PARAMETER_VALUE"),
        ErrorKind::Tag => (ErrorKind::Validation, "INVALID_TAG"),
        _ => return e,
    };
    let mut out = Error::new(kind, e.message()).with(Field::Reason, reason);
    for (f, v) in e.fields() {
        out = out.with(*f, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_block_and_expire() {
        let key = SecretBytes::random(32);
        let now = chrono::Utc::now();
        let exp = (now + BLOCK_TOKEN_LIFE).timestamp();
        let t = block_token(&key, "snap-0123456789abcdef0", 3, "d1", exp);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        );
        check_block_token(&key, &t, "snap-0123456789abcdef0", 3, Some("d1"), &now).unwrap();
        for (snap, index, digest) in [
            ("snap-0123456789abcdef1", 3, Some("d1")),
            ("snap-0123456789abcdef0", 4, Some("d1")),
            ("snap-0123456789abcdef0", 3, Some("d2")),
            ("snap-0123456789abcdef0", 3, None),
        ] {
            let e = check_block_token(&key, &t, snap, index, digest, &now).unwrap_err();
            assert_eq!(e.field(Field::Reason), Some("INVALID_BLOCK_TOKEN"));
        }
        let other = SecretBytes::random(32);
        assert!(
            check_block_token(&other, &t, "snap-0123456789abcdef0", 3, Some("d1"), &now).is_err()
        );
        let later = now + BLOCK_TOKEN_LIFE + TimeDelta::seconds(2);
        let e = check_block_token(&key, &t, "snap-0123456789abcdef0", 3, Some("d1"), &later)
            .unwrap_err();
        assert!(e.message().contains("expired"), "{e}");
        assert!(
            check_block_token(&key, "!!", "snap-0123456789abcdef0", 3, Some("d1"), &now).is_err()
        );

        let p = page_token(&key, "snap-a", 700, &now);
        let page = BlockPage {
            next_token: Some(p),
            max_results: Some(5),
            starting_block_index: Some(3),
        };
        assert_eq!(
            page_bounds(&key, "snap-a", &page, &now).unwrap(),
            (700, 100)
        );
        let e = page_bounds(&key, "snap-b", &page, &now).unwrap_err();
        assert_eq!(e.field(Field::Reason), Some("INVALID_PAGE_TOKEN"));
        let late = now + PAGE_TOKEN_LIFE + TimeDelta::seconds(2);
        assert!(page_bounds(&key, "snap-a", &page, &late).is_err());
    }
}
