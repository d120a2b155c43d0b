//! The persistent registry: keys and values in a redb database, every batch of writes one
//! transaction (after a crash the store holds either all of a batch or none of it).
//!
//! Two tables: `keys` maps the canonical (case-folded) path of each key to its record (the name in
//! the case it was created with, class, last write time, and its values in creation order);
//! `children` maps `PARENT\0CHILD` (both folded) to the child's name, so a key's subkeys come out
//! of one range scan in case-insensitive sorted order.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ntoskrnl::registry::{
    self as reg, canonical_path, filetime_now, is_root, names_equal, path_components, split_parent,
    KeyInfo, RegError, RegResult, RegValue, RegistryBackend,
};
use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const CHILDREN: TableDefinition<&str, &str> = TableDefinition::new("children");

/// File name of the store inside its directory.
pub const FILE_NAME: &str = "registry.redb";

fn db_err(e: impl Display) -> RegError {
    RegError::Storage(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Records

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct KeyRecord {
    name: String,
    class: String,
    last_write: u64,
    values: Vec<(String, RegValue)>,
}

const RECORD_VERSION: u8 = 1;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend((b.len() as u32).to_le_bytes());
    out.extend(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> RegResult<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| RegError::Storage("corrupt key record (truncated)".into()))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> RegResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> RegResult<u64> {
        Ok(u64::from(self.u32()?) | (u64::from(self.u32()?) << 32))
    }
    fn bytes(&mut self) -> RegResult<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> RegResult<String> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| RegError::Storage("corrupt key record (name is not UTF-8)".into()))
    }
}

impl KeyRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        put_bytes(&mut out, self.name.as_bytes());
        put_bytes(&mut out, self.class.as_bytes());
        out.extend(self.last_write.to_le_bytes());
        out.extend((self.values.len() as u32).to_le_bytes());
        for (name, v) in &self.values {
            put_bytes(&mut out, name.as_bytes());
            out.extend(v.kind.to_le_bytes());
            put_bytes(&mut out, &v.data);
        }
        out
    }

    fn decode(bytes: &[u8]) -> RegResult<KeyRecord> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.take(1)?[0];
        if version != RECORD_VERSION {
            return Err(RegError::Storage(format!(
                "key record version {version} is not supported"
            )));
        }
        let name = r.string()?;
        let class = r.string()?;
        let last_write = r.u64()?;
        let count = r.u32()?;
        let mut values = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            let n = r.string()?;
            let kind = r.u32()?;
            let data = r.bytes()?.to_vec();
            values.push((n, RegValue { kind, data }));
        }
        Ok(KeyRecord {
            name,
            class,
            last_write,
            values,
        })
    }
}

/// `PARENT\0CHILD` of a canonical path (None for `\REGISTRY`).
fn child_entry(canon: &str) -> Option<(String, String)> {
    let (parent, leaf) = split_parent(canon)?;
    Some((format!("{parent}\0{leaf}"), parent.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Reading, shared by read views and write batches

fn get_record<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    canon: &str,
) -> RegResult<Option<KeyRecord>> {
    match t.get(canon).map_err(db_err)? {
        Some(g) => Ok(Some(KeyRecord::decode(g.value())?)),
        None => Ok(None),
    }
}

/// Canonical paths and names of the subkeys of `canon`, in order.
fn get_children<T: ReadableTable<&'static str, &'static str>>(
    t: &T,
    canon: &str,
) -> RegResult<Vec<(String, String)>> {
    let from = format!("{canon}\0");
    let to = format!("{canon}\u{1}");
    let mut out = Vec::new();
    for item in t
        .range::<&str>(from.as_str()..to.as_str())
        .map_err(db_err)?
    {
        let (k, v) = item.map_err(db_err)?;
        let leaf = &k.value()[from.len()..];
        out.push((format!("{canon}\\{leaf}"), v.value().to_string()));
    }
    Ok(out)
}

/// Read access to the two tables (a read transaction or a write batch).
trait Tables {
    fn record(&self, canon: &str) -> RegResult<Option<KeyRecord>>;
    fn children(&self, canon: &str) -> RegResult<Vec<(String, String)>>;

    fn existing(&self, path: &str) -> RegResult<(String, KeyRecord)> {
        let canon = canonical_path(path)?;
        match self.record(&canon)? {
            Some(r) => Ok((canon, r)),
            None => Err(RegError::NotFound(path.to_string())),
        }
    }

    fn info_of(&self, canon: &str, rec: &KeyRecord) -> RegResult<KeyInfo> {
        let mut subkeys = Vec::new();
        for (child, name) in self.children(canon)? {
            let class = self.record(&child)?.map(|r| r.class).unwrap_or_default();
            subkeys.push((name, class));
        }
        Ok(KeyInfo::assemble(
            &rec.name,
            &rec.class,
            rec.last_write,
            subkeys.iter().map(|(n, c)| (n.as_str(), c.as_str())),
            &rec.values,
        ))
    }

    fn key_info(&self, path: &str) -> RegResult<KeyInfo> {
        let (canon, rec) = self.existing(path)?;
        self.info_of(&canon, &rec)
    }

    fn enum_key(&self, path: &str, index: u32) -> RegResult<Option<KeyInfo>> {
        let (canon, _) = self.existing(path)?;
        let Some((child, _)) = self.children(&canon)?.into_iter().nth(index as usize) else {
            return Ok(None);
        };
        match self.record(&child)? {
            Some(rec) => Ok(Some(self.info_of(&child, &rec)?)),
            None => Err(RegError::Storage(format!("subkey {child} has no record"))),
        }
    }

    fn query_value(&self, path: &str, name: &str) -> RegResult<Option<(String, RegValue)>> {
        let (_, rec) = self.existing(path)?;
        Ok(rec.values.into_iter().find(|(n, _)| names_equal(n, name)))
    }

    fn enum_value(&self, path: &str, index: u32) -> RegResult<Option<(String, RegValue)>> {
        let (_, rec) = self.existing(path)?;
        Ok(rec.values.into_iter().nth(index as usize))
    }

    fn subkey_names(&self, path: &str) -> RegResult<Vec<String>> {
        let (canon, _) = self.existing(path)?;
        Ok(self.children(&canon)?.into_iter().map(|(_, n)| n).collect())
    }
}

/// A consistent read-only view of the store (one read transaction).
pub struct ReadView {
    keys: ReadOnlyTable<&'static str, &'static [u8]>,
    children: ReadOnlyTable<&'static str, &'static str>,
}

impl Tables for ReadView {
    fn record(&self, canon: &str) -> RegResult<Option<KeyRecord>> {
        get_record(&self.keys, canon)
    }
    fn children(&self, canon: &str) -> RegResult<Vec<(String, String)>> {
        get_children(&self.children, canon)
    }
}

/// Read operations of views and batches, named as the installer uses them.
macro_rules! read_api {
    () => {
        /// Whether the key exists.
        pub fn key_exists(&self, path: &str) -> RegResult<bool> {
            match Tables::existing(self, path) {
                Ok(_) => Ok(true),
                Err(RegError::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            }
        }

        /// Information about a key (name as created, counts, last write time).
        pub fn key_info(&self, path: &str) -> RegResult<KeyInfo> {
            Tables::key_info(self, path)
        }

        /// A value by name (case-insensitive), `None` if the key has no such value.
        pub fn value(&self, path: &str, name: &str) -> RegResult<Option<RegValue>> {
            Ok(Tables::query_value(self, path, name)?.map(|(_, v)| v))
        }

        /// The values of a key, in creation order, with their names as created.
        pub fn values(&self, path: &str) -> RegResult<Vec<(String, RegValue)>> {
            Ok(Tables::existing(self, path)?.1.values)
        }

        /// The names of a key's subkeys, in case-insensitive order.
        pub fn subkeys(&self, path: &str) -> RegResult<Vec<String>> {
            Tables::subkey_names(self, path)
        }
    };
}

impl ReadView {
    read_api!();
}

// ---------------------------------------------------------------------------------------------
// Writing

/// The writes of one transaction. Nothing is visible to others, or on disk, until the closure
/// given to [`RegistryStore::write`] returns `Ok`; an `Err` (or a crash) discards all of it.
pub struct WriteBatch<'t> {
    keys: Table<'t, &'static str, &'static [u8]>,
    children: Table<'t, &'static str, &'static str>,
}

impl Tables for WriteBatch<'_> {
    fn record(&self, canon: &str) -> RegResult<Option<KeyRecord>> {
        get_record(&self.keys, canon)
    }
    fn children(&self, canon: &str) -> RegResult<Vec<(String, String)>> {
        get_children(&self.children, canon)
    }
}

impl WriteBatch<'_> {
    read_api!();

    fn put(&mut self, canon: &str, rec: &KeyRecord) -> RegResult<()> {
        self.keys
            .insert(canon, rec.encode().as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn touch(&mut self, canon: &str) -> RegResult<()> {
        if let Some(mut rec) = self.record(canon)? {
            rec.last_write = filetime_now();
            self.put(canon, &rec)?;
        }
        Ok(())
    }

    /// Adds a key record (and its parent's child entry) for a key known to be missing.
    fn insert_key(&mut self, canon: &str, name: &str, class: &str) -> RegResult<()> {
        let rec = KeyRecord {
            name: name.to_string(),
            class: class.to_string(),
            last_write: filetime_now(),
            values: Vec::new(),
        };
        self.put(canon, &rec)?;
        if let Some((entry, parent)) = child_entry(canon) {
            self.children.insert(entry.as_str(), name).map_err(db_err)?;
            self.touch(&parent)?;
        }
        Ok(())
    }

    /// Creates a key whose parent exists (the kernel's ZwCreateKey rule); returns whether it was
    /// created.
    pub fn create_subkey(&mut self, path: &str, class: &str) -> RegResult<bool> {
        let canon = canonical_path(path)?;
        if self.record(&canon)?.is_some() {
            return Ok(false);
        }
        let (parent, _) =
            split_parent(&canon).ok_or_else(|| RegError::AccessDenied(path.to_string()))?;
        if parent == r"\REGISTRY" {
            return Err(RegError::AccessDenied(path.to_string()));
        }
        if self.record(parent)?.is_none() {
            return Err(RegError::NotFound(path.to_string()));
        }
        let name = path_components(path)?
            .last()
            .map(|s| s.to_string())
            .unwrap_or_default();
        self.insert_key(&canon, &name, class)?;
        Ok(true)
    }

    /// Creates a key and any missing ancestors; returns whether the key itself was created.
    pub fn create_key(&mut self, path: &str) -> RegResult<bool> {
        let comps = path_components(path)?;
        let mut at = String::new();
        let mut created = false;
        for c in comps {
            at.push('\\');
            at.push_str(c);
            created = self.create_subkey(&at, "")?;
        }
        Ok(created)
    }

    /// Sets a value, creating the key (and its ancestors) if needed. A value of the same name
    /// (case-insensitive) is replaced in place and keeps its name.
    pub fn set_value(&mut self, path: &str, name: &str, value: &RegValue) -> RegResult<()> {
        self.create_key(path)?;
        let (canon, mut rec) = self.existing(path)?;
        match rec.values.iter_mut().find(|(n, _)| names_equal(n, name)) {
            Some((_, v)) => *v = value.clone(),
            None => rec.values.push((name.to_string(), value.clone())),
        }
        rec.last_write = filetime_now();
        self.put(&canon, &rec)
    }

    /// Sets a value of an existing key (`NotFound` if the key is missing).
    pub fn set_existing_value(
        &mut self,
        path: &str,
        name: &str,
        value: &RegValue,
    ) -> RegResult<()> {
        self.existing(path)?;
        self.set_value(path, name, value)
    }

    /// Deletes a value; returns whether it existed.
    pub fn delete_value(&mut self, path: &str, name: &str) -> RegResult<bool> {
        let (canon, mut rec) = self.existing(path)?;
        let before = rec.values.len();
        rec.values.retain(|(n, _)| !names_equal(n, name));
        if rec.values.len() == before {
            return Ok(false);
        }
        rec.last_write = filetime_now();
        self.put(&canon, &rec)?;
        Ok(true)
    }

    /// Deletes a key that has no subkeys (Windows' rule: `CannotDelete` otherwise).
    pub fn delete_key(&mut self, path: &str) -> RegResult<()> {
        let (canon, _) = self.existing(path)?;
        if is_root(&canon) || !self.children(&canon)?.is_empty() {
            return Err(RegError::CannotDelete(path.to_string()));
        }
        self.remove(&canon)
    }

    fn remove(&mut self, canon: &str) -> RegResult<()> {
        self.keys.remove(canon).map_err(db_err)?;
        if let Some((entry, parent)) = child_entry(canon) {
            self.children.remove(entry.as_str()).map_err(db_err)?;
            self.touch(&parent)?;
        }
        Ok(())
    }

    /// Deletes a key with all its subkeys; returns whether it existed. The hive roots, the
    /// skeleton keys and their ancestors cannot be deleted (`CannotDelete`): every store has them,
    /// and opening a store would bring them back.
    pub fn delete_tree(&mut self, path: &str) -> RegResult<bool> {
        let canon = canonical_path(path)?;
        if self.record(&canon)?.is_none() {
            return Ok(false);
        }
        let below = format!("{canon}\\");
        for key in reg::SKELETON {
            let skeleton = canonical_path(key)?;
            if skeleton == canon || skeleton.starts_with(&below) {
                return Err(RegError::CannotDelete(path.to_string()));
            }
        }
        if is_root(&canon) {
            return Err(RegError::CannotDelete(path.to_string()));
        }
        // Depth first, children before their parent.
        let mut order = Vec::new();
        let mut stack = vec![canon];
        while let Some(c) = stack.pop() {
            for (child, _) in self.children(&c)? {
                stack.push(child);
            }
            order.push(c);
        }
        for c in order.iter().rev() {
            self.remove(c)?;
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------
// The store

/// The persistent registry. Cheap to clone: clones share one open database (redb allows one
/// process to have the file open for writing).
#[derive(Clone)]
pub struct RegistryStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for RegistryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RegistryStore {
    /// Opens (creating if needed) the store `registry.redb` in `dir` (created too).
    pub fn open(dir: &Path) -> RegResult<RegistryStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RegError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        RegistryStore::open_file(&dir.join(FILE_NAME))
    }

    /// Opens the store in the user's data directory ([`super::default_dir`]).
    pub fn open_default() -> RegResult<RegistryStore> {
        RegistryStore::open(&super::default_dir())
    }

    /// Opens (creating if needed) a store file. A new store is built under a temporary name and
    /// renamed into place once its skeleton is committed, so a process killed while creating it
    /// leaves no store rather than a half-written file.
    pub fn open_file(path: &Path) -> RegResult<RegistryStore> {
        if !path.exists() {
            let staging = path.with_extension(format!("creating-{}", std::process::id()));
            let created = RegistryStore::open_database(&staging).and_then(|store| {
                drop(store);
                std::fs::rename(&staging, path).map_err(|e| {
                    RegError::Storage(format!("cannot create {}: {e}", path.display()))
                })
            });
            if let Err(e) = created {
                let _ = std::fs::remove_file(&staging);
                return Err(e);
            }
        }
        RegistryStore::open_database(path)
    }

    /// A store in memory only, with the same tables, skeleton and transactions (a scratch store
    /// for tests and fuzzing); its [`path`](Self::path) is empty.
    pub fn in_memory() -> RegResult<RegistryStore> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_err)?;
        RegistryStore::init(db, PathBuf::new())
    }

    /// Opens or creates the database at `path` and makes sure the root keys exist.
    fn open_database(path: &Path) -> RegResult<RegistryStore> {
        let db = Database::create(path)
            .map_err(|e| RegError::Storage(format!("cannot open {}: {e}", path.display())))?;
        RegistryStore::init(db, path.to_path_buf())
    }

    /// Wraps an open database, creating the root keys and the skeleton where missing.
    fn init(db: Database, path: PathBuf) -> RegResult<RegistryStore> {
        let store = RegistryStore {
            db: Arc::new(db),
            path,
        };
        store.write(|b| {
            for root in reg::ROOTS {
                let canon = canonical_path(root)?;
                if b.record(&canon)?.is_none() {
                    let name = root.rsplit('\\').next().unwrap_or(root);
                    b.insert_key(&canon, name, "")?;
                }
            }
            for key in reg::SKELETON {
                b.create_key(key)?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn begin(&self) -> RegResult<WriteTransaction> {
        self.db.begin_write().map_err(db_err)
    }

    /// Runs `f` as one transaction: committed (durably) if it returns `Ok`, discarded if it
    /// returns `Err`.
    pub fn write<R>(&self, f: impl FnOnce(&mut WriteBatch<'_>) -> RegResult<R>) -> RegResult<R> {
        let txn = self.begin()?;
        let result = {
            let mut batch = WriteBatch {
                keys: txn.open_table(KEYS).map_err(db_err)?,
                children: txn.open_table(CHILDREN).map_err(db_err)?,
            };
            f(&mut batch)
        };
        match result {
            Ok(r) => {
                txn.commit().map_err(db_err)?;
                Ok(r)
            }
            Err(e) => {
                txn.abort().map_err(db_err)?;
                Err(e)
            }
        }
    }

    /// Runs `f` on a consistent snapshot.
    pub fn read<R>(&self, f: impl FnOnce(&ReadView) -> RegResult<R>) -> RegResult<R> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let view = ReadView {
            keys: txn.open_table(KEYS).map_err(db_err)?,
            children: txn.open_table(CHILDREN).map_err(db_err)?,
        };
        f(&view)
    }

    /// Whether a key exists.
    pub fn key_exists(&self, path: &str) -> RegResult<bool> {
        self.read(|v| v.key_exists(path))
    }

    /// Information about a key.
    pub fn key_info(&self, path: &str) -> RegResult<KeyInfo> {
        self.read(|v| v.key_info(path))
    }

    /// A value by name, `None` if missing.
    pub fn value(&self, path: &str, name: &str) -> RegResult<Option<RegValue>> {
        self.read(|v| v.value(path, name))
    }

    /// The values of a key in creation order.
    pub fn values(&self, path: &str) -> RegResult<Vec<(String, RegValue)>> {
        self.read(|v| v.values(path))
    }

    /// The subkey names of a key in case-insensitive order.
    pub fn subkeys(&self, path: &str) -> RegResult<Vec<String>> {
        self.read(|v| v.subkeys(path))
    }

    /// The key `path` (if it exists) and everything below it, parents first, read in one
    /// transaction: what a driver host that may read that subtree gets.
    pub fn snapshot(&self, path: &str) -> RegResult<Snapshot> {
        self.read(|v| {
            let mut out = Vec::new();
            if !v.key_exists(path)? {
                return Ok(out);
            }
            let mut todo = vec![path.to_string()];
            while let Some(key) = todo.pop() {
                for sub in v.subkeys(&key)?.into_iter().rev() {
                    todo.push(format!(r"{key}\{sub}"));
                }
                let values = v.values(&key)?;
                out.push((key, values));
            }
            Ok(out)
        })
    }

    /// The kernel registry backend over this store (each driver write is one transaction).
    pub fn backend(&self) -> StoreBackend {
        StoreBackend {
            store: self.clone(),
        }
    }
}

/// Keys (absolute NT paths, parents before children) with their values, as
/// [`RegistryStore::snapshot`] reads them.
pub type Snapshot = Vec<(String, Vec<(String, RegValue)>)>;

/// [`RegistryBackend`] over a [`RegistryStore`], for [`ntoskrnl::registry::set_backend`].
#[derive(Debug, Clone)]
pub struct StoreBackend {
    store: RegistryStore,
}

impl RegistryBackend for StoreBackend {
    fn key_info(&self, path: &str) -> RegResult<KeyInfo> {
        self.store.read(|v| Tables::key_info(v, path))
    }

    fn create_key(&mut self, path: &str, class: &str) -> RegResult<bool> {
        // Opening an existing key must not cost a write transaction.
        if self.store.key_exists(path)? {
            return Ok(false);
        }
        self.store.write(|b| b.create_subkey(path, class))
    }

    fn delete_key(&mut self, path: &str) -> RegResult<()> {
        self.store.write(|b| b.delete_key(path))
    }

    fn enum_key(&self, path: &str, index: u32) -> RegResult<Option<KeyInfo>> {
        self.store.read(|v| Tables::enum_key(v, path, index))
    }

    fn query_value(&self, path: &str, name: &str) -> RegResult<Option<(String, RegValue)>> {
        self.store.read(|v| Tables::query_value(v, path, name))
    }

    fn set_value(&mut self, path: &str, name: &str, value: &RegValue) -> RegResult<()> {
        self.store
            .write(|b| b.set_existing_value(path, name, value))
    }

    fn delete_value(&mut self, path: &str, name: &str) -> RegResult<bool> {
        self.store.write(|b| b.delete_value(path, name))
    }

    fn enum_value(&self, path: &str, index: u32) -> RegResult<Option<(String, RegValue)>> {
        self.store.read(|v| Tables::enum_value(v, path, index))
    }

    fn create_key_path(&mut self, path: &str) -> RegResult<()> {
        if self.store.key_exists(path)? {
            return Ok(());
        }
        self.store.write(|b| b.create_key(path).map(drop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let rec = KeyRecord {
            name: "Ключ".into(),
            class: "c".into(),
            last_write: 0x0123_4567_89AB_CDEF,
            values: vec![
                ("".into(), RegValue::sz("default")),
                ("Bin".into(), RegValue::binary(&[1, 2, 3])),
            ],
        };
        let bytes = rec.encode();
        assert_eq!(KeyRecord::decode(&bytes), Ok(rec));
        for cut in 0..bytes.len() {
            assert!(KeyRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
