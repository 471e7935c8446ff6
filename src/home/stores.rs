//! The data root's SQLite stores (`iam.db`, `regions/<r>/kms.db`, `regions/<r>/ec2.db`)
//! and the registry that says which of them exist (`stores.json`).
//!
//! A store is created only when it never existed: the first time its data root
//! (or its region) is used. Every store ebsim creates is recorded in `stores.json`;
//! afterwards a missing, empty or unreadable store file is a damaged data root
//! (exit code 253, the file named), never a fresh start, because a new empty store
//! would silently lose every key, volume record or identity the old one held
//! (docs/DATA-ROOT.md).
//!
//! Data roots made before the registry existed have stores but no `stores.json`:
//! their stores are recorded the first time they are opened. For such a root (or
//! one whose registry was deleted with the store), each store also has evidence
//! that it existed — `kms.db` is missing while the region's audit log or `ec2.db`
//! exists, `ec2.db` while volume images or snapshot blocks exist — and evidence is
//! enough to refuse.

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The registry file, beside `root.key`.
pub const REGISTRY: &str = "stores.json";
const REGISTRY_FORMAT: &str = "ebsim-stores-1";
/// Held (flock, exclusive) while a store is created or the registry changes.
const LOCK: &str = ".stores.lock";

/// Where the data root's backup and restore are described (named by every error
/// about a damaged store).
pub const RESTORE_HINT: &str =
    "restore the data root from a backup (docs/DATA-ROOT.md, \"Backup and restore\")";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registry {
    format: String,
    /// Store path relative to the data root → when it was created (or first seen).
    stores: BTreeMap<String, String>,
}

/// What a store needs: its place, its schema, and how to tell it once existed.
pub struct StoreSpec<'a> {
    /// Path relative to the data root (`regions/us-east-1/kms.db`).
    pub relative: String,
    /// SQL run once, when the store is created.
    pub schema: &'a str,
    /// Tables an existing store must have (else it is not this store).
    pub tables: &'a [&'a str],
    /// Why the store must have existed, if something says so (its siblings).
    pub evidence: &'a dyn Fn(&Path) -> Option<String>,
}

/// The error for a damaged or missing store: exit code 253, the file named.
pub fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Environment,
        format!(
            "the store {} {what}; ebsim never re-creates a store over an existing data root: {RESTORE_HINT}",
            path.display()
        ),
    )
}

/// A SQLite error on the store at `path`: corruption is a damaged data root (253),
/// anything else an I/O failure (255); both name the file.
pub fn sqlite_error(path: &Path, e: rusqlite::Error) -> Error {
    let corrupt = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    );
    if corrupt {
        damaged(path, format_args!("is corrupt ({e})")).with_source(e)
    } else {
        Error::new(
            ErrorKind::Internal,
            format!("SQLite store {}: {e}", path.display()),
        )
        .with_source(e)
    }
}

impl Error {
    /// Names the store file in an error that came from SQLite (through `?`), and
    /// classifies corruption as a damaged data root. Other errors pass unchanged.
    pub fn in_store(self, path: &Path) -> Error {
        let Some(sq) =
            std::error::Error::source(&self).and_then(|s| s.downcast_ref::<rusqlite::Error>())
        else {
            return self;
        };
        let corrupt = matches!(
            sq.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        );
        if corrupt {
            damaged(path, format_args!("is corrupt ({sq})"))
        } else {
            Error::new(
                ErrorKind::Internal,
                format!("SQLite store {}: {sq}", path.display()),
            )
        }
    }
}

impl super::DataRoot {
    fn registry_path(&self) -> PathBuf {
        self.path().join(REGISTRY)
    }

    fn read_registry(&self) -> Result<Option<Registry>> {
        let p = self.registry_path();
        match std::fs::read(&p) {
            Ok(bytes) => {
                let r: Registry = serde_json::from_slice(&bytes)
                    .map_err(|e| damaged(&p, format_args!("is not valid ({e})")))?;
                if r.format != REGISTRY_FORMAT {
                    return Err(damaged(
                        &p,
                        format_args!("has an unknown format {:?}", r.format),
                    ));
                }
                Ok(Some(r))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot read {}", p.display()), e)),
        }
    }

    /// True if the registry records `relative` as created.
    pub fn store_registered(&self, relative: &str) -> Result<bool> {
        Ok(self
            .read_registry()?
            .is_some_and(|r| r.stores.contains_key(relative)))
    }

    /// Every registered store (relative paths).
    pub fn registered_stores(&self) -> Result<Vec<String>> {
        Ok(self
            .read_registry()?
            .map(|r| r.stores.into_keys().collect())
            .unwrap_or_default())
    }

    /// Runs `f` holding the registry lock.
    fn with_store_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let p = self.path().join(LOCK);
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&p)
                .map_err(|e| Error::io(format!("cannot open {}", p.display()), e))?
        };
        file.lock()
            .map_err(|e| Error::io(format!("cannot lock {}", p.display()), e))?;
        let out = f();
        drop(file);
        out
    }

    fn register(&self, relative: &str) -> Result<()> {
        let mut reg = self.read_registry()?.unwrap_or_else(|| Registry {
            format: REGISTRY_FORMAT.into(),
            stores: BTreeMap::new(),
        });
        if reg.stores.contains_key(relative) {
            return Ok(());
        }
        reg.stores.insert(
            relative.to_string(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let mut bytes = serde_json::to_vec_pretty(&reg).expect("registry serializes");
        bytes.push(b'\n');
        fsutil::write_atomic(&self.registry_path(), &bytes)
    }

    /// Opens the store `spec` describes, creating it only if it never existed.
    /// Returns the connection and whether the store was created just now.
    pub fn open_store(&self, spec: &StoreSpec<'_>) -> Result<(Connection, bool)> {
        let path = self.path().join(&spec.relative);
        if path.exists() {
            let conn = open_existing(&path, spec.tables)?;
            if !self.store_registered(&spec.relative)? {
                // A data root from before the registry: record what is there.
                self.with_store_lock(|| self.register(&spec.relative))?;
            }
            return Ok((conn, false));
        }
        if self.store_registered(&spec.relative)? {
            return Err(damaged(&path, "is missing"));
        }
        if let Some(why) = (spec.evidence)(self.path()) {
            return Err(damaged(&path, format_args!("is missing, but {why}")));
        }
        self.with_store_lock(|| {
            if path.exists() {
                // Another process created it while this one waited for the lock.
                return Ok((open_existing(&path, spec.tables)?, false));
            }
            if self.store_registered(&spec.relative)? {
                return Err(damaged(&path, "is missing"));
            }
            create(&path, spec.schema)?;
            self.register(&spec.relative)?;
            Ok((open_existing(&path, spec.tables)?, true))
        })
    }
}

/// Opens a store file that exists, refusing an empty file, a file that is not
/// SQLite, and a database without the store's tables.
fn open_existing(path: &Path, tables: &[&str]) -> Result<Connection> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
        .len();
    if len == 0 {
        return Err(damaged(path, "is empty"));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sqlite_error(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| sqlite_error(path, e))?;
    let have: Vec<String> = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })()
    .map_err(|e| sqlite_error(path, e))?;
    if let Some(missing) = tables.iter().find(|t| !have.iter().any(|h| h == *t)) {
        return Err(damaged(
            path,
            format_args!("is not an ebsim store (it has no table {missing})"),
        ));
    }
    Ok(conn)
}

/// Creates a new store: schema written into a temporary file, fsynced, then linked
/// into place (never over an existing file), and the directory fsynced.
fn create(path: &Path, schema: &str) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::usage(format!("{} has no parent directory", path.display())))?;
    fsutil::ensure_private_dir(dir)?;
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-store-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| io("cannot create a temporary file for", e))?;
    {
        let conn = Connection::open(tmp.path()).map_err(|e| sqlite_error(tmp.path(), e))?;
        conn.execute_batch(schema)
            .map_err(|e| sqlite_error(tmp.path(), e))?;
        conn.close().map_err(|(_, e)| sqlite_error(tmp.path(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| io("cannot fsync", e))?;
    tmp.persist_noclobber(path)
        .map_err(|e| io("cannot link into place", e.error))?;
    fsutil::fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::DataRoot;

    fn spec<'a>(evidence: &'a dyn Fn(&Path) -> Option<String>) -> StoreSpec<'a> {
        StoreSpec {
            relative: "regions/us-east-1/t.db".into(),
            schema: "CREATE TABLE t (x INTEGER);",
            tables: &["t"],
            evidence,
        }
    }

    #[test]
    fn created_once_then_missing_or_empty_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path()).unwrap();
        let none = |_: &Path| None;
        let (_, created) = root.open_store(&spec(&none)).unwrap();
        assert!(created);
        let (_, created) = root.open_store(&spec(&none)).unwrap();
        assert!(!created);
        let p = d.path().join("regions/us-east-1/t.db");
        std::fs::rename(&p, d.path().join("moved.db")).unwrap();
        let e = root.open_store(&spec(&none)).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Environment);
        assert!(e.message().contains("t.db is missing"), "{e}");
        assert!(e.message().contains("DATA-ROOT.md"), "{e}");
        assert!(!p.exists(), "nothing is re-created");
        std::fs::write(&p, b"").unwrap();
        let e = root.open_store(&spec(&none)).err().unwrap();
        assert!(e.message().contains("is empty"), "{e}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "nothing written");
        std::fs::write(&p, vec![0x41u8; 8192]).unwrap();
        let e = root.open_store(&spec(&none)).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Environment, "{e}");
        assert!(e.message().contains("t.db is corrupt"), "{e}");
    }

    #[test]
    fn evidence_refuses_an_unregistered_missing_store() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path()).unwrap();
        let ev = |_: &Path| Some("volume images exist".to_string());
        let e = root.open_store(&spec(&ev)).err().unwrap();
        assert!(
            e.message().contains("is missing, but volume images exist"),
            "{e}"
        );
        assert!(!d.path().join("regions/us-east-1/t.db").exists());
    }

    #[test]
    fn a_store_of_another_kind_is_refused_and_stores_are_private() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path()).unwrap();
        let none = |_: &Path| None;
        root.open_store(&spec(&none)).unwrap();
        let p = d.path().join("regions/us-east-1/t.db");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let other = StoreSpec {
            tables: &["t", "u"],
            ..spec(&none)
        };
        let e = root.open_store(&other).err().unwrap();
        assert!(e.message().contains("has no table u"), "{e}");
        // An old data root (no registry) adopts what it finds.
        std::fs::remove_file(d.path().join(REGISTRY)).unwrap();
        root.open_store(&spec(&none)).unwrap();
        assert!(root.store_registered("regions/us-east-1/t.db").unwrap());
    }
}
