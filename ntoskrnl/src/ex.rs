//! Executive: the pool allocator (ExAllocatePool*, ExFreePool*) with per-tag accounting, and the
//! verifier's special pool.
//!
//! Special pool (with the verifier on, for a driver's allocations smaller than a page, as Driver
//! Verifier's Special Pool option): each block gets three pages of its own, a no-access guard page,
//! the data page and another guard page. The block ends at the end of the data page (rounded down
//! to the pool alignment); the rest of the data page is filled with a guard pattern. An access
//! past the end or before the start that reaches a guard page faults at once; one that stays in
//! the data page is found by the pattern check at free and at unload. A freed block's pages stay
//! no-access in a quarantine of the last [`QUARANTINE_BLOCKS`] frees, so a use after free faults
//! at the access and a second free is recognized.

use std::collections::{BTreeMap, HashMap, VecDeque};

use dbt::Prot;

use crate::export::{Export, Irql, Quad};
use crate::verifier::{self, IrqlLimit, Rule, StopCode};
use crate::{export_table, ke, KResult, Kernel, KernelError};

const ARENA_SIZE: u64 = 1 << 20;
const PAGE: u64 = 0x1000;
/// Pool blocks are 16-byte aligned on both architectures (Windows: 8 on x86, 16 on x64).
const ALIGN: u64 = 16;
/// What fills a special-pool data page around its block.
const GUARD_FILL: u8 = 0xEB;
/// Freed special-pool blocks whose pages stay no-access before they are reused.
pub const QUARANTINE_BLOCKS: usize = 1024;
/// A special-pool region: guard page, data page, guard page.
const REGION: u64 = 3 * PAGE;

/// Where a block's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backing {
    /// Carved from an arena.
    Arena,
    /// Whole pages of its own (a page or more).
    Pages,
    /// A special-pool region starting at this address.
    Special(u64),
}

/// One live pool block.
#[derive(Debug, Clone)]
pub struct PoolBlock {
    /// Requested size in bytes.
    pub size: u64,
    /// Four-character pool tag.
    pub tag: u32,
    /// Who allocated it (driver image name).
    pub owner: String,
    /// Guest return address of the driver's call that allocated it, if a driver call did.
    pub site: Option<u64>,
    /// From paged pool (the POOL_TYPE asked for; all pool is resident here).
    paged: bool,
    /// Bytes reserved for it (rounded up).
    reserved: u64,
    backing: Backing,
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

/// A freed special-pool block in quarantine.
#[derive(Debug, Clone)]
struct Freed {
    addr: u64,
    size: u64,
    tag: u32,
    alloc_site: Option<u64>,
    free_site: Option<u64>,
}

/// A special-pool region: the live block in it, or the freed one.
#[derive(Debug, Clone)]
enum Region {
    Live(u64),
    Freed(Freed),
}

/// The pool: arenas of guest pages carved first-fit, large blocks as page runs of their own,
/// special-pool regions.
#[derive(Debug, Default)]
pub struct Pool {
    blocks: BTreeMap<u64, PoolBlock>,
    free: BTreeMap<u64, u64>,
    tags: HashMap<u32, TagUsage>,
    special: BTreeMap<u64, Region>,
    /// Regions of freed special-pool blocks, oldest first.
    quarantine: VecDeque<u64>,
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

    /// Whether the block at `addr` comes from special pool.
    pub fn is_special(&self, addr: u64) -> bool {
        self.blocks
            .get(&addr)
            .is_some_and(|b| matches!(b.backing, Backing::Special(_)))
    }
}

/// Allocates `size` bytes of nonpaged pool for `owner`, zero-filled.
pub fn allocate(k: &mut Kernel, size: u64, tag: u32, owner: String) -> KResult<u64> {
    allocate_typed(k, false, size, tag, owner)
}

/// Allocates `size` bytes of pool (`paged` or not) for `owner`, zero-filled; from special pool if
/// the verifier is on, the owner is a driver image and the block is smaller than a page.
fn allocate_typed(k: &mut Kernel, paged: bool, size: u64, tag: u32, owner: String) -> KResult<u64> {
    let size_nonzero = size.max(1);
    let driver = k.images.iter().any(|i| i.name == owner);
    let site = driver.then(|| k.call_site()).flatten().map(|s| s.address);
    let (addr, reserved, backing) = if size_nonzero >= PAGE {
        let reserved = size_nonzero.div_ceil(PAGE) * PAGE;
        let addr = k.m.mem.alloc(reserved, Prot::READ | Prot::WRITE)?;
        k.m.mem.fill(addr, 0, reserved)?;
        (addr, reserved, Backing::Pages)
    } else if driver && k.verifier.enabled() {
        let (addr, region) = allocate_special(k, size_nonzero)?;
        k.pool.special.insert(region, Region::Live(addr));
        (addr, size_nonzero, Backing::Special(region))
    } else {
        let reserved = size_nonzero.div_ceil(ALIGN) * ALIGN;
        let addr = carve(k, reserved)?;
        k.m.mem.fill(addr, 0, reserved)?;
        (addr, reserved, Backing::Arena)
    };
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
            site,
            paged,
            reserved,
            backing,
        },
    );
    Ok(addr)
}

/// A special-pool region for a block of `size` (1..PAGE) bytes: returns the block's address (zeroed,
/// surrounded by the guard pattern) and the region's.
fn allocate_special(k: &mut Kernel, size: u64) -> KResult<(u64, u64)> {
    let mem = &mut k.m.mem;
    let region = mem.alloc(REGION, Prot::READ | Prot::WRITE)?;
    mem.protect(region, PAGE, Prot::empty())?;
    mem.protect(region + 2 * PAGE, PAGE, Prot::empty())?;
    let data = region + PAGE;
    let addr = (data + PAGE - size) & !(ALIGN - 1);
    mem.fill(data, GUARD_FILL, PAGE)?;
    mem.fill(addr, 0, size)?;
    Ok((addr, region))
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

/// `'Tag', N bytes at ADDR, allocated at SITE` for messages.
fn describe(k: &Kernel, addr: u64, size: u64, tag: u32, site: Option<u64>) -> String {
    let mut text = format!("{size}-byte pool block {addr:#x} (tag '{}'", tag_text(tag));
    if let Some(site) = site {
        text.push_str(&format!(", allocated at {}", k.site(site)));
    }
    text.push(')');
    text
}

/// The first byte of the special-pool block at `addr` whose guard pattern is broken: an overrun
/// (the first byte after the end that changed) or an underrun (the changed byte nearest before
/// the start); with the corrupted address.
fn check_guard(k: &Kernel, addr: u64, size: u64, region: u64) -> KResult<Option<(Rule, u64)>> {
    let data = region + PAGE;
    let guard = |from: u64, to: u64| -> KResult<Vec<u8>> {
        if from == to {
            return Ok(Vec::new());
        }
        Ok(k.m.mem.read_vec(from, (to - from) as usize)?)
    };
    let after = guard(addr + size, data + PAGE)?;
    if let Some(i) = after.iter().position(|&b| b != GUARD_FILL) {
        return Ok(Some((Rule::PoolOverrun, addr + size + i as u64)));
    }
    let before = guard(data, addr)?;
    if let Some(i) = before.iter().rposition(|&b| b != GUARD_FILL) {
        return Ok(Some((Rule::PoolUnderrun, data + i as u64)));
    }
    Ok(None)
}

/// What a guard-pattern breach is called: `N bytes after the end` / `N bytes before the start`.
fn breach(rule: Rule, addr: u64, size: u64, at: u64) -> String {
    if rule == Rule::PoolOverrun {
        format!("byte {} after the end", at - (addr + size) + 1)
    } else {
        format!("byte {} before the start", addr - at)
    }
}

/// Frees a pool block; `expected_tag` (if any) must match the block's tag, as ExFreePoolWithTag
/// demands. Freeing something that is not a live block is a BAD_POOL_CALLER bug check (with the
/// verifier: a double free of a block in quarantine, else a bad free); freeing one that holds an
/// armed timer, a queued DPC or a queued work item is bug check 0xC7 / 0xE4
/// ([`crate::ke::check_free`]). A special-pool block's guard pattern is checked first.
pub fn free(k: &mut Kernel, addr: u64, expected_tag: Option<u32>) -> KResult<()> {
    let Some(block) = k.pool.blocks.get(&addr) else {
        return Err(bad_free(k, addr));
    };
    if let Some(tag) = expected_tag {
        if tag != block.tag && tag != 0 {
            let detail = format!(
                "ExFreePoolWithTag of {addr:#x} with tag '{}', but it was allocated with tag '{}'",
                tag_text(tag),
                tag_text(block.tag)
            );
            return Err(verifier::stop(
                k,
                Rule::BadFree,
                StopCode::new(0xC2, [0xA, addr, u64::from(tag), u64::from(block.tag)]),
                detail,
            ));
        }
    }
    let (size, tag, site, backing) = (block.size, block.tag, block.site, block.backing);
    if let Backing::Special(region) = backing {
        if let Some((rule, at)) = check_guard(k, addr, size, region)? {
            let kind = if rule == Rule::PoolOverrun {
                0x24
            } else {
                0x23
            };
            let detail = format!(
                "{} of {} at {at:#x} was overwritten; found when it was freed",
                breach(rule, addr, size, at),
                describe(k, addr, size, tag, site)
            );
            return Err(verifier::stop(
                k,
                rule,
                StopCode::new(0xC1, [addr, at, 0, kind]),
                detail,
            ));
        }
    }
    crate::ke::check_free(k, addr, size)?;
    let block = k.pool.blocks.remove(&addr).expect("checked above");
    if let Some(usage) = k.pool.tags.get_mut(&block.tag) {
        usage.blocks -= 1;
        usage.bytes -= block.size;
    }
    match block.backing {
        Backing::Pages => k.m.mem.free(addr)?,
        Backing::Arena => release_span(&mut k.pool.free, addr, block.reserved),
        Backing::Special(region) => {
            k.m.mem.protect(region + PAGE, PAGE, Prot::empty())?;
            let freed = Freed {
                addr,
                size,
                tag,
                alloc_site: site,
                free_site: k.call_site().map(|s| s.address),
            };
            k.pool.special.insert(region, Region::Freed(freed));
            k.pool.quarantine.push_back(region);
            while k.pool.quarantine.len() > QUARANTINE_BLOCKS {
                let old = k.pool.quarantine.pop_front().expect("non-empty");
                k.pool.special.remove(&old);
                k.m.mem.free(old)?;
            }
        }
    }
    Ok(())
}

/// The error for freeing `addr`, which is not a live block: with the verifier, a double free if
/// it is a freed special-pool block, else a free of something never allocated (0xC4 / 0x10);
/// without it, BAD_POOL_CALLER.
fn bad_free(k: &mut Kernel, addr: u64) -> KernelError {
    let freed = match special_region(k, addr) {
        Some((_, Region::Freed(f))) if f.addr == addr => Some(f.clone()),
        _ => None,
    };
    if let (Some(f), true) = (freed, k.verifier.enabled()) {
        let first = f
            .free_site
            .map(|s| format!(", first freed at {}", k.site(s)))
            .unwrap_or_default();
        let detail = format!(
            "ExFreePool of the {}, which was already freed{first}",
            describe(k, f.addr, f.size, f.tag, f.alloc_site)
        );
        return verifier::stop(
            k,
            Rule::DoubleFree,
            StopCode::new(0xC4, [0x13, 0, addr, 0]),
            detail,
        );
    }
    let detail = format!(
        "ExFreePool of {addr:#x}, which is not an allocated pool block (double free or bad pointer)"
    );
    if k.verifier.enabled() {
        verifier::stop(k, Rule::BadFree, StopCode::sub(0xC4, 0x10), detail)
    } else {
        KernelError::bug_check(0xC2, detail)
    }
}

/// The special-pool region containing `addr`, if any.
fn special_region(k: &Kernel, addr: u64) -> Option<(u64, &Region)> {
    let (&region, r) = k.pool.special.range(..=addr).next_back()?;
    (addr < region + REGION).then_some((region, r))
}

/// The verifier's finding for a page fault at `addr` in special pool (the verifier is on): a guard
/// page of a live block (an overrun or underrun), or a freed block (a use after free). `rip` is the
/// faulting guest instruction; `None` for a kernel service touching the memory on the driver's
/// behalf (the current import call). None if `addr` is not special pool.
pub(crate) fn special_pool_fault(
    k: &mut Kernel,
    addr: u64,
    write: bool,
    rip: Option<u64>,
) -> Option<KernelError> {
    if !k.verifier.enabled() {
        return None;
    }
    let (region, r) = special_region(k, addr)?;
    let access = if write { "write" } else { "read" };
    let by = if rip.is_some() {
        ""
    } else {
        " by a kernel service"
    };
    let (rule, code, detail) = match r {
        Region::Live(block) => {
            let b = k.pool.blocks.get(block)?;
            let (rule, place) = if addr < region + PAGE {
                (
                    Rule::PoolUnderrun,
                    format!("{} bytes before the start", block - addr),
                )
            } else {
                (
                    Rule::PoolOverrun,
                    format!("{} bytes after the end", addr - (block + b.size)),
                )
            };
            let what = describe(k, *block, b.size, b.tag, b.site);
            let code = if rip.is_some() { 0xD6 } else { 0xCD };
            (
                rule,
                code,
                format!("{access}{by} at {addr:#x}, {place} of the {what}"),
            )
        }
        Region::Freed(f) => {
            let freed = f
                .free_site
                .map(|s| format!(", freed at {}", k.site(s)))
                .unwrap_or_default();
            let what = describe(k, f.addr, f.size, f.tag, f.alloc_site);
            let code = if rip.is_some() { 0xD5 } else { 0xCC };
            (
                Rule::UseAfterFree,
                code,
                format!("{access}{by} at {addr:#x} in the freed {what}{freed}"),
            )
        }
    };
    let site = match rip {
        Some(rip) => Some(k.site(rip)),
        None => k.call_site(),
    };
    let check = StopCode::new(code, [addr, u64::from(write), rip.unwrap_or(0), 0]);
    Some(verifier::stop_at(k, rule, check, site, detail))
}

/// Unload check of the pool a driver image still owns (the verifier is on): one leak finding per
/// tag (MDLs as MDL leaks), and the guard pattern of each special-pool block it leaves.
pub(crate) fn check_unload(k: &mut Kernel, image: &str) -> KResult<()> {
    let mut by_tag: BTreeMap<u32, Vec<(u64, PoolBlock)>> = BTreeMap::new();
    for (&addr, b) in k.pool.blocks.iter().filter(|(_, b)| b.owner == image) {
        by_tag.entry(b.tag).or_default().push((addr, b.clone()));
    }
    for (tag, blocks) in by_tag {
        for (addr, b) in &blocks {
            if let Backing::Special(region) = b.backing {
                if let Some((rule, at)) = check_guard(k, *addr, b.size, region)? {
                    let detail = format!(
                        "{} of the leaked {} at {at:#x} was overwritten",
                        breach(rule, *addr, b.size, at),
                        describe(k, *addr, b.size, b.tag, b.site)
                    );
                    let site = b.site.map(|s| k.site(s));
                    verifier::note(k, rule, image, site, None, detail);
                }
            }
        }
        let bytes: u64 = blocks.iter().map(|(_, b)| b.size).sum();
        let count = blocks.len() as u64;
        let rule = match tag {
            crate::mm::MDL_TAG => Rule::MdlLeak,
            crate::workitem::IO_WORKITEM_TAG => Rule::WorkItemLeak,
            _ => Rule::PoolLeak,
        };
        let sites: Vec<String> = blocks
            .iter()
            .filter_map(|(_, b)| b.site)
            .take(4)
            .map(|s| k.site(s).to_string())
            .collect();
        let detail = format!(
            "{count} block(s), {bytes} bytes with tag '{}' still allocated at unload{}",
            tag_text(tag),
            if sites.is_empty() {
                String::new()
            } else {
                format!(", allocated at {}", sites.join(", "))
            }
        );
        let site = blocks[0].1.site.map(|s| k.site(s));
        let check = StopCode::new(0xC4, [0x62, 0, 0, count]);
        verifier::note(k, rule, image, site, Some(check), detail);
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
pub fn allocate_pool_with_tag(k: &mut Kernel, pool_type: u32, size: u64, tag: u32) -> KResult<u64> {
    let owner = k.caller_image();
    allocate_typed(k, is_paged(pool_type), size, tag, owner)
}

/// ExAllocatePool(PoolType, NumberOfBytes): tag 'None' as Windows uses.
pub fn allocate_pool(k: &mut Kernel, pool_type: u32, size: u64) -> KResult<u64> {
    allocate_pool_with_tag(k, pool_type, size, u32::from_le_bytes(*b"None"))
}

/// POOL_FLAG_PAGED of ExAllocatePool2.
const POOL_FLAG_PAGED: u64 = 0x100;

/// ExAllocatePool2(Flags, NumberOfBytes, Tag): zeroed memory (as POOL_FLAG_UNINITIALIZED is not honoured, always).
pub fn allocate_pool2(k: &mut Kernel, flags: Quad, size: u64, tag: u32) -> KResult<u64> {
    let owner = k.caller_image();
    allocate_typed(k, flags.0 & POOL_FLAG_PAGED != 0, size, tag, owner)
}

/// ExFreePoolWithTag(P, Tag).
pub fn free_pool_with_tag(k: &mut Kernel, addr: u64, tag: u32) -> KResult<()> {
    free(k, addr, Some(tag))
}

/// ExFreePool(P).
pub fn free_pool(k: &mut Kernel, addr: u64) -> KResult<()> {
    free(k, addr, None)
}

/// Whether a POOL_TYPE is paged (PagedPool and its variants are the odd values).
fn is_paged(pool_type: u32) -> bool {
    pool_type & 1 != 0
}

/// The IRQL limit of an allocation (IrqlExAllocatePool): paged pool at APC_LEVEL or below
/// (0xC4 / 0x01), nonpaged at DISPATCH_LEVEL or below (0xC4 / 0x02).
fn pool_limit(paged: bool) -> IrqlLimit {
    let (max, param1) = if paged {
        (ke::APC_LEVEL, 0x01)
    } else {
        (ke::DISPATCH_LEVEL, 0x02)
    };
    IrqlLimit {
        max,
        source: "IrqlExAllocatePool",
        check: StopCode::sub(0xC4, param1),
    }
}

/// IRQL rule of ExAllocatePoolWithTag / ExAllocatePool: by the pool type (first argument).
fn allocate_irql(_k: &Kernel, args: &[u64]) -> KResult<Option<IrqlLimit>> {
    Ok(Some(pool_limit(is_paged(
        args.first().copied().unwrap_or(0) as u32,
    ))))
}

/// IRQL rule of ExAllocatePool2: by POOL_FLAG_PAGED in its flags (first argument).
fn allocate2_irql(_k: &Kernel, args: &[u64]) -> KResult<Option<IrqlLimit>> {
    let flags = args.first().copied().unwrap_or(0);
    Ok(Some(pool_limit(flags & POOL_FLAG_PAGED != 0)))
}

/// IRQL rule of ExFreePool(WithTag): paged blocks at APC_LEVEL or below (0xC4 / 0x11), nonpaged
/// at DISPATCH_LEVEL or below (0xC4 / 0x12).
fn free_irql(k: &Kernel, args: &[u64]) -> KResult<Option<IrqlLimit>> {
    let paged = args
        .first()
        .and_then(|a| k.pool.blocks.get(a))
        .is_some_and(|b| b.paged);
    let (max, param1) = if paged {
        (ke::APC_LEVEL, 0x11)
    } else {
        (ke::DISPATCH_LEVEL, 0x12)
    };
    Ok(Some(IrqlLimit {
        max,
        source: "ExFreePool",
        check: StopCode::sub(0xC4, param1),
    }))
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall ExAllocatePoolWithTag => allocate_pool_with_tag(pool_type: u32, number_of_bytes: u64, tag: u32) @ Irql::By(allocate_irql);
    stdcall ExAllocatePool => allocate_pool(pool_type: u32, number_of_bytes: u64) @ Irql::By(allocate_irql);
    stdcall ExAllocatePool2 => allocate_pool2(flags: Quad, number_of_bytes: u64, tag: u32) @ Irql::By(allocate2_irql);
    stdcall ExFreePoolWithTag => free_pool_with_tag(p: u64, tag: u32) @ Irql::By(free_irql);
    stdcall ExFreePool => free_pool(p: u64) @ Irql::By(free_irql);
];

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;
    use crate::LoadedImage;

    const TAG: u32 = u32::from_le_bytes(*b"Test");

    /// A kernel with the verifier on and a driver image `drv.sys` to own pool.
    fn verified(arch: Arch) -> Guest {
        let mut g = Guest::new(arch);
        g.k.verifier.set_enabled(true);
        g.k.images.push(LoadedImage {
            name: "drv.sys".into(),
            base: 0x1000,
            size: 0x1000,
            entry: 0x1000,
            symbols: Vec::new(),
        });
        g
    }

    fn rule_of(e: KernelError) -> Option<(Rule, u32)> {
        e.finding()
            .map(|f| (f.rule, f.bug_check.map_or(0, |c| c.code)))
    }

    #[test]
    fn special_pool_blocks_end_at_a_guard_page_between_guard_bytes() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = verified(arch);
            let a = allocate(&mut g.k, 20, TAG, "drv.sys".into()).unwrap();
            assert!(g.k.pool.is_special(a) && a.is_multiple_of(ALIGN));
            assert_eq!(g.k.m.mem.read_vec(a, 20).unwrap(), vec![0; 20]);
            assert!(
                g.k.m.mem.read_u8(a + 32).is_err(),
                "the next page is a guard page"
            );
            let fault = special_pool_fault(&mut g.k, a + 40, true, Some(0x1234)).unwrap();
            assert_eq!(rule_of(fault), Some((Rule::PoolOverrun, 0xD6)));
            let fault = special_pool_fault(&mut g.k, a - PAGE, false, None).unwrap();
            assert_eq!(rule_of(fault), Some((Rule::PoolUnderrun, 0xCD)));

            g.k.m.mem.write_u8(a + 21, 7).unwrap();
            let err = free(&mut g.k, a, None).unwrap_err();
            assert_eq!(rule_of(err), Some((Rule::PoolOverrun, 0xC1)));
            g.k.m.mem.write_u8(a + 21, GUARD_FILL).unwrap();
            g.k.m.mem.write_u8(a - 1, 7).unwrap();
            let err = free(&mut g.k, a, None).unwrap_err();
            assert_eq!(rule_of(err), Some((Rule::PoolUnderrun, 0xC1)));
            g.k.m.mem.write_u8(a - 1, GUARD_FILL).unwrap();
            free(&mut g.k, a, None).unwrap();

            assert!(g.k.m.mem.read_u8(a).is_err(), "freed blocks stay no-access");
            let fault = special_pool_fault(&mut g.k, a + 4, false, Some(0x1234)).unwrap();
            assert_eq!(rule_of(fault), Some((Rule::UseAfterFree, 0xD5)));
            assert_eq!(
                rule_of(free(&mut g.k, a, None).unwrap_err()),
                Some((Rule::DoubleFree, 0xC4))
            );
            assert_eq!(
                rule_of(free(&mut g.k, a + 16, None).unwrap_err()),
                Some((Rule::BadFree, 0xC4))
            );
            assert_eq!(g.k.verifier.take_findings().len(), 7);

            let host = allocate(&mut g.k, 20, TAG, "ntoskrnl.exe".into()).unwrap();
            assert!(
                !g.k.pool.is_special(host),
                "the kernel's own blocks come from arenas"
            );
            free(&mut g.k, host, None).unwrap();
        }
    }

    #[test]
    fn the_quarantine_is_bounded() {
        let mut g = verified(Arch::X64);
        let first = allocate(&mut g.k, 8, TAG, "drv.sys".into()).unwrap();
        free(&mut g.k, first, None).unwrap();
        for _ in 0..QUARANTINE_BLOCKS {
            let b = allocate(&mut g.k, 8, TAG, "drv.sys".into()).unwrap();
            free(&mut g.k, b, None).unwrap();
        }
        assert_eq!(g.k.pool.quarantine.len(), QUARANTINE_BLOCKS);
        assert!(
            special_pool_fault(&mut g.k, first, false, None).is_none(),
            "forgotten"
        );
        assert!(g.k.verifier.findings().is_empty());
    }

    #[test]
    fn leaks_at_unload_are_one_finding_per_tag() {
        let mut g = verified(Arch::X86);
        for size in [10, 20] {
            allocate(&mut g.k, size, TAG, "drv.sys".into()).unwrap();
        }
        let mdl = allocate(&mut g.k, 40, crate::mm::MDL_TAG, "drv.sys".into()).unwrap();
        g.k.m.mem.write_u8(mdl + 40, 1).unwrap();
        check_unload(&mut g.k, "drv.sys").unwrap();
        let found = g.k.verifier.take_findings();
        let rules: Vec<Rule> = found.iter().map(|f| f.rule).collect();
        assert_eq!(rules, [Rule::PoolOverrun, Rule::MdlLeak, Rule::PoolLeak]);
        assert!(
            found[2]
                .detail
                .contains("2 block(s), 30 bytes with tag 'Test'"),
            "{}",
            found[2]
        );
    }
}
