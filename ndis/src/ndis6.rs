//! NDIS 6.0 miniport drivers and adapters: NdisMRegisterMiniportDriver /
//! NdisMDeregisterMiniportDriver, the adapter attributes (NdisMSetMiniportAttributes), the adapter
//! lifecycle (MiniportInitializeEx, MiniportPause / NdisMPauseComplete, MiniportRestart /
//! NdisMRestartComplete, MiniportHaltEx), OID requests (NDIS_OID_REQUEST, NdisMOidRequestComplete)
//! and status indications (NdisMIndicateStatusEx). The data path is in [`crate::nbl`]; the
//! host-facing API is [`crate::miniport`]'s, which dispatches here for NDIS 6 adapters.
//!
//! An NDIS 6 adapter handle is a small opaque NDIS pool block (NDIS 6 miniports call ndis.sys
//! exports, never through fields of the block). After MiniportInitializeEx the adapter is Paused;
//! [`crate::miniport::initialize`] restarts it, as binding a protocol does on Windows. NDIS halts
//! only paused miniports, so halting an NDIS 6 adapter pauses it first. OID requests go to MiniportOidRequest at
//! PASSIVE_LEVEL, as NDIS 6 issues them.

use std::time::{Duration, Instant};

use ntoskrnl::export::Export;
use ntoskrnl::{ex, export_table, ke, rtl, KResult, Kernel, KernelError};

use crate::miniport::{
    adapter, adapter_mut, alloc_scratch, release, Adapter, AdapterEvent, AdapterSetup, Kind,
    PendingRequest, RequestResult, RunState, NDIS_STATUS_PENDING, NDIS_STATUS_UNSUPPORTED_MEDIA,
    SCRATCH_PACKETS,
};
use crate::nbl::{SendLayout, SendSlots};
use crate::{
    alloc_handle, NdisState, NdisStatus, NDIS_OWNER, NDIS_STATUS_BAD_CHARACTERISTICS,
    NDIS_STATUS_BAD_VERSION, NDIS_STATUS_FAILURE, NDIS_STATUS_INVALID_PARAMETER,
    NDIS_STATUS_SUCCESS,
};

/// NDIS_OBJECT_TYPE_DEFAULT.
pub(crate) const OBJECT_TYPE_DEFAULT: u8 = 0x80;
/// NDIS_OBJECT_TYPE_MINIPORT_INIT_PARAMETERS.
const OBJECT_TYPE_MINIPORT_INIT_PARAMETERS: u8 = 0x81;
/// NDIS_OBJECT_TYPE_MINIPORT_DRIVER_CHARACTERISTICS.
const OBJECT_TYPE_MINIPORT_DRIVER_CHARACTERISTICS: u8 = 0x8A;
/// NDIS_OBJECT_TYPE_OID_REQUEST.
const OBJECT_TYPE_OID_REQUEST: u8 = 0x96;
/// NDIS_OBJECT_TYPE_STATUS_INDICATION.
const OBJECT_TYPE_STATUS_INDICATION: u8 = 0x98;
/// NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES.
const OBJECT_TYPE_REGISTRATION_ATTRIBUTES: u8 = 0x9E;
/// NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES.
const OBJECT_TYPE_GENERAL_ATTRIBUTES: u8 = 0x9F;
/// Attribute kinds NDIS accepts and this host has no use for: offload (0xA0), native 802.11
/// (0xA1), header-data split (0xAB), hardware assist (0xAF).
const OBJECT_TYPES_IGNORED_ATTRIBUTES: [u8; 4] = [0xA0, 0xA1, 0xAB, 0xAF];

/// NDIS_STATUS_LINK_STATE.
pub const NDIS_STATUS_LINK_STATE: NdisStatus = 0x4001_0017;
/// MediaConnectStateConnected (NDIS_MEDIA_CONNECT_STATE).
const MEDIA_CONNECT_STATE_CONNECTED: u32 = 1;
/// MediaConnectStateDisconnected.
const MEDIA_CONNECT_STATE_DISCONNECTED: u32 = 2;
/// NdisRequestQueryInformation / NdisRequestSetInformation (NDIS_REQUEST_TYPE).
const REQUEST_QUERY_INFORMATION: u32 = 0;
const REQUEST_SET_INFORMATION: u32 = 1;
/// NdisHaltDeviceDisabled (NDIS_HALT_ACTION).
const HALT_DEVICE_DISABLED: u64 = 0;
/// PauseReason of a pause the host asks for, and of the pause before a halt.
const NDIS_PAUSE_NDIS_INTERNAL: u32 = 0x0000_0001;
const NDIS_PAUSE_MINIPORT_DEVICE_REMOVE: u32 = 0x0000_0080;
/// NdisMedium802_3.
const NDIS_MEDIUM_802_3: u32 = 0;
/// IF_TYPE_ETHERNET_CSMACD, the IfType of the NetLuid NDIS assigns.
const IF_TYPE_ETHERNET_CSMACD: u64 = 6;
/// How long [`halt`] lets a pended pause run deferred work before halting anyway.
const PAUSE_BEFORE_HALT_TIMEOUT: Duration = Duration::from_secs(2);

/// The handlers of NDIS_MINIPORT_DRIVER_CHARACTERISTICS (revision 1, NDIS 6.0); 0 where absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverCharacteristics {
    /// SetOptionsHandler.
    pub set_options: u64,
    /// InitializeHandlerEx.
    pub initialize: u64,
    /// HaltHandlerEx.
    pub halt: u64,
    /// UnloadHandler (the MiniportDriverUnload NDIS's DriverUnload calls).
    pub unload: u64,
    /// PauseHandler.
    pub pause: u64,
    /// RestartHandler.
    pub restart: u64,
    /// OidRequestHandler.
    pub oid_request: u64,
    /// SendNetBufferListsHandler.
    pub send: u64,
    /// ReturnNetBufferListsHandler.
    pub return_nbls: u64,
    /// CancelSendHandler.
    pub cancel_send: u64,
    /// CheckForHangHandlerEx (optional).
    pub check_for_hang: u64,
    /// ResetHandlerEx (optional).
    pub reset: u64,
    /// DevicePnPEventNotifyHandler.
    pub device_pnp_event_notify: u64,
    /// ShutdownHandlerEx.
    pub shutdown: u64,
    /// CancelOidRequestHandler.
    pub cancel_oid_request: u64,
}

/// A registered NDIS 6 miniport driver (keyed by its NdisMiniportDriverHandle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniportDriver {
    /// The DRIVER_OBJECT.
    pub driver_object: u64,
    /// The driver's registry path (its service key).
    pub registry_path: String,
    /// The driver image.
    pub image: String,
    /// MiniportDriverContext (passed back to MiniportInitializeEx).
    pub context: u64,
    /// The handlers.
    pub chars: DriverCharacteristics,
}

/// The NDIS 6 part of an adapter.
pub(crate) struct Ndis6 {
    /// The miniport driver (NdisMiniportDriverHandle).
    pub(crate) driver: u64,
    /// Its handlers.
    pub(crate) chars: DriverCharacteristics,
    /// Run state.
    pub(crate) state: RunState,
    /// Host-built send NBLs.
    pub(crate) sends: SendSlots,
    /// NBLs the miniport lent in indications, to return after the indicating DPC.
    pub(crate) to_return: Vec<u64>,
    /// How the host lays out the frames it sends.
    pub(crate) send_layout: SendLayout,
    /// The registration attributes were set (they must come first).
    registered: bool,
}

/// The NDIS 6 part of the adapter behind `handle` (an NDIS 6 call on an NDIS 5 adapter is a
/// driver bug).
pub(crate) fn ndis6(k: &mut Kernel, handle: u64) -> KResult<&mut Ndis6> {
    let a = adapter(k, handle)?;
    match &mut a.kind {
        Kind::Ndis6(v) => Ok(v),
        Kind::Ndis5(_) => Err(KernelError::bug_check(
            0x7C,
            format!("{}: an NDIS 6 call on an NDIS 5 adapter", a.name),
        )),
    }
}

/// Whether the image registered an NDIS 6 miniport driver (NdisGetVersion answers 6.0 then).
pub fn is_ndis6_image(k: &mut Kernel, image: &str) -> bool {
    k.extension::<NdisState>()
        .drivers
        .values()
        .any(|d| d.image == image)
}

/// The NDIS 6 miniport driver behind a handle.
pub fn driver(k: &mut Kernel, handle: u64) -> Option<MiniportDriver> {
    k.extension::<NdisState>().drivers.get(&handle).cloned()
}

/// Reads an NDIS_OBJECT_HEADER: (Type, Revision, Size).
pub(crate) fn object_header(k: &Kernel, at: u64) -> KResult<(u8, u8, u64)> {
    let l = crate::layout6(k);
    Ok((
        k.m.mem.read_u8(at + l.object_header_type)?,
        k.m.mem.read_u8(at + l.object_header_revision)?,
        u64::from(k.m.mem.read_u16(at + l.object_header_size_field)?),
    ))
}

/// Writes an NDIS_OBJECT_HEADER.
fn write_object_header(k: &mut Kernel, at: u64, kind: u8, revision: u8, size: u64) -> KResult<()> {
    let l = crate::layout6(k);
    k.m.mem.write_u8(at + l.object_header_type, kind)?;
    k.m.mem.write_u8(at + l.object_header_revision, revision)?;
    k.m.mem
        .write_u16(at + l.object_header_size_field, size as u16)?;
    Ok(())
}

fn read_characteristics(k: &Kernel, chars: u64) -> KResult<DriverCharacteristics> {
    let l = crate::layout6(k);
    let p = |off: u64| k.read_ptr(chars + off);
    Ok(DriverCharacteristics {
        set_options: p(l.driver_chars_set_options_handler)?,
        initialize: p(l.driver_chars_initialize_handler_ex)?,
        halt: p(l.driver_chars_halt_handler_ex)?,
        unload: p(l.driver_chars_unload_handler)?,
        pause: p(l.driver_chars_pause_handler)?,
        restart: p(l.driver_chars_restart_handler)?,
        oid_request: p(l.driver_chars_oid_request_handler)?,
        send: p(l.driver_chars_send_net_buffer_lists_handler)?,
        return_nbls: p(l.driver_chars_return_net_buffer_lists_handler)?,
        cancel_send: p(l.driver_chars_cancel_send_handler)?,
        check_for_hang: p(l.driver_chars_check_for_hang_handler_ex)?,
        reset: p(l.driver_chars_reset_handler_ex)?,
        device_pnp_event_notify: p(l.driver_chars_device_pnp_event_notify_handler)?,
        shutdown: p(l.driver_chars_shutdown_handler_ex)?,
        cancel_oid_request: p(l.driver_chars_cancel_oid_request_handler)?,
    })
}

/// NdisMRegisterMiniportDriver(DriverObject, RegistryPath, MiniportDriverContext,
/// MiniportDriverCharacteristics, NdisMiniportDriverHandle): records an NDIS 6.0 miniport
/// driver, points DriverObject->DriverUnload at NDIS's unload routine and runs MiniportSetOptions
/// if there is one. NDIS_STATUS_BAD_VERSION for a version other than 6.0;
/// NDIS_STATUS_BAD_CHARACTERISTICS for a bad header or a missing required handler.
pub fn register_miniport_driver(
    k: &mut Kernel,
    driver_object: u64,
    registry_path: u64,
    driver_context: u64,
    chars: u64,
    handle_out: u64,
) -> KResult<NdisStatus> {
    let l = crate::layout6(k);
    let (kind, revision, size) = object_header(k, chars)?;
    if kind != OBJECT_TYPE_MINIPORT_DRIVER_CHARACTERISTICS
        || revision < 1
        || size < l.driver_chars_size
    {
        tracing::warn!(target: "ica::ndis", "NdisMRegisterMiniportDriver: bad characteristics header (type {kind:#x}, revision {revision}, size {size})");
        return Ok(NDIS_STATUS_BAD_CHARACTERISTICS);
    }
    let major = k.m.mem.read_u8(chars + l.driver_chars_major_ndis_version)?;
    let minor = k.m.mem.read_u8(chars + l.driver_chars_minor_ndis_version)?;
    if (major, minor) != (6, 0) {
        tracing::warn!(target: "ica::ndis", "NdisMRegisterMiniportDriver for NDIS {major}.{minor} (this host is NDIS 6.0)");
        return Ok(NDIS_STATUS_BAD_VERSION);
    }
    let handlers = read_characteristics(k, chars)?;
    let required = [
        ("InitializeHandlerEx", handlers.initialize),
        ("HaltHandlerEx", handlers.halt),
        ("PauseHandler", handlers.pause),
        ("RestartHandler", handlers.restart),
        ("OidRequestHandler", handlers.oid_request),
        ("SendNetBufferListsHandler", handlers.send),
        ("ReturnNetBufferListsHandler", handlers.return_nbls),
        ("CancelSendHandler", handlers.cancel_send),
        ("ShutdownHandlerEx", handlers.shutdown),
        ("CancelOidRequestHandler", handlers.cancel_oid_request),
    ];
    if let Some((name, _)) = required.iter().find(|(_, h)| *h == 0) {
        tracing::warn!(target: "ica::ndis", "NdisMRegisterMiniportDriver without the required {name}");
        return Ok(NDIS_STATUS_BAD_CHARACTERISTICS);
    }
    let registry_path = if registry_path != 0 {
        rtl::read_unicode_string(k, registry_path)?
    } else {
        String::new()
    };
    let image = k.caller_image();
    let handle = alloc_handle(k, b"NDdr")?;
    k.extension::<NdisState>().drivers.insert(
        handle,
        MiniportDriver {
            driver_object,
            registry_path,
            image,
            context: driver_context,
            chars: handlers,
        },
    );
    k.write_ptr(handle_out, handle)?;
    crate::wrapper::set_driver_unload(k, driver_object)?;
    tracing::debug!(target: "ica::ndis", "NDIS 6.0 miniport driver registered");
    if handlers.set_options != 0 {
        let status = k.call_guest(handlers.set_options, &[handle, driver_context])? as NdisStatus;
        if status != NDIS_STATUS_SUCCESS {
            k.extension::<NdisState>().drivers.remove(&handle);
            ex::free(k, handle, None)?;
            k.write_ptr(handle_out, 0)?;
            return Ok(status);
        }
    }
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMDeregisterMiniportDriver(NdisMiniportDriverHandle) (from MiniportDriverUnload, or from
/// DriverEntry after a failure).
pub fn deregister_miniport_driver(k: &mut Kernel, handle: u64) -> KResult<()> {
    let Some(d) = k.extension::<NdisState>().drivers.remove(&handle) else {
        tracing::warn!(target: "ica::ndis", "NdisMDeregisterMiniportDriver of {handle:#x}, which is not a registered driver");
        return Ok(());
    };
    let live = k
        .extension::<NdisState>()
        .adapters
        .values()
        .filter(|a| matches!(&a.kind, Kind::Ndis6(v) if v.driver == handle))
        .count();
    if live != 0 {
        tracing::warn!(target: "ica::ndis", "{}: NdisMDeregisterMiniportDriver with {live} adapters not halted", d.image);
    }
    ex::free(k, handle, None)
}

/// The NDIS 6 part of NDIS's DriverUnload: MiniportDriverUnload of every NDIS 6 driver of the
/// DRIVER_OBJECT (which deregisters it); a driver that did not deregister is dropped anyway.
pub(crate) fn unload_drivers(k: &mut Kernel, driver_object: u64) -> KResult<()> {
    let drivers: Vec<(u64, MiniportDriver)> = k
        .extension::<NdisState>()
        .drivers
        .iter()
        .filter(|(_, d)| d.driver_object == driver_object)
        .map(|(h, d)| (*h, d.clone()))
        .collect();
    for (handle, d) in drivers {
        if d.chars.unload != 0 {
            k.call_guest(d.chars.unload, &[driver_object])?;
        }
        if k.extension::<NdisState>().drivers.contains_key(&handle) {
            tracing::warn!(target: "ica::ndis", "{}: MiniportDriverUnload did not call NdisMDeregisterMiniportDriver", d.image);
            deregister_miniport_driver(k, handle)?;
        }
    }
    Ok(())
}

/// Creates an NDIS 6 adapter of the driver `driver` and runs MiniportInitializeEx (with the
/// adapter's resources as AllocatedResources), then MiniportRestart. `Ok(Err(status))` when the
/// miniport (or NDIS) failed; everything NDIS allocated is released then.
pub(crate) fn initialize(
    k: &mut Kernel,
    driver: u64,
    setup: AdapterSetup,
) -> KResult<Result<u64, NdisStatus>> {
    let Some(d) = self::driver(k, driver) else {
        tracing::warn!(target: "ica::ndis", "{}: {driver:#x} is not a registered NDIS 6 miniport driver", setup.name);
        return Ok(Err(NDIS_STATUS_FAILURE));
    };
    let block = alloc_handle(k, b"NDm6")?;
    let scratch = alloc_scratch(k)?;
    let kind = Kind::Ndis6(Box::new(Ndis6 {
        driver,
        chars: d.chars,
        state: RunState::Paused,
        sends: SendSlots::default(),
        to_return: Vec::new(),
        send_layout: SendLayout::default(),
        registered: false,
    }));
    let resources = setup.resources.clone();
    let index = k.extension::<NdisState>().adapters.len() as u64 + 1;
    k.extension::<NdisState>()
        .adapters
        .insert(block, Adapter::new(block, scratch, setup, kind));

    // NDIS_MINIPORT_INIT_PARAMETERS, followed by the resource list it points at.
    let l = crate::layout6(k);
    let list_at = l.init_params_size.next_multiple_of(8);
    let list_size = if resources.is_empty() {
        0
    } else {
        crate::resources::write_resource_list(k, 0, 0, &resources)?
    };
    let params = ex::allocate(
        k,
        list_at + list_size,
        u32::from_le_bytes(*b"NDip"),
        NDIS_OWNER.into(),
    )?;
    write_object_header(
        k,
        params,
        OBJECT_TYPE_MINIPORT_INIT_PARAMETERS,
        1,
        l.init_params_size,
    )?;
    if list_size != 0 {
        crate::resources::write_resource_list(k, params + list_at, list_size, &resources)?;
        k.write_ptr(params + l.init_params_allocated_resources, params + list_at)?;
    }
    k.m.mem
        .write_u32(params + l.init_params_if_index, index as u32)?;
    k.m.mem.write_u64(
        params + l.init_params_net_luid,
        (IF_TYPE_ETHERNET_CSMACD << 48) | (index << 24),
    )?;
    let status = k.call_guest(d.chars.initialize, &[block, d.context, params]);
    ex::free(k, params, None)?;
    let status = status? as NdisStatus;
    if status != NDIS_STATUS_SUCCESS {
        for l in release(k, block)? {
            tracing::warn!(target: "ica::ndis", "after a failed MiniportInitializeEx: {l}");
        }
        return Ok(Err(status));
    }
    let a = adapter(k, block)?;
    a.arm_check_for_hang();
    let name = a.name.clone();
    if !ndis6(k, block)?.registered {
        tracing::warn!(target: "ica::ndis", "{name}: MiniportInitializeEx succeeded without setting registration attributes");
    }
    let status = restart(k, block)?;
    if status != NDIS_STATUS_SUCCESS && status != NDIS_STATUS_PENDING {
        tracing::warn!(target: "ica::ndis", "{name}: MiniportRestart failed with {status:#x}; halting the adapter");
        for l in crate::miniport::halt(k, block)? {
            tracing::warn!(target: "ica::ndis", "{l}");
        }
        return Ok(Err(status));
    }
    Ok(Ok(block))
}

/// Pauses a Running adapter for `reason` (see [`crate::miniport::pause`]).
fn pause_for(k: &mut Kernel, block: u64, reason: u32) -> KResult<NdisStatus> {
    match ndis6(k, block)?.state {
        RunState::Paused => return Ok(NDIS_STATUS_SUCCESS),
        RunState::Pausing => return Ok(NDIS_STATUS_PENDING),
        RunState::Restarting => return Ok(NDIS_STATUS_FAILURE),
        RunState::Running => {}
    }
    // What the protocols above hand back before NDIS pauses the miniport.
    crate::nbl::return_nbls(k, block)?;
    let a = adapter(k, block)?;
    let (context, params) = (a.context, a.scratch + SCRATCH_PACKETS);
    let v = ndis6(k, block)?;
    v.state = RunState::Pausing;
    let handler = v.chars.pause;
    let l = crate::layout6(k);
    k.m.mem.fill(params, 0, l.pause_params_size)?;
    write_object_header(k, params, OBJECT_TYPE_DEFAULT, 1, l.pause_params_size)?;
    k.m.mem
        .write_u32(params + l.pause_params_pause_reason, reason)?;
    let status = k.call_guest(handler, &[context, params])? as NdisStatus;
    let v = ndis6(k, block)?;
    match status {
        // NdisMPauseComplete may already have come during the call.
        NDIS_STATUS_PENDING if v.state == RunState::Paused => Ok(NDIS_STATUS_SUCCESS),
        NDIS_STATUS_PENDING => Ok(NDIS_STATUS_PENDING),
        NDIS_STATUS_SUCCESS => {
            v.state = RunState::Paused;
            Ok(NDIS_STATUS_SUCCESS)
        }
        other => {
            v.state = RunState::Paused;
            let a = adapter(k, block)?;
            a.findings.push(format!(
                "{}: MiniportPause returned {other:#x} (only SUCCESS or PENDING are allowed)",
                a.name
            ));
            Ok(NDIS_STATUS_SUCCESS)
        }
    }
}

/// Host API behind [`crate::miniport::pause`].
pub(crate) fn pause(k: &mut Kernel, block: u64) -> KResult<NdisStatus> {
    pause_for(k, block, NDIS_PAUSE_NDIS_INTERNAL)
}

/// Host API behind [`crate::miniport::restart`].
pub(crate) fn restart(k: &mut Kernel, block: u64) -> KResult<NdisStatus> {
    match ndis6(k, block)?.state {
        RunState::Running => return Ok(NDIS_STATUS_SUCCESS),
        RunState::Restarting => return Ok(NDIS_STATUS_PENDING),
        RunState::Pausing => return Ok(NDIS_STATUS_FAILURE),
        RunState::Paused => {}
    }
    let a = adapter(k, block)?;
    let (context, params) = (a.context, a.scratch + SCRATCH_PACKETS);
    let v = ndis6(k, block)?;
    v.state = RunState::Restarting;
    let handler = v.chars.restart;
    let l = crate::layout6(k);
    k.m.mem.fill(params, 0, l.restart_params_size)?;
    write_object_header(k, params, OBJECT_TYPE_DEFAULT, 1, l.restart_params_size)?;
    let status = k.call_guest(handler, &[context, params])? as NdisStatus;
    let v = ndis6(k, block)?;
    match status {
        NDIS_STATUS_PENDING if v.state != RunState::Restarting => Ok(
            // NdisMRestartComplete came during the call.
            if v.state == RunState::Running {
                NDIS_STATUS_SUCCESS
            } else {
                NDIS_STATUS_FAILURE
            },
        ),
        NDIS_STATUS_PENDING => Ok(NDIS_STATUS_PENDING),
        NDIS_STATUS_SUCCESS => {
            v.state = RunState::Running;
            Ok(NDIS_STATUS_SUCCESS)
        }
        other => {
            v.state = RunState::Paused;
            Ok(other)
        }
    }
}

/// The NDIS 6 part of [`crate::miniport::halt`]: pauses the adapter if it is not paused (running
/// the kernel's deferred work for a while if the pause pends), returns what the host holds, then
/// MiniportHaltEx (NdisHaltDeviceDisabled). Returns the problems found.
pub(crate) fn halt(k: &mut Kernel, block: u64) -> KResult<Vec<String>> {
    let mut findings = Vec::new();
    if pause_for(k, block, NDIS_PAUSE_MINIPORT_DEVICE_REMOVE)? == NDIS_STATUS_PENDING {
        let deadline = Instant::now() + PAUSE_BEFORE_HALT_TIMEOUT;
        let paused = ke::block_until(
            k,
            Some(deadline),
            &mut |k| {
                crate::nbl::return_nbls(k, block)?;
                Ok(ndis6(k, block)?.state == RunState::Paused)
            },
            &|| "the pause before a halt".to_string(),
        )?;
        if !paused {
            let a = adapter(k, block)?;
            findings.push(format!(
                "{}: MiniportPause pended and NdisMPauseComplete did not follow within {PAUSE_BEFORE_HALT_TIMEOUT:?}; halted anyway",
                a.name
            ));
            ndis6(k, block)?.state = RunState::Paused;
        }
    }
    // Paused: nothing is in flight any more, except what the host still has to return.
    crate::nbl::return_nbls(k, block)?;
    let context = adapter(k, block)?.context;
    let handler = ndis6(k, block)?.chars.halt;
    k.call_guest(handler, &[context, HALT_DEVICE_DISABLED])?;
    let v = ndis6(k, block)?;
    let late = std::mem::take(&mut v.to_return).len();
    if late != 0 {
        let a = adapter(k, block)?;
        findings.push(format!(
            "{}: {late} NBLs indicated while paused or halting (not returned: the miniport is gone)",
            a.name
        ));
    }
    Ok(findings)
}

/// NdisMPauseComplete(MiniportAdapterHandle).
pub fn pause_complete(k: &mut Kernel, handle: u64) -> KResult<()> {
    let v = ndis6(k, handle)?;
    if v.state != RunState::Pausing {
        let state = v.state;
        return Err(KernelError::bug_check(
            0x7C,
            format!(
                "{}: NdisMPauseComplete while the adapter is {state:?}, not pausing",
                adapter(k, handle)?.name
            ),
        ));
    }
    v.state = RunState::Paused;
    Ok(())
}

/// NdisMRestartComplete(MiniportAdapterHandle, Status).
pub fn restart_complete(k: &mut Kernel, handle: u64, status: NdisStatus) -> KResult<()> {
    let v = ndis6(k, handle)?;
    if v.state != RunState::Restarting {
        let state = v.state;
        return Err(KernelError::bug_check(
            0x7C,
            format!(
                "{}: NdisMRestartComplete while the adapter is {state:?}, not restarting",
                adapter(k, handle)?.name
            ),
        ));
    }
    v.state = if status == NDIS_STATUS_SUCCESS {
        RunState::Running
    } else {
        RunState::Paused
    };
    Ok(())
}

/// NdisMSetMiniportAttributes(NdisMiniportHandle, MiniportAttributes): the registration
/// attributes (adapter context, attribute flags, CheckForHang period, interface type; they must
/// come first) and the general attributes (802.3 only). Offload and other attribute kinds are
/// accepted and ignored; anything else is NDIS_STATUS_INVALID_PARAMETER.
pub fn set_miniport_attributes(k: &mut Kernel, handle: u64, attrs: u64) -> KResult<NdisStatus> {
    let l = crate::layout6(k);
    let (kind, _revision, size) = object_header(k, attrs)?;
    let Some(a) = adapter_mut(k, handle) else {
        tracing::warn!(target: "ica::ndis", "NdisMSetMiniportAttributes with {handle:#x}, which is not an adapter handle");
        return Ok(NDIS_STATUS_FAILURE);
    };
    let name = a.name.clone();
    match kind {
        OBJECT_TYPE_REGISTRATION_ATTRIBUTES => {
            if size < l.registration_attrs_interface_type + 4 {
                tracing::warn!(target: "ica::ndis", "{name}: registration attributes of {size} bytes");
                return Ok(NDIS_STATUS_INVALID_PARAMETER);
            }
            let context = k.read_ptr(attrs + l.registration_attrs_miniport_adapter_context)?;
            let flags =
                k.m.mem
                    .read_u32(attrs + l.registration_attrs_attribute_flags)?;
            let check =
                k.m.mem
                    .read_u32(attrs + l.registration_attrs_check_for_hang_time_in_seconds)?;
            let interface =
                k.m.mem
                    .read_u32(attrs + l.registration_attrs_interface_type)?;
            let a = adapter(k, handle)?;
            a.context = context;
            a.attribute_flags = flags;
            a.interface_type = interface;
            if check != 0 {
                a.check_for_hang_seconds = check;
            }
            ndis6(k, handle)?.registered = true;
            Ok(NDIS_STATUS_SUCCESS)
        }
        OBJECT_TYPE_GENERAL_ATTRIBUTES => {
            if !ndis6(k, handle)?.registered {
                tracing::warn!(target: "ica::ndis", "{name}: general attributes before the registration attributes");
                return Ok(NDIS_STATUS_FAILURE);
            }
            if size < l.general_attrs_size {
                tracing::warn!(target: "ica::ndis", "{name}: general attributes of {size} bytes");
                return Ok(NDIS_STATUS_INVALID_PARAMETER);
            }
            let medium = k.m.mem.read_u32(attrs + l.general_attrs_media_type)?;
            if medium != NDIS_MEDIUM_802_3 {
                tracing::warn!(target: "ica::ndis", "{name}: medium {medium} (only 802.3 is hosted)");
                return Ok(NDIS_STATUS_UNSUPPORTED_MEDIA);
            }
            let mtu = k.m.mem.read_u32(attrs + l.general_attrs_mtu_size)?;
            let mac =
                k.m.mem
                    .read_vec(attrs + l.general_attrs_current_mac_address, 6)?;
            tracing::debug!(target: "ica::ndis", "{name}: MTU {mtu}, MAC {mac:02x?}");
            Ok(NDIS_STATUS_SUCCESS)
        }
        t if OBJECT_TYPES_IGNORED_ATTRIBUTES.contains(&t) => {
            tracing::debug!(target: "ica::ndis", "{name}: attributes of type {t:#x} ignored");
            Ok(NDIS_STATUS_SUCCESS)
        }
        t => {
            tracing::warn!(target: "ica::ndis", "{name}: NdisMSetMiniportAttributes with unknown attribute type {t:#x}");
            Ok(NDIS_STATUS_INVALID_PARAMETER)
        }
    }
}

/// Issues an OID request to MiniportOidRequest at PASSIVE_LEVEL: an NDIS-owned NDIS_OID_REQUEST
/// (revision 1) with the InformationBuffer after it. `None` if the miniport pended it (the result
/// comes with NdisMOidRequestComplete).
pub(crate) fn request(
    k: &mut Kernel,
    block: u64,
    query: bool,
    oid: u32,
    len: u32,
    data: &[u8],
) -> KResult<Option<RequestResult>> {
    let l = crate::layout6(k);
    let context = adapter(k, block)?.context;
    let handler = ndis6(k, block)?.chars.oid_request;
    let buffer_at = l.oid_request_size.next_multiple_of(16);
    let request = ex::allocate(
        k,
        buffer_at + u64::from(len.max(1)),
        u32::from_le_bytes(*b"NDor"),
        NDIS_OWNER.into(),
    )?;
    let buffer = request + buffer_at;
    write_object_header(
        k,
        request,
        OBJECT_TYPE_OID_REQUEST,
        1,
        l.oid_request_reserved2 + 2,
    )?;
    let (kind, oid_at, buffer_field, length_field) = if query {
        (
            REQUEST_QUERY_INFORMATION,
            l.oid_request_query_oid,
            l.oid_request_query_information_buffer,
            l.oid_request_query_information_buffer_length,
        )
    } else {
        (
            REQUEST_SET_INFORMATION,
            l.oid_request_set_oid,
            l.oid_request_set_information_buffer,
            l.oid_request_set_information_buffer_length,
        )
    };
    k.m.mem
        .write_u32(request + l.oid_request_request_type, kind)?;
    k.write_ptr(request + l.oid_request_request_id, request)?;
    k.m.mem.write_u32(request + oid_at, oid)?;
    k.write_ptr(request + buffer_field, buffer)?;
    k.m.mem.write_u32(request + length_field, len)?;
    k.m.mem.write_bytes(buffer, data)?;
    let pending = PendingRequest {
        query,
        oid,
        buffer,
        len,
        request,
    };
    // Pending from the start: the miniport may complete it before it returns.
    adapter(k, block)?.pending_request = Some(pending);
    let status = k.call_guest(handler, &[context, request])? as NdisStatus;
    if status == NDIS_STATUS_PENDING {
        return Ok(None);
    }
    let a = adapter(k, block)?;
    if a.pending_request.take().is_none() {
        let name = a.name.clone();
        return Err(KernelError::bug_check(
            0x7C,
            format!("{name}: MiniportOidRequest completed request {request:#x} with NdisMOidRequestComplete and returned {status:#x} instead of NDIS_STATUS_PENDING"),
        ));
    }
    finish_request(k, pending, status).map(Some)
}

/// The result of a finished OID request; frees the NDIS_OID_REQUEST.
fn finish_request(
    k: &mut Kernel,
    req: PendingRequest,
    status: NdisStatus,
) -> KResult<RequestResult> {
    let l = crate::layout6(k);
    let r = req.request;
    let result = if req.query {
        let written = k.m.mem.read_u32(r + l.oid_request_query_bytes_written)?;
        RequestResult {
            status,
            data: if status == NDIS_STATUS_SUCCESS {
                k.m.mem
                    .read_vec(req.buffer, written.min(req.len) as usize)?
            } else {
                Vec::new()
            },
            bytes_needed: k.m.mem.read_u32(r + l.oid_request_query_bytes_needed)?,
            bytes_read: 0,
        }
    } else {
        RequestResult {
            status,
            data: Vec::new(),
            bytes_needed: k.m.mem.read_u32(r + l.oid_request_set_bytes_needed)?,
            bytes_read: k.m.mem.read_u32(r + l.oid_request_set_bytes_read)?,
        }
    };
    ex::free(k, r, None)?;
    Ok(result)
}

/// Frees the NDIS_OID_REQUEST of a request that never completed (at halt).
pub(crate) fn drop_request(k: &mut Kernel, req: PendingRequest) -> KResult<()> {
    ex::free(k, req.request, None)
}

/// NdisMOidRequestComplete(MiniportAdapterHandle, OidRequest, Status).
pub fn oid_request_complete(
    k: &mut Kernel,
    handle: u64,
    request: u64,
    status: NdisStatus,
) -> KResult<()> {
    ndis6(k, handle)?;
    let a = adapter(k, handle)?;
    let Some(req) = a
        .pending_request
        .filter(|r| r.request == request && request != 0)
    else {
        return Err(KernelError::bug_check(
            0x7C,
            format!(
                "{}: NdisMOidRequestComplete of {request:#x}, which is not a pending OID request (completed twice?)",
                a.name
            ),
        ));
    };
    a.pending_request = None;
    let result = finish_request(k, req, status)?;
    adapter(k, handle)?.completed_request = Some(result);
    Ok(())
}

/// NdisMIndicateStatusEx(MiniportAdapterHandle, StatusIndication): NDIS_STATUS_LINK_STATE with an
/// NDIS_LINK_STATE becomes [`AdapterEvent::Link`]; other codes [`AdapterEvent::Status`].
pub fn indicate_status_ex(k: &mut Kernel, handle: u64, indication: u64) -> KResult<()> {
    let l = crate::layout6(k);
    let (kind, _, _) = object_header(k, indication)?;
    if kind != OBJECT_TYPE_STATUS_INDICATION {
        let name = adapter(k, handle)?.name.clone();
        tracing::warn!(target: "ica::ndis", "{name}: NdisMIndicateStatusEx with an object of type {kind:#x}; ignored");
        return Ok(());
    }
    let code =
        k.m.mem
            .read_u32(indication + l.status_indication_status_code)?;
    let buffer = k.read_ptr(indication + l.status_indication_status_buffer)?;
    let size = u64::from(
        k.m.mem
            .read_u32(indication + l.status_indication_status_buffer_size)?,
    );
    let event = if code == NDIS_STATUS_LINK_STATE
        && buffer != 0
        && size >= l.link_state_media_connect_state + 4
    {
        match k
            .m
            .mem
            .read_u32(buffer + l.link_state_media_connect_state)?
        {
            MEDIA_CONNECT_STATE_CONNECTED => AdapterEvent::Link(true),
            MEDIA_CONNECT_STATE_DISCONNECTED => AdapterEvent::Link(false),
            _ => AdapterEvent::Status(code),
        }
    } else {
        AdapterEvent::Status(code)
    };
    ndis6(k, handle)?;
    adapter(k, handle)?.events.push_back(event);
    Ok(())
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisMRegisterMiniportDriver => register_miniport_driver(driver_object: u64, registry_path: u64, miniport_driver_context: u64, miniport_driver_characteristics: u64, ndis_miniport_driver_handle: u64);
    stdcall NdisMDeregisterMiniportDriver => deregister_miniport_driver(ndis_miniport_driver_handle: u64);
    stdcall NdisMSetMiniportAttributes => set_miniport_attributes(ndis_miniport_handle: u64, miniport_attributes: u64);
    stdcall NdisMPauseComplete => pause_complete(miniport_adapter_handle: u64);
    stdcall NdisMRestartComplete => restart_complete(miniport_adapter_handle: u64, status: u32);
    stdcall NdisMOidRequestComplete => oid_request_complete(miniport_adapter_handle: u64, oid_request: u64, status: u32);
    stdcall NdisMIndicateStatusEx => indicate_status_ex(miniport_adapter_handle: u64, status_indication: u64);
];
