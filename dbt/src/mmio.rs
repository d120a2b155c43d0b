//! Memory-mapped device registers (MMIO).
//!
//! # Model
//! The machine has one MMIO backend, a [`Mmio`] handler installed with [`Machine::set_mmio`] (like
//! the port I/O hook; the driver host installs its PCI bus, which routes by BAR). Guest pages are
//! mapped as MMIO with [`GuestMemory::map_mmio`](crate::GuestMemory::map_mmio) /
//! [`GuestMemory::alloc_mmio`](crate::GuestMemory::alloc_mmio) (a kernel's
//! `MmMapIoSpace`), each recording only the bus address it stands for, and unmapped with
//! [`GuestMemory::unmap_mmio`](crate::GuestMemory::unmap_mmio). Every guest load or store on such a page calls the handler once,
//! with the bus address, the access size (1, 2, 4 or 8) and, for stores, the value, in program
//! order; what is not decoded is the handler's business (the default reads all ones and ignores
//! writes, like an empty bus).
//!
//! # How an access is recognised, and what it costs
//! An MMIO page is marked in the page table as mapped with no protection bits, so both its
//! fast-path bits (the per-page "slow read" / "slow write" byte the specialised handlers test, the
//! same byte that sends stores to code pages down the self-modifying-code path) are set. The fast
//! paths therefore never touch it: they hand the op to its generic handler before doing anything
//! (both bits are set, so even a read-modify-write op bails out at its load, never after it), and
//! that handler performs each of the instruction's accesses exactly once through
//! [`Machine::load`] / [`Machine::store`]. Those try the ordinary checked access first; only when
//! it fails (the permission check already on that path) do they look the page up in the MMIO
//! table, in a cold, out-of-line function, and call the handler or report the fault. RAM accesses
//! run exactly the instructions they ran before: no test was added to the fast path, and the
//! generic path gained code only after its existing failure branch.
//!
//! Details:
//! * 16-byte (SSE, `cmpxchg16b`) accesses reach the handler as two 8-byte accesses, low half first.
//! * `rep movs`/`rep stos` touching MMIO are not done in bulk: each element is one access (a load
//!   then a store for `movs`), with rsi/rdi/rcx updated after each, as on hardware.
//! * An access that crosses from an MMIO page into another page is a page fault at its address.
//! * Instruction fetch from an MMIO page is a page fault (the decoder reads readable pages only).
//! * The host accessors of [`GuestMemory`](crate::GuestMemory) (`read_u32`, `write_bytes`, ...) fail with a
//!   [`MemFault`] on MMIO pages, since a hidden register read could have side effects; host code
//!   that means to access registers (`READ_REGISTER_ULONG` and friends) uses [`Machine::read_mem`]
//!   and [`Machine::write_mem`], which behave exactly like a guest `mov`.
//!
//! # The translating tier
//! The DESIGN rule "MMIO is classified when a block is translated, never trapped per access" is
//! about the translating tier; the interpreter's per-page bit is its equivalent here. A translated
//! block will emit, for each guest memory access, the same inline one-byte test of the page's
//! fast-path byte, with the host load/store on the fall-through and a branch to an out-of-line stub
//! that calls the slow path above (MMIO, stores to code, faults) when a bit is set. Accesses whose
//! stub sees MMIO are recorded against their instruction, and the block is retranslated with a
//! direct call to the MMIO helper for those instructions: classification happens at translation,
//! device-register code does not keep taking a mispredicted branch, and nothing is ever trapped
//! (no signal handler, no guard pages, no per-access exception).

use crate::flags::size_mask;
use crate::machine::Machine;
use crate::memory::MemFault;

/// A memory-mapped I/O backend: device register accesses by bus (guest-physical) address.
///
/// A machine has one, installed with [`Machine::set_mmio`]. Guest pages mapped with
/// [`GuestMemory::map_mmio`](crate::GuestMemory::map_mmio) or
/// [`GuestMemory::alloc_mmio`](crate::GuestMemory::alloc_mmio) stand for bus addresses: every guest
/// load or store there (any size, read-modify-write instructions as a read then a write, string
/// instructions one element at a time, 16-byte SSE accesses as two 8-byte ones, low half first)
/// calls the backend once per access, in program order. Fetching instructions from such a page is
/// a page fault. RAM accesses do not pay for this: MMIO pages are recognised by the per-page
/// slow-path bits the fast paths test anyway.
pub trait Mmio {
    /// Reads `size` bytes (1, 2, 4 or 8) at bus address `addr`; only the low `size` bytes of the
    /// result are used.
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64;
    /// Writes the low `size` bytes (1, 2, 4 or 8) of `value` to bus address `addr`.
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64);
}

/// MMIO backend used when none is set: reads return all ones, writes are ignored (an empty bus).
pub(crate) struct NoMmio {
    warned: bool,
}

impl NoMmio {
    pub(crate) fn new() -> NoMmio {
        NoMmio { warned: false }
    }

    fn warn(&mut self, addr: u64) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                "MMIO access at bus address {addr:#x} with no MMIO backend installed: reads as all ones, writes ignored"
            );
        }
    }
}

impl Mmio for NoMmio {
    fn mmio_read(&mut self, addr: u64, _size: u8) -> u64 {
        self.warn(addr);
        u64::MAX
    }

    fn mmio_write(&mut self, addr: u64, _size: u8, _value: u64) {
        self.warn(addr);
    }
}

impl Machine {
    /// Installs the MMIO backend that guest accesses to MMIO pages reach (see [`Mmio`]); until
    /// then MMIO reads as all ones and writes are ignored.
    pub fn set_mmio(&mut self, mmio: Box<dyn Mmio>) {
        self.mmio = mmio;
    }

    /// Reads `size` bytes (1, 2, 4 or 8, zero-extended) at guest address `addr` exactly as a guest
    /// load does: from RAM (needs a readable page), or through the MMIO backend on an MMIO page
    /// (for host-side `READ_REGISTER_*` style services).
    pub fn read_mem(&mut self, addr: u64, size: u8) -> Result<u64, MemFault> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(MemFault { addr, write: false });
        }
        self.load(addr, size as u32)
    }

    /// Writes the low `size` bytes (1, 2, 4 or 8) of `value` at guest address `addr` exactly as a
    /// guest store does: to RAM (needs a writable page; a store to translated code is noticed), or
    /// through the MMIO backend on an MMIO page.
    pub fn write_mem(&mut self, addr: u64, size: u8, value: u64) -> Result<(), MemFault> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(MemFault { addr, write: true });
        }
        self.store(addr, size as u32, value)
    }

    /// Guest load of 1, 2, 4 or 8 bytes (zero-extended) from RAM or MMIO.
    #[inline(always)]
    pub(crate) fn load(&mut self, addr: u64, size: u32) -> Result<u64, MemFault> {
        match self.mem.load(addr, size) {
            Ok(v) => Ok(v),
            Err(f) => self.mmio_load(addr, size, f),
        }
    }

    /// Guest store of 1, 2, 4 or 8 bytes to RAM or MMIO.
    #[inline(always)]
    pub(crate) fn store(&mut self, addr: u64, size: u32, v: u64) -> Result<(), MemFault> {
        match self.mem.store(addr, size, v) {
            Ok(()) => Ok(()),
            Err(f) => self.mmio_store(addr, size, v, f),
        }
    }

    /// Guest 128-bit load from RAM or MMIO (two 8-byte MMIO reads, low half first).
    pub(crate) fn load_u128(&mut self, addr: u64) -> Result<u128, MemFault> {
        match self.mem.load_u128(addr) {
            Ok(v) => Ok(v),
            Err(f) => {
                // Both halves must be MMIO before the first read goes out.
                if self.mem.mmio_access(addr, 16).is_none() {
                    return Err(f);
                }
                let lo = self.mmio_load(addr, 8, f)?;
                let hi = self.mmio_load(addr.wrapping_add(8), 8, f)?;
                Ok((hi as u128) << 64 | lo as u128)
            }
        }
    }

    /// Guest 128-bit store to RAM or MMIO (two 8-byte MMIO writes, low half first).
    pub(crate) fn store_u128(&mut self, addr: u64, v: u128) -> Result<(), MemFault> {
        match self.mem.store_u128(addr, v) {
            Ok(()) => Ok(()),
            Err(f) => {
                // Both halves must be MMIO before the first write goes out.
                if self.mem.mmio_access(addr, 16).is_none() {
                    return Err(f);
                }
                self.mmio_store(addr, 8, v as u64, f)?;
                self.mmio_store(addr.wrapping_add(8), 8, (v >> 64) as u64, f)
            }
        }
    }

    /// The part of [`load`](Self::load) after the RAM access failed with `fault`: an MMIO read, or
    /// the fault.
    #[cold]
    #[inline(never)]
    fn mmio_load(&mut self, addr: u64, size: u32, fault: MemFault) -> Result<u64, MemFault> {
        let bus = self.mem.mmio_access(addr, size as u64).ok_or(fault)?;
        Ok(self.mmio.mmio_read(bus, size as u8) & size_mask(size))
    }

    /// The part of [`store`](Self::store) after the RAM access failed with `fault`: an MMIO write,
    /// or the fault.
    #[cold]
    #[inline(never)]
    fn mmio_store(
        &mut self,
        addr: u64,
        size: u32,
        v: u64,
        fault: MemFault,
    ) -> Result<(), MemFault> {
        let bus = self.mem.mmio_access(addr, size as u64).ok_or(fault)?;
        self.mmio.mmio_write(bus, size as u8, v & size_mask(size));
        Ok(())
    }
}
