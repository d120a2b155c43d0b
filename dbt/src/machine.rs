//! The machine: CPU + guest memory + block cache, and the run loop with its exits to the host.
//!
//! The run loop finds the block at rip (through the previous block's chain link, else the cache,
//! else by translating it, then links it), sets rip to the block's fall-through address and calls
//! the first op's handler, which runs the whole block (see [`crate::op`]; the last op may redirect
//! rip) and then, through the chain links, the blocks that follow (see [`crate::chain`]) until a link
//! is missing. When a guest store hits a page holding translated code, the block stops after that op
//! and the overwritten blocks are dropped; if that includes the running block, execution continues
//! with a fresh translation at the next instruction, else the rest of the block runs.

use crate::chain::{self, Chain, FUEL};
use crate::cpu::{Arch, Cpu};
use crate::decode::{BlockCache, NO_BLOCK};
use crate::fault::{ExecResult, FaultKind, GuestFault};
use crate::memory::{GuestMemory, Prot, PAGE_SIZE};
use crate::mmio::{Mmio, NoMmio};
use crate::op::exec_generic;

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
    /// Blocks the run loop looked up by address (through a chain link or the cache, or by
    /// translating them); transitions the blocks make among themselves through chain links are not
    /// counted.
    pub block_lookups: u64,
    /// Lookups served without translating.
    pub block_cache_hits: u64,
}

/// Block counters of one [`Machine::run_limited`] call.
#[derive(Default)]
struct Counts {
    /// Blocks entered from the cache (chained, looked up, or repeated in place).
    hits: u64,
    /// Blocks translated.
    translated: u64,
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
    /// The block cache; taken out while [`run_limited`](Self::run_limited) executes.
    cache: Option<Box<BlockCache>>,
    port_io: Box<dyn PortIo>,
    /// The MMIO backend (see [`crate::mmio`]).
    pub(crate) mmio: Box<dyn Mmio>,
    thunk_base: u64,
    host_return: u64,
    /// Ticks `rdtsc` added to the instruction count it reports.
    pub(crate) tsc: u64,
    /// Position in its block of the op that stopped the block early (see [`crate::op`]).
    pub(crate) stop_pos: u8,
    /// Block chaining state.
    pub(crate) chain: Chain,
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
            cache: Some(Box::default()),
            port_io: Box::new(NoPorts),
            mmio: Box::new(NoMmio::new()),
            thunk_base,
            host_return,
            tsc: 0,
            stop_pos: 0,
            chain: Chain::new(),
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
        let mut cache = self.cache.take().unwrap_or_default();
        let mut counts = Counts::default();
        self.chain.budget = max_instructions;
        self.chain.start = max_instructions;
        let exit = self.execute(&mut cache, &mut counts);
        self.cache = Some(cache);
        self.stats.instructions += max_instructions - self.chain.budget;
        self.chain.start = self.chain.budget;
        self.stats.block_cache_hits += counts.hits;
        self.stats.blocks_translated += counts.translated;
        self.stats.block_lookups += counts.hits + counts.translated;
        exit
    }

    /// The run loop (see the module documentation), within `self.chain.budget`.
    fn execute(&mut self, cache: &mut BlockCache, counts: &mut Counts) -> Option<Exit> {
        if self.mem.code_written {
            self.flush_code_writes(cache);
        }
        let special = self.thunk_base..self.thunk_base + SPECIAL_LEN;
        let mut prev = NO_BLOCK;
        loop {
            let rip = self.cpu.rip;
            // A linked block was translated, so rip is not special; the budget is checked below.
            let idx = match cache.end_op(prev).and_then(|end| chain::follow(end, rip)) {
                Some(link) => {
                    counts.hits += 1;
                    link.idx
                }
                None => {
                    if special.contains(&rip) {
                        if rip == self.host_return {
                            return Some(Exit::HostReturn);
                        }
                        let off = rip - self.thunk_base;
                        if off.is_multiple_of(THUNK_STRIDE) && off < THUNK_COUNT * THUNK_STRIDE {
                            return Some(Exit::Thunk((off / THUNK_STRIDE) as u32));
                        }
                    }
                    if self.chain.budget == 0 {
                        return None;
                    }
                    let idx = match cache.lookup(rip) {
                        Some(i) => {
                            counts.hits += 1;
                            i
                        }
                        None => match cache.translate(&mut self.mem, self.arch, rip, &special) {
                            Ok(i) => {
                                counts.translated += 1;
                                i
                            }
                            Err(kind) => return Some(Exit::Fault(self.fault(kind))),
                        },
                    };
                    if let Some(end) = cache.end_op(prev) {
                        chain::link(end, rip, idx, &cache.blocks[idx as usize]);
                    }
                    idx
                }
            };
            let block = &cache.blocks[idx as usize];
            let insns = block.insns as u64;
            if insns > self.chain.budget {
                if self.chain.budget == 0 {
                    return None;
                }
                prev = idx;
                if let Some(exit) = self.run_slow(cache, idx, 0) {
                    return Some(exit);
                }
                continue;
            }
            self.chain.budget -= insns;
            self.chain.fuel = self.chain.budget.min(FUEL);
            self.chain.budget -= self.chain.fuel;
            self.chain.block = idx;
            self.cpu.rip = block.end;
            let first = block.ops.cursor();
            let result = (first.run)(self, first);
            // The end ops may have gone on to other blocks.
            self.chain.budget += std::mem::take(&mut self.chain.fuel);
            prev = self.chain.block;
            if result.is_err() || self.mem.code_written {
                if let Some(exit) = self.stopped(cache, result) {
                    return Some(exit);
                }
            }
        }
    }

    /// Handles a block stopped early by its op at `self.stop_pos` (see [`crate::op`]): reports the
    /// fault, or drops the code that op overwrote and goes on as [`after_code_write`] says.
    ///
    /// [`after_code_write`]: Self::after_code_write
    #[cold]
    fn stopped(&mut self, cache: &mut BlockCache, result: ExecResult) -> Option<Exit> {
        let idx = self.chain.block;
        let block = &cache.blocks[idx as usize];
        let ops = &block.ops;
        let k = self.stop_pos as usize;
        let before: u64 = ops[..k].iter().map(|o| o.insns as u64).sum();
        // The whole block was taken from the budget on entry; give back what did not run.
        let done = match result {
            Err(_) => before,
            Ok(()) => before + ops[k].insns as u64,
        };
        let unrun = block.insns as u64 - done;
        self.chain.budget += unrun;
        match result {
            Err(e) => {
                self.cpu.rip = ops[k].instr.ip();
                Some(Exit::Fault(self.fault(*e.0)))
            }
            Ok(()) => {
                let next_rip = ops.get(k + 1).filter(|o| o.insns != 0);
                let next_rip = next_rip.map(|o| o.instr.ip());
                self.after_code_write(cache, idx, k, next_rip)
            }
        }
    }

    /// Drops the blocks that guest stores overwrote.
    fn flush_code_writes(&mut self, cache: &mut BlockCache) {
        for (addr, len) in self.mem.take_code_writes() {
            if cache.invalidate(&mut self.mem, addr, len) {
                chain::clear_links(cache);
            }
        }
    }

    /// Continues block `idx` after op `k` stored to a page holding translated code: drops the
    /// overwritten blocks; if that includes block `idx`, execution goes on at `next_rip` (the next
    /// instruction, if op `k` was not the last) with a fresh translation, else the rest of the block
    /// runs.
    fn after_code_write(
        &mut self,
        cache: &mut BlockCache,
        idx: u32,
        k: usize,
        next_rip: Option<u64>,
    ) -> Option<Exit> {
        self.flush_code_writes(cache);
        if cache.blocks[idx as usize].insns == 0 {
            if let Some(rip) = next_rip {
                self.cpu.rip = rip;
            }
            return None;
        }
        self.run_slow(cache, idx, k + 1)
    }

    /// Runs ops `from..` of block `idx` one at a time with their generic handlers, within the budget
    /// (a fused op whose branch would exceed it runs as its first instruction alone), dropping
    /// overwritten code after stores.
    #[cold]
    fn run_slow(&mut self, cache: &mut BlockCache, idx: u32, mut from: usize) -> Option<Exit> {
        loop {
            let block = &cache.blocks[idx as usize];
            let ops = &block.ops;
            // Past the last op, rip is what that op left.
            let op = ops.get(from).filter(|o| o.insns != 0)?;
            if self.chain.budget == 0 {
                self.cpu.rip = op.instr.ip();
                return None;
            }
            self.cpu.rip = block.end;
            let next_rip = ops.get(from + 1).filter(|o| o.insns != 0);
            let next_rip = next_rip.map(|o| o.instr.ip());
            let split = op.insns as u64 > self.chain.budget;
            let result = if split {
                (op.generic)(self, &op.instr)
            } else {
                exec_generic(self, op)
            };
            if let Err(e) = result {
                self.cpu.rip = op.instr.ip();
                return Some(Exit::Fault(self.fault(*e.0)));
            }
            let done = if split { 1 } else { op.insns as u64 };
            if split {
                self.cpu.rip = op.instr.next_ip();
            }
            self.chain.budget -= done;
            if self.mem.code_written {
                self.flush_code_writes(cache);
                if cache.blocks[idx as usize].insns == 0 {
                    if let (false, Some(rip)) = (split, next_rip) {
                        self.cpu.rip = rip;
                    }
                    return None;
                }
            }
            if split {
                return None;
            }
            from += 1;
        }
    }

    /// Snapshot of the CPU at the current rip as a [`GuestFault`].
    pub fn fault(&self, kind: FaultKind) -> GuestFault {
        GuestFault {
            kind: crate::fault::rmw_as_write(kind, &self.mem, self.arch, self.cpu.rip),
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

    /// Guest instructions retired so far, including those of the running `run_limited` call.
    pub(crate) fn retired(&self) -> u64 {
        self.stats.instructions + (self.chain.start - self.chain.budget - self.chain.fuel)
    }

    /// Drops cached blocks overlapping `[addr, addr + len)`. Guest stores to translated code are
    /// detected by themselves; call this after the host patched code (through
    /// [`GuestMemory::write_bytes`] and the other host writes) or unmapped it.
    pub fn invalidate_code(&mut self, addr: u64, len: u64) {
        if let Some(cache) = self.cache.as_mut() {
            if cache.invalidate(&mut self.mem, addr, len) {
                chain::clear_links(cache);
            }
        }
    }
}
