//! The machine: CPU + guest memory + block cache, and the run loop with its exits to the host.

use crate::cpu::{Arch, Cpu};
use crate::decode::BlockCache;
use crate::fault::{FaultKind, GuestFault};
use crate::memory::{GuestMemory, Prot, PAGE_SIZE};

/// Port I/O hook for `in`/`out` instructions.
pub trait PortIo {
    /// Reads `size` bytes (1, 2 or 4) from `port`.
    fn port_read(&mut self, port: u16, size: u8) -> u32;
    /// Writes the low `size` bytes (1, 2 or 4) of `value` to `port`.
    fn port_write(&mut self, port: u16, size: u8, value: u32);
}

/// Port I/O used when none is set: reads return all ones, writes are ignored.
struct NoPorts;

impl PortIo for NoPorts {
    fn port_read(&mut self, _port: u16, size: u8) -> u32 {
        match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        }
    }

    fn port_write(&mut self, _port: u16, _size: u8, _value: u32) {}
}

/// Why [`Machine::run`] returned.
// The fault variant is large, but an exit happens once per host call and the public API wants the
// fault by value.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Exit {
    /// The guest reached thunk `index` (see [`Machine::thunk_address`]); rsp points to the return address.
    Thunk(u32),
    /// The guest returned to [`Machine::host_return_address`].
    HostReturn,
    /// The guest faulted.
    Fault(GuestFault),
}

/// Execution counters.
#[derive(Default, Clone, Debug)]
pub struct Stats {
    /// Guest instructions retired.
    pub instructions: u64,
    /// Blocks decoded.
    pub blocks_translated: u64,
    /// Block lookups by address.
    pub block_lookups: u64,
    /// Lookups served by the block cache.
    pub block_cache_hits: u64,
}

/// Number of thunk slots.
const THUNK_COUNT: u64 = 65536;
/// Bytes per thunk slot.
const THUNK_STRIDE: u64 = 4;
/// Distance of the thunk region below the top of the window.
const SPECIAL_FROM_TOP: u64 = 0x10_0000;
/// Size of the thunk region plus the host-return page (checked with one comparison per block).
const SPECIAL_LEN: u64 = THUNK_COUNT * THUNK_STRIDE + PAGE_SIZE;

/// A guest CPU with its sandboxed address space.
pub struct Machine {
    /// CPU registers.
    pub cpu: Cpu,
    /// Guest memory.
    pub mem: GuestMemory,
    /// Execution counters.
    pub stats: Stats,
    arch: Arch,
    cache: BlockCache,
    port_io: Box<dyn PortIo>,
    thunk_base: u64,
    host_return: u64,
    pub(crate) tsc: u64,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("arch", &self.arch)
            .field("cpu", &self.cpu)
            .field("mem", &self.mem)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Machine {
    /// Creates a machine with an empty 1 GiB guest window holding only the thunk region and the
    /// host-return page near its top. The windows lie in kernel address space and include the
    /// architectural address of the page drivers read the clocks from (KUSER_SHARED_DATA: X86
    /// 0xFFDF_0000 in the window at 0xC000_0000, X64 0xFFFF_F780_0000_0000 at the window's base).
    pub fn new(arch: Arch) -> Machine {
        let base = match arch {
            Arch::X86 => 0xC000_0000,
            Arch::X64 => 0xFFFF_F780_0000_0000,
        };
        let size = 1u64 << 30;
        let mut mem = GuestMemory::new(base, size);
        let thunk_base = base + size - SPECIAL_FROM_TOP;
        let host_return = thunk_base + THUNK_COUNT * THUNK_STRIDE;
        let special = [
            (thunk_base, THUNK_COUNT * THUNK_STRIDE),
            (host_return, PAGE_SIZE),
        ];
        for (addr, len) in special {
            // The regions lie inside the window by construction, so these cannot fail.
            let mapped = mem
                .map(addr, len, Prot::READ | Prot::EXEC)
                .and_then(|_| mem.fill(addr, 0xcc, len));
            debug_assert!(mapped.is_ok());
        }
        let mut cpu = Cpu::new();
        cpu.rip = host_return;
        Machine {
            cpu,
            mem,
            stats: Stats::default(),
            arch,
            cache: BlockCache::new(),
            port_io: Box::new(NoPorts),
            thunk_base,
            host_return,
            tsc: 0,
        }
    }

    /// Guest architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Installs the port I/O hook.
    pub fn set_port_io(&mut self, io: Box<dyn PortIo>) {
        self.port_io = io;
    }

    /// Reads `size` bytes (1, 2 or 4) from an I/O port through the port I/O hook, exactly as an `in`
    /// instruction does (for host-side READ_PORT_* style services).
    pub fn port_read(&mut self, port: u16, size: u8) -> u32 {
        self.port_io.port_read(port, size)
    }

    /// Writes `size` bytes (1, 2 or 4) of `value` to an I/O port through the port I/O hook, exactly as
    /// an `out` instruction does.
    pub fn port_write(&mut self, port: u16, size: u8, value: u32) {
        self.port_io.port_write(port, size, value)
    }

    /// Guest address of thunk `index` (only the low 16 bits of `index` are used); executing it exits
    /// with [`Exit::Thunk`].
    pub fn thunk_address(&self, index: u32) -> u64 {
        self.thunk_base + (index as u64 % THUNK_COUNT) * THUNK_STRIDE
    }

    /// Guest address whose execution exits with [`Exit::HostReturn`].
    pub fn host_return_address(&self) -> u64 {
        self.host_return
    }

    /// Allocates a read/write stack of `size` bytes and points rsp at its top (minus a small pad).
    /// Returns the lowest address of the stack region.
    pub fn setup_stack(&mut self, size: u64) -> Result<u64, crate::MemFault> {
        let base = self.mem.alloc(size, Prot::READ | Prot::WRITE)?;
        let top = base + size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        self.cpu.regs[crate::Reg::Rsp as usize] = top - 0x40;
        Ok(base)
    }

    /// Runs from `cpu.rip` until an exit.
    pub fn run(&mut self) -> Exit {
        loop {
            if let Some(exit) = self.run_limited(u64::MAX) {
                return exit;
            }
        }
    }

    /// Runs at most `max_instructions` instructions; `None` if the budget ran out first.
    pub fn run_limited(&mut self, max_instructions: u64) -> Option<Exit> {
        let mut budget = max_instructions;
        loop {
            let rip = self.cpu.rip;
            if rip.wrapping_sub(self.thunk_base) < SPECIAL_LEN {
                if rip == self.host_return {
                    return Some(Exit::HostReturn);
                }
                let off = rip - self.thunk_base;
                if off.is_multiple_of(THUNK_STRIDE) && off < THUNK_COUNT * THUNK_STRIDE {
                    return Some(Exit::Thunk((off / THUNK_STRIDE) as u32));
                }
            }
            if budget == 0 {
                return None;
            }
            self.stats.block_lookups += 1;
            let idx = match self.cache.lookup(rip) {
                Some(i) => {
                    self.stats.block_cache_hits += 1;
                    i
                }
                None => match self.cache.translate(&self.mem, self.arch, rip) {
                    Ok(i) => {
                        self.stats.blocks_translated += 1;
                        i
                    }
                    Err(kind) => return Some(Exit::Fault(self.fault(kind))),
                },
            };
            let instrs = self.cache.take(idx);
            let n = (instrs.len() as u64).min(budget) as usize;
            let mut done = 0u64;
            let mut fault = None;
            for d in &instrs[..n] {
                self.cpu.rip = d.instr.next_ip();
                if let Err(e) = (d.handler)(self, &d.instr) {
                    self.cpu.rip = d.instr.ip();
                    fault = Some(e);
                    break;
                }
                done += 1;
            }
            self.cache.restore(idx, instrs);
            self.stats.instructions += done;
            self.tsc += done;
            budget -= done;
            if let Some(e) = fault {
                return Some(Exit::Fault(self.fault(*e.0)));
            }
        }
    }

    /// Snapshot of the CPU at the current rip as a [`GuestFault`].
    pub fn fault(&self, kind: FaultKind) -> GuestFault {
        GuestFault {
            kind,
            rip: self.cpu.rip,
            arch: self.arch,
            regs: self.cpu.regs,
            flags: self.cpu.flags(),
            backtrace: self.backtrace(),
        }
    }

    /// Guest call chain, innermost first: the current rip, then the return addresses of active calls.
    pub fn backtrace(&self) -> Vec<u64> {
        let mut out = vec![self.cpu.rip];
        out.extend(self.cpu.shadow.iter().rev().map(|f| f.ret));
        out
    }

    /// Drops cached blocks overlapping `[addr, addr + len)` (after code was patched).
    pub fn invalidate_code(&mut self, addr: u64, len: u64) {
        self.cache.invalidate(addr, len);
    }
}
