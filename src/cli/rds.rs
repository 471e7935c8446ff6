//! `ebsim rds …`: DB instances with the AWS CLI's parameter names, every call
//! through the service layer's RDS table (`crate::service::rds`); and the
//! hidden command line of the attachment process of an instance's storage.

use super::{Ctx, input};
use crate::error::{Error, ErrorKind, Result};
use crate::host::{messages::Event, supervisor};
use crate::rds::model::*;
use crate::service::attach::Launch;
use crate::service::rds::{RdsRequest, StorageLaunch};
use clap::{Args, Subcommand};
use std::process::Command;

/// `--flag | --no-flag` (the AWS CLI's booleans); unset when neither is given.
#[derive(Args, Debug, Clone, Default)]
pub struct StorageEncrypted {
    /// Encrypt the instance's storage (with --kms-key-id, or alias/aws/rds)
    #[arg(long, overrides_with = "no_storage_encrypted")]
    storage_encrypted: bool,
    #[arg(long)]
    no_storage_encrypted: bool,
}

fn flag(yes: bool, no: bool) -> Option<bool> {
    match (yes, no) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum RdsCommand {
    /// Creates a DB instance: a PostgreSQL 15 server on a volume of its own,
    /// encrypted with --storage-encrypted (root: it mounts the volume)
    CreateDbInstance {
        #[arg(long)]
        db_instance_identifier: String,
        /// db.t3.micro, db.m5.large, … (recorded; the server runs on this host)
        #[arg(long)]
        db_instance_class: String,
        /// postgres
        #[arg(long)]
        engine: String,
        /// The PostgreSQL version [default: the installed 15.x]
        #[arg(long)]
        engine_version: Option<String>,
        /// GiB, 20 to 65536 (a sparse volume)
        #[arg(long)]
        allocated_storage: Option<i64>,
        #[arg(long)]
        master_username: Option<String>,
        /// 8 to 128 printable ASCII characters but / " @ and space; file://PATH reads it
        /// from a file (kept out of the process list)
        #[arg(long)]
        master_user_password: Option<String>,
        /// A database to create besides postgres
        #[arg(long)]
        db_name: Option<String>,
        /// The loopback TCP port the server listens on [default: 5432]
        #[arg(long)]
        port: Option<i64>,
        /// Days of automated backups, 0 to 35 [default: 1]
        #[arg(long)]
        backup_retention_period: Option<i64>,
        #[command(flatten)]
        storage_encrypted: StorageEncrypted,
        /// Key id, key ARN, alias name or alias ARN [default: alias/aws/rds]
        #[arg(long)]
        kms_key_id: Option<String>,
        /// gp2 | gp3 | io1 | io2 | standard [default: gp2]
        #[arg(long)]
        storage_type: Option<String>,
        /// us-east-1a, … [default: the region's zone a]
        #[arg(long)]
        availability_zone: Option<String>,
        /// Key=k,Value=v ... or a JSON list
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[arg(long, overrides_with = "no_deletion_protection")]
        deletion_protection: bool,
        #[arg(long)]
        no_deletion_protection: bool,
        #[arg(long, overrides_with = "no_copy_tags_to_snapshot")]
        copy_tags_to_snapshot: bool,
        #[arg(long)]
        no_copy_tags_to_snapshot: bool,
    },
    /// Describes DB instances, all or one
    DescribeDbInstances {
        #[arg(long)]
        db_instance_identifier: Option<String>,
        /// One page of at most this many (20-100), with Marker
        #[arg(long)]
        max_records: Option<i64>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Stops an available DB instance: its server (a clean shutdown) and its storage
    StopDbInstance {
        #[arg(long)]
        db_instance_identifier: String,
        #[arg(long)]
        db_snapshot_identifier: Option<String>,
    },
    /// Starts a stopped DB instance (its key must be usable)
    StartDbInstance {
        #[arg(long)]
        db_instance_identifier: String,
    },
    /// Restarts a DB instance's server and storage (also brings a failed one back)
    RebootDbInstance {
        #[arg(long)]
        db_instance_identifier: String,
        #[arg(long, overrides_with = "no_force_failover")]
        force_failover: bool,
        #[arg(long)]
        no_force_failover: bool,
    },
    /// Deletes a DB instance and its storage
    DeleteDbInstance {
        #[arg(long)]
        db_instance_identifier: String,
        #[arg(long, overrides_with = "no_skip_final_snapshot")]
        skip_final_snapshot: bool,
        #[arg(long)]
        no_skip_final_snapshot: bool,
        #[arg(long)]
        final_db_snapshot_identifier: Option<String>,
        #[arg(long, overrides_with = "no_delete_automated_backups")]
        delete_automated_backups: bool,
        #[arg(long)]
        no_delete_automated_backups: bool,
    },
    /// Changes a DB instance's class, backup retention, deletion protection or
    /// tag copying (its encryption and key are chosen at creation only)
    ModifyDbInstance {
        #[arg(long)]
        db_instance_identifier: String,
        #[arg(long)]
        db_instance_class: Option<String>,
        #[arg(long)]
        backup_retention_period: Option<i64>,
        #[arg(long)]
        allocated_storage: Option<i64>,
        #[arg(long)]
        master_user_password: Option<String>,
        #[arg(long, overrides_with = "no_deletion_protection")]
        deletion_protection: bool,
        #[arg(long)]
        no_deletion_protection: bool,
        #[arg(long, overrides_with = "no_copy_tags_to_snapshot")]
        copy_tags_to_snapshot: bool,
        #[arg(long)]
        no_copy_tags_to_snapshot: bool,
        #[arg(long, overrides_with = "no_apply_immediately")]
        apply_immediately: bool,
        #[arg(long)]
        no_apply_immediately: bool,
    },
    /// Takes a DB snapshot of an available or stopped instance (a write cut of its storage)
    CreateDbSnapshot {
        #[arg(long)]
        db_snapshot_identifier: String,
        #[arg(long)]
        db_instance_identifier: String,
        /// Key=k,Value=v ... or a JSON list
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
    },
    /// Describes DB snapshots, all, one, or an instance's
    DescribeDbSnapshots {
        #[arg(long)]
        db_snapshot_identifier: Option<String>,
        #[arg(long)]
        db_instance_identifier: Option<String>,
        /// manual | automated
        #[arg(long)]
        snapshot_type: Option<String>,
        #[arg(long)]
        max_records: Option<i64>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Deletes a DB snapshot
    DeleteDbSnapshot {
        #[arg(long)]
        db_snapshot_identifier: String,
    },
    /// Copies a DB snapshot: the same key, another (--kms-key-id; encrypts an
    /// unencrypted one), or from another region (an ARN or --source-region)
    CopyDbSnapshot {
        /// An identifier, or the source's ARN (another region's)
        #[arg(long)]
        source_db_snapshot_identifier: String,
        #[arg(long)]
        target_db_snapshot_identifier: String,
        /// A key of this region
        #[arg(long)]
        kms_key_id: Option<String>,
        /// The source's region, when --source-db-snapshot-identifier is not an ARN
        #[arg(long)]
        source_region: Option<String>,
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[arg(long, overrides_with = "no_copy_tags")]
        copy_tags: bool,
        #[arg(long)]
        no_copy_tags: bool,
    },
    /// Makes a new DB instance from a DB snapshot (its encryption and key)
    RestoreDbInstanceFromDbSnapshot {
        #[arg(long)]
        db_instance_identifier: String,
        #[arg(long)]
        db_snapshot_identifier: String,
        #[arg(long)]
        db_instance_class: Option<String>,
        #[arg(long)]
        port: Option<i64>,
        #[arg(long)]
        availability_zone: Option<String>,
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[arg(long, overrides_with = "no_deletion_protection")]
        deletion_protection: bool,
        #[arg(long)]
        no_deletion_protection: bool,
        #[arg(long)]
        backup_retention_period: Option<i64>,
    },
    /// Makes a read replica of a running instance: PostgreSQL streaming
    /// replication onto storage of its own (the source's key in its region;
    /// another region's needs --kms-key-id there)
    CreateDbInstanceReadReplica {
        #[arg(long)]
        db_instance_identifier: String,
        /// The source's identifier, or its ARN (another region's)
        #[arg(long)]
        source_db_instance_identifier: String,
        #[arg(long)]
        db_instance_class: Option<String>,
        #[arg(long)]
        port: Option<i64>,
        #[arg(long)]
        availability_zone: Option<String>,
        /// A key of this region (a cross-region replica of an encrypted source)
        #[arg(long)]
        kms_key_id: Option<String>,
        /// The source's region, when the source is not given as an ARN
        #[arg(long)]
        source_region: Option<String>,
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[arg(long, overrides_with = "no_deletion_protection")]
        deletion_protection: bool,
        #[arg(long)]
        no_deletion_protection: bool,
    },
    /// Makes a read replica a standalone instance (it stops replicating)
    PromoteReadReplica {
        #[arg(long)]
        db_instance_identifier: String,
        #[arg(long)]
        backup_retention_period: Option<i64>,
    },
    /// Waits until a DB instance reaches a state (as `aws rds wait`)
    Wait {
        #[command(subcommand)]
        waiter: Waiter,
    },
    /// The attachment process of a DB instance's storage (started by ebsim)
    #[command(hide = true)]
    ServeStorage {
        #[arg(long)]
        volume_id: String,
        #[arg(long)]
        resource_id: String,
        #[arg(long)]
        fuse: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum Waiter {
    /// Until the instance is available (fails if it is deleted, failed, …)
    DbInstanceAvailable {
        #[arg(long)]
        db_instance_identifier: String,
    },
    /// Until the DB snapshot is available
    DbSnapshotAvailable {
        #[arg(long)]
        db_snapshot_identifier: String,
    },
    /// Until the instance no longer exists
    DbInstanceDeleted {
        #[arg(long)]
        db_instance_identifier: String,
    },
}

/// The command line of the attachment process of a DB instance's storage:
/// this binary's `rds serve-storage`, as the caller, on the same data root
/// and region, reporting to its parent.
pub fn storage_launcher(spec: &StorageLaunch<'_>) -> Result<Launch> {
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the ebsim binary", e))?;
    let mut command = Command::new(exe);
    if !spec.ctx.caller.is_root() {
        command.args(["--principal", spec.ctx.caller.arn()]);
    }
    command.arg("--home").arg(spec.root);
    command.args([
        "--region",
        &spec.ctx.region,
        "--output",
        "json",
        "rds",
        "serve-storage",
        "--volume-id",
        spec.volume_id,
        "--resource-id",
        spec.resource_id,
        "--fuse",
    ]);
    command.arg(spec.fuse_dir);
    Ok(Launch {
        command,
        exit_meaning: super::exit::kind_of,
    })
}

/// `--tags Key=k,Value=v …` or a JSON list.
fn tag_list(values: &[String]) -> Result<Vec<crate::ec2::model::Tag>> {
    if values.is_empty() {
        Ok(vec![])
    } else {
        input::structs("tags", values)
    }
}

fn need_root(op: &str) -> Result<()> {
    super::attach::need_root_for(
        op,
        "it attaches, mounts and unmounts the instance's storage",
    )
}

pub fn run(ctx: &Ctx, cmd: RdsCommand) -> Result<()> {
    use RdsCommand as C;
    let rc = ctx.request_context();
    let call = |req: RdsRequest| {
        let name = req.name();
        let out = ctx.services.rds(&rc, req)?;
        ctx.print(name, &out)
    };
    match cmd {
        C::CreateDbInstance {
            db_instance_identifier,
            db_instance_class,
            engine,
            engine_version,
            allocated_storage,
            master_username,
            master_user_password,
            db_name,
            port,
            backup_retention_period,
            storage_encrypted,
            kms_key_id,
            storage_type,
            availability_zone,
            tags,
            deletion_protection,
            no_deletion_protection,
            copy_tags_to_snapshot,
            no_copy_tags_to_snapshot,
        } => {
            need_root("CreateDBInstance")?;
            let tags = tag_list(&tags)?;
            call(RdsRequest::CreateDbInstance(Box::new(
                CreateDbInstanceRequest {
                    db_instance_identifier,
                    db_instance_class,
                    engine,
                    engine_version,
                    allocated_storage,
                    master_username,
                    master_user_password: master_user_password
                        .map(|p| {
                            input::text("master-user-password", &p).map(zeroize::Zeroizing::new)
                        })
                        .transpose()?,
                    db_name,
                    port,
                    backup_retention_period,
                    storage_encrypted: flag(
                        storage_encrypted.storage_encrypted,
                        storage_encrypted.no_storage_encrypted,
                    ),
                    kms_key_id,
                    storage_type,
                    availability_zone,
                    tags,
                    deletion_protection: flag(deletion_protection, no_deletion_protection),
                    copy_tags_to_snapshot: flag(copy_tags_to_snapshot, no_copy_tags_to_snapshot),
                    replica_of: None,
                },
            )))
        }
        C::DescribeDbInstances {
            db_instance_identifier,
            max_records,
            marker,
        } => call(RdsRequest::DescribeDbInstances(
            DescribeDbInstancesRequest {
                db_instance_identifier,
                max_records,
                marker,
            },
        )),
        C::StopDbInstance {
            db_instance_identifier,
            db_snapshot_identifier,
        } => {
            need_root("StopDBInstance")?;
            call(RdsRequest::StopDbInstance(DbInstanceRequest {
                db_instance_identifier,
                force_failover: None,
                db_snapshot_identifier,
            }))
        }
        C::StartDbInstance {
            db_instance_identifier,
        } => {
            need_root("StartDBInstance")?;
            call(RdsRequest::StartDbInstance(DbInstanceRequest {
                db_instance_identifier,
                ..Default::default()
            }))
        }
        C::RebootDbInstance {
            db_instance_identifier,
            force_failover,
            no_force_failover,
        } => {
            need_root("RebootDBInstance")?;
            call(RdsRequest::RebootDbInstance(DbInstanceRequest {
                db_instance_identifier,
                force_failover: flag(force_failover, no_force_failover),
                db_snapshot_identifier: None,
            }))
        }
        C::DeleteDbInstance {
            db_instance_identifier,
            skip_final_snapshot,
            no_skip_final_snapshot,
            final_db_snapshot_identifier,
            delete_automated_backups,
            no_delete_automated_backups,
        } => {
            need_root("DeleteDBInstance")?;
            call(RdsRequest::DeleteDbInstance(DeleteDbInstanceRequest {
                db_instance_identifier,
                skip_final_snapshot: flag(skip_final_snapshot, no_skip_final_snapshot),
                final_db_snapshot_identifier,
                delete_automated_backups: flag(
                    delete_automated_backups,
                    no_delete_automated_backups,
                ),
            }))
        }
        C::ModifyDbInstance {
            db_instance_identifier,
            db_instance_class,
            backup_retention_period,
            allocated_storage,
            master_user_password,
            deletion_protection,
            no_deletion_protection,
            copy_tags_to_snapshot,
            no_copy_tags_to_snapshot,
            apply_immediately,
            no_apply_immediately,
        } => call(RdsRequest::ModifyDbInstance(ModifyDbInstanceRequest {
            db_instance_identifier,
            db_instance_class,
            backup_retention_period,
            deletion_protection: flag(deletion_protection, no_deletion_protection),
            copy_tags_to_snapshot: flag(copy_tags_to_snapshot, no_copy_tags_to_snapshot),
            apply_immediately: flag(apply_immediately, no_apply_immediately),
            allocated_storage,
            master_user_password: master_user_password
                .map(|p| input::text("master-user-password", &p).map(zeroize::Zeroizing::new))
                .transpose()?,
        })),
        C::CreateDbSnapshot {
            db_snapshot_identifier,
            db_instance_identifier,
            tags,
        } => call(RdsRequest::CreateDbSnapshot(CreateDbSnapshotRequest {
            db_snapshot_identifier,
            db_instance_identifier,
            tags: tag_list(&tags)?,
        })),
        C::DescribeDbSnapshots {
            db_snapshot_identifier,
            db_instance_identifier,
            snapshot_type,
            max_records,
            marker,
        } => call(RdsRequest::DescribeDbSnapshots(
            DescribeDbSnapshotsRequest {
                db_snapshot_identifier,
                db_instance_identifier,
                snapshot_type,
                max_records,
                marker,
            },
        )),
        C::DeleteDbSnapshot {
            db_snapshot_identifier,
        } => call(RdsRequest::DeleteDbSnapshot(DeleteDbSnapshotRequest {
            db_snapshot_identifier,
        })),
        C::CopyDbSnapshot {
            source_db_snapshot_identifier,
            target_db_snapshot_identifier,
            kms_key_id,
            source_region,
            tags,
            copy_tags,
            no_copy_tags,
        } => call(RdsRequest::CopyDbSnapshot(CopyDbSnapshotRequest {
            source_db_snapshot_identifier,
            target_db_snapshot_identifier,
            kms_key_id,
            tags: tag_list(&tags)?,
            copy_tags: flag(copy_tags, no_copy_tags),
            source_region,
            pre_signed_url: None,
        })),
        C::RestoreDbInstanceFromDbSnapshot {
            db_instance_identifier,
            db_snapshot_identifier,
            db_instance_class,
            port,
            availability_zone,
            tags,
            deletion_protection,
            no_deletion_protection,
            backup_retention_period,
        } => {
            need_root("RestoreDBInstanceFromDBSnapshot")?;
            call(RdsRequest::RestoreDbInstanceFromDbSnapshot(
                RestoreDbInstanceFromDbSnapshotRequest {
                    db_instance_identifier,
                    db_snapshot_identifier,
                    db_instance_class,
                    port,
                    availability_zone,
                    tags: tag_list(&tags)?,
                    deletion_protection: flag(deletion_protection, no_deletion_protection),
                    backup_retention_period,
                },
            ))
        }
        C::CreateDbInstanceReadReplica {
            db_instance_identifier,
            source_db_instance_identifier,
            db_instance_class,
            port,
            availability_zone,
            kms_key_id,
            source_region,
            tags,
            deletion_protection,
            no_deletion_protection,
        } => {
            need_root("CreateDBInstanceReadReplica")?;
            call(RdsRequest::CreateDbInstanceReadReplica(
                CreateReadReplicaRequest {
                    db_instance_identifier,
                    source_db_instance_identifier,
                    db_instance_class,
                    port,
                    availability_zone,
                    kms_key_id,
                    tags: tag_list(&tags)?,
                    deletion_protection: flag(deletion_protection, no_deletion_protection),
                    source_region,
                    pre_signed_url: None,
                },
            ))
        }
        C::PromoteReadReplica {
            db_instance_identifier,
            backup_retention_period,
        } => call(RdsRequest::PromoteReadReplica(PromoteReadReplicaRequest {
            db_instance_identifier,
            backup_retention_period,
        })),
        C::Wait { waiter } => wait(ctx, waiter),
        C::ServeStorage {
            volume_id,
            resource_id,
            fuse,
        } => {
            // Every error until readiness goes to the parent.
            let mut reported = false;
            let result = crate::service::rds::serve_storage(
                &ctx.services,
                &rc,
                &volume_id,
                &resource_id,
                &fuse,
                |a| {
                    reported = true;
                    supervisor::report(&Event::Ready {
                        attachment: a.clone(),
                    })
                },
            );
            if let Err(e) = &result {
                tracing::error!("{volume_id}: {}", e.message());
                if !reported {
                    let _ = supervisor::report(&Event::failed(e));
                }
            }
            result
        }
    }
}

/// `aws rds wait …`: DescribeDBInstances every 30 s (ebsim: every 200 ms) up
/// to 60 times, as the AWS CLI's waiters do; failure states end it at once.
fn wait(ctx: &Ctx, waiter: Waiter) -> Result<()> {
    // (waiter name, the id, the status wanted (None: gone), failure statuses)
    let (name, id, want, fail, snapshot): (&str, String, Option<&str>, &[&str], bool) = match waiter
    {
        Waiter::DbInstanceAvailable {
            db_instance_identifier,
        } => (
            "DBInstanceAvailable",
            db_instance_identifier,
            Some(status::AVAILABLE),
            &[
                status::DELETING,
                status::FAILED,
                status::KEY_LOST,
                status::KEY_RECOVERABLE,
                "incompatible-restore",
                "incompatible-parameters",
            ],
            false,
        ),
        Waiter::DbSnapshotAvailable {
            db_snapshot_identifier,
        } => (
            "DBSnapshotAvailable",
            db_snapshot_identifier,
            Some("available"),
            &["deleted", "deleting", "failed", "incompatible-restore"],
            true,
        ),
        Waiter::DbInstanceDeleted {
            db_instance_identifier,
        } => (
            "DBInstanceDeleted",
            db_instance_identifier,
            None,
            &[],
            false,
        ),
    };
    let rc = ctx.request_context();
    for _ in 0..300 {
        let got = if snapshot {
            ctx.services
                .rds(
                    &rc,
                    RdsRequest::DescribeDbSnapshots(DescribeDbSnapshotsRequest {
                        db_snapshot_identifier: Some(id.clone()),
                        ..Default::default()
                    }),
                )
                .map(|v| v["DBSnapshots"][0]["Status"].clone())
        } else {
            ctx.services
                .rds(
                    &rc,
                    RdsRequest::DescribeDbInstances(DescribeDbInstancesRequest {
                        db_instance_identifier: Some(id.clone()),
                        ..Default::default()
                    }),
                )
                .map(|v| v["DBInstances"][0]["DBInstanceStatus"].clone())
        };
        let state = match got {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) if e.kind() == ErrorKind::DbInstanceNotFound && want.is_none() => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if Some(state.as_str()) == want {
            return Ok(());
        }
        if fail.contains(&state.as_str()) {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "Waiter {name} failed: Waiter encountered a terminal failure state: For expression \"{}\" we matched expected path: \"{state}\" at least once",
                    if snapshot {
                        "DBSnapshots[].Status"
                    } else {
                        "DBInstances[].DBInstanceStatus"
                    }
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Err(Error::new(
        ErrorKind::Internal,
        format!("Waiter {name} failed: Max attempts exceeded"),
    ))
}
