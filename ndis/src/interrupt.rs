//! Miniport interrupts (NDIS 5): NdisMRegisterInterrupt / NdisMDeregisterInterrupt /
//! NdisMSynchronizeWithInterrupt, and delivery of an asserted line to the ISR and then the
//! interrupt DPC (MiniportHandleInterrupt), at the IRQLs Windows uses: the ISR at the device's
//! IRQL, the handler at DISPATCH_LEVEL.
//!
//! A driver that asked for no ISR (RequestIsr FALSE) gets MiniportDisableInterrupt at device
//! IRQL instead and MiniportEnableInterrupt after MiniportHandleInterrupt, as NDIS does.

use ntoskrnl::export::Export;
use ntoskrnl::{export_table, ke, KResult, Kernel};

use crate::miniport::adapter_mut;
use crate::wrapper::Handler;
use crate::{NdisState, NdisStatus, NDIS_STATUS_FAILURE, NDIS_STATUS_SUCCESS};

/// The IRQL device interrupts are delivered at (DIRQL; above DISPATCH_LEVEL, within cr8's range).
pub const DEVICE_IRQL: u8 = 11;

/// A registered interrupt: the NDIS_MINIPORT_INTERRUPT the driver passed (its identity) and how
/// to deliver it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// The adapter (its NDIS_MINIPORT_BLOCK).
    pub adapter: u64,
    /// The interrupt line (vector) it is connected to.
    pub vector: u32,
    /// Whether the miniport's ISR runs on every interrupt (RequestIsr).
    pub request_isr: bool,
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
            request_isr,
        },
    );
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMDeregisterInterrupt(Interrupt).
pub fn deregister_interrupt(k: &mut Kernel, object: u64) -> KResult<()> {
    if let Some(i) = k.extension::<NdisState>().interrupts.remove(&object) {
        if let Some(a) = adapter_mut(k, i.adapter) {
            a.interrupt = None;
        }
    }
    Ok(())
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

/// Delivers an asserted interrupt line to every miniport interrupt connected to it: the ISR (or
/// MiniportDisableInterrupt) at device IRQL, then MiniportHandleInterrupt at DISPATCH_LEVEL if
/// the ISR asked for it (then MiniportEnableInterrupt where NDIS calls it). Returns whether any
/// miniport recognized the interrupt.
pub fn deliver(k: &mut Kernel, line: u32) -> KResult<bool> {
    let connected: Vec<Interrupt> = k
        .extension::<NdisState>()
        .interrupts
        .values()
        .filter(|i| i.vector == line)
        .copied()
        .collect();
    let mut recognized = false;
    for i in connected {
        let Some((context, chars, flags)) =
            adapter_mut(k, i.adapter).map(|a| (a.context, a.chars.clone(), a.isr_flags()))
        else {
            continue;
        };
        let queue = if i.request_isr {
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
            crate::miniport::at_dispatch(k, |k| {
                k.call_guest(handle, &[context])?;
                if enable != 0 {
                    k.call_guest(enable, &[context])?;
                }
                Ok(())
            })?;
            crate::miniport::after_dpc(k, i.adapter)?;
        }
    }
    Ok(recognized)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisMRegisterInterrupt => register_interrupt(interrupt: u64, miniport_adapter_handle: u64, interrupt_vector: u32, interrupt_level: u32, request_isr: bool, shared_interrupt: bool, interrupt_mode: u32);
    stdcall NdisMDeregisterInterrupt => deregister_interrupt(interrupt: u64);
    stdcall NdisMSynchronizeWithInterrupt => synchronize_with_interrupt(interrupt: u64, synchronize_function: u64, synchronize_context: u64);
];
