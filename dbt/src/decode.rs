//! Decoding guest code into blocks of pre-decoded ops and caching them.
//!
//! A block is decoded once with iced-x86, up to and including the first control transfer other than
//! a direct call or jmp: those the block continues through at their target (a trace), so the call
//! op only pushes the return address. The flags liveness of the block is computed
//! ([`crate::liveness`]) and each instruction becomes an [`Op`] ([`crate::select`]);
//! a flag-writing instruction followed by the block's final jcc becomes one fused op. Blocks are
//! cached by start address (and chained, see [`crate::chain`]).
//!
//! Every page a block was decoded from (including the successor code the liveness look-ahead read)
//! is marked in the guest page table; guest stores to a marked page are reported by
//! [`GuestMemory`], and [`BlockCache::invalidate`] drops the blocks overlapping the written range.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction};

use crate::cpu::Arch;
use crate::fault::FaultKind;
use crate::flags::STATUS;
use crate::liveness::{flag_use, live_after, live_in};
use crate::memory::{GuestMemory, PAGE_SIZE};
use crate::op::{Op, OpList};
use crate::select::{fuse, known_writer, select};

/// Most instructions in one block.
const MAX_BLOCK_INSTRS: usize = 64;
/// Most bytes the decoder looks at for one block.
const MAX_BLOCK_BYTES: usize = 4096;
/// Most direct calls and jumps one block continues through.
const MAX_FOLLOW: usize = 4;
/// Entries of the direct-mapped lookup cache in front of the hash map.
const FAST_SLOTS: usize = 4096;
/// Block index meaning "none" (in chain links and the lookup cache).
pub(crate) const NO_BLOCK: u32 = u32::MAX;

/// Multiplicative hasher for guest addresses.
#[derive(Default)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type AddrMap<V> = HashMap<u64, V, BuildHasherDefault<AddrHasher>>;

/// A decoded block.
pub(crate) struct Block {
    /// Guest address of the first instruction.
    pub(crate) start: u64,
    /// Guest address after the last instruction (the fall-through rip).
    pub(crate) end: u64,
    /// The ops, in order; only the last real op may transfer control.
    pub(crate) ops: OpList,
    /// Guest instructions in the block; 0 for a dropped block (its slot is free).
    pub(crate) insns: u32,
    /// Guest byte ranges the translation depends on: the block itself and the look-ahead ranges.
    deps: Vec<(u64, u64)>,
}

impl Block {
    /// Whether any range the block depends on overlaps `[start, end)`.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.deps.iter().any(|&(s, e)| s < end && start < e)
    }
}

/// Pages (as page numbers) covered by `[start, end)`.
fn pages_of(start: u64, end: u64) -> std::ops::RangeInclusive<u64> {
    start / PAGE_SIZE..=(end.max(start + 1) - 1) / PAGE_SIZE
}

/// Cache of decoded blocks keyed by start address.
pub(crate) struct BlockCache {
    map: AddrMap<u32>,
    /// All block slots (dropped ones have `insns == 0`).
    pub(crate) blocks: Vec<Block>,
    free: Vec<u32>,
    fast: Vec<(u64, u32)>,
    /// Blocks depending on each page (may hold stale indices; checked when used).
    pages: AddrMap<Vec<u32>>,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            map: AddrMap::default(),
            blocks: Vec::new(),
            free: Vec::new(),
            fast: vec![(0, NO_BLOCK); FAST_SLOTS],
            pages: AddrMap::default(),
        }
    }
}

impl BlockCache {
    #[inline(always)]
    fn slot(addr: u64) -> usize {
        ((addr ^ (addr >> 12)) as usize) & (FAST_SLOTS - 1)
    }

    /// Index of the cached block starting at `addr`.
    #[inline(always)]
    pub(crate) fn lookup(&mut self, addr: u64) -> Option<u32> {
        let s = Self::slot(addr);
        let (a, idx) = self.fast[s];
        if a == addr && idx != NO_BLOCK {
            return Some(idx);
        }
        let idx = *self.map.get(&addr)?;
        self.fast[s] = (addr, idx);
        Some(idx)
    }

    /// The end op of block `idx` (see [`crate::chain`]), if there is such a block.
    #[inline(always)]
    pub(crate) fn end_op(&self, idx: u32) -> Option<&Op> {
        self.blocks.get(idx as usize)?.ops.last()
    }

    /// Caches a decoded block; returns its index.
    fn insert(&mut self, block: Block) -> u32 {
        let start = block.start;
        let pages: Vec<u64> = block
            .deps
            .iter()
            .flat_map(|&(s, e)| pages_of(s, e))
            .collect();
        let idx = match self.free.pop() {
            Some(i) => {
                self.blocks[i as usize] = block;
                i
            }
            None => {
                self.blocks.push(block);
                (self.blocks.len() - 1) as u32
            }
        };
        self.map.insert(start, idx);
        self.fast[Self::slot(start)] = (start, idx);
        for page in pages {
            let list = self.pages.entry(page).or_default();
            if list.last() != Some(&idx) {
                list.push(idx);
            }
        }
        idx
    }

    /// Frees block `idx`.
    fn drop_block(&mut self, idx: u32) {
        let b = &mut self.blocks[idx as usize];
        if self.map.get(&b.start) == Some(&idx) {
            self.map.remove(&b.start);
        }
        let s = Self::slot(b.start);
        if self.fast[s] == (b.start, idx) {
            self.fast[s] = (0, NO_BLOCK);
        }
        b.insns = 0;
        b.ops = OpList::new(Vec::new(), 0, 0);
        b.deps = Vec::new();
        self.free.push(idx);
    }

    /// Drops every block depending on `[addr, addr + len)` and clears the code mark of pages left
    /// without blocks. Returns whether any block was dropped.
    pub(crate) fn invalidate(&mut self, mem: &mut GuestMemory, addr: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let end = addr.saturating_add(len);
        let range = pages_of(addr, end);
        let pages: Vec<u64> = if range.end() - range.start() > self.pages.len() as u64 {
            self.pages
                .keys()
                .copied()
                .filter(|p| range.contains(p))
                .collect()
        } else {
            range.filter(|p| self.pages.contains_key(p)).collect()
        };
        let mut dropped = false;
        for page in pages {
            let Some(mut list) = self.pages.remove(&page) else {
                continue;
            };
            let (lo, hi) = (page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
            list.sort_unstable();
            list.dedup();
            list.retain(|&idx| {
                let b = &self.blocks[idx as usize];
                b.insns != 0 && b.overlaps(lo, hi)
            });
            for &idx in &list {
                if self.blocks[idx as usize].overlaps(addr, end) {
                    self.drop_block(idx);
                    dropped = true;
                }
            }
            list.retain(|&idx| self.blocks[idx as usize].insns != 0);
            if list.is_empty() {
                mem.clear_code(lo);
            } else {
                self.pages.insert(page, list);
            }
        }
        dropped
    }

    /// Decodes the block starting at `rip` and caches it; direct calls and jumps into `avoid` (the
    /// host's special addresses) end the block.
    pub(crate) fn translate(
        &mut self,
        mem: &mut GuestMemory,
        arch: Arch,
        rip: u64,
        avoid: &Range<u64>,
    ) -> Result<u32, FaultKind> {
        let Trace {
            instrs,
            inlined,
            mut deps,
        } = decode_block(mem, arch, rip, avoid)?;
        let n = instrs.len();
        let end = instrs[n - 1].next_ip();
        let live = live_after(&instrs, live_out(mem, arch, &instrs[n - 1], &mut deps));
        let mut ops = Vec::with_capacity(n);
        // The kind of the last flag writer so far, if flag readers can rely on it.
        let mut writer = None;
        for k in 0..n {
            let i = &instrs[k];
            if k + 2 == n {
                if let Some(op) = fuse(i, &instrs[k + 1], arch, live[k + 1]) {
                    ops.push(op);
                    break;
                }
            }
            ops.push(select(i, arch, live[k], inlined[k], writer));
            if flag_use(i).write != 0 {
                writer = known_writer(i);
            }
        }
        for &(s, e) in &deps {
            mem.mark_code(s, e - s);
        }
        Ok(self.insert(Block {
            start: rip,
            end,
            ops: OpList::new(ops, rip, end),
            insns: n as u32,
            deps,
        }))
    }
}

/// The instructions of a block.
struct Trace {
    instrs: Vec<Instruction>,
    /// Whether each instruction is a direct call or jmp the block continues through at its target.
    inlined: Vec<bool>,
    /// The guest byte ranges decoded.
    deps: Vec<(u64, u64)>,
}

/// Decodes the instructions of the block at `rip`: up to the first control transfer, an undecodable
/// instruction or the size limits, continuing through up to [`MAX_FOLLOW`] direct calls and jumps
/// (not into `avoid`, not back into code already in the block).
fn decode_block(
    mem: &GuestMemory,
    arch: Arch,
    rip: u64,
    avoid: &Range<u64>,
) -> Result<Trace, FaultKind> {
    let mut t = Trace {
        instrs: Vec::new(),
        inlined: Vec::new(),
        deps: Vec::new(),
    };
    let mut pc = rip;
    loop {
        let bytes = mem.readable_slice(pc, MAX_BLOCK_BYTES);
        if bytes.is_empty() {
            // Only the first address can be unreadable: targets are checked before following.
            return Err(FaultKind::PageFault {
                addr: pc,
                write: false,
            });
        }
        let mut decoder = Decoder::with_ip(arch.bitness(), bytes, pc, DecoderOptions::NONE);
        let (start, mut end) = (pc, pc);
        let mut follow = None;
        while decoder.can_decode() && t.instrs.len() < MAX_BLOCK_INSTRS {
            let pos = decoder.position();
            let instr = decoder.decode();
            if instr.is_invalid() {
                if t.instrs.is_empty() {
                    if decoder.last_error() == DecoderError::NoMoreBytes {
                        return Err(FaultKind::PageFault {
                            addr: rip + bytes.len() as u64,
                            write: false,
                        });
                    }
                    let n = instr.len().clamp(1, 15).min(bytes.len() - pos);
                    return Err(FaultKind::InvalidOpcode {
                        bytes: bytes[pos..pos + n].to_vec(),
                    });
                }
                break;
            }
            end = instr.next_ip();
            t.instrs.push(instr);
            t.inlined.push(false);
            if instr.flow_control() == FlowControl::Next {
                continue;
            }
            let target = instr.near_branch_target();
            let seen = |a: u64| {
                (start..end).contains(&a) || t.deps.iter().any(|&(s, e)| (s..e).contains(&a))
            };
            if (instr.is_call_near() || instr.is_jmp_short_or_near())
                && t.deps.len() < MAX_FOLLOW
                && t.instrs.len() < MAX_BLOCK_INSTRS
                && !avoid.contains(&target)
                && !seen(target)
                && !mem.readable_slice(target, 1).is_empty()
            {
                follow = Some(target);
                t.inlined[t.instrs.len() - 1] = true;
            }
            break;
        }
        if end > start {
            t.deps.push((start, end));
        }
        match follow {
            Some(target) => pc = target,
            None => break,
        }
    }
    if t.instrs.is_empty() {
        return Err(FaultKind::PageFault {
            addr: rip + MAX_BLOCK_BYTES as u64,
            write: false,
        });
    }
    // The last instruction ends the block itself, even if it was to be followed.
    let last = t.inlined.len() - 1;
    t.inlined[last] = false;
    Ok(t)
}

/// Flags live after the block's last instruction `last`: the union of what its direct successors
/// read (all flags after indirect transfers, returns and anything else without a known successor).
fn live_out(mem: &GuestMemory, arch: Arch, last: &Instruction, deps: &mut Vec<(u64, u64)>) -> u64 {
    let direct = last.is_jcc_short_or_near()
        || last.is_jmp_short_or_near()
        || last.is_call_near()
        || last.is_loop()
        || last.is_loopcc()
        || last.is_jcx_short();
    match last.flow_control() {
        FlowControl::Next => live_in(mem, arch, last.next_ip(), deps),
        FlowControl::ConditionalBranch if direct => {
            live_in(mem, arch, last.next_ip(), deps)
                | live_in(mem, arch, last.near_branch_target(), deps)
        }
        FlowControl::UnconditionalBranch | FlowControl::Call if direct => {
            live_in(mem, arch, last.near_branch_target(), deps)
        }
        _ => STATUS,
    }
}
