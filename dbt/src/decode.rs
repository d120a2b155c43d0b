//! Decoding guest code into basic blocks and caching them.
//!
//! A block is decoded once with iced-x86 (up to the first control transfer), each instruction is paired
//! with its handler (chosen by [`crate::dispatch::handler_for`]) and the block is cached by start address.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction};

use crate::cpu::Arch;
use crate::dispatch::{handler_for, unsupported};
use crate::fault::{ExecResult, FaultKind};
use crate::machine::Machine;
use crate::memory::GuestMemory;

/// Executes one decoded instruction.
pub(crate) type Handler = fn(&mut Machine, &Instruction) -> ExecResult;

/// An instruction with its handler.
#[derive(Clone, Copy)]
pub(crate) struct Decoded {
    pub(crate) instr: Instruction,
    pub(crate) handler: Handler,
}

/// A decoded basic block.
struct Block {
    start: u64,
    end: u64,
    instrs: Vec<Decoded>,
}

/// Most instructions in one block.
const MAX_BLOCK_INSTRS: usize = 64;
/// Most bytes the decoder looks at for one block.
const MAX_BLOCK_BYTES: usize = 4096;
/// Entries of the direct-mapped lookup cache in front of the hash map.
const FAST_SLOTS: usize = 4096;

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

/// Cache of decoded blocks keyed by start address.
pub(crate) struct BlockCache {
    map: HashMap<u64, usize, BuildHasherDefault<AddrHasher>>,
    blocks: Vec<Block>,
    free: Vec<usize>,
    fast: Vec<(u64, usize)>,
}

impl BlockCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        BlockCache {
            map: HashMap::default(),
            blocks: Vec::new(),
            free: Vec::new(),
            fast: vec![(0, usize::MAX); FAST_SLOTS],
        }
    }

    #[inline(always)]
    fn slot(addr: u64) -> usize {
        ((addr ^ (addr >> 12)) as usize) & (FAST_SLOTS - 1)
    }

    /// Index of the cached block starting at `addr`.
    #[inline(always)]
    pub(crate) fn lookup(&mut self, addr: u64) -> Option<usize> {
        let s = Self::slot(addr);
        let (a, idx) = self.fast[s];
        if a == addr && idx != usize::MAX {
            return Some(idx);
        }
        let idx = *self.map.get(&addr)?;
        self.fast[s] = (addr, idx);
        Some(idx)
    }

    /// Caches a decoded block; returns its index.
    fn insert(&mut self, block: Block) -> usize {
        let start = block.start;
        let idx = match self.free.pop() {
            Some(i) => {
                self.blocks[i] = block;
                i
            }
            None => {
                self.blocks.push(block);
                self.blocks.len() - 1
            }
        };
        self.map.insert(start, idx);
        self.fast[Self::slot(start)] = (start, idx);
        idx
    }

    /// Moves the instructions of block `idx` out for execution (put back with [`restore`](Self::restore)).
    #[inline(always)]
    pub(crate) fn take(&mut self, idx: usize) -> Vec<Decoded> {
        std::mem::take(&mut self.blocks[idx].instrs)
    }

    /// Puts the instructions of block `idx` back after execution.
    #[inline(always)]
    pub(crate) fn restore(&mut self, idx: usize, instrs: Vec<Decoded>) {
        self.blocks[idx].instrs = instrs;
    }

    /// Drops every block overlapping `[addr, addr + len)`.
    pub(crate) fn invalidate(&mut self, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let mut dropped = false;
        for (i, b) in self.blocks.iter_mut().enumerate() {
            if b.end > b.start && b.start < end && addr < b.end {
                self.map.remove(&b.start);
                b.start = 0;
                b.end = 0;
                b.instrs = Vec::new();
                self.free.push(i);
                dropped = true;
            }
        }
        if dropped {
            self.fast.fill((0, usize::MAX));
        }
    }

    /// Decodes the block starting at `rip` and caches it.
    pub(crate) fn translate(
        &mut self,
        mem: &GuestMemory,
        arch: Arch,
        rip: u64,
    ) -> Result<usize, FaultKind> {
        let bytes = mem.readable_slice(rip, MAX_BLOCK_BYTES);
        if bytes.is_empty() {
            return Err(FaultKind::PageFault {
                addr: rip,
                write: false,
            });
        }
        let mut decoder = Decoder::with_ip(arch.bitness(), bytes, rip, DecoderOptions::NONE);
        let mut instrs = Vec::new();
        let mut end = rip;
        while decoder.can_decode() && instrs.len() < MAX_BLOCK_INSTRS {
            let pos = decoder.position();
            let instr = decoder.decode();
            if instr.is_invalid() {
                if instrs.is_empty() {
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
            let handler = handler_for(&instr).unwrap_or(unsupported);
            end = instr.next_ip();
            instrs.push(Decoded { instr, handler });
            if instr.flow_control() != FlowControl::Next {
                break;
            }
        }
        if instrs.is_empty() {
            return Err(FaultKind::PageFault {
                addr: rip + bytes.len() as u64,
                write: false,
            });
        }
        Ok(self.insert(Block {
            start: rip,
            end,
            instrs,
        }))
    }
}
