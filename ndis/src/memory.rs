//! NDIS memory: NdisAllocateMemory, NdisAllocateMemoryWithTag(Priority) / NdisFreeMemory on the
//! executive pool, owned by the calling driver image (so leak reports name the miniport), and
//! NdisInitializeNPagedLookasideList / NdisDeleteNPagedLookasideList, which are ntoskrnl's
//! lookaside lists (see [`ntoskrnl::lookaside`]; allocating and freeing are header inlines, and
//! NDIS 5 headers make these two macros for the ntoskrnl exports).

use ntoskrnl::export::{Export, Quad};
use ntoskrnl::{ex, export_table, KResult, Kernel};

use crate::{NdisStatus, NDIS_STATUS_SUCCESS};

/// Tag of NdisAllocateMemory blocks (the untagged call).
const UNTAGGED: [u8; 4] = *b"NDIS";

fn allocate(k: &mut Kernel, out: u64, length: u32, tag: u32) -> KResult<NdisStatus> {
    let owner = k.caller_image();
    let block = ex::allocate(k, u64::from(length), tag, owner)?;
    k.write_ptr(out, block)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisAllocateMemoryWithTag(VirtualAddress, Length, Tag).
pub fn allocate_memory_with_tag(
    k: &mut Kernel,
    out: u64,
    length: u32,
    tag: u32,
) -> KResult<NdisStatus> {
    allocate(k, out, length, tag)
}

/// NdisAllocateMemory(VirtualAddress, Length, MemoryFlags, HighestAcceptableAddress).
/// NDIS_MEMORY_CONTIGUOUS / NDIS_MEMORY_NONCACHED blocks come from the same pool: guest memory is
/// not backed by distinct physical pages here.
pub fn allocate_memory(
    k: &mut Kernel,
    out: u64,
    length: u32,
    _memory_flags: u32,
    _highest_acceptable: Quad,
) -> KResult<NdisStatus> {
    allocate(k, out, length, u32::from_le_bytes(UNTAGGED))
}

/// NdisAllocateMemoryWithTagPriority(NdisHandle, Length, Tag, Priority) -> the block or NULL.
pub fn allocate_memory_with_tag_priority(
    k: &mut Kernel,
    _handle: u64,
    length: u32,
    tag: u32,
    _priority: u32,
) -> KResult<u64> {
    let owner = k.caller_image();
    ex::allocate(k, u64::from(length), tag, owner)
}

/// NdisFreeMemoryWithTagPriority(NdisHandle, VirtualAddress, Tag): the tag must match.
pub fn free_memory_with_tag_priority(
    k: &mut Kernel,
    _handle: u64,
    addr: u64,
    tag: u32,
) -> KResult<()> {
    ex::free(k, addr, Some(tag))
}

/// NdisFreeMemory(VirtualAddress, Length, MemoryFlags).
pub fn free_memory(k: &mut Kernel, addr: u64, _length: u32, _memory_flags: u32) -> KResult<()> {
    ex::free(k, addr, None)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisAllocateMemoryWithTag => allocate_memory_with_tag(virtual_address: u64, length: u32, tag: u32);
    stdcall NdisAllocateMemory => allocate_memory(virtual_address: u64, length: u32, memory_flags: u32, highest_acceptable_address: Quad);
    stdcall NdisFreeMemory => free_memory(virtual_address: u64, length: u32, memory_flags: u32);
    stdcall NdisAllocateMemoryWithTagPriority => allocate_memory_with_tag_priority(ndis_handle: u64, length: u32, tag: u32, priority: u32);
    stdcall NdisFreeMemoryWithTagPriority => free_memory_with_tag_priority(ndis_handle: u64, virtual_address: u64, tag: u32);
    stdcall NdisInitializeNPagedLookasideList => ntoskrnl::lookaside::initialize_npaged_lookaside_list(lookaside: u64, allocate: u64, free: u64, flags: u32, size: u64, tag: u32, depth: u16);
    stdcall NdisDeleteNPagedLookasideList => ntoskrnl::lookaside::delete_npaged_lookaside_list(lookaside: u64);
];

#[cfg(test)]
mod tests {
    use ntoskrnl::lookaside::Lookasides;

    use crate::test_support::{block, kernel, ARCHES};

    #[test]
    fn ndis_lookaside_exports_are_the_kernels_lookaside_lists() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let init = k
                .find_export("ndis.sys", "NdisInitializeNPagedLookasideList")
                .unwrap();
            let delete = k
                .find_export("ndis.sys", "NdisDeleteNPagedLookasideList")
                .unwrap();
            // Seven stdcall arguments on x86 (28 bytes, as ndis.h declares them), one to delete.
            assert_eq!((init.slots32, delete.slots32), (7, 1));
            let l = k.layout;
            let list = block(&mut k, l.npaged_lookaside_list_size);
            let tag = u64::from(u32::from_le_bytes(*b"NdLk"));
            (init.func)(&mut k, &[list, 0, 0, 0, 64, tag, 0]).unwrap();
            assert_eq!(
                k.m.mem.read_u32(list + l.general_lookaside_size_field),
                Ok(64)
            );
            assert!(k.extension::<Lookasides>().lists.contains_key(&list));
            (delete.func)(&mut k, &[list]).unwrap();
            assert!(k.extension::<Lookasides>().lists.is_empty(), "{arch:?}");
        }
    }
}
