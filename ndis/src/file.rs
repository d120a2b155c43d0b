//! NDIS file access (NdisOpenFile / NdisMapFile / NdisUnmapFile / NdisCloseFile): what drivers
//! use to read firmware shipped in their package. As on Windows, the name is resolved relative
//! to `\SystemRoot\system32\drivers\` (where an INF's `CopyFiles` to DIRID 12 puts it; a name
//! with a subdirectory reaches below it), the whole file is read into pool at open, and map /
//! unmap hand out and take back its address.
//!
//! The driver host opens no file itself: the host gives the kernel the files its drivers may open
//! ([`provide_file`], e.g. the installed package's files, read by the driver manager up front).
//! Anything else is NDIS_STATUS_FILE_NOT_FOUND, and an empty file is
//! NDIS_STATUS_ERROR_READING_FILE, as NDIS answers.

use std::collections::BTreeMap;

use ntoskrnl::export::{Export, Quad};
use ntoskrnl::{ex, export_table, rtl, KResult, Kernel};

use crate::{
    put_status, NdisState, NdisStatus, NDIS_STATUS_FAILURE, NDIS_STATUS_RESOURCES,
    NDIS_STATUS_SUCCESS,
};

/// NDIS_STATUS_FILE_NOT_FOUND.
pub const NDIS_STATUS_FILE_NOT_FOUND: NdisStatus = 0xC001_001B;
/// NDIS_STATUS_ERROR_READING_FILE.
pub const NDIS_STATUS_ERROR_READING_FILE: NdisStatus = 0xC001_001C;
/// NDIS_STATUS_ALREADY_MAPPED.
pub const NDIS_STATUS_ALREADY_MAPPED: NdisStatus = 0xC001_001D;

/// The directory NdisOpenFile resolves names in.
pub const FILE_DIRECTORY: &str = r"\SystemRoot\system32\drivers\";

/// Pool tags of a file's contents and of its handle.
const CONTENTS_TAG: &[u8; 4] = b"NDfi";
const HANDLE_TAG: &[u8; 4] = b"NDfh";

/// An open file (NdisOpenFile): its contents in pool and whether they are mapped.
#[derive(Debug, Clone)]
pub struct OpenFile {
    /// The NT path opened.
    pub path: String,
    /// The pool block holding the contents.
    pub contents: u64,
    /// The contents' length.
    pub length: u32,
    /// Mapped by NdisMapFile and not unmapped since.
    pub mapped: bool,
}

/// The files drivers may open and the open ones.
#[derive(Debug, Default)]
pub struct Files {
    /// Contents by NT path (lowercase, `\SystemRoot\...`).
    available: BTreeMap<String, Vec<u8>>,
    /// Open files by handle.
    pub open: BTreeMap<u64, OpenFile>,
}

/// Lets the drivers of `k` open the file at `nt_path` (`\SystemRoot\system32\drivers\fw.bin`;
/// case-insensitive) with contents `bytes`.
pub fn provide_file(k: &mut Kernel, nt_path: &str, bytes: Vec<u8>) {
    k.extension::<NdisState>()
        .files
        .available
        .insert(nt_path.to_lowercase(), bytes);
}

/// NdisOpenFile(Status, FileHandle, FileLength, FileName, HighestAcceptableAddress).
pub fn open_file(
    k: &mut Kernel,
    status: u64,
    handle_out: u64,
    length_out: u64,
    name: u64,
    _highest_acceptable: Quad,
) -> KResult<()> {
    let path = format!("{FILE_DIRECTORY}{}", rtl::read_unicode_string(k, name)?);
    let bytes = k
        .extension::<NdisState>()
        .files
        .available
        .get(&path.to_lowercase())
        .cloned();
    let Some(bytes) = bytes else {
        tracing::warn!(target: "ica::ndis", "NdisOpenFile({path}): no such file (NDIS_STATUS_FILE_NOT_FOUND)");
        return put_status(k, status, NDIS_STATUS_FILE_NOT_FOUND);
    };
    let Ok(length) = u32::try_from(bytes.len()) else {
        return put_status(k, status, NDIS_STATUS_RESOURCES);
    };
    if length == 0 {
        tracing::warn!(target: "ica::ndis", "NdisOpenFile({path}): empty file (NDIS_STATUS_ERROR_READING_FILE)");
        return put_status(k, status, NDIS_STATUS_ERROR_READING_FILE);
    }
    let owner = k.caller_image();
    let contents = ex::allocate(
        k,
        u64::from(length),
        u32::from_le_bytes(*CONTENTS_TAG),
        owner.clone(),
    )?;
    k.m.mem.write_bytes(contents, &bytes)?;
    let handle = ex::allocate(k, 16, u32::from_le_bytes(*HANDLE_TAG), owner)?;
    tracing::debug!(target: "ica::ndis", "NdisOpenFile({path}): {length} bytes, handle {handle:#x}");
    k.extension::<NdisState>().files.open.insert(
        handle,
        OpenFile {
            path,
            contents,
            length,
            mapped: false,
        },
    );
    k.write_ptr(handle_out, handle)?;
    k.m.mem.write_u32(length_out, length)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// The open file behind `handle`; a handle that is not one is reported and ignored.
fn open_mut<'a>(k: &'a mut Kernel, handle: u64, what: &str) -> Option<&'a mut OpenFile> {
    let f = k.extension::<NdisState>().files.open.get_mut(&handle);
    if f.is_none() {
        tracing::warn!(target: "ica::ndis", "{what}({handle:#x}): not a handle from NdisOpenFile (closed?)");
    }
    f
}

/// NdisMapFile(Status, MappedBuffer, FileHandle): the contents' address;
/// NDIS_STATUS_ALREADY_MAPPED while mapped, NDIS_STATUS_FAILURE for a bad handle.
pub fn map_file(k: &mut Kernel, status: u64, buffer_out: u64, handle: u64) -> KResult<()> {
    let Some(f) = open_mut(k, handle, "NdisMapFile") else {
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    if f.mapped {
        return put_status(k, status, NDIS_STATUS_ALREADY_MAPPED);
    }
    f.mapped = true;
    let contents = f.contents;
    k.write_ptr(buffer_out, contents)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisUnmapFile(FileHandle).
pub fn unmap_file(k: &mut Kernel, handle: u64) -> KResult<()> {
    if let Some(f) = open_mut(k, handle, "NdisUnmapFile") {
        f.mapped = false;
    }
    Ok(())
}

/// NdisCloseFile(FileHandle): frees the contents and the handle.
pub fn close_file(k: &mut Kernel, handle: u64) -> KResult<()> {
    if open_mut(k, handle, "NdisCloseFile").is_none() {
        return Ok(());
    }
    if let Some(f) = k.extension::<NdisState>().files.open.remove(&handle) {
        ex::free(k, f.contents, None)?;
        ex::free(k, handle, None)?;
    }
    Ok(())
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisOpenFile => open_file(status: u64, file_handle: u64, file_length: u64, file_name: u64, highest_acceptable_address: Quad);
    stdcall NdisMapFile => map_file(status: u64, mapped_buffer: u64, file_handle: u64);
    stdcall NdisUnmapFile => unmap_file(file_handle: u64);
    stdcall NdisCloseFile => close_file(file_handle: u64);
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{block, kernel, ARCHES};

    fn name(k: &mut Kernel, text: &str) -> u64 {
        rtl::alloc_unicode_string(k, text, 0x7473_6554).unwrap()
    }

    /// NdisOpenFile of `file`: (status, handle, length).
    fn open(k: &mut Kernel, file: &str) -> (NdisStatus, u64, u32) {
        let out = block(k, 24);
        let n = name(k, file);
        open_file(k, out, out + 8, out + 16, n, Quad(u64::MAX)).unwrap();
        let status = k.m.mem.read_u32(out).unwrap();
        (
            status,
            k.read_ptr(out + 8).unwrap(),
            k.m.mem.read_u32(out + 16).unwrap(),
        )
    }

    #[test]
    fn files_open_by_name_under_system32_drivers_map_once_and_close_freeing_their_pool() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            provide_file(
                &mut k,
                r"\SystemRoot\System32\Drivers\FW\Card.bin",
                vec![7, 8, 9],
            );
            provide_file(
                &mut k,
                r"\SystemRoot\system32\drivers\empty.bin",
                Vec::new(),
            );
            let (status, handle, length) = open(&mut k, r"fw\CARD.BIN");
            assert_eq!((status, length), (NDIS_STATUS_SUCCESS, 3), "{arch:?}");
            // The contents and the handle are the caller's pool (here: the host's).
            assert!(k.pool.bytes_owned_by("host") > 0);
            let out = block(&mut k, 16);
            map_file(&mut k, out, out + 8, handle).unwrap();
            assert_eq!(k.m.mem.read_u32(out).unwrap(), NDIS_STATUS_SUCCESS);
            let va = k.read_ptr(out + 8).unwrap();
            assert_eq!(k.m.mem.read_vec(va, 3).unwrap(), [7, 8, 9]);
            map_file(&mut k, out, out + 8, handle).unwrap();
            assert_eq!(k.m.mem.read_u32(out).unwrap(), NDIS_STATUS_ALREADY_MAPPED);
            unmap_file(&mut k, handle).unwrap();
            map_file(&mut k, out, out + 8, handle).unwrap();
            assert_eq!(k.m.mem.read_u32(out).unwrap(), NDIS_STATUS_SUCCESS);
            unmap_file(&mut k, handle).unwrap();
            close_file(&mut k, handle).unwrap();
            // A second close and a map of the closed handle are ignored / refused.
            close_file(&mut k, handle).unwrap();
            map_file(&mut k, out, out + 8, handle).unwrap();
            assert_eq!(k.m.mem.read_u32(out).unwrap(), NDIS_STATUS_FAILURE);
            assert_eq!(k.pool.bytes_owned_by("host"), 0, "{arch:?}");
            // Not there: the name is relative to system32\drivers, never a full path.
            assert_eq!(open(&mut k, "card.bin").0, NDIS_STATUS_FILE_NOT_FOUND);
            assert_eq!(
                open(&mut k, r"\SystemRoot\system32\drivers\fw\card.bin").0,
                NDIS_STATUS_FILE_NOT_FOUND
            );
            assert_eq!(open(&mut k, "empty.bin").0, NDIS_STATUS_ERROR_READING_FILE);
        }
    }
}
