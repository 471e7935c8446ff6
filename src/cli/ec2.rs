//! `ebsim ec2 …`: EBS volume operations with the AWS CLI's parameter names.

use super::{Ctx, input};
use crate::ec2::model::*;
use crate::error::Result;
use crate::service::ec2::*;
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
        #[command(flatten)]
        dry_run: DryRun,
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
    /// Launches simulated instances: records with no VM behind them, whose devices
    /// are the volumes attached to them (NBD sockets under the data root)
    RunInstances {
        /// Any well-formed ami-… id (there are no images to check)
        #[arg(long)]
        image_id: String,
        /// [default: m1.small]
        #[arg(long)]
        instance_type: Option<String>,
        /// How many: N or MIN:MAX [default: 1]
        #[arg(long)]
        count: Option<String>,
        /// AvailabilityZone=us-east-1b (shorthand or JSON) [default: the region's zone a]
        #[arg(long)]
        placement: Option<String>,
        /// ResourceType=instance,Tags=[{Key=k,Value=v}] ...
        #[arg(long, num_args = 1..)]
        tag_specifications: Vec<String>,
        #[arg(long)]
        client_token: Option<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Lists simulated instances, with the volumes attached to each
    DescribeInstances {
        #[arg(long, num_args = 1..)]
        instance_ids: Vec<String>,
        /// Name=instance-state-name,Values=running ... (instance-id, image-id,
        /// instance-type, availability-zone, reservation-id, instance-state-code,
        /// block-device-mapping.volume-id, block-device-mapping.device-name, tag:KEY, tag-key)
        #[arg(long, num_args = 1..)]
        filters: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Terminates simulated instances; the volumes attached to them are detached
    TerminateInstances {
        #[arg(long, num_args = 1..)]
        instance_ids: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Attaches a volume to this host and serves it as DIR/<volume-id> through FUSE
    /// (CreateGrant + Decrypt); returns when the file is ready, the daemon runs on
    AttachVolume {
        #[arg(long)]
        volume_id: String,
        /// The FUSE mount directory (must exist; nothing mounted on it)
        #[arg(long, value_name = "DIR")]
        fuse: Option<std::path::PathBuf>,
        /// Also (or instead) export the volume over NBD: unix:PATH or tcp:HOST:PORT
        /// (loopback only unless --nbd-allow-remote; port 0 picks a free one; tcp:
        /// needs --tls-psk, --tls-creds or --nbd-no-tls)
        #[arg(long, value_name = "ADDR")]
        nbd: Option<String>,
        /// Allow --nbd tcp: on a non-loopback address (with TLS, or --nbd-no-tls)
        #[arg(long)]
        nbd_allow_remote: bool,
        /// Require TLS with pre-shared keys on the NBD export: a psktool file of
        /// identity:hexkey lines, mode 0600 (docs/NBD.md §5)
        #[arg(long, value_name = "FILE")]
        tls_psk: Option<std::path::PathBuf>,
        /// Require TLS with x509 certificates on the NBD export: a directory with
        /// server-cert.pem, server-key.pem (0600) and, for --tls-verify-peer, ca-cert.pem
        #[arg(long, value_name = "DIR")]
        tls_creds: Option<std::path::PathBuf>,
        /// With --tls-creds: clients must present a certificate signed by ca-cert.pem
        #[arg(long)]
        tls_verify_peer: bool,
        /// Serve --nbd tcp: without TLS: unauthenticated and unencrypted, so any local
        /// user (any host, with --nbd-allow-remote) can read and write the volume
        #[arg(long)]
        nbd_no_tls: bool,
        /// The instance the grant names [default: this host's i-… id]
        #[arg(long)]
        instance_id: Option<String>,
        /// Recorded as the attachment's Device [default: the FUSE file's path, else the NBD URI]
        #[arg(long)]
        device: Option<String>,
        /// Stay in the terminal (detach with Ctrl-C) instead of running in the background
        #[arg(long)]
        foreground: bool,
        #[arg(long, hide = true)]
        report_to_parent: bool,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Flushes, unmounts the FUSE mount, stops the daemon and retires the grant
    DetachVolume {
        #[arg(long)]
        volume_id: String,
        /// Detach even while a loop device or a process holds the file
        #[arg(long)]
        force: bool,
        #[arg(long)]
        instance_id: Option<String>,
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Snapshots a volume, detached or attached (crash-consistent: writes are held for
    /// the cut); incremental after the first: only changed 512 KiB blocks are stored
    CreateSnapshot {
        #[arg(long)]
        volume_id: String,
        #[arg(long, default_value = "")]
        description: String,
        /// ResourceType=snapshot,Tags=[{Key=k,Value=v}] ... or a JSON list
        #[arg(long, num_args = 1..)]
        tag_specifications: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Describes snapshots, all or by id, optionally filtered
    DescribeSnapshots {
        #[arg(long, num_args = 1..)]
        snapshot_ids: Vec<String>,
        /// Name=volume-id,Values=vol-… ... (snapshot-id, volume-id, status, encrypted,
        /// kms-key-id, description, tag:KEY, tag-key)
        #[arg(long, num_args = 1..)]
        filters: Vec<String>,
        /// Accepted for compatibility (every snapshot here is the account's own)
        #[arg(long, num_args = 1..)]
        owner_ids: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Deletes a snapshot; blocks no other snapshot uses are freed
    DeleteSnapshot {
        #[arg(long)]
        snapshot_id: String,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Copies a snapshot into this region (--region), from --source-region
    CopySnapshot {
        #[arg(long)]
        source_region: String,
        #[arg(long)]
        source_snapshot_id: String,
        #[arg(long, overrides_with = "no_encrypted")]
        encrypted: bool,
        #[arg(long)]
        no_encrypted: bool,
        /// A key of the destination region (requires --encrypted)
        #[arg(long)]
        kms_key_id: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, num_args = 1..)]
        tag_specifications: Vec<String>,
        /// Accepted as the AWS CLI sends it (the server verifies presigned URLs)
        #[arg(long)]
        presigned_url: Option<String>,
        /// Must be this region (--region), where the copy is made
        #[arg(long)]
        destination_region: Option<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// ebsim extension: re-keys a detached encrypted volume in place under another KMS
    /// key (a new data key; every allocated block decrypted and re-encrypted;
    /// crash-safe, rerun to resume). EBS itself changes a volume's key only through
    /// a snapshot copy: copy-snapshot --kms-key-id, then create-volume from the copy.
    RekeyVolume {
        #[arg(long)]
        volume_id: String,
        #[arg(long)]
        kms_key_id: String,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Encrypts every new volume of the region from now on
    EnableEbsEncryptionByDefault {
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Stops encrypting new volumes by default
    DisableEbsEncryptionByDefault {
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Shows whether new volumes are encrypted by default
    GetEbsEncryptionByDefault {
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Shows the region's default KMS key for EBS encryption
    GetEbsDefaultKmsKeyId {
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Sets the region's default KMS key for EBS encryption
    ModifyEbsDefaultKmsKeyId {
        #[arg(long)]
        kms_key_id: String,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Resets the default KMS key to the AWS managed key alias/aws/ebs
    ResetEbsDefaultKmsKeyId {
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Adds or overwrites tags on volumes and snapshots
    CreateTags {
        /// Volume and snapshot ids
        #[arg(long, num_args = 1.., required = true)]
        resources: Vec<String>,
        /// Key=k,Value=v ... or a JSON list
        #[arg(long, num_args = 1.., required = true)]
        tags: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Removes tags from volumes and snapshots (by key, or key and value; no
    /// --tags: all of them)
    DeleteTags {
        /// Volume and snapshot ids
        #[arg(long, num_args = 1.., required = true)]
        resources: Vec<String>,
        /// Key=k[,Value=v] ... or a JSON list
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Describes the tags of the region's volumes and snapshots
    DescribeTags {
        /// Name=key,Values=Name ... (key, value, resource-id, resource-type)
        #[arg(long, num_args = 1..)]
        filters: Vec<String>,
        /// One page of at most this many tags (5-1000), with NextToken
        #[arg(long)]
        max_results: Option<u32>,
        #[arg(long)]
        next_token: Option<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Describes the region's availability zones (<region>a, b and c)
    DescribeAvailabilityZones {
        #[arg(long, num_args = 1..)]
        zone_names: Vec<String>,
        #[arg(long, num_args = 1..)]
        zone_ids: Vec<String>,
        /// Accepted (every zone is opted in)
        #[arg(long)]
        all_availability_zones: bool,
        /// Name=zone-name,Values=… ... (zone-name, zone-id, region-name, state,
        /// zone-type, group-name, opt-in-status)
        #[arg(long, num_args = 1..)]
        filters: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// Describes the regions the data root has, and this one
    DescribeRegions {
        #[arg(long, num_args = 1..)]
        region_names: Vec<String>,
        /// Accepted (every region is opted in)
        #[arg(long)]
        all_regions: bool,
        /// Name=region-name,Values=… ... (region-name, endpoint, opt-in-status)
        #[arg(long, num_args = 1..)]
        filters: Vec<String>,
        #[command(flatten)]
        dry_run: DryRun,
    },
    /// ebsim extension: settles what interrupted operations left (pending snapshots
    /// become `error`, temporary files go, a half-deleted volume's image comes back),
    /// collects unreferenced snapshot blocks, and lists images no volume record
    /// names (never removed). Every command does the first part when it opens the
    /// region; this also collects blocks and reports.
    Cleanup {
        #[command(flatten)]
        dry_run: DryRun,
    },
}

pub fn run(ctx: &Ctx, cmd: Ec2Command) -> Result<()> {
    use Ec2Command as C;
    use Ec2Request as R;
    if let C::AttachVolume { .. } | C::DetachVolume { .. } = cmd {
        // These do not open the volume service up front (the daemon does).
        return run_attach(ctx, cmd);
    }
    let rc = ctx.request_context();
    let call = |r: Ec2Request| ctx.services.ec2(&rc, r);
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
                encrypted: flag(encrypted, no_encrypted),
                kms_key_id,
                snapshot_id,
                volume_type,
                iops,
                throughput,
                tag_specifications: tag_specifications_of(&tag_specifications)?,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "CreateVolume", call(R::CreateVolume(req.clone())))
        }
        C::DescribeVolumes {
            volume_ids,
            filters,
            max_results,
            next_token,
            dry_run,
        } => {
            let req = DescribeVolumesRequest {
                volume_ids,
                filters: filters_of(&filters)?,
                max_results,
                next_token,
                dry_run: dry_run.dry_run,
            };
            exec!(
                ctx,
                "DescribeVolumes",
                call(R::DescribeVolumes(req.clone()))
            )
        }
        C::RunInstances {
            image_id,
            instance_type,
            count,
            placement,
            tag_specifications,
            client_token,
            dry_run,
        } => {
            let (min_count, max_count) = count_of(count.as_deref())?;
            let placement = match placement {
                Some(p) => Some(placement_of(&p)?),
                None => None,
            };
            let req = RunInstancesRequest {
                image_id: Some(image_id),
                instance_type,
                min_count: Some(min_count),
                max_count: Some(max_count),
                placement,
                tag_specifications: tag_specifications_of(&tag_specifications)?,
                client_token,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "RunInstances", call(R::RunInstances(req.clone())))
        }
        C::DescribeInstances {
            instance_ids,
            filters,
            dry_run,
        } => {
            let req = DescribeInstancesRequest {
                instance_ids,
                filters: filters_of(&filters)?,
                max_results: None,
                next_token: None,
                dry_run: dry_run.dry_run,
            };
            exec!(
                ctx,
                "DescribeInstances",
                call(R::DescribeInstances(req.clone()))
            )
        }
        C::TerminateInstances {
            instance_ids,
            dry_run,
        } => {
            let req = TerminateInstancesRequest {
                instance_ids,
                dry_run: dry_run.dry_run,
            };
            exec!(
                ctx,
                "TerminateInstances",
                call(R::TerminateInstances(req.clone()))
            )
        }
        C::DeleteVolume { volume_id, dry_run } => {
            let req = DeleteVolumeRequest {
                volume_id,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "DeleteVolume", call(R::DeleteVolume(req.clone())))
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
            exec!(ctx, "ModifyVolume", call(R::ModifyVolume(req.clone())))
        }
        C::AttachVolume { .. } | C::DetachVolume { .. } => unreachable!("handled above"),
        C::Cleanup { dry_run } => ctx.print("Cleanup", &call(R::Cleanup(dry_run.request()))?),
        C::RekeyVolume {
            volume_id,
            kms_key_id,
            dry_run,
        } => {
            // Not retried: a re-key resumes where it stopped when run again.
            let req = RekeyVolumeRequest {
                volume_id,
                kms_key_id,
                dry_run: dry_run.dry_run,
            };
            ctx.print("RekeyVolume", &call(R::RekeyVolume(req))?)
        }
        C::CreateSnapshot {
            volume_id,
            description,
            tag_specifications,
            dry_run,
        } => {
            // A volume attached through FUSE or NBD is snapshotted by its
            // attachment process (the service layer routes it).
            let req = CreateSnapshotRequest {
                volume_id,
                description,
                tag_specifications: tag_specifications_of(&tag_specifications)?,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "CreateSnapshot", call(R::CreateSnapshot(req.clone())))
        }
        C::DescribeSnapshots {
            snapshot_ids,
            filters,
            owner_ids,
            dry_run,
        } => {
            let req = DescribeSnapshotsRequest {
                snapshot_ids,
                filters: filters_of(&filters)?,
                owner_ids,
                dry_run: dry_run.dry_run,
            };
            exec!(
                ctx,
                "DescribeSnapshots",
                call(R::DescribeSnapshots(req.clone()))
            )
        }
        C::DeleteSnapshot {
            snapshot_id,
            dry_run,
        } => {
            let req = DeleteSnapshotRequest {
                snapshot_id,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "DeleteSnapshot", call(R::DeleteSnapshot(req.clone())))
        }
        C::CopySnapshot {
            source_region,
            source_snapshot_id,
            encrypted,
            no_encrypted,
            kms_key_id,
            description,
            tag_specifications,
            presigned_url,
            destination_region,
            dry_run,
        } => {
            let req = CopySnapshotRequest {
                source_region,
                source_snapshot_id,
                encrypted: flag(encrypted, no_encrypted),
                kms_key_id,
                description,
                tag_specifications: tag_specifications_of(&tag_specifications)?,
                destination_region,
                presigned_url,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "CopySnapshot", call(R::CopySnapshot(req.clone())))
        }
        C::EnableEbsEncryptionByDefault { dry_run } => exec!(
            ctx,
            "EnableEbsEncryptionByDefault",
            call(R::EnableEbsEncryptionByDefault(dry_run.request()))
        ),
        C::DisableEbsEncryptionByDefault { dry_run } => exec!(
            ctx,
            "DisableEbsEncryptionByDefault",
            call(R::DisableEbsEncryptionByDefault(dry_run.request()))
        ),
        C::GetEbsEncryptionByDefault { dry_run } => exec!(
            ctx,
            "GetEbsEncryptionByDefault",
            call(R::GetEbsEncryptionByDefault(dry_run.request()))
        ),
        C::GetEbsDefaultKmsKeyId { dry_run } => exec!(
            ctx,
            "GetEbsDefaultKmsKeyId",
            call(R::GetEbsDefaultKmsKeyId(dry_run.request()))
        ),
        C::ModifyEbsDefaultKmsKeyId {
            kms_key_id,
            dry_run,
        } => {
            let req = ModifyEbsDefaultKmsKeyIdRequest {
                kms_key_id,
                dry_run: dry_run.dry_run,
            };
            exec!(
                ctx,
                "ModifyEbsDefaultKmsKeyId",
                call(R::ModifyEbsDefaultKmsKeyId(req.clone()))
            )
        }
        C::ResetEbsDefaultKmsKeyId { dry_run } => exec!(
            ctx,
            "ResetEbsDefaultKmsKeyId",
            call(R::ResetEbsDefaultKmsKeyId(dry_run.request()))
        ),
        C::CreateTags {
            resources,
            tags,
            dry_run,
        } => {
            let req = TagsRequest {
                resources,
                tags: input::structs("tags", &tags)?,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "CreateTags", call(R::CreateTags(req.clone())))
        }
        C::DeleteTags {
            resources,
            tags,
            dry_run,
        } => {
            let req = TagsRequest {
                resources,
                tags: if tags.is_empty() {
                    vec![]
                } else {
                    input::structs("tags", &tags)?
                },
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "DeleteTags", call(R::DeleteTags(req.clone())))
        }
        C::DescribeTags {
            filters,
            max_results,
            next_token,
            dry_run,
        } => {
            let req = DescribeTagsRequest {
                filters: filters_of(&filters)?,
                max_results,
                next_token,
                dry_run: dry_run.dry_run,
            };
            exec!(ctx, "DescribeTags", call(R::DescribeTags(req.clone())))
        }
        C::DescribeAvailabilityZones {
            zone_names,
            zone_ids,
            all_availability_zones,
            filters,
            dry_run,
        } => {
            let req = DescribeAvailabilityZonesRequest {
                zone_names,
                zone_ids,
                all_availability_zones: all_availability_zones.then_some(true),
                filters: filters_of(&filters)?,
                dry_run: dry_run.dry_run,
            };
            exec!(
                ctx,
                "DescribeAvailabilityZones",
                call(R::DescribeAvailabilityZones(req.clone()))
            )
        }
        C::DescribeRegions {
            region_names,
            all_regions,
            filters,
            dry_run,
        } => {
            let req = DescribeRegionsRequest {
                region_names,
                all_regions: all_regions.then_some(true),
                filters: filters_of(&filters)?,
                dry_run: dry_run.dry_run,
            };
            exec!(
                ctx,
                "DescribeRegions",
                call(R::DescribeRegions(req.clone()))
            )
        }
    }
}

impl DryRun {
    /// The request of an operation that takes only DryRun.
    fn request(&self) -> DryRunRequest {
        DryRunRequest {
            dry_run: self.dry_run,
        }
    }
}

/// `--x` → Some(true), `--no-x` → Some(false), neither → None.
fn flag(yes: bool, no: bool) -> Option<bool> {
    if yes {
        Some(true)
    } else if no {
        Some(false)
    } else {
        None
    }
}

/// `--tag-specifications`, read (none given: none).
fn tag_specifications_of(specs: &[String]) -> Result<Vec<TagSpecification>> {
    if specs.is_empty() {
        Ok(vec![])
    } else {
        input::tag_specifications("tag-specifications", specs)
    }
}

/// `--filters`, read (none given: none).
/// The AWS CLI's `--count N` or `--count MIN:MAX`.
fn count_of(count: Option<&str>) -> Result<(u32, u32)> {
    let Some(c) = count else {
        return Ok((1, 1));
    };
    let num = |s: &str| {
        s.trim().parse::<u32>().map_err(|_| {
            crate::error::Error::usage(format!(
                "--count takes N or MIN:MAX (whole numbers), not {c}"
            ))
        })
    };
    match c.split_once(':') {
        Some((min, max)) => Ok((num(min)?, num(max)?)),
        None => num(c).map(|n| (n, n)),
    }
}

/// `--placement AvailabilityZone=us-east-1b` (shorthand) or its JSON.
fn placement_of(p: &str) -> Result<Placement> {
    if p.trim_start().starts_with('{') {
        return serde_json::from_str(p).map_err(|e| {
            crate::error::Error::usage(format!("--placement: not a Placement structure: {e}"))
        });
    }
    let mut out = Placement::default();
    for part in p.split(',') {
        match part.split_once('=') {
            Some(("AvailabilityZone", v)) => out.availability_zone = Some(v.to_string()),
            _ => {
                return Err(crate::error::Error::usage(format!(
                    "--placement: ebsim's instances take AvailabilityZone=ZONE, not {part}"
                )));
            }
        }
    }
    Ok(out)
}

fn filters_of(filters: &[String]) -> Result<Vec<Filter>> {
    if filters.is_empty() {
        Ok(vec![])
    } else {
        input::filters("filters", filters)
    }
}

fn run_attach(ctx: &Ctx, cmd: Ec2Command) -> Result<()> {
    use Ec2Command as C;
    match cmd {
        C::AttachVolume {
            volume_id,
            fuse,
            nbd,
            nbd_allow_remote,
            tls_psk,
            tls_creds,
            tls_verify_peer,
            nbd_no_tls,
            instance_id,
            device,
            foreground,
            report_to_parent,
            dry_run,
        } => {
            if fuse.is_none() && nbd.is_none() && instance_id.is_some() && !foreground {
                // A simulated instance's device (run-instances): through the
                // table, as over the wire.
                let req = crate::service::attach::AttachVolumeRequest {
                    volume_id,
                    instance_id,
                    device,
                    dry_run: dry_run.dry_run,
                };
                let rc = ctx.request_context();
                let out = ctx.services.ec2(&rc, Ec2Request::AttachVolume(req))?;
                return ctx.print("AttachVolume", &out);
            }
            let nbd = nbd
                .map(|a| crate::nbd::Listen::parse(&a, nbd_allow_remote))
                .transpose()?;
            let nbd_tls = crate::nbd::TlsFlags {
                psk: tls_psk,
                creds: tls_creds,
                verify_peer: tls_verify_peer,
                no_tls: nbd_no_tls,
            }
            .resolve(nbd.as_ref())?;
            let front = crate::host::Frontends { fuse, nbd, nbd_tls };
            let req = crate::service::attach::AttachVolumeRequest {
                volume_id,
                instance_id,
                device,
                dry_run: dry_run.dry_run,
            };
            super::attach::attach_volume(ctx, req, &front, foreground, report_to_parent)
        }
        C::DetachVolume {
            volume_id,
            force,
            instance_id,
            device,
            dry_run,
        } => {
            let req = crate::service::attach::DetachVolumeRequest {
                volume_id,
                force,
                instance_id,
                device,
                dry_run: dry_run.dry_run,
            };
            super::attach::detach_volume(ctx, req)
        }
        _ => unreachable!("only attach and detach come here"),
    }
}
