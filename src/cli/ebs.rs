//! `ebsim ebs …`: the EBS direct APIs with the AWS CLI's parameter names
//! (`aws ebs …`). GetSnapshotBlock writes the block to its OUTFILE argument, as
//! `aws ebs get-snapshot-block … OUTFILE` does, and prints the rest.

use super::{Ctx, input};
use crate::error::Result;
use crate::service::ebs::*;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum EbsCommand {
    /// The blocks of a completed snapshot that hold data, with a token for each
    ListSnapshotBlocks {
        #[arg(long)]
        snapshot_id: String,
        /// At most this many blocks (100-10000), with NextToken
        #[arg(long)]
        max_results: Option<u64>,
        #[arg(long)]
        next_token: Option<String>,
        #[arg(long)]
        starting_block_index: Option<u64>,
    },
    /// The 512 KiB blocks that differ between two snapshots of one volume lineage
    /// (without --first-snapshot-id: every block of the second that holds data)
    ListChangedBlocks {
        #[arg(long)]
        first_snapshot_id: Option<String>,
        #[arg(long)]
        second_snapshot_id: String,
        #[arg(long)]
        max_results: Option<u64>,
        #[arg(long)]
        next_token: Option<String>,
        #[arg(long)]
        starting_block_index: Option<u64>,
    },
    /// Writes one block's data (decrypted) to OUTFILE
    GetSnapshotBlock {
        #[arg(long)]
        snapshot_id: String,
        #[arg(long)]
        block_index: u64,
        /// A token from list-snapshot-blocks or list-changed-blocks
        #[arg(long)]
        block_token: String,
        /// Where the block's 524288 bytes go
        outfile: std::path::PathBuf,
    },
    /// Starts a snapshot to be written block by block
    StartSnapshot {
        /// Size of the volume it is of, in GiB
        #[arg(long)]
        volume_size: u64,
        /// Start from this snapshot's blocks (same key)
        #[arg(long)]
        parent_snapshot_id: Option<String>,
        /// Key=k,Value=v ... or a JSON list
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        client_token: Option<String>,
        #[arg(long, overrides_with = "no_encrypted")]
        encrypted: bool,
        #[arg(long)]
        no_encrypted: bool,
        /// A KMS key ARN (requires --encrypted)
        #[arg(long)]
        kms_key_arn: Option<String>,
        /// Minutes (10-4320) before an uncompleted snapshot goes to error [default: 60]
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// Writes one 512 KiB block of a started snapshot
    PutSnapshotBlock {
        #[arg(long)]
        snapshot_id: String,
        #[arg(long)]
        block_index: u64,
        /// FILE: a path, as the AWS CLI takes streaming blobs (fileb://FILE too)
        #[arg(long)]
        block_data: String,
        #[arg(long)]
        data_length: u64,
        /// Base64 SHA-256 of the data
        #[arg(long)]
        checksum: String,
        #[arg(long)]
        checksum_algorithm: String,
        #[arg(long)]
        progress: Option<u32>,
    },
    /// Completes a started snapshot once every block is written
    CompleteSnapshot {
        #[arg(long)]
        snapshot_id: String,
        #[arg(long)]
        changed_blocks_count: u64,
        #[arg(long)]
        checksum: Option<String>,
        #[arg(long)]
        checksum_algorithm: Option<String>,
        #[arg(long)]
        checksum_aggregation_method: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: EbsCommand) -> Result<()> {
    use EbsCommand as C;
    let rc = ctx.request_context();
    let json = |out: EbsOutput| match out {
        EbsOutput::Json(v) => v,
        EbsOutput::Block(_) => unreachable!("only GetSnapshotBlock answers with a block"),
    };
    let req = match cmd {
        C::ListSnapshotBlocks {
            snapshot_id,
            max_results,
            next_token,
            starting_block_index,
        } => EbsRequest::ListSnapshotBlocks(ListSnapshotBlocksRequest {
            snapshot_id,
            next_token,
            max_results,
            starting_block_index,
        }),
        C::ListChangedBlocks {
            first_snapshot_id,
            second_snapshot_id,
            max_results,
            next_token,
            starting_block_index,
        } => EbsRequest::ListChangedBlocks(ListChangedBlocksRequest {
            first_snapshot_id,
            second_snapshot_id,
            next_token,
            max_results,
            starting_block_index,
        }),
        C::GetSnapshotBlock {
            snapshot_id,
            block_index,
            block_token,
            outfile,
        } => {
            let req = GetSnapshotBlockRequest {
                snapshot_id,
                block_index,
                block_token,
            };
            let out = ctx.backoff.run(|| {
                ctx.services
                    .ebs(&rc, EbsRequest::GetSnapshotBlock(req.clone()))
            })?;
            let EbsOutput::Block(b) = out else {
                unreachable!("GetSnapshotBlock answers with a block")
            };
            std::fs::write(&outfile, &b.data[..])
                .map_err(|e| crate::error::Error::io_file(&outfile, e))?;
            let v = serde_json::json!({
                "DataLength": b.data.len(),
                "Checksum": b.checksum,
                "ChecksumAlgorithm": "SHA256",
            });
            return ctx.print("GetSnapshotBlock", &v);
        }
        C::StartSnapshot {
            volume_size,
            parent_snapshot_id,
            tags,
            description,
            client_token,
            encrypted,
            no_encrypted,
            kms_key_arn,
            timeout,
        } => EbsRequest::StartSnapshot(StartSnapshotRequest {
            volume_size,
            parent_snapshot_id,
            tags: input::structs("--tags", &tags)?,
            description,
            client_token,
            encrypted: if encrypted {
                Some(true)
            } else if no_encrypted {
                Some(false)
            } else {
                None
            },
            kms_key_arn,
            timeout,
        }),
        C::PutSnapshotBlock {
            snapshot_id,
            block_index,
            block_data,
            data_length,
            checksum,
            checksum_algorithm,
            progress,
        } => EbsRequest::PutSnapshotBlock(PutSnapshotBlockRequest {
            snapshot_id,
            block_index,
            block_data: input::blob(
                "--block-data",
                &if block_data.starts_with("fileb://") {
                    block_data
                } else {
                    format!("fileb://{block_data}")
                },
                ctx.binary,
            )?,
            data_length,
            progress,
            checksum,
            checksum_algorithm,
        }),
        C::CompleteSnapshot {
            snapshot_id,
            changed_blocks_count,
            checksum,
            checksum_algorithm,
            checksum_aggregation_method,
        } => EbsRequest::CompleteSnapshot(CompleteSnapshotRequest {
            snapshot_id,
            changed_blocks_count,
            checksum,
            checksum_algorithm,
            checksum_aggregation_method,
        }),
    };
    let name = req.name();
    let out = ctx
        .backoff
        .run(|| ctx.services.ebs(&rc, req.clone()).map(json))?;
    ctx.print(name, &out)
}
