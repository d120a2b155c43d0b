//! Adapter resources: what the bus gave the device (NdisMQueryAdapterResources; NDIS 6: the
//! AllocatedResources of MiniportInitializeEx), I/O port ranges, shared memory, map registers and
//! scatter/gather DMA for bus-master DMA (NDIS 6: registration and the scatter/gather lists of
//! NET_BUFFERs), PCI configuration space, the NDIS 5 adapter attributes (NdisMSetAttributes /
//! NdisMSetAttributesEx) and the shutdown handler.
//!
//! Port I/O is direct (the port offset a driver gets is the port number; the translator routes
//! in/out to the device). A memory BAR is mapped with NdisMMapIoSpace as MmMapIoSpace maps it:
//! guest accesses there reach the device (MMIO). Shared memory is ordinary guest memory, page
//! aligned, whose bus address is its guest-physical address; so are the address a map register
//! gives an NDIS_BUFFER (NdisMStartBufferPhysicalMapping) and the addresses in scatter/gather
//! lists.

use std::collections::BTreeMap;

use ntoskrnl::export::{Export, Quad};
use ntoskrnl::workitem::{self, QueuedWork, WorkKind};
use ntoskrnl::{ex, export_table, KResult, Kernel};

use crate::miniport::{adapter_mut, at_dispatch, SharedMemory};
use crate::nbl::{mdl_spans, nb_data, no_fault, span_bytes};
use crate::{
    put_status, NdisState, NdisStatus, NDIS_OWNER, NDIS_STATUS_FAILURE,
    NDIS_STATUS_INVALID_PARAMETER, NDIS_STATUS_RESOURCES, NDIS_STATUS_SUCCESS,
};

/// NDIS_STATUS_RESOURCE_CONFLICT.
pub const NDIS_STATUS_RESOURCE_CONFLICT: NdisStatus = 0xC001_001E;
/// NDIS_STATUS_BUFFER_TOO_SHORT.
pub const NDIS_STATUS_BUFFER_TOO_SHORT: NdisStatus = 0xC001_0016;

/// Pool tag of shared memory blocks.
const SHARED_TAG: u32 = u32::from_le_bytes(*b"NDsh");

/// One hardware resource assigned to an adapter (a CM_PARTIAL_RESOURCE_DESCRIPTOR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// CmResourceTypePort: I/O ports `[start, start + length)`.
    Port { start: u64, length: u32 },
    /// CmResourceTypeMemory: a memory-mapped register range at bus address `start`.
    Memory { start: u64, length: u32 },
    /// CmResourceTypeInterrupt: a level-sensitive line.
    Interrupt {
        level: u32,
        vector: u32,
        affinity: u64,
    },
}

/// Access to the adapter's PCI configuration space (the bus driver's side of
/// NdisReadPciSlotInformation / NdisMGetBusData).
pub trait BusConfig {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> usize;
    /// Writes up to `data.len()` bytes at `offset`; returns how many were written.
    fn write(&mut self, offset: u32, data: &[u8]) -> usize;
}

/// CM_RESOURCE_TYPE codes.
const CM_RESOURCE_TYPE_PORT: u8 = 1;
const CM_RESOURCE_TYPE_INTERRUPT: u8 = 2;
const CM_RESOURCE_TYPE_MEMORY: u8 = 3;
/// CM_SHARE_DISPOSITION codes.
const CM_SHARE_DEVICE_EXCLUSIVE: u8 = 1;
const CM_SHARE_SHARED: u8 = 3;
/// CM_RESOURCE_PORT_IO.
const CM_RESOURCE_PORT_IO: u16 = 1;

/// Writes `resources` as a CM_PARTIAL_RESOURCE_LIST (NDIS_RESOURCE_LIST, version 1 revision 1)
/// at `list` if `capacity` bytes suffice; returns the bytes the list needs.
pub fn write_resource_list(
    k: &mut Kernel,
    list: u64,
    capacity: u64,
    resources: &[Resource],
) -> KResult<u64> {
    let l = crate::layout(k);
    let first = l.partial_resource_list_partial_descriptors;
    let needed = first + l.partial_resource_descriptor_size * resources.len().max(1) as u64;
    if capacity < needed {
        return Ok(needed);
    }
    k.m.mem.fill(list, 0, needed)?;
    k.m.mem.write_u16(list, 1)?;
    k.m.mem.write_u16(list + 2, 1)?;
    k.m.mem
        .write_u32(list + l.partial_resource_list_count, resources.len() as u32)?;
    for (i, r) in resources.iter().enumerate() {
        let d = list + first + l.partial_resource_descriptor_size * i as u64;
        let (ty, share, flags) = match r {
            Resource::Port { start, length } => {
                k.m.mem
                    .write_u64(d + l.partial_resource_descriptor_port_start, *start)?;
                k.m.mem
                    .write_u32(d + l.partial_resource_descriptor_port_length, *length)?;
                (
                    CM_RESOURCE_TYPE_PORT,
                    CM_SHARE_DEVICE_EXCLUSIVE,
                    CM_RESOURCE_PORT_IO,
                )
            }
            Resource::Memory { start, length } => {
                k.m.mem
                    .write_u64(d + l.partial_resource_descriptor_memory_start, *start)?;
                k.m.mem
                    .write_u32(d + l.partial_resource_descriptor_memory_length, *length)?;
                (CM_RESOURCE_TYPE_MEMORY, CM_SHARE_DEVICE_EXCLUSIVE, 0)
            }
            Resource::Interrupt {
                level,
                vector,
                affinity,
            } => {
                k.m.mem
                    .write_u32(d + l.partial_resource_descriptor_interrupt_level, *level)?;
                k.m.mem
                    .write_u32(d + l.partial_resource_descriptor_interrupt_vector, *vector)?;
                k.write_ptr(
                    d + l.partial_resource_descriptor_interrupt_affinity,
                    *affinity,
                )?;
                (CM_RESOURCE_TYPE_INTERRUPT, CM_SHARE_SHARED, 0)
            }
        };
        k.m.mem
            .write_u8(d + l.partial_resource_descriptor_type, ty)?;
        k.m.mem
            .write_u8(d + l.partial_resource_descriptor_share_disposition, share)?;
        k.m.mem
            .write_u16(d + l.partial_resource_descriptor_flags, flags)?;
    }
    Ok(needed)
}

/// NdisMQueryAdapterResources(Status, WrapperConfigurationContext, ResourceList, BufferSize):
/// NDIS_STATUS_RESOURCES with the size needed in `*BufferSize` when the buffer is too small.
pub fn query_adapter_resources(
    k: &mut Kernel,
    status: u64,
    context: u64,
    list: u64,
    size_io: u64,
) -> KResult<()> {
    let adapter = k
        .extension::<NdisState>()
        .config_contexts
        .get(&context)
        .and_then(|c| c.adapter);
    let Some(resources) = adapter.and_then(|a| {
        k.extension::<NdisState>()
            .adapters
            .get(&a)
            .map(|a| a.resources.clone())
    }) else {
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    let capacity = u64::from(k.m.mem.read_u32(size_io)?);
    let needed = write_resource_list(k, list, capacity, &resources)?;
    if capacity < needed {
        k.m.mem.write_u32(size_io, needed as u32)?;
        return put_status(k, status, crate::NDIS_STATUS_RESOURCES);
    }
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisMSetAttributesEx(MiniportAdapterHandle, MiniportAdapterContext,
/// CheckForHangTimeInSeconds, AttributeFlags, AdapterType).
pub fn set_attributes_ex(
    k: &mut Kernel,
    handle: u64,
    context: u64,
    check_for_hang_seconds: u32,
    flags: u32,
    interface_type: u32,
) -> KResult<()> {
    let l = crate::layout(k);
    k.write_ptr(handle + l.miniport_block_miniport_adapter_context, context)?;
    if let Some(a) = adapter_mut(k, handle) {
        a.context = context;
        a.attribute_flags = flags;
        a.interface_type = interface_type;
        if check_for_hang_seconds != 0 {
            a.check_for_hang_seconds = check_for_hang_seconds;
        }
    }
    Ok(())
}

/// NdisMSetAttributes(MiniportAdapterHandle, MiniportAdapterContext, BusMaster, AdapterType).
pub fn set_attributes(
    k: &mut Kernel,
    handle: u64,
    context: u64,
    bus_master: bool,
    interface_type: u32,
) -> KResult<()> {
    let flags = if bus_master {
        crate::miniport::NDIS_ATTRIBUTE_BUS_MASTER
    } else {
        0
    };
    set_attributes_ex(k, handle, context, 0, flags, interface_type)
}

/// NdisMRegisterIoPortRange(PortOffset, MiniportAdapterHandle, InitialPort, NumberOfPorts): the
/// range must lie in one of the adapter's port resources; the offset is the port number itself.
pub fn register_io_port_range(
    k: &mut Kernel,
    offset_out: u64,
    handle: u64,
    first: u32,
    count: u32,
) -> KResult<NdisStatus> {
    let Some(a) = adapter_mut(k, handle) else {
        return Ok(NDIS_STATUS_FAILURE);
    };
    let (lo, hi) = (u64::from(first), u64::from(first) + u64::from(count));
    let inside = a.resources.iter().any(|r| {
        matches!(*r, Resource::Port { start, length } if lo >= start && hi <= start + u64::from(length))
    });
    if !inside || count == 0 {
        tracing::warn!(target: "ica::ndis", "{}: NdisMRegisterIoPortRange {first:#x}+{count:#x} is outside the adapter's ports", a.name);
        return Ok(NDIS_STATUS_RESOURCE_CONFLICT);
    }
    a.port_ranges.push((first, count));
    k.write_ptr(offset_out, u64::from(first))?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMDeregisterIoPortRange(MiniportAdapterHandle, InitialPort, NumberOfPorts, PortOffset).
pub fn deregister_io_port_range(
    k: &mut Kernel,
    handle: u64,
    first: u32,
    count: u32,
    _offset: u64,
) -> KResult<()> {
    if let Some(a) = adapter_mut(k, handle) {
        if let Some(i) = a.port_ranges.iter().position(|&r| r == (first, count)) {
            a.port_ranges.swap_remove(i);
        }
    }
    Ok(())
}

/// NdisMAllocateSharedMemory(MiniportAdapterHandle, Length, Cached, VirtualAddress,
/// PhysicalAddress): page-aligned memory a bus master reaches at the returned physical address.
/// NULL on failure.
pub fn allocate_shared_memory(
    k: &mut Kernel,
    handle: u64,
    length: u32,
    _cached: bool,
    va_out: u64,
    pa_out: u64,
) -> KResult<()> {
    let owner = k.caller_image();
    let (va, pa) = allocate_shared(k, handle, length, owner)?.unwrap_or((0, 0));
    k.write_ptr(va_out, va)?;
    Ok(k.m.mem.write_u64(pa_out, pa)?)
}

/// Shared memory of `length` bytes for adapter `handle`, charged to `owner`: (virtual, physical
/// address), or None if the adapter may not have it.
fn allocate_shared(
    k: &mut Kernel,
    handle: u64,
    length: u32,
    owner: String,
) -> KResult<Option<(u64, u64)>> {
    let usable = match adapter_mut(k, handle) {
        // NDIS 6 hands out shared memory only after NdisMRegisterScatterGatherDma.
        Some(a) if a.is_ndis6() && a.sg_dma.is_none() => {
            tracing::warn!(target: "ica::ndis", "{}: NdisMAllocateSharedMemory before NdisMRegisterScatterGatherDma", a.name);
            false
        }
        Some(_) => length != 0,
        None => false,
    };
    if !usable {
        return Ok(None);
    }
    // Page-sized requests come from whole pages, so the block is page aligned.
    let va = ex::allocate(k, u64::from(length).max(0x1000), SHARED_TAG, owner)?;
    k.m.mem.fill(va, 0, u64::from(length))?;
    let pa = k.m.mem.virt_to_phys(va).unwrap_or(0);
    if let Some(a) = adapter_mut(k, handle) {
        a.shared_memory.insert(va, SharedMemory { length, pa });
    }
    Ok(Some((va, pa)))
}

/// An NdisMAllocateSharedMemoryAsync waiting for its completion.
#[derive(Debug, Clone)]
pub struct AsyncAllocation {
    adapter: u64,
    length: u32,
    context: u64,
    owner: String,
}

/// NdisMAllocateSharedMemoryAsync(MiniportAdapterHandle, Length, Cached, Context): NDIS_STATUS_PENDING;
/// later, at PASSIVE_LEVEL from a system work item, NDIS allocates the memory and calls the
/// miniport's MiniportAllocateComplete(MiniportAdapterContext, VirtualAddress, &PhysicalAddress,
/// Length, Context) (a NULL VirtualAddress if it could not). NDIS_STATUS_FAILURE for a miniport
/// without that handler (NDIS 5 only).
pub fn allocate_shared_memory_async(
    k: &mut Kernel,
    handle: u64,
    length: u32,
    _cached: bool,
    context: u64,
) -> KResult<NdisStatus> {
    let has_handler = adapter_mut(k, handle)
        .and_then(|a| a.ndis5_chars())
        .is_some_and(|c| c.handler(crate::Handler::AllocateComplete) != 0);
    if !has_handler {
        tracing::warn!(target: "ica::ndis", "NdisMAllocateSharedMemoryAsync for {handle:#x}: not an NDIS 5 adapter with an AllocateCompleteHandler");
        return Ok(NDIS_STATUS_FAILURE);
    }
    let owner = k.caller_image();
    let item = crate::alloc_handle(k, b"NDaa")?;
    k.extension::<NdisState>().async_allocations.insert(
        item,
        AsyncAllocation {
            adapter: handle,
            length,
            context,
            owner,
        },
    );
    let routine = k.host_function(&ASYNC_COMPLETE[0]);
    workitem::queue_work(
        k,
        QueuedWork {
            item,
            routine,
            args: vec![item],
            kind: WorkKind::Host,
        },
    )?;
    Ok(crate::miniport::NDIS_STATUS_PENDING)
}

/// The work item of an NdisMAllocateSharedMemoryAsync: allocates, calls MiniportAllocateComplete.
/// An adapter halted meanwhile gets nothing.
pub fn complete_async_allocation(k: &mut Kernel, item: u64) -> KResult<()> {
    let Some(req) = k.extension::<NdisState>().async_allocations.remove(&item) else {
        return Ok(());
    };
    ex::free(k, item, None)?;
    let Some((context, handler)) = adapter_mut(k, req.adapter).and_then(|a| {
        let chars = a.ndis5_chars()?;
        Some((a.context, chars.handler(crate::Handler::AllocateComplete)))
    }) else {
        return Ok(());
    };
    let (va, pa) = allocate_shared(k, req.adapter, req.length, req.owner)?.unwrap_or((0, 0));
    let pa_block = crate::alloc_handle(k, b"NDap")?;
    k.m.mem.write_u64(pa_block, pa)?;
    let called = k.call_guest(
        handler,
        &[context, va, pa_block, u64::from(req.length), req.context],
    );
    ex::free(k, pa_block, None)?;
    called.map(|_| ())
}

/// NDIS's work routine for NdisMAllocateSharedMemoryAsync (not an export).
static ASYNC_COMPLETE: &[Export] = export_table![
    stdcall ndisMAllocateComplete => complete_async_allocation(item: u64);
];

/// NdisMFreeSharedMemory(MiniportAdapterHandle, Length, Cached, VirtualAddress, PhysicalAddress).
pub fn free_shared_memory(
    k: &mut Kernel,
    handle: u64,
    length: u32,
    _cached: bool,
    va: u64,
    pa: Quad,
) -> KResult<()> {
    let Some(a) = adapter_mut(k, handle) else {
        return Ok(());
    };
    match a.shared_memory.remove(&va) {
        Some(m) if m.length == length && m.pa == pa.0 => ex::free(k, va, None),
        Some(m) => {
            let name = a.name.clone();
            a.shared_memory.insert(va, m);
            Err(ntoskrnl::KernelError::bug_check(
                0xC4,
                format!(
                    "{name}: NdisMFreeSharedMemory({va:#x}, length {length}, pa {:#x}) does not match the allocation (length {}, pa {:#x})",
                    pa.0, m.length, m.pa
                ),
            ))
        }
        None => Err(ntoskrnl::KernelError::bug_check(
            0xC4,
            format!("NdisMFreeSharedMemory of {va:#x}, which is not shared memory of this adapter"),
        )),
    }
}

/// NdisMAllocateMapRegisters(MiniportAdapterHandle, DmaChannel, DmaSize, BaseMapRegistersNeeded,
/// MaximumPhysicalMapping): every guest page is bus addressable, so map registers are bookkeeping:
/// how many there are and how many bytes one may map.
pub fn allocate_map_registers(
    k: &mut Kernel,
    handle: u64,
    _channel: u32,
    _dma_size: u8,
    count: u32,
    max_mapping: u32,
) -> KResult<NdisStatus> {
    match adapter_mut(k, handle) {
        Some(a) => {
            a.map_registers = count.max(1);
            a.max_physical_mapping = max_mapping;
            Ok(NDIS_STATUS_SUCCESS)
        }
        None => Ok(NDIS_STATUS_FAILURE),
    }
}

/// NdisMFreeMapRegisters(MiniportAdapterHandle).
pub fn free_map_registers(k: &mut Kernel, handle: u64) -> KResult<()> {
    if let Some(a) = adapter_mut(k, handle) {
        a.map_registers = 0;
        a.max_physical_mapping = 0;
    }
    Ok(())
}

/// The physically contiguous runs of guest memory `[va, va + len)`, as (bus address, length),
/// split where consecutive pages are not physically adjacent; `None` if some page is not guest
/// RAM (unmapped, or mapped device memory).
fn physical_runs(k: &Kernel, va: u64, len: u32) -> Option<Vec<(u64, u32)>> {
    let mut runs: Vec<(u64, u32)> = Vec::new();
    let (mut at, end) = (va, va + u64::from(len));
    while at < end {
        let chunk = (u64::from(PAGE) - (at & u64::from(PAGE - 1))).min(end - at);
        let pa = k.m.mem.virt_to_phys(at)?;
        if !k.m.mem.is_mapped(at, chunk) || k.m.mem.mmio_address(at).is_some() {
            return None;
        }
        match runs.last_mut() {
            Some((start, n)) if *start + u64::from(*n) == pa => *n += chunk as u32,
            _ => runs.push((pa, chunk as u32)),
        }
        at += chunk;
    }
    Some(runs)
}

/// NdisMStartBufferPhysicalMapping(MiniportAdapterHandle, Buffer, PhysicalMapRegister,
/// WriteToDevice, PhysicalAddressArray, ArraySize): fills the caller's NDIS_PHYSICAL_ADDRESS_UNIT
/// array with the bus addresses of the buffer's memory, one element per physically contiguous
/// run, and marks the map register in use until NdisMCompleteBufferPhysicalMapping. Guest memory
/// is cache coherent with the device, so WriteToDevice needs no flush. A register the adapter
/// did not allocate, a buffer larger than MaximumPhysicalMapping or not in guest RAM maps
/// nothing (`*ArraySize` = 0) and is recorded as a driver bug.
pub fn start_buffer_physical_mapping(
    k: &mut Kernel,
    handle: u64,
    buffer: u64,
    register: u32,
    _write_to_device: bool,
    array: u64,
    size_out: u64,
) -> KResult<()> {
    let (va, len) = crate::packet::buffer_extent(k, buffer)?;
    let runs = physical_runs(k, va, len);
    let Some(a) = adapter_mut(k, handle) else {
        tracing::warn!(target: "ica::ndis", "NdisMStartBufferPhysicalMapping with {handle:#x}, which is not an adapter handle");
        return Ok(k.m.mem.write_u32(size_out, 0)?);
    };
    let problem = if register >= a.map_registers {
        Some(format!(
            "map register {register} of the {} allocated",
            a.map_registers
        ))
    } else if len > a.max_physical_mapping {
        Some(format!(
            "{len} bytes, more than the MaximumPhysicalMapping of {}",
            a.max_physical_mapping
        ))
    } else if runs.is_none() {
        Some(format!(
            "{len} bytes at {va:#x}, which is not all guest RAM"
        ))
    } else {
        None
    };
    let runs = match (problem, runs) {
        (None, Some(runs)) => runs,
        (problem, _) => {
            let what = problem.unwrap_or_default();
            a.findings.push(format!(
                "{}: NdisMStartBufferPhysicalMapping of buffer {buffer:#x}: {what}; nothing mapped",
                a.name
            ));
            return Ok(k.m.mem.write_u32(size_out, 0)?);
        }
    };
    if let Some(old) = a.physical_mappings.insert(register, buffer) {
        a.findings.push(format!(
            "{}: map register {register} mapped buffer {buffer:#x} while still mapping {old:#x}",
            a.name
        ));
    }
    let l = crate::layout(k);
    for (i, (pa, n)) in runs.iter().enumerate() {
        let e = array + i as u64 * l.physical_address_unit_size;
        k.m.mem
            .write_u64(e + l.physical_address_unit_physical_address, *pa)?;
        k.m.mem.write_u32(e + l.physical_address_unit_length, *n)?;
    }
    Ok(k.m.mem.write_u32(size_out, runs.len() as u32)?)
}

/// NdisMCompleteBufferPhysicalMapping(MiniportAdapterHandle, Buffer, PhysicalMapRegister): the map
/// register is free again. Completing a register that does not map `Buffer` is recorded as a
/// driver bug.
pub fn complete_buffer_physical_mapping(
    k: &mut Kernel,
    handle: u64,
    buffer: u64,
    register: u32,
) -> KResult<()> {
    let Some(a) = adapter_mut(k, handle) else {
        tracing::warn!(target: "ica::ndis", "NdisMCompleteBufferPhysicalMapping with {handle:#x}, which is not an adapter handle");
        return Ok(());
    };
    match a.physical_mappings.get(&register) {
        Some(&b) if b == buffer => {
            a.physical_mappings.remove(&register);
        }
        other => {
            let what = match other {
                Some(b) => format!("it maps buffer {b:#x}"),
                None => "it maps nothing".to_string(),
            };
            a.findings.push(format!(
                "{}: NdisMCompleteBufferPhysicalMapping of buffer {buffer:#x} on map register {register}, but {what}",
                a.name
            ));
        }
    }
    Ok(())
}

/// NdisMMapIoSpace(VirtualAddress, MiniportAdapterHandle, PhysicalAddress, Length): maps device
/// memory that lies in one of the adapter's memory resources (MmMapIoSpace); guest accesses there
/// reach the device. NDIS_STATUS_RESOURCE_CONFLICT for a range outside them,
/// NDIS_STATUS_RESOURCES if no guest address space is left.
pub fn map_io_space(
    k: &mut Kernel,
    va_out: u64,
    handle: u64,
    pa: Quad,
    length: u32,
) -> KResult<NdisStatus> {
    k.write_ptr(va_out, 0)?;
    let Some(a) = adapter_mut(k, handle) else {
        return Ok(NDIS_STATUS_FAILURE);
    };
    let (lo, hi) = (pa.0, pa.0.saturating_add(u64::from(length)));
    let inside = a.resources.iter().any(|r| {
        matches!(*r, Resource::Memory { start, length: size } if lo >= start && hi <= start + u64::from(size))
    });
    if !inside || length == 0 {
        tracing::warn!(target: "ica::ndis", "{}: NdisMMapIoSpace {lo:#x}+{length:#x} is outside the adapter's memory resources", a.name);
        return Ok(NDIS_STATUS_RESOURCE_CONFLICT);
    }
    let va = ntoskrnl::mm::map_io_space(k, pa.0, u64::from(length))?;
    if va == 0 {
        return Ok(crate::NDIS_STATUS_RESOURCES);
    }
    if let Some(a) = adapter_mut(k, handle) {
        a.io_mappings.insert(va, (pa.0, length));
    }
    k.write_ptr(va_out, va)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMUnmapIoSpace(MiniportAdapterHandle, VirtualAddress, Length): undoes NdisMMapIoSpace. An
/// address the adapter did not map is reported and ignored.
pub fn unmap_io_space(k: &mut Kernel, handle: u64, va: u64, length: u32) -> KResult<()> {
    let Some(a) = adapter_mut(k, handle) else {
        tracing::warn!(target: "ica::ndis", "NdisMUnmapIoSpace with {handle:#x}, which is not an adapter handle");
        return Ok(());
    };
    let Some((pa, mapped)) = a.io_mappings.remove(&va) else {
        tracing::warn!(target: "ica::ndis", "{}: NdisMUnmapIoSpace({va:#x}), which NdisMMapIoSpace did not return; ignored", a.name);
        return Ok(());
    };
    if mapped != length {
        tracing::warn!(target: "ica::ndis", "{}: NdisMUnmapIoSpace({va:#x}, {length:#x}) of {pa:#x}+{mapped:#x}: length differs; unmapping all of it", a.name);
    }
    ntoskrnl::mm::unmap_io_space(k, va, u64::from(mapped))
}

/// NdisMInitializeScatterGatherDma(MiniportAdapterHandle, Dma64BitAddresses,
/// MaximumPhysicalMapping).
pub fn initialize_scatter_gather_dma(
    k: &mut Kernel,
    handle: u64,
    _dma64: bool,
    _max_mapping: u32,
) -> KResult<NdisStatus> {
    match adapter_mut(k, handle) {
        Some(a) => {
            a.scatter_gather = true;
            Ok(NDIS_STATUS_SUCCESS)
        }
        None => Ok(NDIS_STATUS_FAILURE),
    }
}

/// NDIS_OBJECT_TYPE_SG_DMA_DESCRIPTION.
const OBJECT_TYPE_SG_DMA_DESCRIPTION: u8 = 0x83;
/// Guest page size.
const PAGE: u32 = 0x1000;

/// NdisMRegisterScatterGatherDma(MiniportAdapterHandle, DmaDescription, NdisMiniportDmaHandle)
/// (NDIS 6): records the registration and reports in ScatterGatherListSize the size of a
/// SCATTER_GATHER_LIST for a MaximumPhysicalMapping-byte buffer. Every guest page is bus
/// addressable, so there is nothing else to set up.
pub fn register_scatter_gather_dma(
    k: &mut Kernel,
    handle: u64,
    description: u64,
    dma_out: u64,
) -> KResult<NdisStatus> {
    let l = crate::layout6(k);
    let (kind, _, size) = crate::ndis6::object_header(k, description)?;
    if kind != OBJECT_TYPE_SG_DMA_DESCRIPTION || size < l.sg_dma_scatter_gather_list_size + 4 {
        tracing::warn!(target: "ica::ndis", "NdisMRegisterScatterGatherDma: bad description header (type {kind:#x}, size {size})");
        return Ok(crate::NDIS_STATUS_INVALID_PARAMETER);
    }
    let max =
        k.m.mem
            .read_u32(description + l.sg_dma_maximum_physical_mapping)?;
    let process_sg_list = k.read_ptr(description + l.sg_dma_process_sg_list_handler)?;
    match adapter_mut(k, handle) {
        Some(a) if a.sg_dma.is_none() => {}
        Some(a) => {
            tracing::warn!(target: "ica::ndis", "{}: NdisMRegisterScatterGatherDma twice", a.name);
            return Ok(NDIS_STATUS_FAILURE);
        }
        None => return Ok(NDIS_STATUS_FAILURE),
    }
    let elements = u64::from(max.div_ceil(PAGE) + 1);
    let list = l.sg_list_elements + elements * l.sg_element_size;
    k.m.mem
        .write_u32(description + l.sg_dma_scatter_gather_list_size, list as u32)?;
    let dma = crate::alloc_handle(k, b"NDdm")?;
    if let Some(a) = adapter_mut(k, handle) {
        a.sg_dma = Some(SgDma {
            handle: dma,
            process_sg_list,
            max_mapping: max,
            lists: BTreeMap::new(),
        });
    }
    k.write_ptr(dma_out, dma)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMDeregisterScatterGatherDma(NdisMiniportDmaHandle). Scatter/gather lists still out are a
/// driver bug, recorded against the adapter (and freed).
pub fn deregister_scatter_gather_dma(k: &mut Kernel, dma: u64) -> KResult<()> {
    let owner = k
        .extension::<NdisState>()
        .adapters
        .values_mut()
        .find(|a| a.sg_dma.as_ref().is_some_and(|d| d.handle == dma));
    match owner {
        Some(a) => {
            let (block, name) = (a.block, a.name.clone());
            let Some(d) = a.sg_dma.take() else {
                return Ok(());
            };
            let leftovers = release_sg_dma(k, d, &name)?;
            if let Some(a) = adapter_mut(k, block) {
                a.findings.extend(leftovers);
            }
            Ok(())
        }
        None => {
            tracing::warn!(target: "ica::ndis", "NdisMDeregisterScatterGatherDma of {dma:#x}, which is not registered");
            Ok(())
        }
    }
}

/// A scatter/gather DMA registration (NdisMRegisterScatterGatherDma) and the scatter/gather
/// lists handed out under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgDma {
    /// The NdisMiniportDmaHandle (an NDIS pool block).
    pub handle: u64,
    /// ProcessSGListHandler (MiniportProcessSGList).
    pub process_sg_list: u64,
    /// MaximumPhysicalMapping: the most bytes one list maps.
    pub max_mapping: u32,
    /// Lists not yet freed, by address.
    pub lists: BTreeMap<u64, SgList>,
}

/// A scatter/gather list NdisMAllocateNetBufferSGList built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SgList {
    /// The NET_BUFFER it maps.
    pub nb: u64,
    /// NDIS allocated its storage (the caller's buffer was NULL or too small).
    pub owned: bool,
}

/// One element of a scatter/gather list: a bus (guest-physical) address and a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SgElement {
    /// Bus address.
    pub address: u64,
    /// Bytes.
    pub length: u32,
}

/// Pool tag of scatter/gather lists NDIS allocates.
const SG_LIST_TAG: u32 = u32::from_le_bytes(*b"NDsg");

/// Frees the lists NDIS allocated under a registration going away and its handle; one line per
/// list never freed (a driver bug). `name` names the adapter.
pub(crate) fn release_sg_dma(k: &mut Kernel, d: SgDma, name: &str) -> KResult<Vec<String>> {
    let mut out = Vec::new();
    for (list, l) in d.lists {
        out.push(format!(
            "{name}: scatter/gather list {list:#x} (NET_BUFFER {:#x}) not freed",
            l.nb
        ));
        if l.owned {
            ex::free(k, list, None)?;
        }
    }
    ex::free(k, d.handle, None)?;
    Ok(out)
}

/// The scatter/gather elements of `nb` as NdisMAllocateNetBufferSGList maps it: the bytes from
/// the start of CurrentMdl through the end of the data (CurrentMdlOffset + DataLength), one
/// element per physically contiguous run within an MDL (a run ends at an MDL's end, and at a page
/// boundary where the next page is not the next physical page). Err: the status for an NB whose
/// data runs past its MDLs or lies outside bus-addressable memory, or that maps more than `max`
/// bytes.
pub fn sg_elements(k: &Kernel, nb: u64, max: u32) -> KResult<Result<Vec<SgElement>, NdisStatus>> {
    let d = nb_data(k, nb)?;
    let total = u64::from(d.offset) + u64::from(d.length);
    let spans = match mdl_spans(k, d.current_mdl, 0, total)? {
        Ok(s) if span_bytes(&s) == total => s,
        Ok(s) => {
            tracing::warn!(target: "ica::ndis", "NdisMAllocateNetBufferSGList: NET_BUFFER {nb:#x} has DataLength {} past CurrentMdlOffset {}, but its MDLs hold {} bytes", d.length, d.offset, span_bytes(&s));
            return Ok(Err(NDIS_STATUS_INVALID_PARAMETER));
        }
        Err(e) => {
            tracing::warn!(target: "ica::ndis", "NdisMAllocateNetBufferSGList: NET_BUFFER {nb:#x}: {e}");
            return Ok(Err(NDIS_STATUS_INVALID_PARAMETER));
        }
    };
    if total > u64::from(max) {
        tracing::warn!(target: "ica::ndis", "NdisMAllocateNetBufferSGList: NET_BUFFER {nb:#x} maps {total} bytes, more than MaximumPhysicalMapping {max}");
        return Ok(Err(NDIS_STATUS_RESOURCES));
    }
    let mut out: Vec<SgElement> = Vec::new();
    for s in spans {
        let (mut va, end) = (s.va, s.va + s.len);
        let mut run: Option<SgElement> = None;
        while va < end {
            let chunk = (u64::from(PAGE) - va % u64::from(PAGE)).min(end - va);
            let Some(pa) = k.m.mem.virt_to_phys(va) else {
                tracing::warn!(target: "ica::ndis", "NdisMAllocateNetBufferSGList: NET_BUFFER {nb:#x} data at {va:#x} is not bus addressable");
                return Ok(Err(NDIS_STATUS_RESOURCES));
            };
            match run.as_mut() {
                Some(r) if r.address + u64::from(r.length) == pa => r.length += chunk as u32,
                _ => {
                    out.extend(run.take());
                    run = Some(SgElement {
                        address: pa,
                        length: chunk as u32,
                    });
                }
            }
            va += chunk;
        }
        out.extend(run);
    }
    Ok(Ok(out))
}

/// NdisMAllocateNetBufferSGList(NdisMiniportDmaHandle, NetBuffer, Context, Flags,
/// ScatterGatherListBuffer, ScatterGatherListBufferSize): builds the SCATTER_GATHER_LIST of the
/// NB's data ([`sg_elements`]) in the caller's buffer if it is large enough, else in storage NDIS
/// allocates, and hands it to MiniportProcessSGList(NULL, NULL, list, Context) at DISPATCH_LEVEL
/// before returning. NDIS_STATUS_RESOURCES when the NB maps more than MaximumPhysicalMapping
/// bytes or memory that is not bus addressable; NDIS_STATUS_INVALID_PARAMETER (and no call) for
/// an unknown DMA handle, a registration without a ProcessSGListHandler, a NULL or bad NB pointer
/// or an NB whose data runs past its MDLs.
pub fn allocate_net_buffer_sg_list(
    k: &mut Kernel,
    dma: u64,
    nb: u64,
    context: u64,
    _flags: u32,
    buffer: u64,
    size: u32,
) -> KResult<NdisStatus> {
    const CALL: &str = "NdisMAllocateNetBufferSGList";
    let Some((block, handler, max)) =
        sg_owner(k, dma).map(|(b, d)| (b, d.process_sg_list, d.max_mapping))
    else {
        tracing::warn!(target: "ica::ndis", "{CALL} with {dma:#x}, which is not a registered NdisMiniportDmaHandle");
        return Ok(NDIS_STATUS_INVALID_PARAMETER);
    };
    if nb == 0 || handler == 0 {
        tracing::warn!(target: "ica::ndis", "{CALL} without a NET_BUFFER, or no ProcessSGListHandler was registered");
        return Ok(NDIS_STATUS_INVALID_PARAMETER);
    }
    let elements = match no_fault(
        CALL,
        Err(NDIS_STATUS_INVALID_PARAMETER),
        sg_elements(k, nb, max),
    )? {
        Ok(e) => e,
        Err(status) => return Ok(status),
    };
    let l = crate::layout6(k);
    let needed = l.sg_list_elements + elements.len() as u64 * l.sg_element_size;
    let owned = buffer == 0 || u64::from(size) < needed;
    let list = if owned {
        ex::allocate(k, needed, SG_LIST_TAG, NDIS_OWNER.into())?
    } else {
        buffer
    };
    let write = |k: &mut Kernel| -> KResult<()> {
        k.m.mem
            .write_u32(list + l.sg_list_number_of_elements, elements.len() as u32)?;
        k.write_ptr(list + l.sg_list_reserved, 0)?;
        for (i, e) in elements.iter().enumerate() {
            let at = list + l.sg_list_elements + i as u64 * l.sg_element_size;
            k.m.mem.write_u64(at + l.sg_element_address, e.address)?;
            k.m.mem.write_u32(at + l.sg_element_length, e.length)?;
            k.write_ptr(at + l.sg_element_reserved, 0)?;
        }
        Ok(())
    };
    if let Err(e) = write(k) {
        if owned {
            ex::free(k, list, None)?;
        }
        return no_fault(CALL, NDIS_STATUS_INVALID_PARAMETER, Err(e));
    }
    let Some(d) = adapter_mut(k, block).and_then(|a| a.sg_dma.as_mut()) else {
        return Ok(NDIS_STATUS_FAILURE);
    };
    if d.lists.insert(list, SgList { nb, owned }).is_some() {
        let what = format!(
            "{CALL}: ScatterGatherListBuffer {list:#x} is already in use by a list not yet freed"
        );
        tracing::warn!(target: "ica::ndis", "{what}");
        if let Some(a) = adapter_mut(k, block) {
            a.findings.push(what);
        }
    }
    at_dispatch(k, |k| k.call_guest(handler, &[0, 0, list, context]))?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// The adapter (handle) whose scatter/gather registration `dma` is, with the registration.
fn sg_owner(k: &mut Kernel, dma: u64) -> Option<(u64, &mut SgDma)> {
    k.extension::<NdisState>()
        .adapters
        .iter_mut()
        .find_map(|(b, a)| {
            a.sg_dma
                .as_mut()
                .filter(|d| d.handle == dma)
                .map(|d| (*b, d))
        })
}

/// NdisMFreeNetBufferSGList(NdisMiniportDmaHandle, pSGL, NetBuffer): frees a list
/// NdisMAllocateNetBufferSGList built. A list that is not out (freed twice) or named with another
/// NB is a driver bug, recorded against the adapter.
pub fn free_net_buffer_sg_list(k: &mut Kernel, dma: u64, list: u64, nb: u64) -> KResult<()> {
    let Some((block, d)) = sg_owner(k, dma) else {
        tracing::warn!(target: "ica::ndis", "NdisMFreeNetBufferSGList with {dma:#x}, which is not a registered NdisMiniportDmaHandle");
        return Ok(());
    };
    let finding = match d.lists.remove(&list) {
        Some(l) => {
            if l.owned {
                ex::free(k, list, None)?;
            }
            (l.nb != nb).then(|| format!("NdisMFreeNetBufferSGList of list {list:#x} with NET_BUFFER {nb:#x}; it maps {:#x}", l.nb))
        }
        None => Some(format!(
            "NdisMFreeNetBufferSGList of {list:#x}, which is not a scatter/gather list in use (freed twice?)"
        )),
    };
    if let Some(what) = finding {
        tracing::warn!(target: "ica::ndis", "{what}");
        if let Some(a) = adapter_mut(k, block) {
            a.findings.push(what);
        }
    }
    Ok(())
}

/// Cache-line size the guest sees (NdisMGetDmaAlignment / NdisGetSharedDataAlignment).
const CACHE_LINE: u32 = 64;

/// NdisMGetDmaAlignment(MiniportAdapterHandle).
pub fn get_dma_alignment(_k: &mut Kernel, _handle: u64) -> KResult<u32> {
    Ok(CACHE_LINE)
}

/// NdisGetSharedDataAlignment().
pub fn get_shared_data_alignment(_k: &mut Kernel) -> KResult<u32> {
    Ok(CACHE_LINE)
}

/// Runs `f` on the adapter's bus-config access and guest buffer `[buffer, buffer + length)`.
fn with_bus(
    k: &mut Kernel,
    handle: u64,
    offset: u32,
    buffer: u64,
    length: u32,
    write: bool,
) -> KResult<u32> {
    let mut data = k.m.mem.read_vec(buffer, length as usize)?;
    let Some(bus) = adapter_mut(k, handle).and_then(|a| a.bus.as_mut()) else {
        return Ok(0);
    };
    let n = if write {
        bus.write(offset, &data)
    } else {
        bus.read(offset, &mut data)
    };
    if !write {
        k.m.mem.write_bytes(buffer, &data[..n])?;
    }
    Ok(n as u32)
}

/// NdisReadPciSlotInformation(NdisAdapterHandle, SlotNumber, Offset, Buffer, Length) -> bytes read.
pub fn read_pci_slot_information(
    k: &mut Kernel,
    handle: u64,
    _slot: u32,
    offset: u32,
    buffer: u64,
    length: u32,
) -> KResult<u32> {
    with_bus(k, handle, offset, buffer, length, false)
}

/// NdisWritePciSlotInformation(NdisAdapterHandle, SlotNumber, Offset, Buffer, Length).
pub fn write_pci_slot_information(
    k: &mut Kernel,
    handle: u64,
    _slot: u32,
    offset: u32,
    buffer: u64,
    length: u32,
) -> KResult<u32> {
    with_bus(k, handle, offset, buffer, length, true)
}

/// The adapter a WrapperConfigurationContext belongs to (MiniportInitialize's), if any.
fn context_adapter(k: &mut Kernel, context: u64) -> Option<u64> {
    k.extension::<NdisState>()
        .config_contexts
        .get(&context)
        .and_then(|c| c.adapter)
}

/// NdisImmediateReadPciSlotInformation(WrapperConfigurationContext, SlotNumber, Offset, Buffer,
/// Length) -> bytes read from the configuration space of the adapter being initialized.
pub fn immediate_read_pci_slot_information(
    k: &mut Kernel,
    context: u64,
    _slot: u32,
    offset: u32,
    buffer: u64,
    length: u32,
) -> KResult<u32> {
    match context_adapter(k, context) {
        Some(a) => with_bus(k, a, offset, buffer, length, false),
        None => Ok(0),
    }
}

/// NdisImmediateWritePciSlotInformation(WrapperConfigurationContext, SlotNumber, Offset, Buffer,
/// Length) -> bytes written.
pub fn immediate_write_pci_slot_information(
    k: &mut Kernel,
    context: u64,
    _slot: u32,
    offset: u32,
    buffer: u64,
    length: u32,
) -> KResult<u32> {
    match context_adapter(k, context) {
        Some(a) => with_bus(k, a, offset, buffer, length, true),
        None => Ok(0),
    }
}

/// NdisMPciAssignResources(MiniportHandle, SlotNumber, AssignedResources): the resources the bus
/// assigned the adapter, as an NDIS_RESOURCE_LIST NDIS owns (freed when the adapter halts);
/// NDIS_STATUS_FAILURE for an adapter on no bus.
pub fn pci_assign_resources(
    k: &mut Kernel,
    handle: u64,
    _slot: u32,
    list_out: u64,
) -> KResult<NdisStatus> {
    let Some(a) = adapter_mut(k, handle) else {
        return Ok(NDIS_STATUS_FAILURE);
    };
    if a.bus.is_none() {
        return Ok(NDIS_STATUS_FAILURE);
    }
    let (resources, old) = (a.resources.clone(), a.assigned_resources.take());
    if let Some(old) = old {
        ex::free(k, old, None)?;
    }
    let size = write_resource_list(k, 0, 0, &resources)?;
    let list = ex::allocate(
        k,
        size,
        u32::from_le_bytes(*b"NDar"),
        crate::NDIS_OWNER.into(),
    )?;
    write_resource_list(k, list, size, &resources)?;
    if let Some(a) = adapter_mut(k, handle) {
        a.assigned_resources = Some(list);
    }
    k.write_ptr(list_out, list)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// PCI_WHICHSPACE_CONFIG.
const PCI_WHICHSPACE_CONFIG: u32 = 0;

/// NdisMGetBusData(MiniportAdapterHandle, WhichSpace, Offset, Buffer, Length) -> bytes read.
pub fn get_bus_data(
    k: &mut Kernel,
    handle: u64,
    space: u32,
    offset: u32,
    buffer: u64,
    length: u32,
) -> KResult<u32> {
    if space != PCI_WHICHSPACE_CONFIG {
        return Ok(0);
    }
    with_bus(k, handle, offset, buffer, length, false)
}

/// NdisMSetBusData(MiniportAdapterHandle, WhichSpace, Offset, Buffer, Length) -> bytes written.
pub fn set_bus_data(
    k: &mut Kernel,
    handle: u64,
    space: u32,
    offset: u32,
    buffer: u64,
    length: u32,
) -> KResult<u32> {
    if space != PCI_WHICHSPACE_CONFIG {
        return Ok(0);
    }
    with_bus(k, handle, offset, buffer, length, true)
}

/// NdisMRegisterAdapterShutdownHandler(MiniportHandle, ShutdownContext, ShutdownHandler).
pub fn register_adapter_shutdown_handler(
    k: &mut Kernel,
    handle: u64,
    context: u64,
    handler: u64,
) -> KResult<()> {
    if let Some(a) = adapter_mut(k, handle) {
        a.shutdown_handler = Some((handler, context));
    }
    Ok(())
}

/// NdisMDeregisterAdapterShutdownHandler(MiniportHandle).
pub fn deregister_adapter_shutdown_handler(k: &mut Kernel, handle: u64) -> KResult<()> {
    if let Some(a) = adapter_mut(k, handle) {
        a.shutdown_handler = None;
    }
    Ok(())
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisMQueryAdapterResources => query_adapter_resources(status: u64, wrapper_configuration_context: u64, resource_list: u64, buffer_size: u64);
    stdcall NdisMSetAttributesEx => set_attributes_ex(miniport_adapter_handle: u64, miniport_adapter_context: u64, check_for_hang_time_in_seconds: u32, attribute_flags: u32, adapter_type: u32);
    stdcall NdisMSetAttributes => set_attributes(miniport_adapter_handle: u64, miniport_adapter_context: u64, bus_master: bool, adapter_type: u32);
    stdcall NdisMRegisterIoPortRange => register_io_port_range(port_offset: u64, miniport_adapter_handle: u64, initial_port: u32, number_of_ports: u32);
    stdcall NdisMDeregisterIoPortRange => deregister_io_port_range(miniport_adapter_handle: u64, initial_port: u32, number_of_ports: u32, port_offset: u64);
    stdcall NdisMAllocateSharedMemory => allocate_shared_memory(miniport_adapter_handle: u64, length: u32, cached: bool, virtual_address: u64, physical_address: u64);
    stdcall NdisMAllocateSharedMemoryAsync => allocate_shared_memory_async(miniport_adapter_handle: u64, length: u32, cached: bool, context: u64);
    stdcall NdisMFreeSharedMemory => free_shared_memory(miniport_adapter_handle: u64, length: u32, cached: bool, virtual_address: u64, physical_address: Quad);
    stdcall NdisMAllocateMapRegisters => allocate_map_registers(miniport_adapter_handle: u64, dma_channel: u32, dma_size: u8, base_map_registers_needed: u32, maximum_physical_mapping: u32);
    stdcall NdisMFreeMapRegisters => free_map_registers(miniport_adapter_handle: u64);
    stdcall NdisMStartBufferPhysicalMapping => start_buffer_physical_mapping(miniport_adapter_handle: u64, buffer: u64, physical_map_register: u32, write_to_device: bool, physical_address_array: u64, array_size: u64);
    stdcall NdisMCompleteBufferPhysicalMapping => complete_buffer_physical_mapping(miniport_adapter_handle: u64, buffer: u64, physical_map_register: u32);
    stdcall NdisMMapIoSpace => map_io_space(virtual_address: u64, miniport_adapter_handle: u64, physical_address: Quad, length: u32);
    stdcall NdisMUnmapIoSpace => unmap_io_space(miniport_adapter_handle: u64, virtual_address: u64, length: u32);
    stdcall NdisMInitializeScatterGatherDma => initialize_scatter_gather_dma(miniport_adapter_handle: u64, dma64_bit_addresses: bool, maximum_physical_mapping: u32);
    stdcall NdisMRegisterScatterGatherDma => register_scatter_gather_dma(miniport_adapter_handle: u64, dma_description: u64, ndis_miniport_dma_handle: u64);
    stdcall NdisMDeregisterScatterGatherDma => deregister_scatter_gather_dma(ndis_miniport_dma_handle: u64);
    stdcall NdisMAllocateNetBufferSGList => allocate_net_buffer_sg_list(ndis_miniport_dma_handle: u64, net_buffer: u64, context: u64, flags: u32, scatter_gather_list_buffer: u64, scatter_gather_list_buffer_size: u32);
    stdcall NdisMFreeNetBufferSGList => free_net_buffer_sg_list(ndis_miniport_dma_handle: u64, p_sgl: u64, net_buffer: u64);
    stdcall NdisMGetDmaAlignment => get_dma_alignment(miniport_adapter_handle: u64);
    stdcall NdisGetSharedDataAlignment => get_shared_data_alignment();
    stdcall NdisReadPciSlotInformation => read_pci_slot_information(ndis_adapter_handle: u64, slot_number: u32, offset: u32, buffer: u64, length: u32);
    stdcall NdisImmediateReadPciSlotInformation => immediate_read_pci_slot_information(wrapper_configuration_context: u64, slot_number: u32, offset: u32, buffer: u64, length: u32);
    stdcall NdisImmediateWritePciSlotInformation => immediate_write_pci_slot_information(wrapper_configuration_context: u64, slot_number: u32, offset: u32, buffer: u64, length: u32);
    stdcall NdisMPciAssignResources => pci_assign_resources(miniport_handle: u64, slot_number: u32, assigned_resources: u64);
    stdcall NdisWritePciSlotInformation => write_pci_slot_information(ndis_adapter_handle: u64, slot_number: u32, offset: u32, buffer: u64, length: u32);
    stdcall NdisMGetBusData => get_bus_data(miniport_adapter_handle: u64, which_space: u32, offset: u32, buffer: u64, length: u32);
    stdcall NdisMSetBusData => set_bus_data(miniport_adapter_handle: u64, which_space: u32, offset: u32, buffer: u64, length: u32);
    stdcall NdisMRegisterAdapterShutdownHandler => register_adapter_shutdown_handler(miniport_handle: u64, shutdown_context: u64, shutdown_handler: u64);
    stdcall NdisMDeregisterAdapterShutdownHandler => deregister_adapter_shutdown_handler(miniport_handle: u64);
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miniport::test_adapter;
    use crate::packet::new_buffer;
    use crate::test_support::{block, kernel, ARCHES};

    const BAR: u64 = 0xFEBF_1000;

    /// 256 bytes of configuration space.
    struct ConfigBytes([u8; 256]);

    impl BusConfig for ConfigBytes {
        fn read(&mut self, offset: u32, buf: &mut [u8]) -> usize {
            let from = (offset as usize).min(256);
            let n = buf.len().min(256 - from);
            buf[..n].copy_from_slice(&self.0[from..from + n]);
            n
        }
        fn write(&mut self, offset: u32, data: &[u8]) -> usize {
            let from = (offset as usize).min(256);
            let n = data.len().min(256 - from);
            self.0[from..from + n].copy_from_slice(&data[..n]);
            n
        }
    }

    #[test]
    fn immediate_slot_access_and_assigned_resources_are_the_adapters_bus() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let resources = vec![Resource::Port {
                start: 0xC000,
                length: 0x100,
            }];
            let a = test_adapter(&mut k, resources.clone());
            let mut config = [0u8; 256];
            config[..4].copy_from_slice(&0x8139_10ECu32.to_le_bytes());
            crate::miniport::adapter_mut(&mut k, a).unwrap().bus =
                Some(Box::new(ConfigBytes(config)));
            let ctx = crate::config::configuration_context_for_key(&mut k, "").unwrap();
            k.extension::<NdisState>()
                .config_contexts
                .get_mut(&ctx)
                .unwrap()
                .adapter = Some(a);
            let buf = block(&mut k, 8);
            assert_eq!(
                immediate_read_pci_slot_information(&mut k, ctx, 0, 0, buf, 4).unwrap(),
                4
            );
            assert_eq!(k.m.mem.read_u32(buf).unwrap(), 0x8139_10EC, "{arch:?}");
            k.m.mem.write_u16(buf, 0x0107).unwrap();
            assert_eq!(
                immediate_write_pci_slot_information(&mut k, ctx, 0, 4, buf, 2).unwrap(),
                2
            );
            assert_eq!(
                read_pci_slot_information(&mut k, a, 0, 4, buf + 4, 2).unwrap(),
                2
            );
            assert_eq!(k.m.mem.read_u16(buf + 4).unwrap(), 0x0107);
            // A context of no adapter reaches no bus.
            let other = crate::config::configuration_context_for_key(&mut k, "").unwrap();
            assert_eq!(
                immediate_read_pci_slot_information(&mut k, other, 0, 0, buf, 4).unwrap(),
                0
            );

            let out = block(&mut k, 8);
            assert_eq!(
                pci_assign_resources(&mut k, a, 0, out).unwrap(),
                NDIS_STATUS_SUCCESS
            );
            let list = k.read_ptr(out).unwrap();
            let l = crate::layout(&k);
            assert_eq!(
                k.m.mem
                    .read_u32(list + l.partial_resource_list_count)
                    .unwrap(),
                1
            );
            let d = list + l.partial_resource_list_partial_descriptors;
            assert_eq!(
                k.m.mem
                    .read_u64(d + l.partial_resource_descriptor_port_start)
                    .unwrap(),
                0xC000
            );
            // Asked again: a new list, the old one freed; the adapter's release frees the last.
            assert_eq!(
                pci_assign_resources(&mut k, a, 0, out).unwrap(),
                NDIS_STATUS_SUCCESS
            );
            let owned = k.pool.bytes_owned_by(NDIS_OWNER);
            crate::miniport::release(&mut k, a).unwrap();
            assert!(k.pool.bytes_owned_by(NDIS_OWNER) < owned, "{arch:?}");
            // An adapter on no bus has no PCI resources to assign.
            let virtual_adapter = test_adapter(&mut k, Vec::new());
            assert_eq!(
                pci_assign_resources(&mut k, virtual_adapter, 0, out).unwrap(),
                NDIS_STATUS_FAILURE
            );
        }
    }

    #[test]
    fn device_memory_maps_inside_the_adapters_memory_resources_only() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let a = test_adapter(
                &mut k,
                vec![Resource::Memory {
                    start: BAR,
                    length: 0x100,
                }],
            );
            let out = block(&mut k, 8);
            assert_eq!(
                map_io_space(&mut k, out, a, Quad(BAR), 0x100).unwrap(),
                NDIS_STATUS_SUCCESS
            );
            let va = k.read_ptr(out).unwrap();
            assert_eq!(
                k.m.mem.mmio_address(va + 0x37),
                Some(BAR + 0x37),
                "{arch:?}"
            );
            // Outside the BAR, empty, or on something that is not an adapter: nothing mapped.
            for (pa, len) in [(BAR + 0x80, 0x100), (BAR - 0x10, 0x20), (BAR, 0)] {
                let s = map_io_space(&mut k, out, a, Quad(pa), len).unwrap();
                assert_eq!(s, NDIS_STATUS_RESOURCE_CONFLICT, "{pa:#x}+{len:#x}");
                assert_eq!(k.read_ptr(out).unwrap(), 0);
            }
            let s = map_io_space(&mut k, out, 0x1234, Quad(BAR), 0x100).unwrap();
            assert_eq!(s, NDIS_STATUS_FAILURE);
            // Unmapping what was not mapped is ignored; the real mapping goes away.
            unmap_io_space(&mut k, a, va + 4, 0x100).unwrap();
            assert!(k.m.mem.mmio_address(va).is_some());
            unmap_io_space(&mut k, a, va, 0x100).unwrap();
            assert_eq!(k.m.mem.mmio_address(va), None);
            // A mapping left at halt is reported and undone.
            map_io_space(&mut k, out, a, Quad(BAR), 0x100).unwrap();
            let va = k.read_ptr(out).unwrap();
            let left = crate::miniport::release(&mut k, a).unwrap();
            assert_eq!(left.len(), 1, "{left:?}");
            assert!(left[0].contains("still mapped"), "{left:?}");
            assert_eq!(k.m.mem.mmio_address(va), None);
        }
    }

    #[test]
    fn map_registers_give_bus_addresses_of_a_buffer_and_check_their_use() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let l = crate::layout(&k);
            let a = test_adapter(&mut k, Vec::new());
            assert_eq!(
                allocate_map_registers(&mut k, a, 0, 2, 2, 0x2000).unwrap(),
                NDIS_STATUS_SUCCESS
            );
            let array = block(&mut k, 4 * l.physical_address_unit_size);
            let count = block(&mut k, 4);
            // A buffer across a page boundary: guest RAM is physically contiguous, so one run.
            let data = block(&mut k, 0x2000);
            let buf = new_buffer(&mut k, data + 0xF00, 0x200).unwrap();
            start_buffer_physical_mapping(&mut k, a, buf, 1, true, array, count).unwrap();
            assert_eq!(k.m.mem.read_u32(count).unwrap(), 1, "{arch:?}");
            let pa =
                k.m.mem
                    .read_u64(array + l.physical_address_unit_physical_address)
                    .unwrap();
            assert_eq!(Some(pa), k.m.mem.virt_to_phys(data + 0xF00));
            assert_eq!(
                k.m.mem
                    .read_u32(array + l.physical_address_unit_length)
                    .unwrap(),
                0x200
            );
            complete_buffer_physical_mapping(&mut k, a, buf, 1).unwrap();

            // Driver bugs map nothing and are recorded: a register not allocated, a buffer
            // larger than MaximumPhysicalMapping, device memory, completing the wrong register.
            let big = new_buffer(&mut k, data, 0x2000 + 1).unwrap();
            let mmio = ntoskrnl::mm::map_io_space(&mut k, BAR, 0x100).unwrap();
            let dev = new_buffer(&mut k, mmio, 0x40).unwrap();
            for (b, register) in [(buf, 2), (big, 0), (dev, 0)] {
                k.m.mem.write_u32(count, 7).unwrap();
                start_buffer_physical_mapping(&mut k, a, b, register, true, array, count).unwrap();
                assert_eq!(k.m.mem.read_u32(count).unwrap(), 0);
            }
            start_buffer_physical_mapping(&mut k, a, buf, 0, true, array, count).unwrap();
            complete_buffer_physical_mapping(&mut k, a, buf, 1).unwrap();
            // Still mapped at halt, and the map registers never freed.
            free_map_registers(&mut k, a).unwrap();
            let left = crate::miniport::release(&mut k, a).unwrap();
            let text = left.join("\n");
            assert_eq!(left.len(), 5, "{text}");
            assert!(text.contains("map register 2 of the 2 allocated"), "{text}");
            assert!(
                text.contains("more than the MaximumPhysicalMapping"),
                "{text}"
            );
            assert!(text.contains("not all guest RAM"), "{text}");
            assert!(
                text.contains("on map register 1, but it maps nothing"),
                "{text}"
            );
            assert!(text.contains("map register 0 still maps"), "{text}");
        }
    }

    /// A NET_BUFFER over `mdl` with CurrentMdl `current` at `offset` for `length` bytes.
    fn nb(k: &mut Kernel, mdl: u64, current: u64, offset: u32, length: u32) -> u64 {
        let l = crate::layout6(k);
        let nb = block(k, l.nb_size);
        k.write_ptr(nb + l.nb_mdl_chain, mdl).unwrap();
        k.write_ptr(nb + l.nb_current_mdl, current).unwrap();
        k.m.mem
            .write_u32(nb + l.nb_current_mdl_offset, offset)
            .unwrap();
        k.m.mem.write_u32(nb + l.nb_data_length, length).unwrap();
        nb
    }

    #[test]
    fn sg_lists_cover_the_nb_from_its_current_mdl_one_run_per_mdl() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let pages = block(&mut k, 0x3000);
            assert_eq!(pages % u64::from(PAGE), 0);
            let pa = |k: &Kernel, va: u64| k.m.mem.virt_to_phys(va).unwrap();
            // Three MDLs: the first is skipped (before CurrentMdl), the second crosses a page
            // boundary (physically contiguous: one run), the third is a buffer of its own.
            let m0 = new_buffer(&mut k, pages, 0x40).unwrap();
            let m1 = new_buffer(&mut k, pages + 0xF00, 0x300).unwrap();
            let m2 = new_buffer(&mut k, pages + 0x2008, 0x100).unwrap();
            k.write_ptr(m0 + k.layout.mdl_next, m1).unwrap();
            k.write_ptr(m1 + k.layout.mdl_next, m2).unwrap();
            // Data from 0x10 into m1, 0x80 bytes into m2: the list maps 0x380 bytes from m1's
            // start (CurrentMdlOffset precedes the data).
            let n = nb(&mut k, m0, m1, 0x10, 0x370);
            let got = sg_elements(&k, n, 0x1000).unwrap().unwrap();
            assert_eq!(
                got,
                [
                    SgElement {
                        address: pa(&k, pages + 0xF00),
                        length: 0x300
                    },
                    SgElement {
                        address: pa(&k, pages + 0x2008),
                        length: 0x80
                    },
                ],
                "{}",
                arch.name()
            );
            // MaximumPhysicalMapping bounds the bytes mapped.
            assert_eq!(
                sg_elements(&k, n, 0x37F).unwrap(),
                Err(NDIS_STATUS_RESOURCES)
            );
            // DataLength past the MDLs.
            let long = nb(&mut k, m0, m1, 0x10, 0x3F1);
            assert_eq!(
                sg_elements(&k, long, 0x1000).unwrap(),
                Err(NDIS_STATUS_INVALID_PARAMETER)
            );
            // Memory the bus cannot reach.
            let outside = (0x1000..0x1000_0000u64)
                .step_by(0x1000)
                .find(|&va| k.m.mem.virt_to_phys(va).is_none())
                .unwrap();
            let far = new_buffer(&mut k, outside, 0x20).unwrap();
            let n = nb(&mut k, far, far, 0, 0x20);
            assert_eq!(
                sg_elements(&k, n, 0x1000).unwrap(),
                Err(NDIS_STATUS_RESOURCES)
            );
            // Without a registration or an NB: a clean status, no call.
            assert_eq!(
                allocate_net_buffer_sg_list(&mut k, 0xD3A, n, 0, 0, 0, 0).unwrap(),
                NDIS_STATUS_INVALID_PARAMETER
            );
            free_net_buffer_sg_list(&mut k, 0xD3A, 0x1234, n).unwrap();
        }
    }
}
