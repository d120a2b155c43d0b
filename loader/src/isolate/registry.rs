//! The registry of isolated drivers. The manager owns the store (one process may have it open);
//! a driver host gets a snapshot of the keys its drivers may read at every start
//! ([`HostRegistry::snapshot`]) and forwards every write they make ([`ForwardedRegistry`]): the
//! manager applies it to the store, one transaction per write, before the driver goes on, so a
//! write survives the driver host's death and the next driver host reads it.

use std::os::unix::net::UnixStream;

use ntoskrnl::registry::{
    canonical_path, KeyInfo, MemoryRegistry, RegError, RegResult, RegValue, RegistryBackend,
    CURRENT_CONTROL_SET,
};

use super::proto::{self, RegOutcome, RegWrite, Reply, Request};
use crate::registry::store::Snapshot;
use crate::registry::RegistryStore;

/// The manager's side: the store, the subtrees a driver host reads and writes (its service keys,
/// its device's `Enum` key, its driver key) and the writes it applied.
#[derive(Debug, Clone)]
pub struct HostRegistry {
    store: RegistryStore,
    roots: Vec<String>,
    writes: u64,
}

impl HostRegistry {
    /// Drivers of this stack read the subtrees `roots` of `store` (missing ones are skipped) and
    /// write there and under `Control\DeviceClasses` (device interfaces); anything else they
    /// try to write is refused.
    pub fn new(store: RegistryStore, roots: Vec<String>) -> HostRegistry {
        HostRegistry {
            store,
            roots,
            writes: 0,
        }
    }

    /// The keys a driver host may read, now.
    pub fn snapshot(&self) -> RegResult<Snapshot> {
        let mut out = Snapshot::new();
        for root in &self.roots {
            out.extend(self.store.snapshot(root)?);
        }
        Ok(out)
    }

    /// Registry writes applied for driver hosts so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Whether a driver host may write the key `path`.
    fn writable(&self, path: &str) -> RegResult<bool> {
        let canon = canonical_path(path)?;
        let classes = format!(r"{CURRENT_CONTROL_SET}\Control\DeviceClasses");
        for root in self
            .roots
            .iter()
            .map(String::as_str)
            .chain([classes.as_str()])
        {
            let root = canonical_path(root)?;
            if canon == root || canon.starts_with(&format!("{root}\\")) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Applies a write a driver host forwarded (one transaction), if it may make it.
    pub fn apply(&mut self, w: &RegWrite) -> RegOutcome {
        let path = match w {
            RegWrite::CreateKey { path, .. }
            | RegWrite::DeleteKey(path)
            | RegWrite::SetValue { path, .. }
            | RegWrite::DeleteValue { path, .. } => path,
        };
        if !self.writable(path)? {
            tracing::warn!(target: "ica::isolate", "refused a driver's registry write outside its keys: {w:?}");
            return Err(RegError::AccessDenied(path.clone()));
        }
        let mut b = self.store.backend();
        let outcome = match w {
            RegWrite::CreateKey { path, class } => b.create_key(path, class),
            RegWrite::DeleteKey(path) => b.delete_key(path).map(|()| false),
            RegWrite::SetValue { path, name, value } => {
                b.set_value(path, name, value).map(|()| false)
            }
            RegWrite::DeleteValue { path, name } => b.delete_value(path, name),
        };
        if outcome.is_ok() {
            self.writes += 1;
        }
        outcome
    }
}

/// The driver host's side: reads are served from the snapshot it was started with; a write goes
/// to the manager first (during the request that makes it, as a [`Reply::RegistryWrite`]), and
/// only once the manager applied it to the store is it applied here too.
pub struct ForwardedRegistry {
    local: MemoryRegistry,
    chan: UnixStream,
}

impl ForwardedRegistry {
    /// The snapshot `keys`, forwarding writes over `chan` (the driver host's channel).
    pub fn new(keys: &Snapshot, chan: UnixStream) -> RegResult<ForwardedRegistry> {
        let mut local = MemoryRegistry::new();
        for (key, values) in keys {
            local.create_key_path(key)?;
            for (name, v) in values {
                local.set_value(key, name, v)?;
            }
        }
        Ok(ForwardedRegistry { local, chan })
    }

    fn forward(&mut self, w: RegWrite) -> RegOutcome {
        let lost = |e: std::io::Error| RegError::Storage(format!("the manager is gone: {e}"));
        proto::send_reply(&mut self.chan, &Reply::RegistryWrite(w)).map_err(lost)?;
        match proto::recv_request(&mut self.chan).map_err(lost)? {
            Some(Request::RegistryDone(outcome)) => outcome,
            Some(other) => Err(RegError::Storage(format!(
                "the manager answered a registry write with {other:?}"
            ))),
            None => Err(RegError::Storage("the manager is gone".into())),
        }
    }

    /// Makes `path` exist here (the store has it: its ancestors may be outside the snapshot).
    fn ensure_local(&mut self, path: &str, class: &str) -> RegResult<()> {
        if self.local.key_info(path).is_ok() {
            return Ok(());
        }
        if let Some((parent, _)) = path.trim_end_matches('\\').rsplit_once('\\') {
            self.local.create_key_path(parent)?;
        }
        self.local.create_key(path, class).map(drop)
    }
}

impl RegistryBackend for ForwardedRegistry {
    fn key_info(&self, path: &str) -> RegResult<KeyInfo> {
        self.local.key_info(path)
    }

    fn create_key(&mut self, path: &str, class: &str) -> RegResult<bool> {
        let created = self.forward(RegWrite::CreateKey {
            path: path.into(),
            class: class.into(),
        })?;
        self.ensure_local(path, class)?;
        Ok(created)
    }

    fn delete_key(&mut self, path: &str) -> RegResult<()> {
        self.forward(RegWrite::DeleteKey(path.into()))?;
        // Gone from the store; here it may have had keys below it the snapshot left out.
        let _ = self.local.delete_key(path);
        Ok(())
    }

    fn enum_key(&self, path: &str, index: u32) -> RegResult<Option<KeyInfo>> {
        self.local.enum_key(path, index)
    }

    fn query_value(&self, path: &str, name: &str) -> RegResult<Option<(String, RegValue)>> {
        self.local.query_value(path, name)
    }

    fn set_value(&mut self, path: &str, name: &str, value: &RegValue) -> RegResult<()> {
        self.forward(RegWrite::SetValue {
            path: path.into(),
            name: name.into(),
            value: value.clone(),
        })?;
        self.ensure_local(path, "")?;
        self.local.set_value(path, name, value)
    }

    fn delete_value(&mut self, path: &str, name: &str) -> RegResult<bool> {
        let existed = self.forward(RegWrite::DeleteValue {
            path: path.into(),
            name: name.into(),
        })?;
        if self.local.key_info(path).is_ok() {
            self.local.delete_value(path, name)?;
        }
        Ok(existed)
    }

    fn enum_value(&self, path: &str, index: u32) -> RegResult<Option<(String, RegValue)>> {
        self.local.enum_value(path, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntoskrnl::registry::service_path;

    #[test]
    fn writes_outside_the_stacks_keys_are_refused() {
        let store = RegistryStore::in_memory().unwrap();
        let mine = service_path("Mine");
        let other = service_path("Other");
        store
            .write(|b| {
                b.set_value(&mine, "Start", &RegValue::dword(3))?;
                b.set_value(&other, "Start", &RegValue::dword(3))
            })
            .unwrap();
        let mut reg = HostRegistry::new(store.clone(), vec![mine.clone()]);
        assert_eq!(reg.snapshot().unwrap().len(), 1);
        let set = |path: &str| RegWrite::SetValue {
            path: path.into(),
            name: "X".into(),
            value: RegValue::dword(1),
        };
        assert_eq!(reg.apply(&set(&mine.to_uppercase())), Ok(false));
        assert_eq!(
            reg.apply(&RegWrite::CreateKey {
                path: format!(r"{mine}\Parameters"),
                class: String::new(),
            }),
            Ok(true)
        );
        assert!(matches!(
            reg.apply(&set(&other)),
            Err(RegError::AccessDenied(_))
        ));
        // A sibling whose name starts with the root's is not below it.
        assert!(matches!(
            reg.apply(&set(&format!("{mine}2"))),
            Err(RegError::AccessDenied(_))
        ));
        assert!(matches!(
            reg.apply(&RegWrite::DeleteKey(other.clone())),
            Err(RegError::AccessDenied(_))
        ));
        let interfaces = format!(r"{CURRENT_CONTROL_SET}\Control\DeviceClasses\{{g}}");
        assert_eq!(
            reg.apply(&RegWrite::CreateKey {
                path: interfaces,
                class: String::new(),
            }),
            Ok(true)
        );
        assert_eq!(reg.writes(), 3);
        assert_eq!(store.value(&mine, "X").unwrap(), Some(RegValue::dword(1)));
        assert!(store.value(&other, "X").unwrap().is_none());
        assert_eq!(
            reg.snapshot().unwrap().len(),
            2,
            "the new key is read next time"
        );
    }
}
