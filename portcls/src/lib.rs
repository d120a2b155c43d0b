//! portcls.sys: audio port drivers. No exports yet; every portcls.sys import binds to a named trap
//! until the PortCls issue fills this table.

use ntoskrnl::Module;

/// portcls.sys as drivers import it.
pub static MODULE: Module = Module {
    name: "portcls.sys",
    tables: &[],
    data: &[],
};
