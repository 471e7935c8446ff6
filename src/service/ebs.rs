//! The EBS direct APIs' operation table (botocore's `ebs` model): one variant per
//! operation, its AWS name, its request in the model's member names and the one
//! place it is run, on the region's EC2 engine (`src/ec2/direct.rs`), which
//! authorizes with the `ebs:` actions and records each call in CloudTrail with
//! `eventSource: ebs.amazonaws.com`.
//!
//! Errors come out in the EBS model's words, whatever raised them: EC2's
//! `InvalidSnapshot.NotFound` is `ResourceNotFoundException` (reason
//! `SNAPSHOT_NOT_FOUND`), EC2's denial `AccessDeniedException`
//! (`UNAUTHORIZED_ACCOUNT`), the KMS's denial `AccessDeniedException`
//! (`DEPENDENCY_ACCESS_DENIED`), a KMS key that cannot be used
//! `ValidationException` (`INVALID_CUSTOMER_KEY`), EC2's parameter errors
//! `ValidationException` (`INVALID_PARAMETER_VALUE`); the reason is the error's
//! [`Field::Reason`].
//!
//! GetSnapshotBlock answers with bytes, not JSON: [`EbsOutput::Block`].

use super::{serialization_error, to_value, unknown_operation};
use crate::ec2::Ec2;
use crate::error::{Error, ErrorKind, Result};
use crate::kms::access::Caller;
use serde::Deserialize;
use serde_json::Value;

pub use crate::ec2::direct::{checksum, ebs_error, in_ebs_terms};
pub use crate::ec2::model::{
    BlockPage, CompleteSnapshotRequest, PutSnapshotBlockRequest, SnapshotBlock,
    StartSnapshotRequest,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListSnapshotBlocksRequest {
    pub snapshot_id: String,
    pub next_token: Option<String>,
    pub max_results: Option<u64>,
    pub starting_block_index: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListChangedBlocksRequest {
    pub first_snapshot_id: Option<String>,
    pub second_snapshot_id: String,
    pub next_token: Option<String>,
    pub max_results: Option<u64>,
    pub starting_block_index: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GetSnapshotBlockRequest {
    pub snapshot_id: String,
    pub block_index: u64,
    pub block_token: String,
}

/// PutSnapshotBlock read from JSON: the block as base64 (`BlockData`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutSnapshotBlockJson {
    snapshot_id: String,
    block_index: u64,
    block_data: String,
    data_length: u64,
    #[serde(default)]
    progress: Option<u32>,
    checksum: String,
    checksum_algorithm: String,
}

/// One EBS direct API request.
#[derive(Debug, Clone)]
pub enum EbsRequest {
    ListSnapshotBlocks(ListSnapshotBlocksRequest),
    ListChangedBlocks(ListChangedBlocksRequest),
    GetSnapshotBlock(GetSnapshotBlockRequest),
    StartSnapshot(StartSnapshotRequest),
    PutSnapshotBlock(PutSnapshotBlockRequest),
    CompleteSnapshot(CompleteSnapshotRequest),
}

/// Every EBS direct API ebsim serves, by its AWS name.
pub const OPERATIONS: &[&str] = &[
    "ListSnapshotBlocks",
    "ListChangedBlocks",
    "GetSnapshotBlock",
    "StartSnapshot",
    "PutSnapshotBlock",
    "CompleteSnapshot",
];

/// What an EBS direct API answers.
pub enum EbsOutput {
    /// The output shape in the model's member names (timestamps ISO 8601).
    Json(Value),
    /// GetSnapshotBlock's block, its length and checksum (the response headers).
    Block(SnapshotBlock),
}

impl EbsRequest {
    pub fn name(&self) -> &'static str {
        match self {
            EbsRequest::ListSnapshotBlocks(_) => "ListSnapshotBlocks",
            EbsRequest::ListChangedBlocks(_) => "ListChangedBlocks",
            EbsRequest::GetSnapshotBlock(_) => "GetSnapshotBlock",
            EbsRequest::StartSnapshot(_) => "StartSnapshot",
            EbsRequest::PutSnapshotBlock(_) => "PutSnapshotBlock",
            EbsRequest::CompleteSnapshot(_) => "CompleteSnapshot",
        }
    }

    /// Reads a request from its operation name and the model's member names
    /// (PutSnapshotBlock's `BlockData` as base64).
    pub fn from_json(name: &str, body: Value) -> Result<Self> {
        let se = |e| serialization_error(name, e);
        Ok(match name {
            "ListSnapshotBlocks" => {
                EbsRequest::ListSnapshotBlocks(serde_json::from_value(body).map_err(se)?)
            }
            "ListChangedBlocks" => {
                EbsRequest::ListChangedBlocks(serde_json::from_value(body).map_err(se)?)
            }
            "GetSnapshotBlock" => {
                EbsRequest::GetSnapshotBlock(serde_json::from_value(body).map_err(se)?)
            }
            "StartSnapshot" => EbsRequest::StartSnapshot(serde_json::from_value(body).map_err(se)?),
            "CompleteSnapshot" => {
                EbsRequest::CompleteSnapshot(serde_json::from_value(body).map_err(se)?)
            }
            "PutSnapshotBlock" => {
                use base64::Engine;
                let j: PutSnapshotBlockJson = serde_json::from_value(body).map_err(se)?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&j.block_data)
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::Serialization,
                            format!("PutSnapshotBlock: BlockData is not base64: {e}"),
                        )
                    })?;
                EbsRequest::PutSnapshotBlock(PutSnapshotBlockRequest {
                    snapshot_id: j.snapshot_id,
                    block_index: j.block_index,
                    block_data: zeroize::Zeroizing::new(data),
                    data_length: j.data_length,
                    progress: j.progress,
                    checksum: j.checksum,
                    checksum_algorithm: j.checksum_algorithm,
                })
            }
            _ => return Err(unknown_operation("EBS", name)),
        })
    }

    /// Runs it on the region's EC2; errors in the EBS model's words.
    pub(super) fn run(self, ec2: &Ec2, caller: &Caller) -> Result<EbsOutput> {
        use EbsRequest as R;
        let page = |next_token, max_results, starting_block_index| BlockPage {
            next_token,
            max_results,
            starting_block_index,
        };
        let out = match self {
            R::ListSnapshotBlocks(r) => ec2
                .list_snapshot_blocks(
                    caller,
                    &r.snapshot_id,
                    &page(r.next_token, r.max_results, r.starting_block_index),
                )
                .map(|v| EbsOutput::Json(to_value(v))),
            R::ListChangedBlocks(r) => ec2
                .list_changed_blocks_page(
                    caller,
                    r.first_snapshot_id.as_deref(),
                    &r.second_snapshot_id,
                    &page(r.next_token, r.max_results, r.starting_block_index),
                )
                .map(|v| EbsOutput::Json(to_value(v))),
            R::GetSnapshotBlock(r) => ec2
                .get_snapshot_block(caller, &r.snapshot_id, r.block_index, &r.block_token)
                .map(EbsOutput::Block),
            R::StartSnapshot(r) => ec2
                .start_snapshot(caller, r)
                .map(|v| EbsOutput::Json(to_value(v))),
            R::PutSnapshotBlock(r) => ec2
                .put_snapshot_block(caller, r)
                .map(|v| EbsOutput::Json(to_value(v))),
            R::CompleteSnapshot(r) => ec2
                .complete_snapshot(caller, r)
                .map(|v| EbsOutput::Json(to_value(v))),
        };
        out.map_err(in_ebs_terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Field;
    use serde_json::json;

    #[test]
    fn every_operation_reads_from_json_and_errors_read_as_ebs_writes_them() {
        for name in OPERATIONS {
            match EbsRequest::from_json(name, json!({})) {
                Ok(r) => assert_eq!(r.name(), *name),
                Err(e) => assert_eq!(e.kind(), ErrorKind::Serialization, "{name}: {e}"),
            }
        }
        assert_eq!(
            EbsRequest::from_json("GetSnapshots", json!({}))
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownOperation
        );
        let r = EbsRequest::from_json(
            "PutSnapshotBlock",
            json!({"SnapshotId": "snap-1", "BlockIndex": 2, "BlockData": "AAEC",
                   "DataLength": 3, "Checksum": "x", "ChecksumAlgorithm": "SHA256"}),
        )
        .unwrap();
        match r {
            EbsRequest::PutSnapshotBlock(p) => assert_eq!(&p.block_data[..], &[0, 1, 2]),
            _ => panic!("not a put"),
        }
        let e = in_ebs_terms(Error::new(ErrorKind::InvalidSnapshotNotFound, "gone"));
        assert_eq!(e.code(), "ResourceNotFoundException");
        assert_eq!(e.field(Field::Reason), Some("SNAPSHOT_NOT_FOUND"));
        let e = in_ebs_terms(Error::new(ErrorKind::UnauthorizedOperation, "no"));
        assert_eq!(e.code(), "AccessDeniedException");
        assert_eq!(e.field(Field::Reason), Some("UNAUTHORIZED_ACCOUNT"));
        let e = in_ebs_terms(Error::new(ErrorKind::AccessDenied, "kms says no"));
        assert_eq!(e.field(Field::Reason), Some("DEPENDENCY_ACCESS_DENIED"));
        let e = in_ebs_terms(Error::new(ErrorKind::Disabled, "disabled"));
        assert_eq!(e.code(), "ValidationException");
        assert_eq!(e.field(Field::Reason), Some("INVALID_CUSTOMER_KEY"));
        let kept = in_ebs_terms(Error::new(ErrorKind::Internal, "disk"));
        assert_eq!(kept.kind(), ErrorKind::Internal);
    }
}
