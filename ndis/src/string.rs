//! NDIS_STRING helpers (NDIS_STRING is a UNICODE_STRING on NT).

use ntoskrnl::export::Export;
use ntoskrnl::{export_table, rtl};

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisInitUnicodeString => rtl::init_unicode_string(destination: u64, source: u64);
    stdcall NdisInitAnsiString => rtl::init_ansi_string(destination: u64, source: u64);
];
