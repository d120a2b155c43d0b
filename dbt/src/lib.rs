//! Dynamic binary translator for x86-32 and x64 guest code running inside a Linux process.
//!
//! * [`GuestMemory`]: a sandboxed guest address space (one host reservation, per-page permissions).
//! * [`Cpu`]: guest registers with lazily evaluated flags.
//! * [`Machine`]: CPU + memory + a cache of pre-decoded basic blocks and the interpreter that runs them.
//!   Execution stops with an [`Exit`]: a thunk (a call into the host), a return to the host, or a
//!   [`GuestFault`] carrying registers and a guest backtrace.
//! * [`CallConv`] and the calling-convention helpers on [`Machine`] move arguments and return values
//!   across the host/guest boundary.
//!
//! The interpreter, module by module: `decode` decodes blocks (traces through direct calls and
//! jumps) and caches them; `liveness` finds which status flags each instruction's successors read;
//! `select` turns each instruction into an `op` (specialised handlers in `fast_alu`, `fast_data`,
//! `fast_control`, generic ones in `exec_*` chosen by `dispatch`), fusing flag writers with the
//! branch after them; handlers tail-call the next op, and the op ending a block follows `chain`
//! links to the next block; `machine` has the run loop, `flags` the lazy flags, `memory` the
//! sandboxed guest memory with its code-page tracking for self-modifying code, `mmio` the routing of
//! guest accesses to memory-mapped device registers (see [`Mmio`]).

#![warn(missing_docs)]

mod callconv;
mod chain;
mod cpu;
mod decode;
mod dispatch;
mod exec_alu;
mod exec_bits;
mod exec_control;
mod exec_data;
mod exec_muldiv;
mod exec_shift;
mod exec_sse;
mod exec_stack;
mod exec_string;
mod exec_system;
mod fast_alu;
mod fast_control;
mod fast_data;
mod fault;
mod flags;
mod liveness;
mod machine;
mod memory;
mod mmio;
mod op;
mod operand;
mod select;

pub use callconv::CallConv;
pub use cpu::{Arch, Cpu, Reg};
pub use dispatch::is_supported;
pub use fault::{FaultKind, GuestFault};
pub use machine::{Exit, Machine, PortIo, Stats};
pub use memory::{DmaWindow, GuestMemory, MemFault, Prot, PAGE_SIZE, PHYS_BASE};
pub use mmio::Mmio;

/// Re-export of the decoder crate, so users of [`is_supported`] name the same `Instruction` type.
pub use iced_x86;
