//! NDIS 5 packets and buffers: packet pools, NDIS_PACKET descriptors, and NDIS_BUFFERs (which are
//! MDLs on Windows NT, so buffer pools only count and the mingw `NdisFreeBuffer` macro's direct
//! IoFreeMdl call is legal).
//!
//! A packet is one pool block laid out as Windows lays it out: the NDIS_PACKET with
//! `ProtocolReservedLength` bytes of ProtocolReserved, then (pointer aligned) the
//! NDIS_PACKET_OOB_DATA that `Private.NdisPacketOobOffset` points at (packet status, header size),
//! then the NDIS_PACKET_EXTENSION (per-packet info) that follows the OOB data.

use std::collections::BTreeSet;

use ntoskrnl::export::Export;
use ntoskrnl::{ex, export_table, mm, KResult, Kernel};

use crate::{
    put_status, NdisState, NdisStatus, NDIS_OWNER, NDIS_STATUS_FAILURE, NDIS_STATUS_RESOURCES,
    NDIS_STATUS_SUCCESS,
};

/// Pool tag of packet descriptors.
const PACKET_TAG: u32 = u32::from_le_bytes(*b"NDpk");
/// Pool tag of pool handles.
const POOL_TAG: u32 = u32::from_le_bytes(*b"NDpl");
/// MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL: MappedSystemVa is valid.
const MDL_SYSTEM_VA_FLAGS: u16 = 0x0001 | 0x0004;

/// A packet pool (NdisAllocatePacketPool, NdisAllocatePacketPoolEx).
#[derive(Debug, Clone, Default)]
pub struct PacketPool {
    /// Descriptors the pool hands out before NdisAllocatePacket fails.
    pub capacity: u32,
    /// ProtocolReservedLength of its packets.
    pub protocol_reserved: u32,
    /// Packets currently allocated from it.
    pub allocated: BTreeSet<u64>,
    /// Image that created it (owner of its packets in the pool accounting).
    pub owner: String,
}

/// Bytes of a packet descriptor with `protocol_reserved` bytes of ProtocolReserved, and the
/// offset of its OOB data.
fn packet_geometry(k: &Kernel, protocol_reserved: u32) -> (u64, u64) {
    let l = crate::layout(k);
    let align = k.ptr_size();
    let oob = (l.packet_protocol_reserved + u64::from(protocol_reserved)).div_ceil(align) * align;
    (oob + l.packet_oob_data_size + l.packet_extension_size, oob)
}

/// Allocates and initializes a packet descriptor belonging to pool `pool` (a pool handle, or 0
/// for NDIS's own packets), owned by `owner`.
pub(crate) fn new_packet(
    k: &mut Kernel,
    pool: u64,
    protocol_reserved: u32,
    owner: String,
) -> KResult<u64> {
    let (size, oob) = packet_geometry(k, protocol_reserved);
    let packet = ex::allocate(k, size, PACKET_TAG, owner)?;
    k.m.mem.fill(packet, 0, size)?;
    let l = crate::layout(k);
    k.write_ptr(packet + l.packet_pool, pool)?;
    k.m.mem
        .write_u16(packet + l.packet_ndis_packet_oob_offset, oob as u16)?;
    Ok(packet)
}

/// The OOB data of a packet.
fn oob(k: &Kernel, packet: u64) -> KResult<u64> {
    let l = crate::layout(k);
    Ok(packet + u64::from(k.m.mem.read_u16(packet + l.packet_ndis_packet_oob_offset)?))
}

/// NDIS_GET_PACKET_STATUS.
pub fn packet_status(k: &Kernel, packet: u64) -> KResult<NdisStatus> {
    let l = crate::layout(k);
    Ok(k.m
        .mem
        .read_u32(oob(k, packet)? + l.packet_oob_data_status)?)
}

/// NDIS_SET_PACKET_STATUS.
pub fn set_packet_status(k: &mut Kernel, packet: u64, status: NdisStatus) -> KResult<()> {
    let l = crate::layout(k);
    let at = oob(k, packet)? + l.packet_oob_data_status;
    Ok(k.m.mem.write_u32(at, status)?)
}

/// NDIS_SET_PACKET_HEADER_SIZE.
pub fn set_packet_header_size(k: &mut Kernel, packet: u64, size: u32) -> KResult<()> {
    let l = crate::layout(k);
    let at = oob(k, packet)? + l.packet_oob_data_header_size;
    Ok(k.m.mem.write_u32(at, size)?)
}

/// Chains `buffer` as the only buffer of `packet` (counts become invalid, as the header macros
/// leave them).
pub fn set_single_buffer(k: &mut Kernel, packet: u64, buffer: u64) -> KResult<()> {
    let l = crate::layout(k);
    k.write_ptr(packet + l.packet_head, buffer)?;
    k.write_ptr(packet + l.packet_tail, buffer)?;
    k.m.mem.write_u8(packet + l.packet_valid_counts, 0)?;
    Ok(())
}

/// The system address and byte count an NDIS_BUFFER (MDL) describes.
pub fn buffer_extent(k: &Kernel, mdl: u64) -> KResult<(u64, u32)> {
    let l = &k.layout;
    let flags = k.m.mem.read_u16(mdl + l.mdl_mdl_flags)?;
    let count = k.m.mem.read_u32(mdl + l.mdl_byte_count)?;
    let va = if flags & MDL_SYSTEM_VA_FLAGS != 0 {
        k.read_ptr(mdl + l.mdl_mapped_system_va)?
    } else {
        k.read_ptr(mdl + l.mdl_start_va)? + u64::from(k.m.mem.read_u32(mdl + l.mdl_byte_offset)?)
    };
    Ok((va, count))
}

/// The buffers chained to a packet, first to last. A chain longer than `limit` (a cycle or a
/// corrupted chain) is an error naming the packet.
fn buffers(k: &Kernel, packet: u64) -> KResult<Vec<u64>> {
    const LIMIT: usize = 4096;
    let l = crate::layout(k);
    let mut out = Vec::new();
    let mut b = k.read_ptr(packet + l.packet_head)?;
    while b != 0 {
        if out.len() == LIMIT {
            return Err(ntoskrnl::KernelError::bug_check(
                0x7C,
                format!("NDIS_PACKET {packet:#x} has more than {LIMIT} buffers chained (a cycle?)"),
            ));
        }
        out.push(b);
        b = k.read_ptr(b + k.layout.mdl_next)?;
    }
    Ok(out)
}

/// The bytes a packet describes (its buffers concatenated).
pub fn packet_bytes(k: &Kernel, packet: u64) -> KResult<Vec<u8>> {
    let mut data = Vec::new();
    for b in buffers(k, packet)? {
        let (va, len) = buffer_extent(k, b)?;
        data.extend_from_slice(&k.m.mem.read_vec(va, len as usize)?);
    }
    Ok(data)
}

/// NdisAllocatePacketPool(Status, PoolHandle, NumberOfDescriptors, ProtocolReservedLength).
pub fn allocate_packet_pool(
    k: &mut Kernel,
    status: u64,
    pool_out: u64,
    descriptors: u32,
    protocol_reserved: u32,
) -> KResult<()> {
    allocate_packet_pool_ex(k, status, pool_out, descriptors, 0, protocol_reserved)
}

/// NdisAllocatePacketPoolEx(Status, PoolHandle, NumberOfDescriptors,
/// NumberOfOverflowDescriptors, ProtocolReservedLength).
pub fn allocate_packet_pool_ex(
    k: &mut Kernel,
    status: u64,
    pool_out: u64,
    descriptors: u32,
    overflow: u32,
    protocol_reserved: u32,
) -> KResult<()> {
    let owner = k.caller_image();
    let handle = ex::allocate(k, 16, POOL_TAG, NDIS_OWNER.into())?;
    k.extension::<NdisState>().packet_pools.insert(
        handle,
        PacketPool {
            capacity: descriptors.saturating_add(overflow),
            protocol_reserved,
            allocated: BTreeSet::new(),
            owner,
        },
    );
    k.write_ptr(pool_out, handle)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisFreePacketPool(PoolHandle). Packets still allocated from the pool are a driver bug:
/// reported, and freed with the pool.
pub fn free_packet_pool(k: &mut Kernel, pool: u64) -> KResult<()> {
    let Some(p) = k.extension::<NdisState>().packet_pools.remove(&pool) else {
        tracing::warn!(target: "ica::ndis", "NdisFreePacketPool of unknown pool {pool:#x}");
        return Ok(());
    };
    if !p.allocated.is_empty() {
        tracing::warn!(target: "ica::ndis", "{}: NdisFreePacketPool with {} packets still allocated", p.owner, p.allocated.len());
    }
    for packet in p.allocated {
        ex::free(k, packet, None)?;
    }
    ex::free(k, pool, None)
}

/// NdisAllocatePacket(Status, Packet, PoolHandle) (and NdisDprAllocatePacket):
/// NDIS_STATUS_RESOURCES once the pool's descriptors are all in use.
pub fn allocate_packet(k: &mut Kernel, status: u64, packet_out: u64, pool: u64) -> KResult<()> {
    let Some(p) = k.extension::<NdisState>().packet_pools.get(&pool).cloned() else {
        k.write_ptr(packet_out, 0)?;
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    if p.allocated.len() as u64 >= u64::from(p.capacity) {
        k.write_ptr(packet_out, 0)?;
        return put_status(k, status, NDIS_STATUS_RESOURCES);
    }
    let packet = new_packet(k, pool, p.protocol_reserved, p.owner)?;
    if let Some(p) = k.extension::<NdisState>().packet_pools.get_mut(&pool) {
        p.allocated.insert(packet);
    }
    k.write_ptr(packet_out, packet)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisFreePacket(Packet): back to its pool.
pub fn free_packet(k: &mut Kernel, packet: u64) -> KResult<()> {
    let l = crate::layout(k);
    let pool = k.read_ptr(packet + l.packet_pool)?;
    let known = k
        .extension::<NdisState>()
        .packet_pools
        .get_mut(&pool)
        .is_some_and(|p| p.allocated.remove(&packet));
    if !known {
        return Err(ntoskrnl::KernelError::bug_check(
            0x7C,
            format!(
                "NdisFreePacket of {packet:#x}, which is not an allocated packet of pool {pool:#x}"
            ),
        ));
    }
    ex::free(k, packet, None)
}

/// NdisPacketPoolUsage(PoolHandle): packets in use.
pub fn packet_pool_usage(k: &mut Kernel, pool: u64) -> KResult<u32> {
    Ok(k.extension::<NdisState>()
        .packet_pools
        .get(&pool)
        .map_or(0, |p| p.allocated.len() as u32))
}

/// NdisAllocateBufferPool(Status, PoolHandle, NumberOfDescriptors): on NT a buffer pool is only
/// a handle (buffers are MDLs from the I/O manager).
pub fn allocate_buffer_pool(
    k: &mut Kernel,
    status: u64,
    pool_out: u64,
    _descriptors: u32,
) -> KResult<()> {
    let owner = k.caller_image();
    let handle = ex::allocate(k, 16, POOL_TAG, NDIS_OWNER.into())?;
    k.extension::<NdisState>()
        .buffer_pools
        .insert(handle, owner);
    k.write_ptr(pool_out, handle)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisFreeBufferPool(PoolHandle).
pub fn free_buffer_pool(k: &mut Kernel, pool: u64) -> KResult<()> {
    if k.extension::<NdisState>()
        .buffer_pools
        .remove(&pool)
        .is_some()
    {
        ex::free(k, pool, None)?;
    }
    Ok(())
}

/// An MDL for `len` bytes at `va`, owned by the calling image, with MappedSystemVa valid.
pub(crate) fn new_buffer(k: &mut Kernel, va: u64, len: u32) -> KResult<u64> {
    let mdl = mm::allocate_mdl(k, va, len, false, false, 0)?;
    mm::build_mdl_for_non_paged_pool(k, mdl)?;
    Ok(mdl)
}

/// NdisAllocateBuffer(Status, Buffer, PoolHandle, VirtualAddress, Length).
pub fn allocate_buffer(
    k: &mut Kernel,
    status: u64,
    buffer_out: u64,
    _pool: u64,
    va: u64,
    length: u32,
) -> KResult<()> {
    let mdl = new_buffer(k, va, length)?;
    k.write_ptr(buffer_out, mdl)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisFreeBuffer(Buffer).
pub fn free_buffer(k: &mut Kernel, buffer: u64) -> KResult<()> {
    mm::free_mdl(k, buffer)
}

/// NdisQueryBuffer(Buffer, VirtualAddress OPTIONAL, Length).
pub fn query_buffer(k: &mut Kernel, buffer: u64, va_out: u64, len_out: u64) -> KResult<()> {
    let (va, len) = buffer_extent(k, buffer)?;
    if va_out != 0 {
        k.write_ptr(va_out, va)?;
    }
    Ok(k.m.mem.write_u32(len_out, len)?)
}

/// NdisQueryBufferSafe(Buffer, VirtualAddress OPTIONAL, Length, Priority).
pub fn query_buffer_safe(
    k: &mut Kernel,
    buffer: u64,
    va_out: u64,
    len_out: u64,
    _priority: u32,
) -> KResult<()> {
    query_buffer(k, buffer, va_out, len_out)
}

/// NdisQueryBufferOffset(Buffer, Offset, Length): offset of the data in its first page.
pub fn query_buffer_offset(k: &mut Kernel, buffer: u64, off_out: u64, len_out: u64) -> KResult<()> {
    let l = &k.layout;
    let off = k.m.mem.read_u32(buffer + l.mdl_byte_offset)?;
    let len = k.m.mem.read_u32(buffer + l.mdl_byte_count)?;
    k.m.mem.write_u32(off_out, off)?;
    Ok(k.m.mem.write_u32(len_out, len)?)
}

/// NdisBufferLength(Buffer).
pub fn buffer_length(k: &mut Kernel, buffer: u64) -> KResult<u32> {
    Ok(buffer_extent(k, buffer)?.1)
}

/// NdisBufferVirtualAddress(Buffer).
pub fn buffer_virtual_address(k: &mut Kernel, buffer: u64) -> KResult<u64> {
    Ok(buffer_extent(k, buffer)?.0)
}

/// NdisAdjustBufferLength(Buffer, Length).
pub fn adjust_buffer_length(k: &mut Kernel, buffer: u64, length: u32) -> KResult<()> {
    let at = buffer + k.layout.mdl_byte_count;
    Ok(k.m.mem.write_u32(at, length)?)
}

/// NdisGetBufferPhysicalArraySize(Buffer, ArraySize): pages the buffer spans.
pub fn get_buffer_physical_array_size(k: &mut Kernel, buffer: u64, out: u64) -> KResult<()> {
    let pages = buffer_to_span_pages(k, buffer)?;
    Ok(k.m.mem.write_u32(out, pages)?)
}

/// NDIS_BUFFER_TO_SPAN_PAGES(Buffer): physical pages the buffer spans (1 for an empty buffer).
pub fn buffer_to_span_pages(k: &mut Kernel, buffer: u64) -> KResult<u32> {
    let (va, len) = buffer_extent(k, buffer)?;
    Ok(if len == 0 {
        1
    } else {
        ((va & 0xFFF) + u64::from(len)).div_ceil(0x1000) as u32
    })
}

/// NdisGetFirstBufferFromPacket(Packet, FirstBuffer, FirstBufferVA, FirstBufferLength,
/// TotalBufferLength); NdisGetFirstBufferFromPacketSafe adds a Priority.
pub fn get_first_buffer_from_packet(
    k: &mut Kernel,
    packet: u64,
    first_out: u64,
    va_out: u64,
    len_out: u64,
    total_out: u64,
) -> KResult<()> {
    let chain = buffers(k, packet)?;
    let (first, va, len) = match chain.first() {
        Some(&b) => {
            let (va, len) = buffer_extent(k, b)?;
            (b, va, len)
        }
        None => (0, 0, 0),
    };
    let mut total = 0u32;
    for &b in &chain {
        total = total.wrapping_add(buffer_extent(k, b)?.1);
    }
    k.write_ptr(first_out, first)?;
    k.write_ptr(va_out, va)?;
    k.m.mem.write_u32(len_out, len)?;
    Ok(k.m.mem.write_u32(total_out, total)?)
}

/// The Safe variant's extra Priority argument changes nothing here.
pub fn get_first_buffer_from_packet_safe(
    k: &mut Kernel,
    packet: u64,
    first_out: u64,
    va_out: u64,
    len_out: u64,
    total_out: u64,
    _priority: u32,
) -> KResult<()> {
    get_first_buffer_from_packet(k, packet, first_out, va_out, len_out, total_out)
}

/// NdisUnchainBufferAtFront(Packet, Buffer): removes the first buffer (NULL if none).
pub fn unchain_buffer_at_front(k: &mut Kernel, packet: u64, out: u64) -> KResult<()> {
    let l = crate::layout(k);
    let chain = buffers(k, packet)?;
    let Some(&first) = chain.first() else {
        return k.write_ptr(out, 0);
    };
    let next = chain.get(1).copied().unwrap_or(0);
    k.write_ptr(packet + l.packet_head, next)?;
    if next == 0 {
        k.write_ptr(packet + l.packet_tail, 0)?;
    }
    k.write_ptr(first + k.layout.mdl_next, 0)?;
    k.m.mem.write_u8(packet + l.packet_valid_counts, 0)?;
    k.write_ptr(out, first)
}

/// NdisUnchainBufferAtBack(Packet, Buffer): removes the last buffer (NULL if none).
pub fn unchain_buffer_at_back(k: &mut Kernel, packet: u64, out: u64) -> KResult<()> {
    let l = crate::layout(k);
    let chain = buffers(k, packet)?;
    let Some(&last) = chain.last() else {
        return k.write_ptr(out, 0);
    };
    let before = chain.len().checked_sub(2).map(|i| chain[i]);
    match before {
        Some(b) => {
            k.write_ptr(b + k.layout.mdl_next, 0)?;
            k.write_ptr(packet + l.packet_tail, b)?;
        }
        None => {
            k.write_ptr(packet + l.packet_head, 0)?;
            k.write_ptr(packet + l.packet_tail, 0)?;
        }
    }
    k.m.mem.write_u8(packet + l.packet_valid_counts, 0)?;
    k.write_ptr(out, last)
}

/// NdisCopyFromPacketToPacket(Destination, DestinationOffset, BytesToCopy, Source, SourceOffset,
/// BytesCopied): copies what fits in both packets' buffers.
pub fn copy_from_packet_to_packet(
    k: &mut Kernel,
    dst: u64,
    dst_offset: u32,
    count: u32,
    src: u64,
    src_offset: u32,
    copied_out: u64,
) -> KResult<()> {
    let data = packet_bytes(k, src)?;
    let start = (src_offset as usize).min(data.len());
    let end = start.saturating_add(count as usize).min(data.len());
    let mut pending = &data[start..end];
    let mut skip = dst_offset as usize;
    let mut copied = 0u32;
    for b in buffers(k, dst)? {
        if pending.is_empty() {
            break;
        }
        let (va, len) = buffer_extent(k, b)?;
        let len = len as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(pending.len());
        k.m.mem.write_bytes(va + skip as u64, &pending[..n])?;
        pending = &pending[n..];
        copied += n as u32;
        skip = 0;
    }
    Ok(k.m.mem.write_u32(copied_out, copied)?)
}

/// The Safe variant's extra Priority argument changes nothing here.
#[allow(clippy::too_many_arguments)]
pub fn copy_from_packet_to_packet_safe(
    k: &mut Kernel,
    dst: u64,
    dst_offset: u32,
    count: u32,
    src: u64,
    src_offset: u32,
    copied_out: u64,
    _priority: u32,
) -> KResult<()> {
    copy_from_packet_to_packet(k, dst, dst_offset, count, src, src_offset, copied_out)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisAllocatePacketPool => allocate_packet_pool(status: u64, pool_handle: u64, number_of_descriptors: u32, protocol_reserved_length: u32);
    stdcall NdisAllocatePacketPoolEx => allocate_packet_pool_ex(status: u64, pool_handle: u64, number_of_descriptors: u32, number_of_overflow_descriptors: u32, protocol_reserved_length: u32);
    stdcall NdisFreePacketPool => free_packet_pool(pool_handle: u64);
    stdcall NdisAllocatePacket => allocate_packet(status: u64, packet: u64, pool_handle: u64);
    stdcall NdisDprAllocatePacket => allocate_packet(status: u64, packet: u64, pool_handle: u64);
    stdcall NdisFreePacket => free_packet(packet: u64);
    stdcall NdisDprFreePacket => free_packet(packet: u64);
    stdcall NdisPacketPoolUsage => packet_pool_usage(pool_handle: u64);
    stdcall NdisAllocateBufferPool => allocate_buffer_pool(status: u64, pool_handle: u64, number_of_descriptors: u32);
    stdcall NdisFreeBufferPool => free_buffer_pool(pool_handle: u64);
    stdcall NdisAllocateBuffer => allocate_buffer(status: u64, buffer: u64, pool_handle: u64, virtual_address: u64, length: u32);
    stdcall NdisFreeBuffer => free_buffer(buffer: u64);
    stdcall NdisQueryBuffer => query_buffer(buffer: u64, virtual_address: u64, length: u64);
    stdcall NdisQueryBufferSafe => query_buffer_safe(buffer: u64, virtual_address: u64, length: u64, priority: u32);
    stdcall NdisQueryBufferOffset => query_buffer_offset(buffer: u64, offset: u64, length: u64);
    stdcall NdisBufferLength => buffer_length(buffer: u64);
    stdcall NdisBufferVirtualAddress => buffer_virtual_address(buffer: u64);
    stdcall NdisAdjustBufferLength => adjust_buffer_length(buffer: u64, length: u32);
    stdcall NDIS_BUFFER_TO_SPAN_PAGES => buffer_to_span_pages(buffer: u64);
    stdcall NdisGetBufferPhysicalArraySize => get_buffer_physical_array_size(buffer: u64, array_size: u64);
    stdcall NdisGetFirstBufferFromPacket => get_first_buffer_from_packet(packet: u64, first_buffer: u64, first_buffer_va: u64, first_buffer_length: u64, total_buffer_length: u64);
    stdcall NdisGetFirstBufferFromPacketSafe => get_first_buffer_from_packet_safe(packet: u64, first_buffer: u64, first_buffer_va: u64, first_buffer_length: u64, total_buffer_length: u64, priority: u32);
    stdcall NdisUnchainBufferAtFront => unchain_buffer_at_front(packet: u64, buffer: u64);
    stdcall NdisUnchainBufferAtBack => unchain_buffer_at_back(packet: u64, buffer: u64);
    stdcall NdisCopyFromPacketToPacket => copy_from_packet_to_packet(destination: u64, destination_offset: u32, bytes_to_copy: u32, source: u64, source_offset: u32, bytes_copied: u64);
    stdcall NdisCopyFromPacketToPacketSafe => copy_from_packet_to_packet_safe(destination: u64, destination_offset: u32, bytes_to_copy: u32, source: u64, source_offset: u32, bytes_copied: u64, priority: u32);
];
