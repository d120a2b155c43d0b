//! Memory manager: MDLs (memory descriptor lists) over guest memory, system-address mappings,
//! contiguous allocations, and MmGetSystemRoutineAddress.
//!
//! Guest memory is one flat address space mapped linearly to guest-physical addresses
//! ([`dbt::GuestMemory::virt_to_phys`]), so every buffer is already mapped in system space and
//! physically contiguous.

use crate::export::{Export, Quad};
use crate::verifier::irql;
use crate::{ex, export_table, rtl, KResult, Kernel};

const PAGE: u64 = 0x1000;
/// MDL_MAPPED_TO_SYSTEM_VA.
const MDL_MAPPED_TO_SYSTEM_VA: u16 = 0x0001;
/// MDL_PAGES_LOCKED.
const MDL_PAGES_LOCKED: u16 = 0x0002;
/// MDL_SOURCE_IS_NONPAGED_POOL.
const MDL_SOURCE_IS_NONPAGED_POOL: u16 = 0x0004;
pub(crate) const MDL_TAG: u32 = u32::from_le_bytes(*b"Mdl ");

fn pages_spanned(addr: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    ((addr & (PAGE - 1)) + len).div_ceil(PAGE)
}

/// MmSizeOfMdl(Base, Length): header plus one PFN per page spanned.
pub fn size_of_mdl(k: &mut Kernel, base: u64, length: u64) -> KResult<u64> {
    Ok(k.layout.mdl_size + pages_spanned(base, length) * k.ptr_size())
}

/// Fills in an MDL header for `len` bytes at `va` (MmInitializeMdl).
fn initialize_mdl(k: &mut Kernel, mdl: u64, va: u64, len: u64) -> KResult<()> {
    let l = k.layout;
    let size = size_of_mdl(k, va, len)?;
    k.m.mem.fill(mdl, 0, l.mdl_size)?;
    k.m.mem.write_u16(mdl + l.mdl_size_field, size as u16)?;
    k.write_ptr(mdl + l.mdl_start_va, va & !(PAGE - 1))?;
    k.m.mem.write_u32(mdl + l.mdl_byte_count, len as u32)?;
    k.m.mem
        .write_u32(mdl + l.mdl_byte_offset, (va & (PAGE - 1)) as u32)?;
    Ok(())
}

/// Marks an MDL as describing resident, system-mapped pages and fills its PFN array
/// (MmBuildMdlForNonPagedPool).
pub fn build_mdl_for_non_paged_pool(k: &mut Kernel, mdl: u64) -> KResult<()> {
    let l = k.layout;
    let start = k.read_ptr(mdl + l.mdl_start_va)?;
    let offset = k.m.mem.read_u32(mdl + l.mdl_byte_offset)? as u64;
    let count = k.m.mem.read_u32(mdl + l.mdl_byte_count)? as u64;
    let first_pfn = k.m.mem.virt_to_phys(start).unwrap_or(0) >> 12;
    for i in 0..pages_spanned(start + offset, count) {
        let pfn = first_pfn + i;
        k.write_ptr(mdl + l.mdl_size + i * k.ptr_size(), pfn)?;
    }
    k.write_ptr(mdl + l.mdl_mapped_system_va, start + offset)?;
    let flags = k.m.mem.read_u16(mdl + l.mdl_mdl_flags)?;
    k.m.mem
        .write_u16(mdl + l.mdl_mdl_flags, flags | MDL_SOURCE_IS_NONPAGED_POOL)?;
    Ok(())
}

/// An MDL (owned by the I/O manager) describing a guest buffer, ready for
/// MmGetSystemAddressForMdlSafe.
pub fn create_mdl_for_buffer(k: &mut Kernel, va: u64, len: u64) -> KResult<u64> {
    let size = size_of_mdl(k, va, len)?;
    let mdl = ex::allocate(k, size, MDL_TAG, "ntoskrnl.exe".into())?;
    initialize_mdl(k, mdl, va, len)?;
    build_mdl_for_non_paged_pool(k, mdl)?;
    let l = k.layout;
    let flags = k.m.mem.read_u16(mdl + l.mdl_mdl_flags)?;
    k.m.mem
        .write_u16(mdl + l.mdl_mdl_flags, flags | MDL_PAGES_LOCKED)?;
    Ok(mdl)
}

/// Frees an MDL allocated by IoAllocateMdl or the I/O manager.
pub fn free_mdl(k: &mut Kernel, mdl: u64) -> KResult<()> {
    ex::free(k, mdl, None)
}

/// IoAllocateMdl(VirtualAddress, Length, SecondaryBuffer, ChargeQuota, Irp).
pub fn allocate_mdl(
    k: &mut Kernel,
    va: u64,
    length: u32,
    secondary: bool,
    _charge_quota: bool,
    irp: u64,
) -> KResult<u64> {
    let size = size_of_mdl(k, va, length as u64)?;
    let owner = k.caller_image();
    let mdl = ex::allocate(k, size, MDL_TAG, owner)?;
    initialize_mdl(k, mdl, va, length as u64)?;
    if irp != 0 {
        let l = k.layout;
        let head = irp + l.irp_mdl_address;
        if secondary {
            let mut last = k.read_ptr(head)?;
            if last == 0 {
                k.write_ptr(head, mdl)?;
            } else {
                while k.read_ptr(last + l.mdl_next)? != 0 {
                    last = k.read_ptr(last + l.mdl_next)?;
                }
                k.write_ptr(last + l.mdl_next, mdl)?;
            }
        } else {
            k.write_ptr(head, mdl)?;
        }
    }
    Ok(mdl)
}

/// IoFreeMdl(Mdl).
pub fn io_free_mdl(k: &mut Kernel, mdl: u64) -> KResult<()> {
    free_mdl(k, mdl)
}

/// MmProbeAndLockPages(Mdl, AccessMode, Operation): checks the pages exist and fills the PFNs.
pub fn probe_and_lock_pages(k: &mut Kernel, mdl: u64, _mode: u8, _operation: u32) -> KResult<()> {
    let l = k.layout;
    let start = k.read_ptr(mdl + l.mdl_start_va)?;
    let offset = k.m.mem.read_u32(mdl + l.mdl_byte_offset)? as u64;
    let count = k.m.mem.read_u32(mdl + l.mdl_byte_count)? as u64;
    // Touch every page, so a bad buffer is reported here as Windows raises an exception here.
    for i in 0..pages_spanned(start + offset, count) {
        k.m.mem.read_u8(start + offset.max(i * PAGE))?;
    }
    build_mdl_for_non_paged_pool(k, mdl)?;
    let flags = k.m.mem.read_u16(mdl + l.mdl_mdl_flags)?;
    k.m.mem
        .write_u16(mdl + l.mdl_mdl_flags, flags | MDL_PAGES_LOCKED)?;
    Ok(())
}

/// MmUnlockPages(Mdl).
pub fn unlock_pages(k: &mut Kernel, mdl: u64) -> KResult<()> {
    let l = k.layout;
    let flags = k.m.mem.read_u16(mdl + l.mdl_mdl_flags)?;
    k.m.mem
        .write_u16(mdl + l.mdl_mdl_flags, flags & !MDL_PAGES_LOCKED)?;
    Ok(())
}

/// MmMapLockedPagesSpecifyCache(Mdl, AccessMode, CacheType, RequestedAddress, BugCheckOnFailure,
/// Priority): the buffer is already system-mapped; returns its address.
pub fn map_locked_pages_specify_cache(
    k: &mut Kernel,
    mdl: u64,
    _mode: u8,
    _cache: u32,
    _requested: u64,
    _bugcheck: u32,
    _priority: u32,
) -> KResult<u64> {
    map_locked_pages(k, mdl, 0)
}

/// MmMapLockedPages(Mdl, AccessMode).
pub fn map_locked_pages(k: &mut Kernel, mdl: u64, _mode: u8) -> KResult<u64> {
    let l = k.layout;
    let start = k.read_ptr(mdl + l.mdl_start_va)?;
    let offset = k.m.mem.read_u32(mdl + l.mdl_byte_offset)? as u64;
    let va = start + offset;
    k.write_ptr(mdl + l.mdl_mapped_system_va, va)?;
    let flags = k.m.mem.read_u16(mdl + l.mdl_mdl_flags)?;
    k.m.mem
        .write_u16(mdl + l.mdl_mdl_flags, flags | MDL_MAPPED_TO_SYSTEM_VA)?;
    Ok(va)
}

/// MmUnmapLockedPages(BaseAddress, Mdl).
pub fn unmap_locked_pages(k: &mut Kernel, _base: u64, mdl: u64) -> KResult<()> {
    let l = k.layout;
    let flags = k.m.mem.read_u16(mdl + l.mdl_mdl_flags)?;
    k.m.mem
        .write_u16(mdl + l.mdl_mdl_flags, flags & !MDL_MAPPED_TO_SYSTEM_VA)?;
    Ok(())
}

/// MmIsAddressValid(VirtualAddress).
pub fn is_address_valid(k: &mut Kernel, va: u64) -> KResult<bool> {
    Ok(k.m.mem.is_mapped(va, 1))
}

/// MmGetPhysicalAddress(BaseAddress): the guest window is mapped linearly below 4 GiB
/// ([`dbt::GuestMemory::virt_to_phys`]); 0 for an address outside it, as Windows returns for an
/// invalid one.
pub fn get_physical_address(k: &mut Kernel, va: u64) -> KResult<Quad> {
    Ok(Quad(k.m.mem.virt_to_phys(va).unwrap_or(0)))
}

/// Pool tag of contiguous memory ('MmCm'), charged to the driver that asked for it (a block left
/// at unload is a verifier leak finding).
pub(crate) const CONTIGUOUS_TAG: u32 = u32::from_le_bytes(*b"MmCm");

/// Most places [`allocate_contiguous`] tries before it gives up.
const CONTIGUOUS_TRIES: usize = 64;

/// Physically contiguous, page-aligned, zeroed memory of `size` bytes whose physical range lies
/// within `[lowest, highest]` and crosses no multiple of `boundary` (0: no limit), charged to the
/// calling driver; 0 if it cannot be had. The guest window is one physically contiguous range
/// (at [`dbt::PHYS_BASE`], below 4 GiB), so every block is contiguous. Places come in first-fit
/// order; a place that misses the bounds is held, with a filler up to where the next candidate
/// starts (the lowest address, the next boundary line), so the next try lands there; they are
/// given back at the end. It fails once the next place would end above `highest` or outside the
/// window, or after [`CONTIGUOUS_TRIES`] places.
fn allocate_contiguous(
    k: &mut Kernel,
    size: u64,
    lowest: u64,
    highest: u64,
    boundary: u64,
) -> KResult<u64> {
    if size == 0 || (boundary != 0 && size > boundary) {
        return Ok(0);
    }
    let owner = k.caller_image();
    let mut held = Vec::new();
    let mut found = 0;
    for _ in 0..CONTIGUOUS_TRIES {
        let va = ex::allocate(k, size.max(PAGE), CONTIGUOUS_TAG, owner.clone())?;
        held.push(va);
        let pa = k.m.mem.virt_to_phys(va).unwrap_or(0);
        let last = pa + size - 1;
        let next = if pa < lowest {
            lowest.next_multiple_of(PAGE)
        } else if boundary != 0 && pa / boundary != last / boundary {
            (pa / boundary + 1) * boundary
        } else if last <= highest {
            held.pop();
            found = va;
            break;
        } else {
            break;
        };
        let next_last = next + size - 1;
        if next_last > highest || k.m.mem.phys_to_virt(next_last).is_none() {
            break;
        }
        let end = pa + size.max(PAGE).next_multiple_of(PAGE);
        if next > end {
            held.push(ex::allocate(k, next - end, CONTIGUOUS_TAG, owner.clone())?);
        }
    }
    for va in held {
        ex::free(k, va, Some(CONTIGUOUS_TAG))?;
    }
    Ok(found)
}

/// MmAllocateContiguousMemory(NumberOfBytes, HighestAcceptableAddress).
pub fn allocate_contiguous_memory(k: &mut Kernel, size: u64, highest: Quad) -> KResult<u64> {
    allocate_contiguous(k, size, 0, highest.0, 0)
}

/// MmAllocateContiguousMemorySpecifyCache(NumberOfBytes, LowestAcceptableAddress,
/// HighestAcceptableAddress, BoundaryAddressMultiple, CacheType): NULL when the bounds cannot be
/// met (a block larger than the boundary multiple never can). The cache type does not matter to
/// emulated memory.
pub fn allocate_contiguous_memory_specify_cache(
    k: &mut Kernel,
    size: u64,
    lowest: Quad,
    highest: Quad,
    boundary: Quad,
    _cache_type: u32,
) -> KResult<u64> {
    allocate_contiguous(k, size, lowest.0, highest.0, boundary.0)
}

/// MmFreeContiguousMemory(BaseAddress): anything else than a block from the contiguous
/// allocators is a bad free.
pub fn free_contiguous_memory(k: &mut Kernel, base: u64) -> KResult<()> {
    ex::free(k, base, Some(CONTIGUOUS_TAG))
}

/// MmFreeContiguousMemorySpecifyCache(BaseAddress, NumberOfBytes, CacheType).
pub fn free_contiguous_memory_specify_cache(
    k: &mut Kernel,
    base: u64,
    _size: u64,
    _cache_type: u32,
) -> KResult<()> {
    free_contiguous_memory(k, base)
}

/// Maps `len` bytes of physical (bus) address space at `pa` into the guest's system space, the
/// way MmMapIoSpace does; returns the guest address standing for `pa`, or 0 if it cannot be mapped
/// (what MmMapIoSpace returns then).
///
/// Guest RAM (the window's guest-physical range, [`dbt::GuestMemory::phys_to_virt`]) is already
/// mapped: its window address is returned. Anything else becomes a fresh MMIO mapping (see
/// [`dbt::GuestMemory::alloc_mmio`]): guest accesses there go to the machine's MMIO backend (the
/// PCI bus, which routes them to the device whose memory BAR claims the address; an address no
/// device decodes reads as all ones). A range that is partly RAM cannot be mapped.
pub fn map_io_space(k: &mut Kernel, pa: u64, len: u64) -> KResult<u64> {
    let Some(last) = pa.checked_add(len.max(1) - 1) else {
        tracing::warn!("MmMapIoSpace({pa:#x}, {len:#x}): range wraps around");
        return Ok(0);
    };
    if len == 0 {
        tracing::warn!("MmMapIoSpace({pa:#x}, 0): empty range");
        return Ok(0);
    }
    let mem = &mut k.m.mem;
    let ram_first = dbt::PHYS_BASE;
    let ram_last = dbt::PHYS_BASE + (mem.size() - 1);
    match (mem.phys_to_virt(pa), mem.phys_to_virt(last)) {
        (Some(va), Some(_)) => return Ok(va),
        _ if pa <= ram_last && last >= ram_first => {
            tracing::warn!(
                "MmMapIoSpace({pa:#x}, {len:#x}): range is partly guest RAM; not mapped"
            );
            return Ok(0);
        }
        _ => {}
    }
    match mem.alloc_mmio(len, pa) {
        Ok(va) => Ok(va),
        Err(e) => {
            tracing::warn!("MmMapIoSpace({pa:#x}, {len:#x}): no guest address space left ({e})");
            Ok(0)
        }
    }
}

/// Undoes [`map_io_space`] (MmUnmapIoSpace): unmaps an MMIO mapping; a mapping of guest RAM
/// (which [`map_io_space`] did not create) stays. Anything else is reported and ignored.
pub fn unmap_io_space(k: &mut Kernel, va: u64, len: u64) -> KResult<()> {
    let mem = &mut k.m.mem;
    if mem.mmio_address(va).is_some() {
        if let Err(e) = mem.unmap_mmio(va, len.max(1)) {
            tracing::warn!(
                "MmUnmapIoSpace({va:#x}, {len:#x}): range is not all mapped I/O space ({e}); \
                 nothing unmapped"
            );
        }
    } else if mem.virt_to_phys(va).is_none() || !mem.is_mapped(va, len.max(1)) {
        tracing::warn!(
            "MmUnmapIoSpace({va:#x}, {len:#x}): not an address MmMapIoSpace returned; ignored"
        );
    }
    Ok(())
}

/// MmMapIoSpace(PhysicalAddress, NumberOfBytes, CacheType): see [`map_io_space`].
pub fn mm_map_io_space(k: &mut Kernel, pa: Quad, len: u64, _cache: u32) -> KResult<u64> {
    map_io_space(k, pa.0, len)
}

/// MmGetSystemRoutineAddress(SystemRoutineName): an implemented ntoskrnl.exe or hal.dll export,
/// or NULL (never a trap: drivers probe with it and fall back).
pub fn get_system_routine_address(k: &mut Kernel, name: u64) -> KResult<u64> {
    let name = rtl::read_unicode_string(k, name)?;
    for module in ["ntoskrnl.exe", "hal.dll"] {
        if k.find_export(module, &name).is_some() {
            return Ok(k.bind_import(module, &name));
        }
    }
    Ok(0)
}

/// READ_REGISTER_UCHAR(Register): a device register read (MMIO, or RAM), as the guest's load.
pub fn read_register_uchar(k: &mut Kernel, register: u64) -> KResult<u8> {
    Ok(k.m.read_mem(register, 1)? as u8)
}

/// READ_REGISTER_USHORT(Register).
pub fn read_register_ushort(k: &mut Kernel, register: u64) -> KResult<u16> {
    Ok(k.m.read_mem(register, 2)? as u16)
}

/// READ_REGISTER_ULONG(Register).
pub fn read_register_ulong(k: &mut Kernel, register: u64) -> KResult<u32> {
    Ok(k.m.read_mem(register, 4)? as u32)
}

/// WRITE_REGISTER_UCHAR(Register, Value).
pub fn write_register_uchar(k: &mut Kernel, register: u64, value: u8) -> KResult<()> {
    Ok(k.m.write_mem(register, 1, u64::from(value))?)
}

/// WRITE_REGISTER_USHORT(Register, Value).
pub fn write_register_ushort(k: &mut Kernel, register: u64, value: u16) -> KResult<()> {
    Ok(k.m.write_mem(register, 2, u64::from(value))?)
}

/// WRITE_REGISTER_ULONG(Register, Value).
pub fn write_register_ulong(k: &mut Kernel, register: u64, value: u32) -> KResult<()> {
    Ok(k.m.write_mem(register, 4, u64::from(value))?)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall MmSizeOfMdl => size_of_mdl(base: u64, length: u64);
    stdcall IoAllocateMdl => allocate_mdl(virtual_address: u64, length: u32, secondary_buffer: bool, charge_quota: bool, irp: u64) @ irql::DISPATCH;
    stdcall IoFreeMdl => io_free_mdl(mdl: u64) @ irql::DISPATCH;
    stdcall MmBuildMdlForNonPagedPool => build_mdl_for_non_paged_pool(mdl: u64) @ irql::DISPATCH;
    stdcall MmProbeAndLockPages => probe_and_lock_pages(mdl: u64, access_mode: u8, operation: u32) @ irql::PROBE_AND_LOCK;
    stdcall MmUnlockPages => unlock_pages(mdl: u64) @ irql::UNLOCK_PAGES;
    stdcall MmMapLockedPagesSpecifyCache => map_locked_pages_specify_cache(mdl: u64, access_mode: u8, cache_type: u32, requested_address: u64, bug_check_on_failure: u32, priority: u32) @ irql::MAP_LOCKED_PAGES;
    stdcall MmMapLockedPages => map_locked_pages(mdl: u64, access_mode: u8);
    stdcall MmUnmapLockedPages => unmap_locked_pages(base_address: u64, mdl: u64) @ irql::UNMAP_LOCKED_PAGES;
    stdcall MmIsAddressValid => is_address_valid(virtual_address: u64);
    stdcall MmGetPhysicalAddress => get_physical_address(base_address: u64);
    stdcall MmAllocateContiguousMemory => allocate_contiguous_memory(number_of_bytes: u64, highest_acceptable_address: Quad) @ irql::PASSIVE;
    stdcall MmFreeContiguousMemory => free_contiguous_memory(base_address: u64);
    stdcall MmAllocateContiguousMemorySpecifyCache => allocate_contiguous_memory_specify_cache(number_of_bytes: u64, lowest_acceptable_address: Quad, highest_acceptable_address: Quad, boundary_address_multiple: Quad, cache_type: u32) @ irql::DISPATCH;
    stdcall MmFreeContiguousMemorySpecifyCache => free_contiguous_memory_specify_cache(base_address: u64, number_of_bytes: u64, cache_type: u32);
    stdcall MmGetSystemRoutineAddress => get_system_routine_address(system_routine_name: u64) @ irql::PASSIVE;
    stdcall MmMapIoSpace => mm_map_io_space(physical_address: Quad, number_of_bytes: u64, cache_type: u32) @ irql::MAP_IO_SPACE;
    stdcall MmUnmapIoSpace => unmap_io_space(base_address: u64, number_of_bytes: u64) @ irql::UNMAP_IO_SPACE;
    stdcall READ_REGISTER_UCHAR => read_register_uchar(register: u64);
    stdcall READ_REGISTER_USHORT => read_register_ushort(register: u64);
    stdcall READ_REGISTER_ULONG => read_register_ulong(register: u64);
    stdcall WRITE_REGISTER_UCHAR => write_register_uchar(register: u64, value: u8);
    stdcall WRITE_REGISTER_USHORT => write_register_ushort(register: u64, value: u16);
    stdcall WRITE_REGISTER_ULONG => write_register_ulong(register: u64, value: u32);
];

#[cfg(test)]
mod io_space_tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use dbt::iced_x86::code_asm::*;
    use dbt::{Arch, Mmio, Prot};

    use super::*;
    use crate::MODULE;

    /// One access: bus address, size, the value written (`None` for a read).
    type Access = (u64, u8, Option<u64>);

    /// Logs every access; reads return the bus address's low 32 bits.
    #[derive(Clone, Default)]
    struct Log(Rc<RefCell<Vec<Access>>>);

    impl Mmio for Log {
        fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
            self.0.borrow_mut().push((addr, size, None));
            addr & 0xFFFF_FFFF
        }

        fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
            self.0.borrow_mut().push((addr, size, Some(value)));
        }
    }

    const BUS: u64 = 0xFEBF_1010;

    fn map_through_export(k: &mut Kernel, pa: u64, len: u64) -> u64 {
        let export = k.find_export("ntoskrnl.exe", "MmMapIoSpace").unwrap();
        let raw = match k.m.arch() {
            Arch::X86 => vec![pa & 0xFFFF_FFFF, pa >> 32, len, 0],
            Arch::X64 => vec![pa, len, 0],
        };
        (export.func)(k, &raw).unwrap()
    }

    fn io_space(arch: Arch) {
        let mut k = Kernel::new(arch, &[&MODULE]).unwrap();
        k.m.setup_stack(0x1_0000).unwrap();
        let log = Log::default();
        k.m.set_mmio(Box::new(log.clone()));

        // Device memory: a fresh MMIO mapping with the bus address's page offset.
        let va = map_through_export(&mut k, BUS, 0x20);
        assert_ne!(va, 0);
        assert_eq!(va & 0xFFF, BUS & 0xFFF);
        assert_eq!(k.m.mem.mmio_address(va + 4), Some(BUS + 4));
        assert!(is_address_valid(&mut k, va).unwrap());
        // The guest reads and writes device registers through it.
        let x86 = arch == Arch::X86;
        let mut a = CodeAssembler::new(if x86 { 32 } else { 64 }).unwrap();
        if x86 {
            a.mov(ecx, va as u32).unwrap();
            a.mov(dword_ptr(ecx + 8), 0x55AAu32).unwrap();
            a.mov(eax, dword_ptr(ecx + 4)).unwrap();
        } else {
            a.mov(rcx, va).unwrap();
            a.mov(dword_ptr(rcx + 8), 0x55AAu32).unwrap();
            a.mov(eax, dword_ptr(rcx + 4)).unwrap();
        }
        a.ret().unwrap();
        let code = k.m.mem.alloc(0x1000, Prot::READ | Prot::EXEC).unwrap();
        let bytes = a.assemble(code).unwrap();
        k.m.mem.write_bytes(code, &bytes).unwrap();
        let ret = k.call_guest(code, &[]).unwrap();
        assert_eq!(ret & 0xFFFF_FFFF, BUS + 4);
        assert_eq!(
            *log.0.borrow(),
            vec![(BUS + 8, 4, Some(0x55AA)), (BUS + 4, 4, None)]
        );
        // READ_REGISTER_* / WRITE_REGISTER_* reach the device the same way.
        log.0.borrow_mut().clear();
        write_register_ushort(&mut k, va + 2, 0xBEEF).unwrap();
        write_register_uchar(&mut k, va + 1, 0x7F).unwrap();
        write_register_ulong(&mut k, va + 12, 0x1234_5678).unwrap();
        assert_eq!(
            read_register_ulong(&mut k, va + 16).unwrap() as u64,
            BUS + 16
        );
        assert_eq!(
            read_register_ushort(&mut k, va).unwrap() as u64,
            BUS & 0xFFFF
        );
        assert_eq!(
            read_register_uchar(&mut k, va + 1).unwrap() as u64,
            (BUS + 1) & 0xFF
        );
        assert_eq!(
            *log.0.borrow(),
            vec![
                (BUS + 2, 2, Some(0xBEEF)),
                (BUS + 1, 1, Some(0x7F)),
                (BUS + 12, 4, Some(0x1234_5678)),
                (BUS + 16, 4, None),
                (BUS, 2, None),
                (BUS + 1, 1, None),
            ]
        );
        unmap_io_space(&mut k, va, 0x20).unwrap();
        assert_eq!(k.m.mem.mmio_address(va), None);
        assert!(k.m.read_mem(va, 4).is_err());

        // Guest RAM is already mapped: its window address comes back, and unmapping keeps it.
        let ram = k.m.mem.alloc(0x2000, Prot::READ | Prot::WRITE).unwrap();
        let pa = k.m.mem.virt_to_phys(ram).unwrap();
        assert_eq!(map_through_export(&mut k, pa + 0x10, 0x1000), ram + 0x10);
        unmap_io_space(&mut k, ram + 0x10, 0x1000).unwrap();
        assert_eq!(k.m.mem.read_u32(ram + 0x1000), Ok(0));
        // A range that is partly RAM, an empty one and a wrapping one are refused.
        assert_eq!(map_io_space(&mut k, dbt::PHYS_BASE - 8, 16).unwrap(), 0);
        assert_eq!(map_io_space(&mut k, BUS, 0).unwrap(), 0);
        assert_eq!(map_io_space(&mut k, u64::MAX - 4, 16).unwrap(), 0);
        // Unmapping something that is not a mapping is ignored.
        unmap_io_space(&mut k, 0x10, 0x10).unwrap();
    }

    #[test]
    fn map_io_space_x86() {
        io_space(Arch::X86);
    }

    #[test]
    fn map_io_space_x64() {
        io_space(Arch::X64);
    }
}

#[cfg(test)]
mod contiguous_tests {
    use dbt::{Arch, PHYS_BASE};

    use super::*;
    use crate::crt::test_support::Guest;

    fn allocate(g: &mut Guest, size: u64, lowest: u64, highest: u64, boundary: u64) -> u64 {
        let mut args = vec![size];
        for v in [lowest, highest, boundary] {
            args.extend(g.quad(v));
        }
        args.push(1); // MmCached
        g.call("MmAllocateContiguousMemorySpecifyCache", &args)
            .expect("allocate")
    }

    #[test]
    fn blocks_lie_within_the_bounds() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let mut blocks = Vec::new();
            for _ in 0..8 {
                // 12 KiB blocks that must not cross a 16 KiB line: some first-fit places miss.
                let va = allocate(&mut g, 0x3000, 0, 0xFFFF_FFFF, 0x4000);
                assert_ne!(va, 0);
                assert_eq!(va & 0xFFF, 0, "page aligned");
                let pa = g.k.m.mem.virt_to_phys(va).unwrap();
                assert_eq!(pa / 0x4000, (pa + 0x2FFF) / 0x4000, "{pa:#x} crosses");
                blocks.push(va);
            }
            let lowest = PHYS_BASE + 0x80_0000;
            let va = allocate(&mut g, 0x1000, lowest, 0xFFFF_FFFF, 0);
            assert_ne!(va, 0, "found above the lowest acceptable address");
            assert!(g.k.m.mem.virt_to_phys(va).unwrap() >= lowest);
            blocks.push(va);
            assert_eq!(
                allocate(&mut g, 0x1000, 0, 0x00FF_FFFF, 0),
                0,
                "nothing below 16 MiB"
            );
            assert_eq!(allocate(&mut g, 0x3000, 0, u64::MAX, 0x2000), 0);
            assert_eq!(
                allocate(&mut g, 0x1000, 0x1_0000_0000, u64::MAX, 0),
                0,
                "nothing above the window"
            );
            assert_eq!(allocate(&mut g, 0, 0, u64::MAX, 0), 0);
            assert_eq!(
                g.k.pool.tag_usage(CONTIGUOUS_TAG).blocks,
                blocks.len() as u64,
                "the places that missed were given back"
            );
            for va in blocks {
                g.call("MmFreeContiguousMemorySpecifyCache", &[va, 0x3000, 1])
                    .expect("free");
            }
            assert_eq!(g.k.pool.tag_usage(CONTIGUOUS_TAG).blocks, 0);
        }
    }
}
