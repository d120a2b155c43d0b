//! The registry: a persistent, crash-safe, transactional store of keys and typed values with
//! Windows semantics (case-insensitive, case-preserving names), the keys Windows writes when it
//! installs a driver, and REGEDIT5 `.reg` import and export.
//!
//! * [`store`]: [`RegistryStore`] on redb. [`RegistryStore::write`] runs a closure as one
//!   transaction ([`WriteBatch`]): after a crash (even SIGKILL mid-commit) the store holds the old
//!   or the new state, never a mix. [`RegistryStore::backend`] is the kernel's view of the store
//!   (install it with [`crate::DriverHost::with_registry`]).
//! * [`windows`]: the installer's vocabulary: `Services\<name>`, `Control\Class\{guid}\NNNN`
//!   driver keys, `Enum\<bus>\<id>\<instance>` with `Device Parameters`, INF AddReg values.
//! * [`reg_file`]: `.reg` files (UTF-16LE with BOM on export; UTF-16, UTF-8 or ANSI and
//!   `REGEDIT4` accepted on import; one transaction per imported file).
//!
//! Paths are NT names (`\Registry\Machine\System\CurrentControlSet\Services\x`); the kernel's
//! [`ntoskrnl::registry`] defines the value type ([`RegValue`]) and the path rules both share.
//! The store lives in `$XDG_DATA_HOME/ica/registry.redb` (`~/.local/share/ica/` without
//! XDG_DATA_HOME) unless opened elsewhere with [`RegistryStore::open`] (`--root DIR`).

pub mod reg_file;
pub mod store;
pub mod windows;

use std::path::PathBuf;

pub use ntoskrnl::registry::{reg_type, KeyInfo, RegError, RegResult, RegValue};
pub use reg_file::{ImportSummary, RegFileError};
pub use store::{ReadView, RegistryStore, StoreBackend, WriteBatch};

/// The directory of the default store: `$XDG_DATA_HOME/ica`, else `$HOME/.local/share/ica`
/// (else `./.ica` when neither is set).
pub fn default_dir() -> PathBuf {
    let nonempty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    if let Some(data) = nonempty("XDG_DATA_HOME") {
        return PathBuf::from(data).join("ica");
    }
    match nonempty("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/ica"),
        None => PathBuf::from(".ica"),
    }
}
