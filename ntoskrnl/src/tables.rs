//! The ntoskrnl.exe module: every subsystem's export table.

use crate::{
    crt, dbg, ex, interlocked, io, ke, lookaside, mm, ob, ps, registry, rtl, timer, workitem,
    Module,
};

/// ntoskrnl.exe as drivers import it.
pub static MODULE: Module = Module {
    name: "ntoskrnl.exe",
    tables: &[
        ex::EXPORTS,
        lookaside::EXPORTS,
        ke::EXPORTS,
        timer::EXPORTS,
        workitem::EXPORTS,
        io::EXPORTS,
        mm::EXPORTS,
        ob::EXPORTS,
        ps::EXPORTS,
        rtl::EXPORTS,
        crt::EXPORTS,
        dbg::EXPORTS,
        interlocked::EXPORTS,
        registry::EXPORTS,
    ],
    data: ke::DATA,
};
