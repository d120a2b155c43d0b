//! NDIS_STRING helpers (NDIS_STRING is a UNICODE_STRING on NT): the Rtl string routines under
//! their NDIS names, and NdisInitializeString, whose buffer NdisFreeString (a macro for
//! NdisFreeMemory) frees.

use ntoskrnl::crt::{self, CharSize};
use ntoskrnl::export::Export;
use ntoskrnl::status::NtStatus;
use ntoskrnl::{ex, export_table, rtl, KResult, Kernel};

/// Tag of NdisInitializeString buffers.
const STRING_TAG: &[u8; 4] = b"NDst";

/// NdisInitializeString(Destination, Source): a Unicode copy of the NUL-terminated ANSI string
/// `Source` in a buffer allocated for the caller (as by NdisAllocateMemory, freed with
/// NdisFreeString); Length excludes and MaximumLength includes the terminator.
pub fn initialize_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<()> {
    let units: Vec<u16> = crt::read_str(k, source, CharSize::Narrow)?
        .into_iter()
        .map(|u| rtl::ansi_to_unicode(u as u8))
        .collect();
    let size = (units.len() + 1) * 2;
    let Ok(max) = u16::try_from(size) else {
        return rtl::write_unicode_string_struct(k, dest, 0, 0, 0);
    };
    let owner = k.caller_image();
    let buffer = ex::allocate(k, size as u64, u32::from_le_bytes(*STRING_TAG), owner)?;
    crt::write_str(k, buffer, CharSize::Wide, &units)?;
    rtl::write_unicode_string_struct(k, dest, buffer, max - 2, max)
}

/// NdisAnsiStringToUnicodeString(DestinationString, SourceString): into the caller's buffer
/// (RtlAnsiStringToUnicodeString without allocation).
pub fn ansi_string_to_unicode_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<NtStatus> {
    rtl::ansi_string_to_unicode_string(k, dest, source, false)
}

/// NdisUnicodeStringToAnsiString(DestinationString, SourceString): into the caller's buffer
/// (RtlUnicodeStringToAnsiString without allocation).
pub fn unicode_string_to_ansi_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<NtStatus> {
    rtl::unicode_string_to_ansi_string(k, dest, source, false)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisInitUnicodeString => rtl::init_unicode_string(destination: u64, source: u64);
    stdcall NdisInitAnsiString => rtl::init_ansi_string(destination: u64, source: u64);
    stdcall NdisInitializeString => initialize_string(destination: u64, source: u64);
    stdcall NdisAnsiStringToUnicodeString => ansi_string_to_unicode_string(destination_string: u64, source_string: u64);
    stdcall NdisUnicodeStringToAnsiString => unicode_string_to_ansi_string(destination_string: u64, source_string: u64);
];
