//! The KMS store: one SQLite database per region in which every row is sealed
//! under the root key, and the root key itself (the simulated HSM).
//!
//! Rows are `(kind, id, sealed)`. `id` is HMAC-SHA256(index key, kind || name)
//! truncated to 16 bytes, so even key ids and alias names are not readable from
//! the file; `sealed` is `nonce || AES-256-GCM(store key, aad = kind || id, json)`,
//! so a row cannot be altered or moved to another slot unnoticed. SQLite gives the
//! atomicity: each KMS operation is one transaction, so a kill at any moment leaves
//! the old or the new state. `secure_delete` makes SQLite overwrite freed pages, so
//! a deleted key's sealed material does not linger in free pages either.

use crate::crypto::{SecretBytes, aead};
use crate::error::{Error, Result};
use crate::home::DataRoot;
use hmac::{KeyInit, Mac};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const ROOT_MAGIC: &[u8; 8] = b"EBSIMRK1";
const ROOT_FILE_LEN: usize = 8 + 32 + 8;
const STORE_FORMAT: &str = "ebsim-kms-store-1";

/// Kinds of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Key = 1,
    Alias = 2,
    Grant = 3,
}

/// The root key: 32 random bytes in `<root>/root.key` (mode 0600).
///
/// File format: `"EBSIMRK1" || key (32) || SHA-256("EBSIMRK1" || key)[..8]`.
pub struct RootKey {
    secret: SecretBytes,
    path: PathBuf,
}

impl RootKey {
    /// Loads the root key, creating it only when the data root has no KMS state at
    /// all. A missing key beside existing state, or a corrupt file, is an error:
    /// re-initialising would silently orphan every key and ciphertext.
    pub fn load_or_create(root: &DataRoot) -> Result<Self> {
        let path = root.path().join("root.key");
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(Zeroizing::new(bytes), path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut stores: Vec<String> = root
                    .existing_regions()
                    .into_iter()
                    .filter(|r| root.path().join("regions").join(r).join("kms.db").exists())
                    .collect();
                // Stores that were created, even if their files are gone too.
                for s in root.registered_stores()? {
                    if let Some(r) = s
                        .strip_prefix("regions/")
                        .and_then(|r| r.strip_suffix("/kms.db"))
                        && !stores.iter().any(|x| x == r)
                    {
                        stores.push(r.to_string());
                    }
                }
                if !stores.is_empty() {
                    return Err(Error::environment(format!(
                        "the root key {} is missing, but KMS stores exist for {}; \
                         restore the root key (ebsim never re-creates it over existing state)",
                        path.display(),
                        stores.join(", ")
                    )));
                }
                Self::create(path)
            }
            Err(e) => Err(Error::io(
                format!("cannot read the root key {}", path.display()),
                e,
            )),
        }
    }

    fn parse(bytes: Zeroizing<Vec<u8>>, path: PathBuf) -> Result<Self> {
        let corrupt = || {
            Error::environment(format!(
                "the root key {} is corrupt (expected {ROOT_FILE_LEN} bytes starting with EBSIMRK1 and a valid checksum)",
                path.display()
            ))
        };
        if bytes.len() != ROOT_FILE_LEN || &bytes[..8] != ROOT_MAGIC {
            return Err(corrupt());
        }
        let sum = Sha256::digest(&bytes[..40]);
        if sum[..8] != bytes[40..] {
            return Err(corrupt());
        }
        Ok(RootKey {
            secret: SecretBytes::from_slice(&bytes[8..40]),
            path,
        })
    }

    fn create(path: PathBuf) -> Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let secret = SecretBytes::random(32);
        let mut file = Zeroizing::new(Vec::with_capacity(ROOT_FILE_LEN));
        file.extend_from_slice(ROOT_MAGIC);
        file.extend_from_slice(secret.expose());
        let sum = Sha256::digest(&file[..]);
        file.extend_from_slice(&sum[..8]);
        let dir = path.parent().expect("root.key has a parent");
        let ctx = |e| Error::io(format!("cannot create the root key {}", path.display()), e);
        let mut tmp = tempfile::Builder::new()
            .prefix(".root.key-")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(ctx)?;
        tmp.write_all(&file).map_err(ctx)?;
        tmp.as_file().sync_all().map_err(ctx)?;
        // No clobbering: if another process created the key first, use theirs.
        match tmp.persist_noclobber(&path) {
            Ok(_) => {
                crate::fsutil::fsync_dir(dir)?;
                Ok(RootKey { secret, path })
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(&path).map_err(ctx)?;
                Self::parse(Zeroizing::new(bytes), path)
            }
            Err(e) => Err(ctx(e.error)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A key for one purpose, derived from the root key (HKDF, `label` names the purpose).
    pub fn derive(&self, label: &[u8]) -> SecretBytes {
        let k = aead::derive_key(self.secret.expose(), b"ebsim root", &[label]);
        SecretBytes::from_slice(&k[..])
    }
}

/// One region's sealed store.
pub struct Store {
    conn: Connection,
    seal_key: SecretBytes,
    index_key: SecretBytes,
    path: PathBuf,
}

/// The handle writes go through; it exists only inside [`Store::write`].
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    store: &'a StoreKeys<'a>,
}

/// Borrowed key material for sealing inside a transaction.
pub struct StoreKeys<'a> {
    seal_key: &'a SecretBytes,
    index_key: &'a SecretBytes,
}

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
     CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE objects (
         kind INTEGER NOT NULL, id BLOB NOT NULL, sealed BLOB NOT NULL,
         PRIMARY KEY (kind, id)) WITHOUT ROWID;";

/// Why `regions/<region>/kms.db` must have existed: the region has an audit log
/// with records, or a volume store (which is only made after the KMS).
fn evidence(region_dir: &Path) -> Option<String> {
    let trail = region_dir.join("cloudtrail.jsonl");
    if std::fs::metadata(&trail).is_ok_and(|m| m.len() > 0) {
        return Some(format!("the audit log {} has records", trail.display()));
    }
    let ec2 = region_dir.join("ec2.db");
    ec2.exists()
        .then(|| format!("the volume store {} exists", ec2.display()))
}

impl Store {
    /// Opens the KMS store of `region`; it is created only when the region never
    /// had one (a missing, empty or foreign file is a damaged data root, 253).
    pub fn open_region(root: &DataRoot, region: &str, rk: &RootKey) -> Result<Self> {
        let region_dir = root.region_dir(region)?;
        let relative = format!("regions/{region}/kms.db");
        let ev = move |_: &Path| evidence(&region_dir);
        let (conn, _) = root.open_store(&crate::home::stores::StoreSpec {
            relative: relative.clone(),
            schema: SCHEMA,
            tables: &["meta", "objects"],
            evidence: &ev,
        })?;
        Self::with_connection(conn, &root.path().join(relative), rk)
    }

    /// Opens the store file at `path` directly (tests); created if missing.
    pub fn open(path: &Path, root: &RootKey) -> Result<Self> {
        let conn =
            Connection::open(path).map_err(|e| crate::home::stores::sqlite_error(path, e))?;
        // Make the file private before anything is written to it.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(format!("cannot chmod {}", path.display()), e))?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS objects (
                 kind INTEGER NOT NULL, id BLOB NOT NULL, sealed BLOB NOT NULL,
                 PRIMARY KEY (kind, id)) WITHOUT ROWID;",
        )
        .map_err(|e| crate::home::stores::sqlite_error(path, e))?;
        Self::with_connection(conn, path, root)
    }

    fn with_connection(conn: Connection, path: &Path, root: &RootKey) -> Result<Self> {
        let setup = || -> Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "secure_delete", "ON")?;
            Ok(())
        };
        setup().map_err(|e| e.in_store(path))?;
        let store = Store {
            conn,
            seal_key: root.derive(b"store seal v1"),
            index_key: root.derive(b"store index v1"),
            path: path.to_path_buf(),
        };
        store.check_root(root).map_err(|e| e.in_store(path))?;
        Ok(store)
    }

    /// The store remembers a value sealed under the root key; if the root key in
    /// use does not open it, the root key was replaced.
    fn check_root(&self, root: &RootKey) -> Result<()> {
        let keys = self.keys();
        let aad = b"meta/root-check";
        let found: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'root-check'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match found {
            Some(sealed) => match keys.open_blob(aad, &sealed) {
                Ok(v) if &v[..] == STORE_FORMAT.as_bytes() => Ok(()),
                _ => Err(Error::environment(format!(
                    "the root key {} does not open the KMS store {} (was the root key replaced?)",
                    root.path().display(),
                    self.path.display()
                ))),
            },
            None => {
                let sealed = keys.seal_blob(aad, STORE_FORMAT.as_bytes());
                self.conn.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('root-check', ?1)",
                    params![sealed],
                )?;
                Ok(())
            }
        }
    }

    /// Records the account this store belongs to on first use; afterwards refuses
    /// another. One region's store holds one account's keys and aliases.
    pub fn bind_account(&self, account_id: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('account-id', ?1)",
            params![account_id.as_bytes()],
        )?;
        let stored: Vec<u8> = self.conn.query_row(
            "SELECT value FROM meta WHERE name = 'account-id'",
            [],
            |r| r.get(0),
        )?;
        if stored != account_id.as_bytes() {
            return Err(Error::environment(format!(
                "the KMS store {} belongs to account {}, but the configured account is {account_id} \
                 (config.json account_id); use another data root for another account",
                self.path.display(),
                String::from_utf8_lossy(&stored)
            )));
        }
        Ok(())
    }

    fn keys(&self) -> StoreKeys<'_> {
        StoreKeys {
            seal_key: &self.seal_key,
            index_key: &self.index_key,
        }
    }

    /// SQLite's `data_version`: changes whenever another connection commits.
    pub fn data_version(&self) -> Result<i64> {
        // Asked on every call: the statement is kept prepared.
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))
    }

    /// All rows of one kind, opened.
    pub fn list<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>> {
        list_in(&self.conn, &self.keys(), kind).map_err(|e| e.in_store(&self.path))
    }

    /// Runs `f` in one immediate (write-locked) transaction; commits if it returns Ok.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let keys = StoreKeys {
            seal_key: &self.seal_key,
            index_key: &self.index_key,
        };
        let path = self.path.clone();
        let conn = &mut self.conn;
        let run = move || -> Result<T> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut t = Tx { tx, store: &keys };
            let out = f(&mut t)?;
            t.tx.commit()?;
            Ok(out)
        };
        run().map_err(|e| e.in_store(&path))
    }
}

fn list_in<T: DeserializeOwned>(
    conn: &Connection,
    keys: &StoreKeys<'_>,
    kind: Kind,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached("SELECT id, sealed FROM objects WHERE kind = ?1")?;
    let rows = stmt.query_map(params![kind as u8], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, sealed) = row?;
        out.push(keys.open_row(kind, &id, &sealed)?);
    }
    Ok(out)
}

impl StoreKeys<'_> {
    fn row_id(&self, kind: Kind, name: &str) -> Vec<u8> {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(self.index_key.expose())
            .expect("HMAC takes any key length");
        mac.update(&[kind as u8]);
        mac.update(name.as_bytes());
        mac.finalize().into_bytes()[..16].to_vec()
    }

    fn seal_key(&self) -> &[u8; 32] {
        self.seal_key.expose().try_into().expect("32-byte key")
    }

    fn seal_blob(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        crate::crypto::random_fill(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&aead::seal(self.seal_key(), &nonce, aad, plaintext));
        out
    }

    fn open_blob(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, aead::OpenError> {
        if sealed.len() < aead::NONCE_LEN + aead::TAG_LEN {
            return Err(aead::OpenError);
        }
        let (nonce, body) = sealed.split_at(aead::NONCE_LEN);
        aead::open(
            self.seal_key(),
            nonce.try_into().expect("12 bytes"),
            aad,
            body,
        )
    }

    fn row_aad(kind: Kind, id: &[u8]) -> Vec<u8> {
        let mut aad = vec![kind as u8];
        aad.extend_from_slice(id);
        aad
    }

    fn open_row<T: DeserializeOwned>(&self, kind: Kind, id: &[u8], sealed: &[u8]) -> Result<T> {
        let json = self
            .open_blob(&Self::row_aad(kind, id), sealed)
            .map_err(|_| {
                Error::environment(
                    "a KMS store row failed authentication (the store was altered or damaged)",
                )
            })?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::environment(format!("a KMS store row does not parse: {e}")))
    }
}

impl Tx<'_> {
    pub fn put<T: Serialize>(&mut self, kind: Kind, name: &str, value: &T) -> Result<()> {
        let id = self.store.row_id(kind, name);
        // Records hold key material: serialize into a zeroizing buffer allocated at
        // its exact final size, so no reallocation leaves a copy behind on the heap.
        let mut counter = CountingWriter(0);
        serde_json::to_writer(&mut counter, value).expect("records serialize");
        let mut json = Zeroizing::new(Vec::with_capacity(counter.0));
        serde_json::to_writer(&mut *json, value).expect("records serialize");
        debug_assert_eq!(json.len(), counter.0);
        let sealed = self.store.seal_blob(&StoreKeys::row_aad(kind, &id), &json);
        self.tx.execute(
            "INSERT OR REPLACE INTO objects (kind, id, sealed) VALUES (?1, ?2, ?3)",
            params![kind as u8, id, sealed],
        )?;
        Ok(())
    }

    pub fn delete(&mut self, kind: Kind, name: &str) -> Result<()> {
        let id = self.store.row_id(kind, name);
        self.tx.execute(
            "DELETE FROM objects WHERE kind = ?1 AND id = ?2",
            params![kind as u8, id],
        )?;
        Ok(())
    }

    pub fn list<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>> {
        list_in(&self.tx, self.store, kind)
    }

    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .tx
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// Deletes every key, alias and grant (the rows of `objects`); the store's own
    /// `meta` (its account, the root-key check) stays.
    pub fn clear(&mut self) -> Result<()> {
        self.tx.execute("DELETE FROM objects", [])?;
        Ok(())
    }
}

/// Counts the bytes written to it.
struct CountingWriter(usize);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn root_key_is_created_private_and_reloaded() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path()).unwrap();
        let a = RootKey::load_or_create(&root).unwrap();
        let b = RootKey::load_or_create(&root).unwrap();
        assert_eq!(a.secret, b.secret);
        let meta = std::fs::metadata(d.path().join("root.key")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(crate::num::usize_of(meta.len()), ROOT_FILE_LEN);
    }

    #[test]
    fn corrupt_or_missing_root_key_is_an_error_not_a_reset() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path()).unwrap();
        let rk = RootKey::load_or_create(&root).unwrap();
        let db = root.region_dir("us-east-1").unwrap().join("kms.db");
        Store::open(&db, &rk).unwrap();
        let key_path = d.path().join("root.key");
        let mut bytes = std::fs::read(&key_path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&key_path, &bytes).unwrap();
        let e = RootKey::load_or_create(&root).err().unwrap();
        assert!(e.to_string().contains("corrupt"), "{e}");
        std::fs::remove_file(&key_path).unwrap();
        let e = RootKey::load_or_create(&root).err().unwrap();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(
            !key_path.exists(),
            "no new root key may be created over existing state"
        );
    }

    #[test]
    fn a_different_root_key_cannot_open_the_store() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path()).unwrap();
        let rk = RootKey::load_or_create(&root).unwrap();
        let db = root.region_dir("us-east-1").unwrap().join("kms.db");
        Store::open(&db, &rk).unwrap();
        let other = tempfile::tempdir().unwrap();
        let rk2 = RootKey::load_or_create(&DataRoot::open(other.path()).unwrap()).unwrap();
        let e = Store::open(&db, &rk2).err().unwrap();
        assert!(e.to_string().contains("does not open"), "{e}");
    }

    #[test]
    fn rows_are_sealed_and_names_hidden() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::open(d.path()).unwrap();
        let rk = RootKey::load_or_create(&root).unwrap();
        let db = root.region_dir("us-east-1").unwrap().join("kms.db");
        let mut s = Store::open(&db, &rk).unwrap();
        s.write(|tx| {
            tx.put(
                Kind::Alias,
                "alias/very-visible-name",
                &"very-visible-value",
            )
        })
        .unwrap();
        let got: Vec<String> = s.list(Kind::Alias).unwrap();
        assert_eq!(got, vec!["very-visible-value"]);
        drop(s);
        for entry in std::fs::read_dir(db.parent().unwrap()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains("very-visible"));
        }
    }
}
