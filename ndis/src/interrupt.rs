//! Miniport interrupts: NDIS 5 (NdisMRegisterInterrupt / NdisMDeregisterInterrupt /
//! NdisMSynchronizeWithInterrupt) and NDIS 6 line-based interrupts (NdisMRegisterInterruptEx /
//! NdisMDeregisterInterruptEx / NdisMSynchronizeWithInterruptEx), and delivery of an asserted
//! line to the ISR and then the interrupt DPC, at the IRQLs Windows uses: the ISR at the device's
//! IRQL, the DPC at DISPATCH_LEVEL.
//!
//! NDIS 5: a driver that asked for no ISR (RequestIsr FALSE) gets MiniportDisableInterrupt at
//! device IRQL instead and MiniportEnableInterrupt after MiniportHandleInterrupt, as NDIS does.
//! NDIS 6: MiniportInterrupt(Context, &QueueDefaultInterruptDpc, &TargetProcessors) at device
//! IRQL, then MiniportInterruptDPC(Context, MiniportDpcContext, NULL, NULL) at DISPATCH_LEVEL from
//! the interrupt's KDPC (in the NdisInterruptHandle block), queued when the ISR asks for the
//! default DPC (MiniportDpcContext NULL) or targets processor 0, the only one, or when the miniport
//! calls NdisMQueueDpc / NdisMQueueDpcEx (with its MiniportDpcContext) at any IRQL; queued DPCs
//! run after the ISR returns, or when the IRQL drops below DISPATCH_LEVEL. Message-signalled
//! interrupts are not offered: NdisMRegisterInterruptEx always connects the line.

use ntoskrnl::export::Export;
use ntoskrnl::{ex, export_table, ke, KResult, Kernel};

use crate::miniport::{adapter_mut, at_dispatch};
use crate::wrapper::Handler;
use crate::{
    NdisState, NdisStatus, NDIS_OWNER, NDIS_STATUS_FAILURE, NDIS_STATUS_INVALID_PARAMETER,
    NDIS_STATUS_SUCCESS,
};

/// The IRQL device interrupts are delivered at (DIRQL; above DISPATCH_LEVEL, within cr8's range).
pub const DEVICE_IRQL: u8 = 11;

/// NDIS_OBJECT_TYPE_MINIPORT_INTERRUPT.
const OBJECT_TYPE_MINIPORT_INTERRUPT: u8 = 0x84;
/// NDIS_CONNECT_LINE_BASED (NDIS_INTERRUPT_TYPE).
const CONNECT_LINE_BASED: u32 = 1;

/// How a registered interrupt reaches its miniport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptKind {
    /// NDIS 5: the handlers are the adapter's characteristics.
    Ndis5 {
        /// Whether the miniport's ISR runs on every interrupt (RequestIsr).
        request_isr: bool,
    },
    /// NDIS 6: the handlers of NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS.
    Ndis6 {
        /// MiniportInterruptContext.
        context: u64,
        /// InterruptHandler (MiniportInterrupt).
        isr: u64,
        /// InterruptDpcHandler (MiniportInterruptDPC).
        dpc: u64,
    },
}

/// A registered interrupt, keyed by its identity: the NDIS_MINIPORT_INTERRUPT the NDIS 5 driver
/// passed, or the NdisInterruptHandle NDIS 6 handed out (an NDIS pool block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// The adapter (its handle).
    pub adapter: u64,
    /// The interrupt line (vector) it is connected to.
    pub vector: u32,
    /// The miniport's side.
    pub kind: InterruptKind,
}

/// NdisMRegisterInterrupt(Interrupt, MiniportAdapterHandle, InterruptVector, InterruptLevel,
/// RequestIsr, SharedInterrupt, InterruptMode): the vector must be one of the adapter's
/// interrupt resources.
#[allow(clippy::too_many_arguments)]
pub fn register_interrupt(
    k: &mut Kernel,
    object: u64,
    handle: u64,
    vector: u32,
    _level: u32,
    request_isr: bool,
    _shared: bool,
    _mode: u32,
) -> KResult<NdisStatus> {
    let Some(a) = adapter_mut(k, handle) else {
        return Ok(NDIS_STATUS_FAILURE);
    };
    let assigned = a
        .resources
        .iter()
        .any(|r| matches!(*r, crate::Resource::Interrupt { vector: v, .. } if v == vector));
    if !assigned {
        tracing::warn!(target: "ica::ndis", "{}: NdisMRegisterInterrupt for vector {vector}, which is not the adapter's", a.name);
        return Ok(crate::resources::NDIS_STATUS_RESOURCE_CONFLICT);
    }
    a.interrupt = Some(object);
    k.extension::<NdisState>().interrupts.insert(
        object,
        Interrupt {
            adapter: handle,
            vector,
            kind: InterruptKind::Ndis5 { request_isr },
        },
    );
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMDeregisterInterrupt(Interrupt).
pub fn deregister_interrupt(k: &mut Kernel, object: u64) -> KResult<()> {
    forget(k, object)
}

/// Disconnects a registered interrupt (NDIS 5 or NDIS 6) and frees the handle NDIS allocated
/// for it; an unknown one is ignored.
pub(crate) fn forget(k: &mut Kernel, object: u64) -> KResult<()> {
    let Some(i) = k.extension::<NdisState>().interrupts.remove(&object) else {
        return Ok(());
    };
    if let Some(a) = adapter_mut(k, i.adapter) {
        a.interrupt = None;
    }
    if let InterruptKind::Ndis6 { .. } = i.kind {
        // The miniport is disconnecting: a DPC still queued will not run.
        ke::remove_queue_dpc(k, object)?;
        ex::free(k, object, None)?;
    }
    Ok(())
}

/// NdisMRegisterInterruptEx(MiniportAdapterHandle, MiniportInterruptContext,
/// MiniportInterruptCharacteristics, NdisInterruptHandle): connects the adapter's interrupt line
/// (its first interrupt resource) to InterruptHandler / InterruptDpcHandler and reports
/// NDIS_CONNECT_LINE_BASED in InterruptType. The handle is an NDIS pool block holding the
/// interrupt's KDPC.
pub fn register_interrupt_ex(
    k: &mut Kernel,
    handle: u64,
    context: u64,
    chars: u64,
    handle_out: u64,
) -> KResult<NdisStatus> {
    let l = crate::layout6(k);
    let (kind, _, size) = crate::ndis6::object_header(k, chars)?;
    if kind != OBJECT_TYPE_MINIPORT_INTERRUPT
        || size < l.interrupt_chars_message_info_table + k.ptr_size()
    {
        tracing::warn!(target: "ica::ndis", "NdisMRegisterInterruptEx: bad characteristics header (type {kind:#x}, size {size})");
        return Ok(NDIS_STATUS_INVALID_PARAMETER);
    }
    let isr = k.read_ptr(chars + l.interrupt_chars_interrupt_handler)?;
    let dpc = k.read_ptr(chars + l.interrupt_chars_interrupt_dpc_handler)?;
    let Some(a) = adapter_mut(k, handle) else {
        return Ok(NDIS_STATUS_FAILURE);
    };
    if isr == 0 || dpc == 0 {
        tracing::warn!(target: "ica::ndis", "{}: NdisMRegisterInterruptEx without a line-based InterruptHandler and InterruptDpcHandler", a.name);
        return Ok(NDIS_STATUS_INVALID_PARAMETER);
    }
    if a.interrupt.is_some() {
        tracing::warn!(target: "ica::ndis", "{}: NdisMRegisterInterruptEx with an interrupt already registered", a.name);
        return Ok(NDIS_STATUS_FAILURE);
    }
    let Some(vector) = a.resources.iter().find_map(|r| match *r {
        crate::Resource::Interrupt { vector, .. } => Some(vector),
        _ => None,
    }) else {
        tracing::warn!(target: "ica::ndis", "{}: NdisMRegisterInterruptEx, but the adapter has no interrupt resource", a.name);
        return Ok(crate::resources::NDIS_STATUS_RESOURCE_CONFLICT);
    };
    k.m.mem
        .write_u32(chars + l.interrupt_chars_interrupt_type, CONNECT_LINE_BASED)?;
    k.write_ptr(chars + l.interrupt_chars_message_info_table, 0)?;
    let object = ex::allocate(
        k,
        k.layout.kdpc_size,
        u32::from_le_bytes(*b"NDin"),
        NDIS_OWNER.into(),
    )?;
    let routine = k.host_function(&INTERRUPT_DPC[0]);
    ke::initialize_dpc(k, object, routine, object)?;
    k.extension::<NdisState>().interrupts.insert(
        object,
        Interrupt {
            adapter: handle,
            vector,
            kind: InterruptKind::Ndis6 { context, isr, dpc },
        },
    );
    if let Some(a) = adapter_mut(k, handle) {
        a.interrupt = Some(object);
    }
    k.write_ptr(handle_out, object)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMDeregisterInterruptEx(NdisInterruptHandle).
pub fn deregister_interrupt_ex(k: &mut Kernel, object: u64) -> KResult<()> {
    if !k.extension::<NdisState>().interrupts.contains_key(&object) {
        tracing::warn!(target: "ica::ndis", "NdisMDeregisterInterruptEx of {object:#x}, which is not a registered interrupt");
    }
    forget(k, object)
}

/// Runs `f` at device IRQL, restoring the IRQL after it (also when it fails).
fn at_device_irql<T>(k: &mut Kernel, f: impl FnOnce(&mut Kernel) -> KResult<T>) -> KResult<T> {
    let old = ke::current_irql(k);
    k.m.cpu.cr8 = u64::from(DEVICE_IRQL.max(old));
    let r = f(k);
    k.m.cpu.cr8 = u64::from(old);
    r
}

/// NdisMSynchronizeWithInterrupt(Interrupt, SynchronizeFunction, SynchronizeContext): calls the
/// function at the interrupt's IRQL and returns its BOOLEAN.
pub fn synchronize_with_interrupt(
    k: &mut Kernel,
    _object: u64,
    function: u64,
    context: u64,
) -> KResult<bool> {
    at_device_irql(k, |k| Ok(k.call_guest(function, &[context])? as u8 != 0))
}

/// NdisMSynchronizeWithInterruptEx(NdisInterruptHandle, MessageId, SynchronizeFunction,
/// SynchronizeContext): as NdisMSynchronizeWithInterrupt (one line, so MessageId does not matter).
pub fn synchronize_with_interrupt_ex(
    k: &mut Kernel,
    object: u64,
    _message_id: u32,
    function: u64,
    context: u64,
) -> KResult<bool> {
    synchronize_with_interrupt(k, object, function, context)
}

/// Delivers an asserted interrupt line to every miniport interrupt connected to it: the ISR (or
/// NDIS 5 MiniportDisableInterrupt) at device IRQL, then the DPC (MiniportHandleInterrupt /
/// MiniportInterruptDPC) at DISPATCH_LEVEL if the ISR asked for it (then NDIS 5
/// MiniportEnableInterrupt where NDIS calls it), then NDIS's own after-DPC work (returning lent
/// packets / NBLs). Returns whether any miniport recognized the interrupt.
pub fn deliver(k: &mut Kernel, line: u32) -> KResult<bool> {
    let connected: Vec<(u64, Interrupt)> = k
        .extension::<NdisState>()
        .interrupts
        .iter()
        .filter(|(_, i)| i.vector == line)
        .map(|(o, i)| (*o, *i))
        .collect();
    let mut recognized = false;
    for (object, i) in connected {
        let Some((context, chars, flags)) =
            adapter_mut(k, i.adapter).map(|a| (a.context, a.ndis5_chars(), a.isr_flags()))
        else {
            continue;
        };
        let queued = match (i.kind, chars) {
            (InterruptKind::Ndis5 { request_isr }, Some(chars)) => {
                let queue = if request_isr {
                    let isr = chars.handler(Handler::Isr);
                    k.m.mem.write_u16(flags, 0)?;
                    at_device_irql(k, |k| k.call_guest(isr, &[flags, flags + 1, context]))?;
                    recognized |= k.m.mem.read_u8(flags)? != 0;
                    k.m.mem.read_u8(flags + 1)? != 0
                } else {
                    let disable = chars.handler(Handler::DisableInterrupt);
                    if disable != 0 {
                        at_device_irql(k, |k| k.call_guest(disable, &[context]))?;
                    }
                    recognized = true;
                    true
                };
                if queue {
                    let handle = chars.handler(Handler::HandleInterrupt);
                    let enable = chars.handler(Handler::EnableInterrupt);
                    at_dispatch(k, |k| {
                        k.call_guest(handle, &[context])?;
                        if enable != 0 {
                            k.call_guest(enable, &[context])?;
                        }
                        Ok(())
                    })?;
                }
                queue
            }
            (InterruptKind::Ndis6 { context, isr, .. }, _) => {
                k.m.mem.write_u8(flags, 0)?;
                k.m.mem.write_u32(flags + 4, 0)?;
                let claimed = at_device_irql(k, |k| {
                    let claimed = k.call_guest(isr, &[context, flags, flags + 4])?;
                    let queue =
                        k.m.mem.read_u8(flags)? != 0 || k.m.mem.read_u32(flags + 4)? & 1 != 0;
                    if queue {
                        ke::insert_queue_dpc(k, object, 0, 0)?;
                    }
                    Ok(claimed)
                })?;
                recognized |= claimed as u8 != 0;
                // Back below DISPATCH_LEVEL: the DPCs queued (by the ISR or NdisMQueueDpc) run.
                ke::run_dpcs(k)?;
                false
            }
            (InterruptKind::Ndis5 { .. }, None) => false,
        };
        if queued {
            crate::miniport::after_dpc(k, i.adapter)?;
        }
    }
    Ok(recognized)
}

/// NDIS's DPC routine of every NDIS 6 interrupt (DeferredContext: the NdisInterruptHandle;
/// SystemArgument1: the MiniportDpcContext): MiniportInterruptDPC at DISPATCH_LEVEL, then NDIS's
/// after-DPC work.
fn interrupt_dpc(
    k: &mut Kernel,
    _dpc: u64,
    object: u64,
    dpc_context: u64,
    _arg2: u64,
) -> KResult<()> {
    let Some(i) = k.extension::<NdisState>().interrupts.get(&object).copied() else {
        tracing::warn!(target: "ica::ndis", "interrupt DPC {object:#x} ran for an interrupt NDIS no longer knows");
        return Ok(());
    };
    let InterruptKind::Ndis6 { context, dpc, .. } = i.kind else {
        return Ok(());
    };
    k.call_guest(dpc, &[context, dpc_context, 0, 0])?;
    crate::miniport::after_dpc(k, i.adapter)
}

/// Queues the interrupt's DPC for processor 0 (the only one) if `targets` names it; returns the
/// processors it was queued for (0 when it already was, or for an unknown handle).
fn queue_interrupt_dpc(
    k: &mut Kernel,
    call: &str,
    object: u64,
    targets: u64,
    dpc_context: u64,
) -> KResult<u64> {
    let known = matches!(
        k.extension::<NdisState>().interrupts.get(&object),
        Some(Interrupt {
            kind: InterruptKind::Ndis6 { .. },
            ..
        })
    );
    if !known {
        tracing::warn!(target: "ica::ndis", "{call} with {object:#x}, which is not an NdisInterruptHandle");
        return Ok(0);
    }
    if targets & 1 == 0 {
        return Ok(0);
    }
    let queued = ke::insert_queue_dpc(k, object, dpc_context, 0)?;
    Ok(u64::from(queued))
}

/// NdisMQueueDpc(NdisInterruptHandle, MessageId, TargetProcessors, MiniportDpcContext) -> the
/// processors a DPC was queued for: MiniportInterruptDPC(Context, MiniportDpcContext, ...) runs at
/// DISPATCH_LEVEL on processor 0 if bit 0 is set and its DPC is not already queued.
pub fn queue_dpc(
    k: &mut Kernel,
    object: u64,
    _message_id: u32,
    targets: u32,
    dpc_context: u64,
) -> KResult<u32> {
    Ok(queue_interrupt_dpc(k, "NdisMQueueDpc", object, u64::from(targets), dpc_context)? as u32)
}

/// NdisMQueueDpcEx(NdisInterruptHandle, MessageId, TargetProcessors, MiniportDpcContext) -> the
/// processors (KAFFINITY of TargetProcessors' group) a DPC was queued for; as [`queue_dpc`] with
/// a GROUP_AFFINITY, whose group must be 0. A NULL or bad TargetProcessors queues nothing.
pub fn queue_dpc_ex(
    k: &mut Kernel,
    object: u64,
    _message_id: u32,
    targets: u64,
    dpc_context: u64,
) -> KResult<u64> {
    const CALL: &str = "NdisMQueueDpcEx";
    let l = crate::layout6(k);
    let read = |k: &mut Kernel| -> KResult<(u64, u16)> {
        Ok((
            k.read_ptr(targets + l.group_affinity_mask)?,
            k.m.mem.read_u16(targets + l.group_affinity_group)?,
        ))
    };
    let (mask, group) = if targets == 0 {
        (0, 0)
    } else {
        crate::nbl::no_fault(CALL, (0, 0), read(k))?
    };
    if group != 0 {
        tracing::warn!(target: "ica::ndis", "{CALL} for processor group {group} (there is only group 0)");
        return Ok(0);
    }
    queue_interrupt_dpc(k, CALL, object, mask, dpc_context)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisMRegisterInterrupt => register_interrupt(interrupt: u64, miniport_adapter_handle: u64, interrupt_vector: u32, interrupt_level: u32, request_isr: bool, shared_interrupt: bool, interrupt_mode: u32);
    stdcall NdisMDeregisterInterrupt => deregister_interrupt(interrupt: u64);
    stdcall NdisMSynchronizeWithInterrupt => synchronize_with_interrupt(interrupt: u64, synchronize_function: u64, synchronize_context: u64);
    stdcall NdisMRegisterInterruptEx => register_interrupt_ex(miniport_adapter_handle: u64, miniport_interrupt_context: u64, miniport_interrupt_characteristics: u64, ndis_interrupt_handle: u64);
    stdcall NdisMDeregisterInterruptEx => deregister_interrupt_ex(ndis_interrupt_handle: u64);
    stdcall NdisMSynchronizeWithInterruptEx => synchronize_with_interrupt_ex(ndis_interrupt_handle: u64, message_id: u32, synchronize_function: u64, synchronize_context: u64);
    stdcall NdisMQueueDpc => queue_dpc(ndis_interrupt_handle: u64, message_id: u32, target_processors: u32, miniport_dpc_context: u64);
    stdcall NdisMQueueDpcEx => queue_dpc_ex(ndis_interrupt_handle: u64, message_id: u32, target_processors: u64, miniport_dpc_context: u64);
];

/// NDIS's DPC routine of every NDIS 6 interrupt (not an export).
static INTERRUPT_DPC: &[Export] = export_table![
    stdcall ndisInterruptDpc => interrupt_dpc(dpc: u64, deferred_context: u64, system_argument1: u64, system_argument2: u64);
];
