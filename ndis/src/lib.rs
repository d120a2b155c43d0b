//! ndis.sys: NDIS miniport hosting. The walking skeleton has no NDIS exports yet; every ndis.sys
//! import binds to a named trap until the NDIS issue fills this table.

use ntoskrnl::Module;

/// ndis.sys as drivers import it.
pub static MODULE: Module = Module {
    name: "ndis.sys",
    tables: &[],
};
