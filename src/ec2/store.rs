//! `regions/<region>/ec2.db`: the region's volume records and EBS account settings.
//!
//! Rows are JSON (nothing here is secret: wrapped keys live in the image headers).
//! Every change runs in one `BEGIN IMMEDIATE` transaction, so concurrent processes
//! see the old or the new record, never half of one.

use super::model::{SnapshotRecord, VolumeRecord};
use crate::error::Result;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;

pub struct Store {
    conn: Connection,
}

pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| crate::Error::io(format!("cannot chmod {}", path.display()), e))?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS volumes (volume_id TEXT PRIMARY KEY, record TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS snapshots (snapshot_id TEXT PRIMARY KEY, record TEXT NOT NULL);",
        )?;
        Ok(Store { conn })
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        list(&self.conn)
    }

    pub fn volume(&self, id: &str) -> Result<Option<VolumeRecord>> {
        get(&self.conn, id)
    }

    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        setting(&self.conn, name)
    }

    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        snapshots(&self.conn)
    }

    /// Runs `f` in one immediate (write-locked) transaction; commits if it returns Ok.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut t = Tx { tx };
        let out = f(&mut t)?;
        t.tx.commit()?;
        Ok(out)
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

fn setting(conn: &Connection, name: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT value FROM settings WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?)
}
