//! Plug and Play and the driver lifecycle: DriverEntry, a root-enumerated PDO owned by the PnP
//! manager, AddDevice for each driver of a device stack, IRP_MN_START_DEVICE, removal, DriverUnload.

use crate::export::Export;
use crate::io::{self, major};
use crate::status::{self, NtStatus};
use crate::verifier::{self, irql, Rule, StopCode};
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
    /// IRP_MN_QUERY_DEVICE_RELATIONS.
    pub const QUERY_DEVICE_RELATIONS: u8 = 0x07;
    /// IRP_MN_SURPRISE_REMOVAL.
    pub const SURPRISE_REMOVAL: u8 = 0x17;
}

/// DEVICE_RELATION_TYPE BusRelations.
pub const BUS_RELATIONS: u32 = 0;

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
    /// The child PDOs each device reported for BusRelations, by the device's PDO.
    pub children: std::collections::BTreeMap<u64, Vec<u64>>,
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
    drop_registrations(k, driver)?;
    let image =
        k.io.driver(driver.object)
            .map(|d| d.image.clone())
            .unwrap_or_default();
    crate::wmi::check_unload(k, &image);
    crate::lookaside::check_unload(k, &driver.service, start, u64::from(size))?;
    crate::ke::check_unload(k, &driver.service, start, end)?;
    crate::workitem::check_unload(k, &driver.service, start, end)?;
    if k.verifier.enabled() {
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

// ---------------------------------------------------------------------------------------------
// PnP notifications

/// IO_NOTIFICATION_EVENT_CATEGORY values.
pub mod category {
    /// EventCategoryHardwareProfileChange (there is one hardware profile: never notified).
    pub const HARDWARE_PROFILE_CHANGE: u32 = 1;
    /// EventCategoryDeviceInterfaceChange.
    pub const DEVICE_INTERFACE_CHANGE: u32 = 2;
    /// EventCategoryTargetDeviceChange.
    pub const TARGET_DEVICE_CHANGE: u32 = 3;
}

/// PNPNOTIFY_DEVICE_INTERFACE_INCLUDE_EXISTING_INTERFACES.
pub const INCLUDE_EXISTING_INTERFACES: u32 = 1;
/// GUID_DEVICE_INTERFACE_ARRIVAL {CB3A4004-46F0-11D0-B08F-00609713053F}.
pub const GUID_DEVICE_INTERFACE_ARRIVAL: [u8; 16] = interface_event_guid(0xCB3A_4004);
/// GUID_DEVICE_INTERFACE_REMOVAL {CB3A4005-46F0-11D0-B08F-00609713053F}.
pub const GUID_DEVICE_INTERFACE_REMOVAL: [u8; 16] = interface_event_guid(0xCB3A_4005);

const fn interface_event_guid(data1: u32) -> [u8; 16] {
    let d = data1.to_le_bytes();
    [
        d[0], d[1], d[2], d[3], 0xF0, 0x46, 0xD0, 0x11, 0xB0, 0x8F, 0x00, 0x60, 0x97, 0x13, 0x05,
        0x3F,
    ]
}

static NOTIFY: &[Export] = export_table![
    stdcall PnpDeliverNotification => deliver_notification(event: u64);
    stdcall PnpQueryBusRelations => query_bus_relations(pdo: u64);
];

/// One IoRegisterPlugPlayNotification registration.
#[derive(Debug, Clone)]
struct Registration {
    category: u32,
    /// The interface class (EventCategoryDeviceInterfaceChange).
    class: [u8; 16],
    driver: u64,
    callback: u64,
    context: u64,
    /// The image that registered (for the unload check).
    owner: String,
}

/// A device interface change waiting for the PnP worker to report it.
#[derive(Debug, Clone)]
struct Pending {
    entry: u64,
    arrival: bool,
    link: String,
}

/// The PnP notification registrations and the interface changes not yet reported.
#[derive(Debug, Default)]
pub struct Notifications {
    entries: std::collections::BTreeMap<u64, Registration>,
    pending: std::collections::BTreeMap<u64, Pending>,
    next_event: u64,
}

impl Notifications {
    /// Registrations in place.
    pub fn registered(&self) -> usize {
        self.entries.len()
    }
}

/// IoRegisterPlugPlayNotification(EventCategory, EventCategoryFlags, EventCategoryData,
/// DriverObject, CallbackRoutine, Context, NotificationEntry). For device interface changes
/// EventCategoryData is the interface class GUID; with INCLUDE_EXISTING_INTERFACES the callback
/// gets an arrival for every enabled interface of the class before this returns. Later
/// IoSetDeviceInterfaceState changes are reported the way Windows does it, from a system worker at
/// PASSIVE_LEVEL after the caller has gone on (here: when queued work items run). Target-device and
/// hardware-profile registrations are kept but never notified (no such events happen here).
pub fn io_register_plug_play_notification(
    k: &mut Kernel,
    event_category: u32,
    flags: u32,
    data: u64,
    driver: u64,
    callback: u64,
    context: u64,
    entry_out: u64,
) -> KResult<NtStatus> {
    if !(category::HARDWARE_PROFILE_CHANGE..=category::TARGET_DEVICE_CHANGE)
        .contains(&event_category)
        || callback == 0
        || k.io.driver(driver).is_none()
        || (event_category != category::HARDWARE_PROFILE_CHANGE && data == 0)
    {
        return Ok(status::STATUS_INVALID_PARAMETER);
    }
    let mut class = [0u8; 16];
    if event_category == category::DEVICE_INTERFACE_CHANGE {
        k.m.mem.read_bytes(data, &mut class)?;
    }
    let reg = Registration {
        category: event_category,
        class,
        driver,
        callback,
        context,
        owner: k.caller_image(),
    };
    let entry = ex::allocate(k, k.ptr_size(), PNP_TAG, "ntoskrnl.exe".into())?;
    k.extension::<Notifications>()
        .entries
        .insert(entry, reg.clone());
    k.write_ptr(entry_out, entry)?;
    if event_category == category::DEVICE_INTERFACE_CHANGE
        && flags & INCLUDE_EXISTING_INTERFACES != 0
    {
        for link in crate::registry::enabled_interfaces(k, &rtl::guid_text(&class)) {
            call_interface_callback(k, &reg, true, &link)?;
        }
    }
    Ok(status::STATUS_SUCCESS)
}

/// IoUnregisterPlugPlayNotification(NotificationEntry) and IoUnregisterPlugPlayNotificationEx:
/// the callback is not called any more (changes not yet reported are dropped). An unknown entry is
/// STATUS_INVALID_PARAMETER.
pub fn io_unregister_plug_play_notification(k: &mut Kernel, entry: u64) -> KResult<NtStatus> {
    let n = k.extension::<Notifications>();
    if n.entries.remove(&entry).is_none() {
        return Ok(status::STATUS_INVALID_PARAMETER);
    }
    n.pending.retain(|_, p| p.entry != entry);
    ex::free(k, entry, None)?;
    Ok(status::STATUS_SUCCESS)
}

/// Queues the report of an interface of class `class` (`{GUID}` text) being enabled or disabled
/// to every registration for that class (called by IoSetDeviceInterfaceState).
pub(crate) fn interface_changed(
    k: &mut Kernel,
    class: &str,
    link: &str,
    arrival: bool,
) -> KResult<()> {
    let entries: Vec<u64> = k
        .extension::<Notifications>()
        .entries
        .iter()
        .filter(|(_, r)| {
            r.category == category::DEVICE_INTERFACE_CHANGE
                && rtl::guid_text(&r.class).eq_ignore_ascii_case(class)
        })
        .map(|(&e, _)| e)
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let routine = k.host_function(&NOTIFY[0]);
    for entry in entries {
        let n = k.extension::<Notifications>();
        n.next_event += 1;
        let event = n.next_event;
        n.pending.insert(
            event,
            Pending {
                entry,
                arrival,
                link: link.to_string(),
            },
        );
        crate::workitem::queue_work(
            k,
            crate::workitem::QueuedWork {
                item: 0,
                routine,
                args: vec![event],
                kind: crate::workitem::WorkKind::Host,
            },
        )?;
    }
    Ok(())
}

/// The PnP worker's side of [`interface_changed`]: reports one queued change, unless its
/// registration was withdrawn meanwhile.
fn deliver_notification(k: &mut Kernel, event: u64) -> KResult<()> {
    let n = k.extension::<Notifications>();
    let Some(p) = n.pending.remove(&event) else {
        return Ok(());
    };
    let Some(reg) = n.entries.get(&p.entry).cloned() else {
        return Ok(());
    };
    call_interface_callback(k, &reg, p.arrival, &p.link)
}

/// Calls a registration's callback with a DEVICE_INTERFACE_CHANGE_NOTIFICATION (Version 1, Size,
/// Event, InterfaceClassGuid, SymbolicLinkName) that lives for the duration of the call.
fn call_interface_callback(
    k: &mut Kernel,
    reg: &Registration,
    arrival: bool,
    link: &str,
) -> KResult<()> {
    let ptr = k.ptr_size();
    // Two USHORTs and two GUIDs (36 bytes), then the pointer at its alignment.
    let link_at = 36u64.next_multiple_of(ptr);
    let size = link_at + ptr;
    let name = rtl::alloc_unicode_string(k, link, PNP_TAG)?;
    let n = ex::allocate(k, size, PNP_TAG, "ntoskrnl.exe".into())?;
    let event = if arrival {
        GUID_DEVICE_INTERFACE_ARRIVAL
    } else {
        GUID_DEVICE_INTERFACE_REMOVAL
    };
    k.m.mem.write_u16(n, 1)?;
    k.m.mem.write_u16(n + 2, size as u16)?;
    k.m.mem.write_bytes(n + 4, &event)?;
    k.m.mem.write_bytes(n + 20, &reg.class)?;
    k.write_ptr(n + link_at, name)?;
    let result = k.call_guest(reg.callback, &[n, reg.context]);
    ex::free(k, n, None)?;
    ex::free(k, name, None)?;
    result.map(|_| ())
}

/// Drops the PnP notification registrations of a driver that unloads (their callbacks would run
/// freed code); with the verifier on, each is a finding: the driver must unregister first.
fn drop_registrations(k: &mut Kernel, driver: &Driver) -> KResult<()> {
    let left: Vec<(u64, Registration)> = k
        .extension::<Notifications>()
        .entries
        .iter()
        .filter(|(_, r)| r.driver == driver.object)
        .map(|(&e, r)| (e, r.clone()))
        .collect();
    for (entry, reg) in left {
        let detail = format!(
            "PnP notification {entry:#x} (category {}, callback {}) still registered at unload (IoUnregisterPlugPlayNotificationEx)",
            reg.category,
            k.symbolize(reg.callback)
        );
        verifier::note(k, Rule::RegistrationLeak, &reg.owner, None, None, detail);
        io_unregister_plug_play_notification(k, entry)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Device relations

/// IoInvalidateDeviceRelations(DeviceObject, Type): for BusRelations the PnP manager queries the
/// device's stack again (IRP_MN_QUERY_DEVICE_RELATIONS from a system worker, after the caller
/// has gone on) and records the child PDOs it reports ([`PnpManager::children`]); the children
/// are not started (no bus-enumerated device gets a driver stack here). Other relation types
/// (ejection, removal, power) are only asked for by the PnP manager itself: nothing to do.
pub fn io_invalidate_device_relations(k: &mut Kernel, pdo: u64, kind: u32) -> KResult<()> {
    if kind != BUS_RELATIONS {
        return Ok(());
    }
    if !k.io.devices.contains_key(&pdo) {
        return Err(KernelError::bug_check(
            0xCA,
            format!("IoInvalidateDeviceRelations of {pdo:#x}, which is not a device object"),
        ));
    }
    let routine = k.host_function(&NOTIFY[1]);
    crate::workitem::queue_work(
        k,
        crate::workitem::QueuedWork {
            item: 0,
            routine,
            args: vec![pdo],
            kind: crate::workitem::WorkKind::Host,
        },
    )
}

/// The PnP worker's side of [`io_invalidate_device_relations`]: IRP_MN_QUERY_DEVICE_RELATIONS
/// (BusRelations) down the stack; a DEVICE_RELATIONS in the IRP's Information on success gives
/// the children, whose references the PnP manager drops before it frees the list. A stack that
/// does not answer (STATUS_NOT_SUPPORTED) keeps the children it had.
fn query_bus_relations(k: &mut Kernel, pdo: u64) -> KResult<()> {
    if !k.io.devices.contains_key(&pdo) {
        return Ok(()); // removed meanwhile
    }
    let params = k.layout.isl_parameters;
    let (st, relations) = io::send_pnp(k, pdo, minor::QUERY_DEVICE_RELATIONS, &mut |k, _, sl| {
        Ok(k.m.mem.write_u32(sl + params, BUS_RELATIONS)?)
    })?;
    if !status::nt_success(st) {
        return Ok(());
    }
    let mut children = Vec::new();
    if relations != 0 {
        let count = k.m.mem.read_u32(relations)?;
        let ptr = k.ptr_size();
        for i in 0..u64::from(count) {
            let child = k.read_ptr(relations + ptr + i * ptr)?;
            crate::ob::dereference_object(k, child)?;
            children.push(child);
        }
        ex::free(k, relations, None)?;
    }
    tracing::info!(target: "ica::pnp", "bus relations of {pdo:#x}: {} child PDO(s) {children:x?} (not started: no bus-enumerated stacks)", children.len());
    k.extension::<PnpManager>().children.insert(pdo, children);
    Ok(())
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall IoInvalidateDeviceRelations => io_invalidate_device_relations(device_object: u64, type_: u32) @ irql::DISPATCH;
    stdcall IoRegisterPlugPlayNotification => io_register_plug_play_notification(event_category: u32, event_category_flags: u32, event_category_data: u64, driver_object: u64, callback_routine: u64, context: u64, notification_entry: u64) @ irql::PASSIVE;
    stdcall IoUnregisterPlugPlayNotification => io_unregister_plug_play_notification(notification_entry: u64) @ irql::PASSIVE;
    stdcall IoUnregisterPlugPlayNotificationEx => io_unregister_plug_play_notification(notification_entry: u64) @ irql::PASSIVE;
];

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;
    use crate::status::{STATUS_INVALID_PARAMETER, STATUS_SUCCESS};

    fn status(v: KResult<u64>) -> NtStatus {
        v.expect("call") as NtStatus
    }

    #[test]
    fn registrations_are_checked_and_withdrawn_changes_are_not_reported() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let driver = io::create_driver_object(&mut g.k, "Test", "test.sys", 0, 0).unwrap();
            let class = g.bytes(&[0x11; 16]);
            let entry = g.zeroed(8);
            // The callback is never called: a call would fault at this address.
            let callback = 0xDEAD_0000;
            let register = |g: &mut Guest, category: u32, driver: u64, callback: u64| {
                status(g.call(
                    "IoRegisterPlugPlayNotification",
                    &[u64::from(category), 0, class, driver, callback, 0, entry],
                ))
            };
            assert_eq!(
                register(&mut g, 0, driver, callback),
                STATUS_INVALID_PARAMETER
            );
            assert_eq!(
                register(&mut g, 4, driver, callback),
                STATUS_INVALID_PARAMETER
            );
            assert_eq!(
                register(&mut g, category::DEVICE_INTERFACE_CHANGE, driver, 0),
                STATUS_INVALID_PARAMETER
            );
            assert_eq!(
                register(&mut g, category::DEVICE_INTERFACE_CHANGE, 0x1000, callback),
                STATUS_INVALID_PARAMETER,
                "not a driver object"
            );
            assert_eq!(
                register(&mut g, category::DEVICE_INTERFACE_CHANGE, driver, callback),
                STATUS_SUCCESS
            );
            let handle = g.k.read_ptr(entry).unwrap();
            let text = rtl::guid_text(&[0x11; 16]).to_lowercase();
            interface_changed(
                &mut g.k,
                "{00000000-0000-0000-0000-000000000000}",
                "x",
                true,
            )
            .unwrap();
            assert_eq!(g.k.ke.work.queued(), 0, "another class");
            interface_changed(&mut g.k, &text, r"\??\ROOT#X#0000#{guid}", true).unwrap();
            assert_eq!(g.k.ke.work.queued(), 1, "reported later, by a worker");
            assert_eq!(
                status(g.call("IoUnregisterPlugPlayNotificationEx", &[handle])),
                STATUS_SUCCESS
            );
            assert_eq!(
                status(g.call("IoUnregisterPlugPlayNotification", &[handle])),
                STATUS_INVALID_PARAMETER
            );
            assert_eq!(crate::workitem::run_work_items(&mut g.k).unwrap(), 1);
            assert_eq!(g.k.extension::<Notifications>().registered(), 0);
        }
    }

    #[test]
    fn invalidated_bus_relations_are_queried_by_a_worker() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let pdo = create_root_device(&mut g.k, "ICA_TEST").unwrap();
            g.call(
                "IoInvalidateDeviceRelations",
                &[pdo, u64::from(BUS_RELATIONS)],
            )
            .unwrap();
            assert_eq!(g.k.ke.work.queued(), 1);
            g.call("IoInvalidateDeviceRelations", &[pdo, 3]).unwrap();
            assert_eq!(g.k.ke.work.queued(), 1, "only BusRelations is queried");
            assert_eq!(crate::workitem::run_work_items(&mut g.k).unwrap(), 1);
            assert_eq!(
                g.k.extension::<PnpManager>().children.get(&pdo),
                None,
                "the bare root PDO does not answer: nothing recorded"
            );
            let err = g
                .call("IoInvalidateDeviceRelations", &[0x1000, 0])
                .unwrap_err();
            assert!(err.to_string().contains("not a device object"), "{err}");
        }
    }
}
