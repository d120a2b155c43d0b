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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{block, kernel, ARCHES};
    use ntoskrnl::rtl::CountedString;
    use ntoskrnl::status::{STATUS_BUFFER_OVERFLOW, STATUS_SUCCESS};

    #[test]
    fn initialize_string_allocates_and_conversions_use_the_callers_buffers() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let text = block(&mut k, 16);
            k.m.mem.write_bytes(text, b"Wlan0\0").unwrap();
            let us = block(&mut k, 16);
            initialize_string(&mut k, us, text).unwrap();
            let header = rtl::read_counted(&k, us, CharSize::Wide).unwrap();
            assert_eq!((header.length, header.maximum_length), (10, 12), "{arch:?}");
            assert_eq!(rtl::read_unicode_string(&k, us).unwrap(), "Wlan0");
            // Unicode -> ANSI into a caller buffer, too small then big enough.
            let ansi = block(&mut k, 16);
            let buffer = block(&mut k, 16);
            let small = CountedString {
                length: 0,
                maximum_length: 4,
                buffer,
            };
            rtl::write_counted(&mut k, ansi, CharSize::Narrow, small).unwrap();
            assert_eq!(
                unicode_string_to_ansi_string(&mut k, ansi, us).unwrap(),
                STATUS_BUFFER_OVERFLOW
            );
            let big = CountedString {
                length: 0,
                maximum_length: 16,
                buffer,
            };
            rtl::write_counted(&mut k, ansi, CharSize::Narrow, big).unwrap();
            assert_eq!(
                unicode_string_to_ansi_string(&mut k, ansi, us).unwrap(),
                STATUS_SUCCESS
            );
            assert_eq!(rtl::read_ansi_string(&k, ansi).unwrap(), "Wlan0");
            // ... and back into another caller buffer.
            let back = block(&mut k, 16);
            let wide = block(&mut k, 32);
            rtl::write_unicode_string_struct(&mut k, back, wide, 0, 32).unwrap();
            assert_eq!(
                ansi_string_to_unicode_string(&mut k, back, ansi).unwrap(),
                STATUS_SUCCESS
            );
            assert_eq!(rtl::read_unicode_string(&k, back).unwrap(), "Wlan0");
            // NdisFreeString is NdisFreeMemory of the buffer.
            crate::memory::free_memory(&mut k, header.buffer, 12, 0).unwrap();
        }
    }
}
