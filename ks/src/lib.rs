//! ks.sys: kernel streaming. No exports yet; every ks.sys import binds to a named trap until the
//! kernel-streaming issue fills this table.

use ntoskrnl::Module;

/// ks.sys as drivers import it.
pub static MODULE: Module = Module {
    name: "ks.sys",
    tables: &[],
    data: &[],
};
