//! Control devices (NdisMRegisterDevice / NdisMDeregisterDevice): a named device object a miniport
//! creates on its DRIVER_OBJECT, with a symbolic link, for its user-mode tools (WLAN utilities
//! talk to their driver this way). As on Windows, NDIS owns the miniport's dispatch table: it
//! points every major function of the DRIVER_OBJECT at its own dispatch routine, which passes an
//! IRP for a control device to that device's entry of the MajorFunctions array given at
//! registration (an empty entry: the I/O manager's STATUS_INVALID_DEVICE_REQUEST). The host's I/O
//! API opens the device by either name.

use ntoskrnl::export::Export;
use ntoskrnl::io::{self, major};
use ntoskrnl::status::{self, NtStatus};
use ntoskrnl::{ex, export_table, rtl, KResult, Kernel, KernelError};

use crate::{alloc_handle, NdisState, NdisStatus, NDIS_STATUS_FAILURE, NDIS_STATUS_SUCCESS};

/// FILE_DEVICE_NETWORK, the type NDIS gives control devices.
const FILE_DEVICE_NETWORK: u32 = 0x12;
/// IRP_MJ_PNP: not a control device's business (NDIS passes it on the adapter's stack).
const IRP_MJ_PNP: u8 = 0x1B;

/// A registered control device.
#[derive(Debug, Clone)]
pub struct ControlDevice {
    /// Its DEVICE_OBJECT.
    pub device: u64,
    /// The miniport's DRIVER_OBJECT it was created on.
    pub driver_object: u64,
    /// The symbolic link (an NDIS-owned UNICODE_STRING), deleted with the device.
    link: u64,
    /// The driver's dispatch routines by major function (0: none).
    dispatch: Vec<u64>,
    /// What the DRIVER_OBJECT's entries were before NDIS took them over.
    fallback: Vec<u64>,
}

/// NdisMRegisterDevice(NdisWrapperHandle, DeviceName, SymbolicName, MajorFunctions,
/// pDeviceObject, NdisDeviceHandle): creates the device (FILE_DEVICE_NETWORK, initialized) and
/// its symbolic link; the status of IoCreateDevice / IoCreateSymbolicLink if either fails.
pub fn register_device(
    k: &mut Kernel,
    wrapper: u64,
    name: u64,
    symbolic_name: u64,
    major_functions: u64,
    device_out: u64,
    handle_out: u64,
) -> KResult<NdisStatus> {
    let Some(w) = crate::wrapper(k, wrapper) else {
        tracing::warn!(target: "ica::ndis", "NdisMRegisterDevice with {wrapper:#x}, which is not a wrapper handle");
        return Ok(NDIS_STATUS_FAILURE);
    };
    let driver = w.driver_object;
    let st = io::create_device(
        k,
        driver,
        0,
        name,
        FILE_DEVICE_NETWORK,
        0,
        false,
        device_out,
    )?;
    if !status::nt_success(st) {
        return Ok(st);
    }
    let device = k.read_ptr(device_out)?;
    let l = k.layout;
    let flags = k.m.mem.read_u32(device + l.device_object_flags)?;
    k.m.mem.write_u32(
        device + l.device_object_flags,
        flags & !io::DO_DEVICE_INITIALIZING,
    )?;
    let st = io::create_symbolic_link(k, symbolic_name, name)?;
    if !status::nt_success(st) {
        io::delete_device(k, device)?;
        k.write_ptr(device_out, 0)?;
        return Ok(st);
    }
    let link_text = rtl::read_unicode_string(k, symbolic_name)?;
    let link = rtl::alloc_unicode_string(k, &link_text, u32::from_le_bytes(*b"NDdl"))?;
    let ptr = k.ptr_size();
    let table = driver + l.driver_object_major_function;
    let ndis_dispatch = k.host_function(&DISPATCH[0]);
    let mut dispatch = Vec::new();
    let mut fallback = Vec::new();
    for i in 0..major::COUNT {
        dispatch.push(if major_functions != 0 {
            k.read_ptr(major_functions + i * ptr)?
        } else {
            0
        });
        let current = k.read_ptr(table + i * ptr)?;
        // Another control device of the driver already routed this entry through NDIS.
        let earlier = k
            .extension::<NdisState>()
            .control_devices
            .values()
            .find(|d| d.driver_object == driver)
            .map(|d| d.fallback[i as usize]);
        fallback.push(earlier.unwrap_or(current));
        if i as u8 != IRP_MJ_PNP {
            k.write_ptr(table + i * ptr, ndis_dispatch)?;
        }
    }
    let handle = alloc_handle(k, b"NDdv")?;
    k.extension::<NdisState>().control_devices.insert(
        handle,
        ControlDevice {
            device,
            driver_object: driver,
            link,
            dispatch,
            fallback,
        },
    );
    tracing::debug!(target: "ica::ndis", "{}: control device {} ({link_text}) at {device:#x}", w.image, rtl::read_unicode_string(k, name)?);
    k.write_ptr(handle_out, handle)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMDeregisterDevice(NdisDeviceHandle): deletes the symbolic link and the device; the last
/// control device of a driver gives the DRIVER_OBJECT its dispatch entries back.
pub fn deregister_device(k: &mut Kernel, handle: u64) -> KResult<NdisStatus> {
    let Some(d) = k.extension::<NdisState>().control_devices.remove(&handle) else {
        tracing::warn!(target: "ica::ndis", "NdisMDeregisterDevice({handle:#x}): not a control device handle");
        return Ok(NDIS_STATUS_FAILURE);
    };
    io::delete_symbolic_link(k, d.link)?;
    ex::free(k, d.link, None)?;
    io::delete_device(k, d.device)?;
    ex::free(k, handle, None)?;
    let others = k
        .extension::<NdisState>()
        .control_devices
        .values()
        .any(|o| o.driver_object == d.driver_object);
    if !others {
        let ptr = k.ptr_size();
        let table = d.driver_object + k.layout.driver_object_major_function;
        for (i, routine) in d.fallback.iter().enumerate() {
            k.write_ptr(table + i as u64 * ptr, *routine)?;
        }
    }
    Ok(NDIS_STATUS_SUCCESS)
}

/// NDIS's dispatch routine for a miniport's DRIVER_OBJECT: an IRP for a control device goes to
/// that device's routine for its major function, anything else (or an empty entry) where the
/// DRIVER_OBJECT's entry pointed before NDIS took it over.
pub fn dispatch(k: &mut Kernel, device: u64, irp: u64) -> KResult<NtStatus> {
    let sl = io::current_stack_location(k, irp)?;
    let major = usize::from(k.m.mem.read_u8(sl + k.layout.isl_major_function)?);
    let driver = k.read_ptr(device + k.layout.device_object_driver_object)?;
    let routine = {
        let devices = &k.extension::<NdisState>().control_devices;
        let own = devices
            .values()
            .find(|d| d.device == device)
            .and_then(|d| d.dispatch.get(major).copied())
            .filter(|&r| r != 0);
        let fallback = devices
            .values()
            .find(|d| d.driver_object == driver)
            .and_then(|d| d.fallback.get(major).copied());
        own.or(fallback)
    };
    let Some(routine) = routine else {
        return Err(KernelError::Unsupported(format!(
            "NDIS dispatch for device {device:#x} of a driver with no control device"
        )));
    };
    Ok(k.call_guest(routine, &[device, irp])? as NtStatus)
}

/// NDIS's dispatch routine (not an export).
static DISPATCH: &[Export] = export_table![
    stdcall ndisDispatchRequest => dispatch(device_object: u64, irp: u64);
];

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisMRegisterDevice => register_device(ndis_wrapper_handle: u64, device_name: u64, symbolic_name: u64, major_functions: u64, p_device_object: u64, ndis_device_handle: u64);
    stdcall NdisMDeregisterDevice => deregister_device(ndis_device_handle: u64);
];
