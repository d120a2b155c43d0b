//! Block chaining: going from one block to the next without returning to the run loop.
//!
//! The op that ends every block holds two chain links, one for the block's fall-through edge (rip ==
//! the block's end) and one for its other edge (a branch target or return address). A link names the
//! block that followed last time, with what entering it takes: its first op, fall-through address
//! and instruction count. The run loop creates links when it finds a block by lookup; the end op's
//! handler ([`end`]) follows them, so hot loops and call chains run from block to block in one chain
//! of tail calls. Whenever a block is dropped, all links are cleared ([`clear_links`]), since the
//! first op a link points to may be gone.

use std::cell::Cell;
use std::ptr::NonNull;

use crate::decode::{Block, BlockCache, NO_BLOCK};
use crate::fault::ExecResult;
use crate::machine::Machine;
use crate::op::{Cursor, Op};

/// Most guest instructions the end ops may start blocks for before returning to the run loop. This
/// bounds the stack when tail calls are not optimised into jumps: every op but the end op stands for
/// at least one instruction, so a chain is at most about twice this many calls deep.
pub(crate) const FUEL: u64 = 1024;

/// A link to the block that starts at `addr`.
#[derive(Clone, Copy)]
pub(crate) struct Link {
    /// Start address of the block.
    addr: u64,
    /// The block's first op.
    first: NonNull<Op>,
    /// The block's fall-through address.
    end: u64,
    /// The block's guest instruction count (`u32::MAX`, more than any fuel, for no link).
    insns: u32,
    /// The block's index in the cache.
    pub(crate) idx: u32,
}

impl Link {
    /// No link: its instruction count exceeds any fuel, so it is never followed.
    const NONE: Link = Link {
        addr: 0,
        first: NonNull::dangling(),
        end: 0,
        insns: u32::MAX,
        idx: NO_BLOCK,
    };
}

/// The links of a block's end op: fall-through edge, other edge.
pub(crate) type Links = [Cell<Link>; 2];

/// Links that lead nowhere.
pub(crate) fn no_links() -> Box<Links> {
    Box::new([Cell::new(Link::NONE), Cell::new(Link::NONE)])
}

/// The link of end op `end` for the next rip `rip`: the block that followed last time on that edge,
/// if it starts at `rip`.
#[inline(always)]
pub(crate) fn follow(end: &Op, rip: u64) -> Option<Link> {
    let links = end.links.as_ref()?;
    let link = links[(rip != end.disp) as usize].get();
    (link.addr == rip && link.insns != u32::MAX).then_some(link)
}

/// Links block `to` (at `rip`, index `idx`) after the block ending with `end`.
pub(crate) fn link(end: &Op, rip: u64, idx: u32, to: &Block) {
    if let Some(links) = end.links.as_ref() {
        links[(rip != end.disp) as usize].set(Link {
            addr: rip,
            first: to.ops.first(),
            end: to.end,
            insns: to.insns,
            idx,
        });
    }
}

/// Clears every link (after blocks were dropped).
pub(crate) fn clear_links(cache: &BlockCache) {
    for block in &cache.blocks {
        if let Some(links) = block.ops.last().and_then(|o| o.links.as_ref()) {
            links[0].set(Link::NONE);
            links[1].set(Link::NONE);
        }
    }
}

/// Chaining state, kept in the machine (the block cache is taken out of it while blocks run).
pub(crate) struct Chain {
    /// Guest instructions the current `run_limited` call may still run, apart from `fuel`; a
    /// block's count is taken when it is entered.
    pub(crate) budget: u64,
    /// Guest instructions the end ops may still start blocks for (taken from `budget` by the run
    /// loop, at most [`FUEL`]; zero outside `run_limited`).
    pub(crate) fuel: u64,
    /// `budget` when the current `run_limited` call started (equal to `budget` outside one).
    pub(crate) start: u64,
    /// Index of the running block.
    pub(crate) block: u32,
}

impl Chain {
    /// No budget.
    pub(crate) fn new() -> Chain {
        Chain {
            budget: 0,
            fuel: 0,
            start: 0,
            block: NO_BLOCK,
        }
    }
}

/// Handler of the op that ends every block: enters the block again if it loops to its own start,
/// else the linked successor block if there is one, as long as the fuel lasts; else returns to the
/// run loop.
pub(crate) fn end(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    let rip = m.cpu.rip;
    let c = &mut m.chain;
    if rip == op.target && op.imm <= c.fuel {
        c.fuel -= op.imm;
        m.cpu.rip = op.disp;
        let first = op.rewind();
        return (first.run)(m, first);
    }
    let Some(links) = op.links.as_ref() else {
        return Ok(());
    };
    // No link (`Link::NONE`) has more instructions than any fuel.
    let link = links[(rip != op.disp) as usize].get();
    let insns = link.insns as u64;
    if link.addr != rip || insns > c.fuel {
        return Ok(());
    }
    c.fuel -= insns;
    c.block = link.idx;
    m.cpu.rip = link.end;
    // SAFETY: links only ever point to live blocks (they are made to a live block and all cleared
    // when any block is dropped); blocks are not modified otherwise, and an op list's buffer does
    // not move when the cache's block vector grows. The run loop does not touch the cache while
    // blocks run.
    let first = unsafe { Cursor::from_raw(link.first) };
    (first.run)(m, first)
}
