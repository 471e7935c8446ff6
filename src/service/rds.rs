//! RDS's operation table, and what each DB instance operation does on this
//! host (docs/RDS.md).
//!
//! The RDS engine (src/rds/) decides and records; this module does the host
//! work it hands each operation, in order:
//!
//! 1. the storage volume, made in RDS's own volume service (`VolumeOwner::RDS`:
//!    GenerateDataKeyWithoutPlaintext through `rds.<region>.amazonaws.com`,
//!    context `aws:ebs:id`, `alias/aws/rds` by default);
//! 2. its attachment process (CreateGrant for the instance's RDS
//!    infrastructure principal + Decrypt), serving the volume as a FUSE file;
//! 3. a loop device on that file, ext4 on it (at creation), mounted in the
//!    instance's run directory (src/host/database.rs);
//! 4. the PostgreSQL server: initdb at creation (the master user and
//!    password), then pg_ctl start; its data directory and logs on the volume.
//!
//! Taking an instance down runs the same steps backwards: a clean server stop
//! (a checkpoint), unmount, loop device, the attachment process (RetireGrant).

use super::attach::{Launch, STOP_TIMEOUT};
use super::{RequestContext, Services};
use crate::ec2::Ec2;
use crate::ec2::model::{AttachmentRecord, CreateVolumeRequest, TagSpecification};
use crate::error::{Error, ErrorKind, Result};
use crate::host::database::DatabaseHost;
use crate::host::postgres::StopMode;
use crate::host::{LinuxHost, linux, supervisor};
use crate::rds::Rds;
use crate::rds::model::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a front end is told to start the attachment process of a DB
/// instance's storage: the process serves `volume_id` for the instance
/// `resource_id` (its DbiResourceId, the grant's infrastructure principal) as
/// a FUSE file in `fuse_dir`, on the data root `root`, and reports to its
/// parent ([`serve_storage`] in that process).
pub struct StorageLaunch<'a> {
    pub ctx: &'a RequestContext,
    pub root: &'a Path,
    pub volume_id: &'a str,
    pub resource_id: &'a str,
    pub fuse_dir: &'a Path,
}

/// How a front end starts the attachment processes of DB instances' storage.
pub type StorageLauncher = dyn Fn(&StorageLaunch<'_>) -> Result<Launch> + Send + Sync;

/// One RDS operation, in the model's member names.
#[derive(Debug)]
pub enum RdsRequest {
    CreateDbInstance(Box<CreateDbInstanceRequest>),
    DescribeDbInstances(DescribeDbInstancesRequest),
    StopDbInstance(DbInstanceRequest),
    StartDbInstance(DbInstanceRequest),
    RebootDbInstance(DbInstanceRequest),
    DeleteDbInstance(DeleteDbInstanceRequest),
    ModifyDbInstance(ModifyDbInstanceRequest),
    CreateDbSnapshot(CreateDbSnapshotRequest),
    DescribeDbSnapshots(DescribeDbSnapshotsRequest),
    DeleteDbSnapshot(DeleteDbSnapshotRequest),
    CopyDbSnapshot(CopyDbSnapshotRequest),
    RestoreDbInstanceFromDbSnapshot(RestoreDbInstanceFromDbSnapshotRequest),
    CreateDbInstanceReadReplica(CreateReadReplicaRequest),
    PromoteReadReplica(PromoteReadReplicaRequest),
}

/// The operations of the table, by their AWS names.
pub const OPERATIONS: &[&str] = &[
    "CreateDBInstance",
    "DescribeDBInstances",
    "StopDBInstance",
    "StartDBInstance",
    "RebootDBInstance",
    "DeleteDBInstance",
    "ModifyDBInstance",
    "CreateDBSnapshot",
    "DescribeDBSnapshots",
    "DeleteDBSnapshot",
    "CopyDBSnapshot",
    "RestoreDBInstanceFromDBSnapshot",
    "CreateDBInstanceReadReplica",
    "PromoteReadReplica",
];

impl RdsRequest {
    /// The operation's AWS name.
    pub fn name(&self) -> &'static str {
        match self {
            RdsRequest::CreateDbInstance(_) => "CreateDBInstance",
            RdsRequest::DescribeDbInstances(_) => "DescribeDBInstances",
            RdsRequest::StopDbInstance(_) => "StopDBInstance",
            RdsRequest::StartDbInstance(_) => "StartDBInstance",
            RdsRequest::RebootDbInstance(_) => "RebootDBInstance",
            RdsRequest::DeleteDbInstance(_) => "DeleteDBInstance",
            RdsRequest::ModifyDbInstance(_) => "ModifyDBInstance",
            RdsRequest::CreateDbSnapshot(_) => "CreateDBSnapshot",
            RdsRequest::DescribeDbSnapshots(_) => "DescribeDBSnapshots",
            RdsRequest::DeleteDbSnapshot(_) => "DeleteDBSnapshot",
            RdsRequest::CopyDbSnapshot(_) => "CopyDBSnapshot",
            RdsRequest::RestoreDbInstanceFromDbSnapshot(_) => "RestoreDBInstanceFromDBSnapshot",
            RdsRequest::CreateDbInstanceReadReplica(_) => "CreateDBInstanceReadReplica",
            RdsRequest::PromoteReadReplica(_) => "PromoteReadReplica",
        }
    }

    /// The request of operation `name` from its members in AWS's JSON.
    pub fn from_json(name: &str, v: Value) -> Result<Self> {
        fn read<T: serde::de::DeserializeOwned>(name: &str, v: Value) -> Result<T> {
            serde_json::from_value(v).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidParameterValue,
                    format!("{name}: the request does not read: {e}"),
                )
            })
        }
        Ok(match name {
            "CreateDBInstance" => RdsRequest::CreateDbInstance(Box::new(read(name, v)?)),
            "DescribeDBInstances" => RdsRequest::DescribeDbInstances(read(name, v)?),
            "StopDBInstance" => RdsRequest::StopDbInstance(read(name, v)?),
            "StartDBInstance" => RdsRequest::StartDbInstance(read(name, v)?),
            "RebootDBInstance" => RdsRequest::RebootDbInstance(read(name, v)?),
            "DeleteDBInstance" => RdsRequest::DeleteDbInstance(read(name, v)?),
            "ModifyDBInstance" => RdsRequest::ModifyDbInstance(read(name, v)?),
            "CreateDBSnapshot" => RdsRequest::CreateDbSnapshot(read(name, v)?),
            "DescribeDBSnapshots" => RdsRequest::DescribeDbSnapshots(read(name, v)?),
            "DeleteDBSnapshot" => RdsRequest::DeleteDbSnapshot(read(name, v)?),
            "CopyDBSnapshot" => RdsRequest::CopyDbSnapshot(read(name, v)?),
            "RestoreDBInstanceFromDBSnapshot" => {
                RdsRequest::RestoreDbInstanceFromDbSnapshot(read(name, v)?)
            }
            "CreateDBInstanceReadReplica" => {
                RdsRequest::CreateDbInstanceReadReplica(read(name, v)?)
            }
            "PromoteReadReplica" => RdsRequest::PromoteReadReplica(read(name, v)?),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidAction,
                    format!("The action {other} is not valid for this web service."),
                ));
            }
        })
    }

    /// Runs the operation; its response in AWS's shape (the result members:
    /// `{"DBInstance": …}`, `{"DBInstances": […]}`).
    pub fn run(self, services: &Services, ctx: &RequestContext) -> Result<Value> {
        let rds = services.rds_engine(&ctx.region)?;
        let caller = &ctx.caller;
        // RDS watches its instances' keys: a key made unusable since the last
        // call takes its instances down first.
        watch_keys(services, ctx, &rds)?;
        let wrap = |v: Value| serde_json::json!({ "DBInstance": v });
        match self {
            RdsRequest::CreateDbInstance(req) => {
                sweep_orphan_storage(services, ctx, &rds)?;
                let version = crate::host::database::server_version()?;
                rds.create_db_instance(caller, &req, &version, |p| {
                    create_on_host(services, ctx, &req, p)
                })
                .map(wrap)
            }
            RdsRequest::DescribeDbInstances(req) => {
                rds.describe_db_instances(caller, &req, |r| observe(services, ctx, &rds, r))
            }
            RdsRequest::StopDbInstance(req) => rds
                .stop_db_instance(caller, &req, |r| {
                    if let Some(id) = &req.db_snapshot_identifier {
                        rds.record_snapshot_of(r, id, "manual", || {
                            snapshot_storage(services, ctx, r, id)
                        })?;
                    }
                    take_down(services, ctx, r, StopMode::Fast)
                })
                .map(wrap),
            RdsRequest::StartDbInstance(req) => rds
                .start_db_instance(caller, &req, |r| {
                    bring_up(services, ctx, r, Setup::Existing)
                })
                .map(wrap),
            RdsRequest::RebootDbInstance(req) => rds
                .reboot_db_instance(caller, &req, |r| {
                    take_down(services, ctx, r, StopMode::Fast)?;
                    bring_up(services, ctx, r, Setup::Existing)
                })
                .map(wrap),
            RdsRequest::DeleteDbInstance(req) => {
                let out = rds
                    .delete_db_instance(
                        caller,
                        &req,
                        // A source's read replicas become standalone first.
                        |r| {
                            for replica in &r.replicas {
                                promote_elsewhere(services, ctx, replica)?;
                            }
                            Ok(())
                        },
                        |r| {
                            // A clean stop first: the final snapshot is of a
                            // checkpointed, detached volume.
                            take_down(services, ctx, r, StopMode::Fast)?;
                            let id = req.final_db_snapshot_identifier.as_deref().unwrap_or("");
                            snapshot_storage(services, ctx, r, id)
                        },
                        |r| delete_on_host(services, ctx, r),
                    )
                    .map(wrap)?;
                // The instance is gone; what follows is tidying, never an error.
                let dbi = out["DBInstance"]["DbiResourceId"]
                    .as_str()
                    .unwrap_or_default();
                if req.delete_automated_backups != Some(false)
                    && let Err(e) = drop_automated(services, ctx, &rds, dbi)
                {
                    tracing::warn!("{dbi}: its automated backups are left: {}", e.message());
                }
                if let Some(source) =
                    out["DBInstance"]["ReadReplicaSourceDBInstanceIdentifier"].as_str()
                {
                    let name = out["DBInstance"]["DBInstanceIdentifier"]
                        .as_str()
                        .unwrap_or_default();
                    forget_replica(services, ctx, source, name);
                }
                Ok(out)
            }
            RdsRequest::CreateDbInstanceReadReplica(req) => {
                sweep_orphan_storage(services, ctx, &rds)?;
                let (mut source_region, source_id) = crate::rds::replicas::parse_source(
                    &req.source_db_instance_identifier,
                    &ctx.region,
                )?;
                if !req.source_db_instance_identifier.starts_with("arn:")
                    && let Some(r) = &req.source_region
                {
                    crate::home::validate_region(r)?;
                    source_region = r.clone();
                }
                let source_rds = services.rds_engine(&source_region)?;
                let source = source_rds.instance(&source_id)?;
                let out = rds
                    .create_db_instance_read_replica(caller, &req, &source_region, &source, |p| {
                        replica_on_host(services, ctx, p, &source_region, &source)
                    })
                    .map(wrap)?;
                let name = out["DBInstance"]["DBInstanceIdentifier"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let listed = if source_region == ctx.region {
                    name
                } else {
                    crate::rds::model::instance_arn(&ctx.region, rds.account_id(), &name)
                };
                if let Err(e) = source_rds.note_replica(&source.identifier, &listed, true) {
                    // The replica exists whatever its source's list says.
                    tracing::warn!(
                        "{}: cannot list its new read replica {listed}: {}",
                        source.identifier,
                        e.message()
                    );
                }
                Ok(out)
            }
            RdsRequest::PromoteReadReplica(req) => {
                let (out, source) = rds.promote_read_replica(caller, &req, |r| {
                    let place = DatabaseHost::new(services.root(), &ctx.region, &r.identifier)?;
                    place.postgres(r.port)?.promote()
                })?;
                let name = out["DBInstanceIdentifier"].as_str().unwrap_or_default();
                forget_replica(services, ctx, &source, name);
                Ok(wrap(out))
            }
            RdsRequest::ModifyDbInstance(req) => {
                let out = rds
                    .modify_db_instance(
                        caller,
                        &req,
                        |r, password| {
                            let place =
                                DatabaseHost::new(services.root(), &ctx.region, &r.identifier)?;
                            place
                                .postgres(r.port)?
                                .set_password(&r.master_username, password)
                        },
                        |r, gib| grow_storage(services, ctx, r, gib),
                    )
                    .map(wrap)?;
                if req.backup_retention_period == Some(0) {
                    let dbi = out["DBInstance"]["DbiResourceId"]
                        .as_str()
                        .unwrap_or_default();
                    drop_automated(services, ctx, &rds, dbi)?;
                }
                Ok(out)
            }
            RdsRequest::CreateDbSnapshot(req) => rds
                .create_db_snapshot(caller, &req, |r| {
                    snapshot_storage(services, ctx, r, &req.db_snapshot_identifier)
                })
                .map(|v| serde_json::json!({ "DBSnapshot": v })),
            RdsRequest::DescribeDbSnapshots(req) => rds.describe_db_snapshots(caller, &req),
            RdsRequest::DeleteDbSnapshot(req) => rds
                .delete_db_snapshot(caller, &req, |s| drop_storage_snapshot(services, ctx, s))
                .map(|v| serde_json::json!({ "DBSnapshot": v })),
            RdsRequest::CopyDbSnapshot(req) => copy_db_snapshot(services, ctx, &rds, &req)
                .map(|v| serde_json::json!({ "DBSnapshot": v })),
            RdsRequest::RestoreDbInstanceFromDbSnapshot(req) => {
                sweep_orphan_storage(services, ctx, &rds)?;
                rds.restore_db_instance_from_db_snapshot(caller, &req, |p, snap| {
                    restore_on_host(services, ctx, p, snap)
                })
                .map(wrap)
            }
        }
    }
}

impl Services {
    /// The RDS service of `region` (opened once, then shared).
    pub fn rds_engine(&self, region: &str) -> Result<std::sync::Arc<Rds>> {
        let mut all = self.rds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = all.get(region) {
            return Ok(r.clone());
        }
        let kms = crate::kms::Kms::open(&self.root, region, self.clock.clone())?;
        let r = std::sync::Arc::new(Rds::open(&self.root, kms)?);
        all.insert(region.to_string(), r.clone());
        Ok(r)
    }

    /// RDS's volume service in `region`: the storage volumes of its DB
    /// instances, apart from EC2's (`regions/<region>/rds/`), their
    /// attachments on this host.
    pub fn rds_storage(&self, region: &str) -> Result<std::sync::Arc<Ec2>> {
        let mut all = self.rds_storage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = all.get(region) {
            return Ok(e.clone());
        }
        let kms = crate::kms::Kms::open(&self.root, region, self.clock.clone())?;
        let host = std::sync::Arc::new(self.rds_host(region)?);
        let mut ec2 = Ec2::for_owner(&self.root, kms, host, crate::rds::OWNER)?;
        if let Some(c) = self.ec2_hooks.as_ref().map(|h| h()).and_then(|h| h.cancel) {
            ec2.set_cancel(c);
        }
        let ec2 = std::sync::Arc::new(ec2);
        all.insert(region.to_string(), ec2.clone());
        Ok(ec2)
    }

    /// The host of the attachments of RDS's storage in `region`.
    pub fn rds_host(&self, region: &str) -> Result<LinuxHost> {
        LinuxHost::for_owner(&self.root, region, crate::rds::OWNER)
    }

    /// Runs one RDS operation in the context's region.
    pub fn rds(&self, ctx: &RequestContext, req: RdsRequest) -> Result<Value> {
        req.run(self, ctx)
    }
}

/// Deletes RDS storage volumes that no instance names: what a create killed
/// between making its volume and recording it left (a minute old at least,
/// so a create in progress keeps its own). Detached ones only.
fn sweep_orphan_storage(services: &Services, ctx: &RequestContext, rds: &Rds) -> Result<()> {
    let storage = services.rds_storage(&ctx.region)?;
    let named: std::collections::HashSet<String> = rds
        .instances()?
        .into_iter()
        .filter_map(|r| r.volume_id)
        .collect();
    let service = crate::kms::access::Caller::aws_service(rds.account_id(), "rds.amazonaws.com");
    let volumes = storage
        .describe_volumes(&service, Default::default())?
        .volumes;
    let now = rds.now();
    for v in volumes {
        let old = now - v.create_time.0 > chrono::TimeDelta::seconds(60);
        if named.contains(&v.volume_id) || v.state != "available" || !old {
            continue;
        }
        match storage.delete_volume(&service, &v.volume_id, false) {
            Ok(()) => tracing::info!(
                "removed the storage volume {}, which no DB instance names (an interrupted create's)",
                v.volume_id
            ),
            Err(e) => tracing::warn!(
                "cannot remove the unnamed storage volume {}: {}",
                v.volume_id,
                e.message()
            ),
        }
    }
    Ok(())
}

/// CreateDBInstance's host work: the storage volume (recorded at once), then
/// [`bring_up`] with a new cluster. A failure undoes what was done: the server
/// stopped, the filesystem unmounted, the attachment ended, the volume deleted.
fn create_on_host(
    services: &Services,
    ctx: &RequestContext,
    req: &CreateDbInstanceRequest,
    p: &crate::rds::Provision<'_>,
) -> Result<()> {
    let password = req
        .master_user_password
        .as_deref()
        .map(String::as_str)
        .unwrap_or_default();
    provision(services, ctx, p, None, Setup::New(password))
}

/// The host work every new instance shares (a create, a restore, a replica):
/// its storage volume (from `snapshot_id`'s storage snapshot, or empty; the
/// record's key and size; its tags), recorded at once, then [`bring_up`]
/// with `setup`. A failure undoes it: the volume deleted and the run
/// directory removed, or, when the volume cannot be deleted, the record kept
/// (`failed`, naming it) for DeleteDBInstance to finish.
fn provision(
    services: &Services,
    ctx: &RequestContext,
    p: &crate::rds::Provision<'_>,
    snapshot_id: Option<String>,
    setup: Setup<'_>,
) -> Result<()> {
    let r = p.record;
    let storage = services.rds_storage(&ctx.region)?;
    let tags = if r.tags.is_empty() || snapshot_id.is_some() {
        vec![]
    } else {
        vec![TagSpecification {
            resource_type: "volume".into(),
            tags: r.tags.clone(),
        }]
    };
    let volume = storage.create_volume(
        &ctx.caller,
        CreateVolumeRequest {
            availability_zone: Some(r.availability_zone.clone()),
            size: Some(u64::from(r.allocated_storage)),
            encrypted: Some(r.storage_encrypted),
            kms_key_id: r.kms_key_id.clone(),
            snapshot_id,
            volume_type: Some(r.storage_type.clone()),
            tag_specifications: tags,
            ..Default::default()
        },
    )?;
    let undo_volume = |e: Error| -> Error {
        if let Err(e2) = storage.delete_volume(&ctx.caller, &volume.volume_id, false) {
            p.keep_record();
            return Error::new(
                e.kind(),
                format!(
                    "{}; what was made could not all be undone ({}): the instance is left failed, delete-db-instance removes it",
                    e.message(),
                    e2.message()
                ),
            );
        }
        if let Ok(place) = DatabaseHost::new(services.root(), &ctx.region, &r.identifier) {
            let _ = place.remove();
        }
        e
    };
    p.record_volume(&volume.volume_id).map_err(undo_volume)?;
    let mut r = r.clone();
    r.volume_id = Some(volume.volume_id.clone());
    bring_up(services, ctx, &r, setup).map_err(undo_volume)
}

/// Promotes read replica `replica` (an identifier of this region, or an ARN
/// of another's), as PromoteReadReplica does (its own call, by the caller).
fn promote_elsewhere(services: &Services, ctx: &RequestContext, replica: &str) -> Result<()> {
    let (region, id) = crate::rds::replicas::parse_source(replica, &ctx.region)?;
    let mut there = ctx.clone();
    there.region = region;
    let req = RdsRequest::PromoteReadReplica(PromoteReadReplicaRequest {
        db_instance_identifier: id,
        backup_retention_period: None,
    });
    match services.rds(&there, req) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::DbInstanceNotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes replica `name` (of this region) off the list of its source `source`
/// (an identifier of this region, or another region's ARN). Best effort: the
/// replica is what it is whatever the source's list says.
fn forget_replica(services: &Services, ctx: &RequestContext, source: &str, name: &str) {
    let Ok((region, id)) = crate::rds::replicas::parse_source(source, &ctx.region) else {
        return;
    };
    let listed = if region == ctx.region {
        name.to_string()
    } else {
        match services.rds_engine(&ctx.region) {
            Ok(r) => crate::rds::model::instance_arn(&ctx.region, r.account_id(), name),
            Err(_) => return,
        }
    };
    if let Ok(engine) = services.rds_engine(&region)
        && let Err(e) = engine.note_replica(&id, &listed, false)
    {
        tracing::warn!(
            "{id}: cannot take {listed} off its read replicas: {}",
            e.message()
        );
    }
}

/// CreateDBInstanceReadReplica's host work: an empty storage volume under the
/// replica's key (recorded at once), a new ext4, then a base backup of the
/// running source (streaming, `-R`) and the standby started. A failure undoes
/// it as a create's does.
fn replica_on_host(
    services: &Services,
    ctx: &RequestContext,
    p: &crate::rds::Provision<'_>,
    source_region: &str,
    source: &DbInstanceRecord,
) -> Result<()> {
    let source_place = DatabaseHost::new(services.root(), source_region, &source.identifier)?;
    let source_pg = source_place.postgres(source.port)?;
    provision(
        services,
        ctx,
        p,
        None,
        Setup::Replica(&source_pg, &source.master_username),
    )
}

/// What [`bring_up`] finds on the storage.
#[derive(Clone, Copy)]
enum Setup<'a> {
    /// Nothing yet: a new ext4, and a base backup of this running source
    /// (its server, its master user) to stream from.
    Replica(&'a crate::host::postgres::Postgres, &'a str),
    /// Nothing yet: a new ext4 and a new cluster whose master password this is.
    New(&'a str),
    /// The instance's own cluster.
    Existing,
    /// Another instance's cluster (a restored snapshot): pointed at this
    /// instance's port and socket directory first.
    Restored,
}

fn storage_volume(r: &DbInstanceRecord) -> Result<&str> {
    r.volume_id.as_deref().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidDbInstanceState,
            format!("{} has no storage volume", r.identifier),
        )
    })
}

/// Puts the instance's server up: storage attached (FUSE), loop device,
/// (with `init`: a new ext4 and a new cluster whose master password is
/// `init`) mounted, server started. Each step's failure undoes the steps
/// before it.
fn bring_up(
    services: &Services,
    ctx: &RequestContext,
    r: &DbInstanceRecord,
    setup: Setup<'_>,
) -> Result<()> {
    let init = match setup {
        Setup::New(password) => Some(password),
        _ => None,
    };
    let new_fs = matches!(setup, Setup::New(_) | Setup::Replica(..));
    let volume_id = storage_volume(r)?;
    let storage = services.rds_storage(&ctx.region)?;
    let host = services.rds_host(&ctx.region)?;
    let place = DatabaseHost::new(services.root(), &ctx.region, &r.identifier)?;
    place.prepare()?;
    let a = start_storage(services, ctx, &storage, &host, volume_id, &r.resource_id)?;
    let undo_attach = |e: Error| -> Error {
        end_storage(&storage, &host, volume_id, &a);
        e
    };
    let file = PathBuf::from(a.fuse_dir.as_deref().unwrap_or_default()).join(volume_id);
    let loop_dev = linux::loop_attach(&file).map_err(undo_attach)?;
    let undo_loop = |e: Error| -> Error {
        let _ = linux::loop_detach(&loop_dev);
        undo_attach(e)
    };
    if new_fs {
        linux::mkfs_ext4(&loop_dev).map_err(undo_loop)?;
    }
    if matches!(setup, Setup::Existing | Setup::Restored) {
        // A volume grown since the filesystem was made (ModifyDBInstance):
        // ext4 grows to it before it is mounted (nothing to do otherwise).
        linux::grow_ext4(&loop_dev).map_err(undo_loop)?;
    }
    let mnt = place.mount_point();
    linux::mount(&loop_dev, &mnt).map_err(undo_loop)?;
    let undo_mount = |e: Error| -> Error {
        let _ = linux::umount(&mnt);
        undo_loop(e)
    };
    // The filesystem's root: passable (PostgreSQL's user goes through it),
    // not listable or enterable by others, who could hold the mount busy.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| undo_mount(Error::io_file(&mnt, e)))?;
    }
    storage
        .update_attachment(volume_id, |a| {
            a.loop_device = Some(loop_dev.clone());
            a.mounted_at = Some(mnt.display().to_string());
        })
        .map_err(undo_mount)?;

    let pg = place.postgres(r.port).map_err(undo_mount)?;
    if let Some(password) = init {
        pg.init(&r.master_username, password).map_err(undo_mount)?;
    }
    if let Setup::Restored = setup {
        pg.make_standalone()
            .and_then(|()| pg.reconfigure())
            .map_err(undo_mount)?;
    }
    if let Setup::Replica(source, master) = setup {
        source
            .allow_local_replication(master)
            .and_then(|()| pg.base_backup_from(source, master))
            .map_err(undo_mount)?;
    }
    pg.start().map_err(|e| {
        // pg_ctl may give up while the server is still coming up.
        let _ = pg.force_stop();
        undo_mount(e)
    })?;
    if let (Some(password), Some(db)) = (init, &r.db_name) {
        // RDS makes the initial database DBName names.
        create_database(&pg, &r.master_username, password, db).map_err(|e| {
            let _ = pg.stop(StopMode::Fast).or_else(|_| pg.force_stop());
            undo_mount(e)
        })?;
    }
    Ok(())
}

/// `CREATE DATABASE` through the server's socket, as the master user.
fn create_database(
    pg: &crate::host::postgres::Postgres,
    user: &str,
    password: &str,
    db: &str,
) -> Result<()> {
    let out = std::process::Command::new("psql")
        .arg("-h")
        .arg(pg.socket_dir())
        .args(["-p", &pg.port().to_string(), "-U", user, "-d", "postgres"])
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", &format!("CREATE DATABASE \"{db}\"")])
        .env("PGPASSWORD", password)
        .output()
        .map_err(|e| {
            Error::environment(format!(
                "cannot run psql ({e}); scripts/test.sh installs it"
            ))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Internal,
            format!(
                "CREATE DATABASE {db} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// Starts the attachment process of an instance's storage volume and waits
/// until it serves the FUSE file.
fn start_storage(
    services: &Services,
    ctx: &RequestContext,
    storage: &Ec2,
    host: &LinuxHost,
    volume_id: &str,
    resource_id: &str,
) -> Result<AttachmentRecord> {
    // A stale attachment (its process died) is settled, or refused while
    // something still holds it.
    if let Some(a) = storage.attachment(volume_id)? {
        return Err(Error::new(
            ErrorKind::InvalidDbInstanceState,
            format!(
                "the storage volume {volume_id} is still attached (process {}): {}",
                a.pid,
                crate::ec2::stale_message(volume_id, &a, &storage.host().holders(volume_id, &a))
            ),
        ));
    }
    let launcher = services.storage_launcher().ok_or_else(|| {
        Error::new(
            ErrorKind::UnsupportedOperation,
            "this front end cannot start attachment processes",
        )
    })?;
    let fuse_dir = host.attachments_dir()?.join(volume_id);
    crate::fsutil::ensure_private_dir(&fuse_dir)?;
    let root = services.root().path().to_path_buf();
    let launch = launcher(&StorageLaunch {
        ctx,
        root: &root,
        volume_id,
        resource_id,
        fuse_dir: &fuse_dir,
    })?;
    let log = host.log_file(volume_id);
    supervisor::start(launch.command, volume_id, &log, launch.exit_meaning)
}

/// Stops the attachment process of `volume_id` (which detaches: RetireGrant)
/// and settles its record. Best effort: used to undo.
fn end_storage(storage: &Ec2, host: &LinuxHost, volume_id: &str, a: &AttachmentRecord) {
    let _ = storage.host().release(volume_id, a, false);
    let _ = supervisor::stop(a, &host.control_socket(volume_id), STOP_TIMEOUT);
    let _ = storage.attachment(volume_id);
}

/// Takes the instance's server down: the server stopped (`mode`), the
/// filesystem unmounted, the loop device detached, the attachment process
/// stopped (DetachVolume of the storage, RetireGrant). What is already down
/// is passed over, so a failed instance can be taken down too.
fn take_down(
    services: &Services,
    ctx: &RequestContext,
    r: &DbInstanceRecord,
    mode: StopMode,
) -> Result<()> {
    let place = DatabaseHost::new(services.root(), &ctx.region, &r.identifier)?;
    let mnt = place.mount_point();
    if linux::is_mount_point(&mnt) {
        stop_server(&place, r, mode)?;
        linux::umount(&mnt)?;
    }
    let Some(volume_id) = r.volume_id.as_deref() else {
        return Ok(());
    };
    let storage = services.rds_storage(&ctx.region)?;
    let host = services.rds_host(&ctx.region)?;
    let a = match storage.attachment(volume_id) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(()),
        // A delete that was interrupted after the volume went.
        Err(e) if e.kind() == ErrorKind::InvalidVolumeNotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    storage.detach_volume(&ctx.caller, volume_id, true, |a| {
        storage.host().release(volume_id, a, false)?;
        storage.update_attachment(volume_id, |a| {
            a.loop_device = None;
            a.mounted_at = None;
        })?;
        if storage.attached_now(volume_id) {
            supervisor::stop(a, &host.control_socket(volume_id), STOP_TIMEOUT)?;
        }
        Ok(())
    })?;
    let _ = a;
    storage.attachment(volume_id)?;
    Ok(())
}

/// ModifyDBInstance's larger storage: a running instance is taken down
/// (a clean stop), its volume grown (EBS's ModifyVolume of a detached
/// volume), and brought up again, where ext4 grows to the volume before it
/// is mounted (`e2fsck -f`, `resize2fs`); a stopped one's at its next start.
fn grow_storage(
    services: &Services,
    ctx: &RequestContext,
    r: &DbInstanceRecord,
    gib: u32,
) -> Result<()> {
    let volume_id = storage_volume(r)?.to_string();
    let up = r.status == status::AVAILABLE;
    if up {
        take_down(services, ctx, r, StopMode::Fast)?;
    }
    let storage = services.rds_storage(&ctx.region)?;
    let grown = storage.modify_volume(
        &ctx.caller,
        crate::ec2::model::ModifyVolumeRequest {
            volume_id,
            size: Some(u64::from(gib)),
            ..Default::default()
        },
    );
    let back_up = if up {
        bring_up(services, ctx, r, Setup::Existing)
    } else {
        Ok(())
    };
    grown?;
    back_up
}

/// The storage snapshot of a DB snapshot: taken by the attachment process of
/// an instance's attached storage (which holds its writes for the cut), or
/// directly from a stopped instance's. Its id.
fn snapshot_storage(
    services: &Services,
    ctx: &RequestContext,
    r: &DbInstanceRecord,
    snapshot_id: &str,
) -> Result<String> {
    let volume_id = storage_volume(r)?;
    let storage = services.rds_storage(&ctx.region)?;
    let host = services.rds_host(&ctx.region)?;
    let description = format!("RDS snapshot {snapshot_id} of {}", r.identifier);
    let snap =
        storage.create_snapshot_via(&ctx.caller, volume_id, &description, vec![], |v| match &v
            .attachment
        {
            Some(a) if a.fuse_dir.is_some() => supervisor::create_snapshot(
                &host.control_socket(volume_id),
                &description,
                &[],
                storage.cancel_flag().as_deref(),
            )
            .map(Some),
            _ => Ok(None),
        })?;
    Ok(snap.snapshot_id)
}

/// CopyDBSnapshot: the source read from its region's RDS (an ARN names
/// another region; `SourceRegion` as the AWS CLI gives it), its storage
/// snapshot copied by this region's RDS volume service under the key the
/// engine decided (another region's storage read through the host of that
/// region).
fn copy_db_snapshot(
    services: &Services,
    ctx: &RequestContext,
    rds: &Rds,
    req: &CopyDbSnapshotRequest,
) -> Result<Value> {
    let (mut source_region, source_id) =
        crate::rds::snapshots::parse_source(&req.source_db_snapshot_identifier, &ctx.region)?;
    if !req.source_db_snapshot_identifier.starts_with("arn:")
        && let Some(r) = &req.source_region
    {
        crate::home::validate_region(r)?;
        source_region = r.clone();
    }
    let source = services.rds_engine(&source_region)?.snapshot(&source_id)?;
    let storage = services.rds_storage(&ctx.region)?;
    rds.copy_db_snapshot(&ctx.caller, req, &source_region, &source, |copy, key| {
        let from = source.storage_snapshot_id.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidDbSnapshotState,
                format!("{} has no storage snapshot", source.identifier),
            )
        })?;
        let description = format!(
            "RDS snapshot {} (a copy of {})",
            copy.identifier, source.identifier
        );
        storage
            .copy_snapshot(
                &ctx.caller,
                &source_region,
                from,
                key.map(|_| true),
                key,
                Some(&description),
                vec![],
            )
            .map(|s| s.snapshot_id)
    })
}

/// RestoreDBInstanceFromDBSnapshot's host work: a storage volume made from
/// the snapshot's (its key and encryption), recorded at once, then brought up
/// with the restored cluster. A failure undoes it as a create's does.
fn restore_on_host(
    services: &Services,
    ctx: &RequestContext,
    p: &crate::rds::Provision<'_>,
    snap: &DbSnapshotRecord,
) -> Result<()> {
    let from = snap.storage_snapshot_id.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidDbSnapshotState,
            format!("{} has no storage snapshot", snap.identifier),
        )
    })?;
    provision(services, ctx, p, Some(from), Setup::Restored)
}

/// Stops the instance's server: `mode` through pg_ctl; a server that cannot
/// checkpoint (its storage went away) at once, as a crash would stop it (its
/// WAL replays at the next start); one whose data directory cannot even be
/// read, by signals to its processes.
fn stop_server(place: &DatabaseHost, r: &DbInstanceRecord, mode: StopMode) -> Result<()> {
    let pg = place.postgres(r.port)?;
    let readable = std::fs::read_dir(pg.data_dir()).is_ok();
    if !readable {
        return pg.force_stop();
    }
    if !pg.is_running().unwrap_or(true) {
        return pg.force_stop();
    }
    let Err(e) = pg.stop(mode) else {
        return Ok(());
    };
    tracing::warn!("{}: {}; stopping it at once", r.identifier, e.message());
    if mode != StopMode::Immediate && pg.stop(StopMode::Immediate).is_ok() {
        return Ok(());
    }
    pg.force_stop()
}

/// DeleteDBInstance's host work: the server down (an immediate stop: the data
/// goes), the storage volume deleted, the run directory removed.
fn delete_on_host(services: &Services, ctx: &RequestContext, r: &DbInstanceRecord) -> Result<()> {
    take_down(services, ctx, r, StopMode::Immediate)?;
    if let Some(volume_id) = r.volume_id.as_deref() {
        let storage = services.rds_storage(&ctx.region)?;
        match storage.delete_volume(&ctx.caller, volume_id, false) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::InvalidVolumeNotFound => {}
            Err(e) => return Err(e),
        }
        // The attachment process's FUSE directory (empty now) and log.
        let host = services.rds_host(&ctx.region)?;
        let fuse_dir = host.attachments_dir()?.join(volume_id);
        if fuse_dir.is_dir() && !linux::is_mount_point(&fuse_dir) {
            let _ = std::fs::remove_dir(&fuse_dir);
        }
        let _ = std::fs::remove_file(host.log_file(volume_id));
    }
    DatabaseHost::new(services.root(), &ctx.region, &r.identifier)?.remove()
}

/// Applies each encrypted instance's key state (`Rds::watch_key`): an
/// instance whose key became unusable is taken down cleanly.
fn watch_keys(services: &Services, ctx: &RequestContext, rds: &Rds) -> Result<()> {
    for r in rds.instances()? {
        let id = r.identifier.clone();
        if let Err(e) = rds.watch_key(&r, |r| take_down(services, ctx, r, StopMode::Fast)) {
            tracing::warn!("{id}: cannot apply its key's state: {}", e.message());
        }
    }
    // DB snapshots a killed process left half made.
    if let Err(e) = rds.settle_snapshots() {
        tracing::warn!("cannot settle DB snapshots: {}", e.message());
    }
    // Automated backups due (and expired ones) on ebsim's clock.
    for r in rds.instances()? {
        let id = r.identifier.clone();
        let taken = rds.automated_backups(
            &r,
            |r| {
                let name = format!("rds:{}", r.identifier);
                snapshot_storage(services, ctx, r, &name)
            },
            |s| drop_storage_snapshot(services, ctx, s),
        );
        if let Err(e) = taken {
            tracing::warn!("{id}: automated backup: {}", e.message());
        }
    }
    Ok(())
}

/// Deletes a DB snapshot's storage snapshot (gone already is fine).
fn drop_storage_snapshot(
    services: &Services,
    ctx: &RequestContext,
    s: &DbSnapshotRecord,
) -> Result<()> {
    let Some(snap) = &s.storage_snapshot_id else {
        return Ok(());
    };
    let storage = services.rds_storage(&ctx.region)?;
    match storage.delete_snapshot(&ctx.caller, snap) {
        Err(e) if e.kind() != ErrorKind::InvalidSnapshotNotFound => Err(e),
        _ => Ok(()),
    }
}

/// Deletes the automated snapshots of the instance with DbiResourceId
/// `resource_id` (at delete, unless DeleteAutomatedBackups is false; when its
/// retention period becomes 0).
fn drop_automated(
    services: &Services,
    ctx: &RequestContext,
    rds: &Rds,
    resource_id: &str,
) -> Result<()> {
    for s in rds.automated_snapshots_of(resource_id)? {
        drop_storage_snapshot(services, ctx, &s)?;
        rds.forget_snapshot(&s.identifier)?;
    }
    Ok(())
}

/// What describe shows of an `available` instance whose server or storage is
/// gone (a killed attachment process, a server that died): `failed`, with why,
/// recorded so that reboot can bring it back.
fn observe(
    services: &Services,
    ctx: &RequestContext,
    rds: &Rds,
    r: DbInstanceRecord,
) -> Result<DbInstanceRecord> {
    if r.status != status::AVAILABLE {
        return Ok(r);
    }
    let Some(volume_id) = r.volume_id.as_deref() else {
        return Ok(r);
    };
    let storage = services.rds_storage(&ctx.region)?;
    let why = if !storage.attached_now(volume_id) {
        Some(format!(
            "the attachment process of its storage volume {volume_id} is gone"
        ))
    } else {
        let place = DatabaseHost::new(services.root(), &ctx.region, &r.identifier)?;
        let pg = place.postgres(r.port)?;
        match pg.is_running() {
            Ok(true) => None,
            Ok(false) => Some("its PostgreSQL server is not running".to_string()),
            Err(e) => Some(format!(
                "its PostgreSQL server cannot be reached: {}",
                e.message()
            )),
        }
    };
    let Some(why) = why else {
        return Ok(r);
    };
    rds.update(&r.identifier, |r| {
        if r.status == status::AVAILABLE {
            r.status = status::FAILED.into();
            r.status_message = Some(why);
        }
    })
}

/// In the attachment process of an instance's storage: attaches the volume
/// (CreateGrant for the instance's RDS infrastructure principal, Decrypt)
/// and serves it as a FUSE file in `fuse_dir` until told to stop.
pub fn serve_storage(
    services: &Services,
    ctx: &RequestContext,
    volume_id: &str,
    resource_id: &str,
    fuse_dir: &Path,
    ready: impl FnOnce(&AttachmentRecord) -> Result<()>,
) -> Result<()> {
    let storage = services.rds_storage(&ctx.region)?;
    let host = services.rds_host(&ctx.region)?;
    crate::ec2::check_volume_id(volume_id)?;
    host.attachments_dir()?;
    let control = host.control_socket(volume_id);
    let front = crate::host::Frontends {
        fuse: Some(fuse_dir.to_path_buf()),
        nbd: None,
        nbd_tls: None,
    };
    crate::host::serve(
        &storage,
        &ctx.caller,
        volume_id,
        &front,
        resource_id,
        Some(&format!("/dev/rds/{resource_id}")),
        &control,
        ready,
    )
}
