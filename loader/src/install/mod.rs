//! The installer and driver manager behind `ica-load netcard.inf`: an INF's driver package goes
//! into the driver store (with a sha256 manifest), its files to their destinations, its registry
//! keys into the store in one transaction, the package binds to the best-matching device the
//! host offers (Windows ranking over hardware and compatible IDs), and the drivers start.
//!
//! Everything lives under one directory, the [`Root`] (`$XDG_DATA_HOME/ica` by default):
//!
//! ```text
//! <root>/registry.redb                               the registry store
//! <root>/driverstore/<inf>_<arch>_<sha256[..16]>/    the package: INF(s), files, `hashes`
//! <root>/windows/system32/drivers/...                DIRID destinations (%10% = windows)
//! ```
//!
//! * [`devices`]: what the host offers (PCI functions from sysfs with their Windows IDs, and
//!   root-enumerated software devices);
//! * [`package`]: the driver store;
//! * [`installer`]: INF -> [`installer::Prepared`] (all checks, nothing written) -> install;
//! * [`start`]: start the installed stack (or legacy service) in a driver host, then unload;
//! * [`manage`]: `list` and `remove`;
//! * [`diff`]: what a registry transaction changed, for people to read.

pub mod devices;
pub mod diff;
pub mod installer;
pub mod manage;
pub mod package;
pub mod start;

use std::path::{Path, PathBuf};

use crate::inf::{DirId, InfError};
use crate::registry::{RegError, RegistryStore};

pub use installer::{install, prepare, InstallOptions, InstallReport, Prepared};

/// Why an install, a removal or a start failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The INF is bad (`file:line: message`).
    #[error("{0}")]
    Inf(#[from] InfError),
    /// The registry store failed.
    #[error("registry: {0}")]
    Registry(#[from] RegError),
    /// A file could not be read, written or verified.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Anything else, said in one sentence.
    #[error("{0}")]
    Other(String),
}

impl InstallError {
    pub(crate) fn file(path: &Path, message: impl std::fmt::Display) -> InstallError {
        InstallError::File {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

/// The directory everything lives under (`--root DIR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub dir: PathBuf,
}

/// Where the driver store records packages in the registry (as Windows 10 does).
pub const PACKAGES_KEY: &str = r"\Registry\Machine\System\DriverDatabase\DriverPackages";

/// The NT path prefix ImagePath uses for files in the driver store.
pub const DRIVER_STORE_NT: &str = r"\SystemRoot\System32\DriverStore\FileRepository";

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root { dir: dir.into() }
    }

    /// `$XDG_DATA_HOME/ica` or `~/.local/share/ica`.
    pub fn default_root() -> Root {
        Root::new(crate::registry::default_dir())
    }

    pub fn registry_file(&self) -> PathBuf {
        self.dir.join("registry.redb")
    }

    pub fn driver_store(&self) -> PathBuf {
        self.dir.join("driverstore")
    }

    /// `%SystemRoot%`.
    pub fn windows(&self) -> PathBuf {
        self.dir.join("windows")
    }

    /// Opens (creating if needed) the registry store.
    pub fn open_registry(&self) -> Result<RegistryStore, InstallError> {
        Ok(RegistryStore::open(&self.dir)?)
    }

    /// The registry store if it exists (reading never creates one).
    pub fn existing_registry(&self) -> Result<Option<RegistryStore>, InstallError> {
        if self.registry_file().exists() {
            Ok(Some(self.open_registry()?))
        } else {
            Ok(None)
        }
    }

    /// The host directory of a DIRID (`%12%` -> `<root>/windows/system32/drivers`); `package` is
    /// the package directory (`%13%`). None for DIRIDs ICA does not place.
    pub fn dirid_path(&self, dir: DirId, package: &Path) -> Option<PathBuf> {
        if dir == DirId::DRIVER_STORE {
            return Some(package.to_path_buf());
        }
        let rel = dir.under_system_root()?;
        let mut p = self.windows();
        for c in rel.split('\\').filter(|c| !c.is_empty()) {
            p.push(c.to_ascii_lowercase());
        }
        Some(p)
    }

    /// The host file a service's ImagePath names: `\SystemRoot\...` (or `System32\...`) under
    /// [`Root::windows`], the driver store prefix under [`Root::driver_store`], `\??\/abs`
    /// as is. Components are matched case-insensitively, as on Windows.
    pub fn image_path_to_host(&self, image_path: &str) -> Option<PathBuf> {
        let p = image_path.trim();
        if let Some(abs) = p.strip_prefix(r"\??\") {
            return Some(PathBuf::from(abs));
        }
        let rest = strip_prefix_ci(p, r"\SystemRoot\")
            .or_else(|| strip_prefix_ci(p, r"%SystemRoot%\"))
            .or_else(|| strip_prefix_ci(p, r"SystemRoot\"))
            .or_else(|| (!p.starts_with('\\')).then_some(p))?;
        if let Some(inner) = strip_prefix_ci(rest, r"System32\DriverStore\FileRepository\") {
            return Some(find_ci(&self.driver_store(), inner));
        }
        Some(find_ci(&self.windows(), rest))
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &s[prefix.len()..])
}

/// `base` joined with the `\`-separated `rel`, each component matched case-insensitively against
/// what exists (lowercased where nothing exists yet).
pub fn find_ci(base: &Path, rel: &str) -> PathBuf {
    let mut p = base.to_path_buf();
    for comp in rel.split(['\\', '/']).filter(|c| !c.is_empty()) {
        let found = std::fs::read_dir(&p).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name())
                .find(|n| n.to_string_lossy().eq_ignore_ascii_case(comp))
        });
        match found {
            Some(name) => p.push(name),
            None => p.push(comp.to_ascii_lowercase()),
        }
    }
    p
}

/// The short registry form people read: `HKLM\System\...` for `\Registry\Machine\System\...`.
pub fn short_key(nt: &str) -> String {
    match strip_prefix_ci(nt, r"\Registry\Machine") {
        Some(rest) => format!("HKLM{rest}"),
        None => match strip_prefix_ci(nt, r"\Registry\User") {
            Some(rest) => format!("HKU{rest}"),
            None => nt.to_string(),
        },
    }
}
