//! The ntoskrnl.exe module: every subsystem's export table.

use crate::{
    crt, dbg, ex, interlocked, io, ke, lookaside, mm, ob, pnp, ps, registry, rtl, timer, wmi,
    workitem, Module,
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
        pnp::EXPORTS,
        wmi::EXPORTS,
    ],
    data: ke::DATA,
};
