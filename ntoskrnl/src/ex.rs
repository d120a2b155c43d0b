//! Executive: the pool allocator (ExAllocatePool*, ExFreePool*) with per-tag accounting.

use std::collections::{BTreeMap, HashMap};

use dbt::Prot;

use crate::export::{Export, Quad};
use crate::{export_table, KResult, Kernel, KernelError};

const ARENA_SIZE: u64 = 1 << 20;
const PAGE: u64 = 0x1000;
/// Pool blocks are 16-byte aligned on both architectures (Windows: 8 on x86, 16 on x64).
const ALIGN: u64 = 16;

/// One live pool block.
#[derive(Debug, Clone)]
pub struct PoolBlock {
    /// Requested size in bytes.
    pub size: u64,
    /// Four-character pool tag.
    pub tag: u32,
    /// Who allocated it (driver image name).
    pub owner: String,
    /// Bytes reserved for it (rounded up).
    reserved: u64,
    /// Allocated as whole pages of its own.
    large: bool,
}

/// Totals for one tag.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TagUsage {
    /// Live blocks.
    pub blocks: u64,
    /// Live bytes.
    pub bytes: u64,
    /// Allocations ever made.
    pub allocations: u64,
}

/// The pool: arenas of guest pages carved first-fit, large blocks as page runs of their own.
#[derive(Debug, Default)]
pub struct Pool {
    blocks: BTreeMap<u64, PoolBlock>,
    free: BTreeMap<u64, u64>,
    tags: HashMap<u32, TagUsage>,
}

/// Renders a pool tag as its four characters ('tclI' is stored little-endian: "Ilct").
pub fn tag_text(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

impl Pool {
    /// Live blocks, by address.
    pub fn blocks(&self) -> impl Iterator<Item = (u64, &PoolBlock)> {
        self.blocks.iter().map(|(a, b)| (*a, b))
    }

    /// Usage per tag.
    pub fn tag_usage(&self, tag: u32) -> TagUsage {
        self.tags.get(&tag).copied().unwrap_or_default()
    }

    /// Live bytes allocated on behalf of `owner` (a driver image name).
    pub fn bytes_owned_by(&self, owner: &str) -> u64 {
        self.blocks
            .values()
            .filter(|b| b.owner == owner)
            .map(|b| b.size)
            .sum()
    }

    /// Live bytes over all tags.
    pub fn live_bytes(&self) -> u64 {
        self.blocks.values().map(|b| b.size).sum()
    }
}

/// Allocates `size` bytes of pool for `owner`, zero-filled.
pub fn allocate(k: &mut Kernel, size: u64, tag: u32, owner: String) -> KResult<u64> {
    let size_nonzero = size.max(1);
    let (addr, reserved, large) = if size_nonzero >= PAGE {
        let reserved = size_nonzero.div_ceil(PAGE) * PAGE;
        (
            k.m.mem.alloc(reserved, Prot::READ | Prot::WRITE)?,
            reserved,
            true,
        )
    } else {
        let reserved = size_nonzero.div_ceil(ALIGN) * ALIGN;
        (carve(k, reserved)?, reserved, false)
    };
    k.m.mem.fill(addr, 0, reserved)?;
    let usage = k.pool.tags.entry(tag).or_default();
    usage.blocks += 1;
    usage.bytes += size;
    usage.allocations += 1;
    k.pool.blocks.insert(
        addr,
        PoolBlock {
            size,
            tag,
            owner,
            reserved,
            large,
        },
    );
    Ok(addr)
}

fn carve(k: &mut Kernel, reserved: u64) -> KResult<u64> {
    let found = k
        .pool
        .free
        .iter()
        .find(|(_, &len)| len >= reserved)
        .map(|(&a, &l)| (a, l));
    let (addr, len) = match found {
        Some(span) => span,
        None => {
            let arena = k.m.mem.alloc(ARENA_SIZE, Prot::READ | Prot::WRITE)?;
            (arena, ARENA_SIZE)
        }
    };
    k.pool.free.remove(&addr);
    if len > reserved {
        k.pool.free.insert(addr + reserved, len - reserved);
    }
    Ok(addr)
}

/// Frees a pool block; `expected_tag` (if any) must match the block's tag, as ExFreePoolWithTag
/// demands. Freeing something that is not a live block is a BAD_POOL_CALLER bug check; freeing one
/// that holds an armed timer, a queued DPC or a queued work item is bug check 0xC7 / 0xE4
/// ([`crate::ke::check_free`]).
pub fn free(k: &mut Kernel, addr: u64, expected_tag: Option<u32>) -> KResult<()> {
    let Some(block) = k.pool.blocks.get(&addr) else {
        return Err(KernelError::bug_check(
            0xC2,
            format!("ExFreePool of {addr:#x}, which is not an allocated pool block (double free or bad pointer)"),
        ));
    };
    if let Some(tag) = expected_tag {
        if tag != block.tag && tag != 0 {
            return Err(KernelError::bug_check(
                0xC2,
                format!(
                    "ExFreePoolWithTag of {addr:#x} with tag '{}', but it was allocated with tag '{}'",
                    tag_text(tag),
                    tag_text(block.tag)
                ),
            ));
        }
    }
    let size = block.size;
    crate::ke::check_free(k, addr, size)?;
    let block = k.pool.blocks.remove(&addr).expect("checked above");
    if let Some(usage) = k.pool.tags.get_mut(&block.tag) {
        usage.blocks -= 1;
        usage.bytes -= block.size;
    }
    if block.large {
        k.m.mem.free(addr)?;
    } else {
        release_span(&mut k.pool.free, addr, block.reserved);
    }
    Ok(())
}

/// Returns a span to the free map, merging it with free neighbours.
fn release_span(free: &mut BTreeMap<u64, u64>, mut addr: u64, mut len: u64) {
    if let Some((&prev, &plen)) = free.range(..addr).next_back() {
        if prev + plen == addr {
            free.remove(&prev);
            addr = prev;
            len += plen;
        }
    }
    if let Some(&next_len) = free.get(&(addr + len)) {
        free.remove(&(addr + len));
        len += next_len;
    }
    free.insert(addr, len);
}

/// ExAllocatePoolWithTag(PoolType, NumberOfBytes, Tag).
pub fn allocate_pool_with_tag(
    k: &mut Kernel,
    _pool_type: u32,
    size: u64,
    tag: u32,
) -> KResult<u64> {
    let owner = k.caller_image();
    allocate(k, size, tag, owner)
}

/// ExAllocatePool(PoolType, NumberOfBytes): tag 'None' as Windows uses.
pub fn allocate_pool(k: &mut Kernel, pool_type: u32, size: u64) -> KResult<u64> {
    allocate_pool_with_tag(k, pool_type, size, u32::from_le_bytes(*b"None"))
}

/// ExAllocatePool2(Flags, NumberOfBytes, Tag): zeroed memory (as POOL_FLAG_UNINITIALIZED is not honoured, always).
pub fn allocate_pool2(k: &mut Kernel, _flags: Quad, size: u64, tag: u32) -> KResult<u64> {
    allocate_pool_with_tag(k, 0, size, tag)
}

/// ExFreePoolWithTag(P, Tag).
pub fn free_pool_with_tag(k: &mut Kernel, addr: u64, tag: u32) -> KResult<()> {
    free(k, addr, Some(tag))
}

/// ExFreePool(P).
pub fn free_pool(k: &mut Kernel, addr: u64) -> KResult<()> {
    free(k, addr, None)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall ExAllocatePoolWithTag => allocate_pool_with_tag(pool_type: u32, number_of_bytes: u64, tag: u32);
    stdcall ExAllocatePool => allocate_pool(pool_type: u32, number_of_bytes: u64);
    stdcall ExAllocatePool2 => allocate_pool2(flags: Quad, number_of_bytes: u64, tag: u32);
    stdcall ExFreePoolWithTag => free_pool_with_tag(p: u64, tag: u32);
    stdcall ExFreePool => free_pool(p: u64);
];
