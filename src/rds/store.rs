//! `regions/<region>/rds/rds.db`: the region's DB instance records.
//!
//! Rows are JSON (nothing here is secret). Every change runs in one `BEGIN
//! IMMEDIATE` transaction, so concurrent processes see the old or the new
//! record, never half of one. A missing or damaged store is an error (the
//! data root's registry, src/home/stores.rs), never a fresh start.

use super::model::{DbInstanceRecord, DbSnapshotRecord};
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
     CREATE TABLE instances (identifier TEXT PRIMARY KEY, record TEXT NOT NULL);
     CREATE TABLE snapshots (identifier TEXT PRIMARY KEY, record TEXT NOT NULL);";

/// Why the store must have existed: RDS's storage volumes exist.
fn evidence(rds_dir: &Path) -> Option<String> {
    let volumes = rds_dir.join("ec2.db");
    volumes
        .exists()
        .then(|| format!("RDS's volume store {} exists", volumes.display()))
}

impl Store {
    pub fn open(root: &DataRoot, region: &str) -> Result<Self> {
        let rds_dir = root.region_dir(region)?.join("rds");
        crate::fsutil::ensure_private_dir(&rds_dir)?;
        let relative = format!("regions/{region}/rds/rds.db");
        let path = root.path().join(&relative);
        let ev = move |_: &Path| evidence(&rds_dir);
        let (conn, _) = root.open_store(&StoreSpec {
            relative,
            schema: SCHEMA,
            tables: &["instances"],
            evidence: &ev,
        })?;
        let setup = || -> Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            // Stores made before DB snapshots.
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS snapshots (identifier TEXT PRIMARY KEY, record TEXT NOT NULL);",
            )?;
            Ok(())
        };
        setup().map_err(|e| e.in_store(&path))?;
        Ok(Store { conn, path })
    }

    pub fn instances(&self) -> Result<Vec<DbInstanceRecord>> {
        instances(&self.conn).map_err(|e| e.in_store(&self.path))
    }

    pub fn instance(&self, id: &str) -> Result<Option<DbInstanceRecord>> {
        instance(&self.conn, id).map_err(|e| e.in_store(&self.path))
    }

    pub fn snapshots(&self) -> Result<Vec<DbSnapshotRecord>> {
        rows(&self.conn, "snapshots").map_err(|e| e.in_store(&self.path))
    }

    pub fn snapshot(&self, id: &str) -> Result<Option<DbSnapshotRecord>> {
        row(&self.conn, "snapshots", id).map_err(|e| e.in_store(&self.path))
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

pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl Tx<'_> {
    pub fn instance(&self, id: &str) -> Result<Option<DbInstanceRecord>> {
        instance(&self.tx, id)
    }

    pub fn instances(&self) -> Result<Vec<DbInstanceRecord>> {
        instances(&self.tx)
    }

    pub fn put_instance(&mut self, r: &DbInstanceRecord) -> Result<()> {
        let json = serde_json::to_string(r).expect("records serialize");
        self.tx.execute(
            "INSERT OR REPLACE INTO instances (identifier, record) VALUES (?1, ?2)",
            params![r.identifier, json],
        )?;
        Ok(())
    }

    pub fn delete_instance(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM instances WHERE identifier = ?1", params![id])?;
        Ok(())
    }

    pub fn snapshot(&self, id: &str) -> Result<Option<DbSnapshotRecord>> {
        row(&self.tx, "snapshots", id)
    }

    pub fn snapshots(&self) -> Result<Vec<DbSnapshotRecord>> {
        rows(&self.tx, "snapshots")
    }

    pub fn put_snapshot(&mut self, s: &DbSnapshotRecord) -> Result<()> {
        let json = serde_json::to_string(s).expect("records serialize");
        self.tx.execute(
            "INSERT OR REPLACE INTO snapshots (identifier, record) VALUES (?1, ?2)",
            params![s.identifier, json],
        )?;
        Ok(())
    }

    pub fn delete_snapshot(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM snapshots WHERE identifier = ?1", params![id])?;
        Ok(())
    }
}

fn row<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    table: &str,
    id: &str,
) -> Result<Option<T>> {
    let json: Option<String> = conn
        .query_row(
            &format!("SELECT record FROM {table} WHERE identifier = ?1"),
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    json.map(|j| decode_as(&j)).transpose()
}

fn rows<T: serde::de::DeserializeOwned>(conn: &Connection, table: &str) -> Result<Vec<T>> {
    let mut st = conn.prepare(&format!("SELECT record FROM {table} ORDER BY identifier"))?;
    let found = st.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for j in found {
        out.push(decode_as(&j?)?);
    }
    Ok(out)
}

fn decode_as<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        crate::error::Error::new(
            crate::error::ErrorKind::Environment,
            format!("an RDS record does not decode ({e})"),
        )
    })
}

fn decode(json: &str) -> Result<DbInstanceRecord> {
    serde_json::from_str(json).map_err(|e| {
        crate::error::Error::new(
            crate::error::ErrorKind::Environment,
            format!("a DB instance record does not decode ({e})"),
        )
    })
}

fn instance(conn: &Connection, id: &str) -> Result<Option<DbInstanceRecord>> {
    let json: Option<String> = conn
        .query_row(
            "SELECT record FROM instances WHERE identifier = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    json.map(|j| decode(&j)).transpose()
}

fn instances(conn: &Connection) -> Result<Vec<DbInstanceRecord>> {
    let mut st = conn.prepare("SELECT record FROM instances")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(&row?)?);
    }
    out.sort_by(|a, b| a.identifier.cmp(&b.identifier));
    Ok(out)
}
