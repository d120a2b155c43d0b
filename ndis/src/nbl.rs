//! NET_BUFFER_LISTs (NDIS 6): NBL pools and the NBL / NET_BUFFER / MDL allocation exports, the send
//! path (host-built NBL chains to MiniportSendNetBufferLists, NdisMSendNetBufferListsComplete),
//! receive indications (NdisMIndicateReceiveNetBufferLists, MiniportReturnNetBufferLists), and the
//! validation of the NBL chains a driver hands NDIS.
//!
//! An NBL from a pool is one pool block holding the NET_BUFFER_LIST, its NET_BUFFER (pools made
//! with fAllocateNetBuffer) and its NET_BUFFER_LIST_CONTEXT (when a context size is asked for),
//! owned by the image that created the pool, so NBLs a driver never frees show in its pool
//! accounting. A send NBL is NDIS's: one block with the NBL, its NB, a small header buffer and a
//! [`SEND_BUFFER_BYTES`] data buffer, each described by an MDL whose MappedSystemVa is valid; the
//! adapter's [`SendLayout`] says how a frame is laid out in them (one MDL by default).
//!
//! Clones (NdisAllocateCloneNetBufferList) come from the pool the driver names and are recorded
//! there with the original they describe: an original completed or freed while a clone still
//! describes its data is a driver bug.
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
    /// NBLs allocated from it -> what NDIS allocated with each.
    pub allocated: BTreeMap<u64, PoolNbl>,
    /// NDIS's own pool of an image's clones allocated without a pool handle (freed with its last
    /// NBL).
    pub internal: bool,
}

/// What NDIS allocated with one NBL of a pool (freed with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolNbl {
    /// The NBL block alone (with its NET_BUFFER and context, if any).
    Plain,
    /// DataSize bytes of data and the MDL describing them.
    Data {
        /// The data block.
        data: u64,
        /// Its MDL.
        mdl: u64,
    },
    /// A clone (NdisAllocateCloneNetBufferList) of `original`.
    Clone {
        /// The NBL cloned.
        original: u64,
        /// Made with NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS (it shares the original's MDLs).
        original_mdls: bool,
        /// The MDLs NDIS built over the original's data otherwise, freed with the clone.
        mdls: Vec<u64>,
    },
}

/// A host-built send NBL: the block (NBL, NB, header and data buffers) and the MDLs of the two
/// buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendSlot {
    nbl: u64,
    nb: u64,
    header: u64,
    header_mdl: u64,
    data: u64,
    mdl: u64,
}

/// How the host lays out the NET_BUFFER of each frame it sends to an NDIS 6 miniport, as the
/// protocols above a miniport on Windows do in their different ways; a driver must handle them
/// all (its scatter/gather lists, copies and clones see the difference).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SendLayout {
    /// The frame at the start of one MDL (the default).
    #[default]
    Contiguous,
    /// The frame `n` bytes into one MDL, after `n` bytes of unused back-fill space (DataOffset =
    /// CurrentMdlOffset = `n`), as a protocol that reserves header room leaves it.
    Offset(u16),
    /// The Ethernet header (14 bytes) in one MDL over a buffer of its own, chained to an MDL over
    /// the rest, as a protocol that prepends a header buffer to a payload does.
    SplitHeader,
}

/// Bytes of the header buffer of a send NBL (the [`SendLayout::SplitHeader`] header MDL
/// describes its first 14).
const SEND_HEADER_BYTES: u64 = 64;
/// Ethernet header bytes.
const ETH_HEADER: usize = 14;

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
            internal: false,
        },
    );
    Ok(pool)
}

/// Frees one NBL of a pool (its block, and what NDIS allocated with it).
fn free_pool_nbl(k: &mut Kernel, nbl: u64, entry: PoolNbl) -> KResult<()> {
    match entry {
        PoolNbl::Plain => {}
        PoolNbl::Data { data, mdl } => {
            mm::free_mdl(k, mdl)?;
            ex::free(k, data, None)?;
        }
        PoolNbl::Clone { mdls, .. } => {
            for mdl in mdls {
                mm::free_mdl(k, mdl)?;
            }
        }
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
    for (nbl, entry) in p.allocated {
        free_pool_nbl(k, nbl, entry)?;
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
    let entry = if with_nb && p.data_size != 0 {
        let data = ex::allocate(k, u64::from(p.data_size), p.tag, p.owner.clone())?;
        let mdl = new_buffer(k, data, p.data_size)?;
        init_nb(k, nb, pool, mdl, 0, u64::from(p.data_size))?;
        PoolNbl::Data { data, mdl }
    } else {
        PoolNbl::Plain
    };
    if let Some(p) = k.extension::<NdisState>().nbl_pools.get_mut(&pool) {
        p.allocated.insert(nbl, entry);
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

/// NdisFreeNetBufferList(NetBufferList): back to its pool (named by its NdisPoolHandle). A clone
/// (NdisFreeCloneNetBufferList frees those) or an NBL whose clones still describe its data is a
/// driver bug (bug check 0x7C; nothing is freed).
pub fn free_net_buffer_list(k: &mut Kernel, nbl: u64) -> KResult<()> {
    let l = crate::layout6(k);
    let pool = k.read_ptr(nbl + l.nbl_ndis_pool_handle)?;
    let entry = k
        .extension::<NdisState>()
        .nbl_pools
        .get(&pool)
        .and_then(|p| p.allocated.get(&nbl).cloned());
    let bug = match &entry {
        None => format!("NdisFreeNetBufferList of {nbl:#x}, which is not an allocated NBL of pool {pool:#x} (freed twice?)"),
        Some(PoolNbl::Clone { .. }) => format!(
            "NdisFreeNetBufferList of {nbl:#x}, a clone (NdisFreeCloneNetBufferList frees clones)"
        ),
        Some(_) => match live_clones_of(k, nbl) {
            0 => String::new(),
            n => format!("NdisFreeNetBufferList of {nbl:#x} while {n} clones still describe its data"),
        },
    };
    if !bug.is_empty() {
        return Err(KernelError::bug_check(0x7C, bug));
    }
    take_pool_nbl(k, pool, nbl)
}

/// Removes `nbl` from `pool` and frees it (and the pool, if it is an internal one now empty).
fn take_pool_nbl(k: &mut Kernel, pool: u64, nbl: u64) -> KResult<()> {
    let state = k.extension::<NdisState>();
    let Some(p) = state.nbl_pools.get_mut(&pool) else {
        return Ok(());
    };
    let Some(entry) = p.allocated.remove(&nbl) else {
        return Ok(());
    };
    let drop_pool = p.internal && p.allocated.is_empty();
    free_pool_nbl(k, nbl, entry)?;
    if drop_pool {
        destroy_pool(k, pool)?;
    }
    Ok(())
}

/// How many live clones describe the data of `nbl`.
fn live_clones_of(k: &mut Kernel, nbl: u64) -> usize {
    k.extension::<NdisState>()
        .nbl_pools
        .values()
        .flat_map(|p| p.allocated.values())
        .filter(|e| matches!(e, PoolNbl::Clone { original, .. } if *original == nbl))
        .count()
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
// Clones and copies

/// NDIS_CLONE_FLAGS_RESERVED.
const CLONE_FLAGS_RESERVED: u32 = 0x1;
/// NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS.
pub const CLONE_FLAGS_USE_ORIGINAL_MDLS: u32 = 0x2;
/// Pool tag of NDIS's own clone pools (clones allocated without a pool handle).
const CLONE_POOL_TAG: u32 = u32::from_le_bytes(*b"NDcl");

/// The NBL pool a clone comes from (handle and record): `pool`, or (NULL) NDIS's own clone pool
/// of the calling image.
fn clone_pool(k: &mut Kernel, pool: u64) -> KResult<Option<(u64, NblPool)>> {
    if pool != 0 {
        let p = k.extension::<NdisState>().nbl_pools.get(&pool).cloned();
        return Ok(p.map(|p| (pool, p)));
    }
    let owner = k.caller_image();
    let found = k
        .extension::<NdisState>()
        .nbl_pools
        .iter()
        .find(|(_, p)| p.internal && p.owner == owner)
        .map(|(h, _)| *h);
    let handle = match found {
        Some(h) => h,
        None => {
            let h = ex::allocate(k, 16, POOL_TAG, NDIS_OWNER.into())?;
            let p = NblPool {
                owner,
                tag: CLONE_POOL_TAG,
                internal: true,
                ..NblPool::default()
            };
            k.extension::<NdisState>().nbl_pools.insert(h, p);
            h
        }
    };
    let p = k.extension::<NdisState>().nbl_pools.get(&handle).cloned();
    Ok(p.map(|p| (handle, p)))
}

/// NdisAllocateCloneNetBufferList(OriginalNetBufferList, NetBufferListPoolHandle,
/// NetBufferPoolHandle, AllocateCloneFlags) -> a clone describing the same data, or NULL.
///
/// The clone comes from the NBL pool (NULL: NDIS's own), with one NET_BUFFER per original NB
/// covering its used data (DataLength bytes from CurrentMdl at CurrentMdlOffset): over the
/// original MDL chain from CurrentMdl with NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS (DataOffset =
/// CurrentMdlOffset), else over new MDLs that describe the original buffers (DataOffset 0). No
/// data is copied and no NET_BUFFER_LIST_CONTEXT is allocated. As documented, the caller
/// maintains ParentNetBufferList and ChildRefCount (NDIS leaves them NULL and 0). NULL for an
/// unknown pool, unknown flags or an original whose NBs run past their MDLs.
pub fn allocate_clone_net_buffer_list(
    k: &mut Kernel,
    original: u64,
    nbl_pool: u64,
    nb_pool: u64,
    flags: u32,
) -> KResult<u64> {
    const CALL: &str = "NdisAllocateCloneNetBufferList";
    if original == 0 || flags & !(CLONE_FLAGS_RESERVED | CLONE_FLAGS_USE_ORIGINAL_MDLS) != 0 {
        tracing::warn!(target: "ica::ndis", "{CALL}({original:#x}, flags {flags:#x}): no NBL or unknown flags");
        return Ok(0);
    }
    if nb_pool != 0 {
        // NET_BUFFER pools (NdisAllocateNetBufferPool) are not offered: NBs come with the clone.
        tracing::debug!(target: "ica::ndis", "{CALL}: NetBufferPoolHandle {nb_pool:#x} ignored");
    }
    let clone = no_fault(CALL, 0, clone_nbl(k, original, nbl_pool, flags))?;
    Ok(clone)
}

fn clone_nbl(k: &mut Kernel, original: u64, nbl_pool: u64, flags: u32) -> KResult<u64> {
    let l = crate::layout6(k);
    let Some((pool, p)) = clone_pool(k, nbl_pool)? else {
        tracing::warn!(target: "ica::ndis", "NdisAllocateCloneNetBufferList from unknown pool {nbl_pool:#x}");
        return Ok(0);
    };
    let use_original = flags & CLONE_FLAGS_USE_ORIGINAL_MDLS != 0;
    // The original's NBs, and where their data is.
    let mut nbs = Vec::new();
    let mut nb = k.read_ptr(original + l.nbl_first_net_buffer)?;
    while nb != 0 {
        if nbs.len() == MAX_CHAIN {
            tracing::warn!(target: "ica::ndis", "NdisAllocateCloneNetBufferList: NBL {original:#x} has more than {MAX_CHAIN} NET_BUFFERs");
            return Ok(0);
        }
        let d = nb_data(k, nb)?;
        let spans = if use_original {
            Vec::new()
        } else {
            match nb_spans(k, nb, d, 0, u64::from(d.length))? {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(target: "ica::ndis", "NdisAllocateCloneNetBufferList of {original:#x}: {e}");
                    return Ok(0);
                }
            }
        };
        nbs.push((d, spans));
        nb = k.read_ptr(nb + l.nb_next)?;
    }
    let (nb_at, _) = block_parts(k);
    let stride = l.nb_size.next_multiple_of(PART_ALIGN);
    let clone = ex::allocate(k, nb_at + stride * nbs.len() as u64, p.tag, p.owner.clone())?;
    k.write_ptr(clone + l.nbl_ndis_pool_handle, pool)?;
    let mut mdls = Vec::new();
    let mut prev_next = clone + l.nbl_first_net_buffer;
    for (i, (d, spans)) in nbs.into_iter().enumerate() {
        let nb = clone + nb_at + stride * i as u64;
        k.write_ptr(prev_next, nb)?;
        prev_next = nb + l.nb_next;
        let (chain, offset) = if use_original {
            (d.current_mdl, d.offset)
        } else {
            let mut first = 0;
            let mut prev = 0;
            for s in spans {
                let mdl = new_buffer(k, s.va, s.len as u32)?;
                if prev == 0 {
                    first = mdl;
                } else {
                    k.write_ptr(prev + k.layout.mdl_next, mdl)?;
                }
                prev = mdl;
                mdls.push(mdl);
            }
            (first, 0)
        };
        init_nb(k, nb, pool, chain, offset, u64::from(d.length))?;
    }
    if let Some(p) = k.extension::<NdisState>().nbl_pools.get_mut(&pool) {
        p.allocated.insert(
            clone,
            PoolNbl::Clone {
                original,
                original_mdls: use_original,
                mdls,
            },
        );
    }
    Ok(clone)
}

/// NdisFreeCloneNetBufferList(CloneNetBufferList, FreeCloneFlags): frees a clone and what NDIS
/// built for it. An NBL that is not a live clone is a driver bug (bug check 0x7C); flags that do
/// not say how the clone was made (on Windows: freeing the original's MDLs, or leaking the
/// clone's) are one recorded against the pool's adapter, and the clone is freed as it was made.
pub fn free_clone_net_buffer_list(k: &mut Kernel, clone: u64, flags: u32) -> KResult<()> {
    let l = crate::layout6(k);
    let pool = k.read_ptr(clone + l.nbl_ndis_pool_handle)?;
    let p = k.extension::<NdisState>().nbl_pools.get(&pool).cloned();
    let Some(PoolNbl::Clone { original_mdls, .. }) =
        p.as_ref().and_then(|p| p.allocated.get(&clone))
    else {
        return Err(KernelError::bug_check(
            0x7C,
            format!("NdisFreeCloneNetBufferList of {clone:#x}, which is not a clone NDIS allocated (freed twice?)"),
        ));
    };
    if *original_mdls != (flags & CLONE_FLAGS_USE_ORIGINAL_MDLS != 0) {
        let what = format!("NdisFreeCloneNetBufferList of {clone:#x} with FreeCloneFlags {flags:#x}, which do not say how it was allocated");
        tracing::warn!(target: "ica::ndis", "{what}");
        let handle = p.map_or(0, |p| p.ndis_handle);
        if let Some(a) = adapter_mut(k, handle) {
            a.findings.push(what);
        }
    }
    take_pool_nbl(k, pool, clone)
}

/// NdisCopyFromNetBufferToNetBuffer(Destination, DestinationOffset, BytesToCopy, Source,
/// SourceOffset, BytesCopied): copies up to BytesToCopy bytes of the source's data (from
/// SourceOffset into it) into the destination's MDLs (from DestinationOffset past its
/// CurrentMdlOffset); fewer when the source data or the destination's MDL chain ends first. The
/// destination NB is not changed. NDIS_STATUS_INVALID_PARAMETER (nothing copied) for a NULL or
/// bad pointer or a malformed NB.
pub fn copy_from_net_buffer_to_net_buffer(
    k: &mut Kernel,
    dest: u64,
    dest_offset: u32,
    bytes: u32,
    src: u64,
    src_offset: u32,
    copied_out: u64,
) -> KResult<NdisStatus> {
    const CALL: &str = "NdisCopyFromNetBufferToNetBuffer";
    if dest == 0 || src == 0 || copied_out == 0 {
        tracing::warn!(target: "ica::ndis", "{CALL} with a NULL NET_BUFFER or BytesCopied");
        return Ok(crate::NDIS_STATUS_INVALID_PARAMETER);
    }
    let copy = |k: &mut Kernel| -> KResult<NdisStatus> {
        k.m.mem.write_u32(copied_out, 0)?;
        let s = nb_data(k, src)?;
        let want = u64::from(bytes.min(s.length.saturating_sub(src_offset)));
        let from = match mdl_spans(
            k,
            s.current_mdl,
            u64::from(s.offset) + u64::from(src_offset),
            want,
        )? {
            Ok(spans) => spans,
            Err(e) => {
                tracing::warn!(target: "ica::ndis", "{CALL}: source {src:#x}: {e}");
                return Ok(crate::NDIS_STATUS_INVALID_PARAMETER);
            }
        };
        let d = nb_data(k, dest)?;
        let to = match mdl_spans(
            k,
            d.current_mdl,
            u64::from(d.offset) + u64::from(dest_offset),
            span_bytes(&from),
        )? {
            Ok(spans) => spans,
            Err(e) => {
                tracing::warn!(target: "ica::ndis", "{CALL}: destination {dest:#x}: {e}");
                return Ok(crate::NDIS_STATUS_INVALID_PARAMETER);
            }
        };
        let mut data = read_spans(k, &from)?;
        data.truncate(span_bytes(&to) as usize);
        let mut at = 0;
        for s in &to {
            let n = (s.len as usize).min(data.len() - at);
            k.m.mem.write_bytes(s.va, &data[at..at + n])?;
            at += n;
        }
        k.m.mem.write_u32(copied_out, at as u32)?;
        Ok(NDIS_STATUS_SUCCESS)
    };
    no_fault(CALL, crate::NDIS_STATUS_INVALID_PARAMETER, copy(k))
}

/// The NetBufferListInfo entries NdisCopyReceiveNetBufferListInfo copies (NDIS 6.0):
/// TcpIpChecksum, IPsecOffloadV1, TcpReceiveNoPush, Ieee8021Q, MediaSpecificInformation,
/// NetBufferListFrameType, NetBufferListHashValue, NetBufferListHashInfo. ClassificationHandle,
/// the cancel ID and the WFP entry are not receive information.
pub const RECEIVE_INFO_ENTRIES: [u64; 8] = [0, 1, 2, 4, 6, 7, 8, 9];

/// NdisCopyReceiveNetBufferListInfo(DestNetBufferList, SrcNetBufferList): copies the receive
/// entries of NetBufferListInfo ([`RECEIVE_INFO_ENTRIES`]). A NULL or bad pointer copies nothing.
pub fn copy_receive_net_buffer_list_info(k: &mut Kernel, dest: u64, src: u64) -> KResult<()> {
    const CALL: &str = "NdisCopyReceiveNetBufferListInfo";
    if dest == 0 || src == 0 {
        tracing::warn!(target: "ica::ndis", "{CALL} with a NULL NBL");
        return Ok(());
    }
    let l = crate::layout6(k);
    let copy = |k: &mut Kernel| -> KResult<()> {
        for i in RECEIVE_INFO_ENTRIES {
            let at = l.nbl_net_buffer_list_info + i * k.ptr_size();
            let v = k.read_ptr(src + at)?;
            k.write_ptr(dest + at, v)?;
        }
        Ok(())
    };
    no_fault(CALL, (), copy(k))
}

/// `r`, except that a bad guest pointer (a fault of the host's own access) becomes `value` and a
/// warning naming `call`: what an NDIS function reports for bad input instead of ending the call
/// path.
pub(crate) fn no_fault<T>(call: &str, value: T, r: KResult<T>) -> KResult<T> {
    match r {
        Err(KernelError::Mem(fault)) => {
            tracing::warn!(target: "ica::ndis", "{call}: bad guest pointer: {fault}");
            Ok(value)
        }
        other => other,
    }
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

/// A run of bytes inside one MDL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The MDL.
    pub(crate) mdl: u64,
    /// Virtual address of the first byte.
    pub(crate) va: u64,
    /// Bytes.
    pub(crate) len: u64,
}

/// Up to `len` bytes of the MDL chain at `mdl` from `skip` bytes into it, one span per MDL
/// touched (fewer bytes when the chain ends first); an error text for a chain of more than
/// [`MAX_CHAIN`] MDLs. Bad guest pointers are faults.
pub(crate) fn mdl_spans(
    k: &Kernel,
    mut mdl: u64,
    mut skip: u64,
    len: u64,
) -> KResult<Result<Vec<Span>, String>> {
    let mut spans = Vec::new();
    let (mut left, mut mdls) = (len, 0);
    while left > 0 && mdl != 0 {
        mdls += 1;
        if mdls > MAX_CHAIN {
            return Ok(Err(format!(
                "the MDL chain has more than {MAX_CHAIN} MDLs (a cycle?)"
            )));
        }
        let (va, count) = buffer_extent(k, mdl)?;
        let count = u64::from(count);
        if skip >= count {
            skip -= count;
        } else {
            let take = (count - skip).min(left);
            spans.push(Span {
                mdl,
                va: va + skip,
                len: take,
            });
            left -= take;
            skip = 0;
        }
        mdl = k.read_ptr(mdl + k.layout.mdl_next)?;
    }
    Ok(Ok(spans))
}

/// Total bytes of `spans`.
pub(crate) fn span_bytes(spans: &[Span]) -> u64 {
    spans.iter().map(|s| s.len).sum()
}

/// Where a NET_BUFFER's data is: DataLength bytes from CurrentMdl at CurrentMdlOffset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NbData {
    /// CurrentMdl.
    pub(crate) current_mdl: u64,
    /// CurrentMdlOffset.
    pub(crate) offset: u32,
    /// DataLength.
    pub(crate) length: u32,
}

/// Reads the data fields of NET_BUFFER `nb`.
pub(crate) fn nb_data(k: &Kernel, nb: u64) -> KResult<NbData> {
    let l = crate::layout6(k);
    Ok(NbData {
        current_mdl: k.read_ptr(nb + l.nb_current_mdl)?,
        offset: k.m.mem.read_u32(nb + l.nb_current_mdl_offset)?,
        length: k.m.mem.read_u32(nb + l.nb_data_length)?,
    })
}

/// The spans of a NET_BUFFER's `len` bytes of data from `from` bytes into it; an error text when
/// they run past its MDL chain.
pub(crate) fn nb_spans(
    k: &Kernel,
    nb: u64,
    d: NbData,
    from: u64,
    len: u64,
) -> KResult<Result<Vec<Span>, String>> {
    let spans = match mdl_spans(k, d.current_mdl, u64::from(d.offset) + from, len)? {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("NET_BUFFER {nb:#x}: {e}"))),
    };
    let got = span_bytes(&spans);
    if got < len {
        return Ok(Err(format!(
            "NET_BUFFER {nb:#x} has DataLength {}, but its MDL chain holds {got} bytes from CurrentMdlOffset {}",
            d.length, d.offset
        )));
    }
    Ok(Ok(spans))
}

/// Reads the bytes of `spans`.
fn read_spans(k: &Kernel, spans: &[Span]) -> KResult<Vec<u8>> {
    let mut data = Vec::with_capacity(span_bytes(spans) as usize);
    for s in spans {
        data.extend(k.m.mem.read_vec(s.va, s.len as usize)?);
    }
    Ok(data)
}

/// The bytes a NET_BUFFER describes: DataLength bytes from CurrentMdl at CurrentMdlOffset,
/// following the MDLs' Next; an error text when they run past the MDL chain.
fn nb_bytes(k: &Kernel, nb: u64) -> KResult<Result<Vec<u8>, String>> {
    let d = nb_data(k, nb)?;
    if d.length > MAX_NB_BYTES {
        return Ok(Err(format!(
            "NET_BUFFER {nb:#x} has DataLength {} (more than {MAX_NB_BYTES})",
            d.length
        )));
    }
    Ok(match nb_spans(k, nb, d, 0, u64::from(d.length))? {
        Ok(spans) => Ok(read_spans(k, &spans)?),
        Err(e) => Err(e),
    })
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

/// A send slot holding `frame` laid out as `layout` (a free one, or a new one while under the
/// outstanding limit).
fn take_slot(
    k: &mut Kernel,
    block: u64,
    frame: &[u8],
    layout: SendLayout,
) -> KResult<Option<SendSlot>> {
    let v = ndis6(k, block)?;
    let room = v.sends.outstanding.len() < MAX_OUTSTANDING_SENDS;
    let slot = match v.sends.free.pop() {
        Some(s) => s,
        None if room => {
            let (nb_at, header_at) = block_parts(k);
            let data_at = header_at + SEND_HEADER_BYTES;
            let nbl = ex::allocate(
                k,
                data_at + u64::from(SEND_BUFFER_BYTES),
                SEND_TAG,
                NDIS_OWNER.into(),
            )?;
            let (header, data) = (nbl + header_at, nbl + data_at);
            let header_mdl = mm::create_mdl_for_buffer(k, header, SEND_HEADER_BYTES)?;
            let mdl = mm::create_mdl_for_buffer(k, data, u64::from(SEND_BUFFER_BYTES))?;
            SendSlot {
                nbl,
                nb: nbl + nb_at,
                header,
                header_mdl,
                data,
                mdl,
            }
        }
        None => return Ok(None),
    };
    let l = crate::layout6(k);
    k.m.mem.fill(slot.nbl, 0, slot.data - slot.nbl)?;
    let next = k.layout.mdl_next;
    k.write_ptr(slot.mdl + next, 0)?;
    let (chain, offset) = match layout {
        SendLayout::Contiguous | SendLayout::Offset(_) => {
            let offset = match layout {
                SendLayout::Offset(n) => u32::from(n),
                _ => 0,
            };
            k.m.mem.write_bytes(slot.data + u64::from(offset), frame)?;
            adjust_buffer_length(k, slot.mdl, offset + frame.len() as u32)?;
            (slot.mdl, offset)
        }
        SendLayout::SplitHeader => {
            let (head, rest) = frame.split_at(frame.len().min(ETH_HEADER));
            k.m.mem.write_bytes(slot.header, head)?;
            k.m.mem.write_bytes(slot.data, rest)?;
            adjust_buffer_length(k, slot.header_mdl, head.len() as u32)?;
            adjust_buffer_length(k, slot.mdl, rest.len() as u32)?;
            let tail = if rest.is_empty() { 0 } else { slot.mdl };
            k.write_ptr(slot.header_mdl + next, tail)?;
            (slot.header_mdl, 0)
        }
    };
    k.write_ptr(slot.nbl + l.nbl_first_net_buffer, slot.nb)?;
    init_nb(k, slot.nb, 0, chain, offset, frame.len() as u64)?;
    Ok(Some(slot))
}

/// Frees an adapter's send NBLs (at halt).
pub(crate) fn free_send_slots(k: &mut Kernel, slots: &SendSlots) -> KResult<()> {
    for s in slots.free.iter().chain(slots.outstanding.values()) {
        mm::free_mdl(k, s.mdl)?;
        mm::free_mdl(k, s.header_mdl)?;
        ex::free(k, s.nbl, None)?;
    }
    Ok(())
}

/// Lays out the frames the host sends to the NDIS 6 adapter `block` as `layout` from now on.
pub fn set_send_layout(k: &mut Kernel, block: u64, layout: SendLayout) -> KResult<()> {
    ndis6(k, block)?.send_layout = layout;
    Ok(())
}

/// The NDIS 6 side of [`crate::miniport::send`]: frames from the front of `frames` go to
/// MiniportSendNetBufferLists in chains of up to [`SEND_BATCH`] NBLs (one NET_BUFFER each) at
/// DISPATCH_LEVEL; the miniport completes them with NdisMSendNetBufferListsComplete. Nothing is
/// sent while the adapter is not Running (the frames wait), nor beyond
/// [`MAX_OUTSTANDING_SENDS`]; a frame that does not fit [`SEND_BUFFER_BYTES`] (with the
/// [`SendLayout::Offset`] back-fill) is dropped and counted as a failed send.
pub(crate) fn send(k: &mut Kernel, block: u64, frames: &mut VecDeque<Vec<u8>>) -> KResult<()> {
    let v = ndis6(k, block)?;
    if v.state != RunState::Running {
        return return_nbls(k, block);
    }
    let (handler, layout) = (v.chars.send, v.send_layout);
    let room = match layout {
        SendLayout::Offset(n) => (SEND_BUFFER_BYTES as usize).saturating_sub(usize::from(n)),
        _ => SEND_BUFFER_BYTES as usize,
    };
    let l = crate::layout6(k);
    while !frames.is_empty() {
        let mut batch: Vec<SendSlot> = Vec::new();
        while batch.len() < SEND_BATCH {
            let Some(frame) = frames.pop_front() else {
                break;
            };
            if frame.len() > room {
                tracing::warn!(target: "ica::ndis", "dropping a {}-byte frame (larger than {room})", frame.len());
                adapter(k, block)?.stats.sends_failed += 1;
                continue;
            }
            match take_slot(k, block, &frame, layout)? {
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
    for &nbl in &list {
        let clones = live_clones_of(k, nbl);
        if clones != 0 {
            return Err(malformed(
                k,
                handle,
                CALL,
                format!("NBL {nbl:#x} is completed while {clones} clones still describe its data"),
            )?);
        }
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
    stdcall NdisAllocateCloneNetBufferList => allocate_clone_net_buffer_list(original_net_buffer_list: u64, net_buffer_list_pool_handle: u64, net_buffer_pool_handle: u64, allocate_clone_flags: u32);
    stdcall NdisFreeCloneNetBufferList => free_clone_net_buffer_list(clone_net_buffer_list: u64, free_clone_flags: u32);
    stdcall NdisCopyFromNetBufferToNetBuffer => copy_from_net_buffer_to_net_buffer(destination: u64, destination_offset: u32, bytes_to_copy: u32, source: u64, source_offset: u32, bytes_copied: u64);
    stdcall NdisCopyReceiveNetBufferListInfo => copy_receive_net_buffer_list_info(dest_net_buffer_list: u64, src_net_buffer_list: u64);
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

    /// An NBL of `pool` with one NB over two MDLs (16 and 64 bytes of `0..80`), its data
    /// starting `data_offset` bytes into the chain for `length` bytes; returns the NBL and the
    /// chain's bytes.
    fn two_mdl_nbl(k: &mut Kernel, pool: u64, data_offset: u32, length: u64) -> (u64, Vec<u8>) {
        let bytes: Vec<u8> = (0..80).collect();
        let a = block(k, 16);
        let b = block(k, 64);
        k.m.mem.write_bytes(a, &bytes[..16]).unwrap();
        k.m.mem.write_bytes(b, &bytes[16..]).unwrap();
        let m1 = new_buffer(k, a, 16).unwrap();
        let m2 = new_buffer(k, b, 64).unwrap();
        k.write_ptr(m1 + k.layout.mdl_next, m2).unwrap();
        let nbl = allocate_net_buffer_and_net_buffer_list(k, pool, 0, 0, m1, data_offset, length)
            .unwrap();
        (nbl, bytes)
    }

    /// The frames `nbl` describes (one per NB).
    fn frames(k: &Kernel, nbl: u64) -> Vec<Vec<u8>> {
        read_received(k, nbl, 1).unwrap().unwrap().remove(0).1
    }

    #[test]
    fn clones_describe_the_original_data_and_are_checked() {
        let mdl_tag = u32::from_le_bytes(*b"Mdl ");
        for arch in ARCHES {
            let mut k = kernel(arch);
            let l = crate::layout6(&k);
            let params = pool_params(&mut k, true, 0);
            let pool = allocate_net_buffer_list_pool(&mut k, 0xADA, params).unwrap();
            let bare = pool_params(&mut k, false, 0);
            let clones = allocate_net_buffer_list_pool(&mut k, 0xADA, bare).unwrap();
            // Data from 10 bytes into the second MDL (CurrentMdlOffset 10) to 4 bytes before the end.
            let (original, bytes) = two_mdl_nbl(&mut k, pool, 26, 50);
            let want = vec![bytes[26..76].to_vec()];
            assert_eq!(frames(&k, original), want);
            let mdls_before = k.pool.tag_usage(mdl_tag).blocks;

            // New MDLs over the original buffers: the clone's data starts at its first MDL.
            let clone = allocate_clone_net_buffer_list(&mut k, original, clones, 0, 0).unwrap();
            assert_ne!(clone, 0);
            assert_eq!(frames(&k, clone), want, "{}", arch.name());
            let nb = k.read_ptr(clone + l.nbl_first_net_buffer).unwrap();
            let original_nb = k.read_ptr(original + l.nbl_first_net_buffer).unwrap();
            assert_ne!(nb, original_nb);
            assert_eq!(k.m.mem.read_u32(nb + l.nb_data_offset).unwrap(), 0);
            assert_eq!(k.m.mem.read_u32(nb + l.nb_current_mdl_offset).unwrap(), 0);
            let first = k.read_ptr(nb + l.nb_mdl_chain).unwrap();
            assert_eq!(
                buffer_extent(&k, first).unwrap().1,
                50,
                "one MDL: the data lies in one"
            );
            assert_eq!(k.pool.tag_usage(mdl_tag).blocks, mdls_before + 1);
            assert_eq!(k.read_ptr(clone + l.nbl_ndis_pool_handle).unwrap(), clones);
            // The caller maintains the family: NDIS leaves them alone.
            assert_eq!(k.read_ptr(clone + l.nbl_parent_net_buffer_list).unwrap(), 0);
            assert_eq!(
                k.m.mem.read_u32(original + l.nbl_child_ref_count).unwrap(),
                0
            );
            assert_eq!(k.read_ptr(clone + l.nbl_context).unwrap(), 0, "no context");

            // The original MDLs: the clone's chain starts at the original's CurrentMdl.
            let shared = allocate_clone_net_buffer_list(
                &mut k,
                original,
                0,
                0,
                CLONE_FLAGS_USE_ORIGINAL_MDLS,
            )
            .unwrap();
            assert_eq!(frames(&k, shared), want);
            let nb = k.read_ptr(shared + l.nbl_first_net_buffer).unwrap();
            let current = k.read_ptr(original_nb + l.nb_current_mdl).unwrap();
            assert_eq!(k.read_ptr(nb + l.nb_mdl_chain).unwrap(), current);
            assert_eq!(k.m.mem.read_u32(nb + l.nb_data_offset).unwrap(), 10);
            assert_eq!(
                k.pool.tag_usage(mdl_tag).blocks,
                mdls_before + 1,
                "no new MDL"
            );
            // Without a pool handle it comes from NDIS's own pool of the caller.
            let internal = k.read_ptr(shared + l.nbl_ndis_pool_handle).unwrap();
            assert!(k.extension::<NdisState>().nbl_pools[&internal].internal);

            // The original cannot go while clones describe its data; a clone is not freed as an NBL.
            let err = free_net_buffer_list(&mut k, original).unwrap_err();
            assert!(err.to_string().contains("2 clones"), "{err}");
            let err = free_net_buffer_list(&mut k, clone).unwrap_err();
            assert!(
                err.to_string().contains("NdisFreeCloneNetBufferList"),
                "{err}"
            );
            free_clone_net_buffer_list(&mut k, clone, 0).unwrap();
            assert_eq!(
                k.pool.tag_usage(mdl_tag).blocks,
                mdls_before,
                "its MDL went with it"
            );
            let err = free_clone_net_buffer_list(&mut k, clone, 0).unwrap_err();
            assert!(
                matches!(err, KernelError::BugCheck { code: 0x7C, .. }),
                "{err}"
            );
            free_clone_net_buffer_list(&mut k, shared, CLONE_FLAGS_USE_ORIGINAL_MDLS).unwrap();
            assert!(
                !k.extension::<NdisState>().nbl_pools.contains_key(&internal),
                "NDIS's own pool goes with its last clone"
            );
            free_net_buffer_list(&mut k, original).unwrap();

            // An original whose data runs past its MDLs cannot be cloned; NULL and bad flags fail.
            let (long, _) = two_mdl_nbl(&mut k, pool, 0, 81);
            assert_eq!(
                allocate_clone_net_buffer_list(&mut k, long, clones, 0, 0).unwrap(),
                0
            );
            assert_eq!(
                allocate_clone_net_buffer_list(&mut k, 0, clones, 0, 0).unwrap(),
                0
            );
            assert_eq!(
                allocate_clone_net_buffer_list(&mut k, long, clones, 0, 0x80).unwrap(),
                0
            );
            assert_eq!(
                allocate_clone_net_buffer_list(&mut k, long, 0xBAD, 0, 0).unwrap(),
                0
            );
            // A bad NBL pointer is a NULL clone, not a fault.
            assert_eq!(
                allocate_clone_net_buffer_list(&mut k, 0x10, clones, 0, 0).unwrap(),
                0
            );
        }
    }

    #[test]
    fn net_buffer_copies_follow_both_mdl_chains() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let l = crate::layout6(&k);
            let params = pool_params(&mut k, true, 0);
            let pool = allocate_net_buffer_list_pool(&mut k, 0xADA, params).unwrap();
            let (src, bytes) = two_mdl_nbl(&mut k, pool, 4, 70);
            let src_nb = k.read_ptr(src + l.nbl_first_net_buffer).unwrap();
            // The destination: 48 bytes of space over two MDLs, 8 bytes of back-fill first.
            let d1 = block(&mut k, 20);
            let d2 = block(&mut k, 28);
            let m1 = new_buffer(&mut k, d1, 20).unwrap();
            let m2 = new_buffer(&mut k, d2, 28).unwrap();
            k.write_ptr(m1 + k.layout.mdl_next, m2).unwrap();
            let dst =
                allocate_net_buffer_and_net_buffer_list(&mut k, pool, 0, 0, m1, 8, 0).unwrap();
            let dst_nb = k.read_ptr(dst + l.nbl_first_net_buffer).unwrap();
            let out = block(&mut k, 4);
            let copy = |k: &mut Kernel, dst_off: u32, n: u32, src_off: u32| -> (NdisStatus, u32) {
                let s =
                    copy_from_net_buffer_to_net_buffer(k, dst_nb, dst_off, n, src_nb, src_off, out)
                        .unwrap();
                (s, k.m.mem.read_u32(out).unwrap())
            };
            // 10 bytes from 3 into the source data, to 2 into the destination data.
            assert_eq!(copy(&mut k, 2, 10, 3), (NDIS_STATUS_SUCCESS, 10));
            let mut space = k.m.mem.read_vec(d1, 20).unwrap();
            space.extend(k.m.mem.read_vec(d2, 28).unwrap());
            assert_eq!(space[10..20], bytes[7..17], "{}", arch.name());
            // The destination has 40 bytes from its data start: the copy stops there; the NB
            // is not changed.
            assert_eq!(copy(&mut k, 0, 60, 0), (NDIS_STATUS_SUCCESS, 40));
            let mut space = k.m.mem.read_vec(d1, 20).unwrap();
            space.extend(k.m.mem.read_vec(d2, 28).unwrap());
            assert_eq!(space[8..48], bytes[4..44]);
            assert_eq!(k.m.mem.read_u32(dst_nb + l.nb_data_length).unwrap(), 0);
            // The source has 70 bytes of data: from 65, 5 are left.
            assert_eq!(copy(&mut k, 0, 20, 65), (NDIS_STATUS_SUCCESS, 5));
            assert_eq!(copy(&mut k, 0, 20, 90), (NDIS_STATUS_SUCCESS, 0));
            // Bad input is a clean status.
            let bad = crate::NDIS_STATUS_INVALID_PARAMETER;
            assert_eq!(
                copy_from_net_buffer_to_net_buffer(&mut k, 0, 0, 4, src_nb, 0, out).unwrap(),
                bad
            );
            assert_eq!(
                copy_from_net_buffer_to_net_buffer(&mut k, dst_nb, 0, 4, 0x10, 0, out).unwrap(),
                bad
            );
        }
    }

    #[test]
    fn receive_info_copies_only_the_receive_entries() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let l = crate::layout6(&k);
            let src = block(&mut k, l.nbl_size);
            let dst = block(&mut k, l.nbl_size);
            let slot =
                |k: &Kernel, nbl: u64, i: u64| nbl + l.nbl_net_buffer_list_info + i * k.ptr_size();
            for i in 0..11 {
                let at = slot(&k, src, i);
                k.write_ptr(at, 0x100 + i).unwrap();
            }
            copy_receive_net_buffer_list_info(&mut k, dst, src).unwrap();
            let got: Vec<u64> = (0..11)
                .map(|i| k.read_ptr(slot(&k, dst, i)).unwrap())
                .collect();
            // Classification handle (3), cancel ID (5) and the WFP entry (10) stay.
            assert_eq!(
                got,
                [0x100, 0x101, 0x102, 0, 0x104, 0, 0x106, 0x107, 0x108, 0x109, 0],
                "{}",
                arch.name()
            );
            assert_eq!(slot(&k, dst, 5), dst + l.nbl_cancel_id);
            // NULL or bad pointers copy nothing and do not fault.
            copy_receive_net_buffer_list_info(&mut k, 0, src).unwrap();
            copy_receive_net_buffer_list_info(&mut k, 0x10, src).unwrap();
        }
    }
}
