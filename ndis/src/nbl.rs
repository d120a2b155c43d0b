//! NET_BUFFER_LISTs (NDIS 6): NBL pools and the NBL / NET_BUFFER / MDL allocation exports, the send
//! path (host-built NBL chains to MiniportSendNetBufferLists, NdisMSendNetBufferListsComplete),
//! receive indications (NdisMIndicateReceiveNetBufferLists, MiniportReturnNetBufferLists), and the
//! validation of the NBL chains a driver hands NDIS.
//!
//! An NBL from a pool is one pool block holding the NET_BUFFER_LIST, its NET_BUFFER (pools made
//! with fAllocateNetBuffer) and its NET_BUFFER_LIST_CONTEXT (when a context size is asked for),
//! owned by the image that created the pool, so NBLs a driver never frees show in its pool
//! accounting. A send NBL is NDIS's: one block with the NBL, its NB and a [`SEND_BUFFER_BYTES`]
//! data buffer, described by one MDL whose MappedSystemVa is valid.
//!
//! Chains from the driver are walked with bounds: an NBL chain longer than the count the driver
//! gave (or than the sends in flight), a NET_BUFFER chain or an MDL chain that does not end, an
//! NB whose DataLength runs past its MDL chain, are bug check 0x7C (BUGCODE_NDIS_DRIVER) naming
//! the adapter, and nothing of the indication is taken.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ntoskrnl::export::Export;
use ntoskrnl::{ex, export_table, mm, KResult, Kernel, KernelError};

use crate::miniport::{
    adapter, adapter_mut, at_dispatch, AdapterEvent, RunState, MAX_OUTSTANDING_SENDS, SEND_BATCH,
    SEND_BUFFER_BYTES,
};
use crate::ndis6::{ndis6, object_header, OBJECT_TYPE_DEFAULT};
use crate::packet::{adjust_buffer_length, buffer_extent, new_buffer};
use crate::{NdisState, NdisStatus, NDIS_OWNER, NDIS_STATUS_SUCCESS};

/// NDIS_SEND_FLAGS_DISPATCH_LEVEL.
const NDIS_SEND_FLAGS_DISPATCH_LEVEL: u64 = 0x1;
/// NDIS_RECEIVE_FLAGS_RESOURCES: the NBLs are lent for the call only.
pub const NDIS_RECEIVE_FLAGS_RESOURCES: u32 = 0x2;
/// NDIS_RETURN_FLAGS_DISPATCH_LEVEL.
const NDIS_RETURN_FLAGS_DISPATCH_LEVEL: u64 = 0x1;
/// Pool tag of host send NBLs.
const SEND_TAG: u32 = u32::from_le_bytes(*b"NDsn");
/// Pool tag of NBL pool handles.
const POOL_TAG: u32 = u32::from_le_bytes(*b"NDnp");
/// Alignment of the parts of an NBL block (MEMORY_ALLOCATION_ALIGNMENT on x64).
const PART_ALIGN: u64 = 16;
/// NET_BUFFERs of one NBL, and MDLs of one NET_BUFFER, before a chain counts as endless.
const MAX_CHAIN: usize = 256;
/// The largest NET_BUFFER the host takes from a driver (an LSO-sized 64 KiB).
const MAX_NB_BYTES: u32 = 0x1_0000;

/// An NBL pool (NdisAllocateNetBufferListPool).
#[derive(Debug, Clone, Default)]
pub struct NblPool {
    /// The image that created it (owner of its NBLs in the pool accounting).
    pub owner: String,
    /// The NdisHandle it was allocated with (an adapter or driver handle).
    pub ndis_handle: u64,
    /// fAllocateNetBuffer: each NBL comes with one NET_BUFFER.
    pub allocate_net_buffer: bool,
    /// DataSize: bytes of data (with an MDL) NDIS allocates per NBL (0: the caller supplies MDLs).
    pub data_size: u32,
    /// PoolTag.
    pub tag: u32,
    /// NBLs allocated from it -> the data block and its MDL when NDIS allocated them.
    pub allocated: BTreeMap<u64, Option<(u64, u64)>>,
}

/// A host-built send NBL: the block (NBL, NB, data) and its MDL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendSlot {
    nbl: u64,
    nb: u64,
    data: u64,
    mdl: u64,
}

/// An adapter's send NBLs: free ones and those the miniport holds.
#[derive(Debug, Default)]
pub(crate) struct SendSlots {
    free: Vec<SendSlot>,
    outstanding: HashMap<u64, SendSlot>,
}

/// Offsets of the NB and the part after it in a block that starts with an NBL.
fn block_parts(k: &Kernel) -> (u64, u64) {
    let l = crate::layout6(k);
    let nb = l.nbl_size.next_multiple_of(PART_ALIGN);
    (nb, (nb + l.nb_size).next_multiple_of(PART_ALIGN))
}

/// Initializes NET_BUFFER `nb` over `mdl_chain`: data at `data_offset` for `data_length` bytes
/// (CurrentMdl / CurrentMdlOffset point at the data start).
fn init_nb(
    k: &mut Kernel,
    nb: u64,
    pool: u64,
    mdl_chain: u64,
    data_offset: u32,
    data_length: u64,
) -> KResult<()> {
    let l = crate::layout6(k);
    let (mut current, mut offset) = (mdl_chain, u64::from(data_offset));
    for _ in 0..MAX_CHAIN {
        if current == 0 {
            break;
        }
        let count = u64::from(buffer_extent(k, current)?.1);
        if offset < count {
            break;
        }
        offset -= count;
        current = k.read_ptr(current + k.layout.mdl_next)?;
    }
    k.write_ptr(nb + l.nb_mdl_chain, mdl_chain)?;
    k.write_ptr(nb + l.nb_current_mdl, current)?;
    k.m.mem
        .write_u32(nb + l.nb_current_mdl_offset, offset as u32)?;
    // DataLength is a ULONG in a union with a SIZE_T: write the whole SIZE_T.
    k.write_ptr(nb + l.nb_data_length, data_length)?;
    k.m.mem.write_u32(nb + l.nb_data_offset, data_offset)?;
    k.write_ptr(nb + l.nb_ndis_pool_handle, pool)?;
    Ok(())
}

/// NdisAllocateNetBufferListPool(NdisHandle, Parameters) -> the pool handle, or NULL for bad
/// parameters.
pub fn allocate_net_buffer_list_pool(k: &mut Kernel, handle: u64, params: u64) -> KResult<u64> {
    let l = crate::layout6(k);
    let (kind, _, size) = object_header(k, params)?;
    if kind != OBJECT_TYPE_DEFAULT || size < l.nbl_pool_params_data_size + 4 {
        tracing::warn!(target: "ica::ndis", "NdisAllocateNetBufferListPool: bad parameters header (type {kind:#x}, size {size})");
        return Ok(0);
    }
    let allocate_net_buffer =
        k.m.mem
            .read_u8(params + l.nbl_pool_params_f_allocate_net_buffer)?
            != 0;
    let data_size = k.m.mem.read_u32(params + l.nbl_pool_params_data_size)?;
    let tag = k.m.mem.read_u32(params + l.nbl_pool_params_pool_tag)?;
    let owner = k.caller_image();
    let pool = ex::allocate(k, 16, POOL_TAG, NDIS_OWNER.into())?;
    k.extension::<NdisState>().nbl_pools.insert(
        pool,
        NblPool {
            owner,
            ndis_handle: handle,
            allocate_net_buffer,
            data_size,
            tag,
            allocated: BTreeMap::new(),
        },
    );
    Ok(pool)
}

/// Frees one NBL of a pool (its block, and the data and MDL NDIS allocated with it).
fn free_pool_nbl(k: &mut Kernel, nbl: u64, data: Option<(u64, u64)>) -> KResult<()> {
    if let Some((data, mdl)) = data {
        mm::free_mdl(k, mdl)?;
        ex::free(k, data, None)?;
    }
    ex::free(k, nbl, None)
}

/// Frees a pool and what is still allocated from it; returns the leak (a driver bug) if any.
fn destroy_pool(k: &mut Kernel, pool: u64) -> KResult<Option<String>> {
    let Some(p) = k.extension::<NdisState>().nbl_pools.remove(&pool) else {
        return Ok(None);
    };
    let leak = (!p.allocated.is_empty()).then(|| {
        format!(
            "{}: NBL pool {pool:#x} freed with {} NBLs still allocated",
            p.owner,
            p.allocated.len()
        )
    });
    for (nbl, data) in p.allocated {
        free_pool_nbl(k, nbl, data)?;
    }
    ex::free(k, pool, None)?;
    Ok(leak)
}

/// NdisFreeNetBufferListPool(PoolHandle). NBLs still allocated from the pool are a driver bug:
/// reported (with the adapter's findings when the pool is an adapter's) and freed with the pool.
pub fn free_net_buffer_list_pool(k: &mut Kernel, pool: u64) -> KResult<()> {
    let Some(handle) = k
        .extension::<NdisState>()
        .nbl_pools
        .get(&pool)
        .map(|p| p.ndis_handle)
    else {
        tracing::warn!(target: "ica::ndis", "NdisFreeNetBufferListPool of unknown pool {pool:#x}");
        return Ok(());
    };
    if let Some(leak) = destroy_pool(k, pool)? {
        tracing::warn!(target: "ica::ndis", "{leak}");
        if let Some(a) = adapter_mut(k, handle) {
            a.findings.push(leak);
        }
    }
    Ok(())
}

/// The pools an adapter (or driver) handle still has when it goes away: freed, one line each.
pub(crate) fn release_pools_of(k: &mut Kernel, handle: u64, name: &str) -> KResult<Vec<String>> {
    let pools: Vec<u64> = k
        .extension::<NdisState>()
        .nbl_pools
        .iter()
        .filter(|(_, p)| p.ndis_handle == handle)
        .map(|(h, _)| *h)
        .collect();
    let mut out = Vec::new();
    for pool in pools {
        out.push(format!("{name}: NBL pool {pool:#x} not freed"));
        out.extend(destroy_pool(k, pool)?);
    }
    Ok(out)
}

/// Allocates an NBL of `pool`: the NBL, a NET_BUFFER if `with_nb`, and a NET_BUFFER_LIST_CONTEXT
/// of `context_size + context_backfill` bytes (Offset = the backfill) if that is not zero.
/// Returns the NBL and its NB (0 without one); NULL if the pool is unknown.
fn allocate_nbl(
    k: &mut Kernel,
    pool: u64,
    context_size: u16,
    context_backfill: u16,
    with_nb: bool,
) -> KResult<(u64, u64)> {
    let Some(p) = k.extension::<NdisState>().nbl_pools.get(&pool).cloned() else {
        tracing::warn!(target: "ica::ndis", "NBL allocation from unknown pool {pool:#x}");
        return Ok((0, 0));
    };
    let l = crate::layout6(k);
    let (nb_at, context_at) = block_parts(k);
    let context_bytes = u64::from(context_size) + u64::from(context_backfill);
    let size = if context_bytes != 0 {
        context_at + l.nbl_context_context_data + context_bytes
    } else {
        context_at
    };
    let nbl = ex::allocate(k, size, p.tag, p.owner.clone())?;
    k.write_ptr(nbl + l.nbl_ndis_pool_handle, pool)?;
    if context_bytes != 0 {
        let c = nbl + context_at;
        k.m.mem
            .write_u16(c + l.nbl_context_size_field, context_bytes as u16)?;
        k.m.mem
            .write_u16(c + l.nbl_context_offset, context_backfill)?;
        k.write_ptr(nbl + l.nbl_context, c)?;
    }
    let nb = if with_nb { nbl + nb_at } else { 0 };
    if nb != 0 {
        k.write_ptr(nbl + l.nbl_first_net_buffer, nb)?;
        k.write_ptr(nb + l.nb_ndis_pool_handle, pool)?;
    }
    let data = if with_nb && p.data_size != 0 {
        let data = ex::allocate(k, u64::from(p.data_size), p.tag, p.owner.clone())?;
        let mdl = new_buffer(k, data, p.data_size)?;
        init_nb(k, nb, pool, mdl, 0, u64::from(p.data_size))?;
        Some((data, mdl))
    } else {
        None
    };
    if let Some(p) = k.extension::<NdisState>().nbl_pools.get_mut(&pool) {
        p.allocated.insert(nbl, data);
    }
    Ok((nbl, nb))
}

/// NdisAllocateNetBufferAndNetBufferList(PoolHandle, ContextSize, ContextBackFill, MdlChain,
/// DataOffset, DataLength) -> an NBL with one NET_BUFFER over `MdlChain` (pools made with
/// fAllocateNetBuffer only), or NULL.
pub fn allocate_net_buffer_and_net_buffer_list(
    k: &mut Kernel,
    pool: u64,
    context_size: u16,
    context_backfill: u16,
    mdl_chain: u64,
    data_offset: u32,
    data_length: u64,
) -> KResult<u64> {
    let with_nb = k
        .extension::<NdisState>()
        .nbl_pools
        .get(&pool)
        .is_some_and(|p| p.allocate_net_buffer && p.data_size == 0);
    if !with_nb {
        tracing::warn!(target: "ica::ndis", "NdisAllocateNetBufferAndNetBufferList from pool {pool:#x}, which is not a NET_BUFFER pool without DataSize");
        return Ok(0);
    }
    let (nbl, nb) = allocate_nbl(k, pool, context_size, context_backfill, true)?;
    if nbl != 0 {
        init_nb(k, nb, pool, mdl_chain, data_offset, data_length)?;
    }
    Ok(nbl)
}

/// NdisAllocateNetBufferList(PoolHandle, ContextSize, ContextBackFill) -> an NBL (with a
/// NET_BUFFER and DataSize bytes of data behind an MDL if the pool was made with
/// fAllocateNetBuffer and a DataSize), or NULL.
pub fn allocate_net_buffer_list(
    k: &mut Kernel,
    pool: u64,
    context_size: u16,
    context_backfill: u16,
) -> KResult<u64> {
    let with_nb = k
        .extension::<NdisState>()
        .nbl_pools
        .get(&pool)
        .is_some_and(|p| p.allocate_net_buffer && p.data_size != 0);
    Ok(allocate_nbl(k, pool, context_size, context_backfill, with_nb)?.0)
}

/// NdisFreeNetBufferList(NetBufferList): back to its pool (named by its NdisPoolHandle).
pub fn free_net_buffer_list(k: &mut Kernel, nbl: u64) -> KResult<()> {
    let l = crate::layout6(k);
    let pool = k.read_ptr(nbl + l.nbl_ndis_pool_handle)?;
    let data = k
        .extension::<NdisState>()
        .nbl_pools
        .get_mut(&pool)
        .and_then(|p| p.allocated.remove(&nbl));
    let Some(data) = data else {
        return Err(KernelError::bug_check(
            0x7C,
            format!("NdisFreeNetBufferList of {nbl:#x}, which is not an allocated NBL of pool {pool:#x} (freed twice?)"),
        ));
    };
    free_pool_nbl(k, nbl, data)
}

/// NdisAllocateMdl(NdisHandle, VirtualAddress, Length) -> an MDL (MappedSystemVa valid) owned by
/// the calling image.
pub fn allocate_mdl(k: &mut Kernel, _handle: u64, va: u64, length: u32) -> KResult<u64> {
    new_buffer(k, va, length)
}

/// NdisFreeMdl(Mdl).
pub fn free_mdl(k: &mut Kernel, mdl: u64) -> KResult<()> {
    mm::free_mdl(k, mdl)
}

// ---------------------------------------------------------------------------------------------
// Chains from the driver

/// The NBLs of the chain at `first` (following Next); an error text when it holds more than
/// `limit` (a cycle, or a chain longer than the driver said).
pub fn chain(k: &Kernel, first: u64, limit: usize) -> KResult<Result<Vec<u64>, String>> {
    let l = crate::layout6(k);
    let mut out = Vec::new();
    let mut nbl = first;
    while nbl != 0 {
        if out.len() == limit {
            return Ok(Err(format!(
                "the NBL chain at {first:#x} holds more than {limit} NBLs (a cycle?)"
            )));
        }
        out.push(nbl);
        nbl = k.read_ptr(nbl + l.nbl_next)?;
    }
    Ok(Ok(out))
}

/// The bytes a NET_BUFFER describes: DataLength bytes from CurrentMdl at CurrentMdlOffset,
/// following the MDLs' Next; an error text when they run past the MDL chain.
fn nb_bytes(k: &Kernel, nb: u64) -> KResult<Result<Vec<u8>, String>> {
    let l = crate::layout6(k);
    let len = k.m.mem.read_u32(nb + l.nb_data_length)?;
    if len > MAX_NB_BYTES {
        return Ok(Err(format!(
            "NET_BUFFER {nb:#x} has DataLength {len} (more than {MAX_NB_BYTES})"
        )));
    }
    let offset = k.m.mem.read_u32(nb + l.nb_current_mdl_offset)?;
    let mut mdl = k.read_ptr(nb + l.nb_current_mdl)?;
    let mut skip = u64::from(offset);
    let mut data = Vec::with_capacity(len as usize);
    let mut mdls = 0;
    while data.len() < len as usize {
        if mdl == 0 {
            return Ok(Err(format!(
                "NET_BUFFER {nb:#x} has DataLength {len}, but its MDL chain holds {} bytes from CurrentMdlOffset {offset}",
                data.len()
            )));
        }
        mdls += 1;
        if mdls > MAX_CHAIN {
            return Ok(Err(format!(
                "NET_BUFFER {nb:#x} has more than {MAX_CHAIN} MDLs (a cycle?)"
            )));
        }
        let (va, count) = buffer_extent(k, mdl)?;
        let count = u64::from(count);
        if skip >= count {
            skip -= count;
        } else {
            let take = (count - skip).min((len as usize - data.len()) as u64);
            data.extend(k.m.mem.read_vec(va + skip, take as usize)?);
            skip = 0;
        }
        mdl = k.read_ptr(mdl + k.layout.mdl_next)?;
    }
    Ok(Ok(data))
}

/// One indicated NBL and the frames (NET_BUFFER contents) it carried.
pub type ReceivedNbl = (u64, Vec<Vec<u8>>);

/// Validates an indicated chain of `count` NBLs at `first` and copies what each NET_BUFFER of
/// each NBL holds: `(nbl, frames)` per NBL, in chain order. An error text (nothing taken) for a
/// chain that is not exactly `count` NBLs long or ends nowhere, an NET_BUFFER chain that does not
/// end, or a NET_BUFFER whose data runs past its MDL chain. Bad guest pointers are faults.
pub fn read_received(
    k: &Kernel,
    first: u64,
    count: u32,
) -> KResult<Result<Vec<ReceivedNbl>, String>> {
    let l = crate::layout6(k);
    let nbls = match chain(k, first, count as usize)? {
        Ok(n) => n,
        Err(e) => return Ok(Err(format!("{e}; NumberOfNetBufferLists is {count}"))),
    };
    if nbls.len() != count as usize {
        return Ok(Err(format!(
            "NumberOfNetBufferLists is {count}, but the chain holds {} NBLs",
            nbls.len()
        )));
    }
    let mut out = Vec::new();
    for nbl in nbls {
        let mut frames = Vec::new();
        let mut nb = k.read_ptr(nbl + l.nbl_first_net_buffer)?;
        while nb != 0 {
            if frames.len() == MAX_CHAIN {
                return Ok(Err(format!(
                    "NBL {nbl:#x} has more than {MAX_CHAIN} NET_BUFFERs (a cycle?)"
                )));
            }
            match nb_bytes(k, nb)? {
                Ok(f) => frames.push(f),
                Err(e) => return Ok(Err(format!("NBL {nbl:#x}: {e}"))),
            }
            nb = k.read_ptr(nb + l.nb_next)?;
        }
        out.push((nbl, frames));
    }
    Ok(Ok(out))
}

/// Bug check 0x7C naming the adapter, for a malformed chain from its driver.
fn malformed(k: &mut Kernel, handle: u64, call: &str, what: String) -> KResult<KernelError> {
    let name = adapter(k, handle)?.name.clone();
    Ok(KernelError::bug_check(
        0x7C,
        format!("{name}: {call}: a malformed NBL chain from the driver: {what}"),
    ))
}

/// NdisMIndicateReceiveNetBufferLists(MiniportAdapterHandle, NetBufferLists, PortNumber,
/// NumberOfNetBufferLists, ReceiveFlags): copies every NET_BUFFER out as a received frame. NBLs
/// indicated with NDIS_RECEIVE_FLAGS_RESOURCES stay the miniport's; the others are returned
/// through MiniportReturnNetBufferLists after the indicating DPC.
pub fn indicate_receive(
    k: &mut Kernel,
    handle: u64,
    nbls: u64,
    _port: u32,
    count: u32,
    flags: u32,
) -> KResult<()> {
    const CALL: &str = "NdisMIndicateReceiveNetBufferLists";
    let v = ndis6(k, handle)?;
    let (state, held) = (v.state, v.to_return.clone());
    let received = match read_received(k, nbls, count)? {
        Ok(r) => r,
        Err(e) => return Err(malformed(k, handle, CALL, e)?),
    };
    let keep = flags & NDIS_RECEIVE_FLAGS_RESOURCES == 0;
    if keep {
        if let Some((nbl, _)) = received.iter().find(|(n, _)| held.contains(n)) {
            let nbl = *nbl;
            return Err(malformed(
                k,
                handle,
                CALL,
                format!("NBL {nbl:#x} is indicated again before it was returned"),
            )?);
        }
    }
    let a = adapter(k, handle)?;
    if state != RunState::Running {
        tracing::warn!(target: "ica::ndis", "{}: receive indication while the adapter is {state:?}", a.name);
    }
    a.stats.indications += 1;
    let mut lent = Vec::new();
    for (nbl, frames) in received {
        for f in frames {
            a.stats.receives += 1;
            a.events.push_back(AdapterEvent::Receive(f));
        }
        lent.push(nbl);
    }
    if keep {
        ndis6(k, handle)?.to_return.extend(lent);
    }
    Ok(())
}

/// Returns the NBLs the host holds to the miniport, as one chain, through
/// MiniportReturnNetBufferLists at DISPATCH_LEVEL.
pub(crate) fn return_nbls(k: &mut Kernel, block: u64) -> KResult<()> {
    let v = ndis6(k, block)?;
    if v.to_return.is_empty() {
        return Ok(());
    }
    let nbls = std::mem::take(&mut v.to_return);
    let handler = v.chars.return_nbls;
    let l = crate::layout6(k);
    for (i, nbl) in nbls.iter().enumerate() {
        let next = nbls.get(i + 1).copied().unwrap_or(0);
        k.write_ptr(nbl + l.nbl_next, next)?;
    }
    let a = adapter(k, block)?;
    a.stats.returns += nbls.len() as u64;
    let context = a.context;
    at_dispatch(k, |k| {
        k.call_guest(
            handler,
            &[context, nbls[0], NDIS_RETURN_FLAGS_DISPATCH_LEVEL],
        )
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sends

/// A send slot holding `frame` (a free one, or a new one while under the outstanding limit).
fn take_slot(k: &mut Kernel, block: u64, frame: &[u8]) -> KResult<Option<SendSlot>> {
    let v = ndis6(k, block)?;
    let room = v.sends.outstanding.len() < MAX_OUTSTANDING_SENDS;
    let slot = match v.sends.free.pop() {
        Some(s) => s,
        None if room => {
            let (nb_at, data_at) = block_parts(k);
            let nbl = ex::allocate(
                k,
                data_at + u64::from(SEND_BUFFER_BYTES),
                SEND_TAG,
                NDIS_OWNER.into(),
            )?;
            let data = nbl + data_at;
            let mdl = mm::create_mdl_for_buffer(k, data, u64::from(SEND_BUFFER_BYTES))?;
            SendSlot {
                nbl,
                nb: nbl + nb_at,
                data,
                mdl,
            }
        }
        None => return Ok(None),
    };
    let l = crate::layout6(k);
    k.m.mem.fill(slot.nbl, 0, slot.data - slot.nbl)?;
    k.m.mem.write_bytes(slot.data, frame)?;
    adjust_buffer_length(k, slot.mdl, frame.len() as u32)?;
    k.write_ptr(slot.nbl + l.nbl_first_net_buffer, slot.nb)?;
    init_nb(k, slot.nb, 0, slot.mdl, 0, frame.len() as u64)?;
    Ok(Some(slot))
}

/// Frees an adapter's send NBLs (at halt).
pub(crate) fn free_send_slots(k: &mut Kernel, slots: &SendSlots) -> KResult<()> {
    for s in slots.free.iter().chain(slots.outstanding.values()) {
        mm::free_mdl(k, s.mdl)?;
        ex::free(k, s.nbl, None)?;
    }
    Ok(())
}

/// The NDIS 6 side of [`crate::miniport::send`]: frames from the front of `frames` go to
/// MiniportSendNetBufferLists in chains of up to [`SEND_BATCH`] NBLs (one NET_BUFFER each) at
/// DISPATCH_LEVEL; the miniport completes them with NdisMSendNetBufferListsComplete. Nothing is
/// sent while the adapter is not Running (the frames wait), nor beyond
/// [`MAX_OUTSTANDING_SENDS`]; a frame larger than [`SEND_BUFFER_BYTES`] is dropped and counted as
/// a failed send.
pub(crate) fn send(k: &mut Kernel, block: u64, frames: &mut VecDeque<Vec<u8>>) -> KResult<()> {
    let v = ndis6(k, block)?;
    if v.state != RunState::Running {
        return return_nbls(k, block);
    }
    let handler = v.chars.send;
    let l = crate::layout6(k);
    while !frames.is_empty() {
        let mut batch: Vec<SendSlot> = Vec::new();
        while batch.len() < SEND_BATCH {
            let Some(frame) = frames.pop_front() else {
                break;
            };
            if frame.len() > SEND_BUFFER_BYTES as usize {
                tracing::warn!(target: "ica::ndis", "dropping a {}-byte frame (larger than {SEND_BUFFER_BYTES})", frame.len());
                adapter(k, block)?.stats.sends_failed += 1;
                continue;
            }
            match take_slot(k, block, &frame)? {
                Some(slot) => batch.push(slot),
                None => {
                    frames.push_front(frame);
                    break;
                }
            }
        }
        let Some(first) = batch.first().map(|s| s.nbl) else {
            break;
        };
        for (i, s) in batch.iter().enumerate() {
            let next = batch.get(i + 1).map_or(0, |n| n.nbl);
            k.write_ptr(s.nbl + l.nbl_next, next)?;
        }
        let v = ndis6(k, block)?;
        for s in &batch {
            v.sends.outstanding.insert(s.nbl, *s);
        }
        let a = adapter(k, block)?;
        a.stats.sends += batch.len() as u64;
        let context = a.context;
        at_dispatch(k, |k| {
            k.call_guest(
                handler,
                &[context, first, 0, NDIS_SEND_FLAGS_DISPATCH_LEVEL],
            )
        })?;
    }
    return_nbls(k, block)
}

/// NdisMSendNetBufferListsComplete(MiniportAdapterHandle, NetBufferLists, SendCompleteFlags):
/// takes back send NBLs, each with its Status. An NBL that is not a send in progress, or a chain
/// that does not end, is a driver bug (bug check 0x7C; nothing of the chain is taken).
pub fn send_complete(k: &mut Kernel, handle: u64, nbls: u64, _flags: u32) -> KResult<()> {
    const CALL: &str = "NdisMSendNetBufferListsComplete";
    // A chain longer than what is in flight is a cycle (or holds NBLs that are not sends).
    let in_flight = ndis6(k, handle)?.sends.outstanding.len().max(1);
    let list = match chain(k, nbls, in_flight)? {
        Ok(list) => list,
        Err(e) => return Err(malformed(k, handle, CALL, e)?),
    };
    let v = ndis6(k, handle)?;
    if let Some(nbl) = list.iter().find(|n| !v.sends.outstanding.contains_key(n)) {
        let nbl = *nbl;
        return Err(malformed(
            k,
            handle,
            CALL,
            format!("NBL {nbl:#x} is not a send in progress (completed twice?)"),
        )?);
    }
    let l = crate::layout6(k);
    for nbl in list {
        let status: NdisStatus = k.m.mem.read_u32(nbl + l.nbl_status)?;
        let v = ndis6(k, handle)?;
        if let Some(slot) = v.sends.outstanding.remove(&nbl) {
            v.sends.free.push(slot);
        }
        let a = adapter(k, handle)?;
        if status == NDIS_STATUS_SUCCESS {
            a.stats.sends_ok += 1;
        } else {
            tracing::debug!(target: "ica::ndis", "{}: send completed with {status:#x}", a.name);
            a.stats.count_send_failure(status);
        }
    }
    Ok(())
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisAllocateNetBufferListPool => allocate_net_buffer_list_pool(ndis_handle: u64, parameters: u64);
    stdcall NdisFreeNetBufferListPool => free_net_buffer_list_pool(pool_handle: u64);
    stdcall NdisAllocateNetBufferAndNetBufferList => allocate_net_buffer_and_net_buffer_list(pool_handle: u64, context_size: u16, context_back_fill: u16, mdl_chain: u64, data_offset: u32, data_length: u64);
    stdcall NdisAllocateNetBufferList => allocate_net_buffer_list(pool_handle: u64, context_size: u16, context_back_fill: u16);
    stdcall NdisFreeNetBufferList => free_net_buffer_list(net_buffer_list: u64);
    stdcall NdisAllocateMdl => allocate_mdl(ndis_handle: u64, virtual_address: u64, length: u32);
    stdcall NdisFreeMdl => free_mdl(mdl: u64);
    stdcall NdisMIndicateReceiveNetBufferLists => indicate_receive(miniport_adapter_handle: u64, net_buffer_lists: u64, port_number: u32, number_of_net_buffer_lists: u32, receive_flags: u32);
    stdcall NdisMSendNetBufferListsComplete => send_complete(miniport_adapter_handle: u64, net_buffer_lists: u64, send_complete_flags: u32);
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{block, kernel, ARCHES};

    /// NET_BUFFER_LIST_POOL_PARAMETERS in guest memory.
    fn pool_params(k: &mut Kernel, allocate_nb: bool, data_size: u32) -> u64 {
        let l = crate::layout6(k);
        let p = block(k, l.nbl_pool_params_size);
        k.m.mem.write_u8(p + l.object_header_type, 0x80).unwrap();
        k.m.mem.write_u8(p + l.object_header_revision, 1).unwrap();
        k.m.mem
            .write_u16(
                p + l.object_header_size_field,
                l.nbl_pool_params_size as u16,
            )
            .unwrap();
        k.m.mem
            .write_u8(
                p + l.nbl_pool_params_f_allocate_net_buffer,
                u8::from(allocate_nb),
            )
            .unwrap();
        k.m.mem
            .write_u32(p + l.nbl_pool_params_pool_tag, u32::from_le_bytes(*b"Pool"))
            .unwrap();
        k.m.mem
            .write_u32(p + l.nbl_pool_params_data_size, data_size)
            .unwrap();
        p
    }

    #[test]
    fn nbls_come_from_pools_and_a_pool_freed_with_nbls_out_is_a_leak() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let l = crate::layout6(&k);
            let params = pool_params(&mut k, true, 0);
            let pool = allocate_net_buffer_list_pool(&mut k, 0xADA, params).unwrap();
            assert_ne!(pool, 0);
            // An NB over two MDLs, its data starting 20 bytes into the second.
            let a = block(&mut k, 16);
            let b = block(&mut k, 64);
            let m1 = new_buffer(&mut k, a, 16).unwrap();
            let m2 = new_buffer(&mut k, b, 64).unwrap();
            k.write_ptr(m1 + k.layout.mdl_next, m2).unwrap();
            let nbl =
                allocate_net_buffer_and_net_buffer_list(&mut k, pool, 16, 8, m1, 36, 40).unwrap();
            assert_ne!(nbl, 0);
            let nb = k.read_ptr(nbl + l.nbl_first_net_buffer).unwrap();
            assert_eq!(k.read_ptr(nb + l.nb_mdl_chain).unwrap(), m1);
            assert_eq!(k.read_ptr(nb + l.nb_current_mdl).unwrap(), m2);
            assert_eq!(k.m.mem.read_u32(nb + l.nb_current_mdl_offset).unwrap(), 20);
            assert_eq!(k.m.mem.read_u32(nb + l.nb_data_length).unwrap(), 40);
            assert_eq!(k.read_ptr(nbl + l.nbl_ndis_pool_handle).unwrap(), pool);
            let context = k.read_ptr(nbl + l.nbl_context).unwrap();
            assert_ne!(context, 0);
            assert_eq!(
                k.m.mem
                    .read_u16(context + l.nbl_context_size_field)
                    .unwrap(),
                24
            );
            assert_eq!(k.m.mem.read_u16(context + l.nbl_context_offset).unwrap(), 8);
            let data: Vec<u8> = (0..64).collect();
            k.m.mem.write_bytes(b, &data).unwrap();
            let got = read_received(&k, nbl, 1).unwrap().unwrap();
            assert_eq!(got, vec![(nbl, vec![data[20..60].to_vec()])]);

            free_net_buffer_list(&mut k, nbl).unwrap();
            assert!(free_net_buffer_list(&mut k, nbl).is_err(), "freed twice");
            // A pool without NET_BUFFERs cannot back NdisAllocateNetBufferAndNetBufferList.
            let bare = pool_params(&mut k, false, 0);
            let bare = allocate_net_buffer_list_pool(&mut k, 0xADA, bare).unwrap();
            assert_eq!(
                allocate_net_buffer_and_net_buffer_list(&mut k, bare, 0, 0, m1, 0, 16).unwrap(),
                0
            );
            let plain = allocate_net_buffer_list(&mut k, bare, 0, 0).unwrap();
            assert_eq!(k.read_ptr(plain + l.nbl_first_net_buffer).unwrap(), 0);

            // A data pool hands out NBLs with an NB, an MDL and DataSize bytes.
            let sized = pool_params(&mut k, true, 1536);
            let sized = allocate_net_buffer_list_pool(&mut k, 0xADA, sized).unwrap();
            let full = allocate_net_buffer_list(&mut k, sized, 0, 0).unwrap();
            let nb = k.read_ptr(full + l.nbl_first_net_buffer).unwrap();
            let mdl = k.read_ptr(nb + l.nb_mdl_chain).unwrap();
            assert_eq!(buffer_extent(&k, mdl).unwrap().1, 1536);
            free_net_buffer_list(&mut k, full).unwrap();

            // NBLs still out when the pool goes: a leak, reported and freed.
            allocate_net_buffer_and_net_buffer_list(&mut k, pool, 0, 0, m1, 0, 16).unwrap();
            let leak = destroy_pool(&mut k, pool).unwrap().expect("a leak");
            assert!(leak.contains("1 NBLs still allocated"), "{leak}");
            let left = release_pools_of(&mut k, 0xADA, "adapter").unwrap();
            assert_eq!(left.len(), 3, "{left:?}");
            assert!(k.extension::<NdisState>().nbl_pools.is_empty());
            assert_eq!(k.pool.tag_usage(u32::from_le_bytes(*b"Pool")).blocks, 0);
        }
    }
}
