//! Nonpaged lookaside lists: ExInitializeNPagedLookasideList / ExDeleteNPagedLookasideList.
//!
//! Drivers allocate and free through inline code from the headers, not through exports:
//! ExAllocateFromNPagedLookasideList counts `TotalAllocates`, pops the list head's SLIST
//! (InterlockedPopEntrySList, a fastcall export on x86; ExpInterlockedPopEntrySList on x64) and on
//! a miss counts `AllocateMisses` and calls the list's `Allocate` routine with its `Type`, `Size`
//! and `Tag`; ExFreeToNPagedLookasideList counts `TotalFrees` and pushes the block while the
//! SLIST's depth (ExQueryDepthSList) is below `Depth`, else counts `FreeMisses` and calls `Free`.
//! So the GENERAL_LOOKASIDE (layout from the DDK headers) must hold guest-callable routines: the
//! driver's own, or ExAllocatePoolWithTag / ExFreePool, bound like any import, so that pool
//! accounting sees the blocks under the list's tag.
//!
//! `Depth` starts, as on Windows, at the minimum depth of 4 (the Depth parameter is reserved) and
//! `MaximumDepth` is 256; Windows' balance-set manager raises `Depth` towards the maximum under
//! load once a second, which is not modelled (the depth stays at 4, so a busy list calls `Free`
//! more often). The `ListEntry` that links the list into the system's list of lookaside lists is
//! left self-linked; the kernel keeps its own record of live lists instead ([`Lookasides`]), so
//! that deleting a list that was never initialized is reported and freeing pool that still holds
//! a live list is a bug check ([`check_free`]).

use std::collections::BTreeMap;

use crate::export::Export;
use crate::verifier::{self, Rule, StopCode};
use crate::{export_table, interlocked, KResult, Kernel};

/// NonPagedPool (POOL_TYPE).
const NON_PAGED_POOL: u32 = 0;
/// ExMinimumLookasideDepth: the depth a new list starts with.
pub const MINIMUM_DEPTH: u16 = 4;
/// The MaximumDepth of a new list (EX_MAXIMUM_LOOKASIDE_DEPTH_BASE).
pub const MAXIMUM_DEPTH: u16 = 256;

/// A live lookaside list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookaside {
    /// Its pool tag.
    pub tag: u32,
    /// The image that initialized it.
    pub owner: String,
}

/// The kernel's record of live lookaside lists, by the address of their GENERAL_LOOKASIDE
/// (`k.extension::<Lookasides>()`).
#[derive(Debug, Default)]
pub struct Lookasides {
    /// Live lists.
    pub lists: BTreeMap<u64, Lookaside>,
}

/// ExInitializeNPagedLookasideList(Lookaside, Allocate, Free, Flags, Size, Tag, Depth): an empty
/// list whose misses go to `allocate` (default ExAllocatePoolWithTag) and whose overflow goes to
/// `free` (default ExFreePool). Also NDIS's NdisInitializeNPagedLookasideList.
#[allow(clippy::too_many_arguments)]
pub fn initialize_npaged_lookaside_list(
    k: &mut Kernel,
    lookaside: u64,
    allocate: u64,
    free: u64,
    flags: u32,
    size: u64,
    tag: u32,
    _depth: u16,
) -> KResult<()> {
    let l = k.layout;
    let owner = k.caller_image();
    if size < k.ptr_size() {
        tracing::warn!(
            "ExInitializeNPagedLookasideList({lookaside:#x}): {size}-byte entries cannot hold the \
             list link; blocks freed to the list will overrun"
        );
    }
    if k.extension::<Lookasides>().lists.contains_key(&lookaside) {
        tracing::warn!(
            "ExInitializeNPagedLookasideList({lookaside:#x}): a live list initialized again (its \
             cached entries are lost)"
        );
    }
    let allocate = match allocate {
        0 => k.bind_import("ntoskrnl.exe", "ExAllocatePoolWithTag"),
        f => f,
    };
    let free = match free {
        0 => k.bind_import("ntoskrnl.exe", "ExFreePool"),
        f => f,
    };
    k.m.mem.fill(lookaside, 0, l.npaged_lookaside_list_size)?;
    interlocked::initialize_slist_head(k, lookaside + l.general_lookaside_list_head)?;
    let m = &mut k.m.mem;
    m.write_u16(lookaside + l.general_lookaside_depth, MINIMUM_DEPTH)?;
    m.write_u16(lookaside + l.general_lookaside_maximum_depth, MAXIMUM_DEPTH)?;
    m.write_u32(lookaside + l.general_lookaside_type, NON_PAGED_POOL | flags)?;
    m.write_u32(lookaside + l.general_lookaside_tag, tag)?;
    m.write_u32(lookaside + l.general_lookaside_size_field, size as u32)?;
    k.write_ptr(lookaside + l.general_lookaside_allocate, allocate)?;
    k.write_ptr(lookaside + l.general_lookaside_free, free)?;
    let entry = lookaside + l.general_lookaside_list_entry;
    k.write_ptr(entry, entry)?;
    let blink = entry + k.ptr_size();
    k.write_ptr(blink, entry)?;
    k.extension::<Lookasides>()
        .lists
        .insert(lookaside, Lookaside { tag, owner });
    Ok(())
}

/// ExDeleteNPagedLookasideList(Lookaside): hands every cached entry to the list's `Free` routine
/// and forgets the list. Deleting something that is not a live list is reported and ignored.
/// Also NDIS's NdisDeleteNPagedLookasideList.
pub fn delete_npaged_lookaside_list(k: &mut Kernel, lookaside: u64) -> KResult<()> {
    if k.extension::<Lookasides>()
        .lists
        .remove(&lookaside)
        .is_none()
    {
        tracing::warn!(
            "ExDeleteNPagedLookasideList({lookaside:#x}): not an initialized lookaside list; ignored"
        );
        return Ok(());
    }
    let l = k.layout;
    let free = k.read_ptr(lookaside + l.general_lookaside_free)?;
    loop {
        let entry = interlocked::pop_entry_slist(k, lookaside + l.general_lookaside_list_head)?;
        if entry == 0 {
            return Ok(());
        }
        k.call_guest(free, &[entry])?;
    }
}

/// Bug-checks if `[addr, end)` (memory about to be freed) holds a live lookaside list: Windows
/// keeps it linked in the system's list of lookaside lists, which freeing it corrupts.
pub(crate) fn check_free(k: &mut Kernel, addr: u64, end: u64) -> KResult<()> {
    let live = k.extension::<Lookasides>().lists.range(addr..end).next();
    if let Some((&list, info)) = live {
        let detail = format!(
            "memory at {addr:#x} freed while it holds the lookaside list {list:#x} of {} \
             (ExDeleteNPagedLookasideList it first)",
            info.owner
        );
        return Err(verifier::stop(
            k,
            Rule::LookasideLeak,
            StopCode::new(0xC4, [0xCC, list, addr, end - addr]),
            detail,
        ));
    }
    Ok(())
}

/// Bug-checks (0xCE, DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS) if the image of
/// `driver` at `[start, start + size)`, about to be unloaded, holds a live lookaside list: Windows
/// would go on walking it in the system's list of lookaside lists.
pub(crate) fn check_unload(k: &mut Kernel, driver: &str, start: u64, size: u64) -> KResult<()> {
    let end = start.saturating_add(size);
    let live = k.extension::<Lookasides>().lists.range(start..end).next();
    if let Some((&list, _)) = live {
        return Err(verifier::stop_at(
            k,
            Rule::LookasideLeak,
            StopCode::new(0xCE, [list, 0, 0, 0]),
            None,
            format!("driver {driver} unloaded without deleting its lookaside list {list:#x}"),
        ));
    }
    Ok(())
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall ExInitializeNPagedLookasideList => initialize_npaged_lookaside_list(lookaside: u64, allocate: u64, free: u64, flags: u32, size: u64, tag: u32, depth: u16);
    stdcall ExDeleteNPagedLookasideList => delete_npaged_lookaside_list(lookaside: u64);
];

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::{ex, MODULE};

    const TAG: u32 = u32::from_le_bytes(*b"LkTs");

    fn field_u32(k: &Kernel, list: u64, offset: u64) -> u32 {
        k.m.mem.read_u32(list + offset).unwrap()
    }

    fn lookaside(arch: Arch) {
        let mut k = Kernel::new(arch, &[&MODULE]).unwrap();
        k.m.setup_stack(0x1_0000).unwrap();
        let l = k.layout;
        let list = ex::allocate(&mut k, l.npaged_lookaside_list_size, 0, "test".into()).unwrap();
        initialize_npaged_lookaside_list(&mut k, list, 0, 0, 0, 48, TAG, 0).unwrap();
        assert_eq!(field_u32(&k, list, l.general_lookaside_tag), TAG);
        assert_eq!(field_u32(&k, list, l.general_lookaside_size_field), 48);
        let depth = k.m.mem.read_u16(list + l.general_lookaside_depth).unwrap();
        assert_eq!(depth, MINIMUM_DEPTH);
        // The default routines are ntoskrnl's exports, callable by the guest.
        let allocate = k.read_ptr(list + l.general_lookaside_allocate).unwrap();
        let free = k.read_ptr(list + l.general_lookaside_free).unwrap();
        assert_eq!(
            allocate,
            k.bind_import("ntoskrnl.exe", "ExAllocatePoolWithTag")
        );
        assert_eq!(free, k.bind_import("ntoskrnl.exe", "ExFreePool"));
        // What the header's inline allocation does on a miss, then on free.
        let head = list + l.general_lookaside_list_head;
        let mut blocks = Vec::new();
        for _ in 0..3 {
            let b = k.call_guest(allocate, &[0, 48, u64::from(TAG)]).unwrap();
            assert_ne!(b, 0);
            blocks.push(b);
        }
        assert_eq!(
            k.pool.tag_usage(TAG).blocks,
            3,
            "{arch:?}: blocks counted by tag"
        );
        for b in &blocks {
            interlocked::push_entry_slist(&mut k, head, *b).unwrap();
        }
        // Freeing the memory that holds a live list is a bug check.
        let err = ex::free(&mut k, list, None).unwrap_err();
        assert!(err.to_string().contains("lookaside list"), "{err}");
        // Delete hands the cached entries to Free: nothing is left under the tag.
        delete_npaged_lookaside_list(&mut k, list).unwrap();
        assert_eq!(k.pool.tag_usage(TAG).blocks, 0, "{arch:?}");
        assert_eq!(interlocked::query_depth_slist(&mut k, head).unwrap(), 0);
        // Deleting again is ignored; the memory can go now.
        delete_npaged_lookaside_list(&mut k, list).unwrap();
        ex::free(&mut k, list, None).unwrap();

        // A list in a driver image (a global) must be deleted before the image goes.
        let image =
            k.m.mem
                .alloc(0x2000, dbt::Prot::READ | dbt::Prot::WRITE)
                .unwrap();
        initialize_npaged_lookaside_list(&mut k, image + 0x840, 0, 0, 0, 16, TAG, 0).unwrap();
        let err = check_unload(&mut k, "test.sys", image, 0x2000).unwrap_err();
        assert!(err.to_string().contains("0xCE"), "{err}");
        check_unload(&mut k, "other.sys", image + 0x1000, 0x1000).unwrap();
        delete_npaged_lookaside_list(&mut k, image + 0x840).unwrap();
        check_unload(&mut k, "test.sys", image, 0x2000).unwrap();
    }

    #[test]
    fn lookaside_x86() {
        lookaside(Arch::X86);
    }

    #[test]
    fn lookaside_x64() {
        lookaside(Arch::X64);
    }
}
