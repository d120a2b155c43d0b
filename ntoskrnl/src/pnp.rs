//! Plug and Play and the driver lifecycle: DriverEntry, a root-enumerated PDO owned by the PnP
//! manager, AddDevice for each driver of a device stack, IRP_MN_START_DEVICE, removal, DriverUnload.

use crate::export::Export;
use crate::io::{self, major};
use crate::status::{self, NtStatus};
use crate::verifier::{self, Rule, StopCode};
use crate::{ex, export_table, rtl, KResult, Kernel, KernelError, LoadedImage};

/// PnP minor function codes.
pub mod minor {
    /// IRP_MN_START_DEVICE.
    pub const START_DEVICE: u8 = 0x00;
    /// IRP_MN_QUERY_REMOVE_DEVICE.
    pub const QUERY_REMOVE_DEVICE: u8 = 0x01;
    /// IRP_MN_REMOVE_DEVICE.
    pub const REMOVE_DEVICE: u8 = 0x02;
    /// IRP_MN_CANCEL_REMOVE_DEVICE.
    pub const CANCEL_REMOVE_DEVICE: u8 = 0x03;
    /// IRP_MN_STOP_DEVICE.
    pub const STOP_DEVICE: u8 = 0x04;
    /// IRP_MN_QUERY_STOP_DEVICE.
    pub const QUERY_STOP_DEVICE: u8 = 0x05;
    /// IRP_MN_CANCEL_STOP_DEVICE.
    pub const CANCEL_STOP_DEVICE: u8 = 0x06;
    /// IRP_MN_SURPRISE_REMOVAL.
    pub const SURPRISE_REMOVAL: u8 = 0x17;
}

/// Name of the host-owned driver that owns root-enumerated PDOs.
pub const PNP_MANAGER: &str = "PnpManager";
/// FILE_DEVICE_UNKNOWN.
const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// DO_BUS_ENUMERATED_DEVICE.
const DO_BUS_ENUMERATED_DEVICE: u32 = 0x1000;
const PNP_TAG: u32 = u32::from_le_bytes(*b"PnpM");

static ROOT_BUS: &[Export] = export_table![
    stdcall PnpRootPdoDispatchPnp => root_pdo_dispatch_pnp(device_object: u64, irp: u64);
];

/// State the PnP manager keeps: its own driver object and the devices it enumerated.
#[derive(Debug, Default)]
pub struct PnpManager {
    driver: u64,
    next_instance: u32,
    /// Root-enumerated PDOs and their instance ids.
    pub devices: Vec<(u64, String)>,
}

/// A driver started by [`initialize_driver`].
#[derive(Debug, Clone)]
pub struct Driver {
    /// Guest address of the DRIVER_OBJECT.
    pub object: u64,
    /// Service name.
    pub service: String,
    /// Guest address of the registry-path UNICODE_STRING passed to DriverEntry.
    registry_path: u64,
}

/// Creates the driver object for a mapped image and runs its DriverEntry. Returns the driver and
/// DriverEntry's status (a failing status means the driver is not loaded).
pub fn initialize_driver(
    k: &mut Kernel,
    image: &LoadedImage,
    service: &str,
) -> KResult<(Driver, NtStatus)> {
    let object = io::create_driver_object(k, service, &image.name, image.base, image.size)?;
    let registry_path = rtl::alloc_unicode_string(
        k,
        &format!("\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{service}"),
        PNP_TAG,
    )?;
    k.write_ptr(object + k.layout.driver_object_driver_init, image.entry)?;
    let driver = Driver {
        object,
        service: service.into(),
        registry_path,
    };
    let status = k.call_guest(image.entry, &[object, registry_path])? as NtStatus;
    if !status::nt_success(status) {
        release_driver_object(k, &driver)?;
    }
    Ok((driver, status))
}

/// Runs DriverUnload (if the driver has one) and frees the driver object. What the driver leaves
/// behind that Windows would crash on later is an error naming it (bug check 0xCE): a device
/// object, a lookaside list, a queued DPC or work item or an armed timer that would run its code.
/// With the verifier on, what it leaks is collected as findings: pool by tag, MDLs, IO_WORKITEMs,
/// IRPs, object references.
pub fn unload_driver(k: &mut Kernel, driver: &Driver) -> KResult<()> {
    let l = k.layout;
    let unload = k.read_ptr(driver.object + l.driver_object_driver_unload)?;
    if unload == 0 {
        return Err(KernelError::Unsupported(format!(
            "driver {} has no DriverUnload routine and cannot be unloaded",
            driver.service
        )));
    }
    k.call_guest(unload, &[driver.object])?;
    let left = k.read_ptr(driver.object + l.driver_object_device_object)?;
    if left != 0 {
        let site =
            k.io.devices
                .get(&left)
                .and_then(|d| d.site)
                .map(|s| k.site(s));
        let created = site
            .as_ref()
            .map(|s| format!(", created at {s}"))
            .unwrap_or_default();
        return Err(verifier::stop_at(
            k,
            Rule::DeviceLeak,
            StopCode::new(0xCE, [left, 0, 0, 0]),
            site,
            format!(
                "driver {} unloaded but its device object {left:#x} still exists{created}",
                driver.service
            ),
        ));
    }
    let start = k.read_ptr(driver.object + l.driver_object_driver_start)?;
    let size =
        k.m.mem
            .read_u32(driver.object + l.driver_object_driver_size)?;
    let end = start + u64::from(size);
    crate::lookaside::check_unload(k, &driver.service, start, u64::from(size))?;
    crate::ke::check_unload(k, &driver.service, start, end)?;
    crate::workitem::check_unload(k, &driver.service, start, end)?;
    if k.verifier.enabled() {
        let image =
            k.io.driver(driver.object)
                .map(|d| d.image.clone())
                .unwrap_or_default();
        ex::check_unload(k, &image)?;
        io::check_unload(k, &image);
        crate::ob::check_unload(k, &image);
    }
    release_driver_object(k, driver)
}

fn release_driver_object(k: &mut Kernel, driver: &Driver) -> KResult<()> {
    ex::free(k, driver.registry_path, None)?;
    io::delete_driver_object(k, driver.object)
}

/// Creates the PnP manager's own driver object (at kernel start).
pub(crate) fn init(k: &mut Kernel) -> KResult<()> {
    let driver = io::create_driver_object(k, PNP_MANAGER, PNP_MANAGER, 0, 0)?;
    let routine = k.host_function(&ROOT_BUS[0]);
    let slot = driver + k.layout.driver_object_major_function + major::PNP as u64 * k.ptr_size();
    k.write_ptr(slot, routine)?;
    k.extension::<PnpManager>().driver = driver;
    Ok(())
}

/// Creates a root-enumerated PDO (`ROOT\<id>\NNNN`), owned by the PnP manager.
pub fn create_root_device(k: &mut Kernel, device_id: &str) -> KResult<u64> {
    let pnp = k.extension::<PnpManager>();
    let driver = pnp.driver;
    let instance = pnp.next_instance;
    pnp.next_instance += 1;
    let name =
        rtl::alloc_unicode_string(k, &format!("\\Device\\{:08X}", 0x100 + instance), PNP_TAG)?;
    let out = ex::allocate(k, 8, PNP_TAG, "ntoskrnl.exe".into())?;
    let status = io::create_device(k, driver, 0, name, FILE_DEVICE_UNKNOWN, 0, false, out)?;
    let pdo = k.read_ptr(out)?;
    ex::free(k, out, None)?;
    ex::free(k, name, None)?;
    if !status::nt_success(status) {
        return Err(KernelError::Unsupported(format!(
            "creating the PDO failed: {}",
            status::name(status)
        )));
    }
    let flags_at = pdo + k.layout.device_object_flags;
    let flags = k.m.mem.read_u32(flags_at)?;
    k.m.mem.write_u32(
        flags_at,
        (flags | DO_BUS_ENUMERATED_DEVICE) & !io::DO_DEVICE_INITIALIZING,
    )?;
    let id = format!("ROOT\\{}\\{instance:04}", device_id.to_ascii_uppercase());
    k.extension::<PnpManager>().devices.push((pdo, id));
    Ok(pdo)
}

/// Calls the driver's AddDevice(DriverObject, PhysicalDeviceObject).
pub fn add_device(k: &mut Kernel, driver: &Driver, pdo: u64) -> KResult<NtStatus> {
    let l = k.layout;
    let ext = k.read_ptr(driver.object + l.driver_object_driver_extension)?;
    let add = k.read_ptr(ext + l.driver_extension_add_device)?;
    if add == 0 {
        return Err(KernelError::Unsupported(format!(
            "driver {} has no AddDevice routine",
            driver.service
        )));
    }
    Ok(k.call_guest(add, &[driver.object, pdo])? as NtStatus)
}

/// Sends IRP_MN_START_DEVICE (no hardware resources) down the stack of `pdo`.
pub fn start_device(k: &mut Kernel, pdo: u64) -> KResult<NtStatus> {
    Ok(io::send_pnp(k, pdo, minor::START_DEVICE, &mut |_, _, _| Ok(()))?.0)
}

/// Removes the device stack of `pdo`: IRP_MN_QUERY_REMOVE_DEVICE, then IRP_MN_REMOVE_DEVICE, then the
/// PDO itself is deleted. Returns the status of the query (a veto stops the removal).
pub fn remove_device(k: &mut Kernel, pdo: u64) -> KResult<NtStatus> {
    let (query, _) = io::send_pnp(k, pdo, minor::QUERY_REMOVE_DEVICE, &mut |_, _, _| Ok(()))?;
    if !status::nt_success(query) {
        io::send_pnp(k, pdo, minor::CANCEL_REMOVE_DEVICE, &mut |_, _, _| Ok(()))?;
        return Ok(query);
    }
    io::send_pnp(k, pdo, minor::REMOVE_DEVICE, &mut |_, _, _| Ok(()))?;
    k.extension::<PnpManager>()
        .devices
        .retain(|(d, _)| *d != pdo);
    io::delete_device(k, pdo)?;
    Ok(query)
}

/// The root bus's PnP dispatch for its PDOs: state-changing requests succeed, queries it has no
/// answer for complete with the status they arrived with.
fn root_pdo_dispatch_pnp(k: &mut Kernel, _dev: u64, irp: u64) -> KResult<NtStatus> {
    let l = k.layout;
    let sl = io::current_stack_location(k, irp)?;
    let minor_fn = k.m.mem.read_u8(sl + l.isl_minor_function)?;
    let status_at = irp + l.irp_io_status_status;
    let status = match minor_fn {
        minor::START_DEVICE
        | minor::QUERY_REMOVE_DEVICE
        | minor::REMOVE_DEVICE
        | minor::CANCEL_REMOVE_DEVICE
        | minor::STOP_DEVICE
        | minor::QUERY_STOP_DEVICE
        | minor::CANCEL_STOP_DEVICE
        | minor::SURPRISE_REMOVAL => status::STATUS_SUCCESS,
        _ => k.m.mem.read_u32(status_at)?,
    };
    k.m.mem.write_u32(status_at, status)?;
    io::complete_request(k, irp, PNP_MANAGER.into())?;
    Ok(status)
}
