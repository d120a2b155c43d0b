//! The NDIS wrapper: NdisInitializeWrapper / NdisTerminateWrapper, NDIS 5 miniport registration
//! (NdisMRegisterMiniport), and NDIS's DriverUnload for miniport drivers (NDIS 5 and NDIS 6). The wrapper handle a driver gets is a small pool block; the host keeps
//! the record (driver object, registry path, registered characteristics) keyed by its address.

use ntoskrnl::export::Export;
use ntoskrnl::{ex, export_table, rtl, KResult, Kernel};

use crate::{
    alloc_handle, NdisLayout, NdisState, NdisStatus, NDIS_STATUS_BAD_CHARACTERISTICS,
    NDIS_STATUS_BAD_VERSION, NDIS_STATUS_FAILURE, NDIS_STATUS_SUCCESS,
};

/// The handler fields of NDIS51_MINIPORT_CHARACTERISTICS, in structure order (each a function
/// pointer after the UCHAR Major, UCHAR Minor, UINT Reserved header, which is 8 bytes on x86 and
/// x64 alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Handler {
    /// CheckForHangHandler (NDIS 3.0 fields from here).
    CheckForHang,
    /// DisableInterruptHandler.
    DisableInterrupt,
    /// EnableInterruptHandler.
    EnableInterrupt,
    /// HaltHandler.
    Halt,
    /// HandleInterruptHandler.
    HandleInterrupt,
    /// InitializeHandler.
    Initialize,
    /// ISRHandler.
    Isr,
    /// QueryInformationHandler.
    QueryInformation,
    /// ReconfigureHandler.
    Reconfigure,
    /// ResetHandler.
    Reset,
    /// SendHandler.
    Send,
    /// SetInformationHandler.
    SetInformation,
    /// TransferDataHandler.
    TransferData,
    /// ReturnPacketHandler (NDIS 4.0 fields from here).
    ReturnPacket,
    /// SendPacketsHandler.
    SendPackets,
    /// AllocateCompleteHandler.
    AllocateComplete,
    /// CoCreateVcHandler (NDIS 5.0 fields from here).
    CoCreateVc,
    /// CoDeleteVcHandler.
    CoDeleteVc,
    /// CoActivateVcHandler.
    CoActivateVc,
    /// CoDeactivateVcHandler.
    CoDeactivateVc,
    /// CoSendPacketsHandler.
    CoSendPackets,
    /// CoRequestHandler.
    CoRequest,
    /// CancelSendPacketsHandler (NDIS 5.1 fields from here).
    CancelSendPackets,
    /// PnPEventNotifyHandler.
    PnPEventNotify,
    /// AdapterShutdownHandler.
    AdapterShutdown,
}

/// Number of handler fields an NDIS 5.1 structure has (Reserved1..4 follow them).
pub const HANDLER_COUNT: usize = Handler::AdapterShutdown as usize + 1;

/// Offsets of the handler fields in NDIS51_MINIPORT_CHARACTERISTICS, indexed by [`Handler`].
fn handler_offsets(l: &NdisLayout) -> [u64; HANDLER_COUNT] {
    [
        l.miniport_characteristics_check_for_hang_handler,
        l.miniport_characteristics_disable_interrupt_handler,
        l.miniport_characteristics_enable_interrupt_handler,
        l.miniport_characteristics_halt_handler,
        l.miniport_characteristics_handle_interrupt_handler,
        l.miniport_characteristics_initialize_handler,
        l.miniport_characteristics_isr_handler,
        l.miniport_characteristics_query_information_handler,
        l.miniport_characteristics_reconfigure_handler,
        l.miniport_characteristics_reset_handler,
        l.miniport_characteristics_send_handler,
        l.miniport_characteristics_set_information_handler,
        l.miniport_characteristics_transfer_data_handler,
        l.miniport_characteristics_return_packet_handler,
        l.miniport_characteristics_send_packets_handler,
        l.miniport_characteristics_allocate_complete_handler,
        l.miniport_characteristics_co_create_vc_handler,
        l.miniport_characteristics_co_delete_vc_handler,
        l.miniport_characteristics_co_activate_vc_handler,
        l.miniport_characteristics_co_deactivate_vc_handler,
        l.miniport_characteristics_co_send_packets_handler,
        l.miniport_characteristics_co_request_handler,
        l.miniport_characteristics_cancel_send_packets_handler,
        l.miniport_characteristics_pnp_event_notify_handler,
        l.miniport_characteristics_adapter_shutdown_handler,
    ]
}

/// Size of the characteristics structure of NDIS `major.minor` (the minimum
/// CharacteristicsLength), or `None` for a version NDIS 5.1 does not accept.
fn characteristics_size(l: &NdisLayout, major: u8, minor: u8) -> Option<u64> {
    match (major, minor) {
        (3, 0) => Some(l.ndis30_miniport_characteristics_size),
        (4, 0) => Some(l.ndis40_miniport_characteristics_size),
        (5, 0) => Some(l.ndis50_miniport_characteristics_size),
        (5, 1) => Some(l.ndis51_miniport_characteristics_size),
        _ => None,
    }
}

/// A copy of the miniport characteristics a driver registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniportCharacteristics {
    /// MajorNdisVersion.
    pub major: u8,
    /// MinorNdisVersion.
    pub minor: u8,
    /// Handler addresses indexed by [`Handler`] (0 where the version has no such field).
    pub handlers: [u64; HANDLER_COUNT],
}

impl MiniportCharacteristics {
    /// The guest address of a handler (0 if not supplied).
    pub fn handler(&self, h: Handler) -> u64 {
        self.handlers[h as usize]
    }
}

/// The host record behind a wrapper handle.
#[derive(Debug, Clone, Default)]
pub struct Wrapper {
    /// The DRIVER_OBJECT passed as SystemSpecific1.
    pub driver_object: u64,
    /// The registry path passed as SystemSpecific2 (the driver's service key).
    pub registry_path: String,
    /// The driver image that initialized the wrapper.
    pub image: String,
    /// What NdisMRegisterMiniport recorded.
    pub miniport: Option<MiniportCharacteristics>,
    /// MiniportUnload registered with NdisMRegisterUnloadHandler (0: none).
    pub unload_handler: u64,
}

/// NdisInitializeWrapper(NdisWrapperHandle, SystemSpecific1, SystemSpecific2, SystemSpecific3)
/// (NdisMInitializeWrapper is a macro for it): SystemSpecific1/2 are DriverEntry's DriverObject and
/// RegistryPath, SystemSpecific3 is reserved. `*NdisWrapperHandle` is NULL if the wrapper could
/// not be set up.
pub fn initialize_wrapper(
    k: &mut Kernel,
    handle_out: u64,
    driver_object: u64,
    registry_path: u64,
    _system_specific3: u64,
) -> KResult<()> {
    let registry_path = if registry_path != 0 {
        rtl::read_unicode_string(k, registry_path)?
    } else {
        String::new()
    };
    let image = k.caller_image();
    let handle = alloc_handle(k, b"NDwr")?;
    k.extension::<NdisState>().wrappers.insert(
        handle,
        Wrapper {
            driver_object,
            registry_path,
            image,
            miniport: None,
            unload_handler: 0,
        },
    );
    k.write_ptr(handle_out, handle)
}

/// NdisTerminateWrapper(NdisWrapperHandle, SystemSpecific): releases what NdisInitializeWrapper
/// allocated. An unknown handle is ignored.
pub fn terminate_wrapper(k: &mut Kernel, handle: u64, _system_specific: u64) -> KResult<()> {
    if k.extension::<NdisState>()
        .wrappers
        .remove(&handle)
        .is_some()
    {
        ex::free(k, handle, None)?;
    }
    Ok(())
}

/// NdisMRegisterMiniport(NdisWrapperHandle, MiniportCharacteristics, CharacteristicsLength):
/// copies the characteristics (their size follows MajorNdisVersion/MinorNdisVersion) into the
/// wrapper record. NDIS_STATUS_BAD_VERSION for a version other than 3.0, 4.0, 5.0 or 5.1;
/// NDIS_STATUS_BAD_CHARACTERISTICS if CharacteristicsLength is too small for that version.
pub fn register_miniport(
    k: &mut Kernel,
    handle: u64,
    chars: u64,
    length: u32,
) -> KResult<NdisStatus> {
    if !k.extension::<NdisState>().wrappers.contains_key(&handle) {
        tracing::warn!(target: "ica::ndis", "NdisMRegisterMiniport with unknown wrapper handle {handle:#x}");
        return Ok(NDIS_STATUS_FAILURE);
    }
    let l = crate::layout(k);
    let major =
        k.m.mem
            .read_u8(chars + l.miniport_characteristics_major_ndis_version)?;
    let minor =
        k.m.mem
            .read_u8(chars + l.miniport_characteristics_minor_ndis_version)?;
    let Some(size) = characteristics_size(l, major, minor) else {
        return Ok(NDIS_STATUS_BAD_VERSION);
    };
    if u64::from(length) < size {
        return Ok(NDIS_STATUS_BAD_CHARACTERISTICS);
    }
    let ptr = k.ptr_size();
    let mut handlers = [0u64; HANDLER_COUNT];
    // Only the handlers the version's structure has (they lie within its size).
    for (h, off) in handlers.iter_mut().zip(handler_offsets(l)) {
        if off + ptr <= size {
            *h = k.read_ptr(chars + off)?;
        }
    }
    let record = MiniportCharacteristics {
        major,
        minor,
        handlers,
    };
    tracing::debug!(target: "ica::ndis", "miniport registered: NDIS {major}.{minor}");
    let Some(w) = k.extension::<NdisState>().wrappers.get_mut(&handle) else {
        return Ok(NDIS_STATUS_FAILURE);
    };
    w.miniport = Some(record);
    let driver_object = w.driver_object;
    set_driver_unload(k, driver_object)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// Points the miniport's DRIVER_OBJECT->DriverUnload at NDIS's unload routine, as registering a
/// miniport (NDIS 5 or NDIS 6) does on Windows (a miniport never sets DriverUnload itself).
pub(crate) fn set_driver_unload(k: &mut Kernel, driver_object: u64) -> KResult<()> {
    if driver_object == 0 {
        return Ok(());
    }
    let unload = k.host_function(&NDIS_UNLOAD[0]);
    let field = driver_object + k.layout.driver_object_driver_unload;
    k.write_ptr(field, unload)
}

/// NDIS's DriverUnload for miniport drivers: runs the MiniportUnload registered with
/// NdisMRegisterUnloadHandler, then releases the driver's wrapper records; for an NDIS 6 driver,
/// runs its MiniportDriverUnload (which deregisters it).
pub fn unload_miniport_driver(k: &mut Kernel, driver_object: u64) -> KResult<()> {
    crate::ndis6::unload_drivers(k, driver_object)?;
    let wrappers: Vec<(u64, Wrapper)> = crate::wrappers(k)
        .into_iter()
        .filter(|(_, w)| w.driver_object == driver_object)
        .collect();
    for (handle, w) in wrappers {
        if w.unload_handler != 0 {
            k.call_guest(w.unload_handler, &[driver_object])?;
        }
        terminate_wrapper(k, handle, 0)?;
    }
    Ok(())
}

/// NdisMRegisterUnloadHandler(NdisWrapperHandle, UnloadHandler).
pub fn register_unload_handler(k: &mut Kernel, handle: u64, handler: u64) -> KResult<()> {
    if let Some(w) = k.extension::<NdisState>().wrappers.get_mut(&handle) {
        w.unload_handler = handler;
    }
    Ok(())
}

/// NdisGetRoutineAddress(NdisRoutineName): the address of an implemented ndis.sys export by name
/// (what a driver would call had it imported the name), or NULL.
pub fn get_routine_address(k: &mut Kernel, name: u64) -> KResult<u64> {
    let name = rtl::read_unicode_string(k, name)?;
    if k.find_export(crate::MODULE.name, &name).is_none() {
        tracing::debug!(target: "ica::ndis", "NdisGetRoutineAddress({name}): not implemented, NULL");
        return Ok(0);
    }
    Ok(k.bind_import(crate::MODULE.name, &name))
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisInitializeWrapper => initialize_wrapper(ndis_wrapper_handle: u64, system_specific1: u64, system_specific2: u64, system_specific3: u64);
    stdcall NdisTerminateWrapper => terminate_wrapper(ndis_wrapper_handle: u64, system_specific: u64);
    stdcall NdisMRegisterMiniport => register_miniport(ndis_wrapper_handle: u64, miniport_characteristics: u64, characteristics_length: u32);
    stdcall NdisMRegisterUnloadHandler => register_unload_handler(ndis_wrapper_handle: u64, unload_handler: u64);
    stdcall NdisGetRoutineAddress => get_routine_address(ndis_routine_name: u64);
];

/// NDIS's own DriverUnload routine for miniport drivers (not an export).
static NDIS_UNLOAD: &[Export] = export_table![
    stdcall ndisMUnload => unload_miniport_driver(driver_object: u64);
];
