//! `regions/<region>/ec2.db`: the region's volume records and EBS account settings.
//!
//! Rows are JSON (nothing here is secret: wrapped keys live in the image headers).
//! Every change runs in one `BEGIN IMMEDIATE` transaction, so concurrent processes
//! see the old or the new record, never half of one.

use super::model::{InstanceRecord, SnapshotRecord, VolumeRecord};
use super::pending::PendingRecord;
use crate::error::Result;
use crate::home::DataRoot;
use crate::home::stores::StoreSpec;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
     CREATE TABLE volumes (volume_id TEXT PRIMARY KEY, record TEXT NOT NULL);
     CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE snapshots (snapshot_id TEXT PRIMARY KEY, record TEXT NOT NULL);
     CREATE TABLE pending (id TEXT PRIMARY KEY, record TEXT NOT NULL);
     CREATE TABLE instances (instance_id TEXT PRIMARY KEY, record TEXT NOT NULL);";

/// Why `regions/<region>/ec2.db` must have existed: the region has volume images
/// or snapshot blocks, which only a volume service with a store makes.
fn evidence(region_dir: &Path) -> Option<String> {
    let images = std::fs::read_dir(region_dir.join("volumes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".img") && n.trim_start_matches('.').starts_with("vol-")
        })
        .count();
    if images > 0 {
        return Some(format!(
            "{images} volume image(s) exist in {}",
            region_dir.join("volumes").display()
        ));
    }
    let blocks = region_dir.join("snapshots").join("blocks");
    let any_block = std::fs::read_dir(&blocks)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().is_dir());
    any_block.then(|| format!("snapshot blocks exist in {}", blocks.display()))
}

pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl Store {
    /// Opens the region's store; it is created only when the region never had one
    /// (a missing, empty or foreign file is a damaged data root: exit code 253).
    pub fn open(root: &DataRoot, region: &str) -> Result<Self> {
        Self::open_for(root, region, &crate::volume::owner::VolumeOwner::EC2)
    }

    /// Opens the store of `owner`'s volumes in `region`: `ec2.db` in the
    /// owner's directory (`regions/<region>/ec2.db` for EC2,
    /// `regions/<region>/rds/ec2.db` for RDS's storage).
    pub fn open_for(
        root: &DataRoot,
        region: &str,
        owner: &crate::volume::owner::VolumeOwner,
    ) -> Result<Self> {
        let region_dir = owner.base_dir(&root.region_dir(region)?);
        let relative = if owner.dir.is_empty() {
            format!("regions/{region}/ec2.db")
        } else {
            format!("regions/{region}/{}/ec2.db", owner.dir)
        };
        let path = root.path().join(&relative);
        let ev = move |_: &Path| evidence(&region_dir);
        let (conn, _) = root.open_store(&StoreSpec {
            relative,
            schema: SCHEMA,
            tables: &["volumes", "settings", "snapshots"],
            evidence: &ev,
        })?;
        let setup = || -> Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            // Stores made before pending operations were recorded.
            // Stores made before pending operations and simulated instances.
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY, record TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS instances (instance_id TEXT PRIMARY KEY, record TEXT NOT NULL);",
            )?;
            Ok(())
        };
        setup().map_err(|e| e.in_store(&path))?;
        Ok(Store { conn, path })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        list(&self.conn).map_err(|e| e.in_store(&self.path))
    }

    pub fn volume(&self, id: &str) -> Result<Option<VolumeRecord>> {
        get(&self.conn, id).map_err(|e| e.in_store(&self.path))
    }

    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        setting(&self.conn, name).map_err(|e| e.in_store(&self.path))
    }

    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        snapshots(&self.conn).map_err(|e| e.in_store(&self.path))
    }

    pub fn pending(&self) -> Result<Vec<PendingRecord>> {
        pending(&self.conn).map_err(|e| e.in_store(&self.path))
    }

    /// One snapshot's record, by its id (its row alone).
    pub fn snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        snapshot(&self.conn, id).map_err(|e| e.in_store(&self.path))
    }

    /// Every simulated instance, terminated ones included, in launch order.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>> {
        instances(&self.conn).map_err(|e| e.in_store(&self.path))
    }

    /// Runs `f` in one immediate (write-locked) transaction; commits if it returns Ok.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let run = || -> Result<T> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut t = Tx { tx };
            let out = f(&mut t)?;
            t.tx.commit()?;
            Ok(out)
        };
        run().map_err(|e| e.in_store(&path))
    }
}

impl Tx<'_> {
    pub fn volume(&self, id: &str) -> Result<Option<VolumeRecord>> {
        get(&self.tx, id)
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        list(&self.tx)
    }

    pub fn put_volume(&mut self, v: &VolumeRecord) -> Result<()> {
        let json = serde_json::to_string(v).expect("records serialize");
        self.tx.execute(
            "INSERT OR REPLACE INTO volumes (volume_id, record) VALUES (?1, ?2)",
            params![v.volume_id, json],
        )?;
        Ok(())
    }

    pub fn delete_volume(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM volumes WHERE volume_id = ?1", params![id])?;
        Ok(())
    }

    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        setting(&self.tx, name)
    }

    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        snapshots(&self.tx)
    }

    pub fn snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        snapshot(&self.tx, id)
    }

    pub fn put_snapshot(&mut self, s: &SnapshotRecord) -> Result<()> {
        let json = serde_json::to_string(s).expect("records serialize");
        self.tx.execute(
            "INSERT OR REPLACE INTO snapshots (snapshot_id, record) VALUES (?1, ?2)",
            params![s.snapshot_id, json],
        )?;
        Ok(())
    }

    pub fn delete_snapshot(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM snapshots WHERE snapshot_id = ?1", params![id])?;
        Ok(())
    }

    pub fn pending(&self) -> Result<Vec<PendingRecord>> {
        pending(&self.tx)
    }

    pub fn instances(&self) -> Result<Vec<InstanceRecord>> {
        instances(&self.tx)
    }

    /// Forgets the simulated instances and the region's EBS settings (encryption
    /// by default, the default key) and any request to collect blocks.
    pub fn clear_instances_and_settings(&mut self) -> Result<()> {
        self.tx.execute("DELETE FROM instances", [])?;
        self.tx.execute("DELETE FROM settings", [])?;
        Ok(())
    }

    pub fn put_instance(&mut self, i: &InstanceRecord) -> Result<()> {
        let json = serde_json::to_string(i).expect("records serialize");
        self.tx.execute(
            "INSERT OR REPLACE INTO instances (instance_id, record) VALUES (?1, ?2)",
            params![i.instance_id, json],
        )?;
        Ok(())
    }

    pub fn put_pending(&mut self, p: &PendingRecord) -> Result<()> {
        let json = serde_json::to_string(p).expect("records serialize");
        self.tx.execute(
            "INSERT OR REPLACE INTO pending (id, record) VALUES (?1, ?2)",
            params![p.id, json],
        )?;
        Ok(())
    }

    pub fn delete_pending(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM pending WHERE id = ?1", params![id])?;
        Ok(())
    }

    pub fn put_setting(&mut self, name: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => self.tx.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)",
                params![name, v],
            )?,
            None => self
                .tx
                .execute("DELETE FROM settings WHERE name = ?1", params![name])?,
        };
        Ok(())
    }
}

fn parse(json: &str) -> Result<VolumeRecord> {
    serde_json::from_str(json).map_err(|e| {
        crate::Error::environment(format!("a volume record in ec2.db is not readable: {e}"))
    })
}

fn list(conn: &Connection) -> Result<Vec<VolumeRecord>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM volumes ORDER BY volume_id")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(parse(&row?)?);
    }
    Ok(out)
}

fn get(conn: &Connection, id: &str) -> Result<Option<VolumeRecord>> {
    let json: Option<String> = conn
        .query_row(
            "SELECT record FROM volumes WHERE volume_id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    json.as_deref().map(parse).transpose()
}

fn snapshots(conn: &Connection) -> Result<Vec<SnapshotRecord>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM snapshots ORDER BY snapshot_id")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?).map_err(|e| {
            crate::Error::environment(format!("a snapshot record in ec2.db is not readable: {e}"))
        })?);
    }
    Ok(out)
}

fn snapshot(conn: &Connection, id: &str) -> Result<Option<SnapshotRecord>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM snapshots WHERE snapshot_id = ?1")?;
    let json: Option<String> = stmt.query_row(params![id], |r| r.get(0)).optional()?;
    json.map(|j| {
        serde_json::from_str(&j).map_err(|e| {
            crate::Error::environment(format!("a snapshot record in ec2.db is not readable: {e}"))
        })
    })
    .transpose()
}

fn pending(conn: &Connection) -> Result<Vec<PendingRecord>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM pending ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?).map_err(|e| {
            crate::Error::environment(format!(
                "a pending operation in ec2.db is not readable: {e}"
            ))
        })?);
    }
    Ok(out)
}

fn setting(conn: &Connection, name: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT value FROM settings WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?)
}

fn instances(conn: &Connection) -> Result<Vec<InstanceRecord>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM instances")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out: Vec<InstanceRecord> = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?).map_err(|e| {
            crate::Error::environment(format!("an instance in ec2.db is not readable: {e}"))
        })?);
    }
    out.sort_by(|a, b| {
        (a.launch_time, &a.reservation_id, a.launch_index).cmp(&(
            b.launch_time,
            &b.reservation_id,
            b.launch_index,
        ))
    });
    Ok(out)
}
