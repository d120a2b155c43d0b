//! The driver store: one directory per driver package,
//! `<root>/driverstore/<inf name>_<arch>_<first 16 hex digits of the INF's sha256>/`, holding the
//! INF (and the INFs it includes) and every file it copies, at their paths relative to the INF,
//! with a `hashes` manifest in `sha256sum` format (`<hex>  <path>`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::InstallError;

/// Name of the manifest in a package directory.
pub const MANIFEST: &str = "hashes";

/// The sha256 of bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, InstallError> {
    let bytes =
        fs::read(path).map_err(|e| InstallError::file(path, format!("cannot read: {e}")))?;
    Ok(sha256_hex(&bytes))
}

/// The package directory name: `function.inf_amd64_0123456789abcdef`.
pub fn package_name(inf_file_name: &str, arch: &str, inf_sha256: &str) -> String {
    format!(
        "{}_{}_{}",
        inf_file_name.to_ascii_lowercase(),
        arch,
        &inf_sha256[..16.min(inf_sha256.len())]
    )
}

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// Path inside the package, `/`-separated.
    pub rel: String,
    /// Where it comes from.
    pub source: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// Reads the manifest of a package directory: (sha256, path) pairs.
pub fn read_manifest(dir: &Path) -> Result<Vec<(String, String)>, InstallError> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path)
        .map_err(|e| InstallError::file(&path, format!("cannot read: {e}")))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .collect())
}

/// Checks every file of a package against its manifest; the first mismatch is the error.
pub fn verify(dir: &Path) -> Result<usize, InstallError> {
    let entries = read_manifest(dir)?;
    for (hash, rel) in &entries {
        let file = dir.join(rel);
        let actual = sha256_file(&file)?;
        if &actual != hash {
            return Err(InstallError::file(
                &file,
                format!("sha256 {actual} does not match the manifest ({hash})"),
            ));
        }
    }
    Ok(entries.len())
}

/// What [`store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The package was created.
    Created,
    /// It was there already with the same content (hashes verified).
    AlreadyPresent,
}

/// Puts a package into the store: written into a temporary directory beside it, each file
/// verified after the copy, then renamed into place (so a package directory is complete or
/// absent). An existing package directory is verified against `files` instead.
pub fn store(dir: &Path, files: &[PackageFile]) -> Result<Stored, InstallError> {
    if dir.exists() {
        let manifest = read_manifest(dir)?;
        verify(dir)?;
        for f in files {
            if !manifest.iter().any(|(h, p)| p == &f.rel && h == &f.sha256) {
                return Err(InstallError::file(
                    dir,
                    format!(
                        "package exists but its `{}` differs; remove the package first",
                        f.rel
                    ),
                ));
            }
        }
        return Ok(Stored::AlreadyPresent);
    }
    let parent = dir
        .parent()
        .ok_or_else(|| InstallError::file(dir, "has no parent directory"))?;
    fs::create_dir_all(parent)
        .map_err(|e| InstallError::file(parent, format!("cannot create: {e}")))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let result = (|| {
        let _ = fs::remove_dir_all(&tmp);
        let mut manifest = String::new();
        for f in files {
            let to = tmp.join(&f.rel);
            if let Some(p) = to.parent() {
                fs::create_dir_all(p)
                    .map_err(|e| InstallError::file(p, format!("cannot create: {e}")))?;
            }
            fs::copy(&f.source, &to).map_err(|e| {
                InstallError::file(&f.source, format!("cannot copy to the driver store: {e}"))
            })?;
            let got = sha256_file(&to)?;
            if got != f.sha256 {
                return Err(InstallError::file(
                    &f.source,
                    format!(
                        "changed while being copied (sha256 {got}, expected {})",
                        f.sha256
                    ),
                ));
            }
            manifest.push_str(&format!("{}  {}\n", f.sha256, f.rel));
        }
        let mpath = tmp.join(MANIFEST);
        let mut out = fs::File::create(&mpath)
            .map_err(|e| InstallError::file(&mpath, format!("cannot create: {e}")))?;
        out.write_all(manifest.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| InstallError::file(&mpath, format!("cannot write: {e}")))?;
        fs::rename(&tmp, dir).map_err(|e| InstallError::file(dir, format!("cannot create: {e}")))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|()| Stored::Created)
}

/// Copies `from` to `to` through a temporary file in the same directory and a rename, then checks
/// the copy's sha256.
pub fn copy_verified(from: &Path, to: &Path, sha256: &str) -> Result<(), InstallError> {
    let dir = to
        .parent()
        .ok_or_else(|| InstallError::file(to, "has no parent directory"))?;
    fs::create_dir_all(dir).map_err(|e| InstallError::file(dir, format!("cannot create: {e}")))?;
    let tmp = dir.join(format!(
        ".{}.ica-tmp-{}",
        to.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    fs::copy(from, &tmp).map_err(|e| InstallError::file(to, format!("cannot write: {e}")))?;
    let got = sha256_file(&tmp)?;
    if got != sha256 {
        let _ = fs::remove_file(&tmp);
        return Err(InstallError::file(
            to,
            format!("copy has sha256 {got}, expected {sha256}"),
        ));
    }
    fs::rename(&tmp, to).map_err(|e| InstallError::file(to, format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_value() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            package_name("NetCard.INF", "amd64", "ba7816bf8f01cfea414140de5dae2223"),
            "netcard.inf_amd64_ba7816bf8f01cfea"
        );
    }
}
