//! `ebsim ec2 …`: EBS volume operations with the AWS CLI's parameter names.

use super::{Ctx, input};
use crate::ec2::model::*;
use crate::error::Result;
use clap::{Args, Subcommand};

/// EC2's `--dry-run | --no-dry-run`.
#[derive(Args, Debug, Clone, Default)]
pub struct DryRun {
    /// Check the request without performing it (DryRunOperation on success)
    #[arg(long, overrides_with = "no_dry_run")]
    dry_run: bool,
    #[arg(long, hide = true)]
    no_dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum Ec2Command {
    /// Creates an EBS volume (a sparse image under the data root)
    CreateVolume {
        /// The zone, e.g. us-east-1a [default: the region's zone a]
        #[arg(long)]
        availability_zone: Option<String>,
        /// Size in GiB
        #[arg(long)]
        size: Option<u64>,
        /// ebsim: exact size in bytes (a multiple of 4096), for small test volumes
        #[arg(long)]
        size_bytes: Option<u64>,
        /// Encrypt the volume (with --kms-key-id, or the region's default key)
        #[arg(long, overrides_with = "no_encrypted")]
        encrypted: bool,
        #[arg(long)]
        no_encrypted: bool,
        /// Key id, key ARN, alias name or alias ARN (requires --encrypted)
        #[arg(long)]
        kms_key_id: Option<String>,
        #[arg(long)]
        snapshot_id: Option<String>,
        /// gp2 | gp3 | io1 | io2 | st1 | sc1 | standard [default: gp3]
        #[arg(long)]
        volume_type: Option<String>,
        #[arg(long)]
        iops: Option<u32>,
        #[arg(long)]
        throughput: Option<u32>,
        /// ResourceType=volume,Tags=[{Key=k,Value=v}] ... or a JSON list
        #[arg(long, num_args = 1..)]
        tag_specifications: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Describes volumes, all or by id, optionally filtered
    DescribeVolumes {
        #[arg(long, num_args = 1..)]
        volume_ids: Vec<String>,
        /// Name=status,Values=available ... (attachment.*, availability-zone, encrypted,
        /// kms-key-id, size, snapshot-id, status, tag:KEY, tag-key, volume-id, volume-type)
        #[arg(long, num_args = 1..)]
        filters: Vec<String>,
        /// One page of at most this many volumes (5-1000), with NextToken
        #[arg(long)]
        max_results: Option<u32>,
        #[arg(long)]
        next_token: Option<String>,
    },
    /// Deletes a volume that is not attached
    DeleteVolume {
        #[arg(long)]
        volume_id: String,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Grows a detached volume, or changes its type, IOPS or throughput
    ModifyVolume {
        #[arg(long)]
        volume_id: String,
        /// New size in GiB (never smaller)
        #[arg(long)]
        size: Option<u64>,
        /// ebsim: new exact size in bytes
        #[arg(long)]
        size_bytes: Option<u64>,
        #[arg(long)]
        volume_type: Option<String>,
        #[arg(long)]
        iops: Option<u32>,
        #[arg(long)]
        throughput: Option<u32>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Encrypts every new volume of the region from now on
    EnableEbsEncryptionByDefault,
    /// Stops encrypting new volumes by default
    DisableEbsEncryptionByDefault,
    /// Shows whether new volumes are encrypted by default
    GetEbsEncryptionByDefault,
    /// Shows the region's default KMS key for EBS encryption
    GetEbsDefaultKmsKeyId,
    /// Sets the region's default KMS key for EBS encryption
    ModifyEbsDefaultKmsKeyId {
        #[arg(long)]
        kms_key_id: String,
    },
    /// Resets the default KMS key to the AWS managed key alias/aws/ebs
    ResetEbsDefaultKmsKeyId,
}

pub fn run(ctx: &Ctx, cmd: Ec2Command) -> Result<()> {
    use Ec2Command as C;
    let ec2 = ctx.ec2()?;
    let who = &ctx.caller;
    match cmd {
        C::CreateVolume {
            availability_zone,
            size,
            size_bytes,
            encrypted,
            no_encrypted,
            kms_key_id,
            snapshot_id,
            volume_type,
            iops,
            throughput,
            tag_specifications,
            dry_run,
        } => {
            let req = CreateVolumeRequest {
                availability_zone,
                size,
                size_bytes,
                encrypted: if encrypted {
                    Some(true)
                } else if no_encrypted {
                    Some(false)
                } else {
                    None
                },
                kms_key_id,
                snapshot_id,
                volume_type,
                iops,
                throughput,
                tag_specifications: if tag_specifications.is_empty() {
                    vec![]
                } else {
                    input::tag_specifications("tag-specifications", &tag_specifications)?
                },
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "CreateVolume", ec2.create_volume(who, req.clone()))
        }
        C::DescribeVolumes {
            volume_ids,
            filters,
            max_results,
            next_token,
        } => {
            let req = DescribeVolumesRequest {
                volume_ids,
                filters: if filters.is_empty() {
                    vec![]
                } else {
                    input::filters("filters", &filters)?
                },
                max_results,
                next_token,
            };
            exec!(ctx, "DescribeVolumes", ec2.describe_volumes(req.clone()))
        }
        C::DeleteVolume { volume_id, dry_run } => {
            exec!(
                ctx,
                "DeleteVolume",
                ec2.delete_volume(&volume_id, dry_run.dry_run)
            )
        }
        C::ModifyVolume {
            volume_id,
            size,
            size_bytes,
            volume_type,
            iops,
            throughput,
            dry_run,
        } => {
            let req = ModifyVolumeRequest {
                volume_id,
                size,
                size_bytes,
                volume_type,
                iops,
                throughput,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "ModifyVolume", ec2.modify_volume(who, req.clone()))
        }
        C::EnableEbsEncryptionByDefault => exec!(
            ctx,
            "EnableEbsEncryptionByDefault",
            ec2.set_ebs_encryption_by_default(true)
        ),
        C::DisableEbsEncryptionByDefault => exec!(
            ctx,
            "DisableEbsEncryptionByDefault",
            ec2.set_ebs_encryption_by_default(false)
        ),
        C::GetEbsEncryptionByDefault => exec!(
            ctx,
            "GetEbsEncryptionByDefault",
            ec2.get_ebs_encryption_by_default()
        ),
        C::GetEbsDefaultKmsKeyId => exec!(
            ctx,
            "GetEbsDefaultKmsKeyId",
            ec2.get_ebs_default_kms_key_id()
        ),
        C::ModifyEbsDefaultKmsKeyId { kms_key_id } => exec!(
            ctx,
            "ModifyEbsDefaultKmsKeyId",
            ec2.modify_ebs_default_kms_key_id(who, &kms_key_id)
        ),
        C::ResetEbsDefaultKmsKeyId => exec!(
            ctx,
            "ResetEbsDefaultKmsKeyId",
            ec2.reset_ebs_default_kms_key_id()
        ),
    }
}
